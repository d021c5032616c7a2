/*-------------------------------------------------------------------------
 *
 * clock.c
 *	  The settable clock: cdp.now() and cdp.fake_now, and the timestamp
 *	  parser of message fields.
 *
 * Every default and time rule of pg_cdp reads cdp_now(), so tests and
 * backfills move time with SET cdp.fake_now.  Moving the clock backdates
 * what ingest records, so only superusers and the roles granted SET on it
 * (the install script grants cdp_admin) may.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "clock.h"

static char *cdp_fake_now = NULL;

static bool check_fake_now(char **newval, void **extra, GucSource source);

void
cdp_clock_init(void)
{
	DefineCustomStringVariable("cdp.fake_now",
							   "Overrides cdp.now() for tests and backfills.",
							   "Empty means the transaction start time.",
							   &cdp_fake_now, "", PGC_SUSET, 0,
							   check_fake_now, NULL, NULL);
}

static bool
check_fake_now(char **newval, void **extra, GucSource source)
{
	/* Validate eagerly so a typo fails at SET, not at the next ingest. */
	TimestampTz ts;

	if (*newval && (*newval)[0] != '\0' && !cdp_parse_timestamptz(*newval, &ts))
	{
		GUC_check_errdetail("cdp.fake_now must be a timestamp with time zone, or empty.");
		return false;
	}
	return true;
}

/*
 * cdp_now returns the transaction start time, or cdp.fake_now when set.
 */
TimestampTz
cdp_now(void)
{
	if (cdp_fake_now && cdp_fake_now[0] != '\0')
		return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													   CStringGetDatum(cdp_fake_now),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
	return GetCurrentTransactionStartTimestamp();
}

PG_FUNCTION_INFO_V1(cdp_now_sql);

Datum
cdp_now_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(cdp_now());
}

/*
 * cdp_parse_timestamptz parses an ISO 8601 timestamp with time zone
 * without throwing: false when s is not one (or is out of range).
 */
/*
 * Is s an ISO 8601 timestamp: YYYY-MM-DD, optionally followed by [T ]HH:MM,
 * optional :SS and fraction, and an optional zone (Z, +HH, +HH:MM, +HHMM)?
 * PostgreSQL's own parser also takes words ("yesterday", "now"), bare
 * numbers and zone names, and throws for unknown zone names: message
 * timestamps must be ISO 8601 before they get that far.
 */
static bool
iso8601_shape(const char *s)
{
#define DIGITS(n) do { for (int i_ = 0; i_ < (n); i_++, s++) if (*s < '0' || *s > '9') return false; } while (0)
	DIGITS(4);
	if (*s++ != '-')
		return false;
	DIGITS(2);
	if (*s++ != '-')
		return false;
	DIGITS(2);
	if (*s == '\0')
		return true;
	if (*s != 'T' && *s != 't' && *s != ' ')
		return false;
	s++;
	DIGITS(2);
	if (*s++ != ':')
		return false;
	DIGITS(2);
	if (*s == ':')
	{
		s++;
		DIGITS(2);
		if (*s == '.' || *s == ',')
		{
			int			n = 0;

			s++;
			while (*s >= '0' && *s <= '9')
				s++, n++;
			if (n == 0 || n > 9)
				return false;
		}
	}
	if (*s == ' ')
		s++;
	if (*s == '\0')
		return true;
	if ((*s == 'Z' || *s == 'z') && s[1] == '\0')
		return true;
	if (*s != '+' && *s != '-')
		return false;
	s++;
	DIGITS(2);
	if (*s == ':')
		s++;
	if (*s == '\0')
		return true;
	DIGITS(2);
	return *s == '\0';
#undef DIGITS
}

/*
 * The shape nearly every sender uses, 2026-11-23T10:00:00.123Z or with an
 * offset, read without the general date parser (a twentieth of a bulk
 * drain's parsing).  Anything else, or any field out of its plain range,
 * is left to the general parser: false means "not handled here".
 */
static bool
fast_iso8601(const char *s, TimestampTz *out)
{
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			tz = 0;
	int			v[6];
	static const int widths[6] = {4, 2, 2, 2, 2, 2};
	static const char seps[6] = {'-', '-', 'T', ':', ':', '\0'};

	for (int f = 0; f < 6; f++)
	{
		v[f] = 0;
		for (int d = 0; d < widths[f]; d++, s++)
		{
			if (*s < '0' || *s > '9')
				return false;
			v[f] = v[f] * 10 + (*s - '0');
		}
		if (f < 5)
		{
			if (*s != seps[f] && !(f == 2 && *s == 't'))
				return false;
			s++;
		}
	}
	if (*s == '.')
	{
		int			n = 0;
		int			scale = 100000;

		for (s++; *s >= '0' && *s <= '9'; s++, n++)
		{
			fsec += (*s - '0') * scale;
			scale /= 10;
		}
		if (n == 0 || n > 6)
			return false;
	}
	if ((*s == 'Z' || *s == 'z') && s[1] == '\0')
		tz = 0;
	else if ((*s == '+' || *s == '-') &&
			 s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' && s[3] == ':' &&
			 s[4] >= '0' && s[4] <= '5' && s[5] >= '0' && s[5] <= '9' && s[6] == '\0')
	{
		int			hh = (s[1] - '0') * 10 + (s[2] - '0');
		int			mm = (s[4] - '0') * 10 + (s[5] - '0');

		if (hh > 15)
			return false;
		/* PostgreSQL counts zones in seconds west of Greenwich */
		tz = (*s == '+' ? -1 : 1) * (hh * SECS_PER_HOUR + mm * SECS_PER_MINUTE);
	}
	else
		return false;
	if (v[0] < 1 || v[1] < 1 || v[1] > 12 || v[2] < 1 ||
		v[2] > day_tab[isleap(v[0])][v[1] - 1] ||
		v[3] > 23 || v[4] > 59 || v[5] > 59)
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = v[0];
	tm.tm_mon = v[1];
	tm.tm_mday = v[2];
	tm.tm_hour = v[3];
	tm.tm_min = v[4];
	tm.tm_sec = v[5];
	return tm2timestamp(&tm, fsec, &tz, out) == 0 && IS_VALID_TIMESTAMP(*out);
}

bool
cdp_parse_timestamptz(const char *s, TimestampTz *out)
{
	fsec_t		fsec;
	struct pg_tm tm;
	int			tz;
	int			dtype;
	int			nf;
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];

	if (fast_iso8601(s, out))
		return true;
	if (strlen(s) > MAXDATELEN || !iso8601_shape(s))
		return false;
	if (ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype,
					  MAXDATEFIELDS, &nf) != 0 ||
		DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz) != 0 ||
		dtype != DTK_DATE ||
		tm2timestamp(&tm, fsec, &tz, out) != 0)
		return false;
	return IS_VALID_TIMESTAMP(*out);
}
