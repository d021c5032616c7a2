# Computed traits and the worker: a new trait is backfilled over existing
# history in batches while events keep arriving, an immediate stop in the
# middle of the backfill leaves it to finish after the restart with exact
# values, and windowed traits decay with no event once the clock moves.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $node = cdp_node('traits', "cdp.naptime = 100\ncdp.trait_batch_size = 50\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');
$node->safe_psql('postgres', "ALTER SYSTEM SET cdp.fake_now = '2026-06-01 12:00:00+00'");
$node->reload;

# 4,000 people's history, through the inbox.
$node->safe_psql('postgres', q{
SELECT cdp.create_event_partitions('2026-01-01', 7);
INSERT INTO cdp.inbox (message)
SELECT json_build_object('type', 'track', 'event', CASE WHEN g % 3 = 0 THEN 'Order Completed' ELSE 'Product Viewed' END,
                         'messageId', 'h-' || g, 'userId', 'u-' || (g % 4000),
                         'properties', json_build_object('amount', g % 97),
                         'timestamp', timestamptz '2026-06-01 12:00:00+00' - (g % 300) * interval '1 hour')::text
FROM generate_series(1, 20000) g;
});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'), 'history drained');

my $oracle = q{
SELECT count(*) FROM cdp.customers c
WHERE c.orders IS DISTINCT FROM (SELECT count(*) FROM cdp.events e
                                  WHERE e.profile_id = c.profile_id AND e.event = 'Order Completed')
   OR c.spent IS DISTINCT FROM (SELECT sum((e.properties->>'amount')::numeric) FROM cdp.events e
                                 WHERE e.profile_id = c.profile_id AND e.event = 'Order Completed')
   OR c.views_2h IS DISTINCT FROM (SELECT count(*) FROM cdp.events e
                                    WHERE e.profile_id = c.profile_id AND e.event = 'Product Viewed'
                                      AND e.occurred_at > cdp.now() - interval '2 hours')};

$node->safe_psql('postgres', q{
SELECT cdp.define_trait('orders', 'count', 'Order Completed');
SELECT cdp.define_trait('spent', 'sum', 'Order Completed', 'amount');
SELECT cdp.define_trait('views_2h', 'count', 'Product Viewed', NULL, '2 hours');
});

# Events keep arriving during the backfill.
$node->safe_psql('postgres', q{
INSERT INTO cdp.inbox (message)
SELECT json_build_object('type', 'track', 'event', 'Order Completed', 'messageId', 'n-' || g,
                         'userId', 'u-' || (g * 7 % 4000), 'properties', json_build_object('amount', 1),
                         'timestamp', '2026-06-01T11:59:00Z')::text
FROM generate_series(1, 3000) g;
});
ok($node->poll_query_until('postgres', q{
SELECT bool_and(backfill_done > 200) FROM cdp.trait_definitions}), 'the backfill is under way');
my $done = $node->safe_psql('postgres', 'SELECT min(backfill_done) FROM cdp.trait_definitions');
$node->stop('immediate');
$node->start;
my $left = $node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.trait_status WHERE state = 'backfilling'});
cmp_ok($left, '>', 0, "the stop interrupted the backfill (after $done profiles)");

ok($node->poll_query_until('postgres', q{
SELECT count(*) = 0 FROM cdp.trait_status WHERE state <> 'ready'}), 'the backfill finished after the restart');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'), 'the new events drained');
is($node->safe_psql('postgres', $oracle), '0', 'every trait equals its aggregate over the events');
is($node->safe_psql('postgres', 'SELECT sum(orders) FROM cdp.customers'), '9666',
	'orders count the history and the new events once');
cmp_ok($node->safe_psql('postgres', 'SELECT sum(views_2h) FROM cdp.customers'), '>', 0,
	'some views are in the last two hours');

# Three hours later every view has left the 2-hour window: the worker moves
# the values with no event.
$node->safe_psql('postgres', "ALTER SYSTEM SET cdp.fake_now = '2026-06-01 15:00:00+00'");
$node->reload;
ok($node->poll_query_until('postgres', 'SELECT coalesce(sum(views_2h), 0) = 0 FROM cdp.customers'),
	'windowed traits decay with no event');
is($node->safe_psql('postgres', $oracle), '0', 'and still equal their aggregates');

done_testing();
