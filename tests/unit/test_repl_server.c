/* Tests of the REPL server (runtime/repl_server.c, runtime/repl_eval.c)
 * against a real plant in real time, with C clients over the real socket.
 *
 * The plant and the server run on this thread's libuv loop; each scenario's
 * clients run in a second thread with blocking sockets (bounded by a receive
 * timeout) and record what they saw. When the scenario ends it wakes the loop
 * through a uv_async, the loop shuts everything down, and the test checks the
 * record: Criterion's assertions belong on the test's own thread. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <uv.h>

#include "harness.h"
#include "runtime/journal.h"
#include "runtime/lmsgpack.h"
#include "runtime/repl_server.h"
#include "runtime/replproto.h"

#define MAX_NOTES 256

/* What a scenario saw. */
typedef struct {
    char *dir;
    char sock[300];
    int tcp_port;
    char *notes[MAX_NOTES]; /* "key=value" records, checked by the test */
    int nnotes;
    uv_async_t done;
    dp_repl_server_t *srv;
    dp_plant_t *plant;
} world_t;

static void note(world_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(world_t *w, const char *fmt, ...)
{
    if (w->nnotes == MAX_NOTES)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    w->notes[w->nnotes++] = s;
}

/* The value recorded under key, or NULL. */
static const char *seen(world_t *w, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < w->nnotes; i++) {
        if (w->notes[i] != NULL && strncmp(w->notes[i], key, kl) == 0 && w->notes[i][kl] == '=')
            return w->notes[i] + kl + 1;
    }
    return NULL;
}

static void expect_note(world_t *w, const char *key, const char *part)
{
    const char *v = seen(w, key);
    cr_assert_not_null(v, "nothing recorded for %s", key);
    cr_assert(strstr(v, part) != NULL, "%s: \"%s\" lacks \"%s\"", key, v, part);
}

/* ---- a blocking test client ----------------------------------------------- */

typedef struct {
    int fd;
    char buf[1 << 16];
    size_t len;
    uint64_t id;
} tc_t;

static void set_timeout(int fd)
{
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static bool tc_open_unix(tc_t *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return false;
    set_timeout(c->fd);
    return true;
}

static bool tc_open_tcp(tc_t *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return false;
    set_timeout(c->fd);
    return true;
}

static void tc_close(tc_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static bool tc_raw(tc_t *c, const void *data, size_t len)
{
    return write(c->fd, data, len) == (ssize_t)len;
}

static bool tc_send(tc_t *c, const dp_repl_msg_t *m)
{
    char *buf = NULL, *err = NULL;
    size_t len;
    if (dp_repl_encode(m, &buf, &len, &err) < 0) {
        free(err);
        return false;
    }
    bool ok = tc_raw(c, buf, len);
    free(buf);
    return ok;
}

/* 1: a message; 0: the server closed the connection; -1: timeout or error. */
static int tc_recv(tc_t *c, dp_repl_msg_t *m)
{
    for (;;) {
        size_t used;
        char *err = NULL;
        int rc = dp_repl_decode(c->buf, c->len, m, &used, &err);
        if (rc < 0) {
            free(err);
            return -1;
        }
        if (rc == 1) {
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            return 1;
        }
        if (c->len == sizeof c->buf)
            return -1;
        ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (n == 0)
            return 0;
        if (n < 0)
            return -1;
        c->len += (size_t)n;
    }
}

static bool tc_hello(tc_t *c, const char *token, char **answer)
{
    dp_repl_msg_t m = {.type = DP_RM_HELLO, .version = DP_REPL_VERSION, .token = (char *)token};
    if (!tc_send(c, &m))
        return false;
    dp_repl_msg_t r;
    if (tc_recv(c, &r) != 1)
        return false;
    *answer = dp_xasprintf("%s:%s:%s", dp_repl_type_name((int)r.type), r.text ? r.text : "",
                           r.where ? r.where : "");
    dp_repl_msg_clear(&r);
    return true;
}

/* Sends a request and returns "ok:TEXT" or "error:TEXT" (malloc'd); output
 * lines of the request are collected in *outs (joined by '|'). Notices (id 0)
 * are skipped. NULL when the connection failed. */
static char *tc_req(tc_t *c, dp_repl_type_t type, const char *text, char **outs)
{
    uint64_t id = ++c->id;
    dp_repl_msg_t m = {.type = type, .id = id, .text = (char *)text};
    size_t olen = 0, ocap = 64;
    if (outs != NULL) {
        *outs = dp_xmalloc(ocap);
        (*outs)[0] = '\0';
    }
    if (!tc_send(c, &m))
        return NULL;
    for (;;) {
        dp_repl_msg_t r;
        if (tc_recv(c, &r) != 1)
            return NULL;
        if (r.type == DP_RM_OUT && r.id == id && outs != NULL) {
            size_t tl = strlen(r.text);
            if (olen + tl + 2 > ocap) {
                ocap = (olen + tl + 2) * 2;
                *outs = dp_xrealloc(*outs, ocap);
            }
            if (olen > 0)
                (*outs)[olen++] = '|';
            memcpy(*outs + olen, r.text, tl + 1);
            olen += tl;
        }
        if ((r.type == DP_RM_RESULT || r.type == DP_RM_ITEMS) && r.id == id) {
            char *s;
            if (r.type == DP_RM_ITEMS) {
                s = dp_xstrdup("items:");
                for (size_t i = 0; i < r.nitems; i++) {
                    char *t = dp_xasprintf("%s%s%s", s, i ? "," : "", r.items[i]);
                    free(s);
                    s = t;
                }
            } else {
                s = dp_xasprintf("%s:%s@%s", r.ok ? "ok" : "error", r.text, r.where);
            }
            dp_repl_msg_clear(&r);
            return s;
        }
        if (r.type == DP_RM_ERROR) {
            char *s = dp_xasprintf("protocol-error:%s", r.text);
            dp_repl_msg_clear(&r);
            return s;
        }
        dp_repl_msg_clear(&r);
    }
}

static char *tc_eval(tc_t *c, const char *text, char **outs)
{
    return tc_req(c, DP_RM_EVAL, text, outs);
}

/* Records the result of evaluating text under key. */
static void rec_eval(world_t *w, tc_t *c, const char *key, const char *text)
{
    char *outs = NULL;
    char *r = tc_eval(c, text, &outs);
    note(w, "%s=%s", key, r ? r : "(connection failed)");
    if (outs != NULL && outs[0] != '\0')
        note(w, "%s.out=%s", key, outs);
    free(r);
    free(outs);
}

/* ---- the world ----------------------------------------------------------- */

static const char *plant_lua =
    "plant { name = \"rt\" }\n"
    "device \"sim\" { driver = \"sim\", seed = 1 }\n"
    "twin \"P1\" {\n"
    "  script = \"p1.lua\",\n"
    "  tags = {\n"
    "    x = { device = \"sim\", wave = \"const\", mean = 5, noise = 0.1,\n"
    "          every = \"20ms\", unit = \"m3/h\" },\n"
    "    sp = { writable = true, min = 0, max = 100, unit = \"%\" },\n"
    "  },\n"
    "}\n";

static const char *p1_lua =
    "local alarm = require 'doppel.alarm'\n"
    "local hi = alarm.limit { name = 'x_high', high = 4, hysteresis = 0.1,\n"
    "  on_delay = 0, off_delay = 0, severity = 'high', message = 'x above 4' }\n"
    "state.n = state.n or 0\n"
    "twin.tag(\"doubled\", { unit = \"m3/h\" })\n"
    "twin.on_change(\"x\", function(v)\n"
    "  state.n = state.n + 1\n"
    "  hi:update(v)\n"
    "  tags.doubled = v * 2\n"
    "end)\n"
    "function greet(who) return \"hello \" .. who end\n";

typedef void (*scenario_fn)(world_t *w);

typedef struct {
    world_t *w;
    scenario_fn fn;
} thread_arg_t;

static void scenario_thread(void *arg)
{
    thread_arg_t *a = arg;
    a->fn(a->w);
    uv_async_send(&a->w->done);
}

static void on_done(uv_async_t *h)
{
    world_t *w = h->data;
    dp_repl_server_close(w->srv);
    dp_plant_stop(w->plant);
    uv_close((uv_handle_t *)&w->done, NULL);
}

/* Runs a scenario against a live plant and its REPL server. */
static void run_world(world_t *w, scenario_fn fn, const char *listen, const char *token)
{
    memset(w, 0, sizeof *w);
    w->dir = th_tmpdir();
    th_write(w->dir, "plant.lua", plant_lua);
    th_write(w->dir, "p1.lua", p1_lua);
    snprintf(w->sock, sizeof w->sock, "%s/repl.sock", w->dir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[512], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", w->dir);
    dp_plant_opts_t po = {.path = path, .loop = &loop, .data_dir = w->dir};
    dp_log_set_level(DP_LOG_WARN);
    w->plant = dp_plant_open(&po, &err);
    cr_assert_not_null(w->plant, "%s", err);
    cr_assert_eq(dp_plant_start(w->plant, &err), 0, "%s", err);
    dp_repl_opts_t ro = {.socket_path = w->sock, .listen = listen, .token = token};
    w->srv = dp_repl_server_new(&loop, w->plant, &ro, &err);
    cr_assert_not_null(w->srv, "%s", err);
    w->tcp_port = dp_repl_server_tcp_port(w->srv);
    struct stat st;
    cr_assert_eq(stat(w->sock, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "socket mode %o", st.st_mode & 0777);

    uv_async_init(&loop, &w->done, on_done);
    w->done.data = w;
    thread_arg_t arg = {w, fn};
    uv_thread_t th;
    uv_thread_create(&th, scenario_thread, &arg);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_thread_join(&th);
    dp_plant_free(w->plant);
    uv_run(&loop, UV_RUN_DEFAULT);
    dp_repl_server_free(w->srv);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left open");
    cr_assert_neq(stat(w->sock, &st), 0, "the socket file must be removed at close");
    dp_log_set_level(DP_LOG_INFO);
}

/* The REPL's audit records in the world's journal, one "twin|text" line
 * each (twin "-" at plant level), the `code` of the last one in *last. */
static char *repl_audit(world_t *w, char **last)
{
    char dir[512], *err = NULL;
    snprintf(dir, sizeof dir, "%s/journal", w->dir);
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    cr_assert_not_null(r, "%s", err);
    char *all = dp_xstrdup("");
    dp_jrec_t rec;
    while (dp_jreader_next(r, &rec, &err) == 1) {
        if (rec.type != DP_JREC_EVENT || strcmp(rec.kind, "repl") != 0)
            continue;
        char *more = dp_xasprintf("%s%s|%s\n", all, rec.twin ? rec.twin : "-", rec.text);
        free(all);
        all = more;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        cr_assert_eq(msgpack_unpack_next(&u, rec.payload, rec.payload_len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
        const msgpack_object *code = dp_mp_map_get(&u.data, "code");
        cr_assert(code != NULL && code->type == MSGPACK_OBJECT_STR);
        free(*last);
        *last = strndup(code->via.str.ptr, code->via.str.size);
        msgpack_unpacked_destroy(&u);
    }
    dp_jreader_free(r);
    return all;
}

static void free_world(world_t *w)
{
    for (int i = 0; i < w->nnotes; i++)
        free(w->notes[i]);
    th_rmdir(w->dir);
}

/* ---- scenarios ------------------------------------------------------------- */

static void sc_eval(world_t *w)
{
    tc_t c;
    char *hello = NULL;
    if (!tc_open_unix(&c, w->sock) || !tc_hello(&c, NULL, &hello)) {
        note(w, "hello=(failed)");
        return;
    }
    note(w, "hello=%s", hello);
    free(hello);
    rec_eval(w, &c, "arith", "1 + 1");
    rec_eval(w, &c, "multi", "1, 'two', nil");
    rec_eval(w, &c, "table", "{1, 2, {a = 1, b = 'x'}, [true] = 3}");
    rec_eval(w, &c, "cycle", "local t = {} t.self = t return t");
    rec_eval(w, &c, "tag", "P1.x");
    rec_eval(w, &c, "tagvalue", "P1.x.value > 4 and P1.x.unit");
    rec_eval(w, &c, "print", "print('hi', 42) return 3");
    char *outs = NULL;
    char *r = tc_eval(&c, "for i = 1, 200000 do print(i, 'some output') end return 'done'", &outs);
    note(w, "flood=%s", r ? r : "(connection failed)");
    note(w, "flood.size=%s", outs && strlen(outs) < (1u << 20) + 100 ? "bounded" : "unbounded");
    note(w, "flood.tail=%s", outs && strlen(outs) > 60 ? outs + strlen(outs) - 60 : "");
    free(r);
    free(outs);
    rec_eval(w, &c, "global", "y = 7");
    rec_eval(w, &c, "global2", "y * 2");
    rec_eval(w, &c, "readonly", "P1.x = 3");
    rec_eval(w, &c, "notag", "P1.nope");
    rec_eval(w, &c, "syntax", "1 +");
    rec_eval(w, &c, "error", "error('boom')");
    rec_eval(w, &c, "twin", "P1");
    rec_eval(w, &c, "use", ".use P1");
    rec_eval(w, &c, "greet", "greet('repl')");
    rec_eval(w, &c, "state", "state.n > 0");
    rec_eval(w, &c, "tags", "tags.x.unit");
    rec_eval(w, &c, "twinprint", "print('in twin')");
    rec_eval(w, &c, "setglobal", "made_here = 1");
    char *twinitems = tc_req(&c, DP_RM_COMPLETE, "tags.d", NULL);
    note(w, "complete.twintags=%s", twinitems ? twinitems : "(failed)");
    free(twinitems);
    twinitems = tc_req(&c, DP_RM_COMPLETE, "twin.on_", NULL);
    note(w, "complete.twinapi=%s", twinitems ? twinitems : "(failed)");
    free(twinitems);
    twinitems = tc_req(&c, DP_RM_COMPLETE, "gre", NULL);
    note(w, "complete.twinglobal=%s", twinitems ? twinitems : "(failed)");
    free(twinitems);
    twinitems = tc_req(&c, DP_RM_COMPLETE, "tags.x:h", NULL);
    note(w, "complete.method=%s", twinitems ? twinitems : "(failed)");
    free(twinitems);
    rec_eval(w, &c, "back", ".use plant");
    rec_eval(w, &c, "plantglobal", "made_here");
    rec_eval(w, &c, "nouse", ".use P9");
    rec_eval(w, &c, "help", ".help");
    rec_eval(w, &c, "tagsglob", ".tags P1");
    rec_eval(w, &c, "twins", ".twins");
    rec_eval(w, &c, "drivers", ".drivers");
    rec_eval(w, &c, "badcmd", ".frobnicate");
    rec_eval(w, &c, "reload", ".reload P1");
    rec_eval(w, &c, "reloadbad", ".reload P9");
    rec_eval(w, &c, "log", ".log 50");
    rec_eval(w, &c, "alarms", ".alarms");
    char *ackitems = tc_req(&c, DP_RM_COMPLETE, ".ack P1.", NULL);
    note(w, "complete.ack=%s", ackitems ? ackitems : "(failed)");
    free(ackitems);
    rec_eval(w, &c, "ack", ".ack P1.x_high");
    rec_eval(w, &c, "alarms2", ".alarms all");
    rec_eval(w, &c, "acknone", ".ack P1.nope");
    rec_eval(w, &c, "ackusage", ".ack x_high");
    rec_eval(w, &c, "write", ".write P1.sp 50");
    rec_eval(w, &c, "written", "P1.sp.value");
    rec_eval(w, &c, "writehigh", ".write P1.sp 500");
    rec_eval(w, &c, "writetype", ".write P1.sp \"fast\"");
    rec_eval(w, &c, "writeunknown", ".write P1.nope 1");
    rec_eval(w, &c, "writero", ".write P1.x 1");
    rec_eval(w, &c, "writeusage", ".write P1.sp");
    rec_eval(w, &c, "shadowon", ".shadow on");
    rec_eval(w, &c, "writeshadow", ".write P1.sp 60");
    rec_eval(w, &c, "notwritten", "P1.sp.value");
    rec_eval(w, &c, "shadowoff", ".shadow off");
    rec_eval(w, &c, "shadowbad", ".shadow maybe");
    char *items = tc_req(&c, DP_RM_COMPLETE, "P1.", NULL);
    note(w, "complete.tags=%s", items ? items : "(failed)");
    free(items);
    items = tc_req(&c, DP_RM_COMPLETE, "x = P1.x.va", NULL);
    note(w, "complete.field=%s", items ? items : "(failed)");
    free(items);
    items = tc_req(&c, DP_RM_COMPLETE, "pri", NULL);
    note(w, "complete.global=%s", items ? items : "(failed)");
    free(items);
    items = tc_req(&c, DP_RM_COMPLETE, "string.up", NULL);
    note(w, "complete.lib=%s", items ? items : "(failed)");
    free(items);
    items = tc_req(&c, DP_RM_COMPLETE, ".wa", NULL);
    note(w, "complete.cmd=%s", items ? items : "(failed)");
    free(items);
    items = tc_req(&c, DP_RM_COMPLETE, ".use P", NULL);
    note(w, "complete.use=%s", items ? items : "(failed)");
    free(items);
    items = tc_req(&c, DP_RM_COMPLETE, ".watch P1.d", NULL);
    note(w, "complete.watch=%s", items ? items : "(failed)");
    free(items);
    tc_close(&c);
}

Test(repl_server, evaluation_printing_commands_and_completion)
{
    world_t w;
    run_world(&w, sc_eval, NULL, NULL);
    expect_note(&w, "hello", "hello:rt:plant");
    expect_note(&w, "arith", "ok:2@plant");
    expect_note(&w, "multi", "ok:1\t\"two\"\tnil");
    expect_note(&w, "table", "ok:{ 1, 2, { a = 1, b = \"x\" }, [true] = 3 }");
    expect_note(&w, "cycle", "self = <cycle>");
    expect_note(&w, "tag", "ok:P1.x = ");
    expect_note(&w, "tag", " m3/h (good, ");
    expect_note(&w, "tagvalue", "ok:\"m3/h\"");
    expect_note(&w, "print.out", "hi\t42");
    expect_note(&w, "print", "ok:3");
    expect_note(&w, "flood", "ok:\"done\"");
    expect_note(&w, "flood.size", "bounded");
    expect_note(&w, "flood.tail", "more bytes of output not shown)");
    expect_note(&w, "global", "ok:@plant");
    expect_note(&w, "global2", "ok:14");
    expect_note(&w, "readonly", "error:");
    expect_note(&w, "readonly", "read-only here: write it with .write P1.x VALUE");
    expect_note(&w, "notag", "twin P1 has no tag \"nope\"");
    expect_note(&w, "syntax", "error:repl:1: unexpected symbol near '1'");
    expect_note(&w, "error", "error:repl:1: boom\nstack traceback:");
    expect_note(&w, "twin", "ok:twin P1 {\n  sp = nil (no value yet),\n  x = ");
    expect_note(&w, "twin", "\n  doubled = ");
    expect_note(&w, "use", "ok:@P1");
    expect_note(&w, "greet", "ok:\"hello repl\"@P1");
    expect_note(&w, "state", "ok:true@P1");
    expect_note(&w, "tags", "ok:\"m3/h\"@P1");
    expect_note(&w, "twinprint.out", "in twin");
    expect_note(&w, "back", "ok:@plant");
    /* A global set inside the twin lives in the twin, not at plant level. */
    expect_note(&w, "plantglobal", "ok:nil@plant");
    expect_note(&w, "nouse", "error:no twin \"P9\" (twins: P1; or plant)");
    expect_note(&w, "help", ".watch GLOB");
    expect_note(&w, "tagsglob", "ok:P1.sp = nil (no value yet)\nP1.x = ");
    expect_note(&w, "tagsglob", "\nP1.doubled = ");
    expect_note(&w, "twins", "P1       running   v");
    expect_note(&w, "drivers", "sim (sim)");
    expect_note(&w, "badcmd", "error:unknown command .frobnicate");
    expect_note(&w, "reload", "ok:");
    expect_note(&w, "reloadbad", "error:no twin \"P9\"");
    expect_note(&w, "complete.tags", "items:P1.doubled,P1.sp,P1.x");
    expect_note(&w, "complete.field", "items:P1.x.value,P1.x.values");
    expect_note(&w, "complete.global", "items:print");
    expect_note(&w, "complete.twintags", "items:tags.doubled");
    expect_note(&w, "complete.twinapi", "items:twin.on_change,twin.on_start");
    expect_note(&w, "complete.twinglobal", "items:greet");
    expect_note(&w, "complete.method", "items:tags.x:history");
    expect_note(&w, "alarms", "ok:P1.x_high  unacked  high P");
    expect_note(&w, "alarms", "  since 20");
    expect_note(&w, "alarms", "x above 4");
    expect_note(&w, "complete.ack", "items:P1.x_high");
    expect_note(&w, "ack", "ok:P1.x_high acknowledged");
    expect_note(&w, "alarms2", "ok:P1.x_high  acked  high");
    expect_note(&w, "alarms2", ", acked by repl\n    x above 4");
    expect_note(&w, "acknone", "error:");
    expect_note(&w, "ackusage", "error:usage: .ack TWIN.ALARM");
    expect_note(&w, "write", "ok:command #1 P1.sp := 50: done");
    cr_assert_null(seen(&w, "write.out"), "the outcome is the result, not a log line too");
    expect_note(&w, "written", "ok:50");
    expect_note(&w, "writehigh", "error:command #2 P1.sp := 500: rejected: ");
    expect_note(&w, "writetype", "error:command #3 P1.sp := \"fast\": rejected");
    expect_note(&w, "writeunknown", "error:command #4 P1.nope := 1: rejected: ");
    expect_note(&w, "writero", "rejected: tag is not writable");
    expect_note(&w, "writeusage", "error:usage: .write TAG VALUE");
    expect_note(&w, "shadowon", "ok:shadow mode on: ");
    expect_note(&w, "writeshadow", "ok:command #6 P1.sp := 60: shadow");
    expect_note(&w, "notwritten", "ok:50");
    expect_note(&w, "shadowoff", "ok:shadow mode off");
    expect_note(&w, "shadowbad", "error:usage: .shadow [on|off]");
    expect_note(&w, "complete.lib", "items:string.upper");
    expect_note(&w, "complete.cmd", "items:.watch");
    expect_note(&w, "complete.use", "items:P1");
    expect_note(&w, "complete.watch", "items:P1.doubled");
    /* Everything typed is in the journal, with where it ran and how it
     * ended; completion requests are not. */
    char *last = NULL, *audit = repl_audit(&w, &last);
    cr_assert(strstr(audit, "-|client 1 (socket) at plant: 1 + 1\n") != NULL, "%s", audit);
    cr_assert(strstr(audit, "-|client 1 (socket) at plant: error('boom') (failed)\n") != NULL, "%s",
              audit);
    cr_assert(strstr(audit, "P1|client 1 (socket) at P1: greet('repl')\n") != NULL, "%s", audit);
    cr_assert(strstr(audit, "at plant: .write P1.sp 50\n") != NULL, "%s", audit);
    cr_assert(strstr(audit, "at plant: .write P1.sp 500 (failed)\n") != NULL, "%s", audit);
    cr_assert(strstr(audit, "string.up") == NULL, "%s", audit);
    cr_assert_str_eq(last, ".shadow maybe");
    free(audit);
    free(last);
    free_world(&w);
}

static double eval_number(tc_t *c, const char *expr)
{
    char *r = tc_eval(c, expr, NULL);
    double v = r != NULL && strncmp(r, "ok:", 3) == 0 ? strtod(r + 3, NULL) : -1;
    free(r);
    return v;
}

static void sc_runaway(world_t *w)
{
    tc_t c;
    char *hello = NULL;
    if (!tc_open_unix(&c, w->sock) || !tc_hello(&c, NULL, &hello)) {
        note(w, "hello=(failed)");
        return;
    }
    free(hello);
    double before = eval_number(&c, "P1.x.ts");
    rec_eval(w, &c, "loop", "while true do end");
    rec_eval(w, &c, "pcall", "return pcall(function() while true do end end)");
    rec_eval(w, &c, "memory", "local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(100) end");
    rec_eval(w, &c, "use", ".use P1");
    rec_eval(w, &c, "twinloop", "while true do end");
    rec_eval(w, &c, "twinalive", "greet('still')");
    rec_eval(w, &c, "back", ".use plant");
    /* The plant keeps sampling: wait (bounded) for a newer sample. */
    double after = before;
    for (int i = 0; i < 200 && after <= before; i++) {
        usleep(20000);
        after = eval_number(&c, "P1.x.ts");
    }
    note(w, "sampling=%s", after > before && before > 0 ? "yes" : "no");
    /* The twin's handler still runs after the REPL's fault in its state. */
    char *r = tc_eval(&c, ".use P1", NULL);
    free(r);
    double n1 = eval_number(&c, "state.n");
    double n2 = n1;
    for (int i = 0; i < 200 && n2 <= n1; i++) {
        usleep(20000);
        n2 = eval_number(&c, "state.n");
    }
    note(w, "handlers=%s", n2 > n1 ? "yes" : "no");
    tc_close(&c);
}

Test(repl_server, runaway_loop_is_stopped_and_the_plant_keeps_sampling)
{
    world_t w;
    run_world(&w, sc_runaway, NULL, NULL);
    expect_note(&w, "loop", "error:stopped: instruction budget of 10000000 exceeded at repl:1");
    expect_note(&w, "pcall", "error:stopped: instruction budget");
    expect_note(&w, "memory", "error:stopped: memory cap");
    expect_note(&w, "twinloop", "error:stopped: instruction budget");
    expect_note(&w, "twinalive", "ok:\"hello still\"@P1");
    expect_note(&w, "sampling", "yes");
    expect_note(&w, "handlers", "yes");
    free_world(&w);
}

static void sc_malformed(world_t *w)
{
    tc_t a, b;
    char *hello = NULL;
    if (!tc_open_unix(&a, w->sock) || !tc_hello(&a, NULL, &hello)) {
        note(w, "hello=(failed)");
        return;
    }
    free(hello);
    rec_eval(w, &a, "a1", "1 + 2");
    /* Client b: a valid hello, then a frame whose payload is not a map. */
    if (!tc_open_unix(&b, w->sock) || !tc_hello(&b, NULL, &hello)) {
        note(w, "hellob=(failed)");
        return;
    }
    free(hello);
    tc_raw(&b, "\x00\x00\x00\x03\x93\x01\x02", 7);
    dp_repl_msg_t m;
    int rc = tc_recv(&b, &m);
    note(w, "b.error=%s:%s", rc == 1 ? dp_repl_type_name((int)m.type) : "none",
         rc == 1 && m.text ? m.text : "");
    if (rc == 1)
        dp_repl_msg_clear(&m);
    note(w, "b.closed=%s", tc_recv(&b, &m) == 0 ? "yes" : "no");
    tc_close(&b);
    /* Client a is unaffected. */
    rec_eval(w, &a, "a2", "P1.x.unit");

    /* Length over the limit, announced before any payload. */
    tc_t d;
    if (tc_open_unix(&d, w->sock) && tc_hello(&d, NULL, &hello)) {
        free(hello);
        tc_raw(&d, "\x7f\xff\xff\xff", 4);
        rc = tc_recv(&d, &m);
        note(w, "d.error=%s", rc == 1 && m.text ? m.text : "");
        if (rc == 1)
            dp_repl_msg_clear(&m);
        note(w, "d.closed=%s", tc_recv(&d, &m) == 0 ? "yes" : "no");
    }
    tc_close(&d);

    /* No hello first. */
    tc_t e;
    if (tc_open_unix(&e, w->sock)) {
        char *r = tc_eval(&e, "1", NULL);
        note(w, "e=%s", r ? r : "");
        free(r);
    }
    tc_close(&e);
    /* Wrong version. */
    tc_t f;
    if (tc_open_unix(&f, w->sock)) {
        dp_repl_msg_t h = {.type = DP_RM_HELLO, .version = 99};
        tc_send(&f, &h);
        rc = tc_recv(&f, &m);
        note(w, "f=%s", rc == 1 && m.text ? m.text : "");
        if (rc == 1)
            dp_repl_msg_clear(&m);
    }
    tc_close(&f);
    /* A server-only message from a client. */
    tc_t g;
    if (tc_open_unix(&g, w->sock) && tc_hello(&g, NULL, &hello)) {
        free(hello);
        dp_repl_msg_t res = {.type = DP_RM_RESULT, .id = 1, .ok = true, .text = "x"};
        tc_send(&g, &res);
        rc = tc_recv(&g, &m);
        note(w, "g=%s", rc == 1 && m.text ? m.text : "");
        if (rc == 1)
            dp_repl_msg_clear(&m);
    }
    tc_close(&g);
    /* A frame split across many writes still decodes. */
    dp_repl_msg_t ev = {.type = DP_RM_EVAL, .id = 99, .text = "'split ' .. 'frame'"};
    char *buf, *err = NULL;
    size_t len;
    if (dp_repl_encode(&ev, &buf, &len, &err) == 0) {
        for (size_t i = 0; i < len; i++) {
            tc_raw(&a, buf + i, 1);
            usleep(200);
        }
        free(buf);
        rc = tc_recv(&a, &m);
        note(w, "split=%s", rc == 1 && m.text ? m.text : "");
        if (rc == 1)
            dp_repl_msg_clear(&m);
    }
    free(err);
    rec_eval(w, &a, "a3", "'still here'");
    tc_close(&a);
}

Test(repl_server, a_malformed_frame_closes_only_its_connection)
{
    world_t w;
    run_world(&w, sc_malformed, NULL, NULL);
    expect_note(&w, "a1", "ok:3");
    expect_note(&w, "b.error", "error:malformed frame: the payload is not a msgpack map");
    expect_note(&w, "b.closed", "yes");
    expect_note(&w, "a2", "ok:\"m3/h\"");
    expect_note(&w, "d.error", "malformed frame: frame of 2147483647 bytes is over the");
    expect_note(&w, "d.closed", "yes");
    expect_note(&w, "e", "protocol-error:the first message must be \"hello\", got \"eval\"");
    expect_note(&w, "f", "protocol version 99 is not supported (this plant speaks version 1)");
    expect_note(&w, "g", "a client cannot send \"result\" messages");
    expect_note(&w, "split", "\"split frame\"");
    expect_note(&w, "a3", "ok:\"still here\"");
    free_world(&w);
}

static void sc_watch(world_t *w)
{
    tc_t c, other;
    char *hello = NULL;
    if (!tc_open_unix(&c, w->sock) || !tc_hello(&c, NULL, &hello)) {
        note(w, "hello=(failed)");
        return;
    }
    free(hello);
    if (!tc_open_unix(&other, w->sock) || !tc_hello(&other, NULL, &hello)) {
        note(w, "hello2=(failed)");
        return;
    }
    free(hello);
    dp_repl_msg_t m = {.type = DP_RM_EVAL, .id = 7, .text = ".watch P1.x"};
    tc_send(&c, &m);
    /* The current value, then at least three changes. */
    int lines = 0;
    dp_repl_msg_t r;
    while (lines < 4 && tc_recv(&c, &r) == 1) {
        if (r.type == DP_RM_OUT && r.id == 7) {
            if (lines == 0)
                note(w, "first=%s", r.text);
            else if (lines == 1)
                note(w, "change=%s", r.text);
            lines++;
        }
        dp_repl_msg_clear(&r);
    }
    note(w, "lines=%d", lines);
    /* Other requests are answered while the watch runs, on this client and others. */
    rec_eval(w, &other, "other", "2 * 21");
    dp_repl_msg_t cancel = {.type = DP_RM_CANCEL, .id = 7};
    tc_send(&c, &cancel);
    while (tc_recv(&c, &r) == 1) {
        bool end = r.type == DP_RM_RESULT && r.id == 7;
        if (end)
            note(w, "stopped=%s", r.text);
        dp_repl_msg_clear(&r);
        if (end)
            break;
    }
    /* A cancel for nothing running is ignored. */
    cancel.id = 12345;
    tc_send(&c, &cancel);
    rec_eval(w, &c, "after", "'after'");
    rec_eval(w, &c, "nomatch", ".watch Q*");
    tc_close(&c);
    tc_close(&other);
}

Test(repl_server, watch_until_cancel)
{
    world_t w;
    run_world(&w, sc_watch, NULL, NULL);
    expect_note(&w, "first", "P1.x = ");
    expect_note(&w, "first", "(watching 1 tag; Ctrl-C stops)");
    expect_note(&w, "change", "Z P1.x = ");
    expect_note(&w, "lines", "4");
    expect_note(&w, "other", "ok:42");
    expect_note(&w, "stopped", "(watch stopped after ");
    expect_note(&w, "after", "ok:\"after\"");
    expect_note(&w, "nomatch", "error:no tag matches \"Q*\"");
    free_world(&w);
}

static void sc_tcp(world_t *w)
{
    tc_t c;
    char *hello = NULL;
    if (tc_open_tcp(&c, w->tcp_port) && tc_hello(&c, NULL, &hello))
        note(w, "notoken=%s", hello);
    free(hello);
    hello = NULL;
    tc_close(&c);
    usleep(1100 * 1000); /* after a refusal, new TCP clients wait a second */
    if (tc_open_tcp(&c, w->tcp_port) && tc_hello(&c, "wrong-token", &hello))
        note(w, "wrong=%s", hello);
    free(hello);
    hello = NULL;
    tc_close(&c);
    /* Within the pause even the right token is turned away at once. */
    note(w, "paused=%s",
         tc_open_tcp(&c, w->tcp_port) && tc_hello(&c, "s3cret", &hello) ? hello : "closed");
    free(hello);
    hello = NULL;
    tc_close(&c);
    usleep(1100 * 1000);
    /* At most 16 TCP clients at once: the 17th is turned away. */
    tc_t many[17];
    for (int i = 0; i < 17; i++)
        tc_open_tcp(&many[i], w->tcp_port);
    usleep(200 * 1000); /* all accepted before the first hello */
    note(w, "seventeenth=%s", tc_hello(&many[16], "s3cret", &hello) ? hello : "closed");
    free(hello);
    hello = NULL;
    if (tc_hello(&many[0], "s3cret", &hello))
        note(w, "first=%s", hello);
    free(hello);
    hello = NULL;
    for (int i = 0; i < 17; i++)
        tc_close(&many[i]);
    usleep(200 * 1000); /* their places are free again */
    if (tc_open_tcp(&c, w->tcp_port) && tc_hello(&c, "s3cret", &hello)) {
        note(w, "right=%s", hello);
        rec_eval(w, &c, "eval", "40 + 2");
    }
    free(hello);
    tc_close(&c);
    /* The Unix socket needs no token. */
    if (tc_open_unix(&c, w->sock) && tc_hello(&c, NULL, &hello))
        note(w, "unix=%s", hello);
    free(hello);
    tc_close(&c);
}

Test(repl_server, tcp_needs_the_token)
{
    world_t w;
    run_world(&w, sc_tcp, "127.0.0.1:0", "s3cret");
    cr_assert_gt(w.tcp_port, 0);
    expect_note(&w, "notoken", "error:a token is required");
    expect_note(&w, "wrong", "error:wrong token");
    expect_note(&w, "paused", "closed");
    expect_note(&w, "seventeenth", "closed");
    expect_note(&w, "first", "hello:rt:plant");
    expect_note(&w, "right", "hello:rt:plant");
    expect_note(&w, "eval", "ok:42");
    expect_note(&w, "unix", "hello:rt:plant");
    free_world(&w);
}

Test(repl_server, refused_configurations)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua", plant_lua);
    th_write(dir, "p1.lua", p1_lua);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[512], sock[600], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    snprintf(sock, sizeof sock, "%s/repl.sock", dir);
    dp_plant_opts_t po = {.path = path, .loop = &loop, .data_dir = dir};
    dp_log_set_level(DP_LOG_WARN);
    dp_plant_t *p = dp_plant_open(&po, &err);
    cr_assert_not_null(p, "%s", err);

    /* TCP without a token. */
    dp_repl_opts_t ro = {.socket_path = sock, .listen = "127.0.0.1:0"};
    cr_assert_null(dp_repl_server_new(&loop, p, &ro, &err));
    cr_assert(strstr(err, "needs a token") != NULL, "%s", err);
    free(err);
    err = NULL;
    uv_run(&loop, UV_RUN_NOWAIT);
    /* A bad address. */
    ro = (dp_repl_opts_t){.socket_path = sock, .listen = "localhost", .token = "t"};
    cr_assert_null(dp_repl_server_new(&loop, p, &ro, &err));
    cr_assert(strstr(err, "expected HOST:PORT") != NULL, "%s", err);
    free(err);
    err = NULL;
    uv_run(&loop, UV_RUN_NOWAIT);
    /* A path too long for a Unix socket. */
    char longpath[300];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    ro = (dp_repl_opts_t){.socket_path = longpath};
    cr_assert_null(dp_repl_server_new(&loop, p, &ro, &err));
    cr_assert(strstr(err, "longer than") != NULL, "%s", err);
    free(err);
    err = NULL;
    /* A socket in use by a running server is not taken over; a stale one is. */
    ro = (dp_repl_opts_t){.socket_path = sock};
    dp_repl_server_t *s1 = dp_repl_server_new(&loop, p, &ro, &err);
    cr_assert_not_null(s1, "%s", err);
    cr_assert_null(dp_repl_server_new(&loop, p, &ro, &err));
    cr_assert(strstr(err, "another doppel is running") != NULL, "%s", err);
    free(err);
    err = NULL;
    dp_repl_server_close(s1);
    uv_run(&loop, UV_RUN_NOWAIT);
    dp_repl_server_free(s1);
    /* A regular file in the way is refused, not removed. */
    th_write(dir, "repl.sock", "not a socket");
    cr_assert_null(dp_repl_server_new(&loop, p, &ro, &err));
    cr_assert(strstr(err, "exists and is not a socket") != NULL, "%s", err);
    free(err);
    dp_plant_free(p);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    dp_log_set_level(DP_LOG_INFO);
    th_rmdir(dir);
}
