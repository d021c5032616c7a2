-- labelprop.sql: the baseline of benchmark 2, identity stitching as dbt
-- projects do it: every pass gives each node the smallest label among its
-- neighbours (least(own, min(neighbours))), until a pass changes no row.
-- The passes are timed here, server side; the final pass (which changes
-- nothing and proves convergence) is counted.
CREATE TABLE IF NOT EXISTS bench.lp_result (passes int, updated bigint, seconds float8);
TRUNCATE bench.lp_result;

DO $$
DECLARE
    n      bigint;
    total  bigint := 0;
    passes int := 0;
    t0     timestamptz := clock_timestamp();
BEGIN
    LOOP
        UPDATE bench.lp_labels l
        SET label = m.label
        FROM (SELECT e.a AS node, min(x.label) AS label
              FROM bench.lp_edges e
              JOIN bench.lp_labels x ON x.node = e.b
              GROUP BY e.a) m
        WHERE l.node = m.node AND m.label < l.label;
        GET DIAGNOSTICS n = ROW_COUNT;
        passes := passes + 1;
        total := total + n;
        EXIT WHEN n = 0;
    END LOOP;
    INSERT INTO bench.lp_result
    VALUES (passes, total, extract(epoch FROM clock_timestamp() - t0));
END
$$;

-- Not timed: the canonical key of each identifier's component.
TRUNCATE bench.lp_components;
INSERT INTO bench.lp_components
SELECT n.type, n.value, min(n.type || ':' || n.value) OVER (PARTITION BY l.label)
FROM bench.lp_nodes n JOIN bench.lp_labels l USING (node);
VACUUM ANALYZE bench.lp_labels, bench.lp_components;
