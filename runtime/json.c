#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void dp_jb_str(dp_jbuf_t *b, const char *s)
{
    if (s == NULL) {
        dp_jb_puts(b, "null");
        return;
    }
    reserve(b, strlen(s) + 2);
    dp_jb_raw(b, "\"", 1);
    const char *run = s;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c >= 0x20 && *c != '"' && *c != '\\')
            continue;
        dp_jb_raw(b, run, (size_t)((const char *)c - run));
        switch (*c) {
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
            dp_jb_printf(b, "\\u%04x", *c);
        }
        run = (const char *)c + 1;
    }
    dp_jb_puts(b, run);
    dp_jb_raw(b, "\"", 1);
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
        } else if (e == 'u' && p->i + 4 <= p->len) {
            char hex[5] = {0};
            memcpy(hex, p->s + p->i, 4);
            char *end = NULL;
            unsigned long cp = strtoul(hex, &end, 16);
            if (end != hex + 4 || cp == 0) {
                dp_jb_free(&b);
                return fail(p, "bad \\u escape");
            }
            p->i += 4;
            put_utf8(&b, (unsigned)cp);
        } else {
            dp_jb_free(&b);
            return fail(p, "bad escape in a string");
        }
    }
    dp_jb_free(&b);
    return fail(p, "unterminated string");
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
        char num[64];
        size_t n = 0;
        while (p->i + n < p->len && n < sizeof num - 1 &&
               strchr("0123456789+-.eE", p->s[p->i + n]) != NULL && p->s[p->i + n] != '\0') {
            num[n] = p->s[p->i + n];
            n++;
        }
        num[n] = '\0';
        char *end = NULL;
        double d = strtod(num, &end);
        if (end != num + n || n == 0)
            return fail(p, "bad number");
        p->i += n;
        *v = dp_num(d);
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
