-- Benchmark 7, enqueue: inside a transaction that ingests an event (as a
-- journey or a trigger would enqueue), :n messages through cdp.enqueue
-- with the policy checks (consent, address, suppression, dedupe key), and
-- the time per message. Rolled back: the run leaves nothing.
BEGIN;
SELECT cdp.track(jsonb_build_object('email', 'p1@shop.test'), 'Order Completed', '{"total": 10}') > 0 AS ingested;
SELECT clock_timestamp() AS t0 \gset
SELECT count(cdp.enqueue(1 + g % :people, 'bench', 'bench_t', jsonb_build_object('order_id', -g, 'total', 1),
                         NULL, 'enqueue-bench-' || g))
FROM generate_series(1, :n) g \gset
SELECT round((extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1e6 / :n)::numeric, 2) AS us_per_message \gset
\echo :us_per_message
ROLLBACK;
