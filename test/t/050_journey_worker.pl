# Journeys and the worker: it advances due states by itself, waking at the
# next due time rather than on its nap (cdp.naptime is a minute here); an
# immediate stop in the middle of a large batch of due states skips no
# step, runs none twice and enqueues no message twice; and a wait of two
# seconds is claimable soon after its due time (the latency is printed).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use CdpTestNode;

my $node = cdp_node('journeys', "cdp.naptime = '60s'\ncdp.journey_batch_size = 20\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('hook', 'webhook', 'crm', false),
    ('bulk', 'webhook', 'crm', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('t', 'hook', 'n={{payload.n}}'),
    ('a', 'bulk', 'a'), ('b', 'bulk', 'b');
SELECT cdp.create_trigger('two seconds', 'Ping', NULL, '2 seconds', 'hook', 't');
});
# the worker settles into its minute-long nap
ok($node->poll_query_until('postgres', "SELECT rounds >= 2 FROM cdp.worker_status()"),
	'the worker runs');

# Latency: events a fifth of a second apart; each message is claimed as soon
# as it can be, and its latency is the claim's time minus the due time.
my $n = 10;
my $s = $node->background_psql('postgres');
for my $i (1 .. $n)
{
	$s->query_safe("SELECT cdp.track(jsonb_build_object('user_id', 'ping$i'), 'Ping', jsonb_build_object('n', $i))");
	usleep(200_000);
}
my @latency;
for (1 .. 3000)
{
	my $out = $s->query_safe(q{
SELECT round(extract(epoch FROM clock_timestamp() - (s.entered_at + interval '2 seconds')) * 1000, 1)
FROM cdp.claim('hook', 10, '1 minute') c
JOIN cdp.journey_log l ON l.outbox_id = c.outbox_id
JOIN cdp.journey_states s ON s.state_id = l.state_id});
	push @latency, grep { /\S/ } split /\n/, $out;
	last if @latency >= $n;
	usleep(2_000);
}
is(scalar(@latency), $n, 'every message of a two-second wait was claimed');
@latency = sort { $a <=> $b } @latency;
diag("two-second wait, claimable after its due time: min $latency[0] ms, max $latency[-1] ms, "
	  . "median $latency[int($n / 2)] ms (cdp.naptime 60 s)");
ok($latency[0] >= 0, 'no message before its due time');
ok($latency[-1] < 1000, 'every message within a second of its due time, not after the nap');
$s->quit;

# A large batch of due states: 3000 profiles enter at once, due together
# three seconds later, and the worker takes them 20 at a time.
my $total = 3000;
$node->safe_psql('postgres', q{
SELECT cdp.create_journey('bulk', '{
  "entry": {"event": "Bulk"}, "reentry": "never",
  "steps": [
    {"name": "soon", "kind": "wait", "for": "3 seconds", "next": "first"},
    {"name": "first", "kind": "send", "channel": "bulk", "template": "a", "next": "pause"},
    {"name": "pause", "kind": "wait", "for": "1 second", "next": "second"},
    {"name": "second", "kind": "send", "channel": "bulk", "template": "b"}]}');
SELECT cdp.start_journey('bulk');
});
$node->safe_psql('postgres', qq{
SELECT count(cdp.track(jsonb_build_object('user_id', 'bulk' || g), 'Bulk')) FROM generate_series(1, $total) g;
});
ok($node->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM cdp.journey_log WHERE journey = 'bulk' AND why = 'sent'}, 't'),
	'the worker started on the batch');
$node->stop('immediate');
$node->start;
my $done_at_crash = $node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.journey_log WHERE journey = 'bulk' AND why = 'sent'});
diag("sends logged when the server stopped: $done_at_crash of " . 2 * $total);
ok($done_at_crash < 2 * $total, 'the stop came in the middle of the work');

ok($node->poll_query_until('postgres', q{
SELECT count(*) = 0 FROM cdp.journey_states WHERE journey = 'bulk' AND status = 'active'}),
	'after the restart the worker finished every state');
is($node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE why = 'completed') || ' ' || count(*) FROM cdp.journey_states
WHERE journey = 'bulk'}), "$total $total", 'every state completed');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT 1 FROM cdp.journey_log WHERE journey = 'bulk'
                      GROUP BY state_id, from_step, to_step HAVING count(*) > 1) x}),
	'0', 'no step ran twice');
is($node->safe_psql('postgres', q{
SELECT string_agg(why || '=' || n, ' ' ORDER BY why) FROM (
    SELECT why, count(*) AS n FROM cdp.journey_log WHERE journey = 'bulk' GROUP BY 1) x}),
	"entered=$total sent=" . 2 * $total . " waited=" . 2 * $total,
	'no step skipped: each state entered, waited twice, sent twice');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT 1 FROM cdp.outbox WHERE channel = 'bulk'
                      GROUP BY dedupe_key HAVING count(*) > 1) x}),
	'0', 'no dedupe key enqueued twice');
is($node->safe_psql('postgres', q{
SELECT count(*) || ' ' || count(DISTINCT o.outbox_id) FROM cdp.journey_log l
JOIN cdp.outbox o USING (outbox_id) WHERE l.journey = 'bulk'}),
	2 * $total . ' ' . 2 * $total, 'every send logged with its own message');
is($node->safe_psql('postgres', q{
SELECT string_agg(template || '=' || n, ' ' ORDER BY template) FROM (
    SELECT template, count(*) AS n FROM cdp.outbox WHERE channel = 'bulk' GROUP BY 1) x}),
	"a=$total b=$total", 'one message of each template per profile');

$node->stop;
done_testing();
