/*-------------------------------------------------------------------------
 *
 * segment.h
 *	  Segments: their definitions and SQL functions (segment.c) and their
 *	  evaluation (segment_eval.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_SEGMENT_H
#define CDP_SEGMENT_H

#include "postgres.h"

#include "executor/spi.h"

extern int	cdp_segment_batch_size;

/* A segment as its evaluators see it. */
typedef struct SegmentDef
{
	int32		id;
	char	   *name;
	char	   *predicate;
	bool		realtime;
	Oid			owner;
	bool		reads_time;
	int			level;			/* 0, or 1 + the highest level it names */
	bool		used;			/* another segment names it */
	SPIPlanPtr	batch_plan;		/* its statement over a batch of profiles */
	SPIPlanPtr	live_plan;		/* cdp.in_segment's over one profile */
	SPIPlanPtr	refresh_plan;	/* over a range of profile ids */
} SegmentDef;

/* The definitions, and the realtime ones grouped by (level, owner). */
typedef struct SegmentCache
{
	MemoryContext cxt;
	uint64		generation;
	Oid			relid;
	int			n;
	SegmentDef *defs;			/* by segment_id */
	int			ngroups;
	int		   *group_start;	/* into order */
	int		   *group_len;
	SegmentDef **order;
	SPIPlanPtr *group_plans;
} SegmentCache;

extern SegmentCache cdp_segments;

extern void cdp_segments_init(void);
extern Size cdp_segments_shmem_size(void);
extern void cdp_segments_shmem_init(void);

/* segment.c */
extern void cdp_segments_load(void);
extern void cdp_segments_changed(void);
extern void cdp_segments_pin(bool pin);
extern SegmentDef *cdp_segment_by_name(const char *name, bool missing_ok);
extern SegmentDef *cdp_segment_by_id(int32 id);

/* segment_eval.c */
extern int64 cdp_segments_task(bool *more);
extern void cdp_segment_refresh(SegmentDef *s, int64 *entered, int64 *exited);
extern bool cdp_segment_live(SegmentDef *s, int64 profile_id);

#endif							/* CDP_SEGMENT_H */
