/*-------------------------------------------------------------------------
 *
 * registry.h
 *	  The registry of per-profile tables (registry.c).
 *
 * Every table that holds rows about a profile says, once, in the file that
 * owns it, how its rows follow a merge to the winner, how they split back
 * on an unmerge, and how they are erased, and what must be recomputed
 * after a merge or an unmerge.  Merges (merge.c), cdp.unmerge and
 * cdp.forget (erase.c) iterate over the registry; a new subsystem
 * registers its tables from its init function and touches nothing else.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_REGISTRY_H
#define CDP_REGISTRY_H

#include "postgres.h"

#include "lib/stringinfo.h"

typedef enum CdpRowRule
{
	CDP_ROWS_STAY,				/* left as they are */
	CDP_ROWS_BY_PROFILE_ID,		/* merge: profile_id moves to the winner;
								 * forget: rows with the profile_id go */
	CDP_ROWS_SQL				/* the statement given */
} CdpRowRule;

typedef struct CdpProfileTable
{
	const char *name;			/* short name, cdp.forget's summary key */
	const char *relation;		/* schema-qualified table name */
	int			order;			/* lower runs first, in every operation */

	/*
	 * Merge: $1 the losers, $2 their winners (int8[], in step).  Runs after
	 * the losers' snapshot is logged and before they are retired.
	 */
	CdpRowRule	on_merge;
	const char *merge_sql;

	/*
	 * Unmerge: $1 the merge id, $2 the winner, $3 the restored loser
	 * (int8); cdp.merges has the loser's snapshot (loser_identities,
	 * loser_members).  STAY leaves the rows with the winner.
	 */
	CdpRowRule	on_unmerge;
	const char *unmerge_sql;

	/*
	 * Erasure: $1 the profiles (int8[]), $2 every identifier value of the
	 * person (text[]).  Never STAY: everything about a person goes.
	 */
	CdpRowRule	on_forget;
	const char *forget_sql;

	/* what must be recomputed once rows moved; NULL: nothing */
	void		(*after_merge) (const int64 *winners, int n);
	void		(*after_unmerge) (int64 winner, int64 loser);
} CdpProfileTable;

extern void cdp_register_profile_table(const CdpProfileTable *table);

extern void cdp_profile_tables_merge(int64 *losers, int64 *winners, int n);
extern void cdp_profile_tables_unmerge(int64 merge_id, int64 winner, int64 loser);
extern void cdp_profile_tables_forget(int64 *ids, int n, Datum values,
									  StringInfo summary);

#endif							/* CDP_REGISTRY_H */
