/*-------------------------------------------------------------------------
 *
 * pg_cdp.c
 *	  Module entry: settings, shared memory, worker registration, the clock.
 *
 * Everything that must exist before the first SQL call lives here: the
 * cdp.* settings, the small shared-memory block through which the worker
 * publishes its heartbeat and writers wake it, the registration of the
 * per-database worker, and cdp.now(), the settable clock every default and
 * time rule of the extension reads.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "pg_cdp.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *cdp_database = NULL;
int			cdp_naptime = 1000;
bool		cdp_worker_enabled = true;
int			cdp_batch_size = 2000;
int			cdp_drain_workers = 2;
int			cdp_bulk_batch_size = 10000;
bool		cdp_drain_synchronous_commit = false;
char	   *cdp_fake_now = NULL;
bool		cdp_email_provider_rules = false;
char	   *cdp_default_phone_region = NULL;
bool		cdp_auto_create_identifier_types = false;
char	   *cdp_trait_source_priority = NULL;
int			cdp_max_identities_per_profile = 1000;
int			cdp_max_message_bytes = 4 * 1024 * 1024;

CdpSharedState *cdp_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_registered = false;
static bool wake_pending = false;

static void cdp_shmem_request(void);
static void cdp_shmem_startup(void);
static bool check_fake_now(char **newval, void **extra, GucSource source);
static void wake_xact_callback(XactEvent event, void *arg);

void
_PG_init(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_cdp must be loaded via shared_preload_libraries"),
				 errhint("Add pg_cdp to shared_preload_libraries in postgresql.conf and restart the server.")));

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
	DefineCustomIntVariable("cdp.batch_size",
							"Inbox messages resolved together.",
							"Larger batches drain faster; while one is resolved, cdp.track calls wait for it.",
							&cdp_batch_size, 2000, 1, CDP_MAX_BATCH,
							PGC_USERSET, 0, NULL, NULL, NULL);
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
	DefineCustomIntVariable("cdp.drain_workers",
							"Processes that drain the inbox: the worker and its helpers.",
							"Each resolves a batch while another writes the events of its own, so the bulk path uses more than one core.",
							&cdp_drain_workers, 2, 1, CDP_MAX_DRAINERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("cdp.fake_now",
							   "Overrides cdp.now() for tests and backfills.",
							   "Empty means the transaction start time.",
							   &cdp_fake_now, "", PGC_USERSET, 0,
							   check_fake_now, NULL, NULL);
	DefineCustomBoolVariable("cdp.email_provider_rules",
							 "Apply mailbox provider rules (gmail dots, +tags) when normalizing emails.",
							 "Stored values keep the rules they were stored with until cdp.renormalize_identities() runs.",
							 &cdp_email_provider_rules, false, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("cdp.default_phone_region",
							   "Region (ISO 3166 alpha-2) assumed for phone numbers without a country code.",
							   NULL, &cdp_default_phone_region, "US", PGC_SUSET, 0,
							   NULL, NULL, NULL);
	DefineCustomBoolVariable("cdp.auto_create_identifier_types",
							 "Create unknown identifier types on first use instead of rejecting them.",
							 NULL, &cdp_auto_create_identifier_types, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("cdp.trait_source_priority",
							   "Comma-separated sources (channels), strongest first, for trait survivorship.",
							   "A trait value from a stronger source wins over a newer one from a weaker source; among equals the newest wins.",
							   &cdp_trait_source_priority, "", PGC_SUSET, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.max_identities_per_profile",
							"Merges that would give one profile more identifiers than this are refused.",
							NULL, &cdp_max_identities_per_profile, 1000, 2, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.max_message_bytes",
							"Largest message (properties included) that ingest accepts.",
							NULL, &cdp_max_message_bytes, 4 * 1024 * 1024, 1024,
							256 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("cdp");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cdp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cdp_shmem_startup;

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

	/* Helpers that only drain the inbox, beside the worker. */
	for (int i = 1; i < cdp_drain_workers; i++)
	{
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "cdp_drain_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "pg_cdp drain %d for %s", i, cdp_database);
		snprintf(worker.bgw_type, BGW_MAXLEN, "pg_cdp drain");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

static Size
cdp_shmem_size(void)
{
	/* each drainer's claims, then each drainer's writes */
	return add_size(MAXALIGN(sizeof(CdpSharedState)),
					mul_size(mul_size(2 * cdp_drain_workers, CDP_MAX_BATCH), sizeof(int64)));
}

static void
cdp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(cdp_shmem_size());
	RequestNamedLWLockTranche("pg_cdp", 1);
}

static void
cdp_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cdp_shared = ShmemInitStruct("pg_cdp", cdp_shmem_size(), &found);
	if (!found)
	{
		memset(cdp_shared, 0, sizeof(CdpSharedState));
		SpinLockInit(&cdp_shared->mutex);
		pg_atomic_init_u64(&cdp_shared->marks_generation, 0);
		pg_atomic_init_u64(&cdp_shared->inbox_erasures, 0);
		cdp_shared->claims_lock = &(GetNamedLWLockTranche("pg_cdp"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

static bool
check_fake_now(char **newval, void **extra, GucSource source)
{
	/* Validate eagerly so a typo fails at SET, not at the next ingest. */
	TimestampTz ts;

	if (*newval && (*newval)[0] != '\0' && !cdp_parse_timestamptz(*newval, &ts))
	{
		GUC_check_errdetail("cdp.fake_now must be a timestamp with time zone, or empty.");
		return false;
	}
	return true;
}

/*
 * cdp_now returns the transaction start time, or cdp.fake_now when set.
 */
TimestampTz
cdp_now(void)
{
	if (cdp_fake_now && cdp_fake_now[0] != '\0')
		return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													   CStringGetDatum(cdp_fake_now),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
	return GetCurrentTransactionStartTimestamp();
}

PG_FUNCTION_INFO_V1(cdp_now_sql);
Datum
cdp_now_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(cdp_now());
}

void
cdp_set_error(CdpError *err, int sqlerrcode, const char *message,
			  const char *detail, const char *hint)
{
	err->sqlerrcode = sqlerrcode;
	err->message = pstrdup(message);
	err->detail = detail ? pstrdup(detail) : NULL;
	err->hint = hint ? pstrdup(hint) : NULL;
}

void
cdp_raise(const CdpError *err)
{
	ereport(ERROR,
			(errcode(err->sqlerrcode),
			 errmsg_internal("%s", err->message),
			 err->detail ? errdetail_internal("%s", err->detail) : 0,
			 err->hint ? errhint("%s", err->hint) : 0));
	pg_unreachable();
}

/*
 * Writers call this; the worker's latch is set only once the writing
 * transaction commits, so the worker never wakes to rows it cannot see yet.
 */
void
cdp_wake_worker_at_commit(void)
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
		if (cdp_shared)
		{
			SpinLockAcquire(&cdp_shared->mutex);
			latch = cdp_shared->worker_latch;
			memcpy(drainers, cdp_shared->drain_latch, sizeof(drainers));
			SpinLockRelease(&cdp_shared->mutex);
			for (int i = 1; i < CDP_MAX_DRAINERS; i++)
				if (drainers[i])
					SetLatch(drainers[i]);
		}
		if (latch)
			SetLatch(latch);
		wake_pending = false;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_pending = false;
}

/*
 * cdp_bump_through_xact moves a shared counter now and again when the
 * current transaction ends, committed or not, which comes before its locks
 * are released.  A backend that read the counter before and finds it
 * unchanged after is sure that no such transaction began in between, nor
 * ended while it waited for that transaction's locks.
 */
#define MAX_XACT_BUMPS 4
static pg_atomic_uint64 *xact_bumps[MAX_XACT_BUMPS];
static int	nxact_bumps = 0;
static bool bump_registered = false;

static void
bump_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	for (int i = 0; i < nxact_bumps; i++)
		pg_atomic_fetch_add_u64(xact_bumps[i], 1);
	nxact_bumps = 0;
}

void
cdp_bump_through_xact(pg_atomic_uint64 *counter)
{
	bool		listed = false;

	if (!bump_registered)
	{
		RegisterXactCallback(bump_xact_callback, NULL);
		bump_registered = true;
	}
	pg_atomic_fetch_add_u64(counter, 1);
	for (int i = 0; i < nxact_bumps; i++)
		listed = listed || xact_bumps[i] == counter;
	if (!listed)
	{
		Assert(nxact_bumps < MAX_XACT_BUMPS);
		xact_bumps[nxact_bumps++] = counter;
	}
}

/*
 * Statement trigger on cdp.inbox: new rows are waiting.
 */
PG_FUNCTION_INFO_V1(cdp_inbox_wake);
Datum
cdp_inbox_wake(PG_FUNCTION_ARGS)
{
	cdp_wake_worker_at_commit();
	return PointerGetDatum(NULL);
}
