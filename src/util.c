/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers shared by the ingest pipeline: SPI plans and array
 *	  parameters, jsonb field access, the ordered advisory locks that
 *	  make concurrent ingest deadlock-free, and large arrays on huge pages.
 *
 * Locking order (DESIGN.md): the global ingest lock, then identifiers,
 * sorted, then profiles in ascending id.  All are transaction-scoped
 * advisory locks in a lock space of our own (field4 of the lock tag), so
 * they never collide with the user's pg_advisory_lock() keys.  Profiles are locked in share mode by a
 * writer that only adds events and in exclusive mode by one that changes
 * the profile's identities or merges it, which is what FOR KEY SHARE and
 * FOR UPDATE on the profile row would give, without touching the heap.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "utils/timestamp.h"

#include "pg_cdp.h"

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
 * off whenever our statements are planned.
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
	rc = SPI_execute_plan(plan, values, NULL, false, tcount);
	AtEOXact_GUC(true, nestlevel);

	if (rc != expected)
		elog(ERROR, "pg_cdp: internal statement failed: %s",
			 SPI_result_code_string(rc));
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

static int
cmp_uint64(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

typedef struct KeyMode
{
	uint64		key;
	bool		exclusive;
} KeyMode;

static int
cmp_keymode(const void *a, const void *b)
{
	return cmp_uint64(&((const KeyMode *) a)->key, &((const KeyMode *) b)->key);
}

/*
 * Lock escalation.  Every writer first takes the global ingest lock, in
 * share mode, then its fine-grained identifier and profile locks.  A
 * transaction that would need more than CDP_MAX_FINE_LOCKS of those (a bulk
 * batch, or a loop of cdp.track calls in one transaction) takes the global
 * lock in exclusive mode instead and skips them: the lock table holds only
 * some thousands of locks for the whole server, and one bulk batch would
 * otherwise fill it.  While it holds the exclusive lock no other writer
 * runs, so the fine-grained locks have nothing left to order.
 */
#define CDP_MAX_FINE_LOCKS 1024

static LocalTransactionId lock_lxid = InvalidLocalTransactionId;
static int	lock_count = 0;
static bool lock_escalated = false;
static bool lock_global_share = false;

/*
 * A writer that finds the share lock taken (a drainer holds it exclusively)
 * counts its wait, so the drainers keep their batches small while anyone
 * is kept waiting (worker.c).
 */
static void
acquire_global(LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, 0xCD00);
	if (mode == ShareLock &&
		LockAcquire(&tag, mode, false, true) != LOCKACQUIRE_NOT_AVAIL)
		return;
	if (mode == ShareLock && cdp_shared)
	{
		SpinLockAcquire(&cdp_shared->mutex);
		cdp_shared->ingest_waits++;
		SpinLockRelease(&cdp_shared->mutex);
	}
	(void) LockAcquire(&tag, mode, false, false);
}

/*
 * cdp_locks_escalated: does this transaction hold the global ingest lock in
 * exclusive mode?  Then no other writer can move an identifier or retire a
 * profile until it commits, and what it reads stays true.
 */
bool
cdp_locks_escalated(void)
{
	return lock_escalated && lock_lxid == MyProc->lxid;
}

/*
 * cdp_lock_keys takes transaction-scoped advisory locks on keys, in
 * ascending order, each once.  exclusive may be NULL, meaning every key
 * exclusively (identifiers are always locked so).
 */
void
cdp_lock_keys(uint64 *keys, int n, bool *exclusive, int kind)
{
	KeyMode    *km;
	int			i;

	if (n == 0)
		return;
	if (lock_lxid != MyProc->lxid)
	{
		lock_lxid = MyProc->lxid;
		lock_count = 0;
		lock_escalated = false;
		lock_global_share = false;
	}
	if (lock_escalated)
		return;
	if (lock_count + n > CDP_MAX_FINE_LOCKS)
	{
		acquire_global(ExclusiveLock);
		lock_escalated = true;
		return;
	}
	if (!lock_global_share)
	{
		acquire_global(ShareLock);
		lock_global_share = true;
	}
	lock_count += n;

	km = palloc(sizeof(KeyMode) * n);
	for (i = 0; i < n; i++)
	{
		km[i].key = keys[i];
		km[i].exclusive = exclusive ? exclusive[i] : true;
	}
	qsort(km, n, sizeof(KeyMode), cmp_keymode);

	for (i = 0; i < n; i++)
	{
		LOCKTAG		tag;
		bool		excl = km[i].exclusive;

		/* Merge duplicates: the strongest mode wins. */
		while (i + 1 < n && km[i + 1].key == km[i].key)
		{
			i++;
			excl = excl || km[i].exclusive;
		}
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId,
							 (uint32) (km[i].key >> 32),
							 (uint32) km[i].key,
							 0xCD00 + kind);
		(void) LockAcquire(&tag, excl ? ExclusiveLock : ShareLock, false, false);
		if ((i & 255) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	pfree(km);
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

/*
 * cdp_parse_timestamptz parses an ISO 8601 timestamp with time zone
 * without throwing: false when s is not one (or is out of range).
 */
/*
 * Is s an ISO 8601 timestamp: YYYY-MM-DD, optionally followed by [T ]HH:MM,
 * optional :SS and fraction, and an optional zone (Z, +HH, +HH:MM, +HHMM)?
 * PostgreSQL's own parser also takes words ("yesterday", "now"), bare
 * numbers and zone names, and throws for unknown zone names: message
 * timestamps must be ISO 8601 before they get that far.
 */
static bool
iso8601_shape(const char *s)
{
#define DIGITS(n) do { for (int i_ = 0; i_ < (n); i_++, s++) if (*s < '0' || *s > '9') return false; } while (0)
	DIGITS(4);
	if (*s++ != '-')
		return false;
	DIGITS(2);
	if (*s++ != '-')
		return false;
	DIGITS(2);
	if (*s == '\0')
		return true;
	if (*s != 'T' && *s != 't' && *s != ' ')
		return false;
	s++;
	DIGITS(2);
	if (*s++ != ':')
		return false;
	DIGITS(2);
	if (*s == ':')
	{
		s++;
		DIGITS(2);
		if (*s == '.' || *s == ',')
		{
			int			n = 0;

			s++;
			while (*s >= '0' && *s <= '9')
				s++, n++;
			if (n == 0 || n > 9)
				return false;
		}
	}
	if (*s == ' ')
		s++;
	if (*s == '\0')
		return true;
	if ((*s == 'Z' || *s == 'z') && s[1] == '\0')
		return true;
	if (*s != '+' && *s != '-')
		return false;
	s++;
	DIGITS(2);
	if (*s == ':')
		s++;
	if (*s == '\0')
		return true;
	DIGITS(2);
	return *s == '\0';
#undef DIGITS
}

/*
 * The shape nearly every sender uses, 2026-11-23T10:00:00.123Z or with an
 * offset, read without the general date parser (a twentieth of a bulk
 * drain's parsing).  Anything else, or any field out of its plain range,
 * is left to the general parser: false means "not handled here".
 */
static bool
fast_iso8601(const char *s, TimestampTz *out)
{
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz = 0;
	int			v[6];
	static const int widths[6] = {4, 2, 2, 2, 2, 2};
	static const char seps[6] = {'-', '-', 'T', ':', ':', '\0'};

	for (int f = 0; f < 6; f++)
	{
		v[f] = 0;
		for (int d = 0; d < widths[f]; d++, s++)
		{
			if (*s < '0' || *s > '9')
				return false;
			v[f] = v[f] * 10 + (*s - '0');
		}
		if (f < 5)
		{
			if (*s != seps[f] && !(f == 2 && *s == 't'))
				return false;
			s++;
		}
	}
	if (*s == '.')
	{
		int			n = 0;
		int			scale = 100000;

		for (s++; *s >= '0' && *s <= '9'; s++, n++)
		{
			fsec += (*s - '0') * scale;
			scale /= 10;
		}
		if (n == 0 || n > 6)
			return false;
	}
	if ((*s == 'Z' || *s == 'z') && s[1] == '\0')
		tz = 0;
	else if ((*s == '+' || *s == '-') &&
			 s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' && s[3] == ':' &&
			 s[4] >= '0' && s[4] <= '5' && s[5] >= '0' && s[5] <= '9' && s[6] == '\0')
	{
		int			hh = (s[1] - '0') * 10 + (s[2] - '0');
		int			mm = (s[4] - '0') * 10 + (s[5] - '0');

		if (hh > 15)
			return false;
		/* PostgreSQL counts zones in seconds west of Greenwich */
		tz = (*s == '+' ? -1 : 1) * (hh * SECS_PER_HOUR + mm * SECS_PER_MINUTE);
	}
	else
		return false;
	if (v[0] < 1 || v[1] < 1 || v[1] > 12 || v[2] < 1 ||
		v[2] > day_tab[isleap(v[0])][v[1] - 1] ||
		v[3] > 23 || v[4] > 59 || v[5] > 59)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = v[0];
	tm.tm_mon = v[1];
	tm.tm_mday = v[2];
	tm.tm_hour = v[3];
	tm.tm_min = v[4];
	tm.tm_sec = v[5];
	return tm2timestamp(&tm, fsec, &tz, out) == 0 && IS_VALID_TIMESTAMP(*out);
}

bool
cdp_parse_timestamptz(const char *s, TimestampTz *out)
{
	fsec_t		fsec;
	struct pg_tm tm;
	int			tz;
	int			dtype;
	int			nf;
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];

	if (fast_iso8601(s, out))
		return true;
	if (strlen(s) > MAXDATELEN || !iso8601_shape(s))
		return false;
	if (ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype,
					  MAXDATEFIELDS, &nf) != 0 ||
		DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz) != 0 ||
		dtype != DTK_DATE ||
		tm2timestamp(&tm, fsec, &tz, out) != 0)
		return false;
	return IS_VALID_TIMESTAMP(*out);
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
