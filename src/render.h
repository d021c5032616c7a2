/*-------------------------------------------------------------------------
 *
 * render.h
 *	  Message templates: placeholders filled from traits and payload
 *	  (render.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_RENDER_H
#define CDP_RENDER_H

#include "postgres.h"

#include "utils/jsonb.h"

/* what a placeholder can name besides traits.* and payload.* */
typedef struct CdpRenderContext
{
	Jsonb	   *traits;
	Jsonb	   *payload;
	int64		profile_id;
	int64		outbox_id;
	const char *address;
	const char *channel;
} CdpRenderContext;

/*
 * The template rendered, HTML-escaping what it inserts when html; NULL
 * when a placeholder has no value and no default, with *missing set to
 * the placeholder's path.  A NULL template renders as NULL.
 */
extern char *cdp_render_template(const char *tmpl, const CdpRenderContext *ctx,
								 bool html, char **missing);

/*
 * A template parsed once, to render many messages with: the same result
 * as cdp_render_template.  Parsing a NULL template gives NULL, which
 * renders as NULL.
 */
typedef struct CdpParsedTemplate CdpParsedTemplate;

extern CdpParsedTemplate *cdp_parse_template(const char *tmpl, MemoryContext cxt);
extern char *cdp_render_parsed(const CdpParsedTemplate *pt, const CdpRenderContext *ctx,
							   bool html, char **missing);

/* raises an error naming the first malformed placeholder of tmpl */
extern void cdp_check_template(const char *tmpl, const char *field);

#endif							/* CDP_RENDER_H */
