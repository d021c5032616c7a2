/*-------------------------------------------------------------------------
 *
 * normalize.h
 *	  Normalization of identifier values (normalize.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_NORMALIZE_H
#define CDP_NORMALIZE_H

#include "postgres.h"

#include "idtypes.h"

extern char *cdp_default_phone_region;

extern void cdp_normalize_init(void);
extern char *cdp_normalize_email_str(const char *raw, const char **why);
extern char *cdp_normalize_phone_str(const char *raw, const char *region,
									 const char **why);
extern char *cdp_normalize_value(CdpIdentType *type, const char *raw,
								 const char **why);

#endif							/* CDP_NORMALIZE_H */
