-- erase.sql: a merge undone, a person erased (erase.c).

CREATE FUNCTION cdp.unmerge(merge_id bigint) RETURNS bigint
    LANGUAGE c VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_unmerge';
COMMENT ON FUNCTION cdp.unmerge(bigint) IS
    'Splits a merge: restores the loser profile with its identities and events as they were at merge time; returns its id';

CREATE FUNCTION cdp.forget(identifiers jsonb) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_forget';
COMMENT ON FUNCTION cdp.forget(jsonb) IS
    'Erases the people the identifiers name: profile, identities, events, message ids, merges, matching inbox rows and rejects';

REVOKE ALL ON FUNCTION cdp.unmerge(bigint), cdp.forget(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.unmerge(bigint), cdp.forget(jsonb) TO cdp_admin;
