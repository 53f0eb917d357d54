/* bench_pattern: what counting the work of pattern matching costs. Twins'
 * string.find, match, gmatch and gsub are runtime/lpattern.c's, which charge
 * every step of matching to the call's budget (Lua's own run in C where no
 * budget applies); this runs the same workloads through Lua 5.4's functions
 * and through ours, in one state, taking turns, and prints the CPU time of
 * each and the ratio (ours / stock). Exits 1 if the two disagree on any
 * workload's result. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/lpattern.h"

#define ROUNDS 5

static void charge(lua_State *L, uint64_t steps)
{
    (void)L;
    (void)steps;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Each workload is a function of the library; it returns a checksum. */
static const char *const workloads =
    "local text = {}\n"
    "for i = 1, 2000 do text[#text + 1] = 'word' .. i .. (i % 7 == 0 and '\\n\\t ' or ' ') end\n"
    "text = table.concat(text)\n"
    "local csv = {}\n"
    "for i = 1, 100 do csv[#csv + 1] = tostring(i * 1.5) end\n"
    "csv = table.concat(csv, ',')\n"
    "local log = '2026-12-02T06:40:32Z P101 flow 46.125 m3/h pressure 3.25 bar'\n"
    "return {\n"
    "  { 'match key = value', 200000, function(lib, n)\n"
    "      local k = 0\n"
    "      for _ = 1, n do if lib.match('speed_sp = 2600', '^(%w+)%s*=%s*(%w+)$') then k = k + 1 "
    "end end\n"
    "      return k end },\n"
    "  { 'find number in a log line', 200000, function(lib, n)\n"
    "      local k = 0\n"
    "      for _ = 1, n do k = k + lib.find(log, '%d+%.%d+') end\n"
    "      return k end },\n"
    "  { 'gmatch CSV fields', 5000, function(lib, n)\n"
    "      local k = 0\n"
    "      for _ = 1, n do for f in lib.gmatch(csv, '[^,]+') do k = k + #f end end\n"
    "      return k end },\n"
    "  { 'gsub whitespace (16 KB)', 200, function(lib, n)\n"
    "      local k = 0\n"
    "      for _ = 1, n do local s, c = lib.gsub(text, '%s+', ' ') k = k + c + #s end\n"
    "      return k end },\n"
    "  { 'find plain (16 KB)', 20000, function(lib, n)\n"
    "      local k = 0\n"
    "      for _ = 1, n do k = k + (lib.find(text, 'word1999', 1, true) or 0) end\n"
    "      return k end },\n"
    "}\n";

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    dp_lpattern_install(L, -1, charge);
    lua_setglobal(L, "mine");
    if (luaL_dostring(L, workloads) != LUA_OK) {
        fprintf(stderr, "bench_pattern: %s\n", lua_tostring(L, -1));
        return 1;
    }
    int list = lua_gettop(L);
    int n = (int)lua_rawlen(L, list), status = 0;
    printf("bench_pattern: Lua 5.4's pattern functions against doppel's (steps charged),\n"
           "%d rounds taking turns; CPU ms per workload\n\n",
           ROUNDS);
    printf("%-28s %10s %10s %7s\n", "workload", "stock ms", "doppel ms", "ratio");
    for (int w = 1; w <= n; w++) {
        lua_rawgeti(L, list, w);
        lua_rawgeti(L, -1, 1);
        const char *name = lua_tostring(L, -1);
        lua_rawgeti(L, -2, 2);
        lua_Integer reps = lua_tointeger(L, -1);
        lua_pop(L, 1);
        double secs[2] = {0, 0};
        lua_Integer sums[2] = {0, 0};
        static const char *const libs[2] = {"string", "mine"};
        for (int round = 0; round < ROUNDS; round++) {
            for (int k = 0; k < 2; k++) {
                lua_rawgeti(L, -2, 3);
                lua_getglobal(L, libs[k]);
                lua_pushinteger(L, reps);
                double t0 = cpu_now();
                if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
                    fprintf(stderr, "bench_pattern: %s: %s\n", name, lua_tostring(L, -1));
                    return 1;
                }
                secs[k] += cpu_now() - t0;
                sums[k] = lua_tointeger(L, -1);
                lua_pop(L, 1);
            }
        }
        printf("%-28s %10.1f %10.1f %7.2f\n", name, secs[0] * 1e3 / ROUNDS, secs[1] * 1e3 / ROUNDS,
               secs[1] / secs[0]);
        if (sums[0] != sums[1]) {
            fprintf(stderr, "bench_pattern: %s: results differ (%lld, %lld)\n", name,
                    (long long)sums[0], (long long)sums[1]);
            status = 1;
        }
        lua_pop(L, 2);
    }
    lua_close(L);
    return status;
}
