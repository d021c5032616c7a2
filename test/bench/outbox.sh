#!/usr/bin/env bash
# Benchmark 7 of scripts/bench.sh, the outbox, run as a child process
# against its server (PGHOST, PGPORT, PGUSER, PGDATABASE exported). Each
# side on the same messages (test/bench/outbox_setup.sql), in the same run:
#   1. claim + ack: 4 concurrent claimers (pgbench -c 4), batches of 100,
#      policy on (consent, suppressions, quiet hours, caps, rendering), vs a
#      plain FOR UPDATE SKIP LOCKED queue table and vs PgQ (four queues,
#      one consumer each);                  target: pg_cdp / plain >= 1.0
#   2. the same while another session holds an old snapshot open (a
#      REPEATABLE READ transaction that stays open through the runs);
#                                           target: pg_cdp / plain >= 1.0
#   3. enqueue inside an ingesting transaction, policy checks included:
#      microseconds per message.            target: < 30
# Also prints the share of HOT updates of cdp.outbox.
# Environment: OUTBOX_ROUNDS (pgbench transactions per claimer, default
# 250: 100,000 messages per side), OUTBOX_PEOPLE (default 20000),
# BENCH_WORK (its files; "summary" gets one line per result).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/common.sh"
. "$here/../../scripts/server.sh"
rounds=${OUTBOX_ROUNDS:-250}
people=${OUTBOX_PEOPLE:-20000}
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
chmod 777 "$work"
cp "$here"/outbox_*.pgbench "$work/"
chmod 644 "$work"/*.pgbench
per_side=$(( 4 * rounds * 100 ))
messages=$(( 2 * per_side ))

ensure_packages postgresql-15-pgq3

q() { psql_q -At -c "$1"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
ge() { awk "BEGIN { exit !(($1) >= ($2)) }"; }

echo "   data: $people people, $messages messages in each queue (two runs of $per_side)"
psql_q -c "SET client_min_messages = warning" -c "DROP EXTENSION IF EXISTS pg_cdp CASCADE" \
    -c "DROP SCHEMA IF EXISTS bench CASCADE" -c "CREATE EXTENSION pg_cdp"
t0=$(date +%s.%N)
psql_q -v people="$people" -v messages="$messages" < "$here/outbox_setup.sql" >/dev/null
echo "   set up in $(calc "$(date +%s.%N) - $t0" 1) s"
psql_q -c "VACUUM ANALYZE" >/dev/null

# side NAME FILE: messages per second of pgbench -c 4 over FILE (100 per transaction)
side() {
    local out=$work/pgbench-$1.out tps
    psql_q -c CHECKPOINT >/dev/null
    if ! $AS_PG env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" PGDATABASE="$PGDATABASE" \
        "$PG_BIN/pgbench" -n -c 4 -j 2 -M prepared -t "$rounds" -f "$work/$2" >"$out" 2>&1; then
        echo "   pgbench $1 failed:" >&2
        tail -n 20 "$out" | sed 's/^/     /' >&2
        echo 0
        return
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
    grep -E '^latency average' "$out" | sed "s/^/   $1: /" >&2
    calc "$tps * 100" 0
}

verdict_line() {   # name value base target
    local ratio result=FAIL
    ratio=$(calc "$2 / ($3 > 0 ? $3 : 1)" 2)
    ge "$ratio" "$4" && result=PASS
    echo "   $1: pg_cdp $2 msg/s, plain $3 msg/s: ratio $ratio, target >= $4: $result"
    echo "$1|$2|$3|$ratio|>= $4|$result" >> "$work/summary"
}

run_all() {   # label
    local plain cdp pgq delivered
    plain=$(side "plain queue$1" outbox_plain.pgbench)
    cdp=$(side "pg_cdp$1" outbox_claim.pgbench)
    pgq=$(side "PgQ$1" outbox_pgq.pgbench)
    echo "   plain queue $plain msg/s, pg_cdp $cdp msg/s, PgQ $pgq msg/s"
    echo "   (PgQ ratio $(calc "$cdp / ($pgq > 0 ? $pgq : 1)" 2), reported)"
    PLAIN=$plain CDP=$cdp PGQ=$pgq
}

: > "$work/summary"
echo "-- claim + ack, 4 claimers, batches of 100"
run_all ""
verdict_line "claim_ack_msgs" "$CDP" "$PLAIN" 1.0
echo "pgq_claim_ack_msgs|$CDP|$PGQ|$(calc "$CDP / ($PGQ > 0 ? $PGQ : 1)" 2)|-|reported" >> "$work/summary"
delivered=$(q "SELECT count(*) FROM cdp.outbox WHERE status = 'delivered'")
echo "   delivered: $delivered of $per_side"

echo "-- the same with a session holding an old snapshot open"
psql_q -c "VACUUM" >/dev/null
$AS_PG env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" PGDATABASE="$PGDATABASE" \
    "$PG_BIN/psql" -X -q -c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM cdp.outbox; SELECT pg_sleep(3600)" \
    >/dev/null 2>&1 &
holder=$!
for _ in $(seq 100); do
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3600)%' AND backend_xmin IS NOT NULL AND pid <> pg_backend_pid()")" = 1 ] && break
    sleep 0.1
done
run_all " (old snapshot)"
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3600)%' AND pid <> pg_backend_pid()" >/dev/null
wait $holder 2>/dev/null || true
verdict_line "claim_ack_old_snapshot_msgs" "$CDP" "$PLAIN" 1.0
echo "pgq_old_snapshot_msgs|$CDP|$PGQ|$(calc "$CDP / ($PGQ > 0 ? $PGQ : 1)" 2)|-|reported" >> "$work/summary"
echo "   delivered: $(q "SELECT count(*) FROM cdp.outbox WHERE status = 'delivered'") of $messages"
q "SELECT pg_stat_force_next_flush()" >/dev/null
echo "   cdp.outbox updates: $(q "SELECT n_tup_upd || ', of which HOT ' || n_tup_hot_upd || ' (' || round(100.0 * n_tup_hot_upd / greatest(n_tup_upd, 1)) || '%)' FROM pg_stat_user_tables WHERE relid = 'cdp.outbox'::regclass")"

echo "-- enqueue inside an ingesting transaction, policy checks included"
best=
for _ in 1 2 3; do
    us=$(psql_q -At -v people="$people" -v n=20000 < "$here/outbox_enqueue.sql" | tail -n 1)
    if [ -z "$best" ] || ge "$best" "$us"; then best=$us; fi
    echo "   $us us per message"
done
result=FAIL
ge 30 "$best" && result=PASS
echo "   best of 3: $best us per message, target < 30: $result"
echo "enqueue_us_per_message|$best|30|-|< 30|$result" >> "$work/summary"
