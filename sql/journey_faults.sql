-- Journeys against bad input and broken surroundings: a template dropped
-- after the journey was defined (the send waits and says why, nothing is
-- lost, it goes out once the template is back), waits of zero, negative,
-- mixed-sign and enormous intervals, splits whose weights do not sum to
-- 100, and unicode and hostile step and journey names run end to end.
-- The worker is off: cdp.tick() advances due steps on cdp.fake_now.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-06-01 08:00:00+00';

INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('hook', 'webhook', 'crm', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('doomed', 'hook', 'still here'),
    ('ok', 'hook', 'fine');
CREATE FUNCTION pg_temp.def(steps jsonb, extra jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE sql RETURN jsonb_build_object('entry', jsonb_build_object('event', 'Go'),
                                           'reentry', 'always', 'steps', steps) || extra;

-- A template dropped after the journey was created.
SELECT cdp.create_journey('fragile', '{"entry": {"event": "Fragile"}, "reentry": "always",
  "steps": [{"name": "wait", "kind": "wait", "for": "1 hour", "next": "send"},
            {"name": "send", "kind": "send", "channel": "hook", "template": "doomed", "next": "after"},
            {"name": "after", "kind": "send", "channel": "hook", "template": "ok"}]}');
SELECT cdp.start_journey('fragile');
SELECT cdp.track('{"user_id": "f1"}', 'Fragile') AS f1 \gset
SELECT cdp.track('{"user_id": "f2"}', 'Fragile') AS f2 \gset
DELETE FROM cdp.templates WHERE name = 'doomed';
SET cdp.fake_now = '2026-06-01 09:30:00+00';
-- the tick does not fail: the wait ends, the send is put off a minute
SELECT cdp.tick() ->> 'journeys' AS advanced;
SELECT step, status, due_at FROM cdp.journey_states WHERE journey = 'fragile' ORDER BY state_id;
SELECT last_error, last_error_at FROM cdp.journeys WHERE name = 'fragile';
SELECT from_step, to_step, why FROM cdp.journey_log WHERE journey = 'fragile' ORDER BY log_id;
SELECT count(*) AS messages FROM cdp.outbox;
-- still missing a minute later: put off again, nothing logged twice
SET cdp.fake_now = '2026-06-01 09:31:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SELECT count(*) AS log_rows, (SELECT count(*) FROM cdp.outbox) AS messages
FROM cdp.journey_log WHERE journey = 'fragile';
-- another journey's messages through a template that exists are not held back
SELECT cdp.create_trigger('healthy', 'Fragile', NULL, NULL, 'hook', 'ok');
SELECT cdp.track('{"user_id": "f3"}', 'Fragile') AS f3 \gset
SELECT template, status FROM cdp.outbox WHERE profile_id = :f3;
-- the template is back: both messages go out, once each, in order
INSERT INTO cdp.templates (name, channel, body) VALUES ('doomed', 'hook', 'back again');
SET cdp.fake_now = '2026-06-01 09:33:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SELECT cdp.tick() ->> 'journeys' AS advanced_again;
SELECT CASE profile_id WHEN :f1 THEN 'f1' WHEN :f2 THEN 'f2' ELSE 'f3' END AS who, template,
       count(*) AS messages
FROM cdp.outbox GROUP BY 1, 2 ORDER BY 1, 2;
SELECT s.profile_id = :f1 AS f1, l.from_step, l.to_step, l.why, l.outbox_id IS NOT NULL AS sent
FROM cdp.journey_log l JOIN cdp.journey_states s USING (state_id)
WHERE l.journey = 'fragile' AND s.profile_id = :f1 ORDER BY l.log_id;
SELECT step, status, why FROM cdp.journey_states WHERE journey = 'fragile' ORDER BY state_id;
SELECT body FROM cdp.claim('hook', 10, '1 minute') ORDER BY body;

-- Waits: zero, negative, mixed signs that add up to nothing, no number at
-- all, or beyond the calendar are refused, naming the step.
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "0"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "PT0S"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "-5 minutes"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "1 day -24 hours"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "1 month -30 days"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "-1 day 23 hours"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": 3600}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": null}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "for": "1000000 years"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait_for", "event": "X", "timeout": "-1 hour"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "w", "kind": "wait", "until": "24:00:01"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[]', '{"reentry": {"cooldown": "-7 days"}}'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "x", "kind": "exit"}]', '{"goal": {"event": "Y", "within": "0 days"}}'));
-- a trigger's wait of zero (or NULL) sends at once; a negative one is refused
SELECT cdp.create_trigger('now', 'Now', NULL, '0 seconds', 'hook', 'ok');
SELECT step, kind FROM cdp.journey_steps WHERE journey = 'now';
SELECT cdp.create_trigger('bad', 'Now', NULL, '-1 second', 'hook', 'ok');
-- a day less 24 hours is zero too
SELECT cdp.create_trigger('also now', 'Now', NULL, '1 day -24 hours', 'hook', 'ok');
SELECT step, kind FROM cdp.journey_steps WHERE journey = 'also now';
-- the longest wait allowed still schedules: a century
SELECT cdp.create_journey('patient', pg_temp.def('[{"name": "w", "kind": "wait", "for": "100 years", "next": "s"},
                                                   {"name": "s", "kind": "send", "channel": "hook", "template": "ok"}]'));
SELECT cdp.start_journey('patient');
SELECT cdp.track('{"user_id": "p1"}', 'Go') > 0 AS tracked;
SELECT step, due_at FROM cdp.journey_states WHERE journey = 'patient';

-- Splits whose weights do not sum to 100, or are not whole numbers from 1
-- to 100, are refused.
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": [{"name": "A", "weight": 60, "next": "x"}, {"name": "B", "weight": 60, "next": "x"}]}, {"name": "x", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": [{"name": "A", "weight": 99, "next": "x"}]}, {"name": "x", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": [{"name": "A", "weight": 100, "next": "x"}, {"name": "B", "weight": 0, "next": "x"}]}, {"name": "x", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": [{"name": "A", "weight": 150, "next": "x"}, {"name": "B", "weight": -50, "next": "x"}]}, {"name": "x", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": [{"name": "A", "weight": "50", "next": "x"}, {"name": "B", "weight": "50", "next": "x"}]}, {"name": "x", "kind": "exit"}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": []}]'));
SELECT cdp.create_journey('bad', pg_temp.def('[{"name": "s", "kind": "split", "arms": {"A": 100}}]'));
-- a single arm of 100 is a split too
SELECT cdp.create_journey('one arm', pg_temp.def('[{"name": "s", "kind": "split", "arms": [{"name": "all", "weight": 100, "next": "x"}]}, {"name": "x", "kind": "exit"}]'));
SELECT count(*) AS nothing_bad_stored FROM cdp.journeys WHERE name = 'bad';

-- Unicode and hostile names, run end to end: the steps, the log, the split
-- arm and the dedupe key carry them as given, the longest names included.
SET cdp.fake_now = '2026-06-02 08:00:00+00';
SELECT cdp.create_journey('旅程 «ünïcødé» 🚀', jsonb_build_object(
  'entry', jsonb_build_object('event', 'Événement ✓'), 'reentry', 'never',
  'steps', jsonb_build_array(
    jsonb_build_object('name', 'שלום', 'kind', 'split', 'arms', jsonb_build_array(
        jsonb_build_object('name', 'Ω', 'weight', 100, 'next', 'e' || chr(769) || ' ''; DROP TABLE cdp.profiles; --'))),
    jsonb_build_object('name', 'e' || chr(769) || ' ''; DROP TABLE cdp.profiles; --', 'kind', 'wait',
                       'for', '1 minute', 'next', repeat('ж', 100)),
    jsonb_build_object('name', repeat('ж', 100), 'kind', 'send', 'channel', 'hook', 'template', 'ok'))));
SELECT octet_length(repeat('ж', 100)) AS longest_name_bytes;
SELECT cdp.create_journey('too long', pg_temp.def(jsonb_build_array(
    jsonb_build_object('name', repeat('ж', 101), 'kind', 'exit'))));
SELECT cdp.start_journey('旅程 «ünïcødé» 🚀');
SELECT cdp.track('{"user_id": "uni"}', 'Événement ✓') AS uni \gset
SET cdp.fake_now = '2026-06-02 08:01:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SELECT left(from_step, 20) AS from_step, left(to_step, 20) AS to_step, why, outbox_id IS NOT NULL AS sent
FROM cdp.journey_log WHERE profile_id = :uni ORDER BY log_id;
SELECT arms, status, why FROM cdp.journey_states WHERE profile_id = :uni;
SELECT octet_length(dedupe_key) AS key_bytes,
       dedupe_key LIKE 'journey/旅程 «ünïcødé» 🚀/1/%/' || repeat('ж', 100) AS key_names_the_step
FROM cdp.outbox WHERE profile_id = :uni;
SELECT to_regclass('cdp.profiles') IS NOT NULL AS profiles_still_there;
