/*-------------------------------------------------------------------------
 *
 * pg_cdp.c
 *	  Module entry: every module's settings, shared memory, tables and
 *	  tasks, registered at load.
 *
 * _PG_init calls each module's init in the order of the flow (the clock,
 * normalization, identifier types, profiles, the engine and the resolver,
 * merges, ingest, the inbox, the drain, traits, segments, the outbox and
 * its policy, journeys, the worker); each defines its own settings and
 * registers its per-profile tables and worker tasks.  The
 * modules that keep state in shared memory size and attach it here.
 * A new subsystem adds its init call (and its shared memory, if it has
 * any) and nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "clock.h"
#include "decide.h"
#include "drain.h"
#include "drainers.h"
#include "idtypes.h"
#include "inbox.h"
#include "journey.h"
#include "ingest.h"
#include "engine.h"
#include "merge.h"
#include "normalize.h"
#include "outbox.h"
#include "policy.h"
#include "profile.h"
#include "resolve.h"
#include "segment.h"
#include "segment_spec.h"
#include "status.h"
#include "traits.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void cdp_shmem_request(void);
static void cdp_shmem_startup(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_cdp must be loaded via shared_preload_libraries"),
				 errhint("Add pg_cdp to shared_preload_libraries in postgresql.conf and restart the server.")));

	cdp_clock_init();
	cdp_normalize_init();
	cdp_idtypes_init();
	cdp_profile_init();
	cdp_engine_init();
	cdp_resolve_init();
	cdp_merge_init();
	cdp_segment_spec_init();
	/* before the drain: a round makes its months' partitions, then writes */
	cdp_ingest_init();
	cdp_inbox_init();
	cdp_drainers_init();
	cdp_drain_init();
	cdp_traits_init();
	cdp_segments_init();
	cdp_outbox_init();
	cdp_policy_init();
	cdp_journey_init();
	cdp_decide_init();
	cdp_worker_init();
	MarkGUCPrefixReserved("cdp");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cdp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cdp_shmem_startup;
}

static void
cdp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(cdp_status_shmem_size());
	RequestAddinShmemSpace(cdp_drainers_shmem_size());
	RequestAddinShmemSpace(cdp_profile_shmem_size());
	RequestAddinShmemSpace(cdp_traits_shmem_size());
	RequestAddinShmemSpace(cdp_segments_shmem_size());
	RequestAddinShmemSpace(cdp_outbox_shmem_size());
	RequestAddinShmemSpace(cdp_journey_shmem_size());
	RequestAddinShmemSpace(cdp_decide_shmem_size());
	RequestNamedLWLockTranche("pg_cdp drainers", 1);
}

static void
cdp_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cdp_status_shmem_init();
	cdp_drainers_shmem_init();
	cdp_profile_shmem_init();
	cdp_traits_shmem_init();
	cdp_segments_shmem_init();
	cdp_outbox_shmem_init();
	cdp_journey_shmem_init();
	cdp_decide_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}
