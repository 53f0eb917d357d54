/* libFuzzer target for the sandbox's pattern functions (runtime/lpattern.c),
 * against Lua 5.4's own.
 *
 * Input: one byte choosing the function (find, find plain, match, gmatch,
 * gsub) and the start position, then the subject and the pattern separated
 * by the first 0xff byte (a gsub takes its replacement template after a
 * second one). Both libraries must return the same values or raise the same
 * error. A case ours stops after STEPS steps is not given to the stock
 * library, which has no such bound and would hang the fuzzer.
 *
 * Built by `make build-fuzz` (DP_FUZZ=ON); run by `make test-fuzz` from
 * tests/fuzz/corpus/fuzz_lpattern. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpattern.h"

#define STEPS 2000000u

static lua_State *L;
static uint64_t charged;

static void charge(lua_State *L1, uint64_t steps)
{
    charged += steps;
    if (charged > STEPS)
        luaL_error(L1, "fuzz: too many steps");
}

/* Calls lib[fn](s, p, a3, a4) (gmatch: collects up to 50 matches) in
 * protected mode and returns its results as one string (left on the
 * stack). */
static const char *const runner =
    "local lib, fn, s, p, a3, a4 = ...\n"
    "local function show(ok, ...)\n"
    "  local t = { tostring(ok) }\n"
    "  for i = 1, select('#', ...) do t[#t + 1] = string.format('%q', (select(i, ...))) end\n"
    "  return table.concat(t, ' ')\n"
    "end\n"
    "if fn == 'gmatch' then\n"
    "  return show(pcall(function()\n"
    "    local out = {}\n"
    "    for a, b in lib.gmatch(s, p, a3) do\n"
    "      out[#out + 1] = show(true, a, b)\n"
    "      if #out >= 50 then break end\n"
    "    end\n"
    "    return table.concat(out, ';')\n"
    "  end))\n"
    "end\n"
    "return show(pcall(lib[fn], s, p, a3, a4))\n";

static int run_ref;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_loadstring(L, runner) != LUA_OK)
        abort();
    run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    dp_lpattern_install(L, -1, charge);
    lua_setglobal(L, "mine");
}

/* Runs one library; returns a copy of the shown result (caller frees) or
 * NULL when ours ran out of steps. */
static char *run(const char *lib, const char *fn, const char *s, size_t ls, const char *p,
                 size_t lp, lua_Integer init, const char *r, size_t lr)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
    lua_getglobal(L, lib);
    lua_pushstring(L, fn);
    lua_pushlstring(L, s, ls);
    lua_pushlstring(L, p, lp);
    if (strcmp(fn, "gsub") == 0) {
        lua_pushlstring(L, r, lr);
        lua_pushinteger(L, init);
    } else {
        lua_pushinteger(L, init);
        lua_pushboolean(L, strcmp(fn, "find") == 0 && init > 3);
    }
    charged = 0;
    if (lua_pcall(L, 6, 1, 0) != LUA_OK)
        abort();
    char *out = strstr(lua_tostring(L, -1), "fuzz: too many steps") != NULL
                    ? NULL
                    : strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (L == NULL)
        setup();
    if (size < 1)
        return 0;
    static const char *const fns[] = {"find", "match", "gmatch", "gsub"};
    const char *fn = fns[data[0] & 3];
    lua_Integer init = (lua_Integer)((data[0] >> 2) & 15) - 4; /* -4 .. 11 */
    const char *s = (const char *)data + 1, *end = (const char *)data + size;
    const char *p = memchr(s, 0xff, (size_t)(end - s));
    if (p == NULL)
        return 0;
    size_t ls = (size_t)(p - s);
    p++;
    const char *r = memchr(p, 0xff, (size_t)(end - p));
    size_t lp = (size_t)((r != NULL ? r : end) - p);
    size_t lr = 0;
    if (r != NULL) {
        r++;
        lr = (size_t)(end - r);
    } else {
        r = "";
    }
    char *mine = run("mine", fn, s, ls, p, lp, init, r, lr);
    if (mine == NULL)
        return 0;
    char *stock = run("string", fn, s, ls, p, lp, init, r, lr);
    if (stock == NULL || strcmp(mine, stock) != 0) {
        fprintf(stderr, "fuzz_lpattern: %s differs\n  stock: %s\n  mine:  %s\n", fn,
                stock != NULL ? stock : "(no result)", mine);
        abort();
    }
    free(mine);
    free(stock);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
