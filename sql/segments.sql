-- Segments: definitions and their errors, real-time entries and exits
-- (cdp.track + cdp.in_segment in one transaction, cdp.tick()), decay,
-- scheduled refreshes, merges, unmerges, erasures, a predicate that raises
-- for some profiles, the owner's rights, and drops. The worker is off:
-- cdp.tick() evaluates. cdp.timezone is Europe/Paris (test/regress.conf).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-20 12:30:00+00';

SELECT cdp.declare_trait('birth_date', 'date');
SELECT cdp.declare_trait('city', 'text');
SELECT cdp.define_trait('orders_180d', 'count', 'Order Completed', NULL, '180 days');
SELECT cdp.define_trait('revenue_total', 'sum', 'Order Completed', 'amount');
SELECT cdp.define_trait('last_purchase_at', 'last', 'Order Completed');
SELECT cdp.define_trait('spent_today_14_18', 'sum', 'Order Completed', 'amount', 'today',
    'extract(hour FROM cdp.local_time(occurred_at)) BETWEEN 14 AND 17');

CREATE FUNCTION pid(uid text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT profile_id FROM cdp.identities WHERE type = 'user_id' AND value = uid
$$;
CREATE VIEW changes AS
    SELECT s.name, i.value AS who, c.change, c.cause
    FROM cdp.segment_changes c JOIN cdp.segments s USING (segment_id)
    LEFT JOIN cdp.identities i ON i.profile_id = c.profile_id AND i.type = 'user_id';

-- Invalid definitions: clear errors naming what is wrong.
SELECT cdp.create_segment('x', 'revenue_total >');
SELECT cdp.create_segment('x', 'no_such_trait > 1');
SELECT cdp.create_segment('x', 'nosuch.revenue_total > 1');
SELECT cdp.create_segment('x', '1=1; DROP TABLE cdp.events');
SELECT cdp.create_segment('x', 'revenue_total > 1) OR (true');
SELECT cdp.create_segment('x', 'true) FROM pg_authid --');
SELECT cdp.create_segment('x', 'true ORDER BY 1');
SELECT cdp.create_segment('x', 'random() > 0.5');
SELECT cdp.create_segment('x', 'nextval(''cdp.segments_segment_id_seq'') > 0');
SELECT cdp.create_segment('x', 'EXISTS (WITH d AS (DELETE FROM cdp.events RETURNING 1) SELECT FROM d)');
SELECT cdp.create_segment('x', 'EXISTS (SELECT FROM cdp.events FOR UPDATE)');
SELECT cdp.create_segment('x', 'count(*) > 1');
SELECT cdp.create_segment('x', 'generate_series(1, 2) > 1');
SELECT cdp.create_segment('x', 'revenue_total');
SELECT cdp.create_segment('x', 'c IS NOT NULL');
SELECT cdp.create_segment('x', '$1 > 0');
SELECT cdp.create_segment('x', 'cdp.in_segment(profile_id, ''no such segment'')');
SELECT cdp.create_segment('x', 'cdp.in_segment(profile_id, city)');
SELECT cdp.create_segment('selfish', 'cdp.in_segment(profile_id, ''selfish'')');
SELECT cdp.create_segment('x', 'last_purchase_at < cdp.now() - interval ''90 days''');
SELECT cdp.create_segment('x', 'birth_date < current_date');
SELECT cdp.create_segment('x', 'true', 'sometimes');
SELECT cdp.create_segment('x', 'true', 'realtime', '-1 hour');
SELECT cdp.create_segment(NULL, 'true');
SELECT cdp.create_segment('x', NULL);
SELECT cdp.create_segment('x', 'true', NULL);
SELECT cdp.create_segment('', 'true');
SELECT cdp.create_segment(E'tab\there', 'true');
SELECT cdp.create_segment(repeat('n', 201), 'true');
SELECT cdp.create_segment('x', '');
SELECT cdp.create_segment('x', repeat('(', 50000) || repeat(')', 50000) || 'x');
SELECT count(*) AS segments FROM cdp.segments;

-- The seeds' segments, as definitions; a name with quotes and unicode.
SELECT cdp.create_segment('afternoon spenders', 'spent_today_14_18 > 150');
SELECT cdp.create_segment('50+ loyal', 'age(birth_date) >= ''50 years'' AND orders_180d >= 3');
SELECT cdp.create_segment('50+ loyal', 'age(birth_date) >= ''50 years'' AND orders_180d >= 3',
                          refresh_every => '1 day');
SELECT cdp.create_segment('lapsed', 'last_purchase_at < cdp.now() - interval ''90 days''',
                          refresh_every => '1 hour');
SELECT cdp.create_segment('l''œil "café" ☕', 'revenue_total >= 100');
SELECT cdp.create_segment('lapsed big spenders',
                          'cdp.in_segment(profile_id, ''lapsed'') AND revenue_total > 150');
SELECT cdp.create_segment('lyon', 'city = ''Lyon''', 'scheduled');
SELECT cdp.create_segment('lyon', 'true');
SELECT name, mode, columns, depends_on, reads_time, refresh_every FROM cdp.segments ORDER BY segment_id;

-- Entering: the writer sees it in its own transaction, right after its
-- event; the segment's tables follow at the next evaluation.
BEGIN;
SELECT cdp.track('{"user_id": "u1"}', 'Order Completed', '{"amount": 160}',
                 '2026-05-20 12:15:00+00') > 0 AS tracked;
SELECT cdp.in_segment(pid('u1'), 'afternoon spenders') AS in_now,
       cdp.in_segment(pid('u1'), 'l''œil "café" ☕') AS in_cafe,
       cdp.in_segment(pid('u1'), 'lapsed') AS lapsed;
SELECT count(*) AS members_yet FROM cdp.segment_members;
COMMIT;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT * FROM changes ORDER BY 1, 2;
SELECT event, properties FROM cdp.events WHERE profile_id = pid('u1') AND event LIKE 'Segment%' ORDER BY 1, 2;
-- its own events do not make the profile evaluated again
SELECT count(*) AS marks_left FROM cdp.profile_changes;
SELECT (cdp.tick()->>'segments')::int AS evaluated_again;
SELECT cdp.in_segment(pid('u1'), 'afternoon spenders') AS in_after;

-- Events of others, out of order; a late old purchase does not make u1
-- lapsed; a lapsed big spender.
SELECT cdp.track('{"user_id": "u2"}', 'Order Completed', '{"amount": 90}', '2026-01-10 10:00:00+00') > 0;
SELECT cdp.track('{"user_id": "u2"}', 'Order Completed', '{"amount": 150}', '2025-12-01 10:00:00+00') > 0;
SELECT cdp.track('{"user_id": "u1"}', 'Order Completed', '{"amount": 5}', '2025-01-01 10:00:00+00') > 0;
SELECT cdp.identify('{"user_id": "u3"}', '{"birth_date": "1960-02-01", "city": "Lyon"}') > 0;
SELECT cdp.track('{"user_id": "u3"}', 'Order Completed', jsonb_build_object('amount', 20), cdp.now() - n * interval '20 days') > 0
FROM generate_series(1, 3) n;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT * FROM changes ORDER BY 1, 2;

-- A scheduled segment changes only when refreshed, and a second refresh
-- writes nothing.
SELECT cdp.in_segment(pid('u3'), 'lyon') AS lyon_before;
SELECT cdp.refresh_segment('lyon');
SELECT cdp.refresh_segment('lyon');
SELECT cdp.in_segment(pid('u3'), 'lyon') AS lyon_after;

-- Exits: local midnight ends "today" (decay); the clock makes u1's last
-- purchase 90 days old (the refresh schedule).
SET cdp.fake_now = '2026-05-20 22:01:00+00';
SELECT (cdp.tick()->>'segments')::int > 0 AS evaluated;
SELECT * FROM changes WHERE change = 'exited' ORDER BY 1, 2;
SET cdp.fake_now = '2026-08-20 12:00:00+00';
DO $$ BEGIN FOR i IN 1..4 LOOP PERFORM cdp.tick(); END LOOP; END $$;
SELECT * FROM changes WHERE name LIKE 'lapsed%' ORDER BY 1, 2, 3 DESC;
SELECT name, size, pending_profiles, last_error FROM cdp.segment_status ORDER BY name;
SELECT s.name, z.day, z.members, z.entered, z.exited
FROM cdp.segment_sizes z JOIN cdp.segments s USING (segment_id) ORDER BY 1, 2;

-- A merge ends the loser's memberships and evaluates the winner; an
-- unmerge evaluates both; an erasure removes every row of the person.
SET cdp.fake_now = '2026-08-21 12:00:00+00';
SELECT cdp.track('{"anonymous_id": "a9"}', 'Order Completed', '{"amount": 120}') > 0;
SELECT cdp.track('{"user_id": "u9"}', 'Order Completed', '{"amount": 130}') > 0;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT cdp.track('{"user_id": "u9", "anonymous_id": "a9"}', 'Page Viewed') > 0 AS merged;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT c.change, c.cause, c.profile_id = pid('u9') AS winner
FROM cdp.segment_changes c JOIN cdp.segments s USING (segment_id)
WHERE s.name = 'l''œil "café" ☕' AND c.at = cdp.now() ORDER BY 1, 2, 3;
SELECT count(*) AS u9_memberships FROM cdp.segment_members WHERE profile_id = pid('u9');
SELECT cdp.unmerge((SELECT max(merge_id) FROM cdp.merges)) > 0 AS unmerged;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT c.change, c.cause FROM cdp.segment_changes c JOIN cdp.segments s USING (segment_id)
WHERE s.name = 'l''œil "café" ☕' AND c.cause = 'unmerge' ORDER BY 1, 2;
SELECT count(*) AS cafe_members FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id)
WHERE s.name = 'l''œil "café" ☕';
SELECT cdp.forget('{"user_id": "u9"}') ? 'segment_members' AS forgotten;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT (SELECT count(*) FROM cdp.segment_members m WHERE NOT EXISTS
           (SELECT FROM cdp.profiles p WHERE p.profile_id = m.profile_id)) AS orphan_members,
       (SELECT count(*) FROM cdp.segment_changes c WHERE NOT EXISTS
           (SELECT FROM cdp.profiles p WHERE p.profile_id = c.profile_id)
           AND NOT EXISTS (SELECT FROM cdp.merges g WHERE g.loser_id = c.profile_id)) AS orphan_changes,
       (SELECT bool_and(s.members = (SELECT count(*) FROM cdp.segment_members m
                                     WHERE m.segment_id = s.segment_id)) FROM cdp.segments s) AS sizes_exact;

-- A predicate that raises for some profiles: its error is shown, those
-- profiles wait for it, the others and the other segments keep updating;
-- once it works for them, they are evaluated and the error goes.
SELECT cdp.create_segment('fragile', '100 / (revenue_total - 42) > 0');
SELECT cdp.track('{"user_id": "u42"}', 'Order Completed', '{"amount": 42}') > 0;
SELECT cdp.track('{"user_id": "u50"}', 'Order Completed', '{"amount": 150}') > 0;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT name, size, pending_profiles, oldest_pending_age IS NOT NULL AS waiting, last_error
FROM cdp.segment_status WHERE name IN ('fragile', 'l''œil "café" ☕') ORDER BY name;
SELECT s.name, p.profile_id = pid('u42') AS is_u42 FROM cdp.segment_pending p JOIN cdp.segments s USING (segment_id);
SELECT cdp.in_segment(pid('u50'), 'fragile') AS u50_fragile;
SELECT cdp.in_segment(pid('u42'), 'fragile');
SELECT metric, value FROM cdp.stats WHERE section = 'segments' ORDER BY metric;
SELECT cdp.track('{"user_id": "u42"}', 'Order Completed', '{"amount": 1}') > 0;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT name, size, pending_profiles, last_error FROM cdp.segment_status WHERE name = 'fragile';
SELECT * FROM changes WHERE name = 'fragile' ORDER BY 2;

-- The owner's rights, never the caller's: an owner who cannot read a table
-- cannot read it through a predicate, at creation or later.
CREATE ROLE regress_seg_owner NOLOGIN IN ROLE cdp_admin;
CREATE TABLE regress_secret (profile_id bigint);
INSERT INTO regress_secret SELECT profile_id FROM cdp.profiles;
REVOKE ALL ON regress_secret FROM PUBLIC;
SET ROLE regress_seg_owner;
SELECT cdp.create_segment('nosy', 'EXISTS (SELECT FROM public.regress_secret r WHERE r.profile_id = c.profile_id)');
RESET ROLE;
GRANT SELECT ON regress_secret TO regress_seg_owner;
SET ROLE regress_seg_owner;
SELECT cdp.create_segment('nosy', 'EXISTS (SELECT FROM public.regress_secret r WHERE r.profile_id = c.profile_id)') > 0 AS created;
RESET ROLE;
SELECT owner FROM cdp.segments WHERE name = 'nosy';
REVOKE SELECT ON regress_secret FROM regress_seg_owner;
SELECT cdp.track('{"user_id": "u50"}', 'Page Viewed') > 0;
-- the superuser's in_segment still runs the predicate as its owner
SELECT cdp.in_segment(pid('u50'), 'nosy');
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT name, pending_profiles, last_error FROM cdp.segment_status WHERE name = 'nosy';

-- A merged loser's memberships: the person does not leave a segment the
-- loser was in. The loser's exit and the winner's entry are logged (cause
-- merge), without events, as the person's timeline (which the loser's
-- events join) already has the entry; the winner, evaluated again, leaves
-- with an event only where the merged person no longer qualifies ('one
-- order': both sides had one, the person has two).
SELECT cdp.create_segment('one order', 'orders_180d = 1') AS members_before;
SELECT cdp.track('{"user_id": "u7"}', 'Order Completed', '{"amount": 5}') > 0;
SELECT cdp.track('{"anonymous_id": "a7"}', 'Order Completed', '{"amount": 110}') > 0;
SELECT profile_id AS a7 FROM cdp.identities WHERE type = 'anonymous_id' AND value = 'a7' \gset
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT s.name, m.profile_id = :a7 AS anonymous FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id)
WHERE m.profile_id IN (pid('u7'), :a7) ORDER BY 1, 2;
SELECT cdp.track('{"user_id": "u7", "anonymous_id": "a7"}', 'Page Viewed') > 0 AS merged;
SELECT winner_id = pid('u7') AS u7_wins FROM cdp.merges WHERE loser_id = :a7;
SELECT s.name, c.change, c.cause, c.profile_id = :a7 AS loser
FROM cdp.segment_changes c JOIN cdp.segments s USING (segment_id)
WHERE c.profile_id IN (pid('u7'), :a7) ORDER BY c.change_id;
SELECT s.name FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id)
WHERE m.profile_id = pid('u7') ORDER BY 1;
SELECT (cdp.tick()->>'segments')::int AS evaluated;
SELECT event, properties->>'segment' AS segment FROM cdp.events
WHERE profile_id = pid('u7') AND event LIKE 'Segment%' ORDER BY occurred_at, event, 2;
-- replaying the changes gives the members; the counts stay exact
WITH last AS (
    SELECT DISTINCT ON (segment_id, profile_id) segment_id, profile_id, change
    FROM cdp.segment_changes ORDER BY segment_id, profile_id, change_id DESC)
SELECT (SELECT count(*) FROM ((SELECT segment_id, profile_id FROM last WHERE change = 'entered'
                               EXCEPT SELECT segment_id, profile_id FROM cdp.segment_members)
                              UNION ALL
                              (SELECT segment_id, profile_id FROM cdp.segment_members
                               EXCEPT SELECT segment_id, profile_id FROM last WHERE change = 'entered')) x)
           AS replay_differs,
       (SELECT bool_and(s.members = (SELECT count(*) FROM cdp.segment_members m
                                     WHERE m.segment_id = s.segment_id)) FROM cdp.segments s) AS sizes_exact;
SELECT cdp.drop_segment('one order');

-- Drops: a trait a segment uses, a segment another uses; unknown names.
SELECT cdp.drop_trait('revenue_total');
SELECT cdp.drop_segment('lapsed');
SELECT cdp.drop_segment('no such segment');
SELECT cdp.drop_segment(NULL);
SELECT cdp.in_segment(1, 'no such segment');
SELECT cdp.in_segment(NULL, 'lapsed');
SELECT cdp.refresh_segment('no such segment');
SELECT cdp.drop_segment('lapsed big spenders');
SELECT cdp.drop_segment('lapsed');
SELECT cdp.drop_segment('nosy');
SELECT cdp.drop_segment('fragile');
SELECT name FROM cdp.segments ORDER BY segment_id;
SELECT count(*) AS members_of_dropped FROM cdp.segment_members m
WHERE NOT EXISTS (SELECT FROM cdp.segments s WHERE s.segment_id = m.segment_id);
SELECT cdp.drop_trait('spent_today_14_18');
SELECT cdp.drop_segment('afternoon spenders');
SELECT cdp.drop_trait('spent_today_14_18');
DROP TABLE regress_secret;
DROP ROLE regress_seg_owner;
-- leave nothing behind for the suites after this one
DROP VIEW changes;
DROP FUNCTION pid(text);
