# cdp.forget and cdp.unmerge while two drainers resolve and write batches
# that name the same people. A forgotten person's messages were all in the
# inbox when they were forgotten: afterwards nothing of them may be left,
# whichever stage of a drainer their messages were in. An unmerge racing the
# drainers' writes leaves no row pointing at a profile that is gone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use CdpTestNode;

my $rows = 120_000;
my $people = 6000;
my $forgotten = 100;    # f-0 .. f-99; the others are a-100 .. a-5999
my $node = cdp_node('erasure', "cdp.naptime = 200\ncdp.batch_size = 2000\ncdp.drain_workers = 2\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');

# Each forgotten person has an email too, so cdp.forget finds them even
# before a drainer has written anything of theirs.
$node->safe_psql('postgres', qq{
SELECT cdp.identify(jsonb_build_object('anonymous_id', 'f-' || k, 'email', 'f' || k || '\@gone.test'))
FROM generate_series(0, $forgotten - 1) k;
SELECT cdp.identify(jsonb_build_object('anonymous_id', 'a-' || k)) FROM generate_series(200, 399) k;
INSERT INTO cdp.inbox (message)
SELECT CASE WHEN g % $people < $forgotten
            THEN json_build_object('type', 'track', 'event', 'Viewed', 'messageId', 'fm-' || g,
                                   'anonymousId', 'f-' || (g % $people))
            ELSE json_build_object('type', 'track', 'event', 'Viewed', 'messageId', 'd-' || g,
                                   'anonymousId', 'a-' || (g % $people))
       END::text
FROM generate_series(1, $rows) g;
});

# Meanwhile: the forgotten people are erased one by one, and pairs of other
# people are linked by an email and unlinked again.
my $script = '';
for my $k (0 .. $forgotten - 1)
{
	my ($x, $y) = (200 + 2 * $k, 201 + 2 * $k);
	$script .= qq{SELECT cdp.forget('{"email": "f$k\@gone.test"}');\n};
	$script .= qq{SELECT cdp.track('{"anonymous_id": "a-$x", "email": "m$k\@link.test"}', 'Linked');\n};
	$script .= qq{SELECT cdp.track('{"email": "m$k\@link.test", "anonymous_id": "a-$y"}', 'Linked') AS w \\gset\n};
	$script .= qq{SELECT cdp.unmerge(merge_id) FROM cdp.merges WHERE winner_id = :w AND undone_at IS NULL;\n};
}
my ($out, $err) = ('', '');
my $calls = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$script, '>', \$out, '2>', \$err);
$calls->pump while length $script;
ok($calls->finish, 'every cdp.forget, cdp.track and cdp.unmerge call succeeded') or diag($err);
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox', 't'),
	'the drainers emptied the inbox');

is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM cdp.identities WHERE value LIKE 'f-%' OR value LIKE '%@gone.test')
     + (SELECT count(*) FROM cdp.events WHERE event_id LIKE 'fm-%')
     + (SELECT count(*) FROM cdp.message_ids WHERE message_id LIKE 'fm-%')
     + (SELECT count(*) FROM cdp.inbox_rejects)}),
	'0', 'nothing is left of the forgotten people');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdp.profiles p
WHERE NOT EXISTS (SELECT FROM cdp.identities i WHERE i.profile_id = p.profile_id)}),
	'0', 'no profile is left without identifiers');
my $kept = $node->safe_psql('postgres', qq{
SELECT count(*) FROM generate_series(1, $rows) g WHERE g % $people >= $forgotten});
is($node->safe_psql('postgres', q{SELECT count(DISTINCT event_id) FROM cdp.events WHERE event_id LIKE 'd-%'}),
	$kept, 'every message of the others is one event');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event_id LIKE 'd-%'}),
	$kept, 'none of them twice');
is($node->safe_psql('postgres', $CdpTestNode::ORPHANS),
	'0', 'no event, identity or message id points at a profile that is gone');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM generate_series(0, $forgotten - 1) k
WHERE cdp.resolve(jsonb_build_object('anonymous_id', 'a-' || (200 + 2 * k)))
      = cdp.resolve(jsonb_build_object('anonymous_id', 'a-' || (201 + 2 * k)))}),
	'0', 'every unmerged pair is two people again');

$node->stop;
done_testing();
