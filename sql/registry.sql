-- The registry of per-profile tables, and the privileges every part of the
-- install script grants: checked from the catalog, so a table or function
-- added later without its registration or its grants fails here.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;

SELECT * FROM cdp.profile_tables();

-- Every table of schema cdp with a profile_id column is registered, and
-- every registered table exists (partitions follow their parent).
SELECT c.oid::regclass AS unregistered
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'profile_id' AND NOT a.attisdropped
WHERE c.relnamespace = 'cdp'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.oid::regclass::text NOT IN (SELECT relation FROM cdp.profile_tables());
SELECT relation AS missing FROM cdp.profile_tables() WHERE to_regclass(relation) IS NULL;
-- (the check finds a table nobody registered)
CREATE TABLE cdp.regress_forgotten (profile_id bigint);
SELECT c.oid::regclass AS unregistered
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'profile_id' AND NOT a.attisdropped
WHERE c.relnamespace = 'cdp'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.oid::regclass::text NOT IN (SELECT relation FROM cdp.profile_tables());
DROP TABLE cdp.regress_forgotten;

-- No function of schema cdp is executable by PUBLIC unless it is meant to be.
SELECT p.oid::regprocedure AS executable_by_public
FROM pg_proc p
WHERE p.pronamespace = 'cdp'::regnamespace
  AND has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text COLLATE "C";

-- Every SECURITY DEFINER function pins its search_path, to pg_catalog first
-- and pg_temp last.
SELECT p.oid::regprocedure AS unpinned
FROM pg_proc p
WHERE p.pronamespace = 'cdp'::regnamespace AND p.prosecdef
  AND NOT coalesce('search_path=pg_catalog, cdp, pg_temp' = ANY (p.proconfig), false);

-- A role with no cdp role may call none of the rest.
CREATE ROLE regress_stranger;
SELECT p.oid::regprocedure AS stranger_may_execute
FROM pg_proc p
WHERE p.pronamespace = 'cdp'::regnamespace
  AND has_function_privilege('regress_stranger', p.oid, 'EXECUTE')
  AND p.oid::regprocedure::text NOT IN ('cdp.now()', 'cdp.normalize_email(text)', 'cdp.normalize_phone(text,text)');
DROP ROLE regress_stranger;
