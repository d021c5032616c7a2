/*-------------------------------------------------------------------------
 *
 * segment_eval.c
 *	  Evaluation of segments: real-time batches of changed profiles, full
 *	  refreshes, cdp.in_segment's evaluation of one profile, and the
 *	  worker task that runs them.
 *
 * Real time.  Every event, merge, unmerge, erasure and trait decay marks
 * its profiles in cdp.profile_changes, in its own transaction.  The task
 * claims a batch of marks (FOR UPDATE SKIP LOCKED, so two evaluators take
 * different ones), then locks the rows cdp.customers is made of for those
 * profiles (cdp.profiles and cdp.profile_traits, FOR SHARE; a missing
 * cdp.profile_traits row is inserted, which waits for a writer inserting
 * it; rows already there are left out by an anti-join first, as most are),
 * and only then deletes the marks.  A writer changes those rows
 * before it marks (ingest.c), so a writer still running holds a lock and
 * is waited for, and its changes are seen by the statements that follow;
 * a writer that comes later waits for this transaction, then finds its
 * mark gone and writes it again.
 *
 * Then one statement per group of realtime segments (same level, same
 * owner, see segment.c), as their owner, in a subtransaction: the new
 * membership of the batch's profiles is computed from cdp.customers once,
 * each predicate filters it, and the batch's members are read once:
 * members that are new are inserted (most matching profiles are members
 * already, and an anti-join leaves them out for far less than ON
 * CONFLICT's speculative insertion of each; ON CONFLICT DO NOTHING stays
 * for a concurrent evaluator's rows) and members no longer matching are
 * deleted, and only
 * the rows those actually inserted or deleted (RETURNING) are logged in
 * cdp.segment_changes.  So two evaluators of the same profile log each
 * change once, whichever commits first.  Each logged change becomes a
 * Segment Entered / Segment Exited event, written without a mark so it
 * does not make its profile evaluated again.
 *
 * Errors.  When a group's statement fails, each of its segments runs on
 * its own; a segment that fails is tried on halves of the batch, down to
 * single profiles within a budget, so the profiles it can evaluate are
 * and the others wait in cdp.segment_pending for that segment only, with
 * the error on the segment.  Pending profiles are tried again every few
 * seconds.
 *
 * Refresh.  A full evaluation over ranges of profile ids, each one
 * statement of the same shape (cause refresh): at creation, by
 * cdp.refresh_segment, and by the task for segments with refresh_every
 * (those whose predicate reads the time need one).  The profiles a
 * refresh moved are marked changed when other segments name this one, so
 * those follow at the next batch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "ingest.h"
#include "profile.h"
#include "segment.h"
#include "util.h"

/* the most subtransactions a failing segment may spend on one batch */
#define BISECT_BUDGET 64
/* pending profiles tried again per segment and round */
#define PENDING_BATCH 256
/* seconds between the worker's retries of pending profiles */
#define PENDING_RETRY_SECONDS 5

/* Changes that statements logged, to become events and counts. */
typedef struct Changes
{
	int			n;
	int			cap;
	int32	   *segment_ids;
	int64	   *profile_ids;
	bool	   *entered;
} Changes;

static int
cmp_int32(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return (x > y) - (x < y);
}

static Datum
bool_array(bool *values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = BoolGetDatum(values[i]);
	return PointerGetDatum(construct_array(elems, n, BOOLOID, 1, true, TYPALIGN_CHAR));
}

static void
changes_add_result(Changes *ch)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		bool		isnull;

		if (ch->n == ch->cap)
		{
			ch->cap = Max(64, ch->cap * 2);
			ch->segment_ids = ch->segment_ids ? repalloc(ch->segment_ids, sizeof(int32) * ch->cap)
				: palloc(sizeof(int32) * ch->cap);
			ch->profile_ids = ch->profile_ids ? repalloc(ch->profile_ids, sizeof(int64) * ch->cap)
				: palloc(sizeof(int64) * ch->cap);
			ch->entered = ch->entered ? repalloc(ch->entered, sizeof(bool) * ch->cap)
				: palloc(sizeof(bool) * ch->cap);
		}
		ch->segment_ids[ch->n] = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		ch->profile_ids[ch->n] = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		ch->entered[ch->n] = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		ch->n++;
	}
}

/*
 * The statement of segments ss (one owner) over the profiles $1 with the
 * causes $2 (in step), at $3.  Returns (segment_id, profile_id, entered).
 */
static char *
batch_sql(SegmentDef **ss, int n)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "WITH b AS (SELECT * FROM unnest($1::int8[], $2::text[]) AS b(profile_id, cause)), "
						   "c AS MATERIALIZED (SELECT * FROM cdp.customers c WHERE c.profile_id = ANY($1)), "
						   "n AS MATERIALIZED (");
	for (int i = 0; i < n; i++)
		appendStringInfo(&b, "%sSELECT %d AS segment_id, c.profile_id FROM c WHERE (\n%s\n)",
						 i ? " UNION ALL " : "", ss[i]->id, ss[i]->predicate);

	/* the batch's members now, read once for both directions */
	appendStringInfoString(&b, "), o AS MATERIALIZED (SELECT m.segment_id, m.profile_id "
						   "FROM cdp.segment_members m WHERE m.profile_id = ANY($1) AND m.segment_id IN (");
	for (int i = 0; i < n; i++)
		appendStringInfo(&b, "%s%d", i ? ", " : "", ss[i]->id);
	appendStringInfoString(&b, ")), ins AS (INSERT INTO cdp.segment_members AS m (segment_id, profile_id, entered_at) "
						   "SELECT n.segment_id, n.profile_id, $3 FROM n "
						   "WHERE NOT EXISTS (SELECT FROM o "
						   "  WHERE o.segment_id = n.segment_id AND o.profile_id = n.profile_id) "
						   "ORDER BY 1, 2 "
						   "ON CONFLICT DO NOTHING RETURNING m.segment_id, m.profile_id), "
						   "del AS (DELETE FROM cdp.segment_members m USING o "
						   "WHERE m.segment_id = o.segment_id AND m.profile_id = o.profile_id "
						   "AND NOT EXISTS (SELECT FROM n WHERE n.segment_id = o.segment_id "
						   "AND n.profile_id = o.profile_id) RETURNING m.segment_id, m.profile_id) "
						   "INSERT INTO cdp.segment_changes AS l (segment_id, profile_id, change, at, cause) "
						   "SELECT x.segment_id, x.profile_id, x.change, $3, b.cause "
						   "FROM (SELECT segment_id, profile_id, 'entered' AS change FROM ins "
						   "      UNION ALL SELECT segment_id, profile_id, 'exited' FROM del) x "
						   "JOIN b ON b.profile_id = x.profile_id "
						   "RETURNING l.segment_id, l.profile_id, l.change = 'entered'");
	return b.data;
}

/*
 * The refresh statement of segment s over the profile ids in [$1, $2),
 * at $3.  Only what differs is written.
 */
static char *
refresh_sql(SegmentDef *s)
{
	return psprintf("WITH n AS MATERIALIZED (SELECT c.profile_id FROM cdp.customers c "
					"  WHERE c.profile_id >= $1 AND c.profile_id < $2 AND (\n%s\n)), "
					"o AS MATERIALIZED (SELECT m.profile_id FROM cdp.segment_members m "
					"  WHERE m.segment_id = %d AND m.profile_id >= $1 AND m.profile_id < $2), "
					"ins AS (INSERT INTO cdp.segment_members AS m (segment_id, profile_id, entered_at) "
					"  SELECT %d, n.profile_id, $3 FROM n "
					"  WHERE NOT EXISTS (SELECT FROM o WHERE o.profile_id = n.profile_id) ORDER BY 2 "
					"  ON CONFLICT DO NOTHING RETURNING m.profile_id), "
					"del AS (DELETE FROM cdp.segment_members m USING o "
					"  WHERE m.segment_id = %d AND m.profile_id = o.profile_id "
					"  AND NOT EXISTS (SELECT FROM n WHERE n.profile_id = o.profile_id) "
					"  RETURNING m.profile_id) "
					"INSERT INTO cdp.segment_changes AS l (segment_id, profile_id, change, at, cause) "
					"SELECT %d, x.profile_id, x.change, $3, 'refresh' "
					"FROM (SELECT profile_id, 'entered' AS change FROM ins "
					"      UNION ALL SELECT profile_id, 'exited' FROM del) x "
					"RETURNING l.segment_id, l.profile_id, l.change = 'entered'",
					s->predicate, s->id, s->id, s->id, s->id);
}

/* A plan kept with the definitions, or NULL (the error recorded). */
static SPIPlanPtr
keep(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan;

	if (*slot)
		return *slot;
	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		return NULL;
	SPI_keepplan(plan);
	*slot = plan;
	return plan;
}

/* The segment's error, and the profiles that wait for it. */
static void
record_failure(SegmentDef *s, int64 *ids, int n, const char *message)
{
	static SPIPlanPtr err_plan = NULL;
	static SPIPlanPtr pending_plan = NULL;
	Oid			argtypes[4] = {INT4OID, TEXTOID, INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		args[4];

	if (err_plan == NULL)
	{
		err_plan = cdp_prepare("UPDATE cdp.segments SET last_error = $2, last_error_at = cdp.now() "
							   "WHERE segment_id = $1", 2, argtypes);
		pending_plan = cdp_prepare("INSERT INTO cdp.segment_pending (segment_id, profile_id, since) "
								   "SELECT $1, id, $4 FROM unnest($3::int8[]) id ORDER BY 2 "
								   "ON CONFLICT DO NOTHING", 4, argtypes);
	}
	args[0] = Int32GetDatum(s->id);
	args[1] = CStringGetTextDatum(message ? message : "error");
	args[2] = cdp_int8_array(ids, n);
	args[3] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(err_plan, args, SPI_OK_UPDATE);
	if (n > 0)
		cdp_spi_exec(pending_plan, args, SPI_OK_INSERT);
}

static Oid	batch_argtypes[3] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};

/*
 * One segment over profiles ids (causes in step): on failure, halves,
 * while the budget lasts; what cannot be evaluated waits.
 */
static void
eval_one(SegmentDef *s, int64 *ids, char **causes, int n, int *budget, Changes *ch)
{
	SPIPlanPtr	plan = keep(&s->batch_plan, batch_sql(&s, 1), 3, batch_argtypes);
	Datum		args[3];
	ErrorData  *err;

	if (plan == NULL)
	{
		record_failure(s, ids, n, "the segment's statement does not prepare");
		return;
	}
	args[0] = cdp_int8_array(ids, n);
	args[1] = cdp_text_array(causes, n);
	args[2] = TimestampTzGetDatum(cdp_now());
	err = cdp_exec_guarded(plan, args, NULL, s->owner, SPI_OK_INSERT_RETURNING,
						   "segment statement");
	if (err == NULL)
	{
		changes_add_result(ch);
		return;
	}
	if (n == 1 || *budget <= 0)
	{
		record_failure(s, ids, n, err->message);
		return;
	}
	*budget -= 2;
	eval_one(s, ids, causes, n / 2, budget, ch);
	eval_one(s, ids + n / 2, causes + n / 2, n - n / 2, budget, ch);
}

/* The realtime segments over profiles ids, group by group. */
static void
eval_batch(int64 *ids, char **causes, int n, Changes *ch)
{
	SegmentCache *c = &cdp_segments;
	Datum		args[3];

	args[0] = cdp_int8_array(ids, n);
	args[1] = cdp_text_array(causes, n);
	args[2] = TimestampTzGetDatum(cdp_now());
	for (int g = 0; g < c->ngroups; g++)
	{
		SegmentDef **ss = &c->order[c->group_start[g]];
		int			len = c->group_len[g];
		SPIPlanPtr	plan;
		ErrorData  *err = NULL;

		CHECK_FOR_INTERRUPTS();
		plan = len == 1 ? NULL : keep(&c->group_plans[g], batch_sql(ss, len), 3, batch_argtypes);
		if (plan)
			err = cdp_exec_guarded(plan, args, NULL, ss[0]->owner, SPI_OK_INSERT_RETURNING,
						   "segment statement");
		if (plan && err == NULL)
		{
			changes_add_result(ch);
			continue;
		}
		for (int i = 0; i < len; i++)
		{
			int			budget = BISECT_BUDGET;

			eval_one(ss[i], ids, causes, n, &budget, ch);
		}
	}
}

/*
 * What logged changes leave: their events, the members' counts, the day's
 * sizes, and when each segment was evaluated (evaluated, if given, the
 * segments that ran; their error goes once nothing waits for them).
 */
static void
apply_changes(Changes *ch, int32 *evaluated, int nevaluated)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr count_plan = NULL;
	Oid			argtypes[4] = {INT4ARRAYOID, INT4ARRAYOID, BOOLARRAYOID, TIMESTAMPTZOID};
	Datum		args[4];
	int32	   *ids;
	int			nids = 0;
	bool	   *entered;

	if (ch->n > 0)
	{
		CdpMessage *msgs = palloc0(sizeof(CdpMessage) * ch->n);
		TimestampTz now = cdp_now();

		for (int i = 0; i < ch->n; i++)
		{
			SegmentDef *s = cdp_segment_by_id(ch->segment_ids[i]);

			msgs[i].msgtype = "track";
			msgs[i].event = ch->entered[i] ? "Segment Entered" : "Segment Exited";
			msgs[i].properties = cdp_jsonb_pair("segment", s ? s->name : "");
			msgs[i].occurred_at = now;
			msgs[i].received_at = now;
			msgs[i].profile_id = ch->profile_ids[i];
		}
		cdp_write_events_unmarked(msgs, ch->n);
	}

	/* every segment touched, in id order, so evaluators lock alike */
	ids = palloc(sizeof(int32) * (ch->n + nevaluated + 1));
	for (int i = 0; i < ch->n; i++)
		ids[nids++] = ch->segment_ids[i];
	for (int i = 0; i < nevaluated; i++)
		ids[nids++] = evaluated[i];
	if (nids == 0)
		return;
	if (lock_plan == NULL)
	{
		lock_plan = cdp_prepare("SELECT FROM cdp.segments WHERE segment_id = ANY($1) "
								"ORDER BY segment_id FOR NO KEY UPDATE", 1, argtypes);
		count_plan = cdp_prepare("WITH x AS (SELECT segment_id, count(*) FILTER (WHERE e) AS entered, "
								 "  count(*) FILTER (WHERE NOT e) AS exited "
								 "  FROM unnest($1::int4[], $3::bool[]) AS x(segment_id, e) "
								 "  WHERE e IS NOT NULL GROUP BY segment_id), "
								 "v AS (SELECT DISTINCT unnest($2::int4[]) AS segment_id), "
								 "u AS (UPDATE cdp.segments s SET "
								 "  members = s.members + coalesce(x.entered, 0) - coalesce(x.exited, 0), "
								 "  last_evaluated_at = CASE WHEN v.segment_id IS NOT NULL THEN $4 "
								 "                      ELSE s.last_evaluated_at END, "
								 "  last_error = CASE WHEN v.segment_id IS NOT NULL AND NOT EXISTS "
								 "    (SELECT FROM cdp.segment_pending p WHERE p.segment_id = s.segment_id) "
								 "    THEN NULL ELSE s.last_error END "
								 "  FROM (SELECT segment_id FROM x UNION SELECT segment_id FROM v) a "
								 "  LEFT JOIN x USING (segment_id) LEFT JOIN v USING (segment_id) "
								 "  WHERE s.segment_id = a.segment_id "
								 "  RETURNING s.segment_id, s.members, x.entered, x.exited) "
								 "INSERT INTO cdp.segment_sizes AS z (day, segment_id, members, entered, exited) "
								 "SELECT cdp.local_time($4)::date, u.segment_id, u.members, u.entered, u.exited "
								 "FROM u WHERE u.entered IS NOT NULL ORDER BY 2 "
								 "ON CONFLICT (day, segment_id) DO UPDATE SET members = excluded.members, "
								 "  entered = z.entered + excluded.entered, exited = z.exited + excluded.exited",
								 4, argtypes);
	}
	qsort(ids, nids, sizeof(int32), cmp_int32);
	args[0] = cdp_int4_array(ids, nids);
	cdp_spi_exec(lock_plan, args, SPI_OK_SELECT);
	entered = palloc(sizeof(bool) * Max(ch->n, 1));
	for (int i = 0; i < ch->n; i++)
		entered[i] = ch->entered[i];
	args[0] = cdp_int4_array(ch->segment_ids, ch->n);
	args[1] = cdp_int4_array(evaluated, nevaluated);
	args[2] = bool_array(entered, ch->n);
	args[3] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(count_plan, args, SPI_OK_INSERT);
}

static int32 *
realtime_ids(int *n)
{
	SegmentCache *c = &cdp_segments;
	int32	   *ids = palloc(sizeof(int32) * Max(c->n, 1));

	*n = 0;
	for (int i = 0; i < c->n; i++)
		if (c->defs[i].realtime)
			ids[(*n)++] = c->defs[i].id;
	return ids;
}

static const char *
cause_of(const char *reason)
{
	if (reason == NULL)
		return "event";
	if (strcmp(reason, "merge") == 0 || strcmp(reason, "unmerge") == 0 ||
		strcmp(reason, "decay") == 0)
		return reason;
	if (strcmp(reason, "forget") == 0)
		return "erasure";
	if (strcmp(reason, "trait") == 0 || strcmp(reason, "refresh") == 0)
		return "refresh";
	return "event";
}

typedef struct Mark
{
	int64		profile_id;
	char	   *cause;
} Mark;

static int
cmp_mark(const void *a, const void *b)
{
	return cdp_cmp_int64(&((const Mark *) a)->profile_id, &((const Mark *) b)->profile_id);
}

/*
 * One batch of marked profiles through every realtime segment (see the
 * header comment for the locks).
 */
static int64
evaluate_marks(bool *more)
{
	static SPIPlanPtr claim = NULL;
	static SPIPlanPtr lock_profiles = NULL;
	static SPIPlanPtr lock_traits = NULL;
	static SPIPlanPtr make_traits = NULL;
	static SPIPlanPtr unmark = NULL;
	Oid			argtypes[2] = {INT4OID, INT8ARRAYOID};
	Datum		args[2];
	Mark	   *marks;
	int64	   *ids;
	char	  **causes;
	int			n;
	int			nrt;
	int32	   *rt;
	Changes		ch = {0};

	if (claim == NULL)
	{
		claim = cdp_prepare("SELECT profile_id, reason FROM cdp.profile_changes "
							"LIMIT $1 FOR UPDATE SKIP LOCKED", 1, argtypes);
		lock_profiles = cdp_prepare("SELECT FROM cdp.profiles WHERE profile_id = ANY($2) "
									"ORDER BY profile_id FOR SHARE", 2, argtypes);
		lock_traits = cdp_prepare("SELECT FROM cdp.profile_traits WHERE profile_id = ANY($2) "
								  "ORDER BY profile_id FOR SHARE", 2, argtypes);
		make_traits = cdp_prepare("INSERT INTO cdp.profile_traits (profile_id) "
								  "SELECT p.profile_id FROM cdp.profiles p "
								  "WHERE p.profile_id = ANY($2) "
								  "AND NOT EXISTS (SELECT FROM cdp.profile_traits t "
								  "                WHERE t.profile_id = p.profile_id) "
								  "AND EXISTS (SELECT FROM cdp.trait_definitions WHERE kind = 'computed') "
								  "ORDER BY 1 ON CONFLICT DO NOTHING", 2, argtypes);
		unmark = cdp_prepare("DELETE FROM cdp.profile_changes WHERE profile_id = ANY($2)",
							 2, argtypes);
	}
	args[0] = Int32GetDatum(cdp_segment_batch_size);
	if (SPI_execute_plan(claim, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not claim changed profiles");
	n = SPI_processed;
	if (n == 0)
		return 0;
	marks = palloc(sizeof(Mark) * n);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		marks[i].profile_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1, &isnull));
		marks[i].cause = (char *) cause_of(SPI_getvalue(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 2));
	}
	qsort(marks, n, sizeof(Mark), cmp_mark);
	ids = palloc(sizeof(int64) * n);
	causes = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		ids[i] = marks[i].profile_id;
		causes[i] = marks[i].cause;
	}
	args[1] = cdp_int8_array(ids, n);
	cdp_spi_exec(lock_profiles, args, SPI_OK_SELECT);
	cdp_spi_exec(lock_traits, args, SPI_OK_SELECT);
	cdp_spi_exec(make_traits, args, SPI_OK_INSERT);
	cdp_spi_exec(unmark, args, SPI_OK_DELETE);

	eval_batch(ids, causes, n, &ch);
	rt = realtime_ids(&nrt);
	apply_changes(&ch, rt, nrt);
	*more = *more || n >= cdp_segment_batch_size;
	return n;
}

/* Pending profiles of each segment that has some, tried again. */
static int64
retry_pending(void)
{
	static SPIPlanPtr take = NULL;
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];
	int64		done = 0;
	SegmentCache *c = &cdp_segments;

	if (take == NULL)
		take = cdp_prepare("DELETE FROM cdp.segment_pending p USING "
						   "(SELECT profile_id FROM cdp.segment_pending WHERE segment_id = $1 "
						   " ORDER BY since, profile_id LIMIT $2 FOR UPDATE SKIP LOCKED) x "
						   "WHERE p.segment_id = $1 AND p.profile_id = x.profile_id "
						   "RETURNING p.profile_id", 2, argtypes);
	for (int i = 0; i < c->n; i++)
	{
		SegmentDef *s = &c->defs[i];
		int			n;
		int64	   *ids;
		char	  **causes;
		int			budget = BISECT_BUDGET;
		Changes		ch = {0};

		args[0] = Int32GetDatum(s->id);
		args[1] = Int32GetDatum(PENDING_BATCH);
		cdp_spi_exec(take, args, SPI_OK_DELETE_RETURNING);
		n = SPI_processed;
		if (n == 0)
			continue;
		ids = palloc(sizeof(int64) * n);
		cdp_spi_int64_column(ids);
		qsort(ids, n, sizeof(int64), cdp_cmp_int64);
		causes = palloc(sizeof(char *) * n);
		for (int k = 0; k < n; k++)
			causes[k] = "event";
		eval_one(s, ids, causes, n, &budget, &ch);
		apply_changes(&ch, &s->id, 1);
		done += n;
	}
	return done;
}

/*
 * cdp_segment_refresh evaluates s over every profile, a range of ids at a
 * time, writing only what differs.
 */
void
cdp_segment_refresh(SegmentDef *s, int64 *entered, int64 *exited)
{
	static SPIPlanPtr next_plan = NULL;
	static SPIPlanPtr done_plan = NULL;
	Oid			argtypes[3] = {INT8OID, INT8OID, TIMESTAMPTZOID};
	Datum		args[3];
	int64		lo = PG_INT64_MIN;
	bool		last = false;
	int			range = cdp_segment_batch_size * 10;
	SPIPlanPtr	plan;

	*entered = *exited = 0;
	cdp_segments_pin(true);
	plan = keep(&s->refresh_plan, refresh_sql(s), 3, argtypes);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("segment \"%s\" cannot be evaluated: its statement does not prepare", s->name)));
	if (next_plan == NULL)
	{
		next_plan = cdp_prepare("SELECT profile_id FROM cdp.profiles WHERE profile_id >= $1 "
								"ORDER BY profile_id OFFSET $2::int LIMIT 1", 2, argtypes);
		done_plan = cdp_prepare("UPDATE cdp.segments SET last_refreshed_at = $3, "
								"last_evaluated_at = $3 WHERE segment_id = $1::int", 3, argtypes);
	}
	while (!last)
	{
		int64		hi = PG_INT64_MAX;
		ErrorData  *err;
		Changes		ch = {0};

		CHECK_FOR_INTERRUPTS();
		args[0] = Int64GetDatum(lo);
		args[1] = Int64GetDatum(range);
		cdp_spi_exec(next_plan, args, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			bool		isnull;

			hi = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
		else
			last = true;
		args[1] = Int64GetDatum(hi);
		args[2] = TimestampTzGetDatum(cdp_now());
		err = cdp_exec_guarded(plan, args, NULL, s->owner, SPI_OK_INSERT_RETURNING,
						   "segment statement");
		if (err)
		{
			record_failure(s, NULL, 0, err->message);
			ereport(ERROR,
					(errcode(err->sqlerrcode),
					 errmsg("segment \"%s\" could not be evaluated: %s", s->name, err->message),
					 errhint("Its predicate runs as its owner, %s, over cdp.customers.",
							 GetUserNameFromId(s->owner, false))));
		}
		changes_add_result(&ch);
		for (int i = 0; i < ch.n; i++)
		{
			if (ch.entered[i])
				(*entered)++;
			else
				(*exited)++;
		}
		apply_changes(&ch, NULL, 0);

		/*
		 * Segments that name this one see its refresh as a change of the
		 * profiles it moved: they are evaluated again.
		 */
		if (s->used && ch.n > 0)
			cdp_mark_profiles_changed(ch.profile_ids, ch.n, "refresh");
		lo = hi;
	}
	args[0] = Int64GetDatum(s->id);
	args[2] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(done_plan, args, SPI_OK_UPDATE);
	cdp_segments_pin(false);
}

/* Segments whose refresh_every has come: one of them. */
static int64
refresh_due(bool *more)
{
	static SPIPlanPtr due = NULL;
	int32		id;
	SegmentDef *s;
	bool		isnull;
	int64		entered,
				exited;

	if (due == NULL)
		due = cdp_prepare("SELECT segment_id FROM cdp.segments "
						  "WHERE refresh_every IS NOT NULL "
						  "AND (last_refreshed_at IS NULL OR last_refreshed_at + refresh_every <= cdp.now()) "
						  "ORDER BY last_refreshed_at NULLS FIRST LIMIT 2 "
						  "FOR NO KEY UPDATE SKIP LOCKED", 0, NULL);
	cdp_spi_exec(due, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*more = *more || SPI_processed > 1;
	s = cdp_segment_by_id(id);
	if (s == NULL)
		return 0;
	cdp_segment_refresh(s, &entered, &exited);
	return entered + exited;
}

/*
 * cdp_segment_live: whether profile_id satisfies s's predicate now, as
 * s's owner.
 */
bool
cdp_segment_live(SegmentDef *s, int64 profile_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	Oid			save_userid;
	int			save_sec;
	SPIPlanPtr	plan;
	int			rc;
	bool		isnull;

	plan = keep(&s->live_plan,
				psprintf("SELECT EXISTS (SELECT FROM cdp.customers c WHERE c.profile_id = $1 "
						 "AND (\n%s\n))", s->predicate), 1, argtypes);
	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("segment \"%s\" cannot be evaluated: its statement does not prepare", s->name)));
	args[0] = Int64GetDatum(profile_id);

	/* an error leaves through the transaction's abort, which restores the user */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(s->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	rc = SPI_execute_plan(plan, args, NULL, true, 1);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_cdp: segment statement returned %s", SPI_result_code_string(rc));
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The worker's task, also one round of cdp.tick(): a batch of changed
 * profiles, pending profiles now and then, and a refresh that is due.
 */
int64
cdp_segments_task(bool *more)
{
	static TimestampTz last_retry = 0;
	TimestampTz now = GetCurrentTimestamp();
	int64		n = 0;
	bool		any_realtime = false;

	cdp_segments_load();
	if (!OidIsValid(cdp_segments.relid) || cdp_segments.n == 0)
		return 0;
	cdp_segments_pin(true);
	for (int i = 0; i < cdp_segments.n; i++)
		any_realtime = any_realtime || cdp_segments.defs[i].realtime;
	if (any_realtime)
		n += evaluate_marks(more);
	if (!IsBackgroundWorker || last_retry == 0 ||
		TimestampDifferenceExceeds(last_retry, now, PENDING_RETRY_SECONDS * 1000))
	{
		n += retry_pending();
		last_retry = now;
	}
	n += refresh_due(more);
	cdp_segments_pin(false);
	return n;
}
