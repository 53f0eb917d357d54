/* Unit tests for runtime/ingest.c: ordering, copying, back-pressure, and a
 * multi-producer run through a real libuv loop.
 *
 * No per-test .timeout: in Criterion 2.4.1 it leaks in the runner process
 * under LeakSanitizer with --jobs; ctest passes a global --timeout instead. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "runtime/ingest.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

/* Ends every test: ASan's leak report at a worker's exit does not fail a
 * Criterion test (and the project runs ASan without abort_on_error), so each
 * test asks LeakSanitizer itself, which also names the test that leaked.
 * Without ASan this checks nothing. */
static void assert_no_leaks(void)
{
#ifdef __SANITIZE_ADDRESS__
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
#endif
}

static int add(dp_store_t *s, const char *name)
{
    int h = dp_store_add(s, name, NULL);
    cr_assert(h >= 0);
    return h;
}

Test(ingest, drain_in_push_order_with_copies)
{
    dp_store_t *store = dp_store_new();
    int a = add(store, "t.a");
    int b = add(store, "t.b");
    dp_ingest_t *in = dp_ingest_new(NULL, store, 0);
    cr_assert_not_null(in);

    char buf[16] = "hello";
    dp_value_t v = dp_str(buf);
    cr_assert_eq(dp_ingest_push(in, a, &v, 10, DP_Q_GOOD), DP_OK);
    strcpy(buf, "CLOBBERED"); /* the queue must hold its own copy */
    v = dp_num(1);
    cr_assert_eq(dp_ingest_push(in, b, &v, 11, DP_Q_GOOD), DP_OK);
    v = dp_num(2);
    cr_assert_eq(dp_ingest_push(in, b, &v, 12, DP_Q_UNCERTAIN), DP_OK);
    /* NULL and NIL values change only the quality. */
    cr_assert_eq(dp_ingest_push(in, a, NULL, 99, DP_Q_BAD), DP_OK);
    dp_value_t nil = {.type = DP_NIL};
    cr_assert_eq(dp_ingest_push(in, b, &nil, 99, DP_Q_BAD), DP_OK);

    /* Malformed samples are refused at the producer, not lost later. */
    cr_assert_eq(dp_ingest_push(in, a, &v, 1, 3), DP_EINVAL);
    cr_assert_eq(dp_ingest_push(in, a, &v, 1, -1), DP_EINVAL);
    dp_value_t nulls = dp_str(NULL);
    cr_assert_eq(dp_ingest_push(in, a, &nulls, 1, DP_Q_GOOD), DP_EINVAL);

    cr_assert_eq(dp_ingest_pushed(in), 5);
    cr_assert_eq(dp_ingest_drained(in), 0);
    cr_assert_eq(dp_store_get(store, a)->v.type, DP_NIL, "push must not touch the store");

    cr_assert_eq(dp_ingest_drain(in), 5);
    cr_assert_eq(dp_ingest_drained(in), 5);
    const dp_tag_t *ta = dp_store_get(store, a);
    const dp_tag_t *tb = dp_store_get(store, b);
    cr_assert_str_eq(ta->v.u.s, "hello");
    cr_assert_eq(ta->ts, 10);
    cr_assert_eq(ta->quality, DP_Q_BAD);
    cr_assert_eq(ta->writes, 1);
    cr_assert_eq(tb->v.u.n, 2);
    cr_assert_eq(tb->ts, 12, "quality-only update must keep the timestamp");
    cr_assert_eq(tb->quality, DP_Q_BAD);
    cr_assert_eq(tb->writes, 2);
    cr_assert_eq(dp_ingest_drain(in), 0);

    /* Samples still queued at free time are drained, not leaked. */
    v = dp_str("tail");
    cr_assert_eq(dp_ingest_push(in, a, &v, 20, DP_Q_GOOD), DP_OK);
    dp_ingest_free(in);
    cr_assert_str_eq(ta->v.u.s, "tail");
    dp_ingest_free(NULL);
    dp_store_free(store);
    assert_no_leaks();
}

typedef struct {
    dp_ingest_t *in;
    int tag;
    int count;
    atomic_int done;
    int rc;
} blocked_t;

static void blocked_producer(void *arg)
{
    blocked_t *b = arg;
    for (int i = 0; i < b->count; i++) {
        dp_value_t v = dp_num(100 + i);
        int rc = dp_ingest_push(b->in, b->tag, &v, i, DP_Q_GOOD);
        if (rc != DP_OK)
            b->rc = rc;
    }
    atomic_store(&b->done, 1);
}

Test(ingest, batches_and_reasons)
{
    dp_store_t *store = dp_store_new();
    int a = add(store, "t.a");
    int b = add(store, "t.b");
    dp_ingest_t *in = dp_ingest_new(NULL, store, 4); /* smaller than the batch */
    char text[8] = "abc";
    dp_ingest_sample_t s[6] = {
        {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(1), .ts = 10},
        {.tag = b, .quality = DP_Q_GOOD, .v = dp_str(text), .ts = 10},
        {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(2), .ts = 11},
        {.tag = b, .quality = DP_Q_BAD, .v = {.type = DP_NIL}, .reason = "timeout"},
        {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(3), .ts = 12},
        {.tag = a, .quality = DP_Q_UNCERTAIN, .v = {.type = DP_NIL}, .reason = "stale"},
    };
    /* Capacity 4: a batch of 4 fills the queue; the rest goes after a drain
     * (a larger batch would wait for one, in parts). */
    cr_assert_eq(dp_ingest_push_many(in, s, 4), DP_OK);
    strcpy(text, "XXX"); /* copied at push */
    cr_assert_eq(dp_ingest_drain(in), 4);
    cr_assert_eq(dp_ingest_push_many(in, s + 4, 2), DP_OK);
    cr_assert_eq(dp_ingest_drain(in), 2);
    const dp_tag_t *ta = dp_store_get(store, a), *tb = dp_store_get(store, b);
    cr_assert_eq(ta->v.u.n, 3);
    cr_assert_eq(ta->writes, 3);
    cr_assert_eq(ta->quality, DP_Q_UNCERTAIN);
    cr_assert_str_eq(ta->reason, "stale");
    cr_assert_str_eq(tb->v.u.s, "abc");
    cr_assert_eq(tb->quality, DP_Q_BAD);
    cr_assert_str_eq(tb->reason, "timeout");
    /* A good sample clears the reason. */
    dp_ingest_sample_t good = {.tag = b, .quality = DP_Q_GOOD, .v = dp_num(5), .ts = 20};
    cr_assert_eq(dp_ingest_push_many(in, &good, 1), DP_OK);
    dp_ingest_drain(in);
    cr_assert_null(tb->reason);
    /* A value with a reason (an uncertain reading that says why), also at
     * the capacity's edge: it takes two records, counted as one sample. */
    dp_ingest_sample_t why[4] = {
        {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(6), .ts = 21},
        {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(7), .ts = 22},
        {.tag = b, .quality = DP_Q_GOOD, .v = dp_num(8), .ts = 23},
        {.tag = b, .quality = DP_Q_UNCERTAIN, .v = dp_num(9), .ts = 24, .reason = "overrange"},
    };
    cr_assert_eq(dp_ingest_push_many(in, why, 4), DP_OK);
    cr_assert_eq(dp_ingest_pushed(in) - dp_ingest_drained(in), 4);
    cr_assert_eq(dp_ingest_drain(in), 4);
    cr_assert_eq(tb->v.u.n, 9);
    cr_assert_eq(tb->ts, 24);
    cr_assert_eq(tb->quality, DP_Q_UNCERTAIN);
    cr_assert_str_eq(tb->reason, "overrange");
    cr_assert_eq(dp_ingest_pushed(in), dp_ingest_drained(in));
    /* A malformed batch queues nothing. */
    dp_ingest_sample_t bad[2] = {{.tag = a, .quality = DP_Q_GOOD, .v = dp_num(9)},
                                 {.tag = a, .quality = 7, .v = dp_num(9)}};
    cr_assert_eq(dp_ingest_push_many(in, bad, 2), DP_EINVAL);
    cr_assert_eq(dp_ingest_drain(in), 0);
    cr_assert_eq(dp_ingest_push_many(NULL, bad, 1), DP_EINVAL);
    dp_ingest_free(in);
    dp_store_free(store);
}

Test(ingest, full_queue_blocks_producer_until_drained)
{
    dp_store_t *store = dp_store_new();
    int a = add(store, "t.a");
    dp_ingest_t *in = dp_ingest_new(NULL, store, 4);
    blocked_t b = {.in = in, .tag = a, .count = 6};
    uv_thread_t th;
    cr_assert_eq(uv_thread_create(&th, blocked_producer, &b), 0);

    /* The producer fills the queue and then must wait: no sample is dropped
     * and the queue never holds more than its capacity. */
    for (int i = 0; i < 200 && dp_ingest_pushed(in) < 4; i++)
        uv_sleep(5);
    uv_sleep(50);
    cr_assert_eq(dp_ingest_pushed(in), 4);
    cr_assert_eq(atomic_load(&b.done), 0, "producer did not block on a full queue");

    size_t first = dp_ingest_drain(in);
    cr_assert_eq(first, 4);
    uv_thread_join(&th);
    cr_assert_eq(b.rc, DP_OK);
    cr_assert_eq(dp_ingest_pushed(in), 6);
    cr_assert_eq(dp_ingest_drain(in), 2);
    cr_assert_eq(dp_store_get(store, a)->writes, 6);
    cr_assert_eq(dp_store_get(store, a)->v.u.n, 105);
    dp_ingest_free(in);
    dp_store_free(store);
    assert_no_leaks();
}

typedef struct {
    dp_ingest_t *in;
    size_t max;
    atomic_int done;
    int rc;
} waiter_t;

static void backlog_waiter(void *arg)
{
    waiter_t *w = arg;
    w->rc = dp_ingest_wait_backlog(w->in, w->max);
    atomic_store(&w->done, 1);
}

Test(ingest, wait_backlog_returns_after_the_drain_that_brings_it_down)
{
    dp_store_t *store = dp_store_new();
    int a = add(store, "t.a");
    dp_ingest_t *in = dp_ingest_new(NULL, store, 0);
    dp_ingest_sample_t s[3] = {{.tag = a, .quality = DP_Q_GOOD, .v = dp_num(1)},
                               {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(2)},
                               {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(3)}};
    cr_assert_eq(dp_ingest_push_many(in, s, 3), DP_OK);
    /* At or below the limit: returns at once. */
    cr_assert_eq(dp_ingest_wait_backlog(in, 3), DP_OK);

    waiter_t w = {.in = in, .max = 2};
    uv_thread_t th;
    cr_assert_eq(uv_thread_create(&th, backlog_waiter, &w), 0);
    uv_sleep(50);
    cr_assert_eq(atomic_load(&w.done), 0, "returned with 3 samples pending and max 2");
    cr_assert_eq(dp_ingest_drain(in), 3);
    uv_thread_join(&th); /* hangs (ctest timeout) if the drain did not wake it */
    cr_assert_eq(w.rc, DP_OK);
    cr_assert_eq(dp_ingest_drained(in), 3);
    cr_assert_eq(dp_store_get(store, a)->writes, 3);
    cr_assert_eq(dp_ingest_wait_backlog(NULL, 0), DP_EINVAL);
    dp_ingest_free(in);
    dp_store_free(store);
    assert_no_leaks();
}

Test(ingest, push_after_free_is_refused)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    dp_store_t *store = dp_store_new();
    int a = add(store, "t.a");
    dp_ingest_t *in = dp_ingest_new(&loop, store, 16);
    dp_value_t v = dp_str("queued");
    cr_assert_eq(dp_ingest_push(in, a, &v, 1, DP_Q_GOOD), DP_OK);
    dp_ingest_free(in);
    /* Memory lives until the close callback, so a late push is answered. */
    cr_assert_eq(dp_ingest_push(in, a, &v, 2, DP_Q_GOOD), DP_ESTATE);
    cr_assert_str_eq(dp_store_get(store, a)->v.u.s, "queued");
    cr_assert_eq(dp_store_get(store, a)->writes, 1);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
    dp_store_free(store);
    assert_no_leaks();
}

/* Runs the loop without blocking, 0.1 ms apart, until tag `t` has `writes`
 * writes; returns the rounds it took, or -1 after 10,000 (a lost wake-up:
 * a blocking run would hang instead). */
static int run_until_written(uv_loop_t *loop, dp_store_t *store, int t, uint64_t writes)
{
    for (int i = 1; i <= 10000; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (dp_store_get(store, t)->writes >= writes)
            return i;
        usleep(100);
    }
    return -1;
}

Test(ingest, pushes_during_a_hold_are_drained_by_its_timer)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    dp_store_t *store = dp_store_new();
    int a = add(store, "t.a");
    dp_ingest_t *in = dp_ingest_new(&loop, store, 0);
    dp_value_t v = dp_num(1);
    /* An idle ingest: the push wakes the loop, whose drain starts a hold. */
    cr_assert_eq(dp_ingest_push(in, a, &v, 1, DP_Q_GOOD), DP_OK);
    cr_assert_gt(run_until_written(&loop, store, a, 1), 0);
    /* Pushed during the hold: no wake-up is sent, the hold timer drains. */
    v = dp_num(2);
    cr_assert_eq(dp_ingest_push(in, a, &v, 2, DP_Q_GOOD), DP_OK);
    dp_ingest_sample_t s = {.tag = a, .quality = DP_Q_GOOD, .v = dp_num(3), .ts = 3};
    cr_assert_eq(dp_ingest_push_many(in, &s, 1), DP_OK);
    cr_assert_gt(run_until_written(&loop, store, a, 3), 0, "samples pushed during a hold lost");
    cr_assert_eq(dp_store_get(store, a)->v.u.n, 3);
    /* The hold ends with a drain that finds nothing; the loop then has no
     * timer left, and the next push wakes it again. */
    uv_run(&loop, UV_RUN_ONCE); /* the hold timer's empty drain */
    v = dp_num(4);
    cr_assert_eq(dp_ingest_push(in, a, &v, 4, DP_Q_GOOD), DP_OK);
    cr_assert_eq(run_until_written(&loop, store, a, 4), 1, "an idle ingest waits for a wake-up");
    dp_ingest_free(in);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
    dp_store_free(store);
    assert_no_leaks();
}

enum { PRODUCERS = 4, PER_PRODUCER = 100000 };

typedef struct run run_t;

typedef struct {
    run_t *run;
    int index;
    int tag;
    uv_thread_t thread;
    int rc;
} producer_t;

struct run {
    uv_loop_t loop;
    uv_check_t check;
    dp_store_t *store;
    dp_ingest_t *in;
    dp_sub_t *sub;
    producer_t producers[PRODUCERS];
    int tag_owner[PRODUCERS]; /* tag handle -> producer index */
    int64_t next[PRODUCERS];  /* next sequence number expected per producer */
    uint64_t received;
    uint64_t out_of_order;
    uint64_t callbacks;
    bool finished;
};

static void produce(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        /* Every 1000th sample is a string, to push owned copies through the
         * queue; the sequence number is in its text. */
        char buf[32];
        dp_value_t v;
        if (i % 1000 == 999) {
            snprintf(buf, sizeof(buf), "%d", i);
            v = dp_str(buf);
        } else {
            v = dp_num(i);
        }
        int rc = dp_ingest_push(p->run->in, p->tag, &v, i, DP_Q_GOOD);
        if (rc != DP_OK) {
            p->rc = rc;
            return;
        }
    }
}

static void consume(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    (void)sub;
    run_t *r = ud;
    r->callbacks++;
    for (size_t i = 0; i < n; i++) {
        const dp_change_t *c = &changes[i];
        int p = r->tag_owner[c->tag];
        int64_t seq = c->v.type == DP_STR ? atoll(c->v.u.s) : (int64_t)c->v.u.n;
        if (seq != r->next[p] || c->ts != seq)
            r->out_of_order++;
        r->next[p] = seq + 1;
        r->received++;
    }
}

static void on_check(uv_check_t *check)
{
    run_t *r = check->data;
    dp_store_flush(r->store, 4);
    if (r->received < (uint64_t)PRODUCERS * PER_PRODUCER || r->finished)
        return;
    /* Everything arrived. Producers may still be between their last push and
     * uv_async_send, so join them before freeing the ingest. */
    r->finished = true;
    for (int i = 0; i < PRODUCERS; i++)
        uv_thread_join(&r->producers[i].thread);
    dp_ingest_free(r->in);
    r->in = NULL;
    uv_close((uv_handle_t *)&r->check, NULL);
}

Test(ingest, four_producers_through_a_real_loop)
{
    run_t *r = calloc(1, sizeof(*r));
    cr_assert_eq(uv_loop_init(&r->loop), 0);
    r->store = dp_store_new();
    r->in = dp_ingest_new(&r->loop, r->store, 1024);
    cr_assert_not_null(r->in);
    r->sub = dp_store_sub_new(r->store, consume, r);
    for (int i = 0; i < PRODUCERS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "dev%d.seq", i);
        int tag = add(r->store, name);
        /* Deadband 0 and strictly increasing values: every sample is a change. */
        cr_assert_eq(dp_store_watch(r->store, r->sub, tag, 0), DP_OK);
        r->tag_owner[tag] = i;
        r->producers[i] = (producer_t){.run = r, .index = i, .tag = tag};
    }
    cr_assert_eq(uv_check_init(&r->loop, &r->check), 0);
    r->check.data = r;
    cr_assert_eq(uv_check_start(&r->check, on_check), 0);
    for (int i = 0; i < PRODUCERS; i++)
        cr_assert_eq(uv_thread_create(&r->producers[i].thread, produce, &r->producers[i]), 0);

    /* Runs until on_check has closed the check handle and the ingest's async. */
    cr_assert_eq(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
    cr_assert(r->finished);
    for (int i = 0; i < PRODUCERS; i++) {
        cr_assert_eq(r->producers[i].rc, DP_OK);
        cr_assert_eq(r->next[i], PER_PRODUCER, "producer %d: last seq %lld", i,
                     (long long)r->next[i] - 1);
        const dp_tag_t *t = dp_store_get(r->store, r->producers[i].tag);
        cr_assert_eq(t->writes, PER_PRODUCER);
    }
    cr_assert_eq(r->received, (uint64_t)PRODUCERS * PER_PRODUCER);
    cr_assert_eq(r->out_of_order, 0);
    cr_assert_not(dp_store_dirty(r->store));
    cr_assert_eq(uv_loop_close(&r->loop), 0);
    dp_store_free(r->store);
    free(r);
    assert_no_leaks();
}
