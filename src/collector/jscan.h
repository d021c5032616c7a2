/*-------------------------------------------------------------------------
 *
 * jscan.h
 *	  A validating JSON scanner for pg_cdp_collector's hot path.
 *
 * The collector forwards messages as the bytes it received: it needs to
 * know that a body is valid JSON (RFC 8259, UTF-8), where the messages of
 * a batch are, and a few top-level members; it never needs a tree.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JSCAN_H
#define JSCAN_H

#include <stdbool.h>
#include <stddef.h>

/* A piece of the scanned text: a value, a key (with its quotes), a member. */
typedef struct JsonSpan
{
	const char *p;
	size_t		len;
} JsonSpan;

/* Nesting deeper than this is refused (PostgreSQL's own parser recurses). */
#define JSCAN_MAX_DEPTH 512

/*
 * Is buf[0..len) exactly one JSON value, with optional whitespace around?
 * Strings must be valid UTF-8 without raw control characters, escapes
 * well-formed (\u surrogates paired).  On failure *err says why and *errpos
 * where (a byte offset).
 */
extern bool jscan_validate(const char *buf, size_t len, const char **err, size_t *errpos);

/*
 * Walking validated text.  An iterator is set on a container's span (its
 * opening bracket first); each call yields the next element, or for an
 * object the next member: its key (quotes included), its value, and the
 * member as a whole (key to end of value).
 */
typedef struct JsonIter
{
	const char *p;
	const char *end;
} JsonIter;

extern JsonSpan jscan_value(const char *buf, size_t len);	/* the text's value */
extern char jscan_kind(JsonSpan v);	/* '{', '[', '"', 'n', 't', 'f' or a digit/'-' */
extern void jscan_iter(JsonIter *it, JsonSpan container);
extern bool jscan_next_element(JsonIter *it, JsonSpan *elem);
extern bool jscan_next_member(JsonIter *it, JsonSpan *key, JsonSpan *value, JsonSpan *member);

/* Does a key or string span (quotes included) decode to name? */
extern bool jscan_string_is(JsonSpan s, const char *name);

/* Decode a string span into out (NUL-terminated); false if it is too long or holds \u0000. */
extern bool jscan_string_decode(JsonSpan s, char *out, size_t outsize);

#endif							/* JSCAN_H */
