#!/usr/bin/env bash
# make demo: install what is missing, build, start a throwaway server, load a
# year of a retail company's data (about 50,000 people, 260,000 Segment-spec
# messages from web, app, store tills and the call center, with noise and
# re-sends) through the bulk path, and show what pg_cdp made of it.
#
#   KEEP=1             leave the server running and print how to reach it
#   DEMO_SKIP_BUILD=1  do not build and install (use the installed extension)
#
# The data set is generated inside PostgreSQL (demo/generate.sql, seeded);
# the report is demo/report.sql.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. scripts/common.sh
. scripts/server.sh

base_packages
if [ "${DEMO_SKIP_BUILD:-}" = 1 ]; then
    echo "== not building (DEMO_SKIP_BUILD=1): using the installed pg_cdp"
else
    build_and_install
fi

elapsed() { echo "$(date +%s.%N) $1" | awk '{ printf "%.1f", $1 - $2 }'; }
t_start=$(date +%s.%N)

# The server's user must be able to enter the directory of the server.
if [ "$(id -u)" -eq 0 ]; then
    pg_can_enter() { runuser -u postgres -- test -x "$1"; }
else
    pg_can_enter() { test -x "$1"; }
fi
if pg_can_enter "$repo"; then
    dir=$repo/.demo
    tmpdir=
else
    dir=$(mktemp -d /tmp/pg_cdp_demo.XXXXXX)
    chmod 755 "$dir"
    tmpdir=$dir
    echo "== the postgres user cannot enter $repo: the demo server lives in $dir"
    cd "$dir"   # the commands that run as postgres need a working directory they can enter
fi

# A server left running by an earlier KEEP=1 goes first.
if [ -f "$dir/data/postmaster.pid" ]; then
    echo "== stopping the demo server left running in $dir"
    $AS_PG "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
fi

cleanup() {
    local rc=$?
    trap - EXIT
    if [ $rc -ne 0 ] && [ -f "$dir/server.log" ]; then
        echo "== the demo failed; the end of $dir/server.log:"
        tail -n 20 "$dir/server.log"
    fi
    if [ "${KEEP:-}" = 1 ] && [ -n "${PGPORT:-}" ]; then
        echo "== KEEP=1: the server keeps running"
        echo "   connect: psql -h $dir -p $PGPORT -U $PGUSER $PGDATABASE"
        echo "   stop:    ${AS_PG:+$AS_PG }$PG_BIN/pg_ctl -D $dir/data stop${tmpdir:+ && rm -rf $tmpdir}"
        exit $rc
    fi
    stop_server
    rm -f "$dir/events.jsonl" "$dir/rudder.json.gz"
    rm -rf "$dir/data"
    [ -n "$tmpdir" ] && cd / && rm -rf "$tmpdir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting a throwaway server in $dir"
start_server "$dir" "cdp.database = 'postgres'"
# One transaction: the worker sees the extension with its partitions.
parts=$(psql_q -1 -At -c "CREATE EXTENSION pg_cdp" \
    -c "SELECT cdp.create_event_partitions((date_trunc('month', now()) - interval '12 months')::date, 16)")
echo "   port $PGPORT, pg_cdp $(psql_q -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_cdp'"), $parts monthly event partitions created"

echo "== generating the data set (demo/generate.sql)"
t0=$(date +%s.%N)
psql_q < "$repo/demo/generate.sql"
file=$dir/events.jsonl
psql_q -v file="$file" <<'SQL'
SET work_mem = '256MB';
COPY (SELECT line FROM demo.lines ORDER BY ts, n) TO :'file'
    WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
SQL
lines=$(wc -l < "$file")
echo "   $lines JSON lines in $file ($(du -m "$file" | cut -f1) MB), $(elapsed "$t0") s"

echo "== loading: \\copy cdp.inbox (message) FROM '$file' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
t0=$(date +%s.%N)
qfile=${file//"'"/"''"}
psql_q <<SQL
\\copy cdp.inbox (message) FROM '$qfile' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')
SQL
copy_seconds=$(elapsed "$t0")
echo "   $lines lines in the inbox after $copy_seconds s; the worker drains them:"
last_backlog=-1
stuck_since=$(date +%s)
while :; do
    backlog=$(psql_q -At -c "SELECT value FROM cdp.stats WHERE section = 'inbox' AND metric = 'backlog'")
    secs=$(elapsed "$t0")
    printf '   %6s s  backlog %7d  drained %7d  (%s lines/s)\n' "$secs" "$backlog" \
        $((lines - backlog)) "$(echo "$lines $backlog $secs" | awk '{ printf "%d", ($1 - $2) / $3 }')"
    [ "$backlog" -eq 0 ] && break
    if [ "$backlog" -ne "$last_backlog" ]; then
        last_backlog=$backlog
        stuck_since=$(date +%s)
    elif [ $(($(date +%s) - stuck_since)) -ge 30 ]; then
        echo "the inbox has not moved for 30 s; the worker says:" >&2
        psql_q -c "SELECT pid, heartbeat, rounds, drained, errors, last_error FROM cdp.worker_status()" >&2
        exit 1
    fi
    sleep 2
done
seconds=$(elapsed "$t0")

psql_q -v lines="$lines" -v copy_seconds="$copy_seconds" -v seconds="$seconds" < "$repo/demo/report.sql"

# Traits defined once the history is in: the worker backfills them.
psql_q < "$repo/demo/traits.sql"
t0=$(date +%s.%N)
until [ "$(psql_q -At -c "SELECT count(*) FROM cdp.trait_status WHERE state <> 'ready'")" = 0 ]; do
    if [ "$(elapsed "$t0" | cut -d. -f1)" -ge 120 ]; then
        echo "the traits were not backfilled within 120 s:" >&2
        psql_q -c "SELECT * FROM cdp.trait_status" >&2
        exit 1
    fi
    sleep 0.5
done
echo "   backfilled in $(elapsed "$t0") s"
psql_q < "$repo/demo/traits_report.sql"

# Segments over the traits, then the outbox, a trigger and a journey: one
# shopper's purchase enters her into a segment and sends her messages, which
# pg_cdp_connector delivers into a file.
psql_q < "$repo/demo/segments.sql"
psql_q < "$repo/demo/journeys.sql"
t0=$(date +%s.%N)
until [ "$(psql_q -At -c "SELECT count(*) FROM cdp.profile_changes")" = 0 ]; do
    if [ "$(elapsed "$t0" | cut -d. -f1)" -ge 60 ]; then
        echo "the worker did not evaluate the segments within 60 s:" >&2
        psql_q -c "SELECT * FROM cdp.segment_status" >&2
        exit 1
    fi
    sleep 0.2
done
echo "   the worker evaluated every changed profile in $(elapsed "$t0") s"
outfile=$dir/outbox.jsonl
rm -f "$outfile"
cat > "$dir/connector.conf" <<CONF
conninfo = 'host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER'
[channel email]
kind = file
path = $outfile
CONF
chmod 644 "$dir/connector.conf"
echo
echo "== pg_cdp_connector --config $dir/connector.conf (the email channel into $outfile)"
$AS_PG "$PG_BIN/pg_cdp_connector" --config "$dir/connector.conf" > "$dir/connector.log" 2>&1 &
cpid=$!
t0=$(date +%s.%N)
until [ "$(psql_q -At -c "SELECT count(*) FROM cdp.outbox WHERE channel = 'email' AND status IN ('pending', 'leased', 'retry')")" = 0 ]; do
    if [ "$(elapsed "$t0" | cut -d. -f1)" -ge 30 ]; then
        echo "the connector did not deliver within 30 s:" >&2
        cat "$dir/connector.log" >&2
        kill -TERM $cpid 2>/dev/null
        exit 1
    fi
    sleep 0.2
done
kill -TERM $cpid 2>/dev/null
wait $cpid || true
echo "   delivered in $(elapsed "$t0") s; the file has:"
sed 's/^/   /' "$outfile" | cut -c1-220
psql_q < "$repo/demo/journeys_report.sql"
# A campaign to a segment, scheduled through pg_cron and run once.
psql_q < "$repo/demo/campaigns.sql"

# The HTTP collector: SDK calls as analytics.js, analytics-node and
# RudderStack send them, for a person the demo data already knows.
echo
echo "== the HTTP collector: SDK calls arrive"
port=$(find_free_port)
port=$((port + 40))
key=$(psql_q -At -c "SELECT cdp.create_source('website', 'demo-website-write-key-0001')")
psql_q -q -c "SELECT cdp.create_source('backend', 'demo-backend-write-key-0001')" >/dev/null
"$PG_BIN/pg_cdp_collector" --port "$port" \
    --dbname "host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER" > "$dir/collector.log" 2>&1 &
collector_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
echo "   pg_cdp_collector on 127.0.0.1:$port, sources 'website' and 'backend'"
email=$(psql_q -At -c "SELECT value FROM cdp.identities WHERE type = 'email'
                       ORDER BY (SELECT count(*) FROM cdp.identities j WHERE j.profile_id = identities.profile_id) DESC,
                                value LIMIT 1")
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
show() { printf '   %-58s -> HTTP %s\n' "$1" "$2"; }
show "analytics.js: GET /v1/projects/<key>/settings" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/projects/$key/settings")"
show "analytics.js: POST /v1/p (text/plain, writeKey in the body)" "$(curl -s -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: text/plain' "http://127.0.0.1:$port/v1/p" --data-binary \
    "{\"writeKey\": \"$key\", \"anonymousId\": \"demo-browser-1\", \"name\": \"Checkout\",
      \"properties\": {\"url\": \"https://shop.example/checkout\"}, \"messageId\": \"demo-ajs-1\",
      \"timestamp\": \"$now\", \"sentAt\": \"$now\", \"context\": {\"library\": {\"name\": \"analytics.js\"}}}")"
show "analytics.js: POST /v1/i (identify with the email)" "$(curl -s -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: text/plain' "http://127.0.0.1:$port/v1/i" --data-binary \
    "{\"writeKey\": \"$key\", \"anonymousId\": \"demo-browser-1\", \"traits\": {\"email\": \"$email\"},
      \"messageId\": \"demo-ajs-2\", \"timestamp\": \"$now\", \"sentAt\": \"$now\"}")"
show "analytics-node: POST /v1/batch (Basic auth)" "$(curl -s -o /dev/null -w '%{http_code}' \
    -u demo-backend-write-key-0001: "http://127.0.0.1:$port/v1/batch" -H 'Content-Type: application/json' --data-binary \
    "{\"batch\": [{\"type\": \"track\", \"anonymousId\": \"demo-browser-1\", \"event\": \"Order Completed\",
      \"properties\": {\"total\": 59.9, \"currency\": \"EUR\"}, \"messageId\": \"demo-node-1\", \"timestamp\": \"$now\"}],
      \"sentAt\": \"$now\"}")"
gz=$dir/rudder.json.gz
printf '%s' "{\"batch\": [{\"type\": \"track\", \"anonymousId\": \"demo-browser-1\", \"event\": \"Review Requested\",
  \"originalTimestamp\": \"$now\", \"messageId\": \"demo-rudder-1\", \"channel\": \"server\"}], \"sentAt\": \"$now\"}" \
    | gzip -c > "$gz"
show "rudder-sdk-node: POST /v1/batch (gzip)" "$(curl -s -o /dev/null -w '%{http_code}' \
    -u demo-backend-write-key-0001: -H 'Content-Encoding: gzip' -H 'Content-Type: application/json' \
    "http://127.0.0.1:$port/v1/batch" --data-binary @"$gz")"
show "a wrong write key" "$(curl -s -o /dev/null -w '%{http_code}' -u nope-nope-nope-nope: \
    "http://127.0.0.1:$port/v1/track" -d '{"userId": "x", "event": "y"}')"
kill -TERM $collector_pid; wait $collector_pid || true
for _ in $(seq 50); do
    [ "$(psql_q -At -c "SELECT count(*) FROM cdp.inbox")" = 0 ] && break
    sleep 0.2
done
psql_q -v email="$email" <<'SQL'
\echo '   the calls, drained into cdp.events: one person, known from the silos before'
SELECT e.event_id, e.source, e.type, e.event, e.profile_id,
       e.profile_id = cdp.resolve(jsonb_build_object('email', :'email')) AS joins_the_known_person
FROM cdp.events e WHERE e.event_id LIKE 'demo-%' ORDER BY e.event_id;
SQL

echo
echo "== done in $(elapsed "$t_start") s (server start, generation, load, drain, report, collector)"
if [ "${KEEP:-}" != 1 ]; then
    echo "   the server stops now; KEEP=1 leaves it running"
fi
