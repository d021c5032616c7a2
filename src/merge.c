/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  The one place where profiles merge.
 *
 * A merge moves every row about the loser to the winner and retires the
 * loser.  The rows to move are those of the per-profile table registry
 * (registry.c), where each subsystem registers its own tables; one
 * statement per table moves a whole batch's merges.
 *
 * Every merge is logged in cdp.merges with its cause and a snapshot of the
 * loser (identities, traits, the stored profiles it was made of), which is
 * what cdp.unmerge (erase.c) restores.  Events remember the profile they
 * were first written to (original_profile_id) for the same reason.
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

#include "clock.h"
#include "drainers.h"
#include "idtypes.h"
#include "merge.h"
#include "profile.h"
#include "registry.h"
#include "util.h"

static const CdpProfileTable merge_tables[] = {
	{
		/* the log names profiles rather than holding rows of one */
		.name = "merges",
		.relation = "cdp.merges",
		.order = 400,
		.on_merge = CDP_ROWS_STAY,
		.on_unmerge = CDP_ROWS_STAY,
		.on_forget = CDP_ROWS_SQL,
		.forget_sql = "DELETE FROM cdp.merges WHERE winner_id = ANY($1) OR loser_id = ANY($1) OR loser_members && $1",
	},
};

void
cdp_merge_init(void)
{
	for (int i = 0; i < lengthof(merge_tables); i++)
		cdp_register_profile_table(&merge_tables[i]);
}

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

	cdp_profile_tables_merge(losers, finals, nsteps);

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
