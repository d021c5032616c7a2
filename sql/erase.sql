-- cdp.forget and the messages still waiting: inbox rows and rejects are read
-- as the drain reads them. A row goes when an identifier it carries
-- normalizes to one of the person's, however it is written, and never
-- because some text in it looks like one. The worker is off in this suite:
-- inbox rows wait until cdp.tick().
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';

-- Strangers' messages and rejects. Their text holds "track", "Bob" and "bob",
-- but none of them names user_id "track" or user_id "bob".
COPY cdp.inbox (message) FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
{"type": "track", "userId": "alice", "event": "track", "messageId": "s-1"}
{"type": "track", "anonymousId": "track-7", "event": "Viewed", "properties": {"kind": "track"}, "messageId": "s-2"}
{"type": "track", "userId": "Bob", "event": "Viewed", "messageId": "s-3"}
{"type": "track", "userId": "carol", "event": "Viewed", "properties": {"friend": "bob", "quote": "\"bob\""}, "messageId": "s-4"}
{"type": "identify", "userId": "dave", "traits": {"email": "bob@other.test", "nickname": "bob"}, "messageId": "s-5"}
{"type": "identify", "userId": "erik", "traits": {"email": "bob.persön@example.com"}, "messageId": "s-6"}
\.
INSERT INTO cdp.inbox_rejects (message, sqlstate, reason) VALUES
    ('{"type": "track", "userId": "alice", "messageId": "r-s1"}', '22023', 'parses, no event'),
    ('{"type": "track", "userId": "erin", "event": "track", "messageId": "r-s2"', '22P02', 'cut short'),
    ('{"type": "track", "userId": "carol", "properties": {"friend": "bob"}, "messageId": "r-s3"', '22P02', 'cut short'),
    ('{"type": "track", "userId": "bob\xFF", "messageId": "r-s4"}', '22021', 'not UTF-8'),
    ('{"type": "track", "userId": "Bob", "event": "Viewed", "messageId": "r-s5"}', '42501', 'source disabled');

-- Nobody has user_id "track": forgetting it erases nothing at all.
SELECT cdp.forget('{"user_id": "track"}');
SELECT count(*) AS inbox, (SELECT count(*) FROM cdp.inbox_rejects) AS rejects FROM cdp.inbox;

-- Bob, and his messages still waiting, naming him however they spell it
-- (b-8 holds a zero-width space, which normalization drops).
SELECT cdp.identify('{"user_id": "bob", "email": "bob.person@example.com", "phone": "+14155552671"}',
                    '{"plan": "pro"}') AS bob;
COPY cdp.inbox (message) FROM STDIN WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02');
{"type": "identify", "anonymousId": "anon-b1", "traits": {"phone": "(415) 555-2671", "plan": "free"}, "messageId": "b-1"}
{"type": "identify", "anonymousId": "anon-b2", "traits": {"email": " Bob.Person@Example.com ", "city": "Oslo"}, "messageId": "b-2"}
{"type": "identify", "anonymousId": "anon-b3", "traits": {"email": "bob.person\u0040example.com", "city": "Rome"}, "messageId": "b-3"}
{"type": "alias", "previousId": "bob", "userId": "bob-2", "messageId": "b-4"}
{"type": "track", "anonymousId": "anon-b5", "event": "Viewed", "context": {"traits": {"email": "BOB.PERSON@EXAMPLE.COM"}}, "messageId": "b-5"}
{"type": "track", "anonymousId": "anon-b6", "event": "Viewed", "context": {"externalIds": [{"type": "phone", "id": "+1 415.555.2671", "collection": "users"}]}, "messageId": "b-6"}
{"type": "track", "userId": "b\u006fb", "event": "Viewed", "messageId": "b-7"}
{"type": "identify", "anonymousId": "anon-b8", "traits": {"email": "BOB.PER​SON@EXAMPLE.COM"}, "messageId": "b-8"}
{"type": "identify", "anonymousId": "anon-b9", "traits": {"phone": 4.155552671e9}, "messageId": "b-9"}
\.
INSERT INTO cdp.inbox_rejects (message, sqlstate, reason) VALUES
    -- these parse: judged by the identifiers they carry
    ('{"type": "track", "userId": " bob ", "event": "Viewed", "messageId": "r-b1"}', '42501', 'source disabled'),
    -- these are no message the drain accepts: judged by the values of their identifier keys
    ('{"type": "bogus", "userId": "bob", "messageId": "r-b2"}', '22023', 'unknown type'),
    ('{"type": "track", "anonymousId": "x", "event": "E", "timestamp": "never", "context": {"traits": {"phone": "415-555-2671"}}, "messageId": "r-b3"}', '22007', 'bad timestamp'),
    ('{"type": "identify", "userId": "x", "traits": {"email": "Bob.Person@Example.com"', '22P02', 'cut short'),
    ('{"type": "track", "userId": "bob", "event": "caf\xE9", "messageId": "r-b5"}', '22021', 'not UTF-8'),
    -- nesting too deep to parse (the parse fails, and is isolated, as the drain isolates it)
    ('{"userId": "bob", "deep": ' || repeat('[', 100000), '54001', 'too deep');

-- Forgotten by his email, spelled as he typed it: every row naming him goes.
SELECT cdp.forget('{"email": " Bob.Person@Example.COM"}');
SELECT message::jsonb->>'messageId' AS waiting FROM cdp.inbox ORDER BY inbox_id;
SELECT coalesce(substring(message from '"messageId": "([^"]*)"'), left(message, 30)) AS kept_reject
FROM cdp.inbox_rejects ORDER BY reject_id;

-- Drained, the strangers' messages land and nothing of Bob comes back.
SELECT cdp.tick()->'inbox' AS drained;
SELECT event_id, event, (SELECT string_agg(type || ' ' || value, ', ' ORDER BY type, value)
                         FROM cdp.identities i WHERE i.profile_id = e.profile_id) AS identities
FROM cdp.events e ORDER BY event_id;
SELECT count(*) AS bob_left FROM (
    SELECT 1 FROM cdp.identities
    WHERE value IN ('bob', 'bob.person@example.com', '+14155552671', 'anon-b1', 'anon-b2',
                    'anon-b3', 'bob-2', 'anon-b5', 'anon-b6', 'anon-b8', 'anon-b9')
    UNION ALL SELECT 1 FROM cdp.events WHERE event_id LIKE 'b-%'
    UNION ALL SELECT 1 FROM cdp.message_ids WHERE message_id LIKE 'b-%'
    UNION ALL SELECT 1 FROM cdp.profiles
    WHERE traits ?| ARRAY['plan', 'city'] OR traits->>'email' ILIKE '%bob.person%') t;
