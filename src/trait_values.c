/*-------------------------------------------------------------------------
 *
 * trait_values.c
 *	  Values of traits: casting a jsonb identify trait to its declared type
 *	  without ever raising, reading a JSON number, and the tallies that
 *	  count_distinct and most_frequent keep.
 *
 * A declared trait's column in cdp.customers reads the profile's jsonb
 * value through cdp.trait_value(value, NULL::type): a value that does not
 * cast gives NULL there (and shows in cdp.trait_type_issues) rather than
 * failing every query over the view.  The casts parse by hand, or through
 * PostgreSQL's date/time decoder, which reports errors instead of raising.
 *
 * A tally is a jsonb object {"value": [count, last seen, in microseconds
 * since the Unix epoch]}.
 * cdp.tally_merge adds two of them; given objects of tallies keyed by a
 * trait's slot ({"3": tally, "7": tally}) it merges slot by slot, which is
 * how a batch's tallies join a profile's in one expression.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/varlena.h"
#include "utils/timestamp.h"

#include "trait_values.h"

/* the types a declared trait may have */
bool
cdp_trait_type_supported(Oid type)
{
	switch (type)
	{
		case TEXTOID:
		case NUMERICOID:
		case INT8OID:
		case INT4OID:
		case FLOAT8OID:
		case BOOLOID:
		case DATEOID:
		case TIMESTAMPTZOID:
			return true;
		default:
			return false;
	}
}

/* A number as JSON or SQL writes it, with a bounded exponent. */
static bool
numeric_text(const char *s)
{
	const char *p = s;
	bool		digits = false;

	while (isspace((unsigned char) *p))
		p++;
	if (*p == '+' || *p == '-')
		p++;
	while (isdigit((unsigned char) *p))
		p++, digits = true;
	if (*p == '.')
	{
		p++;
		while (isdigit((unsigned char) *p))
			p++, digits = true;
	}
	if (!digits)
		return false;
	if (*p == 'e' || *p == 'E')
	{
		int			n = 0;

		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
			if (++n > 3)
				return false;
			else
				p++;
	}
	while (isspace((unsigned char) *p))
		p++;
	return *p == '\0' && (p - s) < 1000;
}

static bool
integer_text(const char *s, int64 min, int64 max, int64 *out)
{
	const char *p = s;
	bool		neg = false;
	uint64		v = 0;
	uint64		limit;

	while (isspace((unsigned char) *p))
		p++;
	if (*p == '+' || *p == '-')
		neg = (*p++ == '-');
	if (!isdigit((unsigned char) *p))
		return false;
	limit = neg ? (uint64) (-(min + 1)) + 1 : (uint64) max;
	while (isdigit((unsigned char) *p))
	{
		uint64		d = *p++ - '0';

		if (v > (limit - d) / 10)
			return false;
		v = v * 10 + d;
	}
	while (isspace((unsigned char) *p))
		p++;
	if (*p != '\0')
		return false;
	*out = neg ? (int64) (0 - v) : (int64) v;
	return true;
}

/* date and timestamptz through the decoder, which reports instead of raising */
static bool
datetime_text(const char *s, Oid type, Datum *out)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_tm tt,
			   *tm = &tt;
	fsec_t		fsec;
	int			tz;

	if (strlen(s) >= MAXDATELEN || strpbrk(s, "0123456789") == NULL)
		return false;			/* 'now', 'today', 'epoch' are not values */
	if (ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) != 0)
		return false;
	if (DecodeDateTime(field, ftype, nf, &dtype, tm, &fsec, &tz) != 0)
		return false;
	if (dtype != DTK_DATE)
		return false;			/* 'now', 'infinity' and the like are not values */
	if (type == DATEOID)
	{
		if (!IS_VALID_JULIAN(tm->tm_year, tm->tm_mon, tm->tm_mday))
			return false;
		*out = DateADTGetDatum(date2j(tm->tm_year, tm->tm_mon, tm->tm_mday) - POSTGRES_EPOCH_JDATE);
		return IS_VALID_DATE(DatumGetDateADT(*out));
	}
	else
	{
		TimestampTz ts;

		if (tm2timestamp(tm, fsec, &tz, &ts) != 0 || !IS_VALID_TIMESTAMP(ts))
			return false;
		*out = TimestampTzGetDatum(ts);
		return true;
	}
}

/*
 * cdp_trait_cast: the jsonb value as type, or false.  Strings are parsed;
 * JSON numbers and booleans are taken as they are where the type fits.
 */
bool
cdp_trait_cast(JsonbValue *v, Oid type, Datum *out)
{
	char	   *s;

	if (v->type == jbvNull)
		return false;
	if (v->type == jbvNumeric)
	{
		if (type == NUMERICOID)
		{
			*out = NumericGetDatum(v->val.numeric);
			return true;
		}
		s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		if (type == TEXTOID)
		{
			*out = CStringGetTextDatum(s);
			return true;
		}
	}
	else if (v->type == jbvBool)
	{
		if (type == BOOLOID)
		{
			*out = BoolGetDatum(v->val.boolean);
			return true;
		}
		if (type != TEXTOID)
			return false;
		*out = CStringGetTextDatum(v->val.boolean ? "true" : "false");
		return true;
	}
	else if (v->type == jbvString)
	{
		s = pnstrdup(v->val.string.val, v->val.string.len);
		if (type == TEXTOID)
		{
			*out = PointerGetDatum(cstring_to_text_with_len(v->val.string.val,
															v->val.string.len));
			return true;
		}
	}
	else
		return false;			/* objects and arrays have no scalar value */

	switch (type)
	{
		case NUMERICOID:
			if (!numeric_text(s))
				return false;
			*out = DirectFunctionCall3(numeric_in, CStringGetDatum(s),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			return true;
		case FLOAT8OID:
			{
				double		d;

				if (!numeric_text(s))
					return false;
				d = strtod(s, NULL);
				if (isinf(d))
					return false;
				*out = Float8GetDatum(d);
				return true;
			}
		case INT8OID:
		case INT4OID:
			{
				int64		i;

				if (!integer_text(s, type == INT8OID ? PG_INT64_MIN : PG_INT32_MIN,
								  type == INT8OID ? PG_INT64_MAX : PG_INT32_MAX, &i))
					return false;
				*out = type == INT8OID ? Int64GetDatum(i) : Int32GetDatum((int32) i);
				return true;
			}
		case BOOLOID:
			{
				bool		b;

				if (!parse_bool(s, &b))
					return false;
				*out = BoolGetDatum(b);
				return true;
			}
		case DATEOID:
		case TIMESTAMPTZOID:
			return datetime_text(s, type, out);
		default:
			return false;
	}
}

static bool
jsonb_scalar(Jsonb *j, JsonbValue *v)
{
	if (!JB_ROOT_IS_SCALAR(j))
		return false;
	return JsonbExtractScalar(&j->root, v);
}

/* cdp.trait_value(value jsonb, type anyelement) → anyelement */
PG_FUNCTION_INFO_V1(cdp_trait_value);
Datum
cdp_trait_value(PG_FUNCTION_ARGS)
{
	Oid			type = get_fn_expr_argtype(fcinfo->flinfo, 1);
	JsonbValue	v;
	Datum		out;

	if (PG_ARGISNULL(0) || !jsonb_scalar(PG_GETARG_JSONB_P(0), &v) ||
		!cdp_trait_cast(&v, type, &out))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(out);
}

/* cdp.trait_casts(value jsonb, type regtype) → boolean */
PG_FUNCTION_INFO_V1(cdp_trait_casts);
Datum
cdp_trait_casts(PG_FUNCTION_ARGS)
{
	JsonbValue	v;
	Datum		out;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	PG_RETURN_BOOL(jsonb_scalar(PG_GETARG_JSONB_P(0), &v) &&
				   cdp_trait_cast(&v, PG_GETARG_OID(1), &out));
}

/* cdp.trait_number(value jsonb) → numeric: JSON numbers only */
PG_FUNCTION_INFO_V1(cdp_trait_number);
Datum
cdp_trait_number(PG_FUNCTION_ARGS)
{
	JsonbValue	v;

	if (PG_ARGISNULL(0) || !jsonb_scalar(PG_GETARG_JSONB_P(0), &v) ||
		v.type != jbvNumeric)
		PG_RETURN_NULL();
	PG_RETURN_NUMERIC(v.val.numeric);
}

/*
 * Tallies.  An entry is a value with its count and when it was last seen;
 * tallies are small (the values one person used), so they are read into
 * an array, combined and written back.
 */
typedef struct TallyEntry
{
	char	   *key;
	int			keylen;
	int64		count;
	int64		at;				/* microseconds since the Unix epoch */
	Jsonb	   *nested;			/* a slot's tally, when merging slots */
} TallyEntry;

typedef struct Tally
{
	TallyEntry *e;
	int			n;
	int			cap;
} Tally;

static TallyEntry *
tally_find(Tally *t, const char *key, int keylen)
{
	for (int i = 0; i < t->n; i++)
		if (t->e[i].keylen == keylen && memcmp(t->e[i].key, key, keylen) == 0)
			return &t->e[i];
	if (t->n == t->cap)
	{
		t->cap = t->cap ? t->cap * 2 : 8;
		t->e = t->e ? repalloc(t->e, sizeof(TallyEntry) * t->cap)
			: palloc(sizeof(TallyEntry) * t->cap);
	}
	memset(&t->e[t->n], 0, sizeof(TallyEntry));
	t->e[t->n].key = pnstrdup(key, keylen);
	t->e[t->n].keylen = keylen;
	return &t->e[t->n++];
}

static int64
numeric_int64(JsonbValue *v)
{
	if (v->type != jbvNumeric)
		return 0;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}



static Jsonb *
tally_to_jsonb(Tally *t)
{
	JsonbParseState *st = NULL;
	JsonbValue	key,
				val;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < t->n; i++)
	{
		key.type = jbvString;
		key.val.string.val = t->e[i].key;
		key.val.string.len = t->e[i].keylen;
		pushJsonbValue(&st, WJB_KEY, &key);
		if (t->e[i].nested)
		{
			val.type = jbvBinary;
			val.val.binary.data = &t->e[i].nested->root;
			val.val.binary.len = VARSIZE(t->e[i].nested) - VARHDRSZ;
			pushJsonbValue(&st, WJB_VALUE, &val);
			continue;
		}
		pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
		val.type = jbvNumeric;
		val.val.numeric = int64_to_numeric(t->e[i].count);
		pushJsonbValue(&st, WJB_ELEM, &val);
		val.val.numeric = int64_to_numeric(t->e[i].at);
		pushJsonbValue(&st, WJB_ELEM, &val);
		pushJsonbValue(&st, WJB_END_ARRAY, NULL);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * Adds a jsonb tally into t; an object of slot tallies merges slot by
 * slot.
 */
static void
tally_read(Tally *t, Jsonb *j)
{
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	if (j == NULL || !JB_ROOT_IS_OBJECT(j))
		return;
	it = JsonbIteratorInit(&j->root);
	tok = JsonbIteratorNext(&it, &k, true);		/* WJB_BEGIN_OBJECT */
	while ((tok = JsonbIteratorNext(&it, &k, true)) == WJB_KEY)
	{
		TallyEntry *e = tally_find(t, k.val.string.val, k.val.string.len);

		tok = JsonbIteratorNext(&it, &v, true);
		if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		{
			Tally		inner = {0};

			tally_read(&inner, e->nested);
			tally_read(&inner, JsonbValueToJsonb(&v));
			e->nested = tally_to_jsonb(&inner);
		}
		else if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
		{
			JsonbIterator *ait = JsonbIteratorInit(v.val.binary.data);
			JsonbValue	x;
			int			i = 0;

			while ((tok = JsonbIteratorNext(&ait, &x, true)) != WJB_DONE)
				if (tok == WJB_ELEM)
				{
					if (i == 0)
						e->count += numeric_int64(&x);
					else if (i == 1)
						e->at = Max(e->at, numeric_int64(&x));
					i++;
				}
		}
	}
}

static int64
epoch_usecs(TimestampTz at)
{
	return at - SetEpochTimestamp();
}

/* cdp.tally_add(state jsonb, value text, at timestamptz) → jsonb */
PG_FUNCTION_INFO_V1(cdp_tally_add);
Datum
cdp_tally_add(PG_FUNCTION_ARGS)
{
	Tally		t = {0};
	TallyEntry *e;
	text	   *value;

	if (PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	}
	if (!PG_ARGISNULL(0))
		tally_read(&t, PG_GETARG_JSONB_P(0));
	value = PG_GETARG_TEXT_PP(1);
	e = tally_find(&t, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	e->count += 1;
	if (!PG_ARGISNULL(2))
		e->at = Max(e->at, epoch_usecs(PG_GETARG_TIMESTAMPTZ(2)));
	PG_RETURN_JSONB_P(tally_to_jsonb(&t));
}

/* cdp.tally_merge(a jsonb, b jsonb) → jsonb */
PG_FUNCTION_INFO_V1(cdp_tally_merge);
Datum
cdp_tally_merge(PG_FUNCTION_ARGS)
{
	Tally		t = {0};

	if (PG_ARGISNULL(0) && PG_ARGISNULL(1))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(1));
	if (PG_ARGISNULL(1))
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	tally_read(&t, PG_GETARG_JSONB_P(0));
	tally_read(&t, PG_GETARG_JSONB_P(1));
	PG_RETURN_JSONB_P(tally_to_jsonb(&t));
}

/* cdp.tally_top(tally jsonb) → text: highest count, then latest, then smallest */
PG_FUNCTION_INFO_V1(cdp_tally_top);
Datum
cdp_tally_top(PG_FUNCTION_ARGS)
{
	Tally		t = {0};
	TallyEntry *best = NULL;

	tally_read(&t, PG_GETARG_JSONB_P(0));
	for (int i = 0; i < t.n; i++)
	{
		TallyEntry *e = &t.e[i];

		if (e->nested || e->count <= 0)
			continue;
		if (best == NULL || e->count > best->count ||
			(e->count == best->count && e->at > best->at) ||
			(e->count == best->count && e->at == best->at &&
			 varstr_cmp(e->key, e->keylen, best->key, best->keylen,
						DEFAULT_COLLATION_OID) < 0))
			best = e;
	}
	if (best == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text_with_len(best->key, best->keylen));
}

/* cdp.tally_count(tally jsonb) → bigint: how many values */
PG_FUNCTION_INFO_V1(cdp_tally_count);
Datum
cdp_tally_count(PG_FUNCTION_ARGS)
{
	Tally		t = {0};
	int64		n = 0;

	tally_read(&t, PG_GETARG_JSONB_P(0));
	for (int i = 0; i < t.n; i++)
		if (!t.e[i].nested && t.e[i].count > 0)
			n++;
	PG_RETURN_INT64(n);
}
