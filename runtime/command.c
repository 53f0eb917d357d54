/* Commands and the guard (see command.h). */
#include "command.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fmtnum.h"
#include "lmsgpack.h"
#include "log.h"

typedef struct {
    bool writable;
    dp_guard_limits_t lim;
    dp_cmd_write_fn fn;
    void *ctx;
    bool has_last; /* last accepted command, for max_rate */
    double last_value;
    dp_time_t last_ts;
} gtag_t;

/* A command owns its strings until it finishes. */
typedef struct {
    dp_cmd_t cmd;
    char *origin;
    char *tag;
    char *svalue;
    dp_cmd_cb cb;
    void *ud;
} pending_t;

/* A completion reported by a writer, possibly from another thread. */
typedef struct {
    uint64_t id;
    dp_cmd_outcome_t outcome;
    char *reason;
} completion_t;

typedef struct {
    dp_cmd_cb cb;
    void *ud;
} listener_t;

struct dp_guard {
    dp_store_t *store;
    dp_clock_t *clock;
    uv_loop_t *loop;
    uv_thread_t loop_thread;
    gtag_t *tags;
    int ntags;
    bool writes;
    bool shadow;
    bool dry_run;
    dp_event_cb on_switch;
    void *on_switch_ud;
    dp_cmd_authorize_fn authorize;
    void *authorize_ud;
    uint64_t next_id;
    pending_t **pending;
    size_t npending, cpending;
    listener_t *listeners;
    int nlisteners;
    listener_t *sent; /* see dp_guard_on_sent */
    int nsent;
    dp_guard_stats_t stats;
    /* Completions from writer threads, handed to the loop by `async`. */
    uv_async_t *async;
    uv_mutex_t mu;
    completion_t *queue;
    size_t nqueue, cqueue;
};

static const char *const outcome_names[] = {"pending", "done", "rejected", "failed", "shadow"};

const char *dp_cmd_outcome_name(dp_cmd_outcome_t o)
{
    return (unsigned)o < sizeof outcome_names / sizeof outcome_names[0] ? outcome_names[o] : "?";
}

static void drain(uv_async_t *h);

dp_guard_t *dp_guard_new(dp_store_t *store, dp_clock_t *clock, uv_loop_t *loop)
{
    dp_guard_t *g = dp_xcalloc(1, sizeof *g);
    g->store = store;
    g->clock = clock;
    g->loop = loop;
    g->loop_thread = uv_thread_self();
    g->writes = true;
    g->next_id = 1;
    uv_mutex_init(&g->mu);
    if (loop != NULL) {
        g->async = dp_xcalloc(1, sizeof *g->async);
        uv_async_init(loop, g->async, drain);
        g->async->data = g;
        uv_unref((uv_handle_t *)g->async); /* never keeps the loop alive by itself */
    }
    return g;
}

static gtag_t *gtag(dp_guard_t *g, int tag)
{
    if (tag < 0)
        return NULL;
    if (tag >= g->ntags) {
        int n = g->ntags ? g->ntags : 16;
        while (n <= tag)
            n *= 2;
        g->tags = dp_xrealloc(g->tags, sizeof *g->tags * (size_t)n);
        memset(g->tags + g->ntags, 0, sizeof *g->tags * (size_t)(n - g->ntags));
        g->ntags = n;
    }
    return &g->tags[tag];
}

static const gtag_t *gtag_c(const dp_guard_t *g, int tag)
{
    return tag >= 0 && tag < g->ntags ? &g->tags[tag] : NULL;
}

void dp_guard_set_limits(dp_guard_t *g, int tag, const dp_guard_limits_t *limits)
{
    gtag_t *t = gtag(g, tag);
    if (t == NULL)
        return;
    t->writable = true;
    t->lim = limits != NULL ? *limits : (dp_guard_limits_t){NAN, NAN, NAN};
}

void dp_guard_set_writer(dp_guard_t *g, int tag, dp_cmd_write_fn fn, void *ctx)
{
    gtag_t *t = gtag(g, tag);
    if (t == NULL)
        return;
    t->fn = fn;
    t->ctx = ctx;
}

bool dp_guard_writable(const dp_guard_t *g, int tag)
{
    const gtag_t *t = gtag_c(g, tag);
    return t != NULL && t->writable;
}

int dp_guard_get_limits(const dp_guard_t *g, int tag, dp_guard_limits_t *out)
{
    const gtag_t *t = gtag_c(g, tag);
    if (t == NULL || !t->writable)
        return DP_ENOENT;
    *out = t->lim;
    return 0;
}

void dp_guard_set_authorize(dp_guard_t *g, dp_cmd_authorize_fn fn, void *ud)
{
    g->authorize = fn;
    g->authorize_ud = ud;
}

void dp_guard_on_switch(dp_guard_t *g, dp_event_cb cb, void *ud)
{
    g->on_switch = cb;
    g->on_switch_ud = ud;
}

/* Logs a switch that changed and raises it as a "guard" event. */
static void switched(dp_guard_t *g, const char *text, const char *who)
{
    dp_log_warn(NULL, "%s by %s", text, who);
    if (g->on_switch == NULL)
        return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    dp_mp_pack_str(&pk, "by");
    dp_mp_pack_str(&pk, who);
    dp_mp_pack_str(&pk, "shadow");
    dp_mp_pack_bool(&pk, g->shadow);
    dp_mp_pack_str(&pk, "writes");
    dp_mp_pack_bool(&pk, g->writes);
    char line[320];
    snprintf(line, sizeof line, "%s by %s", text, who);
    dp_event_t ev = {.ts = dp_clock_now(g->clock),
                     .kind = "guard",
                     .text = line,
                     .payload = sb.data,
                     .payload_len = sb.size};
    g->on_switch(&ev, g->on_switch_ud);
    msgpack_sbuffer_destroy(&sb);
}

void dp_guard_enable_writes(dp_guard_t *g, bool enabled, const char *who)
{
    if (g->writes == enabled)
        return;
    g->writes = enabled;
    switched(g, enabled ? "writes enabled" : "writes disabled", who ? who : "?");
}

bool dp_guard_writes_enabled(const dp_guard_t *g)
{
    return g->writes;
}

void dp_guard_set_shadow(dp_guard_t *g, bool shadow, const char *who)
{
    if (g->shadow == shadow)
        return;
    g->shadow = shadow;
    switched(g, shadow ? "shadow mode on" : "shadow mode off", who ? who : "?");
}

bool dp_guard_shadow(const dp_guard_t *g)
{
    return g->shadow;
}

void dp_guard_set_dry_run(dp_guard_t *g, bool dry_run)
{
    g->dry_run = dry_run;
}

bool dp_guard_dry_run(const dp_guard_t *g)
{
    return g->dry_run;
}

void dp_guard_on_command(dp_guard_t *g, dp_cmd_cb cb, void *ud)
{
    g->listeners = dp_xrealloc(g->listeners, sizeof *g->listeners * (size_t)(g->nlisteners + 1));
    g->listeners[g->nlisteners++] = (listener_t){cb, ud};
}

void dp_guard_on_sent(dp_guard_t *g, dp_cmd_cb cb, void *ud)
{
    g->sent = dp_xrealloc(g->sent, sizeof *g->sent * (size_t)(g->nsent + 1));
    g->sent[g->nsent++] = (listener_t){cb, ud};
}

void dp_guard_get_stats(const dp_guard_t *g, dp_guard_stats_t *out)
{
    *out = g->stats;
    out->pending = g->npending;
}

static void format_value(const dp_value_t *v, char *buf, size_t size)
{
    switch (v->type) {
    case DP_NUM:
        if (size >= DP_FMTNUM_SIZE)
            dp_fmtnum(v->u.n, buf);
        else
            snprintf(buf, size, "%.17g", v->u.n);
        break;
    case DP_BOOL:
        snprintf(buf, size, "%s", v->u.b ? "true" : "false");
        break;
    case DP_STR:
        snprintf(buf, size, "\"%s\"", v->u.s);
        break;
    default:
        snprintf(buf, size, "nil");
    }
}

/* Logs, counts and delivers a finished command, then frees it. */
static void finish(dp_guard_t *g, pending_t *p, dp_cmd_outcome_t outcome, const char *reason)
{
    p->cmd.outcome = outcome;
    p->cmd.reason = reason != NULL ? reason : "";
    p->cmd.done_ts = dp_clock_now(g->clock);
    switch (outcome) {
    case DP_CMD_DONE:
        g->stats.done++;
        break;
    case DP_CMD_REJECTED:
        g->stats.rejected++;
        break;
    case DP_CMD_FAILED:
        g->stats.failed++;
        break;
    case DP_CMD_SHADOW:
        g->stats.shadow++;
        break;
    default:
        break;
    }
    char val[96];
    format_value(&p->cmd.value, val, sizeof val);
    const char *sep = p->cmd.reason[0] ? ": " : "";
    if (outcome == DP_CMD_DONE)
        dp_log_info(NULL, "command #%llu %s := %s by %s: done%s%s", (unsigned long long)p->cmd.id,
                    p->cmd.tag, val, p->cmd.origin, sep, p->cmd.reason);
    else
        dp_log_warn(NULL, "command #%llu %s := %s by %s: %s: %s", (unsigned long long)p->cmd.id,
                    p->cmd.tag, val, p->cmd.origin, dp_cmd_outcome_name(outcome), p->cmd.reason);
    if (p->cb != NULL)
        p->cb(&p->cmd, p->ud);
    for (int i = 0; i < g->nlisteners; i++)
        g->listeners[i].cb(&p->cmd, g->listeners[i].ud);
    free(p->origin);
    free(p->tag);
    free(p->svalue);
    free(p);
}

static pending_t *take_pending(dp_guard_t *g, uint64_t id)
{
    for (size_t i = 0; i < g->npending; i++) {
        if (g->pending[i]->cmd.id == id) {
            pending_t *p = g->pending[i];
            g->pending[i] = g->pending[--g->npending];
            return p;
        }
    }
    return NULL;
}

/* The guard's verdict: NULL to accept, else the reason (into buf). */
static const char *check(dp_guard_t *g, int tag, const dp_value_t *v, char *buf, size_t size)
{
    if (tag < 0)
        return "unknown tag";
    const gtag_t *t = gtag_c(g, tag);
    if (t == NULL || !t->writable)
        return "tag is not writable";
    if (!g->writes)
        return "writes are disabled";
    const dp_tag_t *cur = dp_store_get(g->store, tag);
    if (v->type == DP_NIL)
        return "no value";
    if (cur != NULL && cur->v.type != DP_NIL && cur->v.type != v->type) {
        static const char *const tn[] = {"nil", "number", "boolean", "string"};
        snprintf(buf, size, "type: the tag holds a %s, got a %s", tn[cur->v.type], tn[v->type]);
        return buf;
    }
    if (v->type != DP_NUM)
        return NULL;
    double x = v->u.n;
    if (!isfinite(x))
        return "value is not a finite number";
    if (!isnan(t->lim.min) && x < t->lim.min) {
        snprintf(buf, size, "min: %g is below the minimum %g", x, t->lim.min);
        return buf;
    }
    if (!isnan(t->lim.max) && x > t->lim.max) {
        snprintf(buf, size, "max: %g is above the maximum %g", x, t->lim.max);
        return buf;
    }
    if (!isnan(t->lim.max_rate)) {
        double ref, dt;
        dp_time_t now = dp_clock_now(g->clock);
        if (t->has_last) {
            ref = t->last_value;
            dt = (double)(now - t->last_ts) / 1e6;
        } else if (cur != NULL && cur->v.type == DP_NUM) {
            ref = cur->v.u.n;
            dt = 1.0;
        } else {
            return NULL;
        }
        double rate = dt > 0 ? fabs(x - ref) / dt : (x == ref ? 0 : INFINITY);
        if (rate > t->lim.max_rate) {
            snprintf(buf, size, "max_rate: %g -> %g in %.3g s is %.3g/s, above %g/s", ref, x, dt,
                     rate, t->lim.max_rate);
            return buf;
        }
    }
    return NULL;
}

uint64_t dp_guard_submit(dp_guard_t *g, const char *origin, const char *tag, const dp_value_t *v,
                         dp_cmd_cb cb, void *ud)
{
    pending_t *p = dp_xcalloc(1, sizeof *p);
    p->origin = dp_xstrdup(origin != NULL ? origin : "?");
    p->tag = dp_xstrdup(tag != NULL ? tag : "");
    p->cb = cb;
    p->ud = ud;
    p->cmd.id = g->next_id++;
    p->cmd.ts = dp_clock_now(g->clock);
    p->cmd.origin = p->origin;
    p->cmd.tag = p->tag;
    p->cmd.tag_id = dp_store_find(g->store, p->tag);
    if (p->cmd.tag_id < 0)
        p->cmd.tag_id = -1;
    p->cmd.value = v != NULL ? *v : (dp_value_t){0};
    if (p->cmd.value.type == DP_STR) {
        p->svalue = dp_xstrdup(p->cmd.value.u.s);
        p->cmd.value.u.s = p->svalue;
    }
    g->stats.submitted++;
    uint64_t id = p->cmd.id;
    char buf[256];
    const char *why = check(g, p->cmd.tag_id, &p->cmd.value, buf, sizeof buf);
    if (why == NULL && g->authorize != NULL)
        why = g->authorize(p->origin, p->tag, g->authorize_ud, buf, sizeof buf);
    if (why != NULL) {
        finish(g, p, DP_CMD_REJECTED, why);
        return id;
    }
    gtag_t *t = gtag(g, p->cmd.tag_id);
    if (g->shadow) {
        finish(g, p, DP_CMD_SHADOW, "shadow mode, nothing was written");
        return id;
    }
    if (g->dry_run && t->fn != NULL) {
        finish(g, p, DP_CMD_SHADOW, "dry run: not sent to the device");
        return id;
    }
    if (p->cmd.value.type == DP_NUM) {
        t->has_last = true;
        t->last_value = p->cmd.value.u.n;
        t->last_ts = p->cmd.ts;
    }
    if (t->fn == NULL) {
        int rc = dp_store_write(g->store, p->cmd.tag_id, &p->cmd.value, p->cmd.ts, DP_Q_GOOD);
        if (rc < 0)
            finish(g, p, DP_CMD_FAILED, dp_strerror(rc));
        else
            finish(g, p, DP_CMD_DONE, "");
        return id;
    }
    if (g->npending == g->cpending) {
        g->cpending = g->cpending ? 2 * g->cpending : 8;
        g->pending = dp_xrealloc(g->pending, sizeof *g->pending * g->cpending);
    }
    g->pending[g->npending++] = p;
    p->cmd.outcome = DP_CMD_PENDING;
    p->cmd.reason = "";
    for (int i = 0; i < g->nsent; i++)
        g->sent[i].cb(&p->cmd, g->sent[i].ud);
    char *err = NULL;
    int rc = t->fn(t->ctx, id, p->cmd.tag_id, &p->cmd.value, &err);
    if (rc < 0) {
        pending_t *q = take_pending(g, id);
        if (q != NULL)
            finish(g, q, DP_CMD_FAILED, err != NULL ? err : dp_strerror(rc));
    }
    free(err);
    return id;
}

static void complete_now(dp_guard_t *g, uint64_t id, dp_cmd_outcome_t outcome, const char *reason)
{
    pending_t *p = take_pending(g, id);
    if (p == NULL)
        return;
    if (outcome != DP_CMD_DONE && outcome != DP_CMD_FAILED) {
        outcome = DP_CMD_FAILED;
        reason = "writer reported an invalid outcome";
    }
    finish(g, p, outcome, reason);
}

void dp_guard_complete(dp_guard_t *g, uint64_t id, dp_cmd_outcome_t outcome, const char *reason)
{
    uv_thread_t self = uv_thread_self();
    if (g->async == NULL || uv_thread_equal(&self, &g->loop_thread)) {
        complete_now(g, id, outcome, reason);
        return;
    }
    uv_mutex_lock(&g->mu);
    if (g->nqueue == g->cqueue) {
        g->cqueue = g->cqueue ? 2 * g->cqueue : 8;
        g->queue = dp_xrealloc(g->queue, sizeof *g->queue * g->cqueue);
    }
    g->queue[g->nqueue++] = (completion_t){id, outcome, reason != NULL ? dp_xstrdup(reason) : NULL};
    uv_mutex_unlock(&g->mu);
    uv_async_send(g->async);
}

static void drain(uv_async_t *h)
{
    dp_guard_t *g = h->data;
    uv_mutex_lock(&g->mu);
    completion_t *q = g->queue;
    size_t n = g->nqueue;
    g->queue = NULL;
    g->nqueue = g->cqueue = 0;
    uv_mutex_unlock(&g->mu);
    for (size_t i = 0; i < n; i++) {
        complete_now(g, q[i].id, q[i].outcome, q[i].reason);
        free(q[i].reason);
    }
    free(q);
}

static void free_async(uv_handle_t *h)
{
    free(h);
}

void dp_guard_settle(dp_guard_t *g)
{
    if (g == NULL)
        return;
    if (g->async != NULL)
        drain(g->async);
    while (g->npending > 0) {
        pending_t *p = g->pending[--g->npending];
        finish(g, p, DP_CMD_FAILED, "shutting down");
    }
}

void dp_guard_free(dp_guard_t *g)
{
    if (g == NULL)
        return;
    dp_guard_settle(g);
    if (g->async != NULL)
        uv_close((uv_handle_t *)g->async, free_async);
    for (size_t i = 0; i < g->nqueue; i++)
        free(g->queue[i].reason);
    free(g->queue);
    uv_mutex_destroy(&g->mu);
    free(g->pending);
    free(g->tags);
    free(g->listeners);
    free(g->sent);
    free(g);
}
