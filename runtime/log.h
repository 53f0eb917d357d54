/* Structured log lines to stderr: "TIME LEVEL [twin] message".
 *
 * The time printed is the plant clock's time when one is attached (so a replay
 * in virtual time logs simulated times), the wall clock otherwise. */
#ifndef DP_LOG_H
#define DP_LOG_H

#include "common.h"

typedef enum { DP_LOG_DEBUG, DP_LOG_INFO, DP_LOG_WARN, DP_LOG_ERROR, DP_LOG_OFF } dp_log_level_t;

struct dp_clock;

/* Parses "debug", "info", "warn", "error" or "off". Returns DP_EINVAL otherwise. */
int dp_log_parse_level(const char *s, dp_log_level_t *out);
void dp_log_set_level(dp_log_level_t level);
dp_log_level_t dp_log_get_level(void);
/* Attach a clock whose time is printed (NULL: wall clock). Not owned. */
void dp_log_set_clock(struct dp_clock *clock);

/* Called for every line that is printed, after it is written to stderr; the
 * REPL and tests use it to see recent lines. `line` is valid during the call. */
typedef void (*dp_log_cb)(dp_log_level_t level, const char *twin, const char *msg, void *ud);
void dp_log_set_hook(dp_log_cb cb, void *ud);
/* Further hooks, called after the one set above in the order added (at most
 * DP_LOG_MAX_HOOKS). Adding returns DP_ENOMEM when full; removing a hook that
 * is not there does nothing. Loop thread only. */
#define DP_LOG_MAX_HOOKS 8
int dp_log_add_hook(dp_log_cb cb, void *ud);
void dp_log_remove_hook(dp_log_cb cb, void *ud);

/* twin may be NULL for plant-level lines. */
void dp_log(dp_log_level_t level, const char *twin, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define dp_log_debug(twin, ...) dp_log(DP_LOG_DEBUG, twin, __VA_ARGS__)
#define dp_log_info(twin, ...)  dp_log(DP_LOG_INFO, twin, __VA_ARGS__)
#define dp_log_warn(twin, ...)  dp_log(DP_LOG_WARN, twin, __VA_ARGS__)
#define dp_log_error(twin, ...) dp_log(DP_LOG_ERROR, twin, __VA_ARGS__)

#endif
