-- Journey statistics: per step (a journey run on the simulated clock with
-- cdp.tick()), per split arm and for the holdout (states written directly,
-- so the counts are exact), and the statistics themselves against values
-- computed independently (Python's statistics.NormalDist, below). The
-- worker is off: cdp.tick() advances. cdp.timezone is Europe/Paris.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET cdp.fake_now = '2026-09-01 08:00:00+00';

-- The normal distribution function. Expected (NormalDist().cdf): 0.5,
-- 0.975, 0.15865525393145707, 0.9986501019683699, 0.6914624612740131; far
-- in the tail Phi(-8.5) = 9.4795e-18 (the asymptotic series
-- phi(x)/x (1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8) gives 9.47954e-18).
SELECT round(cdp.normal_cdf(0)::numeric, 12) AS at_0,
       round(cdp.normal_cdf(1.959963984540054)::numeric, 12) AS at_1_96,
       round(cdp.normal_cdf(-1)::numeric, 12) AS at_minus_1,
       round(cdp.normal_cdf(3)::numeric, 12) AS at_3,
       round(cdp.normal_cdf(0.5)::numeric, 12) AS at_half,
       round((cdp.normal_cdf(-8.5) * 1e18)::numeric, 4) AS at_minus_8_5_e18;
SELECT cdp.normal_cdf(NULL) AS null_in, cdp.normal_cdf('infinity') AS at_inf,
       cdp.normal_cdf('-infinity') AS at_minus_inf, cdp.normal_cdf('NaN') AS at_nan;

-- Two proportions. Expected, from p = x/n, p0 = x0/n0, d = p - p0,
-- d -/+ 1.959963984540054 sqrt(p(1-p)/n + p0(1-p0)/n0),
-- p = 2 (1 - Phi(|d| / sqrt(q(1-q)(1/n + 1/n0)))), q = (x+x0)/(n+n0):
--   45/180 against 30/200: d 0.1, CI [0.019685, 0.180315], p 0.014466
--   0/20 against 30/200: d -0.15, CI [-0.199487, -0.100513], p 0.062352
--   4/50 against 75/400: d -0.1075, CI [-0.191866, -0.023134], p 0.059595
SELECT x, n, x0, n0, round(c.difference::numeric, 6) AS difference,
       round(c.ci_low::numeric, 6) AS ci_low, round(c.ci_high::numeric, 6) AS ci_high,
       round(c.p_value::numeric, 6) AS p_value
FROM (VALUES (45, 180, 30, 200), (0, 20, 30, 200), (4, 50, 75, 400),
             (5, 10, 5, 10), (0, 10, 0, 10), (10, 10, 10, 10),
             (1, 0, 1, 10), (1, 10, 1, 0), (11, 10, 1, 10), (-1, 10, 1, 10),
             (NULL, 10, 1, 10)) AS t(x, n, x0, n0)
CROSS JOIN LATERAL cdp.compare_proportions(x, n, x0, n0) c;

-- Per step: four people enter the welcome journey.
INSERT INTO cdp.channels (name, kind, address_type) VALUES ('email', 'email', 'email');
INSERT INTO cdp.templates (name, channel, body) VALUES
    ('welcome', 'email', 'Welcome'), ('ten_off', 'email', 'Ten off');
SELECT cdp.create_journey('welcome', '{
  "entry": {"event": "Signed Up"}, "reentry": "never",
  "exit": [{"event": "Unsubscribed"}],
  "goal": {"event": "Order Completed", "within": "7 days"},
  "steps": [
    {"name": "welcome", "kind": "send", "channel": "email", "template": "welcome", "next": "bought?"},
    {"name": "bought?", "kind": "wait_for", "event": "Order Completed", "timeout": "3 days",
     "on_event": "done", "on_timeout": "nudge"},
    {"name": "nudge", "kind": "send", "channel": "email", "template": "ten_off"},
    {"name": "done", "kind": "exit"}]}');
SELECT cdp.start_journey('welcome');
-- ana buys on day 1; bo never does; cy unsubscribes on day 1; dee signs up
-- on day 2 and is still waiting; bo buys on day 4, after the nudge
SELECT count(cdp.track(jsonb_build_object('user_id', u), 'Signed Up')) AS signed_up
FROM unnest(ARRAY['ana', 'bo', 'cy']) u;
SET cdp.fake_now = '2026-09-02 08:00:00+00';
SELECT cdp.track('{"user_id": "ana"}', 'Order Completed') > 0 AS ana_bought;
SELECT cdp.track('{"user_id": "cy"}', 'Unsubscribed') > 0 AS cy_left;
SET cdp.fake_now = '2026-09-03 08:00:00+00';
SELECT cdp.track('{"user_id": "dee"}', 'Signed Up') > 0 AS dee_signed_up;
SET cdp.fake_now = '2026-09-04 08:01:00+00';
SELECT cdp.tick() ->> 'journeys' AS advanced;
SET cdp.fake_now = '2026-09-05 08:00:00+00';
SELECT cdp.track('{"user_id": "bo"}', 'Order Completed') > 0 AS bo_bought;
SELECT i.value AS who, s.step, s.status, s.why, s.converted_at IS NOT NULL AS converted
FROM cdp.journey_states s JOIN cdp.identities i ON i.profile_id = s.profile_id AND i.type = 'user_id'
ORDER BY 1;
-- expected: welcome 4 entered, 2 converted; bought? 4 entered, dee waiting,
-- cy exited, 2 converted; nudge bo entered, exited, converted; done ana
SELECT kind, step, position, entered, waiting, exited, converted, conversion_rate,
       profiles, compared_with, difference
FROM cdp.journey_stats WHERE journey = 'welcome' ORDER BY kind, position;

-- Per split arm and the holdout, over states written directly: arm A 30
-- conversions of 200 profiles, B 45 of 180, C 0 of 20; 50 held out with 4
-- conversions against the 400 others with 75 (the values above).
SELECT cdp.create_journey('ab', '{
  "entry": {"event": "Visited"}, "reentry": "never", "holdout": 10,
  "goal": {"event": "Order Completed", "within": "7 days"},
  "steps": [
    {"name": "pick", "kind": "split", "arms": [{"name": "A", "weight": 50, "next": "a"},
                                              {"name": "B", "weight": 30, "next": "b"},
                                              {"name": "C", "weight": 20, "next": "c"}]},
    {"name": "a", "kind": "send", "channel": "email", "template": "welcome"},
    {"name": "b", "kind": "send", "channel": "email", "template": "ten_off"},
    {"name": "c", "kind": "exit"}]}');
INSERT INTO cdp.journey_states (journey, version, profile_id, step, status, entered_at, holdout,
                                arms, converted_at, ended_at, why)
SELECT 'ab', 1, 1000000 + g.base + k, lower(g.arm), 'ended', cdp.now(), g.held,
       jsonb_build_object('pick', g.arm), CASE WHEN k <= g.conv THEN cdp.now() END, cdp.now(),
       'completed'
FROM (VALUES (0, 'A', false, 200, 30), (1000, 'B', false, 180, 45), (2000, 'C', false, 20, 0),
             (3000, 'A', true, 50, 4)) AS g(base, arm, held, n, conv)
CROSS JOIN LATERAL generate_series(1, g.n) AS k;
SELECT kind, step, arm, position, profiles, conversions, round(conversion_rate::numeric, 6) AS rate,
       compared_with, round(difference::numeric, 6) AS difference, round(ci_low::numeric, 6) AS ci_low,
       round(ci_high::numeric, 6) AS ci_high, round(p_value::numeric, 6) AS p_value
FROM cdp.journey_stats WHERE journey = 'ab' AND kind <> 'step' ORDER BY kind, position;
SELECT step, exited, waiting FROM cdp.journey_stats WHERE journey = 'ab' AND kind = 'step'
ORDER BY position;

-- An arm nobody took yet still shows, with nothing to compare.
SELECT cdp.create_journey('empty', '{
  "entry": {"event": "Visited"}, "reentry": "never", "holdout": 5,
  "steps": [
    {"name": "pick", "kind": "split", "arms": [{"name": "X", "weight": 50, "next": "end"},
                                              {"name": "Y", "weight": 50, "next": "end"}]},
    {"name": "end", "kind": "exit"}]}');
SELECT kind, step, arm, position, profiles, conversions, conversion_rate, compared_with,
       difference, p_value
FROM cdp.journey_stats WHERE journey = 'empty' ORDER BY kind, position;

-- Analysts read it.
CREATE ROLE regress_stats_analyst IN ROLE cdp_analyst;
SET ROLE regress_stats_analyst;
SELECT count(*) > 0 AS can_read FROM cdp.journey_stats;
RESET ROLE;
DROP ROLE regress_stats_analyst;

RESET cdp.fake_now;
