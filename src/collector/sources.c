/*-------------------------------------------------------------------------
 *
 * sources.c
 *	  Write-key authentication for pg_cdp_collector, with a small cache.
 *
 * A write key is checked with cdp.authenticate_source() on its own
 * connection (the database only keeps the key's SHA-256), and the answer
 * is cached: known keys for a minute, unknown ones for five seconds, so
 * that a flood of bad keys cannot keep the database busy and a newly
 * created or disabled source takes effect quickly.
 *
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "collector.h"

#define CACHE_SIZE 256
#define KNOWN_TTL 60
#define UNKNOWN_TTL 5

typedef struct Entry
{
	char	   *key;			/* NULL: an empty slot */
	SourceStatus status;
	char		name[80];
	time_t		expires;
} Entry;

static const Config *cfg;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Entry cache[CACHE_SIZE];
static PGconn *conn;

static uint32_t
hash_key(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 16777619u;
	return h;
}

void
sources_start(const Config *config)
{
	cfg = config;
}

static SourceStatus
ask_database(const char *key, char *name, size_t namelen)
{
	const char *params[1] = {key};
	PGresult   *res;
	SourceStatus st;

	for (int attempt = 0;; attempt++)
	{
		bool		reused = conn != NULL && PQstatus(conn) == CONNECTION_OK;

		if (!reused)
		{
			if (conn)
				PQfinish(conn);
			conn = PQconnectdb(cfg->conninfo);
			if (PQstatus(conn) != CONNECTION_OK)
			{
				log_msg("WARNING", "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
				PQfinish(conn);
				conn = NULL;
				return SOURCE_ERROR;
			}
		}
		res = PQexecParams(conn, "SELECT source, enabled FROM cdp.authenticate_source($1)",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			break;
		PQclear(res);
		/* broken while idle (PostgreSQL restarted): once more on a new one */
		if (!(attempt == 0 && reused))
			log_msg("WARNING", "cannot check a write key: %s", PQerrorMessage(conn));
		PQfinish(conn);
		conn = NULL;
		if (attempt == 0 && reused)
			continue;
		return SOURCE_ERROR;
	}
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

SourceStatus
sources_lookup(const char *key, SourceInfo *out)
{
	Entry	   *e;
	time_t		now = time(NULL);
	SourceStatus st;
	char		name[80] = "";

	if (key[0] == '\0')
		return SOURCE_UNKNOWN;
	pthread_mutex_lock(&lock);
	e = &cache[hash_key(key) % CACHE_SIZE];
	if (e->expires > now && e->key && strcmp(e->key, key) == 0)
	{
		st = e->status;
		snprintf(out->name, sizeof(out->name), "%s", e->name);
		pthread_mutex_unlock(&lock);
		return st;
	}
	/* One connection, asked under the lock: lookups are rare once cached. */
	st = ask_database(key, name, sizeof(name));
	if (st != SOURCE_ERROR && (e->key == NULL || strcmp(e->key, key) != 0))
	{
		free(e->key);
		e->key = strdup(key);
		e->expires = 0;
	}
	if (st != SOURCE_ERROR && e->key != NULL)
	{
		e->status = st;
		snprintf(e->name, sizeof(e->name), "%s", name);
		e->expires = now + (st == SOURCE_UNKNOWN ? UNKNOWN_TTL : KNOWN_TTL);
	}
	snprintf(out->name, sizeof(out->name), "%s", name);
	pthread_mutex_unlock(&lock);
	return st;
}

void
sources_stop(void)
{
	pthread_mutex_lock(&lock);
	if (conn)
		PQfinish(conn);
	conn = NULL;
	pthread_mutex_unlock(&lock);
}
