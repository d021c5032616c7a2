-- Bad input gets a clear error with a SQLSTATE that names the problem.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
-- Each statement and the error it raises: SQLSTATE, message, detail, hint.
CREATE FUNCTION pg_temp.try(q text, OUT code text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE q;
    code := '00000';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END
$f$;

\x on
SELECT t.q AS statement, r.* FROM (VALUES
    ($$SELECT cdp.track(NULL, 'x')$$),
    ($$SELECT cdp.track('{}', 'x')$$),
    ($$SELECT cdp.track('"alice@shop.test"', 'x')$$),
    ($$SELECT cdp.track('[{"email": "a@shop.test"}]', 'x')$$),
    ($$SELECT cdp.track('{"email": {"nested": true}}', 'x')$$),
    ($$SELECT cdp.track('{"email": null}', 'x')$$),
    ($$SELECT cdp.track('{"email": "not-an-email"}', 'x')$$),
    ($$SELECT cdp.track('{"phone": "call me maybe"}', 'x')$$),
    ($$SELECT cdp.track('{"Bad Type!": "x"}', 'x')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', NULL)$$),
    ($$SELECT cdp.track('{"cookie": "c"}', '')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '[1]')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', 'infinity')$$),
    ($$SELECT cdp.track('{"cookie": "c\u0001"}', 'x')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', repeat('e', 201))$$),
    ($$SELECT cdp.identify('{"cookie": "c"}', '"traits"')$$),
    ($$SELECT cdp.ingest(NULL)$$),
    ($$SELECT cdp.ingest('{}')$$),
    ($$SELECT cdp.ingest('[]')$$),
    ($$SELECT cdp.ingest('{"type": "trak", "userId": "u"}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "event": "x"}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u"}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": {"id": 1}, "event": "x"}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u", "event": "x", "properties": [1]}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u", "event": "x", "timestamp": "tomorrow at noon"}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u", "event": "x", "timestamp": 1700000000}')$$),
    ($$SELECT cdp.ingest('{"type": "alias", "userId": "u"}')$$),
    ($$SELECT cdp.ingest('{"type": "group", "userId": "u"}')$$),
    ($$SELECT cdp.ingest('{"type": "track", "anonymousId": "unknown", "event": "x"}')$$),
    ($$SELECT cdp.ingest_batch(NULL)$$),
    ($$SELECT cdp.ingest_batch('{"not": "a batch"}')$$),
    ($$SELECT cdp.forget(NULL)$$),
    ($$SELECT cdp.forget('{"nope": "x"}')$$),
    ($$SELECT cdp.create_event_partitions('2026-01-01', 0)$$),
    -- NULL arguments are refused before any SQL is built from them
    ($$SELECT cdp.create_event_partitions(NULL, 1)$$),
    ($$SELECT cdp.create_event_partitions('2026-01-01', NULL)$$),
    ($$SELECT * FROM cdp.stitch(NULL)$$),
    ($$SELECT * FROM cdp.stitch('pg_class', NULL)$$),
    ($$SELECT cdp.identify(NULL, '{}')$$),
    ($$SELECT cdp.identify('{"cookie": "c"}', NULL)$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', NULL)$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL)$$),
    ($$SELECT cdp.unmerge(NULL)$$),
    ($$SELECT cdp.create_source(NULL)$$)
) AS t(q), LATERAL pg_temp.try(t.q) AS r;
\x off
SET cdp.batch_size = 0;

-- hostile strings are data, not code
SELECT cdp.track('{"user_id": "x''); DROP TABLE cdp.events; --"}', 'Robert''); DROP TABLE cdp.profiles; --',
                 '{"q": "\"; DELETE FROM cdp.identities; --"}') > 0 AS stored;
SELECT count(*) FROM cdp.events;
SELECT value FROM cdp.identities;
-- unicode identifiers are kept exactly (after trimming)
SELECT cdp.track('{"loyalty_card": "  カード-42  "}', 'Ünïcödé ✓') = cdp.resolve('{"loyalty_card": "カード-42"}') AS unicode_ok;
-- nothing above created a profile except the two successful calls
SELECT count(*) FROM cdp.profiles;
