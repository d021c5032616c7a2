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
