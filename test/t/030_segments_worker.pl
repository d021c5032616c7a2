# Segments and the worker: a real-time segment follows an event within a
# second of its commit, with no cdp.tick(); and an immediate stop in the
# middle of a large evaluation (many changed profiles, small batches)
# leaves, once the worker has finished after the restart, exactly the
# members the predicates give over cdp.customers, each entry logged and
# announced by one Segment Entered event, and nothing waiting.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use CdpTestNode;

# The default nap: the worker must be woken by the commit, not find the
# change at the end of a nap.
my $node = cdp_node('segments', "cdp.naptime = 1000\ncdp.segment_batch_size = 20\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
SELECT cdp.create_event_partitions('2026-01-01', 7);
SELECT cdp.define_trait('orders', 'count', 'Order Completed');
SELECT cdp.define_trait('spent', 'sum', 'Order Completed', 'amount');
SELECT cdp.define_trait('views', 'count', 'Product Viewed');
SELECT cdp.create_segment('buyers', 'orders >= 1');
SELECT cdp.create_segment('big_spenders', 'spent >= 150');
SELECT cdp.create_segment('lookers', 'views >= 2 AND coalesce(orders, 0) = 0');
SELECT cdp.create_segment('buying_lookers',
    'cdp.in_segment(profile_id, ''buyers'') AND views >= 1');
});

# 1. One event, and the worker alone.
$node->safe_psql('postgres', q{
SELECT cdp.track('{"user_id": "first"}', 'Product Viewed');
});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.profile_changes'),
	'the worker evaluated the first event');
my $t0 = time;
$node->safe_psql('postgres', q{
SELECT cdp.track('{"user_id": "first"}', 'Order Completed', '{"amount": 10}');
});
my $committed = time;
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 2 FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id)
JOIN cdp.identities i ON i.profile_id = m.profile_id AND i.type = 'user_id' AND i.value = 'first'
WHERE s.name IN ('buyers', 'buying_lookers')}), 'the buyer entered both segments');
my $delay = time - $committed;
cmp_ok($delay, '<', 1.0,
	sprintf('within a second of the commit (%.3f s; the call took %.3f s)', $delay, $committed - $t0));
is($node->safe_psql('postgres', q{
SELECT string_agg(e.properties->>'segment', ',' ORDER BY e.properties->>'segment')
FROM cdp.events e JOIN cdp.identities i ON i.profile_id = e.profile_id
WHERE i.type = 'user_id' AND i.value = 'first' AND e.event = 'Segment Entered'}),
	'buyers,buying_lookers', 'with a Segment Entered event for each');

# 2. Many changed profiles at once: 4,000 people's events through the
# inbox, so the worker evaluates them 20 at a time; and an immediate stop
# while it does.
$node->safe_psql('postgres', q{
INSERT INTO cdp.inbox (message)
SELECT json_build_object('type', 'track',
                         'event', CASE WHEN g % 3 = 0 THEN 'Order Completed' ELSE 'Product Viewed' END,
                         'messageId', 'm-' || g, 'userId', 'u-' || (g % 4000),
                         'properties', json_build_object('amount', g % 97),
                         'timestamp', timestamptz '2026-01-03 12:00:00+00' + g * interval '1 second')::text
FROM generate_series(1, 16000) g;
});
ok($node->poll_query_until('postgres', q{
SELECT (SELECT count(*) FROM cdp.segment_changes) > 200
   AND (SELECT count(*) FROM cdp.profile_changes) > 0}), 'the evaluation is under way');
my $left = $node->safe_psql('postgres', 'SELECT count(*) FROM cdp.profile_changes');
my $logged = $node->safe_psql('postgres', 'SELECT count(*) FROM cdp.segment_changes');
$node->stop('immediate');
$node->start;
cmp_ok($left, '>', 0, "the stop came during the evaluation ($logged changes logged, $left profiles waiting)");

ok($node->poll_query_until('postgres', q{
SELECT (SELECT count(*) FROM cdp.inbox) = 0 AND (SELECT count(*) FROM cdp.profile_changes) = 0}),
	'the worker finished after the restart');

# The members are exactly the predicates over cdp.customers.
my $wrong = q{
WITH truth AS (
    SELECT 'buyers' AS name, profile_id FROM cdp.customers WHERE orders >= 1
    UNION ALL SELECT 'big_spenders', profile_id FROM cdp.customers WHERE spent >= 150
    UNION ALL SELECT 'lookers', profile_id FROM cdp.customers WHERE views >= 2 AND coalesce(orders, 0) = 0
    UNION ALL SELECT 'buying_lookers', profile_id FROM cdp.customers WHERE orders >= 1 AND views >= 1),
members AS (
    SELECT s.name, m.profile_id FROM cdp.segment_members m JOIN cdp.segments s USING (segment_id))
SELECT count(*) FROM ((TABLE truth EXCEPT TABLE members) UNION ALL (TABLE members EXCEPT TABLE truth)) x};
is($node->safe_psql('postgres', $wrong), '0', 'the members are the predicates evaluated directly');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.segment_members'), '>', 4000,
	'and there are many');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.segments s
WHERE s.members <> (SELECT count(*) FROM cdp.segment_members m WHERE m.segment_id = s.segment_id)}),
	'0', 'every segment counts its members exactly');

# History: replaying the changes gives the members; each entry is logged
# once and announced by one Segment Entered event.
is($node->safe_psql('postgres', q{
WITH last AS (
    SELECT DISTINCT ON (segment_id, profile_id) segment_id, profile_id, change
    FROM cdp.segment_changes ORDER BY segment_id, profile_id, change_id DESC),
replayed AS (SELECT segment_id, profile_id FROM last WHERE change = 'entered'),
members AS (SELECT segment_id, profile_id FROM cdp.segment_members)
SELECT count(*) FROM ((TABLE replayed EXCEPT TABLE members) UNION ALL (TABLE members EXCEPT TABLE replayed)) x}),
	'0', 'replaying cdp.segment_changes gives the members');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
    SELECT segment_id, profile_id, change,
           lag(change) OVER (PARTITION BY segment_id, profile_id ORDER BY change_id) AS before
    FROM cdp.segment_changes) x
WHERE change = before OR (before IS NULL AND change = 'exited')}),
	'0', 'entries and exits alternate, starting with an entry');
# Members only ever enter here (counts and sums only grow), except lookers
# who leave when they buy: one entry per member and segment, at most.
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT segment_id, profile_id FROM cdp.segment_changes
                      WHERE change = 'entered' GROUP BY 1, 2 HAVING count(*) > 1) x}),
	'0', 'no entry is logged twice');
is($node->safe_psql('postgres', q{
WITH logged AS (
    SELECT c.profile_id, s.name, c.change, count(*) AS n
    FROM cdp.segment_changes c JOIN cdp.segments s USING (segment_id) GROUP BY 1, 2, 3),
announced AS (
    SELECT e.profile_id, e.properties->>'segment' AS name,
           CASE e.event WHEN 'Segment Entered' THEN 'entered' ELSE 'exited' END AS change,
           count(*) AS n
    FROM cdp.events e WHERE e.event IN ('Segment Entered', 'Segment Exited') GROUP BY 1, 2, 3)
SELECT count(*) FROM ((TABLE logged EXCEPT TABLE announced) UNION ALL (TABLE announced EXCEPT TABLE logged)) x}),
	'0', 'each logged change is one Segment Entered / Segment Exited event, none twice');
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM cdp.segment_pending)
     + (SELECT count(*) FROM cdp.segments WHERE last_error IS NOT NULL)}),
	'0', 'nothing pending and no error');
is($node->safe_psql('postgres', q{
SELECT sum(pending_profiles) FROM cdp.segment_status}), '0', 'segment_status shows nothing waiting');

$node->stop;
done_testing();
