-- Sources: write keys (stored hashed), per-source message-id dedupe, and
-- reasons a loader leaves in the inbox.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';

SELECT cdp.create_source('web', 'web-write-key-0123456789') AS web_key;
SELECT length(cdp.create_source('ios')) AS random_key_length;
SELECT cdp.create_source('tiny', 'short');
SELECT cdp.create_source('web', 'another-key-0123456789');
SELECT cdp.create_source('bad name!', 'another-key-0123456789');
-- only the hash is stored
SELECT name, write_key_sha256 = encode(sha256('web-write-key-0123456789'), 'hex') AS hashed, enabled
FROM cdp.sources ORDER BY name;
SELECT * FROM cdp.authenticate_source('web-write-key-0123456789');
SELECT count(*) AS unknown_key FROM cdp.authenticate_source('nope') WHERE source IS NOT NULL;

-- the same messageId from two sources is two events; twice from one, one
INSERT INTO cdp.inbox (message, source) VALUES
  ('{"type": "track", "userId": "u-1", "event": "Viewed", "messageId": "same-id"}', 'web'),
  ('{"type": "track", "userId": "u-1", "event": "Viewed", "messageId": "same-id"}', 'ios'),
  ('{"type": "track", "userId": "u-1", "event": "Viewed", "messageId": "same-id"}', 'web');
SELECT cdp.tick()->'inbox';
SELECT source, count(*) FROM cdp.events GROUP BY 1 ORDER BY 1;
SELECT source, message_id FROM cdp.message_ids ORDER BY 1;
-- SQL calls have their own namespace
SELECT cdp.track('{"user_id": "u-1"}', 'Viewed', '{}', NULL, NULL, 'same-id') > 0;
SELECT cdp.ingest_batch('[{"type": "track", "userId": "u-1", "event": "Viewed", "messageId": "same-id"}]', 'web');
SELECT cdp.ingest_batch('[{"type": "track", "userId": "u-1", "event": "Viewed", "messageId": "same-id"}]', 'android');
SELECT count(*) AS events FROM cdp.events;

-- a loader's verdict becomes the reject reason, with its SQLSTATE
INSERT INTO cdp.inbox (message, source, reject_reason) VALUES
  ('{"type": "track", "userId": "u-2", "event": "Huge"}', 'web', '54000: message is larger than 32 kB'),
  ('{"type": "track", "userId": "u-2", "event": "Odd"}', 'web', 'refused for a reason without code');
SELECT cdp.tick()->'inbox';
SELECT source, sqlstate, reason, detail FROM cdp.inbox_rejects ORDER BY reject_id;
SELECT count(*) AS not_ingested FROM cdp.events WHERE event IN ('Huge', 'Odd');

-- Writing in a source's name needs its writer role: an ingest role cannot
-- claim a message id in another source's namespace, name an unknown
-- source, or set who loaded a row.
CREATE ROLE regress_collector LOGIN IN ROLE cdp_ingest;
CREATE ROLE regress_intruder LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('shop', 'shop-write-key-0123456789', writer => 'regress_collector') IS NOT NULL AS created;
SET ROLE regress_intruder;
INSERT INTO cdp.inbox (message, source) VALUES
  ('{"type": "track", "userId": "u-3", "event": "Poison", "messageId": "shop-1"}', 'shop'),
  ('{"type": "track", "userId": "u-3", "event": "Nowhere", "messageId": "x-1"}', 'no-such-source');
INSERT INTO cdp.inbox (message, source, loaded_by)
  VALUES ('{"type": "track", "userId": "u-3", "event": "Forged", "messageId": "shop-2"}', 'shop', 'regress_collector');
SELECT cdp.ingest_batch('[{"type": "track", "userId": "u-3", "event": "Poison", "messageId": "shop-3"}]', 'shop');
SELECT cdp.ingest_batch('[{"type": "track", "userId": "u-3", "event": "Nowhere"}]', 'no-such-source');
RESET ROLE;
SET ROLE regress_collector;
INSERT INTO cdp.inbox (message, source) VALUES
  ('{"type": "track", "userId": "u-3", "event": "Genuine", "messageId": "shop-1"}', 'shop');
SELECT cdp.ingest_batch('[{"type": "track", "userId": "u-3", "event": "Genuine", "messageId": "shop-3"}]', 'shop');
RESET ROLE;
SELECT loaded_by, source FROM cdp.inbox ORDER BY inbox_id;
SELECT cdp.tick()->'inbox';
-- the genuine messages landed; the intruder's are rejects saying why
SELECT event, source FROM cdp.events WHERE source = 'shop' ORDER BY event_id;
SELECT source, sqlstate, reason FROM cdp.inbox_rejects WHERE message LIKE '%u-3%' ORDER BY reject_id;
-- a disabled source's waiting messages are kept as rejects
UPDATE cdp.sources SET enabled = false WHERE name = 'shop';
SET ROLE regress_collector;
INSERT INTO cdp.inbox (message, source) VALUES
  ('{"type": "track", "userId": "u-4", "event": "Late", "messageId": "shop-9"}', 'shop');
RESET ROLE;
SELECT cdp.tick()->'inbox';
SELECT sqlstate, reason, detail FROM cdp.inbox_rejects WHERE message LIKE '%shop-9%';
DROP ROLE regress_collector, regress_intruder;
