-- A stand-in for the outbox's connector API (cdp.claim, cdp.ack, cdp.fail,
-- cdp.report_delivery), used by the connector's TAP test only when the
-- extension it runs against has no cdp.claim: the same signatures and the
-- same rules (leases held by a session, an ack of an id not held refuses
-- the whole call), on a plain table.
CREATE TABLE cdp.standin_outbox (
    outbox_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  bigint NOT NULL,
    channel     text NOT NULL,
    template    text NOT NULL DEFAULT 'standin',
    dedupe_key  text UNIQUE,
    address     text,
    subject     text,
    body        text NOT NULL DEFAULT '',
    body_html   text,
    payload     jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'pending',
    attempts    int NOT NULL DEFAULT 0,
    not_before  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    leased_by   text,
    last_error  text
);
CREATE TABLE cdp.standin_reports (outbox_id bigint, status text, detail jsonb, at timestamptz DEFAULT now());

CREATE FUNCTION cdp.standin_session() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT pg_backend_pid() || '.' || extract(epoch FROM pg_postmaster_start_time()) $$;

CREATE FUNCTION cdp.standin_check(lease interval, max int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF lease IS NULL OR lease <= '0' THEN
        RAISE EXCEPTION 'lease must be positive' USING ERRCODE = '22023';
    END IF;
    IF max IS NULL OR max < 1 THEN
        RAISE EXCEPTION 'max must be at least 1' USING ERRCODE = '22023';
    END IF;
END $$;

-- SQL, not PL/pgSQL: the contract names an argument and a column "channel"
CREATE FUNCTION cdp.claim(channel text, max int, lease interval)
RETURNS TABLE (outbox_id bigint, dedupe_key text, channel text, kind text, profile_id bigint,
               address text, template text, subject text, body text, body_html text,
               payload jsonb, attempt int, lease_until timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, cdp, pg_temp AS $$
    SELECT cdp.standin_check($3, $2);
    UPDATE cdp.standin_outbox o
       SET status = 'leased', lease_until = now() + $3, leased_by = cdp.standin_session(),
           attempts = o.attempts + 1
     WHERE o.outbox_id IN (SELECT s.outbox_id FROM cdp.standin_outbox s
                            WHERE s.channel = $1
                              AND ((s.status IN ('pending', 'retry') AND s.not_before <= now())
                                   OR (s.status = 'leased' AND s.lease_until < now()))
                            ORDER BY s.outbox_id LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING o.outbox_id, o.dedupe_key, o.channel, 'standin'::text, o.profile_id, o.address,
              o.template, o.subject, o.body, o.body_html, o.payload, o.attempts, o.lease_until;
$$;

CREATE FUNCTION cdp.ack(ids bigint[]) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, cdp, pg_temp AS $$
DECLARE
    bad bigint;
    n int;
BEGIN
    SELECT i INTO bad FROM unnest(ids) i
     WHERE NOT EXISTS (SELECT FROM cdp.standin_outbox o WHERE o.outbox_id = i AND o.status = 'leased'
                         AND o.leased_by = cdp.standin_session());
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'outbox message % is not leased by this session', bad USING ERRCODE = '55000';
    END IF;
    UPDATE cdp.standin_outbox SET status = 'delivered', lease_until = NULL
     WHERE outbox_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION cdp.fail(id bigint, error text, retry_in interval DEFAULT NULL, permanent boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, cdp, pg_temp AS $$
DECLARE
    st text;
BEGIN
    UPDATE cdp.standin_outbox o
       SET status = CASE WHEN permanent OR o.attempts >= 50 THEN 'dead' ELSE 'retry' END,
           not_before = now() + coalesce(retry_in, '50 milliseconds'), last_error = error,
           lease_until = NULL
     WHERE o.outbox_id = fail.id AND o.status = 'leased' AND o.leased_by = cdp.standin_session()
    RETURNING o.status INTO st;
    IF st IS NULL THEN
        RAISE EXCEPTION 'outbox message % is not leased by this session', id USING ERRCODE = '55000';
    END IF;
    RETURN st;
END $$;

CREATE FUNCTION cdp.report_delivery(outbox_id bigint, status text, detail jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, cdp, pg_temp AS $$
    INSERT INTO cdp.standin_reports (outbox_id, status, detail) VALUES ($1, $2, $3)
$$;

-- enqueue: a NOTIFY at commit, as the outbox does
CREATE FUNCTION cdp.standin_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cdp_outbox', NEW.channel);
    RETURN NEW;
END $$;
CREATE TRIGGER standin_notify AFTER INSERT ON cdp.standin_outbox FOR EACH ROW
    EXECUTE FUNCTION cdp.standin_notify();

REVOKE ALL ON FUNCTION cdp.claim(text, int, interval), cdp.ack(bigint[]),
    cdp.fail(bigint, text, interval, boolean), cdp.report_delivery(bigint, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.claim(text, int, interval), cdp.ack(bigint[]),
    cdp.fail(bigint, text, interval, boolean), cdp.report_delivery(bigint, text, jsonb) TO cdp_connector;
