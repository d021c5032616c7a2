-- demo/traits.sql: the seeds' questions as trait definitions, defined once
-- the data is in (the worker backfills them from history), and their answers.
\pset footer off
\pset null '-'
SET client_min_messages = warning;

\echo
\echo '== traits: the seeds'' questions as definitions'
SELECT cdp.declare_trait('birth_date', 'date');
SELECT cdp.declare_trait('first_name', 'text');
SELECT cdp.define_trait('orders_180d', 'count', 'Order Completed', NULL, '180 days');
SELECT cdp.define_trait('revenue_total', 'sum', 'Order Completed', 'total');
SELECT cdp.define_trait('last_purchase_at', 'last', 'Order Completed');
SELECT cdp.define_trait('preferred_channel', 'most_frequent', NULL, 'channel');
SELECT cdp.define_trait('stores_visited', 'count_distinct', 'Order Completed', 'store_id');
SELECT cdp.define_trait('spent_today_14_18', 'sum', 'Order Completed', 'total', 'today',
       'extract(hour FROM cdp.local_time(occurred_at)) BETWEEN 14 AND 17');
SELECT name, aggregate, event, property, "window", "where" FROM cdp.trait_definitions ORDER BY trait_id;
