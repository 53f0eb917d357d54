#include "recording.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "clock.h"

typedef struct {
    char *s;
    size_t len;
    int col;
    bool quoted;
} field_t;

struct dp_recording {
    char *path;
    FILE *fp;
    uint64_t size;
    uint64_t offset;
    char *line;
    size_t cap;
    int lineno;
    bool wide;
    bool done;
    field_t *fields;
    int nfields;
    int capfields;
    int next_field; /* wide: next column of the current row to hand out */
    dp_time_t row_ts;
    dp_time_t prev_ts;
    bool have_prev;
    /* The last ISO timestamp's "YYYY-MM-DDTHH:MM:SS" and its value, so rows
     * within the same second skip the calendar arithmetic. */
    char ts_prefix[20];
    dp_time_t ts_prefix_us;
    bool ts_cached;
    char **names;
    int *cols;
    int nkeys;
    int capkeys;
    int *slots; /* long: open-addressing hash of names -> key + 1 */
    size_t nslots;
};

static int fail_at(dp_recording_t *r, char **err, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(dp_recording_t *r, char **err, int col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->done = true;
    return dp_fail(err, DP_EINVAL, "%s:%d:%d: %s", r->path, r->lineno, col, msg);
}

/* Reads the next line that is neither blank nor a comment. 1, 0 at EOF, <0. */
static int read_line(dp_recording_t *r, char **err)
{
    for (;;) {
        ssize_t n = getline(&r->line, &r->cap, r->fp);
        if (n < 0) {
            if (ferror(r->fp)) {
                r->done = true;
                return dp_fail(err, DP_EIO, "%s:%d: read error: %s", r->path, r->lineno + 1,
                               strerror(errno));
            }
            return 0;
        }
        r->offset += (uint64_t)n;
        r->lineno++;
        while (n > 0 && (r->line[n - 1] == '\n' || r->line[n - 1] == '\r'))
            r->line[--n] = '\0';
        const char *p = r->line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        return 1;
    }
}

/* Splits the current line into fields in place (quotes removed, "" -> "). */
static int split(dp_recording_t *r, char **err)
{
    r->nfields = 0;
    char *p = r->line;
    for (;;) {
        if (r->nfields == r->capfields) {
            r->capfields = r->capfields ? r->capfields * 2 : 16;
            r->fields = dp_xrealloc(r->fields, sizeof *r->fields * (size_t)r->capfields);
        }
        field_t *f = &r->fields[r->nfields++];
        while (*p == ' ' || *p == '\t')
            p++;
        f->col = (int)(p - r->line) + 1;
        f->quoted = *p == '"';
        if (f->quoted) {
            char *out = ++p;
            f->s = out;
            for (;;) {
                if (*p == '\0')
                    return fail_at(r, err, f->col, "unterminated quoted field");
                if (*p == '"') {
                    if (p[1] != '"')
                        break;
                    p++;
                }
                *out++ = *p++;
            }
            p++;
            f->len = (size_t)(out - f->s);
            *out = '\0';
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p != ',' && *p != '\0')
                return fail_at(r, err, (int)(p - r->line) + 1,
                               "unexpected \"%c\" after a closing quote (expected a comma)", *p);
        } else {
            f->s = p;
            while (*p != ',' && *p != '\0')
                p++;
            char *end = p;
            while (end > f->s && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            f->len = (size_t)(end - f->s);
        }
        if (*p == '\0') {
            f->s[f->len] = '\0';
            return 0;
        }
        p++;
        f->s[f->len] = '\0';
    }
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

static int add_key(dp_recording_t *r, const char *name, int col)
{
    if (r->nkeys == r->capkeys) {
        r->capkeys = r->capkeys ? r->capkeys * 2 : 16;
        r->names = dp_xrealloc(r->names, sizeof *r->names * (size_t)r->capkeys);
        r->cols = dp_xrealloc(r->cols, sizeof *r->cols * (size_t)r->capkeys);
    }
    r->names[r->nkeys] = dp_xstrdup(name);
    r->cols[r->nkeys] = col;
    return r->nkeys++;
}

/* The key of a tag name in a long file, adding it when new. */
static int intern(dp_recording_t *r, const char *name)
{
    if ((size_t)(r->nkeys + 1) * 2 > r->nslots) {
        size_t n = r->nslots ? r->nslots * 2 : 64;
        int *slots = dp_xcalloc(n, sizeof *slots);
        for (int k = 0; k < r->nkeys; k++) {
            size_t i = hash_name(r->names[k]) & (n - 1);
            while (slots[i] != 0)
                i = (i + 1) & (n - 1);
            slots[i] = k + 1;
        }
        free(r->slots);
        r->slots = slots;
        r->nslots = n;
    }
    size_t i = hash_name(name) & (r->nslots - 1);
    while (r->slots[i] != 0) {
        if (strcmp(r->names[r->slots[i] - 1], name) == 0)
            return r->slots[i] - 1;
        i = (i + 1) & (r->nslots - 1);
    }
    int k = add_key(r, name, 0);
    r->slots[i] = k + 1;
    return k;
}

static bool is_ts_header(const field_t *f)
{
    return !f->quoted && (strcasecmp(f->s, "timestamp") == 0 || strcasecmp(f->s, "time") == 0 ||
                          strcasecmp(f->s, "ts") == 0);
}

static int read_header(dp_recording_t *r, char **err)
{
    int rc = read_line(r, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        r->done = true;
        return dp_fail(err, DP_EINVAL,
                       "%s: empty recording (expected a header line: timestamp,tag,value or "
                       "timestamp,TAG,TAG...)",
                       r->path);
    }
    if ((rc = split(r, err)) < 0)
        return rc;
    if (!is_ts_header(&r->fields[0]))
        return fail_at(r, err, r->fields[0].col,
                       "expected a header line starting with \"timestamp\" (long: "
                       "timestamp,tag,value[,quality]; wide: timestamp,TAG,TAG...), got \"%s\"",
                       r->fields[0].s);
    if (r->nfields < 2)
        return fail_at(r, err, (int)strlen(r->line) + 1,
                       "a header needs at least one more column after \"timestamp\"");
    if (r->nfields >= 3 && strcasecmp(r->fields[1].s, "tag") == 0 &&
        strcasecmp(r->fields[2].s, "value") == 0) {
        if (r->nfields > 4 || (r->nfields == 4 && strcasecmp(r->fields[3].s, "quality") != 0))
            return fail_at(r, err, r->fields[3].col,
                           "a long recording's header is timestamp,tag,value[,quality]; "
                           "unexpected column \"%s\"",
                           r->fields[3].s);
        r->wide = false;
        return 0;
    }
    r->wide = true;
    for (int i = 1; i < r->nfields; i++) {
        field_t *f = &r->fields[i];
        if (f->len == 0)
            return fail_at(r, err, f->col, "empty column name in the header (column %d)", i + 1);
        for (int k = 0; k < r->nkeys; k++) {
            if (strcmp(r->names[k], f->s) == 0)
                return fail_at(r, err, f->col, "column \"%s\" appears twice in the header", f->s);
        }
        add_key(r, f->s, f->col);
    }
    return 0;
}

dp_recording_t *dp_recording_open(const char *path, char **err)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        dp_fail(err, DP_ENOENT, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        dp_fail(err, DP_EINVAL, "%s: is a directory, not a CSV recording", path);
        return NULL;
    }
    dp_recording_t *r = dp_xcalloc(1, sizeof *r);
    r->path = dp_xstrdup(path);
    r->fp = fp;
    r->size = (uint64_t)st.st_size;
    setvbuf(fp, NULL, _IOFBF, 1 << 16);
    if (read_header(r, err) < 0) {
        dp_recording_free(r);
        return NULL;
    }
    return r;
}

void dp_recording_free(dp_recording_t *r)
{
    if (r == NULL)
        return;
    if (r->fp != NULL)
        fclose(r->fp);
    for (int k = 0; k < r->nkeys; k++)
        free(r->names[k]);
    free(r->names);
    free(r->cols);
    free(r->slots);
    free(r->fields);
    free(r->line);
    free(r->path);
    free(r);
}

/* Parses a timestamp field; the common case (ISO, same second as the last
 * row) avoids timegm. */
static int parse_ts(dp_recording_t *r, const field_t *f, dp_time_t *out, char **err)
{
    const char *s = f->s;
    if (f->len >= 19 && s[4] == '-' && s[10] == 'T' && r->ts_cached &&
        memcmp(s, r->ts_prefix, 19) == 0) {
        const char *p = s + 19;
        int64_t frac = 0;
        bool ok = true;
        if (*p == '.') {
            p++;
            int digits = 0;
            int64_t scale = 100000;
            while (isdigit((unsigned char)*p)) {
                if (digits < 6)
                    frac += (*p - '0') * scale;
                scale /= 10;
                digits++;
                p++;
            }
            ok = digits > 0 && digits <= 6;
        }
        if (*p == 'Z')
            p++;
        if (ok && *p == '\0') {
            *out = r->ts_prefix_us + frac;
            return 0;
        }
    }
    char *inner = NULL;
    if (f->len == 0)
        return fail_at(r, err, f->col, "missing timestamp");
    if (dp_time_parse(s, out, &inner) < 0) {
        int rc = fail_at(r, err, f->col,
                         "bad timestamp \"%s\": expected ISO 8601 UTC "
                         "(2026-01-01T00:00:00.000Z) or seconds since the epoch",
                         s);
        free(inner);
        return rc;
    }
    if (f->len >= 19 && s[4] == '-' && s[10] == 'T') {
        memcpy(r->ts_prefix, s, 19);
        r->ts_prefix[19] = '\0';
        r->ts_prefix_us = *out - (*out % DP_US_PER_SEC + DP_US_PER_SEC) % DP_US_PER_SEC;
        r->ts_cached = true;
    }
    return 0;
}

/* Exact powers of ten as doubles (10^22 is the largest one that is). */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

bool dp__parse_decimal(const char *s, double *out)
{
    /* Clinger's fast path: a decimal with at most 15 significant digits and a
     * small exponent is m * 10^e or m / 10^e with m and 10^e exact, so one
     * IEEE multiplication or division gives the correctly rounded result,
     * the same as strtod. Anything else returns false (use strtod). */
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    uint64_t m = 0;
    int digits = 0, scale = 0;
    bool any = false;
    while (*p >= '0' && *p <= '9') {
        if (m != 0 || *p != '0')
            digits++;
        m = m * 10 + (uint64_t)(*p++ - '0');
        any = true;
        if (digits > 15)
            return false;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            if (m != 0 || *p != '0')
                digits++;
            m = m * 10 + (uint64_t)(*p++ - '0');
            scale--;
            any = true;
            if (digits > 15)
                return false;
        }
    }
    if (!any)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        bool eneg = false;
        if (*p == '-' || *p == '+')
            eneg = *p++ == '-';
        if (!(*p >= '0' && *p <= '9'))
            return false;
        int e = 0;
        while (*p >= '0' && *p <= '9' && e < 1000)
            e = e * 10 + (*p++ - '0');
        scale += eneg ? -e : e;
    }
    if (*p != '\0' || scale < -22 || scale > 22)
        return false;
    double d = (double)m;
    d = scale < 0 ? d / pow10_exact[-scale] : d * pow10_exact[scale];
    *out = neg ? -d : d;
    return true;
}

/* Parses a value field. Returns 1 with a value, 0 for an empty cell, <0. */
static int parse_value(dp_recording_t *r, field_t *f, dp_value_t *v, char **err)
{
    if (f->quoted) {
        *v = dp_str(f->s);
        return 1;
    }
    if (f->len == 0)
        return 0;
    if (strcmp(f->s, "true") == 0) {
        *v = dp_bool(true);
        return 1;
    }
    if (strcmp(f->s, "false") == 0) {
        *v = dp_bool(false);
        return 1;
    }
    double d;
    if (dp__parse_decimal(f->s, &d)) { /* most readings: exact without strtod */
        *v = dp_num(d);
        return 1;
    }
    char *end = NULL;
    d = strtod(f->s, &end);
    if (end == f->s || *end != '\0' ||
        !(isdigit((unsigned char)f->s[0]) || f->s[0] == '-' || f->s[0] == '+' || f->s[0] == '.'))
        return fail_at(r, err, f->col,
                       "bad value \"%s\": expected a number, true, false or a \"quoted string\"",
                       f->s);
    if (!isfinite(d))
        return fail_at(r, err, f->col, "bad value \"%s\": not a finite number", f->s);
    *v = dp_num(d);
    return 1;
}

/* Reads and checks the next row's timestamp and field count. 1, 0 at EOF, <0. */
static int next_row(dp_recording_t *r, char **err)
{
    int rc = read_line(r, err);
    if (rc <= 0)
        return rc;
    if ((rc = split(r, err)) < 0)
        return rc;
    if (r->wide) {
        if (r->nfields != r->nkeys + 1)
            return fail_at(r, err, r->nfields > r->nkeys + 1 ? r->fields[r->nkeys + 1].col : 1,
                           "expected %d fields as in the header, got %d", r->nkeys + 1, r->nfields);
    } else if (r->nfields < 3 || r->nfields > 4) {
        return fail_at(r, err, r->nfields > 4 ? r->fields[4].col : 1,
                       "expected 3 or 4 fields (timestamp,tag,value[,quality]), got %d",
                       r->nfields);
    }
    dp_time_t ts;
    if ((rc = parse_ts(r, &r->fields[0], &ts, err)) < 0)
        return rc;
    if (r->have_prev && ts < r->prev_ts) {
        char a[40], b[40];
        dp_time_format(ts, a, sizeof a);
        dp_time_format(r->prev_ts, b, sizeof b);
        return fail_at(r, err, r->fields[0].col,
                       "timestamp %s is before the previous row's (%s): rows must be in time "
                       "order",
                       a, b);
    }
    r->prev_ts = r->row_ts = ts;
    r->have_prev = true;
    r->next_field = 1;
    return 1;
}

int dp_recording_next(dp_recording_t *r, dp_rec_sample_t *out, char **err)
{
    if (r->done)
        return 0;
    for (;;) {
        if (!r->wide || r->next_field == 0 || r->next_field >= r->nfields) {
            int rc = next_row(r, err);
            if (rc <= 0) {
                r->done = true;
                return rc;
            }
        }
        if (r->wide) {
            while (r->next_field < r->nfields) {
                int i = r->next_field++;
                int rc = parse_value(r, &r->fields[i], &out->v, err);
                if (rc < 0)
                    return rc;
                if (rc == 0)
                    continue;
                out->ts = r->row_ts;
                out->key = i - 1;
                out->quality = DP_Q_GOOD;
                out->line = r->lineno;
                out->col = r->fields[i].col;
                return 1;
            }
            continue;
        }
        field_t *tag = &r->fields[1], *val = &r->fields[2];
        if (tag->len == 0)
            return fail_at(r, err, tag->col, "missing tag name");
        int rc = parse_value(r, val, &out->v, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return fail_at(r, err, val->col, "missing value for %s", tag->s);
        out->quality = DP_Q_GOOD;
        if (r->nfields == 4 && r->fields[3].len > 0) {
            int q = dp_quality_parse(r->fields[3].s);
            if (q < 0)
                return fail_at(r, err, r->fields[3].col,
                               "bad quality \"%s\": expected good, uncertain or bad",
                               r->fields[3].s);
            out->quality = q;
        }
        out->ts = r->row_ts;
        out->key = intern(r, tag->s);
        out->line = r->lineno;
        out->col = val->col;
        r->next_field = 0;
        return 1;
    }
}

bool dp_recording_wide(const dp_recording_t *r)
{
    return r->wide;
}

int dp_recording_keys(const dp_recording_t *r)
{
    return r->nkeys;
}

const char *dp_recording_key_name(const dp_recording_t *r, int key)
{
    return key >= 0 && key < r->nkeys ? r->names[key] : NULL;
}

int dp_recording_key_col(const dp_recording_t *r, int key)
{
    return key >= 0 && key < r->nkeys ? r->cols[key] : 0;
}

const char *dp_recording_path(const dp_recording_t *r)
{
    return r->path;
}

uint64_t dp_recording_offset(const dp_recording_t *r)
{
    return r->offset;
}

uint64_t dp_recording_size(const dp_recording_t *r)
{
    return r->size;
}
