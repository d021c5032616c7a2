/*-------------------------------------------------------------------------
 *
 * segment_spec.c
 *	  The parser of Segment-spec messages: one JSON message to a CdpMessage.
 *
 * cdp.ingest, cdp.ingest_batch, the inbox drain and the HTTP collector's
 * messages all come through here.  Parsing validates without throwing, so
 * the bulk paths can keep a bad message as a reject while the rest land.
 *
 * Segment-spec fields read (https://segment.com/docs/connections/spec/):
 * type, messageId, userId, anonymousId, previousId (alias), event (track),
 * name and category (page, screen), groupId (group), traits, properties,
 * context (context.traits, context.externalIds), channel, timestamp (or
 * originalTimestamp, as RudderStack sends it), sentAt and receivedAt.
 * pg_cdp also reads a top-level "identifiers" object of type → value, as
 * cdp.track takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "idtypes.h"
#include "profile.h"
#include "segment_spec.h"
#include "text_fields.h"
#include "util.h"

int			cdp_max_message_bytes = 4 * 1024 * 1024;

void
cdp_segment_spec_init(void)
{
	DefineCustomIntVariable("cdp.max_message_bytes",
							"Largest message (properties included) that ingest accepts.",
							NULL, &cdp_max_message_bytes, 4 * 1024 * 1024, 1024,
							256 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
}

static const char *const message_types[] = {
	"track", "identify", "page", "screen", "alias", "group", NULL
};

static void
field_error(CdpMessage *m, int code, const char *field, const char *what,
			const char *hint)
{
	cdp_set_error(&m->err, code,
				  psprintf("message field \"%s\" %s", field, what),
				  psprintf("The message was not accepted because of field \"%s\".", field),
				  hint);
}

/*
 * The rule of every text field (text_fields.c) for field of m: a violation
 * fails the message, an empty or blank value becomes NULL.
 */
static void
text_field(CdpMessage *m, char **value, const char *field, int max_bytes)
{
	if (m->err.sqlerrcode == 0)
		cdp_check_text(value, max_bytes, psprintf("message field \"%s\"", field), &m->err);
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
						 cdp_quote_text(m->issues[i].value), m->issues[i].reason);
	appendStringInfoChar(&d, '.');
	cdp_set_error(&m->err, ERRCODE_INVALID_PARAMETER_VALUE,
				  "message has no usable identifier", d.data,
				  "Blocked values are listed in cdp.identifier_types.blocked_values.");
}

Jsonb *
cdp_empty_object(void)
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
					psprintf("is not a valid timestamp: \"%s\"", cdp_quote_text(s)),
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
					  psprintf("unknown message type \"%s\"", cdp_quote_text(type)),
					  "The message was not accepted because of field \"type\".",
					  "Use one of track, identify, page, screen, alias, group.");
		return false;
	}
	out->msgtype = (char *) message_types[ti];

	out->message_id = id_field(msg, out, "messageId");
	text_field(out, &out->message_id, "messageId", CDP_MAX_ID_BYTES);
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
		cdp_message_add_previous_id(out, prev);
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
	cdp_message_finish_identifiers(out);
	if (out->err.sqlerrcode)
		return false;

	/* Event name and properties per message type. */
	if (strcmp(out->msgtype, "track") == 0)
	{
		JsonbValue	ev;

		if (cdp_jsonb_get(msg, "event", &ev) != NULL && ev.type == jbvString)
			out->event = pnstrdup(ev.val.string.val, ev.val.string.len);
		text_field(out, &out->event, "event", CDP_MAX_NAME_BYTES);
		if (out->err.sqlerrcode)
			return false;
		if (out->event == NULL)
		{
			field_error(out, ERRCODE_INVALID_PARAMETER_VALUE, "event",
						"is required in a track message and must be a non-empty string", NULL);
			return false;
		}
		out->properties = props ? props : cdp_empty_object();
	}
	else if (strcmp(out->msgtype, "page") == 0 || strcmp(out->msgtype, "screen") == 0)
	{
		JsonbParseState *st = NULL;
		JsonbValue *res;
		char	   *name = cdp_jsonb_get_text(msg, "name", NULL);
		char	   *category = cdp_jsonb_get_text(msg, "category", NULL);

		text_field(out, &name, "name", CDP_MAX_NAME_BYTES);
		text_field(out, &category, "category", CDP_MAX_NAME_BYTES);
		if (out->err.sqlerrcode)
			return false;
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
			out->properties = props ? props : cdp_empty_object();
	}
	else if (strcmp(out->msgtype, "identify") == 0)
	{
		out->event = "identify";
		out->traits = traits ? traits : cdp_empty_object();
		out->properties = out->traits;
	}
	else if (strcmp(out->msgtype, "group") == 0)
	{
		char	   *group_id = id_field(msg, out, "groupId");

		text_field(out, &group_id, "groupId", CDP_MAX_ID_BYTES);
		if (out->err.sqlerrcode)
			return false;
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
		out->properties = cdp_empty_object();
	}
	out->context = context;

	/* channel: the Segment field, else context.channel */
	out->channel = cdp_jsonb_get_text(msg, "channel", NULL);
	text_field(out, &out->channel, "channel", CDP_MAX_CHANNEL_BYTES);
	if (out->channel == NULL && context)
	{
		out->channel = cdp_jsonb_get_text(context, "channel", NULL);
		text_field(out, &out->channel, "context.channel", CDP_MAX_CHANNEL_BYTES);
	}
	if (out->err.sqlerrcode)
		return false;

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
