/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  The shared COPY queue of pg_cdp_collector.
 *
 * Requests append their lines to the open batch and wait; flusher threads,
 * each with its own connection, take the open batch when it is full or its
 * oldest line has waited flush-ms, COPY it into cdp.inbox in one
 * transaction, and wake its requests with the outcome.  Concurrent requests
 * thus share transactions, and a request is acknowledged only after the
 * COPY that holds its lines committed.  Every line is checked for valid
 * UTF-8 before it joins a batch, so one bad line cannot fail the others'.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "collector.h"

typedef struct Batch
{
	LineSet		lines;
	int			waiters;		/* requests that still need the outcome */
	int			status;			/* 0 open/in flight, 1 committed, -1 failed */
	struct timespec opened;
	struct Batch *next;			/* queue of closed batches */
} Batch;

static const Config *cfg;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;	/* flushers wait */
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;	/* requests wait */
static Batch *open_batch;
static long pending_lines;
static bool urgent;				/* shutting down: flush at once */
static bool stopping;			/* flushers exit when nothing is left */
static bool db_ok = true;
static pthread_t *threads;

/* ---- line sets ---- */

void
lineset_init(LineSet *set)
{
	memset(set, 0, sizeof(*set));
}

static void
reserve(LineSet *set, size_t more)
{
	if (set->len + more + 1 > set->cap)
	{
		size_t		cap = set->cap ? set->cap : 65536;

		while (cap < set->len + more + 1)
			cap *= 2;
		set->data = realloc(set->data, cap);
		if (set->data == NULL)
		{
			log_msg("FATAL", "out of memory");
			abort();
		}
		set->cap = cap;
	}
}

/* Is s valid UTF-8 without NUL bytes (COPY's text input needs both)? */
static bool
valid_utf8(const unsigned char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = s[i];
		int			n;
		uint32_t	cp;

		if (c == 0)
			return false;
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0)
			n = 1, cp = c & 0x1F;
		else if ((c & 0xF0) == 0xE0)
			n = 2, cp = c & 0x0F;
		else if ((c & 0xF8) == 0xF0)
			n = 3, cp = c & 0x07;
		else
			return false;
		for (int k = 1; k <= n; k++)
		{
			if (i + k >= len || (s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
			cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

/* Append bytes in COPY text format: backslash, newline, CR, tab escaped. */
static void
append_escaped(LineSet *set, const char *buf, size_t size)
{
	reserve(set, size * 2);
	for (size_t i = 0; i < size; i++)
	{
		char		c = buf[i];

		switch (c)
		{
			case '\\':
				set->data[set->len++] = '\\';
				set->data[set->len++] = '\\';
				break;
			case '\n':
				set->data[set->len++] = '\\';
				set->data[set->len++] = 'n';
				break;
			case '\r':
				set->data[set->len++] = '\\';
				set->data[set->len++] = 'r';
				break;
			case '\t':
				set->data[set->len++] = '\\';
				set->data[set->len++] = 't';
				break;
			default:
				set->data[set->len++] = c;
		}
	}
}

/* Append a field; NULL is COPY's \N. */
static void
add_field(LineSet *set, const char *value)
{
	if (value == NULL)
	{
		reserve(set, 2);
		memcpy(set->data + set->len, "\\N", 2);
		set->len += 2;
		return;
	}
	append_escaped(set, value, strlen(value));
}

/* End a line: the three fields after the message, then the newline. */
static void
finish_line(LineSet *set, const char *received_at, const char *source,
			const char *reject_reason)
{
	reserve(set, 1);
	set->data[set->len++] = '\t';
	add_field(set, received_at);
	reserve(set, 1);
	set->data[set->len++] = '\t';
	add_field(set, source);
	reserve(set, 1);
	set->data[set->len++] = '\t';
	add_field(set, reject_reason);
	reserve(set, 1);
	set->data[set->len++] = '\n';
	set->nlines++;
}

void
lineset_add(LineSet *set, const char *message, const char *received_at,
			const char *source, const char *reject_reason)
{
	if (!valid_utf8((const unsigned char *) message, strlen(message)))
	{
		message = "\"(message dropped: not valid UTF-8)\"";
		reject_reason = "22021: message is not valid UTF-8";
	}
	add_field(set, message);
	finish_line(set, received_at, source, reject_reason);
}

/* jansson dump callback: escape straight into the line set. */
typedef struct DumpTarget
{
	LineSet    *set;
	size_t		raw;			/* bytes before escaping */
} DumpTarget;

static int
dump_escaped(const char *buffer, size_t size, void *data)
{
	DumpTarget *t = data;

	t->raw += size;
	append_escaped(t->set, buffer, size);
	return 0;
}

/*
 * lineset_add_json serializes msg straight into the set as one line (no
 * intermediate string); a message over max_bytes keeps its text but gets
 * the reason, so the drain keeps it as a reject.
 */
void
lineset_add_json(LineSet *set, json_t *msg, size_t max_bytes, const char *received_at,
				 const char *source, const char *too_large_reason)
{
	DumpTarget	t = {set, 0};
	size_t		start = set->len;

	if (json_dump_callback(msg, dump_escaped, &t, JSON_COMPACT) != 0 ||
		!valid_utf8((const unsigned char *) set->data + start, set->len - start))
	{
		set->len = start;
		lineset_add(set, "{}", received_at, source, "22021: message could not be serialized as UTF-8");
		return;
	}
	finish_line(set, received_at, source, t.raw > max_bytes ? too_large_reason : NULL);
}

void
lineset_free(LineSet *set)
{
	free(set->data);
	memset(set, 0, sizeof(*set));
}

/* ---- the queue ---- */

static Batch *
new_batch(void)
{
	Batch	   *b = calloc(1, sizeof(Batch));

	if (b == NULL)
	{
		log_msg("FATAL", "out of memory");
		abort();
	}
	clock_gettime(CLOCK_MONOTONIC, &b->opened);
	return b;
}

static long
ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/*
 * queue_submit adds a request's lines to the open batch and waits until the
 * COPY holding them committed or failed.
 */
SubmitResult
queue_submit(LineSet *set)
{
	Batch	   *b;
	int			status;
	struct timespec deadline;

	if (set->nlines == 0)
		return SUBMIT_COMMITTED;
	pthread_mutex_lock(&lock);
	if (pending_lines + set->nlines > cfg->max_pending)
	{
		pthread_mutex_unlock(&lock);
		return SUBMIT_BUSY;
	}
	b = open_batch;
	if (b->lines.nlines == 0)
		clock_gettime(CLOCK_MONOTONIC, &b->opened);
	reserve(&b->lines, set->len);
	memcpy(b->lines.data + b->lines.len, set->data, set->len);
	b->lines.len += set->len;
	b->lines.nlines += set->nlines;
	b->waiters++;
	pending_lines += set->nlines;
	pthread_cond_signal(&work);

	/*
	 * Wait for the outcome, but not forever: a client told 503 retries, and
	 * should the COPY still commit, the retry is a duplicate that ingest
	 * drops.
	 */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += cfg->commit_timeout_s;
	while (b->status == 0)
		if (pthread_cond_timedwait(&done, &lock, &deadline) == ETIMEDOUT)
			break;
	status = b->status;
	if (--b->waiters == 0 && status != 0)
	{
		/* the flusher is done with it; an unfinished one it frees itself */
		lineset_free(&b->lines);
		free(b);
	}
	pthread_mutex_unlock(&lock);
	if (status == 0)
		return SUBMIT_TIMEOUT;
	return status > 0 ? SUBMIT_COMMITTED : SUBMIT_FAILED;
}

/* COPY one batch; true when it committed. */
static bool
copy_batch(PGconn **conn, Batch *b)
{
	PGresult   *res;
	bool		ok = false;

	if (*conn == NULL || PQstatus(*conn) != CONNECTION_OK)
	{
		if (*conn)
			PQfinish(*conn);
		*conn = PQconnectdb(cfg->conninfo);
		if (PQstatus(*conn) != CONNECTION_OK)
		{
			log_msg("WARNING", "cannot connect to PostgreSQL: %s", PQerrorMessage(*conn));
			PQfinish(*conn);
			*conn = NULL;
			return false;
		}
		PQclear(PQexec(*conn, "SET application_name = 'pg_cdp_collector'"));
	}
	res = PQexec(*conn, "COPY cdp.inbox (message, received_at, source, reject_reason) FROM STDIN");
	if (PQresultStatus(res) != PGRES_COPY_IN)
	{
		log_msg("WARNING", "COPY into cdp.inbox refused: %s", PQerrorMessage(*conn));
		PQclear(res);
		return false;
	}
	PQclear(res);
	if (PQputCopyData(*conn, b->lines.data, (int) b->lines.len) == 1 &&
		PQputCopyEnd(*conn, NULL) == 1)
	{
		res = PQgetResult(*conn);
		ok = (PQresultStatus(res) == PGRES_COMMAND_OK);
		if (!ok)
			log_msg("WARNING", "COPY into cdp.inbox failed: %s", PQerrorMessage(*conn));
		PQclear(res);
		while ((res = PQgetResult(*conn)) != NULL)
			PQclear(res);
	}
	else
		log_msg("WARNING", "COPY into cdp.inbox interrupted: %s", PQerrorMessage(*conn));
	return ok;
}

static void *
flusher_main(void *arg)
{
	PGconn	   *conn = NULL;

	pthread_mutex_lock(&lock);
	for (;;)
	{
		Batch	   *b = open_batch;
		bool		ok;

		if (b->lines.nlines == 0)
		{
			if (stopping)
				break;
			pthread_cond_wait(&work, &lock);
			continue;
		}
		if (b->lines.nlines < cfg->batch_size && !urgent && !stopping)
		{
			long		waited = ms_since(&b->opened);

			if (waited < cfg->flush_ms)
			{
				struct timespec until;

				clock_gettime(CLOCK_REALTIME, &until);
				until.tv_nsec += (cfg->flush_ms - waited) * 1000000L;
				until.tv_sec += until.tv_nsec / 1000000000L;
				until.tv_nsec %= 1000000000L;
				pthread_cond_timedwait(&work, &lock, &until);
				continue;
			}
		}
		/* Take the open batch; new requests go to a fresh one. */
		open_batch = new_batch();
		pthread_mutex_unlock(&lock);

		ok = copy_batch(&conn, b);
		if (!ok && conn != NULL)
		{
			PQfinish(conn);
			conn = NULL;
		}

		pthread_mutex_lock(&lock);
		db_ok = ok;
		pending_lines -= b->lines.nlines;
		b->status = ok ? 1 : -1;
		if (b->waiters == 0)
		{
			lineset_free(&b->lines);
			free(b);
		}
		pthread_cond_broadcast(&done);
		if (!ok)
		{
			/* PostgreSQL is down: pace the reconnects */
			pthread_mutex_unlock(&lock);
			usleep(200 * 1000);
			pthread_mutex_lock(&lock);
		}
	}
	pthread_mutex_unlock(&lock);
	if (conn)
		PQfinish(conn);
	return NULL;
}

void
queue_start(const Config *config)
{
	cfg = config;
	open_batch = new_batch();
	threads = calloc(cfg->flushers, sizeof(pthread_t));
	for (int i = 0; i < cfg->flushers; i++)
		if (pthread_create(&threads[i], NULL, flusher_main, NULL) != 0)
		{
			log_msg("FATAL", "cannot start flusher thread: %s", strerror(errno));
			exit(1);
		}
}

bool
queue_healthy(void)
{
	bool		ok;

	pthread_mutex_lock(&lock);
	ok = db_ok;
	pthread_mutex_unlock(&lock);
	return ok;
}

void
queue_drain_and_stop(void)
{
	pthread_mutex_lock(&lock);
	urgent = true;
	pthread_cond_broadcast(&work);
	pthread_mutex_unlock(&lock);
}

void
queue_join(void)
{
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_broadcast(&work);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < cfg->flushers; i++)
		pthread_join(threads[i], NULL);
}
