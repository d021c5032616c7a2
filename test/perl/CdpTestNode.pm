# CdpTestNode: a PostgreSQL::Test::Cluster node with pg_cdp and pg_cron
# preloaded and the pg_cdp worker serving the postgres database, as every
# TAP test of pg_cdp needs one.
package CdpTestNode;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(cdp_node);

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

1;
