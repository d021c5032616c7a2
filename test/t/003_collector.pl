# pg_cdp_collector: Segment's HTTP API in front of cdp.inbox. Authentication,
# limits, malformed and hostile input, gzip, CORS, the settings document,
# slow clients, PostgreSQL going away, and a clean stop on SIGTERM.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Compress::Gzip qw(gzip $GzipError);
use IPC::Run;
use MIME::Base64;
use Time::HiRes qw(usleep time);

my $node = cdp_node('collector', "cdp.naptime = 100\n");
$node->safe_psql('postgres', q{
CREATE EXTENSION pg_cdp;
CREATE ROLE collector LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('web', 'web-write-key-0123456789', writer => 'collector');
SELECT cdp.create_source('old-app', 'old-app-write-key-0123456789', writer => 'collector');
UPDATE cdp.sources SET enabled = false WHERE name = 'old-app';
});
# write keys as long as cdp.create_source accepts
my $key128 = 'k' x 128;
my $key1024 = join('', map { chr(33 + ($_ * 7) % 94) } 1 .. 1024) =~ tr/:/;/r;
$node->safe_psql('postgres', "SELECT cdp.create_source('long-128', '$key128', writer => 'collector')");
$node->safe_psql('postgres', "SELECT cdp.create_source('long-1024', \$k\$$key1024\$k\$, writer => 'collector')");

my ($collector, $base, $conninfo, $outref, $errref) =
  start_collector($node, '--timeout', '2', '--flush-ms', '10');
my ($port) = $base =~ /:(\d+)$/;
my ($out, $err) = ('', '');
my $http = HTTP::Tiny->new(timeout => 10);
my $auth = 'Basic ' . encode_base64('web-write-key-0123456789:', '');

sub post
{
	my ($path, $body, %headers) = @_;
	return $http->request('POST', "$base$path",
		{ content => $body, headers => { 'Content-Type' => 'application/json', %headers } });
}

sub wait_drained
{
	$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox')
	  or die 'inbox not drained';
}

# --- the happy path: every endpoint, Basic auth or writeKey in the body ---
my $r = post('/v1/identify',
	'{"userId": "u-1", "anonymousId": "a-1", "traits": {"email": "ann@shop.test"}, "messageId": "m-1"}',
	Authorization => $auth);
is($r->{status}, 200, 'identify accepted');
is($r->{content}, '{"success":true}', 'Segment-style success body');
is(post('/v1/track', '{"userId": "u-1", "event": "Order Completed", "messageId": "m-2", "properties": {"total": 9.5}}',
		Authorization => $auth)->{status}, 200, 'track accepted');
is(post('/v1/page', '{"writeKey": "web-write-key-0123456789", "anonymousId": "a-1", "name": "Home", "messageId": "m-3"}')->{status},
	200, 'writeKey in the body authenticates too');
is(post('/v1/screen', '{"userId": "u-1", "name": "Cart", "messageId": "m-4"}', Authorization => $auth)->{status}, 200, 'screen');
is(post('/v1/group', '{"userId": "u-1", "groupId": "g-1", "messageId": "m-5"}', Authorization => $auth)->{status}, 200, 'group');
is(post('/v1/alias', '{"userId": "u-1", "previousId": "a-old", "messageId": "m-6"}', Authorization => $auth)->{status}, 200, 'alias');
# analytics.js posts text/plain to avoid a CORS preflight
is(post('/v1/t', '{"userId": "u-1", "event": "Short Path", "messageId": "m-7", "writeKey": "web-write-key-0123456789"}',
		'Content-Type' => 'text/plain')->{status}, 200, 'text/plain on the short path');
wait_drained();
is($node->safe_psql('postgres', "SELECT string_agg(event_id || ':' || type, ',' ORDER BY event_id) FROM cdp.events"),
	'm-1:identify,m-2:track,m-3:page,m-4:screen,m-5:group,m-6:alias,m-7:track', 'all seven landed once');
is($node->safe_psql('postgres', "SELECT count(DISTINCT profile_id) FROM cdp.events"), '1', 'one person');
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.events WHERE source = 'web'"), '7', 'source recorded');
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.inbox_rejects WHERE message LIKE '%writeKey%'"), '0',
	'the write key is never stored');

# --- retries with the same messageId land once ---
post('/v1/track', '{"userId": "u-1", "event": "Retry", "messageId": "m-retry"}', Authorization => $auth) for 1 .. 3;
wait_drained();
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.events WHERE event_id = 'm-retry'"), '1', 'retries deduplicated');

# --- authentication ---
is(post('/v1/track', '{"userId": "u", "event": "x"}')->{status}, 401, 'no write key: 401');
is(post('/v1/track', '{"userId": "u", "event": "x"}', Authorization => 'Basic ' . encode_base64('wrong-key-000000:', ''))->{status},
	401, 'wrong write key: 401');
is(post('/v1/track', '{"userId": "u", "event": "x"}',
		Authorization => 'Basic ' . encode_base64('old-app-write-key-0123456789:', ''))->{status}, 403, 'disabled source: 403');

# --- malformed and hostile input ---
$r = post('/v1/track', '{"userId": "u", "event": ', Authorization => $auth);
is($r->{status}, 400, 'malformed JSON: 400');
like($r->{content}, qr/"error":"malformed JSON/, 'with a JSON error');
is(post('/v1/track', "{\"userId\": \"u-\xff\xfe\", \"event\": \"x\"}", Authorization => $auth)->{status}, 400,
	'invalid UTF-8: 400');
is(post('/v1/batch', '{"batch": "nope"}', Authorization => $auth)->{status}, 400, 'batch without an array: 400');
is(post('/v1/track', '"just a string"', Authorization => $auth)->{status}, 400, 'not an object: 400');
is($http->get("$base/v1/nowhere")->{status}, 404, 'unknown path: 404');
$r = $http->get("$base/v1/track");
is($r->{status}, 405, 'GET on an endpoint: 405');
is($r->{headers}{allow}, 'POST, OPTIONS', 'with Allow');
is(post('/v1/track', '{"userId": "u", "event": "x"}', Authorization => $auth, 'Content-Encoding' => 'br')->{status},
	415, 'unsupported content encoding: 415');

my $big = '{"userId": "u", "event": "x", "properties": {"blob": "' . ('x' x 600_000) . '"}}';
$r = post('/v1/track', $big, Authorization => $auth);
is($r->{status}, 413, 'body over 500 KB: 413');
like($r->{content}, qr/too large/, 'with a JSON error');

# a gzip bomb: 50 MB of zeros in a few KB
my $bomb;
gzip \('{"batch": [' . ('0' x 50_000_000)) => \$bomb or die $GzipError;
is(post('/v1/batch', $bomb, Authorization => $auth, 'Content-Encoding' => 'gzip')->{status}, 413,
	'gzip bomb: 413 after inflating to the limit');

# hostile Content-Length values, on a raw socket
sub raw_request
{
	my ($text) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5) or die $!;
	print $s $text;
	my $resp = '';
	while (my $line = <$s>) { $resp .= $line; }
	close $s;
	return $resp;
}
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
	qr/^HTTP\/1\.1 (413|400)/, 'absurd Content-Length refused before reading');
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n"),
	qr/^HTTP\/1\.1 4\d\d/, 'negative Content-Length refused');

# a slow client that never finishes its body is cut off, without blocking others
my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 10) or die $!;
print $slow "POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"userId\":";
my $t0 = time();
is(post('/v1/track', '{"userId": "u-1", "event": "While Slow", "messageId": "m-slow"}', Authorization => $auth)->{status},
	200, 'other clients are served while one is slow');
my $got = <$slow>;
my $elapsed = time() - $t0;
ok(!defined($got) || $got eq '' || $got =~ /^HTTP\/1\.1 4\d\d/, 'the slow client was timed out');
cmp_ok($elapsed, '<', 8, "within the configured timeout ($elapsed s)");
close $slow;

# --- a batch with bad messages: the good ones land, the bad ones are rejects ---
my $huge = 'y' x 40_000;
$r = post('/v1/batch', qq({"batch": [
  {"type": "track", "userId": "u-2", "event": "Good 1", "messageId": "b-1"},
  {"type": "track", "userId": "u-2", "event": "Too Big", "messageId": "b-2", "properties": {"blob": "$huge"}},
  42,
  {"type": "track", "event": "No Ids", "messageId": "b-3"},
  {"type": "track", "userId": "u-2", "event": "Unicode ✓ 日本語", "messageId": "b-4",
   "properties": {"emoji": "🛒", "ctl": "tab\\tnewline\\ncr\\rbell\\u0007", "back": "a\\\\b"}}
], "context": {"library": {"name": "test"}}}), Authorization => $auth);
is($r->{status}, 200, 'a batch with bad messages is accepted');
wait_drained();
is($node->safe_psql('postgres', "SELECT string_agg(event, ',' ORDER BY event_id) FROM cdp.events WHERE event_id LIKE 'b-%'"),
	'Good 1,Unicode ✓ 日本語', 'the good ones landed');
is($node->safe_psql('postgres', q{SELECT properties->>'ctl' = E'tab\tnewline\ncr\rbell\u0007' AND properties->>'back' = 'a\b'
	FROM cdp.events WHERE event_id = 'b-4'}), 't', 'control characters and backslashes survive COPY');
is($node->safe_psql('postgres', "SELECT context->'library'->>'name' FROM cdp.events WHERE event_id = 'b-1'"), 'test',
	'the batch context reaches its messages');
is($node->safe_psql('postgres', q{SELECT string_agg(sqlstate || ' ' || reason, '; ' ORDER BY reject_id) FROM cdp.inbox_rejects}),
	'54000 message is larger than 32768 bytes; 22023 message must be a JSON object; 22023 message needs "userId" or "anonymousId"',
	'the bad ones are rejects with their reason');

# Messages go through as sent, less the write key however it is spelled;
# duplicate keys are valid JSON (the last one counts, as in jsonb); what
# PostgreSQL cannot store (\u0000) becomes a reject, not a failed batch.
$r = post('/v1/batch', q({"writeKey": "web-write-key-0123456789", "batch": [
  {"type": "track", "userId": "u-5", "event": "Escaped Key", "messageId": "s-1", "write\u004bey": "leak-1"},
  {"type": "track", "userId": "u-5", "event": "first", "event": "Duplicate Key", "messageId": "s-2"},
  {"type": "track", "userId": "u-5", "event": "Nul", "messageId": "s-3", "writeKey": "leak-2",
   "properties": {"x": "a\u0000b"}},
  {"type" : "track" , "userId" : "u-5","event":"Spaced"	,"messageId":"s-4",
   "properties" : { "n" : [ 1, 2.5e3, -0, true, null, {}, [] ], "s": "\ud83d\uded2 \"q\" \\\\ \/" } }
]}));
is($r->{status}, 200, 'body write key, odd but valid JSON: accepted');
wait_drained();
is($node->safe_psql('postgres', "SELECT string_agg(event, ',' ORDER BY event_id) FROM cdp.events WHERE event_id LIKE 's-%'"),
	'Escaped Key,Duplicate Key,Spaced', 'valid messages landed, duplicate key: the last one');
is($node->safe_psql('postgres', q{SELECT properties->'n' = '[1, 2500, 0, true, null, {}, []]' AND properties->>'s' = E'\U0001F6D2 "q" \\\\ /'
	FROM cdp.events WHERE event_id = 's-4'}), 't', 'numbers, literals, escapes and surrogate pairs intact');
is($node->safe_psql('postgres', q{SELECT sqlstate FROM cdp.inbox_rejects WHERE message LIKE '%"s-3"%'}), '22P02',
	'\u0000 in a message: a reject');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.inbox_rejects WHERE message LIKE '%leak%' OR message LIKE '%web-write-key%'}),
	'0', 'no write key is stored, escaped or not');

# Refused before anything is queued: nesting bombs, lone surrogates, raw
# control characters, trailing garbage.
$r = post('/v1/track', '{"userId": "u", "event": "deep", "properties": ' . ('[' x 100_000) . (']' x 100_000) . '}',
	Authorization => $auth);
is($r->{status}, 400, 'nesting bomb: 400');
like($r->{content}, qr/nested too deep/, 'saying why');
like(post('/v1/track', '{"userId": "u", "event": "\ud800 alone"}', Authorization => $auth)->{content},
	qr/unpaired surrogate/, 'lone surrogate: 400 with the reason');
is(post('/v1/track', "{\"userId\": \"u\", \"event\": \"a\x01b\"}", Authorization => $auth)->{status}, 400,
	'raw control character in a string: 400');
like(post('/v1/track', '{"userId": "u", "event": "x"} trailing', Authorization => $auth)->{content},
	qr/after the value at byte 30/, 'trailing characters: 400 with the position');
is(post('/v1/batch', '{"batch": [{"type": "track", "userId": "u", "event": "x",}]}', Authorization => $auth)->{status},
	400, 'trailing comma: 400');

# received_at is the arrival time, used for clock-skew correction
post('/v1/track', '{"userId": "u-3", "event": "Skewed", "messageId": "m-skew", "timestamp": "2020-01-01T00:00:00Z", "sentAt": "2020-01-01T00:01:00Z"}',
	Authorization => $auth);
wait_drained();
is($node->safe_psql('postgres', q{SELECT abs(extract(epoch FROM (received_at - interval '1 minute') - occurred_at)) < 0.001
	FROM cdp.events WHERE event_id = 'm-skew'}), 't', 'timestamp corrected with the stamped receivedAt');

# --- a request the collector could never take gets a final status ---
# A single-message endpoint refuses a message over --max-message (a batch
# makes it a reject and stores the rest).
$r = post('/v1/track', '{"userId": "u-1", "event": "Big Single", "messageId": "m-big-single", "properties": {"blob": "'
	. ('z' x 40_000) . '"}}', Authorization => $auth);
is($r->{status}, 413, 'one message over 32 KB on /v1/track: 413');
like($r->{content}, qr/larger than 32768 bytes/, 'saying the limit');
# More messages than may ever wait (--max-pending) is refused for good, not 429.
my $many = '{"batch": [' . join(',', ('{}') x 50_001) . ']}';
$r = post('/v1/batch', $many, Authorization => $auth);
is($r->{status}, 413, 'a batch of more messages than --max-pending: 413, not a retryable 429');
like($r->{content}, qr/at most 50000 messages/, 'saying the limit');
is(post('/v1/batch', '{"batch": [' . join(',', ('{"type": "track", "userId": "u-many", "event": "Many"}') x 1000) . ']}',
		Authorization => $auth)->{status}, 200, 'a batch within the limit is taken');

# --- gzip: every member is read, trailing garbage refused ---
my ($gz1, $gz2, $gz_all);
gzip \'{"userId": "u-1", "event": "Two ' => \$gz1 or die $GzipError;
gzip \'Members", "messageId": "m-gz2"}' => \$gz2 or die $GzipError;
gzip \'{"userId": "u-1", "event": "One Member", "messageId": "m-gz1"}' => \$gz_all or die $GzipError;
is(post('/v1/track', $gz_all, Authorization => $auth, 'Content-Encoding' => 'gzip')->{status}, 200, 'gzip body: 200');
is(post('/v1/track', $gz1 . $gz2, Authorization => $auth, 'Content-Encoding' => 'gzip')->{status}, 200,
	'a two-member gzip body: 200');
$r = post('/v1/track', $gz_all . 'garbage', Authorization => $auth, 'Content-Encoding' => 'gzip');
is($r->{status}, 400, 'gzip followed by garbage: 400');
like($r->{content}, qr/gzip/, 'saying it is the gzip');
is(post('/v1/track', $gz_all . "\x1f\x8b\x08\0junk", Authorization => $auth, 'Content-Encoding' => 'gzip')->{status},
	400, 'gzip followed by a broken member: 400');
is(post('/v1/track', $gz_all . "\0\0\0\0", Authorization => $auth, 'Content-Encoding' => 'gzip')->{status},
	400, 'gzip followed by zeros: 400');
wait_drained();
is($node->safe_psql('postgres', "SELECT string_agg(event, ',' ORDER BY event_id) FROM cdp.events WHERE event_id LIKE 'm-gz%'"),
	'One Member,Two Members', 'both gzip bodies landed whole');

# --- write keys: whatever cdp.create_source accepts authenticates ---
for my $k ([ '128 characters', $key128 ], [ '1024 characters', $key1024 ])
{
	is(post('/v1/track', qq({"userId": "u-long", "event": "Long Key", "messageId": "m-long-$k->[0]"}),
			Authorization => 'Basic ' . encode_base64("$k->[1]:", ''))->{status}, 200, "a write key of $k->[0]: Basic auth");
	my $escaped = $k->[1] =~ s/(["\\])/\\$1/gr;
	is(post('/v1/track', qq({"userId": "u-long", "event": "Long Key", "messageId": "m-long-body-$k->[0]", "writeKey": "$escaped"}))
		  ->{status}, 200, "a write key of $k->[0]: in the body");
}
my ($cs_rc, $cs_out, $cs_err) = $node->psql('postgres', "SELECT cdp.create_source('too-long', '" . ('k' x 1025) . "')");
like($cs_err, qr/write key is too long/, 'create_source refuses a key the collector could not take');
($cs_rc, $cs_out, $cs_err) = $node->psql('postgres', "SELECT cdp.create_source('colon', 'web-write-key:0123456789')");
like($cs_err, qr/write key contains a colon/, 'create_source refuses a colon (HTTP Basic ends the user name there)');
wait_drained();
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT source, ',' ORDER BY source) FROM cdp.events WHERE event_id LIKE 'm-long-%'"),
	'long-1024,long-128', 'long keys authenticate as their sources');

# --- request smuggling: conflicting framing is refused, not guessed ---
my $smuggled = '{"userId": "u-9", "event": "Smuggled", "messageId": "m-smuggled"}';
my $inner = "POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nContent-Length: " . length($smuggled)
  . "\r\n\r\n$smuggled";
my $front = '{"userId": "u-9", "event": "Front", "messageId": "m-front"}';
my $resp = raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nContent-Length: " . length($front)
	  . "\r\nContent-Length: " . length($front . $inner) . "\r\n\r\n$front$inner");
like($resp, qr/^HTTP\/1\.1 400/, 'two Content-Length headers: 400');
is(() = $resp =~ /^HTTP\/1\.1 /mg, 1, 'and the connection closed: nothing after the body was read as a request');
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nContent-Length: 5\r\n"
	  . "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), qr/^HTTP\/1\.1 400/, 'Content-Length and Transfer-Encoding: 400');
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
	qr/^HTTP\/1\.1 (400|501)/, 'a transfer coding other than chunked: refused');
my $chunk = sprintf("%x\r\n%s\r\n0\r\n\r\n", length($front), $front);
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nContent-Length : " . length($front . $inner)
	  . "\r\n\r\n$front$inner"), qr/^HTTP\/1\.1 400[^\n]*\n(?!.*HTTP\/1\.1 )/s,
	'whitespace before a header\'s colon: 400, and nothing after it read');
like(raw_request("POST /v1/track HTTP/1.0\r\nHost: x\r\nAuthorization: $auth\r\nTransfer-Encoding: chunked\r\n\r\n$chunk"),
	qr/^HTTP\/1\.1 400/, 'Transfer-Encoding in HTTP/1.0: 400');
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nTransfer-Encoding: chunked\r\n"
	  . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n$chunk"), qr/^HTTP\/1\.1 400/, 'two Transfer-Encoding headers: 400');
like(raw_request("POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
	  . ($chunk =~ s/m-front/m-chunk/r)), qr/^HTTP\/1\.1 200/, 'a chunked body alone is fine');
is(post('/v1/track', '{"userId": "u-9", "event": "Marker", "messageId": "m-marker"}', Authorization => $auth)->{status}, 200,
	'a marker after them');
wait_drained();
is($node->safe_psql('postgres', q{SELECT string_agg(event_id, ',' ORDER BY event_id) FROM cdp.events
	WHERE event_id IN ('m-front', 'm-smuggled', 'm-chunk', 'm-marker')}), 'm-chunk,m-marker',
	'neither the front nor the smuggled request was stored');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.inbox_rejects WHERE message LIKE '%m-smuggled%' OR message LIKE '%m-front%'}),
	'0', 'not even as rejects');

# --- CORS and the settings document analytics.js loads ---
$r = $http->request('OPTIONS', "$base/v1/t", { headers => { Origin => 'http://shop.test',
	'Access-Control-Request-Headers' => 'content-type' } });
is($r->{status}, 204, 'preflight answered');
is($r->{headers}{'access-control-allow-origin'}, '*', 'any origin may post');
like($r->{headers}{'access-control-allow-methods'}, qr/POST/, 'POST allowed');
is($r->{headers}{'access-control-allow-credentials'}, undef, 'no credentials allowed');
$r = $http->get("$base/v1/projects/web-write-key-0123456789/settings");
is($r->{status}, 200, 'settings document served');
like($r->{content}, qr/"apiHost":"127\.0\.0\.1:$port\/v1","protocol":"http"/, 'pointing Segment.io at the collector');
is($r->{headers}{'cache-control'}, 'no-store', 'built from the Host header: not cacheable');
$r = $http->get("$base/v1/projects/web-write-key-0123456789/settings", { headers => { 'X-Forwarded-Proto' => 'https' } });
like($r->{content}, qr/"protocol":"https"/, 'https behind a TLS proxy');
is($http->get("$base/v1/projects/not-a-key-000000/settings")->{status}, 404, 'no settings for an unknown key');

# --- back-pressure (429) and a slow database (503) ---
{
	my $port2 = PostgreSQL::Test::Cluster::get_free_port();
	my ($o2, $e2) = ('', '');
	my $c2 = IPC::Run::start(
		[ 'pg_cdp_collector', '--port', $port2, '--dbname', $conninfo, '--max-pending', '150',
		  '--commit-timeout', '2', '--flushers', '1' ], '>', \$o2, '2>', \$e2);
	for (1 .. 50) { last if $http->get("http://127.0.0.1:$port2/health")->{success}; usleep(100_000); }

	# a session holds the inbox locked, so the collector's COPY waits
	my ($lo, $le) = ('', '');
	my $locker = IPC::Run::start(
		[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'postgres', '-c',
		  'BEGIN; LOCK TABLE cdp.inbox IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT;' ],
		'>', \$lo, '2>', \$le);
	$node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_locks WHERE relation = 'cdp.inbox'::regclass AND mode = 'AccessExclusiveLock' AND granted")
	  or die 'no lock';

	my $hundred = '{"batch": [' . join(',', map { qq({"type": "track", "userId": "u-bp", "event": "BP", "messageId": "bp-$_"}) } 1 .. 100) . ']}';
	my $a = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port2, Timeout => 20) or die $!;
	print $a "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: $auth\r\nContent-Type: application/json\r\n"
	  . "Content-Length: " . length($hundred) . "\r\nConnection: close\r\n\r\n$hundred";
	usleep(300_000);
	my $b = $http->request('POST', "http://127.0.0.1:$port2/v1/batch",
		{ content => $hundred =~ s/bp-/bq-/gr, headers => { Authorization => $auth } });
	is($b->{status}, 429, 'too many lines waiting: 429');
	is($b->{headers}{'retry-after'}, '1', 'with Retry-After');
	my $first = <$a>;
	like($first, qr/^HTTP\/1\.1 503/, 'a commit slower than --commit-timeout: 503');
	close $a;
	$locker->finish;
	# the client retries; the COPY that timed out committed meanwhile: no duplicates
	$b = $http->request('POST', "http://127.0.0.1:$port2/v1/batch", { content => $hundred, headers => { Authorization => $auth } });
	is($b->{status}, 200, 'the retry is accepted');
	wait_drained();
	is($node->safe_psql('postgres', "SELECT count(*), count(DISTINCT event_id) FROM cdp.events WHERE event_id LIKE 'bp-%'"),
		'100|100', 'each message of the retried batch stored once');
	$c2->signal('TERM');
	$c2->finish;
}

# --- PostgreSQL goes away: 503, and back: 200 ---
$node->stop('fast');
$r = post('/v1/track', '{"userId": "u-1", "event": "While Down", "messageId": "m-down"}', Authorization => $auth);
is($r->{status}, 503, 'PostgreSQL down: 503 so SDKs retry');
$node->start;
my $status = 0;
for (1 .. 50)
{
	$status = post('/v1/track', '{"userId": "u-1", "event": "While Down", "messageId": "m-down"}', Authorization => $auth)->{status};
	last if $status == 200;
	usleep(200_000);
}
is($status, 200, 'accepted again once PostgreSQL is back');
# A restart while the collector is idle leaves every flusher's connection
# stale without its knowing: the first COPY on each finds out, and must
# retry on a new connection rather than turn the request away.
$node->restart;
my @after = map { post('/v1/track', qq({"userId": "u-1", "event": "After", "messageId": "m-after-$_"}),
	Authorization => $auth)->{status} } 1 .. 4;
is("@after", '200 200 200 200', 'requests after an idle restart accepted at once');
# The same after an immediate stop, which leaves every connection broken
# (the COPY ones and the key lookups'): each is retried once on a new one.
$node->safe_psql('postgres', "SELECT cdp.create_source('late', 'late-write-key-0123456789', writer => 'collector')");
$node->stop('immediate');
$node->start;
@after = map { post('/v1/track', qq({"userId": "u-1", "event": "After", "messageId": "m-after-imm-$_"}),
	Authorization => $auth)->{status} } 1 .. 4;
is("@after", '200 200 200 200', 'requests after an immediate restart accepted at once');
$r = post('/v1/track', '{"userId": "u-1", "event": "Late Key", "messageId": "m-late"}',
	Authorization => 'Basic ' . encode_base64('late-write-key-0123456789:', ''));
is($r->{status}, 200, 'a new key looked up after an immediate restart: 200') or diag($r->{content});
wait_drained();
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.events WHERE event_id = 'm-down'"), '1', 'the retried event landed once');

# --- SIGTERM: flush and exit 0 ---
$r = post('/v1/track', '{"userId": "u-1", "event": "Last", "messageId": "m-last"}', Authorization => $auth);
is($r->{status}, 200, 'acknowledged before the stop') or diag($r->{content});
$collector->signal('TERM');
$collector->finish;
is($collector->full_result(0), 0, 'SIGTERM: exit status 0');
like($$errref, qr/stopped/, 'logged its stop');
wait_drained();
is($node->safe_psql('postgres', "SELECT count(*) FROM cdp.events WHERE event_id = 'm-last'"), '1',
	'what it acknowledged before stopping is stored');

# bad configuration: exit status 1; a port in use: 2
my $rc = system('pg_cdp_collector', '--batch-size', 'lots');
is($rc >> 8, 1, 'bad option value: exit status 1');
my $busy_port = PostgreSQL::Test::Cluster::get_free_port();
my $holder = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $busy_port, Listen => 1, ReuseAddr => 1)
  or die "cannot hold port $busy_port: $!";
my $second = IPC::Run::start([ 'pg_cdp_collector', '--port', $busy_port, '--dbname', $conninfo ],
	'>', \$out, '2>', \$err, IPC::Run::timeout(20));
$second->finish;
is($second->full_result(0) >> 8, 2, 'port in use: exit status 2');
close $holder;

diag("the collector's log:\n$$errref") unless Test::More->builder->is_passing;
$node->stop;
done_testing();
