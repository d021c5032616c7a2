/*-------------------------------------------------------------------------
 *
 * connector.h
 *	  Shared declarations of pg_cdp_connector: its settings, the messages
 *	  it claims, the outcomes it reports back to the outbox, and the
 *	  interfaces of its parts (config.c, db.c, deliver.c, mime.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_CDP_CONNECTOR_H
#define PG_CDP_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#define CONNECTOR_VERSION "0.2.0"

/* Exit statuses, documented in --help and the README. */
#define EXIT_STOPPED		0	/* SIGTERM/SIGINT: everything delivered is acked */
#define EXIT_BAD_CONFIG		1	/* bad usage or configuration file */
#define EXIT_NO_DATABASE	2	/* PostgreSQL unreachable at start */
#define EXIT_REFUSED		3	/* the database refuses the connector's calls */

typedef enum DeliveryKind
{
	KIND_WEBHOOK,
	KIND_SMTP,
	KIND_FILE
} DeliveryKind;

/* Extra HTTP header lines of a webhook channel. */
typedef struct HeaderList
{
	char	   *line;
	struct HeaderList *next;
} HeaderList;

typedef struct Channel
{
	char	   *name;			/* the outbox channel (cdp.channels.name) */
	DeliveryKind kind;
	bool		kind_set;
	int			batch;			/* most messages per claim */
	int			concurrency;	/* most deliveries of this channel in flight */
	int			timeout_ms;		/* one delivery, connection included */
	bool		report_delivered;	/* cdp.report_delivery(..., 'delivered') */
	bool		report_set;
	char	   *url;			/* webhook, smtp */
	HeaderList *headers;		/* webhook */
	char	   *mail_from;		/* smtp: the envelope and From address */
	char	   *from_header;	/* smtp: From header, e.g. "Shop <a@b>" */
	char	   *username;		/* smtp */
	char	   *password;		/* smtp */
	int			tls;			/* smtp: 0 none, 1 if offered, 2 required */
	char	   *path;			/* file */

	/* run-time state */
	int			fd;				/* file: open for append, -1 if not yet */
	int			inflight;
	bool		want_claim;		/* notified, polled, or the last claim was full */
	double		claim_after;	/* after a failed claim: not before this time */
} Channel;

typedef struct Config
{
	char	   *conninfo;
	int			concurrency;	/* deliveries in flight, all channels */
	int			batch;			/* default most messages per claim */
	int			lease_s;
	int			poll_ms;		/* fallback claim interval without NOTIFY */
	int			reconnect_max_ms;
	bool		report_delivered;
	Channel    *channels;
	int			nchannels;
} Config;

/*
 * A claimed batch: the PGresult stays alive, and its messages point into
 * it, until the last of them is settled.
 */
typedef struct Batch
{
	PGresult   *res;
	int			pending;
	struct Message *msgs;
} Batch;

typedef struct Message
{
	Batch	   *batch;
	Channel    *channel;
	int64_t		outbox_id;
	const char *dedupe_key;		/* NULL when the message has none */
	const char *address;		/* NULL when unresolved */
	const char *subject;
	const char *body;
	const char *body_html;		/* NULL: plain text only */
	const char *json;			/* the message as one JSON object */
	double		lease_end;		/* monotonic seconds, from the claim's start */

	/* delivery state (deliver.c) */
	void	   *easy;			/* CURL * */
	void	   *headers;		/* struct curl_slist * */
	void	   *rcpt;			/* struct curl_slist * */
	char	   *mail;			/* smtp: the whole RFC 5322 message */
	size_t		mail_len;
	size_t		mail_off;
	int			retry_after_s;	/* from a Retry-After header, -1 if none */
	int			slot;			/* index among the transfers in flight */
	char		errbuf[256];	/* CURL_ERROR_SIZE */
	char		reply[200];		/* the start of an HTTP error's body */
	size_t		reply_len;
} Message;

typedef enum OutcomeKind
{
	OUT_ACK,					/* delivered */
	OUT_RETRY,					/* cdp.fail: retried with backoff or retry_in */
	OUT_DEAD,					/* cdp.fail(permanent => true) */
	OUT_BOUNCE					/* report 'bounced' (hard), then as OUT_DEAD */
} OutcomeKind;

typedef struct Outcome
{
	int64_t		outbox_id;
	Channel    *channel;
	OutcomeKind kind;
	bool		report;			/* OUT_ACK: report 'delivered' */
	int			retry_in_s;		/* OUT_RETRY: -1 lets the channel's backoff decide */
	char	   *error;			/* malloc'd; NULL for OUT_ACK */
	double		lease_end;
} Outcome;

/* Counters logged at the end and on SIGUSR1. */
typedef struct Stats
{
	long		claimed;
	long		delivered;
	long		retried;
	long		dead;
	long		bounced;
	long		refused;		/* outcomes the outbox refused: a lease lost */
	long		reconnects;
} Stats;

extern Config cfg;
extern Stats stats;

/* pg_cdp_connector.c */
extern void log_msg(const char *level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern double now_s(void);
extern void add_outcome(Message *m, OutcomeKind kind, const char *error, int retry_in_s);
extern void settle(Message *m);

/* config.c */
extern bool config_read(const char *path);

/* db.c */
typedef enum DbConnect
{
	DB_OK,
	DB_UNREACHABLE,
	DB_REFUSED					/* connected, but the API is missing or forbidden */
} DbConnect;

extern DbConnect db_connect(void);
extern bool db_connected(void);
extern void db_disconnect(void);
extern int	db_socket(void);
extern bool db_poll_notifies(bool readable);
extern int	db_claim(Channel *ch, int max, Batch **out);
extern bool db_flush(Outcome *outs, int n);

/* deliver.c */
extern bool deliver_init(void);
extern void deliver_start(Message *m);
extern void deliver_file_batch(Channel *ch, Message *msgs, int n);
extern int	deliver_wait(int *extra_fds, int nextra, int timeout_ms, bool *ready);
extern void deliver_perform(void);
extern int	deliver_inflight(void);
extern void deliver_abort_all(void);
extern void deliver_cleanup(void);

/* mime.c */
extern char *mime_build(const Channel *ch, const Message *m, size_t *len);

#endif
