-- demo/segments.sql: the seeds' segments over the traits, kept by the worker.
\pset footer off
\pset null '-'
SET client_min_messages = warning;

\echo
\echo '== segments: SQL predicates over cdp.customers, kept exact by the worker'
SELECT cdp.create_segment('afternoon_big_spenders', 'spent_today_14_18 > 150') AS members;
SELECT cdp.create_segment('loyal_50_plus', $$age(birth_date) >= '50 years' AND orders_180d >= 3$$,
                          refresh_every => '1 day') AS members;
SELECT cdp.create_segment('store_regulars', $$preferred_channel = 'store' AND stores_visited >= 2$$) AS members;
SELECT cdp.create_segment('lapsed', $$last_purchase_at < cdp.now() - interval '90 days'$$,
                          refresh_every => '1 hour') AS members;
SELECT name, mode, size, predicate FROM cdp.segment_status ORDER BY name;
