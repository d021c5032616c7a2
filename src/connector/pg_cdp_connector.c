/*-------------------------------------------------------------------------
 *
 * pg_cdp_connector.c
 *	  The connector that drains pg_cdp's outbox: it claims due messages
 *	  of the channels its configuration file names, delivers them by
 *	  webhook, SMTP or to a file, and settles each with cdp.ack, cdp.fail
 *	  or cdp.report_delivery.
 *
 * One thread runs everything: PostgreSQL's socket (LISTEN cdp_outbox),
 * libcurl's transfers and a signal pipe are waited on together, so an idle
 * connector sleeps until a NOTIFY, a transfer's progress, a signal or the
 * fallback poll interval, and a busy one keeps up to `concurrency`
 * deliveries in flight while it claims and acks in batches.
 *
 * Delivery is at least once.  Nothing is acked before it was delivered (a
 * file's lines are fsync()ed first); what is delivered and not yet acked
 * when the connector dies or loses PostgreSQL is claimed again after its
 * lease and delivered again, with the same dedupe key (Idempotency-Key,
 * Message-ID), so that receivers can drop the repeat.
 *
 * Exit status: 0 after SIGTERM/SIGINT, once what was in flight finished
 * and what was delivered was acked; 1 bad usage or configuration; 2
 * PostgreSQL unreachable at start; 3 the database refuses the connector's
 * calls (cdp.claim missing, no privilege).
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "connector.h"

Stats		stats;

static Outcome *outs;
static int	nouts;
static int	outs_cap;

static int	sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_count;
static volatile sig_atomic_t stats_wanted;

void
log_msg(const char *level, const char *fmt,...)
{
	va_list		ap;
	char		ts[32];
	time_t		now = time(NULL);
	struct tm	tm;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s pg_cdp_connector %s: ", ts, level);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
add_outcome(Message *m, OutcomeKind kind, const char *error, int retry_in_s)
{
	Outcome    *o;

	if (nouts == outs_cap)
	{
		outs_cap = outs_cap ? outs_cap * 2 : 1024;
		outs = realloc(outs, outs_cap * sizeof(Outcome));
	}
	o = &outs[nouts++];
	o->outbox_id = m->outbox_id;
	o->channel = m->channel;
	o->kind = kind;
	o->report = m->channel->report_delivered;
	o->retry_in_s = retry_in_s;
	o->error = error ? strdup(error) : NULL;
	o->lease_end = m->lease_end;
}

/* A message is done with; its batch goes when its last message does. */
void
settle(Message *m)
{
	Batch	   *b = m->batch;

	if (--b->pending == 0)
	{
		PQclear(b->res);
		free(b->msgs);
		free(b);
	}
}

static void
clear_outcomes(void)
{
	for (int i = 0; i < nouts; i++)
		free(outs[i].error);
	nouts = 0;
	/* a burst's array is not kept for ever */
	if (outs_cap > 65536)
	{
		free(outs);
		outs = NULL;
		outs_cap = 0;
	}
}

static void
on_signal(int sig)
{
	int			saved = errno;

	if (sig == SIGUSR1)
		stats_wanted = 1;
	else
		stop_count++;
	if (write(sig_pipe[1], "x", 1) < 0)
	{
		/* the pipe is full: a wakeup is pending anyway */
	}
	errno = saved;
}

static void
log_stats(const char *what)
{
	log_msg("LOG", "%s: %ld claimed, %ld delivered, %ld retried, %ld dead letters, "
			"%ld hard bounces, %ld refused (lease lost), %ld reconnects",
			what, stats.claimed, stats.delivered, stats.retried, stats.dead,
			stats.bounced, stats.refused, stats.reconnects);
}

static void
usage(FILE *out)
{
	fprintf(out,
			"pg_cdp_connector: delivers pg_cdp's outbox by webhook, SMTP or to files\n"
			"\n"
			"Usage: pg_cdp_connector --config FILE\n"
			"\n"
			"  -c, --config FILE   the configuration file (required)\n"
			"  -h, --help          show this help\n"
			"  -V, --version       show the version\n"
			"\n"
			"The file has global settings, then a [channel NAME] section per outbox channel:\n"
			"\n"
			"  conninfo = 'host=/run/postgresql dbname=shop user=connector'  (required; a member\n"
			"                         of cdp_connector)\n"
			"  concurrency = 16       deliveries in flight, all channels together\n"
			"  batch = 100            most messages per cdp.claim (file channels: 1000)\n"
			"  lease = 60             seconds a claim holds its messages\n"
			"  poll_interval = 5000   ms between claims when no NOTIFY cdp_outbox comes\n"
			"  reconnect_max = 10     seconds, the longest wait between reconnections\n"
			"  report_delivered = yes cdp.report_delivery(id, 'delivered') after each ack\n"
			"\n"
			"  [channel NAME]         NAME as in cdp.channels\n"
			"  kind = webhook         HTTP POST of the message as JSON to url, with headers\n"
			"                         Idempotency-Key (the dedupe key, else the outbox id)\n"
			"                         and X-PgCdp-Outbox-Id; 2xx: ack; 408, 429, 5xx, timeouts\n"
			"                         and connection errors: retry (Retry-After honoured);\n"
			"                         any other status: dead letter\n"
			"  url = https://hooks.example.com/cdp\n"
			"  header = Authorization: Bearer s3cret   (repeatable)\n"
			"  timeout = 10           seconds per delivery (timeout_ms = for milliseconds);\n"
			"                         must be shorter than the lease\n"
			"\n"
			"  kind = smtp            an email to the message's address; 5xx reply: hard\n"
			"                         bounce (reported, dead letter); 4xx: retry\n"
			"  url = smtp://127.0.0.1:25   (smtps:// for TLS at once)\n"
			"  from = Shop <news@shop.example>\n"
			"  tls = try              no, try (STARTTLS if offered) or yes (required)\n"
			"  username = ... / password = ...\n"
			"  timeout = 30\n"
			"\n"
			"  kind = file            one JSON line per message appended to path, fsync()ed\n"
			"  path = /var/spool/cdp/print.jsonl\n"
			"\n"
			"  batch, concurrency and report_delivered may be set per channel too.\n"
			"  Lines starting with # or ; are comments; values may be quoted.\n"
			"\n"
			"Signals: SIGTERM or SIGINT stops claiming, lets the deliveries in flight finish\n"
			"(a second one abandons them to their leases), acks, and exits; SIGUSR1 logs\n"
			"counters.\n"
			"\n"
			"Exit status: 0 stopped by SIGTERM or SIGINT; 1 bad usage or configuration;\n"
			"2 PostgreSQL unreachable at start; 3 the database refuses the connector's calls\n"
			"(cdp.claim missing, no privilege).\n");
}

/* Room for more deliveries of ch now. */
static int
claim_room(Channel *ch)
{
	int			room;

	if (ch->kind == KIND_FILE)
		return ch->batch;
	room = ch->concurrency - ch->inflight;
	if (cfg.concurrency - deliver_inflight() < room)
		room = cfg.concurrency - deliver_inflight();
	return room < ch->batch ? room : ch->batch;
}

/* Settle what is done; after acks, the next messages of those people may be due. */
static void
flush_outcomes(void)
{
	if (nouts == 0 || !db_connected())
		return;
	if (db_flush(outs, nouts))
	{
		for (int i = 0; i < nouts; i++)
			outs[i].channel->want_claim = true;
		clear_outcomes();
	}
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	const char *config_path = NULL;
	int			c;
	int			exit_code = EXIT_STOPPED;
	bool		stopping = false;
	bool		abandoned = false;
	double		next_poll;
	double		next_reconnect = 0;
	int			backoff_ms = 100;
	struct sigaction sa;

	while ((c = getopt_long(argc, argv, "c:hV", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'c':
				config_path = optarg;
				break;
			case 'h':
				usage(stdout);
				return EXIT_STOPPED;
			case 'V':
				printf("pg_cdp_connector %s\n", CONNECTOR_VERSION);
				return EXIT_STOPPED;
			default:
				usage(stderr);
				return EXIT_BAD_CONFIG;
		}
	}
	if (optind < argc)
	{
		log_msg("FATAL", "unexpected argument \"%s\"", argv[optind]);
		return EXIT_BAD_CONFIG;
	}
	if (config_path == NULL)
	{
		log_msg("FATAL", "no --config FILE given");
		usage(stderr);
		return EXIT_BAD_CONFIG;
	}
	if (!config_read(config_path))
		return EXIT_BAD_CONFIG;

	if (pipe(sig_pipe) != 0)
	{
		log_msg("FATAL", "cannot create a pipe: %s", strerror(errno));
		return EXIT_BAD_CONFIG;
	}
	fcntl(sig_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK);
	fcntl(sig_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(sig_pipe[1], F_SETFD, FD_CLOEXEC);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (!deliver_init())
	{
		log_msg("FATAL", "cannot initialize libcurl");
		return EXIT_BAD_CONFIG;
	}
	switch (db_connect())
	{
		case DB_OK:
			break;
		case DB_UNREACHABLE:
			return EXIT_NO_DATABASE;
		case DB_REFUSED:
			return EXIT_REFUSED;
	}
	log_msg("LOG", "connected; draining %d channel%s, %d deliveries in flight at most, lease %d s",
			cfg.nchannels, cfg.nchannels == 1 ? "" : "s", cfg.concurrency, cfg.lease_s);
	next_poll = now_s() + cfg.poll_ms / 1000.0;

	for (;;)
	{
		double		now = now_s();
		int			fds[2];
		bool		ready[2] = {false, false};
		int			nfds = 0;
		int			db_slot = -1;
		double		timeout = cfg.poll_ms / 1000.0;

		if (stop_count > 0 && !stopping)
		{
			log_msg("LOG", "stopping: no more claims; %d deliveries in flight", deliver_inflight());
			stopping = true;
		}
		if (stop_count > 1 && !abandoned && deliver_inflight() > 0)
		{
			log_msg("LOG", "stopping at once: %d deliveries in flight left to their leases",
					deliver_inflight());
			deliver_abort_all();
			abandoned = true;
		}
		if (stats_wanted)
		{
			stats_wanted = 0;
			log_stats("counters");
		}

		/* PostgreSQL gone: reconnect, backing off */
		if (!db_connected() && now >= next_reconnect)
		{
			if (db_connect() == DB_OK)
			{
				log_msg("LOG", "reconnected to PostgreSQL");
				stats.reconnects++;
				backoff_ms = 100;
				for (int i = 0; i < cfg.nchannels; i++)
					cfg.channels[i].want_claim = true;
			}
			else
			{
				next_reconnect = now + backoff_ms / 1000.0;
				backoff_ms = backoff_ms * 2 > cfg.reconnect_max_ms ? cfg.reconnect_max_ms : backoff_ms * 2;
			}
		}

		flush_outcomes();

		if (stopping && deliver_inflight() == 0)
		{
			double		last_lease = 0;

			for (int i = 0; i < nouts; i++)
				if (outs[i].lease_end > last_lease)
					last_lease = outs[i].lease_end;
			/* what cannot be acked any more is left to its lease */
			if (nouts == 0 || now >= last_lease || stop_count > 1)
				break;
		}

		if (now >= next_poll)
		{
			for (int i = 0; i < cfg.nchannels; i++)
				cfg.channels[i].want_claim = true;
			next_poll = now + cfg.poll_ms / 1000.0;
		}

		/* claim for each channel that has work and room */
		for (int i = 0; i < cfg.nchannels && !stopping && db_connected(); i++)
		{
			Channel    *ch = &cfg.channels[i];
			int			max = claim_room(ch);
			Batch	   *b;
			int			n;

			if (!ch->want_claim || max < 1 || now < ch->claim_after)
				continue;
			n = db_claim(ch, max, &b);
			if (n == -2)
			{
				exit_code = EXIT_REFUSED;
				stop_count++;
				break;
			}
			if (n < 0)
			{
				ch->claim_after = now + cfg.poll_ms / 1000.0;
				continue;
			}
			ch->want_claim = (n == max);
			if (n == 0)
				continue;
			if (ch->kind == KIND_FILE)
				deliver_file_batch(ch, b->msgs, n);
			else
				for (int j = 0; j < n; j++)
					deliver_start(&b->msgs[j]);
		}

		/* how long to sleep: not at all if there is work to do now */
		if (!db_connected())
			timeout = next_reconnect - now;
		else if (nouts > 0)
			timeout = 0;
		else if (!stopping)
			for (int i = 0; i < cfg.nchannels; i++)
			{
				Channel    *ch = &cfg.channels[i];

				if (ch->want_claim && claim_room(ch) > 0)
				{
					double		t = ch->claim_after - now;

					if (t < timeout)
						timeout = t;
				}
			}
		if (next_poll - now < timeout)
			timeout = next_poll - now;
		if (stopping && timeout > 0.2)
			timeout = 0.2;
		if (timeout < 0)
			timeout = 0;

		fds[nfds++] = sig_pipe[0];
		if (db_connected())
		{
			db_slot = nfds;
			fds[nfds++] = db_socket();
		}
		deliver_wait(fds, nfds, (int) (timeout * 1000), ready);
		if (ready[0])
		{
			char		drain[64];

			while (read(sig_pipe[0], drain, sizeof(drain)) > 0)
				;
		}
		if (db_connected())
			db_poll_notifies(db_slot >= 0 && ready[db_slot]);
		deliver_perform();
	}

	if (nouts > 0)
		log_msg("WARNING", "%d outcomes not settled: those messages will be delivered again after their leases",
				nouts);
	deliver_cleanup();
	db_disconnect();
	log_stats("stopped");
	return exit_code;
}
