# Backups keep everything: pg_dump of a database using pg_cdp, restored
# into a new database, has the same profiles, identities, events (in their
# monthly partitions and the default one), message ids, merges, sources,
# rejects and added identifier types; the sequences continue after the
# restored ids, and re-sent message ids are still recognised.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $node = cdp_node('dump', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
SELECT cdp.create_event_partitions('2026-01-01', 3);
INSERT INTO cdp.identifier_types (type, max_per_profile, priority) VALUES ('crm_id', 1, 5);
SELECT cdp.create_source('web', 'web-write-key-0123456789');
SELECT cdp.track('{"cookie": "c-1"}', 'Viewed', '{}', '2026-02-10 10:00+00', 'web', 'e-1');
SELECT cdp.track('{"email": "ann@shop.test", "crm_id": "CRM-1"}', 'Called', '{}', '2026-03-01 10:00+00', 'call_center', 'e-2');
SELECT cdp.track('{"cookie": "c-1", "email": "ann@shop.test"}', 'Linked', '{}', '2026-03-02 10:00+00', 'web', 'e-3');
SELECT cdp.identify('{"email": "ann@shop.test"}', '{"name": "Ann"}', '2026-03-03 10:00+00');
SELECT cdp.track('{"cookie": "c-9"}', 'Ancient', '{}', '1900-01-01 00:00+00', NULL, 'e-old');
INSERT INTO cdp.inbox (message) VALUES ('not json');
});
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox') or die 'inbox not drained';

my $snapshot = q{
SELECT (SELECT count(*) FROM cdp.profiles) || ' ' || (SELECT count(*) FROM cdp.identities) || ' '
    || (SELECT count(*) FROM cdp.events) || ' ' || (SELECT count(*) FROM cdp.message_ids) || ' '
    || (SELECT count(*) FROM cdp.merges) || ' ' || (SELECT count(*) FROM cdp.sources) || ' '
    || (SELECT count(*) FROM cdp.inbox_rejects) || ' ' || (SELECT count(*) FROM cdp.identifier_types) || ' '
    || (SELECT string_agg(p.traits::text, ',' ORDER BY p.profile_id) FROM cdp.profiles p)};
my $before = $node->safe_psql('postgres', $snapshot);
like($before, qr/^2 4 5 4 1 1 1 8 /, "the data before the dump: $before");

my $dump = $node->basedir . '/cdp.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ], 'pg_restore');

is($node->safe_psql('restored', $snapshot), $before, 'the same data after the restore');
is($node->safe_psql('restored', q{SELECT string_agg(tableoid::regclass::text || ':' || event_id, ',' ORDER BY event_id) FROM cdp.events}),
	'cdp.events_2026_02:e-1,cdp.events_2026_03:e-2,cdp.events_2026_03:e-3,cdp.events_default:e-old,'
	  . 'cdp.events_2026_03:' . $node->safe_psql('postgres', q{SELECT event_id FROM cdp.events WHERE type = 'identify'}),
	'events in the same partitions');
is($node->safe_psql('restored', q{SELECT cdp.resolve('{"crm_id": "CRM-1"}') = cdp.resolve('{"cookie": "c-1"}')}), 't',
	'the added identifier type and the merged identities work');
is($node->safe_psql('restored', q{SELECT cdp.track('{"cookie": "someone"}', 'x', '{}', NULL, NULL, 'e-1')
	= cdp.resolve('{"cookie": "c-1"}')}), 't', 'a re-sent message id is still recognised');
my $max_id = $node->safe_psql('restored', q{SELECT greatest((SELECT max(profile_id) FROM cdp.profiles), (SELECT max(loser_id) FROM cdp.merges))});
cmp_ok($node->safe_psql('restored', q{SELECT cdp.track('{"cookie": "new-person"}', 'x')}), '>', $max_id,
	'the profile sequence continues after the restored ids');
is($node->safe_psql('restored', q{SELECT cdp.unmerge((SELECT min(merge_id) FROM cdp.merges)) IS NOT NULL}), 't',
	'a restored merge can be undone');

$node->stop;
done_testing();
