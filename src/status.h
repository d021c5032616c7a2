/*-------------------------------------------------------------------------
 *
 * status.h
 *	  The worker's status in shared memory: who to wake, its heartbeat and
 *	  its counters (status.c).
 *
 * Writers anywhere in the pipeline wake the worker and count what they
 * did here, so this sits below everything else.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_STATUS_H
#define CDP_STATUS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

/* The worker is drainer 0, its helpers the others (drainers.h). */
#define CDP_MAX_DRAINERS 8

typedef struct CdpStatus
{
	slock_t		mutex;
	pid_t		worker_pid;
	Latch	   *worker_latch;
	Latch	   *drain_latch[CDP_MAX_DRAINERS];	/* helpers' latches */
	TimestampTz worker_started;
	TimestampTz heartbeat;
	uint64		rounds;
	uint64		drained;		/* inbox rows turned into events */
	uint64		rejected;		/* inbox rows turned into rejects */
	uint64		errors;			/* rounds that failed and were rolled back */
	uint64		resolved;		/* messages resolved by the identity engine */
	uint64		resolve_usec;	/* time spent resolving them, all backends */
	uint64		ingest_waits;	/* writers that waited for a drainer's lock */
	int			batch_limit;	/* the worker's current batch size */
	bool		database_missing;	/* connecting to cdp.database failed */
	char		last_error[256];
} CdpStatus;

extern CdpStatus *cdp_status;

extern Size cdp_status_shmem_size(void);
extern void cdp_status_shmem_init(void);

extern void cdp_wake_worker_at_commit(void);
extern void cdp_wake_worker_alone_at_commit(void);
extern void cdp_status_count_resolved(uint64 messages, uint64 usec);
extern void cdp_status_count_ingest_wait(void);

#endif							/* CDP_STATUS_H */
