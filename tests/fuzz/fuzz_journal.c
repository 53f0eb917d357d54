/* libFuzzer target for the journal's and the snapshots' decoders.
 *
 * The input becomes a journal segment (after the segment magic) in a fresh
 * directory. A reader must read it without crashing, return records in
 * increasing seq order, and account for every byte it did not return as a
 * record as either skipped or an incomplete tail; then dp_journal_open must
 * accept the directory (cutting what is torn), and a reader must afterwards
 * find no incomplete tail. The same input is also given to
 * dp_snapshot_decode, which must either fail with a message or give a
 * snapshot that encodes and decodes again to the same bytes.
 *
 * Build (not part of the CMake build; after `make build`):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. -Iruntime \
 *     -I/usr/include/lua5.4 tests/fuzz/fuzz_journal.c runtime/journal.c \
 *     runtime/snapshot.c build/libdoppel_core.a /usr/lib/x86_64-linux-gnu/liblua5.4.a \
 *     /usr/lib/x86_64-linux-gnu/libuv_a.a /usr/lib/x86_64-linux-gnu/libmsgpackc.a \
 *     -lpthread -lm -ldl -lrt -o fuzz_journal
 *   ./fuzz_journal -max_total_time=60
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_snapshot(const uint8_t *data, size_t size)
{
    dp_snapshot_t *s = NULL;
    char *err = NULL;
    if (dp_snapshot_decode((const char *)data, size, &s, &err) < 0) {
        if (err == NULL)
            abort();
        free(err);
        return;
    }
    char *buf;
    size_t len;
    dp_snapshot_encode(s, &buf, &len);
    dp_snapshot_t *t = NULL;
    if (dp_snapshot_decode(buf, len, &t, &err) < 0)
        abort();
    char *buf2;
    size_t len2;
    dp_snapshot_encode(t, &buf2, &len2);
    if (len != len2 || memcmp(buf, buf2, len) != 0)
        abort();
    free(buf);
    free(buf2);
    dp_snapshot_free(s);
    dp_snapshot_free(t);
}

static uint64_t read_all(const char *dir, int *n)
{
    char *err = NULL;
    dp_jreader_t *r = dp_jreader_open(dir, NULL, NULL, NULL, &err);
    if (r == NULL)
        abort();
    dp_jrec_t rec;
    uint64_t last = 0;
    int rc;
    *n = 0;
    while ((rc = dp_jreader_next(r, &rec, &err)) == 1) {
        if (rec.seq <= last)
            abort();
        last = rec.seq;
        (*n)++;
    }
    if (rc != 0)
        abort();
    dp_jreader_free(r);
    return last;
}

/* Removes the input's directory and what the journal made in it (files
 * only): a shell's `rm -rf` per input took most of the fuzzer's time. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        abort();
    char path[300];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0)
            abort();
    }
    closedir(d);
    if (rmdir(dir) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dp_log_set_level(DP_LOG_OFF);
    check_snapshot(data, size);

    /* In memory where the machine has it, and without fsync: the decoders
     * are under test, not the disk. */
    char dir[] = "/dev/shm/fuzz-journal-XXXXXX", tmp[] = "/tmp/fuzz-journal-XXXXXX";
    char *made = mkdtemp(dir);
    if (made == NULL)
        made = mkdtemp(tmp);
    if (made == NULL)
        abort();
    char path[128];
    snprintf(path, sizeof path, "%s/%020d.seg", made, 1);
    FILE *f = fopen(path, "wb");
    fwrite("DPJRNL1\n", 1, 8, f);
    fwrite(data, 1, size, f);
    fclose(f);

    int n1 = 0, n2 = 0;
    uint64_t last1 = read_all(made, &n1);
    char *err = NULL;
    dp_journal_opts_t o = {.fsync = DP_JFSYNC_NEVER};
    dp_journal_t *j = dp_journal_open(made, NULL, &o, 0, &err);
    if (j == NULL)
        abort();
    if (dp_journal_last_seq(j) < last1)
        abort(); /* the open must keep every record a reader could read */
    dp_journal_close(j);
    uint64_t last2 = read_all(made, &n2);
    if (last2 != last1 || n2 != n1)
        abort();
    remove_dir(made);
    return 0;
}
