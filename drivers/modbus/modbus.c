/* The "modbus" driver: polls Modbus TCP devices and RTU buses through
 * libmodbus.
 *
 * One device is one TCP connection or one serial bus, and gets one worker
 * thread, because libmodbus blocks. The worker owns the libmodbus context;
 * the loop thread never touches it. Samples and quality changes reach the
 * store through host->ingest, each with its reason ("timeout", ...), so they
 * are applied in the order the worker saw them. Log lines go through a small
 * queue and a uv_async, since log hooks belong to the loop thread.
 *
 * Points of one poll group (unit id, area, interval) are coalesced by the
 * codec's planner; each planned request has its own schedule. A failed
 * request marks its points bad with the reason; a lost connection marks every
 * point bad ("disconnected") and reconnects with exponential backoff.
 * Staleness is judged on the loop thread: a good tag not refreshed within
 * `stale_polls` intervals becomes uncertain ("stale").
 *
 * In virtual time there are no sockets. A device whose `server` names a
 * modbus_server of the same plant then reads that server in process, on the
 * virtual clock, through the same register images; other devices refuse to
 * start. */
#include "modbus.h"

#include <errno.h>
#include <math.h>
#include <modbus.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../../runtime/command.h"
#include "../../runtime/log.h"

/* ---- settings ------------------------------------------------------------ */

static const char *const parity_choices[] = {"none", "even", "odd", NULL};

#define CFG(f) offsetof(dp_mb_client_cfg_t, f)

static const dp_setting_t device_settings[] = {
    {.name = "host",
     .type = DP_SET_STRING,
     .offset = CFG(host),
     .doc = "TCP: the device's host name or address."},
    {.name = "port",
     .type = DP_SET_INT,
     .offset = CFG(port),
     .def = "502",
     .min = 1,
     .max = 65535,
     .doc = "TCP: port."},
    {.name = "server",
     .type = DP_SET_STRING,
     .offset = CFG(server),
     .doc = "TCP: instead of host and port, a `modbus_server` device of this plant (declared "
            "before this one); in virtual time it is read in process."},
    {.name = "device",
     .type = DP_SET_STRING,
     .offset = CFG(device),
     .doc = "RTU: the serial device (`/dev/ttyUSB0`)."},
    {.name = "baud",
     .type = DP_SET_INT,
     .offset = CFG(baud),
     .def = "9600",
     .min = 300,
     .max = 4000000,
     .doc = "RTU: bits per second."},
    {.name = "parity",
     .type = DP_SET_ENUM,
     .offset = CFG(parity),
     .def = "none",
     .choices = parity_choices,
     .doc = "RTU: `none`, `even` or `odd`."},
    {.name = "data_bits",
     .type = DP_SET_INT,
     .offset = CFG(data_bits),
     .def = "8",
     .min = 5,
     .max = 8,
     .doc = "RTU: data bits."},
    {.name = "stop_bits",
     .type = DP_SET_INT,
     .offset = CFG(stop_bits),
     .def = "1",
     .min = 1,
     .max = 2,
     .doc = "RTU: stop bits."},
    {.name = "unit_id",
     .type = DP_SET_INT,
     .offset = CFG(unit_id),
     .def = "1",
     .min = 0,
     .max = 255,
     .doc = "Unit (slave) id for tags that do not give their own."},
    {.name = "timeout",
     .type = DP_SET_DURATION,
     .offset = CFG(timeout),
     .def = "1s",
     .min = 0.001,
     .max = 60,
     .doc = "Response timeout of one request (and of connecting)."},
    {.name = "retries",
     .type = DP_SET_INT,
     .offset = CFG(retries),
     .def = "1",
     .min = 0,
     .max = 10,
     .doc = "Retries of a request that timed out before its tags are marked bad."},
    {.name = "max_gap",
     .type = DP_SET_INT,
     .offset = CFG(max_gap),
     .def = "8",
     .min = 0,
     .max = 2000,
     .doc = "Unused addresses a request may read to join two tags of one poll group."},
    {.name = "max_registers",
     .type = DP_SET_INT,
     .offset = CFG(max_registers),
     .def = "125",
     .min = 1,
     .max = 125,
     .doc = "Registers per read request (lower it for devices with smaller buffers)."},
    {.name = "max_bits",
     .type = DP_SET_INT,
     .offset = CFG(max_bits),
     .def = "2000",
     .min = 1,
     .max = 2000,
     .doc = "Coils or discrete inputs per read request."},
    {.name = "reconnect_min",
     .type = DP_SET_DURATION,
     .offset = CFG(reconnect_min),
     .def = "100ms",
     .min = 0.001,
     .max = 3600,
     .doc = "First delay before reconnecting; it doubles after every failure..."},
    {.name = "reconnect_max",
     .type = DP_SET_DURATION,
     .offset = CFG(reconnect_max),
     .def = "10s",
     .min = 0.001,
     .max = 3600,
     .doc = "...up to this."},
    {.name = "multi_write",
     .type = DP_SET_BOOL,
     .offset = CFG(multi_write),
     .doc = "Write single coils and registers with FC15/FC16 too (for devices without "
            "FC05/FC06)."},
    {.name = "stale_polls",
     .type = DP_SET_INT,
     .offset = CFG(stale_polls),
     .def = "3",
     .min = 1,
     .max = 1000,
     .doc = "A good tag not refreshed for this many poll intervals becomes uncertain (stale)."},
    DP_SETTINGS_END,
};

/* ---- reasons (static strings: the store keeps the pointer) -------------- */

static const char R_DISCONNECTED[] = "disconnected";
static const char R_TIMEOUT[] = "timeout";
static const char R_BAD_RESPONSE[] = "bad response";
static const char R_STALE[] = "stale";
static const char *const R_EXCEPTION[] = {
    "exception",
    "exception 1: illegal function",
    "exception 2: illegal data address",
    "exception 3: illegal data value",
    "exception 4: server device failure",
    "exception 5: acknowledge",
    "exception 6: server device busy",
    "exception 7: negative acknowledge",
    "exception 8: memory parity error",
    "exception 9",
    "exception 10: gateway path unavailable",
    "exception 11: gateway target failed to respond",
};

/* ---- state ----------------------------------------------------------------- */

typedef struct {
    dp_mb_point_t *cfg;
    int tag;
} point_t;

/* A point as a response decodes it: what decoding reads of its settings,
 * packed, in request order, so that decoding a response walks one small
 * contiguous array (32 bytes a point) instead of chasing a pointer per point
 * into settings scattered over the heap (a cache miss per register with many
 * devices). */
typedef struct {
    dp_mb_dec_t dec;
    int tag;
    int off; /* first register (or bit) within its request's response */
} seq_t;

typedef struct {
    dp_mb_req_t r;
    uint64_t due_ns;  /* worker: next poll (uv_hrtime) */
    bool bad;         /* worker: its points are marked bad */
    dp_timer_t timer; /* virtual time */
    struct mb_dev *md;
} req_t;

#define LOG_LINES 32

/* A write waiting for the worker. */
typedef struct wjob {
    struct wjob *next;
    uint64_t id;
    size_t point; /* index into points */
    uint16_t regs[DP_MB_MAX_WRITE_REGS];
} wjob_t;

typedef struct mb_dev {
    dp_device_t *dev;
    const dp_mb_client_cfg_t *cfg;
    point_t *points;
    size_t npoints, cap;
    req_t *reqs;
    size_t nreq;
    size_t *order;
    seq_t *seq; /* npoints entries: points[order[i]] for every i */
    bool rtu, started, loopback;
    dp_time_t min_every;
    dp_timer_t stale_timer;
    char target[300]; /* "127.0.0.1:1502" or "/dev/ttyUSB0" for messages */
    int port;

    uv_thread_t thread;
    atomic_bool exited; /* the worker has finished */
    uv_mutex_t mu;
    uv_cond_t cond;
    uv_async_t *async; /* log lines to the loop; freed in its close callback */
    /* Guarded by mu. */
    bool stop;
    int sock; /* the worker's socket, so stop() can interrupt a blocking read */
    wjob_t *wq_head, *wq_tail;
    dp_ingest_sample_t *batch; /* worker: one response's samples */
    char *sbatch;              /* worker: their strings (3 bytes per register) */
    char log[LOG_LINES][256];
    int log_level[LOG_LINES];
    int nlog;
    uint64_t log_dropped;
    struct {
        uint64_t requests, errors, timeouts, exceptions, reconnects, samples;
        uint64_t writes, write_errors;
        double latency_ms, latency_sum_ms, latency_max_ms;
        uint64_t latency_n;
        bool connected;
        char last_error[128];
    } st;
    char stat_text[2][128]; /* loop thread: strings handed out by stats() */
} mb_dev_t;

/* ---- settings and points --------------------------------------------------- */

static int mb_open(dp_device_t *dev, char **err)
{
    dp_mb_client_cfg_t *c = dev->cfg;
    int ways = (c->host != NULL) + (c->server != NULL) + (c->device != NULL);
    if (ways != 1)
        return dp_fail(err, DP_EINVAL,
                       "host: give exactly one of host (TCP), server (this plant's "
                       "modbus_server) or device (RTU serial port)");
    if (c->reconnect_max < c->reconnect_min)
        return dp_fail(err, DP_EINVAL, "reconnect_max: shorter than reconnect_min");
    mb_dev_t *md = dp_xcalloc(1, sizeof *md);
    md->dev = dev;
    md->cfg = c;
    md->rtu = c->device != NULL;
    md->sock = -1;
    if (c->host != NULL)
        snprintf(md->target, sizeof md->target, "%s:%d", c->host, (int)c->port);
    else if (c->device != NULL)
        snprintf(md->target, sizeof md->target, "%s", c->device);
    else
        snprintf(md->target, sizeof md->target, "server %s", c->server);
    dev->impl = md;
    return 0;
}

static int mb_add_point(dp_device_t *dev, int tag, void *point, char **err)
{
    mb_dev_t *md = dev->impl;
    dp_mb_point_t *p = point;
    if (md->started)
        return dp_fail(err, DP_ESTATE, "points must be added before the device starts");
    int rc = dp_mb_check_point(p, err);
    if (rc < 0)
        return rc;
    if (p->unit_id == 0)
        p->unit_id = md->cfg->unit_id;
    if (md->rtu && p->unit_id == 0)
        return dp_fail(err, DP_EINVAL, "unit_id: 0 is broadcast on RTU and never answers");
    const dp_tag_t *info = dp_store_get(dev->host->store, tag);
    if (info != NULL && (info->flags & DP_TAG_WRITABLE) && p->area != DP_MB_COIL &&
        p->area != DP_MB_HOLDING)
        return dp_fail(err, DP_EINVAL, "writable: area \"%s\" is read-only (coil or holding)",
                       dp_mb_area_names[p->area]);
    if (p->verify && p->area != DP_MB_COIL && p->area != DP_MB_HOLDING)
        return dp_fail(err, DP_EINVAL, "verify: area \"%s\" is read-only",
                       dp_mb_area_names[p->area]);
    for (size_t i = 0; i < md->npoints; i++) {
        const dp_mb_point_t *q = md->points[i].cfg;
        if (dp_mb_overlap(p, q)) {
            const dp_tag_t *t = dp_store_get(dev->host->store, md->points[i].tag);
            return dp_fail(err, DP_EINVAL,
                           "address: %s %lld (%s) overlaps tag %s (%s %lld, %s) on unit %lld",
                           dp_mb_area_names[p->area], (long long)p->address,
                           dp_mb_type_names[p->type], t ? t->name : "?", dp_mb_area_names[q->area],
                           (long long)q->address, dp_mb_type_names[q->type], (long long)p->unit_id);
        }
    }
    if (md->npoints == md->cap) {
        md->cap = md->cap ? 2 * md->cap : 16;
        md->points = dp_xrealloc(md->points, md->cap * sizeof *md->points);
    }
    md->points[md->npoints++] = (point_t){.cfg = p, .tag = tag};
    return 0;
}

static void plan(mb_dev_t *md)
{
    free(md->reqs);
    free(md->order);
    const dp_mb_point_t **pts = dp_xcalloc(md->npoints + 1, sizeof *pts);
    for (size_t i = 0; i < md->npoints; i++)
        pts[i] = md->points[i].cfg;
    md->order = dp_xcalloc(md->npoints + 1, sizeof *md->order);
    dp_mb_req_t *r = dp_xcalloc(md->npoints + 1, sizeof *r);
    md->nreq = dp_mb_plan(pts, md->npoints, (int)md->cfg->max_gap, (int)md->cfg->max_registers,
                          (int)md->cfg->max_bits, md->order, r);
    md->reqs = dp_xcalloc(md->nreq + 1, sizeof *md->reqs);
    md->min_every = -1;
    free(md->seq);
    md->seq = dp_xcalloc(md->npoints + 1, sizeof *md->seq);
    for (size_t i = 0; i < md->nreq; i++) {
        md->reqs[i].r = r[i];
        md->reqs[i].md = md;
        if (md->min_every < 0 || r[i].every < md->min_every)
            md->min_every = r[i].every;
        for (size_t k = 0; k < r[i].n; k++) {
            const point_t *pt = &md->points[md->order[r[i].first + k]];
            seq_t *e = &md->seq[r[i].first + k];
            dp_mb_dec_init(&e->dec, pt->cfg);
            e->tag = pt->tag;
            e->off = (int)pt->cfg->address - r[i].start;
        }
    }
    free(r);
    free(pts);
}

/* ---- decoding a response (both modes) ------------------------------------ */

/* Decodes the points of request `q` from `regs` (its registers or bits) and
 * hands each sample to `out`. */
typedef void (*sample_fn)(mb_dev_t *md, int tag, const dp_value_t *v);

static void decode_req(mb_dev_t *md, const req_t *q, const uint16_t *regs, sample_fn out)
{
    char sbuf[2 * DP_MB_MAX_READ_REGS + 1];
    for (size_t k = 0; k < q->r.n; k++) {
        const seq_t *pt = &md->seq[q->r.first + k];
        dp_value_t v;
        dp_mb_decode_packed(&pt->dec, regs + pt->off, &v, sbuf);
        out(md, pt->tag, &v);
    }
}

/* ---- the worker (real time) --------------------------------------------- */

static void wlog(mb_dev_t *md, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Queues a log line for the loop thread (mu held). */
static void wlog(mb_dev_t *md, int level, const char *fmt, ...)
{
    if (md->nlog == LOG_LINES) {
        md->log_dropped++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(md->log[md->nlog], sizeof md->log[0], fmt, ap);
    va_end(ap);
    md->log_level[md->nlog++] = level;
    uv_async_send(md->async);
}

static void on_async(uv_async_t *h)
{
    mb_dev_t *md = h->data;
    if (md == NULL)
        return;
    char lines[LOG_LINES][256];
    int levels[LOG_LINES];
    uv_mutex_lock(&md->mu);
    int n = md->nlog;
    memcpy(lines, md->log, sizeof lines[0] * (size_t)n);
    memcpy(levels, md->log_level, sizeof levels[0] * (size_t)n);
    uint64_t dropped = md->log_dropped;
    md->nlog = 0;
    md->log_dropped = 0;
    uv_mutex_unlock(&md->mu);
    for (int i = 0; i < n; i++)
        dp_log(levels[i], NULL, "device %s: %s", md->dev->name, lines[i]);
    if (dropped > 0)
        dp_log_warn(NULL, "device %s: %llu more log lines dropped", md->dev->name,
                    (unsigned long long)dropped);
}

/* Hands the samples of one response to the ingest queue in one batch, all
 * with the time the response arrived. */
/* Samples queued but not yet in the store above which a worker waits
 * before polling on: the loop is behind, and piling up more only adds
 * latency (writes and fresh values would queue behind the backlog) and takes
 * CPU from the loop thread. */
#define BACKLOG_MAX 16384

static bool stopping(mb_dev_t *md);

static void wait_for_loop(mb_dev_t *md)
{
    /* Woken by the drain that brings the backlog down (and by every drain
     * mb_stop() runs while it waits for this worker to leave). */
    dp_ingest_t *in = md->dev->host->ingest;
    while (dp_ingest_pushed(in) - dp_ingest_drained(in) > BACKLOG_MAX && !stopping(md))
        dp_ingest_wait_backlog(in, BACKLOG_MAX);
}

static void push_response(mb_dev_t *md, const req_t *q, const uint16_t *regs)
{
    wait_for_loop(md);
    dp_time_t now = dp_wall_now();
    const seq_t *seq = &md->seq[q->r.first];
    for (size_t k = 0; k < q->r.n; k++) {
        const seq_t *pt = &seq[k];
        dp_ingest_sample_t *s = &md->batch[k];
        /* Points never share registers but bits, so each string point has
         * its own slice of the scratch buffer. */
        dp_mb_decode_packed(&pt->dec, regs + pt->off, &s->v, md->sbatch + 3 * pt->off);
        s->tag = pt->tag;
        s->quality = DP_Q_GOOD;
        s->ts = now;
        s->reason = NULL;
    }
    dp_ingest_push_many(md->dev->host->ingest, md->batch, q->r.n);
}

/* Marks the points of request `q` bad with `reason`. */
static void mark_bad(mb_dev_t *md, req_t *q, const char *reason)
{
    for (size_t k = 0; k < q->r.n; k++) {
        const seq_t *pt = &md->seq[q->r.first + k];
        md->batch[k] = (dp_ingest_sample_t){
            .tag = pt->tag, .quality = DP_Q_BAD, .v = {.type = DP_NIL}, .reason = reason};
    }
    dp_ingest_push_many(md->dev->host->ingest, md->batch, q->r.n);
    q->bad = true;
}

static void mark_all_bad(mb_dev_t *md, const char *reason)
{
    for (size_t i = 0; i < md->nreq; i++)
        mark_bad(md, &md->reqs[i], reason);
}

static bool stopping(mb_dev_t *md)
{
    uv_mutex_lock(&md->mu);
    bool s = md->stop;
    uv_mutex_unlock(&md->mu);
    return s;
}

/* Waits until `deadline_ns`, stop or a queued write; returns true when
 * stopping. */
static bool wait_until(mb_dev_t *md, uint64_t deadline_ns)
{
    uv_mutex_lock(&md->mu);
    while (!md->stop && md->wq_head == NULL) {
        uint64_t now = uv_hrtime();
        if (now >= deadline_ns)
            break;
        uv_cond_timedwait(&md->cond, &md->mu, deadline_ns - now);
    }
    bool s = md->stop;
    uv_mutex_unlock(&md->mu);
    return s;
}

static modbus_t *new_ctx(mb_dev_t *md)
{
    const dp_mb_client_cfg_t *c = md->cfg;
    modbus_t *ctx;
    if (md->rtu) {
        static const char par[] = {'N', 'E', 'O'};
        ctx = modbus_new_rtu(c->device, (int)c->baud, par[c->parity], (int)c->data_bits,
                             (int)c->stop_bits);
    } else {
        char port[16];
        snprintf(port, sizeof port, "%d", md->port);
        ctx = modbus_new_tcp_pi(c->host != NULL ? c->host : "127.0.0.1", port);
    }
    if (ctx == NULL)
        return NULL;
    uint32_t s = (uint32_t)(c->timeout / DP_US_PER_SEC),
             us = (uint32_t)(c->timeout % DP_US_PER_SEC);
    modbus_set_response_timeout(ctx, s, us);
    modbus_set_byte_timeout(ctx, s, us);
    return ctx;
}

/* An exception response: the device answered, and refused. */
static bool is_exception(int e)
{
    return e > MODBUS_ENOBASE && e <= EMBXGTAR;
}

static const char *error_reason(int e)
{
    if (is_exception(e))
        return R_EXCEPTION[e - MODBUS_ENOBASE];
    if (e == ETIMEDOUT)
        return R_TIMEOUT;
    if (e == EMBBADCRC || e == EMBBADDATA || e == EMBBADEXC || e == EMBUNKEXC || e == EMBMDATA ||
        e == EMBBADSLAVE)
        return R_BAD_RESPONSE;
    return R_DISCONNECTED;
}

/* Performs one read; returns 0 or an errno value. */
static int do_read(modbus_t *ctx, const req_t *q, uint16_t *regs)
{
    static _Thread_local uint8_t bits[DP_MB_MAX_READ_BITS];
    if (modbus_set_slave(ctx, q->r.unit_id) < 0)
        return errno;
    int n;
    switch (q->r.area) {
    case DP_MB_COIL:
        n = modbus_read_bits(ctx, q->r.start, q->r.count, bits);
        break;
    case DP_MB_DISCRETE:
        n = modbus_read_input_bits(ctx, q->r.start, q->r.count, bits);
        break;
    case DP_MB_INPUT:
        n = modbus_read_input_registers(ctx, q->r.start, q->r.count, regs);
        break;
    default:
        n = modbus_read_registers(ctx, q->r.start, q->r.count, regs);
        break;
    }
    if (n < 0)
        return errno != 0 ? errno : EIO;
    if (n != q->r.count)
        return EMBBADDATA;
    if (dp_mb_is_bit_area(q->r.area)) {
        for (int i = 0; i < n; i++)
            regs[i] = bits[i];
    }
    return 0;
}

static void set_sock(mb_dev_t *md, int fd)
{
    uv_mutex_lock(&md->mu);
    md->sock = fd;
    uv_mutex_unlock(&md->mu);
}

static void close_ctx(mb_dev_t *md, modbus_t **ctx)
{
    if (*ctx == NULL)
        return;
    set_sock(md, -1);
    modbus_close(*ctx);
    modbus_free(*ctx);
    *ctx = NULL;
    uv_mutex_lock(&md->mu);
    md->st.connected = false;
    uv_mutex_unlock(&md->mu);
}

static void note_error(mb_dev_t *md, const char *what, int e)
{
    uv_mutex_lock(&md->mu);
    md->st.errors++;
    if (e == ETIMEDOUT)
        md->st.timeouts++;
    if (is_exception(e))
        md->st.exceptions++;
    snprintf(md->st.last_error, sizeof md->st.last_error, "%s: %s", what, modbus_strerror(e));
    uv_mutex_unlock(&md->mu);
}

static wjob_t *take_write(mb_dev_t *md)
{
    uv_mutex_lock(&md->mu);
    wjob_t *j = md->wq_head;
    if (j != NULL) {
        md->wq_head = j->next;
        if (md->wq_head == NULL)
            md->wq_tail = NULL;
    }
    uv_mutex_unlock(&md->mu);
    return j;
}

static void complete(mb_dev_t *md, wjob_t *j, const char *reason)
{
    uv_mutex_lock(&md->mu);
    md->st.writes++;
    if (reason != NULL)
        md->st.write_errors++;
    uv_mutex_unlock(&md->mu);
    dp_guard_complete(md->dev->host->guard, j->id, reason ? DP_CMD_FAILED : DP_CMD_DONE, reason);
    free(j);
}

/* Fails every queued write (not connected, or stopping). */
static void fail_writes(mb_dev_t *md, const char *reason)
{
    wjob_t *j;
    while ((j = take_write(md)) != NULL)
        complete(md, j, reason);
}

/* Performs one write (and its read-back); returns 0, an errno value, or -1
 * for a read-back mismatch (detail in `why`). */
static int do_write(mb_dev_t *md, modbus_t *ctx, const wjob_t *j, char *why, size_t whylen)
{
    const dp_mb_point_t *p = md->points[j->point].cfg;
    int addr = (int)p->address, n = dp_mb_width(p), rc;
    bool multi = md->cfg->multi_write;
    uint16_t regs[DP_MB_MAX_WRITE_REGS];
    memcpy(regs, j->regs, sizeof regs[0] * (size_t)n);
    if (modbus_set_slave(ctx, (int)p->unit_id) < 0)
        return errno;
    if (p->area == DP_MB_COIL) {
        uint8_t bit = regs[0] ? 1 : 0;
        rc = multi ? modbus_write_bits(ctx, addr, 1, &bit) : modbus_write_bit(ctx, addr, bit);
    } else if (p->type == DP_MB_BIT) {
        /* One bit of a register: read, change the bit, write the register. */
        uint16_t cur;
        if (modbus_read_registers(ctx, addr, 1, &cur) != 1)
            return errno != 0 ? errno : EMBBADDATA;
        uint16_t mask = (uint16_t)(1u << p->bit);
        regs[0] = (uint16_t)(regs[0] ? cur | mask : cur & ~mask);
        rc = multi ? modbus_write_registers(ctx, addr, 1, regs)
                   : modbus_write_register(ctx, addr, regs[0]);
    } else if (n == 1 && !multi) {
        rc = modbus_write_register(ctx, addr, regs[0]);
    } else {
        rc = modbus_write_registers(ctx, addr, n, regs);
    }
    if (rc < 0)
        return errno != 0 ? errno : EIO;
    if (!p->verify)
        return 0;
    uint16_t back[DP_MB_MAX_WRITE_REGS];
    if (p->area == DP_MB_COIL) {
        uint8_t bit;
        if (modbus_read_bits(ctx, addr, 1, &bit) != 1)
            return errno != 0 ? errno : EMBBADDATA;
        back[0] = bit;
    } else if (modbus_read_registers(ctx, addr, n, back) != n) {
        return errno != 0 ? errno : EMBBADDATA;
    }
    for (int i = 0; i < n; i++) {
        uint16_t want = regs[i], got = back[i];
        if (p->type == DP_MB_BIT) {
            want &= (uint16_t)(1u << p->bit);
            got &= (uint16_t)(1u << p->bit);
        }
        if (want != got) {
            snprintf(why, whylen, "read-back differs: register %d holds 0x%04x, wrote 0x%04x",
                     addr + i, back[i], regs[i]);
            return -1;
        }
    }
    return 0;
}

/* The wait before the next connection attempt after one that failed:
 * doubled, up to reconnect_max. */
static uint64_t next_backoff(const dp_mb_client_cfg_t *c, uint64_t backoff)
{
    uint64_t max = (uint64_t)c->reconnect_max * 1000;
    return backoff * 2 > max ? max : backoff * 2;
}

/* How a worker reconnects. A connection counts as made once a request has
 * been answered on it: a device whose connection slots are all taken
 * accepts and closes at once, and reconnecting to it must back off (and
 * log once) as for a refused connect, not follow the poll rate. */
typedef struct {
    uint64_t backoff;       /* the next wait before reconnecting, ns */
    bool answered;          /* a request was answered on this connection */
    bool closed_unanswered; /* the last one closed before that: wait first */
    bool quiet;             /* and that was said: no more "connected" until an answer */
} reconn_t;

/* Notes an answer on the current connection: it works, and the next
 * reconnection starts from reconnect_min again. */
static void got_answer(mb_dev_t *md, reconn_t *rc)
{
    if (rc->answered)
        return;
    rc->answered = true;
    rc->backoff = (uint64_t)md->cfg->reconnect_min * 1000;
    if (rc->quiet) {
        uv_mutex_lock(&md->mu);
        wlog(md, DP_LOG_INFO, "connected to %s, which answers now", md->target);
        uv_mutex_unlock(&md->mu);
        rc->quiet = false;
    }
}

/* Drops the connection after a failure. One that closes before the device
 * answered on it is a failed attempt: the next one waits, and its failure
 * is not logged again until the device answers. */
static void drop_ctx(mb_dev_t *md, modbus_t **ctx, reconn_t *rc)
{
    close_ctx(md, ctx);
    rc->closed_unanswered = rc->quiet = !rc->answered;
}

static void worker(void *arg)
{
    mb_dev_t *md = arg;
    const dp_mb_client_cfg_t *c = md->cfg;
    modbus_t *ctx = NULL;
    /* "mb:NAME" in top, perf and /proc/PID/task/TID/comm (15 bytes at most). */
    char tname[16];
    snprintf(tname, sizeof tname, "mb:%s", md->dev->name);
    pthread_setname_np(pthread_self(), tname);
    reconn_t rc = {.backoff = (uint64_t)c->reconnect_min * 1000};
    bool was_connected = false, warned = false;
    uint16_t regs[DP_MB_MAX_READ_BITS];
    uint64_t now = uv_hrtime();
    for (size_t i = 0; i < md->nreq; i++)
        md->reqs[i].due_ns = now;

    while (!stopping(md)) {
        if (ctx == NULL && rc.closed_unanswered) {
            rc.closed_unanswered = false;
            if (wait_until(md, uv_hrtime() + rc.backoff))
                break;
            rc.backoff = next_backoff(c, rc.backoff);
        }
        if (ctx == NULL) {
            ctx = new_ctx(md);
            int e = ctx == NULL ? errno : 0;
            if (ctx != NULL && modbus_connect(ctx) < 0) {
                e = errno;
                modbus_free(ctx);
                ctx = NULL;
            }
            if (ctx == NULL) {
                note_error(md, "connect", e);
                uv_mutex_lock(&md->mu);
                if (!warned)
                    wlog(md, DP_LOG_WARN, "cannot connect to %s: %s (retrying)", md->target,
                         modbus_strerror(e));
                uv_mutex_unlock(&md->mu);
                warned = true;
                fail_writes(md, R_DISCONNECTED);
                if (was_connected || !md->reqs[0].bad)
                    mark_all_bad(md, R_DISCONNECTED);
                was_connected = false;
                if (wait_until(md, uv_hrtime() + rc.backoff))
                    break;
                rc.backoff = next_backoff(c, rc.backoff);
                continue;
            }
            set_sock(md, modbus_get_socket(ctx));
            uv_mutex_lock(&md->mu);
            md->st.connected = true;
            if (warned || was_connected)
                md->st.reconnects++;
            if (!rc.quiet)
                wlog(md, DP_LOG_INFO, "connected to %s", md->target);
            uv_mutex_unlock(&md->mu);
            was_connected = true;
            warned = false;
            rc.answered = false;
        }

        /* Writes first: a command should not wait behind a poll cycle. */
        wjob_t *j = take_write(md);
        if (j != NULL) {
            char why[160] = "";
            int e = do_write(md, ctx, j, why, sizeof why);
            if (e <= 0 || is_exception(e))
                got_answer(md, &rc);
            if (e == 0) {
                complete(md, j, NULL);
                continue;
            }
            const char *reason = e < 0 ? why : error_reason(e);
            complete(md, j, reason);
            if (e > 0) {
                note_error(md, "write", e);
                if (reason == R_DISCONNECTED || reason == R_BAD_RESPONSE ||
                    (reason == R_TIMEOUT && !md->rtu)) {
                    drop_ctx(md, &ctx, &rc);
                    mark_all_bad(md, R_DISCONNECTED);
                } else if (e == ETIMEDOUT) {
                    modbus_flush(ctx);
                }
            }
            continue;
        }

        /* The next request due. */
        req_t *q = NULL;
        for (size_t i = 0; i < md->nreq; i++) {
            if (q == NULL || md->reqs[i].due_ns < q->due_ns)
                q = &md->reqs[i];
        }
        if (q == NULL) {
            if (wait_until(md, UINT64_MAX))
                break;
            continue;
        }
        if (wait_until(md, q->due_ns))
            break;
        if (uv_hrtime() < q->due_ns)
            continue; /* woken by a write */

        int e = 0;
        for (int attempt = 0; attempt <= c->retries; attempt++) {
            uint64_t t0 = uv_hrtime();
            e = do_read(ctx, q, regs);
            double ms = (double)(uv_hrtime() - t0) / 1e6;
            uv_mutex_lock(&md->mu);
            md->st.requests++;
            if (e == 0 || is_exception(e)) {
                md->st.latency_ms = ms;
                md->st.latency_sum_ms += ms;
                md->st.latency_n++;
                if (ms > md->st.latency_max_ms)
                    md->st.latency_max_ms = ms;
            }
            uv_mutex_unlock(&md->mu);
            if (e != ETIMEDOUT || stopping(md))
                break;
            /* A late answer would be taken for the next one: drop it. */
            modbus_flush(ctx);
        }
        if (e == 0 || is_exception(e))
            got_answer(md, &rc);
        uint64_t every = (uint64_t)q->r.every * 1000;
        now = uv_hrtime();
        if (every == 0) {
            q->due_ns = now; /* back to back, taking turns with the other requests */
        } else {
            q->due_ns += every;
            if (q->due_ns <= now) /* overran: skip the missed polls, keep the phase */
                q->due_ns += ((now - q->due_ns) / every + 1) * every;
        }

        if (e == 0) {
            push_response(md, q, regs);
            q->bad = false;
            uv_mutex_lock(&md->mu);
            md->st.samples += q->r.n;
            uv_mutex_unlock(&md->mu);
            continue;
        }
        if (stopping(md))
            break; /* stop() shut the socket down: not the device's fault */
        const char *reason = error_reason(e);
        char what[64];
        snprintf(what, sizeof what, "read %s %d+%d unit %d", dp_mb_area_names[q->r.area],
                 q->r.start, q->r.count, q->r.unit_id);
        note_error(md, what, e);
        if (!q->bad) {
            uv_mutex_lock(&md->mu);
            wlog(md, DP_LOG_WARN, "%s: %s", what, modbus_strerror(e));
            uv_mutex_unlock(&md->mu);
        }
        if (reason == R_DISCONNECTED || reason == R_BAD_RESPONSE ||
            (reason == R_TIMEOUT && !md->rtu)) {
            /* The stream may be out of step: start over on a new connection.
             * An RTU bus stays open (one silent unit must not take the
             * others down); a TCP peer that stopped answering is dropped. */
            bool said = rc.quiet;
            drop_ctx(md, &ctx, &rc);
            if (reason == R_DISCONNECTED) {
                mark_all_bad(md, R_DISCONNECTED);
                uv_mutex_lock(&md->mu);
                if (rc.answered)
                    wlog(md, DP_LOG_WARN, "connection to %s lost", md->target);
                else if (!said)
                    wlog(md, DP_LOG_WARN,
                         "%s closes the connection before answering (are all its "
                         "connection slots taken?); retrying, backing off",
                         md->target);
                uv_mutex_unlock(&md->mu);
            } else {
                mark_bad(md, q, reason);
            }
            continue;
        }
        mark_bad(md, q, reason);
    }
    close_ctx(md, &ctx);
    fail_writes(md, "device stopped");
    atomic_store(&md->exited, true);
}

/* ---- virtual time: reading this plant's server in process ---------------- */

static void write_sample(mb_dev_t *md, int tag, const dp_value_t *v)
{
    dp_store_write(md->dev->host->store, tag, v, dp_clock_now(md->dev->host->clock), DP_Q_GOOD);
}

static void on_loopback_poll(dp_timer_t *t)
{
    req_t *q = t->data;
    mb_dev_t *md = q->md;
    dp_device_t *srv = dp__mb_server_find(md->dev->host, md->cfg->server);
    uint16_t regs[DP_MB_MAX_READ_BITS];
    int ex = srv != NULL
                 ? dp__mb_server_read(srv, q->r.unit_id, q->r.area, q->r.start, q->r.count, regs)
                 : -1;
    md->st.requests++;
    if (ex == 0) {
        decode_req(md, q, regs, write_sample);
        md->st.samples += q->r.n;
        return;
    }
    md->st.errors++;
    const char *reason = ex > 0 && ex <= 11 ? R_EXCEPTION[ex] : R_DISCONNECTED;
    if (ex > 0)
        md->st.exceptions++;
    snprintf(md->st.last_error, sizeof md->st.last_error, "%s", reason);
    for (size_t k = 0; k < q->r.n; k++) {
        int tag = md->seq[q->r.first + k].tag;
        dp_store_set_quality(md->dev->host->store, tag, DP_Q_BAD);
        dp_store_set_reason(md->dev->host->store, tag, reason);
    }
}

/* ---- staleness (loop thread) ----------------------------------------------- */

static void on_stale_check(dp_timer_t *t)
{
    mb_dev_t *md = t->data;
    dp_store_t *store = md->dev->host->store;
    dp_time_t now = dp_clock_now(md->dev->host->clock);
    for (size_t i = 0; i < md->npoints; i++) {
        const point_t *pt = &md->points[i];
        const dp_tag_t *tag = dp_store_get(store, pt->tag);
        if (tag == NULL || tag->quality != DP_Q_GOOD || tag->v.type == DP_NIL)
            continue;
        dp_time_t every = pt->cfg->every > 100 * DP_US_PER_MS ? pt->cfg->every : 100 * DP_US_PER_MS;
        if (now - tag->ts > md->cfg->stale_polls * every) {
            dp_store_set_quality(store, pt->tag, DP_Q_UNCERTAIN);
            dp_store_set_reason(store, pt->tag, R_STALE);
        }
    }
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void on_async_closed(uv_handle_t *h)
{
    free(h);
}

static int mb_start(dp_device_t *dev, char **err)
{
    mb_dev_t *md = dev->impl;
    if (md->started)
        return dp_fail(err, DP_ESTATE, "already started");
    plan(md);
    dp_host_t *host = dev->host;
    if (md->cfg->server != NULL) {
        dp_device_t *srv = dp__mb_server_find(host, md->cfg->server);
        if (srv == NULL)
            return dp_fail(err, DP_ENOENT, "server: no modbus_server device \"%s\" in this plant",
                           md->cfg->server);
        md->port = dp__mb_server_port(srv);
    } else {
        md->port = (int)md->cfg->port;
    }
    if (host->loop == NULL) {
        /* Virtual time. */
        if (md->cfg->server == NULL)
            return dp_fail(err, DP_ESTATE,
                           "Modbus %s needs real time (in virtual time only `server = ...` "
                           "devices run, in process)",
                           md->rtu ? "RTU" : "TCP");
        md->loopback = true;
        for (size_t i = 0; i < md->nreq; i++) {
            req_t *q = &md->reqs[i];
            dp_timer_init(host->clock, &q->timer);
            q->timer.data = q;
            dp_timer_start(&q->timer, on_loopback_poll, 0,
                           q->r.every > 0 ? q->r.every : DP_US_PER_MS);
        }
        md->started = true;
        return 0;
    }
    if (md->cfg->server != NULL && md->port == 0)
        return dp_fail(err, DP_ESTATE,
                       "server: modbus_server \"%s\" is not listening (declare it before "
                       "this device)",
                       md->cfg->server);
    if (host->ingest == NULL)
        return dp_fail(err, DP_ESTATE, "no ingest queue");
    if (md->async == NULL) {
        md->async = dp_xcalloc(1, sizeof *md->async);
        uv_async_init(host->loop, md->async, on_async);
        md->async->data = md;
        /* Log lines alone never keep the loop running (stop() flushes them). */
        uv_unref((uv_handle_t *)md->async);
        uv_mutex_init(&md->mu);
        uv_cond_init(&md->cond);
    }
    size_t most = 1;
    for (size_t i = 0; i < md->nreq; i++)
        most = md->reqs[i].r.n > most ? md->reqs[i].r.n : most;
    free(md->batch);
    free(md->sbatch);
    md->batch = dp_xcalloc(most, sizeof *md->batch);
    md->sbatch = dp_xcalloc(3 * DP_MB_MAX_READ_REGS + 1, 1);
    md->stop = false;
    atomic_store(&md->exited, false);
    if (uv_thread_create(&md->thread, worker, md) != 0)
        return dp_fail(err, DP_EIO, "cannot start the worker thread");
    md->started = true;
    if (md->nreq > 0) {
        dp_time_t check = md->min_every > 100 * DP_US_PER_MS ? md->min_every : 100 * DP_US_PER_MS;
        dp_timer_init(host->clock, &md->stale_timer);
        md->stale_timer.data = md;
        dp_timer_start(&md->stale_timer, on_stale_check, check, check);
    }
    return 0;
}

static void mb_stop(dp_device_t *dev)
{
    mb_dev_t *md = dev->impl;
    if (md == NULL || !md->started)
        return;
    md->started = false;
    if (md->loopback) {
        for (size_t i = 0; i < md->nreq; i++)
            dp_timer_stop(&md->reqs[i].timer);
        return;
    }
    dp_timer_stop(&md->stale_timer);
    uv_mutex_lock(&md->mu);
    md->stop = true;
    /* Interrupts a read blocked on the socket; the worker closes it. */
    if (md->sock >= 0 && !md->rtu)
        shutdown(md->sock, SHUT_RDWR);
    uv_cond_broadcast(&md->cond);
    uv_mutex_unlock(&md->mu);
    /* The worker may be waiting for room in a full ingest queue, which only
     * this (the loop) thread empties: drain until it has left. */
    while (!atomic_load(&md->exited)) {
        dp_ingest_drain(dev->host->ingest);
        uv_sleep(1);
    }
    uv_thread_join(&md->thread);
    on_async(md->async);
}

static void mb_close(dp_device_t *dev)
{
    mb_dev_t *md = dev->impl;
    if (md == NULL)
        return;
    mb_stop(dev);
    if (md->async != NULL) {
        md->async->data = NULL;
        uv_close((uv_handle_t *)md->async, on_async_closed);
        uv_cond_destroy(&md->cond);
        uv_mutex_destroy(&md->mu);
    }
    free(md->batch);
    free(md->sbatch);
    free(md->points);
    free(md->reqs);
    free(md->order);
    free(md->seq);
    free(md);
    dev->impl = NULL;
}

/* Virtual time: the write goes to this plant's server in process, as the
 * request a client would send (FC05, FC06, FC16, or FC22 for one bit). */
typedef struct {
    dp__mb_wbatch_t wb;
    dp_guard_t *guard;
    uint64_t id;
} lwrite_t;

static void loopback_done(dp__mb_wbatch_t *b, bool async)
{
    (void)async;
    lwrite_t *lw = (lwrite_t *)((char *)b - offsetof(lwrite_t, wb));
    if (b->verdict == 0) {
        dp_guard_complete(lw->guard, lw->id, DP_CMD_DONE, NULL);
    } else {
        char reason[300];
        snprintf(reason, sizeof reason, "%s (%s)", R_EXCEPTION[b->verdict], b->reason);
        dp_guard_complete(lw->guard, lw->id, DP_CMD_FAILED, reason);
    }
    free(lw);
}

static int loopback_write(mb_dev_t *md, uint64_t id, const dp_mb_point_t *p, const dp_value_t *v,
                          char **err)
{
    dp_device_t *srv = dp__mb_server_find(md->dev->host, md->cfg->server);
    if (srv == NULL)
        return dp_fail(err, DP_ENOENT, "%s", R_DISCONNECTED);
    static dp_mb_request_t req;
    memset(&req, 0, sizeof req);
    uint16_t regs[DP_MB_MAX_WRITE_REGS];
    int rc = dp_mb_encode(p, v, regs, err);
    if (rc < 0)
        return rc;
    int n = dp_mb_width(p);
    req.unit_id = (uint8_t)p->unit_id;
    req.area = p->area;
    req.address = (int)p->address;
    req.count = p->type == DP_MB_BIT ? 1 : n;
    req.write = true;
    if (p->area == DP_MB_COIL) {
        req.function = 5;
        req.values[0] = regs[0] ? 1 : 0;
    } else if (p->type == DP_MB_BIT) {
        req.function = 22;
        req.and_mask = (uint16_t) ~(1u << p->bit);
        req.or_mask = (uint16_t)(regs[0] ? 1u << p->bit : 0);
    } else {
        req.function = n == 1 ? 6 : 16;
        memcpy(req.values, regs, sizeof regs[0] * (size_t)n);
    }
    lwrite_t *lw = dp_xcalloc(1, sizeof *lw);
    lw->wb.done = loopback_done;
    lw->guard = md->dev->host->guard;
    lw->id = id;
    md->st.writes++;
    int ex = dp__mb_server_write(srv, &req, "modbus:in-process", &lw->wb);
    if (ex != 0) {
        free(lw);
        md->st.write_errors++;
        return dp_fail(err, DP_EIO, "%s", R_EXCEPTION[ex > 0 && ex <= 11 ? ex : 0]);
    }
    return 0;
}

static int mb_write(dp_device_t *dev, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    mb_dev_t *md = dev->impl;
    size_t k = 0;
    while (k < md->npoints && md->points[k].tag != tag)
        k++;
    if (k == md->npoints)
        return dp_fail(err, DP_ENOENT, "tag is not bound to device %s", dev->name);
    const dp_mb_point_t *p = md->points[k].cfg;
    if (p->area != DP_MB_COIL && p->area != DP_MB_HOLDING)
        return dp_fail(err, DP_EINVAL, "area \"%s\" is read-only", dp_mb_area_names[p->area]);
    if (!md->started)
        return dp_fail(err, DP_ESTATE, "device %s is not running", dev->name);
    if (md->loopback)
        return loopback_write(md, id, p, v, err);
    wjob_t *j = dp_xcalloc(1, sizeof *j);
    int rc = dp_mb_encode(p, v, j->regs, err);
    if (rc < 0) {
        free(j);
        return rc;
    }
    j->id = id;
    j->point = k;
    uv_mutex_lock(&md->mu);
    if (md->wq_tail != NULL)
        md->wq_tail->next = j;
    else
        md->wq_head = j;
    md->wq_tail = j;
    uv_cond_broadcast(&md->cond);
    uv_mutex_unlock(&md->mu);
    return 0;
}

static size_t mb_stats(dp_device_t *dev, dp_stat_t *out, size_t max)
{
    mb_dev_t *md = dev->impl;
    if (md == NULL)
        return 0;
    bool locked = md->async != NULL;
    if (locked)
        uv_mutex_lock(&md->mu);
    snprintf(md->stat_text[0], sizeof md->stat_text[0], "%s", md->st.last_error);
    dp_stat_t s[] = {
        {"connected", md->loopback || md->st.connected, NULL},
        {"requests", (double)md->st.requests, NULL},
        {"errors", (double)md->st.errors, NULL},
        {"timeouts", (double)md->st.timeouts, NULL},
        {"exceptions", (double)md->st.exceptions, NULL},
        {"reconnects", (double)md->st.reconnects, NULL},
        {"samples", (double)md->st.samples, NULL},
        {"writes", (double)md->st.writes, NULL},
        {"write_errors", (double)md->st.write_errors, NULL},
        {"latency_ms", md->st.latency_ms, NULL},
        {"latency_avg_ms", md->st.latency_n ? md->st.latency_sum_ms / (double)md->st.latency_n : 0,
         NULL},
        {"latency_max_ms", md->st.latency_max_ms, NULL},
        {"last_error", 0, md->stat_text[0]},
    };
    if (locked)
        uv_mutex_unlock(&md->mu);
    size_t n = DP_ARRAY_LEN(s) < max ? DP_ARRAY_LEN(s) : max;
    memcpy(out, s, n * sizeof *out);
    return n;
}

const dp_driver_t dp_modbus_driver = {
    .name = "modbus",
    .summary = "Modbus TCP and RTU devices polled through libmodbus (client).",
    .device_settings = device_settings,
    .device_size = sizeof(dp_mb_client_cfg_t),
    .point_settings = dp_mb_point_settings,
    .point_size = sizeof(dp_mb_point_t),
    .open = mb_open,
    .add_point = mb_add_point,
    .start = mb_start,
    .stop = mb_stop,
    .close = mb_close,
    .write = mb_write,
    .stats = mb_stats,
};
