/*-------------------------------------------------------------------------
 *
 * drainers.h
 *	  The inbox drainers' shared-memory protocol: claims, published writes,
 *	  the writing transaction, the erasure counter (drainers.c).
 *
 * The drain (drain.c) claims and publishes; merges, unmerges and erasures
 * (merge.c, erase.c) wait for the writes they must see and count their
 * erasures; cdp.tick() waits for every write in flight.  Both sides use
 * this module, which depends on nothing of theirs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_DRAINERS_H
#define CDP_DRAINERS_H

#include "postgres.h"

#include "status.h"

/* Largest batch a drainer takes; claims and writes are sized for it. */
#define CDP_MAX_BATCH 20000

extern int	cdp_drain_workers;

extern void cdp_drainers_init(void);
extern Size cdp_drainers_shmem_size(void);
extern void cdp_drainers_shmem_init(void);

/* the drain's side */
extern bool cdp_drainers_claims_span(int slot, int64 *lo, int64 *hi);
extern int	cdp_drainers_claim(int slot, int64 *ids, int n);
extern void cdp_drainers_publish_writes(int slot, const int64 *ids, int n);
extern void cdp_drainers_writing(int slot);
extern void cdp_drainers_release(int slot);
extern uint64 cdp_drainers_erasures(void);

/* the side of those who retire or empty profiles */
extern void cdp_wait_for_drain_writers(const int64 *ids, int n);
extern void cdp_wait_for_all_drain_writers(void);
extern void cdp_inbox_erasing(void);

#endif							/* CDP_DRAINERS_H */
