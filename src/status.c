/*-------------------------------------------------------------------------
 *
 * status.c
 *	  The worker's status board in shared memory: who to wake, its
 *	  heartbeat and its counters.
 *
 * Writers set the worker's latch when they commit (so new inbox rows do not
 * wait for the nap to end), the identity engine and the lock code count
 * what they did, and the worker publishes its heartbeat; cdp.worker_status()
 * and cdp.stats read it all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/shmem.h"

#include "status.h"

CdpStatus  *cdp_status = NULL;

static bool wake_registered = false;
static bool wake_pending = false;
static bool wake_drainers = false;

static void wake_xact_callback(XactEvent event, void *arg);

Size
cdp_status_shmem_size(void)
{
	return MAXALIGN(sizeof(CdpStatus));
}

/* Called with AddinShmemInitLock held. */
void
cdp_status_shmem_init(void)
{
	bool		found;

	cdp_status = ShmemInitStruct("pg_cdp status", cdp_status_shmem_size(), &found);
	if (!found)
	{
		memset(cdp_status, 0, sizeof(CdpStatus));
		SpinLockInit(&cdp_status->mutex);
	}
}

/*
 * Writers call this; the worker's latch is set only once the writing
 * transaction commits, so the worker never wakes to rows it cannot see yet.
 */
void
cdp_wake_worker_at_commit(void)
{
	cdp_wake_worker_alone_at_commit();
	wake_drainers = true;
}

/*
 * The same for work only the worker does (changed profiles for the
 * segments): the drainers sleep on.
 */
void
cdp_wake_worker_alone_at_commit(void)
{
	if (!wake_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		wake_registered = true;
	}
	wake_pending = true;
}

static void
wake_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;
	Latch	   *drainers[CDP_MAX_DRAINERS];

	if (!wake_pending)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		if (cdp_status)
		{
			SpinLockAcquire(&cdp_status->mutex);
			latch = cdp_status->worker_latch;
			memcpy(drainers, cdp_status->drain_latch, sizeof(drainers));
			SpinLockRelease(&cdp_status->mutex);
			for (int i = 1; wake_drainers && i < CDP_MAX_DRAINERS; i++)
				if (drainers[i])
					SetLatch(drainers[i]);
		}
		if (latch)
			SetLatch(latch);
		wake_pending = wake_drainers = false;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_pending = wake_drainers = false;
}

/* Messages the identity engine resolved, and the time it took. */
void
cdp_status_count_resolved(uint64 messages, uint64 usec)
{
	if (cdp_status == NULL)
		return;
	SpinLockAcquire(&cdp_status->mutex);
	cdp_status->resolved += messages;
	cdp_status->resolve_usec += usec;
	SpinLockRelease(&cdp_status->mutex);
}

/*
 * A writer waited for the global ingest lock (a drainer held it): the
 * drainers keep their batches small while anyone is kept waiting.
 */
void
cdp_status_count_ingest_wait(void)
{
	if (cdp_status == NULL)
		return;
	SpinLockAcquire(&cdp_status->mutex);
	cdp_status->ingest_waits++;
	SpinLockRelease(&cdp_status->mutex);
}
