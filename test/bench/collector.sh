#!/usr/bin/env bash
# Benchmark of pg_cdp_collector, run by scripts/bench.sh as a child process
# against its server (PGHOST, PGPORT, PGUSER, PGDATABASE exported, pg_cdp
# installed in that database, the collector binary installed). Prints, each
# beside what it is compared to:
#   1. peak: wrk posting /v1/batch of 100 messages over 32 connections,
#      messages committed to cdp.inbox per second (worker paused), beside a
#      plain COPY of the same lines into cdp.inbox from a file;
#   2. latency: p99 of /v1/batch with 8 connections while the worker drains;
#   3. single-message /v1/track requests per second (reported, no target);
#   4. memory: the collector's RSS over a soak at a quarter of the peak rate.
# Environment: COLLECTOR_SECONDS (default 15), SOAK_SECONDS (default 180),
# BENCH_WORK (a directory for its files; "summary" gets one line per result).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/common.sh"
. "$here/../../scripts/server.sh"
secs=${COLLECTOR_SECONDS:-15}
soak=${SOAK_SECONDS:-180}
work=${BENCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
chmod 777 "$work"

ensure_packages wrk

q() { psql_q -At -c "$1"; }

q "SELECT cdp.create_source('bench', 'bench-write-key-0123456789')" >/dev/null 2>&1 || true
auth=$(printf 'bench-write-key-0123456789:' | base64)
port=$(find_free_port)
port=$((port + 50))
conninfo="host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER"
"$PG_BIN/pg_cdp_collector" --port "$port" --dbname "$conninfo" > "$work/collector.log" 2>&1 &
cpid=$!
trap 'kill -TERM $cpid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

# The request bodies: 100 realistic messages; the Lua scripts give every
# message of every request its own messageId.
q "SELECT json_build_object('batch', json_agg(json_build_object(
        'type', 'track', 'event', 'Product Viewed', 'userId', 'u-' || g, 'anonymousId', 'a-' || g,
        'messageId', 'MSGID', 'timestamp', '2026-11-20T10:00:00.000Z',
        'properties', json_build_object('sku', 'SKU-' || g, 'price', 19.99, 'currency', 'EUR'),
        'context', json_build_object('library', json_build_object('name', 'wrk'),
                                     'page', json_build_object('url', 'https://shop.test/p/' || g)))))
   FROM generate_series(1, 100) g" > "$work/batch.json"
q "SELECT json_build_object('type', 'track', 'event', 'Product Viewed', 'userId', 'u-1',
        'messageId', 'MSGID', 'properties', json_build_object('sku', 'SKU-1', 'price', 19.99))" > "$work/track.json"

cat > "$work/post.lua" <<EOF
-- wrk script: POST a body whose MSGID placeholders get unique ids. The
-- template is split once, so a request costs a table.concat, not a search:
-- the load generator shares the machine's cores with what it measures.
local f = io.open(os.getenv("BODY"), "r")
local template = f:read("*a")
f:close()
local parts = {}
for piece in (template .. "MSGID"):gmatch("(.-)MSGID") do parts[#parts + 1] = piece end
local counter = 0
local tid = 0
local run = os.time()
local pause = tonumber(os.getenv("DELAY_MS") or "0")
local path = os.getenv("PATH_INFO")
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Basic $auth" }
setup = function(thread) thread:set("tid", tid); tid = tid + 1 end
request = function()
  counter = counter + 1
  local out = { parts[1] }
  local prefix = run .. "-" .. tid .. "-" .. counter .. "-"
  for i = 2, #parts do
    out[#out + 1] = prefix .. (i - 1)
    out[#out + 1] = parts[i]
  end
  return wrk.format("POST", path, headers, table.concat(out))
end
delay = function() return pause end
EOF

wrk_run() { # connections seconds path body [delay_ms] -> wrk output
    BODY=$4 PATH_INFO=$3 DELAY_MS=${5:-0} wrk -t2 -c"$1" -d"$2"s --latency -s "$work/post.lua" \
        "http://127.0.0.1:$port"
}

echo
echo "== collector 1/4: peak throughput into cdp.inbox (worker paused)"
echo "   pg_cdp clock: wrk's run, $secs s, 32 connections, /v1/batch of 100 messages;"
echo "   counted: rows committed to cdp.inbox. Ceiling clock: one COPY of the same lines from a file."
q "ALTER SYSTEM SET cdp.worker_enabled = off" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
sleep 1
q "TRUNCATE cdp.inbox" >/dev/null; q "CHECKPOINT" >/dev/null
before=$(q "SELECT count(*) FROM cdp.inbox")
wrk_run 32 "$secs" /v1/batch "$work/batch.json" > "$work/peak.txt"
after=$(q "SELECT count(*) FROM cdp.inbox")
peak=$(awk -v n=$((after - before)) -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
errors=$(grep -E "Non-2xx|Socket errors" "$work/peak.txt" || true)
psql_q -c "\\copy (SELECT message, received_at, source, reject_reason FROM cdp.inbox) TO '$work/lines.tsv'"
lines=$(wc -l < "$work/lines.tsv")
q "TRUNCATE cdp.inbox" >/dev/null; q "CHECKPOINT" >/dev/null
t0=$(date +%s.%N)
psql_q -c "\\copy cdp.inbox (message, received_at, source, reject_reason) FROM '$work/lines.tsv'"
t1=$(date +%s.%N)
ceiling=$(awk -v n="$lines" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
ratio=$(awk -v p="$peak" -v c="$ceiling" 'BEGIN { printf "%.2f", p / c }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.5 ? "PASS" : "FAIL") }')
printf '   collector: %s messages/s (%s messages in %s s)%s\n' "$peak" $((after - before)) "$secs" "${errors:+; $errors}"
printf '   COPY:      %s lines/s (%s lines)\n' "$ceiling" "$lines"
printf '   ratio %s (target >= 0.50) %s\n' "$ratio" "$verdict"
echo "collector_peak|$peak|$ceiling|$ratio|0.50|$verdict" >> "$work/summary"
q "TRUNCATE cdp.inbox" >/dev/null

echo
echo "== collector 2/4: latency with 8 connections, worker draining"
q "ALTER SYSTEM SET cdp.worker_enabled = on" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
# The peak run's WAL would otherwise be checkpointed in the middle of this
# one, as bench.sh checkpoints before each side it measures.
q "CHECKPOINT" >/dev/null
wrk_run 8 "$secs" /v1/batch "$work/batch.json" > "$work/latency.txt"
to_ms() { awk '/ms$/ { sub("ms", ""); print; next } /us$/ { sub("us", ""); print $1 / 1000; next } /s$/ { sub("s", ""); print $1 * 1000 }'; }
p99=$(awk '/^ +99%/ { print $2 }' "$work/latency.txt")
p99ms=$(echo "$p99" | to_ms)
p50ms=$(awk '/^ +50%/ { print $2 }' "$work/latency.txt" | to_ms)
rps=$(awk '/Requests\/sec/ { print $2 }' "$work/latency.txt")
verdict=$(awk -v l="$p99ms" 'BEGIN { print (l < 50 ? "PASS" : "FAIL") }')
printf '   p50 %s, p99 %s at %s requests/s (%s messages/s); target p99 < 50 ms %s\n' \
    "$(awk '/^ +50%/ { print $2 }' "$work/latency.txt")" "$p99" "$rps" \
    "$(awk -v r="$rps" 'BEGIN { printf "%.0f", r * 100 }')" "$verdict"
echo "collector_p99_ms|$p99ms|50|-|<50|$verdict" >> "$work/summary"

echo
echo "== collector 3/4: single-message /v1/track (reported, no target)"
wrk_run 32 "$secs" /v1/track "$work/track.json" > "$work/single.txt"
printf '   %s requests/s, p99 %s\n' "$(awk '/Requests\/sec/ { print $2 }' "$work/single.txt")" \
    "$(awk '/^ +99%/ { print $2 }' "$work/single.txt")"
echo "collector_track_rps|$(awk '/Requests\/sec/ { print $2 }' "$work/single.txt")|-|-|-|-" >> "$work/summary"

echo
echo "== collector 4/4: memory over a ${soak} s soak at a quarter of the peak rate, worker draining"
# A quarter of the peak in requests/s, spread over 16 connections by a
# per-request delay: each connection's period less the median latency
# measured above with the worker draining.
target_rps=$(awk -v p="$peak" 'BEGIN { r = p / 100 / 4; printf "%.0f", (r < 1 ? 1 : r) }')
delay=$(awk -v r="$target_rps" -v l="${p50ms:-5}" 'BEGIN { d = 16 * 1000 / r - l; printf "%d", (d < 0 ? 0 : d) }')
rss() { awk '/VmRSS/ { print $2 }' "/proc/$cpid/status"; }
rss0=$(rss)
: > "$work/rss.txt"
( for _ in $(seq $((soak / 10))); do sleep 10; rss >> "$work/rss.txt"; done ) &
sampler=$!
wrk_run 16 "$soak" /v1/batch "$work/batch.json" "$delay" > "$work/soak.txt"
wait $sampler || true
rps=$(awk '/Requests\/sec/ { print $2 }' "$work/soak.txt")
first=$(head -1 "$work/rss.txt"); last=$(tail -1 "$work/rss.txt")
max=$(sort -n "$work/rss.txt" | tail -1)
growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
verdict=$(awk -v g="$growth" 'BEGIN { print (g < 10 ? "PASS" : "FAIL") }')
printf '   %s requests/s (%s%% of the target %s); RSS at start %s kB, after 10 s %s kB, at the end %s kB, max %s kB\n' \
    "$rps" "$(awk -v a="$rps" -v t="$target_rps" 'BEGIN { printf "%.0f", a * 100 / t }')" "$target_rps" \
    "$rss0" "$first" "$last" "$max"
printf '   growth from the first sample to the last: %s%% (flat means < 10%%) %s\n' "$growth" "$verdict"
echo "collector_soak_rss_growth_pct|$growth|-|-|<10|$verdict" >> "$work/summary"

kill -TERM $cpid
wait $cpid || true
trap - EXIT
