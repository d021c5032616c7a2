# Crash safety of the bulk path: the server is killed (immediate stop, no
# checkpoint) while the worker drains a 200,000-row inbox. After restart the
# worker finishes, and every row is exactly one event or one reject: none
# twice, none missing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $rows = 200_000;
my $node = cdp_node('crash', "cdp.naptime = 200\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');

# Every 500th row is malformed; each row carries a unique id either way.
$node->safe_psql('postgres', qq{
INSERT INTO cdp.inbox (message)
SELECT CASE WHEN g % 500 = 0 THEN 'broken c-' || g
       ELSE json_build_object('type', 'track', 'event', 'Viewed', 'messageId', 'c-' || g,
                              'anonymousId', 'a-' || (g % 40000),
                              'userId', CASE WHEN g % 4 = 0 THEN 'u-' || (g % 40000) END,
                              'properties', json_build_object('n', g))::text END
FROM generate_series(1, $rows) g;
});

# Wait until the drain is under way, then pull the plug.
ok($node->poll_query_until('postgres', 'SELECT count(*) > 20000 FROM cdp.events'),
	'the worker is draining');
$node->stop('immediate');
$node->start;

my $mid = $node->safe_psql('postgres', 'SELECT count(*) FROM cdp.inbox');
cmp_ok($mid, '>', 0, "the crash interrupted the drain ($mid rows left)");

ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox', 't'),
	'the worker finished after the restart');

is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
    SELECT event_id AS id FROM cdp.events
    UNION ALL
    SELECT substring(message FROM 'c-[0-9]+') FROM cdp.inbox_rejects) t}),
	$rows, 'as many events and rejects as inbox rows');
is($node->safe_psql('postgres', q{
SELECT count(DISTINCT id) FROM (
    SELECT event_id AS id FROM cdp.events
    UNION ALL
    SELECT substring(message FROM 'c-[0-9]+') FROM cdp.inbox_rejects) t}),
	$rows, 'none twice, none missing');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.inbox_rejects'),
	$rows / 500, 'exactly the malformed rows were rejected');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.events e
WHERE NOT EXISTS (SELECT 1 FROM cdp.profiles p WHERE p.profile_id = e.profile_id)}),
	'0', 'no event points at a missing profile');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.identities i
WHERE NOT EXISTS (SELECT 1 FROM cdp.profiles p WHERE p.profile_id = i.profile_id)}),
	'0', 'no identity points at a missing profile');

$node->stop;
done_testing();
