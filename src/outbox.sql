-- outbox.sql: channels, templates, the outbox and the functions that fill
-- and drain it (outbox.c, render.c).

-- A delivery channel.  address_type is the identifier type whose value is
-- the address (email, phone, device_id); webhook, task and print channels
-- address target instead.  purpose is the consent the channel needs (NULL
-- is made its name).  Caps count messages sent per recipient calendar day
-- and week in the recipient's time zone; rate_per_second is enforced by
-- cdp.claim across all claimers.
CREATE TABLE cdp.channels (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    kind              text NOT NULL
                      CHECK (kind IN ('email', 'sms', 'push', 'webhook', 'task', 'print')),
    address_type      text CHECK (address_type ~ '^[a-z][a-z0-9_]{0,62}$'),
    target            text,
    quiet_start       time,
    quiet_end         time,
    cap_per_day       integer CHECK (cap_per_day > 0),
    cap_per_week      integer CHECK (cap_per_week > 0),
    rate_per_second   numeric CHECK (rate_per_second > 0),
    max_attempts      integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    backoff_base      interval NOT NULL DEFAULT '30 seconds' CHECK (backoff_base > '0'),
    backoff_max       interval NOT NULL DEFAULT '1 hour' CHECK (backoff_max > '0'),
    max_payload_bytes integer NOT NULL DEFAULT 65536 CHECK (max_payload_bytes > 0),
    purpose           text NOT NULL,
    requires_consent  boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT cdp.now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CHECK (quiet_start <> quiet_end),
    CHECK (address_type IS NOT NULL OR kind IN ('webhook', 'task', 'print'))
);
COMMENT ON TABLE cdp.channels IS
    'Delivery channels: kind, the identifier type they address (or a target), quiet hours, caps per recipient day and week, rate limit, retry policy, payload limit, the consent purpose they need';

CREATE FUNCTION cdp.channels_defaults() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.purpose := coalesce(NEW.purpose, NEW.name);
    RETURN NEW;
END
$$;
CREATE TRIGGER channels_defaults BEFORE INSERT OR UPDATE ON cdp.channels
    FOR EACH ROW EXECUTE FUNCTION cdp.channels_defaults();

-- Message content.  Placeholders: {{traits.x}}, {{payload.a.b}},
-- {{profile_id}}, {{address}}, {{channel}}, {{outbox_id}}; a default after
-- a bar: {{traits.first_name | default: "there"}}.  Rendered at claim.
CREATE TABLE cdp.templates (
    name       text PRIMARY KEY CHECK (name <> '' AND length(name) <= 200),
    channel    text NOT NULL REFERENCES cdp.channels ON UPDATE CASCADE,
    subject    text,
    body       text NOT NULL,
    body_html  text,
    created_at timestamptz NOT NULL DEFAULT cdp.now()
);
COMMENT ON TABLE cdp.templates IS
    'Message templates of a channel: subject, plain body, HTML body, with {{traits.x}} and {{payload.x}} placeholders (defaults: {{traits.x | default: "y"}}) rendered at claim';

CREATE FUNCTION cdp.render(template text, traits jsonb, payload jsonb DEFAULT '{}',
                           html boolean DEFAULT false) RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cdp_render';
COMMENT ON FUNCTION cdp.render(text, jsonb, jsonb, boolean) IS
    'A template text rendered with traits and payload (HTML-escaping what it inserts when html); errors on a placeholder with no value and no default';

CREATE FUNCTION cdp.templates_check() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_templates_check';
CREATE TRIGGER templates_check BEFORE INSERT OR UPDATE ON cdp.templates
    FOR EACH ROW EXECUTE FUNCTION cdp.templates_check();

-- Every backend caches channels and templates: any change makes them all
-- reload.
CREATE FUNCTION cdp.outbox_config_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'cdp_outbox_config_changed';
CREATE TRIGGER channels_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.channels
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.outbox_config_changed();
CREATE TRIGGER templates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cdp.templates
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.outbox_config_changed();

-- The statuses.  A domain rather than a CHECK of the table: the executor
-- prepares a table's CHECK expressions at the start of every statement
-- that writes the table, a domain's once per backend, and enqueue is one
-- statement per message.
CREATE DOMAIN cdp.outbox_status AS text
    CHECK (VALUE IN ('pending', 'leased', 'retry', 'deferred', 'delivered', 'dead',
                     'cancelled', 'suppressed'));

-- The outbox.  A message moves pending -> leased -> delivered, or
-- leased -> retry -> leased ... -> dead; policy moves it to suppressed
-- (at enqueue), cancelled or deferred (at claim), always with a reason.
-- A claim updates only columns no index covers, and the table leaves room
-- on its pages (fillfactor), so leasing a message is a HOT update; the
-- partial indexes of unfinished messages do not read status (an index
-- over a changing column forbids HOT), they read finished_at, which is
-- set once, when the message leaves them.  Messages are enqueued, and so
-- claimed, in order: one claim leases every message of a page in one
-- transaction, before any old version can be pruned, so a page keeps
-- room for a second version of each of its rows (fillfactor 40); a
-- non-HOT claim would add entries to every index, and to the partial
-- ones entries that claims must step over until vacuum removes them,
-- which an old snapshot delays.
CREATE TABLE cdp.outbox (
    outbox_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id   bigint NOT NULL,
    channel      text NOT NULL,
    template     text NOT NULL,
    payload      jsonb NOT NULL,
    dedupe_key   text,
    not_before   timestamptz NOT NULL,
    status       cdp.outbox_status NOT NULL,
    reason       text,
    attempts     integer NOT NULL DEFAULT 0,
    lease_until  timestamptz,
    leased_by    text,
    address      text,
    last_error   text,
    errors       jsonb NOT NULL DEFAULT '[]',
    enqueued_at  timestamptz NOT NULL DEFAULT cdp.now(),
    sent_at      timestamptz,
    delivered_at timestamptz,
    finished_at  timestamptz,
    status_at    timestamptz NOT NULL DEFAULT cdp.now()
) WITH (fillfactor = 40);
-- what cdp.claim scans: the unfinished messages of a channel by due time,
-- and of a person on a channel in order
CREATE INDEX outbox_due ON cdp.outbox (channel, not_before, outbox_id) WHERE finished_at IS NULL;
CREATE INDEX outbox_open ON cdp.outbox (profile_id, channel, outbox_id) WHERE finished_at IS NULL;
-- a person's history: caps, merges, erasure
CREATE INDEX outbox_profile ON cdp.outbox (profile_id);
CREATE UNIQUE INDEX outbox_dedupe_key ON cdp.outbox (dedupe_key) WHERE dedupe_key IS NOT NULL;
COMMENT ON TABLE cdp.outbox IS
    'Messages to people: status (pending, leased, retry, deferred, delivered, dead, cancelled, suppressed) and the reason of every suppressed, deferred or cancelled one';

-- Token buckets of the rate-limited channels.
CREATE TABLE cdp.channel_buckets (
    channel     text PRIMARY KEY,
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL
);
COMMENT ON TABLE cdp.channel_buckets IS
    'Rate limit state of each rate-limited channel: the tokens left and when they were counted';

CREATE FUNCTION cdp.enqueue(profile_id bigint, channel text, template text, payload jsonb,
                            not_before timestamptz DEFAULT NULL, dedupe_key text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_enqueue';
COMMENT ON FUNCTION cdp.enqueue(bigint, text, text, jsonb, timestamptz, text) IS
    'Writes a message to the outbox in this transaction (policy checked: no consent or a suppressed address makes it suppressed, with the reason); a dedupe key seen before returns the first id';

CREATE FUNCTION cdp.claim(channel text, max integer, lease interval)
    RETURNS TABLE (outbox_id bigint, dedupe_key text, channel text, kind text, profile_id bigint,
                   address text, template text, subject text, body text, body_html text,
                   payload jsonb, attempt integer, lease_until timestamptz)
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_claim';
COMMENT ON FUNCTION cdp.claim(text, integer, interval) IS
    'Leases up to max due messages of the channel to this session, rendered now, in order per person, under the rate limit and the contact policy';

CREATE FUNCTION cdp.ack(ids bigint[]) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_ack';
COMMENT ON FUNCTION cdp.ack(bigint[]) IS
    'Marks messages this session leased as delivered; any id it does not hold refuses the whole call';

CREATE FUNCTION cdp.fail(id bigint, error text, retry_in interval DEFAULT NULL,
                         permanent boolean DEFAULT false) RETURNS text
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_fail';
COMMENT ON FUNCTION cdp.fail(bigint, text, interval, boolean) IS
    'A delivery this session leased failed: retry (after retry_in, else the channel''s backoff with jitter) or dead once permanent or out of attempts; returns the status';

CREATE FUNCTION cdp.replay(ids bigint[]) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_replay_ids';
COMMENT ON FUNCTION cdp.replay(bigint[]) IS
    'Sends dead letters again: pending now, attempts reset, their error history kept; returns how many';

CREATE FUNCTION cdp.replay(channel text, since timestamptz DEFAULT NULL) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_replay_channel';
COMMENT ON FUNCTION cdp.replay(text, timestamptz) IS
    'Sends the channel''s dead letters (dead since the time given, else all) again; returns how many';

CREATE VIEW cdp.stats_outbox AS
    SELECT 'outbox'::text AS section, c.name || '.due' AS metric,
           (SELECT count(*) FROM cdp.outbox o
            WHERE o.channel = c.name AND o.status IN ('pending', 'retry', 'deferred')
              AND o.not_before <= cdp.now())::numeric AS value,
           (SELECT min(o.not_before) FROM cdp.outbox o
            WHERE o.channel = c.name AND o.status IN ('pending', 'retry', 'deferred')
              AND o.not_before <= cdp.now()) AS at
    FROM cdp.channels c
    UNION ALL
    SELECT 'outbox', c.name || '.oldest_due_age_seconds',
           coalesce(round(extract(epoch FROM cdp.now() - min(o.not_before))::numeric, 3), 0),
           min(o.not_before)
    FROM cdp.channels c
    LEFT JOIN cdp.outbox o ON o.channel = c.name AND o.status IN ('pending', 'retry', 'deferred')
                          AND o.not_before <= cdp.now()
    GROUP BY c.name
    UNION ALL
    SELECT 'outbox', c.name || '.leased',
           (SELECT count(*) FROM cdp.outbox o
            WHERE o.channel = c.name AND o.status = 'leased'), NULL
    FROM cdp.channels c
    UNION ALL
    SELECT 'outbox', c.name || '.dead',
           (SELECT count(*) FROM cdp.outbox o WHERE o.channel = c.name AND o.status = 'dead'),
           (SELECT max(o.status_at) FROM cdp.outbox o WHERE o.channel = c.name AND o.status = 'dead')
    FROM cdp.channels c;
COMMENT ON VIEW cdp.stats_outbox IS
    'Per channel: messages due and the age of the oldest, messages leased, dead letters';

SELECT pg_catalog.pg_extension_config_dump('cdp.channels', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.templates', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.outbox_outbox_id_seq', '');

REVOKE ALL ON FUNCTION cdp.channels_defaults(), cdp.templates_check(), cdp.outbox_config_changed(),
    cdp.render(text, jsonb, jsonb, boolean),
    cdp.enqueue(bigint, text, text, jsonb, timestamptz, text),
    cdp.claim(text, integer, interval), cdp.ack(bigint[]),
    cdp.fail(bigint, text, interval, boolean), cdp.replay(bigint[]),
    cdp.replay(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.render(text, jsonb, jsonb, boolean) TO cdp_admin, cdp_analyst;
GRANT EXECUTE ON FUNCTION cdp.enqueue(bigint, text, text, jsonb, timestamptz, text),
    cdp.replay(bigint[]), cdp.replay(text, timestamptz) TO cdp_admin;
-- connectors drain and report, nothing else
GRANT EXECUTE ON FUNCTION cdp.claim(text, integer, interval), cdp.ack(bigint[]),
    cdp.fail(bigint, text, interval, boolean) TO cdp_connector, cdp_admin;
GRANT SELECT ON cdp.channels, cdp.templates, cdp.outbox, cdp.channel_buckets, cdp.stats_outbox
    TO cdp_analyst, cdp_admin;
GRANT INSERT, UPDATE, DELETE ON cdp.channels, cdp.templates TO cdp_admin;
GRANT UPDATE, DELETE ON cdp.outbox TO cdp_admin;
