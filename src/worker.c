/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database background worker, its helpers, cdp.tick() and the
 *	  worker status.
 *
 * A round of work is the list of registered tasks (cdp_register_task):
 * each subsystem registers its own from its init function (the inbox
 * drain, partition upkeep, and later dirty segments, due journey steps,
 * expired outbox leases).  The worker runs each task in its own
 * transaction, or lets the task drive its own, catches its errors so that
 * one bad round cannot kill the loop, and sleeps on its latch when no task
 * found work: for cdp.naptime, or until the earliest time a task said it
 * has work due (a journey's wait ending), whichever comes first.  Writers set the latch at commit
 * (status.c), so new inbox rows do not wait for the nap to end.
 * cdp.tick() runs one round in the caller's transaction, which is how
 * pg_cron, a server without the worker, and time-driven tests drive it.
 *
 * cdp.drain_workers - 1 helpers run beside the worker the tasks that ask
 * for them (the inbox drain: one drainer resolves its batch while another
 * writes the events of its own).
 *
 * The worker and its helpers connect as the bootstrap superuser, with
 * search_path pinned to pg_catalog, cdp, pg_temp: nothing they run can
 * resolve to an object another role may create.  User-supplied SQL must
 * never run in them with their rights.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
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

#include "drainers.h"
#include "status.h"
#include "worker.h"

PGDLLEXPORT void cdp_worker_main(Datum main_arg);
PGDLLEXPORT void cdp_drain_main(Datum main_arg);

#define MAX_TASKS 32

static char *cdp_database = NULL;
static int	cdp_naptime = 1000;
static bool cdp_worker_enabled = true;

static const CdpTask *tasks[MAX_TASKS];
static int	ntasks = 0;

/* set by cdp_task_begin when the database has no pg_cdp */
static bool extension_missing = false;

/* The process's drainer slot: 0 for the worker, its helpers 1 and up. */
static int	my_slot = -1;

/* set once the process is connected to cdp.database */
static bool connected = false;

/* the earliest next_due the tasks of this round reported (DT_NOEND: none) */
static TimestampTz round_next_due = DT_NOEND;

/*
 * A task reported work due now that its run did not take (another session
 * holds it): look again this much later rather than spin.
 */
#define DUE_RETRY_MS 10

void
cdp_worker_init(void)
{
	BackgroundWorker worker;

	DefineCustomStringVariable("cdp.database",
							   "Database in which the pg_cdp worker runs.",
							   "Empty means no worker: call cdp.tick() yourself, for example from pg_cron.",
							   &cdp_database, "", PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.naptime",
							"Milliseconds the worker sleeps between rounds when idle.",
							NULL, &cdp_naptime, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("cdp.worker_enabled",
							 "Lets the worker run its tasks; off pauses it (it keeps its heartbeat).",
							 "For maintenance and benchmarks; cdp.tick() still works.",
							 &cdp_worker_enabled, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	if (cdp_database == NULL || cdp_database[0] == '\0')
		return;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_cdp");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "cdp_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_cdp worker for %s", cdp_database);
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_cdp worker");
	RegisterBackgroundWorker(&worker);

	/* Helpers that run the tasks that ask for them, beside the worker. */
	for (int i = 1; i < cdp_drain_workers; i++)
	{
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "cdp_drain_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "pg_cdp drain %d for %s", i, cdp_database);
		snprintf(worker.bgw_type, BGW_MAXLEN, "pg_cdp drain");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

/*
 * cdp_register_task adds a task to every round, after those registered
 * before it.  The task must live as long as the process.
 */
void
cdp_register_task(const CdpTask *task)
{
	if (ntasks >= MAX_TASKS)
		elog(ERROR, "pg_cdp: too many worker tasks registered");
	tasks[ntasks++] = task;
}

/*
 * cdp_task_begin starts a transaction of a task that drives its own.  With
 * async_commit it commits without waiting for its WAL to be flushed.
 * False when the database has no pg_cdp: the caller commits and stops.
 */
bool
cdp_task_begin(bool async_commit)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (async_commit)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!OidIsValid(get_extension_oid("pg_cdp", true)))
	{
		extension_missing = true;
		return false;
	}
	return true;
}

void
cdp_task_commit(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
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
	for (int t = 0; t < ntasks; t++)
	{
		bool		more = false;
		int64		done = tasks[t]->run(&more);

		appendStringInfo(&out, "%s\"%s\": " INT64_FORMAT, t ? ", " : "", tasks[t]->name, done);
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
	if (cdp_status)
	{
		SpinLockAcquire(&cdp_status->mutex);
		cdp_status->errors++;
		snprintf(cdp_status->last_error, sizeof(cdp_status->last_error), "%s: %s",
				 task, ed->message);
		SpinLockRelease(&cdp_status->mutex);
	}
	FreeErrorData(ed);
}

/*
 * Run one task: in a transaction of its own, or through its drive.  False
 * when it failed; its transaction is then rolled back.
 */
static bool
run_task(const CdpTask *task, bool *more)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = true;

	*more = false;
	PG_TRY();
	{
		pgstat_report_activity(STATE_RUNNING, task->name);
		if (task->drive)
			task->drive(my_slot, more);
		else if (cdp_task_begin(false))
		{
			SPI_connect();
			task->run(more);
			if (task->next_due && !*more)
			{
				TimestampTz due = task->next_due();

				round_next_due = Min(round_next_due, due);
			}
			SPI_finish();
			cdp_task_commit();
		}
		else
			cdp_task_commit();

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
	MemoryContextSwitchTo(cxt);
	if (task->release)
		task->release(my_slot);
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
 * latch for cdp.naptime or until the earliest time a task said it has work
 * due, whichever comes first; longer after repeated failures rather than
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
	else if (round_next_due != DT_NOEND)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		until;

		if (round_next_due <= now)
			until = DUE_RETRY_MS;
		else
			/* rounded up: waking a little early would find nothing due */
			until = (long) ((round_next_due - now + 999) / 1000);
		nap = Min(nap, until);
	}
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 nap, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/* The latch dies with the process: writers must stop setting it. */
static void
worker_detach(int code, Datum arg)
{
	SpinLockAcquire(&cdp_status->mutex);
	if (my_slot == 0)
	{
		cdp_status->worker_pid = 0;
		cdp_status->worker_latch = NULL;
	}
	else
		cdp_status->drain_latch[my_slot] = NULL;
	SpinLockRelease(&cdp_status->mutex);
	for (int t = 0; t < ntasks; t++)
		if (tasks[t]->release)
			tasks[t]->release(my_slot);
}

/*
 * A process that exits before it is connected could not connect to
 * cdp.database, most likely because it is not created yet: the next start
 * waits for it (wait_for_database).
 */
static void
note_failed_connection(int code, Datum arg)
{
	if (connected || code == 0)
		return;
	SpinLockAcquire(&cdp_status->mutex);
	cdp_status->database_missing = true;
	SpinLockRelease(&cdp_status->mutex);
}

/*
 * Is there a database of that name?  For a process connected to no
 * database, which can read the shared catalogs only, and only by a heap
 * scan (their indexes' relcache entries would need pg_class).
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!found && (tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		found = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), name) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * cdp.database may name a database that is not created yet.  Connecting to
 * it fails with a FATAL, and the postmaster starts the process again every
 * few seconds, each time with another FATAL in the log.  So once connecting
 * failed, the next start connects to no database, looks for cdp.database
 * in pg_database every second, quietly, and exits once it exists, to be
 * started again and connect.  (A process connects to one database for its
 * life: the one that looked cannot be the one that works.)
 */
static void
wait_for_database(void)
{
	bool		missing;

	SpinLockAcquire(&cdp_status->mutex);
	missing = cdp_status->database_missing;
	SpinLockRelease(&cdp_status->mutex);
	if (!missing)
		return;

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	ereport(LOG,
			(errmsg("pg_cdp %s waits for database \"%s\" to be created",
					my_slot == 0 ? "worker" : "drain helper", cdp_database),
			 errdetail("cdp.database names a database that does not exist.")));
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (database_exists(cdp_database))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	SpinLockAcquire(&cdp_status->mutex);
	cdp_status->database_missing = false;
	SpinLockRelease(&cdp_status->mutex);
	ereport(LOG,
			(errmsg("database \"%s\" exists: the pg_cdp %s restarts to connect to it",
					cdp_database, my_slot == 0 ? "worker" : "drain helper")));
	proc_exit(1);
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
	wait_for_database();
	before_shmem_exit(note_failed_connection, (Datum) 0);
	BackgroundWorkerInitializeConnection(cdp_database, NULL, 0);
	connected = true;
	SetConfigOption("search_path", "pg_catalog, cdp, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
}

/* The loop of the worker (slot 0) and of each helper. */
static void
worker_loop(int slot)
{
	MemoryContext round_cxt;
	int			failures = 0;

	my_slot = slot;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	connect_worker();

	SpinLockAcquire(&cdp_status->mutex);
	if (slot == 0)
	{
		cdp_status->worker_pid = MyProcPid;
		cdp_status->worker_latch = &MyProc->procLatch;
		cdp_status->worker_started = GetCurrentTimestamp();
	}
	else
		cdp_status->drain_latch[slot] = &MyProc->procLatch;
	SpinLockRelease(&cdp_status->mutex);
	on_shmem_exit(worker_detach, (Datum) 0);
	keep_batches_in_heap();

	if (slot == 0)
		ereport(LOG, (errmsg("pg_cdp worker started in database \"%s\"", cdp_database)));
	round_cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp worker round",
									  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		bool		busy = false;
		bool		round_failed = false;

		begin_round(round_cxt);
		extension_missing = false;
		round_next_due = DT_NOEND;
		for (int t = 0; t < ntasks && !extension_missing && cdp_worker_enabled; t++)
		{
			bool		more = false;

			if (slot != 0 && !tasks[t]->helpers)
				continue;
			if (!run_task(tasks[t], &more))
				round_failed = true;
			busy = busy || more;
			MemoryContextSwitchTo(round_cxt);
		}
		/* A round with any failed task counts, so a poison task backs off. */
		failures = round_failed ? failures + 1 : 0;

		if (slot == 0)
		{
			SpinLockAcquire(&cdp_status->mutex);
			cdp_status->heartbeat = GetCurrentTimestamp();
			cdp_status->rounds++;
			SpinLockRelease(&cdp_status->mutex);
		}
		end_round(busy, failures);
	}
}

void
cdp_worker_main(Datum main_arg)
{
	worker_loop(0);
}

void
cdp_drain_main(Datum main_arg)
{
	worker_loop(DatumGetInt32(main_arg));
}

/*
 * Is this the database the worker serves?  The worker connects to
 * cdp.database by name.
 */
static bool
serves_this_database(void)
{
	char	   *name;

	if (cdp_database == NULL || cdp_database[0] == '\0')
		return false;
	name = get_database_name(MyDatabaseId);
	return name != NULL && strcmp(name, cdp_database) == 0;
}

/*
 * cdp.worker_status() → one row: pid, started, heartbeat, rounds, drained,
 * rejected, errors, last_error, (from every backend) messages resolved by
 * the identity engine and the seconds spent on them, the worker's current
 * batch size, the database it serves (cdp.database) and whether that is
 * this one.  The status board is the server's: in a database the worker
 * does not serve, what the worker reports is NULL.
 */
PG_FUNCTION_INFO_V1(cdp_worker_status);
Datum
cdp_worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[13];
	bool		nulls[13] = {0};
	CdpStatus	s;
	bool		served = serves_this_database();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_cdp: return type must be a row type");
	SpinLockAcquire(&cdp_status->mutex);
	memcpy(&s, cdp_status, sizeof(s));
	SpinLockRelease(&cdp_status->mutex);

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
	/*
	 * Another database's worker is not this one's: of the board, keep only
	 * the identity engine's figures, which count every backend.
	 */
	if (!served)
	{
		for (int i = 0; i <= 7; i++)
			nulls[i] = true;
		nulls[10] = true;
	}
	values[11] = CStringGetTextDatum(cdp_database ? cdp_database : "");
	nulls[11] = (cdp_database == NULL || cdp_database[0] == '\0');
	values[12] = BoolGetDatum(served);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
