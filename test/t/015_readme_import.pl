# The README's worked example of importing a shop's own tables (customers,
# orders) runs as written: the SQL blocks between its "test:" markers are
# taken from README.md and run. The import keeps the shop's times (profiles
# created at sign-up, events in their months' partitions, nothing in the
# default partition), and running it again adds nothing; after the shop's
# rows change, a third run adds just the change.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

# The SQL of the fenced block between <!-- test: NAME --> and <!-- /test -->.
sub readme_block
{
	my ($name) = @_;
	my $readme = slurp_file('README.md');
	$readme =~ /<!-- test: \Q$name\E -->\s*```sql\n(.*?)```\s*<!-- \/test -->/s
	  or die "README.md has no block \"$name\"";
	return $1;
}
my $tables = readme_block('shop-tables');
my $import = readme_block('shop-import');

my $node = cdp_node('readme_import', "cdp.naptime = 100\n");
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');
$node->safe_psql('postgres', $tables);

sub import_and_drain
{
	$node->safe_psql('postgres', $import);
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox')
	  or die 'the worker did not drain the import';
}

# What the import left: counts, where the events are, and each profile.
my $state = q{
SELECT (SELECT count(*) FROM cdp.profiles) || ' profiles, '
    || (SELECT count(*) FROM cdp.identities) || ' identities, '
    || (SELECT count(*) FROM cdp.events WHERE source = 'shop_db') || ' events, '
    || (SELECT count(*) FROM cdp.events_default) || ' in the default partition, '
    || (SELECT count(*) FROM cdp.inbox_rejects) || ' rejects, '
    || (SELECT count(*) FROM cdp.identifier_issues) || ' issues'};
my $profiles = q{
SELECT string_agg(format('%s %s %s %s', i.value, p.created_at AT TIME ZONE 'UTC',
                         p.traits->>'first_name',
                         (SELECT string_agg(x.type || '=' || x.value, ',' ORDER BY x.type)
                          FROM cdp.identities x WHERE x.profile_id = p.profile_id AND x.type <> 'user_id')),
                  E'\n' ORDER BY i.value)
FROM cdp.profiles p JOIN cdp.identities i ON i.profile_id = p.profile_id AND i.type = 'user_id'};

import_and_drain();
is($node->safe_psql('postgres', $state),
	'3 profiles, 8 identities, 10 events, 0 in the default partition, 0 rejects, 0 issues',
	'the import: a profile per customer, a sign-up, an identify and the orders each');
is($node->safe_psql('postgres', $profiles), join("\n",
		'customer-1 2021-03-02 08:10:00 Chloé email=chloe.lefevre@example.fr,phone=+33612345678',
		'customer-2 2022-11-20 17:45:00 Bob email=bob@example.com',
		'customer-3 2025-01-05 16:00:00 Ann email=ann@example.com,phone=+14155552671'),
	'each profile was created when the customer signed up, with their identifiers and traits');
is($node->safe_psql('postgres', q{
SELECT string_agg(format('%s %s', e.properties->>'order_id', e.tableoid::regclass), ', ' ORDER BY e.properties->>'order_id')
FROM cdp.events e WHERE e.event = 'Order Completed'}),
	'101 cdp.events_2021_03, 102 cdp.events_2023_12, 103 cdp.events_2022_11, 104 cdp.events_2025_02',
	'each order is in its month\'s partition');
is($node->safe_psql('postgres', q{
SELECT first_seen_at AT TIME ZONE 'UTC' FROM cdp.identities WHERE type = 'user_id' AND value = 'customer-1'}),
	'2021-03-02 08:10:00', 'the user id was first seen at the sign-up');

# The README's own query runs.
my ($readme_query) = slurp_file('README.md') =~ /\n(SELECT p\.created_at, p\.traits->>'first_name'.*?;)\n/s;
ok(defined $readme_query, 'the README shows a query of the result');
is($node->safe_psql('postgres', "SET TimeZone = 'UTC'; $readme_query"), join("\n",
		'2021-03-02 08:10:00+00|Chloé|4', '2022-11-20 17:45:00+00|Bob|3', '2025-01-05 16:00:00+00|Ann|3'),
	'and it runs: sign-up, identify and orders per customer');

# Again, as a nightly job would: nothing new.
my $before = $node->safe_psql('postgres', "$state; $profiles");
import_and_drain();
is($node->safe_psql('postgres', "$state; $profiles"), $before, 'a second run adds nothing');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.inbox_rejects'), '0', 'and rejects nothing');

# The shop's rows change: Bob has a phone now, and a new order.
$node->safe_psql('postgres', q{
UPDATE shop.customers SET phone = '+44 20 7946 0958', updated_at = '2026-01-10 10:00+00' WHERE customer_id = 2;
INSERT INTO shop.orders VALUES (105, 2, 42.00, '2026-01-10 10:05+00');
});
import_and_drain();
is($node->safe_psql('postgres', $state),
	'3 profiles, 9 identities, 12 events, 0 in the default partition, 0 rejects, 0 issues',
	'a third run adds the changed customer\'s identify and the new order');
like($node->safe_psql('postgres', $profiles), qr/^customer-2 2022-11-20 17:45:00 Bob email=bob\@example\.com,phone=\+442079460958$/m,
	'Bob\'s new phone joined his profile');

# The README's way to name the source of a COPY: events record it.
my $file = PostgreSQL::Test::Utils::tempdir() . '/events.jsonl';
open(my $fh, '>', $file) or die "cannot write $file: $!";
print $fh qq{{"type": "track", "userId": "customer-3", "event": "Viewed", "messageId": "v-1"}\n};
print $fh qq{{"type": "track", "userId": "customer-3", "event": "Viewed", "properties": {"path": "a\\\\b"}, "messageId": "v-2"}\n};
close $fh;
$node->safe_psql('postgres', "SELECT cdp.create_source('shop') IS NOT NULL");
$node->safe_psql('postgres', readme_block('inbox-source') =~ s/'events\.jsonl'/'$file'/r);
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox')
  or die 'the worker did not drain the COPY';
is($node->safe_psql('postgres', q{
SELECT string_agg(format('%s %s %s', event_id, source, coalesce(properties->>'path', '-')), ', ' ORDER BY event_id)
FROM cdp.events WHERE event = 'Viewed'}),
	'v-1 shop -, v-2 shop a\\b', 'the COPY\'s events record their source, backslashes intact');

$node->stop;
done_testing();
