/*-------------------------------------------------------------------------
 *
 * stitch.c
 *	  cdp.stitch: the identity engine over a table of identifier groups,
 *	  in memory, writing nothing.
 *
 * Used for previews of identity rules, audits of an import before it is
 * loaded, and the identity benchmark, so it is built for graphs of
 * millions of identifiers: rows come straight from the executor through a
 * DestReceiver, every (type, value) is interned once into a compact
 * open-addressing table, the table's memory accesses are issued a batch
 * ahead so that cache misses overlap, and groups sorted by id are
 * resolved as they are read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "engine.h"
#include "idtypes.h"
#include "normalize.h"
#include "util.h"

/*
 * The stitch reader interns every (type, value) once, as it reads, and
 * keeps groups as lists of interned identifiers; the engine then replays
 * them one at a time through a reused message.  Rows reach it straight
 * from the executor through a DestReceiver, so none is copied into an SPI
 * tuple table, and everything is kept compact: on a large graph the time
 * goes into touching memory.
 */
#define STITCH_BLOCK 262144		/* entries and rows are allocated by blocks */
#define STITCH_PROBE PG_UINT32_MAX	/* the key being looked up */

typedef struct StitchEntry
{
	IdentEntry	ent;			/* key.b: the interned value */
	uint32		len;
	int			type;
	uint32		hash;
} StitchEntry;

typedef struct StitchRow
{
	uint32		entry;
	int32		next;			/* next row of the group, -1 at the end */
} StitchRow;

typedef struct StitchGroupRows
{
	int32		first;
	int32		last;
} StitchGroupRows;

typedef struct StitchState StitchState;

/* Slots hold only an entry number: 12 bytes, compared through the entry. */
typedef struct StitchSlot
{
	uint32		idx;
	uint32		hash;
	char		status;
} StitchSlot;

static inline bool stitch_key_equal(StitchState *st, uint32 a, uint32 b);
static inline uint32 stitch_key_hash(StitchState *st, uint32 k);

#define SH_PREFIX stitch_idents
#define SH_USE_NONDEFAULT_ALLOCATOR
#define SH_ELEMENT_TYPE StitchSlot
#define SH_KEY_TYPE uint32
#define SH_KEY idx
#define SH_HASH_KEY(tb, k) stitch_key_hash((StitchState *) (tb)->private_data, k)
#define SH_EQUAL(tb, a, b) stitch_key_equal((StitchState *) (tb)->private_data, a, b)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static inline void *
stitch_idents_allocate(stitch_idents_hash *tb, Size size)
{
	return cdp_huge_alloc(tb->ctx, size, true);
}

static inline void
stitch_idents_free(stitch_idents_hash *tb, void *p)
{
	cdp_huge_free(p);
}

typedef struct StitchGroup
{
	int64		gid;
	int32		group;
	char		status;
} StitchGroup;

#define SH_PREFIX stitch_groups
#define SH_ELEMENT_TYPE StitchGroup
#define SH_KEY_TYPE int64
#define SH_KEY gid
#define SH_HASH_KEY(tb, k) hash_combine(murmurhash32((uint32) (k)), \
										murmurhash32((uint32) ((uint64) (k) >> 32)))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* Rows wait in batches so that their memory accesses can overlap. */
#define STITCH_BATCH 128

typedef struct StitchPending
{
	int64		gid;
	const char *value;
	uint32		len;
	uint32		hash;
	int			type;
	uint32		entry;			/* once interned */
} StitchPending;

struct StitchState
{
	DestReceiver pub;
	MemoryContext cxt;			/* where everything read lives */
	MemoryContext rowcxt;		/* per row: detoasting, normalization */
	const char *relname;
	bool		normalize;
	int			ntypes;
	int		   *type_len;
	int			last_type;		/* rows often repeat the previous type */
	stitch_idents_hash *idents;
	stitch_groups_hash *groups;	/* NULL while group ids only ascend */
	int64		max_gid;
	StitchEntry **entries;		/* blocks, in first-seen order */
	uint32		nentries;
	uint32		maxlen;			/* longest value */
	StitchRow **rows;			/* blocks */
	uint32		nrows;
	StitchGroupRows *grows;		/* groups in first-seen order */
	int64	   *gids;			/* their ids */
	int32		ngroups;
	int32		maxgroups;
	int64		last_gid;
	int32		last_group;
	char	   *arena;			/* interned values */
	Size		arena_left;
	StitchPending pending[STITCH_BATCH];
	int			npending;
	/* streaming: groups planned as soon as they are complete */
	bool		stream;
	bool		unsorted;		/* a group came back: stream abandoned */
	Engine	   *e;
	CdpMessage	m;				/* the group being read */
	int32		m_group;
	/* the probe: what is being looked up */
	const char *probe_value;
	uint32		probe_len;
	int			probe_type;
	uint32		probe_hash;
};

static inline StitchEntry *
stitch_entry(StitchState *st, uint32 i)
{
	return &st->entries[i / STITCH_BLOCK][i % STITCH_BLOCK];
}

static inline StitchRow *
stitch_row(StitchState *st, uint32 i)
{
	return &st->rows[i / STITCH_BLOCK][i % STITCH_BLOCK];
}

static inline bool
stitch_key_equal(StitchState *st, uint32 a, uint32 b)
{
	StitchEntry *y = stitch_entry(st, a == STITCH_PROBE ? b : a);

	return y->type == st->probe_type && y->len == st->probe_len &&
		memcmp(y->ent.key.b, st->probe_value, y->len) == 0;
}

static inline uint32
stitch_key_hash(StitchState *st, uint32 k)
{
	return k == STITCH_PROBE ? st->probe_hash : stitch_entry(st, k)->hash;
}

/* Room for one more in a block array: a new block every STITCH_BLOCK. */
static void *
stitch_grow(StitchState *st, void ***blocks, uint32 n, Size elemsize)
{
	if (n % STITCH_BLOCK == 0)
	{
		uint32		nb = n / STITCH_BLOCK;

		if (nb % 64 == 0)
			*blocks = *blocks ? repalloc(*blocks, sizeof(void *) * (nb + 64)) :
				MemoryContextAlloc(st->cxt, sizeof(void *) * 64);
		(*blocks)[nb] = cdp_huge_alloc(st->cxt, elemsize * STITCH_BLOCK, false);
	}
	return (char *) (*blocks)[n / STITCH_BLOCK] + (n % STITCH_BLOCK) * elemsize;
}

static char *
stitch_copy(StitchState *st, const char *value, uint32 len)
{
	char	   *p;

	if (st->arena_left < len + 1)
	{
		st->arena_left = Max(len + 1, 4 * 1024 * 1024);
		st->arena = cdp_huge_alloc(st->cxt, st->arena_left, false);
	}
	p = st->arena;
	memcpy(p, value, len);
	p[len] = '\0';
	st->arena += len + 1;
	st->arena_left -= len + 1;
	return p;
}

static int
stitch_type_index(StitchState *st, text *t, int64 gid)
{
	const char *name = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	int			last = st->last_type;

	if (last < st->ntypes && st->type_len[last] == len &&
		memcmp(cdp_ident_type_at(last)->name, name, len) == 0)
		return last;
	for (int i = 0; i < st->ntypes; i++)
		if (st->type_len[i] == len && memcmp(cdp_ident_type_at(i)->name, name, len) == 0)
			return st->last_type = i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown identifier type \"%s\"", text_to_cstring(t)),
			 errdetail("Group " INT64_FORMAT " of %s names it.", gid, st->relname),
			 errhint("Identifier types are the rows of cdp.identifier_types.")));
	return -1;					/* keep compiler quiet */
}

#ifdef __GNUC__
#define stitch_prefetch(p) __builtin_prefetch(p)
#else
#define stitch_prefetch(p) ((void) 0)
#endif

/* The interned entry of a pending row, created when new. */
static uint32
stitch_intern(StitchState *st, StitchPending *p)
{
	StitchSlot *sl;
	bool		found;
	StitchEntry *se;

	st->probe_value = p->value;
	st->probe_len = p->len;
	st->probe_type = p->type;
	st->probe_hash = p->hash;
	sl = stitch_idents_insert_hash(st->idents, STITCH_PROBE, p->hash, &found);
	if (found)
		return sl->idx;

	se = stitch_grow(st, (void ***) &st->entries, st->nentries, sizeof(StitchEntry));
	se->ent.key.a = cdp_ident_type_at(p->type)->name;
	se->ent.key.b = stitch_copy(st, p->value, p->len);
	se->ent.profile_id = 0;
	se->ent.node = -1;
	se->ent.queried = true;
	se->len = p->len;
	se->type = p->type;
	se->hash = p->hash;
	st->maxlen = Max(st->maxlen, p->len);
	sl->idx = st->nentries;
	return st->nentries++;
}

/*
 * The group of a row.  While group ids only ascend (input sorted by group,
 * the usual case) a new id is a new group and no table is needed; the
 * first id that goes back builds it.
 */
static int32
stitch_group(StitchState *st, int64 gid, bool *isnew)
{
	bool		found = false;
	StitchGroup *sg = NULL;
	int32		g;

	*isnew = false;
	if (st->ngroups > 0 && gid == st->last_gid)
		return st->last_group;
	if (st->groups == NULL && st->ngroups > 0 && gid <= st->max_gid)
	{
		st->groups = stitch_groups_create(st->cxt, st->ngroups * 2, NULL);
		for (int32 i = 0; i < st->ngroups; i++)
			stitch_groups_insert(st->groups, st->gids[i], &found)->group = i;
	}
	if (st->groups != NULL)
		sg = stitch_groups_insert(st->groups, gid, &found);
	if (found)
		g = sg->group;
	else
	{
		if (st->ngroups >= st->maxgroups)
		{
			st->maxgroups *= 2;
			if (!st->stream)
				st->grows = cdp_huge_grow(st->cxt, st->grows,
										  sizeof(StitchGroupRows) * st->ngroups,
										  sizeof(StitchGroupRows) * st->maxgroups);
			st->gids = cdp_huge_grow(st->cxt, st->gids, sizeof(int64) * st->ngroups,
									 sizeof(int64) * st->maxgroups);
		}
		g = st->ngroups++;
		if (!st->stream)
		{
			st->grows[g].first = -1;
		}
		st->gids[g] = gid;
		*isnew = true;
		if (sg)
			sg->group = g;
		st->max_gid = Max(st->max_gid, gid);
	}
	st->last_gid = gid;
	st->last_group = g;
	return g;
}

/* Fill a reused message with an interned identifier. */
static void
stitch_append(CdpMessage *m, StitchEntry *se)
{
	cdp_message_append_ident(m, se->type, (char *) se->ent.key.b);
	m->idents[m->nidents - 1].entry = &se->ent;
}

/* Plan the group being read, if any, and start over. */
static void
stitch_stream_plan(StitchState *st)
{
	if (st->m_group >= 0 && st->m.nidents > 0)
		cdp_engine_plan_message(st->e, &st->m, st->m_group);
	st->m.nidents = 0;
	st->m.nissues = 0;
	st->m.issues = NULL;
}

/*
 * Streaming: a group is complete when the next one starts, its entries
 * still in cache.  A group that comes back after another means the input
 * is not sorted by group; the caller then reads it all again, buffered.
 */
static void
stitch_stream_row(StitchState *st, int32 gi, bool isnew, uint32 entry)
{
	if (gi != st->m_group)
	{
		if (!isnew)
		{
			st->unsorted = true;
			return;
		}
		stitch_stream_plan(st);
		st->m_group = gi;
	}
	stitch_append(&st->m, stitch_entry(st, entry));
}

/*
 * Intern the pending rows.  A probe of a large table misses the cache
 * twice (its slot, then the entry that confirms it); issuing the batch's
 * accesses ahead lets those misses overlap instead of queueing.
 */
static void
stitch_flush(StitchState *st)
{
	stitch_idents_hash *tb = st->idents;
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	for (int i = 0; i < st->npending; i++)
	{
		StitchPending *p = &st->pending[i];

		p->hash = hash_combine(hash_bytes((const unsigned char *) p->value, p->len),
							   murmurhash32((uint32) p->type));
		stitch_prefetch(&tb->data[p->hash & tb->sizemask]);
	}
	for (int i = 0; i < st->npending; i++)
	{
		StitchSlot *sl = &tb->data[st->pending[i].hash & tb->sizemask];

		if (sl->status == stitch_idents_SH_IN_USE && sl->hash == st->pending[i].hash)
			stitch_prefetch(stitch_entry(st, sl->idx));
	}
	for (int i = 0; i < st->npending; i++)
	{
		StitchSlot *sl = &tb->data[st->pending[i].hash & tb->sizemask];

		if (sl->status == stitch_idents_SH_IN_USE && sl->hash == st->pending[i].hash)
			stitch_prefetch(stitch_entry(st, sl->idx)->ent.key.b);
	}
	/*
	 * Intern, then ask for the union-find nodes the engine visits next, and
	 * their parents (the roots, mostly): misses again, overlapped the same
	 * way.
	 */
	for (int i = 0; i < st->npending; i++)
	{
		int			node;

		st->pending[i].entry = stitch_intern(st, &st->pending[i]);
		node = stitch_entry(st, st->pending[i].entry)->ent.node;
		if (node >= 0)
			stitch_prefetch(&st->e->nodes[node]);
	}
	for (int i = 0; i < st->npending; i++)
	{
		int			node = stitch_entry(st, st->pending[i].entry)->ent.node;

		if (node >= 0)
			stitch_prefetch(&st->e->nodes[st->e->nodes[node].parent]);
	}
	for (int i = 0; i < st->npending && !st->unsorted; i++)
	{
		StitchPending *p = &st->pending[i];
		uint32		entry = p->entry;
		bool		isnew;
		int32		gi = stitch_group(st, p->gid, &isnew);	/* may move grows */

		if (st->stream)
			stitch_stream_row(st, gi, isnew, entry);
		else
		{
			StitchGroupRows *g = &st->grows[gi];
			StitchRow  *row = stitch_grow(st, (void ***) &st->rows, st->nrows, sizeof(StitchRow));

			row->entry = entry;
			row->next = -1;
			if (g->first < 0)
				g->first = st->nrows;
			else
				stitch_row(st, g->last)->next = st->nrows;
			g->last = st->nrows;
		}
		st->nrows++;
	}
	st->npending = 0;
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->rowcxt);
	CHECK_FOR_INTERRUPTS();
}

static bool
stitch_receive(TupleTableSlot *slot, DestReceiver *self)
{
	StitchState *st = (StitchState *) self;
	StitchPending *p = &st->pending[st->npending];
	MemoryContext old;
	text	   *vt;

	slot_getallattrs(slot);
	if (slot->tts_isnull[0] || slot->tts_isnull[1] || slot->tts_isnull[2])
		return true;
	old = MemoryContextSwitchTo(st->rowcxt);
	p->gid = DatumGetInt64(slot->tts_values[0]);
	p->type = stitch_type_index(st, DatumGetTextPP(slot->tts_values[1]), p->gid);
	vt = DatumGetTextPP(slot->tts_values[2]);
	if (st->normalize)
	{
		CdpIdentType *t = cdp_ident_type_at(p->type);
		const char *why;
		char	   *v = cdp_normalize_value(t, text_to_cstring(vt), &why);

		MemoryContextSwitchTo(old);
		if (v == NULL || cdp_ident_blocked(t, v))
			return true;
		p->value = v;
		p->len = strlen(v);
	}
	else
	{
		/* The slot's datum lasts only until the next row. */
		p->len = VARSIZE_ANY_EXHDR(vt);
		p->value = memcpy(palloc(p->len), VARDATA_ANY(vt), p->len);
		MemoryContextSwitchTo(old);
	}
	if (++st->npending == STITCH_BATCH)
		stitch_flush(st);
	return !st->unsorted;		/* false stops the scan */
}

static void
stitch_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
stitch_noop(DestReceiver *self)
{
}

static void
stitch_shutdown(DestReceiver *self)
{
	stitch_flush((StitchState *) self);
}

/* Replay every group, in the order first read, through one reused message. */
static void
stitch_plan(StitchState *st, Engine *e)
{
	CdpMessage	m;

	memset(&m, 0, sizeof(m));
	for (int32 gi = 0; gi < st->ngroups; gi++)
	{
		StitchGroupRows *g = &st->grows[gi];

		if ((gi & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
		/* Entries of a group ahead, and the nodes of a nearer one. */
		if (gi + 16 < st->ngroups)
			for (int32 r = st->grows[gi + 16].first; r >= 0; r = stitch_row(st, r)->next)
				stitch_prefetch(stitch_entry(st, stitch_row(st, r)->entry));
		if (gi + 8 < st->ngroups)
			for (int32 r = st->grows[gi + 8].first; r >= 0; r = stitch_row(st, r)->next)
			{
				int			node = stitch_entry(st, stitch_row(st, r)->entry)->ent.node;

				if (node >= 0)
					stitch_prefetch(&e->nodes[node]);
			}
		m.nidents = 0;
		m.nissues = 0;
		m.issues = NULL;
		for (int32 r = g->first; r >= 0; r = stitch_row(st, r)->next)
			stitch_append(&m, stitch_entry(st, stitch_row(st, r)->entry));
		cdp_engine_plan_message(e, &m, gi);
	}
}

/*
 * One read of the groups into *st (set up but for the read itself) and
 * the engine's replay.  False when streaming found the input unsorted.
 */
static bool
stitch_read(StitchState *st, Engine *e, float4 rows, bool stream)
{
	SPIExecuteOptions opts;

	memset(e, 0, sizeof(Engine));
	e->ntypes = st->ntypes;
	st->e = e;
	st->stream = stream;
	st->m_group = -1;
	st->cxt = CurrentMemoryContext;
	st->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_cdp stitch row",
									   ALLOCSET_SMALL_SIZES);
	/* Sized from the planner's row estimate: growing means rehashing. */
	st->idents = stitch_idents_create(st->cxt, (uint32) (rows / 2), st);
	st->maxgroups = (int32) (rows / 2);
	if (!stream)
		st->grows = cdp_huge_alloc(st->cxt, sizeof(StitchGroupRows) * st->maxgroups, false);
	st->gids = cdp_huge_alloc(st->cxt, sizeof(int64) * st->maxgroups, false);

	memset(&opts, 0, sizeof(opts));
	opts.read_only = true;
	opts.dest = (DestReceiver *) st;
	SPI_execute_extended(psprintf("SELECT group_id::int8, type::text, value::text FROM %s",
								  st->relname), &opts);
	stitch_flush(st);
	if (st->unsorted)
		return false;
	if (stream)
		stitch_stream_plan(st);
	else
		stitch_plan(st, e);
	return true;
}

/*
 * The result goes to a temporary file past STITCH_OUTPUT_KB (or work_mem,
 * when lower).  The graph itself is in memory by then, a hundred bytes or
 * more per identifier; keeping the result in memory as well would double
 * the backend's peak for a set read once, in order.  It is also faster:
 * millions of tuples in fresh memory cost a page fault per 4 kB, which in
 * a virtual machine is dearer than writing them through the page cache
 * (measured: 0.41 s in memory against 0.08 s spilled, for 800k rows).
 */
#define STITCH_OUTPUT_KB 4096

static void
stitch_bound_output(ReturnSetInfo *rsinfo)
{
	MemoryContext old;

	if (work_mem <= STITCH_OUTPUT_KB)
		return;
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tuplestore_end(rsinfo->setResult);
	rsinfo->setResult =
		tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
							  false, STITCH_OUTPUT_KB);
	MemoryContextSwitchTo(old);
}

/*
 * cdp.stitch(groups regclass, normalize_values boolean) → (type, value, component)
 *
 * Resolves an identifier graph in memory with the engine's own rules
 * (priorities, per-type limits, cdp.max_identities_per_profile, and with
 * normalize also normalization and blocked values) without touching
 * cdp.identities: groups has one row per identifier, (group_id, type,
 * value), a group being what one message carries.  For previews of
 * identity rules, audits of an import before loading it, and the identity
 * benchmark.  Groups are replayed in the order they are first read; input
 * whose groups come together (sorted by group) is resolved as it is read,
 * other input is read a second time and kept whole.  Runs with the
 * caller's rights.
 */
PG_FUNCTION_INFO_V1(cdp_stitch);
Datum
cdp_stitch(PG_FUNCTION_ARGS)
{
	Oid			relid;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Engine		e;
	StitchState base;
	StitchState st;
	Datum	   *type_names;
	text	   *vbuf;
	float4		rows = 0;
	HeapTuple	tup;
	MemoryContext pass;
	bool		sorted;
	instr_time	t0,
				t1,
				t2;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("groups must not be null"),
				 errhint("Pass a table or view with columns group_id, type and value.")));
	relid = PG_GETARG_OID(0);
	INSTR_TIME_SET_CURRENT(t0);
	InitMaterializedSRF(fcinfo, 0);
	stitch_bound_output(rsinfo);
	SPI_connect();
	memset(&base, 0, sizeof(base));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("normalize_values must not be null"),
				 errhint("Pass true to normalize values as ingest does, false to take them as stored.")));
	base.normalize = PG_GETARG_BOOL(1);
	base.relname = DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(relid)));
	base.ntypes = cdp_ident_type_count();
	base.type_len = palloc(sizeof(int) * Max(base.ntypes, 1));
	type_names = palloc(sizeof(Datum) * Max(base.ntypes, 1));
	for (int i = 0; i < base.ntypes; i++)
	{
		base.type_len[i] = strlen(cdp_ident_type_at(i)->name);
		type_names[i] = CStringGetTextDatum(cdp_ident_type_at(i)->name);
	}
	base.pub.receiveSlot = stitch_receive;
	base.pub.rStartup = stitch_startup;
	base.pub.rShutdown = stitch_shutdown;
	base.pub.rDestroy = stitch_noop;
	base.pub.mydest = DestNone;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (HeapTupleIsValid(tup))
	{
		rows = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
		ReleaseSysCache(tup);
	}
	rows = Min(Max(rows, 65536), 1 << 28);

	pass = AllocSetContextCreate(CurrentMemoryContext, "pg_cdp stitch", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(pass);
	st = base;
	sorted = stitch_read(&st, &e, rows, true);
	if (!sorted)
	{
		MemoryContextSwitchTo(MemoryContextGetParent(pass));
		MemoryContextReset(pass);
		MemoryContextSwitchTo(pass);
		st = base;
		stitch_read(&st, &e, rows, false);
	}
	INSTR_TIME_SET_CURRENT(t1);

	/*
	 * Every node straight under its root, in one pass: a node's parent has
	 * a lower number (the older node wins a union), so it is final by then,
	 * and the output below needs one lookup per identifier, not a chain.
	 */
	for (int n = 0; n < e.nnodes; n++)
	{
		if (n + 16 < e.nnodes)
			stitch_prefetch(&e.nodes[e.nodes[n + 16].parent]);
		e.nodes[n].parent = cdp_engine_find_root(&e, n);
	}

	/* Each identifier with its component (identifiers left out have none). */
	vbuf = palloc(VARHDRSZ + st.maxlen);
	for (uint32 i = 0; i < st.nentries; i++)
	{
		StitchEntry *se = stitch_entry(&st, i);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		if ((i & 65535) == 0)
			CHECK_FOR_INTERRUPTS();
		if (i + 16 < st.nentries && stitch_entry(&st, i + 16)->ent.node >= 0)
			stitch_prefetch(&e.nodes[stitch_entry(&st, i + 16)->ent.node]);
		values[0] = type_names[se->type];
		SET_VARSIZE(vbuf, VARHDRSZ + se->len);
		memcpy(VARDATA(vbuf), se->ent.key.b, se->len);
		values[1] = PointerGetDatum(vbuf);
		if (se->ent.node >= 0)
			values[2] = Int64GetDatum((int64) e.nodes[se->ent.node].parent + 1);
		else
			nulls[2] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	INSTR_TIME_SET_CURRENT(t2);
	INSTR_TIME_SUBTRACT(t2, t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	elog(DEBUG1, "cdp.stitch: %u rows, %d groups, %u identifiers, %s; read and resolved in %.3f s, output %.3f s",
		 st.nrows, st.ngroups, st.nentries,
		 sorted ? "groups sorted (resolved while read)" : "groups unsorted (read twice)",
		 INSTR_TIME_GET_DOUBLE(t1), INSTR_TIME_GET_DOUBLE(t2));
	SPI_finish();
	return (Datum) 0;
}
