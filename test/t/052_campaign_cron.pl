# A campaign scheduled with cdp.schedule_campaign runs from pg_cron's own
# scheduler: within a minute or two a run appears in cdp.campaign_runs,
# keyed by the minute it started, with every member's message enqueued
# once under the run's dedupe keys. Unscheduling removes the job.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $node = cdp_node('campaign_cron');
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE EXTENSION pg_cron;
INSERT INTO cdp.channels (name, kind, requires_consent) VALUES ('hook', 'webhook', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('hello', 'hook', 'Hello {{payload.code}}');
SELECT cdp.declare_trait('tier', 'text');
SELECT count(cdp.identify(jsonb_build_object('user_id', 'u' || g),
                          jsonb_build_object('tier', CASE WHEN g <= 3 THEN 'gold' ELSE 'silver' END)))
FROM generate_series(1, 5) g;
SELECT cdp.create_segment('gold', $$tier = 'gold'$$);
SELECT cdp.create_campaign('weekly gold', 'gold', 'hook', 'hello', '{"code": "G1"}');
});
# the worker keeps the segment: three members
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id) WHERE s.name = 'gold'"),
	'the segment has its three members');

my $job = $node->safe_psql('postgres', "SELECT cdp.schedule_campaign('weekly gold', '* * * * *')");
ok($job > 0, 'scheduled through pg_cron');
is($node->safe_psql('postgres', "SELECT jobname || ' ' || schedule FROM cron.job WHERE jobid = $job"),
	'cdp campaign weekly gold * * * * *', 'the job is named for the campaign');

# pg_cron starts jobs at the top of a minute: wait for the first run.
ok($node->poll_query_until('postgres',
		"SELECT count(*) >= 1 FROM cdp.campaign_runs WHERE campaign = 'weekly gold' AND finished_at IS NOT NULL"),
	'pg_cron ran the campaign');
my ($key, $audience, $enqueued) = split /\|/, $node->safe_psql('postgres',
	"SELECT run_key, audience, enqueued FROM cdp.campaign_runs WHERE campaign = 'weekly gold' ORDER BY run_id LIMIT 1");
like($key, qr/^\d{4}-\d\d-\d\dT\d\d:\d\dZ$/, "the run's key is its minute ($key)");
is("$audience|$enqueued", '3|3', 'every member got the message');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM cdp.outbox WHERE dedupe_key LIKE 'campaign/weekly gold/' || '$key' || '/%'"),
	'3', "the run's messages carry its dedupe keys");

ok($node->safe_psql('postgres', "SELECT cdp.unschedule_campaign('weekly gold')") eq 't', 'unscheduled');
is($node->safe_psql('postgres', "SELECT count(*) FROM cron.job"), '0', 'the job is gone');

$node->stop;
done_testing();
