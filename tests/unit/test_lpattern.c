/* The sandbox's pattern functions (runtime/lpattern.c) against Lua 5.4's own:
 * on generated subjects, patterns, start positions and replacements, find,
 * match, gmatch and gsub must return the same values or raise the same
 * error. The stock functions are the reference; any difference is printed
 * with the case that shows it. */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/lpattern.h"

static uint64_t charged;

static void count_charge(lua_State *L, uint64_t steps)
{
    (void)L;
    charged += steps;
}

/* The harness: `stock` and `mine` are the two libraries. Returns nil when
 * every case agrees, else a description of the first that does not. */
static const char *const harness =
    "local stock, mine, ncases, seed = ...\n"
    "math.randomseed(seed)\n"
    "local function pick(t) return t[math.random(#t)] end\n"
    "local chars = { 'a', 'b', 'c', 'x', '1', '0', ' ', '(', ')', '[', ']', '%', '-',\n"
    "  '.', '^', '$', '\\0', '\\n', 'A', 'B', '_' }\n"
    "local items = { '.', 'a', 'b', 'x', '1', ' ', '%a', '%d', '%w', '%s', '%A', '%D', '%W',\n"
    "  '%l', '%u', '%p', '%c', '%x', '%g', '%%', '%.', '%(', '%-', '%z', '[ab]', '[^a]',\n"
    "  '[a-c]', '[%a-]', '[]]', '[^]a]', '[a-]', '[%d%s]', '[-a]', '[', ']', '(', ')',\n"
    "  '()', '%1', '%2', '%0', '%b()', '%bab', '%b', '%f[%w]', '%f[^a]', '%f[a]', '%f',\n"
    "  '%fa', '*', '+', '-', '?', '^', '$', '%', '\\0', '(a)', '(%a+)', '(.-)', '[%]]' }\n"
    "local quant = { '', '', '', '*', '+', '-', '?' }\n"
    "local function subject()\n"
    "  local t = {}\n"
    "  for _ = 1, math.random(0, 12) do t[#t + 1] = pick(chars) end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local function pattern()\n"
    "  local t = {}\n"
    "  if math.random(6) == 1 then t[1] = '^' end\n"
    "  for _ = 1, math.random(0, 6) do t[#t + 1] = pick(items) .. pick(quant) end\n"
    "  if math.random(6) == 1 then t[#t + 1] = '$' end\n"
    "  return table.concat(t)\n"
    "end\n"
    "local repls = { '<%0>', '%1', '%2', 'x%%y', '%', '%x', '', '[%1|%0]', 7,\n"
    "  { a = 'A', b = false, ab = 1 },\n"
    "  function(...) return select('#', ...) > 1 and table.concat({ ... }, ',') or nil end,\n"
    "  function(c) if c == 'a' then return {} end return c end }\n"
    "local function show(ok, ...)\n"
    "  local t = { tostring(ok) }\n"
    "  for i = 1, select('#', ...) do t[#t + 1] = string.format('%q', (select(i, ...))) end\n"
    "  return table.concat(t, ' ')\n"
    "end\n"
    "local function gmatch_all(lib, s, p, init)\n"
    "  local out = {}\n"
    "  for a, b, c in lib.gmatch(s, p, init) do\n"
    "    out[#out + 1] = show(true, a, b, c)\n"
    "    if #out > 40 then break end\n"
    "  end\n"
    "  return table.concat(out, ';')\n"
    "end\n"
    "local inits = { nil, 1, 2, 0, -1, -3, 5, 20, -20 }\n"
    "for n = 1, ncases do\n"
    "  local s, p = subject(), pattern()\n"
    "  local init = inits[math.random(#inits)]\n"
    "  local r = repls[math.random(#repls)]\n"
    "  local max = math.random(4) == 1 and math.random(0, 3) or nil\n"
    "  local calls = {\n"
    "    { 'find', function(lib) return lib.find(s, p, init) end },\n"
    "    { 'find plain', function(lib) return lib.find(s, p, init, true) end },\n"
    "    { 'match', function(lib) return lib.match(s, p, init) end },\n"
    "    { 'gmatch', function(lib) return gmatch_all(lib, s, p, init) end },\n"
    "    { 'gsub', function(lib) return lib.gsub(s, p, r, max) end },\n"
    "  }\n"
    "  for _, c in ipairs(calls) do\n"
    "    local a = show(pcall(c[2], stock))\n"
    "    local b = show(pcall(c[2], mine))\n"
    "    if a ~= b then\n"
    "      return string.format('case %d, %s(%q, %q, init %s, repl %s, max %s):\\n"
    "  stock %s\\n  mine  %s', n, c[1], s, p, tostring(init), tostring(r), tostring(max), a, b)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return nil\n";

/* A state with the stock library, and `mine` as a table of ours. */
static lua_State *two_libraries(dp_lpattern_charge_cb charge)
{
    lua_State *L = luaL_newstate();
    cr_assert_not_null(L);
    luaL_openlibs(L);
    cr_assert_eq(luaL_loadstring(L, harness), LUA_OK, "%s", lua_tostring(L, -1));
    lua_getglobal(L, "string");
    lua_newtable(L);
    dp_lpattern_install(L, -1, charge);
    return L;
}

static void compare(unsigned seed, int ncases)
{
    lua_State *L = two_libraries(count_charge);
    lua_pushinteger(L, ncases);
    lua_pushinteger(L, seed);
    cr_assert_eq(lua_pcall(L, 4, 1, 0), LUA_OK, "%s", lua_tostring(L, -1));
    const char *diff = lua_tostring(L, -1);
    cr_expect_null(diff, "seed %u: %s", seed, diff);
    lua_close(L);
}

Test(lpattern, agrees_with_lua_on_generated_cases)
{
    charged = 0;
    for (unsigned seed = 1; seed <= 8; seed++)
        compare(seed, 2500);
    cr_expect_gt(charged, 0, "the matching work was never charged");
}

/* Hand-picked cases the generator is unlikely to build. */
Test(lpattern, agrees_on_chosen_cases)
{
    static const char *const code =
        "local stock, mine = ...\n"
        "local cases = {\n"
        "  { 'find', 'hello world', 'o w' }, { 'find', 'hello world', '(o)%s(w)' },\n"
        "  { 'match', 'key = value', '^(%w+)%s*=%s*(%w+)$' },\n"
        "  { 'match', 'THE (quick) fox', '%f[%a]%a+' }, { 'match', '[[x]]', '%b[]' },\n"
        "  { 'match', 'abcabc', '(a(b)c)%1' }, { 'match', 'hello', '()ll()' },\n"
        "  { 'gsub', 'hello world', '(%w+)', '%1 %1' }, { 'gsub', 'abc', '', '-' },\n"
        "  { 'gsub', 'abc', '%w', '%0%0', 2 }, { 'gsub', 'hello', 'l*', 'L' },\n"
        "  { 'gsub', 'x = 1, y = 2', '(%w+) = (%w+)', '%2 = %1' },\n"
        "  { 'match', string.rep('a', 300), string.rep('a?', 300) },\n"
        "  { 'match', 'a', string.rep('(', 33) .. 'a' .. string.rep(')', 33) },\n"
        "  { 'find', 12345, 3 }, { 'gsub', 12345, 3, 9 }, { 'match', 'a\\0b', '%z' },\n"
        "  { 'match', 'a\\0b', 'a%zb' }, { 'match', 'a\\0b', '[\\0]' }, { 'find', '', '' },\n"
        "  { 'find', 'abc', '', 10 }, { 'find', 'abc', '', 4 }, { 'match', 'abc', '.-$' },\n"
        "  { 'match', ' x', '^%s*(.-)%s*$' }, { 'match', 'f(a(b)c)', '%b()' },\n"
        "}\n"
        "for i, c in ipairs(cases) do\n"
        "  local a = table.pack(pcall(stock[c[1]], c[2], c[3], c[4], c[5]))\n"
        "  local b = table.pack(pcall(mine[c[1]], c[2], c[3], c[4], c[5]))\n"
        "  if a.n ~= b.n then return 'case ' .. i .. ': ' .. a.n .. ' results against ' .. b.n "
        "end\n"
        "  for k = 1, a.n do\n"
        "    if a[k] ~= b[k] then\n"
        "      return 'case ' .. i .. ': ' .. tostring(a[k]) .. ' against ' .. tostring(b[k])\n"
        "    end\n"
        "  end\n"
        "end\n";
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    cr_assert_eq(luaL_loadstring(L, code), LUA_OK, "%s", lua_tostring(L, -1));
    lua_getglobal(L, "string");
    lua_newtable(L);
    dp_lpattern_install(L, -1, NULL);
    cr_assert_eq(lua_pcall(L, 2, 1, 0), LUA_OK, "%s", lua_tostring(L, -1));
    cr_expect_null(lua_tostring(L, -1), "%s", lua_tostring(L, -1));
    lua_close(L);
}

/* An error from the charge callback unwinds the match: the sandbox stops a
 * backtracking pattern this way. */
static void stop_after_a_million(lua_State *L, uint64_t steps)
{
    charged += steps;
    if (charged > 1000000)
        luaL_error(L, "stopped after %d steps", (int)charged);
}

Test(lpattern, the_charge_callback_can_stop_a_match)
{
    charged = 0;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    dp_lpattern_install(L, -1, stop_after_a_million);
    lua_setglobal(L, "mine");
    int rc = luaL_dostring(L, "return mine.find(string.rep('a', 2000), '.-.-.-.-b')");
    cr_assert_neq(rc, LUA_OK);
    cr_expect(strstr(lua_tostring(L, -1), "stopped after") != NULL, "%s", lua_tostring(L, -1));
    cr_expect_lt(charged, 1000000 + 2 * DP_LPATTERN_STEP);
    lua_close(L);
}
