/*-------------------------------------------------------------------------
 *
 * decide_offers.c
 *	  Offers: cdp.create_offer and cdp.drop_offer with their checks, the
 *	  per-backend cache of offers and their models, and which offers a
 *	  campaign arbitrates.
 *
 * Every backend caches the offers with their models and reloads them when
 * cdp.offers or cdp.offer_models change anywhere (a shared generation,
 * bumped now and at commit, as segments do).  User SQL of an offer (its
 * condition) is prepared in a subtransaction, so a condition whose table
 * went away is reported instead of raised.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "decide.h"
#include "outbox.h"
#include "policy.h"
#include "predicate.h"
#include "segment.h"
#include "traits.h"
#include "util.h"

static CdpOfferCache cache;
static bool cache_stale_here = true;
static pg_atomic_uint64 *offers_generation = NULL;

Size
cdp_decide_shmem_size(void)
{
	return MAXALIGN(sizeof(pg_atomic_uint64));
}

void
cdp_decide_shmem_init(void)
{
	bool		found;

	offers_generation = ShmemInitStruct("pg_cdp offers", cdp_decide_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(offers_generation, 0);
}

static void
offers_changed(void)
{
	cache_stale_here = true;
	if (offers_generation)
		cdp_bump_through_xact(offers_generation);
}

PG_FUNCTION_INFO_V1(cdp_offers_changed);
Datum
cdp_offers_changed(PG_FUNCTION_ARGS)
{
	offers_changed();
	return PointerGetDatum(NULL);
}

static char **
text_array_values(Datum d, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	return out;
}

static double *
float_array_values(Datum d, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	double	   *out;

	deconstruct_array(DatumGetArrayTypeP(d), FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, n);
	out = palloc(sizeof(double) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? 0.0 : DatumGetFloat8(elems[i]);
	return out;
}

static void
free_plan(SPIPlanPtr p)
{
	if (p)
		SPI_freeplan(p);
}

/*
 * cdp_offers_load reads the offers and their models when they changed.
 * The caller is connected to SPI.
 */
CdpOfferCache *
cdp_offers_load(void)
{
	CdpOfferCache *c = &cache;
	uint64		generation = offers_generation ? pg_atomic_read_u64(offers_generation) : 0;
	Oid			relid = get_relname_relid("offers", get_namespace_oid("cdp", false));
	MemoryContext old;

	if (c->cxt && !cache_stale_here && offers_generation &&
		generation == c->generation && relid == c->relid)
		return c;
	if (c->cxt)
	{
		free_plan(c->features_plan);
		for (int g = 0; g < c->ngroups; g++)
			free_plan(c->group_plan[g]);
		MemoryContextDelete(c->cxt);
	}
	memset(c, 0, sizeof(*c));
	c->cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp offers", ALLOCSET_SMALL_SIZES);
	c->generation = generation;
	c->relid = relid;
	cache_stale_here = false;
	if (!OidIsValid(relid))
		return c;

	if (SPI_execute("SELECT o.name, "
					"ARRAY(SELECT k FROM jsonb_object_keys(o.channels) k ORDER BY k), "
					"ARRAY(SELECT o.channels ->> k FROM jsonb_object_keys(o.channels) k ORDER BY k), "
					"ARRAY(SELECT coalesce((o.capacity ->> k)::int, -1) FROM jsonb_object_keys(o.channels) k ORDER BY k), "
					"o.segments, o.condition, o.value::float8, o.valid_from, o.valid_until, "
					"coalesce((extract(epoch FROM o.cooldown) * 1000000)::int8, 0), "
					"coalesce(o.lifetime_cap, 0), o.goal_event, o.features, o.owner::oid, "
					"m.features = o.features, m.active, m.weights, m.means, m.intercept, m.auc "
					"FROM cdp.offers o LEFT JOIN cdp.offer_models m ON m.offer = o.name "
					"ORDER BY o.name", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.offers");
	old = MemoryContextSwitchTo(c->cxt);
	c->n = SPI_processed;
	c->offers = palloc0(sizeof(CdpOffer) * Max(c->n, 1));
	c->features = palloc(sizeof(char *) * 1);
	for (int i = 0; i < c->n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		CdpOffer   *o = &c->offers[i];
		bool		isnull;
		char	  **chans,
				  **tpls;
		Datum	   *caps;
		int			ncaps;
		Datum		d;

		o->name = SPI_getvalue(tup, desc, 1);
		chans = text_array_values(SPI_getbinval(tup, desc, 2, &isnull), &o->nchannels);
		tpls = text_array_values(SPI_getbinval(tup, desc, 3, &isnull), &o->nchannels);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)), INT4OID, 4,
						  true, TYPALIGN_INT, &caps, NULL, &ncaps);
		o->channels = palloc0(sizeof(CdpOfferChannel) * Max(o->nchannels, 1));
		for (int k = 0; k < o->nchannels; k++)
		{
			o->channels[k].channel = chans[k];
			o->channels[k].template = tpls[k];
			o->channels[k].capacity = DatumGetInt32(caps[k]);
		}
		o->segments = text_array_values(SPI_getbinval(tup, desc, 5, &isnull), &o->nsegments);
		o->condition = SPI_getvalue(tup, desc, 6);
		o->value = DatumGetFloat8(SPI_getbinval(tup, desc, 7, &isnull));
		d = SPI_getbinval(tup, desc, 8, &isnull);
		o->has_from = !isnull;
		o->valid_from = isnull ? 0 : DatumGetTimestampTz(d);
		d = SPI_getbinval(tup, desc, 9, &isnull);
		o->has_until = !isnull;
		o->valid_until = isnull ? 0 : DatumGetTimestampTz(d);
		o->cooldown = DatumGetInt64(SPI_getbinval(tup, desc, 10, &isnull));
		o->lifetime_cap = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
		o->goal_event = SPI_getvalue(tup, desc, 12);
		o->features = text_array_values(SPI_getbinval(tup, desc, 13, &isnull), &o->nfeatures);
		o->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 14, &isnull));
		d = SPI_getbinval(tup, desc, 15, &isnull);
		o->has_model = !isnull && DatumGetBool(d);
		if (o->has_model)
		{
			int			nw,
						nm;

			o->model_active = DatumGetBool(SPI_getbinval(tup, desc, 16, &isnull));
			o->weights = float_array_values(SPI_getbinval(tup, desc, 17, &isnull), &nw);
			o->means = float_array_values(SPI_getbinval(tup, desc, 18, &isnull), &nm);
			o->intercept = DatumGetFloat8(SPI_getbinval(tup, desc, 19, &isnull));
			d = SPI_getbinval(tup, desc, 20, &isnull);
			o->auc = isnull ? NAN : DatumGetFloat8(d);
			if (nw != o->nfeatures || nm != o->nfeatures)
				o->has_model = o->model_active = false;
		}
		/* the union of features, each offer pointing into it */
		o->feature_slot = palloc(sizeof(int) * Max(o->nfeatures, 1));
		for (int f = 0; f < o->nfeatures; f++)
		{
			int			s;

			for (s = 0; s < c->nfeatures; s++)
				if (strcmp(c->features[s], o->features[f]) == 0)
					break;
			if (s == c->nfeatures)
			{
				c->features = repalloc(c->features, sizeof(char *) * (c->nfeatures + 1));
				c->features[c->nfeatures++] = o->features[f];
			}
			o->feature_slot[f] = s;
		}
		/* conditions grouped by owner: one statement per owner */
		o->cond_group = -1;
		if (o->condition)
		{
			int			g;

			for (g = 0; g < c->ngroups; g++)
				if (c->group_owner[g] == o->owner)
					break;
			if (g == c->ngroups)
			{
				c->group_owner = c->ngroups ? repalloc(c->group_owner, sizeof(Oid) * (g + 1)) :
					palloc(sizeof(Oid));
				c->group_sql = c->ngroups ? repalloc(c->group_sql, sizeof(char *) * (g + 1)) :
					palloc(sizeof(char *));
				c->group_owner[g] = o->owner;
				c->group_sql[g] = NULL;
				c->ngroups++;
			}
			o->cond_group = g;
			o->cond_column = 1;
			for (int j = 0; j < i; j++)
				if (c->offers[j].cond_group == g)
					o->cond_column++;
			c->group_sql[g] = c->group_sql[g] ?
				psprintf("%s, (%s)::boolean", c->group_sql[g], o->condition) :
				psprintf("(%s)::boolean", o->condition);
		}
	}
	c->group_plan = palloc0(sizeof(SPIPlanPtr) * Max(c->ngroups, 1));
	MemoryContextSwitchTo(old);

	return c;
}

/*
 * The statement that reads one person's features, made when a decision
 * first needs it: preparing it locks cdp.customers, which the event hook
 * (decide_train.c) must not do in every ingesting transaction, or
 * cdp.define_trait could not rebuild the view while one is open.
 */
SPIPlanPtr
cdp_offer_features_plan(CdpOfferCache *c)
{
	StringInfoData sql;
	Oid			types[1] = {INT8OID};

	if (c->features_plan)
		return c->features_plan;
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT true");
	for (int s = 0; s < c->nfeatures; s++)
		appendStringInfo(&sql, ", c.%s::float8", quote_identifier(c->features[s]));
	appendStringInfoString(&sql, " FROM cdp.customers c WHERE c.profile_id = $1");
	c->features_plan = cdp_prepare(sql.data, 1, types);
	return c->features_plan;
}

CdpOffer *
cdp_offer_by_name(const char *name, bool missing_ok)
{
	CdpOfferCache *c = cdp_offers_load();

	for (int i = 0; i < c->n; i++)
		if (strcmp(c->offers[i].name, name) == 0)
			return &c->offers[i];
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("offer \"%s\" does not exist", name),
				 errhint("cdp.offers lists the offers.")));
	return NULL;
}

/* ---------- create_offer / drop_offer ---------- */

static void
offer_error(const char *name, const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("offer \"%s\": %s", name, msg),
			 hint ? errhint("%s", hint) : 0));
}

/* the channels object: channel -> the name of one of its templates */
static void
check_channels(const char *name, Jsonb *channels, Jsonb *capacity)
{
	Oid			types[2] = {JSONBOID, JSONBOID};
	Datum		values[2] = {JsonbPGetDatum(channels), JsonbPGetDatum(capacity)};

	if (!JB_ROOT_IS_OBJECT(channels) || JB_ROOT_COUNT(channels) == 0)
		offer_error(name, "channels must be a non-empty JSON object of channel -> template",
					"For example '{\"email\": \"spring_email\", \"sms\": \"spring_sms\"}'.");
	if (SPI_execute_with_args("SELECT k.key, jsonb_typeof(k.value), "
							  "EXISTS (SELECT 1 FROM cdp.channels c WHERE c.name = k.key), "
							  "(SELECT t.channel FROM cdp.templates t WHERE t.name = k.value #>> '{}') "
							  "FROM jsonb_each($1) k ORDER BY k.key",
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not check the channels");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *ch = SPI_getvalue(tup, desc, 1);
		char	   *kind = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		bool		known = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *tchan = SPI_getvalue(tup, desc, 4);

		if (!known)
			offer_error(name, psprintf("channel \"%s\" does not exist", ch),
						"cdp.channels lists the channels.");
		if (strcmp(kind, "string") != 0)
			offer_error(name, psprintf("the template of channel \"%s\" must be a string", ch), NULL);
		if (tchan == NULL)
			offer_error(name, psprintf("the template of channel \"%s\" does not exist", ch),
						"cdp.templates lists the templates.");
		if (strcmp(tchan, ch) != 0)
			offer_error(name, psprintf("the template of channel \"%s\" belongs to channel \"%s\"", ch, tchan),
						NULL);
	}
	if (!JB_ROOT_IS_OBJECT(capacity))
		offer_error(name, "capacity must be a JSON object of channel -> sends per day",
					"For example '{\"callcenter\": 200}'.");
	if (SPI_execute_with_args("SELECT k.key, jsonb_typeof(k.value) = 'number' "
							  "AND (k.value)::numeric >= 0 AND (k.value)::numeric <= 2147483647 "
							  "AND (k.value)::numeric = trunc((k.value)::numeric), $1 ? k.key "
							  "FROM jsonb_each($2) k ORDER BY k.key",
							  2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not check the capacity");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *ch = SPI_getvalue(tup, desc, 1);
		bool		isnull;
		Datum		ok = SPI_getbinval(tup, desc, 2, &isnull);

		if (isnull || !DatumGetBool(ok))
			offer_error(name, psprintf("the capacity of channel \"%s\" must be a whole number of sends per day, 0 or more", ch),
						NULL);
		if (!DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			offer_error(name, psprintf("capacity names channel \"%s\", which is not one of the offer's channels", ch),
						NULL);
	}
}

static void
check_features(const char *name, char **features, int n)
{
	for (int i = 0; i < n; i++)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];
		char	   *t;

		if (features[i] == NULL)
			offer_error(name, "features must not contain null", NULL);
		for (int j = 0; j < i; j++)
			if (strcmp(features[i], features[j]) == 0)
				offer_error(name, psprintf("feature \"%s\" is named twice", features[i]), NULL);
		values[0] = CStringGetTextDatum(features[i]);
		if (SPI_execute_with_args("SELECT a.atttypid::regtype::text FROM pg_attribute a "
								  "WHERE a.attrelid = 'cdp.customers'::regclass AND a.attname = $1 "
								  "AND a.attnum > 0 AND NOT a.attisdropped",
								  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not read cdp.customers");
		if (SPI_processed == 0)
			offer_error(name, psprintf("feature \"%s\" is not a column of cdp.customers", features[i]),
						"Declare or define the trait first (cdp.declare_trait, cdp.define_trait).");
		t = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (strcmp(t, "integer") != 0 && strcmp(t, "bigint") != 0 && strcmp(t, "smallint") != 0 &&
			strcmp(t, "numeric") != 0 && strcmp(t, "double precision") != 0 && strcmp(t, "real") != 0)
			offer_error(name, psprintf("feature \"%s\" is of type %s, not a number", features[i], t),
						"A model reads numeric columns of cdp.customers.");
	}
}

/*
 * cdp.create_offer(name, channels, value, goal_event, goal_window,
 * segments, condition, valid_from, valid_until, cooldown, lifetime_cap,
 * capacity, features)
 */
PG_FUNCTION_INFO_V1(cdp_create_offer);
Datum
cdp_create_offer(PG_FUNCTION_ARGS)
{
	char	   *name;
	Jsonb	   *channels;
	Jsonb	   *capacity;
	char	  **segments = NULL;
	int			nsegments = 0;
	char	  **features = NULL;
	int			nfeatures = 0;
	char	   *condition = NULL;
	Oid			types[13] = {TEXTOID, JSONBOID, NUMERICOID, TEXTOID, INTERVALOID, TEXTARRAYOID,
	TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID, INT4OID, JSONBOID, TEXTARRAYOID};
	Datum		values[14];
	char		nulls[14];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an offer's name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strlen(name) == 0 || strlen(name) > 63 || !(name[0] >= 'a' && name[0] <= 'z') ||
		strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != strlen(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid offer name \"%s\"", name),
				 errdetail("An offer's name starts with a lower-case letter and has at most 63 lower-case letters, digits, \"_\", \".\" and \"-\".")));
	if (PG_ARGISNULL(1))
		offer_error(name, "channels must not be null",
					"Give the template of each channel, for example '{\"email\": \"spring_email\"}'.");
	if (PG_ARGISNULL(2))
		offer_error(name, "value must not be null", "Give what a conversion is worth, 0 or more.");
	if (PG_ARGISNULL(3) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(3)) == 0)
		offer_error(name, "goal_event must not be null or empty",
					"Name the event that counts as a conversion, for example 'Order Completed'.");
	if (PG_ARGISNULL(4))
		offer_error(name, "goal_window must not be null", NULL);
	channels = PG_GETARG_JSONB_P(1);
	capacity = PG_ARGISNULL(11) ? NULL : PG_GETARG_JSONB_P(11);
	if (!PG_ARGISNULL(5))
		segments = text_array_values(PG_GETARG_DATUM(5), &nsegments);
	if (!PG_ARGISNULL(6))
		condition = text_to_cstring(PG_GETARG_TEXT_PP(6));
	if (!PG_ARGISNULL(12))
		features = text_array_values(PG_GETARG_DATUM(12), &nfeatures);

	SPI_connect();
	if (capacity == NULL)
		capacity = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	check_channels(name, channels, capacity);
	if (DatumGetBool(DirectFunctionCall2(numeric_lt, PG_GETARG_DATUM(2),
										 DirectFunctionCall1(int4_numeric, Int32GetDatum(0)))))
		offer_error(name, "value must be 0 or more", NULL);
	{
		Interval   *w = PG_GETARG_INTERVAL_P(4);

		if (w->month < 0 || w->day < 0 || w->time < 0 ||
			(w->month == 0 && w->day == 0 && w->time == 0))
			offer_error(name, "goal_window must be a positive interval", NULL);
	}
	if (!PG_ARGISNULL(9))
	{
		Interval   *w = PG_GETARG_INTERVAL_P(9);

		if (w->month < 0 || w->day < 0 || w->time < 0)
			offer_error(name, "cooldown must not be negative", NULL);
	}
	if (!PG_ARGISNULL(10) && PG_GETARG_INT32(10) <= 0)
		offer_error(name, "lifetime_cap must be 1 or more", NULL);
	if (!PG_ARGISNULL(7) && !PG_ARGISNULL(8) &&
		PG_GETARG_TIMESTAMPTZ(8) <= PG_GETARG_TIMESTAMPTZ(7))
		offer_error(name, "valid_until must be after valid_from", NULL);
	for (int i = 0; i < nsegments; i++)
	{
		if (segments[i] == NULL)
			offer_error(name, "segments must not contain null", NULL);
		if (cdp_segment_by_name(segments[i], true) == NULL)
			offer_error(name, psprintf("segment \"%s\" does not exist", segments[i]),
						"cdp.segments lists the segments.");
	}
	if (condition)
	{
		CdpPredicate info;

		cdp_check_predicate(condition, psprintf("offer \"%s\": the condition", name),
							"FROM cdp.customers c", &info);
	}
	check_features(name, features, nfeatures);

	for (int i = 0; i < 13; i++)
	{
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	values[11] = JsonbPGetDatum(capacity);
	nulls[11] = ' ';
	if (PG_ARGISNULL(5))
	{
		values[5] = cdp_text_array(NULL, 0);
		nulls[5] = ' ';
	}
	if (PG_ARGISNULL(12))
	{
		values[12] = cdp_text_array(NULL, 0);
		nulls[12] = ' ';
	}
	values[13] = ObjectIdGetDatum(GetUserId());
	nulls[13] = ' ';
	{
		Oid			t14[14];

		memcpy(t14, types, sizeof(types));
		t14[13] = OIDOID;
		if (SPI_execute_with_args("INSERT INTO cdp.offers AS o (name, channels, value, goal_event, "
								  "goal_window, segments, condition, valid_from, valid_until, cooldown, "
								  "lifetime_cap, capacity, features, owner) "
								  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::regrole) "
								  "ON CONFLICT (name) DO UPDATE SET channels = excluded.channels, "
								  "value = excluded.value, goal_event = excluded.goal_event, "
								  "goal_window = excluded.goal_window, segments = excluded.segments, "
								  "condition = excluded.condition, valid_from = excluded.valid_from, "
								  "valid_until = excluded.valid_until, cooldown = excluded.cooldown, "
								  "lifetime_cap = excluded.lifetime_cap, capacity = excluded.capacity, "
								  "features = excluded.features, owner = excluded.owner",
								  14, t14, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "pg_cdp: could not store the offer");
	}
	if (SPI_execute_with_args("INSERT INTO cdp.offer_arms (offer) VALUES ($1) ON CONFLICT DO NOTHING",
							  1, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not store the offer's bandit");
	offers_changed();
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(cdp_drop_offer);
Datum
cdp_drop_offer(PG_FUNCTION_ARGS)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an offer's name must not be null")));
	values[0] = PG_GETARG_DATUM(0);
	SPI_connect();
	if (SPI_execute_with_args("DELETE FROM cdp.offers WHERE name = $1", 1, types, values, NULL,
							  false, 0) != SPI_OK_DELETE)
		elog(ERROR, "pg_cdp: could not drop the offer");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("offer \"%s\" does not exist", TextDatumGetCString(values[0])),
				 errhint("cdp.offers lists the offers.")));
	offers_changed();
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Prepares user SQL (offers' conditions) in a subtransaction: a condition
 * whose table went away fails here, and is reported, not raised.
 */
SPIPlanPtr
cdp_decide_prepare_guarded(const char *sql, int nargs, Oid *types, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	SPIPlanPtr volatile plan = NULL;

	*error = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		plan = SPI_prepare(sql, nargs, types);
		if (plan == NULL)
			elog(ERROR, "pg_cdp: could not prepare an offer's condition: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "pg_cdp: could not keep an offer's condition");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *err;

		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*error = err->message;
		plan = NULL;
	}
	PG_END_TRY();
	return plan;
}

/* cdp.set_campaign_offers(campaign, offers) → how many it has now */
PG_FUNCTION_INFO_V1(cdp_set_campaign_offers);
Datum
cdp_set_campaign_offers(PG_FUNCTION_ARGS)
{
	Oid			types[2] = {TEXTOID, TEXTARRAYOID};
	Datum		args[2];
	bool		isnull;
	int64		n;
	char	   *campaign;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a campaign's name must not be null")));
	campaign = text_to_cstring(PG_GETARG_TEXT_PP(0));
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_ARGISNULL(1) ? cdp_text_array(NULL, 0) : PG_GETARG_DATUM(1);
	SPI_connect();
	if (SPI_execute_with_args("SELECT channel, template FROM cdp.campaigns WHERE name = $1 FOR UPDATE",
							  1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read the campaign");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("campaign \"%s\" does not exist", campaign),
				 errhint("Create it with cdp.create_campaign(name, segment).")));
	if (SPI_execute_with_args("SELECT o, o IS NULL, EXISTS (SELECT 1 FROM cdp.offers f WHERE f.name = o), "
							  "count(*) OVER (PARTITION BY o) FROM unnest($2::text[]) AS o",
							  2, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not check the offers");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		if (DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("offers must not contain null")));
		if (!DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("offer \"%s\" does not exist", SPI_getvalue(tup, desc, 1)),
					 errhint("cdp.offers lists the offers.")));
		if (DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull)) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("offer \"%s\" is named twice", SPI_getvalue(tup, desc, 1))));
	}
	if (SPI_execute_with_args("DELETE FROM cdp.campaign_offers WHERE campaign = $1",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE ||
		SPI_execute_with_args("INSERT INTO cdp.campaign_offers (campaign, offer) "
							  "SELECT $1, o FROM unnest($2::text[]) AS o",
							  2, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not store the campaign's offers");
	n = SPI_processed;
	SPI_finish();
	PG_RETURN_INT64(n);
}
