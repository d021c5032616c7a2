-- cdp.renormalize_identities: identities stored before the normalizers
-- folded all of Unicode (0.1.0 folded ASCII letters only and kept invisible
-- characters) are brought to today's normal form, and the profiles that now
-- share an identifier merge, logged with cause 'renormalize'.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;
SET cdp.fake_now = '2026-05-01 10:00:00+00';
INSERT INTO cdp.identifier_types (type, normalizer, max_per_profile) VALUES ('nickname', 'lower', 1);

-- A profile with a cookie, given values as 0.1.0 stored them.
CREATE FUNCTION pg_temp.stored(cookie text, type text, value text) RETURNS bigint
    LANGUAGE sql AS $$
    WITH p AS (SELECT cdp.track(jsonb_build_object('cookie', cookie), 'Seen') AS id)
    INSERT INTO cdp.identities (type, value, profile_id, first_seen_at)
    SELECT type, value, id, '2026-01-01 00:00:00+00' FROM p RETURNING profile_id
$$;

-- 1, 2: one person, whose "CHLOÉ.LEFÈVRE@EXAMPLE.FR" 0.1.0 could not fold
SELECT cdp.track('{"cookie": "k-1", "email": "chloé.lefèvre@example.fr"}', 'Seen');
SELECT pg_temp.stored('k-2', 'email', 'chloÉ.lefÈvre@example.fr');
-- 3: a zero width space made another person; alone, it is only renamed
SELECT pg_temp.stored('k-3', 'email', E'alice@example.com\u200b');
-- 4: two spellings in one profile become one identifier
SELECT pg_temp.stored('k-4', 'email', 'Åsa@exämple.se'), pg_temp.stored('k-4', 'email', 'Åsa@exÄmple.se');
-- 5, 6: a lower type with one per profile: "Éric" and "éric" are one, so they merge
SELECT pg_temp.stored('k-5', 'nickname', 'Éric');
SELECT cdp.track('{"cookie": "k-6", "nickname": "éric"}', 'Seen');
-- 7, 8: emails limited to two per profile, and together they would hold three
SELECT pg_temp.stored('k-7', 'email', 'a7@example.de'), pg_temp.stored('k-7', 'email', 'zoË@example.de');
SELECT cdp.track('{"cookie": "k-8", "email": ["b8@example.de", "zoë@example.de"]}', 'Seen');
-- 9, 10, 11: a chain, 9 and 10 through their email, 10 and 11 through their nickname
SELECT pg_temp.stored('k-9', 'email', 'Éva@example.fr');
SELECT cdp.track('{"cookie": "k-10", "email": "éva@example.fr"}', 'Seen'),
       pg_temp.stored('k-10', 'nickname', 'Ève');
SELECT cdp.track('{"cookie": "k-11", "nickname": "ève"}', 'Seen');
-- 12: invalid today (nothing is left of the local part), 13: blocked today
SELECT pg_temp.stored('k-12', 'email', E'\u200b@example.com');
SELECT pg_temp.stored('k-13', 'email', E'test@test.com\u200b');

UPDATE cdp.identifier_types SET max_per_profile = 2 WHERE type = 'email';
DELETE FROM cdp.profile_changes;
SELECT cdp.renormalize_identities();

SELECT profile_id, type, value, first_seen_at FROM cdp.identities ORDER BY profile_id, type, value;
SELECT merge_id, winner_id, loser_id, cause, event_id, identifiers, loser_identities, loser_members
FROM cdp.merges ORDER BY merge_id;
SELECT profile_id FROM cdp.profiles ORDER BY 1;
SELECT profile_id, count(*) AS events FROM cdp.events GROUP BY 1 ORDER BY 1;
SELECT profile_id, type, value, reason FROM cdp.identifier_issues ORDER BY issue_id;
-- merged and renamed profiles are marked changed for the segment engine
SELECT profile_id, reason FROM cdp.profile_changes ORDER BY 1;

-- today's spellings find the merged profiles
SELECT cdp.resolve('{"email": "CHLOÉ.LEFÈVRE@EXAMPLE.FR"}') AS chloe,
       cdp.resolve('{"email": "ALICE@EXAMPLE.COM"}') AS alice,
       cdp.resolve('{"nickname": "ÉRIC"}') AS eric,
       cdp.resolve('{"nickname": "ÈVE"}') AS eve,
       cdp.resolve('{"cookie": "k-11"}') AS eve_cookie;

-- a second run finds nothing more to rename; the refused merge is still refused
SELECT cdp.renormalize_identities();

-- a renormalize merge is undone like any other
SELECT cdp.unmerge(1) AS restored;
SELECT profile_id, type, value FROM cdp.identities WHERE profile_id IN (1, 2) ORDER BY 1, 2, 3;
SELECT merge_id, undone_at IS NOT NULL AS undone FROM cdp.merges ORDER BY 1;

-- Past some hundreds of values the identifier locks become the global ingest
-- lock, and the owners are read once: 600 old spellings, half of whose
-- people came back with today's spelling as another profile.
SELECT cdp.ingest_batch(jsonb_agg(jsonb_build_object('type', 'track', 'event', 'Bulk',
                                                     'anonymousId', 'bulk-' || i) ORDER BY i))
FROM generate_series(1, 600) i;
INSERT INTO cdp.identities (type, value, profile_id)
SELECT 'email', 'Ünal.' || i || '@example.de', cdp.resolve(jsonb_build_object('anonymous_id', 'bulk-' || i))
FROM generate_series(1, 600) i;
SELECT cdp.ingest_batch(jsonb_agg(jsonb_build_object('type', 'track', 'event', 'Bulk', 'anonymousId', 'again-' || i,
           'context', jsonb_build_object('traits', jsonb_build_object('email', 'ÜNAL.' || i || '@EXAMPLE.DE')))
           ORDER BY i))
FROM generate_series(2, 600, 2) i;
BEGIN;
SELECT cdp.renormalize_identities() - 'scanned' AS did;
SELECT count(*) AS global_lock_held FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = 0 AND objid = 0
  AND mode = 'ExclusiveLock';
COMMIT;
SELECT count(*) FILTER (WHERE value LIKE 'ünal.%') AS renamed,
       count(*) FILTER (WHERE value LIKE 'Ünal.%') AS left_unfolded
FROM cdp.identities;
SELECT count(*) AS same_person FROM generate_series(1, 600) i
WHERE cdp.resolve(jsonb_build_object('email', 'ünal.' || i || '@example.de'))
      = cdp.resolve(jsonb_build_object('anonymous_id', 'bulk-' || i))
  AND (i % 2 = 1 OR cdp.resolve(jsonb_build_object('anonymous_id', 'again-' || i))
                    = cdp.resolve(jsonb_build_object('anonymous_id', 'bulk-' || i)));
SELECT count(*) AS bulk_merges, bool_and(winner_id < loser_id) AS older_won
FROM cdp.merges WHERE cause = 'renormalize' AND identifiers->0->>'value' LIKE 'ünal.%';

RESET cdp.fake_now;
