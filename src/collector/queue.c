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
 * COPY that holds its lines committed.  Lines are built from bodies that
 * jscan.c validated (UTF-8 included) and escaped for COPY's text format, so
 * one bad line cannot fail the others'.
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

#include <libpq-fe.h>

#include "collector.h"

typedef struct Batch
{
	LineSet		lines;
	int			waiters;		/* requests that still need the outcome */
	int			status;			/* 0 open/in flight, 1 committed, -1 failed */
	pthread_cond_t done;		/* its requests wait for the outcome here */
	struct timespec opened;
	struct Batch *next;			/* queue of closed batches */
} Batch;

static const Config *cfg;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;	/* flushers wait */
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

/*
 * Append bytes in COPY text format: backslash, newline, CR, tab escaped.
 * A line is built from pieces of validated JSON (valid UTF-8 by then), each
 * appended so, then ended by lineset_end with its three other fields.
 */
void
lineset_append(LineSet *set, const char *buf, size_t size)
{
	static const char escape_as[256] = {
		['\\'] = '\\', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'
	};
	size_t		run = 0;

	reserve(set, size * 2);
	for (size_t i = 0; i < size; i++)
	{
		char		e = escape_as[(unsigned char) buf[i]];

		if (e == 0)
			continue;
		/* Plain runs are copied whole. */
		memcpy(set->data + set->len, buf + run, i - run);
		set->len += i - run;
		set->data[set->len++] = '\\';
		set->data[set->len++] = e;
		run = i + 1;
	}
	memcpy(set->data + set->len, buf + run, size - run);
	set->len += size - run;
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
	lineset_append(set, value, strlen(value));
}

/* End a line: the three fields after the message, then the newline. */
void
lineset_end(LineSet *set, const char *received_at, const char *source,
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
	pthread_cond_init(&b->done, NULL);
	return b;
}

static void
free_batch(Batch *b)
{
	lineset_free(&b->lines);
	pthread_cond_destroy(&b->done);
	free(b);
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

	/*
	 * A flusher needs waking only to start timing a batch or to take a full
	 * one; otherwise it is already waiting out the flush interval.
	 */
	if (b->lines.nlines == set->nlines || b->lines.nlines >= cfg->batch_size)
		pthread_cond_signal(&work);

	/*
	 * Wait for the outcome, but not forever: a client told 503 retries, and
	 * should the COPY still commit, the retry is a duplicate that ingest
	 * drops.
	 */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += cfg->commit_timeout_s;
	while (b->status == 0)
		if (pthread_cond_timedwait(&b->done, &lock, &deadline) == ETIMEDOUT)
			break;
	status = b->status;
	if (--b->waiters == 0 && status != 0)
	{
		/* the flusher is done with it; an unfinished one it frees itself */
		free_batch(b);
	}
	pthread_mutex_unlock(&lock);
	if (status == 0)
		return SUBMIT_TIMEOUT;
	return status > 0 ? SUBMIT_COMMITTED : SUBMIT_FAILED;
}

/* A connection, made anew when there is none or it broke. */
static bool
ensure_connection(PGconn **conn)
{
	if (*conn != NULL && PQstatus(*conn) == CONNECTION_OK)
		return true;
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
	return true;
}

/* COPY one batch; true when it committed. */
static bool
copy_batch(PGconn **conn, Batch *b)
{
	PGresult   *res;
	bool		ok = false;

	for (int attempt = 0;; attempt++)
	{
		bool		reused = *conn != NULL && PQstatus(*conn) == CONNECTION_OK;

		if (!ensure_connection(conn))
			return false;
		res = PQexec(*conn, "COPY cdp.inbox (message, received_at, source, reject_reason) FROM STDIN");
		if (PQresultStatus(res) == PGRES_COPY_IN)
			break;
		PQclear(res);

		/*
		 * A connection idle while PostgreSQL restarted looks fine until used,
		 * and after an immediate stop libpq may not even mark it bad once it
		 * failed: no line was sent yet, so one more try on a new connection.
		 */
		if (attempt == 0 && reused)
		{
			PQfinish(*conn);
			*conn = NULL;
			continue;
		}
		log_msg("WARNING", "COPY into cdp.inbox refused: %s", PQerrorMessage(*conn));
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
		pthread_cond_broadcast(&b->done);
		if (b->waiters == 0)
			free_batch(b);
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
