-- Limits: one rule for every text field of a message (a byte limit, no
-- control characters, blank is empty) on every path, and a cap on the
-- identifiers one message carries.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';

CREATE FUNCTION pg_temp.try(q text, OUT code text, OUT message text, OUT detail text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE q;
    code := '00000';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL;
END
$f$;

-- The single calls raise the violation, naming the field.
\x on
SELECT t.q AS statement, r.* FROM (VALUES
    -- channel: at most 64 bytes (a 1 MB one was taken)
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL, repeat('c', 1024 * 1024))$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL, repeat('c', 65))$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL, repeat('c', 64))$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL, E'web\x1b[31m')$$),
    ($$SELECT cdp.identify('{"cookie": "c"}', '{}', NULL, repeat('c', 65))$$),
    -- event names: at most 200 bytes, no control characters
    ($$SELECT cdp.track('{"cookie": "c"}', E'\x1b[31mRed Alert\x1b[0m')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', E'Order\nCompleted')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', E'Order\tCompleted')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', E'Order\x7f')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', E'Order \u009b31m')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', '   ')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', repeat('é', 100) || 'x')$$),
    ($$SELECT cdp.track('{"cookie": "c"}', repeat('é', 100))$$),
    -- event_id: at most 512 bytes, no control characters
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL, NULL, repeat('i', 513))$$),
    ($$SELECT cdp.track('{"cookie": "c"}', 'x', '{}', NULL, NULL, E'id-\x1b')$$),
    ($$SELECT cdp.identify('{"cookie": "c"}', '{}', NULL, NULL, E'id\r\n')$$),
    -- the same rule for Segment-spec messages, naming the message field
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'track', 'userId', 'u', 'event', 'x', 'channel', repeat('c', 1024 * 1024)))$$),
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'track', 'userId', 'u', 'event', 'x', 'context', jsonb_build_object('channel', repeat('c', 65))))$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u", "event": "\u001b[31mRed"}')$$),
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'track', 'userId', 'u', 'event', repeat('e', 201)))$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u", "event": " \u3000 "}')$$),
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'track', 'userId', 'u', 'event', 'x', 'messageId', repeat('m', 513)))$$),
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u", "event": "x", "messageId": "m\n1"}')$$),
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'group', 'userId', 'u', 'groupId', repeat('g', 513)))$$),
    ($$SELECT cdp.ingest('{"type": "group", "userId": "u", "groupId": "\u001b]0;owned\u0007"}')$$),
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'page', 'userId', 'u', 'name', repeat('p', 201)))$$),
    ($$SELECT cdp.ingest('{"type": "page", "userId": "u", "name": "Home", "category": "\u009b2J"}')$$),
    ($$SELECT cdp.ingest('{"type": "screen", "userId": "u", "name": "Cart\u007f"}')$$),
    -- a value quoted in an error is cut and its control characters escaped
    ($$SELECT cdp.ingest(jsonb_build_object('type', E'\x1b[2J' || repeat('t', 100), 'userId', 'u'))$$),
    ($$SELECT cdp.track(jsonb_build_object(E'crm\x1b[0m', 'x'), 'x')$$),
    ($$SELECT cdp.ingest_batch('[]', E'web\x1b[0m')$$),
    -- identifier values refuse C1 controls too, as they refuse C0
    ($$SELECT cdp.ingest('{"type": "track", "userId": "u\u0085", "event": "x"}')$$),
    ($$SELECT cdp.track('{"cookie": "c\u009b"}', 'x')$$)
) AS t(q), LATERAL pg_temp.try(t.q) AS r;
\x off

-- unicode names are taken, kept exactly; blank optional fields are absent
SELECT cdp.track('{"cookie": "uni"}', '注文完了 ✓ 🛒', '{}', NULL, 'boutique-é', 'uni-1') > 0 AS unicode_track;
SELECT cdp.ingest('{"type": "track", "userId": "u-uni", "event": " Commande passée ", "channel": "  ", "context": {"channel": "app"}, "messageId": "uni-2"}') > 0 AS unicode_ingest;
SELECT cdp.ingest('{"type": "page", "userId": "u-uni", "name": "Accueil", "category": " ", "messageId": "uni-3"}') > 0 AS blank_category;
SELECT cdp.track('{"cookie": "uni"}', 'Blank Channel', '{}', NULL, ' ', 'uni-4') > 0 AS blank_channel;
SELECT event_id, event, channel, properties FROM cdp.events WHERE event_id LIKE 'uni-%' ORDER BY event_id;
SELECT channel, length(event) AS event_chars, octet_length(event) AS event_bytes
FROM cdp.events WHERE event LIKE 'é%';

-- The bulk paths keep each violating message as a reject with the same
-- reason, and take the rest.
SELECT cdp.ingest_batch(jsonb_build_array(
    jsonb_build_object('type', 'track', 'userId', 'u-b', 'event', 'x', 'channel', repeat('c', 1024 * 1024), 'messageId', 'b-1'),
    '{"type": "track", "userId": "u-b", "event": "\u001b[31mRed", "messageId": "b-2"}'::jsonb,
    jsonb_build_object('type', 'track', 'userId', 'u-b', 'event', repeat('e', 201), 'messageId', 'b-3'),
    jsonb_build_object('type', 'track', 'userId', 'u-b', 'event', 'x', 'messageId', repeat('m', 513)),
    '{"type": "group", "userId": "u-b", "groupId": "g\tx", "messageId": "b-5"}'::jsonb,
    '{"type": "track", "userId": "u-b", "event": "Zahlung erhalten ✓", "channel": "web", "messageId": "b-6"}'::jsonb
)) AS batch;
SELECT sqlstate, reason, detail FROM cdp.inbox_rejects WHERE source = 'ingest_batch' ORDER BY reject_id;
SELECT event_id, event, channel FROM cdp.events WHERE event_id LIKE 'b-%';

INSERT INTO cdp.inbox (message) VALUES
    ('{"type": "track", "userId": "u-i", "event": "x", "channel": "' || repeat('c', 1024 * 1024) || '", "messageId": "i-1"}'),
    ('{"type": "track", "userId": "u-i", "event": "\u001b[31mRed\u001b[0m", "messageId": "i-2"}'),
    ('{"type": "track", "userId": "u-i", "event": "' || repeat('e', 201) || '", "messageId": "i-3"}'),
    ('{"type": "screen", "userId": "u-i", "name": "Cart\r\n", "messageId": "i-4"}'),
    ('{"type": "track", "userId": "u-i", "event": "x", "messageId": "i-5\u0000"}'),
    ('{"type": "track", "userId": "u-i", "event": "Pedido concluído", "channel": "store", "messageId": "i-6"}');
SELECT cdp.tick()->'inbox' AS drained;
SELECT sqlstate, reason, detail FROM cdp.inbox_rejects WHERE inbox_id IS NOT NULL ORDER BY inbox_id;
SELECT event_id, event, channel FROM cdp.events WHERE event_id LIKE 'i-%';

-- cdp.max_identifiers_per_message (100) caps the identifiers of a message,
-- counted as they are given, before any type is created for it.
SET cdp.auto_create_identifier_types = on;
SELECT count(*) AS types_before FROM cdp.identifier_types;
\x on
SELECT t.q AS statement, r.* FROM (VALUES
    ($$SELECT cdp.track((SELECT jsonb_object_agg('k' || i, 'v' || i) FROM generate_series(1, 101) i), 'Many')$$),
    ($$SELECT cdp.track(jsonb_build_object('cookie', (SELECT jsonb_agg('c-' || i) FROM generate_series(1, 101) i)), 'Many')$$),
    ($$SELECT cdp.identify((SELECT jsonb_object_agg('k' || i, 'v' || i) FROM generate_series(1, 101) i), '{}')$$),
    ($$SELECT cdp.ingest(jsonb_build_object('type', 'track', 'userId', 'u-many', 'event', 'Many',
                                            'identifiers', (SELECT jsonb_object_agg('k' || i, 'v' || i) FROM generate_series(1, 100) i)))$$),
    ($$SELECT cdp.track(jsonb_build_object('cookie', (SELECT jsonb_agg('c-' || i) FROM generate_series(1, 100) i)), 'Hundred')$$)
) AS t(q), LATERAL pg_temp.try(t.q) AS r;
\x off
SELECT count(*) AS types_after_refusals FROM cdp.identifier_types;
SELECT cdp.ingest_batch(jsonb_build_array(
    jsonb_build_object('type', 'track', 'userId', 'u-many', 'event', 'Many', 'messageId', 'cap-1',
                       'context', jsonb_build_object('externalIds',
                           (SELECT jsonb_agg(jsonb_build_object('type', 'x' || i, 'id', 'v' || i)) FROM generate_series(1, 100) i))),
    '{"type": "track", "userId": "u-few", "event": "Few", "messageId": "cap-2"}'::jsonb
)) AS batch;
INSERT INTO cdp.inbox (message)
SELECT jsonb_build_object('type', 'identify', 'userId', 'u-many', 'messageId', 'cap-3',
                          'identifiers', (SELECT jsonb_object_agg('k' || i, 'v' || i) FROM generate_series(1, 101) i))::text;
SELECT cdp.tick()->'inbox' AS drained;
SELECT inbox_id IS NOT NULL AS inbox, sqlstate, reason, detail FROM cdp.inbox_rejects
WHERE sqlstate = '54000' ORDER BY reject_id;
SELECT count(*) AS types_after_rejects FROM cdp.identifier_types;
SELECT event_id FROM cdp.events WHERE event_id LIKE 'cap-%';
-- only a superuser raises the cap; raised, the message goes through and
-- its 101 new types are created
SET ROLE cdp_ingest;
SET cdp.max_identifiers_per_message = 1000;
RESET ROLE;
SET cdp.max_identifiers_per_message = 200;
-- one statement creates them all, however many there are
CREATE TABLE public.type_inserts (n int);
INSERT INTO public.type_inserts VALUES (0);
CREATE FUNCTION public.count_type_inserts() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN UPDATE public.type_inserts SET n = n + 1; RETURN NULL; END$$;
CREATE TRIGGER count_type_inserts AFTER INSERT ON cdp.identifier_types
    FOR EACH STATEMENT EXECUTE FUNCTION public.count_type_inserts();
SELECT cdp.track((SELECT jsonb_object_agg('k' || i, 'v' || i) FROM generate_series(1, 101) i), 'Many') > 0 AS taken;
SELECT cdp.track((SELECT jsonb_object_agg('p' || i, 'v' || i) FROM generate_series(1, 150) i), 'More') > 0 AS taken;
SELECT n AS insert_statements FROM public.type_inserts;
DROP TRIGGER count_type_inserts ON cdp.identifier_types;
DROP FUNCTION public.count_type_inserts();
DROP TABLE public.type_inserts;
SELECT count(*) FILTER (WHERE type ~ '^k[0-9]+$') AS k_types,
       count(*) FILTER (WHERE type ~ '^p[0-9]+$') AS p_types
FROM cdp.identifier_types;
SELECT count(*) AS identities FROM cdp.identities WHERE type ~ '^[kp][0-9]+$';
RESET cdp.max_identifiers_per_message;
-- a look-up is no message: cdp.resolve takes any number of identifiers
SELECT cdp.resolve((SELECT jsonb_object_agg('k' || i, 'v' || i) FROM generate_series(1, 101) i)) =
       cdp.resolve('{"k1": "v1"}') AS resolved;
RESET cdp.auto_create_identifier_types;
