-- Messages that say what happened and what to do: refused merges name the
-- limit and the other profile, national phone numbers name the setting
-- that read them, \u0000 is valid JSON that jsonb cannot store.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-10 12:00+00';
SELECT cdp.create_event_partitions('2026-05-01', 1);

-- Two customers of an import share an email; user_id allows one per
-- profile. The second keeps its own profile, and the issue names the limit
-- (its type and value) and the profile that has the email, though both
-- profiles are created by this very batch.
SELECT cdp.ingest_batch('[
  {"type": "identify", "userId": "crm-1", "traits": {"email": "family@shop.test"}, "messageId": "m-1"},
  {"type": "identify", "userId": "crm-2", "traits": {"email": "family@shop.test"}, "messageId": "m-2"}
]');
SELECT i.type, i.value, i.profile_id = cdp.resolve('{"user_id": "crm-2"}') AS on_crm_2,
       substring(i.reason FROM 'profile (\d+)')::bigint = cdp.resolve('{"user_id": "crm-1"}') AS names_crm_1,
       regexp_replace(i.reason, 'profile \d+', 'profile N') AS reason
FROM cdp.identifier_issues i ORDER BY issue_id;

-- The same against stored profiles, and with cdp.max_identities_per_profile.
SET cdp.max_identities_per_profile = 3;
SELECT cdp.track('{"cookie": ["k-1", "k-2"]}', 'Browse') AS first,
       cdp.track('{"cookie": ["k-3", "k-4"]}', 'Browse') AS second;
SELECT cdp.track('{"cookie": ["k-1", "k-3"]}', 'Browse') = cdp.resolve('{"cookie": "k-1"}') AS stays_with_first;
SELECT i.type, i.value,
       substring(i.reason FROM 'profile (\d+)')::bigint = cdp.resolve('{"cookie": "k-3"}') AS names_second,
       regexp_replace(i.reason, 'profile \d+', 'profile N') AS reason
FROM cdp.identifier_issues i WHERE i.value LIKE 'k-%' ORDER BY issue_id;
RESET cdp.max_identities_per_profile;

-- A national phone number is read in cdp.default_phone_region: the error
-- says so, and how to write it.
\set VERBOSITY default
SELECT cdp.track('{"phone": "020 7946 0958"}', 'Called');       -- British, read as US
SELECT cdp.track('{"phone": "06 12 34 56 78"}', 'Called');      -- French, read as US
SELECT cdp.track('{"phone": "+33 6 12 34 56 78"}', 'Called') > 0 AS with_country_code;
-- on the Segment paths the number is dropped and recorded with the same words
SELECT cdp.ingest('{"type": "identify", "userId": "u-fr", "traits": {"phone": "06 12 34 56 79"}}') > 0 AS accepted;
SELECT type, value, reason FROM cdp.identifier_issues WHERE type = 'phone';
SET cdp.default_phone_region = 'FR';
SELECT cdp.normalize_phone('06 12 34 56 78') AS french;
SELECT cdp.track('{"phone": "06 12 34 56 78"}', 'Called') > 0 AS read_as_french;
SET cdp.default_phone_region = 'XX';
SELECT cdp.track('{"phone": "06 12 34 56 78"}', 'Called');
RESET cdp.default_phone_region;

-- \u0000 is valid JSON that jsonb cannot store; what is not JSON is still
-- said to be not JSON, \u0000 or not.
COPY cdp.inbox (message) FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
{"type": "track", "userId": "u-1", "event": "Nul", "properties": {"note": "a\u0000b"}, "messageId": "n-1"}
{"type": "track", "userId": "u-1", "event": "Nul", "properties": {"note": "a\u0000b"}, "messageId": "n-2"
\.
SELECT cdp.tick()->'inbox' AS drained;
SELECT sqlstate, reason, detail FROM cdp.inbox_rejects ORDER BY inbox_id;
