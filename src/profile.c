/*-------------------------------------------------------------------------
 *
 * profile.c
 *	  Profile traits and their survivorship, and the "profile changed" mark.
 *
 * A profile keeps its traits in two jsonb objects: traits (what users read)
 * and trait_meta, which says for every trait when it was set and by which
 * source: {"email": {"at": "2026-11-23T10:00:00.000000Z", "src": "web"}}.
 * When two values of a trait meet (an identify, or a merge), the value from
 * the stronger source wins (cdp.trait_source_priority, strongest first;
 * unlisted sources are the weakest), and among equals the newest.  "at" is
 * written in UTC with a fixed width so it compares as text.
 *
 * cdp.profile_changes holds one row per profile changed since the segment
 * engine last looked: every event, merge and erasure writes it in the same
 * transaction, so nothing downstream misses a change.  Each backend
 * remembers which marks exist, so a bulk drain asks only about the others.
 *
 * The profile row is the anchor of the per-profile table registry: a merge
 * retires the loser's, an unmerge restores it and rebuilds both profiles'
 * traits from their identify events (registered here), an erasure deletes
 * it last.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "profile.h"
#include "registry.h"
#include "status.h"
#include "util.h"

char	   *cdp_trait_source_priority = NULL;

/* bumped by deletions of marks: see known_marks_filter */
static pg_atomic_uint64 *marks_generation = NULL;

static void recompute_both(int64 winner, int64 loser);

static const CdpProfileTable profile_tables[] = {
	{
		.name = "profiles",
		.relation = "cdp.profiles",
		.order = 1000,			/* erased last */
		.on_merge = CDP_ROWS_STAY,	/* merge.c retires the losers */
		.on_unmerge = CDP_ROWS_STAY,	/* erase.c restores the loser's row */
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
		.after_unmerge = recompute_both,
	},
	{
		/* a retired profile's mark stays: the segment engine learns it is gone */
		.name = "profile_changes",
		.relation = "cdp.profile_changes",
		.order = 900,
		.on_merge = CDP_ROWS_STAY,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

void
cdp_profile_init(void)
{
	DefineCustomStringVariable("cdp.trait_source_priority",
							   "Comma-separated sources (channels), strongest first, for trait survivorship.",
							   "A trait value from a stronger source wins over a newer one from a weaker source; among equals the newest wins.",
							   &cdp_trait_source_priority, "", PGC_SUSET, 0,
							   NULL, NULL, NULL);
	for (int i = 0; i < lengthof(profile_tables); i++)
		cdp_register_profile_table(&profile_tables[i]);
}

Size
cdp_profile_shmem_size(void)
{
	return MAXALIGN(sizeof(pg_atomic_uint64));
}

/* Called with AddinShmemInitLock held. */
void
cdp_profile_shmem_init(void)
{
	bool		found;

	marks_generation = ShmemInitStruct("pg_cdp marks", cdp_profile_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(marks_generation, 0);
}

/* Rank of a source in cdp.trait_source_priority: 0 is strongest. */
static int
source_rank(const char *src, int srclen)
{
	const char *list = cdp_trait_source_priority;
	int			rank = 0;

	if (list == NULL || list[0] == '\0')
		return 0;
	while (*list)
	{
		const char *end;
		const char *s;
		const char *e;

		while (*list == ' ' || *list == ',')
			list++;
		if (*list == '\0')
			break;
		end = list;
		while (*end && *end != ',')
			end++;
		s = list;
		e = end;
		while (e > s && e[-1] == ' ')
			e--;
		if (src && (e - s) == srclen && strncmp(s, src, srclen) == 0)
			return rank;
		rank++;
		list = end;
	}
	return rank;				/* unlisted: weakest */
}

static void
meta_fields(JsonbValue *meta, const char **at, int *atlen, const char **src, int *srclen)
{
	*at = NULL;
	*atlen = 0;
	*src = NULL;
	*srclen = 0;
	if (meta == NULL || meta->type != jbvBinary)
		return;
	{
		JsonbValue	k;
		JsonbValue *v;

		k.type = jbvString;
		k.val.string.val = "at";
		k.val.string.len = 2;
		v = findJsonbValueFromContainer(meta->val.binary.data, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
		{
			*at = v->val.string.val;
			*atlen = v->val.string.len;
		}
		k.val.string.val = "src";
		k.val.string.len = 3;
		v = findJsonbValueFromContainer(meta->val.binary.data, JB_FOBJECT, &k);
		if (v && v->type == jbvString)
		{
			*src = v->val.string.val;
			*srclen = v->val.string.len;
		}
	}
}

/* Does the value described by meta b beat the one described by meta a? */
static bool
meta_beats(JsonbValue *a, JsonbValue *b)
{
	const char *at_a,
			   *src_a,
			   *at_b,
			   *src_b;
	int			la,
				lsa,
				lb,
				lsb;
	int			ra,
				rb;
	int			c;

	if (b == NULL)
		return false;
	if (a == NULL)
		return true;
	meta_fields(a, &at_a, &la, &src_a, &lsa);
	meta_fields(b, &at_b, &lb, &src_b, &lsb);
	ra = source_rank(src_a, lsa);
	rb = source_rank(src_b, lsb);
	if (ra != rb)
		return rb < ra;
	if (at_a == NULL)
		return true;
	if (at_b == NULL)
		return false;
	c = memcmp(at_a, at_b, Min(la, lb));
	if (c == 0)
		c = la - lb;
	return c <= 0;				/* ties go to the newcomer */
}

static JsonbValue *
find_key(Jsonb *obj, const char *key, int keylen)
{
	JsonbValue	k;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = keylen;
	return findJsonbValueFromContainer(&obj->root, JB_FOBJECT, &k);
}

/*
 * Merge (t2, m2) into (t1, m1).  Returns the traits when want_meta is
 * false, the meta object otherwise.
 */
static Jsonb *
merge_traits(Jsonb *t1, Jsonb *m1, Jsonb *t2, Jsonb *m2, bool want_meta)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Jsonb	   *base = want_meta ? m1 : t1;
	Jsonb	   *over = want_meta ? m2 : t2;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);

	/* keys of the first side, replaced where the second side wins */
	if (base && JB_ROOT_IS_OBJECT(base))
	{
		it = JsonbIteratorInit(&base->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				JsonbValue	key = v;
				JsonbValue	val;
				JsonbValue *other;

				tok = JsonbIteratorNext(&it, &val, true);
				other = find_key(over, key.val.string.val, key.val.string.len);
				if (other &&
					meta_beats(find_key(m1, key.val.string.val, key.val.string.len),
							   find_key(m2, key.val.string.val, key.val.string.len)))
					val = *other;
				pushJsonbValue(&state, WJB_KEY, &key);
				pushJsonbValue(&state, WJB_VALUE, &val);
			}
		}
	}
	/* keys only the second side has */
	if (over && JB_ROOT_IS_OBJECT(over))
	{
		it = JsonbIteratorInit(&over->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				JsonbValue	key = v;
				JsonbValue	val;

				tok = JsonbIteratorNext(&it, &val, true);
				if (find_key(base, key.val.string.val, key.val.string.len))
					continue;
				pushJsonbValue(&state, WJB_KEY, &key);
				pushJsonbValue(&state, WJB_VALUE, &val);
			}
		}
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * cdp_traits_meta_for builds the meta object for traits all set at "at" by
 * source.
 */
Jsonb *
cdp_traits_meta_for(Jsonb *traits, TimestampTz at, const char *source)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char		atbuf[64];
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(at, NULL, &tm, &fsec, NULL, NULL) != 0)
		strlcpy(atbuf, "0000-01-01T00:00:00.000000Z", sizeof(atbuf));
	else
		snprintf(atbuf, sizeof(atbuf), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
				 Max(0, Min(tm.tm_year, 9999)), tm.tm_mon, tm.tm_mday,
				 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	if (traits && JB_ROOT_IS_OBJECT(traits))
	{
		it = JsonbIteratorInit(&traits->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				JsonbValue	key = v;
				JsonbValue	k2,
							s2;

				pushJsonbValue(&state, WJB_KEY, &key);
				pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
				k2.type = jbvString;
				k2.val.string.val = "at";
				k2.val.string.len = 2;
				s2.type = jbvString;
				s2.val.string.val = atbuf;
				s2.val.string.len = strlen(atbuf);
				pushJsonbValue(&state, WJB_KEY, &k2);
				pushJsonbValue(&state, WJB_VALUE, &s2);
				k2.val.string.val = "src";
				k2.val.string.len = 3;
				if (source)
				{
					s2.type = jbvString;
					s2.val.string.val = (char *) source;
					s2.val.string.len = strlen(source);
				}
				else
					s2.type = jbvNull;
				pushJsonbValue(&state, WJB_KEY, &k2);
				pushJsonbValue(&state, WJB_VALUE, &s2);
				pushJsonbValue(&state, WJB_END_OBJECT, NULL);
			}
		}
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

Jsonb *
cdp_traits_merge(Jsonb *t1, Jsonb *m1, Jsonb *t2, Jsonb *m2, Jsonb **meta_out)
{
	if (meta_out)
		*meta_out = merge_traits(t1, m1, t2, m2, true);
	return merge_traits(t1, m1, t2, m2, false);
}

/*
 * cdp.merge_traits(traits, meta, new_traits, new_meta) → jsonb
 * cdp.merge_trait_meta(meta, new_meta) → jsonb
 *
 * Used by the set-based UPDATEs that fold a batch into stored profiles, so
 * the row lock of the UPDATE decides the order of concurrent writers.
 */
PG_FUNCTION_INFO_V1(cdp_merge_traits_sql);
Datum
cdp_merge_traits_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *t1 = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	Jsonb	   *m1 = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	Jsonb	   *t2 = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	Jsonb	   *m2 = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);

	PG_RETURN_JSONB_P(merge_traits(t1, m1, t2, m2, false));
}

PG_FUNCTION_INFO_V1(cdp_merge_trait_meta_sql);
Datum
cdp_merge_trait_meta_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *m1 = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	Jsonb	   *m2 = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	PG_RETURN_JSONB_P(merge_traits(NULL, m1, NULL, m2, true));
}

/*
 * Trait folds: deltas (traits with their meta) gathered per profile over a
 * batch, then applied in one UPDATE.  The UPDATE merges with what is
 * stored under the row lock, so concurrent writers of one profile compose.
 */
void
cdp_trait_fold_add(CdpTraitFold *f, int64 profile_id, Jsonb *traits, Jsonb *meta)
{
	int			k;

	if (traits == NULL)
		return;
	for (k = 0; k < f->n; k++)
		if (f->ids[k] == profile_id)
			break;
	if (k < f->n)
	{
		f->traits[k] = cdp_traits_merge(f->traits[k], f->meta[k], traits, meta, &f->meta[k]);
		return;
	}
	if (f->n >= f->cap)
	{
		f->cap = Max(16, f->cap * 2);
		f->ids = f->ids ? repalloc(f->ids, sizeof(int64) * f->cap) : palloc(sizeof(int64) * f->cap);
		f->traits = f->traits ? repalloc(f->traits, sizeof(Jsonb *) * f->cap) :
			palloc(sizeof(Jsonb *) * f->cap);
		f->meta = f->meta ? repalloc(f->meta, sizeof(Jsonb *) * f->cap) :
			palloc(sizeof(Jsonb *) * f->cap);
	}
	f->ids[f->n] = profile_id;
	f->traits[f->n] = traits;
	f->meta[f->n] = meta;
	f->n++;
}

void
cdp_trait_fold_apply(CdpTraitFold *f)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];

	if (f->n == 0)
		return;
	if (plan == NULL)
	{
		Oid			argtypes[4] = {INT8ARRAYOID, JSONBARRAYOID, JSONBARRAYOID, TIMESTAMPTZOID};

		plan = cdp_prepare("UPDATE cdp.profiles AS p "
						   "SET traits = cdp.merge_traits(p.traits, p.trait_meta, u.t, u.m), "
						   "    trait_meta = cdp.merge_trait_meta(p.trait_meta, u.m), "
						   "    updated_at = $4 "
						   "FROM unnest($1::int8[], $2::jsonb[], $3::jsonb[]) AS u(id, t, m) "
						   "WHERE p.profile_id = u.id", 4, argtypes);
	}
	args[0] = cdp_int8_array(f->ids, f->n);
	args[1] = cdp_jsonb_array(f->traits, f->n);
	args[2] = cdp_jsonb_array(f->meta, f->n);
	args[3] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(plan, args, SPI_OK_UPDATE);
}

/*
 * Marks known to exist.  Most events of a batch go to profiles that are
 * marked already, and asking cdp.profile_changes costs an index descent per
 * profile: 5% of a bulk drain.  So each backend remembers the profiles
 * whose mark it saw or wrote in a transaction that committed, and asks only
 * about the others.
 *
 * A mark disappears only through a DELETE or TRUNCATE of
 * cdp.profile_changes.  A statement trigger on those bumps a shared
 * generation when the statement starts and again when its transaction
 * ends; a backend that finds the generation moved forgets all it knew.  So
 * a remembered mark is skipped only while no deletion has begun since it
 * was seen (besides one still running then, the same window in which the
 * index probe would have found the row about to be deleted), and a
 * deletion that committed is seen by every later statement.  Without the
 * shared memory of shared_preload_libraries, every mark is asked for.
 */
#define KNOWN_MARKS_MAX 2000000

typedef struct PendingMark
{
	int64		profile_id;
	int			level;			/* transaction nesting level that saw it */
} PendingMark;

static HTAB *known_marks = NULL;
static uint64 known_generation;
static Oid	known_relid = InvalidOid;
static PendingMark *pending_marks = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool marks_callbacks = false;

static void
forget_known_marks(void)
{
	if (known_marks)
	{
		hash_destroy(known_marks);
		known_marks = NULL;
	}
	npending = 0;
}

static void
marks_xact_callback(XactEvent event, void *arg)
{
	bool		commit = (event == XACT_EVENT_COMMIT ||
						  event == XACT_EVENT_PARALLEL_COMMIT);

	if ((!commit && event != XACT_EVENT_ABORT &&
		 event != XACT_EVENT_PARALLEL_ABORT) || npending == 0)
		return;
	if (commit && known_marks &&
		pg_atomic_read_u64(marks_generation) == known_generation)
	{
		if (hash_get_num_entries(known_marks) + npending > KNOWN_MARKS_MAX)
		{
			hash_destroy(known_marks);
			known_marks = NULL;
		}
		else
			for (int i = 0; i < npending; i++)
				(void) hash_search(known_marks, &pending_marks[i].profile_id,
								   HASH_ENTER, NULL);
	}
	npending = 0;
}

/* What a rolled-back subtransaction saw is not known to exist. */
static void
marks_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (npending > 0 && pending_marks[npending - 1].level >= level)
		npending--;
}

/*
 * known_marks_filter removes from ids (sorted, unique) the profiles known to
 * be marked and returns how many are left.
 */
static int
known_marks_filter(int64 *ids, int n)
{
	uint64		generation;
	Oid			relid;
	int			k = 0;

	if (marks_generation == NULL)
		return n;
	if (!marks_callbacks)
	{
		RegisterXactCallback(marks_xact_callback, NULL);
		RegisterSubXactCallback(marks_subxact_callback, NULL);
		marks_callbacks = true;
	}
	generation = pg_atomic_read_u64(marks_generation);
	relid = get_relname_relid("profile_changes", get_namespace_oid("cdp", false));
	if (known_marks == NULL || generation != known_generation || relid != known_relid)
	{
		HASHCTL		ctl;

		forget_known_marks();
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(int64);
		ctl.hcxt = TopMemoryContext;
		known_marks = hash_create("pg_cdp known marks", 1024, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		known_generation = generation;
		known_relid = relid;
	}
	for (int i = 0; i < n; i++)
		if (hash_search(known_marks, &ids[i], HASH_FIND, NULL) == NULL)
			ids[k++] = ids[i];
	return k;
}

/* The ids' marks exist once the current transaction commits. */
static void
known_marks_pending(int64 *ids, int n)
{
	int			level = GetCurrentTransactionNestLevel();

	if (marks_generation == NULL || known_marks == NULL)
		return;
	if (npending + n > maxpending)
	{
		maxpending = Max(npending + n, 2 * maxpending);
		pending_marks = pending_marks
			? repalloc(pending_marks, sizeof(PendingMark) * maxpending)
			: MemoryContextAlloc(TopMemoryContext, sizeof(PendingMark) * maxpending);
	}
	for (int i = 0; i < n; i++)
	{
		pending_marks[npending].profile_id = ids[i];
		pending_marks[npending].level = level;
		npending++;
	}
}

/*
 * Statement trigger on cdp.profile_changes, before DELETE and TRUNCATE:
 * every backend forgets the marks it knew, now and when this transaction
 * ends.
 */
PG_FUNCTION_INFO_V1(cdp_profile_changes_deleted);
Datum
cdp_profile_changes_deleted(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cdp.profile_changes_deleted() must be called as a trigger")));
	if (marks_generation)
		cdp_bump_through_xact(marks_generation);
	return PointerGetDatum(NULL);
}

/*
 * cdp_mark_profiles_changed records that profiles changed, for the segment
 * engine.  Repeated marks of one profile cost nothing more.
 *
 * Profiles not known to be marked (above) are asked for with an anti-join
 * (an index probe each), which costs half of what ON CONFLICT's
 * speculative insertion would, and ON CONFLICT stays for a concurrent
 * writer's marks.  The ids go in ascending order, so two writers never wait
 * on each other's marks in opposite orders.
 */
void
cdp_mark_profiles_changed(int64 *ids, int n, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	int64	   *sorted;
	int			k;

	if (n == 0)
		return;
	sorted = palloc(sizeof(int64) * n);
	memcpy(sorted, ids, sizeof(int64) * n);
	k = cdp_sort_unique_int64(sorted, n);
	k = known_marks_filter(sorted, k);
	if (k == 0)
		return;
	if (plan == NULL)
	{
		Oid			argtypes[3] = {INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID};

		plan = cdp_prepare("INSERT INTO cdp.profile_changes (profile_id, changed_at, reason) "
						   "SELECT id, $2, $3 FROM unnest($1::int8[]) AS id "
						   "WHERE NOT EXISTS (SELECT FROM cdp.profile_changes c "
						   "                  WHERE c.profile_id = id) "
						   "ON CONFLICT (profile_id) DO NOTHING",
						   3, argtypes);
	}
	args[0] = cdp_int8_array(sorted, k);
	args[1] = TimestampTzGetDatum(cdp_now());
	args[2] = CStringGetTextDatum(reason);
	cdp_spi_exec(plan, args, SPI_OK_INSERT);

	/*
	 * A new mark is work for the worker's segment task, which must not wait
	 * for the end of its nap: real-time segments follow within a second.
	 */
	if (SPI_processed > 0)
		cdp_wake_worker_alone_at_commit();
	known_marks_pending(sorted, k);
}

/*
 * recompute_traits rebuilds a profile's traits from its identify events,
 * after an unmerge took some of them away.
 */
static void
recompute_traits(int64 profile_id)
{
	Oid			argtypes[3] = {INT8OID, JSONBOID, JSONBOID};
	Datum		args[3];
	Jsonb	   *traits = NULL;
	Jsonb	   *meta = NULL;

	args[0] = Int64GetDatum(profile_id);
	SPI_execute_with_args("SELECT properties, occurred_at, channel FROM cdp.events "
						  "WHERE profile_id = $1 AND type = 'identify' "
						  "ORDER BY occurred_at, received_at",
						  1, argtypes, args, NULL, false, 0);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Jsonb	   *t = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 1, &isnull));
		TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
		Jsonb	   *m = cdp_traits_meta_for(t, at, SPI_getvalue(tup, desc, 3));

		if (traits == NULL)
		{
			traits = t;
			meta = m;
		}
		else
			traits = cdp_traits_merge(traits, meta, t, m, &meta);
	}
	if (traits == NULL)
	{
		traits = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		meta = traits;
	}
	args[1] = JsonbPGetDatum(traits);
	args[2] = JsonbPGetDatum(meta);
	SPI_execute_with_args("UPDATE cdp.profiles SET traits = $2, trait_meta = $3 "
						  "WHERE profile_id = $1", 3, argtypes, args, NULL, false, 0);
}

static void
recompute_both(int64 winner, int64 loser)
{
	recompute_traits(winner);
	recompute_traits(loser);
}
