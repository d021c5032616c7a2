-- Campaigns: definitions and their errors, runs through the contact policy
-- (consent, suppressed addresses) with a sticky holdout, idempotent run
-- keys, the runner hook with no runner, the owner's rights, and
-- scheduling through pg_cron (preloaded here, cron.database_name is this
-- database: test/regress.conf). The clock is cdp.fake_now.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
DROP EXTENSION IF EXISTS pg_cron;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-06-01 09:30:20+00';

INSERT INTO cdp.channels (name, kind, address_type) VALUES ('email', 'email', 'email');
INSERT INTO cdp.channels (name, kind, address_type) VALUES ('sms', 'sms', 'phone');
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('summer', 'email', 'Summer sale', 'Hi {{traits.first_name | default: "there"}}: {{payload.code}}'),
    ('winter', 'email', 'Winter sale', 'Hi'),
    ('ping', 'sms', NULL, 'Ping');
SELECT cdp.declare_trait('tier', 'text');

-- Twenty people: u01..u16 are gold, the rest silver; u01..u12 consent to
-- email, u13 withdrew it; u03's address is suppressed.
SELECT count(cdp.identify(jsonb_build_object('email', format('u%s@shop.test', to_char(i, 'FM00'))),
                          jsonb_build_object('tier', CASE WHEN i <= 16 THEN 'gold' ELSE 'silver' END)))
FROM generate_series(1, 20) i;
SELECT count(cdp.set_consent(jsonb_build_object('email', format('u%s@shop.test', to_char(i, 'FM00'))),
                             'email', i <> 13, 'form'))
FROM generate_series(1, 13) i;
INSERT INTO cdp.suppressions (address_type, address, reason) VALUES ('email', 'u03@shop.test', 'bounce');
SELECT cdp.create_segment('gold', $$tier = 'gold'$$);
SELECT cdp.create_segment('nobody', $$tier = 'platinum'$$);
CREATE FUNCTION who(pid bigint) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT value FROM cdp.identities WHERE type = 'email' AND profile_id = pid
$$;

-- Invalid definitions: clear errors naming what exists.
SELECT cdp.create_campaign(NULL, 'gold', 'email', 'summer');
SELECT cdp.create_campaign('x', NULL, 'email', 'summer');
SELECT cdp.create_campaign('', 'gold', 'email', 'summer');
SELECT cdp.create_campaign(repeat('x', 201), 'gold', 'email', 'summer');
SELECT cdp.create_campaign(E'a\nb', 'gold', 'email', 'summer');
SELECT cdp.create_campaign('x', 'platinum', 'email', 'summer');
SELECT cdp.create_campaign('x', 'gold', 'fax', 'summer');
SELECT cdp.create_campaign('x', 'gold', 'email', 'autumn');
SELECT cdp.create_campaign('x', 'gold', 'sms', 'summer');
SELECT cdp.create_campaign('x', 'gold', 'email', NULL);
SELECT cdp.create_campaign('x', 'gold', NULL, 'summer');
SELECT cdp.create_campaign('x', 'gold', 'email', 'summer', NULL);
SELECT cdp.create_campaign('x', 'gold', 'email', 'summer', '[1]');
SELECT cdp.create_campaign('x', 'gold', 'email', 'summer', '{"a":');
SELECT cdp.create_campaign('x', 'gold', 'email', 'summer', '{}', 101);
SELECT cdp.create_campaign('x', 'gold', 'email', 'summer', '{}', -1);
SELECT cdp.create_campaign('x', 'gold', 'email', 'summer', '{}', NULL);
SELECT count(*) AS campaigns FROM cdp.campaigns;

-- A campaign with a 25% holdout.
SELECT cdp.create_campaign('summer sale', 'gold', 'email', 'summer', '{"code": "SUN"}', 25) > 0 AS created;
SELECT cdp.create_campaign('summer sale', 'gold', 'email', 'summer');
SELECT name, segment, channel, template, payload, holdout, owner = 'postgres'::regrole AS mine,
       schedule, cron_job, created_at
FROM cdp.campaigns;

-- Run: every gold member is held out, enqueued or suppressed with why.
SELECT cdp.run_campaign('summer sale', 'june') AS run1 \gset
SELECT campaign, run_key, started_at, finished_at, audience, enqueued, held_out, suppressed
FROM cdp.campaign_runs WHERE run_id = :run1;
SELECT audience = enqueued + held_out
       + (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(suppressed)) AS adds_up
FROM cdp.campaign_runs WHERE run_id = :run1;
-- each gold member: held out ones have no message, the others exactly one
SELECT who(m.profile_id) AS who,
       ((hashtextextended('summer sale/' || m.profile_id, 0) % 100) + 100) % 100 < 25 AS held,
       o.status, o.reason, o.dedupe_key = 'campaign/summer sale/june/' || m.profile_id AS key_ok,
       o.payload
FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id)
LEFT JOIN cdp.outbox o ON o.profile_id = m.profile_id
WHERE s.name = 'gold' ORDER BY 1;
SELECT count(*) AS silver_messages FROM cdp.outbox o WHERE who(o.profile_id) >= 'u17';
SELECT rendered.body FROM cdp.claim('email', 1, '1 minute') rendered;

-- The same key again: the same run, nothing new.
SELECT count(*) AS messages FROM cdp.outbox \gset
SELECT cdp.run_campaign('summer sale', 'june') = :run1 AS same_run;
SELECT count(*) = :messages AS nothing_new FROM cdp.outbox;
SELECT count(*) AS runs FROM cdp.campaign_runs;

-- A new key sends again; the holdout is the same people.
SELECT cdp.run_campaign('summer sale', 'july') AS run2 \gset
SELECT :run2 <> :run1 AS new_run, audience, enqueued, held_out, suppressed
FROM cdp.campaign_runs WHERE run_id = :run2;
SELECT count(*) AS held_both_times FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id)
WHERE s.name = 'gold' AND NOT EXISTS (SELECT 1 FROM cdp.outbox o WHERE o.profile_id = m.profile_id);
SELECT (SELECT held_out FROM cdp.campaign_runs WHERE run_id = :run1) AS held_out_first;

-- No key: the minute of cdp.now() in UTC; a second start in that minute
-- (a pg_cron retry) is the same run, the next minute another.
SELECT cdp.run_campaign('summer sale') AS run3 \gset
SELECT run_key FROM cdp.campaign_runs WHERE run_id = :run3;
SET cdp.fake_now = '2026-06-01 09:30:59+00';
SELECT cdp.run_campaign('summer sale') = :run3 AS same_minute;
SET cdp.fake_now = '2026-06-01 09:31:00+00';
SELECT cdp.run_campaign('summer sale') <> :run3 AS next_minute;
SET cdp.fake_now = '2026-06-01 12:00:00+02';
SELECT cdp.run_campaign('summer sale') AS run4 \gset
SELECT run_key FROM cdp.campaign_runs WHERE run_id = :run4;
-- five runs: each person not held out has five messages, none twice
SELECT n AS messages_each, count(*) AS people
FROM (SELECT count(*) AS n, count(DISTINCT o.dedupe_key) AS keys FROM cdp.outbox o
      WHERE o.dedupe_key LIKE 'campaign/summer sale/%' GROUP BY o.profile_id) x
WHERE n = keys GROUP BY n;

-- Bad run arguments.
SELECT cdp.run_campaign(NULL);
SELECT cdp.run_campaign('winter sale');
SELECT cdp.run_campaign('summer sale', '');
SELECT cdp.run_campaign('summer sale', repeat('k', 101));
SELECT cdp.run_campaign('summer sale', E'tab\there');
-- a slash would make campaign/<name>/<key>/<profile> ambiguous
SELECT cdp.run_campaign('summer sale', '2026/06');

-- An empty audience is a run of zeros; a campaign with no message and no
-- runner is refused, and leaves no run behind.
SELECT cdp.create_campaign('nobody', 'nobody', 'email', 'winter') > 0 AS created;
SELECT cdp.run_campaign('nobody', 'k') AS r \gset
SELECT audience, enqueued, held_out, suppressed FROM cdp.campaign_runs WHERE run_id = :r;
-- its segment dropped since: a clear error
SELECT cdp.drop_segment('nobody');
SELECT cdp.run_campaign('nobody', 'k2');
SELECT cdp.create_campaign('offers only', 'gold') > 0 AS created;
SELECT channel, template FROM cdp.campaigns WHERE name = 'offers only';
SELECT cdp.run_campaign('offers only', 'k');
SELECT count(*) AS offers_runs FROM cdp.campaign_runs WHERE campaign = 'offers only';

-- A template dropped since: the run fails whole.
SELECT cdp.create_campaign('pinged', 'gold', 'sms', 'ping') > 0 AS created;
DELETE FROM cdp.templates WHERE name = 'ping';
SELECT cdp.run_campaign('pinged', 'k');
SELECT count(*) AS pinged_runs FROM cdp.campaign_runs WHERE campaign = 'pinged';
SELECT cdp.drop_campaign('pinged');

-- The owner's rights: a campaign made by an admin who later lost cdp_admin
-- cannot send.
CREATE ROLE regress_camp_admin IN ROLE cdp_admin;
SET ROLE regress_camp_admin;
SELECT cdp.create_campaign('admin''s', 'gold', 'email', 'winter') > 0 AS created;
SELECT cdp.run_campaign('admin''s', 'one') AS r \gset
SELECT audience, enqueued FROM cdp.campaign_runs WHERE run_id = :r;
RESET ROLE;
SELECT owner = 'regress_camp_admin'::regrole AS owned FROM cdp.campaigns WHERE name = 'admin''s';
REVOKE cdp_admin FROM regress_camp_admin;
SELECT cdp.run_campaign('admin''s', 'two');
SELECT cdp.drop_campaign('admin''s');
SET ROLE regress_camp_admin;
SELECT cdp.create_campaign('again', 'gold', 'email', 'winter');
RESET ROLE;
-- a creator that no longer exists
GRANT cdp_admin TO regress_camp_admin;
SET ROLE regress_camp_admin;
SELECT cdp.create_campaign('orphan', 'gold', 'email', 'winter') > 0 AS created;
RESET ROLE;
DROP ROLE regress_camp_admin;
SELECT cdp.run_campaign('orphan', 'k');
SELECT cdp.drop_campaign('orphan');

-- Scheduling without pg_cron in this database: a clear error.
SELECT cdp.schedule_campaign('summer sale', '0 9 * * 1');
SELECT cdp.unschedule_campaign('summer sale') AS had_one;

-- With pg_cron: a job named after the campaign, its name quoted.
SET client_min_messages = warning;
CREATE EXTENSION pg_cron;
RESET client_min_messages;
SELECT cdp.create_campaign('l''été "caliente"; DROP TABLE x; --', 'gold', 'email', 'summer') > 0 AS created;
SELECT cdp.schedule_campaign('l''été "caliente"; DROP TABLE x; --', '0 9 * * 1') AS job \gset
SELECT jobname, schedule, command, database = current_database() AS here
FROM cron.job WHERE jobid = :job;
SELECT schedule, cron_job = :job AS recorded FROM cdp.campaigns WHERE name LIKE 'l''été%';
-- re-scheduling replaces the job
SELECT cdp.schedule_campaign('l''été "caliente"; DROP TABLE x; --', '*/5 * * * *') AS job2 \gset
SELECT count(*) AS jobs, min(schedule) AS schedule FROM cron.job;
SELECT schedule, cron_job = :job2 AS recorded FROM cdp.campaigns WHERE name LIKE 'l''été%';
-- the command runs the campaign (as pg_cron would)
SELECT command AS cmd FROM cron.job WHERE jobid = :job2 \gset
:cmd \gset
SELECT :run_campaign > 0 AS ran;
SELECT count(*) AS runs FROM cdp.campaign_runs WHERE campaign LIKE 'l''été%';
-- bad schedules
SELECT cdp.schedule_campaign('summer sale', 'every tuesday');
SELECT cdp.schedule_campaign('summer sale', NULL);
SELECT cdp.schedule_campaign(NULL, '* * * * *');
SELECT cdp.schedule_campaign('no such', '* * * * *');
SELECT cdp.unschedule_campaign('no such');
-- unschedule, and drop a scheduled campaign: its job goes too
SELECT cdp.schedule_campaign('summer sale', '0 8 * * *') > 0 AS scheduled;
SELECT cdp.unschedule_campaign('summer sale') AS had_one;
SELECT cdp.unschedule_campaign('summer sale') AS had_one;
SELECT jobname FROM cron.job ORDER BY 1;
SELECT cdp.drop_campaign('l''été "caliente"; DROP TABLE x; --');
SELECT count(*) AS jobs FROM cron.job;
SELECT cdp.drop_campaign('l''été "caliente"; DROP TABLE x; --');
SELECT cdp.drop_campaign(NULL);
-- runs stay after a drop; the job of a campaign whose job was removed by
-- hand unschedules quietly
SELECT count(*) > 0 AS runs_kept FROM cdp.campaign_runs WHERE campaign LIKE 'l''été%';
SELECT cdp.schedule_campaign('summer sale', '0 8 * * *') AS job3 \gset
SELECT cron.unschedule(:job3);
SELECT cdp.unschedule_campaign('summer sale') AS had_one;
SET client_min_messages = warning;
DROP EXTENSION pg_cron;
RESET client_min_messages;

-- Analysts read campaigns and runs, and cannot run them.
CREATE ROLE regress_camp_analyst IN ROLE cdp_analyst;
SET ROLE regress_camp_analyst;
SELECT count(*) > 0 AS can_read FROM cdp.campaign_runs;
SELECT cdp.run_campaign('summer sale', 'analyst');
RESET ROLE;
DROP ROLE regress_camp_analyst;

DROP FUNCTION who(bigint);
SELECT cdp.drop_campaign(name) FROM cdp.campaigns ORDER BY name;
RESET cdp.fake_now;
