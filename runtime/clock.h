/* The clock: the only source of time for twin-facing code, and its timers.
 *
 * A real clock reads the wall clock and fires timers from a libuv timer on the
 * loop. A virtual clock is a discrete-event simulator: time stands still until
 * the owner advances it, and dp_clock_run() fires timers in timestamp order
 * (ties in the order they were started) without waiting. Timers are the same
 * objects in both modes, so the code above cannot tell the difference. */
#ifndef DP_CLOCK_H
#define DP_CLOCK_H

#include <stdbool.h>
#include <uv.h>

#include "common.h"

typedef struct dp_clock dp_clock_t;
typedef struct dp_timer dp_timer_t;
typedef void (*dp_timer_cb)(dp_timer_t *timer);

/* Embed in the owner's memory; initialise with dp_timer_init(). Fields after
 * `data` are private. A stopped timer may be freed at any time, including
 * from inside its own callback. */
struct dp_timer {
    void *data;
    dp_clock_t *clock;
    dp_timer_cb cb;
    dp_time_t due;
    dp_time_t repeat;
    uint64_t seq;
    int heap_index; /* -1 when not active */
};

/* A real clock driven by `loop`. Free with dp_clock_free(); its libuv handle
 * is closed then, so run the loop once more before uv_loop_close(). */
dp_clock_t *dp_clock_new_real(uv_loop_t *loop);
/* A virtual clock whose time starts at `start`. */
dp_clock_t *dp_clock_new_virtual(dp_time_t start);
/* Accepts NULL. Active timers are forgotten (not called). */
void dp_clock_free(dp_clock_t *clock);

bool dp_clock_is_virtual(const dp_clock_t *clock);
dp_time_t dp_clock_now(const dp_clock_t *clock);
/* Number of active timers. */
size_t dp_clock_pending(const dp_clock_t *clock);

/* Virtual clock only: fire, in order, every timer due at or before `until`,
 * setting the time to each timer's due time before its callback; `after` (may
 * be NULL) is called after each callback, which is where the plant delivers
 * the store's change notifications. Ends with the time set to `until`.
 * Returns the number of callbacks fired, or DP_ESTATE on a real clock. */
typedef void (*dp_clock_step_cb)(dp_clock_t *clock, void *ud);
int64_t dp_clock_run(dp_clock_t *clock, dp_time_t until, dp_clock_step_cb after, void *ud);
/* Virtual clock only: the due time of the earliest timer; DP_ENOENT if none. */
int dp_clock_next_due(const dp_clock_t *clock, dp_time_t *due);
/* Virtual clock only: set the time forward to t (t < now is DP_EINVAL). */
int dp_clock_set(dp_clock_t *clock, dp_time_t t);

void dp_timer_init(dp_clock_t *clock, dp_timer_t *timer);
/* Starts (or restarts) the timer to fire `timeout` microseconds from now
 * (>= 0), then every `repeat` microseconds if repeat > 0. A repeating timer
 * keeps its phase: it is due at start + timeout + k * repeat. */
int dp_timer_start(dp_timer_t *timer, dp_timer_cb cb, dp_time_t timeout, dp_time_t repeat);
/* Idempotent. */
void dp_timer_stop(dp_timer_t *timer);
bool dp_timer_active(const dp_timer_t *timer);

/* Durations: a sequence of <number><unit>, units us, ms, s, min, h, d
 * ("250ms", "5s", "10min", "1h30min", "7d", "1.5s"). A bare number is
 * seconds. Negative or empty durations are refused. On failure *err says what
 * was wrong (caller frees). */
int dp_duration_parse(const char *s, dp_time_t *out, char **err);
/* Writes the shortest exact form ("1h30min", "250ms", "0s") into buf. */
void dp_duration_format(dp_time_t d, char *buf, size_t size);

/* Formats t as ISO 8601 UTC with milliseconds ("2026-11-25T11:05:10.123Z"). */
void dp_time_format(dp_time_t t, char *buf, size_t size);
/* Parses ISO 8601 UTC ("2026-11-25T11:05:10Z", optional fraction, "Z" or no
 * zone meaning UTC) or a number of seconds since the epoch. */
int dp_time_parse(const char *s, dp_time_t *out, char **err);
/* The wall clock, for code that is not twin-facing (logs, metrics). */
dp_time_t dp_wall_now(void);

#endif
