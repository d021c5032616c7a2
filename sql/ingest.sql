-- Ingestion: cdp.track, cdp.identify, cdp.ingest (Segment spec), dedupe, time.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';
SELECT cdp.create_event_partitions('2026-04-01', 3);

-- track with every argument
SELECT cdp.track('{"email": "carol@shop.test"}', 'Order Completed',
                 '{"total": 182.5, "currency": "EUR", "items": [{"sku": "A-1"}]}',
                 '2026-04-30 15:00:00+00', 'store', 'till-0001') AS carol;
SELECT profile_id, event, properties, channel, type, occurred_at, event_id
FROM cdp.events WHERE event_id = 'till-0001';
-- the event landed in its month's partition
SELECT tableoid::regclass FROM cdp.events WHERE event_id = 'till-0001';

-- a re-sent event id: same profile, no second event, also with other identifiers
SELECT cdp.track('{"email": "carol@shop.test"}', 'Order Completed', '{}',
                 '2026-04-30 15:00:00+00', 'store', 'till-0001') AS same;
SELECT cdp.track('{"cookie": "someone-else"}', 'Order Completed', '{}', NULL, NULL, 'till-0001') AS still_carol;
SELECT count(*) FROM cdp.events WHERE event_id = 'till-0001';
SELECT count(*) AS no_profile_created FROM cdp.identities WHERE value = 'someone-else';

-- identify: traits survive by recency, per trait
SELECT cdp.identify('{"email": "carol@shop.test"}', '{"first_name": "Carol", "tier": "gold"}',
                    '2026-04-01 00:00:00+00', 'crm') AS carol;
SELECT cdp.identify('{"email": "carol@shop.test"}', '{"tier": "silver"}',
                    '2026-03-01 00:00:00+00', 'web');   -- older: does not win
SELECT cdp.identify('{"email": "carol@shop.test"}', '{"city": "Lyon"}',
                    '2026-04-20 00:00:00+00', 'web');
SELECT traits FROM cdp.profiles WHERE profile_id = cdp.resolve('{"email": "carol@shop.test"}');
-- a stronger source beats a newer value from a weaker one
SET cdp.trait_source_priority = 'crm, store';
SELECT cdp.identify('{"email": "carol@shop.test"}', '{"first_name": "Caz"}',
                    '2026-04-25 00:00:00+00', 'web');
SELECT traits->>'first_name' AS kept_crm_value
FROM cdp.profiles WHERE profile_id = cdp.resolve('{"email": "carol@shop.test"}');
RESET cdp.trait_source_priority;

-- Segment-spec messages
SELECT cdp.ingest('{"type": "identify", "userId": "u-100", "anonymousId": "anon-1",
                    "traits": {"email": "Dan@Shop.test", "phone": "(415) 555-2671", "name": "Dan"},
                    "messageId": "seg-1", "timestamp": "2026-04-10T09:00:00Z"}') AS dan;
SELECT type, value FROM cdp.identities WHERE profile_id = cdp.resolve('{"user_id": "u-100"}')
ORDER BY 1;
SELECT cdp.ingest('{"type": "page", "anonymousId": "anon-1", "name": "Home", "category": "Landing",
                    "properties": {"url": "https://shop.test/"}, "messageId": "seg-2",
                    "timestamp": "2026-04-10T09:01:00Z"}') = cdp.resolve('{"user_id": "u-100"}') AS dan;
SELECT cdp.ingest('{"type": "screen", "userId": "u-100", "name": "Cart", "messageId": "seg-3"}') IS NOT NULL;
SELECT cdp.ingest('{"type": "group", "userId": "u-100", "groupId": "acme", "traits": {"plan": "pro"},
                    "messageId": "seg-4"}') IS NOT NULL;
SELECT cdp.ingest('{"type": "track", "userId": "u-100", "event": "Product Viewed",
                    "context": {"traits": {"email": "dan@shop.test"}, "channel": "app",
                                "externalIds": [{"id": "LC-555", "type": "loyalty_card"}]},
                    "messageId": "seg-5"}') IS NOT NULL;
SELECT event_id, event, type, channel, properties FROM cdp.events
WHERE event_id LIKE 'seg-%' ORDER BY event_id;
SELECT cdp.resolve('{"loyalty_card": "LC-555"}') = cdp.resolve('{"user_id": "u-100"}') AS card_linked;

-- alias: previousId is looked up as user_id, then anonymous_id
SELECT cdp.ingest('{"type": "track", "anonymousId": "anon-2", "event": "Browsed", "messageId": "al-1"}') AS anon2;
SELECT cdp.ingest('{"type": "alias", "previousId": "anon-2", "userId": "u-200", "messageId": "al-2"}') AS aliased;
SELECT type, value FROM cdp.identities WHERE profile_id = cdp.resolve('{"user_id": "u-200"}') ORDER BY 1;
-- an unknown previousId is stored as an anonymous_id
SELECT cdp.ingest('{"type": "alias", "previousId": "never-seen", "userId": "u-300"}') > 0;
SELECT type FROM cdp.identities WHERE value = 'never-seen';

-- clock skew: timestamp = receivedAt - (sentAt - timestamp)
SELECT cdp.ingest('{"type": "track", "userId": "u-100", "event": "Skewed", "messageId": "skew-1",
                    "timestamp": "2026-04-30T09:00:00Z", "sentAt": "2026-04-30T09:05:00Z",
                    "receivedAt": "2026-04-30T10:05:00Z"}') IS NOT NULL;
SELECT occurred_at, received_at FROM cdp.events WHERE event_id = 'skew-1';
-- RudderStack sends the client time as originalTimestamp, corrected the same way
SELECT cdp.ingest('{"type": "track", "userId": "u-100", "event": "Rudder", "messageId": "skew-2",
                    "originalTimestamp": "2026-04-30T09:00:00Z", "sentAt": "2026-04-30T10:00:00Z",
                    "receivedAt": "2026-04-30T10:00:02Z"}') IS NOT NULL;
SELECT occurred_at FROM cdp.events WHERE event_id = 'skew-2';
-- no timestamp: the time of receipt (cdp.now())
SELECT cdp.ingest('{"type": "track", "userId": "u-100", "event": "Now", "messageId": "now-1"}') IS NOT NULL;
SELECT occurred_at FROM cdp.events WHERE event_id = 'now-1';
-- timestamps mean what PostgreSQL makes of them, in every shape senders use
-- (the usual ISO 8601 shapes take a short path, which must agree)
\set shapes '{2026-11-23T10:00:00Z, 2026-11-23t10:00:00z, 2026-11-23T10:00:00.5Z, 2026-11-23T10:00:00.123456Z, 2024-02-29T23:59:59.999999+14:00, 2026-11-23T10:00:00-03:30, 2026-11-23T10:00:00+05:45, 1900-01-01T00:00:00Z, 3000-12-31T23:59:59Z, 2026-11-23 10:00:00+00, 2026-11-23T10:00:00.1234567Z, 2026-11-23T10:00:00+0200, 2026-11-23T10:00Z}'
SELECT count(*) AS ingested FROM unnest(:'shapes'::text[]) WITH ORDINALITY AS u(t, n)
WHERE cdp.ingest(jsonb_build_object('type', 'track', 'userId', 'u-ts', 'event', 'Shape',
                                    'messageId', 'ts-' || n, 'timestamp', t)) IS NOT NULL;
SELECT t, e.occurred_at = t::timestamptz AS same
FROM unnest(:'shapes'::text[]) WITH ORDINALITY AS u(t, n)
LEFT JOIN cdp.events e ON e.event_id = 'ts-' || n ORDER BY n;

-- far past and far future land in the default partition
SELECT cdp.track('{"user_id": "u-100"}', 'Ancient', '{}', '1900-01-01 00:00:00+00') IS NOT NULL;
SELECT cdp.track('{"user_id": "u-100"}', 'Future', '{}', '3000-01-01 00:00:00+00') IS NOT NULL;
SELECT event, tableoid::regclass FROM cdp.events WHERE event IN ('Ancient', 'Future') ORDER BY 1;
-- that month can still get its own partition: its rows move there
SELECT cdp.create_event_partitions('3000-01-01', 1) AS created;
SELECT event, tableoid::regclass FROM cdp.events WHERE event IN ('Ancient', 'Future') ORDER BY 1;

-- ingest_batch: good messages land, bad ones become rejects, duplicates count
SELECT cdp.ingest_batch('[
  {"type": "track", "userId": "u-100", "event": "Batch A", "messageId": "b-1"},
  {"type": "track", "userId": "u-100", "event": "Batch A", "messageId": "b-1"},
  {"type": "track", "userId": "u-100", "messageId": "b-2"},
  {"type": "track", "event": "No Ids", "messageId": "b-3"},
  "not an object",
  {"type": "track", "userId": "u-100", "event": "Batch B", "messageId": "b-4", "timestamp": "yesterday-ish"},
  {"type": "identify", "anonymousId": "anon-batch", "traits": {"email": "eve@shop.test"}, "messageId": "b-5"}
]');
SELECT event_id, event FROM cdp.events WHERE event_id LIKE 'b-%' ORDER BY 1;
SELECT source, sqlstate, reason, detail FROM cdp.inbox_rejects ORDER BY reject_id;
-- the Segment batch envelope
SELECT cdp.ingest_batch('{"batch": [{"type": "track", "userId": "u-100", "event": "Env", "messageId": "env-1"}],
                          "sentAt": "2026-05-01T10:00:00Z"}');
