/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The outbox: messages to people, enqueued in the transaction that
 *	  decided them, drained by connectors with leases, retries and a dead
 *	  letter, under the contact policy (policy.c).
 *
 * Enqueue writes one row in the caller's transaction, so a rollback sends
 * nothing, and a dedupe key is unique (an index, ON CONFLICT), so the
 * same key never enqueues twice, even from two sessions at once.  The
 * policy is checked at once (consent, an address that is not suppressed):
 * a message that may not go is kept as 'suppressed' with the reason, so
 * "why did this person not get it?" reads one row.  Channels and
 * templates are cached per backend and reloaded when a statement trigger
 * moves a shared counter, so enqueue is a few index probes (policy.c)
 * and one saved INSERT.
 *
 * Claim locks due messages of a channel with FOR UPDATE SKIP LOCKED,
 * oldest first.  A message is not claimable while an earlier unfinished
 * one to the same person on the same channel is leased, waiting to retry,
 * or due itself: a person's messages go in order, one at a time, and a
 * person who waits holds back only their own.  A rate-limited channel
 * spends tokens from its bucket (cdp.channel_buckets, a row locked by
 * the claim, refilled at rate_per_second up to one second's worth).  Each
 * message is checked again against the policy (consent may have been
 * withdrawn, the address suppressed; quiet hours and caps depend on when
 * it goes), rendered with the person's current traits, and leased to the
 * calling session (leased_by) until lease_until.
 *
 * Ack and fail accept only messages the calling session holds: once a
 * lease expired and another session claimed the message, leased_by names
 * that session and the old holder is refused.  Failures retry after the
 * channel's exponential backoff with jitter, capped at its maximum, and
 * are dead after max_attempts, with every error kept.
 *
 * Bloat.  A claim touches no indexed column, so it is a HOT update; the
 * indexes that find unfinished messages are partial on finished_at IS
 * NULL, which a message leaves once.  Finished messages are deleted by
 * the worker after cdp.outbox_retention, a batch at a time; autovacuum
 * reuses their space.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "common/pg_prng.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "outbox.h"
#include "policy.h"
#include "registry.h"
#include "render.h"
#include "util.h"
#include "worker.h"

#define OUTBOX_NOTIFY_CHANNEL "cdp_outbox"
#define MAX_CLAIM 10000
#define MAX_DEDUPE_KEY_BYTES 512

static char *outbox_retention = NULL;
static int	outbox_cleanup_batch = 10000;

typedef struct CdpTemplate
{
	char	   *name;
	char	   *channel;
	char	   *subject;
	char	   *body;
	char	   *body_html;
	bool		parsed;			/* the three below are set */
	CdpParsedTemplate *p_subject;
	CdpParsedTemplate *p_body;
	CdpParsedTemplate *p_body_html;
} CdpTemplate;

/* channels and templates, reloaded when the shared generation moves */
typedef struct OutboxCache
{
	MemoryContext cxt;
	uint64		generation;
	Oid			relid;
	int			nchannels;
	CdpChannel *channels;
	HTAB	   *templates;
} OutboxCache;

typedef struct TemplateEntry
{
	char		name[NAMEDATALEN * 4];
	CdpTemplate t;
} TemplateEntry;

static OutboxCache cache;
static pg_atomic_uint64 *outbox_generation = NULL;
static bool cache_stale_here = true;
static char *lease_holder = NULL;
static TimestampTz last_due_check = 0;

/* the worker's next look at expired leases and old messages, and whether it left more */
static TimestampTz next_upkeep = 0;
static bool upkeep_more = false;

static int64 task_outbox(bool *more);

static const CdpProfileTable outbox_tables[] = {
	{
		/* a merged person's messages, pending and sent, are the winner's */
		.name = "outbox",
		.relation = "cdp.outbox",
		.order = 650,
		.on_merge = CDP_ROWS_BY_PROFILE_ID,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

static const CdpTask outbox_task = {
	.name = "outbox",
	.run = task_outbox,
};

static bool
check_interval_text(char **newval, void **extra, GucSource source)
{
	bool		ok = true;

	if (*newval == NULL)
		return false;
	PG_TRY();
	{
		Interval   *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
															   CStringGetDatum(*newval),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));

		ok = iv->time >= 0 && iv->day >= 0 && iv->month >= 0;
	}
	PG_CATCH();
	{
		FlushErrorState();
		ok = false;
	}
	PG_END_TRY();
	if (!ok)
		GUC_check_errdetail("\"%s\" is not a positive interval.", *newval);
	return ok;
}

void
cdp_outbox_init(void)
{
	DefineCustomStringVariable("cdp.outbox_retention",
							   "How long delivered, dead, cancelled and suppressed messages stay in cdp.outbox.",
							   "The worker deletes them after this long, a batch at a time.",
							   &outbox_retention, "7 days", PGC_SIGHUP, 0,
							   check_interval_text, NULL, NULL);
	DefineCustomIntVariable("cdp.outbox_cleanup_batch",
							"Finished messages the worker deletes per round.",
							NULL, &outbox_cleanup_batch, 10000, 100, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	for (int i = 0; i < lengthof(outbox_tables); i++)
		cdp_register_profile_table(&outbox_tables[i]);
	cdp_register_task(&outbox_task);
}

Size
cdp_outbox_shmem_size(void)
{
	return MAXALIGN(sizeof(pg_atomic_uint64));
}

void
cdp_outbox_shmem_init(void)
{
	bool		found;

	outbox_generation = ShmemInitStruct("pg_cdp outbox", cdp_outbox_shmem_size(), &found);
	if (!found)
		pg_atomic_init_u64(outbox_generation, 0);
}

/* Statement trigger on cdp.channels and cdp.templates. */
PG_FUNCTION_INFO_V1(cdp_outbox_config_changed);
Datum
cdp_outbox_config_changed(PG_FUNCTION_ARGS)
{
	cache_stale_here = true;
	if (outbox_generation)
		cdp_bump_through_xact(outbox_generation);
	return PointerGetDatum(NULL);
}

static int64
interval_usecs(Datum d)
{
	Interval   *iv = DatumGetIntervalP(d);

	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

static char *
getstr(HeapTuple tup, TupleDesc desc, int att)
{
	char	   *v = SPI_getvalue(tup, desc, att);

	return v ? pstrdup(v) : NULL;
}

/* Loads channels and templates when they changed; SPI is connected. */
static void
load_config(void)
{
	uint64		generation = outbox_generation ? pg_atomic_read_u64(outbox_generation) : 0;
	Oid			relid = get_relname_relid("channels", get_namespace_oid("cdp", false));
	MemoryContext old;
	HASHCTL		ctl;

	if (!cache_stale_here && cache.cxt && outbox_generation &&
		generation == cache.generation && relid == cache.relid)
		return;
	if (cache.cxt)
		MemoryContextDelete(cache.cxt);
	memset(&cache, 0, sizeof(cache));
	cache.cxt = AllocSetContextCreate(TopMemoryContext, "pg_cdp outbox",
									  ALLOCSET_SMALL_SIZES);
	cache.generation = generation;
	cache.relid = relid;
	cache_stale_here = false;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 4;
	ctl.entrysize = sizeof(TemplateEntry);
	ctl.hcxt = cache.cxt;
	cache.templates = hash_create("pg_cdp templates", 64, &ctl,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	if (!OidIsValid(relid))
		return;

	if (SPI_execute("SELECT name, kind, address_type, target, purpose, requires_consent, "
					"quiet_start IS NOT NULL, coalesce(quiet_start, '00:00'), coalesce(quiet_end, '00:00'), "
					"coalesce(cap_per_day, 0), coalesce(cap_per_week, 0), "
					"coalesce(rate_per_second, 0)::float8, max_attempts, backoff_base, backoff_max, "
					"max_payload_bytes FROM cdp.channels ORDER BY name", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.channels");
	old = MemoryContextSwitchTo(cache.cxt);
	cache.nchannels = SPI_processed;
	cache.channels = palloc0(sizeof(CdpChannel) * Max(1, cache.nchannels));
	for (int i = 0; i < cache.nchannels; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		CdpChannel *c = &cache.channels[i];
		bool		isnull;

		c->name = getstr(tup, desc, 1);
		c->kind = getstr(tup, desc, 2);
		c->address_type = getstr(tup, desc, 3);
		c->target = getstr(tup, desc, 4);
		c->purpose = getstr(tup, desc, 5);
		c->requires_consent = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		c->has_quiet = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		c->quiet_start = DatumGetTimeADT(SPI_getbinval(tup, desc, 8, &isnull));
		c->quiet_end = DatumGetTimeADT(SPI_getbinval(tup, desc, 9, &isnull));
		c->cap_per_day = DatumGetInt32(SPI_getbinval(tup, desc, 10, &isnull));
		c->cap_per_week = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
		c->rate_per_second = DatumGetFloat8(SPI_getbinval(tup, desc, 12, &isnull));
		c->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 13, &isnull));
		c->backoff_base = interval_usecs(SPI_getbinval(tup, desc, 14, &isnull));
		c->backoff_max = interval_usecs(SPI_getbinval(tup, desc, 15, &isnull));
		c->max_payload_bytes = DatumGetInt32(SPI_getbinval(tup, desc, 16, &isnull));
	}
	MemoryContextSwitchTo(old);

	if (SPI_execute("SELECT name, channel, subject, body, body_html FROM cdp.templates",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.templates");
	old = MemoryContextSwitchTo(cache.cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = SPI_getvalue(tup, desc, 1);
		TemplateEntry *e;
		bool		found;

		if (strlen(name) >= NAMEDATALEN * 4)
			continue;			/* the table's CHECK keeps names shorter */
		e = hash_search(cache.templates, name, HASH_ENTER, &found);
		e->t.name = pstrdup(name);
		e->t.parsed = false;
		e->t.channel = getstr(tup, desc, 2);
		e->t.subject = getstr(tup, desc, 3);
		e->t.body = getstr(tup, desc, 4);
		e->t.body_html = getstr(tup, desc, 5);
	}
	MemoryContextSwitchTo(old);
}

const CdpChannel *
cdp_outbox_channel(const char *name)
{
	load_config();
	for (int i = 0; i < cache.nchannels; i++)
		if (strcmp(cache.channels[i].name, name) == 0)
			return &cache.channels[i];
	return NULL;
}

static const CdpTemplate *
find_template(const char *name)
{
	TemplateEntry *e;

	if (strlen(name) >= NAMEDATALEN * 4)
		return NULL;
	e = hash_search(cache.templates, name, HASH_FIND, NULL);
	return e ? &e->t : NULL;
}

/* a template's parts, parsed once per load of the cache */
static void
parse_template(CdpTemplate *t)
{
	if (t->parsed)
		return;
	t->p_subject = cdp_parse_template(t->subject, cache.cxt);
	t->p_body = cdp_parse_template(t->body, cache.cxt);
	t->p_body_html = cdp_parse_template(t->body_html, cache.cxt);
	t->parsed = true;
}

static const CdpChannel *
require_channel(FunctionCallInfo fcinfo, int arg)
{
	char	   *name;
	const CdpChannel *c;

	if (PG_ARGISNULL(arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("channel must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(arg));
	c = cdp_outbox_channel(name);
	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown channel \"%s\"", name),
				 errhint("Channels are rows of cdp.channels.")));
	return c;
}

/* who holds a lease: this session, and no later one with its pid */
static const char *
holder(void)
{
	if (lease_holder == NULL)
		lease_holder = MemoryContextStrdup(TopMemoryContext,
										   psprintf("%d.%s", MyProcPid,
													timestamptz_to_str(MyStartTimestamp)));
	return lease_holder;
}

/*
 * cdp.enqueue(profile_id, channel, template, payload, not_before,
 * dedupe_key) → bigint
 */
PG_FUNCTION_INFO_V1(cdp_enqueue);

Datum
cdp_enqueue(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr dedupe_plan = NULL;
	const CdpChannel *c;
	const CdpTemplate *t;
	char	   *tname;
	Jsonb	   *payload;
	char	   *dedupe = NULL;
	TimestampTz now = cdp_now();
	TimestampTz not_before;
	int64		profile_id;
	int64		id = 0;
	bool		pending = false;
	bool		exists;
	char	   *reason;
	int			rc;
	Datum		values[9];
	char		nulls[9];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("profile_id must not be null")));
	profile_id = PG_GETARG_INT64(0);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("template must not be null")));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Pass '{}' for a message with no payload.")));
	payload = PG_GETARG_JSONB_P(3);
	not_before = PG_ARGISNULL(4) ? now : PG_GETARG_TIMESTAMPTZ(4);
	if (TIMESTAMP_NOT_FINITE(not_before))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("not_before must be a finite timestamp")));
	if (!PG_ARGISNULL(5))
	{
		text	   *k = PG_GETARG_TEXT_PP(5);

		if (VARSIZE_ANY_EXHDR(k) > MAX_DEDUPE_KEY_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("dedupe_key is too long"),
					 errdetail("It takes %d bytes; at most %d are allowed.",
							   (int) VARSIZE_ANY_EXHDR(k), MAX_DEDUPE_KEY_BYTES)));
		if (VARSIZE_ANY_EXHDR(k) > 0)
			dedupe = text_to_cstring(k);
	}

	SPI_connect();
	c = require_channel(fcinfo, 1);
	tname = text_to_cstring(PG_GETARG_TEXT_PP(2));
	t = find_template(tname);
	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown template \"%s\"", tname),
				 errhint("Templates are rows of cdp.templates.")));
	if (strcmp(t->channel, c->name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template \"%s\" is for channel \"%s\", not \"%s\"",
						tname, t->channel, c->name)));
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload must be a JSON object")));
	if (VARSIZE(payload) - VARHDRSZ > c->max_payload_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload is too large for channel \"%s\"", c->name),
				 errdetail("It takes %d bytes; the channel's max_payload_bytes is %d.",
						   (int) (VARSIZE(payload) - VARHDRSZ), c->max_payload_bytes),
				 errhint("Send large content by reference, or raise the channel's max_payload_bytes.")));

	reason = cdp_policy_enqueue_reason(profile_id, c, &exists);
	if (exists)
	{
		if (insert_plan == NULL)
		{
			Oid			types[9] = {INT8OID, TEXTOID, TEXTOID, JSONBOID, TEXTOID,
			TIMESTAMPTZOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};

			/* VALUES and the dedupe key's index: nothing to plan badly */
			insert_plan = cdp_prepare(
				"INSERT INTO cdp.outbox (profile_id, channel, template, payload, dedupe_key, "
				"not_before, status, reason, enqueued_at, status_at, finished_at) "
				"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, "
				"CASE WHEN $8 IS NOT NULL THEN $9 END) "
				"ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING "
				"RETURNING outbox_id",
				9, types);
		}
		values[0] = Int64GetDatum(profile_id);
		values[1] = CStringGetTextDatum(c->name);
		values[2] = CStringGetTextDatum(t->name);
		values[3] = JsonbPGetDatum(payload);
		values[4] = dedupe ? CStringGetTextDatum(dedupe) : (Datum) 0;
		values[5] = TimestampTzGetDatum(not_before);
		values[6] = CStringGetTextDatum(reason ? "suppressed" : "pending");
		values[7] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
		values[8] = TimestampTzGetDatum(now);
		memset(nulls, ' ', sizeof(nulls));
		if (!dedupe)
			nulls[4] = 'n';
		if (!reason)
			nulls[7] = 'n';
		rc = SPI_execute_plan(insert_plan, values, nulls, false, 0);
		if (rc != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "pg_cdp: could not enqueue: %s", SPI_result_code_string(rc));
	}
	else
		SPI_processed = 0;
	if (SPI_processed == 1)
	{
		bool		isnull;

		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		pending = reason == NULL;
	}
	else if (dedupe)
	{
		Oid			types[1] = {TEXTOID};
		Datum		k[1];

		if (dedupe_plan == NULL)
			dedupe_plan = cdp_prepare("SELECT outbox_id FROM cdp.outbox WHERE dedupe_key = $1",
									  1, types);
		k[0] = CStringGetTextDatum(dedupe);
		cdp_spi_exec(dedupe_plan, k, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			bool		isnull;

			id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
	}
	if (id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("profile " INT64_FORMAT " does not exist", profile_id),
				 errhint("A merged profile's messages go to its winner: cdp.merges names it.")));
	SPI_finish();
	/*
	 * Connectors wake at commit, and a rollback notifies nobody; a message
	 * for later is notified by the worker when it comes due.
	 */
	if (pending && not_before <= now)
		Async_Notify(OUTBOX_NOTIFY_CHANNEL, c->name);
	PG_RETURN_INT64(id);
}

/*
 * cdp_enqueue_many enqueues n messages of one channel and template in one
 * statement, each through the policy as cdp.enqueue does, due now, each
 * with its dedupe key (required): ids[i] gets the message of row i (the one
 * already there when the key was used before), 0 when its profile does not
 * exist.  Raises what cdp.enqueue raises for the channel, the template and
 * a payload.
 */
void
cdp_enqueue_many(const char *channel, const char *template, int n, const int64 *profile_ids,
				 Jsonb **payloads, char **dedupe_keys, int64 *ids)
{
	static SPIPlanPtr plan = NULL;
	const CdpChannel *c;
	const CdpTemplate *t;
	TimestampTz now = cdp_now();
	Datum		values[9];
	char		nulls[9];
	bool		pending = false;

	if (n == 0)
		return;
	SPI_connect();
	c = cdp_outbox_channel(channel);
	if (c == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown channel \"%s\"", channel),
				 errhint("Channels are rows of cdp.channels.")));
	t = find_template(template);
	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown template \"%s\"", template),
				 errhint("Templates are rows of cdp.templates.")));
	if (strcmp(t->channel, c->name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template \"%s\" is for channel \"%s\", not \"%s\"",
						template, t->channel, c->name)));
	for (int i = 0; i < n; i++)
	{
		if (dedupe_keys[i] == NULL || strlen(dedupe_keys[i]) > MAX_DEDUPE_KEY_BYTES)
			elog(ERROR, "pg_cdp: a batch enqueue needs a dedupe key of at most %d bytes per message",
				 MAX_DEDUPE_KEY_BYTES);
		if (!JB_ROOT_IS_OBJECT(payloads[i]))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("payload must be a JSON object")));
		if (VARSIZE(payloads[i]) - VARHDRSZ > c->max_payload_bytes)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("payload is too large for channel \"%s\"", c->name),
					 errdetail("It takes %d bytes; the channel's max_payload_bytes is %d.",
							   (int) (VARSIZE(payloads[i]) - VARHDRSZ), c->max_payload_bytes),
					 errhint("Send large content by reference, or raise the channel's max_payload_bytes.")));
	}
	if (plan == NULL)
	{
		Oid			types[9] = {INT8ARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TEXTOID, TEXTOID,
		TIMESTAMPTZOID, BOOLOID, TEXTOID, TEXTOID};

		plan = cdp_prepare(
			"WITH b AS (SELECT * FROM unnest($1::int8[], $2::jsonb[], $3::text[]) WITH ORDINALITY "
			"           AS b(pid, payload, dedupe_key, i)), "
			"ins AS (INSERT INTO cdp.outbox AS o (profile_id, channel, template, payload, dedupe_key, "
			"        not_before, status, reason, enqueued_at, status_at, finished_at) "
			"        SELECT b.pid, $4, $5, b.payload, b.dedupe_key, $6, "
			"        CASE WHEN v.reason IS NULL THEN 'pending' ELSE 'suppressed' END, v.reason, $6, $6, "
			"        CASE WHEN v.reason IS NOT NULL THEN $6 END "
			"        FROM b CROSS JOIN LATERAL (SELECT "
			CDP_POLICY_ENQUEUE_SQL_OVER("b.pid", "$7", "$8", "$9") " AS reason OFFSET 0) v "
			"        WHERE EXISTS (SELECT 1 FROM cdp.profiles p WHERE p.profile_id = b.pid) "
			"        ORDER BY b.i "
			"        ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING "
			"        RETURNING outbox_id, dedupe_key, status = 'pending' AS pending) "
			"SELECT b.i, coalesce(ins.outbox_id, (SELECT x.outbox_id FROM cdp.outbox x "
			"                                      WHERE x.dedupe_key = b.dedupe_key)), "
			"       coalesce(ins.pending, false) "
			"FROM b LEFT JOIN ins ON ins.dedupe_key = b.dedupe_key",
			9, types);
	}
	values[0] = cdp_int8_array((int64 *) profile_ids, n);
	values[1] = cdp_jsonb_array(payloads, n);
	values[2] = cdp_text_array(dedupe_keys, n);
	values[3] = CStringGetTextDatum(c->name);
	values[4] = CStringGetTextDatum(t->name);
	values[5] = TimestampTzGetDatum(now);
	values[6] = BoolGetDatum(c->requires_consent);
	values[7] = CStringGetTextDatum(c->purpose);
	values[8] = c->address_type ? CStringGetTextDatum(c->address_type) : (Datum) 0;
	memset(nulls, ' ', sizeof(nulls));
	if (!c->address_type)
		nulls[8] = 'n';
	cdp_spi_exec_nulls(plan, values, nulls, SPI_OK_SELECT, 0);
	memset(ids, 0, sizeof(int64) * n);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		i = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		id = SPI_getbinval(tup, desc, 2, &isnull);

		if (!isnull && i >= 1 && i <= n)
			ids[i - 1] = DatumGetInt64(id);
		if (DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			pending = true;
	}
	SPI_finish();
	if (pending)
		Async_Notify(OUTBOX_NOTIFY_CHANNEL, c->name);
}

/* Tokens a rate-limited channel may spend now, at most max. */
static int
bucket_take(const CdpChannel *c, int max, TimestampTz now)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];
	bool		isnull;
	double		tokens;

	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, FLOAT8OID, TIMESTAMPTZOID};

		plan = cdp_prepare("INSERT INTO cdp.channel_buckets AS b (channel, tokens, refilled_at) "
						   "VALUES ($1, $2, $3) ON CONFLICT (channel) DO UPDATE SET "
						   "tokens = least($2, b.tokens + $2 * greatest(0, extract(epoch FROM $3 - b.refilled_at))::float8), "
						   "refilled_at = greatest(b.refilled_at, $3) RETURNING tokens",
						   3, types);
	}
	values[0] = CStringGetTextDatum(c->name);
	values[1] = Float8GetDatum(Max(c->rate_per_second, 1.0));
	values[2] = TimestampTzGetDatum(now);
	cdp_spi_exec(plan, values, SPI_OK_INSERT_RETURNING);
	tokens = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return (int) Min((double) max, floor(tokens));
}

static void
bucket_spend(const CdpChannel *c, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];

	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, FLOAT8OID};

		plan = cdp_prepare("UPDATE cdp.channel_buckets SET tokens = tokens - $2 WHERE channel = $1",
						   2, types);
	}
	values[0] = CStringGetTextDatum(c->name);
	values[1] = Float8GetDatum((double) n);
	cdp_spi_exec(plan, values, SPI_OK_UPDATE);
}

/* claim's columns of a candidate, in the order CLAIM_SQL gives them */
enum
{
	CL_ID = 0, CL_DEDUPE, CL_PROFILE, CL_TEMPLATE, CL_PAYLOAD, CL_ATTEMPTS,
	CL_TRAITS, CL_NCOLS_BASE
};

/*
 * cdp.claim(channel, max, lease) → the messages leased to this session.
 */
PG_FUNCTION_INFO_V1(cdp_claim);

Datum
cdp_claim(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr claim_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const CdpChannel *c;
	int			max;
	Interval   *lease;
	TimestampTz now = cdp_now();
	TimestampTz until;
	int			limit;
	int			n;
	int64	   *ids;
	char	  **statuses;
	char	  **reasons;
	TimestampTz *not_befores;
	char	  **addresses;
	int			nleased = 0;
	CdpPolicyRow *decided;
	CdpZoneTimes **zones;
	SPITupleTable *tt;
	Datum		values[13];
	bool		nulls[13];
	Datum		params[6];
	MemoryContext callcxt = CurrentMemoryContext;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(1) || PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be at least 1")));
	max = Min(PG_GETARG_INT32(1), MAX_CLAIM);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lease must not be null"),
				 errhint("Lease messages for as long as delivering them may take, for example '30 seconds'.")));
	lease = PG_GETARG_INTERVAL_P(2);
	if (interval_usecs(IntervalPGetDatum(lease)) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be positive"),
				 errhint("Lease messages for as long as delivering them may take, for example '30 seconds'.")));
	until = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													TimestampTzGetDatum(now),
													IntervalPGetDatum(lease)));

	SPI_connect();
	c = require_channel(fcinfo, 0);
	limit = c->rate_per_second > 0 ? bucket_take(c, max, now) : max;
	if (limit <= 0)
	{
		SPI_finish();
		return (Datum) 0;
	}

	if (claim_plan == NULL)
	{
		Oid			types[6] = {TEXTOID, TIMESTAMPTZOID, INT4OID, TEXTOID, BOOLOID, TEXTOID};

		claim_plan = cdp_prepare(CDP_POLICY_CLAIM_SQL, 6, types);
	}
	params[0] = CStringGetTextDatum(c->name);
	params[1] = TimestampTzGetDatum(now);
	params[2] = Int32GetDatum(limit);
	params[3] = CStringGetTextDatum(c->purpose);
	params[4] = BoolGetDatum(c->requires_consent);
	params[5] = CStringGetTextDatum(c->address_type ? c->address_type : "");
	cdp_spi_exec(claim_plan, params, SPI_OK_SELECT);

	n = SPI_processed;
	tt = SPI_tuptable;
	ids = palloc(sizeof(int64) * Max(n, 1));
	statuses = palloc(sizeof(char *) * Max(n, 1));
	reasons = palloc(sizeof(char *) * Max(n, 1));
	not_befores = palloc(sizeof(TimestampTz) * Max(n, 1));
	addresses = palloc(sizeof(char *) * Max(n, 1));
	decided = palloc(sizeof(CdpPolicyRow) * Max(n, 1));
	zones = palloc(sizeof(CdpZoneTimes *) * Max(n, 1));

	/*
	 * The policy: what each message's row says, then its recipient's time
	 * zone (worked out once per zone of the batch), then the caps of those
	 * still to go, counted in one statement.
	 */
	{
		int			nzones = 0;
		CdpZoneTimes *known = palloc(sizeof(CdpZoneTimes) * Max(n, 1));
		int			ncapped = 0;
		int64	   *cap_profiles = palloc(sizeof(int64) * Max(n, 1));
		int64	   *cap_ids = palloc(sizeof(int64) * Max(n, 1));
		CdpZoneTimes **cap_zones = palloc(sizeof(CdpZoneTimes *) * Max(n, 1));
		int		   *cap_rows = palloc(sizeof(int) * Max(n, 1));
		bool		caps = cdp_policy_counts_caps(c);

		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = tt->vals[i];
			bool		isnull;
			Datum		tr = SPI_getbinval(tup, tt->tupdesc, CL_TRAITS + 1, &isnull);
			const char *zone = cdp_policy_zone(isnull ? NULL : DatumGetJsonbP(tr));
			int			z;

			CHECK_FOR_INTERRUPTS();
			for (z = 0; z < nzones; z++)
				if (strcmp(known[z].zone, zone) == 0)
					break;
			if (z == nzones)
				cdp_policy_zone_times(c, zone, now, &known[nzones++]);
			zones[i] = &known[z];
			ids[i] = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, CL_ID + 1, &isnull));
			cdp_policy_read_row(tup, tt->tupdesc, c, zones[i], &decided[i]);
			if (caps && strcmp(decided[i].status, "leased") == 0)
			{
				cap_profiles[ncapped] = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, CL_PROFILE + 1, &isnull));
				cap_ids[ncapped] = ids[i];
				cap_zones[ncapped] = zones[i];
				cap_rows[ncapped++] = i;
			}
		}
		if (ncapped > 0)
		{
			CdpCapCounts *counts = palloc(sizeof(CdpCapCounts) * ncapped);

			cdp_policy_count_caps(c, ncapped, cap_profiles, cap_ids, cap_zones, counts);
			for (int j = 0; j < ncapped; j++)
				cdp_policy_apply_caps(c, cap_zones[j], &counts[j], &decided[cap_rows[j]]);
		}
	}

	{
		MemoryContext spicxt = MemoryContextSwitchTo(callcxt);

		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = tt->vals[i];
			TupleDesc	desc = tt->tupdesc;
			bool		isnull;
			CdpPolicyRow pr = decided[i];
			const CdpTemplate *t;
			CdpRenderContext rc;
			char	   *missing = NULL;
			char	   *subject = NULL;
			char	   *body = NULL;
			char	   *body_html = NULL;

			CHECK_FOR_INTERRUPTS();
			statuses[i] = pr.status;
			reasons[i] = pr.reason;
			not_befores[i] = pr.not_before;
			addresses[i] = pr.address;
			if (strcmp(pr.status, "leased") != 0)
				continue;

			memset(&rc, 0, sizeof(rc));
			rc.outbox_id = ids[i];
			rc.profile_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			rc.payload = DatumGetJsonbP(SPI_getbinval(tup, desc, 5, &isnull));
			{
				Datum		tr = SPI_getbinval(tup, desc, 7, &isnull);

				rc.traits = isnull ? NULL : DatumGetJsonbP(tr);
			}
			rc.address = pr.address;
			rc.channel = c->name;
			t = find_template(SPI_getvalue(tup, desc, 4));
			if (t == NULL)
			{
				statuses[i] = "cancelled";
				reasons[i] = psprintf("template \"%s\" no longer exists", SPI_getvalue(tup, desc, 4));
				continue;
			}
			parse_template((CdpTemplate *) t);
			subject = cdp_render_parsed(t->p_subject, &rc, false, &missing);
			if (missing == NULL)
				body = cdp_render_parsed(t->p_body, &rc, false, &missing);
			if (missing == NULL)
				body_html = cdp_render_parsed(t->p_body_html, &rc, true, &missing);
			if (missing)
			{
				statuses[i] = "suppressed";
				reasons[i] = psprintf("no value for {{%s}}", missing);
				continue;
			}
			memset(nulls, 0, sizeof(nulls));
			values[0] = Int64GetDatum(ids[i]);
			{
				char	   *dk = SPI_getvalue(tup, desc, 2);

				values[1] = dk ? CStringGetTextDatum(dk) : (Datum) 0;
				nulls[1] = dk == NULL;
			}
			values[2] = CStringGetTextDatum(c->name);
			values[3] = CStringGetTextDatum(c->kind);
			values[4] = Int64GetDatum(rc.profile_id);
			values[5] = pr.address ? CStringGetTextDatum(pr.address) : (Datum) 0;
			nulls[5] = pr.address == NULL;
			values[6] = CStringGetTextDatum(t->name);
			values[7] = subject ? CStringGetTextDatum(subject) : (Datum) 0;
			nulls[7] = subject == NULL;
			values[8] = CStringGetTextDatum(body ? body : "");
			values[9] = body_html ? CStringGetTextDatum(body_html) : (Datum) 0;
			nulls[9] = body_html == NULL;
			values[10] = JsonbPGetDatum(rc.payload);
			values[11] = Int32GetDatum(DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull)) + 1);
			values[12] = TimestampTzGetDatum(until);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			nleased++;
		}
		MemoryContextSwitchTo(spicxt);
	}

	if (n > 0)
	{
		Datum		u[8];

		if (update_plan == NULL)
		{
			Oid			types[8] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
			TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID};

			update_plan = cdp_prepare(
				"UPDATE cdp.outbox o SET status = u.status, reason = u.reason, "
				"not_before = CASE WHEN u.status = 'deferred' THEN u.not_before ELSE o.not_before END, "
				"attempts = o.attempts + (u.status = 'leased')::int, "
				"lease_until = CASE WHEN u.status = 'leased' THEN $7 END, "
				"leased_by = CASE WHEN u.status = 'leased' THEN $8 ELSE o.leased_by END, "
				"sent_at = CASE WHEN u.status = 'leased' THEN coalesce(o.sent_at, $6) ELSE o.sent_at END, "
				"address = coalesce(u.address, o.address), "
				"finished_at = CASE WHEN u.status IN ('cancelled', 'suppressed') THEN $6 END, "
				"status_at = $6 "
				"FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) "
				"AS u(id, status, reason, not_before, address) WHERE o.outbox_id = u.id",
				8, types);
		}
		u[0] = cdp_int8_array(ids, n);
		u[1] = cdp_text_array(statuses, n);
		u[2] = cdp_text_array(reasons, n);
		u[3] = cdp_timestamptz_array(not_befores, n);
		u[4] = cdp_text_array(addresses, n);
		u[5] = TimestampTzGetDatum(now);
		u[6] = TimestampTzGetDatum(until);
		u[7] = CStringGetTextDatum(holder());
		cdp_spi_exec(update_plan, u, SPI_OK_UPDATE);
	}
	if (c->rate_per_second > 0 && nleased > 0)
		bucket_spend(c, nleased);
	SPI_finish();
	return (Datum) 0;
}

/*
 * Refuses a call about the messages ids (sorted and unique) unless this
 * session holds the one named: leased to it, or its lease expired and
 * nobody claimed it since.  lock: lock them first, so that the answer
 * holds until the end of the transaction.
 */
static void
check_held(int64 *ids, int n, const char *what, bool lock)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	Datum		values[1];

	if (plans[lock] == NULL)
	{
		Oid			types[1] = {INT8ARRAYOID};

		plans[lock] = cdp_prepare(lock ?
								  "SELECT outbox_id, status, leased_by FROM cdp.outbox "
								  "WHERE outbox_id = ANY($1) ORDER BY outbox_id FOR UPDATE" :
								  "SELECT outbox_id, status, leased_by FROM cdp.outbox "
								  "WHERE outbox_id = ANY($1) ORDER BY outbox_id", 1, types);
	}
	values[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plans[lock], values, SPI_OK_SELECT);
	/* ids are sorted and unique, and so are the rows */
	for (int i = 0, r = 0; i < n; i++)
	{
		HeapTuple	tup;
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *status;
		char	   *by;
		bool		mine;

		if (r >= SPI_processed ||
			DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], desc, 1, &isnull)) != ids[i])
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("outbox message " INT64_FORMAT " does not exist", ids[i]),
					 errdetail("Nothing in this call was %s.", what)));
		tup = SPI_tuptable->vals[r++];
		status = SPI_getvalue(tup, desc, 2);
		by = SPI_getvalue(tup, desc, 3);
		mine = by && strcmp(by, holder()) == 0;
		if (!mine || (strcmp(status, "leased") != 0 && strcmp(status, "pending") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("outbox message " INT64_FORMAT " is not leased to this session", ids[i]),
					 errdetail("Its status is %s%s. Nothing in this call was %s.", status,
							   by == NULL ? ", and it was never claimed" :
							   mine ? "" : ", and another session claimed it last", what),
					 errhint("A message whose lease expired may be claimed by another session: lease for longer than a delivery takes.")));
	}
}

static void
require_held(int64 *ids, int n, const char *what)
{
	check_held(ids, n, what, true);
}

static int
int8_array_arg(FunctionCallInfo fcinfo, int arg, int64 **out)
{
	ArrayType  *a;
	Datum	   *elems;
	bool	   *enulls;
	int			n;

	if (PG_ARGISNULL(arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("ids must not be null")));
	a = PG_GETARG_ARRAYTYPE_P(arg);
	deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &enulls, &n);
	*out = palloc(sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("ids must not contain nulls")));
		(*out)[i] = DatumGetInt64(elems[i]);
	}
	return cdp_sort_unique_int64(*out, n);
}

/* cdp.ack(ids) → how many were delivered */
PG_FUNCTION_INFO_V1(cdp_ack);

Datum
cdp_ack(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64	   *ids;
	int			n = int8_array_arg(fcinfo, 0, &ids);
	Datum		values[3];
	int			done;

	if (n == 0)
		PG_RETURN_INT32(0);
	SPI_connect();

	/*
	 * One statement: the update takes only what this session holds, and
	 * rechecks that on the newest version of a row another session is
	 * changing.  Fewer rows than ids refuse the call, naming the first id
	 * left out and why; the error undoes the update.
	 */
	if (plan == NULL)
	{
		Oid			types[3] = {INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID};

		plan = cdp_prepare("UPDATE cdp.outbox SET status = 'delivered', delivered_at = $2, "
						   "finished_at = $2, status_at = $2, lease_until = NULL, reason = NULL "
						   "WHERE outbox_id = ANY($1) AND leased_by = $3 "
						   "AND status IN ('leased', 'pending') RETURNING outbox_id", 3, types);
	}
	values[0] = cdp_int8_array(ids, n);
	values[1] = TimestampTzGetDatum(cdp_now());
	values[2] = CStringGetTextDatum(holder());
	cdp_spi_exec(plan, values, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed < (uint64) n)
	{
		int64	   *done_ids = palloc(sizeof(int64) * Max(SPI_processed, 1));
		int			ndone = cdp_spi_int64_column(done_ids);
		int			left = 0;

		qsort(done_ids, ndone, sizeof(int64), cdp_cmp_int64);
		for (int i = 0; i < n; i++)
			if (!cdp_sorted_contains(done_ids, ndone, ids[i]))
				ids[left++] = ids[i];
		check_held(ids, left, "acknowledged", false);
		elog(ERROR, "pg_cdp: outbox messages changed during cdp.ack");
	}
	done = SPI_processed;
	SPI_finish();
	PG_RETURN_INT32(done);
}

/* cdp.fail(id, error, retry_in, permanent) → 'retry' or 'dead' */
PG_FUNCTION_INFO_V1(cdp_fail);

Datum
cdp_fail(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr plan = NULL;
	int64		id;
	char	   *error;
	bool		permanent = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	int64		retry_us = -1;
	TimestampTz now = cdp_now();
	const CdpChannel *c;
	int			attempts;
	bool		dead;
	char	   *status;
	char	   *reason = NULL;
	TimestampTz next = now;
	Datum		values[7];
	char		nulls[7];
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("id must not be null")));
	id = PG_GETARG_INT64(0);
	error = PG_ARGISNULL(1) ? pstrdup("(no error given)") : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strlen(error) > 4000)
		error[4000] = '\0';
	if (!PG_ARGISNULL(2))
	{
		retry_us = interval_usecs(PG_GETARG_DATUM(2));
		if (retry_us < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("retry_in must not be negative"),
					 errhint("Pass permanent => true for a failure that retrying cannot mend.")));
	}

	SPI_connect();
	require_held(&id, 1, "failed");
	if (read_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		read_plan = cdp_prepare("SELECT channel, attempts FROM cdp.outbox WHERE outbox_id = $1",
								1, types);
	}
	values[0] = Int64GetDatum(id);
	cdp_spi_exec(read_plan, values, SPI_OK_SELECT);
	c = cdp_outbox_channel(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	dead = permanent || c == NULL || attempts >= c->max_attempts;
	if (dead)
	{
		status = "dead";
		reason = permanent ? psprintf("permanent failure: %s", error) :
			psprintf("failed %d times", attempts);
	}
	else
	{
		status = "retry";
		if (retry_us < 0)
		{
			/* exponential, capped, then jittered to half to full */
			double		delay = (double) c->backoff_base * pow(2.0, Max(attempts - 1, 0));

			delay = Min(delay, (double) c->backoff_max);
			delay = delay / 2 + pg_prng_double(&pg_global_prng_state) * delay / 2;
			retry_us = (int64) delay;
		}
		next = now + retry_us;
	}
	if (plan == NULL)
	{
		Oid			types[7] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, BOOLOID};

		plan = cdp_prepare("UPDATE cdp.outbox SET status = $2, last_error = $3, reason = $4, "
						   "not_before = $5, status_at = $6, lease_until = NULL, "
						   "finished_at = CASE WHEN $7 THEN $6 END, "
						   "errors = errors || jsonb_build_array(jsonb_build_object("
						   "'attempt', attempts, 'at', $6, 'error', $3)) "
						   "WHERE outbox_id = $1", 7, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(status);
	values[2] = CStringGetTextDatum(error);
	values[3] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	if (!reason)
		nulls[3] = 'n';
	values[4] = TimestampTzGetDatum(next);
	values[5] = TimestampTzGetDatum(now);
	values[6] = BoolGetDatum(dead);
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "pg_cdp: could not record the failure");
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(status));
}

/* Dead letters back to pending; notifies their channels. */
static int
replay(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	int			n;

	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "pg_cdp: could not replay");
	n = SPI_processed;
	for (int i = 0; i < n; i++)
		Async_Notify(OUTBOX_NOTIFY_CHANNEL,
					 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	return n;
}

#define REPLAY_SET \
	"SET status = 'pending', attempts = 0, not_before = $2, finished_at = NULL, " \
	"reason = 'replayed', leased_by = NULL, lease_until = NULL, status_at = $2 "

/* cdp.replay(ids) → how many dead letters go again */
PG_FUNCTION_INFO_V1(cdp_replay_ids);

Datum
cdp_replay_ids(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64	   *ids;
	int			n = int8_array_arg(fcinfo, 0, &ids);
	Datum		values[2];

	if (n == 0)
		PG_RETURN_INT32(0);
	SPI_connect();
	if (plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, TIMESTAMPTZOID};

		plan = cdp_prepare("UPDATE cdp.outbox " REPLAY_SET
						   "WHERE outbox_id = ANY($1) AND status = 'dead' RETURNING channel",
						   2, types);
	}
	values[0] = cdp_int8_array(ids, n);
	values[1] = TimestampTzGetDatum(cdp_now());
	n = replay(plan, values, NULL);
	SPI_finish();
	PG_RETURN_INT32(n);
}

/* cdp.replay(channel, since) → how many of its dead letters go again */
PG_FUNCTION_INFO_V1(cdp_replay_channel);

Datum
cdp_replay_channel(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	const CdpChannel *c;
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			n;

	SPI_connect();
	c = require_channel(fcinfo, 0);
	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};

		plan = cdp_prepare("UPDATE cdp.outbox " REPLAY_SET
						   "WHERE channel = $1 AND status = 'dead' "
						   "AND ($3::timestamptz IS NULL OR status_at >= $3) RETURNING channel",
						   3, types);
	}
	values[0] = CStringGetTextDatum(c->name);
	values[1] = TimestampTzGetDatum(cdp_now());
	values[2] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	if (PG_ARGISNULL(1))
		nulls[2] = 'n';
	n = replay(plan, values, nulls);
	SPI_finish();
	PG_RETURN_INT32(n);
}

/*
 * The worker task: expired leases go back to pending, channels whose
 * messages became due (a retry, a deferral, an expired lease, a message
 * enqueued for later) are notified, and finished messages older than
 * cdp.outbox_retention are deleted (by the worker at most once a second,
 * and in at most a tenth of its time).
 */
static int64
task_outbox(bool *more)
{
	static SPIPlanPtr expire_plan = NULL;
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr cleanup_plan = NULL;
	TimestampTz now = cdp_now();
	TimestampTz cutoff;
	Datum		values[3];
	int64		done = 0;
	bool		upkeep = true;
	TimestampTz started;

	if (!OidIsValid(get_relname_relid("outbox", get_namespace_oid("cdp", true))))
		return 0;
	if (expire_plan == NULL)
	{
		Oid			types[3] = {TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID};

		expire_plan = cdp_prepare("UPDATE cdp.outbox SET status = 'pending', reason = 'lease expired', "
								  "lease_until = NULL, status_at = $1 "
								  "WHERE finished_at IS NULL AND status = 'leased' AND lease_until <= $1 "
								  "RETURNING channel", 1, types);
		due_plan = cdp_prepare("SELECT c.name FROM cdp.channels c WHERE EXISTS ("
							   "SELECT 1 FROM cdp.outbox o WHERE o.channel = c.name "
							   "AND o.finished_at IS NULL AND o.status <> 'leased' "
							   "AND o.not_before > $2 AND o.not_before <= $1)", 2, types);
		/*
		 * Materialized: planned while the outbox was empty, a semi join
		 * would run the scan again for every message.
		 */
		cleanup_plan = cdp_prepare("WITH d AS MATERIALIZED ("
								   "SELECT outbox_id FROM cdp.outbox WHERE finished_at < $1 "
								   "ORDER BY outbox_id LIMIT $3) "
								   "DELETE FROM cdp.outbox o USING d WHERE o.outbox_id = d.outbox_id",
								   3, types);
	}

	/*
	 * Expired leases and old messages are found by reading every unfinished
	 * message, which takes long once millions are pending: the worker, whose
	 * rounds follow each other closely when it is busy, looks at most once a
	 * second and spends at most a tenth of its time on it (cdp.tick() looks
	 * every time).
	 */
	if (MyBackendType == B_BG_WORKER && !upkeep_more && next_upkeep != 0 &&
		GetCurrentTimestamp() < next_upkeep)
		upkeep = false;
	started = GetCurrentTimestamp();

	values[0] = TimestampTzGetDatum(now);
	if (upkeep)
	{
		cdp_spi_exec(expire_plan, values, SPI_OK_UPDATE_RETURNING);
		done += SPI_processed;
		for (uint64 i = 0; i < SPI_processed; i++)
			Async_Notify(OUTBOX_NOTIFY_CHANNEL,
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	}

	values[1] = TimestampTzGetDatum(last_due_check ? last_due_check : DT_NOBEGIN);
	cdp_spi_exec(due_plan, values, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
		Async_Notify(OUTBOX_NOTIFY_CHANNEL,
					 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	last_due_check = now;

	cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(now),
													 DirectFunctionCall3(interval_in,
																		 CStringGetDatum(outbox_retention),
																		 ObjectIdGetDatum(InvalidOid),
																		 Int32GetDatum(-1))));
	if (!upkeep)
		return done;
	values[0] = TimestampTzGetDatum(cutoff);
	values[2] = Int32GetDatum(outbox_cleanup_batch);
	cdp_spi_exec(cleanup_plan, values, SPI_OK_DELETE);
	done += SPI_processed;
	upkeep_more = SPI_processed >= (uint64) outbox_cleanup_batch;
	if (upkeep_more)
		*more = true;
	{
		TimestampTz end = GetCurrentTimestamp();

		next_upkeep = end + Max(USECS_PER_SEC, 9 * (end - started));
	}
	return done;
}
