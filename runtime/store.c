/* The tag store: current values, history rings and batched change
 * notifications. See store.h for the contract.
 *
 * The hot path is dp_store_write() followed by dp_store_flush(): a write is an
 * array index, a few stores, an optional ring push and, per watch, a compare
 * and an append to the subscriber's pending vector. Nothing on that path
 * allocates except amortised vector growth and string copies. */
#include "store.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A subscriber's interest in one tag, kept in the tag so that a write finds
 * its watchers without a lookup. `last` is what the subscriber was last told,
 * so the deadband is measured from the last delivered value rather than the
 * last written one (otherwise a slow ramp would never pass the deadband). */
typedef struct {
    dp_sub_t *sub;
    double deadband;
    dp_value_t last; /* owned copy for DP_STR */
    uint8_t last_quality;
    bool has_last;
} watch_t;

/* The fields a write reads come first (the counts before `pub`), so that a
 * write touches as few cache lines as possible. */
typedef struct {
    uint32_t ring_cap;
    uint32_t nwatches;
    /* Every watch has been shown the current value and quality, with its
     * current deadband. A sample repeating them gets the same answer from
     * each watch as the one before (a watch's `last` changes only when it
     * passes), so it skips them without reading them: most polled values
     * do not change. Cleared when a watch is added or its deadband changes;
     * a quality change shows the value to the watches again. */
    bool seen;
    dp_tag_t pub; /* what dp_store_get() hands out; points into the fields below */
    char *name;
    char *unit; /* NULL: none (pub.unit is then "") */
    char *source;
    dp_sample_t *ring;  /* history; string values are owned copies */
    uint32_t ring_head; /* next slot to write */
    uint32_t ring_len;
    watch_t *watches; /* `first` while there is room in it, else allocated */
    uint32_t watches_cap;
    /* The first watch is kept in the tag, next to the value a write updates:
     * most tags have one watcher (their twin), and notifying it then touches
     * no other allocation. */
    watch_t first;
} tag_t;

/* Tags are allocated in blocks of this many, in handle order: tags added
 * together (one device's) sit side by side, so draining a response into the
 * store walks memory in order instead of one scattered allocation per tag. */
#define TAG_BLOCK 256

/* A growable vector of change records. */
typedef struct {
    dp_change_t *v;
    size_t n;
    size_t cap;
    size_t nstr; /* records holding an owned string, so most batches skip the free pass */
} changes_t;

struct dp_sub {
    dp_store_t *store;
    dp_store_batch_cb cb;
    void *ud;
    changes_t pending;
    changes_t spare; /* an empty buffer kept from the last delivery, for reuse */
    int *watched;    /* handles of the tags this subscriber watches */
    size_t nwatched;
    size_t watched_cap;
    dp_sub_t *prev; /* every live subscriber, for dp_store_free() */
    dp_sub_t *next;
    dp_sub_t *next_dead; /* freed during a flush, waiting to be reaped */
    bool dirty;          /* on the store's dirty list or the round being delivered */
    bool dead;
};

/* A vector of subscriber pointers. */
typedef struct {
    dp_sub_t **v;
    size_t n;
    size_t cap;
} sublist_t;

/* Name index slot: `handle` is -1 when empty. The hash is kept so that probing
 * and growing rarely touch the names themselves. */
typedef struct {
    uint32_t hash;
    int handle;
} slot_t;

struct dp_store {
    tag_t **tags; /* pointers, so dp_tag_t views stay put when the array grows */
    int ntags;
    size_t tags_cap;
    tag_t **blocks; /* TAG_BLOCK tags each; the last one is filled up to ntags */
    size_t nblocks;
    slot_t *index;
    size_t index_cap; /* power of two */
    dp_sub_t *subs;   /* live subscribers */
    sublist_t dirty;  /* subscribers with pending records, in the order they got them */
    sublist_t round;  /* the list being delivered by dp_store_flush() */
    dp_sub_t *dead;   /* subscribers freed during a flush */
    size_t pending_total;
    bool flushing;
    dp_store_write_cb on_write;
    void *on_write_ud;
};

static const char *const quality_names[] = {"good", "uncertain", "bad"};

const char *dp_quality_name(int quality)
{
    if (quality < 0 || quality >= (int)DP_ARRAY_LEN(quality_names))
        return "invalid";
    return quality_names[quality];
}

int dp_quality_parse(const char *s)
{
    if (s == NULL)
        return DP_EINVAL;
    for (size_t i = 0; i < DP_ARRAY_LEN(quality_names); i++) {
        if (strcmp(s, quality_names[i]) == 0)
            return (int)i;
    }
    return DP_EINVAL;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* "twin.tag": at least one dot, no empty part, nothing that would need
 * quoting in a log line or a Lua expression. */
static bool valid_name(const char *name)
{
    if (name == NULL || *name == '\0')
        return false;
    bool dot = false;
    bool part_empty = true;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        if (*p <= ' ' || *p == 0x7f)
            return false;
        if (*p == '.') {
            if (part_empty)
                return false;
            dot = true;
            part_empty = true;
        } else {
            part_empty = false;
        }
    }
    return dot && !part_empty;
}

static void value_free(dp_value_t *v)
{
    if (v->type == DP_STR)
        free(v->u.s);
    v->type = DP_NIL;
}

/* Returns a copy of v that owns its string. */
static dp_value_t value_copy(const dp_value_t *v)
{
    dp_value_t c = *v;
    if (v->type == DP_STR)
        c.u.s = dp_xstrdup(v->u.s);
    return c;
}

static bool valid_value(const dp_value_t *v)
{
    switch (v->type) {
    case DP_NUM:
    case DP_BOOL:
        return true;
    case DP_STR:
        return v->u.s != NULL;
    default:
        return false;
    }
}

static tag_t *tag_at(const dp_store_t *store, int tag)
{
    if (store == NULL || tag < 0 || tag >= store->ntags)
        return NULL;
    return store->tags[tag];
}

/* Index of the slot holding `name`, or of the empty slot where it would go. */
static size_t index_probe(const dp_store_t *store, const char *name, uint32_t hash)
{
    size_t mask = store->index_cap - 1;
    size_t i = hash & mask;
    for (;;) {
        const slot_t *s = &store->index[i];
        if (s->handle < 0)
            return i;
        if (s->hash == hash && strcmp(store->tags[s->handle]->name, name) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

static void index_grow(dp_store_t *store)
{
    size_t old_cap = store->index_cap;
    slot_t *old = store->index;
    store->index_cap = old_cap ? old_cap * 2 : 64;
    store->index = dp_xmalloc(store->index_cap * sizeof(slot_t));
    for (size_t i = 0; i < store->index_cap; i++)
        store->index[i].handle = -1;
    size_t mask = store->index_cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].handle < 0)
            continue;
        size_t j = old[i].hash & mask;
        while (store->index[j].handle >= 0)
            j = (j + 1) & mask;
        store->index[j] = old[i];
    }
    free(old);
}

dp_store_t *dp_store_new(void)
{
    dp_store_t *store = dp_xcalloc(1, sizeof(*store));
    index_grow(store);
    return store;
}

static void changes_clear(changes_t *c)
{
    if (c->nstr > 0) {
        for (size_t i = 0; i < c->n; i++)
            value_free(&c->v[i].v);
    }
    c->n = 0;
    c->nstr = 0;
}

static void changes_free(changes_t *c)
{
    changes_clear(c);
    free(c->v);
    c->v = NULL;
    c->cap = 0;
}

static void sublist_push(sublist_t *l, dp_sub_t *sub)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = dp_xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = sub;
}

/* Removes every occurrence of `sub`, keeping the order of the rest. */
static void sublist_remove(sublist_t *l, const dp_sub_t *sub)
{
    size_t j = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i] != sub)
            l->v[j++] = l->v[i];
    }
    l->n = j;
}

static void tag_free(tag_t *t)
{
    free(t->name);
    free(t->unit);
    free(t->source);
    value_free(&t->pub.v);
    for (uint32_t i = 0; i < t->ring_cap; i++)
        value_free(&t->ring[i].v);
    free(t->ring);
    for (uint32_t i = 0; i < t->nwatches; i++)
        value_free(&t->watches[i].last);
    if (t->watches != &t->first)
        free(t->watches);
}

static void sub_release(dp_sub_t *sub)
{
    changes_free(&sub->pending);
    changes_free(&sub->spare);
    free(sub->watched);
    free(sub);
}

void dp_store_free(dp_store_t *store)
{
    if (store == NULL)
        return;
    while (store->subs != NULL) {
        dp_sub_t *sub = store->subs;
        store->subs = sub->next;
        sub_release(sub);
    }
    while (store->dead != NULL) {
        dp_sub_t *sub = store->dead;
        store->dead = sub->next_dead;
        sub_release(sub);
    }
    for (int i = 0; i < store->ntags; i++)
        tag_free(store->tags[i]);
    for (size_t i = 0; i < store->nblocks; i++)
        free(store->blocks[i]);
    free(store->blocks);
    free(store->tags);
    free(store->index);
    free(store->dirty.v);
    free(store->round.v);
    free(store);
}

int dp_store_add(dp_store_t *store, const char *name, const dp_tag_opts_t *opts)
{
    if (store == NULL || !valid_name(name))
        return DP_EINVAL;
    /* The default deadband ends up in dp_store_watch(), which refuses the same. */
    if (opts != NULL && !(opts->deadband >= 0))
        return DP_EINVAL;
    uint32_t hash = fnv1a(name);
    size_t slot = index_probe(store, name, hash);
    if (store->index[slot].handle >= 0)
        return DP_EEXIST;
    /* Handles are ints, so the store cannot hold more than INT_MAX tags. */
    if (store->ntags == INT_MAX)
        return DP_ENOMEM;
    /* Grow at 70% load so probe sequences stay short. */
    if (((size_t)store->ntags + 1) * 10 > store->index_cap * 7) {
        index_grow(store);
        slot = index_probe(store, name, hash);
    }
    if ((size_t)store->ntags == store->tags_cap) {
        store->tags_cap = store->tags_cap ? store->tags_cap * 2 : 64;
        store->tags = dp_xrealloc(store->tags, store->tags_cap * sizeof(tag_t *));
    }

    if ((size_t)store->ntags == store->nblocks * TAG_BLOCK) {
        store->blocks = dp_xrealloc(store->blocks, (store->nblocks + 1) * sizeof(tag_t *));
        store->blocks[store->nblocks++] = dp_xcalloc(TAG_BLOCK, sizeof(tag_t));
    }
    tag_t *t = &store->blocks[store->nblocks - 1][store->ntags % TAG_BLOCK];
    t->name = dp_xstrdup(name);
    if (opts != NULL) {
        if (opts->unit != NULL && opts->unit[0] != '\0')
            t->unit = dp_xstrdup(opts->unit);
        if (opts->source != NULL)
            t->source = dp_xstrdup(opts->source);
        t->pub.flags = opts->flags;
        t->pub.deadband = opts->deadband;
        if (opts->history > 0) {
            t->ring = dp_xcalloc(opts->history, sizeof(dp_sample_t));
            t->ring_cap = opts->history;
        }
    }
    t->pub.name = t->name;
    t->pub.unit = t->unit != NULL ? t->unit : "";
    t->pub.source = t->source;
    t->pub.v.type = DP_NIL;
    /* A tag nobody has written has no usable value, which is what BAD says. */
    t->pub.quality = DP_Q_BAD;

    int handle = store->ntags++;
    store->tags[handle] = t;
    store->index[slot].hash = hash;
    store->index[slot].handle = handle;
    return handle;
}

int dp_store_find(const dp_store_t *store, const char *name)
{
    if (store == NULL || name == NULL)
        return DP_ENOENT;
    size_t slot = index_probe(store, name, fnv1a(name));
    int handle = store->index[slot].handle;
    return handle >= 0 ? handle : DP_ENOENT;
}

int dp_store_count(const dp_store_t *store)
{
    return store != NULL ? store->ntags : 0;
}

const dp_tag_t *dp_store_get(const dp_store_t *store, int tag)
{
    tag_t *t = tag_at(store, tag);
    return t != NULL ? &t->pub : NULL;
}

int dp_store_set_unit(dp_store_t *store, int tag, const char *unit)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL)
        return DP_EINVAL;
    /* Copy before freeing: the caller may pass the tag's own unit back. */
    char *copy = unit != NULL && unit[0] != '\0' ? dp_xstrdup(unit) : NULL;
    free(t->unit);
    t->unit = copy;
    t->pub.unit = copy != NULL ? copy : "";
    return DP_OK;
}

int dp_store_set_history(dp_store_t *store, int tag, uint32_t length)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL)
        return DP_EINVAL;
    if (length == t->ring_cap)
        return DP_OK;
    dp_sample_t *ring = length > 0 ? dp_xcalloc(length, sizeof(dp_sample_t)) : NULL;
    uint32_t keep = t->ring_len < length ? t->ring_len : length;
    /* Walk oldest to newest: the oldest `ring_len - keep` samples are dropped,
     * the rest move to the front of the new ring in order. */
    for (uint32_t i = 0; i < t->ring_len; i++) {
        uint32_t age = t->ring_len - 1 - i; /* 0 = newest */
        dp_sample_t *s = &t->ring[((size_t)t->ring_head + t->ring_cap - 1 - age) % t->ring_cap];
        if (age < keep)
            ring[keep - 1 - age] = *s;
        else
            value_free(&s->v);
    }
    free(t->ring);
    t->ring = ring;
    t->ring_cap = length;
    t->ring_len = keep;
    t->ring_head = length > 0 ? keep % length : 0;
    return DP_OK;
}

static void ring_push(tag_t *t, const dp_value_t *v, dp_time_t ts, uint8_t quality)
{
    dp_sample_t *s = &t->ring[t->ring_head];
    /* The slot is DP_NIL until the ring first wraps, so this frees exactly the
     * sample being overwritten. */
    value_free(&s->v);
    s->ts = ts;
    s->v = value_copy(v);
    s->quality = quality;
    if (++t->ring_head == t->ring_cap)
        t->ring_head = 0;
    if (t->ring_len < t->ring_cap)
        t->ring_len++;
}

/* Whether a watcher that was last told `w->last` must hear about (v, q). */
static bool watch_passes(const watch_t *w, const dp_value_t *v, uint8_t quality)
{
    if (!w->has_last || w->last_quality != quality || w->last.type != v->type)
        return true;
    switch (v->type) {
    case DP_NUM: {
        double a = v->u.n;
        double b = w->last.u.n;
        /* NaN compares unequal to itself; treat NaN to NaN as no change and a
         * move into or out of NaN as a change whatever the deadband. */
        if (isnan(a) || isnan(b))
            return isnan(a) != isnan(b);
        return fabs(a - b) > w->deadband || (w->deadband == 0 && a != b);
    }
    case DP_BOOL:
        return v->u.b != w->last.u.b;
    case DP_STR:
        return strcmp(v->u.s, w->last.u.s) != 0;
    default:
        return false;
    }
}

static void sub_enqueue(dp_store_t *store, dp_sub_t *sub, int tag, const dp_value_t *v,
                        dp_time_t ts, uint8_t quality)
{
    changes_t *c = &sub->pending;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->v = dp_xrealloc(c->v, c->cap * sizeof(dp_change_t));
    }
    dp_change_t *rec = &c->v[c->n++];
    rec->tag = tag;
    rec->v = value_copy(v);
    rec->ts = ts;
    rec->quality = quality;
    if (v->type == DP_STR)
        c->nstr++;
    store->pending_total++;
    if (!sub->dirty) {
        sub->dirty = true;
        sublist_push(&store->dirty, sub);
    }
}

bool dp_value_same(const dp_value_t *a, const dp_value_t *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case DP_NUM:
        return a->u.n == b->u.n || (isnan(a->u.n) && isnan(b->u.n));
    case DP_BOOL:
        return a->u.b == b->u.b;
    case DP_STR:
        return strcmp(a->u.s, b->u.s) == 0;
    default:
        return true;
    }
}

static void notify(dp_store_t *store, tag_t *t, int tag, const dp_value_t *v, dp_time_t ts,
                   uint8_t quality)
{
    for (uint32_t i = 0; i < t->nwatches; i++) {
        watch_t *w = &t->watches[i];
        if (!watch_passes(w, v, quality))
            continue;
        sub_enqueue(store, w->sub, tag, v, ts, quality);
        if (v->type == DP_STR || w->last.type == DP_STR) {
            dp_value_t copy = value_copy(v);
            value_free(&w->last);
            w->last = copy;
        } else {
            w->last = *v;
        }
        w->last_quality = quality;
        w->has_last = true;
    }
    t->seen = true;
}

int dp_store_write(dp_store_t *store, int tag, const dp_value_t *v, dp_time_t ts, int quality)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL || v == NULL || quality < DP_Q_GOOD || quality > DP_Q_BAD || !valid_value(v))
        return DP_EINVAL;
    uint8_t q = (uint8_t)quality;
    bool repeat = t->seen && q == t->pub.quality && dp_value_same(v, &t->pub.v);
    if (v->type == DP_STR || t->pub.v.type == DP_STR) {
        /* Copy before freeing: v may be the tag's own current value. */
        dp_value_t copy = value_copy(v);
        value_free(&t->pub.v);
        t->pub.v = copy;
    } else {
        t->pub.v = *v;
    }
    t->pub.ts = ts;
    t->pub.quality = q;
    t->pub.reason = NULL;
    t->pub.writes++;
    if (t->ring_cap > 0)
        ring_push(t, &t->pub.v, ts, q);
    if (t->nwatches > 0 && !repeat)
        notify(store, t, tag, &t->pub.v, ts, q);
    if (store->on_write != NULL)
        store->on_write(tag, &t->pub.v, ts, q, store->on_write_ud);
    return DP_OK;
}

void dp_store_on_write(dp_store_t *store, dp_store_write_cb cb, void *ud)
{
    store->on_write = cb;
    store->on_write_ud = ud;
}

int dp_store_set_quality(dp_store_t *store, int tag, int quality)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL || quality < DP_Q_GOOD || quality > DP_Q_BAD)
        return DP_EINVAL;
    if (t->pub.quality == quality)
        return DP_OK;
    t->pub.quality = (uint8_t)quality;
    t->pub.reason = NULL;
    /* Without a value there is nothing a watcher could be handed. */
    if (t->pub.v.type != DP_NIL && t->nwatches > 0)
        notify(store, t, tag, &t->pub.v, t->pub.ts, t->pub.quality);
    if (store->on_write != NULL)
        store->on_write(tag, NULL, t->pub.ts, quality, store->on_write_ud);
    return DP_OK;
}

int dp_store_set_reason(dp_store_t *store, int tag, const char *reason)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL)
        return DP_EINVAL;
    t->pub.reason = reason;
    return DP_OK;
}

size_t dp_store_history_len(const dp_store_t *store, int tag)
{
    tag_t *t = tag_at(store, tag);
    return t != NULL ? t->ring_len : 0;
}

const dp_sample_t *dp_store_history_at(const dp_store_t *store, int tag, size_t i)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL || i >= t->ring_len)
        return NULL;
    return &t->ring[((size_t)t->ring_head + t->ring_cap - 1 - i) % t->ring_cap];
}

size_t dp_store_history(const dp_store_t *store, int tag, dp_sample_t *out, size_t max)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL || out == NULL)
        return 0;
    size_t n = t->ring_len < max ? t->ring_len : max;
    for (size_t k = 0; k < n; k++)
        out[k] = t->ring[((size_t)t->ring_head + t->ring_cap - n + k) % t->ring_cap];
    return n;
}

dp_sub_t *dp_store_sub_new(dp_store_t *store, dp_store_batch_cb cb, void *ud)
{
    if (store == NULL || cb == NULL)
        return NULL;
    dp_sub_t *sub = dp_xcalloc(1, sizeof(*sub));
    sub->store = store;
    sub->cb = cb;
    sub->ud = ud;
    sub->next = store->subs;
    if (store->subs != NULL)
        store->subs->prev = sub;
    store->subs = sub;
    return sub;
}

static void tag_unwatch(tag_t *t, const dp_sub_t *sub)
{
    for (uint32_t i = 0; i < t->nwatches; i++) {
        if (t->watches[i].sub != sub)
            continue;
        value_free(&t->watches[i].last);
        /* Keep the remaining watches in order, so subscribers keep being
         * queued (and so called back) in the order they started watching. */
        memmove(&t->watches[i], &t->watches[i + 1], (t->nwatches - i - 1) * sizeof(watch_t));
        t->nwatches--;
        return;
    }
}

void dp_store_unwatch_all(dp_store_t *store, dp_sub_t *sub)
{
    if (store == NULL || sub == NULL)
        return;
    for (size_t i = 0; i < sub->nwatched; i++)
        tag_unwatch(store->tags[sub->watched[i]], sub);
    sub->nwatched = 0;
}

void dp_store_sub_free(dp_store_t *store, dp_sub_t *sub)
{
    if (store == NULL || sub == NULL || sub->dead)
        return;
    dp_store_unwatch_all(store, sub);
    store->pending_total -= sub->pending.n;
    changes_free(&sub->pending);
    changes_free(&sub->spare);
    if (sub->prev != NULL)
        sub->prev->next = sub->next;
    else
        store->subs = sub->next;
    if (sub->next != NULL)
        sub->next->prev = sub->prev;
    sub->prev = sub->next = NULL;
    if (store->flushing) {
        /* The flush may still hold this pointer (in the round being delivered,
         * on the dirty list, or as the subscriber whose callback is running),
         * so only mark it; dp_store_flush() releases it before returning. */
        sub->dead = true;
        sub->next_dead = store->dead;
        store->dead = sub;
        return;
    }
    if (sub->dirty)
        sublist_remove(&store->dirty, sub);
    sub_release(sub);
}

int dp_store_watch(dp_store_t *store, dp_sub_t *sub, int tag, double deadband)
{
    tag_t *t = tag_at(store, tag);
    if (t == NULL || sub == NULL || sub->dead || !(deadband >= 0))
        return DP_EINVAL;
    for (uint32_t i = 0; i < t->nwatches; i++) {
        if (t->watches[i].sub == sub) {
            t->watches[i].deadband = deadband;
            t->seen = false;
            return DP_OK;
        }
    }
    if (t->watches_cap == 0) {
        t->watches = &t->first;
        t->watches_cap = 1;
    } else if (t->nwatches == t->watches_cap) {
        t->watches_cap *= 2;
        if (t->watches == &t->first) {
            t->watches = dp_xmalloc(t->watches_cap * sizeof(watch_t));
            t->watches[0] = t->first;
        } else {
            t->watches = dp_xrealloc(t->watches, t->watches_cap * sizeof(watch_t));
        }
    }
    /* A new watcher starts from the tag's current value, as if it had been
     * told it: the next write notifies only if it is a change from that.
     * After a restart (values restored from a snapshot) or a reload, an
     * unchanged sample is then not taken for a change, as it would not have
     * been in a run without the restart. */
    watch_t w = {.sub = sub, .deadband = deadband};
    if (t->pub.v.type != DP_NIL) {
        w.last = value_copy(&t->pub.v);
        w.last_quality = t->pub.quality;
        w.has_last = true;
    }
    t->watches[t->nwatches++] = w;
    t->seen = false;
    if (sub->nwatched == sub->watched_cap) {
        sub->watched_cap = sub->watched_cap ? sub->watched_cap * 2 : 8;
        sub->watched = dp_xrealloc(sub->watched, sub->watched_cap * sizeof(int));
    }
    sub->watched[sub->nwatched++] = tag;
    return DP_OK;
}

size_t dp_store_sub_pending(const dp_sub_t *sub)
{
    return sub != NULL ? sub->pending.n : 0;
}

bool dp_store_dirty(const dp_store_t *store)
{
    return store != NULL && store->pending_total > 0;
}

/* Hands one subscriber its queued records. The pending vector is swapped out
 * first so that records queued by the callback (its own writes, or writes of
 * other callbacks in this round) land in a fresh vector for the next round. */
static size_t deliver(dp_store_t *store, dp_sub_t *sub)
{
    sub->dirty = false;
    changes_t batch = sub->pending;
    sub->pending = sub->spare;
    sub->spare = (changes_t){0};
    if (batch.n == 0) {
        sub->spare = batch;
        return 0;
    }
    store->pending_total -= batch.n;
    sub->cb(sub, batch.v, batch.n, sub->ud);
    size_t n = batch.n;
    /* The callback may have freed the subscriber; it is still allocated (it
     * sits on the dead list), so reading `dead` is safe. */
    if (sub->dead) {
        changes_free(&batch);
    } else {
        changes_clear(&batch);
        sub->spare = batch;
    }
    return n;
}

size_t dp_store_flush(dp_store_t *store, int max_rounds)
{
    /* A callback that flushes would deliver records out of order with the
     * batch it is handling, so nested flushes do nothing. */
    if (store == NULL || store->flushing)
        return 0;
    if (max_rounds <= 0)
        max_rounds = 1;
    store->flushing = true;
    size_t total = 0;
    for (int r = 0; r < max_rounds && store->dirty.n > 0; r++) {
        sublist_t round = store->dirty;
        store->dirty = store->round;
        store->round = round;
        for (size_t i = 0; i < round.n; i++) {
            dp_sub_t *sub = round.v[i];
            if (!sub->dead)
                total += deliver(store, sub);
        }
        store->round.n = 0;
    }
    store->flushing = false;
    if (store->dead != NULL) {
        while (store->dead != NULL) {
            dp_sub_t *sub = store->dead;
            store->dead = sub->next_dead;
            if (sub->dirty)
                sublist_remove(&store->dirty, sub);
            sub_release(sub);
        }
    }
    return total;
}
