-- campaign.sql: campaigns, one send to a segment's members at a time, and
-- their runs, by hand or scheduled through pg_cron (campaign.c owns it).

-- A campaign: its audience is the members of a segment when it runs.
-- Without a channel and a template it has no message of its own: a
-- registered runner (next best action) arbitrates offers for it.
CREATE TABLE cdp.campaigns (
    campaign_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    segment     text NOT NULL,
    channel     text,
    template    text,
    payload     jsonb NOT NULL DEFAULT '{}',
    holdout     integer NOT NULL DEFAULT 0 CHECK (holdout BETWEEN 0 AND 100),
    owner       oid NOT NULL,
    schedule    text,
    cron_job    bigint,
    created_at  timestamptz NOT NULL DEFAULT cdp.now()
);
COMMENT ON TABLE cdp.campaigns IS
    'Campaigns: a send to the members of a segment when run (its channel and template, or offers when both are NULL), the share held out as control, the owner whose rights its sends run with, its pg_cron schedule';

-- One row per run: a run key is spent once per campaign name.
CREATE TABLE cdp.campaign_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign    text NOT NULL,
    run_key     text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    audience    bigint,
    enqueued    bigint,
    held_out    bigint,
    suppressed  jsonb NOT NULL DEFAULT '{}',
    UNIQUE (campaign, run_key)
);
COMMENT ON TABLE cdp.campaign_runs IS
    'Every run of every campaign: its key, when it started and finished, the audience, the messages enqueued, the profiles held out, the messages policy suppressed by reason';

CREATE FUNCTION cdp.create_campaign(name text, segment text, channel text DEFAULT NULL,
                                    template text DEFAULT NULL, payload jsonb DEFAULT '{}',
                                    holdout integer DEFAULT 0)
    RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_create_campaign';
COMMENT ON FUNCTION cdp.create_campaign(text, text, text, text, jsonb, integer) IS
    'A campaign to the members of a segment: one message (channel and template, with the payload), or none when offers arbitrate; holdout is the percentage kept as control, sticky per profile. Returns its id';

CREATE FUNCTION cdp.drop_campaign(name text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_drop_campaign';
COMMENT ON FUNCTION cdp.drop_campaign(text) IS
    'Drops a campaign and its pg_cron job; its runs stay in cdp.campaign_runs';

CREATE FUNCTION cdp.run_campaign(name text, run_key text DEFAULT NULL) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_run_campaign';
COMMENT ON FUNCTION cdp.run_campaign(text, text) IS
    'Runs a campaign once for the run key (1 to 100 bytes, no slash; NULL: the current minute in UTC, as 2026-12-02T16:05Z): every member of its segment not held out gets its message through cdp.enqueue and the contact policy. A run key already run returns that run''s id and sends nothing';

CREATE FUNCTION cdp.schedule_campaign(name text, cron text) RETURNS bigint
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_schedule_campaign';
COMMENT ON FUNCTION cdp.schedule_campaign(text, text) IS
    'Schedules a campaign through pg_cron (cron.schedule, in GMT), replacing its previous schedule; each run''s key is the minute it starts. Returns the pg_cron job id';

CREATE FUNCTION cdp.unschedule_campaign(name text) RETURNS boolean
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, cdp, pg_temp
    AS 'MODULE_PATHNAME', 'cdp_unschedule_campaign';
COMMENT ON FUNCTION cdp.unschedule_campaign(text) IS
    'Removes a campaign''s pg_cron job; false when it had none';

SELECT pg_catalog.pg_extension_config_dump('cdp.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaigns_campaign_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaign_runs', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.campaign_runs_run_id_seq', '');

REVOKE ALL ON FUNCTION cdp.create_campaign(text, text, text, text, jsonb, integer),
    cdp.drop_campaign(text), cdp.run_campaign(text, text), cdp.schedule_campaign(text, text),
    cdp.unschedule_campaign(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_campaign(text, text, text, text, jsonb, integer),
    cdp.drop_campaign(text), cdp.run_campaign(text, text), cdp.schedule_campaign(text, text),
    cdp.unschedule_campaign(text) TO cdp_admin;
GRANT SELECT ON cdp.campaigns, cdp.campaign_runs TO cdp_analyst, cdp_admin;
