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
