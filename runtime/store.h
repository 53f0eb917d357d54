/* The store: every tag's current value, timestamp, quality and unit, an
 * optional history ring per tag, and change notifications.
 *
 * Tags are addressed by an integer handle (dense, from 0), so access is an
 * array index. Names are "twin.tag". The store belongs to the loop thread;
 * other threads hand samples over through ingest.h.
 *
 * Change notifications: a subscriber watches tags, each with a deadband. A
 * write that changes the quality, the type, or the value by more than the
 * deadband (any change for deadband 0, any change for booleans and strings)
 * queues a change record on the subscriber. dp_store_flush(), called by the
 * loop once per turn, hands each subscriber all its queued records in one
 * call, in write order. Every accepted sample that passes the deadband is
 * delivered exactly once; none are coalesced away. */
#ifndef DP_STORE_H
#define DP_STORE_H

#include <stdbool.h>

#include "common.h"

typedef enum { DP_NIL = 0, DP_NUM, DP_BOOL, DP_STR } dp_vtype_t;
typedef enum { DP_Q_GOOD = 0, DP_Q_UNCERTAIN = 1, DP_Q_BAD = 2 } dp_quality_t;

/* A value. For DP_STR, `s` is owned by whoever holds the dp_value_t (the
 * store copies on write; values returned by the store are borrowed). */
typedef struct {
    dp_vtype_t type;
    union {
        double n;
        bool b;
        char *s;
    } u;
} dp_value_t;

static inline dp_value_t dp_num(double n)
{
    dp_value_t v = {.type = DP_NUM, .u.n = n};
    return v;
}
static inline dp_value_t dp_bool(bool b)
{
    dp_value_t v = {.type = DP_BOOL, .u.b = b};
    return v;
}
/* Borrows s; the store copies it on write. */
static inline dp_value_t dp_str(const char *s)
{
    dp_value_t v = {.type = DP_STR, .u.s = (char *)s};
    return v;
}

/* Whether a and b are the same value: same type and equal, a NaN the same as
 * a NaN, strings by content. */
bool dp_value_same(const dp_value_t *a, const dp_value_t *b);

const char *dp_quality_name(int quality); /* "good", "uncertain", "bad" */
int dp_quality_parse(const char *s);      /* DP_Q_* or DP_EINVAL */

typedef struct {
    dp_time_t ts;
    dp_value_t v;
    uint8_t quality;
} dp_sample_t;

/* Tag flags. */
#define DP_TAG_DERIVED  0x1u /* written by a twin script, not a driver */
#define DP_TAG_WRITABLE 0x2u /* may be the target of a command */

typedef struct {
    const char *unit;   /* NULL: none */
    uint32_t history;   /* ring length; 0: no history */
    uint32_t flags;     /* DP_TAG_* */
    const char *source; /* free-form "device:address" description; NULL: none */
    double deadband;    /* default deadband for watchers that do not give one */
} dp_tag_opts_t;

/* Read-only view of a tag; valid until the tag is removed or the store freed. */
typedef struct {
    const char *name;
    const char *unit; /* "" when none */
    const char *source;
    dp_value_t v; /* DP_NIL until the first write */
    dp_time_t ts;
    uint8_t quality;
    uint32_t flags;
    uint64_t writes; /* samples accepted so far */
    double deadband; /* default deadband from the tag's declaration */
    /* Why the quality is not good ("timeout", "disconnected", "stale", ...),
     * as its source said; NULL when it gave no reason. A static string. */
    const char *reason;
} dp_tag_t;

typedef struct dp_store dp_store_t;
typedef struct dp_sub dp_sub_t;

/* One change as handed to a subscriber. `v.u.s` is valid during the call. */
typedef struct {
    int tag;
    dp_value_t v;
    dp_time_t ts;
    uint8_t quality;
} dp_change_t;

typedef void (*dp_store_batch_cb)(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud);

dp_store_t *dp_store_new(void);
/* Accepts NULL. Frees every tag and subscriber. */
void dp_store_free(dp_store_t *store);

/* Adds a tag; returns its handle (>= 0), DP_EEXIST if the name is taken or
 * DP_EINVAL for an empty or malformed name ("twin.tag" with non-empty parts). */
int dp_store_add(dp_store_t *store, const char *name, const dp_tag_opts_t *opts);
/* Handle of a tag by name, or DP_ENOENT. */
int dp_store_find(const dp_store_t *store, const char *name);
/* Number of tags (handles are 0 .. count-1). */
int dp_store_count(const dp_store_t *store);
/* NULL for an invalid handle. */
const dp_tag_t *dp_store_get(const dp_store_t *store, int tag);
/* Updates the unit (copied). */
int dp_store_set_unit(dp_store_t *store, int tag, const char *unit);
/* Changes the history ring length, keeping the newest samples that fit. */
int dp_store_set_history(dp_store_t *store, int tag, uint32_t length);

/* Accepts a sample: sets value, timestamp and quality, appends to the
 * history ring and queues change records. A DP_NIL value is refused
 * (DP_EINVAL); use quality to say a value is missing. */
int dp_store_write(dp_store_t *store, int tag, const dp_value_t *v, dp_time_t ts, int quality);
/* Changes only the quality (e.g. stale or disconnected), keeping value and
 * timestamp. Queues change records when the quality changes. */
int dp_store_set_quality(dp_store_t *store, int tag, int quality);
/* Sets the reason of the tag's current quality (a static string: it is not
 * copied; NULL clears it). dp_store_write() and a dp_store_set_quality()
 * that changes the quality clear it, so set it after them. */
int dp_store_set_reason(dp_store_t *store, int tag, const char *reason);

/* Observer of every accepted sample (the journal): called after each
 * successful dp_store_write() with the stored value, and after each
 * dp_store_set_quality() that changed the quality with v NULL. One observer
 * per store; NULL removes it. `v->u.s` is valid during the call. */
typedef void (*dp_store_write_cb)(int tag, const dp_value_t *v, dp_time_t ts, int quality,
                                  void *ud);
void dp_store_on_write(dp_store_t *store, dp_store_write_cb cb, void *ud);

/* Copies up to `max` most recent history samples into `out`, oldest first;
 * returns the number copied. String values in `out` are borrowed and valid
 * until the next write to the tag. */
size_t dp_store_history(const dp_store_t *store, int tag, dp_sample_t *out, size_t max);
/* Number of samples held in the tag's ring. */
size_t dp_store_history_len(const dp_store_t *store, int tag);
/* The i-th newest sample (0 = newest) or NULL. */
const dp_sample_t *dp_store_history_at(const dp_store_t *store, int tag, size_t i);

/* Subscribers. The callback runs from dp_store_flush() only. */
dp_sub_t *dp_store_sub_new(dp_store_t *store, dp_store_batch_cb cb, void *ud);
/* Drops the subscriber's watches and its queued changes. Accepts NULL. */
void dp_store_sub_free(dp_store_t *store, dp_sub_t *sub);
/* Watches a tag with a deadband (>= 0); watching again updates the deadband. */
int dp_store_watch(dp_store_t *store, dp_sub_t *sub, int tag, double deadband);
/* Drops every watch of the subscriber but keeps its queued changes, so they
 * still reach it at the next flush (this is how a reload swaps handlers
 * without losing or repeating samples). */
void dp_store_unwatch_all(dp_store_t *store, dp_sub_t *sub);
/* Number of queued change records for the subscriber. */
size_t dp_store_sub_pending(const dp_sub_t *sub);

/* Delivers queued changes: one call per subscriber with pending records.
 * Changes written by callbacks during the flush are delivered by further
 * rounds, at most `max_rounds` in all (stopping earlier once nothing is
 * pending). Returns the number of records delivered. */
size_t dp_store_flush(dp_store_t *store, int max_rounds);
/* True when some subscriber has queued records. */
bool dp_store_dirty(const dp_store_t *store);

#endif
