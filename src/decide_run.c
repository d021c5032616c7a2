/*-------------------------------------------------------------------------
 *
 * decide_run.c
 *	  Arbitration: a whole audience scored against a set of offers, at most
 *	  one offer per person, capacities never exceeded, a control share
 *	  held out, the sends enqueued at their chosen times.
 *
 * Everything about the audience is read set-based, a few statements per
 * offer and per channel, into arrays indexed by the person's place in the
 * audience (sorted by profile id, so a list of ids maps onto it by a
 * merge): segment memberships, the offers' conditions (one statement per
 * owner, as that owner), past sends (cooldown, lifetime cap), the consent
 * and address each channel needs, delivery feedback.  Then, in C, each
 * person's candidates are scored (model or seeded Thompson draw, times
 * value), each with the best allowed channel and send time (decide.c's
 * rules), and the candidates of the whole audience are taken greedily by
 * score: a person gets the first candidate whose offer still has capacity
 * on its channel for the day of the send.  Greedy is not optimal (a high
 * scorer can take the last place of an offer that a person with no other
 * option needed); the README states the gap on a case solved exactly.
 * The channel's per-person caps are left to the claim, which defers.
 *
 * Capacity rows of the offers (today and tomorrow, business days) are
 * locked before the audience is read, so two runs at once take turns:
 * the second reads the counts the first committed, and a run that
 * repeats a run key skips who that run already decided.  Sends carry the
 * dedupe key campaign/<campaign>/<run_key>/<profile_id>, and
 * cdp.offer_sends has one row per person per run.
 *
 * Controls (campaign.c's sticky rule: a hash of the campaign and the
 * person, below the holdout percentage) get no message and use no
 * capacity; their best offer is recorded as a control send, whose
 * conversions campaign_results compares with the treated.
 *
 * cdp.run_campaign hands this file the runs of campaigns that have offers
 * (cdp.campaign_offers), through the runner registered at init;
 * cdp.arbitrate_offers runs the same without a campaign object.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/date.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "campaign.h"
#include "clock.h"
#include "decide.h"
#include "outbox.h"
#include "segment.h"
#include "traits.h"
#include "util.h"

/* why a person may not have an offer */
enum
{
	RS_OK = 0,
	RS_NOT_VALID,
	RS_INELIGIBLE,
	RS_CAP,
	RS_COOLDOWN,
	RS_NO_CHANNEL,
	RS_NREASONS
};

static const char *const reason_names[RS_NREASONS] = {
	"ok", "not_valid", "ineligible", "cap", "cooldown", "no_channel"
};

/* why a person may not be sent through a channel */
enum
{
	C_OK = 0,
	C_NO_CONSENT,
	C_NO_ADDRESS,
	C_INVALID_TEMPLATE,
	C_NREASONS
};

static const char *const chan_reason_names[C_NREASONS] = {
	"ok", "no_consent", "no_address", "invalid_template"
};

typedef struct Cand
{
	float		score;
	int32		person;
	int16		offer;
	int8		chan;			/* into the offer's channels */
	int8		day;			/* 0 today, 1 tomorrow */
} Cand;

typedef struct Run
{
	MemoryContext cxt;
	int			noffers;
	CdpOffer  **offers;
	int			nchans;			/* distinct channels of the offers */
	char	  **chans;
	const CdpChannel **chdefs;
	int		  **offer_chan;		/* offer, its channel k -> into chans */
	int			nfeat;
	char	  **feats;
	int		  **offer_feat;		/* offer, feature f -> into feats */
	/* the audience */
	int64		n;
	int64	   *pids;
	int16	   *zone;
	int			nzones;
	char	  **zones;
	double	   *x;				/* n x nfeat */
	bool	   *xnull;
	uint8	   *reason;			/* n x noffers */
	uint8	   *chan_reason;	/* n x nchans */
	float	   *delivered;		/* n x nchans, or NULL without feedback */
	float	   *engaged;
	int32	   *hist;			/* person -> into hours, -1 none */
	int			nhours;
	double	   *hours;			/* 24 per person with history */
	double		pop_hours[24];
	double	   *pop_delivered;	/* per channel */
	double	   *pop_engaged;
	/* capacity left: offer x channel x day, -1 unlimited */
	int64	   *left;
	int64	   *cuts;
} Run;

#define CAP(r, o, k, d) ((r)->left[((o) * 16 + (k)) * 2 + (d)])

static int64
person_index(Run *r, int64 pid)
{
	int64		lo = 0,
				hi = r->n - 1;

	while (lo <= hi)
	{
		int64		mid = (lo + hi) / 2;

		if (r->pids[mid] == pid)
			return mid;
		if (r->pids[mid] < pid)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* the ids a statement returns (first column, int8, sorted), through a cursor */
static int64 *
fetch_ids(const char *sql, int nargs, Oid *types, Datum *args, int64 *count)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);
	Portal		portal;
	int64		n = 0,
				cap = 1024;
	int64	   *ids = palloc(sizeof(int64) * cap);

	if (plan == NULL)
		elog(ERROR, "pg_cdp: could not prepare the audience's statement: %s",
			 SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, 50000);
		if (SPI_processed == 0)
			break;
		if (n + (int64) SPI_processed > cap)
		{
			while (n + (int64) SPI_processed > cap)
				cap *= 2;
			ids = repalloc_huge(ids, sizeof(int64) * cap);
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			ids[n++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	*count = n;
	return ids;
}

/* marks code for the audience's persons not in ids (sorted), where still ok */
static void
mark_absent(uint8 *codes, int stride, int col, Run *r, int64 *ids, int64 nids, uint8 code)
{
	int64		j = 0;

	for (int64 i = 0; i < r->n; i++)
	{
		while (j < nids && ids[j] < r->pids[i])
			j++;
		if ((j >= nids || ids[j] != r->pids[i]) && codes[i * stride + col] == 0)
			codes[i * stride + col] = code;
	}
}

static void
read_audience(Run *r, int32 segment_id, const char *run)
{
	StringInfoData sql;
	SPIPlanPtr	plan;
	Portal		portal;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		args[2];
	int64		cap = 1024;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT m.profile_id, cdp.recipient_zone(p.traits ->> 'timezone')");
	for (int f = 0; f < r->nfeat; f++)
		appendStringInfo(&sql, ", c.%s::float8", quote_identifier(r->feats[f]));
	appendStringInfoString(&sql, " FROM cdp.segment_members m JOIN cdp.profiles p ON p.profile_id = m.profile_id");
	if (r->nfeat > 0)
		appendStringInfoString(&sql, " LEFT JOIN cdp.customers c ON c.profile_id = m.profile_id");
	appendStringInfoString(&sql, " WHERE m.segment_id = $1 AND NOT EXISTS (SELECT 1 FROM cdp.offer_sends s "
						   "WHERE s.profile_id = m.profile_id AND s.run = $2) ORDER BY m.profile_id");
	plan = SPI_prepare(sql.data, 2, types);
	if (plan == NULL)
		elog(ERROR, "pg_cdp: could not prepare the audience: %s", SPI_result_code_string(SPI_result));
	args[0] = Int32GetDatum(segment_id);
	args[1] = CStringGetTextDatum(run);
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	r->pids = palloc(sizeof(int64) * cap);
	r->zone = palloc(sizeof(int16) * cap);
	r->x = palloc(sizeof(double) * cap * Max(r->nfeat, 1));
	r->xnull = palloc(sizeof(bool) * cap * Max(r->nfeat, 1));
	r->zones = palloc(sizeof(char *) * 256);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, 20000);
		if (SPI_processed == 0)
			break;
		if (r->n + (int64) SPI_processed > cap)
		{
			while (r->n + (int64) SPI_processed > cap)
				cap *= 2;
			r->pids = repalloc_huge(r->pids, sizeof(int64) * cap);
			r->zone = repalloc_huge(r->zone, sizeof(int16) * cap);
			r->x = repalloc_huge(r->x, sizeof(double) * cap * Max(r->nfeat, 1));
			r->xnull = repalloc_huge(r->xnull, sizeof(bool) * cap * Max(r->nfeat, 1));
		}
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		k = r->n++;
			Datum		zd = SPI_getbinval(tup, desc, 2, &isnull);
			text	   *zt = DatumGetTextPP(zd);
			int			z;

			r->pids[k] = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			for (z = 0; z < r->nzones; z++)
				if (strlen(r->zones[z]) == VARSIZE_ANY_EXHDR(zt) &&
					memcmp(r->zones[z], VARDATA_ANY(zt), VARSIZE_ANY_EXHDR(zt)) == 0)
					break;
			if (z == r->nzones)
			{
				if (r->nzones == 256)
					z = 0;		/* more zones than that: the first one's hours */
				else
				{
					MemoryContext old = MemoryContextSwitchTo(r->cxt);

					r->zones[r->nzones++] = text_to_cstring(zt);
					MemoryContextSwitchTo(old);
				}
			}
			r->zone[k] = z;
			for (int f = 0; f < r->nfeat; f++)
			{
				Datum		d = SPI_getbinval(tup, desc, f + 3, &isnull);

				r->xnull[k * r->nfeat + f] = isnull;
				r->x[k * r->nfeat + f] = isnull ? 0 : DatumGetFloat8(d);
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
}

/* eligibility, history and channel policy of the whole audience */
static void
read_eligibility(Run *r, int32 segment_id, TimestampTz now)
{
	Datum		args[4];
	Oid			types[4] = {INT4OID, TEXTOID, TEXTOID, TEXTOID};
	int64		nids;
	int64	   *ids;

	r->reason = MemoryContextAllocHuge(CurrentMemoryContext, Max(r->n, 1) * r->noffers);
	memset(r->reason, 0, Max(r->n, 1) * r->noffers);
	r->chan_reason = MemoryContextAllocHuge(CurrentMemoryContext, Max(r->n, 1) * r->nchans);
	memset(r->chan_reason, 0, Max(r->n, 1) * r->nchans);
	args[0] = Int32GetDatum(segment_id);
	for (int j = 0; j < r->noffers; j++)
	{
		CdpOffer   *o = r->offers[j];

		if ((o->has_from && now < o->valid_from) || (o->has_until && now >= o->valid_until))
		{
			for (int64 i = 0; i < r->n; i++)
				r->reason[i * r->noffers + j] = RS_NOT_VALID;
			continue;
		}
		for (int s = 0; s < o->nsegments; s++)
		{
			SegmentDef *sd = cdp_segment_by_name(o->segments[s], true);
			Datum		a[1];
			Oid			t[1] = {INT4OID};

			if (sd == NULL)
			{
				nids = 0;
				ids = NULL;
			}
			else
			{
				a[0] = Int32GetDatum(sd->id);
				ids = fetch_ids("SELECT profile_id FROM cdp.segment_members WHERE segment_id = $1 "
								"ORDER BY profile_id", 1, t, a, &nids);
			}
			mark_absent(r->reason, r->noffers, j, r, ids, nids, RS_INELIGIBLE);
		}
	}

	/*
	 * Conditions: one statement per owner over the audience, each offer's
	 * condition a column, run as that owner.  A statement that fails
	 * makes its offers ineligible for the run, with a warning.
	 */
	{
		bool	   *done = palloc0(sizeof(bool) * r->noffers);

		for (int j = 0; j < r->noffers; j++)
		{
			Oid			owner = r->offers[j]->owner;
			StringInfoData sql;
			int		   *cols = palloc(sizeof(int) * r->noffers);
			int			ncols = 0;
			Oid			t[1] = {INT4OID};
			char	   *why = NULL;
			SPIPlanPtr	plan;

			if (done[j] || r->offers[j]->condition == NULL)
				continue;
			initStringInfo(&sql);
			appendStringInfoString(&sql, "SELECT c.profile_id");
			for (int k = j; k < r->noffers; k++)
				if (!done[k] && r->offers[k]->condition && r->offers[k]->owner == owner)
				{
					appendStringInfo(&sql, ", (%s)::boolean", r->offers[k]->condition);
					cols[ncols++] = k;
					done[k] = true;
				}
			appendStringInfoString(&sql, " FROM cdp.segment_members m JOIN cdp.customers c "
								   "ON c.profile_id = m.profile_id WHERE m.segment_id = $1 ORDER BY 1");
			plan = cdp_decide_prepare_guarded(sql.data, 1, t, &why);
			if (plan)
			{
				ErrorData  *err = cdp_exec_guarded(plan, args, NULL, owner, SPI_OK_SELECT,
												   "an offer's condition");

				if (err)
					why = err->message;
			}
			if (why)
			{
				for (int q = 0; q < ncols; q++)
				{
					ereport(WARNING,
							(errcode(ERRCODE_WARNING),
							 errmsg("the condition of offer \"%s\" failed: %s",
									r->offers[cols[q]]->name, why),
							 errdetail("Nobody gets the offer in this run.")));
					for (int64 i = 0; i < r->n; i++)
						if (r->reason[i * r->noffers + cols[q]] == RS_OK)
							r->reason[i * r->noffers + cols[q]] = RS_INELIGIBLE;
				}
			}
			else
			{
				uint64		k = 0;
				SPITupleTable *tt = SPI_tuptable;
				uint64		nrows = SPI_processed;

				/* both sorted by profile id: a merge */
				for (int64 i = 0; i < r->n; i++)
				{
					bool		isnull;

					if ((i & 0xFFFF) == 0)
						CHECK_FOR_INTERRUPTS();
					while (k < nrows &&
						   DatumGetInt64(SPI_getbinval(tt->vals[k], tt->tupdesc, 1, &isnull)) < r->pids[i])
						k++;
					for (int q = 0; q < ncols; q++)
					{
						uint8	   *code = &r->reason[i * r->noffers + cols[q]];
						bool		ok = false;

						if (k < nrows &&
							DatumGetInt64(SPI_getbinval(tt->vals[k], tt->tupdesc, 1, &isnull)) == r->pids[i])
						{
							Datum		d = SPI_getbinval(tt->vals[k], tt->tupdesc, q + 2, &isnull);

							ok = !isnull && DatumGetBool(d);
						}
						if (!ok && *code == RS_OK)
							*code = RS_INELIGIBLE;
					}
				}
				SPI_freetuptable(tt);
			}
			if (plan)
				SPI_freeplan(plan);
		}
	}

	/* history: lifetime caps and cooldowns */
	{
		char	  **names = palloc(sizeof(char *) * r->noffers);
		Oid			t[2] = {INT4OID, TEXTARRAYOID};
		Datum		a[2];

		for (int j = 0; j < r->noffers; j++)
			names[j] = r->offers[j]->name;
		a[0] = Int32GetDatum(segment_id);
		a[1] = cdp_text_array(names, r->noffers);
		if (SPI_execute_with_args("SELECT s.profile_id, s.offer, count(*), max(s.sent_at) "
								  "FROM cdp.offer_sends s JOIN cdp.segment_members m "
								  "ON m.profile_id = s.profile_id AND m.segment_id = $1 "
								  "WHERE s.offer = ANY($2) AND NOT s.control GROUP BY 1, 2",
								  2, t, a, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not read the audience's past sends");
		for (uint64 k = 0; k < SPI_processed; k++)
		{
			HeapTuple	tup = SPI_tuptable->vals[k];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		i = person_index(r, DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)));
			char	   *offer = SPI_getvalue(tup, desc, 2);
			int64		cnt = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			TimestampTz last = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));

			if (i < 0)
				continue;
			for (int j = 0; j < r->noffers; j++)
			{
				CdpOffer   *o = r->offers[j];
				uint8	   *code = &r->reason[i * r->noffers + j];

				if (strcmp(o->name, offer) != 0 || *code != RS_OK)
					continue;
				if (o->lifetime_cap > 0 && cnt >= o->lifetime_cap)
					*code = RS_CAP;
				else if (o->cooldown > 0 && now < last + o->cooldown)
					*code = RS_COOLDOWN;
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}

	/* channels: consent and a usable address, as policy.h's rule reads them */
	for (int k = 0; k < r->nchans; k++)
	{
		const CdpChannel *c = r->chdefs[k];

		if (c == NULL)
			continue;
		if (c->requires_consent)
		{
			args[1] = CStringGetTextDatum(c->purpose);
			ids = fetch_ids("SELECT m.profile_id FROM cdp.segment_members m "
							"JOIN cdp.consents k ON k.profile_id = m.profile_id AND k.purpose = $2 "
							"WHERE m.segment_id = $1 AND k.granted ORDER BY 1", 2, types, args, &nids);
			mark_absent(r->chan_reason, r->nchans, k, r, ids, nids, C_NO_CONSENT);
		}
		if (c->address_type)
		{
			args[1] = CStringGetTextDatum(c->address_type);
			ids = fetch_ids("SELECT m.profile_id FROM cdp.segment_members m WHERE m.segment_id = $1 "
							"AND m.profile_id IN (SELECT i.profile_id FROM cdp.identities i "
							"WHERE i.type = $2 AND NOT EXISTS (SELECT 1 FROM cdp.suppressions x "
							"WHERE x.address = i.value AND x.address_type = i.type)) ORDER BY 1",
							2, types, args, &nids);
			mark_absent(r->chan_reason, r->nchans, k, r, ids, nids, C_NO_ADDRESS);
		}
	}
}

/* delivery feedback of the audience: per channel and by local hour */
static void
read_engagement(Run *r, int32 segment_id, TimestampTz now)
{
	Oid			types[4] = {INT4OID, TIMESTAMPTZOID, INTERVALOID, TEXTARRAYOID};
	Datum		args[4];
	Interval   *iv = palloc0(sizeof(Interval));
	bool		isnull;

	iv->day = cdp_decide_engagement_days;
	args[0] = Int32GetDatum(segment_id);
	args[1] = TimestampTzGetDatum(now);
	args[2] = IntervalPGetDatum(iv);
	args[3] = cdp_text_array(r->chans, r->nchans);
	r->pop_delivered = palloc0(sizeof(double) * Max(r->nchans, 1));
	r->pop_engaged = palloc0(sizeof(double) * Max(r->nchans, 1));
	if (SPI_execute("SELECT channel, hour, delivered::float8, engaged::float8 "
					"FROM cdp.engagement_population", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read the population's engagement");
	for (uint64 k = 0; k < SPI_processed; k++)
	{
		HeapTuple	tup = SPI_tuptable->vals[k];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *ch = SPI_getvalue(tup, desc, 1);
		int			h = DatumGetInt16(SPI_getbinval(tup, desc, 2, &isnull));
		double		dl = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
		double		en = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));

		if (h >= 0 && h < 24)
			r->pop_hours[h] += en;
		else
			for (int c = 0; c < r->nchans; c++)
				if (strcmp(r->chans[c], ch) == 0)
				{
					r->pop_delivered[c] = dl;
					r->pop_engaged[c] = en;
				}
	}
	SPI_freetuptable(SPI_tuptable);

	if (SPI_execute_with_args("SELECT x.profile_id, x.channel, sum(x.d)::float8, sum(x.e)::float8 FROM ("
							  "SELECT h.profile_id, h.channel, count(*) AS d, 0 AS e FROM cdp.outbox h "
							  "JOIN cdp.segment_members m ON m.profile_id = h.profile_id AND m.segment_id = $1 "
							  "WHERE h.delivered_at >= $2 - $3 AND h.channel = ANY($4) GROUP BY 1, 2 "
							  "UNION ALL SELECT e.profile_id, e.properties ->> 'channel', 0, "
							  "count(DISTINCT e.properties ->> 'outbox_id') FROM cdp.events e "
							  "JOIN cdp.segment_members m ON m.profile_id = e.profile_id AND m.segment_id = $1 "
							  "WHERE e.event IN " CDP_ENGAGED_EVENTS " AND e.occurred_at >= $2 - $3 "
							  "AND e.occurred_at < $2 AND e.properties ->> 'channel' = ANY($4) GROUP BY 1, 2) x "
							  "GROUP BY 1, 2", 4, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read the audience's engagement");
	if (SPI_processed > 0)
	{
		Size		sz = sizeof(float) * Max(r->n, 1) * r->nchans;

		r->delivered = MemoryContextAllocHuge(CurrentMemoryContext, sz);
		r->engaged = MemoryContextAllocHuge(CurrentMemoryContext, sz);
		memset(r->delivered, 0, sz);
		memset(r->engaged, 0, sz);
		for (uint64 k = 0; k < SPI_processed; k++)
		{
			HeapTuple	tup = SPI_tuptable->vals[k];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			int64		i = person_index(r, DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)));
			char	   *ch = SPI_getvalue(tup, desc, 2);

			if (i < 0)
				continue;
			for (int c = 0; c < r->nchans; c++)
				if (strcmp(r->chans[c], ch) == 0)
				{
					r->delivered[i * r->nchans + c] = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
					r->engaged[i * r->nchans + c] = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));
				}
		}
	}
	SPI_freetuptable(SPI_tuptable);

	r->hist = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * Max(r->n, 1));
	for (int64 i = 0; i < r->n; i++)
		r->hist[i] = -1;
	if (SPI_execute_with_args("SELECT e.profile_id, extract(hour FROM e.occurred_at AT TIME ZONE "
							  "cdp.recipient_zone(p.traits ->> 'timezone'))::int, count(*)::float8 "
							  "FROM cdp.events e JOIN cdp.segment_members m ON m.profile_id = e.profile_id "
							  "AND m.segment_id = $1 JOIN cdp.profiles p ON p.profile_id = e.profile_id "
							  "WHERE e.event IN " CDP_ENGAGED_EVENTS " AND e.occurred_at >= $2 - $3 "
							  "AND e.occurred_at < $2 AND $4 IS NOT NULL GROUP BY 1, 2",
							  4, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read the audience's engagement hours");
	r->hours = palloc0(sizeof(double) * 24 * Max(SPI_processed, 1));
	for (uint64 k = 0; k < SPI_processed; k++)
	{
		HeapTuple	tup = SPI_tuptable->vals[k];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		int64		i = person_index(r, DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)));
		int			h = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));

		if (i < 0 || h < 0 || h > 23)
			continue;
		if (r->hist[i] < 0)
			r->hist[i] = r->nhours++;
		r->hours[r->hist[i] * 24 + h] += DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
}

/* stable LSD radix sort of candidates by score, highest first */
static void
sort_candidates(Cand *c, int64 n)
{
	Cand	   *tmp;
	int64	   *count;

	if (n < 2)
		return;
	tmp = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(Cand) * n);
	count = palloc(sizeof(int64) * 65536);
	for (int pass = 0; pass < 2; pass++)
	{
		Cand	   *from = pass == 0 ? c : tmp;
		Cand	   *to = pass == 0 ? tmp : c;
		int64		sum = 0;

		memset(count, 0, sizeof(int64) * 65536);
		for (int64 i = 0; i < n; i++)
		{
			uint32		bits;

			memcpy(&bits, &from[i].score, sizeof(bits));
			bits = ~bits;		/* non-negative floats: descending */
			count[(bits >> (16 * pass)) & 0xFFFF]++;
		}
		for (int b = 0; b < 65536; b++)
		{
			int64		t = count[b];

			count[b] = sum;
			sum += t;
		}
		for (int64 i = 0; i < n; i++)
		{
			uint32		bits;

			memcpy(&bits, &from[i].score, sizeof(bits));
			bits = ~bits;
			to[count[(bits >> (16 * pass)) & 0xFFFF]++] = from[i];
		}
	}
	pfree(tmp);
}

static void
json_counts(StringInfo s, const char *const *names, const int64 *counts, int n, bool skip_first)
{
	bool		first = true;

	appendStringInfoChar(s, '{');
	for (int i = skip_first ? 1 : 0; i < n; i++)
	{
		if (counts[i] == 0)
			continue;
		if (!first)
			appendStringInfoString(s, ", ");
		escape_json(s, names[i]);
		appendStringInfo(s, ": " INT64_FORMAT, counts[i]);
		first = false;
	}
	appendStringInfoChar(s, '}');
}

/*
 * The campaign's control group, sticky per person as campaign.c keeps it:
 * hashtextextended(campaign || '/' || profile_id, 0) mod 100 below the
 * holdout (the default collation is deterministic, so that hash is
 * hash_bytes_extended over the text).
 */
static bool
held_out_of(const char *campaign, int64 profile_id, int holdout)
{
	char	   *key = psprintf("%s/" INT64_FORMAT, campaign, profile_id);
	int64		h = (int64) hash_bytes_extended((const unsigned char *) key, strlen(key), 0);

	pfree(key);
	return ((h % 100) + 100) % 100 < holdout;
}

/*
 * cdp_arbitrate decides a run; the caller is connected to SPI.  Returns
 * the run's summary; the counts go to the pointers given.
 */
Jsonb *
cdp_arbitrate(const char *campaign, const char *segment, char **offer_names, int noffer_names,
			  const char *run_key, int holdout, int64 *audience, int64 *enqueued,
			  int64 *held_out, Jsonb **suppressed)
{
	static SPIPlanPtr write_plan = NULL;
	Run			r;
	CdpOfferCache *cache;
	SegmentDef *seg;
	int32		segment_id;
	TimestampTz now = cdp_now();
	DateADT		today = cdp_decide_business_day(now);
	char	   *run;
	uint64		seed = cdp_decide_seed ? (uint64) cdp_decide_seed :
		pg_prng_uint64(&pg_global_prng_state);
	Cand	   *cands;
	int64		ncands = 0;
	int32	   *assigned;		/* person -> candidate index, -1 none */
	int32	   *best_control;
	int64		reasons[RS_NREASONS] = {0};
	int64		chan_reasons[C_NREASONS] = {0};
	int64		n_enqueued = 0,
				n_control = 0,
				n_none = 0;
	double		expected = 0;
	TimestampTz *zone_send;		/* zone x channel -> send time without own history */
	int8	   *zone_day;		/* and its day: 0 today, 1 tomorrow */
	StringInfoData s;
	MemoryContext old;

	if (campaign == NULL || campaign[0] == '\0' || strlen(campaign) > 200 || strchr(campaign, '/'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a campaign's name must be 1 to 200 bytes without \"/\"")));
	if (holdout < 0 || holdout > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("holdout must be a percentage from 0 to 100")));
	if (noffer_names == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("campaign \"%s\" has no offers to arbitrate", campaign),
				 errhint("Name at least one offer of cdp.offers.")));
	if (noffer_names > 32000)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many offers in one run")));
	cdp_segments_load();
	seg = cdp_segment_by_name(segment, true);
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("segment \"%s\" does not exist", segment),
				 errhint("cdp.segments lists the segments.")));
	segment_id = seg->id;
	if (run_key == NULL)
		run_key = DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(today)));
	else if (run_key[0] == '\0' || strlen(run_key) > 100 || strchr(run_key, '/') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a run key is 1 to 100 bytes without \"/\""),
				 errdetail("Dedupe keys campaign/<campaign>/<run key>/<profile id> are read from the right."),
				 errhint("Use another separator, as in 2026-w49 or 2026-12-07.")));
	run = psprintf("%s/%s", campaign, run_key);

	memset(&r, 0, sizeof(r));
	r.cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_cdp arbitration", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(r.cxt);
	cache = cdp_offers_load();
	r.noffers = noffer_names;
	r.offers = palloc(sizeof(CdpOffer *) * noffer_names);
	r.chans = palloc(sizeof(char *) * 16 * noffer_names);
	r.chdefs = palloc(sizeof(CdpChannel *) * 16 * noffer_names);
	r.offer_chan = palloc(sizeof(int *) * noffer_names);
	r.feats = palloc(sizeof(char *) * Max(cache->nfeatures, 1));
	r.offer_feat = palloc(sizeof(int *) * noffer_names);
	for (int j = 0; j < noffer_names; j++)
	{
		CdpOffer   *o;

		if (offer_names[j] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("offers must not contain null")));
		o = cdp_offer_by_name(offer_names[j], false);
		for (int i = 0; i < j; i++)
			if (r.offers[i] == o)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("offer \"%s\" is named twice", o->name)));
		if (o->nchannels > 16)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("offer \"%s\" has more than 16 channels", o->name)));
		r.offers[j] = o;
		r.offer_chan[j] = palloc(sizeof(int) * Max(o->nchannels, 1));
		for (int k = 0; k < o->nchannels; k++)
		{
			int			c;

			for (c = 0; c < r.nchans; c++)
				if (strcmp(r.chans[c], o->channels[k].channel) == 0)
					break;
			if (c == r.nchans)
			{
				r.chans[c] = o->channels[k].channel;
				r.chdefs[c] = cdp_outbox_channel(o->channels[k].channel);
				r.nchans++;
			}
			r.offer_chan[j][k] = c;
		}
		r.offer_feat[j] = palloc(sizeof(int) * Max(o->nfeatures, 1));
		for (int f = 0; f < o->nfeatures; f++)
		{
			int			g;

			for (g = 0; g < r.nfeat; g++)
				if (strcmp(r.feats[g], o->features[f]) == 0)
					break;
			if (g == r.nfeat)
				r.feats[r.nfeat++] = o->features[f];
			r.offer_feat[j][f] = g;
		}
	}

	/* the run, and the capacities, locked in one order by every run */
	{
		Oid			t[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, INT4OID, TIMESTAMPTZOID};
		Datum		a[6];

		a[0] = CStringGetTextDatum(run);
		a[1] = CStringGetTextDatum(campaign);
		a[2] = CStringGetTextDatum(segment);
		a[3] = cdp_text_array(offer_names, noffer_names);
		a[4] = Int32GetDatum(holdout);
		a[5] = TimestampTzGetDatum(now);
		if (SPI_execute_with_args("INSERT INTO cdp.offer_runs (run, campaign, segment, offers, holdout, started_at) "
								  "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run) DO UPDATE "
								  "SET started_at = excluded.started_at",
								  6, t, a, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "pg_cdp: could not record the run");
	}
	r.left = palloc(sizeof(int64) * noffer_names * 16 * 2);
	r.cuts = palloc0(sizeof(int64) * noffer_names * 16);
	{
		int			nlim = 0;
		char	  **lo = palloc(sizeof(char *) * noffer_names * 16);
		char	  **lc = palloc(sizeof(char *) * noffer_names * 16);

		for (int j = 0; j < noffer_names; j++)
			for (int k = 0; k < 16; k++)
			{
				CAP(&r, j, k, 0) = -1;
				CAP(&r, j, k, 1) = -1;
				if (k < r.offers[j]->nchannels && r.offers[j]->channels[k].capacity >= 0)
				{
					lo[nlim] = r.offers[j]->name;
					lc[nlim] = r.offers[j]->channels[k].channel;
					nlim++;
					CAP(&r, j, k, 0) = r.offers[j]->channels[k].capacity;
					CAP(&r, j, k, 1) = r.offers[j]->channels[k].capacity;
				}
			}
		if (nlim > 0)
		{
			Oid			t[3] = {TEXTARRAYOID, TEXTARRAYOID, DATEOID};
			Datum		a[3];

			a[0] = cdp_text_array(lo, nlim);
			a[1] = cdp_text_array(lc, nlim);
			a[2] = DateADTGetDatum(today);
			if (SPI_execute_with_args("INSERT INTO cdp.offer_capacity (offer, channel, day) "
									  "SELECT o, c, d FROM unnest($1::text[], $2::text[]) AS x(o, c), "
									  "(VALUES ($3::date), ($3::date + 1)) AS y(d) "
									  "ORDER BY o, c, d ON CONFLICT DO NOTHING",
									  3, t, a, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "pg_cdp: could not prepare the capacity counts");
			if (SPI_execute_with_args("SELECT k.offer, k.channel, k.day - $3, k.used FROM cdp.offer_capacity k "
									  "JOIN unnest($1::text[], $2::text[]) AS x(o, c) "
									  "ON k.offer = x.o AND k.channel = x.c "
									  "WHERE k.day IN ($3, $3 + 1) ORDER BY k.offer, k.channel, k.day "
									  "FOR UPDATE OF k",
									  3, t, a, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "pg_cdp: could not lock the capacity counts");
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				bool		isnull;
				char	   *on = SPI_getvalue(tup, desc, 1);
				char	   *cn = SPI_getvalue(tup, desc, 2);
				int			d = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
				int64		used = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));

				for (int j = 0; j < noffer_names; j++)
					if (strcmp(r.offers[j]->name, on) == 0)
						for (int k = 0; k < r.offers[j]->nchannels; k++)
							if (strcmp(r.offers[j]->channels[k].channel, cn) == 0)
								CAP(&r, j, k, d) = Max(r.offers[j]->channels[k].capacity - used, 0);
			}
			SPI_freetuptable(SPI_tuptable);
		}
	}

	read_audience(&r, segment_id, run);
	read_eligibility(&r, segment_id, now);
	read_engagement(&r, segment_id, now);

	/* templates that went away make their channel unusable */
	{
		bool	   *tpl_ok = palloc0(sizeof(bool) * noffer_names * 16);

		if (SPI_execute("SELECT name, channel FROM cdp.templates", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not read the templates");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *tn = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			char	   *tc = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

			for (int j = 0; j < noffer_names; j++)
				for (int k = 0; k < r.offers[j]->nchannels; k++)
					if (strcmp(r.offers[j]->channels[k].template, tn) == 0 &&
						strcmp(r.offers[j]->channels[k].channel, tc) == 0 &&
						r.chdefs[r.offer_chan[j][k]] != NULL)
						tpl_ok[j * 16 + k] = true;
		}
		SPI_freetuptable(SPI_tuptable);
		/* kept as "capacity 0 with a reason": the channel is never chosen */
		for (int j = 0; j < noffer_names; j++)
			for (int k = 0; k < r.offers[j]->nchannels; k++)
				if (!tpl_ok[j * 16 + k])
				{
					CAP(&r, j, k, 0) = -2;
					CAP(&r, j, k, 1) = -2;
				}
	}

	/* send times of people without history of their own, per zone and channel */
	zone_send = palloc(sizeof(TimestampTz) * Max(r.nzones, 1) * Max(r.nchans, 1));
	zone_day = palloc(sizeof(int8) * Max(r.nzones, 1) * Max(r.nchans, 1));
	for (int z = 0; z < r.nzones; z++)
		for (int c = 0; c < r.nchans; c++)
		{
			zone_send[z * r.nchans + c] = cdp_decide_send_time(now, r.zones[z], r.chdefs[c], NULL,
															   r.pop_hours, NULL);
			zone_day[z * r.nchans + c] =
				cdp_decide_business_day(zone_send[z * r.nchans + c]) == today ? 0 : 1;
		}

	/* candidates: per person, each allowed offer with its best channel */
	cands = MemoryContextAllocHuge(r.cxt, sizeof(Cand) * Max(r.n, 1) * noffer_names);
	assigned = MemoryContextAllocHuge(r.cxt, sizeof(int32) * Max(r.n, 1));
	best_control = MemoryContextAllocHuge(r.cxt, sizeof(int32) * Max(r.n, 1));
	{
		double	   *x = palloc(sizeof(double) * Max(cache->nfeatures, 1));
		bool	   *xn = palloc(sizeof(bool) * Max(cache->nfeatures, 1));
		double	   *alpha = palloc(sizeof(double) * noffer_names);
		double	   *beta = palloc(sizeof(double) * noffer_names);
		TimestampTz *own_send = palloc(sizeof(TimestampTz) * Max(r.nchans, 1));
		int8	   *own_day = palloc(sizeof(int8) * Max(r.nchans, 1));

		for (int j = 0; j < noffer_names; j++)
			alpha[j] = beta[j] = 1;
		if (SPI_execute("SELECT offer, alpha, beta FROM cdp.offer_arms", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not read the bandits");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *on = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			bool		isnull;

			for (int j = 0; j < noffer_names; j++)
				if (strcmp(r.offers[j]->name, on) == 0)
				{
					alpha[j] = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
					beta[j] = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
				}
		}
		SPI_freetuptable(SPI_tuptable);

		for (int64 i = 0; i < r.n; i++)
		{
			bool		control = holdout > 0 && held_out_of(campaign, r.pids[i], holdout);
			int64		first = ncands;
			float		best = -1;

			if ((i & 0xFFFF) == 0)
				CHECK_FOR_INTERRUPTS();
			assigned[i] = -1;
			best_control[i] = -1;
			for (int c = 0; c < r.nchans; c++)
			{
				if (r.hist[i] >= 0)
				{
					own_send[c] = cdp_decide_send_time(now, r.zones[r.zone[i]], r.chdefs[c],
													   &r.hours[r.hist[i] * 24], r.pop_hours, NULL);
					own_day[c] = cdp_decide_business_day(own_send[c]) == today ? 0 : 1;
				}
				else
				{
					own_send[c] = zone_send[r.zone[i] * r.nchans + c];
					own_day[c] = zone_day[r.zone[i] * r.nchans + c];
				}
			}
			for (int j = 0; j < noffer_names; j++)
			{
				CdpOffer   *o = r.offers[j];
				uint8		code = r.reason[i * noffer_names + j];
				int			bestk = -1;
				double		bestrate = -1;
				int			firstwhy = C_INVALID_TEMPLATE;
				double		p;
				Cand	   *cd;

				if (code != RS_OK)
				{
					reasons[code]++;
					continue;
				}
				for (int k = 0; k < o->nchannels; k++)
				{
					int			c = r.offer_chan[j][k];
					uint8		why = r.chdefs[c] == NULL || CAP(&r, j, k, 0) == -2 ?
						C_INVALID_TEMPLATE : r.chan_reason[i * r.nchans + c];
					double		rate;

					if (why != C_OK)
					{
						if (firstwhy == C_INVALID_TEMPLATE || k == 0)
							firstwhy = why;
						continue;
					}
					rate = cdp_decide_channel_rate(r.delivered ? r.delivered[i * r.nchans + c] : 0,
												   r.engaged ? r.engaged[i * r.nchans + c] : 0,
												   r.pop_delivered[c], r.pop_engaged[c]);
					if (rate > bestrate + 1e-12)
					{
						bestrate = rate;
						bestk = k;
					}
				}
				if (bestk < 0)
				{
					reasons[RS_NO_CHANNEL]++;
					chan_reasons[firstwhy]++;
					continue;
				}
				if (o->has_model && o->model_active)
				{
					for (int f = 0; f < o->nfeatures; f++)
					{
						int			g = r.offer_feat[j][f];

						x[o->feature_slot[f]] = r.x[i * r.nfeat + g];
						xn[o->feature_slot[f]] = r.xnull[i * r.nfeat + g];
					}
					p = cdp_offer_propensity_model(o, x, xn);
				}
				else
				{
					pg_prng_state st;

					pg_prng_seed(&st, cdp_decide_mix(seed, r.pids[i], o->name, run));
					p = cdp_beta_draw(&st, alpha[j], beta[j]);
				}
				cd = &cands[ncands++];
				cd->score = (float) (p * o->value);
				cd->person = (int32) i;
				cd->offer = (int16) j;
				cd->chan = (int8) bestk;
				cd->day = own_day[r.offer_chan[j][bestk]];
				if (cd->score > best)
				{
					best = cd->score;
					best_control[i] = (int32) (ncands - 1);
				}
			}
			if (control)
			{
				/* a control keeps its best candidate aside, for the results */
				if (best_control[i] >= 0)
				{
					cands[first] = cands[best_control[i]];
					best_control[i] = (int32) first;
					ncands = first + 1;
					cands[first].day = -1;	/* marks it: not for the greedy */
				}
				else
					ncands = first;
				n_control++;
			}
			else
				best_control[i] = -1;
		}
	}

	/* greedy by score under the capacities */
	{
		Cand	   *order;
		int64		nord = 0;

		order = MemoryContextAllocHuge(r.cxt, sizeof(Cand) * Max(ncands, 1));
		for (int64 k = 0; k < ncands; k++)
			if (cands[k].day >= 0)
				order[nord++] = cands[k];
		sort_candidates(order, nord);
		for (int64 k = 0; k < nord; k++)
		{
			Cand	   *cd = &order[k];
			int64	   *left = &CAP(&r, cd->offer, cd->chan, cd->day);

			if (assigned[cd->person] >= 0)
				continue;
			if (*left == 0)
			{
				r.cuts[cd->offer * 16 + cd->chan]++;
				continue;
			}
			if (*left > 0)
				(*left)--;
			assigned[cd->person] = (int32) k;
		}
		/* write the sends, in chunks */
		{
			int			chunk = 50000;
			int64	   *pid = palloc(sizeof(int64) * chunk);
			char	  **on = palloc(sizeof(char *) * chunk);
			char	  **ch = palloc(sizeof(char *) * chunk);
			char	  **tp = palloc(sizeof(char *) * chunk);
			TimestampTz *at = palloc(sizeof(TimestampTz) * chunk);
			double	   *sc = palloc(sizeof(double) * chunk);
			char	  **ft = palloc(sizeof(char *) * chunk);
			bool	   *ctl = palloc(sizeof(bool) * chunk);
			int			m = 0;
			MemoryContext rows = AllocSetContextCreate(r.cxt, "pg_cdp arbitration rows",
													   ALLOCSET_DEFAULT_SIZES);

			if (write_plan == NULL)
			{
				Oid			types[13] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
					TIMESTAMPTZARRAYOID, FLOAT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID,
				TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};

				write_plan = cdp_prepare(
					"WITH d AS (SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], "
					"$5::timestamptz[], $6::float8[], $7::text[], $8::bool[]) "
					"AS d(pid, offer, channel, template, at, score, feats, control)), "
					"o AS (INSERT INTO cdp.outbox (profile_id, channel, template, payload, dedupe_key, "
					"not_before, status, enqueued_at, status_at) "
					"SELECT pid, channel, template, jsonb_build_object('offer', offer, 'campaign', $9, "
					"'run_key', $10), 'campaign/' || $9 || '/' || $10 || '/' || pid, at, 'pending', $12, $12 "
					"FROM d WHERE NOT control "
					"ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING "
					"RETURNING outbox_id, profile_id), "
					"s AS (INSERT INTO cdp.offer_sends (profile_id, offer, channel, outbox_id, control, "
					"campaign, run, sent_at, score, features) "
					"SELECT d.pid, d.offer, d.channel, o.outbox_id, d.control, $9, $11, d.at, d.score, "
					"d.feats::float8[] FROM d LEFT JOIN o ON o.profile_id = d.pid "
					"WHERE d.control OR o.outbox_id IS NOT NULL "
					"ON CONFLICT (profile_id, run) WHERE run IS NOT NULL DO NOTHING "
					"RETURNING offer, channel, sent_at, control) "
					"SELECT offer, channel, (sent_at AT TIME ZONE $13)::date, count(*) "
					"FROM s WHERE NOT control GROUP BY 1, 2, 3",
					13, types);
			}
			for (int64 i = 0; i <= r.n; i++)
			{
				Cand	   *cd = NULL;

				if (i < r.n)
				{
					if (assigned[i] >= 0)
						cd = &order[assigned[i]];
					else if (best_control[i] >= 0)
						cd = &cands[best_control[i]];
					else
						n_none++;
				}
				if (cd)
				{
					CdpOffer   *o = r.offers[cd->offer];
					int			c = r.offer_chan[cd->offer][cd->chan];
					MemoryContext o2 = MemoryContextSwitchTo(rows);
					StringInfoData fs;

					pid[m] = r.pids[i];
					on[m] = o->name;
					ch[m] = o->channels[cd->chan].channel;
					tp[m] = o->channels[cd->chan].template;
					at[m] = r.hist[i] >= 0 ?
						cdp_decide_send_time(now, r.zones[r.zone[i]], r.chdefs[c], &r.hours[r.hist[i] * 24],
											 r.pop_hours, NULL) :
						zone_send[r.zone[i] * r.nchans + c];
					sc[m] = cd->score;
					ctl[m] = cd->day < 0;
					initStringInfo(&fs);
					appendStringInfoChar(&fs, '{');
					for (int f = 0; f < o->nfeatures; f++)
					{
						int			g = r.offer_feat[cd->offer][f];

						if (f > 0)
							appendStringInfoChar(&fs, ',');
						if (r.xnull[i * r.nfeat + g])
							appendStringInfoString(&fs, "NULL");
						else
							appendStringInfo(&fs, "%.17g", r.x[i * r.nfeat + g]);
					}
					appendStringInfoChar(&fs, '}');
					ft[m] = fs.data;
					MemoryContextSwitchTo(o2);
					if (!ctl[m])
						expected += cd->score;
					m++;
				}
				if (m > 0 && (m == chunk || i == r.n))
				{
					Datum		a[13];
					MemoryContext o2 = MemoryContextSwitchTo(rows);

					CHECK_FOR_INTERRUPTS();
					a[0] = cdp_int8_array(pid, m);
					a[1] = cdp_text_array(on, m);
					a[2] = cdp_text_array(ch, m);
					a[3] = cdp_text_array(tp, m);
					a[4] = cdp_timestamptz_array(at, m);
					{
						Datum	   *fd = palloc(sizeof(Datum) * m);
						Datum	   *bd = palloc(sizeof(Datum) * m);

						for (int q = 0; q < m; q++)
						{
							fd[q] = Float8GetDatum(sc[q]);
							bd[q] = BoolGetDatum(ctl[q]);
						}
						a[5] = PointerGetDatum(construct_array(fd, m, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
						a[7] = PointerGetDatum(construct_array(bd, m, BOOLOID, 1, true, TYPALIGN_CHAR));
					}
					a[6] = cdp_text_array(ft, m);
					a[8] = CStringGetTextDatum(campaign);
					a[9] = CStringGetTextDatum(run_key);
					a[10] = CStringGetTextDatum(run);
					a[11] = TimestampTzGetDatum(now);
					a[12] = CStringGetTextDatum(cdp_timezone ? cdp_timezone : "UTC");
					{
						/*
						 * The generic plan cannot know the arrays' sizes: a
						 * nested loop over the two CTEs would be quadratic.
						 */
						int			nest = NewGUCNestLevel();

						(void) set_config_option("enable_nestloop", "off", PGC_USERSET, PGC_S_SESSION,
												 GUC_ACTION_SAVE, true, 0, false);
						if (SPI_execute_plan(write_plan, a, NULL, false, 0) != SPI_OK_SELECT)
							elog(ERROR, "pg_cdp: could not enqueue the run's sends");
						AtEOXact_GUC(true, nest);
					}
					MemoryContextSwitchTo(o2);
					for (uint64 q = 0; q < SPI_processed; q++)
					{
						HeapTuple	tup = SPI_tuptable->vals[q];
						TupleDesc	desc = SPI_tuptable->tupdesc;
						bool		isnull;
						Oid			t[4] = {TEXTOID, TEXTOID, DATEOID, INT4OID};
						Datum		u[4];
						int64		cnt = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));

						n_enqueued += cnt;
						u[0] = SPI_getbinval(tup, desc, 1, &isnull);
						u[1] = SPI_getbinval(tup, desc, 2, &isnull);
						u[2] = SPI_getbinval(tup, desc, 3, &isnull);
						u[3] = Int32GetDatum((int32) cnt);
						u[0] = PointerGetDatum(PG_DETOAST_DATUM_COPY(u[0]));
						u[1] = PointerGetDatum(PG_DETOAST_DATUM_COPY(u[1]));
						{
							SPITupleTable *keep = SPI_tuptable;
							uint64		kept = SPI_processed;

							if (SPI_execute_with_args("UPDATE cdp.offer_capacity SET used = used + $4 "
													  "WHERE offer = $1 AND channel = $2 AND day = $3",
													  4, t, u, NULL, false, 0) < 0)
								elog(ERROR, "pg_cdp: could not count the run's sends");
							SPI_tuptable = keep;
							SPI_processed = kept;
						}
					}
					MemoryContextReset(rows);
					m = 0;
				}
			}
		}
	}

	/* the run's summary */
	{
		StringInfoData cuts;
		StringInfoData sup;
		bool		first = true;
		Oid			t[8] = {TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, FLOAT8OID, JSONBOID, JSONBOID};
		Datum		a[8];
		Jsonb	   *supj;

		initStringInfo(&cuts);
		appendStringInfoChar(&cuts, '{');
		for (int j = 0; j < noffer_names; j++)
			for (int k = 0; k < r.offers[j]->nchannels; k++)
				if (r.cuts[j * 16 + k] > 0)
				{
					if (!first)
						appendStringInfoString(&cuts, ", ");
					escape_json(&cuts, psprintf("%s/%s", r.offers[j]->name, r.offers[j]->channels[k].channel));
					appendStringInfo(&cuts, ": " INT64_FORMAT, r.cuts[j * 16 + k]);
					first = false;
				}
		appendStringInfoChar(&cuts, '}');
		initStringInfo(&sup);
		{
			int64		all[RS_NREASONS + C_NREASONS];
			const char *names[RS_NREASONS + C_NREASONS];
			int			na = 0;

			for (int i = 1; i < RS_NREASONS; i++)
				if (i != RS_NO_CHANNEL)
				{
					names[na] = reason_names[i];
					all[na++] = reasons[i];
				}
			for (int i = 1; i < C_NREASONS; i++)
			{
				names[na] = chan_reason_names[i];
				all[na++] = chan_reasons[i];
			}
			json_counts(&sup, names, all, na, false);
		}
		supj = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(sup.data)));
		a[0] = CStringGetTextDatum(run);
		a[1] = Int64GetDatum(r.n);
		a[2] = Int64GetDatum(n_enqueued);
		a[3] = Int64GetDatum(n_control);
		a[4] = Int64GetDatum(n_none);
		a[5] = Float8GetDatum(expected);
		a[6] = DirectFunctionCall1(jsonb_in, CStringGetDatum(cuts.data));
		a[7] = JsonbPGetDatum(supj);
		if (SPI_execute_with_args("UPDATE cdp.offer_runs SET finished_at = clock_timestamp(), "
								  "audience = audience + $2, enqueued = enqueued + $3, held_out = held_out + $4, "
								  "no_offer = no_offer + $5, expected_value = expected_value + round($6::numeric, 4), "
								  "capacity_cuts = $7, suppressed = $8 WHERE run = $1",
								  8, t, a, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "pg_cdp: could not record the run");
		MemoryContextSwitchTo(old);
		initStringInfo(&s);
		appendStringInfoString(&s, "{\"run\": ");
		escape_json(&s, run);
		appendStringInfo(&s, ", \"audience\": " INT64_FORMAT ", \"enqueued\": " INT64_FORMAT
						 ", \"held_out\": " INT64_FORMAT ", \"no_offer\": " INT64_FORMAT
						 ", \"expected_value\": %.4f, \"capacity_cuts\": %s, \"excluded\": %s}",
						 r.n, n_enqueued, n_control, n_none, round(expected * 10000) / 10000,
						 cuts.data, sup.data);
		*audience = r.n;
		*enqueued = n_enqueued;
		*held_out = n_control;
		*suppressed = DatumGetJsonbPCopy(JsonbPGetDatum(supj));
	}
	MemoryContextDelete(r.cxt);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data)));
}

/* cdp.arbitrate_offers(campaign, segment, offers, run_key, holdout) */
PG_FUNCTION_INFO_V1(cdp_arbitrate_offers);
Datum
cdp_arbitrate_offers(PG_FUNCTION_ARGS)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	  **names;
	int64		audience,
				enqueued,
				held_out;
	Jsonb	   *suppressed;
	Jsonb	   *res;
	MemoryContext caller = CurrentMemoryContext;
	int			level;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("campaign, segment and offers must not be null")));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	names = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		names[i] = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
	SPI_connect();
	/* plain statements over the audience: compiling them costs more than it saves */
	level = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	res = cdp_arbitrate(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
						names, n, PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)),
						PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4),
						&audience, &enqueued, &held_out, &suppressed);
	AtEOXact_GUC(true, level);
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		res = DatumGetJsonbPCopy(JsonbPGetDatum(res));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	PG_RETURN_JSONB_P(res);
}

/*
 * The campaign runner: takes the runs of campaigns that have offers
 * (cdp.campaign_offers) and arbitrates them.  The sends go through the
 * definer, as cdp.arbitrate_offers' do, so a campaign owner who may no
 * longer enqueue is refused first, as campaign.c's own send would be.
 */
static bool
offers_runner(CdpCampaignRun *run)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;
	Datum		names;
	Datum	   *elems;
	int			n;
	char	  **offers;
	Jsonb	   *suppressed;
	int			level;

	SPI_connect();
	args[0] = CStringGetTextDatum(run->campaign);
	if (SPI_execute_with_args("SELECT array_agg(offer ORDER BY offer) FROM cdp.campaign_offers "
							  "WHERE campaign = $1", 1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read the campaign's offers");
	names = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
	{
		SPI_finish();
		return false;
	}
	{
		Oid			t[1] = {OIDOID};
		Datum		a[1] = {ObjectIdGetDatum(run->owner)};

		if (SPI_execute_with_args("SELECT has_function_privilege($1, "
								  "'cdp.enqueue(bigint, text, text, jsonb, timestamptz, text)', 'EXECUTE')",
								  1, t, a, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not check the campaign owner's rights");
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("campaign \"%s\": its owner may not enqueue messages", run->campaign),
					 errdetail("A campaign's sends run with the rights of its creator.")));
	}
	deconstruct_array(DatumGetArrayTypeP(names), TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
	offers = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
		offers[i] = TextDatumGetCString(elems[i]);
	level = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) cdp_arbitrate(run->campaign, run->segment, offers, n, run->run_key, run->holdout,
						 &run->audience, &run->enqueued, &run->held_out, &suppressed);
	AtEOXact_GUC(true, level);
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		run->suppressed = JB_ROOT_COUNT(suppressed) > 0 ?
			DatumGetJsonbPCopy(JsonbPGetDatum(suppressed)) : NULL;
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return true;
}

void
cdp_decide_run_init(void)
{
	cdp_register_campaign_runner(offers_runner);
}
