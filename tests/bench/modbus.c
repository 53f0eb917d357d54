/* bench_modbus: how many registers per second doppel polls from Modbus TCP
 * devices into the store, with a Lua rule attached, against a bare libmodbus
 * client loop doing the same reads in the same run; and the write round trip.
 *
 * The devices are a libmodbus server in this process (one thread, select()
 * over every connection) on 127.0.0.1, each connection a device with its own
 * 125 holding registers. Every request changes all of that device's
 * registers, so every sample passes the rule's zero deadband (the worst case,
 * and the figure the aim is about); a last figure has each request change
 * one register in ten, as a plant's slower-moving values do, and the rule
 * then sees one sample in ten.
 *
 * - bare: one thread per device, modbus_read_registers(125) back to back.
 * - doppel, no rule: a plant with one modbus device per connection, 125 u16
 *   tags each polled with every = 0 (back to back), and one twin that
 *   declares no handler (nobody watches the tags). Counted: samples accepted
 *   by the store. This is the cost of the driver, ingest and store alone.
 * - doppel, with rule: the same plant, whose twin's rule watches every tag
 *   with twin.on_update: one Lua call per delivered batch (a poll response or
 *   more), which reads the value of every register that changed in it (from
 *   its `values` list) and keeps a running maximum.
 * - doppel, rule, 1 in 10 changes: the same, with the device changing one
 *   register in ten (a different one each request).
 *
 * For 1 device and for 50, the four figures take turns, ROUNDS rounds of
 * SECONDS each, and each is the sum of its rounds: a machine whose speed
 * drifts (a neighbour on the host, frequency scaling) then moves all three
 * alike instead of whichever ran during the slow spell. Each figure also says
 * where the CPU went, in nanoseconds of CPU per register polled: the loop
 * thread (ingest drain, store, rule), the client side (bare threads or
 * doppel's device workers) and the in-process device. Then the write round
 * trip: a command submitted to the guard until the driver confirms it was
 * written (FC06 to the same server), one after another, p50 and p99, on a
 * device whose 125 registers are polled every 100 ms (back-to-back polling
 * keeps the ingest queue full, and outcomes would wait behind it).
 *
 * The figures are printed, not asserted; the program exits 1 only when
 * something is functionally wrong (nothing polled, a rule error, a failed
 * write, a plant that cannot open or close). */
#include <errno.h>
#include <modbus.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "runtime/command.h"
#include "runtime/log.h"
#include "runtime/plant.h"
#include "runtime/twin.h"

#define REGS    125
#define SECONDS 1.0 /* per figure and round */
#define ROUNDS  3   /* bare, no rule, rule, taking turns */
#define WRITES  300
#define AIM     0.9

/* ---- the device: a libmodbus server ----------------------------------- */

static int server_port;
/* Each connection is one device with its own registers. Each request changes
 * one register in `stride` (all of them with 1), a different set each time. */
static atomic_int change_stride = 1;
static modbus_mapping_t *mappings[FD_SETSIZE];
static unsigned requests[FD_SETSIZE];
static atomic_bool server_stop;
static uv_thread_t server_thread;

static void server_main(void *arg)
{
    modbus_t *ctx = arg;
    pthread_setname_np(pthread_self(), "device");
    int listener = modbus_tcp_listen(ctx, 64);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(listener, (struct sockaddr *)&a, &len);
    server_port = ntohs(a.sin_port);
    fd_set all;
    FD_ZERO(&all);
    FD_SET(listener, &all);
    int maxfd = listener;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    while (!atomic_load(&server_stop)) {
        fd_set rd = all;
        struct timeval tv = {0, 50000};
        if (select(maxfd + 1, &rd, NULL, NULL, &tv) <= 0)
            continue;
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &rd))
                continue;
            if (fd == listener) {
                int c = accept(listener, NULL, NULL);
                if (c >= FD_SETSIZE) {
                    close(c);
                } else if (c >= 0) {
                    requests[c] = 0;
                    mappings[c] = modbus_mapping_new(0, 0, 1000, 0);
                    FD_SET(c, &all);
                    if (c > maxfd)
                        maxfd = c;
                }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                int stride = atomic_load(&change_stride);
                uint16_t *regs = mappings[fd]->tab_registers;
                for (int i = (int)(requests[fd]++ % (unsigned)stride); i < REGS; i += stride)
                    regs[i]++;
                modbus_reply(ctx, query, rc, mappings[fd]);
            } else if (rc < 0) {
                close(fd);
                FD_CLR(fd, &all);
                modbus_mapping_free(mappings[fd]);
                mappings[fd] = NULL;
            }
        }
    }
    for (int fd = 0; fd <= maxfd; fd++) {
        if (FD_ISSET(fd, &all))
            close(fd);
        modbus_mapping_free(mappings[fd]);
    }
}

static void server_start(void)
{
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", 0);
    uv_thread_create(&server_thread, server_main, ctx);
    while (server_port == 0)
        usleep(1000);
}

/* ---- CPU accounting ------------------------------------------------------ */

/* CPU time (ns) of the process, of this (the loop) thread and of the device
 * thread; the rest of the process is the client side (bare threads or
 * doppel's workers). */
typedef struct {
    uint64_t wall, process, loop, server;
} cpu_t;

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static cpu_t cpu_now(void)
{
    clockid_t srv;
    cpu_t c = {.wall = uv_hrtime(),
               .process = clock_ns(CLOCK_PROCESS_CPUTIME_ID),
               .loop = clock_ns(CLOCK_THREAD_CPUTIME_ID)};
    if (pthread_getcpuclockid(server_thread, &srv) == 0)
        c.server = clock_ns(srv);
    return c;
}

/* "cores: 1.93 (loop 0.00, clients 1.20, device 0.73); ns/register: ..." */
static void cpu_print(const char *what, const cpu_t *a, const cpu_t *b, double regs)
{
    double wall = (double)(b->wall - a->wall);
    double loop = (double)(b->loop - a->loop), srv = (double)(b->server - a->server);
    double all = (double)(b->process - a->process), cli = all - loop - srv;
    if (regs <= 0 || wall <= 0)
        return;
    printf("  %-18s cores %.2f (loop %.2f, clients %.2f, device %.2f); "
           "CPU ns/register: loop %.1f, clients %.1f, device %.1f, all %.1f\n",
           what, all / wall, loop / wall, cli / wall, srv / wall, loop / regs, cli / regs,
           srv / regs, all / regs);
}

/* One figure summed over its rounds: registers, wall seconds and the CPU
 * time used between each round's start and end. */
typedef struct {
    double regs, secs;
    cpu_t cpu; /* sums of (end - start) */
} fig_t;

static void fig_add(fig_t *f, double regs, double secs, const cpu_t *a, const cpu_t *b)
{
    f->regs += regs;
    f->secs += secs;
    f->cpu.wall += b->wall - a->wall;
    f->cpu.process += b->process - a->process;
    f->cpu.loop += b->loop - a->loop;
    f->cpu.server += b->server - a->server;
}

static double fig_rate(const fig_t *f)
{
    return f->secs > 0 ? f->regs / f->secs : 0;
}

static void fig_print(const char *what, const fig_t *f)
{
    cpu_t zero = {0};
    cpu_print(what, &zero, &f->cpu, f->regs);
}

/* ---- bare libmodbus clients --------------------------------------------- */

typedef struct {
    uv_thread_t thread;
    uint64_t deadline;
    uint64_t regs;
    int errors;
} bare_t;

static void bare_main(void *arg)
{
    bare_t *b = arg;
    pthread_setname_np(pthread_self(), "bare");
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", server_port);
    if (modbus_connect(ctx) < 0) {
        b->errors++;
        modbus_free(ctx);
        return;
    }
    uint16_t regs[REGS];
    while (uv_hrtime() < b->deadline) {
        if (modbus_read_registers(ctx, 0, REGS, regs) == REGS)
            b->regs += REGS;
        else
            b->errors++;
    }
    modbus_close(ctx);
    modbus_free(ctx);
}

/* One round of `ndev` bare clients, added to `f`; returns the errors. */
static int bare_round(int ndev, fig_t *f)
{
    bare_t *b = calloc((size_t)ndev, sizeof *b);
    cpu_t c0 = cpu_now();
    uint64_t t0 = uv_hrtime(), deadline = t0 + (uint64_t)(SECONDS * 1e9);
    for (int i = 0; i < ndev; i++) {
        b[i].deadline = deadline;
        uv_thread_create(&b[i].thread, bare_main, &b[i]);
    }
    uint64_t total = 0;
    int errors = 0;
    for (int i = 0; i < ndev; i++) {
        uv_thread_join(&b[i].thread);
        total += b[i].regs;
        errors += b[i].errors;
    }
    cpu_t c1 = cpu_now();
    fig_add(f, (double)total, (double)(uv_hrtime() - t0) / 1e9, &c0, &c1);
    free(b);
    return errors;
}

/* ---- doppel --------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    dp_plant_t *plant;
    char dir[64];
} run_t;

/* `every`: the poll interval of the register tags ("0": back to back);
 * `rule`: whether the twin watches every tag with its on_update rule. */
static int open_plant(run_t *r, int ndev, const char *every, bool rule)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/doppel-bench-XXXXXX");
    if (mkdtemp(r->dir) == NULL)
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/plant.lua", r->dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "-- Generated by bench_modbus.\n"
            "plant { name = 'bench' }\n"
            "local tags = {}\n"
            "for d = 0, %d do\n"
            "  device ('d' .. d) { driver = 'modbus', host = '127.0.0.1', port = %d,\n"
            "                      timeout = '2s' }\n"
            "  for i = 0, %d do\n"
            "    tags['d' .. d .. '_r' .. i] = { device = 'd' .. d, address = i, every = '%s' }\n"
            "  end\n"
            "end\n"
            "tags.sp = { device = 'd0', address = 500, writable = true, every = '1s' }\n"
            "twin 'rule' { script = 'rule.lua', tags = tags }\n",
            ndev - 1, server_port, REGS - 1, every);
    fclose(f);
    snprintf(path, sizeof path, "%s/rule.lua", r->dir);
    f = fopen(path, "w");
    if (!rule)
        fprintf(f, "-- No rule: nothing watches the tags.\n");
    else
        fprintf(f, "-- The rule: a running maximum over every register.\n"
                   "state.max = 0\n"
                   "local names = {}\n"
                   "for name in pairs(tags) do names[#names + 1] = name end\n"
                   "twin.on_update(names, function(changed, values)\n"
                   "  local m = state.max\n"
                   "  for i = 1, #changed do\n"
                   "    local v = values[i]\n"
                   "    if v > m then m = v end\n"
                   "  end\n"
                   "  state.max = m\n"
                   "end)\n");
    fclose(f);
    uv_loop_init(&r->loop);
    char *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", r->dir);
    dp_plant_opts_t o = {.path = path, .loop = &r->loop};
    r->plant = dp_plant_open(&o, &err);
    if (r->plant == NULL || dp_plant_start(r->plant, &err) < 0) {
        fprintf(stderr, "bench_modbus: %s\n", err);
        free(err);
        return -1;
    }
    return 0;
}

static int close_plant(run_t *r)
{
    dp_plant_stop(r->plant);
    uv_run(&r->loop, UV_RUN_NOWAIT);
    dp_plant_free(r->plant);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&r->loop);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", r->dir);
    if (system(cmd) != 0)
        rc = -1;
    return rc;
}

static uint64_t samples(run_t *r)
{
    dp_store_t *s = dp_plant_store(r->plant);
    uint64_t n = 0;
    for (int i = 0; i < dp_store_count(s); i++)
        n += dp_store_get(s, i)->writes;
    return n;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void run_for(run_t *r, double secs)
{
    uv_timer_t tick;
    uv_timer_init(&r->loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    uint64_t until = uv_hrtime() + (uint64_t)(secs * 1e9);
    while (uv_hrtime() < until)
        uv_run(&r->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&r->loop, UV_RUN_NOWAIT);
}

/* Polls for SECONDS after a warm-up, adding what reached the store to `f`. */
static void doppel_round(run_t *r, fig_t *f)
{
    run_for(r, 0.3); /* connect and warm up */
    uint64_t s0 = samples(r), t0 = uv_hrtime();
    cpu_t c0 = cpu_now();
    run_for(r, SECONDS);
    cpu_t c1 = cpu_now();
    fig_add(f, (double)(samples(r) - s0), (double)(uv_hrtime() - t0) / 1e9, &c0, &c1);
}

/* ---- write round trip ---------------------------------------------------- */

typedef struct {
    run_t *r;
    int n;
    uint64_t t0;
    double ms[WRITES];
    int failed;
    uv_timer_t next;
} writes_t;

static void submit_next(uv_timer_t *t);

static void on_written(const dp_cmd_t *cmd, void *ud)
{
    writes_t *w = ud;
    if (cmd->outcome == DP_CMD_PENDING)
        return;
    if (cmd->outcome != DP_CMD_DONE) {
        fprintf(stderr, "bench_modbus: write %s: %s\n", dp_cmd_outcome_name(cmd->outcome),
                cmd->reason);
        w->failed++;
    }
    w->ms[w->n++] = (double)(uv_hrtime() - w->t0) / 1e6;
    if (w->n < WRITES)
        uv_timer_start(&w->next, submit_next, 0, 0);
}

static void submit_next(uv_timer_t *t)
{
    writes_t *w = t->data;
    dp_value_t v = dp_num(w->n % 1000);
    w->t0 = uv_hrtime();
    dp_guard_submit(dp_plant_guard(w->r->plant), "bench", "rule.sp", &v, on_written, w);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int write_round_trip(run_t *r, double *p50, double *p99)
{
    static writes_t w;
    memset(&w, 0, sizeof w);
    w.r = r;
    uv_timer_init(&r->loop, &w.next);
    w.next.data = &w;
    uv_timer_start(&w.next, submit_next, 0, 0);
    uint64_t limit = uv_hrtime() + (uint64_t)60e9;
    while (w.n < WRITES && uv_hrtime() < limit)
        uv_run(&r->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&w.next, NULL);
    uv_run(&r->loop, UV_RUN_NOWAIT);
    if (w.n < WRITES || w.failed > 0) {
        fprintf(stderr, "bench_modbus: %d of %d writes confirmed, %d failed\n", w.n, WRITES,
                w.failed);
        return -1;
    }
    qsort(w.ms, WRITES, sizeof w.ms[0], cmp_double);
    *p50 = w.ms[WRITES / 2];
    *p99 = w.ms[WRITES * 99 / 100];
    return 0;
}

/* One round of a doppel figure, added to `f`; the rule's statistics are
 * summed into `ts`. Returns -1 when the plant cannot open or close. */
static int doppel_run(int ndev, bool rule, fig_t *f, dp_twin_stats_t *ts)
{
    run_t r;
    if (open_plant(&r, ndev, "0", rule) < 0)
        return -1;
    doppel_round(&r, f);
    dp_twin_stats_t one;
    dp_twin_get_stats(dp_plant_twin(r.plant, "rule"), &one);
    ts->calls += one.calls;
    ts->errors += one.errors;
    if (close_plant(&r) < 0) {
        fprintf(stderr, "bench_modbus: the plant did not close cleanly\n");
        return -1;
    }
    return 0;
}

/* `bench_modbus DEVICES bare|none|rule|rule10`: that one figure only
 * (ROUNDS rounds), for a profiler (perf record -g build/bench_modbus 50 none). */
static int one_figure(int ndev, const char *mode)
{
    fig_t f = {0};
    dp_twin_stats_t ts = {0};
    bool bare = strcmp(mode, "bare") == 0, rule = strncmp(mode, "rule", 4) == 0;
    if (strcmp(mode, "rule10") == 0)
        atomic_store(&change_stride, 10);
    else if (!bare && strcmp(mode, "rule") != 0 && strcmp(mode, "none") != 0) {
        fprintf(stderr, "usage: bench_modbus [DEVICES bare|none|rule|rule10]\n");
        return 1;
    }
    int bad = 0;
    for (int k = 0; k < ROUNDS; k++)
        bad |= bare ? bare_round(ndev, &f) : doppel_run(ndev, rule, &f, &ts);
    static const char *const what[] = {
        "bare:", "doppel, no rule:", "doppel, rule:", "rule, 1/10 change:"};
    int m = bare ? 0 : !rule ? 1 : atomic_load(&change_stride) == 1 ? 2 : 3;
    printf("%d devices, %s %.0f regs/s\n", ndev, what[m], fig_rate(&f));
    fig_print(what[m], &f);
    return bad != 0 || f.regs <= 0 || ts.errors > 0;
}

int main(int argc, char **argv)
{
    dp_log_set_level(DP_LOG_WARN);
    server_start();
    if (argc == 3) {
        int rc = one_figure(atoi(argv[1]) > 0 ? atoi(argv[1]) : 1, argv[2]);
        atomic_store(&server_stop, true);
        uv_thread_join(&server_thread);
        return rc;
    }
    int status = 0;
    printf("bench_modbus: %d u16 registers per device, read 125 at a time from a libmodbus\n"
           "server on 127.0.0.1; doppel polls with every = 0 into the store, without a rule\n"
           "and with one on_update rule on every tag; %d rounds of %.0f s per figure, the\n"
           "figures taking turns (the machine's drift hits them alike); the device changes\n"
           "every register on every request, and in the last figure one in ten\n\n",
           REGS, ROUNDS, SECONDS);
    printf("%8s %14s %16s %6s %16s %6s %17s %6s\n", "devices", "bare regs/s", "no-rule regs/s",
           "ratio", "rule regs/s", "ratio", "rule 1/10 regs/s", "ratio");
    static const int ndevs[] = {1, 50};
    for (size_t k = 0; k < 2; k++) {
        int ndev = ndevs[k], errors = 0;
        fig_t bare = {0}, none = {0}, rule = {0}, rule10 = {0};
        dp_twin_stats_t nts = {0}, rts = {0}, r10ts = {0};
        for (int round = 0; round < ROUNDS; round++) {
            errors += bare_round(ndev, &bare);
            if (doppel_run(ndev, false, &none, &nts) < 0 || doppel_run(ndev, true, &rule, &rts) < 0)
                return 1;
            atomic_store(&change_stride, 10);
            int rc = doppel_run(ndev, true, &rule10, &r10ts);
            atomic_store(&change_stride, 1);
            if (rc < 0)
                return 1;
        }
        /* The write round trip is measured with the registers polled every
         * 100 ms: polling back to back keeps the ingest queue full, and a
         * command's outcome would wait behind that backlog. */
        double p50 = 0, p99 = 0;
        int wrc = 0;
        if (k == 0) {
            run_t r;
            if (open_plant(&r, 1, "100ms", true) < 0)
                return 1;
            run_for(&r, 0.3);
            wrc = write_round_trip(&r, &p50, &p99);
            if (close_plant(&r) < 0)
                status = 1;
        }
        double b = fig_rate(&bare), n = fig_rate(&none), r = fig_rate(&rule);
        double r10 = fig_rate(&rule10);
        double rn = b > 0 ? n / b : 0, rr = b > 0 ? r / b : 0, rr10 = b > 0 ? r10 / b : 0;
        printf("%8d %14.0f %16.0f %6.2f %16.0f %6.2f %17.0f %6.2f%s\n", ndev, b, n, rn, r, rr, r10,
               rr10, rr >= AIM ? "" : "  (aim >= 0.9)");
        fig_print("bare:", &bare);
        fig_print("doppel, no rule:", &none);
        fig_print("doppel, rule:", &rule);
        fig_print("rule, 1/10 change:", &rule10);
        if (errors > 0 || b <= 0 || n <= 0 || r <= 0 || r10 <= 0 || rts.errors > 0 ||
            rts.calls == 0 || r10ts.errors > 0 || r10ts.calls == 0 || nts.errors > 0) {
            fprintf(stderr, "bench_modbus: %d bare errors, %llu rule errors, %llu rule calls\n",
                    errors, (unsigned long long)rts.errors, (unsigned long long)rts.calls);
            status = 1;
        }
        if (k == 0) {
            if (wrc < 0) {
                fprintf(stderr, "bench_modbus: writes failed\n");
                status = 1;
            }
            printf("write round trip (command submitted -> FC06 confirmed; 125 registers "
                   "polled every 100 ms), %d writes: p50 %.3f ms, p99 %.3f ms\n",
                   WRITES, p50, p99);
        }
    }
    atomic_store(&server_stop, true);
    uv_thread_join(&server_thread);
    return status;
}
