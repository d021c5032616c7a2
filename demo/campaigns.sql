-- demo/campaigns.sql: a weekly win-back campaign to the lapsed segment,
-- scheduled through pg_cron and run once by hand.
\pset footer off
\pset null '-'
SET client_min_messages = warning;

\echo
\echo '== campaigns: the lapsed segment gets a win-back email every Monday, 10% held out'
CREATE EXTENSION IF NOT EXISTS pg_cron;
SELECT cdp.create_campaign('winback', 'lapsed', 'email', 'ten_off', '{"code": "COMEBACK"}',
                           holdout => 10) AS campaign_id;
SELECT cdp.schedule_campaign('winback', '0 9 * * 1') AS cron_job;
SELECT jobname, schedule, command FROM cron.job WHERE jobname = 'cdp campaign winback';
\echo '-- run once now (its key: this minute in UTC); a second run in the same minute sends nothing'
SELECT cdp.run_campaign('winback') AS run \gset
SELECT cdp.run_campaign('winback') = :run AS same_run;
SELECT campaign, run_key, audience, enqueued, held_out, suppressed
FROM cdp.campaign_runs WHERE run_id = :run;
\echo '-- why some members got nothing: the policy''s reasons, per message'
SELECT status, reason, count(*) FROM cdp.outbox
WHERE dedupe_key LIKE 'campaign/winback/%' GROUP BY status, reason ORDER BY count(*) DESC;
