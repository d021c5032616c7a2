# Offers and the worker: a send whose goal window closes without its goal
# is settled as expired by the worker, moving the offer's bandit, and the
# population's engagement is counted on the worker's first round; a goal
# event through the inbox drain converts a send in the draining
# transaction.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $node = cdp_node('offers', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('callcenter', 'task', 'queue', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('call', 'callcenter', 'Call {{profile_id}}');
SELECT cdp.create_offer('quick', '{"callcenter": "call"}', 10, 'Called Back', '2 seconds');
SELECT cdp.create_offer('slow', '{"callcenter": "call"}', 10, 'Signed', '1 day');
});
my $ann = $node->safe_psql('postgres', q{SELECT cdp.identify('{"user_id": "ann"}')});
my $bob = $node->safe_psql('postgres', q{SELECT cdp.identify('{"user_id": "bob"}')});
$node->safe_psql('postgres', qq{
SELECT cdp.send_offer($ann, 'quick', NULL, now());
SELECT cdp.send_offer($bob, 'slow', NULL, now());
});

ok($node->poll_query_until('postgres', q{
SELECT outcome = 'expired' FROM cdp.offer_sends WHERE offer = 'quick'}),
	'the worker settled the send whose window closed');
is($node->safe_psql('postgres', q{SELECT alpha || '/' || beta FROM cdp.offer_arms WHERE offer = 'quick'}),
	'1/2', 'and the bandit counted a non-conversion');
is($node->safe_psql('postgres', q{SELECT outcome IS NULL FROM cdp.offer_sends WHERE offer = 'slow'}),
	't', 'the open window stays open');

# the goal through the bulk path: the drain converts the send
$node->safe_psql('postgres', q{
INSERT INTO cdp.inbox (message) VALUES
  ('{"type": "track", "userId": "bob", "event": "Signed", "messageId": "goal-1", "properties": {"revenue": 99}}');
});
ok($node->poll_query_until('postgres', q{
SELECT outcome = 'converted' AND value = 99 FROM cdp.offer_sends WHERE offer = 'slow'}),
	'the drained goal event converted the send');
is($node->safe_psql('postgres', q{SELECT alpha || '/' || beta FROM cdp.offer_arms WHERE offer = 'slow'}),
	'2/1', 'and the bandit counted the conversion');

# the worker counted the population's engagement once (nothing delivered yet)
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.engagement_population}),
	'0', 'the population has no engagement yet');
$node->safe_psql('postgres', q{
INSERT INTO cdp.engagement_population VALUES ('callcenter', -1, 1, 1);
SELECT cdp.refresh_engagement();
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.engagement_population}),
	'0', 'a recount replaces what was there');

$node->stop;
done_testing();
