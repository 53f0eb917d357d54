/* doppel test: finds *_test.lua files and runs every case of every file, each
 * in a fresh sandbox (the file runs again) and a fresh plant in virtual time.
 *
 * The Lua side (stdlib/test.lua) collects cases and implements the case
 * object and assertions; this file runs files and cases and gives each case
 * a host userdata whose methods reach the plant: build it, write samples,
 * advance time, read tags, events, commands and twin state. Host methods
 * return `true, result` or `false, message`, so the Lua side raises the error
 * at the line of the test that made the call. */
#include "cmd_test.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "clock.h"
#include "lmsgpack.h"
#include "log.h"
#include "plant.h"
#include "recording.h"
#include "sandbox.h"
#include "store.h"
#include "twin.h"

#define HOST_MT       "doppel.test.host"
#define DEFAULT_START "2026-01-01T00:00:00Z"
/* A case's own Lua code (not the twins it drives) gets a large budget: a test
 * may feed many samples from a loop; a runaway loop still ends. */
#define TEST_BUDGET UINT64_C(200000000)
#define TEST_MEMORY ((size_t)512 << 20)

typedef struct {
    dp_time_t ts;
    char *twin;
    char *kind;
    char *text;
    char *payload;
    size_t payload_len;
} tevent_t;

typedef struct {
    dp_time_t ts, done_ts;
    char *tag, *origin, *reason;
    const char *outcome;
    dp_value_t value; /* a string value is owned */
} tcmd_t;

typedef struct {
    const char *file; /* the test file, as shown */
    char *dir;        /* its folder: plants, scripts and recordings are found there */
    dp_time_t start;
    dp_clock_t *sb_clock; /* the test sandbox's clock, kept at the plant's time */
    dp_plant_t *plant;
    tevent_t *events;
    size_t nevents, capevents;
    tcmd_t *cmds;
    size_t ncmds, capcmds;
    char errors[1024]; /* the first error lines logged during the case */
} tcase_t;

typedef struct {
    tcase_t *c;
} host_t;

/* ---- helpers ------------------------------------------------------------ */

static int fail(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns false, message (for the Lua side to raise at the test's line). */
static int fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushboolean(L, 0);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return 2;
}

static tcase_t *check_case(lua_State *L)
{
    host_t *h = luaL_checkudata(L, 1, HOST_MT);
    if (h->c == NULL)
        luaL_error(L, "this test case has finished");
    return h->c;
}

static void sync_clock(tcase_t *c)
{
    if (c->plant != NULL) {
        dp_time_t now = dp_clock_now(dp_plant_clock(c->plant));
        if (now > dp_clock_now(c->sb_clock))
            dp_clock_set(c->sb_clock, now);
    }
}

static char *resolve(const tcase_t *c, const char *rel)
{
    if (rel[0] == '/' || strncmp(rel, "embed:", 6) == 0 || strcmp(c->dir, ".") == 0)
        return dp_xstrdup(rel);
    return dp_xasprintf("%s/%s", c->dir, rel);
}

static void on_event(const dp_event_t *ev, void *ud)
{
    tcase_t *c = ud;
    if (c->nevents == c->capevents) {
        c->capevents = c->capevents ? c->capevents * 2 : 16;
        c->events = dp_xrealloc(c->events, sizeof *c->events * c->capevents);
    }
    tevent_t *e = &c->events[c->nevents++];
    e->ts = ev->ts;
    e->twin = ev->twin != NULL ? dp_xstrdup(ev->twin) : NULL;
    e->kind = dp_xstrdup(ev->kind);
    e->text = dp_xstrdup(ev->text != NULL ? ev->text : "");
    e->payload = NULL;
    e->payload_len = 0;
    if (ev->payload != NULL && ev->payload_len > 0) {
        e->payload = dp_xmalloc(ev->payload_len);
        memcpy(e->payload, ev->payload, ev->payload_len);
        e->payload_len = ev->payload_len;
    }
}

static void on_command(const dp_cmd_t *cmd, void *ud)
{
    tcase_t *c = ud;
    if (c->ncmds == c->capcmds) {
        c->capcmds = c->capcmds ? c->capcmds * 2 : 16;
        c->cmds = dp_xrealloc(c->cmds, sizeof *c->cmds * c->capcmds);
    }
    tcmd_t *k = &c->cmds[c->ncmds++];
    k->ts = cmd->ts;
    k->done_ts = cmd->done_ts;
    k->tag = dp_xstrdup(cmd->tag);
    k->origin = dp_xstrdup(cmd->origin ? cmd->origin : "");
    k->reason = dp_xstrdup(cmd->reason ? cmd->reason : "");
    k->outcome = dp_cmd_outcome_name(cmd->outcome);
    k->value = cmd->value;
    if (cmd->value.type == DP_STR)
        k->value.u.s = dp_xstrdup(cmd->value.u.s);
}

/* Keeps the first error lines logged during a case, to show with its failure. */
static void on_log(dp_log_level_t level, const char *twin, const char *msg, void *ud)
{
    tcase_t *c = ud;
    size_t used = strlen(c->errors);
    if (level < DP_LOG_ERROR || used + 2 >= sizeof c->errors)
        return;
    snprintf(c->errors + used, sizeof c->errors - used, "%s[%s] %s", used ? "\n" : "",
             twin ? twin : "plant", msg);
}

static void case_free(tcase_t *c)
{
    if (c->plant != NULL) {
        dp_log_set_clock(NULL);
        dp_plant_free(c->plant);
    }
    for (size_t i = 0; i < c->nevents; i++) {
        free(c->events[i].twin);
        free(c->events[i].kind);
        free(c->events[i].text);
        free(c->events[i].payload);
    }
    free(c->events);
    for (size_t i = 0; i < c->ncmds; i++) {
        free(c->cmds[i].tag);
        free(c->cmds[i].origin);
        free(c->cmds[i].reason);
        if (c->cmds[i].value.type == DP_STR)
            free(c->cmds[i].value.u.s);
    }
    free(c->cmds);
    free(c->dir);
    dp_clock_free(c->sb_clock);
}

static int need_plant(lua_State *L, tcase_t *c)
{
    if (c->plant == NULL)
        return fail(L, "no plant in this case: call t:plant(file) or t:twin { ... } first");
    return 0;
}

/* Looks up a tag by name; on failure pushes false, message. */
static int find_tag(lua_State *L, tcase_t *c, const char *name, int *id)
{
    dp_store_t *store = dp_plant_store(c->plant);
    *id = dp_store_find(store, name);
    if (*id >= 0)
        return 0;
    const char *dot = strchr(name, '.');
    if (dot == NULL)
        return fail(L, "no tag \"%s\" (tags are named twin.tag, e.g. P101.flow)", name);
    /* Name the twin's tags, which is usually the fastest way to spot a typo. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int n = 0;
    for (int i = 0; i < dp_store_count(store); i++) {
        const char *tn = dp_store_get(store, i)->name;
        if (strncmp(tn, name, (size_t)(dot - name) + 1) == 0) {
            if (n++ > 0)
                luaL_addstring(&b, ", ");
            luaL_addstring(&b, tn);
        }
    }
    luaL_pushresult(&b);
    const char *known = lua_tostring(L, -1);
    return fail(L, "no tag \"%s\" in the plant%s%s%s", name, n ? " (twin's tags: " : "", known,
                n ? ")" : "");
}

/* A time argument: ISO 8601 UTC string or epoch seconds. */
static int get_time(lua_State *L, int idx, dp_time_t *out, char **err)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double s = lua_tonumber(L, idx);
        if (!isfinite(s))
            return dp_fail(err, DP_EINVAL, "bad time: not a finite number");
        *out = (dp_time_t)llround(s * 1e6);
        return 0;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        return dp_fail(err, DP_EINVAL, "expected a time (ISO 8601 UTC or epoch seconds), got %s",
                       luaL_typename(L, idx));
    return dp_time_parse(lua_tostring(L, idx), out, err);
}

static int run_to(lua_State *L, tcase_t *c, dp_time_t until)
{
    dp_time_t now = dp_clock_now(dp_plant_clock(c->plant));
    if (until < now) {
        char a[40], b[40];
        dp_time_format(until, a, sizeof a);
        dp_time_format(now, b, sizeof b);
        return fail(L, "cannot go back in time: %s is before the current time %s", a, b);
    }
    dp_plant_run_until(c->plant, until);
    dp_plant_flush(c->plant);
    sync_clock(c);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- host methods --------------------------------------------------------- */

/* open_plant(path) or open_plant(nil, source) */
static int h_open_plant(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (c->plant != NULL)
        return fail(L, "this case already has a plant");
    size_t srclen = 0;
    const char *source = luaL_optlstring(L, 3, NULL, &srclen);
    char *path;
    if (source != NULL) {
        const char *base = strrchr(c->file, '/');
        path = dp_xasprintf("%s/%s[t:twin]", c->dir, base != NULL ? base + 1 : c->file);
    } else {
        path = resolve(c, luaL_checkstring(L, 2));
    }
    /* A dry run: commands are judged by the guard and recorded for
     * t:commands(); none reaches a device, device-less setpoints are written
     * to the store as they would be live. */
    dp_plant_opts_t po = {.path = path,
                          .start = c->start,
                          .source = source,
                          .source_len = srclen,
                          .dry_run = true,
                          .on_event = on_event,
                          .event_ud = c,
                          .on_command = on_command,
                          .command_ud = c};
    char *err = NULL;
    c->plant = dp_plant_open(&po, &err);
    if (c->plant == NULL) {
        fail(L, "%s", err ? err : "cannot open the plant");
        free(err);
        free(path);
        return 2;
    }
    free(path);
    dp_log_set_clock(dp_plant_clock(c->plant));
    if (dp_plant_start(c->plant, &err) < 0) {
        fail(L, "%s", err);
        free(err);
        return 2;
    }
    dp_plant_flush(c->plant);
    lua_pushboolean(L, 1);
    return 1;
}

static int h_exists(lua_State *L)
{
    tcase_t *c = check_case(L);
    char *path = resolve(c, luaL_checkstring(L, 2));
    struct stat st;
    lua_pushboolean(L, stat(path, &st) == 0 && S_ISREG(st.st_mode));
    free(path);
    return 1;
}

/* Writes one sample of the tag named at `name_idx` with the value at `v_idx`
 * (no flush). Returns 0, or pushes the failure and returns 2. */
static int set_one(lua_State *L, tcase_t *c, int name_idx, int v_idx, int q)
{
    const char *name = lua_tostring(L, name_idx);
    int id;
    if (find_tag(L, c, name, &id))
        return 2;
    dp_value_t v;
    if (dp_lua_to_value(L, v_idx, &v) < 0)
        return fail(L, "t:set(\"%s\", value): a tag holds a number, boolean or string, not %s",
                    name, luaL_typename(L, v_idx));
    dp_plant_t *p = c->plant;
    int rc = dp_store_write(dp_plant_store(p), id, &v, dp_clock_now(dp_plant_clock(p)), q);
    if (rc < 0)
        return fail(L, "cannot write %s: %s", name, dp_strerror(rc));
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* set(name, value [, quality]) or set({name = value, ...} [, quality]): the
 * table form writes every sample at the same instant, in name order, and
 * delivers them as one batch (what one device response does). */
static int h_set(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    bool many = lua_istable(L, 2);
    if (!many)
        luaL_checkstring(L, 2);
    int qidx = many ? 3 : 4;
    int q = DP_Q_GOOD;
    if (!lua_isnoneornil(L, qidx)) {
        q = dp_quality_parse(luaL_checkstring(L, qidx));
        if (q < 0)
            return fail(L, "bad quality \"%s\" (good, uncertain or bad)", lua_tostring(L, qidx));
    }
    if (!many) {
        if (set_one(L, c, 2, 3, q))
            return 2;
    } else {
        size_t n = 0, cap = 8;
        const char **names = dp_xmalloc(sizeof *names * cap);
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING) {
                free(names);
                return fail(L, "t:set{...}: keys are tag names, got a %s", luaL_typename(L, -1));
            }
            if (n == cap)
                names = dp_xrealloc(names, sizeof *names * (cap *= 2));
            names[n++] = lua_tostring(L, -1); /* kept alive by the table */
        }
        qsort(names, n, sizeof *names, cmp_names);
        for (size_t i = 0; i < n; i++) {
            lua_pushstring(L, names[i]);
            lua_getfield(L, 2, names[i]);
            int r = set_one(L, c, -2, -1, q);
            if (r) {
                free(names);
                return r;
            }
            lua_pop(L, 2);
        }
        free(names);
    }
    dp_plant_flush(c->plant);
    lua_pushboolean(L, 1);
    return 1;
}

static int h_advance(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    dp_time_t d;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        double s = lua_tonumber(L, 2);
        if (!(s >= 0) || !isfinite(s))
            return fail(L, "t:advance: expected a duration >= 0, got %s", lua_tostring(L, 2));
        d = (dp_time_t)llround(s * 1e6);
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        char *err = NULL;
        if (dp_duration_parse(lua_tostring(L, 2), &d, &err) < 0) {
            fail(L, "t:advance: %s", err);
            free(err);
            return 2;
        }
    } else {
        return fail(L, "t:advance: expected a duration (\"45s\", \"2h\" or seconds), got %s",
                    luaL_typename(L, 2));
    }
    return run_to(L, c, dp_clock_now(dp_plant_clock(c->plant)) + d);
}

static int h_advance_to(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    dp_time_t t;
    char *err = NULL;
    if (get_time(L, 2, &t, &err) < 0) {
        fail(L, "t:advance_to: %s", err);
        free(err);
        return 2;
    }
    return run_to(L, c, t);
}

static int h_now(lua_State *L)
{
    tcase_t *c = check_case(L);
    lua_pushboolean(L, 1);
    dp_time_t now = c->plant != NULL ? dp_clock_now(dp_plant_clock(c->plant)) : c->start;
    lua_pushnumber(L, (double)now / 1e6);
    return 2;
}

static int h_get(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    int id;
    if (find_tag(L, c, luaL_checkstring(L, 2), &id))
        return 2;
    lua_pushboolean(L, 1);
    dp_lua_push_value(L, &dp_store_get(dp_plant_store(c->plant), id)->v);
    return 2;
}

static int h_tag(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    int id;
    if (find_tag(L, c, luaL_checkstring(L, 2), &id))
        return 2;
    const dp_tag_t *t = dp_store_get(dp_plant_store(c->plant), id);
    lua_pushboolean(L, 1);
    lua_createtable(L, 0, 5);
    dp_lua_push_value(L, &t->v);
    lua_setfield(L, -2, "value");
    lua_pushstring(L, dp_quality_name(t->quality));
    lua_setfield(L, -2, "quality");
    if (t->v.type != DP_NIL) {
        lua_pushnumber(L, (double)t->ts / 1e6);
        lua_setfield(L, -2, "ts");
    }
    lua_pushstring(L, t->unit);
    lua_setfield(L, -2, "unit");
    lua_pushinteger(L, (lua_Integer)t->writes);
    lua_setfield(L, -2, "writes");
    return 2;
}

static int h_events(lua_State *L)
{
    tcase_t *c = check_case(L);
    const char *kind = luaL_optstring(L, 2, NULL);
    lua_pushboolean(L, 1);
    lua_newtable(L);
    lua_Integer n = 0;
    for (size_t i = 0; i < c->nevents; i++) {
        const tevent_t *e = &c->events[i];
        if (kind != NULL && strcmp(kind, e->kind) != 0)
            continue;
        lua_createtable(L, 0, 5);
        lua_pushnumber(L, (double)e->ts / 1e6);
        lua_setfield(L, -2, "ts");
        if (e->twin != NULL) {
            lua_pushstring(L, e->twin);
            lua_setfield(L, -2, "twin");
        }
        lua_pushstring(L, e->kind);
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, e->text);
        lua_setfield(L, -2, "text");
        char *err = NULL;
        if (e->payload == NULL || dp_lmp_decode(L, e->payload, e->payload_len, &err) < 0) {
            free(err);
            lua_newtable(L);
        }
        lua_setfield(L, -2, "data");
        lua_rawseti(L, -2, ++n);
    }
    return 2;
}

static int h_commands(lua_State *L)
{
    tcase_t *c = check_case(L);
    lua_pushboolean(L, 1);
    lua_createtable(L, (int)c->ncmds, 0);
    for (size_t i = 0; i < c->ncmds; i++) {
        const tcmd_t *k = &c->cmds[i];
        lua_createtable(L, 0, 7);
        lua_pushstring(L, k->tag);
        lua_setfield(L, -2, "tag");
        dp_lua_push_value(L, &k->value);
        lua_setfield(L, -2, "value");
        lua_pushstring(L, k->origin);
        lua_setfield(L, -2, "origin");
        lua_pushstring(L, k->outcome);
        lua_setfield(L, -2, "outcome");
        lua_pushstring(L, k->reason);
        lua_setfield(L, -2, "reason");
        lua_pushnumber(L, (double)k->ts / 1e6);
        lua_setfield(L, -2, "ts");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 2;
}

static int h_state(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    const char *name = luaL_checkstring(L, 2);
    dp_twin_t *tw = dp_plant_twin(c->plant, name);
    if (tw == NULL)
        return fail(L, "no twin \"%s\" in the plant", name);
    char *buf = NULL, *err = NULL;
    size_t len = 0;
    if (dp_twin_state(tw, &buf, &len, &err) < 0) {
        fail(L, "state of %s: %s", name, err ? err : "unavailable");
        free(err);
        return 2;
    }
    lua_pushboolean(L, 1);
    if (dp_lmp_decode(L, buf, len, &err) < 0) {
        lua_pop(L, 1);
        fail(L, "state of %s: %s", name, err);
        free(err);
        free(buf);
        return 2;
    }
    free(buf);
    return 2;
}

/* Feeds a recording: time runs to each sample's timestamp (twin timers fire
 * on the way), samples of one timestamp are written and then delivered. */
static int h_feed(lua_State *L)
{
    tcase_t *c = check_case(L);
    if (need_plant(L, c))
        return 2;
    char *path = resolve(c, luaL_checkstring(L, 2));
    char *err = NULL;
    dp_recording_t *r = dp_recording_open(path, &err);
    free(path);
    if (r == NULL) {
        fail(L, "t:feed: %s", err);
        free(err);
        return 2;
    }
    dp_plant_t *p = c->plant;
    dp_store_t *store = dp_plant_store(p);
    int *handles = NULL;
    int nhandles = 0;
    lua_Integer count = 0;
    dp_rec_sample_t s;
    int rc;
    bool pending = false;
    dp_time_t last = 0;
    while ((rc = dp_recording_next(r, &s, &err)) > 0) {
        while (s.key >= nhandles) {
            handles = dp_xrealloc(handles, sizeof *handles * (size_t)(nhandles + 1));
            handles[nhandles++] = -1;
        }
        if (handles[s.key] < 0) {
            const char *name = dp_recording_key_name(r, s.key);
            handles[s.key] = dp_store_find(store, name);
            if (handles[s.key] < 0) {
                rc = dp_fail(&err, DP_ENOENT, "%s:%d:%d: no tag \"%s\" in the plant",
                             dp_recording_path(r), s.line,
                             dp_recording_wide(r) ? dp_recording_key_col(r, s.key) : s.col, name);
                break;
            }
        }
        dp_time_t now = dp_clock_now(dp_plant_clock(p));
        if (s.ts < now) {
            char a[40], b[40];
            dp_time_format(s.ts, a, sizeof a);
            dp_time_format(now, b, sizeof b);
            rc = dp_fail(&err, DP_EINVAL, "%s:%d:1: sample at %s is before the current time %s",
                         dp_recording_path(r), s.line, a, b);
            break;
        }
        if (pending && s.ts != last)
            dp_plant_flush(p);
        if (s.ts > now)
            dp_plant_run_until(p, s.ts);
        dp_store_write(store, handles[s.key], &s.v, s.ts, s.quality);
        pending = true;
        last = s.ts;
        count++;
    }
    dp_plant_flush(p);
    sync_clock(c);
    free(handles);
    dp_recording_free(r);
    if (rc < 0) {
        fail(L, "t:feed: %s", err);
        free(err);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_pushinteger(L, count);
    return 2;
}

/* Handler errors and faults of every twin so far, as "P101: 2 errors". */
static int twin_trouble(tcase_t *c, char *buf, size_t size)
{
    buf[0] = '\0';
    if (c->plant == NULL)
        return 0;
    int total = 0;
    for (int i = 0; i < dp_plant_twin_count(c->plant); i++) {
        dp_twin_t *tw = dp_plant_twin_at(c->plant, i);
        dp_twin_stats_t st;
        dp_twin_get_stats(tw, &st);
        uint64_t n = st.errors + st.faults;
        if (n == 0)
            continue;
        size_t used = strlen(buf);
        snprintf(buf + used, size - used, "%s%s: %llu", total ? ", " : "", dp_twin_name(tw),
                 (unsigned long long)n);
        total += (int)n;
    }
    return total;
}

/* print() in a test goes to stdout, indented under the case. */
static int t_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "    ");
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    fprintf(stdout, "%s\n", lua_tostring(L, -1));
    return 0;
}

static int open_host(lua_State *L)
{
    if (luaL_newmetatable(L, HOST_MT)) {
        static const luaL_Reg methods[] = {{"open_plant", h_open_plant},
                                           {"exists", h_exists},
                                           {"set", h_set},
                                           {"advance", h_advance},
                                           {"advance_to", h_advance_to},
                                           {"now", h_now},
                                           {"get", h_get},
                                           {"tag", h_tag},
                                           {"events", h_events},
                                           {"commands", h_commands},
                                           {"state", h_state},
                                           {"feed", h_feed},
                                           {NULL, NULL}};
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, t_print);
    lua_setglobal(L, "print");
    return 0;
}

/* ---- running files and cases ---------------------------------------------- */

typedef struct {
    int passed, failed;
    int unreadable; /* test files that could not be read: exit status 2 */
} tally_t;

static void print_indented(const char *msg)
{
    const char *p = msg;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        printf("    %.*s\n", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

/* The doppel.test module table, pushed, or nil when the file never required it. */
static void push_module(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "doppel.test");
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

typedef struct {
    int ncases;
    dp_time_t *starts; /* per case */
    char **start_errs; /* per case: a bad `start` option, or NULL */
    char **names;
} plan_t;

static void plan_free(plan_t *pl)
{
    for (int i = 0; i < pl->ncases; i++) {
        free(pl->start_errs[i]);
        free(pl->names[i]);
    }
    free(pl->names);
    free(pl->starts);
    free(pl->start_errs);
}

/* Reads the number of cases, their names and start times after a run of the file. */
static void read_plan(lua_State *L, dp_sandbox_t *sb, int mod, dp_time_t def, plan_t *pl)
{
    lua_getfield(L, mod, "_count");
    if (dp_sandbox_call(sb, 0, 1, NULL, NULL) != DP_SB_OK)
        return;
    pl->ncases = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (pl->ncases <= 0) {
        pl->ncases = 0;
        return;
    }
    pl->starts = dp_xcalloc((size_t)pl->ncases, sizeof *pl->starts);
    pl->start_errs = dp_xcalloc((size_t)pl->ncases, sizeof *pl->start_errs);
    pl->names = dp_xcalloc((size_t)pl->ncases, sizeof *pl->names);
    for (int i = 0; i < pl->ncases; i++) {
        pl->starts[i] = def;
        lua_getfield(L, mod, "_name");
        lua_pushinteger(L, i + 1);
        if (dp_sandbox_call(sb, 1, 1, NULL, NULL) == DP_SB_OK) {
            pl->names[i] = dp_xstrdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            lua_pop(L, 1);
        } else {
            pl->names[i] = dp_xstrdup("?");
        }
        lua_getfield(L, mod, "_start");
        lua_pushinteger(L, i + 1);
        if (dp_sandbox_call(sb, 1, 1, NULL, NULL) != DP_SB_OK)
            continue;
        char *err = NULL;
        if (!lua_isnil(L, -1) && get_time(L, -1, &pl->starts[i], &err) < 0) {
            pl->start_errs[i] = dp_xasprintf("start: %s", err);
            free(err);
        }
        lua_pop(L, 1);
    }
}

/* Runs the file in a fresh sandbox whose clock reads `start` and then, when
 * `index` > 0, its case `index`. With a plan, fills it (index 0). Returns the
 * number of cases declared, or -1 if the file failed to load (*err says why).
 * For a case, *case_failed and *err say whether and why it failed. */
static int run_case(const char *file, const char *dir, const char *code, size_t len, int index,
                    dp_time_t start, plan_t *plan, char **name, char **err, bool *case_failed,
                    double *ms)
{
    tcase_t c = {.file = file, .dir = dp_xstrdup(dir), .start = start};
    c.sb_clock = dp_clock_new_virtual(c.start);
    const char *base = strrchr(file, '/');
    /* The sandbox reads the case's own clock, which follows the plant's. */
    dp_sandbox_opts_t so = {.name = base ? base + 1 : file,
                            .module_dir = dir,
                            .clock = c.sb_clock,
                            .budget = TEST_BUDGET,
                            .memory = TEST_MEMORY};
    dp_sandbox_t *sb = dp_sandbox_new(&so);
    int ncases = -1;
    *case_failed = false;
    if (sb == NULL) {
        dp_fail(err, DP_ENOMEM, "cannot create a sandbox");
        case_free(&c);
        return -1;
    }
    lua_State *L = dp_sandbox_state(sb);
    lua_pushcfunction(L, open_host);
    dp_sandbox_call(sb, 0, 0, NULL, NULL);
    char chunk[PATH_MAX + 2];
    snprintf(chunk, sizeof chunk, "@%s", file);
    char *msg = NULL;
    if (dp_sandbox_load(sb, code, len, chunk, &msg) < 0 ||
        dp_sandbox_call(sb, 0, 0, &msg, NULL) != DP_SB_OK) {
        *err = msg;
        msg = NULL;
        goto out;
    }
    push_module(L);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        ncases = 0;
        goto out;
    }
    int mod = lua_gettop(L);
    lua_getfield(L, mod, "_count");
    ncases = 0;
    if (dp_sandbox_call(sb, 0, 1, NULL, NULL) == DP_SB_OK) {
        ncases = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (plan != NULL)
        read_plan(L, sb, mod, start, plan);
    if (index < 1 || index > ncases)
        goto out;
    lua_getfield(L, mod, "_name");
    lua_pushinteger(L, index);
    if (dp_sandbox_call(sb, 1, 1, NULL, NULL) == DP_SB_OK) {
        *name = dp_xstrdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
    }

    lua_getfield(L, mod, "_run");
    lua_pushinteger(L, index);
    host_t *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->c = &c;
    luaL_setmetatable(L, HOST_MT);
    lua_pushvalue(L, -1);
    int href = luaL_ref(L, LUA_REGISTRYINDEX);
    uint64_t t0 = uv_hrtime();
    dp_log_add_hook(on_log, &c);
    dp_sb_status_t st = dp_sandbox_call(sb, 2, 1, &msg, NULL);
    dp_log_remove_hook(on_log, &c);
    *ms = (double)(uv_hrtime() - t0) / 1e6;
    bool allow_errors = false;
    if (st == DP_SB_OK) {
        allow_errors = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (st != DP_SB_OK) {
        *case_failed = true;
        *err = msg;
        msg = NULL;
    } else {
        char trouble[512];
        int n = twin_trouble(&c, trouble, sizeof trouble);
        if (n > 0 && !allow_errors) {
            *case_failed = true;
            *err = dp_xasprintf("%s: twin handlers raised %d error%s during the case (%s); "
                                "call t:allow_errors() if that is expected%s%s",
                                file, n, n == 1 ? "" : "s", trouble, c.errors[0] ? "\n" : "",
                                c.errors);
        }
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, href);
    ((host_t *)lua_touserdata(L, -1))->c = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, href);
out:
    free(msg);
    dp_sandbox_free(sb);
    case_free(&c);
    return ncases;
}

static void run_file(const char *file, tally_t *tally)
{
    char *err = NULL;
    size_t len = 0;
    char *code = dp_source_read(file, &len, &err);
    if (code == NULL) {
        printf("FAIL %s: cannot read the file\n", file);
        print_indented(err);
        free(err);
        tally->failed++;
        tally->unreadable++;
        return;
    }
    const char *slash = strrchr(file, '/');
    char *dir = slash ? strndup(file, (size_t)(slash - file)) : dp_xstrdup(".");
    dp_time_t def;
    dp_time_parse(DEFAULT_START, &def, NULL);
    plan_t plan = {0};
    char *name = NULL;
    bool failed = false;
    double ms = 0;
    err = NULL;
    int n = run_case(file, dir, code, len, 0, def, &plan, &name, &err, &failed, &ms);
    if (n < 0) {
        printf("FAIL %s: the file did not load\n", file);
        print_indented(err ? err : "unknown error");
        tally->failed++;
    } else if (n == 0) {
        printf("FAIL %s: no test cases (declare them with require(\"doppel.test\").case)\n", file);
        tally->failed++;
    }
    free(err);
    for (int i = 1; i <= plan.ncases; i++) {
        name = NULL;
        err = NULL;
        failed = false;
        ms = 0;
        if (plan.start_errs[i - 1] != NULL) {
            n = 1;
            failed = true;
            name = dp_xstrdup(plan.names[i - 1]);
            err = dp_xasprintf("%s: case \"%s\": %s", file, name, plan.start_errs[i - 1]);
        } else {
            n = run_case(file, dir, code, len, i, plan.starts[i - 1], NULL, &name, &err, &failed,
                         &ms);
        }
        if (n < 0) {
            printf("FAIL %s: the file did not load on its run for case %d\n", file, i);
            print_indented(err ? err : "unknown error");
            tally->failed++;
        } else if (name == NULL && !failed) {
            printf("FAIL %s: case %d of %d disappeared on another run of the file\n", file, i,
                   plan.ncases);
            tally->failed++;
        } else if (failed) {
            printf("FAIL %s: %s\n", file, name ? name : "(case options)");
            print_indented(err ? err : "failed");
            tally->failed++;
        } else {
            printf("ok   %s: %s (%.0f ms)\n", file, name, ms);
            tally->passed++;
        }
        fflush(stdout);
        free(name);
        free(err);
    }
    plan_free(&plan);
    free(dir);
    free(code);
}

/* ---- finding test files ------------------------------------------------------ */

typedef struct {
    char **v;
    size_t n, cap;
} list_t;

static void list_add(list_t *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = dp_xrealloc(l->v, sizeof *l->v * l->cap);
    }
    l->v[l->n++] = s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_test_file(const char *name)
{
    size_t n = strlen(name);
    return n > 9 && strcmp(name + n - 9, "_test.lua") == 0;
}

static void walk(const char *dir, list_t *out)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "doppel test: cannot read %s: %s\n", dir, strerror(errno));
        return;
    }
    list_t names = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        list_add(&names, dp_xstrdup(e->d_name));
    }
    closedir(d);
    if (names.n > 0)
        qsort(names.v, names.n, sizeof *names.v, cmp_str);
    for (size_t i = 0; i < names.n; i++) {
        char *path =
            strcmp(dir, ".") == 0 ? dp_xstrdup(names.v[i]) : dp_xasprintf("%s/%s", dir, names.v[i]);
        struct stat st;
        bool ok = stat(path, &st) == 0;
        if (ok && S_ISDIR(st.st_mode)) {
            walk(path, out);
            free(path);
        } else if ((!ok || S_ISREG(st.st_mode)) && is_test_file(names.v[i])) {
            /* A test file that cannot be read (a dangling link) is reported. */
            list_add(out, path);
        } else {
            free(path);
        }
        free(names.v[i]);
    }
    free(names.v);
}

int dp_cmd_test(int npaths, char **paths, bool quiet_logs)
{
    static char *dot[] = {"."};
    if (npaths == 0) {
        npaths = 1;
        paths = dot;
    }
    list_t files = {0};
    int status = 0;
    for (int i = 0; i < npaths; i++) {
        char *p = dp_xstrdup(paths[i]);
        size_t n = strlen(p);
        while (n > 1 && p[n - 1] == '/')
            p[--n] = '\0';
        struct stat st;
        if (stat(p, &st) < 0) {
            fprintf(stderr, "doppel test: %s: %s\n", p, strerror(errno));
            status = 2;
            free(p);
        } else if (S_ISDIR(st.st_mode)) {
            walk(p, &files);
            free(p);
        } else {
            list_add(&files, p);
        }
    }
    if (status != 0) {
        for (size_t i = 0; i < files.n; i++)
            free(files.v[i]);
        free(files.v);
        return status;
    }
    dp_log_level_t level = dp_log_get_level();
    if (quiet_logs && level < DP_LOG_WARN)
        dp_log_set_level(DP_LOG_WARN);
    tally_t tally = {0};
    if (files.n == 0)
        fprintf(stderr, "doppel test: no *_test.lua files found\n");
    for (size_t i = 0; i < files.n; i++) {
        run_file(files.v[i], &tally);
        free(files.v[i]);
    }
    free(files.v);
    dp_log_set_level(level);
    printf("%d passed, %d failed\n", tally.passed, tally.failed);
    return tally.unreadable > 0 ? 2 : tally.failed > 0 ? 1 : 0;
}
