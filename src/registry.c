/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  The registry of per-profile tables, and the operations over it.
 *
 * A merge moves every row about the loser to the winner, an unmerge moves
 * the loser's rows back, an erasure deletes everything about a person: the
 * same list of tables serves all three.  Each module registers the tables
 * it owns from its init function (called by _PG_init), with the rule for
 * each operation; merge.c and erase.c call the operations here, which run
 * one statement per table, in the registered order, with the batch's
 * profiles as array parameters.  Rows are moved by UPDATE of profile_id,
 * which on Citus becomes a copy and delete of the distribution value.
 *
 * cdp.profile_tables() lists the registry, so a regression test can check
 * from the catalog that no table with a profile_id column is missing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/regproc.h"

#include "registry.h"
#include "util.h"

#define MAX_PROFILE_TABLES 64

static const CdpProfileTable *tables[MAX_PROFILE_TABLES];
static int	ntables = 0;

/* plans, per table and operation, kept for the backend's life */
static SPIPlanPtr merge_plans[MAX_PROFILE_TABLES];
static SPIPlanPtr unmerge_plans[MAX_PROFILE_TABLES];
static SPIPlanPtr forget_plans[MAX_PROFILE_TABLES];

/*
 * cdp_register_profile_table adds table to the registry, keeping it in
 * order.  The table description must live as long as the process (a
 * static constant of the registering file).
 */
void
cdp_register_profile_table(const CdpProfileTable *table)
{
	int			i;

	if (ntables >= MAX_PROFILE_TABLES)
		elog(ERROR, "pg_cdp: too many per-profile tables registered");
	if (table->on_forget == CDP_ROWS_STAY ||
		table->on_unmerge == CDP_ROWS_BY_PROFILE_ID ||
		(table->on_merge == CDP_ROWS_SQL && table->merge_sql == NULL) ||
		(table->on_unmerge == CDP_ROWS_SQL && table->unmerge_sql == NULL) ||
		(table->on_forget == CDP_ROWS_SQL && table->forget_sql == NULL))
		elog(ERROR, "pg_cdp: per-profile table %s is registered with an impossible rule",
			 table->relation);
	for (i = ntables; i > 0 && tables[i - 1]->order > table->order; i--)
		tables[i] = tables[i - 1];
	tables[i] = table;
	ntables++;
}

/*
 * A table a newer library registers may not exist yet: the server runs the
 * new library before ALTER EXTENSION pg_cdp UPDATE makes its tables.
 */
static bool
table_missing(const CdpProfileTable *tb)
{
	RangeVar   *rv = makeRangeVarFromNameList(stringToQualifiedNameList(tb->relation));

	return !OidIsValid(RangeVarGetRelid(rv, NoLock, true));
}

static SPIPlanPtr
plan_for(SPIPlanPtr *cache, int t, const char *sql, int nargs, Oid *argtypes)
{
	if (cache[t] == NULL)
		cache[t] = cdp_prepare(sql, nargs, argtypes);
	return cache[t];
}

/*
 * cdp_profile_tables_merge moves the rows of losers[i] to winners[i] in
 * every registered table, then runs what must be recomputed.
 */
void
cdp_profile_tables_merge(int64 *losers, int64 *winners, int n)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		args[2];

	if (n == 0)
		return;
	args[0] = cdp_int8_array(losers, n);
	args[1] = cdp_int8_array(winners, n);
	for (int t = 0; t < ntables; t++)
	{
		const CdpProfileTable *tb = tables[t];
		const char *sql;

		if (tb->on_merge == CDP_ROWS_STAY || table_missing(tb))
			continue;
		/*
		 * = ANY() finds the rows by index whatever the statistics say;
		 * array_position() maps each to its winner.
		 */
		sql = tb->on_merge == CDP_ROWS_SQL ? tb->merge_sql :
			psprintf("UPDATE %s AS x "
					 "SET profile_id = ($2::int8[])[array_position($1::int8[], x.profile_id)] "
					 "WHERE x.profile_id = ANY($1::int8[])", tb->relation);
		cdp_spi_exec(plan_for(merge_plans, t, sql, 2, argtypes), args,
					 tb->on_merge == CDP_ROWS_SQL ? CDP_SPI_ANY : SPI_OK_UPDATE);
	}
	for (int t = 0; t < ntables; t++)
		if (tables[t]->after_merge)
			tables[t]->after_merge(winners, n);
}

/*
 * cdp_profile_tables_unmerge moves the restored loser's rows back from the
 * winner, as the merge's snapshot in cdp.merges says, then runs what must
 * be recomputed.
 */
void
cdp_profile_tables_unmerge(int64 merge_id, int64 winner, int64 loser)
{
	Oid			argtypes[3] = {INT8OID, INT8OID, INT8OID};
	Datum		args[3];

	args[0] = Int64GetDatum(merge_id);
	args[1] = Int64GetDatum(winner);
	args[2] = Int64GetDatum(loser);
	for (int t = 0; t < ntables; t++)
	{
		const CdpProfileTable *tb = tables[t];

		if (tb->on_unmerge != CDP_ROWS_SQL || table_missing(tb))
			continue;
		cdp_spi_exec(plan_for(unmerge_plans, t, tb->unmerge_sql, 3, argtypes), args,
					 CDP_SPI_ANY);
	}
	for (int t = 0; t < ntables; t++)
		if (tables[t]->after_unmerge)
			tables[t]->after_unmerge(winner, loser);
}

/*
 * cdp_profile_tables_forget deletes everything about profiles ids, whose
 * identifier values are values (text[]), and appends "name": rows for
 * every table to summary, a JSON object being built.
 */
void
cdp_profile_tables_forget(int64 *ids, int n, Datum values, StringInfo summary)
{
	Oid			argtypes[2] = {INT8ARRAYOID, TEXTARRAYOID};
	Datum		args[2];

	args[0] = cdp_int8_array(ids, n);
	args[1] = values;
	for (int t = 0; t < ntables; t++)
	{
		const CdpProfileTable *tb = tables[t];
		const char *sql;

		if (table_missing(tb))
			continue;
		sql = tb->on_forget == CDP_ROWS_SQL ? tb->forget_sql :
			psprintf("DELETE FROM %s WHERE profile_id = ANY($1)", tb->relation);
		cdp_spi_exec(plan_for(forget_plans, t, sql, 2, argtypes), args,
					 tb->on_forget == CDP_ROWS_SQL ? CDP_SPI_ANY : SPI_OK_DELETE);
		if (summary->len > 1)
			appendStringInfoString(summary, ", ");
		appendStringInfo(summary, "\"%s\": " UINT64_FORMAT, tb->name, SPI_processed);
	}
}

static const char *
rule_name(CdpRowRule rule)
{
	switch (rule)
	{
		case CDP_ROWS_STAY:
			return "stay";
		case CDP_ROWS_BY_PROFILE_ID:
			return "by profile_id";
		case CDP_ROWS_SQL:
			return "statement";
	}
	return "?";
}

/*
 * cdp.profile_tables() → the registry: each table holding rows about a
 * profile, in the order the operations visit them, and what each
 * operation does with its rows.
 */
PG_FUNCTION_INFO_V1(cdp_profile_tables);
Datum
cdp_profile_tables(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int t = 0; t < ntables; t++)
	{
		const CdpProfileTable *tb = tables[t];
		Datum		values[8];
		bool		nulls[8] = {0};

		values[0] = CStringGetTextDatum(tb->name);
		values[1] = CStringGetTextDatum(tb->relation);
		values[2] = Int32GetDatum(tb->order);
		values[3] = CStringGetTextDatum(rule_name(tb->on_merge));
		values[4] = CStringGetTextDatum(rule_name(tb->on_unmerge));
		values[5] = CStringGetTextDatum(rule_name(tb->on_forget));
		values[6] = BoolGetDatum(tb->after_merge != NULL);
		values[7] = BoolGetDatum(tb->after_unmerge != NULL);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
