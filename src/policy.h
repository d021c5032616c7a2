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

#include "outbox.h"

/*
 * The claim: locks up to $3 due messages of channel $1 at $2, at most one
 * per person (the earliest unfinished one), and reads what the policy
 * needs.  $4 purpose, $5 consent needed, $6 address type ('' none), $7
 * quiet hours on, $8 and $9 their start and end, $10 and $11 the
 * channel's caps per day and week, $12 and $13 the caps across channels
 * (0: none).
 *
 * The earlier-message test is a subplan probing outbox_open per candidate
 * (OFFSET 0 keeps the planner from turning it into an anti join): on a
 * freshly filled outbox with no statistics yet, the anti join it would
 * choose scans the whole channel for every candidate.  Likewise the
 * address test probes per message rather than hashing every identity of
 * the type.
 */
#define CDP_POLICY_CLAIM_SQL \
	"WITH c AS (SELECT o.outbox_id, o.dedupe_key, o.profile_id, o.template, o.payload, o.attempts " \
	"FROM cdp.outbox o WHERE o.channel = $1 AND o.finished_at IS NULL AND o.not_before <= $2 " \
	"AND (o.status <> 'leased' OR o.lease_until <= $2) " \
	"AND NOT EXISTS (SELECT 1 FROM cdp.outbox e WHERE e.profile_id = o.profile_id " \
	"AND e.channel = $1 AND e.finished_at IS NULL AND e.outbox_id < o.outbox_id " \
	"AND (e.status IN ('leased', 'retry') OR e.not_before <= $2) OFFSET 0) " \
	"ORDER BY o.not_before, o.outbox_id LIMIT $3 FOR UPDATE OF o SKIP LOCKED) " \
	"SELECT c.outbox_id, c.dedupe_key, c.profile_id, c.template, c.payload, c.attempts, p.traits, " \
	"(NOT $5 OR coalesce((SELECT k.granted FROM cdp.consents k " \
	"WHERE k.profile_id = c.profile_id AND k.purpose = $4), false)), " \
	"CASE WHEN $6 <> '' THEN (SELECT i.value FROM cdp.identities i " \
	"WHERE i.profile_id = c.profile_id AND i.type = $6 AND NOT EXISTS (SELECT 1 FROM cdp.suppressions s " \
	"WHERE s.address = i.value AND s.address_type = i.type) ORDER BY i.first_seen_at DESC, i.value LIMIT 1) END, " \
	"$6 = '' OR EXISTS (SELECT 1 FROM cdp.identities i WHERE i.profile_id = c.profile_id AND i.type = $6 OFFSET 0), " \
	"CASE WHEN $7 THEN cdp.quiet_until($2, z.zone, $8, $9) END, " \
	"CASE WHEN $10 > 0 THEN (SELECT count(*) FROM cdp.outbox h WHERE h.profile_id = c.profile_id " \
	"AND h.channel = $1 AND h.outbox_id <> c.outbox_id " \
	"AND h.sent_at >= cdp.local_period_start($2, z.zone, 'day')) END, " \
	"CASE WHEN $11 > 0 THEN (SELECT count(*) FROM cdp.outbox h WHERE h.profile_id = c.profile_id " \
	"AND h.channel = $1 AND h.outbox_id <> c.outbox_id " \
	"AND h.sent_at >= cdp.local_period_start($2, z.zone, 'week')) END, " \
	"CASE WHEN $12 > 0 THEN (SELECT count(*) FROM cdp.outbox h WHERE h.profile_id = c.profile_id " \
	"AND h.outbox_id <> c.outbox_id AND h.sent_at >= cdp.local_period_start($2, z.zone, 'day')) END, " \
	"CASE WHEN $13 > 0 THEN (SELECT count(*) FROM cdp.outbox h WHERE h.profile_id = c.profile_id " \
	"AND h.outbox_id <> c.outbox_id AND h.sent_at >= cdp.local_period_start($2, z.zone, 'week')) END, " \
	"cdp.local_period_end($2, z.zone, 'day'), cdp.local_period_end($2, z.zone, 'week'), z.zone " \
	"FROM c LEFT JOIN cdp.profiles p ON p.profile_id = c.profile_id " \
	"CROSS JOIN LATERAL (SELECT cdp.recipient_zone(p.traits ->> 'timezone') AS zone) z " \
	"ORDER BY c.outbox_id"

/* what the policy decided for a claimed message */
typedef struct CdpPolicyRow
{
	char	   *status;			/* leased, cancelled, deferred */
	char	   *reason;			/* NULL when leased */
	TimestampTz not_before;		/* deferred: when it is due again */
	char	   *address;		/* leased: where it goes */
} CdpPolicyRow;

extern void cdp_policy_init(void);
extern char *cdp_policy_enqueue_reason(int64 profile_id, const CdpChannel *c, bool *exists);
extern void cdp_policy_read_row(HeapTuple tup, TupleDesc desc, const CdpChannel *c,
								TimestampTz now, CdpPolicyRow *out);

#endif							/* CDP_POLICY_H */
