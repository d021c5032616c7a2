/*-------------------------------------------------------------------------
 *
 * inbox.h
 *	  The bulk paths' pieces: parsing raw lines, isolating bad messages,
 *	  keeping rejects, and cdp.tick()'s drain (inbox.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_INBOX_H
#define CDP_INBOX_H

#include "postgres.h"

#include "message.h"

extern int	cdp_batch_size;

extern void cdp_inbox_init(void);
extern void cdp_run_isolated(CdpMessage *msgs, int n, CdpBatchWork work);
extern void cdp_parse_inbox_batch(CdpMessage *msgs, int n);
extern void cdp_parse_inbox_lines(CdpMessage *msgs, int n);
extern void cdp_reset_messages(CdpMessage *msgs, int n);
extern int	cdp_record_rejects(CdpMessage *msgs, int n, const char *default_source);
extern CdpMessage *cdp_inbox_messages_from_spi(void);
extern int	cdp_drain_inbox(int limit, int *rejected);

#endif							/* CDP_INBOX_H */
