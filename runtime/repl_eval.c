#include "repl_eval.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "twin.h"

#define REPL_TAG_MT   "doppel.repl.tag"
#define TWIN_TAG_MT   "doppel.tag" /* twin.c's tag objects */
#define PLANT_KEY     "doppel.repl.plant"
#define PP_MAX_DEPTH  6
#define PP_MAX_ITEMS  200
#define PP_MAX_OUTPUT (64u << 10)
#define PP_WIDTH      72

/* ---- print ---------------------------------------------------------------- */

static dp_repl_print_cb g_sink;
static void *g_sink_ud;

void dp_repl_set_print_sink(dp_repl_print_cb cb, void *ud)
{
    g_sink = cb;
    g_sink_ud = ud;
}

/* print for REPL environments: to the client while an evaluation runs,
 * otherwise to the original print (upvalue 1), which logs. */
static int repl_print(lua_State *L)
{
    int n = lua_gettop(L);
    if (g_sink == NULL) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, n, 0);
        return 0;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    g_sink(s, len, g_sink_ud);
    return 0;
}

/* ---- tag formatting ------------------------------------------------------- */

static void format_age(dp_time_t us, char *buf, size_t size)
{
    if (us < 0)
        us = 0;
    long long s = (long long)(us / DP_US_PER_SEC);
    if (us < DP_US_PER_SEC)
        snprintf(buf, size, "%lld ms", (long long)(us / 1000));
    else if (s < 60)
        snprintf(buf, size, "%.1f s", (double)us / 1e6);
    else if (s < 3600)
        snprintf(buf, size, "%lld min %lld s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%lld h %lld min", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, size, "%lld d %lld h", s / 86400, s % 86400 / 3600);
}

void dp_repl_format_tag(dp_plant_t *plant, int id, bool with_name, char *buf, size_t size)
{
    const dp_tag_t *t = dp_store_get(dp_plant_store(plant), id);
    if (t == NULL) {
        snprintf(buf, size, "(no tag %d)", id);
        return;
    }
    char val[256];
    switch (t->v.type) {
    case DP_NUM:
        snprintf(val, sizeof val, "%.6g", t->v.u.n);
        break;
    case DP_BOOL:
        snprintf(val, sizeof val, "%s", t->v.u.b ? "true" : "false");
        break;
    case DP_STR:
        snprintf(val, sizeof val, "\"%.200s%s\"", t->v.u.s, strlen(t->v.u.s) > 200 ? "..." : "");
        break;
    default:
        snprintf(buf, size, "%s%snil (no value yet)", with_name ? t->name : "",
                 with_name ? " = " : "");
        return;
    }
    char age[48];
    format_age(dp_clock_now(dp_plant_clock(plant)) - t->ts, age, sizeof age);
    snprintf(buf, size, "%s%s%s%s%s (%s, %s ago)", with_name ? t->name : "", with_name ? " = " : "",
             val, t->unit[0] ? " " : "", t->unit, dp_quality_name(t->quality), age);
}

/* ---- plant-level environment --------------------------------------------- */

static dp_plant_t *get_plant(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, PLANT_KEY);
    dp_plant_t *p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return p;
}

typedef struct {
    int id;
} rtag_t;

static void push_rtag(lua_State *L, int id)
{
    rtag_t *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->id = id;
    luaL_setmetatable(L, REPL_TAG_MT);
}

static const char *const tag_fields[] = {"value", "ts",      "quality", "good",   "unit",   "name",
                                         "age",   "derived", "history", "values", "source", NULL};

/* tag:history(n) and tag:values(n): the last n samples, oldest first. */
static int rtag_history_impl(lua_State *L, bool full)
{
    rtag_t *t = luaL_checkudata(L, 1, REPL_TAG_MT);
    dp_store_t *store = dp_plant_store(get_plant(L));
    size_t len = dp_store_history_len(store, t->id);
    lua_Integer n = luaL_optinteger(L, 2, (lua_Integer)len);
    if (n < 0)
        n = 0;
    if ((size_t)n > len)
        n = (lua_Integer)len;
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        const dp_sample_t *s = dp_store_history_at(store, t->id, (size_t)(n - 1 - i));
        if (full) {
            lua_createtable(L, 0, 3);
            dp_lua_push_value(L, &s->v);
            lua_setfield(L, -2, "value");
            lua_pushnumber(L, (double)s->ts / 1e6);
            lua_setfield(L, -2, "ts");
            lua_pushstring(L, dp_quality_name(s->quality));
            lua_setfield(L, -2, "quality");
        } else {
            dp_lua_push_value(L, &s->v);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int rtag_history(lua_State *L)
{
    return rtag_history_impl(L, true);
}

static int rtag_values(lua_State *L)
{
    return rtag_history_impl(L, false);
}

static int rtag_index(lua_State *L)
{
    rtag_t *t = luaL_checkudata(L, 1, REPL_TAG_MT);
    const char *k = luaL_checkstring(L, 2);
    dp_plant_t *p = get_plant(L);
    const dp_tag_t *tag = dp_store_get(dp_plant_store(p), t->id);
    bool has = tag->v.type != DP_NIL;
    if (strcmp(k, "value") == 0)
        dp_lua_push_value(L, &tag->v);
    else if (strcmp(k, "ts") == 0)
        has ? lua_pushnumber(L, (double)tag->ts / 1e6) : lua_pushnil(L);
    else if (strcmp(k, "quality") == 0)
        lua_pushstring(L, dp_quality_name(tag->quality));
    else if (strcmp(k, "good") == 0)
        lua_pushboolean(L, has && tag->quality == DP_Q_GOOD);
    else if (strcmp(k, "unit") == 0)
        lua_pushstring(L, tag->unit);
    else if (strcmp(k, "name") == 0)
        lua_pushstring(L, tag->name);
    else if (strcmp(k, "age") == 0)
        has ? lua_pushnumber(L, (double)(dp_clock_now(dp_plant_clock(p)) - tag->ts) / 1e6)
            : lua_pushnil(L);
    else if (strcmp(k, "derived") == 0)
        lua_pushboolean(L, (tag->flags & DP_TAG_DERIVED) != 0);
    else if (strcmp(k, "source") == 0)
        tag->source != NULL ? lua_pushstring(L, tag->source) : lua_pushnil(L);
    else if (strcmp(k, "history") == 0)
        lua_pushcfunction(L, rtag_history);
    else if (strcmp(k, "values") == 0)
        lua_pushcfunction(L, rtag_values);
    else
        return luaL_error(L,
                          "tag %s has no field \"%s\" (value, ts, quality, good, unit, name, age, "
                          "derived, source, history, values)",
                          tag->name, k);
    return 1;
}

static int rtag_newindex(lua_State *L)
{
    rtag_t *t = luaL_checkudata(L, 1, REPL_TAG_MT);
    const dp_tag_t *tag = dp_store_get(dp_plant_store(get_plant(L)), t->id);
    return luaL_error(L, "%s is read-only here: write it with .write %s VALUE (through the guard)",
                      tag->name, tag->name);
}

static int rtag_tostring(lua_State *L)
{
    rtag_t *t = luaL_checkudata(L, 1, REPL_TAG_MT);
    char buf[512];
    dp_repl_format_tag(get_plant(L), t->id, true, buf, sizeof buf);
    lua_pushstring(L, buf);
    return 1;
}

static int rtag_eq(lua_State *L)
{
    rtag_t *a = luaL_testudata(L, 1, REPL_TAG_MT);
    rtag_t *b = luaL_testudata(L, 2, REPL_TAG_MT);
    lua_pushboolean(L, a != NULL && b != NULL && a->id == b->id);
    return 1;
}

/* The twin name of a twin proxy at idx (its metatable's __dp_twin), or NULL. */
static const char *proxy_twin(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
        return NULL;
    lua_getfield(L, -1, "__dp_twin");
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 2); /* the string stays alive: the metatable holds it */
    return name;
}

static int find_twin_tag(lua_State *L, const char *twin, const char *tag)
{
    char full[256];
    snprintf(full, sizeof full, "%s.%s", twin, tag);
    return dp_store_find(dp_plant_store(get_plant(L)), full);
}

static int proxy_index(lua_State *L)
{
    const char *twin = proxy_twin(L, 1);
    const char *k = luaL_checkstring(L, 2);
    int id = find_twin_tag(L, twin, k);
    if (id < 0)
        return luaL_error(L, "twin %s has no tag \"%s\" (.tags %s lists them)", twin, k, twin);
    push_rtag(L, id);
    return 1;
}

static int proxy_newindex(lua_State *L)
{
    const char *twin = proxy_twin(L, 1);
    const char *k = luaL_checkstring(L, 2);
    return luaL_error(L,
                      "%s.%s is read-only here: write it with .write %s.%s VALUE (through the "
                      "guard), or set derived tags inside the twin (.use %s)",
                      twin, k, twin, k, twin);
}

static int proxy_next(lua_State *L)
{
    const char *twin = lua_tostring(L, lua_upvalueindex(1));
    dp_store_t *store = dp_plant_store(get_plant(L));
    int i = (int)lua_tointeger(L, lua_upvalueindex(2));
    size_t plen = strlen(twin);
    for (int n = dp_store_count(store); i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, i);
        if (strncmp(t->name, twin, plen) == 0 && t->name[plen] == '.') {
            lua_pushinteger(L, i + 1);
            lua_replace(L, lua_upvalueindex(2));
            lua_pushstring(L, t->name + plen + 1);
            push_rtag(L, i);
            return 2;
        }
    }
    lua_pushnil(L);
    return 1;
}

static int proxy_pairs(lua_State *L)
{
    lua_pushstring(L, proxy_twin(L, 1));
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, proxy_next, 2);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int proxy_tostring(lua_State *L)
{
    lua_pushfstring(L, "twin %s", proxy_twin(L, 1));
    return 1;
}

static int api_tag(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int id = dp_store_find(dp_plant_store(get_plant(L)), name);
    if (id < 0)
        return luaL_error(L, "no tag \"%s\" (names are TWIN.TAG; .tags lists them)", name);
    push_rtag(L, id);
    return 1;
}

static void push_proxy(lua_State *L, const char *twin)
{
    lua_newtable(L);
    lua_createtable(L, 0, 6);
    static const luaL_Reg m[] = {{"__index", proxy_index},
                                 {"__newindex", proxy_newindex},
                                 {"__pairs", proxy_pairs},
                                 {"__tostring", proxy_tostring},
                                 {NULL, NULL}};
    luaL_setfuncs(L, m, 0);
    lua_pushstring(L, twin);
    lua_setfield(L, -2, "__dp_twin");
    lua_pushliteral(L, "twin");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
}

static int open_plant_env(lua_State *L)
{
    dp_plant_t *p = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, p);
    lua_setfield(L, LUA_REGISTRYINDEX, PLANT_KEY);
    luaL_newmetatable(L, REPL_TAG_MT);
    static const luaL_Reg tm[] = {{"__index", rtag_index},
                                  {"__newindex", rtag_newindex},
                                  {"__tostring", rtag_tostring},
                                  {"__eq", rtag_eq},
                                  {NULL, NULL}};
    luaL_setfuncs(L, tm, 0);
    lua_pop(L, 1);

    lua_getglobal(L, "print");
    lua_pushcclosure(L, repl_print, 1);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, api_tag);
    lua_setglobal(L, "tag");

    lua_newtable(L); /* twins */
    for (int i = 0; i < dp_plant_twin_count(p); i++) {
        const char *name = dp_twin_name(dp_plant_twin_at(p, i));
        push_proxy(L, name);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
        /* A twin whose name is already a global (say "string") stays
         * reachable as twins.NAME. */
        if (lua_getglobal(L, name) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_setglobal(L, name);
        } else {
            lua_pop(L, 2);
        }
    }
    lua_setglobal(L, "twins");

    lua_createtable(L, 0, 2);
    lua_pushstring(L, dp_plant_name(p));
    lua_setfield(L, -2, "name");
    lua_setglobal(L, "plant");
    return 0;
}

dp_sandbox_t *dp_repl_plant_sandbox(dp_plant_t *plant, char **err)
{
    dp_sandbox_opts_t so = {.name = "repl", .clock = dp_plant_clock(plant)};
    dp_sandbox_t *sb = dp_sandbox_new(&so);
    if (sb == NULL) {
        dp_fail(err, DP_ENOMEM, "cannot create the REPL's Lua state");
        return NULL;
    }
    lua_State *L = dp_sandbox_state(sb);
    lua_pushcfunction(L, open_plant_env);
    lua_pushlightuserdata(L, plant);
    char *msg = NULL;
    if (dp_sandbox_call(sb, 1, 0, &msg, NULL) != DP_SB_OK) {
        dp_fail(err, DP_ESCRIPT, "cannot set up the REPL environment: %s", msg);
        free(msg);
        dp_sandbox_free(sb);
        return NULL;
    }
    return sb;
}

/* ---- pretty printing ------------------------------------------------------ */

typedef struct {
    const dp_repl_ctx_t *ctx;
    int seen; /* stack index of the table of tables being printed */
    size_t total;
} pp_t;

static const char *const keywords[] = {"and",   "break", "do",       "else",  "elseif", "end",
                                       "false", "for",   "function", "goto",  "if",     "in",
                                       "local", "nil",   "not",      "or",    "repeat", "return",
                                       "then",  "true",  "until",    "while", NULL};

static bool is_identifier(const char *s, size_t len)
{
    if (len == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    }
    for (const char *const *k = keywords; *k != NULL; k++) {
        if (strlen(*k) == len && memcmp(*k, s, len) == 0)
            return false;
    }
    return true;
}

static void pp_value(lua_State *L, pp_t *p, int idx, int depth, int indent);

static void pp_string(lua_State *L, int idx)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    size_t shown = len > 4000 ? 4000 : len;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            luaL_addchar(&b, '\\');
            luaL_addchar(&b, (char)c);
        } else if (c == '\n') {
            luaL_addstring(&b, "\\n");
        } else if (c == '\t') {
            luaL_addstring(&b, "\\t");
        } else if (c == '\r') {
            luaL_addstring(&b, "\\r");
        } else if (c < 0x20 || c == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\%d", c);
            luaL_addstring(&b, esc);
        } else {
            luaL_addchar(&b, (char)c);
        }
    }
    luaL_addchar(&b, '"');
    if (shown < len) {
        char more[48];
        snprintf(more, sizeof more, "... (%zu bytes)", len);
        luaL_addstring(&b, more);
    }
    luaL_pushresult(&b);
}

/* Lines of a twin's tags, for P101 at plant level and `tags` in a twin. */
static void pp_twin_tags(lua_State *L, pp_t *p, const char *twin, int indent)
{
    dp_store_t *store = dp_plant_store(p->ctx->plant);
    size_t plen = strlen(twin);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "twin %s {\n", twin);
    luaL_addvalue(&b);
    for (int i = 0, n = dp_store_count(store); i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, i);
        if (strncmp(t->name, twin, plen) != 0 || t->name[plen] != '.')
            continue;
        char line[512];
        dp_repl_format_tag(p->ctx->plant, i, false, line, sizeof line);
        for (int s = 0; s < indent + 2; s++)
            luaL_addchar(&b, ' ');
        lua_pushfstring(L, "%s = %s,\n", t->name + plen + 1, line);
        luaL_addvalue(&b);
    }
    for (int s = 0; s < indent; s++)
        luaL_addchar(&b, ' ');
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
}

/* Orders keys: numbers, then strings, then booleans, then the rest as found. */
static int key_rank(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        return 0;
    case LUA_TSTRING:
        return 1;
    case LUA_TBOOLEAN:
        return 2;
    default:
        return 3;
    }
}

static bool key_less(lua_State *L, int keys, int a, int b)
{
    lua_rawgeti(L, keys, a);
    lua_rawgeti(L, keys, b);
    int ra = key_rank(L, -2), rb = key_rank(L, -1);
    bool less;
    if (ra != rb)
        less = ra < rb;
    else if (ra == 0 || ra == 1)
        less = lua_compare(L, -2, -1, LUA_OPLT); /* raw for numbers and strings */
    else if (ra == 2)
        less = !lua_toboolean(L, -2) && lua_toboolean(L, -1);
    else
        less = a < b;
    lua_pop(L, 2);
    return less;
}

static void pp_table(lua_State *L, pp_t *p, int t, int depth, int indent)
{
    const char *twin = proxy_twin(L, t);
    if (twin != NULL) {
        pp_twin_tags(L, p, twin, indent);
        return;
    }
    int mt = luaL_getmetafield(L, t, "__name");
    bool tags =
        mt == LUA_TSTRING && p->ctx->twin != NULL && strcmp(lua_tostring(L, -1), "tags") == 0;
    if (mt != LUA_TNIL)
        lua_pop(L, 1);
    if (tags) {
        pp_twin_tags(L, p, p->ctx->twin, indent);
        return;
    }
    if (luaL_getmetafield(L, t, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        luaL_tolstring(L, t, NULL);
        return;
    }
    if (depth >= PP_MAX_DEPTH) {
        lua_pushliteral(L, "{...}");
        return;
    }
    lua_pushvalue(L, t);
    if (lua_rawget(L, p->seen) != LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushliteral(L, "<cycle>");
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, p->seen);

    luaL_checkstack(L, 8, "pretty printer");
    lua_newtable(L);
    int parts = lua_gettop(L);
    lua_newtable(L);
    int keys = lua_gettop(L);
    int np = 0, nk = 0;
    size_t hidden = 0, width = 0;
    bool multiline = false;
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    for (lua_Integer i = 1; i <= n; i++) {
        if (np >= PP_MAX_ITEMS || p->total > PP_MAX_OUTPUT) {
            hidden += (size_t)(n - i + 1);
            break;
        }
        lua_rawgeti(L, t, i);
        pp_value(L, p, lua_gettop(L), depth + 1, indent + 2);
        lua_rawseti(L, parts, ++np);
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k >= 1 && k <= n)
                continue;
        }
        if (nk >= PP_MAX_ITEMS) {
            hidden++;
            continue;
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++nk);
    }
    int *order = lua_newuserdatauv(L, sizeof(int) * (size_t)(nk + 1), 0);
    for (int i = 0; i < nk; i++) {
        int k = i + 1, j = i;
        while (j > 0 && key_less(L, keys, k, order[j - 1])) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    for (int i = 0; i < nk; i++) {
        if (p->total > PP_MAX_OUTPUT) {
            hidden += (size_t)(nk - i);
            break;
        }
        lua_rawgeti(L, keys, order[i]);
        int k = lua_gettop(L);
        size_t klen = 0;
        const char *ks = lua_type(L, k) == LUA_TSTRING ? lua_tolstring(L, k, &klen) : NULL;
        if (ks != NULL && is_identifier(ks, klen)) {
            lua_pushvalue(L, k);
        } else {
            lua_pushliteral(L, "[");
            pp_value(L, p, k, depth + 1, indent + 2);
            lua_pushliteral(L, "]");
            lua_concat(L, 3);
        }
        lua_pushliteral(L, " = ");
        lua_pushvalue(L, k);
        lua_rawget(L, t);
        pp_value(L, p, lua_gettop(L), depth + 1, indent + 2);
        lua_remove(L, -2);
        lua_concat(L, 3);
        lua_rawseti(L, parts, ++np);
        lua_pop(L, 1);
    }
    if (hidden > 0) {
        lua_pushfstring(L, "... (%d more)", (int)hidden);
        lua_rawseti(L, parts, ++np);
    }
    for (int i = 1; i <= np; i++) {
        size_t len;
        lua_rawgeti(L, parts, i);
        const char *s = lua_tolstring(L, -1, &len);
        width += len + 2;
        if (memchr(s, '\n', len) != NULL)
            multiline = true;
        lua_pop(L, 1);
    }
    if (width + (size_t)indent > PP_WIDTH)
        multiline = true;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (np == 0) {
        luaL_addstring(&b, "{}");
    } else {
        luaL_addstring(&b, multiline ? "{\n" : "{ ");
        for (int i = 1; i <= np; i++) {
            if (multiline) {
                for (int s = 0; s < indent + 2; s++)
                    luaL_addchar(&b, ' ');
            }
            lua_rawgeti(L, parts, i);
            luaL_addvalue(&b);
            if (multiline)
                luaL_addstring(&b, ",\n");
            else if (i < np)
                luaL_addstring(&b, ", ");
        }
        if (multiline) {
            for (int s = 0; s < indent; s++)
                luaL_addchar(&b, ' ');
            luaL_addchar(&b, '}');
        } else {
            luaL_addstring(&b, " }");
        }
    }
    luaL_pushresult(&b);
    lua_replace(L, parts);
    lua_settop(L, parts);
    lua_pushvalue(L, t);
    lua_pushnil(L);
    lua_rawset(L, p->seen);
}

static bool is_tag_object(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, REPL_TAG_MT) != NULL ||
           luaL_testudata(L, idx, TWIN_TAG_MT) != NULL;
}

static void pp_value(lua_State *L, pp_t *p, int idx, int depth, int indent)
{
    luaL_checkstack(L, 10, "pretty printer");
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        pp_string(L, idx);
        break;
    case LUA_TTABLE:
        pp_table(L, p, idx, depth, indent);
        break;
    case LUA_TFUNCTION: {
        lua_Debug ar;
        lua_pushvalue(L, idx);
        lua_getinfo(L, ">S", &ar);
        if (strcmp(ar.what, "C") == 0)
            lua_pushliteral(L, "builtin function");
        else
            lua_pushfstring(L, "function (%s:%d)", ar.short_src, ar.linedefined);
        break;
    }
    case LUA_TUSERDATA:
        if (is_tag_object(L, idx)) {
            lua_getfield(L, idx, "name");
            int id = dp_store_find(dp_plant_store(p->ctx->plant), lua_tostring(L, -1));
            lua_pop(L, 1);
            char line[512];
            dp_repl_format_tag(p->ctx->plant, id, true, line, sizeof line);
            lua_pushstring(L, line);
            break;
        }
        luaL_tolstring(L, idx, NULL);
        break;
    default:
        luaL_tolstring(L, idx, NULL);
    }
    size_t len = 0;
    lua_tolstring(L, -1, &len);
    p->total += len;
}

/* pp(...): upvalue 1 is the context. Returns one string. */
static int pp_main(lua_State *L)
{
    int n = lua_gettop(L);
    pp_t p = {.ctx = lua_touserdata(L, lua_upvalueindex(1))};
    lua_newtable(L);
    p.seen = lua_gettop(L);
    luaL_Buffer b;
    bool multiline = false;
    for (int i = 1; i <= n; i++)
        pp_value(L, &p, i, 0, 0);
    for (int i = 1; i <= n; i++) {
        if (strchr(lua_tostring(L, p.seen + i), '\n') != NULL)
            multiline = true;
    }
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, multiline ? '\n' : '\t');
        lua_pushvalue(L, p.seen + i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---- evaluation ----------------------------------------------------------- */

/* Drops the trailing "[C]: in ?" frames that every REPL traceback ends with. */
static char *clean_trace(const char *trace)
{
    char *t = dp_xstrdup(trace != NULL ? trace : "");
    for (;;) {
        size_t len = strlen(t);
        const char *tail = "\n\t[C]: in ?";
        size_t tl = strlen(tail);
        if (len >= tl && strcmp(t + len - tl, tail) == 0)
            t[len - tl] = '\0';
        else
            break;
    }
    return t;
}

/* A twin environment: reads and writes go to the twin's globals; print is
 * the REPL's. */
static void push_twin_env(lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_getglobal(L, "print");
    lua_pushcclosure(L, repl_print, 1);
    lua_setfield(L, -2, "print");
    lua_createtable(L, 0, 2);
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__index");
    lua_pushglobaltable(L);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
}

static int setup_env(lua_State *L)
{
    /* arg 1: the chunk */
    push_twin_env(L);
    lua_setupvalue(L, 1, 1);
    return 0;
}

bool dp_repl_eval(const dp_repl_ctx_t *ctx, dp_sandbox_t *sb, const char *text, char **out)
{
    lua_State *L = dp_sandbox_state(sb);
    int top = lua_gettop(L);
    char *msg = NULL, *trace = NULL;
    size_t len = strlen(text);
    char *ret = dp_xasprintf("return %s;", text);
    int rc = dp_sandbox_load(sb, ret, strlen(ret), "=repl", NULL);
    free(ret);
    if (rc < 0 && dp_sandbox_load(sb, text, len, "=repl", &msg) < 0) {
        *out = msg;
        return false;
    }
    if (ctx->twin != NULL) {
        /* Setting the environment allocates: do it under the sandbox too. */
        lua_pushcfunction(L, setup_env);
        lua_pushvalue(L, -2);
        if (dp_sandbox_call(sb, 1, 0, &msg, NULL) != DP_SB_OK) {
            lua_settop(L, top);
            *out = dp_xasprintf("cannot set up the twin environment: %s", msg);
            free(msg);
            return false;
        }
    }
    dp_sb_status_t st = dp_sandbox_call(sb, 0, LUA_MULTRET, &msg, &trace);
    if (st != DP_SB_OK) {
        char *t = clean_trace(trace);
        if (st == DP_SB_ERROR)
            *out = dp_xasprintf("%s%s%s", msg, t[0] ? "\n" : "", t);
        else
            *out = dp_xasprintf("stopped: %s (the plant keeps running)", msg);
        free(t);
        free(msg);
        free(trace);
        lua_settop(L, top);
        return false;
    }
    int n = lua_gettop(L) - top;
    if (n == 0) {
        *out = dp_xstrdup("");
        return true;
    }
    lua_pushlightuserdata(L, (void *)ctx);
    lua_pushcclosure(L, pp_main, 1);
    lua_insert(L, top + 1);
    st = dp_sandbox_call(sb, n, 1, &msg, NULL);
    bool ok = st == DP_SB_OK;
    if (ok)
        *out = dp_xstrdup(lua_tostring(L, -1));
    else
        *out = dp_xasprintf("cannot print the result: %s", msg);
    free(msg);
    lua_settop(L, top);
    return ok;
}

/* ---- completion ----------------------------------------------------------- */

void dp_repl_items_add(char ***items, size_t *n, size_t max, const char *s)
{
    if (*n >= max)
        return;
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*items)[i], s) == 0)
            return;
    }
    *items = dp_xrealloc(*items, sizeof **items * (*n + 1));
    (*items)[(*n)++] = dp_xstrdup(s);
}

typedef struct {
    char ***items;
    size_t *n;
    size_t max;
    const char *base; /* "P101." */
    const char *part; /* "fl" */
} cands_t;

static void cand(cands_t *c, const char *name)
{
    size_t pl = strlen(c->part);
    if (strncmp(name, c->part, pl) != 0 || !is_identifier(name, strlen(name)))
        return;
    char full[512];
    snprintf(full, sizeof full, "%s%s", c->base, name);
    dp_repl_items_add(c->items, c->n, c->max, full);
}

static void cand_tags(cands_t *c, dp_plant_t *plant, const char *twin)
{
    dp_store_t *store = dp_plant_store(plant);
    size_t plen = strlen(twin);
    for (int i = 0, n = dp_store_count(store); i < n; i++) {
        const char *name = dp_store_get(store, i)->name;
        if (strncmp(name, twin, plen) == 0 && name[plen] == '.')
            cand(c, name + plen + 1);
    }
}

/* String keys of the table at idx and of its __index tables. */
static void cand_table(lua_State *L, cands_t *c, int idx)
{
    lua_pushvalue(L, idx);
    for (int level = 0; level < 4 && lua_istable(L, -1); level++) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING)
                cand(c, lua_tostring(L, -1));
        }
        if (!lua_getmetatable(L, t)) {
            break;
        }
        lua_getfield(L, -1, "__index");
        lua_remove(L, -2);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
}

/* What a value at the top of the stack is, for completion. */
typedef enum { V_NONE, V_TABLE, V_TWIN, V_TAGS, V_TAG, V_STRING } vkind_t;

static vkind_t kind_of(lua_State *L, const dp_repl_ctx_t *ctx, const char **twin)
{
    int t = lua_gettop(L);
    if (lua_type(L, t) == LUA_TSTRING)
        return V_STRING;
    if (lua_type(L, t) == LUA_TUSERDATA && is_tag_object(L, t))
        return V_TAG;
    if (!lua_istable(L, t))
        return V_NONE;
    if ((*twin = proxy_twin(L, t)) != NULL)
        return V_TWIN;
    if (ctx->twin != NULL) {
        int mt = luaL_getmetafield(L, t, "__name");
        bool tags = mt == LUA_TSTRING && strcmp(lua_tostring(L, -1), "tags") == 0;
        if (mt != LUA_TNIL)
            lua_pop(L, 1);
        if (tags) {
            *twin = ctx->twin;
            return V_TAGS;
        }
    }
    return V_TABLE;
}

/* Replaces the table at the top with its field `k`, read raw (following
 * __index tables); nil when absent. */
static void raw_field(lua_State *L, const char *k)
{
    for (int level = 0; level < 4; level++) {
        int t = lua_gettop(L);
        lua_pushstring(L, k);
        if (lua_rawget(L, t) != LUA_TNIL || !lua_getmetatable(L, t)) {
            lua_remove(L, t);
            return;
        }
        lua_remove(L, -2); /* the nil */
        lua_getfield(L, -1, "__index");
        lua_remove(L, -2);
        lua_remove(L, t);
        if (!lua_istable(L, -1))
            break;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

void dp_repl_complete_lua(const dp_repl_ctx_t *ctx, dp_sandbox_t *sb, const char *word,
                          char ***items, size_t *n, size_t max)
{
    lua_State *L = dp_sandbox_state(sb);
    if (!lua_checkstack(L, 20))
        return;
    int top = lua_gettop(L);
    const char *last = word + strlen(word);
    for (const char *q = word; *q; q++) {
        if (*q == '.' || *q == ':')
            last = q;
    }
    char base[256];
    cands_t c = {.items = items, .n = n, .max = max, .base = "", .part = word};
    if (last == word + strlen(word)) {
        lua_pushglobaltable(L);
        cand_table(L, &c, lua_gettop(L));
        for (const char *const *k = keywords; *k != NULL; k++) {
            if (strncmp(*k, word, strlen(word)) == 0)
                dp_repl_items_add(items, n, max, *k);
        }
        lua_settop(L, top);
        return;
    }
    size_t blen = (size_t)(last - word) + 1;
    if (blen >= sizeof base)
        return;
    memcpy(base, word, blen);
    base[blen] = '\0';
    c.base = base;
    c.part = last + 1;
    bool method = *last == ':';

    /* Walk the path: each segment before `last`. */
    lua_pushglobaltable(L);
    const char *seg = word;
    while (seg < last) {
        const char *end = seg;
        while (end < last && *end != '.' && *end != ':')
            end++;
        char k[128];
        size_t kl = (size_t)(end - seg);
        if (kl == 0 || kl >= sizeof k)
            goto out;
        memcpy(k, seg, kl);
        k[kl] = '\0';
        const char *twin = NULL;
        vkind_t kind = kind_of(L, ctx, &twin);
        if (kind == V_TWIN || kind == V_TAGS) {
            char full[256];
            snprintf(full, sizeof full, "%s.%s", twin, k);
            lua_pop(L, 1);
            if (dp_store_find(dp_plant_store(ctx->plant), full) < 0)
                goto out;
            /* A placeholder for the tag: only its fields are completed. */
            lua_createtable(L, 0, 1);
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "__tag__");
        } else if (kind == V_TABLE) {
            raw_field(L, k);
        } else {
            goto out;
        }
        seg = end + 1;
    }
    {
        const char *twin = NULL;
        vkind_t kind = kind_of(L, ctx, &twin);
        bool tag_placeholder = false;
        if (kind == V_TABLE) {
            lua_pushliteral(L, "__tag__");
            tag_placeholder = lua_rawget(L, -2) == LUA_TBOOLEAN;
            lua_pop(L, 1);
        }
        if (method) {
            /* obj:method: string methods, or functions of a table. */
            if (kind == V_STRING) {
                lua_getglobal(L, "string");
                if (lua_istable(L, -1))
                    cand_table(L, &c, lua_gettop(L));
            } else if (kind == V_TABLE && !tag_placeholder) {
                cand_table(L, &c, lua_gettop(L));
            } else if (kind == V_TAG || tag_placeholder) {
                cand(&c, "history");
                cand(&c, "values");
            }
        } else if (kind == V_TWIN || kind == V_TAGS) {
            cand_tags(&c, ctx->plant, twin);
        } else if (kind == V_TAG || tag_placeholder) {
            for (const char *const *f = tag_fields; *f != NULL; f++)
                cand(&c, *f);
        } else if (kind == V_TABLE) {
            cand_table(L, &c, lua_gettop(L));
        }
    }
out:
    lua_settop(L, top);
}
