/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  The contact policy: who may be sent what, when, and how often;
 *	  consents, suppressed addresses and delivery feedback.
 *
 * A channel needs its purpose's consent (unless requires_consent is off):
 * no consent row, or a withdrawn one, means no message.  An address in
 * cdp.suppressions (a hard bounce, a complaint, a manual block) is never
 * used; a person whose every address of the channel's type is suppressed
 * gets nothing.  Enqueue checks both and keeps a message that may not go
 * as 'suppressed' with the reason; claim checks them again, because
 * consent can be withdrawn in between, and cancels with the reason.
 *
 * Time rules are decided at claim, when the message would go: quiet
 * hours and caps are read in the recipient's time zone (the timezone
 * identify trait, else cdp.timezone).  In quiet hours a message is
 * deferred to their end; over a cap (the channel's per day or week, or
 * cdp.contact_cap_per_day / _per_week across channels) to the start of
 * the recipient's next day or week.  A deferral keeps its reason until
 * the message goes.  Caps count messages sent (first leased) in the
 * period; two claimers of different channels can each send the last one
 * a global cap allows, so it may be exceeded by the number of channels
 * claiming at the same moment.
 *
 * Merges keep the most restrictive word: for a purpose both parts have a
 * consent row for, a withdrawal wins; a purpose only one part has keeps
 * that part's row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "outbox.h"
#include "policy.h"
#include "registry.h"
#include "traits.h"
#include "util.h"

int			cdp_contact_cap_per_day = 0;
int			cdp_contact_cap_per_week = 0;

static const CdpProfileTable policy_tables[] = {
	{
		/* a purpose both parts answered: a withdrawal wins */
		.name = "consents",
		.relation = "cdp.consents",
		.order = 660,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql =
		"WITH m AS (SELECT * FROM unnest($1::int8[], $2::int8[]) AS m(loser, winner)), "
		"l AS (DELETE FROM cdp.consents k USING m WHERE k.profile_id = m.loser "
		"RETURNING m.winner, k.purpose, k.granted, k.at, k.source), "
		"g AS (SELECT winner, purpose, bool_and(granted) AS granted, max(at) AS at, "
		"(array_agg(source ORDER BY granted, at DESC))[1] AS source FROM l GROUP BY winner, purpose) "
		"INSERT INTO cdp.consents AS k (profile_id, purpose, granted, at, source) "
		"SELECT winner, purpose, granted, at, source FROM g "
		"ON CONFLICT (profile_id, purpose) DO UPDATE SET "
		"granted = k.granted AND excluded.granted, "
		"at = CASE WHEN k.granted AND NOT excluded.granted THEN excluded.at ELSE k.at END, "
		"source = CASE WHEN k.granted AND NOT excluded.granted THEN excluded.source ELSE k.source END",
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
	{
		/* no profile_id: the person's addresses are found by value */
		.name = "suppressions",
		.relation = "cdp.suppressions",
		.order = 670,
		.on_merge = CDP_ROWS_STAY,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_SQL,
		.forget_sql = "DELETE FROM cdp.suppressions WHERE address = ANY($2)",
	},
};

void
cdp_policy_init(void)
{
	DefineCustomIntVariable("cdp.contact_cap_per_day",
							"Messages a person receives per calendar day in their time zone, across all channels (0: no cap).",
							"Over the cap a message is deferred to the person's next day.",
							&cdp_contact_cap_per_day, 0, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.contact_cap_per_week",
							"Messages a person receives per calendar week (from Monday) in their time zone, across all channels (0: no cap).",
							"Over the cap a message is deferred to the person's next week.",
							&cdp_contact_cap_per_week, 0, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	for (int i = 0; i < lengthof(policy_tables); i++)
		cdp_register_profile_table(&policy_tables[i]);
}

/*
 * An index scan of one of our tables by equality on the index's leading
 * columns, in the caller's snapshot.
 */
typedef struct Probe
{
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];
	int			nkeys;
} Probe;

static Oid
cdp_relid(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "pg_cdp: relation cdp.%s is missing", name);
	return relid;
}

/* the index of heap named, else its primary key */
static void
probe_open(Probe *p, Oid nsp, const char *heap, const char *index)
{
	Oid			indexid;

	p->heap = table_open(cdp_relid(nsp, heap), AccessShareLock);
	indexid = index ? cdp_relid(nsp, index) : RelationGetPrimaryKeyIndex(p->heap);
	if (!OidIsValid(indexid))
		elog(ERROR, "pg_cdp: cdp.%s has no primary key", heap);
	p->index = index_open(indexid, AccessShareLock);
	p->slot = table_slot_create(p->heap, NULL);
	p->scan = NULL;
	p->nkeys = 0;
}

static void
probe_key(Probe *p, RegProcedure eqproc, Datum value)
{
	int			col = p->nkeys++;

	ScanKeyEntryInitialize(&p->keys[col], 0, col + 1, BTEqualStrategyNumber, InvalidOid,
						   p->index->rd_indcollation[col], eqproc, value);
}

static void
probe_start(Probe *p, Snapshot snap)
{
	if (p->scan == NULL)
		p->scan = index_beginscan(p->heap, p->index, snap, p->nkeys, 0);
	index_rescan(p->scan, p->keys, p->nkeys, NULL, 0);
}

static bool
probe_next(Probe *p)
{
	return index_getnext_slot(p->scan, ForwardScanDirection, p->slot);
}

static void
probe_close(Probe *p)
{
	if (p->scan)
		index_endscan(p->scan);
	ExecDropSingleTupleTableSlot(p->slot);
	index_close(p->index, AccessShareLock);
	table_close(p->heap, AccessShareLock);
}

static AttrNumber
column(Probe *p, const char *name)
{
	AttrNumber	att = get_attnum(RelationGetRelid(p->heap), name);

	if (att == InvalidAttrNumber)
		elog(ERROR, "pg_cdp: column %s of %s is missing", name, RelationGetRelationName(p->heap));
	return att;
}

/*
 * Why a message of channel c may not be enqueued to profile_id, or NULL;
 * *exists says whether the profile exists.  Enqueue runs inside ingesting
 * transactions, message after message, so these are index probes in the
 * snapshot a statement would take now rather than a statement.
 */
char *
cdp_policy_enqueue_reason(int64 profile_id, const CdpChannel *c, bool *exists)
{
	Oid			nsp = get_namespace_oid("cdp", false);
	Snapshot	snap;
	Probe		p;
	char	   *reason = NULL;

	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());

	probe_open(&p, nsp, "profiles", NULL);
	probe_key(&p, F_INT8EQ, Int64GetDatum(profile_id));
	probe_start(&p, snap);
	*exists = probe_next(&p);
	probe_close(&p);
	if (!*exists)
	{
		UnregisterSnapshot(snap);
		return NULL;
	}

	if (c->requires_consent)
	{
		bool		found;
		bool		granted = false;

		probe_open(&p, nsp, "consents", NULL);
		probe_key(&p, F_INT8EQ, Int64GetDatum(profile_id));
		probe_key(&p, F_TEXTEQ, CStringGetTextDatum(c->purpose));
		probe_start(&p, snap);
		found = probe_next(&p);
		if (found)
		{
			bool		isnull;
			Datum		d = slot_getattr(p.slot, column(&p, "granted"), &isnull);

			granted = !isnull && DatumGetBool(d);
		}
		probe_close(&p);
		if (!granted)
			reason = psprintf(found ? "consent withdrawn for %s" : "no consent for %s", c->purpose);
	}

	if (reason == NULL && c->address_type)
	{
		Probe		s;
		AttrNumber	type_att;
		AttrNumber	value_att;
		bool		has_type = false;
		bool		usable = false;

		probe_open(&p, nsp, "identities", "identities_profile_id");
		type_att = column(&p, "type");
		value_att = column(&p, "value");
		probe_key(&p, F_INT8EQ, Int64GetDatum(profile_id));
		probe_start(&p, snap);
		probe_open(&s, nsp, "suppressions", NULL);
		while (!usable && probe_next(&p))
		{
			bool		isnull;
			Datum		type = slot_getattr(p.slot, type_att, &isnull);
			Datum		value;

			if (isnull || strcmp(TextDatumGetCString(type), c->address_type) != 0)
				continue;
			has_type = true;
			value = slot_getattr(p.slot, value_att, &isnull);
			if (isnull)
				continue;
			s.nkeys = 0;
			probe_key(&s, F_TEXTEQ, value);
			probe_key(&s, F_TEXTEQ, type);
			probe_start(&s, snap);
			usable = !probe_next(&s);
		}
		probe_close(&s);
		probe_close(&p);
		if (!has_type)
			reason = psprintf("no %s address", c->address_type);
		else if (!usable)
			reason = "address suppressed";
	}
	UnregisterSnapshot(snap);
	return reason;
}

static const char *
local_text(TimestampTz t, const char *zone)
{
	pg_tz	   *tz = pg_tzset(zone);
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (tz == NULL || timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz) != 0)
		return timestamptz_to_str(t);
	return psprintf("%04d-%02d-%02d %02d:%02d %s", tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, zone);
}

/*
 * Decides a claimed message from the columns CDP_POLICY_CLAIM_SQL gives
 * (8 consent, 9 address, 10 any address of the type) and the recipient's
 * zone: cancelled, deferred for quiet hours, or leased so far (the caps
 * come after, cdp_policy_apply_caps).
 */
void
cdp_policy_read_row(HeapTuple tup, TupleDesc desc, const CdpChannel *c,
					const CdpZoneTimes *zt, CdpPolicyRow *out)
{
	bool		isnull;
	bool		consent = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
	char	   *address = SPI_getvalue(tup, desc, 9);
	bool		has_type = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));

	memset(out, 0, sizeof(*out));
	out->status = "leased";
	if (!consent)
	{
		out->status = "cancelled";
		out->reason = psprintf("no consent for %s", c->purpose);
		return;
	}
	if (c->address_type && !has_type)
	{
		out->status = "cancelled";
		out->reason = psprintf("no %s address", c->address_type);
		return;
	}
	if (c->address_type && address == NULL)
	{
		out->status = "cancelled";
		out->reason = "address suppressed";
		return;
	}
	out->address = c->address_type ? address : c->target;
	if (zt->in_quiet)
	{
		out->status = "deferred";
		out->not_before = zt->quiet_until;
		out->reason = psprintf("quiet hours until %s", local_text(out->not_before, zt->zone));
		return;
	}
}

/* Defers a message that would go over a cap, to the recipient's next day or week. */
void
cdp_policy_apply_caps(const CdpChannel *c, const CdpZoneTimes *zt,
					  const CdpCapCounts *n, CdpPolicyRow *out)
{
	if (strcmp(out->status, "leased") != 0)
		return;
	if (c->cap_per_day > 0 && n->channel_day >= c->cap_per_day)
	{
		out->status = "deferred";
		out->not_before = zt->day_end;
		out->reason = psprintf("cap of %d per day on %s reached", c->cap_per_day, c->name);
	}
	else if (c->cap_per_week > 0 && n->channel_week >= c->cap_per_week)
	{
		out->status = "deferred";
		out->not_before = zt->week_end;
		out->reason = psprintf("cap of %d per week on %s reached", c->cap_per_week, c->name);
	}
	else if (cdp_contact_cap_per_day > 0 && n->all_day >= cdp_contact_cap_per_day)
	{
		out->status = "deferred";
		out->not_before = zt->day_end;
		out->reason = psprintf("cap of %d per day across channels reached (cdp.contact_cap_per_day)",
							   cdp_contact_cap_per_day);
	}
	else if (cdp_contact_cap_per_week > 0 && n->all_week >= cdp_contact_cap_per_week)
	{
		out->status = "deferred";
		out->not_before = zt->week_end;
		out->reason = psprintf("cap of %d per week across channels reached (cdp.contact_cap_per_week)",
							   cdp_contact_cap_per_week);
	}
}

/* whether any cap applies to the channel's messages */
bool
cdp_policy_counts_caps(const CdpChannel *c)
{
	return c->cap_per_day > 0 || c->cap_per_week > 0 ||
		cdp_contact_cap_per_day > 0 || cdp_contact_cap_per_week > 0;
}

/*
 * The caps' counts of n messages about to be sent, in one statement: the
 * other messages sent to each recipient since the start of their day and
 * week, on the channel and on all.  zones[i] is message i's recipient's.
 */
void
cdp_policy_count_caps(const CdpChannel *c, int n, const int64 *profile_ids,
					  const int64 *outbox_ids, CdpZoneTimes *const *zones,
					  CdpCapCounts *out)
{
	static SPIPlanPtr plan = NULL;
	TimestampTz *day_starts = palloc(sizeof(TimestampTz) * Max(n, 1));
	TimestampTz *week_starts = palloc(sizeof(TimestampTz) * Max(n, 1));
	Datum		values[5];

	memset(out, 0, sizeof(CdpCapCounts) * n);
	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
	{
		day_starts[i] = zones[i]->day_start;
		week_starts[i] = zones[i]->week_start;
	}
	if (plan == NULL)
	{
		Oid			types[5] = {TEXTOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID,
		TIMESTAMPTZARRAYOID};

		plan = cdp_prepare("SELECT u.i, "
						   "count(*) FILTER (WHERE h.channel = $1 AND h.sent_at >= u.ds), "
						   "count(*) FILTER (WHERE h.channel = $1 AND h.sent_at >= u.ws), "
						   "count(*) FILTER (WHERE h.sent_at >= u.ds), "
						   "count(*) FILTER (WHERE h.sent_at >= u.ws) "
						   "FROM unnest($2::int8[], $3::int8[], $4::timestamptz[], $5::timestamptz[]) "
						   "WITH ORDINALITY AS u(pid, oid, ds, ws, i) "
						   "JOIN cdp.outbox h ON h.profile_id = u.pid AND h.outbox_id <> u.oid "
						   "AND h.sent_at >= least(u.ds, u.ws) GROUP BY u.i", 5, types);
	}
	values[0] = CStringGetTextDatum(c->name);
	values[1] = cdp_int8_array((int64 *) profile_ids, n);
	values[2] = cdp_int8_array((int64 *) outbox_ids, n);
	values[3] = cdp_timestamptz_array(day_starts, n);
	values[4] = cdp_timestamptz_array(week_starts, n);
	cdp_spi_exec(plan, values, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		i = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)) - 1;

		if (i < 0 || i >= n)
			continue;
		out[i].channel_day = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		out[i].channel_week = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		out[i].all_day = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		out[i].all_week = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	}
}

/* the zone cdp.recipient_zone gives for the zone named, or NULL for the default */
static const char *
known_zone(const char *z)
{
	if (z && z[0] != '\0' && strlen(z) < TZ_STRLEN_MAX && pg_tzset(z) != NULL)
		return z;
	return NULL;
}

/* A recipient's time zone: their timezone trait when known, else cdp.timezone. */
const char *
cdp_policy_zone(Jsonb *traits)
{
	const char *z = known_zone(traits ? cdp_jsonb_get_text(traits, "timezone", NULL) : NULL);

	return z ? z : (cdp_timezone ? cdp_timezone : "UTC");
}

/*
 * The moments of zone the policy reads at now: the end of the channel's
 * quiet period when now is in one, the recipient's day and week.  By the
 * SQL functions that define them (policy.sql), once per zone of a batch.
 */
void
cdp_policy_zone_times(const CdpChannel *c, const char *zone, TimestampTz now,
					  CdpZoneTimes *out)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	if (plan == NULL)
	{
		Oid			types[4] = {TIMESTAMPTZOID, TEXTOID, TIMEOID, TIMEOID};

		plan = cdp_prepare("SELECT cdp.quiet_until($1, $2, $3, $4), "
						   "cdp.local_period_start($1, $2, 'day'), cdp.local_period_end($1, $2, 'day'), "
						   "cdp.local_period_start($1, $2, 'week'), cdp.local_period_end($1, $2, 'week')",
						   4, types);
	}
	values[0] = TimestampTzGetDatum(now);
	values[1] = CStringGetTextDatum(zone);
	values[2] = TimeADTGetDatum(c->quiet_start);
	values[3] = TimeADTGetDatum(c->quiet_end);
	if (!c->has_quiet)
		nulls[2] = nulls[3] = 'n';
	if (SPI_execute_plan(plan, values, nulls, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pg_cdp: could not read the time zone \"%s\"", zone);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	out->zone = pstrdup(zone);
	d = SPI_getbinval(tup, desc, 1, &isnull);
	out->in_quiet = !isnull;
	out->quiet_until = isnull ? 0 : DatumGetTimestampTz(d);
	out->day_start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
	out->day_end = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	out->week_start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	out->week_end = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

/* cdp.recipient_zone(zone) → the zone if PostgreSQL knows it, else cdp.timezone */
PG_FUNCTION_INFO_V1(cdp_recipient_zone);

Datum
cdp_recipient_zone(PG_FUNCTION_ARGS)
{
	const char *z = known_zone(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)));

	PG_RETURN_TEXT_P(cstring_to_text(z ? z : (cdp_timezone ? cdp_timezone : "UTC")));
}

static void
upsert_consent(int64 profile_id, const char *purpose, bool granted, const char *source)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (plan == NULL)
	{
		Oid			types[5] = {INT8OID, TEXTOID, BOOLOID, TIMESTAMPTZOID, TEXTOID};

		plan = cdp_prepare("INSERT INTO cdp.consents AS k (profile_id, purpose, granted, at, source) "
						   "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (profile_id, purpose) DO UPDATE "
						   "SET granted = excluded.granted, at = excluded.at, source = excluded.source",
						   5, types);
	}
	values[0] = Int64GetDatum(profile_id);
	values[1] = CStringGetTextDatum(purpose);
	values[2] = BoolGetDatum(granted);
	values[3] = TimestampTzGetDatum(cdp_now());
	values[4] = source ? CStringGetTextDatum(source) : (Datum) 0;
	if (!source)
		nulls[4] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not record the consent");
}

/*
 * cdp.set_consent(identifiers, channel_or_purpose, granted, source) → the
 * profile id
 */
/*
 * The purpose a consent is recorded for: the purpose of the channel so
 * named, or the name itself.  Read from cdp.channels rather than the
 * outbox's cache, which sits above the policy.  SPI is connected.
 */
static char *
channel_purpose(char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	if (SPI_execute_with_args("SELECT purpose FROM cdp.channels WHERE name = $1",
							  1, types, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		char	   *p = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (p)
			return p;
	}
	return name;
}

PG_FUNCTION_INFO_V1(cdp_set_consent);

Datum
cdp_set_consent(PG_FUNCTION_ARGS)
{
	char	   *purpose;
	int64		profile_id = 0;
	Datum		values[1];
	Oid			types[1] = {JSONBOID};
	bool		isnull = true;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("identifiers must not be null"),
				 errhint("Name the person, for example '{\"email\": \"ana@shop.test\"}'.")));
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("channel_or_purpose must not be null or empty"),
				 errhint("Name a channel of cdp.channels, or the purpose a channel needs.")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("granted must not be null")));
	purpose = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strlen(purpose) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("purpose is too long"),
				 errdetail("At most 200 bytes are allowed.")));

	SPI_connect();
	purpose = channel_purpose(purpose);
	/* a known person as they are; a new one as cdp.identify makes them */
	values[0] = PG_GETARG_DATUM(0);
	if (SPI_execute_with_args("SELECT cdp.resolve($1)", 1, types, values, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			profile_id = DatumGetInt64(d);
	}
	if (isnull)
	{
		if (SPI_execute_with_args("SELECT cdp.identify($1)", 1, types, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "pg_cdp: could not resolve the identifiers");
		profile_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	upsert_consent(profile_id, purpose, PG_GETARG_BOOL(2),
				   PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)));
	SPI_finish();
	PG_RETURN_INT64(profile_id);
}

/* what a delivery status means: its event, and the detail it needs */
typedef struct DeliveryReport
{
	char	   *status;
	const char *event;
	Jsonb	   *detail;			/* NULL: none */
	char	   *bounce;			/* bounced: hard or soft */
	bool		once;			/* an outcome, recorded once per message */
} DeliveryReport;

static void
read_report_args(FunctionCallInfo fcinfo, DeliveryReport *r)
{
	static const char *const statuses[][2] = {
		{"delivered", "Message Delivered"}, {"bounced", "Message Bounced"},
		{"opened", "Message Opened"}, {"clicked", "Message Clicked"},
		{"complained", "Message Complained"}, {"unsubscribed", "Message Unsubscribed"},
	};

	memset(r, 0, sizeof(*r));
	r->status = text_to_cstring(PG_GETARG_TEXT_PP(1));
	for (int i = 0; i < lengthof(statuses); i++)
		if (strcmp(statuses[i][0], r->status) == 0)
			r->event = statuses[i][1];
	if (r->event == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown delivery status \"%s\"", r->status),
				 errhint("Report delivered, bounced, opened, clicked, complained or unsubscribed.")));
	r->detail = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	if (r->detail && !JB_ROOT_IS_OBJECT(r->detail))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("detail must be a JSON object")));
	if (strcmp(r->status, "bounced") == 0)
	{
		r->bounce = r->detail ? cdp_jsonb_get_text(r->detail, "type", NULL) : NULL;
		if (r->bounce == NULL || (strcmp(r->bounce, "hard") != 0 && strcmp(r->bounce, "soft") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a bounce's detail must say its type, hard or soft"),
					 errhint("For example '{\"type\": \"hard\"}'.")));
	}
	/* the event, once per message for outcomes, every time for opens and clicks */
	r->once = strcmp(r->status, "opened") != 0 && strcmp(r->status, "clicked") != 0;
}

static void
put_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(st, WJB_KEY, &k);
}

static void
put_string(JsonbParseState **st, const char *value)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(st, WJB_VALUE, &v);
}

/*
 * One message's report: an event on the recipient's profile, and what the
 * outcome means for the policy.  SPI is connected.
 */
static void
report_one(int64 id, const DeliveryReport *r)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr track_plan = NULL;
	static SPIPlanPtr suppress_plan = NULL;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	int64		profile_id;
	char	   *channel;
	char	   *template;
	char	   *address;
	char	   *address_type;
	char	   *purpose;

	if (read_plan == NULL)
	{
		Oid			types[4] = {INT8OID, TEXTOID, JSONBOID, TEXTOID};

		read_plan = cdp_prepare("SELECT o.profile_id, o.channel, o.template, o.address, "
								"c.address_type, c.purpose FROM cdp.outbox o "
								"LEFT JOIN cdp.channels c ON c.name = o.channel WHERE o.outbox_id = $1",
								1, types);
		/* the person's strongest identifier names them to cdp.track */
		track_plan = cdp_prepare("SELECT cdp.track(x.ids, $2, $3, cdp.now(), NULL, $4) FROM ("
								 "SELECT jsonb_build_object(i.type, i.value) AS ids FROM cdp.identities i "
								 "JOIN cdp.identifier_types t ON t.type = i.type WHERE i.profile_id = $1 "
								 "ORDER BY t.priority, i.value LIMIT 1) x", 4, types);
	}
	values[0] = Int64GetDatum(id);
	cdp_spi_exec(read_plan, values, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("outbox message " INT64_FORMAT " does not exist", id),
				 errdetail("Finished messages are removed after cdp.outbox_retention.")));
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	profile_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	channel = SPI_getvalue(row, desc, 2);
	template = SPI_getvalue(row, desc, 3);
	address = SPI_getvalue(row, desc, 4);
	address_type = SPI_getvalue(row, desc, 5);
	purpose = SPI_getvalue(row, desc, 6);
	SPI_freetuptable(SPI_tuptable);

	values[0] = Int64GetDatum(profile_id);
	values[1] = CStringGetTextDatum(r->event);
	{
		JsonbParseState *st = NULL;
		JsonbValue	v;
		JsonbValue *res;

		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		put_key(&st, "outbox_id");
		v.type = jbvNumeric;
		v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric, Int64GetDatum(id)));
		pushJsonbValue(&st, WJB_VALUE, &v);
		put_key(&st, "channel");
		put_string(&st, channel);
		put_key(&st, "template");
		put_string(&st, template);
		put_key(&st, "detail");
		if (r->detail)
		{
			v.type = jbvBinary;
			v.val.binary.data = &r->detail->root;
			v.val.binary.len = VARSIZE(r->detail) - VARHDRSZ;
		}
		else
			v.type = jbvNull;
		pushJsonbValue(&st, WJB_VALUE, &v);
		res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		values[2] = JsonbPGetDatum(JsonbValueToJsonb(res));
	}
	values[3] = r->once ? CStringGetTextDatum(psprintf("outbox:" INT64_FORMAT ":%s", id, r->status)) : (Datum) 0;
	if (!r->once)
		nulls[3] = 'n';
	if (SPI_execute_plan(track_plan, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not record the delivery event");
	SPI_freetuptable(SPI_tuptable);

	if ((r->bounce && strcmp(r->bounce, "hard") == 0) || strcmp(r->status, "complained") == 0)
	{
		if (address && address_type)
		{
			Datum		sv[3];

			if (suppress_plan == NULL)
			{
				Oid			st[3] = {TEXTOID, TEXTOID, TEXTOID};

				suppress_plan = cdp_prepare("INSERT INTO cdp.suppressions (address_type, address, reason, source) "
											"VALUES ($1, $2, $3, 'report_delivery') ON CONFLICT DO NOTHING",
											3, st);
			}
			sv[0] = CStringGetTextDatum(address_type);
			sv[1] = CStringGetTextDatum(address);
			sv[2] = CStringGetTextDatum(r->bounce ? "hard bounce" : "complaint");
			if (SPI_execute_plan(suppress_plan, sv, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "pg_cdp: could not suppress the address");
		}
	}
	if (strcmp(r->status, "unsubscribed") == 0 && purpose)
		upsert_consent(profile_id, purpose, false, "unsubscribe");
}

/*
 * cdp.report_delivery(outbox_id, status, detail): an event on the
 * recipient's profile, and what the outcome means for the policy.
 */
PG_FUNCTION_INFO_V1(cdp_report_delivery);

Datum
cdp_report_delivery(PG_FUNCTION_ARGS)
{
	DeliveryReport r;
	int64		id;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("outbox_id and status must not be null")));
	id = PG_GETARG_INT64(0);
	read_report_args(fcinfo, &r);
	SPI_connect();
	report_one(id, &r);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * cdp.report_deliveries(outbox_ids, status, detail) → how many: the same
 * report of every message named, in one call (a connector's batch).
 */
PG_FUNCTION_INFO_V1(cdp_report_deliveries);

Datum
cdp_report_deliveries(PG_FUNCTION_ARGS)
{
	DeliveryReport r;
	ArrayType  *a;
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	MemoryContext each;
	MemoryContext old;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("outbox_ids and status must not be null")));
	a = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &enulls, &n);
	for (int i = 0; i < n; i++)
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("outbox_ids must not contain nulls")));
	read_report_args(fcinfo, &r);
	SPI_connect();
	each = AllocSetContextCreate(CurrentMemoryContext, "pg_cdp report", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(each);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		report_one(DatumGetInt64(elems[i]), &r);
		MemoryContextReset(each);
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	PG_RETURN_INT32(n);
}
