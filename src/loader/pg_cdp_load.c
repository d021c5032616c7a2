/*-------------------------------------------------------------------------
 *
 * pg_cdp_load.c
 *	  Loads files of JSON lines into cdp.inbox, keeping every line that
 *	  cannot be loaded as a reject instead of stopping.
 *
 * A COPY of raw lines stops at the first line PostgreSQL cannot read (a
 * byte that is not UTF-8; in CSV mode a stray carriage return) and loads
 * nothing.  This program reads the lines itself and judges each one with
 * the collector's validator (jscan.c): a JSON object goes to the inbox as
 * it is; anything else goes there too, with reject_reason set, so that the
 * drain keeps it in cdp.inbox_rejects with the file and line it came
 * from.  What it sends is valid UTF-8 escaped for COPY's text format, so
 * no line can fail a batch.
 *
 * Batches are COPYed and committed one at a time.  A line without a
 * messageId is given one derived from its line number and its content, so
 * that loading the same file again (after an interruption, say) makes
 * every line a duplicate, which the drain drops.
 *
 * Exit status: 0 every line was loaded or kept as a reject; 1 bad usage or
 * configuration, or a file that could not be read; 2 PostgreSQL could not
 * be reached or failed a batch.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "jscan.h"

#define EXIT_USAGE 1
#define EXIT_DATABASE 2

/* How much of a line over the limit its reject keeps. */
#define KEPT_PREFIX (64 * 1024)

#define READ_CHUNK (256 * 1024)

/* Reconnect and resend a batch this many times, waiting 1, 2, 4... s. */
#define MAX_RETRIES 5

typedef struct Options
{
	const char *conninfo;
	const char *source;			/* NULL: the inbox rows have none */
	const char *write_key;
	long		batch_lines;
	long		batch_bytes;
	long		max_line;		/* 0: the server's cdp.max_message_bytes */
	bool		line_ids;
	long		progress_s;		/* 0: no progress reports */
} Options;

typedef struct Counts
{
	long long	lines;			/* read, empty ones included */
	long long	loaded;			/* committed to the inbox as messages */
	long long	with_line_id;	/* loaded lines that were given a line id */
	long long	rejected;		/* committed to the inbox as rejects */
	long long	empty;
} Counts;

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

/*
 * A file being read: plain or gzip (its first two bytes say), each read
 * taking what is there, so that lines arriving on a pipe are loaded as they
 * come.
 */
typedef struct Reader
{
	int			fd;
	const char *name;			/* as shown: the path, or "stdin" */
	unsigned char *in;			/* bytes read from the file */
	size_t		in_len;			/* of a plain file, not yet handed out */
	char	   *out;			/* inflated bytes */
	const char *buf;			/* the bytes handed out: in or out */
	size_t		pos;
	size_t		len;
	bool		gzip;
	bool		raw_eof;
	bool		member_done;	/* a gzip member ended; another may follow */
	z_stream	zs;
	const char *error;
	long long	offset;			/* bytes read from the file */
	long long	size;			/* of a regular file, else 0 */
} Reader;

static Options opt;
static PGconn *conn;
static char *source_field;		/* the source column, escaped for COPY */

/* The batch being built: COPY text rows, and what they count for. */
static Buf	batch;
static long batch_rows;
static long long batch_first_line;
static Counts batch_counts;

static EVP_MD_CTX *md_ctx;

/* ---- messages ---- */

static void
note(const char *fmt,...)
__attribute__((format(printf, 1, 2)));

static void
note(const char *fmt,...)
{
	va_list		ap;

	fputs("pg_cdp_load: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
die(int status, const char *fmt,...)
__attribute__((format(printf, 2, 3), noreturn));

static void
die(int status, const char *fmt,...)
{
	va_list		ap;

	fputs("pg_cdp_load: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

/* ---- buffers ---- */

static void
buf_reserve(Buf *b, size_t more)
{
	if (b->len + more + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 65536;

		while (cap < b->len + more + 1)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (b->data == NULL)
			die(EXIT_USAGE, "out of memory");
		b->cap = cap;
	}
}

static void
buf_put(Buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void
buf_puts(Buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

/* ---- text checks ---- */

/*
 * Length of the valid UTF-8 sequence of a non-ASCII character at p, 0 when
 * it is not one (overlong forms, surrogates, beyond U+10FFFF).
 */
static int
utf8_sequence(const unsigned char *p, size_t avail)
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
	if (avail <= (size_t) n)
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

/*
 * Offset of the first byte PostgreSQL would refuse in a text value (one
 * that is not part of valid UTF-8, or NUL); len when there is none.
 */
static size_t
first_bad_byte(const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *) p;
	size_t		i = 0;

	while (i < len)
	{
		if (u[i] >= 0x80)
		{
			int			n = utf8_sequence(u + i, len - i);

			if (n == 0)
				return i;
			i += n;
		}
		else if (u[i] == 0)
			return i;
		else
			i++;
	}
	return len;
}

/* ---- COPY text format ---- */

/* Append text that is valid UTF-8, escaped for COPY's text format. */
static void
copy_text(Buf *b, const char *p, size_t len)
{
	size_t		run = 0;

	buf_reserve(b, len * 2);
	for (size_t i = 0; i < len; i++)
	{
		char		e;

		switch (p[i])
		{
			case '\\':
				e = '\\';
				break;
			case '\n':
				e = 'n';
				break;
			case '\r':
				e = 'r';
				break;
			case '\t':
				e = 't';
				break;
			default:
				continue;
		}
		memcpy(b->data + b->len, p + run, i - run);
		b->len += i - run;
		b->data[b->len++] = '\\';
		b->data[b->len++] = e;
		run = i + 1;
	}
	memcpy(b->data + b->len, p + run, len - run);
	b->len += len - run;
}

/*
 * Append any bytes for COPY's text format: what PostgreSQL would refuse
 * (bytes that are not UTF-8, NUL) becomes the four characters \xNN.
 */
static void
copy_text_escaping_bad_bytes(Buf *b, const char *p, size_t len)
{
	while (len > 0)
	{
		size_t		good = first_bad_byte(p, len);
		char		hex[8];

		copy_text(b, p, good);
		if (good == len)
			break;
		snprintf(hex, sizeof(hex), "\\\\x%02X", (unsigned char) p[good]);
		buf_puts(b, hex);
		p += good + 1;
		len -= good + 1;
	}
}

/* End a row: its source and reject reason (NULL: none). */
static void
end_row(const char *reason)
{
	buf_put(&batch, "\t", 1);
	buf_puts(&batch, source_field);
	buf_put(&batch, "\t", 1);
	if (reason)
		copy_text_escaping_bad_bytes(&batch, reason, strlen(reason));
	else
		buf_put(&batch, "\\N", 2);
	buf_put(&batch, "\n", 1);
	batch_rows++;
}

/* ---- the database ---- */

/* A connection's last error, on one line. */
static const char *
last_error(PGconn *c)
{
	static char errbuf[1024];
	size_t		n;

	snprintf(errbuf, sizeof(errbuf), "%s", c ? PQerrorMessage(c) : "no connection");
	for (char *p = errbuf; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	n = strlen(errbuf);
	while (n > 0 && errbuf[n - 1] == ' ')
		errbuf[--n] = '\0';
	return errbuf;
}

static PGconn *
connect_db(void)
{
	/* The caller may name the application; the encoding is ours. */
	const char *keys[] = {"fallback_application_name", "dbname", "client_encoding", NULL};
	const char *values[] = {"pg_cdp_load", opt.conninfo, "UTF8", NULL};
	PGconn	   *c = PQconnectdbParams(keys, values, 1);

	if (PQstatus(c) != CONNECTION_OK)
	{
		note("cannot connect to PostgreSQL: %s", last_error(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static void
start_failed(const char *what, PGresult *res)
__attribute__((noreturn));

/* A query at start failed: exit saying what failed. */
static void
start_failed(const char *what, PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (PQstatus(conn) == CONNECTION_BAD)
		die(EXIT_DATABASE, "lost the connection to PostgreSQL while trying to %s: %s", what,
			last_error(conn));
	if (state && strcmp(state, "42501") == 0 && opt.source && !opt.write_key)
		die(EXIT_USAGE, "cannot %s: %s\n"
			"HINT:  Give the source's write key (PG_CDP_WRITE_KEY or --write-key), or connect "
			"as a role that may read cdp.sources.", what,
			PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	die(EXIT_USAGE, "cannot %s: %s", what, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
}

/* A query at start: its result, or an exit saying what failed. */
static PGresult *
start_query(const char *what, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		start_failed(what, res);
	return res;
}

/*
 * Check, before reading anything, that the lines can go where they are
 * meant to: the inbox is there and writable, the source is known.
 */
static void
check_database(void)
{
	const char *enc = PQparameterStatus(conn, "server_encoding");
	PGresult   *res;

	if (enc == NULL || strcmp(enc, "UTF8") != 0)
		die(EXIT_USAGE, "the database's encoding is %s, not UTF8\n"
			"HINT:  pg_cdp stores JSON, which is UTF-8: load into a database created WITH ENCODING 'UTF8'.",
			enc ? enc : "unknown");

	res = start_query("check cdp.inbox",
					  "SELECT to_regclass('cdp.inbox') IS NOT NULL, "
					  "       CASE WHEN to_regclass('cdp.inbox') IS NOT NULL "
					  "            THEN has_column_privilege('cdp.inbox', 'message', 'INSERT') "
					  "             AND has_column_privilege('cdp.inbox', 'source', 'INSERT') "
					  "             AND has_column_privilege('cdp.inbox', 'reject_reason', 'INSERT') END, "
					  "       (SELECT setting FROM pg_catalog.pg_settings "
					  "        WHERE name = 'cdp.max_message_bytes')", 0, NULL);
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		die(EXIT_USAGE, "there is no cdp.inbox in this database\n"
			"HINT:  Run CREATE EXTENSION pg_cdp, or give the database that has it with --dbname.");
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
		die(EXIT_USAGE, "this role may not insert into cdp.inbox\n"
			"HINT:  Grant it cdp_ingest: GRANT cdp_ingest TO the role.");
	if (opt.max_line == 0)
		opt.max_line = PQgetisnull(res, 0, 2) ? 4 * 1024 * 1024 : atol(PQgetvalue(res, 0, 2));
	PQclear(res);

	if (opt.write_key)
	{
		const char *params[1] = {opt.write_key};

		res = start_query("check the write key",
						  "SELECT source, enabled FROM cdp.authenticate_source($1)",
						  1, params);
		if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
			die(EXIT_USAGE, "the write key belongs to no source\n"
				"HINT:  cdp.create_source() returned the key when the source was made.");
		if (opt.source && strcmp(opt.source, PQgetvalue(res, 0, 0)) != 0)
			die(EXIT_USAGE, "the write key belongs to source \"%s\", not \"%s\"",
				PQgetvalue(res, 0, 0), opt.source);
		opt.source = strdup(PQgetvalue(res, 0, 0));
	}
	else if (opt.source)
	{
		const char *params[1] = {opt.source};

		res = start_query("check the source",
						  "SELECT name, enabled FROM cdp.sources WHERE name = $1", 1, params);
		if (PQntuples(res) == 0)
			die(EXIT_USAGE, "source \"%s\" does not exist\n"
				"HINT:  Create it with SELECT cdp.create_source('%s').", opt.source, opt.source);
	}
	else
		return;
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
		die(EXIT_USAGE, "source \"%s\" is disabled", opt.source);
	PQclear(res);
}

static void
pause_seconds(int s)
{
	struct timespec t = {s, 0};

	while (nanosleep(&t, &t) != 0 && errno == EINTR)
		;
}

typedef enum CopyOutcome
{
	COPY_COMMITTED,
	COPY_REFUSED,				/* PostgreSQL refused it: sending it again will not help */
	COPY_BROKEN					/* the connection broke, or the error may pass */
} CopyOutcome;

/* How a failed COPY ended: an error of the batch itself, or one that may pass. */
static CopyOutcome
failure(PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(conn) != CONNECTION_OK || state == NULL)
		return COPY_BROKEN;
	/* as the drain's transient errors: connection, rollback, resources, shutdown, I/O */
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0 ||
		strncmp(state, "53", 2) == 0 || strncmp(state, "57", 2) == 0 ||
		strncmp(state, "58", 2) == 0 || strcmp(state, "55P03") == 0)
		return COPY_BROKEN;
	return COPY_REFUSED;
}

/*
 * One COPY of the batch, in its own transaction.  When the connection
 * breaks it is made anew and the batch sent again: should the first COPY
 * have committed after all, its lines come twice and the drain drops the
 * second copies by message id.
 */
static CopyOutcome
copy_batch(const char **error)
{
	PGresult   *res;
	CopyOutcome outcome = COPY_COMMITTED;

	*error = NULL;
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		if (conn)
			PQfinish(conn);
		conn = connect_db();
		if (conn == NULL)
		{
			*error = "cannot connect";
			return COPY_BROKEN;
		}
	}
	res = PQexec(conn, "COPY cdp.inbox (message, source, reject_reason) FROM STDIN");
	if (PQresultStatus(res) != PGRES_COPY_IN)
	{
		*error = last_error(conn);
		outcome = failure(res);
		PQclear(res);
		return outcome;
	}
	PQclear(res);
	for (size_t off = 0; outcome == COPY_COMMITTED && off < batch.len; off += 1024 * 1024)
	{
		size_t		n = batch.len - off < 1024 * 1024 ? batch.len - off : 1024 * 1024;

		if (PQputCopyData(conn, batch.data + off, (int) n) != 1)
			outcome = COPY_BROKEN;
	}
	if (outcome == COPY_COMMITTED && PQputCopyEnd(conn, NULL) != 1)
		outcome = COPY_BROKEN;
	if (outcome == COPY_COMMITTED)
	{
		res = PQgetResult(conn);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			outcome = failure(res);
		PQclear(res);
	}
	if (outcome != COPY_COMMITTED)
		*error = last_error(conn);
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
	return outcome;
}

static void
add_counts(Counts *to, const Counts *c)
{
	to->lines += c->lines;
	to->loaded += c->loaded;
	to->with_line_id += c->with_line_id;
	to->rejected += c->rejected;
	to->empty += c->empty;
}

/* Send the batch; it ends at line last of the file.  Exits when it cannot. */
static void
flush_batch(const char *file, long long last, Counts *file_counts, Counts *committed)
{
	const char *error;

	if (batch_rows > 0)
	{
		for (int attempt = 0;; attempt++)
		{
			CopyOutcome outcome = copy_batch(&error);

			if (outcome == COPY_COMMITTED)
				break;
			if (outcome == COPY_REFUSED || attempt >= MAX_RETRIES)
			{
				note("%s: lines %lld to %lld were not loaded: %s", file, batch_first_line, last,
					 error);
				if (batch_first_line > 1)
					note("%s: lines 1 to %lld are in cdp.inbox", file, batch_first_line - 1);
				die(EXIT_DATABASE, "the same command loads the rest: %s",
					opt.line_ids ? "lines loaded already come again as duplicates, which the drain drops" :
					"lines loaded already that have no messageId load again (--no-line-ids)");
			}
			note("%s: lines %lld to %lld: %s; sending them again in %d s", file,
				 batch_first_line, last, error, 1 << attempt);
			if (conn)
				PQfinish(conn);
			conn = NULL;
			pause_seconds(1 << attempt);
		}
	}
	add_counts(file_counts, &batch_counts);
	add_counts(committed, &batch_counts);
	memset(&batch_counts, 0, sizeof(batch_counts));
	batch.len = 0;
	batch_rows = 0;
	batch_first_line = last + 1;
}

/* ---- lines ---- */

/* Read from the file: > 0 bytes, 0 at its end, -1 on an error. */
static ssize_t
raw_read(Reader *r, void *p, size_t n)
{
	ssize_t		k;

	do
		k = read(r->fd, p, n);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		r->error = strerror(errno);
	else
		r->offset += k;
	return k;
}

/* Open a file (- is stdin), and see whether it is gzip. */
static bool
open_reader(Reader *r, const char *path)
{
	ssize_t		n;

	memset(r, 0, sizeof(*r));
	r->name = strcmp(path, "-") == 0 ? "stdin" : path;
	r->fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY);
	if (r->fd < 0)
	{
		r->error = strerror(errno);
		return false;
	}
	if (r->fd != STDIN_FILENO)
	{
		struct stat st;

		if (fstat(r->fd, &st) == 0 && S_ISREG(st.st_mode))
			r->size = st.st_size;
	}
	r->in = malloc(READ_CHUNK);
	r->out = malloc(READ_CHUNK);
	if (r->in == NULL || r->out == NULL)
		die(EXIT_USAGE, "out of memory");
	while (r->in_len < 2 && (n = raw_read(r, r->in + r->in_len, READ_CHUNK - r->in_len)) > 0)
		r->in_len += n;
	if (r->error)
		return false;
	r->raw_eof = r->in_len == 0;
	if (r->in_len >= 2 && r->in[0] == 0x1f && r->in[1] == 0x8b)
	{
		r->gzip = true;
		if (inflateInit2(&r->zs, 15 + 16) != Z_OK)
			die(EXIT_USAGE, "out of memory");
		r->zs.next_in = r->in;
		r->zs.avail_in = r->in_len;
		r->in_len = 0;
	}
	return true;
}

static void
close_reader(Reader *r)
{
	if (r->gzip)
		inflateEnd(&r->zs);
	if (r->fd > STDIN_FILENO)
		close(r->fd);
	free(r->in);
	free(r->out);
}

/* Hand out the next bytes of the file: 1, or 0 at its end, -1 on an error. */
static int
fill(Reader *r)
{
	ssize_t		n;

	r->pos = 0;
	r->len = 0;
	if (!r->gzip)
	{
		if (r->in_len == 0 && !r->raw_eof)
		{
			n = raw_read(r, r->in, READ_CHUNK);
			if (n < 0)
				return -1;
			r->in_len = n;
			r->raw_eof = n == 0;
		}
		r->buf = (const char *) r->in;
		r->len = r->in_len;
		r->in_len = 0;
		return r->len > 0;
	}
	for (;;)
	{
		int			zrc;

		if (r->zs.avail_in == 0 && !r->raw_eof)
		{
			n = raw_read(r, r->in, READ_CHUNK);
			if (n < 0)
				return -1;
			r->raw_eof = n == 0;
			r->zs.next_in = r->in;
			r->zs.avail_in = n;
		}
		if (r->member_done)
		{
			/* gzip files may be concatenated */
			if (r->zs.avail_in == 0)
				return 0;
			inflateReset(&r->zs);
			r->member_done = false;
		}
		if (r->zs.avail_in == 0)
		{
			r->error = "unexpected end of the compressed data";
			return -1;
		}
		r->zs.next_out = (unsigned char *) r->out;
		r->zs.avail_out = READ_CHUNK;
		zrc = inflate(&r->zs, Z_NO_FLUSH);
		if (zrc == Z_STREAM_END)
			r->member_done = true;
		else if (zrc != Z_OK && zrc != Z_BUF_ERROR)
		{
			r->error = r->zs.msg ? r->zs.msg : "the compressed data is corrupt";
			return -1;
		}
		if (r->zs.avail_out < READ_CHUNK)
		{
			r->buf = r->out;
			r->len = READ_CHUNK - r->zs.avail_out;
			return 1;
		}
	}
}

/*
 * Read the next line into line, keeping at most keep of its bytes; *total
 * gets its full length (the newline excluded).  Returns 1 for a line, 0 at
 * the end, -1 on a read error.
 */
static int
read_line(Reader *r, Buf *line, size_t keep, size_t *total)
{
	line->len = 0;
	*total = 0;
	for (;;)
	{
		const char *start;
		const char *nl;
		size_t		avail,
					take;

		if (r->pos == r->len)
		{
			int			rc = fill(r);

			if (rc <= 0)
				return rc < 0 ? -1 : *total > 0 ? 1 : 0;
		}
		start = r->buf + r->pos;
		avail = r->len - r->pos;
		nl = memchr(start, '\n', avail);
		take = nl ? (size_t) (nl - start) : avail;
		if (line->len < keep)
			buf_put(line, start, take < keep - line->len ? take : keep - line->len);
		*total += take;
		r->pos += take + (nl ? 1 : 0);
		if (nl)
			return 1;
	}
}

/* Is the value of the object's (last) messageId one the drain uses? */
static bool
has_message_id(JsonSpan obj)
{
	JsonIter	it;
	JsonSpan	key,
				value,
				member;
	bool		found = false;

	jscan_iter(&it, obj);
	while (jscan_next_member(&it, &key, &value, &member))
		if (jscan_string_is(key, "messageId"))
			found = !(jscan_kind(value) == 'n' ||
					  (jscan_kind(value) == '"' && value.len == 2));
	return found;
}

/*
 * The line id: its line number and a hash of the line number and the
 * line's bytes (its line ending and a byte order mark excluded), so that
 * the same file, compressed or not, read from a path or stdin, gives every
 * line the same id again.
 */
static void
line_id(long long lineno, const char *p, size_t len, char *out, size_t outsize)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	char		num[32];
	int			n;

	n = snprintf(num, sizeof(num), "%lld\n", lineno);
	if (!EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL) ||
		!EVP_DigestUpdate(md_ctx, num, n) ||
		!EVP_DigestUpdate(md_ctx, p, len) ||
		!EVP_DigestFinal_ex(md_ctx, md, &mdlen))
		die(EXIT_USAGE, "cannot compute SHA-256");
	n = snprintf(out, outsize, "line-%lld-", lineno);
	for (int i = 0; i < 16 && (size_t) n + 2 < outsize; i++)
		n += snprintf(out + n, outsize - n, "%02x", md[i]);
}

/* Add a line as a reject: its text (bad bytes escaped) and the reason. */
static void
add_reject(const char *p, size_t len, const char *reason)
{
	copy_text_escaping_bad_bytes(&batch, p, len);
	end_row(reason);
	batch_counts.rejected++;
}

/* Judge one line and add its row to the batch (or count it as empty). */
static void
take_line(const char *file, long long lineno, char *p, size_t len, size_t total)
{
	char		reason[8192];
	size_t		bad;
	const char *err;
	size_t		errpos;
	JsonSpan	v;

	batch_counts.lines++;
	if (len == total && len > 0 && p[len - 1] == '\r')
		len--, total--;
	if (lineno == 1 && len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3, len -= 3, total -= 3;
	if (len == total)
	{
		size_t		i = 0;

		while (i < len && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i == len)
		{
			batch_counts.empty++;
			return;
		}
	}

	if (total > (size_t) opt.max_line)
	{
		size_t		kept = len < KEPT_PREFIX ? len : KEPT_PREFIX;

		/* cut at a character boundary */
		for (int k = 0; k < 3 && kept > 0 && kept < len &&
			 ((unsigned char) p[kept] & 0xC0) == 0x80; k++)
			kept--;
		if (kept == total)
			snprintf(reason, sizeof(reason),
					 "54000: line %lld of %s is larger than %ld bytes (%zu bytes)",
					 lineno, file, opt.max_line, total);
		else
			snprintf(reason, sizeof(reason),
					 "54000: line %lld of %s is larger than %ld bytes (%zu bytes; its first %zu bytes are kept)",
					 lineno, file, opt.max_line, total, kept);
		add_reject(p, kept, reason);
		return;
	}

	bad = first_bad_byte(p, len);
	if (bad < len)
	{
		snprintf(reason, sizeof(reason),
				 p[bad] == '\0' ?
				 "22021: line %lld of %s holds a NUL byte at byte %zu (kept as \\x00)" :
				 "22021: line %lld of %s is not valid UTF-8 at byte %zu (invalid bytes are kept as \\xNN)",
				 lineno, file, bad + 1);
		add_reject(p, len, reason);
		return;
	}

	if (!jscan_validate(p, len, &err, &errpos))
	{
		snprintf(reason, sizeof(reason), "22P02: line %lld of %s is not valid JSON: %s at byte %zu",
				 lineno, file, err, errpos + 1);
		add_reject(p, len, reason);
		return;
	}
	v = jscan_value(p, len);
	if (jscan_kind(v) != '{')
	{
		snprintf(reason, sizeof(reason), "22023: line %lld of %s is not a JSON object", lineno, file);
		add_reject(p, len, reason);
		return;
	}

	if (opt.line_ids && !has_message_id(v))
	{
		char		id[80];
		const char *q = v.p + 1;
		size_t		size;

		line_id(lineno, p, len, id, sizeof(id));
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		/* the id goes last: of duplicate keys the last counts */
		size = v.len + strlen(id) + 16;
		if (size > (size_t) opt.max_line)
		{
			snprintf(reason, sizeof(reason),
					 "54000: line %lld of %s is larger than %ld bytes once given its messageId (%zu bytes)",
					 lineno, file, opt.max_line, size);
			add_reject(p, len, reason);
			return;
		}
		copy_text(&batch, v.p, v.len - 1);
		if (*q != '}')
			buf_put(&batch, ",", 1);
		buf_puts(&batch, "\"messageId\":\"");
		buf_puts(&batch, id);
		buf_puts(&batch, "\"}");
		batch_counts.with_line_id++;
	}
	else
		copy_text(&batch, p, len);
	end_row(NULL);
	batch_counts.loaded++;
}

/* ---- progress ---- */

static double
now_seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void
report_progress(Reader *r, const Counts *c, double started)
{
	double		elapsed = now_seconds() - started;
	char		pct[32] = "";

	if (r->size > 0)
		snprintf(pct, sizeof(pct), " (%.0f%%)", 100.0 * r->offset / r->size);
	note("%s: %lld lines read%s, %lld loaded, %lld rejected, %.0f lines/s",
		 r->name, c->lines + batch_counts.lines, pct, c->loaded, c->rejected,
		 elapsed > 0 ? (c->lines + batch_counts.lines) / elapsed : 0.0);
}

static void
print_summary(const char *name, const Counts *c, const char *trailer)
{
	printf("%s: %lld lines: %lld loaded (%lld given a line id), %lld rejected, %lld empty%s\n",
		   name, c->lines, c->loaded, c->with_line_id, c->rejected, c->empty, trailer);
	fflush(stdout);
}

/* ---- files ---- */

/* Load one file; false when it could not be read to its end. */
static bool
load_file(const char *path, Counts *total)
{
	Reader		r;
	Buf			line = {NULL, 0, 0};
	Counts		counts;
	size_t		keep = (size_t) opt.max_line + 1 > KEPT_PREFIX ? (size_t) opt.max_line + 1 : KEPT_PREFIX;
	size_t		len;
	long long	lineno = 0;
	double		started = now_seconds();
	double		next_report = started + opt.progress_s;
	int			rc;

	memset(&counts, 0, sizeof(counts));
	if (!open_reader(&r, path))
	{
		note("cannot read %s: %s", r.name, r.error);
		close_reader(&r);
		return false;
	}

	batch_first_line = 1;
	while ((rc = read_line(&r, &line, keep, &len)) == 1)
	{
		take_line(r.name, ++lineno, line.data, line.len, len);
		if (batch_rows >= opt.batch_lines || batch.len >= (size_t) opt.batch_bytes)
			flush_batch(r.name, lineno, &counts, total);
		if (opt.progress_s > 0 && (lineno & 1023) == 0 && now_seconds() >= next_report)
		{
			report_progress(&r, &counts, started);
			next_report = now_seconds() + opt.progress_s;
		}
	}
	flush_batch(r.name, lineno, &counts, total);
	if (rc < 0)
		note("%s: cannot read past line %lld: %s", r.name, lineno, r.error);
	print_summary(r.name, &counts, rc < 0 ? " (stopped by a read error)" : "");
	close_reader(&r);
	free(line.data);
	return rc == 0;
}

/* ---- options ---- */

static void
usage(FILE *f)
{
	fprintf(f,
			"pg_cdp_load loads files of JSON lines (one Segment-spec message per line) into\n"
			"cdp.inbox. Lines that cannot be loaded are kept as rejects with their file and\n"
			"line number; the load never stops at a bad line.\n"
			"\n"
			"Usage: pg_cdp_load [OPTION]... FILE...\n"
			"\n"
			"FILE is a path, gzip-compressed or not, or - for standard input.\n"
			"\n"
			"  -d, --dbname CONNINFO    libpq connection string or database name (default: libpq's)\n"
			"  -s, --source NAME        the source (cdp.sources) the lines come from\n"
			"      --write-key KEY      the source's write key, proving the source; better in the\n"
			"                           environment variable PG_CDP_WRITE_KEY\n"
			"  -b, --batch-size LINES   lines per COPY transaction (default 10000)\n"
			"      --batch-bytes BYTES  bytes per COPY transaction, at most (default 16777216)\n"
			"      --max-line BYTES     longer lines are rejects (default: the server's\n"
			"                           cdp.max_message_bytes)\n"
			"      --no-line-ids        do not give lines without a messageId one derived from\n"
			"                           their line number and content: such lines then load\n"
			"                           again each time the file is loaded\n"
			"      --progress SECONDS   report progress on stderr this often (default 10; 0: never)\n"
			"  -h, --help               show this help\n"
			"\n"
			"A line ending in CR LF loses its CR, a UTF-8 byte order mark starting a file is\n"
			"skipped, and empty lines are counted and skipped. Each file's summary goes to\n"
			"stdout.\n"
			"\n"
			"Exit status: 0 every line was loaded or kept as a reject; 1 bad usage or\n"
			"configuration (unknown source, no cdp.inbox, ...) or a file that could not be\n"
			"read; 2 PostgreSQL could not be reached or failed a batch (the lines before it\n"
			"are loaded, and running the same command again loads the rest).\n");
}

static long
int_option(const char *name, const char *value, long lo, long hi)
{
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (*value == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi)
	{
		die(EXIT_USAGE, "--%s must be an integer between %ld and %ld", name, lo, hi);
	}
	return n;
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"source", required_argument, NULL, 's'},
		{"write-key", required_argument, NULL, 'k'},
		{"batch-size", required_argument, NULL, 'b'},
		{"batch-bytes", required_argument, NULL, 1},
		{"max-line", required_argument, NULL, 2},
		{"no-line-ids", no_argument, NULL, 3},
		{"progress", required_argument, NULL, 4},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	Counts		total;
	int			c;
	int			nstdin = 0;
	int			status = 0;

	opt.conninfo = "";
	opt.write_key = getenv("PG_CDP_WRITE_KEY");
	if (opt.write_key && opt.write_key[0] == '\0')
		opt.write_key = NULL;
	opt.batch_lines = 10000;
	opt.batch_bytes = 16 * 1024 * 1024;
	opt.line_ids = true;
	opt.progress_s = 10;

	while ((c = getopt_long(argc, argv, "d:s:b:h", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				opt.conninfo = optarg;
				break;
			case 's':
				opt.source = optarg;
				break;
			case 'k':
				/* keep it out of the process list from now on */
				opt.write_key = strdup(optarg);
				memset(optarg, 'x', strlen(optarg));
				break;
			case 'b':
				opt.batch_lines = int_option("batch-size", optarg, 1, 1000000);
				break;
			case 1:
				opt.batch_bytes = int_option("batch-bytes", optarg, 65536, 1024L * 1024 * 1024);
				break;
			case 2:
				opt.max_line = int_option("max-line", optarg, 1024, 256L * 1024 * 1024);
				break;
			case 3:
				opt.line_ids = false;
				break;
			case 4:
				opt.progress_s = int_option("progress", optarg, 0, 86400);
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				fprintf(stderr, "Try \"pg_cdp_load --help\" for more information.\n");
				return EXIT_USAGE;
		}
	}
	if (optind >= argc)
	{
		die(EXIT_USAGE, "no file to load\nTry \"pg_cdp_load --help\" for more information.");
	}
	for (int i = optind; i < argc; i++)
	{
		struct stat st;

		if (strcmp(argv[i], "-") == 0)
		{
			if (++nstdin > 1)
				die(EXIT_USAGE, "standard input (-) can be loaded only once");
			continue;
		}
		if (stat(argv[i], &st) != 0 || access(argv[i], R_OK) != 0)
			die(EXIT_USAGE, "cannot read %s: %s", argv[i], strerror(errno));
		if (S_ISDIR(st.st_mode))
			die(EXIT_USAGE, "%s is a directory", argv[i]);
	}

	conn = connect_db();
	if (conn == NULL)
		return EXIT_DATABASE;
	check_database();
	source_field = "\\N";
	if (opt.source)
	{
		Buf			b = {NULL, 0, 0};

		copy_text(&b, opt.source, strlen(opt.source));
		b.data[b.len] = '\0';
		source_field = b.data;
	}
	md_ctx = EVP_MD_CTX_new();
	if (md_ctx == NULL)
		die(EXIT_USAGE, "out of memory");

	memset(&total, 0, sizeof(total));
	for (int i = optind; i < argc; i++)
		if (!load_file(argv[i], &total))
			status = EXIT_USAGE;
	if (argc - optind > 1)
		print_summary("total", &total, "");
	EVP_MD_CTX_free(md_ctx);
	PQfinish(conn);
	return status;
}
