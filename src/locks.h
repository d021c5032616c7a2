/*-------------------------------------------------------------------------
 *
 * locks.h
 *	  The ingest locks, taken in one global order, and their escalation
 *	  (locks.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_LOCKS_H
#define CDP_LOCKS_H

#include "postgres.h"

#define CDP_LOCK_IDENTIFIER 1
#define CDP_LOCK_PROFILE	2

extern void cdp_lock_keys(uint64 *keys, int n, bool *exclusive, int kind);
extern bool cdp_locks_escalated(void);
extern void cdp_lock_ingest_exclusive(void);

#endif							/* CDP_LOCKS_H */
