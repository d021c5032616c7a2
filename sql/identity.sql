-- Identity resolution: create, attach, merge, limits, priorities, blocked values.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';

-- a cookie first, then the same person logs in with an email
SELECT cdp.track('{"cookie": "c-1"}', 'Page Viewed') AS p1;
SELECT cdp.track('{"email": "Alice@Shop.test", "cookie": "c-1"}', 'Signed Up') AS p1_again;
-- a second anonymous visit on another device
SELECT cdp.track('{"device_id": "d-9"}', 'App Opened') AS p2;
-- the app user gives the email: the two profiles merge into the older one
SELECT cdp.track('{"device_id": "d-9", "email": "alice@shop.test"}', 'Logged In') AS merged;

SELECT type, value, profile_id FROM cdp.identities ORDER BY type, value;
SELECT profile_id FROM cdp.profiles ORDER BY 1;
SELECT profile_id, event, original_profile_id FROM cdp.events ORDER BY occurred_at, event;
SELECT merge_id, winner_id, loser_id, cause, identifiers, loser_identities, loser_members
FROM cdp.merges;

-- resolve finds without creating; unknown or bad input gives NULL
SELECT cdp.resolve('{"cookie": "c-1"}') AS by_cookie,
       cdp.resolve('{"email": " ALICE@shop.test "}') AS by_email,
       cdp.resolve('{"cookie": "nobody"}') AS unknown,
       cdp.resolve('{"no_such_type": "x"}') AS bad_type,
       cdp.resolve('[1, 2]') AS not_object,
       cdp.resolve(NULL) AS null_arg;
SELECT count(*) AS profiles_after_resolve FROM cdp.profiles;

-- user_id allows one per profile: a second user_id cannot merge in
SELECT cdp.identify('{"user_id": "u-1", "email": "alice@shop.test"}', '{"name": "Alice"}') AS alice;
SELECT cdp.identify('{"user_id": "u-2", "email": "bob@shop.test"}', '{"name": "Bob"}') AS bob;
-- a shared cookie seen with both users: the event goes to the strongest
-- identifier's profile (user_id), the cookie stays where it is
SELECT cdp.track('{"user_id": "u-2", "cookie": "c-1"}', 'Shared Device') AS goes_to_bob;
SELECT type, value, profile_id FROM cdp.identities WHERE value IN ('c-1', 'u-1', 'u-2') ORDER BY 1, 2;
-- an email that links u-1 and u-2 cannot merge them either
SELECT cdp.track('{"email": "bob@shop.test", "user_id": "u-1"}', 'Conflict') AS goes_to_alice;
SELECT count(*) AS merges FROM cdp.merges;
SELECT type, value, reason FROM cdp.identifier_issues ORDER BY issue_id;

-- blocked values are ignored and recorded, not errors
SELECT cdp.track('{"email": "test@test.com", "cookie": "c-77"}', 'Blocked Email') AS ok;
SELECT cdp.track('{"user_id": "undefined", "cookie": "c-78"}', 'Blocked User');
SELECT count(*) FROM cdp.identities WHERE value IN ('test@test.com', 'undefined');
SELECT type, value, reason FROM cdp.identifier_issues WHERE reason = 'blocked value' ORDER BY 1, 2;
-- only blocked identifiers: nothing to attribute the event to
SELECT cdp.track('{"email": "test@test.com"}', 'Nobody');

-- a blocked value must be a valid regular expression
UPDATE cdp.identifier_types SET blocked_values = blocked_values || '{"(unclosed"}' WHERE type = 'email';

-- a new type, with its own limit and priority
INSERT INTO cdp.identifier_types (type, max_per_profile, priority) VALUES ('crm_id', 1, 5);
SELECT cdp.track('{"crm_id": "CRM-1", "email": "alice@shop.test"}', 'Synced') AS alice_again;
SELECT cdp.resolve('{"crm_id": "CRM-1"}') = cdp.resolve('{"user_id": "u-1"}') AS same_person;

-- unknown types: an error naming the type, or auto-created when allowed
SELECT cdp.track('{"fax": "123"}', 'Faxed');
SET cdp.auto_create_identifier_types = on;
SELECT cdp.track('{"fax": "123"}', 'Faxed') > 0 AS created;
SELECT type, max_per_profile, priority FROM cdp.identifier_types WHERE type = 'fax';
RESET cdp.auto_create_identifier_types;

-- the merge limit on identifiers per profile
SET cdp.max_identities_per_profile = 3;
SELECT cdp.track('{"cookie": "k-1", "device_id": "k-2", "anonymous_id": "k-3"}', 'Three') AS p;
SELECT cdp.track('{"cookie": "k-1", "loyalty_card": "k-4"}', 'Fourth');
SELECT count(*) AS ids_of_k FROM cdp.identities
WHERE profile_id = cdp.resolve('{"cookie": "k-1"}');
RESET cdp.max_identities_per_profile;

-- cdp.stitch: the same rules over a table of identifier groups, in memory,
-- writing nothing
CREATE TEMP TABLE groups (group_id int, type text, value text);
INSERT INTO groups VALUES
  (1, 'cookie', 'g-c1'), (1, 'email', 'G-A@Shop.test'),
  (2, 'cookie', 'g-c2'), (2, 'email', 'g-a@shop.test'),
  (3, 'user_id', 'g-u1'), (3, 'email', 'g-a@shop.test'),
  (4, 'user_id', 'g-u2'), (4, 'cookie', 'g-c2'),
  (5, 'email', 'test@test.com'), (6, 'phone', 'not a phone');
SELECT type, value, dense_rank() OVER (ORDER BY component) AS component
FROM cdp.stitch('groups') ORDER BY component, type, value;
SELECT count(*) AS rows_as_given FROM cdp.stitch('groups', normalize_values => false);
SELECT count(*) AS nothing_written FROM cdp.identities WHERE value LIKE 'g-%';
INSERT INTO groups VALUES (7, 'pager', '1');
SELECT count(*) FROM cdp.stitch('groups');
-- Groups replay in the order first read, even when a group's rows come back
-- after another group's (read twice then): group 1 takes u1 first, so
-- group 2's u2 cannot join c1 (one user_id per profile).
CREATE TEMP TABLE unsorted (group_id bigint, type text, value text);
INSERT INTO unsorted VALUES
  (1, 'cookie', 's-c1'), (2, 'cookie', 's-c1'), (2, 'user_id', 's-u2'),
  (1, 'user_id', 's-u1'), (9000000000, 'email', 's@shop.test'),
  (9000000000, 'cookie', 's-c1'), (3, NULL, 'ignored'), (NULL, 'cookie', 'ignored'),
  (3, 'cookie', NULL);
SELECT type, value, dense_rank() OVER (ORDER BY component) AS component
FROM cdp.stitch('unsorted') ORDER BY component, type, value;
-- The same groups sorted, through a view: the same components.
CREATE TEMP VIEW sorted_view AS SELECT * FROM unsorted ORDER BY group_id;
SELECT type, value, dense_rank() OVER (ORDER BY component) AS component
FROM cdp.stitch('sorted_view') ORDER BY component, type, value;
TRUNCATE unsorted;
SELECT count(*) AS empty FROM cdp.stitch('unsorted');
-- A graph large enough for the arrays on huge pages (grown past 2 MB) and
-- a result spilled to a temporary file: 300k groups, each email in four
-- of them with a cookie of its own.
SET work_mem = '64MB';
CREATE TEMP TABLE big_groups AS
SELECT g AS group_id, v.type, v.value
FROM generate_series(1, 300000) g,
     LATERAL (VALUES ('email', 'p' || g % 75000 || '@big.test'), ('cookie', 'bc-' || g)) v(type, value)
ORDER BY g;
SELECT count(*) AS identifiers, count(DISTINCT component) AS components,
       count(*) FILTER (WHERE component IS NULL) AS without
FROM cdp.stitch('big_groups');
SELECT count(*) AS components_of_one_email_and_four_cookies
FROM (SELECT component FROM cdp.stitch('big_groups') GROUP BY component
      HAVING count(*) FILTER (WHERE type = 'email') = 1
         AND count(*) FILTER (WHERE type = 'cookie') = 4
         AND count(DISTINCT CASE type WHEN 'cookie' THEN substr(value, 4)::int % 75000
                                      ELSE substring(value FROM 'p([0-9]+)@')::int END) = 1) c;
RESET work_mem;
