-- setup.sql: the bench schema and its helpers, in every benchmark database.
-- Run before anything else (scripts/bench.sh feeds it on stdin).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cdp;
CREATE SCHEMA IF NOT EXISTS bench;

-- bench.reset_cdp(): pg_cdp back to empty (identifier types kept), with the
-- month partitions of the generated data (October and November 2026) and of
-- today. Run between two measured drains so each starts from the same state.
CREATE OR REPLACE FUNCTION bench.reset_cdp() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    SELECT string_agg(c, ', ') INTO t
    FROM unnest(ARRAY['cdp.events', 'cdp.message_ids', 'cdp.identities',
                      'cdp.identifier_issues', 'cdp.profiles', 'cdp.profile_changes',
                      'cdp.merges', 'cdp.inbox', 'cdp.inbox_rejects']) AS c
    WHERE to_regclass(c) IS NOT NULL;
    EXECUTE 'TRUNCATE ' || t || ' RESTART IDENTITY';
    PERFORM cdp.create_event_partitions(date '2026-10-01', 2);
    PERFORM cdp.create_event_partitions((date_trunc('month', cdp.now()) - interval '1 month')::date, 4);
END
$$;

-- bench.cdp_components: every identifier pg_cdp stored, with a canonical key
-- of its component (the smallest "type:value" of its profile).
CREATE OR REPLACE VIEW bench.cdp_components AS
    SELECT type, value, min(type || ':' || value) OVER (PARTITION BY profile_id) AS ckey
    FROM cdp.identities;

-- The same for label propagation, filled by labelprop.sql (or loaded from
-- its file in another database).
CREATE TABLE IF NOT EXISTS bench.lp_components (type text, value text, ckey text);

-- bench.wait_drained(target, timeout): returns once the worker has taken
-- target inbox rows in all (its shared counters) and cdp.inbox is empty.
-- It commits between polls, so it holds no snapshot that would keep the
-- drained rows from being cleaned up, and costs no new connection per poll.
CREATE OR REPLACE PROCEDURE bench.wait_drained(target bigint, timeout_s integer)
    LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
    LOOP
        IF (SELECT drained + rejected FROM cdp.worker_status()) >= target THEN
            EXIT WHEN NOT EXISTS (SELECT 1 FROM cdp.inbox);
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the inbox was not drained in % s', timeout_s;
        END IF;
        PERFORM pg_sleep(0.02);
        COMMIT;
    END LOOP;
END
$$;

-- bench.tick_until_empty(batch): the worker's job done from this session,
-- one cdp.tick() (one batch) per transaction until a tick finds the inbox
-- empty; returns the number of ticks in ticks.
CREATE OR REPLACE PROCEDURE bench.tick_until_empty(batch integer, INOUT ticks integer DEFAULT 0)
    LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM set_config('cdp.batch_size', batch::text, false);
    ticks := 0;
    LOOP
        r := cdp.tick();
        ticks := ticks + 1;
        COMMIT;
        EXIT WHEN coalesce((r->>'inbox')::bigint, 0) = 0;
    END LOOP;
END
$$;
