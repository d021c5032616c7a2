/*-------------------------------------------------------------------------
 *
 * renormalize.c
 *	  cdp.renormalize_identities(): stored identities brought to what the
 *	  normalizers make of them now.
 *
 * A normalizer that changes (emails folded over all of Unicode instead of
 * ASCII only, invisible characters dropped) leaves the values stored before
 * it in their old spelling, where no new message finds them, and a person
 * whose two spellings went to two profiles stays split.  This function
 * normalizes every stored value again.  A value whose normal form differs
 * is renamed; where several stored values now share a normal form (one
 * profile's, or one each of several profiles'), they become one identifier,
 * and its profiles merge as a message carrying all of them would merge
 * them: the older profile wins, the per-type limits and
 * cdp.max_identities_per_profile hold, and each merge goes through merge.c
 * into cdp.merges, with cause 'renormalize'.
 *
 * The limits count the identifiers the merged profile will have, each
 * renormalized identifier once: a "lower" type with max_per_profile 1 whose
 * two profiles hold "ÉRIC" and "éric" merges.  (The identity engine counts
 * stored rows, which here are two until they are renamed, hence this
 * planner of its own.)  A merge that a limit forbids is not made: the
 * younger side keeps its old spelling, and cdp.identifier_issues says why.
 * Values that are invalid or blocked under today's rules stay as they are
 * and are counted.
 *
 * Locking follows the resolvers: the identifiers (old and new spellings)
 * first, then their owners exclusively in ascending id, looked up again
 * until no owner changed meanwhile.  Past some hundreds of changed values
 * the identifier locks become the global ingest lock (locks.c), and every
 * other writer waits until this transaction ends.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "engine.h"
#include "idtypes.h"
#include "locks.h"
#include "merge.h"
#include "message.h"
#include "normalize.h"
#include "profile.h"
#include "util.h"

/* One stored value whose normal form is not itself. */
typedef struct RenormChange
{
	int			type;			/* identifier type index */
	char	   *old;			/* as stored */
	char	   *new;			/* as normalized now */
	int			node;			/* its owner's node, -1 once the row is gone */
	int			group;
} RenormChange;

/* A normal form that one or more changed values share. */
typedef struct RenormGroup
{
	int			type;
	char	   *value;
	int			holder;			/* node of the profile storing it already, -1 */
	int			home;			/* node whose component keeps it */
	int			first;			/* its changes: changes[first .. first + n) */
	int			n;
	int			msg;			/* the message its merges log, -1 if none */
	int			stamp;
} RenormGroup;

/* A stored profile that owns one of the values, in a union-find. */
typedef struct RenormNode
{
	int64		profile_id;
	int			parent;
	int			next_member;	/* members of a component, a linked list */
	int			last_member;
	int		   *counts;			/* identifiers per type, as renormalized */
	int			total;
	int		   *groups;			/* groups it has rows in */
	int			ngroups;
} RenormNode;

typedef struct RenormState
{
	RenormChange *changes;
	int			nchanges;
	RenormGroup *groups;
	int			ngroups;
	RenormNode *nodes;
	int			nnodes;
	int			ntypes;
	int			stamp;
	CdpMessage *msgs;
	int			nmsgs;
	CdpMergeStep *steps;
	int			nsteps;
} RenormState;

static int
cmp_change(const void *a, const void *b)
{
	const RenormChange *x = a;
	const RenormChange *y = b;
	int			c;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	c = strcmp(x->new, y->new);
	return c != 0 ? c : strcmp(x->old, y->old);
}

/* Groups in the order a message's identifiers are taken: strongest first. */
static RenormGroup *sort_groups_base;

static int
cmp_group_priority(const void *a, const void *b)
{
	const RenormGroup *x = &sort_groups_base[*(const int *) a];
	const RenormGroup *y = &sort_groups_base[*(const int *) b];
	CdpIdentType *tx = cdp_ident_type_at(x->type);
	CdpIdentType *ty = cdp_ident_type_at(y->type);
	int			c;

	if (tx->priority != ty->priority)
		return tx->priority < ty->priority ? -1 : 1;
	c = strcmp(tx->name, ty->name);
	return c != 0 ? c : strcmp(x->value, y->value);
}

static int
find_root(RenormState *p, int n)
{
	while (p->nodes[n].parent != n)
	{
		p->nodes[n].parent = p->nodes[p->nodes[n].parent].parent;
		n = p->nodes[n].parent;
	}
	return n;
}

static int
node_of(int64 *ids, int n, int64 id)
{
	int64	   *hit = bsearch(&id, ids, n, sizeof(int64), cdp_cmp_int64);

	return hit ? (int) (hit - ids) : -1;
}

/*
 * Read every stored value and keep those whose normal form differs.
 * Counts what cannot be renamed (invalid or blocked now) as it goes.
 */
static void
scan_identities(RenormState *p, int64 *scanned, int64 *invalid, int64 *blocked)
{
	Portal		portal;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext,
												 "pg_cdp renormalize rows",
												 ALLOCSET_DEFAULT_SIZES);
	int			cap = 64;

	p->changes = palloc(sizeof(RenormChange) * cap);
	portal = SPI_cursor_open_with_args(NULL, "SELECT type, value FROM cdp.identities",
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		SPITupleTable *tt;
		uint64		nrows;

		SPI_cursor_fetch(portal, true, 10000);
		/* the type cache may run a query of its own while we go */
		tt = SPI_tuptable;
		nrows = SPI_processed;
		if (nrows == 0)
			break;
		for (uint64 r = 0; r < nrows; r++)
		{
			HeapTuple	tup = tt->vals[r];
			TupleDesc	desc = tt->tupdesc;
			MemoryContext old = MemoryContextSwitchTo(rowcxt);
			char	   *type = SPI_getvalue(tup, desc, 1);
			char	   *value = SPI_getvalue(tup, desc, 2);
			int			ti = cdp_ident_type_index(type);
			const char *why = NULL;
			char	   *norm;

			(*scanned)++;
			/* a type deleted from cdp.identifier_types has no normalizer left */
			norm = ti < 0 ? value : cdp_normalize_value(cdp_ident_type_at(ti), value, &why);
			MemoryContextSwitchTo(old);
			if (norm == NULL)
				(*invalid)++;
			else if (strcmp(norm, value) == 0)
				;
			else if (cdp_ident_blocked(cdp_ident_type_at(ti), norm))
				(*blocked)++;
			else
			{
				if (p->nchanges == cap)
				{
					cap *= 2;
					p->changes = repalloc_huge(p->changes, sizeof(RenormChange) * cap);
				}
				p->changes[p->nchanges].type = ti;
				p->changes[p->nchanges].old = pstrdup(value);
				p->changes[p->nchanges].new = pstrdup(norm);
				p->changes[p->nchanges].node = -1;
				p->nchanges++;
			}
			MemoryContextReset(rowcxt);
		}
		SPI_freetuptable(tt);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(rowcxt);
}

/* Sort the changes into groups, one per (type, normal form). */
static void
build_groups(RenormState *p)
{
	qsort(p->changes, p->nchanges, sizeof(RenormChange), cmp_change);
	p->groups = palloc(sizeof(RenormGroup) * Max(p->nchanges, 1));
	for (int i = 0; i < p->nchanges; i++)
	{
		RenormChange *c = &p->changes[i];
		RenormGroup *g = p->ngroups > 0 ? &p->groups[p->ngroups - 1] : NULL;

		if (g == NULL || g->type != c->type || strcmp(g->value, c->new) != 0)
		{
			g = &p->groups[p->ngroups++];
			g->type = c->type;
			g->value = c->new;
			g->holder = -1;
			g->home = -1;
			g->first = i;
			g->n = 0;
			g->msg = -1;
			g->stamp = 0;
		}
		g->n++;
		c->group = p->ngroups - 1;
	}
}

/*
 * Owners of the changed values and of their normal forms, as stored now:
 * owners[i] for changes[i], then owners[nchanges + g] for groups[g]; 0 when
 * there is no such row.
 */
static void
read_owners(RenormState *p, int64 *owners)
{
	static SPIPlanPtr plan = NULL;
	int			n = p->nchanges + p->ngroups;
	char	  **types = palloc(sizeof(char *) * n);
	char	  **values = palloc(sizeof(char *) * n);
	Datum		args[2];

	for (int i = 0; i < p->nchanges; i++)
	{
		types[i] = cdp_ident_type_at(p->changes[i].type)->name;
		values[i] = p->changes[i].old;
	}
	for (int g = 0; g < p->ngroups; g++)
	{
		types[p->nchanges + g] = cdp_ident_type_at(p->groups[g].type)->name;
		values[p->nchanges + g] = p->groups[g].value;
	}
	memset(owners, 0, sizeof(int64) * n);
	if (plan == NULL)
	{
		Oid			argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};

		plan = cdp_prepare("SELECT u.ord::int4, i.profile_id "
						   "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(type, value, ord) "
						   "JOIN cdp.identities i ON i.type = u.type AND i.value = u.value",
						   2, argtypes);
	}
	args[0] = cdp_text_array(types, n);
	args[1] = cdp_text_array(values, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			ord = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));

		owners[ord - 1] = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	}
	pfree(types);
	pfree(values);
}

/*
 * Lock the identifiers, then their owners, and return the owners (as
 * read_owners) once a look-up under the locks finds none that is not
 * locked yet.
 */
static int64 *
lock_and_read_owners(RenormState *p)
{
	int			n = p->nchanges + p->ngroups;
	int64	   *owners = palloc(sizeof(int64) * n);
	uint64	   *keys = palloc(sizeof(uint64) * n);
	int64	   *locked = palloc(sizeof(int64) * n);
	int			nlocked = 0;

	for (int i = 0; i < p->nchanges; i++)
		keys[i] = cdp_hash_key(cdp_ident_type_at(p->changes[i].type)->name, p->changes[i].old);
	for (int g = 0; g < p->ngroups; g++)
		keys[p->nchanges + g] = cdp_hash_key(cdp_ident_type_at(p->groups[g].type)->name,
											 p->groups[g].value);
	cdp_lock_keys(keys, n, NULL, CDP_LOCK_IDENTIFIER);

	for (int attempt = 0;; attempt++)
	{
		int64	   *fresh = palloc(sizeof(int64) * n);
		int			nfresh = 0;
		bool	   *excl;

		read_owners(p, owners);
		/* Under the global ingest lock no one else moves an identifier. */
		if (cdp_locks_escalated())
			break;
		for (int i = 0; i < n; i++)
			if (owners[i] != 0 && node_of(locked, nlocked, owners[i]) < 0)
				fresh[nfresh++] = owners[i];
		nfresh = cdp_sort_unique_int64(fresh, nfresh);
		if (nfresh == 0)
			break;
		if (attempt >= 8)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not renormalize identities: their profiles kept changing"),
					 errdetail("Concurrent merges moved the identities found %d times in a row.",
							   attempt + 1),
					 errhint("The transaction might succeed if retried.")));
		excl = palloc(sizeof(bool) * nfresh);
		for (int i = 0; i < nfresh; i++)
			excl[i] = true;
		cdp_lock_keys((uint64 *) fresh, nfresh, excl, CDP_LOCK_PROFILE);
		memcpy(locked + nlocked, fresh, sizeof(int64) * nfresh);
		nlocked = cdp_sort_unique_int64(locked, nlocked + nfresh);
		/* ... and look again: a row may have moved before its owner was locked */
	}
	return owners;
}

/*
 * Nodes for the owners, each with its identifier counts as they will be
 * once its own values are renamed (two of its values with one normal form
 * count once).
 */
static void
build_nodes(RenormState *p, int64 *owners)
{
	static SPIPlanPtr plan = NULL;
	int			n = p->nchanges + p->ngroups;
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	int			nids = 0;
	Datum		args[1];
	int		   *rows;

	for (int i = 0; i < n; i++)
		if (owners[i] != 0)
			ids[nids++] = owners[i];
	nids = cdp_sort_unique_int64(ids, nids);
	p->nnodes = nids;
	p->nodes = palloc0(sizeof(RenormNode) * Max(nids, 1));
	for (int k = 0; k < nids; k++)
	{
		RenormNode *nd = &p->nodes[k];

		nd->profile_id = ids[k];
		nd->parent = k;
		nd->next_member = -1;
		nd->last_member = k;
		nd->counts = palloc0(sizeof(int) * (p->ntypes + 1));
		nd->groups = palloc(sizeof(int) * 4);
	}
	for (int i = 0; i < p->nchanges; i++)
		p->changes[i].node = owners[i] ? node_of(ids, nids, owners[i]) : -1;
	for (int g = 0; g < p->ngroups; g++)
		p->groups[g].holder = owners[p->nchanges + g] ?
			node_of(ids, nids, owners[p->nchanges + g]) : -1;
	if (nids == 0)
		return;

	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};

		plan = cdp_prepare("SELECT profile_id, type, count(*)::int4 FROM cdp.identities "
						   "WHERE profile_id = ANY($1) GROUP BY 1, 2", 1, argtypes);
	}
	args[0] = cdp_int8_array(ids, nids);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int			ti = cdp_ident_type_index(SPI_getvalue(tup, desc, 2));
		int			cnt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		RenormNode *nd = &p->nodes[node_of(ids, nids, id)];

		if (ti >= 0 && ti < p->ntypes)
			nd->counts[ti] += cnt;
		nd->total += cnt;
	}

	/*
	 * Each node's rows in each group: all but one disappear, and the group
	 * joins the node's list.
	 */
	rows = palloc0(sizeof(int) * nids);
	for (int g = 0; g < p->ngroups; g++)
	{
		RenormGroup *gr = &p->groups[g];

		for (int k = -1; k < gr->n; k++)
		{
			int			x = k < 0 ? gr->holder : p->changes[gr->first + k].node;

			if (x >= 0)
				rows[x]++;
		}
		for (int k = -1; k < gr->n; k++)
		{
			int			x = k < 0 ? gr->holder : p->changes[gr->first + k].node;
			RenormNode *nd;

			if (x < 0 || rows[x] == 0)
				continue;
			nd = &p->nodes[x];
			nd->counts[gr->type] -= rows[x] - 1;
			nd->total -= rows[x] - 1;
			rows[x] = 0;
			if (nd->ngroups > 0 && (nd->ngroups & 3) == 0)
				nd->groups = repalloc(nd->groups, sizeof(int) * (nd->ngroups + 4));
			nd->groups[nd->ngroups++] = g;
		}
	}
	pfree(rows);
	pfree(ids);
}

/* Does group g have a row in the component rooted at root? */
static bool
group_in(RenormState *p, RenormGroup *g, int root)
{
	if (g->holder >= 0 && find_root(p, g->holder) == root)
		return true;
	for (int k = 0; k < g->n; k++)
	{
		int			x = p->changes[g->first + k].node;

		if (x >= 0 && find_root(p, x) == root)
			return true;
	}
	return false;
}

/*
 * May the components a and b become one?  shared[t] counts the groups of
 * type t with rows in both: one identifier each once renamed.  When not,
 * *limit is the type whose limit forbids it, or -1 for
 * cdp.max_identities_per_profile.
 */
static bool
may_union(RenormState *p, int a, int b, int *shared, int *limit)
{
	RenormNode *x = &p->nodes[a];
	RenormNode *y = &p->nodes[b];
	int			nshared = 0;

	memset(shared, 0, sizeof(int) * (p->ntypes + 1));
	p->stamp++;
	for (int m = b; m >= 0; m = p->nodes[m].next_member)
		for (int k = 0; k < p->nodes[m].ngroups; k++)
		{
			RenormGroup *g = &p->groups[p->nodes[m].groups[k]];

			if (g->stamp == p->stamp)
				continue;
			g->stamp = p->stamp;
			if (group_in(p, g, a))
			{
				shared[g->type]++;
				nshared++;
			}
		}
	*limit = -1;
	if (x->total + y->total - nshared > cdp_max_identities_per_profile)
		return false;
	for (int t = 0; t < p->ntypes; t++)
		if (x->counts[t] + y->counts[t] - shared[t] > cdp_ident_type_at(t)->max_per_profile)
		{
			*limit = t;
			return false;
		}
	return true;
}

/* Union two roots for group g; the older profile wins.  Returns the root. */
static int
union_roots(RenormState *p, int a, int b, int g, int *shared)
{
	int			w = p->nodes[a].profile_id < p->nodes[b].profile_id ? a : b;
	int			l = w == a ? b : a;
	RenormNode *nw = &p->nodes[w];
	RenormNode *nl = &p->nodes[l];
	RenormGroup *gr = &p->groups[g];
	CdpMergeStep *s;
	int			cnt = 0;

	if (gr->msg < 0)
	{
		/* its merges' message: the normal form, then the old spellings */
		CdpMessage *m;

		gr->msg = p->nmsgs++;
		m = &p->msgs[gr->msg];
		memset(m, 0, sizeof(CdpMessage));
		m->msgtype = "renormalize";
		m->node = -1;
		cdp_message_append_ident(m, gr->type, gr->value);
		for (int k = 0; k < gr->n; k++)
			if (p->changes[gr->first + k].node >= 0)
				cdp_message_append_ident(m, gr->type, p->changes[gr->first + k].old);
	}

	if (p->steps == NULL)
		p->steps = palloc(sizeof(CdpMergeStep) * 16);
	else if ((p->nsteps & 15) == 0)
		p->steps = repalloc(p->steps, sizeof(CdpMergeStep) * (p->nsteps + 16));
	s = &p->steps[p->nsteps++];
	memset(s, 0, sizeof(CdpMergeStep));
	s->winner = nw->profile_id;
	s->loser = nl->profile_id;
	s->msg = gr->msg;
	for (int m = l; m >= 0; m = p->nodes[m].next_member)
		cnt++;
	s->members = palloc(sizeof(int64) * cnt);
	for (int m = l; m >= 0; m = p->nodes[m].next_member)
		s->members[s->nmembers++] = p->nodes[m].profile_id;

	for (int t = 0; t < p->ntypes; t++)
		nw->counts[t] += nl->counts[t] - shared[t];
	nw->total += nl->total;
	for (int t = 0; t < p->ntypes; t++)
		nw->total -= shared[t];
	nl->parent = w;
	p->nodes[nw->last_member].next_member = l;
	nw->last_member = nl->last_member;
	return w;
}

/*
 * Plan the merges: each group, strongest type first, joins every owner's
 * component to the component of its home (the profile that stores the
 * normal form already, or else the oldest owner) while the limits allow.
 */
static void
plan_merges(RenormState *p)
{
	int		   *order = palloc(sizeof(int) * Max(p->ngroups, 1));
	int		   *shared = palloc(sizeof(int) * (p->ntypes + 1));

	p->msgs = palloc(sizeof(CdpMessage) * Max(p->ngroups, 1));
	for (int g = 0; g < p->ngroups; g++)
		order[g] = g;
	sort_groups_base = p->groups;
	qsort(order, p->ngroups, sizeof(int), cmp_group_priority);

	for (int o = 0; o < p->ngroups; o++)
	{
		int			g = order[o];
		RenormGroup *gr = &p->groups[g];

		gr->home = gr->holder;
		for (int k = 0; k < gr->n; k++)
		{
			int			x = p->changes[gr->first + k].node;

			if (gr->home < 0 || (x >= 0 && x < gr->home && gr->holder < 0))
				gr->home = x;
		}
		if (gr->home < 0)
			continue;			/* every row of it is gone */
		for (int k = 0; k < gr->n; k++)
		{
			int			x = p->changes[gr->first + k].node;
			int			h,
						r,
						limit;

			if (x < 0)
				continue;
			h = find_root(p, gr->home);
			r = find_root(p, x);
			if (r != h && may_union(p, h, r, shared, &limit))
				(void) union_roots(p, h, r, g, shared);
		}
		CHECK_FOR_INTERRUPTS();
	}
	pfree(order);
	pfree(shared);
}

/* The limit that keeps components a and b apart, in words. */
static char *
limit_text(RenormState *p, int a, int b, int *shared)
{
	int			limit;

	if (may_union(p, a, b, shared, &limit))
		return "an identifier limit";	/* not reached: they were kept apart */
	if (limit < 0)
		return psprintf("cdp.max_identities_per_profile (%d)", cdp_max_identities_per_profile);
	return psprintf("the limit of %d %s identifier(s) per profile",
					cdp_ident_type_at(limit)->max_per_profile, cdp_ident_type_at(limit)->name);
}

/*
 * Rename what joined its group's home and record what did not; returns the
 * number of values renamed, and sets *refused to the number of profiles
 * left apart from a home by a limit.
 */
static int64
apply_renames(RenormState *p, int64 *refused)
{
	static SPIPlanPtr rename_plan = NULL;
	static SPIPlanPtr issue_plan = NULL;
	int			n = Max(p->nchanges, 1);
	char	  **types = palloc(sizeof(char *) * n);
	char	  **olds = palloc(sizeof(char *) * n);
	char	  **news = palloc(sizeof(char *) * n);
	int64	   *owners = palloc(sizeof(int64) * n);
	int64	   *iprof = palloc(sizeof(int64) * n);
	char	  **itypes = palloc(sizeof(char *) * n);
	char	  **ivalues = palloc(sizeof(char *) * n);
	char	  **ireasons = palloc(sizeof(char *) * n);
	int		   *shared = palloc(sizeof(int) * (p->ntypes + 1));
	int			nren = 0;
	int			niss = 0;
	int64		deleted = 0;
	int64		put = 0;
	Datum		args[4];

	*refused = 0;
	for (int g = 0; g < p->ngroups; g++)
	{
		RenormGroup *gr = &p->groups[g];
		int			home;
		int			nkept = 0;
		int		   *kept;

		if (gr->home < 0)
			continue;
		home = find_root(p, gr->home);
		kept = palloc(sizeof(int) * gr->n);
		for (int k = 0; k < gr->n; k++)
		{
			RenormChange *c = &p->changes[gr->first + k];
			int			r;
			bool		seen = false;

			if (c->node < 0)
				continue;
			r = find_root(p, c->node);
			if (r == home)
			{
				types[nren] = cdp_ident_type_at(c->type)->name;
				olds[nren] = c->old;
				news[nren] = c->new;
				owners[nren++] = p->nodes[home].profile_id;
				continue;
			}
			iprof[niss] = p->nodes[r].profile_id;
			itypes[niss] = cdp_ident_type_at(c->type)->name;
			ivalues[niss] = c->old;
			ireasons[niss++] = psprintf("not renormalized to \"%s\": profile " INT64_FORMAT
										" has it, and merging profile " INT64_FORMAT " with it would exceed %s",
										c->new, p->nodes[home].profile_id, p->nodes[r].profile_id,
										limit_text(p, home, r, shared));
			for (int j = 0; j < nkept && !seen; j++)
				seen = kept[j] == r;
			if (!seen)
				kept[nkept++] = r;
		}
		*refused += nkept;
		pfree(kept);
	}

	if (nren > 0)
	{
		if (rename_plan == NULL)
		{
			Oid			argtypes[4] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID};

			/*
			 * One row per normal form, owned by the profile the old rows now
			 * belong to, and first seen when the earliest of them was.
			 */
			rename_plan = cdp_prepare("WITH g AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) "
									  "           AS g(type, old, new, owner)), "
									  "gone AS (DELETE FROM cdp.identities i USING g "
									  "         WHERE i.value = g.old AND i.type = g.type AND i.profile_id = g.owner "
									  "         RETURNING g.type, g.new, g.owner, i.first_seen_at), "
									  "put AS (INSERT INTO cdp.identities AS i (type, value, profile_id, first_seen_at) "
									  "        SELECT type, new, owner, min(first_seen_at) FROM gone "
									  "        GROUP BY type, new, owner "
									  "        ON CONFLICT (value, type) DO UPDATE "
									  "          SET first_seen_at = least(i.first_seen_at, excluded.first_seen_at) "
									  "          WHERE i.profile_id = excluded.profile_id "
									  "        RETURNING 1) "
									  "SELECT (SELECT count(*) FROM gone)::int8, (SELECT count(*) FROM put)::int8",
									  4, argtypes);
		}
		args[0] = cdp_text_array(types, nren);
		args[1] = cdp_text_array(olds, nren);
		args[2] = cdp_text_array(news, nren);
		args[3] = cdp_int8_array(owners, nren);
		cdp_spi_exec(rename_plan, args, SPI_OK_SELECT);
		{
			bool		isnull;

			deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			put = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
		{
			/* distinct normal forms renamed to: news[] is in group order */
			int64		forms = 0;

			for (int i = 0; i < nren; i++)
				if (i == 0 || strcmp(types[i], types[i - 1]) != 0 ||
					strcmp(news[i], news[i - 1]) != 0)
					forms++;
			if (deleted != nren || put != forms)
				elog(ERROR, "pg_cdp: renormalizing moved identities under the locks "
					 "(" INT64_FORMAT " of %d values removed, " INT64_FORMAT " of " INT64_FORMAT " stored)",
					 deleted, nren, put, forms);
		}
		cdp_mark_profiles_changed(owners, nren, "renormalize");
	}

	if (niss > 0)
	{
		if (issue_plan == NULL)
		{
			Oid			argtypes[4] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};

			issue_plan = cdp_prepare("INSERT INTO cdp.identifier_issues (profile_id, type, value, reason) "
									 "SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[])",
									 4, argtypes);
		}
		args[0] = cdp_int8_array(iprof, niss);
		args[1] = cdp_text_array(itypes, niss);
		args[2] = cdp_text_array(ivalues, niss);
		args[3] = cdp_text_array(ireasons, niss);
		cdp_spi_exec(issue_plan, args, SPI_OK_INSERT);
	}
	return nren;
}

/*
 * cdp.renormalize_identities() → jsonb
 *
 * Normalizes every stored identity again, renames the values whose normal
 * form changed and merges the profiles that now share one; returns what it
 * did.
 */
PG_FUNCTION_INFO_V1(cdp_renormalize_identities);
Datum
cdp_renormalize_identities(PG_FUNCTION_ARGS)
{
	RenormState p;
	int64		scanned = 0;
	int64		invalid = 0;
	int64		blocked = 0;
	int64		changed = 0;
	int64		refused = 0;
	int			merges;
	char	   *out;

	memset(&p, 0, sizeof(p));
	SPI_connect();
	scan_identities(&p, &scanned, &invalid, &blocked);
	if (p.nchanges > 0)
	{
		int64	   *owners;

		build_groups(&p);
		owners = lock_and_read_owners(&p);
		/* every type a change names is in the cache by now; its slots stay */
		p.ntypes = cdp_ident_type_count();
		build_nodes(&p, owners);
		plan_merges(&p);
		/* merges first, so each loser's snapshot holds its values as stored */
		if (p.nsteps > 0)
			cdp_execute_merges(p.msgs, p.steps, p.nsteps);
		changed = apply_renames(&p, &refused);
	}
	merges = p.nsteps;
	SPI_finish();

	out = psprintf("{\"scanned\": " INT64_FORMAT ", \"values_changed\": " INT64_FORMAT
				   ", \"merges\": %d, \"merges_refused\": " INT64_FORMAT
				   ", \"left_invalid\": " INT64_FORMAT ", \"left_blocked\": " INT64_FORMAT "}",
				   scanned, changed, merges, refused, invalid, blocked);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out)));
}
