-- The plain SQL side of the decision benchmark: the same offers scored
-- from the stored weights for every member, each person's best offer
-- (ROW_NUMBER() OVER (PARTITION BY profile_id ORDER BY score DESC)), cut
-- by a running count per offer against its capacity, and written to a
-- plain outbox with a dedupe key.  People cut do not fall back to their
-- next offer: the plain rule is simpler than the greedy.
WITH o AS (
    SELECT f.name AS offer, f.value::float8 AS value, k.key AS channel, k.value #>> '{}' AS template,
           (f.capacity ->> k.key)::int AS capacity, f.channels ? 'email' AS needs_consent,
           f.condition IS NOT NULL AS conditional, m.intercept,
           coalesce(m.weights[array_position(m.features, 'f1')], 0) AS w1,
           coalesce(m.weights[array_position(m.features, 'f2')], 0) AS w2,
           coalesce(m.weights[array_position(m.features, 'f3')], 0) AS w3,
           coalesce(m.weights[array_position(m.features, 'f4')], 0) AS w4,
           coalesce(m.weights[array_position(m.features, 'f5')], 0) AS w5,
           substr(f.condition, 1, 2) AS cond_feature
    FROM cdp.offers f JOIN cdp.offer_models m ON m.offer = f.name, jsonb_each(f.channels) k
),
s AS (
    SELECT c.profile_id, o.offer, o.channel, o.template, o.capacity,
           o.value / (1 + exp(-(o.intercept + o.w1 * c.f1 + o.w2 * c.f2 + o.w3 * c.f3
                                + o.w4 * c.f4 + o.w5 * c.f5))) AS score
    FROM cdp.segment_members sm
    JOIN cdp.segments g ON g.segment_id = sm.segment_id AND g.name = 'everyone'
    JOIN cdp.customers c ON c.profile_id = sm.profile_id
    LEFT JOIN cdp.consents k ON k.profile_id = c.profile_id AND k.purpose = 'email'
    CROSS JOIN o
    WHERE (NOT o.needs_consent OR k.granted)
      AND (NOT o.conditional OR CASE o.cond_feature WHEN 'f1' THEN c.f1 WHEN 'f2' THEN c.f2
                                    WHEN 'f3' THEN c.f3 WHEN 'f4' THEN c.f4 ELSE c.f5 END > -1)
),
best AS (
    SELECT *, row_number() OVER (PARTITION BY profile_id ORDER BY score DESC, offer) AS rn FROM s
),
kept AS (
    SELECT *, count(*) OVER (PARTITION BY offer ORDER BY score DESC, profile_id) AS running
    FROM best WHERE rn = 1
)
INSERT INTO bench.plain_outbox (profile_id, offer, channel, template, score, dedupe_key, not_before)
SELECT profile_id, offer, channel, template, score, 'campaign/plain/r1/' || profile_id, now()
FROM kept WHERE running <= capacity
ON CONFLICT (dedupe_key) DO NOTHING;
