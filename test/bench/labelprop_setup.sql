-- labelprop_setup.sql: the graph for the label-propagation baseline
-- (benchmark 2), from the same messages as the bulk benchmark. Not timed.
--
-- Nodes are the distinct (type, value) identifiers, numbered; each message
-- links its anonymousId to each of its other identifiers (an edge each way).
-- The labels start as each node's own number.
SET max_parallel_workers_per_gather = 0;
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.lp_nodes, bench.lp_edges, bench.lp_labels;

CREATE TABLE bench.lp_nodes AS
SELECT row_number() OVER (ORDER BY type, value) AS node, type, value
FROM (SELECT DISTINCT type, value
      FROM (SELECT 'anonymous_id' AS type, anonymous_id AS value FROM bench.messages
            UNION ALL
            SELECT 'user_id', user_id FROM bench.messages WHERE user_id IS NOT NULL
            UNION ALL
            SELECT 'email', email FROM bench.messages WHERE email IS NOT NULL
            UNION ALL
            SELECT 'loyalty_card', loyalty_card FROM bench.messages
            WHERE loyalty_card IS NOT NULL) i) d;
ALTER TABLE bench.lp_nodes ADD PRIMARY KEY (node);
CREATE UNIQUE INDEX lp_nodes_type_value ON bench.lp_nodes (type, value);

CREATE TABLE bench.lp_edges AS
WITH pairs AS (
    SELECT a.node AS x, o.node AS y
    FROM bench.messages m
    JOIN bench.lp_nodes a ON a.type = 'anonymous_id' AND a.value = m.anonymous_id
    CROSS JOIN LATERAL (VALUES ('user_id', m.user_id), ('email', m.email),
                               ('loyalty_card', m.loyalty_card)) AS v(t, val)
    JOIN bench.lp_nodes o ON o.type = v.t AND o.value = v.val
)
SELECT DISTINCT a, b
FROM (SELECT x AS a, y AS b FROM pairs UNION ALL SELECT y, x FROM pairs) e;

CREATE TABLE bench.lp_labels AS SELECT node, node AS label FROM bench.lp_nodes;
ALTER TABLE bench.lp_labels ADD PRIMARY KEY (node);

VACUUM ANALYZE bench.lp_nodes, bench.lp_edges, bench.lp_labels;

\pset footer off
SELECT (SELECT count(*) FROM bench.lp_nodes) AS nodes,
       (SELECT count(*) FROM bench.lp_edges) AS directed_edges
\gset lp_
\echo '   graph:' :lp_nodes 'identifiers (nodes),' :lp_directed_edges 'directed edges'
