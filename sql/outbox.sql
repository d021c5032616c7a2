-- The outbox: enqueue, claim, ack, fail, replay; ordering per person and
-- channel, rate limits, rendering, merges and erasure. The worker is off
-- (cdp.tick() runs its task); the clock is cdp.fake_now. Policy is in
-- sql/policy.sql. cdp.timezone is Europe/Paris (test/regress.conf).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-03-02 10:00:00+00';

INSERT INTO cdp.channels (name, kind, address_type, max_attempts, backoff_base, backoff_max, max_payload_bytes)
VALUES ('email', 'email', 'email', 3, '10 seconds', '25 seconds', 200);
INSERT INTO cdp.channels (name, kind, target, requires_consent) VALUES ('hook', 'webhook', 'crm', false);
INSERT INTO cdp.templates (name, channel, subject, body, body_html) VALUES
    ('welcome', 'email', 'Hello {{traits.first_name | default: "there"}}',
     'Order {{payload.order_id}} for {{traits.first_name | default: "you"}}',
     '<p>Hi {{traits.first_name | default: "there"}}, {{payload.note | default: ""}}</p>'),
    ('strict', 'email', 'For {{traits.last_name}}', 'x', NULL),
    ('ping', 'hook', NULL, '{{payload.n}} for {{profile_id}}', NULL);
SELECT purpose FROM cdp.channels ORDER BY name;

SELECT cdp.identify('{"email": "ana@shop.test"}', '{"first_name": "Ana <b>&\"''"}') AS ana \gset
SELECT cdp.identify('{"email": "bo@shop.test"}', '{}') AS bo \gset
SELECT cdp.identify('{"user_id": "no-mail"}', '{}') AS nomail \gset
SELECT cdp.set_consent('{"email": "ana@shop.test"}', 'email', true, 'form') = :ana AS ana_consents;
SELECT cdp.set_consent('{"email": "bo@shop.test"}', 'email', true, 'form') = :bo AS bo_consents;
SELECT cdp.set_consent('{"user_id": "no-mail"}', 'email', true, 'form') = :nomail AS nomail_consents;

-- Bad input: clear errors.
SELECT cdp.enqueue(:ana, 'fax', 'welcome', '{}');
SELECT cdp.enqueue(:ana, NULL, 'welcome', '{}');
SELECT cdp.enqueue(:ana, 'email', 'nope', '{}');
SELECT cdp.enqueue(:ana, 'email', NULL, '{}');
SELECT cdp.enqueue(:ana, 'email', 'ping', '{}');
SELECT cdp.enqueue(:ana, 'email', 'welcome', NULL);
SELECT cdp.enqueue(:ana, 'email', 'welcome', '[1]');
SELECT cdp.enqueue(:ana, 'email', 'welcome', jsonb_build_object('big', repeat('x', 300)));
SELECT cdp.enqueue(NULL, 'email', 'welcome', '{}');
SELECT cdp.enqueue(999999, 'email', 'welcome', '{}');
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{}', 'infinity');
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{}', NULL, repeat('k', 600));
INSERT INTO cdp.templates (name, channel, body) VALUES ('bad1', 'email', 'Hi {{traits.first_name');
INSERT INTO cdp.templates (name, channel, body) VALUES ('bad2', 'email', 'Hi {{secret.x}}');
INSERT INTO cdp.templates (name, channel, body) VALUES ('bad3', 'email', 'Hi {{traits.x | upper}}');
INSERT INTO cdp.templates (name, channel, body) VALUES ('bad4', 'email', 'Hi {{traits.x | default: "y}}');
SELECT cdp.claim('fax', 10, '1 minute');
SELECT cdp.claim('email', 0, '1 minute');
SELECT cdp.claim('email', NULL, '1 minute');
SELECT cdp.claim('email', 10, '-1 minute');
SELECT cdp.claim('email', 10, NULL);
SELECT cdp.ack(NULL);
SELECT cdp.ack('{NULL}');
SELECT cdp.ack('{}');

-- A rollback sends nothing; a dedupe key enqueues once.
BEGIN;
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{"order_id": 1}', NULL, 'rolled-back') > 0 AS enqueued;
ROLLBACK;
SELECT count(*) AS after_rollback FROM cdp.outbox;
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{"order_id": 7, "note": "<i>thanks</i>"}', NULL, 'order-7') AS first \gset
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{"order_id": 8}', NULL, 'order-7') = :first AS same_id;
SELECT count(*) AS rows_for_key FROM cdp.outbox WHERE dedupe_key = 'order-7';

-- No address for the channel: kept as suppressed, with the reason.
SELECT cdp.enqueue(:nomail, 'email', 'welcome', '{"order_id": 2}') AS nm \gset
SELECT status, reason, finished_at IS NOT NULL AS finished FROM cdp.outbox WHERE outbox_id = :nm;

-- Claim: rendered, escaped in HTML, defaults; leased to this session.
SELECT outbox_id = :first AS is_first, dedupe_key, channel, kind, address, template, subject, body,
       body_html, payload, attempt, lease_until
FROM cdp.claim('email', 10, '5 minutes');
SELECT status, attempts, lease_until, sent_at FROM cdp.outbox WHERE outbox_id = :first;
-- leased: nothing more to claim
SELECT count(*) AS claimable FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:first]) AS acked;
SELECT status, delivered_at FROM cdp.outbox WHERE outbox_id = :first;

-- Ack of an id not claimed, not existing: refused, nothing acked.
SELECT cdp.enqueue(:bo, 'email', 'welcome', '{"order_id": 3}') AS bo1 \gset
SELECT cdp.ack(ARRAY[:bo1]);
SELECT cdp.ack(ARRAY[424242]);
SELECT cdp.fail(:bo1, 'x');
SELECT count(*) FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:bo1, 424242]);
SELECT status FROM cdp.outbox WHERE outbox_id = :bo1;

-- Failures: backoff with jitter up to the maximum, then dead with the
-- history; replay sends it again.
SELECT cdp.fail(:bo1, 'retry_in negative', '-1 second');
SELECT cdp.fail(:bo1, 'smtp 451 try later') AS status;
SELECT status, attempts, not_before - cdp.now() BETWEEN '5 seconds' AND '10 seconds' AS backoff_1,
       last_error FROM cdp.outbox WHERE outbox_id = :bo1;
SELECT count(*) AS while_waiting FROM cdp.claim('email', 10, '5 minutes');
SET cdp.fake_now = '2026-03-02 10:00:11+00';
SELECT count(*) AS second_try FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.fail(:bo1, 'timeout', '2 seconds') AS status;
SELECT not_before - cdp.now() AS retry_in FROM cdp.outbox WHERE outbox_id = :bo1;
SET cdp.fake_now = '2026-03-02 10:00:14+00';
SELECT attempt FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.fail(:bo1, 'timeout again') AS status;
SELECT status, attempts, reason, jsonb_array_length(errors) AS errors,
       errors -> 0 ->> 'error' AS first_error, finished_at IS NOT NULL AS finished
FROM cdp.outbox WHERE outbox_id = :bo1;
SELECT cdp.replay('{}'::bigint[]), cdp.replay(ARRAY[:first]) AS not_dead;
SELECT cdp.replay(ARRAY[:bo1]) AS replayed;
SELECT status, attempts, reason, jsonb_array_length(errors) AS errors FROM cdp.outbox WHERE outbox_id = :bo1;
SELECT attempt FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.fail(:bo1, 'hard: no such user', NULL, permanent => true) AS status;
SELECT reason FROM cdp.outbox WHERE outbox_id = :bo1;
SELECT cdp.replay('fax');
SELECT cdp.replay('email', '2030-01-01') AS none_since, cdp.replay('email') AS replayed;
SELECT count(*) FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:bo1]);

-- Backoff grows and stops at the channel's maximum (25 seconds).
SELECT cdp.enqueue(:bo, 'email', 'welcome', '{"order_id": 4}') AS bo2 \gset
UPDATE cdp.channels SET max_attempts = 10 WHERE name = 'email';
CREATE TEMP TABLE delays (attempt int, delay interval);
DO $$
DECLARE
    id bigint := currval('cdp.outbox_outbox_id_seq');
    t timestamptz := '2026-03-02 11:00:00+00';
BEGIN
    FOR i IN 1..6 LOOP
        PERFORM set_config('cdp.fake_now', to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS+00'), false);
        PERFORM count(*) FROM cdp.claim('email', 10, '1 minute');
        PERFORM cdp.fail(id, 'busy');
        INSERT INTO delays SELECT i, not_before - t FROM cdp.outbox WHERE outbox_id = id;
        t := t + interval '1 minute';
    END LOOP;
END
$$;
SELECT attempt, delay BETWEEN (least(10 * 2 ^ (attempt - 1), 25) / 2) * interval '1 second'
                          AND least(10 * 2 ^ (attempt - 1), 25) * interval '1 second' AS within_bounds
FROM delays ORDER BY attempt;
SET cdp.fake_now = '2026-03-02 11:10:00+00';
SELECT count(*) FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:bo2]);

-- Order per person and channel: a message waits while an earlier one is
-- leased or waiting to retry; other people go on.
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{"order_id": 11}') AS a1 \gset
SELECT cdp.enqueue(:ana, 'email', 'welcome', '{"order_id": 12}') AS a2 \gset
SELECT cdp.enqueue(:bo, 'email', 'welcome', '{"order_id": 21}') AS b1 \gset
SELECT payload ->> 'order_id' AS order_id FROM cdp.claim('email', 10, '5 minutes') ORDER BY 1;
SELECT count(*) AS nothing_while_leased FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.fail(:a1, 'later', '1 minute');
SELECT cdp.ack(ARRAY[:b1]);
SELECT count(*) AS nothing_while_retrying FROM cdp.claim('email', 10, '5 minutes');
SET cdp.fake_now = '2026-03-02 11:11:01+00';
SELECT payload ->> 'order_id' AS order_id FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:a1]);
SELECT payload ->> 'order_id' AS order_id FROM cdp.claim('email', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:a2]);

-- An expired lease: claimable again; the worker's task moves it back and
-- notifies; the old holder may still ack until someone claims it.
SELECT cdp.enqueue(:bo, 'email', 'welcome', '{"order_id": 31}') AS b3 \gset
SELECT count(*) FROM cdp.claim('email', 10, '1 second');
SET cdp.fake_now = '2026-03-02 11:11:03+00';
SELECT (cdp.tick() ->> 'outbox')::int >= 1 AS expired;
SELECT status, reason FROM cdp.outbox WHERE outbox_id = :b3;
SELECT cdp.ack(ARRAY[:b3]) AS acked_after_expiry;

-- Missing value and no default: suppressed with the placeholder named.
SELECT cdp.enqueue(:ana, 'email', 'strict', '{}') AS s1 \gset
SELECT count(*) FROM cdp.claim('email', 10, '5 minutes');
SELECT status, reason FROM cdp.outbox WHERE outbox_id = :s1;
SELECT cdp.render('{{traits.a.b}} {{payload.n}} {{payload.o}} {{payload.t | default: ''x''}}',
                  '{"a": {"b": 1.5}}', '{"n": true, "o": {"k": [1]}, "t": null}');
SELECT cdp.render('<{{payload.x}}>', '{}', '{"x": "<script>alert(\"1\")</script>"}', true);
SELECT cdp.render('{{traits.missing}}', '{}');
SELECT cdp.render('Grüße {{traits.nom}} ☃', '{"nom": "Zoë"}');

-- Webhook channel: the address is its target; no consent needed.
SELECT cdp.enqueue(:nomail, 'hook', 'ping', '{"n": 5}') AS h1 \gset
SELECT address, body, subject FROM cdp.claim('hook', 10, '5 minutes');
SELECT cdp.ack(ARRAY[:h1]);

-- Rate limit: 2 per second on the channel, across claims; the bucket
-- holds one second's worth.
UPDATE cdp.channels SET rate_per_second = 2 WHERE name = 'hook';
SELECT count(cdp.enqueue(cdp.identify(jsonb_build_object('user_id', 'r' || g)), 'hook', 'ping',
                         jsonb_build_object('n', g))) FROM generate_series(1, 6) g;
SELECT count(*) AS first_claim FROM cdp.claim('hook', 10, '5 minutes');
SELECT count(*) AS no_tokens_left FROM cdp.claim('hook', 10, '5 minutes');
SET cdp.fake_now = '2026-03-02 11:11:03.5+00';
SELECT count(*) AS half_a_second_later FROM cdp.claim('hook', 10, '5 minutes');
SET cdp.fake_now = '2026-03-02 11:12:00+00';
SELECT count(*) AS a_minute_later FROM cdp.claim('hook', 10, '5 minutes');
UPDATE cdp.channels SET rate_per_second = NULL WHERE name = 'hook';
SELECT count(*) AS unlimited FROM cdp.claim('hook', 10, '5 minutes');

-- Claims are HOT updates (no indexed column changes).
SELECT pg_stat_force_next_flush();
SELECT n_tup_hot_upd > 0 AS hot FROM pg_stat_user_tables WHERE relid = 'cdp.outbox'::regclass;

-- A merge moves the loser's messages, and their order, to the winner.
SELECT cdp.identify('{"email": "cy@shop.test"}', '{}') AS cy \gset
SELECT cdp.set_consent('{"email": "cy@shop.test"}', 'email', true, 'form') = :cy;
SELECT cdp.enqueue(:cy, 'email', 'welcome', '{"order_id": 41}') AS c1 \gset
SELECT cdp.identify('{"email": "cy@shop.test", "user_id": "no-mail"}', '{}') AS winner \gset
SELECT count(*) FILTER (WHERE profile_id = :winner) AS winner_rows,
       count(*) FILTER (WHERE profile_id NOT IN (SELECT profile_id FROM cdp.profiles)) AS orphans
FROM cdp.outbox;

-- Forget erases a person's messages and consents.
SELECT cdp.forget('{"email": "ana@shop.test"}') ? 'outbox' AS erased;
SELECT count(*) AS ana_rows FROM cdp.outbox WHERE profile_id = :ana;
SELECT count(*) AS ana_consents FROM cdp.consents WHERE profile_id = :ana;

-- The figures.
SELECT metric, value FROM cdp.stats_outbox ORDER BY metric;
SELECT count(*) > 0 AS in_stats FROM cdp.stats WHERE section = 'outbox';

-- Retention: finished messages go after cdp.outbox_retention.
SET cdp.fake_now = '2026-03-10 12:00:00+00';
SELECT count(*) > 0 AS some_finished FROM cdp.outbox WHERE finished_at IS NOT NULL;
SELECT cdp.tick() ? 'outbox';
SELECT count(*) AS finished_left FROM cdp.outbox WHERE finished_at IS NOT NULL;
