/* The HTTP server on the plant's loop: connections, TLS, routing, auth, rate
 * limits, the dashboard's static files, live streams (Server-Sent Events),
 * the event and command rings, and /metrics. The JSON endpoints are in
 * http_api.c. */
#include <arpa/inet.h>
#include <ctype.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../drivers/driver.h"
#include "http_int.h"
#include "journal.h"
#include "log.h"
#include "persist.h"
#include "tls.h"

dp_guard_t *dp__http_guard(dp_plant_t *plant)
{
    return dp_plant_guard(plant);
}

dp_alarms_t *dp__http_alarms(dp_plant_t *plant)
{
    return dp_plant_alarms(plant);
}

#define STREAM_MAX_BACKLOG (4u << 20) /* bytes queued for one client before it is dropped */
#define BUCKETS            1024

struct conn {
    uv_tcp_t tcp; /* first: h2o hands this pointer back in the close callback */
    dp_http_t *http;
    struct conn *prev, *next;
    /* A write libuv refused at once, whose callback (refused->cb) is still
     * owed to h2o, with the status libuv gave. */
    uv_write_t *refused;
    int refused_status;
};

struct stream {
    h2o_generator_t gen; /* first */
    dp_http_t *http;
    h2o_req_t *req;
    struct stream *prev, *next;
    char *twin, *glob;
    bool want_tags, want_events;
    uint8_t *match; /* per tag: 0 unknown, 1 yes, 2 no */
    int nmatch;
    dp_jbuf_t pending, sending;
    bool inflight, stopped, finish, linked;
};

struct ticket {
    h2o_req_t *req;       /* NULL once the request is answered or gone */
    struct ticket **slot; /* in the request's pool, pointing back here */
    dp_http_t *http;
    struct ticket *prev, *next;
};

struct bucket {
    unsigned char addr[16];
    double tokens;
    uint64_t last_ns;
    bool used;
};

/* ---- listener relays ---------------------------------------------------- */

/* The plant and the guard cannot remove a listener, and both outlive the
 * server: each registers once a relay that forwards to the running server
 * (or drops the call when none is running). */
static struct relay {
    const void *owner;
    dp_http_t *http;
} relays[8];

static struct relay *relay_for(const void *owner, bool *fresh)
{
    *fresh = false;
    for (size_t i = 0; i < DP_ARRAY_LEN(relays); i++) {
        if (relays[i].owner == owner)
            return &relays[i];
    }
    for (size_t i = 0; i < DP_ARRAY_LEN(relays); i++) {
        if (relays[i].owner == NULL) {
            relays[i].owner = owner;
            *fresh = true;
            return &relays[i];
        }
    }
    return NULL;
}

static void relay_event(const dp_event_t *ev, void *ud)
{
    struct relay *r = ud;
    if (r->http != NULL)
        dp__http_record_event(r->http, ev);
}

static void relay_cmd(const dp_cmd_t *cmd, void *ud)
{
    struct relay *r = ud;
    if (r->http != NULL)
        dp__http_record_cmd(r->http, cmd);
}

/* ---- responses ---------------------------------------------------------- */

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void count_status(dp_http_t *h, int status)
{
    h->requests++;
    if (status >= 100 && status < 600)
        h->status_counts[status / 100]++;
}

/* Headers on every answer: no caching of live data, no MIME sniffing, no
 * framing (the alarm buttons must not be clickjacked), and no Referer that
 * could carry a ?token= elsewhere. */
static void common_headers(h2o_req_t *req, const char *type)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-frame-options"), 0, NULL,
                          H2O_STRLIT("DENY"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
}

static void send_body(dp_http_t *h, h2o_req_t *req, int status, const char *type, const char *body,
                      size_t len)
{
    count_status(h, status);
    req->res.status = status;
    req->res.reason = reason_of(status);
    common_headers(req, type);
    h2o_send_inline(req, body, len);
}

void dp__http_json(dp__http_call_t *c, int status, dp_jbuf_t *b)
{
    dp_jb_raw(b, "\n", 1);
    send_body(c->http, c->req, status, "application/json", b->p, b->len);
    dp_jb_free(b);
}

void dp__http_error(dp__http_call_t *c, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"error\":");
    dp_jb_str(&b, msg);
    dp_jb_printf(&b, ",\"status\":%d}", status);
    if (status == 401)
        h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"doppel\""));
    if (status == 429)
        h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       H2O_STRLIT("1"));
    dp__http_json(c, status, &b);
}

bool dp__http_need(dp__http_call_t *c, dp_role_t role)
{
    if (c->role >= role)
        return true;
    if (c->http->cfg->ntokens == 0)
        dp__http_error(c, 403,
                       "no tokens are configured: only read access from loopback is allowed");
    else
        dp__http_error(c, 403, "this needs the %s role; %s has %s", dp_role_name(role), c->who,
                       dp_role_name(c->role));
    return false;
}

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into pool memory; '+' is a space when `plus`.
 * Returns NULL for a bad escape or an embedded NUL. */
static char *pct_decode(h2o_mem_pool_t *pool, const char *s, size_t n, bool plus)
{
    char *out = h2o_mem_alloc_pool(pool, n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return NULL;
            int a = unhex(s[i + 1]), b = unhex(s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0))
                return NULL;
            out[j++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[j++] = plus && s[i] == '+' ? ' ' : s[i];
        }
    }
    out[j] = '\0';
    return out;
}

const char *dp__http_param(dp__http_call_t *c, const char *name)
{
    const char *q = c->query.base, *end = c->query.base + c->query.len;
    size_t nlen = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *kend = eq != NULL ? eq : stop;
        if ((size_t)(kend - q) == nlen && memcmp(q, name, nlen) == 0) {
            const char *v = eq != NULL ? eq + 1 : stop;
            return pct_decode(&c->req->pool, v, (size_t)(stop - v), true);
        }
        q = stop + 1;
    }
    return NULL;
}

int dp__http_body(dp__http_call_t *c, dp_jobj_t *out)
{
    h2o_iovec_t e = c->req->entity;
    if (e.base == NULL || e.len == 0) {
        *out = (dp_jobj_t){0};
        dp__http_error(c, 400, "expected a JSON object in the request body");
        return DP_EINVAL;
    }
    if ((int64_t)e.len > c->http->cfg->max_body) {
        dp__http_error(c, 413, "request body of %zu bytes is over the limit of %lld", e.len,
                       (long long)c->http->cfg->max_body);
        return DP_EINVAL;
    }
    char *err = NULL;
    if (dp_json_parse_object(e.base, e.len, out, &err) < 0) {
        dp__http_error(c, 400, "%s", err);
        free(err);
        return DP_EINVAL;
    }
    return 0;
}

/* ---- rate limit and auth ------------------------------------------------ */

static bool peer_addr(h2o_req_t *req, unsigned char addr[16], bool *loopback)
{
    struct sockaddr_storage ss;
    memset(addr, 0, 16);
    *loopback = false;
    socklen_t n = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (n == 0)
        return false;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        memcpy(addr + 12, &in->sin_addr, 4);
        addr[10] = addr[11] = 0xff;
    } else if (ss.ss_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    }
    *loopback = dp_is_loopback((const struct sockaddr *)&ss);
    return true;
}

/* Token bucket per client address (hashed; a collision resets the bucket,
 * which errs on the side of letting a request through). */
static bool rate_ok(dp_http_t *h, const unsigned char addr[16])
{
    uint32_t hash = 2166136261u;
    for (int i = 0; i < 16; i++)
        hash = (hash ^ addr[i]) * 16777619u;
    struct bucket *b = &h->buckets[hash % BUCKETS];
    uint64_t now = uv_hrtime();
    if (!b->used || memcmp(b->addr, addr, 16) != 0) {
        memcpy(b->addr, addr, 16);
        b->used = true;
        b->tokens = h->cfg->burst;
        b->last_ns = now;
    }
    b->tokens += (double)(now - b->last_ns) / 1e9 * h->cfg->rate;
    if (b->tokens > h->cfg->burst)
        b->tokens = h->cfg->burst;
    b->last_ns = now;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

/* Finds the caller's role: a bearer token (header, or ?token= on the live
 * stream only, for EventSource, which cannot set headers: a token in a URL
 * ends up in logs and history). Returns false after answering. */
static bool authenticate(dp__http_call_t *c, bool loopback, bool need, bool query_token)
{
    dp_http_t *h = c->http;
    h2o_req_t *req = c->req;
    const char *tok = NULL;
    size_t toklen = 0;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len > 7 && h2o_lcstris(v.base, 7, H2O_STRLIT("bearer "))) {
            tok = v.base + 7;
            toklen = v.len - 7;
            while (toklen > 0 && *tok == ' ') {
                tok++;
                toklen--;
            }
        } else {
            h->auth_failures++;
            dp__http_error(c, 401, "Authorization must be \"Bearer TOKEN\"");
            return false;
        }
    } else {
        const char *q = dp__http_param(c, "token");
        if (q != NULL && !query_token) {
            h->auth_failures++;
            dp__http_error(c, 400,
                           "?token= is only for the live stream: send \"Authorization: Bearer "
                           "TOKEN\"");
            return false;
        }
        if (q != NULL) {
            tok = q;
            toklen = strlen(q);
        }
    }
    if (h->cfg->ntokens == 0) {
        /* No credentials exist: loopback may read, nobody may write. */
        c->who = "loopback";
        c->role = loopback ? DP_ROLE_VIEWER : DP_ROLE_NONE;
        if (need && !loopback) {
            h->auth_failures++;
            dp__http_error(c, 403,
                           "no tokens are configured: only loopback read access is allowed");
            return false;
        }
        return true;
    }
    if (tok == NULL) {
        c->who = "anonymous";
        c->role = DP_ROLE_NONE;
        if (need) {
            h->auth_failures++;
            dp__http_error(c, 401, "a bearer token is required");
            return false;
        }
        return true;
    }
    const dp_http_token_t *t = dp_http_token_find(h->cfg, tok, toklen);
    if (t == NULL) {
        h->auth_failures++;
        dp__http_error(c, 401, "unknown token");
        return false;
    }
    c->who = t->name;
    c->role = t->role;
    return true;
}

/* ---- static files ------------------------------------------------------- */

static const char *mime_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot == NULL)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    if (strcmp(dot, ".png") == 0)
        return "image/png";
    return "application/octet-stream";
}

static bool serve_asset(dp__http_call_t *c, const char *name)
{
    for (const dp_embed_file_t *f = dp_http_assets; f->path != NULL; f++) {
        if (strcmp(f->path, name) == 0) {
            send_body(c->http, c->req, 200, mime_of(name), f->data, f->len);
            return true;
        }
    }
    return false;
}

/* ---- live streams (Server-Sent Events) ---------------------------------- */

/* Sends what is pending, one buffer in flight at a time; a finishing
 * stream sends its last bytes (e.g. the overflow notice) with the end. */
static void stream_flush(struct stream *s)
{
    if (s->inflight || s->stopped || (s->pending.len == 0 && !s->finish))
        return;
    dp_jbuf_t t = s->sending;
    s->sending = s->pending;
    s->pending = t;
    s->pending.len = 0;
    h2o_iovec_t buf = h2o_iovec_init(s->sending.p, s->sending.len);
    s->inflight = true;
    if (s->finish)
        s->stopped = true;
    h2o_send(s->req, &buf, buf.len > 0 ? 1 : 0,
             s->finish ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void stream_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    struct stream *s = (struct stream *)gen;
    s->inflight = false;
    s->sending.len = 0;
    stream_flush(s);
}

static void stream_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    struct stream *s = (struct stream *)gen;
    s->stopped = true;
}

static void stream_unlink(struct stream *s)
{
    if (!s->linked)
        return;
    s->linked = false;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->http->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->http->nstreams--;
}

/* Runs when h2o frees the request, in every case. */
static void stream_dispose(void *p)
{
    struct stream *s = p;
    stream_unlink(s);
    dp_jb_free(&s->pending);
    dp_jb_free(&s->sending);
    free(s->match);
    free(s->twin);
    free(s->glob);
}

static void stream_append(struct stream *s, const char *data, size_t len)
{
    if (s->stopped || s->finish)
        return;
    if (s->pending.len + len > STREAM_MAX_BACKLOG) {
        /* A client that cannot keep up is dropped; EventSource reconnects
         * and reloads the current values. */
        s->http->stream_drops++;
        s->pending.len = 0;
        dp_jb_puts(&s->pending, "event: overflow\ndata: {}\n\n");
        s->finish = true;
        return;
    }
    dp_jb_raw(&s->pending, data, len);
}

static bool stream_wants_tag(struct stream *s, dp_store_t *store, int tag)
{
    if (!s->want_tags)
        return false;
    if (tag >= s->nmatch) {
        int n = dp_store_count(store);
        s->match = dp_xrealloc(s->match, (size_t)n);
        memset(s->match + s->nmatch, 0, (size_t)(n - s->nmatch));
        s->nmatch = n;
    }
    if (s->match[tag] == 0) {
        const dp_tag_t *t = dp_store_get(store, tag);
        bool ok = t != NULL;
        if (ok && s->twin != NULL) {
            size_t n = strlen(s->twin);
            ok = strncmp(t->name, s->twin, n) == 0 && t->name[n] == '.';
        }
        if (ok && s->glob != NULL)
            ok = fnmatch(s->glob, t->name, 0) == 0;
        s->match[tag] = ok ? 1 : 2;
    }
    return s->match[tag] == 1;
}

static void watch_new_tags(dp_http_t *h)
{
    dp_store_t *store = dp_plant_store(h->plant);
    int n = dp_store_count(store);
    for (; h->watched < n; h->watched++) {
        const dp_tag_t *t = dp_store_get(store, h->watched);
        dp_store_watch(store, h->sub, h->watched, t != NULL ? t->deadband : 0);
    }
}

static void on_changes(dp_sub_t *sub, const dp_change_t *ch, size_t n, void *ud)
{
    (void)sub;
    dp_http_t *h = ud;
    if (h->streams == NULL)
        return;
    dp_store_t *store = dp_plant_store(h->plant);
    dp_jbuf_t line = {0};
    for (size_t i = 0; i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, ch[i].tag);
        if (t == NULL)
            continue;
        line.len = 0;
        dp_jb_puts(&line, "event: tag\ndata: {\"tag\":");
        dp_jb_str(&line, t->name);
        dp_jb_puts(&line, ",\"value\":");
        dp_jb_value(&line, &ch[i].v);
        dp_jb_printf(&line, ",\"quality\":\"%s\",\"ts\":%lld}\n\n", dp_quality_name(ch[i].quality),
                     (long long)(ch[i].ts / 1000));
        for (struct stream *s = h->streams; s != NULL; s = s->next) {
            if (stream_wants_tag(s, store, ch[i].tag)) {
                stream_append(s, line.p, line.len);
                h->stream_changes++;
            }
        }
    }
    dp_jb_free(&line);
    for (struct stream *s = h->streams, *next; s != NULL; s = next) {
        next = s->next;
        stream_flush(s);
    }
}

static void broadcast(dp_http_t *h, const char *twin, const char *event, const char *json)
{
    for (struct stream *s = h->streams, *next; s != NULL; s = next) {
        next = s->next;
        if (!s->want_events)
            continue;
        if (s->twin != NULL && (twin == NULL || strcmp(twin, s->twin) != 0))
            continue;
        char head[64];
        int n = snprintf(head, sizeof head, "event: %s\ndata: ", event);
        stream_append(s, head, (size_t)n);
        stream_append(s, json, strlen(json));
        stream_append(s, "\n\n", 2);
        stream_flush(s);
    }
}

static void open_stream(dp__http_call_t *c)
{
    dp_http_t *h = c->http;
    if (h->nstreams >= h->cfg->max_streams) {
        dp__http_error(c, 503, "too many live streams (max_streams = %lld)",
                       (long long)h->cfg->max_streams);
        return;
    }
    const char *twin = dp__http_param(c, "twin"), *glob = dp__http_param(c, "match");
    const char *tags = dp__http_param(c, "tags"), *events = dp__http_param(c, "events");
    if (twin != NULL && dp_plant_twin(h->plant, twin) == NULL) {
        dp__http_error(c, 404, "no twin \"%s\"", twin);
        return;
    }
    struct stream *s = h2o_mem_alloc_shared(&c->req->pool, sizeof *s, stream_dispose);
    memset(s, 0, sizeof *s);
    s->gen.proceed = stream_proceed;
    s->gen.stop = stream_stop;
    s->http = h;
    s->req = c->req;
    s->twin = twin != NULL && twin[0] ? dp_xstrdup(twin) : NULL;
    s->glob = glob != NULL && glob[0] ? dp_xstrdup(glob) : NULL;
    s->want_tags = tags == NULL || strcmp(tags, "0") != 0;
    s->want_events = events == NULL || strcmp(events, "0") != 0;
    s->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = s;
    h->streams = s;
    s->linked = true;
    h->nstreams++;
    watch_new_tags(h);

    count_status(h, 200);
    h2o_req_t *req = c->req;
    req->res.status = 200;
    req->res.reason = "OK";
    common_headers(req, "text/event-stream");
    h2o_start_response(req, &s->gen);
    dp_jb_puts(&s->pending, "retry: 2000\nevent: hello\ndata: {\"plant\":");
    dp_jb_str(&s->pending, dp_plant_name(h->plant));
    dp_jb_puts(&s->pending, ",\"who\":");
    dp_jb_str(&s->pending, c->who);
    dp_jb_puts(&s->pending, "}\n\n");
    stream_flush(s);
}

void dp__jb_time(dp_jbuf_t *b, int64_t ts)
{
    if (ts == 0) {
        dp_jb_puts(b, "null");
        return;
    }
    char t[40];
    dp_time_format(ts, t, sizeof t);
    dp_jb_str(b, t);
}

/* ---- rings -------------------------------------------------------------- */

void dp__http_event_json(dp_jbuf_t *b, const dp__http_event_t *e)
{
    dp_jb_puts(b, "{\"ts\":");
    dp__jb_time(b, e->ts);
    dp_jb_puts(b, ",\"twin\":");
    dp_jb_str(b, e->twin);
    dp_jb_puts(b, ",\"kind\":");
    dp_jb_str(b, e->kind);
    dp_jb_puts(b, ",\"text\":");
    dp_jb_str(b, e->text);
    dp_jb_puts(b, "}");
}

void dp__http_record_event(dp_http_t *h, const dp_event_t *ev)
{
    dp__http_event_t *e = &h->events[h->nevents++ % DP_HTTP_EVENTS];
    free(e->twin);
    free(e->kind);
    free(e->text);
    e->ts = ev->ts;
    e->twin = ev->twin != NULL ? dp_xstrdup(ev->twin) : NULL;
    e->kind = dp_xstrdup(ev->kind != NULL ? ev->kind : "");
    e->text = dp_xstrdup(ev->text != NULL ? ev->text : "");
    if (h->streams != NULL) {
        dp_jbuf_t b = {0};
        dp__http_event_json(&b, e);
        broadcast(h, e->twin, "event", b.p);
        dp_jb_free(&b);
    }
}

void dp__http_cmd_json(dp_jbuf_t *b, const dp__http_cmd_t *c)
{
    dp_jb_printf(b, "{\"id\":%llu,\"ts\":", (unsigned long long)c->id);
    dp__jb_time(b, c->ts);
    dp_jb_puts(b, ",\"done_ts\":");
    dp__jb_time(b, c->done_ts);
    dp_jb_puts(b, ",\"origin\":");
    dp_jb_str(b, c->origin);
    dp_jb_puts(b, ",\"tag\":");
    dp_jb_str(b, c->tag);
    dp_jb_printf(b, ",\"value\":%s,\"outcome\":", c->value_json);
    dp_jb_str(b, dp_cmd_outcome_name(c->outcome));
    dp_jb_puts(b, ",\"reason\":");
    dp_jb_str(b, c->reason);
    dp_jb_puts(b, "}");
}

static void cmd_fill(dp__http_cmd_t *e, const dp_cmd_t *cmd)
{
    free(e->origin);
    free(e->tag);
    free(e->value_json);
    free(e->reason);
    e->id = cmd->id;
    e->ts = cmd->ts;
    e->done_ts = cmd->done_ts;
    e->origin = dp_xstrdup(cmd->origin != NULL ? cmd->origin : "");
    e->tag = dp_xstrdup(cmd->tag != NULL ? cmd->tag : "");
    dp_jbuf_t v = {0};
    dp_jb_value(&v, &cmd->value);
    e->value_json = v.p;
    e->reason = dp_xstrdup(cmd->reason != NULL ? cmd->reason : "");
    e->outcome = cmd->outcome;
}

static void cmd_free(dp__http_cmd_t *e)
{
    free(e->origin);
    free(e->tag);
    free(e->value_json);
    free(e->reason);
}

void dp__http_record_cmd(dp_http_t *h, const dp_cmd_t *cmd)
{
    dp__http_cmd_t *e = &h->cmds[h->ncmds++ % DP_HTTP_COMMANDS];
    cmd_fill(e, cmd);
    if (h->streams != NULL) {
        dp_jbuf_t b = {0};
        dp__http_cmd_json(&b, e);
        char twin[128];
        snprintf(twin, sizeof twin, "%s", e->tag);
        char *dot = strchr(twin, '.');
        if (dot != NULL)
            *dot = '\0';
        broadcast(h, twin, "command", b.p);
        dp_jb_free(&b);
    }
}

/* ---- commands waiting for their outcome --------------------------------- */

static void ticket_unlink(struct ticket *t)
{
    if (t->http == NULL)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        t->http->tickets = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->http = NULL;
}

static void ticket_req_gone(void *p)
{
    struct ticket **slot = p;
    if (*slot != NULL) {
        (*slot)->req = NULL;
        (*slot)->slot = NULL;
    }
}

static void ticket_forget_req(struct ticket *t)
{
    if (t->slot != NULL)
        *t->slot = NULL;
    t->slot = NULL;
    t->req = NULL;
}

static void on_outcome(const dp_cmd_t *cmd, void *ud)
{
    struct ticket *t = ud;
    if (t->req != NULL && t->http != NULL) {
        dp__http_cmd_t e = {0};
        cmd_fill(&e, cmd);
        dp_jbuf_t b = {0};
        dp__http_cmd_json(&b, &e);
        cmd_free(&e);
        dp__http_call_t c = {.req = t->req, .http = t->http};
        int status = cmd->outcome == DP_CMD_DONE || cmd->outcome == DP_CMD_SHADOW ? 200
                     : cmd->outcome == DP_CMD_REJECTED                            ? 422
                                                                                  : 502;
        dp__http_json(&c, status, &b);
    }
    ticket_forget_req(t);
    ticket_unlink(t);
    free(t);
}

void dp__http_submit(dp__http_call_t *c, const char *tag, const dp_value_t *v)
{
    dp_guard_t *g = dp__http_guard(c->http->plant);
    if (g == NULL) {
        dp__http_error(c, 503, "commands are not available in this build (no guard)");
        return;
    }
    struct ticket *t = dp_xcalloc(1, sizeof *t);
    t->req = c->req;
    t->http = c->http;
    t->next = c->http->tickets;
    if (t->next != NULL)
        t->next->prev = t;
    c->http->tickets = t;
    /* When h2o frees the request first, the ticket forgets it. */
    struct ticket **slot = h2o_mem_alloc_shared(&c->req->pool, sizeof *slot, ticket_req_gone);
    *slot = t;
    t->slot = slot;
    char origin[80];
    snprintf(origin, sizeof origin, "http:%s", c->who);
    dp_guard_submit(g, origin, tag, v, on_outcome, t);
}

/* ---- routing ------------------------------------------------------------ */

typedef struct {
    h2o_handler_t super;
    dp_http_t *http;
} handler_t;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    dp_http_t *h = ((handler_t *)self)->http;
    dp__http_call_t c = {.req = req, .http = h, .who = "anonymous"};
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    c.path = h2o_iovec_init(req->path.base, plen);
    if (req->query_at != SIZE_MAX)
        c.query =
            h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    if (h->stopping) {
        dp__http_error(&c, 503, "shutting down");
        return 0;
    }
    unsigned char addr[16];
    bool loopback = false;
    peer_addr(req, addr, &loopback);
    if (!rate_ok(h, addr)) {
        h->rate_limited++;
        dp__http_error(&c, 429, "rate limit of %g requests/s exceeded", h->cfg->rate);
        return 0;
    }
    if (plen > 1024) {
        dp__http_error(&c, 414, "path too long");
        return 0;
    }
    char method[16];
    snprintf(method, sizeof method, "%.*s", (int)req->method.len, req->method.base);

    /* Split the path into decoded segments. */
    char *segs[16];
    int nsegs = 0;
    const char *p = c.path.base, *end = c.path.base + c.path.len;
    while (p < end) {
        while (p < end && *p == '/')
            p++;
        if (p >= end)
            break;
        const char *q = memchr(p, '/', (size_t)(end - p));
        if (q == NULL)
            q = end;
        if (nsegs == (int)DP_ARRAY_LEN(segs)) {
            dp__http_error(&c, 404, "no such resource");
            return 0;
        }
        segs[nsegs] = pct_decode(&req->pool, p, (size_t)(q - p), false);
        if (segs[nsegs] == NULL) {
            dp__http_error(&c, 400, "bad percent-encoding in the path");
            return 0;
        }
        nsegs++;
        p = q;
    }
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    /* Public: the dashboard's files and the health check. */
    if (nsegs == 0 || (nsegs == 1 && strcmp(segs[0], "index.html") == 0)) {
        if (get && serve_asset(&c, "index.html"))
            return 0;
    } else if (nsegs == 2 && strcmp(segs[0], "assets") == 0) {
        if (get && serve_asset(&c, segs[1]))
            return 0;
        dp__http_error(&c, 404, "no asset \"%s\"", segs[1]);
        return 0;
    } else if (nsegs == 1 && strcmp(segs[0], "healthz") == 0) {
        /* Degraded (503) when what was accepted is no longer recorded. */
        dp_persist_t *ps = dp_plant_persist(h->plant);
        dp_journal_stats_t js = {0};
        if (ps != NULL && dp_persist_journal(ps) != NULL)
            dp_journal_get_stats(dp_persist_journal(ps), &js);
        dp_jbuf_t b = {0};
        dp_jb_puts(&b, js.failed ? "{\"status\":\"degraded\",\"plant\":"
                                 : "{\"status\":\"ok\",\"plant\":");
        dp_jb_str(&b, dp_plant_name(h->plant));
        if (js.failed)
            dp_jb_puts(&b, js.broken ? ",\"problems\":[\"journal: a write or fsync failed (disk "
                                       "full?); nothing is recorded until a restart\"]"
                                     : ",\"problems\":[\"journal: a write or fsync failed (disk "
                                       "full?); what the plant accepts is kept in memory and "
                                       "written again every 2 s until the disk takes it\"]");
        dp_jb_puts(&b, "}");
        dp__http_json(&c, js.failed ? 503 : 200, &b);
        return 0;
    }

    bool stream = nsegs == 3 && strcmp(segs[0], "api") == 0 && strcmp(segs[1], "v1") == 0 &&
                  strcmp(segs[2], "stream") == 0;
    if (!authenticate(&c, loopback, true, stream))
        return 0;
    if (c.role == DP_ROLE_NONE) {
        dp__http_error(&c, 403, "no access");
        return 0;
    }
    if (nsegs == 1 && strcmp(segs[0], "metrics") == 0) {
        if (!get)
            dp__http_error(&c, 405, "use GET");
        else
            dp__http_metrics(&c);
        return 0;
    }
    if (nsegs >= 2 && strcmp(segs[0], "api") == 0 && strcmp(segs[1], "v1") == 0) {
        if (stream) {
            if (strcmp(method, "GET") != 0)
                dp__http_error(&c, 405, "use GET");
            else
                open_stream(&c);
            return 0;
        }
        if (dp__http_api(&c, method, segs + 2, nsegs - 2) == 0)
            return 0;
    }
    dp__http_error(&c, 404, "no such resource: %.*s", (int)c.path.len, c.path.base);
    return 0;
}

/* ---- connections -------------------------------------------------------- */

static void finish_if_done(dp_http_t *h);

/* Servers running in this process, for uv_write below (all on the loop
 * thread, as every caller of uv_write is: the list needs no lock). */
static dp_http_t *servers;

static void on_redo(uv_idle_t *idle)
{
    dp_http_t *h = idle->data;
    uv_idle_stop(idle);
    for (struct conn *c = h->conns; c != NULL; c = c->next) {
        uv_write_t *req = c->refused;
        if (req != NULL) {
            c->refused = NULL;
            req->cb(req, c->refused_status);
        }
    }
}

/* Our HTTP connection whose handle is `stream`, or NULL. */
static struct conn *conn_of(const uv_stream_t *stream)
{
    for (dp_http_t *h = servers; h != NULL; h = h->next_server) {
        for (struct conn *c = h->conns; c != NULL; c = c->next) {
            if ((const uv_stream_t *)&c->tcp == stream)
                return c;
        }
    }
    return NULL;
}

/* h2o 2.2 (Debian 12's libh2o) ignores the value uv_write() returns. When
 * libuv refuses a write at once (the stream stopped being writable because
 * a read failed: the peer reset the connection), h2o waits forever for the
 * write's callback and never closes the connection: it stays open for as
 * long as the plant runs and, at shutdown, keeps the loop from ending.
 *
 * This definition comes before libuv's in the process's symbol lookup, so
 * h2o's calls land here. Every write goes to libuv's uv_write2() as before
 * (uv_write is that call without a handle to send). When libuv refuses a
 * write on one of our HTTP connections, the callback is delivered with the
 * error on the loop's next turn, as libuv does for a write that fails later;
 * h2o then closes the connection. On any other stream the refusal is
 * returned unchanged. A connection that closes first takes the owed
 * callback with it: h2o frees the write request before our close callback
 * runs, and the callback is never called after that. */
int uv_write(uv_write_t *req, uv_stream_t *stream, const uv_buf_t bufs[], unsigned int nbufs,
             uv_write_cb cb)
{
    int rc = uv_write2(req, stream, bufs, nbufs, NULL, cb);
    struct conn *c = rc != 0 && cb != NULL ? conn_of(stream) : NULL;
    if (c == NULL || c->refused != NULL)
        return rc;
    req->handle = stream;
    req->cb = cb;
    c->refused = req;
    c->refused_status = rc;
    uv_idle_start(&c->http->redo, on_redo);
    return 0;
}

static void on_conn_closed(uv_handle_t *handle)
{
    struct conn *c = (struct conn *)handle;
    dp_http_t *h = c->http;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    free(c);
    finish_if_done(h);
}

static void on_accept(uv_stream_t *listener, int status)
{
    dp_http_t *h = listener->data;
    if (status != 0 || h->stopping)
        return;
    struct conn *c = dp_xcalloc(1, sizeof *c);
    c->http = h;
    uv_tcp_init(h->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    /* Each connection holds a descriptor and h2o's buffers (TLS: tens of
     * KB): past the cap, new ones are closed as they come, so clients that
     * open many (or hold them open) cannot take what the plant's devices,
     * journal and REPL need. Logged at most once a minute. */
    if (h->nconns >= h->cfg->max_conns) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        h->conns_refused++;
        uint64_t now = uv_now(h->loop);
        if (h->refused_log_ms == 0 || now - h->refused_log_ms >= 60000) {
            dp_log_warn(NULL,
                        "http: %d connections open (max_connections): closing new ones "
                        "(%llu since the last report)",
                        h->nconns, (unsigned long long)(h->conns_refused - h->refused_logged));
            h->refused_log_ms = now;
            h->refused_logged = h->conns_refused;
        }
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
    h2o_accept(&h->accept_ctx, sock);
}

/* ---- ticks: loop lag and samples/s -------------------------------------- */

#define TICK_MS 100

static void on_tick(uv_timer_t *t)
{
    dp_http_t *h = t->data;
    uint64_t now = uv_hrtime();
    if (h->last_tick_ns != 0) {
        double lag = (double)(int64_t)(now - h->last_tick_ns - TICK_MS * 1000000ull) / 1e9;
        h->lag_s = lag > 0 ? lag : 0;
        if (h->lag_s > h->lag_max_s)
            h->lag_max_s = h->lag_s;
    }
    h->last_tick_ns = now;
    /* A comment line every 15 s keeps quiet streams alive through proxies
     * and lets a dead peer show up as a write error. */
    if (++h->ticks % (15000 / TICK_MS) == 0) {
        for (struct stream *s = h->streams, *next; s != NULL; s = next) {
            next = s->next;
            stream_append(s, ": ping\n\n", 8);
            stream_flush(s);
        }
    }
    if (h->ticks % (1000 / TICK_MS) == 0) {
        dp_store_t *store = dp_plant_store(h->plant);
        uint64_t total = 0;
        for (int i = 0, n = dp_store_count(store); i < n; i++)
            total += dp_store_get(store, i)->writes;
        if (h->samples_last != 0 || total < 1000000000ull)
            h->samples_per_s = (double)(total - h->samples_last);
        h->samples_last = total;
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

static void free_owner(uv_handle_t *handle);

static char *resolve(const dp_http_cfg_t *cfg, const char *path)
{
    if (path[0] == '/' || cfg->dir == NULL || strncmp(cfg->dir, "embed:", 6) == 0)
        return dp_xstrdup(path);
    return dp_xasprintf("%s/%s", cfg->dir, path);
}

static int tls_open(dp_http_t *h, char **err)
{
    char *cert = resolve(h->cfg, h->cfg->cert), *key = resolve(h->cfg, h->cfg->key);
    h->ssl = dp_tls_server_new(cert, key, "tls", err);
    if (h->ssl != NULL) {
        h2o_ssl_register_alpn_protocols(h->ssl, h2o_http2_alpn_protocols);
        h->accept_ctx.ssl_ctx = h->ssl;
    }
    free(cert);
    free(key);
    return h->ssl != NULL ? 0 : DP_EINVAL;
}

dp_http_t *dp_http_start(uv_loop_t *loop, dp_plant_t *plant, const dp_http_cfg_t *cfg, char **err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (dp_http_parse_listen(cfg->listen != NULL ? cfg->listen : "127.0.0.1:8080", &ss, err) < 0)
        return NULL;
    /* A client that goes away mid-response must not kill the process:
     * writes to its socket fail with EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    dp_http_t *h = dp_xcalloc(1, sizeof *h);
    h->loop = loop;
    h->plant = plant;
    h->cfg = cfg;
    h->buckets = dp_xcalloc(BUCKETS, sizeof *h->buckets);

    h2o_config_init(&h->config);
    h->config.server_name = h2o_iovec_init(H2O_STRLIT("doppel"));
    /* h2o refuses larger bodies itself; ours answer a JSON 413 below this. */
    h->config.max_request_entity_size = (size_t)cfg->max_body * 4;
    h2o_hostconf_t *host =
        h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    handler_t *handler = (handler_t *)h2o_create_handler(path, sizeof *handler);
    handler->super.on_req = on_req;
    handler->http = h;
    h->accept_ctx.hosts = h->config.hosts;

    if (cfg->cert != NULL && tls_open(h, err) < 0) {
        SSL_CTX_free(h->ssl);
        h2o_config_dispose(&h->config);
        free(h->buckets);
        free(h);
        return NULL;
    }
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    int rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 128, on_accept);
    if (rc != 0) {
        dp_fail(err, rc, "http: cannot listen on %s: %s", cfg->listen, uv_strerror(rc));
        /* Nothing else was started: close the listener and free on close. */
        h->stopping = true;
        h->tick_closed = true;
        h->finishing = true;
        SSL_CTX_free(h->ssl);
        h2o_config_dispose(&h->config);
        free(h->buckets);
        uv_close((uv_handle_t *)&h->listener, free_owner);
        return NULL;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen);
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);

    h2o_context_init(&h->ctx, loop, &h->config);
    h->accept_ctx.ctx = &h->ctx;

    h->sub = dp_store_sub_new(dp_plant_store(plant), on_changes, h);
    watch_new_tags(h);
    bool fresh = false;
    struct relay *r = relay_for(plant, &fresh);
    if (r != NULL) {
        r->http = h;
        if (fresh)
            dp_plant_on_event(plant, relay_event, r);
    }
    dp_guard_t *g = dp__http_guard(plant);
    if (g != NULL) {
        r = relay_for(g, &fresh);
        if (r != NULL) {
            r->http = h;
            if (fresh)
                dp_guard_on_command(g, relay_cmd, r);
        }
    }
    uv_idle_init(loop, &h->redo);
    h->redo.data = h;
    h->next_server = servers;
    servers = h;
    uv_timer_init(loop, &h->tick);
    h->tick.data = h;
    uv_timer_start(&h->tick, on_tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&h->tick);
    char addr[64] = "";
    if (bound.ss_family == AF_INET6) {
        addr[0] = '[';
        uv_ip6_name((struct sockaddr_in6 *)&bound, addr + 1, sizeof addr - 2);
        strcat(addr, "]");
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, addr, sizeof addr);
    }
    dp_log_info(NULL, "http: listening on %s://%s:%d/ (%s)", h->ssl != NULL ? "https" : "http",
                addr, h->port,
                cfg->ntokens > 0 ? "bearer tokens required" : "no tokens: loopback read-only");
    return h;
}

int dp_http_port(const dp_http_t *h)
{
    return h->port;
}

/* Frees the dp_http_t that holds the handle. */
static void free_owner(uv_handle_t *handle)
{
    free(handle->data);
}

static void on_reaper(uv_idle_t *idle)
{
    dp_http_t *h = idle->data;
    /* h2o closed its own timers when the context was disposed; their close
     * callbacks run at the end of a loop turn and touch memory inside *h, so
     * wait two full turns before freeing it. */
    if (++h->reaper_turns < 3)
        return;
    uv_idle_stop(idle);
    uv_close((uv_handle_t *)idle, free_owner);
}

static void finish_if_done(dp_http_t *h)
{
    if (!h->stopping || h->finishing || h->nconns > 0 || !h->listener_closed || !h->tick_closed)
        return;
    h->finishing = true;
    for (dp_http_t **p = &servers; *p != NULL; p = &(*p)->next_server) {
        if (*p == h) {
            *p = h->next_server;
            break;
        }
    }
    uv_close((uv_handle_t *)&h->redo, NULL);
    h2o_context_dispose(&h->ctx);
    h2o_config_dispose(&h->config);
    SSL_CTX_free(h->ssl);
    for (int i = 0; i < DP_HTTP_EVENTS; i++) {
        free(h->events[i].twin);
        free(h->events[i].kind);
        free(h->events[i].text);
    }
    for (int i = 0; i < DP_HTTP_COMMANDS; i++)
        cmd_free(&h->cmds[i]);
    free(h->buckets);
    uv_idle_init(h->loop, &h->reaper);
    h->reaper.data = h;
    uv_idle_start(&h->reaper, on_reaper);
}

static void on_listener_closed(uv_handle_t *handle)
{
    dp_http_t *h = handle->data;
    h->listener_closed = true;
    finish_if_done(h);
}

static void on_tick_closed(uv_handle_t *handle)
{
    dp_http_t *h = handle->data;
    h->tick_closed = true;
    finish_if_done(h);
}

void dp_http_stop(dp_http_t *h)
{
    if (h == NULL || h->stopping)
        return;
    h->stopping = true;
    for (size_t i = 0; i < DP_ARRAY_LEN(relays); i++) {
        if (relays[i].http == h)
            relays[i].http = NULL;
    }
    dp_store_sub_free(dp_plant_store(h->plant), h->sub);
    h->sub = NULL;
    uv_close((uv_handle_t *)&h->listener, on_listener_closed);
    uv_close((uv_handle_t *)&h->tick, on_tick_closed);
    /* Commands still waiting: answer now; the guard's outcome will find
     * the ticket detached. */
    while (h->tickets != NULL) {
        struct ticket *t = h->tickets;
        if (t->req != NULL) {
            dp__http_call_t c = {.req = t->req, .http = h};
            dp__http_error(&c, 503, "shutting down before the command's outcome was known");
        }
        ticket_forget_req(t);
        ticket_unlink(t);
    }
    for (struct stream *s = h->streams, *next; s != NULL; s = next) {
        next = s->next;
        s->finish = true;
        stream_flush(s);
    }
    /* Idle keep-alive connections would linger until their timeout: shut
     * their sockets down so h2o sees the end and closes them itself. (Not
     * h2o_context_request_shutdown(): its HTTP/2 GOAWAY timer would still be
     * armed when the context is disposed.) */
    for (struct conn *c = h->conns; c != NULL; c = c->next) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            shutdown(fd, SHUT_RDWR);
    }
    finish_if_done(h);
}
