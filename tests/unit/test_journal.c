/* Journal: round trips, rotation, retention, torn tails, corruption,
 * cursors, following a live journal and durable callbacks on a loop. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/journal.h"
#include "runtime/log.h"

static th_log_t logs;

static void setup(void)
{
    memset(&logs, 0, sizeof logs);
    dp_log_set_hook(th_log_hook, &logs);
    dp_log_set_level(DP_LOG_INFO);
}

static void teardown(void)
{
    dp_log_set_hook(NULL, NULL);
}

TestSuite(journal, .init = setup, .fini = teardown);

/* Reader warnings collected by the tests. */
typedef struct {
    char msgs[16][512];
    int n;
} warns_t;

static void on_warn(const char *msg, void *ud)
{
    warns_t *w = ud;
    if (w->n < 16)
        snprintf(w->msgs[w->n++], sizeof w->msgs[0], "%s", msg);
}

static bool warned(const warns_t *w, const char *needle)
{
    for (int i = 0; i < w->n; i++) {
        if (strstr(w->msgs[i], needle) != NULL)
            return true;
    }
    return false;
}

static dp_journal_t *jopen(const char *dir, const dp_journal_opts_t *o)
{
    char *err = NULL;
    dp_journal_t *j = dp_journal_open(dir, NULL, o, 0, &err);
    cr_assert_not_null(j, "open: %s", err ? err : "?");
    return j;
}

static void append_n(dp_journal_t *j, int from, int n)
{
    char tag[32];
    for (int i = from; i < from + n; i++) {
        snprintf(tag, sizeof tag, "T%d.x", i % 7);
        dp_value_t v = dp_num(i);
        uint64_t seq = dp_journal_append_sample(j, tag, &v, T0 + i, DP_Q_GOOD, 0);
        cr_assert_eq(seq, (uint64_t)i);
    }
}

/* Reads every record and checks they are samples numbered first..last. */
static int read_all(const char *dir, uint64_t first, warns_t *w)
{
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, on_warn, w, &err);
    cr_assert_not_null(r, "%s", err ? err : "?");
    dp_jrec_t rec;
    int n = 0, rc;
    uint64_t expect = first;
    while ((rc = dp_jreader_next(r, &rec, &err)) == 1) {
        cr_assert_eq(rec.type, DP_JREC_SAMPLE);
        cr_assert_eq(rec.seq, expect, "seq %llu, expected %llu", (unsigned long long)rec.seq,
                     (unsigned long long)expect);
        cr_assert_eq(rec.value.u.n, (double)rec.seq);
        expect++;
        n++;
    }
    cr_assert_eq(rc, 0, "%s", err ? err : "?");
    dp_jreader_free(r);
    return n;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (l > s && strcmp(e->d_name + l - s, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Path of the newest segment in dir. */
static void newest_segment(const char *dir, char *out, size_t size)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    char best[300] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l == 24 && strcmp(e->d_name + 20, ".seg") == 0 && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    cr_assert(best[0] != '\0', "no segment in %s", dir);
    snprintf(out, size, "%s/%s", dir, best);
}

static off_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return st.st_size;
}

Test(journal, crc32_matches_zlib)
{
    /* The standard check value of CRC-32/IEEE. */
    cr_assert_eq(dp_crc32(0, "123456789", 9), 0xCBF43926u);
    /* Continuing a CRC gives the CRC of the concatenation. */
    uint32_t c = dp_crc32(dp_crc32(0, "12345", 5), "6789", 4);
    cr_assert_eq(c, 0xCBF43926u);
    cr_assert_eq(dp_crc32(0, "", 0), 0u);
}

Test(journal, round_trip_of_every_record_type)
{
    char *dir = th_tmpdir();
    dp_journal_t *j = jopen(dir, NULL);
    dp_value_t v = dp_num(12.5);
    cr_assert_eq(dp_journal_append_sample(j, "P101.flow", &v, T0 + 1, DP_Q_GOOD, 0), 1u);
    dp_value_t s = dp_str("open");
    cr_assert_eq(
        dp_journal_append_sample(j, "V1.state", &s, T0 + 2, DP_Q_UNCERTAIN, DP_JSAMPLE_DERIVED),
        2u);
    cr_assert_eq(dp_journal_append_sample(j, "V1.state", NULL, T0 + 3, DP_Q_BAD, 0), 3u);
    dp_value_t b = dp_bool(true);
    cr_assert_eq(dp_journal_append_sample(j, "P101.running", &b, T0 + 4, DP_Q_GOOD, 0), 4u);
    const char payload[] = "\x81\xa5level\xa4high";
    dp_event_t ev = {.ts = T0 + 5,
                     .twin = "P101",
                     .kind = "alarm",
                     .text = "vibration high",
                     .payload = payload,
                     .payload_len = sizeof payload - 1};
    cr_assert_eq(dp_journal_append_event(j, &ev), 5u);
    dp_event_t ev2 = {.ts = T0 + 6, .kind = "reload", .text = "plant"};
    cr_assert_eq(dp_journal_append_event(j, &ev2), 6u);
    dp_value_t sp = dp_num(1450);
    cr_assert_eq(
        dp_journal_append_command(j, T0 + 7, "P101", "P101.speed_sp", &sp, "done", "written"), 7u);
    cr_assert_eq(dp_journal_last_seq(j), 7u);
    cr_assert_eq(dp_journal_sync(j), 0);
    cr_assert_eq(dp_journal_durable(j), 7u);
    dp_journal_stats_t st;
    dp_journal_get_stats(j, &st);
    cr_assert_eq(st.records, 7u);
    cr_assert_eq(st.segments, 1u);
    cr_assert_geq(st.fsyncs, 1u);
    dp_journal_close(j);

    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    cr_assert_not_null(r);
    dp_jrec_t rec;
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.type, DP_JREC_SAMPLE);
    cr_assert_eq(rec.seq, 1u);
    cr_assert_eq(rec.ts, T0 + 1);
    cr_assert_str_eq(rec.tag, "P101.flow");
    cr_assert_eq(rec.value.type, DP_NUM);
    cr_assert_eq(rec.value.u.n, 12.5);
    cr_assert_eq(rec.quality, DP_Q_GOOD);
    cr_assert_eq(rec.flags, 0u);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_str_eq(rec.tag, "V1.state");
    cr_assert_eq(rec.value.type, DP_STR);
    cr_assert_str_eq(rec.value.u.s, "open");
    cr_assert_eq(rec.quality, DP_Q_UNCERTAIN);
    cr_assert_eq(rec.flags, DP_JSAMPLE_DERIVED);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.value.type, DP_NIL);
    cr_assert_eq(rec.quality, DP_Q_BAD);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.value.type, DP_BOOL);
    cr_assert(rec.value.u.b);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.type, DP_JREC_EVENT);
    cr_assert_str_eq(rec.twin, "P101");
    cr_assert_str_eq(rec.kind, "alarm");
    cr_assert_str_eq(rec.text, "vibration high");
    cr_assert_eq(rec.payload_len, sizeof payload - 1);
    cr_assert_eq(memcmp(rec.payload, payload, rec.payload_len), 0);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_null(rec.twin);
    cr_assert_null(rec.payload);
    cr_assert_str_eq(rec.kind, "reload");
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.type, DP_JREC_COMMAND);
    cr_assert_str_eq(rec.twin, "P101");
    cr_assert_str_eq(rec.tag, "P101.speed_sp");
    cr_assert_eq(rec.value.u.n, 1450);
    cr_assert_str_eq(rec.kind, "done");
    cr_assert_str_eq(rec.text, "written");
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 0);
    cr_assert_eq(dp_jreader_skipped(r), 0u);
    dp_jreader_free(r);
    th_rmdir(dir);
}

Test(journal, numbering_continues_after_reopen_and_min_seq)
{
    char *dir = th_tmpdir();
    dp_journal_t *j = jopen(dir, NULL);
    append_n(j, 1, 10);
    dp_journal_close(j);
    j = jopen(dir, NULL);
    cr_assert_eq(dp_journal_last_seq(j), 10u);
    append_n(j, 11, 5);
    dp_journal_close(j);
    cr_assert_eq(read_all(dir, 1, NULL), 15);

    char *err = NULL;
    j = dp_journal_open(dir, NULL, NULL, 100, &err);
    cr_assert_not_null(j);
    dp_value_t v = dp_num(101);
    cr_assert_eq(dp_journal_append_sample(j, "a.b", &v, T0, 0, 0), 101u);
    dp_journal_close(j);
    th_rmdir(dir);
}

Test(journal, rotation_and_reading_across_segments)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 1024};
    dp_journal_t *j = jopen(dir, &o);
    for (int k = 0; k < 10; k++) {
        append_n(j, 1 + k * 100, 100);
        dp_journal_commit(j);
    }
    cr_assert_eq(dp_journal_sync(j), 0);
    dp_journal_stats_t st;
    dp_journal_get_stats(j, &st);
    dp_journal_close(j);
    cr_assert_gt(st.segments, 10u, "only %llu segments", (unsigned long long)st.segments);
    cr_assert_eq(count_files(dir, ".seg"), (int)st.segments);
    /* No segment grows much beyond the limit: rotation happens at a record. */
    cr_assert_eq(read_all(dir, 1, NULL), 1000);

    /* Seeking by seq alone lands on the right record in the right segment. */
    char *err = NULL;
    dp_jpos_t from = {.seq = 777};
    dp_jreader_t *r = dp_jreader_open(dir, &from, NULL, NULL, &err);
    dp_jrec_t rec;
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.seq, 777u);
    dp_jreader_free(r);
    th_rmdir(dir);
}

Test(journal, retention_by_size_keeps_protected_segments)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 2048, .retain_size = 8192};
    dp_journal_t *j = jopen(dir, &o);
    dp_journal_protect(j, 150);
    for (int k = 0; k < 20; k++) {
        append_n(j, 1 + k * 50, 50);
        dp_journal_commit(j);
    }
    dp_journal_sync(j);
    dp_journal_stats_t st;
    dp_journal_get_stats(j, &st);
    /* Protection holds: record 150 and everything after it are still there. */
    char *err = NULL;
    dp_jpos_t from = {.seq = 150};
    dp_jreader_t *r = dp_jreader_open(dir, &from, NULL, NULL, &err);
    dp_jrec_t rec;
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.seq, 150u);
    dp_jreader_free(r);

    /* Lifted: the next rotation drops down to the size limit. */
    dp_journal_protect(j, 0);
    append_n(j, 1001, 100);
    dp_journal_sync(j);
    dp_journal_get_stats(j, &st);
    dp_journal_close(j);
    cr_assert_gt(st.dropped, 0u);
    uint64_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".seg") == NULL)
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        total += (uint64_t)file_size(p);
    }
    closedir(d);
    /* At most the limit plus the segment being written. */
    cr_assert_leq(total, 8192u + 2048u + 256u, "%llu bytes kept", (unsigned long long)total);

    /* A reader asking for a dropped record starts at the oldest, with a warning. */
    warns_t w = {0};
    from.seq = 1;
    r = dp_jreader_open(dir, &from, on_warn, &w, &err);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_gt(rec.seq, 1u);
    cr_assert(warned(&w, "no longer kept"), "%s", w.msgs[0]);
    dp_jreader_free(r);
    th_rmdir(dir);
}

Test(journal, retention_by_age)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 512};
    dp_journal_t *j = jopen(dir, &o);
    append_n(j, 1, 100);
    dp_journal_close(j);
    int before = count_files(dir, ".seg");
    cr_assert_gt(before, 2);
    /* Make every segment two days old. */
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".seg") == NULL)
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct timespec ts[2] = {{.tv_sec = time(NULL) - 2 * 86400},
                                 {.tv_sec = time(NULL) - 2 * 86400}};
        utimensat(AT_FDCWD, p, ts, 0);
    }
    closedir(d);
    o.retain = 86400 * DP_US_PER_SEC;
    j = jopen(dir, &o);
    append_n(j, 101, 30);
    dp_journal_sync(j);
    dp_journal_close(j);
    /* The old ones are gone; the fresh ones stay. */
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    dp_jrec_t rec;
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_gt(rec.seq, 100u - 20u);
    dp_jreader_free(r);
    th_rmdir(dir);
}

Test(journal, torn_tail_is_cut_and_logged)
{
    char *dir = th_tmpdir();
    dp_journal_t *j = jopen(dir, NULL);
    append_n(j, 1, 20);
    dp_journal_close(j);
    char seg[600];
    newest_segment(dir, seg, sizeof seg);
    off_t size = file_size(seg);
    /* Tear the last record: drop its last 3 bytes. */
    cr_assert_eq(truncate(seg, size - 3), 0);
    warns_t w = {0};
    /* A reader does not take the torn record for data (nor for corruption:
     * it may be a record being written). */
    cr_assert_eq(read_all(dir, 1, &w), 19);
    cr_assert_eq(w.n, 0);

    j = jopen(dir, NULL);
    cr_assert(th_logged(&logs, "torn tail cut"), "not logged");
    cr_assert(th_logged(&logs, "after record 19"));
    cr_assert_eq(dp_journal_last_seq(j), 19u);
    append_n(j, 20, 5);
    dp_journal_close(j);
    cr_assert_eq(read_all(dir, 1, &w), 24);
    cr_assert_eq(w.n, 0, "%s", w.msgs[0]);
    th_rmdir(dir);
}

Test(journal, torn_header_and_garbage_tail)
{
    char *dir = th_tmpdir();
    dp_journal_t *j = jopen(dir, NULL);
    append_n(j, 1, 5);
    dp_journal_close(j);
    char seg[600];
    newest_segment(dir, seg, sizeof seg);
    FILE *f = fopen(seg, "ab");
    fwrite("\x07\x00", 1, 2, f); /* half a frame header */
    fclose(f);
    j = jopen(dir, NULL);
    cr_assert(th_logged(&logs, "incomplete record header"));
    dp_journal_close(j);
    f = fopen(seg, "ab");
    fwrite("garbage garbage garbage garbage", 1, 31, f);
    fclose(f);
    j = jopen(dir, NULL);
    cr_assert(th_logged(&logs, "bad length or CRC"));
    cr_assert_eq(dp_journal_last_seq(j), 5u);
    dp_journal_close(j);
    cr_assert_eq(read_all(dir, 1, NULL), 5);
    th_rmdir(dir);
}

Test(journal, corrupted_record_is_skipped_and_reported)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 4096};
    dp_journal_t *j = jopen(dir, &o);
    append_n(j, 1, 300);
    dp_journal_close(j);
    /* Flip a byte inside a record in the middle of the first segment. */
    char seg[600];
    snprintf(seg, sizeof seg, "%s/%020d.seg", dir, 1);
    int fd = open(seg, O_RDWR);
    cr_assert_geq(fd, 0);
    unsigned char c;
    cr_assert_eq(pread(fd, &c, 1, 400), 1);
    c ^= 0x5a;
    cr_assert_eq(pwrite(fd, &c, 1, 400), 1);
    close(fd);

    warns_t w = {0};
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, on_warn, &w, &err);
    dp_jrec_t rec;
    int n = 0, rc;
    uint64_t prev = 0, gaps = 0;
    while ((rc = dp_jreader_next(r, &rec, &err)) == 1) {
        if (rec.seq != prev + 1)
            gaps++;
        prev = rec.seq;
        n++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(prev, 300u);
    cr_assert_eq(n, 299, "read %d records", n); /* exactly one lost */
    cr_assert_eq(gaps, 1u);
    cr_assert_eq(w.n, 1);
    cr_assert(warned(&w, "corrupted data"), "%s", w.msgs[0]);
    cr_assert(warned(&w, "00000000000000000001.seg"), "%s", w.msgs[0]);
    cr_assert_gt(dp_jreader_skipped(r), 0u);
    dp_jreader_free(r);
    th_rmdir(dir);
}

Test(journal, garbage_segment_is_skipped)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 1024};
    dp_journal_t *j = jopen(dir, &o);
    append_n(j, 1, 100);
    dp_journal_close(j);
    char seg[600];
    snprintf(seg, sizeof seg, "%s/%020d.seg", dir, 1);
    FILE *f = fopen(seg, "wb");
    fputs("this is not a journal at all", f);
    fclose(f);
    warns_t w = {0};
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, on_warn, &w, &err);
    dp_jrec_t rec;
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_gt(rec.seq, 1u);
    cr_assert(warned(&w, "not a journal segment"), "%s", w.msgs[0]);
    dp_jreader_free(r);
    th_rmdir(dir);
}

Test(journal, newest_segment_of_garbage_is_moved_aside)
{
    char *dir = th_tmpdir();
    dp_journal_t *j = jopen(dir, NULL);
    append_n(j, 1, 10);
    dp_journal_close(j);
    char seg[600];
    snprintf(seg, sizeof seg, "%s/%020d.seg", dir, 11);
    FILE *f = fopen(seg, "wb");
    fputs("DPJRNL1\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", f);
    fclose(f);
    j = jopen(dir, NULL);
    cr_assert(th_logged(&logs, "holds no whole record"));
    cr_assert_eq(dp_journal_last_seq(j), 10u);
    dp_journal_close(j);
    cr_assert_eq(count_files(dir, ".corrupt"), 1);
    cr_assert_eq(read_all(dir, 1, NULL), 10);
    th_rmdir(dir);
}

Test(journal, cursor_resume)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 2048};
    dp_journal_t *j = jopen(dir, &o);
    append_n(j, 1, 200);
    dp_journal_close(j);
    char *err = NULL;
    dp_jpos_t pos;
    cr_assert_eq(dp_jcursor_load(dir, "mqtt", &pos, &err), DP_ENOENT);
    cr_assert_eq(pos.seq, 0u);

    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    dp_jrec_t rec;
    for (int i = 0; i < 123; i++)
        cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    pos = dp_jreader_pos(r);
    cr_assert_eq(pos.seq, 124u);
    cr_assert_gt(pos.segment, 1u);
    dp_jreader_free(r);
    cr_assert_eq(dp_jcursor_save(dir, "mqtt", &pos, &err), 0, "%s", err);

    dp_jpos_t back;
    cr_assert_eq(dp_jcursor_load(dir, "mqtt", &back, &err), 0);
    cr_assert_eq(back.seq, pos.seq);
    cr_assert_eq(back.segment, pos.segment);
    cr_assert_eq(back.offset, pos.offset);
    r = dp_jreader_open(dir, &back, NULL, NULL, &err);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 1);
    cr_assert_eq(rec.seq, 124u);
    dp_jreader_free(r);

    /* A corrupted cursor is refused with a clear message. */
    char path[600];
    snprintf(path, sizeof path, "%s/cursors/mqtt", dir);
    int fd = open(path, O_RDWR);
    unsigned char c = 0xff;
    pwrite(fd, &c, 1, 20);
    close(fd);
    cr_assert_eq(dp_jcursor_load(dir, "mqtt", &back, &err), DP_EINVAL);
    cr_assert(strstr(err, "CRC") != NULL, "%s", err);
    free(err);
    err = NULL;
    cr_assert_eq(dp_jcursor_save(dir, "../x", &pos, &err), DP_EINVAL);
    free(err);
    th_rmdir(dir);
}

Test(journal, follow_while_writing)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_INTERVAL, .segment_size = 1024};
    dp_journal_t *j = jopen(dir, &o);
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    cr_assert_not_null(r);
    dp_jrec_t rec;
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 0); /* nothing yet */
    uint64_t seen = 0;
    for (int round = 0; round < 20; round++) {
        append_n(j, round * 37 + 1, 37);
        cr_assert_eq(dp_journal_sync(j), 0);
        int rc;
        while ((rc = dp_jreader_next(r, &rec, &err)) == 1) {
            cr_assert_eq(rec.seq, seen + 1);
            seen = rec.seq;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(seen, (uint64_t)(round + 1) * 37);
    }
    /* A record half written (as a reader may see it) is not returned yet. */
    dp_journal_close(j);
    char seg[600];
    newest_segment(dir, seg, sizeof seg);
    FILE *f = fopen(seg, "ab");
    fwrite("\x10\x00\x00\x00\x01\x02", 1, 6, f);
    fclose(f);
    cr_assert_eq(dp_jreader_next(r, &rec, &err), 0);
    cr_assert_eq(dp_jreader_skipped(r), 0u);
    dp_jreader_free(r);
    th_rmdir(dir);
}

/* ---- with a loop -------------------------------------------------------- */

typedef struct {
    uint64_t durable;
    int calls;
    uv_timer_t stop;
    dp_journal_t *j;
} loop_ctx_t;

static void on_durable(dp_journal_t *j, uint64_t durable, void *ud)
{
    loop_ctx_t *c = ud;
    cr_assert_eq(j, c->j);
    cr_assert_gt(durable, c->durable, "durable went backwards");
    c->durable = durable;
    c->calls++;
    if (durable >= 500)
        uv_timer_stop(&c->stop);
}

static void on_stop(uv_timer_t *t)
{
    (void)t;
    cr_assert_fail("durable callback never reached 500");
}

static void run_policy(dp_journal_fsync_t policy)
{
    char *dir = th_tmpdir();
    uv_loop_t loop;
    uv_loop_init(&loop);
    dp_journal_opts_t o = {.fsync = policy, .commit = 2 * DP_US_PER_MS};
    char *err = NULL;
    dp_journal_t *j = dp_journal_open(dir, &loop, &o, 0, &err);
    cr_assert_not_null(j);
    loop_ctx_t c = {.j = j};
    dp_journal_on_durable(j, on_durable, &c);
    uv_timer_init(&loop, &c.stop);
    uv_timer_start(&c.stop, on_stop, 20000, 0);
    append_n(j, 1, 500);
    while (c.durable < 500 && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    cr_assert_eq(c.durable, 500u);
    cr_assert_eq(dp_journal_durable(j), 500u);
    uv_close((uv_handle_t *)&c.stop, NULL);
    dp_journal_close(j);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    cr_assert_eq(read_all(dir, 1, NULL), 500);
    th_rmdir(dir);
}

Test(journal, durable_callback_always)
{
    run_policy(DP_JFSYNC_ALWAYS);
}

Test(journal, durable_callback_interval)
{
    run_policy(DP_JFSYNC_INTERVAL);
}

Test(journal, durable_callback_never)
{
    run_policy(DP_JFSYNC_NEVER);
}

/* A reader on another thread follows the journal while it is written and
 * rotated: it sees every record once, in order, never a half-written one. */
typedef struct {
    const char *dir;
    uint64_t target;
    uint64_t seen;
    bool bad;
} follower_t;

static void *follow_main(void *arg)
{
    follower_t *f = arg;
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(f->dir, NULL, NULL, NULL, &err);
    if (r == NULL) {
        f->bad = true;
        return NULL;
    }
    dp_jrec_t rec;
    while (f->seen < f->target && !f->bad) {
        int rc = dp_jreader_next(r, &rec, &err);
        if (rc == 0) {
            usleep(200);
            continue;
        }
        if (rc < 0 || rec.seq != f->seen + 1 || rec.value.u.n != (double)rec.seq)
            f->bad = true;
        f->seen = rec.seq;
    }
    if (dp_jreader_skipped(r) != 0)
        f->bad = true;
    dp_jreader_free(r);
    return NULL;
}

Test(journal, follower_thread_while_writing_and_rotating)
{
    char *dir = th_tmpdir();
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER, .segment_size = 8192};
    dp_journal_t *j = jopen(dir, &o);
    follower_t f = {.dir = dir, .target = 20000};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, follow_main, &f), 0);
    for (int k = 0; k < 200; k++) {
        append_n(j, k * 100 + 1, 100);
        dp_journal_commit(j);
        if (k % 10 == 0)
            usleep(1000);
    }
    cr_assert_eq(dp_journal_sync(j), 0);
    pthread_join(t, NULL);
    dp_journal_close(j);
    cr_assert_not(f.bad, "the follower saw a wrong record after %llu", (unsigned long long)f.seen);
    cr_assert_eq(f.seen, 20000u);
    th_rmdir(dir);
}

/* Waits up to 10 s for the writer to write again after a failure (it retries
 * every 2 s); returns the stats then. */
static dp_journal_stats_t wait_writing(dp_journal_t *j)
{
    dp_journal_stats_t st = {.failed = true};
    for (int i = 0; i < 100 && st.failed; i++) {
        usleep(100000);
        dp_journal_get_stats(j, &st);
    }
    return st;
}

/* A full disk (here the file size limit, which fails writes with EFBIG the
 * way ENOSPC would): what is appended is kept and written again once the
 * disk takes it, with nothing lost and no torn stretch left in between. */
Test(journal, writes_resume_after_the_disk_was_full)
{
    char *dir = th_tmpdir();
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit was;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_ALWAYS, .segment_size = 1 << 20};
    dp_journal_t *j = jopen(dir, &o);
    append_n(j, 1, 100);
    cr_assert_eq(dp_journal_sync(j), 0);
    char seg[600];
    newest_segment(dir, seg, sizeof seg);
    struct rlimit full = {.rlim_cur = (rlim_t)file_size(seg) + 1000, .rlim_max = was.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &full), 0);
    /* Several commits while the disk is full: the first fails half way. */
    for (int k = 0; k < 5; k++) {
        append_n(j, 101 + k * 100, 100);
        dp_journal_commit(j);
    }
    cr_assert_eq(dp_journal_sync(j), DP_EIO);
    dp_journal_stats_t st;
    dp_journal_get_stats(j, &st);
    cr_assert(st.failed);
    cr_assert(th_logged(&logs, "are kept in memory"), "no report of the failing disk");
    cr_assert_leq(file_size(seg), (off_t)full.rlim_cur);
    /* The disk takes writes again: the next attempt writes everything. */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
    append_n(j, 601, 100);
    dp_journal_commit(j);
    st = wait_writing(j);
    cr_assert(!st.failed, "still failing after 10 s");
    cr_assert_eq(dp_journal_sync(j), 0);
    cr_assert(th_logged(&logs, "writing again"));
    dp_journal_close(j);
    warns_t w = {0};
    cr_assert_eq(read_all(dir, 1, &w), 700);
    cr_assert_eq(w.n, 0, "the reader skipped something: %s", w.msgs[0]);
    th_rmdir(dir);
}

/* The same across segment rotations decided while the disk is full: the
 * segments that could not even be created are created once it takes writes
 * again, each commit within one segment. */
Test(journal, writes_resume_across_rotations_after_the_disk_was_full)
{
    char *dir = th_tmpdir();
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit was;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_INTERVAL, .segment_size = 1024};
    dp_journal_t *j = jopen(dir, &o);
    append_n(j, 1, 100);
    cr_assert_eq(dp_journal_sync(j), 0);
    int before = count_files(dir, ".seg");
    /* Nothing can be written, not even a new segment's header. */
    struct rlimit full = {.rlim_cur = 4, .rlim_max = was.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &full), 0);
    for (int k = 0; k < 6; k++) {
        append_n(j, 101 + k * 50, 50);
        dp_journal_commit(j);
    }
    cr_assert_eq(dp_journal_sync(j), DP_EIO);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
    dp_journal_stats_t st = wait_writing(j);
    cr_assert(!st.failed, "still failing after 10 s");
    cr_assert(!st.broken);
    cr_assert_eq(dp_journal_sync(j), 0);
    dp_journal_close(j);
    cr_assert_gt(count_files(dir, ".seg"), before + 2, "no rotation after the outage");
    warns_t w = {0};
    cr_assert_eq(read_all(dir, 1, &w), 400);
    cr_assert_eq(w.n, 0, "the reader skipped something: %s", w.msgs[0]);
    th_rmdir(dir);
}

Test(journal, one_writer_per_directory)
{
    char *dir = th_tmpdir();
    dp_journal_t *j = jopen(dir, NULL);
    char *err = NULL;
    cr_assert_null(dp_journal_open(dir, NULL, NULL, 0, &err));
    cr_assert(strstr(err, "in use by another doppel process") != NULL, "%s", err);
    free(err);
    /* Readers need no lock. */
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    cr_assert_not_null(r);
    dp_jreader_free(r);
    dp_journal_close(j);
    j = jopen(dir, NULL);
    dp_journal_close(j);
    th_rmdir(dir);
}
