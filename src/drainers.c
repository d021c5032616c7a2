/*-------------------------------------------------------------------------
 *
 * drainers.c
 *	  The inbox drainers' shared-memory protocol.
 *
 * A drainer resolves a batch in one transaction and writes its events in
 * the next (drain.c).  In between, the inbox ids it holds are its claims,
 * which the other drainers skip, and the profiles it is about to write to
 * are its writes: anyone who retires or empties profiles (merge.c,
 * erase.c) waits, once it holds their locks, for the writing transaction
 * of any drainer whose writes name one of them.  That wait cannot miss a
 * batch: the resolver publishes while it holds the ingest locks that the
 * retirer needs to hold before it looks.  The write itself takes no lock
 * on the profile rows.
 *
 * An erasure counts itself here, before it deletes inbox rows and again
 * once it has ended; a resolver that finds the count moved since its claim
 * checks that its rows are still there.
 *
 * The worker is slot 0, its helpers (cdp.drain_workers - 1) the others.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

#include "drainers.h"
#include "util.h"

typedef struct CdpDrainers
{
	LWLock	   *lock;
	Oid			db[CDP_MAX_DRAINERS];
	int			nclaims[CDP_MAX_DRAINERS];	/* sorted ids: CLAIMS(slot) */
	int			nwrites[CDP_MAX_DRAINERS];	/* sorted ids: WRITES(slot) */
	TransactionId writer_xid[CDP_MAX_DRAINERS]; /* the writing xact, once begun */
	pg_atomic_uint64 inbox_erasures;	/* cdp.forget's deletions of inbox rows */
} CdpDrainers;

int			cdp_drain_workers = 2;

static CdpDrainers *drainers = NULL;

#define CLAIMS(slot) \
	((int64 *) ((char *) drainers + MAXALIGN(sizeof(CdpDrainers))) + (slot) * CDP_MAX_BATCH)
#define WRITES(slot) (CLAIMS(cdp_drain_workers) + (slot) * CDP_MAX_BATCH)

void
cdp_drainers_init(void)
{
	DefineCustomIntVariable("cdp.drain_workers",
							"Processes that drain the inbox: the worker and its helpers.",
							"Each resolves a batch while another writes the events of its own, so the bulk path uses more than one core.",
							&cdp_drain_workers, 2, 1, CDP_MAX_DRAINERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

Size
cdp_drainers_shmem_size(void)
{
	/* each drainer's claims, then each drainer's writes */
	return add_size(MAXALIGN(sizeof(CdpDrainers)),
					mul_size(mul_size(2 * cdp_drain_workers, CDP_MAX_BATCH), sizeof(int64)));
}

/* Called with AddinShmemInitLock held; the tranche was requested. */
void
cdp_drainers_shmem_init(void)
{
	bool		found;

	drainers = ShmemInitStruct("pg_cdp drainers", cdp_drainers_shmem_size(), &found);
	if (!found)
	{
		memset(drainers, 0, sizeof(CdpDrainers));
		pg_atomic_init_u64(&drainers->inbox_erasures, 0);
		drainers->lock = &(GetNamedLWLockTranche("pg_cdp drainers"))->lock;
	}
}

/*
 * The span of the other drainers' claims in this database, or false when
 * they hold none.  A take skips the whole span: rows inside it that nobody
 * claimed (a late commit) wait until the span's batches are written.
 */
bool
cdp_drainers_claims_span(int slot, int64 *lo, int64 *hi)
{
	bool		any = false;

	LWLockAcquire(drainers->lock, LW_SHARED);
	for (int s = 0; s < cdp_drain_workers; s++)
	{
		int			n = drainers->nclaims[s];

		if (s == slot || n == 0 || drainers->db[s] != MyDatabaseId)
			continue;
		if (!any || CLAIMS(s)[0] < *lo)
			*lo = CLAIMS(s)[0];
		if (!any || CLAIMS(s)[n - 1] > *hi)
			*hi = CLAIMS(s)[n - 1];
		any = true;
	}
	LWLockRelease(drainers->lock);
	return any;
}

/*
 * Publish ids (sorted) as our claims, minus any another drainer published
 * since we looked: two drainers that took at once keep one copy each.
 * Returns how many ids are left in ids.
 */
int
cdp_drainers_claim(int slot, int64 *ids, int n)
{
	int			k = 0;

	LWLockAcquire(drainers->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		bool		taken = false;

		for (int s = 0; s < cdp_drain_workers && !taken; s++)
			if (s != slot && drainers->db[s] == MyDatabaseId)
				taken = cdp_sorted_contains(CLAIMS(s), drainers->nclaims[s], ids[i]);
		if (!taken)
			ids[k++] = ids[i];
	}
	memcpy(CLAIMS(slot), ids, sizeof(int64) * k);
	drainers->nclaims[slot] = k;
	drainers->db[slot] = MyDatabaseId;
	LWLockRelease(drainers->lock);
	return k;
}

/*
 * cdp_drainers_release drops the claims and the writes of slot: its batch is
 * written, or given up, and its remaining rows are anyone's again.
 */
void
cdp_drainers_release(int slot)
{
	if (drainers == NULL)
		return;
	LWLockAcquire(drainers->lock, LW_EXCLUSIVE);
	drainers->nclaims[slot] = 0;
	drainers->nwrites[slot] = 0;
	drainers->writer_xid[slot] = InvalidTransactionId;
	drainers->db[slot] = InvalidOid;
	LWLockRelease(drainers->lock);
}

/*
 * Publish ids (sorted, unique) as the profiles slot's batch will write
 * events to.  Called by the resolving transaction, before it commits,
 * while it holds the ingest locks.
 */
void
cdp_drainers_publish_writes(int slot, const int64 *ids, int n)
{
	LWLockAcquire(drainers->lock, LW_EXCLUSIVE);
	memcpy(WRITES(slot), ids, sizeof(int64) * n);
	drainers->nwrites[slot] = n;
	drainers->writer_xid[slot] = InvalidTransactionId;
	LWLockRelease(drainers->lock);
}

/* The writing transaction has begun: whoever waits for it waits on its xid. */
void
cdp_drainers_writing(int slot)
{
	TransactionId xid = GetTopTransactionId();

	LWLockAcquire(drainers->lock, LW_EXCLUSIVE);
	drainers->writer_xid[slot] = xid;
	LWLockRelease(drainers->lock);
}

/*
 * Wait until drainer s no longer writes to any of ids (NULL: to anything).
 *
 * A write that has begun is waited for on its transaction id, as for a row
 * lock: the deadlock detector sees the wait.  A write published but not
 * begun yet (the drainer is between its two transactions, which takes no
 * lock) is polled for, briefly.
 */
static void
wait_for_writer(int s, const int64 *ids, int n)
{
	for (;;)
	{
		TransactionId xid = InvalidTransactionId;
		bool		named = false;

		LWLockAcquire(drainers->lock, LW_SHARED);
		if (drainers->db[s] == MyDatabaseId)
		{
			if (ids == NULL)
				named = drainers->nwrites[s] > 0;
			for (int i = 0; i < n && !named; i++)
				named = cdp_sorted_contains(WRITES(s), drainers->nwrites[s], ids[i]);
			xid = drainers->writer_xid[s];
		}
		LWLockRelease(drainers->lock);

		/* never ourselves: a drainer's writes are empty while it resolves */
		if (!named || TransactionIdIsCurrentTransactionId(xid))
			return;
		if (TransactionIdIsValid(xid))
		{
			XactLockTableWait(xid, NULL, NULL, XLTW_None);
			return;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * cdp_wait_for_drain_writers: profiles ids (sorted) are about to be retired
 * or to lose rows, and the caller holds their exclusive locks
 * (cdp_lock_keys).  Wait until no drainer's writing transaction writes
 * events to any of them.  Once the write ended, its drainer cannot publish
 * these profiles again while the caller holds their locks.
 */
void
cdp_wait_for_drain_writers(const int64 *ids, int n)
{
	if (drainers == NULL || n == 0)
		return;
	for (int s = 0; s < cdp_drain_workers; s++)
		wait_for_writer(s, ids, n);
}

/*
 * cdp_wait_for_all_drain_writers waits until no drainer of this database
 * has a batch resolved and not yet written.  The caller holds the global
 * ingest lock exclusively, so no drainer can resolve (and publish) another
 * batch until it ends: afterwards no drainer's write is in flight for the
 * rest of the caller's transaction.
 */
void
cdp_wait_for_all_drain_writers(void)
{
	if (drainers == NULL)
		return;
	for (int s = 0; s < cdp_drain_workers; s++)
		wait_for_writer(s, NULL, 0);
}

/*
 * cdp_inbox_erasing: the current transaction is about to delete inbox rows
 * that drainers may have claimed.  Counted now, and again at its end.
 */
void
cdp_inbox_erasing(void)
{
	if (drainers)
		cdp_bump_through_xact(&drainers->inbox_erasures);
}

/* The erasures counted so far: a drainer notes it when it claims. */
uint64
cdp_drainers_erasures(void)
{
	return drainers ? pg_atomic_read_u64(&drainers->inbox_erasures) : 0;
}
