#include "plant.h"

#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../drivers/driver.h"
#include "alarms.h"
#include "command.h"
#include "embed.h"
#include "http.h"
#include "ingest.h"
#include "lmsgpack.h"
#include "log.h"
#include "persist.h"
#include "reload.h"
#include "sandbox.h"
#include "settings.h"

typedef struct {
    dp_event_cb cb;
    void *ud;
} listener_t;

typedef struct {
    dp_device_t dev;
    void **points; /* parsed point settings, freed after close() */
    int npoints;
    bool open, started;
} device_t;

struct dp_plant {
    char *name;
    char *path;
    char *dir;
    char *data_dir;
    const char *source; /* opts->source, used while reading the plant file only */
    size_t source_len;
    uv_loop_t *loop;
    dp_clock_t *clock;
    dp_store_t *store;
    dp_ingest_t *ingest;
    dp_host_t host;
    dp_twin_host_t twin_host;
    device_t **devices;
    int ndevices;
    dp_twin_t **twins;
    int ntwins;
    listener_t *listeners;
    int nlisteners;
    dp_alarms_t *alarms;
    dp_timer_t alarm_tick; /* 1 s: expires shelving */
    uv_prepare_t prepare;
    uv_check_t check;
    dp_reload_t *reload;
    dp_guard_t *guard;
    bool handles_open;
    bool stopped;
    bool watch;
    dp_persist_cfg_t persist_cfg;
    dp_persist_t *persist;
    dp_http_cfg_t *http; /* plant { http = { ... } }, NULL when absent */
};

/* Plant-wide settings: plant { ... } in the plant file. */
typedef struct {
    char *name;
    char *description;
    int64_t budget;
    int64_t memory_mb;
    int64_t max_faults;
    dp_time_t fault_window;
    dp_http_cfg_t *http;
    bool writes;
    bool shadow;
} plant_cfg_t;

static const dp_setting_t plant_settings[] = {
    {.name = "name",
     .type = DP_SET_STRING,
     .offset = offsetof(plant_cfg_t, name),
     .doc = "Plant name (default: the plant file's folder name)."},
    {.name = "description",
     .type = DP_SET_STRING,
     .offset = offsetof(plant_cfg_t, description),
     .doc = "Free text."},
    {.name = "budget",
     .type = DP_SET_INT,
     .offset = offsetof(plant_cfg_t, budget),
     .def = "10000000",
     .min = 1000,
     .max = 1e12,
     .doc = "Default instruction budget per handler call."},
    {.name = "memory_mb",
     .type = DP_SET_INT,
     .offset = offsetof(plant_cfg_t, memory_mb),
     .def = "64",
     .min = 1,
     .max = 65536,
     .doc = "Default memory cap per twin, in MiB."},
    {.name = "max_faults",
     .type = DP_SET_INT,
     .offset = offsetof(plant_cfg_t, max_faults),
     .def = "3",
     .min = 1,
     .max = 16,
     .doc = "Faults (runaway loop, memory cap) within fault_window that suspend a twin."},
    {.name = "fault_window",
     .type = DP_SET_DURATION,
     .offset = offsetof(plant_cfg_t, fault_window),
     .def = "10min",
     .doc = "Window for counting faults."},
    {.name = "http",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(plant_cfg_t, http),
     .parse = dp_http_cfg_parse,
     .free = dp_http_cfg_field_free,
     .doc = "HTTP API and dashboard: { listen =, tls = { cert =, key = }, tokens = } "
            "(docs/http.md)."},
    {.name = "writes",
     .type = DP_SET_BOOL,
     .offset = offsetof(plant_cfg_t, writes),
     .def = "true",
     .doc = "Plant-wide switch: false refuses every command (nothing is written to devices)."},
    {.name = "shadow",
     .type = DP_SET_BOOL,
     .offset = offsetof(plant_cfg_t, shadow),
     .def = "false",
     .doc = "Shadow mode: commands pass the guard and are logged with what would be written, "
            "but nothing is written."},
    DP_SETTINGS_END,
};

/* Twin declarations: twin "P101" { ... }. */
typedef struct {
    char *class_name;
    char *script;
    char *description;
    int64_t budget;
    int64_t memory_mb;
    char **commands; /* NULL-terminated tag patterns */
} twin_cfg_t;

static const dp_setting_t twin_settings[] = {
    {.name = "class",
     .type = DP_SET_STRING,
     .offset = offsetof(twin_cfg_t, class_name),
     .doc = "A twin class: twins/<class>.lua next to the plant, else the bundled one."},
    {.name = "script",
     .type = DP_SET_STRING,
     .offset = offsetof(twin_cfg_t, script),
     .doc = "A per-machine script, relative to the plant file."},
    {.name = "description",
     .type = DP_SET_STRING,
     .offset = offsetof(twin_cfg_t, description),
     .doc = "Free text."},
    {.name = "budget",
     .type = DP_SET_INT,
     .offset = offsetof(twin_cfg_t, budget),
     .min = 1000,
     .max = 1e12,
     .doc = "Instruction budget per handler call (default: the plant's)."},
    {.name = "memory_mb",
     .type = DP_SET_INT,
     .offset = offsetof(twin_cfg_t, memory_mb),
     .min = 1,
     .max = 65536,
     .doc = "Memory cap in MiB (default: the plant's)."},
    {.name = "commands",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(twin_cfg_t, commands),
     .parse = dp_settings_patterns_parse,
     .free = dp_settings_patterns_free,
     .doc = "Other twins' tags this twin may command (twin.write): \"twin.tag\", \"twin.*\" or "
            "\"*\", one or a list. Its own tags it always may; others are rejected by the "
            "guard."},
    DP_SETTINGS_END,
};
static const char *const twin_fields_elsewhere[] = {"params", "tags", NULL};

/* Tag declarations inside a twin: fields every tag has; the rest belong to
 * the device's driver. */
typedef struct {
    char *device;
    char *unit;
    char *description;
    int64_t history;
    double deadband;
    bool writable;
    double min;
    double max;
    double max_rate;
} tag_cfg_t;

static const dp_setting_t tag_settings[] = {
    {.name = "device",
     .type = DP_SET_STRING,
     .offset = offsetof(tag_cfg_t, device),
     .doc = "The device the tag is read from (none: set by tests, the REPL or other twins)."},
    {.name = "unit",
     .type = DP_SET_STRING,
     .offset = offsetof(tag_cfg_t, unit),
     .doc = "Engineering unit."},
    {.name = "description",
     .type = DP_SET_STRING,
     .offset = offsetof(tag_cfg_t, description),
     .doc = "Free text."},
    {.name = "history",
     .type = DP_SET_INT,
     .offset = offsetof(tag_cfg_t, history),
     .min = 0,
     .max = 10000000,
     .doc = "Length of the history ring (samples)."},
    {.name = "deadband",
     .type = DP_SET_NUMBER,
     .offset = offsetof(tag_cfg_t, deadband),
     .min = 0,
     .max = 1e300,
     .doc = "Default deadband for on_change handlers on this tag."},
    {.name = "writable",
     .type = DP_SET_BOOL,
     .offset = offsetof(tag_cfg_t, writable),
     .doc = "May be the target of a command (twin.write, REPL, HTTP, MQTT, Modbus server)."},
    {.name = "min",
     .type = DP_SET_NUMBER,
     .offset = offsetof(tag_cfg_t, min),
     .doc = "Writable tags: the guard refuses commands below this value."},
    {.name = "max",
     .type = DP_SET_NUMBER,
     .offset = offsetof(tag_cfg_t, max),
     .doc = "Writable tags: the guard refuses commands above this value."},
    {.name = "max_rate",
     .type = DP_SET_NUMBER,
     .offset = offsetof(tag_cfg_t, max_rate),
     .min = 0,
     .max = 1e300,
     .doc = "Writable tags: largest change per second between accepted commands (the first "
            "command: from the current value, over one second)."},
    DP_SETTINGS_END,
};

/* ---- events ----------------------------------------------------------- */

static void emit(dp_twin_host_t *host, const dp_event_t *ev)
{
    dp_plant_t *p = (dp_plant_t *)((char *)host - offsetof(dp_plant_t, twin_host));
    /* Reloads, faults and guard switches are logged where they happen;
     * other events here. */
    if (strcmp(ev->kind, "reload") != 0 && strcmp(ev->kind, "fault") != 0 &&
        strcmp(ev->kind, "suspended") != 0 && strcmp(ev->kind, "guard") != 0)
        dp_log_info(ev->twin, "%s: %s", ev->kind, ev->text);
    for (int i = 0; i < p->nlisteners; i++)
        p->listeners[i].cb(ev, p->listeners[i].ud);
}

/* A twin commands its own tags and those its `commands` list names. */
static const char *authorize(const char *origin, const char *tag, void *ud, char *buf, size_t size)
{
    dp_plant_t *p = ud;
    if (strncmp(origin, "twin:", 5) != 0)
        return NULL; /* other origins are checked where they come in */
    dp_twin_t *tw = dp_plant_twin(p, origin + 5);
    if (tw == NULL || dp_twin_may_command(tw, tag))
        return NULL;
    snprintf(buf, size,
             "twin %s may command its own tags and those its commands list names; %s is "
             "neither (twin \"%s\" { commands = { \"%s\" } } allows it)",
             origin + 5, tag, origin + 5, tag);
    return buf;
}

/* Alarm transitions and guard switches go out like every twin event. */
static void plant_emit(const dp_event_t *ev, void *ud)
{
    dp_plant_t *p = ud;
    emit(&p->twin_host, ev);
}

static void on_alarm_tick(dp_timer_t *t)
{
    dp_plant_t *p = t->data;
    dp_alarms_tick(p->alarms);
}

void dp_plant_event(dp_plant_t *p, const dp_event_t *ev)
{
    emit(&p->twin_host, ev);
}

void dp_plant_on_event(dp_plant_t *p, dp_event_cb cb, void *ud)
{
    p->listeners = dp_xrealloc(p->listeners, sizeof *p->listeners * (size_t)(p->nlisteners + 1));
    p->listeners[p->nlisteners++] = (listener_t){cb, ud};
}

/* twin.device_stats(name), through the driver's stats entry. */
static int device_stats(dp_twin_host_t *host, const char *name, lua_State *L)
{
    dp_plant_t *p = (dp_plant_t *)((char *)host - offsetof(dp_plant_t, twin_host));
    for (int i = 0; i < p->ndevices; i++) {
        dp_device_t *dev = &p->devices[i]->dev;
        if (strcmp(dev->name, name) != 0)
            continue;
        dp_stat_t st[64];
        size_t n = dev->driver->stats != NULL ? dev->driver->stats(dev, st, 64) : 0;
        lua_createtable(L, 0, (int)n + 1);
        lua_pushstring(L, dev->driver->name);
        lua_setfield(L, -2, "driver");
        for (size_t k = 0; k < n; k++) {
            if (st[k].text != NULL)
                lua_pushstring(L, st[k].text);
            else
                lua_pushnumber(L, st[k].value);
            lua_setfield(L, -2, st[k].name);
        }
        return 1;
    }
    return 0;
}

/* ---- the plant file --------------------------------------------------- */

/* The plant file runs in a sandbox whose globals declare things:
 *   plant { ... }   device "name" { ... }   twin "name" { ... }
 * Declarations are collected in order into the registry list "decls". */
#define DECLS_KEY "doppel.decls"

static int decl_body(lua_State *L)
{
    /* upvalues: kind, name */
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *kind = lua_tostring(L, lua_upvalueindex(1));
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    lua_getfield(L, LUA_REGISTRYINDEX, DECLS_KEY);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "kind");
        lua_getfield(L, -2, "name");
        bool dup = strcmp(lua_tostring(L, -2), kind) == 0 && strcmp(lua_tostring(L, -1), name) == 0;
        lua_pop(L, 3);
        if (dup)
            return luaL_error(L, "%s \"%s\" is declared twice", kind, name);
    }
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setfield(L, -2, "kind");
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setfield(L, -2, "name");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "spec");
    lua_rawseti(L, -2, n + 1);
    /* Mark the pending declaration as complete. */
    lua_getfield(L, LUA_REGISTRYINDEX, "doppel.pending");
    lua_pushfstring(L, "%s \"%s\"", kind, name);
    lua_pushnil(L);
    lua_settable(L, -3);
    return 0;
}

static int decl_named(lua_State *L)
{
    const char *kind = lua_tostring(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    if (name[0] == '\0' || strpbrk(name, ". \t\n") != NULL)
        return luaL_error(L, "bad %s name \"%s\" (no dots or spaces)", kind, name);
    lua_getfield(L, LUA_REGISTRYINDEX, "doppel.pending");
    lua_pushfstring(L, "%s \"%s\"", kind, name);
    lua_pushboolean(L, 1);
    lua_settable(L, -3);
    lua_pop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, decl_body, 2);
    return 1;
}

static int decl_plant(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, LUA_REGISTRYINDEX, "doppel.plant");
    if (!lua_isnil(L, -1))
        return luaL_error(L, "plant { ... } is declared twice");
    lua_pushvalue(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "doppel.plant");
    return 0;
}

static int plant_duration(lua_State *L)
{
    dp_time_t d;
    char *err = NULL;
    if (dp_duration_parse(luaL_checkstring(L, 1), &d, &err) < 0) {
        lua_pushstring(L, err);
        free(err);
        return lua_error(L);
    }
    lua_pushnumber(L, (double)d / 1e6);
    return 1;
}

static int open_plant_env(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, DECLS_KEY);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "doppel.pending");
    lua_pushcfunction(L, decl_plant);
    lua_setglobal(L, "plant");
    lua_pushliteral(L, "device");
    lua_pushcclosure(L, decl_named, 1);
    lua_setglobal(L, "device");
    lua_pushliteral(L, "twin");
    lua_pushcclosure(L, decl_named, 1);
    lua_setglobal(L, "twin");
    lua_pushcfunction(L, plant_duration);
    lua_setglobal(L, "duration");
    return 0;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return dp_xstrdup(strncmp(path, "embed:", 6) == 0 ? "embed:" : ".");
    return strndup(path, (size_t)(slash - path));
}

static bool file_exists(const char *path)
{
    if (strncmp(path, "embed:", 6) == 0)
        return dp_embed_find(path + 6) != NULL;
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *bundled_classes(void)
{
    size_t n = 1;
    for (const dp_embed_file_t *f = dp_embed_files; f->path != NULL; f++)
        n += strlen(f->path) + 2;
    char *s = dp_xmalloc(n);
    s[0] = '\0';
    for (const dp_embed_file_t *f = dp_embed_files; f->path != NULL; f++) {
        if (strncmp(f->path, "twins/", 6) != 0)
            continue;
        size_t used = strlen(s);
        /* The name without "twins/" and ".lua". */
        snprintf(s + used, n - used, "%s%.*s", used ? ", " : "", (int)(strlen(f->path) - 10),
                 f->path + 6);
    }
    return s;
}

/* Resolves a twin's script: `script` relative to the plant, or `class` as
 * twins/<class>.lua next to the plant (an override) or bundled. */
static char *twin_script(dp_plant_t *p, const char *twin, const twin_cfg_t *c, char **err)
{
    char path[PATH_MAX];
    if ((c->class_name == NULL) == (c->script == NULL)) {
        dp_fail(err, DP_EINVAL, "twin %s: give exactly one of class = \"...\" or script = \"...\"",
                twin);
        return NULL;
    }
    if (c->script != NULL) {
        if (c->script[0] == '/')
            snprintf(path, sizeof path, "%s", c->script);
        else
            snprintf(path, sizeof path, "%s/%s", p->dir, c->script);
        if (!file_exists(path)) {
            dp_fail(err, DP_ENOENT, "twin %s: script: no file %s", twin, path);
            return NULL;
        }
        return dp_xstrdup(path);
    }
    if (strpbrk(c->class_name, "/.") != NULL) {
        dp_fail(err, DP_EINVAL, "twin %s: class: \"%s\" is a class name, not a path", twin,
                c->class_name);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/twins/%s.lua", p->dir, c->class_name);
    if (file_exists(path))
        return dp_xstrdup(path);
    snprintf(path, sizeof path, "embed:twins/%s.lua", c->class_name);
    if (file_exists(path))
        return dp_xstrdup(path);
    char *list = bundled_classes();
    dp_fail(err, DP_ENOENT, "twin %s: class: no class \"%s\" (bundled: %s)", twin, c->class_name,
            list);
    free(list);
    return NULL;
}

static device_t *find_device(dp_plant_t *p, const char *name)
{
    for (int i = 0; i < p->ndevices; i++) {
        if (strcmp(p->devices[i]->dev.name, name) == 0)
            return p->devices[i];
    }
    return NULL;
}

static int add_device(dp_plant_t *p, lua_State *L, const char *name, int spec, char **err)
{
    lua_getfield(L, spec, "driver");
    const char *driver_name = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (driver_name == NULL)
        return dp_fail(err, DP_EINVAL, "device %s: missing field \"driver\"", name);
    const dp_driver_t *drv = dp_driver_find(driver_name);
    if (drv == NULL) {
        char list[256] = "";
        for (const dp_driver_t *const *d = dp_drivers(); *d != NULL; d++) {
            if (list[0])
                strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, (*d)->name, sizeof list - strlen(list) - 1);
        }
        return dp_fail(err, DP_EINVAL, "device %s: driver: unknown driver \"%s\" (known: %s)", name,
                       driver_name, list);
    }
    device_t *d = dp_xcalloc(1, sizeof *d);
    d->dev.name = dp_xstrdup(name);
    d->dev.driver = drv;
    d->dev.host = &p->host;
    d->dev.cfg = dp_xcalloc(1, drv->device_size ? drv->device_size : 1);
    p->devices = dp_xrealloc(p->devices, sizeof *p->devices * (size_t)(p->ndevices + 1));
    p->devices[p->ndevices++] = d;
    static const char *const ignore[] = {"driver", NULL};
    char ctx[128];
    snprintf(ctx, sizeof ctx, "device %s", name);
    int rc = dp_settings_parse(L, spec, drv->device_settings, d->dev.cfg, ignore, ctx, err);
    if (rc < 0)
        return rc;
    char *inner = NULL;
    rc = drv->open(&d->dev, &inner);
    if (rc < 0) {
        rc = dp_fail(err, rc, "device %s: %s", name, inner ? inner : dp_strerror(rc));
        free(inner);
        return rc;
    }
    d->open = true;
    return 0;
}

static int device_write(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    dp_device_t *dev = ctx;
    return dev->driver->write(dev, id, tag, v, err);
}

static int add_tag(dp_plant_t *p, lua_State *L, const char *twin, const char *tag, int spec,
                   char **err)
{
    char ctx[256];
    snprintf(ctx, sizeof ctx, "twin %s, tag %s", twin, tag);
    if (strpbrk(tag, ". \t") != NULL || tag[0] == '\0')
        return dp_fail(err, DP_EINVAL, "%s: bad tag name (no dots or spaces)", ctx);
    if (!lua_istable(L, spec))
        return dp_fail(err, DP_EINVAL, "%s: expected a table, got %s", ctx, luaL_typename(L, spec));
    tag_cfg_t c = {.min = NAN, .max = NAN, .max_rate = NAN};
    device_t *dev = NULL;
    lua_getfield(L, spec, "device");
    if (lua_isstring(L, -1)) {
        dev = find_device(p, lua_tostring(L, -1));
        if (dev == NULL) {
            lua_pop(L, 1);
            lua_getfield(L, spec, "device");
            int rc =
                dp_fail(err, DP_EINVAL, "%s: device: no device \"%s\"", ctx, lua_tostring(L, -1));
            lua_pop(L, 1);
            return rc;
        }
    }
    lua_pop(L, 1);
    /* Common fields first, ignoring the driver's; then the driver's, ignoring
     * the common ones. A field that neither knows is refused. */
    static const char *const common[] = {"device",   "unit", "description", "history",  "deadband",
                                         "writable", "min",  "max",         "max_rate", NULL};
    const char *ign[64] = {NULL};
    int nign = 0;
    if (dev != NULL) {
        for (const dp_setting_t *s = dev->dev.driver->point_settings; s && s->name && nign < 63;
             s++)
            ign[nign++] = s->name;
        ign[nign] = NULL;
    }
    int rc = dp_settings_parse(L, spec, tag_settings, &c, ign, ctx, err);
    if (rc == 0 && !c.writable && (!isnan(c.min) || !isnan(c.max) || !isnan(c.max_rate)))
        rc = dp_fail(err, DP_EINVAL, "%s: min, max and max_rate apply to writable tags only", ctx);
    if (rc == 0 && !isnan(c.min) && !isnan(c.max) && c.min > c.max)
        rc = dp_fail(err, DP_EINVAL, "%s: min %g is above max %g", ctx, c.min, c.max);
    if (rc < 0) {
        dp_settings_free(tag_settings, &c);
        return rc;
    }
    char full[256];
    snprintf(full, sizeof full, "%s.%s", twin, tag);
    char source[256];
    snprintf(source, sizeof source, "%s:%s", dev ? dev->dev.name : "",
             dev ? dev->dev.driver->name : "");
    dp_tag_opts_t opts = {
        .unit = c.unit,
        .history = (uint32_t)c.history,
        .flags = c.writable ? DP_TAG_WRITABLE : 0,
        .source = dev != NULL ? source : NULL,
        .deadband = c.deadband,
    };
    int id = dp_store_add(p->store, full, &opts);
    dp_settings_free(tag_settings, &c);
    if (id < 0)
        return dp_fail(err, id, "%s: cannot add tag: %s", ctx, dp_strerror(id));
    if (c.writable) {
        dp_guard_limits_t lim = {c.min, c.max, c.max_rate};
        dp_guard_set_limits(p->guard, id, &lim);
        if (dev != NULL && dev->dev.driver->write == NULL)
            return dp_fail(err, DP_EINVAL, "%s: writable: driver %s cannot write", ctx,
                           dev->dev.driver->name);
        if (dev != NULL)
            dp_guard_set_writer(p->guard, id, device_write, &dev->dev);
    }
    if (dev == NULL)
        return 0;
    const dp_driver_t *drv = dev->dev.driver;
    void *point = dp_xcalloc(1, drv->point_size ? drv->point_size : 1);
    dev->points = dp_xrealloc(dev->points, sizeof *dev->points * (size_t)(dev->npoints + 1));
    dev->points[dev->npoints++] = point;
    rc = dp_settings_parse(L, spec, drv->point_settings, point, common, ctx, err);
    if (rc < 0)
        return rc;
    char *inner = NULL;
    rc = drv->add_point(&dev->dev, id, point, &inner);
    if (rc < 0) {
        rc = dp_fail(err, rc, "%s: %s", ctx, inner ? inner : dp_strerror(rc));
        free(inner);
    }
    return rc;
}

static int add_twin(dp_plant_t *p, lua_State *L, const char *name, int spec, const plant_cfg_t *pc,
                    char **err)
{
    char ctx[128];
    snprintf(ctx, sizeof ctx, "twin %s", name);
    twin_cfg_t c = {0};
    int rc = dp_settings_parse(L, spec, twin_settings, &c, twin_fields_elsewhere, ctx, err);
    char *script = NULL, *params = NULL;
    size_t params_len = 0;
    if (rc < 0)
        goto out;
    script = twin_script(p, name, &c, err);
    if (script == NULL) {
        rc = DP_EINVAL;
        goto out;
    }
    lua_getfield(L, spec, "params");
    if (!lua_isnil(L, -1)) {
        char root[160], *inner = NULL;
        snprintf(root, sizeof root, "twin %s: params", name);
        if (!lua_istable(L, -1)) {
            rc = dp_fail(err, DP_EINVAL, "%s: expected a table", root);
        } else if ((rc = dp_lmp_encode(L, -1, root, &params, &params_len, &inner)) < 0) {
            dp_fail(err, rc, "%s", inner);
            free(inner);
        }
    }
    lua_pop(L, 1);
    if (rc < 0)
        goto out;
    lua_getfield(L, spec, "tags");
    int tags = lua_gettop(L);
    if (!lua_isnil(L, tags) && !lua_istable(L, tags)) {
        rc = dp_fail(err, DP_EINVAL, "%s: tags: expected a table of tag declarations", ctx);
    } else if (lua_istable(L, tags)) {
        /* Sorted by name, so handles and output do not depend on hash order. */
        lua_newtable(L);
        int names = lua_gettop(L);
        lua_Integer n = 0;
        lua_pushnil(L);
        while (lua_next(L, tags) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                rc = dp_fail(err, DP_EINVAL, "%s: tags: tag names must be strings", ctx);
                break;
            }
            lua_pushvalue(L, -1);
            lua_rawseti(L, names, ++n);
        }
        if (rc == 0) {
            lua_getglobal(L, "table");
            lua_getfield(L, -1, "sort");
            lua_pushvalue(L, names);
            lua_call(L, 1, 0);
            lua_pop(L, 1);
            for (lua_Integer i = 1; i <= n && rc == 0; i++) {
                lua_rawgeti(L, names, i);
                const char *tag = lua_tostring(L, -1);
                lua_gettable(L, tags);
                lua_rawgeti(L, names, i);
                rc = add_tag(p, L, name, lua_tostring(L, -1), lua_gettop(L) - 1, err);
                lua_pop(L, 2);
                (void)tag;
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (rc < 0)
        goto out;
    dp_twin_opts_t to = {
        .name = name,
        .script = script,
        .module_dir = p->dir,
        .params = params,
        .params_len = params_len,
        .budget = (uint64_t)(c.budget ? c.budget : pc->budget),
        .memory = (size_t)(c.memory_mb ? c.memory_mb : pc->memory_mb) << 20,
        .max_faults = (int)pc->max_faults,
        .fault_window = pc->fault_window,
        .commands = (const char *const *)c.commands,
    };
    dp_twin_t *tw = dp_twin_new(&p->twin_host, &to);
    p->twins = dp_xrealloc(p->twins, sizeof *p->twins * (size_t)(p->ntwins + 1));
    p->twins[p->ntwins++] = tw;
out:
    dp_settings_free(twin_settings, &c);
    free(script);
    free(params);
    return rc;
}

/* Every twin's `commands` names something that exists: a writable tag
 * ("twin.tag") or a twin ("twin.*"), so that a typo is found at load
 * instead of as a rejected command in the field. */
static int check_commands(dp_plant_t *p, char **err)
{
    for (int i = 0; i < p->ntwins; i++) {
        const char *name = dp_twin_name(p->twins[i]);
        for (const char *const *c = dp_twin_commands(p->twins[i]); *c != NULL; c++) {
            size_t n = strlen(*c);
            if (strcmp(*c, "*") == 0)
                continue;
            if (n >= 2 && strcmp(*c + n - 2, ".*") == 0) {
                char *twin = dp_xasprintf("%.*s", (int)(n - 2), *c);
                int rc = dp_plant_twin(p, twin) != NULL
                             ? 0
                             : dp_fail(err, DP_EINVAL, "twin %s: commands: \"%s\": no twin %s",
                                       name, *c, twin);
                free(twin);
                if (rc < 0)
                    return rc;
                continue;
            }
            int id = dp_store_find(p->store, *c);
            if (id < 0 || !dp_guard_writable(p->guard, id))
                return dp_fail(err, DP_EINVAL, "twin %s: commands: \"%s\": %s", name, *c,
                               id < 0 ? "no such tag" : "not a writable tag");
        }
    }
    return 0;
}

/* Runs the plant file and builds devices, tags and twins from it. */
static int read_plant_file(dp_plant_t *p, char **err)
{
    dp_sandbox_opts_t so = {.name = "plant", .module_dir = p->dir, .clock = p->clock};
    dp_sandbox_t *sb = dp_sandbox_new(&so);
    lua_State *L = dp_sandbox_state(sb);
    char *msg = NULL, *trace = NULL;
    plant_cfg_t pc = {0};
    int rc = 0;
    lua_pushcfunction(L, open_plant_env);
    dp_sandbox_call(sb, 0, 0, NULL, NULL);

    size_t len = p->source_len;
    char *code = p->source != NULL ? dp_xmalloc(len + 1) : dp_source_read(p->path, &len, err);
    if (p->source != NULL) {
        memcpy(code, p->source, len);
        code[len] = '\0';
    }
    if (code == NULL) {
        rc = DP_ENOENT;
        goto out;
    }
    char chunk[PATH_MAX + 1];
    snprintf(chunk, sizeof chunk, "@%s",
             strncmp(p->path, "embed:", 6) == 0 ? p->path + 6 : p->path);
    rc = dp_sandbox_load(sb, code, len, chunk, &msg);
    free(code);
    if (rc < 0 || dp_sandbox_call(sb, 0, 0, &msg, &trace) != DP_SB_OK) {
        rc = dp_fail(err, DP_ESCRIPT, "%s", msg);
        goto out;
    }
    /* A declaration started but never given its table: device "x" alone. */
    lua_getfield(L, LUA_REGISTRYINDEX, "doppel.pending");
    lua_pushnil(L);
    if (lua_next(L, -2) != 0) {
        rc = dp_fail(err, DP_EINVAL, "%s: %s has no settings table (write %s { ... })", chunk + 1,
                     lua_tostring(L, -2), lua_tostring(L, -2));
        goto out;
    }
    lua_pop(L, 1);

    lua_getfield(L, LUA_REGISTRYINDEX, "doppel.plant");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    static const char *const plant_fields_elsewhere[] = {"journal", "snapshot", NULL};
    rc = dp_settings_parse(L, -1, plant_settings, &pc, plant_fields_elsewhere, "plant", err);
    if (rc == 0)
        rc = dp_persist_parse(L, -1, &p->persist_cfg, err);
    lua_pop(L, 1);
    if (rc < 0)
        goto out;
    if (pc.name != NULL) {
        free(p->name);
        p->name = dp_xstrdup(pc.name);
    }
    if (pc.http != NULL) {
        p->http = pc.http;
        pc.http = NULL;
        dp_http_cfg_set_dir(p->http, p->dir);
        if (p->http->tokens_file != NULL) {
            char *tf = p->http->tokens_file[0] == '/' || strncmp(p->dir, "embed:", 6) == 0
                           ? dp_xstrdup(p->http->tokens_file)
                           : dp_xasprintf("%s/%s", p->dir, p->http->tokens_file);
            rc = dp_http_tokens_load(p->http, tf, err);
            free(tf);
            if (rc < 0)
                goto out;
        }
        if ((rc = dp_http_cfg_check(p->http, err)) < 0)
            goto out;
    }
    if (!pc.writes)
        dp_guard_enable_writes(p->guard, false, "the plant file");
    if (pc.shadow)
        dp_guard_set_shadow(p->guard, true, "the plant file");

    lua_getfield(L, LUA_REGISTRYINDEX, DECLS_KEY);
    int decls = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, decls);
    /* Devices first, so twins may be declared before the devices they use. */
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (lua_Integer i = 1; i <= n && rc == 0; i++) {
            lua_rawgeti(L, decls, i);
            lua_getfield(L, -1, "kind");
            lua_getfield(L, -2, "name");
            lua_getfield(L, -3, "spec");
            const char *kind = lua_tostring(L, -3);
            const char *name = lua_tostring(L, -2);
            int spec = lua_gettop(L);
            if (pass == 0 && strcmp(kind, "device") == 0)
                rc = add_device(p, L, name, spec, err);
            else if (pass == 1 && strcmp(kind, "twin") == 0)
                rc = add_twin(p, L, name, spec, &pc, err);
            lua_pop(L, 4);
        }
    }
    lua_pop(L, 1);
    if (rc == 0)
        rc = check_commands(p, err);
out:
    dp_settings_free(plant_settings, &pc);
    free(msg);
    free(trace);
    dp_sandbox_free(sb);
    return rc;
}

/* ---- loop integration -------------------------------------------------- */

size_t dp_plant_flush(dp_plant_t *p)
{
    return dp_store_flush(p->store, 8);
}

static void on_prepare(uv_prepare_t *h)
{
    dp_plant_flush(h->data);
}

static void on_check(uv_check_t *h)
{
    dp_plant_flush(h->data);
}

static void after_step(dp_clock_t *clock, void *ud)
{
    (void)clock;
    dp_plant_flush(ud);
}

static void watch_files(dp_plant_t *p)
{
    if (p->reload == NULL)
        return;
    dp_reload_watch(p->reload, p->path);
    for (int i = 0; i < p->ntwins; i++) {
        dp_reload_watch(p->reload, dp_twin_script(p->twins[i]));
        for (const char *const *f = dp_twin_required_files(p->twins[i]); *f != NULL; f++)
            dp_reload_watch(p->reload, *f);
    }
}

static void on_file_changed(const char *path, void *ud)
{
    dp_plant_file_changed(ud, path);
}

int dp_plant_file_changed(dp_plant_t *p, const char *path)
{
    char a[PATH_MAX], b[PATH_MAX];
    const char *changed = dp_reload_canonical(path, a, sizeof a);
    if (strcmp(dp_reload_canonical(p->path, b, sizeof b), changed) == 0) {
        dp_log_warn(NULL,
                    "plant file %s changed: restart doppel to apply new devices, tags "
                    "or twins (twin scripts reload by themselves)",
                    p->path);
        return 0;
    }
    int rc = 0, n = 0;
    for (int i = 0; i < p->ntwins; i++) {
        dp_twin_t *tw = p->twins[i];
        bool hit = strcmp(dp_reload_canonical(dp_twin_script(tw), b, sizeof b), changed) == 0;
        for (const char *const *f = dp_twin_required_files(tw); *f != NULL && !hit; f++)
            hit = strcmp(dp_reload_canonical(*f, b, sizeof b), changed) == 0;
        if (!hit)
            continue;
        n++;
        if (dp_twin_load(tw, NULL, 0, NULL) < 0)
            rc = DP_ESCRIPT;
    }
    if (n > 0)
        watch_files(p);
    return rc;
}

int dp_plant_reload(dp_plant_t *p, const char *twin, char **err)
{
    int rc = 0;
    bool found = false;
    for (int i = 0; i < p->ntwins; i++) {
        if (twin != NULL && strcmp(dp_twin_name(p->twins[i]), twin) != 0)
            continue;
        found = true;
        char *e = NULL;
        if (dp_twin_load(p->twins[i], NULL, 0, &e) < 0) {
            if (rc == 0 && err != NULL) {
                free(*err);
                *err = e;
                e = NULL;
            }
            rc = DP_ESCRIPT;
        }
        free(e);
    }
    if (!found)
        return dp_fail(err, DP_ENOENT, "no twin \"%s\"", twin ? twin : "");
    watch_files(p);
    return rc;
}

/* ---- lifecycle --------------------------------------------------------- */

dp_plant_t *dp_plant_open(const dp_plant_opts_t *opts, char **err)
{
    dp_plant_t *p = dp_xcalloc(1, sizeof *p);
    p->path = dp_xstrdup(opts->path);
    p->dir = dir_of(opts->path);
    const char *base = strrchr(p->dir, '/');
    base = base != NULL ? base + 1 : p->dir;
    if (strncmp(base, "embed:", 6) == 0)
        base += 6;
    p->name = dp_xstrdup(base[0] && strcmp(base, ".") != 0 ? base : "plant");
    p->data_dir = dp_xstrdup(opts->data_dir != NULL ? opts->data_dir : "data");
    p->loop = opts->loop;
    p->source = opts->source;
    p->source_len = opts->source_len;
    p->watch = opts->watch && opts->loop != NULL && !opts->check_only;
    p->clock =
        opts->loop != NULL ? dp_clock_new_real(opts->loop) : dp_clock_new_virtual(opts->start);
    p->store = dp_store_new();
    p->ingest = opts->loop != NULL ? dp_ingest_new(opts->loop, p->store, 0) : NULL;
    p->guard = dp_guard_new(p->store, p->clock, opts->loop);
    dp_guard_on_switch(p->guard, plant_emit, p);
    dp_guard_set_authorize(p->guard, authorize, p);
    p->host = (dp_host_t){.loop = opts->loop,
                          .clock = p->clock,
                          .store = p->store,
                          .ingest = p->ingest,
                          .guard = p->guard,
                          .plant = p};
    p->twin_host = (dp_twin_host_t){.store = p->store,
                                    .clock = p->clock,
                                    .guard = p->guard,
                                    .emit = emit,
                                    .check_only = opts->check_only,
                                    .device_stats = device_stats};
    if (opts->on_event != NULL)
        dp_plant_on_event(p, opts->on_event, opts->event_ud);
    if (opts->on_command != NULL)
        dp_guard_on_command(p->guard, opts->on_command, opts->command_ud);
    p->alarms = dp_alarms_new(p->clock, plant_emit, p);
    p->twin_host.alarms = p->alarms;
    dp_timer_init(p->clock, &p->alarm_tick);
    p->alarm_tick.data = p;
    int read_rc = read_plant_file(p, err);
    p->source = NULL;
    if (read_rc < 0)
        goto fail;
    if (opts->dry_run)
        dp_guard_set_dry_run(p->guard, true);
    /* Durability: a real-time plant with a data dir journals, and starts
     * from what recovery makes of its snapshot and journal. */
    const struct dp_snapshot *seed = opts->seed;
    if (opts->loop != NULL && !opts->check_only && opts->data_dir != NULL &&
        p->persist_cfg.enabled) {
        dp_persist_opts_t pso = {.plant_path = p->path,
                                 .data_dir = p->data_dir,
                                 .loop = p->loop,
                                 .cfg = &p->persist_cfg};
        p->persist = dp_persist_open(&pso, err);
        if (p->persist == NULL)
            goto fail;
        seed = dp_persist_seed(p->persist);
    }
    if (seed != NULL) {
        int skipped = dp_snapshot_restore_store(seed, p->store);
        if (skipped > 0)
            dp_log_warn(NULL, "%d saved tags are no longer in the plant; skipped", skipped);
        dp_snapshot_restore_alarms(seed, p->alarms);
        /* The guard's switches as they were: the more restrictive of them
         * and the plant file's wins, so that writes switched off during an
         * incident stay off after a crash and an automatic restart. */
        if (seed->has_guard && !seed->writes)
            dp_guard_enable_writes(p->guard, false,
                                   "the switch as it was before the restart (enable them over "
                                   "HTTP or the REPL)");
        if (seed->has_guard && seed->shadow)
            dp_guard_set_shadow(p->guard, true,
                                "the switch as it was before the restart (switch it off over "
                                "HTTP or the REPL)");
    }
    for (int i = 0; i < p->ntwins; i++) {
        char *inner = NULL;
        const dp_snap_twin_t *st = dp_snapshot_twin(seed, dp_twin_name(p->twins[i]));
        if (dp_twin_load(p->twins[i], st ? st->state : NULL, st ? st->len : 0, &inner) < 0) {
            dp_fail(err, DP_ESCRIPT, "twin %s: %s", dp_twin_name(p->twins[i]), inner);
            free(inner);
            goto fail;
        }
    }
    for (int i = 0; i < p->ndevices; i++) {
        device_t *d = p->devices[i];
        char *inner = NULL;
        if (d->dev.driver->bind != NULL && d->dev.driver->bind(&d->dev, &inner) < 0) {
            dp_fail(err, DP_EINVAL, "device %s: %s", d->dev.name, inner ? inner : "bind failed");
            free(inner);
            goto fail;
        }
    }
    return p;
fail:
    dp_plant_stop(p);
    if (p->loop != NULL)
        uv_run(p->loop, UV_RUN_NOWAIT);
    dp_plant_free(p);
    return NULL;
}

int dp_plant_start(dp_plant_t *p, char **err)
{
    if (p->loop != NULL) {
        uv_prepare_init(p->loop, &p->prepare);
        uv_check_init(p->loop, &p->check);
        p->prepare.data = p->check.data = p;
        uv_prepare_start(&p->prepare, on_prepare);
        uv_check_start(&p->check, on_check);
        p->handles_open = true;
        if (p->watch) {
            p->reload = dp_reload_new(p->loop, 50, on_file_changed, p);
            watch_files(p);
        }
    }
    for (int i = 0; i < p->ndevices; i++) {
        device_t *d = p->devices[i];
        char *inner = NULL;
        int rc = d->dev.driver->start(&d->dev, &inner);
        if (rc < 0) {
            rc = dp_fail(err, rc, "device %s: %s", d->dev.name, inner ? inner : dp_strerror(rc));
            free(inner);
            return rc;
        }
        d->started = true;
    }
    if (p->persist != NULL)
        dp_persist_start(p->persist, p);
    dp_timer_start(&p->alarm_tick, on_alarm_tick, DP_US_PER_SEC, DP_US_PER_SEC);
    dp_log_info(NULL, "plant %s running: %d device%s, %d twin%s, %d tags, %s time", p->name,
                p->ndevices, p->ndevices == 1 ? "" : "s", p->ntwins, p->ntwins == 1 ? "" : "s",
                dp_store_count(p->store), dp_clock_is_virtual(p->clock) ? "virtual" : "real");
    return 0;
}

int64_t dp_plant_run_until(dp_plant_t *p, dp_time_t until)
{
    dp_plant_flush(p);
    return dp_clock_run(p->clock, until, after_step, p);
}

void dp_plant_stop(dp_plant_t *p)
{
    if (p == NULL || p->stopped)
        return;
    p->stopped = true;
    dp_persist_prestop(p->persist, p);
    dp_timer_stop(&p->alarm_tick);
    for (int i = 0; i < p->ntwins; i++)
        dp_twin_stop(p->twins[i]);
    for (int i = 0; i < p->ndevices; i++) {
        if (p->devices[i]->started)
            p->devices[i]->dev.driver->stop(&p->devices[i]->dev);
        p->devices[i]->started = false;
    }
    if (p->ingest != NULL) {
        dp_ingest_free(p->ingest);
        p->ingest = NULL;
        p->host.ingest = NULL;
        dp_plant_flush(p);
    }
    /* The devices have reported what they wrote: every command's outcome
     * reaches the journal before it closes. */
    dp_guard_settle(p->guard);
    dp_persist_stop(p->persist);
    if (p->handles_open) {
        uv_close((uv_handle_t *)&p->prepare, NULL);
        uv_close((uv_handle_t *)&p->check, NULL);
        p->handles_open = false;
    }
    dp_reload_free(p->reload);
    p->reload = NULL;
}

void dp_plant_free(dp_plant_t *p)
{
    if (p == NULL)
        return;
    dp_plant_stop(p);
    for (int i = 0; i < p->ntwins; i++)
        dp_twin_free(p->twins[i]);
    for (int i = 0; i < p->ndevices; i++) {
        device_t *d = p->devices[i];
        if (d->open)
            d->dev.driver->close(&d->dev);
        for (int j = 0; j < d->npoints; j++) {
            dp_settings_free(d->dev.driver->point_settings, d->points[j]);
            free(d->points[j]);
        }
        dp_settings_free(d->dev.driver->device_settings, d->dev.cfg);
        free(d->dev.cfg);
        free(d->points);
        free(d->dev.name);
        free(d);
    }
    /* The guard first: failing its pending commands calls its listeners,
     * the journal's among them. */
    dp_alarms_free(p->alarms);
    dp_guard_free(p->guard);
    dp_persist_free(p->persist);
    dp_store_free(p->store);
    dp_clock_free(p->clock);
    free(p->twins);
    free(p->devices);
    free(p->listeners);
    free(p->name);
    free(p->path);
    free(p->dir);
    dp_http_cfg_free(p->http);
    free(p->data_dir);
    free(p);
}

const char *dp_plant_name(const dp_plant_t *p)
{
    return p->name;
}

dp_store_t *dp_plant_store(dp_plant_t *p)
{
    return p->store;
}

dp_clock_t *dp_plant_clock(dp_plant_t *p)
{
    return p->clock;
}

int dp_plant_twin_count(const dp_plant_t *p)
{
    return p->ntwins;
}

dp_twin_t *dp_plant_twin_at(dp_plant_t *p, int i)
{
    return i >= 0 && i < p->ntwins ? p->twins[i] : NULL;
}

dp_twin_t *dp_plant_twin(dp_plant_t *p, const char *name)
{
    for (int i = 0; i < p->ntwins; i++) {
        if (strcmp(dp_twin_name(p->twins[i]), name) == 0)
            return p->twins[i];
    }
    return NULL;
}

int dp_plant_device_count(const dp_plant_t *p)
{
    return p->ndevices;
}

struct dp_device *dp_plant_device_at(dp_plant_t *p, int i)
{
    return i >= 0 && i < p->ndevices ? &p->devices[i]->dev : NULL;
}

struct dp_persist *dp_plant_persist(dp_plant_t *p)
{
    return p->persist;
}

struct dp_alarms *dp_plant_alarms(dp_plant_t *p)
{
    return p->alarms;
}

dp_guard_t *dp_plant_guard(dp_plant_t *p)
{
    return p->guard;
}

const char *dp_plant_data_dir(const dp_plant_t *p)
{
    return p->data_dir;
}

struct dp_ingest *dp_plant_ingest(dp_plant_t *p)
{
    return p->ingest;
}

const dp_http_cfg_t *dp_plant_http(const dp_plant_t *p)
{
    return p->http;
}
