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
 * memory (drainers.c), which whoever retires profiles waits for.  The
 * write takes no row lock and finds every profile of its batch alive.  A
 * crash between the transactions leaves the rows in the inbox; resolving
 * them again finds the identities the first try stored and adds nothing
 * twice.
 *
 * An erasure (cdp.forget) deletes the person's inbox rows, claimed or not,
 * and must not see them come back: a batch read before the erasure may be
 * resolved after it.  cdp.forget locks every identifier of the person and
 * counts erasures in shared memory, before it deletes and again once it
 * has committed; a resolver that finds the count moved since its claim
 * checks, under its identifier locks, that its rows are still there, and
 * leaves the erased messages unresolved (drop_erased).
 *
 * The drain is the worker's "inbox" task, registered here: the worker and
 * its helpers drive it in two transactions per batch; cdp.tick() drains
 * one batch in its caller's transaction (inbox.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "drain.h"
#include "drainers.h"
#include "inbox.h"
#include "ingest.h"
#include "resolve.h"
#include "status.h"
#include "util.h"
#include "worker.h"

static int	cdp_bulk_batch_size = 10000;
static bool cdp_drain_synchronous_commit = false;

/* erasures counted when the current batch was claimed */
static uint64 claim_erasures;

static bool
writes_event(const CdpMessage *m)
{
	return m->err.sqlerrcode == 0 && !m->duplicate;
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
	(void) cdp_drainers_claims_span(slot, &lo, &hi);
	claim_erasures = cdp_drainers_erasures();
	args[0] = Int32GetDatum(limit);
	args[1] = Int64GetDatum(lo);
	args[2] = Int64GetDatum(hi);
	cdp_spi_exec_limit(plan, args, SPI_OK_SELECT, limit);
	nread = SPI_processed;
	msgs = cdp_inbox_messages_from_spi();
	ids = palloc(sizeof(int64) * Max(nread, 1));
	for (int i = 0; i < nread; i++)
		ids[i] = msgs[i].inbox_id;
	*n = cdp_drainers_claim(slot, ids, nread);
	/* keep the messages whose claim held */
	for (int i = 0; i < nread; i++)
		if (cdp_sorted_contains(ids, *n, msgs[i].inbox_id))
			msgs[k++] = msgs[i];
	return msgs;
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

	if (cdp_drainers_erasures() == claim_erasures)
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
		if (msgs[i].err.sqlerrcode == 0 && !cdp_sorted_contains(found, nfound, msgs[i].inbox_id))
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

	/* the profiles the write will touch, for whoever retires profiles */
	{
		int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
		int			k = 0;

		for (int i = 0; i < n; i++)
			if (writes_event(&batch->msgs[i]))
				ids[k++] = batch->msgs[i].profile_id;
		k = cdp_sort_unique_int64(ids, k);
		cdp_drainers_publish_writes(slot, ids, k);
	}
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
	cdp_drainers_writing(batch->slot);

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
		if (!cdp_sorted_contains(ids, n, deleted[i]))
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
		if (cdp_sorted_contains(ids, n, batch->msgs[i].inbox_id))
			keep[k++] = batch->msgs[i];
	cdp_run_isolated(keep, k, write_batch);
	*rejected = cdp_record_rejects(keep, k, "inbox");
	return k;
}

/*
 * The size of a drainer's next batch.  Resolving a batch holds the ingest
 * lock, which real-time writers (cdp.track and its kin) wait for; a bulk
 * load drains faster in larger batches.  So a drainer starts at
 * cdp.batch_size and doubles while its batches come out full (a backlog)
 * and no writer had to wait for the lock since the last batch, up to
 * cdp.bulk_batch_size; any wait sends it back to cdp.batch_size.
 */
static int
next_batch_size(bool last_full)
{
	static int	size = 0;
	static uint64 waits_seen = 0;
	uint64		waits;

	SpinLockAcquire(&cdp_status->mutex);
	waits = cdp_status->ingest_waits;
	SpinLockRelease(&cdp_status->mutex);
	if (size == 0 || !last_full || waits != waits_seen)
		size = cdp_batch_size;
	else
		size = Min(size * 2, Max(cdp_bulk_batch_size, cdp_batch_size));
	waits_seen = waits;
	return Min(size, CDP_MAX_BATCH);
}

/*
 * The worker's drive of the inbox task: a batch resolved in one
 * transaction and written in the next, so that another drainer can
 * resolve while this one writes.  The batch's claims are dropped
 * afterwards, whatever happened (the task's release).  Unless
 * cdp.drain_synchronous_commit says otherwise, the transactions commit
 * without waiting for their WAL to be flushed, as a logical replication
 * subscriber applies changes: the inbox keeps every row until the
 * transaction that writes its event deletes it, so a crash loses no
 * message, it only undoes the last batches, which are drained again.
 */
static bool last_full = false;

static int64
drive_inbox(int slot, bool *more)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			limit = next_batch_size(last_full);
	CdpDrainBatch *batch = NULL;
	int			taken = 0;
	int			done = 0;
	int			rejected = 0;

	last_full = false;
	if (!cdp_task_begin(!cdp_drain_synchronous_commit))
	{
		cdp_task_commit();
		return 0;
	}
	pgstat_report_activity(STATE_RUNNING, "inbox: resolve");
	SPI_connect();
	if (slot == 0)
	{
		SpinLockAcquire(&cdp_status->mutex);
		cdp_status->batch_limit = limit;
		SpinLockRelease(&cdp_status->mutex);
	}
	/* the batch must outlive this transaction */
	batch = cdp_drain_resolve(slot, limit, cxt);
	SPI_finish();
	cdp_task_commit();
	MemoryContextSwitchTo(cxt);

	if (batch)
	{
		taken = batch->n;
		(void) cdp_task_begin(!cdp_drain_synchronous_commit);
		pgstat_report_activity(STATE_RUNNING, "inbox: write");
		SPI_connect();
		done = cdp_drain_write(batch, &rejected);
		SPI_finish();
		cdp_task_commit();
		MemoryContextSwitchTo(cxt);

		SpinLockAcquire(&cdp_status->mutex);
		cdp_status->drained += done - rejected;
		cdp_status->rejected += rejected;
		SpinLockRelease(&cdp_status->mutex);
	}

	/*
	 * Any rows at all: go on.  A batch can come out short of limit while
	 * the inbox is full, when another drainer claimed some of the same rows
	 * at the same moment.
	 */
	*more = (taken > 0);
	last_full = (taken >= limit);
	return taken;
}

/* cdp.tick()'s drain: one batch in the caller's transaction. */
static int64
task_inbox(bool *more)
{
	int			rejected = 0;
	int			n = cdp_drain_inbox(cdp_batch_size, &rejected);

	*more = (n >= cdp_batch_size);
	return n;
}

static const CdpTask inbox_task = {
	.name = "inbox",
	.run = task_inbox,
	.drive = drive_inbox,
	.release = cdp_drainers_release,
	.helpers = true,
};

void
cdp_drain_init(void)
{
	DefineCustomIntVariable("cdp.bulk_batch_size",
							"Largest batch the drainers grow to while nobody waits for them.",
							"A drainer doubles its batch, from cdp.batch_size, while its batches come out full and no writer had to wait for its lock; a writer that waits sends it back to cdp.batch_size.",
							&cdp_bulk_batch_size, 10000, 1, CDP_MAX_BATCH,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("cdp.drain_synchronous_commit",
							 "Makes the drainers' commits wait for their WAL to reach disk.",
							 "Off by default, and safe: an inbox row is deleted in the transaction that writes its event, so a crash that undoes the last drained batches leaves their rows in the inbox, to be drained again.",
							 &cdp_drain_synchronous_commit, false, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	cdp_register_task(&inbox_task);
}

/*
 * Test hooks: the drain's two transactions, each on its own, so that an
 * isolation spec can put a merge or an erasure between them.
 * cdp.debug_drain_resolve(slot) resolves a batch as drainer slot (in its
 * own transaction: call it alone) and keeps it; cdp.debug_drain_write()
 * writes it in the caller's transaction, whose end drops the claims.  Superusers
 * only, and never beside a worker that uses the same slot.
 */
static CdpDrainBatch *debug_batch = NULL;
static MemoryContext debug_cxt = NULL;
static int	debug_written_slot = -1;
static bool debug_callback = false;

/* As a drainer does: the claims and writes go once the write has ended. */
static void
debug_xact_callback(XactEvent event, void *arg)
{
	if (debug_written_slot < 0)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		cdp_drainers_release(debug_written_slot);
		debug_written_slot = -1;
	}
}

PG_FUNCTION_INFO_V1(cdp_debug_drain_resolve);
Datum
cdp_debug_drain_resolve(PG_FUNCTION_ARGS)
{
	int			slot = PG_GETARG_INT32(0);

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only superusers may drive the drain by hand")));
	if (slot < 0 || slot >= cdp_drain_workers)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("drainer slot must be between 0 and %d", cdp_drain_workers - 1)));
	if (debug_cxt == NULL)
		debug_cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp debug drain",
										  ALLOCSET_DEFAULT_SIZES);
	if (debug_batch)
		cdp_drainers_release(debug_batch->slot);
	MemoryContextReset(debug_cxt);
	SPI_connect();
	debug_batch = cdp_drain_resolve(slot, cdp_batch_size, debug_cxt);
	SPI_finish();
	PG_RETURN_INT32(debug_batch ? debug_batch->n : 0);
}

PG_FUNCTION_INFO_V1(cdp_debug_drain_write);
Datum
cdp_debug_drain_write(PG_FUNCTION_ARGS)
{
	int			rejected = 0;
	int			done;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only superusers may drive the drain by hand")));
	if (debug_batch == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no batch was resolved"),
				 errhint("Call cdp.debug_drain_resolve() first, in a transaction of its own.")));
	if (!debug_callback)
	{
		RegisterXactCallback(debug_xact_callback, NULL);
		debug_callback = true;
	}
	SPI_connect();
	done = cdp_drain_write(debug_batch, &rejected);
	SPI_finish();
	debug_written_slot = debug_batch->slot;
	debug_batch = NULL;
	PG_RETURN_INT32(done);
}
