-- registry.sql: the registry of per-profile tables (registry.c).

CREATE FUNCTION cdp.profile_tables(
    OUT name text, OUT relation text, OUT visit_order integer,
    OUT on_merge text, OUT on_unmerge text, OUT on_forget text,
    OUT recompute_after_merge boolean, OUT recompute_after_unmerge boolean)
    RETURNS SETOF record
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'cdp_profile_tables';
COMMENT ON FUNCTION cdp.profile_tables() IS
    'The tables that hold rows about a profile, in the order merges, unmerges and erasures visit them, and what each does with their rows';

REVOKE ALL ON FUNCTION cdp.profile_tables() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.profile_tables() TO cdp_admin, cdp_analyst;
