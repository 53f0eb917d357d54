/* Helpers shared by the unit tests: temporary plant folders and plants in
 * virtual time. Header-only so every test binary stays one file. */
#ifndef DP_TEST_HARNESS_H
#define DP_TEST_HARNESS_H

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/log.h"
#include "runtime/lmsgpack.h"
#include "runtime/plant.h"

/* 2026-01-01T00:00:00Z */
#define T0 INT64_C(1767225600000000)

static inline char *th_tmpdir(void)
{
    char tmpl[] = "/tmp/doppel-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    cr_assert_not_null(d);
    return strdup(d);
}

static inline void th_write(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* Write and rename, as editors do, so watchers see one complete file. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp~", path);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f, "cannot write %s", tmp);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rename(tmp, path), 0);
}

static inline void th_rmdir(char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    free(dir);
}

/* Opens dir/plant.lua in virtual time starting at T0; fails the test on error. */
static inline dp_plant_t *th_open(const char *dir)
{
    char path[512], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    dp_plant_opts_t o = {.path = path, .start = T0};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_not_null(p, "plant did not open: %s", err ? err : "?");
    cr_assert_eq(dp_plant_start(p, &err), 0, "plant did not start: %s", err ? err : "?");
    return p;
}

/* Opens and expects failure; returns the message (caller frees). */
static inline char *th_open_fails(const char *dir)
{
    char path[512], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    dp_plant_opts_t o = {.path = path, .start = T0};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_null(p, "plant opened but should not have");
    cr_assert_not_null(err);
    return err;
}

static inline double th_num(dp_plant_t *p, const char *tag)
{
    int id = dp_store_find(dp_plant_store(p), tag);
    cr_assert_geq(id, 0, "no tag %s", tag);
    const dp_tag_t *t = dp_store_get(dp_plant_store(p), id);
    cr_assert_eq(t->v.type, DP_NUM, "tag %s holds no number", tag);
    return t->v.u.n;
}

static inline void th_set(dp_plant_t *p, const char *tag, double v, dp_time_t ts)
{
    int id = dp_store_find(dp_plant_store(p), tag);
    cr_assert_geq(id, 0, "no tag %s", tag);
    dp_value_t val = dp_num(v);
    cr_assert_eq(dp_store_write(dp_plant_store(p), id, &val, ts, DP_Q_GOOD), 0);
}

/* Evaluates a Lua expression in a twin's live state and returns it as a number. */
static inline double th_eval(dp_plant_t *p, const char *twin, const char *expr)
{
    dp_twin_t *tw = dp_plant_twin(p, twin);
    cr_assert_not_null(tw);
    dp_sandbox_t *sb = dp_twin_sandbox(tw);
    cr_assert_not_null(sb);
    lua_State *L = dp_sandbox_state(sb);
    char code[512], *err = NULL;
    snprintf(code, sizeof code, "return %s", expr);
    cr_assert_eq(dp_sandbox_load(sb, code, strlen(code), "=test", &err), 0, "%s", err);
    cr_assert_eq(dp_sandbox_call(sb, 0, 1, &err, NULL), DP_SB_OK, "%s: %s", expr, err);
    cr_assert(lua_isnumber(L, -1), "%s is not a number", expr);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Collects log lines so tests can check what was reported. */
typedef struct {
    char lines[64][512];
    int n;
} th_log_t;

static inline void th_log_hook(dp_log_level_t level, const char *twin, const char *msg, void *ud)
{
    (void)level;
    th_log_t *l = ud;
    if (l->n < 64)
        snprintf(l->lines[l->n++], sizeof l->lines[0], "[%s] %s", twin ? twin : "-", msg);
}

static inline bool th_logged(const th_log_t *l, const char *needle)
{
    for (int i = 0; i < l->n; i++) {
        if (strstr(l->lines[i], needle) != NULL)
            return true;
    }
    return false;
}

#endif
