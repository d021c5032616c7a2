/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  The contact policy: consent, suppressed addresses, quiet hours and
 *	  caps in the recipient's time zone (policy.c), as the outbox checks
 *	  it at enqueue and at claim.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_POLICY_H
#define CDP_POLICY_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "outbox.h"

/*
 * Why a message may not be enqueued, or NULL: an SQL expression over the
 * profile (pid), whether the channel needs consent, its purpose and its
 * address type or NULL, each an SQL expression itself.  cdp.enqueue reads
 * them from its statement parameters ($1, $7, $8, $9), a batch from its
 * rows (cdp_enqueue_many).
 */
#define CDP_POLICY_ENQUEUE_SQL_OVER(pid, consent, purpose, atype) \
	"CASE WHEN " consent " AND (SELECT k.granted FROM cdp.consents k " \
	"WHERE k.profile_id = " pid " AND k.purpose = " purpose ") IS DISTINCT FROM true " \
	"THEN CASE WHEN EXISTS (SELECT 1 FROM cdp.consents k WHERE k.profile_id = " pid \
	" AND k.purpose = " purpose ") " \
	"THEN 'consent withdrawn for ' || " purpose " ELSE 'no consent for ' || " purpose " END " \
	"WHEN " atype "::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cdp.identities i " \
	"WHERE i.profile_id = " pid " AND i.type = " atype ") THEN 'no ' || " atype " || ' address' " \
	"WHEN " atype "::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cdp.identities i " \
	"WHERE i.profile_id = " pid " AND i.type = " atype " AND NOT EXISTS (SELECT 1 FROM cdp.suppressions s " \
	"WHERE s.address = i.value AND s.address_type = i.type)) THEN 'address suppressed' END"
#define CDP_POLICY_ENQUEUE_SQL CDP_POLICY_ENQUEUE_SQL_OVER("$1", "$7", "$8", "$9")

/*
 * The claim: locks up to $3 due messages of channel $1 at $2, at most one
 * per person (the earliest unfinished one), and reads what the policy
 * needs of each but time: $4 purpose, $5 consent needed, $6 address type
 * ('' none).  Quiet hours and caps depend on the recipient's time zone,
 * which is worked out once per zone of the batch (cdp_policy_zone_times),
 * and caps are counted for the whole batch in one statement
 * (cdp_policy_count_caps), not per message in this one.
 *
 * The earlier-message test is a subplan probing outbox_open per candidate
 * (OFFSET 0 keeps the planner from turning it into an anti join): on a
 * freshly filled outbox with no statistics yet, the anti join it would
 * choose scans the whole channel for every candidate.  For the same
 * reason its channel test is an expression no index matches: the plan is
 * made once, and on a table too small to tell the indexes apart,
 * outbox_due (channel first) may look as cheap as outbox_open, and would
 * then read every earlier message of the channel for every candidate.
 * Likewise the address test probes per message rather than hashing every
 * identity of the type: one probe gives the newest address that is not
 * suppressed, else a suppressed one, which still says the person has the
 * type.
 */
#define CDP_POLICY_CLAIM_SQL \
	"WITH c AS (SELECT o.outbox_id, o.dedupe_key, o.profile_id, o.template, o.payload, o.attempts " \
	"FROM cdp.outbox o WHERE o.channel = $1 AND o.finished_at IS NULL AND o.not_before <= $2 " \
	"AND (o.status <> 'leased' OR o.lease_until <= $2) " \
	"AND NOT EXISTS (SELECT 1 FROM cdp.outbox e WHERE e.profile_id = o.profile_id " \
	"AND e.channel || '' = $1 AND e.finished_at IS NULL AND e.outbox_id < o.outbox_id " \
	"AND (e.status IN ('leased', 'retry') OR e.not_before <= $2) OFFSET 0) " \
	"ORDER BY o.not_before, o.outbox_id LIMIT $3 FOR UPDATE OF o SKIP LOCKED) " \
	"SELECT c.outbox_id, c.dedupe_key, c.profile_id, c.template, c.payload, c.attempts, p.traits, " \
	"(NOT $5 OR coalesce((SELECT k.granted FROM cdp.consents k " \
	"WHERE k.profile_id = c.profile_id AND k.purpose = $4), false)), " \
	"CASE WHEN NOT a.blocked THEN a.value END, $6 = '' OR a.value IS NOT NULL " \
	"FROM c LEFT JOIN cdp.profiles p ON p.profile_id = c.profile_id " \
	"LEFT JOIN LATERAL (SELECT i.value, EXISTS (SELECT 1 FROM cdp.suppressions s " \
	"WHERE s.address = i.value AND s.address_type = i.type) AS blocked FROM cdp.identities i " \
	"WHERE $6 <> '' AND i.profile_id = c.profile_id AND i.type = $6 " \
	"ORDER BY 2, i.first_seen_at DESC, i.value LIMIT 1) a ON true " \
	"ORDER BY c.outbox_id"

/* the moments of a recipient's time zone the policy reads, at a claim */
typedef struct CdpZoneTimes
{
	char	   *zone;
	bool		in_quiet;
	TimestampTz quiet_until;	/* in_quiet: when the quiet period ends */
	TimestampTz day_start;		/* the recipient's day and week (from Monday) */
	TimestampTz day_end;
	TimestampTz week_start;
	TimestampTz week_end;
} CdpZoneTimes;

/* messages sent to a recipient in their day and week: on the channel, on all */
typedef struct CdpCapCounts
{
	int64		channel_day;
	int64		channel_week;
	int64		all_day;
	int64		all_week;
} CdpCapCounts;

/* what the policy decided for a claimed message */
typedef struct CdpPolicyRow
{
	char	   *status;			/* leased, cancelled, deferred */
	char	   *reason;			/* NULL when leased */
	TimestampTz not_before;		/* deferred: when it is due again */
	char	   *address;		/* leased: where it goes */
} CdpPolicyRow;

/* settings: caps across channels per person (0: none) */
extern int	cdp_contact_cap_per_day;
extern int	cdp_contact_cap_per_week;

extern void cdp_policy_init(void);
extern char *cdp_policy_enqueue_reason(int64 profile_id, const CdpChannel *c, bool *exists);
extern const char *cdp_policy_zone(Jsonb *traits);
extern void cdp_policy_zone_times(const CdpChannel *c, const char *zone, TimestampTz now,
								  CdpZoneTimes *out);
extern bool cdp_policy_counts_caps(const CdpChannel *c);
extern void cdp_policy_count_caps(const CdpChannel *c, int n, const int64 *profile_ids,
								  const int64 *outbox_ids, CdpZoneTimes *const *zones,
								  CdpCapCounts *out);
extern void cdp_policy_read_row(HeapTuple tup, TupleDesc desc, const CdpChannel *c,
								const CdpZoneTimes *zt, CdpPolicyRow *out);
extern void cdp_policy_apply_caps(const CdpChannel *c, const CdpZoneTimes *zt,
								  const CdpCapCounts *counts, CdpPolicyRow *out);

#endif							/* CDP_POLICY_H */
