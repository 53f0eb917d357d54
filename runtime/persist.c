/* Journal, snapshots and recovery of a running plant. See persist.h. */
#include "persist.h"

#include <inttypes.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alarms.h"
#include "command.h"
#include "lmsgpack.h"
#include "log.h"
#include "plant.h"
#include "settings.h"
#include "twin.h"

/* ---- settings ------------------------------------------------------------ */

static const char *const fsync_choices[] = {"always", "interval", "never", NULL};

/* A byte size: a number of bytes, or a string "64MiB", "1GiB", "500MB",
 * "10KiB". */
static int parse_size(lua_State *L, int idx, void *field, char **err)
{
    int64_t *out = field;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double d = lua_tonumber(L, idx);
        if (!(d >= 0 && d < 9e18))
            return dp_fail(err, DP_EINVAL, "expected a size >= 0, got %g", d);
        *out = (int64_t)d;
        return 0;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        return dp_fail(err, DP_EINVAL, "expected a size (\"64MiB\" or a number of bytes), got %s",
                       luaL_typename(L, idx));
    const char *s = lua_tostring(L, idx);
    char *end = NULL;
    double d = strtod(s, &end);
    static const struct {
        const char *unit;
        double mult;
    } units[] = {{"", 1},     {"B", 1},        {"KB", 1e3},        {"MB", 1e6},
                 {"GB", 1e9}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                 {"k", 1e3},  {"K", 1024.0}};
    if (end == s || !(d >= 0))
        return dp_fail(err, DP_EINVAL, "\"%s\" is not a size (say \"64MiB\")", s);
    while (*end == ' ')
        end++;
    for (size_t i = 0; i < DP_ARRAY_LEN(units); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            *out = (int64_t)(d * units[i].mult);
            return 0;
        }
    }
    return dp_fail(err, DP_EINVAL, "\"%s\": unknown unit \"%s\" (B, KB, MB, GB, KiB, MiB, GiB)", s,
                   end);
}

typedef struct {
    bool enabled;
    int fsync;
    dp_time_t commit;
    int64_t segment_size;
    dp_time_t retain;
    int64_t retain_size;
} journal_cfg_t;

static const dp_setting_t journal_settings[] = {
    {.name = "enabled",
     .type = DP_SET_BOOL,
     .offset = offsetof(journal_cfg_t, enabled),
     .def = "true",
     .doc = "Journal samples, events and commands (`doppel run` in real time only)."},
    {.name = "fsync",
     .type = DP_SET_ENUM,
     .offset = offsetof(journal_cfg_t, fsync),
     .def = "interval",
     .choices = fsync_choices,
     .doc = "`always`: fsync at the end of every loop turn; `interval`: write and fsync "
            "every `commit`; `never`: write every `commit`, leave flushing to the OS. See "
            "docs/journal.md for what \"accepted\" means with each."},
    {.name = "commit",
     .type = DP_SET_DURATION,
     .offset = offsetof(journal_cfg_t, commit),
     .def = "10ms",
     .doc = "Group commit interval for `interval` and `never`."},
    {.name = "segment_size",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(journal_cfg_t, segment_size),
     .parse = parse_size,
     .doc = "Start a new segment file after this many bytes (default 64MiB)."},
    {.name = "retain",
     .type = DP_SET_DURATION,
     .offset = offsetof(journal_cfg_t, retain),
     .doc = "Remove segments older than this (\"7d\"); default: keep."},
    {.name = "retain_size",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(journal_cfg_t, retain_size),
     .parse = parse_size,
     .doc = "Remove the oldest segments beyond this total size (\"10GiB\"); default: keep."},
    DP_SETTINGS_END,
};

typedef struct {
    dp_time_t every;
    int64_t keep;
} snapshot_cfg_t;

static const dp_setting_t snapshot_settings[] = {
    {.name = "every",
     .type = DP_SET_DURATION,
     .offset = offsetof(snapshot_cfg_t, every),
     .def = "5min",
     .doc = "Take a snapshot this often (and at shutdown); \"0s\": only at shutdown."},
    {.name = "keep",
     .type = DP_SET_INT,
     .offset = offsetof(snapshot_cfg_t, keep),
     .def = "3",
     .min = 1,
     .max = 1000,
     .doc = "Snapshots kept (older ones are removed); an older one is used when the newest "
            "is damaged."},
    DP_SETTINGS_END,
};

int dp_persist_parse(lua_State *L, int idx, dp_persist_cfg_t *cfg, char **err)
{
    idx = lua_absindex(L, idx);
    journal_cfg_t j = {0};
    snapshot_cfg_t s = {0};
    int rc = 0;
    lua_getfield(L, idx, "journal");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    if (!lua_istable(L, -1))
        rc = dp_fail(err, DP_EINVAL, "plant: journal: expected a table, got %s",
                     luaL_typename(L, -1));
    else
        rc = dp_settings_parse(L, -1, journal_settings, &j, NULL, "plant.journal", err);
    lua_pop(L, 1);
    if (rc < 0)
        return rc;
    lua_getfield(L, idx, "snapshot");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    if (!lua_istable(L, -1))
        rc = dp_fail(err, DP_EINVAL, "plant: snapshot: expected a table, got %s",
                     luaL_typename(L, -1));
    else
        rc = dp_settings_parse(L, -1, snapshot_settings, &s, NULL, "plant.snapshot", err);
    lua_pop(L, 1);
    if (rc < 0)
        return rc;
    *cfg = (dp_persist_cfg_t){.enabled = j.enabled,
                              .fsync = j.fsync,
                              .commit = j.commit,
                              .segment_size = j.segment_size,
                              .retain = j.retain,
                              .retain_size = j.retain_size,
                              .snapshot_every = s.every,
                              .snapshot_keep = s.keep};
    return 0;
}

void dp_persist_settings_doc(FILE *out)
{
    fprintf(out, "`plant { journal = { ... } }`\n\n");
    dp_settings_doc(journal_settings, out);
    fprintf(out, "\n`plant { snapshot = { ... } }`\n\n");
    dp_settings_doc(snapshot_settings, out);
}

/* ---- state ----------------------------------------------------------------- */

struct dp_persist {
    dp_persist_cfg_t cfg;
    char *plant_path;
    char *journal_dir;
    char *snap_dir;
    uv_loop_t *loop;
    dp_journal_t *journal;
    dp_snapshot_t *seed;
    struct dp_plant *plant;
    dp_store_t *store;
    dp_snapshot_t *final; /* captured by prestop */
    uv_timer_t snap_timer;
    bool timer_open;
    bool writing; /* a snapshot file is being written in the threadpool */
    bool started;
    uint64_t last_snap_seq;
    struct {
        dp_journal_durable_cb cb;
        void *ud;
    } * durable_cbs;
    int ndurable_cbs;
};

/* ---- recovery -------------------------------------------------------------- */

/* Reader warnings during recovery, logged once the replay is over. */
typedef struct {
    char *msgs[16];
    int n;
    int dropped;
} warnings_t;

static void collect_warning(const char *msg, void *ud)
{
    warnings_t *w = ud;
    if (w->n < (int)DP_ARRAY_LEN(w->msgs))
        w->msgs[w->n++] = dp_xstrdup(msg);
    else
        w->dropped++;
}

static void flush_warnings(warnings_t *w)
{
    for (int i = 0; i < w->n; i++) {
        dp_log_warn(NULL, "%s", w->msgs[i]);
        free(w->msgs[i]);
    }
    if (w->dropped > 0)
        dp_log_warn(NULL, "journal: %d more corrupted stretches skipped", w->dropped);
    w->n = w->dropped = 0;
}

/* The string under `key` in a msgpack map, into out. */
static bool map_str(const msgpack_object *map, const char *key, char *out, size_t size)
{
    const msgpack_object *v = dp_mp_map_get(map, key);
    if (v == NULL || v->type != MSGPACK_OBJECT_STR || v->via.str.size >= size)
        return false;
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return true;
}

/* An operator's action on an alarm (acknowledged, shelved, unshelved by
 * someone) in the journal tail is done again on the replay plant, at its
 * time: the twins raise the alarms again from the samples, but only the
 * journal knows what operators did. Expiry of shelving and the conditions'
 * own transitions happen again by themselves. Returns whether it applied. */
static bool redo_alarm_action(dp_plant_t *sub, const dp_jrec_t *rec)
{
    if (rec->twin == NULL || rec->payload == NULL)
        return false;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 256);
    msgpack_object map;
    char state[32], name[256], by[64] = "";
    bool ok = false;
    if (dp_mp_parse(rec->payload, rec->payload_len, &zone, &map, NULL) < 0 ||
        map.type != MSGPACK_OBJECT_MAP || !map_str(&map, "state", state, sizeof state) ||
        !map_str(&map, "name", name, sizeof name))
        goto done;
    map_str(&map, "by", by, sizeof by);
    dp_alarms_t *alarms = dp_plant_alarms(sub);
    char *err = NULL;
    if (strcmp(state, "acknowledged") == 0) {
        ok = dp_alarms_ack(alarms, rec->twin, name, by, &err) == 0;
    } else if (strcmp(state, "shelved") == 0) {
        const msgpack_object *until = dp_mp_map_get(&map, "until");
        int64_t u = 0;
        if (until != NULL && until->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            u = (int64_t)until->via.u64;
        else if (until != NULL && until->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            u = until->via.i64;
        dp_time_t now = dp_clock_now(dp_plant_clock(sub));
        ok = u > now && dp_alarms_shelve(alarms, rec->twin, name, u - now, by, &err) == 0;
    } else if (strcmp(state, "unshelved") == 0 && strcmp(by, "expiry") != 0) {
        ok = dp_alarms_unshelve(alarms, rec->twin, name, by, &err) == 0;
    } else {
        goto done;
    }
    if (!ok)
        dp_log_warn(NULL, "recovery: alarm %s.%s %s by %s at record %" PRIu64 " not redone: %s",
                    rec->twin, name, state, by, rec->seq, err != NULL ? err : "no shelving time");
    free(err);
done:
    msgpack_zone_destroy(&zone);
    return ok;
}

/* A change of the guard's switches (a "guard" event) is done again on the
 * replay plant, so that the state after recovery has them as they were. */
static bool redo_guard_switch(dp_plant_t *sub, const dp_jrec_t *rec)
{
    if (rec->payload == NULL)
        return false;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 256);
    msgpack_object map;
    char by[128] = "?";
    bool ok = false;
    if (dp_mp_parse(rec->payload, rec->payload_len, &zone, &map, NULL) == 0 &&
        map.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *w = dp_mp_map_get(&map, "writes"),
                             *sh = dp_mp_map_get(&map, "shadow");
        map_str(&map, "by", by, sizeof by);
        if (w != NULL && w->type == MSGPACK_OBJECT_BOOLEAN && sh != NULL &&
            sh->type == MSGPACK_OBJECT_BOOLEAN) {
            dp_guard_enable_writes(dp_plant_guard(sub), w->via.boolean, by);
            dp_guard_set_shadow(dp_plant_guard(sub), sh->via.boolean, by);
            ok = true;
        }
    }
    if (!ok)
        dp_log_warn(NULL, "recovery: guard event at record %" PRIu64 " is malformed; skipped",
                    rec->seq);
    msgpack_zone_destroy(&zone);
    return ok;
}

/* Replays the journal after `snap` through a virtual-time copy of the plant
 * and returns the resulting seed (NULL: nothing to start from). While the
 * copy loads and replays, only errors are logged: its twins say again what
 * they said live (and the live plant says it once more when it loads). */
static int recover(dp_persist_t *ps, dp_snapshot_t *snap, dp_snapshot_t **out, char **err)
{
    *out = NULL;
    uint64_t t0 = uv_hrtime();
    dp_jpos_t from = {.seq = snap != NULL ? snap->seq + 1 : 0};
    warnings_t warnings = {0};
    dp_jreader_t *r = dp_jreader_open(ps->journal_dir, &from, collect_warning, &warnings, err);
    if (r == NULL)
        return DP_EIO;
    dp_jrec_t rec;
    char *rerr = NULL;
    int rc = dp_jreader_next(r, &rec, &rerr);
    if (rc < 0) {
        dp_fail(err, rc, "recovery: %s", rerr);
        free(rerr);
        dp_jreader_free(r);
        flush_warnings(&warnings);
        return rc;
    }
    if (rc == 0) {
        dp_jreader_free(r);
        flush_warnings(&warnings);
        if (snap != NULL)
            dp_log_info(NULL,
                        "recovery: snapshot %020" PRIu64 " is up to date; no journal records "
                        "after it",
                        snap->seq);
        *out = snap;
        return 0;
    }
    /* A copy of the plant in virtual time, from the snapshot's time (or the
     * first record's), with the snapshot's store and twin states. */
    dp_plant_opts_t po = {
        .path = ps->plant_path,
        .start = snap != NULL && snap->ts <= rec.ts ? snap->ts : rec.ts,
        .seed = snap,
        .dry_run = true, /* commands were sent live; the replay never sends them */
    };
    dp_log_level_t level = dp_log_get_level();
    if (level < DP_LOG_ERROR)
        dp_log_set_level(DP_LOG_ERROR);
    dp_plant_t *sub = dp_plant_open(&po, &rerr);
    if (sub == NULL) {
        dp_log_set_level(level);
        dp_fail(err, DP_ESCRIPT, "recovery: cannot build the replay plant: %s", rerr);
        free(rerr);
        dp_jreader_free(r);
        flush_warnings(&warnings);
        return DP_ESCRIPT;
    }
    dp_store_t *store = dp_plant_store(sub);
    dp_clock_t *clock = dp_plant_clock(sub);
    uint64_t records = 0, samples = 0, actions = 0, unknown = 0;
    uint64_t last = snap != NULL ? snap->seq : 0;
    char unknown_tag[128] = "";
    do {
        records++;
        last = rec.seq;
        bool alarm = rec.type == DP_JREC_EVENT && rec.kind != NULL && !strcmp(rec.kind, "alarm");
        if (alarm ||
            (rec.type == DP_JREC_EVENT && rec.kind != NULL && !strcmp(rec.kind, "guard"))) {
            /* An operator's action, at its time: live, the twins had seen
             * every earlier sample before anyone could act. */
            if (rec.ts > dp_clock_now(clock))
                dp_plant_run_until(sub, rec.ts);
            dp_plant_flush(sub);
            actions += alarm ? redo_alarm_action(sub, &rec) : redo_guard_switch(sub, &rec);
            continue;
        }
        if (rec.type != DP_JREC_SAMPLE || (rec.flags & DP_JSAMPLE_DERIVED))
            continue; /* twins recompute derived tags; commands are never re-sent */
        int id = dp_store_find(store, rec.tag);
        if (id < 0) {
            if (unknown++ == 0)
                snprintf(unknown_tag, sizeof unknown_tag, "%s", rec.tag);
            continue;
        }
        /* Samples with one timestamp go in as one batch, as a driver poll
         * writes them; time advances (firing twin timers) in between. */
        if (rec.ts > dp_clock_now(clock))
            dp_plant_run_until(sub, rec.ts);
        if (rec.value.type == DP_NIL)
            dp_store_set_quality(store, id, rec.quality);
        else
            dp_store_write(store, id, &rec.value, rec.ts, rec.quality);
        samples++;
    } while ((rc = dp_jreader_next(r, &rec, &rerr)) == 1);
    uint64_t skipped = dp_jreader_skipped(r);
    dp_jreader_free(r);
    if (rc < 0) {
        dp_log_error(NULL, "recovery: stopped reading the journal: %s", rerr);
        free(rerr);
    }
    dp_plant_flush(sub);
    rc = dp_snapshot_capture(sub, last, out, &rerr);
    dp_plant_stop(sub);
    dp_plant_free(sub);
    dp_log_set_level(level);
    flush_warnings(&warnings);
    if (rc < 0) {
        dp_fail(err, rc, "recovery: %s", rerr);
        free(rerr);
        return rc;
    }
    if (unknown > 0)
        dp_log_warn(NULL,
                    "recovery: %" PRIu64 " samples of tags this plant no longer has (e.g. %s) "
                    "skipped",
                    unknown, unknown_tag);
    dp_log_info(
        NULL,
        "recovery: %s + %" PRIu64 " journal records (%" PRIu64 " samples replayed in "
        "virtual time, %" PRIu64 " operator actions redone) up to record %" PRIu64 "%s in %.1f ms",
        snap != NULL ? "snapshot" : "no snapshot", records, samples, actions, last,
        skipped > 0 ? ", corrupted stretches skipped" : "", (double)(uv_hrtime() - t0) / 1e6);
    dp_snapshot_free(snap);
    return 0;
}

dp_persist_t *dp_persist_open(const dp_persist_opts_t *o, char **err)
{
    dp_persist_t *ps = dp_xcalloc(1, sizeof *ps);
    ps->cfg = *o->cfg;
    ps->plant_path = dp_xstrdup(o->plant_path);
    ps->journal_dir = dp_xasprintf("%s/journal", o->data_dir);
    ps->snap_dir = dp_xasprintf("%s/snapshots", o->data_dir);
    ps->loop = o->loop;

    dp_snapshot_t *snap = NULL;
    dp_snapshot_remove_stale(ps->snap_dir);
    if (dp_snapshot_load_latest(ps->snap_dir, &snap, NULL) == 0)
        dp_log_info(NULL, "recovery: snapshot %s/%020" PRIu64 ".snap loaded", ps->snap_dir,
                    snap->seq);
    dp_journal_opts_t jo = {.fsync = (dp_journal_fsync_t)ps->cfg.fsync,
                            .commit = ps->cfg.commit,
                            .segment_size = (uint64_t)ps->cfg.segment_size,
                            .retain = ps->cfg.retain,
                            .retain_size = (uint64_t)ps->cfg.retain_size};
    ps->journal =
        dp_journal_open(ps->journal_dir, ps->loop, &jo, snap != NULL ? snap->seq : 0, err);
    if (ps->journal == NULL) {
        dp_snapshot_free(snap);
        dp_persist_free(ps);
        return NULL;
    }
    if (snap != NULL)
        dp_journal_protect(ps->journal, snap->seq);
    int rc = recover(ps, snap, &ps->seed, err);
    if (rc < 0) {
        dp_snapshot_free(snap);
        dp_journal_close(ps->journal);
        ps->journal = NULL;
        dp_persist_free(ps);
        return NULL;
    }
    ps->last_snap_seq = ps->seed != NULL ? ps->seed->seq : 0;
    return ps;
}

const dp_snapshot_t *dp_persist_seed(const dp_persist_t *ps)
{
    return ps->seed;
}

dp_journal_t *dp_persist_journal(dp_persist_t *ps)
{
    return ps->journal;
}

/* ---- journaling ----------------------------------------------------------- */

static void on_write(int tag, const dp_value_t *v, dp_time_t ts, int quality, void *ud)
{
    dp_persist_t *ps = ud;
    if (ps->journal == NULL)
        return;
    const dp_tag_t *t = dp_store_get(ps->store, tag);
    dp_journal_append_sample(ps->journal, t->name, v, ts, quality,
                             (t->flags & DP_TAG_DERIVED) ? DP_JSAMPLE_DERIVED : 0);
}

static void on_event(const dp_event_t *ev, void *ud)
{
    dp_persist_t *ps = ud;
    if (ps->journal != NULL)
        dp_journal_append_event(ps->journal, ev);
}

static void on_command(const dp_cmd_t *cmd, void *ud)
{
    dp_persist_t *ps = ud;
    if (ps->journal == NULL)
        return;
    /* The issuer: "twin:P101" gives the twin; other origins go in the detail. */
    const char *twin = strncmp(cmd->origin, "twin:", 5) == 0 ? cmd->origin + 5 : NULL;
    char *detail = twin != NULL ? NULL : dp_xasprintf("%s (by %s)", cmd->reason, cmd->origin);
    /* A command handed to a device is "sent" (at its submission time); its
     * outcome is a second record. */
    bool sent = cmd->outcome == DP_CMD_PENDING;
    dp_journal_append_command(ps->journal, sent ? cmd->ts : cmd->done_ts, twin, cmd->tag,
                              &cmd->value, sent ? "sent" : dp_cmd_outcome_name(cmd->outcome),
                              detail != NULL ? detail : cmd->reason);
    free(detail);
}

static void on_durable(dp_journal_t *j, uint64_t durable, void *ud)
{
    dp_persist_t *ps = ud;
    /* The crash test reads these lines to know what was accepted. */
    dp_log_debug(NULL, "journal: accepted through record %" PRIu64, durable);
    for (int i = 0; i < ps->ndurable_cbs; i++)
        ps->durable_cbs[i].cb(j, durable, ps->durable_cbs[i].ud);
}

void dp_persist_on_durable(dp_persist_t *ps, dp_journal_durable_cb cb, void *ud)
{
    ps->durable_cbs =
        dp_xrealloc(ps->durable_cbs, sizeof *ps->durable_cbs * (size_t)(ps->ndurable_cbs + 1));
    ps->durable_cbs[ps->ndurable_cbs].cb = cb;
    ps->durable_cbs[ps->ndurable_cbs].ud = ud;
    ps->ndurable_cbs++;
}

/* ---- snapshots ------------------------------------------------------------- */

typedef struct {
    uv_work_t req;
    dp_persist_t *ps;
    char *buf;
    size_t len;
    uint64_t seq;
    int keep;
    char *dir;
    char *err;
    int rc;
} snap_work_t;

static void snap_work(uv_work_t *req)
{
    snap_work_t *w = req->data;
    w->rc = dp_snapshot_write_file(w->dir, w->seq, w->buf, w->len, w->keep, &w->err);
}

static void snap_done(uv_work_t *req, int status)
{
    snap_work_t *w = req->data;
    dp_persist_t *ps = w->ps;
    if (ps != NULL) {
        ps->writing = false;
        if (status == 0 && w->rc == 0) {
            ps->last_snap_seq = w->seq;
            if (ps->journal != NULL)
                dp_journal_protect(ps->journal, w->seq);
            dp_log_debug(NULL, "snapshot %020" PRIu64 " written (%zu bytes)", w->seq, w->len);
        }
    }
    if (w->rc < 0)
        dp_log_error(NULL, "%s", w->err);
    free(w->err);
    free(w->buf);
    free(w->dir);
    free(w);
}

/* Captures the plant now: flushes pending changes so twins have seen every
 * journaled sample, then takes the state with the last journaled seq. */
static int capture(dp_persist_t *ps, dp_snapshot_t **out, char **err)
{
    dp_plant_flush(ps->plant);
    uint64_t seq = ps->journal != NULL ? dp_journal_last_seq(ps->journal) : ps->last_snap_seq;
    return dp_snapshot_capture(ps->plant, seq, out, err);
}

static void on_snap_timer(uv_timer_t *t)
{
    dp_persist_t *ps = t->data;
    if (ps->writing)
        return;
    dp_snapshot_t *s = NULL;
    char *err = NULL;
    if (capture(ps, &s, &err) < 0) {
        dp_log_error(NULL, "snapshot skipped: %s", err);
        free(err);
        return;
    }
    if (s->seq == ps->last_snap_seq) {
        dp_snapshot_free(s);
        return; /* nothing new */
    }
    /* The snapshot must never cover records the journal could lose: the
     * records up to its seq are made durable first (one fsync). */
    if (dp_journal_sync(ps->journal) < 0) {
        dp_log_error(NULL, "snapshot skipped: the journal cannot be synced");
        dp_snapshot_free(s);
        return;
    }
    snap_work_t *w = dp_xcalloc(1, sizeof *w);
    w->ps = ps;
    w->seq = s->seq;
    w->keep = (int)ps->cfg.snapshot_keep;
    w->dir = dp_xstrdup(ps->snap_dir);
    dp_snapshot_encode(s, &w->buf, &w->len);
    dp_snapshot_free(s);
    w->req.data = w;
    ps->writing = true;
    uv_queue_work(ps->loop, &w->req, snap_work, snap_done);
}

int dp_persist_snapshot(dp_persist_t *ps, struct dp_plant *plant, char **err)
{
    dp_snapshot_t *s = NULL;
    ps->plant = plant;
    int rc = capture(ps, &s, err);
    if (rc < 0)
        return rc;
    if (ps->journal != NULL && dp_journal_sync(ps->journal) < 0) {
        dp_snapshot_free(s);
        return dp_fail(err, DP_EIO, "snapshot: the journal cannot be synced");
    }
    char *buf;
    size_t len;
    dp_snapshot_encode(s, &buf, &len);
    rc = dp_snapshot_write_file(ps->snap_dir, s->seq, buf, len, (int)ps->cfg.snapshot_keep, err);
    if (rc == 0) {
        ps->last_snap_seq = s->seq;
        if (ps->journal != NULL)
            dp_journal_protect(ps->journal, s->seq);
    }
    free(buf);
    dp_snapshot_free(s);
    return rc;
}

int dp_persist_start(dp_persist_t *ps, struct dp_plant *plant)
{
    ps->plant = plant;
    ps->store = dp_plant_store(plant);
    ps->started = true;
    dp_store_on_write(ps->store, on_write, ps);
    dp_plant_on_event(plant, on_event, ps);
    dp_guard_t *g = dp_plant_guard(plant);
    if (g != NULL) {
        dp_guard_on_command(g, on_command, ps);
        dp_guard_on_sent(g, on_command, ps);
    }
    dp_journal_on_durable(ps->journal, on_durable, ps);
    if (ps->loop != NULL && ps->cfg.snapshot_every > 0) {
        uv_timer_init(ps->loop, &ps->snap_timer);
        ps->snap_timer.data = ps;
        uint64_t ms = (uint64_t)(ps->cfg.snapshot_every / 1000);
        uv_timer_start(&ps->snap_timer, on_snap_timer, ms ? ms : 1, ms ? ms : 1);
        ps->timer_open = true;
    }
    char c[32];
    dp_duration_format(ps->cfg.commit, c, sizeof c);
    dp_log_info(NULL, "journal %s: fsync %s, commit every %s, from record %" PRIu64,
                ps->journal_dir, dp_journal_fsync_name((dp_journal_fsync_t)ps->cfg.fsync), c,
                dp_journal_last_seq(ps->journal) + 1);
    return 0;
}

void dp_persist_prestop(dp_persist_t *ps, struct dp_plant *plant)
{
    /* A plant that never started (open failed, or recovery only) has
     * nothing newer than what it recovered from. */
    if (ps == NULL || ps->final != NULL || !ps->started)
        return;
    ps->plant = plant;
    char *err = NULL;
    if (capture(ps, &ps->final, &err) < 0) {
        dp_log_error(NULL, "shutdown snapshot skipped: %s", err);
        free(err);
    }
}

void dp_persist_stop(dp_persist_t *ps)
{
    if (ps == NULL || ps->journal == NULL)
        return;
    if (ps->timer_open) {
        uv_close((uv_handle_t *)&ps->snap_timer, NULL);
        ps->timer_open = false;
    }
    if (ps->store != NULL)
        dp_store_on_write(ps->store, NULL, NULL);
    int rc = dp_journal_sync(ps->journal);
    if (ps->final != NULL && rc == 0) {
        char *buf, *err = NULL;
        size_t len;
        dp_snapshot_encode(ps->final, &buf, &len);
        if (dp_snapshot_write_file(ps->snap_dir, ps->final->seq, buf, len,
                                   (int)ps->cfg.snapshot_keep, &err) < 0) {
            dp_log_error(NULL, "shutdown snapshot: %s", err);
            free(err);
        } else {
            dp_log_info(NULL, "shutdown snapshot %020" PRIu64 " written", ps->final->seq);
        }
        free(buf);
    }
    dp_snapshot_free(ps->final);
    ps->final = NULL;
    dp_journal_close(ps->journal);
    ps->journal = NULL;
}

void dp_persist_free(dp_persist_t *ps)
{
    if (ps == NULL)
        return;
    if (ps->journal != NULL) {
        dp_persist_stop(ps);
    }
    dp_snapshot_free(ps->final);
    dp_snapshot_free(ps->seed);
    free(ps->durable_cbs);
    free(ps->plant_path);
    free(ps->journal_dir);
    free(ps->snap_dir);
    free(ps);
}
