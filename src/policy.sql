-- policy.sql: the contact policy: consents, suppressed addresses, quiet
-- hours and caps in the recipient's time zone, and delivery feedback
-- (policy.c).

-- The consent of a person for a purpose (a channel's purpose, by default
-- its name): the latest word, when and from where.  No row: no consent.
CREATE TABLE cdp.consents (
    profile_id bigint NOT NULL,
    purpose    text NOT NULL CHECK (purpose <> '' AND length(purpose) <= 200),
    granted    boolean NOT NULL,
    at         timestamptz NOT NULL DEFAULT cdp.now(),
    source     text,
    PRIMARY KEY (profile_id, purpose)
);
COMMENT ON TABLE cdp.consents IS
    'Consent per person and purpose: granted or withdrawn, when and from which source; a merged profile keeps the most restrictive word of its parts';

-- Addresses nothing may be sent to: hard bounces, complaints, or added by
-- hand.  Keyed by the normalized identifier, like cdp.identities.
CREATE TABLE cdp.suppressions (
    address_type text NOT NULL,
    address      text NOT NULL,
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT cdp.now(),
    source       text,
    PRIMARY KEY (address, address_type)
);
COMMENT ON TABLE cdp.suppressions IS
    'Blocked addresses (identifier type and normalized value): hard bounces, complaints, manual blocks, with the reason';

CREATE FUNCTION cdp.set_consent(identifiers jsonb, channel_or_purpose text, granted boolean,
                                source text DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_set_consent';
COMMENT ON FUNCTION cdp.set_consent(jsonb, text, boolean, text) IS
    'Records a person''s consent (granted or withdrawn) for a channel''s purpose or a purpose, creating the profile as cdp.identify does; returns the profile id';

CREATE FUNCTION cdp.recipient_zone(zone text) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_recipient_zone';
COMMENT ON FUNCTION cdp.recipient_zone(text) IS
    'The time zone given (a person''s timezone trait) when PostgreSQL knows it, else cdp.timezone';

-- When the quiet period that contains at ends, or NULL when at is not in
-- one.  A quiet period that ends before it starts spans midnight.  Local
-- times that do not exist (a spring-forward gap) land after the gap.
CREATE FUNCTION cdp.quiet_until(at timestamptz, zone text, quiet_start time, quiet_end time)
    RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN CASE
        WHEN quiet_start IS NULL OR quiet_end IS NULL THEN NULL
        WHEN quiet_start < quiet_end THEN
            CASE WHEN (at AT TIME ZONE zone)::time >= quiet_start
                  AND (at AT TIME ZONE zone)::time < quiet_end
                 THEN (date_trunc('day', at AT TIME ZONE zone) + quiet_end) AT TIME ZONE zone END
        WHEN (at AT TIME ZONE zone)::time >= quiet_start
            THEN (date_trunc('day', at AT TIME ZONE zone) + interval '1 day' + quiet_end) AT TIME ZONE zone
        WHEN (at AT TIME ZONE zone)::time < quiet_end
            THEN (date_trunc('day', at AT TIME ZONE zone) + quiet_end) AT TIME ZONE zone
    END;
COMMENT ON FUNCTION cdp.quiet_until(timestamptz, text, time, time) IS
    'The end of the quiet period (local quiet_start to quiet_end in the zone) that contains the time, or NULL';

-- Where the recipient's calendar day or week (from Monday) that contains
-- at begins and ends.
CREATE FUNCTION cdp.local_period_start(at timestamptz, zone text, unit text) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN date_trunc(unit, at AT TIME ZONE zone) AT TIME ZONE zone;
CREATE FUNCTION cdp.local_period_end(at timestamptz, zone text, unit text) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (date_trunc(unit, at AT TIME ZONE zone) + ('1 ' || unit)::interval) AT TIME ZONE zone;

CREATE FUNCTION cdp.report_delivery(outbox_id bigint, status text, detail jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_report_delivery';
COMMENT ON FUNCTION cdp.report_delivery(bigint, text, jsonb) IS
    'Records what became of a message (delivered, bounced, opened, clicked, complained, unsubscribed) as an event of its recipient; a hard bounce or a complaint suppresses the address, an unsubscribe withdraws consent';

CREATE FUNCTION cdp.report_deliveries(outbox_ids bigint[], status text, detail jsonb DEFAULT '{}')
    RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_report_deliveries';
COMMENT ON FUNCTION cdp.report_deliveries(bigint[], text, jsonb) IS
    'cdp.report_delivery of every message named, with the same status and detail, in one call; returns how many';

SELECT pg_catalog.pg_extension_config_dump('cdp.consents', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.suppressions', '');

REVOKE ALL ON FUNCTION cdp.set_consent(jsonb, text, boolean, text), cdp.recipient_zone(text),
    cdp.quiet_until(timestamptz, text, time, time),
    cdp.local_period_start(timestamptz, text, text), cdp.local_period_end(timestamptz, text, text),
    cdp.report_delivery(bigint, text, jsonb), cdp.report_deliveries(bigint[], text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.recipient_zone(text), cdp.quiet_until(timestamptz, text, time, time),
    cdp.local_period_start(timestamptz, text, text), cdp.local_period_end(timestamptz, text, text)
    TO cdp_admin, cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.set_consent(jsonb, text, boolean, text) TO cdp_admin;
GRANT EXECUTE ON FUNCTION cdp.report_delivery(bigint, text, jsonb),
    cdp.report_deliveries(bigint[], text, jsonb) TO cdp_connector, cdp_admin;
GRANT SELECT ON cdp.consents, cdp.suppressions TO cdp_analyst, cdp_admin;
GRANT INSERT, UPDATE, DELETE ON cdp.consents, cdp.suppressions TO cdp_admin;
