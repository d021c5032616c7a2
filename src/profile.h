/*-------------------------------------------------------------------------
 *
 * profile.h
 *	  Profile traits and their survivorship, and the "profile changed"
 *	  marks (profile.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_PROFILE_H
#define CDP_PROFILE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

extern void cdp_profile_init(void);
extern Size cdp_profile_shmem_size(void);
extern void cdp_profile_shmem_init(void);

extern Jsonb *cdp_traits_merge(Jsonb *t1, Jsonb *m1, Jsonb *t2, Jsonb *m2,
							   Jsonb **meta_out);
extern Jsonb *cdp_traits_meta_for(Jsonb *traits, TimestampTz at,
								  const char *source);

/* traits of many profiles, folded per profile and written at once */
typedef struct CdpTraitFold
{
	int64	   *ids;
	Jsonb	  **traits;
	Jsonb	  **meta;
	int			n;
	int			cap;
} CdpTraitFold;

extern void cdp_trait_fold_add(CdpTraitFold *f, int64 profile_id, Jsonb *traits,
							   Jsonb *meta);
extern void cdp_trait_fold_apply(CdpTraitFold *f);

extern void cdp_mark_profiles_changed(int64 *ids, int n, const char *reason);

#endif							/* CDP_PROFILE_H */
