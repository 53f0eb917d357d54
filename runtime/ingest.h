/* Ingest: the thread-safe way into the store.
 *
 * Driver worker threads push samples; a uv_async wakes the loop thread, which
 * drains the queue into the store in push order. Under load the wake-ups are
 * coalesced: after a drain that found samples, the next drain is a timer's,
 * 1 ms later (so a sample waits at most about 1 ms more while samples keep
 * coming, and the loop wakes about once a millisecond, not once a response).
 * The queue is bounded: a producer that finds it full waits (back-pressure on
 * the device, never a dropped sample). */
#ifndef DP_INGEST_H
#define DP_INGEST_H

#include <uv.h>

#include "store.h"

typedef struct dp_ingest dp_ingest_t;

/* `loop` may be NULL (virtual time, tests): then nothing wakes the loop and
 * the owner calls dp_ingest_drain() itself. capacity 0 means 1,048,576. */
dp_ingest_t *dp_ingest_new(uv_loop_t *loop, dp_store_t *store, size_t capacity);
/* Drains what is left into the store, closes the loop handles; memory is
 * freed in their close callbacks (run the loop once more). Accepts NULL. Producers
 * must have stopped. */
void dp_ingest_free(dp_ingest_t *in);

/* Any thread. Copies v (strings too). A NULL or DP_NIL value changes only the
 * quality. Returns 0, or DP_ESTATE once the ingest is closing. */
int dp_ingest_push(dp_ingest_t *in, int tag, const dp_value_t *v, dp_time_t ts, int quality);
/* The same, with the reason of the quality (a static string, see
 * dp_store_set_reason(); NULL: none), applied with the sample in order. */
int dp_ingest_push_reason(dp_ingest_t *in, int tag, const dp_value_t *v, dp_time_t ts, int quality,
                          const char *reason);

/* One sample of a batch (see dp_ingest_push_many). */
typedef struct {
    int tag;
    int quality;
    dp_value_t v; /* DP_NIL: quality only */
    dp_time_t ts;
    const char *reason; /* static; NULL: none */
} dp_ingest_sample_t;

/* Any thread. Pushes `n` samples (strings copied) under one lock and with
 * at most one wake-up: what a driver does with one device response. Waits
 * for room like dp_ingest_push(). Returns 0, DP_EINVAL (nothing queued) or
 * DP_ESTATE. */
int dp_ingest_push_many(dp_ingest_t *in, const dp_ingest_sample_t *s, size_t n);

/* Any thread: waits while more than `max` samples are pushed but not yet in
 * the store (queued, or being written by a drain), and returns as soon as a
 * drain brings that down to `max` or less. A producer calls it before
 * pushing to bound the loop's backlog (and so the age of what the store
 * holds) without polling. Returns 0, or DP_ESTATE once the ingest is
 * closing. */
int dp_ingest_wait_backlog(dp_ingest_t *in, size_t max);

/* Loop thread: writes every queued sample into the store; returns how many.
 * Runs by itself from the async callback when a loop was given. */
size_t dp_ingest_drain(dp_ingest_t *in);

/* Totals since creation (approximate when read from another thread). */
uint64_t dp_ingest_pushed(const dp_ingest_t *in);
uint64_t dp_ingest_drained(const dp_ingest_t *in);

#endif
