/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database background worker, cdp.tick() and the worker status.
 *
 * A round of work is a list of independent tasks (tasks[] below); later
 * concepts (dirty segments, due journey steps, expired outbox leases) add
 * theirs there.  The worker runs each task in its own transaction, catches
 * its errors so that one bad round cannot kill the loop, and sleeps on its
 * latch for cdp.naptime when no task found work.  Writers set the latch at
 * commit (pg_cdp.c), so new inbox rows do not wait for the nap to end.
 * cdp.tick() runs one round in the caller's transaction, which is how
 * pg_cron, a server without the worker, and time-driven tests drive it.
 *
 * The worker drains the inbox in two transactions per batch (drain.c), and
 * cdp.drain_workers - 1 helpers (cdp_drain_main) do the same beside it: one
 * resolves its batch while another writes the events of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "pg_cdp.h"

PGDLLEXPORT void cdp_worker_main(Datum main_arg);
PGDLLEXPORT void cdp_drain_main(Datum main_arg);

/*
 * A task does one bounded unit of work and returns how much it did; a
 * task that returns a full unit (more > 0) asks for another round at once.
 */
typedef struct CdpTask
{
	const char *name;
	int64		(*run) (bool *more);
} CdpTask;

static int64 task_inbox(bool *more);
static int64 task_partitions(bool *more);

static const CdpTask tasks[] = {
	{"inbox", task_inbox},
	{"partitions", task_partitions},
};

/* cdp.tick()'s drain: one batch in the caller's transaction. */
static int64
task_inbox(bool *more)
{
	int			rejected = 0;
	int			n = cdp_drain_inbox(cdp_batch_size, &rejected);

	*more = (n >= cdp_batch_size);
	return n;
}

/* Month partitions of cdp.events: a few ahead, checked once a minute. */
static int64
task_partitions(bool *more)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			rc;
	bool		isnull;

	*more = false;
	if (IsBackgroundWorker && last != 0 && !TimestampDifferenceExceeds(last, now, 60 * 1000))
		return 0;
	last = now;
	rc = SPI_execute("SELECT cdp.create_event_partitions(date_trunc('month', cdp.now())::date - 31, 4)",
					 false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: partition maintenance failed");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &isnull));
}

/*
 * cdp.tick() → jsonb: one round of every task in the caller's transaction.
 */
PG_FUNCTION_INFO_V1(cdp_tick);
Datum
cdp_tick(PG_FUNCTION_ARGS)
{
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	SPI_connect();
	for (int t = 0; t < lengthof(tasks); t++)
	{
		bool		more = false;
		int64		done = tasks[t].run(&more);

		appendStringInfo(&out, "%s\"%s\": " INT64_FORMAT, t ? ", " : "", tasks[t].name, done);
	}
	SPI_finish();
	appendStringInfoChar(&out, '}');
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}

static void
report_error(const char *task)
{
	ErrorData  *ed;

	ed = CopyErrorData();
	if (cdp_shared)
	{
		SpinLockAcquire(&cdp_shared->mutex);
		cdp_shared->errors++;
		snprintf(cdp_shared->last_error, sizeof(cdp_shared->last_error), "%s: %s",
				 task, ed->message);
		SpinLockRelease(&cdp_shared->mutex);
	}
	FreeErrorData(ed);
}

/* Run one task in its own transaction; false when it failed. */
static bool
run_task(const CdpTask *task, bool *more, bool *extension_missing)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	*more = false;
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (!OidIsValid(get_extension_oid("pg_cdp", true)))
			*extension_missing = true;
		else
		{
			pgstat_report_activity(STATE_RUNNING, task->name);
			SPI_connect();
			task->run(more);
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();

		/*
		 * A worker reports its table statistics itself, or autovacuum never
		 * analyzes what it fills and cached plans think the tables empty.
		 */
		pgstat_report_stat(false);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		report_error(task->name);
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
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

	SpinLockAcquire(&cdp_shared->mutex);
	waits = cdp_shared->ingest_waits;
	SpinLockRelease(&cdp_shared->mutex);
	if (size == 0 || !last_full || waits != waits_seen)
		size = cdp_batch_size;
	else
		size = Min(size * 2, Max(cdp_bulk_batch_size, cdp_batch_size));
	waits_seen = waits;
	return Min(size, CDP_MAX_BATCH);
}

/*
 * Start one of the drain's transactions.  Unless cdp.drain_synchronous_commit
 * says otherwise, it commits without waiting for its WAL to be flushed, as a
 * logical replication subscriber applies changes: the inbox keeps every row
 * until the transaction that writes its event deletes it, so a crash loses
 * no message, it only undoes the last batches, which are drained again.
 */
static void
start_drain_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!cdp_drain_synchronous_commit)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * The workers' drain: a batch resolved in one transaction and written in
 * the next (drain.c), so that another drainer can resolve while this one
 * writes.  Whatever happens, the batch's claims are dropped at the end.
 */
static bool
run_drain(int slot, bool *more, bool *extension_missing)
{
	static bool last_full = false;
	int			limit = next_batch_size(last_full);

	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	*more = false;
	PG_TRY();
	{
		CdpDrainBatch *batch = NULL;
		int			taken = 0;
		int			done = 0;
		int			rejected = 0;

		start_drain_transaction();
		if (!OidIsValid(get_extension_oid("pg_cdp", true)))
			*extension_missing = true;
		else
		{
			pgstat_report_activity(STATE_RUNNING, "inbox: resolve");
			SPI_connect();
			/* the batch must outlive this transaction */
			if (slot == 0)
			{
				SpinLockAcquire(&cdp_shared->mutex);
				cdp_shared->batch_limit = limit;
				SpinLockRelease(&cdp_shared->mutex);
			}
			batch = cdp_drain_resolve(slot, limit, cxt);
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);

		if (batch)
		{
			taken = batch->n;
			start_drain_transaction();
			pgstat_report_activity(STATE_RUNNING, "inbox: write");
			SPI_connect();
			done = cdp_drain_write(batch, &rejected);
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
			MemoryContextSwitchTo(cxt);

			SpinLockAcquire(&cdp_shared->mutex);
			cdp_shared->drained += done - rejected;
			cdp_shared->rejected += rejected;
			SpinLockRelease(&cdp_shared->mutex);
		}
		/*
		 * Any rows at all: go on.  A batch can come out short of
		 * cdp.batch_size while the inbox is full, when another drainer
		 * claimed some of the same rows at the same moment.
		 */
		*more = (taken > 0);
		last_full = (taken >= limit);

		/* see run_task */
		pgstat_report_stat(false);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		last_full = false;
		EmitErrorReport();
		report_error("inbox");
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	cdp_drain_release(slot);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/*
 * Every batch allocates and frees some megabytes; keep them in the heap
 * instead of mapping fresh zeroed pages for each batch.
 */
static void
keep_batches_in_heap(void)
{
#ifdef __GLIBC__
	mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
#endif
}

/* Start of a round: settings reloaded on SIGHUP, a fresh round context. */
static void
begin_round(MemoryContext round_cxt)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	MemoryContextReset(round_cxt);
	MemoryContextSwitchTo(round_cxt);
}

/*
 * End of a round: straight on when there is more to do, else sleep on the
 * latch for cdp.naptime, or longer after repeated failures rather than
 * spin on them.
 */
static void
end_round(bool more, int failures)
{
	long		nap = cdp_naptime;

	if (failures > 0)
		nap = Min((long) cdp_naptime * (1L << Min(failures, 6)), 60000L);
	else if (more)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 nap, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* The latch dies with the process: writers must stop setting it. */
static void
worker_detach(int code, Datum arg)
{
	SpinLockAcquire(&cdp_shared->mutex);
	cdp_shared->worker_pid = 0;
	cdp_shared->worker_latch = NULL;
	SpinLockRelease(&cdp_shared->mutex);
	cdp_drain_release(0);
}

/*
 * The worker and its helpers connect as the bootstrap superuser.  Whatever
 * they run must resolve only to pg_catalog and cdp, which no other role can
 * write to: a function another role planted in public would otherwise be a
 * closer match for an argument type (public.unnest(text[]) beats
 * pg_catalog.unnest(anyarray)) and run as superuser.  The override source
 * outranks the database's and role's defaults and survives reloads.
 */
static void
connect_worker(void)
{
	BackgroundWorkerInitializeConnection(cdp_database, NULL, 0);
	SetConfigOption("search_path", "pg_catalog, cdp, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
}

void
cdp_worker_main(Datum main_arg)
{
	MemoryContext round_cxt;
	int			failures = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	connect_worker();

	SpinLockAcquire(&cdp_shared->mutex);
	cdp_shared->worker_pid = MyProcPid;
	cdp_shared->worker_latch = &MyProc->procLatch;
	cdp_shared->worker_started = GetCurrentTimestamp();
	SpinLockRelease(&cdp_shared->mutex);
	on_shmem_exit(worker_detach, (Datum) 0);
	keep_batches_in_heap();

	ereport(LOG, (errmsg("pg_cdp worker started in database \"%s\"", cdp_database)));
	round_cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp worker round",
									  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		bool		busy = false;
		bool		missing = false;
		bool		round_failed = false;

		begin_round(round_cxt);
		for (int t = 0; t < lengthof(tasks) && !missing && cdp_worker_enabled; t++)
		{
			bool		more = false;

			/* the inbox task of a worker spans two transactions */
			if (!(tasks[t].run == task_inbox ?
				  run_drain(0, &more, &missing) :
				  run_task(&tasks[t], &more, &missing)))
				round_failed = true;
			busy = busy || more;
			MemoryContextSwitchTo(round_cxt);
		}
		/* A round with any failed task counts, so a poison task backs off. */
		failures = round_failed ? failures + 1 : 0;

		SpinLockAcquire(&cdp_shared->mutex);
		cdp_shared->heartbeat = GetCurrentTimestamp();
		cdp_shared->rounds++;
		SpinLockRelease(&cdp_shared->mutex);

		end_round(busy, failures);
	}
}

static void
drain_detach(int code, Datum arg)
{
	SpinLockAcquire(&cdp_shared->mutex);
	cdp_shared->drain_latch[DatumGetInt32(arg)] = NULL;
	SpinLockRelease(&cdp_shared->mutex);
	cdp_drain_release(DatumGetInt32(arg));
}

/*
 * A helper of the worker (cdp.drain_workers - 1 of them): it only drains
 * the inbox, beside the worker, and sleeps when the inbox is empty.
 */
void
cdp_drain_main(Datum main_arg)
{
	int			slot = DatumGetInt32(main_arg);
	MemoryContext round_cxt;
	int			failures = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	connect_worker();

	SpinLockAcquire(&cdp_shared->mutex);
	cdp_shared->drain_latch[slot] = &MyProc->procLatch;
	SpinLockRelease(&cdp_shared->mutex);
	on_shmem_exit(drain_detach, Int32GetDatum(slot));
	keep_batches_in_heap();
	round_cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp drain round",
									  ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		bool		more = false;
		bool		missing = false;

		begin_round(round_cxt);
		if (cdp_worker_enabled)
			failures = run_drain(slot, &more, &missing) ? 0 : failures + 1;
		end_round(more, failures);
	}
}

/*
 * cdp.worker_status() → one row: pid, started, heartbeat, rounds, drained,
 * rejected, errors, last_error, (from every backend) messages resolved by
 * the identity engine and the seconds spent on them, and the worker's
 * current batch size.
 */
PG_FUNCTION_INFO_V1(cdp_worker_status);
Datum
cdp_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {0};
	CdpSharedState s;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_cdp: return type must be a row type");
	SpinLockAcquire(&cdp_shared->mutex);
	memcpy(&s, cdp_shared, sizeof(s));
	SpinLockRelease(&cdp_shared->mutex);

	values[0] = Int32GetDatum(s.worker_pid);
	nulls[0] = (s.worker_pid == 0);
	values[1] = TimestampTzGetDatum(s.worker_started);
	nulls[1] = (s.worker_started == 0);
	values[2] = TimestampTzGetDatum(s.heartbeat);
	nulls[2] = (s.heartbeat == 0);
	values[3] = Int64GetDatum((int64) s.rounds);
	values[4] = Int64GetDatum((int64) s.drained);
	values[5] = Int64GetDatum((int64) s.rejected);
	values[6] = Int64GetDatum((int64) s.errors);
	values[7] = CStringGetTextDatum(s.last_error);
	nulls[7] = (s.last_error[0] == '\0');
	values[8] = Int64GetDatum((int64) s.resolved);
	values[9] = Float8GetDatum(s.resolve_usec / 1000000.0);
	values[10] = Int32GetDatum(s.batch_limit);
	nulls[10] = (s.batch_limit == 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
