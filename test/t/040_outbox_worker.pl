# The outbox and the worker: an expired lease goes back to pending and the
# channel's connectors are notified; a retry that comes due is notified;
# finished messages are removed once cdp.outbox_retention has passed; and
# leases survive an immediate stop, expiring after the restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use CdpTestNode;

my $node = cdp_node('outbox', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('hook', 'webhook', 'crm', false);
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('later', 'webhook', 'crm', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('t', 'hook', 'n={{payload.n}}'), ('u', 'later', 'x');
SELECT count(cdp.enqueue(cdp.identify(jsonb_build_object('user_id', 'p' || g)), 'hook', 't',
                         jsonb_build_object('n', g))) FROM generate_series(1, 3) g;
});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN cdp_outbox');

# Polls the listener until it heard of the channel (psql prints what it
# heard after each statement).
sub heard
{
	my ($channel) = @_;
	for (1 .. 600)
	{
		my $out = $listener->query('SELECT 1');
		return 1 if $out =~ /Asynchronous notification "cdp_outbox" with payload "\Q$channel\E"/;
		usleep(50_000);
	}
	return 0;
}

# A connector claims with a short lease and goes away.
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.claim('hook', 10, '1 second')"),
	'3', 'three messages leased');
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 3 FROM cdp.outbox WHERE status = 'pending' AND reason = 'lease expired'}),
	'the worker returned the expired leases');
ok(heard('hook'), 'and notified the channel');
is($node->safe_psql('postgres', q{
SELECT string_agg(body, ',' ORDER BY body) FROM cdp.claim('hook', 10, '2 seconds')}),
	'n=1,n=2,n=3', 'another connector claims them again');

# A message for later, and a retry, become due: the worker notifies.
$node->safe_psql('postgres', q{
SELECT cdp.enqueue(cdp.identify('{"user_id": "r"}'), 'later', 'u', '{}', now() + interval '2 seconds');
});
ok(heard('later'), 'the worker notified when the message came due');
$node->safe_psql('postgres', q{
SELECT cdp.fail(outbox_id, 'busy', '2 seconds') FROM cdp.claim('later', 10, '1 minute');
});
is($node->safe_psql('postgres', "SELECT status FROM cdp.outbox WHERE channel = 'later'"),
	'retry', 'the failure waits to retry');
ok(heard('later'), 'the worker notified when the retry came due');

# Leases survive an immediate stop and expire after the restart.
$listener->quit;
$node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.claim('later', 10, '10 seconds');
});
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', "SELECT status FROM cdp.outbox WHERE channel = 'later'"),
	'leased', 'the lease survived the crash');
ok($node->poll_query_until('postgres', q{
SELECT status = 'pending' FROM cdp.outbox WHERE channel = 'later'}),
	'and expired after the restart');

# Retention: finished messages go, unfinished ones stay.
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 3 FROM cdp.outbox WHERE channel = 'hook' AND status = 'pending'}),
	'the second leases expired too');
$node->safe_psql('postgres', q{
SELECT cdp.ack(array_agg(outbox_id)) FROM cdp.claim('hook', 10, '1 minute');
});
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.outbox WHERE status = 'delivered'"),
	'3', 'three delivered');
$node->safe_psql('postgres', "ALTER SYSTEM SET cdp.outbox_retention = '2 seconds'");
$node->reload;
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 0 FROM cdp.outbox WHERE status = 'delivered'}),
	'the worker removed the delivered messages after the retention');
is($node->safe_psql('postgres', "SELECT status FROM cdp.outbox"), 'pending',
	'the pending one stays');

$node->stop;
done_testing();
