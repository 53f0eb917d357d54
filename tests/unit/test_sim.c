/* The sim driver in virtual time: signal shapes, sample counts, faults,
 * determinism, and the settings parser's error messages. */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/driver.h"
#include "drivers/sim/sim.h"

#define SECOND DP_US_PER_SEC
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)

/* An arbitrary epoch, so that "time since start" and absolute time differ. */
#define T0 (INT64_C(1767225600) * SECOND)

#define MAX_POINTS 8
#define HISTORY    5000

typedef struct {
    lua_State *L;
    dp_store_t *store;
    dp_clock_t *clock;
    dp_host_t host;
    dp_sim_device_t dcfg;
    dp_device_t dev;
    dp_sim_point_t *points[MAX_POINTS];
    int n_points;
    bool open;
} fx_t;

/* Parses the Lua table expression `lua` with `desc` into `out`; returns the
 * rc and leaves any message in *err. */
static int parse_lua(lua_State *L, const char *lua, const dp_setting_t *desc, void *out,
                     const char *const *ignore, const char *context, char **err)
{
    char *chunk = dp_xasprintf("return %s", lua);
    int lrc = luaL_dostring(L, chunk);
    free(chunk);
    cr_assert_eq(lrc, LUA_OK, "Lua error: %s", lua_tostring(L, -1));
    int rc = dp_settings_parse(L, -1, desc, out, ignore, context, err);
    lua_pop(L, 1);
    return rc;
}

static void fx_init(fx_t *f, const char *device_lua)
{
    memset(f, 0, sizeof(*f));
    f->L = luaL_newstate();
    f->store = dp_store_new();
    f->clock = dp_clock_new_virtual(T0);
    cr_assert(f->L != NULL && f->store != NULL && f->clock != NULL);
    f->host = (dp_host_t){.loop = NULL, .clock = f->clock, .store = f->store, .ingest = NULL};
    static const char *const ignore[] = {"driver", NULL};
    char *err = NULL;
    int rc = parse_lua(f->L, device_lua, dp_sim_driver.device_settings, &f->dcfg, ignore,
                       "device plant_sim", &err);
    cr_assert_eq(rc, 0, "device settings: %s", err ? err : "?");
    f->dev = (dp_device_t){
        .name = "plant_sim", .driver = &dp_sim_driver, .host = &f->host, .cfg = &f->dcfg};
    rc = dp_sim_driver.open(&f->dev, &err);
    cr_assert_eq(rc, 0, "open: %s", err ? err : "?");
    f->open = true;
}

/* Adds the tag `name` with history and binds it to the device with the point
 * settings `lua`; returns the tag handle. */
static int fx_add(fx_t *f, const char *name, const char *lua)
{
    cr_assert_lt(f->n_points, MAX_POINTS);
    dp_tag_opts_t opts = {.history = HISTORY};
    int tag = dp_store_add(f->store, name, &opts);
    cr_assert_geq(tag, 0, "dp_store_add(%s): %d", name, tag);
    dp_sim_point_t *p = dp_xcalloc(1, dp_sim_driver.point_size);
    f->points[f->n_points++] = p;
    char *err = NULL;
    int rc = parse_lua(f->L, lua, dp_sim_driver.point_settings, p, NULL, name, &err);
    cr_assert_eq(rc, 0, "point settings: %s", err ? err : "?");
    rc = dp_sim_driver.add_point(&f->dev, tag, p, &err);
    cr_assert_eq(rc, 0, "add_point: %s", err ? err : "?");
    return tag;
}

static void fx_start(fx_t *f)
{
    char *err = NULL;
    int rc = dp_sim_driver.start(&f->dev, &err);
    cr_assert_eq(rc, 0, "start: %s", err ? err : "?");
}

/* Runs the virtual clock for `d` from now. */
static void fx_run(fx_t *f, dp_time_t d)
{
    int64_t fired = dp_clock_run(f->clock, dp_clock_now(f->clock) + d, NULL, NULL);
    cr_assert_geq(fired, 0);
}

static void fx_fini(fx_t *f)
{
    if (f->open) {
        dp_sim_driver.stop(&f->dev);
        dp_sim_driver.close(&f->dev);
    }
    for (int i = 0; i < f->n_points; i++) {
        dp_settings_free(dp_sim_driver.point_settings, f->points[i]);
        free(f->points[i]);
    }
    dp_settings_free(dp_sim_driver.device_settings, &f->dcfg);
    dp_clock_free(f->clock);
    dp_store_free(f->store);
    lua_close(f->L);
}

/* The tag's history, oldest first; the caller frees. */
static dp_sample_t *history(fx_t *f, int tag, size_t *n)
{
    dp_sample_t *s = dp_xcalloc(HISTORY, sizeof(*s));
    *n = dp_store_history(f->store, tag, s, HISTORY);
    cr_assert_lt(*n, (size_t)HISTORY, "history ring overflowed; the test would miss samples");
    return s;
}

/* Seconds since the device started (which the tests do at T0). */
static double secs(const dp_sample_t *s)
{
    return (double)(s->ts - T0) / (double)SECOND;
}

static bool in_window(const dp_sample_t *s, dp_time_t from, dp_time_t len)
{
    return s->ts >= T0 + from && s->ts < T0 + from + len;
}

/* ---- Registry and settings --------------------------------------------- */

Test(sim, registry_finds_sim)
{
    cr_assert_eq(dp_driver_find("sim"), &dp_sim_driver);
    cr_assert_null(dp_driver_find("no_such_driver"));
    cr_assert_null(dp_driver_find(NULL));
    const dp_driver_t *const *all = dp_drivers();
    bool found = false;
    size_t n = 0;
    for (; all[n] != NULL; n++)
        found = found || all[n] == &dp_sim_driver;
    cr_assert(found);
    cr_assert_geq(n, 1);
    cr_assert_str_eq(dp_sim_driver.name, "sim");
    cr_assert_eq(dp_sim_driver.point_size, sizeof(dp_sim_point_t));
    cr_assert_eq(dp_sim_driver.device_size, sizeof(dp_sim_device_t));
}

Test(sim, device_seed_default_and_ignore)
{
    lua_State *L = luaL_newstate();
    static const char *const ignore[] = {"driver", NULL};
    dp_sim_device_t d = {0};
    char *err = NULL;
    cr_assert_eq(parse_lua(L, "{ driver = 'sim' }", dp_sim_driver.device_settings, &d, ignore,
                           "device a", &err),
                 0);
    cr_assert_eq(d.seed, 1);
    cr_assert_eq(parse_lua(L, "{ driver = 'sim', seed = 42 }", dp_sim_driver.device_settings, &d,
                           ignore, "device a", &err),
                 0);
    cr_assert_eq(d.seed, 42);
    cr_assert_lt(
        parse_lua(L, "{ seed = 1.5 }", dp_sim_driver.device_settings, &d, ignore, "device a", &err),
        0);
    cr_assert_str_eq(err, "device a: seed: expected an integer, got a fraction");
    free(err);
    lua_close(L);
}

Test(sim, point_defaults)
{
    lua_State *L = luaL_newstate();
    dp_sim_point_t p = {0};
    char *err = NULL;
    cr_assert_eq(parse_lua(L, "{}", dp_sim_driver.point_settings, &p, NULL, "t", &err), 0);
    cr_assert_eq(p.wave, DP_SIM_CONST);
    cr_assert_eq(p.mean, 0);
    cr_assert_eq(p.amplitude, 0);
    cr_assert_eq(p.period, HOUR);
    cr_assert_eq(p.phase, 0);
    cr_assert_eq(p.noise, 0);
    cr_assert_eq(p.drift, 0);
    cr_assert_eq(p.every, SECOND);
    cr_assert(!p.min.set && !p.max.set);
    cr_assert_eq(p.type, DP_SIM_NUMBER);
    cr_assert_eq(p.steps.n, 0);
    cr_assert_eq(p.faults.n, 0);
    dp_settings_free(dp_sim_driver.point_settings, &p);
    lua_close(L);
}

/* The tags of the demo plant, as the host would hand them over (common
 * fields such as device and unit removed). */
Test(sim, parses_demo_plant_tags)
{
    lua_State *L = luaL_newstate();
    char *err = NULL;
    dp_sim_point_t flow = {0}, vib = {0}, run = {0};
    cr_assert_eq(parse_lua(L,
                           "{ wave = 'sine', mean = 120, amplitude = 15, period = '6h', "
                           "noise = 1.5, every = '1s' }",
                           dp_sim_driver.point_settings, &flow, NULL, "flow", &err),
                 0, "%s", err);
    cr_assert_eq(flow.wave, DP_SIM_SINE);
    cr_assert_eq(flow.period, 6 * HOUR);
    cr_assert_eq(flow.noise, 1.5);
    cr_assert_eq(parse_lua(L,
                           "{ wave = 'const', mean = 2.0, noise = 0.1, drift = 0.05, "
                           "every = '10s', min = 0, faults = { { at = '14h', duration = '40min', "
                           "kind = 'spike', value = 6 } } }",
                           dp_sim_driver.point_settings, &vib, NULL, "vibration", &err),
                 0, "%s", err);
    cr_assert_eq(vib.every, 10 * SECOND);
    cr_assert(vib.min.set && vib.min.value == 0 && !vib.max.set);
    cr_assert_eq(vib.faults.n, 1);
    cr_assert_eq(vib.faults.items[0].at, 14 * HOUR);
    cr_assert_eq(vib.faults.items[0].duration, 40 * MINUTE);
    cr_assert_eq(vib.faults.items[0].kind, DP_SIM_SPIKE);
    cr_assert_eq(vib.faults.items[0].value, 6);
    cr_assert_eq(parse_lua(L,
                           "{ wave = 'square', mean = 0.5, amplitude = 0.5, period = '8h', "
                           "type = 'bool', steps = { { at = '1h', value = 0 }, "
                           "{ at = 7200, value = 1 } } }",
                           dp_sim_driver.point_settings, &run, NULL, "running", &err),
                 0, "%s", err);
    cr_assert_eq(run.type, DP_SIM_BOOL);
    cr_assert_eq(run.steps.n, 2);
    cr_assert_eq(run.steps.items[1].at, 2 * HOUR);
    cr_assert_eq(run.steps.items[1].value, 1);
    dp_settings_free(dp_sim_driver.point_settings, &flow);
    dp_settings_free(dp_sim_driver.point_settings, &vib);
    dp_settings_free(dp_sim_driver.point_settings, &run);
    cr_assert_null(vib.faults.items);
    lua_close(L);
}

/* Parses `lua` as point settings in the context the host would use and
 * checks that it fails with exactly `want`. */
static void expect_error(const char *lua, const char *want)
{
    lua_State *L = luaL_newstate();
    dp_sim_point_t p = {0};
    char *err = NULL;
    int rc =
        parse_lua(L, lua, dp_sim_driver.point_settings, &p, NULL, "twin P101, tag vibration", &err);
    /* Whatever was parsed before the error must still be freeable. */
    dp_settings_free(dp_sim_driver.point_settings, &p);
    lua_close(L);
    cr_assert_lt(rc, 0, "expected an error for %s", lua);
    cr_assert_not_null(err);
    cr_expect_str_eq(err, want, "for %s", lua);
    free(err);
}

Test(sim, parse_errors)
{
    expect_error("{ wave = 'zigzag' }",
                 "twin P101, tag vibration: wave: unknown value \"zigzag\" (one of: const, sine, "
                 "square, triangle, sawtooth, random_walk)");
    expect_error("{ steps = { { at = '1h', value = 1 } }, faults = { "
                 "{ at = '1h', duration = '5min', kind = 'bad' }, "
                 "{ at = '2h', duration = '5min', kind = 'fire' } } }",
                 "twin P101, tag vibration: faults: faults[2].kind: unknown value \"fire\" "
                 "(one of: stuck, bad, spike, dropout)");
    expect_error("{ steps = { { at = '2h', value = 1 }, { at = '1h', value = 2 } } }",
                 "twin P101, tag vibration: steps: steps[2].at: 1h is not after steps[1].at "
                 "(2h); steps must be sorted by at");
    expect_error("{ steps = { { at = '1h', value = 1 }, { at = '1h', value = 2 } } }",
                 "twin P101, tag vibration: steps: steps[2].at: 1h is not after steps[1].at "
                 "(1h); steps must be sorted by at");
    expect_error("{ every = '500us' }",
                 "twin P101, tag vibration: every: duration out of range [0.001s, 1e+09s]");
    expect_error("{ every = 0 }",
                 "twin P101, tag vibration: every: duration out of range [0.001s, 1e+09s]");
    expect_error("{ period = '0s' }",
                 "twin P101, tag vibration: period: duration out of range [0.001s, 1e+09s]");
    expect_error("{ noise = -1 }", "twin P101, tag vibration: noise: -1 is out of range [0, inf]");
    expect_error("{ min = 'low' }", "twin P101, tag vibration: min: expected a number, got string");
    expect_error("{ faults = { at = '1h', duration = '5min', kind = 'bad' } }",
                 "twin P101, tag vibration: faults: expected a list like { { at = \"2h\", "
                 "duration = \"5min\", kind = \"bad\" }, ... }, found the field \"at\"");
    expect_error("{ steps = { { at = '1h', value = 1 }, [3] = { at = '2h', value = 2 } } }",
                 "twin P101, tag vibration: steps: expected a list like { { at = \"2h\", value = "
                 "80 }, ... }, found keys other than 1..1");
    expect_error("{ faults = 3 }",
                 "twin P101, tag vibration: faults: expected a list like { { at = \"2h\", "
                 "duration = \"5min\", kind = \"bad\" }, ... }, got number");
    expect_error("{ faults = { 'bad' } }",
                 "twin P101, tag vibration: faults: faults[1]: expected a table, got string");
    expect_error("{ faults = { { at = '1h', kind = 'bad' } } }",
                 "twin P101, tag vibration: faults: faults[1]: missing required field "
                 "\"duration\"");
    expect_error("{ faults = { { at = '1h', duration = '1h', kind = 'bad', lenght = 2 } } }",
                 "twin P101, tag vibration: faults: faults[1]: unknown field \"lenght\" (known: "
                 "at, duration, kind, value)");
    expect_error("{ faults = { { at = '1h', duration = 'soon', kind = 'bad' } } }",
                 "twin P101, tag vibration: faults: faults[1].duration: bad duration \"soon\": "
                 "expected a number at \"soon\"");
    expect_error("{ faults = { { at = '1h', duration = 0, kind = 'bad' } } }",
                 "twin P101, tag vibration: faults: faults[1].duration: must be longer than 0s");
    expect_error("{ faults = { { at = '1h', duration = '1min', kind = 'spike' } } }",
                 "twin P101, tag vibration: faults: faults[1].value: required for kind "
                 "\"spike\"");
    expect_error("{ steps = { { at = '1h' } } }",
                 "twin P101, tag vibration: steps: steps[1]: missing required field \"value\"");
    expect_error("{ wave = 'sine', amplitude = 'big' }",
                 "twin P101, tag vibration: amplitude: expected a number, got string");
}

Test(sim, add_point_refuses_min_above_max)
{
    fx_t f;
    fx_init(&f, "{ seed = 1 }");
    int tag = dp_store_add(f.store, "P.x", NULL);
    dp_sim_point_t *p = dp_xcalloc(1, sizeof(*p));
    f.points[f.n_points++] = p;
    char *err = NULL;
    cr_assert_eq(
        parse_lua(f.L, "{ min = 5, max = 3 }", dp_sim_driver.point_settings, p, NULL, "P.x", &err),
        0);
    cr_assert_lt(dp_sim_driver.add_point(&f.dev, tag, p, &err), 0);
    cr_assert_str_eq(err, "min 5 is greater than max 3");
    free(err);
    fx_fini(&f);
}

/* ---- Signals ------------------------------------------------------------ */

Test(sim, sample_counts_and_timestamps)
{
    fx_t f;
    fx_init(&f, "{ seed = 42 }");
    int a = fx_add(&f, "P.a", "{ mean = 1, every = '1s' }");
    int b = fx_add(&f, "P.b", "{ mean = 2, every = '10s' }");
    fx_start(&f);
    fx_run(&f, HOUR);
    /* The first sample is at the start and the run includes its end time, so
     * an hour at 1s is 3601 samples. */
    size_t n;
    dp_sample_t *s = history(&f, a, &n);
    cr_assert_eq(n, 3601);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(s[i].ts, T0 + (dp_time_t)i * SECOND);
        cr_assert_eq(s[i].v.type, DP_NUM);
        cr_assert_eq(s[i].v.u.n, 1.0);
        cr_assert_eq(s[i].quality, DP_Q_GOOD);
    }
    free(s);
    cr_assert_eq(dp_store_history_len(f.store, b), 361);
    cr_assert_eq(dp_store_get(f.store, a)->writes, 3601);
    cr_assert_eq(dp_sim_samples(&f.dev), 3601 + 361);

    /* No sample after stop. */
    dp_sim_driver.stop(&f.dev);
    fx_run(&f, HOUR);
    cr_assert_eq(dp_sim_samples(&f.dev), 3601 + 361);
    cr_assert_eq(dp_clock_pending(f.clock), 0);
    fx_fini(&f);
}

Test(sim, sine_mean_and_amplitude)
{
    fx_t f;
    fx_init(&f, "{ seed = 42 }");
    int tag = fx_add(&f, "P101.flow",
                     "{ wave = 'sine', mean = 120, amplitude = 15, "
                     "period = '20min' }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601);
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < 3600; i++) { /* three whole periods */
        sum += s[i].v.u.n;
        lo = fmin(lo, s[i].v.u.n);
        hi = fmax(hi, s[i].v.u.n);
    }
    cr_assert_float_eq(sum / 3600, 120.0, 1e-9);
    cr_assert_float_eq(hi, 135.0, 1e-9);
    cr_assert_float_eq(lo, 105.0, 1e-9);
    /* Rising through the mean at the start, peak a quarter period in. */
    cr_assert_float_eq(s[0].v.u.n, 120.0, 1e-9);
    cr_assert_float_eq(s[300].v.u.n, 135.0, 1e-9);
    cr_assert_float_eq(s[100].v.u.n, 120.0 + 15.0 * sin(2 * M_PI * 100 / 1200), 1e-9);
    free(s);
    fx_fini(&f);
}

Test(sim, sine_noise_is_gaussian_with_given_sd)
{
    fx_t f;
    fx_init(&f, "{ seed = 7 }");
    int tag = fx_add(&f, "P101.flow",
                     "{ wave = 'sine', mean = 120, amplitude = 15, "
                     "period = '20min', noise = 1.5 }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    double sum = 0, sq = 0;
    size_t within = 0;
    for (size_t i = 0; i < n; i++) {
        double r = s[i].v.u.n - (120.0 + 15.0 * sin(2 * M_PI * (double)(i % 1200) / 1200));
        sum += r;
        sq += r * r;
        within += fabs(r) < 1.5;
    }
    double mean = sum / (double)n;
    double sd = sqrt(sq / (double)n - mean * mean);
    cr_assert_lt(fabs(mean), 0.1, "residual mean %g", mean);
    cr_assert(sd > 1.4 && sd < 1.6, "residual sd %g", sd);
    /* About 68% of a normal distribution lies within one sd. */
    double frac = (double)within / (double)n;
    cr_assert(frac > 0.64 && frac < 0.72, "fraction within 1 sd: %g", frac);
    free(s);
    fx_fini(&f);
}

Test(sim, square_wave_as_bool)
{
    fx_t f;
    fx_init(&f, "{ seed = 42 }");
    int tag = fx_add(&f, "P101.running",
                     "{ wave = 'square', mean = 0.5, amplitude = 0.5, "
                     "period = '20min', type = 'bool' }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n, on = 0;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(s[i].v.type, DP_BOOL);
        bool want = (i % 1200) < 600;
        cr_assert_eq(s[i].v.u.b, want, "at %gs", secs(&s[i]));
        on += s[i].v.u.b;
    }
    /* Three periods of 600 true samples, plus the one at 1h. */
    cr_assert_eq(on, 1801);
    free(s);
    fx_fini(&f);
}

Test(sim, triangle_sawtooth_and_phase)
{
    fx_t f;
    fx_init(&f, "{}");
    int tri = fx_add(&f, "P.tri", "{ wave = 'triangle', amplitude = 10, period = 400 }");
    int saw = fx_add(&f, "P.saw", "{ wave = 'sawtooth', mean = 5, amplitude = 10, period = 400 }");
    int ph = fx_add(&f, "P.ph", "{ wave = 'sine', amplitude = 1, period = 400, phase = 100 }");
    fx_start(&f);
    fx_run(&f, 10 * MINUTE);
    size_t n;
    dp_sample_t *s = history(&f, tri, &n);
    cr_assert_float_eq(s[0].v.u.n, 0.0, 1e-12);
    cr_assert_float_eq(s[50].v.u.n, 5.0, 1e-12);
    cr_assert_float_eq(s[100].v.u.n, 10.0, 1e-12);
    cr_assert_float_eq(s[200].v.u.n, 0.0, 1e-12);
    cr_assert_float_eq(s[300].v.u.n, -10.0, 1e-12);
    cr_assert_float_eq(s[400].v.u.n, 0.0, 1e-12);
    free(s);
    s = history(&f, saw, &n);
    cr_assert_float_eq(s[0].v.u.n, -5.0, 1e-12);
    cr_assert_float_eq(s[200].v.u.n, 5.0, 1e-12);
    cr_assert_float_eq(s[399].v.u.n, 5.0 + 10.0 * (2.0 * 399 / 400 - 1), 1e-12);
    cr_assert_float_eq(s[400].v.u.n, -5.0, 1e-12);
    free(s);
    s = history(&f, ph, &n);
    /* A quarter-period phase turns the sine into a cosine. */
    cr_assert_float_eq(s[0].v.u.n, 1.0, 1e-12);
    cr_assert_float_eq(s[200].v.u.n, -1.0, 1e-12);
    free(s);
    fx_fini(&f);
}

Test(sim, step_changes_mean)
{
    fx_t f;
    fx_init(&f, "{}");
    int tag = fx_add(&f, "P.level",
                     "{ mean = 10, steps = { { at = '30min', value = 50 }, "
                     "{ at = '45min', value = 20 } } }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601);
    size_t c10 = 0, c50 = 0, c20 = 0;
    for (size_t i = 0; i < n; i++) {
        double want = i < 1800 ? 10 : i < 2700 ? 50 : 20;
        cr_assert_eq(s[i].v.u.n, want, "at %gs", secs(&s[i]));
        c10 += s[i].v.u.n == 10;
        c50 += s[i].v.u.n == 50;
        c20 += s[i].v.u.n == 20;
    }
    cr_assert_eq(c10, 1800);
    cr_assert_eq(c50, 900);
    cr_assert_eq(c20, 901);
    free(s);
    fx_fini(&f);
}

Test(sim, drift_is_units_per_hour)
{
    fx_t f;
    fx_init(&f, "{}");
    int tag = fx_add(&f, "P.v", "{ mean = 2, drift = 0.5, every = '15min' }");
    fx_start(&f);
    fx_run(&f, 2 * HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 9);
    cr_assert_float_eq(s[0].v.u.n, 2.0, 1e-12);
    cr_assert_float_eq(s[2].v.u.n, 2.25, 1e-12);
    cr_assert_float_eq(s[4].v.u.n, 2.5, 1e-12);
    cr_assert_float_eq(s[8].v.u.n, 3.0, 1e-12);
    free(s);
    fx_fini(&f);
}

Test(sim, clamp_and_integer)
{
    fx_t f;
    fx_init(&f, "{}");
    int tag = fx_add(&f, "P.i",
                     "{ wave = 'sine', amplitude = 10, period = 400, min = -5, "
                     "max = 5.2, type = 'integer', noise = 0.3 }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n, top = 0, bottom = 0;
    dp_sample_t *s = history(&f, tag, &n);
    for (size_t i = 0; i < n; i++) {
        double v = s[i].v.u.n;
        cr_assert_eq(v, round(v), "not an integer: %g", v);
        cr_assert(v >= -5 && v <= 5, "not clamped: %g", v);
        top += v == 5;
        bottom += v == -5;
    }
    cr_assert_gt(top, 100);
    cr_assert_gt(bottom, 100);
    free(s);
    fx_fini(&f);
}

Test(sim, random_walk_wanders)
{
    fx_t f;
    fx_init(&f, "{ seed = 3 }");
    int tag = fx_add(&f, "P.w", "{ wave = 'random_walk', mean = 100, amplitude = 0.5 }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    /* The increments of the walk are the Gaussian steps. */
    double sum = 0, sq = 0;
    for (size_t i = 1; i < n; i++) {
        double d = s[i].v.u.n - s[i - 1].v.u.n;
        sum += d;
        sq += d * d;
    }
    double m = sum / (double)(n - 1);
    double sd = sqrt(sq / (double)(n - 1) - m * m);
    cr_assert(sd > 0.47 && sd < 0.53, "step sd %g", sd);
    free(s);
    fx_fini(&f);
}

/* ---- Faults -------------------------------------------------------------- */

Test(sim, bad_fault_only_in_its_window)
{
    fx_t f;
    fx_init(&f, "{}");
    int tag = fx_add(&f, "P.t",
                     "{ wave = 'sine', mean = 50, amplitude = 5, period = '20min', "
                     "faults = { { at = '10min', duration = '5min', kind = 'bad' } } }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n, bad = 0;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601);
    for (size_t i = 0; i < n; i++) {
        bool want = in_window(&s[i], 10 * MINUTE, 5 * MINUTE);
        cr_assert_eq(s[i].quality, want ? DP_Q_BAD : DP_Q_GOOD, "at %gs", secs(&s[i]));
        bad += s[i].quality == DP_Q_BAD;
        /* The value goes on as if nothing happened. */
        cr_assert_float_eq(s[i].v.u.n, 50 + 5 * sin(2 * M_PI * (double)(i % 1200) / 1200), 1e-9);
    }
    cr_assert_eq(bad, 300);
    cr_assert_eq(dp_store_get(f.store, tag)->quality, DP_Q_GOOD);
    free(s);
    fx_fini(&f);
}

Test(sim, dropout_writes_nothing_in_its_window)
{
    fx_t f;
    fx_init(&f, "{}");
    int tag = fx_add(&f, "P.t",
                     "{ mean = 1, faults = { { at = '10min', duration = '5min', "
                     "kind = 'dropout' } } }");
    fx_start(&f);
    fx_run(&f, 12 * MINUTE);
    /* In the middle of the dropout the tag still shows its last sample. */
    cr_assert_eq(dp_store_get(f.store, tag)->ts, T0 + 10 * MINUTE - SECOND);
    fx_run(&f, 48 * MINUTE);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601 - 300);
    for (size_t i = 0; i < n; i++)
        cr_assert(!in_window(&s[i], 10 * MINUTE, 5 * MINUTE), "sample at %gs", secs(&s[i]));
    cr_assert_eq(dp_sim_samples(&f.dev), 3301);
    free(s);
    fx_fini(&f);
}

Test(sim, stuck_holds_last_good_value)
{
    fx_t f;
    fx_init(&f, "{ seed = 5 }");
    int tag = fx_add(&f, "P.t",
                     "{ mean = 10, noise = 1, faults = { "
                     "{ at = '10min', duration = '5min', kind = 'stuck' } } }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601);
    double held = s[599].v.u.n;
    for (size_t i = 600; i < 900; i++) {
        cr_assert_eq(s[i].v.u.n, held, "at %gs", secs(&s[i]));
        cr_assert_eq(s[i].quality, DP_Q_GOOD);
    }
    cr_assert_neq(s[900].v.u.n, held);
    cr_assert_neq(s[598].v.u.n, held);
    free(s);
    fx_fini(&f);
}

/* Samples written with quality bad are not "good", so a sensor that gets
 * stuck during a bad spell holds the value from before it. */
Test(sim, stuck_after_bad_holds_value_from_before_bad)
{
    fx_t f;
    fx_init(&f, "{ seed = 5 }");
    int tag = fx_add(&f, "P.t",
                     "{ mean = 10, noise = 1, faults = { "
                     "{ at = '10min', duration = '5min', kind = 'bad' }, "
                     "{ at = '12min', duration = '5min', kind = 'stuck' } } }");
    fx_start(&f);
    fx_run(&f, HOUR);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 3601);
    double held = s[599].v.u.n;
    for (size_t i = 600; i < 1020; i++) {
        cr_assert_eq(s[i].quality, i < 900 ? DP_Q_BAD : DP_Q_GOOD, "at %gs", secs(&s[i]));
        if (i >= 720)
            cr_assert_eq(s[i].v.u.n, held, "at %gs", secs(&s[i]));
        else
            cr_assert_neq(s[i].v.u.n, held, "at %gs", secs(&s[i]));
    }
    cr_assert_neq(s[1020].v.u.n, held);
    free(s);
    fx_fini(&f);
}

/* Runs one noisy point for an hour and returns its values. */
static double *run_values(const char *device, const char *name, const char *point, size_t *n)
{
    fx_t f;
    fx_init(&f, device);
    int tag = fx_add(&f, name, point);
    fx_start(&f);
    fx_run(&f, HOUR);
    dp_sample_t *s = history(&f, tag, n);
    double *v = dp_xcalloc(*n, sizeof(*v));
    for (size_t i = 0; i < *n; i++)
        v[i] = s[i].v.u.n;
    free(s);
    fx_fini(&f);
    return v;
}

Test(sim, spike_adds_value_and_leaves_the_rest_alone)
{
    static const char base[] = "{ wave = 'random_walk', mean = 2, amplitude = 0.05, noise = 0.1 }";
    static const char spiked[] = "{ wave = 'random_walk', mean = 2, amplitude = 0.05, noise = "
                                 "0.1, faults = { { at = '10min', duration = '5min', "
                                 "kind = 'spike', value = 6 } } }";
    size_t n1, n2;
    double *a = run_values("{ seed = 42 }", "P101.vibration", base, &n1);
    double *b = run_values("{ seed = 42 }", "P101.vibration", spiked, &n2);
    cr_assert_eq(n1, 3601);
    cr_assert_eq(n2, 3601);
    for (size_t i = 0; i < n1; i++) {
        bool in = i >= 600 && i < 900;
        cr_assert_float_eq(b[i], a[i] + (in ? 6.0 : 0.0), 1e-9, "at %zus", i);
    }
    free(a);
    free(b);
}

Test(sim, same_seed_same_values_other_seed_differs)
{
    static const char point[] = "{ wave = 'random_walk', mean = 20, amplitude = 0.2, noise = 1 }";
    size_t n1, n2, n3, n4;
    double *a = run_values("{ seed = 42 }", "P101.flow", point, &n1);
    double *b = run_values("{ seed = 42 }", "P101.flow", point, &n2);
    double *c = run_values("{ seed = 43 }", "P101.flow", point, &n3);
    double *d = run_values("{ seed = 42 }", "P102.flow", point, &n4);
    cr_assert_eq(n1, 3601);
    cr_assert_eq(n2, n1);
    cr_assert_eq(memcmp(a, b, n1 * sizeof(*a)), 0, "same seed gave different values");
    size_t same_c = 0, same_d = 0;
    for (size_t i = 0; i < n1; i++) {
        same_c += a[i] == c[i];
        same_d += a[i] == d[i];
    }
    cr_assert_eq(same_c, 0, "another seed repeated %zu values", same_c);
    cr_assert_eq(same_d, 0, "another tag repeated %zu values", same_d);
    free(a);
    free(b);
    free(c);
    free(d);
}

Test(sim, restart_replays_from_the_new_start)
{
    fx_t f;
    fx_init(&f, "{ seed = 9 }");
    int tag = fx_add(&f, "P.t", "{ mean = 1, noise = 1, every = '1min' }");
    fx_start(&f);
    fx_run(&f, 10 * MINUTE);
    size_t n;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 11);
    double first[11];
    for (size_t i = 0; i < n; i++)
        first[i] = s[i].v.u.n;
    free(s);
    dp_sim_driver.stop(&f.dev);
    fx_run(&f, 30 * SECOND);
    fx_start(&f);
    fx_run(&f, 10 * MINUTE);
    s = history(&f, tag, &n);
    cr_assert_eq(n, 22);
    for (size_t i = 0; i < 11; i++) {
        cr_assert_eq(s[11 + i].v.u.n, first[i]);
        cr_assert_eq(s[11 + i].ts, T0 + 10 * MINUTE + 30 * SECOND + (dp_time_t)i * MINUTE);
    }
    free(s);
    char *err = NULL;
    cr_assert_eq(dp_sim_driver.start(&f.dev, &err), DP_ESTATE);
    free(err);
    fx_fini(&f);
}

Test(sim, inject_fault_at_runtime)
{
    fx_t f;
    fx_init(&f, "{}");
    int tag = fx_add(&f, "P.t", "{ mean = 3 }");
    int other = dp_store_add(f.store, "P.other", NULL);
    cr_assert_eq(dp_sim_inject(&f.dev, tag, "bad", 0, MINUTE), DP_ESTATE);
    fx_start(&f);
    fx_run(&f, 10 * MINUTE);
    cr_assert_eq(dp_sim_inject(&f.dev, tag, "fire", 0, MINUTE), DP_EINVAL);
    cr_assert_eq(dp_sim_inject(&f.dev, tag, "bad", 0, 0), DP_EINVAL);
    cr_assert_eq(dp_sim_inject(&f.dev, other, "bad", 0, MINUTE), DP_ENOENT);
    /* The sample at exactly 10min has been written already. */
    cr_assert_eq(dp_sim_inject(&f.dev, tag, "bad", 0, MINUTE), 0);
    cr_assert_eq(dp_sim_inject(&f.dev, tag, "spike", 4, 2 * MINUTE), 0);
    fx_run(&f, 10 * MINUTE);
    size_t n, bad = 0, spiked = 0;
    dp_sample_t *s = history(&f, tag, &n);
    cr_assert_eq(n, 1201);
    for (size_t i = 0; i < n; i++) {
        bool in_bad = s[i].ts > T0 + 10 * MINUTE && s[i].ts < T0 + 11 * MINUTE;
        bool in_spike = s[i].ts > T0 + 10 * MINUTE && s[i].ts < T0 + 12 * MINUTE;
        cr_assert_eq(s[i].quality, in_bad ? DP_Q_BAD : DP_Q_GOOD, "at %gs", secs(&s[i]));
        cr_assert_eq(s[i].v.u.n, in_spike ? 7.0 : 3.0, "at %gs", secs(&s[i]));
        bad += in_bad;
        spiked += in_spike;
    }
    cr_assert_eq(bad, 59);
    cr_assert_eq(spiked, 119);
    free(s);
    fx_fini(&f);
}
