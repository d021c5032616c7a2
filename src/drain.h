/*-------------------------------------------------------------------------
 *
 * drain.h
 *	  The worker's drain of cdp.inbox, a batch in two transactions
 *	  (drain.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_DRAIN_H
#define CDP_DRAIN_H

#include "postgres.h"

#include "message.h"

typedef struct CdpDrainBatch
{
	CdpMessage *msgs;
	int			n;
	int			slot;			/* the drainer's */
} CdpDrainBatch;

extern void cdp_drain_init(void);
extern CdpDrainBatch *cdp_drain_resolve(int slot, int limit, MemoryContext keep_cxt);
extern int	cdp_drain_write(CdpDrainBatch *batch, int *rejected);

#endif							/* CDP_DRAIN_H */
