#!/usr/bin/env bash
# Benchmark 9 of scripts/bench.sh, journeys, run as a child process against
# its server (PGHOST, PGPORT, PGUSER, PGDATABASE exported; the pg_cdp worker
# serving PGDATABASE). Data: test/bench/journeys.sql.
#   a. BENCH_JOURNEY_PROFILES profiles in flight, every one due on a send
#      step: the worker advances them (claim, send through the policy, move,
#      log: cdp.journey_batch_size a batch), vs a plain SQL baseline doing
#      the same work with one UPDATE ... RETURNING plus an INSERT into a
#      queue table per batch, in the same run.
#                               targets: >= 20000 steps/s and ratio >= 1
#   b. entry on event with 50 active journeys (every event enters one): the
#      added time per event in the ingesting transaction, for cdp.track and
#      for the bulk path (the worker's drain of cdp.inbox), each beside its
#      own figure with the journeys paused.       target: < 50 us per event
#   c. a trigger's wait '2 seconds': the time from its due time until a
#      connector polling every 2 ms claims the message, p99.
#                                                 target: < 100 ms
# Environment: BENCH_JOURNEY_PROFILES (default 1000000), BENCH_JOURNEY_EVENTS
# (events per side of b, default 20000), BENCH_JOURNEY_PINGS (messages of c,
# default 300), BENCH_WORK (its files; "summary" gets one line per result).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/common.sh"
. "$here/../../scripts/server.sh"
profiles=${BENCH_JOURNEY_PROFILES:-1000000}
events=${BENCH_JOURNEY_EVENTS:-20000}
pings=${BENCH_JOURNEY_PINGS:-300}
batch=1000
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
chmod 777 "$work"

q() { psql_q -At -c "$1"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
ge() { awk "BEGIN { exit !(($1) >= ($2)) }"; }
now() { date +%s.%N; }
worker_enabled() {
    psql_q -c "ALTER SYSTEM SET cdp.worker_enabled = $1" -c "SELECT pg_reload_conf()" >/dev/null
}
# summary NAME VALUE BASE RATIO TARGET RESULT
summary() { echo "$1|$2|$3|$4|$5|$6" >> "$work/summary"; }
load() { echo "   (load average: $(cut -d' ' -f1-3 /proc/loadavg))"; }

: > "$work/summary"
echo "   data: $profiles profiles in flight; $events events per side of the entry cost; $pings pings"
psql_q -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS pg_cdp CASCADE" \
    -c "DROP SCHEMA IF EXISTS bench CASCADE" -c "CREATE EXTENSION pg_cdp"
worker_enabled off
t0=$(now)
psql_q -v profiles="$profiles" < "$here/journeys.sql" >/dev/null
psql_q -c "CALL bench.load_flow($profiles)"
psql_q -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
echo "   set up in $(calc "$(now) - $t0" 1) s"

# ---- a. due steps ---------------------------------------------------------
echo "-- a. $profiles due steps, each a send through the policy, batches of $batch"
load
t0=$(now)
psql_q -c "CALL bench.plain_advance($batch)"
plain_s=$(calc "$(now) - $t0")
plain_rate=$(calc "$profiles / $plain_s" 0)
echo "   plain UPDATE ... RETURNING + INSERT: $plain_s s, $plain_rate steps/s"
psql_q -c "CHECKPOINT" >/dev/null
load
psql_q -c "ALTER SYSTEM SET cdp.journey_batch_size = $batch" >/dev/null
t0=$(now)
worker_enabled on
psql_q -c "CALL bench.wait_flow(3600)"
cdp_s=$(calc "$(now) - $t0")
cdp_rate=$(calc "$profiles / $cdp_s" 0)
echo "   pg_cdp worker: $cdp_s s, $cdp_rate steps/s"
read -r sent logged keys < <(q "SELECT (SELECT count(*) FROM cdp.outbox WHERE channel = 'jbench'),
    (SELECT count(*) FROM cdp.journey_log WHERE journey = 'flow' AND why = 'sent' AND outbox_id IS NOT NULL),
    (SELECT count(DISTINCT dedupe_key) FROM cdp.outbox WHERE channel = 'jbench')" | tr '|' ' ')
echo "   enqueued $sent, logged $logged, distinct dedupe keys $keys"
check=PASS
[ "$sent" = "$profiles" ] && [ "$logged" = "$profiles" ] && [ "$keys" = "$profiles" ] || check=FAIL
ratio=$(calc "$cdp_rate / ($plain_rate > 0 ? $plain_rate : 1)" 2)
result=FAIL; ge "$cdp_rate" 20000 && [ $check = PASS ] && result=PASS
echo "   $cdp_rate steps/s, target >= 20000: $result (every step sent once: $check)"
summary "journey_steps_per_s" "$cdp_rate" "20000" "-" ">= 20000" "$result"
result=FAIL; ge "$ratio" 1 && result=PASS
echo "   ratio to the plain baseline $ratio, target >= 1: $result"
summary "journey_steps_vs_plain" "$cdp_rate" "$plain_rate" "$ratio" ">= 1" "$result"
psql_q -c "DELETE FROM cdp.outbox WHERE channel = 'jbench'" -c "DELETE FROM cdp.journey_log" \
    -c "DELETE FROM cdp.journey_states" -c "VACUUM ANALYZE" >/dev/null

# ---- b. entry on event ----------------------------------------------------
# track_side ACTIVE: microseconds per cdp.track call
track_side() {
    local t
    psql_q -c "CALL bench.entry_journeys($1)" >/dev/null
    t=$(now)
    psql_q -c "CALL bench.track_events($events, $profiles)"
    calc "($(now) - $t) * 1000000 / $events" 1
}
# drain_side ACTIVE TAG: microseconds per message of the worker's drain
drain_side() {
    local t target
    psql_q -c "CALL bench.entry_journeys($1)" >/dev/null
    target=$(q "SELECT drained + rejected + $events FROM cdp.worker_status()")
    t=$(now)
    q "SELECT bench.inbox_events($events, $profiles, '$2')" >/dev/null
    psql_q -c "CALL bench.wait_drained($target, 3600)"
    calc "($(now) - $t) * 1000000 / $events" 1
}
psql_q < "$here/setup.sql" >/dev/null
echo "-- b. entry on event, 50 journeys, every event entering one; best of 3 rounds per side"
load
best() { sort -n | head -n 1; }
tp=(); ta=(); dp=(); da=()
for r in 1 2 3; do
    tp+=("$(track_side false)"); ta+=("$(track_side true)")
    dp+=("$(drain_side false "p$r")"); da+=("$(drain_side true "a$r")")
    echo "   round $r: cdp.track ${tp[-1]} us paused, ${ta[-1]} us active;" \
         "drain ${dp[-1]} us paused, ${da[-1]} us active"
done
entered=$(q "SELECT count(*) FROM cdp.journey_states WHERE journey LIKE 'entry %'")
echo "   states entered: $entered (expected $(( 6 * events )))"
for side in track drain; do
    if [ $side = track ]; then
        p=$(printf '%s\n' "${tp[@]}" | best); a=$(printf '%s\n' "${ta[@]}" | best)
    else
        p=$(printf '%s\n' "${dp[@]}" | best); a=$(printf '%s\n' "${da[@]}" | best)
    fi
    added=$(calc "$a - $p" 1)
    result=FAIL; ge 50 "$added" && [ "$entered" = $(( 6 * events )) ] && result=PASS
    echo "   $side: $p us per event without journeys, $a us with 50: +$added us, target < 50: $result"
    summary "journey_entry_${side}_added_us" "$a" "$p" "$added" "< 50" "$result"
done
psql_q -c "CALL bench.entry_journeys(false)" >/dev/null

# ---- c. latency of a two-second wait ----------------------------------------
echo "-- c. wait '2 seconds': claimable after its due time, $pings messages, a ping every 20 ms"
load
psql_q -c "CALL bench.claim_pings($pings, 120)" &
claimer=$!
psql_q -c "CALL bench.pings($pings, 0.02)"
wait $claimer
read -r n p50 p99 pmax < <(q "SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
    round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1), round(max(ms)::numeric, 1)
    FROM bench.latency" | tr '|' ' ')
result=FAIL; [ "$n" = "$pings" ] && ge 100 "$p99" && result=PASS
echo "   $n claimed: p50 $p50 ms, p99 $p99 ms, max $pmax ms after the due time, target p99 < 100: $result"
summary "journey_wait_latency_p99_ms" "$p99" "100" "-" "< 100" "$result"
psql_q -c "ALTER SYSTEM RESET cdp.journey_batch_size" -c "SELECT pg_reload_conf()" >/dev/null
