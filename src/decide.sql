-- decide.sql: next best action: offers, their sends and outcomes, the
-- bandit and model of each offer, capacities, and arbitration of an
-- audience (decide.c, decide_train.c, decide_run.c).

-- An offer: the channels it may go through (channel -> template), who may
-- get it (segments, all of them, and a condition over cdp.customers run
-- with the owner's rights), what it is worth, when it is valid, how often
-- one person may get it, what counts as its conversion, how many may go
-- per day per channel (channel -> count; a channel absent is unlimited),
-- and the numeric cdp.customers columns its model reads.
CREATE TABLE cdp.offers (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    channels     jsonb NOT NULL,
    segments     text[] NOT NULL DEFAULT '{}',
    condition    text,
    value        numeric NOT NULL CHECK (value >= 0),
    valid_from   timestamptz,
    valid_until  timestamptz,
    cooldown     interval,
    lifetime_cap integer CHECK (lifetime_cap > 0),
    goal_event   text NOT NULL,
    goal_window  interval NOT NULL CHECK (goal_window > '0'),
    capacity     jsonb NOT NULL DEFAULT '{}',
    features     text[] NOT NULL DEFAULT '{}',
    owner        regrole NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT cdp.now(),
    CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from)
);
COMMENT ON TABLE cdp.offers IS
    'Offers: channels with a template each, eligibility (segments, a condition run as the owner), value, validity, cooldown, lifetime cap, goal event and window, capacity per day per channel, model features';

-- Every send of an offer to a person, and every control (held out, no
-- message): the outcomes that train the model and the bandit.  features
-- are the model's inputs as they were when it was decided.  outcome:
-- NULL while the goal window is open, then converted, expired (the
-- window closed without the goal) or failed (the message bounced).
CREATE TABLE cdp.offer_sends (
    send_id      bigint GENERATED ALWAYS AS IDENTITY,
    profile_id   bigint NOT NULL,
    offer        text NOT NULL,
    channel      text NOT NULL,
    outbox_id    bigint,
    control      boolean NOT NULL DEFAULT false,
    campaign     text,
    run          text,
    sent_at      timestamptz NOT NULL,
    score        double precision,
    features     double precision[],
    outcome      text CHECK (outcome IN ('converted', 'expired', 'failed')),
    converted_at timestamptz,
    value        numeric,
    PRIMARY KEY (profile_id, send_id)
);
-- what the worker settles, and a bounce's send; training and results read
-- the offer's or the campaign's sends whole, rarely, so no index serves them
CREATE INDEX offer_sends_open ON cdp.offer_sends (sent_at) WHERE outcome IS NULL;
CREATE INDEX offer_sends_outbox ON cdp.offer_sends (outbox_id) WHERE outbox_id IS NOT NULL;
-- one decision per person per run, so a re-run never doubles
CREATE UNIQUE INDEX offer_sends_run ON cdp.offer_sends (profile_id, run) WHERE run IS NOT NULL;
COMMENT ON TABLE cdp.offer_sends IS
    'Every send of an offer (and every held-out control): person, channel, outbox message, when, score, the features it was scored on, and its outcome (converted with the value, expired, failed)';

-- The Thompson-sampling bandit of an offer: Beta(alpha, beta), alpha one
-- plus its conversions, beta one plus its sends that did not convert.
CREATE TABLE cdp.offer_arms (
    offer       text PRIMARY KEY REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    alpha       double precision NOT NULL DEFAULT 1 CHECK (alpha > 0),
    beta        double precision NOT NULL DEFAULT 1 CHECK (beta > 0),
    updated_at  timestamptz
);
COMMENT ON TABLE cdp.offer_arms IS
    'The Beta-Bernoulli bandit of each offer: alpha = 1 + conversions, beta = 1 + sends that did not convert (window expired or message failed)';

-- The logistic model of an offer as cdp.train_offer left it; active when
-- the switch rule held (enough sends, conversions and AUC).
CREATE TABLE cdp.offer_models (
    offer       text PRIMARY KEY REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    features    text[] NOT NULL,
    weights     double precision[] NOT NULL,
    means       double precision[] NOT NULL,
    intercept   double precision NOT NULL,
    auc         double precision,
    n           integer NOT NULL,
    n_train     integer NOT NULL,
    n_test      integer NOT NULL,
    conversions integer NOT NULL,
    l2          double precision NOT NULL,
    seed        bigint NOT NULL,
    active      boolean NOT NULL,
    trained_at  timestamptz NOT NULL DEFAULT cdp.now()
);
COMMENT ON TABLE cdp.offer_models IS
    'The logistic model of each trained offer: weights per feature (raw scale), the means a missing feature is taken as, intercept, held-out AUC, sizes, and whether it scores the offer (the switch rule held)';

CREATE VIEW cdp.offer_weights AS
    SELECT m.offer, f.feature, f.weight, f.ord
    FROM cdp.offer_models m,
         unnest(m.features, m.weights) WITH ORDINALITY AS f(feature, weight, ord);
COMMENT ON VIEW cdp.offer_weights IS
    'One row per offer and model feature: its weight';

-- What each offer used of its capacity, per channel and business day
-- (cdp.timezone) of the send.  Runs lock these rows, so two at once never
-- exceed a capacity.
CREATE TABLE cdp.offer_capacity (
    offer   text NOT NULL REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    channel text NOT NULL,
    day     date NOT NULL,
    used    integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (offer, channel, day)
);
COMMENT ON TABLE cdp.offer_capacity IS
    'Sends of each offer per channel and business day, against the offer''s capacity';

-- The engagement of everybody, per channel and local hour: messages
-- delivered and engaged with (opened or clicked), what a person's own
-- rates are shrunk towards.  Refreshed by cdp.refresh_engagement().
CREATE TABLE cdp.engagement_population (
    channel   text NOT NULL,
    hour      smallint NOT NULL CHECK (hour BETWEEN -1 AND 23),
    delivered bigint NOT NULL,
    engaged   bigint NOT NULL,
    PRIMARY KEY (channel, hour)
);
COMMENT ON TABLE cdp.engagement_population IS
    'Population engagement per channel: messages delivered and engaged with (hour -1), and engagements by local hour (0-23)';

-- Arbitration runs: what went out, what was held out, what each capacity
-- cut (offer/channel -> people who would have had it).
CREATE TABLE cdp.offer_runs (
    run            text PRIMARY KEY,
    campaign       text NOT NULL,
    segment        text NOT NULL,
    offers         text[] NOT NULL,
    holdout        integer NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    audience       bigint NOT NULL DEFAULT 0,
    enqueued       bigint NOT NULL DEFAULT 0,
    held_out       bigint NOT NULL DEFAULT 0,
    no_offer       bigint NOT NULL DEFAULT 0,
    expected_value numeric NOT NULL DEFAULT 0,
    capacity_cuts  jsonb NOT NULL DEFAULT '{}',
    suppressed     jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE cdp.offer_runs IS
    'Every arbitration run: audience, enqueued, held out, left without an offer, expected value, what each capacity cut and why others were excluded';

-- Any change to offers makes every backend reload them.
CREATE FUNCTION cdp.offers_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_offers_changed';
CREATE TRIGGER offers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.offers
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.offers_changed();
CREATE TRIGGER offer_models_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.offer_models
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.offers_changed();

CREATE FUNCTION cdp.create_offer(name text, channels jsonb, value numeric, goal_event text,
                                 goal_window interval DEFAULT '7 days',
                                 segments text[] DEFAULT '{}', condition text DEFAULT NULL,
                                 valid_from timestamptz DEFAULT NULL,
                                 valid_until timestamptz DEFAULT NULL,
                                 cooldown interval DEFAULT NULL, lifetime_cap integer DEFAULT NULL,
                                 capacity jsonb DEFAULT '{}', features text[] DEFAULT '{}')
    RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_create_offer';
COMMENT ON FUNCTION cdp.create_offer(text, jsonb, numeric, text, interval, text[], text, timestamptz, timestamptz, interval, integer, jsonb, text[]) IS
    'Creates or replaces an offer after checking every part (channels and templates, segments, the condition, capacity, features); its condition runs with the caller''s rights';

CREATE FUNCTION cdp.drop_offer(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_drop_offer';
COMMENT ON FUNCTION cdp.drop_offer(text) IS
    'Drops an offer with its bandit, model and capacity counts; its sends stay as history';

CREATE FUNCTION cdp.next_best_actions(profile_id bigint, n integer DEFAULT 3)
    RETURNS TABLE (offer text, channel text, send_at timestamptz, score double precision,
                   explanation jsonb)
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_next_best_actions';
COMMENT ON FUNCTION cdp.next_best_actions(bigint, integer) IS
    'The best n offers for a person now, each with its channel, send time, score (propensity x value) and an explanation: model or arm, top features, and why every other offer was excluded';

CREATE FUNCTION cdp.offer_eligibility(profile_id bigint)
    RETURNS TABLE (offer text, eligible boolean, reason text, detail text, channel text,
                   send_at timestamptz, score double precision)
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_offer_eligibility';
COMMENT ON FUNCTION cdp.offer_eligibility(bigint) IS
    'Every offer for a person: eligible with its channel, send time and score, or the reason (ineligible, not_valid, cooldown, cap, capacity, no_consent, no_address, suppressed, contact_cap, invalid_template) and its detail';

CREATE FUNCTION cdp.send_offer(profile_id bigint, offer text, channel text DEFAULT NULL,
                               send_at timestamptz DEFAULT NULL, dedupe_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_send_offer';
COMMENT ON FUNCTION cdp.send_offer(bigint, text, text, timestamptz, text) IS
    'Sends an offer to a person now or at send_at (the best channel when none is given): checked like next_best_actions, counted against its capacity, enqueued, recorded as a send; returns the outbox id';

CREATE FUNCTION cdp.refresh_engagement() RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_refresh_engagement';
COMMENT ON FUNCTION cdp.refresh_engagement() IS
    'Recounts the population''s engagement per channel and local hour from the outbox and the delivery events (the worker does it hourly); returns the rows written';

CREATE FUNCTION cdp.train_offer(name text) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_train_offer';
COMMENT ON FUNCTION cdp.train_offer(text) IS
    'Trains the offer''s logistic model (L2, seeded split and reproducible) on its settled sends; stores and returns weights, intercept, held-out AUC, sizes, and whether the switch rule now lets the model score it';

CREATE FUNCTION cdp.bandit_draw(alpha double precision, beta double precision, seed bigint)
    RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_bandit_draw';
COMMENT ON FUNCTION cdp.bandit_draw(double precision, double precision, bigint) IS
    'A Beta(alpha, beta) draw from the seeded generator the bandit uses: the same seed gives the same draw';

CREATE FUNCTION cdp.two_proportion_test(x1 bigint, n1 bigint, x2 bigint, n2 bigint,
                                        OUT z double precision, OUT p_value double precision)
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_two_proportion_test';
COMMENT ON FUNCTION cdp.two_proportion_test(bigint, bigint, bigint, bigint) IS
    'Two-proportion z-test of x1/n1 against x2/n2 with the pooled proportion: z and the two-sided p-value';

CREATE FUNCTION cdp.arbitrate_offers(campaign text, segment text, offers text[],
                                     run_key text DEFAULT NULL, holdout integer DEFAULT 0)
    RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_arbitrate_offers';
COMMENT ON FUNCTION cdp.arbitrate_offers(text, text, text[], text, integer) IS
    'Scores every member of the segment against the offers, gives each at most one (greedy by score under the capacities), holds out a control share, enqueues at the chosen times with dedupe keys campaign/<campaign>/<run_key>/<profile_id>; returns the run''s counts';

-- The offers a campaign arbitrates when it runs (cdp.run_campaign): a
-- campaign with offers is run by decide_run.c instead of sending its own
-- message.
CREATE TABLE cdp.campaign_offers (
    campaign text NOT NULL REFERENCES cdp.campaigns (name) ON DELETE CASCADE ON UPDATE CASCADE,
    offer    text NOT NULL REFERENCES cdp.offers ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (campaign, offer)
);
COMMENT ON TABLE cdp.campaign_offers IS
    'The offers each campaign arbitrates when it runs';

CREATE FUNCTION cdp.set_campaign_offers(campaign text, offers text[]) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_set_campaign_offers';
COMMENT ON FUNCTION cdp.set_campaign_offers(text, text[]) IS
    'Sets the offers a campaign arbitrates (none: it sends its own message again); returns how many it has';

CREATE FUNCTION cdp.campaign_results(name text)
    RETURNS TABLE (arm text, people bigint, conversions bigint, conversion_rate double precision,
                   value numeric, uplift double precision, z double precision,
                   p_value double precision)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS $$
    WITH s AS (
        SELECT CASE WHEN s.control THEN 'control' ELSE s.offer END AS arm, s.control,
               s.outcome = 'converted' AS converted, coalesce(s.value, 0) AS value
        FROM cdp.offer_sends s WHERE s.campaign = $1
    ), a AS (
        SELECT arm, bool_or(control) AS control, count(*) AS people,
               count(*) FILTER (WHERE converted) AS conversions,
               sum(value) FILTER (WHERE converted) AS value
        FROM s GROUP BY arm
    ), c AS (
        SELECT people, conversions FROM a WHERE control
    ), t AS (
        SELECT 'treated'::text AS arm, false AS control, sum(people)::bigint AS people,
               sum(conversions)::bigint AS conversions, sum(value) AS value
        FROM a WHERE NOT control HAVING count(*) > 0
    )
    SELECT r.arm, r.people, r.conversions,
           r.conversions::double precision / nullif(r.people, 0),
           coalesce(r.value, 0),
           CASE WHEN NOT r.control AND c.people > 0
                THEN r.conversions::double precision / r.people
                     - c.conversions::double precision / c.people END,
           t.z, t.p_value
    FROM (SELECT * FROM a UNION ALL SELECT * FROM t) r
    LEFT JOIN c ON true
    LEFT JOIN LATERAL (SELECT * FROM cdp.two_proportion_test(r.conversions, r.people,
                                                             c.conversions, c.people)
                       WHERE NOT r.control AND c.people > 0) t ON true
    ORDER BY r.control, r.arm = 'treated', r.arm
$$;
COMMENT ON FUNCTION cdp.campaign_results(text) IS
    'Per offer, for all treated and for the control: people, conversions, rate, value, the uplift over the control and its two-sided p-value (two-proportion z-test)';

SELECT pg_catalog.pg_extension_config_dump('cdp.offers', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_sends', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_sends_send_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_arms', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_models', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_capacity', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.offer_runs', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaign_offers', '');

REVOKE ALL ON FUNCTION cdp.offers_changed(),
    cdp.create_offer(text, jsonb, numeric, text, interval, text[], text, timestamptz, timestamptz, interval, integer, jsonb, text[]),
    cdp.drop_offer(text), cdp.next_best_actions(bigint, integer), cdp.offer_eligibility(bigint),
    cdp.send_offer(bigint, text, text, timestamptz, text), cdp.refresh_engagement(),
    cdp.train_offer(text), cdp.bandit_draw(double precision, double precision, bigint),
    cdp.two_proportion_test(bigint, bigint, bigint, bigint),
    cdp.arbitrate_offers(text, text, text[], text, integer), cdp.campaign_results(text),
    cdp.set_campaign_offers(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    cdp.create_offer(text, jsonb, numeric, text, interval, text[], text, timestamptz, timestamptz, interval, integer, jsonb, text[]),
    cdp.drop_offer(text), cdp.send_offer(bigint, text, text, timestamptz, text),
    cdp.refresh_engagement(), cdp.train_offer(text),
    cdp.arbitrate_offers(text, text, text[], text, integer), cdp.set_campaign_offers(text, text[])
    TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.next_best_actions(bigint, integer), cdp.offer_eligibility(bigint),
    cdp.campaign_results(text),
    cdp.bandit_draw(double precision, double precision, bigint),
    cdp.two_proportion_test(bigint, bigint, bigint, bigint) TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.offers, cdp.offer_sends, cdp.offer_arms, cdp.offer_models, cdp.offer_weights,
    cdp.offer_capacity, cdp.engagement_population, cdp.offer_runs, cdp.campaign_offers
    TO cdp_analyst, cdp_admin;
