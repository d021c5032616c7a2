/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  The one place where profiles merge, split again and are erased.
 *
 * A merge moves every row about the loser to the winner and retires the
 * loser.  The rows to move are listed in merge_moves[] below: each later
 * concept (traits, segment memberships, journey states, outbox) adds its
 * table there, and the same UPDATE moves it.  Rows are moved by UPDATE of
 * profile_id rather than re-keyed in place, which on Citus becomes copy and
 * delete of the distribution value.
 *
 * Every merge is logged in cdp.merges with its cause and a snapshot of the
 * loser (identities, traits, the stored profiles it was made of), which is
 * what cdp.unmerge restores.  Events remember the profile they were first
 * written to (original_profile_id) for the same reason.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "utils/timestamp.h"

#include "pg_cdp.h"

/*
 * Tables whose profile_id follows a merge, found by their profile_id index.
 * cdp.message_ids follows too, but has no such index (it would cost every
 * ingested message a random index insert): its rows are found through the
 * losers' events, before those move.
 */
static const char *const merge_moves[] = {
	"cdp.identities",
	"cdp.events",
	"cdp.identifier_issues",
	NULL
};

#define NMOVES (lengthof(merge_moves) - 1)

typedef struct HistEntry
{
	int64		winner;
	char	   *absorbed;		/* "1,2,3" */
} HistEntry;

typedef struct ProfSnap
{
	int64		profile_id;
	Jsonb	   *traits;
	Jsonb	   *meta;
	TimestampTz created_at;
	StringInfoData idents;		/* JSON array elements, comma-separated */
	int64		final;			/* final winner, for losers */
} ProfSnap;

static void
append_ident_json(StringInfo buf, const char *type, const char *value)
{
	if (buf->len > 0)
		appendStringInfoChar(buf, ',');
	appendStringInfoString(buf, "{\"type\":");
	escape_json(buf, type);
	appendStringInfoString(buf, ",\"value\":");
	escape_json(buf, value);
	appendStringInfoChar(buf, '}');
}

/* The identifiers of a message as a JSON array of {type, value}. */
static char *
message_identifiers_json(CdpMessage *m)
{
	StringInfoData buf;
	StringInfoData out;

	initStringInfo(&buf);
	for (int j = 0; j < m->nidents; j++)
		append_ident_json(&buf, cdp_ident_type_at(m->idents[j].type)->name,
						  m->idents[j].value);
	initStringInfo(&out);
	appendStringInfo(&out, "[%s]", buf.data);
	return out.data;
}

/*
 * The profiles a loser is made of: the stored members the batch merged into
 * it, and whatever each of them had absorbed in earlier merges still in
 * force (history maps a winner to those, as "1,2,3").
 */
static char *
int8_array_literal(int64 *ids, int n, HTAB *history)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < n; i++)
	{
		HistEntry  *h = hash_search(history, &ids[i], HASH_FIND, NULL);

		appendStringInfo(&buf, "%s" INT64_FORMAT, i ? "," : "", ids[i]);
		if (h)
			appendStringInfo(&buf, ",%s", h->absorbed);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* Earlier merges into the given profiles, in one statement per batch. */
static HTAB *
load_history(int64 *ids, int n)
{
	static SPIPlanPtr plan = NULL;
	HASHCTL		ctl;
	HTAB	   *h;
	Datum		args[1];

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(HistEntry);
	ctl.hcxt = CurrentMemoryContext;
	h = hash_create("pg_cdp merge history", Max(n, 8), &ctl,
					HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};

		plan = cdp_prepare("SELECT winner_id, string_agg(x::text, ',') "
						   "FROM cdp.merges, unnest(loser_members) AS x "
						   "WHERE winner_id = ANY($1) AND undone_at IS NULL "
						   "GROUP BY winner_id", 1, argtypes);
	}
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		w = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		HistEntry  *e = hash_search(h, &w, HASH_ENTER, NULL);

		e->absorbed = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
	}
	return h;
}

static void
move_rows(int64 *from, int64 *to, int n)
{
	static SPIPlanPtr plans[NMOVES];
	static SPIPlanPtr ids_plan = NULL;
	Datum		args[2];

	args[0] = cdp_int8_array(from, n);
	args[1] = cdp_int8_array(to, n);
	if (ids_plan == NULL)
	{
		Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};

		ids_plan = cdp_prepare("UPDATE cdp.message_ids AS x "
							   "SET profile_id = ($2::int8[])[array_position($1::int8[], e.profile_id)] "
							   "FROM cdp.events e WHERE e.profile_id = ANY($1::int8[]) "
							   "  AND x.source = coalesce(e.source, '') AND x.message_id = e.event_id",
							   2, argtypes);
	}
	cdp_spi_exec(ids_plan, args, SPI_OK_UPDATE);
	for (int t = 0; merge_moves[t]; t++)
	{
		if (plans[t] == NULL)
		{
			Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};

			/*
			 * = ANY() finds the rows by index whatever the statistics say;
			 * array_position() maps each to its winner.
			 */
			plans[t] = cdp_prepare(psprintf("UPDATE %s AS x "
											"SET profile_id = ($2::int8[])[array_position($1::int8[], x.profile_id)] "
											"WHERE x.profile_id = ANY($1::int8[])", merge_moves[t]),
								   2, argtypes);
		}
		cdp_spi_exec(plans[t], args, SPI_OK_UPDATE);
	}
}

/*
 * cdp_lock_profile_rows locks the rows of profiles ids FOR UPDATE, in
 * ascending id: they are about to be retired, or to lose rows.  The caller
 * holds their exclusive profile locks (cdp_lock_keys).  First it waits for
 * the worker's drainers still writing events to any of them (drain.c), so
 * the statements that move a profile's rows see every event written to it.
 */
void
cdp_lock_profile_rows(int64 *ids, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];

	if (n == 0)
		return;
	cdp_wait_for_drain_writers(ids, n);
	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};

		plan = cdp_prepare("SELECT profile_id FROM cdp.profiles WHERE profile_id = ANY($1) "
						   "ORDER BY profile_id FOR UPDATE", 1, argtypes);
	}
	args[0] = cdp_int8_array(ids, n);
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
}

/*
 * cdp_execute_merges carries out the merge steps the identity engine
 * planned, in one statement per table: snapshots for the log, row moves,
 * trait survivorship, retirement of the losers.
 */
void
cdp_execute_merges(CdpMessage *msgs, CdpMergeStep *steps, int nsteps)
{
	static SPIPlanPtr snap_plan = NULL;
	static SPIPlanPtr ident_plan = NULL;
	static SPIPlanPtr delete_plan = NULL;
	static SPIPlanPtr log_plan = NULL;
	HASHCTL		ctl;
	HTAB	   *snaps;
	int64	   *all;
	int			nall = 0;
	int64	   *losers = palloc(sizeof(int64) * nsteps);
	int64	   *finals = palloc(sizeof(int64) * nsteps);
	Datum		args[11];
	TimestampTz now = cdp_now();

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(ProfSnap);
	ctl.hcxt = CurrentMemoryContext;
	snaps = hash_create("pg_cdp merge snapshots", nsteps * 2 + 8, &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* Every stored profile involved, and each loser's final winner. */
	all = palloc(sizeof(int64) * nsteps * 2);
	for (int s = 0; s < nsteps; s++)
	{
		int64		ids[2] = {steps[s].winner, steps[s].loser};

		for (int k = 0; k < 2; k++)
		{
			bool		found;
			ProfSnap   *p = hash_search(snaps, &ids[k], HASH_ENTER, &found);

			if (!found)
			{
				p->profile_id = ids[k];
				p->traits = NULL;
				p->meta = NULL;
				p->created_at = 0;
				p->final = 0;
				initStringInfo(&p->idents);
				all[nall++] = ids[k];
			}
		}
		((ProfSnap *) hash_search(snaps, &steps[s].loser, HASH_FIND, NULL))->final =
			steps[s].winner;
	}
	for (int s = 0; s < nsteps; s++)
	{
		int64		f = steps[s].winner;
		ProfSnap   *p;

		while ((p = hash_search(snaps, &f, HASH_FIND, NULL)) != NULL && p->final != 0)
			f = p->final;
		losers[s] = steps[s].loser;
		finals[s] = f;
	}
	cdp_lock_profile_rows(losers, nsteps);

	/* Snapshots: traits and identities as they are before the batch moves them. */
	if (snap_plan == NULL)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};

		snap_plan = cdp_prepare("SELECT profile_id, traits, trait_meta, created_at "
								"FROM cdp.profiles WHERE profile_id = ANY($1)", 1, argtypes);
		ident_plan = cdp_prepare("SELECT profile_id, type, value FROM cdp.identities "
								 "WHERE profile_id = ANY($1) ORDER BY profile_id, type, value",
								 1, argtypes);
	}
	args[0] = cdp_int8_array(all, nall);
	cdp_spi_exec(snap_plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		ProfSnap   *p = hash_search(snaps, &id, HASH_FIND, NULL);
		Datum		d;

		d = SPI_getbinval(tup, desc, 2, &isnull);
		p->traits = isnull ? NULL : DatumGetJsonbPCopy(d);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		p->meta = isnull ? NULL : DatumGetJsonbPCopy(d);
		p->created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	}
	cdp_spi_exec(ident_plan, args, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		ProfSnap   *p = hash_search(snaps, &id, HASH_FIND, NULL);

		append_ident_json(&p->idents, SPI_getvalue(tup, desc, 2), SPI_getvalue(tup, desc, 3));
	}

	/* The log, one row per step, with the loser as it was at that step. */
	{
		HTAB	   *history = load_history(all, nall);
		int64	   *winners = palloc(sizeof(int64) * nsteps);
		char	  **causes = palloc(sizeof(char *) * nsteps);
		char	  **event_ids = palloc(sizeof(char *) * nsteps);
		char	  **identifiers = palloc(sizeof(char *) * nsteps);
		char	  **loser_idents = palloc(sizeof(char *) * nsteps);
		char	  **members = palloc(sizeof(char *) * nsteps);
		Jsonb	  **ltraits = palloc(sizeof(Jsonb *) * nsteps);
		Jsonb	  **lmeta = palloc(sizeof(Jsonb *) * nsteps);
		TimestampTz *lcreated = palloc(sizeof(TimestampTz) * nsteps);
		Oid			argtypes[11] = {INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};

		for (int s = 0; s < nsteps; s++)
		{
			CdpMergeStep *st = &steps[s];
			CdpMessage *m = &msgs[st->msg];
			StringInfoData li;
			Jsonb	   *t = NULL;
			Jsonb	   *mt = NULL;

			initStringInfo(&li);
			for (int k = 0; k < st->nmembers; k++)
			{
				ProfSnap   *p = hash_search(snaps, &st->members[k], HASH_FIND, NULL);

				if (p == NULL)
					continue;
				if (p->idents.len > 0)
					appendStringInfo(&li, "%s%s", li.len ? "," : "", p->idents.data);
				t = t ? cdp_traits_merge(t, mt, p->traits, p->meta, &mt) : p->traits;
				if (mt == NULL)
					mt = p->meta;
			}
			for (int k = 0; k < st->nextra; k++)
				append_ident_json(&li, st->extra_types[k], st->extra_values[k]);

			winners[s] = st->winner;
			causes[s] = m->msgtype ? m->msgtype : "track";
			event_ids[s] = m->message_id;
			identifiers[s] = message_identifiers_json(m);
			loser_idents[s] = psprintf("[%s]", li.data);
			members[s] = int8_array_literal(st->members, st->nmembers, history);
			ltraits[s] = t;
			lmeta[s] = mt;
			lcreated[s] = ((ProfSnap *) hash_search(snaps, &st->loser, HASH_FIND, NULL))->created_at;
		}
		if (log_plan == NULL)
			log_plan = cdp_prepare("INSERT INTO cdp.merges (winner_id, loser_id, cause, event_id, "
								   "  identifiers, loser_identities, loser_members, loser_traits, "
								   "  loser_trait_meta, loser_created_at, merged_at) "
								   "SELECT w, l, c, e, i::jsonb, li::jsonb, mem::int8[], "
								   "       coalesce(t, '{}'), coalesce(tm, '{}'), lc, $11 "
								   "FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], "
								   "            $5::text[], $6::text[], $7::text[], $8::jsonb[], "
								   "            $9::jsonb[], $10::timestamptz[]) "
								   "  AS u(w, l, c, e, i, li, mem, t, tm, lc)",
								   11, argtypes);
		args[0] = cdp_int8_array(winners, nsteps);
		args[1] = cdp_int8_array(losers, nsteps);
		args[2] = cdp_text_array(causes, nsteps);
		args[3] = cdp_text_array(event_ids, nsteps);
		args[4] = cdp_text_array(identifiers, nsteps);
		args[5] = cdp_text_array(loser_idents, nsteps);
		args[6] = cdp_text_array(members, nsteps);
		args[7] = cdp_jsonb_array(ltraits, nsteps);
		args[8] = cdp_jsonb_array(lmeta, nsteps);
		args[9] = cdp_timestamptz_array(lcreated, nsteps);
		args[10] = TimestampTzGetDatum(now);
		cdp_spi_exec(log_plan, args, SPI_OK_INSERT);
	}

	/* Survivorship: fold each loser's own traits into its final winner. */
	{
		CdpTraitFold fold = {0};

		for (int s = 0; s < nsteps; s++)
		{
			ProfSnap   *p = hash_search(snaps, &losers[s], HASH_FIND, NULL);

			cdp_trait_fold_add(&fold, finals[s], p->traits, p->meta);
		}
		cdp_trait_fold_apply(&fold);
	}

	move_rows(losers, finals, nsteps);

	if (delete_plan == NULL)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};

		delete_plan = cdp_prepare("DELETE FROM cdp.profiles WHERE profile_id = ANY($1)",
								  1, argtypes);
	}
	args[0] = cdp_int8_array(losers, nsteps);
	cdp_spi_exec(delete_plan, args, SPI_OK_DELETE);

	/* losers and winners alike, in one statement */
	{
		int64	   *changed = palloc(sizeof(int64) * nsteps * 2);

		memcpy(changed, losers, sizeof(int64) * nsteps);
		memcpy(changed + nsteps, finals, sizeof(int64) * nsteps);
		cdp_mark_profiles_changed(changed, nsteps * 2, "merge");
	}
}

/*
 * recompute_traits rebuilds a profile's traits from its identify events,
 * after an unmerge took some of them away.
 */
static void
recompute_traits(int64 profile_id)
{
	Oid			argtypes[3] = {INT8OID, JSONBOID, JSONBOID};
	Datum		args[3];
	Jsonb	   *traits = NULL;
	Jsonb	   *meta = NULL;

	args[0] = Int64GetDatum(profile_id);
	SPI_execute_with_args("SELECT properties, occurred_at, channel FROM cdp.events "
						  "WHERE profile_id = $1 AND type = 'identify' "
						  "ORDER BY occurred_at, received_at",
						  1, argtypes, args, NULL, false, 0);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Jsonb	   *t = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 1, &isnull));
		TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
		Jsonb	   *m = cdp_traits_meta_for(t, at, SPI_getvalue(tup, desc, 3));

		if (traits == NULL)
		{
			traits = t;
			meta = m;
		}
		else
			traits = cdp_traits_merge(traits, meta, t, m, &meta);
	}
	if (traits == NULL)
	{
		traits = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		meta = traits;
	}
	args[1] = JsonbPGetDatum(traits);
	args[2] = JsonbPGetDatum(meta);
	SPI_execute_with_args("UPDATE cdp.profiles SET traits = $2, trait_meta = $3 "
						  "WHERE profile_id = $1", 3, argtypes, args, NULL, false, 0);
}

/*
 * cdp.unmerge(merge_id bigint) → bigint
 *
 * Restores the loser of a merge as it was at merge time: its profile row,
 * its identities (those still with the winner), and the events first
 * written to it or to the profiles it had absorbed.  Everything that
 * arrived after the merge stays with the winner.  The traits of both are
 * rebuilt from the identify events each now holds.
 */
PG_FUNCTION_INFO_V1(cdp_unmerge);
Datum
cdp_unmerge(PG_FUNCTION_ARGS)
{
	int64		merge_id = PG_GETARG_INT64(0);
	int64		winner,
				loser;
	bool		isnull;
	int			rc;
	Datum		args[2];
	Oid			argtypes[2] = {INT8OID, INT8OID};
	uint64	   *keys;
	int			nkeys = 0;
	uint64		pkeys[2];
	bool		pexcl[2] = {true, true};

	SPI_connect();
	rc = SPI_execute_with_args("SELECT winner_id, loser_id, undone_at IS NOT NULL, "
							   "       (SELECT min(l.merge_id) FROM cdp.merges l "
							   "         WHERE l.loser_id = m.winner_id AND l.merge_id > m.merge_id "
							   "           AND l.undone_at IS NULL) "
							   "FROM cdp.merges m WHERE merge_id = $1 FOR UPDATE",
							   1, argtypes, (Datum[]) {Int64GetDatum(merge_id)}, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.merges");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("merge " INT64_FORMAT " does not exist", merge_id),
				 errdetail("cdp.merges has no row with merge_id " INT64_FORMAT ".", merge_id),
				 errhint("The merges of a profile were erased with it if cdp.forget was called.")));
	winner = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	loser = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("merge " INT64_FORMAT " is already undone", merge_id)));
	{
		Datum		later = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);

		if (!isnull)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("merge " INT64_FORMAT " cannot be undone before merge " INT64_FORMAT,
							merge_id, DatumGetInt64(later)),
					 errdetail("Merge " INT64_FORMAT " later merged profile " INT64_FORMAT " into another profile.",
							   DatumGetInt64(later), winner),
					 errhint("Undo merge " INT64_FORMAT " first.", DatumGetInt64(later))));
	}

	/* Lock the identifiers that move back, then both profiles. */
	rc = SPI_execute_with_args("SELECT x->>'type', x->>'value' FROM cdp.merges, "
							   "jsonb_array_elements(loser_identities) x WHERE merge_id = $1",
							   1, argtypes, (Datum[]) {Int64GetDatum(merge_id)}, NULL, true, 0);
	keys = palloc(sizeof(uint64) * (SPI_processed + 1));
	for (uint64 r = 0; r < SPI_processed; r++)
		keys[nkeys++] = cdp_hash_key(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1),
									 SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2));
	cdp_lock_keys(keys, nkeys, NULL, CDP_LOCK_IDENTIFIER);
	pkeys[0] = (uint64) winner;
	pkeys[1] = (uint64) loser;
	cdp_lock_keys(pkeys, 2, pexcl, CDP_LOCK_PROFILE);
	cdp_lock_profile_rows((int64[]) {winner, loser}, 2);

	args[0] = Int64GetDatum(merge_id);
	rc = SPI_execute_with_args("INSERT INTO cdp.profiles (profile_id, created_at, updated_at, traits, trait_meta) "
							   "OVERRIDING SYSTEM VALUE "
							   "SELECT loser_id, coalesce(loser_created_at, merged_at), cdp.now(), "
							   "       loser_traits, loser_trait_meta "
							   "FROM cdp.merges WHERE merge_id = $1",
							   1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "pg_cdp: could not restore profile");
	SPI_execute_with_args("UPDATE cdp.identities i SET profile_id = m.loser_id "
						  "FROM cdp.merges m, jsonb_array_elements(m.loser_identities) x "
						  "WHERE m.merge_id = $1 AND i.profile_id = m.winner_id "
						  "  AND i.type = x->>'type' AND i.value = x->>'value'",
						  1, argtypes, args, NULL, false, 0);
	SPI_execute_with_args("UPDATE cdp.events e SET profile_id = m.loser_id "
						  "FROM cdp.merges m WHERE m.merge_id = $1 AND e.profile_id = m.winner_id "
						  "  AND e.original_profile_id = ANY(m.loser_members)",
						  1, argtypes, args, NULL, false, 0);
	SPI_execute_with_args("UPDATE cdp.message_ids d SET profile_id = m.loser_id "
						  "FROM cdp.merges m WHERE m.merge_id = $1 AND d.profile_id = m.winner_id "
						  "  AND d.original_profile_id = ANY(m.loser_members)",
						  1, argtypes, args, NULL, false, 0);
	SPI_execute_with_args("UPDATE cdp.merges SET undone_at = cdp.now() WHERE merge_id = $1",
						  1, argtypes, args, NULL, false, 0);
	recompute_traits(winner);
	recompute_traits(loser);
	{
		int64		ids[2] = {winner, loser};

		cdp_mark_profiles_changed(ids, 2, "unmerge");
	}
	SPI_finish();
	PG_RETURN_INT64(loser);
}

/*
 * cdp.forget(identifiers jsonb) → jsonb
 *
 * Erases the people the identifiers name: their profiles, identities,
 * events, message ids, identifier issues, the merges that name them, and
 * the inbox rows and rejects whose raw text carries one of their
 * identifiers as a JSON string.  Returns what was deleted, by table.
 */
PG_FUNCTION_INFO_V1(cdp_forget);
Datum
cdp_forget(PG_FUNCTION_ARGS)
{
	CdpMessage	msg;
	int64	   *ids;
	int			nids = 0;
	uint64	   *keys;
	int			nkeys = 0;
	bool	   *excl;
	char	  **vals;
	int			nvals = 0;
	Datum		args[2];
	Oid			argtypes[2] = {INT8ARRAYOID, TEXTARRAYOID};
	StringInfoData out;
	static const char *const steps[][2] = {
		{"events", "DELETE FROM cdp.events WHERE profile_id = ANY($1)"},
		{"message_ids", "DELETE FROM cdp.message_ids WHERE profile_id = ANY($1)"},
		{"identities", "DELETE FROM cdp.identities WHERE profile_id = ANY($1)"},
		{"identifier_issues", "DELETE FROM cdp.identifier_issues WHERE profile_id = ANY($1) OR value = ANY($2)"},
		{"merges", "DELETE FROM cdp.merges WHERE winner_id = ANY($1) OR loser_id = ANY($1) OR loser_members && $1"},
		{"inbox", "DELETE FROM cdp.inbox WHERE message ILIKE ANY (SELECT '%\"' || replace(replace(replace(v, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '\"%' FROM unnest($2) v)"},
		{"inbox_rejects", "DELETE FROM cdp.inbox_rejects WHERE message ILIKE ANY (SELECT '%\"' || replace(replace(replace(v, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '\"%' FROM unnest($2) v)"},
		{"profile_changes", "DELETE FROM cdp.profile_changes WHERE profile_id = ANY($1)"},
		{"profiles", "DELETE FROM cdp.profiles WHERE profile_id = ANY($1)"},
	};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("identifiers must not be null"),
				 errhint("Pass the identifiers of the person to erase, such as {\"email\": \"alice@example.com\"}.")));
	memset(&msg, 0, sizeof(msg));
	SPI_connect();
	cdp_parse_identifiers(PG_GETARG_JSONB_P(0), &msg, true);
	if (msg.err.sqlerrcode)
		cdp_raise(&msg.err);

	/*
	 * Lock every identifier the people have, not only those given: whoever
	 * meets one of them later (a drainer whose batch was read before this
	 * erasure) waits until it commits, then finds the identifier gone and
	 * the inbox rows too.  Identifiers are locked before profiles, as every
	 * resolver locks them; a merge committed meanwhile can give the people
	 * more, so look again until none is new.
	 */
	ids = palloc(sizeof(int64) * (msg.nidents + 1));
	keys = NULL;
	for (;;)
	{
		uint64	   *fresh;
		int			nfresh = 0;
		uint64		nrows;

		nids = 0;
		for (int j = 0; j < msg.nidents; j++)
		{
			int64		p = cdp_lookup_profile(cdp_ident_type_at(msg.idents[j].type)->name,
											   msg.idents[j].value);
			bool		dup = false;

			for (int k = 0; k < nids; k++)
				dup = dup || ids[k] == p;
			if (p != 0 && !dup)
				ids[nids++] = p;
		}
		args[0] = cdp_int8_array(ids, nids);
		SPI_execute_with_args("SELECT type, value FROM cdp.identities WHERE profile_id = ANY($1)",
							  1, argtypes, args, NULL, false, 0);
		nrows = SPI_processed;
		fresh = palloc(sizeof(uint64) * (nrows + msg.nidents + 1));
		for (uint64 r = 0; r < nrows; r++)
			fresh[nfresh++] = cdp_hash_key(SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1),
										   SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2));
		for (int j = 0; j < msg.nidents; j++)
			fresh[nfresh++] = cdp_hash_key(cdp_ident_type_at(msg.idents[j].type)->name,
										   msg.idents[j].value);
		/* keep the keys not locked yet */
		{
			int			k = 0;

			for (int i = 0; i < nfresh; i++)
			{
				bool		held = false;

				for (int h = 0; h < nkeys && !held; h++)
					held = keys[h] == fresh[i];
				if (!held)
					fresh[k++] = fresh[i];
			}
			nfresh = k;
		}
		if (nfresh == 0)
			break;
		cdp_lock_keys(fresh, nfresh, NULL, CDP_LOCK_IDENTIFIER);
		keys = keys ? repalloc(keys, sizeof(uint64) * (nkeys + nfresh))
			: palloc(sizeof(uint64) * nfresh);
		memcpy(keys + nkeys, fresh, sizeof(uint64) * nfresh);
		nkeys += nfresh;
	}
	excl = palloc(sizeof(bool) * (nids + 1));
	for (int k = 0; k < nids; k++)
		excl[k] = true;
	cdp_lock_keys((uint64 *) ids, nids, excl, CDP_LOCK_PROFILE);
	cdp_lock_profile_rows(ids, nids);

	/* Every identifier the people have, to find their raw messages. */
	args[0] = cdp_int8_array(ids, nids);
	SPI_execute_with_args("SELECT value FROM cdp.identities WHERE profile_id = ANY($1)",
						  1, argtypes, args, NULL, true, 0);
	vals = palloc(sizeof(char *) * (SPI_processed + msg.nidents + 1));
	for (uint64 r = 0; r < SPI_processed; r++)
		vals[nvals++] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
	for (int j = 0; j < msg.nidents; j++)
		vals[nvals++] = msg.idents[j].value;
	args[1] = cdp_text_array(vals, nvals);

	/* drainers that read the inbox rows before now must look again */
	cdp_inbox_erasing();
	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	for (int s = 0; s < lengthof(steps); s++)
	{
		int			rc = SPI_execute_with_args(steps[s][1], 2, argtypes, args, NULL, false, 0);

		if (rc != SPI_OK_DELETE)
			elog(ERROR, "pg_cdp: erasure step %s failed", steps[s][0]);
		appendStringInfo(&out, "%s\"%s\": " UINT64_FORMAT, s ? ", " : "", steps[s][0],
						 SPI_processed);
	}
	appendStringInfoChar(&out, '}');

	/* The segment engine must learn that these profiles are gone. */
	cdp_mark_profiles_changed(ids, nids, "forget");
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
