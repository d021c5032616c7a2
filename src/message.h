/*-------------------------------------------------------------------------
 *
 * message.h
 *	  A message as the identity engine and the event writer see it.
 *
 * Every ingest path (cdp.track, cdp.identify, cdp.ingest,
 * cdp.ingest_batch, the inbox drain) turns its input into CdpMessage
 * structs; the identity engine resolves a whole batch of them to profiles
 * at once, and the event writer stores them.  A single call is a batch of
 * one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_MESSAGE_H
#define CDP_MESSAGE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/itemptr.h"
#include "utils/jsonb.h"

#include "util.h"

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

/* An identifier waiting for its type to be created (idtypes.c). */
typedef struct CdpPendingIdent CdpPendingIdent;

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
	bool		lookup;			/* only looked up: no cap, no type created */
	int			noffered;		/* identifiers given, for the cap */
	int			npending;		/* identifiers of types not created yet */
	CdpPendingIdent *pending;
	struct HTAB *ident_set;		/* its identifiers, once there are many */

	/* output */
	CdpError	err;			/* rejected when err.sqlerrcode != 0 */
	bool		duplicate;		/* message id seen before */
	int			node;			/* engine: component node */
	int64		profile_id;
} CdpMessage;

/* Work on a batch of messages (resolve, write, parse). */
typedef void (*CdpBatchWork) (CdpMessage *msgs, int n);

#endif							/* CDP_MESSAGE_H */
