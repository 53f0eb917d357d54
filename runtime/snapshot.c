/* Snapshots of the store, the twins' state and the alarm list. See
 * snapshot.h.
 *
 * Body (msgpack): [2, seq, ts, plant, tags, twins, alarms, guard] where
 *   tags   = [[name, flags, history, cur_ts, cur_value, cur_quality,
 *              [[ts, value, quality], ...oldest first]], ...]
 *   twins  = [[name, state (bin, msgpack of the twin's `state`)], ...]
 *   alarms = [[twin, name, message, group, severity, priority, limit, state,
 *              active, shelved, shelved_until, suppressed, first_out, since,
 *              value, acked_by], ...]
 *   guard  = [writes enabled, shadow mode]
 * Version 1 (no alarms, no guard) is still read. */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "command.h"
#include "journal.h"
#include "lmsgpack.h"
#include "log.h"
#include "plant.h"
#include "twin.h"

#define MAGIC     "DPSNAP1\n"
#define MAGIC_LEN 8
#define HDR_LEN   (MAGIC_LEN + 8)

static char *xstrndup(const char *s, size_t n)
{
    char *d = dp_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static dp_value_t value_dup(const dp_value_t *v)
{
    dp_value_t c = *v;
    if (v->type == DP_STR)
        c.u.s = dp_xstrdup(v->u.s);
    return c;
}

static void value_free(dp_value_t *v)
{
    if (v->type == DP_STR)
        free(v->u.s);
    v->type = DP_NIL;
}

void dp_snapshot_free(dp_snapshot_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->ntags; i++) {
        dp_snap_tag_t *t = &s->tags[i];
        free(t->name);
        value_free(&t->cur.v);
        for (size_t k = 0; k < t->nhist; k++)
            value_free(&t->hist[k].v);
        free(t->hist);
    }
    for (size_t i = 0; i < s->ntwins; i++) {
        free(s->twins[i].name);
        free(s->twins[i].state);
    }
    for (size_t i = 0; i < s->nalarms; i++) {
        dp_snap_alarm_t *a = &s->alarms[i];
        free(a->twin);
        free(a->name);
        free(a->message);
        free(a->group);
    }
    free(s->tags);
    free(s->twins);
    free(s->alarms);
    free(s->plant);
    free(s);
}

/* Points the entry's info at its owned strings. */
static void alarm_point(dp_snap_alarm_t *a)
{
    a->info.twin = a->twin;
    a->info.name = a->name;
    a->info.message = a->message;
    a->info.group = a->group;
}

int dp_snapshot_capture(struct dp_plant *plant, uint64_t seq, dp_snapshot_t **out, char **err)
{
    *out = NULL;
    dp_snapshot_t *s = dp_xcalloc(1, sizeof *s);
    s->seq = seq;
    s->ts = dp_clock_now(dp_plant_clock(plant));
    s->plant = dp_xstrdup(dp_plant_name(plant));
    int n = dp_plant_twin_count(plant);
    s->twins = dp_xcalloc((size_t)n + 1, sizeof *s->twins);
    for (int i = 0; i < n; i++) {
        dp_twin_t *tw = dp_plant_twin_at(plant, i);
        dp_snap_twin_t *st = &s->twins[s->ntwins];
        char *inner = NULL;
        if (dp_twin_sandbox(tw) == NULL)
            continue; /* never loaded: nothing to keep */
        int rc = dp_twin_state(tw, &st->state, &st->len, &inner);
        if (rc < 0) {
            dp_fail(err, rc, "twin %s: %s", dp_twin_name(tw), inner ? inner : dp_strerror(rc));
            free(inner);
            dp_snapshot_free(s);
            return rc;
        }
        st->name = dp_xstrdup(dp_twin_name(tw));
        s->ntwins++;
    }
    s->has_guard = true;
    s->writes = dp_guard_writes_enabled(dp_plant_guard(plant));
    s->shadow = dp_guard_shadow(dp_plant_guard(plant));
    dp_alarms_t *alarms = dp_plant_alarms(plant);
    int nal = dp_alarms_count(alarms);
    s->alarms = dp_xcalloc((size_t)nal + 1, sizeof *s->alarms);
    for (int i = 0; i < nal; i++) {
        dp_alarm_info_t info;
        if (dp_alarms_get(alarms, i, &info) < 0 || info.retired)
            continue;
        dp_snap_alarm_t *a = &s->alarms[s->nalarms++];
        a->info = info;
        a->twin = dp_xstrdup(info.twin);
        a->name = dp_xstrdup(info.name);
        a->message = dp_xstrdup(info.message);
        a->group = dp_xstrdup(info.group);
        alarm_point(a);
    }
    dp_store_t *store = dp_plant_store(plant);
    int ntags = dp_store_count(store);
    s->tags = dp_xcalloc((size_t)ntags + 1, sizeof *s->tags);
    for (int id = 0; id < ntags; id++) {
        const dp_tag_t *t = dp_store_get(store, id);
        dp_snap_tag_t *st = &s->tags[s->ntags++];
        st->name = dp_xstrdup(t->name);
        st->flags = t->flags;
        st->cur = (dp_sample_t){.ts = t->ts, .v = value_dup(&t->v), .quality = t->quality};
        size_t nh = dp_store_history_len(store, id);
        st->history = (uint32_t)nh;
        if (nh > 0) {
            st->hist = dp_xcalloc(nh, sizeof *st->hist);
            st->nhist = dp_store_history(store, id, st->hist, nh);
            for (size_t k = 0; k < st->nhist; k++)
                st->hist[k].v = value_dup(&st->hist[k].v);
        }
    }
    *out = s;
    return 0;
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static int buf_write(void *data, const char *p, size_t n)
{
    buf_t *b = data;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->data = dp_xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void pack_sample(msgpack_packer *pk, const dp_sample_t *s)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int64(pk, s->ts);
    dp_mp_pack_value(pk, &s->v);
    msgpack_pack_uint8(pk, s->quality);
}

void dp_snapshot_encode(const dp_snapshot_t *s, char **out, size_t *len)
{
    buf_t b = {0};
    char hdr[HDR_LEN] = {0};
    buf_write(&b, hdr, HDR_LEN);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_int(&pk, 2);
    msgpack_pack_uint64(&pk, s->seq);
    msgpack_pack_int64(&pk, s->ts);
    dp_mp_pack_str(&pk, s->plant != NULL ? s->plant : "");
    msgpack_pack_array(&pk, s->ntags);
    for (size_t i = 0; i < s->ntags; i++) {
        const dp_snap_tag_t *t = &s->tags[i];
        msgpack_pack_array(&pk, 7);
        dp_mp_pack_str(&pk, t->name);
        msgpack_pack_uint32(&pk, t->flags);
        msgpack_pack_uint32(&pk, t->history);
        msgpack_pack_int64(&pk, t->cur.ts);
        dp_mp_pack_value(&pk, &t->cur.v);
        msgpack_pack_uint8(&pk, t->cur.quality);
        msgpack_pack_array(&pk, t->nhist);
        for (size_t k = 0; k < t->nhist; k++)
            pack_sample(&pk, &t->hist[k]);
    }
    msgpack_pack_array(&pk, s->ntwins);
    for (size_t i = 0; i < s->ntwins; i++) {
        msgpack_pack_array(&pk, 2);
        dp_mp_pack_str(&pk, s->twins[i].name);
        msgpack_pack_bin(&pk, s->twins[i].len);
        msgpack_pack_bin_body(&pk, s->twins[i].state, s->twins[i].len);
    }
    msgpack_pack_array(&pk, s->nalarms);
    for (size_t i = 0; i < s->nalarms; i++) {
        const dp_alarm_info_t *a = &s->alarms[i].info;
        msgpack_pack_array(&pk, 16);
        dp_mp_pack_str(&pk, a->twin);
        dp_mp_pack_str(&pk, a->name);
        dp_mp_pack_str(&pk, a->message);
        dp_mp_pack_str(&pk, a->group);
        msgpack_pack_int(&pk, (int)a->severity);
        msgpack_pack_int(&pk, a->priority);
        msgpack_pack_double(&pk, a->limit);
        msgpack_pack_int(&pk, (int)a->state);
        dp_mp_pack_bool(&pk, a->active);
        dp_mp_pack_bool(&pk, a->shelved);
        msgpack_pack_int64(&pk, a->shelved_until);
        dp_mp_pack_bool(&pk, a->suppressed);
        dp_mp_pack_bool(&pk, a->first_out);
        msgpack_pack_int64(&pk, a->since);
        msgpack_pack_double(&pk, a->value);
        dp_mp_pack_str(&pk, a->acked_by);
    }
    msgpack_pack_array(&pk, 2);
    dp_mp_pack_bool(&pk, s->writes);
    dp_mp_pack_bool(&pk, s->shadow);
    size_t body = b.len - HDR_LEN;
    memcpy(b.data, MAGIC, MAGIC_LEN);
    uint32_t blen = (uint32_t)body, crc = dp_crc32(0, b.data + HDR_LEN, body);
    for (int i = 0; i < 4; i++) {
        b.data[MAGIC_LEN + i] = (char)(blen >> (8 * i));
        b.data[MAGIC_LEN + 4 + i] = (char)(crc >> (8 * i));
    }
    *out = b.data;
    *len = b.len;
}

/* ---- decoding ------------------------------------------------------------ */

static bool get_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

static bool get_value(const msgpack_object *o, dp_value_t *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        v->type = DP_NIL;
        return true;
    case MSGPACK_OBJECT_BOOLEAN:
        *v = dp_bool(o->via.boolean);
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = dp_num(o->via.f64);
        return true;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = dp_num((double)o->via.u64);
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = dp_num((double)o->via.i64);
        return true;
    case MSGPACK_OBJECT_STR:
        v->type = DP_STR;
        v->u.s = xstrndup(o->via.str.ptr, o->via.str.size);
        return true;
    default:
        return false;
    }
}

static bool get_sample(const msgpack_object *o, dp_sample_t *s)
{
    int64_t ts, q;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 3)
        return false;
    const msgpack_object *f = o->via.array.ptr;
    if (!get_i64(&f[0], &ts) || !get_i64(&f[2], &q) || q < 0 || q > 2 || !get_value(&f[1], &s->v))
        return false;
    s->ts = ts;
    s->quality = (uint8_t)q;
    return true;
}

static bool get_double(const msgpack_object *o, double *out)
{
    dp_value_t v;
    if (o->type == MSGPACK_OBJECT_STR || !get_value(o, &v) || v.type != DP_NUM)
        return false;
    *out = v.u.n;
    return true;
}

static bool get_bool(const msgpack_object *o, bool *out)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *out = o->via.boolean;
    return true;
}

static bool is_str(const msgpack_object *o, size_t max)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size <= max;
}

static const char *decode_alarm(const msgpack_object *o, dp_snap_alarm_t *a)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 16)
        return "malformed alarm entry";
    const msgpack_object *g = o->via.array.ptr;
    int64_t severity, priority, state;
    dp_alarm_info_t *i = &a->info;
    if (!is_str(&g[0], 4096) || !is_str(&g[1], 4096) || !is_str(&g[2], 65536) ||
        !is_str(&g[3], 4096) || !get_i64(&g[4], &severity) || severity < DP_SEV_LOW ||
        severity > DP_SEV_CRITICAL || !get_i64(&g[5], &priority) || priority < 1 || priority > 4 ||
        !get_double(&g[6], &i->limit) || !get_i64(&g[7], &state) || state < DP_ALARM_NORMAL ||
        state > DP_ALARM_RTN_UNACKED || !get_bool(&g[8], &i->active) ||
        !get_bool(&g[9], &i->shelved) || !get_i64(&g[10], &i->shelved_until) ||
        !get_bool(&g[11], &i->suppressed) || !get_bool(&g[12], &i->first_out) ||
        !get_i64(&g[13], &i->since) || !get_double(&g[14], &i->value) || !is_str(&g[15], 63))
        return "malformed alarm entry";
    i->severity = (dp_severity_t)severity;
    i->priority = (int)priority;
    i->state = (dp_alarm_state_t)state;
    a->twin = xstrndup(g[0].via.str.ptr, g[0].via.str.size);
    a->name = xstrndup(g[1].via.str.ptr, g[1].via.str.size);
    a->message = xstrndup(g[2].via.str.ptr, g[2].via.str.size);
    a->group = xstrndup(g[3].via.str.ptr, g[3].via.str.size);
    snprintf(i->acked_by, sizeof i->acked_by, "%.*s", (int)g[15].via.str.size, g[15].via.str.ptr);
    alarm_point(a);
    return NULL;
}

static const char *decode_body(const msgpack_object *o, dp_snapshot_t *s)
{
    int64_t version, seq, ts;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 6)
        return "the body is not a snapshot array";
    const msgpack_object *f = o->via.array.ptr;
    if (!get_i64(&f[0], &version) || version < 1 || version > 2)
        return "unknown snapshot version";
    if (o->via.array.size != (version == 1 ? 6u : 8u))
        return "the body is not a snapshot array";
    if (version == 2 &&
        (f[6].type != MSGPACK_OBJECT_ARRAY || f[7].type != MSGPACK_OBJECT_ARRAY ||
         f[7].via.array.size != 2 || !get_bool(&f[7].via.array.ptr[0], &s->writes) ||
         !get_bool(&f[7].via.array.ptr[1], &s->shadow)))
        return "malformed snapshot header fields";
    s->has_guard = version == 2;
    if (!get_i64(&f[1], &seq) || seq < 0 || !get_i64(&f[2], &ts) ||
        f[3].type != MSGPACK_OBJECT_STR || f[4].type != MSGPACK_OBJECT_ARRAY ||
        f[5].type != MSGPACK_OBJECT_ARRAY)
        return "malformed snapshot header fields";
    s->seq = (uint64_t)seq;
    s->ts = ts;
    s->plant = xstrndup(f[3].via.str.ptr, f[3].via.str.size);
    const msgpack_object_array *tags = &f[4].via.array;
    s->tags = dp_xcalloc(tags->size + 1, sizeof *s->tags);
    for (uint32_t i = 0; i < tags->size; i++) {
        const msgpack_object *t = &tags->ptr[i];
        if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size != 7)
            return "malformed tag entry";
        const msgpack_object *g = t->via.array.ptr;
        int64_t flags, hist, cts, cq;
        if (g[0].type != MSGPACK_OBJECT_STR || !get_i64(&g[1], &flags) || !get_i64(&g[2], &hist) ||
            hist < 0 || hist > 10000000 || !get_i64(&g[3], &cts) || !get_i64(&g[5], &cq) ||
            cq < 0 || cq > 2 || g[6].type != MSGPACK_OBJECT_ARRAY)
            return "malformed tag entry";
        dp_snap_tag_t *st = &s->tags[s->ntags++];
        st->name = xstrndup(g[0].via.str.ptr, g[0].via.str.size);
        st->flags = (uint32_t)flags;
        st->history = (uint32_t)hist;
        st->cur.ts = cts;
        st->cur.quality = (uint8_t)cq;
        if (!get_value(&g[4], &st->cur.v))
            return "malformed tag value";
        const msgpack_object_array *h = &g[6].via.array;
        st->hist = dp_xcalloc(h->size + 1, sizeof *st->hist);
        for (uint32_t k = 0; k < h->size; k++) {
            if (!get_sample(&h->ptr[k], &st->hist[st->nhist]))
                return "malformed history sample";
            st->nhist++;
        }
    }
    const msgpack_object_array *twins = &f[5].via.array;
    s->twins = dp_xcalloc(twins->size + 1, sizeof *s->twins);
    for (uint32_t i = 0; i < twins->size; i++) {
        const msgpack_object *t = &twins->ptr[i];
        if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size != 2 ||
            t->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
            t->via.array.ptr[1].type != MSGPACK_OBJECT_BIN)
            return "malformed twin entry";
        dp_snap_twin_t *st = &s->twins[s->ntwins++];
        const msgpack_object *g = t->via.array.ptr;
        st->name = xstrndup(g[0].via.str.ptr, g[0].via.str.size);
        st->len = g[1].via.bin.size;
        st->state = dp_xmalloc(st->len ? st->len : 1);
        memcpy(st->state, g[1].via.bin.ptr, st->len);
    }
    if (version == 1)
        return NULL;
    const msgpack_object_array *alarms = &f[6].via.array;
    s->alarms = dp_xcalloc(alarms->size + 1, sizeof *s->alarms);
    for (uint32_t i = 0; i < alarms->size; i++) {
        const char *why = decode_alarm(&alarms->ptr[i], &s->alarms[s->nalarms]);
        if (why != NULL)
            return why;
        s->nalarms++;
    }
    return NULL;
}

static uint32_t le32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

int dp_snapshot_decode(const char *buf, size_t len, dp_snapshot_t **out, char **err)
{
    *out = NULL;
    if (len < HDR_LEN)
        return dp_fail(err, DP_EINVAL, "truncated (%zu bytes, the header alone is %d)", len,
                       HDR_LEN);
    if (memcmp(buf, MAGIC, MAGIC_LEN) != 0)
        return dp_fail(err, DP_EINVAL, "not a snapshot (bad magic)");
    uint32_t blen = le32(buf + MAGIC_LEN), crc = le32(buf + MAGIC_LEN + 4);
    if ((size_t)blen != len - HDR_LEN)
        return dp_fail(err, DP_EINVAL, "truncated or padded (body of %zu bytes, header says %u)",
                       len - HDR_LEN, blen);
    if (dp_crc32(0, buf + HDR_LEN, blen) != crc)
        return dp_fail(err, DP_EINVAL, "CRC does not match (flipped bytes)");
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object obj;
    size_t off = 0;
    int rc = 0;
    dp_snapshot_t *s = dp_xcalloc(1, sizeof *s);
    if (msgpack_unpack(buf + HDR_LEN, blen, &off, &zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
        off != blen) {
        rc = dp_fail(err, DP_EINVAL, "the body is not one msgpack value");
    } else {
        const char *bad = decode_body(&obj, s);
        if (bad != NULL)
            rc = dp_fail(err, DP_EINVAL, "%s", bad);
    }
    msgpack_zone_destroy(&zone);
    if (rc < 0) {
        dp_snapshot_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- files -------------------------------------------------------------- */

static int mkdir_p(const char *dir)
{
    char b[4096];
    snprintf(b, sizeof b, "%s", dir);
    for (char *p = b + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(b, 0750) < 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    return mkdir(b, 0750) < 0 && errno != EEXIST ? -errno : 0;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* Seq numbers of the snapshot files in dir, newest first. */
static size_t list_snaps(const char *dir, uint64_t **out)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != 25 || strcmp(e->d_name + 20, ".snap") != 0)
            continue;
        char *end;
        unsigned long long seq = strtoull(e->d_name, &end, 10);
        if (end != e->d_name + 20)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = dp_xrealloc(*out, cap * sizeof **out);
        }
        (*out)[n++] = seq;
    }
    closedir(d);
    if (n > 1)
        qsort(*out, n, sizeof **out, cmp_desc);
    return n;
}

int dp_snapshot_write_file(const char *dir, uint64_t seq, const char *buf, size_t len, int keep,
                           char **err)
{
    int rc = mkdir_p(dir);
    if (rc < 0)
        return dp_fail(err, DP_EIO, "snapshot: cannot create %s: %s", dir, strerror(-rc));
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%020" PRIu64 ".snap", dir, seq);
    /* A name of its own, so that a periodic snapshot still being written in
     * the threadpool and the shutdown one never share a temporary file. */
    static atomic_uint counter;
    snprintf(tmp, sizeof tmp, "%s.%u.tmp", path, atomic_fetch_add(&counter, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return dp_fail(err, DP_EIO, "snapshot: cannot create %s: %s", tmp, strerror(errno));
    size_t done = 0;
    while (done < len && rc == 0) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w < 0 && errno != EINTR)
            rc = -errno;
        else if (w > 0)
            done += (size_t)w;
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return dp_fail(err, DP_EIO, "snapshot: cannot write %s: %s", path, strerror(-rc));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    uint64_t *seqs;
    size_t n = list_snaps(dir, &seqs);
    for (size_t i = (size_t)(keep < 1 ? 1 : keep); i < n; i++) {
        snprintf(path, sizeof path, "%s/%020" PRIu64 ".snap", dir, seqs[i]);
        unlink(path);
    }
    free(seqs);
    return 0;
}

void dp_snapshot_remove_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0 && strstr(e->d_name, ".snap.")) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

int dp_snapshot_load_latest(const char *dir, dp_snapshot_t **out, char **err)
{
    *out = NULL;
    uint64_t *seqs;
    size_t n = list_snaps(dir, &seqs);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%020" PRIu64 ".snap", dir, seqs[i]);
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            dp_log_warn(NULL, "snapshot %s: cannot open: %s; skipped", path, strerror(errno));
            continue;
        }
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = dp_xmalloc(size > 0 ? (size_t)size : 1);
        size_t got = fread(buf, 1, size > 0 ? (size_t)size : 0, f);
        fclose(f);
        char *why = NULL;
        dp_snapshot_t *s = NULL;
        int rc = dp_snapshot_decode(buf, got, &s, &why);
        free(buf);
        if (rc == 0 && s->seq != seqs[i]) {
            why = dp_xasprintf("it says it covers record %" PRIu64 ", its name %" PRIu64, s->seq,
                               seqs[i]);
            dp_snapshot_free(s);
            rc = DP_EINVAL;
        }
        if (rc < 0) {
            dp_log_warn(NULL, "snapshot %s: %s; skipped (trying an older one)", path, why);
            free(why);
            continue;
        }
        free(seqs);
        *out = s;
        return 0;
    }
    free(seqs);
    (void)err;
    return DP_ENOENT;
}

int dp_snapshot_restore_store(const dp_snapshot_t *s, dp_store_t *store)
{
    int skipped = 0;
    for (size_t i = 0; i < s->ntags; i++) {
        const dp_snap_tag_t *t = &s->tags[i];
        int id = dp_store_find(store, t->name);
        if (id < 0 && (t->flags & DP_TAG_DERIVED)) {
            dp_tag_opts_t o = {.flags = DP_TAG_DERIVED, .history = t->history};
            id = dp_store_add(store, t->name, &o);
        }
        if (id < 0) {
            skipped++;
            continue;
        }
        const dp_tag_t *cur = dp_store_get(store, id);
        if (t->history > 0 && dp_store_history_len(store, id) == 0 && cur->v.type == DP_NIL &&
            t->nhist > 0) {
            /* Rings declared in the plant file keep their length; the
             * samples that fit are restored oldest first. */
            for (size_t k = 0; k < t->nhist; k++) {
                if (t->hist[k].v.type != DP_NIL)
                    dp_store_write(store, id, &t->hist[k].v, t->hist[k].ts, t->hist[k].quality);
            }
        }
        const dp_sample_t *last = t->nhist > 0 ? &t->hist[t->nhist - 1] : NULL;
        cur = dp_store_get(store, id);
        bool same =
            last != NULL && cur->v.type != DP_NIL && last->ts == t->cur.ts && cur->ts == t->cur.ts;
        if (t->cur.v.type != DP_NIL && !same)
            dp_store_write(store, id, &t->cur.v, t->cur.ts, t->cur.quality);
        if (t->cur.v.type != DP_NIL && dp_store_get(store, id)->quality != t->cur.quality)
            dp_store_set_quality(store, id, t->cur.quality);
    }
    return skipped;
}

void dp_snapshot_restore_alarms(const dp_snapshot_t *s, dp_alarms_t *alarms)
{
    for (size_t i = 0; i < s->nalarms; i++)
        dp_alarms_restore(alarms, &s->alarms[i].info);
}

const dp_snap_twin_t *dp_snapshot_twin(const dp_snapshot_t *s, const char *name)
{
    for (size_t i = 0; s != NULL && i < s->ntwins; i++) {
        if (strcmp(s->twins[i].name, name) == 0)
            return &s->twins[i];
    }
    return NULL;
}
