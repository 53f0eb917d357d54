/* The modbus client against real peers on 127.0.0.1: a pymodbus TCP server
 * holding every data type in every word order (decoded exactly), a pymodbus
 * RTU server with two unit ids on one end of a socat pty pair, and faults:
 * the peer killed and restarted mid-poll, answers slower than the timeout,
 * exception responses and garbage bytes. doppel keeps running, marks
 * quality with the reason, recovers, and the other devices keep polling. */
#include <math.h>

#include "integration/mb_harness.h"

static const char *const types[] = {"u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"};
static const char *const orders[] = {"ABCD", "CDAB", "BADC", "DCBA"};

/* The values mb_peer.py puts at (type i, order j); see its LAYOUT. */
static double peer_value(int i, int j)
{
    switch (i) {
    case 0:
        return 0xA1B2 + j;
    case 1:
        return -12345 - j;
    case 2:
        return 0xA1B2C3D4u + (double)j;
    case 3:
        return -123456789 - j;
    case 4:
        return (double)(UINT64_C(0x0123456789ABCD00) + (uint64_t)j * 256);
    case 5:
        return -(double)(UINT64_C(0x0123456789ABCD00) + (uint64_t)j * 256);
    case 6:
        return (double)(float)(3.25 * (j + 1));
    default:
        return 3.141592653589793 * (j + 1);
    }
}

static char *tcp_plant(int port, const char *extra_devices, const char *extra_tags)
{
    char *tags = dp_xstrdup("");
    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 4; j++) {
            char *t = dp_xasprintf("%s  %s_%s = { device = 'peer', address = %d, type = '%s', "
                                   "order = '%s', every = '100ms' },\n",
                                   tags, types[i], orders[j], (i * 4 + j) * 4, types[i], orders[j]);
            free(tags);
            tags = t;
        }
    }
    char *plant = dp_xasprintf(
        "device 'peer' { driver = 'modbus', host = '127.0.0.1', port = %d, timeout = '300ms',\n"
        "                retries = 0, reconnect_min = '50ms', reconnect_max = '200ms' }\n"
        "%s"
        "twin 'm' { script = 't.lua', tags = {\n%s"
        "  text = { device = 'peer', address = 140, type = 'string', count = 7, every = '100ms' "
        "},\n"
        "  text_le = { device = 'peer', address = 150, type = 'string', count = 7, order = "
        "'BADC',\n"
        "              every = '100ms' },\n"
        "  bit0 = { device = 'peer', address = 160, type = 'bit', bit = 0, every = '100ms' },\n"
        "  bit1 = { device = 'peer', address = 160, type = 'bit', bit = 1, every = '100ms' },\n"
        "  bit15 = { device = 'peer', address = 160, type = 'bit', bit = 15, every = '100ms' },\n"
        "  coil0 = { device = 'peer', area = 'coil', address = 0, every = '100ms' },\n"
        "  coil1 = { device = 'peer', area = 'coil', address = 1, every = '100ms' },\n"
        "  coil7 = { device = 'peer', area = 'coil', address = 7, every = '100ms' },\n"
        "  di1 = { device = 'peer', area = 'discrete', address = 1, every = '100ms' },\n"
        "  di3 = { device = 'peer', area = 'discrete', address = 3, every = '100ms' },\n"
        "  level = { device = 'peer', area = 'input', address = 0, scale = 0.01, offset = -5,\n"
        "            every = '100ms' },\n"
        "  neg = { device = 'peer', area = 'input', address = 1, type = 'i16', every = '100ms' },\n"
        "  missing = { device = 'peer', address = 60000, every = '100ms' },\n"
        "%s} }\n",
        port, extra_devices ? extra_devices : "", tags, extra_tags ? extra_tags : "");
    free(tags);
    return plant;
}

static bool all_have_values(mb_run_t *r, void *ud)
{
    (void)ud;
    static const char *const more[] = {"m.text", "m.text_le", "m.bit0", "m.coil0",
                                       "m.di1",  "m.level",   "m.neg",  "m.bit15"};
    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 4; j++) {
            char name[64];
            snprintf(name, sizeof name, "m.%s_%s", types[i], orders[j]);
            if (mb_tag(r, name)->v.type == DP_NIL)
                return false;
        }
    }
    for (size_t k = 0; k < DP_ARRAY_LEN(more); k++) {
        if (mb_tag(r, more[k])->v.type == DP_NIL)
            return false;
    }
    return mb_tag(r, "m.missing")->quality == DP_Q_BAD && mb_tag(r, "m.missing")->reason != NULL;
}

static void expect_bool(mb_run_t *r, const char *tag, bool want)
{
    const dp_tag_t *t = mb_tag(r, tag);
    cr_assert_eq(t->v.type, DP_BOOL, "%s is not a bool", tag);
    cr_assert_eq(t->v.u.b, want, "%s", tag);
}

Test(modbus_peer, pymodbus_tcp_every_type_every_order)
{
    dp_log_set_level(DP_LOG_WARN);
    int port = mb_free_port();
    pid_t peer = mb_peer_tcp(port, NULL);
    mb_run_t r;
    char *plant = tcp_plant(port, NULL, NULL);
    mb_open(&r, plant);
    free(plant);
    mb_run_until(&r, all_have_values, NULL, 20, "every tag read");

    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 4; j++) {
            char name[64];
            snprintf(name, sizeof name, "m.%s_%s", types[i], orders[j]);
            const dp_tag_t *t = mb_tag(&r, name);
            cr_assert_eq(t->v.type, DP_NUM);
            cr_assert_eq(t->quality, DP_Q_GOOD, "%s", name);
            cr_assert_eq(t->v.u.n, peer_value(i, j), "%s: got %.17g, the peer holds %.17g", name,
                         t->v.u.n, peer_value(i, j));
        }
    }
    cr_assert_str_eq(mb_tag(&r, "m.text")->v.u.s, "doppel-modbus");
    cr_assert_str_eq(mb_tag(&r, "m.text_le")->v.u.s, "doppel-modbus");
    expect_bool(&r, "m.bit0", true);
    expect_bool(&r, "m.bit1", false);
    expect_bool(&r, "m.bit15", true);
    expect_bool(&r, "m.coil0", true);
    expect_bool(&r, "m.coil1", false);
    expect_bool(&r, "m.coil7", true);
    expect_bool(&r, "m.di1", true);
    expect_bool(&r, "m.di3", false);
    cr_assert_float_eq(mb_tag(&r, "m.level")->v.u.n, 1234 * 0.01 - 5, 1e-12);
    cr_assert_eq(mb_tag(&r, "m.neg")->v.u.n, -100);
    /* Exception responses mark only the tags of that request. */
    cr_assert_str_eq(mb_tag(&r, "m.missing")->reason, "exception 2: illegal data address");
    cr_assert_eq(mb_tag(&r, "m.u16_ABCD")->reason, NULL);

    dp_device_t *dev = dp_plant_device_at(r.plant, 0);
    dp_stat_t st[32];
    size_t n = dev->driver->stats(dev, st, 32);
    double requests = -1, exceptions = -1, connected = -1;
    for (size_t k = 0; k < n; k++) {
        if (strcmp(st[k].name, "requests") == 0)
            requests = st[k].value;
        if (strcmp(st[k].name, "exceptions") == 0)
            exceptions = st[k].value;
        if (strcmp(st[k].name, "connected") == 0)
            connected = st[k].value;
    }
    cr_assert_gt(requests, 0);
    cr_assert_gt(exceptions, 0);
    cr_assert_eq(connected, 1);
    mb_close(&r);
    mb_kill(&peer);
}

Test(modbus_peer, rtu_two_units_on_a_pty_pair)
{
    dp_log_set_level(DP_LOG_WARN);
    char tmpl[] = "/tmp/doppel-rtu-XXXXXX";
    char *dir = mkdtemp(tmpl);
    char a[256], b[256], pa[300], pb[300];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(pa, sizeof pa, "pty,raw,echo=0,link=%s", a);
    snprintf(pb, sizeof pb, "pty,raw,echo=0,link=%s", b);
    char *socat_argv[] = {"/usr/bin/socat", pa, pb, NULL};
    pid_t socat = mb_spawn(socat_argv, "/dev/null");
    struct stat sb;
    for (int i = 0; i < 1000 && (stat(a, &sb) != 0 || stat(b, &sb) != 0); i++)
        usleep(10000);
    cr_assert_eq(stat(b, &sb), 0, "socat made no pty pair");
    pid_t peer = mb_peer("rtu", a, NULL, NULL, "/dev/null");

    mb_run_t r;
    char *plant = dp_xasprintf(
        "device 'bus' { driver = 'modbus', device = '%s', baud = 38400, parity = 'none',\n"
        "               timeout = '500ms', retries = 2, reconnect_min = '50ms' }\n"
        "twin 'm' { script = 't.lua', tags = {\n"
        "  u1 = { device = 'bus', address = 170, every = '100ms' },\n"
        "  u2 = { device = 'bus', address = 170, unit_id = 2, every = '100ms' },\n"
        "  f = { device = 'bus', address = 124, type = 'f64', order = 'DCBA', unit_id = 2,\n"
        "        every = '100ms' },\n"
        "  c = { device = 'bus', area = 'coil', address = 3, every = '100ms' },\n"
        "  none = { device = 'bus', address = 170, unit_id = 9, every = '200ms' },\n"
        "} }\n",
        b);
    mb_open(&r, plant);
    free(plant);
    mb_wait_writes(&r, "m.u1", 1, 30);
    mb_wait_writes(&r, "m.u2", 1, 30);
    mb_wait_writes(&r, "m.f", 1, 30);
    mb_wait_writes(&r, "m.c", 1, 30);
    cr_assert_eq(mb_tag(&r, "m.u1")->v.u.n, 1000);
    cr_assert_eq(mb_tag(&r, "m.u2")->v.u.n, 2000);
    cr_assert_eq(mb_tag(&r, "m.f")->v.u.n, 3.141592653589793 * 4);
    cr_assert(mb_tag(&r, "m.c")->v.u.b);
    /* A unit that does not answer times out without taking the bus down. */
    mb_run_until(&r, mb_cond_quality, (const char *[]){"m.none", "bad"}, 30, "unit 9 bad");
    uint64_t before = mb_tag(&r, "m.u1")->writes;
    mb_wait_writes(&r, "m.u1", before + 3, 30);
    mb_close(&r);
    mb_kill(&peer);
    mb_kill(&socat);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(modbus_peer, peer_killed_and_restarted)
{
    dp_log_set_level(DP_LOG_ERROR);
    int port = mb_free_port();
    pid_t peer = mb_peer_tcp(port, NULL);
    mb_run_t r;
    char *plant = tcp_plant(port, NULL, NULL);
    mb_open(&r, plant);
    free(plant);
    mb_wait_quality(&r, "m.u16_ABCD", "good", 20);

    mb_kill(&peer);
    mb_wait_quality(&r, "m.u16_ABCD", "bad", 20);
    cr_assert_str_eq(mb_tag(&r, "m.u16_ABCD")->reason, "disconnected");
    cr_assert_str_eq(mb_tag(&r, "m.f64_DCBA")->reason, "disconnected");
    /* The last value is kept, with its quality marked. */
    cr_assert_eq(mb_tag(&r, "m.u16_ABCD")->v.u.n, 0xA1B2);
    mb_run_for(&r, 0.5); /* a few reconnect attempts against a closed port */

    peer = mb_peer_tcp(port, NULL);
    mb_wait_quality(&r, "m.u16_ABCD", "good", 20);
    cr_assert_null(mb_tag(&r, "m.u16_ABCD")->reason);
    dp_device_t *dev = dp_plant_device_at(r.plant, 0);
    dp_stat_t st[32];
    size_t n = dev->driver->stats(dev, st, 32);
    for (size_t k = 0; k < n; k++) {
        if (strcmp(st[k].name, "reconnects") == 0)
            cr_assert_geq(st[k].value, 1);
        if (strcmp(st[k].name, "last_error") == 0)
            cr_assert_neq(st[k].text[0], '\0');
    }
    mb_close(&r);
    mb_kill(&peer);
}

/* When each failed connection attempt happened (the device's `errors`
 * count going up), seen from the loop every 10 ms. */
typedef struct {
    uint64_t at_ns[8];
    int n;
    double errors;
} attempts_t;

static double stat_of(mb_run_t *r, int dev, const char *name);

static bool attempts_seen(mb_run_t *r, void *ud)
{
    attempts_t *a = ud;
    double e = stat_of(r, 0, "errors");
    if (e > a->errors) {
        /* One tick may see two attempts only if the loop stalled: the
         * gap between them then reads 0 and fails the test, as it should. */
        for (; a->errors < e && a->n < (int)DP_ARRAY_LEN(a->at_ns); a->errors++)
            a->at_ns[a->n++] = uv_hrtime();
    }
    return a->n == (int)DP_ARRAY_LEN(a->at_ns);
}

Test(modbus_peer, reconnect_backs_off_exponentially_up_to_the_maximum)
{
    dp_log_set_level(DP_LOG_ERROR);
    int port = mb_free_port(); /* nobody listens: every connect is refused at once */
    mb_run_t r;
    char *plant = dp_xasprintf(
        "device 'peer' { driver = 'modbus', host = '127.0.0.1', port = %d, timeout = '300ms',\n"
        "                reconnect_min = '40ms', reconnect_max = '160ms' }\n"
        "twin 'm' { script = 't.lua', tags = { u = { device = 'peer', address = 0 } } }\n",
        port);
    mb_open(&r, plant);
    free(plant);
    attempts_t a = {0};
    mb_run_until(&r, attempts_seen, &a, 20, "8 connection attempts");
    /* The waits double from reconnect_min and stop at reconnect_max:
     * 40, 80, 160, 160, ... ms. A loaded machine can only make them
     * longer, so each is checked from below (less the 10 ms the loop's
     * view can be late by, on either end), and the capped ones from above
     * with room for a slow machine: uncapped they would be 320, 640, 1280
     * and 2560 ms. */
    static const double want_ms[] = {40, 80, 160, 160, 160, 160, 160};
    double sum_capped = 0;
    for (int k = 0; k < 7; k++) {
        double gap = (double)(a.at_ns[k + 1] - a.at_ns[k]) / 1e6;
        cr_assert_geq(gap, want_ms[k] - 20, "wait %d before attempt %d: %.1f ms, want %.0f", k + 1,
                      k + 2, gap, want_ms[k]);
        if (k >= 3)
            sum_capped += gap;
    }
    cr_assert_lt(sum_capped, 4 * 160 + 1000, "capped waits took %.0f ms in all, want 640",
                 sum_capped);
    cr_assert_eq(mb_tag(&r, "m.u")->quality, DP_Q_BAD);
    cr_assert_str_eq(mb_tag(&r, "m.u")->reason, "disconnected");
    mb_close(&r);
}

typedef struct {
    mb_run_t *r;
    uint64_t timeouts;
} slow_t;

static double stat_of(mb_run_t *r, int dev, const char *name)
{
    dp_device_t *d = dp_plant_device_at(r->plant, dev);
    dp_stat_t st[32];
    size_t n = d->driver->stats(d, st, 32);
    for (size_t k = 0; k < n; k++) {
        if (strcmp(st[k].name, name) == 0)
            return st[k].value;
    }
    cr_assert_fail("no stat %s", name);
    return 0;
}

static bool three_timeouts(mb_run_t *r, void *ud)
{
    (void)ud;
    return stat_of(r, 1, "timeouts") >= 3;
}

Test(modbus_peer, slow_peer_times_out_and_others_keep_their_rate)
{
    dp_log_set_level(DP_LOG_ERROR);
    int port = mb_free_port(), slow_port = mb_free_port();
    while (slow_port == port)
        slow_port = mb_free_port();
    pid_t peer = mb_peer_tcp(port, NULL);
    pid_t slow = mb_peer_tcp(slow_port, "1.5");
    char *slow_dev = dp_xasprintf(
        "device 'slow' { driver = 'modbus', host = '127.0.0.1', port = %d, timeout = '300ms',\n"
        "                retries = 0, reconnect_min = '50ms', reconnect_max = '100ms' }\n",
        slow_port);
    mb_run_t r;
    char *plant =
        tcp_plant(port, slow_dev, "  late = { device = 'slow', address = 0, every = '100ms' },\n");
    free(slow_dev);
    mb_open(&r, plant);
    free(plant);
    mb_wait_quality(&r, "m.u16_ABCD", "good", 20);
    mb_wait_quality(&r, "m.late", "bad", 20);
    cr_assert_str_eq(mb_tag(&r, "m.late")->reason, "timeout");

    /* While the slow device times out again and again (>= 0.9 s), the good
     * one polls on: at 100 ms it does several times as many requests (at
     * least twice as many is asserted, to leave room for a loaded machine). */
    uint64_t before = mb_tag(&r, "m.u16_ABCD")->writes;
    double t0 = stat_of(&r, 1, "timeouts");
    mb_run_until(&r, three_timeouts, NULL, 30, "three timeouts");
    uint64_t polls = mb_tag(&r, "m.u16_ABCD")->writes - before;
    double timeouts = stat_of(&r, 1, "timeouts") - t0;
    cr_assert_geq(polls, 2 * (uint64_t)(timeouts > 0 ? timeouts : 1),
                  "the good device made %llu polls during %.0f timeouts of the slow one",
                  (unsigned long long)polls, timeouts);
    cr_assert_eq(mb_tag(&r, "m.u16_ABCD")->quality, DP_Q_GOOD);
    mb_close(&r);
    mb_kill(&peer);
    mb_kill(&slow);
}

Test(modbus_peer, garbage_bytes)
{
    dp_log_set_level(DP_LOG_ERROR);
    int port = mb_free_port();
    pid_t peer = mb_peer_port("garbage", port, NULL);
    mb_run_t r;
    char *plant = tcp_plant(port, NULL, NULL);
    mb_open(&r, plant);
    free(plant);
    mb_run_until(&r, mb_cond_quality, (const char *[]){"m.u16_ABCD", "bad"}, 20,
                 "bad after garbage");
    /* Garbage is a bad response, or a timeout when the bytes never make a frame. */
    mb_run_for(&r, 1.0);
    const char *reason = mb_tag(&r, "m.u16_ABCD")->reason;
    cr_assert(reason != NULL &&
                  (strcmp(reason, "bad response") == 0 || strcmp(reason, "timeout") == 0 ||
                   strcmp(reason, "disconnected") == 0 || strncmp(reason, "exception", 9) == 0),
              "reason %s", reason ? reason : "(none)");
    cr_assert_gt(stat_of(&r, 0, "errors"), 3, "doppel keeps trying");
    mb_close(&r);
    mb_kill(&peer);
}

static void count_peer_lines(dp_log_level_t level, const char *twin, const char *msg, void *ud)
{
    (void)level;
    (void)twin;
    if (strncmp(msg, "device peer: ", 13) == 0)
        ++*(int *)ud;
}

Test(modbus_peer, a_peer_that_closes_every_connection_is_not_hammered)
{
    dp_log_set_level(DP_LOG_INFO);
    int lines = 0;
    dp_log_set_hook(count_peer_lines, &lines);
    int port = mb_free_port();
    pid_t peer = mb_peer_port("close", port, NULL);
    mb_run_t r;
    char *plant = dp_xasprintf(
        "device 'peer' { driver = 'modbus', host = '127.0.0.1', port = %d, timeout = '300ms',\n"
        "                reconnect_min = '40ms', reconnect_max = '160ms' }\n"
        "twin 'm' { script = 't.lua', tags = {\n"
        "  u = { device = 'peer', address = 0, every = '20ms' } } }\n",
        port);
    mb_open(&r, plant);
    free(plant);
    mb_run_for(&r, 1.5);
    /* Every connection is accepted and its first request finds it closed:
     * that is a failed attempt like a refused connect, and the next one
     * waits as long (40, 80, 160, 160, ... ms: about 11 in 1.5 s), instead
     * of reconnecting at once, thousands of times a second. */
    double errors = stat_of(&r, 0, "errors");
    cr_assert_geq(errors, 3, "doppel keeps trying");
    cr_assert_leq(errors, 20, "%.0f failed attempts in 1.5 s", errors);
    cr_assert_eq(mb_tag(&r, "m.u")->quality, DP_Q_BAD);
    cr_assert_str_eq(mb_tag(&r, "m.u")->reason, "disconnected");
    mb_close(&r);
    dp_log_set_hook(NULL, NULL);
    /* Said once (connected, the failed read, what it means), not per attempt. */
    cr_assert_leq(lines, 3, "%d log lines about the device", lines);
    mb_kill(&peer);
}

/* ---- writes ---------------------------------------------------------------- */

typedef struct {
    int n;
    dp_cmd_outcome_t outcome[16];
    char reason[16][160];
} outcomes_t;

static void on_cmd(const dp_cmd_t *cmd, void *ud)
{
    outcomes_t *o = ud;
    if (cmd->outcome == DP_CMD_PENDING || o->n == 16)
        return;
    o->outcome[o->n] = cmd->outcome;
    snprintf(o->reason[o->n], sizeof o->reason[0], "%s", cmd->reason);
    o->n++;
}

static bool got_outcomes(mb_run_t *r, void *ud)
{
    (void)r;
    return ((outcomes_t *)ud)->n > 0;
}

/* Submits a command and runs until its outcome; returns it. */
static dp_cmd_outcome_t write_tag(mb_run_t *r, const char *tag, dp_value_t v, char *reason)
{
    outcomes_t o = {0};
    dp_guard_submit(dp_plant_guard(r->plant), "test", tag, &v, on_cmd, &o);
    mb_run_until(r, got_outcomes, &o, 20, "command outcome");
    snprintf(reason, 160, "%s", o.reason[0]);
    return o.outcome[0];
}

static bool value_is(mb_run_t *r, void *ud)
{
    const void **w = ud; /* { tag, &double } */
    const dp_tag_t *t = mb_tag(r, w[0]);
    double want = *(const double *)w[1];
    if (t->v.type == DP_BOOL)
        return t->v.u.b == (want != 0);
    return t->v.type == DP_NUM && t->v.u.n == want;
}

static void wait_value(mb_run_t *r, const char *tag, double want)
{
    const void *w[2] = {tag, &want};
    char what[200];
    snprintf(what, sizeof what, "%s reads %g", tag, want);
    mb_run_until(r, value_is, w, 20, what);
}

Test(modbus_peer, writes_pass_the_guard_and_reach_the_peer)
{
    dp_log_set_level(DP_LOG_ERROR);
    int port = mb_free_port();
    pid_t peer = mb_peer_tcp(port, NULL);
    mb_run_t r;
    char *plant = dp_xasprintf(
        "device 'peer' { driver = 'modbus', host = '127.0.0.1', port = %d, timeout = '500ms' }\n"
        "device 'multi' { driver = 'modbus', host = '127.0.0.1', port = %d, multi_write = true }\n"
        "twin 'm' { script = 't.lua', tags = {\n"
        "  sp2 = { device = 'multi', address = 186, writable = true, every = '100ms' },\n"
        "  c2 = { device = 'multi', area = 'coil', address = 21, writable = true,\n"
        "         every = '100ms', verify = true },\n"
        "  sp = { device = 'peer', address = 180, writable = true, min = 0, max = 3000,\n"
        "         every = '100ms', verify = true },\n"
        "  fsp = { device = 'peer', address = 182, type = 'f32', order = 'CDAB', scale = 0.5,\n"
        "          writable = true, every = '100ms' },\n"
        "  d = { device = 'peer', address = 184, type = 'f64', order = 'DCBA', writable = true,\n"
        "        every = '100ms' },\n"
        "  run = { device = 'peer', area = 'coil', address = 20, writable = true,\n"
        "          every = '100ms', verify = true },\n"
        "  b3 = { device = 'peer', address = 160, type = 'bit', bit = 3, writable = true,\n"
        "         every = '100ms' },\n"
        "  b0 = { device = 'peer', address = 160, type = 'bit', bit = 0, every = '100ms' },\n"
        "  far = { device = 'peer', address = 5000, writable = true, every = '1s' },\n"
        "  ro = { device = 'peer', address = 190, every = '100ms' },\n"
        "} }\n",
        port, port);
    mb_open(&r, plant);
    free(plant);
    mb_wait_writes(&r, "m.sp", 1, 20);
    char reason[160];

    cr_assert_eq(write_tag(&r, "m.sp", dp_num(2600), reason), DP_CMD_DONE, "%s", reason);
    wait_value(&r, "m.sp", 2600);
    cr_assert_eq(write_tag(&r, "m.fsp", dp_num(-42.5), reason), DP_CMD_DONE, "%s", reason);
    wait_value(&r, "m.fsp", -42.5);
    cr_assert_eq(write_tag(&r, "m.d", dp_num(2.718281828459045), reason), DP_CMD_DONE, "%s",
                 reason);
    wait_value(&r, "m.d", 2.718281828459045);
    cr_assert_eq(write_tag(&r, "m.run", dp_bool(true), reason), DP_CMD_DONE, "%s", reason);
    wait_value(&r, "m.run", 1);
    /* One bit of a register: its neighbours keep their value. */
    cr_assert_eq(write_tag(&r, "m.b3", dp_bool(true), reason), DP_CMD_DONE, "%s", reason);
    wait_value(&r, "m.b3", 1);
    cr_assert(mb_tag(&r, "m.b0")->v.u.b, "bit 0 of register 160 was changed");

    /* FC15 and FC16 for single coils and registers. */
    cr_assert_eq(write_tag(&r, "m.sp2", dp_num(777), reason), DP_CMD_DONE, "%s", reason);
    wait_value(&r, "m.sp2", 777);
    cr_assert_eq(write_tag(&r, "m.c2", dp_bool(true), reason), DP_CMD_DONE, "%s", reason);
    wait_value(&r, "m.c2", 1);

    /* Refused by the guard: nothing is written. */
    cr_assert_eq(write_tag(&r, "m.sp", dp_num(5000), reason), DP_CMD_REJECTED);
    cr_assert_eq(write_tag(&r, "m.ro", dp_num(1), reason), DP_CMD_REJECTED);
    mb_run_for(&r, 0.3);
    cr_assert_eq(mb_tag(&r, "m.sp")->v.u.n, 2600);
    /* Refused by the device: the command fails with the exception. */
    cr_assert_eq(write_tag(&r, "m.far", dp_num(1), reason), DP_CMD_FAILED);
    cr_assert_str_eq(reason, "exception 2: illegal data address");
    /* A value the register cannot hold fails before anything is sent. */
    cr_assert_eq(write_tag(&r, "m.fsp", dp_num(1e300), reason), DP_CMD_FAILED);
    cr_assert_not_null(strstr(reason, "out of range"), "%s", reason);
    cr_assert_geq(stat_of(&r, 0, "writes"), 6);
    mb_close(&r);
    mb_kill(&peer);
}

Test(modbus_peer, stale_then_timeout_then_recovery)
{
    dp_log_set_level(DP_LOG_ERROR);
    int port = mb_free_port();
    pid_t peer = mb_peer_tcp(port, NULL);
    mb_run_t r;
    char *plant = dp_xasprintf(
        "device 'peer' { driver = 'modbus', host = '127.0.0.1', port = %d, timeout = '3s',\n"
        "                retries = 0, stale_polls = 3, reconnect_min = '50ms' }\n"
        "twin 'm' { script = 't.lua', tags = {\n"
        "  a = { device = 'peer', address = 0, every = '100ms' } } }\n",
        port);
    mb_open(&r, plant);
    free(plant);
    mb_wait_quality(&r, "m.a", "good", 20);
    /* A frozen peer keeps the connection open and never answers: the tag is
     * first stale (no fresh sample for 3 polls), then bad at the timeout. */
    kill(-peer, SIGSTOP);
    mb_wait_quality(&r, "m.a", "uncertain", 20);
    cr_assert_str_eq(mb_tag(&r, "m.a")->reason, "stale");
    mb_wait_quality(&r, "m.a", "bad", 20);
    cr_assert_str_eq(mb_tag(&r, "m.a")->reason, "timeout");
    kill(-peer, SIGCONT);
    mb_wait_quality(&r, "m.a", "good", 20);
    cr_assert_null(mb_tag(&r, "m.a")->reason);
    mb_close(&r);
    mb_kill(&peer);
}

/* ---- the server under hostile clients --------------------------------------- */

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Runs the loop until `fd` has `want` bytes (or is closed); returns what came. */
static ssize_t recv_some(mb_run_t *r, int fd, uint8_t *buf, size_t want)
{
    size_t got = 0;
    uint64_t deadline = uv_hrtime() + (uint64_t)10e9;
    while (got < want && uv_hrtime() < deadline) {
        uv_run(&r->loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, buf + got, want - got, MSG_DONTWAIT);
        if (n == 0)
            return (ssize_t)got; /* closed */
        if (n > 0)
            got += (size_t)n;
        else
            usleep(1000);
    }
    return (ssize_t)got;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

Test(modbus_peer, server_survives_hostile_clients)
{
    dp_log_set_level(DP_LOG_OFF);
    mb_run_t r;
    mb_open(&r, "device 'hmi' { driver = 'modbus_server', listen = '127.0.0.1:0',\n"
                "               max_clients = 4, map = {\n"
                "  { tag = 'm.a', address = 0 }, { tag = 'm.s', address = 1, type = 'string',\n"
                "    count = 4 }, { tag = 'm.w', address = 10 } } }\n"
                "twin 'm' { script = 't.lua', tags = { a = {}, s = {},\n"
                "           w = { writable = true, max = 10 } } }\n");
    dp_device_t *srv = dp_plant_device_at(r.plant, 0);
    int port = dp__mb_server_port(srv);
    cr_assert_gt(port, 0);
    dp_value_t v = dp_num(4242);
    dp_store_write(dp_plant_store(r.plant), dp_store_find(dp_plant_store(r.plant), "m.a"), &v, 0,
                   DP_Q_GOOD);

    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    uint8_t buf[600];
    for (int round = 0; round < 200; round++) {
        int fd = connect_to(port);
        size_t len = 1 + rnd(&seed) % sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rnd(&seed);
        if (round % 2 == 0 && len >= 8) {
            /* A valid header with a random PDU reaches the request decoder. */
            buf[2] = buf[3] = 0;
            buf[4] = 0;
            buf[5] = (uint8_t)(len - 6 > 250 ? 250 : len - 6);
            len = 6 + buf[5];
        }
        ssize_t sent = send(fd, buf, len, MSG_NOSIGNAL);
        (void)sent;
        uv_run(&r.loop, UV_RUN_NOWAIT);
        uint8_t in[300];
        recv_some(&r, fd, in, 9); /* an exception, a response or a close */
        close(fd);
        uv_run(&r.loop, UV_RUN_NOWAIT);
    }
    /* More clients than max_clients: the extra ones are closed. */
    int fds[6];
    for (int i = 0; i < 6; i++)
        fds[i] = connect_to(port);
    mb_run_for(&r, 0.2);
    for (int i = 0; i < 6; i++)
        close(fds[i]);

    /* Pipelined requests, one cut in the middle and completed later. */
    int fd = connect_to(port);
    const uint8_t two[] = {0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1, 0, 2, 0, 0, 0, 6, 1, 3, 0, 0};
    cr_assert_eq(send(fd, two, sizeof two, 0), (ssize_t)sizeof two);
    mb_run_for(&r, 0.1);
    const uint8_t rest[] = {0, 1};
    cr_assert_eq(send(fd, rest, sizeof rest, 0), 2);
    uint8_t in[64];
    cr_assert_eq(recv_some(&r, fd, in, 22), 22);
    cr_assert_eq(in[1], 1);
    cr_assert_eq(in[9] << 8 | in[10], 4242);
    cr_assert_eq(in[12], 2);
    cr_assert_eq(in[20] << 8 | in[21], 4242);
    /* A write above the tag's max: exception 3, nothing written. */
    const uint8_t wr[] = {0, 3, 0, 0, 0, 6, 1, 6, 0, 10, 0, 99};
    cr_assert_eq(send(fd, wr, sizeof wr, 0), (ssize_t)sizeof wr);
    cr_assert_eq(recv_some(&r, fd, in, 9), 9);
    cr_assert_eq(in[7], 0x86);
    cr_assert_eq(in[8], 3);
    close(fd);
    cr_assert_gt(stat_of(&r, 0, "closed_bad"), 10);
    cr_assert_gt(stat_of(&r, 0, "exceptions"), 10);
    mb_close(&r);
}

static bool closed_idle_2(mb_run_t *r, void *ud)
{
    (void)ud;
    return stat_of(r, 0, "closed_idle") >= 2;
}

/* Reads holding register 0 on `fd` (transaction `id`); returns its value. */
static int read_reg0(mb_run_t *r, int fd, uint8_t id)
{
    const uint8_t req[] = {0, id, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1};
    cr_assert_eq(send(fd, req, sizeof req, MSG_NOSIGNAL), (ssize_t)sizeof req);
    uint8_t in[11];
    cr_assert_eq(recv_some(r, fd, in, sizeof in), (ssize_t)sizeof in, "no answer");
    cr_assert_eq(in[1], id);
    return in[9] << 8 | in[10];
}

Test(modbus_peer, server_closes_idle_connections_and_frees_their_slots)
{
    dp_log_set_level(DP_LOG_OFF);
    mb_run_t r;
    mb_open(&r, "device 'hmi' { driver = 'modbus_server', listen = '127.0.0.1:0',\n"
                "               max_clients = 2, idle_timeout = '500ms',\n"
                "               map = { { tag = 'm.a', address = 0 } } }\n"
                "twin 'm' { script = 't.lua', tags = { a = {} } }\n");
    int port = dp__mb_server_port(dp_plant_device_at(r.plant, 0));
    dp_value_t v = dp_num(77);
    dp_store_write(dp_plant_store(r.plant), dp_store_find(dp_plant_store(r.plant), "m.a"), &v, 0,
                   DP_Q_GOOD);
    /* Two silent clients take both slots (half-open sockets look like this
     * to the server); a third is turned away. */
    int silent[2] = {connect_to(port), connect_to(port)};
    mb_run_for(&r, 0.05);
    int third = connect_to(port);
    uint8_t in[16];
    cr_assert_eq(recv_some(&r, third, in, sizeof in), 0, "a third client is closed at once");
    close(third);
    /* After idle_timeout both are closed and the slots are free again. */
    mb_run_until(&r, closed_idle_2, NULL, 10, "two idle connections closed");
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(recv_some(&r, silent[i], in, sizeof in), 0, "closed");
        close(silent[i]);
    }
    int busy = connect_to(port), quiet = connect_to(port);
    cr_assert_eq(read_reg0(&r, busy, 1), 77);
    /* A client that asks every 100 ms is never idle, however long it stays;
     * the quiet one is closed meanwhile. */
    for (uint8_t k = 2; k < 14; k++) {
        mb_run_for(&r, 0.1);
        cr_assert_eq(read_reg0(&r, busy, k), 77);
    }
    cr_assert_eq(stat_of(&r, 0, "closed_idle"), 3, "the quiet one went, the busy one stayed");
    cr_assert_eq(recv_some(&r, quiet, in, sizeof in), 0);
    close(quiet);
    close(busy);
    /* Only whole requests count: one trickled in a byte every 100 ms takes
     * 1.2 s, and the slot is taken back before it is complete. */
    int slow = connect_to(port);
    const uint8_t req[] = {0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1};
    for (size_t k = 0; k < sizeof req && send(slow, &req[k], 1, MSG_NOSIGNAL) == 1; k++)
        mb_run_for(&r, 0.1);
    cr_assert_eq(stat_of(&r, 0, "closed_idle"), 4);
    cr_assert_eq(recv_some(&r, slow, in, sizeof in), 0, "closed without an answer");
    close(slow);
    mb_close(&r);
}
