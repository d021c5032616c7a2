/*-------------------------------------------------------------------------
 *
 * traits.h
 *	  Declared and computed traits and the customers view (traits.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TRAITS_H
#define CDP_TRAITS_H

#include "postgres.h"

extern char *cdp_timezone;

extern void cdp_traits_init(void);
extern Size cdp_traits_shmem_size(void);
extern void cdp_traits_shmem_init(void);

#endif							/* CDP_TRAITS_H */
