-- Data and helpers of benchmark 9 (test/bench/journeys.sh): :profiles
-- people with an email, a first name and consent; an email channel with the
-- whole policy on (consent, suppressions, quiet hours that are checked but
-- do not fall in the run, caps that are counted but not reached); the
-- journey "flow" whose one step sends through it; a webhook channel for the
-- latency trigger; and the plain SQL baseline's tables and procedure.
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

INSERT INTO cdp.channels (name, kind, address_type, quiet_start, quiet_end, cap_per_day, cap_per_week)
VALUES ('jbench', 'email', 'email',
        (cdp.local_time(now()) + interval '12 hours')::time,
        (cdp.local_time(now()) + interval '13 hours')::time, 1000000, 1000000);
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('jb_t', 'jbench', 'Hello {{traits.first_name | default: "there"}}',
     'Step {{payload.step}} for {{traits.first_name | default: "you"}}');
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('jlat', 'webhook', 'crm', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('jl_t', 'jlat', 'n={{payload.n}}');

INSERT INTO cdp.profiles (profile_id, traits)
SELECT g, jsonb_build_object('first_name', 'P' || g, 'timezone', 'Europe/Paris')
FROM generate_series(1, :profiles) g;
SELECT setval('cdp.profiles_profile_id_seq', :profiles);
INSERT INTO cdp.identities (type, value, profile_id)
SELECT 'user_id', 'u' || g, g FROM generate_series(1, :profiles) g;
INSERT INTO cdp.identities (type, value, profile_id)
SELECT 'email', 'p' || g || '@shop.test', g FROM generate_series(1, :profiles) g;
INSERT INTO cdp.consents (profile_id, purpose, granted, source)
SELECT g, 'jbench', true, 'bench' FROM generate_series(1, :profiles) g;
INSERT INTO cdp.suppressions (address_type, address, reason)
SELECT 'email', 'gone' || g || '@shop.test', 'hard bounce' FROM generate_series(1, 1000) g;

-- (a) the journey the worker advances: one send step
SELECT cdp.create_journey('flow', '{
  "entry": {"event": "Flow Entered"}, "reentry": "always",
  "steps": [{"name": "go", "kind": "send", "channel": "jbench", "template": "jb_t",
             "payload": {"step": "go"}}]}');
SELECT cdp.start_journey('flow');

-- bench.load_flow(): every profile in flight on the send step, due a minute
-- ago, for pg_cdp and for the baseline alike
CREATE OR REPLACE PROCEDURE bench.load_flow(n integer)
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cdp.journey_states (journey, version, profile_id, step, status, due_at, entered_at,
                                    entry_event)
    SELECT 'flow', 1, g, 'go', 'active', now() - interval '1 minute', now() - interval '1 minute',
           'Flow Entered'
    FROM generate_series(1, n) g;
    TRUNCATE bench.plain_states, bench.plain_queue;
    INSERT INTO bench.plain_states (profile_id, step, status, due_at, entered_at)
    SELECT g, 'go', 'active', now() - interval '1 minute', now() - interval '1 minute'
    FROM generate_series(1, n) g;
END
$$;

-- The baseline: what an application writes without pg_cdp, states by due
-- time and a queue of messages, one UPDATE ... RETURNING feeding one INSERT
-- per batch.
DROP TABLE IF EXISTS bench.plain_states, bench.plain_queue;
CREATE TABLE bench.plain_states (
    state_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  bigint NOT NULL,
    step        text NOT NULL,
    status      text NOT NULL,
    due_at      timestamptz,
    entered_at  timestamptz NOT NULL
);
CREATE INDEX plain_states_due ON bench.plain_states (due_at) WHERE status = 'active';
CREATE TABLE bench.plain_queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  bigint NOT NULL,
    channel     text NOT NULL,
    payload     jsonb NOT NULL,
    dedupe_key  text NOT NULL UNIQUE,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE PROCEDURE bench.plain_advance(batch integer)
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    LOOP
        WITH c AS (SELECT state_id FROM bench.plain_states
                   WHERE status = 'active' AND due_at <= now()
                   ORDER BY due_at LIMIT batch FOR UPDATE SKIP LOCKED),
        u AS (UPDATE bench.plain_states s SET status = 'ended', step = 'done', due_at = NULL
              FROM c WHERE s.state_id = c.state_id RETURNING s.state_id, s.profile_id)
        INSERT INTO bench.plain_queue (profile_id, channel, payload, dedupe_key)
        SELECT profile_id, 'jbench', jsonb_build_object('step', 'go'), 'flow/' || state_id FROM u;
        GET DIAGNOSTICS n = ROW_COUNT;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END
$$;

-- bench.wait_flow(timeout): returns once no state of "flow" is active,
-- committing between polls
CREATE OR REPLACE PROCEDURE bench.wait_flow(timeout_s integer)
    LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
    LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM cdp.journey_states
                              WHERE journey = 'flow' AND status = 'active' AND due_at IS NOT NULL);
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the worker did not finish the journey in % s', timeout_s;
        END IF;
        PERFORM pg_sleep(0.01);
        COMMIT;
    END LOOP;
END
$$;

-- (b) entry on event: 50 journeys, journey i entered by "Entry i", exited
-- by "Unsubscribed", converted by "Order Completed", waiting a day then
-- sending; created paused, started for the side with journeys.
SELECT count(cdp.create_journey('entry ' || i, jsonb_build_object(
    'entry', jsonb_build_object('event', 'Entry ' || i), 'reentry', 'always',
    'exit', jsonb_build_array(jsonb_build_object('event', 'Unsubscribed')),
    'goal', jsonb_build_object('event', 'Order Completed', 'within', '7 days'),
    'steps', jsonb_build_array(
        jsonb_build_object('name', 'wait', 'kind', 'wait', 'for', '1 day', 'next', 'send'),
        jsonb_build_object('name', 'send', 'kind', 'send', 'channel', 'jbench', 'template', 'jb_t')))))
FROM generate_series(1, 50) i;

CREATE OR REPLACE PROCEDURE bench.entry_journeys(active boolean)
    LANGUAGE plpgsql AS $$
BEGIN
    IF active THEN
        PERFORM cdp.start_journey(name) FROM cdp.journeys WHERE name LIKE 'entry %' AND status = 'draft';
        PERFORM cdp.resume_journey(name) FROM cdp.journeys WHERE name LIKE 'entry %' AND status = 'paused';
    ELSE
        PERFORM cdp.pause_journey(name) FROM cdp.journeys WHERE name LIKE 'entry %' AND status = 'active';
    END IF;
END
$$;

-- The events: event k of n is "Entry <k mod 50 + 1>" for a random person,
-- so with the journeys started every event enters one journey.
-- bench.track_events(n): n cdp.track calls, a commit per 100; returns
-- nothing, the caller times it.
CREATE OR REPLACE PROCEDURE bench.track_events(n integer, people integer)
    LANGUAGE plpgsql AS $$
BEGIN
    FOR k IN 1..n LOOP
        PERFORM cdp.track(jsonb_build_object('user_id', 'u' || (1 + (k * 7919) % people)),
                          'Entry ' || (k % 50 + 1), jsonb_build_object('k', k));
        IF k % 100 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END
$$;

-- bench.inbox_events(n, tag): the same events as Segment-spec messages in
-- cdp.inbox, for the worker's drain
CREATE OR REPLACE FUNCTION bench.inbox_events(n integer, people integer, tag text) RETURNS bigint
    LANGUAGE sql AS $$
    WITH i AS (
        INSERT INTO cdp.inbox (message)
        SELECT jsonb_build_object('type', 'track', 'userId', 'u' || (1 + (k * 7919) % people),
                                  'event', 'Entry ' || (k % 50 + 1),
                                  'properties', jsonb_build_object('k', k),
                                  'messageId', tag || '-' || k,
                                  'timestamp', now())
        FROM generate_series(1, n) k RETURNING 1)
    SELECT count(*) FROM i
$$;

-- (c) latency: a trigger of one send two seconds after "Ping"
SELECT cdp.create_trigger('ping', 'Ping', NULL, '2 seconds', 'jlat', 'jl_t');
DROP TABLE IF EXISTS bench.latency;
CREATE TABLE bench.latency (outbox_id bigint PRIMARY KEY, ms float8 NOT NULL);

-- bench.pings(n, gap): n Pings of different people, gap seconds apart, each
-- committed
CREATE OR REPLACE PROCEDURE bench.pings(n integer, gap float8)
    LANGUAGE plpgsql AS $$
BEGIN
    FOR k IN 1..n LOOP
        PERFORM cdp.track(jsonb_build_object('user_id', 'u' || k), 'Ping', jsonb_build_object('n', k));
        COMMIT;
        PERFORM pg_sleep(gap);
    END LOOP;
END
$$;

-- bench.claim_pings(n, timeout): claims as a connector polling every 2 ms
-- would, until n messages were claimed; records each one's latency, the
-- claim's time minus its due time (entry + 2 s)
CREATE OR REPLACE PROCEDURE bench.claim_pings(n integer, timeout_s integer)
    LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_s);
BEGIN
    LOOP
        WITH c AS MATERIALIZED (SELECT outbox_id, clock_timestamp() AS at
                                FROM cdp.claim('jlat', 100, '1 minute'))
        INSERT INTO bench.latency (outbox_id, ms)
        SELECT c.outbox_id, extract(epoch FROM c.at - (s.entered_at + interval '2 seconds')) * 1000
        FROM c JOIN cdp.journey_log l ON l.outbox_id = c.outbox_id
        JOIN cdp.journey_states s ON s.state_id = l.state_id;
        COMMIT;
        EXIT WHEN (SELECT count(*) FROM bench.latency) >= n OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.002);
    END LOOP;
END
$$;
