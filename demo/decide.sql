-- demo/decide.sql: next best action on the demo's customers: three offers,
-- a model trained from past sends, the next best actions of a few people
-- with their explanations, and a capacity-limited campaign with a control
-- group and its results.
\pset footer off
\pset null '-'
SET client_min_messages = warning;

\echo
\echo '== next best action: three offers (a call-center callback with 50 places a day)'
INSERT INTO cdp.channels (name, kind, target, requires_consent)
VALUES ('callcenter', 'task', 'call-center queue', false) ON CONFLICT DO NOTHING;
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('vip_email', 'email', 'Our VIP club', 'Hello {{traits.first_name | default: "there"}}, join the VIP club.'),
    ('comeback_email', 'email', 'We miss you', '15% off your next order: {{payload.code | default: "BACK15"}}'),
    ('callback_task', 'callcenter', NULL, 'Call back customer {{profile_id}}: loyalty review')
ON CONFLICT DO NOTHING;
-- the CRM's email consents: two customers in three
INSERT INTO cdp.consents (profile_id, purpose, granted, source)
SELECT DISTINCT i.profile_id, 'email', true, 'crm import' FROM cdp.identities i
WHERE i.type = 'email' AND i.profile_id % 3 <> 0
ON CONFLICT DO NOTHING;
SELECT cdp.create_offer('vip', '{"email": "vip_email"}', 80, 'Joined VIP', '14 days',
                        condition => 'revenue_total > 200', cooldown => '30 days',
                        features => '{orders_180d,revenue_total,stores_visited}');
SELECT cdp.create_offer('comeback', '{"email": "comeback_email"}', 25, 'Order Completed', '7 days',
                        segments => '{lapsed}', lifetime_cap => 2);
SELECT cdp.create_offer('callback', '{"callcenter": "callback_task"}', 150, 'Loyalty Review Done', '7 days',
                        condition => 'orders_180d >= 2', capacity => '{"callcenter": 50}',
                        features => '{orders_180d,revenue_total}');
SELECT name, channels, segments, condition, value, capacity FROM cdp.offers ORDER BY name;

\echo
\echo '-- the VIP offer learns from 3000 past sends (seeded): who joined depended on orders and revenue'
SELECT setseed(0.42);
INSERT INTO cdp.offer_sends (profile_id, offer, channel, sent_at, features, outcome)
SELECT c.profile_id, 'vip', 'email', cdp.now() - interval '60 days',
       ARRAY[c.orders_180d, c.revenue_total, c.stores_visited]::float8[],
       CASE WHEN random() < 1 / (1 + exp(-(-2.5 + 0.4 * coalesce(c.orders_180d, 0)
                                           + 0.004 * coalesce(c.revenue_total, 0))))
            THEN 'converted' ELSE 'expired' END
FROM cdp.customers c ORDER BY c.profile_id LIMIT 3000;
SELECT jsonb_pretty(cdp.train_offer('vip') - 'rule') AS model;
SELECT offer, feature, round(weight::numeric, 4) AS weight FROM cdp.offer_weights ORDER BY ord;

\echo
\echo '-- the next best actions of four customers, with why'
SELECT p.profile_id, n.offer, n.channel, to_char(n.send_at AT TIME ZONE 'Europe/Paris', 'DD Mon HH24:MI') AS send_at_paris,
       round(n.score::numeric, 2) AS score, n.explanation ->> 'model' AS model,
       n.explanation -> 'top_features' -> 0 ->> 'feature' AS top_feature,
       (SELECT string_agg(k || ': ' || (v ->> 'reason'), ', ' ORDER BY k)
        FROM jsonb_each(n.explanation -> 'excluded') e(k, v)) AS others
FROM (SELECT c.profile_id FROM cdp.customers c
      WHERE c.revenue_total > 200 ORDER BY c.profile_id LIMIT 4) p,
     LATERAL cdp.next_best_actions(p.profile_id, 2) n
ORDER BY p.profile_id, n.score DESC;
\echo '-- one explanation in full'
SELECT jsonb_pretty(explanation) AS explanation
FROM cdp.next_best_actions((SELECT min(profile_id) FROM cdp.customers WHERE revenue_total > 200), 1);

\echo
\echo '== a capacity-limited campaign: every customer, 20% held out as control'
SELECT cdp.create_segment('customers', 'orders_180d >= 1') AS members;
SELECT cdp.create_campaign('loyalty_week', 'customers', holdout => 20) AS campaign_id;
SELECT cdp.set_campaign_offers('loyalty_week', '{vip,comeback,callback}') AS offers;
SELECT cdp.run_campaign('loyalty_week', 'week-1') AS run \gset
SELECT audience, enqueued, held_out, suppressed FROM cdp.campaign_runs WHERE run_id = :run;
SELECT run, audience, enqueued, held_out, no_offer, expected_value, jsonb_pretty(capacity_cuts) AS capacity_cuts,
       suppressed AS excluded
FROM cdp.offer_runs WHERE campaign = 'loyalty_week';
SELECT offer, channel, count(*) FILTER (WHERE NOT control) AS sent, count(*) FILTER (WHERE control) AS control,
       (SELECT used FROM cdp.offer_capacity k WHERE k.offer = s.offer AND k.channel = s.channel
        ORDER BY day LIMIT 1) AS capacity_used
FROM cdp.offer_sends s WHERE campaign = 'loyalty_week' GROUP BY offer, channel ORDER BY offer;

\echo '-- a week later (seeded): the treated convert more than the control'
SELECT setseed(0.7);
SELECT count(cdp.track(x.ids, CASE s.offer WHEN 'vip' THEN 'Joined VIP' WHEN 'comeback' THEN 'Order Completed'
                                           ELSE 'Loyalty Review Done' END,
                       '{"revenue": 40}', s.sent_at + interval '2 days')) AS conversions_tracked
FROM cdp.offer_sends s
CROSS JOIN LATERAL (SELECT jsonb_build_object(i.type, i.value) AS ids FROM cdp.identities i
                    WHERE i.profile_id = s.profile_id ORDER BY i.type, i.value LIMIT 1) x
WHERE s.campaign = 'loyalty_week' AND random() < CASE WHEN s.control THEN 0.05 ELSE 0.08 END;
SELECT arm, people, conversions, round(conversion_rate::numeric, 4) AS rate, value,
       round(uplift::numeric, 4) AS uplift, round(p_value::numeric, 4) AS p_value
FROM cdp.campaign_results('loyalty_week');
SELECT offer, alpha, beta FROM cdp.offer_arms ORDER BY offer;
