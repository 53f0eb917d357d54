/* bench_ops: what the operations stdlib costs a twin, against a baseline
 * measured in the same run.
 *
 * 1. Alarms: one twin feeds every sample of a tag to a doppel.alarm limit
 *    alarm (hysteresis, on-delay, the plant's alarm list, a transition every
 *    1,000 samples); a second, identical plant runs the baseline rule
 *    `state.n = state.n + 1` instead. Both take 2,000,000 samples in virtual
 *    time through dp_store_write() with a flush every 1,000 writes. Printed:
 *    samples/s of each and the ratio.
 * 2. What-if: a twin forks a tank model and runs it forward with
 *    sim.whatif (1,000,000 model steps, series off); the baseline is the same
 *    arithmetic in a plain Lua loop in the same sandbox. Printed: model
 *    steps/s of each and the ratio; and a sim.recommend (golden-section over
 *    a one-hour horizon at 1-minute steps) timed per call.
 *
 * Exits 1 only when something is functionally wrong (a lost sample, a wrong
 * transition count, a script error). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <lauxlib.h>
#include <lua.h>

#include "runtime/alarms.h"
#include "runtime/log.h"
#include "runtime/plant.h"
#include "runtime/sandbox.h"
#include "runtime/twin.h"

#define SAMPLES INT64_C(2000000)
#define T0      INT64_C(1767225600000000)

/* A large budget: one call runs a million model steps. */
static const char plant_text[] = "plant { budget = 4000000000 }\n"
                                 "twin \"A\" { script = \"a.lua\", tags = { x = { } } }\n";

static const char alarm_script[] =
    "local alarm = require 'doppel.alarm'\n"
    "local a = alarm.limit { name = 'high', high = 10, hysteresis = 1, on_delay = 0 }\n"
    "state.n = 0\n"
    "twin.on_change('x', function(v) state.n = state.n + 1; a:update(v) end)\n";

static const char base_script[] = "state.n = 0\n"
                                  "twin.on_change('x', function(v) state.n = state.n + 1 end)\n";

static const char whatif_script[] =
    "local sim = require 'doppel.sim'\n"
    "local tank = { init = function() return { level = 2 } end,\n"
    "  step = function(x, u, dt) x.level = x.level + (u.inflow - 10) * dt / 18000 end,\n"
    "  outputs = function(x, u) return { level = x.level } end }\n"
    "function run_whatif(n)\n"
    "  local r = sim.whatif(tank, { inflow = 12 }, { horizon = n, step = 1, series = false,\n"
    "                                                 start = 0 })\n"
    "  return r.final.level\n"
    "end\n"
    "function run_plain(n)\n"
    "  local x = { level = 2 }\n"
    "  local lo, hi = x.level, x.level\n"
    "  for _ = 1, n do\n"
    "    x.level = x.level + (12 - 10) * 1 / 18000\n"
    "    local out = { level = x.level }\n"
    "    if out.level < lo then lo = out.level end\n"
    "    if out.level > hi then hi = out.level end\n"
    "  end\n"
    "  return x.level\n"
    "end\n"
    "function run_recommend()\n"
    "  local r = sim.recommend { model = tank, setpoint = 'inflow', bounds = { 5, 20 },\n"
    "    objective = function(p) return math.abs(p.final.level - 2.5) end,\n"
    "    horizon = '1h', step = '1min' }\n"
    "  return r.value\n"
    "end\n";

static int transitions;

static void on_event(const dp_event_t *ev, void *ud)
{
    (void)ud;
    if (strcmp(ev->kind, "alarm") == 0)
        transitions++;
}

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static char dir[64];

static dp_plant_t *open_plant(const char *script)
{
    char path[128];
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    FILE *f = fopen(path, "w");
    fputs(plant_text, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/a.lua", dir);
    f = fopen(path, "w");
    fputs(script, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    char *err = NULL;
    dp_plant_opts_t o = {.path = path, .start = T0};
    dp_plant_t *p = dp_plant_open(&o, &err);
    if (p == NULL || dp_plant_start(p, &err) < 0) {
        fprintf(stderr, "bench_ops: %s\n", err ? err : "?");
        exit(1);
    }
    return p;
}

/* Feeds SAMPLES values cycling 0..1999 (so the 10 limit is crossed twice per
 * 2,000 samples); returns samples/s. */
static double feed(dp_plant_t *p)
{
    dp_store_t *s = dp_plant_store(p);
    int id = dp_store_find(s, "A.x");
    double t0 = now_s();
    for (int64_t i = 0; i < SAMPLES; i++) {
        dp_value_t v = dp_num((double)(i % 2000) / 100.0);
        dp_store_write(s, id, &v, T0 + i, DP_Q_GOOD);
        if (i % 1000 == 999)
            dp_plant_flush(p);
    }
    dp_plant_flush(p);
    return (double)SAMPLES / (now_s() - t0);
}

static double state_n(dp_plant_t *p)
{
    lua_State *L = dp_sandbox_state(dp_twin_sandbox(dp_plant_twin(p, "A")));
    lua_getglobal(L, "state");
    lua_getfield(L, -1, "n");
    double n = lua_tonumber(L, -1);
    lua_pop(L, 2);
    return n;
}

static double call_num(dp_sandbox_t *sb, const char *fn, double arg, int nargs)
{
    lua_State *L = dp_sandbox_state(sb);
    lua_getglobal(L, fn);
    if (nargs)
        lua_pushnumber(L, arg);
    char *err = NULL;
    if (dp_sandbox_call(sb, nargs, 1, &err, NULL) != DP_SB_OK) {
        fprintf(stderr, "bench_ops: %s: %s\n", fn, err);
        exit(1);
    }
    double r = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return r;
}

int main(void)
{
    dp_log_set_level(DP_LOG_ERROR);
    snprintf(dir, sizeof dir, "/tmp/doppel-bench-ops-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    int bad = 0;

    dp_plant_t *base = open_plant(base_script);
    double base_rate = feed(base);
    if (state_n(base) != (double)SAMPLES)
        bad = fprintf(stderr, "baseline lost samples\n");
    dp_plant_free(base);

    dp_plant_t *al = open_plant(alarm_script);
    dp_plant_on_event(al, on_event, NULL);
    double alarm_rate = feed(al);
    if (state_n(al) != (double)SAMPLES)
        bad = fprintf(stderr, "alarm twin lost samples\n");
    /* Values climb 0 .. 19.99 and drop back to 0: one activation and one
     * clearing per 2,000 samples, except the last clearing (the run ends at
     * 19.99). */
    int want = (int)(SAMPLES / 1000) - 1;
    if (transitions != want)
        bad = fprintf(stderr, "expected %d alarm transitions, got %d\n", want, transitions);
    dp_plant_free(al);
    printf("alarm: %.0f samples/s through doppel.alarm (%d transitions), %.0f samples/s "
           "baseline rule, ratio %.2f\n",
           alarm_rate, transitions, base_rate, base_rate / alarm_rate);

    dp_plant_t *w = open_plant(whatif_script);
    dp_sandbox_t *sb = dp_twin_sandbox(dp_plant_twin(w, "A"));
    const double steps = 1e6;
    double t0 = now_s();
    double lw = call_num(sb, "run_whatif", steps, 1);
    double t_whatif = now_s() - t0;
    t0 = now_s();
    double lp = call_num(sb, "run_plain", steps, 1);
    double t_plain = now_s() - t0;
    if (lw < lp - 1e-6 || lw > lp + 1e-6)
        bad = fprintf(stderr, "whatif %.9g and the plain loop %.9g disagree\n", lw, lp);
    printf("whatif: %.0f model steps/s, plain Lua loop %.0f steps/s, ratio %.2f\n",
           steps / t_whatif, steps / t_plain, t_whatif / t_plain);
    int calls = 100;
    t0 = now_s();
    double v = 0;
    for (int i = 0; i < calls; i++)
        v = call_num(sb, "run_recommend", 0, 0);
    double per = (now_s() - t0) / calls;
    /* Level 2 + (u - 10) * 3600 / 18000 = 2.5 needs u = 12.5. */
    if (v < 12.49 || v > 12.51)
        bad = fprintf(stderr, "recommend gave %.4f, expected 12.5\n", v);
    printf("recommend: %.3f ms per call (golden-section, 60-step horizon), value %.3f\n", per * 1e3,
           v);
    dp_plant_free(w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        bad = 1;
    return bad ? 1 : 0;
}
