/* Hot reload on a real loop: file watching with debounce, and reloads while
 * samples stream in from another thread, with none lost or doubled. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <uv.h>

#include "harness.h"
#include "runtime/ingest.h"

static char *dir;

static void setup(void)
{
    dir = th_tmpdir();
}

static void teardown(void)
{
    th_rmdir(dir);
}

TestSuite(reload, .init = setup, .fini = teardown);

static dp_plant_t *open_real(uv_loop_t *loop, bool watch)
{
    char path[512], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    dp_plant_opts_t o = {.path = path, .loop = loop, .watch = watch};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_not_null(p, "%s", err);
    cr_assert_eq(dp_plant_start(p, &err), 0, "%s", err);
    return p;
}

static void close_real(dp_plant_t *p, uv_loop_t *loop)
{
    dp_plant_stop(p);
    uv_run(loop, UV_RUN_DEFAULT);
    dp_plant_free(p);
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "handles left open");
}

static uint64_t generation(dp_plant_t *p, const char *twin)
{
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, twin), &st);
    return st.generation;
}

/* Runs the loop until the twin reaches a generation, or 5 s pass. */
static bool wait_generation(uv_loop_t *loop, dp_plant_t *p, const char *twin, uint64_t gen)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (generation(p, twin) < gen && uv_hrtime() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    return generation(p, twin) >= gen;
}

/* Keeps the loop from blocking forever while a test waits for fs events. */
static void tick(uv_timer_t *t)
{
    (void)t;
}

Test(reload, saving_a_file_reloads_the_twin_and_keeps_state)
{
    th_write(dir, "plant.lua", "twin 'A' { script = 'a.lua' }\ntwin 'B' { script = 'b.lua' }\n");
    th_write(dir, "a.lua", "state.v = (state.v or 0) + 1\n");
    th_write(dir, "b.lua", "state.v = (state.v or 0) + 1\n");
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    dp_plant_t *p = open_real(&loop, true);
    cr_assert_eq(generation(p, "A"), 1);
    uv_run(&loop, UV_RUN_NOWAIT);

    th_write(dir, "a.lua", "state.v = (state.v or 0) + 10\n");
    cr_assert(wait_generation(&loop, p, "A", 2), "no reload after saving a.lua");
    cr_assert_eq(th_eval(p, "A", "state.v"), 11, "state was not kept");
    /* Only the affected twin reloaded. */
    cr_assert_eq(generation(p, "B"), 1);

    /* A broken save keeps the running version; fixing it reloads again. */
    th_write(dir, "a.lua", "state.v = = 1\n");
    uint64_t deadline = uv_hrtime() + 300000000ull;
    while (uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(generation(p, "A"), 2);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "A"), &st);
    cr_assert_eq(st.reload_failures, 1);
    th_write(dir, "a.lua", "state.v = (state.v or 0) + 100\n");
    cr_assert(wait_generation(&loop, p, "A", 3), "no reload after the fix");
    cr_assert_eq(th_eval(p, "A", "state.v"), 111);

    uv_close((uv_handle_t *)&t, NULL);
    close_real(p, &loop);
}

Test(reload, editing_a_required_module_reloads_its_users)
{
    th_write(dir, "plant.lua", "twin 'A' { script = 'a.lua' }\n");
    th_write(dir, "lib.lua", "return { k = 1 }\n");
    th_write(dir, "a.lua", "state.k = require('lib').k\n");
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    dp_plant_t *p = open_real(&loop, true);
    th_write(dir, "lib.lua", "return { k = 2 }\n");
    cr_assert(wait_generation(&loop, p, "A", 2), "no reload after saving lib.lua");
    cr_assert_eq(th_eval(p, "A", "state.k"), 2);
    uv_close((uv_handle_t *)&t, NULL);
    close_real(p, &loop);
}

/* ---- reloads under load ----------------------------------------------- */

#define SAMPLES 200000

/* The producer streams in chunks and, after each, waits (up to a second)
 * until the loop has reloaded once more, so that reloads fall among the
 * samples however fast either side runs: on a loaded machine or under a
 * sanitizer a reload can take longer than the whole stream. */
#define CHUNK 5000

typedef struct {
    dp_ingest_t *in;
    int tag;
    const atomic_int *reloads;
    atomic_int done;
} producer_t;

static void *produce(void *arg)
{
    producer_t *pr = arg;
    for (int i = 1; i <= SAMPLES; i++) {
        dp_value_t v = dp_num(i);
        dp_ingest_push(pr->in, pr->tag, &v, T0 + i, DP_Q_GOOD);
        if (i % CHUNK == 0) {
            int seen = atomic_load(pr->reloads);
            for (int k = 0; k < 1000 && atomic_load(pr->reloads) == seen; k++) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
        }
    }
    atomic_store(&pr->done, 1);
    return NULL;
}

typedef struct {
    dp_plant_t *plant;
    atomic_int reloads;
    int failures;
} reloader_t;

static void do_reload(uv_timer_t *t)
{
    reloader_t *r = t->data;
    char *err = NULL;
    char code[256];
    snprintf(code, sizeof code,
             "-- version %d\n"
             "state.n = state.n or 0; state.sum = state.sum or 0\n"
             "twin.on_change('x', function(v) state.n = state.n + 1; state.sum = state.sum + v "
             "end)\n",
             atomic_load(&r->reloads) + 2);
    th_write(dir, "a.lua", code);
    if (dp_plant_reload(r->plant, "A", &err) < 0)
        r->failures++;
    free(err);
    atomic_fetch_add(&r->reloads, 1);
}

Test(reload, no_sample_lost_or_doubled_while_reloading_under_load)
{
    th_write(dir, "plant.lua", "twin 'A' { script = 'a.lua', tags = { x = {} } }\n");
    th_write(dir, "a.lua",
             "state.n = state.n or 0; state.sum = state.sum or 0\n"
             "twin.on_change('x', function(v) state.n = state.n + 1; "
             "state.sum = state.sum + v end)\n");
    uv_loop_t loop;
    uv_loop_init(&loop);
    dp_plant_t *p = open_real(&loop, false);
    reloader_t r = {.plant = p};
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &r;
    uv_timer_start(&t, do_reload, 2, 2);

    producer_t pr = {.in = dp_plant_ingest(p),
                     .tag = dp_store_find(dp_plant_store(p), "A.x"),
                     .reloads = &r.reloads};
    pthread_t th;
    pthread_create(&th, NULL, produce, &pr);
    while (!atomic_load(&pr.done))
        uv_run(&loop, UV_RUN_ONCE);
    pthread_join(th, NULL);
    uv_timer_stop(&t);
    /* Deliver whatever is still queued. */
    dp_ingest_drain(dp_plant_ingest(p));
    dp_plant_flush(p);

    int reloads = atomic_load(&r.reloads);
    cr_log_info("%d reloads while %d samples streamed", reloads, SAMPLES);
    cr_assert_gt(reloads, 20, "too few reloads to mean anything (%d)", reloads);
    cr_assert_eq(r.failures, 0);
    cr_assert_eq(th_eval(p, "A", "state.n"), SAMPLES, "samples lost or doubled");
    cr_assert_eq(th_eval(p, "A", "state.sum"), (double)SAMPLES * (SAMPLES + 1) / 2,
                 "samples lost or doubled");
    uv_close((uv_handle_t *)&t, NULL);
    close_real(p, &loop);
}
