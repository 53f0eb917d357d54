#include "repl_server.h"

#include <ctype.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fnmatch.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../drivers/driver.h"
#include "alarms.h"
#include "command.h"
#include "lmsgpack.h"
#include "log.h"
#include "repl_eval.h"
#include "replproto.h"
#include "tls.h"

#define RING_LINES      500
#define RING_LINE_LEN   600
#define MAX_WRITE_QUEUE ((size_t)8 << 20) /* bytes queued to one client before it is dropped */
#define NOTICE_WINDOW   10000             /* ms */
#define NOTICE_MAX      10                /* notices per window and client */
#define READ_CHUNK      65536
#define MAX_REQUEST_OUT ((size_t)1 << 20) /* output bytes sent for one request */
#define MAX_TCP_CLIENTS 16                /* TCP connections at once */
#define HELLO_TIMEOUT   10000             /* ms a TCP client has to say hello */
#define REFUSAL_PAUSE   1000              /* ms without new TCP clients after a wrong token */

typedef struct conn conn_t;

typedef struct watch {
    conn_t *c;
    uint64_t id;
    dp_sub_t *sub;
    uint64_t changes;
    struct watch *next;
} watch_t;

struct conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    uv_shutdown_t shutdown;
    dp_repl_server_t *s;
    uint64_t serial;
    bool tcp;
    bool hello;
    uint64_t accepted; /* uv_now when accepted */
    char peer[64];     /* TCP: "ADDRESS:PORT" of the client */
    /* TLS (a TCP listener with a certificate): the socket's bytes go through
     * memory BIOs; `buf` holds the decrypted bytes, `raw` what was read. */
    SSL *ssl;
    BIO *rbio, *wbio;
    char *raw;
    bool closing; /* no more reading or sending */
    char *buf;
    size_t len, cap;
    char *where; /* NULL: plant level; else a twin name */
    dp_sandbox_t *sb;
    watch_t *watches;
    uint64_t notice_window;
    int notices;
    int suppressed;
    conn_t *next;
};

typedef struct {
    dp_log_level_t level;
    char text[RING_LINE_LEN];
} ring_line_t;

struct dp_repl_server {
    uv_loop_t *loop;
    dp_plant_t *plant;
    uv_thread_t loop_thread;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
    bool pipe_open, tcp_open;
    int tcp_port;
    int ntcp;              /* TCP connections open */
    uint64_t refuse_until; /* uv_now before which new TCP clients are turned away */
    uv_timer_t sweep;      /* closes TCP clients that do not say hello in time */
    bool sweep_open;
    char *path;
    char *token;
    SSL_CTX *tls; /* NULL: the TCP listener speaks plain text */
    conn_t *conns;
    int nconns;
    uint64_t next_serial;
    bool closed;
    bool hooked;
    int listeners;     /* listener handles not yet closed */
    bool free_pending; /* free once the listeners are closed (failed start) */
    /* Output of the request being handled goes to this client. */
    conn_t *cap;
    uint64_t cap_id;
    bool cap_ok;        /* the result of that request, once sent */
    size_t cap_bytes;   /* output sent for the request so far */
    size_t cap_dropped; /* output bytes over MAX_REQUEST_OUT, not sent */
    bool cap_mute;      /* the request reports its own outcome: its log lines are not sent */
    /* Recent log lines (any thread). */
    uv_mutex_t mu;
    ring_line_t *ring;
    size_t ring_next, ring_count;
    /* The last log line from the loop thread: events reuse its text. */
    char last_twin[64];
    char last_msg[RING_LINE_LEN];
};

/* ---- sending ------------------------------------------------------------ */

typedef struct {
    uv_write_t req;
    char *data;
} wreq_t;

static void conn_close(conn_t *c);

static void on_write(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error and closes the connection */
    wreq_t *w = (wreq_t *)req;
    free(w->data);
    free(w);
}

/* Writes what TLS produced (handshake, records) to the socket. */
static int tls_flush(conn_t *c)
{
    size_t n = (size_t)BIO_ctrl_pending(c->wbio);
    if (n == 0)
        return 0;
    wreq_t *w = dp_xcalloc(1, sizeof *w);
    w->data = dp_xmalloc(n);
    int got = BIO_read(c->wbio, w->data, (int)n);
    uv_buf_t b = uv_buf_init(w->data, got > 0 ? (unsigned)got : 0);
    if (got <= 0 || uv_write(&w->req, &c->h.stream, &b, 1, on_write) < 0) {
        free(w->data);
        free(w);
        return -1;
    }
    return 0;
}

static void send_msg(conn_t *c, const dp_repl_msg_t *m)
{
    if (c->closing)
        return;
    if (uv_stream_get_write_queue_size(&c->h.stream) > MAX_WRITE_QUEUE) {
        /* Closed before logging: the log line must not come back here. */
        conn_close(c);
        dp_log_warn(NULL, "REPL client %llu does not read its output; disconnected it",
                    (unsigned long long)c->serial);
        return;
    }
    char *err = NULL;
    wreq_t *w = dp_xcalloc(1, sizeof *w);
    size_t len = 0;
    if (dp_repl_encode(m, &w->data, &len, &err) < 0) {
        /* Only an oversized text gets here: say so instead. */
        dp_repl_msg_t cut = *m;
        cut.text = dp_xasprintf("(output of %zu bytes is too large to send: %s)",
                                m->text ? strlen(m->text) : 0, err);
        free(err);
        err = NULL;
        cut.nitems = 0;
        cut.items = NULL;
        int rc = dp_repl_encode(&cut, &w->data, &len, &err);
        free(cut.text);
        if (rc < 0) {
            free(err);
            free(w);
            return;
        }
    }
    if (c->ssl != NULL) {
        /* Encrypted into the write BIO, which tls_flush hands to libuv. */
        int rc = SSL_write(c->ssl, w->data, (int)len);
        free(w->data);
        free(w);
        if (rc <= 0 || tls_flush(c) < 0)
            conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, &c->h.stream, &b, 1, on_write) < 0) {
        free(w->data);
        free(w);
        conn_close(c);
    }
}

static const char *where_name(const conn_t *c)
{
    return c->where != NULL ? c->where : "plant";
}

static void send_out(conn_t *c, uint64_t id, const char *text)
{
    dp_repl_msg_t m = {.type = DP_RM_OUT, .id = id, .text = (char *)text};
    send_msg(c, &m);
}

static void send_result(conn_t *c, uint64_t id, bool ok, const char *text)
{
    if (c == c->s->cap && id == c->s->cap_id)
        c->s->cap_ok = ok;
    dp_repl_msg_t m = {.type = DP_RM_RESULT,
                       .id = id,
                       .ok = ok,
                       .text = (char *)text,
                       .where = (char *)where_name(c)};
    send_msg(c, &m);
}

static void send_resultf(conn_t *c, uint64_t id, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void send_resultf(conn_t *c, uint64_t id, bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    send_result(c, id, ok, text != NULL ? text : "(out of memory)");
    free(text);
}

/* Sends an error frame and closes the connection once it is written. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_t *c = req->data;
    conn_close(c);
}

static void fail_conn(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail_conn(conn_t *c, const char *fmt, ...)
{
    if (c->closing)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    dp_repl_msg_t m = {.type = DP_RM_ERROR, .text = text ? text : "protocol error"};
    send_msg(c, &m);
    if (!c->closing) {
        c->closing = true;
        uv_read_stop(&c->h.stream);
        c->shutdown.data = c;
        if (uv_shutdown(&c->shutdown, &c->h.stream, on_shutdown) < 0)
            conn_close(c);
    }
    dp_log_info(NULL, "REPL client %llu%s%s: %s; connection closed", (unsigned long long)c->serial,
                c->tcp ? " from " : "", c->peer, text ? text : "protocol error");
    free(text);
}

/* ---- connections -------------------------------------------------------- */

static void watch_free(watch_t *w)
{
    dp_store_sub_free(dp_plant_store(w->c->s->plant), w->sub);
    free(w);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    dp_repl_server_t *s = c->s;
    for (conn_t **pp = &s->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    s->nconns--;
    if (c->tcp)
        s->ntcp--;
    while (c->watches != NULL) {
        watch_t *w = c->watches;
        c->watches = w->next;
        watch_free(w);
    }
    dp_sandbox_free(c->sb);
    SSL_free(c->ssl); /* and its BIOs */
    free(c->raw);
    free(c->where);
    free(c->buf);
    free(c);
}

static void conn_close(conn_t *c)
{
    c->closing = true;
    if (uv_is_closing(&c->h.handle))
        return;
    uv_read_stop(&c->h.stream);
    if (c->s->cap == c)
        c->s->cap = NULL;
    uv_close(&c->h.handle, on_conn_closed);
}

/* ---- log capture, the ring and notices --------------------------------- */

static const char *const level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

static bool on_loop_thread(dp_repl_server_t *s)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &s->loop_thread);
}

/* Sends a notice (a line not tied to a request) to every client but the one
 * whose request produced it, at most NOTICE_MAX per window per client. */
static void notify(dp_repl_server_t *s, const char *text)
{
    uint64_t now = uv_now(s->loop);
    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (!c->hello || c->closing || c == s->cap)
            continue;
        if (now - c->notice_window >= NOTICE_WINDOW) {
            if (c->suppressed > 0) {
                char more[128];
                snprintf(more, sizeof more,
                         "(%d more notices not shown; .errors and .log show them)", c->suppressed);
                send_out(c, 0, more);
            }
            c->notice_window = now;
            c->notices = 0;
            c->suppressed = 0;
        }
        if (c->notices < NOTICE_MAX) {
            c->notices++;
            send_out(c, 0, text);
        } else {
            c->suppressed++;
        }
    }
}

/* Output of the request being handled, up to MAX_REQUEST_OUT bytes: a loop
 * that prints a million lines must not queue them all for the client. */
static void cap_out(dp_repl_server_t *s, const char *text)
{
    size_t n = strlen(text) + 1;
    if (s->cap_bytes + n > MAX_REQUEST_OUT) {
        s->cap_dropped += n;
        return;
    }
    s->cap_bytes += n;
    send_out(s->cap, s->cap_id, text);
}

static void on_log(dp_log_level_t level, const char *twin, const char *msg, void *ud)
{
    dp_repl_server_t *s = ud;
    char ts[40];
    dp_time_format(dp_wall_now(), ts, sizeof ts);
    uv_mutex_lock(&s->mu);
    ring_line_t *r = &s->ring[s->ring_next];
    r->level = level;
    snprintf(r->text, sizeof r->text, "%s %s %s%s%s%s", ts, level_tags[level], twin ? "[" : "",
             twin ? twin : "", twin ? "] " : "", msg);
    s->ring_next = (s->ring_next + 1) % RING_LINES;
    if (s->ring_count < RING_LINES)
        s->ring_count++;
    uv_mutex_unlock(&s->mu);
    if (s->closed || !on_loop_thread(s))
        return;
    snprintf(s->last_twin, sizeof s->last_twin, "%s", twin ? twin : "");
    snprintf(s->last_msg, sizeof s->last_msg, "%s", msg);
    /* Warnings and errors say so; info lines are shown as they are. */
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char line[RING_LINE_LEN + 80];
    snprintf(line, sizeof line, "%s%s%s%s%s%s", level >= DP_LOG_WARN ? names[level] : "",
             level >= DP_LOG_WARN ? " " : "", twin ? "[" : "", twin ? twin : "", twin ? "] " : "",
             msg);
    if (s->cap != NULL && !s->cap_mute)
        cap_out(s, line);
    if (level >= DP_LOG_WARN)
        notify(s, line);
}

static void on_event(const dp_event_t *ev, void *ud)
{
    dp_repl_server_t *s = ud;
    if (s->closed)
        return;
    /* Faults and suspensions are logged as errors, which are notices already. */
    if (strcmp(ev->kind, "reload") != 0 && strcmp(ev->kind, "alarm") != 0)
        return;
    char line[RING_LINE_LEN + 80];
    const char *twin = ev->twin ? ev->twin : "";
    if (strcmp(s->last_twin, twin) == 0 && s->last_msg[0] != '\0')
        snprintf(line, sizeof line, "[%s] %s", twin, s->last_msg);
    else
        snprintf(line, sizeof line, "[%s] %s: %s", twin, ev->kind, ev->text);
    notify(s, line);
}

/* ---- helpers for commands ----------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} sbuf_t;

static void sb_addf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_addf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->data = dp_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, (size_t)n + 1);
    b->len += (size_t)n;
    free(s);
}

static const char *sb_str(sbuf_t *b)
{
    return b->data != NULL ? b->data : "";
}

static bool has_wildcard(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* A tag glob: "P101" alone means all of P101's tags. */
static void tag_glob(const char *arg, char *out, size_t size)
{
    if (arg == NULL || arg[0] == '\0')
        snprintf(out, size, "*");
    else if (!has_wildcard(arg) && strchr(arg, '.') == NULL)
        snprintf(out, size, "%s.*", arg);
    else
        snprintf(out, size, "%s", arg);
}

/* Splits "cmd arg1 rest" in place: returns the first word and sets *rest. */
static char *next_word(char **p)
{
    char *s = *p;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0') {
        *p = s;
        return NULL;
    }
    char *w = s;
    while (*s != '\0' && !isspace((unsigned char)*s))
        s++;
    if (*s != '\0')
        *s++ = '\0';
    *p = s;
    return w;
}

/* ---- commands ----------------------------------------------------------- */

typedef void (*cmd_fn)(conn_t *c, uint64_t id, char *args);

typedef struct {
    const char *name;
    const char *args;
    const char *help;
    cmd_fn fn;
} command_t;

static const command_t commands[];

static void cmd_help(conn_t *c, uint64_t id, char *args)
{
    (void)args;
    sbuf_t b = {0};
    sb_addf(&b, "Lua is evaluated %s; results are pretty-printed, print() output shows here.\n",
            c->where ? "inside the twin (its globals, tags, state)" : "at plant level");
    sb_addf(&b, "At plant level every twin is a global: P101.flow is a live tag "
                "(.value, .unit, .quality, .age, :history(n)).\n\nCommands:\n");
    for (const command_t *cmd = commands; cmd->name != NULL; cmd++) {
        char head[40];
        snprintf(head, sizeof head, "%s %s", cmd->name, cmd->args);
        sb_addf(&b, "  %-22s %s\n", head, cmd->help);
    }
    sb_addf(&b, "\nTab completes names, Ctrl-C cancels the line (or stops .watch), Ctrl-D leaves.");
    send_result(c, id, true, sb_str(&b));
    free(b.data);
}

static void cmd_twins(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *glob = next_word(&p);
    dp_plant_t *plant = c->s->plant;
    sbuf_t b = {0};
    int shown = 0;
    for (int i = 0; i < dp_plant_twin_count(plant); i++) {
        dp_twin_t *tw = dp_plant_twin_at(plant, i);
        if (glob != NULL && fnmatch(glob, dp_twin_name(tw), 0) != 0)
            continue;
        dp_twin_stats_t st;
        dp_twin_get_stats(tw, &st);
        const char *script = dp_twin_script(tw);
        if (strncmp(script, "embed:", 6) == 0)
            script += 6;
        sb_addf(&b, "%s%-8s %-9s v%-2llu %6llu calls %3llu errors %2llu faults %5zu KiB  %s",
                shown ? "\n" : "", dp_twin_name(tw), st.suspended ? "SUSPENDED" : "running",
                (unsigned long long)st.generation, (unsigned long long)st.calls,
                (unsigned long long)st.errors, (unsigned long long)st.faults, st.memory >> 10,
                script);
        shown++;
    }
    if (shown == 0)
        send_resultf(c, id, false, "no twin matches \"%s\"", glob ? glob : "*");
    else
        send_result(c, id, true, sb_str(&b));
    free(b.data);
}

static void cmd_tags(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    char glob[256];
    tag_glob(next_word(&p), glob, sizeof glob);
    dp_plant_t *plant = c->s->plant;
    dp_store_t *store = dp_plant_store(plant);
    sbuf_t b = {0};
    int shown = 0;
    for (int i = 0; i < dp_store_count(store); i++) {
        if (fnmatch(glob, dp_store_get(store, i)->name, 0) != 0)
            continue;
        char line[600];
        dp_repl_format_tag(plant, i, true, line, sizeof line);
        sb_addf(&b, "%s%s", shown ? "\n" : "", line);
        shown++;
    }
    if (shown == 0)
        send_resultf(c, id, false, "no tag matches \"%s\"", glob);
    else
        send_result(c, id, true, sb_str(&b));
    free(b.data);
}

static void on_watch_batch(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    (void)sub;
    watch_t *w = ud;
    conn_t *c = w->c;
    if (c->closing)
        return;
    sbuf_t b = {0};
    dp_plant_t *plant = c->s->plant;
    dp_store_t *store = dp_plant_store(plant);
    for (size_t i = 0; i < n; i++) {
        const dp_change_t *ch = &changes[i];
        char ts[40], val[300];
        dp_time_format(ch->ts, ts, sizeof ts);
        switch (ch->v.type) {
        case DP_NUM:
            snprintf(val, sizeof val, "%.6g", ch->v.u.n);
            break;
        case DP_BOOL:
            snprintf(val, sizeof val, "%s", ch->v.u.b ? "true" : "false");
            break;
        case DP_STR:
            snprintf(val, sizeof val, "\"%.200s\"", ch->v.u.s);
            break;
        default:
            snprintf(val, sizeof val, "nil");
        }
        const dp_tag_t *t = dp_store_get(store, ch->tag);
        /* The time of day is enough on a live watch. */
        sb_addf(&b, "%s%s %s = %s%s%s%s%s", i ? "\n" : "", strlen(ts) > 11 ? ts + 11 : ts, t->name,
                val, t->unit[0] ? " " : "", t->unit, ch->quality != DP_Q_GOOD ? " " : "",
                ch->quality != DP_Q_GOOD ? dp_quality_name(ch->quality) : "");
        w->changes++;
    }
    send_out(c, w->id, sb_str(&b));
    free(b.data);
}

static void cmd_watch(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *arg = next_word(&p);
    if (arg == NULL) {
        send_result(c, id, false, "usage: .watch GLOB (P101.*, *.flow, P101)");
        return;
    }
    char glob[256];
    tag_glob(arg, glob, sizeof glob);
    dp_store_t *store = dp_plant_store(c->s->plant);
    watch_t *w = dp_xcalloc(1, sizeof *w);
    w->c = c;
    w->id = id;
    w->sub = dp_store_sub_new(store, on_watch_batch, w);
    int n = 0;
    sbuf_t b = {0};
    for (int i = 0; i < dp_store_count(store); i++) {
        if (fnmatch(glob, dp_store_get(store, i)->name, 0) != 0)
            continue;
        dp_store_watch(store, w->sub, i, 0);
        char line[600];
        dp_repl_format_tag(c->s->plant, i, true, line, sizeof line);
        sb_addf(&b, "%s%s", n ? "\n" : "", line);
        n++;
    }
    if (n == 0) {
        dp_store_sub_free(store, w->sub);
        free(w);
        send_resultf(c, id, false, "no tag matches \"%s\"", glob);
        free(b.data);
        return;
    }
    w->next = c->watches;
    c->watches = w;
    /* The current values first; then every change until a "cancel". */
    sb_addf(&b, "\n(watching %d tag%s; Ctrl-C stops)", n, n == 1 ? "" : "s");
    send_out(c, id, sb_str(&b));
    free(b.data);
}

static void cmd_use(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *name = next_word(&p);
    if (name == NULL) {
        send_resultf(c, id, true, "evaluating at %s%s (.use TWIN or .use plant to switch)",
                     c->where ? "twin " : "plant level", c->where ? c->where : "");
        return;
    }
    if (strcmp(name, "plant") == 0) {
        free(c->where);
        c->where = NULL;
        send_result(c, id, true, "");
        return;
    }
    dp_twin_t *tw = dp_plant_twin(c->s->plant, name);
    if (tw == NULL) {
        sbuf_t b = {0};
        for (int i = 0; i < dp_plant_twin_count(c->s->plant); i++)
            sb_addf(&b, "%s%s", i ? ", " : "", dp_twin_name(dp_plant_twin_at(c->s->plant, i)));
        send_resultf(c, id, false, "no twin \"%s\" (twins: %s; or plant)", name, sb_str(&b));
        free(b.data);
        return;
    }
    free(c->where);
    c->where = dp_xstrdup(name);
    send_result(c, id, true, "");
}

static void cmd_reload(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *name = next_word(&p);
    char *err = NULL;
    int rc = dp_plant_reload(c->s->plant, name, &err);
    if (rc < 0)
        send_resultf(c, id, false, "%s", err ? err : "reload failed");
    else
        send_result(c, id, true, "");
    free(err);
}

static void ring_lines(conn_t *c, uint64_t id, char *args, dp_log_level_t min)
{
    char *p = args;
    const char *arg = next_word(&p);
    long want = 20;
    if (arg != NULL) {
        char *end;
        want = strtol(arg, &end, 10);
        if (*end != '\0' || want <= 0) {
            send_resultf(c, id, false, "expected a number of lines, got \"%s\"", arg);
            return;
        }
    }
    dp_repl_server_t *s = c->s;
    sbuf_t b = {0};
    uv_mutex_lock(&s->mu);
    /* Walk back from the newest to find where the wanted lines start. */
    size_t take = 0, start = s->ring_count;
    for (size_t i = s->ring_count; i-- > 0 && take < (size_t)want;) {
        size_t k = (s->ring_next + RING_LINES - s->ring_count + i) % RING_LINES;
        if (s->ring[k].level >= min) {
            take++;
            start = i;
        }
    }
    int n = 0;
    for (size_t i = start; i < s->ring_count; i++) {
        size_t k = (s->ring_next + RING_LINES - s->ring_count + i) % RING_LINES;
        if (s->ring[k].level >= min)
            sb_addf(&b, "%s%s", n++ ? "\n" : "", s->ring[k].text);
    }
    uv_mutex_unlock(&s->mu);
    send_result(c, id, true,
                n ? sb_str(&b)
                  : (min >= DP_LOG_WARN ? "(no warnings or errors since the REPL server started)"
                                        : "(no log lines yet)"));
    free(b.data);
}

static void cmd_errors(conn_t *c, uint64_t id, char *args)
{
    ring_lines(c, id, args, DP_LOG_WARN);
}

static void cmd_log(conn_t *c, uint64_t id, char *args)
{
    ring_lines(c, id, args, DP_LOG_DEBUG);
}

static void cmd_drivers(conn_t *c, uint64_t id, char *args)
{
    (void)args;
    dp_plant_t *plant = c->s->plant;
    sbuf_t b = {0};
    int n = dp_plant_device_count(plant);
    for (int i = 0; i < n; i++) {
        dp_device_t *d = dp_plant_device_at(plant, i);
        sb_addf(&b, "%s%s (%s)", i ? "\n" : "", d->name, d->driver->name);
        if (d->driver->stats == NULL) {
            sb_addf(&b, "\n  (the %s driver keeps no statistics)", d->driver->name);
            continue;
        }
        dp_stat_t st[64];
        size_t k = d->driver->stats(d, st, DP_ARRAY_LEN(st));
        for (size_t j = 0; j < k && j < DP_ARRAY_LEN(st); j++) {
            if (st[j].text != NULL)
                sb_addf(&b, "\n  %-20s %s", st[j].name, st[j].text[0] ? st[j].text : "-");
            else
                sb_addf(&b, "\n  %-20s %.10g", st[j].name, st[j].value);
        }
    }
    send_result(c, id, true, n ? sb_str(&b) : "(the plant has no devices)");
    free(b.data);
}

/* Parses a value typed at the REPL: true/false, a number, a quoted string,
 * or a bare word taken as a string. */
static dp_value_t parse_value(char *text)
{
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        text[--n] = '\0';
    if (strcmp(text, "true") == 0)
        return dp_bool(true);
    if (strcmp(text, "false") == 0)
        return dp_bool(false);
    char *end;
    double d = strtod(text, &end);
    if (n > 0 && *end == '\0' && !isspace((unsigned char)text[0]))
        return dp_num(d);
    if (n >= 2 && (text[0] == '"' || text[0] == '\'') && text[n - 1] == text[0]) {
        text[n - 1] = '\0';
        return dp_str(text + 1);
    }
    return dp_str(text);
}

/* A command's outcome reaches the client that asked, if it is still there. */
typedef struct {
    dp_repl_server_t *s;
    uint64_t serial;
    uint64_t id;
} pending_write_t;

static void on_command(const dp_cmd_t *cmd, void *ud)
{
    pending_write_t *pw = ud;
    dp_repl_server_t *s = pw->s;
    conn_t *c = NULL;
    for (conn_t *k = s->closed ? NULL : s->conns; k != NULL; k = k->next) {
        if (k->serial == pw->serial && !k->closing)
            c = k;
    }
    if (c != NULL) {
        char val[300];
        switch (cmd->value.type) {
        case DP_NUM:
            snprintf(val, sizeof val, "%.10g", cmd->value.u.n);
            break;
        case DP_BOOL:
            snprintf(val, sizeof val, "%s", cmd->value.u.b ? "true" : "false");
            break;
        case DP_STR:
            snprintf(val, sizeof val, "\"%.200s\"", cmd->value.u.s);
            break;
        default:
            snprintf(val, sizeof val, "nil");
        }
        bool ok = cmd->outcome == DP_CMD_DONE || cmd->outcome == DP_CMD_SHADOW;
        send_resultf(c, pw->id, ok, "command #%llu %s := %s: %s%s%s", (unsigned long long)cmd->id,
                     cmd->tag, val, dp_cmd_outcome_name(cmd->outcome), cmd->reason[0] ? ": " : "",
                     cmd->reason);
    }
    free(pw);
}

static void cmd_write(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *tag = next_word(&p);
    while (isspace((unsigned char)*p))
        p++;
    if (tag == NULL || *p == '\0') {
        send_result(c, id, false, "usage: .write TAG VALUE (e.g. .write P101.speed_sp 1450)");
        return;
    }
    dp_guard_t *g = dp_plant_guard(c->s->plant);
    if (g == NULL) {
        send_result(c, id, false, "this plant has no guard: nothing can be written");
        return;
    }
    dp_value_t v = parse_value(p);
    pending_write_t *pw = dp_xcalloc(1, sizeof *pw);
    pw->s = c->s;
    pw->serial = c->serial;
    pw->id = id;
    /* The outcome comes back as the result (now, or later for a device write). */
    c->s->cap_mute = true;
    dp_guard_submit(g, "repl", tag, &v, on_command, pw);
    c->s->cap_mute = false;
}

static void cmd_shadow(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *arg = next_word(&p);
    dp_guard_t *g = dp_plant_guard(c->s->plant);
    if (g == NULL) {
        send_result(c, id, false, "this plant has no guard");
        return;
    }
    if (arg != NULL && strcmp(arg, "on") != 0 && strcmp(arg, "off") != 0) {
        send_resultf(c, id, false, "usage: .shadow [on|off], got \"%s\"", arg);
        return;
    }
    if (arg != NULL) {
        c->s->cap_mute = true;
        dp_guard_set_shadow(g, strcmp(arg, "on") == 0, "repl");
        c->s->cap_mute = false;
    }
    bool on = dp_guard_shadow(g);
    send_resultf(c, id, true, "shadow mode %s: %s%s", on ? "on" : "off",
                 on ? "commands pass the guard and are logged; nothing is written"
                    : "commands that pass the guard are written",
                 dp_guard_writes_enabled(g) ? "" : " (writes are disabled plant-wide)");
}

static void cmd_alarms(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    const char *arg = next_word(&p);
    bool all = arg != NULL && strcmp(arg, "all") == 0;
    if (arg != NULL && !all) {
        send_resultf(c, id, false, "usage: .alarms [all], got \"%s\"", arg);
        return;
    }
    dp_alarms_t *a = dp_plant_alarms(c->s->plant);
    int n = a != NULL ? dp_alarms_count(a) : 0;
    dp_time_t now = dp_clock_now(dp_plant_clock(c->s->plant));
    sbuf_t b = {0};
    int shown = 0;
    for (int i = 0; i < n; i++) {
        dp_alarm_info_t in;
        if (dp_alarms_get(a, i, &in) < 0 || in.retired || (!all && in.state == DP_ALARM_NORMAL))
            continue;
        char when[96] = "never active";
        if (in.since > 0) {
            char ts[48], age[32];
            dp_time_format(in.since, ts, sizeof ts);
            dp_duration_format((now - in.since) / DP_US_PER_SEC * DP_US_PER_SEC, age, sizeof age);
            snprintf(when, sizeof when, "since %s (%s ago)", ts, age);
        }
        sb_addf(&b, "%s%s.%s  %s%s%s%s  %s P%d  value %.6g limit %.6g  %s%s%s\n    %s",
                shown ? "\n" : "", in.twin, in.name, dp_alarm_state_name(in.state),
                in.shelved ? " shelved" : "", in.suppressed ? " suppressed" : "",
                in.first_out ? " first-out" : "", dp_severity_name(in.severity), in.priority,
                in.value, in.limit, when, in.acked_by[0] ? ", acked by " : "", in.acked_by,
                in.message);
        shown++;
    }
    if (shown == 0)
        send_resultf(c, id, true, "(%s; %d declared)",
                     all ? "no alarms declared" : "no alarm active or awaiting acknowledgement", n);
    else
        send_result(c, id, true, sb_str(&b));
    free(b.data);
}

static void cmd_ack(conn_t *c, uint64_t id, char *args)
{
    char *p = args;
    char *arg = next_word(&p);
    char *dot = arg != NULL ? strchr(arg, '.') : NULL;
    if (dot == NULL || dot == arg || dot[1] == '\0') {
        send_result(c, id, false, "usage: .ack TWIN.ALARM (.alarms lists them)");
        return;
    }
    *dot = '\0';
    dp_alarms_t *a = dp_plant_alarms(c->s->plant);
    char *err = NULL;
    c->s->cap_mute = true;
    int rc = a != NULL ? dp_alarms_ack(a, arg, dot + 1, "repl", &err) : DP_ENOENT;
    c->s->cap_mute = false;
    if (rc < 0)
        send_resultf(c, id, false, "%s", err ? err : "no alarm list in this plant");
    else
        send_resultf(c, id, true, "%s.%s acknowledged", arg, dot + 1);
    free(err);
}

static const command_t commands[] = {
    {".help", "", "this list", cmd_help},
    {".twins", "[GLOB]", "twins, their state and counters", cmd_twins},
    {".tags", "[GLOB]", "tags with live values (P101, P101.*, *.flow)", cmd_tags},
    {".watch", "GLOB", "show every change of matching tags until Ctrl-C", cmd_watch},
    {".use", "TWIN|plant", "evaluate inside a twin's environment, or at plant level", cmd_use},
    {".reload", "[TWIN]", "reload one twin's script, or all", cmd_reload},
    {".errors", "[N]", "the last N warnings and errors (default 20)", cmd_errors},
    {".log", "[N]", "the last N log lines (default 20)", cmd_log},
    {".drivers", "", "devices and their driver statistics", cmd_drivers},
    {".alarms", "[all]", "alarms active or awaiting acknowledgement (all: every one)", cmd_alarms},
    {".ack", "TWIN.ALARM", "acknowledge an alarm", cmd_ack},
    {".write", "TAG VALUE", "write a tag through the guard and show the outcome", cmd_write},
    {".shadow", "[on|off]", "shadow mode: commands are checked and logged, not written",
     cmd_shadow},
    {NULL, NULL, NULL, NULL},
};

static void run_command(conn_t *c, uint64_t id, const char *text)
{
    char *copy = dp_xstrdup(text);
    char *p = copy;
    char *name = next_word(&p);
    for (const command_t *cmd = commands; cmd->name != NULL; cmd++) {
        if (strcmp(cmd->name, name) == 0) {
            cmd->fn(c, id, p);
            free(copy);
            return;
        }
    }
    send_resultf(c, id, false, "unknown command %s (.help lists the commands)", name);
    free(copy);
}

/* ---- evaluation and completion ------------------------------------------ */

static void print_sink(const char *text, size_t len, void *ud)
{
    dp_repl_server_t *s = ud;
    if (s->cap == NULL)
        return;
    /* One "out" per print; the trailing newline is implied. */
    char *line = strndup(text, len > 0 && text[len - 1] == '\n' ? len - 1 : len);
    cap_out(s, line);
    free(line);
}

/* The sandbox for the connection's current place, or NULL with a reason. */
static dp_sandbox_t *conn_sandbox(conn_t *c, char **why)
{
    if (c->where == NULL) {
        if (c->sb == NULL)
            c->sb = dp_repl_plant_sandbox(c->s->plant, why);
        return c->sb;
    }
    dp_twin_t *tw = dp_plant_twin(c->s->plant, c->where);
    dp_sandbox_t *sb = tw != NULL ? dp_twin_sandbox(tw) : NULL;
    if (sb == NULL)
        *why = dp_xasprintf("twin %s has no running version (its script did not load)", c->where);
    return sb;
}

/* The audit record of one request: a plant "repl" event (journaled, logged
 * at info) with the client, where it ran, what was typed and whether it
 * succeeded. Everything typed is recorded, Lua and commands alike: Lua at
 * the REPL can change a twin's rules and state as much as a command can. */
#define AUDIT_CODE_MAX 4096

static void audit(conn_t *c, const char *where, const char *text, bool ok)
{
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    bool cut = len > AUDIT_CODE_MAX;
    if (cut)
        len = AUDIT_CODE_MAX;
    char client[96];
    snprintf(client, sizeof client, "client %llu (%s%s)", (unsigned long long)c->serial,
             c->tcp ? "tcp " : "socket", c->tcp ? c->peer : "");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    dp_mp_pack_str(&pk, "by");
    dp_mp_pack_str(&pk, "repl");
    dp_mp_pack_str(&pk, "client");
    dp_mp_pack_str(&pk, client);
    dp_mp_pack_str(&pk, "where");
    dp_mp_pack_str(&pk, where != NULL ? where : "plant");
    dp_mp_pack_str(&pk, "code");
    msgpack_pack_str(&pk, len);
    msgpack_pack_str_body(&pk, text, len);
    dp_mp_pack_str(&pk, "cut");
    dp_mp_pack_bool(&pk, cut);
    dp_mp_pack_str(&pk, "ok");
    dp_mp_pack_bool(&pk, ok);
    /* The log line: the first line of what was typed, shortened. */
    size_t first = strcspn(text, "\n");
    int shown = (int)(first < 160 ? first : 160);
    char line[400];
    snprintf(line, sizeof line, "%s at %s: %.*s%s%s", client, where != NULL ? where : "plant",
             shown, text, first > (size_t)shown || first < len ? " ..." : "",
             ok ? "" : " (failed)");
    dp_event_t ev = {.ts = dp_clock_now(dp_plant_clock(c->s->plant)),
                     .twin = where,
                     .kind = "repl",
                     .text = line,
                     .payload = sb.data,
                     .payload_len = sb.size};
    dp_plant_event(c->s->plant, &ev);
    msgpack_sbuffer_destroy(&sb);
}

static void handle_eval(conn_t *c, uint64_t id, const char *text)
{
    dp_repl_server_t *s = c->s;
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    s->cap = c;
    s->cap_id = id;
    s->cap_ok = false;
    s->cap_bytes = s->cap_dropped = 0;
    /* Where it runs: a `.use` changes that. The connection may be gone
     * after a command (its close waits for the loop), never freed here. */
    char *where = c->where != NULL ? dp_xstrdup(c->where) : NULL;
    if (*p == '.' && !isdigit((unsigned char)p[1])) {
        run_command(c, id, p);
    } else if (*p == '\0') {
        send_result(c, id, true, "");
    } else {
        char *why = NULL, *out = NULL;
        dp_sandbox_t *sb = conn_sandbox(c, &why);
        if (sb == NULL) {
            send_result(c, id, false, why);
        } else {
            dp_repl_ctx_t ctx = {.plant = s->plant, .twin = c->where};
            dp_repl_set_print_sink(print_sink, s);
            bool ok = dp_repl_eval(&ctx, sb, text, &out);
            dp_repl_set_print_sink(NULL, NULL);
            if (s->cap_dropped > 0) {
                char note[96];
                snprintf(note, sizeof note, "(%zu more bytes of output not shown)", s->cap_dropped);
                send_out(c, id, note);
            }
            send_result(c, id, ok, out);
        }
        free(why);
        free(out);
    }
    if (*p != '\0')
        audit(c, where, p, s->cap_ok);
    free(where);
    s->cap = NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void complete_names(conn_t *c, const char *word, bool twins, bool tags, char ***items,
                           size_t *n)
{
    dp_plant_t *plant = c->s->plant;
    size_t wl = strlen(word);
    if (twins) {
        for (int i = 0; i < dp_plant_twin_count(plant); i++) {
            const char *name = dp_twin_name(dp_plant_twin_at(plant, i));
            if (strncmp(name, word, wl) == 0)
                dp_repl_items_add(items, n, DP_REPL_MAX_ITEMS, name);
        }
    }
    if (tags) {
        dp_store_t *store = dp_plant_store(plant);
        for (int i = 0; i < dp_store_count(store); i++) {
            const char *name = dp_store_get(store, i)->name;
            if (strncmp(name, word, wl) == 0)
                dp_repl_items_add(items, n, DP_REPL_MAX_ITEMS, name);
        }
    }
}

static void handle_complete(conn_t *c, uint64_t id, const char *line)
{
    size_t len = strlen(line), st = len;
    while (st > 0 && (isalnum((unsigned char)line[st - 1]) || strchr("_.:", line[st - 1]) ||
                      (unsigned char)line[st - 1] >= 0x80))
        st--;
    const char *word = line + st;
    const char *q = line;
    while (isspace((unsigned char)*q))
        q++;
    char **items = NULL;
    size_t n = 0;
    if (*q == '.' && !isdigit((unsigned char)q[1])) {
        /* Command names, then each command's arguments. */
        const char *sp = q;
        while (*sp != '\0' && !isspace((unsigned char)*sp))
            sp++;
        if (*sp == '\0') {
            for (const command_t *cmd = commands; cmd->name != NULL; cmd++) {
                if (strncmp(cmd->name, q, strlen(q)) == 0)
                    dp_repl_items_add(&items, &n, DP_REPL_MAX_ITEMS, cmd->name);
            }
            word = q;
        } else {
            char cmd[32];
            snprintf(cmd, sizeof cmd, "%.*s", (int)(sp - q), q);
            if (strcmp(cmd, ".use") == 0) {
                if (strncmp("plant", word, strlen(word)) == 0)
                    dp_repl_items_add(&items, &n, DP_REPL_MAX_ITEMS, "plant");
                complete_names(c, word, true, false, &items, &n);
            } else if (strcmp(cmd, ".twins") == 0 || strcmp(cmd, ".reload") == 0) {
                complete_names(c, word, true, false, &items, &n);
            } else if (strcmp(cmd, ".tags") == 0 || strcmp(cmd, ".watch") == 0 ||
                       strcmp(cmd, ".write") == 0) {
                complete_names(c, word, false, true, &items, &n);
            } else if (strcmp(cmd, ".ack") == 0) {
                dp_alarms_t *a = dp_plant_alarms(c->s->plant);
                for (int i = 0, na = a ? dp_alarms_count(a) : 0; i < na; i++) {
                    dp_alarm_info_t in;
                    if (dp_alarms_get(a, i, &in) < 0 || in.retired)
                        continue;
                    char full[256];
                    snprintf(full, sizeof full, "%s.%s", in.twin, in.name);
                    if (strncmp(full, word, strlen(word)) == 0)
                        dp_repl_items_add(&items, &n, DP_REPL_MAX_ITEMS, full);
                }
            } else if (strcmp(cmd, ".alarms") == 0) {
                if (strncmp("all", word, strlen(word)) == 0)
                    dp_repl_items_add(&items, &n, DP_REPL_MAX_ITEMS, "all");
            } else if (strcmp(cmd, ".shadow") == 0) {
                const char *opts[] = {"on", "off"};
                for (size_t i = 0; i < 2; i++) {
                    if (strncmp(opts[i], word, strlen(word)) == 0)
                        dp_repl_items_add(&items, &n, DP_REPL_MAX_ITEMS, opts[i]);
                }
            }
        }
    } else {
        char *why = NULL;
        dp_sandbox_t *sb = conn_sandbox(c, &why);
        if (sb != NULL) {
            dp_repl_ctx_t ctx = {.plant = c->s->plant, .twin = c->where};
            dp_repl_complete_lua(&ctx, sb, word, &items, &n, DP_REPL_MAX_ITEMS);
        }
        free(why);
    }
    if (n > 1)
        qsort(items, n, sizeof *items, cmp_str);
    dp_repl_msg_t m = {
        .type = DP_RM_ITEMS, .id = id, .text = (char *)word, .items = items, .nitems = n};
    send_msg(c, &m);
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static void handle_cancel(conn_t *c, uint64_t id)
{
    for (watch_t **pp = &c->watches; *pp != NULL; pp = &(*pp)->next) {
        watch_t *w = *pp;
        if (w->id != id)
            continue;
        *pp = w->next;
        uint64_t changes = w->changes;
        watch_free(w);
        send_resultf(c, id, true, "(watch stopped after %llu change%s)",
                     (unsigned long long)changes, changes == 1 ? "" : "s");
        return;
    }
    /* Nothing running under that id (it finished already): nothing to do. */
}

/* Timing-safe comparison for the TCP token. */
static bool same_token(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)(a[i % (la ? la : 1)] ^ b[i]);
    return diff == 0 && la > 0;
}

static void handle(conn_t *c, dp_repl_msg_t *m)
{
    dp_repl_server_t *s = c->s;
    if (!c->hello) {
        if (m->type != DP_RM_HELLO) {
            fail_conn(c, "the first message must be \"hello\", got \"%s\"",
                      dp_repl_type_name((int)m->type));
            return;
        }
        if (m->version != DP_REPL_VERSION) {
            fail_conn(c, "protocol version %u is not supported (this plant speaks version %d)",
                      m->version, DP_REPL_VERSION);
            return;
        }
        if (c->tcp && (m->token == NULL || !same_token(m->token, s->token))) {
            /* Guessing is slowed down: no new TCP client for a moment. */
            s->refuse_until = uv_now(s->loop) + REFUSAL_PAUSE;
            fail_conn(c, "%s", m->token == NULL ? "a token is required" : "wrong token");
            return;
        }
        c->hello = true;
        c->notice_window = uv_now(s->loop);
        dp_repl_msg_t r = {.type = DP_RM_HELLO,
                           .version = DP_REPL_VERSION,
                           .text = (char *)dp_plant_name(s->plant),
                           .where = "plant"};
        send_msg(c, &r);
        return;
    }
    switch (m->type) {
    case DP_RM_EVAL:
        handle_eval(c, m->id, m->text);
        break;
    case DP_RM_COMPLETE:
        handle_complete(c, m->id, m->text);
        break;
    case DP_RM_CANCEL:
        handle_cancel(c, m->id);
        break;
    default:
        fail_conn(c, "a client cannot send \"%s\" messages%s", dp_repl_type_name((int)m->type),
                  m->type == DP_RM_HELLO ? " after the first" : "");
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *c = h->data;
    if (c->ssl != NULL) {
        if (c->raw == NULL)
            c->raw = dp_xmalloc(READ_CHUNK);
        *buf = uv_buf_init(c->raw, READ_CHUNK);
        return;
    }
    if (c->cap - c->len < READ_CHUNK) {
        c->cap = c->len + READ_CHUNK;
        c->buf = dp_xrealloc(c->buf, c->cap);
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

/* Decrypts what arrived into `buf` (after the handshake). -1: the
 * connection is closed. */
static int tls_read(conn_t *c, size_t nread)
{
    if (BIO_write(c->rbio, c->raw, (int)nread) != (int)nread) {
        conn_close(c);
        return -1;
    }
    if (!SSL_is_init_finished(c->ssl)) {
        int rc = SSL_do_handshake(c->ssl);
        if (tls_flush(c) < 0 || (rc <= 0 && SSL_get_error(c->ssl, rc) != SSL_ERROR_WANT_READ)) {
            /* Closed before logging: the log line must not come back here. */
            conn_close(c);
            dp_log_info(NULL, "REPL client %llu from %s: TLS handshake failed: %s",
                        (unsigned long long)c->serial, c->peer, dp_tls_reason("connection closed"));
            return -1;
        }
        if (rc <= 0)
            return 0;
    }
    for (;;) {
        if (c->cap - c->len < READ_CHUNK) {
            c->cap = c->len + READ_CHUNK;
            c->buf = dp_xrealloc(c->buf, c->cap);
        }
        int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            return tls_flush(c) < 0 ? (conn_close(c), -1) : 0;
        conn_close(c);
        if (e != SSL_ERROR_ZERO_RETURN)
            dp_log_info(NULL, "REPL client %llu: TLS error: %s", (unsigned long long)c->serial,
                        dp_tls_reason("connection closed"));
        return -1;
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    conn_t *c = st->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->ssl != NULL) {
        if (tls_read(c, (size_t)nread) < 0 || c->len == 0)
            return; /* closed, or nothing decrypted yet (the handshake) */
    } else {
        c->len += (size_t)nread;
    }
    size_t off = 0;
    while (!c->closing) {
        dp_repl_msg_t m;
        size_t used = 0;
        char *err = NULL;
        int rc = dp_repl_decode(c->buf + off, c->len - off, &m, &used, &err);
        if (rc == 0)
            break;
        if (rc < 0) {
            fail_conn(c, "malformed frame: %s", err);
            free(err);
            return;
        }
        off += used;
        handle(c, &m);
        dp_repl_msg_clear(&m);
    }
    if (c->closing)
        return;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    /* Do not keep a large buffer around after a large frame. */
    if (c->cap > 4 * READ_CHUNK && c->len < READ_CHUNK) {
        c->cap = READ_CHUNK;
        c->buf = dp_xrealloc(c->buf, c->cap);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    dp_repl_server_t *s = server->data;
    if (status < 0) {
        dp_log_warn(NULL, "REPL: accepting a connection failed: %s", uv_strerror(status));
        return;
    }
    conn_t *c = dp_xcalloc(1, sizeof *c);
    c->s = s;
    c->serial = ++s->next_serial;
    c->tcp = server == (uv_stream_t *)&s->tcp;
    if (c->tcp)
        uv_tcp_init(s->loop, &c->h.tcp);
    else
        uv_pipe_init(s->loop, &c->h.pipe, 0);
    if (c->tcp && s->tls != NULL) {
        c->ssl = SSL_new(s->tls);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    }
    c->h.handle.data = c;
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    c->accepted = uv_now(s->loop);
    if (c->tcp)
        s->ntcp++;
    if (uv_accept(server, &c->h.stream) < 0) {
        conn_close(c);
        return;
    }
    if (c->tcp) {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
            dp_sockaddr_name((const struct sockaddr *)&ss, c->peer, sizeof c->peer);
        else
            snprintf(c->peer, sizeof c->peer, "?");
        const char *why = s->ntcp > MAX_TCP_CLIENTS       ? "too many TCP clients"
                          : c->accepted < s->refuse_until ? "a wrong token was just given"
                                                          : NULL;
        if (why != NULL) {
            conn_close(c);
            dp_log_info(NULL, "REPL: turned away a TCP client from %s: %s", c->peer, why);
            return;
        }
    }
    if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0) {
        conn_close(c);
        return;
    }
    dp_log_debug(NULL, "REPL client %llu connected%s%s", (unsigned long long)c->serial,
                 c->tcp ? " from " : "", c->peer);
}

/* Closes TCP clients that have not said hello within HELLO_TIMEOUT: a
 * connection that sends nothing must not hold one of the few places. */
static void on_sweep(uv_timer_t *t)
{
    dp_repl_server_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->tcp && !c->hello && !c->closing && now - c->accepted >= HELLO_TIMEOUT)
            fail_conn(c, "no hello within %d s", HELLO_TIMEOUT / 1000);
    }
}

/* ---- listeners ------------------------------------------------------------ */

static void on_listener_closed(uv_handle_t *h)
{
    dp_repl_server_t *s = h->data;
    if (--s->listeners == 0 && s->free_pending) {
        s->free_pending = false;
        dp_repl_server_free(s);
    }
}

/* Refuses to take over a socket another running doppel answers on; removes
 * a stale one. */
static int claim_path(const char *path, char **err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode))
        return dp_fail(err, DP_EEXIST, "REPL socket %s: exists and is not a socket", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
        close(fd);
        if (rc == 0)
            return dp_fail(err, DP_EEXIST,
                           "REPL socket %s: another doppel is running with this data directory "
                           "(use another --data-dir)",
                           path);
    }
    if (unlink(path) < 0 && errno != ENOENT)
        return dp_fail(err, DP_EIO, "REPL socket %s: cannot remove the stale socket: %s", path,
                       strerror(errno));
    return 0;
}

static int listen_unix(dp_repl_server_t *s, const char *path, char **err)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof sa.sun_path)
        return dp_fail(err, DP_EINVAL,
                       "REPL socket %s: path longer than the %zu bytes a Unix socket allows "
                       "(use a shorter --data-dir)",
                       path, sizeof sa.sun_path - 1);
    int rc = claim_path(path, err);
    if (rc < 0)
        return rc;
    uv_pipe_init(s->loop, &s->pipe, 0);
    s->pipe.data = s;
    s->pipe_open = true;
    s->listeners++;
    /* Created with mode 0600 from the start: no window where others could connect. */
    mode_t old = umask(0177);
    rc = uv_pipe_bind(&s->pipe, path);
    umask(old);
    if (rc == 0)
        rc = chmod(path, 0600) < 0 ? uv_translate_sys_error(errno) : 0;
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->pipe, 16, on_connection);
    if (rc < 0)
        return dp_fail(err, rc, "REPL socket %s: %s", path, uv_strerror(rc));
    s->path = dp_xstrdup(path);
    return 0;
}

static int tls_open(dp_repl_server_t *s, const char *cert, const char *key, char **err)
{
    s->tls = dp_tls_server_new(cert, key, "REPL TLS", err);
    if (s->tls == NULL)
        return DP_EINVAL;
    /* No session tickets: nothing to resume, and a client reading with a
     * blocking socket then never meets a record without data. */
    SSL_CTX_set_num_tickets(s->tls, 0);
    return 0;
}

static int listen_tcp(dp_repl_server_t *s, const dp_repl_opts_t *o, char **err)
{
    const char *addr = o->listen, *token = o->token;
    if (token == NULL || token[0] == '\0')
        return dp_fail(err, DP_EINVAL, "REPL TCP listener %s needs a token (set DOPPEL_REPL_TOKEN)",
                       addr);
    if ((o->cert == NULL) != (o->key == NULL))
        return dp_fail(err, DP_EINVAL,
                       "REPL TLS needs both a certificate and a key (--repl-cert "
                       "and --repl-key)");
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || colon[1] == '\0')
        return dp_fail(err, DP_EINVAL, "REPL listen address \"%s\": expected HOST:PORT", addr);
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return dp_fail(err, DP_EINVAL, "REPL listen address \"%s\": bad port", addr);
    struct sockaddr_storage ss;
    size_t hl = strlen(host);
    int rc;
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        rc = uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss);
    } else {
        rc = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss);
    }
    if (rc < 0)
        return dp_fail(err, DP_EINVAL, "REPL listen address \"%s\": not an IP address", addr);
    if (o->cert == NULL && !dp_is_loopback((const struct sockaddr *)&ss))
        return dp_fail(err, DP_EINVAL,
                       "REPL listen address %s is not a loopback address: it needs TLS "
                       "(--repl-cert and --repl-key), or reach a loopback listener through an "
                       "SSH tunnel",
                       addr);
    if (o->cert != NULL && tls_open(s, o->cert, o->key, err) < 0)
        return DP_EINVAL;
    uv_tcp_init(s->loop, &s->tcp);
    s->tcp.data = s;
    s->tcp_open = true;
    s->listeners++;
    rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->tcp, 16, on_connection);
    if (rc < 0)
        return dp_fail(err, rc, "REPL listen address %s: %s", addr, uv_strerror(rc));
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &blen) == 0)
        s->tcp_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                        : ((struct sockaddr_in *)&bound)->sin_port);
    s->token = dp_xstrdup(token);
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    s->sweep_open = true;
    s->listeners++;
    uv_timer_start(&s->sweep, on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *)&s->sweep);
    return 0;
}

dp_repl_server_t *dp_repl_server_new(uv_loop_t *loop, dp_plant_t *plant, const dp_repl_opts_t *opts,
                                     char **err)
{
    dp_repl_server_t *s = dp_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->plant = plant;
    s->loop_thread = uv_thread_self();
    uv_mutex_init(&s->mu);
    s->ring = dp_xcalloc(RING_LINES, sizeof *s->ring);
    if (opts->listen == NULL && (opts->cert != NULL || opts->key != NULL)) {
        dp_fail(err, DP_EINVAL,
                "--repl-cert and --repl-key are for a TCP listener: add "
                "--repl-listen HOST:PORT");
        dp_repl_server_free(s);
        return NULL;
    }
    if (listen_unix(s, opts->socket_path, err) < 0 ||
        (opts->listen != NULL && listen_tcp(s, opts, err) < 0)) {
        /* Freed once the listener handles have closed (on the next loop run). */
        dp_repl_server_close(s);
        if (s->listeners > 0)
            s->free_pending = true;
        else
            dp_repl_server_free(s);
        return NULL;
    }
    if (dp_log_add_hook(on_log, s) == 0)
        s->hooked = true;
    dp_plant_on_event(plant, on_event, s);
    char *copy = dp_xstrdup(opts->socket_path);
    const char *dir = dirname(copy);
    dp_log_info(NULL, "REPL listening on %s: attach with `doppel repl%s%s`", opts->socket_path,
                strcmp(dir, "data") == 0 ? "" : " --data-dir ",
                strcmp(dir, "data") == 0 ? "" : dir);
    free(copy);
    if (s->tcp_open && s->tls != NULL)
        dp_log_info(NULL,
                    "REPL: also listening on TCP %s (port %d), TLS, token required: attach with "
                    "`doppel repl --connect HOST:%d --ca CERT`",
                    opts->listen, s->tcp_port, s->tcp_port);
    else if (s->tcp_open)
        dp_log_info(NULL,
                    "REPL: also listening on TCP %s (port %d), token required; plain text "
                    "(loopback only; --repl-cert and --repl-key add TLS)",
                    opts->listen, s->tcp_port);
    return s;
}

void dp_repl_server_close(dp_repl_server_t *s)
{
    if (s == NULL || s->closed)
        return;
    s->closed = true;
    if (s->hooked) {
        dp_log_remove_hook(on_log, s);
        s->hooked = false;
    }
    if (s->pipe_open) {
        uv_close((uv_handle_t *)&s->pipe, on_listener_closed);
        s->pipe_open = false;
        if (s->path != NULL)
            unlink(s->path);
    }
    if (s->tcp_open) {
        uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
        s->tcp_open = false;
    }
    if (s->sweep_open) {
        uv_close((uv_handle_t *)&s->sweep, on_listener_closed);
        s->sweep_open = false;
    }
    for (conn_t *c = s->conns; c != NULL; c = c->next)
        conn_close(c);
}

void dp_repl_server_free(dp_repl_server_t *s)
{
    if (s == NULL)
        return;
    dp_repl_server_close(s);
    uv_mutex_destroy(&s->mu);
    free(s->ring);
    free(s->path);
    free(s->token);
    SSL_CTX_free(s->tls);
    free(s);
}

int dp_repl_server_clients(const dp_repl_server_t *s)
{
    return s->nconns;
}

int dp_repl_server_tcp_port(const dp_repl_server_t *s)
{
    return s->tcp_port;
}
