/*-------------------------------------------------------------------------
 *
 * decide.c
 *	  The next best action of one person: eligibility, scoring, the
 *	  channel and the send time, and the explanation of all of it; the
 *	  decision settings.
 *
 * An offer is eligible for a person when it is valid now, the person is
 * in all its segments and its condition holds (run as the offer's owner,
 * in a subtransaction: a condition that fails makes the offer ineligible,
 * with the error as the reason), the person had it fewer times than its
 * lifetime cap and not within its cooldown.  A channel of the offer is
 * allowed when its template exists, the contact policy lets a message be
 * enqueued (policy.h's rule: consent, an address that is not suppressed),
 * the channel's daily cap for the person is not reached, and the offer's
 * capacity on that channel for the day of the send is not used up.
 *
 * Among the allowed channels the one with the best engagement rate wins:
 * the person's engagements over deliveries on the channel, shrunk
 * towards the population's rate (cdp.decide_shrinkage pseudo-messages).
 * The send time is the start of the local hour, within the next day, at
 * which the person's engagements are most frequent, their histogram
 * shrunk towards the population's, outside the channel's quiet hours.
 *
 * score = propensity x value.  The propensity is the offer's logistic
 * model when the switch rule made it active (decide_train.c), else a
 * Thompson draw from the offer's Beta bandit, seeded with cdp.decide_seed,
 * the person and the offer, so a call is reproducible.
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

int			cdp_decide_seed = 1;
double		cdp_decide_shrinkage = 10.0;
int			cdp_decide_engagement_days = 180;
int			cdp_decide_min_sends = 500;
int			cdp_decide_min_conversions = 50;
double		cdp_decide_min_auc = 0.6;
double		cdp_decide_l2 = 1.0;
double		cdp_decide_test_share = 0.2;


void
cdp_decide_init(void)
{
	DefineCustomIntVariable("cdp.decide_seed",
							"Seed of the bandit's draws and of model training splits.",
							NULL, &cdp_decide_seed, 1, 0, INT_MAX, PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomRealVariable("cdp.decide_shrinkage",
							 "Pseudo-observations of the population that a person's engagement rates and hours are shrunk towards.",
							 NULL, &cdp_decide_shrinkage, 10.0, 0.0, 1e6, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.decide_engagement_days",
							"Days of delivery feedback that engagement rates and hours read.",
							NULL, &cdp_decide_engagement_days, 180, 1, 3650, PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.decide_min_sends",
							"Settled sends an offer needs before its model may replace its bandit.",
							NULL, &cdp_decide_min_sends, 500, 1, INT_MAX, PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.decide_min_conversions",
							"Conversions an offer needs before its model may replace its bandit.",
							NULL, &cdp_decide_min_conversions, 50, 1, INT_MAX, PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomRealVariable("cdp.decide_min_auc",
							 "Held-out AUC an offer's model needs to replace its bandit.",
							 NULL, &cdp_decide_min_auc, 0.6, 0.0, 1.0, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("cdp.decide_l2",
							 "L2 penalty of offer models (on standardized features).",
							 NULL, &cdp_decide_l2, 1.0, 0.0, 1e6, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("cdp.decide_test_share",
							 "Share of an offer's sends held out to measure its model's AUC.",
							 NULL, &cdp_decide_test_share, 0.2, 0.05, 0.9, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	cdp_decide_feedback_init();
	cdp_decide_run_init();
}

/* The model's propensity; x by the cache's feature slots. */
double
cdp_offer_propensity_model(const CdpOffer *o, const double *x, const bool *xnull)
{
	double		z = o->intercept;

	for (int f = 0; f < o->nfeatures; f++)
	{
		int			s = o->feature_slot[f];

		z += o->weights[f] * (xnull[s] ? o->means[f] : x[s]);
	}
	return 1.0 / (1.0 + exp(-z));
}

/* a channel's engagement rate shrunk towards the population's */
double
cdp_decide_channel_rate(double delivered, double engaged, double pop_delivered, double pop_engaged)
{
	double		pop = (pop_engaged + 1.0) / (pop_delivered + 2.0);

	return (engaged + cdp_decide_shrinkage * pop) / (delivered + cdp_decide_shrinkage);
}

/* local hour, minute and seconds-in-hour of t in tz */
static bool
local_parts(TimestampTz t, pg_tz *tz, int *hour, int *min, int64 *usec_in_hour)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz) != 0)
		return false;
	*hour = tm.tm_hour;
	*min = tm.tm_min;
	*usec_in_hour = ((int64) tm.tm_min * 60 + tm.tm_sec) * USECS_PER_SEC + fsec;
	return true;
}

static bool
in_quiet(const CdpChannel *c, int hour, int min)
{
	TimeADT		t;

	if (c == NULL || !c->has_quiet)
		return false;
	t = ((int64) hour * 60 + min) * 60 * USECS_PER_SEC;
	if (c->quiet_start < c->quiet_end)
		return t >= c->quiet_start && t < c->quiet_end;
	return t >= c->quiet_start || t < c->quiet_end;
}

/*
 * The send time within the next day: now, or the start of a later local
 * hour, whichever hour the person engages at most (own_hours shrunk
 * towards pop_hours), outside the channel's quiet hours; the earliest of
 * equals.
 */
TimestampTz
cdp_decide_send_time(TimestampTz now, const char *zone, const CdpChannel *c,
					 const double *own_hours, const double *pop_hours, int *hour_out)
{
	pg_tz	   *tz = pg_tzset(zone);
	double		own_total = 0,
				pop_total = 0;
	double		best = -1;
	TimestampTz best_t = now;
	int			best_h = -1;

	for (int h = 0; h < 24; h++)
	{
		own_total += own_hours ? own_hours[h] : 0;
		pop_total += pop_hours ? pop_hours[h] : 0;
	}
	if (tz == NULL)
		tz = pg_tzset("UTC");
	for (int i = 0; i < 25; i++)
	{
		TimestampTz t = now + (int64) i * USECS_PER_HOUR;
		int			hour,
					min;
		int64		into;
		double		share;

		if (!local_parts(t, tz, &hour, &min, &into))
			break;
		if (i > 0)
		{
			t -= into;
			min = 0;
			if (t <= now)
				continue;
		}
		if (in_quiet(c, hour, min))
			continue;
		share = ((own_hours ? own_hours[hour] : 0) +
				 cdp_decide_shrinkage * ((pop_hours ? pop_hours[hour] : 0) + 1.0) / (pop_total + 24.0)) /
			(own_total + cdp_decide_shrinkage);
		if (share > best + 1e-12)
		{
			best = share;
			best_t = t;
			best_h = hour;
		}
	}
	if (hour_out)
		*hour_out = best_h;
	return best_t;
}

/* the business day (cdp.timezone) of t, as a date */
DateADT
cdp_decide_business_day(TimestampTz t)
{
	pg_tz	   *tz = pg_tzset(cdp_timezone ? cdp_timezone : "UTC");
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (tz == NULL || timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz) != 0)
		elog(ERROR, "pg_cdp: timestamp out of range");
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* ---------- one person's decision ---------- */

/*
 * The per-person statements are tiny, but their generic plans, made with
 * sequential scans off (cdp_spi_exec), carry costs that would make every
 * call compile them with JIT: off for the call.
 */
static int
jit_off(void)
{
	int			level = NewGUCNestLevel();

	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return level;
}


/* what is known of each channel some offer uses, for one person */
typedef struct ChanFacts
{
	char	   *name;
	const CdpChannel *ch;
	char	   *policy;			/* why a message may not be enqueued, or NULL */
	bool		capped;			/* the channel's daily cap for the person */
	double		delivered;
	double		engaged;
	double		pop_delivered;
	double		pop_engaged;
} ChanFacts;

typedef struct Verdict
{
	CdpOffer   *o;
	const char *reason;			/* NULL: allowed */
	char	   *detail;
	int			channel;		/* into o->channels */
	TimestampTz send_at;
	int			hour;
	double		propensity;
	double		score;
	bool		model;
	double		alpha;
	double		beta;
	StringInfoData chans;		/* per channel: rate or why not */
} Verdict;

typedef struct Person
{
	int64		profile_id;
	TimestampTz now;
	char	   *zone;
	double	   *x;
	bool	   *xnull;
	int			nsegs;
	char	  **segs;
	int			nchans;
	ChanFacts  *chans;
	double		own_hours[24];
	double		pop_hours[24];
	double		own_total;
} Person;

static void
json_str(StringInfo s, const char *v)
{
	if (v == NULL)
		appendStringInfoString(s, "null");
	else
		escape_json(s, v);
}

static void
json_num(StringInfo s, double v)
{
	if (isnan(v) || isinf(v))
		appendStringInfoString(s, "null");
	else
	{
		double		r = round(v * 10000.0) / 10000.0;

		if (r == 0)
			r = 0;				/* no "-0" */
		appendStringInfo(s, "%.4f", r);
	}
}

static Datum
interval_days(int days)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->day = days;
	return IntervalPGetDatum(iv);
}

static char *
channel_policy_sql(void)
{
	/* policy.h's enqueue rule, over a cdp.channels row u instead of parameters */
	StringInfoData s;
	const char *p = CDP_POLICY_ENQUEUE_SQL;

	initStringInfo(&s);
	while (*p)
	{
		if (p[0] == '$' && (p[1] == '7' || p[1] == '8' || p[1] == '9') && !isdigit((unsigned char) p[2]))
		{
			appendStringInfoString(&s, p[1] == '7' ? "u.requires_consent" :
								   p[1] == '8' ? "u.purpose" : "u.address_type");
			p += 2;
		}
		else
			appendStringInfoChar(&s, *p++);
	}
	return s.data;
}

/* Reads what the decision needs about the person; false when no such profile. */
static bool
read_person(Person *p, CdpOfferCache *c, int64 profile_id, TimestampTz now)
{
	static SPIPlanPtr zone_plan = NULL;
	static SPIPlanPtr segs_plan = NULL;
	static SPIPlanPtr chan_plan = NULL;
	static SPIPlanPtr hours_plan = NULL;
	Datum		args[5];
	bool		isnull;
	char	  **names;
	int			nnames = 0;

	memset(p, 0, sizeof(*p));
	p->profile_id = profile_id;
	p->now = now;
	if (zone_plan == NULL)
	{
		Oid			t1[1] = {INT8OID};
		Oid			t5[5] = {INT8OID, TIMESTAMPTZOID, TEXTOID, INTERVALOID, TEXTARRAYOID};

		zone_plan = cdp_prepare("SELECT cdp.recipient_zone(p.traits ->> 'timezone') "
								"FROM cdp.profiles p WHERE p.profile_id = $1", 1, t1);
		segs_plan = cdp_prepare("SELECT s.name FROM cdp.segment_members m "
								"JOIN cdp.segments s ON s.segment_id = m.segment_id "
								"WHERE m.profile_id = $1", 1, t1);
		chan_plan = cdp_prepare(psprintf("SELECT u.name, (%s), "
										 "u.cap_per_day IS NOT NULL AND (SELECT count(*) FROM cdp.outbox h "
										 "WHERE h.profile_id = $1 AND h.channel = u.name "
										 "AND h.sent_at >= cdp.local_period_start($2, $3, 'day')) >= u.cap_per_day, "
										 "(SELECT count(*) FROM cdp.outbox h WHERE h.profile_id = $1 "
										 "AND h.channel = u.name AND h.delivered_at >= $2 - $4)::float8, "
										 "(SELECT count(DISTINCT e.properties ->> 'outbox_id') FROM cdp.events e "
										 "WHERE e.profile_id = $1 AND e.event IN " CDP_ENGAGED_EVENTS
										 " AND e.properties ->> 'channel' = u.name "
										 "AND e.occurred_at >= $2 - $4)::float8, "
										 "coalesce(ep.delivered, 0)::float8, coalesce(ep.engaged, 0)::float8 "
										 "FROM cdp.channels u LEFT JOIN cdp.engagement_population ep "
										 "ON ep.channel = u.name AND ep.hour = -1 "
										 "WHERE u.name = ANY($5) ORDER BY u.name", channel_policy_sql()),
								5, t5);
		hours_plan = cdp_prepare("SELECT 0, extract(hour FROM e.occurred_at AT TIME ZONE $3)::int, "
								 "count(*)::float8 FROM cdp.events e WHERE e.profile_id = $1 "
								 "AND e.event IN " CDP_ENGAGED_EVENTS " AND e.occurred_at >= $2 - $4 "
								 "AND e.occurred_at < $2 GROUP BY 2 "
								 "UNION ALL SELECT 1, hour, sum(engaged)::float8 "
								 "FROM cdp.engagement_population WHERE hour >= 0 GROUP BY hour",
								 5, t5);
	}
	args[0] = Int64GetDatum(profile_id);
	cdp_spi_exec(zone_plan, args, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	p->zone = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

	cdp_spi_exec(segs_plan, args, SPI_OK_SELECT);
	p->nsegs = SPI_processed;
	p->segs = palloc(sizeof(char *) * Max(p->nsegs, 1));
	for (int i = 0; i < p->nsegs; i++)
		p->segs[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

	/* features */
	p->x = palloc0(sizeof(double) * Max(c->nfeatures, 1));
	p->xnull = palloc(sizeof(bool) * Max(c->nfeatures, 1));
	for (int s = 0; s < c->nfeatures; s++)
		p->xnull[s] = true;
	cdp_spi_exec(cdp_offer_features_plan(c), args, SPI_OK_SELECT);
	if (SPI_processed == 1)
		for (int s = 0; s < c->nfeatures; s++)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, s + 2, &isnull);

			p->xnull[s] = isnull;
			p->x[s] = isnull ? 0 : DatumGetFloat8(d);
		}

	/* the channels any offer uses */
	names = palloc(sizeof(char *) * 1);
	for (int i = 0; i < c->n; i++)
		for (int k = 0; k < c->offers[i].nchannels; k++)
		{
			int			j;

			for (j = 0; j < nnames; j++)
				if (strcmp(names[j], c->offers[i].channels[k].channel) == 0)
					break;
			if (j == nnames)
			{
				names = repalloc(names, sizeof(char *) * (nnames + 1));
				names[nnames++] = c->offers[i].channels[k].channel;
			}
		}
	args[1] = TimestampTzGetDatum(now);
	args[2] = CStringGetTextDatum(p->zone);
	args[3] = interval_days(cdp_decide_engagement_days);
	args[4] = cdp_text_array(names, nnames);
	cdp_spi_exec(chan_plan, args, SPI_OK_SELECT);
	p->nchans = SPI_processed;
	p->chans = palloc0(sizeof(ChanFacts) * Max(p->nchans, 1));
	for (int i = 0; i < p->nchans; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ChanFacts  *f = &p->chans[i];

		f->name = SPI_getvalue(tup, desc, 1);
		f->policy = SPI_getvalue(tup, desc, 2);
		f->capped = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)) && !isnull;
		f->delivered = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));
		f->engaged = DatumGetFloat8(SPI_getbinval(tup, desc, 5, &isnull));
		f->pop_delivered = DatumGetFloat8(SPI_getbinval(tup, desc, 6, &isnull));
		f->pop_engaged = DatumGetFloat8(SPI_getbinval(tup, desc, 7, &isnull));
	}
	for (int i = 0; i < p->nchans; i++)
		p->chans[i].ch = cdp_outbox_channel(p->chans[i].name);

	cdp_spi_exec(hours_plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		int			which = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		int			h = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		double		n = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));

		if (h < 0 || h > 23)
			continue;
		if (which == 0)
		{
			p->own_hours[h] += n;
			p->own_total += n;
		}
		else
			p->pop_hours[h] += n;
	}
	return true;
}

static ChanFacts *
chan_facts(Person *p, const char *name)
{
	for (int i = 0; i < p->nchans; i++)
		if (strcmp(p->chans[i].name, name) == 0)
			return &p->chans[i];
	return NULL;
}

static const char *
policy_code(const char *why)
{
	if (strstr(why, "consent"))
		return "no_consent";
	if (strstr(why, "suppressed"))
		return "suppressed";
	return "no_address";
}

/*
 * Decides every offer of the cache for the person (only the one named
 * when only is given, and only channel when given).  Verdicts are in the
 * cache's order.
 */
static Verdict *
decide_person(CdpOfferCache *c, Person *p, const char *only, const char *only_channel)
{
	static SPIPlanPtr hist_plan = NULL;
	static SPIPlanPtr cap_plan = NULL;
	static SPIPlanPtr arms_plan = NULL;
	static SPIPlanPtr tpl_plan = NULL;
	Verdict    *v = palloc0(sizeof(Verdict) * Max(c->n, 1));
	Datum		args[2];
	bool		isnull;
	int64	   *hist_n = palloc0(sizeof(int64) * Max(c->n, 1));
	TimestampTz *hist_last = palloc0(sizeof(TimestampTz) * Max(c->n, 1));
	bool	  **cond_ok = palloc0(sizeof(bool *) * Max(c->ngroups, 1));
	char	  **cond_err = palloc0(sizeof(char *) * Max(c->ngroups, 1));
	DateADT		today = cdp_decide_business_day(p->now);
	int			ncap = 0;
	char	  **cap_offer = NULL;
	char	  **cap_chan = NULL;
	DateADT    *cap_day = NULL;
	int32	   *cap_used = NULL;
	int			ntpl = 0;
	char	  **tpl_name = NULL;
	char	  **tpl_chan = NULL;

	if (hist_plan == NULL)
	{
		Oid			t1[1] = {INT8OID};
		Oid			t2[1] = {DATEOID};

		hist_plan = cdp_prepare("SELECT s.offer, count(*), max(s.sent_at) FROM cdp.offer_sends s "
								"WHERE s.profile_id = $1 AND NOT s.control GROUP BY s.offer", 1, t1);
		cap_plan = cdp_prepare("SELECT offer, channel, day, used FROM cdp.offer_capacity "
							   "WHERE day >= $1 AND day <= $1 + 1", 1, t2);
		arms_plan = cdp_prepare("SELECT offer, alpha, beta FROM cdp.offer_arms", 0, NULL);
		tpl_plan = cdp_prepare("SELECT name, channel FROM cdp.templates", 0, NULL);
	}
	args[0] = Int64GetDatum(p->profile_id);
	cdp_spi_exec(hist_plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		for (int i = 0; i < c->n; i++)
			if (strcmp(c->offers[i].name, name) == 0)
			{
				hist_n[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
				hist_last[i] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3, &isnull));
			}
	}
	args[0] = DateADTGetDatum(today);
	cdp_spi_exec(cap_plan, args, SPI_OK_SELECT);
	ncap = SPI_processed;
	cap_offer = palloc(sizeof(char *) * Max(ncap, 1));
	cap_chan = palloc(sizeof(char *) * Max(ncap, 1));
	cap_day = palloc(sizeof(DateADT) * Max(ncap, 1));
	cap_used = palloc(sizeof(int32) * Max(ncap, 1));
	for (int r = 0; r < ncap; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		cap_offer[r] = SPI_getvalue(tup, desc, 1);
		cap_chan[r] = SPI_getvalue(tup, desc, 2);
		cap_day[r] = DatumGetDateADT(SPI_getbinval(tup, desc, 3, &isnull));
		cap_used[r] = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	}
	cdp_spi_exec(arms_plan, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		for (int i = 0; i < c->n; i++)
			if (strcmp(c->offers[i].name, name) == 0)
			{
				v[i].alpha = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
				v[i].beta = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 3, &isnull));
			}
	}
	cdp_spi_exec(tpl_plan, NULL, SPI_OK_SELECT);
	ntpl = SPI_processed;
	tpl_name = palloc(sizeof(char *) * Max(ntpl, 1));
	tpl_chan = palloc(sizeof(char *) * Max(ntpl, 1));
	for (int r = 0; r < ntpl; r++)
	{
		tpl_name[r] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		tpl_chan[r] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
	}

	/* conditions, one statement per owner, as that owner */
	for (int g = 0; g < c->ngroups; g++)
	{
		ErrorData  *err;
		bool		needed = false;

		for (int i = 0; i < c->n; i++)
			if (c->offers[i].cond_group == g && (only == NULL || strcmp(only, c->offers[i].name) == 0))
				needed = true;
		if (!needed)
			continue;
		if (c->group_plan[g] == NULL)
		{
			Oid			t1[1] = {INT8OID};

			c->group_plan[g] = cdp_decide_prepare_guarded(psprintf("SELECT %s FROM cdp.customers c "
																   "WHERE c.profile_id = $1",
																   c->group_sql[g]),
														  1, t1, &cond_err[g]);
			if (c->group_plan[g] == NULL)
				continue;
		}
		args[0] = Int64GetDatum(p->profile_id);
		err = cdp_exec_guarded(c->group_plan[g], args, NULL, c->group_owner[g], SPI_OK_SELECT,
							   "an offer's condition");
		if (err)
		{
			cond_err[g] = err->message;
			continue;
		}
		cond_ok[g] = palloc0(sizeof(bool) * (SPI_tuptable ? SPI_tuptable->tupdesc->natts + 1 : 1));
		if (SPI_processed == 1)
			for (int k = 1; k <= SPI_tuptable->tupdesc->natts; k++)
			{
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, k, &isnull);

				cond_ok[g][k] = !isnull && DatumGetBool(d);
			}
	}

	for (int i = 0; i < c->n; i++)
	{
		CdpOffer   *o = &c->offers[i];
		Verdict    *w = &v[i];
		double		best_rate = -1;
		const char *first_reason = NULL;
		char	   *first_detail = NULL;

		w->o = o;
		w->channel = -1;
		initStringInfo(&w->chans);
		if (only && strcmp(only, o->name) != 0)
		{
			w->reason = "not_asked";
			continue;
		}
		if ((o->has_from && p->now < o->valid_from) || (o->has_until && p->now >= o->valid_until))
		{
			w->reason = "not_valid";
			w->detail = psprintf("valid %s to %s",
								 o->has_from ? timestamptz_to_str(o->valid_from) : "always",
								 o->has_until ? timestamptz_to_str(o->valid_until) : "forever");
			continue;
		}
		for (int s = 0; s < o->nsegments && !w->reason; s++)
		{
			bool		in = false;

			for (int k = 0; k < p->nsegs; k++)
				if (strcmp(p->segs[k], o->segments[s]) == 0)
					in = true;
			if (!in)
			{
				w->reason = "ineligible";
				w->detail = psprintf("not in segment %s", o->segments[s]);
			}
		}
		if (w->reason)
			continue;
		if (o->cond_group >= 0)
		{
			if (cond_err[o->cond_group])
			{
				w->reason = "ineligible";
				w->detail = psprintf("condition failed: %s", cond_err[o->cond_group]);
				continue;
			}
			if (!cond_ok[o->cond_group][o->cond_column])
			{
				w->reason = "ineligible";
				w->detail = "condition not met";
				continue;
			}
		}
		if (o->lifetime_cap > 0 && hist_n[i] >= o->lifetime_cap)
		{
			w->reason = "cap";
			w->detail = psprintf("had it " INT64_FORMAT " times, the cap is %d", hist_n[i], o->lifetime_cap);
			continue;
		}
		if (o->cooldown > 0 && hist_n[i] > 0 && p->now < hist_last[i] + o->cooldown)
		{
			w->reason = "cooldown";
			w->detail = psprintf("until %s", timestamptz_to_str(hist_last[i] + o->cooldown));
			continue;
		}

		/* channels */
		appendStringInfoChar(&w->chans, '{');
		for (int k = 0; k < o->nchannels; k++)
		{
			CdpOfferChannel *oc = &o->channels[k];
			ChanFacts  *f = chan_facts(p, oc->channel);
			const char *why = NULL;
			char	   *wdetail = NULL;
			bool		tpl_ok = false;
			TimestampTz at = p->now;
			int			hour = -1;

			if (only_channel && strcmp(only_channel, oc->channel) != 0)
				continue;
			for (int t = 0; t < ntpl; t++)
				if (strcmp(tpl_name[t], oc->template) == 0 && strcmp(tpl_chan[t], oc->channel) == 0)
					tpl_ok = true;
			if (f == NULL || f->ch == NULL)
			{
				why = "invalid_template";
				wdetail = psprintf("channel %s no longer exists", oc->channel);
			}
			else if (!tpl_ok)
			{
				why = "invalid_template";
				wdetail = psprintf("template %s of %s does not exist", oc->template, oc->channel);
			}
			else if (f->policy)
			{
				why = policy_code(f->policy);
				wdetail = f->policy;
			}
			else if (f->capped)
			{
				why = "contact_cap";
				wdetail = psprintf("cap of %d per day on %s reached", f->ch->cap_per_day, oc->channel);
			}
			if (why == NULL)
			{
				at = cdp_decide_send_time(p->now, p->zone, f->ch, p->own_hours, p->pop_hours, &hour);
				if (oc->capacity >= 0)
				{
					DateADT		day = cdp_decide_business_day(at);
					int32		used = 0;

					for (int r = 0; r < ncap; r++)
						if (cap_day[r] == day && strcmp(cap_offer[r], o->name) == 0 &&
							strcmp(cap_chan[r], oc->channel) == 0)
							used = cap_used[r];
					if (used >= oc->capacity)
					{
						why = "capacity";
						wdetail = psprintf("%d of %d used on %s", used, oc->capacity, oc->channel);
					}
				}
			}
			if (w->chans.len > 1)
				appendStringInfoString(&w->chans, ", ");
			json_str(&w->chans, oc->channel);
			appendStringInfoString(&w->chans, ": ");
			if (why)
			{
				json_str(&w->chans, wdetail);
				if (first_reason == NULL)
				{
					first_reason = why;
					first_detail = wdetail;
				}
			}
			else
			{
				double		rate = cdp_decide_channel_rate(f->delivered, f->engaged,
														   f->pop_delivered, f->pop_engaged);

				json_num(&w->chans, rate);
				if (rate > best_rate + 1e-12)
				{
					best_rate = rate;
					w->channel = k;
					w->send_at = at;
					w->hour = hour;
				}
			}
		}
		appendStringInfoChar(&w->chans, '}');
		if (w->channel < 0)
		{
			w->reason = first_reason ? first_reason : "invalid_template";
			w->detail = first_detail ? first_detail : "no channel";
			continue;
		}

		/* the score */
		if (o->has_model && o->model_active)
		{
			w->model = true;
			w->propensity = cdp_offer_propensity_model(o, p->x, p->xnull);
		}
		else
		{
			pg_prng_state st;

			pg_prng_seed(&st, cdp_decide_mix(cdp_decide_seed ? (uint64) cdp_decide_seed :
											  pg_prng_uint64(&pg_global_prng_state),
											  p->profile_id, o->name, NULL));
			w->propensity = cdp_beta_draw(&st, w->alpha > 0 ? w->alpha : 1, w->beta > 0 ? w->beta : 1);
		}
		w->score = w->propensity * o->value;
	}
	return v;
}

static int
verdict_cmp(const void *a, const void *b)
{
	const Verdict *x = *(Verdict *const *) a;
	const Verdict *y = *(Verdict *const *) b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return strcmp(x->o->name, y->o->name);
}

typedef struct Contribution
{
	const char *feature;
	double		value;
	bool		imputed;
	double		weight;
	double		contribution;
} Contribution;

static int
contribution_cmp(const void *a, const void *b)
{
	const Contribution *x = a;
	const Contribution *y = b;

	if (fabs(x->contribution) != fabs(y->contribution))
		return fabs(x->contribution) > fabs(y->contribution) ? -1 : 1;
	return strcmp(x->feature, y->feature);
}

/* the explanation of an allowed verdict; excluded lists every other offer */
static Jsonb *
explain(Verdict *w, Person *p, const char *excluded)
{
	StringInfoData s;
	CdpOffer   *o = w->o;

	initStringInfo(&s);
	appendStringInfoString(&s, "{\"model\": ");
	json_str(&s, w->model ? "logistic" : "bandit");
	appendStringInfoString(&s, ", \"propensity\": ");
	json_num(&s, w->propensity);
	appendStringInfoString(&s, ", \"value\": ");
	json_num(&s, o->value);
	if (w->model)
	{
		Contribution *cs = palloc(sizeof(Contribution) * Max(o->nfeatures, 1));

		appendStringInfoString(&s, ", \"intercept\": ");
		json_num(&s, o->intercept);
		appendStringInfoString(&s, ", \"auc\": ");
		json_num(&s, o->auc);
		for (int f = 0; f < o->nfeatures; f++)
		{
			int			slot = o->feature_slot[f];

			cs[f].feature = o->features[f];
			cs[f].imputed = p->xnull[slot];
			cs[f].value = p->xnull[slot] ? o->means[f] : p->x[slot];
			cs[f].weight = o->weights[f];
			cs[f].contribution = cs[f].weight * cs[f].value;
		}
		qsort(cs, o->nfeatures, sizeof(Contribution), contribution_cmp);
		appendStringInfoString(&s, ", \"top_features\": [");
		for (int f = 0; f < Min(o->nfeatures, 3); f++)
		{
			if (f > 0)
				appendStringInfoString(&s, ", ");
			appendStringInfoString(&s, "{\"feature\": ");
			json_str(&s, cs[f].feature);
			appendStringInfoString(&s, ", \"value\": ");
			json_num(&s, cs[f].value);
			if (cs[f].imputed)
				appendStringInfoString(&s, ", \"imputed\": true");
			appendStringInfoString(&s, ", \"weight\": ");
			json_num(&s, cs[f].weight);
			appendStringInfoString(&s, ", \"contribution\": ");
			json_num(&s, cs[f].contribution);
			appendStringInfoChar(&s, '}');
		}
		appendStringInfoChar(&s, ']');
	}
	else
	{
		appendStringInfoString(&s, ", \"arm\": {\"alpha\": ");
		json_num(&s, w->alpha);
		appendStringInfoString(&s, ", \"beta\": ");
		json_num(&s, w->beta);
		appendStringInfoString(&s, ", \"draw\": ");
		json_num(&s, w->propensity);
		appendStringInfoChar(&s, '}');
	}
	appendStringInfoString(&s, ", \"channel\": ");
	json_str(&s, o->channels[w->channel].channel);
	appendStringInfoString(&s, ", \"template\": ");
	json_str(&s, o->channels[w->channel].template);
	appendStringInfoString(&s, ", \"channels\": ");
	appendStringInfoString(&s, w->chans.data);
	appendStringInfo(&s, ", \"send_hour\": %d, \"zone\": ", w->hour);
	json_str(&s, p->zone);
	appendStringInfo(&s, ", \"own_engagements\": %d", (int) p->own_total);
	appendStringInfoString(&s, ", \"excluded\": ");
	appendStringInfoString(&s, excluded);
	appendStringInfoChar(&s, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data)));
}

/* cdp.next_best_actions(profile_id, n) */
PG_FUNCTION_INFO_V1(cdp_next_best_actions);
Datum
cdp_next_best_actions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		profile_id;
	int			n;
	CdpOfferCache *c;
	Person		p;
	Verdict    *v;
	Verdict   **allowed;
	int			nallowed = 0;
	MemoryContext per_call;
	MemoryContext old;
	int			level;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("profile_id must not be null")));
	n = PG_ARGISNULL(1) ? 3 : PG_GETARG_INT32(1);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be 0 or more")));
	profile_id = PG_GETARG_INT64(0);
	InitMaterializedSRF(fcinfo, 0);

	per_call = AllocSetContextCreate(CurrentMemoryContext, "pg_cdp next best actions",
									 ALLOCSET_DEFAULT_SIZES);
	SPI_connect();
	level = jit_off();
	c = cdp_offers_load();
	old = MemoryContextSwitchTo(per_call);
	if (!read_person(&p, c, profile_id, cdp_now()))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("profile " INT64_FORMAT " does not exist", profile_id),
				 errhint("A merged profile is found under the profile it was merged into (cdp.resolve).")));
	v = decide_person(c, &p, NULL, NULL);
	allowed = palloc(sizeof(Verdict *) * Max(c->n, 1));
	for (int i = 0; i < c->n; i++)
		if (v[i].reason == NULL)
			allowed[nallowed++] = &v[i];
	qsort(allowed, nallowed, sizeof(Verdict *), verdict_cmp);
	for (int r = 0; r < nallowed && r < n; r++)
	{
		StringInfoData ex;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		Verdict    *w = allowed[r];

		/* every other offer, and why it is not this one */
		initStringInfo(&ex);
		appendStringInfoChar(&ex, '{');
		for (int i = 0; i < c->n; i++)
		{
			const char *reason = v[i].reason;
			const char *detail = v[i].detail;

			if (&v[i] == w)
				continue;
			if (reason == NULL)
			{
				int			rank = 0;

				while (allowed[rank] != &v[i])
					rank++;
				if (rank < n)
					continue;	/* returned too */
				reason = "outranked";
				detail = psprintf("rank %d", rank + 1);
			}
			if (ex.len > 1)
				appendStringInfoString(&ex, ", ");
			json_str(&ex, v[i].o->name);
			appendStringInfoString(&ex, ": {\"reason\": ");
			json_str(&ex, reason);
			appendStringInfoString(&ex, ", \"detail\": ");
			json_str(&ex, detail);
			appendStringInfoChar(&ex, '}');
		}
		appendStringInfoChar(&ex, '}');
		values[0] = CStringGetTextDatum(w->o->name);
		values[1] = CStringGetTextDatum(w->o->channels[w->channel].channel);
		values[2] = TimestampTzGetDatum(w->send_at);
		values[3] = Float8GetDatum(w->score);
		values[4] = JsonbPGetDatum(explain(w, &p, ex.data));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextSwitchTo(old);
	AtEOXact_GUC(true, level);
	SPI_finish();
	return (Datum) 0;
}

/* cdp.send_offer(profile_id, offer, channel, send_at, dedupe_key) → outbox id */
PG_FUNCTION_INFO_V1(cdp_send_offer);
Datum
cdp_send_offer(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr send_plan = NULL;
	int64		profile_id;
	char	   *offer;
	char	   *channel = NULL;
	char	   *dedupe = NULL;
	CdpOfferCache *c;
	Person		p;
	Verdict    *v;
	Verdict    *w = NULL;
	TimestampTz at;
	Datum		args[10];
	char		nulls[10];
	bool		isnull;
	int64		outbox_id;
	StringInfoData feats;
	int			level;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("profile_id and offer must not be null")));
	profile_id = PG_GETARG_INT64(0);
	offer = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
		channel = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(4))
		dedupe = text_to_cstring(PG_GETARG_TEXT_PP(4));

	SPI_connect();
	level = jit_off();
	c = cdp_offers_load();
	(void) cdp_offer_by_name(offer, false);
	if (!read_person(&p, c, profile_id, cdp_now()))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("profile " INT64_FORMAT " does not exist", profile_id)));
	v = decide_person(c, &p, offer, channel);
	for (int i = 0; i < c->n; i++)
		if (strcmp(c->offers[i].name, offer) == 0)
			w = &v[i];
	if (channel && w->reason == NULL && w->channel < 0)
		w->reason = "invalid_template";
	if (w->reason)
	{
		if (channel && w->channel < 0 && strcmp(w->reason, "invalid_template") == 0)
		{
			bool		known = false;

			for (int k = 0; k < w->o->nchannels; k++)
				if (strcmp(w->o->channels[k].channel, channel) == 0)
					known = true;
			if (!known)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("offer \"%s\" does not go through channel \"%s\"", offer, channel)));
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("offer \"%s\" may not be sent to profile " INT64_FORMAT ": %s",
						offer, profile_id, w->reason),
				 w->detail ? errdetail("%s", w->detail) : 0));
	}
	at = PG_ARGISNULL(3) ? w->send_at : PG_GETARG_TIMESTAMPTZ(3);

	initStringInfo(&feats);
	appendStringInfoChar(&feats, '{');
	for (int f = 0; f < w->o->nfeatures; f++)
	{
		int			s = w->o->feature_slot[f];

		if (f > 0)
			appendStringInfoChar(&feats, ',');
		if (p.xnull[s])
			appendStringInfoString(&feats, "NULL");
		else
			appendStringInfo(&feats, "%.17g", p.x[s]);
	}
	appendStringInfoChar(&feats, '}');

	if (send_plan == NULL)
	{
		Oid			types[10] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID,
		FLOAT8OID, TEXTOID, INT4OID, DATEOID};

		/*
		 * The capacity row is locked before counting, so two sends never
		 * take the last place twice.
		 */
		send_plan = cdp_prepare("WITH q AS (SELECT cdp.enqueue($1, $3, $4, "
								"jsonb_build_object('offer', $2::text), $5, $6) AS id), "
								"s AS (INSERT INTO cdp.offer_sends (profile_id, offer, channel, outbox_id, "
								"sent_at, score, features) SELECT $1, $2, $3, q.id, $5, $7, $8::float8[] "
								"FROM q WHERE NOT EXISTS (SELECT 1 FROM cdp.offer_sends x "
								"WHERE x.outbox_id = q.id) RETURNING outbox_id) "
								"SELECT q.id, (SELECT count(*) FROM s) FROM q", 10, types);
	}
	/* capacity: lock, check, count */
	if (w->o->channels[w->channel].capacity >= 0)
	{
		Oid			ct[4] = {TEXTOID, TEXTOID, DATEOID, INT4OID};
		Datum		cv[4];
		int32		used;

		cv[0] = CStringGetTextDatum(offer);
		cv[1] = CStringGetTextDatum(w->o->channels[w->channel].channel);
		cv[2] = DateADTGetDatum(cdp_decide_business_day(at));
		if (SPI_execute_with_args("INSERT INTO cdp.offer_capacity (offer, channel, day) VALUES ($1, $2, $3) "
								  "ON CONFLICT DO NOTHING", 3, ct, cv, NULL, false, 0) != SPI_OK_INSERT ||
			SPI_execute_with_args("SELECT used FROM cdp.offer_capacity WHERE offer = $1 AND channel = $2 "
								  "AND day = $3 FOR UPDATE", 3, ct, cv, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not read the offer's capacity");
		used = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (used >= w->o->channels[w->channel].capacity)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("offer \"%s\" may not be sent to profile " INT64_FORMAT ": capacity",
							offer, profile_id),
					 errdetail("%d of %d used on %s.", used, w->o->channels[w->channel].capacity,
							   w->o->channels[w->channel].channel)));
	}
	memset(nulls, ' ', sizeof(nulls));
	args[0] = Int64GetDatum(profile_id);
	args[1] = CStringGetTextDatum(offer);
	args[2] = CStringGetTextDatum(w->o->channels[w->channel].channel);
	args[3] = CStringGetTextDatum(w->o->channels[w->channel].template);
	args[4] = TimestampTzGetDatum(at);
	args[5] = dedupe ? CStringGetTextDatum(dedupe) : (Datum) 0;
	if (!dedupe)
		nulls[5] = 'n';
	args[6] = Float8GetDatum(w->score);
	args[7] = CStringGetTextDatum(feats.data);
	args[8] = Int32GetDatum(0);
	args[9] = DateADTGetDatum(0);
	if (SPI_execute_plan(send_plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not send the offer");
	outbox_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) > 0 &&
		w->o->channels[w->channel].capacity >= 0)
	{
		Oid			ct[3] = {TEXTOID, TEXTOID, DATEOID};
		Datum		cv[3];

		cv[0] = CStringGetTextDatum(offer);
		cv[1] = CStringGetTextDatum(w->o->channels[w->channel].channel);
		cv[2] = DateADTGetDatum(cdp_decide_business_day(at));
		if (SPI_execute_with_args("UPDATE cdp.offer_capacity SET used = used + 1 WHERE offer = $1 "
								  "AND channel = $2 AND day = $3", 3, ct, cv, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "pg_cdp: could not count the send");
	}
	AtEOXact_GUC(true, level);
	SPI_finish();
	PG_RETURN_INT64(outbox_id);
}

/* cdp.refresh_engagement() → rows written */
PG_FUNCTION_INFO_V1(cdp_refresh_engagement);
Datum
cdp_refresh_engagement(PG_FUNCTION_ARGS)
{
	Oid			types[2] = {TIMESTAMPTZOID, INTERVALOID};
	Datum		args[2];
	uint64		n;

	args[0] = TimestampTzGetDatum(cdp_now());
	args[1] = interval_days(cdp_decide_engagement_days);
	SPI_connect();
	if (SPI_execute("DELETE FROM cdp.engagement_population", false, 0) != SPI_OK_DELETE)
		elog(ERROR, "pg_cdp: could not clear the population's engagement");
	if (SPI_execute_with_args("WITH d AS (SELECT channel, count(*) AS n FROM cdp.outbox "
							  "WHERE delivered_at >= $1 - $2 GROUP BY channel), "
							  "e AS (SELECT e.properties ->> 'channel' AS channel, e.occurred_at, "
							  "e.properties ->> 'outbox_id' AS outbox_id, "
							  "cdp.recipient_zone(p.traits ->> 'timezone') AS zone "
							  "FROM cdp.events e LEFT JOIN cdp.profiles p ON p.profile_id = e.profile_id "
							  "WHERE e.event IN " CDP_ENGAGED_EVENTS " AND e.occurred_at >= $1 - $2 "
							  "AND e.occurred_at < $1 AND e.properties ->> 'channel' IS NOT NULL), "
							  "t AS (SELECT coalesce(d.channel, x.channel) AS channel, coalesce(d.n, 0) AS delivered, "
							  "coalesce(x.n, 0) AS engaged FROM d FULL JOIN "
							  "(SELECT channel, count(DISTINCT outbox_id) AS n FROM e GROUP BY channel) x "
							  "ON x.channel = d.channel) "
							  "INSERT INTO cdp.engagement_population (channel, hour, delivered, engaged) "
							  "SELECT channel, -1, delivered, engaged FROM t "
							  "UNION ALL SELECT channel, extract(hour FROM occurred_at AT TIME ZONE zone)::int, "
							  "0, count(*) FROM e GROUP BY 1, 2",
							  2, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not count the population's engagement");
	n = SPI_processed;
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

/* cdp.offer_eligibility(profile_id): every offer, allowed or why not */
PG_FUNCTION_INFO_V1(cdp_offer_eligibility);
Datum
cdp_offer_eligibility(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		profile_id;
	CdpOfferCache *c;
	Person		p;
	Verdict    *v;
	int			level;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("profile_id must not be null")));
	profile_id = PG_GETARG_INT64(0);
	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	level = jit_off();
	c = cdp_offers_load();
	if (!read_person(&p, c, profile_id, cdp_now()))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("profile " INT64_FORMAT " does not exist", profile_id)));
	v = decide_person(c, &p, NULL, NULL);
	for (int i = 0; i < c->n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};
		Verdict    *w = &v[i];

		values[0] = CStringGetTextDatum(w->o->name);
		values[1] = BoolGetDatum(w->reason == NULL);
		if (w->reason)
		{
			values[2] = CStringGetTextDatum(w->reason);
			nulls[3] = w->detail == NULL;
			if (w->detail)
				values[3] = CStringGetTextDatum(w->detail);
			nulls[4] = nulls[5] = nulls[6] = true;
		}
		else
		{
			nulls[2] = nulls[3] = true;
			values[4] = CStringGetTextDatum(w->o->channels[w->channel].channel);
			values[5] = TimestampTzGetDatum(w->send_at);
			values[6] = Float8GetDatum(w->score);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	AtEOXact_GUC(true, level);
	SPI_finish();
	return (Datum) 0;
}
