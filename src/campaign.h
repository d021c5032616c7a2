/*-------------------------------------------------------------------------
 *
 * campaign.h
 *	  Campaigns: a send to a segment's members per run, and the hook by
 *	  which another subsystem (next best action) takes a run instead of
 *	  the campaign's own message (campaign.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_CAMPAIGN_H
#define CDP_CAMPAIGN_H

#include "postgres.h"

#include "utils/jsonb.h"

/*
 * One run of a campaign as cdp.run_campaign hands it to the runners, in
 * the order they registered: its cdp.campaign_runs row exists (run_id) in
 * the caller's transaction.  A runner is called inside run_campaign's SPI
 * connection (it connects again for its own statements) and runs user SQL
 * as owner; one that takes the run fills the counts, which run_campaign
 * writes to the row with finished_at.  What it allocates lives until
 * run_campaign returns.
 */
typedef struct CdpCampaignRun
{
	int64		run_id;
	const char *campaign;		/* name */
	const char *segment;
	const char *run_key;
	Oid			owner;
	int			holdout;		/* percent */
	/* filled by the runner that takes the run */
	int64		audience;
	int64		enqueued;
	int64		held_out;
	Jsonb	   *suppressed;		/* reason -> count, or NULL for none */
} CdpCampaignRun;

/* Returns true when it took the run (e.g. the campaign has offers). */
typedef bool (*CdpCampaignRunner) (CdpCampaignRun *run);
extern void cdp_register_campaign_runner(CdpCampaignRunner runner);

#endif							/* CDP_CAMPAIGN_H */
