-- identity.sql: identifier types, identities, normalization, resolution.

CREATE TABLE cdp.identifier_types (
    type            text PRIMARY KEY CHECK (type ~ '^[a-z][a-z0-9_]{0,62}$'),
    max_per_profile integer NOT NULL DEFAULT 5 CHECK (max_per_profile > 0),
    priority        integer NOT NULL DEFAULT 100,
    normalizer      text NOT NULL DEFAULT 'trim'
                    CHECK (normalizer IN ('trim', 'lower', 'email', 'phone')),
    blocked_values  text[] NOT NULL
                    DEFAULT '{"[Nn][Uu][Ll][Ll]|[Nn][Ii][Ll]|[Nn][Oo][Nn][Ee]|[Uu][Nn][Dd][Ee][Ff][Ii][Nn][Ee][Dd]", "[Uu][Nn][Kk][Nn][Oo][Ww][Nn]|[Aa][Nn][Oo][Nn][Yy][Mm][Oo][Uu][Ss]|[Gg][Uu][Ee][Ss][Tt]", "[Nn]/[Aa]|-1|[0-]*"}',
    description     text
);
COMMENT ON TABLE cdp.identifier_types IS
    'Identifier types: per-profile limit, merge priority (lower wins), normalizer, blocked values (anchored regular expressions, matched case-sensitively against the normalized value)';

INSERT INTO cdp.identifier_types (type, max_per_profile, priority, normalizer, blocked_values, description) VALUES
    ('user_id', 1, 10, 'trim', DEFAULT,
     'The id the business gives a customer: at most one per profile'),
    ('email', 5, 20, 'email',
     '{"test@test\\.com", "test@example\\.com", "(no-?reply|noreply|donotreply|do-not-reply)@.*", "null@.*", "none@.*"}',
     'Email address: trimmed and case-folded'),
    ('phone', 5, 30, 'phone',
     '{"\\+1?1234567890?", "\\+([0-9])\\1{7,14}"}',
     'Phone number in E.164, with cdp.default_phone_region for national numbers'),
    ('loyalty_card', 3, 40, 'trim', DEFAULT, 'Loyalty card number'),
    ('device_id', 20, 50, 'trim', DEFAULT, 'App installation or device id'),
    ('anonymous_id', 100, 60, 'trim', DEFAULT, 'Segment anonymousId'),
    ('cookie', 100, 70, 'trim', DEFAULT, 'Web cookie id');

-- A bad pattern would fail every ingest later: refuse it now, with its reason.
CREATE FUNCTION cdp.identifier_types_check() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b text;
BEGIN
    FOREACH b IN ARRAY NEW.blocked_values LOOP
        BEGIN
            PERFORM '' ~ ('^(?:' || b || ')$');
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'invalid blocked value pattern % for identifier type %', quote_literal(b), NEW.type
                USING ERRCODE = 'invalid_regular_expression',
                      DETAIL = 'Blocked values are regular expressions, anchored at both ends.',
                      HINT = 'Escape regular expression characters, for example test@test\.com.';
        END;
    END LOOP;
    RETURN NEW;
END
$$;
CREATE TRIGGER identifier_types_check
    BEFORE INSERT OR UPDATE OF blocked_values ON cdp.identifier_types
    FOR EACH ROW EXECUTE FUNCTION cdp.identifier_types_check();

CREATE FUNCTION cdp.identifier_types_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_identifier_types_changed';
CREATE TRIGGER identifier_types_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.identifier_types
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.identifier_types_changed();

-- A (type, value) belongs to at most one profile. Keyed by the identifier
-- itself, so on Citus it is distributed by value, apart from profile rows.
-- The key puts value first: a descent then decides on the value alone and
-- compares the type (a handful of values) only on a tie, which makes the
-- drain's millions of look-ups and inserts cheaper.
CREATE TABLE cdp.identities (
    type          text NOT NULL,
    value         text NOT NULL,
    profile_id    bigint NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT cdp.now(),
    PRIMARY KEY (value, type)
);
CREATE INDEX identities_profile_id ON cdp.identities (profile_id);
COMMENT ON TABLE cdp.identities IS
    'Normalized identifiers and the profile each belongs to';

-- Identifiers that were dropped: invalid, blocked, or over a limit.
CREATE TABLE cdp.identifier_issues (
    issue_id    bigint GENERATED ALWAYS AS IDENTITY,
    profile_id  bigint,
    event_id    text,
    type        text NOT NULL,
    value       text NOT NULL,
    reason      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT cdp.now(),
    PRIMARY KEY (issue_id)
);
CREATE INDEX identifier_issues_profile_id ON cdp.identifier_issues (profile_id);
COMMENT ON TABLE cdp.identifier_issues IS
    'Identifiers a message carried that were not attached: invalid, blocked, or over a limit, with the reason';

CREATE FUNCTION cdp.normalize_email(email text) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_normalize_email';
COMMENT ON FUNCTION cdp.normalize_email(text) IS
    'The email as pg_cdp stores it (trimmed, case-folded, provider rules if cdp.email_provider_rules), or NULL when it is not an email';

CREATE FUNCTION cdp.normalize_phone(phone text, region text DEFAULT NULL) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_normalize_phone';
COMMENT ON FUNCTION cdp.normalize_phone(text, text) IS
    'The phone number in E.164 (region defaults to cdp.default_phone_region), or NULL when it is not a phone number';

CREATE FUNCTION cdp.resolve(identifiers jsonb) RETURNS bigint
    LANGUAGE c STABLE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_resolve';
COMMENT ON FUNCTION cdp.resolve(jsonb) IS
    'The profile of the strongest known identifier, or NULL; creates nothing';

-- Backups: pg_dump skips the data of extension tables unless told. The
-- shipped identifier types are recreated by CREATE EXTENSION, so only the
-- types users added are dumped (changes to shipped rows must be re-applied).
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_types',
    'WHERE type NOT IN (''user_id'', ''email'', ''phone'', ''loyalty_card'', ''device_id'', ''anonymous_id'', ''cookie'')');
SELECT pg_catalog.pg_extension_config_dump('cdp.identities', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_issues', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_issues_issue_id_seq', '');

REVOKE ALL ON FUNCTION cdp.identifier_types_check(), cdp.identifier_types_changed(),
    cdp.normalize_email(text), cdp.normalize_phone(text, text), cdp.resolve(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.normalize_email(text), cdp.normalize_phone(text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.resolve(jsonb) TO cdp_analyst, cdp_admin;
GRANT SELECT ON cdp.identifier_types, cdp.identities, cdp.identifier_issues TO cdp_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON cdp.identifier_types, cdp.identities, cdp.identifier_issues TO cdp_admin;
