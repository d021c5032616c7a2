/*-------------------------------------------------------------------------
 *
 * locks.c
 *	  The ingest locks: one global order, and escalation to one lock.
 *
 * Locking order (DESIGN.md): the global ingest lock, then identifiers,
 * sorted, then profiles in ascending id.  All are transaction-scoped
 * advisory locks in a lock space of our own (field4 of the lock tag), so
 * they never collide with the user's pg_advisory_lock() keys.  Profiles
 * are locked in share mode by a writer that only adds events and in
 * exclusive mode by one that changes the profile's identities or merges
 * it, which is what FOR KEY SHARE and FOR UPDATE on the profile row would
 * give, without touching the heap.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"

#include "locks.h"
#include "status.h"

static int
cmp_uint64(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

typedef struct KeyMode
{
	uint64		key;
	bool		exclusive;
} KeyMode;

static int
cmp_keymode(const void *a, const void *b)
{
	return cmp_uint64(&((const KeyMode *) a)->key, &((const KeyMode *) b)->key);
}

/*
 * Lock escalation.  Every writer first takes the global ingest lock, in
 * share mode, then its fine-grained identifier and profile locks.  A
 * transaction that would need more than CDP_MAX_FINE_LOCKS of those (a bulk
 * batch, or a loop of cdp.track calls in one transaction) takes the global
 * lock in exclusive mode instead and skips them: the lock table holds only
 * some thousands of locks for the whole server, and one bulk batch would
 * otherwise fill it.  While it holds the exclusive lock no other writer
 * runs, so the fine-grained locks have nothing left to order.
 */
#define CDP_MAX_FINE_LOCKS 1024

static LocalTransactionId lock_lxid = InvalidLocalTransactionId;

static int	lock_count = 0;

static bool lock_escalated = false;

static bool lock_global_share = false;

/*
 * A writer that finds the share lock taken (a drainer holds it exclusively)
 * counts its wait, so the drainers keep their batches small while anyone
 * is kept waiting (worker.c).
 */
static void
acquire_global(LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, 0xCD00);
	if (mode == ShareLock &&
		LockAcquire(&tag, mode, false, true) != LOCKACQUIRE_NOT_AVAIL)
		return;
	if (mode == ShareLock)
		cdp_status_count_ingest_wait();
	(void) LockAcquire(&tag, mode, false, false);
}

/* The counts are per transaction. */
static void
new_transaction_check(void)
{
	if (lock_lxid != MyProc->lxid)
	{
		lock_lxid = MyProc->lxid;
		lock_count = 0;
		lock_escalated = false;
		lock_global_share = false;
	}
}

/*
 * cdp_lock_ingest_exclusive takes the global ingest lock exclusively now,
 * before the transaction locks anything else of ours: no other writer
 * resolves until it ends, and its own fine-grained locks are skipped.
 */
void
cdp_lock_ingest_exclusive(void)
{
	new_transaction_check();
	if (lock_escalated)
		return;
	acquire_global(ExclusiveLock);
	lock_escalated = true;
}

/*
 * cdp_locks_escalated: does this transaction hold the global ingest lock in
 * exclusive mode?  Then no other writer can move an identifier or retire a
 * profile until it commits, and what it reads stays true.
 */
bool
cdp_locks_escalated(void)
{
	return lock_escalated && lock_lxid == MyProc->lxid;
}

/*
 * cdp_lock_keys takes transaction-scoped advisory locks on keys, in
 * ascending order, each once.  exclusive may be NULL, meaning every key
 * exclusively (identifiers are always locked so).
 */
void
cdp_lock_keys(uint64 *keys, int n, bool *exclusive, int kind)
{
	KeyMode    *km;
	int			i;

	if (n == 0)
		return;
	new_transaction_check();
	if (lock_escalated)
		return;
	if (lock_count + n > CDP_MAX_FINE_LOCKS)
	{
		acquire_global(ExclusiveLock);
		lock_escalated = true;
		return;
	}
	if (!lock_global_share)
	{
		acquire_global(ShareLock);
		lock_global_share = true;
	}
	lock_count += n;

	km = palloc(sizeof(KeyMode) * n);
	for (i = 0; i < n; i++)
	{
		km[i].key = keys[i];
		km[i].exclusive = exclusive ? exclusive[i] : true;
	}
	qsort(km, n, sizeof(KeyMode), cmp_keymode);

	for (i = 0; i < n; i++)
	{
		LOCKTAG		tag;
		bool		excl = km[i].exclusive;

		/* Merge duplicates: the strongest mode wins. */
		while (i + 1 < n && km[i + 1].key == km[i].key)
		{
			i++;
			excl = excl || km[i].exclusive;
		}
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId,
							 (uint32) (km[i].key >> 32),
							 (uint32) km[i].key,
							 0xCD00 + kind);
		(void) LockAcquire(&tag, excl ? ExclusiveLock : ShareLock, false, false);
		if ((i & 255) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	pfree(km);
}
