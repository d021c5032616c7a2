/*-------------------------------------------------------------------------
 *
 * journey_def.c
 *	  Journey definitions: validation, versions, start, pause and resume.
 *
 * A definition is a jsonb document:
 *
 *	{"entry": {"event": "Order Completed", "condition": "<SQL>"} | {"segment": "vip"},
 *	 "reentry": "never" | "always" | {"cooldown": "30 days"},
 *	 "exit": [{"event": "Unsubscribed"}, {"segment_exit": "vip"}],
 *	 "goal": {"event": "Order Completed", "within": "7 days"},
 *	 "holdout": 10,
 *	 "steps": [{"name": "...", "kind": "...", ..., "next": "<step>"}, ...]}
 *
 * entry and reentry are required (no silent default for re-entry); exit,
 * goal and holdout (a percentage that enters but receives nothing) are
 * optional.  The first step is where a profile enters.  Step kinds:
 *
 *	send	 channel, template, payload (jsonb merged over the entry event's
 *			 properties), next
 *	wait	 "for": an interval > 0, or "until": "09:00" (the next time the
 *			 profile's local clock shows it: its timezone trait, else
 *			 cdp.timezone), next
 *	wait_for event, condition, match (["cart_id"]: the arriving event's
 *			 property equals the entry event's), timeout, on_event,
 *			 on_timeout
 *	branch	 condition or segment, then, else
 *	split	 arms: [{"name": "A", "weight": 50, "next": "<step>"}, ...],
 *			 weights summing to 100, sticky per profile
 *	update	 trait, value (an identify trait, source 'journey'), next
 *	exit
 *
 * A missing next (or then, else, on_event, on_timeout) ends the journey
 * there.  Conditions are SQL over the event's columns (event, properties,
 * occurred_at: the entry event's for entry and branch conditions, the
 * arriving one's for wait_for) and the profile's cdp.customers columns;
 * they run with the rights of the journey's owner.
 *
 * Everything that is wrong is refused with a message naming the step: so
 * each step is checked in a subtransaction whose error, if any, is raised
 * again with the step's name in front.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "journey.h"
#include "predicate.h"
#include "status.h"
#include "util.h"

#define MAX_TARGETS 64

typedef struct StepDef
{
	char	   *name;
	char	   *kind;
	JsonbContainer *obj;
	bool		waits;			/* wait or wait_for: time passes there */
	int			ntargets;
	char	   *targets[MAX_TARGETS];
} StepDef;

static const char *const kinds[] = {"send", "wait", "wait_for", "branch", "split", "update",
"exit"};

/* keys each kind may have, besides name and kind */
static const char *const kind_keys[][10] = {
	{"channel", "template", "payload", "next", NULL},
	{"for", "until", "next", NULL},
	{"event", "condition", "match", "timeout", "on_event", "on_timeout", NULL},
	{"condition", "segment", "then", "else", NULL},
	{"arms", NULL},
	{"trait", "value", "next", NULL},
	{NULL},
};

static JsonbValue *
jfield(JsonbContainer *c, const char *key)
{
	JsonbValue *v = palloc(sizeof(JsonbValue));

	return getKeyJsonValueFromContainer(c, key, strlen(key), v);
}

static bool
jis(JsonbValue *v, bool array)
{
	return v && v->type == jbvBinary &&
		(array ? JsonContainerIsArray(v->val.binary.data) :
		 JsonContainerIsObject(v->val.binary.data));
}

/* a string field, NULL when absent; anything but a string is refused */
static char *
jstring(JsonbContainer *c, const char *key, const char *where)
{
	JsonbValue *v = jfield(c, key);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: \"%s\" must be a string", where, key)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static char *
jrequired(JsonbContainer *c, const char *key, const char *where)
{
	char	   *s = jstring(c, key, where);

	if (s == NULL || s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: \"%s\" is required", where, key)));
	return s;
}

/* refuses keys not in allowed (a misspelt key would silently do nothing) */
static void
check_keys(JsonbContainer *c, const char *const *allowed, const char *where)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		bool		ok = false;
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (int i = 0; allowed[i]; i++)
			ok = ok || strcmp(allowed[i], key) == 0;
		if (!ok)
		{
			StringInfoData list;

			initStringInfo(&list);
			for (int i = 0; allowed[i]; i++)
				appendStringInfo(&list, "%s%s", i ? ", " : "", allowed[i]);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown key \"%s\"", where, key),
					 errhint("Allowed here: %s.", list.data)));
		}
	}
}

static void
check_keys_of_kind(JsonbContainer *c, int kind, const char *where)
{
	const char *allowed[12] = {"name", "kind"};
	int			n = 2;

	for (int i = 0; kind_keys[kind][i]; i++)
		allowed[n++] = kind_keys[kind][i];
	allowed[n] = NULL;
	check_keys(c, allowed, where);
}

/*
 * An interval that must be > 0, and at most a century: a state's due time
 * is now plus it, and beyond the calendar the step could never be
 * scheduled (the ingesting transaction entering it would fail).
 */
static void
check_interval(const char *s, const char *what, const char *where)
{
	Interval	zero = {0};
	Interval	century = {0};
	Datum		iv = DirectFunctionCall3(interval_in, CStringGetDatum(s),
										 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));

	century.month = 100 * MONTHS_PER_YEAR;
	if (!DatumGetBool(DirectFunctionCall2(interval_gt, iv, IntervalPGetDatum(&zero))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s must be longer than zero, not \"%s\"", where, what, s)));
	if (DatumGetBool(DirectFunctionCall2(interval_gt, iv, IntervalPGetDatum(&century))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s must be at most 100 years, not \"%s\"", where, what, s)));
}

static int
jinteger(JsonbValue *v, const char *what, const char *where)
{
	Numeric		n;

	if (v == NULL || v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s must be a number", where, what)));
	n = v->val.numeric;
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(n),
										  DirectFunctionCall1(numeric_floor, NumericGetDatum(n)))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s must be a whole number", where, what)));
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(n)));
}

/*
 * A condition: one boolean expression over the row it will read (the
 * event's columns and the profile's cdp.customers columns), with no
 * volatile function and no aggregate, checked by the shared validator.
 */
static void
validate_condition(const char *cond, const char *where)
{
	CdpPredicate out;

	cdp_check_predicate(cond, psprintf("%s: the condition", where),
						"FROM (SELECT NULL::bigint AS i, NULL::text AS event, "
						"NULL::jsonb AS properties, NULL::timestamptz AS occurred_at, c.* "
						"FROM cdp.customers c) e", &out);
}

static bool
table_exists(const char *rel)
{
	bool		isnull;
	Datum		args[1] = {CStringGetTextDatum(rel)};
	Oid			types[1] = {TEXTOID};

	if (SPI_execute_with_args("SELECT to_regclass($1) IS NOT NULL", 1, types, args, NULL,
							  true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not look up %s", rel);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static bool
row_exists(const char *sql, const char *key)
{
	Datum		args[1] = {CStringGetTextDatum(key)};
	Oid			types[1] = {TEXTOID};

	if (SPI_execute_with_args(sql, 1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pg_cdp: could not run \"%s\"", sql);
	return SPI_processed > 0;
}

static void
add_target(StepDef *d, char *t)
{
	if (t == NULL)
		return;
	if (d->ntargets >= MAX_TARGETS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a step can lead to at most %d steps", MAX_TARGETS)));
	d->targets[d->ntargets++] = t;
}

/* Checks one step's fields; errors here get the step's name in front. */
static void
validate_step(StepDef *d)
{
	const char *w = psprintf("journey step \"%s\"", d->name);
	JsonbContainer *c = d->obj;
	int			kind = -1;

	for (int i = 0; i < lengthof(kinds); i++)
		if (strcmp(kinds[i], d->kind) == 0)
			kind = i;
	if (kind < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown step kind \"%s\"", w, d->kind),
				 errhint("A step is one of send, wait, wait_for, branch, split, update, exit.")));
	check_keys_of_kind(c, kind, w);
	if (strcmp(d->kind, "send") == 0)
	{
		char	   *channel = jrequired(c, "channel", w);
		char	   *template = jrequired(c, "template", w);
		JsonbValue *payload = jfield(c, "payload");

		if (payload && payload->type != jbvNull && !jis(payload, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: \"payload\" must be an object", w)));
		if (table_exists("cdp.channels") &&
			!row_exists("SELECT 1 FROM cdp.channels WHERE name = $1", channel))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("%s: channel \"%s\" does not exist", w, channel),
					 errhint("Create it in cdp.channels first.")));
		if (table_exists("cdp.templates") &&
			!row_exists("SELECT 1 FROM cdp.templates WHERE name = $1", template))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("%s: template \"%s\" does not exist", w, template),
					 errhint("Create it in cdp.templates first.")));
		add_target(d, jstring(c, "next", w));
	}
	else if (strcmp(d->kind, "wait") == 0)
	{
		char	   *f = jstring(c, "for", w);
		char	   *until = jstring(c, "until", w);

		if ((f == NULL) == (until == NULL))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: a wait needs either \"for\" (an interval) or \"until\" (a time of day)", w)));
		if (f)
			check_interval(f, "the wait", w);
		else
			(void) DirectFunctionCall3(time_in, CStringGetDatum(until),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		d->waits = true;
		add_target(d, jstring(c, "next", w));
	}
	else if (strcmp(d->kind, "wait_for") == 0)
	{
		char	   *cond = jstring(c, "condition", w);
		JsonbValue *match = jfield(c, "match");

		(void) jrequired(c, "event", w);
		check_interval(jrequired(c, "timeout", w), "the timeout", w);
		if (cond)
			validate_condition(cond, w);
		if (match && match->type != jbvNull)
		{
			JsonbContainer *m = match->val.binary.data;

			if (!jis(match, true) || JsonContainerSize(m) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: \"match\" must be an array of property names", w)));
			for (int i = 0; i < JsonContainerSize(m); i++)
			{
				JsonbValue *e = getIthJsonbValueFromContainer(m, i);

				if (e->type != jbvString || e->val.string.len == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s: \"match\" must be an array of property names", w)));
			}
		}
		d->waits = true;
		add_target(d, jstring(c, "on_event", w));
		add_target(d, jstring(c, "on_timeout", w));
	}
	else if (strcmp(d->kind, "branch") == 0)
	{
		char	   *cond = jstring(c, "condition", w);
		char	   *segment = jstring(c, "segment", w);

		if ((cond == NULL) == (segment == NULL))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: a branch needs either a \"condition\" or a \"segment\"", w)));
		if (cond)
			validate_condition(cond, w);
		add_target(d, jstring(c, "then", w));
		add_target(d, jstring(c, "else", w));
	}
	else if (strcmp(d->kind, "split") == 0)
	{
		JsonbValue *arms = jfield(c, "arms");
		JsonbContainer *a;
		int			sum = 0;
		char	  **names;

		if (!jis(arms, true) || JsonContainerSize(arms->val.binary.data) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: a split needs \"arms\", an array of {\"name\", \"weight\", \"next\"}", w)));
		a = arms->val.binary.data;
		names = palloc(sizeof(char *) * JsonContainerSize(a));
		for (int i = 0; i < JsonContainerSize(a); i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(a, i);
			static const char *const arm_keys[] = {"name", "weight", "next", NULL};
			int			weight;

			if (!jis(e, false))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: arm %d is not an object", w, i + 1)));
			check_keys(e->val.binary.data, arm_keys, w);
			names[i] = jrequired(e->val.binary.data, "name", w);
			for (int j = 0; j < i; j++)
				if (strcmp(names[j], names[i]) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s: two arms are named \"%s\"", w, names[i])));
			weight = jinteger(jfield(e->val.binary.data, "weight"), "an arm's weight", w);
			if (weight < 1 || weight > 100)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: arm \"%s\" has weight %d, not between 1 and 100", w,
								names[i], weight)));
			sum += weight;
			add_target(d, jstring(e->val.binary.data, "next", w));
		}
		if (sum != 100)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: the arms' weights sum to %d, not 100", w, sum)));
	}
	else if (strcmp(d->kind, "update") == 0)
	{
		JsonbValue *value = jfield(c, "value");

		(void) jrequired(c, "trait", w);
		if (value == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: an update needs a \"value\" (any JSON)", w)));
		add_target(d, jstring(c, "next", w));
	}
}

/*
 * Runs fn(arg) in a subtransaction: an error from anything it calls (an
 * interval or a time that does not parse, a condition) is raised again
 * with prefix (the step's name) in front.
 */
static void
run_prefixed(const char *prefix, void (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (ed->message && strncmp(ed->message, prefix, strlen(prefix)) == 0)
			ReThrowError(ed);
		ereport(ERROR,
				(errcode(ed->sqlerrcode),
				 errmsg("%s: %s", prefix, ed->message ? ed->message : "invalid"),
				 ed->detail ? errdetail("%s", ed->detail) : 0,
				 ed->hint ? errhint("%s", ed->hint) : 0));
	}
	PG_END_TRY();
}

static void
validate_step_fn(void *arg)
{
	validate_step((StepDef *) arg);
}

/* Depth-first search over the steps where no time passes. */
static int
find_cycle(StepDef *defs, int n, int at, int *color)
{
	check_stack_depth();
	color[at] = 1;
	for (int t = 0; t < defs[at].ntargets; t++)
	{
		int			to = -1;

		for (int j = 0; j < n; j++)
			if (strcmp(defs[j].name, defs[at].targets[t]) == 0)
				to = j;
		if (to < 0 || defs[to].waits)
			continue;
		if (color[to] == 1)
			return to;
		if (color[to] == 0)
		{
			int			found = find_cycle(defs, n, to, color);

			if (found >= 0)
				return found;
		}
	}
	color[at] = 2;
	return -1;
}

static void
validate_entry_fn(void *arg)
{
	JsonbContainer *def = arg;
	static const char *const entry_keys[] = {"event", "condition", "segment", NULL};
	JsonbValue *entry = jfield(def, "entry");
	JsonbContainer *e;
	char	   *event,
			   *segment,
			   *cond;

	if (!jis(entry, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a journey needs an \"entry\": {\"event\": name} or {\"segment\": name}")));
	e = entry->val.binary.data;
	check_keys(e, entry_keys, "the journey's entry");
	event = jstring(e, "event", "the journey's entry");
	segment = jstring(e, "segment", "the journey's entry");
	cond = jstring(e, "condition", "the journey's entry");
	if ((event == NULL) == (segment == NULL) || (event && event[0] == '\0') ||
		(segment && segment[0] == '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a journey's entry is either an \"event\" or a \"segment\"")));
	if (cond && segment)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a journey's entry by segment takes no condition"),
				 errhint("Put the condition in the segment's definition.")));
	if (cond)
		validate_condition(cond, "the journey's entry");
}

static void
validate_entry(JsonbContainer *def)
{
	run_prefixed("the journey's entry", validate_entry_fn, def);
}

static void
validate_rules(JsonbContainer *def)
{
	static const char *const goal_keys[] = {"event", "within", NULL};
	static const char *const cooldown_keys[] = {"cooldown", NULL};
	JsonbValue *reentry = jfield(def, "reentry");
	JsonbValue *exits = jfield(def, "exit");
	JsonbValue *goal = jfield(def, "goal");
	JsonbValue *holdout = jfield(def, "holdout");

	if (reentry == NULL || reentry->type == jbvNull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a journey must say whether a profile may enter it again"),
				 errhint("Add \"reentry\": \"never\", \"always\" or {\"cooldown\": \"30 days\"}.")));
	if (jis(reentry, false))
	{
		check_keys(reentry->val.binary.data, cooldown_keys, "the journey's reentry");
		check_interval(jrequired(reentry->val.binary.data, "cooldown", "the journey's reentry"),
					   "the cool-down", "the journey's reentry");
	}
	else
	{
		char	   *r = reentry->type == jbvString ?
			pnstrdup(reentry->val.string.val, reentry->val.string.len) : NULL;

		if (r == NULL || (strcmp(r, "never") != 0 && strcmp(r, "always") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a journey's reentry is \"never\", \"always\" or {\"cooldown\": interval}")));
	}
	if (exits && exits->type != jbvNull)
	{
		JsonbContainer *x;

		if (!jis(exits, true))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a journey's \"exit\" is an array of {\"event\": name} or {\"segment_exit\": name}")));
		x = exits->val.binary.data;
		for (int i = 0; i < JsonContainerSize(x); i++)
		{
			static const char *const exit_keys[] = {"event", "segment_exit", NULL};
			JsonbValue *e = getIthJsonbValueFromContainer(x, i);
			char	   *ev,
					   *seg;

			if (!jis(e, false))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("a journey's exit criterion %d is not an object", i + 1)));
			check_keys(e->val.binary.data, exit_keys, "the journey's exit");
			ev = jstring(e->val.binary.data, "event", "the journey's exit");
			seg = jstring(e->val.binary.data, "segment_exit", "the journey's exit");
			if ((ev == NULL) == (seg == NULL))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("a journey's exit criterion is either an \"event\" or a \"segment_exit\"")));
		}
	}
	if (goal && goal->type != jbvNull)
	{
		if (!jis(goal, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a journey's \"goal\" is {\"event\": name, \"within\": interval}")));
		check_keys(goal->val.binary.data, goal_keys, "the journey's goal");
		(void) jrequired(goal->val.binary.data, "event", "the journey's goal");
		check_interval(jrequired(goal->val.binary.data, "within", "the journey's goal"),
					   "the goal's window", "the journey's goal");
	}
	if (holdout && holdout->type != jbvNull)
	{
		int			h = jinteger(holdout, "the holdout", "the journey");

		if (h < 0 || h > 99)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a journey's holdout is a percentage from 0 to 99, not %d", h)));
	}
}

/* Every step, then the graph: names, targets, cycles. */
static void
validate_steps(JsonbContainer *def)
{
	JsonbValue *steps = jfield(def, "steps");
	JsonbContainer *s;
	StepDef    *defs;
	int			n;
	int		   *color;

	if (!jis(steps, true) || JsonContainerSize(steps->val.binary.data) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a journey needs \"steps\", a non-empty array")));
	s = steps->val.binary.data;
	n = JsonContainerSize(s);
	defs = palloc0(sizeof(StepDef) * n);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(s, i);
		char	   *where = psprintf("journey step %d", i + 1);

		if (!jis(e, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is not an object", where)));
		defs[i].obj = e->val.binary.data;
		defs[i].name = jrequired(defs[i].obj, "name", where);
		if (strlen(defs[i].name) > 200)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: a step's name has at most 200 bytes", where)));
		for (const char *p = defs[i].name; *p; p++)
			if ((unsigned char) *p < 0x20 || *p == 0x7f)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: a step's name cannot contain control characters", where)));
		for (int j = 0; j < i; j++)
			if (strcmp(defs[j].name, defs[i].name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_OBJECT),
						 errmsg("journey step \"%s\" is defined twice", defs[i].name),
						 errhint("Step names are unique within a journey.")));
		defs[i].kind = jrequired(defs[i].obj, "kind",
								 psprintf("journey step \"%s\"", defs[i].name));
		run_prefixed(psprintf("journey step \"%s\"", defs[i].name), validate_step_fn,
					 &defs[i]);
	}
	for (int i = 0; i < n; i++)
		for (int t = 0; t < defs[i].ntargets; t++)
		{
			bool		found = false;

			for (int j = 0; j < n && !found; j++)
				found = strcmp(defs[j].name, defs[i].targets[t]) == 0;
			if (!found)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("journey step \"%s\" leads to step \"%s\", which does not exist",
								defs[i].name, defs[i].targets[t])));
		}
	color = palloc0(sizeof(int) * n);
	for (int i = 0; i < n; i++)
	{
		int			c;

		if (color[i] != 0 || defs[i].waits)
			continue;
		c = find_cycle(defs, n, i, color);
		if (c >= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("journey step \"%s\" is on a cycle without a wait", defs[c].name),
					 errhint("Put a wait or a wait_for on the loop, or it would run forever at once.")));
	}
}

static void
validate_name(const char *name)
{
	if (name[0] == '\0' || strlen(name) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("a journey name must have 1 to 200 bytes")));
	for (const char *p = name; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("a journey name cannot contain control characters")));
}

static void
exec_args(const char *sql, int n, Oid *types, Datum *args, const char *nulls, int expected)
{
	int			rc = SPI_execute_with_args(sql, n, types, args, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "pg_cdp: journey statement returned %s", SPI_result_code_string(rc));
}

static void
store_version(const char *name, int version, Jsonb *def, const char *in_flight)
{
	Oid			types[4] = {TEXTOID, INT4OID, TEXTOID, JSONBOID};
	Datum		args[4] = {CStringGetTextDatum(name), Int32GetDatum(version),
	CStringGetTextDatum(in_flight), JsonbPGetDatum(def)};

	exec_args("INSERT INTO cdp.journey_versions (journey, version, definition, in_flight, "
			  "entry_event, entry_condition, entry_segment, reentry, cooldown, exit_events, "
			  "exit_segments, goal_event, goal_within, holdout, first_step) "
			  "SELECT $1, $2, d, $3, d->'entry'->>'event', d->'entry'->>'condition', "
			  "d->'entry'->>'segment', "
			  "CASE WHEN jsonb_typeof(d->'reentry') = 'object' THEN 'cooldown' "
			  "ELSE d->>'reentry' END, (d->'reentry'->>'cooldown')::interval, "
			  "ARRAY(SELECT x->>'event' FROM jsonb_array_elements(d->'exit') x "
			  "WHERE x ? 'event'), "
			  "ARRAY(SELECT x->>'segment_exit' FROM jsonb_array_elements(d->'exit') x "
			  "WHERE x ? 'segment_exit'), "
			  "d->'goal'->>'event', (d->'goal'->>'within')::interval, "
			  "coalesce((d->>'holdout')::int, 0), d->'steps'->0->>'name' "
			  "FROM (SELECT $4::jsonb AS d) s", 4, types, args, NULL, SPI_OK_INSERT);
	exec_args("INSERT INTO cdp.journey_steps (journey, version, step, ordinal, kind, next, "
			  "channel, template, payload, wait_for, wait_until, event, condition, match, "
			  "timeout, on_event, on_timeout, segment, then_step, else_step, arms, trait, value) "
			  "SELECT $1, $2, s->>'name', i, s->>'kind', s->>'next', s->>'channel', "
			  "s->>'template', nullif(s->'payload', 'null'), (s->>'for')::interval, "
			  "(s->>'until')::time, s->>'event', s->>'condition', "
			  "CASE WHEN jsonb_typeof(s->'match') = 'array' "
			  "THEN ARRAY(SELECT jsonb_array_elements_text(s->'match')) END, "
			  "(s->>'timeout')::interval, s->>'on_event', s->>'on_timeout', s->>'segment', "
			  "s->>'then', s->>'else', s->'arms', s->>'trait', s->'value' "
			  "FROM jsonb_array_elements($4::jsonb->'steps') WITH ORDINALITY AS a(s, i) "
			  "WHERE $3 IS NOT NULL", 4, types, args, NULL, SPI_OK_INSERT);
}

/* cdp.create_journey(name, definition, in_flight) */
PG_FUNCTION_INFO_V1(cdp_create_journey);
Datum
cdp_create_journey(PG_FUNCTION_ARGS)
{
	static const char *const top_keys[] = {"entry", "reentry", "exit", "goal", "holdout",
	"steps", NULL};
	char	   *name;
	Jsonb	   *def;
	char	   *in_flight;
	int			version = 1;
	Oid			types[3] = {TEXTOID, INT4OID, OIDOID};
	Datum		args[3];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a journey needs a name and a definition")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	def = PG_GETARG_JSONB_P(1);
	in_flight = PG_ARGISNULL(2) ? "finish" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	validate_name(name);
	if (strcmp(in_flight, "finish") != 0 && strcmp(in_flight, "migrate") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("in_flight is \"finish\" or \"migrate\", not \"%s\"", in_flight),
				 errhint("finish: profiles in flight finish on their version; migrate: they move to the step of the same name in the new one.")));
	if (!JB_ROOT_IS_OBJECT(def) || JB_ROOT_IS_SCALAR(def))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a journey's definition must be a JSON object")));

	SPI_connect();
	check_keys(&def->root, top_keys, "the journey");
	validate_entry(&def->root);
	validate_rules(&def->root);
	validate_steps(&def->root);

	args[0] = CStringGetTextDatum(name);
	exec_args("SELECT version FROM cdp.journeys WHERE name = $1 FOR UPDATE", 1, types, args,
			  NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		bool		isnull;

		version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											  1, &isnull)) + 1;
	}
	args[1] = Int32GetDatum(version);
	args[2] = ObjectIdGetDatum(GetOuterUserId());
	if (version == 1)
		exec_args("INSERT INTO cdp.journeys (name, version, owner) VALUES ($1, $2, $3::regrole)",
				  3, types, args, NULL, SPI_OK_INSERT);
	else
		exec_args("UPDATE cdp.journeys SET version = $2, owner = $3::regrole, "
				  "updated_at = cdp.now(), last_error = NULL, last_error_at = NULL "
				  "WHERE name = $1", 3, types, args, NULL, SPI_OK_UPDATE);
	store_version(name, version, def, in_flight);
	if (version > 1 && strcmp(in_flight, "migrate") == 0)
		exec_args("WITH m AS (UPDATE cdp.journey_states s SET version = $2 "
				  "WHERE s.journey = $1 AND s.status = 'active' AND s.version < $2 "
				  "AND EXISTS (SELECT 1 FROM cdp.journey_steps t WHERE t.journey = $1 "
				  "AND t.version = $2 AND t.step = s.step) "
				  "RETURNING s.state_id, s.profile_id, s.step) "
				  "INSERT INTO cdp.journey_log (state_id, profile_id, journey, version, "
				  "from_step, to_step, why, at) "
				  "SELECT state_id, profile_id, $1, $2, step, step, "
				  "'migrated to version ' || $2, cdp.now() FROM m",
				  2, types, args, NULL, SPI_OK_INSERT);
	SPI_finish();
	cdp_journeys_changed();
	cdp_wake_worker_at_commit();
	PG_RETURN_INT32(version);
}

/* Moves a journey from one status to another, or says why it cannot. */
static void
set_status(FunctionCallInfo fcinfo, const char *from, const char *to, const char *hint)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	char	   *name;
	char	   *status;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a journey name is required")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	args[0] = CStringGetTextDatum(name);
	args[1] = CStringGetTextDatum(to);
	SPI_connect();
	exec_args("SELECT status FROM cdp.journeys WHERE name = $1 FOR UPDATE", 1, types, args,
			  NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("journey \"%s\" does not exist", name)));
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(status, from) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey \"%s\" is %s, not %s", name, status, from),
				 errhint("%s", hint)));
	exec_args("UPDATE cdp.journeys SET status = $2, updated_at = cdp.now() WHERE name = $1",
			  2, types, args, NULL, SPI_OK_UPDATE);
	SPI_finish();
	cdp_journeys_changed();
	cdp_wake_worker_at_commit();
}

PG_FUNCTION_INFO_V1(cdp_start_journey);
Datum
cdp_start_journey(PG_FUNCTION_ARGS)
{
	set_status(fcinfo, "draft", "active",
			   "A paused journey is resumed with cdp.resume_journey.");
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(cdp_pause_journey);
Datum
cdp_pause_journey(PG_FUNCTION_ARGS)
{
	set_status(fcinfo, "active", "paused", "Only an active journey can be paused.");
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(cdp_resume_journey);
Datum
cdp_resume_journey(PG_FUNCTION_ARGS)
{
	set_status(fcinfo, "paused", "active", "Only a paused journey can be resumed.");
	PG_RETURN_VOID();
}
