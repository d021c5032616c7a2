-- Learning: a logistic model trained on a synthetic set with known true
-- weights recovers their signs and order and reports its held-out AUC;
-- the switch rule hands the offer from its bandit to its model; the
-- model's explanation names the top features, a NULL trait imputed; the
-- Thompson-sampling bandit converges to the best arm on a seeded stream.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-06-01 08:00:00+00';

INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES
    ('callcenter', 'task', 'call-center queue', false);
INSERT INTO cdp.templates (name, channel, body) VALUES ('call', 'callcenter', 'Call {{profile_id}}');
SELECT cdp.declare_trait('recency', 'numeric');
SELECT cdp.declare_trait('tenure', 'double precision');
SELECT cdp.declare_trait('noise', 'integer');
SELECT cdp.create_offer('upsell', '{"callcenter": "call"}', 200, 'Upgraded', '30 days',
                        features => '{recency,tenure,noise}');
SELECT cdp.create_offer('plain', '{"callcenter": "call"}', 10, 'Upgraded', '30 days');

-- Not enough to learn from yet.
SELECT cdp.train_offer('upsell');
SELECT cdp.train_offer('plain');
SELECT cdp.train_offer('nothing');
SELECT cdp.train_offer(NULL);

-- 4000 settled sends: features uniform in [-1, 1], converted with
-- probability sigmoid(-1 + 2.5 recency - 1.2 tenure + 0.2 noise/10).
SELECT setseed(0.24);
CREATE TEMP TABLE synth AS
    SELECT g AS pid, round((random() * 2 - 1)::numeric, 3)::float8 AS recency,
           round((random() * 2 - 1)::numeric, 3)::float8 AS tenure,
           floor(random() * 21 - 10)::float8 AS noise, random() AS u
    FROM generate_series(1, 4000) g;
INSERT INTO cdp.offer_sends (profile_id, offer, channel, sent_at, features, outcome, converted_at, value)
SELECT pid, 'upsell', 'callcenter', '2026-05-01', ARRAY[recency, tenure, noise],
       CASE WHEN u < 1 / (1 + exp(-(-1 + 2.5 * recency - 1.2 * tenure + 0.02 * noise)))
            THEN 'converted' ELSE 'expired' END,
       CASE WHEN u < 1 / (1 + exp(-(-1 + 2.5 * recency - 1.2 * tenure + 0.02 * noise)))
            THEN timestamptz '2026-05-03' END, NULL
FROM synth;
-- one with a missing feature, imputed by the training mean
INSERT INTO cdp.offer_sends (profile_id, offer, channel, sent_at, features, outcome)
VALUES (4001, 'upsell', 'callcenter', '2026-05-01', ARRAY[0.5, NULL, 3], 'expired');
SELECT count(*) AS sends, count(*) FILTER (WHERE outcome = 'converted') AS conversions
FROM cdp.offer_sends WHERE offer = 'upsell';

SELECT cdp.train_offer('upsell') AS model \gset
SELECT (:'model'::jsonb) - 'weights' - 'intercept' - 'auc' AS sizes;
-- signs and order recovered: |recency| > |tenure| > |noise|, recency +, tenure -
SELECT round(((:'model'::jsonb) -> 'weights' ->> 'recency')::numeric, 1) AS recency,
       round(((:'model'::jsonb) -> 'weights' ->> 'tenure')::numeric, 1) AS tenure,
       round(((:'model'::jsonb) -> 'weights' ->> 'noise')::numeric, 2) AS noise,
       round(((:'model'::jsonb) ->> 'intercept')::numeric, 1) AS intercept,
       round(((:'model'::jsonb) ->> 'auc')::numeric, 2) AS auc;
SELECT ((:'model'::jsonb) -> 'weights' ->> 'recency')::float8 > 0 AS recency_positive,
       ((:'model'::jsonb) -> 'weights' ->> 'tenure')::float8 < 0 AS tenure_negative,
       abs(((:'model'::jsonb) -> 'weights' ->> 'recency')::float8)
         > abs(((:'model'::jsonb) -> 'weights' ->> 'tenure')::float8) AND
       abs(((:'model'::jsonb) -> 'weights' ->> 'tenure')::float8)
         > abs(((:'model'::jsonb) -> 'weights' ->> 'noise')::float8) * 10 AS order_kept,
       ((:'model'::jsonb) ->> 'auc')::float8 > 0.75 AS auc_good;
-- stored and queryable; the same seed trains the same model
SELECT offer, feature, round(weight::numeric, 3) AS weight FROM cdp.offer_weights ORDER BY ord;
SELECT offer, n, n_train, n_test, conversions, active, round(auc::numeric, 3) AS auc FROM cdp.offer_models;
SELECT cdp.train_offer('upsell') = :'model'::jsonb AS reproducible;
-- another seed splits otherwise
SET cdp.decide_seed = 99;
SELECT (cdp.train_offer('upsell') ->> 'auc') <> (:'model'::jsonb ->> 'auc') AS other_split;
RESET cdp.decide_seed;
SELECT cdp.train_offer('upsell') = :'model'::jsonb AS back;
-- a stronger penalty shrinks the weights
SET cdp.decide_l2 = 1000;
SELECT abs((cdp.train_offer('upsell') -> 'weights' ->> 'recency')::float8)
       < abs((:'model'::jsonb -> 'weights' ->> 'recency')::float8) AS shrunk;
RESET cdp.decide_l2;
SELECT cdp.train_offer('upsell') = :'model'::jsonb AS back;

-- The switch rule: below cdp.decide_min_sends the bandit keeps scoring.
SET cdp.decide_min_sends = 5000;
SELECT cdp.train_offer('upsell') ->> 'active' AS active, cdp.train_offer('upsell') ->> 'rule' AS rule;
SELECT cdp.identify('{"user_id": "p-1"}', '{"recency": 0.9, "tenure": -0.5, "noise": 2}') AS p1 \gset
SELECT cdp.identify('{"user_id": "p-2"}', '{"recency": -0.9, "tenure": 0.8}') AS p2 \gset
SELECT offer, explanation ->> 'model' AS model FROM cdp.next_best_actions(:p1, 5) ORDER BY offer;
RESET cdp.decide_min_sends;
SELECT cdp.train_offer('upsell') ->> 'active' AS active;
-- now the model scores: propensity from the weights, top features by contribution
SELECT offer, explanation ->> 'model' AS model, round(score::numeric, 2) AS score,
       round((explanation ->> 'propensity')::numeric, 3) AS propensity
FROM cdp.next_best_actions(:p1, 5) ORDER BY offer;
SELECT round(score::numeric, 2) = round((200 / (1 + exp(-(m.intercept + m.weights[1] * 0.9
            + m.weights[2] * -0.5 + m.weights[3] * 2))))::numeric, 2) AS score_from_weights
FROM cdp.next_best_actions(:p1, 5) n JOIN cdp.offer_models m ON m.offer = n.offer WHERE n.offer = 'upsell';
SELECT f ->> 'feature' AS feature, f ->> 'value' AS value, f ->> 'imputed' AS imputed,
       round((f ->> 'contribution')::numeric, 2) AS contribution
FROM cdp.next_best_actions(:p1, 5), jsonb_array_elements(explanation -> 'top_features') f
WHERE offer = 'upsell';
-- P2 has no noise trait: the training mean stands in, and says so
SELECT f ->> 'feature' AS feature, f ->> 'imputed' AS imputed
FROM cdp.next_best_actions(:p2, 5), jsonb_array_elements(explanation -> 'top_features') f
WHERE offer = 'upsell' ORDER BY 1;
SELECT offer, round(score::numeric, 2) AS score FROM cdp.next_best_actions(:p2, 5) ORDER BY offer;

-- The bandit: three arms converting at 4%, 8% and 15%, 3000 rounds of
-- Thompson sampling with seeded draws and seeded outcomes.
CREATE TEMP TABLE arms (arm int PRIMARY KEY, rate float8, alpha float8, beta float8, pulls int);
INSERT INTO arms VALUES (1, 0.04, 1, 1, 0), (2, 0.08, 1, 1, 0), (3, 0.15, 1, 1, 0);
CREATE TEMP TABLE late (arm int);
DO $$
DECLARE
    pick int;
    prate float8;
    won boolean;
BEGIN
    PERFORM setseed(0.5);
    FOR r IN 1..3000 LOOP
        SELECT arm, rate INTO pick, prate FROM arms
        ORDER BY cdp.bandit_draw(alpha, beta, r * 10 + arm) DESC, arm LIMIT 1;
        won := random() < prate;
        UPDATE arms SET pulls = pulls + 1, alpha = alpha + won::int, beta = beta + (NOT won)::int
        WHERE arm = pick;
        IF r > 2000 THEN
            INSERT INTO late VALUES (pick);
        END IF;
    END LOOP;
END $$;
SELECT arm, pulls, alpha + beta - 2 = pulls AS counted FROM arms ORDER BY arm;
SELECT (SELECT pulls FROM arms WHERE arm = 3) > 0.7 * 3000 AS best_arm_most_pulled,
       (SELECT count(*) FILTER (WHERE arm = 3) FROM late) > 900 AS best_arm_pulled_at_the_end;
-- draws are reproducible and in (0, 1); bad parameters refused
SELECT cdp.bandit_draw(2, 3, 1) = cdp.bandit_draw(2, 3, 1) AS same,
       cdp.bandit_draw(2, 3, 1) <> cdp.bandit_draw(2, 3, 2) AS differs,
       (SELECT bool_and(d > 0 AND d < 1) FROM (SELECT cdp.bandit_draw(0.5, 0.5, g) AS d
                                               FROM generate_series(1, 1000) g) x) AS in_range,
       (SELECT round(avg(cdp.bandit_draw(2, 8, g))::numeric, 2) FROM generate_series(1, 20000) g) AS mean_near_0_2;
SELECT cdp.bandit_draw(0, 1, 1);
SELECT cdp.bandit_draw(1, 'infinity', 1);

-- The two-proportion z-test against values computed independently (python3:
-- pooled p, z = (p1 - p2) / se, p = erfc(|z| / sqrt 2)): 2.1883 / 0.0287
-- and 3.3333 / 0.000858.
SELECT round(z::numeric, 4) AS z, round(p_value::numeric, 4) AS p FROM cdp.two_proportion_test(120, 1000, 90, 1000);
SELECT round(z::numeric, 4) AS z, round(p_value::numeric, 6) AS p FROM cdp.two_proportion_test(30, 200, 10, 200);
SELECT * FROM cdp.two_proportion_test(0, 10, 0, 10);
SELECT * FROM cdp.two_proportion_test(5, 0, 1, 10);

SELECT cdp.drop_offer('upsell');
SELECT cdp.drop_offer('plain');
SELECT count(*) AS models_left FROM cdp.offer_models;
DELETE FROM cdp.offer_sends;
