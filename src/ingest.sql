-- ingest.sql: events, message ids, the inbox and its rejects, and the
-- ingest functions.

-- Events, partitioned by month of occurred_at. Months get their own
-- partition ahead of time (cdp.ensure_event_partitions, run by the worker and
-- cdp.tick(), and before a backfill); anything else lands in the default
-- partition, from which cdp.create_event_partitions moves a month's rows
-- when the month gets its partition.
CREATE TABLE cdp.events (
    profile_id          bigint NOT NULL,
    occurred_at         timestamptz NOT NULL,
    event_id            text NOT NULL,
    event               text NOT NULL,
    properties          jsonb NOT NULL DEFAULT '{}',
    channel             text,
    type                text NOT NULL DEFAULT 'track',
    received_at         timestamptz NOT NULL DEFAULT cdp.now(),
    original_profile_id bigint NOT NULL,
    context             jsonb,
    source              text
) PARTITION BY RANGE (occurred_at);
-- Indexes are made per partition, not on the partitioned table: pg_dump
-- then dumps the monthly partitions (which are not extension members) with
-- their own indexes, and a restore cannot collide with indexes ATTACH
-- PARTITION would create from the parent's.
CREATE TABLE cdp.events_default PARTITION OF cdp.events DEFAULT;
CREATE INDEX events_default_profile ON cdp.events_default (profile_id, occurred_at);
CREATE INDEX events_default_occurred_at ON cdp.events_default USING brin (occurred_at);
COMMENT ON TABLE cdp.events IS
    'Every accepted event, with the profile it belongs to now (original_profile_id: the profile it was first written to); channel is where it happened';

-- Message ids seen, for exact deduplication on every path. A unique index on
-- the partitioned events table would have to include occurred_at, hence a
-- table of its own (distributed by message id on Citus). No index on
-- profile_id: merges find a loser's rows through its events, and only the
-- rare cdp.unmerge and cdp.forget scan the table.
CREATE TABLE cdp.message_ids (
    source              text NOT NULL DEFAULT '',
    message_id          text NOT NULL,
    profile_id          bigint NOT NULL,
    original_profile_id bigint NOT NULL,
    occurred_at         timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT cdp.now(),
    PRIMARY KEY (message_id, source)    -- the distinguishing column first
);
COMMENT ON TABLE cdp.message_ids IS
    'messageId / event_id of every accepted event, per source (empty for SQL calls), kept until cdp.forget';

-- The bulk path: one raw Segment-spec JSON message per row. message is plain
-- text with no constraint, so a COPY of valid UTF-8 never fails on content.
-- inbox_id only orders the drain: each loader takes its ids a thousand at a
-- time (one sequence access per thousand rows, not per row).
CREATE TABLE cdp.inbox (
    inbox_id      bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000) PRIMARY KEY,
    message       text,
    received_at   timestamptz DEFAULT cdp.now(),
    source        text,
    reject_reason text,
    loaded_by     name DEFAULT current_user
);
COMMENT ON TABLE cdp.inbox IS
    'Raw JSON messages waiting for the worker: COPY cdp.inbox (message) FROM ...';
COMMENT ON COLUMN cdp.inbox.received_at IS
    'When the message arrived; Segment clock-skew correction reads it as receivedAt';
COMMENT ON COLUMN cdp.inbox.source IS
    'The source (cdp.sources.name) that sent it: message ids are deduplicated per source';
COMMENT ON COLUMN cdp.inbox.loaded_by IS
    'The role that wrote the row (ingest roles cannot set it): a row naming a source is accepted only from that source''s writer';
COMMENT ON COLUMN cdp.inbox.reject_reason IS
    'Set by a loader (the HTTP collector) that already knows the message cannot be accepted: the drain keeps it as a reject with this reason';

CREATE FUNCTION cdp.inbox_wake() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_inbox_wake';
CREATE TRIGGER inbox_wake AFTER INSERT ON cdp.inbox
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.inbox_wake();

CREATE TABLE cdp.inbox_rejects (
    reject_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message     text,
    source      text,
    sqlstate    text NOT NULL,
    reason      text NOT NULL,
    detail      text,
    received_at timestamptz,
    rejected_at timestamptz NOT NULL DEFAULT cdp.now(),
    inbox_id    bigint
);
COMMENT ON TABLE cdp.inbox_rejects IS
    'Messages of the bulk paths that could not be accepted, with the SQLSTATE and reason';

CREATE FUNCTION cdp.create_event_partitions(start_month date, months integer)
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

CREATE FUNCTION cdp.track(identifiers jsonb, event text, properties jsonb DEFAULT '{}',
                          occurred_at timestamptz DEFAULT cdp.now(),
                          channel text DEFAULT NULL, event_id text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_track';
COMMENT ON FUNCTION cdp.track(jsonb, text, jsonb, timestamptz, text, text) IS
    'Records an event for the person the identifiers name, resolving and merging identities; returns the profile id';

CREATE FUNCTION cdp.identify(identifiers jsonb, traits jsonb DEFAULT '{}',
                             occurred_at timestamptz DEFAULT cdp.now(),
                             channel text DEFAULT NULL, event_id text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_identify';
COMMENT ON FUNCTION cdp.identify(jsonb, jsonb, timestamptz, text, text) IS
    'Links identifiers and sets traits (newest or strongest source wins); returns the profile id';

CREATE FUNCTION cdp.ingest(message jsonb) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_ingest';
COMMENT ON FUNCTION cdp.ingest(jsonb) IS
    'Ingests one Segment-spec message (identify, track, page, screen, alias, group); returns the profile id';

CREATE FUNCTION cdp.ingest_batch(messages jsonb, source text DEFAULT NULL) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_ingest_batch';
COMMENT ON FUNCTION cdp.ingest_batch(jsonb, text) IS
    'Ingests an array (or {"batch": [...]}) of Segment-spec messages; bad ones go to cdp.inbox_rejects; returns the counts';

-- Backups: the data of these tables is in pg_dump's output. Monthly
-- partitions are not extension members, so pg_dump handles them as usual.
SELECT pg_catalog.pg_extension_config_dump('cdp.events_default', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.message_ids', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox_inbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox_rejects', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox_rejects_reject_id_seq', '');

REVOKE ALL ON FUNCTION cdp.inbox_wake(), cdp.create_event_partitions(date, integer),
    cdp.ensure_event_partitions(timestamptz, timestamptz),
    cdp.track(jsonb, text, jsonb, timestamptz, text, text),
    cdp.identify(jsonb, jsonb, timestamptz, text, text),
    cdp.ingest(jsonb), cdp.ingest_batch(jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_event_partitions(date, integer),
    cdp.ensure_event_partitions(timestamptz, timestamptz) TO cdp_admin;
-- cdp_ingest writes events and nothing else: it cannot read profiles.
GRANT EXECUTE ON FUNCTION cdp.track(jsonb, text, jsonb, timestamptz, text, text),
    cdp.identify(jsonb, jsonb, timestamptz, text, text),
    cdp.ingest(jsonb), cdp.ingest_batch(jsonb, text) TO cdp_ingest, cdp_admin;
-- not loaded_by: the drain trusts it to say who wrote the row
GRANT INSERT (message, received_at, source, reject_reason) ON cdp.inbox TO cdp_ingest;
GRANT SELECT ON cdp.events, cdp.events_default, cdp.message_ids, cdp.inbox, cdp.inbox_rejects
    TO cdp_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON cdp.events, cdp.events_default, cdp.message_ids, cdp.inbox, cdp.inbox_rejects TO cdp_admin;
