/* The Modbus codec: point checks, every type in every word order (both
 * directions, against register images written out by hand), request
 * planning limits and gaps, and Modbus TCP framing with malformed frames and
 * a robustness pass over random bytes. */
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/modbus/codec.h"

static dp_mb_point_t pt(int area, int type, int order, int address)
{
    dp_mb_point_t p = {
        .area = area, .type = type, .order = order, .address = address, .scale = 1, .offset = 0};
    return p;
}

/* ---- point checks ---------------------------------------------------- */

static void check_fails(dp_mb_point_t p, const char *field)
{
    char *err = NULL;
    cr_assert_lt(dp_mb_check_point(&p, &err), 0, "point accepted, expected an error on %s", field);
    cr_assert_not_null(err);
    cr_assert_eq(strncmp(err, field, strlen(field)), 0, "error \"%s\" does not start with %s", err,
                 field);
    free(err);
}

Test(modbus_codec, check_point_names_the_field)
{
    check_fails(pt(DP_MB_COIL, DP_MB_U16, DP_MB_ABCD, 0), "type:");
    check_fails(pt(DP_MB_DISCRETE, DP_MB_F32, DP_MB_ABCD, 0), "type:");
    check_fails(pt(DP_MB_HOLDING, DP_MB_STRING, DP_MB_ABCD, 0), "count:");
    dp_mb_point_t p = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0);
    p.count = 2;
    check_fails(p, "count:");
    p = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0);
    p.bit = 3;
    check_fails(p, "bit:");
    check_fails(pt(DP_MB_HOLDING, DP_MB_F32, DP_MB_ABCD, 65535), "address:");
    check_fails(pt(DP_MB_HOLDING, DP_MB_F64, DP_MB_ABCD, 65533), "address:");
    p = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0);
    p.scale = 0;
    check_fails(p, "scale:");
    p.scale = NAN;
    check_fails(p, "scale:");
    p = pt(DP_MB_COIL, DP_MB_BOOL, DP_MB_ABCD, 0);
    p.scale = 2;
    check_fails(p, "scale:");
    p = pt(DP_MB_HOLDING, DP_MB_STRING, DP_MB_ABCD, 0);
    p.count = 4;
    p.offset = 1;
    check_fails(p, "scale:");

    /* The last address is usable. */
    char *err = NULL;
    p = pt(DP_MB_HOLDING, DP_MB_F64, DP_MB_ABCD, 65532);
    cr_assert_eq(dp_mb_check_point(&p, &err), 0, "%s", err);
    p = pt(DP_MB_COIL, DP_MB_BOOL, DP_MB_ABCD, 65535);
    cr_assert_eq(dp_mb_check_point(&p, &err), 0, "%s", err);
}

Test(modbus_codec, auto_type_depends_on_area)
{
    dp_mb_point_t p = pt(DP_MB_COIL, DP_MB_AUTO, DP_MB_ABCD, 0);
    cr_assert_eq(dp_mb_check_point(&p, NULL), 0);
    cr_assert_eq(p.type, DP_MB_BOOL);
    p = pt(DP_MB_INPUT, DP_MB_AUTO, DP_MB_ABCD, 0);
    cr_assert_eq(dp_mb_check_point(&p, NULL), 0);
    cr_assert_eq(p.type, DP_MB_U16);
    cr_assert_str_eq(dp_mb_type_names[DP_MB_AUTO], "auto");
}

Test(modbus_codec, widths)
{
    int want[] = {
        [DP_MB_BOOL] = 1, [DP_MB_BIT] = 1, [DP_MB_U16] = 1, [DP_MB_I16] = 1, [DP_MB_U32] = 2,
        [DP_MB_I32] = 2,  [DP_MB_F32] = 2, [DP_MB_U64] = 4, [DP_MB_I64] = 4, [DP_MB_F64] = 4};
    for (int t = DP_MB_BOOL; t <= DP_MB_F64; t++) {
        dp_mb_point_t p = pt(DP_MB_HOLDING, t, DP_MB_ABCD, 0);
        cr_assert_eq(dp_mb_width(&p), want[t], "type %s", dp_mb_type_names[t]);
    }
    dp_mb_point_t s = pt(DP_MB_HOLDING, DP_MB_STRING, DP_MB_ABCD, 0);
    s.count = 7;
    cr_assert_eq(dp_mb_width(&s), 7);
}

Test(modbus_codec, overlap)
{
    dp_mb_point_t a = pt(DP_MB_HOLDING, DP_MB_F32, DP_MB_ABCD, 10);
    dp_mb_point_t b = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 11);
    cr_assert(dp_mb_overlap(&a, &b));
    b.address = 12;
    cr_assert_not(dp_mb_overlap(&a, &b));
    b.address = 11;
    b.area = DP_MB_INPUT;
    cr_assert_not(dp_mb_overlap(&a, &b), "different areas never overlap");
    b.area = DP_MB_HOLDING;
    b.unit_id = 2;
    cr_assert_not(dp_mb_overlap(&a, &b), "different unit ids never overlap");
    dp_mb_point_t x = pt(DP_MB_HOLDING, DP_MB_BIT, DP_MB_ABCD, 5);
    dp_mb_point_t y = x;
    y.bit = 1;
    cr_assert_not(dp_mb_overlap(&x, &y), "distinct bits of one register");
    y.bit = 0;
    cr_assert(dp_mb_overlap(&x, &y), "the same bit twice");
    dp_mb_point_t w = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 5);
    cr_assert(dp_mb_overlap(&x, &w), "a bit and the whole register");
}

/* ---- values: every type in every order --------------------------------- */

/* Register images of 0x1122 / 0x11223344 / 0x1122334455667788 per order. */
static const uint16_t img16[4][1] = {{0x1122}, {0x1122}, {0x2211}, {0x2211}};
static const uint16_t img32[4][2] = {
    {0x1122, 0x3344}, {0x3344, 0x1122}, {0x2211, 0x4433}, {0x4433, 0x2211}};
static const uint16_t img64[4][4] = {{0x1122, 0x3344, 0x5566, 0x7788},
                                     {0x7788, 0x5566, 0x3344, 0x1122},
                                     {0x2211, 0x4433, 0x6655, 0x8877},
                                     {0x8877, 0x6655, 0x4433, 0x2211}};

/* Puts the big-endian word image `x` (n registers) into wire order. */
static void wire(int order, uint64_t x, int n, uint16_t *regs)
{
    uint16_t be[4];
    for (int i = n - 1; i >= 0; i--, x >>= 16)
        be[i] = (uint16_t)x;
    for (int i = 0; i < n; i++) {
        bool swap_words = order == DP_MB_CDAB || order == DP_MB_DCBA;
        bool swap_bytes = order == DP_MB_BADC || order == DP_MB_DCBA;
        uint16_t r = be[swap_words ? n - 1 - i : i];
        regs[i] = swap_bytes ? (uint16_t)(r << 8 | r >> 8) : r;
    }
}

Test(modbus_codec, wire_helper_matches_hand_written_images)
{
    for (int o = 0; o < 4; o++) {
        uint16_t r[4];
        wire(o, 0x1122, 1, r);
        cr_assert_eq(r[0], img16[o][0]);
        wire(o, 0x11223344, 2, r);
        cr_assert_arr_eq(r, img32[o], sizeof img32[o], "order %s", dp_mb_order_names[o]);
        wire(o, UINT64_C(0x1122334455667788), 4, r);
        cr_assert_arr_eq(r, img64[o], sizeof img64[o], "order %s", dp_mb_order_names[o]);
    }
}

typedef struct {
    int type;
    double value;
    uint64_t bits; /* the value's big-endian image */
} case_t;

static uint64_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

Test(modbus_codec, every_type_in_every_order)
{
    case_t cases[] = {
        {DP_MB_U16, 0x1122, 0x1122},
        {DP_MB_U16, 65535, 0xffff},
        {DP_MB_I16, -2, 0xfffe},
        {DP_MB_I16, -32768, 0x8000},
        {DP_MB_I16, 32767, 0x7fff},
        {DP_MB_U32, 0x11223344, 0x11223344},
        {DP_MB_U32, 4294967295.0, 0xffffffff},
        {DP_MB_I32, -2, 0xfffffffe},
        {DP_MB_I32, -2147483648.0, 0x80000000},
        {DP_MB_I32, 123456789, 123456789},
        {DP_MB_U64, 0x1122334455667788 & ~0xffULL, 0x1122334455667700},
        {DP_MB_U64, 9007199254740992.0, UINT64_C(9007199254740992)},
        {DP_MB_I64, -1, UINT64_MAX},
        {DP_MB_I64, -9007199254740992.0, (uint64_t)INT64_C(-9007199254740992)},
        {DP_MB_F32, 1.5, 0x3fc00000},
        {DP_MB_F32, -273.15f, 0},
        {DP_MB_F64, -2.5, 0xc004000000000000},
        {DP_MB_F64, 3.141592653589793, 0},
    };
    for (size_t c = 0; c < DP_ARRAY_LEN(cases); c++) {
        case_t k = cases[c];
        if (k.type == DP_MB_F32 && k.bits == 0)
            k.bits = f32_bits((float)k.value);
        if (k.type == DP_MB_F64 && k.bits == 0)
            k.bits = f64_bits(k.value);
        for (int o = 0; o < 4; o++) {
            dp_mb_point_t p = pt(DP_MB_HOLDING, k.type, o, 0);
            cr_assert_eq(dp_mb_check_point(&p, NULL), 0);
            int n = dp_mb_width(&p);
            uint16_t regs[4], want[4];
            wire(o, k.bits, n, want);
            dp_value_t out;
            dp_mb_decode(&p, want, &out, NULL);
            cr_assert_eq(out.type, DP_NUM);
            cr_assert_eq(out.u.n, k.value, "%s %s: decoded %.17g, want %.17g",
                         dp_mb_type_names[k.type], dp_mb_order_names[o], out.u.n, k.value);
            char *err = NULL;
            dp_value_t v = dp_num(k.value);
            cr_assert_eq(dp_mb_encode(&p, &v, regs, &err), 0, "%s", err);
            cr_assert_arr_eq(regs, want, (size_t)n * sizeof regs[0], "%s %s: encode",
                             dp_mb_type_names[k.type], dp_mb_order_names[o]);
        }
    }
}

Test(modbus_codec, scale_and_offset)
{
    dp_mb_point_t p = pt(DP_MB_INPUT, DP_MB_I16, DP_MB_ABCD, 0);
    p.scale = 0.1;
    p.offset = -10;
    uint16_t r = 1234;
    dp_value_t v;
    dp_mb_decode(&p, &r, &v, NULL);
    cr_assert_float_eq(v.u.n, 113.4, 1e-9);
    dp_value_t in = dp_num(113.4);
    cr_assert_eq(dp_mb_encode(&p, &in, &r, NULL), 0);
    cr_assert_eq(r, 1234);
    /* Rounds to the nearest raw step. */
    in = dp_num(113.44);
    cr_assert_eq(dp_mb_encode(&p, &in, &r, NULL), 0);
    cr_assert_eq(r, 1234);
    /* -3276.8 is raw -32768, the lowest i16; one step lower is refused. */
    in = dp_num(-3276.8 - 10);
    cr_assert_eq(dp_mb_encode(&p, &in, &r, NULL), 0);
    cr_assert_eq(r, 0x8000);
    in = dp_num(-3276.9 - 10);
    char *err = NULL;
    cr_assert_lt(dp_mb_encode(&p, &in, &r, &err), 0);
    cr_assert_not_null(strstr(err, "out of range"), "%s", err);
    free(err);
}

Test(modbus_codec, encode_refuses_out_of_range)
{
    struct {
        int type;
        double v;
    } bad[] = {
        {DP_MB_U16, 65536},    {DP_MB_U16, -1},           {DP_MB_I16, 32768},
        {DP_MB_I16, -32769},   {DP_MB_U32, 4294967296.0}, {DP_MB_I32, 2147483648.0},
        {DP_MB_U64, 0x1p64},   {DP_MB_U64, -1},           {DP_MB_I64, 0x1p63},
        {DP_MB_F32, 1e39},     {DP_MB_F32, -1e39},        {DP_MB_U16, NAN},
        {DP_MB_F64, INFINITY},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(bad); i++) {
        dp_mb_point_t p = pt(DP_MB_HOLDING, bad[i].type, DP_MB_ABCD, 0);
        uint16_t regs[4];
        char *err = NULL;
        dp_value_t v = dp_num(bad[i].v);
        cr_assert_lt(dp_mb_encode(&p, &v, regs, &err), 0, "%s %g accepted",
                     dp_mb_type_names[bad[i].type], bad[i].v);
        cr_assert_not_null(err);
        free(err);
    }
    dp_mb_point_t p = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0);
    uint16_t r;
    dp_value_t s = dp_str("12");
    char *err = NULL;
    cr_assert_lt(dp_mb_encode(&p, &s, &r, &err), 0, "a string for u16");
    cr_assert_not_null(strstr(err, "number"), "%s", err);
    free(err);
}

Test(modbus_codec, bool_and_bit)
{
    dp_mb_point_t c = pt(DP_MB_COIL, DP_MB_BOOL, DP_MB_ABCD, 0);
    uint16_t one = 1, zero = 0, r;
    dp_value_t v;
    dp_mb_decode(&c, &one, &v, NULL);
    cr_assert(v.type == DP_BOOL && v.u.b);
    dp_mb_decode(&c, &zero, &v, NULL);
    cr_assert(v.type == DP_BOOL && !v.u.b);
    dp_value_t t = dp_bool(true);
    cr_assert_eq(dp_mb_encode(&c, &t, &r, NULL), 0);
    cr_assert_eq(r, 1);
    dp_value_t n = dp_num(2);
    char *err = NULL;
    cr_assert_lt(dp_mb_encode(&c, &n, &r, &err), 0);
    free(err);

    /* bool on a register: not 0. */
    dp_mb_point_t h = pt(DP_MB_HOLDING, DP_MB_BOOL, DP_MB_ABCD, 0);
    uint16_t x = 0x0100;
    dp_mb_decode(&h, &x, &v, NULL);
    cr_assert(v.u.b);

    dp_mb_point_t b = pt(DP_MB_HOLDING, DP_MB_BIT, DP_MB_ABCD, 0);
    for (int bit = 0; bit < 16; bit++) {
        b.bit = bit;
        uint16_t w = (uint16_t)(1u << bit);
        dp_mb_decode(&b, &w, &v, NULL);
        cr_assert(v.type == DP_BOOL && v.u.b, "bit %d", bit);
        w = (uint16_t)~w;
        dp_mb_decode(&b, &w, &v, NULL);
        cr_assert(v.type == DP_BOOL && !v.u.b, "bit %d clear", bit);
    }
}

Test(modbus_codec, strings)
{
    dp_mb_point_t p = pt(DP_MB_HOLDING, DP_MB_STRING, DP_MB_ABCD, 0);
    p.count = 3;
    char sbuf[16];
    uint16_t regs[3], want_be[3] = {'H' << 8 | 'E', 'L' << 8 | 'L', 'O' << 8 | 0};
    uint16_t want_le[3] = {'E' << 8 | 'H', 'L' << 8 | 'L', 0 << 8 | 'O'};
    for (int o = 0; o < 4; o++) {
        p.order = o;
        const uint16_t *want = o == DP_MB_ABCD || o == DP_MB_CDAB ? want_be : want_le;
        dp_value_t v = dp_str("HELLO");
        cr_assert_eq(dp_mb_encode(&p, &v, regs, NULL), 0);
        cr_assert_arr_eq(regs, want, sizeof regs, "order %s", dp_mb_order_names[o]);
        dp_value_t out;
        dp_mb_decode(&p, want, &out, sbuf);
        cr_assert_eq(out.type, DP_STR);
        cr_assert_str_eq(out.u.s, "HELLO");
    }
    /* Space padding is dropped; a full string has no terminator on the wire. */
    p.order = DP_MB_ABCD;
    uint16_t padded[3] = {'A' << 8 | 'B', ' ' << 8 | ' ', ' ' << 8 | ' '};
    dp_value_t out;
    dp_mb_decode(&p, padded, &out, sbuf);
    cr_assert_str_eq(out.u.s, "AB");
    uint16_t full[3] = {'a' << 8 | 'b', 'c' << 8 | 'd', 'e' << 8 | 'f'};
    dp_mb_decode(&p, full, &out, sbuf);
    cr_assert_str_eq(out.u.s, "abcdef");
    dp_value_t v = dp_str("abcdefg");
    char *err = NULL;
    cr_assert_lt(dp_mb_encode(&p, &v, regs, &err), 0, "7 characters in 3 registers");
    free(err);
}

/* ---- planning ---------------------------------------------------------- */

static size_t plan(dp_mb_point_t *pts, size_t n, int gap, dp_mb_req_t *reqs, size_t *order)
{
    const dp_mb_point_t *ptrs[300];
    for (size_t i = 0; i < n; i++) {
        if (pts[i].every == 0)
            pts[i].every = DP_US_PER_SEC;
        ptrs[i] = &pts[i];
    }
    return dp_mb_plan(ptrs, n, gap, 0, 0, order, reqs);
}

Test(modbus_codec, plan_coalesces_adjacent_and_small_gaps)
{
    dp_mb_point_t pts[5] = {
        pt(DP_MB_HOLDING, DP_MB_F32, DP_MB_ABCD, 4), pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0),
        pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 1), pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 20),
        pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 2)};
    pts[4].unit_id = 1; /* another unit: sorted last, never merged */
    dp_mb_req_t reqs[5];
    size_t order[5];
    /* Gap 2 (addresses 2, 3): merged with max_gap 2, not with 1. */
    size_t n = plan(pts, 5, 2, reqs, order);
    cr_assert_eq(n, 3);
    cr_assert_eq(reqs[0].area, DP_MB_HOLDING);
    cr_assert_eq(reqs[0].start, 0);
    cr_assert_eq(reqs[0].count, 6);
    cr_assert_eq(reqs[0].n, 3);
    cr_assert_eq(order[reqs[0].first], 1);
    cr_assert_eq(order[reqs[0].first + 2], 0);
    cr_assert_eq(reqs[1].start, 20);
    cr_assert_eq(reqs[1].count, 1);
    cr_assert_eq(reqs[2].unit_id, 1);
    cr_assert_eq(reqs[2].start, 2);
    n = plan(pts, 5, 1, reqs, order);
    cr_assert_eq(n, 4);
    cr_assert_eq(reqs[0].count, 2);
    cr_assert_eq(reqs[1].start, 4);
    cr_assert_eq(reqs[1].count, 2);
    /* Gap 0: only touching points merge. */
    n = plan(pts, 5, 0, reqs, order);
    cr_assert_eq(n, 4);
}

Test(modbus_codec, plan_splits_groups)
{
    dp_mb_point_t pts[4] = {
        pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0), pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 1),
        pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 2), pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 3)};
    pts[1].unit_id = 2;
    pts[2].every = 5 * DP_US_PER_SEC;
    dp_mb_req_t reqs[4];
    size_t order[4];
    size_t n = plan(pts, 4, 10, reqs, order);
    /* unit 0 every 1s: addresses 0 and 3; unit 0 every 5s: 2; unit 2: 1. */
    cr_assert_eq(n, 3);
    cr_assert_eq(reqs[0].start, 0);
    cr_assert_eq(reqs[0].count, 4);
    cr_assert_eq(reqs[0].n, 2);
    cr_assert_eq(reqs[1].every, 5 * DP_US_PER_SEC);
    cr_assert_eq(reqs[2].unit_id, 2);
}

Test(modbus_codec, plan_respects_protocol_limits)
{
    static dp_mb_point_t pts[300];
    dp_mb_req_t reqs[300];
    size_t order[300];
    for (int i = 0; i < 126; i++)
        pts[i] = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, i);
    size_t n = plan(pts, 126, 0, reqs, order);
    cr_assert_eq(n, 2);
    cr_assert_eq(reqs[0].count, 125);
    cr_assert_eq(reqs[1].start, 125);
    cr_assert_eq(reqs[1].count, 1);

    /* A 2-register value that would straddle the limit starts a new request. */
    pts[0] = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 0);
    pts[1] = pt(DP_MB_HOLDING, DP_MB_F32, DP_MB_ABCD, 124);
    n = plan(pts, 2, 200, reqs, order);
    cr_assert_eq(n, 2);
    cr_assert_eq(reqs[1].start, 124);
    cr_assert_eq(reqs[1].count, 2);

    /* Bits: 2000 per request. */
    for (int i = 0; i < 300; i++)
        pts[i] = pt(DP_MB_COIL, DP_MB_BOOL, DP_MB_ABCD, i * 10);
    n = plan(pts, 300, 10, reqs, order);
    cr_assert_eq(n, 2);
    cr_assert_eq(reqs[0].count, 1991);
    cr_assert_eq(reqs[0].n, 200);
    cr_assert_eq(reqs[1].start, 2000);

    /* A caller's smaller limit is honoured. */
    const dp_mb_point_t *ptrs[10];
    for (int i = 0; i < 10; i++) {
        pts[i] = pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, i);
        pts[i].every = DP_US_PER_SEC;
        ptrs[i] = &pts[i];
    }
    n = dp_mb_plan(ptrs, 10, 0, 4, 0, order, reqs);
    cr_assert_eq(n, 3);
    cr_assert_eq(reqs[2].count, 2);
}

Test(modbus_codec, plan_shared_register_bits)
{
    dp_mb_point_t pts[3] = {pt(DP_MB_HOLDING, DP_MB_BIT, DP_MB_ABCD, 7),
                            pt(DP_MB_HOLDING, DP_MB_BIT, DP_MB_ABCD, 7),
                            pt(DP_MB_HOLDING, DP_MB_U16, DP_MB_ABCD, 8)};
    pts[1].bit = 3;
    dp_mb_req_t reqs[3];
    size_t order[3];
    cr_assert_eq(plan(pts, 3, 0, reqs, order), 1);
    cr_assert_eq(reqs[0].start, 7);
    cr_assert_eq(reqs[0].count, 2);
    cr_assert_eq(reqs[0].n, 3);
}

Test(modbus_codec, plan_nothing)
{
    dp_mb_req_t reqs[1];
    size_t order[1];
    cr_assert_eq(dp_mb_plan(NULL, 0, 0, 0, 0, order, reqs), 0);
}

/* ---- frames ------------------------------------------------------------ */

static size_t mk(uint8_t *f, uint16_t tid, uint8_t unit, const uint8_t *pdu, size_t n)
{
    f[0] = (uint8_t)(tid >> 8);
    f[1] = (uint8_t)tid;
    f[2] = f[3] = 0;
    f[4] = (uint8_t)((n + 1) >> 8);
    f[5] = (uint8_t)(n + 1);
    f[6] = unit;
    memcpy(f + 7, pdu, n);
    return 7 + n;
}

Test(modbus_codec, frame_len)
{
    uint8_t f[300];
    size_t n = mk(f, 1, 1, (const uint8_t[]){3, 0, 0, 0, 1}, 5);
    cr_assert_eq(n, 12);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(dp_mb_frame_len(f, k), 0, "prefix %zu", k);
    cr_assert_eq(dp_mb_frame_len(f, n), 12);
    cr_assert_eq(dp_mb_frame_len(f, n + 5), 12, "a second frame follows");
    f[2] = 1;
    cr_assert_eq(dp_mb_frame_len(f, n), DP_EINVAL, "protocol id not 0");
    f[2] = 0;
    f[4] = 0;
    f[5] = 1;
    cr_assert_eq(dp_mb_frame_len(f, n), DP_EINVAL, "length 1: no function code");
    f[5] = 255;
    cr_assert_eq(dp_mb_frame_len(f, n), DP_EINVAL, "length 255: too long");
    f[4] = 0xff;
    cr_assert_eq(dp_mb_frame_len(f, n), DP_EINVAL);
}

static int parse(const uint8_t *pdu, size_t n, dp_mb_request_t *req)
{
    uint8_t f[300];
    size_t len = mk(f, 0xbeef, 9, pdu, n);
    int rc = dp_mb_parse_request(f, len, req);
    if (rc >= 0) {
        cr_assert_eq(req->tid, 0xbeef);
        cr_assert_eq(req->unit_id, 9);
        cr_assert_eq(req->function, pdu[0]);
    }
    return rc;
}

Test(modbus_codec, parse_reads)
{
    static dp_mb_request_t req;
    cr_assert_eq(parse((const uint8_t[]){3, 0x00, 0x10, 0x00, 0x7d}, 5, &req), 0);
    cr_assert_eq(req.area, DP_MB_HOLDING);
    cr_assert_eq(req.address, 16);
    cr_assert_eq(req.count, 125);
    cr_assert_not(req.write);
    cr_assert_eq(parse((const uint8_t[]){4, 0, 0, 0, 1}, 5, &req), 0);
    cr_assert_eq(req.area, DP_MB_INPUT);
    cr_assert_eq(parse((const uint8_t[]){1, 0, 0, 0x07, 0xd0}, 5, &req), 0);
    cr_assert_eq(req.area, DP_MB_COIL);
    cr_assert_eq(req.count, 2000);
    cr_assert_eq(parse((const uint8_t[]){2, 0xff, 0xff, 0, 1}, 5, &req), 0);
    cr_assert_eq(req.area, DP_MB_DISCRETE);
    cr_assert_eq(req.address, 65535);

    cr_assert_eq(parse((const uint8_t[]){3, 0, 0, 0, 0}, 5, &req), DP_MB_EX_ILLEGAL_VALUE);
    cr_assert_eq(parse((const uint8_t[]){3, 0, 0, 0, 126}, 5, &req), DP_MB_EX_ILLEGAL_VALUE);
    cr_assert_eq(parse((const uint8_t[]){1, 0, 0, 0x07, 0xd1}, 5, &req), DP_MB_EX_ILLEGAL_VALUE);
    cr_assert_eq(parse((const uint8_t[]){3, 0xff, 0xff, 0, 2}, 5, &req), DP_MB_EX_ILLEGAL_ADDRESS);
    cr_assert_eq(parse((const uint8_t[]){3, 0, 0, 0}, 4, &req), DP_MB_EX_ILLEGAL_VALUE);
    cr_assert_eq(parse((const uint8_t[]){3, 0, 0, 0, 1, 0}, 6, &req), DP_MB_EX_ILLEGAL_VALUE);
    cr_assert_eq(parse((const uint8_t[]){43, 14, 1, 0}, 4, &req), DP_MB_EX_ILLEGAL_FUNCTION);
    cr_assert_eq(parse((const uint8_t[]){0x83}, 1, &req), DP_MB_EX_ILLEGAL_FUNCTION);
}

Test(modbus_codec, parse_writes)
{
    static dp_mb_request_t req;
    cr_assert_eq(parse((const uint8_t[]){5, 0, 7, 0xff, 0}, 5, &req), 0);
    cr_assert(req.write);
    cr_assert_eq(req.area, DP_MB_COIL);
    cr_assert_eq(req.address, 7);
    cr_assert_eq(req.values[0], 1);
    cr_assert_eq(parse((const uint8_t[]){5, 0, 7, 0, 0}, 5, &req), 0);
    cr_assert_eq(req.values[0], 0);
    cr_assert_eq(parse((const uint8_t[]){5, 0, 7, 0x12, 0x34}, 5, &req), DP_MB_EX_ILLEGAL_VALUE);
    cr_assert_eq(parse((const uint8_t[]){6, 0, 9, 0xab, 0xcd}, 5, &req), 0);
    cr_assert_eq(req.area, DP_MB_HOLDING);
    cr_assert_eq(req.values[0], 0xabcd);

    cr_assert_eq(parse((const uint8_t[]){16, 0, 2, 0, 2, 4, 0, 1, 0xff, 0xfe}, 10, &req), 0);
    cr_assert_eq(req.count, 2);
    cr_assert_eq(req.values[0], 1);
    cr_assert_eq(req.values[1], 0xfffe);
    cr_assert_eq(parse((const uint8_t[]){16, 0, 2, 0, 2, 3, 0, 1, 0xff}, 9, &req),
                 DP_MB_EX_ILLEGAL_VALUE, "byte count does not match the quantity");
    cr_assert_eq(parse((const uint8_t[]){16, 0, 2, 0, 2, 4, 0, 1, 0xff}, 9, &req),
                 DP_MB_EX_ILLEGAL_VALUE, "fewer bytes than the byte count");
    cr_assert_eq(parse((const uint8_t[]){16, 0xff, 0xff, 0, 2, 4, 0, 1, 0, 2}, 10, &req),
                 DP_MB_EX_ILLEGAL_ADDRESS);
    cr_assert_eq(parse((const uint8_t[]){16, 0, 0, 0, 0, 0}, 6, &req), DP_MB_EX_ILLEGAL_VALUE);

    cr_assert_eq(parse((const uint8_t[]){15, 0, 3, 0, 10, 2, 0xcd, 0x01}, 8, &req), 0);
    cr_assert_eq(req.area, DP_MB_COIL);
    cr_assert_eq(req.count, 10);
    uint16_t want[10] = {1, 0, 1, 1, 0, 0, 1, 1, 1, 0};
    cr_assert_arr_eq(req.values, want, sizeof want);
    cr_assert_eq(parse((const uint8_t[]){15, 0, 3, 0, 10, 1, 0xcd}, 7, &req),
                 DP_MB_EX_ILLEGAL_VALUE);

    cr_assert_eq(parse((const uint8_t[]){22, 0, 4, 0xf2, 0xf2, 0x00, 0x25}, 7, &req), 0);
    cr_assert_eq(req.and_mask, 0xf2f2);
    cr_assert_eq(req.or_mask, 0x0025);
    cr_assert_eq(parse((const uint8_t[]){22, 0, 4, 0xf2, 0xf2, 0x00}, 6, &req),
                 DP_MB_EX_ILLEGAL_VALUE);
}

Test(modbus_codec, parse_refuses_unframed)
{
    static dp_mb_request_t req;
    uint8_t f[16];
    size_t n = mk(f, 1, 1, (const uint8_t[]){3, 0, 0, 0, 1}, 5);
    cr_assert_eq(dp_mb_parse_request(f, n - 1, &req), DP_EINVAL, "truncated");
    cr_assert_eq(dp_mb_parse_request(f, 7, &req), DP_EINVAL, "no function code");
    f[3] = 5;
    cr_assert_eq(dp_mb_parse_request(f, n, &req), DP_EINVAL, "protocol id");
}

Test(modbus_codec, responses)
{
    static dp_mb_request_t req;
    uint8_t f[300], out[DP_MB_MAX_ADU];
    size_t n = mk(f, 0x0102, 3, (const uint8_t[]){3, 0, 0, 0, 2}, 5);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), 0);
    uint16_t regs[2] = {0x1234, 0xabcd};
    size_t k = dp_mb_response_read(&req, regs, out);
    uint8_t want[] = {0x01, 0x02, 0, 0, 0, 7, 3, 3, 4, 0x12, 0x34, 0xab, 0xcd};
    cr_assert_eq(k, sizeof want);
    cr_assert_arr_eq(out, want, sizeof want);

    n = mk(f, 7, 1, (const uint8_t[]){1, 0, 0, 0, 10}, 5);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), 0);
    uint16_t bits[10] = {1, 0, 1, 1, 0, 0, 1, 1, 1, 0};
    k = dp_mb_response_read(&req, bits, out);
    uint8_t wantb[] = {0, 7, 0, 0, 0, 5, 1, 1, 2, 0xcd, 0x01};
    cr_assert_eq(k, sizeof wantb);
    cr_assert_arr_eq(out, wantb, sizeof wantb);

    n = mk(f, 9, 1, (const uint8_t[]){16, 0, 2, 0, 2, 4, 0, 1, 0xff, 0xfe}, 10);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), 0);
    k = dp_mb_response_write(&req, f, out);
    uint8_t wantw[] = {0, 9, 0, 0, 0, 6, 1, 16, 0, 2, 0, 2};
    cr_assert_eq(k, sizeof wantw);
    cr_assert_arr_eq(out, wantw, sizeof wantw);

    n = mk(f, 9, 1, (const uint8_t[]){6, 0, 2, 0x12, 0x34}, 5);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), 0);
    k = dp_mb_response_write(&req, f, out);
    cr_assert_eq(k, n, "FC06 echoes the request");
    cr_assert_arr_eq(out, f, n);

    n = mk(f, 9, 1, (const uint8_t[]){22, 0, 4, 0xf2, 0xf2, 0x00, 0x25}, 7);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), 0);
    k = dp_mb_response_write(&req, f, out);
    cr_assert_eq(k, n, "FC22 echoes the request");
    cr_assert_arr_eq(out, f, n);

    n = mk(f, 0x0a0b, 5, (const uint8_t[]){43, 14, 1, 0}, 4);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), DP_MB_EX_ILLEGAL_FUNCTION);
    k = dp_mb_response_exception(&req, DP_MB_EX_ILLEGAL_FUNCTION, out);
    uint8_t wante[] = {0x0a, 0x0b, 0, 0, 0, 3, 5, 43 | 0x80, 1};
    cr_assert_eq(k, sizeof wante);
    cr_assert_arr_eq(out, wante, sizeof wante);

    /* The largest responses fit in one ADU. */
    n = mk(f, 1, 1, (const uint8_t[]){4, 0, 0, 0, 125}, 5);
    cr_assert_eq(dp_mb_parse_request(f, n, &req), 0);
    uint16_t big[125] = {0};
    k = dp_mb_response_read(&req, big, out);
    cr_assert_leq(k, DP_MB_MAX_ADU);
    cr_assert_eq(dp_mb_frame_len(out, k), (int)k);

    cr_assert_str_eq(dp_mb_exception_name(2), "illegal data address");
    cr_assert_str_eq(dp_mb_exception_name(77), "exception");
}

/* ---- robustness: random and mutated frames ------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Feeds a request through the server's path: frame, parse, respond; every
 * response must be a well-formed frame of at most one ADU. */
static void serve(const uint8_t *f, size_t len)
{
    static dp_mb_request_t req;
    static uint16_t data[DP_MB_MAX_READ_BITS];
    uint8_t out[DP_MB_MAX_ADU + 64];
    memset(out + DP_MB_MAX_ADU, 0xa5, 64);
    int rc = dp_mb_parse_request(f, len, &req);
    size_t k = 0;
    if (rc == 0 && !req.write) {
        cr_assert(req.count >= 1 && req.address + req.count <= 65536);
        k = dp_mb_response_read(&req, data, out);
    } else if (rc == 0) {
        cr_assert(req.count >= 1 && req.count <= DP_MB_MAX_WRITE_BITS);
        k = dp_mb_response_write(&req, f, out);
    } else if (rc > 0) {
        k = dp_mb_response_exception(&req, rc, out);
    } else {
        cr_assert_eq(rc, DP_EINVAL);
    }
    if (k > 0) {
        cr_assert_leq(k, DP_MB_MAX_ADU);
        cr_assert_eq(dp_mb_frame_len(out, k), (int)k);
    }
    for (int i = 0; i < 64; i++)
        cr_assert_eq(out[DP_MB_MAX_ADU + i], 0xa5, "response overran the ADU");
}

Test(modbus_codec, random_frames_never_break_the_parser)
{
    uint64_t s = 42;
    uint8_t buf[DP_MB_MAX_ADU + 16];
    for (int iter = 0; iter < 200000; iter++) {
        size_t len = (size_t)(rng_next(&s) % sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next(&s);
        /* Half the time, a plausible header so the PDU decoders are reached. */
        if (len >= 8 && (iter & 1)) {
            buf[2] = buf[3] = 0;
            buf[4] = (uint8_t)((len - 6) >> 8);
            buf[5] = (uint8_t)(len - 6);
            static const uint8_t fcs[] = {1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 43, 0, 0x83};
            buf[7] = fcs[rng_next(&s) % sizeof fcs];
        }
        int fl = dp_mb_frame_len(buf, len);
        cr_assert(fl == DP_EINVAL || (fl >= 0 && (size_t)fl <= len));
        if (fl > 0)
            serve(buf, (size_t)fl);
        /* The parser must also cope with frames it is handed unframed. */
        serve(buf, len);
    }
}

Test(modbus_codec, mutated_valid_frames)
{
    static const uint8_t pdus[][12] = {
        {3, 0, 0, 0, 10},
        {1, 0, 5, 0, 20},
        {5, 0, 1, 0xff, 0},
        {6, 0, 1, 0, 5},
        {16, 0, 1, 0, 2, 4, 0, 1, 0, 2},
        {15, 0, 1, 0, 9, 2, 0xff, 1},
        {22, 0, 1, 0, 0, 0, 0},
    };
    static const size_t lens[] = {5, 5, 5, 5, 10, 8, 7};
    uint64_t s = 7;
    for (int iter = 0; iter < 100000; iter++) {
        size_t w = (size_t)(rng_next(&s) % DP_ARRAY_LEN(lens));
        uint8_t f[32];
        size_t n = mk(f, (uint16_t)iter, 1, pdus[w], lens[w]);
        int flips = 1 + (int)(rng_next(&s) % 3);
        for (int i = 0; i < flips; i++)
            f[7 + rng_next(&s) % (n - 7)] ^= (uint8_t)(1u << (rng_next(&s) % 8));
        if (dp_mb_frame_len(f, n) == (int)n)
            serve(f, n);
    }
}

/* ---- settings ---------------------------------------------------------- */

Test(modbus_codec, point_settings_parse)
{
    lua_State *L = luaL_newstate();
    cr_assert_eq(luaL_dostring(L, "return { area = 'input', address = 10, type = 'f32', order = "
                                  "'CDAB', scale = 0.5, every = '250ms', unit_id = 3 }"),
                 LUA_OK);
    dp_mb_point_t p = {0};
    char *err = NULL;
    cr_assert_eq(dp_settings_parse(L, -1, dp_mb_point_settings, &p, NULL, "twin P, tag t", &err), 0,
                 "%s", err);
    cr_assert_eq(p.area, DP_MB_INPUT);
    cr_assert_eq(p.type, DP_MB_F32);
    cr_assert_eq(p.order, DP_MB_CDAB);
    cr_assert_eq(p.address, 10);
    cr_assert_float_eq(p.scale, 0.5, 0);
    cr_assert_eq(p.every, 250 * DP_US_PER_MS);
    cr_assert_eq(p.unit_id, 3);
    cr_assert_eq(dp_mb_check_point(&p, &err), 0, "%s", err);
    dp_settings_free(dp_mb_point_settings, &p);
    lua_pop(L, 1);

    cr_assert_eq(luaL_dostring(L, "return { address = 1, type = 'float' }"), LUA_OK);
    dp_mb_point_t q = {0};
    cr_assert_lt(dp_settings_parse(L, -1, dp_mb_point_settings, &q, NULL, "twin P, tag t", &err),
                 0);
    cr_assert_not_null(strstr(err, "twin P, tag t: type:"), "%s", err);
    free(err);
    dp_settings_free(dp_mb_point_settings, &q);
    lua_close(L);
}
