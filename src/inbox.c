/*-------------------------------------------------------------------------
 *
 * inbox.c
 *	  The bulk paths: draining cdp.inbox (raw JSON lines loaded by COPY) and
 *	  cdp.ingest_batch, with bad messages kept in cdp.inbox_rejects.
 *
 * cdp.tick()'s drain takes up to cdp.batch_size inbox rows with DELETE ...
 * SKIP LOCKED, so it can run beside the worker, and deletes each row in the
 * same transaction as the event or the reject it becomes.  The worker and
 * its helpers drain in two transactions per batch (drain.c), with the
 * pieces exported here.  Validation never
 * throws: a malformed line becomes a reject with its reason.  Should the
 * write of a batch still fail on some message (a bug, a constraint), the
 * batch is split in halves, each in an internal subtransaction, until the
 * failing message is alone and can be rejected with the error; transient
 * errors (deadlock, lock timeout, cancel, out of resources) are not blamed
 * on a message and roll the whole batch back to be retried.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/jsonb.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "drainers.h"
#include "inbox.h"
#include "ingest.h"
#include "locks.h"
#include "profile.h"
#include "segment_spec.h"
#include "sources.h"
#include "status.h"
#include "util.h"

int			cdp_batch_size = 2000;

void
cdp_inbox_init(void)
{
	DefineCustomIntVariable("cdp.batch_size",
							"Inbox messages resolved together.",
							"Larger batches drain faster; while one is resolved, cdp.track calls wait for it.",
							&cdp_batch_size, 2000, 1, CDP_MAX_BATCH,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

static bool
transient_error(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_TRANSACTION_ROLLBACK:	/* 40: deadlock, serialization */
		case ERRCODE_INSUFFICIENT_RESOURCES:	/* 53: out of memory, locks */
		case ERRCODE_OPERATOR_INTERVENTION: /* 57: cancel, shutdown */
		case ERRCODE_SYSTEM_ERROR:	/* 58: I/O */
			return true;
		default:
			return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
	}
}

/* Undo what a failed write left in the messages, before trying again. */
void
cdp_reset_messages(CdpMessage *msgs, int n)
{
	for (int i = 0; i < n; i++)
	{
		CdpMessage *m = &msgs[i];

		m->duplicate = false;
		m->profile_id = 0;
		m->node = -1;
		m->nissues = m->base_nissues;
		if (m->id_generated)
		{
			m->message_id = NULL;
			m->id_generated = false;
		}
	}
}

/*
 * cdp_run_isolated runs work on msgs in an internal subtransaction; should it
 * fail, the batch is split in halves, each tried alone, until the failing
 * message is alone: it gets the error as its reject reason and the others
 * go through.  Work must start by clearing what an earlier try left.
 */
void
cdp_run_isolated(CdpMessage *msgs, int n, CdpBatchWork work)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	if (n == 0)
		return;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		work(msgs, n);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(oldcxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		if (transient_error(ed->sqlerrcode))
			ReThrowError(ed);
		if (n == 1 && ed->sqlerrcode == ERRCODE_UNIQUE_VIOLATION &&
			ed->constraint_name && strcmp(ed->constraint_name, "message_ids_pkey") == 0)
		{
			/*
			 * A copy of the message committed after ours was checked (a
			 * drainer writes events in a transaction of their own): ours is
			 * the duplicate.
			 */
			msgs[0].duplicate = true;
		}
		else if (n == 1)
		{
			cdp_set_error(&msgs[0].err, ed->sqlerrcode, ed->message,
						  ed->detail, ed->hint);
		}
		else
		{
			cdp_run_isolated(msgs, n / 2, work);
			cdp_run_isolated(msgs + n / 2, n - n / 2, work);
		}
	}
	PG_END_TRY();
}

static void
write_batch(CdpMessage *msgs, int n)
{
	cdp_reset_messages(msgs, n);
	cdp_write_messages(msgs, n);
}

static void parse_raw(CdpMessage *m, const char *raw);
static void preset_reject(CdpMessage *m);

/* Start a message again from its inbox fields alone. */
static void
reset_to_inbox_fields(CdpMessage *m)
{
	CdpMessage	keep = *m;

	memset(m, 0, sizeof(CdpMessage));
	m->raw = keep.raw;
	m->inbox_id = keep.inbox_id;
	m->inbox_tid = keep.inbox_tid;
	m->inbox_received_at = keep.inbox_received_at;
	m->source = keep.source;
	m->loaded_by = keep.loaded_by;
	m->preset_reject = keep.preset_reject;
	m->node = -1;
}

/*
 * Parsing does not throw on bad input, but a pathological line (nesting
 * deeper than the stack allows, say) still could: it is isolated like a
 * write, so the line becomes a reject instead of stopping the drain.
 */
void
cdp_parse_inbox_batch(CdpMessage *msgs, int n)
{
	for (int i = 0; i < n; i++)
	{
		CdpMessage *m = &msgs[i];

		reset_to_inbox_fields(m);
		if (m->preset_reject)
			preset_reject(m);
		else
			parse_raw(m, m->raw);
		if ((i & 127) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	cdp_check_sources(msgs, n, NULL);
}

/*
 * cdp_parse_inbox_lines parses the raw text of each message as the drain
 * does, whatever reject reason a loader gave and without the source
 * checks: what a line says, not whether it will be accepted.  cdp.forget
 * reads the identifiers of waiting rows and rejects with it.  Like the
 * drain's parse it may throw on a pathological line: run it isolated.
 */
void
cdp_parse_inbox_lines(CdpMessage *msgs, int n)
{
	for (int i = 0; i < n; i++)
	{
		reset_to_inbox_fields(&msgs[i]);
		parse_raw(&msgs[i], msgs[i].raw);
		if ((i & 127) == 0)
			CHECK_FOR_INTERRUPTS();
	}
}

/*
 * One-pass JSON to jsonb: pg_parse_json() validates without throwing, and
 * these semantic actions build the jsonb as it goes, so a malformed line
 * costs a reject, not an error, and a good one is parsed once.
 */
typedef struct JsonbBuild
{
	JsonbParseState *parse;
	JsonbValue *result;
	const char *error;
} JsonbBuild;

static void
jb_object_start(void *state)
{
	pushJsonbValue(&((JsonbBuild *) state)->parse, WJB_BEGIN_OBJECT, NULL);
}

static void
jb_object_end(void *state)
{
	JsonbBuild *b = state;

	b->result = pushJsonbValue(&b->parse, WJB_END_OBJECT, NULL);
}

static void
jb_array_start(void *state)
{
	pushJsonbValue(&((JsonbBuild *) state)->parse, WJB_BEGIN_ARRAY, NULL);
}

static void
jb_array_end(void *state)
{
	JsonbBuild *b = state;

	b->result = pushJsonbValue(&b->parse, WJB_END_ARRAY, NULL);
}

static void
jb_field_start(void *state, char *fname, bool isnull)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = fname;
	v.val.string.len = strlen(fname);
	pushJsonbValue(&((JsonbBuild *) state)->parse, WJB_KEY, &v);
}

/* numeric_in throws on absurd exponents; refuse them first. */
static bool
sane_number(const char *token)
{
	const char *e = strpbrk(token, "eE");

	if (strlen(token) > 1000)
		return false;
	return e == NULL || abs(atoi(e + 1)) <= 1000;
}

static void
jb_scalar(void *state, char *token, JsonTokenType type)
{
	JsonbBuild *b = state;
	JsonbValue	v;

	switch (type)
	{
		case JSON_TOKEN_STRING:
			v.type = jbvString;
			v.val.string.val = token;
			v.val.string.len = strlen(token);
			break;
		case JSON_TOKEN_NUMBER:
			if (!sane_number(token))
			{
				b->error = "a number is out of range";
				token = "0";
			}
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																CStringGetDatum(token),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = (type == JSON_TOKEN_TRUE);
			break;
		default:
			v.type = jbvNull;
			break;
	}
	if (b->parse == NULL)
	{
		/* a bare scalar: jsonb keeps it as a one-element raw array */
		JsonbValue	va;

		va.type = jbvArray;
		va.val.array.rawScalar = true;
		va.val.array.nElems = 1;
		pushJsonbValue(&b->parse, WJB_BEGIN_ARRAY, &va);
		pushJsonbValue(&b->parse, WJB_ELEM, &v);
		b->result = pushJsonbValue(&b->parse, WJB_END_ARRAY, NULL);
	}
	else
		pushJsonbValue(&b->parse,
					   b->parse->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE, &v);
}

/*
 * Parse the raw text of one inbox line without throwing.
 */
static void
parse_raw(CdpMessage *m, const char *raw)
{
	JsonLexContext *lex;
	JsonParseErrorType rc;
	JsonSemAction sem;
	JsonbBuild	build;
	size_t		len;

	if (raw == NULL)
	{
		cdp_set_error(&m->err, ERRCODE_NULL_VALUE_NOT_ALLOWED,
					  "message is null", "The inbox row has no message text.", NULL);
		return;
	}
	len = strlen(raw);
	if (len == 0 || strspn(raw, " \t\r\n") == len)
	{
		cdp_set_error(&m->err, ERRCODE_INVALID_TEXT_REPRESENTATION,
					  "message is empty", "The inbox row holds no JSON.", NULL);
		return;
	}
	if (len > (size_t) cdp_max_message_bytes)
	{
		cdp_set_error(&m->err, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					  "message is too large",
					  psprintf("The message takes %zu bytes; cdp.max_message_bytes is %d.",
							   len, cdp_max_message_bytes),
					  "Send large payloads by reference, or raise cdp.max_message_bytes.");
		return;
	}

	check_stack_depth();
	memset(&build, 0, sizeof(build));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &build;
	sem.object_start = jb_object_start;
	sem.object_end = jb_object_end;
	sem.array_start = jb_array_start;
	sem.array_end = jb_array_end;
	sem.object_field_start = jb_field_start;
	sem.scalar = jb_scalar;
	lex = makeJsonLexContextCstringLen((char *) raw, len, GetDatabaseEncoding(), true);
	rc = pg_parse_json(lex, &sem);
	if (rc == JSON_UNICODE_CODE_POINT_ZERO)
	{
		/* Valid JSON otherwise?  A parse that keeps no strings accepts \u0000. */
		lex = makeJsonLexContextCstringLen((char *) raw, len, GetDatabaseEncoding(), false);
		rc = pg_parse_json(lex, &nullSemAction);
		if (rc == JSON_SUCCESS)
		{
			cdp_set_error(&m->err, ERRCODE_INVALID_TEXT_REPRESENTATION,
						  "message contains \\u0000, which jsonb cannot store",
						  "The message is valid JSON, but PostgreSQL's jsonb cannot store the code point U+0000 (\\u0000) in a string: remove it, or replace it (with \\uFFFD, for example), before loading.",
						  NULL);
			return;
		}
	}
	if (rc != JSON_SUCCESS || build.error || build.result == NULL)
	{
		cdp_set_error(&m->err, ERRCODE_INVALID_TEXT_REPRESENTATION,
					  "message is not valid JSON",
					  rc != JSON_SUCCESS ? psprintf("%s", json_errdetail(rc, lex)) :
					  build.error ? build.error : "The line holds no JSON value.",
					  "Load one JSON message per line; see the README for COPY options that keep backslashes.");
		return;
	}
	cdp_parse_segment_message(JsonbValueToJsonb(build.result), m, m->inbox_received_at);
	m->base_nissues = m->nissues;
}

/* Record rejected messages with their reason. */
int
cdp_record_rejects(CdpMessage *msgs, int n, const char *default_source)
{
	static SPIPlanPtr plan = NULL;
	char	  **raw = palloc(sizeof(char *) * Max(n, 1));
	char	  **src = palloc(sizeof(char *) * Max(n, 1));
	char	  **state = palloc(sizeof(char *) * Max(n, 1));
	char	  **reason = palloc(sizeof(char *) * Max(n, 1));
	char	  **detail = palloc(sizeof(char *) * Max(n, 1));
	TimestampTz *recv = palloc(sizeof(TimestampTz) * Max(n, 1));
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	int			k = 0;
	Datum		args[8];

	for (int i = 0; i < n; i++)
	{
		CdpMessage *m = &msgs[i];

		if (m->err.sqlerrcode == 0)
			continue;
		raw[k] = m->raw;
		src[k] = m->source ? m->source : (char *) default_source;
		state[k] = pstrdup(unpack_sql_state(m->err.sqlerrcode));
		reason[k] = m->err.message;
		detail[k] = m->err.detail;
		recv[k] = m->inbox_received_at ? m->inbox_received_at : cdp_now();
		ids[k] = m->inbox_id;
		k++;
	}
	if (k == 0)
		return 0;
	if (plan == NULL)
	{
		Oid			argtypes[8] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID};

		plan = cdp_prepare("INSERT INTO cdp.inbox_rejects (message, source, sqlstate, reason, "
						   "  detail, received_at, inbox_id, rejected_at) "
						   "SELECT m, s, st, r, d, rc, nullif(i, 0), $8 "
						   "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
						   "            $5::text[], $6::timestamptz[], $7::int8[]) "
						   "  AS u(m, s, st, r, d, rc, i)", 8, argtypes);
	}
	args[0] = cdp_text_array(raw, k);
	args[1] = cdp_text_array(src, k);
	args[2] = cdp_text_array(state, k);
	args[3] = cdp_text_array(reason, k);
	args[4] = cdp_text_array(detail, k);
	args[5] = cdp_timestamptz_array(recv, k);
	args[6] = cdp_int8_array(ids, k);
	args[7] = TimestampTzGetDatum(cdp_now());
	cdp_spi_exec(plan, args, SPI_OK_INSERT);
	return k;
}

/*
 * A loader that already judged the message ("54000: message is larger than
 * 32 kB") leaves the reason in the inbox row; the drain keeps it as a reject.
 */
static void
preset_reject(CdpMessage *m)
{
	const char *r = m->preset_reject;
	int			code = ERRCODE_INVALID_PARAMETER_VALUE;

	if (strlen(r) > 7 && r[5] == ':' && r[6] == ' ' &&
		strspn(r, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5)
	{
		code = MAKE_SQLSTATE(r[0], r[1], r[2], r[3], r[4]);
		r += 7;
	}
	cdp_set_error(&m->err, code, r,
				  psprintf("The loader of source \"%s\" refused the message.",
						   m->source ? m->source : "(none)"),
				  NULL);
}

static int
cmp_inbox_id(const void *a, const void *b)
{
	int64		x = ((const CdpMessage *) a)->inbox_id;
	int64		y = ((const CdpMessage *) b)->inbox_id;

	return (x > y) - (x < y);
}

/*
 * cdp_inbox_messages_from_spi turns the rows of the last SPI statement
 * (inbox_id, message, received_at, source, reject_reason, loaded_by
 * [, ctid]) into
 * messages, in inbox id order.
 */
CdpMessage *
cdp_inbox_messages_from_spi(void)
{
	int			n = SPI_processed;
	CdpMessage *msgs = palloc0(sizeof(CdpMessage) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		msgs[i].inbox_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		msgs[i].raw = SPI_getvalue(tup, desc, 2);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		msgs[i].inbox_received_at = isnull ? 0 : DatumGetTimestampTz(d);
		msgs[i].source = SPI_getvalue(tup, desc, 4);
		msgs[i].node = -1;
		msgs[i].preset_reject = SPI_getvalue(tup, desc, 5);
		msgs[i].loaded_by = SPI_getvalue(tup, desc, 6);
		if (desc->natts >= 7)
			ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 7, &isnull)),
							&msgs[i].inbox_tid);
	}
	/* in id order already, but the plan is not bound to keep it */
	qsort(msgs, n, sizeof(CdpMessage), cmp_inbox_id);
	return msgs;
}

/*
 * cdp_drain_inbox turns up to limit inbox rows into events or rejects:
 * cdp.tick()'s drain, in the caller's transaction.  Returns the number of
 * rows taken; *rejected gets the rejects among them.  The caller is
 * connected to SPI and owns the transaction.
 *
 * It runs beside the worker's drainers without a wait cycle with them.
 * Before it locks any inbox row it takes the global ingest lock
 * exclusively (so no drainer resolves until it ends) and waits for every
 * drainer's batch already resolved to be written; then it skips the rows
 * the drainers claim.  So no drainer waits for a row it holds while it
 * waits for a drainer, as it must when a merge empties a profile that a
 * drainer is writing to.
 */
int
cdp_drain_inbox(int limit, int *rejected)
{
	static SPIPlanPtr probe_plan = NULL;
	static SPIPlanPtr plan = NULL;
	CdpMessage *msgs;
	int			n;
	int64		lo = PG_INT64_MIN;
	int64		hi = PG_INT64_MIN;
	Datum		args[3];

	*rejected = 0;
	if (probe_plan == NULL)
		probe_plan = cdp_prepare("SELECT 1 FROM cdp.inbox LIMIT 1", 0, NULL);
	cdp_spi_exec(probe_plan, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;

	cdp_lock_ingest_exclusive();
	cdp_wait_for_all_drain_writers();
	(void) cdp_drainers_claims_span(-1, &lo, &hi);
	if (plan == NULL)
	{
		Oid			argtypes[3] = {INT4OID, INT8OID, INT8OID};

		/*
		 * The ids as an array: one index scan deletes them, in id order,
		 * where a join would hash them first and return them unordered.
		 */
		plan = cdp_prepare("DELETE FROM cdp.inbox WHERE inbox_id = ANY (ARRAY("
						   "  SELECT inbox_id FROM cdp.inbox WHERE inbox_id < $2 OR inbox_id > $3 "
						   "  ORDER BY inbox_id LIMIT $1 FOR UPDATE SKIP LOCKED)) "
						   "RETURNING inbox_id, message, received_at, source, reject_reason, loaded_by",
						   3, argtypes);
	}
	args[0] = Int32GetDatum(limit);
	args[1] = Int64GetDatum(lo);
	args[2] = Int64GetDatum(hi);
	cdp_spi_exec(plan, args, SPI_OK_DELETE_RETURNING);
	n = SPI_processed;
	if (n == 0)
		return 0;

	msgs = cdp_inbox_messages_from_spi();
	cdp_run_isolated(msgs, n, cdp_parse_inbox_batch);
	cdp_run_isolated(msgs, n, write_batch);
	*rejected = cdp_record_rejects(msgs, n, "inbox");
	return n;
}

/*
 * cdp.ingest_batch(messages jsonb, source text) → jsonb
 *
 * A JSON array of Segment-spec messages, or a Segment batch object
 * {"batch": [...], "sentAt": ...}.  Good messages land, bad ones go to
 * cdp.inbox_rejects with their reason; returns the counts.  Message ids
 * are deduplicated within the source (NULL: the SQL callers' namespace).
 */
PG_FUNCTION_INFO_V1(cdp_ingest_batch);
Datum
cdp_ingest_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *in;
	JsonbValue	v;
	JsonbContainer *arr;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	CdpMessage *msgs;
	int			n = 0;
	int			cap;
	int			accepted = 0,
				dups = 0,
				rejects;
	char	   *batch_sent_at = NULL;
	char	   *source = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	TimestampTz now;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("messages must not be null")));
	in = PG_GETARG_JSONB_P(0);
	if (JB_ROOT_IS_ARRAY(in) && !JB_ROOT_IS_SCALAR(in))
		arr = &in->root;
	else if (JB_ROOT_IS_OBJECT(in) && cdp_jsonb_get(in, "batch", &v) &&
			 v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
	{
		arr = v.val.binary.data;
		batch_sent_at = cdp_jsonb_get_text(in, "sentAt", NULL);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("messages must be a JSON array or an object with a \"batch\" array"),
				 errhint("Pass [{\"type\": \"track\", ...}, ...] or {\"batch\": [...]}.")));

	cap = Max(JsonContainerSize(arr), 1);
	if (cap > 100000)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a batch holds at most 100000 messages"),
				 errdetail("This one holds %d.", cap),
				 errhint("Split it, or COPY the messages into cdp.inbox.")));
	msgs = palloc0(sizeof(CdpMessage) * cap);
	now = cdp_now();

	SPI_connect();
	if (source)
	{
		CdpMessage	probe;

		memset(&probe, 0, sizeof(probe));
		probe.source = source;
		cdp_check_sources(&probe, 1, cdp_writing_role());
		if (probe.err.sqlerrcode)
			cdp_raise(&probe.err);
	}
	it = JsonbIteratorInit(arr);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *jm;
		CdpMessage *m;

		if (tok != WJB_ELEM)
			continue;
		m = &msgs[n++];
		m->node = -1;
		m->inbox_received_at = now;
		m->source = source;
		jm = JsonbValueToJsonb(&v);
		m->raw = JsonbToCString(NULL, &jm->root, VARSIZE(jm));
		if (batch_sent_at && v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data) &&
			cdp_jsonb_get_text(jm, "sentAt", NULL) == NULL)
			jm = cdp_traits_merge(jm, NULL, cdp_jsonb_pair("sentAt", batch_sent_at),
								  NULL, NULL);
		cdp_parse_segment_message(jm, m, now);
		m->base_nissues = m->nissues;
		if ((n & 127) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	for (int start = 0; start < n; start += cdp_batch_size)
		cdp_run_isolated(msgs + start, Min(cdp_batch_size, n - start), write_batch);
	rejects = cdp_record_rejects(msgs, n, "ingest_batch");
	for (int i = 0; i < n; i++)
	{
		if (msgs[i].err.sqlerrcode)
			continue;
		if (msgs[i].duplicate)
			dups++;
		else
			accepted++;
	}
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
										CStringGetDatum(psprintf("{\"accepted\": %d, \"duplicates\": %d, \"rejected\": %d}",
																 accepted, dups, rejects))));
}

/*
 * Statement trigger on cdp.inbox: new rows are waiting.
 */
PG_FUNCTION_INFO_V1(cdp_inbox_wake);

Datum
cdp_inbox_wake(PG_FUNCTION_ARGS)
{
	cdp_wake_worker_at_commit();
	return PointerGetDatum(NULL);
}
