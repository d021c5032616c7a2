/*-------------------------------------------------------------------------
 *
 * render.c
 *	  Message templates: {{placeholders}} filled from a person's traits
 *	  and the message's payload when the message is claimed.
 *
 * A placeholder is {{root.path}} with an optional default after a bar:
 * {{traits.first_name | default: "there"}}.  Roots: traits (the person's
 * identify traits, cdp.profiles.traits), payload (the message's payload),
 * and profile_id, outbox_id, address, channel.  A path walks nested
 * objects by key.  Strings insert as they are, numbers and booleans in
 * their JSON spelling, objects and arrays as JSON; JSON null and absent
 * keys have no value.  A placeholder with no value and no default makes
 * the whole message undeliverable (the caller suppresses it and names the
 * placeholder), because a message that greets "Dear ," is worse than none.
 * HTML bodies escape what they insert, never the template's own markup.
 *
 * Templates are checked when written (cdp.templates' trigger), so claim
 * meets only well-formed ones.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "render.h"

typedef struct Placeholder
{
	char	   *path;			/* as written, trimmed */
	char	   *root;
	List	   *keys;			/* of char *, after the root */
	char	   *def;			/* the default, or NULL */
} Placeholder;

static const char *const roots[] = {
	"traits", "payload", "profile_id", "outbox_id", "address", "channel", NULL
};

static char *
trim(const char *s, const char *e)
{
	while (s < e && isspace((unsigned char) *s))
		s++;
	while (e > s && isspace((unsigned char) e[-1]))
		e--;
	return pnstrdup(s, e - s);
}

/*
 * Parses the text between {{ and }}; returns NULL when well-formed, else
 * what is wrong.
 */
static const char *
parse_placeholder(const char *s, const char *e, Placeholder *ph)
{
	const char *bar = memchr(s, '|', e - s);
	char	   *path = trim(s, bar ? bar : e);
	char	   *tok;
	char	   *save;
	bool		known = false;

	memset(ph, 0, sizeof(*ph));
	ph->path = path;
	if (path[0] == '\0')
		return "an empty placeholder";
	for (const char *p = path; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '.' || *p == '-' ||
			  (unsigned char) *p >= 0x80))
			return "a placeholder path holds letters, digits, _, - and dots only";
	path = pstrdup(path);
	for (tok = strtok_r(path, ".", &save); tok; tok = strtok_r(NULL, ".", &save))
	{
		if (ph->root == NULL)
			ph->root = tok;
		else
			ph->keys = lappend(ph->keys, tok);
	}
	if (ph->root == NULL)
		return "an empty placeholder";
	for (int i = 0; roots[i]; i++)
		known = known || strcmp(roots[i], ph->root) == 0;
	if (!known)
		return "a placeholder begins with traits, payload, profile_id, outbox_id, address or channel";
	if ((strcmp(ph->root, "traits") == 0 || strcmp(ph->root, "payload") == 0) &&
		ph->keys == NIL)
		return "traits and payload placeholders name a key, as in traits.first_name";
	if (strcmp(ph->root, "traits") != 0 && strcmp(ph->root, "payload") != 0 &&
		ph->keys != NIL)
		return "only traits and payload placeholders have keys";

	if (bar)
	{
		const char *p = bar + 1;
		StringInfoData d;
		char		quote;

		while (p < e && isspace((unsigned char) *p))
			p++;
		if (e - p < 8 || strncmp(p, "default:", 8) != 0)
			return "the only filter is default: \"text\"";
		p += 8;
		while (p < e && isspace((unsigned char) *p))
			p++;
		if (p >= e || (*p != '"' && *p != '\''))
			return "a default is a quoted string, as in default: \"there\"";
		quote = *p++;
		initStringInfo(&d);
		while (p < e && *p != quote)
		{
			if (*p == '\\' && p + 1 < e)
				p++;
			appendStringInfoChar(&d, *p++);
		}
		if (p >= e)
			return "a default's quote is not closed";
		p++;
		while (p < e && isspace((unsigned char) *p))
			p++;
		if (p != e)
			return "nothing may follow a default";
		ph->def = d.data;
	}
	return NULL;
}

/* the text of a JSON value, or NULL when it is null */
static char *
json_value_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			return NULL;
	}
}

static char *
lookup(const Placeholder *ph, const CdpRenderContext *ctx)
{
	JsonbContainer *c;
	JsonbValue	v;
	ListCell   *lc;
	Jsonb	   *root;

	if (strcmp(ph->root, "profile_id") == 0)
		return ctx->profile_id ? psprintf(INT64_FORMAT, ctx->profile_id) : NULL;
	if (strcmp(ph->root, "outbox_id") == 0)
		return ctx->outbox_id ? psprintf(INT64_FORMAT, ctx->outbox_id) : NULL;
	if (strcmp(ph->root, "address") == 0)
		return ctx->address ? pstrdup(ctx->address) : NULL;
	if (strcmp(ph->root, "channel") == 0)
		return ctx->channel ? pstrdup(ctx->channel) : NULL;

	root = strcmp(ph->root, "traits") == 0 ? ctx->traits : ctx->payload;
	if (root == NULL || JB_ROOT_IS_SCALAR(root))
		return NULL;
	c = &root->root;
	foreach(lc, ph->keys)
	{
		const char *key = lfirst(lc);
		JsonbValue *found;

		if (!JsonContainerIsObject(c))
			return NULL;
		found = getKeyJsonValueFromContainer(c, key, strlen(key), &v);
		if (found == NULL)
			return NULL;
		if (lnext(ph->keys, lc) == NULL)
			return json_value_text(found);
		if (found->type != jbvBinary)
			return NULL;
		c = found->val.binary.data;
	}
	return NULL;
}

static void
append_escaped(StringInfo b, const char *s)
{
	for (; *s; s++)
	{
		switch (*s)
		{
			case '&':
				appendStringInfoString(b, "&amp;");
				break;
			case '<':
				appendStringInfoString(b, "&lt;");
				break;
			case '>':
				appendStringInfoString(b, "&gt;");
				break;
			case '"':
				appendStringInfoString(b, "&quot;");
				break;
			case '\'':
				appendStringInfoString(b, "&#39;");
				break;
			default:
				appendStringInfoChar(b, *s);
		}
	}
}

static void
raise_unclosed(const char *field, int offset)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("placeholder not closed in %s", field),
			 errdetail("\"{{\" at offset %d has no \"}}\" after it.", offset),
			 errhint("Write placeholders as {{traits.first_name}} or {{payload.order_id | default: \"\"}}.")));
}

/*
 * Walks the template; with ctx NULL it only checks it, raising an error
 * for the first malformed placeholder.
 */
static char *
walk(const char *tmpl, const CdpRenderContext *ctx, bool html, char **missing,
	 const char *field)
{
	StringInfoData b;
	const char *p = tmpl;

	initStringInfo(&b);
	for (;;)
	{
		const char *open = strstr(p, "{{");
		const char *close;
		Placeholder ph;
		const char *problem;
		char	   *value;

		if (open == NULL)
		{
			appendStringInfoString(&b, p);
			break;
		}
		appendBinaryStringInfo(&b, p, open - p);
		close = strstr(open + 2, "}}");
		if (close == NULL)
			raise_unclosed(field, (int) (open - tmpl));
		problem = parse_placeholder(open + 2, close, &ph);
		if (problem)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid placeholder {{%s}} in %s",
							pnstrdup(open + 2, close - open - 2), field),
					 errdetail("In a template, %s.", problem),
					 errhint("Write placeholders as {{traits.first_name}} or {{payload.order_id | default: \"\"}}.")));
		p = close + 2;
		if (ctx == NULL)
			continue;
		value = lookup(&ph, ctx);
		if (value == NULL)
			value = ph.def;
		if (value == NULL)
		{
			*missing = ph.path;
			return NULL;
		}
		if (html)
			append_escaped(&b, value);
		else
			appendStringInfoString(&b, value);
	}
	return b.data;
}

/* a template cut at its placeholders: literal text, then a placeholder */
typedef struct TemplatePart
{
	const char *text;
	int			len;
	Placeholder *ph;			/* NULL after the last literal */
} TemplatePart;

struct CdpParsedTemplate
{
	int			nparts;
	TemplatePart *parts;
};

CdpParsedTemplate *
cdp_parse_template(const char *tmpl, MemoryContext cxt)
{
	MemoryContext old;
	CdpParsedTemplate *pt;
	const char *p = tmpl;
	int			room = 8;

	if (tmpl == NULL)
		return NULL;
	old = MemoryContextSwitchTo(cxt);
	pt = palloc0(sizeof(CdpParsedTemplate));
	pt->parts = palloc(sizeof(TemplatePart) * room);
	for (;;)
	{
		const char *open = strstr(p, "{{");
		const char *close;
		TemplatePart *part;
		const char *problem;

		if (pt->nparts == room)
		{
			room *= 2;
			pt->parts = repalloc(pt->parts, sizeof(TemplatePart) * room);
		}
		part = &pt->parts[pt->nparts++];
		if (open == NULL)
		{
			part->len = strlen(p);
			part->text = pnstrdup(p, part->len);
			part->ph = NULL;
			break;
		}
		part->len = open - p;
		part->text = pnstrdup(p, part->len);
		close = strstr(open + 2, "}}");
		if (close == NULL)
			raise_unclosed("template", (int) (open - tmpl));
		part->ph = palloc(sizeof(Placeholder));
		problem = parse_placeholder(open + 2, close, part->ph);
		if (problem)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid placeholder {{%s}} in template",
							pnstrdup(open + 2, close - open - 2)),
					 errdetail("In a template, %s.", problem)));
		p = close + 2;
	}
	MemoryContextSwitchTo(old);
	return pt;
}

char *
cdp_render_parsed(const CdpParsedTemplate *pt, const CdpRenderContext *ctx, bool html,
				  char **missing)
{
	StringInfoData b;
	char	   *out;

	*missing = NULL;
	if (pt == NULL)
		return NULL;
	initStringInfo(&b);
	for (int i = 0; i < pt->nparts; i++)
	{
		const TemplatePart *part = &pt->parts[i];
		char	   *value;

		appendBinaryStringInfo(&b, part->text, part->len);
		if (part->ph == NULL)
			continue;
		value = lookup(part->ph, ctx);
		if (value == NULL)
			value = part->ph->def;
		if (value == NULL)
		{
			*missing = part->ph->path;
			pfree(b.data);
			return NULL;
		}
		if (html)
			append_escaped(&b, value);
		else
			appendStringInfoString(&b, value);
	}
	/* the buffer's chunk goes back for the next message's */
	out = pnstrdup(b.data, b.len);
	pfree(b.data);
	return out;
}

char *
cdp_render_template(const char *tmpl, const CdpRenderContext *ctx, bool html,
					char **missing)
{
	*missing = NULL;
	if (tmpl == NULL)
		return NULL;
	return walk(tmpl, ctx, html, missing, "template");
}

void
cdp_check_template(const char *tmpl, const char *field)
{
	if (tmpl)
		(void) walk(tmpl, NULL, false, NULL, field);
}

/*
 * cdp.render(template, traits, payload, html) → text: for trying a
 * template out; a placeholder with no value is an error here.
 */
PG_FUNCTION_INFO_V1(cdp_render);

Datum
cdp_render(PG_FUNCTION_ARGS)
{
	CdpRenderContext ctx;
	char	   *missing;
	char	   *out;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	memset(&ctx, 0, sizeof(ctx));
	ctx.traits = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	ctx.payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	out = cdp_render_template(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ctx,
							  !PG_ARGISNULL(3) && PG_GETARG_BOOL(3), &missing);
	if (out == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("placeholder {{%s}} has no value and no default", missing),
				 errhint("Give it a default: {{%s | default: \"\"}}.", missing)));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* BEFORE INSERT OR UPDATE trigger on cdp.templates: well-formed only. */
PG_FUNCTION_INFO_V1(cdp_templates_check);

Datum
cdp_templates_check(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	tup;
	TupleDesc	desc;
	static const char *const fields[] = {"subject", "body", "body_html"};

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "cdp_templates_check: not called as a trigger");
	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	desc = td->tg_relation->rd_att;
	for (int i = 0; i < lengthof(fields); i++)
	{
		int			att = SPI_fnumber(desc, fields[i]);
		char	   *v;

		if (att <= 0)
			continue;
		v = SPI_getvalue(tup, desc, att);
		cdp_check_template(v, fields[i]);
	}
	return PointerGetDatum(tup);
}
