#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"

static dp_log_level_t g_level = DP_LOG_INFO;
static dp_clock_t *g_clock;
static dp_log_cb g_hook;
static void *g_hook_ud;
static struct {
    dp_log_cb cb;
    void *ud;
} g_hooks[DP_LOG_MAX_HOOKS];
static int g_nhooks;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int dp_log_parse_level(const char *s, dp_log_level_t *out)
{
    for (int i = 0; i <= DP_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (dp_log_level_t)i;
            return 0;
        }
    }
    return DP_EINVAL;
}

void dp_log_set_level(dp_log_level_t level)
{
    g_level = level;
}

dp_log_level_t dp_log_get_level(void)
{
    return g_level;
}

void dp_log_set_clock(dp_clock_t *clock)
{
    g_clock = clock;
}

void dp_log_set_hook(dp_log_cb cb, void *ud)
{
    g_hook = cb;
    g_hook_ud = ud;
}

int dp_log_add_hook(dp_log_cb cb, void *ud)
{
    if (g_nhooks == DP_LOG_MAX_HOOKS)
        return DP_ENOMEM;
    g_hooks[g_nhooks].cb = cb;
    g_hooks[g_nhooks].ud = ud;
    g_nhooks++;
    return 0;
}

void dp_log_remove_hook(dp_log_cb cb, void *ud)
{
    for (int i = 0; i < g_nhooks; i++) {
        if (g_hooks[i].cb == cb && g_hooks[i].ud == ud) {
            memmove(&g_hooks[i], &g_hooks[i + 1], sizeof g_hooks[0] * (size_t)(g_nhooks - i - 1));
            g_nhooks--;
            return;
        }
    }
}

void dp_log(dp_log_level_t level, const char *twin, const char *fmt, ...)
{
    if (level < g_level || level >= DP_LOG_OFF)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char ts[40];
    dp_time_format(g_clock != NULL ? dp_clock_now(g_clock) : dp_wall_now(), ts, sizeof ts);
    static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    /* One fprintf per line, so concurrent writers never interleave within a line. */
    if (twin != NULL)
        fprintf(stderr, "%s %s [%s] %s\n", ts, tags[level], twin, msg);
    else
        fprintf(stderr, "%s %s %s\n", ts, tags[level], msg);
    if (g_hook != NULL)
        g_hook(level, twin, msg, g_hook_ud);
    for (int i = 0; i < g_nhooks; i++)
        g_hooks[i].cb(level, twin, msg, g_hooks[i].ud);
}
