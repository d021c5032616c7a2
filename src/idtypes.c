/*-------------------------------------------------------------------------
 *
 * idtypes.c
 *	  The identifier type registry: a per-backend cache of
 *	  cdp.identifier_types, its invalidation, blocked-value matching and the
 *	  parsing of the identifiers object every ingest function takes.
 *
 * The cache is read on every ingest call, so it is not re-read per call: a
 * statement trigger on cdp.identifier_types sends a relcache invalidation
 * for the table, and the callback registered here drops the cache in every
 * backend when it is delivered.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "idtypes.h"
#include "normalize.h"
#include "text_fields.h"
#include "util.h"

/*
 * Each type keeps its slot (its index) for the life of the backend: a
 * reload updates slots in place and appends new types, so the indexes that
 * parsed messages hold stay valid even when an invalidation arrives in the
 * middle of a batch.
 */
static MemoryContext types_cxt = NULL;	/* slots and names: never freed */
static MemoryContext blocked_cxt = NULL;	/* patterns of the current load */
static CdpIdentType **types = NULL;
static bool *type_live = NULL;
static int	ntypes = 0;
static int	maxtypes = 0;
static bool types_valid = false;
static Oid	types_relid = InvalidOid;
static bool callback_registered = false;

bool		cdp_auto_create_identifier_types = false;

void
cdp_idtypes_init(void)
{
	DefineCustomBoolVariable("cdp.auto_create_identifier_types",
							 "Create unknown identifier types on first use instead of rejecting them.",
							 NULL, &cdp_auto_create_identifier_types, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

static void
types_inval_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == types_relid)
		types_valid = false;
}

static CdpNormalizer
normalizer_from_name(const char *s)
{
	if (strcmp(s, "email") == 0)
		return CDP_NORM_EMAIL;
	if (strcmp(s, "phone") == 0)
		return CDP_NORM_PHONE;
	if (strcmp(s, "lower") == 0)
		return CDP_NORM_LOWER;
	return CDP_NORM_TRIM;
}

static int
slot_for(const char *name)
{
	for (int i = 0; i < ntypes; i++)
		if (strcmp(types[i]->name, name) == 0)
			return i;
	if (ntypes >= maxtypes)
	{
		MemoryContext old = MemoryContextSwitchTo(types_cxt);

		maxtypes = Max(16, maxtypes * 2);
		types = types ? repalloc(types, sizeof(CdpIdentType *) * maxtypes) :
			palloc(sizeof(CdpIdentType *) * maxtypes);
		type_live = type_live ? repalloc(type_live, sizeof(bool) * maxtypes) :
			palloc(sizeof(bool) * maxtypes);
		MemoryContextSwitchTo(old);
	}
	types[ntypes] = MemoryContextAllocZero(types_cxt, sizeof(CdpIdentType));
	types[ntypes]->name = MemoryContextStrdup(types_cxt, name);
	type_live[ntypes] = false;
	return ntypes++;
}

/* Load the registry.  The caller is connected to SPI. */
static void
load_types(void)
{
	MemoryContext old;
	int			rc;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(types_inval_callback, (Datum) 0);
		callback_registered = true;
	}
	if (types_cxt == NULL)
		types_cxt = AllocSetContextCreate(CacheMemoryContext, "pg_cdp identifier types",
										  ALLOCSET_SMALL_SIZES);
	if (blocked_cxt != NULL)
		MemoryContextDelete(blocked_cxt);
	blocked_cxt = AllocSetContextCreate(types_cxt, "pg_cdp blocked values",
										ALLOCSET_SMALL_SIZES);
	types_relid = get_relname_relid("identifier_types", get_namespace_oid("cdp", false));

	/* Mark valid first: an invalidation during the query marks it stale again. */
	types_valid = true;
	/* One anchored alternation per type: one regex run per identifier. */
	rc = SPI_execute("SELECT type, max_per_profile, priority, normalizer, "
					 "       CASE WHEN cardinality(blocked_values) > 0 THEN "
					 "       ARRAY['^(?:' || array_to_string(ARRAY(SELECT '(?:' || b || ')' "
					 "             FROM unnest(blocked_values) b WHERE b IS NOT NULL), '|') || ')$'] "
					 "       END "
					 "FROM cdp.identifier_types ORDER BY type", false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not read cdp.identifier_types");

	for (int i = 0; i < ntypes; i++)
		type_live[i] = false;
	old = MemoryContextSwitchTo(blocked_cxt);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		arr;
		Datum	   *elems;
		bool	   *nulls;
		int			nelems;
		int			slot = slot_for(SPI_getvalue(tup, desc, 1));
		CdpIdentType *t = types[slot];

		type_live[slot] = true;
		t->max_per_profile = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		t->priority = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		t->normalizer = normalizer_from_name(SPI_getvalue(tup, desc, 4));
		t->nblocked = 0;
		t->blocked = NULL;
		arr = SPI_getbinval(tup, desc, 5, &isnull);
		if (!isnull)
		{
			deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false,
							  TYPALIGN_INT, &elems, &nulls, &nelems);
			t->blocked = palloc(sizeof(text *) * Max(nelems, 1));
			for (int j = 0; j < nelems; j++)
				if (!nulls[j])
					t->blocked[t->nblocked++] = DatumGetTextPCopy(elems[j]);
		}
	}
	MemoryContextSwitchTo(old);
}

static void
ensure_types(void)
{
	if (!types_valid)
		load_types();
}

int
cdp_ident_type_index(const char *name)
{
	ensure_types();
	for (int i = 0; i < ntypes; i++)
		if (type_live[i] && strcmp(types[i]->name, name) == 0)
			return i;
	return -1;
}

CdpIdentType *
cdp_ident_type(const char *name)
{
	int			i = cdp_ident_type_index(name);

	return i < 0 ? NULL : types[i];
}

CdpIdentType *
cdp_ident_type_at(int index)
{
	ensure_types();
	return types[index];
}

int
cdp_ident_type_count(void)
{
	ensure_types();
	return ntypes;
}

/*
 * cdp_ident_type_create registers an unknown type with the table's
 * defaults (cdp.auto_create_identifier_types) and returns its index.
 */
int
cdp_ident_type_create(const char *name)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	if (plan == NULL)
	{
		Oid			types_arg[1] = {TEXTOID};

		plan = cdp_prepare("INSERT INTO cdp.identifier_types (type) VALUES ($1) "
						   "ON CONFLICT (type) DO NOTHING", 1, types_arg);
	}
	values[0] = CStringGetTextDatum(name);
	cdp_spi_exec(plan, values, SPI_OK_INSERT);
	CommandCounterIncrement();
	types_valid = false;
	return cdp_ident_type_index(name);
}

/* Does a normalized value match one of the type's blocked patterns? */
bool
cdp_ident_blocked(CdpIdentType *type, const char *value)
{
	text	   *v;

	if (type->nblocked == 0)
		return false;
	v = cstring_to_text(value);
	for (int i = 0; i < type->nblocked; i++)
		if (DatumGetBool(DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
												 PointerGetDatum(v),
												 PointerGetDatum(type->blocked[i]))))
			return true;
	return false;
}

/*
 * add_one_identifier validates, normalizes and appends one identifier
 * to msg.  strict (the SQL functions) fails the message on an invalid
 * value; otherwise (Segment messages) the value is dropped and recorded.
 */
static void
add_one_identifier(CdpMessage *msg, const char *typename, const char *raw,
				   bool strict)
{
	int			ti;
	CdpIdentType *t;
	const char *why = NULL;
	char	   *value;

	if (msg->err.sqlerrcode)
		return;
	ti = cdp_ident_type_index(typename);
	if (ti < 0)
	{
		bool		valid_name = cdp_valid_type_name(typename);

		if (cdp_auto_create_identifier_types && valid_name)
			ti = cdp_ident_type_create(typename);
		if (ti < 0)
		{
			cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
						  psprintf("unknown identifier type \"%s\"", cdp_quote_text(typename)),
						  "Identifier types are the rows of cdp.identifier_types.",
						  valid_name ?
						  "Add it with INSERT INTO cdp.identifier_types (type) VALUES (...), or set cdp.auto_create_identifier_types." :
						  "Type names are a lower-case letter followed by up to 62 lower-case letters, digits and underscores.");
			return;
		}
	}
	t = types[ti];
	value = cdp_normalize_value(t, raw, &why);
	if (value == NULL)
	{
		if (strict)
		{
			cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
						  psprintf("invalid %s identifier", t->name),
						  psprintf("Identifier \"%s\": %s.", t->name, why),
						  NULL);
			return;
		}
		cdp_add_issue(msg, t->name, raw, psprintf("invalid: %s", why));
		return;
	}
	if (cdp_ident_blocked(t, value))
	{
		cdp_add_issue(msg, t->name, value, "blocked value");
		return;
	}
	/* Drop exact repeats inside one message. */
	for (int i = 0; i < msg->nidents; i++)
		if (msg->idents[i].type == ti && strcmp(msg->idents[i].value, value) == 0)
			return;
	cdp_message_append_ident(msg, ti, value);
}

/* Append an already checked identifier; the array grows four at a time. */
void
cdp_message_append_ident(CdpMessage *msg, int type, char *value)
{
	if (msg->nidents % 4 == 0)
		msg->idents = msg->idents ?
			repalloc(msg->idents, sizeof(CdpIdent) * (msg->nidents + 4)) :
			palloc(sizeof(CdpIdent) * 4);
	msg->idents[msg->nidents].type = type;
	msg->idents[msg->nidents].value = value;
	msg->idents[msg->nidents].alias_previous = false;
	msg->idents[msg->nidents].node = -1;
	msg->idents[msg->nidents].entry = NULL;
	msg->nidents++;
}

void
cdp_add_issue(CdpMessage *msg, const char *type, const char *value,
			  const char *reason)
{
	msg->issues = msg->issues ?
		repalloc(msg->issues, sizeof(CdpIssue) * (msg->nissues + 1)) :
		palloc(sizeof(CdpIssue) * 4);
	msg->issues[msg->nissues].type = pstrdup(type);
	msg->issues[msg->nissues].value = pstrdup(value);
	msg->issues[msg->nissues].reason = pstrdup(reason);
	msg->nissues++;
}

/* Append one identifier given by the caller (Segment field or JSON pair). */
void
cdp_message_add_identifier(CdpMessage *msg, const char *type, const char *raw,
						   bool strict)
{
	add_one_identifier(msg, type, raw, strict);
}

/*
 * cdp_parse_identifiers reads a {"type": "value", ...} object (a value may
 * also be an array of values) into msg.  Errors go to msg->err.
 */
void
cdp_parse_identifiers(Jsonb *identifiers, CdpMessage *msg, bool strict)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	int			depth = 0;

	if (identifiers == NULL)
	{
		cdp_set_error(&msg->err, ERRCODE_NULL_VALUE_NOT_ALLOWED,
					  "identifiers must not be null",
					  "Every event needs at least one identifier.",
					  "Pass an object such as {\"email\": \"alice@example.com\"}.");
		return;
	}
	if (!JB_ROOT_IS_OBJECT(identifiers) || JB_ROOT_IS_SCALAR(identifiers))
	{
		cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
					  "identifiers must be a JSON object",
					  "The identifiers argument maps identifier types to values.",
					  "Pass an object such as {\"email\": \"alice@example.com\"}.");
		return;
	}

	it = JsonbIteratorInit(&identifiers->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (msg->err.sqlerrcode)
			return;
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				depth++;
				if (depth > 2 || (tok == WJB_BEGIN_OBJECT && depth > 1))
				{
					cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
								  psprintf("identifier \"%s\" must be a string or an array of strings",
										   key ? cdp_quote_text(key) : ""),
								  NULL, NULL);
					return;
				}
				break;
			case WJB_END_OBJECT:
			case WJB_END_ARRAY:
				depth--;
				break;
			case WJB_KEY:
				key = pnstrdup(v.val.string.val, v.val.string.len);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				if (v.type == jbvNull)
					break;		/* {"email": null} means "no email" */
				if (v.type == jbvString)
				{
					add_one_identifier(msg, key,
									   pnstrdup(v.val.string.val, v.val.string.len),
									   strict);
				}
				else if (v.type == jbvNumeric)
				{
					add_one_identifier(msg, key,
									   DatumGetCString(DirectFunctionCall1(numeric_out,
																		   NumericGetDatum(v.val.numeric))),
									   strict);
				}
				else
				{
					cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
								  psprintf("identifier \"%s\" must be a string", cdp_quote_text(key)),
								  "Identifier values are strings (numbers are accepted and read as text).",
								  NULL);
					return;
				}
				break;
			default:
				break;
		}
	}
}

/*
 * Trigger on cdp.identifier_types: tell every backend to reload the cache.
 */
PG_FUNCTION_INFO_V1(cdp_identifier_types_changed);
Datum
cdp_identifier_types_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cdp_identifier_types_changed must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	types_valid = false;
	return PointerGetDatum(NULL);
}
