/*-------------------------------------------------------------------------
 *
 * jscan.c
 *	  A validating JSON scanner for pg_cdp_collector's hot path.
 *
 * Building a tree of every message and serializing it again was most of
 * the collector's CPU.  Instead a body is validated in one pass (an
 * explicit stack, no recursion, so hostile nesting costs nothing but the
 * refusal), and then walked without allocating: the batch's elements and a
 * message's top-level members are found by skipping over values, which on
 * validated text only needs to know where strings end.  Messages then go
 * to the inbox as the bytes the client sent.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <string.h>

#include "jscan.h"

static inline bool
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && is_ws(*p))
		p++;
	return p;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Four hex digits at p; false if they are not. */
static bool
hex4(const char *p, const char *end, unsigned *cp)
{
	*cp = 0;
	if (end - p < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		int			d = hex_digit(p[i]);

		if (d < 0)
			return false;
		*cp = (*cp << 4) | (unsigned) d;
	}
	return true;
}

/*
 * Length of the UTF-8 sequence of a non-ASCII character at p, 0 when it
 * is not a valid one (overlong forms, surrogates and code points beyond
 * U+10FFFF are not).
 */
static int
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	int			n;
	uint32_t	cp;

	if ((c & 0xE0) == 0xC0)
		n = 1, cp = c & 0x1F;
	else if ((c & 0xF0) == 0xE0)
		n = 2, cp = c & 0x0F;
	else if ((c & 0xF8) == 0xF0)
		n = 3, cp = c & 0x07;
	else
		return 0;
	if (end - p <= n)
		return 0;
	for (int k = 1; k <= n; k++)
	{
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[k] & 0x3F);
	}
	if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n + 1;
}

/* Validate a string whose opening quote is just before p; returns its end. */
static const char *
scan_string(const char *p, const char *end, const char **err)
{
	while (p < end)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '"')
			return p + 1;
		if (c == '\\')
		{
			unsigned	cp,
						lo;

			if (++p >= end)
				break;
			switch (*p)
			{
				case '"':
				case '\\':
				case '/':
				case 'b':
				case 'f':
				case 'n':
				case 'r':
				case 't':
					p++;
					break;
				case 'u':
					if (!hex4(p + 1, end, &cp))
					{
						*err = "invalid \\u escape";
						return NULL;
					}
					p += 5;
					if (cp >= 0xDC00 && cp <= 0xDFFF)
					{
						*err = "unpaired surrogate in a \\u escape";
						return NULL;
					}
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
							!hex4(p + 2, end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
						{
							*err = "unpaired surrogate in a \\u escape";
							return NULL;
						}
						p += 6;
					}
					break;
				default:
					*err = "invalid escape in a string";
					return NULL;
			}
		}
		else if (c < 0x20)
		{
			*err = "control character in a string";
			return NULL;
		}
		else if (c < 0x80)
			p++;
		else
		{
			int			n = utf8_sequence((const unsigned char *) p, (const unsigned char *) end);

			if (n == 0)
			{
				*err = "invalid UTF-8";
				return NULL;
			}
			p += n;
		}
	}
	*err = "unterminated string";
	return NULL;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *
scan_number(const char *p, const char *end)
{
	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (p < end && *p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (p < end && *p == '.')
	{
		if (++p >= end || *p < '0' || *p > '9')
			return NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E'))
	{
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	return p;
}

static const char *
scan_literal(const char *p, const char *end, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (end - p) < n || memcmp(p, word, n) != 0)
		return NULL;
	return p + n;
}

bool
jscan_validate(const char *buf, size_t len, const char **err, size_t *errpos)
{
	char		stack[JSCAN_MAX_DEPTH];
	int			depth = 0;
	const char *p = buf;
	const char *end = buf + len;
	enum
	{
		VALUE, KEY, AFTER
	}			state = VALUE;

	*err = NULL;
	p = skip_ws(p, end);
	for (;;)
	{
		const char *q = NULL;

		switch (state)
		{
			case VALUE:
				if (p >= end)
				{
					*err = "unexpected end of the text";
					goto fail;
				}
				switch (*p)
				{
					case '{':
					case '[':
						if (depth == JSCAN_MAX_DEPTH)
						{
							*err = "nested too deep";
							goto fail;
						}
						stack[depth++] = *p;
						p = skip_ws(p + 1, end);
						if (p < end && *p == (stack[depth - 1] == '{' ? '}' : ']'))
						{
							p++;
							depth--;
							state = AFTER;
						}
						else
							state = stack[depth - 1] == '{' ? KEY : VALUE;
						continue;
					case '"':
						q = scan_string(p + 1, end, err);
						break;
					case 't':
						q = scan_literal(p, end, "true");
						break;
					case 'f':
						q = scan_literal(p, end, "false");
						break;
					case 'n':
						q = scan_literal(p, end, "null");
						break;
					default:
						q = scan_number(p, end);
						break;
				}
				if (q == NULL)
				{
					if (*err == NULL)
						*err = "invalid value";
					goto fail;
				}
				p = q;
				state = AFTER;
				break;
			case KEY:
				if (p >= end || *p != '"')
				{
					*err = "expected a string key";
					goto fail;
				}
				q = scan_string(p + 1, end, err);
				if (q == NULL)
					goto fail;
				p = skip_ws(q, end);
				if (p >= end || *p != ':')
				{
					*err = "expected ':' after a key";
					goto fail;
				}
				p = skip_ws(p + 1, end);
				state = VALUE;
				break;
			case AFTER:
				p = skip_ws(p, end);
				if (depth == 0)
				{
					if (p != end)
					{
						*err = "unexpected characters after the value";
						goto fail;
					}
					return true;
				}
				if (p >= end)
				{
					*err = "unexpected end of the text";
					goto fail;
				}
				if (*p == ',')
				{
					p = skip_ws(p + 1, end);
					state = stack[depth - 1] == '{' ? KEY : VALUE;
				}
				else if (*p == (stack[depth - 1] == '{' ? '}' : ']'))
				{
					p++;
					depth--;
				}
				else
				{
					*err = stack[depth - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'";
					goto fail;
				}
				break;
		}
	}
fail:
	*errpos = (size_t) (p - buf);
	return false;
}

/* ---- walking validated text ---- */

static inline const char *
skip_string(const char *p, const char *end)
{
	while (p < end)
	{
		const char *q = memchr(p, '"', end - p);
		const char *b;

		if (q == NULL)
			return end;
		/* The quote ends the string unless an odd run of backslashes precedes it. */
		b = q;
		while (b > p && b[-1] == '\\')
			b--;
		if (((q - b) & 1) == 0)
			return q + 1;
		p = q + 1;
	}
	return end;
}

static const char *
skip_value(const char *p, const char *end)
{
	int			depth = 0;

	if (*p == '"')
		return skip_string(p + 1, end);
	if (*p != '{' && *p != '[')
	{
		while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_ws(*p))
			p++;
		return p;
	}
	while (p < end)
	{
		char		c = *p;

		if (c == '"')
		{
			p = skip_string(p + 1, end);
			continue;
		}
		if (c == '{' || c == '[')
			depth++;
		else if ((c == '}' || c == ']') && --depth == 0)
			return p + 1;
		p++;
	}
	return end;
}

JsonSpan
jscan_value(const char *buf, size_t len)
{
	const char *end = buf + len;
	JsonSpan	v;

	buf = skip_ws(buf, end);
	while (end > buf && is_ws(end[-1]))
		end--;
	v.p = buf;
	v.len = (size_t) (end - buf);
	return v;
}

char
jscan_kind(JsonSpan v)
{
	return v.len > 0 ? v.p[0] : '\0';
}

void
jscan_iter(JsonIter *it, JsonSpan container)
{
	it->p = container.p + 1;
	it->end = container.p + container.len - 1;	/* the closing bracket */
}

static const char *
next_item(JsonIter *it)
{
	const char *p = skip_ws(it->p, it->end);

	if (p < it->end && *p == ',')
		p = skip_ws(p + 1, it->end);
	return p < it->end ? p : NULL;
}

bool
jscan_next_element(JsonIter *it, JsonSpan *elem)
{
	const char *p = next_item(it);
	const char *q;

	if (p == NULL)
		return false;
	q = skip_value(p, it->end);
	elem->p = p;
	elem->len = (size_t) (q - p);
	it->p = q;
	return true;
}

bool
jscan_next_member(JsonIter *it, JsonSpan *key, JsonSpan *value, JsonSpan *member)
{
	const char *p = next_item(it);
	const char *q;

	if (p == NULL)
		return false;
	q = skip_string(p + 1, it->end);
	key->p = p;
	key->len = (size_t) (q - p);
	p = skip_ws(q, it->end);
	p = skip_ws(p + 1, it->end);	/* the colon */
	q = skip_value(p, it->end);
	value->p = p;
	value->len = (size_t) (q - p);
	member->p = key->p;
	member->len = (size_t) (q - key->p);
	it->p = q;
	return true;
}

bool
jscan_string_decode(JsonSpan s, char *out, size_t outsize)
{
	const char *p = s.p + 1;
	const char *end = s.p + s.len - 1;
	size_t		n = 0;

	while (p < end)
	{
		unsigned	cp;
		char		tmp[4];
		int			len = 1;

		if (*p != '\\')
		{
			tmp[0] = *p++;
		}
		else
		{
			p++;
			switch (*p)
			{
				case 'b':
					tmp[0] = '\b';
					break;
				case 'f':
					tmp[0] = '\f';
					break;
				case 'n':
					tmp[0] = '\n';
					break;
				case 'r':
					tmp[0] = '\r';
					break;
				case 't':
					tmp[0] = '\t';
					break;
				case 'u':
					hex4(p + 1, end, &cp);
					p += 4;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						unsigned	lo;

						hex4(p + 3, end, &lo);
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						p += 6;
					}
					if (cp == 0)
						return false;
					if (cp < 0x80)
						tmp[0] = (char) cp;
					else if (cp < 0x800)
					{
						tmp[0] = (char) (0xC0 | (cp >> 6));
						tmp[1] = (char) (0x80 | (cp & 0x3F));
						len = 2;
					}
					else if (cp < 0x10000)
					{
						tmp[0] = (char) (0xE0 | (cp >> 12));
						tmp[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
						tmp[2] = (char) (0x80 | (cp & 0x3F));
						len = 3;
					}
					else
					{
						tmp[0] = (char) (0xF0 | (cp >> 18));
						tmp[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
						tmp[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
						tmp[3] = (char) (0x80 | (cp & 0x3F));
						len = 4;
					}
					break;
				default:		/* " \ / */
					tmp[0] = *p;
					break;
			}
			p++;
		}
		if (n + len + 1 > outsize)
			return false;
		memcpy(out + n, tmp, len);
		n += len;
	}
	out[n] = '\0';
	return true;
}

bool
jscan_string_is(JsonSpan s, const char *name)
{
	size_t		n = strlen(name);
	char		buf[64];

	if (s.len < 2)
		return false;
	if (memchr(s.p, '\\', s.len) == NULL)
		return s.len - 2 == n && memcmp(s.p + 1, name, n) == 0;
	return n < sizeof(buf) && jscan_string_decode(s, buf, sizeof(buf)) && strcmp(buf, name) == 0;
}
