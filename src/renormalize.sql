-- renormalize.sql: stored identities brought to the current normalizers (renormalize.c)

CREATE FUNCTION cdp.renormalize_identities() RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_renormalize_identities';
COMMENT ON FUNCTION cdp.renormalize_identities() IS
    'Normalizes every stored identity again: renames values whose normal form changed and merges the profiles that now share one (cause ''renormalize'', limits permitting); returns counts';

REVOKE ALL ON FUNCTION cdp.renormalize_identities() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.renormalize_identities() TO cdp_admin;
