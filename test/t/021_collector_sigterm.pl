# pg_cdp_collector stops on SIGTERM under load, every time: trials that each
# start it, post from several clients at once (new connections and kept-alive
# ones, so that threads come and go when the signal lands), send SIGTERM and
# expect a clean exit 0 within a deadline, the port free for the next trial,
# and every message answered 200 stored.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;
use HTTP::Tiny;
use MIME::Base64;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep time);

my $trials = 20;
my $clients = 8;
my $exit_deadline = 10;    # seconds from SIGTERM to exit

my $node = cdp_node('sigterm', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE collector LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('web', 'web-write-key-0123456789', writer => 'collector');
});
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $base = "http://127.0.0.1:$port";
my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=collector';
my $auth = 'Basic ' . encode_base64('web-write-key-0123456789:', '');
my $dir = PostgreSQL::Test::Utils::tempdir;

# Children leave with _exit: the test's END blocks (stopping the node) are
# the parent's alone.
sub spawn
{
	my ($code) = @_;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		eval { $code->() };
		POSIX::_exit($@ ? 1 : 0);
	}
	return $pid;
}

# Wait for a process until the deadline; its wait status, or undef.
sub wait_exit
{
	my ($pid, $seconds) = @_;
	my $until = time() + $seconds;
	while (time() < $until)
	{
		return $? if waitpid($pid, WNOHANG) == $pid;
		usleep(20_000);
	}
	return undef;
}

sub count_lines
{
	my $n = 0;
	for my $f (@_)
	{
		open(my $fh, '<', $f) or next;
		$n++ while <$fh>;
	}
	return $n;
}

my (@acked_files, @failures);
my $http = HTTP::Tiny->new(timeout => 5);
for my $t (1 .. $trials)
{
	my $log = "$dir/collector-$t.log";
	my $collector = spawn(sub {
		open(STDOUT, '>', '/dev/null');
		open(STDERR, '>', $log);
		exec('pg_cdp_collector', '--port', $port, '--dbname', $conninfo) or die "exec: $!";
	});
	my $up = 0;
	for (1 .. 100)
	{
		last if waitpid($collector, WNOHANG) == $collector;
		if ($http->get("$base/health")->{success}) { $up = 1; last; }
		usleep(50_000);
	}
	if (!$up)
	{
		push @failures, "trial $t: the collector did not start (" . slurp_file($log) . ")";
		kill 'KILL', $collector;
		waitpid($collector, 0);
		next;
	}

	my @files = map { "$dir/acked-$t-$_" } 1 .. $clients;
	push @acked_files, @files;
	my @kids = map {
		my $c = $_;
		spawn(sub {
			# even clients keep their connection, odd ones open one per request
			my $client = HTTP::Tiny->new(timeout => 15, keep_alive => $c % 2 == 0);
			open(my $fh, '>', $files[ $c - 1 ]) or die $!;
			$fh->autoflush(1);
			my $until = time() + 30;
			for (my $i = 1; time() < $until; $i++)
			{
				my $id = "t$t-c$c-$i";
				my $r = $client->request('POST', "$base/v1/track", {
					content => qq({"userId": "u-$c", "event": "Load", "messageId": "$id"}),
					headers => { Authorization => $auth, 'Content-Type' => 'application/json' } });
				print $fh "$id\n" if $r->{status} == 200;
				# connection refused: the collector is gone
				last if $r->{status} == 599 && $r->{content} =~ /refused/i;
			}
		});
	} 1 .. $clients;

	# Let the load build up, a different amount each trial.
	my $want = 10 * (1 + $t % 4);
	my $until = time() + 10;
	usleep(10_000) while count_lines(@files) < $want && time() < $until;

	kill 'TERM', $collector;
	my $status = wait_exit($collector, $exit_deadline);
	if (!defined $status)
	{
		push @failures, "trial $t: still running $exit_deadline s after SIGTERM";
		kill 'KILL', $collector;
		waitpid($collector, 0);
	}
	elsif ($status != 0)
	{
		push @failures, "trial $t: exit status " . ($status >> 8) . ", signal " . ($status & 127);
	}
	elsif (slurp_file($log) !~ /LOG: stopped/)
	{
		push @failures, "trial $t: exited without logging its stop";
	}
	for my $k (@kids)
	{
		next if defined wait_exit($k, 20);
		kill 'KILL', $k;
		waitpid($k, 0);
	}
}
is(join("\n", @failures), '', "$trials trials of SIGTERM under load: each exits 0 within $exit_deadline s");

# What was acknowledged is stored, exactly once.
my @acked;
for my $f (@acked_files)
{
	open(my $fh, '<', $f) or next;
	chomp(my @ids = <$fh>);
	push @acked, @ids;
}
cmp_ok(scalar(@acked), '>=', 10 * $trials, 'the clients were answered 200 (' . scalar(@acked) . ' messages)');
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox') or die 'inbox not drained';
my %stored = map { $_ => 1 } split /\n/,
  $node->safe_psql('postgres', q{SELECT event_id FROM cdp.events WHERE event_id LIKE 't%-c%'});
my @missing = grep { !$stored{$_} } @acked;
is(scalar(@missing), 0, 'every message answered 200 is stored') or diag("missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");
is($node->safe_psql('postgres', q{SELECT count(*) - count(DISTINCT event_id) FROM cdp.events}), '0', 'none twice');

$node->stop;
done_testing();
