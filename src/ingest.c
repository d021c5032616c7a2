/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  Events in: the writer every ingest path shares, and cdp.track,
 *	  cdp.identify and cdp.ingest.
 *
 * Every entry point turns its input into CdpMessage structs (a single call
 * is a batch of one), lets the resolver resolve them all at once
 * (resolve.c), and writes events, message ids, traits, issues and the
 * profile-changed marks here with one statement each.  The single-call
 * functions raise the validation error instead of keeping a reject.
 *
 * cdp.events and cdp.message_ids are registered here as per-profile
 * tables, and the upkeep of the monthly partitions of cdp.events as a
 * worker task.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "clock.h"
#include "engine.h"
#include "idtypes.h"
#include "ingest.h"
#include "profile.h"
#include "registry.h"
#include "resolve.h"
#include "segment_spec.h"
#include "text_fields.h"
#include "util.h"
#include "worker.h"

static const CdpProfileTable ingest_tables[] = {
	{
		/*
		 * No index on profile_id (it would cost every message a random
		 * index insert): a loser's rows are found through its events, so
		 * they move before the events do.
		 */
		.name = "message_ids",
		.relation = "cdp.message_ids",
		.order = 150,
		.on_merge = CDP_ROWS_SQL,
		.merge_sql = "UPDATE cdp.message_ids AS x "
		"SET profile_id = ($2::int8[])[array_position($1::int8[], e.profile_id)] "
		"FROM cdp.events e WHERE e.profile_id = ANY($1::int8[]) "
		"  AND x.source = coalesce(e.source, '') AND x.message_id = e.event_id",
		.on_unmerge = CDP_ROWS_SQL,
		.unmerge_sql = "UPDATE cdp.message_ids d SET profile_id = m.loser_id "
		"FROM cdp.merges m WHERE m.merge_id = $1 AND d.profile_id = m.winner_id "
		"  AND d.original_profile_id = ANY(m.loser_members)",
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
	{
		/* an unmerge takes back the events first written to the loser */
		.name = "events",
		.relation = "cdp.events",
		.order = 200,
		.on_merge = CDP_ROWS_BY_PROFILE_ID,
		.on_unmerge = CDP_ROWS_SQL,
		.unmerge_sql = "UPDATE cdp.events e SET profile_id = m.loser_id "
		"FROM cdp.merges m WHERE m.merge_id = $1 AND e.profile_id = m.winner_id "
		"  AND e.original_profile_id = ANY(m.loser_members)",
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
};

/*
 * Month partitions of cdp.events: the previous month to two ahead, checked
 * once a minute.  A month whose rows sit in the default partition (the
 * worker was stopped, or events came before the first cdp.tick()) gets
 * them moved; that goes to the server log, not to cdp.tick()'s caller.
 */
static int64
task_partitions(bool *more)
{
	static TimestampTz last = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			rc;
	bool		isnull;
	int			nest;
	int64		created;

	*more = false;
	if (IsBackgroundWorker && last != 0 && !TimestampDifferenceExceeds(last, now, 60 * 1000))
		return 0;
	last = now;
	nest = NewGUCNestLevel();
	(void) set_config_option("client_min_messages", "warning", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("log_min_messages", "notice", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute("SELECT cdp.ensure_event_partitions(cdp.now() - interval '1 month', "
					 "cdp.now() + interval '2 months')", false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: partition maintenance failed");
	created = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										  &isnull));
	AtEOXact_GUC(true, nest);
	return created;
}

/* what later subsystems do with written events, in the same transaction */
#define MAX_EVENT_HOOKS 8
static CdpEventsWritten hooks[MAX_EVENT_HOOKS];
static int	nhooks = 0;

/*
 * cdp_register_events_written: hook runs after every batch of events is
 * written, in the writing transaction, with the batch's messages (those
 * with err set or duplicate were not written).  Computed traits keep
 * themselves exact this way, on every ingest path.
 */
void
cdp_register_events_written(CdpEventsWritten hook)
{
	if (nhooks >= MAX_EVENT_HOOKS)
		elog(ERROR, "pg_cdp: too many event hooks registered");
	hooks[nhooks++] = hook;
}

static const CdpTask partitions_task = {
	.name = "partitions",
	.run = task_partitions,
};

void
cdp_ingest_init(void)
{
	for (int i = 0; i < lengthof(ingest_tables); i++)
		cdp_register_profile_table(&ingest_tables[i]);
	cdp_register_task(&partitions_task);
}

/* A random message id for messages sent without one (no dedupe). */
static char *
generated_id(void)
{
	unsigned char b[16];

	if (!pg_strong_random(b, sizeof(b)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random message id")));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	return psprintf("gen-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
					b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/*
 * cdp_write_messages resolves msgs and writes everything they carry.
 * Rejected messages (err set) are left for the caller to report.
 */
void
cdp_write_messages(CdpMessage *msgs, int nmsgs)
{
	cdp_resolve_messages(msgs, nmsgs, false, NULL);
	cdp_apply_traits(msgs, nmsgs);
	cdp_write_events(msgs, nmsgs);
}

/*
 * cdp_apply_traits folds the traits of resolved messages into their
 * profiles, per profile first.  It belongs to resolution: a later batch
 * that merges a profile must see the traits it got.
 */
void
cdp_apply_traits(CdpMessage *msgs, int nmsgs)
{
	CdpTraitFold fold = {0};
	bool		any = false;

	for (int i = 0; i < nmsgs; i++)
	{
		CdpMessage *m = &msgs[i];

		if (m->err.sqlerrcode || m->duplicate || m->traits == NULL)
			continue;
		cdp_trait_fold_add(&fold, m->profile_id, m->traits,
						   cdp_traits_meta_for(m->traits, m->occurred_at, m->channel));
		any = true;
	}
	if (any)
		cdp_trait_fold_apply(&fold);
}

static void write_events(CdpMessage *msgs, int nmsgs, bool mark);

static int
cmp_profile_time(const void *a, const void *b)
{
	const CdpMessage *x = *(CdpMessage *const *) a;
	const CdpMessage *y = *(CdpMessage *const *) b;

	if (x->profile_id != y->profile_id)
		return x->profile_id < y->profile_id ? -1 : 1;
	if (x->occurred_at != y->occurred_at)
		return x->occurred_at < y->occurred_at ? -1 : 1;
	return (x > y) - (x < y);	/* stable: batch order */
}

/*
 * cdp_write_events writes the events of resolved messages, their message
 * ids, the profiles' change marks and the identifier issues.
 */
void
cdp_write_events(CdpMessage *msgs, int nmsgs)
{
	write_events(msgs, nmsgs, true);
}

/*
 * cdp_write_events_unmarked writes events that must not mark their
 * profiles changed: the segment engine's own Segment Entered / Exited
 * events, which would otherwise make it evaluate the profiles again.
 */
void
cdp_write_events_unmarked(CdpMessage *msgs, int nmsgs)
{
	write_events(msgs, nmsgs, false);
}

static void
write_events(CdpMessage *msgs, int nmsgs, bool mark)
{
	static SPIPlanPtr event_plan = NULL;
	static SPIPlanPtr mid_plan = NULL;
	static SPIPlanPtr issue_plan = NULL;
	int			n = 0;
	int			nmid = 0;
	int			nissue = 0;
	int64	   *pids;
	TimestampTz *occurred;
	TimestampTz *received;
	char	  **eids,
			  **events,
			  **channels,
			  **types,
			  **sources;
	Jsonb	  **props,
			  **contexts;
	Datum		args[10];
	TimestampTz now = cdp_now();
	CdpMessage **order;
	int			norder = 0;

	pids = palloc(sizeof(int64) * Max(nmsgs, 1));
	occurred = palloc(sizeof(TimestampTz) * Max(nmsgs, 1));
	received = palloc(sizeof(TimestampTz) * Max(nmsgs, 1));
	eids = palloc(sizeof(char *) * Max(nmsgs, 1));
	events = palloc(sizeof(char *) * Max(nmsgs, 1));
	channels = palloc(sizeof(char *) * Max(nmsgs, 1));
	types = palloc(sizeof(char *) * Max(nmsgs, 1));
	sources = palloc(sizeof(char *) * Max(nmsgs, 1));
	props = palloc(sizeof(Jsonb *) * Max(nmsgs, 1));
	contexts = palloc(sizeof(Jsonb *) * Max(nmsgs, 1));

	/*
	 * In the order of the events' profile index: consecutive rows go to
	 * neighbouring index pages, which stay in the CPU's caches, and each
	 * profile's events of the batch land together in the table.
	 */
	order = palloc(sizeof(CdpMessage *) * Max(nmsgs, 1));
	for (int i = 0; i < nmsgs; i++)
		if (msgs[i].err.sqlerrcode == 0 && !msgs[i].duplicate)
			order[norder++] = &msgs[i];
	qsort(order, norder, sizeof(CdpMessage *), cmp_profile_time);

	for (int i = 0; i < norder; i++)
	{
		CdpMessage *m = order[i];

		if (m->message_id == NULL)
		{
			m->message_id = generated_id();
			m->id_generated = true;
		}
		pids[n] = m->profile_id;
		occurred[n] = m->occurred_at;
		received[n] = m->received_at;
		eids[n] = m->message_id;
		events[n] = m->event;
		channels[n] = m->channel;
		types[n] = m->msgtype;
		sources[n] = m->source;
		props[n] = m->properties;
		contexts[n] = m->context;
		n++;
		if (!m->id_generated)
			nmid++;
		nissue += m->nissues;
	}
	if (n == 0)
		goto issues;

	if (event_plan == NULL)
	{
		Oid			argtypes[10] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, JSONBARRAYOID, TEXTARRAYOID};

		event_plan = cdp_prepare("INSERT INTO cdp.events (profile_id, occurred_at, event_id, event, "
								 "  properties, channel, type, received_at, original_profile_id, context, source) "
								 "SELECT p, o, i, e, coalesce(pr, '{}'), c, t, r, p, cx, s "
								 "FROM (SELECT unnest($1::int8[]) AS p, unnest($2::timestamptz[]) AS o, "
								 "        unnest($3::text[]) AS i, unnest($4::text[]) AS e, "
								 "        unnest($5::jsonb[]) AS pr, unnest($6::text[]) AS c, "
								 "        unnest($7::text[]) AS t, unnest($8::timestamptz[]) AS r, "
								 "        unnest($9::jsonb[]) AS cx, unnest($10::text[]) AS s) AS u",
								 10, argtypes);
	}
	args[0] = cdp_int8_array(pids, n);
	args[1] = cdp_timestamptz_array(occurred, n);
	args[2] = cdp_text_array(eids, n);
	args[3] = cdp_text_array(events, n);
	args[4] = cdp_jsonb_array(props, n);
	args[5] = cdp_text_array(channels, n);
	args[6] = cdp_text_array(types, n);
	args[7] = cdp_timestamptz_array(received, n);
	args[8] = cdp_jsonb_array(contexts, n);
	args[9] = cdp_text_array(sources, n);
	cdp_spi_exec(event_plan, args, SPI_OK_INSERT);

	/* Message ids, so a re-sent message is recognised. */
	if (nmid > 0)
	{
		char	  **ids = palloc(sizeof(char *) * nmid);
		char	  **srcs = palloc(sizeof(char *) * nmid);
		int64	   *mp = palloc(sizeof(int64) * nmid);
		TimestampTz *mo = palloc(sizeof(TimestampTz) * nmid);
		PairKey    *keys = palloc(sizeof(PairKey) * nmid);
		PairKey   **sorted = palloc(sizeof(PairKey *) * nmid);
		CdpMessage **owner = palloc(sizeof(CdpMessage *) * nmid);
		int			k = 0;

		/* in key order too, (message_id, source), for the same reason */
		for (int i = 0; i < norder; i++)
		{
			if (order[i]->id_generated)
				continue;
			keys[k].a = order[i]->source ? order[i]->source : "";
			keys[k].b = order[i]->message_id;
			owner[k] = order[i];
			sorted[k] = &keys[k];
			k++;
		}
		cdp_sort_pairs(sorted, nmid);
		for (k = 0; k < nmid; k++)
		{
			CdpMessage *m = owner[sorted[k] - keys];

			ids[k] = (char *) sorted[k]->b;
			srcs[k] = (char *) sorted[k]->a;
			mp[k] = m->profile_id;
			mo[k] = m->occurred_at;
		}
		if (mid_plan == NULL)
		{
			Oid			argtypes[5] = {TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID,
			TIMESTAMPTZOID, TEXTARRAYOID};

			mid_plan = cdp_prepare("INSERT INTO cdp.message_ids (source, message_id, profile_id, "
								   "  original_profile_id, occurred_at, received_at) "
								   "SELECT s, i, p, p, o, $4 "
								   "FROM (SELECT unnest($1::text[]) AS i, unnest($2::int8[]) AS p, "
								   "        unnest($3::timestamptz[]) AS o, unnest($5::text[]) AS s) AS u",
								   5, argtypes);
		}
		args[0] = cdp_text_array(ids, nmid);
		args[1] = cdp_int8_array(mp, nmid);
		args[2] = cdp_timestamptz_array(mo, nmid);
		args[3] = TimestampTzGetDatum(now);
		args[4] = cdp_text_array(srcs, nmid);
		cdp_spi_exec(mid_plan, args, SPI_OK_INSERT);
	}

	for (int h = 0; h < nhooks; h++)
		hooks[h] (msgs, nmsgs);

	/*
	 * The mark comes last, once the hooks have locked what they update (the
	 * profiles' computed traits): the segment engine locks those rows
	 * before it takes marks, so a writer it did not wait for finds the mark
	 * gone and writes it again.
	 */
	if (mark)
		cdp_mark_profiles_changed(pids, n, "event");

issues:
	if (nissue > 0)
	{
		int64	   *ip = palloc(sizeof(int64) * nissue);
		char	  **ie = palloc(sizeof(char *) * nissue);
		char	  **it = palloc(sizeof(char *) * nissue);
		char	  **iv = palloc(sizeof(char *) * nissue);
		char	  **ir = palloc(sizeof(char *) * nissue);
		int			k = 0;

		for (int i = 0; i < nmsgs; i++)
		{
			CdpMessage *m = &msgs[i];

			if (m->err.sqlerrcode || m->duplicate)
				continue;
			for (int j = 0; j < m->nissues; j++)
			{
				ip[k] = m->profile_id;
				ie[k] = m->message_id;
				it[k] = m->issues[j].type;
				iv[k] = m->issues[j].value;
				ir[k] = m->issues[j].reason;
				k++;
			}
		}
		if (issue_plan == NULL)
		{
			Oid			argtypes[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};

			issue_plan = cdp_prepare("INSERT INTO cdp.identifier_issues (profile_id, event_id, type, "
									 "  value, reason, recorded_at) "
									 "SELECT p, e, t, left(v, 1024), r, $6 FROM unnest($1::int8[], "
									 "  $2::text[], $3::text[], $4::text[], $5::text[]) AS u(p, e, t, v, r)",
									 6, argtypes);
		}
		args[0] = cdp_int8_array(ip, k);
		args[1] = cdp_text_array(ie, k);
		args[2] = cdp_text_array(it, k);
		args[3] = cdp_text_array(iv, k);
		args[4] = cdp_text_array(ir, k);
		args[5] = TimestampTzGetDatum(now);
		if (k > 0)
			cdp_spi_exec(issue_plan, args, SPI_OK_INSERT);
	}
}

/* ---- the SQL-callable single-message functions ---- */

static void
check_event_args(CdpMessage *m, FunctionCallInfo fcinfo, const char *props_name, int props_arg,
				 int at_arg, int channel_arg, int id_arg)
{
	if (props_arg >= 0 && !PG_ARGISNULL(props_arg))
	{
		Jsonb	   *p = PG_GETARG_JSONB_P(props_arg);

		if (!JB_ROOT_IS_OBJECT(p) || JB_ROOT_IS_SCALAR(p))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be a JSON object", props_name),
					 errdetail("Got a JSON %s.", JB_ROOT_IS_SCALAR(p) ? "scalar" : "array")));
		if (VARSIZE(p) > cdp_max_message_bytes)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("%s are too large", props_name),
					 errdetail("They take %u bytes; cdp.max_message_bytes is %d.",
							   (unsigned) VARSIZE(p), cdp_max_message_bytes),
					 errhint("Send large payloads by reference, or raise cdp.max_message_bytes.")));
		m->properties = p;
	}
	else
		m->properties = cdp_empty_object();
	m->occurred_at = PG_ARGISNULL(at_arg) ? cdp_now() : PG_GETARG_TIMESTAMPTZ(at_arg);
	if (TIMESTAMP_NOT_FINITE(m->occurred_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("occurred_at must be a finite timestamp")));
	m->received_at = cdp_now();
	m->channel = PG_ARGISNULL(channel_arg) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(channel_arg));
	cdp_check_text_arg(&m->channel, CDP_MAX_CHANNEL_BYTES, "channel");
	/* an empty event_id is no id: one is generated, without dedupe */
	m->message_id = PG_ARGISNULL(id_arg) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(id_arg));
	cdp_check_text_arg(&m->message_id, CDP_MAX_ID_BYTES, "event_id");
}

static Datum
write_one(CdpMessage *m)
{
	if (m->err.sqlerrcode)
		cdp_raise(&m->err);
	cdp_require_identifier(m);
	if (m->err.sqlerrcode)
		cdp_raise(&m->err);
	cdp_write_messages(m, 1);
	return Int64GetDatum(m->profile_id);
}

/*
 * cdp.track(identifiers, event, properties, occurred_at, channel, event_id)
 */
PG_FUNCTION_INFO_V1(cdp_track);

Datum
cdp_track(PG_FUNCTION_ARGS)
{
	CdpMessage	m;
	Datum		result;

	memset(&m, 0, sizeof(m));
	m.event = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	cdp_check_text_arg(&m.event, CDP_MAX_NAME_BYTES, "event name");
	if (m.event == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event must not be null or empty"),
				 errhint("Name the event, for example 'Order Completed'.")));
	SPI_connect();
	cdp_parse_identifiers(PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0), &m, true);
	m.msgtype = "track";
	check_event_args(&m, fcinfo, "properties", 2, 3, 4, 5);
	result = write_one(&m);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * cdp.identify(identifiers, traits, occurred_at, channel, event_id)
 */
PG_FUNCTION_INFO_V1(cdp_identify);

Datum
cdp_identify(PG_FUNCTION_ARGS)
{
	CdpMessage	m;
	Datum		result;

	memset(&m, 0, sizeof(m));
	SPI_connect();
	cdp_parse_identifiers(PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0), &m, true);
	m.msgtype = "identify";
	m.event = "identify";
	check_event_args(&m, fcinfo, "traits", 1, 2, 3, 4);
	m.traits = m.properties;
	result = write_one(&m);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * cdp.ingest(message jsonb) → bigint: one Segment-spec message.
 */
PG_FUNCTION_INFO_V1(cdp_ingest);

Datum
cdp_ingest(PG_FUNCTION_ARGS)
{
	CdpMessage	m;
	Datum		result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("message must not be null")));
	memset(&m, 0, sizeof(m));
	SPI_connect();
	cdp_parse_segment_message(PG_GETARG_JSONB_P(0), &m, 0);
	result = write_one(&m);
	SPI_finish();
	PG_RETURN_DATUM(result);
}
