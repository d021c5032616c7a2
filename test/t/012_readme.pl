# The README's SQL tour runs as written: every ```sql block, in order, in
# one fresh database served by the worker, must run without an error.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename;
use CdpTestNode;

my $readme = dirname(__FILE__) . '/../../README.md';
my $text = slurp_file($readme);
my @blocks;
while ($text =~ /^```sql\n(.*?)^```$/msg)
{
	push @blocks, $1;
}
cmp_ok(scalar(@blocks), '>=', 5, 'the README has SQL examples');

my $node = cdp_node('readme', "cdp.naptime = 100\n");

# The file the bulk-loading examples read, in psql's working directory.
my $jsonl = 'events.jsonl';
open(my $fh, '>', $jsonl) or die "cannot write $jsonl: $!";
print $fh qq[{"type": "track", "userId": "u-readme", "event": "Viewed", "messageId": "readme-1"}\n],
  qq[{"type": "identify", "userId": "u-readme", "traits": {"email": "readme\@example.com"}}\n];
close $fh;
my $n = 0;
for my $sql (@blocks)
{
	$n++;
	my ($first) = $sql =~ /^\s*([^\n]*)/;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	is($ret, 0, "README block $n runs: $first") or diag($err);
}

unlink $jsonl;
$node->stop;
done_testing();
