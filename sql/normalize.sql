-- Normalization of identifier values, done in C.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cdp CASCADE;
CREATE EXTENSION pg_cdp;
RESET client_min_messages;

-- email: trimmed, case-folded; invalid values are NULL
SELECT v, cdp.normalize_email(v)
FROM unnest(ARRAY['  Alice@Example.COM ', 'bob@shop.co.uk', 'no-at-sign', '@example.com',
                  'a@b', 'two@@example.com', 'sp ace@example.com', 'x@example..com',
                  'tab@exam' || chr(9) || 'ple.com', 'Zoë@Exämple.de', '', NULL]) AS v;

-- provider rules are off by default, and only apply to known providers
SELECT cdp.normalize_email('John.Doe+promo@GMail.com');
SET cdp.email_provider_rules = on;
SELECT cdp.normalize_email('John.Doe+promo@GMail.com'),
       cdp.normalize_email('j.o.h.n@googlemail.com'),
       cdp.normalize_email('jane+news@outlook.com'),
       cdp.normalize_email('first.last+x@company.com');
RESET cdp.email_provider_rules;

-- phone: E.164 with a default region
SELECT v, cdp.normalize_phone(v)
FROM unnest(ARRAY['(415) 555-2671', '1-415-555-2671', '+44 20 7946 0958', '0044 20 7946 0958',
                  '415.555.2671', '555-2671', '+1 (415) 555-2671 ext. 12', 'call me',
                  '(015) 555-2671', '+0 123 456 789', '', NULL]) AS v;
SELECT cdp.normalize_phone('020 7946 0958', 'GB'), cdp.normalize_phone('06 12 34 56 78', 'FR'),
       cdp.normalize_phone('030 1234567', 'de');
SELECT cdp.normalize_phone('020 7946 0958', 'XX');
SET cdp.default_phone_region = 'GB';
SELECT cdp.normalize_phone('020 7946 0958');
RESET cdp.default_phone_region;

-- the settable clock
SET cdp.fake_now = '2026-03-01 12:00:00+00';
SELECT cdp.now() = '2026-03-01 12:00:00+00'::timestamptz AS fake_clock;
SET cdp.fake_now = 'not a time';
RESET cdp.fake_now;
SELECT cdp.now() = now() AS real_clock;

-- Unicode: case is folded over all of Unicode, as lower() folds it under the
-- ICU root collation, whatever the database's collation (this one is C, where
-- lower() folds ASCII only)
SELECT v, cdp.normalize_email(v),
       cdp.normalize_email(v) = lower(v COLLATE "und-x-icu") AS as_icu_lower
FROM unnest(ARRAY['CHLOÉ.LEFÈVRE@EXAMPLE.FR', 'ÅSA@Exämple.SE', 'ΟΔΥΣΣΕΑΣ@ΠΑΡΑΔΕΙΓΜΑ.ΕΛ',
                  'ПЁТР.ИВАНОВ@ПРИМЕР.РФ', 'ÇAĞLA@ÖRNEK.COM.TR', 'STRAẞE@EXAMPLE.DE',
                  'Straße@Example.DE', 'STRASSE@EXAMPLE.DE']) AS v;
SELECT lower('CHLOÉ.LEFÈVRE@EXAMPLE.FR') AS c_collation_lower;
-- İ (dotted capital I) becomes i + U+0307 COMBINING DOT ABOVE, as Unicode's
-- full lower-case mapping says (Turkish rules would need a Turkish locale);
-- I becomes i, not ı; ß stays ß (folding it to ss would name another domain)
SELECT cdp.normalize_email('İPEK@EXAMPLE.TR') = E'i\u0307pek@example.tr' AS dotted_i,
       cdp.normalize_email('IŞIK@EXAMPLE.TR') = 'işik@example.tr' AS dotless_i,
       cdp.normalize_email('ıŞık@example.tr') = 'ışık@example.tr' AS small_dotless_i_kept,
       cdp.normalize_email('ẞ@EXAMPLE.DE') = 'ß@example.de' AS capital_sharp_s;
-- a final capital sigma becomes ς, as lower() makes it
SELECT cdp.normalize_email('ΣΑΣ@EXAMPLE.GR'), cdp.normalize_email('σας@example.gr');

-- invisible characters are dropped wherever they are: soft hyphen, zero width
-- space, non-joiner and joiner, bidi marks and embeddings, word joiner, byte
-- order mark, combining grapheme joiner, variation selector, tag characters
SELECT to_hex(c) AS code_point,
       cdp.normalize_email('ALI' || chr(c) || 'CE@EXAMPLE.COM' || chr(c)) = 'alice@example.com' AS dropped
FROM unnest(ARRAY[x'AD', x'200B', x'200C', x'200D', x'200E', x'200F', x'202A', x'202E',
                  x'2060', x'2066', x'2069', x'FEFF', x'34F', x'FE0F', x'E0041']::int[]) AS c;
SELECT cdp.normalize_email(E'ALICE@EXAMPLE.COM\u200B') = cdp.normalize_email('alice@example.com')
       AS zwsp_is_alice,
       cdp.normalize_email(E'\u00A0Alice@Example.com\u3000') = 'alice@example.com' AS unicode_spaces_trimmed,
       cdp.normalize_email(E'\u200B@example.com') IS NULL AS nothing_left_of_local_part,
       cdp.normalize_email(E'\u200B\uFEFF') IS NULL AS nothing_left;

-- NFC: é written as e + combining acute is the precomposed é
SELECT cdp.normalize_email(E'CHLOE\u0301@EXAMPLE.FR') = E'chlo\u00E9@example.fr' AS nfd_composed,
       cdp.normalize_email(E'A\u030ASA@EXA\u0308MPLE.SE') = cdp.normalize_email('ÅSA@Exämple.SE') AS nfd_asa,
       cdp.normalize_email(E'chlo\u00E9@example.fr') = E'chlo\u00E9@example.fr' AS nfc_kept;

-- the result is stable: normalizing it again changes nothing
SELECT bool_and(cdp.normalize_email(n) = n) AS stable, bool_and(n IS NFC NORMALIZED) AS nfc
FROM (SELECT cdp.normalize_email(v) AS n
      FROM unnest(ARRAY['CHLOÉ.LEFÈVRE@EXAMPLE.FR', 'İPEK@EXAMPLE.TR', 'ΣΑΣ@EXAMPLE.GR',
                        E'CHLOE\u0301@EXAMPLE.FR', E'\u1E9E\u0130\u03A3@X.DE', E'I\u0307@X.DE',
                        E'\u0345\u0399@X.GR', E'\u1F88@X.GR', E'\u0958@X.IN']) AS v) AS s;

-- the same through every path: cdp.track and cdp.resolve ...
SELECT cdp.track('{"email": "CHLOÉ.LEFÈVRE@EXAMPLE.FR"}', 'Signed Up') AS chloe \gset
SELECT cdp.track('{"email": "chloe\u0301.lefe\u0300vre@example.fr"}', 'Viewed') = :chloe AS nfd_same,
       cdp.identify('{"email": "Chlo\u00e9.Lef\u00e8vre@Example.FR\u200b"}', '{"city": "Lyon"}') = :chloe
       AS zwsp_same,
       cdp.resolve('{"email": "CHLO\u00c9.LEF\u00c8VRE@example.fr"}') = :chloe AS resolved;
SELECT type, value FROM cdp.identities WHERE profile_id = :chloe;
-- ... cdp.ingest_batch ...
SELECT cdp.ingest_batch('[{"type": "identify", "userId": "u-asa", "traits": {"email": "ÅSA@Exämple.SE"}},
    {"type": "track", "event": "Viewed", "anonymousId": "a-asa-1",
     "context": {"traits": {"email": "\u00e5sa@ex\u00e4mple.se\u200b"}}},
    {"type": "track", "event": "Viewed", "anonymousId": "a-asa-2",
     "context": {"traits": {"email": "A\u030asa@EXA\u0308MPLE.SE"}}}]');
SELECT count(DISTINCT profile_id) AS asa_profiles, array_agg(value ORDER BY value) AS asa_ids
FROM cdp.identities WHERE profile_id = cdp.resolve('{"user_id": "u-asa"}');
-- ... the inbox drain ...
INSERT INTO cdp.inbox (message) VALUES
    ('{"type": "track", "event": "Till", "anonymousId": "a-chloe", "context": {"traits": {"email": "\u2060CHLOÉ.LEFÈVRE@EXAMPLE.FR"}}}');
SELECT cdp.tick()->'inbox' AS drained;
SELECT cdp.resolve('{"anonymous_id": "a-chloe"}') = :chloe AS drained_same;
-- ... and cdp.stitch
CREATE TEMP TABLE fold_links (group_id int, type text, value text);
INSERT INTO fold_links VALUES (1, 'email', 'ZOË@EXAMPLE.DE'), (1, 'cookie', 'k-1'),
    (2, 'email', E'zoe\u0308@example.de'), (2, 'cookie', 'k-2'),
    (3, 'email', E'Zo\u00eb@Example.DE\u200d'), (3, 'cookie', 'k-3');
SELECT type, value, component FROM cdp.stitch('fold_links') ORDER BY type, value;

-- the lower normalizer folds the same way
INSERT INTO cdp.identifier_types (type, normalizer, max_per_profile) VALUES ('nickname', 'lower', 1);
SELECT cdp.track('{"nickname": "ÉRIC"}', 'Joined') AS eric \gset
SELECT cdp.track('{"nickname": "e\u0301ric\u200b"}', 'Joined') = :eric AS same_nickname,
       cdp.track('{"nickname": "Éric"}', 'Joined') = :eric AS same_again;
SELECT value FROM cdp.identities WHERE type = 'nickname';
