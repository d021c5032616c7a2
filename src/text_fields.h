/*-------------------------------------------------------------------------
 *
 * text_fields.h
 *	  The rule every text field of a message obeys (text_fields.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TEXT_FIELDS_H
#define CDP_TEXT_FIELDS_H

#include "postgres.h"

#include "util.h"

/* The byte limits of the text fields, as the README's "Limits" lists them. */
#define CDP_MAX_NAME_BYTES		200 /* event names, page and screen names and categories */
#define CDP_MAX_CHANNEL_BYTES	64	/* channel, as source names */
#define CDP_MAX_ID_BYTES		512 /* message ids (messageId, event_id), groupId */
#define CDP_MAX_VALUE_BYTES		1024	/* identifier values, once trimmed */
#define CDP_MAX_TYPE_NAME_BYTES 63	/* identifier type names */

extern bool cdp_check_text(char **value, int max_bytes, const char *subject,
						   CdpError *err);
extern void cdp_check_text_arg(char **value, int max_bytes, const char *subject);
extern bool cdp_text_has_controls(const char *s, size_t len);
extern bool cdp_valid_type_name(const char *s);
extern char *cdp_quote_text(const char *s);

#endif							/* CDP_TEXT_FIELDS_H */
