/*-------------------------------------------------------------------------
 *
 * journey_stats.c
 *	  The standard normal distribution function, cdp.normal_cdf, which the
 *	  p-values of cdp.journey_stats need (journey_stats.sql): PostgreSQL 15
 *	  has no erf() in SQL, and the C library's erfc() is exact to double
 *	  precision, also far in the tails where 1 - erf() would round to 0.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"

/* cdp.normal_cdf(x) → P(Z <= x) for a standard normal Z */
PG_FUNCTION_INFO_V1(cdp_normal_cdf);

Datum
cdp_normal_cdf(PG_FUNCTION_ARGS)
{
	float8		x = PG_GETARG_FLOAT8(0);

	PG_RETURN_FLOAT8(0.5 * erfc(-x / M_SQRT2));
}
