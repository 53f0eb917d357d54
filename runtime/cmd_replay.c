/* doppel replay: a plant's twins over a recording, in virtual time.
 *
 * The plant is opened in virtual time at the recording's first timestamp (or
 * --from) and its devices are never started: the recording stands in for
 * them. For each sample, time runs to the sample's timestamp (twin timers
 * fire on the way), the sample is written to the store, and the samples of
 * one timestamp are delivered to the twins together, as one loop turn would
 * deliver them live. What the twins produce is written as it happens: every
 * change of a derived tag, every alarm and other event, every command (a
 * dry run: nothing reaches a device). Nothing in the output depends on the
 * wall clock, so the same plant and input give byte-identical output. */
#include "cmd_replay.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "clock.h"
#include "fmtnum.h"
#include "journal.h"
#include "lmsgpack.h"
#include "log.h"
#include "plant.h"
#include "recording.h"
#include "store.h"

/* Samples of one timestamp are delivered together; a very long run of one
 * timestamp is cut into batches of this many (deterministically). */
#define MAX_BATCH 65536

typedef struct {
    const dp_replay_opts_t *o;
    FILE *out;
    dp_replay_stats_t *st;
    dp_plant_t *plant;
    dp_store_t *store;
    dp_sub_t *sub;
    int watched; /* tags 0 .. watched-1 have been looked at for watching */
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    int io_error;
    dp_time_t ts_sec; /* the second whose "YYYY-MM-DDTHH:MM:SS" is in ts_text */
    char ts_text[32];
    char *line; /* one CSV record, built here and written with one fwrite */
    size_t line_len, line_cap;
} replay_t;

/* ---- output ----------------------------------------------------------- */

/* ISO 8601 UTC with milliseconds, or microseconds when the time has them;
 * the date and time of day are formatted once per second. */
static const char *format_ts(replay_t *r, dp_time_t ts)
{
    dp_time_t us = ((ts % DP_US_PER_SEC) + DP_US_PER_SEC) % DP_US_PER_SEC;
    dp_time_t sec = ts - us;
    if (sec != r->ts_sec || r->ts_text[0] == '\0') {
        dp_time_format(sec, r->ts_text, sizeof r->ts_text);
        r->ts_sec = sec;
    }
    /* ts_text is "YYYY-MM-DDTHH:MM:SS.000Z": rewrite the fraction. */
    char *frac = strchr(r->ts_text, '.');
    if (frac == NULL)
        return r->ts_text;
    int digits = us % 1000 == 0 ? 3 : 6;
    int v = (int)(digits == 3 ? us / 1000 : us);
    for (int i = digits; i >= 1; i--, v /= 10)
        frac[i] = (char)('0' + v % 10);
    frac[digits + 1] = 'Z';
    frac[digits + 2] = '\0';
    return r->ts_text;
}

static void reserve(replay_t *r, size_t n)
{
    if (r->line_len + n > r->line_cap) {
        r->line_cap = 2 * (r->line_len + n) + 256;
        r->line = dp_xrealloc(r->line, r->line_cap);
    }
}

static void put(replay_t *r, const char *s, size_t n)
{
    reserve(r, n);
    memcpy(r->line + r->line_len, s, n);
    r->line_len += n;
}

static void putc_(replay_t *r, char c)
{
    reserve(r, 1);
    r->line[r->line_len++] = c;
}

/* A CSV field of n bytes, quoted when it holds a separator or a quote (or
 * always, for string values, so they never read back as numbers). */
static void put_csv(replay_t *r, const char *s, size_t n, bool always_quote)
{
    if (s == NULL)
        return;
    bool quote = always_quote;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!quote) {
        put(r, s, n);
        return;
    }
    putc_(r, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            putc_(r, '"');
        putc_(r, s[i]);
    }
    putc_(r, '"');
}

static void put_str(replay_t *r, const char *s)
{
    if (s != NULL)
        put_csv(r, s, strlen(s), false);
}

static void put_value(replay_t *r, const dp_value_t *v)
{
    char num[DP_FMTNUM_SIZE];
    switch (v->type) {
    case DP_NUM:
        /* The shortest text that reads back exactly: the same on every run. */
        put(r, num, dp_fmtnum(v->u.n, num));
        break;
    case DP_BOOL:
        put(r, v->u.b ? "true" : "false", v->u.b ? 4 : 5);
        break;
    case DP_STR:
        put_csv(r, v->u.s, strlen(v->u.s), true);
        break;
    default:
        break;
    }
}

/* One output record. `value` may be NULL (no value); `data` is a msgpack
 * map (an event's payload) or NULL. `twin` is `twin_len` bytes long (-1: a
 * C string). */
static void emit(replay_t *r, dp_time_t ts, const char *type, const char *twin, int twin_len,
                 const char *name, const dp_value_t *value, const char *detail, const char *data,
                 size_t data_len)
{
    r->st->records++;
    if (r->o->format == DP_REPLAY_CSV) {
        r->line_len = 0;
        const char *t = format_ts(r, ts);
        put(r, t, strlen(t));
        putc_(r, ',');
        put(r, type, strlen(type));
        putc_(r, ',');
        if (twin != NULL)
            put_csv(r, twin, twin_len < 0 ? strlen(twin) : (size_t)twin_len, false);
        putc_(r, ',');
        put_str(r, name);
        putc_(r, ',');
        if (value != NULL)
            put_value(r, value);
        putc_(r, ',');
        put_str(r, detail);
        putc_(r, '\n');
        fwrite(r->line, 1, r->line_len, r->out);
        return;
    }
    msgpack_packer *pk = &r->pk;
    msgpack_pack_map(pk, data != NULL ? 7 : 6);
    dp_mp_pack_str(pk, "ts");
    msgpack_pack_int64(pk, ts);
    dp_mp_pack_str(pk, "type");
    dp_mp_pack_str(pk, type);
    dp_mp_pack_str(pk, "twin");
    if (twin != NULL && twin_len >= 0) {
        msgpack_pack_str(pk, (size_t)twin_len);
        msgpack_pack_str_body(pk, twin, (size_t)twin_len);
    } else {
        dp_mp_pack_str(pk, twin);
    }
    dp_mp_pack_str(pk, "name");
    dp_mp_pack_str(pk, name);
    dp_mp_pack_str(pk, "value");
    if (value != NULL)
        dp_mp_pack_value(pk, value);
    else
        msgpack_pack_nil(pk);
    dp_mp_pack_str(pk, "detail");
    dp_mp_pack_str(pk, detail);
    if (data != NULL) {
        dp_mp_pack_str(pk, "data");
        /* The payload is already one msgpack map: copied as is. */
        msgpack_sbuffer_write(&r->sbuf, data, data_len);
    }
    if (r->sbuf.size >= (1 << 16)) {
        if (fwrite(r->sbuf.data, 1, r->sbuf.size, r->out) != r->sbuf.size)
            r->io_error = errno ? -errno : DP_EIO;
        msgpack_sbuffer_clear(&r->sbuf);
    }
}

/* Derived tag changes, as the twins make them. */
static void on_changes(dp_sub_t *sub, const dp_change_t *ch, size_t n, void *ud)
{
    (void)sub;
    replay_t *r = ud;
    for (size_t i = 0; i < n; i++) {
        const dp_tag_t *t = dp_store_get(r->store, ch[i].tag);
        const char *dot = strchr(t->name, '.');
        r->st->tag_changes++;
        emit(r, ch[i].ts, "tag", t->name, dot ? (int)(dot - t->name) : 0, dot ? dot + 1 : t->name,
             &ch[i].v, ch[i].quality == DP_Q_GOOD ? NULL : dp_quality_name(ch[i].quality), NULL, 0);
    }
}

/* Watches every derived tag not looked at yet (twins may declare tags late). */
static void watch_derived(replay_t *r)
{
    int n = dp_store_count(r->store);
    for (; r->watched < n; r->watched++) {
        if (dp_store_get(r->store, r->watched)->flags & DP_TAG_DERIVED)
            dp_store_watch(r->store, r->sub, r->watched, 0);
    }
}

/* The string value of `key` in a msgpack map, copied into buf ("" if none). */
static void payload_str(const char *data, size_t len, const char *key, char *buf, size_t size)
{
    buf[0] = '\0';
    if (data == NULL)
        return;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *v = dp_mp_map_get(&u.data, key);
        if (v != NULL && v->type == MSGPACK_OBJECT_STR)
            snprintf(buf, size, "%.*s", (int)v->via.str.size, v->via.str.ptr);
    }
    msgpack_unpacked_destroy(&u);
}

static void on_event(const dp_event_t *ev, void *ud)
{
    replay_t *r = ud;
    if (strcmp(ev->kind, "alarm") == 0) {
        char name[128], state[64];
        payload_str(ev->payload, ev->payload_len, "name", name, sizeof name);
        payload_str(ev->payload, ev->payload_len, "state", state, sizeof state);
        dp_value_t v = dp_str(state);
        r->st->alarms++;
        emit(r, ev->ts, "alarm", ev->twin, -1, name, &v, ev->text, ev->payload, ev->payload_len);
        return;
    }
    r->st->events++;
    emit(r, ev->ts, "event", ev->twin, -1, ev->kind, NULL, ev->text, ev->payload, ev->payload_len);
}

static void on_command(const dp_cmd_t *cmd, void *ud)
{
    replay_t *r = ud;
    char detail[512];
    const char *reason = cmd->reason != NULL ? cmd->reason : "";
    snprintf(detail, sizeof detail, "%s%s%s", dp_cmd_outcome_name(cmd->outcome),
             reason[0] ? ": " : "", reason);
    r->st->commands++;
    emit(r, cmd->done_ts ? cmd->done_ts : cmd->ts, "command", cmd->origin, -1, cmd->tag,
         &cmd->value, detail, NULL, 0);
}

/* ---- progress ---------------------------------------------------------- */

static void human(double n, char *buf, size_t size)
{
    if (n >= 1e6)
        snprintf(buf, size, "%.2fM", n / 1e6);
    else if (n >= 1e4)
        snprintf(buf, size, "%.0fk", n / 1e3);
    else
        snprintf(buf, size, "%.0f", n);
}

static void progress(const dp_replay_opts_t *o, double frac, uint64_t samples, uint64_t t0,
                     bool final)
{
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    double rate = secs > 0 ? (double)samples / secs : 0;
    double eta = frac > 0 && !final ? secs * (1 - frac) / frac : 0;
    char n[32], rs[32];
    human((double)samples, n, sizeof n);
    human(rate, rs, sizeof rs);
    if (o->progress == 2) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %3.0f%%  %s samples  %s samples/s  ETA %3.0fs ", bar, frac * 100, n,
                rs, eta);
        if (final)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "replay: %.0f%%, %llu samples, %.0f samples/s, ETA %.0f s\n", frac * 100,
                (unsigned long long)samples, rate, eta);
    }
}

/* --speed N: waits until the wall clock has caught up with virtual time / N. */
static void pace(const dp_replay_opts_t *o, dp_time_t start, dp_time_t ts, uint64_t t0)
{
    double due_ns = (double)(ts - start) * 1000.0 / o->speed;
    double now_ns = (double)(uv_hrtime() - t0);
    if (due_ns > now_ns) {
        double wait = due_ns - now_ns;
        struct timespec req = {.tv_sec = (time_t)(wait / 1e9), .tv_nsec = (long)fmod(wait, 1e9)};
        nanosleep(&req, NULL);
    }
}

/* ---- the replay -------------------------------------------------------- */

/* ---- input: a CSV recording or a journal ---------------------------------- */

typedef struct {
    uint64_t first_seq;
    uint64_t size;
} seg_t;

typedef struct {
    const char *path;
    dp_recording_t *csv;
    dp_jreader_t *jr;
    char *jdir;
    seg_t *segs;
    int nsegs;
    uint64_t total_bytes;
    int *handles; /* CSV keys -> store handles; -1 unknown yet, SKIP derived */
    int nhandles;
    uint64_t derived_skipped, unknown_skipped, jwarnings;
    char first_derived[256], first_unknown[256];
} source_t;

/* One input sample, before it is matched with the plant's tags. */
typedef struct {
    dp_time_t ts;
    int key;          /* CSV: the recording's key; journal: -1 */
    const char *name; /* journal: the tag's name (borrowed) */
    dp_value_t v;     /* DP_NIL: only the quality changed (journal) */
    int quality;
    bool derived; /* the journal says a twin wrote it */
    int line, col;
} in_t;

#define SKIP INT32_MIN

static int cmp_seg(const void *a, const void *b)
{
    const seg_t *x = a, *y = b;
    return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

static void on_jwarn(const char *msg, void *ud)
{
    source_t *src = ud;
    src->jwarnings++;
    dp_log_warn(NULL, "replay: %s", msg);
}

/* A journal directory, or a data dir holding one in journal/. */
static int open_journal(source_t *src, const char *dir, char **err)
{
    char *sub = dp_xasprintf("%s/journal", dir);
    struct stat st;
    src->jdir = stat(sub, &st) == 0 && S_ISDIR(st.st_mode) ? sub : (free(sub), dp_xstrdup(dir));
    DIR *d = opendir(src->jdir);
    if (d == NULL)
        return dp_fail(err, DP_EIO, "%s: %s", src->jdir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".seg") != 0)
            continue;
        char *path = dp_xasprintf("%s/%s", src->jdir, e->d_name);
        if (stat(path, &st) == 0) {
            src->segs = dp_xrealloc(src->segs, sizeof *src->segs * (size_t)(src->nsegs + 1));
            src->segs[src->nsegs++] = (seg_t){strtoull(e->d_name, NULL, 10), (uint64_t)st.st_size};
            src->total_bytes += (uint64_t)st.st_size;
        }
        free(path);
    }
    closedir(d);
    if (src->nsegs == 0)
        return dp_fail(err, DP_ENOENT,
                       "%s: not a CSV recording and no journal segments (*.seg) in it or in "
                       "its journal/ folder",
                       dir);
    qsort(src->segs, (size_t)src->nsegs, sizeof *src->segs, cmp_seg);
    src->jr = dp_jreader_open(src->jdir, NULL, on_jwarn, src, err);
    return src->jr != NULL ? 0 : DP_EIO;
}

static int source_open(source_t *src, const char *path, char **err)
{
    memset(src, 0, sizeof *src);
    src->path = path;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return open_journal(src, path, err);
    src->csv = dp_recording_open(path, err);
    return src->csv != NULL ? 0 : DP_EINVAL;
}

static void source_close(source_t *src)
{
    dp_recording_free(src->csv);
    dp_jreader_free(src->jr);
    free(src->jdir);
    free(src->segs);
    free(src->handles);
}

/* The next sample: 1, 0 at the end, <0 with *err. Journal events and commands
 * are skipped: the twins raise them again. */
static int source_next(source_t *src, in_t *in, char **err)
{
    if (src->csv != NULL) {
        dp_rec_sample_t s;
        int rc = dp_recording_next(src->csv, &s, err);
        if (rc <= 0)
            return rc;
        *in = (in_t){.ts = s.ts,
                     .key = s.key,
                     .name = dp_recording_key_name(src->csv, s.key),
                     .v = s.v,
                     .quality = s.quality,
                     .line = s.line,
                     .col = s.col};
        return 1;
    }
    for (;;) {
        dp_jrec_t rec;
        int rc = dp_jreader_next(src->jr, &rec, err);
        if (rc <= 0)
            return rc;
        if (rec.type != DP_JREC_SAMPLE || rec.tag == NULL)
            continue;
        *in = (in_t){.ts = rec.ts,
                     .key = -1,
                     .name = rec.tag,
                     .v = rec.value,
                     .quality = rec.quality,
                     .derived = (rec.flags & DP_JSAMPLE_DERIVED) != 0};
        return 1;
    }
}

/* The store handle for a sample: >= 0, SKIP (derived, or unknown in a
 * journal), or <0 with *err (unknown in a CSV recording). */
static int source_resolve(source_t *src, dp_store_t *store, const char *plant, const in_t *in,
                          char **err)
{
    int h;
    if (src->csv != NULL) {
        while (in->key >= src->nhandles) {
            int n = src->nhandles ? src->nhandles * 2 : 64;
            src->handles = dp_xrealloc(src->handles, sizeof *src->handles * (size_t)n);
            for (int i = src->nhandles; i < n; i++)
                src->handles[i] = -1;
            src->nhandles = n;
        }
        h = src->handles[in->key];
        if (h != -1)
            goto found;
        h = dp_store_find(store, in->name);
        if (h < 0)
            return dp_fail(
                err, DP_ENOENT, "%s:%d:%d: no tag \"%s\" in plant %s", src->path, in->line,
                dp_recording_wide(src->csv) ? dp_recording_key_col(src->csv, in->key) : in->col,
                in->name, plant);
    } else {
        h = dp_store_find(store, in->name);
        if (h < 0) {
            /* A journal of an older version of the plant: tags it no longer has. */
            if (src->unknown_skipped++ == 0)
                snprintf(src->first_unknown, sizeof src->first_unknown, "%s", in->name);
            return SKIP;
        }
    }
    /* Derived tags are the twins' to compute: a recording of them (a journal
     * of a live run) is not fed back. */
    if (in->derived || (dp_store_get(store, h)->flags & DP_TAG_DERIVED)) {
        if (src->first_derived[0] == '\0')
            snprintf(src->first_derived, sizeof src->first_derived, "%s", in->name);
        h = SKIP;
    }
    if (src->csv != NULL)
        src->handles[in->key] = h;
found:
    if (h == SKIP)
        src->derived_skipped++;
    return h;
}

/* Fraction of the input read so far. */
static double source_progress(const source_t *src)
{
    if (src->csv != NULL) {
        uint64_t size = dp_recording_size(src->csv);
        return size > 0 ? (double)dp_recording_offset(src->csv) / (double)size : 1;
    }
    dp_jpos_t pos = dp_jreader_pos(src->jr);
    uint64_t done = 0;
    for (int i = 0; i < src->nsegs && src->segs[i].first_seq < pos.segment; i++)
        done += src->segs[i].size;
    done += pos.offset;
    return src->total_bytes > 0 ? (double)done / (double)src->total_bytes : 1;
}

/* ---- the replay -------------------------------------------------------- */

int dp_replay_run(const dp_replay_opts_t *o, dp_replay_stats_t *st, char **err)
{
    memset(st, 0, sizeof *st);
    source_t src;
    replay_t r = {.o = o, .st = st};
    int rc = source_open(&src, o->input, err);
    if (rc < 0)
        goto out;

    /* The first sample in range sets the start of virtual time. */
    in_t s;
    int got;
    while ((got = source_next(&src, &s, err)) > 0 && o->has_from && s.ts < o->from)
        st->skipped++;
    if (got < 0) {
        rc = got;
        goto out;
    }
    dp_time_t start = o->has_from ? o->from : got > 0 ? s.ts : 0;
    if (got == 0 && !o->has_from) {
        rc = dp_fail(err, DP_EINVAL, "%s: no samples in the %s", o->input,
                     src.csv != NULL ? "recording" : "journal");
        goto out;
    }
    st->start = st->end = start;

    /* Until the plant is open, output goes to memory: on_start may raise
     * events and commands, and a plant that fails to open leaves no file. */
    char *early = NULL;
    size_t early_len = 0;
    r.out = open_memstream(&early, &early_len);
    msgpack_sbuffer_init(&r.sbuf);
    msgpack_packer_init(&r.pk, &r.sbuf, msgpack_sbuffer_write);
    if (o->format == DP_REPLAY_CSV)
        fputs("timestamp,type,twin,name,value,detail\n", r.out);
    /* A dry run: commands are judged by the guard and written out; none is
     * sent to a device (device-less setpoints are written to the store). */
    dp_plant_opts_t po = {.path = o->plant,
                          .start = start,
                          .dry_run = true,
                          .on_event = on_event,
                          .event_ud = &r,
                          .on_command = on_command,
                          .command_ud = &r};
    r.plant = dp_plant_open(&po, err);
    fclose(r.out);
    r.out = NULL;
    if (r.plant == NULL) {
        free(early);
        rc = DP_EINVAL;
        goto out;
    }
    r.store = dp_plant_store(r.plant);
    dp_log_set_clock(dp_plant_clock(r.plant));
    r.out = o->out != NULL ? fopen(o->out, "wb") : stdout;
    if (r.out == NULL) {
        free(early);
        rc = dp_fail(err, DP_EIO, "--out %s: %s", o->out, strerror(errno));
        goto out;
    }
    setvbuf(r.out, NULL, _IOFBF, 1 << 16);
    if (early_len > 0 && fwrite(early, 1, early_len, r.out) != early_len)
        r.io_error = DP_EIO;
    free(early);
    /* The derived tags' values after on_start, then every change. */
    r.sub = dp_store_sub_new(r.store, on_changes, &r);
    for (int i = 0; i < dp_store_count(r.store); i++) {
        const dp_tag_t *t = dp_store_get(r.store, i);
        if ((t->flags & DP_TAG_DERIVED) && t->v.type != DP_NIL) {
            dp_change_t ch = {.tag = i, .v = t->v, .ts = t->ts, .quality = t->quality};
            on_changes(r.sub, &ch, 1, &r);
        }
    }
    watch_derived(&r);

    /* Wide files name their tags up front: check them all before running. */
    if (src.csv != NULL && dp_recording_wide(src.csv)) {
        for (int k = 0; k < dp_recording_keys(src.csv); k++) {
            if (dp_store_find(r.store, dp_recording_key_name(src.csv, k)) < 0) {
                rc = dp_fail(err, DP_ENOENT, "%s:%d:%d: no tag \"%s\" in plant %s", o->input, 1,
                             dp_recording_key_col(src.csv, k), dp_recording_key_name(src.csv, k),
                             dp_plant_name(r.plant));
                goto out;
            }
        }
    }

    uint64_t t0 = uv_hrtime(), last_progress = t0;
    dp_time_t last = start;
    size_t batch = 0;
    dp_clock_t *clock = dp_plant_clock(r.plant);
    for (; got > 0; got = source_next(&src, &s, err)) {
        if (o->has_to && s.ts > o->to) {
            st->skipped++;
            continue;
        }
        int h = source_resolve(&src, r.store, dp_plant_name(r.plant), &s, err);
        if (h == SKIP) {
            st->skipped++;
            continue;
        }
        if (h < 0) {
            rc = h;
            goto out;
        }
        if (s.ts != last || batch >= MAX_BATCH) {
            if (o->speed > 0)
                pace(o, start, s.ts, t0);
            if (s.ts > dp_clock_now(clock))
                st->timer_events += dp_plant_run_until(r.plant, s.ts);
            else
                dp_plant_flush(r.plant);
            watch_derived(&r);
            last = s.ts;
            batch = 0;
        }
        if (s.v.type == DP_NIL)
            dp_store_set_quality(r.store, h, s.quality);
        else
            dp_store_write(r.store, h, &s.v, s.ts, s.quality);
        batch++;
        st->samples++;
        if (o->progress && (st->samples & 4095) == 0) {
            uint64_t now = uv_hrtime();
            uint64_t every = o->progress == 2 ? 100000000u : 5000000000u;
            if (now - last_progress >= every) {
                progress(o, source_progress(&src), st->samples, t0, false);
                last_progress = now;
            }
        }
        if (r.io_error)
            break;
    }
    if (got < 0) {
        rc = got;
        goto out;
    }
    dp_time_t end = o->has_to ? o->to : last;
    if (end < dp_clock_now(clock))
        end = dp_clock_now(clock);
    st->timer_events += dp_plant_run_until(r.plant, end);
    dp_plant_flush(r.plant);
    st->end = end;
    st->wall_s = (double)(uv_hrtime() - t0) / 1e9;
    if (o->progress)
        progress(o, 1, st->samples, t0, true);
    if (src.derived_skipped > 0)
        dp_log_warn(NULL,
                    "skipped %llu samples of derived tags (first: %s): the twins compute them",
                    (unsigned long long)src.derived_skipped, src.first_derived);
    if (src.unknown_skipped > 0)
        dp_log_warn(NULL, "skipped %llu samples of tags the plant does not have (first: %s)",
                    (unsigned long long)src.unknown_skipped, src.first_unknown);
out:
    if (r.out != NULL) {
        if (r.sbuf.size > 0 && fwrite(r.sbuf.data, 1, r.sbuf.size, r.out) != r.sbuf.size &&
            !r.io_error)
            r.io_error = DP_EIO;
        if (fflush(r.out) != 0 && !r.io_error)
            r.io_error = DP_EIO;
        if (r.out != stdout && fclose(r.out) != 0 && !r.io_error)
            r.io_error = DP_EIO;
        if (r.io_error && rc == 0)
            rc = dp_fail(err, DP_EIO, "writing %s: %s", o->out ? o->out : "standard output",
                         strerror(errno));
    }
    msgpack_sbuffer_destroy(&r.sbuf);
    free(r.line);
    if (r.sub != NULL)
        dp_store_sub_free(r.store, r.sub);
    if (r.plant != NULL) {
        dp_log_set_clock(NULL);
        dp_plant_free(r.plant);
    }
    source_close(&src);
    return rc;
}

/* ---- the command ------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int dp_cmd_replay(int argc, char **argv, const char *input, const char *speed, const char *from,
                  const char *to, const char *out, const char *format)
{
    if (argc != 1) {
        fprintf(stderr,
                "doppel replay: expected one plant file, got %d arguments (usage: doppel "
                "replay PLANT --input RECORDING)\n",
                argc);
        return 2;
    }
    if (input == NULL) {
        fprintf(stderr, "doppel replay: --input RECORDING is required\n");
        return 2;
    }
    dp_replay_opts_t o = {.plant = argv[0], .input = input, .out = out};
    char *err = NULL;
    if (speed != NULL && strcmp(speed, "max") != 0) {
        char *end = NULL;
        o.speed = strtod(speed, &end);
        if (end == speed || *end != '\0' || !(o.speed > 0) || !isfinite(o.speed)) {
            fprintf(stderr,
                    "doppel replay: --speed: expected \"max\" or a factor > 0 (e.g. 3600), got "
                    "\"%s\"\n",
                    speed);
            return 2;
        }
    }
    if (from != NULL) {
        if (dp_time_parse(from, &o.from, &err) < 0) {
            fprintf(stderr, "doppel replay: --from: %s\n", err);
            free(err);
            return 2;
        }
        o.has_from = true;
    }
    if (to != NULL) {
        if (dp_time_parse(to, &o.to, &err) < 0) {
            fprintf(stderr, "doppel replay: --to: %s\n", err);
            free(err);
            return 2;
        }
        o.has_to = true;
    }
    if (o.has_from && o.has_to && o.to < o.from) {
        fprintf(stderr, "doppel replay: --to is before --from\n");
        return 2;
    }
    if (format != NULL) {
        if (strcmp(format, "csv") == 0) {
            o.format = DP_REPLAY_CSV;
        } else if (strcmp(format, "msgpack") == 0) {
            o.format = DP_REPLAY_MSGPACK;
        } else {
            fprintf(stderr, "doppel replay: --format: expected csv or msgpack, got \"%s\"\n",
                    format);
            return 2;
        }
    } else if (out != NULL &&
               (ends_with(out, ".msgpack") || ends_with(out, ".mpk") || ends_with(out, ".mp"))) {
        o.format = DP_REPLAY_MSGPACK;
    }
    if (o.format == DP_REPLAY_MSGPACK && out == NULL && isatty(STDOUT_FILENO)) {
        fprintf(stderr, "doppel replay: not writing msgpack to a terminal; give --out FILE\n");
        return 2;
    }
    o.progress = isatty(STDERR_FILENO) ? 2 : 1;
    dp_replay_stats_t st;
    int rc = dp_replay_run(&o, &st, &err);
    if (rc < 0) {
        fprintf(stderr, "doppel replay: %s\n", err ? err : dp_strerror(rc));
        free(err);
        return 1;
    }
    char span[32];
    dp_duration_format(st.end - st.start, span, sizeof span);
    double secs = st.wall_s > 0 ? st.wall_s : 1e-9;
    fprintf(stderr,
            "replayed %llu samples (%s of plant time) in %.2f s: %.0f samples/s, %.0fx real "
            "time; %llu derived tag changes, %llu alarm events, %llu other events, %llu commands "
            "-> %s\n",
            (unsigned long long)st.samples, span, st.wall_s, (double)st.samples / secs,
            (double)(st.end - st.start) / 1e6 / secs, (unsigned long long)st.tag_changes,
            (unsigned long long)st.alarms, (unsigned long long)st.events,
            (unsigned long long)st.commands, out ? out : "standard output");
    return 0;
}
