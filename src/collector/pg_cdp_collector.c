/*-------------------------------------------------------------------------
 *
 * pg_cdp_collector.c
 *	  An HTTP collector that speaks Segment's tracking API and writes the
 *	  messages it receives into cdp.inbox.
 *
 * Web and app SDKs (analytics.js, analytics-node, the mobile SDKs,
 * RudderStack's and Jitsu's) post Segment-spec JSON to /v1/track,
 * /v1/identify, ... and /v1/batch; pointing them at this program sends
 * everything into pg_cdp.  HTTP is libmicrohttpd's; request bodies are
 * validated and walked by jscan.c and forwarded as the bytes received
 * (jansson only builds the small documents the collector answers with);
 * PostgreSQL is reached through libpq only.
 *
 * Durability: a request is answered 200 only once its messages are
 * committed to cdp.inbox.  Requests do not each open a transaction: they
 * append their lines to a shared batch, and flusher threads COPY whole
 * batches (cdp.batch-size lines, or whatever arrived within the flush
 * interval) and wake the requests waiting on them.  If PostgreSQL is down or
 * slow the requests get 503, and 429 when too many lines wait already, so
 * SDKs retry with the same messageId, which ingest deduplicates per source.
 *
 * Exit status: 0 after SIGTERM/SIGINT once everything received is flushed;
 * 1 bad usage or configuration; 2 the listening socket cannot be opened.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <zlib.h>

#include "collector.h"
#include "jscan.h"

/* Bodies declared larger than this are refused without reading them. */
#define DISCARD_LIMIT (64 * 1024 * 1024)

/*
 * A thread per connection, each waiting in select(): descriptors must stay
 * below FD_SETSIZE (libmicrohttpd refuses the others).
 */
#define MAX_CONNECTIONS 1000

static Config cfg;
static struct MHD_Daemon *daemon_handle;

/* ---- small helpers ---- */

void
log_msg(const char *level, const char *fmt,...)
{
	va_list		ap;
	char		ts[32];
	time_t		now = time(NULL);
	struct tm	tm;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s pg_cdp_collector %s: ", ts, level);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The arrival time, in a form COPY reads as timestamptz. */
static void
format_now(char *buf, size_t len)
{
	struct timeval tv;
	struct tm	tm;
	size_t		n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%06ld+00", (long) tv.tv_usec);
}

/* ---- responses ---- */

static void
add_cors(struct MHD_Connection *conn, struct MHD_Response *resp)
{
	/* SDKs send no cookies, so no credentials are allowed: any origin may post. */
	MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
}

static enum MHD_Result
respond_ex(struct MHD_Connection *conn, unsigned int status, const char *body,
		   const char *content_type, bool close)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(body), (void *) body,
										   MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(resp, "Content-Type", content_type);
	add_cors(conn, resp);
	if (status == 429 || status == 503)
		MHD_add_response_header(resp, "Retry-After", "1");
	if (status == 401)
		MHD_add_response_header(resp, "WWW-Authenticate", "Basic realm=\"pg_cdp\"");
	if (close)
		MHD_add_response_header(resp, "Connection", "close");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
respond(struct MHD_Connection *conn, unsigned int status, const char *body,
		const char *content_type)
{
	return respond_ex(conn, status, body, content_type, false);
}

static enum MHD_Result
respond_error_ex(struct MHD_Connection *conn, unsigned int status, const char *message,
				 bool close)
{
	json_t	   *o = json_pack("{s:b, s:s}", "success", 0, "error", message);
	char	   *s = json_dumps(o, JSON_COMPACT);
	enum MHD_Result ret = respond_ex(conn, status, s, "application/json", close);

	free(s);
	json_decref(o);
	return ret;
}

static enum MHD_Result
respond_error(struct MHD_Connection *conn, unsigned int status, const char *message)
{
	return respond_error_ex(conn, status, message, false);
}

static enum MHD_Result
respond_preflight(struct MHD_Connection *conn)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
	const char *req_headers = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														  "Access-Control-Request-Headers");
	enum MHD_Result ret;

	add_cors(conn, resp);
	MHD_add_response_header(resp, "Access-Control-Allow-Methods", "POST, GET, OPTIONS");
	MHD_add_response_header(resp, "Access-Control-Allow-Headers",
							req_headers ? req_headers : "Content-Type, Authorization, Content-Encoding");
	MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
	ret = MHD_queue_response(conn, MHD_HTTP_NO_CONTENT, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * The settings document analytics.js loads at start, pointing its
 * Segment.io integration at this collector over plain http.
 */
static enum MHD_Result
respond_settings(struct MHD_Connection *conn, const char *write_key)
{
	const char *host = cfg.public_host;
	const char *protocol = cfg.public_https ? "https" : "http";
	char		api_host[512];
	json_t	   *doc;
	char	   *s;
	enum MHD_Result ret;
	struct MHD_Response *resp;
	SourceInfo	src;

	/* Like Segment's CDN: no settings for a key that cannot send. */
	switch (sources_lookup(write_key, &src))
	{
		case SOURCE_OK:
			break;
		case SOURCE_ERROR:
			return respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "the database is unavailable");
		default:
			return respond_error(conn, MHD_HTTP_NOT_FOUND, "no source has this write key");
	}
	if (host == NULL)
	{
		/* Behind a TLS proxy, say https, or browsers block mixed content. */
		const char *fwd = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-Proto");

		host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
		if (fwd && strcasecmp(fwd, "https") == 0)
			protocol = "https";
	}
	snprintf(api_host, sizeof(api_host), "%s/v1", host ? host : "localhost");
	doc = json_pack("{s:{s:{s:s, s:s, s:s, s:[], s:b, s:{}}}, s:{s:{s:{s:b, s:{}}}, s:{s:{s:b}}, s:{s:{s:b}}},"
					" s:b, s:{}, s:{}, s:{s:i}, s:[]}",
					"integrations", "Segment.io",
					"apiKey", write_key, "apiHost", api_host, "protocol", protocol,
					"unbundledIntegrations", "addBundledMetadata", 1,
					"maybeBundledConfigIds",
					"plan", "track", "__default", "enabled", 1, "integrations",
					"identify", "__default", "enabled", 1,
					"group", "__default", "enabled", 1,
					"analyticsNextEnabled", 1, "middlewareSettings", "enabledMiddleware",
					"metrics", "sampleRate", 0, "remotePlugins");
	s = json_dumps(doc, JSON_COMPACT);
	resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(resp, "Content-Type", "application/json");
	add_cors(conn, resp);
	/* Built from the request's Host header: no shared cache may keep it. */
	MHD_add_response_header(resp, "Cache-Control",
							cfg.public_host ? "public, max-age=300" : "no-store");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	free(s);
	json_decref(doc);
	return ret;
}

/* ---- request routing ---- */

static const struct
{
	const char *path;
	const char *type;			/* NULL: a batch */
}			routes[] = {
	{"/v1/track", "track"}, {"/v1/t", "track"},
	{"/v1/identify", "identify"}, {"/v1/i", "identify"},
	{"/v1/page", "page"}, {"/v1/p", "page"},
	{"/v1/screen", "screen"}, {"/v1/s", "screen"},
	{"/v1/alias", "alias"}, {"/v1/a", "alias"},
	{"/v1/group", "group"}, {"/v1/g", "group"},
	{"/v1/batch", NULL}, {"/v1/b", NULL}, {"/v1/import", NULL},
	{NULL, NULL}
};

typedef struct Request
{
	const char *type;			/* message type of the endpoint, NULL for batch */
	char	   *body;
	size_t		len;
	size_t		cap;
	bool		too_large;
	char		received_at[40];
} Request;

/*
 * Inflate a gzip body, refusing to grow past limit (a gzip bomb).  A gzip
 * body is a series of members (RFC 1952) and each is read; anything else
 * after a member is refused rather than dropped.  Returns 0, -1 for bad
 * gzip, -2 for too large, -3 for bytes after the last member.
 */
static int
inflate_body(const char *in, size_t inlen, size_t limit, char **out, size_t *outlen)
{
	z_stream	zs;
	char	   *buf = malloc(limit + 1);
	int			rc;
	int			result = 0;

	if (buf == NULL)
		return -1;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 15 + 32) != Z_OK)
	{
		free(buf);
		return -1;
	}
	zs.next_in = (Bytef *) in;
	zs.avail_in = inlen;
	zs.next_out = (Bytef *) buf;
	zs.avail_out = limit + 1;
	for (;;)
	{
		rc = inflate(&zs, Z_FINISH);
		if (rc != Z_STREAM_END)
		{
			/* output full before the end: the inflated body is over the limit */
			result = (zs.avail_out == 0) ? -2 : -1;
			break;
		}
		if (zs.avail_in == 0)
			break;
		if (zs.avail_in < 2 || zs.next_in[0] != 0x1f || zs.next_in[1] != 0x8b)
		{
			result = -3;
			break;
		}
		/* the next member; the output so far stays where it is */
		if (inflateReset(&zs) != Z_OK)
		{
			result = -1;
			break;
		}
	}
	inflateEnd(&zs);
	*outlen = (limit + 1) - zs.avail_out;
	if (result == 0 && *outlen > limit)
		result = -2;
	if (result != 0)
	{
		free(buf);
		return result;
	}
	*out = buf;
	buf[*outlen] = '\0';
	return 0;
}

/* The top-level keys the collector acts on. */
typedef enum
{
	KEY_OTHER, KEY_WRITE_KEY, KEY_TYPE, KEY_CONTEXT, KEY_SENT_AT, KEY_BATCH
} KeyClass;

static KeyClass
key_class(JsonSpan key)
{
	static const struct
	{
		const char *name;
		KeyClass	class;
	}			known[] = {
		{"writeKey", KEY_WRITE_KEY}, {"type", KEY_TYPE}, {"context", KEY_CONTEXT},
		{"sentAt", KEY_SENT_AT}, {"batch", KEY_BATCH}
	};
	bool		escaped = memchr(key.p, '\\', key.len) != NULL;

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
	{
		size_t		n = strlen(known[i].name);

		if (escaped ? jscan_string_is(key, known[i].name) :
			(key.len == n + 2 && memcmp(key.p + 1, known[i].name, n) == 0))
			return known[i].class;
	}
	return KEY_OTHER;
}

/* What a batch gives the messages that lack it. */
typedef struct BatchDefaults
{
	JsonSpan	context;		/* len 0: none */
	JsonSpan	sent_at;
} BatchDefaults;

/* Append a piece of a message being built, counting its raw bytes. */
static void
piece(LineSet *set, size_t *size, const char *p, size_t len)
{
	lineset_append(set, p, len);
	*size += len;
}

/*
 * Append one message (an object of the validated body) as an inbox line:
 * the bytes the client sent, less any writeKey (a secret, never stored)
 * and, on the single-message endpoints, less the type the path replaces;
 * plus the batch's context and sentAt where the message has none.  Only a
 * message that needs one of these edits is rebuilt, member by member.
 */
static size_t
add_message(LineSet *set, Request *req, JsonSpan msg, const BatchDefaults *defaults,
			const char *source, const char *too_large)
{
	JsonIter	it;
	JsonSpan	key,
				value,
				member;
	bool		drop = false;
	bool		add_context = defaults->context.len > 0;
	bool		add_sent_at = defaults->sent_at.len > 0;
	size_t		size = 0;

	jscan_iter(&it, msg);
	while (jscan_next_member(&it, &key, &value, &member))
	{
		switch (key_class(key))
		{
			case KEY_WRITE_KEY:
				drop = true;
				break;
			case KEY_TYPE:
				drop |= req->type != NULL;
				break;
			case KEY_CONTEXT:
				add_context = false;
				break;
			case KEY_SENT_AT:
				add_sent_at = false;
				break;
			default:
				break;
		}
	}

	if (!drop && !add_context && !add_sent_at && req->type == NULL)
		piece(set, &size, msg.p, msg.len);
	else
	{
		const char *sep = "";

		piece(set, &size, "{", 1);
		jscan_iter(&it, msg);
		while (jscan_next_member(&it, &key, &value, &member))
		{
			KeyClass	c = key_class(key);

			if (c == KEY_WRITE_KEY || (c == KEY_TYPE && req->type != NULL))
				continue;
			piece(set, &size, sep, strlen(sep));
			piece(set, &size, member.p, member.len);
			sep = ",";
		}
		if (add_context)
		{
			piece(set, &size, sep, strlen(sep));
			piece(set, &size, "\"context\":", 10);
			piece(set, &size, defaults->context.p, defaults->context.len);
			sep = ",";
		}
		if (add_sent_at)
		{
			piece(set, &size, sep, strlen(sep));
			piece(set, &size, "\"sentAt\":", 9);
			piece(set, &size, defaults->sent_at.p, defaults->sent_at.len);
			sep = ",";
		}
		if (req->type != NULL)
		{
			piece(set, &size, sep, strlen(sep));
			piece(set, &size, "\"type\":\"", 8);
			piece(set, &size, req->type, strlen(req->type));
			piece(set, &size, "\"", 1);
		}
		piece(set, &size, "}", 1);
	}
	lineset_end(set, req->received_at, source,
				size > (size_t) cfg.max_message ? too_large : NULL);
	return size;
}

/*
 * Turn the validated body into inbox lines.  Returns the HTTP status to
 * send when the request as a whole is refused (and why), 0 otherwise.
 */
static int
collect_lines(Request *req, JsonSpan body, const char *source, LineSet *set,
			  char *why, size_t whylen)
{
	BatchDefaults defaults = {{NULL, 0}, {NULL, 0}};
	JsonSpan	batch = {NULL, 0};
	JsonIter	it;
	JsonSpan	key,
				value,
				member;
	char		too_large[96];

	snprintf(too_large, sizeof(too_large), "54000: message is larger than %d bytes",
			 cfg.max_message);

	if (jscan_kind(body) != '{')
	{
		snprintf(why, whylen, "the body must be a JSON object");
		return 400;
	}
	if (req->type != NULL)
	{
		/* A single message has no others to land: refuse it whole. */
		if (add_message(set, req, body, &defaults, source, too_large) > (size_t) cfg.max_message)
		{
			snprintf(why, whylen, "the message is larger than %d bytes", cfg.max_message);
			return 413;
		}
		return 0;
	}

	jscan_iter(&it, body);
	while (jscan_next_member(&it, &key, &value, &member))
	{
		switch (key_class(key))
		{
			case KEY_BATCH:
				batch = value;
				break;
			case KEY_CONTEXT:
				defaults.context = jscan_kind(value) == '{' ? value : (JsonSpan) {NULL, 0};
				break;
			case KEY_SENT_AT:
				defaults.sent_at = value;
				break;
			default:
				break;
		}
	}
	if (jscan_kind(batch) != '[')
	{
		snprintf(why, whylen, "a batch needs a \"batch\" array");
		return 400;
	}
	jscan_iter(&it, batch);
	while (jscan_next_element(&it, &value))
	{
		if (jscan_kind(value) != '{')
		{
			lineset_append(set, value.p, value.len);
			lineset_end(set, req->received_at, source, "22023: message must be a JSON object");
			continue;
		}
		add_message(set, req, value, &defaults, source, too_large);
	}

	/*
	 * More lines than may ever wait for PostgreSQL would get 429 however
	 * often the client retried: refuse them for good.
	 */
	if (set->nlines > cfg.max_pending)
	{
		snprintf(why, whylen, "a batch holds at most %d messages", cfg.max_pending);
		return 413;
	}
	return 0;
}

/*
 * The write key a body carries at its top level (the last one), decoded
 * into *buf, which the caller frees; NULL if there is none.  A key that
 * cannot be text (\u0000) is returned as "", which no source has.
 */
static const char *
body_write_key(JsonSpan body, char **buf)
{
	JsonIter	it;
	JsonSpan	key,
				value,
				member;
	JsonSpan	found = {NULL, 0};

	*buf = NULL;
	if (jscan_kind(body) != '{')
		return NULL;
	jscan_iter(&it, body);
	while (jscan_next_member(&it, &key, &value, &member))
		if (key_class(key) == KEY_WRITE_KEY && jscan_kind(value) == '"')
			found = value;
	if (found.p == NULL)
		return NULL;
	/* decoding only ever shortens a string */
	*buf = malloc(found.len + 1);
	if (*buf == NULL)
		return NULL;
	if (!jscan_string_decode(found, *buf, found.len + 1))
		(*buf)[0] = '\0';
	return *buf;
}

static enum MHD_Result
handle_post(struct MHD_Connection *conn, Request *req)
{
	char	   *body = req->body;
	size_t		len = req->len;
	char	   *inflated = NULL;
	const char *enc;
	JsonSpan	doc;
	const char *jerr;
	size_t		jpos;
	char	   *user;
	char	   *pass = NULL;
	const char *key = NULL;
	char	   *body_key = NULL;
	SourceInfo	src;
	LineSet		set;
	char		why[128];
	int			status;
	enum MHD_Result ret;

	if (req->too_large)
		return respond_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");

	enc = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Encoding");
	if (enc && strcasecmp(enc, "gzip") == 0)
	{
		int			rc = inflate_body(body, len, cfg.max_body, &inflated, &len);

		if (rc == -2)
			return respond_error(conn, MHD_HTTP_CONTENT_TOO_LARGE,
								 "the inflated request body is too large");
		if (rc == -3)
			return respond_error(conn, MHD_HTTP_BAD_REQUEST,
								 "the body is not valid gzip: bytes follow its last member");
		if (rc != 0)
			return respond_error(conn, MHD_HTTP_BAD_REQUEST, "the body is not valid gzip");
		body = inflated;
	}
	else if (enc && strcasecmp(enc, "identity") != 0)
		return respond_error(conn, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
							 "only gzip content encoding is supported");

	/*
	 * Validated whole before anything is taken from it.  Duplicate keys are
	 * valid JSON; the drain keeps the last, as jsonb does.
	 */
	if (!jscan_validate(body ? body : "", len, &jerr, &jpos))
	{
		char		msg[300];

		snprintf(msg, sizeof(msg), "malformed JSON: %s at byte %zu", jerr, jpos);
		ret = respond_error(conn, MHD_HTTP_BAD_REQUEST, msg);
		free(inflated);
		return ret;
	}
	doc = jscan_value(body, len);

	/* Basic auth with the write key as user name, or writeKey in the body. */
	user = MHD_basic_auth_get_username_password(conn, &pass);
	if (user && user[0])
		key = user;
	else
		key = body_write_key(doc, &body_key);
	if (key == NULL)
	{
		ret = respond_error(conn, MHD_HTTP_UNAUTHORIZED, "a write key is required");
		goto done;
	}
	switch (sources_lookup(key, &src))
	{
		case SOURCE_OK:
			break;
		case SOURCE_UNKNOWN:
			ret = respond_error(conn, MHD_HTTP_UNAUTHORIZED, "unknown write key");
			goto done;
		case SOURCE_DISABLED:
			ret = respond_error(conn, MHD_HTTP_FORBIDDEN, "the source is disabled");
			goto done;
		default:
			ret = respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "the database is unavailable");
			goto done;
	}

	lineset_init(&set);
	status = collect_lines(req, doc, src.name, &set, why, sizeof(why));
	if (status != 0)
	{
		lineset_free(&set);
		ret = respond_error(conn, status, why);
		goto done;
	}
	switch (queue_submit(&set))
	{
		case SUBMIT_COMMITTED:
			ret = respond(conn, MHD_HTTP_OK, "{\"success\":true}", "application/json");
			break;
		case SUBMIT_BUSY:
			ret = respond_error(conn, MHD_HTTP_TOO_MANY_REQUESTS,
								"too many messages are waiting; retry later");
			break;
		case SUBMIT_TIMEOUT:
			ret = respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
								"the database is too slow; retry later");
			break;
		default:
			ret = respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
								"the messages could not be stored; retry later");
			break;
	}
	lineset_free(&set);
done:
	if (user)
		MHD_free(user);
	if (pass)
		MHD_free(pass);
	free(body_key);
	free(inflated);
	return ret;
}

/* The headers that frame a request's body (RFC 9112, section 6). */
typedef struct Framing
{
	int			content_length;
	int			transfer_encoding;
	const char *coding;			/* the Transfer-Encoding value */
	bool		spaced_name;	/* a header name with whitespace in it */
} Framing;

static enum MHD_Result
count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	Framing    *f = cls;

	/*
	 * libmicrohttpd keeps "Content-Length : 5" as a header named
	 * "Content-Length ", which frames nothing, where a lenient proxy would
	 * have framed the body by it.
	 */
	if (strpbrk(key, " \t") != NULL)
		f->spaced_name = true;
	else if (strcasecmp(key, "Content-Length") == 0)
		f->content_length++;
	else if (strcasecmp(key, "Transfer-Encoding") == 0)
	{
		f->transfer_encoding++;
		f->coding = value;
	}
	return MHD_YES;
}

/*
 * A request whose body length is ambiguous is refused and its connection
 * closed: libmicrohttpd would take the first Content-Length, and a proxy in
 * front that took another would see the rest of the body as a request of
 * its own (request smuggling).  Returns 0 when the framing is sound.
 */
static unsigned int
check_framing(struct MHD_Connection *conn, const char *version, const char **why)
{
	Framing		f = {0, 0, NULL, false};

	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
	if (f.spaced_name)
	{
		*why = "a header name may not contain whitespace";
		return MHD_HTTP_BAD_REQUEST;
	}
	if (f.content_length > 1)
	{
		*why = "a request may have one Content-Length header";
		return MHD_HTTP_BAD_REQUEST;
	}
	if (f.transfer_encoding > 1 || (f.transfer_encoding == 1 && f.content_length == 1))
	{
		*why = "a request may have one Transfer-Encoding header and then no Content-Length";
		return MHD_HTTP_BAD_REQUEST;
	}
	/* HTTP/1.0 has no transfer codings: its framing is then faulty */
	if (f.transfer_encoding == 1 && strcmp(version, "HTTP/1.0") == 0)
	{
		*why = "an HTTP/1.0 request may not have a Transfer-Encoding header";
		return MHD_HTTP_BAD_REQUEST;
	}
	if (f.transfer_encoding == 1 && strcasecmp(f.coding ? f.coding : "", "chunked") != 0)
	{
		*why = "chunked is the only transfer coding supported";
		return MHD_HTTP_NOT_IMPLEMENTED;
	}
	return 0;
}

/* The connection guard's record of a connection. */
static GuardedConn *
guarded(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return info ? (GuardedConn *) info->socket_context : NULL;
}

/*
 * The first call for a request, its headers read: answer it at once, or
 * set *con_cls to the Request that will collect its body.
 */
static enum MHD_Result
begin_request(struct MHD_Connection *conn, const char *url, const char *method,
			  const char *version, void **con_cls)
{
	Request    *req;
	const char *cl;
	const char *why;
	unsigned int refuse;
	int			r;

	if ((refuse = check_framing(conn, version, &why)) != 0)
		return respond_error_ex(conn, refuse, why, true);
	if (strcmp(method, "OPTIONS") == 0)
		return respond_preflight(conn);
	if (strcmp(method, "GET") == 0)
	{
		if (strcmp(url, "/health") == 0)
		{
			bool		copy = queue_healthy();
			bool		lookups = sources_healthy();
			char		doc[96];

			snprintf(doc, sizeof(doc), "{\"ok\":%s,\"copy\":%s,\"lookups\":%s}",
					 copy && lookups ? "true" : "false", copy ? "true" : "false",
					 lookups ? "true" : "false");
			return respond(conn, MHD_HTTP_OK, doc, "application/json");
		}
		if (strncmp(url, "/v1/projects/", 13) == 0)
		{
			const char *key = url + 13;
			const char *slash = strchr(key, '/');

			if (slash && strcmp(slash, "/settings") == 0)
			{
				char	   *k = strndup(key, slash - key);
				enum MHD_Result ret;

				if (k == NULL)
					return MHD_NO;
				ret = respond_settings(conn, k);
				free(k);
				return ret;
			}
		}
	}
	for (r = 0; routes[r].path; r++)
		if (strcmp(url, routes[r].path) == 0)
			break;
	if (routes[r].path == NULL)
		return respond_error(conn, MHD_HTTP_NOT_FOUND, "no such endpoint");
	if (strcmp(method, "POST") != 0)
	{
		struct MHD_Response *resp;
		enum MHD_Result ret;
		const char *b = "{\"success\":false,\"error\":\"use POST\"}";

		resp = MHD_create_response_from_buffer(strlen(b), (void *) b, MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(resp, "Allow", "POST, OPTIONS");
		MHD_add_response_header(resp, "Content-Type", "application/json");
		add_cors(conn, resp);
		ret = MHD_queue_response(conn, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
		MHD_destroy_response(resp);
		return ret;
	}
	/*
	 * A declared length over the limit: an absurd one is refused before
	 * the body; a plausible one is read and discarded first, so that the
	 * client, still sending, gets the 413 instead of a broken pipe.
	 */
	cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
	if (cl && strtoull(cl, NULL, 10) > (unsigned long long) DISCARD_LIMIT)
		return respond_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");

	req = calloc(1, sizeof(Request));
	if (req == NULL)
		return MHD_NO;
	if (cl && strtoull(cl, NULL, 10) > (unsigned long long) cfg.max_body)
		req->too_large = true;
	else if (cl && strtoull(cl, NULL, 10) > 0)
	{
		/* one allocation for the whole body */
		req->cap = strtoull(cl, NULL, 10) + 1;
		req->body = malloc(req->cap);
		if (req->body == NULL)
		{
			free(req);
			return MHD_NO;
		}
	}
	req->type = routes[r].type;
	format_now(req->received_at, sizeof(req->received_at));
	*con_cls = req;
	return MHD_YES;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
		   const char *method, const char *version, const char *upload_data,
		   size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	if (req == NULL)
	{
		enum MHD_Result ret = begin_request(conn, url, method, version, con_cls);

		/* answered at once: its request is all there is */
		if (*con_cls == NULL)
			conns_request_in(guarded(conn));
		return ret;
	}

	if (*upload_data_size > 0)
	{
		if (!req->too_large)
		{
			if (req->len + *upload_data_size > (size_t) cfg.max_body)
			{
				req->too_large = true;
				free(req->body);
				req->body = NULL;
				req->len = 0;
			}
			else
			{
				if (req->len + *upload_data_size + 1 > req->cap)
				{
					size_t		cap = (req->len + *upload_data_size + 1) * 2;
					char	   *nb = realloc(req->body, cap);

					if (nb == NULL)
						return MHD_NO;
					req->body = nb;
					req->cap = cap;
				}
				memcpy(req->body + req->len, upload_data, *upload_data_size);
				req->len += *upload_data_size;
				req->body[req->len] = '\0';
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	conns_request_in(guarded(conn));
	return handle_post(conn, req);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;

	if (req)
	{
		free(req->body);
		free(req);
		*con_cls = NULL;
	}
	/* on a kept-alive connection, the next request's time starts now */
	conns_request_done(guarded(conn));
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	if (code == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		*socket_context = info ? conns_opened(info->connect_fd) : NULL;
	}
	else
	{
		conns_closed(*socket_context);
		*socket_context = NULL;
	}
}

/*
 * libmicrohttpd's messages, in the collector's log format.  Those that come
 * once per connection under attack are left to the guard's summary: the
 * refusals at the connection limits are counted there, and a connection
 * closed mid-request (by its client, or by the guard) is routine.
 */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	static const char *const routine[] = {
		"Connection was closed by remote side with incomplete request",
		"Connection socket is closed when reading request",
		"Socket has been disconnected when reading request",
	};
	char		msg[512];
	size_t		n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (strncmp(msg, "Server reached connection limit", 31) == 0)
	{
		conns_refused();
		return;
	}
	for (size_t i = 0; i < sizeof(routine) / sizeof(routine[0]); i++)
		if (strncmp(msg, routine[i], strlen(routine[i])) == 0)
			return;
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_msg("LOG", "%s", msg);
}

/* ---- configuration ---- */

static void
usage(FILE *out)
{
	fprintf(out,
			"pg_cdp_collector: receives Segment-spec events over HTTP and stores them in cdp.inbox\n"
			"\n"
			"Usage: pg_cdp_collector [options]\n"
			"\n"
			"  -c, --config FILE        read key = value settings from FILE (options below win)\n"
			"  -l, --listen ADDR        address to listen on (default 127.0.0.1)\n"
			"  -p, --port PORT          port (default 8088)\n"
			"  -d, --dbname CONNINFO    libpq connection string (default: libpq's PG* variables)\n"
			"  -b, --batch-size N       lines per COPY (default 1000)\n"
			"  -f, --flush-ms MS        longest wait before a partial batch is written (default 5)\n"
			"  -w, --flushers N         concurrent COPY connections (default 2)\n"
			"      --max-body BYTES     largest request body, after gzip inflation (default 512000)\n"
			"      --max-message BYTES  largest message inside a batch (default 32768)\n"
			"      --max-pending N      lines waiting for PostgreSQL before 429 (default 50000)\n"
			"      --timeout SEC        idle connection timeout (default 10)\n"
			"      --commit-timeout SEC longest wait for PostgreSQL to commit, then 503 (default 10)\n"
			"      --lookup-timeout SEC longest wait for a write key's lookup, then 503 (default 2)\n"
			"      --request-timeout SEC longest a request may take to arrive whole, headers and\n"
			"                           body, however steadily it comes (default 30)\n"
			"      --max-connections N  concurrent connections (default 512, at most 1000); when\n"
			"                           all are taken, those that waited longest for their\n"
			"                           request are closed\n"
			"      --max-connections-per-ip N  concurrent connections from one address (default 64;\n"
			"                           0: no limit, e.g. behind a proxy)\n"
			"      --public-url URL     how browsers reach the collector, e.g. https://collect.shop.com\n"
			"                           (settings document; default: the request's Host, and https\n"
			"                           when X-Forwarded-Proto says so)\n"
			"      --public-host HOST   host:port only, for plain http\n"
			"  -h, --help               show this help\n"
			"\n"
			"Config file keys are the long option names (listen, port, dbname, batch-size, ...).\n"
			"Exit status: 0 stopped by SIGTERM or SIGINT after flushing; 1 bad usage or\n"
			"configuration; 2 the listening socket could not be opened.\n");
}

static bool
set_option(const char *name, const char *value)
{
	char	   *end;
	long		n;

#define INTOPT(opt, field, lo, hi) \
	if (strcmp(name, opt) == 0) { \
		n = strtol(value, &end, 10); \
		if (*value == '\0' || *end != '\0' || n < (lo) || n > (hi)) { \
			log_msg("FATAL", "%s must be an integer between %ld and %ld", opt, (long) (lo), (long) (hi)); \
			return false; \
		} \
		cfg.field = (int) n; \
		return true; \
	}

	if (strcmp(name, "listen") == 0)
	{
		cfg.listen_addr = strdup(value);
		return true;
	}
	if (strcmp(name, "dbname") == 0)
	{
		cfg.conninfo = strdup(value);
		return true;
	}
	if (strcmp(name, "public-host") == 0)
	{
		cfg.public_host = strdup(value);
		return true;
	}
	if (strcmp(name, "public-url") == 0)
	{
		/* http(s)://host[:port], as browsers reach the collector */
		if (strncmp(value, "https://", 8) == 0)
			cfg.public_https = true;
		else if (strncmp(value, "http://", 7) != 0)
		{
			log_msg("FATAL", "public-url must start with http:// or https://");
			return false;
		}
		cfg.public_host = strndup(value + (cfg.public_https ? 8 : 7),
								  strcspn(value + (cfg.public_https ? 8 : 7), "/"));
		return true;
	}
	INTOPT("port", port, 1, 65535);
	INTOPT("batch-size", batch_size, 1, 100000);
	INTOPT("flush-ms", flush_ms, 1, 60000);
	INTOPT("flushers", flushers, 1, 16);
	INTOPT("max-body", max_body, 1024, 64 * 1024 * 1024);
	INTOPT("max-message", max_message, 256, 16 * 1024 * 1024);
	INTOPT("max-pending", max_pending, 100, 10000000);
	INTOPT("timeout", timeout_s, 1, 3600);
	INTOPT("commit-timeout", commit_timeout_s, 1, 3600);
	INTOPT("lookup-timeout", lookup_timeout_s, 1, 3600);
	INTOPT("max-connections", max_connections, 1, MAX_CONNECTIONS);
	INTOPT("max-connections-per-ip", max_connections_per_ip, 0, 100000);
	INTOPT("request-timeout", request_timeout_s, 1, 3600);
#undef INTOPT
	log_msg("FATAL", "unknown setting \"%s\"", name);
	return false;
}

static bool
read_config_file(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[1024];
	int			lineno = 0;

	if (f == NULL)
	{
		log_msg("FATAL", "cannot open config file \"%s\": %s", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f))
	{
		char	   *p = line;
		char	   *eq;
		char	   *k,
				   *v,
				   *e;

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		eq = strchr(p, '=');
		if (eq == NULL)
		{
			log_msg("FATAL", "%s:%d: expected key = value", path, lineno);
			fclose(f);
			return false;
		}
		*eq = '\0';
		k = p;
		v = eq + 1;
		for (e = eq - 1; e >= k && (*e == ' ' || *e == '\t'); e--)
			*e = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		for (e = v + strlen(v) - 1; e >= v && (*e == '\n' || *e == '\r' || *e == ' ' || *e == '\t'); e--)
			*e = '\0';
		if (strlen(v) >= 2 && ((v[0] == '\'' && v[strlen(v) - 1] == '\'') ||
							   (v[0] == '"' && v[strlen(v) - 1] == '"')))
		{
			v[strlen(v) - 1] = '\0';
			v++;
		}
		if (!set_option(k, v))
		{
			log_msg("FATAL", "%s:%d: bad setting", path, lineno);
			fclose(f);
			return false;
		}
	}
	fclose(f);
	return true;
}

/*
 * Every connection holds a descriptor: make room for --max-connections of
 * them, and the COPY and lookup connections, if the hard limit allows.
 */
static void
raise_open_files_limit(void)
{
	struct rlimit rl;
	rlim_t		need = (rlim_t) cfg.max_connections + cfg.flushers + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) ? need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need)
		log_msg("WARNING", "the open-file limit (%lu) is too low for --max-connections %d: "
				"connections past the limit wait until others close",
				(unsigned long) rl.rlim_cur, cfg.max_connections);
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"config", required_argument, NULL, 'c'},
		{"listen", required_argument, NULL, 'l'},
		{"port", required_argument, NULL, 'p'},
		{"dbname", required_argument, NULL, 'd'},
		{"batch-size", required_argument, NULL, 'b'},
		{"flush-ms", required_argument, NULL, 'f'},
		{"flushers", required_argument, NULL, 'w'},
		{"max-body", required_argument, NULL, 1},
		{"max-message", required_argument, NULL, 2},
		{"max-pending", required_argument, NULL, 3},
		{"timeout", required_argument, NULL, 4},
		{"max-connections", required_argument, NULL, 5},
		{"public-host", required_argument, NULL, 6},
		{"commit-timeout", required_argument, NULL, 7},
		{"public-url", required_argument, NULL, 8},
		{"lookup-timeout", required_argument, NULL, 9},
		{"max-connections-per-ip", required_argument, NULL, 10},
		{"request-timeout", required_argument, NULL, 11},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *names[] = {NULL, "max-body", "max-message", "max-pending", "timeout",
	"max-connections", "public-host", "commit-timeout", "public-url", "lookup-timeout",
	"max-connections-per-ip", "request-timeout"};
	int			c;
	struct sockaddr_in addr;
	sigset_t	stop_signals;
	int			sig;
	MHD_socket	listen_fd;

	cfg.listen_addr = "127.0.0.1";
	cfg.port = 8088;
	cfg.conninfo = "";
	cfg.batch_size = 1000;
	cfg.flush_ms = 5;
	cfg.flushers = 2;
	cfg.max_body = 512000;
	cfg.max_message = 32768;
	cfg.max_pending = 50000;
	cfg.timeout_s = 10;
	cfg.commit_timeout_s = 10;
	cfg.lookup_timeout_s = 2;
	cfg.max_connections = 512;
	cfg.max_connections_per_ip = 64;
	cfg.request_timeout_s = 30;

	/* The config file first, so that command-line options win. */
	for (int i = 1; i < argc; i++)
	{
		const char *file = NULL;

		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
			file = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
		if (file && !read_config_file(file))
			return 1;
	}
	while ((c = getopt_long(argc, argv, "c:l:p:d:b:f:w:h", long_options, NULL)) != -1)
	{
		bool		ok = true;

		switch (c)
		{
			case 'c':
				break;
			case 'l':
				ok = set_option("listen", optarg);
				break;
			case 'p':
				ok = set_option("port", optarg);
				break;
			case 'd':
				ok = set_option("dbname", optarg);
				break;
			case 'b':
				ok = set_option("batch-size", optarg);
				break;
			case 'f':
				ok = set_option("flush-ms", optarg);
				break;
			case 'w':
				ok = set_option("flushers", optarg);
				break;
			case 1:
			case 2:
			case 3:
			case 4:
			case 5:
			case 6:
			case 7:
			case 8:
			case 9:
			case 10:
			case 11:
				ok = set_option(names[c], optarg);
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return 1;
		}
		if (!ok)
			return 1;
	}
	if (optind < argc)
	{
		log_msg("FATAL", "unexpected argument \"%s\"", argv[optind]);
		usage(stderr);
		return 1;
	}

	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(cfg.port);
	if (inet_pton(AF_INET, cfg.listen_addr, &addr.sin_addr) != 1)
	{
		log_msg("FATAL", "listen address \"%s\" is not an IPv4 address", cfg.listen_addr);
		return 1;
	}

	/*
	 * SIGTERM and SIGINT are blocked in every thread (each inherits the mask
	 * of main, which starts them all) and taken by sigwait below.  A handler
	 * would run in whichever thread the kernel picked, often one of the
	 * per-connection threads under load, and the main thread would sleep on.
	 */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Bodies and batches are large and short-lived: keep them off mmap. */
	mallopt(M_MMAP_THRESHOLD, 16 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);

	raise_open_files_limit();
	queue_start(&cfg);
	sources_start(&cfg);
	conns_start(&cfg);

	/*
	 * select(), not poll(): at --max-connections, libmicrohttpd's select loop
	 * stops accepting, and new clients wait in the listen queue until the
	 * guard makes room, where its poll loop would accept and close them.
	 */
	daemon_handle = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
									 MHD_USE_ITC | MHD_USE_ERROR_LOG,
									 cfg.port, NULL, NULL, on_request, NULL,
									 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
									 MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
									 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) cfg.timeout_s,
									 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) cfg.max_connections,
									 MHD_OPTION_PER_IP_CONNECTION_LIMIT,
									 (unsigned int) cfg.max_connections_per_ip,
									 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
									 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
									 MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
									 MHD_OPTION_END);
	if (daemon_handle == NULL)
	{
		log_msg("FATAL", "cannot listen on %s:%d", cfg.listen_addr, cfg.port);
		return 2;
	}
	log_msg("LOG", "listening on %s:%d, batch %d lines or %d ms, %d flushers",
			cfg.listen_addr, cfg.port, cfg.batch_size, cfg.flush_ms, cfg.flushers);

	while (sigwait(&stop_signals, &sig) != 0)
		;

	/*
	 * Stop accepting (the listening socket is closed at once, so that new
	 * clients are refused rather than left in its backlog), let the requests
	 * in flight finish, flush, exit.
	 */
	log_msg("LOG", "stopping on %s: no new connections, flushing what was received",
			sig == SIGINT ? "SIGINT" : "SIGTERM");
	listen_fd = MHD_quiesce_daemon(daemon_handle);
	if (listen_fd != MHD_INVALID_SOCKET)
		close(listen_fd);
	queue_drain_and_stop();
	MHD_stop_daemon(daemon_handle);
	conns_stop();
	queue_join();
	sources_stop();
	log_msg("LOG", "stopped");
	return 0;
}
