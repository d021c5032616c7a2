-- Data of the decision benchmark (test/bench/decide.sh): :people profiles
-- with five numeric traits, an email address each and email consent for
-- nine in ten; twenty offers (ten by email, five to the call center, five
-- on the coupon printer), five of them with a condition, each with a
-- trained model over three of the traits and a daily capacity; and the
-- same offers flattened for the plain SQL side.
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

INSERT INTO cdp.channels (name, kind, address_type) VALUES ('email', 'email', 'email');
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES
    ('callcenter', 'task', 'call-center queue', false), ('printer', 'print', 'coupon printer', false);
INSERT INTO cdp.templates (name, channel, subject, body)
SELECT 'o' || g || '_' || c, c, 'Offer ' || g, 'Offer ' || g || ' for {{profile_id}}'
FROM generate_series(1, 20) g, unnest(ARRAY['email', 'callcenter', 'printer']) c;
SELECT cdp.declare_trait('f' || g, 'double precision') FROM generate_series(1, 5) g;
SELECT cdp.create_segment('everyone', 'profile_id > 0', 'scheduled');

SELECT setseed(0.17);
INSERT INTO cdp.profiles (profile_id, traits)
SELECT g, jsonb_build_object('f1', round((random() * 4 - 2)::numeric, 3),
                             'f2', round((random() * 4 - 2)::numeric, 3),
                             'f3', round((random() * 4 - 2)::numeric, 3),
                             'f4', round((random() * 4 - 2)::numeric, 3),
                             'f5', round((random() * 4 - 2)::numeric, 3))
FROM generate_series(1, :people) g;
SELECT setval('cdp.profiles_profile_id_seq', :people);
INSERT INTO cdp.identities (type, value, profile_id)
SELECT 'email', 'p' || g || '@shop.test', g FROM generate_series(1, :people) g;
INSERT INTO cdp.consents (profile_id, purpose, granted, source)
SELECT g, 'email', true, 'bench' FROM generate_series(1, :people) g WHERE g % 10 <> 0;
INSERT INTO cdp.segment_members (segment_id, profile_id, entered_at)
SELECT s.segment_id, g, now() FROM cdp.segments s, generate_series(1, :people) g
WHERE s.name = 'everyone';

-- the offers: channel by number, capacity :capacity a day each
SELECT cdp.create_offer('o' || g,
                        jsonb_build_object(c, 'o' || g || '_' || c),
                        10 + (g * 37) % 90, 'Converted ' || g, '7 days',
                        condition => CASE WHEN g % 4 = 0 THEN 'f' || (1 + g % 5) || ' > -1' END,
                        capacity => jsonb_build_object(c, :capacity),
                        features => ARRAY['f' || (1 + g % 5), 'f' || (1 + (g + 1) % 5), 'f' || (1 + (g + 3) % 5)])
FROM generate_series(1, 20) g,
     LATERAL (SELECT CASE WHEN g <= 10 THEN 'email' WHEN g <= 15 THEN 'callcenter' ELSE 'printer' END AS c) ch;
INSERT INTO cdp.offer_models (offer, features, weights, means, intercept, n, n_train, n_test,
                              conversions, l2, seed, active)
SELECT o.name, o.features,
       ARRAY[round((random() * 2 - 1)::numeric, 3)::float8, round((random() * 2 - 1)::numeric, 3)::float8,
             round((random() * 2 - 1)::numeric, 3)::float8],
       '{0,0,0}', round((random() * 2 - 3)::numeric, 3)::float8, 10000, 8000, 2000, 800, 1, 1, true
FROM cdp.offers o ORDER BY o.name;

-- the plain side's outbox: what an application writes without pg_cdp
DROP TABLE IF EXISTS bench.plain_outbox;
CREATE TABLE bench.plain_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  bigint NOT NULL,
    offer       text NOT NULL,
    channel     text NOT NULL,
    template    text NOT NULL,
    score       double precision NOT NULL,
    dedupe_key  text NOT NULL UNIQUE,
    not_before  timestamptz NOT NULL
);
