/*-------------------------------------------------------------------------
 *
 * journey_run.c
 *	  Running journeys: entry, exit, goals and wait_for in the ingesting
 *	  transaction; due steps advanced in batches by the worker; profiles'
 *	  journey states through merges and erasures.
 *
 * A state (cdp.journey_states) stands on a step, due at due_at: a wait
 * step is due when the wait is over, a wait_for step when it times out,
 * any other step at once.  Running a due step moves the state to the
 * step it leads to (or ends it), and every move is one row of
 * cdp.journey_log.
 *
 * Events.  The event writer calls journey_events_written for every batch
 * it wrote, in the writing transaction, so whatever the batch does to
 * journeys commits or rolls back with its events.  In order: exit criteria
 * end the matching active states at once, whatever step they wait on;
 * goal events set converted_at within the goal's window; wait_for states
 * the batch satisfies move to their on_event step; matching entries
 * insert states; then the steps due now of all of those run, so a first
 * send commits with the event.
 *
 * Steps.  A batch of due states is grouped by kind, and each kind runs as
 * one statement over its group (a send is one batch enqueue through the
 * policy per journey, channel and template); a branch with a condition
 * runs one statement per step, as the journey's owner.  Then one statement moves every state of the
 * batch and logs it, and the states that landed on a step due now run
 * again, a bounded number of times (a definition has no cycle without a
 * wait).  A group that fails (a template dropped, a condition that no
 * longer works) records its error on the journey and its states try again
 * a minute later: nothing is skipped.
 *
 * Concurrency.  The worker claims due states FOR UPDATE SKIP LOCKED, and
 * the event path locks the states it moves with FOR UPDATE, rechecking
 * that they still stand where they stood: a wait_for that an event
 * satisfies while the worker times it out takes exactly one of the two
 * branches, and two workers never run the same state twice.
 *
 * Sends carry a dedupe key made of the journey, version, profile, state
 * and step, so a retried batch never enqueues twice.  Holdout states run
 * every step and send nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "ingest.h"
#include "journey.h"
#include "outbox.h"
#include "profile.h"
#include "registry.h"
#include "status.h"
#include "util.h"
#include "worker.h"

/* rounds of steps due at once in one batch (a definition has no cycle without a wait) */
#define MAX_ROUNDS 200

typedef struct JVersion
{
	char	   *journey;
	int			version;
	bool		current;
	char	   *entry_event;
	char	   *entry_segment;
	char	   *entry_condition;
	char	   *reentry;
	char	   *cooldown;
	int			holdout;
	char	   *first_step;
	Oid			owner;
	SPIPlanPtr	cond_plan;
} JVersion;

/* a step with a condition: a wait_for's or a branch's */
typedef struct JCondStep
{
	char	   *journey;
	int			version;
	char	   *step;
	char	   *kind;
	char	   *condition;
	Oid			owner;
	SPIPlanPtr	plan;
} JCondStep;

typedef struct JCache
{
	MemoryContext cxt;
	bool		valid;
	bool		present;		/* the schema has journeys */
	int			nversions;
	JVersion   *versions;
	int			nevents;
	char	  **events;			/* every event name some active journey reads */
	int		   *event_roles;	/* what each is to them: ROLE_* bits */
	int			nconds;
	JCondStep  *conds;
} JCache;

/* what an event is to the active journeys */
#define ROLE_EXIT		1
#define ROLE_GOAL		2
#define ROLE_WAIT_FOR	4
#define ROLE_ENTRY		8

/* rows moved: to_step NULL ends the state */
typedef struct Moves
{
	int			n;
	int			cap;
	int64	   *ids;
	char	  **tos;
	char	  **whys;
	int64	   *outbox;
	bool	   *has_outbox;
} Moves;

static JCache cache;
static pg_atomic_uint64 *journeys_generation = NULL;
static uint64 seen_generation = 0;
static int	journey_batch_size = 1000;

static void journey_events_written(CdpMessage *msgs, int nmsgs);
static int64 task_journeys(bool *more);
static TimestampTz journeys_next_due(void);

static const CdpProfileTable journey_tables[] = {
	{
		/*
		 * A profile merged while both halves are in the same journey goes on
		 * once: the more advanced state (the later step, else the later
		 * entry) stays, the others end as merged.  The rest follow the
		 * winner.  An unmerge leaves them with the winner.  The states are
		 * locked first and compared as they are once locked: a tick that
		 * advanced one of them meanwhile is seen.
		 */
		.name = "journey_states",
		.relation = "cdp.journey_states",
		.order = 700,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql =
		"WITH p AS (SELECT * FROM unnest($1::int8[], $2::int8[]) AS p(loser, winner)), "
		"locked AS (SELECT s.state_id, s.journey, s.version, s.step, s.status, s.profile_id, "
		"           s.entered_at FROM cdp.journey_states s "
		"           WHERE s.profile_id = ANY($1::int8[] || $2::int8[]) FOR UPDATE), "
		"inv AS (SELECT s.state_id, s.journey, s.version, s.step, s.status, s.profile_id, "
		"        coalesce(p.winner, s.profile_id) AS winner, t.ordinal, s.entered_at "
		"        FROM locked s LEFT JOIN p ON p.loser = s.profile_id "
		"        LEFT JOIN cdp.journey_steps t ON t.journey = s.journey "
		"         AND t.version = s.version AND t.step = s.step), "
		"best AS (SELECT DISTINCT ON (winner, journey) winner, journey, profile_id "
		"         FROM inv WHERE status = 'active' "
		"         ORDER BY winner, journey, ordinal DESC NULLS LAST, entered_at DESC, "
		"                  state_id DESC), "
		"ending AS (SELECT i.* FROM inv i JOIN best b USING (winner, journey) "
		"           WHERE i.status = 'active' AND i.profile_id <> b.profile_id), "
		"u AS (UPDATE cdp.journey_states s SET profile_id = i.winner, "
		"      status = CASE WHEN e.state_id IS NULL THEN s.status ELSE 'ended' END, "
		"      due_at = CASE WHEN e.state_id IS NULL THEN s.due_at END, "
		"      ended_at = CASE WHEN e.state_id IS NULL THEN s.ended_at ELSE cdp.now() END, "
		"      why = CASE WHEN e.state_id IS NULL THEN s.why ELSE 'merged' END "
		"      FROM inv i LEFT JOIN ending e USING (state_id) "
		"      WHERE s.state_id = i.state_id "
		"        AND (i.profile_id <> i.winner OR e.state_id IS NOT NULL)) "
		"INSERT INTO cdp.journey_log (state_id, profile_id, journey, version, from_step, "
		"                             to_step, why, at) "
		"SELECT state_id, winner, journey, version, step, NULL, 'merged', cdp.now() "
		"FROM ending",
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
	{
		.name = "journey_log",
		.relation = "cdp.journey_log",
		.order = 710,
		.on_merge = CDP_ROWS_BY_PROFILE_ID,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

static const CdpTask journeys_task = {
	.name = "journeys",
	.run = task_journeys,
	.next_due = journeys_next_due,
};

void
cdp_journey_init(void)
{
	DefineCustomIntVariable("cdp.journey_batch_size",
							"Due journey states the worker advances per batch.",
							NULL, &journey_batch_size, 1000, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	for (int i = 0; i < lengthof(journey_tables); i++)
		cdp_register_profile_table(&journey_tables[i]);
	cdp_register_events_written(journey_events_written);
	cdp_register_task(&journeys_task);
}

Size
cdp_journey_shmem_size(void)
{
	return MAXALIGN(sizeof(pg_atomic_uint64));
}

void
cdp_journey_shmem_init(void)
{
	bool		found;

	journeys_generation = ShmemInitStruct("pg_cdp journeys", cdp_journey_shmem_size(),
										  &found);
	if (!found)
		pg_atomic_init_u64(journeys_generation, 0);
}

/* Journeys changed: every backend reloads them (now and at commit). */
void
cdp_journeys_changed(void)
{
	cache.valid = false;
	if (journeys_generation)
		cdp_bump_through_xact(journeys_generation);
}

PG_FUNCTION_INFO_V1(cdp_journeys_changed_trigger);
Datum
cdp_journeys_changed_trigger(PG_FUNCTION_ARGS)
{
	cdp_journeys_changed();
	return PointerGetDatum(NULL);
}

/*
 * Runs plan in a subtransaction, as owner when given (cdp_exec_guarded);
 * on success copies the rows it returned into the caller's memory (*rows,
 * *desc), on error returns the error instead of raising it.
 */
static ErrorData *
run_guarded(SPIPlanPtr plan, Datum *args, const char *nulls, Oid owner,
			HeapTuple **rows, TupleDesc *desc, uint64 *nrows)
{
	ErrorData  *err = cdp_exec_guarded(plan, args, nulls, owner, CDP_SPI_ANY,
									   "journey statement");

	*nrows = 0;
	if (err == NULL && SPI_tuptable && SPI_processed > 0)
	{
		*nrows = SPI_processed;
		*desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		*rows = palloc(sizeof(HeapTuple) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
			(*rows)[i] = heap_copytuple(SPI_tuptable->vals[i]);
	}
	return err;
}

static char *
getstr(HeapTuple t, TupleDesc d, int col)
{
	return SPI_getvalue(t, d, col);
}

static int64
getint8(HeapTuple t, TupleDesc d, int col, bool *isnull)
{
	Datum		v = SPI_getbinval(t, d, col, isnull);

	return *isnull ? 0 : DatumGetInt64(v);
}

/* ---- the cache of active journeys ---- */

static void
free_cache(void)
{
	for (int i = 0; i < cache.nversions; i++)
		if (cache.versions[i].cond_plan)
			SPI_freeplan(cache.versions[i].cond_plan);
	for (int i = 0; i < cache.nconds; i++)
		if (cache.conds[i].plan)
			SPI_freeplan(cache.conds[i].plan);
	if (cache.cxt)
		MemoryContextReset(cache.cxt);
	else
		cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp journeys",
										  ALLOCSET_SMALL_SIZES);
	cache.nversions = cache.nevents = cache.nconds = 0;
	cache.versions = NULL;
	cache.events = NULL;
	cache.event_roles = NULL;
	cache.conds = NULL;
}

static char *
cache_str(HeapTuple t, TupleDesc d, int col)
{
	char	   *s = SPI_getvalue(t, d, col);

	return s ? MemoryContextStrdup(cache.cxt, s) : NULL;
}

static void
load_journeys(void)
{
	uint64		gen = journeys_generation ? pg_atomic_read_u64(journeys_generation) : 0;
	bool		isnull;

	/* without the tables (a schema older than the library) look every time */
	if (cache.valid && gen == seen_generation && cache.present)
		return;
	free_cache();
	if (SPI_execute("SELECT to_regclass('cdp.journey_states') IS NOT NULL", true, 1) !=
		SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not look for the journeys' tables");
	cache.present = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											   1, &isnull));
	seen_generation = gen;
	cache.valid = true;
	if (!cache.present)
		return;

	if (SPI_execute("SELECT v.journey, v.version, v.version = j.version, v.entry_event, "
					"v.entry_segment, v.entry_condition, v.reentry, v.cooldown::text, "
					"v.holdout, v.first_step, j.owner::oid "
					"FROM cdp.journey_versions v JOIN cdp.journeys j ON j.name = v.journey "
					"WHERE j.status = 'active' ORDER BY 1, 2", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not load the journeys");
	cache.nversions = SPI_processed;
	cache.versions = MemoryContextAllocZero(cache.cxt, sizeof(JVersion) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		JVersion   *v = &cache.versions[i];

		v->journey = cache_str(t, d, 1);
		v->version = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		v->current = DatumGetBool(SPI_getbinval(t, d, 3, &isnull));
		v->entry_event = cache_str(t, d, 4);
		v->entry_segment = cache_str(t, d, 5);
		v->entry_condition = cache_str(t, d, 6);
		v->reentry = cache_str(t, d, 7);
		v->cooldown = cache_str(t, d, 8);
		v->holdout = DatumGetInt32(SPI_getbinval(t, d, 9, &isnull));
		v->first_step = cache_str(t, d, 10);
		v->owner = DatumGetObjectId(SPI_getbinval(t, d, 11, &isnull));
	}

	if (SPI_execute("SELECT x.e, bit_or(x.r) "
					"FROM cdp.journey_versions v JOIN cdp.journeys j ON j.name = v.journey, "
					"LATERAL (SELECT unnest(v.exit_events), " CppAsString2(ROLE_EXIT)
					"         UNION ALL SELECT v.goal_event, " CppAsString2(ROLE_GOAL)
					"         UNION ALL SELECT CASE WHEN cardinality(v.exit_segments) > 0 "
					"                          THEN 'Segment Exited' END, " CppAsString2(ROLE_EXIT)
					"         UNION ALL SELECT CASE WHEN v.version = j.version "
					"                          THEN coalesce(v.entry_event, 'Segment Entered') END, "
					CppAsString2(ROLE_ENTRY)
					"         UNION ALL SELECT t.event, " CppAsString2(ROLE_WAIT_FOR)
					"                   FROM cdp.journey_steps t "
					"                   WHERE t.journey = v.journey AND t.version = v.version "
					"                     AND t.kind = 'wait_for') AS x(e, r) "
					"WHERE j.status = 'active' AND x.e IS NOT NULL GROUP BY x.e", true, 0) !=
		SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not load the journeys' events");
	cache.nevents = SPI_processed;
	cache.events = MemoryContextAlloc(cache.cxt, sizeof(char *) * Max(1, SPI_processed));
	cache.event_roles = MemoryContextAlloc(cache.cxt, sizeof(int) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		cache.events[i] = cache_str(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		cache.event_roles[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));
	}

	if (SPI_execute("SELECT t.journey, t.version, t.step, t.kind, t.condition, j.owner::oid "
					"FROM cdp.journey_steps t JOIN cdp.journeys j ON j.name = t.journey "
					"WHERE j.status = 'active' AND t.condition IS NOT NULL ORDER BY 1, 2, 3",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not load the journeys' conditions");
	cache.nconds = SPI_processed;
	cache.conds = MemoryContextAllocZero(cache.cxt, sizeof(JCondStep) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		JCondStep  *c = &cache.conds[i];

		c->journey = cache_str(t, d, 1);
		c->version = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		c->step = cache_str(t, d, 3);
		c->kind = cache_str(t, d, 4);
		c->condition = cache_str(t, d, 5);
		c->owner = DatumGetObjectId(SPI_getbinval(t, d, 6, &isnull));
	}
}

/* what the event is to the active journeys (ROLE_* bits; 0: nothing) */
static int
event_roles(const char *event)
{
	for (int i = 0; i < cache.nevents; i++)
		if (strcmp(cache.events[i], event) == 0)
			return cache.event_roles[i];
	return 0;
}

/* the kept plan of a condition: the batch rows' ordinals that pass it */
static SPIPlanPtr
condition_plan(SPIPlanPtr *slot, const char *condition)
{
	Oid			types[4] = {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID};

	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(psprintf("SELECT e.i FROM " CDP_JOURNEY_CONDITION_ROWS
											 " WHERE (%s)", condition), 4, types);

		if (p == NULL)
			return NULL;
		SPI_keepplan(p);
		*slot = p;
	}
	return *slot;
}

static void
record_error(const char *journey, const char *message)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];

	if (plan == NULL)
		plan = cdp_prepare("UPDATE cdp.journeys SET last_error = $2, last_error_at = cdp.now() "
						   "WHERE name = $1", 2, types);
	args[0] = CStringGetTextDatum(journey);
	args[1] = CStringGetTextDatum(message ? message : "error");
	cdp_spi_exec(plan, args, SPI_OK_UPDATE);
}

/*
 * Runs a condition as the owner over rows (pids, events, props, times):
 * pass[i] says whether row i passes.  False on error (recorded).
 */
static bool
filter_condition(SPIPlanPtr *slot, const char *condition, Oid owner, const char *journey,
				 int n, int64 *pids, char **events, Jsonb **props, TimestampTz *times,
				 bool *pass)
{
	SPIPlanPtr	plan = condition_plan(slot, condition);
	Datum		args[4];
	HeapTuple  *rows = NULL;
	TupleDesc	desc = NULL;
	uint64		nrows;
	ErrorData  *err;

	memset(pass, 0, sizeof(bool) * n);
	if (plan == NULL)
	{
		record_error(journey, "a condition does not prepare");
		return false;
	}
	args[0] = cdp_int8_array(pids, n);
	args[1] = cdp_text_array(events, n);
	args[2] = cdp_jsonb_array(props, n);
	args[3] = cdp_timestamptz_array(times, n);
	err = run_guarded(plan, args, NULL, owner, &rows, &desc, &nrows);
	if (err)
	{
		record_error(journey, err->message);
		return false;
	}
	for (uint64 r = 0; r < nrows; r++)
	{
		bool		isnull;
		int64		i = getint8(rows[r], desc, 1, &isnull);

		if (!isnull && i >= 1 && i <= n)
			pass[i - 1] = true;
	}
	return true;
}

/* ---- moving states ---- */

static void
moves_add(Moves *m, int64 id, const char *to, const char *why, bool has_outbox, int64 outbox)
{
	if (m->n == m->cap)
	{
		m->cap = m->cap ? m->cap * 2 : 64;
		m->ids = m->ids ? repalloc(m->ids, sizeof(int64) * m->cap) : palloc(sizeof(int64) * m->cap);
		m->tos = m->tos ? repalloc(m->tos, sizeof(char *) * m->cap) : palloc(sizeof(char *) * m->cap);
		m->whys = m->whys ? repalloc(m->whys, sizeof(char *) * m->cap) : palloc(sizeof(char *) * m->cap);
		m->outbox = m->outbox ? repalloc(m->outbox, sizeof(int64) * m->cap) : palloc(sizeof(int64) * m->cap);
		m->has_outbox = m->has_outbox ? repalloc(m->has_outbox, sizeof(bool) * m->cap) : palloc(sizeof(bool) * m->cap);
	}
	m->ids[m->n] = id;
	m->tos[m->n] = to ? pstrdup(to) : NULL;
	m->whys[m->n] = pstrdup(why);
	m->outbox[m->n] = outbox;
	m->has_outbox[m->n] = has_outbox;
	m->n++;
}

/* rows shaped (state_id, to_step, why, outbox_id) */
static void
moves_add_rows(Moves *m, HeapTuple *rows, TupleDesc desc, uint64 n)
{
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull,
					nobox;
		int64		id = getint8(rows[r], desc, 1, &isnull);
		int64		box = getint8(rows[r], desc, 4, &nobox);

		moves_add(m, id, getstr(rows[r], desc, 2), getstr(rows[r], desc, 3), !nobox, box);
	}
}

/*
 * Moves states to their next steps (NULL: ends them) in one statement,
 * logging each, and returns the ids of those now standing on a step that
 * is due at once.
 */
static int
apply_moves(Moves *m, int64 **again)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[5] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
	TIMESTAMPTZOID};
	Datum		args[5];
	ArrayType  *outbox;
	Datum	   *elems;
	bool	   *nulls;
	int			dims[1];
	int			lbs[1] = {1};
	int			n;

	*again = NULL;
	if (m->n == 0)
		return 0;
	if (plan == NULL)
		plan = cdp_prepare(
						   "WITH m AS (SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[]) "
						   "           AS m(state_id, to_step, why, outbox_id)), "
						   "d AS (SELECT m.*, s.step AS from_step, s.profile_id, s.journey, s.version, "
						   "             s.entry_properties, t.kind, t.wait_for, t.wait_until, "
						   "             t.timeout, t.event, t.match "
						   "      FROM m JOIN cdp.journey_states s USING (state_id) "
						   "      LEFT JOIN cdp.journey_steps t ON t.journey = s.journey "
						   "       AND t.version = s.version AND t.step = m.to_step), "
						   "u AS (UPDATE cdp.journey_states s "
						   "      SET step = coalesce(d.to_step, s.step), "
						   "          status = CASE WHEN d.to_step IS NULL THEN 'ended' ELSE 'active' END, "
						   "          due_at = CASE WHEN d.to_step IS NULL THEN NULL "
						   "                        WHEN d.kind = 'wait' THEN coalesce($5 + d.wait_for, "
						   "                             cdp.journey_next_local(d.profile_id, d.wait_until, $5)) "
						   "                        WHEN d.kind = 'wait_for' THEN $5 + d.timeout "
						   "                        ELSE $5 END, "
						   "          waiting_event = CASE WHEN d.kind = 'wait_for' THEN d.event END, "
						   "          waiting_keys = CASE WHEN d.kind = 'wait_for' AND d.match IS NOT NULL "
						   "              THEN (SELECT jsonb_object_agg(k, coalesce(d.entry_properties -> k, 'null')) "
						   "                    FROM unnest(d.match) AS k) END, "
						   "          ended_at = CASE WHEN d.to_step IS NULL THEN $5 END, "
						   "          why = CASE WHEN d.to_step IS NOT NULL THEN NULL "
						   "                     WHEN d.why LIKE 'exit%' THEN d.why "
						   "                     ELSE 'completed' END "
						   "      FROM d WHERE s.state_id = d.state_id "
						   "      RETURNING s.state_id, s.status = 'active' AND s.due_at <= $5 AS again), "
						   "l AS (INSERT INTO cdp.journey_log (state_id, profile_id, journey, version, "
						   "                                   from_step, to_step, why, outbox_id, at) "
						   "      SELECT state_id, profile_id, journey, version, "
						   "             CASE WHEN why = 'entered' THEN NULL ELSE from_step END, "
						   "             to_step, why, outbox_id, $5 FROM d) "
						   "SELECT state_id FROM u WHERE again", 5, types);
	elems = palloc(sizeof(Datum) * m->n);
	nulls = palloc(sizeof(bool) * m->n);
	for (int i = 0; i < m->n; i++)
	{
		elems[i] = Int64GetDatum(m->outbox[i]);
		nulls[i] = !m->has_outbox[i];
	}
	dims[0] = m->n;
	outbox = construct_md_array(elems, nulls, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL,
								TYPALIGN_DOUBLE);
	args[0] = cdp_int8_array(m->ids, m->n);
	args[1] = cdp_text_array(m->tos, m->n);
	args[2] = cdp_text_array(m->whys, m->n);
	args[3] = PointerGetDatum(outbox);
	args[4] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	n = SPI_processed;
	if (n > 0)
	{
		*again = palloc(sizeof(int64) * n);
		(void) cdp_spi_int64_column(*again);
	}
	m->n = 0;
	return n;
}

/* a group that failed: its journey records why, its states try again later */
static void
defer_states(int64 *ids, int n, const char *journey, const char *message)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		args[2];

	if (plan == NULL)
		plan = cdp_prepare("UPDATE cdp.journey_states SET due_at = $2 + interval '1 minute' "
						   "WHERE state_id = ANY($1)", 2, types);
	args[0] = cdp_int8_array(ids, n);
	args[1] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(plan, args, SPI_OK_UPDATE);
	record_error(journey, message);
}

/* ---- running due steps ---- */

typedef struct Claimed
{
	int64		id;
	char	   *kind;
	char	   *journey;
	int			version;
	char	   *step;
} Claimed;

static const char *const kind_sql[][2] = {
	{"wait",
		"SELECT s.state_id, t.next, 'waited', NULL::int8 "
		"FROM cdp.journey_states s JOIN cdp.journey_steps t ON t.journey = s.journey "
		" AND t.version = s.version AND t.step = s.step "
	"WHERE s.state_id = ANY($1)"},
	{"wait_for",
		"SELECT s.state_id, t.on_timeout, 'timed out', NULL::int8 "
		"FROM cdp.journey_states s JOIN cdp.journey_steps t ON t.journey = s.journey "
		" AND t.version = s.version AND t.step = s.step "
	"WHERE s.state_id = ANY($1)"},
	{"exit",
		"SELECT s.state_id, NULL::text, 'exit step', NULL::int8 "
	"FROM cdp.journey_states s WHERE s.state_id = ANY($1)"},
	{"split",
		"WITH x AS (SELECT s.state_id, t.step, t.arms, "
		"  coalesce(s.arms ->> t.step, "
		"    (SELECT a ->> 'name' FROM jsonb_array_elements(t.arms) WITH ORDINALITY AS e(a, k) "
		"     WHERE ((hashtextextended(s.journey || '/' || s.profile_id, 0) % 100) + 100) % 100 "
		"           < (SELECT sum((b ->> 'weight')::int) "
		"              FROM jsonb_array_elements(t.arms) WITH ORDINALITY AS f(b, j) WHERE j <= k) "
		"     ORDER BY k LIMIT 1)) AS arm "
		"  FROM cdp.journey_states s JOIN cdp.journey_steps t ON t.journey = s.journey "
		"   AND t.version = s.version AND t.step = s.step "
		"  WHERE s.state_id = ANY($1)), "
		"u AS (UPDATE cdp.journey_states s SET arms = s.arms || jsonb_build_object(x.step, x.arm) "
		"      FROM x WHERE s.state_id = x.state_id) "
		"SELECT x.state_id, (SELECT a ->> 'next' FROM jsonb_array_elements(x.arms) AS a "
		"                    WHERE a ->> 'name' = x.arm), 'split: ' || x.arm, NULL::int8 "
	"FROM x"},
	{"branch_segment",
		"SELECT s.state_id, "
		"CASE WHEN cdp.in_segment(s.profile_id, t.segment) THEN t.then_step ELSE t.else_step END, "
		"CASE WHEN cdp.in_segment(s.profile_id, t.segment) THEN 'in segment ' ELSE 'not in segment ' END "
		"  || t.segment, NULL::int8 "
		"FROM cdp.journey_states s JOIN cdp.journey_steps t ON t.journey = s.journey "
		" AND t.version = s.version AND t.step = s.step "
	"WHERE s.state_id = ANY($1) AND t.segment IS NOT NULL"},
};

static SPIPlanPtr kind_plans[lengthof(kind_sql)];

static int
kind_index(const char *kind)
{
	for (int i = 0; i < lengthof(kind_sql); i++)
		if (strcmp(kind_sql[i][0], kind) == 0)
			return i;
	return -1;
}

/* runs one kind's statement over its group, adding the moves */
static void
run_kind(int k, int64 *ids, int n, const char *journey, Moves *m)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1];
	HeapTuple  *rows = NULL;
	TupleDesc	desc = NULL;
	uint64		nrows;
	ErrorData  *err;

	if (kind_plans[k] == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(kind_sql[k][1], 1, types);

		if (p == NULL)
		{
			defer_states(ids, n, journey,
						 psprintf("the %s statement does not prepare: %s", kind_sql[k][0],
								  SPI_result_code_string(SPI_result)));
			return;
		}
		SPI_keepplan(p);
		kind_plans[k] = p;
	}
	args[0] = cdp_int8_array(ids, n);
	err = run_guarded(kind_plans[k], args, NULL, InvalidOid, &rows, &desc, &nrows);
	if (err)
	{
		defer_states(ids, n, journey, err->message);
		return;
	}
	moves_add_rows(m, rows, desc, nrows);
}

/*
 * cdp_enqueue_many in a subtransaction: the error instead of raising it,
 * the subtransaction rolled back.
 */
static ErrorData *
enqueue_guarded(const char *channel, const char *template, int n, int64 *pids,
				Jsonb **payloads, char **keys, int64 *outbox)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	ErrorData  *volatile err = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		cdp_enqueue_many(channel, template, n, pids, payloads, keys, outbox);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_END_TRY();
	return err;
}

/*
 * send steps: the messages of each journey, channel and template in one
 * batch enqueue through the policy.  A group that fails (its template
 * dropped since the journey was defined) records why on its journey, and
 * its states try again later.  Holdout states move on and send nothing.
 */
static void
run_sends(int64 *ids, int n, Moves *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1];
	int			k;
	int64	   *sids,
			   *pids;
	char	  **nexts,
			  **channels,
			  **templates,
			  **keys,
			  **journeys;
	bool	   *holdout;
	Jsonb	  **payloads;

	if (plan == NULL)
		plan = cdp_prepare("SELECT s.state_id, s.profile_id, t.next, s.holdout, t.channel, t.template, "
						   "s.entry_properties || coalesce(t.payload, '{}'), "
						   "concat_ws('/', 'journey', s.journey, s.version, s.profile_id, s.state_id, "
						   "          t.step), s.journey "
						   "FROM cdp.journey_states s JOIN cdp.journey_steps t ON t.journey = s.journey "
						   " AND t.version = s.version AND t.step = s.step "
						   "WHERE s.state_id = ANY($1) ORDER BY s.journey, t.channel, t.template, s.state_id",
						   1, types);
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	k = SPI_processed;
	if (k == 0)
		return;
	sids = palloc(sizeof(int64) * k);
	pids = palloc(sizeof(int64) * k);
	nexts = palloc(sizeof(char *) * k);
	channels = palloc(sizeof(char *) * k);
	templates = palloc(sizeof(char *) * k);
	keys = palloc(sizeof(char *) * k);
	journeys = palloc(sizeof(char *) * k);
	holdout = palloc(sizeof(bool) * k);
	payloads = palloc(sizeof(Jsonb *) * k);
	for (int r = 0; r < k; r++)
	{
		HeapTuple	t = SPI_tuptable->vals[r];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;

		sids[r] = getint8(t, d, 1, &isnull);
		pids[r] = getint8(t, d, 2, &isnull);
		nexts[r] = getstr(t, d, 3);
		holdout[r] = DatumGetBool(SPI_getbinval(t, d, 4, &isnull));
		channels[r] = getstr(t, d, 5);
		templates[r] = getstr(t, d, 6);
		payloads[r] = DatumGetJsonbPCopy(SPI_getbinval(t, d, 7, &isnull));
		keys[r] = getstr(t, d, 8);
		journeys[r] = getstr(t, d, 9);
	}

	for (int g = 0; g < k;)
	{
		int			end = g,
					nsend = 0;
		int64	   *gids = palloc(sizeof(int64) * k);
		int64	   *gpids = palloc(sizeof(int64) * k);
		int64	   *gbox = palloc(sizeof(int64) * k);
		Jsonb	  **gpayloads = palloc(sizeof(Jsonb *) * k);
		char	  **gkeys = palloc(sizeof(char *) * k);
		int		   *grow = palloc(sizeof(int) * k);
		ErrorData  *err;

		while (end < k && strcmp(journeys[end], journeys[g]) == 0 &&
			   strcmp(channels[end], channels[g]) == 0 && strcmp(templates[end], templates[g]) == 0)
		{
			if (holdout[end])
				moves_add(m, sids[end], nexts[end], "holdout", false, 0);
			else
			{
				gids[nsend] = sids[end];
				gpids[nsend] = pids[end];
				gpayloads[nsend] = payloads[end];
				gkeys[nsend] = keys[end];
				grow[nsend] = end;
				nsend++;
			}
			end++;
		}
		CHECK_FOR_INTERRUPTS();
		err = nsend ? enqueue_guarded(channels[g], templates[g], nsend, gpids, gpayloads, gkeys,
									  gbox) : NULL;
		if (err)
			defer_states(gids, nsend, journeys[g], err->message);
		else
			for (int i = 0; i < nsend; i++)
				moves_add(m, gids[i], nexts[grow[i]], gbox[i] ? "sent" : "not sent: no profile",
						  gbox[i] != 0, gbox[i]);
		g = end;
	}
}

/* update steps: identify traits set through survivorship, source 'journey' */
static void
run_updates(int64 *ids, int n, const char *journey, Moves *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1];
	CdpTraitFold fold = {0};
	int64	   *pids;
	TimestampTz now = cdp_now();

	if (plan == NULL)
		plan = cdp_prepare("SELECT s.state_id, s.profile_id, jsonb_build_object(t.trait, t.value), "
						   "t.next, t.trait FROM cdp.journey_states s "
						   "JOIN cdp.journey_steps t ON t.journey = s.journey "
						   " AND t.version = s.version AND t.step = s.step "
						   "WHERE s.state_id = ANY($1) ORDER BY s.profile_id", 1, types);
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	pids = palloc(sizeof(int64) * Max(1, SPI_processed));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	t = SPI_tuptable->vals[r];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = getint8(t, d, 1, &isnull);
		Jsonb	   *traits = DatumGetJsonbPCopy(SPI_getbinval(t, d, 3, &isnull));

		pids[r] = getint8(t, d, 2, &isnull);
		cdp_trait_fold_add(&fold, pids[r], traits, cdp_traits_meta_for(traits, now, "journey"));
		moves_add(m, id, getstr(t, d, 4), psprintf("updated %s", getstr(t, d, 5)), false, 0);
	}
	if (fold.n > 0)
	{
		int			np = fold.n;

		cdp_trait_fold_apply(&fold);
		cdp_mark_profiles_changed(fold.ids, np, "journey");
	}
}

/* branch steps with a condition: one statement per step, as the owner */
static void
run_branch(JCondStep *c, int64 *ids, int n, Moves *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		args[1];
	int64	   *sids,
			   *pids;
	char	  **events,
			  **thens,
			  **elses;
	Jsonb	  **props;
	TimestampTz *times;
	bool	   *pass;
	int			k;

	if (plan == NULL)
		plan = cdp_prepare("SELECT s.state_id, s.profile_id, s.entry_event, s.entry_properties, "
						   "s.entered_at, t.then_step, t.else_step FROM cdp.journey_states s "
						   "JOIN cdp.journey_steps t ON t.journey = s.journey "
						   " AND t.version = s.version AND t.step = s.step "
						   "WHERE s.state_id = ANY($1)", 1, types);
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	k = SPI_processed;
	sids = palloc(sizeof(int64) * Max(k, 1));
	pids = palloc(sizeof(int64) * Max(k, 1));
	events = palloc(sizeof(char *) * Max(k, 1));
	thens = palloc(sizeof(char *) * Max(k, 1));
	elses = palloc(sizeof(char *) * Max(k, 1));
	props = palloc(sizeof(Jsonb *) * Max(k, 1));
	times = palloc(sizeof(TimestampTz) * Max(k, 1));
	pass = palloc(sizeof(bool) * Max(k, 1));
	for (int r = 0; r < k; r++)
	{
		HeapTuple	t = SPI_tuptable->vals[r];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;

		sids[r] = getint8(t, d, 1, &isnull);
		pids[r] = getint8(t, d, 2, &isnull);
		events[r] = getstr(t, d, 3);
		props[r] = DatumGetJsonbPCopy(SPI_getbinval(t, d, 4, &isnull));
		times[r] = DatumGetTimestampTz(SPI_getbinval(t, d, 5, &isnull));
		thens[r] = getstr(t, d, 6);
		elses[r] = getstr(t, d, 7);
	}
	if (k == 0)
		return;
	if (!filter_condition(&c->plan, c->condition, c->owner, c->journey, k, pids, events, props,
						  times, pass))
	{
		defer_states(sids, k, c->journey, "the branch's condition failed");
		return;
	}
	for (int r = 0; r < k; r++)
		moves_add(m, sids[r], pass[r] ? thens[r] : elses[r],
				  pass[r] ? "condition true" : "condition false", false, 0);
}

static JCondStep *
find_cond(const char *journey, int version, const char *step)
{
	for (int i = 0; i < cache.nconds; i++)
		if (cache.conds[i].version == version && strcmp(cache.conds[i].journey, journey) == 0 &&
			strcmp(cache.conds[i].step, step) == 0)
			return &cache.conds[i];
	return NULL;
}

/*
 * Runs the steps of claimed states (locked by the caller), grouped: one
 * statement per kind, and per step for branches with a condition.
 */
static int
run_claimed(Claimed *cl, int n, int64 **again)
{
	Moves		m = {0};
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	bool	   *done = palloc0(sizeof(bool) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		int			k = 0;
		JCondStep  *c = NULL;
		bool		is_branch = strcmp(cl[i].kind, "branch") == 0;
		bool		is_update = strcmp(cl[i].kind, "update") == 0;

		if (done[i])
			continue;
		if (is_branch)
			c = find_cond(cl[i].journey, cl[i].version, cl[i].step);
		/* the group: same kind (and for a conditional branch, same step) */
		for (int j = i; j < n; j++)
		{
			bool		same = !done[j] && strcmp(cl[j].kind, cl[i].kind) == 0;

			if (same && is_branch)
				same = (c == NULL) == (find_cond(cl[j].journey, cl[j].version, cl[j].step) == NULL);
			if (same && c)
				same = cl[j].version == cl[i].version && strcmp(cl[j].journey, cl[i].journey) == 0 &&
					strcmp(cl[j].step, cl[i].step) == 0;
			if (same)
			{
				ids[k++] = cl[j].id;
				done[j] = true;
			}
		}
		CHECK_FOR_INTERRUPTS();
		if (c)
			run_branch(c, ids, k, &m);
		else if (strcmp(cl[i].kind, "send") == 0)
			run_sends(ids, k, &m);
		else if (is_update)
			run_updates(ids, k, cl[i].journey, &m);
		else
		{
			int			ki = kind_index(is_branch ? "branch_segment" : cl[i].kind);

			if (ki >= 0)
				run_kind(ki, ids, k, cl[i].journey, &m);
		}
	}
	return apply_moves(&m, again);
}

static int
claim(SPIPlanPtr plan, Datum *args, Claimed **out)
{
	int			n;

	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	n = SPI_processed;
	*out = palloc(sizeof(Claimed) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;

		(*out)[i].id = getint8(t, d, 1, &isnull);
		(*out)[i].kind = getstr(t, d, 2);
		(*out)[i].journey = getstr(t, d, 3);
		(*out)[i].version = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		(*out)[i].step = getstr(t, d, 5);
	}
	return n;
}

#define CLAIM_SELECT \
	"SELECT s.state_id, t.kind, s.journey, s.version, s.step " \
	"FROM cdp.journey_states s JOIN cdp.journeys j ON j.name = s.journey " \
	"JOIN cdp.journey_steps t ON t.journey = s.journey AND t.version = s.version " \
	" AND t.step = s.step " \
	"WHERE s.status = 'active' AND s.due_at <= $1 AND j.status = 'active' "

/* Runs the given states (already locked) while they land on steps due now. */
static int64
run_states(int64 *ids, int n)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TIMESTAMPTZOID, INT8ARRAYOID};
	Datum		args[2];
	int64		total = 0;

	if (plan == NULL)
		plan = cdp_prepare(CLAIM_SELECT "AND s.state_id = ANY($2) ORDER BY s.state_id "
						   "FOR UPDATE OF s", 2, types);
	for (int round = 0; n > 0 && round < MAX_ROUNDS; round++)
	{
		Claimed    *cl;
		int64	   *again;
		int			k;

		args[0] = TimestampTzGetDatum(cdp_now());
		args[1] = cdp_int8_array(ids, n);
		k = claim(plan, args, &cl);
		total += k;
		n = run_claimed(cl, k, &again);
		ids = again;
	}
	return total;
}

/* The worker's task: one batch of due states, then their steps due at once. */
static int64
task_journeys(bool *more)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2];
	Claimed    *cl;
	int64	   *again;
	int			n,
				k;

	load_journeys();
	if (!cache.present)
		return 0;
	if (plan == NULL)
		plan = cdp_prepare(CLAIM_SELECT "ORDER BY s.due_at LIMIT $2 FOR UPDATE OF s SKIP LOCKED",
						   2, types);
	args[0] = TimestampTzGetDatum(cdp_now());
	args[1] = Int32GetDatum(journey_batch_size);
	n = claim(plan, args, &cl);
	if (n == 0)
		return 0;
	k = run_claimed(cl, n, &again);
	if (k > 0)
		n += run_states(again, k);
	*more = n >= journey_batch_size;
	return n;
}

/*
 * The worker's next wake-up: the earliest due time of an active state of
 * an active journey (the due index, read in order until one qualifies).
 */
static TimestampTz
journeys_next_due(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		d;

	if (!cache.present)
		return DT_NOEND;
	if (plan == NULL)
		plan = cdp_prepare("SELECT s.due_at FROM cdp.journey_states s "
						   "WHERE s.status = 'active' AND s.due_at IS NOT NULL "
						   "AND EXISTS (SELECT 1 FROM cdp.journeys j "
						   "            WHERE j.name = s.journey AND j.status = 'active') "
						   "ORDER BY s.due_at LIMIT 1", 0, NULL);
	cdp_spi_exec(plan, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return DT_NOEND;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/* ---- events ---- */

/*
 * The batch's relevant events travel as arrays: profile ids, names,
 * properties, times.
 */
typedef struct Batch
{
	int			n;
	int64	   *pids;
	char	  **events;
	Jsonb	  **props;
	TimestampTz *times;
} Batch;

static void
run_exits(Batch *b, Moves *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID};
	Datum		args[3];

	if (plan == NULL)
		plan = cdp_prepare("SELECT DISTINCT ON (x.state_id) x.state_id, NULL::text, x.why, NULL::int8 "
						   "FROM (SELECT s.state_id, "
						   "      CASE WHEN b.event = 'Segment Exited' "
						   "           AND b.props ->> 'segment' = ANY (v.exit_segments) "
						   "           THEN 'exit: left segment ' || (b.props ->> 'segment') "
						   "           ELSE 'exit: ' || b.event END AS why "
						   "      FROM unnest($1::int8[], $2::text[], $3::jsonb[]) AS b(pid, event, props) "
						   "      JOIN cdp.journey_states s ON s.profile_id = b.pid AND s.status = 'active' "
						   "      JOIN cdp.journeys j ON j.name = s.journey AND j.status = 'active' "
						   "      JOIN cdp.journey_versions v ON v.journey = s.journey "
						   "       AND v.version = s.version "
						   "      WHERE b.event = ANY (v.exit_events) "
						   "         OR (b.event = 'Segment Exited' "
						   "             AND b.props ->> 'segment' = ANY (v.exit_segments)) "
						   "      FOR UPDATE OF s) x ORDER BY x.state_id", 3, types);
	args[0] = cdp_int8_array(b->pids, b->n);
	args[1] = cdp_text_array(b->events, b->n);
	args[2] = cdp_jsonb_array(b->props, b->n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		moves_add(m, getint8(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull), NULL,
				  getstr(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3), false, 0);
	}
}

static void
run_goals(Batch *b)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[3];

	if (plan == NULL)
		plan = cdp_prepare("UPDATE cdp.journey_states s SET converted_at = b.at "
						   "FROM unnest($1::int8[], $2::text[], $3::timestamptz[]) AS b(pid, event, at), "
						   "cdp.journey_versions v "
						   "WHERE s.profile_id = b.pid AND s.converted_at IS NULL "
						   "AND v.journey = s.journey AND v.version = s.version "
						   "AND v.goal_event = b.event AND b.at >= s.entered_at "
						   "AND b.at <= s.entered_at + v.goal_within", 3, types);
	args[0] = cdp_int8_array(b->pids, b->n);
	args[1] = cdp_text_array(b->events, b->n);
	args[2] = cdp_timestamptz_array(b->times, b->n);
	cdp_spi_exec(plan, args, SPI_OK_UPDATE);
}

/*
 * wait_for states the batch satisfies, locked (and so rechecked against a
 * worker timing them out): those without a condition move on the first
 * event; for steps with a condition, one statement per step as the owner
 * picks the events that pass, and the state moves on the first of them.
 */
static void
run_wait_fors(Batch *b, Moves *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID};
	Datum		args[3];
	SPITupleTable *tt;
	int			nc,
				k = 0,
				nmoved = 0;
	int64	   *cids,
			   *moved;
	int		   *cidx,
			   *cversions;
	char	  **csteps,
			  **cjourneys,
			  **cnext;
	bool	   *cdone;

	if (plan == NULL)
		plan = cdp_prepare("SELECT s.state_id, t.on_event, 'event ' || b.event, b.i, "
						   "t.condition IS NOT NULL, s.journey, s.version, s.step "
						   "FROM unnest($1::int8[], $2::text[], $3::jsonb[]) WITH ORDINALITY "
						   "     AS b(pid, event, props, i) "
						   "JOIN cdp.journey_states s ON s.profile_id = b.pid "
						   " AND s.status = 'active' AND s.waiting_event = b.event "
						   "JOIN cdp.journeys j ON j.name = s.journey AND j.status = 'active' "
						   "JOIN cdp.journey_steps t ON t.journey = s.journey "
						   " AND t.version = s.version AND t.step = s.step AND t.kind = 'wait_for' "
						   "WHERE (s.waiting_keys IS NULL OR b.props @> s.waiting_keys) "
						   "ORDER BY s.state_id, b.i FOR UPDATE OF s", 3, types);
	args[0] = cdp_int8_array(b->pids, b->n);
	args[1] = cdp_text_array(b->events, b->n);
	args[2] = cdp_jsonb_array(b->props, b->n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	nc = SPI_processed;
	if (nc == 0)
		return;
	tt = SPI_tuptable;
	cids = palloc(sizeof(int64) * nc);
	moved = palloc(sizeof(int64) * nc);
	cidx = palloc(sizeof(int) * nc);
	cversions = palloc(sizeof(int) * nc);
	csteps = palloc(sizeof(char *) * nc);
	cjourneys = palloc(sizeof(char *) * nc);
	cnext = palloc(sizeof(char *) * nc);
	cdone = palloc0(sizeof(bool) * nc);
	for (int r = 0; r < nc; r++)
	{
		HeapTuple	t = tt->vals[r];
		TupleDesc	d = tt->tupdesc;
		bool		isnull;
		int64		id = getint8(t, d, 1, &isnull);

		if (!DatumGetBool(SPI_getbinval(t, d, 5, &isnull)))
		{
			/* rows come by state, then event: the first event moves it */
			if (nmoved == 0 || moved[nmoved - 1] != id)
			{
				moved[nmoved++] = id;
				moves_add(m, id, getstr(t, d, 2), getstr(t, d, 3), false, 0);
			}
			continue;
		}
		cids[k] = id;
		cnext[k] = getstr(t, d, 2);
		cidx[k] = (int) getint8(t, d, 4, &isnull) - 1;
		cjourneys[k] = getstr(t, d, 6);
		cversions[k] = DatumGetInt32(SPI_getbinval(t, d, 7, &isnull));
		csteps[k] = getstr(t, d, 8);
		k++;
	}
	nc = k;
	for (int i = 0; i < nc; i++)
	{
		JCondStep  *c;
		int			g = 0;
		int64	   *pids;
		char	  **events;
		Jsonb	  **props;
		TimestampTz *times;
		int		   *which;
		bool	   *pass;

		if (cdone[i])
			continue;
		pids = palloc(sizeof(int64) * nc);
		events = palloc(sizeof(char *) * nc);
		props = palloc(sizeof(Jsonb *) * nc);
		times = palloc(sizeof(TimestampTz) * nc);
		which = palloc(sizeof(int) * nc);
		pass = palloc(sizeof(bool) * nc);
		c = find_cond(cjourneys[i], cversions[i], csteps[i]);
		for (int j = i; j < nc; j++)
			if (!cdone[j] && cversions[j] == cversions[i] &&
				strcmp(cjourneys[j], cjourneys[i]) == 0 && strcmp(csteps[j], csteps[i]) == 0)
			{
				pids[g] = b->pids[cidx[j]];
				events[g] = b->events[cidx[j]];
				props[g] = b->props[cidx[j]];
				times[g] = b->times[cidx[j]];
				which[g++] = j;
				cdone[j] = true;
			}
		if (c == NULL ||
			!filter_condition(&c->plan, c->condition, c->owner, c->journey, g, pids, events,
							  props, times, pass))
			continue;
		for (int r = 0; r < g; r++)
		{
			int64		id = cids[which[r]];
			bool		seen = false;

			for (int x = 0; x < nmoved && !seen; x++)
				seen = moved[x] == id;
			if (!pass[r] || seen)
				continue;
			moved[nmoved++] = id;
			moves_add(m, id, cnext[which[r]], psprintf("event %s", events[r]), false, 0);
		}
	}
}

/*
 * Entries of one journey version: the batch rows that match it.  One
 * statement inserts the states on the first step, already scheduled as
 * that step's kind says, and logs them; *nnew counts them, and those due at
 * once are added to *due (*ndue).
 */
static void
run_entry(JVersion *v, Batch *b, int *nnew, int64 **due, int *ndue)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[10] = {TEXTOID, INT4OID, TEXTOID, TEXTOID, INTERVALOID, INT4OID,
	TIMESTAMPTZOID, INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID};
	Datum		args[10];
	char		nulls[10];
	int64	   *pids = palloc(sizeof(int64) * b->n);
	char	  **events = palloc(sizeof(char *) * b->n);
	Jsonb	  **props = palloc(sizeof(Jsonb *) * b->n);
	TimestampTz *times = palloc(sizeof(TimestampTz) * b->n);
	bool	   *pass = palloc(sizeof(bool) * b->n);
	int			k = 0,
				kept = 0;

	for (int i = 0; i < b->n; i++)
	{
		bool		match;

		if (v->entry_event)
			match = strcmp(b->events[i], v->entry_event) == 0;
		else
		{
			bool		is_string;
			char	   *seg = strcmp(b->events[i], "Segment Entered") == 0 && b->props[i] ?
				cdp_jsonb_get_text(b->props[i], "segment", &is_string) : NULL;

			match = seg && strcmp(seg, v->entry_segment) == 0;
		}
		if (!match)
			continue;
		pids[k] = b->pids[i];
		events[k] = b->events[i];
		props[k] = b->props[i];
		times[k] = b->times[i];
		k++;
	}
	if (k == 0)
		return;
	if (v->entry_condition)
	{
		if (!filter_condition(&v->cond_plan, v->entry_condition, v->owner, v->journey, k, pids,
							  events, props, times, pass))
			return;
		for (int i = 0; i < k; i++)
			if (pass[i])
			{
				pids[kept] = pids[i];
				events[kept] = events[i];
				props[kept] = props[i];
				times[kept] = times[i];
				kept++;
			}
		k = kept;
		if (k == 0)
			return;
	}
	if (plan == NULL)
		plan = cdp_prepare("WITH b AS (SELECT DISTINCT ON (CASE WHEN $4 = 'always' THEN b.i ELSE b.pid END) "
						   "           b.pid, b.event, coalesce(b.props, '{}') AS props "
						   "           FROM unnest($8::int8[], $9::text[], $10::jsonb[]) "
						   "           WITH ORDINALITY AS b(pid, event, props, i) "
						   "           ORDER BY CASE WHEN $4 = 'always' THEN b.i ELSE b.pid END, b.i), "
						   "ins AS (INSERT INTO cdp.journey_states (journey, version, profile_id, step, "
						   "        status, due_at, entered_at, entry_event, entry_properties, holdout, "
						   "        waiting_event, waiting_keys) "
						   "        SELECT $1, $2, b.pid, $3, 'active', "
						   "        CASE t.kind WHEN 'wait' THEN coalesce($7 + t.wait_for, "
						   "                         cdp.journey_next_local(b.pid, t.wait_until, $7)) "
						   "                    WHEN 'wait_for' THEN $7 + t.timeout ELSE $7 END, "
						   "        $7, b.event, b.props, "
						   "        ((hashtextextended($1 || '/holdout/' || b.pid, 0) % 100) + 100) % 100 < $6, "
						   "        CASE WHEN t.kind = 'wait_for' THEN t.event END, "
						   "        CASE WHEN t.kind = 'wait_for' AND t.match IS NOT NULL "
						   "             THEN (SELECT jsonb_object_agg(k, coalesce(b.props -> k, 'null')) "
						   "                   FROM unnest(t.match) AS k) END "
						   "        FROM b JOIN cdp.journey_steps t ON t.journey = $1 AND t.version = $2 "
						   "         AND t.step = $3 "
						   "        WHERE $4 = 'always' "
						   "           OR NOT EXISTS (SELECT 1 FROM cdp.journey_states s "
						   "                          WHERE s.profile_id = b.pid AND s.journey = $1 "
						   "                            AND ($4 = 'never' OR s.entered_at > $7 - $5)) "
						   "        RETURNING state_id, profile_id, due_at), "
						   "l AS (INSERT INTO cdp.journey_log (state_id, profile_id, journey, version, "
						   "      from_step, to_step, why, at) "
						   "      SELECT state_id, profile_id, $1, $2, NULL, $3, 'entered', $7 FROM ins) "
						   "SELECT state_id, due_at <= $7 FROM ins", 10, types);
	memset(nulls, ' ', sizeof(nulls));
	args[0] = CStringGetTextDatum(v->journey);
	args[1] = Int32GetDatum(v->version);
	args[2] = CStringGetTextDatum(v->first_step);
	args[3] = CStringGetTextDatum(v->reentry);
	if (v->cooldown)
		args[4] = DirectFunctionCall3(interval_in, CStringGetDatum(v->cooldown),
									  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	else
	{
		args[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	args[5] = Int32GetDatum(v->holdout);
	args[6] = TimestampTzGetDatum(cdp_now());
	args[7] = cdp_int8_array(pids, k);
	args[8] = cdp_text_array(events, k);
	args[9] = cdp_jsonb_array(props, k);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not enter journey states");
	if (SPI_processed == 0)
		return;
	*nnew += SPI_processed;
	*due = *due ? repalloc(*due, sizeof(int64) * (*ndue + SPI_processed)) :
		palloc(sizeof(int64) * SPI_processed);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		now_due = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull && DatumGetBool(now_due))
			(*due)[(*ndue)++] = getint8(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
	}
}

/*
 * journey_events_written: the event writer's hook.  Exits, goals,
 * wait_fors, entries, then the steps due at once, in the writing
 * transaction.
 */
static void
journey_events_written(CdpMessage *msgs, int nmsgs)
{
	Batch		b = {0};
	Moves		m = {0};
	int64	   *again;
	int			nagain;
	int			nnew = 0;
	bool		moved = false;
	int			roles = 0;

	load_journeys();
	if (!cache.present || cache.nversions == 0)
		return;
	for (int i = 0; i < nmsgs; i++)
	{
		CdpMessage *msg = &msgs[i];
		int			r;

		if (msg->err.sqlerrcode || msg->duplicate || msg->event == NULL ||
			(r = event_roles(msg->event)) == 0)
			continue;
		if (b.n == 0)
		{
			b.pids = palloc(sizeof(int64) * nmsgs);
			b.events = palloc(sizeof(char *) * nmsgs);
			b.props = palloc(sizeof(Jsonb *) * nmsgs);
			b.times = palloc(sizeof(TimestampTz) * nmsgs);
		}
		b.pids[b.n] = msg->profile_id;
		b.events[b.n] = msg->event;
		b.props[b.n] = msg->properties;
		b.times[b.n] = msg->occurred_at;
		b.n++;
		roles |= r;
	}
	if (b.n == 0)
		return;

	/* only the statements some event of the batch can concern */
	if (roles & ROLE_EXIT)
	{
		run_exits(&b, &m);
		(void) apply_moves(&m, &again);
	}
	if (roles & ROLE_GOAL)
		run_goals(&b);
	nagain = 0;
	again = NULL;
	if (roles & ROLE_WAIT_FOR)
	{
		run_wait_fors(&b, &m);
		moved = m.n > 0;
		nagain = apply_moves(&m, &again);
	}
	if (roles & ROLE_ENTRY)
		for (int v = 0; v < cache.nversions; v++)
			if (cache.versions[v].current)
				run_entry(&cache.versions[v], &b, &nnew, &again, &nagain);
	if (nagain > 0)
		(void) run_states(again, nagain);
	/* a state may now be due sooner than the worker's next wake-up */
	if (moved || nnew > 0)
		cdp_wake_worker_at_commit();
}
