/*-------------------------------------------------------------------------
 *
 * text_fields.c
 *	  The rule every text field of a message obeys: a byte limit, no
 *	  control characters, and white space alone counts as empty.
 *
 * Names and ids (event names, channels, message ids, group ids, page and
 * screen names and categories, identifier values and type names) are
 * shown in reports, terminals and exports, compared exactly and indexed,
 * so each has a byte limit of its own (text_fields.h) and none may hold a
 * control character: C0 (U+0000 to U+001F, so no tab or line break), DEL
 * and C1 (U+007F to U+009F), which would let a value rewrite the screen
 * of whoever looks at it (an ANSI escape) or split one line of a report
 * into two.  A value made of white space only is empty: an optional field
 * is then absent, a required one missing.  Values are otherwise kept
 * exactly as sent (only identifier values are normalized, normalize.c).
 * Properties, traits and context are data, not names: they are bounded as
 * a whole by cdp.max_message_bytes.
 *
 * The single calls raise the violation; the parser of Segment-spec
 * messages keeps it in the message, so that the bulk paths store it as the
 * reject's reason.  Both go through cdp_check_text, so a field has one
 * limit and one message on every path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

#include "text_fields.h"

/*
 * The first control character of s, as a code point, with its byte offset;
 * -1 when there is none.  Bytes below 0x80 are ASCII in every server
 * encoding; C1 controls are recognized in UTF-8 databases.
 */
static int
first_control(const char *s, size_t len, size_t *at)
{
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == 0x7f)
		{
			*at = i;
			return c;
		}
		/* U+0080 to U+009F are 0xC2 0x80 to 0xC2 0x9F in UTF-8 */
		if (utf8 && c == 0xc2 && i + 1 < len &&
			(unsigned char) s[i + 1] >= 0x80 && (unsigned char) s[i + 1] <= 0x9f)
		{
			*at = i;
			return (unsigned char) s[i + 1];
		}
	}
	return -1;
}

bool
cdp_text_has_controls(const char *s, size_t len)
{
	size_t		at;

	return first_control(s, len, &at) >= 0;
}

/* Unicode's White_Space characters that are not controls. */
static bool
is_space_char(pg_wchar c)
{
	return c == 0x20 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
		c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Is s (free of control characters) empty or white space only? */
static bool
is_blank(const char *s, size_t len)
{
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	size_t		i = 0;

	while (i < len)
	{
		const unsigned char *p = (const unsigned char *) s + i;

		if (*p == ' ')
			i++;
		else if (utf8 && *p >= 0x80 && i + pg_utf_mblen(p) <= len &&
				 is_space_char(utf8_to_unicode(p)))
			i += pg_utf_mblen(p);
		else
			return false;
	}
	return true;
}

/*
 * cdp_check_text applies the rule to *value (NULL: absent), a field of at
 * most max_bytes bytes that messages name as subject ("channel", "message
 * field \"channel\"").  An empty or blank value becomes NULL; whether the
 * field may be absent is the caller's to say.  Returns false, with err
 * set, when the value breaks the rule.
 */
bool
cdp_check_text(char **value, int max_bytes, const char *subject, CdpError *err)
{
	const char *s = *value;
	size_t		len;
	size_t		at;
	int			c;

	if (s == NULL)
		return true;
	len = strlen(s);
	if (len > (size_t) max_bytes)
	{
		cdp_set_error(err, ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
					  psprintf("%s is longer than %d bytes", subject, max_bytes),
					  psprintf("It takes %zu bytes.", len),
					  "Long text belongs in the properties, which are bounded by cdp.max_message_bytes.");
		return false;
	}
	if ((c = first_control(s, len, &at)) >= 0)
	{
		cdp_set_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
					  psprintf("%s contains a control character", subject),
					  psprintf("It has U+%04X at byte %zu; names and ids may not contain control characters (U+0000 to U+001F, U+007F to U+009F): no tabs, line breaks or terminal escapes.",
							   c, at),
					  NULL);
		return false;
	}
	if (is_blank(s, len))
		*value = NULL;
	return true;
}

/* cdp_check_text for an argument of a single call: raises the violation. */
void
cdp_check_text_arg(char **value, int max_bytes, const char *subject)
{
	CdpError	err;

	if (!cdp_check_text(value, max_bytes, subject, &err))
		cdp_raise(&err);
}

/* The identifier type name rule: ^[a-z][a-z0-9_]{0,62}$, as the table checks. */
bool
cdp_valid_type_name(const char *s)
{
	size_t		len = strlen(s);

	if (len == 0 || len > CDP_MAX_TYPE_NAME_BYTES || s[0] < 'a' || s[0] > 'z')
		return false;
	for (const char *p = s + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	return true;
}

/*
 * cdp_quote_text returns s as an error message may quote it: its first 64
 * bytes (whole characters) with "..." after them when it is longer, and
 * every control character written \xNN (\u00NN for C1), so a hostile
 * value echoed in an error or a reject reason stays one short, inert line.
 */
char *
cdp_quote_text(const char *s)
{
	StringInfoData out;
	size_t		len = strlen(s);
	int			keep = pg_mbcliplen(s, (int) Min(len, (size_t) 1024), 64);
	size_t		i = 0;
	size_t		at;

	initStringInfo(&out);
	while (i < (size_t) keep)
	{
		int			c = first_control(s + i, keep - i, &at);

		if (c < 0)
		{
			appendBinaryStringInfo(&out, s + i, keep - i);
			break;
		}
		appendBinaryStringInfo(&out, s + i, at);
		appendStringInfo(&out, c < 0x80 ? "\\x%02X" : "\\u%04X", c);
		i += at + (c < 0x80 ? 1 : 2);
	}
	if ((size_t) keep < len)
		appendStringInfoString(&out, "...");
	return out.data;
}
