/* The sandbox: allow-listed globals, the instruction budget and the memory cap. */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/sandbox.h"

static dp_sandbox_t *sb;

static void setup(void)
{
    dp_sandbox_opts_t o = {.name = "test", .budget = 1000000, .memory = 8 << 20};
    sb = dp_sandbox_new(&o);
    cr_assert_not_null(sb);
}

static void teardown(void)
{
    dp_sandbox_free(sb);
}

/* Runs code; returns the status, and *msg the error (caller frees). */
static dp_sb_status_t run(const char *code, char **msg)
{
    char *err = NULL;
    int rc = dp_sandbox_load(sb, code, strlen(code), "=test", &err);
    cr_assert_eq(rc, 0, "compile error: %s", err);
    dp_sb_status_t st = dp_sandbox_call(sb, 0, 0, &err, NULL);
    if (msg != NULL)
        *msg = err;
    else
        free(err);
    return st;
}

static void run_ok(const char *code)
{
    char *msg = NULL;
    dp_sb_status_t st = run(code, &msg);
    cr_assert_eq(st, DP_SB_OK, "%s\n-> %s", code, msg ? msg : "");
    free(msg);
}

TestSuite(sandbox, .init = setup, .fini = teardown);

Test(sandbox, dangerous_globals_are_absent)
{
    run_ok("assert(os.execute == nil and os.exit == nil and os.getenv == nil)");
    run_ok("assert(os.remove == nil and os.rename == nil and os.tmpname == nil)");
    run_ok("assert(io == nil and package == nil and debug == nil)");
    run_ok("assert(dofile == nil and loadfile == nil and string.dump == nil)");
    run_ok("assert(type(os.time()) == 'number' and type(os.date()) == 'string')");
    run_ok("assert(math.sqrt(4) == 2 and table.concat({1, 2}) == '12' and utf8.char(65) == 'A')");
}

Test(sandbox, escapes_are_refused)
{
    /* Each escape attempt must fail with a clear error, not run. */
    const char *attempts[] = {
        "io.popen('id')",
        "os.execute('id')",
        "package.loadlib('libc.so.6', 'system')",
        "require('os').execute('id')",
        "require('../../etc/passwd')",
        "require('/etc/passwd')",
        "debug.sethook()",
        "collectgarbage('stop')",
        "load(string.dump(function() end))",
    };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        char *msg = NULL;
        cr_expect_eq(run(attempts[i], &msg), DP_SB_ERROR, "%s was not refused", attempts[i]);
        cr_expect_not_null(msg);
        free(msg);
    }
}

Test(sandbox, binary_chunks_are_refused)
{
    /* A binary chunk (as string.dump would make) must not load, even with mode "b". */
    run_ok("local f, err = load('\\27Lua\\84\\0', 'x', 'b'); assert(f == nil, 'loaded'); "
           "assert(err:find('binary'), err)");
    run_ok("local f = load('return 1 + 1'); assert(f() == 2)");
}

Test(sandbox, stdlib_require_works)
{
    run_ok("local a = require 'doppel.alarm'; assert(type(a.limit) == 'function')");
    char *msg = NULL;
    cr_assert_eq(run("require 'doppel.nonexistent'", &msg), DP_SB_ERROR);
    cr_assert(strstr(msg, "doppel.nonexistent") != NULL, "%s", msg);
    free(msg);
}

Test(sandbox, runaway_loop_is_stopped_with_location)
{
    char *msg = NULL;
    dp_sb_status_t st = run("local x = 0\nwhile true do x = x + 1 end", &msg);
    cr_assert_eq(st, DP_SB_BUDGET);
    cr_assert(strstr(msg, "instruction budget") != NULL, "%s", msg);
    cr_assert(strstr(msg, "test:2") != NULL, "no file:line in: %s", msg);
    free(msg);
    /* The state is still usable afterwards. */
    run_ok("assert(1 + 1 == 2)");
}

Test(sandbox, pcall_cannot_swallow_the_budget)
{
    const char *attempts[] = {
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
        "local co = coroutine.create(function() while true do end end)\n"
        "while true do coroutine.resume(co) end",
        "while true do local ok = pcall(error, 'x') end",
        "local f = coroutine.wrap(function() while true do end end)\n"
        "while true do pcall(f) end",
    };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        char *msg = NULL;
        dp_sb_status_t st = run(attempts[i], &msg);
        cr_expect_eq(st, DP_SB_BUDGET, "not stopped: %s (%d: %s)", attempts[i], st, msg);
        free(msg);
    }
    run_ok("assert(pcall(error, 'fine') == false)");
}

/* Pattern matching, sorting and a few other library loops run in C, where the
 * count hook does not: their steps are charged to the budget instead
 * (runtime/lpattern.c, sandbox.c). Stock string.find runs these backtracking
 * searches for days, and the empty loops for hours. */
Test(sandbox, library_work_in_c_is_budgeted)
{
    const char *attempts[] = {
        "string.find(string.rep('a', 3000), '.-.-.-.-b')",
        "local s = string.rep('a', 3000) s:match('(.-)(.-)(.-)b')",
        "for _ in string.gmatch(string.rep('a', 3000), '.-.-.-b') do end",
        "string.gsub(string.rep('a', 3000), '.-.-.-b', 'x')",
        "while true do pcall(string.find, string.rep('a', 3000), '.-.-.-.-b') end",
        "coroutine.wrap(function() string.find(string.rep('a', 3000), '.-.-.-.-b') end)()",
        /* Loops that allocate nothing, so no memory cap stops them either. */
        "string.rep('', 1e12)",
        "local s = '' s:rep(1e12, '')",
        "table.move({}, 1, 1e12, 1, {})",
        "table.move({}, 1, math.maxinteger, 1, {})",
        "table.insert(setmetatable({}, { __len = function() return 1e12 end }), 1, 'x')",
        "table.remove(setmetatable({}, { __len = function() return 1e12 end }), 1)",
    };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        char *msg = NULL;
        dp_sb_status_t st = run(attempts[i], &msg);
        cr_expect_eq(st, DP_SB_BUDGET, "not stopped: %s (%d: %s)", attempts[i], st, msg);
        cr_expect(msg != NULL && strstr(msg, "instruction budget") != NULL, "%s", msg);
        free(msg);
    }
    /* The fault names the script line that called the library. */
    char *msg = NULL;
    cr_expect_eq(run("local s = string.rep('a', 3000)\nreturn s:find('.-.-.-.-b')", &msg),
                 DP_SB_BUDGET);
    cr_expect(msg != NULL && strstr(msg, "exceeded at test:2") != NULL, "%s", msg);
    free(msg);
    /* table.sort, in C too, is charged n log2 n steps: 200,000 elements are
     * 3.6 million, over this budget. */
    msg = NULL;
    cr_expect_eq(run("local t = { string.byte(string.rep('a', 200000), 1, -1) }\n"
                     "table.sort(t)",
                     &msg),
                 DP_SB_BUDGET);
    cr_expect(msg != NULL && strstr(msg, "exceeded at test:2") != NULL, "%s", msg);
    free(msg);
    run_ok("assert(string.rep('ab', 3, ',') == 'ab,ab,ab' and ('x'):rep(0) == '')\n"
           "local m = table.move({ 1, 2, 3 }, 1, 3, 2) assert(m[1] == 1 and m[4] == 3)\n"
           "local t = { 1, 3 } table.insert(t, 2, 2) table.insert(t, 4)\n"
           "assert(#t == 4 and t[2] == 2 and table.remove(t) == 4 and table.remove(t, 1) == 1)\n"
           "local ok, e = pcall(table.move, {}, math.mininteger, math.maxinteger, 1)\n"
           "assert(not ok and e:find('too many elements to move'), e)\n"
           "ok, e = pcall(function() table.insert({}, 1, 2, 3) end)\n"
           "assert(not ok and e:find(\"wrong number of arguments to 'insert'\"), e)\n"
           "ok, e = pcall(function() table.move({}, 1, 'x') end)\n"
           "assert(not ok and e:find(\"bad argument #3 to 'move'\"), e)\n"
           "ok, e = pcall(function() table.sort(1) end)\n"
           "assert(not ok and e:find(\"test:11: bad argument #1 to 'sort'\"), e)");
    run_ok("local t = { 3, 1, 2 } table.sort(t) assert(t[1] == 1 and t[3] == 3)\n"
           "table.sort(t, function(a, b) return a > b end) assert(t[1] == 3)\n"
           "assert(not pcall(table.sort, nil))");
    /* Ordinary matching is unaffected, and method calls use the same functions. */
    run_ok("assert(('key = value'):match('^(%w+)%s*=%s*(%w+)$') == 'key')\n"
           "assert(string.gsub('a,b,c', ',', ';') == 'a;b;c')\n"
           "assert(('x').find == string.find)");
}

Test(sandbox, coroutines_behave_as_in_lua)
{
    run_ok(
        "local f = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)\n"
        "assert(f(1) == 2) assert(f(5) == 10)\n"
        "local ok, e = pcall(f) assert(not ok and e:find('dead coroutine'), e)");
    run_ok("local f = coroutine.wrap(function() error('inner') end)\n"
           "local ok, e = pcall(f) assert(not ok and e:find('inner'), e)");
    run_ok("local co = coroutine.create(function(x) return x * 3 end)\n"
           "local ok, v = coroutine.resume(co, 4) assert(ok and v == 12)\n"
           "assert(coroutine.status(co) == 'dead')");
    /* A runaway started inside a coroutine, and one that starts after a
     * coroutine was made, are both stopped. */
    char *msg = NULL;
    cr_assert_eq(run("local f = coroutine.wrap(function() while true do end end) f()", &msg),
                 DP_SB_BUDGET, "%s", msg);
    free(msg);
    msg = NULL;
    cr_assert_eq(run("local co = coroutine.create(function() coroutine.yield() end)\n"
                     "coroutine.resume(co) local x = 0 while true do x = x + 1 end",
                     &msg),
                 DP_SB_BUDGET, "%s", msg);
    free(msg);
}

Test(sandbox, ordinary_errors_are_still_catchable)
{
    run_ok("local ok, err = pcall(error, 'boom'); assert(not ok and err:find('boom'))");
    run_ok("local ok, err = xpcall(error, function(e) return 'handled ' .. e end, 'x');"
           "assert(not ok and err == 'handled x')");
}

/* The functions the sandbox wraps behave as Lua's, argument errors included
 * (named as the script called them, at the script's line). */
Test(sandbox, wrapped_functions_behave_as_in_lua)
{
    run_ok("local function err(f, ...) local ok, e = pcall(f, ...) assert(not ok) return e end\n"
           "local function named(name, f)\n"
           "  local e = err(f) assert(e:find('^test:%d+: bad argument #1 to \\'' .. name .. "
           "'\\''), e)\n"
           "end\n"
           "named('setmetatable', function() setmetatable(1, {}) end)\n"
           "named('resume', function() coroutine.resume(1) end)\n"
           "named('create', function() coroutine.create(1) end)\n"
           "named('time', function() os.time(1) end)\n"
           "named('collectgarbage', function() collectgarbage('stop') end)\n"
           "assert(load('return x', 'c', 't', { x = 5 })() == 5)\n"
           "assert(load('return 1', 'c', 'b')() == 1)\n"
           "local f, e = load('\\27Lua') assert(f == nil and e:find('binary'), e)\n"
           "assert(select(2, coroutine.resume(coroutine.create(function(a) return a + 1 end), 1)) "
           "== 2)\n"
           "assert(os.date('!%Y', 0) == '1970')");
}

Test(sandbox, memory_cap_stops_a_blowup)
{
    char *msg = NULL;
    dp_sb_status_t st = run("local t = {} for i = 1, 1e9 do t[i] = {i} end", &msg);
    cr_assert_eq(st, DP_SB_MEMORY, "status %d: %s", st, msg);
    cr_assert(strstr(msg, "memory cap") != NULL, "%s", msg);
    free(msg);
    cr_assert_lt(dp_sandbox_memory(sb), (size_t)8 << 20);

    st = run("while true do pcall(function() local t = {} for i = 1, 1e9 do t[i] = {} end end) "
             "end",
             &msg);
    cr_assert(st == DP_SB_MEMORY || st == DP_SB_BUDGET, "status %d: %s", st, msg);
    free(msg);

    st = run("local s = string.rep('x', 1 << 30)", &msg);
    cr_assert_eq(st, DP_SB_MEMORY, "status %d: %s", st, msg);
    free(msg);
    run_ok("collectgarbage() assert(#string.rep('y', 1000) == 1000)");
}

Test(sandbox, budget_is_per_call)
{
    /* Many cheap calls in a row must not add up to a fault. */
    for (int i = 0; i < 200; i++)
        run_ok("local s = 0 for i = 1, 20000 do s = s + i end");
}

Test(sandbox, print_goes_to_the_log)
{
    run_ok("print('hello', 1, true)");
}
