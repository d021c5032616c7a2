# CdpTestNode: a PostgreSQL::Test::Cluster node with pg_cdp and pg_cron
# preloaded and the pg_cdp worker serving the postgres database, as every
# TAP test of pg_cdp needs one.
package CdpTestNode;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use HTTP::Tiny;
use IPC::Run;
use Time::HiRes qw(usleep);

our @EXPORT = qw(cdp_node start_collector);

# Events, identities and message ids pointing at a profile that is gone:
# what a merge, unmerge or erasure racing the drainers must never leave.
our $ORPHANS = q{
SELECT (SELECT count(*) FROM cdp.events e
        WHERE NOT EXISTS (SELECT FROM cdp.profiles p WHERE p.profile_id = e.profile_id))
     + (SELECT count(*) FROM cdp.identities i
        WHERE NOT EXISTS (SELECT FROM cdp.profiles p WHERE p.profile_id = i.profile_id))
     + (SELECT count(*) FROM cdp.message_ids d
        WHERE NOT EXISTS (SELECT FROM cdp.profiles p WHERE p.profile_id = d.profile_id))};

# cdp_node(name, extra postgresql.conf text): a started node.
sub cdp_node
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cdp,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
cdp.database = 'postgres'
} . ($extra // ''));
	$node->start;
	return $node;
}

# start_collector(node, extra options...): pg_cdp_collector on a free port,
# connected as the role "collector" (which the test creates), answering
# /health. Returns (harness, base URL, conninfo, \stdout, \stderr).
sub start_collector
{
	my ($node, @extra) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $base = "http://127.0.0.1:$port";
	my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=collector';
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'pg_cdp_collector', '--port', $port, '--dbname', $conninfo, @extra ],
		'>', \$out, '2>', \$err);
	my $http = HTTP::Tiny->new(timeout => 10);
	for (1 .. 50) { last if $http->get("$base/health")->{success}; usleep(100_000); }
	return ($h, $base, $conninfo, \$out, \$err);
}

1;
