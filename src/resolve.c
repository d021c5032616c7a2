/*-------------------------------------------------------------------------
 *
 * resolve.c
 *	  The resolver: a batch of messages to profiles, through the identity
 *	  engine (engine.c) and cdp.identities.
 *
 * One call resolves a whole batch (a single cdp.track is a batch of one):
 *
 *	1. duplicates by message id are found, inside the batch and in
 *	   cdp.message_ids;
 *	2. every identifier of the batch is locked (advisory, sorted), then
 *	   looked up in cdp.identities with one statement;
 *	3. the profiles found are locked in ascending id, exclusively when a
 *	   message may change them (new identifier, or several profiles to
 *	   merge), in share mode otherwise; a profile that a concurrent merge
 *	   retired meanwhile sends its identifiers back to step 2;
 *	4. the messages are replayed in order over an in-memory union-find of
 *	   profiles, honouring per-type limits: each message starts from its
 *	   highest-priority identifier and absorbs the others only while no
 *	   limit (max_per_profile, cdp.max_identities_per_profile) is broken;
 *	5. the outcome is written set-based: new profiles, merges (merge.c),
 *	   new identities and identifier issues, a statement each.
 *
 * cdp.identities and cdp.identifier_issues are registered here as
 * per-profile tables.
 *
 * The merge winner is the older profile (lowest id).  Profiles created
 * inside the batch are younger than every stored one and are only
 * materialized if they survive, so the log records merges of stored
 * profiles only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "engine.h"
#include "idtypes.h"
#include "locks.h"
#include "merge.h"
#include "registry.h"
#include "resolve.h"
#include "status.h"
#include "util.h"

static void lookup_identities(Engine *e, bool only_unqueried);
static void lock_profiles(Engine *e);
static void load_counts(Engine *e);
static void materialize(Engine *e, int *dup_of);

static const CdpProfileTable identity_tables[] = {
	{
		/* an unmerge gives back the identifiers the loser had at merge time */
		.name = "identities",
		.relation = "cdp.identities",
		.order = 100,
		.on_merge = CDP_ROWS_BY_PROFILE_ID,
		.on_unmerge = CDP_ROWS_SQL,
		.unmerge_sql = "UPDATE cdp.identities i SET profile_id = m.loser_id "
		"FROM cdp.merges m, jsonb_array_elements(m.loser_identities) x "
		"WHERE m.merge_id = $1 AND i.profile_id = m.winner_id "
		"  AND i.type = x->>'type' AND i.value = x->>'value'",
		.on_forget = CDP_ROWS_BY_PROFILE_ID,
	},
	{
		/* issues stay with the winner; erasure also finds them by value */
		.name = "identifier_issues",
		.relation = "cdp.identifier_issues",
		.order = 300,
		.on_merge = CDP_ROWS_BY_PROFILE_ID,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_SQL,
		.forget_sql = "DELETE FROM cdp.identifier_issues WHERE profile_id = ANY($1) OR value = ANY($2)",
	},
};

void
cdp_resolve_init(void)
{
	for (int i = 0; i < lengthof(identity_tables); i++)
		cdp_register_profile_table(&identity_tables[i]);
}

/*
 * Duplicates by message id: a later copy inside the batch points at the
 * first one (profile filled in after resolution); a stored one already has
 * its profile.
 */
static int *
find_duplicates(Engine *e)
{
	HTAB	   *seen;
	int		   *dup_of = palloc(sizeof(int) * Max(e->nmsgs, 1));
	PairKey   **keys = palloc(sizeof(PairKey *) * Max(e->nmsgs, 1));
	int			nids = 0;
	static SPIPlanPtr plan = NULL;

	typedef struct
	{
		PairKey		key;		/* (source, message id) */
		int			first;
	}			SeenEntry;

	seen = cdp_pair_table("pg_cdp message ids", e->nmsgs, sizeof(SeenEntry));

	for (int i = 0; i < e->nmsgs; i++)
	{
		CdpMessage *m = &e->msgs[i];
		SeenEntry  *s;
		bool		found;
		PairKey		key;

		dup_of[i] = -1;
		if (m->err.sqlerrcode || m->message_id == NULL)
			continue;
		key.a = m->source ? m->source : "";
		key.b = m->message_id;
		s = hash_search(seen, &key, HASH_ENTER, &found);
		if (found)
		{
			m->duplicate = true;
			dup_of[i] = s->first;
		}
		else
		{
			s->first = i;
			keys[nids++] = &s->key;
		}
	}

	if (nids > 0)
	{
		char	  **ids = palloc(sizeof(char *) * nids);
		char	  **srcs = palloc(sizeof(char *) * nids);
		Datum		values[2];

		cdp_sort_pairs(keys, nids);
		for (int i = 0; i < nids; i++)
		{
			srcs[i] = (char *) keys[i]->a;
			ids[i] = (char *) keys[i]->b;
		}
		if (plan == NULL)
		{
			Oid			argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};

			plan = cdp_prepare("SELECT u.ord::int4, d.profile_id "
							   "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY "
							   "  AS u(source, message_id, ord) "
							   "JOIN cdp.message_ids d ON d.source = u.source "
							   "  AND d.message_id = u.message_id", 2, argtypes);
		}
		values[0] = cdp_text_array(srcs, nids);
		values[1] = cdp_text_array(ids, nids);
		cdp_spi_exec(plan, values, SPI_OK_SELECT);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int			ord = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			SeenEntry  *s = (SeenEntry *) keys[ord - 1];
			CdpMessage *m = &e->msgs[s->first];

			m->duplicate = true;
			m->profile_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		}
	}
	return dup_of;
}

/*
 * Query cdp.identities for the identifiers of active messages (all of them,
 * or only those not asked yet).
 *
 * The keys go in key order (cmp_pair), and rows come back by ordinal, so no
 * value is converted back to a string and hashed again to find its entry.
 */
static void
lookup_identities(Engine *e, bool only_unqueried)
{
	static SPIPlanPtr plan = NULL;
	HASH_SEQ_STATUS seq;
	IdentEntry *ent;
	IdentEntry **ents;
	char	  **types;
	char	  **values;
	int			n = 0;
	long		total = hash_get_num_entries(e->idents);
	Datum		args[2];

	ents = palloc(sizeof(IdentEntry *) * Max(total, 1));
	hash_seq_init(&seq, e->idents);
	while ((ent = hash_seq_search(&seq)) != NULL)
	{
		if (only_unqueried && ent->queried)
			continue;
		ent->queried = true;
		ent->profile_id = 0;
		ents[n++] = ent;
	}
	if (n == 0)
		return;
	/* an entry starts with its key */
	StaticAssertStmt(offsetof(IdentEntry, key) == 0, "IdentEntry must start with its key");
	cdp_sort_pairs((PairKey **) ents, n);
	types = palloc(sizeof(char *) * n);
	values = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		types[i] = (char *) ents[i]->key.a;
		values[i] = (char *) ents[i]->key.b;
	}

	if (plan == NULL)
	{
		Oid			argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};

		/* generic plan on purpose: index probes, whatever the batch size */
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

		ents[ord - 1]->profile_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	}
}

/* Decide what type an alias previousId is, now that we know what exists. */
static void
settle_alias_types(Engine *e)
{
	int			user_id = cdp_ident_type_index("user_id");
	int			anon = cdp_ident_type_index("anonymous_id");

	for (int i = 0; i < e->nmsgs; i++)
	{
		CdpMessage *m = &e->msgs[i];

		if (!cdp_msg_active(m))
			continue;
		for (int j = 0; j < m->nidents; j++)
		{
			CdpIdent   *id = &m->idents[j];
			IdentEntry *u;

			if (!id->alias_previous)
				continue;
			u = cdp_engine_ident(e, "user_id", id->value, false);
			id->type = (u && u->profile_id != 0) ? user_id : anon;
			id->entry = cdp_engine_ident(e, cdp_ident_type_name(id), id->value, false);
		}
	}
}

/*
 * Lock the profiles the batch touches, in ascending id.  A profile that
 * vanished before we got its lock was merged away: its identifiers are
 * looked up again and the new owners locked in turn.
 */
static void
lock_profiles(Engine *e)
{
	for (int attempt = 0;; attempt++)
	{
		int64	   *ids = palloc(sizeof(int64) * (hash_get_num_entries(e->profiles) + e->nmsgs * 4 + 1));
		uint64	   *keys;
		bool	   *excl;
		int			n = 0;
		int			nmissing = 0;
		HASH_SEQ_STATUS seq;
		ProfEntry  *p;
		static SPIPlanPtr plan = NULL;
		Datum		args[1];

		settle_alias_types(e);

		/* What does each message need? */
		for (int i = 0; i < e->nmsgs; i++)
		{
			CdpMessage *m = &e->msgs[i];
			int64		first = 0;
			bool		structural = false;

			if (!cdp_msg_active(m))
				continue;
			for (int j = 0; j < m->nidents; j++)
			{
				IdentEntry *ie = m->idents[j].entry;

				if (ie == NULL || ie->profile_id == 0)
					structural = true;
				else if (first == 0)
					first = ie->profile_id;
				else if (first != ie->profile_id)
					structural = true;
			}
			for (int j = 0; j < m->nidents; j++)
			{
				IdentEntry *ie = m->idents[j].entry;

				if (ie && ie->profile_id != 0)
				{
					p = cdp_engine_profile(e, ie->profile_id, true);
					if (structural)
						p->need_exclusive = true;
				}
			}
		}

		/* Lock what is not locked strongly enough yet. */
		hash_seq_init(&seq, e->profiles);
		keys = palloc(sizeof(uint64) * (hash_get_num_entries(e->profiles) + 1));
		excl = palloc(sizeof(bool) * (hash_get_num_entries(e->profiles) + 1));
		while ((p = hash_seq_search(&seq)) != NULL)
		{
			int			want = p->need_exclusive ? 2 : 1;

			if (p->lockmode >= want)
				continue;
			keys[n] = (uint64) p->profile_id;
			excl[n] = (want == 2);
			ids[n] = p->profile_id;
			p->lockmode = want;
			n++;
		}
		if (n == 0)
			return;
		cdp_lock_keys(keys, n, excl, CDP_LOCK_PROFILE);

		/*
		 * Under the exclusive global lock, taken before the identifiers were
		 * looked up, no one else can have retired a profile they name.
		 */
		if (e->owners_stable)
		{
			for (int i = 0; i < n; i++)
				cdp_engine_profile(e, ids[i], false)->exists = true;
			return;
		}

		/* Which of them still exist? */
		if (plan == NULL)
		{
			Oid			argtypes[1] = {INT8ARRAYOID};

			plan = cdp_prepare("SELECT profile_id FROM cdp.profiles WHERE profile_id = ANY($1)",
							   1, argtypes);
		}
		args[0] = cdp_int8_array(ids, n);
		cdp_spi_exec(plan, args, SPI_OK_SELECT);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														 SPI_tuptable->tupdesc, 1, &isnull));

			cdp_engine_profile(e, id, true)->exists = true;
		}
		for (int i = 0; i < n; i++)
			if (!cdp_engine_profile(e, ids[i], false)->exists)
				nmissing++;
		if (nmissing == 0)
			return;
		if (attempt >= 8)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not resolve identifiers: their profiles kept changing"),
					 errdetail("Concurrent merges retired the profiles found %d times in a row.", attempt + 1),
					 errhint("The transaction might succeed if retried.")));

		/* Ask again for identifiers whose owner vanished. */
		{
			IdentEntry *ie;

			hash_seq_init(&seq, e->idents);
			while ((ie = hash_seq_search(&seq)) != NULL)
			{
				ProfEntry  *owner;

				if (ie->profile_id == 0)
					continue;
				owner = cdp_engine_profile(e, ie->profile_id, false);
				if (owner && owner->lockmode > 0 && !owner->exists)
					ie->queried = false;
			}
		}
		lookup_identities(e, true);
	}
}

/* Per-type identifier counts of the stored profiles a message may change. */
static void
load_counts(Engine *e)
{
	static SPIPlanPtr plan = NULL;
	HASH_SEQ_STATUS seq;
	ProfEntry  *p;
	int64	   *ids = palloc(sizeof(int64) * (hash_get_num_entries(e->profiles) + 1));
	int			n = 0;
	Datum		args[1];

	hash_seq_init(&seq, e->profiles);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		if (!p->exists)
			continue;
		p->node = cdp_engine_new_node(e, p->profile_id, true);
		if (p->need_exclusive)
			ids[n++] = p->profile_id;
	}
	if (n == 0)
		return;
	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};

		plan = cdp_prepare("SELECT profile_id, type, count(*)::int4 FROM cdp.identities "
						   "WHERE profile_id = ANY($1) GROUP BY 1, 2", 1, argtypes);
	}
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int			ti = cdp_ident_type_index(SPI_getvalue(tup, desc, 2));
		int			cnt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		UfNode	   *nd = &e->nodes[cdp_engine_profile(e, id, false)->node];

		if (ti >= 0)
			nd->counts[ti] += cnt;
		nd->total += cnt;
	}
}

/*
 * When each identifier the batch attaches was first seen: when the earliest
 * message of the batch that carries it happened (a backfill's history, in
 * whatever order it is loaded), but never later than now.  Indexed by
 * attachment.
 */
static TimestampTz *
first_seen(Engine *e, TimestampTz now)
{
	TimestampTz *first = palloc(sizeof(TimestampTz) * e->natt);
	HASHCTL		ctl;
	HTAB	   *att_of;

	typedef struct
	{
		IdentEntry *entry;
		int			att;
	}			AttEntry;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(IdentEntry *);
	ctl.entrysize = sizeof(AttEntry);
	ctl.hcxt = CurrentMemoryContext;
	att_of = hash_create("pg_cdp attachments", e->natt, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int a = 0; a < e->natt; a++)
	{
		CdpIdent   *id = &e->msgs[e->att_msg[a]].idents[e->att_ident[a]];

		first[a] = Min(e->msgs[e->att_msg[a]].occurred_at, now);
		if (id->entry)
			((AttEntry *) hash_search(att_of, &id->entry, HASH_ENTER, NULL))->att = a;
	}
	for (int i = 0; i < e->nmsgs; i++)
	{
		CdpMessage *m = &e->msgs[i];

		if (!cdp_msg_active(m))
			continue;
		for (int j = 0; j < m->nidents; j++)
		{
			AttEntry   *ae;

			if (m->idents[j].entry == NULL)
				continue;
			ae = hash_search(att_of, &m->idents[j].entry, HASH_FIND, NULL);
			if (ae && m->occurred_at < first[ae->att])
				first[ae->att] = m->occurred_at;
		}
	}
	hash_destroy(att_of);
	return first;
}

/*
 * Write the plan: profiles for surviving new components, merges, new
 * identities, issues; then give every message its final profile id.
 */
static void
materialize(Engine *e, int *dup_of)
{
	static SPIPlanPtr seq_plan = NULL;
	static SPIPlanPtr prof_plan = NULL;
	static SPIPlanPtr ident_plan = NULL;
	int			nnew = 0;
	int64	   *newids;
	TimestampTz *created;
	Datum		args[4];
	TimestampTz now = cdp_now();

	for (int n = 0; n < e->nnodes; n++)
		if (!e->nodes[n].stored && cdp_engine_find_root(e, n) == n)
			nnew++;

	if (nnew > 0)
	{
		int			k = 0;
		TimestampTz *first;

		if (seq_plan == NULL)
		{
			Oid			argtypes[1] = {INT4OID};

			/* the sequence is looked up once, not once per id */
			seq_plan = cdp_prepare("SELECT nextval(s.seq) "
								   "FROM (SELECT pg_get_serial_sequence('cdp.profiles', 'profile_id')::regclass "
								   "      AS seq OFFSET 0) AS s, generate_series(1, $1)", 1, argtypes);
			prof_plan = NULL;
		}
		args[0] = Int32GetDatum(nnew);
		cdp_spi_exec(seq_plan, args, SPI_OK_SELECT);
		newids = palloc(sizeof(int64) * nnew);
		created = palloc(sizeof(TimestampTz) * nnew);
		(void) cdp_spi_int64_column(newids);

		/*
		 * A new profile was created when the earliest of its messages
		 * happened (a backfill's history, not the time of the load), but
		 * never later than now.
		 */
		first = palloc(sizeof(TimestampTz) * e->nnodes);
		for (int n = 0; n < e->nnodes; n++)
			first[n] = now;
		for (int i = 0; i < e->nmsgs; i++)
		{
			CdpMessage *m = &e->msgs[i];

			if (cdp_msg_active(m) && m->node >= 0)
			{
				int			r = cdp_engine_find_root(e, m->node);

				if (m->occurred_at < first[r])
					first[r] = m->occurred_at;
			}
		}
		/* nextval hands out ascending ids: the oldest component gets the lowest */
		for (int n = 0; n < e->nnodes; n++)
			if (!e->nodes[n].stored && cdp_engine_find_root(e, n) == n)
			{
				created[k] = first[n];
				e->nodes[n].profile_id = newids[k++];
			}
		pfree(first);

		if (prof_plan == NULL)
		{
			Oid			argtypes[3] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};

			prof_plan = cdp_prepare("INSERT INTO cdp.profiles (profile_id, created_at, updated_at) "
									"OVERRIDING SYSTEM VALUE "
									"SELECT id, at, $3 FROM (SELECT unnest($1::int8[]) AS id, "
									"  unnest($2::timestamptz[]) AS at) AS u",
									3, argtypes);
		}
		args[0] = cdp_int8_array(newids, nnew);
		args[1] = cdp_timestamptz_array(created, nnew);
		args[2] = TimestampTzGetDatum(now);
		cdp_spi_exec(prof_plan, args, SPI_OK_INSERT);
	}

	/* Final profile of every message and every node. */
	for (int i = 0; i < e->nmsgs; i++)
	{
		CdpMessage *m = &e->msgs[i];

		if (cdp_msg_active(m) && m->node >= 0)
			m->profile_id = e->nodes[cdp_engine_find_root(e, m->node)].profile_id;
	}
	cdp_engine_name_profiles(e);

	if (e->nsteps > 0)
	{
		/* merge.c moves rows from each loser to its final winner */
		cdp_execute_merges(e->msgs, e->steps, e->nsteps);
	}

	if (e->natt > 0)
	{
		char	  **types = palloc(sizeof(char *) * e->natt);
		char	  **values = palloc(sizeof(char *) * e->natt);
		int64	   *owners = palloc(sizeof(int64) * e->natt);
		TimestampTz *seen = palloc(sizeof(TimestampTz) * e->natt);
		TimestampTz *first = first_seen(e, now);
		PairKey    *rows = palloc(sizeof(PairKey) * e->natt);
		PairKey   **sorted = palloc(sizeof(PairKey *) * e->natt);

		/* in key order (cmp_pair) */
		for (int a = 0; a < e->natt; a++)
		{
			CdpIdent   *id = &e->msgs[e->att_msg[a]].idents[e->att_ident[a]];

			rows[a].a = cdp_ident_type_at(id->type)->name;
			rows[a].b = id->value;
			sorted[a] = &rows[a];
		}
		cdp_sort_pairs(sorted, e->natt);
		for (int k = 0; k < e->natt; k++)
		{
			int			a = sorted[k] - rows;

			types[k] = (char *) rows[a].a;
			values[k] = (char *) rows[a].b;
			owners[k] = e->msgs[e->att_msg[a]].profile_id;
			seen[k] = first[a];
		}
		if (ident_plan == NULL)
		{
			Oid			argtypes[4] = {TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID};

			ident_plan = cdp_prepare("INSERT INTO cdp.identities (type, value, profile_id, first_seen_at) "
									 "SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::int8[]), "
									 "  unnest($4::timestamptz[])",
									 4, argtypes);
		}
		args[0] = cdp_text_array(types, e->natt);
		args[1] = cdp_text_array(values, e->natt);
		args[2] = cdp_int8_array(owners, e->natt);
		args[3] = cdp_timestamptz_array(seen, e->natt);
		cdp_spi_exec(ident_plan, args, SPI_OK_INSERT);
	}

	/* In-batch duplicates take the profile of their first copy. */
	for (int i = 0; i < e->nmsgs; i++)
		if (dup_of[i] >= 0)
			e->msgs[i].profile_id = e->msgs[dup_of[i]].profile_id;
}

/*
 * cdp_resolve_messages resolves msgs to profiles, creating and merging
 * profiles as needed.  Messages with err set are skipped; duplicates get
 * duplicate = true and the profile of the first copy.  The caller is
 * connected to SPI.
 *
 * dedupe_first looks for stored copies before taking the identifier locks,
 * outside the section that other resolvers wait for.  A copy stored by a
 * concurrent transaction is then missed here, and the caller must handle
 * the unique violation its message id meets later (the worker's drain
 * does: cdp_run_isolated turns it into a duplicate).
 *
 * on_locked, if given, runs once the identifier locks are held, and may set
 * err on messages that must not be resolved after all.
 */
void
cdp_resolve_messages(CdpMessage *msgs, int nmsgs, bool dedupe_first,
					 CdpBatchWork on_locked)
{
	Engine		e;
	HASHCTL		ctl;
	int		   *dup_of;
	uint64	   *keys;
	int			nkeys = 0;
	int			total = 0;
	instr_time	start,
				elapsed;

	INSTR_TIME_SET_CURRENT(start);
	memset(&e, 0, sizeof(e));
	e.msgs = msgs;
	e.nmsgs = nmsgs;
	e.ntypes = cdp_ident_type_count();
	e.name_profiles = true;

	for (int i = 0; i < nmsgs; i++)
	{
		msgs[i].node = -1;
		if (msgs[i].err.sqlerrcode == 0)
			total += msgs[i].nidents;
	}

	e.idents = cdp_pair_table("pg_cdp identifiers", total * 2, sizeof(IdentEntry));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(ProfEntry);
	ctl.hcxt = CurrentMemoryContext;
	e.profiles = hash_create("pg_cdp profiles", Max(total, 16), &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* 1. Lock every identifier of the batch, sorted. */
	keys = palloc(sizeof(uint64) * Max(total * 2, 1));
	for (int i = 0; i < nmsgs; i++)
	{
		CdpMessage *m = &msgs[i];

		if (m->err.sqlerrcode)
			continue;
		for (int j = 0; j < m->nidents; j++)
		{
			CdpIdent   *id = &m->idents[j];

			/* kept for the later steps, which need no hash lookup then */
			id->entry = NULL;
			if (id->alias_previous)
			{
				keys[nkeys] = cdp_hash_key("user_id", id->value);
				cdp_engine_ident_hashed(&e, "user_id", id->value, keys[nkeys++], true);
				keys[nkeys] = cdp_hash_key("anonymous_id", id->value);
				cdp_engine_ident_hashed(&e, "anonymous_id", id->value, keys[nkeys++], true);
			}
			else
			{
				const char *type = cdp_ident_type_name(id);

				keys[nkeys] = cdp_hash_key(type, id->value);
				id->entry = cdp_engine_ident_hashed(&e, type, id->value, keys[nkeys++], true);
			}
		}
	}
	if (dedupe_first)
		dup_of = find_duplicates(&e);
	cdp_lock_keys(keys, nkeys, NULL, CDP_LOCK_IDENTIFIER);
	e.owners_stable = cdp_locks_escalated();
	if (on_locked)
		on_locked(msgs, nmsgs);

	/*
	 * 2. Duplicates.  Checked after the identifier locks: a concurrent copy
	 * of the same message holds the same identifiers, so it has committed
	 * (or rolled back) by now.
	 */
	if (!dedupe_first)
		dup_of = find_duplicates(&e);

	/* 3. Look up and lock. */
	lookup_identities(&e, false);
	lock_profiles(&e);

	/* 4. Plan in memory. */
	load_counts(&e);
	cdp_engine_plan(&e);

	/* 5. Write. */
	materialize(&e, dup_of);

	/* The identity phase's cost, for cdp.stats and the benchmark. */
	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	cdp_status_count_resolved(nmsgs, INSTR_TIME_GET_MICROSEC(elapsed));
}

/*
 * cdp_lookup_profile returns the owner of one normalized identifier, or 0.
 */
int64
cdp_lookup_profile(const char *type, const char *value)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			argtypes[2] = {TEXTOID, TEXTOID};

		plan = cdp_prepare("SELECT profile_id FROM cdp.identities WHERE type = $1 AND value = $2",
						   2, argtypes);
	}
	args[0] = CStringGetTextDatum(type);
	args[1] = CStringGetTextDatum(value);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * cdp.resolve(identifiers jsonb) → bigint: the profile of the strongest
 * known identifier, or NULL.  Never creates anything, never errors on bad
 * input.
 */
PG_FUNCTION_INFO_V1(cdp_resolve);

Datum
cdp_resolve(PG_FUNCTION_ARGS)
{
	CdpMessage	msg;
	int64		found = 0;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	memset(&msg, 0, sizeof(msg));
	/* Looking up registers no identifier type, and is not a message to cap. */
	msg.lookup = true;
	SPI_connect();
	cdp_parse_identifiers(PG_GETARG_JSONB_P(0), &msg, false);
	if (msg.err.sqlerrcode == 0 && msg.nidents > 0)
	{
		if (msg.nidents > 1)
			qsort(msg.idents, msg.nidents, sizeof(CdpIdent), cdp_cmp_ident_priority);
		for (int j = 0; j < msg.nidents && found == 0; j++)
			found = cdp_lookup_profile(cdp_ident_type_at(msg.idents[j].type)->name,
									   msg.idents[j].value);
	}
	SPI_finish();
	if (found == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(found);
}
