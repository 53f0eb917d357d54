/* The journal: an append-only log of samples, events and commands.
 *
 * Records live in segment files DIR/NNNNNNNNNNNNNNNNNNNN.seg (the number is
 * the sequence number of the segment's first record). A segment starts with
 * the 8-byte magic "DPJRNL1\n"; each record after it is framed as
 *
 *     u32 length (little endian) | u32 CRC-32 of the payload | payload
 *
 * and the payload is one msgpack array (see docs/journal.md for the fields).
 * A torn or corrupted record fails the length or CRC check, so it is never
 * mistaken for data.
 *
 * Writing: records are appended on the loop thread into a memory buffer; a
 * commit hands the buffer to the journal's own writer thread (never the libuv
 * threadpool), which writes it and, per the fsync policy, fsyncs. Every
 * record gets a sequence number (1, 2, ... without gaps within a journal);
 * "accepted" for a producer means dp_journal_durable() has reached that
 * number (see dp_journal_fsync_t).
 *
 * Reading: dp_jreader_* iterates records in order from a position, across
 * segments, skipping (and reporting) corrupted stretches. A reader may follow
 * a journal that is being written: at the end, dp_jreader_next() returns 0
 * and may be called again later. Named cursors (dp_jcursor_*) store a reader
 * position durably so that a follower resumes where it stopped. */
#ifndef DP_JOURNAL_H
#define DP_JOURNAL_H

#include <stdbool.h>
#include <uv.h>

#include "common.h"
#include "event.h"
#include "store.h"

/* ---- Records ------------------------------------------------------------ */

typedef enum {
    DP_JREC_SAMPLE = 1,  /* a sample accepted by the store */
    DP_JREC_EVENT = 2,   /* a dp_event_t (alarm, reload, fault, twin events) */
    DP_JREC_COMMAND = 3, /* a command to a writable tag and its outcome */
} dp_jrec_type_t;

/* Sample flags. */
#define DP_JSAMPLE_DERIVED 0x1u /* written by a twin (recomputed on replay, not fed) */

/* One record. Which fields are set depends on `type`; the others are zero or
 * NULL. Strings and payloads are borrowed: from the reader, valid until the
 * next dp_jreader_next() or dp_jreader_free(); for appends, copied. */
typedef struct {
    dp_jrec_type_t type;
    uint64_t seq; /* set by the journal on append; ignored as input */
    dp_time_t ts;
    /* SAMPLE: tag, value, quality, flags. A DP_NIL value means only the
     * quality changed (dp_store_set_quality).
     * COMMAND: tag is the target, value the value written. */
    const char *tag;
    dp_value_t value;
    uint8_t quality;
    uint32_t flags; /* DP_JSAMPLE_* */
    /* EVENT: twin (NULL for plant-level), kind, text, payload (msgpack map or
     * NULL). COMMAND: twin is the issuer (NULL: an operator), kind the
     * outcome ("sent", "done", "refused", "failed", ...), text the detail. */
    const char *twin;
    const char *kind;
    const char *text;
    const char *payload;
    size_t payload_len;
} dp_jrec_t;

/* A position in a journal: just before the record with sequence `seq`, found
 * at byte `offset` of segment `segment` (the segment's first seq). A zero
 * position means "the oldest record". seq alone is enough to seek; segment
 * and offset make it O(1). */
typedef struct {
    uint64_t segment;
    uint64_t offset;
    uint64_t seq;
} dp_jpos_t;

/* ---- Writer ------------------------------------------------------------- */

typedef enum {
    DP_JFSYNC_ALWAYS,   /* commit at the end of every loop turn; accepted = fsynced */
    DP_JFSYNC_INTERVAL, /* commit every `commit` us; accepted = written and fsynced */
    DP_JFSYNC_NEVER,    /* commit every `commit` us; accepted = written to the OS */
} dp_journal_fsync_t;

typedef struct {
    dp_journal_fsync_t fsync;
    dp_time_t commit;      /* commit interval (us); 0: 10 ms */
    uint64_t segment_size; /* rotate after this many bytes; 0: 64 MiB */
    dp_time_t retain;      /* drop segments older than this (us); 0: keep */
    uint64_t retain_size;  /* drop oldest segments beyond this many bytes; 0: keep */
} dp_journal_opts_t;

typedef struct dp_journal dp_journal_t;

/* Called on the loop thread (or, without a loop, from dp_journal_sync) when
 * every record up to `durable` is accepted per the fsync policy. */
typedef void (*dp_journal_durable_cb)(dp_journal_t *j, uint64_t durable, void *ud);

/* Opens (creating) the journal in `dir`. The last segment is checked: a torn
 * or corrupted tail is cut off (truncated) and logged. New records are
 * numbered after max(last record in the journal, `min_seq`). `loop` (may be
 * NULL: then commits happen only in dp_journal_commit/dp_journal_sync) drives
 * the commit timer and delivers durable callbacks. Starts the writer thread.
 * NULL with *err on failure. */
dp_journal_t *dp_journal_open(const char *dir, uv_loop_t *loop, const dp_journal_opts_t *opts,
                              uint64_t min_seq, char **err);
/* Commits what is buffered, waits for the writer, stops the thread and closes
 * files. With a loop, run it once more afterwards (the handles close); the
 * memory is freed in the close callbacks. Accepts NULL. */
void dp_journal_close(dp_journal_t *j);

/* Loop thread. Append a record; returns its sequence number (> 0). Strings,
 * values and payloads are copied. `rec->seq` is ignored. */
uint64_t dp_journal_append(dp_journal_t *j, const dp_jrec_t *rec);
/* Shorthands for the three record types. */
uint64_t dp_journal_append_sample(dp_journal_t *j, const char *tag, const dp_value_t *v,
                                  dp_time_t ts, int quality, uint32_t flags);
uint64_t dp_journal_append_event(dp_journal_t *j, const dp_event_t *ev);
uint64_t dp_journal_append_command(dp_journal_t *j, dp_time_t ts, const char *twin, const char *tag,
                                   const dp_value_t *v, const char *outcome, const char *detail);

/* Hands the buffer to the writer now (the timer does this by itself). */
void dp_journal_commit(dp_journal_t *j);
/* Commits and waits until everything appended so far is written and fsynced
 * (whatever the policy); for shutdown, snapshots, tests and tools. Returns 0
 * or DP_EIO when the writer failed (the log says why). */
int dp_journal_sync(dp_journal_t *j);

/* Sequence number of the last record appended (0: none yet). */
uint64_t dp_journal_last_seq(const dp_journal_t *j);
/* Highest sequence number accepted per the fsync policy. */
uint64_t dp_journal_durable(const dp_journal_t *j);
/* One callback per journal; replaces the previous one. */
void dp_journal_on_durable(dp_journal_t *j, dp_journal_durable_cb cb, void *ud);
/* Segments with records after `seq` are never dropped by retention (the
 * newest snapshot needs them). */
void dp_journal_protect(dp_journal_t *j, uint64_t seq);

typedef struct {
    uint64_t records;
    uint64_t bytes;
    uint64_t commits;
    uint64_t fsyncs;
    uint64_t segments; /* segment files created */
    uint64_t dropped;  /* segment files removed by retention */
    bool failed;       /* writes fail (what is appended is kept in memory and retried), or
                          failed in a way that cannot be retried (nothing more is recorded
                          this run; the log says which) */
    bool broken;       /* failed for good this run (see failed) */
} dp_journal_stats_t;
void dp_journal_get_stats(const dp_journal_t *j, dp_journal_stats_t *out);

/* ---- Reader ------------------------------------------------------------- */

typedef struct dp_jreader dp_jreader_t;

/* Called for every corrupted stretch the reader skips, with a message naming
 * the file, offset and what was wrong. NULL: logged as a warning. */
typedef void (*dp_jreader_warn_cb)(const char *msg, void *ud);

/* Opens a reader on the journal in `dir`, positioned at `from` (NULL or a
 * zero position: the oldest record; a seq that was dropped by retention:
 * the oldest record, with a warning). Does not need the writer. NULL with
 * *err when the directory cannot be read. */
dp_jreader_t *dp_jreader_open(const char *dir, const dp_jpos_t *from, dp_jreader_warn_cb warn,
                              void *ud, char **err);
/* Accepts NULL. */
void dp_jreader_free(dp_jreader_t *r);
/* Reads the next record into *rec: 1 when one was read, 0 at the end (for
 * now: call again later to follow a live journal), or DP_EIO with *err on a
 * read error. Corrupted records are skipped and reported through `warn`. */
int dp_jreader_next(dp_jreader_t *r, dp_jrec_t *rec, char **err);
/* The position just after the last record read (where to resume). */
dp_jpos_t dp_jreader_pos(const dp_jreader_t *r);
/* Bytes skipped as corrupted so far. */
uint64_t dp_jreader_skipped(const dp_jreader_t *r);

/* ---- Durable cursors ---------------------------------------------------- */

/* Loads the cursor DIR/cursors/NAME; DP_ENOENT (pos zeroed) when there is
 * none, DP_EINVAL with *err when the file is corrupted. */
int dp_jcursor_load(const char *dir, const char *name, dp_jpos_t *pos, char **err);
/* Saves it durably (temporary file, fsync, rename). */
int dp_jcursor_save(const char *dir, const char *name, const dp_jpos_t *pos, char **err);

/* ---- Helpers ------------------------------------------------------------ */

/* CRC-32 (IEEE, as zlib) of buf, continuing from crc (start with 0). */
uint32_t dp_crc32(uint32_t crc, const void *buf, size_t len);
/* "always", "interval", "never". */
const char *dp_journal_fsync_name(dp_journal_fsync_t f);

#endif
