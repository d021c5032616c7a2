/*-------------------------------------------------------------------------
 *
 * predicate.h
 *	  The validator of user SQL conditions: a trait's "where", a segment's
 *	  predicate (predicate.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_PREDICATE_H
#define CDP_PREDICATE_H

#include "postgres.h"

#include "nodes/pg_list.h"

/* What a valid condition reads. */
typedef struct CdpPredicate
{
	List	   *columns;		/* the relation's columns it uses (char *) */
	List	   *segments;		/* segments named by cdp.in_segment (char *) */
	bool		reads_time;		/* calls cdp.now(), now(), current_date... */
} CdpPredicate;

/*
 * what names the condition in messages ("a trait's \"where\""); from is the
 * FROM clause it is evaluated over, whose first relation's columns it may
 * use unqualified.
 */
extern void cdp_check_predicate(const char *expr, const char *what,
								const char *from, CdpPredicate *out);

#endif							/* CDP_PREDICATE_H */
