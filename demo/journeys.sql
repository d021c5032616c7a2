-- demo/journeys.sql: channels, templates, a trigger and a journey; one
-- shopper enters a segment and a journey as her purchase arrives.
\pset footer off
\pset null '-'
SET client_min_messages = warning;

\echo
\echo '== outbox: channels and templates; a trigger and the welcome journey'
INSERT INTO cdp.channels (name, kind, address_type, quiet_start, quiet_end, cap_per_day)
VALUES ('email', 'email', 'email', NULL, NULL, 5);
INSERT INTO cdp.templates (name, channel, subject, body) VALUES
    ('e_invoice', 'email', 'Your invoice', 'Hello {{traits.first_name | default: "there"}}, here is the invoice of your order of {{payload.total | default: "today"}} EUR.'),
    ('welcome', 'email', 'Welcome', 'Welcome {{traits.first_name | default: ""}}!'),
    ('ten_off', 'email', '10% off', 'Your code: {{payload.code}}');
SELECT cdp.create_trigger('e_invoice', 'Order Completed', NULL, NULL, 'email', 'e_invoice') > 0 AS trigger_created;
SELECT cdp.create_journey('welcome', '{
  "entry": {"event": "Signed Up"}, "reentry": "never",
  "exit": [{"event": "Unsubscribed"}],
  "goal": {"event": "Order Completed", "within": "7 days"},
  "steps": [
    {"name": "welcome", "kind": "send", "channel": "email", "template": "welcome", "next": "bought?"},
    {"name": "bought?", "kind": "wait_for", "event": "Order Completed", "timeout": "3 days",
     "on_event": "done", "on_timeout": "nudge"},
    {"name": "nudge", "kind": "send", "channel": "email", "template": "ten_off", "payload": {"code": "WELCOME10"}},
    {"name": "done", "kind": "exit"}]}') AS welcome_version;
SELECT cdp.start_journey('welcome');

\echo
\echo '== one shopper: she signs up, consents, and buys for 180 EUR at 15:00 in a store'
SELECT cdp.identify('{"email": "lea.martin@example.fr"}', '{"first_name": "Léa", "birth_date": "1970-03-14"}') AS lea \gset
SELECT cdp.set_consent('{"email": "lea.martin@example.fr"}', 'email', true, 'store till') = :lea AS consented;
SELECT cdp.track('{"email": "lea.martin@example.fr"}', 'Signed Up') = :lea AS signed_up;
BEGIN;
SELECT cdp.track('{"email": "lea.martin@example.fr"}', 'Order Completed', '{"total": 180, "store_id": "paris-1"}',
                 date_trunc('day', cdp.now() AT TIME ZONE current_setting('cdp.timezone')) AT TIME ZONE current_setting('cdp.timezone') + interval '15 hours',
                 'store') = :lea AS bought;
\echo '-- inside her own transaction, before the worker looks:'
SELECT cdp.in_segment(:lea, 'afternoon_big_spenders') AS in_afternoon_big_spenders;
SELECT template, status FROM cdp.outbox WHERE profile_id = :lea ORDER BY outbox_id;
COMMIT;
