# pg_cdp_collector under a slow-client attack: hundreds of connections that
# send their headers or body a byte a second.  Each request has a deadline as
# a whole, one address gets a bounded number of connections, and when slow
# connections take every slot the longest-waiting ones make room, so that an
# honest client is served within a bound all along.
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
use POSIX ();
use Time::HiRes qw(usleep time);

my $request_timeout = 5;
my $max_connections = 200;
my $per_ip = 64;             # the default

my $node = cdp_node('slow', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE collector LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('web', 'web-write-key-0123456789', writer => 'collector');
});
my ($collector, $base, $conninfo, $outref, $errref) = start_collector($node,
	'--max-connections', $max_connections, '--request-timeout', $request_timeout);
my ($port) = $base =~ /:(\d+)$/;
my $auth = 'Basic ' . encode_base64('web-write-key-0123456789:', '');
my $dir = PostgreSQL::Test::Utils::tempdir;
my $honest_acked = 0;

# The attacker, in a child: $count connections from the given addresses
# (all of 127/8 is this host), half stuck in their headers and half in their
# body, each sent one more byte every second for $seconds.  It writes
# "ready" once they are open, and at the end a report: how many the server
# closed at once (refused), how many it left open, and the longest any
# lived before the server closed it.
sub attack
{
	my ($name, $addrs, $count, $seconds) = @_;
	my $pid = fork() // die "fork: $!";
	return $pid if $pid;
	# the child leaves with _exit: the test's END blocks are the parent's
	eval { slow_connections($name, $addrs, $count, $seconds) };
	print STDERR $@ if $@;
	POSIX::_exit($@ ? 1 : 0);
}

sub slow_connections
{
	my ($name, $addrs, $count, $seconds) = @_;
	my @conns;
	for my $i (0 .. $count - 1)
	{
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
			LocalAddr => $addrs->[ $i % @$addrs ], Proto => 'tcp')
		  or die "connect: $!";
		$s->blocking(0);
		syswrite($s, $i % 2
			? "POST /v1/track HTTP/1.1\r\nHost: x\r\nX-Slow: "
			: "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nContent-Length: 100000\r\n\r\n{");
		push @conns, { s => $s, opened => time() };
	}
	open(my $ready, '>', "$dir/$name.ready") or die $!;
	close $ready;
	my %by_fd = map { fileno($_->{s}) => $_ } @conns;
	my $end = time() + $seconds;
	my $next_byte = time() + 1;
	while (time() < $end)
	{
		my @open = grep { !defined $_->{closed} } @conns;
		last unless @open;
		for my $fh (IO::Select->new(map { $_->{s} } @open)->can_read(0.1))
		{
			my $n = sysread($fh, my $buf, 4096);
			$by_fd{ fileno($fh) }{closed} = time() if !$n;
		}
		if (time() >= $next_byte)
		{
			for my $c (grep { !defined $_->{closed} } @conns)
			{
				$c->{closed} = time() if !defined syswrite($c->{s}, 'a') && !$!{EAGAIN};
			}
			$next_byte += 1;
		}
	}
	my @closed = grep { defined $_->{closed} } @conns;
	my $refused = grep { $_->{closed} - $_->{opened} < 1 } @closed;
	my $max_life = 0;
	for (@closed) { $max_life = $_->{closed} - $_->{opened} if $_->{closed} - $_->{opened} > $max_life; }
	open(my $out, '>', "$dir/$name.report") or die $!;
	printf $out "%d %d %.2f\n", $refused, scalar(@conns) - scalar(@closed), $max_life;
	close $out;
}

# While the attack lasts, an honest client posts every few hundred
# milliseconds on a new connection; its worst latency and any failures.
sub honest_while
{
	my ($name, $attacker) = @_;
	my $http = HTTP::Tiny->new(timeout => 15, keep_alive => 0);
	my ($worst, $n, @failed) = (0, 0);
	until (waitpid($attacker, POSIX::WNOHANG()) == $attacker)
	{
		my $t0 = time();
		my $r = $http->request('POST', "$base/v1/track", {
			content => qq({"userId": "u-honest", "event": "Honest", "messageId": "$name-) . ++$n . '"}',
			headers => { Authorization => $auth, 'Content-Type' => 'application/json' } });
		my $took = time() - $t0;
		$worst = $took if $took > $worst;
		if ($r->{status} == 200) { $honest_acked++; } else { push @failed, $r->{status}; }
		usleep(300_000);
	}
	return ($worst, $n, @failed);
}

sub run_attack
{
	my ($name, $addrs, $count, $seconds) = @_;
	my $pid = attack($name, $addrs, $count, $seconds);
	my $until = time() + 30;
	usleep(20_000) until -e "$dir/$name.ready" || time() > $until;
	die "the attacker did not connect" unless -e "$dir/$name.ready";
	my ($worst, $n, @failed) = honest_while($name, $pid);
	die "the attacker failed" if $? != 0;
	my ($refused, $left_open, $max_life) = split ' ', slurp_file("$dir/$name.report");
	return ($worst, $n, \@failed, $refused, $left_open, $max_life);
}

# A connection's time runs from its accept, which may come a second or so
# after its connect when it waited in the listen queue.
my $lifetime_bound = $request_timeout + 3;
my $seconds = $request_timeout + 4;
my $honest_bound = 3;

# --- 300 slow connections from one address ---
my ($worst, $n, $failed, $refused, $left_open, $max_life) = run_attack('one', ['127.0.0.2'], 300, $seconds);
is("@$failed", '', "one address, 300 slow connections: the honest client got 200 each time ($n requests)");
cmp_ok($worst, '<', $honest_bound, "within a bound (worst $worst s)");
is($refused, 300 - $per_ip, "connections past $per_ip from one address are refused at once");
is($left_open, 0, 'every slow connection was closed although it kept sending');
cmp_ok($max_life, '<', $lifetime_bound, "each within --request-timeout (longest $max_life s)");

# --- 300 from ten addresses: more than --max-connections in all ---
($worst, $n, $failed, $refused, $left_open, $max_life) =
  run_attack('many', [ map { "127.0.0.$_" } 10 .. 19 ], 300, $seconds);
is("@$failed", '', "ten addresses, 300 slow connections (over $max_connections): the honest client got 200 each time ($n requests)");
cmp_ok($worst, '<', $honest_bound, "within a bound, long before --request-timeout (worst $worst s)");
is($left_open, 0, 'every slow connection was closed');
cmp_ok($max_life, '<', $lifetime_bound, "each within --request-timeout (longest $max_life s)");

$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox') or die 'inbox not drained';
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event = 'Honest'}), $honest_acked,
	"the honest messages landed ($honest_acked)");
$collector->signal('TERM');
$collector->finish;
is($collector->full_result(0), 0, 'SIGTERM: exit status 0');
like($$errref, qr/closed [1-9]\d* connections whose request took longer than --request-timeout/,
	'the collector logged what it closed');
diag("the collector's log:\n$$errref") unless Test::More->builder->is_passing;
$node->stop;
done_testing();
