-- journey_stats.sql: how journeys do, per step, per split arm and for the
-- holdout (journey_stats.c has the normal distribution function).

CREATE FUNCTION cdp.normal_cdf(x double precision) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_normal_cdf';
COMMENT ON FUNCTION cdp.normal_cdf(double precision) IS
    'The standard normal distribution function: P(Z <= x), from the C library''s erfc, exact to double precision in the tails too';

-- Two conversion rates compared: x conversions of n profiles against the
-- reference group's x0 of n0.
--   p = x / n, p0 = x0 / n0, difference = p - p0
--   95% confidence interval of the difference (normal approximation,
--   unpooled standard error):
--     difference -/+ 1.959963984540054 * sqrt(p (1 - p) / n + p0 (1 - p0) / n0)
--   two-sided p-value (two-proportion z-test, pooled standard error):
--     q = (x + x0) / (n + n0), z = difference / sqrt(q (1 - q) (1 / n + 1 / n0)),
--     p_value = 2 * normal_cdf(-|z|)
-- All NULL when a group is empty (or a count is impossible); the p-value is
-- NULL when q is 0 or 1, where the test has no variance to measure.
CREATE FUNCTION cdp.compare_proportions(x bigint, n bigint, x0 bigint, n0 bigint,
                                        OUT difference double precision,
                                        OUT ci_low double precision,
                                        OUT ci_high double precision,
                                        OUT p_value double precision)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT r.d, r.d - 1.959963984540054 * r.se, r.d + 1.959963984540054 * r.se,
           CASE WHEN r.sp > 0 THEN 2 * cdp.normal_cdf(-abs(r.d) / r.sp) END
    FROM (SELECT p - p0 AS d,
                 sqrt(p * (1 - p) / n + p0 * (1 - p0) / n0) AS se,
                 sqrt(q * (1 - q) * (1::float8 / n + 1::float8 / n0)) AS sp
          FROM (SELECT x::float8 / n AS p, x0::float8 / n0 AS p0,
                       (x + x0)::float8 / (n + n0) AS q
                WHERE n > 0 AND n0 > 0 AND x BETWEEN 0 AND n AND x0 BETWEEN 0 AND n0) c) r
    $$;
COMMENT ON FUNCTION cdp.compare_proportions(bigint, bigint, bigint, bigint) IS
    'x of n against x0 of n0: the difference of the rates, its 95% confidence interval (normal approximation, unpooled standard error) and the two-sided p-value of the two-proportion z-test (pooled standard error)';

-- Rows of kind 'step': one per journey and step name (over all versions,
-- in the order of the newest version that has the step). entered: the
-- states that reached the step; waiting: active there now; exited: ended
-- there (an exit criterion, an exit step, the end of a path, a merge);
-- converted: of those that reached it, the ones that reached the goal.
-- Held-out states walk the steps too (they are sent nothing), so they count.
-- Rows of kind 'arm': one per split step and arm, over the states not held
-- out; compared with the split's first arm. Rows of kind 'holdout', for
-- journeys with a holdout: the held-out profiles compared with the rest.
-- profiles and conversions count distinct profiles.
CREATE VIEW cdp.journey_stats AS
    WITH step_defs AS (
        SELECT DISTINCT ON (t.journey, t.step) t.journey, t.step, t.kind, t.ordinal, t.arms
        FROM cdp.journey_steps t
        ORDER BY t.journey, t.step, t.version DESC),
    reached AS (
        SELECT l.journey, l.to_step AS step, count(DISTINCT l.state_id) AS entered,
               count(DISTINCT l.state_id) FILTER (WHERE s.converted_at IS NOT NULL) AS converted
        FROM cdp.journey_log l JOIN cdp.journey_states s ON s.state_id = l.state_id
        WHERE l.to_step IS NOT NULL
        GROUP BY l.journey, l.to_step),
    standing AS (
        SELECT s.journey, s.step, count(*) FILTER (WHERE s.status = 'active') AS waiting,
               count(*) FILTER (WHERE s.status = 'ended') AS exited
        FROM cdp.journey_states s
        GROUP BY s.journey, s.step),
    arm_defs AS (
        SELECT d.journey, d.step, a.arm ->> 'name' AS arm, a.k AS position
        FROM step_defs d
        CROSS JOIN LATERAL jsonb_array_elements(d.arms) WITH ORDINALITY AS a(arm, k)
        WHERE d.kind = 'split'),
    arm_counts AS (
        SELECT s.journey, a.key AS step, a.value AS arm,
               count(DISTINCT s.profile_id) AS profiles,
               count(DISTINCT s.profile_id) FILTER (WHERE s.converted_at IS NOT NULL) AS conversions
        FROM cdp.journey_states s
        CROSS JOIN LATERAL jsonb_each_text(s.arms) AS a(key, value)
        WHERE NOT s.holdout
        GROUP BY s.journey, a.key, a.value),
    arms AS (
        SELECT x.*,
               first_value(x.arm) OVER w AS ref_arm,
               first_value(x.profiles) OVER w AS ref_profiles,
               first_value(x.conversions) OVER w AS ref_conversions
        FROM (SELECT coalesce(d.journey, c.journey) AS journey, coalesce(d.step, c.step) AS step,
                     coalesce(d.arm, c.arm) AS arm, d.position,
                     coalesce(c.profiles, 0) AS profiles, coalesce(c.conversions, 0) AS conversions
              FROM arm_defs d
              FULL JOIN arm_counts c ON c.journey = d.journey AND c.step = d.step AND c.arm = d.arm) x
        WINDOW w AS (PARTITION BY x.journey, x.step ORDER BY x.position NULLS LAST, x.arm
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
    held AS (
        SELECT j.journey, g.holdout,
               (SELECT count(DISTINCT s.profile_id) FROM cdp.journey_states s
                WHERE s.journey = j.journey AND s.holdout = g.holdout) AS profiles,
               (SELECT count(DISTINCT s.profile_id) FROM cdp.journey_states s
                WHERE s.journey = j.journey AND s.holdout = g.holdout
                  AND s.converted_at IS NOT NULL) AS conversions
        FROM (SELECT DISTINCT v.journey FROM cdp.journey_versions v WHERE v.holdout > 0) j
        CROSS JOIN (VALUES (false), (true)) AS g(holdout))
    SELECT d.journey, 'step'::text AS kind, d.step, NULL::text AS arm, d.ordinal::bigint AS position,
           coalesce(r.entered, 0) AS entered, coalesce(t.waiting, 0) AS waiting,
           coalesce(t.exited, 0) AS exited, coalesce(r.converted, 0) AS converted,
           NULL::bigint AS profiles, NULL::bigint AS conversions,
           r.converted::float8 / nullif(r.entered, 0) AS conversion_rate,
           NULL::text AS compared_with, NULL::float8 AS difference, NULL::float8 AS ci_low,
           NULL::float8 AS ci_high, NULL::float8 AS p_value
    FROM step_defs d
    LEFT JOIN reached r ON r.journey = d.journey AND r.step = d.step
    LEFT JOIN standing t ON t.journey = d.journey AND t.step = d.step
    UNION ALL
    SELECT a.journey, 'arm', a.step, a.arm,
           row_number() OVER (PARTITION BY a.journey, a.step ORDER BY a.position NULLS LAST, a.arm),
           NULL, NULL, NULL, NULL, a.profiles, a.conversions,
           a.conversions::float8 / nullif(a.profiles, 0),
           CASE WHEN a.arm <> a.ref_arm THEN a.ref_arm END,
           c.difference, c.ci_low, c.ci_high, c.p_value
    FROM arms a
    LEFT JOIN LATERAL cdp.compare_proportions(a.conversions, a.profiles, a.ref_conversions,
                                              a.ref_profiles) c ON a.arm <> a.ref_arm
    UNION ALL
    SELECT h.journey, 'holdout', NULL, CASE WHEN h.holdout THEN 'holdout' ELSE 'not held out' END,
           CASE WHEN h.holdout THEN 2 ELSE 1 END,
           NULL, NULL, NULL, NULL, h.profiles, h.conversions,
           h.conversions::float8 / nullif(h.profiles, 0),
           CASE WHEN h.holdout THEN 'not held out' END,
           c.difference, c.ci_low, c.ci_high, c.p_value
    FROM held h
    JOIN held r ON r.journey = h.journey AND NOT r.holdout
    LEFT JOIN LATERAL cdp.compare_proportions(h.conversions, h.profiles, r.conversions,
                                              r.profiles) c ON h.holdout;
COMMENT ON VIEW cdp.journey_stats IS
    'How journeys do: per step (kind step) the states that entered it, wait there, exited there and converted; per split arm (kind arm) and for the holdout (kind holdout) the profiles, conversions, conversion rate, and against the first arm or the profiles not held out the difference with its 95% confidence interval and the two-sided p-value';

REVOKE ALL ON FUNCTION cdp.normal_cdf(double precision),
    cdp.compare_proportions(bigint, bigint, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.normal_cdf(double precision),
    cdp.compare_proportions(bigint, bigint, bigint, bigint) TO cdp_admin, cdp_analyst;
GRANT SELECT ON cdp.journey_stats TO cdp_analyst, cdp_admin;
