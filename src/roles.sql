-- roles.sql: the four roles and what each may do. Roles are cluster-wide, so
-- they are created only when missing.

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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA cdp FROM PUBLIC;
GRANT USAGE ON SCHEMA cdp TO cdp_admin, cdp_ingest, cdp_connector, cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.now(), cdp.normalize_email(text), cdp.normalize_phone(text, text)
    TO PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.merge_traits(jsonb, jsonb, jsonb, jsonb),
    cdp.merge_trait_meta(jsonb, jsonb), cdp.worker_status() TO cdp_admin, cdp_analyst;

-- cdp_ingest writes events and nothing else: it cannot read profiles.
GRANT EXECUTE ON FUNCTION cdp.track(jsonb, text, jsonb, timestamptz, text, text),
    cdp.identify(jsonb, jsonb, timestamptz, text, text),
    cdp.ingest(jsonb), cdp.ingest_batch(jsonb, text) TO cdp_ingest, cdp_admin;
GRANT INSERT ON cdp.inbox TO cdp_ingest;
GRANT EXECUTE ON FUNCTION cdp.authenticate_source(text) TO cdp_ingest, cdp_admin;

-- cdp_analyst reads everything, changes nothing.
GRANT SELECT ON ALL TABLES IN SCHEMA cdp TO cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.resolve(jsonb), cdp.stitch(regclass, boolean)
    TO cdp_analyst, cdp_admin;

-- cdp_admin runs the platform.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA cdp TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.unmerge(bigint), cdp.forget(jsonb), cdp.tick(),
    cdp.renormalize_identities(),
    cdp.create_source(text, text, text),
    cdp.create_event_partitions(date, integer) TO cdp_admin;

-- cdp_connector drains the outbox (claim, ack, fail) once it exists; until
-- then it may only see the schema.
