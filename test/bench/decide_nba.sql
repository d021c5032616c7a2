-- cdp.next_best_actions for :calls random people (20 offers), each call
-- timed on the server; prints p50 and p99 in milliseconds.
SET client_min_messages = warning;
-- a first call loads the offers and prepares the plans, as any session's would
SELECT count(*) FROM cdp.next_best_actions(1, 3) \gset
CREATE TEMP TABLE nba_times (ms float8);
SELECT set_config('bench.calls', :'calls', false), set_config('bench.people', :'people', false) \gset
DO $$
DECLARE
    t0 timestamptz;
    pid bigint;
BEGIN
    PERFORM setseed(0.3);
    FOR i IN 1..current_setting('bench.calls')::int LOOP
        pid := 1 + floor(random() * current_setting('bench.people')::int)::bigint;
        t0 := clock_timestamp();
        PERFORM count(*) FROM cdp.next_best_actions(pid, 3);
        INSERT INTO nba_times VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END $$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) || ' ' ||
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3)
FROM nba_times;
