/* The journal: segment files of CRC-framed msgpack records, a writer thread
 * doing group commit, readers that follow, and durable cursors. See
 * journal.h for the contract and docs/journal.md for the format.
 *
 * Threads. The loop thread appends records into `buf` and, on commit, moves
 * the buffer into a batch queued for the writer thread. The writer thread
 * owns the segment files: it creates segments, writes batches, fsyncs per the
 * policy, applies retention, and publishes how far it got (`written`,
 * `durable`) under the mutex; a uv_async brings that news back to the loop,
 * which calls the durable callback. Segment rotation is decided on the loop
 * thread at append time (it knows the record boundaries) and travels in the
 * batch, so the writer never has to parse what it writes. */
#include "journal.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lmsgpack.h"
#include "log.h"

#define MAGIC           "DPJRNL1\n"
#define MAGIC_LEN       8
#define FRAME_HDR       8
#define MAX_RECORD      (16u << 20) /* a longer length field is corruption */
#define DEFAULT_SEGMENT (UINT64_C(64) << 20)
#define DEFAULT_COMMIT  (10 * DP_US_PER_MS)

/* ---- CRC-32 ------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    }
}

uint32_t dp_crc32(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = buf;
    crc = ~crc;
    /* Slicing by 8: eight table lookups per 8 bytes instead of one per byte. */
    while (len >= 8) {
        uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                            (uint32_t)p[3] << 24);
        crc = crc_table[7][a & 0xff] ^ crc_table[6][(a >> 8) & 0xff] ^
              crc_table[5][(a >> 16) & 0xff] ^ crc_table[4][a >> 24] ^ crc_table[3][p[4]] ^
              crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

const char *dp_journal_fsync_name(dp_journal_fsync_t f)
{
    switch (f) {
    case DP_JFSYNC_ALWAYS:
        return "always";
    case DP_JFSYNC_INTERVAL:
        return "interval";
    case DP_JFSYNC_NEVER:
        return "never";
    }
    return "invalid";
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* ---- Segments on disk ----------------------------------------------------- */

typedef struct {
    uint64_t first; /* seq of the first record (the file name) */
    uint64_t size;
    int64_t mtime; /* seconds */
} seg_t;

static void seg_path(char *buf, size_t size, const char *dir, uint64_t first)
{
    snprintf(buf, size, "%s/%020" PRIu64 ".seg", dir, first);
}

static int seg_cmp(const void *a, const void *b)
{
    const seg_t *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Lists the segment files of dir, sorted by first seq. */
static int list_segments(const char *dir, seg_t **out, size_t *n, char **err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return dp_fail(err, DP_EIO, "journal %s: cannot read the directory: %s", dir,
                       strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len != 24 || strcmp(e->d_name + 20, ".seg") != 0)
            continue;
        char *end = NULL;
        errno = 0;
        unsigned long long first = strtoull(e->d_name, &end, 10);
        if (errno != 0 || end != e->d_name + 20)
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = dp_xrealloc(*out, cap * sizeof **out);
        }
        (*out)[(*n)++] =
            (seg_t){.first = first, .size = (uint64_t)st.st_size, .mtime = st.st_mtime};
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, *n, sizeof **out, seg_cmp);
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int mkdir_p(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0750) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* ---- Record encoding ------------------------------------------------------ */

/* A growable byte buffer. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} bytes_t;

static void bytes_reserve(bytes_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    b->data = dp_xrealloc(b->data, cap);
    b->cap = cap;
}

static int bytes_write(void *data, const char *buf, size_t len)
{
    bytes_t *b = data;
    bytes_reserve(b, len);
    memcpy(b->data + b->len, buf, len);
    b->len += len;
    return 0;
}

/* Appends the frame of one record to b: header, then the payload array
 *   SAMPLE:  [seq, 1, ts, tag, value, quality, flags]
 *   EVENT:   [seq, 2, ts, twin, kind, text, payload]
 *   COMMAND: [seq, 3, ts, twin, tag, value, outcome, detail]
 * Returns the frame's size. */
static size_t encode_record(bytes_t *b, const dp_jrec_t *rec, uint64_t seq)
{
    size_t start = b->len;
    bytes_reserve(b, FRAME_HDR);
    b->len += FRAME_HDR;
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, bytes_write);
    switch (rec->type) {
    case DP_JREC_SAMPLE:
        msgpack_pack_array(&pk, 7);
        msgpack_pack_uint64(&pk, seq);
        msgpack_pack_int(&pk, DP_JREC_SAMPLE);
        msgpack_pack_int64(&pk, rec->ts);
        dp_mp_pack_str(&pk, rec->tag);
        dp_mp_pack_value(&pk, &rec->value);
        msgpack_pack_uint8(&pk, rec->quality);
        msgpack_pack_uint32(&pk, rec->flags);
        break;
    case DP_JREC_EVENT:
        msgpack_pack_array(&pk, 7);
        msgpack_pack_uint64(&pk, seq);
        msgpack_pack_int(&pk, DP_JREC_EVENT);
        msgpack_pack_int64(&pk, rec->ts);
        dp_mp_pack_str(&pk, rec->twin);
        dp_mp_pack_str(&pk, rec->kind);
        dp_mp_pack_str(&pk, rec->text);
        if (rec->payload != NULL) {
            msgpack_pack_bin(&pk, rec->payload_len);
            msgpack_pack_bin_body(&pk, rec->payload, rec->payload_len);
        } else {
            msgpack_pack_nil(&pk);
        }
        break;
    case DP_JREC_COMMAND:
        msgpack_pack_array(&pk, 8);
        msgpack_pack_uint64(&pk, seq);
        msgpack_pack_int(&pk, DP_JREC_COMMAND);
        msgpack_pack_int64(&pk, rec->ts);
        dp_mp_pack_str(&pk, rec->twin);
        dp_mp_pack_str(&pk, rec->tag);
        dp_mp_pack_value(&pk, &rec->value);
        dp_mp_pack_str(&pk, rec->kind);
        dp_mp_pack_str(&pk, rec->text);
        break;
    }
    size_t plen = b->len - start - FRAME_HDR;
    unsigned char *hdr = (unsigned char *)b->data + start;
    put_u32(hdr, (uint32_t)plen);
    put_u32(hdr + 4, dp_crc32(0, b->data + start + FRAME_HDR, plen));
    return b->len - start;
}

/* ---- Decoding ------------------------------------------------------------- */

/* Strings of the record being decoded are copied, NUL-terminated, into an
 * arena owned by the reader. */
static const char *arena_str(bytes_t *a, const msgpack_object *o)
{
    if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)
        return NULL;
    /* Offsets, not pointers: the arena may move while it grows. The caller
     * fixes pointers up once the record is complete (see fix_strings). */
    size_t off = a->len;
    bytes_reserve(a, o->via.str.size + 1);
    memcpy(a->data + a->len, o->via.str.ptr, o->via.str.size);
    a->data[a->len + o->via.str.size] = '\0';
    a->len += o->via.str.size + 1;
    return (const char *)(uintptr_t)(off + 1); /* 0 stays NULL */
}

static const char *fix(bytes_t *a, const char *off)
{
    return off == NULL ? NULL : a->data + ((uintptr_t)off - 1);
}

static bool get_int(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return false;
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

static bool get_value(bytes_t *a, const msgpack_object *o, dp_value_t *v)
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
        v->u.s = (char *)arena_str(a, o);
        return true;
    default:
        return false;
    }
}

static bool is_str_or_nil(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_NIL;
}

/* Decodes one payload into rec (strings copied into arena a). Returns NULL
 * or a static description of what is wrong. */
static const char *decode_record(msgpack_zone *zone, const char *buf, size_t len, bytes_t *a,
                                 dp_jrec_t *rec)
{
    msgpack_zone_clear(zone);
    msgpack_object obj;
    size_t off = 0;
    const char *bad = NULL;
    a->len = 0;
    memset(rec, 0, sizeof *rec);
    if (msgpack_unpack(buf, len, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS || off != len) {
        bad = "payload is not one msgpack value";
        goto out;
    }
    if (obj.type != MSGPACK_OBJECT_ARRAY || obj.via.array.size < 3) {
        bad = "payload is not a record array";
        goto out;
    }
    const msgpack_object *f = obj.via.array.ptr;
    uint32_t n = obj.via.array.size;
    int64_t seq, type, ts;
    if (!get_int(&f[0], &seq) || seq <= 0 || !get_int(&f[1], &type) || !get_int(&f[2], &ts)) {
        bad = "bad seq, type or timestamp";
        goto out;
    }
    rec->seq = (uint64_t)seq;
    rec->ts = ts;
    rec->type = (dp_jrec_type_t)type;
    int64_t q, flags;
    switch (type) {
    case DP_JREC_SAMPLE:
        if (n != 7 || f[3].type != MSGPACK_OBJECT_STR || !get_int(&f[5], &q) || q < 0 || q > 2 ||
            !get_int(&f[6], &flags) || !get_value(a, &f[4], &rec->value)) {
            bad = "malformed sample record";
            goto out;
        }
        rec->tag = arena_str(a, &f[3]);
        rec->quality = (uint8_t)q;
        rec->flags = (uint32_t)flags;
        break;
    case DP_JREC_EVENT:
        if (n != 7 || !is_str_or_nil(&f[3]) || f[4].type != MSGPACK_OBJECT_STR ||
            !is_str_or_nil(&f[5]) ||
            (f[6].type != MSGPACK_OBJECT_BIN && f[6].type != MSGPACK_OBJECT_NIL)) {
            bad = "malformed event record";
            goto out;
        }
        rec->twin = arena_str(a, &f[3]);
        rec->kind = arena_str(a, &f[4]);
        rec->text = arena_str(a, &f[5]);
        if (f[6].type == MSGPACK_OBJECT_BIN) {
            rec->payload = arena_str(a, &f[6]);
            rec->payload_len = f[6].via.bin.size;
        }
        break;
    case DP_JREC_COMMAND:
        if (n != 8 || !is_str_or_nil(&f[3]) || f[4].type != MSGPACK_OBJECT_STR ||
            !get_value(a, &f[5], &rec->value) || f[6].type != MSGPACK_OBJECT_STR ||
            !is_str_or_nil(&f[7])) {
            bad = "malformed command record";
            goto out;
        }
        rec->twin = arena_str(a, &f[3]);
        rec->tag = arena_str(a, &f[4]);
        rec->kind = arena_str(a, &f[6]);
        rec->text = arena_str(a, &f[7]);
        break;
    default:
        bad = "unknown record type";
        goto out;
    }
    /* The arena is complete: turn offsets into pointers. */
    rec->tag = fix(a, rec->tag);
    rec->twin = fix(a, rec->twin);
    rec->kind = fix(a, rec->kind);
    rec->text = fix(a, rec->text);
    rec->payload = fix(a, rec->payload);
    if (rec->value.type == DP_STR)
        rec->value.u.s = (char *)fix(a, rec->value.u.s);
out:
    return bad;
}

/* Checks a frame at p (avail bytes available). Returns the frame size when a
 * whole valid frame is there, 0 when more bytes are needed (an incomplete
 * frame), or -1 when the bytes are not a valid frame. */
static int64_t check_frame(const unsigned char *p, size_t avail)
{
    if (avail < FRAME_HDR)
        return 0;
    uint32_t len = get_u32(p);
    if (len == 0 || len > MAX_RECORD)
        return -1;
    if (avail < FRAME_HDR + (size_t)len)
        return 0;
    if (dp_crc32(0, p + FRAME_HDR, len) != get_u32(p + 4))
        return -1;
    return FRAME_HDR + (int64_t)len;
}

/* ---- Writer ------------------------------------------------------------- */

typedef struct batch {
    struct batch *next;
    bytes_t data;
    uint64_t last_seq;    /* of the last record in data (0: none) */
    uint64_t new_segment; /* start segment `new_segment` before writing data (0: no) */
    bool force_fsync;     /* dp_journal_sync */
} batch_t;

struct dp_journal {
    char *dir;
    uv_loop_t *loop;
    dp_journal_opts_t opts;

    /* Loop thread only. */
    bytes_t buf;
    uint64_t buf_first;   /* seq of the first record in buf (0: empty) */
    uint64_t pending_seg; /* rotation decided for the next batch (0: none) */
    uint64_t last_seq;
    uint64_t seg_bytes; /* logical size of the current segment incl. buffered */
    bool have_segment;  /* some segment is (or will be) open for appends */
    uint64_t notified;  /* durable value last passed to the callback */
    dp_journal_durable_cb cb;
    void *cb_ud;
    uv_timer_t timer;
    uv_async_t async;
    int open_handles;
    bool commit_scheduled;
    bool behind; /* warned that the writer is behind */
    uint64_t records, bytes, commits;

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond_work; /* writer waits for batches */
    pthread_cond_t cond_done; /* sync waits for progress */
    batch_t *head, *tail;
    uint64_t queued; /* bytes handed to the writer and not written yet */
    bool stop;
    bool failed;         /* writes fail now (kept and retried), or broken */
    bool broken;         /* a failure that could not be retried: nothing more is written */
    bool failing_logged; /* the current run of failures was logged */
    uint64_t written;    /* highest seq written to the OS */
    uint64_t durable;    /* highest seq accepted per the policy */
    uint64_t synced;     /* highest seq fsynced */
    uint64_t protect;
    uint64_t fsyncs, segments, dropped;
    pthread_t thread;

    int lock_fd; /* DIR/lock, flock()ed while the journal is open */

    /* Writer thread only (and open/close). */
    int fd;
    uint64_t fd_first;
    seg_t *segs; /* segments on disk, oldest first */
    size_t nsegs;
    size_t segs_cap;
};

static void segs_push(dp_journal_t *j, uint64_t first, uint64_t size)
{
    if (j->nsegs == j->segs_cap) {
        j->segs_cap = j->segs_cap ? j->segs_cap * 2 : 16;
        j->segs = dp_xrealloc(j->segs, j->segs_cap * sizeof *j->segs);
    }
    j->segs[j->nsegs++] = (seg_t){.first = first, .size = size, .mtime = (int64_t)time(NULL)};
}

/* Writer thread: drops the oldest segments beyond retain_size or older than
 * retain, never the current one nor one holding records after `protect`. */
static void apply_retention(dp_journal_t *j, uint64_t protect)
{
    if (j->opts.retain <= 0 && j->opts.retain_size == 0)
        return;
    uint64_t total = 0;
    for (size_t i = 0; i < j->nsegs; i++)
        total += j->segs[i].size;
    int64_t now = (int64_t)time(NULL);
    size_t drop = 0;
    while (drop + 1 < j->nsegs) {
        const seg_t *s = &j->segs[drop];
        uint64_t last = j->segs[drop + 1].first - 1;
        if (protect != 0 && last >= protect)
            break;
        bool too_big = j->opts.retain_size > 0 && total > j->opts.retain_size;
        bool too_old = j->opts.retain > 0 && (now - s->mtime) * DP_US_PER_SEC > j->opts.retain;
        if (!too_big && !too_old)
            break;
        char path[4096];
        seg_path(path, sizeof path, j->dir, s->first);
        if (unlink(path) < 0 && errno != ENOENT) {
            dp_log_warn(NULL, "journal: cannot remove %s: %s", path, strerror(errno));
            break;
        }
        dp_log_debug(NULL, "journal: retention removed %s", path);
        total -= s->size;
        drop++;
    }
    if (drop > 0) {
        memmove(j->segs, j->segs + drop, (j->nsegs - drop) * sizeof *j->segs);
        j->nsegs -= drop;
        pthread_mutex_lock(&j->mu);
        j->dropped += drop;
        pthread_mutex_unlock(&j->mu);
    }
}

/* Writer thread: closes the current segment (fsynced unless the policy is
 * never) and creates segment `first`. */
static int start_segment(dp_journal_t *j, uint64_t first)
{
    if (j->fd >= 0) {
        if (j->opts.fsync != DP_JFSYNC_NEVER)
            fsync(j->fd);
        close(j->fd);
        j->fd = -1;
    }
    char path[4096];
    seg_path(path, sizeof path, j->dir, first);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        dp_log_error(NULL, "journal: cannot create %s: %s", path, strerror(errno));
        return DP_EIO;
    }
    int rc = write_all(fd, MAGIC, MAGIC_LEN);
    if (rc < 0) {
        dp_log_error(NULL, "journal: cannot write %s: %s", path, strerror(-rc));
        close(fd);
        return DP_EIO;
    }
    if (j->opts.fsync != DP_JFSYNC_NEVER) {
        fsync(fd);
        fsync_dir(j->dir);
    }
    j->fd = fd;
    j->fd_first = first;
    segs_push(j, first, MAGIC_LEN);
    pthread_mutex_lock(&j->mu);
    j->segments++;
    uint64_t protect = j->protect;
    pthread_mutex_unlock(&j->mu);
    apply_retention(j, protect);
    return 0;
}

static void batch_free(batch_t *b)
{
    if (b == NULL)
        return;
    free(b->data.data);
    free(b);
}

/* While writes fail (a full disk), the writer keeps the batches it could not
 * write, in order, and tries them again every RETRY_MS; what is appended
 * meanwhile waits behind them. Past RETRY_CAP bytes kept, the oldest are
 * dropped (a gap in the sequence, logged with its range): memory is bounded,
 * and the newest records are the ones a restart after the outage needs. */
#define RETRY_MS  2000
#define RETRY_CAP (UINT64_C(256) << 20)

/* Writer thread: puts the current segment back to `size` bytes (what was
 * written whole before a round that failed), so the round can be written
 * again after it without a torn stretch in between. */
static int rewind_segment(dp_journal_t *j, uint64_t size)
{
    if (j->fd < 0 || j->nsegs == 0)
        return 0;
    if (ftruncate(j->fd, (off_t)size) < 0 || lseek(j->fd, (off_t)size, SEEK_SET) < 0)
        return DP_EIO;
    j->segs[j->nsegs - 1].size = size;
    return 0;
}

/* Writer thread: writes a round of batches and fsyncs once (group commit).
 * A round stays within one segment: only its first batch may start one (the
 * writer cuts rounds at rotations), so a failed round can always be put back.
 * Returns 0 or DP_EIO. *last gets the last seq written, *did_fsync whether it
 * was fsynced. After a failure *rewound says whether the segment was put back
 * as it was before the round (so the round can be written again whole). */
static int write_round(dp_journal_t *j, batch_t *list, uint64_t *last, bool *did_fsync,
                       bool *rewound)
{
    *last = 0;
    *did_fsync = false;
    *rewound = false;
    /* A segment started by an earlier attempt of this round is kept. */
    if (list->new_segment != 0 && (j->fd < 0 || j->fd_first != list->new_segment)) {
        if (start_segment(j, list->new_segment) < 0) {
            *rewound = true; /* nothing of the round was written */
            return DP_EIO;
        }
    }
    if (j->fd < 0 || j->nsegs == 0) {
        /* No segment yet: only a sync of an empty journal gets here. */
        for (batch_t *b = list; b != NULL; b = b->next) {
            if (b->data.len > 0)
                return DP_EIO;
        }
        return 0;
    }
    uint64_t size0 = j->segs[j->nsegs - 1].size;
    bool force = false;
    int rc = 0;
    for (batch_t *b = list; b != NULL && rc == 0; b = b->next) {
        if (b->data.len > 0) {
            int w = write_all(j->fd, b->data.data, b->data.len);
            if (w < 0) {
                if (!j->failing_logged)
                    dp_log_error(NULL, "journal: write to segment %020" PRIu64 " failed: %s",
                                 j->fd_first, strerror(-w));
                rc = DP_EIO;
            } else {
                j->segs[j->nsegs - 1].size += b->data.len;
                j->segs[j->nsegs - 1].mtime = (int64_t)time(NULL);
            }
        }
        if (rc == 0 && b->last_seq != 0)
            *last = b->last_seq;
        force = force || b->force_fsync;
    }
    if (rc == 0 && (force || j->opts.fsync != DP_JFSYNC_NEVER)) {
        if (fdatasync(j->fd) < 0) {
            if (!j->failing_logged)
                dp_log_error(NULL, "journal: fsync failed: %s", strerror(errno));
            rc = DP_EIO;
        } else {
            *did_fsync = true;
        }
    }
    /* The round is written again whole later, from where it began (after a
     * failed fsync too: the page cache is not trusted then). */
    if (rc < 0)
        *rewound = rewind_segment(j, size0) == 0;
    return rc;
}

/* CLOCK_MONOTONIC in ns: the clock cond_work's timed waits use. */
static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t batches_bytes(const batch_t *b)
{
    uint64_t n = 0;
    for (; b != NULL; b = b->next)
        n += b->data.len;
    return n;
}

/* List `a` followed by list `b`. */
static batch_t *batches_join(batch_t *a, batch_t *b)
{
    if (a == NULL)
        return b;
    batch_t *t = a;
    while (t->next != NULL)
        t = t->next;
    t->next = b;
    return a;
}

static void batches_free(batch_t *b)
{
    while (b != NULL) {
        batch_t *next = b->next;
        batch_free(b);
        b = next;
    }
}

static void *writer_main(void *arg)
{
    dp_journal_t *j = arg;
    /* Batches taken from the queue and not written yet, oldest first: what
     * follows a rotation, left for the next round, and after a failed round
     * that round and all behind it, tried again at retry_at. */
    batch_t *kept = NULL;
    uint64_t retry_at = 0; /* mono_ns() of the next attempt; 0: not failing */
    uint64_t gap_end = 0;  /* the last seq dropped at the cap */
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->stop) {
            if (retry_at == 0 && (j->head != NULL || kept != NULL))
                break;
            if (retry_at != 0 && mono_ns() >= retry_at)
                break;
            if (retry_at == 0) {
                pthread_cond_wait(&j->cond_work, &j->mu);
            } else {
                struct timespec until = {.tv_sec = (time_t)(retry_at / 1000000000u),
                                         .tv_nsec = (long)(retry_at % 1000000000u)};
                pthread_cond_timedwait(&j->cond_work, &j->mu, &until);
            }
        }
        if (j->head == NULL && kept == NULL && j->stop)
            break;
        /* Group commit: take every queued batch (behind those kept), write
         * them up to the next rotation (see write_round), fsync once. */
        batch_t *list = batches_join(kept, j->head);
        j->head = j->tail = NULL;
        kept = NULL;
        for (batch_t *b = list; b->next != NULL; b = b->next) {
            if (b->next->new_segment != 0) {
                kept = b->next;
                b->next = NULL;
                break;
            }
        }
        bool broken = j->broken, stopping = j->stop;
        pthread_mutex_unlock(&j->mu);

        uint64_t last = 0;
        bool did_fsync = false, rewound = false;
        int rc = broken ? DP_EIO : write_round(j, list, &last, &did_fsync, &rewound);
        bool retrying = rc < 0 && rewound && !stopping;
        uint64_t dropped_records = 0, drop_from = 0, drop_to = 0;
        retry_at = 0;
        if (retrying) {
            /* Keep the round, and what follows it, for the next attempt,
             * within the cap. */
            kept = batches_join(list, kept);
            list = NULL;
            uint64_t bytes = batches_bytes(kept);
            while (kept->next != NULL && bytes > RETRY_CAP) {
                batch_t *b = kept;
                kept = b->next;
                bytes -= b->data.len;
                if (b->last_seq != 0) {
                    if (drop_from == 0)
                        drop_from = (gap_end > j->written ? gap_end : j->written) + 1;
                    drop_to = gap_end = b->last_seq;
                }
                if (b->new_segment != 0 && kept->new_segment == 0)
                    kept->new_segment = b->new_segment;
                batch_free(b);
            }
            if (drop_to != 0)
                dropped_records = drop_to - drop_from + 1;
            retry_at = mono_ns() + (uint64_t)RETRY_MS * 1000000u;
        }
        uint64_t freed = batches_bytes(list);
        batches_free(list);

        pthread_mutex_lock(&j->mu);
        j->queued -= freed;
        if (rc < 0 && !retrying) {
            /* Could not be kept for a retry (the segment could not be put
             * back, or the plant is stopping): nothing more is recorded this
             * run. */
            if (!j->broken)
                dp_log_error(NULL,
                             "journal %s: records after seq %" PRIu64
                             " were not written; nothing more is recorded until a restart",
                             j->dir, j->written);
            j->broken = true;
            j->failed = true;
        } else if (rc < 0) {
            if (!j->failing_logged)
                dp_log_error(NULL,
                             "journal %s: writes fail: the records since seq %" PRIu64
                             " are kept in memory (up to %" PRIu64
                             " MiB) and written again every %d s until the disk takes them",
                             j->dir, j->written + 1, RETRY_CAP >> 20, RETRY_MS / 1000);
            j->failing_logged = true;
            j->failed = true;
            if (dropped_records > 0)
                dp_log_error(NULL,
                             "journal %s: dropped %" PRIu64 " records (seq %" PRIu64 "-%" PRIu64
                             ") kept while the disk was failing: over %" PRIu64 " MiB",
                             j->dir, dropped_records, drop_from, drop_to, RETRY_CAP >> 20);
        } else {
            if (j->failed && !j->broken)
                dp_log_info(NULL, "journal %s: writing again; nothing kept in memory was lost",
                            j->dir);
            j->failed = false;
            j->failing_logged = false;
            if (last != 0) {
                j->written = last;
                if (did_fsync) {
                    j->synced = last;
                    j->fsyncs++;
                }
            } else if (did_fsync) {
                j->synced = j->written;
                j->fsyncs++;
            }
            if (did_fsync || last != 0)
                j->durable = j->opts.fsync == DP_JFSYNC_NEVER ? j->written : j->synced;
        }
        pthread_cond_broadcast(&j->cond_done);
        if (j->loop != NULL && !j->stop)
            uv_async_send(&j->async);
    }
    pthread_mutex_unlock(&j->mu);
    batches_free(kept);
    return NULL;
}

static void deliver_durable(dp_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t d = j->durable;
    pthread_mutex_unlock(&j->mu);
    if (d > j->notified) {
        j->notified = d;
        if (j->cb != NULL)
            j->cb(j, d, j->cb_ud);
    }
}

static void on_async(uv_async_t *h)
{
    deliver_durable(h->data);
}

static void on_timer(uv_timer_t *h)
{
    dp_journal_t *j = h->data;
    j->commit_scheduled = false;
    dp_journal_commit(j);
}

/* The first offset in buf after `from` where a whole valid frame starts, or
 * len. */
static size_t mem_resync(const unsigned char *buf, size_t from, size_t len)
{
    for (size_t at = from + 1; at + FRAME_HDR <= len; at++) {
        if (check_frame(buf + at, len - at) > 0)
            return at;
    }
    return len;
}

/* Scans the newest segment: the offset after its last whole valid record
 * (what to keep) and that record's seq (0: none). Corrupted stretches with
 * valid records after them are left for readers to skip (and reported);
 * only an invalid tail is for the caller to cut. *why says what the tail
 * was. */
static int scan_tail(const char *path, uint64_t *valid_end, uint64_t *last_seq, uint64_t *size,
                     char **why, char **err)
{
    *valid_end = 0;
    *last_seq = 0;
    *why = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return dp_fail(err, DP_EIO, "journal: cannot open %s: %s", path, strerror(errno));
    }
    size_t len = (size_t)st.st_size;
    *size = len;
    unsigned char *buf = dp_xmalloc(len ? len : 1);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    len = got;
    if (len < MAGIC_LEN || memcmp(buf, MAGIC, MAGIC_LEN) != 0) {
        *why = dp_xstrdup(len < MAGIC_LEN ? "the segment header is incomplete"
                                          : "the segment header is not DPJRNL1");
        free(buf);
        return 0;
    }
    bytes_t arena = {0};
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    size_t pos = MAGIC_LEN, keep = MAGIC_LEN;
    while (pos < len) {
        int64_t fs = check_frame(buf + pos, len - pos);
        const char *bad = NULL;
        dp_jrec_t rec;
        if (fs > 0)
            bad = decode_record(&zone, (const char *)buf + pos + FRAME_HDR, (size_t)fs - FRAME_HDR,
                                &arena, &rec);
        if (fs > 0 && bad == NULL) {
            pos += (size_t)fs;
            keep = pos;
            if (rec.seq > *last_seq)
                *last_seq = rec.seq;
            continue;
        }
        size_t next = fs > 0 ? pos + (size_t)fs : mem_resync(buf, pos, len);
        if (next >= len) {
            if (fs == 0 && len - pos < FRAME_HDR)
                *why = dp_xasprintf("an incomplete record header (%zu bytes)", len - pos);
            else if (fs == 0)
                *why = dp_xasprintf("an incomplete record (%zu of %" PRIu32 " bytes)",
                                    len - pos - FRAME_HDR, get_u32(buf + pos) + 0u);
            else
                *why = dp_xstrdup(bad != NULL ? "a record that does not decode"
                                              : "a record with a bad length or CRC");
            break;
        }
        dp_log_warn(NULL,
                    "journal: %s: corrupted data at offset %zu (%zu bytes) will be skipped by "
                    "readers",
                    path, pos, next - pos);
        pos = next;
    }
    *valid_end = keep;
    msgpack_zone_destroy(&zone);
    free(arena.data);
    free(buf);
    return 0;
}

dp_journal_t *dp_journal_open(const char *dir, uv_loop_t *loop, const dp_journal_opts_t *opts,
                              uint64_t min_seq, char **err)
{
    int rc = mkdir_p(dir);
    if (rc < 0) {
        dp_fail(err, DP_EIO, "journal: cannot create %s: %s", dir, strerror(-rc));
        return NULL;
    }
    /* One writer per journal: a second process appending would number its
     * records like the first. The lock goes with the process, even on
     * kill -9. */
    char lock_path[4200];
    snprintf(lock_path, sizeof lock_path, "%s/lock", dir);
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lock_fd < 0) {
        dp_fail(err, DP_EIO, "journal: cannot open %s: %s", lock_path, strerror(errno));
        return NULL;
    }
    if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        dp_fail(err, DP_ESTATE, "journal %s is in use by another doppel process", dir);
        close(lock_fd);
        return NULL;
    }
    seg_t *segs = NULL;
    size_t nsegs = 0;
    if (list_segments(dir, &segs, &nsegs, err) < 0) {
        close(lock_fd);
        return NULL;
    }

    dp_journal_t *j = dp_xcalloc(1, sizeof *j);
    j->lock_fd = lock_fd;
    j->dir = dp_xstrdup(dir);
    j->loop = loop;
    if (opts != NULL)
        j->opts = *opts;
    if (j->opts.commit <= 0)
        j->opts.commit = DEFAULT_COMMIT;
    if (j->opts.segment_size == 0)
        j->opts.segment_size = DEFAULT_SEGMENT;
    j->fd = -1;
    j->segs = segs;
    j->nsegs = j->segs_cap = nsegs;

    /* The newest segment that holds a record gives the last seq; its tail
     * is checked and a torn or corrupted end is cut off. Segments that hold
     * no valid record (say, created just before a crash) are removed. */
    uint64_t last = 0;
    while (j->nsegs > 0) {
        seg_t *s = &j->segs[j->nsegs - 1];
        char path[4096], *why = NULL;
        seg_path(path, sizeof path, dir, s->first);
        uint64_t end = 0, seq = 0, size = 0;
        if (scan_tail(path, &end, &seq, &size, &why, err) < 0)
            goto fail;
        if (seq == 0) {
            /* No record in it (say, created just before a crash). */
            if (size > MAGIC_LEN) {
                /* Kept aside for inspection, out of the readers' way. */
                char aside[4200];
                snprintf(aside, sizeof aside, "%s.corrupt", path);
                dp_log_warn(NULL, "journal: %s holds no whole record (%s); moved to %s", path,
                            why ? why : "empty", aside);
                rename(path, aside);
            } else {
                unlink(path);
            }
            free(why);
            j->nsegs--;
            continue;
        }
        if (why != NULL) {
            dp_log_warn(NULL,
                        "journal: %s: torn tail cut: %" PRIu64 " bytes at offset %" PRIu64
                        " after record %" PRIu64 " (%s)",
                        path, size - end, end, seq, why);
            free(why);
        }
        if (end < size) {
            if (truncate(path, (off_t)end) < 0) {
                dp_fail(err, DP_EIO, "journal: cannot cut %s: %s", path, strerror(errno));
                goto fail;
            }
        }
        s->size = end;
        last = seq;
        break;
    }
    j->last_seq = last > min_seq ? last : min_seq;
    j->written = j->durable = j->synced = j->notified = j->last_seq;
    /* Appends after a restart go to a new segment: the old ones stay as they
     * were checked, and a seq jump from min_seq never hides inside one. */
    j->have_segment = false;

    pthread_mutex_init(&j->mu, NULL);
    /* The writer's retry waits until a CLOCK_MONOTONIC deadline. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cond_work, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&j->cond_done, NULL);
    if (loop != NULL) {
        uv_timer_init(loop, &j->timer);
        uv_async_init(loop, &j->async, on_async);
        j->timer.data = j->async.data = j;
        j->open_handles = 2;
        if (j->opts.fsync != DP_JFSYNC_ALWAYS) {
            uint64_t ms = (uint64_t)((j->opts.commit + 999) / 1000);
            uv_timer_start(&j->timer, on_timer, ms, ms);
        }
    }
    if (pthread_create(&j->thread, NULL, writer_main, j) != 0) {
        dp_fail(err, DP_EIO, "journal: cannot start the writer thread");
        /* Nothing else was started; unwind by hand. */
        if (loop != NULL) {
            uv_timer_stop(&j->timer);
        }
        j->stop = true;
        j->thread = 0;
    }
    if (j->stop) {
        dp_journal_close(j);
        return NULL;
    }
    return j;
fail:
    close(j->lock_fd);
    free(j->segs);
    free(j->dir);
    free(j);
    return NULL;
}

/* Loop thread: queues the buffer as a batch. */
static void queue_batch(dp_journal_t *j, bool force)
{
    if (j->buf.len == 0 && j->pending_seg == 0 && !force)
        return;
    batch_t *b = dp_xcalloc(1, sizeof *b);
    b->data = j->buf;
    b->last_seq = j->buf.len > 0 ? j->last_seq : 0;
    b->new_segment = j->pending_seg;
    b->force_fsync = force;
    j->buf = (bytes_t){0};
    j->buf_first = 0;
    j->pending_seg = 0;
    j->commits++;
    pthread_mutex_lock(&j->mu);
    if (j->tail != NULL)
        j->tail->next = b;
    else
        j->head = b;
    j->tail = b;
    j->queued += b->data.len;
    uint64_t queued = j->queued;
    pthread_cond_signal(&j->cond_work);
    pthread_mutex_unlock(&j->mu);
    /* Batches wait in memory while the disk is slow; say so once when that
     * grows large, and again after it has recovered. */
    if (!j->behind && queued > (UINT64_C(64) << 20)) {
        j->behind = true;
        dp_log_warn(NULL, "journal %s: the writer is behind: %" PRIu64 " MiB waiting for the disk",
                    j->dir, queued >> 20);
    } else if (j->behind && queued < (UINT64_C(8) << 20)) {
        j->behind = false;
        dp_log_info(NULL, "journal %s: the writer caught up", j->dir);
    }
}

uint64_t dp_journal_append(dp_journal_t *j, const dp_jrec_t *rec)
{
    uint64_t seq = j->last_seq + 1;
    if (!j->have_segment || j->seg_bytes >= j->opts.segment_size) {
        /* Rotation: what is buffered belongs to the old segment. */
        queue_batch(j, false);
        j->pending_seg = seq;
        j->seg_bytes = MAGIC_LEN;
        j->have_segment = true;
    }
    size_t n = encode_record(&j->buf, rec, seq);
    if (j->buf_first == 0)
        j->buf_first = seq;
    j->last_seq = seq;
    j->seg_bytes += n;
    j->records++;
    j->bytes += n;
    if (j->opts.fsync == DP_JFSYNC_ALWAYS && j->loop != NULL && !j->commit_scheduled) {
        /* A zero timeout runs at the start of the next loop iteration, after
         * everything this turn appended. */
        j->commit_scheduled = true;
        uv_timer_start(&j->timer, on_timer, 0, 0);
    }
    return seq;
}

uint64_t dp_journal_append_sample(dp_journal_t *j, const char *tag, const dp_value_t *v,
                                  dp_time_t ts, int quality, uint32_t flags)
{
    dp_jrec_t r = {
        .type = DP_JREC_SAMPLE, .ts = ts, .tag = tag, .quality = (uint8_t)quality, .flags = flags};
    if (v != NULL)
        r.value = *v;
    return dp_journal_append(j, &r);
}

uint64_t dp_journal_append_event(dp_journal_t *j, const dp_event_t *ev)
{
    dp_jrec_t r = {.type = DP_JREC_EVENT,
                   .ts = ev->ts,
                   .twin = ev->twin,
                   .kind = ev->kind != NULL ? ev->kind : "",
                   .text = ev->text,
                   .payload = ev->payload,
                   .payload_len = ev->payload_len};
    return dp_journal_append(j, &r);
}

uint64_t dp_journal_append_command(dp_journal_t *j, dp_time_t ts, const char *twin, const char *tag,
                                   const dp_value_t *v, const char *outcome, const char *detail)
{
    dp_jrec_t r = {.type = DP_JREC_COMMAND,
                   .ts = ts,
                   .twin = twin,
                   .tag = tag != NULL ? tag : "",
                   .kind = outcome != NULL ? outcome : "",
                   .text = detail};
    if (v != NULL)
        r.value = *v;
    return dp_journal_append(j, &r);
}

void dp_journal_commit(dp_journal_t *j)
{
    queue_batch(j, false);
}

int dp_journal_sync(dp_journal_t *j)
{
    queue_batch(j, true);
    uint64_t target = j->last_seq;
    pthread_mutex_lock(&j->mu);
    /* Wait for the writer to have fsynced everything up to target; with an
     * empty journal, wait until the forced batch was taken. */
    while (!j->failed && (j->synced < target || j->head != NULL))
        pthread_cond_wait(&j->cond_done, &j->mu);
    int rc = j->failed ? DP_EIO : 0;
    pthread_mutex_unlock(&j->mu);
    if (j->loop == NULL)
        deliver_durable(j);
    return rc;
}

uint64_t dp_journal_last_seq(const dp_journal_t *j)
{
    return j->last_seq;
}

uint64_t dp_journal_durable(const dp_journal_t *j)
{
    pthread_mutex_lock((pthread_mutex_t *)&j->mu);
    uint64_t d = j->durable;
    pthread_mutex_unlock((pthread_mutex_t *)&j->mu);
    return d;
}

void dp_journal_on_durable(dp_journal_t *j, dp_journal_durable_cb cb, void *ud)
{
    j->cb = cb;
    j->cb_ud = ud;
}

void dp_journal_protect(dp_journal_t *j, uint64_t seq)
{
    pthread_mutex_lock(&j->mu);
    j->protect = seq;
    pthread_mutex_unlock(&j->mu);
}

void dp_journal_get_stats(const dp_journal_t *j, dp_journal_stats_t *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&j->mu);
    *out = (dp_journal_stats_t){.records = j->records,
                                .bytes = j->bytes,
                                .commits = j->commits,
                                .fsyncs = j->fsyncs,
                                .segments = j->segments,
                                .dropped = j->dropped,
                                .failed = j->failed,
                                .broken = j->broken};
    pthread_mutex_unlock((pthread_mutex_t *)&j->mu);
}

static void free_journal(dp_journal_t *j)
{
    if (j->lock_fd >= 0)
        close(j->lock_fd);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond_work);
    pthread_cond_destroy(&j->cond_done);
    free(j->buf.data);
    free(j->segs);
    free(j->dir);
    free(j);
}

static void on_close(uv_handle_t *h)
{
    dp_journal_t *j = h->data;
    if (--j->open_handles == 0)
        free_journal(j);
}

void dp_journal_close(dp_journal_t *j)
{
    if (j == NULL)
        return;
    if (j->thread != 0) {
        if (j->buf.len > 0 || j->pending_seg != 0)
            dp_journal_sync(j);
        pthread_mutex_lock(&j->mu);
        j->stop = true;
        pthread_cond_signal(&j->cond_work);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thread, NULL);
    }
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    if (j->lock_fd >= 0) {
        close(j->lock_fd);
        j->lock_fd = -1;
    }
    /* Durable news that has not reached the loop yet is delivered now. */
    deliver_durable(j);
    if (j->loop != NULL) {
        uv_timer_stop(&j->timer);
        uv_close((uv_handle_t *)&j->timer, on_close);
        uv_close((uv_handle_t *)&j->async, on_close);
        return;
    }
    free_journal(j);
}

/* ---- Reader ------------------------------------------------------------- */

struct dp_jreader {
    char *dir;
    dp_jreader_warn_cb warn;
    void *ud;
    seg_t *segs;
    size_t nsegs;
    int fd;             /* the open segment, or -1 */
    uint64_t cur_first; /* first seq of the open (or last finished) segment */
    uint64_t seek_off;  /* where to start in the next segment opened (0: after the header) */
    uint64_t off;       /* offset in the open segment of the next frame */
    uint64_t next_seq;  /* skip records below this (seeking) */
    uint64_t last_seq;  /* of the last record returned */
    unsigned char *buf; /* a window on the open segment: bytes [boff, boff + blen) */
    size_t cap;
    uint64_t boff;
    size_t blen;
    const unsigned char *payload; /* of the frame frame_at() found */
    msgpack_zone zone;
    bytes_t arena;
    uint64_t skipped;
    bool final; /* a newer segment exists: the writer is done with the open one */
};

static void reader_warn(dp_jreader_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reader_warn(dp_jreader_t *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->warn != NULL)
        r->warn(msg, r->ud);
    else
        dp_log_warn(NULL, "%s", msg);
}

static int reader_refresh(dp_jreader_t *r, char **err)
{
    seg_t *segs;
    size_t n;
    int rc = list_segments(r->dir, &segs, &n, err);
    if (rc < 0)
        return rc;
    free(r->segs);
    r->segs = segs;
    r->nsegs = n;
    return 0;
}

/* Index of the first segment after the current one, or -1. */
static ssize_t next_segment(const dp_jreader_t *r)
{
    for (size_t i = 0; i < r->nsegs; i++) {
        if (r->segs[i].first > r->cur_first)
            return (ssize_t)i;
    }
    return -1;
}

/* Whether a segment newer than the open one exists (so the open one is
 * complete). */
static bool has_later(dp_jreader_t *r)
{
    if (reader_refresh(r, NULL) < 0)
        return false;
    return next_segment(r) >= 0;
}

static void seg_name(char *buf, size_t size, const dp_jreader_t *r)
{
    seg_path(buf, size, r->dir, r->cur_first);
}

/* Bytes [off, off + len) of the open segment, from the window (read ahead in
 * 256 KiB steps); NULL when the file does not hold them (yet). */
static const unsigned char *window(dp_jreader_t *r, uint64_t off, size_t len)
{
    if (off >= r->boff && off + len <= r->boff + r->blen)
        return r->buf + (off - r->boff);
    size_t want = len > (256u << 10) ? len : (256u << 10);
    if (r->cap < want) {
        r->cap = want;
        r->buf = dp_xrealloc(r->buf, r->cap);
    }
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(r->fd, r->buf + got, want - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    r->boff = off;
    r->blen = got;
    return got >= len ? r->buf : NULL;
}

/* Checks for a whole valid frame at off: its size, 0 when the bytes there
 * are incomplete, -1 when they are not a valid frame. On success
 * r->payload points at the payload (valid until the next window read). */
static int64_t frame_at(dp_jreader_t *r, uint64_t off)
{
    const unsigned char *h = window(r, off, FRAME_HDR);
    if (h == NULL)
        return 0;
    uint32_t len = get_u32(h), crc = get_u32(h + 4);
    if (len == 0 || len > MAX_RECORD)
        return -1;
    const unsigned char *f = window(r, off, FRAME_HDR + (size_t)len);
    if (f == NULL)
        return 0;
    r->payload = f + FRAME_HDR;
    return dp_crc32(0, r->payload, len) == crc ? FRAME_HDR + (int64_t)len : -1;
}

/* The first offset after `from` and before `end` where a whole valid frame
 * starts, or `end`. */
static uint64_t resync(dp_jreader_t *r, uint64_t from, uint64_t end)
{
    enum { WIN = 1 << 16 };
    unsigned char *w = dp_xmalloc(WIN);
    uint64_t wbase = 0;
    size_t wn = 0;
    uint64_t found = end;
    for (uint64_t at = from + 1; at + FRAME_HDR <= end; at++) {
        if (at < wbase || at + FRAME_HDR > wbase + wn) {
            wbase = at;
            ssize_t n = pread(r->fd, w, WIN, (off_t)at);
            wn = n > 0 ? (size_t)n : 0;
            if (wn < FRAME_HDR)
                break;
        }
        uint32_t len = get_u32(w + (at - wbase));
        if (len == 0 || len > MAX_RECORD || at + FRAME_HDR + len > end)
            continue;
        if (frame_at(r, at) > 0) {
            found = at;
            break;
        }
    }
    free(w);
    return found;
}

/* Opens the segment after the current one. 1: opened, 0: none yet (or its
 * header is still being written), <0: error. */
static int open_next(dp_jreader_t *r, char **err)
{
    uint64_t rechecked = 0; /* the segment whose short header was read again */
    for (;;) {
        ssize_t i = next_segment(r);
        if (i < 0) {
            int rc = reader_refresh(r, err);
            if (rc < 0)
                return rc;
            if ((i = next_segment(r)) < 0)
                return 0;
        }
        char path[4096];
        seg_path(path, sizeof path, r->dir, r->segs[i].first);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) { /* dropped by retention meanwhile */
                r->cur_first = r->segs[i].first;
                continue;
            }
            return dp_fail(err, DP_EIO, "journal: cannot open %s: %s", path, strerror(errno));
        }
        unsigned char magic[MAGIC_LEN];
        ssize_t got = pread(fd, magic, MAGIC_LEN, 0);
        if (got == MAGIC_LEN && memcmp(magic, MAGIC, MAGIC_LEN) == 0) {
            r->fd = fd;
            r->blen = 0;
            r->final = false;
            r->cur_first = r->segs[i].first;
            r->off = r->seek_off > MAGIC_LEN ? r->seek_off : MAGIC_LEN;
            r->seek_off = 0;
            return 1;
        }
        close(fd);
        uint64_t first = r->segs[i].first;
        if (got >= 0 && got < MAGIC_LEN) {
            /* Being created, or cut short by a crash: only a newer segment
             * tells which. The writer finishes a header before it creates
             * the next segment, so once a newer one is seen the header is
             * read once more: a header written meanwhile is not a crash. */
            uint64_t saved = r->cur_first;
            r->cur_first = first;
            bool later = has_later(r);
            if (!later || rechecked != first + 1) {
                r->cur_first = saved;
                if (!later)
                    return 0;
                rechecked = first + 1;
                continue;
            }
            reader_warn(r, "journal: %s: incomplete segment header; skipped", path);
        } else {
            reader_warn(r, "journal: %s: not a journal segment (bad header); skipped", path);
        }
        r->skipped += r->segs[i].size;
        r->cur_first = first;
        r->seek_off = 0;
    }
}

dp_jreader_t *dp_jreader_open(const char *dir, const dp_jpos_t *from, dp_jreader_warn_cb warn,
                              void *ud, char **err)
{
    dp_jreader_t *r = dp_xcalloc(1, sizeof *r);
    r->dir = dp_xstrdup(dir);
    r->warn = warn;
    r->ud = ud;
    r->fd = -1;
    msgpack_zone_init(&r->zone, 1024);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        dp_fail(err, DP_EIO, "journal %s: %s", dir,
                errno == ENOENT ? "no such directory" : "not a directory");
        dp_jreader_free(r);
        return NULL;
    }
    if (reader_refresh(r, err) < 0) {
        dp_jreader_free(r);
        return NULL;
    }
    if (from != NULL && from->seq > 0 && r->nsegs > 0) {
        r->next_seq = from->seq;
        r->last_seq = from->seq - 1;
        if (r->segs[0].first > from->seq) {
            reader_warn(r,
                        "journal %s: record %" PRIu64 " is no longer kept (the oldest is %" PRIu64
                        "); reading from the oldest",
                        dir, from->seq, r->segs[0].first);
            r->next_seq = 0;
        } else {
            /* The last segment starting at or before seq. */
            size_t i = 0;
            for (size_t k = 0; k < r->nsegs; k++) {
                if (r->segs[k].first <= from->seq)
                    i = k;
            }
            r->cur_first = r->segs[i].first - 1;
            if (from->segment == r->segs[i].first)
                r->seek_off = from->offset;
        }
    } else if (from != NULL && from->seq > 0) {
        r->next_seq = from->seq;
        r->last_seq = from->seq - 1;
    }
    return r;
}

void dp_jreader_free(dp_jreader_t *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->segs);
    msgpack_zone_destroy(&r->zone);
    free(r->buf);
    free(r->arena.data);
    free(r->dir);
    free(r);
}

static void close_seg(dp_jreader_t *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->blen = 0;
    r->final = false;
}

int dp_jreader_next(dp_jreader_t *r, dp_jrec_t *rec, char **err)
{
    for (;;) {
        if (r->fd < 0) {
            int rc = open_next(r, err);
            if (rc <= 0)
                return rc;
        }
        char path[4096];
        int64_t fs = frame_at(r, r->off);
        if (fs > 0) {
            const char *bad = decode_record(&r->zone, (const char *)r->payload,
                                            (size_t)fs - FRAME_HDR, &r->arena, rec);
            if (bad != NULL) {
                seg_name(path, sizeof path, r);
                reader_warn(r, "journal: %s: record at offset %" PRIu64 " skipped: %s", path,
                            r->off, bad);
                r->skipped += (uint64_t)fs;
                r->off += (uint64_t)fs;
                continue;
            }
            r->off += (uint64_t)fs;
            if (rec->seq < r->next_seq || rec->seq <= r->last_seq)
                continue; /* seeking, or a duplicate */
            r->last_seq = rec->seq;
            return 1;
        }
        /* No whole valid frame here: the end of the data, a record being
         * written, or corruption. A record in progress can only be at the
         * end of the newest segment. Once a newer segment exists the writer
         * is done with this one, but what was read before may have been
         * caught mid-write: read it again before judging it. */
        if (!r->final && has_later(r)) {
            r->final = true;
            r->blen = 0;
            continue;
        }
        struct stat st;
        uint64_t end = fstat(r->fd, &st) == 0 ? (uint64_t)st.st_size : r->off;
        uint64_t at = fs == 0 ? end : resync(r, r->off, end);
        if (at >= end && !r->final)
            return 0; /* follow: the writer may complete it */
        if (at > r->off) {
            seg_name(path, sizeof path, r);
            reader_warn(r, "journal: %s: %s at offset %" PRIu64 " (%" PRIu64 " bytes) skipped",
                        path, fs == 0 ? "incomplete record" : "corrupted data (bad length or CRC)",
                        r->off, at - r->off);
            r->skipped += at - r->off;
            r->off = at;
        }
        if (at >= end)
            close_seg(r);
    }
}

dp_jpos_t dp_jreader_pos(const dp_jreader_t *r)
{
    dp_jpos_t p = {.seq = r->last_seq + 1};
    if (r->fd >= 0) {
        p.segment = r->cur_first;
        p.offset = r->off;
    }
    return p;
}

uint64_t dp_jreader_skipped(const dp_jreader_t *r)
{
    return r->skipped;
}

/* ---- Cursors ------------------------------------------------------------ */

#define CURSOR_MAGIC "DPCUR1\n\0"
#define CURSOR_SIZE  (8 + 24 + 4)

static int cursor_path(char *buf, size_t size, const char *dir, const char *name, char **err)
{
    if (name == NULL || name[0] == '\0' || strpbrk(name, "/\\") != NULL || name[0] == '.')
        return dp_fail(err, DP_EINVAL, "cursor name \"%s\": use letters, digits, - and _",
                       name ? name : "");
    snprintf(buf, size, "%s/cursors/%s", dir, name);
    return 0;
}

int dp_jcursor_load(const char *dir, const char *name, dp_jpos_t *pos, char **err)
{
    memset(pos, 0, sizeof *pos);
    char path[4096];
    int rc = cursor_path(path, sizeof path, dir, name, err);
    if (rc < 0)
        return rc;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT)
            return DP_ENOENT;
        return dp_fail(err, DP_EIO, "cursor %s: %s", path, strerror(errno));
    }
    unsigned char b[CURSOR_SIZE + 1];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n != CURSOR_SIZE || memcmp(b, CURSOR_MAGIC, 8) != 0)
        return dp_fail(err, DP_EINVAL, "cursor %s: not a cursor file (%zu bytes)", path, n);
    if (dp_crc32(0, b, CURSOR_SIZE - 4) != get_u32(b + CURSOR_SIZE - 4))
        return dp_fail(err, DP_EINVAL, "cursor %s: CRC does not match", path);
    pos->segment = get_u64(b + 8);
    pos->offset = get_u64(b + 16);
    pos->seq = get_u64(b + 24);
    return 0;
}

int dp_jcursor_save(const char *dir, const char *name, const dp_jpos_t *pos, char **err)
{
    char path[4096], tmp[4200], cdir[4096];
    int rc = cursor_path(path, sizeof path, dir, name, err);
    if (rc < 0)
        return rc;
    snprintf(cdir, sizeof cdir, "%s/cursors", dir);
    if ((rc = mkdir_p(cdir)) < 0)
        return dp_fail(err, DP_EIO, "cursor: cannot create %s: %s", cdir, strerror(-rc));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unsigned char b[CURSOR_SIZE];
    memcpy(b, CURSOR_MAGIC, 8);
    put_u64(b + 8, pos->segment);
    put_u64(b + 16, pos->offset);
    put_u64(b + 24, pos->seq);
    put_u32(b + CURSOR_SIZE - 4, dp_crc32(0, b, CURSOR_SIZE - 4));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return dp_fail(err, DP_EIO, "cursor %s: %s", tmp, strerror(errno));
    rc = write_all(fd, b, sizeof b);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc == 0)
        fsync_dir(cdir);
    if (rc < 0) {
        unlink(tmp);
        return dp_fail(err, DP_EIO, "cursor %s: %s", path, strerror(-rc));
    }
    return 0;
}
