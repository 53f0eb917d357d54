/* The clock and its timers; see clock.h for the contract.
 *
 * Active timers live in a binary min-heap ordered by (due, seq). seq is taken
 * from a per-clock counter at every start and every repeat, so timers due at
 * the same instant fire in the order they were (re)scheduled. The caller
 * embeds dp_timer_t, so starting a timer never allocates beyond the heap
 * array itself. */
#include "clock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dp_clock {
    bool is_virtual;
    /* Set by dp_clock_free(): the clock accepts no more timers and the
     * firing loops stop at the next check. */
    bool closing;
    /* Virtual: inside dp_clock_run(), so dp_clock_free() must defer the free
     * until the run loop has stopped using the clock. */
    bool running;
    /* Real: inside on_uv_timer(), so re-arming waits until the pass ends. */
    bool firing;
    /* Real: whether `uvt` is started, and for which due time. */
    bool armed;
    dp_time_t armed_due;
    dp_time_t now; /* virtual time; unused on a real clock */
    uint64_t seq;
    dp_timer_t **heap;
    size_t len, cap;
    uv_loop_t *loop;
    uv_timer_t uvt;
};

/* ---- The heap ---------------------------------------------------------- */

static bool timer_before(const dp_timer_t *a, const dp_timer_t *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(dp_clock_t *c, size_t i, dp_timer_t *t)
{
    c->heap[i] = t;
    t->heap_index = (int)i;
}

static void heap_up(dp_clock_t *c, size_t i)
{
    dp_timer_t *t = c->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, c->heap[parent]))
            break;
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, t);
}

static void heap_down(dp_clock_t *c, size_t i)
{
    dp_timer_t *t = c->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= c->len)
            break;
        if (child + 1 < c->len && timer_before(c->heap[child + 1], c->heap[child]))
            child++;
        if (!timer_before(c->heap[child], t))
            break;
        heap_set(c, i, c->heap[child]);
        i = child;
    }
    heap_set(c, i, t);
}

static void heap_push(dp_clock_t *c, dp_timer_t *t)
{
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->heap = dp_xrealloc(c->heap, c->cap * sizeof *c->heap);
    }
    c->heap[c->len++] = t;
    heap_up(c, c->len - 1);
}

static void heap_remove(dp_clock_t *c, dp_timer_t *t)
{
    size_t i = (size_t)t->heap_index;
    t->heap_index = -1;
    c->len--;
    if (i == c->len)
        return;
    /* Move the last element into the hole; it may belong above or below. */
    heap_set(c, i, c->heap[c->len]);
    if (i > 0 && timer_before(c->heap[i], c->heap[(i - 1) / 2]))
        heap_up(c, i);
    else
        heap_down(c, i);
}

static dp_timer_t *heap_head(const dp_clock_t *c)
{
    return c->len > 0 ? c->heap[0] : NULL;
}

/* ---- Scheduling shared by both modes ------------------------------------ */

static void schedule(dp_clock_t *c, dp_timer_t *t, dp_time_t due)
{
    t->due = due;
    t->seq = ++c->seq;
    heap_push(c, t);
}

/* Puts a repeating timer that has just been popped back in the heap. Its next
 * due time keeps the phase, and periods that already lie at or before `now`
 * are skipped so a clock that fell behind fires once, not in a burst. */
static void reschedule_repeat(dp_clock_t *c, dp_timer_t *t, dp_time_t now)
{
    dp_time_t next;
    if (__builtin_add_overflow(t->due, t->repeat, &next))
        return; /* beyond the end of time: it can never fire again */
    if (next <= now) {
        dp_time_t periods = (now - t->due) / t->repeat + 1;
        if (__builtin_mul_overflow(periods, t->repeat, &next) ||
            __builtin_add_overflow(t->due, next, &next))
            return;
    }
    schedule(c, t, next);
}

/* ---- Real clock --------------------------------------------------------- */

static void arm(dp_clock_t *c, bool after_pass);

/* Fires every timer that is due by the wall clock and was started before this
 * pass. Timers started by the callbacks wait for the next pass, so a callback
 * that keeps restarting a zero timeout cannot starve the loop's I/O. */
static void on_uv_timer(uv_timer_t *handle)
{
    dp_clock_t *c = handle->data;
    c->armed = false;
    c->firing = true;
    dp_time_t now = dp_wall_now();
    uint64_t seq_limit = c->seq;
    dp_timer_t *t;
    while ((t = heap_head(c)) != NULL && t->seq <= seq_limit) {
        /* Callbacks take time; look at the clock again before giving up, so
         * a timer that became due meanwhile does not wait for another pass. */
        if (t->due > now && t->due > (now = dp_wall_now()))
            break;
        heap_remove(c, t);
        /* Reschedule before the callback, which may then stop, restart or
         * free the timer; the timer is not touched once it returns. */
        if (t->repeat > 0)
            reschedule_repeat(c, t, now);
        t->cb(t);
        if (c->closing)
            return; /* the clock memory stays valid until on_uv_close() */
    }
    c->firing = false;
    arm(c, true);
}

/* Starts the libuv timer for the head's due time, rounding up to whole
 * milliseconds. libuv measures timeouts from the loop's cached monotonic
 * time, so the timer may still fire a little before the wall clock reaches
 * the due time; on_uv_timer() then fires nothing and simply re-arms. After a
 * pass (`after_pass`) the timeout is at least 1 ms: a head that is already
 * due then was nearly always started during the pass, and libuv 1.44 would
 * run a zero timeout again within the same timers phase, never reaching I/O. */
static void arm(dp_clock_t *c, bool after_pass)
{
    if (c->is_virtual || c->closing || c->firing)
        return;
    dp_timer_t *head = heap_head(c);
    if (head == NULL) {
        /* Stopping matters: an idle started handle would keep the loop alive. */
        if (c->armed)
            uv_timer_stop(&c->uvt);
        c->armed = false;
        return;
    }
    if (c->armed && c->armed_due == head->due)
        return;
    uv_update_time(c->loop);
    dp_time_t now = dp_wall_now();
    uint64_t ms = 0;
    if (head->due > now)
        ms = (uint64_t)(head->due - now + DP_US_PER_MS - 1) / DP_US_PER_MS;
    if (ms == 0 && after_pass)
        ms = 1;
    uv_timer_start(&c->uvt, on_uv_timer, ms, 0);
    c->armed = true;
    c->armed_due = head->due;
}

static void on_uv_close(uv_handle_t *handle)
{
    free(handle->data);
}

/* ---- The public API ----------------------------------------------------- */

dp_clock_t *dp_clock_new_real(uv_loop_t *loop)
{
    dp_clock_t *c = dp_xcalloc(1, sizeof *c);
    c->loop = loop;
    int rc = uv_timer_init(loop, &c->uvt);
    if (rc != 0) {
        free(c);
        return NULL;
    }
    c->uvt.data = c;
    return c;
}

dp_clock_t *dp_clock_new_virtual(dp_time_t start)
{
    dp_clock_t *c = dp_xcalloc(1, sizeof *c);
    c->is_virtual = true;
    c->now = start;
    return c;
}

void dp_clock_free(dp_clock_t *clock)
{
    if (clock == NULL || clock->closing)
        return;
    clock->closing = true;
    /* Mark the forgotten timers inactive so their owners may still call
     * dp_timer_stop() on them (a no-op) while tearing down. */
    for (size_t i = 0; i < clock->len; i++)
        clock->heap[i]->heap_index = -1;
    free(clock->heap);
    clock->heap = NULL;
    clock->len = clock->cap = 0;
    if (!clock->is_virtual) {
        uv_timer_stop(&clock->uvt);
        uv_close((uv_handle_t *)&clock->uvt, on_uv_close);
    } else if (!clock->running) {
        free(clock);
    }
    /* A virtual clock freed from inside dp_clock_run() is freed by the run. */
}

bool dp_clock_is_virtual(const dp_clock_t *clock)
{
    return clock->is_virtual;
}

dp_time_t dp_clock_now(const dp_clock_t *clock)
{
    return clock->is_virtual ? clock->now : dp_wall_now();
}

size_t dp_clock_pending(const dp_clock_t *clock)
{
    return clock->len;
}

int64_t dp_clock_run(dp_clock_t *clock, dp_time_t until, dp_clock_step_cb after, void *ud)
{
    if (!clock->is_virtual || clock->running || clock->closing)
        return DP_ESTATE;
    if (until < clock->now)
        return DP_EINVAL;
    clock->running = true;
    int64_t fired = 0;
    dp_timer_t *t;
    while ((t = heap_head(clock)) != NULL && t->due <= until) {
        heap_remove(clock, t);
        /* A timer can only be overdue after dp_clock_set() jumped past it;
         * it then fires at the current time, as time never runs backwards. */
        if (t->due > clock->now)
            clock->now = t->due;
        if (t->repeat > 0)
            reschedule_repeat(clock, t, clock->now);
        t->cb(t);
        fired++;
        if (clock->closing)
            break;
        if (after != NULL) {
            after(clock, ud);
            if (clock->closing)
                break;
        }
    }
    clock->running = false;
    if (clock->closing) {
        free(clock);
        return fired;
    }
    clock->now = until;
    return fired;
}

int dp_clock_next_due(const dp_clock_t *clock, dp_time_t *due)
{
    if (!clock->is_virtual)
        return DP_ESTATE;
    dp_timer_t *head = heap_head(clock);
    if (head == NULL)
        return DP_ENOENT;
    *due = head->due;
    return DP_OK;
}

int dp_clock_set(dp_clock_t *clock, dp_time_t t)
{
    /* Moving the time inside a run would let later timers fire in the past. */
    if (!clock->is_virtual || clock->running)
        return DP_ESTATE;
    if (t < clock->now)
        return DP_EINVAL;
    clock->now = t;
    return DP_OK;
}

void dp_timer_init(dp_clock_t *clock, dp_timer_t *timer)
{
    /* `data` is the owner's and is left alone, so it may be set either
     * before or after this call. */
    timer->clock = clock;
    timer->cb = NULL;
    timer->due = 0;
    timer->repeat = 0;
    timer->seq = 0;
    timer->heap_index = -1;
}

int dp_timer_start(dp_timer_t *timer, dp_timer_cb cb, dp_time_t timeout, dp_time_t repeat)
{
    dp_clock_t *c = timer->clock;
    if (c == NULL || cb == NULL || timeout < 0 || repeat < 0)
        return DP_EINVAL;
    if (c->closing)
        return DP_ESTATE;
    dp_time_t due;
    if (__builtin_add_overflow(dp_clock_now(c), timeout, &due))
        return DP_EINVAL;
    if (timer->heap_index >= 0)
        heap_remove(c, timer);
    timer->cb = cb;
    timer->repeat = repeat;
    schedule(c, timer, due);
    arm(c, false);
    return DP_OK;
}

void dp_timer_stop(dp_timer_t *timer)
{
    if (timer->heap_index < 0)
        return;
    heap_remove(timer->clock, timer);
    arm(timer->clock, false);
}

bool dp_timer_active(const dp_timer_t *timer)
{
    return timer->heap_index >= 0;
}

/* ---- Decimal numbers ---------------------------------------------------- */

/* The 128-bit product keeps fraction scaling exact for every unit up to a day. */
__extension__ typedef unsigned __int128 dp_u128;

enum { NUM_OK = 0, NUM_NONE = -1, NUM_NODIGITS = -2, NUM_OVERFLOW = -3 };

/* Reads the digits after a decimal point at *pp as a fraction of `unit`
 * microseconds, rounded to the nearest microsecond. 18 digits are far finer
 * than a microsecond of a day, so later ones are read but cannot matter. */
static int64_t parse_fraction(const char **pp, int64_t unit)
{
    const char *p = *pp;
    uint64_t frac = 0, scale = 1;
    for (int n = 0; isdigit((unsigned char)*p); p++, n++) {
        if (n < 18) {
            frac = frac * 10 + (uint64_t)(*p - '0');
            scale *= 10;
        }
    }
    *pp = p;
    return (int64_t)(((dp_u128)frac * (uint64_t)unit + scale / 2) / scale);
}

/* Parses digits[.digits] at *pp as a count of `unit` microseconds and stores
 * the value in microseconds. Advances *pp past what it read, also on
 * overflow, so the caller can tell where the number ended. */
static int parse_decimal(const char **pp, int64_t unit, int64_t *out)
{
    const char *p = *pp;
    if (!isdigit((unsigned char)*p))
        return NUM_NONE;
    int64_t whole = 0;
    bool overflow = false;
    for (; isdigit((unsigned char)*p); p++) {
        int d = *p - '0';
        if (whole > (INT64_MAX - d) / 10)
            overflow = true;
        else
            whole = whole * 10 + d;
    }
    int64_t part = 0;
    if (*p == '.') {
        if (!isdigit((unsigned char)p[1]))
            return NUM_NODIGITS;
        p++;
        part = parse_fraction(&p, unit);
    }
    *pp = p;
    int64_t us;
    if (overflow || __builtin_mul_overflow(whole, unit, &us) ||
        __builtin_add_overflow(us, part, &us))
        return NUM_OVERFLOW;
    *out = us;
    return NUM_OK;
}

/* ---- Durations ---------------------------------------------------------- */

static const struct {
    const char *name;
    int64_t us;
} duration_units[] = {
    {"d", 86400 * DP_US_PER_SEC}, {"h", 3600 * DP_US_PER_SEC}, {"min", 60 * DP_US_PER_SEC},
    {"s", DP_US_PER_SEC},         {"ms", DP_US_PER_MS},        {"us", 1},
};

#define UNIT_HINT "(use us, ms, s, min, h, d)"

static int duration_fail(char **err, const char *s, const char *why)
{
    return dp_fail(err, DP_EINVAL, "bad duration \"%s\": %s", s, why);
}

int dp_duration_parse(const char *s, dp_time_t *out, char **err)
{
    if (s == NULL)
        return dp_fail(err, DP_EINVAL, "bad duration: missing");
    if (*s == '\0')
        return duration_fail(err, s, "empty (write e.g. \"5s\" or \"250ms\")");
    if (*s == '-')
        return duration_fail(err, s, "negative durations are not allowed");
    if (strpbrk(s, " \t\n\r\v\f") != NULL)
        return duration_fail(err, s, "spaces are not allowed (write e.g. \"1h30min\")");

    const char *p = s;
    int64_t total = 0;
    while (*p != '\0') {
        /* Find the extent of the number and of the unit first, as the unit
         * that scales the number comes after it. */
        const char *num = p;
        int64_t v;
        int rc = parse_decimal(&p, 1, &v);
        if (rc == NUM_NONE)
            return dp_fail(err, DP_EINVAL, "bad duration \"%s\": expected a number at \"%s\"", s,
                           p);
        if (rc == NUM_NODIGITS)
            return duration_fail(err, s, "expected digits after \".\"");
        const char *unit = p;
        while (isalpha((unsigned char)*p))
            p++;
        size_t unit_len = (size_t)(p - unit);
        int64_t unit_us = 0;
        if (unit_len == 0) {
            if (*p != '\0')
                return dp_fail(err, DP_EINVAL, "bad duration \"%s\": unexpected \"%s\"", s, p);
            if (num != s)
                return dp_fail(err, DP_EINVAL,
                               "bad duration \"%s\": missing unit after \"%s\" " UNIT_HINT, s, num);
            unit_us = DP_US_PER_SEC; /* a bare number is seconds */
        }
        for (size_t i = 0; i < DP_ARRAY_LEN(duration_units) && unit_us == 0; i++) {
            if (strlen(duration_units[i].name) == unit_len &&
                memcmp(duration_units[i].name, unit, unit_len) == 0)
                unit_us = duration_units[i].us;
        }
        if (unit_us == 0)
            return dp_fail(err, DP_EINVAL, "bad duration \"%s\": unknown unit \"%.*s\" " UNIT_HINT,
                           s, (int)unit_len, unit);
        rc = parse_decimal(&num, unit_us, &v);
        if (rc == NUM_OVERFLOW || __builtin_add_overflow(total, v, &total))
            return duration_fail(err, s, "too long");
    }
    *out = total;
    return DP_OK;
}

void dp_duration_format(dp_time_t d, char *buf, size_t size)
{
    if (size == 0)
        return;
    char tmp[64];
    size_t n = 0;
    uint64_t rest = (uint64_t)d;
    if (d < 0) {
        tmp[n++] = '-';
        rest = 0 - rest; /* well defined for INT64_MIN too */
    }
    if (rest == 0) {
        n += (size_t)snprintf(tmp + n, sizeof tmp - n, "0s");
    } else {
        for (size_t i = 0; i < DP_ARRAY_LEN(duration_units); i++) {
            uint64_t u = (uint64_t)duration_units[i].us;
            if (rest >= u) {
                n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%llu%s",
                                      (unsigned long long)(rest / u), duration_units[i].name);
                rest %= u;
            }
        }
    }
    snprintf(buf, size, "%s", tmp);
}

/* ---- Timestamps --------------------------------------------------------- */

void dp_time_format(dp_time_t t, char *buf, size_t size)
{
    if (size == 0)
        return;
    /* Floor division, so times before 1970 still print the right second. */
    int64_t secs = t / DP_US_PER_SEC;
    int64_t us = t % DP_US_PER_SEC;
    if (us < 0) {
        secs--;
        us += DP_US_PER_SEC;
    }
    time_t tt = (time_t)secs;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL) {
        snprintf(buf, size, "(time %lld us)", (long long)t);
        return;
    }
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(us / DP_US_PER_MS));
}

/* Reads exactly `n` digits at *pp. */
static bool read_digits(const char **pp, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*pp)[i]))
            return false;
        v = v * 10 + ((*pp)[i] - '0');
    }
    *pp += n;
    *out = v;
    return true;
}

static bool expect(const char **pp, char c)
{
    if (**pp != c)
        return false;
    (*pp)++;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

#define TIME_HINT "expected ISO 8601 UTC like \"2026-11-25T11:05:10Z\" or seconds since the epoch"

static int parse_epoch_seconds(const char *s, dp_time_t *out, char **err)
{
    const char *p = s;
    bool neg = expect(&p, '-');
    int64_t v;
    int rc = parse_decimal(&p, DP_US_PER_SEC, &v);
    if (rc == NUM_NONE || *p != '\0')
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": " TIME_HINT, s);
    if (rc == NUM_OVERFLOW)
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": out of range", s);
    *out = neg ? -v : v;
    return DP_OK;
}

int dp_time_parse(const char *s, dp_time_t *out, char **err)
{
    if (s == NULL)
        return dp_fail(err, DP_EINVAL, "bad time: missing");
    /* A date has a '-' after its four-digit year; anything else is a number. */
    size_t lead = strspn(s, "0123456789");
    if (lead != 4 || s[4] != '-')
        return parse_epoch_seconds(s, out, err);

    const char *p = s;
    int year, mon, day, hour, min, sec;
    if (!read_digits(&p, 4, &year) || !expect(&p, '-') || !read_digits(&p, 2, &mon) ||
        !expect(&p, '-') || !read_digits(&p, 2, &day) || !expect(&p, 'T') ||
        !read_digits(&p, 2, &hour) || !expect(&p, ':') || !read_digits(&p, 2, &min) ||
        !expect(&p, ':') || !read_digits(&p, 2, &sec))
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": " TIME_HINT, s);
    int64_t frac_us = 0;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return dp_fail(err, DP_EINVAL, "bad time \"%s\": expected digits after \".\"", s);
        frac_us = parse_fraction(&p, DP_US_PER_SEC);
    }
    if (*p == 'Z')
        p++;
    if (*p == '+' || *p == '-')
        return dp_fail(err, DP_EINVAL,
                       "bad time \"%s\": only UTC is supported (end with \"Z\" or nothing)", s);
    if (*p != '\0')
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": unexpected \"%s\" at the end", s, p);
    if (mon < 1 || mon > 12)
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": month %d is out of range", s, mon);
    if (day < 1 || day > days_in_month(year, mon))
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": day %d is out of range", s, day);
    if (hour > 23 || min > 59 || sec > 59)
        return dp_fail(err, DP_EINVAL, "bad time \"%s\": time of day is out of range", s);

    struct tm tm = {
        .tm_year = year - 1900,
        .tm_mon = mon - 1,
        .tm_mday = day,
        .tm_hour = hour,
        .tm_min = min,
        .tm_sec = sec,
    };
    /* The fields are validated, so -1 here is 1969-12-31T23:59:59, not an error. */
    time_t secs = timegm(&tm);
    *out = (dp_time_t)secs * DP_US_PER_SEC + frac_us;
    return DP_OK;
}

dp_time_t dp_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (dp_time_t)ts.tv_sec * DP_US_PER_SEC + ts.tv_nsec / 1000;
}
