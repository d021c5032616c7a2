# Two drainers (the worker and its helper) resolve and write inbox batches
# side by side while cdp.track calls merge the profiles they are writing
# to. Afterwards every message is one event, every row points at a living
# profile, and the profiles are exactly the people the identifiers say.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use CdpTestNode;

my $rows = 150_000;
my $links = 800;
my $node = cdp_node('drainers', "cdp.naptime = 200\ncdp.batch_size = 2000\ncdp.drain_workers = 2\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');

is($node->safe_psql('postgres', q{
SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM pg_stat_activity
WHERE backend_type LIKE 'pg_cdp%'}), 'pg_cdp drain,pg_cdp worker', 'the worker and one helper run');

# 8000 people, a-0 .. a-7999; the first 4000 also send a user id.
$node->safe_psql('postgres', qq{
INSERT INTO cdp.inbox (message)
SELECT json_build_object('type', 'track', 'event', 'Viewed', 'messageId', 'd-' || g,
                         'anonymousId', 'a-' || (g % 8000),
                         'userId', CASE WHEN g % 8000 < 4000 AND g % 3 = 0 THEN 'u-' || (g % 8000) END)::text
FROM generate_series(1, $rows) g;
});

# Meanwhile an email links a-k to a-(k+4000): 800 merges of profiles that
# the drainers are writing events to.
my $script = '';
for my $k (0 .. $links - 1)
{
	my $other = $k + 4000;
	$script .= qq{SELECT cdp.track('{"anonymous_id": "a-$k", "email": "p$k\@link.test"}', 'Linked');\n};
	$script .= qq{SELECT cdp.track('{"email": "p$k\@link.test", "anonymous_id": "a-$other"}', 'Linked');\n};
}
my ($out, $err) = ('', '');
my $tracks = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$script, '>', \$out, '2>', \$err);

# Feed the calls now, while the drainers work (start alone sends nothing).
$tracks->pump while length $script;
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox', 't'),
	'the drainers emptied the inbox');
ok($tracks->finish, 'every cdp.track call succeeded') or diag($err);

is($node->safe_psql('postgres', q{SELECT count(DISTINCT event_id) FROM cdp.events WHERE event_id LIKE 'd-%'}),
	$rows, 'each inbox row is one event');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.events'), $rows + 2 * $links,
	'no event twice, none missing');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.inbox_rejects'), '0', 'no rejects');
is($node->safe_psql('postgres', $CdpTestNode::ORPHANS),
	'0', 'no event, identity or message id points at a retired profile');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.message_ids d JOIN cdp.events e ON e.event_id = d.message_id
WHERE d.profile_id <> e.profile_id}),
	'0', 'message ids followed their events through the merges');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.profiles'), 8000 - $links,
	'one profile per person');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM generate_series(0, $links - 1) k
WHERE cdp.resolve(jsonb_build_object('anonymous_id', 'a-' || k))
      IS DISTINCT FROM cdp.resolve(jsonb_build_object('anonymous_id', 'a-' || (k + 4000)))
   OR cdp.resolve(jsonb_build_object('anonymous_id', 'a-' || k))
      IS DISTINCT FROM cdp.resolve(jsonb_build_object('email', 'p' || k || '\@link.test'))}),
	'0', 'each linked pair is one profile');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.identities WHERE type = 'user_id'
  AND profile_id IS DISTINCT FROM
      cdp.resolve(jsonb_build_object('anonymous_id', 'a-' || substr(value, 3)))}),
	'0', 'each user id sits with its anonymous id');

# Batches grow while nobody waits for the drainers' lock, and go back to
# cdp.batch_size as soon as a cdp.track call has to wait.
$node->append_conf('postgresql.conf', "cdp.bulk_batch_size = 8000\n");
$node->reload;
$node->safe_psql('postgres', q{
INSERT INTO cdp.inbox (message)
SELECT json_build_object('type', 'track', 'event', 'Bulk', 'messageId', 'g-' || g,
                         'anonymousId', 'b-' || (g % 50000))::text
FROM generate_series(1, 400000) g;
});
ok($node->poll_query_until('postgres', 'SELECT batch_size = 8000 FROM cdp.worker_status()'),
	'batches grow to cdp.bulk_batch_size during a bulk load');
$script = '';
$script .= qq{SELECT cdp.track('{"anonymous_id": "rt-$_"}', 'Realtime');\n} for 1 .. 3000;
($out, $err) = ('', '');
$tracks = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$script, '>', \$out, '2>', \$err);
$tracks->pump while length $script;
ok($node->poll_query_until('postgres',
	'SELECT batch_size = 2000 AND EXISTS (SELECT FROM cdp.inbox) FROM cdp.worker_status()'),
	'and shrink back to cdp.batch_size while cdp.track calls wait');
ok($tracks->finish, 'the real-time calls succeeded') or diag($err);
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox', 't'),
	'the bulk load drained');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event IN ('Bulk', 'Realtime')}),
	'403000', 'every bulk and real-time event landed');

$node->stop;
done_testing();
