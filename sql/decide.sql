-- Next best action: offers refused with what is wrong, eligibility,
-- cooldown, lifetime cap, consent, capacity and a dropped template with
-- their explanations, channel and hour choice on hand-made engagement,
-- NULL traits, feedback (conversions, bounces, expiry) moving the bandit.
-- The worker is off: cdp.tick() settles expired sends; the clock is
-- cdp.fake_now. cdp.timezone is Europe/Paris (test/regress.conf).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-06-01 08:00:00+00';

INSERT INTO cdp.channels (name, kind, address_type) VALUES ('email', 'email', 'email');
INSERT INTO cdp.channels (name, kind, address_type, quiet_start, quiet_end) VALUES
    ('sms', 'sms', 'phone', '21:00', '09:00');
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES
    ('callcenter', 'task', 'call-center queue', false);
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('gold_email', 'email', 'Gold', 'Go gold'),
    ('gold_sms', 'sms', NULL, 'Go gold'),
    ('loan_call', 'callcenter', NULL, 'Call {{profile_id}} about a loan'),
    ('coupon_email', 'email', 'Coupon', '10% off'),
    ('coupon_sms', 'sms', NULL, '10% off'),
    ('app_email', 'email', 'App', 'Get the app');
SELECT cdp.declare_trait('spend', 'numeric');
SELECT cdp.declare_trait('visits', 'integer');
SELECT cdp.declare_trait('city', 'text');

-- Bad input: every mistake named.
SELECT cdp.create_offer(NULL, '{"email": "gold_email"}', 10, 'Order Completed');
SELECT cdp.create_offer('Bad Name', '{"email": "gold_email"}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', NULL, 10, 'Order Completed');
SELECT cdp.create_offer('café', '{"email": "gold_email"}', 10, 'Order Completed');
SELECT cdp.create_offer('x''; DROP TABLE cdp.offers; --', '{"email": "gold_email"}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "gold_email"', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"émail ☃": "gold_email"}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', segments => '{"ségment ☃"}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', segments => ARRAY[NULL]);
SELECT cdp.create_offer('bad', '[]', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"fax": "gold_email"}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": 42}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "nope"}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "gold_sms"}', 10, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', -1, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', NULL, 'Order Completed');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, '');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', '-1 day');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', segments => '{nowhere}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', condition => 'spend >');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', condition => 'no_such_column > 1');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', condition => 'random() > 0.5');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', condition => 'true); DROP TABLE cdp.offers; --');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', capacity => '{"email": -3}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', capacity => '{"email": 1.5}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', capacity => '{"sms": 10}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', capacity => '"lots"');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', features => '{city}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', features => '{nothing}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', features => '{spend,spend}');
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed', lifetime_cap => 0);
SELECT cdp.create_offer('bad', '{"email": "gold_email"}', 10, 'Order Completed',
                        valid_from => '2026-07-01', valid_until => '2026-06-01');
SELECT cdp.drop_offer('nothing');
SELECT count(*) AS no_offer_made FROM cdp.offers;

-- People: Ann (email and SMS consent), Bob (email only, withdrawn SMS),
-- Chloé (no consent at all, a NULL spend), Dan (Tokyo).
SELECT cdp.identify('{"email": "ann@shop.test", "phone": "+33611111111"}',
                    '{"spend": 900, "visits": 12, "city": "Lyon"}') AS ann \gset
SELECT cdp.identify('{"email": "bob@shop.test", "phone": "+33622222222"}',
                    '{"spend": 50, "visits": 2, "city": "Paris"}') AS bob \gset
SELECT cdp.identify('{"email": "chloe@shop.test"}', '{"visits": 1, "city": "Nantes"}') AS chloe \gset
SELECT cdp.identify('{"email": "dan@shop.test"}',
                    '{"spend": 300, "visits": 5, "city": "Tokyo", "timezone": "Asia/Tokyo"}') AS dan \gset
SELECT cdp.set_consent('{"email": "ann@shop.test"}', 'email', true) = :ann AS ok,
       cdp.set_consent('{"email": "ann@shop.test"}', 'sms', true) = :ann AS ok,
       cdp.set_consent('{"email": "bob@shop.test"}', 'email', true) = :bob AS ok,
       cdp.set_consent('{"email": "bob@shop.test"}', 'sms', false) = :bob AS ok,
       cdp.set_consent('{"email": "dan@shop.test"}', 'email', true) = :dan AS ok;
SELECT cdp.create_segment('big_spenders', 'spend >= 100') > 0 AS created;

-- Offers: gold for big spenders over email or SMS; a loan call (capacity
-- 1 a day) for anyone with visits > 3; a coupon with a cooldown and a
-- lifetime cap of 2; an app offer that ends tomorrow.
SELECT cdp.create_offer('gold', '{"email": "gold_email", "sms": "gold_sms"}', 100, 'Upgraded',
                        '14 days', segments => '{big_spenders}');
SELECT cdp.create_offer('loan', '{"callcenter": "loan_call"}', 500, 'Loan Signed', '30 days',
                        condition => 'visits > 3', capacity => '{"callcenter": 1}');
SELECT cdp.create_offer('coupon', '{"email": "coupon_email", "sms": "coupon_sms"}', 20,
                        'Order Completed', '7 days', cooldown => '3 days', lifetime_cap => 2,
                        features => '{spend,visits}');
SELECT cdp.create_offer('app', '{"email": "app_email"}', 5, 'App Installed', '7 days',
                        valid_until => '2026-06-02');
SELECT name, channels, segments, condition, value, capacity, features, owner = current_user::regrole AS mine
FROM cdp.offers ORDER BY name;
SELECT offer, alpha, beta FROM cdp.offer_arms ORDER BY offer;

-- A function that shows a decision without the draws.
CREATE FUNCTION pg_temp.nba(pid bigint, n int DEFAULT 5)
    RETURNS TABLE (offer text, channel text, send_at timestamptz, model text, excluded jsonb)
    LANGUAGE sql AS $$
    SELECT offer, channel, send_at, explanation ->> 'model',
           (SELECT jsonb_object_agg(k, v ->> 'reason') FROM jsonb_each(explanation -> 'excluded') e(k, v))
    FROM cdp.next_best_actions(pid, n)
$$;
SELECT * FROM pg_temp.nba(:ann);
SELECT * FROM pg_temp.nba(:bob);
SELECT * FROM pg_temp.nba(:chloe);
-- nothing for Chloé: offer_eligibility says why, offer by offer
SELECT * FROM cdp.offer_eligibility(:chloe);
SELECT offer, eligible, reason, channel FROM cdp.offer_eligibility(:ann);
-- n = 1: the others are outranked
SELECT count(*) AS one, bool_and(explanation -> 'excluded' ? 'gold') AS lists_the_rest
FROM cdp.next_best_actions(:ann, 1);
SELECT count(*) AS none FROM cdp.next_best_actions(:ann, 0);
-- reproducible: the same seed gives the same scores, another seed others
SELECT (SELECT array_agg(score ORDER BY offer) FROM cdp.next_best_actions(:ann, 5))
     = (SELECT array_agg(score ORDER BY offer) FROM cdp.next_best_actions(:ann, 5)) AS same_draws;
SET cdp.decide_seed = 7;
SELECT (SELECT array_agg(score ORDER BY offer) FROM cdp.next_best_actions(:ann, 5)) AS seed7 \gset
RESET cdp.decide_seed;
SELECT (SELECT array_agg(score ORDER BY offer) FROM cdp.next_best_actions(:ann, 5)) <> :'seed7' AS other_seed_other_draws;
-- score = propensity x value, and the draw is the arm's
SELECT offer, abs((explanation ->> 'propensity')::float8 * (explanation ->> 'value')::float8 - score)
            <= 0.0001 * (explanation ->> 'value')::float8 AS score_is_p_times_value,
       explanation -> 'arm' ->> 'alpha' AS alpha, explanation ->> 'zone' AS zone
FROM cdp.next_best_actions(:ann, 5) ORDER BY offer;

-- Sends: the coupon to Ann, twice (cooldown, then lifetime cap).
SELECT cdp.send_offer(:ann, 'coupon', 'email') AS coupon1 \gset
SELECT template, status, payload FROM cdp.outbox WHERE outbox_id = :coupon1;
SELECT offer, channel, outbox_id = :coupon1 AS linked, features, outcome FROM cdp.offer_sends;
SELECT offer, excluded ->> 'coupon' AS coupon FROM pg_temp.nba(:ann) ORDER BY offer;
SELECT explanation -> 'excluded' -> 'coupon' FROM cdp.next_best_actions(:ann, 1);
SELECT cdp.send_offer(:ann, 'coupon', 'email');
SET cdp.fake_now = '2026-06-04 09:00:00+00';
SELECT cdp.send_offer(:ann, 'coupon', 'sms') > 0 AS second_coupon;
SET cdp.fake_now = '2026-06-08 09:00:00+00';
SELECT excluded -> 'coupon' AS coupon, excluded -> 'app' AS app FROM pg_temp.nba(:ann) LIMIT 1;
SELECT explanation -> 'excluded' -> 'coupon' -> 'detail' FROM cdp.next_best_actions(:ann, 1);
-- sending what the rules forbid is refused with the reason
SELECT cdp.send_offer(:ann, 'coupon');
SELECT cdp.send_offer(:chloe, 'gold');
SELECT cdp.send_offer(:bob, 'gold', 'sms');
SELECT cdp.send_offer(:ann, 'gold', 'fax');
SELECT cdp.send_offer(:ann, 'nothing');
SELECT cdp.send_offer(NULL, 'gold');
SELECT cdp.next_best_actions(NULL, 3);
SELECT cdp.next_best_actions(:ann, -1);
SELECT cdp.next_best_actions(999999, 3);

-- Capacity: the loan call has one place a day; once Ann has it, Dan
-- (visits 5) sees the capacity used up.
SELECT cdp.send_offer(:ann, 'loan') > 0 AS loan_sent;
SELECT offer, channel, day, used FROM cdp.offer_capacity ORDER BY 1, 2, 3;
SELECT excluded -> 'loan' AS loan FROM pg_temp.nba(:dan) LIMIT 1;
SELECT explanation -> 'excluded' -> 'loan' FROM cdp.next_best_actions(:dan, 1);
SELECT cdp.send_offer(:dan, 'loan');
-- zero capacity: never offered
SELECT cdp.create_offer('closed', '{"callcenter": "loan_call"}', 1000, 'Loan Signed', '1 day',
                        capacity => '{"callcenter": 0}');
SELECT excluded -> 'closed' AS closed FROM pg_temp.nba(:dan) LIMIT 1;
SELECT cdp.drop_offer('closed');

-- A dropped template: the channel is refused as invalid_template.
DELETE FROM cdp.templates WHERE name = 'app_email';
SET cdp.fake_now = '2026-06-01 12:00:00+00';
SELECT explanation -> 'excluded' -> 'app' FROM cdp.next_best_actions(:dan, 1);
INSERT INTO cdp.templates (name, channel, subject, body) VALUES ('app_email', 'email', 'App', 'Get the app');

-- A condition that fails at run time makes its offer ineligible, with the error.
CREATE TABLE public.decide_flags (city text);
SELECT cdp.create_offer('flagged', '{"email": "app_email"}', 1, 'X', '1 day',
                        condition => 'city IN (SELECT city FROM public.decide_flags)');
DROP TABLE public.decide_flags;
SELECT explanation -> 'excluded' -> 'flagged' ->> 'reason' AS reason,
       explanation -> 'excluded' -> 'flagged' ->> 'detail' AS detail
FROM cdp.next_best_actions(:dan, 1);
SELECT cdp.drop_offer('flagged');

-- Channel choice: Ann engaged with SMS, never with email: SMS wins for
-- gold once her own history outweighs the population's.
SET cdp.fake_now = '2026-05-20 10:00:00+00';
SELECT count(cdp.enqueue(:ann, 'email', 'gold_email', '{}', NULL, 'hist-e-' || g)) AS emails,
       count(cdp.enqueue(:ann, 'sms', 'gold_sms', '{}', NULL, 'hist-s-' || g)) AS texts
FROM generate_series(1, 6) g;
UPDATE cdp.outbox SET status = 'delivered', delivered_at = cdp.now(), finished_at = cdp.now(),
                      sent_at = cdp.now()
WHERE dedupe_key LIKE 'hist-%';
-- she opens the SMS ones, always in the evening (19h in Paris)
SELECT count(*) AS opened FROM (
    SELECT cdp.track('{"email": "ann@shop.test"}', 'Message Opened',
                     jsonb_build_object('outbox_id', o.outbox_id, 'channel', 'sms'),
                     '2026-05-20 17:30:00+00')
    FROM cdp.outbox o WHERE o.dedupe_key LIKE 'hist-s-%') x;
SET cdp.fake_now = '2026-06-10 08:00:00+00';
SELECT offer, channel, send_at, explanation -> 'channels' AS rates, explanation -> 'send_hour' AS hour
FROM cdp.next_best_actions(:ann, 5) WHERE offer = 'gold';
-- Bob, with no history, gets the population's choice: email (his SMS
-- consent is withdrawn anyway), at once
SELECT offer, channel, send_at, explanation -> 'channels' AS rates
FROM cdp.next_best_actions(:bob, 5) ORDER BY offer;
-- the population's engagement once counted pulls others towards SMS
SELECT cdp.refresh_engagement() AS rows;
SELECT channel, hour, delivered, engaged FROM cdp.engagement_population ORDER BY 1, 2;
-- Dan in Tokyo, with no history of his own: the population engages at
-- 19h local time, so his email goes at 19:00 in Tokyo
SELECT offer, channel, send_at, explanation -> 'send_hour' AS hour, explanation ->> 'zone' AS zone
FROM cdp.next_best_actions(:dan, 5) WHERE offer = 'gold';
-- SMS quiet hours (21:00-09:00 local) are never chosen: Ann's evening
-- preference lands at 19h Paris, outside them
SELECT offer, channel, (send_at AT TIME ZONE 'Europe/Paris')::time AS local_time
FROM cdp.next_best_actions(:ann, 5) WHERE channel = 'sms';

-- Feedback: Ann converts on gold within its window: the send converts
-- in the ingesting transaction, the bandit moves.
SELECT cdp.send_offer(:ann, 'gold', 'sms', cdp.now()) AS gold1 \gset
SELECT alpha, beta FROM cdp.offer_arms WHERE offer = 'gold';
BEGIN;
SELECT cdp.track('{"email": "ann@shop.test"}', 'Upgraded', '{"revenue": 120}', cdp.now() + interval '1 day') = :ann AS tracked;
SELECT outcome, value FROM cdp.offer_sends WHERE outbox_id = :gold1;
ROLLBACK;
SELECT outcome, value FROM cdp.offer_sends WHERE outbox_id = :gold1;
SELECT cdp.track('{"email": "ann@shop.test"}', 'Upgraded', '{"revenue": 120}', cdp.now() + interval '1 day') = :ann AS tracked;
SELECT outcome, converted_at, value FROM cdp.offer_sends WHERE outbox_id = :gold1;
SELECT alpha, beta FROM cdp.offer_arms WHERE offer = 'gold';
-- a goal outside the window does not count
SELECT cdp.send_offer(:dan, 'gold', 'email', cdp.now()) AS gold2 \gset
SELECT cdp.track('{"email": "dan@shop.test"}', 'Upgraded', '{}', cdp.now() + interval '20 days') = :dan AS tracked;
SELECT outcome FROM cdp.offer_sends WHERE outbox_id = :gold2;
-- a hard bounce fails the send at once, a soft one does not
SELECT cdp.send_offer(:dan, 'coupon', 'email', cdp.now()) AS soft \gset
SELECT cdp.report_delivery(:soft, 'bounced', '{"type": "soft"}');
SELECT outcome FROM cdp.offer_sends WHERE outbox_id = :soft;
SELECT cdp.send_offer(:dan, 'loan', NULL, cdp.now()) AS hard \gset
SELECT cdp.report_delivery(:hard, 'bounced', '{"type": "hard"}');
SELECT outcome FROM cdp.offer_sends WHERE outbox_id = :hard;
SELECT offer, alpha, beta FROM cdp.offer_arms WHERE offer IN ('gold', 'coupon', 'loan') ORDER BY offer;
-- the window closes: the tick settles Dan's send as expired
SET cdp.fake_now = '2026-06-25 09:00:00+00';
SELECT cdp.tick() ->> 'offers' AS settled;
SELECT offer, outcome, count(*) FROM cdp.offer_sends GROUP BY 1, 2 ORDER BY 1, 2;
SELECT offer, alpha, beta FROM cdp.offer_arms ORDER BY offer;

-- Roles: an analyst reads decisions, may not make offers.
CREATE ROLE regress_decide_analyst IN ROLE cdp_analyst;
SET ROLE regress_decide_analyst;
SELECT count(*) > 0 AS reads FROM cdp.next_best_actions(:ann, 3);
SELECT cdp.create_offer('mine', '{"email": "gold_email"}', 1, 'X');
SELECT cdp.send_offer(:ann, 'gold');
RESET ROLE;
DROP ROLE regress_decide_analyst;

-- Merge: Dan's sends follow him into Ann; erasure takes them away.
SELECT count(*) AS dan_sends FROM cdp.offer_sends WHERE profile_id = :dan;
SELECT cdp.identify('{"email": "ann@shop.test", "user_id": "u-ann"}', '{}') = :ann AS ann;
SELECT cdp.identify('{"email": "dan@shop.test", "phone": "+33611111111"}', '{}') = :ann AS merged_into_ann;
SELECT count(*) AS dan_sends_left, (SELECT count(*) FROM cdp.offer_sends WHERE profile_id = :ann) AS ann_sends
FROM cdp.offer_sends WHERE profile_id = :dan;
SELECT cdp.forget('{"email": "ann@shop.test"}') ->> 'offer_sends' AS forgotten;
SELECT count(*) AS sends_left FROM cdp.offer_sends;


SELECT cdp.send_offer(:chloe, 'app');
SELECT cdp.drop_offer('app');
SELECT count(*) AS arms_left FROM cdp.offer_arms WHERE offer = 'app';
SELECT name FROM cdp.offers ORDER BY 1;
-- leave nothing behind for other suites
SELECT cdp.drop_offer(name) FROM cdp.offers;
SELECT cdp.drop_segment('big_spenders');
