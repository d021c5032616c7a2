-- compare.sql: are pg_cdp's profiles the components label propagation
-- found? One line: identifiers only in pg_cdp's keying, only in label
-- propagation's, and the number of components on each side.
SELECT (SELECT count(*) FROM (SELECT * FROM bench.cdp_components
                              EXCEPT SELECT * FROM bench.lp_components) a) AS only_cdp,
       (SELECT count(*) FROM (SELECT * FROM bench.lp_components
                              EXCEPT SELECT * FROM bench.cdp_components) b) AS only_lp,
       (SELECT count(DISTINCT profile_id) FROM cdp.identities) AS cdp_components,
       (SELECT count(DISTINCT ckey) FROM bench.lp_components) AS lp_components;
