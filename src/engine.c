/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  The identity engine: a union-find of profiles over which a batch of
 *	  messages is replayed, honouring the identifier limits.
 *
 * The engine holds no SQL: the resolver (resolve.c) fills it from
 * cdp.identities and writes its plan back, and cdp.stitch (stitch.c) feeds
 * it groups read from a table.  Each message starts from its
 * highest-priority identifier and absorbs the others only while no limit
 * (a type's max_per_profile, cdp.max_identities_per_profile) is broken.
 * The merge winner is the older profile (lowest id).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "engine.h"
#include "idtypes.h"
#include "util.h"

int			cdp_max_identities_per_profile = 1000;

void
cdp_engine_init(void)
{
	DefineCustomIntVariable("cdp.max_identities_per_profile",
							"Merges that would give one profile more identifiers than this are refused.",
							NULL, &cdp_max_identities_per_profile, 1000, 2, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

static uint32
pair_hash(const void *key, Size keysize)
{
	const PairKey *k = key;

	return (uint32) cdp_hash_key(k->a, k->b ? k->b : "");
}

static int
pair_match(const void *key1, const void *key2, Size keysize)
{
	const PairKey *x = key1;
	const PairKey *y = key2;

	if (strcmp(x->a, y->a) != 0)
		return 1;
	if (x->b == NULL || y->b == NULL)
		return x->b != y->b;
	return strcmp(x->b, y->b);
}

HTAB *
cdp_pair_table(const char *name, long size, Size entrysize)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(PairKey);
	ctl.entrysize = entrysize;
	ctl.hash = pair_hash;
	ctl.match = pair_match;
	ctl.hcxt = CurrentMemoryContext;
	return hash_create(name, Max(size, 16), &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

IdentEntry *
cdp_engine_ident_hashed(Engine *e, const char *type, const char *value, uint64 hash,
				   bool create)
{
	PairKey		key = {type, value};
	bool		found;
	IdentEntry *ent;

	/* pair_hash's value: the caller computed it already, for the lock key */
	ent = hash_search_with_hash_value(e->idents, &key, (uint32) hash,
									  create ? HASH_ENTER : HASH_FIND, &found);
	if (ent && !found)
	{
		ent->profile_id = 0;
		ent->node = -1;
		ent->queried = false;
	}
	return ent;
}

IdentEntry *
cdp_engine_ident(Engine *e, const char *type, const char *value, bool create)
{
	return cdp_engine_ident_hashed(e, type, value, cdp_hash_key(type, value), create);
}

ProfEntry *
cdp_engine_profile(Engine *e, int64 id, bool create)
{
	bool		found;
	ProfEntry  *ent = hash_search(e->profiles, &id, create ? HASH_ENTER : HASH_FIND, &found);

	if (ent && !found)
	{
		ent->node = -1;
		ent->lockmode = 0;
		ent->need_exclusive = false;
		ent->exists = false;
	}
	return ent;
}

/*
 * Keys in bytewise order of (b, a), which is the order of a btree on (b, a)
 * (cdp.identities is keyed by (value, type), cdp.message_ids by
 * (message_id, source)) in the C collation and close to it in others.
 * Probes and inserts in key order visit neighbouring index pages one after
 * the other, which are then still in the CPU caches; in the random order
 * of a hash table nearly every step of every descent misses them once the
 * index outgrows the caches.
 */
static int
cmp_pair(const PairKey *x, const PairKey *y)
{
	int			c = strcmp(x->b, y->b);

	return (c != 0 || x->a == y->a) ? c : strcmp(x->a, y->a);
}

/*
 * cdp_sort_pairs sorts keys in cmp_pair order.  A batch sorts tens of thousands
 * of keys, and values often share long prefixes, so each key first gets its
 * value's leading bytes as a big-endian integer (the order of those bytes);
 * most comparisons end on that integer, and only ties compare the strings.
 */
typedef struct AbbrevPair
{
	uint64		abbrev;
	PairKey    *key;
} AbbrevPair;

static int
cmp_abbrev_pair(const void *x, const void *y)
{
	const AbbrevPair *p = x;
	const AbbrevPair *q = y;

	if (p->abbrev != q->abbrev)
		return p->abbrev < q->abbrev ? -1 : 1;
	return cmp_pair(p->key, q->key);
}

void
cdp_sort_pairs(PairKey **keys, int n)
{
	AbbrevPair *items = palloc(sizeof(AbbrevPair) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		const unsigned char *s = (const unsigned char *) keys[i]->b;
		uint64		v = 0;

		for (int j = 0; j < 8 && s[j] != '\0'; j++)
			v |= ((uint64) s[j]) << (56 - 8 * j);
		items[i].abbrev = v;
		items[i].key = keys[i];
	}
	qsort(items, n, sizeof(AbbrevPair), cmp_abbrev_pair);
	for (int i = 0; i < n; i++)
		keys[i] = items[i].key;
	pfree(items);
}

int
cdp_engine_new_node(Engine *e, int64 profile_id, bool stored)
{
	UfNode	   *nd;

	if (e->nnodes >= e->maxnodes)
	{
		int			old = e->maxnodes;

		e->maxnodes = Max(64, e->maxnodes * 2);
		e->nodes = cdp_huge_grow(CurrentMemoryContext, e->nodes,
								 sizeof(UfNode) * old, sizeof(UfNode) * e->maxnodes);
	}
	nd = &e->nodes[e->nnodes];
	nd->profile_id = profile_id;
	nd->stored = stored;
	nd->parent = e->nnodes;
	nd->next_member = -1;
	nd->last_member = e->nnodes;
	/*
	 * Counts come from a pool: a palloc each costs when there are millions.
	 * The pool grows with the graph, so that a large one is on huge pages;
	 * its first piece holds some 8k counts, however many types there are,
	 * so a small batch does not pay for thousands of nodes' worth of them.
	 */
	if (e->counts_left < e->ntypes + 1)
	{
		e->counts_left = (e->ntypes + 1) *
			Max(Max(16, 8192 / (e->ntypes + 1)), e->nnodes / 2);
		e->counts_pool = cdp_huge_alloc(CurrentMemoryContext,
										sizeof(int) * e->counts_left, true);
	}
	nd->counts = e->counts_pool;
	e->counts_pool += e->ntypes + 1;
	e->counts_left -= e->ntypes + 1;
	nd->total = 0;
	return e->nnodes++;
}

/*
 * May components a and b become one without breaking a limit?  When not,
 * *limit is the type whose limit forbids it, or -1 for
 * cdp.max_identities_per_profile.
 */
static bool
can_union(Engine *e, int a, int b, int *limit)
{
	UfNode	   *x = &e->nodes[a];
	UfNode	   *y = &e->nodes[b];

	*limit = -1;
	if (x->total + y->total > cdp_max_identities_per_profile)
		return false;
	for (int t = 0; t < e->ntypes; t++)
		if (x->counts[t] + y->counts[t] > cdp_ident_type_at(t)->max_per_profile)
		{
			*limit = t;
			return false;
		}
	return true;
}

/* The limit that keeps two components apart, in words. */
static char *
limit_text(Engine *e, int a, int b, int limit)
{
	if (limit < 0)
		return psprintf("cdp.max_identities_per_profile (%d; they have %d identifiers together)",
						cdp_max_identities_per_profile,
						e->nodes[a].total + e->nodes[b].total);
	return psprintf("the limit of %d %s identifier(s) per profile (they have %d together)",
					cdp_ident_type_at(limit)->max_per_profile, cdp_ident_type_at(limit)->name,
					e->nodes[a].counts[limit] + e->nodes[b].counts[limit]);
}

/*
 * A message's identifier stays with the profile that has it, as a limit
 * forbids merging that profile into the message's.  The issue names that
 * profile once its id is known: a profile this batch creates gets its id
 * when the batch is written (cdp_engine_name_profiles).
 */
static void
refuse_merge(Engine *e, CdpMessage *m, int msg, CdpIdent *id, int cur, int other)
{
	int			limit;
	char	   *why;

	(void) can_union(e, cur, other, &limit);
	why = limit_text(e, cur, other, limit);
	if (!e->name_profiles)
	{
		cdp_add_issue(m, cdp_ident_type_name(id), id->value,
					  psprintf("not merged: merging the two profiles would exceed %s", why));
		return;
	}
	cdp_add_issue(m, cdp_ident_type_name(id), id->value, why);
	if (e->nrefusals % 16 == 0)
		e->refusals = e->refusals ?
			repalloc(e->refusals, sizeof(CdpRefusal) * (e->nrefusals + 16)) :
			palloc(sizeof(CdpRefusal) * 16);
	e->refusals[e->nrefusals].msg = msg;
	e->refusals[e->nrefusals].issue = m->nissues - 1;
	e->refusals[e->nrefusals].node = other;
	e->nrefusals++;
}

/*
 * cdp_engine_name_profiles words the refused merges' issues, once every
 * component has its profile id: "not merged: profile N has it, ...".  The
 * profile named is the one that has the identifier at the end of the
 * batch.
 */
void
cdp_engine_name_profiles(Engine *e)
{
	for (int k = 0; k < e->nrefusals; k++)
	{
		CdpRefusal *r = &e->refusals[k];
		CdpIssue   *is = &e->msgs[r->msg].issues[r->issue];
		int64		owner = e->nodes[cdp_engine_find_root(e, r->node)].profile_id;

		is->reason = psprintf("not merged: profile " INT64_FORMAT
							  " has it, and merging the two profiles would exceed %s",
							  owner, is->reason);
	}
}

/* Union two roots; the older profile wins.  Returns the root. */
static int
union_roots(Engine *e, int a, int b, int msg)
{
	int			w,
				l;
	UfNode	   *nw,
			   *nl;

	/* Stored profiles are older than new ones; among each, lower first. */
	if (e->nodes[a].stored != e->nodes[b].stored)
		w = e->nodes[a].stored ? a : b;
	else if (e->nodes[a].stored)
		w = e->nodes[a].profile_id < e->nodes[b].profile_id ? a : b;
	else
		w = Min(a, b);
	l = (w == a) ? b : a;
	nw = &e->nodes[w];
	nl = &e->nodes[l];

	if (nl->stored)
	{
		CdpMergeStep *s;
		int			cnt = 0;

		if (e->steps == NULL)
			e->steps = palloc(sizeof(CdpMergeStep) * 16);
		else if ((e->nsteps & 15) == 0)
			e->steps = repalloc(e->steps, sizeof(CdpMergeStep) * (e->nsteps + 16));
		s = &e->steps[e->nsteps++];
		s->winner = nw->profile_id;
		s->loser = nl->profile_id;
		s->msg = msg;
		for (int m = l; m >= 0; m = e->nodes[m].next_member)
			if (e->nodes[m].stored)
				cnt++;
		s->members = palloc(sizeof(int64) * Max(cnt, 1));
		s->nmembers = 0;
		for (int m = l; m >= 0; m = e->nodes[m].next_member)
			if (e->nodes[m].stored)
				s->members[s->nmembers++] = e->nodes[m].profile_id;

		/* Identifiers this batch already gave the loser belong to its snapshot. */
		s->nextra = 0;
		s->extra_types = NULL;
		s->extra_values = NULL;
		if (e->natt > 0)
		{
			bool	   *inloser = palloc0(sizeof(bool) * e->nnodes);

			for (int m = l; m >= 0; m = e->nodes[m].next_member)
				inloser[m] = true;
			s->extra_types = palloc(sizeof(char *) * e->natt);
			s->extra_values = palloc(sizeof(char *) * e->natt);
			for (int a = 0; a < e->natt; a++)
				if (inloser[e->att_node[a]])
				{
					CdpIdent   *id = &e->msgs[e->att_msg[a]].idents[e->att_ident[a]];

					s->extra_types[s->nextra] = cdp_ident_type_at(id->type)->name;
					s->extra_values[s->nextra++] = id->value;
				}
			pfree(inloser);
		}
	}

	for (int t = 0; t < e->ntypes; t++)
		nw->counts[t] += nl->counts[t];
	nw->total += nl->total;
	nl->parent = w;
	e->nodes[nw->last_member].next_member = l;
	nw->last_member = nl->last_member;
	return w;
}

int
cdp_cmp_ident_priority(const void *a, const void *b)
{
	const CdpIdent *x = a;
	const CdpIdent *y = b;
	CdpIdentType *tx = cdp_ident_type_at(x->type);
	CdpIdentType *ty = cdp_ident_type_at(y->type);
	int			c;

	if (tx->priority != ty->priority)
		return tx->priority < ty->priority ? -1 : 1;
	c = strcmp(tx->name, ty->name);
	if (c != 0)
		return c;
	return strcmp(x->value, y->value);
}

static void
attach(Engine *e, int root, CdpMessage *m, int msg, int ident)
{
	CdpIdent   *id = &m->idents[ident];

	e->nodes[root].counts[id->type]++;
	e->nodes[root].total++;
	if (e->att_msg == NULL || (e->natt >= 64 && (e->natt & (e->natt - 1)) == 0))
	{
		Size		old = sizeof(int) * e->natt;
		Size		size = sizeof(int) * Max(64, e->natt * 2);

		e->att_msg = cdp_huge_grow(CurrentMemoryContext, e->att_msg, old, size);
		e->att_ident = cdp_huge_grow(CurrentMemoryContext, e->att_ident, old, size);
		e->att_node = cdp_huge_grow(CurrentMemoryContext, e->att_node, old, size);
	}
	e->att_msg[e->natt] = msg;
	e->att_ident[e->natt] = ident;
	e->att_node[e->natt] = root;
	e->natt++;
}

/*
 * Replay message i.  It starts at its strongest identifier and takes in
 * the others while limits allow; an identifier that cannot join stays
 * where it is (and is recorded as an issue).
 */
void
cdp_engine_plan_message(Engine *e, CdpMessage *m, int i)
{
	int			cur = -1;

	if (m->nidents > 1)
		qsort(m->idents, m->nidents, sizeof(CdpIdent), cdp_cmp_ident_priority);

	for (int j = 0; j < m->nidents; j++)
	{
		CdpIdent   *id = &m->idents[j];
		CdpIdentType *t = cdp_ident_type_at(id->type);
		IdentEntry *ie = id->entry ? id->entry :
			cdp_engine_ident(e, t->name, id->value, true);
		int			n = -1;

		if (ie->node >= 0)
			n = cdp_engine_find_root(e, ie->node);
		else if (ie->profile_id != 0)
		{
			ProfEntry  *p = cdp_engine_profile(e, ie->profile_id, false);

			if (p && p->node >= 0)
			{
				ie->node = p->node;
				n = cdp_engine_find_root(e, p->node);
			}
		}

		if (cur < 0)
		{
			if (n >= 0)
				cur = n;
			else
			{
				cur = cdp_engine_new_node(e, 0, false);
				ie->node = cur;
				attach(e, cur, m, i, j);
			}
			continue;
		}
		if (n == cur)
			continue;
		if (n >= 0)
		{
			int			limit;

			if (can_union(e, cur, n, &limit))
				cur = union_roots(e, cur, n, i);
			else
				refuse_merge(e, m, i, id, cur, n);
		}
		else if (e->nodes[cur].counts[id->type] < t->max_per_profile &&
				 e->nodes[cur].total < cdp_max_identities_per_profile)
		{
			ie->node = cur;
			attach(e, cur, m, i, j);
		}
		else
			cdp_add_issue(m, t->name, id->value,
						  psprintf("not attached: the profile already has %d %s identifier(s), the limit",
								   e->nodes[cur].counts[id->type], t->name));
	}
	m->node = cur;
}

/* Replay the batch's messages in order. */
void
cdp_engine_plan(Engine *e)
{
	for (int i = 0; i < e->nmsgs; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (cdp_msg_active(&e->msgs[i]))
			cdp_engine_plan_message(e, &e->msgs[i], i);
	}
}
