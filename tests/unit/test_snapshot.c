/* Snapshots and recovery: capture and restore, damaged snapshot files,
 * states that cannot be stored, and a real-time plant that journals, is
 * stopped or abandoned, and recovers its store and twin state. */
#include <fcntl.h>
#include <sys/stat.h>

#include "harness.h"
#include "runtime/command.h"
#include "runtime/journal.h"
#include "runtime/lmsgpack.h"
#include "runtime/persist.h"
#include "runtime/snapshot.h"

static char *dir;
static th_log_t logs;

static void setup(void)
{
    dir = th_tmpdir();
    memset(&logs, 0, sizeof logs);
    dp_log_set_hook(th_log_hook, &logs);
}

static void teardown(void)
{
    dp_log_set_hook(NULL, NULL);
    th_rmdir(dir);
}

TestSuite(snapshot, .init = setup, .fini = teardown);

static const char *plant_file = "plant { name = 'snap', snapshot = { every = '0s' } }\n"
                                "twin 'A' { script = 'a.lua', tags = { x = { history = 5 }, "
                                "s = {} } }\n";

static const char *counter_script = "twin.tag('sum', { history = 3 })\n"
                                    "twin.on_start(function()\n"
                                    "  state.n = state.n or 0; state.sum = state.sum or 0\n"
                                    "end)\n"
                                    "twin.on_change('x', function(v)\n"
                                    "  state.n = state.n + 1; state.sum = state.sum + v\n"
                                    "  state.seen = state.seen or {}\n"
                                    "  state.seen[#state.seen + 1] = v\n"
                                    "  twin.set('sum', state.sum)\n"
                                    "end)\n";

static void write_str(dp_plant_t *p, const char *tag, const char *s, dp_time_t ts)
{
    int id = dp_store_find(dp_plant_store(p), tag);
    cr_assert_geq(id, 0);
    dp_value_t v = dp_str(s);
    cr_assert_eq(dp_store_write(dp_plant_store(p), id, &v, ts, DP_Q_UNCERTAIN), 0);
}

Test(snapshot, capture_encode_decode_restore)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", counter_script);
    dp_plant_t *p = th_open(dir);
    for (int i = 1; i <= 8; i++)
        th_set(p, "A.x", i, T0 + i);
    write_str(p, "A.s", "open, \"quoted\"", T0 + 9);
    dp_plant_flush(p);
    dp_snapshot_t *s = NULL;
    char *err = NULL;
    cr_assert_eq(dp_snapshot_capture(p, 42, &s, &err), 0, "%s", err);
    char *buf;
    size_t len;
    dp_snapshot_encode(s, &buf, &len);
    dp_snapshot_free(s);
    dp_snapshot_t *back = NULL;
    cr_assert_eq(dp_snapshot_decode(buf, len, &back, &err), 0, "%s", err);
    free(buf);
    cr_assert_eq(back->seq, 42u);
    cr_assert_str_eq(back->plant, "snap");
    cr_assert_not_null(dp_snapshot_twin(back, "A"));
    cr_assert_null(dp_snapshot_twin(back, "B"));

    /* A second plant seeded with it has the same store and twin state. */
    char path[600];
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    dp_plant_opts_t o = {.path = path, .start = T0 + 100, .seed = back};
    dp_plant_t *q = dp_plant_open(&o, &err);
    cr_assert_not_null(q, "%s", err);
    cr_assert_eq(th_num(q, "A.x"), 8);
    cr_assert_eq(th_num(q, "A.sum"), 36);
    cr_assert_eq(dp_store_history_len(dp_plant_store(q), dp_store_find(dp_plant_store(q), "A.x")),
                 5u);
    const dp_tag_t *t = dp_store_get(dp_plant_store(q), dp_store_find(dp_plant_store(q), "A.s"));
    cr_assert_str_eq(t->v.u.s, "open, \"quoted\"");
    cr_assert_eq(t->quality, DP_Q_UNCERTAIN);
    cr_assert_eq(t->ts, T0 + 9);
    cr_assert_eq(th_eval(q, "A", "state.n"), 8);
    cr_assert_eq(th_eval(q, "A", "#state.seen"), 8);
    /* Restored values are not news to the twin: nothing was delivered. */
    dp_plant_flush(q);
    cr_assert_eq(th_eval(q, "A", "state.n"), 8);
    /* A sample equal to the restored one is no change either. */
    th_set(q, "A.x", 8, T0 + 101);
    dp_plant_flush(q);
    cr_assert_eq(th_eval(q, "A", "state.n"), 8);
    th_set(q, "A.x", 9, T0 + 102);
    dp_plant_flush(q);
    cr_assert_eq(th_eval(q, "A", "state.n"), 9);
    dp_plant_free(q);
    dp_snapshot_free(back);
    dp_plant_free(p);
}

Test(snapshot, state_that_cannot_be_stored_names_its_key_path)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", "state.pumps = { {}, { on_fault = function() end } }\n");
    dp_plant_t *p = th_open(dir);
    dp_snapshot_t *s = NULL;
    char *err = NULL;
    cr_assert_eq(dp_snapshot_capture(p, 1, &s, &err), DP_EINVAL);
    cr_assert_null(s);
    cr_assert_str_eq(err, "twin A: state.pumps[2].on_fault: cannot store a function");
    free(err);
    dp_plant_free(p);
}

static void write_snapshot(dp_plant_t *p, const char *sdir, uint64_t seq)
{
    dp_snapshot_t *s = NULL;
    char *err = NULL, *buf;
    size_t len;
    cr_assert_eq(dp_snapshot_capture(p, seq, &s, &err), 0);
    dp_snapshot_encode(s, &buf, &len);
    cr_assert_eq(dp_snapshot_write_file(sdir, seq, buf, len, 5, &err), 0, "%s", err);
    free(buf);
    dp_snapshot_free(s);
}

static void damage(const char *sdir, uint64_t seq, const char *how)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%020llu.snap", sdir, (unsigned long long)seq);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    if (strcmp(how, "flip") == 0) {
        int fd = open(path, O_RDWR);
        unsigned char c;
        cr_assert_eq(pread(fd, &c, 1, st.st_size / 2), 1);
        c ^= 0x10;
        cr_assert_eq(pwrite(fd, &c, 1, st.st_size / 2), 1);
        close(fd);
    } else if (strcmp(how, "truncate") == 0) {
        cr_assert_eq(truncate(path, st.st_size - 7), 0);
    } else {
        FILE *f = fopen(path, "wb");
        fputs("garbage, not a snapshot", f);
        fclose(f);
    }
}

Test(snapshot, damaged_snapshots_are_skipped_with_a_reason)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", counter_script);
    dp_plant_t *p = th_open(dir);
    char sdir[600];
    snprintf(sdir, sizeof sdir, "%s/snaps", dir);
    for (int k = 1; k <= 4; k++) {
        th_set(p, "A.x", k, T0 + k);
        dp_plant_flush(p);
        write_snapshot(p, sdir, (uint64_t)k * 10);
    }
    damage(sdir, 40, "flip");
    damage(sdir, 30, "truncate");
    damage(sdir, 20, "garbage");
    dp_snapshot_t *s = NULL;
    cr_assert_eq(dp_snapshot_load_latest(sdir, &s, NULL), 0);
    cr_assert_eq(s->seq, 10u);
    cr_assert(th_logged(&logs, "00000000000000000040.snap: CRC does not match"));
    cr_assert(th_logged(&logs, "00000000000000000030.snap: truncated"));
    cr_assert(th_logged(&logs, "00000000000000000020.snap: not a snapshot"));
    dp_snapshot_free(s);
    damage(sdir, 10, "truncate");
    cr_assert_eq(dp_snapshot_load_latest(sdir, &s, NULL), DP_ENOENT);
    /* Keeping: only the newest `keep` remain. */
    write_snapshot(p, sdir, 50);
    write_snapshot(p, sdir, 60);
    char *err = NULL, *buf;
    size_t len;
    dp_snapshot_t *c = NULL;
    cr_assert_eq(dp_snapshot_capture(p, 70, &c, &err), 0);
    dp_snapshot_encode(c, &buf, &len);
    cr_assert_eq(dp_snapshot_write_file(sdir, 70, buf, len, 2, &err), 0);
    free(buf);
    dp_snapshot_free(c);
    char path[700];
    snprintf(path, sizeof path, "%s/%020d.snap", sdir, 60);
    cr_assert_eq(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/%020d.snap", sdir, 50);
    cr_assert_neq(access(path, F_OK), 0);
    dp_plant_free(p);
}

/* ---- a real-time plant that journals --------------------------------------- */

static dp_plant_t *open_live(uv_loop_t *loop)
{
    char path[600], data[600], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    dp_plant_opts_t o = {.path = path, .loop = loop, .data_dir = data};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_not_null(p, "%s", err ? err : "?");
    cr_assert_eq(dp_plant_start(p, &err), 0);
    return p;
}

static void close_live(dp_plant_t *p, uv_loop_t *loop, bool clean)
{
    if (clean) {
        dp_plant_stop(p);
    } else {
        /* Abandon it as a crash would, but with everything written: the
         * journal's writer has the records, no shutdown snapshot. */
        dp_journal_sync(dp_persist_journal(dp_plant_persist(p)));
        char snap[400];
        snprintf(snap, sizeof snap, "%s/data/snapshots", dir);
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "cp -r '%s' '%s.saved' 2>/dev/null || true", snap, snap);
        cr_assert_eq(system(cmd), 0);
        dp_plant_stop(p);
        /* Put back the snapshots as they were before the shutdown one. */
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && (mv '%s.saved' '%s' 2>/dev/null || true)", snap,
                 snap, snap);
        cr_assert_eq(system(cmd), 0);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    dp_plant_free(p);
    uv_run(loop, UV_RUN_DEFAULT);
}

static void feed(dp_plant_t *p, int from, int to)
{
    for (int i = from; i <= to; i++) {
        th_set(p, "A.x", i, T0 + i * DP_US_PER_MS);
        if (i % 3 == 0)
            dp_plant_flush(p);
    }
    dp_plant_flush(p);
}

static void count_durable(dp_journal_t *j, uint64_t durable, void *ud)
{
    (void)j;
    uint64_t *acc = ud;
    cr_assert_gt(durable, *acc);
    *acc = durable;
}

Test(snapshot, live_plant_recovers_from_journal_and_snapshot)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", counter_script);
    uv_loop_t loop;
    uv_loop_init(&loop);

    /* First run: stopped cleanly, so a shutdown snapshot covers everything. */
    dp_plant_t *p = open_live(&loop);
    uint64_t accepted = 0;
    dp_persist_on_durable(dp_plant_persist(p), count_durable, &accepted);
    feed(p, 1, 100);
    close_live(p, &loop, true);
    /* 100 samples and 100 derived ones, all accepted. */
    cr_assert_eq(accepted, 200u);
    cr_assert(th_logged(&logs, "shutdown snapshot"));

    /* Second run: starts from it, then is abandoned without a snapshot. */
    p = open_live(&loop);
    cr_assert_eq(th_eval(p, "A", "state.n"), 100);
    cr_assert_eq(th_eval(p, "A", "state.sum"), 5050);
    cr_assert_eq(th_num(p, "A.sum"), 5050);
    feed(p, 101, 150);
    close_live(p, &loop, false);

    /* Third: the snapshot from run one plus the journal's tail. */
    memset(&logs, 0, sizeof logs);
    p = open_live(&loop);
    cr_assert(th_logged(&logs, "recovery: snapshot + "), "%s", logs.lines[0]);
    cr_assert_eq(th_eval(p, "A", "state.n"), 150);
    cr_assert_eq(th_eval(p, "A", "state.sum"), 150 * 151 / 2);
    cr_assert_eq(th_eval(p, "A", "state.seen[150]"), 150);
    cr_assert_eq(th_num(p, "A.x"), 150);
    cr_assert_eq(th_num(p, "A.sum"), 150 * 151 / 2);
    close_live(p, &loop, true);

    /* The journal holds every sample once, derived ones flagged. */
    char jdir[600], *err = NULL;
    snprintf(jdir, sizeof jdir, "%s/data/journal", dir);
    dp_jreader_t *r = dp_jreader_open(jdir, NULL, NULL, NULL, &err);
    dp_jrec_t rec;
    int inputs = 0, derived = 0;
    while (dp_jreader_next(r, &rec, &err) == 1) {
        if (rec.type != DP_JREC_SAMPLE)
            continue;
        if (rec.flags & DP_JSAMPLE_DERIVED) {
            cr_assert_str_eq(rec.tag, "A.sum");
            derived++;
        } else {
            cr_assert_str_eq(rec.tag, "A.x");
            cr_assert_eq(rec.value.u.n, ++inputs);
        }
    }
    dp_jreader_free(r);
    cr_assert_eq(inputs, 150);
    cr_assert_eq(derived, 150);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(snapshot, corrupted_journal_record_is_skipped_and_said)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", counter_script);
    uv_loop_t loop;
    uv_loop_init(&loop);
    dp_plant_t *p = open_live(&loop);
    feed(p, 1, 50);
    close_live(p, &loop, false);
    /* Remove every snapshot and flip a byte in the middle of the journal. */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -f '%s'/data/snapshots/*", dir);
    cr_assert_eq(system(cmd), 0);
    char seg[700];
    snprintf(seg, sizeof seg, "%s/data/journal/%020d.seg", dir, 1);
    int fd = open(seg, O_RDWR);
    cr_assert_geq(fd, 0);
    unsigned char c;
    cr_assert_eq(pread(fd, &c, 1, 700), 1);
    c ^= 0xff;
    cr_assert_eq(pwrite(fd, &c, 1, 700), 1);
    close(fd);
    memset(&logs, 0, sizeof logs);
    p = open_live(&loop);
    cr_assert(th_logged(&logs, "corrupted data at offset"), "%s", logs.lines[0]);
    cr_assert(th_logged(&logs, "corrupted stretches skipped"));
    /* One record lost (a sample or a derived one), the rest recovered. */
    double n = th_eval(p, "A", "state.n");
    cr_assert(n == 49 || n == 50, "n = %g", n);
    close_live(p, &loop, true);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(snapshot, journal_settings_are_checked)
{
    th_write(dir, "plant.lua", "plant { journal = { fsync = 'sometimes' } }\n");
    char *err = th_open_fails(dir);
    cr_assert(strstr(err, "plant.journal: fsync") != NULL, "%s", err);
    free(err);
    th_write(dir, "plant.lua", "plant { journal = { segment_size = '12 parsecs' } }\n");
    err = th_open_fails(dir);
    cr_assert(strstr(err, "segment_size") != NULL && strstr(err, "unknown unit") != NULL, "%s",
              err);
    free(err);
    th_write(dir, "plant.lua", "plant { snapshot = { often = true } }\n");
    err = th_open_fails(dir);
    cr_assert(strstr(err, "often") != NULL, "%s", err);
    free(err);
    th_write(dir, "plant.lua", "plant { journal = 5 }\n");
    err = th_open_fails(dir);
    cr_assert(strstr(err, "journal: expected a table") != NULL, "%s", err);
    free(err);
}

/* A device writer that never answers. */
static int no_answer(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err)
{
    (void)ctx, (void)id, (void)tag, (void)v, (void)err;
    return 0;
}

Test(snapshot, commands_are_journaled_with_their_outcome)
{
    th_write(dir, "plant.lua",
             "plant { name = 'cmd' }\n"
             "twin 'P1' { script = 'p.lua', tags = { sp = { writable = true, min = 0, max = 100 } "
             "} }\n");
    th_write(dir, "p.lua", "");
    uv_loop_t loop;
    uv_loop_init(&loop);
    dp_plant_t *p = open_live(&loop);
    dp_guard_t *g = dp_plant_guard(p);
    dp_value_t ok = dp_num(42), bad = dp_num(500);
    dp_guard_submit(g, "twin:P1", "P1.sp", &ok, NULL, NULL);
    dp_guard_submit(g, "repl", "P1.sp", &bad, NULL, NULL);
    /* A command handed to a device whose answer never comes: its "sent"
     * record is in the journal, then at the stop its failure. */
    dp_guard_set_writer(g, dp_store_find(dp_plant_store(p), "P1.sp"), no_answer, NULL);
    dp_value_t lost = dp_num(7);
    dp_guard_submit(g, "http:olga", "P1.sp", &lost, NULL, NULL);
    close_live(p, &loop, true);
    cr_assert_eq(uv_loop_close(&loop), 0);

    char jdir[600], *err = NULL;
    snprintf(jdir, sizeof jdir, "%s/data/journal", dir);
    dp_jreader_t *r = dp_jreader_open(jdir, NULL, NULL, NULL, &err);
    dp_jrec_t rec;
    int commands = 0, samples = 0;
    while (dp_jreader_next(r, &rec, &err) == 1) {
        if (rec.type == DP_JREC_SAMPLE) {
            /* The accepted command's value reached the store: journaled too. */
            cr_assert_str_eq(rec.tag, "P1.sp");
            cr_assert_eq(rec.value.u.n, 42);
            samples++;
            continue;
        }
        if (rec.type != DP_JREC_COMMAND)
            continue;
        commands++;
        cr_assert_str_eq(rec.tag, "P1.sp");
        if (commands == 1) {
            cr_assert_str_eq(rec.kind, "done");
            cr_assert_str_eq(rec.twin, "P1");
            cr_assert_eq(rec.value.u.n, 42);
        } else if (commands == 2) {
            cr_assert_str_eq(rec.kind, "rejected");
            cr_assert_null(rec.twin);
            cr_assert(strstr(rec.text, "(by repl)") != NULL, "%s", rec.text);
            cr_assert_eq(rec.value.u.n, 500);
        } else {
            cr_assert_str_eq(rec.kind, commands == 3 ? "sent" : "failed");
            cr_assert(strstr(rec.text, "(by http:olga)") != NULL, "%s", rec.text);
            if (commands == 4)
                cr_assert(strstr(rec.text, "shutting down") != NULL, "%s", rec.text);
            cr_assert_eq(rec.value.u.n, 7);
        }
    }
    dp_jreader_free(r);
    cr_assert_eq(commands, 4);
    cr_assert_eq(samples, 1);
}

/* ---- the alarm list across restarts ---------------------------------------- */

static const char *alarm_script = "local alarm = require 'doppel.alarm'\n"
                                  "local hi = alarm.limit { name = 'hi', high = 5 }\n"
                                  "local hihi = alarm.limit { name = 'hihi', high = 7 }\n"
                                  "twin.on_change('x', function(v)\n"
                                  "  hi:update(v); hihi:update(v)\n"
                                  "end)\n"
                                  "function is_active(a) return (a == 'hi' and hi or hihi)"
                                  ".active and 1 or 0 end\n";

static dp_alarm_info_t alarm_info(dp_plant_t *p, const char *name)
{
    dp_alarms_t *a = dp_plant_alarms(p);
    int id = dp_alarms_find(a, "A", name);
    cr_assert_geq(id, 0, "no alarm %s", name);
    dp_alarm_info_t info;
    cr_assert_eq(dp_alarms_get(a, id, &info), 0);
    return info;
}

Test(snapshot, alarm_acks_and_shelving_survive_restart_and_crash)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", alarm_script);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char *err = NULL;

    /* Run one: both alarms go off, alice acknowledges one; a clean stop. */
    dp_plant_t *p = open_live(&loop);
    th_set(p, "A.x", 10, T0);
    dp_plant_flush(p);
    cr_assert_eq(alarm_info(p, "hi").state, DP_ALARM_UNACKED);
    cr_assert_eq(dp_alarms_ack(dp_plant_alarms(p), "A", "hi", "alice", &err), 0, "%s", err);
    close_live(p, &loop, true);

    /* Run two, from the shutdown snapshot: the list is as operators left it,
     * and the twin's alarm objects know they are active. */
    p = open_live(&loop);
    dp_alarm_info_t hi = alarm_info(p, "hi"), hihi = alarm_info(p, "hihi");
    cr_assert(hi.active && hihi.active);
    cr_assert_eq(hi.state, DP_ALARM_ACKED);
    cr_assert_str_eq(hi.acked_by, "alice");
    cr_assert_eq(hihi.state, DP_ALARM_UNACKED);
    cr_assert_eq(th_eval(p, "A", "is_active('hi')"), 1);
    cr_assert_eq(th_eval(p, "A", "is_active('hihi')"), 1);
    /* Operators act, then the process dies before any snapshot. */
    cr_assert_eq(dp_alarms_ack(dp_plant_alarms(p), "A", "hihi", "bob", &err), 0, "%s", err);
    cr_assert_eq(
        dp_alarms_shelve(dp_plant_alarms(p), "A", "hi", 3600 * DP_US_PER_SEC, "carol", &err), 0,
        "%s", err);
    dp_time_t until = alarm_info(p, "hi").shelved_until;
    close_live(p, &loop, false);

    /* Run three: run one's snapshot plus the journal's tail, in which only
     * the journal knows what bob and carol did. */
    memset(&logs, 0, sizeof logs);
    p = open_live(&loop);
    cr_assert(th_logged(&logs, "2 operator actions redone"));
    hihi = alarm_info(p, "hihi");
    cr_assert_eq(hihi.state, DP_ALARM_ACKED);
    cr_assert_str_eq(hihi.acked_by, "bob");
    hi = alarm_info(p, "hi");
    cr_assert(hi.shelved && hi.active);
    cr_assert_eq(hi.state, DP_ALARM_NORMAL);
    cr_assert_eq(hi.shelved_until, until);
    /* The condition still runs: back to normal, both clear. */
    th_set(p, "A.x", 1, T0 + 1);
    dp_plant_flush(p);
    cr_assert(!alarm_info(p, "hi").active && !alarm_info(p, "hihi").active);
    cr_assert_eq(alarm_info(p, "hihi").state, DP_ALARM_NORMAL);
    close_live(p, &loop, true);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* A snapshot file around a body packed by `pack`. */
static void wrap_body(void (*pack)(msgpack_packer *), char **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack(&pk);
    *len = 16 + sb.size;
    *out = malloc(*len);
    memcpy(*out, "DPSNAP1\n", 8);
    uint32_t blen = (uint32_t)sb.size, crc = dp_crc32(0, sb.data, sb.size);
    for (int i = 0; i < 4; i++) {
        (*out)[8 + i] = (char)(blen >> (8 * i));
        (*out)[12 + i] = (char)(crc >> (8 * i));
    }
    memcpy(*out + 16, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void pack_head(msgpack_packer *pk, int version)
{
    msgpack_pack_array(pk, version == 1 ? 6 : 8);
    msgpack_pack_int(pk, version);
    msgpack_pack_int(pk, 9);
    msgpack_pack_int(pk, 0);
    dp_mp_pack_str(pk, "old");
    msgpack_pack_array(pk, 0);
    msgpack_pack_array(pk, 0);
}

static void pack_v1(msgpack_packer *pk)
{
    pack_head(pk, 1);
}

static void pack_bad_alarm(msgpack_packer *pk)
{
    pack_head(pk, 2);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    dp_mp_pack_str(pk, "A");
    dp_mp_pack_str(pk, "hi");
    msgpack_pack_array(pk, 2); /* the guard: writes on, shadow off */
    msgpack_pack_true(pk);
    msgpack_pack_false(pk);
}

Test(snapshot, version_one_loads_and_a_bad_alarm_entry_is_named)
{
    char *buf, *err = NULL;
    size_t len;
    dp_snapshot_t *s = NULL;
    wrap_body(pack_v1, &buf, &len);
    cr_assert_eq(dp_snapshot_decode(buf, len, &s, &err), 0, "%s", err);
    cr_assert_eq(s->seq, 9u);
    cr_assert_eq(s->nalarms, 0u);
    dp_snapshot_free(s);
    free(buf);
    wrap_body(pack_bad_alarm, &buf, &len);
    cr_assert_eq(dp_snapshot_decode(buf, len, &s, &err), DP_EINVAL);
    cr_assert(strstr(err, "malformed alarm entry") != NULL, "%s", err);
    free(err);
    free(buf);
}

/* Guard switches changed at run time outlive a crash: writes switched off
 * during an incident stay off after an automatic restart. */
Test(snapshot, guard_switches_survive_restart_and_crash)
{
    th_write(dir, "plant.lua", plant_file);
    th_write(dir, "a.lua", "");
    uv_loop_t loop;
    uv_loop_init(&loop);

    /* Run one: writes off by olga, then a clean stop (the snapshot has it). */
    dp_plant_t *p = open_live(&loop);
    dp_guard_enable_writes(dp_plant_guard(p), false, "http:olga");
    close_live(p, &loop, true);

    /* Run two: still off, and said why; shadow on at the REPL and writes on
     * again by olga, then a crash. */
    memset(&logs, 0, sizeof logs);
    p = open_live(&loop);
    cr_assert(!dp_guard_writes_enabled(dp_plant_guard(p)));
    cr_assert(th_logged(&logs, "writes disabled by the switch as it was before the restart"));
    dp_guard_set_shadow(dp_plant_guard(p), true, "repl");
    dp_guard_enable_writes(dp_plant_guard(p), true, "http:olga");
    close_live(p, &loop, false);

    /* Run three: run one's snapshot plus the tail's two switches. */
    memset(&logs, 0, sizeof logs);
    p = open_live(&loop);
    cr_assert(th_logged(&logs, "2 operator actions redone"));
    cr_assert(dp_guard_writes_enabled(dp_plant_guard(p)));
    cr_assert(dp_guard_shadow(dp_plant_guard(p)));
    close_live(p, &loop, true);
    cr_assert_eq(uv_loop_close(&loop), 0);

    /* The journal has each switch as a guard event with who and the state. */
    char jdir[600], *err = NULL;
    snprintf(jdir, sizeof jdir, "%s/data/journal", dir);
    dp_jreader_t *r = dp_jreader_open(jdir, NULL, NULL, NULL, &err);
    dp_jrec_t rec;
    int guard = 0;
    while (dp_jreader_next(r, &rec, &err) == 1) {
        if (rec.type == DP_JREC_EVENT && strcmp(rec.kind, "guard") == 0) {
            guard++;
            if (guard == 1)
                cr_assert_str_eq(rec.text, "writes disabled by http:olga");
        }
    }
    dp_jreader_free(r);
    /* olga's, the REPL's and olga's again; putting back the switch at start
     * is no new action (the snapshot it came from has it). */
    cr_assert_eq(guard, 3, "%d guard events", guard);
}
