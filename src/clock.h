/*-------------------------------------------------------------------------
 *
 * clock.h
 *	  The settable clock (cdp.now(), cdp.fake_now) and timestamp parsing
 *	  (clock.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_CLOCK_H
#define CDP_CLOCK_H

#include "postgres.h"

#include "datatype/timestamp.h"

extern void cdp_clock_init(void);
extern TimestampTz cdp_now(void);
extern bool cdp_parse_timestamptz(const char *s, TimestampTz *out);

#endif							/* CDP_CLOCK_H */
