/* bench_mqtt: samples published end to end through a real mosquitto broker,
 * and the backlog drain rate after an outage.
 *
 * A plant (real time, journaling) with one input tag and an mqtt device
 * publishing its journal (QoS 1, batches of 200) to a mosquitto started here
 * on a free loopback port. A subscriber (an MQTT client on the same loop)
 * counts the items it receives.
 *
 *  1. Live: 200,000 samples are written to the store, 1,000 per loop turn;
 *     the clock stops when the subscriber has all of them.
 *  2. Outage: the broker is stopped, 200,000 more samples are written and
 *     journaled, the broker is started again; the clock runs from the
 *     restart until the publisher's backlog is 0 (everything acknowledged).
 *  3. Baseline: the same messages (same size, same batching, QoS 1, the same
 *     in-flight window) published by a bare client straight to the broker,
 *     without store, journal or cursor, to the same subscriber.
 *
 * Printed: samples/s for each and the ratio end-to-end / baseline. The
 * program exits 1 only if something is functionally wrong (a sample missing,
 * a backlog that does not drain, a loop that does not close cleanly). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "drivers/driver.h"
#include "drivers/mqtt/client.h"
#include "runtime/log.h"
#include "runtime/plant.h"

#define N     200000
#define TURN  1000
#define BATCH 200

static char dir[64], conf[128];
static int port;
static pid_t broker = -1;
static uv_loop_t loop;
static uint64_t items_seen;
static int subs_connected;

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &n);
    close(s);
    return ntohs(a.sin_port);
}

static bool port_open(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    close(s);
    return ok;
}

static void start_broker(void)
{
    broker = fork();
    if (broker == 0) {
        int null = open("/dev/null", 1);
        dup2(null, 1);
        dup2(null, 2);
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !port_open(); i++)
        usleep(20000);
    if (!port_open()) {
        fprintf(stderr, "bench_mqtt: mosquitto did not start\n");
        exit(1);
    }
}

static void stop_broker(void)
{
    if (broker > 0) {
        kill(broker, SIGTERM);
        waitpid(broker, NULL, 0);
        broker = -1;
    }
}

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

/* Runs the loop until done(ud) or `timeout` seconds; false on timeout. */
static bool run_until(bool (*done)(void *), void *ud, double timeout)
{
    double end = now_s() + timeout;
    while (!done(ud)) {
        if (now_s() > end)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
}

static void on_sub_msg(dp_mqtt_client_t *c, const char *topic, const void *p, size_t len,
                       const char *resp, void *ud)
{
    (void)c, (void)topic, (void)resp, (void)ud;
    /* A batch {"seq":S,"items":[{"seq":..},...]} holds one "seq" more than items. */
    uint64_t n = 0;
    const char *s = p, *end = s + len;
    while ((s = memmem(s, (size_t)(end - s), "\"seq\":", 6)) != NULL) {
        n++;
        s += 6;
    }
    items_seen += n > 0 ? n - 1 : 0;
}

static void on_sub_conn(dp_mqtt_client_t *c, void *ud)
{
    (void)c, (void)ud;
    subs_connected++;
}

static bool seen_at_least(void *ud)
{
    return items_seen >= *(uint64_t *)ud;
}

/* ---- the plant ---------------------------------------------------------- */

static dp_plant_t *plant;
static int tag;
static long written, to_write;

static void on_idle(uv_idle_t *h)
{
    dp_store_t *st = dp_plant_store(plant);
    dp_time_t t = dp_clock_now(dp_plant_clock(plant));
    for (int i = 0; i < TURN && written < to_write; i++) {
        dp_value_t v = dp_num((double)++written);
        dp_store_write(st, tag, &v, t, DP_Q_GOOD);
    }
    if (written >= to_write)
        uv_idle_stop(h);
}

static double stat_of(const char *name)
{
    dp_device_t *d = dp_plant_device_at(plant, 0);
    dp_stat_t st[32];
    size_t n = d->driver->stats(d, st, 32);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(st[i].name, name) == 0)
            return st[i].value;
    }
    return -1;
}

static bool connected(void *ud)
{
    (void)ud;
    return stat_of("connected") == 1 && subs_connected > 0;
}

static bool disconnected(void *ud)
{
    (void)ud;
    return stat_of("connected") == 0;
}

static bool all_written(void *ud)
{
    (void)ud;
    return written >= to_write;
}

static bool drained(void *ud)
{
    (void)ud;
    return stat_of("connected") == 1 && stat_of("backlog_records") == 0 && stat_of("inflight") == 0;
}

/* ---- baseline publisher ---------------------------------------------------- */

static int inflight;
static long sent_msgs, total_msgs;
static char *batch_payload;
static size_t batch_len;
static dp_mqtt_client_t *raw;

static void raw_fill(void)
{
    while (inflight < 1000 / 2 && sent_msgs < total_msgs) {
        if (dp_mqtt_client_publish(raw, "bench/raw", batch_payload, batch_len, 1, false, NULL) < 0)
            return;
        inflight++;
        sent_msgs++;
    }
}

static void on_raw_ack(dp_mqtt_client_t *c, int mid, void *ud)
{
    (void)c, (void)mid, (void)ud;
    inflight--;
    raw_fill();
}

static void on_raw_conn(dp_mqtt_client_t *c, void *ud)
{
    (void)c, (void)ud;
    subs_connected++;
}

int main(void)
{
    dp_log_set_level(DP_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/dp-bench-mqtt-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    port = free_port();
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", dir);
    FILE *f = fopen(conf, "w");
    fprintf(f,
            "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n%s",
            port, getuid() == 0 ? "user root\n" : "");
    fclose(f);
    char path[128], data[128];
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    f = fopen(path, "w");
    fprintf(f,
            "plant { name = \"bench\" }\n"
            "device \"broker\" { driver = \"mqtt\", port = %d, publish = true, batch = %d,\n"
            "  reconnect_min = \"50ms\", reconnect_max = \"100ms\", inflight = 1000 }\n"
            "twin \"T\" { script = \"t.lua\", tags = { x = {} } }\n",
            port, BATCH);
    fclose(f);
    snprintf(data, sizeof data, "%s/t.lua", dir);
    fclose(fopen(data, "w"));
    snprintf(data, sizeof data, "%s/data", dir);
    mkdir(data, 0750);
    start_broker();

    uv_loop_init(&loop);
    int rc = 0;
    char *err = NULL;
    dp_plant_opts_t po = {.path = path, .loop = &loop, .data_dir = data};
    plant = dp_plant_open(&po, &err);
    if (plant == NULL || dp_plant_start(plant, &err) < 0) {
        fprintf(stderr, "bench_mqtt: %s\n", err);
        return 1;
    }
    tag = dp_store_find(dp_plant_store(plant), "T.x");
    dp_mqtt_opts_t so = {.name = "sub",
                         .host = "127.0.0.1",
                         .port = port,
                         .client_id = "bench-sub",
                         .protocol = 5,
                         .keepalive = 30,
                         .clean_session = true};
    dp_mqtt_cbs_t scb = {.connected = on_sub_conn, .message = on_sub_msg};
    dp_mqtt_client_t *sub = dp_mqtt_client_new(&loop, &so, &scb, NULL, &err);
    dp_mqtt_client_subscribe(sub, "doppel/bench/T/data/x", 1);
    dp_mqtt_client_subscribe(sub, "bench/raw", 1);
    dp_mqtt_client_start(sub);
    if (!run_until(connected, NULL, 20)) {
        fprintf(stderr, "bench_mqtt: could not connect\n");
        return 1;
    }

    /* 1. live, end to end */
    uv_idle_t idle;
    uv_idle_init(&loop, &idle);
    to_write = N;
    double t0 = now_s();
    uv_idle_start(&idle, on_idle);
    uint64_t want = N;
    if (!run_until(seen_at_least, &want, 120)) {
        fprintf(stderr, "bench_mqtt: live: %llu of %d samples arrived\n",
                (unsigned long long)items_seen, N);
        rc = 1;
    }
    double live = now_s() - t0;
    printf("bench_mqtt: end to end (store -> journal -> broker -> subscriber, QoS 1, batch %d): "
           "%d samples in %.2f s = %.0f samples/s\n",
           BATCH, N, live, N / live);

    /* 2. outage and drain */
    stop_broker();
    if (!run_until(disconnected, NULL, 20))
        rc = 1;
    to_write = 2L * N;
    uv_idle_start(&idle, on_idle);
    run_until(all_written, NULL, 60);
    double backlog = stat_of("backlog_records");
    start_broker();
    t0 = now_s();
    if (!run_until(drained, NULL, 120)) {
        fprintf(stderr, "bench_mqtt: backlog did not drain (%.0f left)\n",
                stat_of("backlog_records"));
        rc = 1;
    }
    double drain = now_s() - t0;
    printf("bench_mqtt: backlog after an outage: %.0f records drained in %.2f s after the broker "
           "restarted (reconnect included) = %.0f records/s\n",
           backlog, drain, backlog / drain);

    /* 3. baseline: the same messages from a bare client */
    dp_mqtt_client_free(sub, 0);
    subs_connected = 0;
    items_seen = 0;
    sub = dp_mqtt_client_new(&loop, &so, &scb, NULL, &err);
    dp_mqtt_client_subscribe(sub, "bench/raw", 1);
    dp_mqtt_client_start(sub);
    dp_mqtt_opts_t ro = so;
    ro.client_id = "bench-raw";
    dp_mqtt_cbs_t rcb = {.connected = on_raw_conn, .published = on_raw_ack};
    raw = dp_mqtt_client_new(&loop, &ro, &rcb, NULL, &err);
    dp_mqtt_client_start(raw);
    int target = 2;
    while (subs_connected < target)
        uv_run(&loop, UV_RUN_ONCE);
    /* A batch of BATCH items shaped like the plant's. */
    size_t cap = 64 + BATCH * 80;
    batch_payload = malloc(cap);
    size_t o = (size_t)snprintf(batch_payload, cap, "{\"seq\":%d,\"items\":[", BATCH);
    for (int i = 1; i <= BATCH; i++)
        o += (size_t)snprintf(batch_payload + o, cap - o,
                              "%s{\"seq\":%d,\"ts\":1796104156936478,\"v\":%d,\"q\":\"good\"}",
                              i > 1 ? "," : "", 100000 + i, 100000 + i);
    o += (size_t)snprintf(batch_payload + o, cap - o, "]}");
    batch_len = o;
    total_msgs = N / BATCH;
    t0 = now_s();
    raw_fill();
    want = N;
    if (!run_until(seen_at_least, &want, 120))
        rc = 1;
    double base = now_s() - t0;
    printf("bench_mqtt: baseline (bare client, same messages, QoS 1): %d samples in %.2f s = "
           "%.0f samples/s\n",
           N, base, N / base);
    printf("bench_mqtt: ratio end to end / baseline = %.2f\n", base / live);

    dp_mqtt_client_free(raw, 0);
    dp_mqtt_client_free(sub, 0);
    uv_close((uv_handle_t *)&idle, NULL);
    dp_plant_stop(plant);
    uv_run(&loop, UV_RUN_DEFAULT);
    dp_plant_free(plant);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "bench_mqtt: loop not closed cleanly\n");
        rc = 1;
    }
    stop_broker();
    free(batch_payload);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
