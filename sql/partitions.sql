-- Back-filled history: events of months without a partition land in the
-- default partition; cdp.create_event_partitions moves them into their
-- months' partitions, and cdp.ensure_event_partitions creates a backfill's
-- months before it loads.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-05-10 12:00+00';

-- A shop's history, loaded before its months had partitions, through the
-- bulk path (the worker's drain; cdp.tick() here). Ann's messages come out
-- of order: her profile was created by the earliest of them.
COPY cdp.inbox (message) FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
{"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": "2019-03-05T10:00:00Z", "messageId": "h-1"}
{"type": "identify", "userId": "ann", "traits": {"email": "ann@shop.test"}, "timestamp": "2019-01-20T09:00:00Z", "messageId": "h-2"}
{"type": "track", "anonymousId": "c-ann", "userId": "ann", "event": "Viewed", "timestamp": "2019-02-11T08:30:00Z", "messageId": "h-3"}
{"type": "track", "userId": "bob", "event": "Order Completed", "timestamp": "2019-01-31T23:59:59Z", "messageId": "h-4"}
{"type": "track", "userId": "bob", "event": "Order Completed", "timestamp": "2019-03-01T00:00:00Z", "messageId": "h-5"}
{"type": "track", "userId": "cid", "event": "Order Completed", "timestamp": "2019-03-17T12:00:00Z", "messageId": "h-6"}
{"type": "track", "userId": "dee", "event": "Today", "messageId": "h-7"}
\.
SELECT cdp.tick()->'inbox' AS drained;
SELECT tableoid::regclass::text AS partition, count(*) FROM cdp.events GROUP BY 1 ORDER BY 1;

-- Profiles and identities a backfill creates carry the history's time:
-- created_at is the time of the profile's earliest message, first_seen_at
-- that of the earliest message that carried the identifier; updated_at is
-- the load's.
SELECT i.value AS user_id, p.created_at, p.updated_at
FROM cdp.profiles p JOIN cdp.identities i ON i.profile_id = p.profile_id AND i.type = 'user_id'
ORDER BY 1;
SELECT type, value, first_seen_at FROM cdp.identities ORDER BY first_seen_at, type;

-- The months get their partitions now: each month's rows move out of the
-- default partition, and each move says how many rows it took.
SELECT cdp.create_event_partitions('2019-01-01', 3) AS created;
SELECT tableoid::regclass::text AS partition, count(*) FROM cdp.events GROUP BY 1 ORDER BY 1;
SELECT event_id, tableoid::regclass AS partition, occurred_at FROM cdp.events
WHERE event_id LIKE 'h-%' ORDER BY event_id;
-- a moved month is a partition like any other: its indexes, the parent's
-- grants, no constraint left but its bound, and queries by month prune to it
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound,
       (SELECT string_agg(indexrelid::regclass::text, ', ' ORDER BY indexrelid::regclass::text)
        FROM pg_index WHERE indrelid = c.oid) AS indexes,
       (SELECT count(*) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'c') AS checks,
       c.relacl = (SELECT relacl FROM pg_class WHERE oid = 'cdp.events_2026_05'::regclass) AS grants_as_made_empty
FROM pg_class c WHERE c.oid IN ('cdp.events_2019_01'::regclass, 'cdp.events_2019_03'::regclass)
ORDER BY 1;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM cdp.events WHERE occurred_at >= '2019-03-01' AND occurred_at < '2019-04-01';
-- and rows of those months written later land there too
SELECT cdp.track('{"user_id": "bob"}', 'Late Import', '{}', '2019-02-14 10:00+00') AS bob;
SELECT tableoid::regclass AS partition FROM cdp.events WHERE event = 'Late Import';

-- The worker's upkeep (cdp.tick() here) does the same for the months it
-- keeps, the previous one to two ahead, quietly: events written before it
-- made September's partition move there.
SET cdp.fake_now = '2026-09-15 12:00+00';
SELECT cdp.track('{"user_id": "dee"}', 'Early September') AS dee;
SELECT tableoid::regclass AS partition FROM cdp.events WHERE event = 'Early September';
SELECT cdp.tick()->'partitions' AS partitions;
SELECT tableoid::regclass AS partition FROM cdp.events WHERE event = 'Early September';
SET cdp.fake_now = '2026-05-10 12:00+00';

-- Nothing left to do: it says so rather than return 0 without a word.
SELECT cdp.create_event_partitions('2019-01-01', 3) AS created;

-- A backfill creates the months it needs before it loads, and nothing of
-- it lands in the default partition. Months are UTC months.
SELECT cdp.ensure_event_partitions('2018-10-15 00:00+00', '2018-12-31 23:00-08') AS created;
SELECT relname FROM pg_class
WHERE relkind = 'r' AND (relname LIKE 'events_2018%' OR relname = 'events_2019_01') ORDER BY 1;
SELECT cdp.ensure_event_partitions('2018-10-15', '2019-03-31') AS again;   -- quiet: all there
SELECT count(*) AS in_default_before FROM cdp.events_default;
SELECT cdp.ingest_batch('[
  {"type": "track", "userId": "eve", "event": "Order Completed", "timestamp": "2018-10-15T00:00:00Z", "messageId": "k-1"},
  {"type": "track", "userId": "eve", "event": "Order Completed", "timestamp": "2018-11-30T23:59:59Z", "messageId": "k-2"},
  {"type": "track", "userId": "eve", "event": "Order Completed", "timestamp": "2019-01-01T07:00:00Z", "messageId": "k-3"}
]') AS loaded;
SELECT event_id, tableoid::regclass AS partition FROM cdp.events WHERE event_id LIKE 'k-%' ORDER BY 1;
SELECT count(*) AS in_default_after FROM cdp.events_default;
SELECT created_at FROM cdp.profiles WHERE profile_id = cdp.resolve('{"user_id": "eve"}');

-- The default partition keeps what no month holds (far past, far future).
SELECT cdp.track('{"user_id": "eve"}', 'Ancient', '{}', '1900-01-01 00:00+00') > 0 AS tracked;
SELECT event, occurred_at FROM cdp.events_default ORDER BY 1;

-- What ensure_event_partitions refuses.
SELECT cdp.ensure_event_partitions(NULL, '2019-01-01');
SELECT cdp.ensure_event_partitions('2019-02-01', '2019-01-01');
SELECT cdp.ensure_event_partitions('-infinity', '2019-01-01');
SELECT cdp.ensure_event_partitions('1900-01-01', '2026-01-01');
-- the worker's task calls it; users need cdp_admin, as for create_event_partitions
SELECT r, has_function_privilege(r, 'cdp.ensure_event_partitions(timestamptz, timestamptz)', 'EXECUTE')
FROM unnest(ARRAY['cdp_admin', 'cdp_ingest', 'cdp_analyst', 'public']) AS r ORDER BY 1;
