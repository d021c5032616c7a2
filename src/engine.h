/*-------------------------------------------------------------------------
 *
 * engine.h
 *	  The identity engine's in-memory state and operations (engine.c),
 *	  used by the batch resolver (resolve.c) and cdp.stitch (stitch.c),
 *	  which feeds it groups read from a table.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_CDP_ENGINE_H
#define PG_CDP_ENGINE_H

#include "utils/hsearch.h"

#include "idtypes.h"
#include "merge.h"
#include "message.h"

/*
 * Hash keys are pairs of strings that live as long as the batch (message
 * fields and type names), so entries stay small whatever the value length.
 */
typedef struct PairKey
{
	const char *a;
	const char *b;
} PairKey;

typedef struct IdentEntry
{
	PairKey		key;			/* (type, value) */
	int64		profile_id;		/* stored owner, 0 when unknown */
	int			node;			/* component node, -1 when none */
	bool		queried;
} IdentEntry;

typedef struct ProfEntry
{
	int64		profile_id;
	int			node;
	int			lockmode;		/* 0 none, 1 share, 2 exclusive */
	bool		need_exclusive;
	bool		exists;
} ProfEntry;

typedef struct UfNode
{
	int64		profile_id;		/* stored id, or assigned when materialized */
	bool		stored;
	int			parent;
	int			next_member;	/* members of a component, a linked list */
	int			last_member;
	int		   *counts;			/* identifiers per type */
	int			total;
} UfNode;

/* A merge a limit refused: issue number issue of message msg. */
typedef struct CdpRefusal
{
	int			msg;
	int			issue;
	int			node;			/* a node of the profile that has the identifier */
} CdpRefusal;

typedef struct Engine
{
	CdpMessage *msgs;
	int			nmsgs;
	int			ntypes;
	HTAB	   *idents;
	HTAB	   *profiles;
	UfNode	   *nodes;
	int			nnodes;
	int			maxnodes;
	/* attachments of new identifiers, in order */
	int		   *att_msg;
	int		   *att_ident;
	int		   *att_node;
	int			natt;
	/* merge steps */
	CdpMergeStep *steps;
	int			nsteps;
	int		   *counts_pool;	/* zeroed ints for new nodes' counts */
	int			counts_left;
	/* identifiers looked up under the exclusive global lock: owners stay */
	bool		owners_stable;
	/* refused merges name the other profile (cdp_engine_name_profiles) */
	bool		name_profiles;
	CdpRefusal *refusals;
	int			nrefusals;
} Engine;

/* Root of node n's component (path halving); inline, as it is hot. */
static inline int
cdp_engine_find_root(Engine *e, int n)
{
	while (e->nodes[n].parent != n)
	{
		e->nodes[n].parent = e->nodes[e->nodes[n].parent].parent;
		n = e->nodes[n].parent;
	}
	return n;
}

/* A message the engine still has to resolve. */
static inline bool
cdp_msg_active(CdpMessage *m)
{
	return m->err.sqlerrcode == 0 && !m->duplicate;
}

/* The identifier type a message identifier names (alias ids resolved late). */
static inline const char *
cdp_ident_type_name(CdpIdent *id)
{
	return cdp_ident_type_at(id->type)->name;
}

extern int	cdp_max_identities_per_profile;

extern void cdp_engine_init(void);
extern HTAB *cdp_pair_table(const char *name, long size, Size entrysize);
extern IdentEntry *cdp_engine_ident_hashed(Engine *e, const char *type, const char *value,
										   uint64 hash, bool create);
extern IdentEntry *cdp_engine_ident(Engine *e, const char *type, const char *value,
									bool create);
extern ProfEntry *cdp_engine_profile(Engine *e, int64 id, bool create);
extern int	cdp_engine_new_node(Engine *e, int64 profile_id, bool stored);
extern int	cdp_cmp_ident_priority(const void *a, const void *b);

/* Replay message i over the union-find, honouring the limits. */
extern void cdp_engine_plan_message(Engine *e, CdpMessage *m, int i);
/* Replay the batch's messages in order. */
extern void cdp_engine_plan(Engine *e);
extern void cdp_sort_pairs(PairKey **keys, int n);
/* Once every component has its profile id: word the refused merges' issues. */
extern void cdp_engine_name_profiles(Engine *e);

#endif							/* PG_CDP_ENGINE_H */
