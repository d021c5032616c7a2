-- segments.sql: benchmark 6's helpers (test/bench/segments.sh), in schema
-- bench_seg. Run on a fresh pg_cdp; psql variable profiles.
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_seg CASCADE;
CREATE SCHEMA bench_seg;

-- The data: three messages per person (user_id u-N), 60% Product Viewed,
-- 30% Order Completed, 10% Checkout Started, spread over the 180 days
-- before the clock (2026-11-19 12:00 UTC), into cdp.inbox for the worker.
CREATE FUNCTION bench_seg.load(people int) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO cdp.inbox (message)
    SELECT json_build_object(
               'type', 'track',
               'event', CASE WHEN r < 0.6 THEN 'Product Viewed' WHEN r < 0.9 THEN 'Order Completed'
                             ELSE 'Checkout Started' END,
               'messageId', 's-' || g,
               'userId', 'u-' || (1 + (g::bigint * 7919) % people),
               'properties', json_build_object('sku', 'SKU-' || (g % 50), 'price', (g % 120) + 0.5),
               'timestamp', timestamptz '2026-11-19 12:00:00+00'
                            - (g % 4320) * interval '1 hour' - (g % 3600) * interval '1 second')::text
    FROM (SELECT g, random() AS r FROM generate_series(1, 3 * people) g) s;
    SELECT count(*) FROM cdp.inbox;
$$;

-- How long a statement takes, in milliseconds.
CREATE FUNCTION bench_seg.ms(statement text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE statement;
    RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
END
$$;

-- Waits until the worker has left no profile marked, up to limit_s seconds;
-- returns the milliseconds it took (NULL on time-out).
CREATE FUNCTION bench_seg.wait_marks(limit_s numeric DEFAULT 600) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    WHILE EXISTS (SELECT FROM cdp.profile_changes) LOOP
        IF clock_timestamp() > t0 + limit_s * interval '1 second' THEN
            RETURN NULL;
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
END
$$;

-- A segment's predicate with every cdp.in_segment(profile_id, 'x') replaced
-- by x's own predicate: what a materialized view of it must say.
CREATE FUNCTION bench_seg.plain_predicate(seg text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    p text;
    d record;
BEGIN
    SELECT predicate INTO p FROM cdp.segments WHERE name = seg;
    FOR d IN SELECT unnest(depends_on) AS name FROM cdp.segments WHERE name = seg LOOP
        p := replace(p, format('cdp.in_segment(profile_id, %L)', d.name),
                     '(' || bench_seg.plain_predicate(d.name) || ')');
    END LOOP;
    RETURN p;
END
$$;

-- The baseline of (b): one materialized view per real-time segment, with
-- the unique index REFRESH ... CONCURRENTLY needs.
CREATE FUNCTION bench_seg.create_views() RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    s record;
    n int := 0;
BEGIN
    FOR s IN SELECT segment_id, name FROM cdp.segments WHERE mode = 'realtime'
             AND name <> 'fresh_probe' ORDER BY segment_id LOOP
        EXECUTE format('CREATE MATERIALIZED VIEW bench_seg.mv_%s AS SELECT profile_id FROM cdp.customers WHERE %s',
                       s.segment_id, bench_seg.plain_predicate(s.name));
        EXECUTE format('CREATE UNIQUE INDEX ON bench_seg.mv_%s (profile_id)', s.segment_id);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Whether each materialized view holds exactly its segment's members.
CREATE FUNCTION bench_seg.views_differ() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s record;
    n bigint := 0;
    d bigint;
BEGIN
    FOR s IN SELECT segment_id FROM cdp.segments WHERE mode = 'realtime' AND name <> 'fresh_probe' LOOP
        EXECUTE format('SELECT count(*) FROM ((SELECT profile_id FROM bench_seg.mv_%1$s
                                                EXCEPT SELECT profile_id FROM cdp.segment_members WHERE segment_id = %1$s)
                                               UNION ALL
                                               (SELECT profile_id FROM cdp.segment_members WHERE segment_id = %1$s
                                                EXCEPT SELECT profile_id FROM bench_seg.mv_%1$s)) x', s.segment_id)
            INTO d;
        n := n + d;
    END LOOP;
    RETURN n;
END
$$;

-- n people's events in one transaction (the caller commits): each of them
-- is marked changed, for the worker to evaluate in one batch. In the order
-- of their profiles, as the worker locks them: a writer of many profiles in
-- another order deadlocks with the worker's evaluation.
CREATE OR REPLACE FUNCTION bench_seg.touch(n int, people int, round int, event text DEFAULT 'Order Completed')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    k bigint := 0;
BEGIN
    FOR r IN SELECT DISTINCT i.profile_id, s.pid
             FROM (SELECT 1 + ((g::bigint * 104729 + round::bigint * 15485863) % people) AS pid
                   FROM generate_series(1, n) g) s
             JOIN cdp.identities i ON i.type = 'user_id' AND i.value = 'u-' || s.pid
             ORDER BY i.profile_id LOOP
        PERFORM cdp.track(jsonb_build_object('user_id', 'u-' || r.pid), event,
                          jsonb_build_object('sku', 'SKU-' || (r.pid % 50), 'price', 20 + r.pid % 70));
        k := k + 1;
    END LOOP;
    RETURN k;
END
$$;

-- (c): the delays from a probe event's commit to its segment change.
CREATE TABLE bench_seg.freshness (at timestamptz NOT NULL, delay_ms numeric NOT NULL);

-- Commits a 'Freshness Probe' event for the probe person, which moves them
-- in or out of segment fresh_probe (an odd count of probes), and polls
-- cdp.segment_changes for that change; for seconds, a probe every 50 ms.
CREATE PROCEDURE bench_seg.probe(seconds numeric) LANGUAGE plpgsql AS $$
DECLARE
    pid bigint;
    last bigint;
    t0 timestamptz;
    deadline timestamptz := clock_timestamp() + seconds * interval '1 second';
BEGIN
    SELECT profile_id INTO pid FROM cdp.identities WHERE type = 'user_id' AND value = 'probe';
    WHILE clock_timestamp() < deadline LOOP
        SELECT coalesce(max(change_id), 0) INTO last FROM cdp.segment_changes WHERE profile_id = pid;
        PERFORM cdp.track('{"user_id": "probe"}', 'Freshness Probe');
        COMMIT;
        t0 := clock_timestamp();
        WHILE NOT EXISTS (SELECT FROM cdp.segment_changes WHERE profile_id = pid AND change_id > last) LOOP
            IF clock_timestamp() > t0 + interval '60 seconds' THEN
                RAISE EXCEPTION 'the probe''s segment change did not come within 60 s';
            END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
        INSERT INTO bench_seg.freshness VALUES (t0, round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1));
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
