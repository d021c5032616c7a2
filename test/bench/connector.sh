#!/usr/bin/env bash
# Benchmark 8, pg_cdp_connector, run by scripts/bench.sh as a child process
# against its server (PGHOST, PGPORT, PGUSER, PGDATABASE exported, pg_cdp
# freshly created in that database, the connector installed). Prints, each
# beside what it is compared to:
#   1. end to end into a file: N messages enqueued first (cdp.enqueue, N/10
#      people, a template rendered with a trait and a payload field), then
#      the time until the connector has written, fsync()ed, acked and
#      reported every one; beside the ceiling of moving the same rows out
#      of a table into a file: a plain queue table holding the messages
#      already rendered, drained by one psql session in batches of 1000
#      (DELETE ... RETURNING the same JSON, COPY'd to the file; one fsync
#      at the end), with no lease, no policy, no rendering and no report.
#      Target: >= 20,000 messages/s, with report_delivered = no; the same
#      run with a 'delivered' report per message (cdp.report_delivery, an
#      event on each recipient's profile) is printed beside it (reported).
#   2. memory: the connector's VmRSS over a soak against the webhook
#      receiver of the tests (test/connector/http_sink.py, no failures) at
#      a quarter of its peak webhook rate (the channel's rate_per_second),
#      sampled every 10 s: flat means the last sample within 10% of the
#      first.
# Environment: BENCH_CONNECTOR_MESSAGES (default 100000), BENCH_CONNECTOR_SOAK
# (seconds, default 600), BENCH_WORK (a directory for its files; "summary"
# gets one line per result).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/common.sh"
. "$here/../../scripts/server.sh"
n=${BENCH_CONNECTOR_MESSAGES:-100000}
soak=${BENCH_CONNECTOR_SOAK:-600}
people=$(( n / 10 ))
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
chmod 777 "$work"
python=/usr/bin/python3     # Debian's

q() { psql_q -At -c "$1"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }
connector=${CONNECTOR:-$PG_BIN/pg_cdp_connector}     # CONNECTOR: another build
cpid=
sink=
cleanup() {
    [ -n "$cpid" ] && kill -TERM "$cpid" 2>/dev/null || true
    [ -n "$sink" ] && kill "$sink" 2>/dev/null || true
}
trap cleanup EXIT

q "CREATE ROLE bench_connector LOGIN IN ROLE cdp_connector" >/dev/null 2>&1 || true
conninfo="host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=bench_connector"
psql_q -v people="$people" <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.bench_people, public.bench_queue;
INSERT INTO cdp.channels (name, kind, requires_consent)
VALUES ('bench_file', 'print', false), ('bench_hook', 'webhook', false);
INSERT INTO cdp.templates (name, channel, subject, body)
VALUES ('bench_file', 'bench_file', 'Your coupon', 'Hello {{traits.first_name | default: "there"}}, coupon {{payload.code}}'),
       ('bench_hook', 'bench_hook', NULL, 'order {{payload.n}}');
SELECT count(cdp.identify(jsonb_build_object('user_id', 'bench-' || g), jsonb_build_object('first_name', 'P' || g)))
  FROM generate_series(1, :people) g \g /dev/null
CREATE TABLE public.bench_people AS SELECT row_number() OVER (ORDER BY profile_id) AS i, profile_id FROM cdp.profiles;
CREATE UNIQUE INDEX ON public.bench_people (i);
SQL

# enqueue CHANNEL COUNT PREFIX: COUNT messages, round-robin over the people.
enqueue() {
    psql_q -At -c "SELECT count(cdp.enqueue(p.profile_id, '$1', '$1', jsonb_build_object('code', 'C' || g, 'n', g),
                                            NULL, '$3-' || g))
                     FROM generate_series(1, $2) g
                     JOIN public.bench_people p ON p.i = 1 + g % (SELECT count(*) FROM public.bench_people)" >/dev/null
}
left() { q "SELECT count(*) FROM cdp.outbox WHERE channel = '$1' AND finished_at IS NULL"; }
wait_done() {
    while [ "$(left "$1")" != 0 ]; do sleep 0.1; done
}

# run_connector CONFIG: starts it in the background (cpid).
run_connector() {
    "$connector" --config "$1" >> "$work/connector.log" 2>&1 &
    cpid=$!
}
stop_connector() {
    kill -TERM "$cpid"
    wait "$cpid" || true
    cpid=
}

echo "== connector 1/2: $n messages end to end into a file"
# the ceiling: the same messages, rendered, in a plain queue table
psql_q -c "CREATE TABLE public.bench_queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               profile_id bigint, channel text, template text, dedupe_key text, subject text, body text,
               payload jsonb, attempt int DEFAULT 1)" \
       -c "INSERT INTO public.bench_queue (profile_id, channel, template, dedupe_key, subject, body, payload)
           SELECT p.profile_id, 'bench_file', 'bench_file', 'q-' || g, 'Your coupon',
                  'Hello P' || p.i || ', coupon C' || g, jsonb_build_object('code', 'C' || g, 'n', g)
             FROM generate_series(1, $n) g
             JOIN public.bench_people p ON p.i = 1 + g % $people" -c "VACUUM ANALYZE public.bench_queue"
batches=$(( n / 1000 + 1 ))
for _ in $(seq $batches); do
    echo "COPY (DELETE FROM public.bench_queue WHERE id IN (SELECT id FROM public.bench_queue ORDER BY id LIMIT 1000
          FOR UPDATE SKIP LOCKED) RETURNING json_build_object('outbox_id', id, 'dedupe_key', dedupe_key,
          'channel', channel, 'kind', 'print', 'profile_id', profile_id, 'address', NULL, 'template', template,
          'subject', subject, 'body', body, 'body_html', NULL, 'payload', payload, 'attempt', attempt)) TO STDOUT;"
done > "$work/baseline.sql"
chmod 644 "$work/baseline.sql"
t0=$(now)
psql_q -At -f "$work/baseline.sql" > "$work/baseline.jsonl"
sync "$work/baseline.jsonl"
t1=$(now)
base_rate=$(calc "$n / ($t1 - $t0)")
base_lines=$(wc -l < "$work/baseline.jsonl")
echo "   ceiling (plain queue table -> psql COPY -> file): $base_rate messages/s ($base_lines lines)"

file_run() {   # file_run LABEL REPORT: messages/s of one run of the connector
    local cfg=$work/file-$1.conf out=$work/file-$1.jsonl t0 t1
    rm -f "$out"
    printf "conninfo = '%s'\nreport_delivered = %s\n[channel bench_file]\nkind = file\npath = %s\nbatch = 1000\n" \
        "$conninfo" "$2" "$out" > "$cfg"
    enqueue bench_file "$n" "$1"
    t0=$(now)
    run_connector "$cfg"
    wait_done bench_file
    t1=$(now)
    stop_connector
    if [ "$(wc -l < "$out")" -lt "$n" ]; then
        echo "   CHECK FAILED: $(wc -l < "$out") lines in the file, expected $n" >&2
        return 1
    fi
    calc "$n / ($t1 - $t0)"
}
# The target is the delivery itself: claim (rendered, under the policy),
# write, fsync, ack. The 'delivered' reports are events on each
# recipient's profile, written by cdp.report_delivery one message at a
# time inside the outbox: that run is printed beside it, with its figure.
rate=$(file_run unreported no)
rate_reported=$(file_run reported yes)
ratio=$(calc "$rate / $base_rate" 2)
result=$(awk -v r="$rate" 'BEGIN { print (r >= 20000 ? "PASS" : "FAIL") }')
echo "   pg_cdp_connector: $rate messages/s claimed, written, fsync()ed and acked (ratio to the ceiling $ratio), target >= 20000: $result"
echo "   with a 'delivered' report per message (report_delivered = yes, the default): $rate_reported messages/s (reported)"
echo "connector_file_msgs_per_s|$rate|$base_rate|$ratio|>=20000|$result" >> "$work/summary"
echo "connector_file_reported_msgs_per_s|$rate_reported|$base_rate|$(calc "$rate_reported / $base_rate" 2)|-|reported" >> "$work/summary"

echo
echo "== connector 2/2: memory over a ${soak} s soak against the webhook receiver at a quarter of its peak"
rm -f "$work/sink.port"
"$python" "$here/../connector/http_sink.py" "$work/sink.port" /dev/null --fail-rate 0 --hang-rate 0 \
    > "$work/sink.log" 2>&1 &
sink=$!
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
hook_cfg=$work/hook.conf
printf "conninfo = '%s'\nconcurrency = 32\npoll_interval = 100\n[channel bench_hook]\nkind = webhook\nurl = http://127.0.0.1:%s/hook\ntimeout = 10\n" \
    "$conninfo" "$(cat "$work/sink.port")" > "$hook_cfg"
peak_n=$(( n / 5 ))
enqueue bench_hook "$peak_n" peak
t0=$(now)
run_connector "$hook_cfg"
wait_done bench_hook
t1=$(now)
peak=$(calc "$peak_n / ($t1 - $t0)")
quarter=$(( peak / 4 > 1 ? peak / 4 : 1 ))
echo "   peak: $peak webhooks/s (32 in flight); the soak runs at $quarter/s"
q "UPDATE cdp.channels SET rate_per_second = $quarter WHERE name = 'bench_hook'" >/dev/null
enqueue bench_hook $(( quarter * (soak + 30) )) soak
rss() { awk '/VmRSS/ { print $2 }' "/proc/$cpid/status"; }
sleep 10
: > "$work/rss.txt"
left0=$(left bench_hook)
for _ in $(seq $(( soak / 10 ))); do rss >> "$work/rss.txt"; sleep 10; done
rss >> "$work/rss.txt"
sent=$(( left0 - $(left bench_hook) ))
stop_connector
first=$(head -1 "$work/rss.txt"); last=$(tail -1 "$work/rss.txt"); max=$(sort -n "$work/rss.txt" | tail -1)
growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
result=$(awk -v g="$growth" 'BEGIN { print (g < 10 ? "PASS" : "FAIL") }')
echo "   $(calc "$sent / $soak") webhooks/s over the soak; RSS first $first kB, last $last kB, max $max kB"
echo "   growth from the first sample to the last: $growth% (flat means < 10%) $result"
echo "connector_soak_rss_growth_pct|$growth|-|-|<10|$result" >> "$work/summary"
