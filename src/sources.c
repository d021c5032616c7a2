/*-------------------------------------------------------------------------
 *
 * sources.c
 *	  Who may write messages in a source's name.
 *
 * Message ids are deduplicated per source, so a message written in the name
 * of a source claims an id in that source's namespace: a role that could
 * name any source could make the genuine source's later message a duplicate
 * and have it dropped.  A source therefore names its writer (a role in
 * cdp.sources.writer); only members of that role, and of cdp_admin, may
 * write in its name.  The inbox records the role that loaded each row
 * (cdp.inbox.loaded_by, which ingest roles cannot set), and the drain
 * checks it; cdp.ingest_batch checks its caller.  A disabled or unknown
 * source is refused the same way, so disabling a source stops its waiting
 * messages too (they are kept as rejects).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "sources.h"
#include "text_fields.h"
#include "util.h"

typedef struct SourceVerdict
{
	const char *source;
	const char *role;
	CdpError	err;			/* sqlerrcode 0: may write */
} SourceVerdict;

static void
judge(SourceVerdict *v)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			argtypes[2] = {TEXTOID, TEXTOID};

		plan = cdp_prepare("SELECT s.enabled, r.oid IS NOT NULL AND "
						   "       (pg_catalog.pg_has_role(r.oid, 'cdp_admin', 'MEMBER') OR "
						   "        (s.writer IS NOT NULL AND pg_catalog.pg_has_role(r.oid, s.writer, 'MEMBER'))) "
						   "FROM cdp.sources s LEFT JOIN pg_catalog.pg_roles r ON r.rolname = $2 "
						   "WHERE s.name = $1", 2, argtypes);
	}
	args[0] = CStringGetTextDatum(v->source);
	args[1] = CStringGetTextDatum(v->role ? v->role : "");
	cdp_spi_exec(plan, args, SPI_OK_SELECT);
	memset(&v->err, 0, sizeof(v->err));
	if (SPI_processed == 0)
		cdp_set_error(&v->err, ERRCODE_INVALID_PARAMETER_VALUE,
					  psprintf("unknown source \"%s\"", cdp_quote_text(v->source)),
					  "Sources are the rows of cdp.sources.",
					  "Create it with cdp.create_source(name), or leave source empty for messages that belong to no source.");
	else if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		cdp_set_error(&v->err, ERRCODE_INSUFFICIENT_PRIVILEGE,
					  psprintf("role \"%s\" may not write messages for source \"%s\"",
							   v->role ? v->role : "(unknown)", v->source),
					  "Message ids are deduplicated per source, so only the source's writer role (cdp.sources.writer) and cdp_admin may write in its name.",
					  psprintf("If that role loads this source's messages: UPDATE cdp.sources SET writer = %s WHERE name = %s.",
							   quote_literal_cstr(v->role ? v->role : ""),
							   quote_literal_cstr(v->source)));
	else if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		cdp_set_error(&v->err, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
					  psprintf("source \"%s\" is disabled", v->source),
					  "Messages of a disabled source are kept as rejects.",
					  psprintf("To accept them again: UPDATE cdp.sources SET enabled = true WHERE name = %s.",
							   quote_literal_cstr(v->source)));
}

/*
 * cdp_check_sources refuses the messages of msgs[0..n) that name a source
 * their loader (role name, or each message's loaded_by when role is NULL)
 * may not write for; the reason goes into the message's error.  One look-up
 * per distinct (source, role) pair.
 */
void
cdp_check_sources(CdpMessage *msgs, int n, const char *role)
{
	SourceVerdict *seen = NULL;
	int			nseen = 0;

	for (int i = 0; i < n; i++)
	{
		CdpMessage *m = &msgs[i];
		const char *r = role ? role : m->loaded_by;
		SourceVerdict *v = NULL;

		if (m->source == NULL || m->err.sqlerrcode)
			continue;
		for (int k = 0; k < nseen && v == NULL; k++)
			if (strcmp(seen[k].source, m->source) == 0 &&
				((seen[k].role == NULL && r == NULL) ||
				 (seen[k].role && r && strcmp(seen[k].role, r) == 0)))
				v = &seen[k];
		if (v == NULL)
		{
			if (seen == NULL)
				seen = palloc(sizeof(SourceVerdict) * n);
			v = &seen[nseen++];
			v->source = m->source;
			v->role = r;
			judge(v);
		}
		if (v->err.sqlerrcode)
			m->err = v->err;
	}
}

/* The role a write is made by: the caller's, under SECURITY DEFINER too. */
char *
cdp_writing_role(void)
{
	return GetUserNameFromId(GetOuterUserId(), false);
}
