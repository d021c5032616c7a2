-- demo/generate.sql: the retail data set of `make demo`, built inside
-- PostgreSQL. Seeded (setseed before every statement that draws), so the same
-- people, identifiers and messages come out on every run; only the dates move
-- with now(). Writes schema demo:
--   demo.people   one row per person: the ground truth the report checks
--   demo.lines    one row per JSON line of the bulk file: kind says what it
--                 is, p whose it is, dup marks a re-sent copy and noise a
--                 line that is broken on purpose (the file is sorted by ts)
--   demo.tablets  the shared family tablets (owner and guest)
-- Every identifier belongs to one person, except the shared tablets.
-- Draws happen in subqueries (OFFSET 0), so the JSON is built from plain
-- columns and the helper functions are inlined.
SET max_parallel_workers_per_gather = 0;   -- one scan order, so random() repeats
SET jit = off;
SET synchronous_commit = off;
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS demo CASCADE;
CREATE SCHEMA demo;

CREATE FUNCTION demo.iso(t timestamptz) RETURNS text LANGUAGE sql STABLE
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

-- One address, spelled the way forms and tills send it.
CREATE FUNCTION demo.messy_email(e text, r float8) RETURNS text LANGUAGE sql IMMUTABLE
    RETURN CASE
        WHEN r < 0.40 THEN e
        WHEN r < 0.60 THEN '  ' || initcap(e)
        WHEN r < 0.80 THEN upper(e) || ' '
        ELSE ' ' || initcap(split_part(e, '@', 1)) || '@' || upper(split_part(e, '@', 2)) || '  '
    END;

-- One US number (10 digits), in the formats people type.
CREATE FUNCTION demo.messy_phone(d text, r float8) RETURNS text LANGUAGE sql IMMUTABLE
    RETURN CASE
        WHEN r < 0.30 THEN '(' || substr(d, 1, 3) || ') ' || substr(d, 4, 3) || '-' || substr(d, 7)
        WHEN r < 0.55 THEN '+1 ' || substr(d, 1, 3) || ' ' || substr(d, 4, 3) || ' ' || substr(d, 7)
        WHEN r < 0.75 THEN substr(d, 1, 3) || '.' || substr(d, 4, 3) || '.' || substr(d, 7)
        WHEN r < 0.90 THEN substr(d, 1, 3) || '-' || substr(d, 4, 3) || '-' || substr(d, 7)
        ELSE '+1' || d
    END;

CREATE FUNCTION demo.ext(type text, id text) RETURNS json LANGUAGE sql STABLE
    RETURN json_build_object('id', id, 'type', type);

-- People ---------------------------------------------------------------------
-- 70% have an email; they browse on more than one device, use the app, give a
-- phone or carry a loyalty card far more often than the others. 64% of them
-- (45% of everyone) created an account and have a userId.
SELECT setseed(0.1123) AS seed \gset
CREATE UNLOGGED TABLE demo.people AS
WITH r AS (
    SELECT p, random() AS r_email, random() AS r_acct, random() AS r_cookies,
           random() AS r_dev, random() AS r_phone, random() AS r_loy,
           random() AS r_first, random() AS r_span, random() AS r_active,
           random() AS r_signup, random() AS r_applink,
           1 + floor(random() * 40)::int AS fn, 1 + floor(random() * 40)::int AS ln,
           1 + floor(random() * 8)::int AS dom, 1 + floor(random() * 12)::int AS area
    FROM generate_series(1, 50000) p
    OFFSET 0
), b AS (
    SELECT r.*,
           (ARRAY['Alice','Bruno','Chloe','David','Elena','Farid','Greta','Hugo','Ines','Jonas',
                  'Karin','Luca','Maria','Nils','Olga','Pierre','Quinn','Rosa','Samir','Tanja',
                  'Ugo','Vera','Willem','Xenia','Yusuf','Zoe','Anna','Ben','Clara','Diego',
                  'Emma','Felix','Hanna','Ivan','Julia','Kofi','Lea','Marco','Nora','Omar'])[fn] AS first,
           (ARRAY['Smith','Muller','Rossi','Garcia','Dubois','Jansen','Novak','Silva','Berg','Costa',
                  'Meyer','Ferrari','Lopez','Martin','Visser','Kowalski','Santos','Lind','Moreau','Weber',
                  'Bianchi','Fernandez','Bernard','Bakker','Wojcik','Pereira','Nilsson','Petit','Schulz','Romano',
                  'Sanchez','Durand','Smit','Horvat','Almeida','Dahl','Laurent','Wagner','Greco','Diaz'])[ln] AS last,
           r_email < 0.70 AS has_email,
           now() - interval '365 days' * least(0.999, 0.002 + 1.5 * r_first) AS first_at
    FROM r
), c AS (
    SELECT b.*,
           has_email AND r_acct < 0.643 AS has_account,
           r_dev < CASE WHEN has_email THEN 0.55 ELSE 0.05 END AS has_device,
           r_phone < CASE WHEN has_email THEN 0.67 ELSE 0.10 END AS has_phone,
           r_loy < CASE WHEN has_email THEN 0.46 ELSE 0.10 END AS has_loyalty,
           CASE WHEN has_email THEN 1 + (r_cookies > 0.4)::int + (r_cookies > 0.8)::int
                ELSE 1 + (r_cookies > 0.95)::int END AS n_cookies,
           -- 60% are still active; the others stopped somewhere in their window
           CASE WHEN r_active < 0.60 THEN now() - interval '1 minute' * (2 + 900 * r_span)
                ELSE first_at + (now() - first_at) * (0.1 + 0.9 * r_span) END AS last_at
    FROM b
)
SELECT p, first, last, has_email, has_account, has_device, has_phone, has_loyalty, n_cookies,
       CASE WHEN has_email THEN
           lower(first) || '.' || lower(last) || p || '@' ||
           (ARRAY['gmail.com','example.com','outlook.com','yahoo.com','web.de',
                  'orange.fr','libero.it','proton.me'])[dom]
       END AS email,
       CASE WHEN has_account THEN 'cust-' || lpad(p::text, 6, '0') END AS user_id,
       ARRAY(SELECT md5('cookie:' || p || ':' || k)::uuid::text
             FROM generate_series(1, n_cookies) k ORDER BY k) AS cookies,
       CASE WHEN has_device THEN upper(md5('device:' || p)::uuid::text) END AS device_id,
       CASE WHEN has_device THEN md5('app:' || p)::uuid::text END AS app_anon,
       CASE WHEN has_phone THEN
           (ARRAY['415','212','312','646','718','202','305','617','206','512','303','404'])[area] ||
           (200 + p / 10000)::text || lpad((p % 10000)::text, 4, '0')
       END AS phone,
       CASE WHEN has_loyalty THEN 'LC' || lpad((p * 7 + 1000003)::text, 8, '0') END AS loyalty,
       first_at, last_at,
       CASE WHEN has_account THEN first_at + (last_at - first_at) * 0.5 * r_signup END AS signup_at,
       CASE WHEN has_account AND has_device THEN
           first_at + (last_at - first_at) * (0.5 + 0.5 * r_applink) END AS app_login_at
FROM c;

CREATE UNLOGGED TABLE demo.lines (
    n          bigint GENERATED ALWAYS AS IDENTITY,
    ts         timestamptz NOT NULL,
    p          integer,
    kind       text NOT NULL,
    message_id text,
    line       text NOT NULL,
    dup        boolean NOT NULL DEFAULT false,
    noise      text
);

-- Web page views: the cookie as anonymousId, nothing else -------------------
SELECT setseed(0.21) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, 'page', mid, json_strip_nulls(json_build_object(
           'type', 'page', 'messageId', mid, 'timestamp', demo.iso(ts), 'channel', 'web',
           'anonymousId', cookie, 'name', title,
           'properties', json_build_object('url', 'https://shop.example.com' || path, 'title', title)))::text
FROM (
    SELECT p, cookie, mid, ts,
           (ARRAY['Home','Women','Men','Kids','Shoes','Sale','Store finder','Product'])[pg] AS title,
           (ARRAY['/','/women','/men','/kids','/shoes','/sale','/stores','/p/SKU-'])[pg] ||
               CASE WHEN pg = 8 THEN sku::text ELSE '' END AS path
    FROM (
        SELECT pc.p, pc.cookie, md5('page:' || pc.p || ':' || pc.c || ':' || g) AS mid,
               pc.first_at + (pc.last_at - pc.first_at) * random() AS ts,
               1 + floor(random() * 8)::int AS pg, 1000 + floor(random() * 400)::int AS sku
        FROM (SELECT pp.p, pp.cookies[c] AS cookie, c, pp.first_at, pp.last_at,
                     1 + (random() < 0.04)::int + (random() < 0.01)::int * 2 AS n
              FROM demo.people pp, generate_series(1, pp.n_cookies) c
              OFFSET 0) pc,
             generate_series(1, pc.n) g
        OFFSET 0
    ) x
) y;

-- Web sign-ups and logins: identify with userId + anonymousId + traits ------
SELECT setseed(0.22) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, kind, mid, json_strip_nulls(json_build_object(
           'type', 'identify', 'messageId', mid, 'timestamp', demo.iso(ts), 'channel', 'web',
           'userId', user_id, 'anonymousId', cookie, 'traits', traits, 'context', context))::text
FROM (
    -- the sign-up, on the first browser
    SELECT p, 'signup' AS kind, signup_at AS ts, user_id, cookies[1] AS cookie,
           md5('signup:' || p) AS mid,
           json_build_object('email', demo.messy_email(email, r1),
                             'name', first || ' ' || last, 'first_name', first, 'last_name', last,
                             'phone', CASE WHEN has_phone AND r2 < 0.5
                                           THEN demo.messy_phone(phone, r3) END,
                             'created_at', demo.iso(signup_at),
                             'birth_date', (date '1946-01-01' + abs(hashtext('birth:' || p)) % 21000)::text)
               AS traits,
           NULL::json AS context
    FROM (SELECT pp.*, random() AS r1, random() AS r2, random() AS r3
          FROM demo.people pp WHERE has_account OFFSET 0) x
    UNION ALL
    -- a login on every other browser the person uses, and a few repeat logins
    SELECT p, 'login', signup_at + (last_at - signup_at) * r1, user_id,
           cookies[CASE WHEN c <= n_cookies THEN c ELSE 1 END], md5('login:' || p || ':' || c),
           json_build_object('email', demo.messy_email(email, r2)), NULL
    FROM (SELECT pp.*, c, random() AS r1, random() AS r2
          FROM (SELECT *, n_cookies + (random() < 0.1)::int AS nl
                FROM demo.people WHERE has_account OFFSET 0) pp,
               generate_series(2, pp.nl) c
          OFFSET 0) x
    UNION ALL
    -- "add your loyalty card to your account": the card in context.externalIds
    SELECT p, 'card_link', signup_at + (last_at - signup_at) * r1, user_id, NULL,
           md5('card_link:' || p),
           json_build_object('loyalty_member', true),
           json_build_object('externalIds', json_build_array(demo.ext('loyalty_card', loyalty)))
    FROM (SELECT pp.*, random() AS r0, random() AS r1
          FROM demo.people pp WHERE has_account AND has_loyalty OFFSET 0) x
    WHERE r0 < 0.6
) y;

-- Web carts and orders -------------------------------------------------------
-- Account holders shop logged in; guests give their email at checkout or for
-- the cart reminder (once per browser, which links their browsers); people
-- without an email abandon carts anonymously, and most of those with a
-- loyalty card or a phone order once for click & collect, giving the card
-- for the points and the phone for the pick-up text.
SELECT setseed(0.23) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, kind, mid, json_strip_nulls(json_build_object(
           'type', 'track', 'event', CASE kind WHEN 'cart' THEN 'Cart Abandoned' ELSE 'Order Completed' END,
           'messageId', mid, 'timestamp', demo.iso(ts), 'channel', 'web',
           'userId', user_id, 'anonymousId', cookie,
           'context', CASE WHEN email IS NOT NULL OR phone IS NOT NULL OR card IS NOT NULL THEN
               json_build_object(
                   'traits', CASE WHEN email IS NOT NULL OR phone IS NOT NULL THEN
                                 json_build_object('email', email, 'phone', phone) END,
                   'externalIds', CASE WHEN card IS NOT NULL THEN
                                      json_build_array(demo.ext('loyalty_card', card)) END) END,
           'properties', CASE kind
               WHEN 'cart' THEN json_build_object(
                   'cart_id', 'cart-' || left(mid, 12), 'cart_value', round(value::numeric, 2),
                   'currency', 'EUR',
                   'items', to_json((ARRAY['SKU-' || (1000 + s1), 'SKU-' || (1000 + s2),
                                           'SKU-' || (1000 + s3)])[1:items]))
               ELSE json_build_object(
                   'order_id', 'W' || upper(left(mid, 12)), 'total', round(value::numeric, 2),
                   'currency', 'EUR', 'items', items,
                   'shipping', CASE WHEN card IS NOT NULL OR phone IS NOT NULL
                                    THEN 'click_and_collect' ELSE 'home_delivery' END)
           END))::text
FROM (
    SELECT p, CASE WHEN g <= ncart THEN 'cart' ELSE 'web_order' END AS kind,
           signup_at + (last_at - signup_at) * r1 AS ts, user_id,
           cookies[1 + floor(r2 * n_cookies)::int] AS cookie,
           CASE WHEN g > ncart THEN demo.messy_email(email, r3) END AS email,
           NULL::text AS phone, NULL::text AS card,
           md5('web:' || p || ':' || g) AS mid, 15 + 250 * r4 * r5 AS value,
           1 + floor(r6 * 3)::int AS items, s1, s2, s3
    FROM (SELECT pp.*, g, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                 random() AS r5, random() AS r6, floor(random() * 400)::int AS s1,
                 floor(random() * 400)::int AS s2, floor(random() * 400)::int AS s3
          FROM (SELECT *, (random() < 0.15)::int AS ncart,
                       (random() < 0.25)::int + (random() < 0.05)::int AS norder
                FROM demo.people WHERE has_account OFFSET 0) pp,
               generate_series(1, pp.ncart + pp.norder) g
          OFFSET 0) x
    UNION ALL
    SELECT p, CASE WHEN r0 < 0.5 THEN 'cart' ELSE 'web_order' END,
           first_at + (last_at - first_at) * r1, NULL, cookies[c], demo.messy_email(email, r3),
           NULL, NULL, md5('guest:' || p || ':' || c), 15 + 250 * r4 * r5,
           1 + floor(r6 * 3)::int, s1, s2, s3
    FROM (SELECT pp.*, c, random() AS r0, random() AS r1, random() AS r3, random() AS r4,
                 random() AS r5, random() AS r6, floor(random() * 400)::int AS s1,
                 floor(random() * 400)::int AS s2, floor(random() * 400)::int AS s3
          FROM demo.people pp, generate_series(1, pp.n_cookies) c
          WHERE pp.has_email AND NOT pp.has_account
          OFFSET 0) x
    UNION ALL
    SELECT p, 'cart', first_at + (last_at - first_at) * r1, NULL, cookies[1], NULL, NULL, NULL,
           md5('anoncart:' || p), 15 + 250 * r4 * r5, 1 + floor(r6 * 3)::int, s1, s2, s3
    FROM (SELECT pp.*, random() AS r0, random() AS r1, random() AS r4, random() AS r5,
                 random() AS r6, floor(random() * 400)::int AS s1,
                 floor(random() * 400)::int AS s2, floor(random() * 400)::int AS s3
          FROM demo.people pp WHERE NOT pp.has_email OFFSET 0) x
    WHERE r0 < 0.25
    UNION ALL
    SELECT p, 'web_order', first_at + (last_at - first_at) * r1, NULL, cookies[1], NULL,
           CASE WHEN has_phone THEN demo.messy_phone(phone, r3) END, loyalty,
           md5('collect:' || p), 15 + 250 * r4 * r5, 1 + floor(r6 * 3)::int, 0, 0, 0
    FROM (SELECT pp.*, random() AS r0, random() AS r1, random() AS r3, random() AS r4,
                 random() AS r5, random() AS r6
          FROM demo.people pp
          WHERE NOT pp.has_email AND (pp.has_phone OR pp.has_loyalty) OFFSET 0) x
    WHERE r0 < 0.7
) y;

-- App sessions: the app's anonymousId and the device_id; the userId once the
-- person has logged in to the app. App users without an account opt in to
-- the newsletter with their email, or keep their loyalty card in the app.
SELECT setseed(0.24) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, kind, mid, json_strip_nulls(json_build_object(
           'type', CASE kind WHEN 'app_optin' THEN 'identify' ELSE 'track' END,
           'event', CASE kind WHEN 'app_optin' THEN NULL ELSE 'App Opened' END,
           'messageId', mid, 'timestamp', demo.iso(ts), 'channel', 'app',
           'userId', CASE WHEN app_login_at <= ts THEN user_id END, 'anonymousId', app_anon,
           'traits', CASE kind WHEN 'app_optin' THEN
                         json_build_object('email', demo.messy_email(email, r), 'newsletter', true) END,
           'properties', CASE kind WHEN 'app_optin' THEN NULL ELSE
                             json_build_object('version', CASE WHEN ts > now() - interval '120 days'
                                                               THEN '5.1.2' ELSE '5.0.7' END,
                                               'from_background', r < 0.6) END,
           'context', json_build_object(
               'device', json_build_object('type', CASE WHEN p % 3 = 0 THEN 'ios' ELSE 'android' END),
               'externalIds', CASE WHEN wallet IS NULL
                   THEN json_build_array(demo.ext('device_id', device_id))
                   ELSE json_build_array(demo.ext('device_id', device_id),
                                         demo.ext('loyalty_card', wallet)) END)))::text
FROM (
    SELECT p, 'app' AS kind, first_at + (last_at - first_at) * r1 AS ts, app_anon, device_id,
           user_id, app_login_at, email, CASE WHEN NOT has_email THEN loyalty END AS wallet,
           md5('app:' || p || ':' || g) AS mid, r
    FROM (SELECT pp.*, g, random() AS r1, random() AS r
          FROM (SELECT *, 1 + (random() < 0.08)::int + (random() < 0.02)::int AS n
                FROM demo.people WHERE has_device OFFSET 0) pp,
               generate_series(1, pp.n) g
          OFFSET 0) x
    UNION ALL
    -- account holders log in to the app once; from then on the userId is sent
    SELECT p, 'app', app_login_at, app_anon, device_id, user_id, app_login_at, email, NULL,
           md5('app_login:' || p), r
    FROM (SELECT pp.*, random() AS r FROM demo.people pp
          WHERE has_device AND has_account OFFSET 0) x
    UNION ALL
    SELECT p, 'app_optin', first_at + (last_at - first_at) * r1, app_anon, device_id, NULL,
           NULL, email, NULL, md5('app_optin:' || p), r
    FROM (SELECT pp.*, random() AS r1, random() AS r FROM demo.people pp
          WHERE has_device AND has_email AND NOT has_account OFFSET 0) x
) y;

-- Store purchases: the till sends the receipt number as anonymousId, the
-- loyalty card in context.externalIds, the phone sometimes and the email for
-- an e-receipt (on the first visit always).
SELECT setseed(0.25) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, 'store_order', mid, json_strip_nulls(json_build_object(
           'type', 'track', 'event', 'Order Completed', 'messageId', mid,
           'timestamp', demo.iso(ts), 'channel', 'store', 'anonymousId', 'pos-' || receipt,
           'context', json_build_object(
               'externalIds', json_build_array(demo.ext('loyalty_card', loyalty)),
               'traits', CASE WHEN phone IS NOT NULL OR email IS NOT NULL THEN
                             json_build_object('phone', phone, 'email', email) END),
           'properties', json_build_object(
               'order_id', receipt, 'total', round(value::numeric, 2), 'currency', 'EUR',
               'store_id', store, 'items', items)))::text
FROM (
    SELECT p, first_at + (last_at - first_at) * r1 AS ts, loyalty,
           CASE WHEN has_phone AND (g = 1 OR r2 < 0.3) THEN demo.messy_phone(phone, r3) END AS phone,
           CASE WHEN has_email AND (g = 1 OR r4 < 0.2) THEN demo.messy_email(email, r5) END AS email,
           store, store || '-' || left(md5('receipt:' || p || ':' || g), 12) AS receipt,
           md5('store:' || p || ':' || g) AS mid, 8 + 300 * r6 * r7 AS value, items
    FROM (SELECT pp.*, g, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                 random() AS r5, random() AS r6, random() AS r7,
                 'S' || lpad((1 + floor(random() * 48)::int)::text, 3, '0') AS store,
                 1 + floor(random() * 8)::int AS items
          FROM (SELECT *, 1 + (random() < 0.3)::int + (random() < 0.05)::int AS n
                FROM demo.people WHERE has_loyalty OFFSET 0) pp,
               generate_series(1, pp.n) g
          OFFSET 0) x
) y;

-- Call-center contacts: the call id as anonymousId, the caller's phone, the
-- email when the agent asks (always on the first call), the userId when the
-- agent finds the account.
SELECT setseed(0.26) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, 'call', mid, json_strip_nulls(json_build_object(
           'type', 'track', 'event', 'Call Center Contact', 'messageId', mid,
           'timestamp', demo.iso(ts), 'channel', 'call_center',
           'userId', CASE WHEN has_account AND g > 1 AND ru < 0.3 AND ts > signup_at THEN user_id END,
           'anonymousId', 'call-' || left(mid, 12),
           'context', json_build_object('traits', json_build_object('phone', phone, 'email', email)),
           'properties', json_build_object(
               'reason', (ARRAY['order status','return','delivery delay','loyalty points',
                                'product question','complaint','payment'])[reason],
               'sentiment', CASE WHEN reason = 6 OR s < 0.25 THEN 'negative'
                                 WHEN s < 0.75 THEN 'neutral' ELSE 'positive' END,
               'duration_s', 30 + floor(600 * s * s)::int)))::text
FROM (
    SELECT p, g, has_account, user_id, signup_at, ru, reason, s,
           first_at + (last_at - first_at) * r1 AS ts,
           demo.messy_phone(phone, r2) AS phone,
           CASE WHEN has_email AND (g = 1 OR r3 < 0.4) THEN demo.messy_email(email, r4) END AS email,
           md5('call:' || p || ':' || g) AS mid
    FROM (SELECT pp.*, g, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                 random() AS ru, 1 + floor(random() * 7)::int AS reason, random() AS s
          FROM (SELECT *, CASE WHEN has_loyalty THEN (random() < 0.25)::int ELSE 1 END
                          + (random() < 0.1)::int AS n
                FROM demo.people WHERE has_phone OFFSET 0) pp,
               generate_series(1, pp.n) g
          OFFSET 0) x
) y;

-- Shared family tablets: six pairs of account holders; the second of each
-- pair logs in on the first one's tablet. The user_id limit of 1 keeps the
-- two apart: the tablet stays with its owner, the events go to whoever is
-- logged in.
CREATE UNLOGGED TABLE demo.tablets AS
WITH c AS (
    SELECT p, row_number() OVER (ORDER BY p) AS rn
    FROM demo.people
    WHERE has_account AND has_device
      AND app_login_at < now() - interval '60 days' AND signup_at < now() - interval '90 days'
      AND last_at > now() - interval '1 day'
    ORDER BY p LIMIT 12
)
SELECT a.p AS owner, b.p AS guest
FROM c a JOIN c b ON b.rn = a.rn + 1 AND a.rn % 2 = 1;

SELECT setseed(0.27) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line)
SELECT ts, p, 'tablet', mid, json_strip_nulls(json_build_object(
           'type', 'track', 'event', 'App Opened', 'messageId', mid,
           'timestamp', demo.iso(ts), 'channel', 'app',
           'userId', user_id, 'anonymousId', app_anon,
           'properties', json_build_object('version', '5.1.2', 'from_background', false),
           'context', json_build_object(
               'device', json_build_object('type', 'tablet'),
               'externalIds', json_build_array(demo.ext('device_id', device_id)))))::text
FROM (
    SELECT g.p, o.app_anon, o.device_id, g.user_id,
           greatest(o.app_login_at, g.signup_at) + interval '1 hour'
             + (now() - greatest(o.app_login_at, g.signup_at) - interval '2 hours') * random() AS ts,
           md5('tablet:' || g.p || ':' || i) AS mid
    FROM demo.tablets t
    JOIN demo.people o ON o.p = t.owner
    JOIN demo.people g ON g.p = t.guest,
         generate_series(1, 3) i
    ORDER BY t.owner, i
    OFFSET 0
) x;

-- Noise, about 0.3% of the lines ---------------------------------------------
-- Taken from an evenly spread sample of good lines, in a scrambled order.
CREATE TEMP TABLE sample AS
SELECT n, ts, p, kind, line, row_number() OVER (ORDER BY md5(n::text)) AS k
FROM demo.lines
WHERE n % 160 = 17 AND kind IN ('page', 'cart', 'web_order', 'store_order', 'app');

INSERT INTO demo.lines (ts, p, kind, message_id, line, noise)
-- cut off mid-line, or not JSON at all
SELECT ts, NULL::int, 'noise', NULL::text, left(line, (30 + (k * 7) % 90)::int), 'malformed JSON'
FROM sample WHERE k <= 150
UNION ALL
SELECT ts, NULL, 'noise', NULL,
       CASE WHEN k % 3 = 0 THEN 'undefined'
            WHEN k % 3 = 1 THEN '{"type": "track", "event": "Order Completed", "properties": {"total": 12.5,}, "anonymousId": "x"}'
            ELSE '{''type'': ''page'', ''anonymousId'': ''' || md5(line)::uuid || '''}' END,
       'malformed JSON'
FROM sample WHERE k BETWEEN 151 AND 180
UNION ALL
-- neither userId nor anonymousId
SELECT ts, NULL, 'noise', NULL,
       (line::jsonb - 'anonymousId' - 'userId'
         || jsonb_build_object('messageId', md5('noid:' || n)))::text,
       'no userId or anonymousId'
FROM sample WHERE k BETWEEN 201 AND 320
UNION ALL
-- a type Segment does not have
SELECT ts, NULL, 'noise', NULL,
       (line::jsonb || jsonb_build_object('type', 'pageview', 'messageId', md5('type:' || n)))::text,
       'unknown message type'
FROM sample WHERE k BETWEEN 321 AND 440
UNION ALL
-- timestamps that are not ISO 8601
SELECT ts, NULL, 'noise', NULL,
       (line::jsonb || jsonb_build_object(
           'timestamp', CASE k % 3 WHEN 0 THEN 'last tuesday'
                                   WHEN 1 THEN to_char(ts, 'YYYY-"13"-DD"T"HH24:MI:SS"Z"')
                                   ELSE to_char(ts, 'YYYY-MM-"32T"HH24:MI:SS"Z"') END,
           'messageId', md5('ts:' || n)))::text,
       'bad timestamp'
FROM sample WHERE k BETWEEN 441 AND 560
UNION ALL
-- the placeholder email of a test form, next to a real cookie: kept, minus the email
SELECT ts, p, 'noise', md5('testmail:' || n),
       (line::jsonb - 'userId' || jsonb_build_object(
           'type', 'track', 'event', 'Cart Abandoned',
           'context', jsonb_build_object('traits', jsonb_build_object('email', 'Test@Test.com')),
           'messageId', md5('testmail:' || n)))::text,
       'blocked email'
FROM sample WHERE k BETWEEN 561 AND 710 AND kind IN ('page', 'cart', 'web_order')
UNION ALL
-- the userId a web shop sends when nobody is logged in: kept, minus the userId
SELECT ts, p, 'noise', md5('unknown:' || n),
       (line::jsonb || jsonb_build_object('type', 'identify', 'userId', 'unknown',
                                          'messageId', md5('unknown:' || n)))::text,
       'blocked userId'
FROM sample WHERE k BETWEEN 761 AND 910 AND kind IN ('page', 'cart', 'web_order')
UNION ALL
-- nothing but blocked values: cannot be attributed to anyone
SELECT ts, NULL, 'noise', NULL,
       jsonb_build_object('type', 'identify', 'userId', 'unknown', 'anonymousId', 'null',
                          'traits', jsonb_build_object('email', 'test@test.com'),
                          'messageId', md5('allblocked:' || n),
                          'timestamp', demo.iso(ts), 'channel', 'web')::text,
       'only blocked identifiers'
FROM sample WHERE k BETWEEN 961 AND 990
UNION ALL
-- phone numbers that are not phone numbers (the email still links the call)
SELECT s.ts, pp.p, 'noise', md5('badphone:' || s.n),
       jsonb_build_object('type', 'track', 'event', 'Call Center Contact',
                          'anonymousId', 'call-' || left(md5('badphone:' || s.n), 12),
                          'channel', 'call_center', 'timestamp', demo.iso(s.ts),
                          'messageId', md5('badphone:' || s.n),
                          'context', jsonb_build_object('traits', jsonb_build_object(
                              'email', pp.email,
                              'phone', (ARRAY['12345', '555-CALL-NOW', '(015) 555-0134', '+44 12', 'n/a'])[1 + s.k % 5])),
                          'properties', jsonb_build_object('reason', 'order status', 'sentiment', 'neutral'))::text,
       'invalid phone'
FROM sample s
JOIN demo.people pp ON pp.p = s.p AND pp.has_email
WHERE s.k BETWEEN 991 AND 1100;

-- Re-sends: 1% of the good lines arrive a second time, up to six hours later,
-- with the same messageId ------------------------------------------------------
SELECT setseed(0.29) AS seed \gset
INSERT INTO demo.lines (ts, p, kind, message_id, line, dup)
SELECT least(ts + interval '6 hours' * r, now()), p, kind, message_id, line, true
FROM (SELECT ts, p, kind, message_id, line, random() AS r
      FROM demo.lines WHERE n % 100 = 37 AND noise IS NULL ORDER BY n OFFSET 0) x;

-- What was generated.
\pset footer off
SELECT to_char(count(DISTINCT p) FILTER (WHERE kind <> 'noise'), 'FM999,999') AS people,
       to_char(count(*), 'FM999,999') AS lines,
       to_char(count(*) FILTER (WHERE dup), 'FM999,999') AS "re-sent copies",
       to_char(count(*) FILTER (WHERE noise IS NOT NULL), 'FM999,999') AS "noise lines",
       round(100.0 * count(*) FILTER (WHERE noise IS NOT NULL) / count(*), 2) AS "noise %"
FROM demo.lines;
