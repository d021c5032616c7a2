/*-------------------------------------------------------------------------
 *
 * segment_spec.h
 *	  The parser of Segment-spec messages (segment_spec.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_SEGMENT_SPEC_H
#define CDP_SEGMENT_SPEC_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "message.h"

extern int	cdp_max_message_bytes;

extern void cdp_segment_spec_init(void);
extern bool cdp_parse_segment_message(Jsonb *msg, CdpMessage *out,
									  TimestampTz received_at);
extern void cdp_require_identifier(CdpMessage *m);
extern Jsonb *cdp_empty_object(void);

#endif							/* CDP_SEGMENT_SPEC_H */
