/*-------------------------------------------------------------------------
 *
 * pg_cdp.h
 *	  Types and entry points shared by the files of pg_cdp.
 *
 * The ingest path is one pipeline used by every entry point (cdp.track,
 * cdp.identify, cdp.ingest, cdp.ingest_batch and the inbox drain): messages
 * are parsed into CdpMessage structs, the identity engine (identity.c)
 * resolves a whole batch of them to profiles at once, merge.c moves the rows
 * of retired profiles, and ingest.c writes the events.  A single call is a
 * batch of one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_CDP_H
#define PG_CDP_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/jsonb.h"

/* ---- settings (pg_cdp.c) ---- */
extern char *cdp_database;
extern int	cdp_naptime;
extern bool cdp_worker_enabled;
extern int	cdp_batch_size;
extern char *cdp_fake_now;
extern bool cdp_email_provider_rules;
extern char *cdp_default_phone_region;
extern bool cdp_auto_create_identifier_types;
extern char *cdp_trait_source_priority;
extern int	cdp_max_identities_per_profile;
extern int	cdp_max_message_bytes;

extern TimestampTz cdp_now(void);

/* ---- shared state of the worker (pg_cdp.c, worker.c) ---- */
/*
 * Inbox drainers: the worker is slot 0, its helpers (cdp.drain_workers)
 * the others.  A drainer resolves a batch in one transaction and writes its
 * events in the next; in between, the inbox ids it holds are its claims,
 * which the other drainers skip, and the profiles it is about to write to
 * are its writes, which no one retires until the writing transaction ends
 * (drain.c).
 */
#define CDP_MAX_DRAINERS 8
#define CDP_MAX_BATCH 20000

typedef struct CdpSharedState
{
	slock_t		mutex;
	pid_t		worker_pid;
	Latch	   *worker_latch;
	Latch	   *drain_latch[CDP_MAX_DRAINERS];	/* helpers' latches */
	LWLock	   *claims_lock;
	Oid			claims_db[CDP_MAX_DRAINERS];
	int			nclaims[CDP_MAX_DRAINERS];	/* sorted ids: CDP_CLAIMS(slot) */
	int			nwrites[CDP_MAX_DRAINERS];	/* sorted ids: CDP_WRITES(slot) */
	TransactionId writer_xid[CDP_MAX_DRAINERS]; /* the writing xact, once begun */
	TimestampTz worker_started;
	TimestampTz heartbeat;
	uint64		rounds;
	uint64		drained;		/* inbox rows turned into events */
	uint64		rejected;		/* inbox rows turned into rejects */
	uint64		errors;			/* rounds that failed and were rolled back */
	uint64		resolved;		/* messages resolved by the identity engine */
	uint64		resolve_usec;	/* time spent resolving them, all backends */
	uint64		ingest_waits;	/* writers that waited for a drainer's lock */
	int			batch_limit;	/* the worker's current batch size */
	pg_atomic_uint64 inbox_erasures;	/* cdp.forget's deletions of inbox
										 * rows (drain.c) */
	pg_atomic_uint64 marks_generation;	/* bumped by deletions of marks
										 * (profile.c) */
	char		last_error[256];
} CdpSharedState;

extern CdpSharedState *cdp_shared;

#define CDP_CLAIMS(slot) \
	((int64 *) ((char *) cdp_shared + MAXALIGN(sizeof(CdpSharedState))) + (slot) * CDP_MAX_BATCH)
#define CDP_WRITES(slot) (CDP_CLAIMS(cdp_drain_workers) + (slot) * CDP_MAX_BATCH)
extern int	cdp_drain_workers;
extern int	cdp_bulk_batch_size;
extern bool cdp_drain_synchronous_commit;
extern void cdp_wake_worker_at_commit(void);
extern void cdp_bump_through_xact(pg_atomic_uint64 *counter);

/* ---- errors that can either be raised or recorded as a reject ---- */
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

/* ---- identifier types and normalization (identity.c, normalize.c) ---- */
typedef enum CdpNormalizer
{
	CDP_NORM_TRIM,
	CDP_NORM_LOWER,
	CDP_NORM_EMAIL,
	CDP_NORM_PHONE
} CdpNormalizer;

typedef struct CdpIdentType
{
	char	   *name;
	int			max_per_profile;
	int			priority;		/* lower is stronger */
	CdpNormalizer normalizer;
	int			nblocked;
	text	  **blocked;		/* anchored regular expressions */
} CdpIdentType;

extern CdpIdentType *cdp_ident_type(const char *name);
extern int	cdp_ident_type_index(const char *name);
extern CdpIdentType *cdp_ident_type_at(int index);
extern int	cdp_ident_type_count(void);
extern int	cdp_ident_type_create(const char *name);
extern bool cdp_ident_blocked(CdpIdentType *type, const char *value);

extern char *cdp_normalize_email_str(const char *raw, const char **why);
extern char *cdp_normalize_phone_str(const char *raw, const char *region,
									 const char **why);
extern char *cdp_normalize_value(CdpIdentType *type, const char *raw,
								 const char **why);

/* ---- messages, as the identity engine and the event writer see them ---- */
typedef struct CdpIdent
{
	int			type;			/* index into the identifier type cache */
	char	   *value;			/* normalized */
	bool		alias_previous; /* alias previousId: user_id, else anonymous_id */
	int			node;			/* engine: resolved component node, -1 if none */
	void	   *entry;			/* engine: its identifier entry, when known */
} CdpIdent;

typedef struct CdpIssue
{
	char	   *type;
	char	   *value;
	char	   *reason;
} CdpIssue;

typedef struct CdpMessage
{
	/* input */
	char	   *message_id;		/* NULL: generated, no dedupe */
	char	   *msgtype;		/* track, identify, page, screen, alias, group */
	char	   *event;
	char	   *channel;
	Jsonb	   *properties;
	Jsonb	   *traits;			/* identify/group traits, or NULL */
	Jsonb	   *context;		/* message context, or NULL */
	TimestampTz occurred_at;
	TimestampTz received_at;
	int			nidents;
	CdpIdent   *idents;
	int			nissues;		/* identifiers dropped, with the reason */
	CdpIssue   *issues;
	char	   *raw;			/* inbox text, kept for rejects */
	int64		inbox_id;
	ItemPointerData inbox_tid;	/* where the drain read the row, if it did */
	TimestampTz inbox_received_at;
	char	   *source;			/* cdp.sources name, NULL for SQL calls */
	char	   *loaded_by;		/* the role that wrote the inbox row */
	char	   *preset_reject;	/* reject reason given by the loader */
	int			base_nissues;	/* issues found while parsing */
	bool		id_generated;

	/* output */
	CdpError	err;			/* rejected when err.sqlerrcode != 0 */
	bool		duplicate;		/* message id seen before */
	int			node;			/* engine: component node */
	int64		profile_id;
} CdpMessage;

extern void cdp_message_add_identifier(CdpMessage *msg, const char *type,
									   const char *raw, bool strict);
extern void cdp_message_append_ident(CdpMessage *msg, int type, char *value);
extern void cdp_add_issue(CdpMessage *msg, const char *type, const char *value,
						  const char *reason);

/* identity.c: resolve a batch; fills profile_id or duplicate for each message */
typedef void (*CdpBatchWork) (CdpMessage *msgs, int n);
extern void cdp_resolve_messages(CdpMessage *msgs, int nmsgs, bool dedupe_first,
								 CdpBatchWork on_locked);
extern int64 cdp_lookup_profile(const char *type, const char *value);

/* identity.c: parse an identifiers object of cdp.track & co. */
extern void cdp_parse_identifiers(Jsonb *identifiers, CdpMessage *msg,
								  bool strict);

/* merge.c */
extern void cdp_lock_profile_rows(int64 *ids, int n);
typedef struct CdpMergeStep
{
	int64		winner;
	int64		loser;
	int			msg;			/* index of the causing message */
	int64	   *members;		/* stored profiles the loser was made of */
	int			nmembers;
	char	  **extra_types;	/* identifiers the batch gave the loser before */
	char	  **extra_values;
	int			nextra;
} CdpMergeStep;

extern void cdp_execute_merges(CdpMessage *msgs, CdpMergeStep *steps, int nsteps);

/* profile.c */
extern Jsonb *cdp_traits_merge(Jsonb *t1, Jsonb *m1, Jsonb *t2, Jsonb *m2,
							   Jsonb **meta_out);
extern Jsonb *cdp_traits_meta_for(Jsonb *traits, TimestampTz at,
								  const char *source);
extern void cdp_mark_profiles_changed(int64 *ids, int n, const char *reason);

typedef struct CdpTraitFold
{
	int64	   *ids;
	Jsonb	  **traits;
	Jsonb	  **meta;
	int			n;
	int			cap;
} CdpTraitFold;

extern void cdp_trait_fold_add(CdpTraitFold *f, int64 profile_id, Jsonb *traits,
							   Jsonb *meta);
extern void cdp_trait_fold_apply(CdpTraitFold *f);
extern bool cdp_parse_timestamptz(const char *s, TimestampTz *out);
extern void *cdp_huge_alloc(MemoryContext cxt, Size size, bool zero);
extern void cdp_huge_free(void *p);
extern void *cdp_huge_grow(MemoryContext cxt, void *p, Size oldsize, Size newsize);

/* ingest.c */
extern bool cdp_parse_segment_message(Jsonb *msg, CdpMessage *out,
									  TimestampTz received_at);
extern void cdp_write_messages(CdpMessage *msgs, int nmsgs);
extern void cdp_apply_traits(CdpMessage *msgs, int nmsgs);
extern void cdp_write_events(CdpMessage *msgs, int nmsgs);
extern void cdp_require_identifier(CdpMessage *m);
extern int	cdp_drain_inbox(int limit, int *rejected);

/* inbox.c: pieces of the bulk paths */
extern void cdp_run_isolated(CdpMessage *msgs, int n, CdpBatchWork work);
extern void cdp_parse_inbox_batch(CdpMessage *msgs, int n);
extern void cdp_reset_messages(CdpMessage *msgs, int n);
extern int	cdp_record_rejects(CdpMessage *msgs, int n, const char *default_source);
extern CdpMessage *cdp_inbox_messages_from_spi(void);

/* drain.c: the worker's two-transaction drain */
typedef struct CdpDrainBatch
{
	CdpMessage *msgs;
	int			n;
	int			slot;			/* the drainer's */
} CdpDrainBatch;

extern CdpDrainBatch *cdp_drain_resolve(int slot, int limit, MemoryContext keep_cxt);
extern int	cdp_drain_write(CdpDrainBatch *batch, int *rejected);
extern void cdp_drain_release(int slot);
extern void cdp_inbox_erasing(void);
extern void cdp_wait_for_drain_writers(const int64 *ids, int n);

/* spi helpers (util.c) */
extern Datum cdp_text_array(char **values, int n);
extern Datum cdp_int8_array(int64 *values, int n);
extern Datum cdp_int4_array(int32 *values, int n);
extern Datum cdp_timestamptz_array(TimestampTz *values, int n);
extern Datum cdp_jsonb_array(Jsonb **values, int n);
extern SPIPlanPtr cdp_prepare(const char *sql, int nargs, Oid *argtypes);
extern void cdp_spi_exec(SPIPlanPtr plan, Datum *values, int expected);
extern void cdp_spi_exec_limit(SPIPlanPtr plan, Datum *values, int expected, long tcount);
extern char *cdp_jsonb_get_text(Jsonb *obj, const char *key, bool *is_string);
extern JsonbValue *cdp_jsonb_get(Jsonb *obj, const char *key, JsonbValue *out);
extern Jsonb *cdp_jsonb_get_object(Jsonb *obj, const char *key);
extern Jsonb *cdp_jsonb_pair(const char *key, const char *value);
extern uint64 cdp_hash_key(const char *a, const char *b);
extern int	cdp_cmp_int64(const void *a, const void *b);
extern int	cdp_sort_unique_int64(int64 *ids, int n);
extern int	cdp_spi_int64_column(int64 *out);
extern void cdp_lock_keys(uint64 *keys, int n, bool *exclusive, int kind);
extern bool cdp_locks_escalated(void);

#define CDP_LOCK_IDENTIFIER 1
#define CDP_LOCK_PROFILE	2

#endif							/* PG_CDP_H */
