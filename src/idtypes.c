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
 * backend when it is delivered.  Names are found through a hash table, so
 * neither a look-up nor a reload grows with the square of the types.
 *
 * With cdp.auto_create_identifier_types, the identifiers of types not known
 * yet wait in the message until its last identifier is read; then all of
 * its new types are created in one statement and the cache is reloaded
 * once (cdp_message_finish_identifiers).  A message may carry at most
 * cdp.max_identifiers_per_message identifiers, counted as they are given,
 * so a message over the cap is refused before any type is created for it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
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
static HTAB *type_slots = NULL; /* name -> slot, every slot ever made */
static bool types_valid = false;
static Oid	types_relid = InvalidOid;
static bool callback_registered = false;

typedef struct TypeSlot
{
	char		name[NAMEDATALEN];	/* the key; type names have at most 63 bytes */
	int			slot;
} TypeSlot;

/* An identifier whose type is created when the message is parsed whole. */
struct CdpPendingIdent
{
	char	   *type;
	char	   *raw;
	bool		strict;
	bool		alias_previous;
};

bool		cdp_auto_create_identifier_types = false;
int			cdp_max_identifiers_per_message = 100;

void
cdp_idtypes_init(void)
{
	DefineCustomBoolVariable("cdp.auto_create_identifier_types",
							 "Create unknown identifier types on first use instead of rejecting them.",
							 NULL, &cdp_auto_create_identifier_types, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cdp.max_identifiers_per_message",
							"Most identifiers one message may carry; a message with more is refused.",
							"Every userId, anonymousId, previousId, email, phone, externalIds entry and value of an identifiers object counts.",
							&cdp_max_identifiers_per_message, 100, 1, 1000000,
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

/* The slot of a type name, or NULL. */
static TypeSlot *
find_slot(const char *name, bool create, bool *found)
{
	if (strlen(name) >= NAMEDATALEN)
		return NULL;			/* no type has such a name */
	if (type_slots == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(TypeSlot);
		ctl.hcxt = types_cxt;
		type_slots = hash_create("pg_cdp identifier type names", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	return hash_search(type_slots, name, create ? HASH_ENTER : HASH_FIND, found);
}

static int
slot_for(const char *name)
{
	bool		found;
	TypeSlot   *ts = find_slot(name, true, &found);

	if (found)
		return ts->slot;
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
	ts->slot = ntypes;
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
	bool		found;
	TypeSlot   *ts;

	ensure_types();
	ts = find_slot(name, false, &found);
	return ts && found && type_live[ts->slot] ? ts->slot : -1;
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

static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * cdp_ident_types_create registers unknown types with the table's defaults
 * (cdp.auto_create_identifier_types), in one statement, and reloads the
 * cache once.  Names are inserted in sorted order, so that two sessions
 * creating some of the same types wait for each other in one order.
 */
void
cdp_ident_types_create(char **names, int n)
{
	static SPIPlanPtr plan = NULL;
	char	  **sorted;
	int			k = 0;
	Datum		values[1];

	if (n == 0)
		return;
	sorted = palloc(sizeof(char *) * n);
	memcpy(sorted, names, sizeof(char *) * n);
	qsort(sorted, n, sizeof(char *), cmp_cstring);
	for (int i = 0; i < n; i++)
		if (k == 0 || strcmp(sorted[k - 1], sorted[i]) != 0)
			sorted[k++] = sorted[i];
	if (plan == NULL)
	{
		Oid			types_arg[1] = {TEXTARRAYOID};

		plan = cdp_prepare("INSERT INTO cdp.identifier_types (type) "
						   "SELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, o) ORDER BY o "
						   "ON CONFLICT (type) DO NOTHING", 1, types_arg);
	}
	values[0] = cdp_text_array(sorted, k);
	cdp_spi_exec(plan, values, SPI_OK_INSERT);
	CommandCounterIncrement();
	types_valid = false;
	ensure_types();
	pfree(sorted);
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
 * Exact repeats inside one message are dropped.  A message's first few
 * identifiers are compared one by one; past them a hash table of them all
 * keeps a message with thousands linear.
 */
#define REPEAT_SCAN_MAX 16

typedef struct IdentKey
{
	int			type;
	const char *value;
} IdentKey;

static uint32
ident_key_hash(const void *key, Size keysize)
{
	const IdentKey *k = key;

	return hash_bytes((const unsigned char *) k->value, strlen(k->value)) ^
		hash_uint32((uint32) k->type);
}

static int
ident_key_match(const void *key1, const void *key2, Size keysize)
{
	const IdentKey *x = key1;
	const IdentKey *y = key2;

	return x->type != y->type || strcmp(x->value, y->value) != 0;
}

static bool
is_repeat(CdpMessage *msg, int ti, const char *value)
{
	IdentKey	key = {ti, value};
	bool		found;

	if (msg->nidents < REPEAT_SCAN_MAX)
	{
		for (int i = 0; i < msg->nidents; i++)
			if (msg->idents[i].type == ti && strcmp(msg->idents[i].value, value) == 0)
				return true;
		return false;
	}
	if (msg->ident_set == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(IdentKey);
		ctl.entrysize = sizeof(IdentKey);
		ctl.hash = ident_key_hash;
		ctl.match = ident_key_match;
		ctl.hcxt = CurrentMemoryContext;
		msg->ident_set = hash_create("pg_cdp identifiers of a message", 64, &ctl,
									 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
		for (int i = 0; i < msg->nidents; i++)
		{
			IdentKey	k = {msg->idents[i].type, msg->idents[i].value};

			hash_search(msg->ident_set, &k, HASH_ENTER, NULL);
		}
	}
	hash_search(msg->ident_set, &key, HASH_ENTER, &found);
	return found;
}

/*
 * add_known validates, normalizes and appends one identifier of a known
 * type to msg.  strict (the SQL functions) fails the message on an
 * invalid value; otherwise (Segment messages) the value is dropped and
 * recorded.
 */
static void
add_known(CdpMessage *msg, int ti, const char *raw, bool strict,
		  bool alias_previous)
{
	CdpIdentType *t = types[ti];
	const char *why = NULL;
	char	   *value;

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
	if (is_repeat(msg, ti, value))
		return;
	cdp_message_append_ident(msg, ti, value);
	msg->idents[msg->nidents - 1].alias_previous = alias_previous;
}

/*
 * add_one_identifier counts one identifier given to msg against the cap and
 * adds it, or, when its type is to be created, keeps it for
 * cdp_message_finish_identifiers.
 */
static void
add_one_identifier(CdpMessage *msg, const char *typename, const char *raw,
				   bool strict, bool alias_previous)
{
	int			ti;

	if (msg->err.sqlerrcode)
		return;
	if (!msg->lookup && ++msg->noffered > cdp_max_identifiers_per_message)
	{
		cdp_set_error(&msg->err, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					  psprintf("message carries more identifiers than cdp.max_identifiers_per_message (%d)",
							   cdp_max_identifiers_per_message),
					  "Every userId, anonymousId, previousId, email, phone, externalIds entry and value of an identifiers object counts.",
					  "Send fewer identifiers per message, or raise cdp.max_identifiers_per_message.");
		return;
	}
	ti = cdp_ident_type_index(typename);
	if (ti >= 0)
	{
		add_known(msg, ti, raw, strict, alias_previous);
		return;
	}
	if (cdp_valid_type_name(typename) && cdp_auto_create_identifier_types && !msg->lookup)
	{
		CdpPendingIdent *p;

		if (msg->npending % 16 == 0)
			msg->pending = msg->pending ?
				repalloc(msg->pending, sizeof(CdpPendingIdent) * (msg->npending + 16)) :
				palloc(sizeof(CdpPendingIdent) * 16);
		p = &msg->pending[msg->npending++];
		p->type = pstrdup(typename);
		p->raw = pstrdup(raw);
		p->strict = strict;
		p->alias_previous = alias_previous;
		return;
	}
	cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
				  psprintf("unknown identifier type \"%s\"", cdp_quote_text(typename)),
				  "Identifier types are the rows of cdp.identifier_types.",
				  cdp_valid_type_name(typename) ?
				  "Add it with INSERT INTO cdp.identifier_types (type) VALUES (...), or set cdp.auto_create_identifier_types." :
				  "Type names are a lower-case letter followed by up to 62 lower-case letters, digits and underscores.");
}

/*
 * cdp_message_finish_identifiers creates the types that msg's waiting
 * identifiers name, all in one statement, and adds those identifiers.
 * Every parser calls it once it has given the message its last identifier.
 */
void
cdp_message_finish_identifiers(CdpMessage *msg)
{
	char	  **names;

	if (msg->npending == 0)
		return;
	if (msg->err.sqlerrcode == 0)
	{
		names = palloc(sizeof(char *) * msg->npending);
		for (int i = 0; i < msg->npending; i++)
			names[i] = msg->pending[i].type;
		cdp_ident_types_create(names, msg->npending);
		pfree(names);
	}
	for (int i = 0; i < msg->npending && msg->err.sqlerrcode == 0; i++)
	{
		CdpPendingIdent *p = &msg->pending[i];
		int			ti = cdp_ident_type_index(p->type);

		if (ti < 0)
			cdp_set_error(&msg->err, ERRCODE_INVALID_PARAMETER_VALUE,
						  psprintf("unknown identifier type \"%s\"", p->type),
						  "The type was created for this message, and deleted before it was used.",
						  NULL);
		else
			add_known(msg, ti, p->raw, p->strict, p->alias_previous);
	}
	msg->npending = 0;
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

/*
 * Append one identifier given by the caller (Segment field or JSON pair).
 * Its type may be created only by cdp_message_finish_identifiers.
 */
void
cdp_message_add_identifier(CdpMessage *msg, const char *type, const char *raw,
						   bool strict)
{
	add_one_identifier(msg, type, raw, strict, false);
}

/* An alias's previousId: looked up as user_id, then as anonymous_id. */
void
cdp_message_add_previous_id(CdpMessage *msg, const char *raw)
{
	add_one_identifier(msg, "anonymous_id", raw, false, true);
}

static void parse_identifiers_object(Jsonb *identifiers, CdpMessage *msg, bool strict);

/*
 * cdp_parse_identifiers reads a {"type": "value", ...} object (a value may
 * also be an array of values) into msg, and finishes its identifiers (the
 * ones given before too).  Errors go to msg->err.
 */
void
cdp_parse_identifiers(Jsonb *identifiers, CdpMessage *msg, bool strict)
{
	parse_identifiers_object(identifiers, msg, strict);
	cdp_message_finish_identifiers(msg);
}

static void
parse_identifiers_object(Jsonb *identifiers, CdpMessage *msg, bool strict)
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
									   strict, false);
				}
				else if (v.type == jbvNumeric)
				{
					add_one_identifier(msg, key,
									   DatumGetCString(DirectFunctionCall1(numeric_out,
																		   NumericGetDatum(v.val.numeric))),
									   strict, false);
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
