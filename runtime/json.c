#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "fmtnum.h"

static void reserve(dp_jbuf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->p = dp_xrealloc(b->p, cap);
    b->cap = cap;
}

void dp_jb_free(dp_jbuf_t *b)
{
    free(b->p);
    *b = (dp_jbuf_t){0};
}

void dp_jb_raw(dp_jbuf_t *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void dp_jb_puts(dp_jbuf_t *b, const char *s)
{
    dp_jb_raw(b, s, strlen(s));
}

void dp_jb_printf(dp_jbuf_t *b, const char *fmt, ...)
{
    /* Most pieces are short: format once into the free space, and again
     * only when it did not fit. */
    reserve(b, 128);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->p[b->len] = '\0';
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* The length of the well-formed UTF-8 sequence that starts with the
 * non-ASCII byte s[0] (n bytes left), or 0 with *bad set to the length of
 * its maximal ill-formed prefix: the bytes one U+FFFD stands for (Unicode's
 * "maximal subpart" practice, as browsers and Python decode). Overlong
 * forms, surrogates and code points above U+10FFFF are ill-formed (RFC 3629). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* what the second byte may be */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates above */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t k = 1; k < len; k++) {
        if (k >= n || s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xBF)) {
            *bad = k;
            return 0;
        }
    }
    return len;
}

void dp_jb_strn(dp_jbuf_t *b, const char *s, size_t n)
{
    reserve(b, n + 2);
    dp_jb_raw(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0; /* start of the bytes to copy as they are */
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t bad = 1; /* bytes the escape below stands for */
        if (c >= 0x80) {
            size_t len = utf8_seq(u + i, n - i, &bad);
            if (len > 0) {
                i += len;
                continue;
            }
        } else if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        dp_jb_raw(b, s + run, i - run);
        switch (c) {
        case '"':
            dp_jb_puts(b, "\\\"");
            break;
        case '\\':
            dp_jb_puts(b, "\\\\");
            break;
        case '\n':
            dp_jb_puts(b, "\\n");
            break;
        case '\r':
            dp_jb_puts(b, "\\r");
            break;
        case '\t':
            dp_jb_puts(b, "\\t");
            break;
        default:
            if (c < 0x20)
                dp_jb_printf(b, "\\u%04x", c);
            else
                dp_jb_puts(b, "\\ufffd"); /* not UTF-8: JSON text must be */
        }
        i += bad;
        run = i;
    }
    dp_jb_raw(b, s + run, n - run);
    dp_jb_raw(b, "\"", 1);
}

void dp_jb_str(dp_jbuf_t *b, const char *s)
{
    if (s == NULL)
        dp_jb_puts(b, "null");
    else
        dp_jb_strn(b, s, strlen(s));
}

void dp_jb_num(dp_jbuf_t *b, double v)
{
    if (!isfinite(v)) {
        dp_jb_puts(b, "null");
        return;
    }
    char num[DP_FMTNUM_SIZE];
    dp_jb_raw(b, num, dp_fmtnum(v, num));
}

void dp_jb_key(dp_jbuf_t *b, const char *key, bool first)
{
    if (!first)
        dp_jb_raw(b, ",", 1);
    dp_jb_str(b, key);
    dp_jb_raw(b, ":", 1);
}

void dp_jb_value(dp_jbuf_t *b, const dp_value_t *v)
{
    switch (v->type) {
    case DP_NUM:
        dp_jb_num(b, v->u.n);
        break;
    case DP_BOOL:
        dp_jb_puts(b, v->u.b ? "true" : "false");
        break;
    case DP_STR:
        dp_jb_str(b, v->u.s);
        break;
    default:
        dp_jb_puts(b, "null");
    }
}

static void msgpack_depth(dp_jbuf_t *b, const msgpack_object *o, bool spaced, int depth)
{
    if (depth > 32) {
        dp_jb_puts(b, "null");
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        dp_jb_puts(b, "null");
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        dp_jb_puts(b, o->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        dp_jb_printf(b, "%llu", (unsigned long long)o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        dp_jb_printf(b, "%lld", (long long)o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        dp_jb_num(b, o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        dp_jb_strn(b, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        dp_jb_puts(b, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                dp_jb_puts(b, spaced ? ", " : ",");
            msgpack_depth(b, &o->via.array.ptr[i], spaced, depth + 1);
        }
        dp_jb_puts(b, "]");
        break;
    case MSGPACK_OBJECT_MAP:
        dp_jb_puts(b, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i)
                dp_jb_puts(b, spaced ? ", " : ",");
            if (k->type == MSGPACK_OBJECT_STR) {
                dp_jb_strn(b, k->via.str.ptr, k->via.str.size);
            } else {
                dp_jbuf_t kb = {0};
                msgpack_depth(&kb, k, spaced, depth + 1);
                dp_jb_strn(b, kb.p, kb.len);
                dp_jb_free(&kb);
            }
            dp_jb_puts(b, spaced ? ": " : ":");
            msgpack_depth(b, &o->via.map.ptr[i].val, spaced, depth + 1);
        }
        dp_jb_puts(b, "}");
        break;
    default:
        dp_jb_puts(b, "null");
    }
}

void dp_jb_msgpack(dp_jbuf_t *b, const struct msgpack_object *o, bool spaced)
{
    msgpack_depth(b, o, spaced, 0);
}

/* ---- parser ------------------------------------------------------------ */

typedef struct {
    const char *s;
    size_t len, i;
    char **err;
} parser_t;

static void skip_ws(parser_t *p)
{
    while (p->i < p->len && strchr(" \t\r\n", p->s[p->i]) != NULL && p->s[p->i] != '\0')
        p->i++;
}

static int fail(parser_t *p, const char *what)
{
    return dp_fail(p->err, DP_EINVAL, "malformed JSON at byte %zu: %s", p->i, what);
}

static void put_utf8(dp_jbuf_t *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    dp_jb_raw(b, u, n);
}

/* Four hex digits at p->i (consumed), or -1. */
static long hex4(parser_t *p)
{
    if (p->len - p->i < 4)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + (size_t)k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    p->i += 4;
    return v;
}

static int parse_string(parser_t *p, char **out)
{
    if (p->i >= p->len || p->s[p->i] != '"')
        return fail(p, "expected a string");
    p->i++;
    dp_jbuf_t b = {0};
    dp_jb_raw(&b, "", 0);
    while (p->i < p->len) {
        unsigned char c = (unsigned char)p->s[p->i++];
        if (c == '"') {
            *out = b.p;
            return 0;
        }
        if (c < 0x20) {
            dp_jb_free(&b);
            return fail(p, "control character in a string");
        }
        if (c >= 0x80) {
            size_t at = p->i - 1, bad = 0;
            size_t len = utf8_seq((const unsigned char *)p->s + at, p->len - at, &bad);
            if (len == 0) {
                p->i = at;
                dp_jb_free(&b);
                return fail(p, "bytes that are not UTF-8 in a string");
            }
            dp_jb_raw(&b, p->s + at, len);
            p->i = at + len;
            continue;
        }
        if (c != '\\') {
            dp_jb_raw(&b, (const char *)&c, 1);
            continue;
        }
        if (p->i >= p->len)
            break;
        char e = p->s[p->i++];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *k = e != '\0' ? strchr(from, e) : NULL;
        if (k != NULL) {
            dp_jb_raw(&b, &to[k - from], 1);
        } else if (e == 'u') {
            const char *why = NULL;
            long cp = hex4(p);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* A UTF-16 surrogate pair: one code point above U+FFFF. */
                long lo = -1;
                if (p->i + 2 <= p->len && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                    p->i += 2;
                    lo = hex4(p);
                }
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    why = "\\u escape: a high surrogate without its low one";
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                why = "\\u escape: a low surrogate without its high one";
            }
            if (cp < 0)
                why = "bad \\u escape (want 4 hex digits)";
            else if (cp == 0)
                why = "\\u0000 is not accepted in a string";
            if (why != NULL) {
                dp_jb_free(&b);
                return fail(p, why);
            }
            put_utf8(&b, (unsigned)cp);
        } else {
            dp_jb_free(&b);
            return fail(p, "bad escape in a string");
        }
    }
    dp_jb_free(&b);
    return fail(p, "unterminated string");
}

/* How many decimal digits start at s[i]. */
static size_t digits(const parser_t *p, size_t i)
{
    size_t k = i;
    while (k < p->len && p->s[k] >= '0' && p->s[k] <= '9')
        k++;
    return k - i;
}

static int parse_scalar(parser_t *p, dp_value_t *v)
{
    if (p->i >= p->len)
        return fail(p, "expected a value");
    char c = p->s[p->i];
    if (c == '"') {
        char *s = NULL;
        int rc = parse_string(p, &s);
        if (rc == 0)
            *v = (dp_value_t){.type = DP_STR, .u.s = s};
        return rc;
    }
    static const struct {
        const char *word;
        int type;
        bool b;
    } words[] = {{"true", DP_BOOL, true}, {"false", DP_BOOL, false}, {"null", DP_NIL, false}};
    for (size_t k = 0; k < DP_ARRAY_LEN(words); k++) {
        size_t n = strlen(words[k].word);
        if (p->len - p->i >= n && memcmp(p->s + p->i, words[k].word, n) == 0) {
            p->i += n;
            *v = (dp_value_t){.type = (dp_vtype_t)words[k].type, .u.b = words[k].b};
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        /* RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, and finite. */
        const char *s = p->s;
        size_t i = p->i + (c == '-'), d = digits(p, i);
        if (d == 0 || (d > 1 && s[i] == '0'))
            return fail(p, "bad number (digits, without leading zeros)");
        i += d;
        if (i < p->len && s[i] == '.') {
            if ((d = digits(p, i + 1)) == 0)
                return fail(p, "bad number (digits after the decimal point)");
            i += 1 + d;
        }
        if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
            i += i + 1 < p->len && (s[i + 1] == '+' || s[i + 1] == '-') ? 2 : 1;
            if ((d = digits(p, i)) == 0)
                return fail(p, "bad number (digits after the exponent)");
            i += d;
        }
        char num[64];
        size_t n = i - p->i;
        if (n >= sizeof num)
            return fail(p, "number longer than 63 characters");
        memcpy(num, s + p->i, n);
        num[n] = '\0';
        double x = strtod(num, NULL);
        if (!isfinite(x))
            return fail(p, "number out of range");
        p->i = i;
        *v = dp_num(x);
        return 0;
    }
    if (c == '{' || c == '[')
        return fail(p, "nested objects and arrays are not accepted here");
    return fail(p, "expected a string, number, true, false or null");
}

int dp_json_parse_object(const char *s, size_t len, dp_jobj_t *out, char **err)
{
    parser_t p = {.s = s, .len = len, .err = err};
    *out = (dp_jobj_t){0};
    skip_ws(&p);
    if (p.i >= p.len || s[p.i] != '{')
        return fail(&p, "expected an object");
    p.i++;
    skip_ws(&p);
    int rc = 0;
    if (p.i < p.len && s[p.i] == '}') {
        p.i++;
    } else {
        for (;;) {
            skip_ws(&p);
            char *key = NULL;
            if ((rc = parse_string(&p, &key)) < 0)
                break;
            out->f = dp_xrealloc(out->f, sizeof *out->f * (size_t)(out->n + 1));
            out->f[out->n++] = (dp_jfield_t){.key = key};
            skip_ws(&p);
            if (p.i >= p.len || s[p.i] != ':') {
                rc = fail(&p, "expected ':'");
                break;
            }
            p.i++;
            skip_ws(&p);
            if ((rc = parse_scalar(&p, &out->f[out->n - 1].v)) < 0)
                break;
            skip_ws(&p);
            if (p.i < p.len && s[p.i] == ',') {
                p.i++;
                continue;
            }
            if (p.i < p.len && s[p.i] == '}') {
                p.i++;
                break;
            }
            rc = fail(&p, "expected ',' or '}'");
            break;
        }
    }
    if (rc == 0) {
        skip_ws(&p);
        if (p.i != p.len)
            rc = fail(&p, "trailing data after the object");
    }
    if (rc < 0)
        dp_jobj_free(out);
    return rc;
}

void dp_jobj_free(dp_jobj_t *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->f[i].key);
        if (o->f[i].v.type == DP_STR)
            free(o->f[i].v.u.s);
    }
    free(o->f);
    *o = (dp_jobj_t){0};
}

const dp_value_t *dp_jobj_get(const dp_jobj_t *o, const char *key)
{
    for (int i = 0; i < o->n; i++) {
        if (strcmp(o->f[i].key, key) == 0)
            return &o->f[i].v;
    }
    return NULL;
}
