-- The bulk path: COPY into cdp.inbox, drained by cdp.tick() (the worker does
-- the same in the background; it is off in this suite).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';

-- COPY's text format reads backslashes as escapes; CSV with characters that
-- never occur in JSON lines keeps each line as it is.
COPY cdp.inbox (message) FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
{"type": "identify", "userId": "u-1", "traits": {"email": "ann@shop.test", "note": "a \"quoted\" back\\slash"}, "messageId": "i-1"}
{"type": "track", "userId": "u-1", "event": "Order Completed", "properties": {"total": 99.5}, "messageId": "i-2"}
{"type": "track", "userId": "u-1", "event": "Order Completed", "properties": {"total": 99.5}, "messageId": "i-2"}
this is not json
{"type": "track", "event": "Lost", "properties": {}}
{"type": "page", "anonymousId": "a-1", "name": "Home", "messageId": "i-3"}
{"type": "alias", "previousId": "a-1", "userId": "u-1", "messageId": "i-4"}
{"type": "track", "userId": "u-2", "event": "Unicode ✓ 日本語 \u00e9", "properties": {"emoji": "🛒", "ctl": "\u0007"}, "messageId": "i-5"}
{"type": "track", "userId": "u-2", "event": "Nul", "properties": {"bad": "\u0000"}, "messageId": "i-6"}
{"type": "track", "userId": "u-2", "event": "Late", "timestamp": "2026-02-30T00:00:00Z", "messageId": "i-7"}
[1, 2, 3]
\.

SELECT section, metric, value FROM cdp.stats WHERE section = 'inbox' AND metric = 'backlog';
SELECT cdp.tick()->'inbox' AS drained;
SELECT cdp.tick()->'inbox' AS nothing_left;
SELECT count(*) AS inbox_left FROM cdp.inbox;
SELECT event_id, event, profile_id FROM cdp.events ORDER BY event_id;
SELECT sqlstate, reason, detail, left(message, 40) AS message FROM cdp.inbox_rejects ORDER BY inbox_id;
SELECT traits->>'note' AS note FROM cdp.profiles WHERE profile_id = cdp.resolve('{"user_id": "u-1"}');
SELECT properties FROM cdp.events WHERE event_id = 'i-5';

-- a re-sent message after the drain is still a duplicate
INSERT INTO cdp.inbox (message) VALUES ('{"type": "track", "userId": "u-1", "event": "Order Completed", "messageId": "i-2"}');
SELECT cdp.tick()->'inbox';
SELECT count(*) FROM cdp.events WHERE event_id = 'i-2';

-- batches are bounded by cdp.batch_size
INSERT INTO cdp.inbox (message)
SELECT format('{"type": "track", "anonymousId": "bulk-%s", "event": "Bulk", "messageId": "bulk-%s"}', g % 7, g)
FROM generate_series(1, 25) g;
SET cdp.batch_size = 10;
SELECT cdp.tick()->'inbox' AS first_batch;
SELECT count(*) AS left_after_one FROM cdp.inbox;
SELECT cdp.tick()->'inbox', cdp.tick()->'inbox';
SELECT count(*) AS bulk_events, count(DISTINCT profile_id) AS bulk_profiles
FROM cdp.events WHERE event = 'Bulk';
RESET cdp.batch_size;

-- a 1 MB property lands; a message over cdp.max_message_bytes is rejected
INSERT INTO cdp.inbox (message)
SELECT format('{"type": "track", "userId": "u-big", "event": "Big", "messageId": "big-1", "properties": {"blob": "%s"}}',
              repeat('x', 1024 * 1024));
SELECT cdp.tick()->'inbox';
SET cdp.max_message_bytes = '512kB';
INSERT INTO cdp.inbox (message)
SELECT format('{"type": "track", "userId": "u-big", "event": "Too Big", "messageId": "big-2", "properties": {"blob": "%s"}}',
              repeat('y', 600 * 1024));
SELECT cdp.tick()->'inbox';
RESET cdp.max_message_bytes;
SELECT event_id, length(properties->>'blob') FROM cdp.events WHERE event_id LIKE 'big-%';
SELECT sqlstate, reason FROM cdp.inbox_rejects WHERE message LIKE '%big-2%';

-- pathological lines become rejects and never stall the drain: words and
-- zone names as timestamps, bare numbers, nesting deeper than the stack
INSERT INTO cdp.inbox (message) VALUES
  ('{"type": "track", "userId": "u-9", "event": "Tz", "timestamp": "2026-11-23 10:00 CEST+"}'),
  ('{"type": "track", "userId": "u-9", "event": "Word", "timestamp": "yesterday"}'),
  ('{"type": "track", "userId": "u-9", "event": "Number", "timestamp": "1700000000"}'),
  ('{"type": "track", "userId": "u-9", "event": "Deep", "properties": ' || repeat('[', 100000) || repeat(']', 100000) || '}'),
  ('{"type": "track", "userId": "u-9", "event": "Fine", "timestamp": "2026-04-30T10:00:00.123+02:00"}');
SELECT cdp.tick()->'inbox';
SELECT event, occurred_at FROM cdp.events WHERE profile_id = cdp.resolve('{"user_id": "u-9"}');
SELECT sqlstate, reason FROM cdp.inbox_rejects WHERE message LIKE '%u-9%' ORDER BY inbox_id;
SELECT count(*) AS left_in_inbox FROM cdp.inbox;
