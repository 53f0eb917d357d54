/* Unit tests for timers on a real clock driven by a libuv loop. Every test
 * frees the clock, runs the loop so the clock's handle is closed, and checks
 * that the loop closes cleanly (no handle left behind).
 *
 * Timing assertions use lower bounds (a timer never fires early by the
 * clock's own time) and generous upper bounds, so a loaded machine does not
 * make them flaky. Timers that must never fire are set seconds ahead, so a
 * forgotten libuv timer shows up as a slow uv_run().
 *
 * No per-test .timeout: in Criterion 2.4.1 it leaks in the runner process
 * under LeakSanitizer with --jobs; ctest passes a global --timeout instead. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

#include "runtime/clock.h"

#define MS DP_US_PER_MS

typedef struct {
    uv_loop_t loop;
    dp_clock_t *clock;
    dp_time_t start;
} env_t;

static void env_init(env_t *e)
{
    cr_assert_eq(uv_loop_init(&e->loop), 0);
    e->clock = dp_clock_new_real(&e->loop);
    cr_assert_not_null(e->clock);
    e->start = dp_clock_now(e->clock);
}

/* Runs the loop until nothing is active; returns how long that took. */
static dp_time_t run_loop(env_t *e)
{
    dp_time_t before = dp_wall_now();
    uv_run(&e->loop, UV_RUN_DEFAULT);
    return dp_wall_now() - before;
}

/* The clock's handle is closed by dp_clock_free() and its memory released
 * in the close callback, which needs one more turn of the loop. */
static void env_close(env_t *e, bool free_clock)
{
    if (free_clock)
        dp_clock_free(e->clock);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&e->loop), 0, "a handle was left open");
}

/* ---- A log of firings ------------------------------------------------------ */

typedef struct {
    int id;
    dp_time_t at;  /* dp_clock_now() in the callback */
    dp_time_t due; /* the due time the timer had when it was started */
} fire_t;

static fire_t g_log[1024];
static size_t g_nlog;
static dp_time_t g_due[1024]; /* by timer id: the due time when started */

static void start_logged(dp_timer_t *t, int id, dp_timer_cb cb, dp_time_t timeout, dp_time_t repeat)
{
    t->data = (void *)(intptr_t)id;
    cr_assert_eq(dp_timer_start(t, cb, timeout, repeat), DP_OK);
    g_due[id] = t->due;
}

static void log_cb(dp_timer_t *t)
{
    cr_assert_lt(g_nlog, DP_ARRAY_LEN(g_log));
    int id = (int)(intptr_t)t->data;
    fire_t *f = &g_log[g_nlog++];
    f->id = id;
    f->at = dp_clock_now(t->clock);
    f->due = g_due[id];
    cr_assert_geq(f->at, f->due, "timer %d fired %lld us early", id, (long long)(f->due - f->at));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- Tests ----------------------------------------------------------------- */

Test(real_timer, basics)
{
    env_t e;
    env_init(&e);
    cr_assert_not(dp_clock_is_virtual(e.clock));
    dp_time_t wall = dp_wall_now();
    dp_time_t now = dp_clock_now(e.clock);
    cr_assert_geq(now, wall);
    cr_assert_lt(now - wall, 1000 * MS);
    cr_assert_eq(dp_clock_pending(e.clock), 0);
    /* The virtual-only operations are refused. */
    dp_time_t due;
    cr_assert_eq(dp_clock_run(e.clock, now + 1000 * MS, NULL, NULL), DP_ESTATE);
    cr_assert_eq(dp_clock_set(e.clock, now + 1000 * MS), DP_ESTATE);
    cr_assert_eq(dp_clock_next_due(e.clock, &due), DP_ESTATE);
    /* With no timers the loop has nothing to wait for. */
    cr_assert_lt(run_loop(&e), 1000 * MS);
    env_close(&e, true);
}

Test(real_timer, one_shot_20ms)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    start_logged(&t, 1, log_cb, 20 * MS, 0);
    cr_assert_geq(t.due, e.start + 20 * MS, "due = now + timeout");
    cr_assert_leq(t.due, dp_clock_now(e.clock) + 20 * MS, "due = now + timeout");
    cr_assert_eq(dp_clock_pending(e.clock), 1);
    dp_time_t took = run_loop(&e);
    cr_assert_eq(g_nlog, 1);
    cr_assert_geq(g_log[0].at, e.start + 20 * MS);
    cr_assert_lt(took, 2000 * MS);
    cr_assert_not(dp_timer_active(&t));
    cr_assert_eq(dp_clock_pending(e.clock), 0);
    env_close(&e, true);
}

Test(real_timer, zero_timeout)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    start_logged(&t, 1, log_cb, 0, 0);
    cr_assert_lt(run_loop(&e), 1000 * MS);
    cr_assert_eq(g_nlog, 1);
    env_close(&e, true);
}

/* A repeating timer stops itself on its fifth firing. */
static void stop_on_fifth_cb(dp_timer_t *t)
{
    log_cb(t);
    cr_assert(dp_timer_active(t));
    if (g_nlog == 5)
        dp_timer_stop(t);
}

Test(real_timer, repeat_then_stop_from_callback)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    start_logged(&t, 1, stop_on_fifth_cb, 10 * MS, 10 * MS);
    dp_time_t took = run_loop(&e);
    cr_assert_eq(g_nlog, 5);
    for (size_t k = 0; k < 5; k++)
        cr_assert_geq(g_log[k].at, e.start + (dp_time_t)(k + 1) * 10 * MS, "firing %zu", k);
    cr_assert_lt(took, 3000 * MS);
    cr_assert_not(dp_timer_active(&t));
    env_close(&e, true);
}

Test(real_timer, cancel_before_run)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    start_logged(&t, 1, log_cb, 5000 * MS, 0);
    dp_timer_stop(&t);
    dp_timer_stop(&t);
    cr_assert_eq(dp_clock_pending(e.clock), 0);
    cr_assert_lt(run_loop(&e), 2000 * MS, "the libuv timer was left armed");
    cr_assert_eq(g_nlog, 0);
    env_close(&e, true);
}

/* One timer cancels another, far later, one from its callback. */
static dp_timer_t *g_victim;

static void cancel_victim_cb(dp_timer_t *t)
{
    log_cb(t);
    dp_timer_stop(g_victim);
}

Test(real_timer, cancel_from_callback)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t killer, victim;
    dp_timer_init(e.clock, &killer);
    dp_timer_init(e.clock, &victim);
    g_victim = &victim;
    start_logged(&victim, 2, log_cb, 5000 * MS, 0);
    start_logged(&killer, 1, cancel_victim_cb, 10 * MS, 0);
    dp_time_t took = run_loop(&e);
    cr_assert_eq(g_nlog, 1);
    cr_assert_eq(g_log[0].id, 1);
    cr_assert_lt(took, 2000 * MS, "the libuv timer still waited for the cancelled one");
    cr_assert_not(dp_timer_active(&victim));

    /* Cancelling a timer due in the same pass also works. */
    g_nlog = 0;
    start_logged(&killer, 1, cancel_victim_cb, 10 * MS, 0);
    start_logged(&victim, 2, log_cb, 10 * MS, 0);
    /* Force the same due time (the wall clock moves between the starts);
     * lowering the later sibling's key to its parent's keeps the heap valid. */
    victim.due = killer.due;
    run_loop(&e);
    cr_assert_eq(g_nlog, 1);
    cr_assert_eq(g_log[0].id, 1);
    env_close(&e, true);
}

/* A one-shot timer that restarts itself three times, 5 ms apart. */
static void restart_self_cb(dp_timer_t *t)
{
    log_cb(t);
    if (g_nlog < 4)
        start_logged(t, 1, restart_self_cb, 5 * MS, 0);
}

Test(real_timer, restart_from_callback)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    start_logged(&t, 1, restart_self_cb, 5 * MS, 0);
    run_loop(&e);
    cr_assert_eq(g_nlog, 4);
    for (size_t k = 1; k < 4; k++)
        cr_assert_geq(g_log[k].at - g_log[k - 1].at, 5 * MS, "firing %zu", k);
    env_close(&e, true);
}

/* Restarting a pending timer moves it later, or earlier. */
static dp_timer_t *g_to_restart;

static void restart_other_cb(dp_timer_t *t)
{
    log_cb(t);
    start_logged(g_to_restart, 2, log_cb, 30 * MS, 0);
}

Test(real_timer, restart_pending)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t a, b;
    dp_timer_init(e.clock, &a);
    dp_timer_init(e.clock, &b);
    g_to_restart = &a;
    start_logged(&a, 2, log_cb, 10 * MS, 0);
    start_logged(&b, 1, restart_other_cb, 5 * MS, 0);
    run_loop(&e);
    cr_assert_eq(g_nlog, 2, "a fires once, at its new time only");
    cr_assert_eq(g_log[0].id, 1);
    cr_assert_eq(g_log[1].id, 2);
    cr_assert_geq(g_log[1].at, e.start + 35 * MS);

    /* Earlier: the clock must re-arm for the new head. */
    g_nlog = 0;
    dp_time_t now = dp_clock_now(e.clock);
    start_logged(&a, 1, log_cb, 5000 * MS, 0);
    start_logged(&a, 1, log_cb, 10 * MS, 0);
    cr_assert_eq(dp_clock_pending(e.clock), 1);
    cr_assert_lt(run_loop(&e), 2000 * MS);
    cr_assert_eq(g_nlog, 1);
    cr_assert_geq(g_log[0].at, now + 10 * MS);
    env_close(&e, true);
}

Test(real_timer, ordering)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    static const int timeouts[] = {30, 0, 20, 10, 10, 25, 5, 10};
    enum { N = DP_ARRAY_LEN(timeouts) };
    dp_timer_t t[N];
    for (int i = 0; i < N; i++) {
        dp_timer_init(e.clock, &t[i]);
        start_logged(&t[i], i, log_cb, timeouts[i] * MS, 0);
    }
    run_loop(&e);
    cr_assert_eq(g_nlog, N);
    /* By timeout, ties in start order. */
    static const int expected[] = {1, 6, 3, 4, 7, 2, 5, 0};
    for (int k = 0; k < N; k++)
        cr_assert_eq(g_log[k].id, expected[k], "firing %d", k);
    env_close(&e, true);
}

/* Equal due times (forced, as the wall clock moves between starts) fire in
 * start order. */
Test(real_timer, equal_due_fires_in_start_order)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t[5];
    static const int order[] = {4, 2, 0, 3, 1};
    dp_time_t due = dp_clock_now(e.clock) + 20 * MS;
    for (int i = 0; i < 5; i++) {
        dp_timer_init(e.clock, &t[order[i]]);
        dp_time_t timeout = due - dp_clock_now(e.clock);
        start_logged(&t[order[i]], order[i], log_cb, timeout, 0);
    }
    /* The clock may have ticked between now() calls; only check when equal. */
    bool all_equal = true;
    for (int i = 0; i < 5; i++)
        all_equal = all_equal && t[i].due == due;
    run_loop(&e);
    cr_assert_eq(g_nlog, 5);
    if (all_equal) {
        for (int k = 0; k < 5; k++)
            cr_assert_eq(g_log[k].id, order[k]);
    }
    for (int k = 1; k < 5; k++)
        cr_assert_leq(g_log[k - 1].due, g_log[k].due);
    env_close(&e, true);
}

static uint64_t g_rng = 0x2545f4914f6cdd1du;

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

Test(real_timer, many_timers_fire_in_due_order)
{
    enum { N = 300 };
    env_t e;
    env_init(&e);
    g_nlog = 0;
    static dp_timer_t t[N];
    for (int i = 0; i < N; i++) {
        dp_timer_init(e.clock, &t[i]);
        start_logged(&t[i], i, log_cb, (dp_time_t)(rnd() % 50000), 0);
    }
    /* Stop every third one. */
    for (int i = 0; i < N; i += 3)
        dp_timer_stop(&t[i]);
    run_loop(&e);
    cr_assert_eq(g_nlog, N - (N + 2) / 3);
    for (size_t k = 0; k < g_nlog; k++) {
        cr_assert_neq(g_log[k].id % 3, 0, "stopped timer %d fired", g_log[k].id);
        if (k > 0)
            cr_assert_leq(g_log[k - 1].due, g_log[k].due, "order broken at %zu", k);
    }
    env_close(&e, true);
}

/* A callback that keeps restarting a zero timeout must not starve the loop:
 * each firing happens in a new loop iteration, so the check handle (which
 * runs once per iteration, after polling for I/O) keeps pace. */
static int g_checks;
static int g_spins;
static uv_check_t g_check;

static void on_check(uv_check_t *h)
{
    (void)h;
    g_checks++;
}

static void spin_cb(dp_timer_t *t)
{
    if (++g_spins < 50)
        cr_assert_eq(dp_timer_start(t, spin_cb, 0, 0), DP_OK);
    else
        uv_check_stop(&g_check);
}

static void close_noop(uv_handle_t *h)
{
    (void)h;
}

Test(real_timer, zero_timeout_restart_does_not_starve)
{
    env_t e;
    env_init(&e);
    cr_assert_eq(uv_check_init(&e.loop, &g_check), 0);
    cr_assert_eq(uv_check_start(&g_check, on_check), 0);
    g_checks = g_spins = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    cr_assert_eq(dp_timer_start(&t, spin_cb, 0, 0), DP_OK);
    /* UV_RUN_DEFAULT has one timers phase per iteration (UV_RUN_ONCE has
     * two), so a check per firing is exactly what no starvation means. */
    run_loop(&e);
    cr_assert_eq(g_spins, 50);
    cr_assert_geq(g_checks, 49, "%d firings in only %d loop iterations", g_spins, g_checks);
    uv_close((uv_handle_t *)&g_check, close_noop);
    env_close(&e, true);
}

/* A repeating timer whose callback blocks for several periods fires once
 * afterwards, not in a burst, and stays on its original phase. */
static dp_time_t g_next_due[8];

static void slow_cb(dp_timer_t *t)
{
    log_cb(t);
    g_next_due[g_nlog - 1] = t->due;
    if (g_nlog == 1)
        sleep_ms(55);
    if (g_nlog == 3)
        dp_timer_stop(t);
}

Test(real_timer, repeat_skips_missed_periods)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    start_logged(&t, 1, slow_cb, 10 * MS, 10 * MS);
    dp_time_t first_due = t.due;
    run_loop(&e);
    cr_assert_eq(g_nlog, 3);
    /* The first firing was at >= 10 ms and blocked until >= 65 ms, so the
     * second one (due at 20 ms) comes late, and the one after that is the
     * next phase point after it: 70 ms or later, not 30 ms. */
    cr_assert_geq(g_log[1].at - g_log[0].at, 55 * MS, "burst after a stall");
    cr_assert_geq(g_next_due[1], first_due + 60 * MS);
    for (size_t k = 0; k < 3; k++) {
        cr_assert_eq((g_next_due[k] - first_due) % (10 * MS), 0, "phase lost at %zu", k);
        /* Not skipped too far: the next due is the first phase point after
         * the firing. */
        cr_assert_leq(g_next_due[k] - 10 * MS, g_log[k].at, "firing %zu", k);
    }
    cr_assert_eq(g_next_due[2], g_next_due[1] + 10 * MS);
    env_close(&e, true);
}

/* A heap-allocated owner stops and frees its repeating timer from inside the
 * callback; ASan catches any later touch. */
typedef struct {
    dp_timer_t timer;
    int fired;
} owned_t;

static int g_owned_fired;

static void free_self_cb(dp_timer_t *t)
{
    owned_t *o = t->data;
    g_owned_fired = ++o->fired;
    if (o->fired == 3) {
        dp_timer_stop(t);
        free(o);
    }
}

Test(real_timer, callback_frees_its_timer)
{
    env_t e;
    env_init(&e);
    owned_t *o = calloc(1, sizeof *o);
    dp_timer_init(e.clock, &o->timer);
    o->timer.data = o;
    g_owned_fired = 0;
    cr_assert_eq(dp_timer_start(&o->timer, free_self_cb, 5 * MS, 5 * MS), DP_OK);
    run_loop(&e);
    cr_assert_eq(g_owned_fired, 3);
    cr_assert_eq(dp_clock_pending(e.clock), 0);
    env_close(&e, true);
}

Test(real_timer, free_with_active_timers)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t[3];
    static const int timeouts[] = {0, 10, 5000};
    for (int i = 0; i < 3; i++) {
        dp_timer_init(e.clock, &t[i]);
        start_logged(&t[i], i, log_cb, timeouts[i] * MS, 1000 * MS);
    }
    dp_clock_free(e.clock);
    for (int i = 0; i < 3; i++) {
        cr_assert_not(dp_timer_active(&t[i]));
        dp_timer_stop(&t[i]); /* a no-op after the clock is gone */
    }
    cr_assert_lt(run_loop(&e), 2000 * MS);
    cr_assert_eq(g_nlog, 0, "forgotten timers must not fire");
    env_close(&e, false);
}

/* Freeing the clock from a callback stops the pass: a timer due at the same
 * time is not called, and the loop still closes cleanly. */
static void free_clock_cb(dp_timer_t *t)
{
    log_cb(t);
    dp_clock_free(t->clock);
}

Test(real_timer, free_from_callback)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t a, b, c;
    dp_timer_init(e.clock, &a);
    dp_timer_init(e.clock, &b);
    dp_timer_init(e.clock, &c);
    start_logged(&a, 1, free_clock_cb, 10 * MS, 0);
    start_logged(&b, 2, log_cb, 10 * MS, 0);
    /* The same pass for sure; lowering b's key to a's (its parent in the
     * heap, started first) keeps the heap valid. */
    b.due = a.due;
    start_logged(&c, 3, log_cb, 5000 * MS, 0);
    cr_assert_lt(run_loop(&e), 2000 * MS);
    cr_assert_eq(g_nlog, 1);
    cr_assert_eq(g_log[0].id, 1);
    env_close(&e, false);
}

/* Starting a timer from a plain libuv callback (not a clock callback) arms
 * the clock's libuv timer correctly. */
static dp_timer_t *g_late;
static dp_time_t g_late_started;

static void on_raw_timer(uv_timer_t *h)
{
    (void)h;
    /* libuv measures its own 5 ms in whole milliseconds of cached loop
     * time, so only the time of this start is a sound reference. */
    g_late_started = dp_wall_now();
    start_logged(g_late, 1, log_cb, 10 * MS, 0);
}

Test(real_timer, start_from_other_libuv_callback)
{
    env_t e;
    env_init(&e);
    g_nlog = 0;
    dp_timer_t t;
    dp_timer_init(e.clock, &t);
    g_late = &t;
    uv_timer_t raw;
    cr_assert_eq(uv_timer_init(&e.loop, &raw), 0);
    cr_assert_eq(uv_timer_start(&raw, on_raw_timer, 5, 0), 0);
    run_loop(&e);
    cr_assert_eq(g_nlog, 1);
    cr_assert_geq(g_log[0].at, g_late_started + 10 * MS);
    uv_close((uv_handle_t *)&raw, close_noop);
    env_close(&e, true);
}
