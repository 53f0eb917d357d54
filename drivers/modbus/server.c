/* The "modbus_server" driver: a Modbus TCP server on the loop thread that
 * exposes chosen tags of the plant to SCADA and HMIs.
 *
 *   device "hmi" { driver = "modbus_server", listen = "127.0.0.1:1502",
 *                  map = { { tag = "P101.flow", area = "input", address = 0, type = "f32" } } }
 *
 * Map entries use the point syntax of the modbus client (codec.h) plus the
 * exposed tag's full name. Reads encode the tags' current values into
 * register images; writes (FC05/06/15/16/22) are decoded per entry and become
 * commands through the plant's guard, with origin "modbus:<peer>"; the
 * response is sent when every command of the request has its outcome.
 *
 * Hostile input: a stream that is not Modbus TCP (bad protocol id or length)
 * closes the connection; a well-framed request that cannot be served gets an
 * exception response. Connections beyond max_clients are closed at once, and
 * a connection that sends nothing for idle_timeout is closed, so that the
 * half-open sockets a master leaves behind (a cable pulled, a master that
 * restarted without closing) do not keep the slots until the plant stops. */
#include "modbus.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/command.h"
#include "../../runtime/log.h"

/* ---- settings ------------------------------------------------------------ */

typedef struct {
    char *tag;
} tag_field_t;

static const dp_setting_t tag_field[] = {
    {.name = "tag",
     .type = DP_SET_STRING,
     .offset = offsetof(tag_field_t, tag),
     .required = true,
     .doc = "The exposed tag (full name, `twin.tag`)."},
    DP_SETTINGS_END,
};

static void free_map(void *field)
{
    dp_mb_server_cfg_t *c =
        (dp_mb_server_cfg_t *)((char *)field - offsetof(dp_mb_server_cfg_t, map));
    for (size_t i = 0; i < c->map.n; i++) {
        dp_settings_free(dp_mb_point_settings, &c->map.items[i]);
        free(c->map.items[i].tag);
    }
    free(c->map.items);
    c->map.items = NULL;
    c->map.n = 0;
}

static int parse_map(lua_State *L, int idx, void *field, char **err)
{
    dp_mb_server_cfg_t *c =
        (dp_mb_server_cfg_t *)((char *)field - offsetof(dp_mb_server_cfg_t, map));
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        return dp_fail(err, DP_EINVAL, "expected a list of { tag = ..., address = ... } entries");
    size_t n = (size_t)lua_rawlen(L, idx);
    c->map.items = dp_xcalloc(n + 1, sizeof *c->map.items);
    static const char *const only_tag[] = {"tag", NULL};
    const char *point_names[32] = {NULL};
    int k = 0;
    for (const dp_setting_t *s = dp_mb_point_settings; s->name != NULL && k < 31; s++)
        point_names[k++] = s->name;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        char ctx[64];
        snprintf(ctx, sizeof ctx, "entry %zu", i + 1);
        dp_mb_point_t *p = &c->map.items[i];
        c->map.n = i + 1;
        tag_field_t tf = {0};
        char *inner = NULL;
        rc = dp_settings_parse(L, -1, dp_mb_point_settings, p, only_tag, ctx, err);
        if (rc == 0)
            rc = dp_settings_parse(L, -1, tag_field, &tf, point_names, ctx, err);
        p->tag = tf.tag;
        lua_pop(L, 1);
        if (rc < 0)
            break;
        if ((rc = dp_mb_check_point(p, &inner)) < 0) {
            dp_fail(err, rc, "%s (tag %s): %s", ctx, p->tag, inner);
            free(inner);
            break;
        }
        for (size_t j = 0; j < i; j++) {
            if (dp_mb_overlap(p, &c->map.items[j])) {
                rc = dp_fail(err, DP_EINVAL,
                             "%s (tag %s): address: %s %lld overlaps entry %zu (tag %s)", ctx,
                             p->tag, dp_mb_area_names[p->area], (long long)p->address, j + 1,
                             c->map.items[j].tag);
                break;
            }
        }
    }
    return rc;
}

#define SCFG(f) offsetof(dp_mb_server_cfg_t, f)

static const dp_setting_t device_settings[] = {
    {.name = "listen",
     .type = DP_SET_STRING,
     .offset = SCFG(listen),
     .def = "127.0.0.1:1502",
     .doc = "Address and port to listen on (`host:port`, port 0: any free port). Loopback by "
            "default."},
    {.name = "fallback_port",
     .type = DP_SET_BOOL,
     .offset = SCFG(fallback_port),
     .doc = "When the port is taken, listen on a free port instead (logged) rather than fail."},
    {.name = "unit_id",
     .type = DP_SET_INT,
     .offset = SCFG(unit_id),
     .min = 0,
     .max = 255,
     .doc = "Answer only this unit id (0: every unit id; requests for others are ignored)."},
    {.name = "max_clients",
     .type = DP_SET_INT,
     .offset = SCFG(max_clients),
     .def = "16",
     .min = 1,
     .max = 1024,
     .doc = "Connections served at once; more are closed on arrival."},
    {.name = "idle_timeout",
     .type = DP_SET_DURATION,
     .offset = SCFG(idle_timeout),
     .def = "60s",
     .min = 0,
     .max = 86400,
     .doc = "A connection that sends no request for this long is closed (0: never)."},
    {.name = "map",
     .type = DP_SET_CUSTOM,
     .offset = SCFG(map),
     .required = true,
     .parse = parse_map,
     .free = free_map,
     .doc = "The exposed tags: a list of `{ tag = \"twin.tag\", area = ..., address = ..., type "
            "= ..., order = ..., scale = ..., offset = ... }` (the client's point fields)."},
    DP_SETTINGS_END,
};

/* Tags are not bound to a server (it exposes tags through its map). */
static const dp_setting_t no_point_settings[] = {DP_SETTINGS_END};

/* ---- state ------------------------------------------------------------------ */

typedef struct conn conn_t;

typedef struct srv {
    dp_device_t *dev;
    const dp_mb_server_cfg_t *cfg;
    int *tags; /* per map entry: store handle */
    uv_tcp_t *listener;
    uv_timer_t *sweep; /* closes idle connections */
    int port;
    conn_t *conns;
    int nconns;
    bool started;
    struct srv *next; /* every server, for dp__mb_server_find() */
    struct {
        uint64_t connections, requests, exceptions, writes, refused, closed_bad, closed_idle;
    } st;
} srv_t;

struct conn {
    uv_tcp_t tcp;
    srv_t *srv; /* NULL once the server stopped */
    conn_t *next;
    char peer[64];
    uint8_t buf[4 * DP_MB_MAX_ADU];
    size_t len;
    dp__mb_wbatch_t wb; /* the current write request's commands */
    bool closing;       /* closed (or closing): freed when pending reaches 0 */
    bool closed;        /* the close callback ran */
    bool paused;        /* reading stopped: the buffer is full */
    uint64_t last_ms;   /* loop time of the last whole request (or of the accept) */
    dp_mb_request_t req;
    uint8_t frame[DP_MB_MAX_ADU];
    size_t frame_len;
};

static uv_mutex_t registry_mu;
static uv_once_t registry_once = UV_ONCE_INIT;
static srv_t *registry;

static void registry_init(void)
{
    uv_mutex_init(&registry_mu);
}

dp_device_t *dp__mb_server_find(const dp_host_t *host, const char *name)
{
    uv_once(&registry_once, registry_init);
    dp_device_t *found = NULL;
    uv_mutex_lock(&registry_mu);
    for (srv_t *s = registry; s != NULL && found == NULL; s = s->next) {
        if (s->dev->host == host && strcmp(s->dev->name, name) == 0)
            found = s->dev;
    }
    uv_mutex_unlock(&registry_mu);
    return found;
}

int dp__mb_server_port(const dp_device_t *server)
{
    const srv_t *s = server->impl;
    return s != NULL ? s->port : 0;
}

/* ---- reads ------------------------------------------------------------------- */

static bool serves_unit(const dp_mb_point_t *p, int unit)
{
    return p->unit_id == 0 || p->unit_id == unit;
}

int dp__mb_server_read(dp_device_t *server, int unit, int area, int address, int count,
                       uint16_t *out)
{
    srv_t *s = server->impl;
    const dp_mb_server_cfg_t *c = s->cfg;
    memset(out, 0, sizeof *out * (size_t)count);
    bool mapped = false;
    for (size_t i = 0; i < c->map.n; i++) {
        const dp_mb_point_t *p = &c->map.items[i];
        int w = dp_mb_width(p);
        if (p->area != area || !serves_unit(p, unit) || p->address + w <= address ||
            p->address >= address + count)
            continue;
        mapped = true;
        const dp_tag_t *t = s->tags != NULL ? dp_store_get(s->dev->host->store, s->tags[i]) : NULL;
        uint16_t regs[DP_MB_MAX_READ_REGS] = {0};
        /* A tag without a value, or one the type cannot hold, reads as 0. */
        if (t != NULL && t->v.type != DP_NIL && dp_mb_encode(p, &t->v, regs, NULL) < 0)
            memset(regs, 0, sizeof regs);
        for (int k = 0; k < w; k++) {
            int a = (int)p->address + k;
            if (a < address || a >= address + count)
                continue;
            if (p->type == DP_MB_BIT)
                out[a - address] |= (uint16_t)(regs[0] ? 1u << p->bit : 0);
            else
                out[a - address] = regs[k];
        }
    }
    return mapped ? 0 : DP_MB_EX_ILLEGAL_ADDRESS;
}

/* ---- connections -------------------------------------------------------------- */

typedef struct {
    uv_write_t req;
    uint8_t data[DP_MB_MAX_ADU];
} wreq_t;

static void on_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *cn = h->data;
    cn->closed = true;
    if (cn->wb.pending == 0)
        free(cn);
}

static void conn_close(conn_t *cn, const char *why)
{
    if (cn->closing)
        return;
    cn->closing = true;
    srv_t *s = cn->srv;
    if (s != NULL) {
        if (why != NULL) {
            s->st.closed_bad++;
            dp_log_warn(NULL, "device %s: closing connection from %s: %s", s->dev->name, cn->peer,
                        why);
        }
        for (conn_t **pp = &s->conns; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == cn) {
                *pp = cn->next;
                break;
            }
        }
        s->nconns--;
    }
    uv_close((uv_handle_t *)&cn->tcp, on_conn_closed);
}

static void send_bytes(conn_t *cn, const uint8_t *data, size_t n)
{
    if (cn->closing)
        return;
    wreq_t *w = dp_xmalloc(sizeof *w);
    memcpy(w->data, data, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&cn->tcp, &b, 1, on_written) < 0) {
        free(w);
        conn_close(cn, NULL);
    }
}

static void send_exception(conn_t *cn, int code)
{
    uint8_t out[DP_MB_MAX_ADU];
    if (cn->srv != NULL)
        cn->srv->st.exceptions++;
    send_bytes(cn, out, dp_mb_response_exception(&cn->req, code, out));
}

static void process(conn_t *cn);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

/* The current write request is finished: answer it. */
static void answer_write(conn_t *cn)
{
    if (cn->wb.verdict != 0) {
        if (cn->srv != NULL)
            cn->srv->st.refused++;
        send_exception(cn, cn->wb.verdict);
    } else {
        uint8_t out[DP_MB_MAX_ADU];
        send_bytes(cn, out, dp_mb_response_write(&cn->req, cn->frame, out));
    }
}

static void on_outcome(const dp_cmd_t *cmd, void *ud)
{
    dp__mb_wbatch_t *b = ud;
    if (cmd->outcome == DP_CMD_PENDING)
        return;
    if ((cmd->outcome == DP_CMD_REJECTED || cmd->outcome == DP_CMD_FAILED) && b->verdict == 0) {
        b->verdict =
            cmd->outcome == DP_CMD_REJECTED ? DP_MB_EX_ILLEGAL_VALUE : DP_MB_EX_DEVICE_FAILURE;
        snprintf(b->reason, sizeof b->reason, "%s: %s", cmd->tag, cmd->reason);
    }
    if (--b->pending == 0)
        b->done(b, true);
}

int dp__mb_server_write(dp_device_t *server, const dp_mb_request_t *r, const char *origin,
                        dp__mb_wbatch_t *b)
{
    srv_t *s = server->impl;
    const dp_mb_server_cfg_t *c = s->cfg;
    dp_store_t *store = s->dev->host->store;
    struct {
        int entry;
        dp_value_t v;
        char sbuf[2 * DP_MB_MAX_READ_REGS + 1];
    } *cmds = NULL;
    int ncmds = 0, rc = 0;
    bool mapped = false;
    for (size_t i = 0; i < c->map.n && rc == 0; i++) {
        const dp_mb_point_t *p = &c->map.items[i];
        int w = dp_mb_width(p);
        if (p->area != r->area || !serves_unit(p, r->unit_id) || p->address + w <= r->address ||
            p->address >= r->address + r->count)
            continue;
        mapped = true;
        if (p->address < r->address || p->address + w > r->address + r->count) {
            rc = DP_MB_EX_ILLEGAL_ADDRESS; /* half of a multi-register value */
            break;
        }
        const dp_tag_t *t = s->tags != NULL ? dp_store_get(store, s->tags[i]) : NULL;
        uint16_t regs[DP_MB_MAX_READ_REGS];
        const uint16_t *src = r->values + (p->address - r->address);
        if (r->function == 22) {
            /* Mask write: result = (current AND and_mask) OR (or_mask AND NOT and_mask). */
            uint16_t cur = 0;
            if (t != NULL && t->v.type != DP_NIL)
                dp_mb_encode(p, &t->v, &cur, NULL);
            if (p->type == DP_MB_BIT)
                cur = (uint16_t)(cur ? 1u << p->bit : 0);
            regs[0] = (uint16_t)((cur & r->and_mask) | (r->or_mask & ~r->and_mask));
            src = regs;
        }
        cmds = dp_xrealloc(cmds, sizeof *cmds * (size_t)(ncmds + 1));
        dp_mb_decode(p, src, &cmds[ncmds].v, cmds[ncmds].sbuf);
        /* Bits of a register: only the bits that change are commands. */
        if (p->type == DP_MB_BIT && t != NULL && t->v.type == DP_BOOL &&
            t->v.u.b == cmds[ncmds].v.u.b)
            continue;
        cmds[ncmds].entry = (int)i;
        ncmds++;
    }
    if (rc == 0 && !mapped)
        rc = DP_MB_EX_ILLEGAL_ADDRESS;
    if (rc == 0 && ncmds > 0 && s->dev->host->guard == NULL)
        rc = DP_MB_EX_DEVICE_FAILURE;
    if (rc != 0) {
        free(cmds);
        return rc;
    }
    b->verdict = 0;
    b->reason[0] = '\0';
    /* Counted up front, so outcomes delivered during submit do not finish the
     * batch early. */
    b->pending = ncmds + 1;
    for (int i = 0; i < ncmds; i++) {
        const dp_tag_t *t = dp_store_get(store, s->tags[cmds[i].entry]);
        /* Set here: the array may have moved while it grew. */
        if (cmds[i].v.type == DP_STR)
            cmds[i].v.u.s = cmds[i].sbuf;
        s->st.writes++;
        dp_guard_submit(s->dev->host->guard, origin, t->name, &cmds[i].v, on_outcome, b);
    }
    free(cmds);
    /* Every outcome already known (refused, shadow, written at once). */
    if (--b->pending == 0)
        b->done(b, false);
    return 0;
}

/* A connection's write request has all its outcomes. */
static void conn_write_done(dp__mb_wbatch_t *b, bool async)
{
    conn_t *cn = (conn_t *)((char *)b - offsetof(conn_t, wb));
    if (cn->closed) {
        free(cn);
        return;
    }
    if (cn->closing)
        return;
    answer_write(cn);
    if (async)
        process(cn); /* requests that arrived meanwhile */
}

static void handle_frame(conn_t *cn)
{
    srv_t *s = cn->srv;
    s->st.requests++;
    int rc = dp_mb_parse_request(cn->frame, cn->frame_len, &cn->req);
    if (rc < 0) {
        conn_close(cn, "malformed frame");
        return;
    }
    if (s->cfg->unit_id != 0 && cn->req.unit_id != s->cfg->unit_id)
        return; /* not ours: a gateway would not answer either */
    if (rc > 0) {
        send_exception(cn, rc);
        return;
    }
    if (!cn->req.write) {
        static uint16_t data[DP_MB_MAX_READ_BITS];
        int ex = dp__mb_server_read(s->dev, cn->req.unit_id, cn->req.area, cn->req.address,
                                    cn->req.count, data);
        if (ex != 0) {
            send_exception(cn, ex);
            return;
        }
        uint8_t out[DP_MB_MAX_ADU];
        send_bytes(cn, out, dp_mb_response_read(&cn->req, data, out));
        return;
    }
    char origin[96];
    snprintf(origin, sizeof origin, "modbus:%s", cn->peer);
    cn->wb.done = conn_write_done;
    int ex = dp__mb_server_write(s->dev, &cn->req, origin, &cn->wb);
    if (ex != 0) {
        s->st.refused++;
        send_exception(cn, ex);
    }
}

/* Serves every complete frame in the buffer, one at a time: a write waits
 * for its commands before the next request is looked at. */
static void process(conn_t *cn)
{
    while (!cn->closing && cn->wb.pending == 0 && cn->srv != NULL) {
        int n = dp_mb_frame_len(cn->buf, cn->len);
        if (n < 0) {
            conn_close(cn, "not Modbus TCP (bad protocol id or length)");
            return;
        }
        if (n == 0)
            break;
        memcpy(cn->frame, cn->buf, (size_t)n);
        cn->frame_len = (size_t)n;
        /* Only whole requests count: a frame trickled in a byte at a time
         * does not keep a slot. */
        cn->last_ms = uv_now(cn->tcp.loop);
        memmove(cn->buf, cn->buf + n, cn->len - (size_t)n);
        cn->len -= (size_t)n;
        handle_frame(cn);
    }
    if (!cn->closing && cn->wb.pending == 0 && cn->paused && cn->len < sizeof cn->buf) {
        cn->paused = false;
        uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_read);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *cn = h->data;
    *buf = uv_buf_init((char *)cn->buf + cn->len, (unsigned)(sizeof cn->buf - cn->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    conn_t *cn = st->data;
    if (n < 0) {
        conn_close(cn, NULL);
        return;
    }
    cn->len += (size_t)n;
    process(cn);
    /* A client that pipelines faster than its writes complete is paused. */
    if (!cn->closing && cn->len == sizeof cn->buf) {
        cn->paused = true;
        uv_read_stop(st);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    srv_t *s = server->data;
    if (status < 0)
        return;
    conn_t *cn = dp_xcalloc(1, sizeof *cn);
    uv_tcp_init(server->loop, &cn->tcp);
    cn->tcp.data = cn;
    if (uv_accept(server, (uv_stream_t *)&cn->tcp) < 0) {
        cn->closing = true;
        uv_close((uv_handle_t *)&cn->tcp, on_conn_closed);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(cn->peer, sizeof cn->peer, "?");
    if (uv_tcp_getpeername(&cn->tcp, (struct sockaddr *)&ss, &len) == 0)
        dp_sockaddr_name((const struct sockaddr *)&ss, cn->peer, sizeof cn->peer);
    cn->srv = s;
    cn->next = s->conns;
    s->conns = cn;
    s->nconns++;
    s->st.connections++;
    if (s->nconns > s->cfg->max_clients) {
        conn_close(cn, "too many clients");
        return;
    }
    cn->last_ms = uv_now(server->loop);
    uv_tcp_nodelay(&cn->tcp, 1);
    uv_read_start((uv_stream_t *)&cn->tcp, on_alloc, on_read);
}

static void on_sweep(uv_timer_t *t)
{
    srv_t *s = t->data;
    uint64_t now = uv_now(t->loop), idle_ms = (uint64_t)(s->cfg->idle_timeout / DP_US_PER_MS);
    for (conn_t *cn = s->conns, *next; cn != NULL; cn = next) {
        next = cn->next;
        /* A write waiting for its outcome is the server's wait, not the client's. */
        if (now - cn->last_ms < idle_ms || cn->wb.pending > 0)
            continue;
        s->st.closed_idle++;
        dp_log_info(NULL, "device %s: closing connection from %s: no request for %.3g s",
                    s->dev->name, cn->peer, (double)(now - cn->last_ms) / 1000);
        conn_close(cn, NULL);
    }
}

/* ---- lifecycle ------------------------------------------------------------------ */

static int srv_open(dp_device_t *dev, char **err)
{
    dp_mb_server_cfg_t *c = dev->cfg;
    const char *colon = strrchr(c->listen, ':');
    char *end = NULL;
    long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || colon == c->listen || end == colon + 1 || *end != '\0' || port < 0 ||
        port > 65535)
        return dp_fail(err, DP_EINVAL, "listen: expected \"host:port\", got \"%s\"", c->listen);
    srv_t *s = dp_xcalloc(1, sizeof *s);
    s->dev = dev;
    s->cfg = c;
    dev->impl = s;
    uv_once(&registry_once, registry_init);
    uv_mutex_lock(&registry_mu);
    s->next = registry;
    registry = s;
    uv_mutex_unlock(&registry_mu);
    return 0;
}

static int srv_add_point(dp_device_t *dev, int tag, void *point, char **err)
{
    (void)dev;
    (void)tag;
    (void)point;
    return dp_fail(err, DP_EINVAL,
                   "device: a modbus_server exposes tags through its `map`; tags cannot be "
                   "bound to it");
}

static int srv_bind(dp_device_t *dev, char **err)
{
    srv_t *s = dev->impl;
    const dp_mb_server_cfg_t *c = s->cfg;
    free(s->tags);
    s->tags = dp_xcalloc(c->map.n + 1, sizeof *s->tags);
    for (size_t i = 0; i < c->map.n; i++) {
        s->tags[i] = dp_store_find(dev->host->store, c->map.items[i].tag);
        if (s->tags[i] < 0)
            return dp_fail(err, DP_ENOENT, "map: entry %zu: tag: no tag \"%s\" in this plant",
                           i + 1, c->map.items[i].tag);
    }
    return 0;
}

static void free_on_close(uv_handle_t *h)
{
    free(h);
}

static int srv_start(dp_device_t *dev, char **err)
{
    srv_t *s = dev->impl;
    if (s->started)
        return dp_fail(err, DP_ESTATE, "already started");
    if (s->tags == NULL) {
        int rc = srv_bind(dev, err);
        if (rc < 0)
            return rc;
    }
    s->started = true;
    if (dev->host->loop == NULL)
        return 0; /* virtual time: served in process to `server = ...` clients only */
    const char *colon = strrchr(s->cfg->listen, ':');
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - s->cfg->listen), s->cfg->listen);
    int port = atoi(colon + 1);
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc < 0)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
    if (rc < 0) {
        s->started = false;
        return dp_fail(err, rc, "listen: \"%s\" is not an IP address", host);
    }
    s->listener = dp_xcalloc(1, sizeof *s->listener);
    uv_tcp_init(dev->host->loop, s->listener);
    s->listener->data = s;
    rc = uv_tcp_bind(s->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)s->listener, 64, on_connection);
    if (rc == UV_EADDRINUSE && s->cfg->fallback_port) {
        dp_log_warn(NULL, "device %s: port %d is taken; listening on a free port instead",
                    dev->name, port);
        uv_close((uv_handle_t *)s->listener, free_on_close);
        s->listener = dp_xcalloc(1, sizeof *s->listener);
        uv_tcp_init(dev->host->loop, s->listener);
        s->listener->data = s;
        if (addr.ss_family == AF_INET)
            ((struct sockaddr_in *)&addr)->sin_port = 0;
        else
            ((struct sockaddr_in6 *)&addr)->sin6_port = 0;
        rc = uv_tcp_bind(s->listener, (struct sockaddr *)&addr, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)s->listener, 64, on_connection);
    }
    if (rc < 0) {
        uv_close((uv_handle_t *)s->listener, free_on_close);
        s->listener = NULL;
        s->started = false;
        return dp_fail(err, rc, "listen: cannot listen on %s: %s", s->cfg->listen, uv_strerror(rc));
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(s->listener, (struct sockaddr *)&bound, &len);
    s->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    dp_log_info(NULL, "device %s: Modbus TCP server on %s:%d (%zu tags)", dev->name, host, s->port,
                s->cfg->map.n);
    if (s->cfg->idle_timeout > 0) {
        /* Checked twice per timeout: a connection goes between 1 and 1.5 timeouts idle. */
        uint64_t every = (uint64_t)(s->cfg->idle_timeout / DP_US_PER_MS / 2);
        s->sweep = dp_xcalloc(1, sizeof *s->sweep);
        uv_timer_init(dev->host->loop, s->sweep);
        s->sweep->data = s;
        uv_timer_start(s->sweep, on_sweep, every ? every : 1, every ? every : 1);
    }
    if (!dp_is_loopback((const struct sockaddr *)&addr))
        dp_log_warn(NULL,
                    "device %s: Modbus TCP has no authentication or encryption: every host "
                    "that reaches %s:%d reads the mapped tags and may command the writable "
                    "ones (through the guard); keep it on the control network",
                    dev->name, host, s->port);
    return 0;
}

static void srv_stop(dp_device_t *dev)
{
    srv_t *s = dev->impl;
    if (s == NULL || !s->started)
        return;
    s->started = false;
    while (s->conns != NULL) {
        conn_t *cn = s->conns;
        conn_close(cn, NULL);
        cn->srv = NULL;
    }
    if (s->listener != NULL) {
        uv_close((uv_handle_t *)s->listener, free_on_close);
        s->listener = NULL;
    }
    if (s->sweep != NULL) {
        uv_close((uv_handle_t *)s->sweep, free_on_close);
        s->sweep = NULL;
    }
    s->port = 0;
}

static void srv_close(dp_device_t *dev)
{
    srv_t *s = dev->impl;
    if (s == NULL)
        return;
    srv_stop(dev);
    uv_mutex_lock(&registry_mu);
    for (srv_t **pp = &registry; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    uv_mutex_unlock(&registry_mu);
    free(s->tags);
    free(s);
    dev->impl = NULL;
}

static size_t srv_stats(dp_device_t *dev, dp_stat_t *out, size_t max)
{
    srv_t *s = dev->impl;
    if (s == NULL)
        return 0;
    dp_stat_t st[] = {
        {"port", s->port, NULL},
        {"clients", s->nconns, NULL},
        {"connections", (double)s->st.connections, NULL},
        {"requests", (double)s->st.requests, NULL},
        {"exceptions", (double)s->st.exceptions, NULL},
        {"writes", (double)s->st.writes, NULL},
        {"refused", (double)s->st.refused, NULL},
        {"closed_bad", (double)s->st.closed_bad, NULL},
        {"closed_idle", (double)s->st.closed_idle, NULL},
    };
    size_t n = DP_ARRAY_LEN(st) < max ? DP_ARRAY_LEN(st) : max;
    memcpy(out, st, n * sizeof *out);
    return n;
}

const dp_driver_t dp_modbus_server_driver = {
    .name = "modbus_server",
    .summary = "A Modbus TCP server exposing chosen tags to SCADA and HMIs; writes pass the "
               "guard.",
    .device_settings = device_settings,
    .device_size = sizeof(dp_mb_server_cfg_t),
    .point_settings = no_point_settings,
    .point_size = 0,
    .open = srv_open,
    .add_point = srv_add_point,
    .bind = srv_bind,
    .start = srv_start,
    .stop = srv_stop,
    .close = srv_close,
    .stats = srv_stats,
};
