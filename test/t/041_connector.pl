# pg_cdp_connector against real servers on loopback: a webhook receiver
# that fails a fifth of its requests and hangs on some, aiosmtpd, and a
# file.  10,000 messages over three channels all arrive at least once, a
# repeat only ever repeats a message's dedupe key, and nothing is lost
# when the connector is killed mid-batch, nor when PostgreSQL stops at
# once under it.  Then: hard bounces, dead letters, a clean SIGTERM, and
# the command line's exit statuses.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;
use File::Basename;
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep time);

# The receivers log UTF-8; it is read as bytes, like this file's literals.
my $json = JSON::PP->new;

my $here = dirname(__FILE__) . '/../connector';
my $python = '/usr/bin/python3';    # Debian's, with python3-aiosmtpd
my $dir = PostgreSQL::Test::Utils::tempdir();

my $node = cdp_node('connector', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE connector LOGIN IN ROLE cdp_connector;
});

# The outbox's API, or a stand-in of it on a plain table where the
# extension has none yet (test/connector/standin.sql).
my $real = $node->safe_psql('postgres', q{SELECT to_regprocedure('cdp.claim(text, integer, interval)') IS NOT NULL}) eq 't';
my $outbox = $real ? 'cdp.outbox' : 'cdp.standin_outbox';
my $open = q{status NOT IN ('delivered', 'dead', 'cancelled', 'suppressed')};
diag($real ? 'against the extension\'s outbox' : 'against the SQL stand-in of the outbox API');

my $people = 1000;
if ($real)
{
	$node->safe_psql('postgres', qq{
INSERT INTO cdp.channels (name, kind, address_type, requires_consent, max_attempts, backoff_base, backoff_max)
VALUES ('hooks', 'webhook', NULL, false, 100, '50 milliseconds', '500 milliseconds'),
       ('mail', 'email', 'email', false, 100, '50 milliseconds', '500 milliseconds'),
       ('print', 'print', NULL, false, 100, '50 milliseconds', '500 milliseconds');
INSERT INTO cdp.templates (name, channel, subject, body, body_html)
VALUES ('hook', 'hooks', NULL, 'order {{payload.n}}', NULL),
       ('mail', 'mail', 'Grüße, {{traits.first_name | default: "there"}} ✓', 'Hello {{traits.first_name | default: "there"}},\n.\nnumber {{payload.n}}',
        '<p>Hello {{traits.first_name | default: "there"}}</p>'),
       ('print', 'print', NULL, 'coupon {{payload.n}}', NULL);
SELECT count(cdp.identify(jsonb_build_object('user_id', 'u-' || g,
                          'email', CASE WHEN g % 100 = 0 THEN 'bounce' ELSE 'p' END || g || '\@shop.test'),
                          jsonb_build_object('first_name', 'Zoë ' || g)))
  FROM generate_series(1, $people) g;
});
}
else
{
	$node->safe_psql('postgres', slurp_file("$here/standin.sql"));
}

# enqueue(channel, first, count): messages first .. first+count-1 of the
# channel, to people round-robin, with dedupe keys "<channel>-<n>" (and
# "reject-<n>" for every 500th webhook, which the receiver refuses with 422).
sub enqueue
{
	my ($channel, $first, $count) = @_;
	my $last = $first + $count - 1;
	my $key = qq{CASE WHEN '$channel' = 'hooks' AND n % 500 = 0 THEN 'reject' ELSE '$channel' END || '-' || n};
	if ($real)
	{
		my $tmpl = $channel eq 'hooks' ? 'hook' : $channel;
		$node->safe_psql('postgres', qq{
SELECT count(cdp.enqueue(cdp.resolve(jsonb_build_object('user_id', 'u-' || (1 + n % $people))),
                         '$channel', '$tmpl', jsonb_build_object('n', n), NULL, $key))
  FROM generate_series($first, $last) n});
	}
	else
	{
		$node->safe_psql('postgres', qq{
INSERT INTO cdp.standin_outbox (profile_id, channel, dedupe_key, address, subject, body, body_html, payload)
SELECT 1 + n % $people, '$channel', $key,
       CASE WHEN '$channel' = 'mail' THEN CASE WHEN (1 + n % $people) % 100 = 0 THEN 'bounce' ELSE 'p' END
            || (1 + n % $people) || '\@shop.test' END,
       'Grüße ✓ ' || n, E'Hello,\n.\nnumber ' || n, CASE WHEN n % 2 = 0 THEN '<p>' || n || '</p>' END,
       jsonb_build_object('n', n)
  FROM generate_series($first, $last) n});
	}
}

sub open_count
{
	my ($channel) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE $open"
		  . ($channel ? " AND channel = '$channel'" : ''));
}

sub wait_for
{
	my ($what, $timeout, $cond) = @_;
	my $t0 = time();
	while (time() - $t0 < $timeout)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	diag("timed out waiting for $what");
	return 0;
}

# --- the receivers ---
my $http_log = "$dir/http.log";
my $smtp_log = "$dir/smtp.log";
my $file_out = "$dir/print.jsonl";
my $portfile = "$dir/http.port";
my $http = IPC::Run::start([ $python, "$here/http_sink.py", $portfile, $http_log, '--fail-rate', '0.2',
		'--hang-rate', '0.02', '--hang-seconds', '3' ], '>', "$dir/http.out", '2>&1');
my $smtp_port = PostgreSQL::Test::Cluster::get_free_port();
my $smtp = IPC::Run::start([ $python, "$here/smtp_sink.py", $smtp_port, $smtp_log ], '>', "$dir/smtp.out", '2>&1');
wait_for('the webhook receiver', 20, sub { -s $portfile }) or BAIL_OUT('no webhook receiver');
my $http_port = slurp_file($portfile);
wait_for('the SMTP server', 20, sub {
	IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $smtp_port, Timeout => 1) }) or BAIL_OUT('no SMTP server');

my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=connector';
my $config = "$dir/connector.conf";
open(my $cf, '>', $config) or die;
print $cf qq{# the test's connector
conninfo = '$conninfo'
concurrency = 32
lease = 4
poll_interval = 200
reconnect_max = 1

[channel hooks]
kind = webhook
url = http://127.0.0.1:$http_port/hook
timeout_ms = 1000
header = X-Test: yes

[channel mail]
kind = smtp
url = smtp://127.0.0.1:$smtp_port
from = "Le Shöp <news\@shop.test>"
tls = no
timeout = 3

[channel print]
kind = file
path = $file_out
batch = 500
};
close $cf;

my $conn_log = "$dir/connector.log";
my $runs = 0;

sub start_connector
{
	$runs++;
	return IPC::Run::start([ 'pg_cdp_connector', '--config', $config ], '>>', $conn_log, '2>>', $conn_log);
}

# --- 10,000 messages, with a kill and an immediate stop of PostgreSQL ---
my %count = (hooks => 3000, mail => 1000, print => 6000);
enqueue($_, 1, $count{$_}) for sort keys %count;
is(open_count(), '10000', '10,000 messages waiting');

my $c = start_connector();
ok(wait_for('a first part delivered', 60, sub { open_count() < 8500 }), 'delivering');
$c->signal('KILL');
$c->finish;
note('killed with ' . open_count() . ' waiting');
$c = start_connector();
ok(wait_for('half delivered', 60, sub { open_count() < 5000 }), 'delivering again after SIGKILL');
$node->stop('immediate');
$node->start;
note('PostgreSQL restarted with ' . open_count() . ' waiting');
ok(wait_for('all settled', 100, sub { open_count() eq '0' }), 'every message settled')
  or diag($node->safe_psql('postgres', "SELECT channel, status, count(*) FROM $outbox GROUP BY 1, 2"));
like(slurp_file($conn_log), qr/reconnected to PostgreSQL/, 'the connector reconnected by itself');

# What each receiver got, by outbox id, with the dedupe key it came with.
my %key_of = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', "SELECT outbox_id, coalesce(dedupe_key, '') FROM $outbox");
my (%got, $wrong_key, $bad_body);
$wrong_key = $bad_body = 0;
for my $line (split /\n/, slurp_file($http_log))
{
	my ($key, $status, $id, $ok) = split /\t/, $line;
	$wrong_key++ unless defined $key_of{$id} && $key_of{$id} eq $key;
	$bad_body++ unless $ok eq 'ok';
	$got{hooks}{$id}++ if $status eq '200';
}
for my $line (split /\n/, slurp_file($smtp_log))
{
	my $m = $json->decode($line);
	$got{mail}{ $m->{outbox_id} }++;
}
for my $line (split /\n/, slurp_file($file_out))
{
	my $m = $json->decode($line);
	$wrong_key++ unless ($key_of{ $m->{outbox_id} } // '-') eq ($m->{dedupe_key} // '');
	$got{print}{ $m->{outbox_id} }++;
}
is($wrong_key, 0, 'every delivery carried its own message\'s dedupe key');
is($bad_body, 0, 'every webhook body was the message\'s JSON');
for my $ch (sort keys %count)
{
	my @expected = split /\n/, $node->safe_psql('postgres',
		"SELECT outbox_id FROM $outbox WHERE channel = '$ch' AND status = 'delivered' ORDER BY 1");
	my @missing = grep { !$got{$ch}{$_} } @expected;
	my $dups = grep { $got{$ch}{$_} > 1 } keys %{ $got{$ch} };
	is(scalar(@missing), 0, "$ch: every delivered message arrived at least once ($dups repeated)");
}
is($node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE channel = 'hooks' AND status = 'delivered'"),
	$count{hooks} - $count{hooks} / 500, 'every webhook but the refused ones acked');
is($node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE channel = 'print' AND status = 'delivered'"),
	$count{print}, 'every file message acked');

# A receiver's 422 is a dead letter at once; the hung and failed ones were retried.
is($node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE status = 'dead' AND dedupe_key LIKE 'reject-%'"
	  . " AND last_error LIKE 'HTTP 422%'"), $count{hooks} / 500, '4xx webhook: a dead letter, with the status as its error');
my $http_text = slurp_file($http_log);
ok($http_text =~ /\t500\t/ && $http_text =~ /\t429\t/ && $http_text =~ /\thang\t/,
	'the receiver did fail, refuse and hang');
is($node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE status = 'dead' AND dedupe_key NOT LIKE 'reject-%'"
	  . " AND channel <> 'mail'"), '0', 'no other dead letter');

# SMTP: the bounce addresses got 550: a hard bounce, reported.
my $bounces = $node->safe_psql('postgres',
	"SELECT count(*) FROM $outbox WHERE channel = 'mail' AND status = 'dead' AND last_error LIKE 'SMTP 550%'");
cmp_ok($bounces, '>', 0, "5xx SMTP replies: dead letters ($bounces)");
is($node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE channel = 'mail' AND status = 'dead'"), $bounces,
	'and no other mail failed for good');
if ($real)
{
	is($node->safe_psql('postgres', q{SELECT count(DISTINCT address) FROM cdp.suppressions WHERE address LIKE 'bounce%'}),
		$people / 100, 'each bounced address suppressed');
	is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM cdp.events WHERE event = 'Message Bounced'
		AND properties->'detail'->>'type' = 'hard'}), 't', 'a Message Bounced event with type hard');
	cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event = 'Message Delivered'}), '>=',
		9000, 'Message Delivered events reported');
}
else
{
	is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.standin_reports WHERE status = 'bounced'
		AND detail->>'type' = 'hard'}), $bounces, 'each bounce reported as hard');
	cmp_ok($node->safe_psql('postgres', q{SELECT count(DISTINCT outbox_id) FROM cdp.standin_reports WHERE status = 'delivered'}),
		'>=', 9000, 'deliveries reported');
}

# The emails themselves: MIME that Python's parser reads back.
my @mails = map { $json->decode($_) } split /\n/, slurp_file($smtp_log);
my ($m) = grep { $_->{html} } @mails;
ok($m, 'an email with an HTML part');
is($m->{multipart}, 'multipart/alternative', 'sent as multipart/alternative');
like($m->{subject}, qr/^Grüße.*✓/, 'a non-ASCII subject decoded back (RFC 2047)');
is($m->{from}, 'Le Shöp <news@shop.test>', 'the From display name too');
like($m->{text}, qr/\n\.\n/, 'a line of a single dot survived');
is($m->{message_id}, "<outbox-$m->{outbox_id}\@shop.test>", 'Message-ID from the outbox id');
is(scalar(grep { !$_->{crlf} } @mails), 0, 'every line ended with CRLF');

# --- SIGTERM: in-flight deliveries finish, what was delivered is acked, exit 0 ---
enqueue('print', 100_001, 3000);
enqueue('hooks', 100_001, 600);
ok(wait_for('some of the new ones delivered', 30, sub { open_count() < 3600 }), 'the new ones are being delivered');
$c->signal('TERM');
$c->finish;
is($c->full_result(0), 0, 'SIGTERM: exit status 0');
like(slurp_file($conn_log), qr/stopping: no more claims/, 'it logged its stop');
is($node->safe_psql('postgres', "SELECT count(*) FROM $outbox WHERE status = 'leased'"), '0',
	'nothing left leased: every delivery in flight was settled');
my %in_file = map { ($json->decode($_)->{outbox_id} => 1) } split /\n/, slurp_file($file_out);
my @unacked = grep { $in_file{$_} } split /\n/,
  $node->safe_psql('postgres', "SELECT outbox_id FROM $outbox WHERE channel = 'print' AND $open");
is(scalar(@unacked), 0, 'every line written to the file was acked');
$c = start_connector();
ok(wait_for('the rest', 60, sub { open_count() eq '0' }), 'restarted, it delivers the rest');
$c->signal('TERM');
$c->finish;
is($c->full_result(0), 0, 'exit status 0 again');

# --- the command line ---
my ($out, $err) = ('', '');
IPC::Run::run([ 'pg_cdp_connector', '--help' ], '>', \$out, '2>', \$err);
is($?, 0, '--help: exit status 0');
like($out, qr/Exit status: 0 stopped by SIGTERM/, '--help documents the exit statuses');
like($out, qr/kind = webhook/, 'and the config file');
IPC::Run::run([ 'pg_cdp_connector', '--version' ], '>', \$out, '2>', \$err);
like($out, qr/^pg_cdp_connector \d+\.\d+/, '--version');

sub run_with
{
	my ($text) = @_;
	my $f = "$dir/bad.conf";
	open(my $fh, '>', $f) or die;
	print $fh $text;
	close $fh;
	IPC::Run::run([ 'pg_cdp_connector', '--config', $f ], '>', \$out, '2>', \$err, IPC::Run::timeout(30));
	return $? >> 8;
}
IPC::Run::run([ 'pg_cdp_connector' ], '>', \$out, '2>', \$err);
is($? >> 8, 1, 'no --config: exit status 1');
IPC::Run::run([ 'pg_cdp_connector', '--config', "$dir/nowhere.conf" ], '>', \$out, '2>', \$err);
is($? >> 8, 1, 'a missing config file: exit status 1');
is(run_with("conninfo = '$conninfo'\n[channel x]\nkind = fax\n"), 1, 'an unknown kind: exit status 1');
like($err, qr/bad\.conf:3: kind must be webhook, smtp or file/, 'saying where and why');
is(run_with("conninfo = '$conninfo'\ncolour = blue\n"), 1, 'an unknown setting: exit status 1');
is(run_with("conninfo = '$conninfo'\n[channel x]\nkind = webhook\n"), 1, 'a webhook without url: exit status 1');
like($err, qr/channel "x" has no url/, 'saying which');
is(run_with("conninfo = '$conninfo'\nlease = 5\n[channel x]\nkind = webhook\nurl = http://127.0.0.1:1/\ntimeout = 10\n"),
	1, 'a timeout as long as the lease: exit status 1');
is(run_with("[channel x]\nkind = file\npath = $dir/x\n"), 1, 'no conninfo: exit status 1');
is(run_with("conninfo = '$conninfo'\nbatch = lots\n[channel x]\nkind = file\npath = $dir/x\n"), 1,
	'a bad number: exit status 1');
my $nowhere = PostgreSQL::Test::Cluster::get_free_port();
is(run_with("conninfo = 'host=127.0.0.1 port=$nowhere dbname=postgres connect_timeout=2'\n[channel x]\nkind = file\npath = $dir/x\n"),
	2, 'PostgreSQL unreachable at start: exit status 2');
$node->safe_psql('postgres', 'CREATE ROLE stranger LOGIN');
is(run_with("conninfo = 'host=" . $node->host . ' port=' . $node->port
	  . " dbname=postgres user=stranger'\n[channel print]\nkind = file\npath = $dir/x\n"), 3,
	'a role outside cdp_connector: exit status 3');
like($err, qr/permission denied/, 'saying why');

diag("the connector's log:\n" . slurp_file($conn_log)) unless Test::More->builder->is_passing;
$http->kill_kill;
$smtp->kill_kill;
$node->stop;
done_testing();
