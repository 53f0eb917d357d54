/* Persistence of a running plant: its journal, its snapshots and recovery
 * after a crash. The plant owns one dp_persist_t when it runs in real time
 * with a data directory (see docs/journal.md):
 *
 *   dp_plant_open:  dp_persist_open() recovers: the newest valid snapshot is
 *                   loaded, the journal is opened (a torn tail is cut and
 *                   logged), and the records after the snapshot are replayed
 *                   through the plant's twins in virtual time. The plant then
 *                   seeds its store and twins from dp_persist_seed().
 *   dp_plant_start: dp_persist_start() journals every accepted sample (store
 *                   writes from drivers, ingest and twins), every event and
 *                   every finished command, and takes periodic snapshots.
 *   dp_plant_stop:  dp_persist_prestop() captures the shutdown snapshot
 *                   before twins stop, dp_persist_stop() writes it and closes
 *                   the journal after the devices' last samples are in. */
#ifndef DP_PERSIST_H
#define DP_PERSIST_H

#include <lua.h>
#include <stdbool.h>
#include <uv.h>

#include "common.h"
#include "journal.h"
#include "snapshot.h"

struct dp_plant;

/* plant { journal = { ... }, snapshot = { ... } } */
typedef struct {
    bool enabled;
    int fsync; /* dp_journal_fsync_t */
    dp_time_t commit;
    int64_t segment_size;
    dp_time_t retain;
    int64_t retain_size;
    dp_time_t snapshot_every;
    int64_t snapshot_keep;
} dp_persist_cfg_t;

/* Parses the `journal` and `snapshot` fields of the plant table at idx
 * (absent: defaults). Errors name the field ("plant.journal: fsync: ..."). */
int dp_persist_parse(lua_State *L, int idx, dp_persist_cfg_t *cfg, char **err);
/* Writes the Markdown tables of both settings (docs). */
void dp_persist_settings_doc(FILE *out);

typedef struct dp_persist dp_persist_t;

typedef struct {
    const char *plant_path; /* the plant file, to replay in a virtual twin of the plant */
    const char *data_dir;   /* journal in DIR/journal, snapshots in DIR/snapshots */
    uv_loop_t *loop;
    const dp_persist_cfg_t *cfg;
} dp_persist_opts_t;

/* Recovers (see above). NULL with *err when the journal cannot be opened or
 * the replay plant cannot be built; corrupted snapshots and records are
 * skipped with a warning, not errors. */
dp_persist_t *dp_persist_open(const dp_persist_opts_t *o, char **err);
/* What to start from: store values and twin states after recovery; NULL on
 * a fresh data directory. Valid until dp_persist_free(). */
const dp_snapshot_t *dp_persist_seed(const dp_persist_t *ps);
/* Starts journaling the plant's samples, events and commands, and the
 * snapshot timer. */
int dp_persist_start(dp_persist_t *ps, struct dp_plant *plant);
/* Captures the shutdown snapshot (the plant's changes are flushed first). */
void dp_persist_prestop(dp_persist_t *ps, struct dp_plant *plant);
/* Journals what came in since, writes the shutdown snapshot, syncs and
 * closes the journal. Run the loop afterwards (handles close). */
void dp_persist_stop(dp_persist_t *ps);
/* Accepts NULL. */
void dp_persist_free(dp_persist_t *ps);

/* Listeners told (on the loop thread) each time records become accepted,
 * with the highest accepted seq: followers of the journal (the MQTT
 * publisher) read on from their cursor then. Called in the order added. */
void dp_persist_on_durable(dp_persist_t *ps, dp_journal_durable_cb cb, void *ud);

/* Takes a snapshot of `plant` now (flush, journal sync, write), e.g. right
 * after recovery (doppel run --recover-only). */
int dp_persist_snapshot(dp_persist_t *ps, struct dp_plant *plant, char **err);
dp_journal_t *dp_persist_journal(dp_persist_t *ps);

#endif
