/*-------------------------------------------------------------------------
 *
 * mime.c
 *	  The RFC 5322 text of an email: headers (non-ASCII ones as RFC 2047
 *	  encoded words), and a text part, or text and HTML parts as
 *	  multipart/alternative, each base64-encoded, with CRLF line ends.
 *
 * Base64 bodies never have a line starting with a dot nor one longer than
 * 76 characters, whatever the template produced; curl still dot-stuffs
 * the whole message as SMTP requires.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connector.h"

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_need(Buf *b, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 4096;
		b->data = realloc(b->data, b->cap);
	}
}

static void
buf_add(Buf *b, const char *s, size_t n)
{
	buf_need(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_str(Buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void
base64_chunk(Buf *b, const unsigned char *p, size_t n)
{
	char		out[4];

	for (size_t i = 0; i < n; i += 3)
	{
		unsigned	v = p[i] << 16;

		if (i + 1 < n)
			v |= p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[0] = b64[(v >> 18) & 63];
		out[1] = b64[(v >> 12) & 63];
		out[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		out[3] = i + 2 < n ? b64[v & 63] : '=';
		buf_add(b, out, 4);
	}
}

/* A body: base64 in lines of 76 characters. */
static void
base64_body(Buf *b, const char *s)
{
	size_t		n = strlen(s);

	for (size_t off = 0; off < n; off += 57)
	{
		base64_chunk(b, (const unsigned char *) s + off, n - off < 57 ? n - off : 57);
		buf_str(b, "\r\n");
	}
}

static bool
needs_encoding(const char *s)
{
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
		if (*p >= 0x7f || *p < 0x20)
			return true;
	return strstr(s, "=?") != NULL || strlen(s) > 900;
}

/*
 * A header value: as it is when it is short printable ASCII, else as
 * encoded words of at most 75 characters, folded, each holding whole
 * UTF-8 characters (RFC 2047 section 5: no character split across words).
 * Line breaks in the value become spaces first, so that a template cannot
 * add headers.
 */
static void
header_value(Buf *b, const char *value)
{
	char	   *v = strdup(value);
	size_t		n = strlen(v);
	size_t		off = 0;
	bool		first = true;

	for (size_t i = 0; i < n; i++)
		if (v[i] == '\r' || v[i] == '\n' || v[i] == '\t')
			v[i] = ' ';
	if (!needs_encoding(v))
	{
		buf_str(b, v);
		free(v);
		return;
	}
	while (off < n)
	{
		size_t		take = n - off < 45 ? n - off : 45;

		/* back off to a character boundary */
		while (off + take < n && take > 0 && ((unsigned char) v[off + take] & 0xC0) == 0x80)
			take--;
		if (take == 0)
			take = n - off < 45 ? n - off : 45;
		if (!first)
			buf_str(b, "\r\n ");
		buf_str(b, "=?UTF-8?B?");
		base64_chunk(b, (unsigned char *) v + off, take);
		buf_str(b, "?=");
		off += take;
		first = false;
	}
	free(v);
}

static void
header(Buf *b, const char *name, const char *value)
{
	buf_str(b, name);
	buf_str(b, ": ");
	header_value(b, value);
	buf_str(b, "\r\n");
}

/* The domain of the From address, for Message-ID. */
static const char *
from_domain(const Channel *ch)
{
	const char *at = strrchr(ch->mail_from, '@');

	return at && at[1] ? at + 1 : "pg-cdp.invalid";
}

/*
 * A From header: a display name with non-ASCII gets encoded, the address
 * stays as it is.
 */
static void
from_header(Buf *b, const Channel *ch)
{
	const char *lt = strrchr(ch->from_header, '<');

	buf_str(b, "From: ");
	if (lt && lt > ch->from_header)
	{
		char	   *name = strndup(ch->from_header, lt - ch->from_header);
		size_t		l = strlen(name);

		while (l > 0 && name[l - 1] == ' ')
			name[--l] = '\0';
		header_value(b, name);
		buf_str(b, " ");
		free(name);
		buf_str(b, lt);
	}
	else
		buf_str(b, ch->from_header);
	buf_str(b, "\r\n");
}

char *
mime_build(const Channel *ch, const Message *m, size_t *len)
{
	Buf			b = {0};
	char		line[512];
	char		date[64];
	char		boundary[64];
	time_t		t = time(NULL);
	struct tm	tm;

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	from_header(&b, ch);
	snprintf(line, sizeof(line), "To: <%s>\r\n", m->address);
	buf_str(&b, line);
	header(&b, "Subject", m->subject);
	snprintf(line, sizeof(line), "Date: %s\r\n", date);
	buf_str(&b, line);
	/* the same for every attempt, so that receivers can spot a resend */
	snprintf(line, sizeof(line), "Message-ID: <outbox-%lld@%s>\r\n", (long long) m->outbox_id,
			 from_domain(ch));
	buf_str(&b, line);
	snprintf(line, sizeof(line), "X-PgCdp-Outbox-Id: %lld\r\n", (long long) m->outbox_id);
	buf_str(&b, line);
	buf_str(&b, "MIME-Version: 1.0\r\n");
	if (m->body_html == NULL)
	{
		buf_str(&b, "Content-Type: text/plain; charset=UTF-8\r\n"
				"Content-Transfer-Encoding: base64\r\n\r\n");
		base64_body(&b, m->body);
	}
	else
	{
		/* base64 never contains "=_", so the boundary cannot occur in a part */
		snprintf(boundary, sizeof(boundary), "=_pg_cdp_%lld", (long long) m->outbox_id);
		snprintf(line, sizeof(line), "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n",
				 boundary);
		buf_str(&b, line);
		snprintf(line, sizeof(line), "--%s\r\nContent-Type: text/plain; charset=UTF-8\r\n"
				 "Content-Transfer-Encoding: base64\r\n\r\n", boundary);
		buf_str(&b, line);
		base64_body(&b, m->body);
		snprintf(line, sizeof(line), "--%s\r\nContent-Type: text/html; charset=UTF-8\r\n"
				 "Content-Transfer-Encoding: base64\r\n\r\n", boundary);
		buf_str(&b, line);
		base64_body(&b, m->body_html);
		snprintf(line, sizeof(line), "--%s--\r\n", boundary);
		buf_str(&b, line);
	}
	*len = b.len;
	return b.data;
}
