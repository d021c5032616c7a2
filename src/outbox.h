/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  The outbox: channels, templates, enqueue, claim, ack, fail, replay,
 *	  and its worker task (outbox.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_OUTBOX_H
#define CDP_OUTBOX_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/date.h"
#include "utils/jsonb.h"

/* a channel as the outbox and the policy read it */
typedef struct CdpChannel
{
	char	   *name;
	char	   *kind;
	char	   *address_type;	/* NULL: target */
	char	   *target;
	char	   *purpose;
	bool		requires_consent;
	bool		has_quiet;
	TimeADT		quiet_start;
	TimeADT		quiet_end;
	int32		cap_per_day;	/* 0: none */
	int32		cap_per_week;
	double		rate_per_second;	/* 0: none */
	int32		max_attempts;
	int64		backoff_base;	/* microseconds */
	int64		backoff_max;
	int32		max_payload_bytes;
} CdpChannel;


extern void cdp_outbox_init(void);
extern Size cdp_outbox_shmem_size(void);
extern void cdp_outbox_shmem_init(void);

/* n messages of one channel and template through the policy, due now (outbox.c) */
extern void cdp_enqueue_many(const char *channel, const char *template, int n,
							 const int64 *profile_ids, Jsonb **payloads, char **dedupe_keys,
							 int64 *ids);

/* the channel named, from the backend's cache; NULL when unknown */
extern const CdpChannel *cdp_outbox_channel(const char *name);

#endif							/* CDP_OUTBOX_H */
