/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Helpers every module uses: errors kept or raised, SPI plans and array
 *	  parameters, jsonb field access, keys, large arrays on huge pages, and
 *	  counters bumped at transaction end.
 *
 * Nothing here knows about profiles or messages; every other module of
 * pg_cdp stands on it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "util.h"

void
cdp_set_error(CdpError *err, int sqlerrcode, const char *message,
			  const char *detail, const char *hint)
{
	err->sqlerrcode = sqlerrcode;
	err->message = pstrdup(message);
	err->detail = detail ? pstrdup(detail) : NULL;
	err->hint = hint ? pstrdup(hint) : NULL;
}

void
cdp_raise(const CdpError *err)
{
	ereport(ERROR,
			(errcode(err->sqlerrcode),
			 errmsg_internal("%s", err->message),
			 err->detail ? errdetail_internal("%s", err->detail) : 0,
			 err->hint ? errhint("%s", err->hint) : 0));
	pg_unreachable();
}

static Datum
build_array(Datum *elems, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, elemtype, typlen,
										   typbyval, typalign));
}

/*
 * Text array; NULL entries become SQL NULLs.  Built in place: every batch
 * passes thousands of strings, and a text datum each, copied again into the
 * array, costs twice the allocations and copies.
 */
Datum
cdp_text_array(char **values, int n)
{
	int		   *lens;
	Size		nbytes = 0;
	bool		hasnulls = false;
	Size		dataoffset;
	ArrayType  *result;
	bits8	   *bitmap;
	char	   *p;

	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	lens = palloc(sizeof(int) * n);
	for (int i = 0; i < n; i++)
	{
		if (values[i] == NULL)
		{
			hasnulls = true;
			continue;
		}
		lens[i] = strlen(values[i]);
		/* as construct_md_array stores them: 4-byte headers, int-aligned */
		nbytes = att_align_nominal(nbytes + VARHDRSZ + lens[i], TYPALIGN_INT);
		if (!AllocSizeIsValid(nbytes))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("array size exceeds the maximum allowed (%d)",
							(int) MaxAllocSize)));
	}
	dataoffset = hasnulls ? ARR_OVERHEAD_WITHNULLS(1, n) : 0;
	nbytes += hasnulls ? dataoffset : ARR_OVERHEAD_NONULLS(1);
	result = palloc0(nbytes);
	SET_VARSIZE(result, nbytes);
	result->ndim = 1;
	result->dataoffset = dataoffset;
	result->elemtype = TEXTOID;
	ARR_DIMS(result)[0] = n;
	ARR_LBOUND(result)[0] = 1;
	bitmap = ARR_NULLBITMAP(result);
	p = ARR_DATA_PTR(result);
	for (int i = 0; i < n; i++)
	{
		if (values[i] == NULL)
			continue;
		if (bitmap)
			bitmap[i / 8] |= 1 << (i % 8);
		SET_VARSIZE(p, VARHDRSZ + lens[i]);
		memcpy(VARDATA(p), values[i], lens[i]);
		p += att_align_nominal(VARHDRSZ + lens[i], TYPALIGN_INT);
	}
	return PointerGetDatum(result);
}

Datum
cdp_int8_array(int64 *values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(values[i]);
	return build_array(elems, n, INT8OID);
}

Datum
cdp_int4_array(int32 *values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int32GetDatum(values[i]);
	return build_array(elems, n, INT4OID);
}

Datum
cdp_timestamptz_array(TimestampTz *values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = TimestampTzGetDatum(values[i]);
	return build_array(elems, n, TIMESTAMPTZOID);
}

/* Jsonb array; NULL entries become SQL NULLs. */
Datum
cdp_jsonb_array(Jsonb **values, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1];
	int			lbs[1] = {1};

	if (n == 0)
		return PointerGetDatum(construct_empty_array(JSONBOID));
	for (int i = 0; i < n; i++)
	{
		nulls[i] = (values[i] == NULL);
		elems[i] = nulls[i] ? (Datum) 0 : JsonbPGetDatum(values[i]);
	}
	dims[0] = n;
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  JSONBOID, -1, false, TYPALIGN_INT));
}

/*
 * cdp_prepare prepares and keeps a plan.  Callers cache the result in a
 * static variable: the plan cache replans on its own after DDL.
 *
 * The plan is generic from the first execution on: left to choose, the
 * plan cache would plan some statements (a LIMIT $1, arrays of keys) anew
 * at every execution, as their custom plans always look cheaper, and the
 * plans are the same index probes whatever the parameters (cdp_spi_exec).
 */
SPIPlanPtr
cdp_prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
										  CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "pg_cdp: could not prepare internal statement: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "pg_cdp: could not keep internal plan");
	return plan;
}

/*
 * Run a kept plan; expected is the SPI_OK_* code it must return.
 *
 * Every internal statement probes tables by key with a batch's worth of
 * keys, for which index scans are right whatever the statistics say.  The
 * plans are generic and cached, and one made while a table was small (a
 * fresh install, a bulk load before autovacuum's first ANALYZE) would keep
 * scanning it whole as it grows, so seq scans and hash and merge joins are
 * off whenever our statements are planned.  JIT is off too: compiling
 * costs more than such a statement's whole run, and the costs inflated by
 * the disabled plan types would otherwise cross jit_above_cost.
 */
void
cdp_spi_exec(SPIPlanPtr plan, Datum *values, int expected)
{
	cdp_spi_exec_limit(plan, values, expected, 0);
}

/* The same, stopping after tcount rows (0: all). */
void
cdp_spi_exec_limit(SPIPlanPtr plan, Datum *values, int expected, long tcount)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, NULL, false, tcount);
	AtEOXact_GUC(true, nestlevel);

	if (expected >= 0 ? rc != expected : rc < 0)
		elog(ERROR, "pg_cdp: internal statement failed: %s",
			 SPI_result_code_string(rc));
}

/*
 * The first column (bigint) of the last SPI statement's rows, into out,
 * which has room for them all; returns how many.
 */
int
cdp_spi_int64_column(int64 *out)
{
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		out[r] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	return (int) SPI_processed;
}

/* Look a key up in a jsonb object; NULL when absent or not an object. */
JsonbValue *
cdp_jsonb_get(Jsonb *obj, const char *key, JsonbValue *out)
{
	JsonbValue	k;
	JsonbValue *v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&obj->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	*out = *v;
	return out;
}

/*
 * The text of a scalar field: strings as they are, numbers and booleans in
 * their JSON spelling; NULL when absent, JSON null, or a container.
 */
char *
cdp_jsonb_get_text(Jsonb *obj, const char *key, bool *is_string)
{
	JsonbValue	v;

	if (is_string)
		*is_string = false;
	if (cdp_jsonb_get(obj, key, &v) == NULL)
		return NULL;
	switch (v.type)
	{
		case jbvString:
			if (is_string)
				*is_string = true;
			return pnstrdup(v.val.string.val, v.val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v.val.numeric)));
		case jbvBool:
			return pstrdup(v.val.boolean ? "true" : "false");
		default:
			return NULL;
	}
}

/* A nested object as its own Jsonb, or NULL when absent or not an object. */
Jsonb *
cdp_jsonb_get_object(Jsonb *obj, const char *key)
{
	JsonbValue	v;

	if (cdp_jsonb_get(obj, key, &v) == NULL || v.type != jbvBinary)
		return NULL;
	if (!JsonContainerIsObject(v.val.binary.data))
		return NULL;
	return JsonbValueToJsonb(&v);
}

/* {"key": "value"} as a Jsonb. */
Jsonb *
cdp_jsonb_pair(const char *key, const char *value)
{
	JsonbParseState *state = NULL;
	JsonbValue	k,
				v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v.type = jbvString;
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	pushJsonbValue(&state, WJB_KEY, &k);
	pushJsonbValue(&state, WJB_VALUE, &v);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

/* A 64-bit key for (a, b), used to name advisory locks. */
uint64
cdp_hash_key(const char *a, const char *b)
{
	uint64		h = hash_bytes_extended((const unsigned char *) a, strlen(a), 0x5cd);

	return hash_bytes_extended((const unsigned char *) b, strlen(b), h);
}

/* qsort/bsearch comparator of int64 (profile ids, inbox ids). */
int
cdp_cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* Sort ids ascending and drop repeats; returns how many are left. */
int
cdp_sort_unique_int64(int64 *ids, int n)
{
	int			k = 0;

	qsort(ids, n, sizeof(int64), cdp_cmp_int64);
	for (int i = 0; i < n; i++)
		if (k == 0 || ids[k - 1] != ids[i])
			ids[k++] = ids[i];
	return k;
}

/* Is id among the n sorted ids? */
bool
cdp_sorted_contains(const int64 *ids, int n, int64 id)
{
	return n > 0 && bsearch(&id, ids, n, sizeof(int64), cdp_cmp_int64) != NULL;
}

/*
 * Large arrays: aligned and offered to transparent huge pages where the
 * kernel has them in madvise mode (Debian's default).  Tens of megabytes
 * touched for the first time otherwise cost a page fault per 4 kB, which
 * in a virtual machine can take more time than the work done in them,
 * and a TLB miss per random probe.  Purely advisory: without huge pages
 * this is an ordinary allocation.  Arrays under 2 MB are plain chunks.
 * Either way the chunk's start is kept just before the array, for
 * cdp_huge_free.
 */
#define CDP_HUGE_PAGE ((Size) 2 * 1024 * 1024)

void *
cdp_huge_alloc(MemoryContext cxt, Size size, bool zero)
{
	bool		huge = size >= CDP_HUGE_PAGE;
	char	   *raw;
	char	   *p;

	if (!huge)
	{
		raw = MemoryContextAlloc(cxt, size + MAXIMUM_ALIGNOF);
		p = raw + MAXIMUM_ALIGNOF;
	}
	else
	{
		raw = MemoryContextAllocHuge(cxt, size + CDP_HUGE_PAGE + MAXIMUM_ALIGNOF);
		p = (char *) TYPEALIGN(CDP_HUGE_PAGE, raw + MAXIMUM_ALIGNOF);
#ifdef MADV_HUGEPAGE
		(void) madvise(p, TYPEALIGN_DOWN(CDP_HUGE_PAGE, size), MADV_HUGEPAGE);
#endif
	}
	((void **) p)[-1] = raw;
	if (zero)
		memset(p, 0, size);
	return p;
}

void
cdp_huge_free(void *p)
{
	pfree(((void **) p)[-1]);
}

/*
 * Grow an array from cdp_huge_alloc (or NULL: a new one in cxt) to
 * newsize bytes, keeping its first oldsize bytes.
 */
void *
cdp_huge_grow(MemoryContext cxt, void *p, Size oldsize, Size newsize)
{
	void	   *q;

	if (p == NULL)
		return cdp_huge_alloc(cxt, newsize, false);
	q = cdp_huge_alloc(GetMemoryChunkContext(((void **) p)[-1]), newsize, false);
	memcpy(q, p, Min(oldsize, newsize));
	cdp_huge_free(p);
	return q;
}

/*
 * cdp_bump_through_xact moves a shared counter now and again when the
 * current transaction ends, committed or not, which comes before its locks
 * are released.  A backend that read the counter before and finds it
 * unchanged after is sure that no such transaction began in between, nor
 * ended while it waited for that transaction's locks.
 */
#define MAX_XACT_BUMPS 8

static pg_atomic_uint64 *xact_bumps[MAX_XACT_BUMPS];

static int	nxact_bumps = 0;

static bool bump_registered = false;

static void
bump_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	for (int i = 0; i < nxact_bumps; i++)
		pg_atomic_fetch_add_u64(xact_bumps[i], 1);
	nxact_bumps = 0;
}

void
cdp_bump_through_xact(pg_atomic_uint64 *counter)
{
	bool		listed = false;

	if (!bump_registered)
	{
		RegisterXactCallback(bump_xact_callback, NULL);
		bump_registered = true;
	}
	pg_atomic_fetch_add_u64(counter, 1);
	for (int i = 0; i < nxact_bumps; i++)
		listed = listed || xact_bumps[i] == counter;
	if (!listed)
	{
		Assert(nxact_bumps < MAX_XACT_BUMPS);
		xact_bumps[nxact_bumps++] = counter;
	}
}

/*
 * cdp_exec_guarded runs plan in an internal subtransaction, as owner when
 * owner is valid (user SQL: trait conditions, segment predicates, journey
 * conditions), and returns the error instead of raising it, the
 * subtransaction rolled back.  expected is the SPI result code, or
 * CDP_SPI_ANY; what names the statement in the error for another code.
 * On success the result stays in SPI_tuptable.
 */
ErrorData *
cdp_exec_guarded(SPIPlanPtr plan, Datum *args, const char *nulls, Oid owner,
				 int expected, const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	ErrorData  *volatile err = NULL;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			rc;

		if (OidIsValid(owner))
			SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
								   SECURITY_RESTRICTED_OPERATION);
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
		if (expected == CDP_SPI_ANY ? rc < 0 : rc != expected)
			elog(ERROR, "pg_cdp: %s returned %s", what, SPI_result_code_string(rc));
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_END_TRY();
	return err;
}
