-- Merges: logged with their cause, undone by cdp.unmerge; erasure by cdp.forget.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';

SELECT cdp.identify('{"cookie": "web-1"}', '{"city": "Paris"}', '2026-04-01 00:00:00+00') AS web;
SELECT cdp.track('{"cookie": "web-1"}', 'Viewed', '{}', '2026-04-02 00:00:00+00', 'web', 'e-web');
SELECT cdp.identify('{"loyalty_card": "LC-1"}', '{"city": "Lyon", "tier": "gold"}', '2026-04-03 00:00:00+00') AS card;
SELECT cdp.track('{"loyalty_card": "LC-1"}', 'Purchased', '{}', '2026-04-04 00:00:00+00', 'store', 'e-store');
SELECT cdp.track('{"phone": "+33 6 12 34 56 78"}', 'Called', '{}', '2026-04-05 00:00:00+00', 'call_center', 'e-call') AS phone;

-- the card is seen with the cookie: card's profile (2) merges into the cookie's (1)
SELECT cdp.track('{"cookie": "web-1", "loyalty_card": "LC-1"}', 'Linked', '{}',
                 '2026-04-06 00:00:00+00', 'web', 'e-link1');
-- then the phone joins through the card
SELECT cdp.track('{"loyalty_card": "LC-1", "phone": "+33612345678"}', 'Linked Again', '{}',
                 '2026-04-07 00:00:00+00', 'store', 'e-link2');
SELECT merge_id, winner_id, loser_id, cause, event_id, loser_identities, loser_members, loser_traits
FROM cdp.merges ORDER BY merge_id;
SELECT profile_id, traits FROM cdp.profiles ORDER BY 1;
SELECT event, profile_id, original_profile_id FROM cdp.events ORDER BY occurred_at;
-- every profile touched is marked changed for the segment engine
SELECT profile_id, reason FROM cdp.profile_changes ORDER BY 1;

-- undoing the first merge restores the card's profile and its events
SELECT cdp.unmerge(1) AS restored;
SELECT profile_id, traits FROM cdp.profiles ORDER BY 1;
SELECT type, value, profile_id FROM cdp.identities ORDER BY 1, 2;
SELECT event, profile_id FROM cdp.events ORDER BY occurred_at;
SELECT merge_id, undone_at IS NOT NULL AS undone FROM cdp.merges ORDER BY 1;
-- twice is an error, and so is an unknown merge
SELECT cdp.unmerge(1);
SELECT cdp.unmerge(999);

-- a merge that a later merge depends on must wait for that one to be undone
SELECT cdp.track('{"email": "x@shop.test"}', 'A') AS a;
SELECT cdp.track('{"email": "y@shop.test"}', 'B') AS b;
SELECT cdp.track('{"email": "z@shop.test"}', 'C') AS c;
SELECT cdp.track('{"email": "y@shop.test", "cookie": "yz"}', 'D');
SELECT cdp.track('{"email": "z@shop.test", "cookie": "yz"}', 'E');   -- c into b
SELECT cdp.track('{"email": "x@shop.test", "cookie": "yz"}', 'F');   -- b into a
SELECT merge_id, winner_id, loser_id FROM cdp.merges WHERE merge_id > 2 ORDER BY 1;
SELECT cdp.unmerge(3);
SELECT cdp.unmerge(4) = (SELECT loser_id FROM cdp.merges WHERE merge_id = 4) AS undone_4;
SELECT cdp.unmerge(3) = (SELECT loser_id FROM cdp.merges WHERE merge_id = 3) AS undone_3;
SELECT cdp.resolve('{"email": "x@shop.test"}') <> cdp.resolve('{"email": "y@shop.test"}') AS split,
       cdp.resolve('{"email": "y@shop.test"}') <> cdp.resolve('{"email": "z@shop.test"}') AS split_too;

-- forget: the person and every trace of them
INSERT INTO cdp.inbox (message) VALUES ('{"type": "track", "userId": "forget-me", "event": "Late"}');
INSERT INTO cdp.inbox_rejects (message, sqlstate, reason)
VALUES ('{"type": "bogus", "userId": "forget-me"}', '22023', 'test'),
       ('{"type": "bogus", "userId": "keep-me"}', '22023', 'test');
SELECT cdp.identify('{"user_id": "forget-me", "email": "gone@shop.test"}', '{"name": "Gone"}') AS gone;
SELECT cdp.track('{"email": "gone@shop.test", "cookie": "gone-cookie"}', 'Viewed', '{}', NULL, NULL, 'gone-evt');
SELECT cdp.track('{"user_id": "forget-me", "device_id": "gone-device"}', 'Opened');
SELECT cdp.forget('{"email": "Gone@Shop.test"}');
SELECT count(*) AS traces FROM (
    SELECT profile_id FROM cdp.identities WHERE value LIKE 'gone%' OR value = 'forget-me'
    UNION ALL SELECT profile_id FROM cdp.events WHERE event_id = 'gone-evt'
    UNION ALL SELECT profile_id FROM cdp.message_ids WHERE message_id = 'gone-evt'
    UNION ALL SELECT 0 FROM cdp.inbox WHERE message LIKE '%forget-me%'
    UNION ALL SELECT 0 FROM cdp.inbox_rejects WHERE message LIKE '%forget-me%'
    UNION ALL SELECT 0 FROM cdp.profiles WHERE traits->>'name' = 'Gone') t;
SELECT count(*) AS kept FROM cdp.inbox_rejects WHERE message LIKE '%keep-me%';
-- forgetting someone unknown erases nothing and is not an error
SELECT cdp.forget('{"email": "nobody@shop.test"}');

-- a backend remembers which marks exist; deleting marks, rolling back or
-- rolling back to a savepoint makes it forget, so no change goes unmarked
SELECT cdp.track('{"cookie": "marks-1"}', 'First') AS m \gset
SELECT cdp.track('{"cookie": "marks-1"}', 'Remembered') = :m AS same;
DELETE FROM cdp.profile_changes WHERE profile_id = :m;
SELECT cdp.track('{"cookie": "marks-1"}', 'After Delete') = :m AS same;
SELECT reason FROM cdp.profile_changes WHERE profile_id = :m;
TRUNCATE cdp.profile_changes;
SELECT cdp.track('{"cookie": "marks-1"}', 'After Truncate') = :m AS same;
SELECT count(*) AS marked FROM cdp.profile_changes WHERE profile_id = :m;
TRUNCATE cdp.profile_changes;
BEGIN;
SELECT cdp.track('{"cookie": "marks-1"}', 'Rolled Back') = :m AS same;
ROLLBACK;
SELECT cdp.track('{"cookie": "marks-1"}', 'After Rollback') = :m AS same;
SELECT count(*) AS marked FROM cdp.profile_changes WHERE profile_id = :m;
TRUNCATE cdp.profile_changes;
BEGIN;
SAVEPOINT s;
SELECT cdp.track('{"cookie": "marks-1"}', 'Rolled Back') = :m AS same;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT cdp.track('{"cookie": "marks-1"}', 'After Savepoint') = :m AS same;
SELECT count(*) AS marked FROM cdp.profile_changes WHERE profile_id = :m;
