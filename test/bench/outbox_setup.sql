-- Data of benchmark 7 (test/bench/outbox.sh): :people people with an email,
-- a first name and consent, a channel with the whole policy on (consent,
-- suppressions, quiet hours that are checked but do not fall in the run,
-- caps per day and week that are counted but not reached), and the same
-- queue of messages three ways: cdp.outbox, a plain table drained with
-- FOR UPDATE SKIP LOCKED, and four PgQ queues (one per claimer).
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

INSERT INTO cdp.channels (name, kind, address_type, quiet_start, quiet_end, cap_per_day, cap_per_week)
VALUES ('bench', 'email', 'email',
        (cdp.local_time(now()) + interval '12 hours')::time,
        (cdp.local_time(now()) + interval '13 hours')::time, 1000000, 1000000);
INSERT INTO cdp.templates (name, channel, subject, body, body_html) VALUES
    ('bench_t', 'bench', 'Hello {{traits.first_name | default: "there"}}',
     'Order {{payload.order_id}} for {{traits.first_name | default: "you"}}: {{payload.total}}',
     '<p>Order <b>{{payload.order_id}}</b>, {{traits.first_name | default: "there"}}</p>');

INSERT INTO cdp.profiles (profile_id, traits)
SELECT g, jsonb_build_object('first_name', 'P' || g, 'timezone', 'Europe/Paris')
FROM generate_series(1, :people) g;
SELECT setval('cdp.profiles_profile_id_seq', :people);
INSERT INTO cdp.identities (type, value, profile_id)
SELECT 'email', 'p' || g || '@shop.test', g FROM generate_series(1, :people) g;
INSERT INTO cdp.consents (profile_id, purpose, granted, source)
SELECT g, 'bench', true, 'bench' FROM generate_series(1, :people) g;
-- a few suppressed addresses, so the check finds rows
INSERT INTO cdp.suppressions (address_type, address, reason)
SELECT 'email', 'gone' || g || '@shop.test', 'hard bounce' FROM generate_series(1, 1000) g;

-- the messages, consecutive ones to different people
SELECT count(cdp.enqueue(1 + g % :people, 'bench', 'bench_t',
                         jsonb_build_object('order_id', g, 'total', g % 500)))
FROM generate_series(1, :messages) g;

-- the plain queue: what an application writes without pg_cdp
DROP TABLE IF EXISTS bench.plain_queue;
CREATE TABLE bench.plain_queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id  bigint NOT NULL,
    address     text NOT NULL,
    payload     jsonb NOT NULL,
    status      text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    leased_by   integer,
    done_at     timestamptz
);
CREATE INDEX plain_queue_pending ON bench.plain_queue (id) WHERE status = 'pending';
INSERT INTO bench.plain_queue (profile_id, address, payload)
SELECT 1 + g % :people, 'p' || (1 + g % :people) || '@shop.test',
       jsonb_build_object('order_id', g, 'total', g % 500)
FROM generate_series(1, :messages) g;

-- PgQ: four queues, one consumer each, a batch per 100 events
DROP EXTENSION IF EXISTS pgq CASCADE;
CREATE EXTENSION pgq;
SELECT pgq.create_queue('bench_q' || q), pgq.set_queue_config('bench_q' || q, 'ticker_max_count', '100'),
       pgq.register_consumer('bench_q' || q, 'c')
FROM generate_series(1, 4) q;
CREATE PROCEDURE bench.pgq_fill(messages int) LANGUAGE plpgsql AS $$
BEGIN
    FOR b IN 0 .. messages / 400 - 1 LOOP
        FOR q IN 1 .. 4 LOOP
            PERFORM pgq.insert_event('bench_q' || q, 'message',
                                     jsonb_build_object('order_id', b * 400 + q * 100 + g,
                                                        'profile_id', 1 + g, 'total', g)::text)
            FROM generate_series(1, 100) g;
        END LOOP;
        COMMIT;
        FOR q IN 1 .. 4 LOOP
            PERFORM pgq.ticker('bench_q' || q);
        END LOOP;
        COMMIT;
    END LOOP;
END
$$;
CALL bench.pgq_fill(:messages);
ANALYZE;
