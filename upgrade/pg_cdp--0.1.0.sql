-- pg_cdp 0.1.0 as it was released. Kept, never edited, so that CREATE EXTENSION
-- pg_cdp VERSION '0.1.0' works and upgrades chain from it.
\echo Use "CREATE EXTENSION pg_cdp" to load this file. \quit

-- src/pg_cdp.sql
-- pg_cdp.sql: the clock. Everything time-driven reads cdp.now(), so tests and
-- backfills can move time with SET cdp.fake_now.

CREATE FUNCTION cdp.now() RETURNS timestamptz
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_now_sql';
COMMENT ON FUNCTION cdp.now() IS
    'now(), unless cdp.fake_now is set: the clock of every pg_cdp default and time rule';

-- src/identity.sql
-- identity.sql: identifier types, identities, normalization, resolution.

CREATE TABLE cdp.identifier_types (
    type            text PRIMARY KEY CHECK (type ~ '^[a-z][a-z0-9_]{0,62}$'),
    max_per_profile integer NOT NULL DEFAULT 5 CHECK (max_per_profile > 0),
    priority        integer NOT NULL DEFAULT 100,
    normalizer      text NOT NULL DEFAULT 'trim'
                    CHECK (normalizer IN ('trim', 'lower', 'email', 'phone')),
    blocked_values  text[] NOT NULL
                    DEFAULT '{"[Nn][Uu][Ll][Ll]|[Nn][Ii][Ll]|[Nn][Oo][Nn][Ee]|[Uu][Nn][Dd][Ee][Ff][Ii][Nn][Ee][Dd]", "[Uu][Nn][Kk][Nn][Oo][Ww][Nn]|[Aa][Nn][Oo][Nn][Yy][Mm][Oo][Uu][Ss]|[Gg][Uu][Ee][Ss][Tt]", "[Nn]/[Aa]|-1|[0-]*"}',
    description     text
);
COMMENT ON TABLE cdp.identifier_types IS
    'Identifier types: per-profile limit, merge priority (lower wins), normalizer, blocked values (anchored regular expressions, matched case-sensitively against the normalized value)';

INSERT INTO cdp.identifier_types (type, max_per_profile, priority, normalizer, blocked_values, description) VALUES
    ('user_id', 1, 10, 'trim', DEFAULT,
     'The id the business gives a customer: at most one per profile'),
    ('email', 5, 20, 'email',
     '{"test@test\\.com", "test@example\\.com", "(no-?reply|noreply|donotreply|do-not-reply)@.*", "null@.*", "none@.*"}',
     'Email address: trimmed and case-folded'),
    ('phone', 5, 30, 'phone',
     '{"\\+1?1234567890?", "\\+([0-9])\\1{7,14}"}',
     'Phone number in E.164, with cdp.default_phone_region for national numbers'),
    ('loyalty_card', 3, 40, 'trim', DEFAULT, 'Loyalty card number'),
    ('device_id', 20, 50, 'trim', DEFAULT, 'App installation or device id'),
    ('anonymous_id', 100, 60, 'trim', DEFAULT, 'Segment anonymousId'),
    ('cookie', 100, 70, 'trim', DEFAULT, 'Web cookie id');

-- A bad pattern would fail every ingest later: refuse it now, with its reason.
CREATE FUNCTION cdp.identifier_types_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b text;
BEGIN
    FOREACH b IN ARRAY NEW.blocked_values LOOP
        BEGIN
            PERFORM '' ~ ('^(?:' || b || ')$');
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'invalid blocked value pattern % for identifier type %', quote_literal(b), NEW.type
                USING ERRCODE = 'invalid_regular_expression',
                      DETAIL = 'Blocked values are regular expressions, anchored at both ends.',
                      HINT = 'Escape regular expression characters, for example test@test\.com.';
        END;
    END LOOP;
    RETURN NEW;
END
$$;
CREATE TRIGGER identifier_types_check
    BEFORE INSERT OR UPDATE OF blocked_values ON cdp.identifier_types
    FOR EACH ROW EXECUTE FUNCTION cdp.identifier_types_check();

CREATE FUNCTION cdp.identifier_types_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_identifier_types_changed';
CREATE TRIGGER identifier_types_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.identifier_types
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.identifier_types_changed();

-- A (type, value) belongs to at most one profile. Keyed by the identifier
-- itself, so on Citus it is distributed by value, apart from profile rows.
-- The key puts value first: a descent then decides on the value alone and
-- compares the type (a handful of values) only on a tie, which makes the
-- drain's millions of look-ups and inserts cheaper.
CREATE TABLE cdp.identities (
    type          text NOT NULL,
    value         text NOT NULL,
    profile_id    bigint NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT cdp.now(),
    PRIMARY KEY (value, type)
);
CREATE INDEX identities_profile_id ON cdp.identities (profile_id);
COMMENT ON TABLE cdp.identities IS
    'Normalized identifiers and the profile each belongs to';

-- Identifiers that were dropped: invalid, blocked, or over a limit.
CREATE TABLE cdp.identifier_issues (
    issue_id    bigint GENERATED ALWAYS AS IDENTITY,
    profile_id  bigint,
    event_id    text,
    type        text NOT NULL,
    value       text NOT NULL,
    reason      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT cdp.now(),
    PRIMARY KEY (issue_id)
);
CREATE INDEX identifier_issues_profile_id ON cdp.identifier_issues (profile_id);
COMMENT ON TABLE cdp.identifier_issues IS
    'Identifiers a message carried that were not attached: invalid, blocked, or over a limit, with the reason';

CREATE FUNCTION cdp.normalize_email(email text) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_normalize_email';
COMMENT ON FUNCTION cdp.normalize_email(text) IS
    'The email as pg_cdp stores it (trimmed, case-folded, provider rules if cdp.email_provider_rules), or NULL when it is not an email';

CREATE FUNCTION cdp.normalize_phone(phone text, region text DEFAULT NULL) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_normalize_phone';
COMMENT ON FUNCTION cdp.normalize_phone(text, text) IS
    'The phone number in E.164 (region defaults to cdp.default_phone_region), or NULL when it is not a phone number';

CREATE FUNCTION cdp.resolve(identifiers jsonb) RETURNS bigint
    LANGUAGE c STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_resolve';
COMMENT ON FUNCTION cdp.resolve(jsonb) IS
    'The profile of the strongest known identifier, or NULL; creates nothing';

-- Backups: pg_dump skips the data of extension tables unless told. The
-- shipped identifier types are recreated by CREATE EXTENSION, so only the
-- types users added are dumped (changes to shipped rows must be re-applied).
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_types',
    'WHERE type NOT IN (''user_id'', ''email'', ''phone'', ''loyalty_card'', ''device_id'', ''anonymous_id'', ''cookie'')');
SELECT pg_catalog.pg_extension_config_dump('cdp.identities', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_issues', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_issues_issue_id_seq', '');

-- src/stitch.sql
-- stitch.sql: cdp.stitch, the identity engine over a table of groups (stitch.c)

CREATE FUNCTION cdp.stitch(groups regclass, normalize_values boolean DEFAULT true,
                           OUT type text, OUT value text, OUT component bigint)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cdp_stitch';
COMMENT ON FUNCTION cdp.stitch(regclass, boolean) IS
    'Resolves the identifier graph in groups (group_id, type, value) in memory with pg_cdp''s rules, writing nothing: each identifier with its component';

-- src/profile.sql
-- profile.sql: profiles, trait survivorship, the "profile changed" mark.

CREATE TABLE cdp.profiles (
    profile_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT cdp.now(),
    updated_at timestamptz,
    traits     jsonb NOT NULL DEFAULT '{}',
    trait_meta jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE cdp.profiles IS
    'One row per living profile; traits holds the surviving value of each trait, trait_meta when and from which source it came';

-- Profiles changed since the segment engine last looked: one row each,
-- written in the transaction of every event, merge and erasure.
CREATE TABLE cdp.profile_changes (
    profile_id bigint PRIMARY KEY,
    changed_at timestamptz NOT NULL DEFAULT cdp.now(),
    reason     text
);
COMMENT ON TABLE cdp.profile_changes IS
    'Profiles changed (event, merge, unmerge, forget) and not yet re-evaluated downstream';

-- Backends remember which marks exist and skip writing them again; a
-- deletion of marks makes them all forget (profile.c).
CREATE FUNCTION cdp.profile_changes_deleted() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_profile_changes_deleted';
CREATE TRIGGER profile_changes_deleted
    BEFORE DELETE OR TRUNCATE ON cdp.profile_changes
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.profile_changes_deleted();

CREATE FUNCTION cdp.merge_traits(traits jsonb, meta jsonb, new_traits jsonb, new_meta jsonb)
    RETURNS jsonb LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_merge_traits_sql';
COMMENT ON FUNCTION cdp.merge_traits(jsonb, jsonb, jsonb, jsonb) IS
    'Trait survivorship: per trait, the value from the stronger source (cdp.trait_source_priority), then the newest';

CREATE FUNCTION cdp.merge_trait_meta(meta jsonb, new_meta jsonb)
    RETURNS jsonb LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_merge_trait_meta_sql';

SELECT pg_catalog.pg_extension_config_dump('cdp.profiles', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.profiles_profile_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.profile_changes', '');

-- src/ingest.sql
-- ingest.sql: events, message ids, the inbox and its rejects, and the
-- ingest functions.

-- Events, partitioned by month of occurred_at. Months get their own
-- partition ahead of time (cdp.create_event_partitions, run by the worker and
-- cdp.tick()); anything else lands in the default partition.
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
    reject_reason text
);
COMMENT ON TABLE cdp.inbox IS
    'Raw JSON messages waiting for the worker: COPY cdp.inbox (message) FROM ...';
COMMENT ON COLUMN cdp.inbox.received_at IS
    'When the message arrived; Segment clock-skew correction reads it as receivedAt';
COMMENT ON COLUMN cdp.inbox.source IS
    'The source (cdp.sources.name) that sent it: message ids are deduplicated per source';
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
    created integer := 0;
BEGIN
    IF months IS NULL OR months < 1 OR months > 240 THEN
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
        -- A month whose rows already sit in the default partition keeps them there.
        CONTINUE WHEN EXISTS (SELECT 1 FROM cdp.events_default
                              WHERE occurred_at >= lo AND occurred_at < hi);
        EXECUTE format('CREATE TABLE cdp.%I PARTITION OF cdp.events FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
        EXECUTE format('CREATE INDEX %I ON cdp.%I (profile_id, occurred_at)', part || '_profile', part);
        EXECUTE format('CREATE INDEX %I ON cdp.%I USING brin (occurred_at)', part || '_occurred_at', part);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION cdp.create_event_partitions(date, integer) IS
    'Creates the monthly partitions of cdp.events (UTC months) that do not exist yet, with their indexes; returns how many';

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

-- src/merge.sql
-- merge.sql: the merge log, unmerge and erasure.

CREATE TABLE cdp.merges (
    merge_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    winner_id        bigint NOT NULL,
    loser_id         bigint NOT NULL,
    merged_at        timestamptz NOT NULL DEFAULT cdp.now(),
    cause            text NOT NULL,
    event_id         text,
    identifiers      jsonb NOT NULL,
    loser_identities jsonb NOT NULL,
    loser_members    bigint[] NOT NULL,
    loser_traits     jsonb NOT NULL DEFAULT '{}',
    loser_trait_meta jsonb NOT NULL DEFAULT '{}',
    loser_created_at timestamptz,
    undone_at        timestamptz
);
CREATE INDEX merges_winner_id ON cdp.merges (winner_id);
CREATE INDEX merges_loser_id ON cdp.merges (loser_id);
COMMENT ON TABLE cdp.merges IS
    'Every merge: winner, loser, the message that caused it (cause, event_id, identifiers) and the loser as it was, for cdp.unmerge';

CREATE FUNCTION cdp.unmerge(merge_id bigint) RETURNS bigint
    LANGUAGE c VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_unmerge';
COMMENT ON FUNCTION cdp.unmerge(bigint) IS
    'Splits a merge: restores the loser profile with its identities and events as they were at merge time; returns its id';

CREATE FUNCTION cdp.forget(identifiers jsonb) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_forget';
COMMENT ON FUNCTION cdp.forget(jsonb) IS
    'Erases the people the identifiers name: profile, identities, events, message ids, merges, matching inbox rows and rejects';

SELECT pg_catalog.pg_extension_config_dump('cdp.merges', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.merges_merge_id_seq', '');

-- src/sources.sql
-- sources.sql: the senders of events (a web site, an app, a server), each
-- with its write key. The HTTP collector authenticates requests with them and
-- records the source of every message; message ids are deduplicated per source.

CREATE TABLE cdp.sources (
    name             text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    write_key_sha256 text NOT NULL UNIQUE CHECK (write_key_sha256 ~ '^[0-9a-f]{64}$'),
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT cdp.now(),
    description      text
);
COMMENT ON TABLE cdp.sources IS
    'Event sources and the SHA-256 of their write keys (the keys themselves are never stored)';

CREATE FUNCTION cdp.create_source(name text, write_key text DEFAULT NULL,
                                  description text DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
DECLARE
    key text := coalesce(write_key,
                         replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
BEGIN
    IF length(key) < 16 THEN
        RAISE EXCEPTION 'write key is too short'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A write key has at least 16 characters.',
                  HINT = 'Omit write_key to get a random one.';
    END IF;
    INSERT INTO cdp.sources (name, write_key_sha256, description)
    VALUES (create_source.name, encode(sha256(convert_to(key, 'UTF8')), 'hex'),
            create_source.description);
    RETURN key;
END
$$;
COMMENT ON FUNCTION cdp.create_source(text, text, text) IS
    'Registers a source and returns its write key (random unless given); only its SHA-256 is kept';

CREATE FUNCTION cdp.authenticate_source(write_key text, OUT source text, OUT enabled boolean)
    RETURNS record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
    SELECT s.name, s.enabled FROM cdp.sources s
    WHERE s.write_key_sha256 = encode(sha256(convert_to(write_key, 'UTF8')), 'hex')
$$;
COMMENT ON FUNCTION cdp.authenticate_source(text) IS
    'The source a write key belongs to, and whether it is enabled; no row when the key is unknown';

SELECT pg_catalog.pg_extension_config_dump('cdp.sources', '');

-- src/worker.sql
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
    OUT batch_size integer)
    RETURNS record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cdp_worker_status';

CREATE VIEW cdp.stats AS
    SELECT 'worker'::text AS section, 'pid'::text AS metric,
           w.pid::numeric AS value, w.started_at AS at
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
    SELECT 'profiles', 'changed_pending', count(*), min(changed_at) FROM cdp.profile_changes;
COMMENT ON VIEW cdp.stats IS
    'Operational figures: worker heartbeat and counters, inbox backlog and age, rejects, merges, pending profile changes';

-- src/roles.sql
-- roles.sql: the four roles and what each may do. Roles are cluster-wide, so
-- they are created only when missing.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['cdp_admin', 'cdp_ingest', 'cdp_connector', 'cdp_analyst'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA cdp FROM PUBLIC;
GRANT USAGE ON SCHEMA cdp TO cdp_admin, cdp_ingest, cdp_connector, cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.now(), cdp.normalize_email(text), cdp.normalize_phone(text, text)
    TO PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.merge_traits(jsonb, jsonb, jsonb, jsonb),
    cdp.merge_trait_meta(jsonb, jsonb), cdp.worker_status() TO cdp_admin, cdp_analyst;

-- cdp_ingest writes events and nothing else: it cannot read profiles.
GRANT EXECUTE ON FUNCTION cdp.track(jsonb, text, jsonb, timestamptz, text, text),
    cdp.identify(jsonb, jsonb, timestamptz, text, text),
    cdp.ingest(jsonb), cdp.ingest_batch(jsonb, text) TO cdp_ingest, cdp_admin;
GRANT INSERT ON cdp.inbox TO cdp_ingest;
GRANT EXECUTE ON FUNCTION cdp.authenticate_source(text) TO cdp_ingest, cdp_admin;

-- cdp_analyst reads everything, changes nothing.
GRANT SELECT ON ALL TABLES IN SCHEMA cdp TO cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.resolve(jsonb), cdp.stitch(regclass, boolean)
    TO cdp_analyst, cdp_admin;

-- cdp_admin runs the platform.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA cdp TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.unmerge(bigint), cdp.forget(jsonb), cdp.tick(),
    cdp.create_source(text, text, text),
    cdp.create_event_partitions(date, integer) TO cdp_admin;

-- cdp_connector drains the outbox (claim, ack, fail) once it exists; until
-- then it may only see the schema.
