/* Recordings (CSV, long and wide) and dp_replay_run: samples in order with
 * their keys, values and qualities; every malformed line refused with
 * file:line:column; replay output deterministic and valid msgpack. */
#include <msgpack.h>

#include "harness.h"
#include "runtime/cmd_replay.h"
#include "runtime/journal.h"
#include "runtime/recording.h"

static char *dir;

static void setup(void)
{
    dir = th_tmpdir();
}

static void teardown(void)
{
    th_rmdir(dir);
}

TestSuite(recording, .init = setup, .fini = teardown);

static dp_recording_t *open_text(const char *text, char **err)
{
    th_write(dir, "rec.csv", text);
    char path[512];
    snprintf(path, sizeof path, "%s/rec.csv", dir);
    return dp_recording_open(path, err);
}

/* Reads every sample; returns the count, or the error code with *err set. */
static int read_all(dp_recording_t *r, dp_rec_sample_t *out, int max, char **err)
{
    int n = 0, rc;
    dp_rec_sample_t s;
    while ((rc = dp_recording_next(r, &s, err)) > 0) {
        if (n < max)
            out[n] = s;
        if (s.v.type == DP_STR && n < max)
            out[n].v.u.s = NULL; /* borrowed: not valid after the next call */
        n++;
    }
    return rc < 0 ? rc : n;
}

Test(recording, long_layout_with_quality_and_strings)
{
    char *err = NULL;
    dp_recording_t *r = open_text("# comment\n\n"
                                  "timestamp,tag,value,quality\n"
                                  "2026-01-01T00:00:00Z,A.x,1.5\n"
                                  "2026-01-01T00:00:00.250Z,A.y,true,uncertain\n"
                                  "1767225601,A.x,-2e3,bad\n"
                                  "1767225601.5, A.s , \"say \"\"hi\"\", ok\" \n",
                                  &err);
    cr_assert_not_null(r, "%s", err);
    cr_assert(!dp_recording_wide(r));
    dp_rec_sample_t s[8];
    dp_rec_sample_t one;
    cr_assert_eq(dp_recording_next(r, &one, &err), 1);
    cr_assert_eq(one.ts, T0);
    cr_assert_eq(one.v.type, DP_NUM);
    cr_assert_float_eq(one.v.u.n, 1.5, 0);
    cr_assert_str_eq(dp_recording_key_name(r, one.key), "A.x");
    cr_assert_eq(one.line, 4);
    cr_assert_eq(dp_recording_next(r, &one, &err), 1);
    cr_assert_eq(one.ts, T0 + 250000);
    cr_assert_eq(one.v.type, DP_BOOL);
    cr_assert_eq(one.quality, DP_Q_UNCERTAIN);
    cr_assert_eq(dp_recording_next(r, &one, &err), 1);
    cr_assert_eq(one.key, 0, "A.x keeps its key");
    cr_assert_eq(one.quality, DP_Q_BAD);
    cr_assert_eq(dp_recording_next(r, &one, &err), 1);
    cr_assert_eq(one.ts, T0 + 1500000);
    cr_assert_eq(one.v.type, DP_STR);
    cr_assert_str_eq(one.v.u.s, "say \"hi\", ok");
    cr_assert_str_eq(dp_recording_key_name(r, one.key), "A.s");
    cr_assert_eq(dp_recording_keys(r), 3);
    cr_assert_eq(read_all(r, s, 8, &err), 0);
    dp_recording_free(r);
}

Test(recording, wide_layout_skips_empty_cells)
{
    char *err = NULL;
    dp_recording_t *r = open_text("ts,A.x,A.y\n"
                                  "2026-01-01T00:00:01Z,1,\n"
                                  "2026-01-01T00:00:01.5Z,,false\n"
                                  "2026-01-01T00:00:02Z,3,true\n",
                                  &err);
    cr_assert_not_null(r, "%s", err);
    cr_assert(dp_recording_wide(r));
    cr_assert_eq(dp_recording_keys(r), 2);
    cr_assert_eq(dp_recording_key_col(r, 1), 8);
    dp_rec_sample_t s[8];
    cr_assert_eq(read_all(r, s, 8, &err), 4);
    cr_assert_eq(s[0].key, 0);
    cr_assert_eq(s[0].ts, T0 + 1000000);
    cr_assert_eq(s[1].key, 1);
    cr_assert_eq(s[1].ts, T0 + 1500000);
    cr_assert_eq(s[1].v.u.b, false);
    cr_assert_eq(s[2].ts, T0 + 2000000);
    cr_assert_eq(s[3].key, 1);
    cr_assert_eq(s[3].col, 24);
    dp_recording_free(r);
}

/* Each malformed input and the start of the message it must give. */
Test(recording, malformed_lines_name_line_and_column)
{
    static const struct {
        const char *text;
        const char *msg; /* after "<path>:" */
    } cases[] = {
        {"", " empty recording"},
        {"# only a comment\n", " empty recording"},
        {"stamp,A.x\n", "1:1: expected a header line starting with \"timestamp\""},
        {"timestamp\n", "1:10: a header needs at least one more column"},
        {"timestamp,tag,value,qualit\n", "1:21: a long recording's header is"},
        {"timestamp,A.x,,A.y\n", "1:15: empty column name"},
        {"timestamp,A.x,A.x\n", "1:15: column \"A.x\" appears twice"},
        {"timestamp,A.x\n1767225600,1,2\n", "2:14: expected 2 fields as in the header, got 3"},
        {"timestamp,tag,value\n1767225600,A.x\n", "2:1: expected 3 or 4 fields"},
        {"timestamp,tag,value\n1767225600,A.x,1,good,5\n", "2:23: expected 3 or 4 fields"},
        {"timestamp,A.x\nyesterday,1\n", "2:1: bad timestamp \"yesterday\""},
        {"timestamp,A.x\n2026-02-30T00:00:00Z,1\n", "2:1: bad timestamp"},
        {"timestamp,A.x\n,1\n", "2:1: missing timestamp"},
        {"timestamp,A.x\n2026-01-01T00:00:02Z,1\n2026-01-01T00:00:01Z,1\n",
         "3:1: timestamp 2026-01-01T00:00:01.000Z is before the previous row's"},
        {"timestamp,A.x\n1767225600,abc\n", "2:12: bad value \"abc\""},
        {"timestamp,A.x\n1767225600,1.2.3\n", "2:12: bad value \"1.2.3\""},
        {"timestamp,A.x\n1767225600,nan\n", "2:12: bad value \"nan\""},
        {"timestamp,A.x\n1767225600,1e999\n", "2:12: bad value \"1e999\": not a finite number"},
        {"timestamp,A.x\n1767225600,\"open\n", "2:12: unterminated quoted field"},
        {"timestamp,A.x\n1767225600,\"a\"b\n", "2:15: unexpected \"b\" after a closing quote"},
        {"timestamp,tag,value\n1767225600,,1\n", "2:12: missing tag name"},
        {"timestamp,tag,value\n1767225600,A.x,\n", "2:16: missing value for A.x"},
        {"timestamp,tag,value,quality\n1767225600,A.x,1,great\n", "2:18: bad quality \"great\""},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        char *err = NULL;
        dp_recording_t *r = open_text(cases[i].text, &err);
        if (r != NULL) {
            dp_rec_sample_t s[4];
            int rc = read_all(r, s, 4, &err);
            cr_assert_lt(rc, 0, "case %zu: accepted %s", i, cases[i].text);
            dp_rec_sample_t again;
            cr_assert_eq(dp_recording_next(r, &again, NULL), 0, "ends after an error");
            dp_recording_free(r);
        }
        cr_assert_not_null(err, "case %zu", i);
        char want[512];
        snprintf(want, sizeof want, "%s/rec.csv:%s", dir, cases[i].msg);
        cr_assert(strncmp(err, want, strlen(want)) == 0, "case %zu:\n got: %s\nwant: %s...", i, err,
                  want);
        free(err);
    }
}

Test(recording, missing_file)
{
    char *err = NULL;
    cr_assert_null(dp_recording_open("/nonexistent/rec.csv", &err));
    cr_assert(strstr(err, "/nonexistent/rec.csv: No such file") != NULL, "%s", err);
    free(err);
}

static char *slurp(const char *path, size_t *len)
{
    char *err = NULL;
    char *s = dp_source_read(path, len, &err);
    cr_assert_not_null(s, "%s", err);
    return s;
}

/* A twin with a derived tag, an alarm-like event and a timer; replayed twice
 * into msgpack, the bytes are equal and decode to the expected records. */
Test(recording, replay_is_deterministic_and_msgpack_decodes)
{
    th_write(dir, "plant.lua",
             "plant { name = 'test' }\n"
             "twin 'A' { script = 'a.lua', tags = { x = {} } }\n");
    th_write(dir, "a.lua",
             "twin.tag('double')\n"
             "twin.on_change('x', function(v)\n"
             "  tags.double = 2 * v\n"
             "  if v > 2 then twin.event('alarm', { name = 'high', state = 'active' }) end\n"
             "end)\n"
             "twin.every('1s', function() twin.event('tick', { n = 1 }) end)\n");
    th_write(dir, "rec.csv",
             "timestamp,tag,value\n"
             "2026-01-01T00:00:00Z,A.x,1\n"
             "2026-01-01T00:00:02.5Z,A.x,3\n"
             "2026-01-01T00:00:02.5Z,A.x,4\n");
    char plant[512], input[512], out1[512], out2[512];
    snprintf(plant, sizeof plant, "%s/plant.lua", dir);
    snprintf(input, sizeof input, "%s/rec.csv", dir);
    snprintf(out1, sizeof out1, "%s/a.msgpack", dir);
    snprintf(out2, sizeof out2, "%s/b.msgpack", dir);
    dp_log_level_t level = dp_log_get_level();
    dp_log_set_level(DP_LOG_OFF);
    for (int run = 0; run < 2; run++) {
        dp_replay_opts_t o = {
            .plant = plant, .input = input, .out = run ? out2 : out1, .format = DP_REPLAY_MSGPACK};
        dp_replay_stats_t st;
        char *err = NULL;
        cr_assert_eq(dp_replay_run(&o, &st, &err), 0, "%s", err ? err : "");
        cr_assert_eq(st.samples, 3);
        cr_assert_eq(st.alarms, 2);
        cr_assert_eq(st.events, 2, "ticks at 1 s and 2 s");
        cr_assert_eq(st.tag_changes, 3);
        cr_assert_eq(st.end - st.start, 2500000);
    }
    dp_log_set_level(level);
    size_t la, lb;
    char *a = slurp(out1, &la), *b = slurp(out2, &lb);
    cr_assert_eq(la, lb);
    cr_assert(memcmp(a, b, la) == 0, "two replays differ");

    /* Records in order: tag double=2 at 0 s, tick 1 s, tick 2 s, then at 2.5 s
     * the alarms (raised inside handlers) and the tag changes of the batch. */
    const char *types[] = {"tag", "event", "event", "alarm", "alarm", "tag", "tag"};
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int n = 0;
    while (msgpack_unpack_next(&u, a, la, &off) == MSGPACK_UNPACK_SUCCESS) {
        cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
        cr_assert_lt(n, 7);
        const msgpack_object_kv *kv = u.data.via.map.ptr;
        cr_assert_eq(kv[0].val.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        cr_assert_eq(kv[1].val.type, MSGPACK_OBJECT_STR);
        cr_assert(strncmp(kv[1].val.via.str.ptr, types[n], kv[1].val.via.str.size) == 0 &&
                      strlen(types[n]) == kv[1].val.via.str.size,
                  "record %d: type %.*s, expected %s", n, (int)kv[1].val.via.str.size,
                  kv[1].val.via.str.ptr, types[n]);
        n++;
    }
    cr_assert_eq(off, la, "trailing bytes");
    cr_assert_eq(n, 7);
    msgpack_unpacked_destroy(&u);
    free(a);
    free(b);
}

/* Commands in a replay are judged by the guard in shadow mode and written
 * out; the tag itself is never written. Values set by on_start come first. */
Test(recording, replay_records_commands_as_a_dry_run_and_initial_values)
{
    th_write(
        dir, "plant.lua",
        "plant { name = 'test' }\n"
        "twin 'A' { script = 'a.lua', tags = { x = {}, sp = { writable = true, max = 5 } } }\n");
    th_write(dir, "a.lua",
             "twin.tag('ready')\n"
             "twin.on_start(function() tags.ready = true end)\n"
             "twin.on_change('x', function(v) twin.write('sp', 2 * v) end)\n");
    th_write(dir, "rec.csv", "timestamp,A.x\n1767225600,1\n1767225601,\"s\"\n1767225602,3\n");
    char plant[512], input[512], out[512];
    snprintf(plant, sizeof plant, "%s/plant.lua", dir);
    snprintf(input, sizeof input, "%s/rec.csv", dir);
    snprintf(out, sizeof out, "%s/out.csv", dir);
    dp_log_level_t level = dp_log_get_level();
    dp_log_set_level(DP_LOG_OFF);
    dp_replay_opts_t o = {.plant = plant, .input = input, .out = out};
    dp_replay_stats_t st;
    char *err = NULL;
    int rc = dp_replay_run(&o, &st, &err);
    dp_log_set_level(level);
    cr_assert_eq(rc, 0, "%s", err ? err : "");
    cr_assert_eq(st.commands, 2, "the string sample makes the handler fail before writing");
    size_t len;
    char *text = slurp(out, &len);
    const char *want = "timestamp,type,twin,name,value,detail\n"
                       "2026-01-01T00:00:00.000Z,tag,A,ready,true,\n"
                       "2026-01-01T00:00:00.000Z,command,twin:A,A.sp,2,done\n"
                       "2026-01-01T00:00:02.000Z,command,twin:A,A.sp,6,rejected: max: 6 is "
                       "above the maximum 5\n";
    cr_assert_str_eq(text, want);
    free(text);
}

/* A journal of samples (with a derived one and an event among them) replays
 * to exactly the bytes the same samples give as a CSV recording. */
Test(recording, journal_input_equals_csv_input)
{
    th_write(dir, "plant.lua",
             "plant { name = 'test' }\n"
             "twin 'A' { script = 'a.lua', tags = { x = {}, y = {} } }\n");
    th_write(dir, "a.lua",
             "twin.tag('sum')\n"
             "twin.on_change({ 'x', 'y' }, function()\n"
             "  tags.sum = (tags.x.value or 0) + (tags.y.value or 0)\n"
             "  if tags.sum.value > 10 then twin.event('big', { sum = tags.sum.value }) end\n"
             "end)\n");
    char jdir[512], *err = NULL;
    snprintf(jdir, sizeof jdir, "%s/data/journal", dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", jdir);
    cr_assert_eq(system(cmd), 0);
    dp_journal_opts_t jo = {.fsync = DP_JFSYNC_NEVER};
    dp_journal_t *j = dp_journal_open(jdir, NULL, &jo, 0, &err);
    cr_assert_not_null(j, "%s", err ? err : "");
    FILE *csv = fopen(strcat(strcpy(cmd, dir), "/rec.csv"), "w");
    fputs("timestamp,tag,value,quality\n", csv);
    for (int i = 0; i < 50; i++) {
        dp_time_t ts = T0 + i * 500000;
        dp_value_t v = dp_num(i % 7);
        const char *tag = i % 2 ? "A.y" : "A.x";
        int q = i == 13 ? DP_Q_UNCERTAIN : DP_Q_GOOD;
        dp_journal_append_sample(j, tag, &v, ts, q, 0);
        fprintf(csv, "%lld.%06lld,%s,%d,%s\n", (long long)(ts / 1000000), (long long)(ts % 1000000),
                tag, i % 7, dp_quality_name(q));
        if (i == 20) {
            /* What a live run journals besides inputs: not fed back. */
            dp_value_t d = dp_num(99);
            dp_journal_append_sample(j, "A.sum", &d, ts, DP_Q_GOOD, DP_JSAMPLE_DERIVED);
            dp_event_t ev = {.ts = ts, .twin = "A", .kind = "big", .text = "old"};
            dp_journal_append_event(j, &ev);
            dp_value_t gone = dp_num(1);
            dp_journal_append_sample(j, "Old.tag", &gone, ts, DP_Q_GOOD, 0);
        }
    }
    fclose(csv);
    cr_assert_eq(dp_journal_sync(j), 0);
    dp_journal_close(j);

    char plant[512], out1[512], out2[512], data[512], input[512];
    snprintf(plant, sizeof plant, "%s/plant.lua", dir);
    snprintf(out1, sizeof out1, "%s/j.csv", dir);
    snprintf(out2, sizeof out2, "%s/c.csv", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(input, sizeof input, "%s/rec.csv", dir);
    dp_log_level_t level = dp_log_get_level();
    dp_log_set_level(DP_LOG_OFF);
    dp_replay_stats_t sj, sc;
    dp_replay_opts_t oj = {.plant = plant, .input = data, .out = out1};
    dp_replay_opts_t oc = {.plant = plant, .input = input, .out = out2};
    int rj = dp_replay_run(&oj, &sj, &err);
    cr_assert_eq(rj, 0, "journal: %s", err ? err : "");
    int rcsv = dp_replay_run(&oc, &sc, &err);
    dp_log_set_level(level);
    cr_assert_eq(rcsv, 0, "csv: %s", err ? err : "");
    cr_assert_eq(sj.samples, 50);
    cr_assert_eq(sj.skipped, 2, "the derived sample and the unknown tag");
    cr_assert_eq(sc.samples, 50);
    cr_assert_gt(sj.events, 0);
    size_t la, lb;
    char *a = slurp(out1, &la), *b = slurp(out2, &lb);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);

    /* A folder with no journal in it. */
    dp_replay_opts_t bad = {.plant = plant, .input = plant, .out = out1};
    bad.input = dir;
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/empty'", dir);
    cr_assert_eq(system(cmd), 0);
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    bad.input = empty;
    err = NULL;
    cr_assert_lt(dp_replay_run(&bad, &sj, &err), 0);
    cr_assert(strstr(err, "no journal segments (*.seg)") != NULL, "%s", err);
    free(err);
}

/* The decimal fast path gives exactly strtod's double, or declines. */
Test(recording, fast_decimal_parse_equals_strtod)
{
    static const char *fixed[] = {"0",
                                  "-0",
                                  "+5",
                                  "1.5",
                                  ".5",
                                  "5.",
                                  "120.000",
                                  "1e22",
                                  "1e23",
                                  "1e-22",
                                  "9007199254740993",
                                  "0.1",
                                  "-2.5e3",
                                  "123456789012345",
                                  "1234567890123456",
                                  "1e",
                                  ".",
                                  "-",
                                  "1.2.3",
                                  "0x10",
                                  "inf",
                                  "nan",
                                  "00012.5000"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        double d;
        if (dp__parse_decimal(fixed[i], &d)) {
            char *end;
            double ref = strtod(fixed[i], &end);
            cr_assert(*end == '\0', "accepted \"%s\", which strtod does not read whole", fixed[i]);
            cr_assert(memcmp(&d, &ref, sizeof d) == 0, "\"%s\": %.17g != strtod %.17g", fixed[i], d,
                      ref);
        }
    }
    unsigned long long x = 88172645463325252ull;
    int checked = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        char buf[64];
        int digits = 1 + (int)(x % 17), point = (int)((x >> 8) % (unsigned)(digits + 1));
        int exp = (int)((x >> 16) % 61) - 30;
        char *p = buf;
        if (x & (1ull << 40))
            *p++ = '-';
        unsigned long long y = x;
        for (int k = 0; k < digits; k++) {
            if (k == point && k > 0)
                *p++ = '.';
            y = y * 6364136223846793005ull + 1442695040888963407ull;
            *p++ = (char)('0' + (y >> 60) % 10);
        }
        if (x & (1ull << 41))
            p += sprintf(p, "e%d", exp);
        *p = '\0';
        double d;
        if (dp__parse_decimal(buf, &d)) {
            double ref = strtod(buf, NULL);
            cr_assert(memcmp(&d, &ref, sizeof d) == 0, "\"%s\": %.17g != strtod %.17g", buf, d,
                      ref);
            checked++;
        }
    }
    cr_assert_gt(checked, 50000, "the fast path took only %d of 200000", checked);
}
