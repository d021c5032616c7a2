-- demo/traits_report.sql: the traits once backfilled.
\pset footer off
\pset null '-'
\echo
\echo '== traits backfilled from history by the worker (cdp.trait_status)'
SELECT name, type, state, backfilled_profiles, issues FROM cdp.trait_status ORDER BY name;

\echo
\echo '== cdp.customers: one typed column per trait (the five biggest spenders)'
SELECT profile_id, first_name, birth_date, orders_180d, revenue_total, last_purchase_at::date,
       preferred_channel, stores_visited, spent_today_14_18
FROM cdp.customers ORDER BY revenue_total DESC NULLS LAST LIMIT 5;

\echo
\echo '== the seeds'' questions, as plain SQL over cdp.customers'
SELECT count(*) FILTER (WHERE spent_today_14_18 > 150) AS "spent > 150 EUR today 14:00-18:00",
       count(*) FILTER (WHERE orders_180d >= 3 AND age(birth_date) >= '50 years')
           AS "50 or older, 3+ orders in 180 days",
       count(*) FILTER (WHERE preferred_channel = 'store' AND stores_visited >= 2)
           AS "store regulars of 2+ stores",
       count(*) AS customers
FROM cdp.customers;
