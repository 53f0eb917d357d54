/* Commands and the guard: every refusal, shadow mode, writers (synchronous,
 * failing, from another thread), shutdown, and twin.write from Lua. */
#include <math.h>
#include <uv.h>

#include "harness.h"
#include "runtime/command.h"

static dp_store_t *store;
static dp_clock_t *clock_;
static dp_guard_t *guard;
static int sp, ro, mode;
static dp_cmd_t last;
static char last_reason[256];
static int outcomes;

static void on_cmd(const dp_cmd_t *cmd, void *ud)
{
    (void)ud;
    last = *cmd;
    snprintf(last_reason, sizeof last_reason, "%s", cmd->reason);
    last.reason = last_reason;
    outcomes++;
}

static void setup(void)
{
    store = dp_store_new();
    clock_ = dp_clock_new_virtual(T0);
    guard = dp_guard_new(store, clock_, NULL);
    sp = dp_store_add(store, "P1.speed_sp", &(dp_tag_opts_t){.flags = DP_TAG_WRITABLE});
    ro = dp_store_add(store, "P1.flow", &(dp_tag_opts_t){0});
    mode = dp_store_add(store, "P1.mode", &(dp_tag_opts_t){.flags = DP_TAG_WRITABLE});
    dp_guard_set_limits(guard, sp, &(dp_guard_limits_t){.min = 0, .max = 3000, .max_rate = 100});
    dp_guard_set_limits(guard, mode, NULL);
    dp_value_t v = dp_num(1000);
    dp_store_write(store, sp, &v, T0, DP_Q_GOOD);
    outcomes = 0;
}

static void teardown(void)
{
    dp_guard_free(guard);
    dp_store_free(store);
    dp_clock_free(clock_);
}

TestSuite(guard, .init = setup, .fini = teardown);

static dp_cmd_outcome_t submit(const char *tag, dp_value_t v)
{
    int before = outcomes;
    dp_guard_submit(guard, "test", tag, &v, on_cmd, NULL);
    cr_assert_eq(outcomes, before + 1, "no synchronous outcome for %s", tag);
    return last.outcome;
}

Test(guard, refusals_name_the_reason)
{
    cr_assert_eq(submit("P1.nope", dp_num(1)), DP_CMD_REJECTED);
    cr_assert_str_eq(last.reason, "unknown tag");
    cr_assert_eq(last.tag_id, -1);
    cr_assert_eq(submit("P1.flow", dp_num(1)), DP_CMD_REJECTED);
    cr_assert_str_eq(last.reason, "tag is not writable");
    cr_assert_eq(submit("P1.speed_sp", dp_num(-1)), DP_CMD_REJECTED);
    cr_assert(strstr(last.reason, "below the minimum 0") != NULL, "%s", last.reason);
    cr_assert_eq(submit("P1.speed_sp", dp_num(3001)), DP_CMD_REJECTED);
    cr_assert(strstr(last.reason, "above the maximum 3000") != NULL, "%s", last.reason);
    cr_assert_eq(submit("P1.speed_sp", dp_num(NAN)), DP_CMD_REJECTED);
    cr_assert_str_eq(last.reason, "value is not a finite number");
    cr_assert_eq(submit("P1.speed_sp", dp_bool(true)), DP_CMD_REJECTED);
    cr_assert_str_eq(last.reason, "type: the tag holds a number, got a boolean");
    dp_guard_stats_t st;
    dp_guard_get_stats(guard, &st);
    cr_assert_eq(st.submitted, 6);
    cr_assert_eq(st.rejected, 6);
    /* Nothing was written. */
    cr_assert_eq(dp_store_get(store, sp)->v.u.n, 1000);
}

Test(guard, max_rate_from_current_value_then_from_last_command)
{
    /* First command: measured from the current value (1000) over one second. */
    cr_assert_eq(submit("P1.speed_sp", dp_num(1150)), DP_CMD_REJECTED);
    cr_assert(strstr(last.reason, "max_rate") != NULL, "%s", last.reason);
    cr_assert_eq(submit("P1.speed_sp", dp_num(1100)), DP_CMD_DONE);
    cr_assert_eq(dp_store_get(store, sp)->v.u.n, 1100);
    /* Then from the last accepted command: 300 in 2 s is too fast, in 3 s fine. */
    dp_clock_set(clock_, T0 + 2000000);
    cr_assert_eq(submit("P1.speed_sp", dp_num(1400)), DP_CMD_REJECTED);
    dp_clock_set(clock_, T0 + 3000000);
    cr_assert_eq(submit("P1.speed_sp", dp_num(1400)), DP_CMD_DONE);
    /* Same instant, same value: allowed (rate 0). */
    cr_assert_eq(submit("P1.speed_sp", dp_num(1400)), DP_CMD_DONE);
}

Test(guard, writes_disabled_and_shadow_write_nothing)
{
    dp_guard_enable_writes(guard, false, "test");
    cr_assert_eq(submit("P1.speed_sp", dp_num(1050)), DP_CMD_REJECTED);
    cr_assert_str_eq(last.reason, "writes are disabled");
    dp_guard_enable_writes(guard, true, "test");
    dp_guard_set_shadow(guard, true, "test");
    cr_assert_eq(submit("P1.speed_sp", dp_num(1050)), DP_CMD_SHADOW);
    cr_assert_eq(dp_store_get(store, sp)->v.u.n, 1000);
    /* A string tag with no limits, written to the store. */
    dp_guard_set_shadow(guard, false, "test");
    cr_assert_eq(submit("P1.mode", dp_str("auto")), DP_CMD_DONE);
    cr_assert_str_eq(dp_store_get(store, mode)->v.u.s, "auto");
    dp_guard_stats_t st;
    dp_guard_get_stats(guard, &st);
    cr_assert_eq(st.shadow, 1);
    cr_assert_eq(st.done, 1);
}

/* Writers. */
static int writes_seen;
static dp_value_t written;

static int sync_writer(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    (void)tag;
    (void)err;
    writes_seen++;
    written = *v;
    dp_guard_complete(ctx, id, DP_CMD_DONE, "verified");
    return 0;
}

static int failing_writer(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    (void)ctx;
    (void)id;
    (void)tag;
    (void)v;
    writes_seen++;
    *err = strdup("timeout after 500 ms");
    return DP_EIO;
}

static int deferred_writer(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    (void)tag;
    (void)v;
    (void)err;
    *(uint64_t *)ctx = id;
    return 0;
}

Test(guard, writer_outcomes)
{
    writes_seen = 0;
    dp_guard_set_writer(guard, sp, sync_writer, guard);
    cr_assert_eq(submit("P1.speed_sp", dp_num(1090)), DP_CMD_DONE);
    cr_assert_str_eq(last.reason, "verified");
    cr_assert_eq(writes_seen, 1);
    cr_assert_eq(written.u.n, 1090);
    /* The store is the device's business now: not written by the guard. */
    cr_assert_eq(dp_store_get(store, sp)->v.u.n, 1000);

    dp_guard_set_writer(guard, sp, failing_writer, NULL);
    dp_clock_set(clock_, T0 + 10000000);
    cr_assert_eq(submit("P1.speed_sp", dp_num(1100)), DP_CMD_FAILED);
    cr_assert_str_eq(last.reason, "timeout after 500 ms");

    uint64_t pending_id = 0;
    dp_guard_set_writer(guard, sp, deferred_writer, &pending_id);
    dp_value_t v = dp_num(1100);
    uint64_t id = dp_guard_submit(guard, "test", "P1.speed_sp", &v, on_cmd, NULL);
    cr_assert_eq(pending_id, id);
    dp_guard_stats_t st;
    dp_guard_get_stats(guard, &st);
    cr_assert_eq(st.pending, 1);
    int before = outcomes;
    dp_guard_complete(guard, id, DP_CMD_FAILED, "exception 2 (illegal data address)");
    cr_assert_eq(outcomes, before + 1);
    cr_assert_eq(last.outcome, DP_CMD_FAILED);
    /* A second verdict on the same command is ignored. */
    dp_guard_complete(guard, id, DP_CMD_DONE, NULL);
    cr_assert_eq(outcomes, before + 1);
    /* A pending command at shutdown fails with a reason. */
    dp_guard_submit(guard, "test", "P1.speed_sp", &v, on_cmd, NULL);
    dp_guard_free(guard);
    guard = dp_guard_new(store, clock_, NULL);
    cr_assert_eq(outcomes, before + 2);
    cr_assert_str_eq(last.reason, "shutting down");
}

static int order[4], norder;
static void listener_a(const dp_cmd_t *c, void *ud)
{
    (void)c;
    (void)ud;
    order[norder++] = 1;
}
static void listener_b(const dp_cmd_t *c, void *ud)
{
    (void)c;
    (void)ud;
    order[norder++] = 2;
}

Test(guard, listeners_after_the_submitter)
{
    norder = 0;
    dp_guard_on_command(guard, listener_a, NULL);
    dp_guard_on_command(guard, listener_b, NULL);
    submit("P1.flow", dp_num(1));
    cr_assert_eq(norder, 2);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
}

/* A writer completing from its own thread, as the Modbus workers do. */
typedef struct {
    dp_guard_t *g;
    uint64_t id;
    uv_thread_t th;
} thread_write_t;

static void complete_later(void *arg)
{
    thread_write_t *tw = arg;
    uv_sleep(20);
    dp_guard_complete(tw->g, tw->id, DP_CMD_DONE, "from a worker");
}

static int thread_writer(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    (void)tag;
    (void)v;
    (void)err;
    thread_write_t *tw = ctx;
    tw->id = id;
    uv_thread_create(&tw->th, complete_later, tw);
    return 0;
}

static void stop_when_done(const dp_cmd_t *cmd, void *ud)
{
    on_cmd(cmd, NULL);
    uv_stop(ud);
}

Test(guard, completion_from_another_thread_arrives_on_the_loop)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    dp_clock_t *rc = dp_clock_new_real(&loop);
    dp_guard_t *g = dp_guard_new(store, rc, &loop);
    dp_guard_set_limits(g, sp, NULL);
    thread_write_t tw = {.g = g};
    dp_guard_set_writer(g, sp, thread_writer, &tw);
    dp_value_t v = dp_num(5);
    int before = outcomes;
    dp_guard_submit(g, "test", "P1.speed_sp", &v, stop_when_done, &loop);
    cr_assert_eq(outcomes, before, "completed before the worker said so");
    /* The async handle does not keep the loop alive: hold it with a timer. */
    uv_timer_t guard_timer;
    uv_timer_init(&loop, &guard_timer);
    uv_timer_start(&guard_timer, (uv_timer_cb)uv_stop, 10000, 0);
    guard_timer.data = &loop;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_thread_join(&tw.th);
    cr_assert_eq(outcomes, before + 1);
    cr_assert_str_eq(last.reason, "from a worker");
    uv_close((uv_handle_t *)&guard_timer, NULL);
    dp_guard_free(g);
    dp_clock_free(rc);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* twin.write from a script, through a plant in virtual time. */
TestSuite(twin_write);

Test(twin_write, outcomes_reach_the_callback_after_the_call)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua",
             "plant { name = 't' }\n"
             "twin 'P1' { script = 'p.lua', tags = {\n"
             "  speed_sp = { writable = true, min = 0, max = 3000 },\n"
             "  flow = {} } }\n");
    th_write(dir, "p.lua",
             "state.log = {}\n"
             "local function note(r) state.log[#state.log + 1] = r.outcome .. ':' .. r.reason end\n"
             "twin.on_start(function()\n"
             "  state.in_call = 0\n"
             "  twin.write('speed_sp', 400, function(r)\n"
             "    assert(r.ok and r.tag == 'P1.speed_sp' and r.value == 400)\n"
             "    assert(r.origin == 'twin:P1')\n"
             "    note(r) end)\n"
             "  state.in_call = #state.log\n"
             "  twin:write('speed_sp', 5000, note)\n"
             "  twin.write('flow', 1, note)\n"
             "  state.id = twin.write('speed_sp', 450)\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 1000000);
    cr_assert_eq(th_eval(p, "P1", "state.in_call"), 0, "callback ran inside twin.write");
    cr_assert_eq(th_eval(p, "P1", "#state.log"), 3);
    cr_assert_eq(th_eval(p, "P1", "state.log[1] == 'done:' and 1 or 0"), 1);
    cr_assert_eq(
        th_eval(p, "P1", "state.log[2]:find('rejected:max: 5000 is above', 1, true) and 1 or 0"),
        1);
    cr_assert_eq(th_eval(p, "P1", "state.log[3] == 'rejected:tag is not writable' and 1 or 0"), 1);
    cr_assert_eq(th_eval(p, "P1", "state.id"), 4);
    cr_assert_eq(th_num(p, "P1.speed_sp"), 450);
    dp_plant_free(p);
    th_rmdir(dir);
}

/* Least privilege: a twin commands its own tags and the other twins' tags
 * its `commands` list names; the guard rejects the rest, on the record. */
Test(twin_write, a_twin_commands_its_own_tags_and_those_it_is_given)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua",
             "plant { name = 't' }\n"
             "twin 'A' { script = 'w.lua', tags = { sp = { writable = true } } }\n"
             "twin 'B' { script = 'idle.lua',\n"
             "  tags = { sp = { writable = true }, valve = { writable = true } } }\n"
             "twin 'C' { script = 'w.lua', commands = 'A.sp',\n"
             "  tags = { sp = { writable = true } } }\n"
             "twin 'D' { script = 'w.lua', commands = { 'B.*', 'A.sp' },\n"
             "  tags = { sp = { writable = true } } }\n");
    th_write(dir, "idle.lua", "\n");
    th_write(dir, "w.lua",
             "state.log = {}\n"
             "local function try(name, v)\n"
             "  twin.write(name, v, function(r)\n"
             "    state.log[#state.log + 1] = name .. '=' .. r.outcome\n"
             "    if r.outcome == 'rejected' then state.why = r.reason end\n"
             "  end)\n"
             "end\n"
             "twin.on_start(function()\n"
             "  try('sp', 1); try('A.sp', 2); try('B.sp', 3); try('B.valve', 4)\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 1000);
    cr_assert_eq(th_eval(p, "A",
                         "table.concat(state.log, ' ') == "
                         "'sp=done A.sp=done B.sp=rejected B.valve=rejected' and 1 or 0"),
                 1);
    cr_assert_eq(th_eval(p, "A",
                         "state.why:find('twin A may command its own tags and those its "
                         "commands list names; B.valve is neither', 1, true) and 1 or 0"),
                 1);
    cr_assert_eq(th_eval(p, "C",
                         "table.concat(state.log, ' ') == "
                         "'sp=done A.sp=done B.sp=rejected B.valve=rejected' and 1 or 0"),
                 1);
    cr_assert_eq(th_eval(p, "D",
                         "table.concat(state.log, ' ') == "
                         "'sp=done A.sp=done B.sp=done B.valve=done' and 1 or 0"),
                 1);
    cr_assert_eq(th_num(p, "B.valve"), 4);
    cr_assert_eq(th_num(p, "A.sp"), 2);
    /* A malformed pattern, or one that names nothing commandable (a typo),
     * is refused at load, naming the twin and the field. */
    static const char *const bad[][2] = {
        {"{ 'B.sp.x' }", "\"B.sp.x\": expected \"twin.tag\""},
        {"'B.nope'", "twin A: commands: \"B.nope\": no such tag"},
        {"{ 'B.sp', 'B.x' }", "twin A: commands: \"B.x\": not a writable tag"},
        {"'Z.*'", "twin A: commands: \"Z.*\": no twin Z"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[300];
        snprintf(text, sizeof text,
                 "twin 'A' { script = 'idle.lua', commands = %s }\n"
                 "twin 'B' { script = 'idle.lua', tags = { sp = { writable = true }, x = {} } }\n",
                 bad[i][0]);
        th_write(dir, "plant.lua", text);
        char *err = th_open_fails(dir);
        cr_assert(strstr(err, bad[i][1]) != NULL, "%s: %s", bad[i][0], err);
        free(err);
    }
    dp_plant_free(p);
    /* "twin.*" finds a twin whatever the length of its name. */
    char name[301];
    memset(name, 'L', 300);
    name[300] = '\0';
    char *text = dp_xasprintf("twin 'A' { script = 'idle.lua', commands = '%s.*' }\n"
                              "twin '%s' { script = 'idle.lua' }\n",
                              name, name);
    th_write(dir, "plant.lua", text);
    free(text);
    dp_plant_free(th_open(dir));
    th_rmdir(dir);
}

Test(twin_write, bad_declarations_are_refused)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua", "twin 'P1' { script = 'p.lua', tags = { x = { min = 0 } } }\n");
    th_write(dir, "p.lua", "\n");
    char *err = th_open_fails(dir);
    cr_assert(strstr(err, "twin P1, tag x: min, max and max_rate apply to writable tags only"),
              "%s", err);
    free(err);
    th_write(dir, "plant.lua",
             "twin 'P1' { script = 'p.lua', tags = { x = { writable = true, min = 5, max = 1 } } "
             "}\n");
    err = th_open_fails(dir);
    cr_assert(strstr(err, "twin P1, tag x: min 5 is above max 1"), "%s", err);
    free(err);
    th_write(dir, "plant.lua",
             "twin 'P1' { script = 'p.lua', tags = { x = { writable = true, max_rate = -1 } } "
             "}\n");
    err = th_open_fails(dir);
    cr_assert(strstr(err, "max_rate") != NULL, "%s", err);
    free(err);
    th_rmdir(dir);
}

Test(twin_write, plant_switches_and_bad_arguments)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua",
             "plant { shadow = true }\n"
             "twin 'P1' { script = 'p.lua', tags = { sp = { writable = true } } }\n");
    th_write(dir, "p.lua",
             "twin.on_start(function()\n"
             "  twin.write('sp', 7, function(r) state.outcome = r.outcome end)\n"
             "  state.e1 = select(2, pcall(twin.write, 'nope', 1))\n"
             "  state.e2 = select(2, pcall(twin.write, 'sp', {}))\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    dp_plant_run_until(p, T0 + 1000);
    cr_assert_eq(th_eval(p, "P1", "state.outcome == 'shadow' and 1 or 0"), 1);
    cr_assert_eq(th_eval(p, "P1", "state.e1:find('no tag \"nope\"', 1, true) and 1 or 0"), 1);
    cr_assert_eq(
        th_eval(p, "P1", "state.e2:find('value must be a number, boolean or string') and 1 or 0"),
        1);
    int id = dp_store_find(dp_plant_store(p), "P1.sp");
    cr_assert_eq(dp_store_get(dp_plant_store(p), id)->v.type, DP_NIL, "shadow mode wrote");
    dp_plant_free(p);
    th_rmdir(dir);
}

Test(guard, dry_run_sends_nothing_to_devices_but_writes_store_tags)
{
    writes_seen = 0;
    dp_guard_set_dry_run(guard, true);
    cr_assert(dp_guard_dry_run(guard));
    dp_guard_set_writer(guard, sp, sync_writer, guard);
    cr_assert_eq(submit("P1.speed_sp", dp_num(1050)), DP_CMD_SHADOW);
    cr_assert_str_eq(last.reason, "dry run: not sent to the device");
    cr_assert_eq(writes_seen, 0);
    /* Still judged. */
    cr_assert_eq(submit("P1.speed_sp", dp_num(9999)), DP_CMD_REJECTED);
    /* A writable tag without a device is written, as live. */
    cr_assert_eq(submit("P1.mode", dp_str("manual")), DP_CMD_DONE);
    cr_assert_str_eq(dp_store_get(store, mode)->v.u.s, "manual");
}
