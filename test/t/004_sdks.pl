# pg_cdp_collector with the real SDKs, not curl: Segment's analytics-node,
# RudderStack's rudder-sdk-node (gzip bodies) and Segment's analytics.js in
# headless Chromium, driven by test/collector/sdk_test.mjs; then the database
# is checked.  Needs node, test/collector/node_modules (npm ci) and
# /usr/bin/chromium: scripts/node_deps.sh installs them.  Missing, they fail
# this test rather than skip it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use Time::HiRes qw(usleep);

my $sdk_dir = abs_path(dirname(abs_path(__FILE__)) . '/../collector');
my $chromium = '/usr/bin/chromium';
my $write_key = 'sdk-write-key-0123456789abcdef';

# --- what the SDK tests need: fail, with how to get it, when it is missing ---
my ($node_bin) = grep { -x $_ } map { File::Spec->catfile($_, 'node') } File::Spec->path;
my @missing;
push @missing, 'node is not on PATH (scripts/node_deps.sh installs it)' unless $node_bin;
if (!-d "$sdk_dir/node_modules")
{
	push @missing, "$sdk_dir/node_modules is missing (run scripts/node_deps.sh, or `npm ci` in test/collector)";
}
else
{
	for my $m ('@segment/analytics-node', '@rudderstack/rudder-sdk-node',
		'@segment/analytics-next/dist/umd/standalone.js', 'playwright-core')
	{
		push @missing, "$sdk_dir/node_modules/$m is missing (run scripts/node_deps.sh, or `npm ci` in test/collector)"
		  unless -e "$sdk_dir/node_modules/$m";
	}
}
push @missing, "$chromium is missing (apt-get install chromium, or scripts/node_deps.sh)" unless -x $chromium;
if (@missing)
{
	fail($_) for @missing;
	done_testing();
	exit;
}
note "node: $node_bin " . `"$node_bin" --version`;

my $node = cdp_node('sdks', "cdp.naptime = 100\n");
$node->safe_psql('postgres', qq{
CREATE EXTENSION pg_cdp;
CREATE ROLE collector LOGIN IN ROLE cdp_ingest;
SELECT cdp.create_source('sdk', '$write_key', writer => 'collector');
});

my ($collector, $base, $conninfo, $coutref, $cerrref) = start_collector($node, '--flush-ms', '10');
my $http = HTTP::Tiny->new(timeout => 10);

# --- the SDKs: node sdk_test.mjs exits 0 only if every call was answered 200 ---
my ($out, $err) = ('', '');
my $sdk_run;
{
	local $ENV{COLLECTOR_URL} = $base;
	local $ENV{WRITE_KEY} = $write_key;
	local $ENV{CHROMIUM} = $chromium;
	local $ENV{SDK_TEST_TIMEOUT_MS} = '20000';
	$sdk_run = IPC::Run::start([ $node_bin, 'sdk_test.mjs' ],
		'>', \$out, '2>', \$err,
		init => sub { chdir $sdk_dir or die "cannot enter $sdk_dir: $!" },
		IPC::Run::timeout(150));
	eval { $sdk_run->finish; };
	if ($@)
	{
		$sdk_run->kill_kill;
		$err .= "\nsdk_test.mjs did not finish: $@";
	}
}
my $rc = $sdk_run->full_result(0);
note "sdk_test.mjs:\n$out";
is($rc, 0, 'every SDK call was answered 200 (node sdk_test.mjs)')
  or diag("exit status $rc\nstdout:\n$out\nstderr:\n$err\ncollector log:\n$$cerrref");

$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox')
  or die 'inbox not drained';

sub sql { return $node->safe_psql('postgres', $_[0]); }

# --- Segment's analytics-node: /v1/batch, write key in the body ---
is(sql("SELECT string_agg(event_id || ':' || type, ',' ORDER BY event_id) FROM cdp.events WHERE event_id LIKE 'sdk-node-%'"),
	'sdk-node-alias-1:alias,sdk-node-identify-1:identify,sdk-node-page-1:page,sdk-node-track-1:track',
	'analytics-node: identify, track, page and alias each landed once');
is(sql("SELECT event || ' ' || (properties->>'order_id') || ' ' || (properties->>'total') FROM cdp.events WHERE event_id = 'sdk-node-track-1'"),
	'Order Completed N-1001 42.5', 'analytics-node: the track event and its properties');
is(sql(q{SELECT cdp.resolve('{"anonymous_id": "node-anon-1"}') = cdp.resolve('{"user_id": "node-user-1"}')
	AND cdp.resolve('{"email": "node-user-1@sdk.test"}') = cdp.resolve('{"user_id": "node-user-1"}')}),
	't', 'analytics-node: the alias merged the anonymous and the known profile');
is(sql("SELECT count(DISTINCT profile_id) FROM cdp.events WHERE event_id LIKE 'sdk-node-%'"), '1',
	'analytics-node: the anonymous page view moved to the merged profile');

# --- RudderStack's rudder-sdk-node: gzip bodies, Basic auth ---
is(sql("SELECT string_agg(event_id || ':' || type, ',' ORDER BY event_id) FROM cdp.events WHERE event_id LIKE 'sdk-rudder-%'"),
	'sdk-rudder-alias-1:alias,sdk-rudder-identify-1:identify,sdk-rudder-offline-1:track,sdk-rudder-page-1:page,sdk-rudder-track-1:track',
	'rudder-sdk-node: its gzip bodies were accepted, each message landed once');
is(sql("SELECT string_agg(DISTINCT channel, ',') FROM cdp.events WHERE event_id LIKE 'sdk-rudder-%'"), 'server',
	'rudder-sdk-node: its fields are read (channel)');
is(sql(q{SELECT cdp.resolve('{"anonymous_id": "rudder-anon-1"}') = cdp.resolve('{"user_id": "rudder-user-1"}')
	AND cdp.resolve('{"email": "rudder-user-1@sdk.test"}') = cdp.resolve('{"user_id": "rudder-user-1"}')}),
	't', 'rudder-sdk-node: the alias merged the anonymous and the known profile');
is(sql("SELECT count(DISTINCT profile_id) FROM cdp.events WHERE event_id LIKE 'sdk-rudder-%'"), '1',
	'rudder-sdk-node: one person');
is(sql(q{SELECT abs(extract(epoch FROM received_at - occurred_at) - 3600) < 60
	FROM cdp.events WHERE event_id = 'sdk-rudder-offline-1'}),
	't', 'rudder-sdk-node: an event sent an hour late keeps its time (originalTimestamp)');

# --- analytics.js in Chromium: settings from the collector, /v1/i /v1/p /v1/t and /v1/b ---
is(sql(q{SELECT count(*) FROM cdp.events WHERE source = 'sdk' AND type = 'page'
	AND properties->>'name' = 'Browser Home' AND event_id LIKE 'ajs-next-%'
	AND context->'library'->>'name' = 'analytics.js'}),
	'1', "analytics.js: the browser's page view landed once, source sdk");
is(sql("SELECT count(*) FROM cdp.events WHERE type = 'track' AND event = 'Browser Test Event' AND source = 'sdk'"),
	'1', 'analytics.js: the track call landed once');
is(sql(q{SELECT cdp.resolve('{"user_id": "browser-user-1"}') = profile_id FROM cdp.events
	WHERE type = 'page' AND properties->>'name' = 'Browser Home'}),
	't', "analytics.js: identify joined the browser's anonymousId to browser-user-1");
is(sql(q{SELECT string_agg(type || ':' || CASE type WHEN 'page' THEN properties->>'name' ELSE event END, ',' ORDER BY type)
	FROM cdp.events WHERE source = 'sdk' AND profile_id = cdp.resolve('{"user_id": "browser-user-2"}')}),
	'identify:identify,page:Browser Batched Page,track:Browser Batched Event',
	'analytics.js batching delivery (/v1/b): all three landed');
is(sql("SELECT count(*) FROM cdp.events WHERE event_id LIKE 'ajs-next-%'"), '6', 'analytics.js: six messages in all');

# --- everything: one source, no rejects, no write key stored ---
is(sql("SELECT count(*) FILTER (WHERE source IS DISTINCT FROM 'sdk') FROM cdp.events"), '0', 'every event has source sdk');
is(sql("SELECT count(*) FROM cdp.inbox_rejects"), '0', 'nothing went to cdp.inbox_rejects')
  or diag(sql("SELECT string_agg(sqlstate || ' ' || reason || ': ' || left(message, 200), E'\n') FROM cdp.inbox_rejects"));
is(sql("SELECT count(*) FROM cdp.identifier_issues"), '0', 'no identifier issues');
is(sql("SELECT count(*) FROM cdp.events e WHERE to_jsonb(e.*)::text LIKE '%$write_key%'"), '0',
	'the write key the SDKs send is never stored');

$collector->signal('TERM');
$collector->finish;
is($collector->full_result(0), 0, 'collector stopped cleanly');

$node->stop;
done_testing();
