/*-------------------------------------------------------------------------
 *
 * traits.c
 *	  Declared and computed traits, kept exact as events arrive, and the
 *	  cdp.customers view that shows them as typed columns.
 *
 * A declared trait gives an identify trait (cdp.profiles.traits) a typed
 * column.  A computed trait is an aggregate over a profile's events
 * (count, sum, avg, min, max, first, last, count_distinct, most_frequent),
 * of one event name or all, filtered by a SQL "where" over the event row,
 * over all time, a sliding window or a calendar one in the business time
 * zone (cdp.timezone).
 *
 * State.  cdp.profile_traits has one row per profile and, at each trait's
 * slot (its trait_id), what the trait keeps: counts[] (count, and avg's
 * count), numbers[] (sum, avg's sum, min, max of a property), times[]
 * (min, max, first and last times, and when first/last's value was seen),
 * texts[] (first and last values), and tallies (count_distinct and
 * most_frequent, see trait_values.c).  The arrays are plain columns, so
 * the table keeps the same shape whatever traits exist, and a dump
 * restores it as it is.
 *
 * Events.  The event writer calls traits_events_written for every batch it
 * wrote, in the writing transaction (cdp.track, cdp.ingest, the drain).
 * One statement per owner adds the batch's contribution to each profile's
 * row: counts and sums add, min/max/first/last compare, tallies merge.  It
 * reads only the batch, never the profile's history.  Windowed traits add
 * only what lies in their window now, and lower the row's decay_at to when
 * that will leave it.
 *
 * History.  Everything else computes values from cdp.events: the decay
 * task (windowed traits of profiles whose decay_at has come), the backfill
 * of a new trait, and what a merge or an unmerge leaves.  Each locks the
 * profiles' rows first, then computes in a statement of its own, whose
 * snapshot sees every writer that had touched those rows; a writer that
 * comes later waits for the lock and adds its batch on top.  A writer that
 * still had the definitions from before a trait existed wrote nothing for
 * it, so the backfill begins only once every transaction that was running
 * when it first looked has ended (backfill_horizon).
 *
 * Rights.  A trait's "where" is the owner's SQL: every statement that
 * evaluates it runs as the owner (a cdp_admin member), in a subtransaction,
 * so a trait that fails records its error and leaves the event and the
 * other traits alone.
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
#include "pgtime.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "ingest.h"
#include "predicate.h"
#include "profile.h"
#include "registry.h"
#include "status.h"
#include "trait_values.h"
#include "traits.h"
#include "util.h"
#include "worker.h"

char	   *cdp_timezone = NULL;
int			cdp_trait_batch_size = 2000;

typedef enum TraitAgg
{
	AGG_COUNT,
	AGG_SUM,
	AGG_AVG,
	AGG_MIN,
	AGG_MAX,
	AGG_FIRST,
	AGG_LAST,
	AGG_COUNT_DISTINCT,
	AGG_MOST_FREQUENT
} TraitAgg;

static const char *const agg_names[] = {
	"count", "sum", "avg", "min", "max", "first", "last", "count_distinct",
	"most_frequent", NULL
};

typedef struct TraitDef
{
	int32		id;				/* also the slot */
	char	   *name;
	bool		computed;
	Oid			type;
	TraitAgg	agg;
	char	   *event;			/* NULL: any */
	char	   *property;		/* NULL: the time */
	char	   *interval;		/* sliding window, as text */
	char	   *calendar;		/* day, week, month */
	char	   *where;
	Oid			owner;
	bool		backfilling;
} TraitDef;

/* the definitions, reloaded when the shared generation moves */
typedef struct TraitCache
{
	MemoryContext cxt;
	uint64		generation;
	Oid			relid;
	int			ndefs;
	TraitDef   *defs;
	int			ncomputed;
	int			maxslot;
	bool		any_event;		/* a computed trait of every event */
	int			ngroups;		/* computed traits by owner */
	int		   *group_start;	/* into computed, sorted by owner */
	int		   *group_len;
	TraitDef  **computed;
	SPIPlanPtr *delta_plans;	/* per group */
	SPIPlanPtr *history_plans;	/* per group: all its traits */
	SPIPlanPtr *decay_plans;	/* per group: its windowed traits */
} TraitCache;

static TraitCache cache;
static pg_atomic_uint64 *traits_generation = NULL;
static bool cache_stale_here = true;

static void traits_events_written(CdpMessage *msgs, int nmsgs);
static void traits_after_merge(const int64 *winners, int n);
static void traits_after_unmerge(int64 winner, int64 loser);
static int64 task_traits(bool *more);
static bool customers_current(void);
static void rebuild_customers(void);

static const CdpProfileTable trait_tables[] = {
	{
		/* the winner's values are computed again from its events */
		.name = "profile_traits",
		.relation = "cdp.profile_traits",
		.order = 500,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql = "DELETE FROM cdp.profile_traits WHERE profile_id = ANY($1)",
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
		.after_merge = traits_after_merge,
		.after_unmerge = traits_after_unmerge,
	},
	{
		.name = "trait_issues",
		.relation = "cdp.trait_issues",
		.order = 510,
		.on_merge = CDP_ROWS_BY_PROFILE_ID,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

static const CdpTask traits_task = {
	.name = "traits",
	.run = task_traits,
};

static bool
check_timezone_name(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0' || pg_tzset(*newval) == NULL)
	{
		GUC_check_errdetail("\"%s\" is not a time zone PostgreSQL knows.",
							*newval ? *newval : "");
		return false;
	}
	return true;
}

void
cdp_traits_init(void)
{
	DefineCustomStringVariable("cdp.timezone",
							   "The business time zone: where calendar windows (today, this week, this month) begin.",
							   "Computed traits over calendar windows roll over at local midnight in this zone.",
							   &cdp_timezone, "UTC", PGC_SIGHUP, 0,
							   check_timezone_name, NULL, NULL);
	DefineCustomIntVariable("cdp.trait_batch_size",
							"Profiles per batch of a trait's backfill and decay.",
							NULL, &cdp_trait_batch_size, 2000, 10, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	for (int i = 0; i < lengthof(trait_tables); i++)
		cdp_register_profile_table(&trait_tables[i]);
	cdp_register_events_written(traits_events_written);
	cdp_register_task(&traits_task);
}

Size
cdp_traits_shmem_size(void)
{
	return MAXALIGN(sizeof(pg_atomic_uint64));
}

void
cdp_traits_shmem_init(void)
{
	bool		found;

	traits_generation = ShmemInitStruct("pg_cdp traits", cdp_traits_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(traits_generation, 0);
}

/* Definitions changed: every backend reloads them (now and at commit). */
static void
definitions_changed(void)
{
	cache_stale_here = true;
	if (traits_generation)
		cdp_bump_through_xact(traits_generation);
}

/* Statement trigger on cdp.trait_definitions. */
PG_FUNCTION_INFO_V1(cdp_trait_definitions_changed);
Datum
cdp_trait_definitions_changed(PG_FUNCTION_ARGS)
{
	definitions_changed();
	return PointerGetDatum(NULL);
}

/*
 * SQL fragments of a trait.  The event row's columns are profile_id,
 * event, properties, occurred_at, channel and source, the same whether
 * they come from a batch or from cdp.events; "now" is a parameter.
 */

/* the property's value as jsonb, or a column's as text (is_column) */
static char *
property_sql(const TraitDef *t, bool *is_column)
{
	StringInfoData b;
	char	   *path;
	char	   *tok;
	char	   *save;
	bool		first = true;

	*is_column = false;
	if (strcmp(t->property, "channel") == 0 || strcmp(t->property, "source") == 0 ||
		strcmp(t->property, "event") == 0)
	{
		*is_column = true;
		return psprintf("e.%s", t->property);
	}
	path = pstrdup(t->property);
	if (strncmp(path, "properties.", 11) == 0)
		path += 11;
	initStringInfo(&b);
	appendStringInfoString(&b, "(e.properties #> ARRAY[");
	for (tok = strtok_r(path, ".", &save); tok; tok = strtok_r(NULL, ".", &save))
	{
		appendStringInfo(&b, "%s%s", first ? "" : ", ", quote_literal_cstr(tok));
		first = false;
	}
	appendStringInfoString(&b, "]::text[])");
	return b.data;
}

/* the value an aggregate reads: numeric, text, or NULL when it is the time */
static char *
value_sql(const TraitDef *t, bool numeric)
{
	bool		is_column;
	char	   *p;

	if (t->property == NULL)
		return NULL;
	p = property_sql(t, &is_column);
	if (is_column)
		return numeric ? psprintf("NULL::numeric") : p;
	if (numeric)
		return psprintf("cdp.trait_number(%s)", p);
	/* a JSON string as its text, anything else as its JSON text */
	return psprintf("(CASE WHEN jsonb_typeof(%s) = 'string' THEN %s #>> '{}' "
					"WHEN jsonb_typeof(%s) = 'null' THEN NULL ELSE %s::text END)",
					p, p, p, p);
}

static bool
agg_numeric(const TraitDef *t)
{
	return t->agg == AGG_SUM || t->agg == AGG_AVG ||
		((t->agg == AGG_MIN || t->agg == AGG_MAX) && t->property != NULL);
}

static bool
windowed(const TraitDef *t)
{
	return t->interval != NULL || t->calendar != NULL;
}

/* whether the event row counts for the trait at now ($now) */
static char *
match_sql(const TraitDef *t, const char *now)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfo(&b, "(%s", t->event ? psprintf("e.event = %s", quote_literal_cstr(t->event)) : "true");
	if (t->interval)
		appendStringInfo(&b, " AND e.occurred_at > %s - %s::interval",
						 now, quote_literal_cstr(t->interval));
	else if (t->calendar)
		appendStringInfo(&b, " AND e.occurred_at >= cdp.period_start(%s, '%s')"
						 " AND e.occurred_at < cdp.period_end(%s, '%s')",
						 now, t->calendar, now, t->calendar);
	if (t->where)
		appendStringInfo(&b, " AND coalesce((\n%s\n)::boolean, false)", t->where);
	appendStringInfoChar(&b, ')');
	return b.data;
}

/*
 * The aggregates of trait t over rows e (with its match column mK), named
 * cK, nK, tK, sK, yK after the arrays they go to.
 */
static void
append_aggregates(StringInfo b, const TraitDef *t, const char *now)
{
	int			k = t->id;
	char	   *num = agg_numeric(t) ? value_sql(t, true) : NULL;
	char	   *txt = agg_numeric(t) ? NULL : value_sql(t, false);

	switch (t->agg)
	{
		case AGG_COUNT:
			appendStringInfo(b, ", count(*) FILTER (WHERE e.m%d) AS c%d", k, k);
			break;
		case AGG_SUM:
			appendStringInfo(b, ", sum(%s) FILTER (WHERE e.m%d) AS n%d", num, k, k);
			break;
		case AGG_AVG:
			appendStringInfo(b, ", sum(%s) FILTER (WHERE e.m%d) AS n%d", num, k, k);
			appendStringInfo(b, ", count(%s) FILTER (WHERE e.m%d) AS c%d", num, k, k);
			break;
		case AGG_MIN:
		case AGG_MAX:
			if (num)
				appendStringInfo(b, ", %s(%s) FILTER (WHERE e.m%d) AS n%d",
								 t->agg == AGG_MIN ? "min" : "max", num, k, k);
			else
				appendStringInfo(b, ", %s(e.occurred_at) FILTER (WHERE e.m%d) AS t%d",
								 t->agg == AGG_MIN ? "min" : "max", k, k);
			break;
		case AGG_FIRST:
		case AGG_LAST:
			{
				bool		f = t->agg == AGG_FIRST;

				if (txt == NULL)
				{
					appendStringInfo(b, ", %s(e.occurred_at) FILTER (WHERE e.m%d) AS t%d",
									 f ? "min" : "max", k, k);
					break;
				}
				appendStringInfo(b, ", (array_agg(%s ORDER BY e.occurred_at %s, %s %s) "
								 "FILTER (WHERE e.m%d AND %s IS NOT NULL))[1] AS s%d",
								 txt, f ? "" : "DESC", txt, f ? "" : "DESC", k, txt, k);
				appendStringInfo(b, ", %s(e.occurred_at) FILTER (WHERE e.m%d AND %s IS NOT NULL) AS t%d",
								 f ? "min" : "max", k, txt, k);
				break;
			}
		case AGG_COUNT_DISTINCT:
		case AGG_MOST_FREQUENT:
			appendStringInfo(b, ", cdp.tally_agg(%s, e.occurred_at) FILTER (WHERE e.m%d AND %s IS NOT NULL) AS y%d",
							 txt, k, txt, k);
			break;
	}
	/* when the earliest counted event leaves the window */
	if (t->interval)
		appendStringInfo(b, ", min(e.occurred_at) FILTER (WHERE e.m%d) + %s::interval AS d%d",
						 k, quote_literal_cstr(t->interval), k);
	else if (t->calendar)
		appendStringInfo(b, ", CASE WHEN bool_or(e.m%d) THEN cdp.period_end(%s, '%s') END AS d%d",
						 k, now, t->calendar, k);
}

/* which arrays a trait uses */
#define USES_COUNTS(t)	((t)->agg == AGG_COUNT || (t)->agg == AGG_AVG)
#define USES_NUMBERS(t) (agg_numeric(t))
#define USES_TIMES(t)	(!agg_numeric(t) && (t)->agg != AGG_COUNT && \
						 (t)->agg != AGG_COUNT_DISTINCT && (t)->agg != AGG_MOST_FREQUENT)
#define USES_TEXTS(t)	(((t)->agg == AGG_FIRST || (t)->agg == AGG_LAST) && (t)->property)
#define USES_TALLY(t)	((t)->agg == AGG_COUNT_DISTINCT || (t)->agg == AGG_MOST_FREQUENT)

/* ARRAY[...] of the column prefix's values at the group's slots */
static void
append_array(StringInfo b, TraitDef **ts, int n, int maxslot, char prefix,
			 const char *type)
{
	appendStringInfoString(b, "ARRAY[");
	for (int s = 1; s <= maxslot; s++)
	{
		const char *v = "NULL";

		for (int i = 0; i < n; i++)
			if (ts[i]->id == s &&
				((prefix == 'c' && USES_COUNTS(ts[i])) ||
				 (prefix == 'n' && USES_NUMBERS(ts[i])) ||
				 (prefix == 't' && USES_TIMES(ts[i])) ||
				 (prefix == 's' && USES_TEXTS(ts[i]))))
				v = psprintf("d.%c%d", prefix, s);
		appendStringInfo(b, "%s%s", s > 1 ? ", " : "", v);
	}
	appendStringInfo(b, "]::%s[]", type);
}

static void
append_tallies(StringInfo b, TraitDef **ts, int n)
{
	bool		any = false;

	for (int i = 0; i < n; i++)
		if (USES_TALLY(ts[i]))
		{
			appendStringInfo(b, "%s'%d', d.y%d", any ? ", " : "jsonb_build_object(",
							 ts[i]->id, ts[i]->id);
			any = true;
		}
	appendStringInfoString(b, any ? ")" : "NULL::jsonb");
}

static void
append_decay(StringInfo b, TraitDef **ts, int n)
{
	int			any = 0;

	for (int i = 0; i < n; i++)
		if (windowed(ts[i]))
			appendStringInfo(b, "%sd.d%d", any++ ? ", " : "least(", ts[i]->id);
	appendStringInfoString(b, any ? (any == 1 ? ", NULL::timestamptz)" : ")") : "NULL::timestamptz");
}

/* the rows e: the batch's, or a profile set's history */
static void
append_rows(StringInfo b, TraitDef **ts, int n, bool history, const char *now)
{
	appendStringInfoString(b, "e AS MATERIALIZED (SELECT e.*");
	for (int i = 0; i < n; i++)
		appendStringInfo(b, ", %s AS m%d", match_sql(ts[i], now), ts[i]->id);
	if (history)
	{
		bool		all_windowed = true;

		for (int i = 0; i < n; i++)
			all_windowed = all_windowed && windowed(ts[i]);
		appendStringInfoString(b, " FROM (SELECT x.profile_id, x.event, x.properties, "
							   "x.occurred_at, x.channel, x.source FROM cdp.events x "
							   "WHERE x.profile_id = ANY($1)");
		/* windowed traits need only their windows' months */
		if (all_windowed)
		{
			appendStringInfoString(b, " AND x.occurred_at >= least(");
			for (int i = 0; i < n; i++)
				appendStringInfo(b, "%s%s", i ? ", " : "",
								 ts[i]->interval
								 ? psprintf("%s - %s::interval", now, quote_literal_cstr(ts[i]->interval))
								 : psprintf("cdp.period_start(%s, '%s')", now, ts[i]->calendar));
			appendStringInfoChar(b, ')');
		}
		appendStringInfoString(b, ") e)");
	}
	else
		appendStringInfoString(b, " FROM unnest($1::int8[], $2::text[], $3::jsonb[], "
							   "$4::timestamptz[], $5::text[], $6::text[]) "
							   "AS e(profile_id, event, properties, occurred_at, channel, source))");
}

/* values a numeric trait skips, kept with the reason */
static void
append_issues(StringInfo b, TraitDef **ts, int n)
{
	bool		any = false;

	for (int i = 0; i < n; i++)
	{
		bool		is_column;
		char	   *p;

		if (!agg_numeric(ts[i]) || ts[i]->property == NULL)
			continue;
		p = property_sql(ts[i], &is_column);
		if (is_column)
			continue;
		appendStringInfo(b, "%s SELECT e.profile_id, %s, %s, 'not a number', e.occurred_at "
						 "FROM e WHERE e.m%d AND jsonb_typeof(%s) NOT IN ('number', 'null')",
						 any ? " UNION ALL" : ", i AS (INSERT INTO cdp.trait_issues "
						 "(profile_id, trait, value, reason, occurred_at)",
						 quote_literal_cstr(ts[i]->name), p, ts[i]->id, p);
		any = true;
	}
	if (any)
		appendStringInfoChar(b, ')');
}

static void
append_matches_any(StringInfo b, TraitDef **ts, int n)
{
	for (int i = 0; i < n; i++)
		appendStringInfo(b, "%se.m%d", i ? " OR " : "", ts[i]->id);
}

/*
 * The batch statement: adds the contribution of a batch of events to the
 * traits ts (one owner's).  $1..$6 the events' columns, $7 now.
 */
static char *
delta_sql(TraitDef **ts, int n, int maxslot)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "WITH ");
	append_rows(&b, ts, n, false, "$7");
	append_issues(&b, ts, n);
	appendStringInfoString(&b, ", d AS (SELECT e.profile_id");
	for (int i = 0; i < n; i++)
		append_aggregates(&b, ts[i], "$7");
	appendStringInfoString(&b, " FROM e WHERE ");
	append_matches_any(&b, ts, n);
	appendStringInfoString(&b, " GROUP BY e.profile_id) "
						   "INSERT INTO cdp.profile_traits AS p "
						   "(profile_id, counts, numbers, times, texts, tallies, decay_at) "
						   "SELECT d.profile_id, ");
	append_array(&b, ts, n, maxslot, 'c', "bigint");
	appendStringInfoString(&b, ", ");
	append_array(&b, ts, n, maxslot, 'n', "numeric");
	appendStringInfoString(&b, ", ");
	append_array(&b, ts, n, maxslot, 't', "timestamptz");
	appendStringInfoString(&b, ", ");
	append_array(&b, ts, n, maxslot, 's', "text");
	appendStringInfoString(&b, ", ");
	append_tallies(&b, ts, n);
	appendStringInfoString(&b, ", ");
	append_decay(&b, ts, n);
	appendStringInfoString(&b, " FROM d ORDER BY d.profile_id "
						   "ON CONFLICT (profile_id) DO UPDATE SET ");
	for (int i = 0; i < n; i++)
	{
		const TraitDef *t = ts[i];
		int			k = t->id;
		bool		f = t->agg == AGG_FIRST;

		if (USES_COUNTS(t))
			appendStringInfo(&b, "counts[%d] = coalesce(p.counts[%d], 0) + excluded.counts[%d], ",
							 k, k, k);
		switch (t->agg)
		{
			case AGG_SUM:
			case AGG_AVG:
				appendStringInfo(&b, "numbers[%d] = coalesce(p.numbers[%d] + excluded.numbers[%d], "
								 "p.numbers[%d], excluded.numbers[%d]), ", k, k, k, k, k);
				break;
			case AGG_MIN:
			case AGG_MAX:
				appendStringInfo(&b, "%s[%d] = %s(p.%s[%d], excluded.%s[%d]), ",
								 t->property ? "numbers" : "times", k,
								 t->agg == AGG_MIN ? "least" : "greatest",
								 t->property ? "numbers" : "times", k,
								 t->property ? "numbers" : "times", k);
				break;
			case AGG_FIRST:
			case AGG_LAST:
				if (t->property)
					appendStringInfo(&b, "texts[%d] = CASE WHEN p.times[%d] IS NULL "
									 "OR excluded.times[%d] %s p.times[%d] "
									 "OR (excluded.times[%d] = p.times[%d] AND excluded.texts[%d] %s p.texts[%d]) "
									 "THEN excluded.texts[%d] ELSE p.texts[%d] END, ",
									 k, k, k, f ? "<" : ">", k, k, k, k, f ? "<" : ">", k, k, k);
				appendStringInfo(&b, "times[%d] = %s(p.times[%d], excluded.times[%d]), ",
								 k, f ? "least" : "greatest", k, k);
				break;
			default:
				break;
		}
	}
	appendStringInfoString(&b, "tallies = cdp.tally_merge(p.tallies, excluded.tallies), "
						   "decay_at = least(p.decay_at, excluded.decay_at)");
	return b.data;
}

/*
 * The history statement: sets the traits ts (one owner's) of the profiles
 * $1 from their events at now ($2).  Their rows exist and are locked.
 */
static char *
history_sql(TraitDef **ts, int n)
{
	StringInfoData b;
	bool		any_tally = false;

	initStringInfo(&b);
	appendStringInfoString(&b, "WITH ");
	append_rows(&b, ts, n, true, "$2");
	appendStringInfoString(&b, ", d AS (SELECT x.profile_id");
	for (int i = 0; i < n; i++)
		append_aggregates(&b, ts[i], "$2");
	appendStringInfoString(&b, " FROM unnest($1::int8[]) x(profile_id) "
						   "LEFT JOIN e ON e.profile_id = x.profile_id GROUP BY x.profile_id) "
						   "UPDATE cdp.profile_traits p SET ");
	for (int i = 0; i < n; i++)
	{
		const TraitDef *t = ts[i];
		int			k = t->id;

		if (USES_COUNTS(t))
			appendStringInfo(&b, "counts[%d] = d.c%d, ", k, k);
		if (USES_NUMBERS(t))
			appendStringInfo(&b, "numbers[%d] = d.n%d, ", k, k);
		if (USES_TIMES(t))
			appendStringInfo(&b, "times[%d] = d.t%d, ", k, k);
		if (USES_TEXTS(t))
			appendStringInfo(&b, "texts[%d] = d.s%d, ", k, k);
		any_tally = any_tally || USES_TALLY(t);
	}
	if (any_tally)
	{
		appendStringInfoString(&b, "tallies = coalesce(p.tallies, '{}') || ");
		append_tallies(&b, ts, n);
		appendStringInfoString(&b, ", ");
	}
	appendStringInfoString(&b, "decay_at = least(p.decay_at, ");
	append_decay(&b, ts, n);
	appendStringInfoString(&b, ") FROM d WHERE p.profile_id = d.profile_id");
	return b.data;
}

/*
 * The definitions.  Loaded in a context of their own; the batch plans are
 * made when first needed and live as long as the definitions do.
 */
static void
load_definitions(void)
{
	uint64		generation = traits_generation ? pg_atomic_read_u64(traits_generation) : 0;
	Oid			relid = get_relname_relid("trait_definitions", get_namespace_oid("cdp", false));
	MemoryContext old;
	int			nc = 0;

	if (!cache_stale_here && cache.cxt && traits_generation &&
		generation == cache.generation && relid == cache.relid)
		return;
	if (cache.cxt)
	{
		for (int g = 0; g < cache.ngroups; g++)
		{
			if (cache.delta_plans[g])
				SPI_freeplan(cache.delta_plans[g]);
			if (cache.history_plans[g])
				SPI_freeplan(cache.history_plans[g]);
			if (cache.decay_plans[g])
				SPI_freeplan(cache.decay_plans[g]);
		}
		MemoryContextDelete(cache.cxt);
	}
	memset(&cache, 0, sizeof(cache));
	cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp traits", ALLOCSET_SMALL_SIZES);
	cache.generation = generation;
	cache.relid = relid;
	cache_stale_here = false;
	if (!OidIsValid(relid))
		return;

	if (SPI_execute("SELECT trait_id, name, kind = 'computed', type, aggregate, event, property, "
					"window_interval::text, calendar, \"where\", owner, backfill_next IS NOT NULL "
					"FROM cdp.trait_definitions ORDER BY owner, trait_id", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.trait_definitions");
	old = MemoryContextSwitchTo(cache.cxt);
	cache.ndefs = SPI_processed;
	cache.defs = palloc0(sizeof(TraitDef) * Max(cache.ndefs, 1));
	cache.computed = palloc0(sizeof(TraitDef *) * Max(cache.ndefs, 1));
	for (int i = 0; i < cache.ndefs; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		TraitDef   *t = &cache.defs[i];
		bool		isnull;
		char	   *agg;

		t->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		t->name = SPI_getvalue(tup, desc, 2);
		t->computed = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		t->type = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
		agg = SPI_getvalue(tup, desc, 5);
		t->event = SPI_getvalue(tup, desc, 6);
		t->property = SPI_getvalue(tup, desc, 7);
		t->interval = SPI_getvalue(tup, desc, 8);
		t->calendar = SPI_getvalue(tup, desc, 9);
		t->where = SPI_getvalue(tup, desc, 10);
		t->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 11, &isnull));
		t->backfilling = DatumGetBool(SPI_getbinval(tup, desc, 12, &isnull));
		if (!t->computed)
			continue;
		for (int a = 0; agg_names[a]; a++)
			if (strcmp(agg, agg_names[a]) == 0)
				t->agg = (TraitAgg) a;
		cache.computed[nc++] = t;
		cache.maxslot = Max(cache.maxslot, t->id);
		cache.any_event = cache.any_event || t->event == NULL;
	}
	cache.ncomputed = nc;
	cache.group_start = palloc0(sizeof(int) * Max(nc, 1));
	cache.group_len = palloc0(sizeof(int) * Max(nc, 1));
	cache.delta_plans = palloc0(sizeof(SPIPlanPtr) * Max(nc, 1));
	cache.history_plans = palloc0(sizeof(SPIPlanPtr) * Max(nc, 1));
	cache.decay_plans = palloc0(sizeof(SPIPlanPtr) * Max(nc, 1));
	for (int i = 0; i < nc; i++)
	{
		if (i == 0 || cache.computed[i]->owner != cache.computed[i - 1]->owner)
			cache.group_start[cache.ngroups++] = i;
		cache.group_len[cache.ngroups - 1]++;
	}
	MemoryContextSwitchTo(old);
}

/*
 * What a failing trait leaves for its status.  Its values missed what
 * failed, so it is backfilled again from the start: once its statement
 * works again (a grant, a fixed table) the trait is exact and the error
 * goes.
 */
static void
record_error(TraitDef **ts, int n, ErrorData *ed)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {INT4ARRAYOID, TEXTOID};
	Datum		args[2];
	int32	   *ids = palloc(sizeof(int32) * n);

	for (int i = 0; i < n; i++)
		ids[i] = ts[i]->id;
	if (plan == NULL)
		plan = cdp_prepare("UPDATE cdp.trait_definitions SET last_error = $2, last_error_at = cdp.now(), "
						   "backfill_next = 0, backfill_done = 0, backfill_horizon = NULL "
						   "WHERE trait_id = ANY($1) "
						   "AND (last_error IS DISTINCT FROM $2 OR backfill_next IS NULL)",
						   2, argtypes);
	args[0] = cdp_int4_array(ids, n);
	args[1] = CStringGetTextDatum(ed->message ? ed->message : "error");
	cdp_spi_exec(plan, args, SPI_OK_UPDATE);
	/* the same error again changes nothing: no reload everywhere */
	if (SPI_processed > 0)
		definitions_changed();
}

/*
 * Runs one owner's statement over traits ts; if it fails, each trait on
 * its own, so only the failing ones record an error.
 */
static void
run_group(TraitDef **ts, int n, SPIPlanPtr plan, Datum *args, int nargs, Oid *argtypes,
		  char *(*make_sql) (TraitDef **, int, int), int maxslot, int expected)
{
	ErrorData  *err = cdp_exec_guarded(plan, args, NULL, ts[0]->owner, expected,
						   "trait statement");

	if (err == NULL)
		return;
	if (n == 1)
	{
		record_error(ts, 1, err);
		return;
	}
	for (int i = 0; i < n; i++)
	{
		SPIPlanPtr	one = SPI_prepare(make_sql(&ts[i], 1, maxslot), nargs, argtypes);

		if (one == NULL)
		{
			ErrorData	ed = {0};

			ed.message = "the trait's statement does not prepare";
			record_error(&ts[i], 1, &ed);
			continue;
		}
		err = cdp_exec_guarded(one, args, NULL, ts[i]->owner, expected,
						   "trait statement");
		if (err)
			record_error(&ts[i], 1, err);
		SPI_freeplan(one);
	}
}

static char *
delta_sql_for(TraitDef **ts, int n, int maxslot)
{
	return delta_sql(ts, n, maxslot);
}

static char *
history_sql_for(TraitDef **ts, int n, int maxslot)
{
	return history_sql(ts, n);
}

/*
 * traits_events_written: the event writer's hook.  Adds a batch's events
 * to the computed traits, one statement per owner.
 */
static void
traits_events_written(CdpMessage *msgs, int nmsgs)
{
	static Oid	argtypes[7] = {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
	TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};
	int64	   *pids;
	char	  **events,
			  **channels,
			  **sources;
	Jsonb	  **props;
	TimestampTz *occurred;
	Datum		args[7];
	int			n = 0;

	load_definitions();
	if (cache.ncomputed == 0)
		return;

	pids = palloc(sizeof(int64) * nmsgs);
	events = palloc(sizeof(char *) * nmsgs);
	channels = palloc(sizeof(char *) * nmsgs);
	sources = palloc(sizeof(char *) * nmsgs);
	props = palloc(sizeof(Jsonb *) * nmsgs);
	occurred = palloc(sizeof(TimestampTz) * nmsgs);
	for (int i = 0; i < nmsgs; i++)
	{
		CdpMessage *m = &msgs[i];
		bool		wanted = cache.any_event;

		if (m->err.sqlerrcode || m->duplicate || m->event == NULL)
			continue;
		/* only events some trait reads travel to the statement */
		for (int t = 0; !wanted && t < cache.ncomputed; t++)
			wanted = strcmp(cache.computed[t]->event, m->event) == 0;
		if (!wanted)
			continue;
		pids[n] = m->profile_id;
		events[n] = m->event;
		channels[n] = m->channel;
		sources[n] = m->source;
		props[n] = m->properties;
		occurred[n] = m->occurred_at;
		n++;
	}
	if (n == 0)
		return;
	args[0] = cdp_int8_array(pids, n);
	args[1] = cdp_text_array(events, n);
	args[2] = cdp_jsonb_array(props, n);
	args[3] = cdp_timestamptz_array(occurred, n);
	args[4] = cdp_text_array(channels, n);
	args[5] = cdp_text_array(sources, n);
	args[6] = TimestampTzGetDatum(cdp_now());
	for (int g = 0; g < cache.ngroups; g++)
	{
		TraitDef  **ts = &cache.computed[cache.group_start[g]];
		int			len = cache.group_len[g];

		if (cache.delta_plans[g] == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare(delta_sql(ts, len, cache.maxslot), 7, argtypes);

			if (plan == NULL)
			{
				ErrorData	ed = {0};

				ed.message = psprintf("the traits' statement does not prepare: %s",
									  SPI_result_code_string(SPI_result));
				record_error(ts, len, &ed);
				continue;
			}
			SPI_keepplan(plan);
			cache.delta_plans[g] = plan;
		}
		run_group(ts, len, cache.delta_plans[g], args, 7, argtypes, delta_sql_for,
				  cache.maxslot, SPI_OK_INSERT);
	}
}

/*
 * Locks the rows of ids (sorted, unique), making the missing ones, so that
 * what the history statement computes is not overtaken by a writer.
 */
static void
lock_rows(int64 *ids, int n)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		args[1];

	if (plan == NULL)
		plan = cdp_prepare("INSERT INTO cdp.profile_traits AS p (profile_id) "
						   "SELECT unnest($1::int8[]) ORDER BY 1 "
						   "ON CONFLICT (profile_id) DO UPDATE SET decay_at = p.decay_at",
						   1, argtypes);
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_INSERT);
}

/*
 * compute_from_history sets the traits chosen by want (all if NULL) of
 * the profiles ids from their events.  The rows must be locked.
 */
static bool want_windowed(const TraitDef *t);

static void
compute_from_history(int64 *ids, int n, bool (*want) (const TraitDef *))
{
	Oid			argtypes[2] = {INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		args[2];

	args[0] = cdp_int8_array(ids, n);
	args[1] = TimestampTzGetDatum(cdp_now());
	for (int g = 0; g < cache.ngroups; g++)
	{
		TraitDef  **all = &cache.computed[cache.group_start[g]];
		TraitDef  **ts = palloc(sizeof(TraitDef *) * cache.group_len[g]);
		int			len = 0;
		SPIPlanPtr *kept = want == NULL ? &cache.history_plans[g] :
			want == want_windowed ? &cache.decay_plans[g] : NULL;
		SPIPlanPtr	plan = kept ? *kept : NULL;

		for (int i = 0; i < cache.group_len[g]; i++)
			if (want == NULL || want(all[i]))
				ts[len++] = all[i];
		if (len == 0)
			continue;
		if (plan == NULL)
		{
			plan = SPI_prepare(history_sql(ts, len), 2, argtypes);
			if (plan == NULL)
			{
				ErrorData	ed = {0};

				ed.message = "the traits' history statement does not prepare";
				record_error(ts, len, &ed);
				continue;
			}
			if (kept)
			{
				SPI_keepplan(plan);
				*kept = plan;
			}
		}
		run_group(ts, len, plan, args, 2, argtypes, history_sql_for, cache.maxslot,
				  SPI_OK_UPDATE);
		if (kept == NULL)
			SPI_freeplan(plan);
	}
}

static void
traits_after_merge(const int64 *winners, int n)
{
	int64	   *ids;

	load_definitions();
	if (cache.ncomputed == 0)
		return;
	ids = palloc(sizeof(int64) * n);
	memcpy(ids, winners, sizeof(int64) * n);
	n = cdp_sort_unique_int64(ids, n);
	lock_rows(ids, n);
	compute_from_history(ids, n, NULL);
}

static void
traits_after_unmerge(int64 winner, int64 loser)
{
	int64		ids[2] = {Min(winner, loser), Max(winner, loser)};

	load_definitions();
	if (cache.ncomputed == 0)
		return;
	lock_rows(ids, 2);
	compute_from_history(ids, 2, NULL);
}

static bool
want_windowed(const TraitDef *t)
{
	return windowed(t);
}

static int32 backfill_trait_id;

static bool
want_backfill(const TraitDef *t)
{
	return t->id == backfill_trait_id;
}

/*
 * Decay: the windowed traits of profiles whose decay_at has come, from
 * their events; they are marked changed.  Rows a writer holds are left for
 * the next round.
 */
static int64
decay_due(bool *more)
{
	static SPIPlanPtr pick = NULL;
	Oid			argtypes[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2];
	int64	   *ids;
	int			n;

	if (pick == NULL)
		pick = cdp_prepare("WITH due AS (SELECT profile_id FROM cdp.profile_traits "
						   "WHERE decay_at <= $1 ORDER BY decay_at LIMIT $2 "
						   "FOR UPDATE SKIP LOCKED) "
						   "UPDATE cdp.profile_traits p SET decay_at = NULL FROM due "
						   "WHERE p.profile_id = due.profile_id RETURNING p.profile_id",
						   2, argtypes);
	args[0] = TimestampTzGetDatum(cdp_now());
	args[1] = Int32GetDatum(cdp_trait_batch_size);
	cdp_spi_exec(pick, args, SPI_OK_UPDATE_RETURNING);
	n = SPI_processed;
	if (n == 0)
		return 0;
	ids = palloc(sizeof(int64) * n);
	cdp_spi_int64_column(ids);
	n = cdp_sort_unique_int64(ids, n);
	compute_from_history(ids, n, want_windowed);
	cdp_mark_profiles_changed(ids, n, "decay");
	*more = *more || n >= cdp_trait_batch_size;
	return n;
}

/*
 * Backfill: one batch of the first trait still to backfill, from its
 * events.  It begins once every transaction that may have written events
 * without knowing the trait has ended.
 */
static int64
backfill_batch(TraitDef *t, bool *more)
{
	static SPIPlanPtr next = NULL;
	static SPIPlanPtr ids_plan = NULL;
	static SPIPlanPtr done = NULL;
	Oid			argtypes[3] = {INT4OID, INT8OID, INT4OID};
	Datum		args[3];
	int64		from;
	int64	   *ids;
	int			n;
	bool		isnull;

	if (next == NULL)
		next = cdp_prepare("UPDATE cdp.trait_definitions SET backfill_horizon = "
						   "coalesce(backfill_horizon, pg_snapshot_xmax(pg_current_snapshot())) "
						   "WHERE trait_id = $1 AND backfill_next IS NOT NULL "
						   "RETURNING backfill_next, "
						   "pg_snapshot_xmin(pg_current_snapshot()) >= backfill_horizon",
						   1, argtypes);
	args[0] = Int32GetDatum(t->id);
	cdp_spi_exec(next, args, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
	{
		cache_stale_here = true;
		return 0;
	}
	from = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		return 0;				/* older writers still running: next round */

	if (ids_plan == NULL)
		ids_plan = cdp_prepare("SELECT profile_id FROM cdp.profiles WHERE profile_id >= $2 "
							   "ORDER BY profile_id LIMIT $3", 3, argtypes);
	args[1] = Int64GetDatum(from);
	args[2] = Int32GetDatum(cdp_trait_batch_size);
	cdp_spi_exec(ids_plan, args, SPI_OK_SELECT);
	n = SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	cdp_spi_int64_column(ids);
	if (n > 0)
	{
		lock_rows(ids, n);
		backfill_trait_id = t->id;
		compute_from_history(ids, n, want_backfill);
		cdp_mark_profiles_changed(ids, n, "trait");
	}
	if (done == NULL)
		done = cdp_prepare("UPDATE cdp.trait_definitions SET "
						   "backfill_next = CASE WHEN $3 = 0 THEN NULL ELSE $2 + 1 END, "
						   "backfill_done = backfill_done + $3, backfilled_at = cdp.now(), "
						   "last_error = CASE WHEN $3 = 0 THEN NULL ELSE last_error END "
						   "WHERE trait_id = $1", 3, argtypes);
	args[1] = Int64GetDatum(n > 0 ? ids[n - 1] : from);
	args[2] = Int32GetDatum(n);
	cdp_spi_exec(done, args, SPI_OK_UPDATE);
	if (n == 0)
		definitions_changed();	/* no longer backfilling */
	*more = true;
	return n;
}

/* The worker's task: decay what is due, then a batch of backfill. */
static int64
task_traits(bool *more)
{
	static bool view_checked = false;
	int64		n;

	load_definitions();
	if (!OidIsValid(cache.relid))
		return 0;				/* the library is newer than the schema */
	/* after a restore the view is the extension's bare one: make it again */
	if (!view_checked)
	{
		if (!customers_current())
			rebuild_customers();
		view_checked = true;
	}
	load_definitions();
	if (cache.ncomputed == 0)
		return 0;
	n = decay_due(more);
	for (int i = 0; i < cache.ncomputed; i++)
		if (cache.computed[i]->backfilling)
			n += backfill_batch(cache.computed[i], more);
	return n;
}

/*
 * Validation of a trait's "where": one boolean expression over the event
 * row (predicate.c).
 */
static void
validate_where(const char *where)
{
	CdpPredicate info;

	cdp_check_predicate(where, "a trait's \"where\"",
						"FROM (SELECT NULL::bigint AS profile_id, NULL::text AS event, "
						"NULL::jsonb AS properties, NULL::timestamptz AS occurred_at, "
						"NULL::text AS channel, NULL::text AS source) e", &info);
}

static void
validate_name(const char *name)
{
	if (name[0] == '\0' || strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("a trait name must have 1 to %d bytes", NAMEDATALEN - 1),
				 errdetail("It becomes a column of cdp.customers.")));
	for (const char *p = name; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("a trait name cannot contain control characters")));
	if (strcmp(name, "profile_id") == 0 || strcmp(name, "created_at") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_COLUMN),
				 errmsg("trait \"%s\" would collide with a column of cdp.customers", name),
				 errhint("Choose another name.")));
	load_definitions();
	for (int i = 0; i < cache.ndefs; i++)
		if (strcmp(cache.defs[i].name, name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("trait \"%s\" already exists", name),
					 errhint("Drop it first with cdp.drop_trait(%s).", quote_literal_cstr(name))));
}

static char *
column_sql(const TraitDef *t)
{
	int			k = t->id;

	if (!t->computed)
		return psprintf("cdp.trait_value(p.traits -> %s, NULL::%s)",
						quote_literal_cstr(t->name), format_type_be(t->type));
	switch (t->agg)
	{
		case AGG_COUNT:
			return psprintf("coalesce(t.counts[%d], 0)", k);
		case AGG_COUNT_DISTINCT:
			return psprintf("coalesce(cdp.tally_count(t.tallies -> '%d'), 0)", k);
		case AGG_MOST_FREQUENT:
			return psprintf("cdp.tally_top(t.tallies -> '%d')", k);
		case AGG_SUM:
			return psprintf("t.numbers[%d]", k);
		case AGG_AVG:
			return psprintf("t.numbers[%d] / nullif(t.counts[%d], 0)", k, k);
		case AGG_MIN:
		case AGG_MAX:
			return psprintf("t.%s[%d]", t->property ? "numbers" : "times", k);
		case AGG_FIRST:
		case AGG_LAST:
			return psprintf("t.%s[%d]", t->property ? "texts" : "times", k);
	}
	return NULL;
}

static void
spi_run(const char *sql, int expected)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc != expected)
		elog(ERROR, "pg_cdp: \"%s\" returned %s", sql, SPI_result_code_string(rc));
}

/*
 * rebuild_customers generates cdp.customers from the definitions: in
 * place when columns were only added at the end (views over it keep
 * working), else dropped and made again.  It stays a member of the
 * extension, so a dump does not carry it; after a restore the worker makes
 * it again.
 */
static void
rebuild_customers(void)
{
	StringInfoData sel;
	StringInfoData cols;
	bool		in_place = true;

	load_definitions();
	initStringInfo(&sel);
	initStringInfo(&cols);
	appendStringInfoString(&sel, "SELECT p.profile_id, p.created_at");
	appendStringInfoString(&cols, "profile_id,created_at");
	for (int i = 0; i < cache.ndefs; i++)
	{
		appendStringInfo(&sel, ", %s AS %s", column_sql(&cache.defs[i]),
						 quote_identifier(cache.defs[i].name));
		appendStringInfo(&cols, ",%s", cache.defs[i].name);
	}
	appendStringInfoString(&sel, " FROM cdp.profiles p LEFT JOIN cdp.profile_traits t "
						   "ON t.profile_id = p.profile_id");

	/* the current columns must be a prefix of the new ones */
	spi_run("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
			"WHERE attrelid = 'cdp.customers'::regclass AND attnum > 0 AND NOT attisdropped",
			SPI_OK_SELECT);
	{
		char	   *cur = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		in_place = cur && strncmp(cols.data, cur, strlen(cur)) == 0 &&
			(cols.data[strlen(cur)] == ',' || cols.data[strlen(cur)] == '\0');
	}
	if (in_place)
		spi_run(psprintf("CREATE OR REPLACE VIEW cdp.customers AS %s", sel.data), SPI_OK_UTILITY);
	else
	{
		spi_run("ALTER EXTENSION pg_cdp DROP VIEW cdp.customers", SPI_OK_UTILITY);
		spi_run("DROP VIEW cdp.customers", SPI_OK_UTILITY);
		spi_run(psprintf("CREATE VIEW cdp.customers AS %s", sel.data), SPI_OK_UTILITY);
		spi_run("ALTER EXTENSION pg_cdp ADD VIEW cdp.customers", SPI_OK_UTILITY);
		spi_run("COMMENT ON VIEW cdp.customers IS 'One row per living profile, with one typed column per declared and computed trait: what segment predicates and BI tools read'",
				SPI_OK_UTILITY);
		spi_run("GRANT SELECT ON cdp.customers TO cdp_analyst, cdp_admin", SPI_OK_UTILITY);
	}
}

/* Whether cdp.customers shows the columns the definitions say. */
static bool
customers_current(void)
{
	StringInfoData cols;

	load_definitions();
	initStringInfo(&cols);
	appendStringInfoString(&cols, "profile_id,created_at");
	for (int i = 0; i < cache.ndefs; i++)
		appendStringInfo(&cols, ",%s", cache.defs[i].name);
	spi_run("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
			"WHERE attrelid = 'cdp.customers'::regclass AND attnum > 0 AND NOT attisdropped",
			SPI_OK_SELECT);
	return strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), cols.data) == 0;
}

static char *
text_arg(FunctionCallInfo fcinfo, int i)
{
	return PG_ARGISNULL(i) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(i));
}

static void
insert_definition(const char *name, const char *kind, Oid type, const char *agg,
				  const char *event, const char *property, const char *window,
				  const char *interval, const char *calendar, const char *where)
{
	Oid			argtypes[11] = {TEXTOID, TEXTOID, REGTYPEOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, INTERVALOID, TEXTOID, TEXTOID, OIDOID};
	Datum		args[11];
	char		nulls[11];
	const char *v[10] = {name, kind, NULL, agg, event, property, window, NULL, calendar, where};

	for (int i = 0; i < 10; i++)
	{
		nulls[i] = v[i] || i == 2 || (i == 7 && interval) ? ' ' : 'n';
		args[i] = v[i] ? CStringGetTextDatum(v[i]) : (Datum) 0;
	}
	args[2] = ObjectIdGetDatum(type);
	if (interval)
		args[7] = DirectFunctionCall3(interval_in, CStringGetDatum(interval),
									  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	args[10] = ObjectIdGetDatum(GetOuterUserId());
	nulls[10] = ' ';
	if (SPI_execute_with_args("INSERT INTO cdp.trait_definitions (name, kind, type, aggregate, "
							  "event, property, \"window\", window_interval, calendar, \"where\", "
							  "owner, backfill_next) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
							  "$10, $11::regrole, CASE WHEN $2 = 'computed' THEN 0 END)",
							  11, argtypes, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not insert the trait's definition");
	definitions_changed();
	rebuild_customers();
	cdp_wake_worker_at_commit();
}

static void
check_not_null(FunctionCallInfo fcinfo, int i, const char *what)
{
	if (PG_ARGISNULL(i))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
}

/* cdp.declare_trait(name text, type regtype) */
PG_FUNCTION_INFO_V1(cdp_declare_trait);
Datum
cdp_declare_trait(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			type;

	check_not_null(fcinfo, 0, "the trait's name");
	check_not_null(fcinfo, 1, "the trait's type");
	name = text_arg(fcinfo, 0);
	type = PG_GETARG_OID(1);
	SPI_connect();
	validate_name(name);
	if (!cdp_trait_type_supported(type))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a declared trait cannot have type %s", format_type_be(type)),
				 errhint("Use text, numeric, bigint, integer, double precision, boolean, date or timestamptz.")));
	insert_definition(name, "declared", type, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * cdp.define_trait(name, aggregate, event, property, window, where)
 */
PG_FUNCTION_INFO_V1(cdp_define_trait);
Datum
cdp_define_trait(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *agg;
	char	   *event = text_arg(fcinfo, 2);
	char	   *property = text_arg(fcinfo, 3);
	char	   *window = text_arg(fcinfo, 4);
	char	   *where = text_arg(fcinfo, 5);
	char	   *interval = NULL;
	char	   *calendar = NULL;
	TraitDef	t = {0};
	int			a;
	bool		column = false;

	check_not_null(fcinfo, 0, "the trait's name");
	check_not_null(fcinfo, 1, "the trait's aggregate");
	name = text_arg(fcinfo, 0);
	agg = text_arg(fcinfo, 1);
	for (a = 0; agg_names[a] && strcmp(agg_names[a], agg) != 0; a++)
		;
	if (agg_names[a] == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown aggregate \"%s\"", agg),
				 errhint("Use count, sum, avg, min, max, first, last, count_distinct or most_frequent.")));
	t.agg = (TraitAgg) a;
	t.property = property;
	if (property)
	{
		if (property[0] == '\0' || strlen(property) > 1000)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a trait's property must be a name of 1 to 1000 bytes")));
		property_sql(&t, &column);
	}
	if (t.agg == AGG_COUNT && property)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("count counts events: its property must be NULL"),
				 errhint("Use count_distinct to count the distinct values of a property.")));
	if ((t.agg == AGG_SUM || t.agg == AGG_AVG || t.agg == AGG_COUNT_DISTINCT ||
		 t.agg == AGG_MOST_FREQUENT) && property == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s needs a property", agg),
				 errhint("Name a key of the event's properties (\"amount\", \"address.city\"), or channel, source or event.")));
	if (agg_numeric(&t) && column)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s needs a numeric property, and %s is text", agg, property),
				 errhint("Name a key of the event's properties, e.g. \"amount\".")));
	if (window == NULL || pg_strcasecmp(window, "all time") == 0)
		window = NULL;
	else if (pg_strcasecmp(window, "today") == 0)
		calendar = "day";
	else if (pg_strcasecmp(window, "this week") == 0)
		calendar = "week";
	else if (pg_strcasecmp(window, "this month") == 0)
		calendar = "month";
	else
	{
		Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(window),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));

		if (iv->time <= 0 && iv->day <= 0 && iv->month <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a trait's window must be a positive interval"),
					 errdetail("Got: %s", window),
					 errhint("Use an interval such as '180 days' or '2 hours', or 'today', 'this week', 'this month', or NULL for all time.")));
		interval = window;
	}
	SPI_connect();
	validate_name(name);
	if (where)
		validate_where(where);
	insert_definition(name, "computed",
					  t.agg == AGG_COUNT || t.agg == AGG_COUNT_DISTINCT ? INT8OID :
					  agg_numeric(&t) ? NUMERICOID :
					  (t.agg == AGG_FIRST || t.agg == AGG_LAST || t.agg == AGG_MOST_FREQUENT) && property ? TEXTOID :
					  TIMESTAMPTZOID,
					  agg, event, property, window, interval, calendar, where);
	SPI_finish();
	PG_RETURN_VOID();
}

/* cdp.drop_trait(name text) */
PG_FUNCTION_INFO_V1(cdp_drop_trait);
Datum
cdp_drop_trait(PG_FUNCTION_ARGS)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	check_not_null(fcinfo, 0, "the trait's name");
	args[0] = PG_GETARG_DATUM(0);
	SPI_connect();
	if (SPI_execute("SELECT to_regclass('cdp.segments') IS NOT NULL", true, 0) == SPI_OK_SELECT &&
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
	{
		SPI_execute_with_args("SELECT string_agg(quote_literal(name), ', ' ORDER BY name) "
							  "FROM cdp.segments WHERE $1 = ANY(columns)",
							  1, argtypes, args, NULL, true, 0);
		if (SPI_processed == 1 &&
			SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("trait \"%s\" is used by a segment", TextDatumGetCString(args[0])),
					 errdetail("Segments that use it: %s.",
							   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
					 errhint("Drop those segments first (cdp.drop_segment), or change their predicates.")));
	}
	if (SPI_execute_with_args("DELETE FROM cdp.trait_definitions WHERE name = $1",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "pg_cdp: could not delete the trait");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("trait \"%s\" does not exist", TextDatumGetCString(args[0])),
				 errhint("cdp.trait_status lists the traits.")));
	SPI_execute_with_args("DELETE FROM cdp.trait_issues WHERE trait = $1",
						  1, argtypes, args, NULL, false, 0);
	definitions_changed();
	rebuild_customers();
	SPI_finish();
	PG_RETURN_VOID();
}

/* cdp.rebuild_customers() */
PG_FUNCTION_INFO_V1(cdp_rebuild_customers);
Datum
cdp_rebuild_customers(PG_FUNCTION_ARGS)
{
	SPI_connect();
	cache_stale_here = true;
	rebuild_customers();
	SPI_finish();
	PG_RETURN_VOID();
}

