# pg_cdp_load: a file of JSON lines with the lines that make a plain COPY
# abort (CRLF endings, a Latin-1 byte) and the ones the drain cannot take
# (malformed, not an object, too large) loads whole, every bad line kept as
# a reject naming its file and line; loading it again loads nothing twice;
# a server restart in the middle of a load costs nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Handle;
use IPC::Run;

my $node = cdp_node('loader', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE loader LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('shop', 'shop-write-key-0123456789', writer => 'loader');
});
my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=loader';
$ENV{PG_CDP_WRITE_KEY} = 'shop-write-key-0123456789';

my $dir = PostgreSQL::Test::Utils::tempdir;
my $file = "$dir/events.jsonl";
my @lines = (
	qq[{"type": "track", "userId": "u-2", "event": "No Id"}\n],                                 # 1
	qq[{"type": "track", "userId": "u-1", "event": "Windows Line", "messageId": "m-1"}\r\n],    # 2
	qq[\n],                                                                                     # 3
	qq[{"type": "track", "userId": "caf\xe9", "event": "Latin-1"}\n],                           # 4
	qq[{"type": "track", "userId": "u-3", "event": "Windows No Id"}\r\n],                       # 5
	qq[{"type": "track", "userId": "u-4", "event": \n],                                         # 6
	qq[{"type": "track", "userId": "u-5", "event": "Huge", "properties": {"x": "]
	  . ('x' x 100_000) . qq["}}\n],                                                            # 7
	qq[  \r\n],                                                                                 # 8
	qq[{"type": "track", "userId": "u-6", "event": "Escapes", "messageId": "m-2",]
	  . qq[ "properties": {"note": "tab\\there \\\\ back"}}\n],                                 # 9
	qq[[1, 2, 3]\n],                                                                            # 10
	qq[{"type": "track", "userId": "u-7", "event": "Last No Newline"}]);                      # 11
open(my $fh, '>:raw', $file) or die $!;
print $fh @lines;
close $fh;

sub wait_drained
{
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox')
	  or die 'inbox not drained';
}

sub load
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_cdp_load', '--dbname', $conninfo, @_ ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(60));
	return ($? >> 8, $out, $err);
}

# --- the trap: a plain COPY of the same file, as the bulk path used to
# recommend, aborts on the CRLF line and loads nothing ---
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\copy cdp.inbox (message) FROM '$file' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')");
isnt($ret, 0, 'a plain COPY of the file fails');
like($stderr, qr/unquoted carriage return found in data/, 'on the line ending in CRLF');
# and without the CRLF lines, on the Latin-1 byte
my $lf_file = "$dir/lf.jsonl";
open($fh, '>:raw', $lf_file) or die $!;
print $fh grep { !/\r\n$/ } @lines;
close $fh;
($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\copy cdp.inbox (message) FROM '$lf_file' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')");
isnt($ret, 0, 'a plain COPY of the file without CRLF fails too');
like($stderr, qr/invalid byte sequence for encoding "UTF8": 0xe9/, 'on the Latin-1 byte');
is($node->safe_psql('postgres', 'SELECT (SELECT count(*) FROM cdp.inbox) + (SELECT count(*) FROM cdp.events)'),
	'0', 'and nothing of either file was loaded');

# --- pg_cdp_load loads the good lines and keeps the bad ones ---
my ($rc, $out, $err) = load('--source', 'shop', '--max-line', '4096', $file);
is($rc, 0, 'exit status 0') or diag($err);
like($out, qr/^\Q$file\E: 11 lines: 5 loaded \(3 given a line id\), 4 rejected, 2 empty$/m,
	'summary counts every line') or diag($out);
wait_drained();

is($node->safe_psql('postgres', q{SELECT string_agg(event || '/' || source, ', ' ORDER BY event) FROM cdp.events}),
	'Escapes/shop, Last No Newline/shop, No Id/shop, Windows Line/shop, Windows No Id/shop',
	'every good line is an event of the source, CR stripped');
is($node->safe_psql('postgres', q{
SELECT string_agg(CASE WHEN event_id LIKE 'line-%' THEN regexp_replace(event_id, '^(line-\d+-)[0-9a-f]{32}$', '\1…')
                       ELSE event_id END, ', ' ORDER BY event_id) FROM cdp.events}),
	'line-1-…, line-11-…, line-5-…, m-1, m-2', 'lines without a messageId got their line id, the others kept theirs');
is($node->safe_psql('postgres', q{SELECT properties->>'note' = 'tab' || chr(9) || 'here ' || chr(92) || ' back'
                                   FROM cdp.events WHERE event = 'Escapes'}),
	't', 'backslash escapes arrive as sent');

my $rejects = q{
SELECT string_agg(sqlstate || ' ' || substring(reason from '^line (\d+) of '), ', ' ORDER BY reject_id)
FROM cdp.inbox_rejects};
is($node->safe_psql('postgres', $rejects), '22021 4, 22P02 6, 54000 7, 22023 10',
	'every bad line is a reject with its line number');
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM cdp.inbox_rejects WHERE reason LIKE 'line % of $file %' AND source = 'shop'}),
	'4', 'and its file name and source');
is($node->safe_psql('postgres', q{SELECT reason FROM cdp.inbox_rejects WHERE sqlstate = '22021'}),
	"line 4 of $file is not valid UTF-8 at byte " . (index($lines[3], "\xe9") + 1)
	  . ' (invalid bytes are kept as \xNN)',
	'the Latin-1 line: where');
is($node->safe_psql('postgres', q{SELECT message FROM cdp.inbox_rejects WHERE sqlstate = '22021'}),
	'{"type": "track", "userId": "caf\xE9", "event": "Latin-1"}', 'and its text, the byte kept as \xE9');
is($node->safe_psql('postgres', q{SELECT reason || ' ' || length(message) FROM cdp.inbox_rejects WHERE sqlstate = '54000'}),
	"line 7 of $file is larger than 4096 bytes (" . (length($lines[6]) - 1)
	  . ' bytes; its first 65536 bytes are kept) 65536',
	'the oversized line: its size and a prefix');
like($node->safe_psql('postgres', q{SELECT reason FROM cdp.inbox_rejects WHERE sqlstate = '22P02'}),
	qr/^line 6 of \Q$file\E is not valid JSON: /, 'the malformed line');

# --- loading it again, compressed, through stdin: nothing twice ---
my $gz;
gzip \join('', @lines) => \$gz or die $GzipError;
$out = '';
$err = '';
IPC::Run::run([ 'pg_cdp_load', '--dbname', $conninfo, '--source', 'shop', '--max-line', '4096', '-' ],
	'<', \$gz, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
is($? >> 8, 0, 'the gzip copy on stdin: exit status 0') or diag($err);
like($out, qr/^stdin: 11 lines: 5 loaded/m, 'its lines loaded into the inbox');
wait_drained();
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.events'), '5', 'but no event twice');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.inbox_rejects WHERE reason LIKE 'line % of stdin %'}),
	'4', 'its bad lines are rejects again, naming stdin');

# without line ids, lines that have no messageId load again
($rc, $out, $err) = load('--source', 'shop', '--max-line', '4096', '--no-line-ids', $file);
is($rc, 0, '--no-line-ids: exit status 0') or diag($err);
wait_drained();
is($node->safe_psql('postgres', q{SELECT string_agg(event, ', ' ORDER BY event) FROM cdp.events
                                   WHERE event_id NOT LIKE 'line-%' AND event_id NOT LIKE 'm-%'}),
	'Last No Newline, No Id, Windows No Id', '--no-line-ids: the lines without an id loaded a second time');

# --- a restart of PostgreSQL in the middle of a load: the batch is sent again ---
my $stream = join('', map { qq[{"type": "track", "userId": "s-$_", "event": "Stream", "properties": {"n": $_}}\n] } 1 .. 6000);
my $cut = index($stream, "\n", 400_000) + 1;	# more than the loader reads at once
my $h = IPC::Run::start([ 'pg_cdp_load', '--dbname', $conninfo, '--source', 'shop', '--batch-size', '1000', '-' ],
	'<pipe', \*TO_LOADER, '>', "$dir/stream.out", '2>', "$dir/stream.err", IPC::Run::timeout(120));
TO_LOADER->autoflush(1);
TO_LOADER->blocking(1);    # IPC::Run makes it non-blocking
print TO_LOADER substr($stream, 0, $cut);
# a batch is committed and drained, and the loader is between batches
$node->poll_query_until('postgres', q{
SELECT (SELECT count(*) FROM cdp.events WHERE event = 'Stream') >= 1000
   AND NOT EXISTS (SELECT FROM cdp.inbox)
   AND EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'COPY cdp.inbox %' AND state = 'idle')})
  or die 'the first batches did not arrive';
$node->restart;
print TO_LOADER substr($stream, $cut);
close TO_LOADER;
$h->finish;
my $sout = slurp_file("$dir/stream.out");
my $serr = slurp_file("$dir/stream.err");
is($h->result(0), 0, 'a restart in the middle: exit status 0') or diag($serr);
like($serr, qr/sending them again/, 'the batch in flight was sent again');
like($sout, qr/^stdin: 6000 lines: 6000 loaded/m, 'every line loaded');
wait_drained();
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT properties->>'n') FROM cdp.events WHERE event = 'Stream'}),
	'6000 6000', 'every line is one event');

# --- configuration errors: exit status 1; no server: 2 ---
($rc, $out, $err) = load('--source', 'nowhere', $file);
is($rc, 1, 'a write key of another source: exit status 1');
like($err, qr/the write key belongs to source "shop", not "nowhere"/, 'with the reason');
{
	local $ENV{PG_CDP_WRITE_KEY};
	IPC::Run::run([ 'pg_cdp_load', '--dbname', $node->connstr('postgres'), '--source', 'nowhere', $file ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	is($? >> 8, 1, 'unknown source: exit status 1');
	like($err, qr/source "nowhere" does not exist/, 'with the reason');
}
{
	local $ENV{PG_CDP_WRITE_KEY};
	($rc, $out, $err) = load('--source', 'shop', $file);
	is($rc, 1, 'a role that cannot read cdp.sources, without the write key: exit status 1');
	like($err, qr/HINT:  Give the source's write key/, 'with a hint');
}
{
	local $ENV{PG_CDP_WRITE_KEY} = 'not-a-key-of-anyone';
	($rc, $out, $err) = load($file);
	is($rc, 1, 'unknown write key: exit status 1');
}
($rc, $out, $err) = load('--batch-size', 'lots', $file);
is($rc, 1, 'bad option value: exit status 1');
($rc, $out, $err) = load("$dir/missing.jsonl");
is($rc, 1, 'missing file: exit status 1');
my $rcode = system('pg_cdp_load --help >/dev/null');
is($rcode >> 8, 0, '--help: exit status 0');
like(`pg_cdp_load --help`, qr/Exit status: 0 .* 2 PostgreSQL could not/s, 'and it lists the exit statuses');
$node->stop;
($rc, $out, $err) = load($file);
is($rc, 2, 'no server: exit status 2');
like($err, qr/cannot connect to PostgreSQL/, 'with the reason');

done_testing();
