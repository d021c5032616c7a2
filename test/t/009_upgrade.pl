# Upgrades: 0.1.0 stays installable, and ALTER EXTENSION pg_cdp UPDATE from
# it, with data in it, gives the schema a fresh install has, with the data
# still there and usable.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

# No worker in these databases: cdp.database serves 'postgres' only.
my $node = cdp_node('upgrade', "cdp.naptime = 100\n");
my $version = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'pg_cdp'");
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');

# The same data in both, loaded before the upgrade in one of them.
my $data = q{
SELECT cdp.create_event_partitions('2026-01-01', 3);
INSERT INTO cdp.identifier_types (type, max_per_profile, priority) VALUES ('crm_id', 1, 5);
SELECT cdp.create_source('web', 'web-write-key-0123456789') IS NOT NULL;
SELECT cdp.track('{"cookie": "c-1"}', 'Viewed', '{}', '2026-02-10 10:00+00', 'web', 'e-1');
SELECT cdp.track('{"email": "ann@shop.test", "crm_id": "CRM-1"}', 'Called', '{}', '2026-03-01 10:00+00', 'call_center', 'e-2');
SELECT cdp.track('{"cookie": "c-1", "email": "ann@shop.test"}', 'Linked', '{}', '2026-03-02 10:00+00', 'web', 'e-3');
SELECT cdp.identify('{"email": "ann@shop.test"}', '{"name": "Ann"}', '2026-03-03 10:00+00');
SELECT cdp.track('{"cookie": "c-2"}', 'Other', '{}', '2026-03-04 10:00+00', 'web', 'e-4');
INSERT INTO cdp.inbox (message, source) VALUES
  ('{"type": "track", "userId": "u-9", "event": "Queued", "messageId": "q-1"}', 'web'),
  ('not json', NULL);
};
$node->safe_psql('upgraded', "CREATE EXTENSION pg_cdp VERSION '0.1.0'; $data");
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'pg_cdp'"),
	'0.1.0', '0.1.0 is still installable');

my ($ret, $out, $err) = $node->psql('upgraded', 'ALTER EXTENSION pg_cdp UPDATE');
is($ret, 0, 'ALTER EXTENSION pg_cdp UPDATE succeeds');
like($err, qr/sources without a writer role/, 'the upgrade warns about sources that need a writer');
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'pg_cdp'"),
	$version, "upgraded to $version");
# cluster-wide, so checked before a fresh install grants it too
is($node->safe_psql('upgraded', "SELECT has_parameter_privilege('cdp_admin', 'cdp.fake_now', 'SET')"),
	't', 'the upgrade lets cdp_admin set cdp.fake_now');
$node->safe_psql('fresh', "CREATE EXTENSION pg_cdp; $data");

# The schemas are the same: a binary-upgrade dump lists every member of the
# extension, with its grants and comments; object identifiers differ.
sub schema
{
	my ($db) = @_;
	my $out = `pg_dump --schema-only --binary-upgrade -d "@{[ $node->connstr($db) ]}" 2>&1`;
	# what differs between any two databases: object ids, xid horizons
	$out =~ s/UPDATE pg_catalog\.pg_class\s+SET relfrozenxid[^;]*;//g;
	$out =~ s/'\{[0-9,]+\}'/'{oids}'/g;
	my @keep = grep { !/binary_upgrade_set_|^--|^\s*$|^\\(un)?restrict / } split /\n/, $out;
	return join("\n", @keep);
}
my $fresh = schema('fresh');
my $upgraded = schema('upgraded');
ok(length($fresh) > 10000, 'the dump lists the extension\'s objects');
if ($fresh eq $upgraded)
{
	pass('the upgraded schema equals a fresh install');
}
else
{
	my $f = PostgreSQL::Test::Utils::tempdir() . '/schema';
	open(my $a, '>', "$f.fresh");
	print $a $fresh;
	close $a;
	open(my $b, '>', "$f.upgraded");
	print $b $upgraded;
	close $b;
	diag(`diff -u $f.fresh $f.upgraded | head -80`);
	fail('the upgraded schema equals a fresh install');
}

# Comments too (a binary-upgrade dump leaves out those of extension members).
my $comments = q{
SELECT string_agg(format('%s %s %s', classoid::regclass, objsubid, description), E'\n' ORDER BY 1)
FROM (SELECT classoid, objoid, objsubid, description,
             CASE classoid WHEN 'pg_proc'::regclass THEN objoid::regprocedure::text
                           WHEN 'pg_class'::regclass THEN objoid::regclass::text
                           ELSE objoid::text END AS name
      FROM pg_description
      WHERE classoid IN ('pg_proc'::regclass, 'pg_class'::regclass)) d
WHERE name LIKE 'cdp.%'};
$comments =~ s/ORDER BY 1\)/ORDER BY name, objsubid)/;
is($node->safe_psql('upgraded', $comments), $node->safe_psql('fresh', $comments),
	'the comments are the same');

# The data survived and the upgraded database works as a fresh one does.
my $snapshot = q{
SELECT (SELECT count(*) FROM cdp.profiles) || ' ' || (SELECT count(*) FROM cdp.identities) || ' '
    || (SELECT count(*) FROM cdp.events) || ' ' || (SELECT count(*) FROM cdp.message_ids) || ' '
    || (SELECT count(*) FROM cdp.merges) || ' ' || (SELECT count(*) FROM cdp.inbox) || ' '
    || (SELECT traits::text FROM cdp.profiles WHERE profile_id = cdp.resolve('{"cookie": "c-1"}'))};
is($node->safe_psql('upgraded', $snapshot), $node->safe_psql('fresh', $snapshot), 'the data is there');
my $after = q{
SELECT cdp.tick()->'inbox';
SELECT cdp.track('{"cookie": "c-2", "email": "ann@shop.test"}', 'Merged Later', '{}', '2026-03-05 10:00+00', 'web', 'e-5')
     = cdp.resolve('{"cookie": "c-1"}');
SELECT cdp.unmerge(max(merge_id)) > 0 FROM cdp.merges;
SELECT cdp.forget('{"cookie": "c-2"}')->>'profiles';
SELECT count(*) FROM cdp.events_2026_03;
};
is($node->safe_psql('upgraded', $after), $node->safe_psql('fresh', $after),
	'the upgraded database drains, merges, unmerges and forgets as a fresh one');
is($node->safe_psql('upgraded', $snapshot), $node->safe_psql('fresh', $snapshot), 'and ends in the same state');
# the queued row, loaded before the upgrade by a superuser, was accepted
is($node->safe_psql('upgraded', "SELECT count(*) FROM cdp.events WHERE event_id = 'q-1'"), '1',
	'a row queued under 0.1.0 is drained after the upgrade');

$node->stop;
done_testing();
