/*-------------------------------------------------------------------------
 *
 * db.c
 *	  pg_cdp_connector's one PostgreSQL session: LISTEN cdp_outbox, claim
 *	  batches with cdp.claim, and settle them with cdp.ack, cdp.fail,
 *	  cdp.report_deliveries and cdp.report_delivery.
 *
 * Leases belong to the session that claimed, so when the connection is
 * lost nothing is carried over: the caller keeps its outcomes and offers
 * them again on the next connection, where the outbox refuses those whose
 * lease it no longer holds, and the messages are claimed again once their
 * leases expire (at least once: a duplicate repeats a dedupe key).
 *
 * Acks of a batch go in one statement with the 'delivered' reports in the
 * same transaction, so that a message is never reported delivered without
 * being acked, nor acked without its report; a report that fails is logged
 * and does not hold back the ack.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

static PGconn *conn;

/*
 * The message's JSON is built by PostgreSQL, which escapes it, so that the
 * file and webhook deliveries send it as it comes.
 */
static const char *claim_sql =
"SELECT c.outbox_id, c.dedupe_key, c.address, c.subject, c.body, c.body_html, "
"       json_build_object('outbox_id', c.outbox_id, 'dedupe_key', c.dedupe_key, "
"                         'channel', c.channel, 'kind', c.kind, 'profile_id', c.profile_id, "
"                         'address', c.address, 'template', c.template, 'subject', c.subject, "
"                         'body', c.body, 'body_html', c.body_html, 'payload', c.payload, "
"                         'attempt', c.attempt)::text "
"  FROM cdp.claim($1::text, $2::int, $3::interval) c";

static const char *ack_sql = "SELECT cdp.ack($1::bigint[])";
static const char *report_sql =
"SELECT cdp.report_deliveries($1::bigint[], 'delivered', '{}'::jsonb)";
static const char *fail_sql =
"SELECT cdp.fail($1::bigint, $2::text, $3::interval, permanent => $4::boolean)";
static const char *bounce_sql =
"SELECT cdp.report_delivery($1::bigint, 'bounced', $2::jsonb)";

bool
db_connected(void)
{
	return conn != NULL;
}

int
db_socket(void)
{
	return conn ? PQsocket(conn) : -1;
}

void
db_disconnect(void)
{
	if (conn)
		PQfinish(conn);
	conn = NULL;
}

/* After a failed call: was it the connection? Then drop it. */
static bool
lost(void)
{
	if (conn && PQstatus(conn) == CONNECTION_BAD)
	{
		log_msg("WARNING", "lost the connection to PostgreSQL");
		db_disconnect();
		return true;
	}
	return false;
}

static bool
exec_ok(PGresult *res, ExecStatusType want)
{
	return res && PQresultStatus(res) == want;
}

static bool
simple(const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	bool		ok = exec_ok(res, PGRES_COMMAND_OK) || exec_ok(res, PGRES_TUPLES_OK);

	if (!ok)
		log_msg("WARNING", "%s: %s", sql, conn ? PQerrorMessage(conn) : "no connection");
	PQclear(res);
	return ok;
}

/* The statements, checked against the API now rather than at the first claim. */
static bool
prepare(const char *name, const char *sql)
{
	PGresult   *res = PQprepare(conn, name, sql, 0, NULL);
	bool		ok = exec_ok(res, PGRES_COMMAND_OK);

	if (!ok)
		log_msg("ERROR", "cannot prepare the %s statement: %s", name, PQerrorMessage(conn));
	PQclear(res);
	return ok;
}

DbConnect
db_connect(void)
{
	const char *keys[] = {"application_name", "connect_timeout", "keepalives_idle",
	"keepalives_interval", "keepalives_count", "dbname", NULL};
	const char *vals[] = {"pg_cdp_connector", "10", "10", "5", "3", cfg.conninfo, NULL};

	db_disconnect();
	conn = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		log_msg("WARNING", "cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
		db_disconnect();
		return DB_UNREACHABLE;
	}
	if (!simple("LISTEN cdp_outbox") ||
		!prepare("claim", claim_sql) || !prepare("ack", ack_sql) ||
		!prepare("report", report_sql) || !prepare("fail", fail_sql) ||
		!prepare("bounce", bounce_sql))
	{
		DbConnect	rc = PQstatus(conn) == CONNECTION_OK ? DB_REFUSED : DB_UNREACHABLE;

		db_disconnect();
		return rc;
	}
	return DB_OK;
}

/* Wake the channels named by NOTIFY cdp_outbox; false if the connection is gone. */
bool
db_poll_notifies(bool readable)
{
	PGnotify   *n;

	if (conn == NULL)
		return false;
	/* notifications that came during a call are already buffered */
	if (readable && !PQconsumeInput(conn))
	{
		lost();
		return conn != NULL;
	}
	while ((n = PQnotifies(conn)) != NULL)
	{
		for (int i = 0; i < cfg.nchannels; i++)
			if (n->extra == NULL || n->extra[0] == '\0' || strcmp(n->extra, cfg.channels[i].name) == 0)
				cfg.channels[i].want_claim = true;
		PQfreemem(n);
	}
	return true;
}

/*
 * Claim at most max messages of ch into a new batch.  Returns the number
 * claimed; -1 if the call failed (the connection may be gone); -2 if the
 * database refuses the connector itself (no such function, no privilege),
 * which no retry can mend.
 */
int
db_claim(Channel *ch, int max, Batch **out)
{
	char		maxs[16];
	char		lease[32];
	const char *params[3];
	PGresult   *res;
	double		lease_end = now_s() + cfg.lease_s;
	int			n;
	Batch	   *b;

	*out = NULL;
	if (conn == NULL)
		return -1;
	snprintf(maxs, sizeof(maxs), "%d", max);
	snprintf(lease, sizeof(lease), "%d seconds", cfg.lease_s);
	params[0] = ch->name;
	params[1] = maxs;
	params[2] = lease;
	res = PQexecPrepared(conn, "claim", 3, params, NULL, NULL, 0);
	if (!exec_ok(res, PGRES_TUPLES_OK))
	{
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		int			rc = -1;

		if (!lost())
		{
			log_msg("ERROR", "cdp.claim('%s'): %s", ch->name, PQerrorMessage(conn));
			/* class 42: undefined function, insufficient privilege, ... */
			if (state && strncmp(state, "42", 2) == 0)
				rc = -2;
		}
		PQclear(res);
		return rc;
	}
	n = PQntuples(res);
	if (n == 0)
	{
		PQclear(res);
		return 0;
	}
	b = malloc(sizeof(Batch));
	b->res = res;
	b->pending = n;
	b->msgs = calloc(n, sizeof(Message));
	for (int i = 0; i < n; i++)
	{
		Message    *m = &b->msgs[i];

		m->batch = b;
		m->channel = ch;
		m->outbox_id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		m->dedupe_key = PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1);
		m->address = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);
		m->subject = PQgetvalue(res, i, 3);
		m->body = PQgetvalue(res, i, 4);
		m->body_html = PQgetisnull(res, i, 5) ? NULL : PQgetvalue(res, i, 5);
		m->json = PQgetvalue(res, i, 6);
		m->lease_end = lease_end;
		m->retry_after_s = -1;
	}
	stats.claimed += n;
	*out = b;
	return n;
}

/* "{1,2,3}" of the ids of outs[] of one kind, and whether to report them. */
static char *
id_array(Outcome *outs, int n, bool only_reported, int *count)
{
	size_t		cap = 2 + (size_t) n * 21;
	char	   *s = malloc(cap);
	size_t		len = 0;

	*count = 0;
	s[len++] = '{';
	for (int i = 0; i < n; i++)
	{
		if (outs[i].kind != OUT_ACK || (only_reported && !outs[i].report))
			continue;
		len += snprintf(s + len, cap - len, "%s%lld", *count ? "," : "", (long long) outs[i].outbox_id);
		(*count)++;
	}
	s[len++] = '}';
	s[len] = '\0';
	return s;
}

static void
report_delivered(Outcome *outs, int n)
{
	int			count;
	char	   *ids = id_array(outs, n, true, &count);

	if (count > 0)
	{
		const char *params[1] = {ids};
		PGresult   *res;

		simple("SAVEPOINT report");
		res = PQexecPrepared(conn, "report", 1, params, NULL, NULL, 0);
		if (!exec_ok(res, PGRES_TUPLES_OK))
		{
			log_msg("WARNING", "cdp.report_deliveries of %d delivered messages: %s", count,
					PQerrorMessage(conn));
			simple("ROLLBACK TO SAVEPOINT report");
		}
		PQclear(res);
	}
	free(ids);
}

/*
 * Acks and reports of the delivered messages among outs[], in one
 * transaction.  If the outbox refuses the batch (some lease was lost to
 * another claimer), each is acked alone, so that the others still count.
 */
static bool
flush_acks(Outcome *outs, int n)
{
	int			count;
	char	   *ids = id_array(outs, n, false, &count);
	const char *params[1] = {ids};
	PGresult   *res;

	if (count == 0)
	{
		free(ids);
		return true;
	}
	if (!simple("BEGIN"))
	{
		free(ids);
		return !lost();
	}
	res = PQexecPrepared(conn, "ack", 1, params, NULL, NULL, 0);
	free(ids);
	if (exec_ok(res, PGRES_TUPLES_OK))
	{
		PQclear(res);
		report_delivered(outs, n);
		if (simple("COMMIT"))
		{
			stats.delivered += count;
			return true;
		}
		return !lost();
	}
	PQclear(res);
	if (lost())
		return false;
	simple("ROLLBACK");

	for (int i = 0; i < n; i++)
	{
		char		one[32];
		const char *p1[1] = {one};

		if (outs[i].kind != OUT_ACK)
			continue;
		snprintf(one, sizeof(one), "{%lld}", (long long) outs[i].outbox_id);
		if (!simple("BEGIN"))
			return !lost();
		res = PQexecPrepared(conn, "ack", 1, p1, NULL, NULL, 0);
		if (exec_ok(res, PGRES_TUPLES_OK))
		{
			PQclear(res);
			report_delivered(&outs[i], 1);
			if (!simple("COMMIT"))
				return !lost();
			stats.delivered++;
			continue;
		}
		log_msg("WARNING", "cdp.ack(%lld) refused: %s", (long long) outs[i].outbox_id,
				PQerrorMessage(conn));
		PQclear(res);
		if (lost())
			return false;
		simple("ROLLBACK");
		stats.refused++;
	}
	return true;
}

static bool
flush_failure(Outcome *o)
{
	char		id[24];
	char		retry[32];
	const char *params[4];
	PGresult   *res;

	snprintf(id, sizeof(id), "%lld", (long long) o->outbox_id);
	if (o->kind == OUT_BOUNCE)
	{
		const char *bp[2];
		long		code = strtol(o->error + 5, NULL, 10);	/* "SMTP 550 ..." */
		size_t		len = strlen(o->error) * 6 + 64;
		char	   *detail = malloc(len);
		size_t		k;

		/* the server's reply, as a JSON string */
		k = snprintf(detail, len, "{\"type\": \"hard\", \"code\": %ld, \"reply\": \"", code);
		for (const unsigned char *p = (const unsigned char *) o->error + 5; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				k += snprintf(detail + k, len - k, "\\%c", *p);
			else if (*p < 0x20)
				k += snprintf(detail + k, len - k, "\\u%04x", *p);
			else
				detail[k++] = *p;
		}
		snprintf(detail + k, len - k, "\"}");
		bp[0] = id;
		bp[1] = detail;
		res = PQexecPrepared(conn, "bounce", 2, bp, NULL, NULL, 0);
		free(detail);
		if (!exec_ok(res, PGRES_TUPLES_OK))
		{
			PQclear(res);
			if (lost())
				return false;
			log_msg("WARNING", "cdp.report_delivery(%s, 'bounced'): %s", id, PQerrorMessage(conn));
		}
		else
		{
			PQclear(res);
			stats.bounced++;
		}
	}
	params[0] = id;
	params[1] = o->error;
	if (o->kind == OUT_RETRY && o->retry_in_s >= 0)
	{
		snprintf(retry, sizeof(retry), "%d seconds", o->retry_in_s);
		params[2] = retry;
	}
	else
		params[2] = NULL;
	params[3] = o->kind == OUT_RETRY ? "false" : "true";
	res = PQexecPrepared(conn, "fail", 4, params, NULL, NULL, 0);
	if (!exec_ok(res, PGRES_TUPLES_OK))
	{
		PQclear(res);
		if (lost())
			return false;
		log_msg("WARNING", "cdp.fail(%s) refused: %s", id, PQerrorMessage(conn));
		stats.refused++;
		return true;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "dead") == 0)
		stats.dead++;
	else
		stats.retried++;
	PQclear(res);
	return true;
}

/*
 * Settle outs[] in the outbox.  False when the connection was lost before
 * the end: the caller keeps them all for the next connection (the ones
 * already settled are refused there, harmlessly).
 */
bool
db_flush(Outcome *outs, int n)
{
	if (conn == NULL)
		return false;
	if (!flush_acks(outs, n))
		return false;
	for (int i = 0; i < n; i++)
		if (outs[i].kind != OUT_ACK && !flush_failure(&outs[i]))
			return false;
	return conn != NULL;
}
