-- generate.sql: deterministic Segment-spec messages for benchmarks 1 and 2.
--
-- psql variables: events (number of messages), people, msgfile (raw JSON, one
-- message a line, for cdp.inbox), flatfile (the same events flattened, CSV,
-- for the ceiling). Both files are written by the server.
--
-- The data stays within every identifier limit of pg_cdp, so that identity
-- resolution and label propagation must find the same components:
--   * per person at most one user_id, 1-3 emails (85% have one), 1-3 loyalty
--     cards (35% have one) and 1-50 cookies (anonymousId; about 3 on average);
--   * identifier values embed the person, so two people never share one;
--   * no value matches a blocked pattern.
-- Every message carries its anonymousId (a cookie of the person); userId in
-- ~55% of the messages, an email (context.traits.email, or traits.email in
-- identify) in ~68%, a loyalty card (context.externalIds) in ~21%. Messages
-- pick their person uniformly, so a person's messages are spread over the
-- whole file and come back with cookies that were first seen anonymously:
-- profiles get created apart and merged later.
SET max_parallel_workers_per_gather = 0;   -- one process: random() in row order
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.people, bench.messages;

SELECT setseed(0.2026) \gset

CREATE TABLE bench.people AS
SELECT pid,
       r1 < 0.65 AS has_uid,
       CASE WHEN r2 < 0.15 THEN 0 WHEN r2 < 0.70 THEN 1 WHEN r2 < 0.92 THEN 2 ELSE 3 END AS n_emails,
       CASE WHEN r3 < 0.65 THEN 0 WHEN r3 < 0.92 THEN 1 WHEN r3 < 0.98 THEN 2 ELSE 3 END AS n_cards,
       least(50, 1 + floor(-ln(1 - r4) * 2.0))::int AS n_cookies
FROM (SELECT pid, random() AS r1, random() AS r2, random() AS r3, random() AS r4
      FROM generate_series(1, :people) AS pid) s;
ALTER TABLE bench.people ADD PRIMARY KEY (pid);

CREATE TABLE bench.messages AS
WITH m AS (
    SELECT n, 1 + floor(random() * :people)::int AS pid,
           random() AS a, random() AS b, random() AS c, random() AS d,
           random() AS e, random() AS f, random() AS g, random() AS h
    FROM generate_series(1, :events) AS n
), x AS (
    SELECT m.n,
           CASE WHEN m.a < 0.6 THEN 'track' WHEN m.a < 0.9 THEN 'page' ELSE 'identify' END AS kind,
           'm-' || m.n AS event_id,
           'a-' || m.pid || '-' || floor(m.d * p.n_cookies)::int AS anonymous_id,
           CASE WHEN p.has_uid AND m.b < 0.85 THEN 'u-' || m.pid END AS user_id,
           CASE WHEN p.n_emails > 0 AND m.c < 0.8
                THEN 'p' || m.pid || '.' || floor(m.e * p.n_emails)::int || '@shop.test' END AS email,
           CASE WHEN p.n_cards > 0 AND m.f < 0.6
                THEN 'LC-' || lpad(m.pid::text, 7, '0') || '-' || floor(m.g * p.n_cards)::int END
               AS loyalty_card,
           timestamptz '2026-10-01 00:00:00+00'
               + (m.n * (4320000.0 / :events)) * interval '1 second' AS occurred_at,
           (ARRAY['Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed'])
               [1 + floor(m.h * 4)::int] AS track_event,
           (ARRAY['Home', 'Category', 'Product', 'Cart'])[1 + floor(m.h * 4)::int] AS page_name,
           m.pid
    FROM m JOIN bench.people p USING (pid)
), y AS (
    SELECT x.*,
           CASE kind WHEN 'track' THEN track_event ELSE kind END AS event,
           CASE kind
               WHEN 'track' THEN json_build_object('sku', 'SKU-' || (n % 5000), 'price', (n % 200) + 0.99)
               WHEN 'page' THEN json_build_object('path', '/p/' || (n % 5000), 'title', 'Shop')
           END AS props,
           CASE WHEN kind = 'identify'
                THEN json_strip_nulls(json_build_object('name', 'Person ' || pid, 'email', email)) END
               AS traits
    FROM x
)
SELECT n, pid, kind, event_id, anonymous_id, user_id, email, loyalty_card, occurred_at, event,
       CASE kind
           WHEN 'track' THEN props::jsonb
           WHEN 'page' THEN props::jsonb || jsonb_build_object('name', page_name)
           ELSE traits::jsonb
       END AS properties,
       json_strip_nulls(json_build_object(
           'type', kind,
           'messageId', event_id,
           'anonymousId', anonymous_id,
           'userId', user_id,
           'event', CASE WHEN kind = 'track' THEN track_event END,
           'name', CASE WHEN kind = 'page' THEN page_name END,
           'properties', props,
           'traits', traits,
           'context', json_build_object(
               'traits', CASE WHEN kind <> 'identify' AND email IS NOT NULL
                              THEN json_build_object('email', email) END,
               'externalIds', CASE WHEN loyalty_card IS NOT NULL
                                   THEN json_build_array(json_build_object(
                                            'id', loyalty_card, 'type', 'loyalty_card',
                                            'collection', 'users', 'encoding', 'none')) END),
           'timestamp', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       ))::text AS message
FROM y;
ALTER TABLE bench.messages ADD PRIMARY KEY (n);

COPY (SELECT message FROM bench.messages ORDER BY n)
    TO :'msgfile' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
COPY (SELECT event_id, anonymous_id, user_id, email, loyalty_card, occurred_at, event, properties
      FROM bench.messages ORDER BY n)
    TO :'flatfile' WITH (FORMAT csv);

-- Vacuumed now, so that autovacuum does not visit them during a measurement.
VACUUM ANALYZE bench.people, bench.messages;

\pset footer off
\echo '   generated data:'
SELECT count(*) AS messages,
       count(DISTINCT pid) AS people_seen,
       round(avg(1 + (user_id IS NOT NULL)::int + (email IS NOT NULL)::int
                   + (loyalty_card IS NOT NULL)::int), 2) AS identifiers_per_message,
       round(avg((kind = 'track')::int) * 100) AS pct_track,
       round(avg((kind = 'page')::int) * 100) AS pct_page,
       round(avg((kind = 'identify')::int) * 100) AS pct_identify,
       round(avg(length(message))) AS avg_json_bytes
FROM bench.messages;
