#!/usr/bin/env bash
# Benchmark 6, segments, run by scripts/bench.sh as a child process against
# its server (PGHOST, PGPORT, PGUSER, PGDATABASE exported, pg_cdp freshly
# created in that database, the worker serving it). The data: P people
# (BENCH_SEGMENT_PROFILES, default 1,000,000), three events each through
# cdp.inbox, the 10 computed traits and 20 real-time segments of
# test/bench/traits.sql, the clock at 2026-11-19 12:00 UTC. Prints, each
# beside what it is compared to:
#   a. full refresh: cdp.refresh_segment of one segment (big_spenders) over
#      every profile vs CREATE TABLE ... AS SELECT profile_id FROM
#      cdp.customers WHERE the same predicate (the ceiling), alternately,
#      three of each, medians.                           target: <= 1.5x
#      The segment's creation (its first evaluation, writing every entry
#      and its Segment Entered event) is reported beside it.
#   b. incremental: 10,000 people's events in one transaction, then the
#      time from its commit until the worker has evaluated all 20 segments
#      for them (no profile left marked), median of three rounds, vs
#      REFRESH MATERIALIZED VIEW CONCURRENTLY of the 20 segments as
#      materialized views.                   target: < 200 ms and >= 100x
#      The same with events that no trait reads is reported beside it.
#   c. freshness: 8 pgbench clients send cdp.track at full speed while a
#      probe commits 'Freshness Probe' events that move a person in and out
#      of a segment (an odd count of them) and polls cdp.segment_changes
#      for the change: p99 from commit to change.        target: < 500 ms
#   d. memory: the RssAnon of the worker and of the drain helpers over a
#      soak of cdp.track at a quarter of (c)'s rate (BENCH_SEGMENTS_SOAK
#      seconds, default 600), sampled every 10 s: the last sample within
#      10% of the first; and the worker's RssAnon while it backfills a new
#      trait over every profile: it grows by less than 128 MB (twice the
#      server's work_mem; the backfill goes in batches of
#      cdp.trait_batch_size profiles, so the bound does not depend on P).
# Environment: BENCH_SEGMENT_PROFILES, BENCH_SEGMENTS_SOAK,
# BENCH_PGBENCH_SECONDS (30, each side of c), BENCH_WORK (a directory for
# its files; "summary" gets one line per result). Exits non-zero only when
# it could not run through.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/common.sh"
. "$here/../../scripts/server.sh"
people=${BENCH_SEGMENT_PROFILES:-1000000}
soak=${BENCH_SEGMENTS_SOAK:-600}
seconds=${BENCH_PGBENCH_SECONDS:-30}
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
chmod 777 "$work"
: > "$work/summary"

q() { psql_q -At -c "$1"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
load() { echo "   (load average: $(cut -d' ' -f1-3 /proc/loadavg))"; }
failed=0
# result NAME VALUE BASE RATIO TARGET PASS?: one summary line.
result() {
    local r=reported
    if [ "$6" = 1 ]; then r=PASS; elif [ "$6" = 0 ]; then r=FAIL; failed=$((failed + 1)); fi
    echo "   $1: $2 (baseline $3, ratio $4, target $5): $r"
    echo "$1|$2|$3|$4|$5|$r" >> "$work/summary"
}
lt() { awk "BEGIN { exit !(($1) < ($2)) }"; }
rss() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
worker_pid() { q "SELECT pid FROM cdp.worker_status()"; }
drainer_pids() { q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'pg_cdp drain'"; }
# settle: the inbox drained, every trait backfilled, no profile marked
# (marks wait for a real-time segment to take them).
settle() {
    local i
    for i in $(seq 36000); do
        [ "$(q "SELECT (SELECT count(*) FROM cdp.inbox)
                  + (SELECT count(*) FROM cdp.trait_status WHERE state <> 'ready')
                  + CASE WHEN EXISTS (SELECT FROM cdp.segments WHERE mode = 'realtime')
                         THEN (SELECT count(*) FROM cdp.profile_changes) ELSE 0 END")" = 0 ] && return 0
        sleep 0.1
    done
    echo "   the worker did not settle" >&2
    return 1
}

psql_q -c "ALTER SYSTEM SET cdp.fake_now = '2026-11-19 12:00:00+00'" -c "SELECT pg_reload_conf()" >/dev/null
trap 'psql_q -c "ALTER SYSTEM RESET cdp.fake_now" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true' EXIT
psql_q -v profiles="$people" < "$here/segments.sql"

echo "-- data: $people people, $((3 * people)) events through cdp.inbox, then test/bench/traits.sql"
t0=$(now)
q "SELECT cdp.create_event_partitions('2026-05-01', 8)" >/dev/null 2>&1 || true
q "SELECT bench_seg.load($people)" >/dev/null
settle
echo "   drained in $(calc "$(now) - $t0" 1) s: $(q "SELECT count(*) FROM cdp.profiles") profiles"
t0=$(now)
psql_q -c "SELECT cdp.define_trait('fresh_probe_events', 'count', 'Freshness Probe')" >/dev/null
psql_q < "$here/traits.sql" >/dev/null
settle
echo "   $(q "SELECT count(*) FROM cdp.trait_definitions") traits backfilled and $(q "SELECT count(*) FROM cdp.segments") segments evaluated" \
     "in $(calc "$(now) - $t0" 1) s: $(q "SELECT sum(members) FROM cdp.segments") memberships"
load

# ---- a. full refresh ------------------------------------------------------
echo "-- a. full refresh of big_spenders vs CREATE TABLE AS of its predicate"
pred=$(q "SELECT predicate FROM cdp.segments WHERE name = 'big_spenders'")
psql_q -c "VACUUM ANALYZE" >/dev/null
ctas=() refresh=()
for r in 1 2 3; do
    q "SET client_min_messages = warning; DROP TABLE IF EXISTS bench_seg.ctas" >/dev/null
    ctas+=("$(q "SELECT bench_seg.ms(\$s\$CREATE TABLE bench_seg.ctas AS SELECT profile_id FROM cdp.customers WHERE $pred\$s\$)")")
    refresh+=("$(q "SELECT bench_seg.ms(\$s\$SELECT cdp.refresh_segment('big_spenders')\$s\$)")")
done
echo "   CREATE TABLE AS: ${ctas[*]} ms ($(q "SELECT count(*) FROM bench_seg.ctas") rows);" \
     "cdp.refresh_segment: ${refresh[*]} ms ($(q "SELECT members FROM cdp.segments WHERE name = 'big_spenders'") members)"
c=$(echo "${ctas[*]}" | median)
f=$(echo "${refresh[*]}" | median)
ratio=$(calc "$f / $c")
result "full_refresh_ms" "$f" "$c" "$ratio" "<=1.5" "$(lt "$ratio" 1.5000001 && echo 1 || echo 0)"
create=$(q "SELECT bench_seg.ms(\$s\$SELECT cdp.create_segment('big_spenders_again', \$p\$$pred\$p\$)\$s\$)")
result "first_evaluation_ms" "$create" "$c" "$(calc "$create / $c")" "-" "-"
q "SELECT cdp.drop_segment('big_spenders_again')" >/dev/null
settle
load

# ---- b. incremental ------------------------------------------------------
echo "-- b. 10,000 changed people x 20 segments (the worker, one batch) vs REFRESH MATERIALIZED VIEW CONCURRENTLY x 20"
q "SELECT bench_seg.create_views()" >/dev/null
psql_q -c "VACUUM ANALYZE" >/dev/null
inc=()
for r in 1 2 3; do
    inc+=("$(psql_q -At -c "SELECT bench_seg.touch(10000, $people, $r)" -c "SELECT bench_seg.wait_marks()" | tail -n 1)")
done
noop=()
for r in 4 5 6; do
    noop+=("$(psql_q -At -c "SELECT bench_seg.touch(10000, $people, $r, 'Checkout Started')" \
                     -c "SELECT bench_seg.wait_marks()" | tail -n 1)")
done
mv=$(q "SELECT bench_seg.ms(string_agg(format('REFRESH MATERIALIZED VIEW CONCURRENTLY %s', c.oid::regclass), '; '))
        FROM pg_class c WHERE c.relnamespace = 'bench_seg'::regnamespace AND c.relkind = 'm'")
echo "   worker: ${inc[*]} ms; events no trait reads: ${noop[*]} ms; 20 materialized views: $mv ms;" \
     "views that differ from the members: $(q "SELECT bench_seg.views_differ()") rows"
i=$(echo "${inc[*]}" | median)
result "incremental_10k_x20_ms" "$i" "-" "-" "<200" "$(lt "$i" 200 && echo 1 || echo 0)"
ratio=$(calc "$mv / $i" 1)
result "incremental_vs_matviews" "$i" "$mv" "$ratio" ">=100" "$(lt 99.9999 "$ratio" && echo 1 || echo 0)"
n=$(echo "${noop[*]}" | median)
result "incremental_untouched_traits_ms" "$n" "$i" "$(calc "$n / $i")" "-" "-"
load

# ---- c. freshness ---------------------------------------------------------
echo "-- c. freshness: commit to segment change, under 8 pgbench clients of cdp.track"
q "SELECT cdp.create_segment('fresh_probe', 'fresh_probe_events % 2 = 1')" >/dev/null
q "SELECT cdp.track('{\"user_id\": \"probe\"}', 'Page Viewed')" >/dev/null
cat > "$work/segments_track.pgbench" <<'PGB'
\set pid random(1, :people)
SELECT cdp.track(jsonb_build_object('user_id', 'u-' || :pid), 'Product Viewed', '{"sku": "SKU-7", "price": 5}');
PGB
chmod 644 "$work/segments_track.pgbench"
settle
pgbench() {
    $AS_PG env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" PGDATABASE="$PGDATABASE" \
        "$PG_BIN/pgbench" -n -M prepared -D people="$people" -f "$work/segments_track.pgbench" "$@"
}
pgbench -c 8 -j 2 -T "$seconds" > "$work/pgbench-fresh.out" 2>&1 &
pg=$!
sleep 2
psql_q -c "CALL bench_seg.probe($((seconds - 4)))"
wait $pg
tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$work/pgbench-fresh.out")
read -r probes p50 p99 pmax < <(q "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY delay_ms),
                                         percentile_cont(0.99) WITHIN GROUP (ORDER BY delay_ms), max(delay_ms)
                                  FROM bench_seg.freshness" | tr '|' ' ')
echo "   $tps tps of cdp.track; $probes probes: p50 $p50 ms, p99 $p99 ms, max $pmax ms"
result "freshness_p99_ms" "$p99" "-" "-" "<500" "$(lt "${p99:-1e9}" 500 && echo 1 || echo 0)"
settle
load

# ---- d. memory ------------------------------------------------------------
rate=$(calc "${tps:-100} / 4" 0)
echo "-- d. memory: worker and drain helpers over a ${soak} s soak of cdp.track at $rate/s, then a backfill"
wpid=$(worker_pid)
dpids=$(drainer_pids)
pgbench -c 2 -j 2 -R "$rate" -T "$soak" > "$work/pgbench-soak.out" 2>&1 &
pg=$!
sleep 10
first_w=$(rss "$wpid")
declare -A first_d
for d in $dpids; do first_d[$d]=$(rss "$d"); done
samples="$first_w"
while kill -0 "$pg" 2>/dev/null; do
    sleep 10
    samples="$samples $(rss "$wpid")"
done
wait $pg || true
last_w=$(rss "$wpid")
echo "   worker RssAnon (kB) every 10 s: $samples"
growth=$(calc "100 * ($last_w - $first_w) / $first_w" 1)
result "soak_worker_rss_growth_pct" "$growth" "$first_w" "-" "<10" "$(lt "$growth" 10 && echo 1 || echo 0)"
for d in $dpids; do
    last_d=$(rss "$d")
    g=$(calc "100 * ($last_d - ${first_d[$d]}) / (${first_d[$d]} > 0 ? ${first_d[$d]} : 1)" 1)
    echo "   drain helper $d RssAnon: ${first_d[$d]} kB, then $last_d kB"
    result "soak_drainer_rss_growth_pct" "$g" "${first_d[$d]}" "-" "<10" "$(lt "$g" 10 && echo 1 || echo 0)"
done
settle
before=$(rss "$wpid")
peak=$before
t0=$(now)
q "SELECT cdp.define_trait('bench_backfill', 'sum', 'Product Viewed', 'price')" >/dev/null
while [ "$(q "SELECT count(*) FROM cdp.trait_status WHERE state <> 'ready'")" != 0 ]; do
    r=$(rss "$wpid")
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.2
done
grow=$(( (peak - before) / 1024 ))
echo "   backfill over $(q "SELECT count(*) FROM cdp.profiles") profiles in $(calc "$(now) - $t0" 1) s:" \
     "worker RssAnon $before kB before, peak $peak kB"
result "backfill_worker_rss_growth_mb" "$grow" "$((before / 1024))" "-" "<128" "$(lt "$grow" 128 && echo 1 || echo 0)"
load
# the verdicts are in the summary; the exit status says whether it ran through
echo "   $failed target(s) missed"
