/*-------------------------------------------------------------------------
 *
 * collector.h
 *	  Shared declarations of pg_cdp_collector: settings, the line sets a
 *	  request hands to the COPY queue, the write-key cache and the
 *	  connection guard.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_CDP_COLLECTOR_H
#define PG_CDP_COLLECTOR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct Config
{
	const char *listen_addr;
	int			port;
	const char *conninfo;
	int			batch_size;		/* lines per COPY */
	int			flush_ms;		/* longest wait of a partial batch */
	int			flushers;		/* COPY connections */
	int			max_body;		/* bytes, after inflation */
	int			max_message;	/* bytes per message */
	int			max_pending;	/* lines waiting before 429 */
	int			timeout_s;		/* idle connection timeout */
	int			commit_timeout_s;	/* longest wait for a COPY to commit */
	int			lookup_timeout_s;	/* longest wait for a write-key lookup */
	int			max_connections;
	int			max_connections_per_ip;	/* 0: no limit */
	int			request_timeout_s;	/* longest a request may take to arrive */
	const char *public_host;
	bool		public_https;
} Config;

/* COPY text lines of one request: message, received_at, source, reason. */
typedef struct LineSet
{
	char	   *data;
	size_t		len;
	size_t		cap;
	int			nlines;
} LineSet;

extern void lineset_init(LineSet *set);
extern void lineset_free(LineSet *set);

extern void lineset_append(LineSet *set, const char *p, size_t len);
extern void lineset_end(LineSet *set, const char *received_at, const char *source,
						const char *reject_reason);

typedef enum SubmitResult
{
	SUBMIT_COMMITTED,
	SUBMIT_BUSY,				/* too many lines waiting: 429 */
	SUBMIT_FAILED,				/* PostgreSQL refused or is gone: 503 */
	SUBMIT_TIMEOUT				/* PostgreSQL too slow: 503 */
} SubmitResult;

extern void queue_start(const Config *cfg);
extern SubmitResult queue_submit(LineSet *set);
extern bool queue_healthy(void);
extern void queue_drain_and_stop(void);
extern void queue_join(void);

typedef enum SourceStatus
{
	SOURCE_OK,
	SOURCE_UNKNOWN,
	SOURCE_DISABLED,
	SOURCE_ERROR
} SourceStatus;

typedef struct SourceInfo
{
	char		name[80];
} SourceInfo;

extern void sources_start(const Config *cfg);
extern SourceStatus sources_lookup(const char *write_key, SourceInfo *out);
extern bool sources_healthy(void);
extern void sources_stop(void);

/* The connection guard (conns.c). */
typedef struct GuardedConn GuardedConn;

extern void conns_start(const Config *cfg);
extern void conns_stop(void);
extern GuardedConn *conns_opened(int fd);
extern void conns_closed(GuardedConn *c);
extern void conns_request_in(GuardedConn *c);	/* the whole request arrived */
extern void conns_request_done(GuardedConn *c); /* answered: waits for the next */
extern void conns_refused(void);	/* one refused at a connection limit */

extern void log_msg(const char *level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

#endif
