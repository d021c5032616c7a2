-- Least privilege: each role can do its job and nothing more.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SELECT rolname FROM pg_roles WHERE rolname LIKE 'cdp\_%' ORDER BY 1;

CREATE ROLE regress_ingest LOGIN IN ROLE cdp_ingest;
CREATE ROLE regress_analyst LOGIN IN ROLE cdp_analyst;
CREATE ROLE regress_connector LOGIN IN ROLE cdp_connector;
CREATE ROLE regress_nobody LOGIN;
CREATE ROLE regress_admin LOGIN IN ROLE cdp_admin;

SET ROLE regress_ingest;
SELECT cdp.track('{"email": "role@shop.test"}', 'Ingested') > 0 AS can_track;
SELECT cdp.ingest('{"type": "track", "userId": "r-1", "event": "x"}') > 0 AS can_ingest;
INSERT INTO cdp.inbox (message) VALUES ('{"type": "track", "userId": "r-2", "event": "y"}');
SELECT count(*) FROM cdp.profiles;          -- cannot read profiles
SELECT count(*) FROM cdp.inbox;             -- nor the inbox back
SELECT cdp.resolve('{"user_id": "r-1"}');   -- nor look people up
SELECT cdp.forget('{"user_id": "r-1"}');
DELETE FROM cdp.events;
SET cdp.fake_now = '2001-01-01 00:00+00';  -- may not move the clock
SELECT cdp.now() > '2020-01-01' AS clock_untouched;
RESET ROLE;

-- cdp_admin may move the clock (backfills); a superuser may too
SET ROLE regress_admin;
SET cdp.fake_now = '2026-12-24 18:00+01';
SELECT cdp.now() = '2026-12-24 18:00+01' AS admin_moved_clock;
RESET cdp.fake_now;
RESET ROLE;

-- month partitions made later carry the parent's grants
SELECT cdp.create_event_partitions('2031-03-01', 1);
SELECT cdp.track('{"email": "role@shop.test"}', 'In March', '{}', '2031-03-05 10:00+00') > 0 AS tracked;

SET ROLE regress_analyst;
SELECT count(*) > 0 AS can_read FROM cdp.profiles;
SELECT count(*) AS march_events FROM cdp.events_2031_03;
UPDATE cdp.events_2031_03 SET event = 'x';
SELECT cdp.resolve('{"user_id": "r-1"}') > 0 AS can_resolve;
SELECT cdp.track('{"email": "x@shop.test"}', 'x');
UPDATE cdp.profiles SET traits = '{}';
SELECT cdp.tick();
RESET ROLE;

SET ROLE regress_connector;
SELECT count(*) FROM cdp.events;
SELECT cdp.track('{"email": "x@shop.test"}', 'x');
-- it drains the outbox and reports, and reads nothing
SELECT count(*) FROM cdp.claim('nowhere', 10, '1 minute');
SELECT cdp.ack('{}') AS acked;
SELECT cdp.report_delivery(1, 'delivered');
SELECT count(*) FROM cdp.outbox;
SELECT count(*) FROM cdp.consents;
SELECT cdp.enqueue(1, 'email', 'x', '{}');
SELECT cdp.replay('{1}'::bigint[]);
RESET ROLE;
SELECT p.oid::regprocedure AS connector_may_execute
FROM pg_proc p
WHERE p.pronamespace = 'cdp'::regnamespace
  AND has_function_privilege('cdp_connector', p.oid, 'EXECUTE')
  AND p.oid::regprocedure::text NOT IN ('cdp.now()', 'cdp.normalize_email(text)', 'cdp.normalize_phone(text,text)')
ORDER BY p.oid::regprocedure::text COLLATE "C";

SET ROLE regress_nobody;
SELECT cdp.track('{"email": "x@shop.test"}', 'x');
SELECT count(*) FROM cdp.profiles;
RESET ROLE;

SET ROLE regress_analyst;
SELECT cdp.renormalize_identities();  -- only cdp_admin renormalizes
RESET ROLE;

-- security definer functions pin their search_path
SELECT proname, proconfig FROM pg_proc
WHERE pronamespace = 'cdp'::regnamespace AND prosecdef ORDER BY 1;

DROP ROLE regress_ingest, regress_analyst, regress_connector, regress_nobody, regress_admin;
