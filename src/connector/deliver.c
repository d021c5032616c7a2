/*-------------------------------------------------------------------------
 *
 * deliver.c
 *	  Delivering claimed messages: webhooks and email through one libcurl
 *	  multi handle (many transfers in flight, one thread), files by a
 *	  write and an fsync per batch.
 *
 * How an answer becomes an outcome:
 *	  webhook  2xx: ack.  429, 408, 5xx, a timeout or a connection error:
 *			   retry (after Retry-After, when the server gives one).  Any
 *			   other status: dead letter, as sending it again cannot help.
 *	  smtp	   accepted: ack.  A 5xx reply: a hard bounce (reported, then
 *			   dead-lettered).  A 4xx reply or no reply: retry.
 *	  file	   written and fsync()ed: ack; an I/O error: retry, after the
 *			   file was cut back to where the batch began.
 *
 * Easy handles are kept for reuse (their connections stay in the multi
 * handle's cache), so that a long run allocates nothing per message but
 * its request headers and, for email, the message text.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "connector.h"

static CURLM *multi;
static CURL **pool;
static int	npool;
static Message **flight;		/* cfg.concurrency slots */
static int	nflight;

/* file deliveries: one buffer, grown to the largest batch and kept */
static char *filebuf;
static size_t filecap;

bool
deliver_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return false;
	multi = curl_multi_init();
	if (multi == NULL)
		return false;
	pool = calloc(cfg.concurrency, sizeof(CURL *));
	flight = calloc(cfg.concurrency, sizeof(Message *));
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) cfg.concurrency);
	return true;
}

int
deliver_inflight(void)
{
	return nflight;
}

static CURL *
get_easy(void)
{
	if (npool > 0)
		return pool[--npool];
	return curl_easy_init();
}

static void
put_easy(CURL *e)
{
	curl_easy_reset(e);
	if (npool < cfg.concurrency)
		pool[npool++] = e;
	else
		curl_easy_cleanup(e);
}

/* Take m out of flight and release what its transfer held. */
static void
finish_transfer(Message *m)
{
	CURL	   *e = m->easy;

	curl_multi_remove_handle(multi, e);
	put_easy(e);
	m->easy = NULL;
	curl_slist_free_all(m->headers);
	curl_slist_free_all(m->rcpt);
	m->headers = m->rcpt = NULL;
	free(m->mail);
	m->mail = NULL;
	flight[m->slot] = flight[--nflight];
	flight[m->slot]->slot = m->slot;
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *arg)
{
	Message    *m = arg;
	size_t		len = size * nitems;

	if (len > 12 && strncasecmp(buf, "Retry-After:", 12) == 0)
	{
		char		v[128];
		size_t		n = len - 12 < sizeof(v) - 1 ? len - 12 : sizeof(v) - 1;
		char	   *p = v;
		char	   *end;
		long		secs;

		memcpy(v, buf + 12, n);
		v[n] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		p[strcspn(p, "\r\n")] = '\0';
		secs = strtol(p, &end, 10);
		if (end == p || *end != '\0')
		{
			/* an HTTP date */
			time_t		t = curl_getdate(p, NULL);

			secs = t > 0 ? (long) (t - time(NULL)) : -1;
		}
		if (secs >= 0)
			m->retry_after_s = secs > 86400 ? 86400 : (int) secs;
	}
	return len;
}

/* The start of an error reply is kept for the dead letter's error. */
static size_t
on_body(char *buf, size_t size, size_t nmemb, void *arg)
{
	Message    *m = arg;
	size_t		len = size * nmemb;
	size_t		room = sizeof(m->reply) - 1 - m->reply_len;
	size_t		n = len < room ? len : room;

	memcpy(m->reply + m->reply_len, buf, n);
	m->reply_len += n;
	m->reply[m->reply_len] = '\0';
	return len;
}

/*
 * SMTP replies arrive as curl's "header" debug data: the first refusal is
 * kept, as the text of a bounce or a retry (what follows it, the reply to
 * QUIT, says nothing).
 */
static int
on_debug(CURL *e, curl_infotype type, char *data, size_t size, void *arg)
{
	Message    *m = arg;
	size_t		n = size < sizeof(m->reply) - 1 ? size : sizeof(m->reply) - 1;

	if (type != CURLINFO_HEADER_IN || (m->reply_len > 0 && (m->reply[0] == '4' || m->reply[0] == '5')))
		return 0;
	memcpy(m->reply, data, n);
	while (n > 0 && (m->reply[n - 1] == '\n' || m->reply[n - 1] == '\r'))
		n--;
	m->reply[n] = '\0';
	m->reply_len = n;
	return 0;
}

static size_t
on_read(char *buf, size_t size, size_t nitems, void *arg)
{
	Message    *m = arg;
	size_t		room = size * nitems;
	size_t		left = m->mail_len - m->mail_off;
	size_t		n = left < room ? left : room;

	memcpy(buf, m->mail + m->mail_off, n);
	m->mail_off += n;
	return n;
}

/*
 * The Idempotency-Key: the dedupe key, else the outbox id; bytes a header
 * cannot carry are percent-encoded, so one message always gives one key.
 */
static struct curl_slist *
add_idempotency_key(struct curl_slist *h, const Message *m)
{
	char		line[1024];
	size_t		k = snprintf(line, sizeof(line), "Idempotency-Key: ");

	if (m->dedupe_key == NULL)
		snprintf(line + k, sizeof(line) - k, "%lld", (long long) m->outbox_id);
	else
	{
		for (const unsigned char *p = (const unsigned char *) m->dedupe_key;
			 *p && k < sizeof(line) - 4; p++)
		{
			if (*p <= 0x20 || *p >= 0x7f || *p == '%')
				k += snprintf(line + k, sizeof(line) - k, "%%%02X", *p);
			else
				line[k++] = *p;
		}
		line[k] = '\0';
	}
	return curl_slist_append(h, line);
}

/* An address that can go into an SMTP envelope and a To header as it is. */
static bool
plain_address(const char *a)
{
	const char *at = strchr(a, '@');

	if (at == NULL || at == a || at[1] == '\0' || strlen(a) > 320)
		return false;
	for (const unsigned char *p = (const unsigned char *) a; *p; p++)
		if (*p <= 0x20 || *p == 0x7f || *p == '<' || *p == '>' || *p == ',' || *p == '"' ||
			*p == '(' || *p == ')' || *p == ';' || *p == '\\')
			return false;
	return true;
}

void
deliver_start(Message *m)
{
	Channel    *ch = m->channel;
	CURL	   *e;
	char		idh[64];

	if (ch->kind == KIND_SMTP && (m->address == NULL || !plain_address(m->address)))
	{
		add_outcome(m, OUT_DEAD, m->address ? "the address cannot be used in an SMTP envelope"
					: "the message has no address", -1);
		settle(m);
		return;
	}
	e = get_easy();
	m->easy = e;
	m->slot = nflight;
	flight[nflight++] = m;
	ch->inflight++;

	curl_easy_setopt(e, CURLOPT_PRIVATE, m);
	curl_easy_setopt(e, CURLOPT_URL, ch->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) ch->timeout_ms);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, m->errbuf);
	m->errbuf[0] = '\0';
	m->reply_len = 0;
	m->reply[0] = '\0';
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, m);
	if (ch->username)
		curl_easy_setopt(e, CURLOPT_USERNAME, ch->username);
	if (ch->password)
		curl_easy_setopt(e, CURLOPT_PASSWORD, ch->password);

	if (ch->kind == KIND_WEBHOOK)
	{
		struct curl_slist *h = NULL;

		h = curl_slist_append(h, "Content-Type: application/json");
		h = add_idempotency_key(h, m);
		snprintf(idh, sizeof(idh), "X-PgCdp-Outbox-Id: %lld", (long long) m->outbox_id);
		h = curl_slist_append(h, idh);
		/* no "Expect: 100-continue" round trip before each body */
		h = curl_slist_append(h, "Expect:");
		for (HeaderList *x = ch->headers; x; x = x->next)
			h = curl_slist_append(h, x->line);
		m->headers = h;
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, m->json);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(m->json));
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(e, CURLOPT_HEADERDATA, m);
	}
	else
	{
		char		rcpt[340];

		snprintf(rcpt, sizeof(rcpt), "<%s>", m->address);
		m->rcpt = curl_slist_append(NULL, rcpt);
		m->mail = mime_build(ch, m, &m->mail_len);
		m->mail_off = 0;
		{
			char		from[600];

			snprintf(from, sizeof(from), "<%s>", ch->mail_from);
			curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
		}
		curl_easy_setopt(e, CURLOPT_MAIL_RCPT, m->rcpt);
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(e, CURLOPT_READDATA, m);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) m->mail_len);
		curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
		curl_easy_setopt(e, CURLOPT_DEBUGDATA, m);
		curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
		curl_easy_setopt(e, CURLOPT_USE_SSL,
						 ch->tls == 2 ? (long) CURLUSESSL_ALL :
						 ch->tls == 1 ? (long) CURLUSESSL_TRY : (long) CURLUSESSL_NONE);
	}
	curl_multi_add_handle(multi, e);
}

static void
webhook_done(Message *m, CURLcode rc)
{
	long		status = 0;
	char		err[512];

	curl_easy_getinfo(m->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK)
	{
		snprintf(err, sizeof(err), "%s: %s", curl_easy_strerror(rc),
				 m->errbuf[0] ? m->errbuf : "no detail");
		add_outcome(m, OUT_RETRY, err, -1);
		return;
	}
	if (status >= 200 && status < 300)
	{
		add_outcome(m, OUT_ACK, NULL, -1);
		return;
	}
	/* control characters of the reply would garble the error text */
	for (size_t i = 0; i < m->reply_len; i++)
		if ((unsigned char) m->reply[i] < 0x20)
			m->reply[i] = ' ';
	snprintf(err, sizeof(err), "HTTP %ld%s%s", status, m->reply_len ? ": " : "", m->reply);
	if (status == 429 || status == 408 || status >= 500)
		add_outcome(m, OUT_RETRY, err, m->retry_after_s);
	else
		add_outcome(m, OUT_DEAD, err, -1);
}

static void
smtp_done(Message *m, CURLcode rc)
{
	long		code = 0;
	char		err[512];

	if (rc == CURLE_OK)
	{
		add_outcome(m, OUT_ACK, NULL, -1);
		return;
	}
	curl_easy_getinfo(m->easy, CURLINFO_RESPONSE_CODE, &code);
	/* the reply goes into JSON text: ASCII only */
	for (size_t i = 0; i < m->reply_len; i++)
		if ((unsigned char) m->reply[i] < 0x20 || (unsigned char) m->reply[i] >= 0x7f)
			m->reply[i] = ' ';
	if (code > 0 && m->reply_len > 0)
		snprintf(err, sizeof(err), "SMTP %s", m->reply);
	else
		snprintf(err, sizeof(err), "SMTP %ld: %s: %s", code, curl_easy_strerror(rc),
				 m->errbuf[0] ? m->errbuf : "no detail");
	if (code >= 500 && code < 600)
		add_outcome(m, OUT_BOUNCE, err, -1);
	else
		add_outcome(m, OUT_RETRY, err, -1);
}

/* Run the transfers; settle each finished one. */
void
deliver_perform(void)
{
	int			running;
	CURLMsg    *cm;
	int			left;

	curl_multi_perform(multi, &running);
	while ((cm = curl_multi_info_read(multi, &left)) != NULL)
	{
		Message    *m;

		if (cm->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(cm->easy_handle, CURLINFO_PRIVATE, (char **) &m);
		if (m->channel->kind == KIND_WEBHOOK)
			webhook_done(m, cm->data.result);
		else
			smtp_done(m, cm->data.result);
		m->channel->inflight--;
		finish_transfer(m);
		settle(m);
	}
}

/*
 * Wait for a transfer, PostgreSQL's socket or the signal pipe (extra_fds),
 * at most timeout_ms.  ready[i] tells whether extra_fds[i] is readable.
 */
int
deliver_wait(int *extra_fds, int nextra, int timeout_ms, bool *ready)
{
	struct curl_waitfd w[4];
	int			numfds = 0;

	for (int i = 0; i < nextra; i++)
	{
		w[i].fd = extra_fds[i];
		w[i].events = CURL_WAIT_POLLIN;
		w[i].revents = 0;
	}
	curl_multi_poll(multi, w, nextra, timeout_ms, &numfds);
	for (int i = 0; i < nextra; i++)
		ready[i] = (w[i].revents & (CURL_WAIT_POLLIN | CURL_WAIT_POLLPRI)) != 0;
	return numfds;
}

/* On a second stop signal: drop what is in flight (its leases will expire). */
void
deliver_abort_all(void)
{
	while (nflight > 0)
	{
		Message    *m = flight[0];

		m->channel->inflight--;
		finish_transfer(m);
		settle(m);
	}
}

void
deliver_cleanup(void)
{
	deliver_abort_all();
	while (npool > 0)
		curl_easy_cleanup(pool[--npool]);
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	for (int i = 0; i < cfg.nchannels; i++)
		if (cfg.channels[i].fd >= 0)
			close(cfg.channels[i].fd);
}

/*
 * Append the batch's messages to the channel's file as JSON lines, in one
 * write, and fsync before any is acked.  On an error the file is cut back
 * to where it was, so that no half line is left for the retry to follow.
 */
void
deliver_file_batch(Channel *ch, Message *msgs, int n)
{
	size_t		need = 0;
	size_t		len = 0;
	struct stat st;
	const char *what = NULL;
	off_t		start = -1;

	if (ch->fd < 0)
	{
		ch->fd = open(ch->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (ch->fd < 0)
			what = "open";
	}
	if (what == NULL)
	{
		for (int i = 0; i < n; i++)
			need += strlen(msgs[i].json) + 1;
		if (need > filecap)
		{
			filecap = need;
			free(filebuf);
			filebuf = malloc(filecap);
		}
		for (int i = 0; i < n; i++)
		{
			size_t		l = strlen(msgs[i].json);

			memcpy(filebuf + len, msgs[i].json, l);
			len += l;
			filebuf[len++] = '\n';
		}
		if (fstat(ch->fd, &st) == 0)
			start = st.st_size;
		for (size_t off = 0; off < len && what == NULL;)
		{
			ssize_t		w = write(ch->fd, filebuf + off, len - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				what = "write";
			else
				off += w;
		}
		if (what == NULL && fsync(ch->fd) != 0)
			what = "fsync";
	}
	if (what)
	{
		char		err[600];

		snprintf(err, sizeof(err), "cannot %s \"%s\": %s", what, ch->path, strerror(errno));
		log_msg("WARNING", "%s", err);
		if (start >= 0 && ftruncate(ch->fd, start) != 0)
			log_msg("WARNING", "cannot cut \"%s\" back: %s", ch->path, strerror(errno));
		/* open again next time: the file may have been moved or fixed */
		if (ch->fd >= 0)
			close(ch->fd);
		ch->fd = -1;
		for (int i = 0; i < n; i++)
			add_outcome(&msgs[i], OUT_RETRY, err, -1);
	}
	else
		for (int i = 0; i < n; i++)
			add_outcome(&msgs[i], OUT_ACK, NULL, -1);

	/* a batch far above the usual is not kept */
	if (filecap > 64 * 1024 * 1024)
	{
		free(filebuf);
		filebuf = NULL;
		filecap = 0;
	}
	for (int i = 0; i < n; i++)
		settle(&msgs[i]);
}
