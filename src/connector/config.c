/*-------------------------------------------------------------------------
 *
 * config.c
 *	  pg_cdp_connector's configuration file: global "key = value" lines,
 *	  then one "[channel NAME]" section per outbox channel it drains,
 *	  saying how that channel's messages are delivered.
 *
 * Delivery settings (URLs, SMTP servers, files) belong to the connector,
 * not to the database: the outbox only knows channel names.  Every error
 * names the file and line, and the program exits with status 1.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "connector.h"

Config		cfg;

static const char *cur_path;
static int	cur_line;

static void
config_error(const char *fmt, const char *arg)
{
	char		msg[512];

	snprintf(msg, sizeof(msg), fmt, arg);
	log_msg("FATAL", "%s:%d: %s", cur_path, cur_line, msg);
}

static char *
trim(char *s)
{
	char	   *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	/* a value may be quoted, to keep leading or trailing blanks or a '#' */
	if (e - s >= 2 && ((s[0] == '"' && e[-1] == '"') || (s[0] == '\'' && e[-1] == '\'')))
	{
		e[-1] = '\0';
		s++;
	}
	return s;
}

static bool
parse_int(const char *key, const char *v, long lo, long hi, int *out)
{
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi)
	{
		char		msg[200];

		snprintf(msg, sizeof(msg), "%s must be an integer between %ld and %ld", key, lo, hi);
		config_error("%s", msg);
		return false;
	}
	*out = (int) n;
	return true;
}

static bool
parse_bool(const char *key, const char *v, bool *out)
{
	if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0 ||
		strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)
		*out = true;
	else if (strcasecmp(v, "no") == 0 || strcasecmp(v, "off") == 0 ||
			 strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0)
		*out = false;
	else
	{
		config_error("%s must be yes or no", key);
		return false;
	}
	return true;
}

static bool
set_global(const char *k, const char *v)
{
	int			n;

	if (strcmp(k, "conninfo") == 0)
		cfg.conninfo = strdup(v);
	else if (strcmp(k, "concurrency") == 0)
		return parse_int(k, v, 1, 1000, &cfg.concurrency);
	else if (strcmp(k, "batch") == 0)
		return parse_int(k, v, 1, 100000, &cfg.batch);
	else if (strcmp(k, "lease") == 0)
		return parse_int(k, v, 1, 86400, &cfg.lease_s);
	else if (strcmp(k, "poll_interval") == 0)
	{
		if (!parse_int(k, v, 1, 3600000, &n))
			return false;
		cfg.poll_ms = n;
	}
	else if (strcmp(k, "reconnect_max") == 0)
	{
		if (!parse_int(k, v, 1, 3600, &n))
			return false;
		cfg.reconnect_max_ms = n * 1000;
	}
	else if (strcmp(k, "report_delivered") == 0)
		return parse_bool(k, v, &cfg.report_delivered);
	else
	{
		config_error("unknown setting \"%s\"", k);
		return false;
	}
	return true;
}

/* The address inside "Name <addr>", or the whole value. */
static char *
envelope_address(const char *from)
{
	const char *lt = strrchr(from, '<');
	const char *gt = lt ? strchr(lt, '>') : NULL;

	if (lt && gt)
		return strndup(lt + 1, gt - lt - 1);
	return strdup(from);
}

static bool
set_channel(Channel *ch, const char *k, const char *v)
{
	int			n;

	if (strcmp(k, "kind") == 0)
	{
		if (strcmp(v, "webhook") == 0)
			ch->kind = KIND_WEBHOOK;
		else if (strcmp(v, "smtp") == 0)
			ch->kind = KIND_SMTP;
		else if (strcmp(v, "file") == 0)
			ch->kind = KIND_FILE;
		else
		{
			config_error("kind must be webhook, smtp or file, not \"%s\"", v);
			return false;
		}
		ch->kind_set = true;
	}
	else if (strcmp(k, "url") == 0)
		ch->url = strdup(v);
	else if (strcmp(k, "header") == 0)
	{
		HeaderList *h = calloc(1, sizeof(HeaderList));
		HeaderList **tail = &ch->headers;

		if (strchr(v, ':') == NULL || strpbrk(v, "\r\n"))
		{
			config_error("header must be \"Name: value\", not \"%s\"", v);
			free(h);
			return false;
		}
		h->line = strdup(v);
		while (*tail)
			tail = &(*tail)->next;
		*tail = h;
	}
	else if (strcmp(k, "from") == 0)
	{
		if (strpbrk(v, "\r\n"))
		{
			config_error("%s", "from must be one line");
			return false;
		}
		ch->from_header = strdup(v);
		ch->mail_from = envelope_address(v);
	}
	else if (strcmp(k, "username") == 0)
		ch->username = strdup(v);
	else if (strcmp(k, "password") == 0)
		ch->password = strdup(v);
	else if (strcmp(k, "tls") == 0)
	{
		if (strcmp(v, "no") == 0)
			ch->tls = 0;
		else if (strcmp(v, "try") == 0)
			ch->tls = 1;
		else if (strcmp(v, "yes") == 0)
			ch->tls = 2;
		else
		{
			config_error("tls must be no, try or yes, not \"%s\"", v);
			return false;
		}
	}
	else if (strcmp(k, "path") == 0)
		ch->path = strdup(v);
	else if (strcmp(k, "timeout") == 0)
	{
		if (!parse_int(k, v, 1, 3600, &n))
			return false;
		ch->timeout_ms = n * 1000;
	}
	else if (strcmp(k, "timeout_ms") == 0)
		return parse_int(k, v, 1, 3600000, &ch->timeout_ms);
	else if (strcmp(k, "batch") == 0)
		return parse_int(k, v, 1, 100000, &ch->batch);
	else if (strcmp(k, "concurrency") == 0)
		return parse_int(k, v, 1, 1000, &ch->concurrency);
	else if (strcmp(k, "report_delivered") == 0)
	{
		if (!parse_bool(k, v, &ch->report_delivered))
			return false;
		ch->report_set = true;
	}
	else
	{
		config_error("unknown channel setting \"%s\"", k);
		return false;
	}
	return true;
}

/* Every channel complete, and defaults filled in from the globals. */
static bool
config_check(void)
{
	if (cfg.conninfo == NULL)
	{
		log_msg("FATAL", "%s: conninfo is not set", cur_path);
		return false;
	}
	if (cfg.nchannels == 0)
	{
		log_msg("FATAL", "%s: no [channel NAME] section", cur_path);
		return false;
	}
	for (int i = 0; i < cfg.nchannels; i++)
	{
		Channel    *ch = &cfg.channels[i];
		const char *missing = NULL;

		if (!ch->kind_set)
			missing = "kind";
		else if (ch->kind != KIND_FILE && ch->url == NULL)
			missing = "url";
		else if (ch->kind == KIND_SMTP && ch->mail_from == NULL)
			missing = "from";
		else if (ch->kind == KIND_FILE && ch->path == NULL)
			missing = "path";
		if (missing)
		{
			log_msg("FATAL", "%s: channel \"%s\" has no %s", cur_path, ch->name, missing);
			return false;
		}
		for (int j = 0; j < i; j++)
			if (strcmp(cfg.channels[j].name, ch->name) == 0)
			{
				log_msg("FATAL", "%s: channel \"%s\" appears twice", cur_path, ch->name);
				return false;
			}
		if (ch->batch == 0)
			ch->batch = ch->kind == KIND_FILE ? 1000 : cfg.batch;
		if (ch->concurrency == 0 || ch->concurrency > cfg.concurrency)
			ch->concurrency = cfg.concurrency;
		if (ch->timeout_ms == 0)
			ch->timeout_ms = ch->kind == KIND_SMTP ? 30000 : 10000;
		if (!ch->report_set)
			ch->report_delivered = cfg.report_delivered;

		/*
		 * A delivery must end while its lease holds, or another connector
		 * may deliver it again before this one acks.
		 */
		if (ch->kind != KIND_FILE && ch->timeout_ms >= cfg.lease_s * 1000)
		{
			log_msg("FATAL", "%s: channel \"%s\": timeout (%d ms) must be shorter than the lease (%d s)",
					cur_path, ch->name, ch->timeout_ms, cfg.lease_s);
			return false;
		}
		ch->fd = -1;
		ch->want_claim = true;
	}
	return true;
}

bool
config_read(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[4096];
	Channel    *ch = NULL;

	cfg.concurrency = 16;
	cfg.batch = 100;
	cfg.lease_s = 60;
	cfg.poll_ms = 5000;
	cfg.reconnect_max_ms = 10000;
	cfg.report_delivered = true;
	cur_path = path;
	cur_line = 0;
	if (f == NULL)
	{
		log_msg("FATAL", "cannot open config file \"%s\": %s", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f))
	{
		char	   *p = line;
		char	   *eq;

		cur_line++;
		if (strchr(line, '\n') == NULL && !feof(f))
		{
			config_error("%s", "line too long");
			goto fail;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == ';' || *p == '\n' || *p == '\r' || *p == '\0')
			continue;
		if (*p == '[')
		{
			char	   *end = strrchr(p, ']');
			char	   *name;

			if (end == NULL || strncmp(p, "[channel", 8) != 0 || (p[8] != ' ' && p[8] != '\t'))
			{
				config_error("%s", "expected a section \"[channel NAME]\"");
				goto fail;
			}
			*end = '\0';
			name = trim(p + 8);
			if (*name == '\0')
			{
				config_error("%s", "a channel section needs a name");
				goto fail;
			}
			cfg.channels = realloc(cfg.channels, (cfg.nchannels + 1) * sizeof(Channel));
			ch = &cfg.channels[cfg.nchannels++];
			memset(ch, 0, sizeof(Channel));
			ch->name = strdup(name);
			ch->tls = 1;
			continue;
		}
		eq = strchr(p, '=');
		if (eq == NULL)
		{
			config_error("%s", "expected key = value");
			goto fail;
		}
		*eq = '\0';
		{
			char	   *k = trim(p);
			char	   *v = trim(eq + 1);

			if (!(ch ? set_channel(ch, k, v) : set_global(k, v)))
				goto fail;
		}
	}
	fclose(f);
	return config_check();

fail:
	fclose(f);
	return false;
}
