#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

const char *dp_strerror(int err)
{
    switch (err) {
    case DP_OK:
        return "success";
    case DP_EINVAL:
        return "invalid argument";
    case DP_ENOENT:
        return "not found";
    case DP_EEXIST:
        return "already exists";
    case DP_ENOMEM:
        return "out of memory";
    case DP_ESCRIPT:
        return "script error";
    case DP_EBUDGET:
        return "budget exceeded";
    case DP_ESTATE:
        return "invalid state";
    case DP_EIO:
        return "i/o error";
    default:
        return err < 0 && err > -4096 ? uv_strerror(err) : "unknown error";
    }
}

static char *vformat(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    char *s = dp_xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

int dp_fail(char **err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        char *msg = vformat(fmt, ap);
        va_end(ap);
        free(*err);
        *err = msg;
    }
    return code;
}

void *dp_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fputs("doppel: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *dp_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fputs("doppel: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *dp_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fputs("doppel: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *dp_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(dp_xmalloc(n), s, n);
}

char *dp_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}
