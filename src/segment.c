/*-------------------------------------------------------------------------
 *
 * segment.c
 *	  Segments: their definitions, their per-profile tables and the SQL
 *	  functions cdp.create_segment, cdp.refresh_segment, cdp.drop_segment
 *	  and cdp.in_segment.
 *
 * A segment is a boolean predicate over cdp.customers, validated like a
 * trait's "where" (predicate.c), which may name other segments with
 * cdp.in_segment(profile_id, 'name').  Those must exist when it is created
 * and it cannot name itself, so segments only ever name older ones: the
 * order of segment_id is an order of evaluation, and no cycle can form.
 * Each segment gets a level (0, or one more than the highest it names);
 * segments of one level and owner are evaluated by one statement.
 *
 * The predicate is the owner's SQL and always runs with the owner's
 * rights (a cdp_admin member), never the worker's or the caller's.
 *
 * Members, history and pending profiles follow merges, unmerges and
 * erasures through the registry.  A merge retires the losers: their
 * memberships move to the winner (see segment_tables), which, marked
 * changed by the merge, is evaluated again.  An unmerge marks both sides
 * and leaves rows where they are for that evaluation to put right.  An
 * erasure removes every row of the person, history included.
 *
 * Evaluation itself is in segment_eval.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "predicate.h"
#include "registry.h"
#include "segment.h"
#include "status.h"
#include "util.h"
#include "worker.h"

int			cdp_segment_batch_size = 10000;

SegmentCache cdp_segments;

static pg_atomic_uint64 *segments_generation = NULL;
static bool cache_stale_here = true;

/*
 * While an evaluation runs, the definitions stay as they are: a predicate
 * calling cdp.in_segment must not free the plans being run.
 */
static int	cache_pinned = 0;
static bool pin_callback = false;

static void
unpin_at_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		cache_pinned = 0;
}

void
cdp_segments_pin(bool pin)
{
	if (!pin_callback)
	{
		RegisterXactCallback(unpin_at_end, NULL);
		pin_callback = true;
	}
	cache_pinned += pin ? 1 : -1;
}

/* the members' count follows rows that leave with a merge or an erasure */
#define DROP_MEMBERS_SQL \
	"WITH d AS (SELECT m.segment_id, count(*) AS n FROM cdp.segment_members m " \
	"           WHERE m.profile_id = ANY($1) GROUP BY m.segment_id), " \
	"u AS (UPDATE cdp.segments s SET members = s.members - d.n FROM d " \
	"      WHERE s.segment_id = d.segment_id) "

static const CdpProfileTable segment_tables[] = {
	{
		/*
		 * The losers' memberships move to their winner (the person stays
		 * in), logged as the loser's exit and the winner's entry, both of
		 * cause merge and without events: the person's timeline, which the
		 * losers' events join, already has the entry.  The winner, marked
		 * changed by the merge, is evaluated again, and leaves with a
		 * Segment Exited event only if the merged person no longer
		 * qualifies.
		 */
		.name = "segment_members",
		.relation = "cdp.segment_members",
		.order = 600,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql =
		"WITH x AS (DELETE FROM cdp.segment_members m WHERE m.profile_id = ANY($1) "
		"           RETURNING m.segment_id, m.profile_id, m.entered_at), "
		"w AS (SELECT DISTINCT ON (y.segment_id, y.winner) y.segment_id, y.winner, y.entered_at "
		"      FROM (SELECT x.segment_id, x.entered_at, "
		"                   ($2::int8[])[array_position($1::int8[], x.profile_id)] AS winner "
		"            FROM x) y "
		"      ORDER BY y.segment_id, y.winner, y.entered_at), "
		"moved AS (INSERT INTO cdp.segment_members AS m (segment_id, profile_id, entered_at) "
		"          SELECT w.segment_id, w.winner, w.entered_at FROM w ORDER BY 1, 2 "
		"          ON CONFLICT DO NOTHING RETURNING m.segment_id, m.profile_id), "
		"c AS (SELECT x.segment_id, x.profile_id, 'exited' AS change, 0 AS k FROM x "
		"      UNION ALL SELECT moved.segment_id, moved.profile_id, 'entered', 1 FROM moved), "
		"u AS (UPDATE cdp.segments s SET members = s.members + d.n "
		"      FROM (SELECT c.segment_id, sum(CASE c.k WHEN 0 THEN -1 ELSE 1 END) AS n "
		"            FROM c GROUP BY c.segment_id) d "
		"      WHERE s.segment_id = d.segment_id) "
		"INSERT INTO cdp.segment_changes (segment_id, profile_id, change, at, cause) "
		"SELECT c.segment_id, c.profile_id, c.change, cdp.now(), 'merge' FROM c "
		"ORDER BY c.k, c.segment_id, c.profile_id",
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_SQL,
		.forget_sql = DROP_MEMBERS_SQL
		"DELETE FROM cdp.segment_members WHERE profile_id = ANY($1)",
	},
	{
		/* a retired profile's history stays its own: replaying it ends outside */
		.name = "segment_changes",
		.relation = "cdp.segment_changes",
		.order = 610,
		.on_merge = CDP_ROWS_STAY,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
	{
		/* the winner is marked changed, which covers what the losers waited for */
		.name = "segment_pending",
		.relation = "cdp.segment_pending",
		.order = 620,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql = "DELETE FROM cdp.segment_pending WHERE profile_id = ANY($1)",
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

static const CdpTask segments_task = {
	.name = "segments",
	.run = cdp_segments_task,
};

void
cdp_segments_init(void)
{
	DefineCustomIntVariable("cdp.segment_batch_size",
							"Changed profiles per batch of real-time segment evaluation, and per range of a full refresh (times ten).",
							NULL, &cdp_segment_batch_size, 10000, 10, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	for (int i = 0; i < lengthof(segment_tables); i++)
		cdp_register_profile_table(&segment_tables[i]);
	cdp_register_task(&segments_task);
}

Size
cdp_segments_shmem_size(void)
{
	return MAXALIGN(sizeof(pg_atomic_uint64));
}

void
cdp_segments_shmem_init(void)
{
	bool		found;

	segments_generation = ShmemInitStruct("pg_cdp segments", cdp_segments_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(segments_generation, 0);
}

/* Definitions changed: every backend reloads them (now and at commit). */
void
cdp_segments_changed(void)
{
	cache_stale_here = true;
	if (segments_generation)
		cdp_bump_through_xact(segments_generation);
}

/* Statement trigger on cdp.segments. */
PG_FUNCTION_INFO_V1(cdp_segments_changed_trigger);
Datum
cdp_segments_changed_trigger(PG_FUNCTION_ARGS)
{
	cdp_segments_changed();
	return PointerGetDatum(NULL);
}

static void
free_plan(SPIPlanPtr plan)
{
	if (plan)
		SPI_freeplan(plan);
}

/*
 * cdp_segments_load reads the definitions when they changed.  Plans are
 * made when first needed and live as long as the definitions do.
 */
void
cdp_segments_load(void)
{
	SegmentCache *c = &cdp_segments;
	uint64		generation = segments_generation ? pg_atomic_read_u64(segments_generation) : 0;
	Oid			relid = get_relname_relid("segments", get_namespace_oid("cdp", false));
	MemoryContext old;
	int			nrt = 0;

	if (c->cxt && (cache_pinned > 0 ||
					(!cache_stale_here && segments_generation &&
					 generation == c->generation && relid == c->relid)))
		return;
	if (c->cxt)
	{
		for (int i = 0; i < c->n; i++)
		{
			free_plan(c->defs[i].batch_plan);
			free_plan(c->defs[i].live_plan);
			free_plan(c->defs[i].refresh_plan);
		}
		for (int g = 0; g < c->ngroups; g++)
			free_plan(c->group_plans[g]);
		MemoryContextDelete(c->cxt);
	}
	memset(c, 0, sizeof(*c));
	c->cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp segments", ALLOCSET_SMALL_SIZES);
	c->generation = generation;
	c->relid = relid;
	cache_stale_here = false;
	if (!OidIsValid(relid))
		return;

	if (SPI_execute("SELECT segment_id, name, predicate, mode = 'realtime', owner, reads_time, "
					"depends_on FROM cdp.segments ORDER BY segment_id", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.segments");
	old = MemoryContextSwitchTo(c->cxt);
	c->n = SPI_processed;
	c->defs = palloc0(sizeof(SegmentDef) * Max(c->n, 1));
	c->order = palloc0(sizeof(SegmentDef *) * Max(c->n, 1));
	for (int i = 0; i < c->n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		SegmentDef *s = &c->defs[i];
		bool		isnull;
		Datum		deps;
		Datum	   *elems;
		int			nelems;

		s->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		s->name = SPI_getvalue(tup, desc, 2);
		s->predicate = SPI_getvalue(tup, desc, 3);
		s->realtime = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		s->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
		s->reads_time = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		deps = SPI_getbinval(tup, desc, 7, &isnull);
		deconstruct_array(DatumGetArrayTypeP(deps), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		/* the segments it names are older: their levels are known */
		for (int d = 0; d < nelems; d++)
		{
			char	   *dep = TextDatumGetCString(elems[d]);

			for (int j = 0; j < i; j++)
				if (strcmp(c->defs[j].name, dep) == 0)
				{
					s->level = Max(s->level, c->defs[j].level + 1);
					c->defs[j].used = true;
				}
		}
		if (s->realtime)
			c->order[nrt++] = s;
	}
	MemoryContextSwitchTo(old);

	/* realtime segments by level, then owner, then id: one statement each */
	for (int i = 1; i < nrt; i++)
		for (int j = i; j > 0; j--)
		{
			SegmentDef *a = c->order[j - 1];
			SegmentDef *b = c->order[j];

			if (a->level < b->level || (a->level == b->level && a->owner < b->owner) ||
				(a->level == b->level && a->owner == b->owner && a->id < b->id))
				break;
			c->order[j - 1] = b;
			c->order[j] = a;
		}
	c->group_start = MemoryContextAllocZero(c->cxt, sizeof(int) * Max(nrt, 1));
	c->group_len = MemoryContextAllocZero(c->cxt, sizeof(int) * Max(nrt, 1));
	c->group_plans = MemoryContextAllocZero(c->cxt, sizeof(SPIPlanPtr) * Max(nrt, 1));
	for (int i = 0; i < nrt; i++)
	{
		if (i == 0 || c->order[i]->owner != c->order[i - 1]->owner ||
			c->order[i]->level != c->order[i - 1]->level)
			c->group_start[c->ngroups++] = i;
		c->group_len[c->ngroups - 1]++;
	}
}

SegmentDef *
cdp_segment_by_name(const char *name, bool missing_ok)
{
	cdp_segments_load();
	for (int i = 0; i < cdp_segments.n; i++)
		if (strcmp(cdp_segments.defs[i].name, name) == 0)
			return &cdp_segments.defs[i];
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("segment \"%s\" does not exist", name),
				 errhint("cdp.segment_status lists the segments.")));
	return NULL;
}

SegmentDef *
cdp_segment_by_id(int32 id)
{
	for (int i = 0; i < cdp_segments.n; i++)
		if (cdp_segments.defs[i].id == id)
			return &cdp_segments.defs[i];
	return NULL;
}

static void
check_not_null(FunctionCallInfo fcinfo, int i, const char *what)
{
	if (PG_ARGISNULL(i))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
}

static void
validate_name(const char *name)
{
	if (name[0] == '\0' || strlen(name) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("a segment name must have 1 to 200 bytes")));
	for (const char *p = name; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("a segment name cannot contain control characters")));
	if (cdp_segment_by_name(name, true))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("segment \"%s\" already exists", name),
				 errhint("Drop it first with cdp.drop_segment(%s).", quote_literal_cstr(name))));
}

static Datum
text_list_array(List *l)
{
	char	  **v = palloc(sizeof(char *) * Max(list_length(l), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, l)
		v[n++] = (char *) lfirst(lc);
	return cdp_text_array(v, n);
}

static Datum
result_json(int64 entered, int64 exited, int64 members)
{
	char	   *s = psprintf("{\"entered\": " INT64_FORMAT ", \"exited\": " INT64_FORMAT
							 ", \"members\": " INT64_FORMAT "}", entered, exited, members);

	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
}

static int64
members_of(int32 id)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(id)};
	bool		isnull;

	SPI_execute_with_args("SELECT members FROM cdp.segments WHERE segment_id = $1",
						  1, argtypes, args, NULL, false, 0);
	if (SPI_processed != 1)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * cdp.create_segment(name, predicate, mode, refresh_every) → members
 */
PG_FUNCTION_INFO_V1(cdp_create_segment);
Datum
cdp_create_segment(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *predicate;
	char	   *mode;
	CdpPredicate info;
	ListCell   *lc;
	Oid			argtypes[8] = {TEXTOID, TEXTOID, TEXTOID, OIDOID, TEXTARRAYOID,
	TEXTARRAYOID, BOOLOID, INTERVALOID};
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SegmentDef *s;
	int64		entered,
				exited,
				members;

	check_not_null(fcinfo, 0, "the segment's name");
	check_not_null(fcinfo, 1, "the segment's predicate");
	check_not_null(fcinfo, 2, "the segment's mode");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	predicate = text_to_cstring(PG_GETARG_TEXT_PP(1));
	mode = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strcmp(mode, "realtime") != 0 && strcmp(mode, "scheduled") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown segment mode \"%s\"", mode),
				 errhint("Use 'realtime' (evaluated as profiles change) or 'scheduled' (by cdp.refresh_segment).")));
	if (!PG_ARGISNULL(3))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(3);

		if (iv->time <= 0 && iv->day <= 0 && iv->month <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a segment's refresh_every must be a positive interval")));
	}
	if (strlen(predicate) > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a segment's predicate cannot exceed 100000 bytes")));

	SPI_connect();
	validate_name(name);
	cdp_check_predicate(predicate, "a segment's predicate", "FROM cdp.customers c", &info);
	foreach(lc, info.segments)
	{
		char	   *dep = (char *) lfirst(lc);

		if (strcmp(dep, name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("segment \"%s\" cannot use itself", name),
					 errdetail("Its predicate calls cdp.in_segment(profile_id, %s): that is a cycle.",
							   quote_literal_cstr(name))));
		if (cdp_segment_by_name(dep, true) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("segment \"%s\" uses segment \"%s\", which does not exist", name, dep),
					 errhint("Create \"%s\" first; a segment can only use segments that exist, so no cycle can form.",
							 dep)));
	}
	if (info.reads_time && PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("segment \"%s\" reads the time, so it needs refresh_every", name),
				 errdetail("Its members change as time passes with no event: it must be evaluated again on a schedule."),
				 errhint("Pass refresh_every, e.g. cdp.create_segment(%s, %s, %s, '1 hour').",
						 quote_literal_cstr(name), quote_literal_cstr(predicate),
						 quote_literal_cstr(mode))));

	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(predicate);
	args[2] = CStringGetTextDatum(mode);
	args[3] = ObjectIdGetDatum(GetOuterUserId());
	args[4] = text_list_array(info.columns);
	args[5] = text_list_array(info.segments);
	args[6] = BoolGetDatum(info.reads_time);
	args[7] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[7] = PG_ARGISNULL(3) ? 'n' : ' ';
	if (SPI_execute_with_args("INSERT INTO cdp.segments (name, predicate, mode, owner, columns, "
							  "depends_on, reads_time, refresh_every) "
							  "VALUES ($1, $2, $3, $4::regrole, $5, $6, $7, $8)",
							  8, argtypes, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not insert the segment");
	cdp_segments_changed();
	s = cdp_segment_by_name(name, false);
	cdp_segment_refresh(s, &entered, &exited);
	members = members_of(s->id);
	cdp_wake_worker_at_commit();
	SPI_finish();
	PG_RETURN_INT64(members);
}

/* cdp.refresh_segment(name) → {"entered", "exited", "members"} */
PG_FUNCTION_INFO_V1(cdp_refresh_segment);
Datum
cdp_refresh_segment(PG_FUNCTION_ARGS)
{
	SegmentDef *s;
	int64		entered,
				exited;
	Datum		result;

	check_not_null(fcinfo, 0, "the segment's name");
	SPI_connect();
	s = cdp_segment_by_name(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	cdp_segment_refresh(s, &entered, &exited);
	result = result_json(entered, exited, members_of(s->id));
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/* cdp.drop_segment(name) */
PG_FUNCTION_INFO_V1(cdp_drop_segment);
Datum
cdp_drop_segment(PG_FUNCTION_ARGS)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		args[2];
	char	   *name;
	SegmentDef *s;

	check_not_null(fcinfo, 0, "the segment's name");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	args[0] = PG_GETARG_DATUM(0);
	SPI_connect();
	s = cdp_segment_by_name(name, false);
	args[1] = Int32GetDatum(s->id);
	SPI_execute_with_args("SELECT string_agg(quote_literal(name), ', ' ORDER BY name) "
						  "FROM cdp.segments WHERE $1 = ANY(depends_on)",
						  1, argtypes, args, NULL, true, 0);
	if (SPI_processed == 1 && SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("segment \"%s\" is used by another segment", name),
				 errdetail("Segments that use it: %s.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("Drop those segments first.")));
	SPI_execute_with_args("DELETE FROM cdp.segments WHERE segment_id = $2",
						  2, argtypes, args, NULL, false, 0);
	SPI_execute_with_args("DELETE FROM cdp.segment_members WHERE segment_id = $2",
						  2, argtypes, args, NULL, false, 0);
	SPI_execute_with_args("DELETE FROM cdp.segment_pending WHERE segment_id = $2",
						  2, argtypes, args, NULL, false, 0);
	cdp_segments_changed();
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * cdp.in_segment(profile_id, name): a profile changed since the segment
 * last looked (marked, or pending for it) is evaluated now, as the
 * segment's owner, so the writer's own transaction sees its own event;
 * otherwise the members say.  A scheduled segment is what its last
 * refresh found.
 */
PG_FUNCTION_INFO_V1(cdp_in_segment);
Datum
cdp_in_segment(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr realtime_plan = NULL;
	static SPIPlanPtr scheduled_plan = NULL;
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		args[2];
	SegmentDef *s;
	int64		profile_id;
	bool		isnull;
	bool		result;
	Datum		d;

	check_not_null(fcinfo, 1, "the segment's name");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	profile_id = PG_GETARG_INT64(0);
	SPI_connect();
	s = cdp_segment_by_name(text_to_cstring(PG_GETARG_TEXT_PP(1)), false);
	if (realtime_plan == NULL)
	{
		realtime_plan = cdp_prepare("SELECT CASE WHEN EXISTS (SELECT FROM cdp.profile_changes c "
									"                        WHERE c.profile_id = $1) "
									"  OR EXISTS (SELECT FROM cdp.segment_pending p "
									"             WHERE p.segment_id = $2 AND p.profile_id = $1) "
									"THEN NULL ELSE EXISTS (SELECT FROM cdp.segment_members m "
									"  WHERE m.segment_id = $2 AND m.profile_id = $1) END",
									2, argtypes);
		scheduled_plan = cdp_prepare("SELECT EXISTS (SELECT FROM cdp.segment_members m "
									 "  WHERE m.segment_id = $2 AND m.profile_id = $1)",
									 2, argtypes);
	}
	args[0] = Int64GetDatum(profile_id);
	args[1] = Int32GetDatum(s->id);
	cdp_spi_exec(s->realtime ? realtime_plan : scheduled_plan, args, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = isnull ? cdp_segment_live(s, profile_id) : DatumGetBool(d);
	SPI_finish();
	PG_RETURN_BOOL(result);
}

/* cdp.evaluate_segments() → profiles evaluated: the task, alone */
PG_FUNCTION_INFO_V1(cdp_evaluate_segments);
Datum
cdp_evaluate_segments(PG_FUNCTION_ARGS)
{
	bool		more = false;
	int64		n;

	SPI_connect();
	n = cdp_segments_task(&more);
	SPI_finish();
	PG_RETURN_INT64(n);
}
