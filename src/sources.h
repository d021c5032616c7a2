/*-------------------------------------------------------------------------
 *
 * sources.h
 *	  Who may write messages in a source's name (sources.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_SOURCES_H
#define CDP_SOURCES_H

#include "message.h"

extern void cdp_check_sources(CdpMessage *msgs, int n, const char *role);
extern char *cdp_writing_role(void);

#endif							/* CDP_SOURCES_H */
