# cdp.tick() called in a loop (as a pg_cron job or a script would) while the
# worker's two drainers drain a large inbox whose messages merge profiles:
# no call may deadlock, neither the tick's caller nor the drainers, and
# every message still ends as exactly one event.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use CdpTestNode;

my $rows = 300_000;
my $node = cdp_node('tick_beside_worker',
	"cdp.naptime = 100\ncdp.batch_size = 2000\ncdp.drain_workers = 2\nlog_lock_waits = on\ndeadlock_timeout = 100ms\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');

# The worker pauses while the inbox fills, so the drainers and the tick
# start on a full inbox together.
$node->append_conf('postgresql.conf', "cdp.worker_enabled = off\n");
$node->reload;
# 6000 people seen under two anonymous ids each; a user id, sent now and
# then with either, merges the two profiles while batches are in flight.
$node->safe_psql('postgres', qq{
INSERT INTO cdp.inbox (message)
SELECT json_build_object('type', 'track', 'event', 'Viewed', 'messageId', 't-' || g,
                         'anonymousId', 'a-' || (g % 12000),
                         'userId', CASE WHEN g % 7 = 0 THEN 'u-' || (g % 6000) END)::text
FROM generate_series(1, $rows) g;
});
$node->append_conf('postgresql.conf', "cdp.worker_enabled = on\n");
$node->reload;

my $calls = 0;
my $failed = 0;
my @errors;
while ($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM cdp.inbox') eq 't')
{
	my ($ret, $out, $err) = $node->psql('postgres', 'SET cdp.batch_size = 500; SELECT cdp.tick()');
	$calls++;
	if ($ret != 0)
	{
		$failed++;
		push @errors, $err;
	}
	last if $calls >= 400;
}
note("tick calls: $calls, failed: $failed");
cmp_ok($calls, '>=', 5, "cdp.tick() was called $calls times while the drainers drained");
is($failed, 0, 'no cdp.tick() call failed') or diag(join("\n", @errors[0 .. ($#errors < 4 ? $#errors : 4)]));
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'), 'the inbox is empty');
is($node->safe_psql('postgres', "SELECT errors FROM cdp.worker_status()"), '0',
	'no round of the drainers failed');
my $log = slurp_file($node->logfile);
my $deadlocks = () = $log =~ /deadlock detected/g;
is($deadlocks, 0, 'the server log reports no deadlock');
is($node->safe_psql('postgres', q{SELECT count(DISTINCT event_id) FROM cdp.events WHERE event_id LIKE 't-%'}),
	$rows, 'each message is one event');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.events'), $rows, 'none twice');
is($node->safe_psql('postgres', $CdpTestNode::ORPHANS), '0', 'nothing points at a retired profile');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.profiles'), '6000', 'one profile per person');

$node->stop;
done_testing();
