/*-------------------------------------------------------------------------
 *
 * util.h
 *	  Helpers every module uses: errors that can be raised or kept as a
 *	  reject, SPI plans and array parameters, jsonb field access, sorting
 *	  and hashing of keys, large arrays, counters bumped at transaction end
 *	  (util.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_UTIL_H
#define CDP_UTIL_H

#include "postgres.h"

#include "executor/spi.h"
#include "port/atomics.h"
#include "utils/jsonb.h"

/* An error that can either be raised or recorded as a reject. */
typedef struct CdpError
{
	int			sqlerrcode;		/* 0 = no error */
	char	   *message;
	char	   *detail;
	char	   *hint;
} CdpError;

extern void cdp_set_error(CdpError *err, int sqlerrcode, const char *message,
						  const char *detail, const char *hint);
extern void cdp_raise(const CdpError *err) pg_attribute_noreturn();

/* array parameters of internal statements */
extern Datum cdp_text_array(char **values, int n);
extern Datum cdp_int8_array(int64 *values, int n);
extern Datum cdp_int4_array(int32 *values, int n);
extern Datum cdp_timestamptz_array(TimestampTz *values, int n);
extern Datum cdp_jsonb_array(Jsonb **values, int n);

/* kept plans, run with index probes */
extern SPIPlanPtr cdp_prepare(const char *sql, int nargs, Oid *argtypes);
/* expected: the SPI result code, or CDP_SPI_ANY for any success */
#define CDP_SPI_ANY (-1)
extern void cdp_spi_exec(SPIPlanPtr plan, Datum *values, int expected);
extern void cdp_spi_exec_limit(SPIPlanPtr plan, Datum *values, int expected, long tcount);
extern void cdp_spi_exec_nulls(SPIPlanPtr plan, Datum *values, const char *nulls,
							   int expected, long tcount);
extern int	cdp_spi_int64_column(int64 *out);
/* user SQL: as owner (if valid), in a subtransaction, errors returned */
extern ErrorData *cdp_exec_guarded(SPIPlanPtr plan, Datum *args, const char *nulls,
								   Oid owner, int expected, const char *what);

/* jsonb */
extern char *cdp_jsonb_get_text(Jsonb *obj, const char *key, bool *is_string);
extern JsonbValue *cdp_jsonb_get(Jsonb *obj, const char *key, JsonbValue *out);
extern Jsonb *cdp_jsonb_get_object(Jsonb *obj, const char *key);
extern Jsonb *cdp_jsonb_pair(const char *key, const char *value);

/* keys */
extern uint64 cdp_hash_key(const char *a, const char *b);
extern int	cdp_cmp_int64(const void *a, const void *b);
extern int	cdp_sort_unique_int64(int64 *ids, int n);
extern bool cdp_sorted_contains(const int64 *ids, int n, int64 id);

/* large arrays, offered to huge pages */
extern void *cdp_huge_alloc(MemoryContext cxt, Size size, bool zero);
extern void cdp_huge_free(void *p);
extern void *cdp_huge_grow(MemoryContext cxt, void *p, Size oldsize, Size newsize);

/* a shared counter moved now and when the current transaction ends */
extern void cdp_bump_through_xact(pg_atomic_uint64 *counter);

#endif							/* CDP_UTIL_H */
