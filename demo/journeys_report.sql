-- demo/journeys_report.sql: what the worker and the connector did.
SELECT profile_id AS lea FROM cdp.identities WHERE type = 'email' AND value = 'lea.martin@example.fr' \gset
\pset footer off
\pset null '-'
\echo
\echo '== her segment changes, logged with their cause, and the events they became'
SELECT s.name, c.change, c.cause, c.at FROM cdp.segment_changes c JOIN cdp.segments s USING (segment_id)
WHERE c.profile_id = :lea ORDER BY c.at, s.name;
SELECT event, properties ->> 'segment' AS segment FROM cdp.events
WHERE profile_id = :lea AND event LIKE 'Segment %' ORDER BY occurred_at;
\echo
\echo '== why did she get each message? (cdp.journey_log)'
SELECT l.journey, l.from_step, l.to_step, l.why, o.template, o.status
FROM cdp.journey_log l LEFT JOIN cdp.outbox o USING (outbox_id)
WHERE l.profile_id = :lea ORDER BY l.log_id;
\echo
\echo '== segment sizes after the worker evaluated every change (cdp.segment_status)'
SELECT name, size, pending_profiles, last_error FROM cdp.segment_status ORDER BY name;
\echo
\echo '== how the journeys do, step by step (cdp.journey_stats)'
SELECT journey, step, entered, waiting, exited, converted FROM cdp.journey_stats
WHERE kind = 'step' ORDER BY journey, position;
