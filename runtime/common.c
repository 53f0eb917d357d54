#include "common.h"

#include <arpa/inet.h>
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

int dp_tag_pattern_check(const char *p, char **err)
{
    if (strcmp(p, "*") == 0)
        return 0;
    const char *dot = strchr(p, '.');
    if (dot == NULL || dot == p || dot[1] == '\0' || strchr(dot + 1, '.') != NULL ||
        (strchr(p, '*') != NULL && strcmp(dot + 1, "*") != 0))
        return dp_fail(err, DP_EINVAL, "\"%s\": expected \"twin.tag\", \"twin.*\" or \"*\"", p);
    return 0;
}

bool dp_tag_pattern_match(const char *pattern, const char *tag)
{
    if (strcmp(pattern, "*") == 0 || strcmp(pattern, tag) == 0)
        return true;
    size_t n = strlen(pattern);
    return n >= 2 && strcmp(pattern + n - 2, ".*") == 0 && strncmp(pattern, tag, n - 1) == 0;
}

bool dp_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

void dp_sockaddr_name(const struct sockaddr *sa, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        uv_ip4_name((const struct sockaddr_in *)sa, ip, sizeof ip);
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)sa, ip, sizeof ip);
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    } else {
        snprintf(buf, size, "?");
        return;
    }
    snprintf(buf, size, "%s:%d", ip, port);
}
