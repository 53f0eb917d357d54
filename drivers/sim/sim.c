#include "sim.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Settings ---------------------------------------------------------- */

static const char *const wave_choices[] = {"const",    "sine",        "square", "triangle",
                                           "sawtooth", "random_walk", NULL};
static const char *const type_choices[] = {"number", "integer", "bool", NULL};
static const char *const kind_choices[] = {"stuck", "bad", "spike", "dropout", NULL};

static const dp_setting_t device_settings[] = {
    {.name = "seed",
     .type = DP_SET_INT,
     .offset = offsetof(dp_sim_device_t, seed),
     .def = "1",
     .doc = "Seed of the noise and random walks; the same seed gives the same samples in every "
            "run."},
    DP_SETTINGS_END,
};

/* Elements of `steps`. */
static const dp_setting_t step_settings[] = {
    {.name = "at",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_sim_step_t, at),
     .required = true,
     .doc = "Time since the device started."},
    {.name = "value",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_sim_step_t, value),
     .required = true,
     .doc = "The new mean."},
    DP_SETTINGS_END,
};

/* Elements of `faults`. */
static const dp_setting_t fault_settings[] = {
    {.name = "at",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_sim_fault_t, at),
     .required = true,
     .doc = "Start, as time since the device started."},
    {.name = "duration",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_sim_fault_t, duration),
     .required = true,
     .doc = "How long the fault lasts (more than 0s)."},
    {.name = "kind",
     .type = DP_SET_ENUM,
     .offset = offsetof(dp_sim_fault_t, kind),
     .required = true,
     .choices = kind_choices,
     .doc = "`stuck` repeats the last good value, `bad` writes samples with quality bad, "
            "`spike` adds `value`, `dropout` writes nothing (the tag goes stale)."},
    {.name = "value",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_sim_fault_t, value),
     .doc = "What a spike adds; required for `spike`, unused by the other kinds."},
    DP_SETTINGS_END,
};

/* Parses the table at idx, element i of the list `list`, with `desc`.
 * dp_settings_parse words a field error as "<context>: <field>: <what>";
 * it is rewritten to "<list>[i].<field>: <what>" so that the message points
 * at the element the way one would write it in Lua. */
static int parse_element(lua_State *L, int idx, const char *list, size_t i,
                         const dp_setting_t *desc, void *out, char **err)
{
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "%s[%zu]", list, i);
    char *inner = NULL;
    int rc = dp_settings_parse(L, idx, desc, out, NULL, ctx, &inner);
    if (rc == 0)
        return 0;
    size_t n = strlen(ctx);
    const char *rest = NULL;
    bool rewrite = false;
    if (inner != NULL && strncmp(inner, ctx, n) == 0 && strncmp(inner + n, ": ", 2) == 0) {
        rest = inner + n + 2;
        for (const dp_setting_t *d = desc; d->name != NULL && !rewrite; d++) {
            size_t m = strlen(d->name);
            rewrite = strncmp(rest, d->name, m) == 0 && strncmp(rest + m, ": ", 2) == 0;
        }
    }
    if (rewrite)
        dp_fail(err, rc, "%s.%s", ctx, rest);
    else
        dp_fail(err, rc, "%s", inner != NULL ? inner : dp_strerror(rc));
    free(inner);
    return rc;
}

/* Checks that the value at idx is a list (a table whose keys are exactly
 * 1..n) and stores n. A plain table such as `faults = { at = "1h", ... }` is
 * the likely mistake, so it is named rather than read as an empty list; the
 * alphabetically first stray field is named, as the order of lua_next is not
 * the same from run to run. */
static int list_len(lua_State *L, int idx, const char *example, size_t *n, char **err)
{
    if (!lua_istable(L, idx))
        return dp_fail(err, DP_EINVAL, "expected a list like %s, got %s", example,
                       luaL_typename(L, idx));
    size_t len = lua_rawlen(L, idx);
    bool stray = false;
    char first[64] = "";
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        int type = lua_type(L, -1);
        if (type == LUA_TNUMBER) {
            int isint = 0;
            lua_Integer k = lua_tointegerx(L, -1, &isint);
            if (isint && k >= 1 && (size_t)k <= len)
                continue;
        }
        stray = true;
        if (type == LUA_TSTRING && (first[0] == '\0' || strcmp(lua_tostring(L, -1), first) < 0))
            snprintf(first, sizeof(first), "%s", lua_tostring(L, -1));
    }
    if (first[0] != '\0')
        return dp_fail(err, DP_EINVAL, "expected a list like %s, found the field \"%s\"", example,
                       first);
    if (stray)
        return dp_fail(err, DP_EINVAL, "expected a list like %s, found keys other than 1..%zu",
                       example, len);
    *n = len;
    return 0;
}

static void free_steps(void *field)
{
    dp_sim_steps_t *steps = field;
    free(steps->items);
    steps->items = NULL;
    steps->n = 0;
}

static int parse_steps(lua_State *L, int idx, void *field, char **err)
{
    static const char example[] = "{ { at = \"2h\", value = 80 }, ... }";
    idx = lua_absindex(L, idx);
    int top = lua_gettop(L);
    dp_sim_steps_t *steps = field;
    free_steps(steps);
    size_t n;
    int rc = list_len(L, idx, example, &n, err);
    if (rc < 0)
        return rc;
    dp_sim_step_t *items = dp_xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n && rc == 0; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        rc = parse_element(L, -1, "steps", i + 1, step_settings, &items[i], err);
        lua_settop(L, top);
        /* The mean at time t is the last step at or before t, which is only
         * well defined when no two steps share a time. */
        if (rc == 0 && i > 0 && items[i].at <= items[i - 1].at) {
            char a[32], b[32];
            dp_duration_format(items[i].at, a, sizeof(a));
            dp_duration_format(items[i - 1].at, b, sizeof(b));
            rc = dp_fail(err, DP_EINVAL,
                         "steps[%zu].at: %s is not after steps[%zu].at (%s); steps must be "
                         "sorted by at",
                         i + 1, a, i, b);
        }
    }
    if (rc < 0) {
        free(items);
        return rc;
    }
    steps->items = items;
    steps->n = n;
    return 0;
}

static void free_faults(void *field)
{
    dp_sim_faults_t *faults = field;
    free(faults->items);
    faults->items = NULL;
    faults->n = 0;
}

static int parse_faults(lua_State *L, int idx, void *field, char **err)
{
    static const char example[] = "{ { at = \"2h\", duration = \"5min\", kind = \"bad\" }, ... }";
    idx = lua_absindex(L, idx);
    int top = lua_gettop(L);
    dp_sim_faults_t *faults = field;
    free_faults(faults);
    size_t n;
    int rc = list_len(L, idx, example, &n, err);
    if (rc < 0)
        return rc;
    dp_sim_fault_t *items = dp_xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n && rc == 0; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        rc = parse_element(L, -1, "faults", i + 1, fault_settings, &items[i], err);
        if (rc == 0 && items[i].duration <= 0) {
            rc = dp_fail(err, DP_EINVAL, "faults[%zu].duration: must be longer than 0s", i + 1);
        } else if (rc == 0 && items[i].kind == DP_SIM_SPIKE) {
            /* A spike without a value would silently do nothing. */
            lua_getfield(L, -1, "value");
            if (lua_isnil(L, -1))
                rc = dp_fail(err, DP_EINVAL, "faults[%zu].value: required for kind \"spike\"",
                             i + 1);
        }
        lua_settop(L, top);
    }
    if (rc < 0) {
        free(items);
        return rc;
    }
    faults->items = items;
    faults->n = n;
    return 0;
}

/* min and max are optional: absent means no clamping, which a plain number
 * setting (absent = 0) could not express. */
static int parse_bound(lua_State *L, int idx, void *field, char **err)
{
    dp_sim_bound_t *bound = field;
    if (lua_type(L, idx) != LUA_TNUMBER)
        return dp_fail(err, DP_EINVAL, "expected a number, got %s", luaL_typename(L, idx));
    double v = lua_tonumber(L, idx);
    if (!isfinite(v))
        return dp_fail(err, DP_EINVAL, "expected a finite number");
    bound->set = true;
    bound->value = v;
    return 0;
}

static const dp_setting_t point_settings[] = {
    {.name = "wave",
     .type = DP_SET_ENUM,
     .offset = offsetof(dp_sim_point_t, wave),
     .def = "const",
     .choices = wave_choices,
     .doc = "Shape of the signal around `mean`. `square` is `mean + amplitude` for the first half "
            "of each period and `mean - amplitude` for the second; `triangle` starts at `mean` "
            "rising like `sine`; `sawtooth` rises from `mean - amplitude` to `mean + amplitude`; "
            "`random_walk` adds a Gaussian step of standard deviation `amplitude` at every "
            "sample."},
    {.name = "mean",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_sim_point_t, mean),
     .def = "0",
     .doc = "Centre of the wave (until the first of `steps`)."},
    {.name = "amplitude",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_sim_point_t, amplitude),
     .def = "0",
     .doc = "Peak deviation from the mean; for `random_walk`, the standard deviation of a step."},
    {.name = "period",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_sim_point_t, period),
     .def = "1h",
     .min = 0.001,
     .max = 1e9,
     .doc = "Length of one cycle of the periodic waves."},
    {.name = "phase",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_sim_point_t, phase),
     .def = "0s",
     .doc = "Shifts a periodic wave earlier: the value at time t is the wave at t + phase."},
    {.name = "noise",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_sim_point_t, noise),
     .def = "0",
     .min = 0,
     .max = INFINITY,
     .doc = "Standard deviation of Gaussian noise added to every sample."},
    {.name = "drift",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_sim_point_t, drift),
     .def = "0",
     .doc = "Linear drift of the mean, in units per hour since the device started."},
    {.name = "every",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_sim_point_t, every),
     .def = "1s",
     .min = 0.001,
     .max = 1e9,
     .doc = "Sample interval; the first sample is written when the device starts."},
    {.name = "min",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(dp_sim_point_t, min),
     .parse = parse_bound,
     .doc = "Lower limit (a number): samples below it are clamped to it, after noise and "
            "spikes. No limit when absent."},
    {.name = "max",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(dp_sim_point_t, max),
     .parse = parse_bound,
     .doc = "Upper limit (a number): samples above it are clamped to it, after noise and "
            "spikes. No limit when absent."},
    {.name = "type",
     .type = DP_SET_ENUM,
     .offset = offsetof(dp_sim_point_t, type),
     .def = "number",
     .choices = type_choices,
     .doc = "Type of the written value: `integer` rounds to the nearest integer, `bool` is "
            "true when the value is >= 0.5."},
    {.name = "steps",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(dp_sim_point_t, steps),
     .parse = parse_steps,
     .free = free_steps,
     .doc = "List of `{ at = duration, value = number }`, sorted by `at`: from `at` the mean "
            "becomes `value`."},
    {.name = "faults",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(dp_sim_point_t, faults),
     .parse = parse_faults,
     .free = free_faults,
     .doc = "List of `{ at = duration, duration = duration, kind = ..., value = number }`; see "
            "below."},
    DP_SETTINGS_END,
};

/* ---- Random numbers ---------------------------------------------------- */

/* splitmix64: expands one 64-bit seed into well-mixed words for xoshiro. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256**: small, fast, and identical on every platform, unlike rand(). */
static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* FNV-1a: gives each tag its own stream, so adding or reordering points does
 * not change the samples of the others. */
static uint64_t hash_name(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* ---- Devices and points ------------------------------------------------ */

typedef struct sim_dev sim_dev_t;

typedef struct {
    dp_timer_t timer; /* first, and never moved: the clock holds its address */
    sim_dev_t *sd;
    int tag;
    const dp_sim_point_t *cfg; /* owned by the host */
    uint64_t name_hash;
    uint64_t rng[4];
    bool has_spare; /* Box-Muller makes two normals; the second is kept */
    double spare;
    double walk;
    bool has_good; /* the last sample written with good quality, for stuck */
    dp_value_t good;
    dp_sim_fault_t *injected; /* added by dp_sim_inject; owned here */
    size_t n_injected, cap_injected;
} sim_point_t;

struct sim_dev {
    dp_device_t *dev;
    int64_t seed;
    sim_point_t **points; /* pointers, so that growing the array moves no timer */
    size_t n_points, cap_points;
    dp_time_t start;
    bool running;
    uint64_t samples;
};

static void seed_point(sim_point_t *p)
{
    uint64_t x = (uint64_t)p->sd->seed;
    x = splitmix64(&x) ^ p->name_hash;
    for (int i = 0; i < 4; i++)
        p->rng[i] = splitmix64(&x);
    p->has_spare = false;
    p->walk = 0;
    p->has_good = false;
    p->n_injected = 0;
}

/* A standard normal variate (Box-Muller). */
static double gauss(sim_point_t *p)
{
    if (p->has_spare) {
        p->has_spare = false;
        return p->spare;
    }
    /* u1 is in (0, 1] so that log(u1) is finite. */
    double u1 = (double)((xoshiro_next(p->rng) >> 11) + 1) * 0x1p-53;
    double u2 = (double)(xoshiro_next(p->rng) >> 11) * 0x1p-53;
    double r = sqrt(-2.0 * log(u1));
    p->spare = r * sin(2.0 * M_PI * u2);
    p->has_spare = true;
    return r * cos(2.0 * M_PI * u2);
}

static double mean_at(const dp_sim_point_t *c, dp_time_t t)
{
    double m = c->mean;
    for (size_t i = 0; i < c->steps.n && c->steps.items[i].at <= t; i++)
        m = c->steps.items[i].value;
    return m;
}

/* The signal before faults and clamping: wave around the (stepped, drifting)
 * mean, plus noise. Draws from the generator in the same order every sample,
 * so faults never shift the random sequence of the samples around them. */
static double signal_at(sim_point_t *p, dp_time_t t)
{
    const dp_sim_point_t *c = p->cfg;
    double m = mean_at(c, t) + c->drift * (double)t / (3600.0 * (double)DP_US_PER_SEC);
    double a = c->amplitude;
    /* The position in the cycle is computed in integer microseconds, so it
     * does not lose precision after days of running. */
    double u = (double)((t + c->phase) % c->period) / (double)c->period;
    double x;
    switch (c->wave) {
    case DP_SIM_SINE:
        x = m + a * sin(2.0 * M_PI * u);
        break;
    case DP_SIM_SQUARE:
        x = u < 0.5 ? m + a : m - a;
        break;
    case DP_SIM_TRIANGLE:
        x = m + a * (u < 0.25 ? 4.0 * u : u < 0.75 ? 2.0 - 4.0 * u : 4.0 * u - 4.0);
        break;
    case DP_SIM_SAWTOOTH:
        x = m + a * (2.0 * u - 1.0);
        break;
    case DP_SIM_RANDOM_WALK:
        p->walk += a * gauss(p);
        x = m + p->walk;
        break;
    default:
        x = m;
        break;
    }
    if (c->noise > 0)
        x += c->noise * gauss(p);
    return x;
}

static void apply_fault(const dp_sim_fault_t *f, dp_time_t t, double *spike, bool *stuck, bool *bad,
                        bool *dropout)
{
    if (t < f->at || t - f->at >= f->duration)
        return;
    switch (f->kind) {
    case DP_SIM_STUCK:
        *stuck = true;
        break;
    case DP_SIM_BAD:
        *bad = true;
        break;
    case DP_SIM_SPIKE:
        *spike += f->value;
        break;
    default:
        *dropout = true;
        break;
    }
}

static void on_sample(dp_timer_t *timer)
{
    sim_point_t *p = timer->data;
    sim_dev_t *sd = p->sd;
    const dp_sim_point_t *c = p->cfg;
    dp_host_t *host = sd->dev->host;
    dp_time_t now = dp_clock_now(host->clock);
    dp_time_t t = now - sd->start;

    double x = signal_at(p, t);
    double spike = 0;
    bool stuck = false, bad = false, dropout = false;
    for (size_t i = 0; i < c->faults.n; i++)
        apply_fault(&c->faults.items[i], t, &spike, &stuck, &bad, &dropout);
    for (size_t i = 0; i < p->n_injected; i++)
        apply_fault(&p->injected[i], t, &spike, &stuck, &bad, &dropout);
    if (dropout)
        return;

    x += spike;
    if (c->min.set && x < c->min.value)
        x = c->min.value;
    if (c->max.set && x > c->max.value)
        x = c->max.value;
    dp_value_t v;
    if (c->type == DP_SIM_BOOL)
        v = dp_bool(x >= 0.5);
    else if (c->type == DP_SIM_INTEGER)
        v = dp_num(round(x));
    else
        v = dp_num(x);
    /* A sensor stuck from the very first sample is stuck at that sample. */
    if (stuck && p->has_good)
        v = p->good;

    int quality = bad ? DP_Q_BAD : DP_Q_GOOD;
    if (dp_store_write(host->store, p->tag, &v, now, quality) < 0)
        return;
    sd->samples++;
    if (!bad) {
        p->good = v;
        p->has_good = true;
    }
}

static int sim_open(dp_device_t *dev, char **err)
{
    (void)err;
    sim_dev_t *sd = dp_xcalloc(1, sizeof(*sd));
    sd->dev = dev;
    sd->seed = dev->cfg != NULL ? ((const dp_sim_device_t *)dev->cfg)->seed : 1;
    dev->impl = sd;
    return 0;
}

static int sim_add_point(dp_device_t *dev, int tag, void *point, char **err)
{
    sim_dev_t *sd = dev->impl;
    const dp_sim_point_t *c = point;
    if (sd->running)
        return dp_fail(err, DP_ESTATE, "points must be added before the device starts");
    const dp_tag_t *info = dp_store_get(dev->host->store, tag);
    if (info == NULL)
        return dp_fail(err, DP_ENOENT, "no tag with handle %d", tag);
    if (c->min.set && c->max.set && c->min.value > c->max.value)
        return dp_fail(err, DP_EINVAL, "min %.15g is greater than max %.15g", c->min.value,
                       c->max.value);
    /* The settings range checks already refuse these; a struct filled in by
     * other means must not divide by zero or spin the clock. */
    if (c->period <= 0 || c->every < DP_US_PER_MS || c->phase < 0)
        return dp_fail(err, DP_EINVAL, "period and every must be at least 1ms");

    sim_point_t *p = dp_xcalloc(1, sizeof(*p));
    dp_timer_init(dev->host->clock, &p->timer);
    p->timer.data = p;
    p->sd = sd;
    p->tag = tag;
    p->cfg = c;
    p->name_hash = hash_name(info->name);
    if (sd->n_points == sd->cap_points) {
        sd->cap_points = sd->cap_points ? 2 * sd->cap_points : 8;
        sd->points = dp_xrealloc(sd->points, sd->cap_points * sizeof(*sd->points));
    }
    sd->points[sd->n_points++] = p;
    return 0;
}

static void sim_stop(dp_device_t *dev)
{
    sim_dev_t *sd = dev->impl;
    if (sd == NULL)
        return;
    for (size_t i = 0; i < sd->n_points; i++)
        dp_timer_stop(&sd->points[i]->timer);
    sd->running = false;
}

static int sim_start(dp_device_t *dev, char **err)
{
    sim_dev_t *sd = dev->impl;
    if (sd->running)
        return dp_fail(err, DP_ESTATE, "already started");
    sd->start = dp_clock_now(dev->host->clock);
    /* Reseeding here makes a stop and start replay the same samples. */
    for (size_t i = 0; i < sd->n_points; i++) {
        sim_point_t *p = sd->points[i];
        seed_point(p);
        int rc = dp_timer_start(&p->timer, on_sample, 0, p->cfg->every);
        if (rc < 0) {
            sim_stop(dev);
            return dp_fail(err, rc, "cannot start the sample timer: %s", dp_strerror(rc));
        }
    }
    sd->running = true;
    return 0;
}

static void sim_close(dp_device_t *dev)
{
    sim_dev_t *sd = dev->impl;
    if (sd == NULL)
        return;
    sim_stop(dev);
    for (size_t i = 0; i < sd->n_points; i++) {
        free(sd->points[i]->injected);
        free(sd->points[i]);
    }
    free(sd->points);
    free(sd);
    dev->impl = NULL;
}

int dp_sim_inject(dp_device_t *dev, int tag, const char *kind, double value, dp_time_t duration)
{
    if (dev == NULL || dev->driver != &dp_sim_driver || dev->impl == NULL || kind == NULL ||
        duration <= 0 || !isfinite(value))
        return DP_EINVAL;
    int k = -1;
    for (int i = 0; kind_choices[i] != NULL; i++) {
        if (strcmp(kind_choices[i], kind) == 0)
            k = i;
    }
    if (k < 0)
        return DP_EINVAL;
    sim_dev_t *sd = dev->impl;
    if (!sd->running)
        return DP_ESTATE;
    sim_point_t *p = NULL;
    for (size_t i = 0; i < sd->n_points && p == NULL; i++) {
        if (sd->points[i]->tag == tag)
            p = sd->points[i];
    }
    if (p == NULL)
        return DP_ENOENT;
    if (p->n_injected == p->cap_injected) {
        p->cap_injected = p->cap_injected ? 2 * p->cap_injected : 4;
        p->injected = dp_xrealloc(p->injected, p->cap_injected * sizeof(*p->injected));
    }
    p->injected[p->n_injected++] = (dp_sim_fault_t){
        .at = dp_clock_now(dev->host->clock) - sd->start,
        .duration = duration,
        .kind = k,
        .value = value,
    };
    return 0;
}

uint64_t dp_sim_samples(const dp_device_t *dev)
{
    if (dev == NULL || dev->driver != &dp_sim_driver || dev->impl == NULL)
        return 0;
    return ((const sim_dev_t *)dev->impl)->samples;
}

/* Statistics for the HTTP API, /metrics and the REPL. */
static size_t sim_stats(dp_device_t *dev, dp_stat_t *out, size_t max)
{
    const sim_dev_t *sd = dev->impl;
    if (sd == NULL || max < 4)
        return 0;
    size_t faults = 0;
    for (size_t i = 0; i < sd->n_points; i++)
        faults += sd->points[i]->n_injected;
    out[0] = (dp_stat_t){.name = "samples", .value = (double)sd->samples};
    out[1] = (dp_stat_t){.name = "points", .value = (double)sd->n_points};
    out[2] = (dp_stat_t){.name = "running", .value = sd->running ? 1 : 0};
    out[3] = (dp_stat_t){.name = "injected_faults", .value = (double)faults};
    return 4;
}

const dp_driver_t dp_sim_driver = {
    .name = "sim",
    .summary = "Simulated signals (waves, noise, drift, steps, faults) for demos and tests.",
    .device_settings = device_settings,
    .device_size = sizeof(dp_sim_device_t),
    .point_settings = point_settings,
    .point_size = sizeof(dp_sim_point_t),
    .open = sim_open,
    .add_point = sim_add_point,
    .start = sim_start,
    .stop = sim_stop,
    .close = sim_close,
    .stats = sim_stats,
};
