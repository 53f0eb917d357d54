/* Snapshots: the store (every tag's current value and history ring), every
 * twin's `state`, the alarm list (what operators acknowledged and shelved)
 * and the guard's switches, with the journal position they cover.
 *
 * A snapshot file DIR/NNNNNNNNNNNNNNNNNNNN.snap (the number is the sequence
 * number of the last journal record it covers) is
 *
 *     "DPSNAP1\n" | u32 length | u32 CRC-32 of the body | body (msgpack)
 *
 * written to a temporary file, fsynced and renamed, so a crash leaves either
 * the old set of snapshots or the new one. A snapshot that fails any check is
 * skipped with a message naming the file and what was wrong, and the next
 * older one is tried. */
#ifndef DP_SNAPSHOT_H
#define DP_SNAPSHOT_H

#include "alarms.h"
#include "common.h"
#include "store.h"

struct dp_plant;

typedef struct {
    char *name;
    uint32_t flags;    /* DP_TAG_* */
    uint32_t history;  /* ring length */
    dp_sample_t cur;   /* v DP_NIL: never written */
    dp_sample_t *hist; /* oldest first; string values owned */
    size_t nhist;
} dp_snap_tag_t;

typedef struct {
    char *name;
    char *state; /* msgpack */
    size_t len;
} dp_snap_twin_t;

/* An alarm's operator-visible state; info's strings point at the owned ones
 * (info.acked_by is an array of its own). */
typedef struct {
    char *twin, *name, *message, *group;
    dp_alarm_info_t info;
} dp_snap_alarm_t;

typedef struct dp_snapshot {
    uint64_t seq; /* last journal record covered (0: none) */
    dp_time_t ts; /* plant clock time when taken */
    char *plant;
    dp_snap_tag_t *tags;
    size_t ntags;
    dp_snap_twin_t *twins;
    size_t ntwins;
    dp_snap_alarm_t *alarms; /* the alarm list (retired alarms left out) */
    size_t nalarms;
    bool has_guard; /* the guard's switches below were saved (version 2) */
    bool writes, shadow;
} dp_snapshot_t;

/* Captures the plant's store and twin states as they are now (the caller
 * flushes pending changes first). A twin state that cannot be stored gives
 * an error naming the twin and the key path (e.g. "twin P101: state.f:
 * cannot store a function"); nothing is returned then. */
int dp_snapshot_capture(struct dp_plant *plant, uint64_t seq, dp_snapshot_t **out, char **err);
/* Accepts NULL. */
void dp_snapshot_free(dp_snapshot_t *s);

/* Encodes a snapshot file's bytes (header included) into a malloc'd buffer. */
void dp_snapshot_encode(const dp_snapshot_t *s, char **out, size_t *len);
/* Decodes a snapshot file's bytes; DP_EINVAL with *err saying what is wrong. */
int dp_snapshot_decode(const char *buf, size_t len, dp_snapshot_t **out, char **err);

/* Writes encoded bytes as snapshot `seq` in dir, atomically and durably, then
 * removes all but the newest `keep` snapshots (keep >= 1). Any thread. */
int dp_snapshot_write_file(const char *dir, uint64_t seq, const char *buf, size_t len, int keep,
                           char **err);
/* Loads the newest valid snapshot in dir. Invalid ones are skipped and logged
 * (warn) with the file name and the reason. DP_ENOENT when there is none. */
int dp_snapshot_load_latest(const char *dir, dp_snapshot_t **out, char **err);

/* Removes temporary files left in dir by a crash in the middle of a write
 * (only the process that writes snapshots calls this, at start-up). */
void dp_snapshot_remove_stale(const char *dir);

/* Writes the snapshot's tag values and history into the store without
 * watchers seeing them (call before twins subscribe). Derived tags that do
 * not exist yet are created (their twin declares them again on load); input
 * tags the plant no longer has are skipped. Returns the number skipped. */
int dp_snapshot_restore_store(const dp_snapshot_t *s, dp_store_t *store);
/* Puts the snapshot's alarm list back (call before twins load, so that
 * their scripts declare the alarms with the state they had). */
void dp_snapshot_restore_alarms(const dp_snapshot_t *s, dp_alarms_t *alarms);
/* The saved state of twin `name`, or NULL. */
const dp_snap_twin_t *dp_snapshot_twin(const dp_snapshot_t *s, const char *name);

#endif
