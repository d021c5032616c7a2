/*-------------------------------------------------------------------------
 *
 * decide.h
 *	  Next best action: offers and their per-backend cache
 *	  (decide_offers.c); scoring, channel and send-time choice (decide.c); model training, the bandit
 *	  and the feedback that settles sends (decide_train.c); arbitration of
 *	  an audience under capacities (decide_run.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_DECIDE_H
#define CDP_DECIDE_H

#include "postgres.h"

#include "common/pg_prng.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "utils/date.h"
#include "utils/jsonb.h"

#include "outbox.h"

/* the delivery events that count as engaging with a message */
#define CDP_ENGAGED_EVENTS "('Message Opened', 'Message Clicked')"

/* one channel an offer may go through */
typedef struct CdpOfferChannel
{
	char	   *channel;
	char	   *template;
	int32		capacity;		/* per business day; -1: unlimited */
} CdpOfferChannel;

typedef struct CdpOffer
{
	char	   *name;
	int			nchannels;
	CdpOfferChannel *channels;
	int			nsegments;
	char	  **segments;
	char	   *condition;		/* NULL: none */
	double		value;
	bool		has_from;
	bool		has_until;
	TimestampTz valid_from;
	TimestampTz valid_until;
	int64		cooldown;		/* microseconds; 0: none */
	int32		lifetime_cap;	/* 0: none */
	char	   *goal_event;
	Oid			owner;
	int			nfeatures;
	char	  **features;
	int		   *feature_slot;	/* into the cache's feature list */
	/* the model, when trained */
	bool		has_model;
	bool		model_active;
	double	   *weights;		/* in step with features */
	double	   *means;			/* what a NULL feature is taken as */
	double		intercept;
	double		auc;
	/* its condition's place in its owner's statement */
	int			cond_group;
	int			cond_column;
} CdpOffer;

typedef struct CdpOfferCache
{
	MemoryContext cxt;
	uint64		generation;
	Oid			relid;
	int			n;
	CdpOffer   *offers;
	int			nfeatures;		/* every feature some offer reads */
	char	  **features;
	SPIPlanPtr	features_plan;	/* $1 profile -> the features as float8 */
	int			ngroups;		/* conditions grouped by owner */
	Oid		   *group_owner;
	SPIPlanPtr *group_plan;		/* $1 profile -> one boolean per condition */
	char	  **group_sql;		/* SELECT list of the group's conditions */
} CdpOfferCache;

/* settings */
extern int	cdp_decide_seed;
extern double cdp_decide_shrinkage;
extern int	cdp_decide_engagement_days;
extern int	cdp_decide_min_sends;
extern int	cdp_decide_min_conversions;
extern double cdp_decide_min_auc;
extern double cdp_decide_l2;
extern double cdp_decide_test_share;

/* decide_offers.c */
extern Size cdp_decide_shmem_size(void);
extern void cdp_decide_shmem_init(void);
extern CdpOfferCache *cdp_offers_load(void);
extern CdpOffer *cdp_offer_by_name(const char *name, bool missing_ok);
extern SPIPlanPtr cdp_offer_features_plan(CdpOfferCache *c);
extern SPIPlanPtr cdp_decide_prepare_guarded(const char *sql, int nargs, Oid *types, char **error);

/* decide.c */
extern void cdp_decide_init(void);
extern double cdp_offer_propensity_model(const CdpOffer *o, const double *x, const bool *xnull);
extern TimestampTz cdp_decide_send_time(TimestampTz now, const char *zone,
										const CdpChannel *c, const double *own_hours,
										const double *pop_hours, int *hour_out);
extern double cdp_decide_channel_rate(double delivered, double engaged,
									  double pop_delivered, double pop_engaged);
extern DateADT cdp_decide_business_day(TimestampTz t);

/* decide_train.c */
extern void cdp_decide_feedback_init(void);
extern uint64 cdp_decide_mix(uint64 seed, int64 a, const char *b, const char *c);
extern double cdp_beta_draw(pg_prng_state *st, double alpha, double beta);

/* decide_run.c */
extern void cdp_decide_run_init(void);
extern Jsonb *cdp_arbitrate(const char *campaign, const char *segment, char **offers,
							int noffers, const char *run_key, int holdout,
							int64 *audience, int64 *enqueued, int64 *held_out,
							Jsonb **suppressed);

#endif							/* CDP_DECIDE_H */
