-- api_setup.sql: data for benchmark 3 (single-event API). psql variables:
-- people (people to pre-load), preloadfile (written by the server).
--
-- Every person p has a profile with cookie c-<p> and email p<p>@shop.test
-- (and the anonymousId a Segment message needs); every even person also has
-- a separate anonymous profile with cookie c-<p + 5000000> only, which
-- track.pgbench merges into the person's profile when it first sees both.
SET client_min_messages = warning;
COPY (SELECT message FROM (
          SELECT p AS k, json_build_object(
                     'type', 'identify', 'messageId', 'pre-' || p, 'anonymousId', 'c-' || p,
                     'identifiers', json_build_object('cookie', 'c-' || p,
                                                      'email', 'p' || p || '@shop.test'),
                     'traits', json_build_object('name', 'Person ' || p))::text AS message
          FROM generate_series(1, :people) p
          UNION ALL
          SELECT :people + p, json_build_object(
                     'type', 'track', 'event', 'Product Viewed', 'messageId', 'pre-anon-' || p,
                     'anonymousId', 'c-' || (p + 5000000),
                     'identifiers', json_build_object('cookie', 'c-' || (p + 5000000)))::text
          FROM generate_series(2, :people, 2) p) s
      ORDER BY k)
    TO :'preloadfile' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');

-- The baseline's table: the columns of cdp.events, a primary key, an index
-- on profile_id.
DROP TABLE IF EXISTS bench.plain_events;
CREATE TABLE bench.plain_events (
    profile_id          bigint NOT NULL,
    occurred_at         timestamptz NOT NULL DEFAULT now(),
    event_id            text PRIMARY KEY,
    event               text NOT NULL,
    properties          jsonb NOT NULL DEFAULT '{}',
    channel             text,
    type                text NOT NULL DEFAULT 'track',
    received_at         timestamptz NOT NULL DEFAULT now(),
    original_profile_id bigint NOT NULL,
    context             jsonb
);
CREATE INDEX plain_events_profile_id ON bench.plain_events (profile_id);
