/*-------------------------------------------------------------------------
 *
 * decide_train.c
 *	  Learning from outcomes: the sends' feedback, the Thompson-sampling
 *	  bandit of each offer, and the logistic model cdp.train_offer fits.
 *
 * Feedback.  The event writer calls offers_events_written for every batch,
 * in the writing transaction: a goal event marks converted every open send
 * of an offer with that goal to the person whose window it falls in (the
 * value is the event's numeric "value" or "revenue" property, else the
 * offer's), and a hard bounce or a complaint of the message marks its send
 * failed.  The worker's "offers" task settles the sends whose window closed
 * without a conversion: expired, or failed when the outbox gave up on the
 * message (dead, cancelled, suppressed).  Each settled send that was not a
 * control moves its offer's bandit at once: a conversion adds one to
 * alpha, any other outcome one to beta.
 *
 * Thompson sampling draws Beta(alpha, beta) from pg_prng seeded with
 * cdp.decide_seed mixed with the person, the offer and (for a campaign)
 * the run, so the same call gives the same draw.
 *
 * The model.  Logistic regression over the offer's features as they were
 * at each send (offer_sends.features), on settled sends: the rows are
 * shuffled with the seed, cdp.decide_test_share of them held out for the
 * AUC, features standardized on the training rows (a missing value is
 * the training mean) and the L2-penalized log-likelihood maximized by
 * Newton's method (the dimension is small, so each step solves the
 * Hessian directly); the weights are stored on the raw scale.  The switch
 * rule: the model scores the offer once it was trained on at least
 * cdp.decide_min_sends settled sends with at least
 * cdp.decide_min_conversions conversions and a held-out AUC of at least
 * cdp.decide_min_auc; until then the bandit does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "decide.h"
#include "ingest.h"
#include "registry.h"
#include "util.h"
#include "worker.h"

static void offers_events_written(CdpMessage *msgs, int nmsgs);
static int64 task_offers(bool *more);

static const CdpProfileTable decide_tables[] = {
	{
		/* a run both parts were decided in keeps both, the loser's renamed */
		.name = "offer_sends",
		.relation = "cdp.offer_sends",
		.order = 800,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql =
		"UPDATE cdp.offer_sends s SET profile_id = m.winner, "
		"run = CASE WHEN s.run IS NOT NULL AND EXISTS (SELECT 1 FROM cdp.offer_sends w "
		"WHERE w.profile_id = m.winner AND w.run = s.run) "
		"THEN s.run || '/merged/' || s.profile_id ELSE s.run END "
		"FROM unnest($1::int8[], $2::int8[]) AS m(loser, winner) WHERE s.profile_id = m.loser",
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

static const CdpTask offers_task = {
	.name = "offers",
	.run = task_offers,
};

void
cdp_decide_feedback_init(void)
{
	for (int i = 0; i < lengthof(decide_tables); i++)
		cdp_register_profile_table(&decide_tables[i]);
	cdp_register_events_written(offers_events_written);
	cdp_register_task(&offers_task);
}

/* ---------- the seeded generator ---------- */

uint64
cdp_decide_mix(uint64 seed, int64 a, const char *b, const char *c)
{
	uint64		h = hash_bytes_uint32_extended((uint32) a, seed) ^
		hash_bytes_uint32_extended((uint32) (a >> 32), seed + 0x9e3779b97f4a7c15ULL);

	if (b)
		h = hash_bytes_extended((const unsigned char *) b, strlen(b), h);
	if (c)
		h = hash_bytes_extended((const unsigned char *) c, strlen(c), h);
	return h;
}

static double
normal_draw(pg_prng_state *st)
{
	/* Box-Muller; u1 in (0, 1] */
	double		u1 = 1.0 - pg_prng_double(st);
	double		u2 = pg_prng_double(st);

	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Gamma(shape, 1) by Marsaglia and Tsang; shape < 1 boosted by U^(1/shape) */
static double
gamma_draw(pg_prng_state *st, double shape)
{
	double		d,
				cc;

	if (shape < 1.0)
	{
		double		u = 1.0 - pg_prng_double(st);

		return gamma_draw(st, shape + 1.0) * pow(u, 1.0 / shape);
	}
	d = shape - 1.0 / 3.0;
	cc = 1.0 / sqrt(9.0 * d);
	for (;;)
	{
		double		x = normal_draw(st);
		double		v = 1.0 + cc * x;
		double		u;

		if (v <= 0)
			continue;
		v = v * v * v;
		u = 1.0 - pg_prng_double(st);
		if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
			return d * v;
	}
}

double
cdp_beta_draw(pg_prng_state *st, double alpha, double beta)
{
	double		x = gamma_draw(st, alpha);
	double		y = gamma_draw(st, beta);

	return x + y > 0 ? x / (x + y) : 0.5;
}

PG_FUNCTION_INFO_V1(cdp_bandit_draw);
Datum
cdp_bandit_draw(PG_FUNCTION_ARGS)
{
	double		a = PG_GETARG_FLOAT8(0);
	double		b = PG_GETARG_FLOAT8(1);
	pg_prng_state st;

	if (!(a > 0) || !(b > 0) || isinf(a) || isinf(b))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("alpha and beta must be positive and finite")));
	pg_prng_seed(&st, cdp_decide_mix((uint64) PG_GETARG_INT64(2), 0, NULL, NULL));
	PG_RETURN_FLOAT8(cdp_beta_draw(&st, a, b));
}

/* cdp.two_proportion_test(x1, n1, x2, n2) → (z, p_value) */
PG_FUNCTION_INFO_V1(cdp_two_proportion_test);
Datum
cdp_two_proportion_test(PG_FUNCTION_ARGS)
{
	int64		x1 = PG_GETARG_INT64(0),
				n1 = PG_GETARG_INT64(1),
				x2 = PG_GETARG_INT64(2),
				n2 = PG_GETARG_INT64(3);
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	double		p1,
				p2,
				pool,
				se;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_cdp: two_proportion_test must return a record");
	if (n1 <= 0 || n2 <= 0 || x1 < 0 || x2 < 0 || x1 > n1 || x2 > n2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("each proportion needs 0 <= x <= n and n > 0")));
	p1 = (double) x1 / n1;
	p2 = (double) x2 / n2;
	pool = (double) (x1 + x2) / (n1 + n2);
	se = sqrt(pool * (1 - pool) * (1.0 / n1 + 1.0 / n2));
	if (se == 0)
	{
		nulls[0] = nulls[1] = true;
	}
	else
	{
		double		z = (p1 - p2) / se;

		values[0] = Float8GetDatum(z);
		values[1] = Float8GetDatum(erfc(fabs(z) / sqrt(2.0)));
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---------- feedback ---------- */

static bool
is_goal_event(CdpOfferCache *c, const char *event)
{
	for (int i = 0; i < c->n; i++)
		if (strcmp(c->offers[i].goal_event, event) == 0)
			return true;
	return false;
}

/*
 * A batch of events: conversions of open sends and failed messages, and
 * the bandits they move, in the writing transaction.
 */
static void
offers_events_written(CdpMessage *msgs, int nmsgs)
{
	static SPIPlanPtr plan = NULL;
	CdpOfferCache *c;
	int64	   *pids = NULL;
	char	  **events = NULL;
	Jsonb	  **props = NULL;
	TimestampTz *times = NULL;
	int			n = 0;
	Datum		args[4];
	int			level;

	if (get_namespace_oid("cdp", true) == InvalidOid)
		return;
	c = cdp_offers_load();
	if (c->n == 0)
		return;
	for (int i = 0; i < nmsgs; i++)
	{
		CdpMessage *m = &msgs[i];

		if (m->err.sqlerrcode || m->duplicate || m->event == NULL)
			continue;
		if (!is_goal_event(c, m->event) && strcmp(m->event, "Message Bounced") != 0 &&
			strcmp(m->event, "Message Complained") != 0)
			continue;
		if (n == 0)
		{
			pids = palloc(sizeof(int64) * nmsgs);
			events = palloc(sizeof(char *) * nmsgs);
			props = palloc(sizeof(Jsonb *) * nmsgs);
			times = palloc(sizeof(TimestampTz) * nmsgs);
		}
		pids[n] = m->profile_id;
		events[n] = m->event;
		props[n] = m->properties;
		times[n] = m->occurred_at;
		n++;
	}
	if (n == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[4] = {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID};

		plan = cdp_prepare("WITH b AS (SELECT * FROM unnest($1::int8[], $2::text[], $3::jsonb[], "
						   "$4::timestamptz[]) AS b(pid, event, props, at)), "
						   "conv AS (UPDATE cdp.offer_sends s SET outcome = 'converted', converted_at = b.at, "
						   "value = coalesce(CASE WHEN jsonb_typeof(b.props -> 'value') = 'number' "
						   "THEN (b.props ->> 'value')::numeric WHEN jsonb_typeof(b.props -> 'revenue') = 'number' "
						   "THEN (b.props ->> 'revenue')::numeric END, o.value) "
						   "FROM b, cdp.offers o WHERE s.profile_id = b.pid AND s.outcome IS NULL "
						   "AND o.name = s.offer AND o.goal_event = b.event "
						   "AND b.at >= s.sent_at AND b.at <= s.sent_at + o.goal_window "
						   "RETURNING s.offer, s.control, true AS won), "
						   "fail AS (UPDATE cdp.offer_sends s SET outcome = 'failed' FROM b "
						   "WHERE b.event IN ('Message Bounced', 'Message Complained') "
						   "AND (b.event = 'Message Complained' OR b.props #>> '{detail,type}' = 'hard') "
						   "AND jsonb_typeof(b.props -> 'outbox_id') = 'number' "
						   "AND s.outbox_id = (b.props ->> 'outbox_id')::int8 AND s.profile_id = b.pid "
						   "AND s.outcome IS NULL RETURNING s.offer, s.control, false AS won), "
						   "k AS (SELECT offer, count(*) FILTER (WHERE won) AS won, "
						   "count(*) FILTER (WHERE NOT won) AS lost FROM "
						   "(SELECT * FROM conv UNION ALL SELECT * FROM fail) x WHERE NOT control GROUP BY offer) "
						   "UPDATE cdp.offer_arms a SET alpha = a.alpha + k.won, beta = a.beta + k.lost, "
						   "updated_at = cdp.now() FROM k WHERE a.offer = k.offer",
						   4, types);
	}
	args[0] = cdp_int8_array(pids, n);
	args[1] = cdp_text_array(events, n);
	args[2] = cdp_jsonb_array(props, n);
	args[3] = cdp_timestamptz_array(times, n);
	level = NewGUCNestLevel();
	/* a small statement whose generic plan's costs would call for JIT */
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	cdp_spi_exec(plan, args, SPI_OK_UPDATE);
	AtEOXact_GUC(true, level);
}

/*
 * The worker's task: settles a batch of sends whose goal window closed,
 * and recounts the population's engagement once an hour.
 */
static int64
task_offers(bool *more)
{
	static SPIPlanPtr plan = NULL;
	static TimestampTz refreshed = 0;
	Datum		args[2];
	int64		n = 0;
	TimestampTz now = cdp_now();

	if (get_relname_relid("offer_sends", get_namespace_oid("cdp", true)) == InvalidOid)
		return 0;
	if (plan == NULL)
	{
		Oid			types[2] = {TIMESTAMPTZOID, INT4OID};

		plan = cdp_prepare("WITH due AS (SELECT s.profile_id, s.send_id FROM cdp.offer_sends s "
						   "JOIN cdp.offers o ON o.name = s.offer "
						   "WHERE s.outcome IS NULL AND s.sent_at < $1 - o.goal_window "
						   "ORDER BY s.sent_at LIMIT $2 FOR UPDATE OF s SKIP LOCKED), "
						   "e AS (UPDATE cdp.offer_sends s SET outcome = CASE WHEN (SELECT x.status FROM cdp.outbox x "
						   "WHERE x.outbox_id = s.outbox_id) IN ('dead', 'cancelled', 'suppressed') "
						   "THEN 'failed' ELSE 'expired' END FROM due "
						   "WHERE s.profile_id = due.profile_id AND s.send_id = due.send_id "
						   "RETURNING s.offer, s.control, s.outbox_id), "
						   "k AS (SELECT offer, count(*) AS lost FROM e WHERE NOT control GROUP BY offer), "
						   "u AS (UPDATE cdp.offer_arms a SET beta = a.beta + k.lost, updated_at = cdp.now() "
						   "FROM k WHERE a.offer = k.offer) "
						   "SELECT count(*) FROM e", 2, types);
	}
	args[0] = TimestampTzGetDatum(now);
	args[1] = Int32GetDatum(10000);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		bool		isnull;

		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	*more = n >= 10000;
	if (refreshed == 0 || now - refreshed >= USECS_PER_HOUR)
	{
		if (SPI_execute("SELECT cdp.refresh_engagement()", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not refresh the population's engagement");
		refreshed = now;
	}
	return n;
}

/* ---------- training ---------- */

/* solves a x = b (n x n, row-major) by Gaussian elimination with pivoting */
static bool
solve(double *a, double *b, int n)
{
	for (int col = 0; col < n; col++)
	{
		int			piv = col;

		for (int r = col + 1; r < n; r++)
			if (fabs(a[r * n + col]) > fabs(a[piv * n + col]))
				piv = r;
		if (fabs(a[piv * n + col]) < 1e-12)
			return false;
		if (piv != col)
		{
			for (int k = 0; k < n; k++)
			{
				double		t = a[col * n + k];

				a[col * n + k] = a[piv * n + k];
				a[piv * n + k] = t;
			}
			{
				double		t = b[col];

				b[col] = b[piv];
				b[piv] = t;
			}
		}
		for (int r = col + 1; r < n; r++)
		{
			double		f = a[r * n + col] / a[col * n + col];

			for (int k = col; k < n; k++)
				a[r * n + k] -= f * a[col * n + k];
			b[r] -= f * b[col];
		}
	}
	for (int r = n - 1; r >= 0; r--)
	{
		double		s = b[r];

		for (int k = r + 1; k < n; k++)
			s -= a[r * n + k] * b[k];
		b[r] = s / a[r * n + r];
	}
	return true;
}

typedef struct Scored
{
	double		score;
	bool		y;
} Scored;

static int
scored_cmp(const void *a, const void *b)
{
	const Scored *x = a;
	const Scored *y = b;

	if (x->score != y->score)
		return x->score < y->score ? -1 : 1;
	return 0;
}

/* AUC by the rank sum, ties given their average rank */
static double
auc_of(Scored *s, int n)
{
	double		npos = 0,
				nneg = 0,
				ranksum = 0;
	int			i = 0;

	qsort(s, n, sizeof(Scored), scored_cmp);
	while (i < n)
	{
		int			j = i;
		double		avg;

		while (j + 1 < n && s[j + 1].score == s[i].score)
			j++;
		avg = (i + j) / 2.0 + 1.0;
		for (int k = i; k <= j; k++)
			if (s[k].y)
				ranksum += avg;
		i = j + 1;
	}
	for (int k = 0; k < n; k++)
	{
		if (s[k].y)
			npos++;
		else
			nneg++;
	}
	if (npos == 0 || nneg == 0)
		return NAN;
	return (ranksum - npos * (npos + 1) / 2.0) / (npos * nneg);
}

PG_FUNCTION_INFO_V1(cdp_train_offer);
Datum
cdp_train_offer(PG_FUNCTION_ARGS)
{
	char	   *name;
	CdpOffer   *o;
	int			d;
	int			n;
	double	   *X;
	bool	   *Y;
	int		   *perm;
	int			ntest,
				ntrain;
	double	   *mean,
			   *sd,
			   *w;
	int			conversions = 0;
	double		auc;
	bool		active;
	pg_prng_state st;
	uint64		seed = (uint64) cdp_decide_seed;
	Oid			t1[1] = {TEXTOID};
	Datum		a1[1];
	StringInfoData s;
	int			iter;
	MemoryContext caller = CurrentMemoryContext;
	Jsonb	   *res;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an offer's name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	SPI_connect();
	o = cdp_offer_by_name(name, false);
	d = o->nfeatures;
	if (d == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("offer \"%s\" has no features to train a model on", name),
				 errhint("Name numeric cdp.customers columns in create_offer's features.")));
	a1[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT features, outcome = 'converted' FROM cdp.offer_sends "
							  "WHERE offer = $1 AND NOT control AND outcome IS NOT NULL "
							  "AND features IS NOT NULL ORDER BY send_id",
							  1, t1, a1, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read the offer's sends");
	n = 0;
	X = palloc(sizeof(double) * Max((Size) SPI_processed * d, 1));
	Y = palloc(sizeof(bool) * Max(SPI_processed, 1));
	{
		bool	   *xnull = palloc(sizeof(bool) * Max((Size) SPI_processed * d, 1));

		mean = palloc0(sizeof(double) * d);
		sd = palloc0(sizeof(double) * d);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			Datum	   *elems;
			bool	   *nulls;
			int			ne;

			deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull)),
							  FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &ne);
			if (ne != d)
				continue;		/* scored before the features changed */
			for (int f = 0; f < d; f++)
			{
				xnull[n * d + f] = nulls[f];
				X[n * d + f] = nulls[f] ? 0 : DatumGetFloat8(elems[f]);
			}
			Y[n] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
			conversions += Y[n];
			n++;
		}
		if (n < 10 || conversions == 0 || conversions == n)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("offer \"%s\" has too few settled sends to train on", name),
					 errdetail("It has %d settled sends with features, %d of them converted; training needs 10 and both outcomes.",
							   n, conversions)));

		/* a seeded shuffle; the last share is held out */
		pg_prng_seed(&st, cdp_decide_mix(seed, 0, name, "train"));
		perm = palloc(sizeof(int) * n);
		for (int i = 0; i < n; i++)
			perm[i] = i;
		for (int i = n - 1; i > 0; i--)
		{
			int			j = (int) pg_prng_uint64_range(&st, 0, i);
			int			t = perm[i];

			perm[i] = perm[j];
			perm[j] = t;
		}
		ntest = (int) floor(n * cdp_decide_test_share);
		ntrain = n - ntest;

		/* standardize on the training rows; a missing value is the mean */
		for (int f = 0; f < d; f++)
		{
			int			cnt = 0;
			double		sum = 0,
						ss = 0;

			for (int i = 0; i < ntrain; i++)
				if (!xnull[perm[i] * d + f])
				{
					sum += X[perm[i] * d + f];
					cnt++;
				}
			mean[f] = cnt ? sum / cnt : 0;
			for (int i = 0; i < n; i++)
				if (xnull[i * d + f])
					X[i * d + f] = mean[f];
			for (int i = 0; i < ntrain; i++)
				ss += (X[perm[i] * d + f] - mean[f]) * (X[perm[i] * d + f] - mean[f]);
			sd[f] = ntrain > 1 ? sqrt(ss / (ntrain - 1)) : 0;
			if (sd[f] < 1e-12)
				sd[f] = 1;
		}
	}

	/* Newton's method on the penalized log-likelihood; w[0] the intercept */
	w = palloc0(sizeof(double) * (d + 1));
	{
		int			k = d + 1;
		double	   *H = palloc(sizeof(double) * k * k);
		double	   *g = palloc(sizeof(double) * k);
		double	   *z = palloc(sizeof(double) * k);

		for (iter = 0; iter < 100; iter++)
		{
			double		step = 0;

			CHECK_FOR_INTERRUPTS();
			memset(H, 0, sizeof(double) * k * k);
			memset(g, 0, sizeof(double) * k);
			for (int i = 0; i < ntrain; i++)
			{
				int			row = perm[i];
				double		eta = w[0];
				double		p,
							wt;

				z[0] = 1;
				for (int f = 0; f < d; f++)
				{
					z[f + 1] = (X[row * d + f] - mean[f]) / sd[f];
					eta += w[f + 1] * z[f + 1];
				}
				p = 1.0 / (1.0 + exp(-eta));
				wt = Max(p * (1 - p), 1e-10);
				for (int a = 0; a < k; a++)
				{
					g[a] += (Y[row] - p) * z[a];
					for (int b = a; b < k; b++)
						H[a * k + b] += wt * z[a] * z[b];
				}
			}
			for (int a = 0; a < k; a++)
				for (int b = 0; b < a; b++)
					H[a * k + b] = H[b * k + a];
			for (int a = 1; a < k; a++)
			{
				g[a] -= cdp_decide_l2 * w[a];
				H[a * k + a] += cdp_decide_l2;
			}
			if (!solve(H, g, k))
				break;
			for (int a = 0; a < k; a++)
			{
				w[a] += g[a];
				step = Max(step, fabs(g[a]));
			}
			if (step < 1e-9)
				break;
		}
	}

	/* back to the raw scale */
	{
		double	   *raw = palloc(sizeof(double) * d);
		double		b = w[0];
		Scored	   *sc = palloc(sizeof(Scored) * Max(ntest, 1));
		Oid			types[12] = {TEXTOID, TEXTARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8OID,
		FLOAT8OID, INT4OID, INT4OID, INT4OID, INT4OID, FLOAT8OID, INT8OID};
		Datum		v[13];
		char		nulls[13];
		Datum	   *wd = palloc(sizeof(Datum) * d);
		Datum	   *md = palloc(sizeof(Datum) * d);

		for (int f = 0; f < d; f++)
		{
			raw[f] = w[f + 1] / sd[f];
			b -= w[f + 1] * mean[f] / sd[f];
			wd[f] = Float8GetDatum(raw[f]);
			md[f] = Float8GetDatum(mean[f]);
		}
		for (int i = 0; i < ntest; i++)
		{
			int			row = perm[ntrain + i];
			double		eta = b;

			for (int f = 0; f < d; f++)
				eta += raw[f] * X[row * d + f];
			sc[i].score = eta;
			sc[i].y = Y[row];
		}
		auc = ntest > 0 ? auc_of(sc, ntest) : NAN;
		active = n >= cdp_decide_min_sends && conversions >= cdp_decide_min_conversions &&
			!isnan(auc) && auc >= cdp_decide_min_auc;

		memset(nulls, ' ', sizeof(nulls));
		v[0] = CStringGetTextDatum(name);
		v[1] = cdp_text_array(o->features, d);
		v[2] = PointerGetDatum(construct_array(wd, d, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		v[3] = PointerGetDatum(construct_array(md, d, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		v[4] = Float8GetDatum(b);
		v[5] = Float8GetDatum(auc);
		if (isnan(auc))
			nulls[5] = 'n';
		v[6] = Int32GetDatum(n);
		v[7] = Int32GetDatum(ntrain);
		v[8] = Int32GetDatum(ntest);
		v[9] = Int32GetDatum(conversions);
		v[10] = Float8GetDatum(cdp_decide_l2);
		v[11] = Int64GetDatum((int64) seed);
		{
			Oid			t13[13];

			memcpy(t13, types, sizeof(types));
			t13[12] = BOOLOID;
			v[12] = BoolGetDatum(active);
			if (SPI_execute_with_args("INSERT INTO cdp.offer_models AS m (offer, features, weights, means, "
									  "intercept, auc, n, n_train, n_test, conversions, l2, seed, active, trained_at) "
									  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, cdp.now()) "
									  "ON CONFLICT (offer) DO UPDATE SET features = excluded.features, "
									  "weights = excluded.weights, means = excluded.means, "
									  "intercept = excluded.intercept, auc = excluded.auc, n = excluded.n, "
									  "n_train = excluded.n_train, n_test = excluded.n_test, "
									  "conversions = excluded.conversions, l2 = excluded.l2, "
									  "seed = excluded.seed, active = excluded.active, "
									  "trained_at = excluded.trained_at",
									  13, t13, v, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "pg_cdp: could not store the model");
		}

		initStringInfo(&s);
		appendStringInfoString(&s, "{\"offer\": ");
		escape_json(&s, name);
		appendStringInfoString(&s, ", \"weights\": {");
		for (int f = 0; f < d; f++)
		{
			if (f > 0)
				appendStringInfoString(&s, ", ");
			escape_json(&s, o->features[f]);
			appendStringInfo(&s, ": %.6f", raw[f]);
		}
		appendStringInfo(&s, "}, \"intercept\": %.6f, \"auc\": ", b);
		if (isnan(auc))
			appendStringInfoString(&s, "null");
		else
			appendStringInfo(&s, "%.4f", auc);
		appendStringInfo(&s, ", \"n\": %d, \"n_train\": %d, \"n_test\": %d, \"conversions\": %d, "
						 "\"iterations\": %d, \"l2\": %g, \"seed\": " UINT64_FORMAT ", \"active\": %s, "
						 "\"rule\": \"model once n >= %d, conversions >= %d and auc >= %g\"}",
						 n, ntrain, ntest, conversions, iter + 1, cdp_decide_l2, seed,
						 active ? "true" : "false", cdp_decide_min_sends,
						 cdp_decide_min_conversions, cdp_decide_min_auc);
	}
	MemoryContextSwitchTo(caller);
	res = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data)));
	SPI_finish();
	PG_RETURN_JSONB_P(res);
}
