-- traits.sql: benchmark 5's definitions: 10 computed traits (3 windowed)
-- over the generated messages, and 20 real-time
-- segments of mixed predicates over them (the three that read cdp.now()
-- are also evaluated again every hour). Run on a fresh pg_cdp.
SET client_min_messages = warning;
SELECT cdp.define_trait('orders_180d', 'count', 'Order Completed', NULL, '180 days');
SELECT cdp.define_trait('revenue_total', 'sum', 'Order Completed', 'price');
SELECT cdp.define_trait('avg_price', 'avg', 'Order Completed', 'price');
SELECT cdp.define_trait('max_price', 'max', 'Order Completed', 'price');
SELECT cdp.define_trait('first_seen_at', 'first', NULL);
SELECT cdp.define_trait('last_purchase_at', 'last', 'Order Completed');
SELECT cdp.define_trait('views_7d', 'count', 'Product Viewed', NULL, '7 days');
SELECT cdp.define_trait('spent_today', 'sum', 'Order Completed', 'price', 'today');
SELECT cdp.define_trait('preferred_sku', 'most_frequent', 'Product Viewed', 'sku');
SELECT cdp.define_trait('skus_bought', 'count_distinct', 'Order Completed', 'sku');

DO $$
BEGIN
    PERFORM cdp.create_segment('buyers', 'orders_180d >= 1');
    PERFORM cdp.create_segment('repeat_buyers', 'orders_180d >= 3');
    PERFORM cdp.create_segment('big_spenders', 'revenue_total > 100');
    PERFORM cdp.create_segment('whales', 'revenue_total > 500');
    PERFORM cdp.create_segment('high_basket', 'avg_price > 20');
    PERFORM cdp.create_segment('premium_item', 'max_price >= 40');
    PERFORM cdp.create_segment('browsers_7d', 'views_7d >= 1');
    PERFORM cdp.create_segment('heavy_browsers', 'views_7d >= 5');
    PERFORM cdp.create_segment('spent_today', 'spent_today > 0');
    PERFORM cdp.create_segment('sku_1_fans', 'preferred_sku = ''SKU-1''');
    PERFORM cdp.create_segment('explorers', 'skus_bought >= 3');
    PERFORM cdp.create_segment('browse_no_buy', 'views_7d >= 1 AND orders_180d = 0');
    PERFORM cdp.create_segment('recent_buyers', 'last_purchase_at > cdp.now() - interval ''7 days''', 'realtime', '1 hour');
    PERFORM cdp.create_segment('lapsed', 'last_purchase_at < cdp.now() - interval ''30 days''', 'realtime', '1 hour');
    PERFORM cdp.create_segment('new_people', 'first_seen_at > cdp.now() - interval ''14 days''', 'realtime', '1 hour');
    PERFORM cdp.create_segment('cheap_repeaters', 'orders_180d >= 2 AND avg_price < 10');
    PERFORM cdp.create_segment('one_sku', 'skus_bought = 1');
    PERFORM cdp.create_segment('mid_spenders', 'revenue_total BETWEEN 20 AND 100');
    PERFORM cdp.create_segment('known_since_october', 'first_seen_at < ''2026-11-01''');
    PERFORM cdp.create_segment('buyers_not_whales', 'cdp.in_segment(profile_id, ''buyers'') AND NOT cdp.in_segment(profile_id, ''whales'')');
END
$$;
