/*-------------------------------------------------------------------------
 *
 * conns.c
 *	  The connection guard of pg_cdp_collector: a deadline for each request
 *	  as a whole, and room for new clients when every connection is taken.
 *
 * libmicrohttpd's timeout counts only silence, so a client that sends its
 * headers or body a byte every few seconds keeps its connection (and its
 * thread) for as long as it likes, and a few hundred such clients take every
 * connection there is: libmicrohttpd then stops accepting and everyone else
 * waits.  This module keeps every open connection in a list, in the order in
 * which they began waiting for their request (when they opened, or when
 * their previous request completed), and a thread looks at the list ten
 * times a second:
 *
 *	- a connection whose request has not arrived whole (headers and body)
 *	  within --request-timeout seconds is closed;
 *	- when the connections are at --max-connections, the ones that have
 *	  waited longest for their request (at least a second) are closed until
 *	  a tenth of the connections is free, so that new clients are accepted
 *	  from the listen queue within moments rather than when the deadline
 *	  frees a slot.
 *
 * A connection whose request arrived whole (it is being answered, perhaps
 * waiting for its COPY, which --commit-timeout bounds) is never closed here.
 * Closing is shutdown(): the connection's own thread then sees the end of
 * the stream and libmicrohttpd closes and frees it; the descriptor cannot
 * have been reused, as libmicrohttpd reports the connection closed (and we
 * drop it from the list, under the same lock) before it closes the socket.
 * Connections per address are limited by libmicrohttpd itself.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "collector.h"

#define TICK_MS 100
#define EVICT_MIN_MS 1000		/* a connection younger than this is not made to room */
#define REPORT_MS 10000			/* what was closed is logged at most this often */

struct GuardedConn
{
	struct GuardedConn *prev;
	struct GuardedConn *next;
	int			fd;
	bool		receiving;		/* waiting for (the rest of) a request */
	bool		closing;		/* shut down, not yet reported closed */
	int64_t		since;			/* when it began waiting for its request */
};

static const Config *cfg;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static GuardedConn *head;		/* the longest waiting first */
static GuardedConn *tail;
static int	nconns;
static int	nclosing;
static bool stopping;
static pthread_t thread;
static long nrefused;			/* at a limit, since the last report */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
unlink_conn(GuardedConn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		tail = c->prev;
	c->prev = c->next = NULL;
}

static void
append_conn(GuardedConn *c)
{
	c->prev = tail;
	c->next = NULL;
	if (tail)
		tail->next = c;
	else
		head = c;
	tail = c;
}

GuardedConn *
conns_opened(int fd)
{
	GuardedConn *c = calloc(1, sizeof(GuardedConn));

	if (c == NULL)
		return NULL;
	c->fd = fd;
	c->receiving = true;
	c->since = now_ms();
	pthread_mutex_lock(&lock);
	append_conn(c);
	nconns++;
	pthread_mutex_unlock(&lock);
	return c;
}

void
conns_closed(GuardedConn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&lock);
	unlink_conn(c);
	nconns--;
	if (c->closing)
		nclosing--;
	pthread_mutex_unlock(&lock);
	free(c);
}

void
conns_request_in(GuardedConn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&lock);
	c->receiving = false;
	pthread_mutex_unlock(&lock);
}

void
conns_request_done(GuardedConn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&lock);
	c->receiving = true;
	c->since = now_ms();
	/* it waits from now: the newest */
	unlink_conn(c);
	append_conn(c);
	pthread_mutex_unlock(&lock);
}

void
conns_refused(void)
{
	pthread_mutex_lock(&lock);
	nrefused++;
	pthread_mutex_unlock(&lock);
}

static void
close_conn(GuardedConn *c)
{
	c->closing = true;
	nclosing++;
	shutdown(c->fd, SHUT_RDWR);
}

static void *
guard_main(void *arg)
{
	long		timed_out = 0;
	long		made_room = 0;
	int64_t		reported = now_ms() - REPORT_MS;
	int64_t		timeout_ms = (int64_t) cfg->request_timeout_s * 1000;

	pthread_mutex_lock(&lock);
	while (!stopping)
	{
		struct timespec until;
		int64_t		now;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += TICK_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&wake, &lock, &until);
		if (stopping)
			break;
		now = now_ms();

		/* Past the deadline; the list is in the order of since. */
		for (GuardedConn *c = head; c && now - c->since > timeout_ms; c = c->next)
			if (c->receiving && !c->closing)
			{
				close_conn(c);
				timed_out++;
			}

		/* At the limit, libmicrohttpd accepts no one: make room. */
		if (nconns - nclosing >= cfg->max_connections)
		{
			int			target = cfg->max_connections - (cfg->max_connections + 9) / 10;

			for (GuardedConn *c = head;
				 c && nconns - nclosing > target && now - c->since >= EVICT_MIN_MS;
				 c = c->next)
				if (c->receiving && !c->closing)
				{
					close_conn(c);
					made_room++;
				}
		}

		if ((timed_out || made_room || nrefused) && now - reported >= REPORT_MS)
		{
			log_msg("LOG", "closed %ld connections whose request took longer than --request-timeout "
					"(%d s), and %ld that had waited longest for theirs, to make room "
					"(--max-connections %d); refused %ld at the connection limits "
					"(--max-connections-per-ip %d)",
					timed_out, cfg->request_timeout_s, made_room, cfg->max_connections,
					nrefused, cfg->max_connections_per_ip);
			timed_out = made_room = nrefused = 0;
			reported = now;
		}
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

void
conns_start(const Config *config)
{
	cfg = config;
	if (pthread_create(&thread, NULL, guard_main, NULL) != 0)
	{
		log_msg("FATAL", "cannot start the connection guard: %s", strerror(errno));
		exit(1);
	}
}

void
conns_stop(void)
{
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	pthread_join(thread, NULL);
}
