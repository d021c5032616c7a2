/*-------------------------------------------------------------------------
 *
 * normalize.c
 *	  Normalization of identifier values: email, phone (E.164), trimming.
 *
 * Two spellings of one identifier must meet in cdp.identities, so every
 * value is normalized before it is looked up or stored.  Emails are
 * trimmed and case-folded, with optional mailbox-provider rules (gmail
 * ignores dots and +tags); phones become E.164 using a default region when
 * they carry no country code.  A value that cannot be normalized is
 * reported with the reason, never guessed.
 *
 * Case folding (emails and the "lower" normalizer) covers all of Unicode,
 * whatever the database's collation: ICU's full lower-case mapping in the
 * root locale, which is what lower() does under the ICU root collation
 * ("und-x-icu").  So "É" becomes "é", "İ" becomes "i" followed by U+0307
 * COMBINING DOT ABOVE, a final capital sigma becomes "ς", and "ß" stays
 * "ß" ("ẞ" becomes "ß"): lower-casing, not case folding, because folding
 * "ß" to "ss" or "ς" to "σ" would turn one internationalized domain name
 * into another.  Default-ignorable code points (zero-width spaces and
 * joiners, the word joiner, the byte order mark, soft hyphens, bidi
 * controls, variation selectors, tags) are dropped wherever they are,
 * white space is trimmed at both ends, and the result is composed to NFC,
 * so an "é" typed as "e" plus a combining accent is the same "é".  The
 * result is stable: normalizing it again changes nothing, which
 * cdp.renormalize_identities relies on.
 *
 * Nearly every value is ASCII, and for those all of this is the ASCII
 * lower-casing it always was: ICU is only called when a byte above 0x7F is
 * seen.  Outside UTF-8 databases only ASCII letters are folded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "normalize.h"
#include "text_fields.h"

bool		cdp_email_provider_rules = false;
char	   *cdp_default_phone_region = NULL;

void
cdp_normalize_init(void)
{
	DefineCustomBoolVariable("cdp.email_provider_rules",
							 "Apply mailbox provider rules (gmail dots, +tags) when normalizing emails.",
							 "Stored values keep the rules they were stored with until cdp.renormalize_identities() runs.",
							 &cdp_email_provider_rules, false, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("cdp.default_phone_region",
							   "Region (ISO 3166 alpha-2) assumed for phone numbers without a country code.",
							   NULL, &cdp_default_phone_region, "US", PGC_SUSET, 0,
							   NULL, NULL, NULL);
}

/* Country calling codes and national significant number lengths. */
typedef struct PhoneRegion
{
	const char *region;
	const char *cc;
	int			min_nsn;
	int			max_nsn;
	bool		trunk_zero;		/* national numbers are dialled with a leading 0 */
} PhoneRegion;

static const PhoneRegion phone_regions[] = {
	{"US", "1", 10, 10, false}, {"CA", "1", 10, 10, false},
	{"GB", "44", 9, 10, true}, {"IE", "353", 7, 9, true},
	{"FR", "33", 9, 9, true}, {"DE", "49", 6, 13, true},
	{"ES", "34", 9, 9, false}, {"IT", "39", 6, 11, false},
	{"PT", "351", 9, 9, false}, {"NL", "31", 9, 9, true},
	{"BE", "32", 8, 9, true}, {"LU", "352", 6, 11, false},
	{"CH", "41", 9, 9, true}, {"AT", "43", 4, 13, true},
	{"SE", "46", 7, 10, true}, {"NO", "47", 8, 8, false},
	{"DK", "45", 8, 8, false}, {"FI", "358", 5, 12, true},
	{"PL", "48", 9, 9, false}, {"CZ", "420", 9, 9, false},
	{"GR", "30", 10, 10, false}, {"AU", "61", 9, 9, true},
	{"NZ", "64", 8, 10, true}, {"JP", "81", 9, 10, true},
	{"CN", "86", 10, 11, true}, {"IN", "91", 10, 10, true},
	{"BR", "55", 10, 11, true}, {"MX", "52", 10, 10, false},
	{"ZA", "27", 9, 9, true}, {"SG", "65", 8, 8, false},
	{NULL, NULL, 0, 0, false}
};

static const PhoneRegion *
find_region(const char *region)
{
	for (const PhoneRegion *r = phone_regions; r->region; r++)
		if (pg_strcasecmp(r->region, region) == 0)
			return r;
	return NULL;
}

/* Trim ASCII and Unicode-agnostic whitespace at both ends. */
static char *
trim_copy(const char *raw)
{
	const char *s = raw;
	const char *e = raw + strlen(raw);

	while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' ||
					 *s == '\f' || *s == '\v'))
		s++;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
					 e[-1] == '\r' || e[-1] == '\f' || e[-1] == '\v'))
		e--;
	return pnstrdup(s, e - s);
}

/* C0, DEL and C1: the rule of every text field (text_fields.c). */
static bool
has_control_chars(const char *s)
{
	return cdp_text_has_controls(s, strlen(s));
}

/*
 * The ICU steps of unicode_lower: each writes src into a fresh buffer,
 * growing it once if ICU says it was too small.
 */
typedef int32_t (*UStringStep) (const void *arg, UChar *dest, int32_t cap,
								const UChar *src, int32_t len,
								UErrorCode *status);

static int32_t
step_lower(const void *arg, UChar *dest, int32_t cap, const UChar *src,
		   int32_t len, UErrorCode *status)
{
	/* "" is the root locale; NULL would be the process's, maybe Turkish */
	return u_strToLower(dest, cap, src, len, "", status);
}

static int32_t
step_nfc(const void *arg, UChar *dest, int32_t cap, const UChar *src,
		 int32_t len, UErrorCode *status)
{
	return unorm2_normalize((const UNormalizer2 *) arg, src, len, dest, cap, status);
}

static UChar *
ustring_step(UStringStep step, const void *arg, const UChar *src, int32_t len,
			 int32_t *outlen)
{
	/* lower-casing may lengthen a string, to three units for one at most */
	int32_t		cap = len + 8;
	UChar	   *dest = palloc(sizeof(UChar) * cap);
	UErrorCode	status = U_ZERO_ERROR;
	int32_t		n = step(arg, dest, cap, src, len, &status);

	if (status == U_BUFFER_OVERFLOW_ERROR)
	{
		pfree(dest);
		cap = n + 1;
		dest = palloc(sizeof(UChar) * cap);
		status = U_ZERO_ERROR;
		n = step(arg, dest, cap, src, len, &status);
	}
	if (U_FAILURE(status))
		elog(ERROR, "pg_cdp: ICU could not normalize a value: %s", u_errorName(status));
	*outlen = n;
	return dest;
}

/*
 * unicode_lower returns s (UTF-8, some byte above 0x7F) lower-cased over
 * all of Unicode, without default-ignorable code points and surrounding
 * white space, in NFC; see the top of the file.  It returns NULL when s is
 * not valid UTF-8, which a UTF-8 database never stores; the caller then
 * keeps the ASCII folding.
 */
static char *
unicode_lower(const char *s)
{
	static const UNormalizer2 *nfc = NULL;
	int32_t		len = strlen(s);
	UChar	   *u = palloc(sizeof(UChar) * (len + 1));
	UChar	   *lower;
	int32_t		n;
	int32_t		k = 0;
	int32_t		start = 0;
	UErrorCode	status = U_ZERO_ERROR;
	char	   *out;
	int32_t		outlen;

	if (nfc == NULL)
	{
		nfc = unorm2_getNFCInstance(&status);
		if (U_FAILURE(status))
			elog(ERROR, "pg_cdp: ICU has no NFC normalizer: %s", u_errorName(status));
	}

	/* UTF-16 never needs more units than UTF-8 needs bytes */
	u_strFromUTF8(u, len + 1, &n, s, len, &status);
	if (U_FAILURE(status))
		return NULL;

	/* Drop the invisible, then trim white space. */
	for (int32_t i = 0; i < n;)
	{
		int32_t		at = i;
		UChar32		c;

		U16_NEXT(u, i, n, c);
		if (u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT))
			continue;
		while (at < i)
			u[k++] = u[at++];
	}
	n = k;
	while (start < n)
	{
		int32_t		i = start;
		UChar32		c;

		U16_NEXT(u, i, n, c);
		if (!u_isUWhiteSpace(c))
			break;
		start = i;
	}
	while (n > start)
	{
		int32_t		i = n;
		UChar32		c;

		U16_PREV(u, start, i, c);
		if (!u_isUWhiteSpace(c))
			break;
		n = i;
	}

	lower = ustring_step(step_lower, NULL, u + start, n - start, &n);
	status = U_ZERO_ERROR;
	if (unorm2_quickCheck(nfc, lower, n, &status) != UNORM_YES || U_FAILURE(status))
		lower = ustring_step(step_nfc, nfc, lower, n, &n);

	status = U_ZERO_ERROR;
	u_strToUTF8(NULL, 0, &outlen, lower, n, &status);
	if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status))
		elog(ERROR, "pg_cdp: ICU could not encode a value: %s", u_errorName(status));
	out = palloc(outlen + 1);
	status = U_ZERO_ERROR;
	u_strToUTF8(out, outlen + 1, NULL, lower, n, &status);
	if (U_FAILURE(status))
		elog(ERROR, "pg_cdp: ICU could not encode a value: %s", u_errorName(status));
	return out;
}

/*
 * fold_case lower-cases s: in place while it is ASCII, through
 * unicode_lower (a new string) once a byte above 0x7F shows up.
 */
static char *
fold_case(char *s)
{
	unsigned char high = 0;
	char	   *folded;

	for (char *p = s; *p; p++)
	{
		high |= (unsigned char) *p;
		if (*p >= 'A' && *p <= 'Z')
			*p += 'a' - 'A';
	}
	if ((high & 0x80) == 0 || GetDatabaseEncoding() != PG_UTF8)
		return s;
	folded = unicode_lower(s);
	return folded ? folded : s;
}

/*
 * The mailbox providers whose addresses ignore a +tag (true), and those
 * that also ignore dots in the local part (*gmail), under
 * cdp.email_provider_rules.
 */
static bool
provider_rules(const char *domain, bool *gmail)
{
	*gmail = strcmp(domain, "gmail.com") == 0 ||
		strcmp(domain, "googlemail.com") == 0;
	return *gmail ||
		strcmp(domain, "outlook.com") == 0 || strcmp(domain, "hotmail.com") == 0 ||
		strcmp(domain, "live.com") == 0 || strcmp(domain, "icloud.com") == 0 ||
		strcmp(domain, "me.com") == 0 || strcmp(domain, "fastmail.com") == 0 ||
		strcmp(domain, "protonmail.com") == 0 || strcmp(domain, "proton.me") == 0;
}

/*
 * cdp_normalize_email_str returns the normalized address, or NULL with
 * *why set when raw is not an email address.
 */
char *
cdp_normalize_email_str(const char *raw, const char **why)
{
	char	   *s = fold_case(trim_copy(raw));
	char	   *at;
	char	   *domain;
	size_t		len = strlen(s);

	if (len == 0)
	{
		*why = "the email is empty";
		return NULL;
	}
	if (len > 254)
	{
		*why = "the email is longer than 254 bytes";
		return NULL;
	}
	if (has_control_chars(s) || strpbrk(s, " \t,;<>()[]\\\"") != NULL)
	{
		*why = "the email contains spaces, control characters or forbidden punctuation";
		return NULL;
	}
	at = strrchr(s, '@');
	if (at == NULL || at == s || strchr(s, '@') != at)
	{
		*why = "the email must contain exactly one \"@\" after a non-empty local part";
		return NULL;
	}
	domain = at + 1;
	if (at - s > 64)
	{
		*why = "the local part of the email is longer than 64 bytes";
		return NULL;
	}
	if (*domain == '\0' || strchr(domain, '.') == NULL || domain[0] == '.' ||
		domain[strlen(domain) - 1] == '.' || strstr(domain, "..") != NULL)
	{
		*why = "the email domain must be a dotted host name";
		return NULL;
	}

	if (cdp_email_provider_rules)
	{
		bool		gmail;
		bool		tags = provider_rules(domain, &gmail);
		StringInfoData local;

		initStringInfo(&local);
		for (char *p = s; p < at; p++)
		{
			if (tags && *p == '+')
				break;
			if (gmail && *p == '.')
				continue;
			appendStringInfoChar(&local, *p);
		}
		if (local.len > 0)
			return psprintf("%s@%s", local.data, gmail ? "gmail.com" : domain);
	}
	return s;
}

/*
 * cdp_normalize_phone_str returns the number in E.164 (+CCNSN), or NULL
 * with *why set.  Accepted spellings: "+44 20 7946 0958", "0044...",
 * "(415) 555-2671", "020 7946 0958" with region GB; extensions are refused
 * rather than silently cut.
 */
char *
cdp_normalize_phone_str(const char *raw, const char *region, const char **why)
{
	char	   *s = trim_copy(raw);
	StringInfoData digits;
	bool		plus = false;
	const PhoneRegion *r;
	const char *d;
	int			n;
	bool		by_setting;

	initStringInfo(&digits);
	for (char *p = s; *p; p++)
	{
		if (*p >= '0' && *p <= '9')
			appendStringInfoChar(&digits, *p);
		else if (*p == '+' && digits.len == 0 && !plus)
			plus = true;
		else if (*p == ' ' || *p == '-' || *p == '.' || *p == '(' || *p == ')' ||
				 *p == '/')
			continue;
		else
		{
			*why = "the phone number contains characters other than digits, spaces, \"+\", \"-\", \".\", \"/\" and parentheses";
			return NULL;
		}
	}
	if (digits.len == 0)
	{
		*why = "the phone number has no digits";
		return NULL;
	}
	d = digits.data;
	if (!plus && strncmp(d, "00", 2) == 0)
	{
		plus = true;
		d += 2;
	}
	if (plus)
	{
		n = strlen(d);
		if (d[0] == '0' || n < 8 || n > 15)
		{
			*why = "an international phone number needs a country code and 8 to 15 digits";
			return NULL;
		}
		return psprintf("+%s", d);
	}

	/*
	 * A number without a country code is read in the default region, which
	 * may not be the one it was written in: say which region it was read
	 * in, and where that came from.
	 */
	by_setting = (region == NULL || region == cdp_default_phone_region);
	r = find_region(region ? region : "US");
	if (r == NULL)
	{
		*why = psprintf("the phone number has no country code, and %s \"%s\" is not a known region; "
						"write it with its country code (+...)",
						by_setting ? "cdp.default_phone_region" : "the region", region);
		return NULL;
	}
	if (strcmp(r->cc, "1") == 0 && strlen(d) == 11 && d[0] == '1')
		d++;					/* NANP numbers dialled with the leading 1 */
	else if (r->trunk_zero && d[0] == '0')
		d++;
	n = strlen(d);
	if (n < r->min_nsn || n > r->max_nsn)
	{
		char	   *len = r->min_nsn == r->max_nsn ? psprintf("%d", r->min_nsn) :
			psprintf("%d to %d", r->min_nsn, r->max_nsn);

		*why = psprintf("the phone number has no country code, so it was read as a national number of region %s%s, "
						"whose numbers have %s digits; write it with its country code (+...)%s",
						r->region, by_setting ? " (cdp.default_phone_region)" : "", len,
						by_setting ? " or set cdp.default_phone_region to its region" : "");
		return NULL;
	}
	if (strcmp(r->cc, "1") == 0 && (d[0] == '0' || d[0] == '1'))
	{
		*why = psprintf("the phone number has no country code, so it was read as a national number of region %s%s, "
						"where an area code cannot start with 0 or 1; write it with its country code (+...)%s",
						r->region, by_setting ? " (cdp.default_phone_region)" : "",
						by_setting ? " or set cdp.default_phone_region to its region" : "");
		return NULL;
	}
	return psprintf("+%s%s", r->cc, d);
}

/*
 * cdp_normalize_value normalizes raw for type; NULL with *why when it is
 * not a valid value of that type.
 */
char *
cdp_normalize_value(CdpIdentType *type, const char *raw, const char **why)
{
	char	   *s;

	switch (type->normalizer)
	{
		case CDP_NORM_EMAIL:
			return cdp_normalize_email_str(raw, why);
		case CDP_NORM_PHONE:
			return cdp_normalize_phone_str(raw, cdp_default_phone_region, why);
		case CDP_NORM_LOWER:
		case CDP_NORM_TRIM:
			s = trim_copy(raw);
			if (type->normalizer == CDP_NORM_LOWER)
				s = fold_case(s);
			if (s[0] == '\0')
			{
				*why = "the value is empty";
				return NULL;
			}
			if (strlen(s) > CDP_MAX_VALUE_BYTES)
			{
				*why = psprintf("the value is longer than %d bytes", CDP_MAX_VALUE_BYTES);
				return NULL;
			}
			if (has_control_chars(s))
			{
				*why = "the value contains control characters";
				return NULL;
			}
			return s;
	}
	*why = "unknown normalizer";
	return NULL;
}

/*
 * Pre-filters: how to find, cheaply, every raw text that may hold a
 * spelling of a normalized value, so that a scan of many raw messages
 * (cdp.forget's of the inbox) parses only those that may name it.
 *
 * cdp_normalize_prefilter(type, value) describes, for a text without
 * backslashes, what it holds if a spelling that normalizes to value as
 * type is written in it, in a JSON string or as a JSON number not in
 * exponent form; cdp_prefilter_finds looks for the needle.  A text with
 * backslashes (an escape may spell anything) or exponents is the caller's
 * to read whole.  A pre-filter may find more than spellings, never less.
 * Spellings differ only in what normalization removes or maps:
 *
 * - trim (EXACT): the value itself, between white space.
 * - phone (DIGITS): the digits after the default region's country code
 *   (when the number has it) or after the "+", with only the separators
 *   the normalizer skips between them: every spelling, national or
 *   international, ends with those digits.
 * - lower and email (FOLDED): in a text of ASCII characters only, the value
 *   in either case (the non-ASCII folding has nothing to work on; a value
 *   with non-ASCII characters has no such spelling, and no needle).  In a
 *   text with non-ASCII characters, regex: each ASCII character of the
 *   value in either case, with anything non-ASCII between two of them
 *   (invisible code points are dropped).  Only four non-ASCII code points
 *   lower-case or compose to ASCII: U+0130 to "i" and U+0307, U+037E to
 *   ";", U+1FEF to "`" and U+212A KELVIN SIGN to "k".  A non-ASCII
 *   character of the value may come from any characters (a letter and a
 *   combining accent compose).
 * - email under the provider rules (REGEX): as FOLDED, in any text, with
 *   dots and a +tag in the local part, and googlemail.com for gmail.com.
 *
 * The regular expressions are PostgreSQL's (advanced syntax).
 */
#define PREFILTER_GAP "[^\\x01-\\x7f]*"
#define PREFILTER_DOT_GAP "[^\\x01-\\x2d\\x2f-\\x7f]*"
#define ASCII_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define ASCII_ALNUM(c) (ASCII_ALPHA(c) || ((c) >= '0' && (c) <= '9'))
#define ASCII_LOWER(c) ((c) >= 'A' && (c) <= 'Z' ? (c) + ('a' - 'A') : (c))
#define PHONE_SEPARATOR(c) ((c) == ' ' || (c) == '-' || (c) == '.' || (c) == '(' || \
							(c) == ')' || (c) == '/')

static void
prefilter_literal(StringInfo re, const char *s, int len)
{
	for (int i = 0; i < len; i++)
	{
		unsigned char c = s[i];

		if (c < 0x80 && !ASCII_ALNUM(c))
			appendStringInfoChar(re, '\\');
		appendStringInfoChar(re, c);
	}
}

static void
prefilter_folded(StringInfo re, const char *s, int len, const char *gap)
{
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	bool		first = true;
	bool		any = false;	/* the last item matches anything */

	for (int i = 0; i < len;)
	{
		unsigned char c = s[i];

		if (c >= 0x80)
		{
			while (i < len && (unsigned char) s[i] >= 0x80)
				i++;
			if (!any)
				appendStringInfoString(re, "[^\"]*");
			any = true;
			first = false;
			continue;
		}
		if (!first && !any)
			appendStringInfoString(re, gap);
		if (ASCII_ALPHA(c))
			appendStringInfo(re, "[%c%c%s]", pg_ascii_tolower(c), pg_ascii_toupper(c),
							 !utf8 ? "" : pg_ascii_tolower(c) == 'i' ? "\\u0130" :
							 pg_ascii_tolower(c) == 'k' ? "\\u212A" : "");
		else if (c == ';' || c == '`')
			appendStringInfo(re, "[%c%s]", c,
							 !utf8 ? "" : c == ';' ? "\\u037E" : "\\u1FEF");
		else
			prefilter_literal(re, s + i, 1);
		any = false;
		first = false;
		i++;
	}
}

static bool
all_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s >= 0x80)
			return false;
	return true;
}

void
cdp_normalize_prefilter(CdpIdentType *type, const char *value, CdpPrefilter *out)
{
	StringInfoData re;
	const char *at;
	bool		gmail;

	memset(out, 0, sizeof(CdpPrefilter));
	initStringInfo(&re);
	switch (type->normalizer)
	{
		case CDP_NORM_TRIM:
			out->kind = CDP_PREFILTER_EXACT;
			out->needle = pstrdup(value);
			return;
		case CDP_NORM_PHONE:
			{
				const PhoneRegion *r = find_region(cdp_default_phone_region ?
												   cdp_default_phone_region : "US");
				const char *d = value + 1;

				if (value[0] != '+' || *d == '\0' || strspn(d, "0123456789") != strlen(d))
				{
					/* no spelling normalizes to it: its own text will do */
					out->kind = CDP_PREFILTER_EXACT;
					out->needle = pstrdup(value);
					return;
				}
				if (r && strncmp(d, r->cc, strlen(r->cc)) == 0 && d[strlen(r->cc)] != '\0')
					d += strlen(r->cc);
				out->kind = CDP_PREFILTER_DIGITS;
				out->needle = pstrdup(d);
				return;
			}
		case CDP_NORM_EMAIL:
			at = strrchr(value, '@');
			if (cdp_email_provider_rules && at && provider_rules(at + 1, &gmail))
			{
				const char *gap = gmail ? PREFILTER_DOT_GAP : PREFILTER_GAP;

				prefilter_folded(&re, value, at - value, gap);
				appendStringInfoString(&re, gap);
				appendStringInfoString(&re, "(?:\\+[^\"@]*)?" PREFILTER_GAP "@" PREFILTER_GAP);
				if (gmail)
				{
					appendStringInfoString(&re, "(?:");
					prefilter_folded(&re, "gmail.com", 9, PREFILTER_GAP);
					appendStringInfoChar(&re, '|');
					prefilter_folded(&re, "googlemail.com", 14, PREFILTER_GAP);
					appendStringInfoChar(&re, ')');
				}
				else
					prefilter_folded(&re, at + 1, strlen(at + 1), PREFILTER_GAP);
				out->kind = CDP_PREFILTER_REGEX;
				out->regex = re.data;
				return;
			}
			/* FALLTHROUGH */
		case CDP_NORM_LOWER:
			out->kind = CDP_PREFILTER_FOLDED;
			if (all_ascii(value))
			{
				out->needle = pstrdup(value);
				for (char *p = out->needle; *p; p++)
					*p = pg_ascii_tolower((unsigned char) *p);
			}
			prefilter_folded(&re, value, strlen(value), PREFILTER_GAP);
			out->regex = re.data;
			return;
	}
}

/*
 * cdp_prefilter_finds: does text (len bytes, without backslashes; ascii
 * when it has no byte above 0x7F) hold f's needle?  The regular
 * expressions are the caller's to run.
 */
bool
cdp_prefilter_finds(const CdpPrefilter *f, const char *text, int len, bool ascii)
{
	const char *n = f->needle;
	const char *end = text + len;
	int			nlen;

	if (n == NULL || n[0] == '\0' || f->kind == CDP_PREFILTER_REGEX ||
		(f->kind == CDP_PREFILTER_FOLDED && !ascii))
		return false;
	nlen = strlen(n);
	if (f->kind == CDP_PREFILTER_FOLDED && ASCII_ALPHA((unsigned char) n[0]))
	{
		/* the first letter in either case */
		for (const char *p = text; p + nlen <= end; p++)
		{
			int			k = 0;

			if ((*p | 0x20) != n[0])
				continue;
			while (k < nlen && ASCII_LOWER((unsigned char) p[k]) == (unsigned char) n[k])
				k++;
			if (k == nlen)
				return true;
		}
		return false;
	}
	for (const char *p = text; p < end && (p = memchr(p, n[0], end - p)) != NULL; p++)
	{
		switch (f->kind)
		{
			case CDP_PREFILTER_EXACT:
			case CDP_PREFILTER_FOLDED:
				{
					int			k = 1;

					if (p + nlen > end)
						return false;
					if (f->kind == CDP_PREFILTER_EXACT)
						k = memcmp(p, n, nlen) == 0 ? nlen : 0;
					else
						while (k < nlen && ASCII_LOWER((unsigned char) p[k]) == (unsigned char) n[k])
							k++;
					if (k == nlen)
						return true;
				}
				break;
			case CDP_PREFILTER_DIGITS:
				{
					int			k = 1;

					/* separators are no digits: the walk never has a choice */
					for (const char *q = p + 1; k < nlen && q < end; q++)
					{
						if (*q == n[k])
							k++;
						else if (!PHONE_SEPARATOR(*q))
							break;
					}
					if (k == nlen)
						return true;
				}
				break;
			case CDP_PREFILTER_REGEX:
				return false;
		}
	}
	return false;
}

PG_FUNCTION_INFO_V1(cdp_normalize_email);
Datum
cdp_normalize_email(PG_FUNCTION_ARGS)
{
	const char *why = NULL;
	char	   *out;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	out = cdp_normalize_email_str(text_to_cstring(PG_GETARG_TEXT_PP(0)), &why);
	if (out == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

PG_FUNCTION_INFO_V1(cdp_normalize_phone);
Datum
cdp_normalize_phone(PG_FUNCTION_ARGS)
{
	const char *why = NULL;
	char	   *region;
	char	   *out;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	region = PG_ARGISNULL(1) ? cdp_default_phone_region :
		text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (find_region(region) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown phone region \"%s\"", region),
				 errhint("Use an ISO 3166 alpha-2 code such as US, GB, FR or DE.")));
	out = cdp_normalize_phone_str(text_to_cstring(PG_GETARG_TEXT_PP(0)), region, &why);
	if (out == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(out));
}
