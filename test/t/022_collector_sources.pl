# pg_cdp_collector's write-key lookups: a slow one (cdp.sources locked) holds
# up no request whose key is known, times out with 503, and /health says so;
# disabling, deleting and enabling a source take effect within seconds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use MIME::Base64;
use Time::HiRes qw(usleep time);

my $node = cdp_node('sources', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE collector LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('web', 'web-write-key-0123456789', writer => 'collector');
SELECT cdp.create_source('app', 'app-write-key-0123456789', writer => 'collector');
SELECT cdp.create_source('pos', 'pos-write-key-0123456789', writer => 'collector');
});
my ($collector, $base, $conninfo, $outref, $errref) = start_collector($node);
my ($port) = $base =~ /:(\d+)$/;
my $http = HTTP::Tiny->new(timeout => 8);
my $n = 0;

sub basic { return 'Basic ' . encode_base64("$_[0]-write-key-0123456789:", ''); }

sub post_as
{
	my ($source) = @_;
	$n++;
	return $http->request('POST', "$base/v1/track", {
		content => qq({"userId": "u-1", "event": "E", "messageId": "m-$source-$n"}),
		headers => { Authorization => basic($source), 'Content-Type' => 'application/json' } });
}

# Post until the status is the one wanted; the seconds it took, or undef.
sub seconds_until_status
{
	my ($source, $want, $limit) = @_;
	my $t0 = time();
	while (time() - $t0 < $limit)
	{
		return time() - $t0 if post_as($source)->{status} == $want;
		usleep(100_000);
	}
	return undef;
}

is(post_as('web')->{status}, 200, 'a known key');
like($http->get("$base/health")->{content}, qr/"ok":true/, 'healthy');

# --- a slow lookup holds up nobody else ---
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE cdp.sources IN ACCESS EXCLUSIVE MODE;');

# A key the collector has not seen yet: its lookup waits for the lock.
my $waiting = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 10) or die $!;
my $body = '{"userId": "u-1", "event": "E", "messageId": "m-app-waiting"}';
print $waiting "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: " . basic('app')
  . "\r\nContent-Type: application/json\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
my $t0 = time();
$node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity
	WHERE usename = 'collector' AND wait_event_type = 'Lock' AND query LIKE '%authenticate_source%'})
  or die 'the lookup is not waiting';

my $t1 = time();
my $r = post_as('web');
my $took = time() - $t1;
is($r->{status}, 200, 'a known key is served while another key\'s lookup waits');
cmp_ok($took, '<', 1.5, "at once ($took s)");

my $answer = '';
if (IO::Select->new($waiting)->can_read(8))
{
	$answer = <$waiting> // '';
}
my $waited = time() - $t0;
like($answer, qr/^HTTP\/1\.1 503/, 'the waiting lookup gives up with 503');
cmp_ok($waited, '<', 5, "within the lookup timeout ($waited s)");
close $waiting;

my $health = '';
for (1 .. 50)
{
	$health = $http->get("$base/health")->{content};
	last if $health =~ /"ok":false/;
	usleep(100_000);
}
like($health, qr/"ok":false/, '/health says lookups fail');
like($health, qr/"lookups":false/, 'and which part');

$locker->query_safe('COMMIT');
$locker->quit;
is(post_as('app')->{status}, 200, 'the lock gone: the new key is looked up');
for (1 .. 50)
{
	$health = $http->get("$base/health")->{content};
	last if $health =~ /"ok":true/;
	usleep(100_000);
}
like($health, qr/"ok":true/, 'and /health is ok again');

# --- changes to cdp.sources take effect within seconds, not a minute ---
is(post_as('pos')->{status}, 200, 'pos is cached');
$node->safe_psql('postgres', q{UPDATE cdp.sources SET enabled = false WHERE name = 'web'});
my $s = seconds_until_status('web', 403, 10);
ok(defined $s && $s < 5, 'a disabled source gets 403 within seconds (' . ($s // 'not within 10') . ' s)');
$node->safe_psql('postgres', q{UPDATE cdp.sources SET enabled = true WHERE name = 'web'});
$s = seconds_until_status('web', 200, 10);
ok(defined $s && $s < 5, 'enabled again: 200 within seconds (' . ($s // 'not within 10') . ' s)');
$node->safe_psql('postgres', q{DELETE FROM cdp.sources WHERE name = 'pos'});
$s = seconds_until_status('pos', 401, 10);
ok(defined $s && $s < 5, 'a deleted source gets 401 within seconds (' . ($s // 'not within 10') . ' s)');

$collector->signal('TERM');
$collector->finish;
is($collector->full_result(0), 0, 'SIGTERM: exit status 0');
diag("the collector's log:\n$$errref") unless Test::More->builder->is_passing;
$node->stop;
done_testing();
