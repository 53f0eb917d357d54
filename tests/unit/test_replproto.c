/* Unit tests for the REPL frame codec (runtime/replproto.c): round trips of
 * every message type, partial input, and every malformed case the header
 * names (length 0 or over the limit, a payload that is not exactly one map,
 * an unknown type, a missing required key, a known key of the wrong type). */
#include <criterion/criterion.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "replproto.h"

/* ---- helpers ------------------------------------------------------------ */

static dp_repl_msg_t roundtrip(const dp_repl_msg_t *in)
{
    char *buf = NULL, *err = NULL;
    size_t len = 0;
    int rc = dp_repl_encode(in, &buf, &len, &err);
    cr_assert_eq(rc, 0, "encode %s failed: %s", dp_repl_type_name((int)in->type), err);
    cr_assert_geq(len, 5);
    uint32_t n = (uint32_t)(unsigned char)buf[0] << 24 | (uint32_t)(unsigned char)buf[1] << 16 |
                 (uint32_t)(unsigned char)buf[2] << 8 | (unsigned char)buf[3];
    cr_assert_eq((size_t)n + 4, len, "the length prefix must count the payload");

    /* Every strict prefix asks for more bytes and leaves *m alone. */
    for (size_t i = 0; i < len; i++) {
        dp_repl_msg_t m = {.type = DP_RM_ERROR, .id = 77};
        size_t used = 12345;
        cr_assert_eq(dp_repl_decode(buf, i, &m, &used, &err), 0, "prefix of %zu bytes", i);
        cr_assert_eq(m.id, 77);
        cr_assert_eq(used, 12345);
    }
    /* A whole frame followed by the start of another decodes the first. */
    char *two = malloc(len + 3);
    memcpy(two, buf, len);
    memcpy(two + len, buf, 3);
    dp_repl_msg_t out;
    size_t used = 0;
    rc = dp_repl_decode(two, len + 3, &out, &used, &err);
    cr_assert_eq(rc, 1, "decode failed: %s", err ? err : "(need more)");
    cr_assert_eq(used, len);
    free(two);
    free(buf);
    return out;
}

static void assert_str(const char *got, const char *want, const char *field)
{
    if (want == NULL)
        cr_assert_null(got, "%s must be absent, got \"%s\"", field, got);
    else
        cr_assert_str_eq(got, want, "%s", field);
}

static void check_roundtrip(const dp_repl_msg_t *in)
{
    dp_repl_msg_t out = roundtrip(in);
    cr_assert_eq(out.type, in->type);
    cr_assert_eq(out.version, in->type == DP_RM_HELLO ? in->version : 0);
    bool has_id = in->type != DP_RM_HELLO && in->type != DP_RM_ERROR;
    cr_assert_eq(out.id, has_id ? in->id : 0);
    cr_assert_eq(out.ok, in->type == DP_RM_RESULT ? in->ok : false);
    assert_str(out.text, in->text, "text");
    bool has_where = in->type == DP_RM_HELLO || in->type == DP_RM_RESULT;
    assert_str(out.where, has_where ? in->where : NULL, "where");
    assert_str(out.token, in->type == DP_RM_HELLO ? in->token : NULL, "token");
    if (in->type == DP_RM_ITEMS) {
        cr_assert_eq(out.nitems, in->nitems);
        for (size_t i = 0; i < in->nitems; i++)
            cr_assert_str_eq(out.items[i], in->items[i]);
    } else {
        cr_assert_eq(out.nitems, 0);
        cr_assert_null(out.items);
    }
    dp_repl_msg_clear(&out);
    cr_assert_null(out.text);
    cr_assert_eq(out.type, 0);
}

/* Builds a frame around a payload packed by msgpack-c. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} frame_t;

static void frame_init(frame_t *f)
{
    msgpack_sbuffer_init(&f->sb);
    msgpack_packer_init(&f->pk, &f->sb, msgpack_sbuffer_write);
}

static void pstr(frame_t *f, const char *s)
{
    msgpack_pack_str(&f->pk, strlen(s));
    msgpack_pack_str_body(&f->pk, s, strlen(s));
}

/* Returns a malloc'd frame (prefix + payload) and frees the buffer. */
static char *frame_done(frame_t *f, size_t *len)
{
    size_t n = f->sb.size;
    char *out = malloc(n + 4);
    out[0] = (char)(n >> 24);
    out[1] = (char)(n >> 16);
    out[2] = (char)(n >> 8);
    out[3] = (char)n;
    memcpy(out + 4, f->sb.data, n);
    msgpack_sbuffer_destroy(&f->sb);
    *len = n + 4;
    return out;
}

static char *raw_frame(const char *payload, size_t n, size_t *len)
{
    char *out = malloc(n + 4);
    out[0] = (char)(n >> 24);
    out[1] = (char)(n >> 16);
    out[2] = (char)(n >> 8);
    out[3] = (char)n;
    memcpy(out + 4, payload, n);
    *len = n + 4;
    return out;
}

/* Decoding must fail with DP_EINVAL, a one-line message containing `part`,
 * and a cleared message. Frees buf. */
static void expect_bad(char *buf, const size_t *lenp, const char *part)
{
    size_t len = *lenp;
    dp_repl_msg_t m;
    memset(&m, 0xab, sizeof m);
    size_t used = 999;
    char *err = NULL;
    int rc = dp_repl_decode(buf, len, &m, &used, &err);
    cr_assert_eq(rc, DP_EINVAL, "expected DP_EINVAL for '%s', got %d", part, rc);
    cr_assert_not_null(err);
    cr_assert(strstr(err, part) != NULL, "message '%s' lacks '%s'", err, part);
    cr_assert_null(strchr(err, '\n'), "message '%s' is not one line", err);
    cr_assert_eq(used, 999, "*used must not be set on error");
    if (m.type == 0) {
        cr_assert_null(m.text);
        cr_assert_null(m.items);
    }
    free(err);
    free(buf);
}

/* A map with `n` entries whose first entries are "t": type. */
static void map_with_type(frame_t *f, uint32_t n, const char *type)
{
    frame_init(f);
    msgpack_pack_map(&f->pk, n);
    pstr(f, "t");
    pstr(f, type);
}

/* ---- round trips -------------------------------------------------------- */

Test(replproto, roundtrip_every_type)
{
    char *items[] = {"P101.flow", "P101.fault", "", "x\xc3\xa9y"};
    dp_repl_msg_t msgs[] = {
        {.type = DP_RM_HELLO, .version = DP_REPL_VERSION},
        {.type = DP_RM_HELLO, .version = 7, .token = "s3cret"},
        {.type = DP_RM_HELLO, .version = 1, .text = "pump-station", .where = "plant"},
        {.type = DP_RM_EVAL, .id = 1, .text = "return P101.flow"},
        {.type = DP_RM_EVAL, .id = UINT64_MAX, .text = ""},
        {.type = DP_RM_COMPLETE, .id = 300, .text = "P101.fl"},
        {.type = DP_RM_CANCEL, .id = 70000},
        {.type = DP_RM_OUT, .id = 0, .text = "notice: reloaded"},
        {.type = DP_RM_OUT, .id = 5, .text = "line one\nline two\ttab"},
        {.type = DP_RM_RESULT, .id = 9, .ok = true, .text = "121.4", .where = "P101"},
        {.type = DP_RM_RESULT, .id = 4294967296u, .ok = false, .text = "err\ntraceback"},
        {.type = DP_RM_ITEMS, .id = 3, .text = "P101.", .items = items, .nitems = 4},
        {.type = DP_RM_ITEMS, .id = 3, .text = "zz", .items = NULL, .nitems = 0},
        {.type = DP_RM_ERROR, .text = "malformed frame: unknown message type \"x\""},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(msgs); i++)
        check_roundtrip(&msgs[i]);
}

Test(replproto, fields_a_type_does_not_use_are_not_sent)
{
    dp_repl_msg_t in = {.type = DP_RM_CANCEL, .id = 2, .version = 9, .ok = true, .where = "x"};
    dp_repl_msg_t out = roundtrip(&in);
    cr_assert_eq(out.type, DP_RM_CANCEL);
    cr_assert_eq(out.version, 0);
    cr_assert_eq(out.ok, false);
    cr_assert_null(out.where);
    dp_repl_msg_clear(&out);
}

Test(replproto, many_items_and_long_text)
{
    static char *items[DP_REPL_MAX_ITEMS];
    char names[64][16];
    for (int i = 0; i < 64; i++)
        snprintf(names[i], sizeof names[i], "tag%d", i);
    for (int i = 0; i < DP_REPL_MAX_ITEMS; i++)
        items[i] = names[i % 64];
    dp_repl_msg_t in = {
        .type = DP_RM_ITEMS, .id = 1, .text = "t", .items = items, .nitems = DP_REPL_MAX_ITEMS};
    check_roundtrip(&in);

    /* Text lengths across every msgpack string width. */
    size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536, 200000};
    for (size_t i = 0; i < DP_ARRAY_LEN(lens); i++) {
        char *s = malloc(lens[i] + 1);
        memset(s, 'a' + (int)(i % 26), lens[i]);
        s[lens[i]] = '\0';
        dp_repl_msg_t m = {.type = DP_RM_OUT, .id = i, .text = s};
        check_roundtrip(&m);
        free(s);
    }
}

Test(replproto, ids_in_every_integer_encoding)
{
    uint64_t ids[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295u, 4294967296u, UINT64_MAX};
    for (size_t i = 0; i < DP_ARRAY_LEN(ids); i++) {
        dp_repl_msg_t m = {.type = DP_RM_CANCEL, .id = ids[i]};
        check_roundtrip(&m);
    }
    /* Signed encodings of non-negative numbers, as other msgpack libraries
     * write them, are accepted too. */
    int64_t sids[] = {0, 5, 100, 30000, 2000000000, INT64_MAX};
    for (size_t i = 0; i < DP_ARRAY_LEN(sids); i++) {
        frame_t f;
        map_with_type(&f, 2, "cancel");
        pstr(&f, "id");
        /* Force the signed forms: int8, int16, int32, int64. */
        int64_t v = sids[i];
        if (v <= INT8_MAX)
            msgpack_pack_fix_int8(&f.pk, (int8_t)v);
        else if (v <= INT16_MAX)
            msgpack_pack_fix_int16(&f.pk, (int16_t)v);
        else if (v <= INT32_MAX)
            msgpack_pack_fix_int32(&f.pk, (int32_t)v);
        else
            msgpack_pack_fix_int64(&f.pk, v);
        size_t len;
        char *buf = frame_done(&f, &len);
        dp_repl_msg_t m;
        size_t used;
        char *err = NULL;
        cr_assert_eq(dp_repl_decode(buf, len, &m, &used, &err), 1, "%s", err);
        cr_assert_eq(m.id, (uint64_t)v);
        dp_repl_msg_clear(&m);
        free(buf);
    }
}

Test(replproto, unknown_keys_of_every_type_are_ignored)
{
    frame_t f;
    map_with_type(&f, 17, "eval");
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 4);
    pstr(&f, "text");
    pstr(&f, "1+1");
    pstr(&f, "nil");
    msgpack_pack_nil(&f.pk);
    pstr(&f, "bools");
    msgpack_pack_true(&f.pk);
    pstr(&f, "neg");
    msgpack_pack_int64(&f.pk, -1234567890123);
    pstr(&f, "f32");
    msgpack_pack_float(&f.pk, 1.5f);
    pstr(&f, "f64");
    msgpack_pack_double(&f.pk, 2.5);
    pstr(&f, "bin");
    msgpack_pack_bin(&f.pk, 3);
    msgpack_pack_bin_body(&f.pk, "\0\1\2", 3);
    pstr(&f, "arr");
    msgpack_pack_array(&f.pk, 2);
    msgpack_pack_uint16(&f.pk, 1000);
    msgpack_pack_array(&f.pk, 1);
    msgpack_pack_map(&f.pk, 1);
    pstr(&f, "deep");
    msgpack_pack_false(&f.pk);
    pstr(&f, "map");
    msgpack_pack_map(&f.pk, 1);
    msgpack_pack_int8(&f.pk, -3);
    pstr(&f, "non-string keys are fine inside unknown values");
    pstr(&f, "ext");
    msgpack_pack_ext(&f.pk, 5, 7);
    msgpack_pack_ext_body(&f.pk, "abcde", 5);
    pstr(&f, "fixext");
    msgpack_pack_ext(&f.pk, 4, 1);
    msgpack_pack_ext_body(&f.pk, "abcd", 4);
    pstr(&f, "u64");
    msgpack_pack_uint64(&f.pk, UINT64_MAX);
    pstr(&f, "str16");
    char big[300];
    memset(big, 'q', sizeof big);
    msgpack_pack_str(&f.pk, sizeof big);
    msgpack_pack_str_body(&f.pk, big, sizeof big);
    pstr(&f, "empty-arr");
    msgpack_pack_array(&f.pk, 0);
    pstr(&f, "where");
    pstr(&f, "ignored for eval but must still be a string");
    size_t len;
    char *buf = frame_done(&f, &len);
    dp_repl_msg_t m;
    size_t used;
    char *err = NULL;
    cr_assert_eq(dp_repl_decode(buf, len, &m, &used, &err), 1, "%s", err);
    cr_assert_eq(m.type, DP_RM_EVAL);
    cr_assert_eq(m.id, 4);
    cr_assert_str_eq(m.text, "1+1");
    cr_assert_eq(used, len);
    dp_repl_msg_clear(&m);
    free(buf);
}

Test(replproto, a_repeated_key_keeps_the_last_value)
{
    frame_t f;
    map_with_type(&f, 4, "eval");
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 1);
    pstr(&f, "text");
    pstr(&f, "first");
    pstr(&f, "text");
    pstr(&f, "second");
    size_t len;
    char *buf = frame_done(&f, &len);
    dp_repl_msg_t m;
    size_t used;
    char *err = NULL;
    cr_assert_eq(dp_repl_decode(buf, len, &m, &used, &err), 1, "%s", err);
    cr_assert_str_eq(m.text, "second");
    dp_repl_msg_clear(&m);
    free(buf);
}

Test(replproto, type_names)
{
    cr_assert_null(dp_repl_type_name(0));
    cr_assert_null(dp_repl_type_name(-1));
    cr_assert_null(dp_repl_type_name(DP_RM_ERROR + 1));
    cr_assert_str_eq(dp_repl_type_name(DP_RM_HELLO), "hello");
    cr_assert_str_eq(dp_repl_type_name(DP_RM_ITEMS), "items");
    cr_assert_str_eq(dp_repl_type_name(DP_RM_ERROR), "error");
    dp_repl_msg_clear(NULL);
}

/* ---- encoding errors ---------------------------------------------------- */

static void expect_encode_error(const dp_repl_msg_t *m, const char *part)
{
    char *buf = NULL, *err = NULL;
    size_t len = 0;
    int rc = dp_repl_encode(m, &buf, &len, &err);
    cr_assert_eq(rc, DP_EINVAL, "expected an error containing '%s'", part);
    cr_assert_null(buf);
    cr_assert_not_null(err);
    cr_assert(strstr(err, part) != NULL, "message '%s' lacks '%s'", err, part);
    free(err);
}

Test(replproto, encode_errors)
{
    expect_encode_error(&(dp_repl_msg_t){.type = 0}, "unknown type 0");
    expect_encode_error(&(dp_repl_msg_t){.type = 42}, "unknown type 42");
    expect_encode_error(&(dp_repl_msg_t){.type = DP_RM_EVAL, .id = 1}, "needs text");
    expect_encode_error(&(dp_repl_msg_t){.type = DP_RM_ERROR}, "needs text");
    expect_encode_error(&(dp_repl_msg_t){.type = DP_RM_ITEMS, .id = 1, .text = "", .nitems = 2},
                        "needs items");
    static char *items[DP_REPL_MAX_ITEMS + 1];
    for (size_t i = 0; i < DP_ARRAY_LEN(items); i++)
        items[i] = "x";
    expect_encode_error(&(dp_repl_msg_t){.type = DP_RM_ITEMS,
                                         .id = 1,
                                         .text = "",
                                         .items = items,
                                         .nitems = DP_REPL_MAX_ITEMS + 1},
                        "more than the 4096 allowed");
    char *big = malloc(DP_REPL_MAX_FRAME + 1);
    memset(big, 'x', DP_REPL_MAX_FRAME);
    big[DP_REPL_MAX_FRAME] = '\0';
    expect_encode_error(&(dp_repl_msg_t){.type = DP_RM_OUT, .id = 1, .text = big},
                        "over the 1048576 byte limit");
    free(big);
}

/* ---- malformed frames --------------------------------------------------- */

Test(replproto, bad_lengths)
{
    size_t len = 4;
    expect_bad(raw_frame("", 0, &(size_t){0}), &len, "empty frame (length 0)");
    /* Over the limit: refused from the prefix alone, before the bytes arrive. */
    char *p = malloc(4);
    memcpy(p, "\x00\x10\x00\x01", 4);
    expect_bad(p, &len, "over the 1048576 byte limit");
    p = malloc(4);
    memcpy(p, "\xff\xff\xff\xff", 4);
    expect_bad(p, &len, "frame of 4294967295 bytes");
}

Test(replproto, payload_not_one_map)
{
    size_t len;
    expect_bad(raw_frame("\x92\x01\x02", 3, &len), &len, "not a msgpack map");
    expect_bad(raw_frame("\x01", 1, &len), &len, "not a msgpack map");
    expect_bad(raw_frame("\xc1", 1, &len), &len, "not a msgpack map");
    expect_bad(raw_frame("\xa4", 1, &len), &len, "not a msgpack map");
    /* Trailing bytes after a complete map. */
    expect_bad(raw_frame("\x81\xa1t\xa6\x63\x61ncel\x00", 1 + 2 + 7 + 1, &len), &len,
               "trailing bytes");
    frame_t f;
    map_with_type(&f, 2, "cancel");
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 1);
    msgpack_pack_nil(&f.pk);
    expect_bad(frame_done(&f, &len), &len, "trailing bytes");
    /* Two maps in one frame. */
    expect_bad(raw_frame("\x80\x80", 2, &len), &len, "trailing bytes");
    /* A map that claims more entries than the frame holds. */
    expect_bad(raw_frame("\x83\xa1t\xa4\x65val", 7, &len), &len, "truncated frame");
    expect_bad(raw_frame("\xdf\xff\xff\xff\xff", 5, &len), &len, "more entries than fit");
    expect_bad(raw_frame("\xde\x00", 2, &len), &len, "in the map length");
    /* A string longer than the frame. */
    expect_bad(raw_frame("\x81\xa1t\xa9\x65val", 7, &len), &len, "longer than the frame");
    expect_bad(raw_frame("\x81\xa1t\xdb\x00\x00", 6, &len), &len, "in the length of \"t\"");
    /* Key missing its value. */
    expect_bad(raw_frame("\x81\xa1t", 3, &len), &len, "\"t\" is missing");
    /* A non-string key. */
    expect_bad(raw_frame("\x81\x01\x02", 3, &len), &len, "a map key must be a string");
    /* An empty map has no type. */
    expect_bad(raw_frame("\x80", 1, &len), &len, "no type");
}

Test(replproto, unknown_or_missing_type)
{
    frame_t f;
    size_t len;
    map_with_type(&f, 1, "launch");
    expect_bad(frame_done(&f, &len), &len, "unknown message type \"launch\"");
    /* Control characters in the type are not echoed raw. */
    map_with_type(&f, 1, "a\nb\x01");
    expect_bad(frame_done(&f, &len), &len, "unknown message type \"a?b?\"");
    /* Long types are cut. */
    map_with_type(&f, 1, "ThisTypeNameIsMuchLongerThanThirtyTwoCharacters");
    expect_bad(frame_done(&f, &len), &len, "\"ThisTypeNameIsMuchLongerThanThir...\"");
    frame_init(&f);
    msgpack_pack_map(&f.pk, 1);
    pstr(&f, "t");
    msgpack_pack_uint8(&f.pk, 2);
    expect_bad(frame_done(&f, &len), &len, "\"t\" must be a string");
    frame_init(&f);
    msgpack_pack_map(&f.pk, 2);
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 2);
    pstr(&f, "text");
    pstr(&f, "x");
    expect_bad(frame_done(&f, &len), &len, "no type (key \"t\")");
}

Test(replproto, missing_required_keys)
{
    struct {
        const char *type, *missing;
    } cases[] = {
        {"hello", "\"v\""}, {"eval", "\"id\""},   {"complete", "\"id\""}, {"cancel", "\"id\""},
        {"out", "\"id\""},  {"result", "\"id\""}, {"items", "\"id\""},    {"error", "\"text\""},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(cases); i++) {
        frame_t f;
        size_t len;
        map_with_type(&f, 1, cases[i].type);
        char want[80];
        snprintf(want, sizeof want, "a \"%s\" message needs %s", cases[i].type, cases[i].missing);
        expect_bad(frame_done(&f, &len), &len, want);
    }
    /* With the id present, the next missing field is named. */
    struct {
        const char *type, *missing;
    } next[] = {{"eval", "\"text\""},
                {"complete", "\"text\""},
                {"out", "\"text\""},
                {"result", "\"ok\""},
                {"items", "\"text\""}};
    for (size_t i = 0; i < DP_ARRAY_LEN(next); i++) {
        frame_t f;
        size_t len;
        map_with_type(&f, 2, next[i].type);
        pstr(&f, "id");
        msgpack_pack_uint8(&f.pk, 1);
        char want[80];
        snprintf(want, sizeof want, "a \"%s\" message needs %s", next[i].type, next[i].missing);
        expect_bad(frame_done(&f, &len), &len, want);
    }
    frame_t f;
    size_t len;
    map_with_type(&f, 3, "items");
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 1);
    pstr(&f, "text");
    pstr(&f, "x");
    expect_bad(frame_done(&f, &len), &len, "a \"items\" message needs \"items\"");
    map_with_type(&f, 3, "result");
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 1);
    pstr(&f, "ok");
    msgpack_pack_true(&f.pk);
    expect_bad(frame_done(&f, &len), &len, "a \"result\" message needs \"text\"");
}

/* A frame {t = "eval", id = 1, text = "x", <key> = <value packed by fn>}. */
static char *with_key(const char *key, void (*fn)(frame_t *), size_t *len)
{
    frame_t f;
    map_with_type(&f, 4, "eval");
    pstr(&f, "id");
    msgpack_pack_uint8(&f.pk, 1);
    pstr(&f, "text");
    pstr(&f, "x");
    pstr(&f, key);
    fn(&f);
    return frame_done(&f, len);
}

static void v_str(frame_t *f)
{
    pstr(f, "1");
}
static void v_neg(frame_t *f)
{
    msgpack_pack_int8(&f->pk, -1);
}
static void v_big(frame_t *f)
{
    msgpack_pack_uint64(&f->pk, (uint64_t)UINT32_MAX + 1);
}
static void v_nil(frame_t *f)
{
    msgpack_pack_nil(&f->pk);
}
static void v_float(frame_t *f)
{
    msgpack_pack_double(&f->pk, 1.0);
}
static void v_map(frame_t *f)
{
    msgpack_pack_map(&f->pk, 0);
}
static void v_nul(frame_t *f)
{
    msgpack_pack_str(&f->pk, 3);
    msgpack_pack_str_body(&f->pk, "a\0b", 3);
}
static void v_arr_int(frame_t *f)
{
    msgpack_pack_array(&f->pk, 2);
    pstr(f, "ok");
    msgpack_pack_uint8(&f->pk, 3);
}
static void v_arr_nul(frame_t *f)
{
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_str(&f->pk, 2);
    msgpack_pack_str_body(&f->pk, "\0x", 2);
}
static void v_arr_huge(frame_t *f)
{
    msgpack_pack_array(&f->pk, DP_REPL_MAX_ITEMS + 1);
    for (int i = 0; i <= DP_REPL_MAX_ITEMS; i++)
        pstr(f, "");
}
static void v_arr_claims(frame_t *f)
{
    /* array32 header claiming 100 entries with one present. */
    msgpack_sbuffer_write(&f->sb, "\xdd\x00\x00\x00\x64\xa0", 6);
}
static void v_deep(frame_t *f)
{
    for (int i = 0; i < 40; i++)
        msgpack_pack_array(&f->pk, 1);
    msgpack_pack_nil(&f->pk);
}
static void v_bad_byte(frame_t *f)
{
    msgpack_sbuffer_write(&f->sb, "\xc1", 1);
}
static void v_ext_short(frame_t *f)
{
    msgpack_sbuffer_write(&f->sb, "\xc7\x05\x01\x61", 4);
}

Test(replproto, known_keys_with_the_wrong_type)
{
    size_t len;
    expect_bad(with_key("id", v_str, &len), &len, "\"id\" must be a non-negative integer");
    expect_bad(with_key("id", v_neg, &len), &len, "\"id\" must be a non-negative integer");
    expect_bad(with_key("id", v_float, &len), &len, "\"id\" must be a non-negative integer");
    expect_bad(with_key("v", v_str, &len), &len, "\"v\" must be a non-negative integer");
    expect_bad(with_key("v", v_big, &len), &len, "\"v\" is out of range");
    expect_bad(with_key("ok", v_str, &len), &len, "\"ok\" must be a boolean");
    expect_bad(with_key("ok", v_nil, &len), &len, "\"ok\" must be a boolean");
    expect_bad(with_key("text", v_nil, &len), &len, "\"text\" must be a string");
    expect_bad(with_key("text", v_map, &len), &len, "\"text\" must be a string");
    expect_bad(with_key("where", v_float, &len), &len, "\"where\" must be a string");
    expect_bad(with_key("token", v_neg, &len), &len, "\"token\" must be a string");
    expect_bad(with_key("items", v_str, &len), &len, "\"items\" must be an array of strings");
    expect_bad(with_key("items", v_map, &len), &len, "\"items\" must be an array of strings");
    expect_bad(with_key("items", v_arr_int, &len), &len, "an entry of items must be a string");
}

Test(replproto, bad_strings_and_containers)
{
    size_t len;
    expect_bad(with_key("text", v_nul, &len), &len, "\"text\" holds a NUL byte");
    expect_bad(with_key("items", v_arr_nul, &len), &len, "an entry of items holds a NUL byte");
    expect_bad(with_key("items", v_arr_huge, &len), &len, "more entries than allowed");
    expect_bad(with_key("items", v_arr_claims, &len), &len, "more entries than allowed");
    expect_bad(with_key("unknown", v_deep, &len), &len, "nested too deeply");
    expect_bad(with_key("unknown", v_arr_claims, &len), &len, "truncated frame");
    expect_bad(with_key("unknown", v_bad_byte, &len), &len, "invalid msgpack byte 0xc1");
    expect_bad(with_key("unknown", v_ext_short, &len), &len, "truncated frame");
}

/* Every single-byte corruption of a valid frame either decodes, asks for
 * more bytes, or fails cleanly (ASan checks the cleanly). */
Test(replproto, corrupted_frames_fail_cleanly)
{
    char *items[] = {"a", "bb"};
    dp_repl_msg_t in = {.type = DP_RM_ITEMS, .id = 300, .text = "P1", .items = items, .nitems = 2};
    char *buf, *err = NULL;
    size_t len;
    cr_assert_eq(dp_repl_encode(&in, &buf, &len, &err), 0);
    for (size_t i = 0; i < len; i++) {
        for (int b = 0; b < 256; b += 7) {
            char *copy = malloc(len);
            memcpy(copy, buf, len);
            copy[i] = (char)b;
            dp_repl_msg_t m;
            size_t used;
            int rc = dp_repl_decode(copy, len, &m, &used, &err);
            if (rc == 1) {
                cr_assert_leq(used, len);
                dp_repl_msg_clear(&m);
            } else if (rc < 0) {
                cr_assert_not_null(err);
                free(err);
                err = NULL;
            }
            free(copy);
        }
    }
    free(buf);
}
