/*-------------------------------------------------------------------------
 *
 * journey.h
 *	  Journeys and triggers: definitions (journey_def.c) and their
 *	  execution (journey_run.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_JOURNEY_H
#define CDP_JOURNEY_H

#include "postgres.h"

#include "executor/spi.h"

/* the row a condition reads: the event's columns, then cdp.customers' */
#define CDP_JOURNEY_CONDITION_ROWS \
	"(SELECT b.i, b.event, b.properties, b.occurred_at, c.* " \
	"FROM unnest($1::int8[], $2::text[], $3::jsonb[], $4::timestamptz[]) " \
	"WITH ORDINALITY AS b(pid, event, properties, occurred_at, i) " \
	"LEFT JOIN cdp.customers c ON c.profile_id = b.pid) e"

extern void cdp_journey_init(void);
extern Size cdp_journey_shmem_size(void);
extern void cdp_journey_shmem_init(void);

/* journey_run.c */
extern void cdp_journeys_changed(void);

#endif							/* CDP_JOURNEY_H */
