/* Unit tests for the virtual clock and its timers, durations, and timestamp
 * formatting and parsing. Real-clock timers are in test_timer.c. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/clock.h"

#define SEC    DP_US_PER_SEC
#define MS     DP_US_PER_MS
#define MINUTE (60 * SEC)
#define HOUR   (60 * MINUTE)
#define DAY    (24 * HOUR)

/* 2026-11-25T11:05:10Z, checked against `date -u -d ... +%s`. */
#define T0 (INT64_C(1795604710) * SEC)

/* ---- A log of timer firings shared by the virtual tests ------------------ */

typedef struct {
    int id;
    dp_time_t at;
} fire_t;

static fire_t g_log[8192];
static size_t g_nlog;
static size_t g_nafter;

static void log_cb(dp_timer_t *t)
{
    cr_assert_lt(g_nlog, DP_ARRAY_LEN(g_log));
    g_log[g_nlog].id = (int)(intptr_t)t->data;
    g_log[g_nlog].at = dp_clock_now(t->clock);
    g_nlog++;
}

static void count_after(dp_clock_t *clock, void *ud)
{
    (void)clock;
    (void)ud;
    g_nafter++;
}

static void reset_log(void)
{
    g_nlog = 0;
    g_nafter = 0;
}

static void init_timer(dp_clock_t *c, dp_timer_t *t, int id)
{
    dp_timer_init(c, t);
    t->data = (void *)(intptr_t)id;
}

/* ---- The virtual clock ---------------------------------------------------- */

Test(virtual_clock, basics)
{
    dp_clock_t *c = dp_clock_new_virtual(T0);
    cr_assert(dp_clock_is_virtual(c));
    cr_assert_eq(dp_clock_now(c), T0);
    cr_assert_eq(dp_clock_pending(c), 0);
    dp_time_t due = 42;
    cr_assert_eq(dp_clock_next_due(c, &due), DP_ENOENT);
    cr_assert_eq(due, 42, "next_due must not write on failure");
    /* Time stands still until the owner moves it. */
    cr_assert_eq(dp_clock_now(c), T0);
    cr_assert_eq(dp_clock_run(c, T0 + SEC, NULL, NULL), 0);
    cr_assert_eq(dp_clock_now(c), T0 + SEC);
    dp_clock_free(c);
    dp_clock_free(NULL);
}

Test(virtual_clock, set_moves_forward_only)
{
    dp_clock_t *c = dp_clock_new_virtual(T0);
    cr_assert_eq(dp_clock_set(c, T0 + 5 * SEC), DP_OK);
    cr_assert_eq(dp_clock_now(c), T0 + 5 * SEC);
    cr_assert_eq(dp_clock_set(c, T0 + 5 * SEC), DP_OK);
    cr_assert_eq(dp_clock_set(c, T0), DP_EINVAL);
    cr_assert_eq(dp_clock_now(c), T0 + 5 * SEC);
    cr_assert_eq(dp_clock_run(c, T0, NULL, NULL), DP_EINVAL, "run must not go back in time");
    cr_assert_eq(dp_clock_now(c), T0 + 5 * SEC);
    dp_clock_free(c);
}

Test(virtual_clock, one_shot_fires_exactly_at_due)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_not(dp_timer_active(&t));
    cr_assert_eq(dp_timer_start(&t, log_cb, 10 * SEC, 0), DP_OK);
    cr_assert(dp_timer_active(&t));
    cr_assert_eq(dp_clock_pending(c), 1);
    dp_time_t due;
    cr_assert_eq(dp_clock_next_due(c, &due), DP_OK);
    cr_assert_eq(due, T0 + 10 * SEC);

    cr_assert_eq(dp_clock_run(c, T0 + 10 * SEC - 1, count_after, NULL), 0);
    cr_assert_eq(g_nlog, 0);
    cr_assert_eq(dp_clock_now(c), T0 + 10 * SEC - 1);

    cr_assert_eq(dp_clock_run(c, T0 + HOUR, count_after, NULL), 1);
    cr_assert_eq(g_nlog, 1);
    cr_assert_eq(g_nafter, 1);
    cr_assert_eq(g_log[0].at, T0 + 10 * SEC, "the callback sees the due time as now");
    cr_assert_eq(dp_clock_now(c), T0 + HOUR);
    cr_assert_not(dp_timer_active(&t));
    cr_assert_eq(dp_clock_pending(c), 0);
    dp_clock_free(c);
}

Test(virtual_clock, zero_timeout_fires_at_now)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, log_cb, 0, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0, NULL, NULL), 1);
    cr_assert_eq(g_log[0].at, T0);
    dp_clock_free(c);
}

Test(virtual_clock, bad_start_arguments)
{
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, log_cb, -1, 0), DP_EINVAL);
    cr_assert_eq(dp_timer_start(&t, log_cb, 0, -1), DP_EINVAL);
    cr_assert_eq(dp_timer_start(&t, NULL, 0, 0), DP_EINVAL);
    cr_assert_eq(dp_timer_start(&t, log_cb, INT64_MAX, 0), DP_EINVAL, "due time overflows");
    cr_assert_not(dp_timer_active(&t));
    dp_timer_t orphan;
    dp_timer_init(NULL, &orphan);
    cr_assert_eq(dp_timer_start(&orphan, log_cb, 0, 0), DP_EINVAL);
    dp_clock_free(c);
}

Test(virtual_clock, init_keeps_data)
{
    dp_clock_t *c = dp_clock_new_virtual(0);
    dp_timer_t t;
    int x;
    t.data = &x;
    dp_timer_init(c, &t);
    cr_assert_eq(t.data, &x);
    cr_assert_eq(t.clock, c);
    cr_assert_not(dp_timer_active(&t));
    dp_clock_free(c);
}

/* Three periodic timers over one simulated hour fire exactly the expected
 * number of times in exactly the expected order. */
Test(virtual_clock, three_intervals_over_an_hour)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    static const dp_time_t periods[] = {1 * SEC, 7 * SEC, 60 * SEC};
    dp_timer_t t[3];
    for (int i = 0; i < 3; i++) {
        init_timer(c, &t[i], i);
        cr_assert_eq(dp_timer_start(&t[i], log_cb, periods[i], periods[i]), DP_OK);
    }
    int64_t fired = dp_clock_run(c, T0 + HOUR, count_after, NULL);
    cr_assert_eq(fired, 3600 + 514 + 60);
    cr_assert_eq(g_nlog, (size_t)fired);
    cr_assert_eq(g_nafter, (size_t)fired);
    cr_assert_eq(dp_clock_now(c), T0 + HOUR);
    cr_assert_eq(dp_clock_pending(c), 3, "repeating timers stay active");

    /* The model: at each second the due timers fire ordered by when they
     * were last scheduled (the previous firing, or the start for the first),
     * ties in start order, because each repeat is a fresh schedule. */
    size_t k = 0;
    dp_time_t last[3] = {0, 0, 0};
    for (dp_time_t s = 1; s <= 3600; s++) {
        int due[3], n = 0;
        for (int i = 0; i < 3; i++) {
            if ((s * SEC) % periods[i] == 0)
                due[n++] = i;
        }
        for (int a = 0; a < n; a++) {
            for (int b = a + 1; b < n; b++) {
                if (last[due[b]] < last[due[a]] ||
                    (last[due[b]] == last[due[a]] && due[b] < due[a])) {
                    int tmp = due[a];
                    due[a] = due[b];
                    due[b] = tmp;
                }
            }
        }
        for (int a = 0; a < n; a++) {
            cr_assert_lt(k, g_nlog);
            cr_assert_eq(g_log[k].id, due[a], "firing %zu at %llds", k, (long long)s);
            cr_assert_eq(g_log[k].at, T0 + s * SEC, "firing %zu", k);
            last[due[a]] = s;
            k++;
        }
    }
    cr_assert_eq(k, g_nlog);

    /* Spot checks of the tie order the model encodes. At 60 s the minute
     * timer (scheduled at 0 s) goes before the second timer (at 59 s); at
     * 420 s all three are due: minute (360 s), seven (413 s), second (419 s). */
    size_t i60 = 0;
    while (g_log[i60].at != T0 + 60 * SEC)
        i60++;
    cr_assert_eq(g_log[i60].id, 2);
    cr_assert_eq(g_log[i60 + 1].id, 0);
    size_t i420 = 0;
    while (g_log[i420].at != T0 + 420 * SEC)
        i420++;
    cr_assert_eq(g_log[i420].id, 2);
    cr_assert_eq(g_log[i420 + 1].id, 1);
    cr_assert_eq(g_log[i420 + 2].id, 0);
    dp_clock_free(c);
}

Test(virtual_clock, ties_fire_in_start_order)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t[6];
    /* Started in the order 3 1 4 0 5 2, all due at the same instant. */
    static const int order[] = {3, 1, 4, 0, 5, 2};
    for (int i = 0; i < 6; i++)
        init_timer(c, &t[i], i);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(dp_timer_start(&t[order[i]], log_cb, 5 * SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + 5 * SEC, NULL, NULL), 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(g_log[i].id, order[i]);
    dp_clock_free(c);
}

Test(virtual_clock, restart_changes_due_and_order)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t a, b;
    init_timer(c, &a, 1);
    init_timer(c, &b, 2);
    cr_assert_eq(dp_timer_start(&a, log_cb, 10 * SEC, 0), DP_OK);
    cr_assert_eq(dp_timer_start(&b, log_cb, 5 * SEC, 0), DP_OK);
    /* Restarting a pending timer replaces its schedule; it is not added twice. */
    cr_assert_eq(dp_timer_start(&a, log_cb, 5 * SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_pending(c), 2);
    cr_assert_eq(dp_clock_run(c, T0 + HOUR, NULL, NULL), 2);
    cr_assert_eq(g_log[0].id, 2, "b was scheduled for 5 s before a's restart");
    cr_assert_eq(g_log[1].id, 1);
    cr_assert_eq(g_log[1].at, T0 + 5 * SEC);
    dp_clock_free(c);
}

Test(virtual_clock, stop_prevents_firing)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t a, b, d;
    init_timer(c, &a, 1);
    init_timer(c, &b, 2);
    init_timer(c, &d, 3);
    cr_assert_eq(dp_timer_start(&a, log_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_timer_start(&b, log_cb, 2 * SEC, SEC), DP_OK);
    cr_assert_eq(dp_timer_start(&d, log_cb, 3 * SEC, 0), DP_OK);
    dp_timer_stop(&b);
    dp_timer_stop(&b); /* idempotent */
    cr_assert_not(dp_timer_active(&b));
    cr_assert_eq(dp_clock_pending(c), 2);
    cr_assert_eq(dp_clock_run(c, T0 + HOUR, NULL, NULL), 2);
    cr_assert_eq(g_log[0].id, 1);
    cr_assert_eq(g_log[1].id, 3);
    dp_timer_stop(&a); /* stopping a timer that already fired is harmless */
    dp_clock_free(c);
}

/* A callback can stop another timer due at the same instant. */
static dp_timer_t *g_victim;

static void stop_victim_cb(dp_timer_t *t)
{
    log_cb(t);
    dp_timer_stop(g_victim);
}

Test(virtual_clock, stop_other_from_callback)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t killer, victim;
    init_timer(c, &killer, 1);
    init_timer(c, &victim, 2);
    g_victim = &victim;
    cr_assert_eq(dp_timer_start(&killer, stop_victim_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_timer_start(&victim, log_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + 2 * SEC, NULL, NULL), 1);
    cr_assert_eq(g_nlog, 1);
    cr_assert_eq(g_log[0].id, 1);
    dp_clock_free(c);
}

/* A repeating timer that stops itself on its third firing. */
static void stop_on_third_cb(dp_timer_t *t)
{
    log_cb(t);
    cr_assert(dp_timer_active(t), "a repeating timer is rescheduled before its callback");
    if (g_nlog == 3)
        dp_timer_stop(t);
}

Test(virtual_clock, repeat_stops_itself)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, stop_on_third_cb, 0, 250 * MS), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + HOUR, NULL, NULL), 3);
    cr_assert_eq(g_log[0].at, T0);
    cr_assert_eq(g_log[1].at, T0 + 250 * MS);
    cr_assert_eq(g_log[2].at, T0 + 500 * MS);
    cr_assert_not(dp_timer_active(&t));
    cr_assert_eq(dp_clock_pending(c), 0);
    dp_clock_free(c);
}

/* A repeating timer in heap memory that stops and frees itself; ASan reports
 * any later touch of the freed memory. */
typedef struct {
    dp_timer_t timer;
    int fired;
} owned_t;

static int g_owned_fired;

static void free_self_cb(dp_timer_t *t)
{
    owned_t *o = t->data;
    g_owned_fired = ++o->fired;
    if (o->fired == 4) {
        dp_timer_stop(t);
        free(o);
    }
}

Test(virtual_clock, callback_frees_its_timer)
{
    dp_clock_t *c = dp_clock_new_virtual(T0);
    owned_t *o = calloc(1, sizeof *o);
    dp_timer_init(c, &o->timer);
    o->timer.data = o;
    cr_assert_eq(dp_timer_start(&o->timer, free_self_cb, SEC, SEC), DP_OK);
    g_owned_fired = 0;
    cr_assert_eq(dp_clock_run(c, T0 + MINUTE, NULL, NULL), 4);
    cr_assert_eq(g_owned_fired, 4);
    cr_assert_eq(dp_clock_pending(c), 0);
    dp_clock_free(c);
}

/* A one-shot callback that restarts itself: 1 s, then 2 s, then 3 s later. */
static void restart_self_cb(dp_timer_t *t)
{
    log_cb(t);
    if (g_nlog < 3)
        cr_assert_eq(dp_timer_start(t, restart_self_cb, (dp_time_t)(g_nlog + 1) * SEC, 0), DP_OK);
}

Test(virtual_clock, callback_restarts_itself_within_the_run)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, restart_self_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + 6 * SEC, NULL, NULL), 3);
    cr_assert_eq(g_log[0].at, T0 + 1 * SEC);
    cr_assert_eq(g_log[1].at, T0 + 3 * SEC);
    cr_assert_eq(g_log[2].at, T0 + 6 * SEC);
    dp_clock_free(c);
}

/* Timers added by a callback fire in the same run when due by `until`, after
 * those already due at the same instant. */
static dp_timer_t g_child[2];

static void spawn_cb(dp_timer_t *t)
{
    log_cb(t);
    cr_assert_eq(dp_timer_start(&g_child[0], log_cb, 0, 0), DP_OK);
    cr_assert_eq(dp_timer_start(&g_child[1], log_cb, 10 * SEC, 0), DP_OK);
}

Test(virtual_clock, callbacks_add_timers)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t parent, sibling;
    init_timer(c, &parent, 1);
    init_timer(c, &sibling, 2);
    init_timer(c, &g_child[0], 3);
    init_timer(c, &g_child[1], 4);
    cr_assert_eq(dp_timer_start(&parent, spawn_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_timer_start(&sibling, log_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + 5 * SEC, NULL, NULL), 3);
    cr_assert_eq(g_log[0].id, 1);
    cr_assert_eq(g_log[1].id, 2);
    cr_assert_eq(g_log[2].id, 3);
    cr_assert_eq(g_log[2].at, T0 + SEC);
    cr_assert(dp_timer_active(&g_child[1]), "due after until: still pending");
    dp_time_t due;
    cr_assert_eq(dp_clock_next_due(c, &due), DP_OK);
    cr_assert_eq(due, T0 + 11 * SEC);
    cr_assert_eq(dp_clock_run(c, T0 + 11 * SEC, NULL, NULL), 1);
    cr_assert_eq(g_log[3].id, 4);
    dp_clock_free(c);
}

/* The after hook runs once after each callback, seeing that callback's time. */
static void after_checks_time(dp_clock_t *clock, void *ud)
{
    (void)ud;
    cr_assert_eq(dp_clock_now(clock), g_log[g_nlog - 1].at);
    g_nafter++;
}

Test(virtual_clock, after_hook_follows_each_callback)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, log_cb, 100 * MS, 100 * MS), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + SEC, after_checks_time, NULL), 10);
    cr_assert_eq(g_nafter, 10);
    dp_clock_free(c);
}

/* Nested runs and moving the time from inside a run are refused. */
static void nested_cb(dp_timer_t *t)
{
    log_cb(t);
    cr_assert_eq(dp_clock_run(t->clock, dp_clock_now(t->clock) + SEC, NULL, NULL), DP_ESTATE);
    cr_assert_eq(dp_clock_set(t->clock, dp_clock_now(t->clock) + SEC), DP_ESTATE);
}

Test(virtual_clock, no_reentrant_run_or_set)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, nested_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + 2 * SEC, NULL, NULL), 1);
    cr_assert_eq(dp_clock_set(c, T0 + 3 * SEC), DP_OK);
    dp_clock_free(c);
}

/* After dp_clock_set() jumps over several periods, a repeating timer fires
 * once (not a burst), time does not go backwards, and the phase is kept. */
Test(virtual_clock, set_past_periods_fires_once_and_keeps_phase)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t;
    init_timer(c, &t, 1);
    cr_assert_eq(dp_timer_start(&t, log_cb, 10 * SEC, 10 * SEC), DP_OK);
    cr_assert_eq(dp_clock_set(c, T0 + 55 * SEC), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + 55 * SEC, NULL, NULL), 1);
    cr_assert_eq(g_log[0].at, T0 + 55 * SEC);
    dp_time_t due;
    cr_assert_eq(dp_clock_next_due(c, &due), DP_OK);
    cr_assert_eq(due, T0 + 60 * SEC);
    cr_assert_eq(dp_clock_run(c, T0 + 80 * SEC, NULL, NULL), 3);
    cr_assert_eq(g_log[1].at, T0 + 60 * SEC);
    cr_assert_eq(g_log[3].at, T0 + 80 * SEC);
    dp_clock_free(c);
}

/* Freeing the clock forgets active timers: never called, and their owners may
 * still stop them afterwards. */
Test(virtual_clock, free_forgets_active_timers)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t t[40];
    for (int i = 0; i < 40; i++) {
        init_timer(c, &t[i], i);
        cr_assert_eq(dp_timer_start(&t[i], log_cb, i * SEC, SEC), DP_OK);
    }
    dp_clock_free(c);
    for (int i = 0; i < 40; i++) {
        cr_assert_not(dp_timer_active(&t[i]));
        dp_timer_stop(&t[i]);
    }
    cr_assert_eq(g_nlog, 0);
}

/* Freeing the clock from inside a callback ends the run; the memory is
 * released once the run is done with it (ASan checks). */
static void free_clock_cb(dp_timer_t *t)
{
    log_cb(t);
    dp_clock_free(t->clock);
}

Test(virtual_clock, free_from_callback)
{
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(T0);
    dp_timer_t a, b;
    init_timer(c, &a, 1);
    init_timer(c, &b, 2);
    cr_assert_eq(dp_timer_start(&a, free_clock_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_timer_start(&b, log_cb, SEC, 0), DP_OK);
    cr_assert_eq(dp_clock_run(c, T0 + HOUR, count_after, NULL), 1);
    cr_assert_eq(g_nlog, 1);
    cr_assert_eq(g_nafter, 0, "no after hook on a freed clock");
    cr_assert_not(dp_timer_active(&b));
}

/* Heap stress: many timers with pseudo-random due times, a third stopped and
 * some restarted; the rest fire in (due, start order) order. */
static uint64_t g_rng = 0x9e3779b97f4a7c15u;

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

Test(virtual_clock, heap_stress)
{
    enum { N = 2000 };
    reset_log();
    dp_clock_t *c = dp_clock_new_virtual(0);
    static dp_timer_t t[N];
    static dp_time_t due[N];
    static uint64_t rank[N]; /* start order of the last start */
    static bool live[N];
    uint64_t next_rank = 0;
    for (int i = 0; i < N; i++) {
        init_timer(c, &t[i], i);
        due[i] = rnd() % 500; /* many ties */
        cr_assert_eq(dp_timer_start(&t[i], log_cb, due[i], 0), DP_OK);
        rank[i] = next_rank++;
        live[i] = true;
    }
    size_t expected = N;
    for (int k = 0; k < N; k++) {
        int i = (int)(rnd() % N);
        if (rnd() % 3 == 0) {
            if (live[i])
                expected--;
            dp_timer_stop(&t[i]);
            live[i] = false;
        } else if (rnd() % 4 == 0) {
            if (!live[i])
                expected++;
            due[i] = rnd() % 500;
            cr_assert_eq(dp_timer_start(&t[i], log_cb, due[i], 0), DP_OK);
            rank[i] = next_rank++;
            live[i] = true;
        }
    }
    cr_assert_eq(dp_clock_pending(c), expected);
    cr_assert_eq(dp_clock_run(c, 1000, NULL, NULL), (int64_t)expected);
    for (size_t k = 0; k < g_nlog; k++) {
        int i = g_log[k].id;
        cr_assert(live[i], "stopped timer %d fired", i);
        cr_assert_eq(g_log[k].at, due[i]);
        live[i] = false; /* fires once */
        if (k > 0) {
            int p = g_log[k - 1].id;
            cr_assert(due[p] < due[i] || (due[p] == due[i] && rank[p] < rank[i]),
                      "order broken at %zu", k);
        }
    }
    dp_clock_free(c);
}

/* ---- Durations ---------------------------------------------------------- */

Test(duration, parse_valid)
{
    static const struct {
        const char *s;
        dp_time_t us;
    } cases[] = {
        {"250ms", 250 * MS},
        {"5s", 5 * SEC},
        {"10min", 10 * MINUTE},
        {"1h30min", HOUR + 30 * MINUTE},
        {"7d", 7 * DAY},
        {"1.5s", 1500 * MS},
        {"5", 5 * SEC},
        {"0.25", 250 * MS},
        {"0", 0},
        {"0s", 0},
        {"1us", 1},
        {"1d2h3min4s5ms6us", DAY + 2 * HOUR + 3 * MINUTE + 4 * SEC + 5 * MS + 6},
        {"1.5h", HOUR + 30 * MINUTE},
        {"0.001s", MS},
        {"1.000001s", SEC + 1},
        {"0.1d", 144 * MINUTE},
        {"2.5us", 3},      /* rounded to the nearest microsecond */
        {"0.0000004s", 0}, /* 0.4 us */
        {"0.1234567891234567891234s", 123457},
        {"90min", 90 * MINUTE},
        {"106751991d", INT64_C(106751991) * DAY},
        {"106751991d4h54s775ms807us", INT64_MAX},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        dp_time_t v = -1;
        char *err = NULL;
        int rc = dp_duration_parse(cases[i].s, &v, &err);
        cr_assert_eq(rc, DP_OK, "\"%s\": %s", cases[i].s, err ? err : "");
        cr_assert_null(err);
        cr_assert_eq(v, cases[i].us, "\"%s\" gave %lld", cases[i].s, (long long)v);
    }
}

Test(duration, parse_invalid)
{
    static const struct {
        const char *s;
        const char *msg;
    } cases[] = {
        {"", "bad duration \"\": empty"},
        {"-5s", "bad duration \"-5s\": negative"},
        {"5parsecs",
         "bad duration \"5parsecs\": unknown unit \"parsecs\" (use us, ms, s, min, h, d)"},
        {"5m", "unknown unit \"m\""},
        {"5S", "unknown unit \"S\""},
        {"5 s", "spaces are not allowed"},
        {" 5s", "spaces are not allowed"},
        {"5s ", "spaces are not allowed"},
        {"1h 30min", "spaces are not allowed"},
        {"s", "expected a number at \"s\""},
        {"1.s", "expected digits after \".\""},
        {".5s", "expected a number"},
        {"1h30", "missing unit after \"30\""},
        {"5s!", "expected a number at \"!\""},
        {"5,5s", "unexpected \",5s\""},
        {"99999999999999999999s", "too long"},
        {"106751992d", "too long"},
        {"106751991d1d", "too long"},
        {"106751991d4h54s775ms808us", "too long"},
        {"+5s", "expected a number"},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        dp_time_t v = 12345;
        char *err = NULL;
        cr_assert_eq(dp_duration_parse(cases[i].s, &v, &err), DP_EINVAL, "\"%s\"", cases[i].s);
        cr_assert_not_null(err, "\"%s\"", cases[i].s);
        cr_assert_not_null(strstr(err, cases[i].msg), "\"%s\": got '%s'", cases[i].s, err);
        cr_assert_eq(v, 12345, "output untouched on failure");
        free(err);
    }
    /* err may be NULL, and NULL input is refused. */
    dp_time_t v;
    cr_assert_eq(dp_duration_parse("nope", &v, NULL), DP_EINVAL);
    cr_assert_eq(dp_duration_parse(NULL, &v, NULL), DP_EINVAL);
}

Test(duration, format)
{
    static const struct {
        dp_time_t us;
        const char *s;
    } cases[] = {
        {HOUR + 30 * MINUTE, "1h30min"},
        {250 * MS, "250ms"},
        {1500 * MS, "1s500ms"},
        {0, "0s"},
        {7 * DAY, "7d"},
        {1, "1us"},
        {5 * SEC, "5s"},
        {10 * MINUTE, "10min"},
        {DAY + 2 * HOUR + 3 * MINUTE + 4 * SEC + 5 * MS + 6, "1d2h3min4s5ms6us"},
        {DAY + 1, "1d1us"},
        {-250 * MS, "-250ms"},
        {INT64_MAX, "106751991d4h54s775ms807us"},
        {INT64_MIN, "-106751991d4h54s775ms808us"},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        char buf[64];
        memset(buf, 'x', sizeof buf);
        dp_duration_format(cases[i].us, buf, sizeof buf);
        cr_assert_str_eq(buf, cases[i].s);
    }
}

Test(duration, format_truncates_safely)
{
    char buf[5];
    memset(buf, 'x', sizeof buf);
    dp_duration_format(HOUR + 30 * MINUTE, buf, sizeof buf);
    cr_assert_str_eq(buf, "1h30");
    char one[1] = {'x'};
    dp_duration_format(SEC, one, 1);
    cr_assert_eq(one[0], '\0');
    dp_duration_format(SEC, NULL, 0); /* size 0 writes nothing */
}

Test(duration, round_trip)
{
    dp_time_t values[600];
    size_t n = 0;
    static const dp_time_t fixed[] = {0, 1, 999, MS, SEC - 1, SEC, MINUTE, HOUR, DAY, INT64_MAX};
    for (size_t i = 0; i < DP_ARRAY_LEN(fixed); i++)
        values[n++] = fixed[i];
    while (n < DP_ARRAY_LEN(values)) {
        /* Mix magnitudes so every unit appears. */
        uint64_t r = ((uint64_t)rnd() << 32) | rnd();
        values[n++] = (dp_time_t)(r >> (rnd() % 63 + 1));
    }
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        dp_duration_format(values[i], buf, sizeof buf);
        dp_time_t back = -1;
        char *err = NULL;
        cr_assert_eq(dp_duration_parse(buf, &back, &err), DP_OK, "%s: %s", buf, err);
        cr_assert_eq(back, values[i], "%lld -> %s -> %lld", (long long)values[i], buf,
                     (long long)back);
    }
}

/* ---- Timestamps --------------------------------------------------------- */

Test(time, format)
{
    static const struct {
        dp_time_t t;
        const char *s;
    } cases[] = {
        {T0 + 123 * MS, "2026-11-25T11:05:10.123Z"},
        {T0 + 123999, "2026-11-25T11:05:10.123Z"}, /* truncated, not rounded */
        {0, "1970-01-01T00:00:00.000Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {-SEC, "1969-12-31T23:59:59.000Z"},
        {-SEC - 500 * MS, "1969-12-31T23:59:58.500Z"},
        {INT64_C(951782400) * SEC, "2000-02-29T00:00:00.000Z"},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        char buf[40];
        dp_time_format(cases[i].t, buf, sizeof buf);
        cr_assert_str_eq(buf, cases[i].s);
    }
    char small[11];
    dp_time_format(T0, small, sizeof small);
    cr_assert_str_eq(small, "2026-11-25");
}

Test(time, parse_valid)
{
    static const struct {
        const char *s;
        dp_time_t t;
    } cases[] = {
        {"2026-11-25T11:05:10Z", T0},
        {"2026-11-25T11:05:10", T0},
        {"2026-11-25T11:05:10.123Z", T0 + 123 * MS},
        {"2026-11-25T11:05:10.5", T0 + 500 * MS},
        {"2026-11-25T11:05:10.123456Z", T0 + 123456},
        {"2026-11-25T11:05:10.1234565Z", T0 + 123457},
        {"2026-11-25T11:05:10.9999999Z", T0 + SEC},
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59Z", -SEC},
        {"2024-02-29T00:00:00Z", INT64_C(1709164800) * SEC},
        {"2000-02-29T00:00:00.000Z", INT64_C(951782400) * SEC},
        {"1795604710", T0},
        {"1795604710.25", T0 + 250 * MS},
        {"0", 0},
        {"-1.5", -1500 * MS},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        dp_time_t v = 0;
        char *err = NULL;
        cr_assert_eq(dp_time_parse(cases[i].s, &v, &err), DP_OK, "\"%s\": %s", cases[i].s, err);
        cr_assert_eq(v, cases[i].t, "\"%s\" gave %lld", cases[i].s, (long long)v);
    }
}

Test(time, parse_invalid)
{
    static const struct {
        const char *s;
        const char *msg;
    } cases[] = {
        {"", "bad time \"\""},
        {"yesterday", "bad time \"yesterday\": expected ISO 8601"},
        {"2026-13-01T00:00:00Z", "month 13"},
        {"2026-00-01T00:00:00Z", "month 0"},
        {"2026-02-29T00:00:00Z", "day 29"},
        {"2026-04-31T00:00:00Z", "day 31"},
        {"2026-11-25T24:00:00Z", "time of day"},
        {"2026-11-25T11:60:00Z", "time of day"},
        {"2026-11-25 11:05:10Z", "expected ISO 8601"},
        {"2026-11-25", "expected ISO 8601"},
        {"2026-11-25T11:05:10+02:00", "only UTC"},
        {"2026-11-25T11:05:10.Z", "digits after"},
        {"2026-11-25T11:05:10Zjunk", "unexpected \"junk\""},
        {"12abc", "expected ISO 8601"},
        {"99999999999999999999", "out of range"},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        dp_time_t v = 777;
        char *err = NULL;
        cr_assert_eq(dp_time_parse(cases[i].s, &v, &err), DP_EINVAL, "\"%s\"", cases[i].s);
        cr_assert_not_null(err);
        cr_assert_not_null(strstr(err, cases[i].msg), "\"%s\": got '%s'", cases[i].s, err);
        cr_assert_eq(v, 777);
        free(err);
    }
    dp_time_t v;
    cr_assert_eq(dp_time_parse("nope", &v, NULL), DP_EINVAL);
    cr_assert_eq(dp_time_parse(NULL, &v, NULL), DP_EINVAL);
}

Test(time, format_parse_round_trip)
{
    for (int i = 0; i < 500; i++) {
        /* Whole milliseconds between 1900 and 2100, as formatting keeps ms. */
        int64_t ms = (int64_t)(((uint64_t)rnd() << 32 | rnd()) % UINT64_C(6311433600000)) -
                     INT64_C(2208988800000);
        dp_time_t t = ms * MS;
        char buf[40];
        dp_time_format(t, buf, sizeof buf);
        dp_time_t back = 0;
        cr_assert_eq(dp_time_parse(buf, &back, NULL), DP_OK, "%s", buf);
        cr_assert_eq(back, t, "%s", buf);
    }
}

Test(time, wall_now)
{
    /* Not time(): glibc reads a coarse clock for it that may trail by a tick. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    dp_time_t before = (dp_time_t)ts.tv_sec * SEC + ts.tv_nsec / 1000;
    dp_time_t now = dp_wall_now();
    clock_gettime(CLOCK_REALTIME, &ts);
    dp_time_t after = (dp_time_t)ts.tv_sec * SEC + ts.tv_nsec / 1000;
    cr_assert_geq(now, before);
    cr_assert_leq(now, after);
    dp_time_t later = dp_wall_now();
    cr_assert_geq(later, now);
}
