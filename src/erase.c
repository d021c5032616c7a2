/*-------------------------------------------------------------------------
 *
 * erase.c
 *	  cdp.unmerge and cdp.forget: a merge undone, a person erased.
 *
 * Both stand above the identity code: they lock identifiers and profiles
 * in the global order, wait for the drainers' writes to the profiles they
 * empty (drainers.c), and visit every per-profile table of the registry
 * (registry.c) for the rows to move back or to delete.  cdp.forget also
 * erases the messages still waiting that name the person, parsed by the
 * drain's own parser (inbox.c) and found cheaply first by the normalizers'
 * pre-filters (normalize.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "clock.h"
#include "drainers.h"
#include "idtypes.h"
#include "inbox.h"
#include "locks.h"
#include "merge.h"
#include "message.h"
#include "normalize.h"
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
 * The identifiers of the people cdp.forget erases, sorted by type and
 * value: a waiting message that carries one of them is erased with them.
 */
typedef struct PersonIdent
{
	int			type;			/* identifier type index */
	char	   *value;			/* normalized */
} PersonIdent;

typedef struct Person
{
	PersonIdent *idents;
	int			n;
	int		   *types;			/* the distinct types among them */
	int			ntypes;
	int			user_id;		/* type indexes, -1 if unknown */
	int			anonymous_id;
} Person;

static int
cmp_person_ident(const void *a, const void *b)
{
	const PersonIdent *x = a;
	const PersonIdent *y = b;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	return strcmp(x->value, y->value);
}

/* Sort and deduplicate the identifiers; note their types. */
static void
person_finish(Person *p)
{
	int			k = 0;

	qsort(p->idents, p->n, sizeof(PersonIdent), cmp_person_ident);
	for (int i = 0; i < p->n; i++)
		if (k == 0 || cmp_person_ident(&p->idents[k - 1], &p->idents[i]) != 0)
			p->idents[k++] = p->idents[i];
	p->n = k;
	p->types = palloc(sizeof(int) * Max(p->n, 1));
	p->ntypes = 0;
	for (int i = 0; i < p->n; i++)
		if (p->ntypes == 0 || p->types[p->ntypes - 1] != p->idents[i].type)
			p->types[p->ntypes++] = p->idents[i].type;
	p->user_id = cdp_ident_type_index("user_id");
	p->anonymous_id = cdp_ident_type_index("anonymous_id");
}

static bool
person_has(const Person *p, int type, const char *value)
{
	PersonIdent key;

	if (type < 0 || value == NULL)
		return false;
	key.type = type;
	key.value = (char *) value;
	return bsearch(&key, p->idents, p->n, sizeof(PersonIdent), cmp_person_ident) != NULL;
}

static bool
person_has_type(const Person *p, int type)
{
	for (int i = 0; i < p->ntypes; i++)
		if (p->types[i] == type)
			return true;
	return false;
}

/*
 * A message the drain accepts names the person when an identifier it
 * carries, as the drain normalized it, is one of theirs.  The drain reads
 * an alias's previousId as a user_id when one is known, else as an
 * anonymous_id: either names the person.
 */
static bool
message_names_person(const Person *p, const CdpMessage *m)
{
	for (int i = 0; i < m->nidents; i++)
	{
		const CdpIdent *id = &m->idents[i];

		if (id->alias_previous ?
			person_has(p, p->user_id, id->value) || person_has(p, p->anonymous_id, id->value) :
			person_has(p, id->type, id->value))
			return true;
	}
	return false;
}

/*
 * Does value, the value of key in a line the drain would not accept, name
 * the person?  See text_names_person for the keys.
 */
static bool
value_names_person(const Person *p, const char *key, const char *value)
{
	int			cand[2];
	int			ncand = 0;
	bool		any_type = false;

	if (strcmp(key, "userId") == 0)
		cand[ncand++] = p->user_id;
	else if (strcmp(key, "anonymousId") == 0)
		cand[ncand++] = p->anonymous_id;
	else if (strcmp(key, "previousId") == 0)
	{
		cand[ncand++] = p->user_id;
		cand[ncand++] = p->anonymous_id;
	}
	else if (strcmp(key, "id") == 0)
		any_type = true;		/* context.externalIds: its type is a sibling */
	else
		cand[ncand++] = cdp_ident_type_index(key);

	for (int i = 0; i < (any_type ? p->ntypes : ncand); i++)
	{
		int			t = any_type ? p->types[i] : cand[i];
		const char *why = NULL;

		if (t >= 0 && person_has_type(p, t) &&
			person_has(p, t, cdp_normalize_value(cdp_ident_type_at(t), value, &why)))
			return true;
	}
	return false;
}

/*
 * Read a JSON string at *s (at its opening quote) into out, decoding the
 * escapes that are valid JSON and keeping any other as written.  Leaves *s
 * after the closing quote; false if the text ends first.
 */
static bool
read_lenient_string(const char **s, StringInfo out)
{
	const char *p = *s + 1;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	resetStringInfo(out);
	for (;;)
	{
		if (*p == '\0')
		{
			*s = p;
			return false;
		}
		if (*p == '"')
		{
			*s = p + 1;
			return true;
		}
		if (*p != '\\')
		{
			appendStringInfoChar(out, *p++);
			continue;
		}
		switch (p[1])
		{
			case '"':
			case '\\':
			case '/':
				appendStringInfoChar(out, p[1]);
				p += 2;
				continue;
			case 'b':
				appendStringInfoChar(out, '\b');
				p += 2;
				continue;
			case 'f':
				appendStringInfoChar(out, '\f');
				p += 2;
				continue;
			case 'n':
				appendStringInfoChar(out, '\n');
				p += 2;
				continue;
			case 'r':
				appendStringInfoChar(out, '\r');
				p += 2;
				continue;
			case 't':
				appendStringInfoChar(out, '\t');
				p += 2;
				continue;
			case 'u':
				{
					pg_wchar	c = 0;
					int			len = 6;

					if (strspn(p + 2, "0123456789abcdefABCDEF") < 4)
						break;
					c = strtoul(pnstrdup(p + 2, 4), NULL, 16);
					if (is_utf16_surrogate_first(c) && p[6] == '\\' && p[7] == 'u' &&
						strspn(p + 8, "0123456789abcdefABCDEF") >= 4)
					{
						pg_wchar	c2 = strtoul(pnstrdup(p + 8, 4), NULL, 16);

						if (is_utf16_surrogate_second(c2))
						{
							c = surrogate_pair_to_codepoint(c, c2);
							len = 12;
						}
					}
					if (c == 0 || is_utf16_surrogate_first(c) || is_utf16_surrogate_second(c) ||
						(!utf8 && c >= 0x80))
						break;
					if (utf8)
					{
						unsigned char buf[8];

						unicode_to_utf8(c, buf);
						appendBinaryStringInfo(out, (char *) buf, pg_utf_mblen(buf));
					}
					else
						appendStringInfoChar(out, (char) c);
					p += len;
					continue;
				}
			default:
				break;
		}
		/* not a valid escape: keep the backslash as written */
		appendStringInfoChar(out, *p++);
	}
}

/*
 * A number as the drain reads it (1e3 is "1000"), or as written when it is
 * no JSON number.
 */
static char *
lenient_number(const char *token)
{
	const char *p = token;
	const char *e;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		p += strspn(p, "0123456789");
	else
		return pstrdup(token);
	if (*p == '.')
	{
		if (strspn(p + 1, "0123456789") == 0)
			return pstrdup(token);
		p += 1 + strspn(p + 1, "0123456789");
	}
	e = p;
	if (*p == 'e' || *p == 'E')
	{
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (strspn(p, "0123456789") == 0)
			return pstrdup(token);
		p += strspn(p, "0123456789");
	}
	/* numeric_in would throw on an absurd exponent, as the drain refuses */
	if (*p != '\0' || strlen(token) > 1000 || (*e && labs(strtol(e + 1, NULL, 10)) > 1000))
		return pstrdup(token);
	return DatumGetCString(DirectFunctionCall1(numeric_out,
											   DirectFunctionCall3(numeric_in,
																   CStringGetDatum(token),
																   ObjectIdGetDatum(InvalidOid),
																   Int32GetDatum(-1))));
}

/*
 * The rule for a line the drain would not accept (not JSON, not valid
 * UTF-8 and kept with \xNN, a field missing or wrong): read leniently,
 * token by token, it names the person when a string, number or boolean
 * that is the value of an identifier key, or an element of an array that
 * is, is one of the person's identifiers once normalized as that key's
 * type.  The identifier keys are those the drain reads identifiers from:
 * userId (user_id), anonymousId (anonymous_id), previousId (either), id
 * (as in context.externalIds: any of the person's types) and the name of an
 * identifier type (email and phone in traits, any type in "identifiers").
 * Escapes are decoded where they are valid JSON; a string cut off by the
 * end of the line is not compared.
 */
static bool
text_names_person(const Person *p, const char *text)
{
	const char *s = text;
	char	   *key = NULL;		/* the key whose value comes next */
	char	   *array_key = NULL;	/* the key of the array being read */
	int			depth = 0;
	int			array_depth = -1;
	StringInfoData tok;

	initStringInfo(&tok);
	while (*s)
	{
		const char *vkey = key ? key : depth == array_depth ? array_key : NULL;
		char		c = *s;

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',')
		{
			s++;
			continue;
		}
		if (c == '"')
		{
			const char *t;

			if (!read_lenient_string(&s, &tok))
				break;
			for (t = s; *t == ' ' || *t == '\t' || *t == '\n' || *t == '\r'; t++)
				;
			if (*t == ':')
			{
				key = pstrdup(tok.data);
				s = t + 1;
				continue;
			}
			if (vkey && value_names_person(p, vkey, tok.data))
				return true;
		}
		else if (c == '-' || (c >= '0' && c <= '9'))
		{
			int			len = strspn(s, "+-.0123456789eE");
			char	   *num = pnstrdup(s, len);

			s += len;
			if (vkey && value_names_person(p, vkey, lenient_number(num)))
				return true;
		}
		else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		{
			int			len = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
			char	   *word = pnstrdup(s, len);

			s += len;
			if (vkey && (strcmp(word, "true") == 0 || strcmp(word, "false") == 0) &&
				value_names_person(p, vkey, word))
				return true;
		}
		else if (c == '{' || c == '[')
		{
			depth++;
			if (c == '[' && key)
			{
				array_key = key;
				array_depth = depth;
			}
			s++;
		}
		else if (c == '}' || c == ']')
		{
			if (depth == array_depth)
			{
				array_key = NULL;
				array_depth = -1;
			}
			depth--;
			s++;
		}
		else
			s++;
		key = NULL;
	}
	return false;
}

/*
 * What a raw message must hold to be read (cdp_normalize_prefilter): the
 * needles of the person's values, and two regular expressions, one for
 * text with non-ASCII characters, one for any text.
 */
typedef struct RawFilter
{
	CdpPrefilter *f;
	int			n;
	text	   *nonascii_re;
	text	   *any_re;
} RawFilter;

static text *
alternation(StringInfo re)
{
	if (re->len == 0)
		return NULL;
	re->data[--re->len] = '\0'; /* the last "|" */
	return cstring_to_text(re->data);
}

static void
person_filter(const Person *p, RawFilter *rf)
{
	StringInfoData nonascii;
	StringInfoData any;

	initStringInfo(&nonascii);
	initStringInfo(&any);
	rf->f = palloc(sizeof(CdpPrefilter) * Max(p->n, 1));
	rf->n = p->n;
	for (int i = 0; i < p->n; i++)
	{
		CdpPrefilter *f = &rf->f[i];

		cdp_normalize_prefilter(cdp_ident_type_at(p->idents[i].type), p->idents[i].value, f);
		if (f->kind == CDP_PREFILTER_FOLDED)
			appendStringInfo(&nonascii, "(?:%s)|", f->regex);
		else if (f->kind == CDP_PREFILTER_REGEX)
			appendStringInfo(&any, "(?:%s)|", f->regex);
	}
	rf->nonascii_re = alternation(&nonascii);
	rf->any_re = alternation(&any);
}

/*
 * Is the "e" at s[i] the exponent of a JSON number that is a value or an
 * array element (after ":", "," or "[")?
 */
static bool
exponent_at(const char *s, int i)
{
	int			j = i - 1;
	int			digits = 0;

	while (j >= 0 && s[j] >= '0' && s[j] <= '9')
		j--, digits++;
	if (digits == 0)
		return false;
	if (j >= 0 && s[j] == '.')
	{
		for (j--, digits = 0; j >= 0 && s[j] >= '0' && s[j] <= '9'; j--)
			digits++;
		if (digits == 0)
			return false;
	}
	if (j >= 0 && s[j] == '-')
		j--;
	while (j >= 0 && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
		j--;
	return j >= 0 && (s[j] == ':' || s[j] == ',' || s[j] == '[');
}

static bool
regex_finds(text *re, text *t)
{
	return DatumGetBool(DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
												PointerGetDatum(t), PointerGetDatum(re)));
}

/*
 * Might a raw message name the person?  One pass over its bytes finds
 * what the pre-filters cannot judge: a backslash (an escape may spell
 * anything) or a number in exponent form (1e3 is read as 1000); then the
 * needles, and the regular expressions where they apply.
 */
static bool
raw_may_name(const RawFilter *rf, text *t)
{
	/* the bytes the pass stops at: 1 above 0x7F, 2 a backslash, 3 an e */
	static unsigned char stop[256];
	const unsigned char *s = (const unsigned char *) VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	bool		ascii = true;

	if (stop['e'] == 0)
	{
		for (int c = 0x80; c < 256; c++)
			stop[c] = 1;
		stop['\\'] = 2;
		stop['e'] = stop['E'] = 3;
	}
	for (int i = 0; i < len; i++)
	{
		if (stop[s[i]] == 0)
			continue;
		if (stop[s[i]] == 1)
			ascii = false;
		else if (stop[s[i]] == 2 || exponent_at((const char *) s, i))
			return true;
	}
	for (int i = 0; i < rf->n; i++)
		if (cdp_prefilter_finds(&rf->f[i], (const char *) s, len, ascii))
			return true;
	return (rf->any_re && regex_finds(rf->any_re, t)) ||
		(!ascii && rf->nonascii_re && regex_finds(rf->nonascii_re, t));
}

/*
 * erase_raw_messages deletes the rows of table (cdp.inbox or
 * cdp.inbox_rejects, keyed by idcol) whose raw message names the person
 * and returns how many it deleted.  Every row is read, in chunks, and
 * those the pre-filter finds are parsed as the drain parses them, isolated
 * as the drain isolates them, and judged by the identifiers they carry, or
 * by text_names_person's rule if the drain would not accept them.
 */
#define ERASE_CHUNK 256

static uint64
erase_raw_messages(const Person *p, const RawFilter *rf, const char *table,
				   const char *idcol)
{
	Portal		portal;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	int64	   *hits;
	int			nhits = 0;
	int			maxhits = 64;
	Datum		args[1];
	int			rc;

	if (p->n == 0)
		return 0;
	hits = palloc(sizeof(int64) * maxhits);
	chunk_cxt = AllocSetContextCreate(outer, "pg_cdp forget messages", ALLOCSET_DEFAULT_SIZES);
	portal = SPI_cursor_open_with_args(NULL,
									   psprintf("SELECT %s, message FROM %s WHERE message IS NOT NULL",
												idcol, table),
									   0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		CdpMessage *msgs;
		SPITupleTable *rows;
		int			n;
		int			k = 0;

		SPI_cursor_fetch(portal, true, ERASE_CHUNK);
		n = SPI_processed;
		rows = SPI_tuptable;
		if (n == 0)
			break;
		MemoryContextSwitchTo(chunk_cxt);
		msgs = palloc0(sizeof(CdpMessage) * n);
		for (int i = 0; i < n; i++)
		{
			bool		isnull;
			HeapTuple	tup = rows->vals[i];
			text	   *t = DatumGetTextPP(SPI_getbinval(tup, rows->tupdesc, 2, &isnull));

			if (!raw_may_name(rf, t))
				continue;
			msgs[k].inbox_id = DatumGetInt64(SPI_getbinval(tup, rows->tupdesc, 1, &isnull));
			msgs[k].raw = text_to_cstring(t);
			msgs[k].node = -1;
			k++;
		}
		SPI_freetuptable(rows);
		cdp_run_isolated(msgs, k, cdp_parse_inbox_lines);
		for (int i = 0; i < k; i++)
		{
			CdpMessage *m = &msgs[i];

			if (m->err.sqlerrcode == 0 ? message_names_person(p, m) :
				text_names_person(p, m->raw))
			{
				if (nhits == maxhits)
				{
					maxhits *= 2;
					hits = repalloc(hits, sizeof(int64) * maxhits);
				}
				hits[nhits++] = m->inbox_id;
			}
		}
		MemoryContextSwitchTo(outer);
		MemoryContextReset(chunk_cxt);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(chunk_cxt);

	args[0] = cdp_int8_array(hits, nhits);
	rc = SPI_execute_with_args(psprintf("DELETE FROM %s WHERE %s = ANY($1)", table, idcol),
							   1, (Oid[]) {INT8ARRAYOID}, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "pg_cdp: erasure step %s failed", table);
	return SPI_processed;
}

/*
 * cdp.forget(identifiers jsonb) → jsonb
 *
 * Erases the people the identifiers name: their profiles, identities,
 * events, message ids, identifier issues, the merges that name them, and
 * the inbox rows and rejects that name one of their identifiers, read as
 * the drain reads them (erase_raw_messages).  Returns what was deleted, by
 * table.
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
	Person		person;
	RawFilter	filter;
	bool		save_auto_create;
	SPITupleTable *tuptable;
	uint64		nrows;

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
	SPI_execute_with_args("SELECT type, value FROM cdp.identities WHERE profile_id = ANY($1)",
						  1, argtypes, args, NULL, true, 0);
	/* kept: reading the identifier types may run a statement of its own */
	tuptable = SPI_tuptable;
	nrows = SPI_processed;
	vals = palloc(sizeof(char *) * (nrows + msg.nidents + 1));
	person.idents = palloc(sizeof(PersonIdent) * (nrows + msg.nidents + 1));
	person.n = 0;
	for (uint64 r = 0; r < nrows; r++)
	{
		int			type = cdp_ident_type_index(SPI_getvalue(tuptable->vals[r],
															 tuptable->tupdesc, 1));

		vals[nvals] = SPI_getvalue(tuptable->vals[r], tuptable->tupdesc, 2);
		if (type >= 0)
		{
			person.idents[person.n].type = type;
			person.idents[person.n++].value = vals[nvals];
		}
		nvals++;
	}
	for (int j = 0; j < msg.nidents; j++)
	{
		vals[nvals++] = msg.idents[j].value;
		person.idents[person.n].type = msg.idents[j].type;
		person.idents[person.n++].value = msg.idents[j].value;
	}
	args[1] = cdp_text_array(vals, nvals);
	person_finish(&person);
	person_filter(&person, &filter);

	/* drainers that read the inbox rows before now must look again */
	cdp_inbox_erasing();
	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	cdp_profile_tables_forget(ids, nids, args[1], &out);

	/*
	 * Reading a waiting line must not create the identifier types it names,
	 * as the drain may: a type that does not exist yet is none of theirs.
	 */
	save_auto_create = cdp_auto_create_identifier_types;
	cdp_auto_create_identifier_types = false;
	PG_TRY();
	{
		appendStringInfo(&out, ", \"inbox\": " UINT64_FORMAT,
						 erase_raw_messages(&person, &filter, "cdp.inbox", "inbox_id"));
		appendStringInfo(&out, ", \"inbox_rejects\": " UINT64_FORMAT,
						 erase_raw_messages(&person, &filter, "cdp.inbox_rejects", "reject_id"));
	}
	PG_FINALLY();
	{
		cdp_auto_create_identifier_types = save_auto_create;
	}
	PG_END_TRY();
	appendStringInfoChar(&out, '}');

	/* The segment engine must learn that these profiles are gone. */
	cdp_mark_profiles_changed(ids, nids, "forget");
	/* SPI_finish frees what was allocated since SPI_connect */
	summary = MemoryContextStrdup(caller_cxt, out.data);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(summary)));
}
