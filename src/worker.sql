-- worker.sql: one round by hand, and what the worker and the queues look like.

CREATE FUNCTION cdp.tick() RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_tick';
COMMENT ON FUNCTION cdp.tick() IS
    'Runs one round of every worker task (inbox drain, partition upkeep) in this transaction; returns what each did';

CREATE FUNCTION cdp.worker_status(
    OUT pid integer, OUT started_at timestamptz, OUT heartbeat timestamptz,
    OUT rounds bigint, OUT drained bigint, OUT rejected bigint, OUT errors bigint,
    OUT last_error text, OUT resolved_messages bigint, OUT resolve_seconds double precision,
    OUT batch_size integer, OUT served_database text, OUT serves_this_database boolean)
    RETURNS record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cdp_worker_status';
COMMENT ON FUNCTION cdp.worker_status() IS
    'The worker''s pid, heartbeat and counters; in a database it does not serve (served_database is cdp.database) they are NULL';

-- Subsystems add their figures to cdp.stats as views named cdp.stats_<part>
-- with the same columns, in their own files.
CREATE FUNCTION cdp.stats_parts() RETURNS TABLE (section text, metric text, value numeric, at timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, cdp, pg_temp
    AS $$
DECLARE
    part regclass;
BEGIN
    FOR part IN
        SELECT c.oid FROM pg_class c
        WHERE c.relnamespace = 'cdp'::regnamespace AND c.relkind = 'v'
          AND c.relname LIKE 'stats\_%' ORDER BY c.relname
    LOOP
        RETURN QUERY EXECUTE format('SELECT section, metric, value, at FROM %s', part);
    END LOOP;
END
$$;
COMMENT ON FUNCTION cdp.stats_parts() IS
    'The figures of the views cdp.stats_<part> that subsystems define, for cdp.stats';

CREATE VIEW cdp.stats AS
    SELECT 'worker'::text AS section, 'serves_this_database'::text AS metric,
           w.serves_this_database::int::numeric AS value, NULL::timestamptz AS at
    FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'pid', w.pid, w.started_at
    FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'heartbeat_age_seconds',
           round(extract(epoch FROM clock_timestamp() - w.heartbeat)::numeric, 3), w.heartbeat
    FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'rounds', w.rounds, NULL FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'drained', w.drained, NULL FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'rejected', w.rejected, NULL FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'errors', w.errors, NULL FROM cdp.worker_status() w
    UNION ALL
    SELECT 'worker', 'batch_size', w.batch_size, NULL FROM cdp.worker_status() w

    UNION ALL
    SELECT 'identity', 'resolved_messages', w.resolved_messages, NULL FROM cdp.worker_status() w
    UNION ALL
    SELECT 'identity', 'resolve_seconds', round(w.resolve_seconds::numeric, 3), NULL
    FROM cdp.worker_status() w
    UNION ALL
    SELECT 'inbox', 'backlog', count(*), min(received_at) FROM cdp.inbox
    UNION ALL
    SELECT 'inbox', 'oldest_age_seconds',
           round(extract(epoch FROM clock_timestamp() - min(received_at))::numeric, 3),
           min(received_at)
    FROM cdp.inbox
    UNION ALL
    SELECT 'inbox', 'rejects', count(*), max(rejected_at) FROM cdp.inbox_rejects
    UNION ALL
    SELECT 'identity', 'issues', count(*), max(recorded_at) FROM cdp.identifier_issues
    UNION ALL
    SELECT 'identity', 'merges', count(*), max(merged_at) FROM cdp.merges
    UNION ALL
    SELECT 'profiles', 'changed_pending', count(*), min(changed_at) FROM cdp.profile_changes
    UNION ALL
    SELECT * FROM cdp.stats_parts();
COMMENT ON VIEW cdp.stats IS
    'Operational figures: whether the worker serves this database, its heartbeat and counters, inbox backlog and age, rejects, merges, pending profile changes';

REVOKE ALL ON FUNCTION cdp.tick(), cdp.worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.tick() TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.worker_status() TO cdp_admin, cdp_analyst;
REVOKE ALL ON FUNCTION cdp.stats_parts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.stats_parts() TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.stats TO cdp_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON cdp.stats TO cdp_admin;
-- cdp_connector drains the outbox (claim, ack, fail) once it exists; until
-- then it may only see the schema.

-- The worker serves one database: say so when it is another one, whose
-- inbox would otherwise wait for a drain that never comes.  (An empty
-- cdp.database means no worker, on purpose: cdp.tick() drives it all.  A
-- notice would not show: extension scripts run with client_min_messages
-- at warning.)
DO $$
DECLARE
    served text := coalesce(current_setting('cdp.database', true), '');
BEGIN
    IF served <> '' AND served <> current_database() THEN
        RAISE WARNING 'no pg_cdp worker serves database "%"', current_database()
            USING DETAIL = format('The worker serves database "%s" (cdp.database) only: nothing drains cdp.inbox here or creates the coming months'' partitions until cdp.tick() is called.', served),
                  HINT = format('Set cdp.database = %L in postgresql.conf and restart to serve this database instead, or call cdp.tick() here regularly (pg_cron can).',
                                current_database());
    END IF;
END
$$;
