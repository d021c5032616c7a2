-- The contact policy: consent (checked at enqueue and again at claim),
-- suppressed addresses, quiet hours across midnight and across a DST
-- change in the recipient's time zone, caps per day and week in their
-- zone, delivery feedback, and the merge rule for consents. The clock is
-- cdp.fake_now; cdp.timezone is Europe/Paris (test/regress.conf).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-03-02 10:00:00+00';   -- a Monday

INSERT INTO cdp.channels (name, kind, address_type) VALUES ('email', 'email', 'email');
INSERT INTO cdp.channels (name, kind, address_type, quiet_start, quiet_end)
VALUES ('sms', 'sms', 'phone', '22:00', '08:00');
INSERT INTO cdp.channels (name, kind, address_type, purpose, cap_per_day, cap_per_week)
VALUES ('news', 'email', 'email', 'marketing', 2, 3);
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('hello', 'email', 'Hello', 'Hi {{traits.first_name | default: "there"}}'),
    ('code', 'sms', NULL, 'Your code {{payload.code}}'),
    ('letter', 'news', 'News', 'News for {{address}}');
-- channel rules: quiet hours need both ends, and differ
INSERT INTO cdp.channels (name, kind, address_type, quiet_start) VALUES ('x', 'sms', 'phone', '22:00');
INSERT INTO cdp.channels (name, kind, address_type, quiet_start, quiet_end) VALUES ('x', 'sms', 'phone', '22:00', '22:00');
INSERT INTO cdp.channels (name, kind) VALUES ('x', 'sms');
INSERT INTO cdp.channels (name, kind, address_type) VALUES ('x', 'fax', 'phone');

-- Consent: recorded per purpose, creating the person if needed.
SELECT cdp.set_consent(NULL, 'email', true, 'form');
SELECT cdp.set_consent('{"email": "ana@shop.test"}', NULL, true, 'form');
SELECT cdp.set_consent('{"email": "ana@shop.test"}', '', true, 'form');
SELECT cdp.set_consent('{"email": "ana@shop.test"}', 'email', NULL, 'form');
SELECT cdp.set_consent('{}', 'email', true, 'form');
SELECT cdp.set_consent('{"email": "ana@shop.test"}', 'email', true, 'form') AS ana \gset
SELECT count(*) AS profiles FROM cdp.profiles;
SELECT cdp.set_consent('{"email": "ANA@shop.test "}', 'news', true, 'checkout') = :ana AS same_person;
SELECT purpose, granted, at, source FROM cdp.consents WHERE profile_id = :ana ORDER BY purpose;

-- No consent: enqueued as suppressed, with why.
SELECT cdp.identify('{"email": "bo@shop.test"}') AS bo \gset
SELECT cdp.enqueue(:bo, 'email', 'hello', '{}') AS m \gset
SELECT status, reason FROM cdp.outbox WHERE outbox_id = :m;
SELECT count(*) FROM cdp.claim('email', 10, '1 minute');

-- Consent withdrawn between enqueue and claim: cancelled at claim.
SELECT cdp.enqueue(:ana, 'email', 'hello', '{}') AS m \gset
SELECT status FROM cdp.outbox WHERE outbox_id = :m;
SELECT cdp.set_consent('{"email": "ana@shop.test"}', 'email', false, 'preference center') = :ana;
SELECT cdp.enqueue(:ana, 'email', 'hello', '{}') AS m2 \gset
SELECT count(*) FROM cdp.claim('email', 10, '1 minute');
SELECT outbox_id = :m AS first, status, reason FROM cdp.outbox WHERE outbox_id IN (:m, :m2) ORDER BY outbox_id;
SELECT cdp.set_consent('{"email": "ana@shop.test"}', 'email', true, 'preference center') = :ana;

-- Suppressed addresses: a person with two, one blocked, gets the other.
SELECT cdp.identify('{"email": ["cy@shop.test", "cy@work.test"]}') AS cy \gset
SELECT cdp.set_consent('{"email": "cy@shop.test"}', 'email', true, 'form') = :cy;
INSERT INTO cdp.suppressions (address_type, address, reason) VALUES ('email', 'cy@work.test', 'manual');
SELECT cdp.enqueue(:cy, 'email', 'hello', '{}') AS m \gset
SELECT address FROM cdp.claim('email', 10, '1 minute');
SELECT cdp.ack(ARRAY[:m]);
INSERT INTO cdp.suppressions (address_type, address, reason) VALUES ('email', 'cy@shop.test', 'manual');
SELECT cdp.enqueue(:cy, 'email', 'hello', '{}', NULL, 'cy-2') AS m \gset
SELECT status, reason FROM cdp.outbox WHERE outbox_id = :m;
-- suppressed after enqueue: cancelled at claim
DELETE FROM cdp.suppressions WHERE address = 'cy@shop.test';
SELECT cdp.enqueue(:cy, 'email', 'hello', '{}') AS m \gset
INSERT INTO cdp.suppressions (address_type, address, reason) VALUES ('email', 'cy@shop.test', 'manual');
SELECT count(*) FROM cdp.claim('email', 10, '1 minute');
SELECT status, reason FROM cdp.outbox WHERE outbox_id = :m;

-- Quiet hours 22:00-08:00 in the recipient's zone, across midnight.
SELECT cdp.identify('{"phone": "+33612345678"}') AS dee \gset
SELECT cdp.set_consent('{"phone": "+33612345678"}', 'sms', true, 'form') = :dee;
SET cdp.fake_now = '2026-03-02 21:30:00+00';   -- 22:30 in Paris
SELECT cdp.enqueue(:dee, 'sms', 'code', '{"code": 1}') AS m \gset
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT status, not_before, reason FROM cdp.outbox WHERE outbox_id = :m;
SET cdp.fake_now = '2026-03-03 00:00:00+00';   -- 01:00 in Paris: still quiet
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SET cdp.fake_now = '2026-03-03 07:00:00+00';   -- 08:00 in Paris
SELECT body, address FROM cdp.claim('sms', 10, '1 minute');
SELECT cdp.ack(ARRAY[:m]);
-- early morning, after midnight
SET cdp.fake_now = '2026-03-03 04:00:00+00';   -- 05:00 in Paris
SELECT cdp.enqueue(:dee, 'sms', 'code', '{"code": 2}') AS m \gset
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT not_before FROM cdp.outbox WHERE outbox_id = :m;
SET cdp.fake_now = '2026-03-03 07:00:00+00';
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT cdp.ack(ARRAY[:m]);

-- Across the spring-forward night in Paris (2026-03-29 02:00 -> 03:00):
-- 23:00 CET to 08:00 CEST is 8 hours, not 9.
SET cdp.fake_now = '2026-03-28 22:00:00+00';
SELECT cdp.enqueue(:dee, 'sms', 'code', '{"code": 3}') AS m \gset
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT not_before, not_before - cdp.now() AS deferred_by, reason FROM cdp.outbox WHERE outbox_id = :m;
SET cdp.fake_now = '2026-03-29 06:00:00+00';
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT cdp.ack(ARRAY[:m]);
-- and the autumn night (2026-10-25 03:00 -> 02:00): 10 hours
SET cdp.fake_now = '2026-10-24 21:00:00+00';   -- 23:00 CEST
SELECT cdp.enqueue(:dee, 'sms', 'code', '{"code": 4}') AS m \gset
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT not_before, not_before - cdp.now() AS deferred_by FROM cdp.outbox WHERE outbox_id = :m;
SET cdp.fake_now = '2026-10-25 07:00:00+00';
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT cdp.ack(ARRAY[:m]);

-- The recipient's own zone (timezone trait), its DST a different day;
-- a zone PostgreSQL does not know falls back to cdp.timezone.
SELECT cdp.identify('{"phone": "+12125550123"}', '{"timezone": "America/New_York"}') AS eve \gset
SELECT cdp.set_consent('{"phone": "+12125550123"}', 'sms', true, 'form') = :eve;
SET cdp.fake_now = '2026-03-08 03:30:00+00';   -- 22:30 EST, the night clocks go forward
SELECT cdp.enqueue(:eve, 'sms', 'code', '{"code": 5}') AS m \gset
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT not_before, reason FROM cdp.outbox WHERE outbox_id = :m;
SET cdp.fake_now = '2026-03-08 12:00:00+00';   -- 08:00 EDT
SELECT count(*) FROM cdp.claim('sms', 10, '1 minute');
SELECT cdp.ack(ARRAY[:m]);
SELECT cdp.recipient_zone('Mars/Olympus'), cdp.recipient_zone(NULL), cdp.recipient_zone('Asia/Tokyo');
SELECT cdp.quiet_until('2026-03-29 00:30+00', 'Europe/Paris', '22:00', '02:30') AS in_the_gap;

-- Caps: 2 per day, 3 per week (from Monday) on 'news', in the recipient's
-- calendar.
UPDATE cdp.profiles SET traits = traits || '{"timezone": "Europe/Paris"}' WHERE profile_id = :ana;
SET cdp.fake_now = '2026-03-02 09:00:00+00';   -- Monday 10:00 in Paris
CREATE TEMP TABLE sent (step text, outbox_id bigint, status text, not_before timestamptz, reason text);
CREATE FUNCTION pg_temp.send(step text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    id := cdp.enqueue(current_setting('my.ana')::bigint, 'news', 'letter', '{}');
    PERFORM cdp.ack(coalesce(array_agg(c.outbox_id), '{}')) FROM cdp.claim('news', 10, '1 minute') c;
    INSERT INTO sent SELECT step, o.outbox_id, o.status, o.not_before, o.reason
    FROM cdp.outbox o WHERE o.outbox_id = id;
END
$$;
SELECT set_config('my.ana', :'ana', false) IS NOT NULL;
SELECT pg_temp.send('mon 1'), pg_temp.send('mon 2'), pg_temp.send('mon 3');
-- 23:30 UTC on Monday is Tuesday in Paris: the deferred one goes
SET cdp.fake_now = '2026-03-02 23:30:00+00';
SELECT count(*) AS deferred_goes FROM cdp.claim('news', 10, '1 minute');
SELECT cdp.ack(coalesce(array_agg(outbox_id), '{}')) FROM cdp.outbox WHERE status = 'leased';
SELECT pg_temp.send('tue 1');
SELECT step, status, not_before, reason FROM sent ORDER BY outbox_id;
SET cdp.fake_now = '2026-03-08 23:00:00+00';   -- Monday 00:00 in Paris
SELECT count(*) AS next_week FROM cdp.claim('news', 10, '1 minute');
SELECT cdp.ack(coalesce(array_agg(outbox_id), '{}')) FROM cdp.outbox WHERE status = 'leased';

-- The cap across channels (cdp.contact_cap_per_day).
SET cdp.contact_cap_per_day = 1;
SET cdp.fake_now = '2026-03-10 09:00:00+00';
SELECT cdp.enqueue(:ana, 'news', 'letter', '{}') AS n1 \gset
SELECT count(*) FROM cdp.claim('news', 10, '1 minute');
SELECT cdp.ack(ARRAY[:n1]);
SELECT cdp.enqueue(:ana, 'email', 'hello', '{}') AS e1 \gset
SELECT count(*) FROM cdp.claim('email', 10, '1 minute');
SELECT status, not_before, reason FROM cdp.outbox WHERE outbox_id = :e1;
RESET cdp.contact_cap_per_day;

-- "Why did this person not get it?" is one query.
SELECT channel, status, reason FROM cdp.outbox WHERE profile_id = :cy ORDER BY outbox_id;

-- Delivery feedback: events on the recipient; a hard bounce or a
-- complaint suppresses the address, an unsubscribe withdraws consent.
SET cdp.fake_now = '2026-03-11 09:00:00+00';
SELECT cdp.set_consent('{"email": "fay@shop.test"}', 'email', true, 'form') AS fay \gset
SELECT cdp.set_consent('{"email": "fay@shop.test"}', 'news', true, 'form') = :fay;
SELECT cdp.enqueue(:fay, 'email', 'hello', '{}') AS f1 \gset
SELECT address FROM cdp.claim('email', 10, '1 minute');
SELECT cdp.ack(ARRAY[:f1]);
SELECT cdp.report_delivery(:f1, 'delivered');
SELECT cdp.report_delivery(:f1, 'delivered');
SELECT cdp.report_delivery(:f1, 'opened', '{"ua": "x"}');
SELECT cdp.report_delivery(:f1, 'opened');
SELECT cdp.report_delivery(:f1, 'clicked', '{"url": "https://shop.test/?a=1&b=2"}');
SELECT cdp.report_delivery(:f1, 'bounced', '{"type": "soft"}');
SELECT count(*) AS suppressed_after_soft FROM cdp.suppressions WHERE address = 'fay@shop.test';
SELECT cdp.report_delivery(:f1, 'bounced', '{"type": "hard", "code": 550}');
SELECT address_type, address, reason, source FROM cdp.suppressions WHERE address = 'fay@shop.test';
SELECT cdp.report_delivery(:f1, 'complained');
SELECT cdp.enqueue(:fay, 'news', 'letter', '{}') AS f2 \gset
SELECT cdp.report_delivery(:f2, 'unsubscribed', '{"list": "news"}');
SELECT purpose, granted, source FROM cdp.consents WHERE profile_id = :fay ORDER BY purpose;
SELECT event, properties - 'outbox_id' AS properties, (properties ->> 'outbox_id')::bigint IN (:f1, :f2) AS ids
FROM cdp.events WHERE profile_id = :fay AND event LIKE 'Message %' ORDER BY received_at, event, properties::text;
SELECT cdp.report_delivery(:f1, 'lost');
SELECT cdp.report_delivery(:f1, 'bounced');
SELECT cdp.report_delivery(:f1, 'bounced', '{"type": "medium"}');
SELECT cdp.report_delivery(:f1, 'opened', '[]');
SELECT cdp.report_delivery(424242, 'opened');
SELECT cdp.report_delivery(NULL, 'opened');
-- Many messages in one call, each reported as alone: what a connector
-- sends for a batch.  An id that does not exist refuses the whole call.
SELECT cdp.report_deliveries(ARRAY[:f1, :f2], 'clicked', '{"url": "https://shop.test/b"}');
SELECT cdp.report_deliveries(ARRAY[:f1, :f2], 'delivered');
SELECT event, count(*) FROM cdp.events WHERE profile_id = :fay AND event IN ('Message Clicked', 'Message Delivered')
GROUP BY event ORDER BY event;
SELECT cdp.report_deliveries(ARRAY[:f1, 424242], 'opened');
SELECT count(*) AS opens FROM cdp.events WHERE profile_id = :fay AND event = 'Message Opened';
SELECT cdp.report_deliveries('{}', 'delivered');
SELECT cdp.report_deliveries(ARRAY[:f1, NULL], 'delivered');
SELECT cdp.report_deliveries(NULL, 'delivered');
SELECT cdp.report_deliveries(ARRAY[:f1], 'lost');

-- A merge keeps the most restrictive consent of its parts.
SELECT cdp.set_consent('{"user_id": "g-1"}', 'marketing', true, 'shop') AS g1 \gset
SELECT cdp.set_consent('{"user_id": "g-1"}', 'email', true, 'shop') = :g1;
SELECT cdp.set_consent('{"email": "gil@shop.test"}', 'marketing', false, 'mail') AS g2 \gset
SELECT cdp.set_consent('{"email": "gil@shop.test"}', 'sms', true, 'mail') = :g2;
SELECT cdp.identify('{"user_id": "g-1", "email": "gil@shop.test"}') AS g \gset
SELECT profile_id = :g AS winner, purpose, granted, source FROM cdp.consents
WHERE profile_id IN (:g1, :g2) ORDER BY purpose;
