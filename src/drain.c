/*-------------------------------------------------------------------------
 *
 * drain.c
 *	  The worker's drain of cdp.inbox, in two transactions per batch, so
 *	  that several drainers keep more than one core busy.
 *
 * Resolution (identifier locks, look-ups, new profiles and identities,
 * merges, traits) must see every earlier batch's outcome, so it runs under
 * the ingest locks and commits before the next resolution starts.  Writing
 * the events, message ids, change marks and rejects needs no such order:
 * a drainer does it in a second transaction while another drainer resolves
 * its own batch.  Between the two, the inbox rows stay in place; the ids a
 * drainer holds are its claims in shared memory, which other drainers skip.
 * cdp.tick() ignores claims: whichever transaction deletes an inbox row
 * owns it, and the writing transaction keeps only the messages whose rows
 * it deleted.
 *
 * The events must land on profiles that still live: a merge, unmerge or
 * erasure that retires or empties a profile must see the events written to
 * it.  So the resolving transaction, before it commits, publishes the
 * profiles the batch will write to as the drainer's writes, in shared
 * memory; anyone who retires profiles waits, once it holds their locks, for
 * the writing transaction of any drainer whose writes name one of them
 * (cdp_wait_for_drain_writers, called by merge.c).  That wait cannot miss a
 * batch: the resolver published while it held the ingest locks that the
 * retirer needs to hold before it looks.  The write takes no row lock and
 * finds every profile of its batch alive.  A crash between the transactions
 * leaves the rows in the inbox; resolving them again finds the identities
 * the first try stored and adds nothing twice.
 *
 * An erasure (cdp.forget) deletes the person's inbox rows, claimed or not,
 * and must not see them come back: a batch read before the erasure may be
 * resolved after it.  cdp.forget locks every identifier of the person and
 * counts erasures in shared memory, before it deletes and again once it
 * has committed; a resolver that finds the count moved since its claim
 * checks, under its identifier locks, that its rows are still there, and
 * leaves the erased messages unresolved (drop_erased).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/wait_event.h"

#include "pg_cdp.h"

/* erasures counted when the current batch was claimed */
static uint64 claim_erasures;

static bool
sorted_contains(const int64 *ids, int n, int64 id)
{
	return n > 0 && bsearch(&id, ids, n, sizeof(int64), cdp_cmp_int64) != NULL;
}

static bool
writes_event(const CdpMessage *m)
{
	return m->err.sqlerrcode == 0 && !m->duplicate;
}

/*
 * The span of the other drainers' claims in this database, or false when
 * they hold none.  A take skips the whole span: rows inside it that nobody
 * claimed (a late commit) wait until the span's batches are written.
 */
static bool
other_claims_span(int slot, int64 *lo, int64 *hi)
{
	bool		any = false;

	LWLockAcquire(cdp_shared->claims_lock, LW_SHARED);
	for (int s = 0; s < cdp_drain_workers; s++)
	{
		int			n = cdp_shared->nclaims[s];

		if (s == slot || n == 0 || cdp_shared->claims_db[s] != MyDatabaseId)
			continue;
		if (!any || CDP_CLAIMS(s)[0] < *lo)
			*lo = CDP_CLAIMS(s)[0];
		if (!any || CDP_CLAIMS(s)[n - 1] > *hi)
			*hi = CDP_CLAIMS(s)[n - 1];
		any = true;
	}
	LWLockRelease(cdp_shared->claims_lock);
	return any;
}

/*
 * Publish ids (sorted) as our claims, minus any another drainer published
 * since we looked: two drainers that took at once keep one copy each.
 * Returns how many ids are left in ids.
 */
static int
publish_claims(int slot, int64 *ids, int n)
{
	int			k = 0;

	LWLockAcquire(cdp_shared->claims_lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		bool		taken = false;

		for (int s = 0; s < cdp_drain_workers && !taken; s++)
			if (s != slot && cdp_shared->claims_db[s] == MyDatabaseId)
				taken = sorted_contains(CDP_CLAIMS(s), cdp_shared->nclaims[s], ids[i]);
		if (!taken)
			ids[k++] = ids[i];
	}
	memcpy(CDP_CLAIMS(slot), ids, sizeof(int64) * k);
	cdp_shared->nclaims[slot] = k;
	cdp_shared->claims_db[slot] = MyDatabaseId;
	LWLockRelease(cdp_shared->claims_lock);
	return k;
}

/*
 * cdp_drain_release drops the claims and the writes of slot: its batch is
 * written, or given up, and its remaining rows are anyone's again.
 */
void
cdp_drain_release(int slot)
{
	if (cdp_shared == NULL)
		return;
	LWLockAcquire(cdp_shared->claims_lock, LW_EXCLUSIVE);
	cdp_shared->nclaims[slot] = 0;
	cdp_shared->nwrites[slot] = 0;
	cdp_shared->writer_xid[slot] = InvalidTransactionId;
	cdp_shared->claims_db[slot] = InvalidOid;
	LWLockRelease(cdp_shared->claims_lock);
}

/*
 * Publish the profiles the batch will write events to as the writes of its
 * drainer.  Called by the resolving transaction, before it commits, while
 * it holds the ingest locks.
 */
static void
publish_writes(CdpDrainBatch *batch)
{
	int64	   *ids = palloc(sizeof(int64) * batch->n);
	int			n = 0;

	for (int i = 0; i < batch->n; i++)
		if (writes_event(&batch->msgs[i]))
			ids[n++] = batch->msgs[i].profile_id;
	n = cdp_sort_unique_int64(ids, n);

	LWLockAcquire(cdp_shared->claims_lock, LW_EXCLUSIVE);
	memcpy(CDP_WRITES(batch->slot), ids, sizeof(int64) * n);
	cdp_shared->nwrites[batch->slot] = n;
	cdp_shared->writer_xid[batch->slot] = InvalidTransactionId;
	LWLockRelease(cdp_shared->claims_lock);
	pfree(ids);
}

/* The writing transaction has begun: whoever waits for it waits on its xid. */
static void
publish_writer(int slot)
{
	TransactionId xid = GetTopTransactionId();

	LWLockAcquire(cdp_shared->claims_lock, LW_EXCLUSIVE);
	cdp_shared->writer_xid[slot] = xid;
	LWLockRelease(cdp_shared->claims_lock);
}

/*
 * cdp_wait_for_drain_writers: profiles ids are about to be retired or to
 * lose rows, and the caller holds their exclusive locks (cdp_lock_keys).
 * Wait until no drainer's writing transaction writes events to any of them.
 *
 * A write that has begun is waited for on its transaction id, as for a row
 * lock: the deadlock detector sees the wait.  A write published but not
 * begun yet (the drainer is between its two transactions, which takes no
 * lock) is polled for, briefly.  Once the write ended, its drainer cannot
 * publish these profiles again while the caller holds their locks.
 */
void
cdp_wait_for_drain_writers(const int64 *ids, int n)
{
	if (cdp_shared == NULL || n == 0)
		return;
	for (int s = 0; s < cdp_drain_workers; s++)
	{
		for (;;)
		{
			TransactionId xid = InvalidTransactionId;
			bool		named = false;

			LWLockAcquire(cdp_shared->claims_lock, LW_SHARED);
			if (cdp_shared->claims_db[s] == MyDatabaseId)
			{
				for (int i = 0; i < n && !named; i++)
					named = sorted_contains(CDP_WRITES(s), cdp_shared->nwrites[s], ids[i]);
				xid = cdp_shared->writer_xid[s];
			}
			LWLockRelease(cdp_shared->claims_lock);

			/* never ourselves: a drainer's writes are empty while it resolves */
			if (!named || TransactionIdIsCurrentTransactionId(xid))
				break;
			if (TransactionIdIsValid(xid))
			{
				XactLockTableWait(xid, NULL, NULL, XLTW_None);
				break;
			}
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/*
 * Claim up to limit unclaimed inbox rows, oldest first, and read them:
 * messages in inbox id order, their number in *n.
 */
static CdpMessage *
claim_rows(int slot, int limit, int *n)
{
	static SPIPlanPtr plan = NULL;
	int64		lo = PG_INT64_MIN;
	int64		hi = PG_INT64_MIN;
	CdpMessage *msgs;
	int64	   *ids;
	int			nread;
	int			k = 0;
	Datum		args[3];

	if (plan == NULL)
	{
		Oid			argtypes[3] = {INT4OID, INT8OID, INT8OID};

		/* two ordered index scans around the span, read until limit rows */
		plan = cdp_prepare("(SELECT inbox_id, message, received_at, source, reject_reason, "
						   "        loaded_by, ctid "
						   " FROM cdp.inbox WHERE inbox_id < $2 ORDER BY inbox_id LIMIT $1) "
						   "UNION ALL "
						   "(SELECT inbox_id, message, received_at, source, reject_reason, "
						   "        loaded_by, ctid "
						   " FROM cdp.inbox WHERE inbox_id > $3 ORDER BY inbox_id LIMIT $1)",
						   3, argtypes);
	}
	(void) other_claims_span(slot, &lo, &hi);
	if (cdp_shared)
		claim_erasures = pg_atomic_read_u64(&cdp_shared->inbox_erasures);
	args[0] = Int32GetDatum(limit);
	args[1] = Int64GetDatum(lo);
	args[2] = Int64GetDatum(hi);
	cdp_spi_exec_limit(plan, args, SPI_OK_SELECT, limit);
	nread = SPI_processed;
	msgs = cdp_inbox_messages_from_spi();
	ids = palloc(sizeof(int64) * Max(nread, 1));
	for (int i = 0; i < nread; i++)
		ids[i] = msgs[i].inbox_id;
	*n = publish_claims(slot, ids, nread);
	/* keep the messages whose claim held */
	for (int i = 0; i < nread; i++)
		if (sorted_contains(ids, *n, msgs[i].inbox_id))
			msgs[k++] = msgs[i];
	return msgs;
}

/*
 * cdp_inbox_erasing: the current transaction is about to delete inbox rows
 * that drainers may have claimed.  Counted now, and again at its end.
 */
void
cdp_inbox_erasing(void)
{
	if (cdp_shared)
		cdp_bump_through_xact(&cdp_shared->inbox_erasures);
}

/*
 * drop_erased runs once the batch's identifier locks are held: an erasure
 * since the claim has committed by now, or waits for this transaction.
 * Messages whose rows it deleted are left unresolved; the writing
 * transaction will not find their rows either and drops them.
 */
static void
drop_erased(CdpMessage *msgs, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *tids;
	int64	   *found;
	int			nfound;
	Datum		args[1];

	if (cdp_shared == NULL ||
		pg_atomic_read_u64(&cdp_shared->inbox_erasures) == claim_erasures)
		return;
	if (plan == NULL)
	{
		Oid			argtypes[1] = {TIDARRAYOID};

		plan = cdp_prepare("SELECT inbox_id FROM cdp.inbox WHERE ctid = ANY($1)",
						   1, argtypes);
	}
	tids = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		tids[i] = PointerGetDatum(&msgs[i].inbox_tid);
	args[0] = PointerGetDatum(construct_array(tids, n, TIDOID, sizeof(ItemPointerData),
											  false, TYPALIGN_SHORT));
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	found = palloc(sizeof(int64) * Max(SPI_processed, 1));
	nfound = cdp_spi_int64_column(found);
	qsort(found, nfound, sizeof(int64), cdp_cmp_int64);
	for (int i = 0; i < n; i++)
		if (msgs[i].err.sqlerrcode == 0 && !sorted_contains(found, nfound, msgs[i].inbox_id))
			cdp_set_error(&msgs[i].err, ERRCODE_NO_DATA_FOUND,
						  "the inbox row was erased while it was resolved", NULL, NULL);
}

static void
resolve_batch(CdpMessage *msgs, int n)
{
	cdp_reset_messages(msgs, n);
	cdp_resolve_messages(msgs, n, true, drop_erased);
	cdp_apply_traits(msgs, n);
}

static char *
copy_str(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

static Jsonb *
copy_jsonb(Jsonb *j)
{
	return j ? DatumGetJsonbPCopy(JsonbPGetDatum(j)) : NULL;
}

/*
 * What the writing transaction needs of a message, copied out of the
 * resolving transaction's memory (SPI's, which its commit frees).  The
 * parsed message is copied before resolution, outside the identifier
 * locks; what resolution decided, after.
 */
static void
copy_error(CdpError *dst, const CdpError *src)
{
	dst->sqlerrcode = src->sqlerrcode;
	dst->message = copy_str(src->message);
	dst->detail = copy_str(src->detail);
	dst->hint = copy_str(src->hint);
}

static void
keep_parsed(CdpMessage *dst, const CdpMessage *src)
{
	memset(dst, 0, sizeof(CdpMessage));
	dst->message_id = copy_str(src->message_id);
	dst->msgtype = copy_str(src->msgtype);
	dst->event = copy_str(src->event);
	dst->channel = copy_str(src->channel);
	dst->properties = copy_jsonb(src->properties);
	dst->context = copy_jsonb(src->context);
	dst->occurred_at = src->occurred_at;
	dst->received_at = src->received_at;
	dst->raw = copy_str(src->raw);
	dst->inbox_id = src->inbox_id;
	dst->inbox_tid = src->inbox_tid;
	dst->inbox_received_at = src->inbox_received_at;
	dst->source = copy_str(src->source);
	copy_error(&dst->err, &src->err);
	dst->node = -1;
}

static void
keep_resolved(CdpMessage *dst, const CdpMessage *src)
{
	/* an error resolution gave (the parse's was kept already) */
	if (src->err.sqlerrcode && dst->err.sqlerrcode == 0)
		copy_error(&dst->err, &src->err);
	dst->duplicate = src->duplicate;
	dst->profile_id = src->profile_id;
	dst->nissues = src->nissues;
	if (src->nissues > 0)
	{
		dst->issues = palloc(sizeof(CdpIssue) * src->nissues);
		for (int j = 0; j < src->nissues; j++)
		{
			dst->issues[j].type = copy_str(src->issues[j].type);
			dst->issues[j].value = copy_str(src->issues[j].value);
			dst->issues[j].reason = copy_str(src->issues[j].reason);
		}
	}
}

/*
 * cdp_drain_resolve claims up to limit inbox rows for slot, parses them and
 * resolves them to profiles; the caller commits, then calls
 * cdp_drain_write in a new transaction.  NULL when the inbox holds nothing
 * unclaimed.  The batch is allocated in keep_cxt, which must outlive the
 * transaction.
 */
CdpDrainBatch *
cdp_drain_resolve(int slot, int limit, MemoryContext keep_cxt)
{
	CdpDrainBatch *batch;
	CdpMessage *msgs;
	MemoryContext old;
	int			n;

	msgs = claim_rows(slot, Min(limit, CDP_MAX_BATCH), &n);
	if (n == 0)
		return NULL;
	cdp_run_isolated(msgs, n, cdp_parse_inbox_batch);

	/* copied now, while another drainer may hold the identifier locks */
	old = MemoryContextSwitchTo(keep_cxt);
	batch = palloc(sizeof(CdpDrainBatch));
	batch->n = n;
	batch->slot = slot;
	batch->msgs = palloc(sizeof(CdpMessage) * n);
	for (int i = 0; i < n; i++)
		keep_parsed(&batch->msgs[i], &msgs[i]);
	MemoryContextSwitchTo(old);

	cdp_run_isolated(msgs, n, resolve_batch);

	old = MemoryContextSwitchTo(keep_cxt);
	for (int i = 0; i < n; i++)
		keep_resolved(&batch->msgs[i], &msgs[i]);
	MemoryContextSwitchTo(old);

	publish_writes(batch);
	return batch;
}

static void
write_batch(CdpMessage *msgs, int n)
{
	/* a failed try may have given ids to messages that had none */
	for (int i = 0; i < n; i++)
	{
		if (msgs[i].id_generated)
		{
			msgs[i].message_id = NULL;
			msgs[i].id_generated = false;
		}
	}
	cdp_write_events(msgs, n);
}

/*
 * cdp_drain_write writes what cdp_drain_resolve resolved, in the caller's
 * (new) transaction.  Returns the number of inbox rows it turned into
 * events, duplicates or rejects; *rejected gets the rejects among them.
 */
int
cdp_drain_write(CdpDrainBatch *batch, int *rejected)
{
	static SPIPlanPtr plan = NULL;
	int64	   *ids = palloc(sizeof(int64) * batch->n);
	Datum	   *tids = palloc(sizeof(Datum) * batch->n);
	int64	   *deleted;
	int			ndeleted;
	CdpMessage *keep;
	int			n = 0;
	int			k = 0;
	Datum		args[1];

	*rejected = 0;
	publish_writer(batch->slot);

	for (int i = 0; i < batch->n; i++)
	{
		tids[n] = PointerGetDatum(&batch->msgs[i].inbox_tid);
		ids[n++] = batch->msgs[i].inbox_id;
	}
	if (n == 0)
		return 0;

	/*
	 * The others are ours once their rows are deleted.  The rows are found
	 * where the take read them (one look at the table's size per batch, no
	 * index probe per row); a row that moved since (an update, VACUUM FULL)
	 * is not found there and waits for a later batch.  A stranger found in
	 * a moved row's place would be a message lost: the transaction fails
	 * instead, and the batch is taken again.
	 */
	if (plan == NULL)
	{
		Oid			argtypes[1] = {TIDARRAYOID};

		plan = cdp_prepare("DELETE FROM cdp.inbox WHERE ctid = ANY($1) RETURNING inbox_id",
						   1, argtypes);
	}
	args[0] = PointerGetDatum(construct_array(tids, n, TIDOID,
											  sizeof(ItemPointerData), false,
											  TYPALIGN_SHORT));
	cdp_spi_exec(plan, args, SPI_OK_DELETE_RETURNING);
	deleted = palloc(sizeof(int64) * Max(SPI_processed, 1));
	ndeleted = cdp_spi_int64_column(deleted);
	for (int i = 0; i < ndeleted; i++)
		if (!sorted_contains(ids, n, deleted[i]))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("inbox row " INT64_FORMAT " was where the drain had read another", deleted[i]),
					 errdetail("The inbox was rewritten while the batch was resolved."),
					 errhint("The batch is taken again in the next round.")));
	qsort(deleted, ndeleted, sizeof(int64), cdp_cmp_int64);
	ids = deleted;
	n = ndeleted;

	keep = palloc(sizeof(CdpMessage) * Max(n, 1));
	for (int i = 0; i < batch->n; i++)
		if (sorted_contains(ids, n, batch->msgs[i].inbox_id))
			keep[k++] = batch->msgs[i];
	cdp_run_isolated(keep, k, write_batch);
	*rejected = cdp_record_rejects(keep, k, "inbox");
	return k;
}
