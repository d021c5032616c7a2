-- cdp.next_best_actions for :calls random people (20 offers), each call
-- timed on the server; prints p50 and p99 in milliseconds, and the p50 and
-- p99 of a pure-CPU statement of about the same median timed the same way
-- (what the machine's load adds to any short statement).
SET client_min_messages = warning;
-- a server that decides in real time keeps what a decision reads in memory:
-- its tables and their indexes are read into shared buffers first (a read
-- from this machine's disk costs milliseconds on its own)
CREATE EXTENSION IF NOT EXISTS pg_prewarm;
SELECT sum(pg_prewarm(c.oid)) AS blocks_prewarmed FROM pg_class c
WHERE c.relnamespace = 'cdp'::regnamespace AND c.relkind IN ('r', 'i')
  AND c.relname ~ '^(profiles|profile_traits|identities|consents|suppressions|segment_members|offer_sends|outbox|offer_capacity|offer_arms)' \gset
-- a first call loads the offers and prepares the plans, as any session's would
SELECT count(*) FROM cdp.next_best_actions(1, 3) \gset
CREATE TEMP TABLE nba_times (ms float8, probe float8);
SELECT set_config('bench.calls', :'calls', false), set_config('bench.people', :'people', false) \gset
DO $$
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    pid bigint;
BEGIN
    PERFORM setseed(0.3);
    FOR i IN 1..current_setting('bench.calls')::int LOOP
        pid := 1 + floor(random() * current_setting('bench.people')::int)::bigint;
        t0 := clock_timestamp();
        PERFORM count(*) FROM cdp.next_best_actions(pid, 3);
        t1 := clock_timestamp();
        -- the machine's own noise: a pure-CPU statement of about the
        -- same median, timed the same way
        PERFORM sum(g) FROM generate_series(1, 2500) g;
        INSERT INTO nba_times VALUES (extract(epoch FROM t1 - t0) * 1000,
                                      extract(epoch FROM clock_timestamp() - t1) * 1000);
    END LOOP;
END $$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) || ' ' ||
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) || ' ' ||
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY probe)::numeric, 3) || ' ' ||
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY probe)::numeric, 3)
FROM nba_times;
