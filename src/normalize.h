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

/* finding the raw texts that may spell a value (see normalize.c) */
typedef enum CdpPrefilterKind
{
	CDP_PREFILTER_EXACT,		/* the needle as it is */
	CDP_PREFILTER_DIGITS,		/* the needle's digits, phone separators between */
	CDP_PREFILTER_FOLDED,		/* ASCII text: the needle in either case; else regex */
	CDP_PREFILTER_REGEX			/* regex, in any text */
} CdpPrefilterKind;

typedef struct CdpPrefilter
{
	CdpPrefilterKind kind;
	char	   *needle;			/* NULL: no text of its kind holds a spelling */
	char	   *regex;
} CdpPrefilter;

extern void cdp_normalize_prefilter(CdpIdentType *type, const char *value,
									CdpPrefilter *out);
extern bool cdp_prefilter_finds(const CdpPrefilter *f, const char *text, int len,
								bool ascii);

#endif							/* CDP_NORMALIZE_H */
