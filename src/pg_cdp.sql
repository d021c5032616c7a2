-- pg_cdp.sql: the roles, and the clock. Everything time-driven reads
-- cdp.now(), so tests and backfills can move time with SET cdp.fake_now.
--
-- Each part of the install script grants, at its end, what each role needs
-- of the objects it creates: a function is executable by PUBLIC only when
-- its part says so (a regression test checks pg_proc).

-- The four roles are cluster-wide: created only when missing.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['cdp_admin', 'cdp_ingest', 'cdp_connector', 'cdp_analyst'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA cdp TO cdp_admin, cdp_ingest, cdp_connector, cdp_analyst;

CREATE FUNCTION cdp.now() RETURNS timestamptz
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_now_sql';
COMMENT ON FUNCTION cdp.now() IS
    'now(), unless cdp.fake_now is set: the clock of every pg_cdp default and time rule';

REVOKE ALL ON FUNCTION cdp.now() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.now() TO PUBLIC;
-- Moving the clock backdates what is recorded: superusers and cdp_admin only.
GRANT SET ON PARAMETER cdp.fake_now TO cdp_admin;
