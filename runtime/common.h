/* Types and error codes shared by every runtime module. */
#ifndef DP_COMMON_H
#define DP_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Time in microseconds since the Unix epoch (wall or virtual, see clock.h). */
typedef int64_t dp_time_t;

#define DP_US_PER_MS  INT64_C(1000)
#define DP_US_PER_SEC INT64_C(1000000)

/* Errors are negative ints; 0 is success. They do not overlap libuv's UV_E*
 * range in practice (libuv uses -errno values below 4096). */
enum {
    DP_OK = 0,
    DP_EINVAL = -10001,  /* malformed argument or input */
    DP_ENOENT = -10002,  /* no such tag, twin, file or name */
    DP_EEXIST = -10003,  /* name already taken */
    DP_ENOMEM = -10004,  /* allocation failed */
    DP_ESCRIPT = -10005, /* a Lua script failed (detail in err or the log) */
    DP_EBUDGET = -10006, /* instruction budget or memory cap exceeded */
    DP_ESTATE = -10007,  /* operation not valid in the current state */
    DP_EIO = -10008,     /* file or device I/O failed */
};

/* Returns a static description of a DP_E* or UV_E* code. */
const char *dp_strerror(int err);

/* Sets *err (when err is not NULL) to a malloc'd formatted message and returns
 * code. The caller frees *err. A helper for the "char **err" convention. */
int dp_fail(char **err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Allocation that aborts on out-of-memory: used for the runtime's own small
 * structures, where there is no sensible way to continue. Script memory goes
 * through the capped allocator in sandbox.c instead. */
void *dp_xmalloc(size_t n);
void *dp_xcalloc(size_t n, size_t size);
void *dp_xrealloc(void *p, size_t n);
char *dp_xstrdup(const char *s);
char *dp_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct sockaddr;
/* True for 127.0.0.0/8, ::1 and ::ffff:127.x.x.x: this machine, where plain
 * text and token-less access stay on the host. */
/* Patterns of tag names in access lists (an MQTT client's or a twin's
 * `commands`): "twin.tag", "twin.*" or "*". */
int dp_tag_pattern_check(const char *pattern, char **err);
bool dp_tag_pattern_match(const char *pattern, const char *tag);

bool dp_is_loopback(const struct sockaddr *sa);
/* "ADDRESS:PORT" of an IPv4 or IPv6 socket address ("?" for another kind). */
void dp_sockaddr_name(const struct sockaddr *sa, char *buf, size_t size);

#define DP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
