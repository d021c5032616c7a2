/*-------------------------------------------------------------------------
 *
 * erase.c
 *	  cdp.unmerge and cdp.forget: a merge undone, a person erased.
 *
 * Both stand above the identity code: they lock identifiers and profiles
 * in the global order, wait for the drainers' writes to the profiles they
 * empty (drainers.c), and visit every per-profile table of the registry
 * (registry.c) for the rows to move back or to delete.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "clock.h"
#include "drainers.h"
#include "idtypes.h"
#include "locks.h"
#include "merge.h"
#include "message.h"
#include "profile.h"
#include "registry.h"
#include "resolve.h"
#include "util.h"

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
	SPI_execute_with_args("UPDATE cdp.merges SET undone_at = cdp.now() WHERE merge_id = $1",
						  1, argtypes, args, NULL, false, 0);
	cdp_profile_tables_unmerge(merge_id, winner, loser);
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
	MemoryContext caller_cxt = CurrentMemoryContext;
	char	   *summary;
	static const char *const inbox_steps[][2] = {
		{"inbox", "DELETE FROM cdp.inbox WHERE message ILIKE ANY (SELECT '%\"' || replace(replace(replace(v, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '\"%' FROM unnest($2) v)"},
		{"inbox_rejects", "DELETE FROM cdp.inbox_rejects WHERE message ILIKE ANY (SELECT '%\"' || replace(replace(replace(v, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '\"%' FROM unnest($2) v)"},
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
	cdp_profile_tables_forget(ids, nids, args[1], &out);
	for (int s = 0; s < lengthof(inbox_steps); s++)
	{
		int			rc = SPI_execute_with_args(inbox_steps[s][1], 2, argtypes, args, NULL, false, 0);

		if (rc != SPI_OK_DELETE)
			elog(ERROR, "pg_cdp: erasure step %s failed", inbox_steps[s][0]);
		appendStringInfo(&out, ", \"%s\": " UINT64_FORMAT, inbox_steps[s][0], SPI_processed);
	}
	appendStringInfoChar(&out, '}');

	/* The segment engine must learn that these profiles are gone. */
	cdp_mark_profiles_changed(ids, nids, "forget");
	/* SPI_finish frees what was allocated since SPI_connect */
	summary = MemoryContextStrdup(caller_cxt, out.data);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(summary)));
}
