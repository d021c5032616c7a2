-- sources.sql: the senders of events (a web site, an app, a server), each
-- with its write key. The HTTP collector authenticates requests with them and
-- records the source of every message; message ids are deduplicated per source.

CREATE TABLE cdp.sources (
    name             text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    write_key_sha256 text NOT NULL UNIQUE CHECK (write_key_sha256 ~ '^[0-9a-f]{64}$'),
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT cdp.now(),
    description      text,
    writer           regrole
);
COMMENT ON COLUMN cdp.sources.writer IS
    'The role whose members may write messages in this source''s name (the collector''s role, a loader''s); NULL: cdp_admin only';
COMMENT ON TABLE cdp.sources IS
    'Event sources and the SHA-256 of their write keys (the keys themselves are never stored)';

CREATE FUNCTION cdp.create_source(name text, write_key text DEFAULT NULL,
                                  description text DEFAULT NULL, writer regrole DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
DECLARE
    key text := coalesce(write_key,
                         replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
BEGIN
    IF create_source.name IS NULL THEN
        RAISE EXCEPTION 'source name must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the source, for example ''web'' or ''store_tills''.';
    END IF;
    -- what every SDK can send: HTTP Basic's user name ends at a colon
    IF length(key) < 16 THEN
        RAISE EXCEPTION 'write key is too short'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A write key has at least 16 characters.',
                  HINT = 'Omit write_key to get a random one.';
    ELSIF length(key) > 1024 THEN
        RAISE EXCEPTION 'write key is too long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A write key has at most 1024 characters.',
                  HINT = 'Omit write_key to get a random one.';
    ELSIF strpos(key, ':') > 0 THEN
        RAISE EXCEPTION 'write key contains a colon'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'SDKs send the write key as an HTTP Basic user name, which ends at a colon.',
                  HINT = 'Omit write_key to get a random one.';
    END IF;
    INSERT INTO cdp.sources (name, write_key_sha256, description, writer)
    VALUES (create_source.name, encode(sha256(convert_to(key, 'UTF8')), 'hex'),
            create_source.description, create_source.writer);
    RETURN key;
END
$$;
COMMENT ON FUNCTION cdp.create_source(text, text, text, regrole) IS
    'Registers a source and returns its write key (random unless given; only its SHA-256 is kept); writer is the role that may write in its name';

CREATE FUNCTION cdp.authenticate_source(write_key text, OUT source text, OUT enabled boolean)
    RETURNS record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
    SELECT s.name, s.enabled FROM cdp.sources s
    WHERE s.write_key_sha256 = encode(sha256(convert_to(write_key, 'UTF8')), 'hex')
$$;
COMMENT ON FUNCTION cdp.authenticate_source(text) IS
    'The source a write key belongs to, and whether it is enabled; no row when the key is unknown';

SELECT pg_catalog.pg_extension_config_dump('cdp.sources', '');

REVOKE ALL ON FUNCTION cdp.create_source(text, text, text, regrole),
    cdp.authenticate_source(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_source(text, text, text, regrole) TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.authenticate_source(text) TO cdp_ingest, cdp_admin;
GRANT SELECT ON cdp.sources TO cdp_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON cdp.sources TO cdp_admin;
