-- pg_cdp.sql: the clock. Everything time-driven reads cdp.now(), so tests and
-- backfills can move time with SET cdp.fake_now.

CREATE FUNCTION cdp.now() RETURNS timestamptz
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_now_sql';
COMMENT ON FUNCTION cdp.now() IS
    'now(), unless cdp.fake_now is set: the clock of every pg_cdp default and time rule';
