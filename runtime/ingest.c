/* Ingest: a bounded multi-producer queue into the store. See ingest.h.
 *
 * Producers append to one vector under a mutex; the loop thread swaps that
 * vector for an empty one and writes the records into the store outside the
 * lock, so producers are held up only for the swap, never for store work.
 *
 * Wake-ups are coalesced the way a network card moderates its interrupts: a
 * push into an idle ingest wakes the loop at once (uv_async), but a drain
 * that found samples starts a hold of HOLD_MS, during which pushes wake
 * nobody and the hold timer does the next drain. Under load the loop thus
 * drains at most about once a millisecond, however many responses arrive,
 * instead of once or more per response; a wake-up costs two context
 * switches and an eventfd write and read, which on a busy gateway cost more
 * than the store work they deliver. The price is at most HOLD_MS more
 * latency while samples keep coming; a hold whose drain finds nothing ends,
 * and the next push wakes the loop at once again. */
#include "ingest.h"

#include <stdatomic.h>
#include <stdlib.h>

#define DEFAULT_CAPACITY ((size_t)1 << 20)
#define HOLD_MS          1 /* libuv timers count milliseconds */

/* A queued sample. A DP_NIL value marks a quality-only update. */
typedef struct {
    dp_value_t v; /* owned copy for DP_STR */
    dp_time_t ts;
    const char *reason; /* static; NULL: none */
    int tag;
    uint8_t quality;
} rec_t;

struct dp_ingest {
    uv_async_t async; /* async.data points back here */
    uv_timer_t hold;  /* the next drain while holding (see dp_ingest_drain) */
    int open_handles; /* closed in dp_ingest_free: memory goes with the last */
    uv_loop_t *loop;
    dp_store_t *store;
    uv_mutex_t mu;
    uv_cond_t space; /* signalled when the queue has been drained */
    size_t capacity;
    unsigned waiters; /* guarded by mu: threads in dp_ingest_wait_backlog() */

    /* Guarded by mu. */
    rec_t *queue;
    size_t n;
    size_t queue_cap;
    bool closing;
    bool holding; /* the last drain found samples: pushes leave it to the hold timer */

    /* Loop thread only: an empty vector swapped in by each drain, so the
     * two buffers are reused and steady-state pushes do not allocate. */
    rec_t *spare;
    size_t spare_cap;

    _Atomic uint64_t pushed;
    _Atomic uint64_t drained;
};

static void on_async(uv_async_t *handle)
{
    dp_ingest_drain(handle->data);
}

static void destroy(dp_ingest_t *in)
{
    free(in->queue);
    free(in->spare);
    uv_cond_destroy(&in->space);
    uv_mutex_destroy(&in->mu);
    free(in);
}

static void on_close(uv_handle_t *handle)
{
    dp_ingest_t *in = handle->data;
    if (--in->open_handles == 0)
        destroy(in);
}

static void on_hold(uv_timer_t *timer)
{
    dp_ingest_drain(timer->data);
}

dp_ingest_t *dp_ingest_new(uv_loop_t *loop, dp_store_t *store, size_t capacity)
{
    if (store == NULL)
        return NULL;
    dp_ingest_t *in = dp_xcalloc(1, sizeof(*in));
    in->loop = loop;
    in->store = store;
    in->capacity = capacity > 0 ? capacity : DEFAULT_CAPACITY;
    atomic_init(&in->pushed, 0);
    atomic_init(&in->drained, 0);
    if (uv_mutex_init(&in->mu) != 0) {
        free(in);
        return NULL;
    }
    if (uv_cond_init(&in->space) != 0) {
        uv_mutex_destroy(&in->mu);
        free(in);
        return NULL;
    }
    if (loop != NULL) {
        if (uv_async_init(loop, &in->async, on_async) != 0) {
            destroy(in);
            return NULL;
        }
        in->async.data = in;
        uv_timer_init(loop, &in->hold); /* cannot fail */
        in->hold.data = in;
        in->open_handles = 2;
    }
    return in;
}

void dp_ingest_free(dp_ingest_t *in)
{
    if (in == NULL)
        return;
    uv_mutex_lock(&in->mu);
    in->closing = true;
    /* A producer still waiting for space gets DP_ESTATE instead of hanging. */
    uv_cond_broadcast(&in->space);
    uv_mutex_unlock(&in->mu);
    dp_ingest_drain(in);
    if (in->loop != NULL) {
        uv_close((uv_handle_t *)&in->async, on_close);
        uv_close((uv_handle_t *)&in->hold, on_close);
    } else {
        destroy(in);
    }
}

static bool valid_quality(int quality)
{
    return quality >= DP_Q_GOOD && quality <= DP_Q_BAD;
}

int dp_ingest_push(dp_ingest_t *in, int tag, const dp_value_t *v, dp_time_t ts, int quality)
{
    return dp_ingest_push_reason(in, tag, v, ts, quality, NULL);
}

int dp_ingest_push_reason(dp_ingest_t *in, int tag, const dp_value_t *v, dp_time_t ts, int quality,
                          const char *reason)
{
    if (in == NULL || !valid_quality(quality))
        return DP_EINVAL;
    rec_t rec = {.ts = ts, .tag = tag, .quality = (uint8_t)quality, .reason = reason};
    if (v != NULL && v->type != DP_NIL) {
        /* Refuse here what the store would refuse, so the producer hears
         * about it instead of the sample vanishing on the loop thread. */
        if (v->type != DP_NUM && v->type != DP_BOOL && v->type != DP_STR)
            return DP_EINVAL;
        if (v->type == DP_STR && v->u.s == NULL)
            return DP_EINVAL;
        rec.v = *v;
        /* Copy outside the lock to keep the critical section short. */
        if (v->type == DP_STR)
            rec.v.u.s = dp_xstrdup(v->u.s);
    }

    uv_mutex_lock(&in->mu);
    while (!in->closing && in->n >= in->capacity)
        uv_cond_wait(&in->space, &in->mu);
    if (in->closing) {
        uv_mutex_unlock(&in->mu);
        if (rec.v.type == DP_STR)
            free(rec.v.u.s);
        return DP_ESTATE;
    }
    if (in->n == in->queue_cap) {
        size_t cap = in->queue_cap ? in->queue_cap * 2 : 256;
        in->queue_cap = cap < in->capacity ? cap : in->capacity;
        in->queue = dp_xrealloc(in->queue, in->queue_cap * sizeof(rec_t));
    }
    in->queue[in->n++] = rec;
    /* Only the push that makes the queue non-empty wakes the loop, and not
     * while a hold runs (its timer drains): the drain takes everything queued
     * up to then, and any later push finds the queue empty again. */
    bool wake = in->n == 1 && !in->holding;
    atomic_fetch_add_explicit(&in->pushed, 1, memory_order_relaxed);
    uv_mutex_unlock(&in->mu);
    if (wake && in->loop != NULL)
        uv_async_send(&in->async);
    return DP_OK;
}

int dp_ingest_push_many(dp_ingest_t *in, const dp_ingest_sample_t *s, size_t n)
{
    if (in == NULL || (n > 0 && s == NULL))
        return DP_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const dp_value_t *v = &s[i].v;
        if (!valid_quality(s[i].quality) ||
            (v->type != DP_NIL && v->type != DP_NUM && v->type != DP_BOOL && v->type != DP_STR) ||
            (v->type == DP_STR && v->u.s == NULL))
            return DP_EINVAL;
    }
    size_t done = 0;
    while (done < n) {
        uv_mutex_lock(&in->mu);
        while (!in->closing && in->n >= in->capacity)
            uv_cond_wait(&in->space, &in->mu);
        if (in->closing) {
            uv_mutex_unlock(&in->mu);
            return DP_ESTATE;
        }
        /* As many as fit now; the rest after the next drain. */
        size_t k = n - done, room = in->capacity - in->n;
        if (k > room)
            k = room;
        if (in->n + k > in->queue_cap) {
            size_t cap = in->queue_cap ? in->queue_cap : 256;
            while (cap < in->n + k)
                cap *= 2;
            in->queue_cap = cap < in->capacity ? cap : in->capacity;
            in->queue = dp_xrealloc(in->queue, in->queue_cap * sizeof(rec_t));
        }
        bool wake = in->n == 0 && !in->holding;
        for (size_t i = done; i < done + k; i++) {
            rec_t *r = &in->queue[in->n++];
            *r = (rec_t){.v = s[i].v,
                         .ts = s[i].ts,
                         .reason = s[i].reason,
                         .tag = s[i].tag,
                         .quality = (uint8_t)s[i].quality};
            if (r->v.type == DP_STR)
                r->v.u.s = dp_xstrdup(r->v.u.s);
        }
        done += k;
        atomic_fetch_add_explicit(&in->pushed, k, memory_order_relaxed);
        uv_mutex_unlock(&in->mu);
        if (wake && in->loop != NULL)
            uv_async_send(&in->async);
    }
    return DP_OK;
}

size_t dp_ingest_drain(dp_ingest_t *in)
{
    if (in == NULL)
        return 0;
    uv_mutex_lock(&in->mu);
    rec_t *recs = in->queue;
    size_t n = in->n;
    size_t cap = in->queue_cap;
    in->queue = in->spare;
    in->queue_cap = in->spare_cap;
    in->n = 0;
    if (n > 0)
        uv_cond_broadcast(&in->space);
    bool hold = n > 0 && in->loop != NULL && !in->closing;
    in->holding = hold;
    uv_mutex_unlock(&in->mu);
    if (hold && !uv_is_active((uv_handle_t *)&in->hold))
        uv_timer_start(&in->hold, on_hold, HOLD_MS, 0);

    for (size_t i = 0; i < n; i++) {
        rec_t *r = &recs[i];
        /* Store errors (a bad tag handle) are the producer's bug; the sample
         * is dropped here because there is nobody left to tell. */
        if (r->v.type == DP_NIL) {
            dp_store_set_quality(in->store, r->tag, r->quality);
        } else {
            dp_store_write(in->store, r->tag, &r->v, r->ts, r->quality);
            if (r->v.type == DP_STR)
                free(r->v.u.s);
        }
        if (r->reason != NULL)
            dp_store_set_reason(in->store, r->tag, r->reason);
    }
    in->spare = recs;
    in->spare_cap = cap;
    if (n > 0) {
        uv_mutex_lock(&in->mu);
        atomic_fetch_add_explicit(&in->drained, n, memory_order_relaxed);
        if (in->waiters > 0)
            uv_cond_broadcast(&in->space);
        uv_mutex_unlock(&in->mu);
    }
    return n;
}

int dp_ingest_wait_backlog(dp_ingest_t *in, size_t max)
{
    if (in == NULL)
        return DP_EINVAL;
    uv_mutex_lock(&in->mu);
    in->waiters++;
    /* Both counters change under mu (drained at the end of each drain), so
     * the drain that brings the backlog down cannot be missed. */
    while (!in->closing && atomic_load_explicit(&in->pushed, memory_order_relaxed) -
                                   atomic_load_explicit(&in->drained, memory_order_relaxed) >
                               max)
        uv_cond_wait(&in->space, &in->mu);
    in->waiters--;
    bool closing = in->closing;
    uv_mutex_unlock(&in->mu);
    return closing ? DP_ESTATE : DP_OK;
}

uint64_t dp_ingest_pushed(const dp_ingest_t *in)
{
    return in != NULL ? atomic_load_explicit(&in->pushed, memory_order_relaxed) : 0;
}

uint64_t dp_ingest_drained(const dp_ingest_t *in)
{
    return in != NULL ? atomic_load_explicit(&in->drained, memory_order_relaxed) : 0;
}
