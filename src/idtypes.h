/*-------------------------------------------------------------------------
 *
 * idtypes.h
 *	  Identifier types (the cache of cdp.identifier_types) and the
 *	  identifiers of a message (idtypes.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_IDTYPES_H
#define CDP_IDTYPES_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "message.h"

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

extern bool cdp_auto_create_identifier_types;
extern int	cdp_max_identifiers_per_message;

extern void cdp_idtypes_init(void);
extern CdpIdentType *cdp_ident_type(const char *name);
extern int	cdp_ident_type_index(const char *name);
extern CdpIdentType *cdp_ident_type_at(int index);
extern int	cdp_ident_type_count(void);
extern void cdp_ident_types_create(char **names, int n);
extern bool cdp_ident_blocked(CdpIdentType *type, const char *value);

/* the identifiers of a message */
extern void cdp_message_add_identifier(CdpMessage *msg, const char *type,
									   const char *raw, bool strict);
extern void cdp_message_add_previous_id(CdpMessage *msg, const char *raw);
extern void cdp_message_finish_identifiers(CdpMessage *msg);
extern void cdp_message_append_ident(CdpMessage *msg, int type, char *value);
extern void cdp_add_issue(CdpMessage *msg, const char *type, const char *value,
						  const char *reason);
extern void cdp_parse_identifiers(Jsonb *identifiers, CdpMessage *msg,
								  bool strict);

#endif							/* CDP_IDTYPES_H */
