/*-------------------------------------------------------------------------
 *
 * campaign.c
 *	  Campaigns: cdp.create_campaign, cdp.drop_campaign, cdp.run_campaign,
 *	  cdp.schedule_campaign and cdp.unschedule_campaign, and the runner hook
 *	  other subsystems register with.
 *
 * A campaign sends one message to the members of a segment each time it
 * runs.  A run has a key, and a key is spent once per campaign name: the
 * cdp.campaign_runs row and every message of the run commit together, in
 * the caller's transaction, and a run of a key already run returns that
 * run's id and does nothing.  A NULL key is the minute the run starts, in
 * UTC, which is also pg_cron's granularity: a scheduled run started twice
 * in its minute sends once.  The messages' dedupe keys are
 * campaign/<name>/<run key>/<profile id>, so even a run whose row was
 * deleted by hand cannot send twice.
 *
 * The send is one statement over the segment's members, calling
 * cdp.enqueue (and so the contact policy) for each, and runs with the
 * rights of the campaign's owner: a role that can no longer enqueue can no
 * longer send through a campaign it made.  The holdout is sticky per
 * profile: a hash of the campaign name and the profile id, mod 100, below
 * the holdout percentage.
 *
 * Runners.  Another subsystem (next best action) registers a function
 * from its init; run_campaign offers each run to the runners in turn, and
 * the first that takes it does the sending instead.  With no taker the
 * campaign's own channel and template are sent, and a campaign with
 * neither is an error.
 *
 * Scheduling goes through pg_cron in the database that has it: the job is
 * named "cdp campaign <name>", and its command calls cdp.run_campaign with
 * the name quoted as a literal.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "campaign.h"
#include "clock.h"
#include "util.h"

#define MAX_CAMPAIGN_RUNNERS 8
#define MAX_NAME_BYTES 200
#define MAX_RUN_KEY_BYTES 100
/* how many names a hint lists */
#define HINT_NAMES 10

static CdpCampaignRunner runners[MAX_CAMPAIGN_RUNNERS];
static int	nrunners = 0;

void
cdp_register_campaign_runner(CdpCampaignRunner runner)
{
	if (nrunners >= MAX_CAMPAIGN_RUNNERS)
		elog(ERROR, "pg_cdp: too many campaign runners");
	runners[nrunners++] = runner;
}

/* A campaign as run_campaign and the schedule functions read it. */
typedef struct Campaign
{
	char	   *name;
	char	   *segment;
	char	   *channel;		/* NULL with template: offers */
	char	   *template;
	Datum		payload;
	int			holdout;
	Oid			owner;
	int64		cron_job;		/* 0: not scheduled */
} Campaign;

static char *
text_arg(FunctionCallInfo fcinfo, int arg, const char *what)
{
	if (PG_ARGISNULL(arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	return text_to_cstring(PG_GETARG_TEXT_PP(arg));
}

/* names and run keys: printable, not empty, bounded */
static void
check_label(const char *s, int max, const char *what)
{
	size_t		len = strlen(s);

	if (len == 0 || len > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a campaign %s must have 1 to %d bytes", what, max)));
	for (const char *p = s; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a campaign %s cannot contain control characters", what)));
}

static void
exec_args(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "pg_cdp: campaign statement failed: %s", SPI_result_code_string(rc));
}

/*
 * "a, b, c" of the first names a query returns (one text column), or NULL
 * when it returns none: what a hint offers instead of an unknown name.
 */
static char *
list_names(const char *sql, int nargs, Oid *types, Datum *values)
{
	StringInfoData b;

	exec_args(sql, nargs, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return NULL;
	initStringInfo(&b);
	for (uint64 i = 0; i < SPI_processed && i < HINT_NAMES; i++)
		appendStringInfo(&b, "%s%s", i ? ", " : "",
						 quote_literal_cstr(SPI_getvalue(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1)));
	if (SPI_processed > HINT_NAMES)
		appendStringInfoString(&b, ", ...");
	return b.data;
}

static bool
exists1(const char *sql, const char *arg)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(arg)};

	exec_args(sql, 1, types, values, NULL, SPI_OK_SELECT);
	return SPI_processed > 0;
}

/*
 * The campaign named, locked (SHARE against a drop while it runs, NO KEY
 * UPDATE against another schedule); errors if none.
 */
static Campaign *
load_campaign(const char *name, const char *lock)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	Campaign   *c;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	exec_args(psprintf("SELECT name, segment, channel, template, payload, holdout, owner, "
					   "cron_job FROM cdp.campaigns WHERE name = $1 FOR %s", lock),
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("campaign \"%s\" does not exist", name),
				 errhint("Campaigns are rows of cdp.campaigns; cdp.create_campaign makes one.")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	c = palloc0(sizeof(Campaign));
	c->name = SPI_getvalue(tup, desc, 1);
	c->segment = SPI_getvalue(tup, desc, 2);
	c->channel = SPI_getvalue(tup, desc, 3);
	c->template = SPI_getvalue(tup, desc, 4);
	c->payload = SPI_getbinval(tup, desc, 5, &isnull);
	c->payload = PointerGetDatum(DatumGetJsonbPCopy(c->payload));
	c->holdout = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	c->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	c->cron_job = DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
	if (isnull)
		c->cron_job = 0;
	return c;
}

/*
 * cdp.create_campaign(name, segment, channel, template, payload, holdout)
 * → bigint
 */
PG_FUNCTION_INFO_V1(cdp_create_campaign);

Datum
cdp_create_campaign(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "a campaign name");
	char	   *segment = text_arg(fcinfo, 1, "a campaign's segment");
	char	   *channel = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *template = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	Jsonb	   *payload;
	int			holdout;
	Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT4OID, OIDOID};
	Datum		values[7];
	char		nulls[7] = "       ";
	bool		isnull;
	int64		id;

	check_label(name, MAX_NAME_BYTES, "name");
	if (PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a campaign's payload must not be null"),
				 errhint("Pass '{}' for a message with no payload.")));
	payload = PG_GETARG_JSONB_P(4);
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a campaign's payload must be a JSON object")));
	if (PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a campaign's holdout must not be null"),
				 errhint("Pass 0 to send to the whole audience.")));
	holdout = PG_GETARG_INT32(5);
	if (holdout < 0 || holdout > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a campaign's holdout is a percentage from 0 to 100, not %d", holdout)));
	if ((channel == NULL) != (template == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a campaign needs both a channel and a template, or neither"),
				 errhint("Without both, next best action's offers decide what each member gets.")));

	SPI_connect();
	if (exists1("SELECT 1 FROM cdp.campaigns WHERE name = $1", name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("campaign \"%s\" already exists", name),
				 errhint("Drop it first with cdp.drop_campaign(%s).", quote_literal_cstr(name))));
	if (!exists1("SELECT 1 FROM cdp.segments WHERE name = $1", segment))
	{
		char	   *known = list_names("SELECT name FROM cdp.segments ORDER BY name", 0, NULL, NULL);

		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("segment \"%s\" does not exist", segment),
				 known ? errhint("Segments: %s.", known)
				 : errhint("There is no segment yet: cdp.create_segment makes one.")));
	}
	if (channel != NULL)
	{
		Oid			ttypes[2] = {TEXTOID, TEXTOID};
		Datum		tvalues[2];

		if (!exists1("SELECT 1 FROM cdp.channels WHERE name = $1", channel))
		{
			char	   *known = list_names("SELECT name FROM cdp.channels ORDER BY name",
										   0, NULL, NULL);

			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("channel \"%s\" does not exist", channel),
					 known ? errhint("Channels: %s.", known)
					 : errhint("There is no channel yet: channels are rows of cdp.channels.")));
		}
		tvalues[0] = CStringGetTextDatum(template);
		tvalues[1] = CStringGetTextDatum(channel);
		exec_args("SELECT channel FROM cdp.templates WHERE name = $1", 1, ttypes, tvalues,
				  NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
		{
			char	   *known = list_names("SELECT name FROM cdp.templates WHERE channel = $1 "
										   "ORDER BY name", 1, ttypes, &tvalues[1]);

			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("template \"%s\" does not exist", template),
					 known ? errhint("Templates of channel \"%s\": %s.", channel, known)
					 : errhint("Channel \"%s\" has no template yet: templates are rows of cdp.templates.",
							   channel)));
		}
		else
		{
			char	   *its = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (strcmp(its, channel) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("template \"%s\" is for channel \"%s\", not \"%s\"",
								template, its, channel)));
		}
	}

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(segment);
	values[2] = channel ? CStringGetTextDatum(channel) : (Datum) 0;
	values[3] = template ? CStringGetTextDatum(template) : (Datum) 0;
	values[4] = JsonbPGetDatum(payload);
	values[5] = Int32GetDatum(holdout);
	/* the role that called, not this function's owner */
	values[6] = ObjectIdGetDatum(GetOuterUserId());
	if (!channel)
		nulls[2] = nulls[3] = 'n';
	exec_args("INSERT INTO cdp.campaigns (name, segment, channel, template, payload, holdout, owner) "
			  "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING campaign_id",
			  7, types, values, nulls, SPI_OK_INSERT_RETURNING);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_INT64(id);
}

/* ---- pg_cron ---- */

/* pg_cron keeps its functions and jobs in schema cron, wherever it is installed */
static bool
have_pg_cron(void)
{
	exec_args("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	return SPI_processed == 1;
}

static void
require_pg_cron(void)
{
	const char *dbname;

	if (have_pg_cron())
		return;
	dbname = GetConfigOption("cron.database_name", true, false);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("pg_cron is not installed in database \"%s\"",
					get_database_name(MyDatabaseId)),
			 errdetail("Campaigns are scheduled through pg_cron's cron.schedule."),
			 dbname
			 ? errhint("CREATE EXTENSION pg_cron in the database named by cron.database_name (\"%s\").",
					   dbname)
			 : errhint("Add pg_cron to shared_preload_libraries, then CREATE EXTENSION pg_cron in the database named by cron.database_name.")));
}

/*
 * Removes the campaign's pg_cron job if pg_cron and the job still exist
 * (either may have been dropped by hand), and forgets the schedule.
 * Returns whether the campaign had one.
 */
static bool
unschedule(Campaign *c)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(c->name)};
	bool		had = c->cron_job != 0;

	if (had)
	{
		if (have_pg_cron())
		{
			Oid			jtypes[1] = {INT8OID};
			Datum		jvalues[1] = {Int64GetDatum(c->cron_job)};

			exec_args("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid = $1",
					  1, jtypes, jvalues, NULL, SPI_OK_SELECT);
		}
	}
	exec_args("UPDATE cdp.campaigns SET schedule = NULL, cron_job = NULL WHERE name = $1",
			  1, types, values, NULL, SPI_OK_UPDATE);
	return had;
}

/* cdp.schedule_campaign(name, cron) → bigint, the pg_cron job id */
PG_FUNCTION_INFO_V1(cdp_schedule_campaign);

Datum
cdp_schedule_campaign(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "a campaign name");
	char	   *cron = text_arg(fcinfo, 1, "a schedule");
	Campaign   *c;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	Oid			utypes[3] = {TEXTOID, TEXTOID, INT8OID};
	Datum		uvalues[3];
	bool		isnull;
	int64		job;

	SPI_connect();
	c = load_campaign(name, "NO KEY UPDATE");
	require_pg_cron();
	values[0] = CStringGetTextDatum(psprintf("cdp campaign %s", c->name));
	values[1] = CStringGetTextDatum(cron);
	values[2] = CStringGetTextDatum(psprintf("SELECT cdp.run_campaign(%s)",
											 quote_literal_cstr(c->name)));
	/* a job of the same name is replaced by pg_cron itself */
	exec_args("SELECT cron.schedule($1, $2, $3)", 3, types, values, NULL, SPI_OK_SELECT);
	job = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (c->cron_job != 0 && c->cron_job != job)
		unschedule(c);
	uvalues[0] = values[0] = CStringGetTextDatum(c->name);
	uvalues[1] = values[1];
	uvalues[2] = Int64GetDatum(job);
	exec_args("UPDATE cdp.campaigns SET schedule = $2, cron_job = $3 WHERE name = $1",
			  3, utypes, uvalues, NULL, SPI_OK_UPDATE);
	SPI_finish();
	PG_RETURN_INT64(job);
}

/* cdp.unschedule_campaign(name) → boolean */
PG_FUNCTION_INFO_V1(cdp_unschedule_campaign);

Datum
cdp_unschedule_campaign(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "a campaign name");
	bool		had;

	SPI_connect();
	had = unschedule(load_campaign(name, "NO KEY UPDATE"));
	SPI_finish();
	PG_RETURN_BOOL(had);
}

/* cdp.drop_campaign(name) */
PG_FUNCTION_INFO_V1(cdp_drop_campaign);

Datum
cdp_drop_campaign(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "a campaign name");
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	SPI_connect();
	unschedule(load_campaign(name, "UPDATE"));
	exec_args("DELETE FROM cdp.campaigns WHERE name = $1", 1, types, values, NULL, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- runs ---- */

/* the run key of "now": the current minute in UTC, 2026-12-02T16:05Z */
static char *
minute_key(TimestampTz now)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(now, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return psprintf("%04d-%02d-%02dT%02d:%02dZ", tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min);
}

/*
 * The campaign's own message to every member not held out, as one
 * statement run with the owner's rights; then the counts, from the
 * messages it wrote.
 */
static void
send_message(Campaign *c, int32 segment_id, CdpCampaignRun *run)
{
	static SPIPlanPtr send_plan = NULL;
	static SPIPlanPtr count_plan = NULL;
	Datum		values[7];
	Datum		ids;
	bool		isnull;
	ErrorData  *err;

	if (send_plan == NULL)
	{
		Oid			types[7] = {TEXTOID, INT4OID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID};

		send_plan = cdp_prepare(
			"WITH m AS ("
			"  SELECT sm.profile_id, "
			"         ((hashtextextended($1 || '/' || sm.profile_id, 0) % 100) + 100) % 100 < $7 "
			"           AS held "
			"  FROM cdp.segment_members sm WHERE sm.segment_id = $2), "
			"s AS ("
			"  SELECT m.held, CASE WHEN NOT m.held THEN cdp.enqueue(m.profile_id, $3, $4, $5, NULL, "
			"           'campaign/' || $1 || '/' || $6 || '/' || m.profile_id) END AS outbox_id "
			"  FROM m ORDER BY m.profile_id) "
			"SELECT count(*), count(*) FILTER (WHERE s.held), "
			"       coalesce(array_agg(s.outbox_id) FILTER (WHERE s.outbox_id IS NOT NULL), '{}') "
			"FROM s",
			7, types);
	}
	if (count_plan == NULL)
	{
		Oid			types[1] = {INT8ARRAYOID};

		count_plan = cdp_prepare(
			"SELECT coalesce(sum(x.n) FILTER (WHERE NOT x.sup), 0)::int8, "
			"       jsonb_object_agg(x.reason, x.n) FILTER (WHERE x.sup) "
			"FROM (SELECT o.status = 'suppressed' AS sup, coalesce(o.reason, 'unknown') AS reason, "
			"             count(*) AS n "
			"      FROM cdp.outbox o WHERE o.outbox_id = ANY($1) GROUP BY 1, 2) x",
			1, types);
	}
	values[0] = CStringGetTextDatum(c->name);
	values[1] = Int32GetDatum(segment_id);
	values[2] = CStringGetTextDatum(c->channel);
	values[3] = CStringGetTextDatum(c->template);
	values[4] = c->payload;
	values[5] = CStringGetTextDatum(run->run_key);
	values[6] = Int32GetDatum(c->holdout);
	err = cdp_exec_guarded(send_plan, values, NULL, c->owner, SPI_OK_SELECT, "a campaign's send");
	if (err)
		ereport(ERROR,
				(errcode(err->sqlerrcode),
				 errmsg("campaign \"%s\": %s", c->name, err->message ? err->message : "send failed"),
				 err->detail ? errdetail("%s", err->detail) : 0,
				 err->hint ? errhint("%s", err->hint) : 0));
	run->audience = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												&isnull));
	run->held_out = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
												&isnull));
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	ids = PointerGetDatum(PG_DETOAST_DATUM_COPY(ids));

	cdp_spi_exec(count_plan, &ids, SPI_OK_SELECT);
	run->enqueued = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												&isnull));
	run->suppressed = NULL;
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull)
			run->suppressed = DatumGetJsonbPCopy(d);
	}
}

/* cdp.run_campaign(name, run_key) → bigint, the run id */
PG_FUNCTION_INFO_V1(cdp_run_campaign);

Datum
cdp_run_campaign(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr start_plan = NULL;
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr finish_plan = NULL;
	char	   *name = text_arg(fcinfo, 0, "a campaign name");
	TimestampTz now = cdp_now();
	char	   *run_key;
	Campaign   *c;
	CdpCampaignRun run;
	int32		segment_id;
	bool		taken = false;
	bool		isnull;
	Datum		values[6];
	char		nulls[6] = "      ";

	if (PG_ARGISNULL(1))
		run_key = minute_key(now);
	else
	{
		run_key = text_to_cstring(PG_GETARG_TEXT_PP(1));
		check_label(run_key, MAX_RUN_KEY_BYTES, "run key");
		/*
		 * The dedupe key campaign/<name>/<run key>/<profile id> is read from
		 * the right: with a slash in the key, name "a" and key "b/c" would
		 * collide with name "a/b" and key "c".
		 */
		if (strchr(run_key, '/') != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a campaign run key cannot contain \"/\""),
					 errhint("Use another separator, as in 2026-w49 or 2026-12-07.")));
	}

	SPI_connect();
	c = load_campaign(name, "SHARE");
	{
		Oid			types[1] = {TEXTOID};
		Datum		v[1] = {CStringGetTextDatum(c->segment)};

		exec_args("SELECT segment_id FROM cdp.segments WHERE name = $1", 1, types, v, NULL,
				  SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("segment \"%s\" of campaign \"%s\" does not exist", c->segment, c->name),
					 errhint("Create the segment again, or drop the campaign.")));
		segment_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												 &isnull));
	}

	{
		Oid			types[1] = {OIDOID};
		Datum		v[1] = {ObjectIdGetDatum(c->owner)};

		exec_args("SELECT 1 FROM pg_catalog.pg_roles WHERE oid = $1", 1, types, v, NULL,
				  SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the role that created campaign \"%s\" no longer exists", c->name),
					 errdetail("A campaign's sends run with the rights of its creator."),
					 errhint("Drop the campaign and create it again as another role.")));
	}

	/*
	 * A concurrent run of the same key waits here for the first to commit,
	 * then finds its row.
	 */
	if (start_plan == NULL)
	{
		Oid			types[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};

		start_plan = cdp_prepare("INSERT INTO cdp.campaign_runs (campaign, run_key, started_at) "
								 "VALUES ($1, $2, $3) ON CONFLICT (campaign, run_key) DO NOTHING "
								 "RETURNING run_id", 3, types);
		find_plan = cdp_prepare("SELECT run_id FROM cdp.campaign_runs "
								"WHERE campaign = $1 AND run_key = $2", 2, types);
	}
	values[0] = CStringGetTextDatum(c->name);
	values[1] = CStringGetTextDatum(run_key);
	values[2] = TimestampTzGetDatum(now);
	cdp_spi_exec(start_plan, values, SPI_OK_INSERT_RETURNING);
	memset(&run, 0, sizeof(run));
	if (SPI_processed == 1)
		run.run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												 &isnull));
	else
	{
		int64		id;

		cdp_spi_exec(find_plan, values, SPI_OK_SELECT);
		if (SPI_processed != 1)
			elog(ERROR, "pg_cdp: run \"%s\" of campaign \"%s\" vanished", run_key, c->name);
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
		PG_RETURN_INT64(id);
	}

	run.campaign = c->name;
	run.segment = c->segment;
	run.run_key = run_key;
	run.owner = c->owner;
	run.holdout = c->holdout;
	for (int i = 0; i < nrunners && !taken; i++)
		taken = runners[i] (&run);
	if (!taken)
	{
		if (c->channel == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("campaign \"%s\" has no message and no offers", c->name),
					 errdetail("It has no channel and template, and no runner took it."),
					 errhint("Create the campaign again with a channel and a template, or give it offers to arbitrate.")));
		send_message(c, segment_id, &run);
	}

	if (finish_plan == NULL)
	{
		Oid			types[6] = {INT8OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, JSONBOID};

		finish_plan = cdp_prepare("UPDATE cdp.campaign_runs SET finished_at = $2, audience = $3, "
								  "enqueued = $4, held_out = $5, suppressed = coalesce($6, '{}') "
								  "WHERE run_id = $1", 6, types);
	}
	values[0] = Int64GetDatum(run.run_id);
	values[1] = TimestampTzGetDatum(cdp_now());
	values[2] = Int64GetDatum(run.audience);
	values[3] = Int64GetDatum(run.enqueued);
	values[4] = Int64GetDatum(run.held_out);
	values[5] = run.suppressed ? JsonbPGetDatum(run.suppressed) : (Datum) 0;
	if (!run.suppressed)
		nulls[5] = 'n';
	if (SPI_execute_plan(finish_plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "pg_cdp: could not finish campaign run");
	SPI_finish();
	PG_RETURN_INT64(run.run_id);
}
