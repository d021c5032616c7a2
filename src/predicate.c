/*-------------------------------------------------------------------------
 *
 * predicate.c
 *	  The validator of user SQL conditions: a trait's "where" over the
 *	  event row, a segment's predicate over cdp.customers.
 *
 * A condition is the owner's SQL, pasted into pg_cdp's own statements
 * between parentheses.  So it must be exactly one boolean expression, with
 * nothing around it: its tokens never close a parenthesis they did not
 * open and hold no semicolon (so "1=1) OR (true" or "1=1; DROP ..." cannot
 * reach outside), and it parses as the single target of a SELECT with no
 * clause.  Then it is analyzed against the relation it reads, so an
 * unknown column is an error naming it and listing the columns there are.
 * It may not aggregate, use window or set-returning functions, call a
 * volatile function (a function that writes is volatile) or lock rows:
 * the same rows must give the same answer whenever pg_cdp evaluates them.
 *
 * The checker also says what the condition reads: the relation's columns
 * (cdp.drop_trait refuses to drop a trait a segment uses), the segments
 * named by cdp.in_segment, and whether it reads the clock itself (such a
 * segment changes with time and needs a refresh schedule).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/keywords.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parse_func.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "parser/scanner.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "predicate.h"

typedef struct Walk
{
	int			depth;			/* query level below the condition's own */
	Query	   *top;
	Oid			in_segment;
	Oid			cdp_now;
	const char *what;
	const char *expr;
	CdpPredicate *out;
} Walk;

/*
 * Whether expr's tokens form one balanced run: no parenthesis closed that
 * it did not open, none left open, no semicolon.  Comments and strings are
 * the scanner's, so a quoted ")" is no parenthesis.
 */
static bool
balanced(const char *expr)
{
	core_yy_extra_type extra;
	core_yyscan_t scanner;
	core_YYSTYPE lval;
	YYLTYPE		lloc;
	int			depth = 0;
	int			ntokens = 0;
	int			tok;

	scanner = scanner_init(expr, &extra, &ScanKeywords, ScanKeywordTokens);
	while ((tok = core_yylex(&lval, &lloc, scanner)) != 0)
	{
		ntokens++;
		if (tok == '(')
			depth++;
		else if (tok == ')' && --depth < 0)
			break;
		else if (tok == ';')
		{
			depth = -1;
			break;
		}
	}
	scanner_finish(scanner);
	return depth == 0 && ntokens > 0;
}

static void
not_one_expression(const char *what, const char *expr)
{
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("%s must be one boolean expression", what),
			 errdetail("Got: %s", expr),
			 errhint("Write a condition over the columns it reads, with nothing around it.")));
}

/* The columns of from's first relation, for a hint. */
static char *
columns_of(const char *from)
{
	char	   *sql = psprintf("SELECT * %s", from);
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	Query	   *q = parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, NULL, 0, NULL);
	RangeTblEntry *rte = rt_fetch(1, q->rtable);
	StringInfoData b;
	ListCell   *lc;

	initStringInfo(&b);
	foreach(lc, rte->eref->colnames)
		appendStringInfo(&b, "%s%s", b.len ? ", " : "", quote_identifier(strVal(lfirst(lc))));
	return b.data;
}

/*
 * Analyzes sql in a subtransaction, so that the parser's "column does not
 * exist" can be raised again as ours, with the columns there are.
 */
static Query *
analyze(const char *sql, const char *what, const char *expr, const char *from)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Query	   *volatile q = NULL;
	ErrorData  *volatile err = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);

		q = parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, NULL, 0, NULL);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	if (err == NULL)
		return q;
	if (err->sqlerrcode == ERRCODE_UNDEFINED_COLUMN ||
		err->sqlerrcode == ERRCODE_UNDEFINED_TABLE)
		ereport(ERROR,
				(errcode(err->sqlerrcode),
				 errmsg("%s", err->message),
				 errdetail("In %s: %s", what, expr),
				 errhint("The columns it can use are: %s.", columns_of(from))));
	/* anything else as the parser said it, without its position */
	err->cursorpos = 0;
	err->internalpos = 0;
	err->internalquery = NULL;
	ThrowErrorData(err);
	return NULL;
}

static void
add_unique(List **list, char *name)
{
	ListCell   *lc;

	foreach(lc, *list)
		if (strcmp((char *) lfirst(lc), name) == 0)
			return;
	*list = lappend(*list, name);
}

static bool
walk(Node *node, Walk *w)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *v = (Var *) node;

		if (v->varlevelsup == w->depth && v->varno == 1 && v->varattno > 0)
		{
			RangeTblEntry *rte = rt_fetch(1, w->top->rtable);

			add_unique(&w->out->columns,
					   pstrdup(strVal(list_nth(rte->eref->colnames, v->varattno - 1))));
		}
		else if (v->varlevelsup == w->depth && v->varno == 1 && v->varattno == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("%s cannot use the whole row", w->what),
					 errdetail("Got: %s", w->expr),
					 errhint("Name the columns it reads.")));
		return false;
	}
	if (IsA(node, SQLValueFunction))
	{
		SQLValueFunction *f = (SQLValueFunction *) node;

		if (f->op <= SVFOP_LOCALTIMESTAMP_N)
			w->out->reads_time = true;
		return false;
	}
	if (IsA(node, FuncExpr))
	{
		FuncExpr   *f = (FuncExpr *) node;

		if (f->funcid == F_NOW || f->funcid == F_TRANSACTION_TIMESTAMP ||
			f->funcid == F_STATEMENT_TIMESTAMP || f->funcid == F_AGE_TIMESTAMP ||
			f->funcid == F_AGE_TIMESTAMPTZ ||
			(OidIsValid(w->cdp_now) && f->funcid == w->cdp_now))
			w->out->reads_time = true;
		if (OidIsValid(w->in_segment) && f->funcid == w->in_segment)
		{
			Node	   *arg = lsecond(f->args);

			if (!IsA(arg, Const) || ((Const *) arg)->constisnull)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("cdp.in_segment in %s must name its segment with a constant", w->what),
						 errdetail("Got: %s", w->expr),
						 errhint("Write cdp.in_segment(profile_id, 'segment name').")));
			add_unique(&w->out->segments, TextDatumGetCString(((Const *) arg)->constvalue));
		}
		/* arguments are walked below */
	}
	if (IsA(node, Query))
	{
		Query	   *q = (Query *) node;
		bool		r;

		if (q->rowMarks != NIL || q->hasForUpdate)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("%s cannot lock rows", w->what),
					 errdetail("Got: %s", w->expr),
					 errhint("Remove FOR UPDATE / FOR SHARE from its subqueries.")));
		if (q->hasModifyingCTE || q->commandType != CMD_SELECT)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("%s cannot write", w->what),
					 errdetail("Got: %s", w->expr)));
		w->depth++;
		r = query_tree_walker(q, walk, (void *) w, 0);
		w->depth--;
		return r;
	}
	return expression_tree_walker(node, walk, (void *) w);
}

/*
 * cdp_check_predicate validates expr as a condition over from (see the
 * header comment) and fills out with what it reads; raises if invalid.
 */
void
cdp_check_predicate(const char *expr, const char *what, const char *from,
					CdpPredicate *out)
{
	List	   *raw;
	RawStmt    *rs;
	SelectStmt *sel;
	Query	   *q;
	TargetEntry *te;
	Walk		w = {0};
	Oid			args[2] = {INT8OID, TEXTOID};
	char	   *sql;

	memset(out, 0, sizeof(*out));
	if (expr == NULL || expr[0] == '\0' || !balanced(expr))
		not_one_expression(what, expr ? expr : "");
	raw = raw_parser(psprintf("SELECT (\n%s\n)", expr), RAW_PARSE_DEFAULT);
	rs = list_length(raw) == 1 ? linitial_node(RawStmt, raw) : NULL;
	sel = rs && IsA(rs->stmt, SelectStmt) ? (SelectStmt *) rs->stmt : NULL;
	if (sel == NULL || list_length(sel->targetList) != 1 || sel->fromClause ||
		sel->whereClause || sel->groupClause || sel->havingClause || sel->withClause ||
		sel->sortClause || sel->limitCount || sel->limitOffset || sel->lockingClause ||
		sel->op != SETOP_NONE || sel->distinctClause || sel->windowClause ||
		sel->intoClause || sel->valuesLists)
		not_one_expression(what, expr);

	sql = psprintf("SELECT (\n%s\n) %s", expr, from);
	q = analyze(sql, what, expr, from);
	if (q->hasAggs || q->hasWindowFuncs || q->hasTargetSRFs)
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("%s cannot use aggregates, window functions or set-returning functions", what),
				 errdetail("Got: %s", expr)));
	te = linitial_node(TargetEntry, q->targetList);
	if (exprType((Node *) te->expr) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s must be a boolean expression, not %s", what,
						format_type_be(exprType((Node *) te->expr))),
				 errdetail("Got: %s", expr)));
	if (contain_volatile_functions((Node *) q->targetList))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot call volatile functions", what),
				 errdetail("Got: %s", expr),
				 errhint("The condition must give the same answer every time it reads the same row; use cdp.now() for the time.")));

	w.top = q;
	w.what = what;
	w.expr = expr;
	w.out = out;
	w.in_segment = LookupFuncName(list_make2(makeString("cdp"), makeString("in_segment")),
								  2, args, true);
	w.cdp_now = LookupFuncName(list_make2(makeString("cdp"), makeString("now")), 0, args, true);
	(void) walk((Node *) te->expr, &w);
}
