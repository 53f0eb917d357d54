/* bench_journal: durable samples per second through the journal, per fsync
 * policy, against raw write() of the same bytes in the same run.
 *
 * A producer appends 500,000 sample records (100 tags, numeric values) as
 * fast as it can on one thread, the way the loop thread does:
 *   always:   a commit after every 100 records (one loop turn's samples);
 *             each commit's records are accepted once fsynced, and the
 *             writer thread groups whatever is queued under one fsync;
 *   interval: a commit every 10 ms (group commit), fsync per group;
 *   never:    a commit every 10 ms, no fsync (accepted = written).
 * The clock stops when dp_journal_sync() returns, i.e. when every record is
 * written and fsynced. The baseline writes the very bytes the journal wrote
 * (its segment files) with write() in 64 KiB chunks to a new file, then one
 * fdatasync(): the disk and page cache's own speed. Printed: records/s, MB/s,
 * commits, fsyncs, the ratio to the baseline's MB/s, and how fast a reader
 * reads the records back.
 *
 * Exits 1 only if something is functionally wrong: a record missing, out of
 * order or different when read back. Files go to a temporary directory under
 * $TMPDIR (default /tmp), removed afterwards; point it at the disk to measure. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "runtime/journal.h"
#include "runtime/log.h"

#define NRECORDS 500000
#define NTAGS    100
#define TURN     100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char tags[NTAGS][32];

typedef struct {
    double secs;
    uint64_t bytes;
    dp_journal_stats_t st;
} result_t;

static int run_policy(const char *dir, dp_journal_fsync_t policy, result_t *out)
{
    char *err = NULL;
    dp_journal_opts_t o = {.fsync = policy, .commit = 10 * DP_US_PER_MS};
    dp_journal_t *j = dp_journal_open(dir, NULL, &o, 0, &err);
    if (j == NULL) {
        fprintf(stderr, "bench_journal: %s\n", err);
        return -1;
    }
    double t0 = now_s(), last_commit = t0;
    for (int i = 1; i <= NRECORDS; i++) {
        dp_value_t v = dp_num(i * 0.25);
        dp_journal_append_sample(j, tags[i % NTAGS], &v, INT64_C(1767225600000000) + i, DP_Q_GOOD,
                                 0);
        if (policy == DP_JFSYNC_ALWAYS) {
            if (i % TURN == 0)
                dp_journal_commit(j);
        } else if ((i & 63) == 0) {
            double t = now_s();
            if (t - last_commit >= 0.010) {
                dp_journal_commit(j);
                last_commit = t;
            }
        }
    }
    int rc = dp_journal_sync(j);
    out->secs = now_s() - t0;
    dp_journal_get_stats(j, &out->st);
    out->bytes = out->st.bytes;
    if (dp_journal_durable(j) != NRECORDS)
        rc = -1;
    dp_journal_close(j);
    return rc;
}

/* Reads everything back: every record once, in order, with its value. */
static int verify(const char *dir)
{
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    if (r == NULL)
        return -1;
    dp_jrec_t rec;
    uint64_t n = 0;
    int rc;
    while ((rc = dp_jreader_next(r, &rec, &err)) == 1) {
        n++;
        if (rec.seq != n || rec.value.u.n != (double)n * 0.25 ||
            strcmp(rec.tag, tags[n % NTAGS]) != 0) {
            fprintf(stderr, "bench_journal: record %llu is wrong\n", (unsigned long long)n);
            rc = -1;
            break;
        }
    }
    dp_jreader_free(r);
    if (rc == 0 && n != NRECORDS) {
        fprintf(stderr, "bench_journal: read back %llu of %d records\n", (unsigned long long)n,
                NRECORDS);
        rc = -1;
    }
    return rc;
}

/* The baseline: the journal's own bytes, written with write() and synced once. */
static double baseline(const char *jdir, const char *out_path, uint64_t *bytes)
{
    char *all = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&all, &len);
    DIR *d = opendir(jdir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".seg") == NULL)
            continue;
        char p[8400];
        snprintf(p, sizeof p, "%s/%s", jdir, e->d_name);
        FILE *f = fopen(p, "rb");
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, m);
        fclose(f);
    }
    closedir(d);
    fclose(m);
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    double t0 = now_s();
    for (size_t off = 0; off < len; off += 65536) {
        size_t n = len - off < 65536 ? len - off : 65536;
        if (write(fd, all + off, n) != (ssize_t)n) {
            perror("bench_journal: write");
            break;
        }
    }
    fdatasync(fd);
    double secs = now_s() - t0;
    close(fd);
    free(all);
    *bytes = len;
    return secs;
}

int main(void)
{
    dp_log_set_level(DP_LOG_WARN);
    for (int i = 0; i < NTAGS; i++)
        snprintf(tags[i], sizeof tags[i], "P%03d.flow", i);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char root[4096];
    snprintf(root, sizeof root, "%s/bench-journal-XXXXXX", tmp);
    if (mkdtemp(root) == NULL) {
        perror("bench_journal: mkdtemp");
        return 1;
    }
    static const dp_journal_fsync_t policies[] = {DP_JFSYNC_ALWAYS, DP_JFSYNC_INTERVAL,
                                                  DP_JFSYNC_NEVER};
    result_t res[3];
    double read_secs = 0;
    int status = 0;
    char dir[4200];
    for (int k = 0; k < 3; k++) {
        snprintf(dir, sizeof dir, "%s/%s", root, dp_journal_fsync_name(policies[k]));
        int rc = run_policy(dir, policies[k], &res[k]);
        if (rc == 0) {
            double t0 = now_s();
            rc = verify(dir);
            read_secs = now_s() - t0;
        }
        if (rc < 0) {
            fprintf(stderr, "bench_journal: policy %s failed\n",
                    dp_journal_fsync_name(policies[k]));
            status = 1;
        }
    }
    char raw[4200];
    snprintf(raw, sizeof raw, "%s/raw.bin", root);
    snprintf(dir, sizeof dir, "%s/never", root);
    uint64_t raw_bytes = 0;
    double raw_secs = baseline(dir, raw, &raw_bytes);
    double raw_mbs = (double)raw_bytes / 1e6 / raw_secs;

    printf("bench_journal: %d sample records, %d tags, %.1f bytes/record, dir %s\n", NRECORDS,
           NTAGS, (double)res[1].bytes / NRECORDS, tmp);
    printf("%-34s %12s %9s %8s %8s %8s\n", "", "records/s", "MB/s", "commits", "fsyncs", "vs raw");
    for (int k = 0; k < 3; k++) {
        char label[64];
        snprintf(label, sizeof label, "journal fsync=%s%s", dp_journal_fsync_name(policies[k]),
                 policies[k] == DP_JFSYNC_ALWAYS ? " (commit/100 rec)" : " (commit/10ms)");
        double mbs = (double)res[k].bytes / 1e6 / res[k].secs;
        printf("%-34s %12.0f %9.1f %8llu %8llu %7.2fx\n", label, NRECORDS / res[k].secs, mbs,
               (unsigned long long)res[k].st.commits, (unsigned long long)res[k].st.fsyncs,
               mbs / raw_mbs);
    }
    printf("%-34s %12.0f %9.1f %8s %8d %7.2fx\n", "baseline raw write() + 1 fdatasync",
           (double)NRECORDS / raw_secs, raw_mbs, "-", 1, 1.0);
    printf("durable samples/s with group commit every 10 ms: %.0f\n", NRECORDS / res[1].secs);
    printf("reading back (dp_jreader_next, decoded and checked): %.0f records/s\n",
           NRECORDS / read_secs);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS: %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);

    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        status = 1;
    return status;
}
