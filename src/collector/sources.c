/*-------------------------------------------------------------------------
 *
 * sources.c
 *	  Write-key authentication for pg_cdp_collector, with a cache that is
 *	  kept current.
 *
 * A write key is checked with cdp.authenticate_source() (the database only
 * keeps the key's SHA-256) and the answer is cached.  Requests whose key is
 * cached never wait for the database: a lookup runs outside the cache's
 * lock, on one of a few connections of its own, and at most one lookup per
 * key runs at a time (the requests that need the same key wait for it).
 * Every lookup has a deadline (--lookup-timeout, as statement_timeout and
 * for the wait), after which the request gets 503.
 *
 * Known keys, enabled or not, are checked again every second, all in one
 * query on a connection of their own, so that disabling, deleting or
 * enabling a source takes effect within about a second; should the checks
 * fail, a known key's last answer is believed for a minute after the last
 * one that succeeded.  Unknown keys are believed for five seconds, so that a
 * flood of bad keys cannot keep the database busy.  Whether the latest
 * lookup or check reached the database is what /health reports.
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

#include <libpq-fe.h>

#include "collector.h"

#define BUCKETS 1024
#define MAX_ENTRIES 4096
#define UNKNOWN_TTL_MS 5000		/* an unknown key is believed this long */
#define KNOWN_TTL_MS 60000		/* a known one this long after its last check */
#define RECHECK_MS 1000			/* how often known keys are checked again */
#define LOOKUP_CONNECTIONS 4

typedef struct Entry
{
	struct Entry *next;			/* in its bucket */
	char	   *key;
	uint32_t	hash;
	bool		answered;		/* status, name and checked are set */
	bool		pending;		/* a lookup is under way */
	SourceStatus status;		/* SOURCE_OK, SOURCE_DISABLED or SOURCE_UNKNOWN */
	char		name[80];
	int64_t		checked;		/* when the database last answered, ms */
} Entry;

static const Config *cfg;

/* The cache: entries, and the condition lookups of one key wait on. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t answered = PTHREAD_COND_INITIALIZER;
static Entry *buckets[BUCKETS];
static int	nentries;
static bool lookups_ok = true;

/* Connections for the requests' lookups. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_free = PTHREAD_COND_INITIALIZER;
static PGconn *pool[LOOKUP_CONNECTIONS];
static bool pool_busy[LOOKUP_CONNECTIONS];

/* The thread that checks known keys again. */
static pthread_t recheck_thread;
static pthread_cond_t recheck_wake = PTHREAD_COND_INITIALIZER;
static bool stopping;

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A CLOCK_REALTIME deadline ms from now, for pthread_cond_timedwait. */
static struct timespec
deadline_in(int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	return ts;
}

static uint32_t
hash_key(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 16777619u;
	return h;
}

/* ---- the cache (under lock) ---- */

static Entry *
find(const char *key, uint32_t h)
{
	for (Entry *e = buckets[h % BUCKETS]; e; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static bool
fresh(const Entry *e, int64_t now)
{
	if (!e->answered)
		return false;
	return now - e->checked < (e->status == SOURCE_UNKNOWN ? UNKNOWN_TTL_MS : KNOWN_TTL_MS);
}

/* Drop every entry no request waits on whose answer is no longer believed. */
static void
sweep(int64_t now)
{
	for (int b = 0; b < BUCKETS; b++)
	{
		Entry	  **p = &buckets[b];

		while (*p)
		{
			Entry	   *e = *p;

			if (!e->pending && !fresh(e, now))
			{
				*p = e->next;
				free(e->key);
				free(e);
				nentries--;
			}
			else
				p = &e->next;
		}
	}
}

/* A new entry for key, or NULL when the cache is full of live ones. */
static Entry *
insert(const char *key, uint32_t h, int64_t now)
{
	Entry	   *e;

	if (nentries >= MAX_ENTRIES)
		sweep(now);
	if (nentries >= MAX_ENTRIES)
		return NULL;
	e = calloc(1, sizeof(Entry));
	if (e == NULL || (e->key = strdup(key)) == NULL)
	{
		free(e);
		return NULL;
	}
	e->hash = h;
	e->next = buckets[h % BUCKETS];
	buckets[h % BUCKETS] = e;
	nentries++;
	return e;
}

/* ---- connections ---- */

/*
 * A connection for lookups, with their deadline as its statement_timeout.
 * Settings in the user's conninfo win over the connect timeout given here.
 */
static PGconn *
connect_for_lookups(bool quiet)
{
	char		timeout[16];
	char		sql[64];
	const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
	const char *values[] = {timeout, "pg_cdp_collector", cfg->conninfo, NULL};
	PGconn	   *conn;
	PGresult   *res;

	/* libpq takes nothing shorter than 2 seconds */
	snprintf(timeout, sizeof(timeout), "%d", cfg->lookup_timeout_s < 2 ? 2 : cfg->lookup_timeout_s);
	conn = PQconnectdbParams(keys, values, 1);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		if (!quiet)
			log_msg("WARNING", "cannot connect to PostgreSQL to check write keys: %s",
					PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	snprintf(sql, sizeof(sql), "SET statement_timeout = %d", cfg->lookup_timeout_s * 1000);
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		log_msg("WARNING", "cannot set statement_timeout for write-key checks: %s",
				PQerrorMessage(conn));
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

/*
 * Did a failed command lose its connection?  An error the server reported
 * as ERROR (a timeout, a permission) leaves it usable; FATAL, PANIC or an
 * error libpq made up (no SQLSTATE: the connection broke) does not.
 */
static bool
connection_lost(PGconn *conn, const PGresult *res)
{
	const char *severity = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;

	if (PQstatus(conn) != CONNECTION_OK || severity == NULL)
		return true;
	return strcmp(severity, "ERROR") != 0;
}

/*
 * Run a query on *conn, connecting first if there is none.  A connection
 * that was already open and turns out broken (PostgreSQL restarted while it
 * sat idle) is replaced and the query tried once more.  Returns the result
 * (PGRES_TUPLES_OK) or NULL after logging why, unless quiet (the checks
 * every second say it once, not each time).
 */
static PGresult *
run_query(PGconn **conn, const char *sql, int nparams, const char *const *params,
		  const char *what, bool quiet)
{
	for (int attempt = 0;; attempt++)
	{
		bool		reused = *conn != NULL;
		PGresult   *res;
		bool		lost;

		if (*conn == NULL && (*conn = connect_for_lookups(quiet)) == NULL)
			return NULL;
		res = PQexecParams(*conn, sql, nparams, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			return res;
		lost = connection_lost(*conn, res);
		if (!quiet && !(lost && reused && attempt == 0))
			log_msg("WARNING", "cannot %s: %s", what, PQerrorMessage(*conn));
		PQclear(res);
		if (lost)
		{
			PQfinish(*conn);
			*conn = NULL;
			if (reused && attempt == 0)
				continue;
		}
		return NULL;
	}
}

/* A lookup connection, waiting for one until deadline; -1 if none came. */
static int
acquire_connection(const struct timespec *deadline)
{
	int			slot = -1;

	pthread_mutex_lock(&pool_lock);
	for (;;)
	{
		for (int i = 0; i < LOOKUP_CONNECTIONS && slot < 0; i++)
			if (!pool_busy[i])
				slot = i;
		if (slot >= 0)
		{
			pool_busy[slot] = true;
			break;
		}
		if (pthread_cond_timedwait(&pool_free, &pool_lock, deadline) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&pool_lock);
	return slot;
}

static void
release_connection(int slot)
{
	pthread_mutex_lock(&pool_lock);
	pool_busy[slot] = false;
	pthread_cond_signal(&pool_free);
	pthread_mutex_unlock(&pool_lock);
}

/* Ask the database about one key. */
static SourceStatus
ask_database(const char *key, char *name, size_t namelen, const struct timespec *deadline)
{
	const char *params[1] = {key};
	int			slot = acquire_connection(deadline);
	PGresult   *res;
	SourceStatus st;

	if (slot < 0)
	{
		log_msg("WARNING", "cannot check a write key: every lookup connection is busy");
		return SOURCE_ERROR;
	}
	res = run_query(&pool[slot], "SELECT source, enabled FROM cdp.authenticate_source($1)",
					1, params, "check a write key", false);
	release_connection(slot);
	if (res == NULL)
		return SOURCE_ERROR;
	if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
		st = SOURCE_UNKNOWN;
	else
	{
		snprintf(name, namelen, "%s", PQgetvalue(res, 0, 0));
		st = strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? SOURCE_OK : SOURCE_DISABLED;
	}
	PQclear(res);
	return st;
}

/* ---- lookups ---- */

SourceStatus
sources_lookup(const char *key, SourceInfo *out)
{
	uint32_t	h = hash_key(key);
	struct timespec deadline = deadline_in((int64_t) cfg->lookup_timeout_s * 1000);
	Entry	   *e;
	SourceStatus st;
	char		name[80] = "";

	out->name[0] = '\0';
	if (key[0] == '\0')
		return SOURCE_UNKNOWN;

	pthread_mutex_lock(&lock);
	for (;;)
	{
		e = find(key, h);
		if (e && fresh(e, now_ms()))
		{
			st = e->status;
			snprintf(out->name, sizeof(out->name), "%s", e->name);
			pthread_mutex_unlock(&lock);
			return st;
		}
		if (e == NULL || !e->pending)
			break;
		/* Another request is looking this key up: its answer will do. */
		if (pthread_cond_timedwait(&answered, &lock, &deadline) == ETIMEDOUT)
		{
			pthread_mutex_unlock(&lock);
			return SOURCE_ERROR;
		}
	}
	if (e == NULL)
		e = insert(key, h, now_ms());
	if (e)
		e->pending = true;
	pthread_mutex_unlock(&lock);

	/* A full cache (a flood of keys) still answers, uncached. */
	st = ask_database(key, name, sizeof(name), &deadline);

	pthread_mutex_lock(&lock);
	lookups_ok = (st != SOURCE_ERROR);
	if (e)
	{
		if (st != SOURCE_ERROR)
		{
			e->answered = true;
			e->status = st;
			snprintf(e->name, sizeof(e->name), "%s", name);
			e->checked = now_ms();
		}
		e->pending = false;
		pthread_cond_broadcast(&answered);
	}
	pthread_mutex_unlock(&lock);
	snprintf(out->name, sizeof(out->name), "%s", name);
	return st;
}

bool
sources_healthy(void)
{
	bool		ok;

	pthread_mutex_lock(&lock);
	ok = lookups_ok;
	pthread_mutex_unlock(&lock);
	return ok;
}

/* ---- checking known keys again ---- */

/* A growing string: the array literal of the keys to check. */
typedef struct Text
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Text;

static void
text_putc(Text *t, char c)
{
	if (t->len + 2 > t->cap)
	{
		t->cap = t->cap ? t->cap * 2 : 1024;
		t->data = realloc(t->data, t->cap);
		if (t->data == NULL)
		{
			log_msg("FATAL", "out of memory");
			abort();
		}
	}
	t->data[t->len++] = c;
	t->data[t->len] = '\0';
}

/* Append s as a double-quoted element of an array literal. */
static void
text_put_element(Text *t, const char *s)
{
	text_putc(t, '"');
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			text_putc(t, '\\');
		text_putc(t, *s);
	}
	text_putc(t, '"');
}

/*
 * Check every known key again in one query: the keys as a text[], each
 * answered by its position.
 */
static void
recheck(PGconn **conn)
{
	char	  **keys = NULL;
	int			nkeys = 0;
	Text		array = {NULL, 0, 0};
	PGresult   *res;
	const char *params[1];
	int64_t		now;
	bool		was_ok;

	pthread_mutex_lock(&lock);
	was_ok = lookups_ok;
	keys = malloc(sizeof(char *) * (nentries + 1));
	for (int b = 0; keys && b < BUCKETS; b++)
		for (Entry *e = buckets[b]; e; e = e->next)
			if (e->answered && e->status != SOURCE_UNKNOWN)
				keys[nkeys++] = strdup(e->key);
	pthread_mutex_unlock(&lock);
	if (nkeys == 0)
	{
		free(keys);
		return;
	}

	text_putc(&array, '{');
	for (int i = 0; i < nkeys; i++)
	{
		if (i > 0)
			text_putc(&array, ',');
		text_put_element(&array, keys[i] ? keys[i] : "");
	}
	text_putc(&array, '}');
	params[0] = array.data;
	res = run_query(conn,
					"SELECT k.i, a.source, a.enabled"
					" FROM unnest($1::text[]) WITH ORDINALITY AS k(key, i),"
					" LATERAL cdp.authenticate_source(k.key) AS a",
					1, params, "check the write keys again", !was_ok);
	now = now_ms();

	pthread_mutex_lock(&lock);
	lookups_ok = (res != NULL);
	for (int r = 0; res && r < PQntuples(res); r++)
	{
		int			i = atoi(PQgetvalue(res, r, 0)) - 1;
		Entry	   *e;

		if (i < 0 || i >= nkeys || keys[i] == NULL)
			continue;
		e = find(keys[i], hash_key(keys[i]));
		if (e == NULL || e->pending)
			continue;
		if (PQgetisnull(res, r, 1))
			e->status = SOURCE_UNKNOWN;
		else
		{
			snprintf(e->name, sizeof(e->name), "%s", PQgetvalue(res, r, 1));
			e->status = strcmp(PQgetvalue(res, r, 2), "t") == 0 ? SOURCE_OK : SOURCE_DISABLED;
		}
		e->checked = now;
	}
	pthread_mutex_unlock(&lock);

	PQclear(res);
	free(array.data);
	for (int i = 0; i < nkeys; i++)
		free(keys[i]);
	free(keys);
}

static void *
recheck_main(void *arg)
{
	PGconn	   *conn = NULL;

	pthread_mutex_lock(&lock);
	while (!stopping)
	{
		struct timespec until = deadline_in(RECHECK_MS);

		while (!stopping &&
			   pthread_cond_timedwait(&recheck_wake, &lock, &until) != ETIMEDOUT)
			;
		if (stopping)
			break;
		pthread_mutex_unlock(&lock);
		recheck(&conn);
		pthread_mutex_lock(&lock);
	}
	pthread_mutex_unlock(&lock);
	if (conn)
		PQfinish(conn);
	return NULL;
}

void
sources_start(const Config *config)
{
	cfg = config;
	if (pthread_create(&recheck_thread, NULL, recheck_main, NULL) != 0)
	{
		log_msg("FATAL", "cannot start the write-key thread: %s", strerror(errno));
		exit(1);
	}
}

void
sources_stop(void)
{
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_broadcast(&recheck_wake);
	pthread_mutex_unlock(&lock);
	pthread_join(recheck_thread, NULL);
	for (int i = 0; i < LOOKUP_CONNECTIONS; i++)
		if (pool[i])
		{
			PQfinish(pool[i]);
			pool[i] = NULL;
		}
}
