/* A plant: one running deployment described by a plant file (Lua) that
 * declares devices and twins. The plant owns the clock, the store, the
 * ingest queue, the devices and the twins, and wires them together: drivers
 * write samples, the loop flushes change notifications to twins once per
 * turn, twins raise events, and script files are watched for hot reload. */
#ifndef DP_PLANT_H
#define DP_PLANT_H

#include <stdbool.h>
#include <uv.h>

#include "clock.h"
#include "command.h"
#include "event.h"
#include "store.h"
#include "twin.h"

typedef struct dp_plant dp_plant_t;

typedef struct {
    /* Plant file path; "embed:examples/pump-station/plant.lua" for the demo. */
    const char *path;
    /* Loop for real time. NULL: virtual time starting at `start`. */
    uv_loop_t *loop;
    dp_time_t start;
    /* Validation only: drivers open (no I/O), scripts load, nothing runs. */
    bool check_only;
    /* Watch script files and reload twins when they change (real time only). */
    bool watch;
    const char *data_dir;
    /* The plant file's text, when it is not read from `path` (doppel test
     * builds plants from tables); `path` still names it and sets the folder
     * where scripts and modules are found. NULL: read `path`. */
    const char *source;
    size_t source_len;
    /* Dry run (replay, tests, recovery): commands are judged, never sent to
     * devices; writable tags without a device are written (command.h). */
    bool dry_run;
    /* Listeners added before any twin loads, so events and commands raised
     * by on_start are seen too (NULL: none). */
    dp_event_cb on_event;
    void *event_ud;
    dp_cmd_cb on_command;
    void *command_ud;
    /* Start from this store content and these twin states (recovery's
     * replay plant); NULL: from the data dir's snapshot and journal when the
     * plant journals (real time with a data_dir), else empty. */
    const struct dp_snapshot *seed;
} dp_plant_opts_t;

/* Reads the plant file, opens devices, adds tags, loads every twin (running
 * on_start unless check_only). Returns NULL with *err naming the file, twin,
 * tag and field at fault. Nothing runs until dp_plant_start(). */
dp_plant_t *dp_plant_open(const dp_plant_opts_t *opts, char **err);
/* Starts devices, the per-turn flush and the file watcher. */
int dp_plant_start(dp_plant_t *plant, char **err);
/* Virtual time only: runs until the clock reads `until`, delivering changes
 * after every timer. Returns the number of timer callbacks run. */
int64_t dp_plant_run_until(dp_plant_t *plant, dp_time_t until);
/* Stops devices, timers and handles (idempotent). In real time, run the loop
 * afterwards so handles close. */
void dp_plant_stop(dp_plant_t *plant);
/* Frees everything (stopping first if needed). In real time, run the loop
 * again afterwards: the clock's libuv handle is closed here and its memory is
 * freed in the close callback. Accepts NULL. */
void dp_plant_free(dp_plant_t *plant);

/* Reloads one twin (by name) or all (name NULL). Returns 0 if all succeeded. */
int dp_plant_reload(dp_plant_t *plant, const char *twin, char **err);
/* Reloads every twin whose script or required module is `path`. */
int dp_plant_file_changed(dp_plant_t *plant, const char *path);

/* Listeners for events; called on the loop thread in the order added. */
void dp_plant_on_event(dp_plant_t *plant, dp_event_cb cb, void *ud);
/* Raises an event of the plant's own (logged at info, then handed to every
 * listener: journal, HTTP stream, MQTT): the REPL's audit records. */
void dp_plant_event(dp_plant_t *plant, const dp_event_t *ev);

const char *dp_plant_name(const dp_plant_t *plant);
/* The data directory (journal in DIR/journal). */
const char *dp_plant_data_dir(const dp_plant_t *plant);
dp_store_t *dp_plant_store(dp_plant_t *plant);
dp_clock_t *dp_plant_clock(dp_plant_t *plant);
int dp_plant_twin_count(const dp_plant_t *plant);
dp_twin_t *dp_plant_twin_at(dp_plant_t *plant, int i);
dp_twin_t *dp_plant_twin(dp_plant_t *plant, const char *name);
int dp_plant_device_count(const dp_plant_t *plant);
/* The i-th device (0 .. count-1) or NULL; valid until dp_plant_free(). */
struct dp_device *dp_plant_device_at(dp_plant_t *plant, int i);
/* The plant's guard: every command goes through it (command.h). */
struct dp_guard *dp_plant_guard(dp_plant_t *plant);
/* The plant's alarm list (alarms.h). */
struct dp_alarms *dp_plant_alarms(dp_plant_t *plant);
/* The plant's journal and snapshots (persist.h); NULL when it does not
 * journal. */
struct dp_persist *dp_plant_persist(dp_plant_t *plant);
/* Delivers queued change notifications now (tests, benchmarks). */
size_t dp_plant_flush(dp_plant_t *plant);
/* The ingest queue (NULL in virtual time). */
struct dp_ingest *dp_plant_ingest(dp_plant_t *plant);
/* The HTTP settings (plant { http = { ... } }), or NULL when absent. */
const struct dp_http_cfg *dp_plant_http(const dp_plant_t *plant);

#endif
