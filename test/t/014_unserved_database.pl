# A database the worker does not serve: the worker serves cdp.database only,
# so CREATE EXTENSION (and ALTER EXTENSION UPDATE) anywhere else warns, with
# a hint naming the setting, and that database's cdp.worker_status() and
# cdp.stats say that no worker serves it instead of showing the served
# database's worker. cdp.tick() still drains it. And cdp.database may name
# a database that is created later: the worker waits for it quietly.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use CdpTestNode;

# cdp.database = 'postgres'
my $node = cdp_node('unserved', "cdp.naptime = 100\n");

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_cdp');
is($ret, 0, 'CREATE EXTENSION in the served database');
unlike($err, qr/WARNING/, 'without a warning');

# The served database's worker at work, so that it has a pid, a heartbeat
# and counters another database could wrongly show.
$node->safe_psql('postgres', q{
INSERT INTO cdp.inbox (message) VALUES
  ('{"type": "track", "userId": "u-1", "event": "Served", "messageId": "s-1"}')});
ok($node->poll_query_until('postgres',
	'SELECT drained = 1 AND pid IS NOT NULL AND serves_this_database FROM cdp.worker_status()'),
	'the worker serves postgres and drained its inbox');
is($node->safe_psql('postgres', 'SELECT served_database FROM cdp.worker_status()'), 'postgres',
	'served_database names it');
is($node->safe_psql('postgres', "SELECT value FROM cdp.stats WHERE metric = 'serves_this_database'"),
	'1', 'cdp.stats says the worker serves this database');

# A second database: CREATE EXTENSION succeeds, with a warning that names
# the served database and a hint that names the setting.
$node->safe_psql('postgres', 'CREATE DATABASE shop');
($ret, $out, $err) = $node->psql('shop', 'CREATE EXTENSION pg_cdp');
is($ret, 0, 'CREATE EXTENSION in another database succeeds');
like($err, qr/WARNING:  no pg_cdp worker serves database "shop"/, 'it warns that no worker serves it');
like($err, qr/DETAIL:  The worker serves database "postgres" \(cdp\.database\) only/,
	'the detail names the database the worker serves');
like($err, qr/HINT:  Set cdp\.database = 'shop' in postgresql\.conf and restart/,
	'the hint names the setting');

# Its status says so: nothing of the other database's worker shows.
is($node->safe_psql('shop', q{
SELECT format('pid=%s started=%s heartbeat=%s rounds=%s drained=%s rejected=%s errors=%s batch=%s served=%s this=%s',
              pid, started_at, heartbeat, rounds, drained, rejected, errors, batch_size,
              served_database, serves_this_database)
FROM cdp.worker_status()}),
	'pid= started= heartbeat= rounds= drained= rejected= errors= batch= served=postgres this=f',
	'worker_status: no pid, heartbeat or counters, serves_this_database false');
is($node->safe_psql('shop', q{
SELECT string_agg(metric || '=' || coalesce(value::text, 'null'), ' ' ORDER BY metric)
FROM cdp.stats WHERE section = 'worker'}),
	'batch_size=null drained=null errors=null heartbeat_age_seconds=null pid=null rejected=null rounds=null serves_this_database=0',
	'cdp.stats: the worker rows are empty and serves_this_database is 0');

# Its inbox waits while the worker goes on serving postgres ...
$node->safe_psql('shop', q{
INSERT INTO cdp.inbox (message) VALUES
  ('{"type": "track", "userId": "u-2", "event": "Unserved", "messageId": "u-1"}')});
my $rounds = $node->safe_psql('postgres', 'SELECT rounds FROM cdp.worker_status()');
ok($node->poll_query_until('postgres', "SELECT rounds >= $rounds + 5 FROM cdp.worker_status()"),
	'the worker goes on with its rounds');
is($node->safe_psql('shop', 'SELECT count(*) FROM cdp.inbox'), '1', 'the unserved inbox is not drained');
# ... and cdp.tick() drains it, as the hint says.
is($node->safe_psql('shop', "SELECT cdp.tick()->'inbox'"), '1', 'cdp.tick() drains it');
is($node->safe_psql('shop', "SELECT count(*) FROM cdp.events WHERE event = 'Unserved'"), '1',
	'its event landed');

# ALTER EXTENSION UPDATE in a database the worker does not serve warns too.
$node->safe_psql('postgres', 'CREATE DATABASE old_shop');
$node->safe_psql('old_shop', "CREATE EXTENSION pg_cdp VERSION '0.1.0'");
($ret, $out, $err) = $node->psql('old_shop', 'ALTER EXTENSION pg_cdp UPDATE');
is($ret, 0, 'the upgrade succeeds');
like($err, qr/WARNING:  no pg_cdp worker serves database "old_shop"/, 'and warns that no worker serves it');
is($node->safe_psql('old_shop', 'SELECT serves_this_database FROM cdp.worker_status()'), 'f',
	'the upgraded status says so');
$node->stop;

# Without a worker at all (cdp.database empty), on purpose: no warning,
# and the status says no database is served.
my $bare = cdp_node('no_worker', "cdp.database = ''\n");
($ret, $out, $err) = $bare->psql('postgres', 'CREATE EXTENSION pg_cdp');
is($ret, 0, 'CREATE EXTENSION without a worker');
unlike($err, qr/WARNING/, 'does not warn');
is($bare->safe_psql('postgres',
	q{SELECT coalesce(served_database, 'none') || ' ' || serves_this_database || ' ' || coalesce(pid::text, 'no pid') FROM cdp.worker_status()}),
	'none false no pid', 'worker_status: no database served');
$bare->stop;

# cdp.database names a database that does not exist yet. The worker and its
# helper fail to connect once, then wait quietly instead of failing again
# each time the postmaster restarts them (every 5 seconds).
my $early = cdp_node('early', "cdp.database = 'later'\n");
my $fatal = qr/FATAL:  database "later" does not exist/;
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my $log = '';
while (time < $deadline)
{
	$log = slurp_file($early->logfile);
	last if $log =~ /pg_cdp worker waits for database "later" to be created/
	  && $log =~ /pg_cdp drain helper waits for database "later" to be created/;
	usleep(100_000);
}
like($log, qr/pg_cdp worker waits for database "later" to be created/, 'the worker waits for the database');
like($log, qr/pg_cdp drain helper waits for database "later" to be created/, 'and so does its helper');
my $fatals = () = $log =~ /$fatal/g;
ok($fatals <= 2, "at most one failed connection each ($fatals)");
# Longer than the postmaster's restart interval: no new failure.
my $until = time + 7;
usleep(200_000) while time < $until && (() = slurp_file($early->logfile) =~ /$fatal/g) == $fatals;
is(scalar(() = slurp_file($early->logfile) =~ /$fatal/g), $fatals, 'no new failure while it waits');

# Once the database exists, the worker serves it.
$early->safe_psql('postgres', 'CREATE DATABASE later');
($ret, $out, $err) = $early->psql('later', 'CREATE EXTENSION pg_cdp');
unlike($err, qr/WARNING/, 'CREATE EXTENSION there does not warn: it is the served database');
$early->safe_psql('later', q{
INSERT INTO cdp.inbox (message) VALUES
  ('{"type": "track", "userId": "u-3", "event": "Later", "messageId": "l-1"}')});
ok($early->poll_query_until('later',
	'SELECT pid IS NOT NULL AND serves_this_database AND drained = 1 FROM cdp.worker_status()'),
	'the worker connected to the new database and drained its inbox');
is(scalar(() = slurp_file($early->logfile) =~ /$fatal/g), $fatals, 'without another failure');
$early->stop;

done_testing();
