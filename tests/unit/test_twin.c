/* The twin host: handlers, timers, derived tags, faults and suspension, and
 * reload transactions, on plants in virtual time. */
#include "harness.h"

static char *dir;
static th_log_t logs;

static void setup(void)
{
    dir = th_tmpdir();
    memset(&logs, 0, sizeof logs);
    dp_log_set_hook(th_log_hook, &logs);
}

static void teardown(void)
{
    dp_log_set_hook(NULL, NULL);
    th_rmdir(dir);
}

TestSuite(twin, .init = setup, .fini = teardown);

static const char *counter_plant = "plant { name = 'test' }\n"
                                   "twin 'A' { script = 'a.lua', tags = { x = {}, y = {} } }\n";

Test(twin, on_change_receives_every_sample_in_order)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.n = state.n or 0\n"
             "state.last = 0\n"
             "twin.on_change('x', function(v, tag)\n"
             "  assert(tag.name == 'A.x')\n"
             "  assert(v == state.last + 1, 'out of order')\n"
             "  state.last = v; state.n = state.n + 1\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    for (int i = 1; i <= 1000; i++) {
        th_set(p, "A.x", i, T0 + i);
        if (i % 7 == 0)
            dp_plant_flush(p);
    }
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 1000);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "A"), &st);
    cr_assert_eq(st.errors, 0);
    dp_plant_free(p);
}

/* on_update: one call per delivered batch with the changed tags, each once,
 * in order of first change; after the batch is in the store. */
Test(twin, on_update_runs_once_per_batch_with_the_changed_tags)
{
    th_write(dir, "plant.lua",
             "twin 'A' { script = 'a.lua', tags = { x = {}, y = {}, z = {} } }\n");
    th_write(dir, "a.lua",
             "state.calls, state.seen, state.sum = 0, '', 0\n"
             "twin.on_update({ 'x', 'y' }, function(changed, values)\n"
             "  state.calls = state.calls + 1\n"
             "  local names = {}\n"
             "  for i, t in ipairs(changed) do\n"
             "    assert(values[i] == t.value, 'values[i] is the last sample')\n"
             "    names[i] = t.name .. '=' .. string.format('%g', values[i])\n"
             "  end\n"
             "  assert(#values == #changed)\n"
             "  state.seen = state.seen .. table.concat(names, '+') .. ';'\n"
             "  state.sum = tags.x.value + tags.y.value\n"
             "end)\n"
             "state.bare = 0\n"
             "twin.on_update('x', function() state.bare = state.bare + 1 end)\n"
             "state.va = 0\n"
             "twin.on_update('x', function(...) state.va = select('#', ...) end)\n");
    dp_plant_t *p = th_open(dir);
    /* One batch: y, x, y again (seen once), z (not watched). */
    th_set(p, "A.y", 1, T0 + 1);
    th_set(p, "A.x", 10, T0 + 1);
    th_set(p, "A.y", 2, T0 + 1);
    th_set(p, "A.z", 5, T0 + 1);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.calls"), 1);
    cr_assert_eq(th_eval(p, "A", "state.sum"), 12, "the handler saw the whole batch");
    cr_assert_eq(th_eval(p, "A", "state.seen == 'A.y=2+A.x=10;' and 1 or 0"), 1);
    cr_assert_eq(th_eval(p, "A", "state.bare"), 1, "a handler without parameters runs");
    cr_assert_eq(th_eval(p, "A", "state.va"), 2, "a vararg handler gets both lists");
    /* A batch of only an unwatched tag: no call. */
    th_set(p, "A.z", 6, T0 + 2);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.calls"), 1);
    /* Next batch: x only. */
    th_set(p, "A.x", 20, T0 + 3);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.calls"), 2);
    cr_assert_eq(th_eval(p, "A", "state.seen == 'A.y=2+A.x=10;A.x=20;' and 1 or 0"), 1);
    cr_assert_eq(th_eval(p, "A", "state.sum"), 22);
    dp_plant_free(p);
}

Test(twin, on_update_errors_name_the_handler_and_bad_names_are_refused)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.n = 0\n"
             "twin.on_update('x', function(changed) state.n = state.n + #changed; "
             "error('boom') end)\n"
             "twin.on_change('x', function() state.m = 1 end)\n");
    dp_plant_t *p = th_open(dir);
    th_set(p, "A.x", 1, T0 + 1);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 1);
    cr_assert_eq(th_eval(p, "A", "state.m"), 1, "on_change handlers still ran");
    cr_assert(th_logged(&logs, "on_update(A.x)"), "the error names on_update and its tag");
    cr_assert(th_logged(&logs, "boom"));
    dp_plant_free(p);
    th_write(dir, "a.lua", "twin.on_update({ 'x', 'nope' }, function() end)\n");
    char *err = th_open_fails(dir);
    cr_assert(strstr(err, "nope") != NULL, "%s", err);
    free(err);
}

/* The tag metatable is hidden: its C functions never see a foreign value. */
Test(twin, tag_metatable_is_hidden_from_scripts)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.mt = getmetatable(tags.x)\n"
             "state.ok = pcall(function() return getmetatable(tags.x).__index(1, "
             "'value') end)\n");
    dp_plant_t *p = th_open(dir);
    cr_assert_eq(th_eval(p, "A", "state.mt == 'doppel.tag' and 1 or 0"), 1);
    cr_assert_eq(th_eval(p, "A", "state.ok and 1 or 0"), 0);
    cr_assert_eq(th_eval(p, "A", "pcall(setmetatable, tags.x, {}) and 1 or 0"), 0);
    dp_plant_free(p);
}

Test(twin, deadband_filters_small_changes)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.n = 0\n"
             "twin.on_change('x', function() state.n = state.n + 1 end, "
             "{ deadband = 0.5 })\n");
    dp_plant_t *p = th_open(dir);
    double values[] = {10, 10.2, 10.4, 10.6, 10.7, 11.2, 11.0, 10.5};
    /* Notified: 10 (first), 10.6 (> 0.5 from 10), 11.2 (0.6 from 10.6), 10.5 (0.7 from 11.2). */
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        th_set(p, "A.x", values[i], T0 + (dp_time_t)i);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 4);
    dp_plant_free(p);
}

Test(twin, tag_declared_deadband_is_the_default)
{
    th_write(dir, "plant.lua", "twin 'A' { script = 'a.lua', tags = { x = { deadband = 1 } } }\n");
    th_write(dir, "a.lua",
             "state.n, state.m = 0, 0\n"
             "twin.on_change('x', function() state.n = state.n + 1 end)\n"
             "twin.on_change('x', function() state.m = state.m + 1 end)\n");
    dp_plant_t *p = th_open(dir);
    double values[] = {0, 0.5, 0.9, 1.5, 2.0, 2.6};
    /* Notified: 0, 1.5 (> 1 from 0), 2.6 (> 1 from 1.5); both handlers run. */
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        th_set(p, "A.x", values[i], T0 + (dp_time_t)i);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 3);
    cr_assert_eq(th_eval(p, "A", "state.m"), 3);
    dp_plant_free(p);
}

Test(twin, timers_fire_in_virtual_time_and_cancel)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.every, state.after, state.cancelled = 0, 0, 0\n"
             "twin.every('1s', function() state.every = state.every + 1 end)\n"
             "twin.after('2500ms', function() state.after = clock.now() end)\n"
             "local t = twin.every('100ms', function()\n"
             "  state.cancelled = state.cancelled + 1 end)\n"
             "twin.after('1s', function() t:cancel() end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 10 * DP_US_PER_SEC);
    cr_assert_eq(th_eval(p, "A", "state.every"), 10);
    cr_assert_eq(th_eval(p, "A", "state.after"), (double)T0 / 1e6 + 2.5);
    /* 100 ms ticks at 0.1 .. 0.9 s fire. The tick due at 1.0 s was scheduled
     * (at 0.9 s) after the canceller (at 0 s), so at equal times the canceller
     * goes first: 9 in all. */
    cr_assert_eq(th_eval(p, "A", "state.cancelled"), 9);
    dp_plant_free(p);
}

Test(twin, derived_tags_and_input_tags)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "twin.tag('double', { unit = 'kW', history = 10 })\n"
             "twin.on_change('x', function(v) tags.double = 2 * v end)\n"
             "twin.on_start(function()\n"
             "  local ok, err = pcall(function() tags.y = 1 end)\n"
             "  assert(not ok and err:find('input tag'), err)\n"
             "  local ok2, err2 = pcall(function() return tags.nope end)\n"
             "  assert(not ok2 and err2:find('no tag \"nope\"'), err2)\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    for (int i = 1; i <= 15; i++)
        th_set(p, "A.x", i, T0 + i);
    dp_plant_flush(p);
    cr_assert_eq(th_num(p, "A.double"), 30);
    dp_store_t *s = dp_plant_store(p);
    int id = dp_store_find(s, "A.double");
    cr_assert_str_eq(dp_store_get(s, id)->unit, "kW");
    cr_assert_eq(dp_store_history_len(s, id), 10);
    cr_assert_eq(th_eval(p, "A", "#tags.double:values()"), 10);
    cr_assert_eq(th_eval(p, "A", "tags.double:values()[1]"), 12);
    dp_plant_free(p);
}

static const char *two_twins = "plant { name = 'test', max_faults = 3 }\n"
                               "twin 'bad' { script = 'bad.lua', budget = 100000 }\n"
                               "twin 'good' { script = 'good.lua' }\n";

Test(twin, runaway_twin_is_stopped_and_suspended_others_keep_running)
{
    th_write(dir, "plant.lua", two_twins);
    th_write(dir, "bad.lua",
             "twin.every('1s', function()\n"
             "  while true do pcall(function() while true do end end) end\n"
             "end)\n");
    th_write(dir, "good.lua",
             "state.n = 0\n"
             "twin.every('1s', function() state.n = state.n + 1 end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 20 * DP_US_PER_SEC);
    cr_assert_eq(th_eval(p, "good", "state.n"), 20);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "bad"), &st);
    cr_assert_eq(st.faults, 3, "faults: %llu", (unsigned long long)st.faults);
    cr_assert(st.suspended);
    cr_assert(th_logged(&logs, "instruction budget of 100000 exceeded at"), "no budget report");
    cr_assert(th_logged(&logs, "bad.lua:2"), "no file:line in the report");
    cr_assert(th_logged(&logs, "[bad] suspended after 3 faults"), "no suspension report");
    dp_plant_free(p);
}

Test(twin, memory_blowup_is_stopped_others_keep_running)
{
    th_write(dir, "plant.lua",
             "plant { name = 'test' }\n"
             "twin 'bad' { script = 'bad.lua', memory_mb = 4 }\n"
             "twin 'good' { script = 'good.lua' }\n");
    th_write(dir, "bad.lua",
             "twin.after('1s', function()\n"
             "  local t = {} for i = 1, 1e9 do t[i] = tostring(i) end\n"
             "end)\n");
    th_write(dir, "good.lua",
             "state.n = 0\n"
             "twin.every('1s', function() state.n = state.n + 1 end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 5 * DP_US_PER_SEC);
    cr_assert_eq(th_eval(p, "good", "state.n"), 5);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "bad"), &st);
    cr_assert_eq(st.faults, 1);
    cr_assert_lt(st.memory, (size_t)4 << 20);
    cr_assert(th_logged(&logs, "memory cap of 4096 KiB reached"));
    dp_plant_free(p);
}

Test(twin, handler_errors_are_reported_and_do_not_stop_the_twin)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.n = 0\n"
             "twin.on_change('x', function(v)\n"
             "  if v % 2 == 0 then error('even value ' .. v) end\n"
             "  state.n = state.n + 1\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    for (int i = 1; i <= 10; i++)
        th_set(p, "A.x", i, T0 + i);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 5);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "A"), &st);
    cr_assert_eq(st.errors, 5);
    cr_assert(!st.suspended);
    cr_assert(th_logged(&logs, "a.lua:3: even value 2"));
    dp_plant_free(p);
}

/* ---- reload ---------------------------------------------------------- */

static const char *v1 = "state.n = state.n or 0\n"
                        "twin.on_change('x', function() state.n = state.n + 1 end)\n"
                        "twin.tag('version')\n"
                        "twin.on_start(function() tags.version = 1 end)\n";

Test(twin, reload_swaps_code_and_keeps_state)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua", v1);
    dp_plant_t *p = th_open(dir);
    th_set(p, "A.x", 1, T0);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 1);
    th_write(dir, "a.lua",
             "state.n = state.n or 0\n"
             "twin.on_change('x', function() state.n = state.n + 10 end)\n"
             "twin.tag('version')\n"
             "twin.on_start(function() tags.version = 2 end)\n");
    char *err = NULL;
    cr_assert_eq(dp_plant_reload(p, "A", &err), 0, "%s", err);
    th_set(p, "A.x", 2, T0 + 1);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 11, "state was not kept or the old handler ran");
    cr_assert_eq(th_num(p, "A.version"), 2);
    cr_assert(th_logged(&logs, "state kept"));
    dp_plant_free(p);
}

static void reload_must_fail(const char *script, const char *expect)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua", v1);
    dp_plant_t *p = th_open(dir);
    th_set(p, "A.x", 1, T0);
    dp_plant_flush(p);
    th_write(dir, "a.lua", script);
    char *err = NULL;
    cr_assert_lt(dp_plant_reload(p, "A", &err), 0);
    cr_assert(strstr(err, expect) != NULL, "error \"%s\" lacks \"%s\"", err, expect);
    free(err);
    /* The old version is still live: its handler counts, its tag is intact. */
    th_set(p, "A.x", 2, T0 + 1);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 2);
    cr_assert_eq(th_num(p, "A.version"), 1);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "A"), &st);
    cr_assert_eq(st.reload_failures, 1);
    cr_assert_eq(st.generation, 1);
    cr_assert(th_logged(&logs, "reload failed, previous version keeps running"));
    dp_plant_free(p);
}

Test(twin, reload_with_syntax_error_keeps_old_version)
{
    reload_must_fail("state.n = 0\ntwin.on_change('x', function() state.n = end)\n", "a.lua:2:");
}

Test(twin, reload_with_error_in_main_chunk_keeps_old_version)
{
    reload_must_fail("local x = nil\nlocal y = x.field\n", "a.lua:2:");
}

Test(twin, reload_with_error_in_on_start_keeps_old_version)
{
    reload_must_fail("twin.on_change('x', function() end)\n"
                     "twin.on_start(function()\n"
                     "  error('cannot start')\n"
                     "end)\n",
                     "a.lua:3: cannot start");
}

Test(twin, reload_with_runaway_on_start_keeps_old_version)
{
    reload_must_fail("twin.on_start(function()\n  while true do end\nend)\n", "instruction budget");
}

Test(twin, reload_refuses_state_that_cannot_be_kept)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua", "state.cb = { hook = function() end }\n");
    dp_plant_t *p = th_open(dir);
    char *err = NULL;
    cr_assert_lt(dp_plant_reload(p, "A", &err), 0);
    cr_assert(strstr(err, "state.cb.hook: cannot store a function") != NULL, "%s", err);
    free(err);
    dp_plant_free(p);
}

Test(twin, changes_queued_before_a_reload_reach_the_new_version_once)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua", v1);
    dp_plant_t *p = th_open(dir);
    /* Queue samples, reload before they are delivered: they go to v2 only. */
    for (int i = 1; i <= 5; i++)
        th_set(p, "A.x", i, T0 + i);
    th_write(dir, "a.lua",
             "state.n = state.n or 0\n"
             "twin.on_change('x', function() state.n = state.n + 100 end)\n");
    cr_assert_eq(dp_plant_reload(p, "A", NULL), 0);
    dp_plant_flush(p);
    cr_assert_eq(th_eval(p, "A", "state.n"), 500);
    dp_plant_free(p);
}

Test(twin, timers_of_the_old_version_stop_on_reload)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "a.lua",
             "state.old = state.old or 0\n"
             "twin.every('1s', function() state.old = state.old + 1 end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 3 * DP_US_PER_SEC);
    th_write(dir, "a.lua",
             "state.old = state.old or 0; state.new = 0\n"
             "twin.every('1s', function() state.new = state.new + 1 end)\n");
    cr_assert_eq(dp_plant_reload(p, NULL, NULL), 0);
    dp_plant_run_until(p, T0 + 10 * DP_US_PER_SEC);
    cr_assert_eq(th_eval(p, "A", "state.old"), 3);
    cr_assert_eq(th_eval(p, "A", "state.new"), 7);
    dp_plant_free(p);
}

Test(twin, reload_lifts_a_suspension)
{
    th_write(dir, "plant.lua",
             "plant { name = 'test', max_faults = 1 }\n"
             "twin 'A' { script = 'a.lua', budget = 10000 }\n");
    th_write(dir, "a.lua", "twin.after('1s', function() while true do end end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 2 * DP_US_PER_SEC);
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "A"), &st);
    cr_assert(st.suspended);
    th_write(dir, "a.lua",
             "state.ok = 0\ntwin.every('1s', function() state.ok = state.ok + 1 end)\n");
    cr_assert_eq(dp_plant_reload(p, "A", NULL), 0);
    dp_plant_run_until(p, T0 + 5 * DP_US_PER_SEC);
    dp_twin_get_stats(dp_plant_twin(p, "A"), &st);
    cr_assert(!st.suspended);
    cr_assert_eq(th_eval(p, "A", "state.ok"), 3);
    dp_plant_free(p);
}

Test(twin, require_reaches_plant_modules_and_stdlib_only)
{
    th_write(dir, "plant.lua", counter_plant);
    th_write(dir, "helper.lua", "return { twice = function(x) return 2 * x end }\n");
    th_write(dir, "a.lua",
             "local h = require 'helper'\n"
             "local alarm = require 'doppel.alarm'\n"
             "assert(type(alarm.limit) == 'function')\n"
             "state.v = h.twice(21)\n"
             "assert(not pcall(require, 'nothere'))\n");
    dp_plant_t *p = th_open(dir);
    cr_assert_eq(th_eval(p, "A", "state.v"), 42);
    dp_plant_free(p);
}

/* ---- plant files ----------------------------------------------------- */

static void plant_error(const char *plant, const char *expect)
{
    th_write(dir, "plant.lua", plant);
    th_write(dir, "a.lua", "-- empty\n");
    char *err = th_open_fails(dir);
    cr_assert(strstr(err, expect) != NULL, "error \"%s\" lacks \"%s\"", err, expect);
    free(err);
}

Test(twin, bad_plant_files_are_refused_with_a_clear_message)
{
    plant_error("twin 'A' { script = 'a.lua', tags = { x = { uint = 'm' } } }",
                "twin A, tag x: unknown field \"uint\"");
    plant_error("twin 'A' { script = 'a.lua', tags = { x = { device = 'nope' } } }",
                "twin A, tag x: device: no device \"nope\"");
    plant_error("twin 'A' { script = 'missing.lua' }", "twin A: script: no file");
    plant_error("twin 'A' { class = 'no_such_class' }",
                "twin A: class: no class \"no_such_class\" (bundled: air_compressor, "
                "centrifugal_pump, conveyor, heat_exchanger, induction_motor");
    plant_error("device 'd' { driver = 'bogus' }", "device d: driver: unknown driver \"bogus\"");
    plant_error("device 'd' { driver = 'sim' }\n"
                "twin 'A' { script = 'a.lua', tags = { x = { device = 'd', wave = 'sinus' } } }",
                "twin A, tag x: wave: unknown value \"sinus\"");
    plant_error(
        "device 'd' { driver = 'sim' }\n"
        "twin 'A' { script = 'a.lua', tags = { x = { device = 'd', every = '5 parsecs' } } }",
        "twin A, tag x: every:");
    plant_error("twin 'A' { script = 'a.lua' }\ntwin 'A' { script = 'a.lua' }",
                "twin \"A\" is declared twice");
    plant_error("twin 'A'", "twin \"A\" has no settings table");
    plant_error("twin 'A' { script = 'a.lua', budgte = 5 }", "twin A: unknown field \"budgte\"");
    plant_error("plant { name = 'x' }\nlocal y = nil + 1", "plant.lua:2:");
    plant_error("twin 'A' { script = 'a.lua', params = { f = function() end } }",
                "twin A: params.f: cannot store a function");
}

/* The arguments of a handler are built by the host between calls, outside
 * the sandbox's protected call. A twin that has used up its memory cap must
 * not take the process down there (an unprotected allocation error aborts):
 * the cap stops what a script allocates in its calls, and the host's
 * arguments are let through. */
Test(twin, handler_arguments_at_the_memory_cap_do_not_abort)
{
    th_write(dir, "plant.lua",
             "plant { name = 'test' }\n"
             "local tags = {}\n"
             "for i = 1, 4000 do tags['t' .. i] = {} end\n"
             "tags.s = {}\n"
             "twin 'bad' { script = 'bad.lua', memory_mb = 2, tags = tags }\n"
             "twin 'good' { script = 'good.lua' }\n");
    /* At 1 s the twin fills its cap, keeping what it took (an upvalue of its
     * handlers): a fault. At 2 s a batch of 4,000 changes needs 64 KiB lists
     * for the on_update handler and a string for on_change, which allocate
     * nothing themselves. At 3 s, with the lists collected, it reports. (The
     * tag objects, which the host keeps once made, are made at load.) */
    th_write(dir, "bad.lua",
             "local hog, seen, sum, text = {}, 0, 0, nil\n"
             "local names = {}\n"
             "for i = 1, 4000 do names[i] = 't' .. i; local _ = tags[names[i]] end\n"
             "twin.on_update(names, function(changed, values)\n"
             "  seen = #changed + #hog * 0; sum = values[1] + values[4000]\n"
             "end)\n"
             "twin.on_change('s', function(v, tag) text = v end)\n"
             "twin.after('1s', function()\n"
             "  collectgarbage('collect')\n"
             "  while true do hog[#hog + 1] = string.rep('x', 2000) .. #hog end\n"
             "end)\n"
             "twin.after('3s', function()\n"
             "  hog = nil; collectgarbage('collect')\n"
             "  state.n, state.sum, state.text = seen, sum, text\n"
             "end)\n");
    th_write(dir, "good.lua",
             "state.n = 0\n"
             "twin.every('1s', function() state.n = state.n + 1 end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 2 * DP_US_PER_SEC);
    for (int i = 1; i <= 4000; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad.t%d", i);
        th_set(p, name, i, T0 + 2 * DP_US_PER_SEC);
    }
    dp_value_t v = dp_str("a string value, which the host allocates");
    dp_store_write(dp_plant_store(p), dp_store_find(dp_plant_store(p), "bad.s"), &v,
                   T0 + 2 * DP_US_PER_SEC, DP_Q_GOOD);
    dp_plant_flush(p);
    dp_plant_run_until(p, T0 + 5 * DP_US_PER_SEC);
    cr_assert_eq(th_eval(p, "good", "state.n"), 5, "the other twin kept running");
    cr_assert_eq(th_eval(p, "bad", "state.n"), 4000, "on_update got its list");
    cr_assert_eq(th_eval(p, "bad", "state.sum"), 1 + 4000);
    cr_assert_eq(th_eval(p, "bad", "#state.text"), strlen(v.u.s), "on_change got its value");
    dp_twin_stats_t st;
    dp_twin_get_stats(dp_plant_twin(p, "bad"), &st);
    cr_assert_eq(st.faults, 1, "only the hog's call faults");
    dp_plant_free(p);
}

/* A finalizer would run wherever the collector happens to finish an object,
 * also between calls where no budget applies: a script cannot set one. */
Test(twin, finalizers_cannot_escape_the_budget)
{
    th_write(dir, "plant.lua",
             "plant { name = 'test' }\n"
             "twin 'bad' { script = 'bad.lua' }\n"
             "twin 'good' { script = 'good.lua' }\n");
    th_write(dir, "bad.lua",
             "local ok, err = pcall(function()\n"
             "  setmetatable({}, { __gc = function() while true do end end })\n"
             "end)\n"
             "state.refused = tostring(err)\n"
             "twin.after('1s', function() while true do end end)\n");
    th_write(dir, "good.lua",
             "state.n = 0\n"
             "twin.every('1s', function() state.n = state.n + 1 end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 3 * DP_US_PER_SEC);
    cr_assert_eq(th_eval(p, "good", "state.n"), 3);
    cr_assert_eq(th_eval(p, "bad", "state.refused:find('__gc', 1, true) and 1 or 0"), 1);
    dp_plant_free(p);
}
