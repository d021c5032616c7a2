-- demo/report.sql: what `make demo` shows once the worker has drained the
-- inbox. Variables from scripts/demo.sh: lines (lines in the file),
-- copy_seconds (the \copy) and seconds (\copy until the backlog is 0).
-- demo.* is the generator's ground truth (demo/generate.sql).
\pset footer off
\pset null '-'
SET jit = off;
SET work_mem = '64MB';

SELECT count(*) AS events FROM cdp.events \gset ev_
SELECT count(*) AS rejects FROM cdp.inbox_rejects \gset rj_

\echo
\echo '== load: the JSON lines through \\copy into cdp.inbox, drained by the worker'
SELECT :lines AS "lines loaded",
       :ev_events AS "events",
       :copy_seconds AS "copy s",
       :seconds AS "copy + drain s",
       round(:ev_events / :seconds) AS "events/s",
       (SELECT value FROM cdp.stats WHERE section = 'identity' AND metric = 'resolve_seconds')
           AS "identity resolution s";

\echo
\echo '== events by channel and type'
SELECT coalesce(channel, 'all') AS channel, coalesce(type, '') AS type,
       coalesce(event, '') AS event, count(*) AS events,
       count(DISTINCT profile_id) AS profiles
FROM cdp.events
GROUP BY GROUPING SETS ((channel, type, event), ())
ORDER BY grouping(channel), channel, count(*) DESC;

\echo
\echo '== events over time (monthly partitions; none in the default one)'
SELECT count(*) FILTER (WHERE occurred_at > now() - interval '1 day') AS "last 24h",
       count(*) FILTER (WHERE occurred_at > now() - interval '7 days') AS "last 7 days",
       count(*) FILTER (WHERE occurred_at > now() - interval '30 days') AS "last 30 days",
       min(occurred_at)::date AS oldest, max(occurred_at)::date AS newest,
       (SELECT count(*) FROM pg_inherits WHERE inhparent = 'cdp.events'::regclass) - 1 AS partitions,
       (SELECT count(*) FROM cdp.events_default) AS "in default"
FROM cdp.events;

\echo
\echo '== before identity resolution: identifiers as each silo knows them'
SELECT coalesce(type, 'all') AS type, coalesce(source, '') AS source, count(*) AS identifiers
FROM (SELECT i.type, t.priority,
             CASE WHEN i.type <> 'anonymous_id' THEN ''
                  WHEN i.value LIKE 'pos-%' THEN 'till receipts'
                  WHEN i.value LIKE 'call-%' THEN 'call-center calls'
                  ELSE 'web cookies, app installs' END AS source
      FROM cdp.identities i JOIN cdp.identifier_types t USING (type)) s
GROUP BY ROLLUP ((priority, type, source))
ORDER BY grouping(priority), priority, source;

\echo
\echo '== after identity resolution: profiles, and how they match the people generated'
WITH ev AS (
    SELECT l.p, e.profile_id
    FROM cdp.events e
    JOIN demo.lines l ON l.message_id = e.event_id AND NOT l.dup
    WHERE l.p IS NOT NULL
), per_person AS (
    SELECT p, count(DISTINCT profile_id) AS n FROM ev GROUP BY p
), per_profile AS (
    SELECT profile_id, count(DISTINCT p) AS n FROM ev GROUP BY profile_id
)
SELECT (SELECT count(*) FROM cdp.identities) AS "silo identifiers (before)",
       (SELECT count(*) FROM cdp.profiles) AS "profiles (after)",
       (SELECT count(*) FROM cdp.merges) AS merges,
       round((SELECT count(*) FROM cdp.identities)::numeric /
             (SELECT count(*) FROM cdp.profiles), 2) AS "identifiers/profile",
       (SELECT count(*) FROM per_person) AS people,
       (SELECT count(*) FROM per_person WHERE n = 1) AS "people in 1 profile",
       (SELECT count(*) FROM per_person WHERE n > 1) AS "people split",
       (SELECT count(*) FROM per_profile WHERE n > 1) AS "profiles mixing people";
\echo '   (people split: silos the data never links, e.g. a card shopper who never gave an email)'

\echo
\echo '== merges by the message type that caused them'
SELECT cause, count(*) AS merges, count(DISTINCT winner_id) AS "winning profiles"
FROM cdp.merges GROUP BY cause ORDER BY 2 DESC;

SELECT profile_id AS big FROM cdp.identities
GROUP BY profile_id ORDER BY count(*) DESC, profile_id LIMIT 1 \gset
\echo
\echo '== the biggest merged profile: its identifiers'
SELECT p.profile_id, p.traits->>'name' AS name, p.traits->>'email' AS "email trait",
       (SELECT count(*) FROM cdp.identities WHERE profile_id = p.profile_id) AS identifiers,
       (SELECT count(*) FROM cdp.merges WHERE winner_id = p.profile_id) AS merges,
       (SELECT count(*) FROM cdp.events WHERE profile_id = p.profile_id) AS events
FROM cdp.profiles p WHERE p.profile_id = :big;
SELECT i.type, i.value
FROM cdp.identities i JOIN cdp.identifier_types t USING (type)
WHERE i.profile_id = :big
ORDER BY t.priority, i.value;
\echo '-- its events by channel'
SELECT channel, event, count(*) AS events, min(occurred_at)::date AS first,
       max(occurred_at)::date AS last
FROM cdp.events WHERE profile_id = :big
GROUP BY channel, event ORDER BY channel, event;

\echo
\echo '== duplicates: lines = events + rejects + duplicates dropped'
SELECT :lines AS lines, :ev_events AS events, :rj_rejects AS rejects,
       :lines - :ev_events - :rj_rejects AS "duplicates dropped",
       g.resent AS "re-sent in the file",
       CASE WHEN :lines = g.lines AND :lines - :ev_events - :rj_rejects = g.resent
                 AND :rj_rejects = g.bad
            THEN 'consistent' ELSE 'MISMATCH' END AS "check"
FROM (SELECT count(*) AS lines, count(*) FILTER (WHERE dup) AS resent,
             count(*) FILTER (WHERE noise IS NOT NULL AND p IS NULL) AS bad
      FROM demo.lines) g;

\echo
\echo '== rejects (cdp.inbox_rejects) by reason, one sample each'
SELECT sqlstate, regexp_replace(reason, ': ".*$', '') AS reason, count(*) AS rejects,
       (array_agg(CASE WHEN message ~ '"timestamp": ?"' AND reason LIKE '%"timestamp"%'
                       THEN '... ' || substring(message FROM '"timestamp": ?"[^"]*"') || ' ...'
                       WHEN length(message) > 64 THEN left(message, 64) || '...'
                       ELSE message END
                  ORDER BY length(message), reject_id))[1] AS sample
FROM cdp.inbox_rejects
GROUP BY 1, 2 ORDER BY 3 DESC, 2;

\echo
\echo '== identifier issues (cdp.identifier_issues): the events are kept, these identifiers dropped'
SELECT type,
       CASE WHEN length(reason) > 72 THEN left(reason, 69) || '...' ELSE reason END AS reason,
       count(*) AS issues, min(value) AS sample
FROM cdp.identifier_issues
GROUP BY type, reason ORDER BY 1, 2;

\echo
\echo '== shared family tablets: the user_id limit of 1 keeps the two users apart'
SELECT d.value AS device_id,
       (SELECT value FROM cdp.identities WHERE profile_id = d.profile_id AND type = 'user_id')
           AS "stays with",
       (SELECT value FROM cdp.identities WHERE profile_id = x.profile_id AND type = 'user_id')
           AS "also used by",
       count(*) AS "refused merges",
       d.profile_id <> x.profile_id AS "kept apart"
FROM cdp.identifier_issues x
JOIN cdp.identities d ON d.type = x.type AND d.value = x.value
WHERE x.type = 'device_id' AND x.reason LIKE 'not merged%'
GROUP BY d.value, d.profile_id, x.profile_id ORDER BY 2;

\echo
\echo '== cdp.stats'
SELECT * FROM cdp.stats;
