-- sources.sql: the senders of events (a web site, an app, a server), each
-- with its write key. The HTTP collector authenticates requests with them and
-- records the source of every message; message ids are deduplicated per source.

CREATE TABLE cdp.sources (
    name             text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    write_key_sha256 text NOT NULL UNIQUE CHECK (write_key_sha256 ~ '^[0-9a-f]{64}$'),
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT cdp.now(),
    description      text
);
COMMENT ON TABLE cdp.sources IS
    'Event sources and the SHA-256 of their write keys (the keys themselves are never stored)';

CREATE FUNCTION cdp.create_source(name text, write_key text DEFAULT NULL,
                                  description text DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
AS $$
DECLARE
    key text := coalesce(write_key,
                         replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
BEGIN
    IF length(key) NOT BETWEEN 16 AND 1024 OR strpos(key, ':') > 0 THEN  -- what every SDK can send
        RAISE EXCEPTION USING MESSAGE = CASE WHEN length(key) < 16 THEN 'write key is too short' WHEN length(key) > 1024 THEN 'write key is too long' ELSE 'write key contains a colon' END,
                  ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE WHEN length(key) < 16 THEN 'A write key has at least 16 characters.' WHEN length(key) > 1024 THEN 'A write key has at most 1024 characters.' ELSE 'SDKs send the write key as an HTTP Basic user name, which ends at a colon.' END,
                  HINT = 'Omit write_key to get a random one.';
    END IF;
    INSERT INTO cdp.sources (name, write_key_sha256, description)
    VALUES (create_source.name, encode(sha256(convert_to(key, 'UTF8')), 'hex'),
            create_source.description);
    RETURN key;
END
$$;
COMMENT ON FUNCTION cdp.create_source(text, text, text) IS
    'Registers a source and returns its write key (random unless given); only its SHA-256 is kept';

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
