-- stitch.sql: cdp.stitch, the identity engine over a table of groups (stitch.c)

CREATE FUNCTION cdp.stitch(groups regclass, normalize_values boolean DEFAULT true,
                           OUT type text, OUT value text, OUT component bigint)
    RETURNS SETOF record
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cdp_stitch';
COMMENT ON FUNCTION cdp.stitch(regclass, boolean) IS
    'Resolves the identifier graph in groups (group_id, type, value) in memory with pg_cdp''s rules, writing nothing: each identifier with its component';

REVOKE ALL ON FUNCTION cdp.stitch(regclass, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.stitch(regclass, boolean) TO cdp_analyst, cdp_admin;
