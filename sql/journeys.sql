-- Journeys and triggers: definitions refused with the step named, the
-- welcome series of DESIGN.md end to end on a simulated clock, exits at
-- once, wait_for with match and timeout, splits, holdout, re-entry, pause,
-- versions, triggers, rollback, merge, erasure, and the log answering "why".
-- The worker is off: cdp.tick() advances due steps; the clock is
-- cdp.fake_now. cdp.timezone is Europe/Paris (test/regress.conf).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-06-01 08:00:00+00';

INSERT INTO cdp.channels (name, kind, address_type) VALUES ('email', 'email', 'email'),
    ('push', 'push', 'device_id'), ('sms', 'sms', 'phone');
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES
    ('callcenter', 'task', 'call-center queue', false);
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('welcome', 'email', 'Welcome', 'Hi {{traits.first_name | default: "there"}}'),
    ('our_brand', 'email', 'Our brand', 'Who we are'),
    ('get_app', 'push', NULL, 'Get the app'),
    ('ten_off', 'email', '10% off', 'Code {{payload.code | default: "TEN"}}'),
    ('follow_us', 'email', 'Follow us', 'On every network'),
    ('review', 'sms', NULL, 'Thanks for shopping at {{payload.store | default: "our store"}}'),
    ('e_invoice', 'email', 'Your invoice', 'Order {{payload.order_id}}'),
    ('cc_task', 'callcenter', NULL, 'Call back {{profile_id}}: {{payload.comment}}'),
    ('cart', 'email', 'Your cart', 'Cart {{payload.cart_id}}');

-- Definitions: each mistake refused, the message naming the step.
CREATE FUNCTION pg_temp.def(steps jsonb, extra jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE sql RETURN jsonb_build_object('entry', jsonb_build_object('event', 'Signed Up'),
                                           'reentry', 'never', 'steps', steps) || extra;
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "teleport"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "channel": "email", "template": "welcome", "next": "nowhere"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "channel": "email", "template": "welcome", "next": "b"},
                                               {"name": "b", "kind": "branch", "condition": "true", "then": "a", "else": "c"},
                                               {"name": "c", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "template": "welcome"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "channel": "email"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "channel": "fax", "template": "welcome"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "channel": "email", "template": "gone"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "branch", "condition": "profile_id >", "then": "b"}, {"name": "b", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "branch", "condition": "no_such_column > 1"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "branch", "condition": "random() > 0.5"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "branch", "condition": "count(*) > 1"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "branch", "condition": "true; DROP TABLE cdp.profiles"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "wait", "for": "0 seconds"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "wait", "for": "-1 day"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "wait", "for": "soon"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "wait", "until": "25:99"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "wait"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "wait_for", "event": "Order Completed", "timeout": "0 days"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "split", "arms": [{"name": "A", "weight": 50, "next": "b"}, {"name": "B", "weight": 40, "next": "b"}]}, {"name": "b", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "split", "arms": [{"name": "A", "weight": 50.5}, {"name": "B", "weight": 49.5}]}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}, {"name": "a", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "send", "channel": "email", "tempalte": "welcome"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]') - 'reentry');
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"reentry": "sometimes"}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"reentry": {"cooldown": "0 days"}}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"entry": {"event": "X", "condition": "properties->>''a'' = "}}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"entry": {}}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"holdout": 100}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"goal": {"event": "X"}}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]', '{"colour": "blue"}'));
SELECT cdp.create_journey('bad', '[1, 2]');
SELECT cdp.create_journey(NULL, pg_temp.def('[{"name": "a", "kind": "exit"}]'));
SELECT cdp.create_journey('', pg_temp.def('[{"name": "a", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "a", "kind": "exit"}]'), 'abandon');
SELECT cdp.start_journey('no such journey');
SELECT count(*) AS nothing_stored FROM cdp.journeys;
-- a cycle through a wait is fine; unicode and quotes in step names too
SELECT cdp.create_journey('loop "ok"', pg_temp.def('[{"name": "café ☕", "kind": "send", "channel": "email", "template": "welcome", "next": "l''attente"},
                                                     {"name": "l''attente", "kind": "wait", "for": "1 day", "next": "café ☕"}]'));
SELECT journey, step, ordinal, kind, next, wait_for FROM cdp.journey_steps ORDER BY ordinal;
SELECT name, version, status FROM cdp.journeys;
SELECT cdp.pause_journey('loop "ok"');

-- The welcome series of DESIGN.md:
-- signup -> email welcome -> wait 1 day -> email our_brand -> wait_for purchase (3 days)
--   purchased -> push get_app;  timeout -> email ten_off -> wait 2 days -> email follow_us
SELECT cdp.create_journey('welcome', '{
  "entry": {"event": "Signed Up"},
  "reentry": "never",
  "exit": [{"event": "Unsubscribed"}],
  "goal": {"event": "Order Completed", "within": "7 days"},
  "steps": [
    {"name": "welcome", "kind": "send", "channel": "email", "template": "welcome", "next": "wait a day"},
    {"name": "wait a day", "kind": "wait", "for": "1 day", "next": "brand"},
    {"name": "brand", "kind": "send", "channel": "email", "template": "our_brand", "next": "purchase?"},
    {"name": "purchase?", "kind": "wait_for", "event": "Order Completed", "timeout": "3 days",
     "on_event": "app", "on_timeout": "discount"},
    {"name": "app", "kind": "send", "channel": "push", "template": "get_app"},
    {"name": "discount", "kind": "send", "channel": "email", "template": "ten_off",
     "payload": {"code": "WELCOME10"}, "next": "wait two days"},
    {"name": "wait two days", "kind": "wait", "for": "2 days", "next": "follow"},
    {"name": "follow", "kind": "send", "channel": "email", "template": "follow_us"}
  ]}');
-- a draft journey takes nobody in
SELECT cdp.track('{"email": "early@shop.test"}', 'Signed Up') AS early \gset
SELECT count(*) AS states_of_a_draft FROM cdp.journey_states;
SELECT cdp.start_journey('welcome');
SELECT cdp.start_journey('welcome');
SELECT cdp.set_consent('{"email": "buyer@shop.test", "device_id": "dev-b"}', 'email', true, 'form') AS buyer \gset
SELECT cdp.set_consent('{"email": "buyer@shop.test"}', 'push', true, 'form') = :buyer AS same;
SELECT cdp.set_consent('{"email": "window@shop.test"}', 'email', true, 'form') AS shopper \gset
SELECT cdp.set_consent('{"email": "quitter@shop.test"}', 'email', true, 'form') AS quitter \gset

-- Signing up enters and sends the welcome in the same transaction.
BEGIN;
SELECT cdp.track('{"email": "buyer@shop.test"}', 'Signed Up', '{"plan": "free"}') = :buyer AS tracked;
SELECT template, status FROM cdp.outbox WHERE profile_id = :buyer;
SELECT step, status, due_at FROM cdp.journey_states WHERE profile_id = :buyer;
COMMIT;
SELECT cdp.track('{"email": "window@shop.test"}', 'Signed Up') = :shopper AS tracked;
SELECT cdp.track('{"email": "quitter@shop.test"}', 'Signed Up') = :quitter AS tracked;
-- a second signup does not enter again (reentry never)
SELECT cdp.track('{"email": "buyer@shop.test"}', 'Signed Up') = :buyer AS tracked;
SELECT count(*) AS buyer_states FROM cdp.journey_states WHERE profile_id = :buyer;

-- Day 1: the quitter unsubscribes in the middle of the day-long wait: out at once.
SET cdp.fake_now = '2026-06-01 20:00:00+00';
SELECT cdp.track('{"email": "quitter@shop.test"}', 'Unsubscribed') = :quitter AS tracked;
SELECT step, status, why, ended_at FROM cdp.journey_states WHERE profile_id = :quitter;
-- nothing is due yet
SELECT cdp.tick() ->> 'journeys' AS advanced;
-- day 2: the brand email
SET cdp.fake_now = '2026-06-02 08:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
-- day 3: the buyer buys, the wait_for moves on at once
SET cdp.fake_now = '2026-06-03 12:00:00+00';
SELECT cdp.track('{"email": "buyer@shop.test"}', 'Order Completed', '{"order_id": 1}') = :buyer AS tracked;
SELECT step, status, converted_at FROM cdp.journey_states WHERE profile_id = :buyer;
-- day 5: the window shopper's wait times out: the discount
SET cdp.fake_now = '2026-06-05 08:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SET cdp.fake_now = '2026-06-07 08:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SET cdp.fake_now = '2026-06-30 08:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
-- The exact messages: the buyer's, the window shopper's, none for the quitter after day 1.
SELECT CASE profile_id WHEN :buyer THEN 'buyer' WHEN :shopper THEN 'shopper' WHEN :quitter THEN 'quitter' END AS who,
       channel, template, payload, status, enqueued_at
FROM cdp.outbox ORDER BY who, outbox_id;
SELECT CASE profile_id WHEN :buyer THEN 'buyer' WHEN :shopper THEN 'shopper' WHEN :quitter THEN 'quitter' END AS who,
       step, status, why, converted_at IS NOT NULL AS converted
FROM cdp.journey_states ORDER BY who;
-- "Why did the window shopper get the 10% off?" is one query.
SELECT l.from_step, l.to_step, l.why, l.at, o.template
FROM cdp.journey_log l LEFT JOIN cdp.outbox o USING (outbox_id)
WHERE l.profile_id = :shopper ORDER BY l.log_id;
SELECT l.journey, l.version, l.from_step, l.why, l.at
FROM cdp.journey_log l JOIN cdp.outbox o USING (outbox_id)
WHERE o.profile_id = :shopper AND o.template = 'ten_off';
-- sends carry their dedupe key: the same key again enqueues nothing new
SELECT count(DISTINCT dedupe_key) = count(*) AS keys_unique, bool_and(dedupe_key LIKE 'journey/welcome/1/%') AS keyed
FROM cdp.outbox;

-- wait_for keyed on the entry event's cart_id: only the same cart's order
-- moves it on; another cart's does not; a timeout takes the other branch.
SET cdp.fake_now = '2026-07-01 10:00:00+00';
SELECT cdp.create_journey('cart', '{
  "entry": {"event": "Cart Abandoned", "condition": "(properties->>''value'')::numeric >= 20"},
  "reentry": "always",
  "steps": [
    {"name": "wait", "kind": "wait_for", "event": "Order Completed", "match": ["cart_id"],
     "condition": "(properties->>''total'')::numeric > 0", "timeout": "1 day",
     "on_event": "thanks", "on_timeout": "remind"},
    {"name": "thanks", "kind": "exit"},
    {"name": "remind", "kind": "send", "channel": "email", "template": "cart"}
  ]}');
SELECT cdp.start_journey('cart');
SELECT cdp.set_consent('{"email": "cart@shop.test"}', 'email', true, 'form') AS carter \gset
SELECT cdp.track('{"email": "cart@shop.test"}', 'Cart Abandoned', '{"cart_id": "c1", "value": 50}') = :carter AS c1;
SELECT cdp.track('{"email": "cart@shop.test"}', 'Cart Abandoned', '{"cart_id": "c2", "value": 80}') = :carter AS c2;
SELECT cdp.track('{"email": "cart@shop.test"}', 'Cart Abandoned', '{"cart_id": "c3", "value": 5}') = :carter AS too_small;
SELECT entry_properties ->> 'cart_id' AS cart, step, waiting_event, waiting_keys FROM cdp.journey_states
WHERE journey = 'cart' ORDER BY state_id;
-- an order of another cart, and one of c1 with a zero total (the condition), move nothing
SELECT cdp.track('{"email": "cart@shop.test"}', 'Order Completed', '{"cart_id": "c9", "total": 10}') = :carter AS other_cart;
SELECT cdp.track('{"email": "cart@shop.test"}', 'Order Completed', '{"cart_id": "c1", "total": 0}') = :carter AS zero_total;
SELECT count(*) AS still_waiting FROM cdp.journey_states WHERE journey = 'cart' AND status = 'active';
SELECT cdp.track('{"email": "cart@shop.test"}', 'Order Completed', '{"cart_id": "c1", "total": 50}') = :carter AS c1_bought;
SET cdp.fake_now = '2026-07-02 10:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SELECT entry_properties ->> 'cart_id' AS cart, step, status, why FROM cdp.journey_states
WHERE journey = 'cart' ORDER BY state_id;
SELECT template, payload FROM cdp.outbox WHERE profile_id = :carter;

-- Split: sticky per profile (a hash of journey and profile), recorded in
-- the state and the log; weights hold over many profiles. Holdout: enters,
-- runs every step, sends nothing.
SET cdp.fake_now = '2026-07-10 10:00:00+00';
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('hook', 'webhook', 'crm', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('ping_a', 'hook', 'A'), ('ping_b', 'hook', 'B');
SELECT cdp.create_journey('ab', '{
  "entry": {"event": "Visited"}, "reentry": "always", "holdout": 10,
  "steps": [
    {"name": "pick", "kind": "split", "arms": [{"name": "A", "weight": 70, "next": "send a"},
                                              {"name": "B", "weight": 30, "next": "send b"}]},
    {"name": "send a", "kind": "send", "channel": "hook", "template": "ping_a"},
    {"name": "send b", "kind": "send", "channel": "hook", "template": "ping_b"}
  ]}');
SELECT cdp.start_journey('ab');
SELECT count(*) FROM (SELECT cdp.track(jsonb_build_object('user_id', 'v' || i), 'Visited') FROM generate_series(1, 2000) i) t;
SELECT arms ->> 'pick' AS arm, holdout, count(*) FROM cdp.journey_states WHERE journey = 'ab'
GROUP BY 1, 2 ORDER BY 1, 2;
-- the shares: A about 70%, holdout about 10%
SELECT round(avg(((arms ->> 'pick') = 'A')::int), 1) AS share_a, round(avg(holdout::int), 1) AS share_holdout
FROM cdp.journey_states WHERE journey = 'ab';
-- holdout sends nothing; everyone else exactly one message, of their arm
SELECT s.holdout, count(o.outbox_id) AS messages, count(*) AS states,
       bool_and(o.template IS NULL OR o.template = 'ping_' || lower(s.arms ->> 'pick')) AS of_their_arm
FROM cdp.journey_states s
LEFT JOIN cdp.journey_log l ON l.state_id = s.state_id AND l.outbox_id IS NOT NULL
LEFT JOIN cdp.outbox o ON o.outbox_id = l.outbox_id
WHERE s.journey = 'ab' GROUP BY 1 ORDER BY 1;
SELECT why, count(*) FROM cdp.journey_log WHERE journey = 'ab' GROUP BY 1 ORDER BY 1;
-- sticky: entering again lands on the same arm, with the same holdout
SELECT count(*) FROM (SELECT cdp.track(jsonb_build_object('user_id', 'v' || i), 'Visited') FROM generate_series(1, 200) i) t;
SELECT count(DISTINCT arms ->> 'pick') AS arms_per_profile, count(DISTINCT holdout) AS holdouts_per_profile, count(*)
FROM cdp.journey_states WHERE journey = 'ab' GROUP BY profile_id HAVING count(*) > 1
ORDER BY 1 DESC, 2 DESC LIMIT 1;

-- Re-entry: never (the welcome), always (the cart), a cool-down.
SET cdp.fake_now = '2026-08-01 10:00:00+00';
SELECT cdp.create_journey('cool', '{"entry": {"event": "Browsed"}, "reentry": {"cooldown": "7 days"},
  "steps": [{"name": "w", "kind": "wait", "for": "1 hour"}]}');
SELECT cdp.start_journey('cool');
SELECT cdp.track('{"user_id": "cooler"}', 'Browsed') AS cooler \gset
SELECT cdp.track('{"user_id": "cooler"}', 'Browsed') = :cooler AS again_at_once;
SET cdp.fake_now = '2026-08-05 10:00:00+00';
SELECT cdp.track('{"user_id": "cooler"}', 'Browsed') = :cooler AS again_day_4;
SET cdp.fake_now = '2026-08-09 10:00:00+00';
SELECT cdp.track('{"user_id": "cooler"}', 'Browsed') = :cooler AS again_day_8;
SELECT entered_at FROM cdp.journey_states WHERE journey = 'cool' ORDER BY state_id;
-- two entries in one batch: one state under a cool-down
SELECT cdp.ingest_batch(jsonb_build_array(
    jsonb_build_object('type', 'track', 'userId', 'batcher', 'event', 'Browsed'),
    jsonb_build_object('type', 'track', 'userId', 'batcher', 'event', 'Browsed'))) ->> 'accepted' AS accepted;
SELECT count(*) AS batcher_states FROM cdp.journey_states s JOIN cdp.identities i USING (profile_id)
WHERE s.journey = 'cool' AND i.value = 'batcher';

-- Pause: nobody enters, no step advances, states keep their place; resume
-- runs what came due meanwhile.
SET cdp.fake_now = '2026-09-01 10:00:00+00';
SELECT cdp.create_journey('pausable', '{"entry": {"event": "Joined"}, "reentry": "always",
  "steps": [{"name": "wait", "kind": "wait", "for": "1 hour", "next": "hello"},
            {"name": "hello", "kind": "send", "channel": "hook", "template": "ping_a"}]}');
SELECT cdp.start_journey('pausable');
SELECT cdp.track('{"user_id": "p1"}', 'Joined') AS p1 \gset
SELECT cdp.pause_journey('pausable');
SELECT cdp.pause_journey('pausable');
SELECT cdp.track('{"user_id": "p2"}', 'Joined') AS p2 \gset
SET cdp.fake_now = '2026-09-01 12:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced_while_paused;
SELECT profile_id = :p1 AS p1, step, status FROM cdp.journey_states WHERE journey = 'pausable';
SELECT cdp.resume_journey('pausable');
SELECT cdp.resume_journey('pausable');
SELECT cdp.tick() ->> 'journeys' AS advanced_after_resume;
SELECT profile_id = :p1 AS p1, step, status FROM cdp.journey_states WHERE journey = 'pausable';

-- A new version: 'finish' keeps profiles in flight on theirs; 'migrate'
-- moves them to the step of the same name.
SET cdp.fake_now = '2026-09-10 10:00:00+00';
SELECT cdp.create_journey('versioned', '{"entry": {"event": "Tried"}, "reentry": "always",
  "steps": [{"name": "wait", "kind": "wait", "for": "1 day", "next": "old"},
            {"name": "old", "kind": "send", "channel": "hook", "template": "ping_a"}]}');
SELECT cdp.start_journey('versioned');
SELECT cdp.track('{"user_id": "ver1"}', 'Tried') AS ver1 \gset
SELECT cdp.create_journey('versioned', '{"entry": {"event": "Tried"}, "reentry": "always",
  "steps": [{"name": "wait", "kind": "wait", "for": "1 day", "next": "new"},
            {"name": "new", "kind": "send", "channel": "hook", "template": "ping_b"}]}', 'finish');
SELECT version AS ver1_stays_on FROM cdp.journey_states WHERE profile_id = :ver1;
SELECT cdp.track('{"user_id": "ver2"}', 'Tried') AS ver2 \gset
SELECT cdp.track('{"user_id": "ver3"}', 'Tried') AS ver3 \gset
SELECT cdp.create_journey('versioned', '{"entry": {"event": "Tried"}, "reentry": "always",
  "steps": [{"name": "wait", "kind": "wait", "for": "1 day", "next": "newest"},
            {"name": "newest", "kind": "send", "channel": "hook", "template": "ping_a"}]}', 'migrate');
SELECT name, version, status FROM cdp.journeys WHERE name = 'versioned';
SET cdp.fake_now = '2026-09-11 11:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
-- 'migrate' moved ver1 (from version 1) and ver2, ver3 (from version 2):
-- their step "wait" exists in version 3
SELECT CASE s.profile_id WHEN :ver1 THEN 'ver1' WHEN :ver2 THEN 'ver2' ELSE 'ver3' END AS who,
       s.version, s.step, o.template
FROM cdp.journey_states s JOIN cdp.journey_log l ON l.state_id = s.state_id AND l.outbox_id IS NOT NULL
JOIN cdp.outbox o USING (outbox_id) WHERE s.journey = 'versioned' ORDER BY who;
SELECT why, count(*) FROM cdp.journey_log WHERE journey = 'versioned' AND why LIKE 'migrated%' GROUP BY 1;
-- finish: a state on a step the new version lacks stays on its version
SELECT cdp.track('{"user_id": "ver4"}', 'Tried') AS ver4 \gset
SELECT cdp.create_journey('versioned', '{"entry": {"event": "Tried"}, "reentry": "always",
  "steps": [{"name": "pause", "kind": "wait", "for": "1 day", "next": "newest"},
            {"name": "newest", "kind": "send", "channel": "hook", "template": "ping_b"}]}', 'migrate');
SELECT version, step FROM cdp.journey_states WHERE profile_id = :ver4;

-- Triggers are journeys of one step: the seeds' three are one call each.
SET cdp.fake_now = '2026-10-01 09:00:00+00';
SELECT cdp.create_trigger('till thank-you', 'Order Completed', 'properties->>''channel'' = ''store''',
                          '2 hours', 'sms', 'review');
SELECT cdp.create_trigger('e-invoice', 'Checkout Completed', NULL, NULL, 'email', 'e_invoice');
SELECT cdp.create_trigger('negative contact', 'Call Center Contact', 'properties->>''sentiment'' = ''negative''',
                          NULL, 'callcenter', 'cc_task');
SELECT name, status, version FROM cdp.journeys WHERE name IN ('till thank-you', 'e-invoice', 'negative contact') ORDER BY 1;
SELECT cdp.create_trigger('bad trigger', 'X', 'nope(', NULL, 'email', 'e_invoice');
SELECT cdp.create_trigger('bad trigger', 'X', NULL, '-1 hour', 'email', 'e_invoice');
SELECT cdp.set_consent('{"email": "shopper@shop.test", "phone": "+33612345678"}', 'email', true, 'form') AS sh \gset
SELECT cdp.set_consent('{"email": "shopper@shop.test"}', 'sms', true, 'form') = :sh AS same;
-- the e-invoice and the call-center task are claimable in the event's own transaction
BEGIN;
SELECT cdp.track('{"email": "shopper@shop.test"}', 'Checkout Completed', '{"order_id": "A-1"}') = :sh AS tracked;
SELECT template, subject, body FROM cdp.claim('email', 10, '1 minute') WHERE template = 'e_invoice';
SELECT cdp.track('{"email": "shopper@shop.test"}', 'Call Center Contact', '{"sentiment": "negative", "comment": "late \"again\""}') = :sh AS tracked;
SELECT cdp.track('{"email": "shopper@shop.test"}', 'Call Center Contact', '{"sentiment": "positive", "comment": "fine"}') = :sh AS tracked;
SELECT template, body FROM cdp.claim('callcenter', 10, '1 minute');
COMMIT;
-- the SMS two hours after a store purchase (not after a web one)
SELECT cdp.track('{"email": "shopper@shop.test"}', 'Order Completed', '{"channel": "store", "store": "Lyon"}') = :sh AS tracked;
SELECT cdp.track('{"email": "shopper@shop.test"}', 'Order Completed', '{"channel": "web"}') = :sh AS tracked;
SELECT count(*) AS sms_now FROM cdp.outbox WHERE channel = 'sms';
SET cdp.fake_now = '2026-10-01 10:59:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SET cdp.fake_now = '2026-10-01 11:00:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SELECT template, address, body FROM cdp.claim('sms', 10, '1 minute');

-- A rollback leaves neither the entry nor the message.
SELECT count(*) AS states, (SELECT count(*) FROM cdp.outbox) AS messages, (SELECT count(*) FROM cdp.journey_log) AS log
FROM cdp.journey_states \gset before_
BEGIN;
SELECT cdp.track('{"email": "shopper@shop.test"}', 'Checkout Completed', '{"order_id": "A-2"}') = :sh AS tracked;
SELECT count(*) > :before_states AS entered FROM cdp.journey_states;
ROLLBACK;
SELECT count(*) = :before_states AS no_state, (SELECT count(*) FROM cdp.outbox) = :before_messages AS no_message,
       (SELECT count(*) FROM cdp.journey_log) = :before_log AS no_log
FROM cdp.journey_states;
