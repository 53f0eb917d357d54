/* doppel: command-line entry point. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include <lauxlib.h>

#include "clock.h"
#include "cmd_repl.h"
#include "cmd_replay.h"
#include "cmd_test.h"
#include "cmd_export.h"
#include "http.h"
#include "log.h"
#include "persist.h"
#include "plant.h"
#include "repl_server.h"
#include "sandbox.h"

#define DEMO_PLANT "embed:examples/pump-station/plant.lua"

typedef struct {
    const char *data_dir;
    const char *log_level;
    bool virtual_time;
    const char *start;
    const char *run_for;
    bool no_watch;
    const char *eval;
    const char *connect;
    const char *repl_listen;
    const char *repl_cert, *repl_key;
    bool tls;
    const char *ca;
    const char *input, *speed, *from, *to, *out, *format; /* replay */
    bool recover_only;
} options_t;

typedef struct {
    const char *name;
    const char *args;
    const char *summary;
    const char *help;
    int (*run)(int argc, char **argv, options_t *o);
    /* The command parses its own options: everything after its name is
     * passed to run() as is. */
    bool raw_args;
} command_t;

static int cmd_run(int argc, char **argv, options_t *o);
static int cmd_check(int argc, char **argv, options_t *o);
static int cmd_version(int argc, char **argv, options_t *o);
static int cmd_help(int argc, char **argv, options_t *o);
static int cmd_repl(int argc, char **argv, options_t *o);
static int cmd_test(int argc, char **argv, options_t *o);
static int cmd_replay(int argc, char **argv, options_t *o);
static int cmd_export(int argc, char **argv, options_t *o);

static const command_t commands[] = {
    {"run", "[PLANT.lua]", "run a plant (no argument: the bundled demo pump station)",
     "Runs the plant: devices start, twins run, script files are watched and\n"
     "reloaded when they change. Stops on Ctrl-C or SIGTERM; SIGHUP reloads all twins.\n\n"
     "Options:\n"
     "  --virtual          run in virtual time, as fast as possible (needs --for)\n"
     "  --start TIME       virtual start time (ISO 8601 UTC or epoch seconds;\n"
     "                     default 2026-01-01T00:00:00Z)\n"
     "  --for DURATION     stop after this long (\"90s\", \"10min\", \"1d\")\n"
     "  --no-watch         do not reload twins when their files change\n"
     "  --repl-listen HOST:PORT  also accept REPL clients over TCP (token from\n"
     "                     DOPPEL_REPL_TOKEN, required; plain text on loopback only)\n"
     "  --repl-cert FILE, --repl-key FILE  TLS for that listener (PEM files)\n"
     "  --recover-only     recover the data directory (snapshot + journal), write a\n"
     "                     fresh snapshot and exit without starting devices\n",
     cmd_run},
    {"check", "FILE...", "validate plant files and twin scripts without running them",
     "A plant file is read, its devices opened without I/O, its tags declared and\n"
     "its twins' scripts loaded (on_start does not run). Any other Lua file is\n"
     "compiled. Prints one line per file; the exit status is 0 only if all are valid.\n",
     cmd_check},
    {"repl", "", "attach to a running plant: evaluate Lua, inspect and watch tags",
     "Connects to the plant running with the same data dir (DATA_DIR/repl.sock) and\n"
     "reads Lua or .commands (.help lists them) with history and Tab completion.\n\n"
     "Options:\n"
     "  -e, --eval EXPR    evaluate EXPR, print the result and exit (status 1 on error)\n"
     "  --connect HOST:PORT  attach over TCP (doppel run --repl-listen); the token is\n"
     "                     read from DOPPEL_REPL_TOKEN\n"
     "  --tls              speak TLS, checking the plant's certificate against the\n"
     "                     system's CAs and HOST\n"
     "  --ca FILE          speak TLS, trusting the CA certificate(s) in FILE\n",
     cmd_repl},
    {"test", "[PATH...]", "run twin tests (*_test.lua) in virtual time",
     "Finds *_test.lua files under each PATH (files or directories, searched\n"
     "recursively; none: the current directory) and runs every case in a fresh\n"
     "plant in virtual time. Prints one line per case and \"N passed, N failed\";\n"
     "the exit status is 0 if all passed, 1 if any failed, 2 for a bad PATH or\n"
     "an unreadable test file.\n"
     "Twin log lines below warn are hidden unless --log-level is given.\n"
     "See docs/testing.md for the test API.\n",
     cmd_test},
    {"replay", "PLANT", "run a plant's twins over a recording (--input FILE)",
     "Runs the plant's twins over a CSV recording or a journal in virtual time\n"
     "(devices are not started; commands never reach a device) and writes derived\n"
     "tag changes, alarms, events and commands as CSV or msgpack. The same plant\n"
     "and input give byte-identical output. See docs/replay.md for the formats.\n\n"
     "Options:\n"
     "  --input FILE|DIR   the recording: CSV, long (timestamp,tag,value[,quality])\n"
     "                     or wide (timestamp,TAG,TAG...); or a journal folder\n"
     "                     (a data dir, or its journal/ folder)\n"
     "  --speed max|N      as fast as possible (default) or N times real time\n"
     "  --from TIME        skip samples before TIME (ISO 8601 UTC or epoch seconds)\n"
     "  --to TIME          stop at TIME\n"
     "  --out FILE         write there (default: standard output)\n"
     "  --format csv|msgpack  default: msgpack for FILE.msgpack, else csv\n",
     cmd_replay},
    {"export", "--csv", "write journal contents as CSV", DP_CMD_EXPORT_HELP, cmd_export, true},
    {"version", "", "print the version", "Prints doppel's version and its libraries'.\n",
     cmd_version},
    {"help", "[COMMAND]", "show help for a command", "Shows help.\n", cmd_help},
};

static const char *const global_help =
    "Global options:\n"
    "  --data-dir DIR     where doppel keeps its data (default ./data)\n"
    "  --log-level LEVEL  debug, info, warn, error or off (default info)\n"
    "  -h, --help         help for the command\n";

static void usage(FILE *out)
{
    fprintf(out,
            "doppel %s: scriptable digital twins for industrial gateways\n\n"
            "Usage: doppel COMMAND [OPTIONS] [ARGS]\n\nCommands:\n",
            DP_VERSION);
    for (size_t i = 0; i < DP_ARRAY_LEN(commands); i++)
        fprintf(out, "  %-8s %-12s %s\n", commands[i].name, commands[i].args, commands[i].summary);
    fprintf(out, "\n%s\nRun 'doppel help COMMAND' for a command's options.\n", global_help);
}

static void command_help(const command_t *c, FILE *out)
{
    fprintf(out, "Usage: doppel %s [OPTIONS] %s\n\n%s.\n\n%s\n%s", c->name, c->args, c->summary,
            c->help, global_help);
}

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < DP_ARRAY_LEN(commands); i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

/* ---- run ------------------------------------------------------------- */

typedef struct {
    dp_plant_t *plant;
    dp_repl_server_t *repl;
    dp_http_t *http;
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t stop_timer;
    bool stopping;
} runner_t;

static void close_all(runner_t *r)
{
    if (r->stopping)
        return;
    r->stopping = true;
    dp_repl_server_close(r->repl);
    dp_http_stop(r->http);
    dp_plant_stop(r->plant);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    uv_close((uv_handle_t *)&r->sighup, NULL);
    uv_close((uv_handle_t *)&r->stop_timer, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    runner_t *r = h->data;
    if (signum == SIGHUP) {
        dp_log_info(NULL, "SIGHUP: reloading all twins");
        dp_plant_reload(r->plant, NULL, NULL);
        return;
    }
    dp_log_info(NULL, "%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
    close_all(r);
}

static void on_stop_timer(uv_timer_t *h)
{
    runner_t *r = h->data;
    dp_log_info(NULL, "run time elapsed: stopping");
    close_all(r);
}

static int ensure_dir(const char *dir)
{
    if (mkdir(dir, 0750) == 0 || errno == EEXIST)
        return 0;
    fprintf(stderr, "doppel: cannot create data directory %s: %s\n", dir, strerror(errno));
    return -1;
}

static void log_event_summary(const dp_event_t *ev, void *ud)
{
    int *alarms = ud;
    if (strcmp(ev->kind, "alarm") == 0)
        (*alarms)++;
}

static int cmd_run(int argc, char **argv, options_t *o)
{
    if (argc > 1) {
        fprintf(stderr, "doppel run: expected one plant file, got %d arguments\n", argc);
        return 2;
    }
    const char *path = argc == 1 ? argv[0] : DEMO_PLANT;
    dp_time_t run_for = 0, start = 0;
    char *err = NULL;
    if (o->run_for != NULL && dp_duration_parse(o->run_for, &run_for, &err) < 0) {
        fprintf(stderr, "doppel run: --for: %s\n", err);
        free(err);
        return 2;
    }
    if (dp_time_parse(o->start != NULL ? o->start : "2026-01-01T00:00:00Z", &start, &err) < 0) {
        fprintf(stderr, "doppel run: --start: %s\n", err);
        free(err);
        return 2;
    }
    if (o->start != NULL && !o->virtual_time) {
        fprintf(stderr, "doppel run: --start needs --virtual\n");
        return 2;
    }
    if (o->virtual_time && run_for <= 0) {
        fprintf(stderr, "doppel run: --virtual needs --for DURATION (virtual time never waits)\n");
        return 2;
    }
    if (ensure_dir(o->data_dir) < 0)
        return 1;

    if (o->virtual_time) {
        dp_plant_opts_t po = {.path = path, .start = start, .data_dir = o->data_dir};
        dp_plant_t *plant = dp_plant_open(&po, &err);
        if (plant == NULL) {
            fprintf(stderr, "doppel run: %s\n", err);
            free(err);
            return 1;
        }
        dp_log_set_clock(dp_plant_clock(plant));
        int alarms = 0;
        dp_plant_on_event(plant, log_event_summary, &alarms);
        if (dp_plant_start(plant, &err) < 0) {
            fprintf(stderr, "doppel run: %s\n", err);
            free(err);
            dp_log_set_clock(NULL);
            dp_plant_free(plant);
            return 1;
        }
        uint64_t t0 = uv_hrtime();
        int64_t steps = dp_plant_run_until(plant, start + run_for);
        double secs = (double)(uv_hrtime() - t0) / 1e9;
        char d[32];
        dp_duration_format(run_for, d, sizeof d);
        dp_log_info(NULL,
                    "virtual run of %s done: %lld timer events, %d alarm events, %.2f s "
                    "wall (%.0fx real time)",
                    d, (long long)steps, alarms, secs,
                    secs > 0 ? (double)run_for / 1e6 / secs : 0.0);
        dp_plant_stop(plant);
        dp_log_set_clock(NULL);
        dp_plant_free(plant);
        return 0;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    dp_plant_opts_t po = {
        .path = path, .loop = &loop, .watch = !o->no_watch, .data_dir = o->data_dir};
    runner_t r = {0};
    r.plant = dp_plant_open(&po, &err);
    int status = 0;
    if (r.plant == NULL) {
        fprintf(stderr, "doppel run: %s\n", err);
        free(err);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    if (o->recover_only) {
        /* Recovery ran in dp_plant_open; keep its result as a snapshot. */
        struct dp_persist *ps = dp_plant_persist(r.plant);
        if (ps == NULL) {
            fprintf(stderr, "doppel run: --recover-only: this plant does not journal\n");
            status = 1;
        } else if (dp_persist_snapshot(ps, r.plant, &err) < 0) {
            fprintf(stderr, "doppel run: --recover-only: %s\n", err);
            free(err);
            status = 1;
        } else {
            dp_log_info(NULL, "recovered; snapshot written");
        }
        dp_plant_stop(r.plant);
    } else if (dp_plant_start(r.plant, &err) < 0) {
        fprintf(stderr, "doppel run: %s\n", err);
        free(err);
        dp_plant_stop(r.plant);
        status = 1;
    } else {
        uv_signal_init(&loop, &r.sigint);
        uv_signal_init(&loop, &r.sigterm);
        uv_signal_init(&loop, &r.sighup);
        uv_timer_init(&loop, &r.stop_timer);
        r.sigint.data = r.sigterm.data = r.sighup.data = r.stop_timer.data = &r;
        uv_signal_start(&r.sigint, on_signal, SIGINT);
        uv_signal_start(&r.sigterm, on_signal, SIGTERM);
        uv_signal_start(&r.sighup, on_signal, SIGHUP);
        if (run_for > 0)
            uv_timer_start(&r.stop_timer, on_stop_timer, (uint64_t)(run_for / 1000), 0);
        char sock[PATH_MAX];
        snprintf(sock, sizeof sock, "%s/repl.sock", o->data_dir);
        dp_repl_opts_t ro = {.socket_path = sock,
                             .listen = o->repl_listen,
                             .token = getenv("DOPPEL_REPL_TOKEN"),
                             .cert = o->repl_cert,
                             .key = o->repl_key};
        r.repl = dp_repl_server_new(&loop, r.plant, &ro, &err);
        if (r.repl == NULL) {
            fprintf(stderr, "doppel run: %s\n", err);
            free(err);
            close_all(&r);
            status = 1;
        } else if (dp_plant_http(r.plant) != NULL) {
            /* The HTTP server is north-bound: when it cannot start (port
             * taken), the plant runs on without it and says so. */
            r.http = dp_http_start(&loop, r.plant, dp_plant_http(r.plant), &err);
            if (r.http == NULL) {
                dp_log_error(NULL, "%s; running without HTTP", err);
                free(err);
                err = NULL;
            }
        }
        if (strcmp(path, DEMO_PLANT) == 0)
            dp_log_info(NULL, "this is the bundled demo; copy examples/pump-station from the "
                              "source tree to edit it");
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    dp_plant_free(r.plant);
    uv_run(&loop, UV_RUN_DEFAULT);
    dp_repl_server_free(r.repl);
    if (uv_loop_close(&loop) != 0)
        dp_log_warn(NULL, "loop closed with handles still open");
    return status;
}

/* ---- check ----------------------------------------------------------- */

typedef struct {
    bool declared;
} probe_t;

/* True when the file declares plant, device or twin at its top level: such a
 * file is a plant file; anything else is checked as a twin script or module. */
static bool looks_like_plant(const char *code)
{
    const char *words[] = {"plant", "device", "twin"};
    for (const char *line = code; line != NULL && *line; line = strchr(line, '\n')) {
        while (*line == '\n')
            line++;
        for (size_t i = 0; i < DP_ARRAY_LEN(words); i++) {
            size_t n = strlen(words[i]);
            if (strncmp(line, words[i], n) == 0) {
                const char *p = line + n;
                while (*p == ' ' || *p == '\t')
                    p++;
                if (*p == '{' || *p == '"' || *p == '\'' || *p == '(')
                    return true;
            }
        }
    }
    return false;
}

static int check_one(const char *path, options_t *o)
{
    char *err = NULL;
    size_t len = 0;
    char *code = dp_source_read(path, &len, &err);
    if (code == NULL) {
        printf("%s: error: %s\n", path, err);
        free(err);
        return 1;
    }
    bool plant = looks_like_plant(code);
    if (!plant) {
        dp_sandbox_opts_t so = {.name = "check"};
        dp_sandbox_t *sb = dp_sandbox_new(&so);
        char chunk[PATH_MAX + 1];
        snprintf(chunk, sizeof chunk, "@%s", path);
        int rc = dp_sandbox_load(sb, code, len, chunk, &err);
        dp_sandbox_free(sb);
        free(code);
        if (rc < 0) {
            printf("%s: error: %s\n", path, err);
            free(err);
            return 1;
        }
        printf("%s: ok (Lua syntax; check the plant that uses it for a full check)\n", path);
        return 0;
    }
    free(code);
    dp_plant_opts_t po = {.path = path, .check_only = true, .data_dir = o->data_dir};
    dp_log_level_t level = dp_log_get_level();
    if (level < DP_LOG_WARN)
        dp_log_set_level(DP_LOG_WARN);
    dp_plant_t *p = dp_plant_open(&po, &err);
    dp_log_set_level(level);
    if (p == NULL) {
        printf("%s: error: %s\n", path, err);
        free(err);
        return 1;
    }
    printf("%s: ok (plant %s: %d device%s, %d twin%s, %d tags)\n", path, dp_plant_name(p),
           dp_plant_device_count(p), dp_plant_device_count(p) == 1 ? "" : "s",
           dp_plant_twin_count(p), dp_plant_twin_count(p) == 1 ? "" : "s",
           dp_store_count(dp_plant_store(p)));
    dp_plant_free(p);
    return 0;
}

static int cmd_check(int argc, char **argv, options_t *o)
{
    if (argc == 0) {
        fprintf(stderr, "doppel check: no files given (usage: doppel check FILE...)\n");
        return 2;
    }
    int failed = 0;
    for (int i = 0; i < argc; i++)
        failed += check_one(argv[i], o);
    return failed ? 1 : 0;
}

/* ---- test ------------------------------------------------------------ */

static int cmd_test(int argc, char **argv, options_t *o)
{
    return dp_cmd_test(argc, argv, o->log_level == NULL);
}

static int cmd_replay(int argc, char **argv, options_t *o)
{
    return dp_cmd_replay(argc, argv, o->input, o->speed, o->from, o->to, o->out, o->format);
}

/* ---- version, help --------------------------------------------------- */

static int cmd_version(int argc, char **argv, options_t *o)
{
    (void)argv;
    (void)o;
    if (argc > 0) {
        fprintf(stderr, "doppel version: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    printf("doppel %s (%s, libuv %s)\n", DP_VERSION, LUA_RELEASE, uv_version_string());
    return 0;
}

static int cmd_help(int argc, char **argv, options_t *o)
{
    (void)o;
    if (argc == 0) {
        usage(stdout);
        return 0;
    }
    const command_t *c = find_command(argv[0]);
    if (c == NULL) {
        fprintf(stderr, "doppel help: unknown command \"%s\" (try 'doppel help')\n", argv[0]);
        return 2;
    }
    command_help(c, stdout);
    return 0;
}

/* ---- repl -------------------------------------------------------------- */

static int cmd_repl(int argc, char **argv, options_t *o)
{
    dp_repl_client_opts_t ro = {.data_dir = o->data_dir,
                                .eval = o->eval,
                                .connect = o->connect,
                                .tls = o->tls || o->ca != NULL,
                                .ca = o->ca};
    return dp_cmd_repl(argc, argv, &ro);
}

/* ---- export ---------------------------------------------------------- */

static int cmd_export(int argc, char **argv, options_t *o)
{
    return dp_cmd_export(argc, argv, o->data_dir);
}

/* ---- option parsing -------------------------------------------------- */

typedef struct {
    const char *name;
    bool has_value;
    size_t offset;        /* into options_t: const char * or bool */
    const char *commands; /* space-separated commands accepting it; NULL: all */
} option_t;

static const option_t option_table[] = {
    {"data-dir", true, offsetof(options_t, data_dir), NULL},
    {"log-level", true, offsetof(options_t, log_level), NULL},
    {"virtual", false, offsetof(options_t, virtual_time), "run"},
    {"start", true, offsetof(options_t, start), "run"},
    {"for", true, offsetof(options_t, run_for), "run"},
    {"no-watch", false, offsetof(options_t, no_watch), "run"},
    {"eval", true, offsetof(options_t, eval), "repl"},
    {"connect", true, offsetof(options_t, connect), "repl"},
    {"repl-listen", true, offsetof(options_t, repl_listen), "run"},
    {"repl-cert", true, offsetof(options_t, repl_cert), "run"},
    {"repl-key", true, offsetof(options_t, repl_key), "run"},
    {"tls", false, offsetof(options_t, tls), "repl"},
    {"ca", true, offsetof(options_t, ca), "repl"},
    {"input", true, offsetof(options_t, input), "replay"},
    {"speed", true, offsetof(options_t, speed), "replay"},
    {"from", true, offsetof(options_t, from), "replay"},
    {"to", true, offsetof(options_t, to), "replay"},
    {"out", true, offsetof(options_t, out), "replay"},
    {"format", true, offsetof(options_t, format), "replay"},
    {"recover-only", false, offsetof(options_t, recover_only), "run"},
};

static bool accepts(const option_t *opt, const char *cmd)
{
    if (opt->commands == NULL)
        return true;
    size_t n = strlen(cmd);
    for (const char *p = opt->commands; (p = strstr(p, cmd)) != NULL; p += n) {
        if ((p == opt->commands || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    }
    return false;
}

int main(int argc, char **argv)
{
    options_t o = {.data_dir = "data"};
    const command_t *cmd = NULL;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int nargs = 0;
    bool want_help = false;
    bool only_args = false;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_args || a[0] != '-' || a[1] == '\0') {
            if (cmd == NULL && !only_args) {
                cmd = find_command(a);
                if (cmd == NULL) {
                    fprintf(stderr, "doppel: unknown command \"%s\" (try 'doppel help')\n", a);
                    status = 2;
                    goto out;
                }
                while (cmd->raw_args && i + 1 < argc) {
                    if (strcmp(argv[i + 1], "-h") == 0 || strcmp(argv[i + 1], "--help") == 0)
                        want_help = true;
                    args[nargs++] = argv[++i];
                }
            } else {
                args[nargs++] = argv[i];
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = cmd != NULL;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            want_help = true;
            continue;
        }
        if (strcmp(a, "-e") == 0)
            a = "--eval";
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "doppel: unknown option \"%s\" (try 'doppel help')\n", a);
            status = 2;
            goto out;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
        const option_t *opt = NULL;
        for (size_t k = 0; k < DP_ARRAY_LEN(option_table); k++) {
            if (strcmp(option_table[k].name, name) == 0)
                opt = &option_table[k];
        }
        const char *where = cmd != NULL ? cmd->name : "doppel";
        if (opt == NULL || (cmd != NULL && !accepts(opt, cmd->name))) {
            fprintf(stderr, "doppel%s%s: unknown option \"--%s\" (try 'doppel help%s%s')\n",
                    cmd ? " " : "", cmd ? cmd->name : "", name, cmd ? " " : "",
                    cmd ? cmd->name : "");
            status = 2;
            goto out;
        }
        if (opt->has_value) {
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (v == NULL || v[0] == '\0') {
                fprintf(stderr, "%s: option \"--%s\" needs a value\n", where, name);
                status = 2;
                goto out;
            }
            *(const char **)((char *)&o + opt->offset) = v;
        } else {
            if (eq != NULL) {
                fprintf(stderr, "%s: option \"--%s\" takes no value\n", where, name);
                status = 2;
                goto out;
            }
            *(bool *)((char *)&o + opt->offset) = true;
        }
    }
    if (cmd == NULL) {
        usage(want_help ? stdout : stderr);
        status = want_help ? 0 : 2;
        goto out;
    }
    if (want_help) {
        command_help(cmd, stdout);
        goto out;
    }
    /* Options given before the command must also suit it. */
    for (size_t k = 0; k < DP_ARRAY_LEN(option_table); k++) {
        const option_t *opt = &option_table[k];
        bool set = opt->has_value ? *(const char **)((char *)&o + opt->offset) != NULL
                                  : *(bool *)((char *)&o + opt->offset);
        if (set && !accepts(opt, cmd->name) && strcmp(opt->name, "data-dir") != 0) {
            fprintf(stderr, "doppel %s: unknown option \"--%s\"\n", cmd->name, opt->name);
            status = 2;
            goto out;
        }
    }
    if (o.log_level != NULL) {
        dp_log_level_t level;
        if (dp_log_parse_level(o.log_level, &level) < 0) {
            fprintf(stderr,
                    "doppel: --log-level: unknown level \"%s\" (debug, info, warn, error, off)\n",
                    o.log_level);
            status = 2;
            goto out;
        }
        dp_log_set_level(level);
    }
    status = cmd->run(nargs, args, &o);
out:
    free(args);
    return status;
}
