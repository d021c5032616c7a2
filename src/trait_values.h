/*-------------------------------------------------------------------------
 *
 * trait_values.h
 *	  Casting trait values without raising, and tallies (trait_values.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TRAIT_VALUES_H
#define CDP_TRAIT_VALUES_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/jsonb.h"

extern bool cdp_trait_type_supported(Oid type);
extern bool cdp_trait_cast(JsonbValue *v, Oid type, Datum *out);

extern Datum cdp_tally_merge(PG_FUNCTION_ARGS);

#endif							/* CDP_TRAIT_VALUES_H */
