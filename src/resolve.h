/*-------------------------------------------------------------------------
 *
 * resolve.h
 *	  The resolver: a batch of messages to profiles, through the engine and
 *	  cdp.identities (resolve.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_RESOLVE_H
#define CDP_RESOLVE_H

#include "postgres.h"

#include "message.h"

extern void cdp_resolve_init(void);
extern void cdp_resolve_messages(CdpMessage *msgs, int nmsgs, bool dedupe_first,
								 CdpBatchWork on_locked);
extern int64 cdp_lookup_profile(const char *type, const char *value);

#endif							/* CDP_RESOLVE_H */
