/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  Events in: cdp.track, cdp.identify, cdp.ingest (one Segment-spec
 *	  message), cdp.ingest_batch, and the writer every path shares.
 *
 * Every entry point turns its input into CdpMessage structs, validates them
 * without throwing (so the bulk paths can keep a bad message as a reject
 * while the rest land), lets the identity engine resolve them all at once,
 * and writes events, message ids, traits, issues and the profile-changed
 * marks with one statement each.  The single-call functions raise the
 * validation error instead.
 *
 * Segment-spec fields read (https://segment.com/docs/connections/spec/):
 * type, messageId, userId, anonymousId, previousId (alias), event (track),
 * name and category (page, screen), groupId (group), traits, properties,
 * context (context.traits, context.externalIds), channel, timestamp (or
 * originalTimestamp, as RudderStack sends it), sentAt and receivedAt.  pg_cdp also reads a top-level "identifiers"
 * object of type → value, as cdp.track takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "pg_cdp.h"
#include "engine.h"

static const char *const message_types[] = {
	"track", "identify", "page", "screen", "alias", "group", NULL
};

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

static void
field_error(CdpMessage *m, int code, const char *field, const char *what,
			const char *hint)
{
	cdp_set_error(&m->err, code,
				  psprintf("message field \"%s\" %s", field, what),
				  psprintf("The message was not accepted because of field \"%s\".", field),
				  hint);
}

/* A message that kept no identifier at all cannot be attributed. */
void
cdp_require_identifier(CdpMessage *m)
{
	StringInfoData d;

	if (m->err.sqlerrcode || m->nidents > 0)
		return;
	initStringInfo(&d);
	appendStringInfoString(&d, "Every identifier of the message was empty, invalid or blocked");
	for (int i = 0; i < m->nissues && i < 5; i++)
		appendStringInfo(&d, "%s %s \"%s\": %s", i ? ";" : ":", m->issues[i].type,
						 m->issues[i].value, m->issues[i].reason);
	appendStringInfoChar(&d, '.');
	cdp_set_error(&m->err, ERRCODE_INVALID_PARAMETER_VALUE,
				  "message has no usable identifier", d.data,
				  "Blocked values are listed in cdp.identifier_types.blocked_values.");
}

static Jsonb *
empty_object(void)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
}

/* The text of a string-or-number field; error when it is something else. */
static char *
id_field(Jsonb *obj, CdpMessage *m, const char *field)
{
	JsonbValue	v;
	char	   *s;

	if (cdp_jsonb_get(obj, field, &v) == NULL || v.type == jbvNull)
		return NULL;
	if (v.type != jbvString && v.type != jbvNumeric)
	{
		field_error(m, ERRCODE_INVALID_PARAMETER_VALUE, field,
					"must be a string", NULL);
		return NULL;
	}
	s = cdp_jsonb_get_text(obj, field, NULL);
	if (s && s[0] == '\0')
		return NULL;
	return s;
}

static Jsonb *
object_field(Jsonb *obj, CdpMessage *m, const char *field)
{
	JsonbValue	v;

	if (cdp_jsonb_get(obj, field, &v) == NULL || v.type == jbvNull)
		return NULL;
	if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
	{
		field_error(m, ERRCODE_INVALID_PARAMETER_VALUE, field,
					"must be an object", NULL);
		return NULL;
	}
	return JsonbValueToJsonb(&v);
}

static bool
timestamp_field(Jsonb *obj, CdpMessage *m, const char *field, TimestampTz *out)
{
	JsonbValue	v;
	char	   *s;

	if (cdp_jsonb_get(obj, field, &v) == NULL || v.type == jbvNull)
		return false;
	if (v.type != jbvString)
	{
		field_error(m, ERRCODE_INVALID_DATETIME_FORMAT, field,
					"must be an ISO 8601 timestamp string", NULL);
		return false;
	}
	s = pnstrdup(v.val.string.val, v.val.string.len);
	if (!cdp_parse_timestamptz(s, out))
	{
		field_error(m, ERRCODE_INVALID_DATETIME_FORMAT, field,
					psprintf("is not a valid timestamp: \"%s\"", s),
					"Send ISO 8601 timestamps such as 2026-11-23T10:00:00.000Z.");
		return false;
	}
	return true;
}

/* Identifiers carried by a traits object: email and phone. */
static void
identifiers_from_traits(Jsonb *traits, CdpMessage *m)
{
	char	   *v;

	if (traits == NULL)
		return;
	if ((v = cdp_jsonb_get_text(traits, "email", NULL)) != NULL && v[0])
		cdp_message_add_identifier(m, "email", v, false);
	if ((v = cdp_jsonb_get_text(traits, "phone", NULL)) != NULL && v[0])
		cdp_message_add_identifier(m, "phone", v, false);
}

/*
 * cdp_parse_segment_message fills out from one Segment-spec message.
 * Returns false (with out->err set) when the message cannot be accepted.
 */
bool
cdp_parse_segment_message(Jsonb *msg, CdpMessage *out, TimestampTz received_at)
{
	char	   *type;
	char	   *user_id;
	char	   *anon_id;
	Jsonb	   *context;
	Jsonb	   *traits;
	Jsonb	   *props;
	TimestampTz ts = 0,
				sent_at = 0,
				msg_received = 0;
	bool		has_ts,
				has_sent;
	JsonbValue	v;
	int			ti;

	out->received_at = received_at;
	if (msg == NULL || !JB_ROOT_IS_OBJECT(msg) || JB_ROOT_IS_SCALAR(msg))
	{
		cdp_set_error(&out->err, ERRCODE_INVALID_PARAMETER_VALUE,
					  "message must be a JSON object",
					  "A Segment-spec message is an object with a \"type\" field.", NULL);
		return false;
	}
	if (VARSIZE(msg) > cdp_max_message_bytes)
	{
		cdp_set_error(&out->err, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					  "message is too large",
					  psprintf("The message takes %u bytes; cdp.max_message_bytes is %d.",
							   (unsigned) VARSIZE(msg), cdp_max_message_bytes),
					  "Send large payloads by reference, or raise cdp.max_message_bytes.");
		return false;
	}

	type = cdp_jsonb_get_text(msg, "type", NULL);
	if (type == NULL || type[0] == '\0')
	{
		field_error(out, ERRCODE_INVALID_PARAMETER_VALUE, "type", "is required",
					"Use one of track, identify, page, screen, alias, group.");
		return false;
	}
	for (ti = 0; message_types[ti]; ti++)
		if (pg_strcasecmp(type, message_types[ti]) == 0)
			break;
	if (message_types[ti] == NULL)
	{
		cdp_set_error(&out->err, ERRCODE_INVALID_PARAMETER_VALUE,
					  psprintf("unknown message type \"%s\"", type),
					  "The message was not accepted because of field \"type\".",
					  "Use one of track, identify, page, screen, alias, group.");
		return false;
	}
	out->msgtype = (char *) message_types[ti];

	out->message_id = id_field(msg, out, "messageId");
	if (out->message_id && strlen(out->message_id) > 512)
		field_error(out, ERRCODE_STRING_DATA_RIGHT_TRUNCATION, "messageId",
					"is longer than 512 bytes", NULL);
	user_id = id_field(msg, out, "userId");
	anon_id = id_field(msg, out, "anonymousId");
	context = object_field(msg, out, "context");
	traits = object_field(msg, out, "traits");
	props = object_field(msg, out, "properties");
	if (out->err.sqlerrcode)
		return false;

	if (strcmp(out->msgtype, "alias") == 0)
	{
		char	   *prev = id_field(msg, out, "previousId");

		if (prev == NULL && !out->err.sqlerrcode)
			field_error(out, ERRCODE_INVALID_PARAMETER_VALUE, "previousId",
						"is required in an alias message", NULL);
		if (user_id == NULL && !out->err.sqlerrcode)
			field_error(out, ERRCODE_INVALID_PARAMETER_VALUE, "userId",
						"is required in an alias message", NULL);
		if (out->err.sqlerrcode)
			return false;
		cdp_message_add_identifier(out, "anonymous_id", prev, false);
		if (out->nidents > 0)
			out->idents[out->nidents - 1].alias_previous = true;
	}
	else if (user_id == NULL && anon_id == NULL)
	{
		cdp_set_error(&out->err, ERRCODE_INVALID_PARAMETER_VALUE,
					  "message needs \"userId\" or \"anonymousId\"",
					  "Both identifier fields of the message are missing or empty.",
					  "Segment SDKs always send an anonymousId; server-side sources must set one of them.");
		return false;
	}
	if (user_id)
		cdp_message_add_identifier(out, "user_id", user_id, false);
	if (anon_id)
		cdp_message_add_identifier(out, "anonymous_id", anon_id, false);

	/* Identifiers in traits, context.traits, context.externalIds, identifiers. */
	if (strcmp(out->msgtype, "identify") == 0 || strcmp(out->msgtype, "group") == 0)
		identifiers_from_traits(strcmp(out->msgtype, "identify") == 0 ? traits : NULL, out);
	if (context)
	{
		Jsonb	   *ctraits = cdp_jsonb_get_object(context, "traits");

		identifiers_from_traits(ctraits, out);
		if (cdp_jsonb_get(context, "externalIds", &v) && v.type == jbvBinary &&
			JsonContainerIsArray(v.val.binary.data))
		{
			JsonbIterator *it = JsonbIteratorInit(v.val.binary.data);
			JsonbValue	e;
			JsonbIteratorToken tok;

			while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
			{
				if (tok == WJB_ELEM && e.type == jbvBinary &&
					JsonContainerIsObject(e.val.binary.data))
				{
					Jsonb	   *x = JsonbValueToJsonb(&e);
					char	   *xt = cdp_jsonb_get_text(x, "type", NULL);
					char	   *xid = cdp_jsonb_get_text(x, "id", NULL);

					if (xt && xid && xid[0])
						cdp_message_add_identifier(out, xt, xid, false);
				}
			}
		}
	}
	{
		Jsonb	   *extra = object_field(msg, out, "identifiers");

		if (extra)
			cdp_parse_identifiers(extra, out, false);
	}
	if (out->err.sqlerrcode)
		return false;

	/* Event name and properties per message type. */
	if (strcmp(out->msgtype, "track") == 0)
	{
		JsonbValue	ev;

		if (cdp_jsonb_get(msg, "event", &ev) == NULL || ev.type != jbvString ||
			ev.val.string.len == 0)
		{
			field_error(out, ERRCODE_INVALID_PARAMETER_VALUE, "event",
						"is required in a track message and must be a non-empty string", NULL);
			return false;
		}
		out->event = pnstrdup(ev.val.string.val, Min(ev.val.string.len, 200));
		out->properties = props ? props : empty_object();
	}
	else if (strcmp(out->msgtype, "page") == 0 || strcmp(out->msgtype, "screen") == 0)
	{
		JsonbParseState *st = NULL;
		JsonbValue *res;
		char	   *name = cdp_jsonb_get_text(msg, "name", NULL);
		char	   *category = cdp_jsonb_get_text(msg, "category", NULL);

		out->event = out->msgtype;
		/* name and category join the properties, as Segment's warehouses do */
		if (name || category)
		{
			JsonbValue	k,
						s;
			JsonbIterator *it;
			JsonbIteratorToken tok;

			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			if (props)
			{
				it = JsonbIteratorInit(&props->root);
				while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
					if (tok == WJB_KEY || tok == WJB_VALUE)
						pushJsonbValue(&st, tok, &k);
			}
			k.type = jbvString;
			s.type = jbvString;
			if (name)
			{
				k.val.string.val = "name";
				k.val.string.len = 4;
				s.val.string.val = name;
				s.val.string.len = strlen(name);
				pushJsonbValue(&st, WJB_KEY, &k);
				pushJsonbValue(&st, WJB_VALUE, &s);
			}
			if (category)
			{
				k.val.string.val = "category";
				k.val.string.len = 8;
				s.val.string.val = category;
				s.val.string.len = strlen(category);
				pushJsonbValue(&st, WJB_KEY, &k);
				pushJsonbValue(&st, WJB_VALUE, &s);
			}
			res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
			out->properties = JsonbValueToJsonb(res);
		}
		else
			out->properties = props ? props : empty_object();
	}
	else if (strcmp(out->msgtype, "identify") == 0)
	{
		out->event = "identify";
		out->traits = traits ? traits : empty_object();
		out->properties = out->traits;
	}
	else if (strcmp(out->msgtype, "group") == 0)
	{
		char	   *group_id = id_field(msg, out, "groupId");

		if (group_id == NULL)
		{
			if (!out->err.sqlerrcode)
				field_error(out, ERRCODE_INVALID_PARAMETER_VALUE, "groupId",
							"is required in a group message", NULL);
			return false;
		}
		out->event = "group";
		out->properties = cdp_jsonb_pair("groupId", group_id);
		if (traits)
			out->properties = cdp_traits_merge(out->properties, NULL, traits, NULL, NULL);
	}
	else
	{
		out->event = "alias";
		out->properties = empty_object();
	}
	out->context = context;

	/* channel: the Segment field, else context.channel */
	out->channel = cdp_jsonb_get_text(msg, "channel", NULL);
	if (out->channel == NULL && context)
		out->channel = cdp_jsonb_get_text(context, "channel", NULL);

	/* Time, with Segment's clock-skew correction. */
	/* RudderStack's SDKs send the client's time as originalTimestamp only. */
	has_ts = timestamp_field(msg, out, "timestamp", &ts);
	if (!has_ts)
		has_ts = timestamp_field(msg, out, "originalTimestamp", &ts);
	has_sent = timestamp_field(msg, out, "sentAt", &sent_at);
	if (timestamp_field(msg, out, "receivedAt", &msg_received) && received_at == 0)
		out->received_at = msg_received;
	if (out->err.sqlerrcode)
		return false;
	if (out->received_at == 0)
		out->received_at = cdp_now();
	if (has_ts && has_sent)
	{
		/* timestamp = receivedAt - (sentAt - originalTimestamp) */
		int64		skew = sent_at - ts;

		out->occurred_at = out->received_at - skew;
		if (!IS_VALID_TIMESTAMP(out->occurred_at))
			out->occurred_at = ts;
	}
	else if (has_ts)
		out->occurred_at = ts;
	else
		out->occurred_at = out->received_at;

	cdp_require_identifier(out);
	return out->err.sqlerrcode == 0;
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
		m->properties = empty_object();
	m->occurred_at = PG_ARGISNULL(at_arg) ? cdp_now() : PG_GETARG_TIMESTAMPTZ(at_arg);
	if (TIMESTAMP_NOT_FINITE(m->occurred_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("occurred_at must be a finite timestamp")));
	m->received_at = cdp_now();
	m->channel = PG_ARGISNULL(channel_arg) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(channel_arg));
	if (!PG_ARGISNULL(id_arg))
	{
		m->message_id = text_to_cstring(PG_GETARG_TEXT_PP(id_arg));
		if (m->message_id[0] == '\0')
			m->message_id = NULL;
		else if (strlen(m->message_id) > 512)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("event_id is longer than 512 bytes")));
	}
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
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event must not be null or empty"),
				 errhint("Name the event, for example 'Order Completed'.")));
	SPI_connect();
	cdp_parse_identifiers(PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0), &m, true);
	m.msgtype = "track";
	m.event = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strlen(m.event) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("event name is longer than 200 bytes")));
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
