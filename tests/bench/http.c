/* bench_http: the HTTP server's request rate and live-stream fan-out.
 *
 * A plant with 100 tags on the sim driver, each sampled every 10 ms (10,000
 * changes per second in all), serves HTTP on 127.0.0.1 on its own loop.
 *
 * 1. wrk (Debian's) runs for 3 s against GET /api/v1/tags (all 100 tags as
 *    JSON) and, as the baseline measured in the same run, against GET
 *    /healthz (the smallest answer the server gives). The ratio says how much
 *    of the bare request rate the full tag listing keeps.
 * 2. 100 live-stream clients (GET /api/v1/stream, in this process, on the
 *    same loop as the server) count the tag changes they receive for 5 s.
 *    The baseline is what they should receive: 100 x the changes the store
 *    accepted in the same 5 s. The ratio is delivered / expected.
 *
 * Figures are printed, not asserted. Exit 1 only when something is
 * functionally wrong: wrk fails or reports no rate, a client cannot connect
 * or receives nothing, or the loop does not close cleanly. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "runtime/http.h"
#include "runtime/log.h"
#include "runtime/plant.h"

#define NCLIENTS   100
#define NTAGS      100
#define WRK_SECS   "3s"
#define FANOUT_SEC 5

static uv_loop_t loop;
static dp_plant_t *plant;
static dp_http_t *http;
static int port;
static int failed;

static uint64_t store_writes(void)
{
    dp_store_t *s = dp_plant_store(plant);
    uint64_t n = 0;
    for (int i = 0, c = dp_store_count(s); i < c; i++)
        n += dp_store_get(s, i)->writes;
    return n;
}

/* ---- wrk ----------------------------------------------------------------- */

typedef struct {
    uv_process_t proc;
    uv_pipe_t out;
    char buf[8192];
    size_t len;
    int exited, closed;
    void (*done)(double rps);
    const char *what;
} wrk_t;

static wrk_t wrk;

static void wrk_finish(void)
{
    if (!wrk.exited || wrk.closed < 2)
        return;
    const char *r = strstr(wrk.buf, "Requests/sec:");
    double rps = r != NULL ? atof(r + 13) : 0;
    if (rps <= 0) {
        fprintf(stderr, "bench_http: wrk (%s) reported no rate:\n%s\n", wrk.what, wrk.buf);
        failed = 1;
    }
    wrk.done(rps);
}

static void wrk_closed(uv_handle_t *h)
{
    (void)h;
    wrk.closed++;
    wrk_finish();
}

static void wrk_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)h;
    (void)size;
    *buf = uv_buf_init(wrk.buf + wrk.len, (unsigned)(sizeof wrk.buf - 1 - wrk.len));
}

static void wrk_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n > 0) {
        wrk.len += (size_t)n;
        wrk.buf[wrk.len] = '\0';
    } else if (n < 0) {
        uv_close((uv_handle_t *)s, wrk_closed);
    }
}

static void wrk_exit(uv_process_t *p, int64_t status, int sig)
{
    if (status != 0 || sig != 0) {
        fprintf(stderr, "bench_http: wrk exited %lld (signal %d)\n", (long long)status, sig);
        failed = 1;
    }
    wrk.exited = 1;
    uv_close((uv_handle_t *)p, wrk_closed);
}

static void run_wrk(const char *path, const char *what, void (*done)(double))
{
    memset(&wrk, 0, sizeof wrk);
    wrk.done = done;
    wrk.what = what;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    char *args[] = {"wrk", "-t1", "-c32", "-d" WRK_SECS, url, NULL};
    uv_pipe_init(&loop, &wrk.out, 0);
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&wrk.out},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t o = {
        .file = "wrk", .args = args, .exit_cb = wrk_exit, .stdio_count = 3, .stdio = stdio};
    int rc = uv_spawn(&loop, &wrk.proc, &o);
    if (rc != 0) {
        fprintf(stderr, "bench_http: cannot run wrk: %s (sh .ci/install-deps)\n", uv_strerror(rc));
        failed = 1;
        uv_close((uv_handle_t *)&wrk.out, NULL);
        uv_close((uv_handle_t *)&wrk.proc, NULL);
        dp_http_stop(http);
        dp_plant_stop(plant);
        return;
    }
    uv_read_start((uv_stream_t *)&wrk.out, wrk_alloc, wrk_read);
}

/* ---- stream clients ------------------------------------------------------ */

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    char buf[65536];
    int match; /* progress through "event: tag" across reads */
    uint64_t changes;
    int hello;
} client_t;

static client_t *clients;
static int hellos, connected_fail;
static uv_timer_t timer;
static uint64_t t_start, writes_start, changes_start;
static double rps_health, rps_tags;

static void cl_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)size;
    client_t *c = h->data;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static const char pat[] = "event: tag";

static void cl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    client_t *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, NULL);
        return;
    }
    if (!c->hello && memmem(buf->base, (size_t)n, "event: hello", 12) != NULL) {
        c->hello = 1;
        hellos++;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == pat[c->match]) {
            if (++c->match == (int)sizeof pat - 1) {
                c->changes++;
                c->match = 0;
            }
        } else {
            c->match = ch == pat[0] ? 1 : 0;
        }
    }
}

static void cl_connected(uv_connect_t *req, int status)
{
    client_t *c = req->data;
    if (status != 0) {
        fprintf(stderr, "bench_http: stream client cannot connect: %s\n", uv_strerror(status));
        connected_fail++;
        failed = 1;
        uv_close((uv_handle_t *)&c->tcp, NULL);
        return;
    }
    static const char get[] = "GET /api/v1/stream?events=0 HTTP/1.1\r\nHost: bench\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)get, sizeof get - 1);
    uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, NULL);
    uv_read_start((uv_stream_t *)&c->tcp, cl_alloc, cl_read);
}

static uint64_t total_changes(void)
{
    uint64_t n = 0;
    for (int i = 0; i < NCLIENTS; i++)
        n += clients[i].changes;
    return n;
}

static void finish(uv_timer_t *t)
{
    double secs = (double)(uv_hrtime() - t_start) / 1e9;
    double produced = (double)(store_writes() - writes_start) / secs;
    double delivered = (double)(total_changes() - changes_start) / secs;
    double expected = produced * NCLIENTS;
    printf("live stream: %d clients, %.0f changes/s produced, %.0f deliveries/s "
           "(expected %.0f)\n",
           NCLIENTS, produced, delivered, expected);
    printf("ratio delivered/expected: %.3f\n", expected > 0 ? delivered / expected : 0);
    if (delivered <= 0) {
        fprintf(stderr, "bench_http: the stream clients received nothing\n");
        failed = 1;
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    for (int i = 0; i < NCLIENTS; i++) {
        if (!uv_is_closing((uv_handle_t *)&clients[i].tcp))
            uv_close((uv_handle_t *)&clients[i].tcp, NULL);
    }
    dp_http_stop(http);
    dp_plant_stop(plant);
}

static void wait_hellos(uv_timer_t *t)
{
    if (hellos + connected_fail < NCLIENTS)
        return;
    if (connected_fail > 0) {
        finish(t);
        return;
    }
    /* Everyone is listening: measure from now. */
    t_start = uv_hrtime();
    writes_start = store_writes();
    changes_start = total_changes();
    uv_timer_stop(t);
    uv_timer_start(t, finish, FANOUT_SEC * 1000, 0);
}

static void start_fanout(double rps)
{
    rps_tags = rps;
    printf("GET /api/v1/tags (%d tags): %.0f requests/s\n", NTAGS, rps_tags);
    printf("ratio tags/healthz: %.3f\n", rps_health > 0 ? rps_tags / rps_health : 0);
    fflush(stdout);
    if (failed) {
        dp_http_stop(http);
        dp_plant_stop(plant);
        return;
    }
    clients = calloc(NCLIENTS, sizeof *clients);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    for (int i = 0; i < NCLIENTS; i++) {
        client_t *c = &clients[i];
        uv_tcp_init(&loop, &c->tcp);
        c->tcp.data = c;
        c->conn.data = c;
        uv_tcp_connect(&c->conn, &c->tcp, (struct sockaddr *)&addr, cl_connected);
    }
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, wait_hellos, 10, 10);
}

static void after_health(double rps)
{
    rps_health = rps;
    printf("GET /healthz (baseline): %.0f requests/s\n", rps);
    fflush(stdout);
    run_wrk("/api/v1/tags", "tags", start_fanout);
}

/* ---- setup ----------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    dp_log_set_level(DP_LOG_WARN);
    char dir[] = "/tmp/doppel-bench-http-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    write_file(dir, "plant.lua",
               "-- Generated by bench_http: 100 tags sampled every 10 ms.\n"
               "plant { name = \"bench\", http = { listen = \"127.0.0.1:0\", rate = 1e6,\n"
               "        burst = 1e7, max_streams = 1000 } }\n"
               "device \"sim\" { driver = \"sim\", seed = 1 }\n"
               "local tags = {}\n"
               "for i = 0, 99 do\n"
               "   tags[\"t\" .. i] = { device = \"sim\", wave = \"sine\", mean = 50,\n"
               "      amplitude = 10, period = \"10s\", noise = 0.1, every = \"10ms\",\n"
               "      unit = \"bar\" }\n"
               "end\n"
               "twin \"bench\" { script = \"bench.lua\", tags = tags }\n");
    write_file(dir, "bench.lua", "-- Generated by bench_http: no rules.\n");
    char path[512];
    snprintf(path, sizeof path, "%s/plant.lua", dir);

    uv_loop_init(&loop);
    char *err = NULL;
    dp_plant_opts_t po = {.path = path, .loop = &loop, .data_dir = dir};
    plant = dp_plant_open(&po, &err);
    if (plant == NULL || dp_plant_start(plant, &err) < 0) {
        fprintf(stderr, "bench_http: %s\n", err);
        return 1;
    }
    http = dp_http_start(&loop, plant, dp_plant_http(plant), &err);
    if (http == NULL) {
        fprintf(stderr, "bench_http: %s\n", err);
        return 1;
    }
    port = dp_http_port(http);
    printf("bench_http: %d tags x 100 samples/s, server on 127.0.0.1:%d, wrk -t1 -c32 -d%s\n",
           NTAGS, port, WRK_SECS);
    fflush(stdout);
    run_wrk("/healthz", "healthz", after_health);
    uv_run(&loop, UV_RUN_DEFAULT);
    dp_plant_free(plant);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "bench_http: loop closed with handles open\n");
        failed = 1;
    }
    free(clients);
    for (const char *f = "plant.lua"; f != NULL;
         f = strcmp(f, "plant.lua") == 0 ? "bench.lua" : NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, f);
        unlink(path);
    }
    rmdir(dir);
    return failed;
}
