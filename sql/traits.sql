-- Declared and computed traits. An oracle: on a randomized stream of events
-- (out of order, duplicated, both ingest paths), merges, an unmerge, an
-- erasure and clock moves, every computed trait equals a plain SQL aggregate
-- over the profile's events. The worker is off: cdp.tick() backfills and
-- decays. cdp.timezone is Europe/Paris (test/regress.conf).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-20 12:30:00+00';

-- Traits defined before any event.
SELECT cdp.declare_trait('birth_date', 'date');
SELECT cdp.define_trait('orders_180d', 'count', 'Order Completed', NULL, '180 days');
SELECT cdp.define_trait('revenue_total', 'sum', 'Order Completed', 'amount');
SELECT cdp.define_trait('avg_basket', 'avg', 'Order Completed', 'amount');
SELECT cdp.define_trait('max_amount', 'max', 'Order Completed', 'amount', '90 days');
SELECT cdp.define_trait('first_order_at', 'first', 'Order Completed');
SELECT cdp.define_trait('last_purchase_at', 'last', 'Order Completed');
SELECT cdp.define_trait('preferred_channel', 'most_frequent', NULL, 'channel');
SELECT cdp.define_trait('spent_today_14_18', 'sum', 'Order Completed', 'amount', 'today',
    'extract(hour FROM cdp.local_time(occurred_at)) BETWEEN 14 AND 17');
SELECT cdp.define_trait('views_2h', 'count', 'Product Viewed', NULL, '2 hours');

-- A stream: 40 people known by user_id or anonymous_id, some messages carrying
-- both (merges), times spread over 400 days and the last hours, some
-- messages sent twice with the same id, half through cdp.track, half in
-- batches through cdp.ingest_batch.
SELECT setseed(0.42);
CREATE TEMP TABLE stream AS
SELECT i,
       CASE WHEN random() < 0.12 THEN jsonb_build_object('user_id', 'u' || (random() * 40)::int,
                                                         'anonymous_id', 'a' || (random() * 40)::int)
            WHEN random() < 0.5 THEN jsonb_build_object('user_id', 'u' || (random() * 40)::int)
            ELSE jsonb_build_object('anonymous_id', 'a' || (random() * 40)::int) END AS ids,
       (ARRAY['Order Completed', 'Order Completed', 'Product Viewed', 'Store Visit'])[1 + (random() * 3)::int] AS event,
       jsonb_strip_nulls(jsonb_build_object(
           'amount', CASE WHEN random() < 0.1 THEN to_jsonb('lots'::text)
                          WHEN random() < 0.9 THEN to_jsonb(round((random() * 300)::numeric, 2)) END,
           'store', (ARRAY['Paris', 'Lyon', 'Lille', NULL])[1 + (random() * 3)::int])) AS props,
       CASE WHEN random() < 0.3 THEN timestamptz '2026-05-20 12:30:00+00' - (random() * 20) * interval '1 hour'
            ELSE timestamptz '2026-05-20 12:30:00+00' - (random() * 400) * interval '1 day' END AS at,
       (ARRAY['web', 'store', 'email', 'app'])[1 + (random() * 3)::int] AS channel,
       'm' || (CASE WHEN random() < 0.08 THEN (random() * i)::int ELSE i END) AS event_id
FROM generate_series(1, 400) i;
SELECT count(*) > 0 AS has_duplicates FROM (SELECT event_id FROM stream GROUP BY 1 HAVING count(*) > 1) d;

CREATE FUNCTION play(lo int, hi int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM stream WHERE i BETWEEN lo AND hi AND i % 2 = 0 ORDER BY i LOOP
        PERFORM cdp.track(r.ids, r.event, r.props, r.at, r.channel, r.event_id);
    END LOOP;
    PERFORM cdp.ingest_batch(jsonb_agg(jsonb_build_object(
        'type', 'track', 'event', s.event, 'properties', s.props, 'timestamp', s.at,
        'messageId', s.event_id, 'userId', s.ids->>'user_id', 'anonymousId', s.ids->>'anonymous_id',
        'context', jsonb_build_object('channel', s.channel)) ORDER BY s.i))
    FROM stream s WHERE s.i BETWEEN lo AND hi AND s.i % 2 = 1;
END $$;
SELECT play(1, 200);
SELECT cdp.identify('{"user_id": "u1"}', '{"birth_date": "1970-03-04"}');
SELECT cdp.identify('{"user_id": "u2"}', '{"birth_date": "not a date"}');

-- Traits defined with history behind them: the backfill computes them.
SELECT cdp.define_trait('first_store', 'first', 'Order Completed', 'store');
SELECT cdp.define_trait('stores_visited', 'count_distinct', 'Store Visit', 'store', 'this month');
SELECT cdp.define_trait('last_store_30d', 'last', NULL, 'store', '30 days');
SELECT name, state FROM cdp.trait_status WHERE state <> 'ready' ORDER BY name;
SELECT (cdp.tick()->>'traits')::int > 0 AS backfilled;
SELECT play(201, 400);
DO $$
BEGIN
    FOR i IN 1..50 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM cdp.trait_status WHERE state = 'backfilling');
        PERFORM cdp.tick();
    END LOOP;
END
$$;
SELECT name, state FROM cdp.trait_status WHERE state <> 'ready' ORDER BY name;
SELECT count(*) > 0 AS merged FROM cdp.merges;

-- The oracle: each trait from the events, as plain SQL.
CREATE FUNCTION oracle() RETURNS TABLE (trait text, profile_id bigint, value text)
LANGUAGE sql STABLE AS $$
    WITH e AS (SELECT * FROM cdp.events), n AS (SELECT cdp.now() AS now), p AS (SELECT profile_id FROM cdp.profiles)
    SELECT 'orders_180d', p.profile_id, (SELECT count(*) FROM e, n WHERE e.profile_id = p.profile_id
        AND e.event = 'Order Completed' AND e.occurred_at > n.now - interval '180 days')::text FROM p
    UNION ALL
    SELECT 'revenue_total', p.profile_id, (SELECT sum((e.properties->>'amount')::numeric) FROM e
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed'
          AND jsonb_typeof(e.properties->'amount') = 'number')::text FROM p
    UNION ALL
    SELECT 'avg_basket', p.profile_id, (SELECT avg((e.properties->>'amount')::numeric) FROM e
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed'
          AND jsonb_typeof(e.properties->'amount') = 'number')::numeric(20,6)::text FROM p
    UNION ALL
    SELECT 'max_amount', p.profile_id, (SELECT max((e.properties->>'amount')::numeric) FROM e, n
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed'
          AND e.occurred_at > n.now - interval '90 days'
          AND jsonb_typeof(e.properties->'amount') = 'number')::text FROM p
    UNION ALL
    SELECT 'first_order_at', p.profile_id, (SELECT min(occurred_at) FROM e
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed')::text FROM p
    UNION ALL
    SELECT 'last_purchase_at', p.profile_id, (SELECT max(occurred_at) FROM e
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed')::text FROM p
    UNION ALL
    SELECT 'preferred_channel', p.profile_id, (SELECT e.channel FROM e
        WHERE e.profile_id = p.profile_id AND e.channel IS NOT NULL
        GROUP BY e.channel ORDER BY count(*) DESC, max(e.occurred_at) DESC, e.channel LIMIT 1) FROM p
    UNION ALL
    SELECT 'spent_today_14_18', p.profile_id, (SELECT sum((e.properties->>'amount')::numeric) FROM e, n
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed'
          AND (e.occurred_at AT TIME ZONE 'Europe/Paris')::date = (n.now AT TIME ZONE 'Europe/Paris')::date
          AND extract(hour FROM e.occurred_at AT TIME ZONE 'Europe/Paris') BETWEEN 14 AND 17
          AND jsonb_typeof(e.properties->'amount') = 'number')::text FROM p
    UNION ALL
    SELECT 'views_2h', p.profile_id, (SELECT count(*) FROM e, n WHERE e.profile_id = p.profile_id
        AND e.event = 'Product Viewed' AND e.occurred_at > n.now - interval '2 hours')::text FROM p
    UNION ALL
    SELECT 'first_store', p.profile_id, (SELECT e.properties->>'store' FROM e
        WHERE e.profile_id = p.profile_id AND e.event = 'Order Completed' AND e.properties ? 'store'
        ORDER BY e.occurred_at, e.properties->>'store' LIMIT 1) FROM p
    UNION ALL
    SELECT 'stores_visited', p.profile_id, (SELECT count(DISTINCT e.properties->>'store') FROM e, n
        WHERE e.profile_id = p.profile_id AND e.event = 'Store Visit'
          AND date_trunc('month', e.occurred_at AT TIME ZONE 'Europe/Paris')
              = date_trunc('month', n.now AT TIME ZONE 'Europe/Paris'))::text FROM p
    UNION ALL
    SELECT 'last_store_30d', p.profile_id, (SELECT e.properties->>'store' FROM e, n
        WHERE e.profile_id = p.profile_id AND e.properties ? 'store'
          AND e.occurred_at > n.now - interval '30 days'
        ORDER BY e.occurred_at DESC, e.properties->>'store' DESC LIMIT 1) FROM p
$$;
CREATE FUNCTION computed() RETURNS TABLE (trait text, profile_id bigint, value text)
LANGUAGE sql STABLE AS $$
    SELECT t.key, c.profile_id,
           CASE WHEN t.key = 'avg_basket' THEN (t.value #>> '{}')::numeric(20,6)::text
                WHEN t.key IN ('first_order_at', 'last_purchase_at') THEN (t.value #>> '{}')::timestamptz::text
                ELSE t.value #>> '{}' END
    FROM cdp.customers c, jsonb_each(to_jsonb(c) - 'profile_id' - 'created_at' - 'birth_date') t
$$;
CREATE VIEW mismatches AS
    SELECT 'missing' AS side, * FROM (SELECT * FROM oracle() WHERE trait IN (SELECT name FROM cdp.trait_definitions)
                                      EXCEPT SELECT * FROM computed()) a
    UNION ALL
    SELECT 'extra', * FROM (SELECT * FROM computed() EXCEPT SELECT * FROM oracle()) b;

SELECT count(*) AS profiles, count(DISTINCT trait) AS traits FROM computed();
SELECT * FROM mismatches ORDER BY 2, 3 LIMIT 10;

-- The clock moves: windows decay with no event, today rolls over at local
-- midnight (22:00 UTC in May).
SET cdp.fake_now = '2026-05-20 21:59:00+00';
SELECT cdp.tick() IS NOT NULL;
SELECT * FROM mismatches ORDER BY 2, 3 LIMIT 10;
SET cdp.fake_now = '2026-05-20 22:01:00+00';
DO $$ BEGIN FOR i IN 1..5 LOOP PERFORM cdp.tick(); END LOOP; END $$;
SELECT * FROM mismatches ORDER BY 2, 3 LIMIT 10;
SET cdp.fake_now = '2026-07-02 09:00:00+00';
DO $$ BEGIN FOR i IN 1..5 LOOP PERFORM cdp.tick(); END LOOP; END $$;
SELECT * FROM mismatches ORDER BY 2, 3 LIMIT 10;
SELECT count(*) AS decay_overdue, bool_and(decay_at > cdp.now()) AS all_ahead
FROM cdp.profile_traits WHERE decay_at <= cdp.now();

-- A late event in the past counts in its window; an unmerge splits the
-- traits back; an erasure removes them.
SELECT cdp.track('{"user_id": "u3"}', 'Order Completed', '{"amount": 12.5}',
                 cdp.now() - interval '100 days', 'store', 'late-1') > 0 AS tracked;
SELECT cdp.unmerge((SELECT min(merge_id) FROM cdp.merges WHERE undone_at IS NULL)) > 0 AS unmerged;
SELECT cdp.forget('{"user_id": "u4"}') IS NOT NULL AS forgotten;
SELECT * FROM mismatches ORDER BY 2, 3 LIMIT 10;
SELECT count(*) AS orphans FROM cdp.profile_traits t
WHERE NOT EXISTS (SELECT FROM cdp.profiles p WHERE p.profile_id = t.profile_id);

-- Declared traits: typed, and values that do not cast are shown, not errors.
SELECT birth_date FROM cdp.customers c JOIN cdp.identities i USING (profile_id)
WHERE i.type = 'user_id' AND i.value IN ('u1', 'u2') ORDER BY 1 NULLS LAST;
SELECT trait, value, reason FROM cdp.trait_type_issues WHERE trait = 'birth_date';
SELECT trait, count(*) > 0 AS skipped FROM cdp.trait_type_issues WHERE reason = 'not a number'
GROUP BY trait ORDER BY trait;
SELECT cdp.trait_value('"2026-02-30"', NULL::date), cdp.trait_value('"12"', NULL::integer),
       cdp.trait_value('"99999999999"', NULL::integer), cdp.trait_value('"1e5"', NULL::numeric),
       cdp.trait_value('"1e99999"', NULL::numeric), cdp.trait_value('true', NULL::boolean),
       cdp.trait_value('{"a": 1}', NULL::text), cdp.trait_value('"now"', NULL::timestamptz);

-- Bad definitions get clear errors.
SELECT cdp.define_trait('x', 'median', 'Order Completed', 'amount');
SELECT cdp.define_trait('x', 'sum', 'Order Completed');
SELECT cdp.define_trait('x', 'count', 'Order Completed', 'amount');
SELECT cdp.define_trait('x', 'sum', 'Order Completed', 'channel');
SELECT cdp.define_trait('x', 'count', NULL, NULL, 'fortnight');
SELECT cdp.define_trait('x', 'count', NULL, NULL, '-3 days');
SELECT cdp.define_trait('x', 'count', NULL, NULL, NULL, 'nosuchcolumn > 1');
SELECT cdp.define_trait('x', 'count', NULL, NULL, NULL, 'random() > 0.5');
SELECT cdp.define_trait('x', 'count', NULL, NULL, NULL, 'true) FROM pg_authid --');
SELECT cdp.define_trait('x', 'count', NULL, NULL, NULL, 'count(*) > 1');
SELECT cdp.define_trait('x', 'count', NULL, NULL, NULL, '$1 > 0');
SELECT cdp.define_trait('profile_id', 'count', NULL);
SELECT cdp.define_trait('orders_180d', 'count', NULL);
SELECT cdp.define_trait(NULL, 'count', NULL);
SELECT cdp.declare_trait('shoe_size', 'point');
SELECT cdp.drop_trait('no such trait');

-- Quotes and unicode in names; a where that raises for some events records
-- its error and leaves the events and the other traits alone.
SELECT cdp.define_trait('Größe "Kunde"', 'count', 'Order Completed');
SELECT cdp.define_trait('ratio', 'count', 'Order Completed', NULL, NULL,
    '(properties->>''amount'')::numeric / 0 > 1');
SELECT cdp.track('{"user_id": "u5"}', 'Order Completed', '{"amount": 5}', cdp.now(), 'web', 'raise-1') > 0 AS tracked;
SELECT name, state, last_error FROM cdp.trait_status WHERE name IN ('ratio', 'Größe "Kunde"') ORDER BY 1;
SELECT "Größe ""Kunde""" FROM cdp.customers c JOIN cdp.identities i USING (profile_id)
WHERE i.type = 'user_id' AND i.value = 'u5';
SELECT cdp.drop_trait('ratio');
SELECT cdp.drop_trait('Größe "Kunde"');
SELECT cdp.drop_trait('views_2h');
SELECT * FROM mismatches ORDER BY 2, 3 LIMIT 10;
SELECT attname FROM pg_attribute WHERE attrelid = 'cdp.customers'::regclass AND attnum > 0 ORDER BY attnum;
-- The view stays the extension's, readable by cdp_analyst.
SELECT count(*) FROM pg_depend WHERE objid = 'cdp.customers'::regclass AND deptype = 'e';
SELECT has_table_privilege('cdp_analyst', 'cdp.customers', 'SELECT');

-- A trait's "where" runs with its owner's rights, not the writer's: an
-- owner who cannot read a table cannot read it through a trait, even when
-- a superuser writes the event.
CREATE TABLE regress_secret (k int);
INSERT INTO regress_secret VALUES (1);
CREATE ROLE regress_trait_owner IN ROLE cdp_admin;
SET ROLE regress_trait_owner;
SELECT cdp.define_trait('peeks', 'count', 'Order Completed', NULL, NULL,
    'EXISTS (SELECT FROM public.regress_secret)');
RESET ROLE;
SELECT owner FROM cdp.trait_definitions WHERE name = 'peeks';
SELECT cdp.track('{"user_id": "u6"}', 'Order Completed', '{}', cdp.now(), 'web', 'peek-1') > 0 AS tracked;
SELECT name, state, last_error FROM cdp.trait_status WHERE name = 'peeks';
GRANT SELECT ON regress_secret TO regress_trait_owner;
SELECT cdp.track('{"user_id": "u6"}', 'Order Completed', '{}', cdp.now(), 'web', 'peek-2') > 0 AS tracked;
-- The failing trait is backfilled again: once it works, it is exact and
-- the error goes.
DO $$
BEGIN
    FOR i IN 1..50 LOOP
        EXIT WHEN (SELECT state FROM cdp.trait_status WHERE name = 'peeks') = 'ready';
        PERFORM cdp.tick();
    END LOOP;
END
$$;
SELECT name, state, last_error FROM cdp.trait_status WHERE name = 'peeks';
SELECT peeks FROM cdp.customers c JOIN cdp.identities i USING (profile_id)
WHERE i.type = 'user_id' AND i.value = 'u6';
SELECT cdp.drop_trait('peeks');
DROP TABLE regress_secret;
DROP ROLE regress_trait_owner;
