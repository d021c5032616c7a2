-- journey.sql: journeys and triggers, their versions, the profiles in flight
-- and every transition (journey_def.c and journey_run.c own all of it).

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
