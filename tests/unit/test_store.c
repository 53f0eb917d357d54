/* Unit tests for runtime/store.c. Run under ASan: several tests exist to catch
 * leaks and use-after-free in the string and subscriber lifetimes. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/store.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

/* Ends every test: ASan's leak report at a worker's exit does not fail a
 * Criterion test (and the project runs ASan without abort_on_error), so each
 * test asks LeakSanitizer itself, which also names the test that leaked.
 * Without ASan this checks nothing. */
static void assert_no_leaks(void)
{
#ifdef __SANITIZE_ADDRESS__
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
#endif
}

/* A copy of every record a subscriber was handed, plus how the records were
 * split into callbacks. Strings are copied because they are only valid during
 * the callback. */
typedef struct {
    int tag;
    dp_value_t v;
    dp_time_t ts;
    uint8_t quality;
} rec_t;

typedef struct {
    rec_t *recs;
    size_t n;
    size_t cap;
    size_t calls;
    size_t batch_sizes[16];
} log_t;

static void log_append(log_t *log, const dp_change_t *c)
{
    if (log->n == log->cap) {
        log->cap = log->cap ? log->cap * 2 : 16;
        log->recs = realloc(log->recs, log->cap * sizeof(rec_t));
    }
    rec_t *r = &log->recs[log->n++];
    r->tag = c->tag;
    r->v = c->v;
    if (c->v.type == DP_STR)
        r->v.u.s = strdup(c->v.u.s);
    r->ts = c->ts;
    r->quality = c->quality;
}

static void log_reset(log_t *log)
{
    for (size_t i = 0; i < log->n; i++) {
        if (log->recs[i].v.type == DP_STR)
            free(log->recs[i].v.u.s);
    }
    free(log->recs);
    memset(log, 0, sizeof(*log));
}

static void log_cb(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    (void)sub;
    log_t *log = ud;
    if (log->calls < DP_ARRAY_LEN(log->batch_sizes))
        log->batch_sizes[log->calls] = n;
    log->calls++;
    for (size_t i = 0; i < n; i++)
        log_append(log, &changes[i]);
}

static int add(dp_store_t *s, const char *name, uint32_t history)
{
    dp_tag_opts_t opts = {.history = history};
    int h = dp_store_add(s, name, &opts);
    cr_assert(h >= 0, "adding %s failed: %d", name, h);
    return h;
}

static int write_num(dp_store_t *s, int tag, double n, dp_time_t ts, int q)
{
    dp_value_t v = dp_num(n);
    return dp_store_write(s, tag, &v, ts, q);
}

static int write_str(dp_store_t *s, int tag, const char *str, dp_time_t ts, int q)
{
    dp_value_t v = dp_str(str);
    return dp_store_write(s, tag, &v, ts, q);
}

Test(store, quality_names)
{
    cr_assert_str_eq(dp_quality_name(DP_Q_GOOD), "good");
    cr_assert_str_eq(dp_quality_name(DP_Q_UNCERTAIN), "uncertain");
    cr_assert_str_eq(dp_quality_name(DP_Q_BAD), "bad");
    cr_assert_eq(dp_quality_parse("good"), DP_Q_GOOD);
    cr_assert_eq(dp_quality_parse("uncertain"), DP_Q_UNCERTAIN);
    cr_assert_eq(dp_quality_parse("bad"), DP_Q_BAD);
    cr_assert_eq(dp_quality_parse("Good"), DP_EINVAL);
    cr_assert_eq(dp_quality_parse(""), DP_EINVAL);
    cr_assert_eq(dp_quality_parse(NULL), DP_EINVAL);
    assert_no_leaks();
}

Test(store, add_find_names)
{
    dp_store_t *s = dp_store_new();
    dp_tag_opts_t opts = {
        .unit = "m3/h", .source = "modbus:40001", .flags = DP_TAG_WRITABLE, .deadband = 0.5};
    int a = dp_store_add(s, "p101.flow", &opts);
    int b = dp_store_add(s, "p101.state.mode", NULL);
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(dp_store_count(s), 2);
    cr_assert_eq(dp_store_find(s, "p101.flow"), a);
    cr_assert_eq(dp_store_find(s, "p101.state.mode"), b);
    cr_assert_eq(dp_store_find(s, "p101.flo"), DP_ENOENT);
    cr_assert_eq(dp_store_find(s, "p101"), DP_ENOENT);

    cr_assert_eq(dp_store_add(s, "p101.flow", NULL), DP_EEXIST);
    cr_assert_eq(dp_store_count(s), 2);

    const char *bad[] = {"",       "flow",   ".flow",   "p101.",      "p101..flow", "p 101.flow",
                         "p.f\tx", "p.f\nx", "p.f\x7f", "p101.flow ", "."};
    for (size_t i = 0; i < DP_ARRAY_LEN(bad); i++)
        cr_assert_eq(dp_store_add(s, bad[i], NULL), DP_EINVAL, "name '%s' accepted", bad[i]);
    cr_assert_eq(dp_store_add(s, NULL, NULL), DP_EINVAL);
    dp_tag_opts_t neg = {.deadband = -1};
    cr_assert_eq(dp_store_add(s, "p101.neg", &neg), DP_EINVAL);
    neg.deadband = NAN;
    cr_assert_eq(dp_store_add(s, "p101.neg", &neg), DP_EINVAL);
    cr_assert_eq(dp_store_count(s), 2);

    const dp_tag_t *t = dp_store_get(s, a);
    cr_assert_not_null(t);
    cr_assert_str_eq(t->name, "p101.flow");
    cr_assert_str_eq(t->unit, "m3/h");
    cr_assert_str_eq(t->source, "modbus:40001");
    cr_assert_eq(t->flags, DP_TAG_WRITABLE);
    cr_assert_eq(t->deadband, 0.5);
    cr_assert_eq(t->v.type, DP_NIL);
    cr_assert_eq(t->writes, 0);
    const dp_tag_t *u = dp_store_get(s, b);
    cr_assert_str_eq(u->unit, "");
    cr_assert_null(u->source);
    cr_assert_eq(u->deadband, 0);
    cr_assert_eq(u->quality, DP_Q_BAD, "a tag never written has no good value");
    cr_assert_null(dp_store_get(s, 2));
    cr_assert_null(dp_store_get(s, -1));

    cr_assert_eq(dp_store_set_unit(s, b, "bar"), DP_OK);
    cr_assert_str_eq(u->unit, "bar");
    cr_assert_eq(dp_store_set_unit(s, b, u->unit), DP_OK); /* its own string back */
    cr_assert_str_eq(u->unit, "bar");
    cr_assert_eq(dp_store_set_unit(s, b, NULL), DP_OK);
    cr_assert_str_eq(u->unit, "");
    cr_assert_eq(dp_store_set_unit(s, 7, "x"), DP_EINVAL);
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, many_names_and_stable_views)
{
    /* Enough tags to grow both the tag array and the name index many times;
     * views taken early must stay valid as the arrays move. */
    dp_store_t *s = dp_store_new();
    const dp_tag_t *first = NULL;
    char name[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "twin%d.tag%d", i % 97, i);
        cr_assert_eq(dp_store_add(s, name, NULL), i);
        if (i == 0)
            first = dp_store_get(s, 0);
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "twin%d.tag%d", i % 97, i);
        cr_assert_eq(dp_store_find(s, name), i);
        cr_assert_str_eq(dp_store_get(s, i)->name, name);
    }
    cr_assert_eq(dp_store_find(s, "twin0.tag20000"), DP_ENOENT);
    cr_assert_eq(first, dp_store_get(s, 0));
    cr_assert_str_eq(first->name, "twin0.tag0");
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, write_read_values)
{
    dp_store_t *s = dp_store_new();
    int n = add(s, "t.num", 0);
    int b = add(s, "t.bool", 0);
    int str = add(s, "t.str", 0);

    cr_assert_eq(write_num(s, n, 3.25, 1000, DP_Q_UNCERTAIN), DP_OK);
    const dp_tag_t *t = dp_store_get(s, n);
    cr_assert_eq(t->v.type, DP_NUM);
    cr_assert_eq(t->v.u.n, 3.25);
    cr_assert_eq(t->ts, 1000);
    cr_assert_eq(t->quality, DP_Q_UNCERTAIN);
    cr_assert_eq(t->writes, 1);

    dp_value_t v = dp_bool(true);
    cr_assert_eq(dp_store_write(s, b, &v, 2000, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_get(s, b)->v.type, DP_BOOL);
    cr_assert(dp_store_get(s, b)->v.u.b);
    cr_assert_eq(dp_store_get(s, b)->ts, 2000);

    /* The store copies strings: changing the caller's buffer must not show. */
    char buf[16] = "running";
    cr_assert_eq(write_str(s, str, buf, 3000, DP_Q_BAD), DP_OK);
    strcpy(buf, "XXXXXXX");
    t = dp_store_get(s, str);
    cr_assert_eq(t->v.type, DP_STR);
    cr_assert_str_eq(t->v.u.s, "running");
    cr_assert_neq(t->v.u.s, buf);
    cr_assert_eq(t->quality, DP_Q_BAD);

    /* Writing the tag's own current value back must not read freed memory. */
    cr_assert_eq(dp_store_write(s, str, &t->v, 3500, DP_Q_GOOD), DP_OK);
    cr_assert_str_eq(dp_store_get(s, str)->v.u.s, "running");

    /* A string tag may turn numeric and back. */
    cr_assert_eq(write_num(s, str, 1, 4000, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_get(s, str)->v.type, DP_NUM);
    cr_assert_eq(write_str(s, str, "again", 5000, DP_Q_GOOD), DP_OK);
    cr_assert_str_eq(dp_store_get(s, str)->v.u.s, "again");
    cr_assert_eq(dp_store_get(s, str)->writes, 4);

    /* Refused: NIL, bad handles, bad quality, NULL string; nothing changes. */
    dp_value_t nil = {.type = DP_NIL};
    cr_assert_eq(dp_store_write(s, n, &nil, 9, DP_Q_GOOD), DP_EINVAL);
    cr_assert_eq(dp_store_write(s, n, NULL, 9, DP_Q_GOOD), DP_EINVAL);
    cr_assert_eq(write_num(s, 3, 1, 9, DP_Q_GOOD), DP_EINVAL);
    cr_assert_eq(write_num(s, -1, 1, 9, DP_Q_GOOD), DP_EINVAL);
    cr_assert_eq(write_num(s, n, 1, 9, 3), DP_EINVAL);
    cr_assert_eq(write_num(s, n, 1, 9, -1), DP_EINVAL);
    cr_assert_eq(write_str(s, n, NULL, 9, DP_Q_GOOD), DP_EINVAL);
    t = dp_store_get(s, n);
    cr_assert_eq(t->v.u.n, 3.25);
    cr_assert_eq(t->ts, 1000);
    cr_assert_eq(t->writes, 1);

    /* set_quality keeps value and timestamp. */
    cr_assert_eq(dp_store_set_quality(s, n, DP_Q_BAD), DP_OK);
    cr_assert_eq(t->quality, DP_Q_BAD);
    cr_assert_eq(t->v.u.n, 3.25);
    cr_assert_eq(t->ts, 1000);
    cr_assert_eq(t->writes, 1);
    cr_assert_eq(dp_store_set_quality(s, n, 5), DP_EINVAL);
    cr_assert_eq(dp_store_set_quality(s, 99, DP_Q_GOOD), DP_EINVAL);
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, history_ring_wraps_with_strings)
{
    dp_store_t *s = dp_store_new();
    int h = add(s, "t.log", 4);
    int none = add(s, "t.none", 0);
    cr_assert_eq(dp_store_history_len(s, h), 0);
    cr_assert_null(dp_store_history_at(s, h, 0));

    char buf[32];
    for (int i = 0; i < 10; i++) {
        snprintf(buf, sizeof(buf), "msg-%d", i);
        cr_assert_eq(write_str(s, h, buf, i * 10, i % 3), DP_OK);
    }
    cr_assert_eq(dp_store_history_len(s, h), 4);
    for (size_t i = 0; i < 4; i++) {
        const dp_sample_t *smp = dp_store_history_at(s, h, i);
        cr_assert_not_null(smp);
        snprintf(buf, sizeof(buf), "msg-%d", 9 - (int)i);
        cr_assert_str_eq(smp->v.u.s, buf);
        cr_assert_eq(smp->ts, (9 - (int)i) * 10);
        cr_assert_eq(smp->quality, (9 - i) % 3);
    }
    cr_assert_null(dp_store_history_at(s, h, 4));

    dp_sample_t out[8];
    cr_assert_eq(dp_store_history(s, h, out, 8), 4);
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof(buf), "msg-%d", 6 + i);
        cr_assert_str_eq(out[i].v.u.s, buf, "oldest-first order broken at %d", i);
    }
    cr_assert_eq(dp_store_history(s, h, out, 2), 2);
    cr_assert_str_eq(out[0].v.u.s, "msg-8");
    cr_assert_str_eq(out[1].v.u.s, "msg-9");

    /* Mixed types in one ring: numbers overwrite strings and vice versa. */
    cr_assert_eq(write_num(s, h, 1.5, 100, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_history_at(s, h, 0)->v.type, DP_NUM);
    cr_assert_str_eq(dp_store_history_at(s, h, 1)->v.u.s, "msg-9");

    /* Shrinking keeps the newest; growing keeps everything and keeps order. */
    cr_assert_eq(dp_store_set_history(s, h, 2), DP_OK);
    cr_assert_eq(dp_store_history_len(s, h), 2);
    cr_assert_eq(dp_store_history_at(s, h, 0)->v.u.n, 1.5);
    cr_assert_str_eq(dp_store_history_at(s, h, 1)->v.u.s, "msg-9");
    cr_assert_eq(dp_store_set_history(s, h, 5), DP_OK);
    cr_assert_eq(dp_store_history_len(s, h), 2);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(write_num(s, h, 200 + i, 200 + i, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_history_len(s, h), 5);
    cr_assert_eq(dp_store_history(s, h, out, 8), 5);
    cr_assert_eq(out[0].v.type, DP_STR);
    cr_assert_str_eq(out[0].v.u.s, "msg-9");
    cr_assert_eq(out[1].v.u.n, 1.5);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(out[2 + i].v.u.n, 200 + i);
    /* One more wraps the grown ring and drops the oldest string. */
    cr_assert_eq(write_num(s, h, 203, 203, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_history(s, h, out, 8), 5);
    cr_assert_eq(out[0].v.u.n, 1.5);
    cr_assert_eq(out[4].v.u.n, 203);

    cr_assert_eq(dp_store_set_history(s, h, 0), DP_OK);
    cr_assert_eq(dp_store_history_len(s, h), 0);
    cr_assert_eq(write_str(s, h, "no ring", 300, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_history_len(s, h), 0);
    cr_assert_eq(dp_store_set_history(s, h, 3), DP_OK);
    cr_assert_eq(write_str(s, h, "ring again", 400, DP_Q_GOOD), DP_OK);
    cr_assert_str_eq(dp_store_history_at(s, h, 0)->v.u.s, "ring again");

    cr_assert_eq(write_num(s, none, 1, 1, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_history_len(s, none), 0);
    cr_assert_eq(dp_store_history(s, none, out, 8), 0);
    cr_assert_eq(dp_store_set_history(s, 42, 3), DP_EINVAL);
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, deadband_and_quality_triggers)
{
    dp_store_t *s = dp_store_new();
    int a = add(s, "t.a", 0);
    int z = add(s, "t.z", 0);
    log_t la = {0}, lz = {0};
    dp_sub_t *sa = dp_store_sub_new(s, log_cb, &la);
    dp_sub_t *sz = dp_store_sub_new(s, log_cb, &lz);
    cr_assert_eq(dp_store_watch(s, sa, a, -0.1), DP_EINVAL);
    cr_assert_eq(dp_store_watch(s, sa, a, NAN), DP_EINVAL);
    cr_assert_eq(dp_store_watch(s, sa, a, 1.0), DP_OK);
    cr_assert_eq(dp_store_watch(s, sz, z, 0.0), DP_OK);

    /* Deadband 1: measured from the last value delivered, not the last written. */
    write_num(s, a, 10.0, 1, DP_Q_GOOD);  /* first: delivered */
    write_num(s, a, 10.5, 2, DP_Q_GOOD);  /* 0.5 from 10: no */
    write_num(s, a, 10.9, 3, DP_Q_GOOD);  /* 0.9 from 10: no */
    write_num(s, a, 11.0, 4, DP_Q_GOOD);  /* exactly 1: no (strictly greater) */
    write_num(s, a, 11.25, 5, DP_Q_GOOD); /* 1.25 from 10: yes */
    write_num(s, a, 11.25, 6, DP_Q_BAD);  /* quality change: yes */
    write_num(s, a, 11.5, 7, DP_Q_BAD);   /* no */
    dp_value_t bv = dp_bool(false);
    dp_store_write(s, a, &bv, 8, DP_Q_BAD);                     /* type change: yes */
    cr_assert_eq(dp_store_set_quality(s, a, DP_Q_BAD), DP_OK);  /* unchanged: no */
    cr_assert_eq(dp_store_set_quality(s, a, DP_Q_GOOD), DP_OK); /* yes, current value */

    /* Deadband 0: any change, but an identical value and quality is none. */
    write_num(s, z, 5.0, 1, DP_Q_GOOD);               /* yes */
    write_num(s, z, 5.0, 2, DP_Q_GOOD);               /* no */
    write_num(s, z, 5.0000000001, 3, DP_Q_GOOD);      /* yes */
    write_num(s, z, 5.0000000001, 4, DP_Q_UNCERTAIN); /* yes */
    write_str(s, z, "on", 5, DP_Q_UNCERTAIN);         /* type: yes */
    char on[] = "on";
    write_str(s, z, on, 6, DP_Q_UNCERTAIN);    /* same content, other pointer: no */
    write_str(s, z, "off", 7, DP_Q_UNCERTAIN); /* yes */
    dp_value_t t = dp_bool(true);
    dp_store_write(s, z, &t, 8, DP_Q_UNCERTAIN); /* yes */
    dp_store_write(s, z, &t, 9, DP_Q_UNCERTAIN); /* no */
    write_num(s, z, NAN, 10, DP_Q_UNCERTAIN);    /* yes */
    write_num(s, z, NAN, 11, DP_Q_UNCERTAIN);    /* NaN to NaN: no */
    write_num(s, z, 1.0, 12, DP_Q_UNCERTAIN);    /* yes */

    cr_assert_eq(dp_store_sub_pending(sa), 5);
    cr_assert_eq(dp_store_sub_pending(sz), 8);
    cr_assert(dp_store_dirty(s));
    cr_assert_eq(dp_store_flush(s, 1), 13);
    cr_assert_not(dp_store_dirty(s));

    cr_assert_eq(la.n, 5);
    dp_time_t a_ts[] = {1, 5, 6, 8, 8};
    for (size_t i = 0; i < la.n; i++)
        cr_assert_eq(la.recs[i].ts, a_ts[i], "a record %zu has ts %lld", i,
                     (long long)la.recs[i].ts);
    cr_assert_eq(la.recs[1].v.u.n, 11.25);
    cr_assert_eq(la.recs[2].quality, DP_Q_BAD);
    cr_assert_eq(la.recs[3].v.type, DP_BOOL);
    cr_assert_eq(la.recs[4].v.type, DP_BOOL);
    cr_assert_eq(la.recs[4].quality, DP_Q_GOOD);

    cr_assert_eq(lz.n, 8);
    dp_time_t z_ts[] = {1, 3, 4, 5, 7, 8, 10, 12};
    for (size_t i = 0; i < lz.n; i++)
        cr_assert_eq(lz.recs[i].ts, z_ts[i], "z record %zu has ts %lld", i,
                     (long long)lz.recs[i].ts);
    cr_assert_str_eq(lz.recs[3].v.u.s, "on");
    cr_assert_str_eq(lz.recs[4].v.u.s, "off");
    cr_assert(isnan(lz.recs[6].v.u.n));

    /* Watching again only changes the deadband (and does not duplicate). */
    cr_assert_eq(dp_store_watch(s, sz, z, 10.0), DP_OK);
    write_num(s, z, 5.0, 13, DP_Q_UNCERTAIN);  /* 4 from 1: no */
    write_num(s, z, 11.5, 14, DP_Q_UNCERTAIN); /* 10.5 from 1: yes, once */
    cr_assert_eq(dp_store_sub_pending(sz), 1);

    /* set_quality on a tag that was never written notifies nobody. */
    int fresh = add(s, "t.fresh", 0);
    cr_assert_eq(dp_store_watch(s, sa, fresh, 0), DP_OK);
    cr_assert_eq(dp_store_set_quality(s, fresh, DP_Q_GOOD), DP_OK);
    cr_assert_eq(dp_store_set_quality(s, fresh, DP_Q_UNCERTAIN), DP_OK);
    cr_assert_eq(dp_store_sub_pending(sa), 0);

    dp_store_free(s); /* pending string-free records and subscribers are freed here */
    log_reset(&la);
    log_reset(&lz);
    assert_no_leaks();
}

/* A sample that repeats the current value and quality skips the watches
 * (store.c, `seen`): it must be exactly as if they had been asked. */
Test(store, repeated_samples_notify_as_if_each_watch_were_asked)
{
    dp_store_t *s = dp_store_new();
    int x = add(s, "t.x", 0);
    log_t l0 = {0}, l1 = {0}, l2 = {0};
    dp_sub_t *s0 = dp_store_sub_new(s, log_cb, &l0);
    dp_sub_t *s1 = dp_store_sub_new(s, log_cb, &l1);
    dp_sub_t *s2 = dp_store_sub_new(s, log_cb, &l2);
    cr_assert_eq(dp_store_watch(s, s0, x, 0.0), DP_OK);
    cr_assert_eq(dp_store_watch(s, s1, x, 1.0), DP_OK);

    write_num(s, x, 10.0, 1, DP_Q_GOOD); /* both */
    write_num(s, x, 10.0, 2, DP_Q_GOOD); /* a repeat: neither */
    write_num(s, x, 10.5, 3, DP_Q_GOOD); /* s0 only (s1 holds 10) */
    write_num(s, x, 10.5, 4, DP_Q_GOOD); /* neither */
    /* A smaller deadband: the held-back 10.5 now passes s1 on its repeat. */
    cr_assert_eq(dp_store_watch(s, s1, x, 0.25), DP_OK);
    write_num(s, x, 10.5, 5, DP_Q_GOOD);                       /* s1 only */
    cr_assert_eq(dp_store_set_quality(s, x, DP_Q_BAD), DP_OK); /* both (ts 5) */
    write_num(s, x, 10.5, 6, DP_Q_BAD);                        /* neither */
    write_num(s, x, 10.5, 7, DP_Q_GOOD);                       /* both: quality */
    /* A watcher added now starts from the current value. */
    cr_assert_eq(dp_store_watch(s, s2, x, 0.0), DP_OK);
    write_num(s, x, 10.5, 8, DP_Q_GOOD);  /* nobody */
    write_num(s, x, NAN, 9, DP_Q_GOOD);   /* all three */
    write_num(s, x, NAN, 10, DP_Q_GOOD);  /* nobody */
    write_str(s, x, "on", 11, DP_Q_GOOD); /* all three */
    char on[] = "on";
    write_str(s, x, on, 12, DP_Q_GOOD); /* nobody */
    /* Unwatching keeps the others' answers. */
    dp_store_unwatch_all(s, s0);
    write_str(s, x, "on", 13, DP_Q_GOOD);  /* nobody */
    write_str(s, x, "off", 14, DP_Q_GOOD); /* s1 and s2 */
    dp_store_flush(s, 1);

    dp_time_t want0[] = {1, 3, 5, 7, 9, 11};
    dp_time_t want1[] = {1, 5, 5, 7, 9, 11, 14};
    dp_time_t want2[] = {9, 11, 14};
    const struct {
        log_t *log;
        const dp_time_t *ts;
        size_t n;
    } subs[] = {{&l0, want0, 6}, {&l1, want1, 7}, {&l2, want2, 3}};
    for (size_t k = 0; k < 3; k++) {
        cr_assert_eq(subs[k].log->n, subs[k].n, "subscriber %zu got %zu changes", k,
                     subs[k].log->n);
        for (size_t i = 0; i < subs[k].n; i++)
            cr_assert_eq(subs[k].log->recs[i].ts, subs[k].ts[i],
                         "subscriber %zu change %zu has ts %lld", k, i,
                         (long long)subs[k].log->recs[i].ts);
    }
    dp_store_free(s);
    log_reset(&l0);
    log_reset(&l1);
    log_reset(&l2);
    assert_no_leaks();
}

Test(store, one_flush_one_batch_in_write_order)
{
    dp_store_t *s = dp_store_new();
    int a = add(s, "t.a", 0);
    int b = add(s, "t.b", 0);
    log_t log = {0};
    dp_sub_t *sub = dp_store_sub_new(s, log_cb, &log);
    dp_store_watch(s, sub, a, 0);
    dp_store_watch(s, sub, b, 0);

    cr_assert_eq(dp_store_flush(s, 4), 0);
    cr_assert_eq(log.calls, 0);

    write_num(s, a, 1, 100, DP_Q_GOOD);
    write_str(s, b, "x", 200, DP_Q_UNCERTAIN);
    write_num(s, a, 2, 300, DP_Q_GOOD);
    cr_assert_eq(log.calls, 0, "callbacks must only run from flush");
    cr_assert_eq(dp_store_sub_pending(sub), 3);

    cr_assert_eq(dp_store_flush(s, 4), 3);
    cr_assert_eq(log.calls, 1);
    cr_assert_eq(log.batch_sizes[0], 3);
    cr_assert_eq(log.recs[0].tag, a);
    cr_assert_eq(log.recs[0].v.u.n, 1);
    cr_assert_eq(log.recs[0].ts, 100);
    cr_assert_eq(log.recs[1].tag, b);
    cr_assert_str_eq(log.recs[1].v.u.s, "x");
    cr_assert_eq(log.recs[1].quality, DP_Q_UNCERTAIN);
    cr_assert_eq(log.recs[2].tag, a);
    cr_assert_eq(log.recs[2].v.u.n, 2);
    cr_assert_eq(log.recs[2].ts, 300);
    cr_assert_eq(dp_store_sub_pending(sub), 0);

    /* Nothing left: a second flush delivers nothing. */
    cr_assert_eq(dp_store_flush(s, 4), 0);
    cr_assert_eq(log.calls, 1);

    /* Buffers are reused across flushes; records stay correct. */
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 100; i++)
            write_num(s, round % 2 ? a : b, round * 1000 + i, i, DP_Q_GOOD);
        cr_assert_eq(dp_store_flush(s, 1), 100);
    }
    cr_assert_eq(log.calls, 6);
    cr_assert_eq(log.n, 503);
    cr_assert_eq(log.recs[502].v.u.n, 4099);
    log_reset(&log);
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, unwatch_all_keeps_pending)
{
    dp_store_t *s = dp_store_new();
    int a = add(s, "t.a", 0);
    log_t log = {0};
    dp_sub_t *sub = dp_store_sub_new(s, log_cb, &log);
    dp_store_watch(s, sub, a, 0);
    write_str(s, a, "before", 1, DP_Q_GOOD);
    write_num(s, a, 2, 2, DP_Q_GOOD);
    dp_store_unwatch_all(s, sub);
    write_num(s, a, 3, 3, DP_Q_GOOD); /* not watched any more */
    cr_assert_eq(dp_store_sub_pending(sub), 2);
    cr_assert(dp_store_dirty(s));

    /* A reload re-watches; the first write after that is delivered even though
     * it equals the last delivered value, because the new watch saw nothing. */
    dp_store_watch(s, sub, a, 0);
    write_num(s, a, 2, 4, DP_Q_GOOD);
    cr_assert_eq(dp_store_flush(s, 1), 3);
    cr_assert_eq(log.calls, 1);
    cr_assert_str_eq(log.recs[0].v.u.s, "before");
    cr_assert_eq(log.recs[1].ts, 2);
    cr_assert_eq(log.recs[2].ts, 4);
    log_reset(&log);
    dp_store_free(s);
    assert_no_leaks();
}

/* Subscriber that, for each record of tag `src`, writes value + 1 to `dst`. */
typedef struct {
    dp_store_t *store;
    int src;
    int dst;
    log_t log;
} relay_t;

static void relay_cb(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    relay_t *r = ud;
    log_cb(sub, changes, n, &r->log);
    for (size_t i = 0; i < n; i++) {
        if (changes[i].tag == r->src)
            write_num(r->store, r->dst, changes[i].v.u.n + 1, changes[i].ts, DP_Q_GOOD);
    }
}

Test(store, callback_writes_are_delivered_in_later_rounds)
{
    dp_store_t *s = dp_store_new();
    relay_t r = {.store = s, .src = add(s, "t.src", 0), .dst = add(s, "t.dst", 0)};
    dp_sub_t *sub = dp_store_sub_new(s, relay_cb, &r);
    dp_store_watch(s, sub, r.src, 0);
    dp_store_watch(s, sub, r.dst, 0);

    write_num(s, r.src, 10, 1, DP_Q_GOOD);
    write_num(s, r.src, 20, 2, DP_Q_GOOD);
    cr_assert_eq(dp_store_flush(s, 4), 4);
    cr_assert_eq(r.log.calls, 2);
    cr_assert_eq(r.log.batch_sizes[0], 2);
    cr_assert_eq(r.log.batch_sizes[1], 2);
    cr_assert_eq(r.log.recs[2].tag, r.dst);
    cr_assert_eq(r.log.recs[2].v.u.n, 11);
    cr_assert_eq(r.log.recs[3].v.u.n, 21);
    cr_assert_not(dp_store_dirty(s));

    /* With one round allowed, the relayed writes wait for the next flush. */
    write_num(s, r.src, 30, 3, DP_Q_GOOD);
    cr_assert_eq(dp_store_flush(s, 0), 1);
    cr_assert(dp_store_dirty(s));
    cr_assert_eq(dp_store_sub_pending(sub), 1);
    cr_assert_eq(dp_store_flush(s, 1), 1);
    cr_assert_eq(r.log.n, 6);
    cr_assert_eq(r.log.recs[5].v.u.n, 31);
    log_reset(&r.log);
    dp_store_free(s);
    assert_no_leaks();
}

/* A chain: each callback writes the next tag, so each hop needs a round and
 * max_rounds bounds the work done by one flush. */
static void chain_cb(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    relay_t *r = ud;
    log_cb(sub, changes, n, &r->log);
    for (size_t i = 0; i < n; i++) {
        if (changes[i].tag + 1 < dp_store_count(r->store))
            write_num(r->store, changes[i].tag + 1, changes[i].v.u.n, 0, DP_Q_GOOD);
    }
}

Test(store, max_rounds_bounds_cascades)
{
    dp_store_t *s = dp_store_new();
    relay_t r = {.store = s};
    char name[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "c.t%d", i);
        add(s, name, 0);
    }
    dp_sub_t *sub = dp_store_sub_new(s, chain_cb, &r);
    for (int i = 0; i < 10; i++)
        dp_store_watch(s, sub, i, 0);
    write_num(s, 0, 7, 0, DP_Q_GOOD);
    cr_assert_eq(dp_store_flush(s, 3), 3);
    cr_assert_eq(r.log.calls, 3);
    cr_assert(dp_store_dirty(s));
    cr_assert_eq(dp_store_flush(s, 100), 7);
    cr_assert_eq(r.log.calls, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(r.log.recs[i].tag, i);
    log_reset(&r.log);
    dp_store_free(s);
    assert_no_leaks();
}

/* Subscriber that frees a target (possibly itself) from its callback. */
typedef struct {
    dp_store_t *store;
    dp_sub_t *victim;
    int write_tag; /* >= 0: write it after freeing, to queue more records */
    log_t log;
} killer_t;

static void killer_cb(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    killer_t *k = ud;
    log_cb(sub, changes, n, &k->log);
    if (k->victim != NULL) {
        dp_store_sub_free(k->store, k->victim);
        k->victim = NULL;
    }
    if (k->write_tag >= 0)
        write_num(k->store, k->write_tag, 99, 0, DP_Q_GOOD);
}

Test(store, subscriber_frees_itself_in_callback)
{
    dp_store_t *s = dp_store_new();
    int a = add(s, "t.a", 0);
    killer_t k = {.store = s, .write_tag = a};
    dp_sub_t *sub = dp_store_sub_new(s, killer_cb, &k);
    k.victim = sub;
    dp_store_watch(s, sub, a, 0);
    write_str(s, a, "first", 1, DP_Q_GOOD);
    /* The callback frees its own subscriber and then writes a tag it used to
     * watch: nothing may be queued on (or delivered to) the freed subscriber. */
    cr_assert_eq(dp_store_flush(s, 5), 1);
    cr_assert_eq(k.log.calls, 1);
    cr_assert_not(dp_store_dirty(s));
    write_num(s, a, 100, 2, DP_Q_GOOD);
    cr_assert_eq(dp_store_flush(s, 5), 0);
    log_reset(&k.log);
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, subscriber_frees_another_in_callback)
{
    dp_store_t *s = dp_store_new();
    int a = add(s, "t.a", 0);
    int b = add(s, "t.b", 0);
    killer_t k = {.store = s, .write_tag = b};
    log_t other = {0};
    dp_sub_t *killer = dp_store_sub_new(s, killer_cb, &k);
    dp_sub_t *victim = dp_store_sub_new(s, log_cb, &other);
    k.victim = victim;
    dp_store_watch(s, killer, a, 0);
    dp_store_watch(s, victim, b, 0);
    dp_store_watch(s, victim, a, 0);
    /* The killer is queued first, so it runs while the victim is still
     * waiting in the same round with a string record pending. */
    write_num(s, a, 1, 1, DP_Q_GOOD);
    write_str(s, b, "pending", 2, DP_Q_GOOD);
    cr_assert_eq(dp_store_sub_pending(victim), 2);
    cr_assert_eq(dp_store_flush(s, 5), 1);
    cr_assert_eq(k.log.calls, 1);
    cr_assert_eq(other.calls, 0, "a freed subscriber was called");
    cr_assert_not(dp_store_dirty(s));

    /* Freed outside a flush while dirty: it must leave the dirty list. */
    dp_sub_t *late = dp_store_sub_new(s, log_cb, &other);
    dp_store_watch(s, late, a, 0);
    write_str(s, a, "queued", 3, DP_Q_GOOD);
    cr_assert(dp_store_dirty(s));
    dp_store_sub_free(s, late);
    dp_store_sub_free(s, NULL);
    k.write_tag = -1;
    cr_assert_eq(dp_store_flush(s, 5), 1); /* only the killer's record */
    cr_assert_eq(other.calls, 0);
    log_reset(&k.log);
    log_reset(&other);
    dp_store_free(s);
    assert_no_leaks();
}

/* Reload-style handler swap from inside the callback: drop every watch, then
 * watch again; records queued meanwhile must not be lost or repeated. */
typedef struct {
    dp_store_t *store;
    int tag;
    log_t log;
} reload_t;

static void reload_cb(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    reload_t *r = ud;
    log_cb(sub, changes, n, &r->log);
    if (r->log.calls == 1) {
        write_num(r->store, r->tag, 2, 2, DP_Q_GOOD); /* queued on the current watch */
        dp_store_unwatch_all(r->store, sub);
        write_num(r->store, r->tag, 3, 3, DP_Q_GOOD); /* not watched: lost by design */
        dp_store_watch(r->store, sub, r->tag, 0);
        write_num(r->store, r->tag, 4, 4, DP_Q_GOOD);
    }
}

Test(store, unwatch_all_from_own_callback)
{
    dp_store_t *s = dp_store_new();
    reload_t r = {.store = s, .tag = add(s, "t.a", 0)};
    dp_sub_t *sub = dp_store_sub_new(s, reload_cb, &r);
    dp_store_watch(s, sub, r.tag, 0);
    write_num(s, r.tag, 1, 1, DP_Q_GOOD);
    cr_assert_eq(dp_store_flush(s, 4), 3);
    cr_assert_eq(r.log.calls, 2);
    cr_assert_eq(r.log.n, 3);
    cr_assert_eq(r.log.recs[0].v.u.n, 1);
    cr_assert_eq(r.log.recs[1].v.u.n, 2);
    cr_assert_eq(r.log.recs[2].v.u.n, 4);
    log_reset(&r.log);
    dp_store_free(s);
    assert_no_leaks();
}

/* Counts records per tag and checks each tag's values arrive in order. */
typedef struct {
    uint64_t total;
    uint32_t *per_tag;
    double *last;
    size_t calls;
    bool order_ok;
} counter_t;

static void count_cb(dp_sub_t *sub, const dp_change_t *changes, size_t n, void *ud)
{
    (void)sub;
    counter_t *c = ud;
    c->calls++;
    c->total += n;
    for (size_t i = 0; i < n; i++) {
        int t = changes[i].tag;
        if (!(changes[i].v.u.n > c->last[t]))
            c->order_ok = false;
        c->last[t] = changes[i].v.u.n;
        c->per_tag[t]++;
    }
}

Test(store, thousand_tags_thousand_writes_exact_counts)
{
    enum { TAGS = 1000, WRITES = 1000 };
    dp_store_t *s = dp_store_new();
    counter_t c = {.per_tag = calloc(TAGS, sizeof(uint32_t)),
                   .last = calloc(TAGS, sizeof(double)),
                   .order_ok = true};
    dp_sub_t *sub = dp_store_sub_new(s, count_cb, &c);
    char name[32];
    for (int i = 0; i < TAGS; i++) {
        snprintf(name, sizeof(name), "tw%d.tag", i);
        int h = add(s, name, i % 10 == 0 ? 16 : 0);
        dp_store_watch(s, sub, h, 0);
        c.last[h] = -1;
    }
    uint64_t delivered = 0;
    for (int w = 0; w < WRITES; w++) {
        for (int t = 0; t < TAGS; t++)
            cr_assert_eq(write_num(s, t, w, w, DP_Q_GOOD), DP_OK);
        /* Flush every 7 sweeps, so batches of varying size cross buffer reuse. */
        if (w % 7 == 6)
            delivered += dp_store_flush(s, 2);
    }
    delivered += dp_store_flush(s, 2);
    cr_assert_eq(delivered, (uint64_t)TAGS * WRITES);
    cr_assert_eq(c.total, (uint64_t)TAGS * WRITES);
    cr_assert(c.order_ok);
    cr_assert_eq(c.calls, (WRITES + 6) / 7);
    for (int t = 0; t < TAGS; t++) {
        cr_assert_eq(c.per_tag[t], WRITES, "tag %d got %u", t, c.per_tag[t]);
        cr_assert_eq(dp_store_get(s, t)->writes, WRITES);
        cr_assert_eq(dp_store_get(s, t)->v.u.n, WRITES - 1);
    }
    cr_assert_eq(dp_store_history_len(s, 0), 16);
    cr_assert_eq(dp_store_history_at(s, 0, 15)->v.u.n, WRITES - 16);
    free(c.per_tag);
    free(c.last);
    dp_store_free(s);
    assert_no_leaks();
}

Test(store, free_with_live_subscribers_and_pending)
{
    /* Everything still allocated at free time must be released (ASan checks). */
    dp_store_t *s = dp_store_new();
    int a = add(s, "t.a", 3);
    dp_sub_t *s1 = dp_store_sub_new(s, log_cb, NULL);
    dp_sub_t *s2 = dp_store_sub_new(s, log_cb, NULL);
    dp_store_watch(s, s1, a, 0);
    dp_store_watch(s, s2, a, 0);
    for (int i = 0; i < 10; i++) {
        char buf[16];
        snprintf(buf, sizeof(buf), "v%d", i);
        write_str(s, a, buf, i, DP_Q_GOOD);
    }
    cr_assert_eq(dp_store_sub_pending(s1), 10);
    cr_assert_eq(dp_store_sub_pending(s2), 10);
    dp_store_free(s);
    dp_store_free(NULL);
    assert_no_leaks();
}
