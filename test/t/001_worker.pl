# The background worker: drains the inbox by itself, wakes at commit, shows
# a heartbeat in cdp.stats, reloads its settings on SIGHUP, survives a bad
# round, and waits politely in a database without the extension.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use CdpTestNode;

my $node = cdp_node('worker', "cdp.naptime = 60000\n");

# Before the extension exists the worker idles without errors.
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_cdp worker'"),
	'worker is running before CREATE EXTENSION');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cdp');

# A long naptime: the drain must come from the commit-time wake-up.
$node->safe_psql('postgres', q{
INSERT INTO cdp.inbox (message)
SELECT format('{"type": "track", "userId": "u-%s", "event": "Viewed", "messageId": "w-%s"}', g % 50, g)
FROM generate_series(1, 3000) g;
INSERT INTO cdp.inbox (message) VALUES ('definitely not json');
});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox', 't'),
	'the worker drained the inbox without waiting for its naptime');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.events'), '3000', 'all events landed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.profiles'), '50', 'one profile per user');
is($node->safe_psql('postgres', 'SELECT reason FROM cdp.inbox_rejects'),
	'message is not valid JSON', 'the bad line is a reject with its reason');

my $stats = $node->safe_psql('postgres', q{
SELECT string_agg(metric || '=' || coalesce(value::text, ''), ' ' ORDER BY metric)
FROM cdp.stats WHERE section = 'worker' AND metric IN ('drained', 'rejected')});
is($stats, 'drained=3000 rejected=1', 'cdp.stats counts what the worker did');
ok($node->safe_psql('postgres',
	"SELECT value < 120 FROM cdp.stats WHERE metric = 'heartbeat_age_seconds'") eq 't',
	'the heartbeat is recent');

# SIGHUP: a short naptime now takes effect without a restart.
my $pid = $node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'pid'");
$node->append_conf('postgresql.conf', "cdp.naptime = 100\n");
$node->reload;
my $rounds = $node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'rounds'");
ok($node->poll_query_until('postgres',
	"SELECT value >= $rounds + 10 FROM cdp.stats WHERE metric = 'rounds'"),
	'the reloaded naptime makes rounds frequent');
is($node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'pid'"), $pid,
	'reloading did not restart the worker');

# Paused, the worker keeps its heartbeat but leaves the inbox alone.
$node->append_conf('postgresql.conf', "cdp.worker_enabled = off\n");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT current_setting('cdp.worker_enabled') = 'off'"),
	'the pause reached the server');
# rounds that end after the reload was delivered to the worker
$rounds = $node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'rounds'");
$node->poll_query_until('postgres', "SELECT value >= $rounds + 3 FROM cdp.stats WHERE metric = 'rounds'")
  or die 'the worker stopped its rounds';
$node->safe_psql('postgres', q{INSERT INTO cdp.inbox (message) VALUES ('{"type": "track", "userId": "p", "event": "Paused"}')});
$rounds = $node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'rounds'");
ok($node->poll_query_until('postgres', "SELECT value >= $rounds + 5 FROM cdp.stats WHERE metric = 'rounds'"),
	'a paused worker keeps its heartbeat');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.inbox'), '1', 'a paused worker does not drain');
$node->append_conf('postgresql.conf', "cdp.worker_enabled = on\n");
$node->reload;
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'), 'resumed, it drains');

# A failing round is caught and counted, and the loop goes on.
$node->safe_psql('postgres', q{
CREATE FUNCTION cdp.poison() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'poisoned insert' USING ERRCODE = '53000'; END$$;
CREATE TRIGGER poison BEFORE INSERT ON cdp.inbox_rejects FOR EACH ROW EXECUTE FUNCTION cdp.poison();
INSERT INTO cdp.inbox (message) VALUES ('still not json');
});
ok($node->poll_query_until('postgres',
	"SELECT value > 0 FROM cdp.stats WHERE section = 'worker' AND metric = 'errors'"),
	'a failing round is counted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cdp.inbox'), '1',
	'the failed round rolled back: the row waits in the inbox');
$node->safe_psql('postgres', 'DROP TRIGGER poison ON cdp.inbox_rejects');
$node->safe_psql('postgres', "INSERT INTO cdp.inbox (message) VALUES ('{\"type\": \"track\", \"userId\": \"late\", \"event\": \"Late\"}')");
ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM cdp.inbox'),
	'the worker recovered and drained the rest');
is($node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'pid'"), $pid,
	'the worker survived the failures');

# Killing the worker: the postmaster starts a new one.
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until('postgres',
	"SELECT value IS NOT NULL AND value <> $pid FROM cdp.stats WHERE metric = 'pid'"),
	'a terminated worker is restarted');

# DROP EXTENSION: the worker keeps running and idles. The same process
# goes on starting rounds (its activity changes), and the postmaster never
# had to start it again: a worker that crash-looped would change its pid
# and log its start each time.
my $worker = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_cdp worker'};
$pid = $node->safe_psql('postgres', $worker);
$node->safe_psql('postgres', 'DROP EXTENSION pg_cdp CASCADE');
my $dropped_at = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
ok($node->poll_query_until('postgres', qq{
SELECT count(*) = 1 AND bool_and(pid = $pid AND state_change > '$dropped_at')
FROM pg_stat_activity WHERE backend_type = 'pg_cdp worker'}),
	'the worker idles while the extension is absent, in rounds, without restarting');
is($node->safe_psql('postgres', $worker), $pid, 'still the same worker process');
my $log = slurp_file($node->logfile);
my $starts = () = $log =~ /pg_cdp worker started in database/g;
is($starts, 2, 'the worker started twice: at boot and after it was terminated');
my $exits = () = $log =~ /background worker "pg_cdp worker" \(PID \d+\) exited/g;
is($exits, 1, 'the worker exited once: when it was terminated');

$node->stop;
done_testing();
