/*-------------------------------------------------------------------------
 *
 * ingest.h
 *	  The event writer every ingest path shares (ingest.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_INGEST_H
#define CDP_INGEST_H

#include "postgres.h"

#include "message.h"

/* run after a batch of events is written, in the writing transaction */
typedef void (*CdpEventsWritten) (CdpMessage *msgs, int nmsgs);

extern void cdp_ingest_init(void);
extern void cdp_register_events_written(CdpEventsWritten hook);
extern void cdp_write_messages(CdpMessage *msgs, int nmsgs);
extern void cdp_apply_traits(CdpMessage *msgs, int nmsgs);
extern void cdp_write_events(CdpMessage *msgs, int nmsgs);
extern void cdp_write_events_unmarked(CdpMessage *msgs, int nmsgs);

#endif							/* CDP_INGEST_H */
