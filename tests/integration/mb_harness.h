/* Helpers for the Modbus integration tests: real peers (pymodbus, socat,
 * mbpoll) started as child processes on 127.0.0.1 and always stopped, and
 * plants run in real time on a libuv loop until a condition holds. Every
 * wait is bounded, so a broken peer fails the test instead of hanging it. */
#ifndef DP_MB_HARNESS_H
#define DP_MB_HARNESS_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
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

#include "runtime/log.h"
#include "drivers/driver.h"
#include "drivers/modbus/modbus.h"
#include "runtime/command.h"
#include "runtime/plant.h"

#define MB_PYTHON "/usr/bin/python3"

static inline const char *mb_src(void)
{
    const char *s = getenv("DP_SOURCE_DIR");
    return s != NULL ? s : ".";
}

/* Starts argv[0] with argv; stdout and stderr go to `log` (may be NULL). */
static inline pid_t mb_spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        if (log != NULL) {
            FILE *f = freopen(log, "a", stdout);
            (void)f;
            dup2(STDOUT_FILENO, STDERR_FILENO);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Stops a child (its whole process group) and reaps it. Accepts 0. */
static inline void mb_kill(pid_t *pid)
{
    if (*pid <= 0)
        return;
    kill(-*pid, SIGKILL);
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* A free TCP port on 127.0.0.1 (bound, read back, released). */
static inline int mb_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static inline bool mb_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Waits (at most 15 s) until something listens on the port. */
static inline void mb_wait_port(int port, pid_t pid)
{
    for (int i = 0; i < 1500; i++) {
        if (mb_port_open(port))
            return;
        int status;
        cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "peer exited before listening");
        usleep(10000);
    }
    cr_assert_fail("nothing listens on port %d after 15 s", port);
}

/* Starts tests/integration/mb_peer.py MODE WHERE [extra...]. */
static inline pid_t mb_peer(const char *mode, const char *where, const char *extra1,
                            const char *extra2, const char *log)
{
    char script[512];
    snprintf(script, sizeof script, "%s/tests/integration/mb_peer.py", mb_src());
    char *argv[] = {MB_PYTHON,      script,         (char *)mode, (char *)where,
                    (char *)extra1, (char *)extra2, NULL};
    return mb_spawn(argv, log);
}

/* Starts mb_peer.py MODE PORT (tcp, garbage, close) on 127.0.0.1 and waits
 * until it listens. */
static inline pid_t mb_peer_port(const char *mode, int port, const char *delay)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    pid_t pid = delay != NULL ? mb_peer(mode, p, "--delay", delay, "/dev/null")
                              : mb_peer(mode, p, NULL, NULL, "/dev/null");
    mb_wait_port(port, pid);
    return pid;
}

static inline pid_t mb_peer_tcp(int port, const char *delay)
{
    return mb_peer_port("tcp", port, delay);
}

/* ---- plants in real time ------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    dp_plant_t *plant;
    char *dir;
} mb_run_t;

static inline void mb_write(const char *dir, const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static inline void mb_open(mb_run_t *r, const char *plant_lua)
{
    char tmpl[] = "/tmp/doppel-mb-XXXXXX";
    r->dir = strdup(mkdtemp(tmpl));
    mb_write(r->dir, "plant.lua", plant_lua);
    mb_write(r->dir, "t.lua", "");
    cr_assert_eq(uv_loop_init(&r->loop), 0);
    char path[600], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", r->dir);
    dp_plant_opts_t o = {.path = path, .loop = &r->loop};
    r->plant = dp_plant_open(&o, &err);
    cr_assert_not_null(r->plant, "%s", err);
    cr_assert_eq(dp_plant_start(r->plant, &err), 0, "%s", err);
}

static inline void mb_close(mb_run_t *r)
{
    dp_plant_stop(r->plant);
    uv_run(&r->loop, UV_RUN_NOWAIT);
    dp_plant_free(r->plant);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&r->loop), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    cr_assert_eq(system(cmd), 0);
    free(r->dir);
}

static inline const dp_tag_t *mb_tag(mb_run_t *r, const char *name)
{
    dp_store_t *s = dp_plant_store(r->plant);
    int id = dp_store_find(s, name);
    cr_assert_geq(id, 0, "no tag %s", name);
    return dp_store_get(s, id);
}

typedef bool (*mb_cond_fn)(mb_run_t *r, void *ud);

static inline void mb_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until cond() holds; fails after `limit_s` seconds. */
static inline void mb_run_until(mb_run_t *r, mb_cond_fn cond, void *ud, double limit_s,
                                const char *what)
{
    uv_timer_t tick;
    uv_timer_init(&r->loop, &tick);
    uv_timer_start(&tick, mb_tick, 10, 10);
    uint64_t deadline = uv_hrtime() + (uint64_t)(limit_s * 1e9);
    bool ok = false;
    while (!(ok = cond(r, ud)) && uv_hrtime() < deadline)
        uv_run(&r->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&r->loop, UV_RUN_NOWAIT);
    cr_assert(ok, "not reached within %.0f s: %s", limit_s, what);
}

static inline bool mb_cond_quality(mb_run_t *r, void *ud)
{
    const char **want = ud; /* { tag, quality name } */
    const dp_tag_t *t = mb_tag(r, want[0]);
    /* A tag starts bad without a value or reason: "bad" means marked bad. */
    if (t->v.type == DP_NIL && t->reason == NULL)
        return false;
    return strcmp(dp_quality_name(t->quality), want[1]) == 0;
}

/* Runs until tag has the quality ("good", "bad", "uncertain"). */
static inline void mb_wait_quality(mb_run_t *r, const char *tag, const char *quality,
                                   double limit_s)
{
    const char *want[2] = {tag, quality};
    char what[200];
    snprintf(what, sizeof what, "%s quality %s", tag, quality);
    mb_run_until(r, mb_cond_quality, want, limit_s, what);
}

static inline bool mb_cond_writes(mb_run_t *r, void *ud)
{
    const void **w = ud; /* { tag, &count } */
    return mb_tag(r, w[0])->writes >= *(const uint64_t *)w[1];
}

/* Runs until the tag has had at least n samples. */
static inline void mb_wait_writes(mb_run_t *r, const char *tag, uint64_t n, double limit_s)
{
    const void *w[2] = {tag, &n};
    char what[200];
    snprintf(what, sizeof what, "%s has %llu samples", tag, (unsigned long long)n);
    mb_run_until(r, mb_cond_writes, w, limit_s, what);
}

static inline bool mb_cond_sleep(mb_run_t *r, void *ud)
{
    (void)r;
    return uv_hrtime() >= *(uint64_t *)ud;
}

/* Runs the loop for `s` seconds. */
static inline void mb_run_for(mb_run_t *r, double s)
{
    uint64_t until = uv_hrtime() + (uint64_t)(s * 1e9);
    mb_run_until(r, mb_cond_sleep, &until, s + 5, "sleep");
}

#endif
