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
