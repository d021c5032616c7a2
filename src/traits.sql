-- traits.sql: the customers view (traits.c regenerates it with one typed
-- column per declared and computed trait).

CREATE VIEW cdp.customers AS
    SELECT p.profile_id, p.created_at
    FROM cdp.profiles p;
COMMENT ON VIEW cdp.customers IS
    'One row per living profile, with one typed column per declared and computed trait: what segment predicates and BI tools read';

GRANT SELECT ON cdp.customers TO cdp_analyst;
GRANT SELECT ON cdp.customers TO cdp_admin;
