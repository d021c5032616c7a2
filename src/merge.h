/*-------------------------------------------------------------------------
 *
 * merge.h
 *	  Carrying out the merges the identity engine plans (merge.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_MERGE_H
#define CDP_MERGE_H

#include "postgres.h"

#include "message.h"

typedef struct CdpMergeStep
{
	int64		winner;
	int64		loser;
	int			msg;			/* index of the causing message */
	int64	   *members;		/* stored profiles the loser was made of */
	int			nmembers;
	char	  **extra_types;	/* identifiers the batch gave the loser before */
	char	  **extra_values;
	int			nextra;
} CdpMergeStep;

extern void cdp_merge_init(void);
extern void cdp_lock_profile_rows(int64 *ids, int n);
extern void cdp_execute_merges(CdpMessage *msgs, CdpMergeStep *steps, int nsteps);

#endif							/* CDP_MERGE_H */
