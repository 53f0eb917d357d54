#include "twin.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "command.h"
#include "lalarms.h"
#include "lmsgpack.h"
#include "log.h"

#define TAG_MT   "doppel.tag"
#define TIMER_MT "doppel.timer"
#define TAGS_MT  "doppel.tags"

typedef struct version version_t;

/* A timer started from Lua. Owned by its version (freed when it fires for
 * the last time, is cancelled, or the version goes away); the Lua userdata
 * only points at it and is cleared when it goes first. */
typedef struct ltimer {
    dp_timer_t t;
    version_t *ver;
    int fn_ref;
    struct ltimer **box; /* the userdata's pointer to us, or NULL */
    struct ltimer *prev, *next;
    int arg_ref;            /* LUA_NOREF, or one argument for the callback */
    struct wticket *ticket; /* twin.write: the guard's pointer to us */
    char what[40];
} ltimer_t;

/* A twin.write command waiting for its outcome: the guard holds the ticket,
 * the version holds the timer that will run the callback. Whichever goes
 * first clears the other's pointer. */
typedef struct wticket {
    ltimer_t *lt;
} wticket_t;

typedef struct {
    int tag;
    double deadband;
} watch_t;

/* Where a tag is in an on_update handler's changed list: `pos` is valid
 * while `batch` is the batch being delivered. */
typedef struct {
    uint32_t batch;
    uint32_t pos;
} umark_t;

/* A twin.on_update handler: called once per delivered batch in which any of
 * its tags changed, with the changed tags (each once, in order of change). */
typedef struct {
    int ref;
    int first_tag; /* named in error reports */
    /* The arguments built for the handler: 2, or fewer when it declares
     * fewer parameters (and no `...`): a rule that reads the tags itself
     * then costs no table building per call. */
    int nargs;
    /* This batch's changed tags, in order of their first change: for each,
     * its last change record (whose value the handler gets). */
    const dp_change_t **changed;
    int nchanged, cap;
    umark_t *mark; /* by tag handle */
    int nmark;
} update_t;

/* The on_update handlers that watch one tag (indices into version.updates),
 * the first one in place: most tags have one, and following a pointer per
 * change costs a cache miss on a plant of thousands of tags. */
typedef struct {
    int first;
    int n;
    int *more; /* handlers 2..n */
} uwatch_t;

struct version {
    dp_twin_t *twin;
    dp_sandbox_t *sb;
    lua_State *L;
    int start_ref;
    int *handlers; /* by tag handle: LUA_NOREF, a function ref or a table-of-functions ref */
    int nhandlers;
    watch_t *watches;
    int nwatches, watches_cap;
    int *watch_of; /* by tag handle: 1 + its index in watches, 0: none */
    int nwatch_of;
    update_t *updates;
    int nupdates;
    uwatch_t *uwatch; /* by tag handle */
    int nuwatch;
    uint32_t batch; /* deliveries so far: marks on_update's changed lists */
    ltimer_t *timers;
    int tagcache_ref;
    int pack_ref;      /* `return {...}`: see push_list */
    int namecache_ref; /* name as the script wrote it -> tag object (tags.x) */
    bool live;
};

struct dp_twin {
    char *name;
    char *script;
    char *module_dir;
    char *params;
    size_t params_len;
    uint64_t budget;
    size_t memory;
    int max_faults;
    dp_time_t fault_window;
    char **commands; /* NULL-terminated patterns; see dp_twin_may_command */
    dp_twin_host_t *host;
    dp_sub_t *sub;
    version_t *cur;
    dp_twin_stats_t stats;
    dp_time_t fault_times[16];
    int nfaults;
    bool stopped;
};

static void report(version_t *ver, const char *what, dp_sb_status_t st, char *msg, char *trace);

/* ---- helpers ---------------------------------------------------------- */

static version_t *upver(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static dp_time_t check_duration(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double s = lua_tonumber(L, idx);
        if (!(s >= 0 && s < 1e12))
            luaL_argerror(L, idx, "duration out of range");
        return (dp_time_t)llround(s * 1e6);
    }
    const char *s = luaL_checkstring(L, idx);
    dp_time_t d;
    char *err = NULL;
    if (dp_duration_parse(s, &d, &err) < 0) {
        lua_pushstring(L, err);
        free(err);
        luaL_argerror(L, idx, lua_tostring(L, -1));
    }
    return d;
}

/* Resolves "flow" (this twin's tag) or "P102.flow" (any tag) to a handle. */
static int resolve_tag(lua_State *L, dp_twin_t *tw, const char *name)
{
    char full[256];
    if (strchr(name, '.') != NULL)
        snprintf(full, sizeof full, "%s", name);
    else
        snprintf(full, sizeof full, "%s.%s", tw->name, name);
    int id = dp_store_find(tw->host->store, full);
    (void)L;
    return id;
}

static int check_tag_name(lua_State *L, version_t *ver, int idx)
{
    const char *name = luaL_checkstring(L, idx);
    int id = resolve_tag(L, ver->twin, name);
    if (id < 0)
        luaL_error(L, "no tag \"%s\" in twin %s", name, ver->twin->name);
    return id;
}

void dp_lua_push_value(lua_State *L, const dp_value_t *v)
{
    switch (v->type) {
    case DP_NUM:
        lua_pushnumber(L, v->u.n);
        break;
    case DP_BOOL:
        lua_pushboolean(L, v->u.b);
        break;
    case DP_STR:
        lua_pushstring(L, v->u.s);
        break;
    default:
        lua_pushnil(L);
    }
}

int dp_lua_to_value(lua_State *L, int idx, dp_value_t *v)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        *v = dp_num(lua_tonumber(L, idx));
        return 0;
    case LUA_TBOOLEAN:
        *v = dp_bool(lua_toboolean(L, idx));
        return 0;
    case LUA_TSTRING:
        *v = dp_str(lua_tostring(L, idx));
        return 0;
    default:
        return DP_EINVAL;
    }
}

/* ---- tag objects ------------------------------------------------------ */

typedef struct {
    dp_store_t *store;
    dp_clock_t *clock;
    int id;
} ltag_t;

static ltag_t *check_tag(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, TAG_MT);
}

/* Pushes the cached tag object for a handle (one per tag per version). */
static void push_tag(lua_State *L, version_t *ver, int id)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ver->tagcache_ref);
    if (lua_rawgeti(L, -1, id + 1) == LUA_TNIL) {
        lua_pop(L, 1);
        ltag_t *t = lua_newuserdatauv(L, sizeof *t, 0);
        t->store = ver->twin->host->store;
        t->clock = ver->twin->host->clock;
        t->id = id;
        luaL_setmetatable(L, TAG_MT);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, id + 1);
    }
    lua_remove(L, -2);
}

static int tag_history(lua_State *L)
{
    ltag_t *t = check_tag(L, 1);
    size_t len = dp_store_history_len(t->store, t->id);
    lua_Integer n = luaL_optinteger(L, 2, (lua_Integer)len);
    if (n < 0)
        n = 0;
    if ((size_t)n > len)
        n = (lua_Integer)len;
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        const dp_sample_t *s = dp_store_history_at(t->store, t->id, (size_t)(n - 1 - i));
        lua_createtable(L, 0, 3);
        dp_lua_push_value(L, &s->v);
        lua_setfield(L, -2, "value");
        lua_pushnumber(L, (double)s->ts / 1e6);
        lua_setfield(L, -2, "ts");
        lua_pushstring(L, dp_quality_name(s->quality));
        lua_setfield(L, -2, "quality");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* tag:values(n): the last n history values, oldest first, as a plain array
 * of numbers (cheap input for statistics). */
static int tag_values(lua_State *L)
{
    ltag_t *t = check_tag(L, 1);
    size_t len = dp_store_history_len(t->store, t->id);
    lua_Integer n = luaL_optinteger(L, 2, (lua_Integer)len);
    if (n < 0)
        n = 0;
    if ((size_t)n > len)
        n = (lua_Integer)len;
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        const dp_sample_t *s = dp_store_history_at(t->store, t->id, (size_t)(n - 1 - i));
        dp_lua_push_value(L, &s->v);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int tag_index(lua_State *L)
{
    /* Only ever called on a tag object: the metatable is hidden from scripts
     * (__metatable), so no script can call this with anything else. */
    const ltag_t *t = lua_touserdata(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const dp_tag_t *tag = dp_store_get(t->store, t->id);
    /* The two fields rules read most, before the general lookup. */
    if (k[0] == 'v' && strcmp(k, "value") == 0) {
        dp_lua_push_value(L, &tag->v);
    } else if (k[0] == 'g' && strcmp(k, "good") == 0) {
        lua_pushboolean(L, tag->v.type != DP_NIL && tag->quality == DP_Q_GOOD);
    } else if (strcmp(k, "value") == 0) {
        dp_lua_push_value(L, &tag->v);
    } else if (strcmp(k, "ts") == 0) {
        if (tag->v.type == DP_NIL)
            lua_pushnil(L);
        else
            lua_pushnumber(L, (double)tag->ts / 1e6);
    } else if (strcmp(k, "quality") == 0) {
        lua_pushstring(L, dp_quality_name(tag->quality));
    } else if (strcmp(k, "reason") == 0) {
        lua_pushstring(L, tag->reason); /* nil when there is none */
    } else if (strcmp(k, "good") == 0) {
        lua_pushboolean(L, tag->v.type != DP_NIL && tag->quality == DP_Q_GOOD);
    } else if (strcmp(k, "unit") == 0) {
        lua_pushstring(L, tag->unit);
    } else if (strcmp(k, "name") == 0) {
        lua_pushstring(L, tag->name);
    } else if (strcmp(k, "age") == 0) {
        if (tag->v.type == DP_NIL)
            lua_pushnil(L);
        else
            lua_pushnumber(L, (double)(dp_clock_now(t->clock) - tag->ts) / 1e6);
    } else if (strcmp(k, "derived") == 0) {
        lua_pushboolean(L, (tag->flags & DP_TAG_DERIVED) != 0);
    } else if (strcmp(k, "history") == 0) {
        lua_pushcfunction(L, tag_history);
    } else if (strcmp(k, "values") == 0) {
        lua_pushcfunction(L, tag_values);
    } else {
        return luaL_error(L,
                          "tag %s has no field \"%s\" (value, ts, quality, reason, good, unit, "
                          "name, age, derived, history, values)",
                          tag->name, k);
    }
    return 1;
}

static int tag_tostring(lua_State *L)
{
    ltag_t *t = check_tag(L, 1);
    const dp_tag_t *tag = dp_store_get(t->store, t->id);
    if (tag->v.type == DP_NIL) {
        lua_pushfstring(L, "%s = nil (no value yet)", tag->name);
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "%s = ", tag->name);
    luaL_addvalue(&b);
    dp_lua_push_value(L, &tag->v);
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    luaL_addvalue(&b);
    if (tag->unit[0] != '\0') {
        luaL_addchar(&b, ' ');
        luaL_addstring(&b, tag->unit);
    }
    char age[32];
    dp_duration_format(dp_clock_now(t->clock) - tag->ts, age, sizeof age);
    lua_pushfstring(L, " (%s, %s ago)", dp_quality_name(tag->quality), age);
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    return 1;
}

static int tag_eq(lua_State *L)
{
    ltag_t *a = luaL_testudata(L, 1, TAG_MT);
    ltag_t *b = luaL_testudata(L, 2, TAG_MT);
    lua_pushboolean(L, a != NULL && b != NULL && a->id == b->id);
    return 1;
}

/* ---- the tags proxy --------------------------------------------------- */

/* Pushes the tag object for the name at `idx` as the script wrote it. A name
 * resolved before is one table lookup (tags are never removed while a
 * version lives); otherwise it is resolved and remembered. */
static const ltag_t *push_named_tag(lua_State *L, version_t *ver, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ver->namecache_ref);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        int id = check_tag_name(L, ver, idx);
        push_tag(L, ver, id);
        lua_pushvalue(L, idx);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_remove(L, -2);
    return lua_touserdata(L, -1);
}

static int tags_index(lua_State *L)
{
    push_named_tag(L, upver(L), 2);
    return 1;
}

static int set_derived(lua_State *L, version_t *ver, int name_idx, int value_idx, int q_idx);
static int write_derived(lua_State *L, version_t *ver, int id, int value_idx, int q_idx);

static int tags_newindex(lua_State *L)
{
    version_t *ver = upver(L);
    if (lua_type(L, 2) != LUA_TSTRING)
        return set_derived(L, ver, 2, 3, 0); /* (the error) */
    int id = push_named_tag(L, ver, 2)->id;
    lua_pop(L, 1);
    return write_derived(L, ver, id, 3, 0);
}

/* pairs(tags): this twin's own tags, by short name. */
static int tags_next(lua_State *L)
{
    version_t *ver = upver(L);
    dp_store_t *store = ver->twin->host->store;
    int i = lua_isnil(L, 2) ? 0 : (int)lua_tointeger(L, lua_upvalueindex(2)) + 1;
    size_t plen = strlen(ver->twin->name);
    for (int n = dp_store_count(store); i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, i);
        if (strncmp(t->name, ver->twin->name, plen) == 0 && t->name[plen] == '.') {
            lua_pushinteger(L, i);
            lua_replace(L, lua_upvalueindex(2));
            lua_pushstring(L, t->name + plen + 1);
            push_tag(L, ver, i);
            return 2;
        }
    }
    lua_pushnil(L);
    return 1;
}

static int tags_pairs(lua_State *L)
{
    lua_pushlightuserdata(L, upver(L));
    lua_pushinteger(L, -1);
    lua_pushcclosure(L, tags_next, 2);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* ---- twin API --------------------------------------------------------- */

/* Grows an array indexed by tag handle (`*n` elements of `size` bytes) to
 * hold `id`: to every tag the store has, so that registering thousands of
 * tags does not grow it one at a time. New elements are zeroed. */
static void *grow_by_tag(version_t *ver, void *a, int *n, size_t size, int id)
{
    if (id < *n)
        return a;
    int want = dp_store_count(ver->twin->host->store);
    if (want <= id)
        want = id + 1;
    a = dp_xrealloc(a, size * (size_t)want);
    memset((char *)a + size * (size_t)*n, 0, size * (size_t)(want - *n));
    *n = want;
    return a;
}

static void add_watch(version_t *ver, int id, double deadband)
{
    if (deadband < 0)
        deadband = dp_store_get(ver->twin->host->store, id)->deadband;
    ver->watch_of = grow_by_tag(ver, ver->watch_of, &ver->nwatch_of, sizeof *ver->watch_of, id);
    if (ver->watch_of[id] > 0) {
        watch_t *w = &ver->watches[ver->watch_of[id] - 1];
        if (deadband < w->deadband)
            w->deadband = deadband;
        return;
    }
    if (ver->nwatches == ver->watches_cap) {
        ver->watches_cap = ver->watches_cap ? 2 * ver->watches_cap : 16;
        ver->watches = dp_xrealloc(ver->watches, sizeof *ver->watches * (size_t)ver->watches_cap);
    }
    ver->watches[ver->nwatches++] = (watch_t){id, deadband};
    ver->watch_of[id] = ver->nwatches;
}

static void add_handler(lua_State *L, version_t *ver, int id, int fn_idx)
{
    int had = ver->nhandlers;
    ver->handlers = grow_by_tag(ver, ver->handlers, &ver->nhandlers, sizeof *ver->handlers, id);
    for (int i = had; i < ver->nhandlers; i++)
        ver->handlers[i] = LUA_NOREF;
    int ref = ver->handlers[id];
    if (ref == LUA_NOREF) {
        lua_pushvalue(L, fn_idx);
        ver->handlers[id] = luaL_ref(L, LUA_REGISTRYINDEX);
        return;
    }
    /* A second handler on the same tag: keep them in a list, called in order. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (lua_isfunction(L, -1)) {
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        lua_pushvalue(L, -1);
        ver->handlers[id] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, fn_idx);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* The options of on_change and on_update at `idx`: {deadband = x}. Returns
 * -1 for each tag's declared default. */
static double check_deadband(lua_State *L, int idx)
{
    double deadband = -1;
    if (lua_isnoneornil(L, idx))
        return deadband;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "deadband");
    if (!lua_isnil(L, -1))
        deadband = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (!(deadband >= 0) && deadband != -1)
        luaL_argerror(L, idx, "deadband must be >= 0");
    return deadband;
}

/* The tag handles of argument 1 (a name or a non-empty list of names), all
 * resolved before the caller registers anything, so a bad name leaves no
 * half-registered handler. The array is a userdata on the stack; *n gets
 * its length. */
static const int *check_tag_names(lua_State *L, version_t *ver, lua_Integer *n)
{
    bool list = lua_istable(L, 1);
    *n = list ? (lua_Integer)lua_rawlen(L, 1) : 1;
    if (*n == 0)
        luaL_argerror(L, 1, "empty list of tags");
    int *ids = lua_newuserdatauv(L, sizeof *ids * (size_t)*n, 0);
    for (lua_Integer i = 1; i <= *n; i++) {
        if (list)
            lua_rawgeti(L, 1, i);
        ids[i - 1] = check_tag_name(L, ver, list ? -1 : 1);
        if (list)
            lua_pop(L, 1);
    }
    return ids;
}

/* twin.on_change(name | {names}, fn [, {deadband = x}]) */
static int api_on_change(lua_State *L)
{
    version_t *ver = upver(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    double deadband = check_deadband(L, 3);
    lua_Integer n;
    const int *ids = check_tag_names(L, ver, &n);
    for (lua_Integer i = 0; i < n; i++) {
        add_handler(L, ver, ids[i], 2);
        add_watch(ver, ids[i], deadband);
    }
    return 0;
}

/* Adds handler `h` to the on_update handlers of tag `id`. */
static void add_update_watch(version_t *ver, int h, int id)
{
    ver->uwatch = grow_by_tag(ver, ver->uwatch, &ver->nuwatch, sizeof *ver->uwatch, id);
    uwatch_t *w = &ver->uwatch[id];
    if (w->n > 0 && w->first == h)
        return;
    for (int i = 0; i + 1 < w->n; i++) {
        if (w->more[i] == h)
            return;
    }
    if (w->n == 0) {
        w->first = h;
    } else {
        w->more = dp_xrealloc(w->more, sizeof *w->more * (size_t)w->n);
        w->more[w->n - 1] = h;
    }
    w->n++;
    update_t *u = &ver->updates[h];
    u->mark = grow_by_tag(ver, u->mark, &u->nmark, sizeof *u->mark, id);
}

/* twin.on_update(name | {names}, fn [, {deadband = x}]) */
static int api_on_update(lua_State *L)
{
    version_t *ver = upver(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    double deadband = check_deadband(L, 3);
    lua_Integer n;
    const int *ids = check_tag_names(L, ver, &n);
    int h = ver->nupdates;
    ver->updates = dp_xrealloc(ver->updates, sizeof *ver->updates * (size_t)(h + 1));
    ver->nupdates++;
    lua_Debug ar;
    lua_pushvalue(L, 2);
    lua_getinfo(L, ">u", &ar);
    int nargs = ar.isvararg || ar.nparams > 2 ? 2 : ar.nparams;
    lua_pushvalue(L, 2);
    ver->updates[h] =
        (update_t){.ref = luaL_ref(L, LUA_REGISTRYINDEX), .first_tag = ids[0], .nargs = nargs};
    for (lua_Integer i = 0; i < n; i++) {
        add_update_watch(ver, h, ids[i]);
        add_watch(ver, ids[i], deadband);
    }
    return 0;
}

static int api_on_start(lua_State *L)
{
    version_t *ver = upver(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (ver->start_ref != LUA_NOREF)
        return luaL_error(L, "on_start is already set for twin %s", ver->twin->name);
    lua_pushvalue(L, 1);
    ver->start_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void ltimer_free(ltimer_t *lt)
{
    version_t *ver = lt->ver;
    dp_timer_stop(&lt->t);
    if (lt->prev != NULL)
        lt->prev->next = lt->next;
    else
        ver->timers = lt->next;
    if (lt->next != NULL)
        lt->next->prev = lt->prev;
    if (lt->box != NULL)
        *lt->box = NULL;
    if (lt->ticket != NULL)
        lt->ticket->lt = NULL;
    luaL_unref(ver->L, LUA_REGISTRYINDEX, lt->fn_ref);
    luaL_unref(ver->L, LUA_REGISTRYINDEX, lt->arg_ref);
    free(lt);
}

static void call_handler(version_t *ver, const char *what, int nargs);

static void ltimer_cb(dp_timer_t *t)
{
    ltimer_t *lt = t->data;
    version_t *ver = lt->ver;
    if (ver->twin->stats.suspended) {
        if (!dp_timer_active(&lt->t))
            ltimer_free(lt);
        return;
    }
    char what[sizeof lt->what];
    memcpy(what, lt->what, sizeof what);
    bool once = !dp_timer_active(&lt->t);
    lua_rawgeti(ver->L, LUA_REGISTRYINDEX, lt->fn_ref);
    int nargs = 0;
    if (lt->arg_ref != LUA_NOREF) {
        lua_rawgeti(ver->L, LUA_REGISTRYINDEX, lt->arg_ref);
        nargs = 1;
    }
    /* A one-shot timer is gone before its callback runs, so the callback may
     * start a new one freely and cancel() on it is a no-op. */
    if (once)
        ltimer_free(lt);
    call_handler(ver, what, nargs);
}

/* A timer of `ver` that will call the function at `fn` (not started). */
static ltimer_t *ltimer_new(lua_State *L, version_t *ver, int fn)
{
    ltimer_t *lt = dp_xcalloc(1, sizeof *lt);
    lt->ver = ver;
    lt->arg_ref = LUA_NOREF;
    lua_pushvalue(L, fn);
    lt->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lt->next = ver->timers;
    if (ver->timers != NULL)
        ver->timers->prev = lt;
    ver->timers = lt;
    dp_timer_init(ver->twin->host->clock, &lt->t);
    lt->t.data = lt;
    return lt;
}

static int start_timer(lua_State *L, bool repeat)
{
    version_t *ver = upver(L);
    dp_time_t d = check_duration(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (repeat && d <= 0)
        return luaL_argerror(L, 1, "a repeating timer needs a period > 0");
    ltimer_t *lt = ltimer_new(L, ver, 2);
    char dur[24];
    dp_duration_format(d, dur, sizeof dur);
    snprintf(lt->what, sizeof lt->what, "%s(%s)", repeat ? "every" : "after", dur);
    ltimer_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = lt;
    lt->box = box;
    luaL_setmetatable(L, TIMER_MT);
    dp_timer_start(&lt->t, ltimer_cb, d, repeat ? d : 0);
    return 1;
}

/* twin.device_stats(name): a table of the device's statistics (requests,
 * errors, last_error, latency_ms, ... as its driver reports them), or nil
 * and a message. */
static int api_device_stats(lua_State *L)
{
    version_t *ver = upver(L);
    const char *name = luaL_checkstring(L, 1);
    dp_twin_host_t *h = ver->twin->host;
    if (h->device_stats != NULL && h->device_stats(h, name, L) == 1)
        return 1;
    lua_pushnil(L);
    lua_pushfstring(L, "no device \"%s\"", name);
    return 2;
}

/* ---- twin.write --------------------------------------------------------- */

/* The guard's verdict: hand it to the Lua callback on a zero-delay timer, so
 * the callback never runs inside the twin.write call (or a reload). */
static void write_outcome(const dp_cmd_t *cmd, void *ud)
{
    wticket_t *tk = ud;
    ltimer_t *lt = tk->lt;
    free(tk);
    if (lt == NULL)
        return; /* the version that asked is gone */
    lt->ticket = NULL;
    lua_State *L = lt->ver->L;
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, (lua_Integer)cmd->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, cmd->tag);
    lua_setfield(L, -2, "tag");
    dp_lua_push_value(L, &cmd->value);
    lua_setfield(L, -2, "value");
    lua_pushstring(L, dp_cmd_outcome_name(cmd->outcome));
    lua_setfield(L, -2, "outcome");
    lua_pushboolean(L, cmd->outcome == DP_CMD_DONE);
    lua_setfield(L, -2, "ok");
    lua_pushstring(L, cmd->reason);
    lua_setfield(L, -2, "reason");
    lua_pushstring(L, cmd->origin);
    lua_setfield(L, -2, "origin");
    lt->arg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    dp_timer_start(&lt->t, ltimer_cb, 0, 0);
}

/* twin.write(tag, value [, callback]) -> command id. Also twin:write(...). */
static int api_write(lua_State *L)
{
    version_t *ver = upver(L);
    if (lua_type(L, 1) == LUA_TTABLE)
        lua_remove(L, 1);
    int id = check_tag_name(L, ver, 1);
    dp_value_t v;
    if (dp_lua_to_value(L, 2, &v) < 0)
        return luaL_argerror(L, 2, "value must be a number, boolean or string");
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TFUNCTION);
    dp_twin_t *tw = ver->twin;
    if (tw->host->guard == NULL)
        return luaL_error(L, "twin.write: this host takes no commands");
    char origin[160];
    snprintf(origin, sizeof origin, "twin:%s", tw->name);
    const char *name = dp_store_get(tw->host->store, id)->name;
    wticket_t *tk = NULL;
    if (lua_isfunction(L, 3)) {
        ltimer_t *lt = ltimer_new(L, ver, 3);
        snprintf(lt->what, sizeof lt->what, "write(%.30s)", name);
        tk = dp_xcalloc(1, sizeof *tk);
        tk->lt = lt;
        lt->ticket = tk;
    }
    uint64_t cmd =
        dp_guard_submit(tw->host->guard, origin, name, &v, tk != NULL ? write_outcome : NULL, tk);
    lua_pushinteger(L, (lua_Integer)cmd);
    return 1;
}

static int api_every(lua_State *L)
{
    return start_timer(L, true);
}

static int api_after(lua_State *L)
{
    return start_timer(L, false);
}

static int timer_cancel(lua_State *L)
{
    ltimer_t **box = luaL_checkudata(L, 1, TIMER_MT);
    if (*box != NULL)
        ltimer_free(*box);
    return 0;
}

static int timer_active(lua_State *L)
{
    ltimer_t **box = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, *box != NULL && dp_timer_active(&(*box)->t));
    return 1;
}

static int timer_gc(lua_State *L)
{
    ltimer_t **box = luaL_checkudata(L, 1, TIMER_MT);
    if (*box != NULL)
        (*box)->box = NULL;
    *box = NULL;
    return 0;
}

static int timer_tostring(lua_State *L)
{
    ltimer_t **box = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushfstring(L, "timer %s (%s)", *box != NULL ? (*box)->what : "?",
                    *box != NULL ? "active" : "stopped");
    return 1;
}

/* twin.tag(name, {unit=, history=}): declares (or updates) a derived tag. */
static int api_tag(lua_State *L)
{
    version_t *ver = upver(L);
    const char *name = luaL_checkstring(L, 1);
    if (strchr(name, '.') != NULL)
        return luaL_argerror(L, 1, "a derived tag name has no dot (it belongs to this twin)");
    dp_tag_opts_t opts = {.flags = DP_TAG_DERIVED};
    lua_Integer history = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "unit");
        opts.unit = lua_tostring(L, -1);
        lua_getfield(L, 2, "history");
        history = luaL_optinteger(L, -1, 0);
        lua_pop(L, 2);
        if (history < 0 || history > 10000000)
            return luaL_argerror(L, 2, "history must be between 0 and 10000000");
        opts.history = (uint32_t)history;
    }
    char full[256];
    snprintf(full, sizeof full, "%s.%s", ver->twin->name, name);
    dp_store_t *store = ver->twin->host->store;
    int id = dp_store_find(store, full);
    if (id >= 0) {
        const dp_tag_t *t = dp_store_get(store, id);
        if (!(t->flags & DP_TAG_DERIVED))
            return luaL_error(L, "tag %s is an input tag; twin.tag declares derived tags only",
                              full);
        if (opts.unit != NULL)
            dp_store_set_unit(store, id, opts.unit);
        if (history > 0)
            dp_store_set_history(store, id, opts.history);
    } else {
        id = dp_store_add(store, full, &opts);
        if (id < 0)
            return luaL_error(L, "cannot add tag %s: %s", full, dp_strerror(id));
    }
    push_tag(L, ver, id);
    return 1;
}

static int set_derived(lua_State *L, version_t *ver, int name_idx, int value_idx, int q_idx)
{
    return write_derived(L, ver, check_tag_name(L, ver, name_idx), value_idx, q_idx);
}

static int write_derived(lua_State *L, version_t *ver, int id, int value_idx, int q_idx)
{
    dp_store_t *store = ver->twin->host->store;
    const dp_tag_t *t = dp_store_get(store, id);
    if (!(t->flags & DP_TAG_DERIVED))
        return luaL_error(L,
                          "%s is an input tag; twins set derived tags only "
                          "(declare one with twin.tag)",
                          t->name);
    int quality = DP_Q_GOOD;
    if (q_idx > 0 && !lua_isnoneornil(L, q_idx)) {
        quality = dp_quality_parse(luaL_checkstring(L, q_idx));
        if (quality < 0)
            return luaL_argerror(L, q_idx, "quality must be \"good\", \"uncertain\" or \"bad\"");
    }
    dp_value_t v;
    if (dp_lua_to_value(L, value_idx, &v) < 0)
        return luaL_error(L, "%s: a tag holds a number, boolean or string, not %s", t->name,
                          luaL_typename(L, value_idx));
    dp_store_write(store, id, &v, dp_clock_now(ver->twin->host->clock), quality);
    return 0;
}

static int api_set(lua_State *L)
{
    return set_derived(L, upver(L), 1, 2, 3);
}

static int api_get(lua_State *L)
{
    version_t *ver = upver(L);
    int id = check_tag_name(L, ver, 1);
    dp_lua_push_value(L, &dp_store_get(ver->twin->host->store, id)->v);
    return 1;
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* twin.event(kind, {fields}): raises an event, delivered to the plant's
 * listeners (the log today, the journal and north-bound streams later). */
static int api_event(lua_State *L)
{
    version_t *ver = upver(L);
    const char *kind = luaL_checkstring(L, 1);
    char *payload = NULL;
    size_t len = 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        char *err = NULL;
        if (dp_lmp_encode(L, 2, "fields", &payload, &len, &err) < 0) {
            lua_pushstring(L, err);
            free(err);
            return lua_error(L);
        }
        /* A stable one-line summary: string keys in sorted order. */
        const char *keys[64];
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 2) != 0 && n < 64) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING)
                keys[n++] = lua_tostring(L, -1);
        }
        qsort(keys, (size_t)n, sizeof keys[0], cmp_keys);
        for (int i = 0; i < n; i++) {
            lua_getfield(L, 2, keys[i]);
            if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
                char num[32];
                snprintf(num, sizeof num, "%.6g", lua_tonumber(L, -1));
                lua_pushfstring(L, "%s%s=%s", i ? " " : "", keys[i], num);
            } else if (lua_type(L, -1) == LUA_TTABLE) {
                /* Nested fields are in the payload; an address here would
                 * make the summary differ from run to run. */
                lua_pushfstring(L, "%s%s={...}", i ? " " : "", keys[i]);
            } else {
                const char *s = luaL_tolstring(L, -1, NULL);
                bool quote = strpbrk(s, " \"=") != NULL;
                lua_pushfstring(L, quote ? "%s%s=\"%s\"" : "%s%s=%s", i ? " " : "", keys[i], s);
                lua_remove(L, -2);
            }
            lua_remove(L, -2);
            luaL_addvalue(&b);
        }
    }
    luaL_pushresult(&b);
    dp_event_t ev = {
        .ts = dp_clock_now(ver->twin->host->clock),
        .twin = ver->twin->name,
        .kind = kind,
        .text = lua_tostring(L, -1),
        .payload = payload,
        .payload_len = len,
    };
    ver->twin->host->emit(ver->twin->host, &ev);
    free(payload);
    return 0;
}

static int log_at(lua_State *L, dp_log_level_t level)
{
    version_t *ver = upver(L);
    if (level < dp_log_get_level())
        return 0;
    int n = lua_gettop(L);
    if (n > 1) {
        /* log.info("fmt %s", x): string.format semantics. */
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_remove(L, -2);
        lua_insert(L, 1);
        lua_call(L, n, 1);
    } else {
        luaL_tolstring(L, 1, NULL);
    }
    dp_log(level, ver->twin->name, "%s", lua_tostring(L, -1));
    return 0;
}

static int api_log_debug(lua_State *L)
{
    return log_at(L, DP_LOG_DEBUG);
}
static int api_log_info(lua_State *L)
{
    return log_at(L, DP_LOG_INFO);
}
static int api_log_warn(lua_State *L)
{
    return log_at(L, DP_LOG_WARN);
}
static int api_log_error(lua_State *L)
{
    return log_at(L, DP_LOG_ERROR);
}

static int api_clock_now(lua_State *L)
{
    lua_pushnumber(L, (double)dp_clock_now(upver(L)->twin->host->clock) / 1e6);
    return 1;
}

static int api_clock_iso(lua_State *L)
{
    dp_time_t t = lua_isnoneornil(L, 1) ? dp_clock_now(upver(L)->twin->host->clock)
                                        : (dp_time_t)llround(luaL_checknumber(L, 1) * 1e6);
    char buf[40];
    dp_time_format(t, buf, sizeof buf);
    lua_pushstring(L, buf);
    return 1;
}

/* duration("10min") -> 600 (seconds) */
static int api_duration(lua_State *L)
{
    lua_pushnumber(L, (double)check_duration(L, 1) / 1e6);
    return 1;
}

static void set_funcs(lua_State *L, version_t *ver, const luaL_Reg *fns)
{
    lua_pushlightuserdata(L, ver);
    luaL_setfuncs(L, fns, 1);
}

/* Builds the twin's globals in a fresh sandbox. */
static int open_api(lua_State *L)
{
    version_t *ver = lua_touserdata(L, 1);
    if (luaL_newmetatable(L, TAG_MT)) {
        static const luaL_Reg m[] = {
            {"__index", tag_index}, {"__tostring", tag_tostring}, {"__eq", tag_eq}, {NULL, NULL}};
        luaL_setfuncs(L, m, 0);
        lua_pushliteral(L, TAG_MT);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, TIMER_MT)) {
        static const luaL_Reg m[] = {
            {"cancel", timer_cancel},  {"active", timer_active},       {"__gc", timer_gc},
            {"__close", timer_cancel}, {"__tostring", timer_tostring}, {NULL, NULL}};
        luaL_setfuncs(L, m, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);

    lua_newtable(L);
    ver->tagcache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    static const char pack[] = "return {...}";
    if (luaL_loadbufferx(L, pack, sizeof pack - 1, "=pack", "t") != LUA_OK)
        return luaL_error(L, "cannot compile the list packer: %s", lua_tostring(L, -1));
    ver->pack_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    ver->namecache_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* tags: a proxy; tags.flow is a tag object, tags.eff = x sets a derived tag. */
    lua_newtable(L);
    lua_newtable(L);
    static const luaL_Reg tags_m[] = {{"__index", tags_index},
                                      {"__newindex", tags_newindex},
                                      {"__pairs", tags_pairs},
                                      {NULL, NULL}};
    set_funcs(L, ver, tags_m);
    lua_pushliteral(L, "tags");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "tags");

    lua_newtable(L);
    static const luaL_Reg twin_fns[] = {{"on_start", api_on_start},
                                        {"on_change", api_on_change},
                                        {"on_update", api_on_update},
                                        {"every", api_every},
                                        {"after", api_after},
                                        {"tag", api_tag},
                                        {"set", api_set},
                                        {"get", api_get},
                                        {"event", api_event},
                                        {"write", api_write},
                                        {"device_stats", api_device_stats},
                                        {NULL, NULL}};
    set_funcs(L, ver, twin_fns);
    lua_pushstring(L, ver->twin->name);
    lua_setfield(L, -2, "name");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "tags");
    lua_setglobal(L, "twin");
    lua_pop(L, 1);

    lua_newtable(L);
    static const luaL_Reg log_fns[] = {{"debug", api_log_debug},
                                       {"info", api_log_info},
                                       {"warn", api_log_warn},
                                       {"error", api_log_error},
                                       {NULL, NULL}};
    set_funcs(L, ver, log_fns);
    lua_setglobal(L, "log");

    lua_newtable(L);
    static const luaL_Reg clock_fns[] = {
        {"now", api_clock_now}, {"iso", api_clock_iso}, {NULL, NULL}};
    set_funcs(L, ver, clock_fns);
    lua_pushboolean(L, dp_clock_is_virtual(ver->twin->host->clock));
    lua_setfield(L, -2, "virtual");
    lua_setglobal(L, "clock");

    lua_pushcfunction(L, api_duration);
    lua_setglobal(L, "duration");

    /* The plant's alarm list, for doppel.alarm (an internal module). */
    if (ver->twin->host->alarms != NULL) {
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        dp_lalarms_push(L, ver->twin->host->alarms, ver->twin->name);
        lua_setfield(L, -2, "doppel.alarmlist");
        lua_pop(L, 1);
    }
    return 0;
}

/* Pushes a msgpack blob as a Lua value, or an empty table for NULL. */
static int push_blob(lua_State *L, const char *data, size_t len, const char *what, char **err)
{
    if (data == NULL || len == 0) {
        lua_newtable(L);
        return 0;
    }
    char *inner = NULL;
    if (dp_lmp_decode(L, data, len, &inner) < 0) {
        int rc = dp_fail(err, DP_EINVAL, "%s: %s", what, inner);
        free(inner);
        return rc;
    }
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return dp_fail(err, DP_EINVAL, "%s: not a table", what);
    }
    return 0;
}

/* ---- versions --------------------------------------------------------- */

static void version_free(version_t *ver)
{
    if (ver == NULL)
        return;
    while (ver->timers != NULL)
        ltimer_free(ver->timers);
    dp_sandbox_free(ver->sb);
    free(ver->handlers);
    free(ver->watches);
    free(ver->watch_of);
    for (int i = 0; i < ver->nupdates; i++) {
        free(ver->updates[i].changed);
        free(ver->updates[i].mark);
    }
    free(ver->updates);
    for (int i = 0; i < ver->nuwatch; i++)
        free(ver->uwatch[i].more);
    free(ver->uwatch);
    free(ver);
}

static const char *shown_path(const char *path)
{
    return strncmp(path, "embed:", 6) == 0 ? path + 6 : path;
}

/* Builds a version: sandbox, API, params, state, then runs the script's main
 * chunk (which registers handlers). Does not run on_start. */
static version_t *version_new(dp_twin_t *tw, const char *state, size_t state_len, char **err)
{
    version_t *ver = dp_xcalloc(1, sizeof *ver);
    ver->twin = tw;
    ver->start_ref = LUA_NOREF;
    dp_sandbox_opts_t so = {
        .name = tw->name,
        .module_dir = tw->module_dir,
        .clock = tw->host->clock,
        .budget = tw->budget,
        .memory = tw->memory,
    };
    ver->sb = dp_sandbox_new(&so);
    if (ver->sb == NULL) {
        dp_fail(err, DP_ENOMEM, "%s: cannot create a Lua state within the memory cap", tw->name);
        free(ver);
        return NULL;
    }
    lua_State *L = ver->L = dp_sandbox_state(ver->sb);
    char *msg = NULL, *trace = NULL;
    lua_pushcfunction(L, open_api);
    lua_pushlightuserdata(L, ver);
    if (dp_sandbox_call(ver->sb, 1, 0, &msg, NULL) != DP_SB_OK) {
        dp_fail(err, DP_ESCRIPT, "%s: cannot set up the twin API: %s", tw->name, msg);
        goto fail;
    }
    if (push_blob(L, tw->params, tw->params_len, "params", err) < 0)
        goto fail;
    lua_setglobal(L, "params");
    if (push_blob(L, state, state_len, "state", err) < 0)
        goto fail;
    lua_setglobal(L, "state");

    size_t len = 0;
    char *code = dp_source_read(tw->script, &len, err);
    if (code == NULL)
        goto fail;
    char chunkname[512];
    snprintf(chunkname, sizeof chunkname, "@%s", shown_path(tw->script));
    int rc = dp_sandbox_load(ver->sb, code, len, chunkname, &msg);
    free(code);
    if (rc < 0) {
        dp_fail(err, rc, "%s", msg);
        goto fail;
    }
    dp_sb_status_t st = dp_sandbox_call(ver->sb, 0, 0, &msg, &trace);
    if (st != DP_SB_OK) {
        dp_fail(err, DP_ESCRIPT, "%s%s", st == DP_SB_ERROR ? "" : "loading stopped: ", msg);
        goto fail;
    }
    free(msg);
    free(trace);
    return ver;
fail:
    free(msg);
    free(trace);
    version_free(ver);
    return NULL;
}

static void swap_in(dp_twin_t *tw, version_t *ver)
{
    dp_store_t *store = tw->host->store;
    dp_store_unwatch_all(store, tw->sub);
    for (int i = 0; i < ver->nwatches; i++)
        dp_store_watch(store, tw->sub, ver->watches[i].tag, ver->watches[i].deadband);
    version_t *old = tw->cur;
    tw->cur = ver;
    ver->live = true;
    version_free(old);
}

/* ---- calling handlers ------------------------------------------------- */

static void suspend(dp_twin_t *tw, const char *why)
{
    tw->stats.suspended = true;
    dp_log_error(tw->name,
                 "suspended after %d faults within %lld s (last: %s); save a fixed script "
                 "to reload it",
                 tw->max_faults, (long long)(tw->fault_window / DP_US_PER_SEC), why);
    dp_event_t ev = {
        .ts = dp_clock_now(tw->host->clock), .twin = tw->name, .kind = "suspended", .text = why};
    tw->host->emit(tw->host, &ev);
}

static void report(version_t *ver, const char *what, dp_sb_status_t st, char *msg, char *trace)
{
    dp_twin_t *tw = ver->twin;
    if (st == DP_SB_ERROR) {
        tw->stats.errors++;
        dp_log_error(tw->name, "error in %s: %s", what, msg);
        if (trace != NULL && trace[0] != '\0')
            dp_log_debug(tw->name, "%s", trace);
    } else {
        tw->stats.faults++;
        dp_log_error(tw->name, "stopped %s: %s", what, msg);
        dp_event_t ev = {
            .ts = dp_clock_now(tw->host->clock), .twin = tw->name, .kind = "fault", .text = msg};
        tw->host->emit(tw->host, &ev);
        /* Give memory back right away; a blow-up kept in state faults again. */
        lua_gc(ver->L, LUA_GCCOLLECT);
        dp_time_t now = dp_clock_now(tw->host->clock);
        int keep = 0;
        for (int i = 0; i < tw->nfaults; i++) {
            if (now - tw->fault_times[i] < tw->fault_window)
                tw->fault_times[keep++] = tw->fault_times[i];
        }
        tw->nfaults = keep;
        if (tw->nfaults < (int)DP_ARRAY_LEN(tw->fault_times))
            tw->fault_times[tw->nfaults++] = now;
        if (tw->nfaults >= tw->max_faults && !tw->stats.suspended)
            suspend(tw, msg);
    }
}

/* Calls the function under nargs arguments on the version's stack. */
static void call_handler(version_t *ver, const char *what, int nargs)
{
    char *msg = NULL, *trace = NULL;
    ver->twin->stats.calls++;
    dp_sb_status_t st = dp_sandbox_call(ver->sb, nargs, 0, &msg, &trace);
    if (st != DP_SB_OK)
        report(ver, what, st, msg, trace);
    free(msg);
    free(trace);
}

/* Pushes the tag object for a handle from the cache table at `cache`. */
static void push_cached_tag(lua_State *L, version_t *ver, int cache, int id)
{
    if (lua_rawgeti(L, cache, id + 1) == LUA_TNIL) {
        lua_pop(L, 1);
        push_tag(L, ver, id);
    }
}

static void report_change(version_t *ver, const dp_change_t *c, dp_sb_status_t st, char *msg,
                          char *trace)
{
    char what[160];
    snprintf(what, sizeof what, "on_change(%s)",
             dp_store_get(ver->twin->host->store, c->tag)->name);
    report(ver, what, st, msg, trace);
}

/* Calls the handler(s) for one change: fn(value, tag). The message handler
 * and the tag cache are on the stack at `handler` and `cache`. */
static void dispatch(version_t *ver, const dp_change_t *c, int handler, int cache)
{
    lua_State *L = ver->L;
    char *msg = NULL, *trace = NULL;
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, ver->handlers[c->tag]) == LUA_TFUNCTION) {
        dp_lua_push_value(L, &c->v);
        push_cached_tag(L, ver, cache, c->tag);
        ver->twin->stats.calls++;
        dp_sb_status_t st = dp_sandbox_call_h(ver->sb, handler, 2, 0, &msg, &trace);
        if (st != DP_SB_OK)
            report_change(ver, c, st, msg, trace);
    } else {
        int list = lua_gettop(L);
        lua_Integer n = (lua_Integer)lua_rawlen(L, list);
        for (lua_Integer i = 1; i <= n && !ver->twin->stats.suspended; i++) {
            lua_rawgeti(L, list, i);
            dp_lua_push_value(L, &c->v);
            push_cached_tag(L, ver, cache, c->tag);
            ver->twin->stats.calls++;
            dp_sb_status_t st = dp_sandbox_call_h(ver->sb, handler, 2, 0, &msg, &trace);
            if (st != DP_SB_OK)
                report_change(ver, c, st, msg, trace);
        }
        lua_settop(L, list - 1);
    }
    free(msg);
    free(trace);
}

/* Pushes the list of the tag objects (or the values) of changes `c[0..n)`.
 * The elements go on the stack and a Lua function `return {...}` makes the
 * table: the VM fills its array in one pass, where lua_rawseti costs an API
 * call per element (about a third of a rule's cost over thousands of
 * registers). Past the stack's limit the list is built element by element.
 * Called between calls, where the twin's memory cap lets the host's
 * allocations through (see sb_alloc), so nothing here can raise. */
static void push_list(version_t *ver, const dp_change_t *const *c, int n, int cache, bool values)
{
    lua_State *L = ver->L;
    bool packed = lua_checkstack(L, n + 1);
    if (packed)
        lua_rawgeti(L, LUA_REGISTRYINDEX, ver->pack_ref);
    else
        lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        if (values)
            dp_lua_push_value(L, &c[i]->v);
        else
            push_cached_tag(L, ver, cache, c[i]->tag);
        if (!packed)
            lua_rawseti(L, -2, i + 1);
    }
    if (packed)
        lua_call(L, n, 1);
}

/* Calls each on_update handler with changes in this batch, in registration
 * order: fn(changed, values), the changed tag objects in order of their first
 * change and the value of each one's last sample in the batch (what
 * changed[i].value reads, without a metamethod call per read: a rule over
 * thousands of registers spends most of its time there otherwise). */
static void dispatch_updates(version_t *ver, int handler, int cache)
{
    lua_State *L = ver->L;
    char *msg = NULL, *trace = NULL;
    for (int h = 0; h < ver->nupdates; h++) {
        update_t *u = &ver->updates[h];
        if (u->nchanged == 0)
            continue;
        int n = u->nchanged;
        u->nchanged = 0;
        if (ver->twin->stats.suspended)
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, u->ref);
        if (u->nargs >= 1)
            push_list(ver, u->changed, n, cache, false);
        if (u->nargs >= 2)
            push_list(ver, u->changed, n, cache, true);
        ver->twin->stats.calls++;
        dp_sb_status_t st = dp_sandbox_call_h(ver->sb, handler, u->nargs, 0, &msg, &trace);
        if (st != DP_SB_OK) {
            char what[160];
            snprintf(what, sizeof what, "on_update(%s)",
                     dp_store_get(ver->twin->host->store, u->first_tag)->name);
            report(ver, what, st, msg, trace);
        }
    }
    free(msg);
    free(trace);
}

static void on_batch(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    (void)sub;
    dp_twin_t *tw = ud;
    version_t *ver = tw->cur;
    if (ver == NULL || tw->stats.suspended || tw->stopped)
        return;
    uint64_t t0 = uv_hrtime();
    lua_State *L = ver->L;
    int top = lua_gettop(L);
    int handler = dp_sandbox_push_handler(ver->sb);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ver->tagcache_ref);
    int cache = lua_gettop(L);
    if (++ver->batch == 0) {
        /* Wrapped: no mark may look as if it were from this batch. */
        for (int h = 0; h < ver->nupdates; h++)
            memset(ver->updates[h].mark, 0, sizeof(umark_t) * (size_t)ver->updates[h].nmark);
        ver->batch = 1;
    }
    uint32_t batch = ver->batch;
    bool updated = false;
    for (size_t i = 0; i < n && !tw->stats.suspended; i++) {
        const dp_change_t *c = &changes[i];
        if (c->tag < ver->nhandlers && ver->handlers[c->tag] != LUA_NOREF)
            dispatch(ver, c, handler, cache);
        if (c->tag < ver->nuwatch) {
            const uwatch_t *w = &ver->uwatch[c->tag];
            for (int k = 0; k < w->n; k++) {
                update_t *u = &ver->updates[k == 0 ? w->first : w->more[k - 1]];
                umark_t *m = &u->mark[c->tag];
                if (m->batch == batch) {
                    u->changed[m->pos] = c; /* a later sample of the tag */
                    continue;
                }
                if (u->nchanged == u->cap) {
                    u->cap = u->cap ? 2 * u->cap : 8;
                    u->changed = dp_xrealloc(u->changed, sizeof *u->changed * (size_t)u->cap);
                }
                *m = (umark_t){.batch = batch, .pos = (uint32_t)u->nchanged};
                u->changed[u->nchanged++] = c;
                updated = true;
            }
        }
    }
    if (updated)
        dispatch_updates(ver, handler, cache);
    lua_settop(L, top);
    tw->stats.cpu_us += (uv_hrtime() - t0) / 1000;
}

/* ---- public ----------------------------------------------------------- */

dp_twin_t *dp_twin_new(dp_twin_host_t *host, const dp_twin_opts_t *opts)
{
    dp_twin_t *tw = dp_xcalloc(1, sizeof *tw);
    tw->name = dp_xstrdup(opts->name);
    tw->script = dp_xstrdup(opts->script);
    tw->module_dir = opts->module_dir != NULL ? dp_xstrdup(opts->module_dir) : NULL;
    if (opts->params != NULL && opts->params_len > 0) {
        tw->params = dp_xmalloc(opts->params_len);
        memcpy(tw->params, opts->params, opts->params_len);
        tw->params_len = opts->params_len;
    }
    tw->budget = opts->budget;
    tw->memory = opts->memory;
    tw->max_faults = opts->max_faults > 0 ? opts->max_faults : 3;
    tw->fault_window = opts->fault_window > 0 ? opts->fault_window : 600 * DP_US_PER_SEC;
    size_t nc = 0;
    while (opts->commands != NULL && opts->commands[nc] != NULL)
        nc++;
    tw->commands = dp_xcalloc(nc + 1, sizeof *tw->commands);
    for (size_t i = 0; i < nc; i++)
        tw->commands[i] = dp_xstrdup(opts->commands[i]);
    tw->host = host;
    tw->sub = dp_store_sub_new(host->store, on_batch, tw);
    return tw;
}

void dp_twin_free(dp_twin_t *tw)
{
    if (tw == NULL)
        return;
    version_free(tw->cur);
    dp_store_sub_free(tw->host->store, tw->sub);
    free(tw->name);
    free(tw->script);
    free(tw->module_dir);
    free(tw->params);
    for (char **c = tw->commands; *c != NULL; c++)
        free(*c);
    free(tw->commands);
    free(tw);
}

const char *const *dp_twin_commands(const dp_twin_t *tw)
{
    return (const char *const *)tw->commands;
}

bool dp_twin_may_command(const dp_twin_t *tw, const char *tag)
{
    size_t n = strlen(tw->name);
    if (strncmp(tag, tw->name, n) == 0 && tag[n] == '.')
        return true;
    for (char **c = tw->commands; *c != NULL; c++) {
        if (dp_tag_pattern_match(*c, tag))
            return true;
    }
    return false;
}

int dp_twin_state(dp_twin_t *tw, char **out, size_t *len, char **err)
{
    if (tw->cur == NULL)
        return dp_fail(err, DP_ESTATE, "%s: not loaded", tw->name);
    lua_State *L = tw->cur->L;
    lua_getglobal(L, "state");
    int rc = dp_lmp_encode(L, -1, "state", out, len, err);
    lua_pop(L, 1);
    return rc;
}

int dp_twin_load(dp_twin_t *tw, const char *state, size_t state_len, char **err)
{
    uint64_t t0 = uv_hrtime();
    bool reload = tw->cur != NULL;
    char *kept = NULL;
    size_t kept_len = 0;
    char *msg = NULL, *trace = NULL;
    int rc = 0;
    bool ver_begun = false;
    if (reload) {
        rc = dp_twin_state(tw, &kept, &kept_len, &msg);
        if (rc < 0) {
            rc = dp_fail(err, rc, "%s: state cannot be kept: %s", shown_path(tw->script), msg);
            goto out;
        }
        state = kept;
        state_len = kept_len;
    }
    /* Alarms the new version no longer declares leave the plant's list. */
    if (tw->host->alarms != NULL)
        dp_alarms_begin(tw->host->alarms, tw->name);
    ver_begun = true;
    version_t *ver = version_new(tw, state, state_len, &msg);
    if (ver == NULL) {
        rc = dp_fail(err, DP_ESCRIPT, "%s", msg);
        goto out;
    }
    if (!tw->host->check_only && ver->start_ref != LUA_NOREF) {
        lua_rawgeti(ver->L, LUA_REGISTRYINDEX, ver->start_ref);
        dp_sb_status_t st = dp_sandbox_call(ver->sb, 0, 0, &msg, &trace);
        if (st != DP_SB_OK) {
            rc = dp_fail(err, DP_ESCRIPT, "on_start: %s", msg);
            version_free(ver);
            goto out;
        }
    }
    if (tw->host->check_only) {
        /* Nothing runs in check mode: drop the timers the script started. */
        while (ver->timers != NULL)
            ltimer_free(ver->timers);
    }
    swap_in(tw, ver);
    tw->stats.generation++;
    tw->stats.suspended = false;
    tw->nfaults = 0;
    if (reload) {
        tw->stats.reloads++;
        double ms = (double)(uv_hrtime() - t0) / 1e6;
        dp_log_info(tw->name, "reloaded %s in %.2f ms, state kept (%zu bytes)",
                    shown_path(tw->script), ms, kept_len);
        dp_event_t ev = {.ts = dp_clock_now(tw->host->clock),
                         .twin = tw->name,
                         .kind = "reload",
                         .text = "reloaded, state kept"};
        tw->host->emit(tw->host, &ev);
    }
out:
    if (tw->host->alarms != NULL && ver_begun)
        dp_alarms_end(tw->host->alarms, tw->name, rc == 0);
    if (rc < 0 && reload) {
        tw->stats.reload_failures++;
        dp_log_error(tw->name, "reload failed, previous version keeps running: %s",
                     err != NULL && *err != NULL ? *err : msg);
    }
    free(kept);
    free(msg);
    free(trace);
    return rc;
}

const char *dp_twin_name(const dp_twin_t *tw)
{
    return tw->name;
}

const char *dp_twin_script(const dp_twin_t *tw)
{
    return tw->script;
}

const char *const *dp_twin_required_files(const dp_twin_t *tw)
{
    static const char *const none[] = {NULL};
    return tw->cur != NULL ? dp_sandbox_required_files(tw->cur->sb) : none;
}

void dp_twin_get_stats(const dp_twin_t *tw, dp_twin_stats_t *out)
{
    *out = tw->stats;
    out->memory = tw->cur != NULL ? dp_sandbox_memory(tw->cur->sb) : 0;
}

dp_sandbox_t *dp_twin_sandbox(dp_twin_t *tw)
{
    return tw->cur != NULL ? tw->cur->sb : NULL;
}

void dp_twin_stop(dp_twin_t *tw)
{
    if (tw->cur != NULL) {
        while (tw->cur->timers != NULL)
            ltimer_free(tw->cur->timers);
    }
    dp_store_unwatch_all(tw->host->store, tw->sub);
    tw->stopped = true;
}

void dp_twin_resume(dp_twin_t *tw)
{
    if (tw->stats.suspended)
        dp_log_info(tw->name, "resumed");
    tw->stats.suspended = false;
    tw->nfaults = 0;
}
