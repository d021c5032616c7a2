-- drain.sql: test hooks of the worker's drain (drain.c): its two
-- transactions, each on its own, for the isolation specs. Superusers only.

CREATE FUNCTION cdp.debug_drain_resolve(slot integer DEFAULT 0) RETURNS integer
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'cdp_debug_drain_resolve';
COMMENT ON FUNCTION cdp.debug_drain_resolve(integer) IS
    'Test hook: resolves one inbox batch as the given drainer and keeps it for cdp.debug_drain_write(); call it in a transaction of its own';

CREATE FUNCTION cdp.debug_drain_write() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cdp_debug_drain_write';
COMMENT ON FUNCTION cdp.debug_drain_write() IS
    'Test hook: writes the batch cdp.debug_drain_resolve() resolved, in this transaction';

REVOKE ALL ON FUNCTION cdp.debug_drain_resolve(integer), cdp.debug_drain_write() FROM PUBLIC;
