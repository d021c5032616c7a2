-- pg_cdp 0.1.0 -> 0.2.0. What a fresh 0.2.0 install has that 0.1.0 lacked;
-- the upgrade test compares the two schemas.
\echo Use "ALTER EXTENSION pg_cdp UPDATE" to load this file. \quit

-- Month partitions get the parent's grants; NULL arguments are refused.
CREATE OR REPLACE FUNCTION cdp.create_event_partitions(start_month date, months integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    SET lock_timeout = '2s'
AS $$
DECLARE
    m       date;
    lo      timestamptz;
    hi      timestamptz;
    part    text;
    g       record;
    moved   bigint;
    created integer := 0;
BEGIN
    IF start_month IS NULL OR months IS NULL THEN
        RAISE EXCEPTION 'start_month and months must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'For example cdp.create_event_partitions(''2026-01-01'', 12).';
    END IF;
    IF months < 1 OR months > 240 THEN
        RAISE EXCEPTION 'months must be between 1 and 240'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The worker and a user may both call this: one at a time, so the
    -- second sees the partitions of the first instead of colliding.
    PERFORM pg_advisory_xact_lock(hashtext('cdp.create_event_partitions'));
    FOR i IN 0 .. months - 1 LOOP
        m := (date_trunc('month', start_month) + make_interval(months => i))::date;
        part := format('events_%s', to_char(m, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(format('cdp.%I', part)) IS NOT NULL;
        lo := m::timestamp AT TIME ZONE 'UTC';
        hi := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        moved := NULL;
        IF NOT EXISTS (SELECT 1 FROM cdp.events_default
                       WHERE occurred_at >= lo AND occurred_at < hi) THEN
            EXECUTE format('CREATE TABLE cdp.%I PARTITION OF cdp.events FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
        ELSE
            -- The month's rows sit in the default partition, which may hold
            -- none of a partition's range: they move to a table of the
            -- month's own, attached once it has them.  Writers wait
            -- meanwhile (cdp.events locked against writes), so that no row
            -- of the month lands in the default partition, and theirs then
            -- route to the new one; readers of the default partition wait
            -- too.  The CHECK matching the bound spares ATTACH a scan of the
            -- new table; ATTACH still scans the default partition.
            LOCK TABLE cdp.events IN EXCLUSIVE MODE;
            LOCK TABLE cdp.events_default IN ACCESS EXCLUSIVE MODE;
            EXECUTE format('CREATE TABLE cdp.%I (LIKE cdp.events INCLUDING DEFAULTS INCLUDING STORAGE '
                           'INCLUDING COMPRESSION, CONSTRAINT %I CHECK (occurred_at >= %L AND occurred_at < %L))',
                           part, part || '_bound', lo, hi);
            EXECUTE format('WITH gone AS (DELETE FROM cdp.events_default '
                           'WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) '
                           'INSERT INTO cdp.%I SELECT * FROM gone', part)
                USING lo, hi;
            GET DIAGNOSTICS moved = ROW_COUNT;
        END IF;
        EXECUTE format('CREATE INDEX %I ON cdp.%I (profile_id, occurred_at)', part || '_profile', part);
        EXECUTE format('CREATE INDEX %I ON cdp.%I USING brin (occurred_at)', part || '_occurred_at', part);
        IF moved IS NOT NULL THEN
            EXECUTE format('ALTER TABLE cdp.events ATTACH PARTITION cdp.%I FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
            EXECUTE format('ALTER TABLE cdp.%I DROP CONSTRAINT %I', part, part || '_bound');
            RAISE NOTICE 'moved % events of % from cdp.events_default to its new partition cdp.%',
                moved, to_char(m, 'YYYY-MM'), part;
        END IF;
        -- A partition starts with no grants: give it the parent's, so a role
        -- that reads cdp.events may read its months directly too.
        FOR g IN SELECT a.privilege_type, a.grantee
                 FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = 'cdp.events'::regclass AND a.grantee <> c.relowner LOOP
            EXECUTE format('GRANT %s ON cdp.%I TO %s', g.privilege_type, part,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
        END LOOP;
        created := created + 1;
    END LOOP;
    IF created = 0 THEN
        RAISE NOTICE 'no partition created: every month from % to % has its partition already',
            to_char(start_month, 'YYYY-MM'),
            to_char(date_trunc('month', start_month) + make_interval(months => months - 1), 'YYYY-MM');
    END IF;
    RETURN created;
END
$$;
-- Partitions made by 0.1.0 had no grants.
DO $$
DECLARE
    p regclass;
    g record;
BEGIN
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits
             WHERE inhparent = 'cdp.events'::regclass AND inhrelid <> 'cdp.events_default'::regclass LOOP
        FOR g IN SELECT a.privilege_type, a.grantee
                 FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = 'cdp.events'::regclass AND a.grantee <> c.relowner LOOP
            EXECUTE format('GRANT %s ON %s TO %s', g.privilege_type, p,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(g.grantee)) END);
        END LOOP;
    END LOOP;
END
$$;

-- Who may write in a source's name, and who wrote each inbox row. Rows
-- already waiting were loaded under 0.1.0's rules: they count as the
-- upgrading role's.
ALTER TABLE cdp.sources ADD COLUMN writer regrole;
COMMENT ON COLUMN cdp.sources.writer IS
    'The role whose members may write messages in this source''s name (the collector''s role, a loader''s); NULL: cdp_admin only';
ALTER TABLE cdp.inbox ADD COLUMN loaded_by name DEFAULT current_user;
COMMENT ON COLUMN cdp.inbox.loaded_by IS
    'The role that wrote the row (ingest roles cannot set it): a row naming a source is accepted only from that source''s writer';
REVOKE INSERT ON cdp.inbox FROM cdp_ingest;
GRANT INSERT (message, received_at, source, reject_reason) ON cdp.inbox TO cdp_ingest;

DROP FUNCTION cdp.create_source(text, text, text);
CREATE FUNCTION cdp.create_source(name text, write_key text DEFAULT NULL,
                                  description text DEFAULT NULL, writer regrole DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
DECLARE
    key text := coalesce(write_key,
                         replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
BEGIN
    IF create_source.name IS NULL THEN
        RAISE EXCEPTION 'source name must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the source, for example ''web'' or ''store_tills''.';
    END IF;
    -- what every SDK can send: HTTP Basic's user name ends at a colon
    IF length(key) < 16 THEN
        RAISE EXCEPTION 'write key is too short'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A write key has at least 16 characters.',
                  HINT = 'Omit write_key to get a random one.';
    ELSIF length(key) > 1024 THEN
        RAISE EXCEPTION 'write key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A write key has at most 1024 characters.',
                  HINT = 'Omit write_key to get a random one.';
    ELSIF strpos(key, ':') > 0 THEN
        RAISE EXCEPTION 'write key contains a colon'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'SDKs send the write key as an HTTP Basic user name, which ends at a colon.',
                  HINT = 'Omit write_key to get a random one.';
    END IF;
    INSERT INTO cdp.sources (name, write_key_sha256, description, writer)
    VALUES (create_source.name, encode(sha256(convert_to(key, 'UTF8')), 'hex'),
            create_source.description, create_source.writer);
    RETURN key;
END
$$;
COMMENT ON FUNCTION cdp.create_source(text, text, text, regrole) IS
    'Registers a source and returns its write key (random unless given; only its SHA-256 is kept); writer is the role that may write in its name';
REVOKE ALL ON FUNCTION cdp.create_source(text, text, text, regrole) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_source(text, text, text, regrole) TO cdp_admin;

DO $$
BEGIN
    IF EXISTS (SELECT FROM cdp.sources WHERE writer IS NULL) THEN
        RAISE WARNING 'sources without a writer role accept messages from cdp_admin only'
            USING DETAIL = 'pg_cdp 0.2.0 lets only a source''s writer role write in its name.',
                  HINT = 'Give each source the collector''s role: UPDATE cdp.sources SET writer = ''collector''.';
    END IF;
END
$$;

-- Moving the clock backdates what is recorded: superusers and cdp_admin only.
GRANT SET ON PARAMETER cdp.fake_now TO cdp_admin;

-- The registry of per-profile tables, for inspection and the tests.
CREATE FUNCTION cdp.profile_tables(
    OUT name text, OUT relation text, OUT visit_order integer,
    OUT on_merge text, OUT on_unmerge text, OUT on_forget text,
    OUT recompute_after_merge boolean, OUT recompute_after_unmerge boolean)
    RETURNS SETOF record
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'cdp_profile_tables';
COMMENT ON FUNCTION cdp.profile_tables() IS
    'The tables that hold rows about a profile, in the order merges, unmerges and erasures visit them, and what each does with their rows';
REVOKE ALL ON FUNCTION cdp.profile_tables() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.profile_tables() TO cdp_admin, cdp_analyst;

-- Test hooks of the drain, for the isolation specs: superusers only.
CREATE FUNCTION cdp.debug_drain_resolve(slot integer DEFAULT 0) RETURNS integer
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'cdp_debug_drain_resolve';
COMMENT ON FUNCTION cdp.debug_drain_resolve(integer) IS
    'Test hook: resolves one inbox batch as the given drainer and keeps it for cdp.debug_drain_write(); call it in a transaction of its own';
CREATE FUNCTION cdp.debug_drain_write() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cdp_debug_drain_write';
COMMENT ON FUNCTION cdp.debug_drain_write() IS
    'Test hook: writes the batch cdp.debug_drain_resolve() resolved, in this transaction';
REVOKE ALL ON FUNCTION cdp.debug_drain_resolve(integer), cdp.debug_drain_write() FROM PUBLIC;

-- Emails and the lower normalizer now fold case over all of Unicode: the way
-- back for identities 0.1.0 stored unfolded. Not run here: on a large
-- database it holds the global ingest lock while it scans every identity,
-- and its merges are worth a look first. Run it once the new library is
-- loaded, while ingestion is quiet.
CREATE FUNCTION cdp.renormalize_identities() RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_renormalize_identities';
COMMENT ON FUNCTION cdp.renormalize_identities() IS
    'Normalizes every stored identity again: renames values whose normal form changed and merges the profiles that now share one (cause ''renormalize'', limits permitting); returns counts';
REVOKE ALL ON FUNCTION cdp.renormalize_identities() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.renormalize_identities() TO cdp_admin;
DO $$
BEGIN
    IF EXISTS (SELECT FROM cdp.identities WHERE octet_length(value) <> length(value)) THEN
        RAISE WARNING 'some stored identities are not plain ASCII'
            USING DETAIL = 'pg_cdp 0.2.0 folds case over all of Unicode; values stored by 0.1.0 may be spelled differently.',
                  HINT = 'Run SELECT cdp.renormalize_identities() to bring them to the new spelling and merge what now collides.';
    END IF;
END
$$;

-- A month whose rows sit in the default partition gets its partition: its
-- rows move there.  Backfills create their months first.
COMMENT ON FUNCTION cdp.create_event_partitions(date, integer) IS
    'Creates the monthly partitions of cdp.events (UTC months) that do not exist yet, with their indexes, moving a month''s rows out of the default partition; returns how many';

-- Before a backfill: every month the events to load fall in gets its
-- partition, so that none of them lands in the default partition.  The
-- worker keeps the coming months with it.
CREATE FUNCTION cdp.ensure_event_partitions(earliest timestamptz, latest timestamptz)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
DECLARE
    first_month date;
    last_month  date;
    m           date;
    created     integer := 0;
BEGIN
    IF earliest IS NULL OR latest IS NULL THEN
        RAISE EXCEPTION 'earliest and latest must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the first and last occurred_at of the events to load, for example cdp.ensure_event_partitions(''2019-03-01'', ''2026-05-31'').';
    END IF;
    IF NOT isfinite(earliest) OR NOT isfinite(latest) THEN
        RAISE EXCEPTION 'earliest and latest must be finite timestamps'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF latest < earliest THEN
        RAISE EXCEPTION 'latest must not be before earliest'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('earliest is %s, latest %s.', earliest, latest);
    END IF;
    first_month := date_trunc('month', earliest AT TIME ZONE 'UTC')::date;
    last_month := date_trunc('month', latest AT TIME ZONE 'UTC')::date;
    IF (extract(year FROM last_month) - extract(year FROM first_month)) * 12
       + extract(month FROM last_month) - extract(month FROM first_month) >= 1200 THEN
        RAISE EXCEPTION 'the range from % to % spans more than 1200 months',
            to_char(first_month, 'YYYY-MM'), to_char(last_month, 'YYYY-MM')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Events of months without a partition land in the default partition; give the range the events to load really span.';
    END IF;
    m := first_month;
    WHILE m <= last_month LOOP
        IF to_regclass(format('cdp.%I', 'events_' || to_char(m, 'YYYY_MM'))) IS NULL THEN
            created := created + cdp.create_event_partitions(m, 1);
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION cdp.ensure_event_partitions(timestamptz, timestamptz) IS
    'Gives every UTC month from earliest to latest its partition of cdp.events (cdp.create_event_partitions for each missing one); returns how many it created';
REVOKE ALL ON FUNCTION cdp.ensure_event_partitions(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.ensure_event_partitions(timestamptz, timestamptz) TO cdp_admin;

-- The status says whether the worker serves this database (new columns of
-- cdp.worker_status(), on which cdp.stats depends).
DROP VIEW cdp.stats;
DROP FUNCTION cdp.worker_status();
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
REVOKE ALL ON FUNCTION cdp.worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.worker_status() TO cdp_admin, cdp_analyst;
REVOKE ALL ON FUNCTION cdp.stats_parts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.stats_parts() TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.stats TO cdp_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON cdp.stats TO cdp_admin;

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

-- traits (src/traits.sql)

-- One row per trait.  trait_id is also the trait's slot in the arrays of
-- cdp.profile_traits; a dropped trait's slot is never reused.
CREATE TABLE cdp.trait_definitions (
    trait_id        integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('declared', 'computed')),
    type            regtype NOT NULL,
    aggregate       text CHECK (aggregate IN ('count', 'sum', 'avg', 'min', 'max', 'first',
                                              'last', 'count_distinct', 'most_frequent')),
    event           text,
    property        text,
    "window"        text,
    window_interval interval,
    calendar        text CHECK (calendar IN ('day', 'week', 'month')),
    "where"         text,
    owner           regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT cdp.now(),
    backfill_next   bigint,
    backfill_horizon xid8,
    backfill_done   bigint NOT NULL DEFAULT 0,
    backfilled_at   timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    CHECK ((kind = 'computed') = (aggregate IS NOT NULL))
);
COMMENT ON TABLE cdp.trait_definitions IS
    'Declared traits (a typed column for an identify trait) and computed traits (an aggregate over events, maintained as events arrive); backfill_next is the next profile the backfill computes, NULL once done';

-- Every backend reloads the definitions when they change, however they do.
CREATE FUNCTION cdp.trait_definitions_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_trait_definitions_changed';
CREATE TRIGGER trait_definitions_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, kind, type, aggregate, event, property,
        "window", window_interval, calendar, "where", owner
    ON cdp.trait_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.trait_definitions_changed();

-- Computed traits' state, one row per profile that has any: each array
-- holds, at a trait's slot, what that trait keeps there (see traits.c).
CREATE TABLE cdp.profile_traits (
    profile_id bigint PRIMARY KEY,
    counts     bigint[],
    numbers    numeric[],
    times      timestamptz[],
    texts      text[],
    tallies    jsonb,
    decay_at   timestamptz
) WITH (fillfactor = 80);
CREATE INDEX profile_traits_decay_at ON cdp.profile_traits (decay_at) WHERE decay_at IS NOT NULL;
COMMENT ON TABLE cdp.profile_traits IS
    'State of the computed traits per profile (read them through cdp.customers); decay_at is when a windowed trait of the profile next changes with no event';

-- Values a computed trait skipped: a sum over a property that is not a number.
CREATE TABLE cdp.trait_issues (
    profile_id  bigint NOT NULL,
    trait       text NOT NULL,
    value       jsonb,
    reason      text NOT NULL,
    occurred_at timestamptz,
    noted_at    timestamptz NOT NULL DEFAULT cdp.now()
);
CREATE INDEX trait_issues_trait ON cdp.trait_issues (trait);
COMMENT ON TABLE cdp.trait_issues IS
    'Event values a computed trait skipped, with the reason';

CREATE FUNCTION cdp.trait_value(value jsonb, type anyelement) RETURNS anyelement
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_trait_value';
COMMENT ON FUNCTION cdp.trait_value(jsonb, anyelement) IS
    'A jsonb trait value as the type of the second argument, NULL when it does not cast (never an error)';

CREATE FUNCTION cdp.trait_casts(value jsonb, type regtype) RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_trait_casts';
COMMENT ON FUNCTION cdp.trait_casts(jsonb, regtype) IS
    'Whether a jsonb trait value casts to the type (cdp.trait_value gives it)';

CREATE FUNCTION cdp.trait_number(value jsonb) RETURNS numeric
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_trait_number';
COMMENT ON FUNCTION cdp.trait_number(jsonb) IS
    'A JSON number as numeric; NULL for anything else';

-- Tallies count values for count_distinct and most_frequent:
-- {"value": [count, last seen in microseconds since 1970], ...}; cdp.tally_merge adds
-- two of them, also a level deeper ({"slot": tally, ...}).
CREATE FUNCTION cdp.tally_add(state jsonb, value text, at timestamptz) RETURNS jsonb
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_tally_add';
CREATE AGGREGATE cdp.tally_agg(text, timestamptz) (
    SFUNC = cdp.tally_add, STYPE = jsonb
);
CREATE FUNCTION cdp.tally_merge(a jsonb, b jsonb) RETURNS jsonb
    LANGUAGE c IMMUTABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_tally_merge';
CREATE FUNCTION cdp.tally_top(tally jsonb) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_tally_top';
COMMENT ON FUNCTION cdp.tally_top(jsonb) IS
    'The most frequent value of a tally: the highest count, then the latest seen, then the smallest';
CREATE FUNCTION cdp.tally_count(tally jsonb) RETURNS bigint
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_tally_count';

-- The business time zone's calendar: where today, this week and this month
-- begin and end (weeks begin on Monday).
CREATE FUNCTION cdp.local_time(at timestamptz) RETURNS timestamp
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN at AT TIME ZONE current_setting('cdp.timezone');
COMMENT ON FUNCTION cdp.local_time(timestamptz) IS
    'The time in the business time zone (cdp.timezone): extract(hour FROM cdp.local_time(occurred_at)) is the local hour';
CREATE FUNCTION cdp.period_start(at timestamptz, unit text) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN date_trunc(unit, at AT TIME ZONE current_setting('cdp.timezone'))
           AT TIME ZONE current_setting('cdp.timezone');
CREATE FUNCTION cdp.period_end(at timestamptz, unit text) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (date_trunc(unit, at AT TIME ZONE current_setting('cdp.timezone'))
            + ('1 ' || unit)::interval) AT TIME ZONE current_setting('cdp.timezone');

CREATE FUNCTION cdp.declare_trait(name text, type regtype) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_declare_trait';
COMMENT ON FUNCTION cdp.declare_trait(text, regtype) IS
    'Gives an identify trait a typed column in cdp.customers; values that do not cast stay in traits jsonb and show in cdp.trait_type_issues';

CREATE FUNCTION cdp.define_trait(name text, aggregate text, event text,
                                 property text DEFAULT NULL, "window" text DEFAULT NULL,
                                 "where" text DEFAULT NULL) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_define_trait';
COMMENT ON FUNCTION cdp.define_trait(text, text, text, text, text, text) IS
    'A computed trait: an aggregate over the events named (NULL: any), kept exact as events arrive, over all time, a sliding window (''180 days'') or a calendar one (''today'', ''this week'', ''this month''); backfilled from history by the worker';

CREATE FUNCTION cdp.drop_trait(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_drop_trait';
COMMENT ON FUNCTION cdp.drop_trait(text) IS
    'Drops a declared or computed trait and its column; refused while a segment uses it';

CREATE FUNCTION cdp.rebuild_customers() RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_rebuild_customers';
COMMENT ON FUNCTION cdp.rebuild_customers() IS
    'Generates cdp.customers again from cdp.trait_definitions (the worker does it after a restore)';

CREATE VIEW cdp.customers AS
    SELECT p.profile_id, p.created_at
    FROM cdp.profiles p;
COMMENT ON VIEW cdp.customers IS
    'One row per living profile, with one typed column per declared and computed trait: what segment predicates and BI tools read';

CREATE VIEW cdp.trait_type_issues AS
    SELECT d.name AS trait, d.type, p.profile_id, p.traits -> d.name AS value,
           'does not cast to ' || d.type::text AS reason
    FROM cdp.trait_definitions d
    JOIN cdp.profiles p ON p.traits ? d.name
    WHERE d.kind = 'declared' AND jsonb_typeof(p.traits -> d.name) <> 'null'
      AND NOT cdp.trait_casts(p.traits -> d.name, d.type)
    UNION ALL
    SELECT i.trait, d.type, i.profile_id, i.value, i.reason
    FROM cdp.trait_issues i LEFT JOIN cdp.trait_definitions d ON d.name = i.trait;
COMMENT ON VIEW cdp.trait_type_issues IS
    'Trait values that do not fit their type: identify traits that do not cast to their declared type, and event values a computed trait skipped';

CREATE VIEW cdp.trait_status AS
    SELECT d.name, d.kind, d.type, d.aggregate, d.event, d.property, d."window", d."where",
           d.owner,
           CASE WHEN d.kind = 'declared' THEN 'ready'
                WHEN d.last_error IS NOT NULL THEN 'failing'
                WHEN d.backfill_next IS NOT NULL THEN 'backfilling'
                ELSE 'ready' END AS state,
           d.backfill_done AS backfilled_profiles,
           d.backfilled_at,
           (SELECT count(*) FROM cdp.trait_type_issues i WHERE i.trait = d.name) AS issues,
           d.last_error, d.last_error_at
    FROM cdp.trait_definitions d;
COMMENT ON VIEW cdp.trait_status IS
    'Per trait: its definition, whether it is ready, backfilling or failing, how many profiles the backfill did, its value issues and last error';

CREATE VIEW cdp.stats_traits AS
    SELECT 'traits'::text AS section, 'backfilling'::text AS metric,
           count(*)::numeric AS value, min(created_at) AS at
    FROM cdp.trait_definitions WHERE kind = 'computed' AND backfill_next IS NOT NULL
    UNION ALL
    SELECT 'traits', 'backfilled_profiles', coalesce(sum(backfill_done), 0), max(backfilled_at)
    FROM cdp.trait_definitions WHERE kind = 'computed' AND backfill_next IS NOT NULL
    UNION ALL
    SELECT 'traits', 'failing', count(*), max(last_error_at)
    FROM cdp.trait_definitions WHERE last_error IS NOT NULL
    UNION ALL
    SELECT 'traits', 'decay_due', count(*), min(decay_at)
    FROM cdp.profile_traits WHERE decay_at <= cdp.now();

SELECT pg_catalog.pg_extension_config_dump('cdp.trait_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.trait_definitions_trait_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.profile_traits', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.trait_issues', '');

REVOKE ALL ON FUNCTION cdp.trait_definitions_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION cdp.trait_value(jsonb, anyelement), cdp.trait_casts(jsonb, regtype),
    cdp.trait_number(jsonb), cdp.tally_add(jsonb, text, timestamptz), cdp.tally_agg(text, timestamptz),
    cdp.tally_merge(jsonb, jsonb), cdp.tally_top(jsonb), cdp.tally_count(jsonb),
    cdp.local_time(timestamptz), cdp.period_start(timestamptz, text),
    cdp.period_end(timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.trait_value(jsonb, anyelement), cdp.trait_casts(jsonb, regtype),
    cdp.trait_number(jsonb), cdp.tally_add(jsonb, text, timestamptz), cdp.tally_agg(text, timestamptz),
    cdp.tally_merge(jsonb, jsonb), cdp.tally_top(jsonb), cdp.tally_count(jsonb),
    cdp.local_time(timestamptz), cdp.period_start(timestamptz, text),
    cdp.period_end(timestamptz, text) TO cdp_admin, cdp_analyst;
REVOKE ALL ON FUNCTION cdp.declare_trait(text, regtype),
    cdp.define_trait(text, text, text, text, text, text), cdp.drop_trait(text),
    cdp.rebuild_customers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.declare_trait(text, regtype),
    cdp.define_trait(text, text, text, text, text, text), cdp.drop_trait(text),
    cdp.rebuild_customers() TO cdp_admin;
GRANT SELECT ON cdp.customers, cdp.trait_definitions, cdp.profile_traits, cdp.trait_issues,
    cdp.trait_type_issues, cdp.trait_status, cdp.stats_traits TO cdp_analyst, cdp_admin;
-- Computed traits run with their owner's rights (a cdp_admin member), who
-- keeps their state.
GRANT INSERT, UPDATE, DELETE ON cdp.profile_traits, cdp.trait_issues TO cdp_admin;

-- segments (src/segment.sql)

-- One row per segment.  columns are the cdp.customers columns the predicate
-- reads (cdp.drop_trait refuses to drop one of them), depends_on the
-- segments it names with cdp.in_segment; members is kept with every change.
CREATE TABLE cdp.segments (
    segment_id        integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    predicate         text NOT NULL,
    mode              text NOT NULL DEFAULT 'realtime' CHECK (mode IN ('realtime', 'scheduled')),
    owner             regrole NOT NULL,
    columns           text[] NOT NULL DEFAULT '{}',
    depends_on        text[] NOT NULL DEFAULT '{}',
    reads_time        boolean NOT NULL DEFAULT false,
    refresh_every     interval,
    members           bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT cdp.now(),
    last_evaluated_at timestamptz,
    last_refreshed_at timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    CHECK (refresh_every IS NULL OR refresh_every > interval '0'),
    CHECK (NOT reads_time OR refresh_every IS NOT NULL)
);
COMMENT ON TABLE cdp.segments IS
    'Segments: a predicate over cdp.customers, evaluated as events arrive (realtime) or by cdp.refresh_segment (scheduled), with its owner, the columns and segments it reads, and its last evaluation and error';

-- Every backend reloads the definitions when they change.
CREATE FUNCTION cdp.segments_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_segments_changed_trigger';
CREATE TRIGGER segments_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, predicate, mode, owner, refresh_every
    ON cdp.segments
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.segments_changed();

CREATE TABLE cdp.segment_members (
    segment_id integer NOT NULL,
    profile_id bigint NOT NULL,
    entered_at timestamptz NOT NULL,
    PRIMARY KEY (segment_id, profile_id)
);
CREATE INDEX segment_members_profile_id ON cdp.segment_members (profile_id);
COMMENT ON TABLE cdp.segment_members IS
    'The members of each segment, since when';

CREATE TABLE cdp.segment_changes (
    change_id  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    segment_id integer NOT NULL,
    profile_id bigint NOT NULL,
    change     text NOT NULL CHECK (change IN ('entered', 'exited')),
    at         timestamptz NOT NULL,
    cause      text NOT NULL CHECK (cause IN ('event', 'merge', 'unmerge', 'decay', 'refresh',
                                              'erasure'))
);
CREATE INDEX segment_changes_segment ON cdp.segment_changes (segment_id, change_id);
CREATE INDEX segment_changes_profile_id ON cdp.segment_changes (profile_id);
COMMENT ON TABLE cdp.segment_changes IS
    'Every entry into and exit from a segment, once, with its cause; each is also a Segment Entered / Segment Exited event on the profile';

-- Profiles a segment could not evaluate (its predicate raised for them):
-- evaluated again each round until it works.
CREATE TABLE cdp.segment_pending (
    segment_id integer NOT NULL,
    profile_id bigint NOT NULL,
    since      timestamptz NOT NULL,
    PRIMARY KEY (segment_id, profile_id)
);
CREATE INDEX segment_pending_profile_id ON cdp.segment_pending (profile_id);
COMMENT ON TABLE cdp.segment_pending IS
    'Profiles waiting for one segment whose predicate failed for them';

-- The daily size history, in the business time zone's days.
CREATE TABLE cdp.segment_sizes (
    day        date NOT NULL,
    segment_id integer NOT NULL,
    members    bigint NOT NULL,
    entered    bigint NOT NULL DEFAULT 0,
    exited     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, segment_id)
);
COMMENT ON TABLE cdp.segment_sizes IS
    'Per segment and day: its size at the day''s last change, and how many entered and exited that day';

CREATE FUNCTION cdp.create_segment(name text, predicate text, mode text DEFAULT 'realtime',
                                   refresh_every interval DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_create_segment';
COMMENT ON FUNCTION cdp.create_segment(text, text, text, interval) IS
    'A segment: a boolean predicate over cdp.customers (which may use cdp.in_segment(profile_id, ''other'')), run with its creator''s rights; evaluated at once, then as profiles change (realtime) or by cdp.refresh_segment (scheduled); a predicate that reads the time needs refresh_every. Returns the number of members';

CREATE FUNCTION cdp.refresh_segment(name text) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_refresh_segment';
COMMENT ON FUNCTION cdp.refresh_segment(text) IS
    'Evaluates a segment over every profile and writes only the real entries and exits (cause refresh); returns {"entered": n, "exited": n, "members": n}';

CREATE FUNCTION cdp.drop_segment(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_drop_segment';
COMMENT ON FUNCTION cdp.drop_segment(text) IS
    'Drops a segment with its members and pending profiles (no exit events; its history stays in cdp.segment_changes and cdp.segment_sizes); refused while another segment uses it';

CREATE FUNCTION cdp.in_segment(profile_id bigint, name text) RETURNS boolean
    LANGUAGE c STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_in_segment';
COMMENT ON FUNCTION cdp.in_segment(bigint, text) IS
    'Whether the profile is in the segment now: evaluated at once (as the segment''s owner) when the profile changed since the segment last looked, as in the writer''s own transaction right after its event';

CREATE FUNCTION cdp.evaluate_segments() RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_evaluate_segments';
COMMENT ON FUNCTION cdp.evaluate_segments() IS
    'One round of the worker''s segment task in this transaction, without the other tasks: a batch of changed profiles, pending ones, a refresh that is due; returns how many profiles it evaluated';

CREATE VIEW cdp.segment_status AS
    SELECT s.name, s.mode, s.owner, s.predicate, s.refresh_every,
           s.members AS size,
           s.last_evaluated_at, s.last_refreshed_at,
           CASE WHEN s.mode = 'realtime'
                THEN (SELECT count(*) FROM cdp.profile_changes) ELSE 0 END
           + (SELECT count(*) FROM cdp.segment_pending p WHERE p.segment_id = s.segment_id)
               AS pending_profiles,
           cdp.now() - least(CASE WHEN s.mode = 'realtime'
                                  THEN (SELECT min(changed_at) FROM cdp.profile_changes) END,
                             (SELECT min(since) FROM cdp.segment_pending p
                              WHERE p.segment_id = s.segment_id)) AS oldest_pending_age,
           s.last_error, s.last_error_at
    FROM cdp.segments s;
COMMENT ON VIEW cdp.segment_status IS
    'Per segment: its size, when it was last evaluated and fully refreshed, how many profiles wait for it and since when, and its last error';

CREATE VIEW cdp.stats_segments AS
    SELECT 'segments'::text AS section, 'segments'::text AS metric,
           count(*)::numeric AS value, max(created_at) AS at
    FROM cdp.segments
    UNION ALL
    SELECT 'segments', 'members', coalesce(sum(members), 0), max(last_evaluated_at)
    FROM cdp.segments
    UNION ALL
    SELECT 'segments', 'failing', count(*), max(last_error_at)
    FROM cdp.segments WHERE last_error IS NOT NULL
    UNION ALL
    SELECT 'segments', 'pending_profiles', count(*), min(since)
    FROM cdp.segment_pending
    UNION ALL
    SELECT 'segments', 'refresh_due', count(*), min(last_refreshed_at + refresh_every)
    FROM cdp.segments WHERE last_refreshed_at + refresh_every <= cdp.now();

SELECT pg_catalog.pg_extension_config_dump('cdp.segments', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.segments_segment_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.segment_members', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.segment_changes', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.segment_changes_change_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.segment_pending', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.segment_sizes', '');

REVOKE ALL ON FUNCTION cdp.segments_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION cdp.create_segment(text, text, text, interval),
    cdp.refresh_segment(text), cdp.drop_segment(text), cdp.in_segment(bigint, text),
    cdp.evaluate_segments() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_segment(text, text, text, interval),
    cdp.refresh_segment(text), cdp.drop_segment(text), cdp.evaluate_segments() TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.in_segment(bigint, text) TO cdp_admin, cdp_ingest, cdp_analyst;
GRANT SELECT ON cdp.segments, cdp.segment_members, cdp.segment_changes, cdp.segment_pending,
    cdp.segment_sizes, cdp.segment_status, cdp.stats_segments TO cdp_analyst, cdp_admin;
-- A segment's statements run with its owner's rights (a cdp_admin member),
-- who keeps its members and history.
GRANT INSERT, DELETE ON cdp.segment_members, cdp.segment_changes TO cdp_admin;

-- outbox (src/outbox.sql)

-- A delivery channel.  address_type is the identifier type whose value is
-- the address (email, phone, device_id); webhook, task and print channels
-- address target instead.  purpose is the consent the channel needs (NULL
-- is made its name).  Caps count messages sent per recipient calendar day
-- and week in the recipient's time zone; rate_per_second is enforced by
-- cdp.claim across all claimers.
CREATE TABLE cdp.channels (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    kind              text NOT NULL
                      CHECK (kind IN ('email', 'sms', 'push', 'webhook', 'task', 'print')),
    address_type      text CHECK (address_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    target            text,
    quiet_start       time,
    quiet_end         time,
    cap_per_day       integer CHECK (cap_per_day > 0),
    cap_per_week      integer CHECK (cap_per_week > 0),
    rate_per_second   numeric CHECK (rate_per_second > 0),
    max_attempts      integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    backoff_base      interval NOT NULL DEFAULT '30 seconds' CHECK (backoff_base > '0'),
    backoff_max       interval NOT NULL DEFAULT '1 hour' CHECK (backoff_max > '0'),
    max_payload_bytes integer NOT NULL DEFAULT 65536 CHECK (max_payload_bytes > 0),
    purpose           text NOT NULL,
    requires_consent  boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT cdp.now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CHECK (quiet_start <> quiet_end),
    CHECK (address_type IS NOT NULL OR kind IN ('webhook', 'task', 'print'))
);
COMMENT ON TABLE cdp.channels IS
    'Delivery channels: kind, the identifier type they address (or a target), quiet hours, caps per recipient day and week, rate limit, retry policy, payload limit, the consent purpose they need';

CREATE FUNCTION cdp.channels_defaults() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.purpose := coalesce(NEW.purpose, NEW.name);
    RETURN NEW;
END
$$;
CREATE TRIGGER channels_defaults BEFORE INSERT OR UPDATE ON cdp.channels
    FOR EACH ROW EXECUTE FUNCTION cdp.channels_defaults();

-- Message content.  Placeholders: {{traits.x}}, {{payload.a.b}},
-- {{profile_id}}, {{address}}, {{channel}}, {{outbox_id}}; a default after
-- a bar: {{traits.first_name | default: "there"}}.  Rendered at claim.
CREATE TABLE cdp.templates (
    name       text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    channel    text NOT NULL REFERENCES cdp.channels ON UPDATE CASCADE,
    subject    text,
    body       text NOT NULL,
    body_html  text,
    created_at timestamptz NOT NULL DEFAULT cdp.now()
);
COMMENT ON TABLE cdp.templates IS
    'Message templates of a channel: subject, plain body, HTML body, with {{traits.x}} and {{payload.x}} placeholders (defaults: {{traits.x | default: "y"}}) rendered at claim';

CREATE FUNCTION cdp.render(template text, traits jsonb, payload jsonb DEFAULT '{}',
                           html boolean DEFAULT false) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_render';
COMMENT ON FUNCTION cdp.render(text, jsonb, jsonb, boolean) IS
    'A template text rendered with traits and payload (HTML-escaping what it inserts when html); errors on a placeholder with no value and no default';

CREATE FUNCTION cdp.templates_check() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_templates_check';
CREATE TRIGGER templates_check BEFORE INSERT OR UPDATE ON cdp.templates
    FOR EACH ROW EXECUTE FUNCTION cdp.templates_check();

-- Every backend caches channels and templates: any change makes them all
-- reload.
CREATE FUNCTION cdp.outbox_config_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_outbox_config_changed';
CREATE TRIGGER channels_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.channels
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.outbox_config_changed();
CREATE TRIGGER templates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.templates
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.outbox_config_changed();

-- The statuses.  A domain rather than a CHECK of the table: the executor
-- prepares a table's CHECK expressions at the start of every statement
-- that writes the table, a domain's once per backend, and enqueue is one
-- statement per message.
CREATE DOMAIN cdp.outbox_status AS text
    CHECK (VALUE IN ('pending', 'leased', 'retry', 'deferred', 'delivered', 'dead',
                     'cancelled', 'suppressed'));

-- The outbox.  A message moves pending -> leased -> delivered, or
-- leased -> retry -> leased ... -> dead; policy moves it to suppressed
-- (at enqueue), cancelled or deferred (at claim), always with a reason.
-- A claim updates only columns no index covers, and the table leaves room
-- on its pages (fillfactor), so leasing a message is a HOT update; the
-- partial indexes of unfinished messages do not read status (an index
-- over a changing column forbids HOT), they read finished_at, which is
-- set once, when the message leaves them.  Messages are enqueued, and so
-- claimed, in order: one claim leases every message of a page in one
-- transaction, before any old version can be pruned, so a page keeps
-- room for a second version of each of its rows (fillfactor 40); a
-- non-HOT claim would add entries to every index, and to the partial
-- ones entries that claims must step over until vacuum removes them,
-- which an old snapshot delays.
CREATE TABLE cdp.outbox (
    outbox_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id   bigint NOT NULL,
    channel      text NOT NULL,
    template     text NOT NULL,
    payload      jsonb NOT NULL,
    dedupe_key   text,
    not_before   timestamptz NOT NULL,
    status       cdp.outbox_status NOT NULL,
    reason       text,
    attempts     integer NOT NULL DEFAULT 0,
    lease_until  timestamptz,
    leased_by    text,
    address      text,
    last_error   text,
    errors       jsonb NOT NULL DEFAULT '[]',
    enqueued_at  timestamptz NOT NULL DEFAULT cdp.now(),
    sent_at      timestamptz,
    delivered_at timestamptz,
    finished_at  timestamptz,
    status_at    timestamptz NOT NULL DEFAULT cdp.now()
) WITH (fillfactor = 40);
-- what cdp.claim scans: the unfinished messages of a channel by due time,
-- and of a person on a channel in order
CREATE INDEX outbox_due ON cdp.outbox (channel, not_before, outbox_id) WHERE finished_at IS NULL;
CREATE INDEX outbox_open ON cdp.outbox (profile_id, channel, outbox_id) WHERE finished_at IS NULL;
-- a person's history: caps, merges, erasure
CREATE INDEX outbox_profile ON cdp.outbox (profile_id);
CREATE UNIQUE INDEX outbox_dedupe_key ON cdp.outbox (dedupe_key) WHERE dedupe_key IS NOT NULL;
COMMENT ON TABLE cdp.outbox IS
    'Messages to people: status (pending, leased, retry, deferred, delivered, dead, cancelled, suppressed) and the reason of every suppressed, deferred or cancelled one';

-- Token buckets of the rate-limited channels.
CREATE TABLE cdp.channel_buckets (
    channel     text PRIMARY KEY,
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL
);
COMMENT ON TABLE cdp.channel_buckets IS
    'Rate limit state of each rate-limited channel: the tokens left and when they were counted';

CREATE FUNCTION cdp.enqueue(profile_id bigint, channel text, template text, payload jsonb,
                            not_before timestamptz DEFAULT NULL, dedupe_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_enqueue';
COMMENT ON FUNCTION cdp.enqueue(bigint, text, text, jsonb, timestamptz, text) IS
    'Writes a message to the outbox in this transaction (policy checked: no consent or a suppressed address makes it suppressed, with the reason); a dedupe key seen before returns the first id';

CREATE FUNCTION cdp.claim(channel text, max integer, lease interval)
    RETURNS TABLE (outbox_id bigint, dedupe_key text, channel text, kind text, profile_id bigint,
                   address text, template text, subject text, body text, body_html text,
                   payload jsonb, attempt integer, lease_until timestamptz)
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_claim';
COMMENT ON FUNCTION cdp.claim(text, integer, interval) IS
    'Leases up to max due messages of the channel to this session, rendered now, in order per person, under the rate limit and the contact policy';

CREATE FUNCTION cdp.ack(ids bigint[]) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_ack';
COMMENT ON FUNCTION cdp.ack(bigint[]) IS
    'Marks messages this session leased as delivered; any id it does not hold refuses the whole call';

CREATE FUNCTION cdp.fail(id bigint, error text, retry_in interval DEFAULT NULL,
                         permanent boolean DEFAULT false) RETURNS text
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_fail';
COMMENT ON FUNCTION cdp.fail(bigint, text, interval, boolean) IS
    'A delivery this session leased failed: retry (after retry_in, else the channel''s backoff with jitter) or dead once permanent or out of attempts; returns the status';

CREATE FUNCTION cdp.replay(ids bigint[]) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_replay_ids';
COMMENT ON FUNCTION cdp.replay(bigint[]) IS
    'Sends dead letters again: pending now, attempts reset, their error history kept; returns how many';

CREATE FUNCTION cdp.replay(channel text, since timestamptz DEFAULT NULL) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_replay_channel';
COMMENT ON FUNCTION cdp.replay(text, timestamptz) IS
    'Sends the channel''s dead letters (dead since the time given, else all) again; returns how many';

CREATE VIEW cdp.stats_outbox AS
    SELECT 'outbox'::text AS section, c.name || '.due' AS metric,
           (SELECT count(*) FROM cdp.outbox o
            WHERE o.channel = c.name AND o.status IN ('pending', 'retry', 'deferred')
              AND o.not_before <= cdp.now())::numeric AS value,
           (SELECT min(o.not_before) FROM cdp.outbox o
            WHERE o.channel = c.name AND o.status IN ('pending', 'retry', 'deferred')
              AND o.not_before <= cdp.now()) AS at
    FROM cdp.channels c
    UNION ALL
    SELECT 'outbox', c.name || '.oldest_due_age_seconds',
           coalesce(round(extract(epoch FROM cdp.now() - min(o.not_before))::numeric, 3), 0),
           min(o.not_before)
    FROM cdp.channels c
    LEFT JOIN cdp.outbox o ON o.channel = c.name AND o.status IN ('pending', 'retry', 'deferred')
                          AND o.not_before <= cdp.now()
    GROUP BY c.name
    UNION ALL
    SELECT 'outbox', c.name || '.leased',
           (SELECT count(*) FROM cdp.outbox o
            WHERE o.channel = c.name AND o.status = 'leased'), NULL
    FROM cdp.channels c
    UNION ALL
    SELECT 'outbox', c.name || '.dead',
           (SELECT count(*) FROM cdp.outbox o WHERE o.channel = c.name AND o.status = 'dead'),
           (SELECT max(o.status_at) FROM cdp.outbox o WHERE o.channel = c.name AND o.status = 'dead')
    FROM cdp.channels c;
COMMENT ON VIEW cdp.stats_outbox IS
    'Per channel: messages due and the age of the oldest, messages leased, dead letters';

SELECT pg_catalog.pg_extension_config_dump('cdp.channels', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.templates', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.outbox_outbox_id_seq', '');

REVOKE ALL ON FUNCTION cdp.channels_defaults(), cdp.templates_check(), cdp.outbox_config_changed(),
    cdp.render(text, jsonb, jsonb, boolean),
    cdp.enqueue(bigint, text, text, jsonb, timestamptz, text),
    cdp.claim(text, integer, interval), cdp.ack(bigint[]),
    cdp.fail(bigint, text, interval, boolean), cdp.replay(bigint[]),
    cdp.replay(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.render(text, jsonb, jsonb, boolean) TO cdp_admin, cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.enqueue(bigint, text, text, jsonb, timestamptz, text),
    cdp.replay(bigint[]), cdp.replay(text, timestamptz) TO cdp_admin;
-- connectors drain and report, nothing else
GRANT EXECUTE ON FUNCTION cdp.claim(text, integer, interval), cdp.ack(bigint[]),
    cdp.fail(bigint, text, interval, boolean) TO cdp_connector, cdp_admin;
GRANT SELECT ON cdp.channels, cdp.templates, cdp.outbox, cdp.channel_buckets, cdp.stats_outbox
    TO cdp_analyst, cdp_admin;
GRANT INSERT, UPDATE, DELETE ON cdp.channels, cdp.templates TO cdp_admin;
GRANT UPDATE, DELETE ON cdp.outbox TO cdp_admin;

-- policy (src/policy.sql)

-- The consent of a person for a purpose (a channel's purpose, by default
-- its name): the latest word, when and from where.  No row: no consent.
CREATE TABLE cdp.consents (
    profile_id bigint NOT NULL,
    purpose    text NOT NULL CHECK (purpose <> '' AND length(purpose) <= 200),
    granted    boolean NOT NULL,
    at         timestamptz NOT NULL DEFAULT cdp.now(),
    source     text,
    PRIMARY KEY (profile_id, purpose)
);
COMMENT ON TABLE cdp.consents IS
    'Consent per person and purpose: granted or withdrawn, when and from which source; a merged profile keeps the most restrictive word of its parts';

-- Addresses nothing may be sent to: hard bounces, complaints, or added by
-- hand.  Keyed by the normalized identifier, like cdp.identities.
CREATE TABLE cdp.suppressions (
    address_type text NOT NULL,
    address      text NOT NULL,
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT cdp.now(),
    source       text,
    PRIMARY KEY (address, address_type)
);
COMMENT ON TABLE cdp.suppressions IS
    'Blocked addresses (identifier type and normalized value): hard bounces, complaints, manual blocks, with the reason';

CREATE FUNCTION cdp.set_consent(identifiers jsonb, channel_or_purpose text, granted boolean,
                                source text DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_set_consent';
COMMENT ON FUNCTION cdp.set_consent(jsonb, text, boolean, text) IS
    'Records a person''s consent (granted or withdrawn) for a channel''s purpose or a purpose, creating the profile as cdp.identify does; returns the profile id';

CREATE FUNCTION cdp.recipient_zone(zone text) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_recipient_zone';
COMMENT ON FUNCTION cdp.recipient_zone(text) IS
    'The time zone given (a person''s timezone trait) when PostgreSQL knows it, else cdp.timezone';

-- When the quiet period that contains at ends, or NULL when at is not in
-- one.  A quiet period that ends before it starts spans midnight.  Local
-- times that do not exist (a spring-forward gap) land after the gap.
CREATE FUNCTION cdp.quiet_until(at timestamptz, zone text, quiet_start time, quiet_end time)
    RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN CASE
        WHEN quiet_start IS NULL OR quiet_end IS NULL THEN NULL
        WHEN quiet_start < quiet_end THEN
            CASE WHEN (at AT TIME ZONE zone)::time >= quiet_start
                  AND (at AT TIME ZONE zone)::time < quiet_end
                 THEN (date_trunc('day', at AT TIME ZONE zone) + quiet_end) AT TIME ZONE zone END
        WHEN (at AT TIME ZONE zone)::time >= quiet_start
            THEN (date_trunc('day', at AT TIME ZONE zone) + interval '1 day' + quiet_end) AT TIME ZONE zone
        WHEN (at AT TIME ZONE zone)::time < quiet_end
            THEN (date_trunc('day', at AT TIME ZONE zone) + quiet_end) AT TIME ZONE zone
    END;
COMMENT ON FUNCTION cdp.quiet_until(timestamptz, text, time, time) IS
    'The end of the quiet period (local quiet_start to quiet_end in the zone) that contains the time, or NULL';

-- Where the recipient's calendar day or week (from Monday) that contains
-- at begins and ends.
CREATE FUNCTION cdp.local_period_start(at timestamptz, zone text, unit text) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN date_trunc(unit, at AT TIME ZONE zone) AT TIME ZONE zone;
CREATE FUNCTION cdp.local_period_end(at timestamptz, zone text, unit text) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (date_trunc(unit, at AT TIME ZONE zone) + ('1 ' || unit)::interval) AT TIME ZONE zone;

CREATE FUNCTION cdp.report_delivery(outbox_id bigint, status text, detail jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_report_delivery';
COMMENT ON FUNCTION cdp.report_delivery(bigint, text, jsonb) IS
    'Records what became of a message (delivered, bounced, opened, clicked, complained, unsubscribed) as an event of its recipient; a hard bounce or a complaint suppresses the address, an unsubscribe withdraws consent';

CREATE FUNCTION cdp.report_deliveries(outbox_ids bigint[], status text, detail jsonb DEFAULT '{}')
    RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_report_deliveries';
COMMENT ON FUNCTION cdp.report_deliveries(bigint[], text, jsonb) IS
    'cdp.report_delivery of every message named, with the same status and detail, in one call; returns how many';

SELECT pg_catalog.pg_extension_config_dump('cdp.consents', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.suppressions', '');

REVOKE ALL ON FUNCTION cdp.set_consent(jsonb, text, boolean, text), cdp.recipient_zone(text),
    cdp.quiet_until(timestamptz, text, time, time),
    cdp.local_period_start(timestamptz, text, text), cdp.local_period_end(timestamptz, text, text),
    cdp.report_delivery(bigint, text, jsonb), cdp.report_deliveries(bigint[], text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.recipient_zone(text), cdp.quiet_until(timestamptz, text, time, time),
    cdp.local_period_start(timestamptz, text, text), cdp.local_period_end(timestamptz, text, text)
    TO cdp_admin, cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.set_consent(jsonb, text, boolean, text) TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.report_delivery(bigint, text, jsonb),
    cdp.report_deliveries(bigint[], text, jsonb) TO cdp_connector, cdp_admin;
GRANT SELECT ON cdp.consents, cdp.suppressions TO cdp_analyst, cdp_admin;
GRANT INSERT, UPDATE, DELETE ON cdp.consents, cdp.suppressions TO cdp_admin;

-- journeys (src/journey.sql)

-- One row per journey: its current version and whether it runs.
CREATE TABLE cdp.journeys (
    name          text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    version       integer NOT NULL,
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused')),
    owner         regrole NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT cdp.now(),
    updated_at    timestamptz NOT NULL DEFAULT cdp.now(),
    last_error    text,
    last_error_at timestamptz
);
COMMENT ON TABLE cdp.journeys IS
    'Journeys and triggers: the current version, draft/active/paused, the owner whose rights its conditions run with, and the last error a condition raised';

-- Every version of a journey, with the definition as given and its parts.
CREATE TABLE cdp.journey_versions (
    journey         text NOT NULL REFERENCES cdp.journeys ON DELETE CASCADE,
    version         integer NOT NULL,
    definition      jsonb NOT NULL,
    in_flight       text NOT NULL CHECK (in_flight IN ('finish', 'migrate')),
    entry_event     text,
    entry_condition text,
    entry_segment   text,
    reentry         text NOT NULL CHECK (reentry IN ('never', 'always', 'cooldown')),
    cooldown        interval,
    exit_events     text[] NOT NULL DEFAULT '{}',
    exit_segments   text[] NOT NULL DEFAULT '{}',
    goal_event      text,
    goal_within     interval,
    holdout         integer NOT NULL DEFAULT 0 CHECK (holdout BETWEEN 0 AND 100),
    first_step      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT cdp.now(),
    PRIMARY KEY (journey, version),
    CHECK ((entry_event IS NULL) <> (entry_segment IS NULL))
);
COMMENT ON TABLE cdp.journey_versions IS
    'Every version of every journey: the definition as given, and its entry, re-entry rule, exit criteria, goal and holdout';

-- The steps of a version, one row each, in the order given.
CREATE TABLE cdp.journey_steps (
    journey    text NOT NULL,
    version    integer NOT NULL,
    step       text NOT NULL,
    ordinal    integer NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('send', 'wait', 'wait_for', 'branch', 'split',
                                             'update', 'exit')),
    next       text,
    channel    text,
    template   text,
    payload    jsonb,
    wait_for   interval,
    wait_until time,
    event      text,
    condition  text,
    match      text[],
    timeout    interval,
    on_event   text,
    on_timeout text,
    segment    text,
    then_step  text,
    else_step  text,
    arms       jsonb,
    trait      text,
    value      jsonb,
    PRIMARY KEY (journey, version, step),
    FOREIGN KEY (journey, version) REFERENCES cdp.journey_versions ON DELETE CASCADE
);
COMMENT ON TABLE cdp.journey_steps IS
    'The steps of every journey version, parsed from the definition';

-- One row per profile per entry into a journey.
CREATE TABLE cdp.journey_states (
    state_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journey          text NOT NULL,
    version          integer NOT NULL,
    profile_id       bigint NOT NULL,
    step             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('active', 'ended')),
    due_at           timestamptz,
    entered_at       timestamptz NOT NULL,
    entry_event      text,
    entry_properties jsonb NOT NULL DEFAULT '{}',
    holdout          boolean NOT NULL DEFAULT false,
    arms             jsonb NOT NULL DEFAULT '{}',
    waiting_event    text,
    waiting_keys     jsonb,
    converted_at     timestamptz,
    ended_at         timestamptz,
    why              text,
    FOREIGN KEY (journey, version) REFERENCES cdp.journey_versions
);
-- Only states with a due time: a lookup by profile never mistakes this index
-- for a list of its active states.
CREATE INDEX journey_states_due ON cdp.journey_states (due_at)
    WHERE status = 'active' AND due_at IS NOT NULL;
CREATE INDEX journey_states_profile ON cdp.journey_states (profile_id, journey);
COMMENT ON TABLE cdp.journey_states IS
    'Profiles in journeys, one row per entry: the current step, when it is due, the entry event''s properties, the split arms chosen, the event a wait_for waits for, the conversion, and why it ended';

-- Every transition of every state.
CREATE TABLE cdp.journey_log (
    log_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state_id   bigint NOT NULL,
    profile_id bigint NOT NULL,
    journey    text NOT NULL,
    version    integer NOT NULL,
    from_step  text,
    to_step    text,
    why        text NOT NULL,
    outbox_id  bigint,
    at         timestamptz NOT NULL DEFAULT cdp.now()
);
CREATE INDEX journey_log_profile ON cdp.journey_log (profile_id);
CREATE INDEX journey_log_state ON cdp.journey_log (state_id);
CREATE INDEX journey_log_outbox ON cdp.journey_log (outbox_id) WHERE outbox_id IS NOT NULL;
COMMENT ON TABLE cdp.journey_log IS
    'Every transition of every journey state (entered, sent, waited, branched, exited, merged), with the outbox id of what it sent: why did this person get this message';

-- Every backend reloads the active journeys when any of these change.
CREATE FUNCTION cdp.journeys_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_journeys_changed_trigger';
CREATE TRIGGER journeys_changed
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, version, status, owner ON cdp.journeys
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.journeys_changed();
CREATE TRIGGER journey_versions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON cdp.journey_versions FOR EACH STATEMENT EXECUTE FUNCTION cdp.journeys_changed();
CREATE TRIGGER journey_steps_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON cdp.journey_steps FOR EACH STATEMENT EXECUTE FUNCTION cdp.journeys_changed();

-- The next time the local clock of the profile shows "at": in the time zone
-- of its identify trait "timezone" when PostgreSQL knows it, else in
-- cdp.timezone.
CREATE FUNCTION cdp.journey_next_local(profile_id bigint, at time, now timestamptz)
    RETURNS timestamptz
    LANGUAGE sql STABLE
    RETURN (WITH z AS (
                SELECT coalesce((SELECT n.name FROM cdp.profiles p
                                 JOIN pg_catalog.pg_timezone_names n
                                   ON n.name = p.traits ->> 'timezone'
                                 WHERE p.profile_id = journey_next_local.profile_id),
                                current_setting('cdp.timezone')) AS tz),
            c AS (
                SELECT tz, (date_trunc('day', now AT TIME ZONE tz) + at) AS t,
                       now AT TIME ZONE tz AS here FROM z)
            SELECT (CASE WHEN t > here THEN t ELSE t + interval '1 day' END) AT TIME ZONE tz
            FROM c);
COMMENT ON FUNCTION cdp.journey_next_local(bigint, time, timestamptz) IS
    'The next time after now that the profile''s local clock (its timezone trait, else cdp.timezone) shows at';

CREATE FUNCTION cdp.create_journey(name text, definition jsonb, in_flight text DEFAULT 'finish')
    RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_create_journey';
COMMENT ON FUNCTION cdp.create_journey(text, jsonb, text) IS
    'Validates and stores a journey (a new version when it exists: profiles in flight finish on their version, or migrate to the step of the same name); returns the version';

CREATE FUNCTION cdp.start_journey(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_start_journey';
COMMENT ON FUNCTION cdp.start_journey(text) IS
    'Starts a journey: profiles enter it from the next event on';
CREATE FUNCTION cdp.pause_journey(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_pause_journey';
COMMENT ON FUNCTION cdp.pause_journey(text) IS
    'Pauses a journey: nobody enters, no step advances, states keep their place';
CREATE FUNCTION cdp.resume_journey(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_resume_journey';
COMMENT ON FUNCTION cdp.resume_journey(text) IS
    'Resumes a paused journey: the steps that came due meanwhile run at the next tick';

-- A trigger is a journey of one send, after an optional wait.
CREATE FUNCTION cdp.create_trigger(name text, event text, condition text, wait interval,
                                   channel text, template text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, cdp, pg_temp
    AS $$
DECLARE
    send jsonb := jsonb_build_object('name', 'send', 'kind', 'send',
                                     'channel', channel, 'template', template);
    steps jsonb;
    v integer;
BEGIN
    IF wait IS NOT NULL AND wait <> interval '0' THEN
        steps := jsonb_build_array(jsonb_build_object('name', 'wait', 'kind', 'wait',
                                                      'for', wait::text, 'next', 'send'), send);
    ELSE
        steps := jsonb_build_array(send);
    END IF;
    v := cdp.create_journey(name, jsonb_strip_nulls(jsonb_build_object(
             'entry', jsonb_build_object('event', event, 'condition', condition),
             'reentry', 'always', 'steps', steps)));
    PERFORM cdp.start_journey(name);
    RETURN v;
END
$$;
COMMENT ON FUNCTION cdp.create_trigger(text, text, text, interval, text, text) IS
    'A journey of one send (after the wait, when not NULL or zero) to every profile with a matching event, started at once, re-entered every time';

SELECT pg_catalog.pg_extension_config_dump('cdp.journeys', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.journey_versions', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.journey_steps', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.journey_states', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.journey_log', '');

REVOKE ALL ON FUNCTION cdp.journeys_changed(), cdp.journey_next_local(bigint, time, timestamptz),
    cdp.create_journey(text, jsonb, text), cdp.start_journey(text), cdp.pause_journey(text),
    cdp.resume_journey(text), cdp.create_trigger(text, text, text, interval, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_journey(text, jsonb, text), cdp.start_journey(text),
    cdp.pause_journey(text), cdp.resume_journey(text),
    cdp.create_trigger(text, text, text, interval, text, text) TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.journey_next_local(bigint, time, timestamptz)
    TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.journeys, cdp.journey_versions, cdp.journey_steps, cdp.journey_states,
    cdp.journey_log TO cdp_analyst, cdp_admin;

-- campaigns (src/campaign.sql)

-- A campaign: its audience is the members of a segment when it runs.
-- Without a channel and a template it has no message of its own: a
-- registered runner (next best action) arbitrates offers for it.
CREATE TABLE cdp.campaigns (
    campaign_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    segment     text NOT NULL,
    channel     text,
    template    text,
    payload     jsonb NOT NULL DEFAULT '{}',
    holdout     integer NOT NULL DEFAULT 0 CHECK (holdout BETWEEN 0 AND 100),
    owner       oid NOT NULL,
    schedule    text,
    cron_job    bigint,
    created_at  timestamptz NOT NULL DEFAULT cdp.now()
);
COMMENT ON TABLE cdp.campaigns IS
    'Campaigns: a send to the members of a segment when run (its channel and template, or offers when both are NULL), the share held out as control, the owner whose rights its sends run with, its pg_cron schedule';

-- One row per run: a run key is spent once per campaign name.
CREATE TABLE cdp.campaign_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign    text NOT NULL,
    run_key     text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    audience    bigint,
    enqueued    bigint,
    held_out    bigint,
    suppressed  jsonb NOT NULL DEFAULT '{}',
    UNIQUE (campaign, run_key)
);
COMMENT ON TABLE cdp.campaign_runs IS
    'Every run of every campaign: its key, when it started and finished, the audience, the messages enqueued, the profiles held out, the messages policy suppressed by reason';

CREATE FUNCTION cdp.create_campaign(name text, segment text, channel text DEFAULT NULL,
                                    template text DEFAULT NULL, payload jsonb DEFAULT '{}',
                                    holdout integer DEFAULT 0)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_create_campaign';
COMMENT ON FUNCTION cdp.create_campaign(text, text, text, text, jsonb, integer) IS
    'A campaign to the members of a segment: one message (channel and template, with the payload), or none when offers arbitrate; holdout is the percentage kept as control, sticky per profile. Returns its id';

CREATE FUNCTION cdp.drop_campaign(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_drop_campaign';
COMMENT ON FUNCTION cdp.drop_campaign(text) IS
    'Drops a campaign and its pg_cron job; its runs stay in cdp.campaign_runs';

CREATE FUNCTION cdp.run_campaign(name text, run_key text DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_run_campaign';
COMMENT ON FUNCTION cdp.run_campaign(text, text) IS
    'Runs a campaign once for the run key (1 to 100 bytes, no slash; NULL: the current minute in UTC, as 2026-12-02T16:05Z): every member of its segment not held out gets its message through cdp.enqueue and the contact policy. A run key already run returns that run''s id and sends nothing';

CREATE FUNCTION cdp.schedule_campaign(name text, cron text) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_schedule_campaign';
COMMENT ON FUNCTION cdp.schedule_campaign(text, text) IS
    'Schedules a campaign through pg_cron (cron.schedule, in GMT), replacing its previous schedule; each run''s key is the minute it starts. Returns the pg_cron job id';

CREATE FUNCTION cdp.unschedule_campaign(name text) RETURNS boolean
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_unschedule_campaign';
COMMENT ON FUNCTION cdp.unschedule_campaign(text) IS
    'Removes a campaign''s pg_cron job; false when it had none';

SELECT pg_catalog.pg_extension_config_dump('cdp.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaigns_campaign_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaign_runs', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaign_runs_run_id_seq', '');

REVOKE ALL ON FUNCTION cdp.create_campaign(text, text, text, text, jsonb, integer),
    cdp.drop_campaign(text), cdp.run_campaign(text, text), cdp.schedule_campaign(text, text),
    cdp.unschedule_campaign(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_campaign(text, text, text, text, jsonb, integer),
    cdp.drop_campaign(text), cdp.run_campaign(text, text), cdp.schedule_campaign(text, text),
    cdp.unschedule_campaign(text) TO cdp_admin;
GRANT SELECT ON cdp.campaigns, cdp.campaign_runs TO cdp_analyst, cdp_admin;

-- journey statistics (src/journey_stats.sql)

CREATE FUNCTION cdp.normal_cdf(x double precision) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_normal_cdf';
COMMENT ON FUNCTION cdp.normal_cdf(double precision) IS
    'The standard normal distribution function: P(Z <= x), from the C library''s erfc, exact to double precision in the tails too';

-- Two conversion rates compared: x conversions of n profiles against the
-- reference group's x0 of n0.
--   p = x / n, p0 = x0 / n0, difference = p - p0
--   95% confidence interval of the difference (normal approximation,
--   unpooled standard error):
--     difference -/+ 1.959963984540054 * sqrt(p (1 - p) / n + p0 (1 - p0) / n0)
--   two-sided p-value (two-proportion z-test, pooled standard error):
--     q = (x + x0) / (n + n0), z = difference / sqrt(q (1 - q) (1 / n + 1 / n0)),
--     p_value = 2 * normal_cdf(-|z|)
-- All NULL when a group is empty (or a count is impossible); the p-value is
-- NULL when q is 0 or 1, where the test has no variance to measure.
CREATE FUNCTION cdp.compare_proportions(x bigint, n bigint, x0 bigint, n0 bigint,
                                        OUT difference double precision,
                                        OUT ci_low double precision,
                                        OUT ci_high double precision,
                                        OUT p_value double precision)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT r.d, r.d - 1.959963984540054 * r.se, r.d + 1.959963984540054 * r.se,
           CASE WHEN r.sp > 0 THEN 2 * cdp.normal_cdf(-abs(r.d) / r.sp) END
    FROM (SELECT p - p0 AS d,
                 sqrt(p * (1 - p) / n + p0 * (1 - p0) / n0) AS se,
                 sqrt(q * (1 - q) * (1::float8 / n + 1::float8 / n0)) AS sp
          FROM (SELECT x::float8 / n AS p, x0::float8 / n0 AS p0,
                       (x + x0)::float8 / (n + n0) AS q
                WHERE n > 0 AND n0 > 0 AND x BETWEEN 0 AND n AND x0 BETWEEN 0 AND n0) c) r
    $$;
COMMENT ON FUNCTION cdp.compare_proportions(bigint, bigint, bigint, bigint) IS
    'x of n against x0 of n0: the difference of the rates, its 95% confidence interval (normal approximation, unpooled standard error) and the two-sided p-value of the two-proportion z-test (pooled standard error)';

-- Rows of kind 'step': one per journey and step name (over all versions,
-- in the order of the newest version that has the step). entered: the
-- states that reached the step; waiting: active there now; exited: ended
-- there (an exit criterion, an exit step, the end of a path, a merge);
-- converted: of those that reached it, the ones that reached the goal.
-- Held-out states walk the steps too (they are sent nothing), so they count.
-- Rows of kind 'arm': one per split step and arm, over the states not held
-- out; compared with the split's first arm. Rows of kind 'holdout', for
-- journeys with a holdout: the held-out profiles compared with the rest.
-- profiles and conversions count distinct profiles.
CREATE VIEW cdp.journey_stats AS
    WITH step_defs AS (
        SELECT DISTINCT ON (t.journey, t.step) t.journey, t.step, t.kind, t.ordinal, t.arms
        FROM cdp.journey_steps t
        ORDER BY t.journey, t.step, t.version DESC),
    reached AS (
        SELECT l.journey, l.to_step AS step, count(DISTINCT l.state_id) AS entered,
               count(DISTINCT l.state_id) FILTER (WHERE s.converted_at IS NOT NULL) AS converted
        FROM cdp.journey_log l JOIN cdp.journey_states s ON s.state_id = l.state_id
        WHERE l.to_step IS NOT NULL
        GROUP BY l.journey, l.to_step),
    standing AS (
        SELECT s.journey, s.step, count(*) FILTER (WHERE s.status = 'active') AS waiting,
               count(*) FILTER (WHERE s.status = 'ended') AS exited
        FROM cdp.journey_states s
        GROUP BY s.journey, s.step),
    arm_defs AS (
        SELECT d.journey, d.step, a.arm ->> 'name' AS arm, a.k AS position
        FROM step_defs d
        CROSS JOIN LATERAL jsonb_array_elements(d.arms) WITH ORDINALITY AS a(arm, k)
        WHERE d.kind = 'split'),
    arm_counts AS (
        SELECT s.journey, a.key AS step, a.value AS arm,
               count(DISTINCT s.profile_id) AS profiles,
               count(DISTINCT s.profile_id) FILTER (WHERE s.converted_at IS NOT NULL) AS conversions
        FROM cdp.journey_states s
        CROSS JOIN LATERAL jsonb_each_text(s.arms) AS a(key, value)
        WHERE NOT s.holdout
        GROUP BY s.journey, a.key, a.value),
    arms AS (
        SELECT x.*,
               first_value(x.arm) OVER w AS ref_arm,
               first_value(x.profiles) OVER w AS ref_profiles,
               first_value(x.conversions) OVER w AS ref_conversions
        FROM (SELECT coalesce(d.journey, c.journey) AS journey, coalesce(d.step, c.step) AS step,
                     coalesce(d.arm, c.arm) AS arm, d.position,
                     coalesce(c.profiles, 0) AS profiles, coalesce(c.conversions, 0) AS conversions
              FROM arm_defs d
              FULL JOIN arm_counts c ON c.journey = d.journey AND c.step = d.step AND c.arm = d.arm) x
        WINDOW w AS (PARTITION BY x.journey, x.step ORDER BY x.position NULLS LAST, x.arm
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
    held AS (
        SELECT j.journey, g.holdout,
               (SELECT count(DISTINCT s.profile_id) FROM cdp.journey_states s
                WHERE s.journey = j.journey AND s.holdout = g.holdout) AS profiles,
               (SELECT count(DISTINCT s.profile_id) FROM cdp.journey_states s
                WHERE s.journey = j.journey AND s.holdout = g.holdout
                  AND s.converted_at IS NOT NULL) AS conversions
        FROM (SELECT DISTINCT v.journey FROM cdp.journey_versions v WHERE v.holdout > 0) j
        CROSS JOIN (VALUES (false), (true)) AS g(holdout))
    SELECT d.journey, 'step'::text AS kind, d.step, NULL::text AS arm, d.ordinal::bigint AS position,
           coalesce(r.entered, 0) AS entered, coalesce(t.waiting, 0) AS waiting,
           coalesce(t.exited, 0) AS exited, coalesce(r.converted, 0) AS converted,
           NULL::bigint AS profiles, NULL::bigint AS conversions,
           r.converted::float8 / nullif(r.entered, 0) AS conversion_rate,
           NULL::text AS compared_with, NULL::float8 AS difference, NULL::float8 AS ci_low,
           NULL::float8 AS ci_high, NULL::float8 AS p_value
    FROM step_defs d
    LEFT JOIN reached r ON r.journey = d.journey AND r.step = d.step
    LEFT JOIN standing t ON t.journey = d.journey AND t.step = d.step
    UNION ALL
    SELECT a.journey, 'arm', a.step, a.arm,
           row_number() OVER (PARTITION BY a.journey, a.step ORDER BY a.position NULLS LAST, a.arm),
           NULL, NULL, NULL, NULL, a.profiles, a.conversions,
           a.conversions::float8 / nullif(a.profiles, 0),
           CASE WHEN a.arm <> a.ref_arm THEN a.ref_arm END,
           c.difference, c.ci_low, c.ci_high, c.p_value
    FROM arms a
    LEFT JOIN LATERAL cdp.compare_proportions(a.conversions, a.profiles, a.ref_conversions,
                                              a.ref_profiles) c ON a.arm <> a.ref_arm
    UNION ALL
    SELECT h.journey, 'holdout', NULL, CASE WHEN h.holdout THEN 'holdout' ELSE 'not held out' END,
           CASE WHEN h.holdout THEN 2 ELSE 1 END,
           NULL, NULL, NULL, NULL, h.profiles, h.conversions,
           h.conversions::float8 / nullif(h.profiles, 0),
           CASE WHEN h.holdout THEN 'not held out' END,
           c.difference, c.ci_low, c.ci_high, c.p_value
    FROM held h
    JOIN held r ON r.journey = h.journey AND NOT r.holdout
    LEFT JOIN LATERAL cdp.compare_proportions(h.conversions, h.profiles, r.conversions,
                                              r.profiles) c ON h.holdout;
COMMENT ON VIEW cdp.journey_stats IS
    'How journeys do: per step (kind step) the states that entered it, wait there, exited there and converted; per split arm (kind arm) and for the holdout (kind holdout) the profiles, conversions, conversion rate, and against the first arm or the profiles not held out the difference with its 95% confidence interval and the two-sided p-value';

REVOKE ALL ON FUNCTION cdp.normal_cdf(double precision),
    cdp.compare_proportions(bigint, bigint, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.normal_cdf(double precision),
    cdp.compare_proportions(bigint, bigint, bigint, bigint) TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.journey_stats TO cdp_analyst, cdp_admin;
-- decisions (src/decide.sql)

-- An offer: the channels it may go through (channel -> template), who may
-- get it (segments, all of them, and a condition over cdp.customers run
-- with the owner's rights), what it is worth, when it is valid, how often
-- one person may get it, what counts as its conversion, how many may go
-- per day per channel (channel -> count; a channel absent is unlimited),
-- and the numeric cdp.customers columns its model reads.
CREATE TABLE cdp.offers (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    channels     jsonb NOT NULL,
    segments     text[] NOT NULL DEFAULT '{}',
    condition    text,
    value        numeric NOT NULL CHECK (value >= 0),
    valid_from   timestamptz,
    valid_until  timestamptz,
    cooldown     interval,
    lifetime_cap integer CHECK (lifetime_cap > 0),
    goal_event   text NOT NULL,
    goal_window  interval NOT NULL CHECK (goal_window > '0'),
    capacity     jsonb NOT NULL DEFAULT '{}',
    features     text[] NOT NULL DEFAULT '{}',
    owner        regrole NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT cdp.now(),
    CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from)
);
COMMENT ON TABLE cdp.offers IS
    'Offers: channels with a template each, eligibility (segments, a condition run as the owner), value, validity, cooldown, lifetime cap, goal event and window, capacity per day per channel, model features';

-- Every send of an offer to a person, and every control (held out, no
-- message): the outcomes that train the model and the bandit.  features
-- are the model's inputs as they were when it was decided.  outcome:
-- NULL while the goal window is open, then converted, expired (the
-- window closed without the goal) or failed (the message bounced).
CREATE TABLE cdp.offer_sends (
    send_id      bigint GENERATED ALWAYS AS IDENTITY,
    profile_id   bigint NOT NULL,
    offer        text NOT NULL,
    channel      text NOT NULL,
    outbox_id    bigint,
    control      boolean NOT NULL DEFAULT false,
    campaign     text,
    run          text,
    sent_at      timestamptz NOT NULL,
    score        double precision,
    features     double precision[],
    outcome      text CHECK (outcome IN ('converted', 'expired', 'failed')),
    converted_at timestamptz,
    value        numeric,
    PRIMARY KEY (profile_id, send_id)
);
-- what the worker settles, and a bounce's send; training and results read
-- the offer's or the campaign's sends whole, rarely, so no index serves them
CREATE INDEX offer_sends_open ON cdp.offer_sends (sent_at) WHERE outcome IS NULL;
CREATE INDEX offer_sends_outbox ON cdp.offer_sends (outbox_id) WHERE outbox_id IS NOT NULL;
-- one decision per person per run, so a re-run never doubles
CREATE UNIQUE INDEX offer_sends_run ON cdp.offer_sends (profile_id, run) WHERE run IS NOT NULL;
COMMENT ON TABLE cdp.offer_sends IS
    'Every send of an offer (and every held-out control): person, channel, outbox message, when, score, the features it was scored on, and its outcome (converted with the value, expired, failed)';

-- The Thompson-sampling bandit of an offer: Beta(alpha, beta), alpha one
-- plus its conversions, beta one plus its sends that did not convert.
CREATE TABLE cdp.offer_arms (
    offer       text PRIMARY KEY REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    alpha       double precision NOT NULL DEFAULT 1 CHECK (alpha > 0),
    beta        double precision NOT NULL DEFAULT 1 CHECK (beta > 0),
    updated_at  timestamptz
);
COMMENT ON TABLE cdp.offer_arms IS
    'The Beta-Bernoulli bandit of each offer: alpha = 1 + conversions, beta = 1 + sends that did not convert (window expired or message failed)';

-- The logistic model of an offer as cdp.train_offer left it; active when
-- the switch rule held (enough sends, conversions and AUC).
CREATE TABLE cdp.offer_models (
    offer       text PRIMARY KEY REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    features    text[] NOT NULL,
    weights     double precision[] NOT NULL,
    means       double precision[] NOT NULL,
    intercept   double precision NOT NULL,
    auc         double precision,
    n           integer NOT NULL,
    n_train     integer NOT NULL,
    n_test      integer NOT NULL,
    conversions integer NOT NULL,
    l2          double precision NOT NULL,
    seed        bigint NOT NULL,
    active      boolean NOT NULL,
    trained_at  timestamptz NOT NULL DEFAULT cdp.now()
);
COMMENT ON TABLE cdp.offer_models IS
    'The logistic model of each trained offer: weights per feature (raw scale), the means a missing feature is taken as, intercept, held-out AUC, sizes, and whether it scores the offer (the switch rule held)';

CREATE VIEW cdp.offer_weights AS
    SELECT m.offer, f.feature, f.weight, f.ord
    FROM cdp.offer_models m,
         unnest(m.features, m.weights) WITH ORDINALITY AS f(feature, weight, ord);
COMMENT ON VIEW cdp.offer_weights IS
    'One row per offer and model feature: its weight';

-- What each offer used of its capacity, per channel and business day
-- (cdp.timezone) of the send.  Runs lock these rows, so two at once never
-- exceed a capacity.
CREATE TABLE cdp.offer_capacity (
    offer   text NOT NULL REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    channel text NOT NULL,
    day     date NOT NULL,
    used    integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (offer, channel, day)
);
COMMENT ON TABLE cdp.offer_capacity IS
    'Sends of each offer per channel and business day, against the offer''s capacity';

-- The engagement of everybody, per channel and local hour: messages
-- delivered and engaged with (opened or clicked), what a person's own
-- rates are shrunk towards.  Refreshed by cdp.refresh_engagement().
CREATE TABLE cdp.engagement_population (
    channel   text NOT NULL,
    hour      smallint NOT NULL CHECK (hour BETWEEN -1 AND 23),
    delivered bigint NOT NULL,
    engaged   bigint NOT NULL,
    PRIMARY KEY (channel, hour)
);
COMMENT ON TABLE cdp.engagement_population IS
    'Population engagement per channel: messages delivered and engaged with (hour -1), and engagements by local hour (0-23)';

-- Arbitration runs: what went out, what was held out, what each capacity
-- cut (offer/channel -> people who would have had it).
CREATE TABLE cdp.offer_runs (
    run            text PRIMARY KEY,
    campaign       text NOT NULL,
    segment        text NOT NULL,
    offers         text[] NOT NULL,
    holdout        integer NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    audience       bigint NOT NULL DEFAULT 0,
    enqueued       bigint NOT NULL DEFAULT 0,
    held_out       bigint NOT NULL DEFAULT 0,
    no_offer       bigint NOT NULL DEFAULT 0,
    expected_value numeric NOT NULL DEFAULT 0,
    capacity_cuts  jsonb NOT NULL DEFAULT '{}',
    suppressed     jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE cdp.offer_runs IS
    'Every arbitration run: audience, enqueued, held out, left without an offer, expected value, what each capacity cut and why others were excluded';

-- Any change to offers makes every backend reload them.
CREATE FUNCTION cdp.offers_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_offers_changed';
CREATE TRIGGER offers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.offers
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.offers_changed();
CREATE TRIGGER offer_models_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.offer_models
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.offers_changed();

CREATE FUNCTION cdp.create_offer(name text, channels jsonb, value numeric, goal_event text,
                                 goal_window interval DEFAULT '7 days',
                                 segments text[] DEFAULT '{}', condition text DEFAULT NULL,
                                 valid_from timestamptz DEFAULT NULL,
                                 valid_until timestamptz DEFAULT NULL,
                                 cooldown interval DEFAULT NULL, lifetime_cap integer DEFAULT NULL,
                                 capacity jsonb DEFAULT '{}', features text[] DEFAULT '{}')
    RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_create_offer';
COMMENT ON FUNCTION cdp.create_offer(text, jsonb, numeric, text, interval, text[], text, timestamptz, timestamptz, interval, integer, jsonb, text[]) IS
    'Creates or replaces an offer after checking every part (channels and templates, segments, the condition, capacity, features); its condition runs with the caller''s rights';

CREATE FUNCTION cdp.drop_offer(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_drop_offer';
COMMENT ON FUNCTION cdp.drop_offer(text) IS
    'Drops an offer with its bandit, model and capacity counts; its sends stay as history';

CREATE FUNCTION cdp.next_best_actions(profile_id bigint, n integer DEFAULT 3)
    RETURNS TABLE (offer text, channel text, send_at timestamptz, score double precision,
                   explanation jsonb)
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_next_best_actions';
COMMENT ON FUNCTION cdp.next_best_actions(bigint, integer) IS
    'The best n offers for a person now, each with its channel, send time, score (propensity x value) and an explanation: model or arm, top features, and why every other offer was excluded';

CREATE FUNCTION cdp.offer_eligibility(profile_id bigint)
    RETURNS TABLE (offer text, eligible boolean, reason text, detail text, channel text,
                   send_at timestamptz, score double precision)
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_offer_eligibility';
COMMENT ON FUNCTION cdp.offer_eligibility(bigint) IS
    'Every offer for a person: eligible with its channel, send time and score, or the reason (ineligible, not_valid, cooldown, cap, capacity, no_consent, no_address, suppressed, contact_cap, invalid_template) and its detail';

CREATE FUNCTION cdp.send_offer(profile_id bigint, offer text, channel text DEFAULT NULL,
                               send_at timestamptz DEFAULT NULL, dedupe_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_send_offer';
COMMENT ON FUNCTION cdp.send_offer(bigint, text, text, timestamptz, text) IS
    'Sends an offer to a person now or at send_at (the best channel when none is given): checked like next_best_actions, counted against its capacity, enqueued, recorded as a send; returns the outbox id';

CREATE FUNCTION cdp.refresh_engagement() RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_refresh_engagement';
COMMENT ON FUNCTION cdp.refresh_engagement() IS
    'Recounts the population''s engagement per channel and local hour from the outbox and the delivery events (the worker does it hourly); returns the rows written';

CREATE FUNCTION cdp.train_offer(name text) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_train_offer';
COMMENT ON FUNCTION cdp.train_offer(text) IS
    'Trains the offer''s logistic model (L2, seeded split and reproducible) on its settled sends; stores and returns weights, intercept, held-out AUC, sizes, and whether the switch rule now lets the model score it';

CREATE FUNCTION cdp.bandit_draw(alpha double precision, beta double precision, seed bigint)
    RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_bandit_draw';
COMMENT ON FUNCTION cdp.bandit_draw(double precision, double precision, bigint) IS
    'A Beta(alpha, beta) draw from the seeded generator the bandit uses: the same seed gives the same draw';

CREATE FUNCTION cdp.two_proportion_test(x1 bigint, n1 bigint, x2 bigint, n2 bigint,
                                        OUT z double precision, OUT p_value double precision)
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_two_proportion_test';
COMMENT ON FUNCTION cdp.two_proportion_test(bigint, bigint, bigint, bigint) IS
    'Two-proportion z-test of x1/n1 against x2/n2 with the pooled proportion: z and the two-sided p-value';

CREATE FUNCTION cdp.arbitrate_offers(campaign text, segment text, offers text[],
                                     run_key text DEFAULT NULL, holdout integer DEFAULT 0)
    RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_arbitrate_offers';
COMMENT ON FUNCTION cdp.arbitrate_offers(text, text, text[], text, integer) IS
    'Scores every member of the segment against the offers, gives each at most one (greedy by score under the capacities), holds out a control share, enqueues at the chosen times with dedupe keys campaign/<campaign>/<run_key>/<profile_id>; returns the run''s counts';

-- The offers a campaign arbitrates when it runs (cdp.run_campaign): a
-- campaign with offers is run by decide_run.c instead of sending its own
-- message.
CREATE TABLE cdp.campaign_offers (
    campaign text NOT NULL REFERENCES cdp.campaigns (name) ON DELETE CASCADE ON UPDATE CASCADE,
    offer    text NOT NULL REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (campaign, offer)
);
COMMENT ON TABLE cdp.campaign_offers IS
    'The offers each campaign arbitrates when it runs';

CREATE FUNCTION cdp.set_campaign_offers(campaign text, offers text[]) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_set_campaign_offers';
COMMENT ON FUNCTION cdp.set_campaign_offers(text, text[]) IS
    'Sets the offers a campaign arbitrates (none: it sends its own message again); returns how many it has';

CREATE FUNCTION cdp.campaign_results(name text)
    RETURNS TABLE (arm text, people bigint, conversions bigint, conversion_rate double precision,
                   value numeric, uplift double precision, z double precision,
                   p_value double precision)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS $$
    WITH s AS (
        SELECT CASE WHEN s.control THEN 'control' ELSE s.offer END AS arm, s.control,
               s.outcome = 'converted' AS converted, coalesce(s.value, 0) AS value
        FROM cdp.offer_sends s WHERE s.campaign = $1
    ), a AS (
        SELECT arm, bool_or(control) AS control, count(*) AS people,
               count(*) FILTER (WHERE converted) AS conversions,
               sum(value) FILTER (WHERE converted) AS value
        FROM s GROUP BY arm
    ), c AS (
        SELECT people, conversions FROM a WHERE control
    ), t AS (
        SELECT 'treated'::text AS arm, false AS control, sum(people)::bigint AS people,
               sum(conversions)::bigint AS conversions, sum(value) AS value
        FROM a WHERE NOT control HAVING count(*) > 0
    )
    SELECT r.arm, r.people, r.conversions,
           r.conversions::double precision / nullif(r.people, 0),
           coalesce(r.value, 0),
           CASE WHEN NOT r.control AND c.people > 0
                THEN r.conversions::double precision / r.people
                     - c.conversions::double precision / c.people END,
           t.z, t.p_value
    FROM (SELECT * FROM a UNION ALL SELECT * FROM t) r
    LEFT JOIN c ON true
    LEFT JOIN LATERAL (SELECT * FROM cdp.two_proportion_test(r.conversions, r.people,
                                                             c.conversions, c.people)
                       WHERE NOT r.control AND c.people > 0) t ON true
    ORDER BY r.control, r.arm = 'treated', r.arm
$$;
COMMENT ON FUNCTION cdp.campaign_results(text) IS
    'Per offer, for all treated and for the control: people, conversions, rate, value, the uplift over the control and its two-sided p-value (two-proportion z-test)';

SELECT pg_catalog.pg_extension_config_dump('cdp.offers', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_sends', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_sends_send_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_arms', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_models', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_capacity', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_runs', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaign_offers', '');

REVOKE ALL ON FUNCTION cdp.offers_changed(),
    cdp.create_offer(text, jsonb, numeric, text, interval, text[], text, timestamptz, timestamptz, interval, integer, jsonb, text[]),
    cdp.drop_offer(text), cdp.next_best_actions(bigint, integer), cdp.offer_eligibility(bigint),
    cdp.send_offer(bigint, text, text, timestamptz, text), cdp.refresh_engagement(),
    cdp.train_offer(text), cdp.bandit_draw(double precision, double precision, bigint),
    cdp.two_proportion_test(bigint, bigint, bigint, bigint),
    cdp.arbitrate_offers(text, text, text[], text, integer), cdp.campaign_results(text),
    cdp.set_campaign_offers(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    cdp.create_offer(text, jsonb, numeric, text, interval, text[], text, timestamptz, timestamptz, interval, integer, jsonb, text[]),
    cdp.drop_offer(text), cdp.send_offer(bigint, text, text, timestamptz, text),
    cdp.refresh_engagement(), cdp.train_offer(text),
    cdp.arbitrate_offers(text, text, text[], text, integer), cdp.set_campaign_offers(text, text[])
    TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.next_best_actions(bigint, integer), cdp.offer_eligibility(bigint),
    cdp.campaign_results(text),
    cdp.bandit_draw(double precision, double precision, bigint),
    cdp.two_proportion_test(bigint, bigint, bigint, bigint) TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.offers, cdp.offer_sends, cdp.offer_arms, cdp.offer_models, cdp.offer_weights,
    cdp.offer_capacity, cdp.engagement_population, cdp.offer_runs, cdp.campaign_offers
    TO cdp_analyst, cdp_admin;
