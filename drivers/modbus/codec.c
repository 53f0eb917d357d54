#include "codec.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const dp_mb_area_names[] = {"coil", "discrete", "input", "holding", NULL};
const char *const dp_mb_type_names[] = {"bool", "bit", "u16", "i16",    "u32",  "i32", "u64",
                                        "i64",  "f32", "f64", "string", "auto", NULL};
const char *const dp_mb_order_names[] = {"ABCD", "CDAB", "BADC", "DCBA", NULL};

const dp_setting_t dp_mb_point_settings[] = {
    {.name = "area",
     .type = DP_SET_ENUM,
     .offset = offsetof(dp_mb_point_t, area),
     .def = "holding",
     .choices = dp_mb_area_names,
     .doc = "`coil` (FC01 read, FC05/15 write), `discrete` input (FC02), `input` register "
            "(FC04), `holding` register (FC03 read, FC06/16 write)."},
    {.name = "address",
     .type = DP_SET_INT,
     .offset = offsetof(dp_mb_point_t, address),
     .required = true,
     .min = 0,
     .max = 65535,
     .doc = "Protocol address of the first register or bit, from 0 (register 40001 is "
            "holding address 0)."},
    {.name = "type",
     .type = DP_SET_ENUM,
     .offset = offsetof(dp_mb_point_t, type),
     .def = "auto",
     .choices = dp_mb_type_names,
     .doc = "Data type. `bool` is the bit of a coil or discrete input (on registers: not 0); "
            "`bit` is bit `bit` of a register; 32-bit types span 2 registers, 64-bit types 4, "
            "`string` spans `count`. `auto` (the default) is `bool` for coils and discrete "
            "inputs and `u16` for registers."},
    {.name = "bit",
     .type = DP_SET_INT,
     .offset = offsetof(dp_mb_point_t, bit),
     .min = 0,
     .max = 15,
     .doc = "For `type = \"bit\"`: the bit of the register, 0 is the least significant."},
    {.name = "count",
     .type = DP_SET_INT,
     .offset = offsetof(dp_mb_point_t, count),
     .min = 0,
     .max = DP_MB_MAX_READ_REGS,
     .doc = "For `type = \"string\"`: the number of registers (two characters each)."},
    {.name = "order",
     .type = DP_SET_ENUM,
     .offset = offsetof(dp_mb_point_t, order),
     .def = "ABCD",
     .choices = dp_mb_order_names,
     .doc = "Byte order of multi-register values as the bytes of a 32-bit value appear on the "
            "wire: `ABCD` big-endian, `CDAB` word-swapped, `BADC` byte-swapped, `DCBA` "
            "little-endian. For strings only the byte order in a register counts."},
    {.name = "scale",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_mb_point_t, scale),
     .def = "1",
     .doc = "value = raw * scale + offset (writes apply the inverse)."},
    {.name = "offset",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_mb_point_t, offset),
     .def = "0",
     .doc = "See `scale`."},
    {.name = "every",
     .type = DP_SET_DURATION,
     .offset = offsetof(dp_mb_point_t, every),
     .def = "1s",
     .min = 0,
     .max = 1e9,
     .doc = "Poll interval. Tags with the same interval (and unit id and area) form a poll "
            "group whose adjacent addresses are read together. `0` polls back to back, as "
            "fast as the device answers (benchmarks, fast local links; 1ms in virtual "
            "time)."},
    {.name = "unit_id",
     .type = DP_SET_INT,
     .offset = offsetof(dp_mb_point_t, unit_id),
     .min = 0,
     .max = 255,
     .doc = "Unit (slave) id of this tag; 0 means the device's. Several unit ids share one RTU "
            "bus or TCP gateway."},
    {.name = "verify",
     .type = DP_SET_BOOL,
     .offset = offsetof(dp_mb_point_t, verify),
     .doc = "After a write, read the registers back and fail the command if they differ."},
    DP_SETTINGS_END,
};

int dp_mb_width(const dp_mb_point_t *p)
{
    switch (p->type) {
    case DP_MB_U32:
    case DP_MB_I32:
    case DP_MB_F32:
        return 2;
    case DP_MB_U64:
    case DP_MB_I64:
    case DP_MB_F64:
        return 4;
    case DP_MB_STRING:
        return (int)p->count;
    default:
        return 1;
    }
}

bool dp_mb_is_bit_area(int area)
{
    return area == DP_MB_COIL || area == DP_MB_DISCRETE;
}

int dp_mb_check_point(dp_mb_point_t *p, char **err)
{
    if (p->area < DP_MB_COIL || p->area > DP_MB_HOLDING)
        return dp_fail(err, DP_EINVAL, "area: unknown area %d", p->area);
    if (p->type == DP_MB_AUTO)
        p->type = dp_mb_is_bit_area(p->area) ? DP_MB_BOOL : DP_MB_U16;
    if (p->type < DP_MB_BOOL || p->type > DP_MB_STRING)
        return dp_fail(err, DP_EINVAL, "type: unknown type %d", p->type);
    if (p->order < DP_MB_ABCD || p->order > DP_MB_DCBA)
        return dp_fail(err, DP_EINVAL, "order: unknown order %d", p->order);
    const char *type = dp_mb_type_names[p->type];
    const char *area = dp_mb_area_names[p->area];
    if (dp_mb_is_bit_area(p->area) && p->type != DP_MB_BOOL)
        return dp_fail(err, DP_EINVAL,
                       "type: \"%s\" needs registers, but area \"%s\" holds single bits (use "
                       "type \"bool\", or area \"holding\" or \"input\")",
                       type, area);
    if (p->type == DP_MB_STRING && p->count < 1)
        return dp_fail(err, DP_EINVAL, "count: type \"string\" needs count = registers (1..%d)",
                       DP_MB_MAX_READ_REGS);
    if (p->type != DP_MB_STRING && p->count != 0)
        return dp_fail(err, DP_EINVAL, "count: only for type \"string\" (this tag is \"%s\")",
                       type);
    if (p->type != DP_MB_BIT && p->bit != 0)
        return dp_fail(err, DP_EINVAL, "bit: only for type \"bit\" (this tag is \"%s\")", type);
    if (p->bit < 0 || p->bit > 15 || p->count < 0 || p->count > DP_MB_MAX_READ_REGS)
        return dp_fail(err, DP_EINVAL, "%s: out of range",
                       p->bit < 0 || p->bit > 15 ? "bit" : "count");
    int w = dp_mb_width(p);
    if (p->address < 0 || p->address + w - 1 > 65535)
        return dp_fail(err, DP_EINVAL,
                       "address: %lld + %d %s for \"%s\" goes past the last address 65535",
                       (long long)p->address, w, w == 1 ? "register" : "registers", type);
    if (!(p->scale != 0) || !isfinite(p->scale) || !isfinite(p->offset))
        return dp_fail(err, DP_EINVAL, "scale: must be a finite number other than 0");
    if ((p->scale != 1 || p->offset != 0) &&
        (p->type == DP_MB_BOOL || p->type == DP_MB_BIT || p->type == DP_MB_STRING))
        return dp_fail(err, DP_EINVAL, "scale: type \"%s\" is not a number; remove scale/offset",
                       type);
    return 0;
}

bool dp_mb_overlap(const dp_mb_point_t *a, const dp_mb_point_t *b)
{
    if (a->area != b->area || a->unit_id != b->unit_id)
        return false;
    int64_t a0 = a->address, a1 = a->address + dp_mb_width(a) - 1;
    int64_t b0 = b->address, b1 = b->address + dp_mb_width(b) - 1;
    if (a1 < b0 || b1 < a0)
        return false;
    /* Distinct bits of one register are how status words are mapped. */
    return !(a->type == DP_MB_BIT && b->type == DP_MB_BIT && a->bit != b->bit);
}

/* ---- values ------------------------------------------------------------ */

/* Registers to a big-endian 64-bit word, undoing the point's order. */
static uint64_t gather(int order, const uint16_t *regs, int n)
{
    uint64_t x = 0;
    bool swap_words = order == DP_MB_CDAB || order == DP_MB_DCBA;
    bool swap_bytes = order == DP_MB_BADC || order == DP_MB_DCBA;
    for (int i = 0; i < n; i++) {
        uint16_t r = regs[swap_words ? n - 1 - i : i];
        if (swap_bytes)
            r = (uint16_t)((r >> 8) | (r << 8));
        x = (x << 16) | r;
    }
    return x;
}

static void scatter(const dp_mb_point_t *p, uint64_t x, uint16_t *regs, int n)
{
    bool swap_words = p->order == DP_MB_CDAB || p->order == DP_MB_DCBA;
    bool swap_bytes = p->order == DP_MB_BADC || p->order == DP_MB_DCBA;
    for (int i = n - 1; i >= 0; i--) {
        uint16_t r = (uint16_t)(x & 0xffff);
        x >>= 16;
        if (swap_bytes)
            r = (uint16_t)((r >> 8) | (r << 8));
        regs[swap_words ? n - 1 - i : i] = r;
    }
}

static bool low_byte_first_order(int order)
{
    return order == DP_MB_BADC || order == DP_MB_DCBA;
}

static bool low_byte_first(const dp_mb_point_t *p)
{
    return low_byte_first_order(p->order);
}

void dp_mb_dec_init(dp_mb_dec_t *d, const dp_mb_point_t *p)
{
    *d = (dp_mb_dec_t){.scale = p->scale,
                       .offset = p->offset,
                       .type = (uint8_t)p->type,
                       .order = (uint8_t)p->order,
                       .bit = (uint8_t)p->bit,
                       .count = (uint8_t)p->count};
}

void dp_mb_decode(const dp_mb_point_t *p, const uint16_t *regs, dp_value_t *out, char *sbuf)
{
    dp_mb_dec_t d;
    dp_mb_dec_init(&d, p);
    dp_mb_decode_packed(&d, regs, out, sbuf);
}

void dp_mb_decode_packed(const dp_mb_dec_t *p, const uint16_t *regs, dp_value_t *out, char *sbuf)
{
    double raw;
    switch (p->type) {
    case DP_MB_BOOL:
        *out = dp_bool(regs[0] != 0);
        return;
    case DP_MB_BIT:
        *out = dp_bool((regs[0] >> p->bit) & 1u);
        return;
    case DP_MB_STRING: {
        size_t k = 0;
        for (int i = 0; i < p->count; i++) {
            uint8_t hi = (uint8_t)(regs[i] >> 8), lo = (uint8_t)regs[i];
            sbuf[k++] = (char)(low_byte_first_order(p->order) ? lo : hi);
            sbuf[k++] = (char)(low_byte_first_order(p->order) ? hi : lo);
        }
        sbuf[k] = '\0';
        /* A NUL ends the text; padding NULs and spaces are dropped. */
        k = strlen(sbuf);
        while (k > 0 && sbuf[k - 1] == ' ')
            sbuf[--k] = '\0';
        *out = dp_str(sbuf);
        return;
    }
    case DP_MB_U16:
        raw = (double)(uint16_t)gather(p->order, regs, 1);
        break;
    case DP_MB_I16:
        raw = (double)(int16_t)(uint16_t)gather(p->order, regs, 1);
        break;
    case DP_MB_U32:
        raw = (double)(uint32_t)gather(p->order, regs, 2);
        break;
    case DP_MB_I32:
        raw = (double)(int32_t)(uint32_t)gather(p->order, regs, 2);
        break;
    case DP_MB_U64:
        raw = (double)gather(p->order, regs, 4);
        break;
    case DP_MB_I64:
        raw = (double)(int64_t)gather(p->order, regs, 4);
        break;
    case DP_MB_F32: {
        uint32_t u = (uint32_t)gather(p->order, regs, 2);
        float f;
        memcpy(&f, &u, sizeof f);
        raw = f;
        break;
    }
    default: {
        uint64_t u = gather(p->order, regs, 4);
        double d;
        memcpy(&d, &u, sizeof d);
        raw = d;
        break;
    }
    }
    *out = dp_num(raw * p->scale + p->offset);
}

int dp_mb_encode(const dp_mb_point_t *p, const dp_value_t *v, uint16_t *regs, char **err)
{
    const char *type = dp_mb_type_names[p->type];
    if (p->type == DP_MB_BOOL || p->type == DP_MB_BIT) {
        if (v->type == DP_BOOL)
            regs[0] = v->u.b ? 1 : 0;
        else if (v->type == DP_NUM && (v->u.n == 0 || v->u.n == 1))
            regs[0] = (uint16_t)v->u.n;
        else
            return dp_fail(err, DP_EINVAL, "type \"%s\" takes true/false (or 1/0)", type);
        return 0;
    }
    if (p->type == DP_MB_STRING) {
        if (v->type != DP_STR)
            return dp_fail(err, DP_EINVAL, "type \"string\" takes a string");
        size_t len = strlen(v->u.s), cap = 2 * (size_t)p->count;
        if (len > cap)
            return dp_fail(err, DP_EINVAL, "%zu characters do not fit in %lld registers (%zu)", len,
                           (long long)p->count, cap);
        for (int i = 0; i < p->count; i++) {
            uint8_t a = (size_t)(2 * i) < len ? (uint8_t)v->u.s[2 * i] : 0;
            uint8_t b = (size_t)(2 * i + 1) < len ? (uint8_t)v->u.s[2 * i + 1] : 0;
            regs[i] = low_byte_first(p) ? (uint16_t)(b << 8 | a) : (uint16_t)(a << 8 | b);
        }
        return 0;
    }
    double x;
    if (v->type == DP_NUM)
        x = v->u.n;
    else if (v->type == DP_BOOL)
        x = v->u.b ? 1 : 0;
    else
        return dp_fail(err, DP_EINVAL, "type \"%s\" takes a number", type);
    if (!isfinite(x))
        return dp_fail(err, DP_EINVAL, "%g is not a finite number", x);
    double raw = (x - p->offset) / p->scale;
    uint64_t bits;
    int n = dp_mb_width(p);
    if (p->type == DP_MB_F32) {
        /* Converting a double beyond the float range is undefined: check first. */
        if (fabs(raw) > FLT_MAX)
            return dp_fail(err, DP_EINVAL, "%.17g is out of range for f32", raw);
        float f = (float)raw;
        if (!isfinite(f))
            return dp_fail(err, DP_EINVAL, "%.17g is out of range for f32", raw);
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        bits = u;
    } else if (p->type == DP_MB_F64) {
        if (!isfinite(raw))
            return dp_fail(err, DP_EINVAL, "%.17g is out of range for f64", raw);
        memcpy(&bits, &raw, sizeof bits);
    } else {
        static const double lo[] = {
            [DP_MB_U16] = 0, [DP_MB_I16] = -32768, [DP_MB_U32] = 0, [DP_MB_I32] = -2147483648.0,
            [DP_MB_U64] = 0, [DP_MB_I64] = -0x1p63};
        static const double hi[] = {
            [DP_MB_U16] = 65535,        [DP_MB_I16] = 32767,  [DP_MB_U32] = 4294967295.0,
            [DP_MB_I32] = 2147483647.0, [DP_MB_U64] = 0x1p64, [DP_MB_I64] = 0x1p63};
        double r = nearbyint(raw);
        bool top_open = p->type == DP_MB_U64 || p->type == DP_MB_I64;
        if (r < lo[p->type] || (top_open ? r >= hi[p->type] : r > hi[p->type]))
            return dp_fail(err, DP_EINVAL, "%.17g is out of range for %s (raw value %.17g)", x,
                           type, r);
        if (p->type == DP_MB_U64)
            bits = (uint64_t)r;
        else if (p->type == DP_MB_U16 || p->type == DP_MB_U32)
            bits = (uint64_t)(int64_t)r;
        else
            bits = (uint64_t)(int64_t)r & (n == 4 ? UINT64_MAX : (UINT64_C(1) << (16 * n)) - 1);
    }
    scatter(p, bits, regs, n);
    return 0;
}

/* ---- planning ------------------------------------------------------------ */

static _Thread_local const dp_mb_point_t *const *sort_points;

static int cmp_points(const void *x, const void *y)
{
    const dp_mb_point_t *a = sort_points[*(const size_t *)x];
    const dp_mb_point_t *b = sort_points[*(const size_t *)y];
    if (a->unit_id != b->unit_id)
        return a->unit_id < b->unit_id ? -1 : 1;
    if (a->area != b->area)
        return a->area < b->area ? -1 : 1;
    if (a->every != b->every)
        return a->every < b->every ? -1 : 1;
    if (a->address != b->address)
        return a->address < b->address ? -1 : 1;
    /* Stable for equal keys: by index. */
    return *(const size_t *)x < *(const size_t *)y ? -1 : *(const size_t *)x > *(const size_t *)y;
}

size_t dp_mb_plan(const dp_mb_point_t *const *points, size_t n, int max_gap, int max_regs,
                  int max_bits, size_t *order, dp_mb_req_t *reqs)
{
    if (max_regs < 1 || max_regs > DP_MB_MAX_READ_REGS)
        max_regs = DP_MB_MAX_READ_REGS;
    if (max_bits < 1 || max_bits > DP_MB_MAX_READ_BITS)
        max_bits = DP_MB_MAX_READ_BITS;
    if (max_gap < 0)
        max_gap = 0;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sort_points = points;
    qsort(order, n, sizeof *order, cmp_points);
    sort_points = NULL;
    size_t nreq = 0;
    for (size_t i = 0; i < n; i++) {
        const dp_mb_point_t *p = points[order[i]];
        int end = (int)p->address + dp_mb_width(p); /* one past */
        dp_mb_req_t *r = nreq > 0 ? &reqs[nreq - 1] : NULL;
        int limit = dp_mb_is_bit_area(p->area) ? max_bits : max_regs;
        if (r != NULL && r->unit_id == p->unit_id && r->area == p->area && r->every == p->every &&
            (int)p->address - (r->start + r->count) <= max_gap &&
            (end > r->start + r->count ? end : r->start + r->count) - r->start <= limit) {
            if (end > r->start + r->count)
                r->count = end - r->start;
            r->n++;
            continue;
        }
        reqs[nreq++] = (dp_mb_req_t){
            .unit_id = (int)p->unit_id,
            .area = p->area,
            .every = p->every,
            .start = (int)p->address,
            .count = end - (int)p->address,
            .first = i,
            .n = 1,
        };
    }
    return nreq;
}

/* ---- frames ------------------------------------------------------------- */

const char *dp_mb_exception_name(int code)
{
    switch (code) {
    case 1:
        return "illegal function";
    case 2:
        return "illegal data address";
    case 3:
        return "illegal data value";
    case 4:
        return "server device failure";
    case 5:
        return "acknowledge";
    case 6:
        return "server device busy";
    case 10:
        return "gateway path unavailable";
    case 11:
        return "gateway target failed to respond";
    default:
        return "exception";
    }
}

static uint16_t be16(const uint8_t *b)
{
    return (uint16_t)(b[0] << 8 | b[1]);
}

static void put16(uint8_t *b, uint16_t v)
{
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}

int dp_mb_frame_len(const uint8_t *buf, size_t len)
{
    if (len < 7)
        return 0;
    if (be16(buf + 2) != 0)
        return DP_EINVAL;
    int n = be16(buf + 4); /* unit id + PDU */
    if (n < 2 || n > DP_MB_MAX_ADU - 6)
        return DP_EINVAL;
    return len >= (size_t)(6 + n) ? 6 + n : 0;
}

int dp_mb_parse_request(const uint8_t *f, size_t len, dp_mb_request_t *req)
{
    memset(req, 0, offsetof(dp_mb_request_t, values));
    if (len < 8 || dp_mb_frame_len(f, len) != (int)len)
        return DP_EINVAL;
    req->tid = be16(f);
    req->unit_id = f[6];
    req->function = f[7];
    const uint8_t *d = f + 8; /* after the function code */
    size_t n = len - 8;
    switch (req->function) {
    case 1:
    case 2:
    case 3:
    case 4: {
        static const int areas[] = {0, DP_MB_COIL, DP_MB_DISCRETE, DP_MB_HOLDING, DP_MB_INPUT};
        if (n != 4)
            return DP_MB_EX_ILLEGAL_VALUE;
        req->area = areas[req->function];
        req->address = be16(d);
        req->count = be16(d + 2);
        int max = req->function <= 2 ? DP_MB_MAX_READ_BITS : DP_MB_MAX_READ_REGS;
        if (req->count < 1 || req->count > max)
            return DP_MB_EX_ILLEGAL_VALUE;
        if (req->address + req->count > 65536)
            return DP_MB_EX_ILLEGAL_ADDRESS;
        return 0;
    }
    case 5:
    case 6:
        if (n != 4)
            return DP_MB_EX_ILLEGAL_VALUE;
        req->write = true;
        req->area = req->function == 5 ? DP_MB_COIL : DP_MB_HOLDING;
        req->address = be16(d);
        req->count = 1;
        req->values[0] = be16(d + 2);
        if (req->function == 5) {
            if (req->values[0] != 0xff00 && req->values[0] != 0)
                return DP_MB_EX_ILLEGAL_VALUE;
            req->values[0] = req->values[0] ? 1 : 0;
        }
        return 0;
    case 15:
    case 16: {
        if (n < 5)
            return DP_MB_EX_ILLEGAL_VALUE;
        req->write = true;
        req->area = req->function == 15 ? DP_MB_COIL : DP_MB_HOLDING;
        req->address = be16(d);
        req->count = be16(d + 2);
        int bytes = d[4];
        int max = req->function == 15 ? DP_MB_MAX_WRITE_BITS : DP_MB_MAX_WRITE_REGS;
        int want = req->function == 15 ? (req->count + 7) / 8 : 2 * req->count;
        if (req->count < 1 || req->count > max || bytes != want || n != (size_t)(5 + bytes))
            return DP_MB_EX_ILLEGAL_VALUE;
        if (req->address + req->count > 65536)
            return DP_MB_EX_ILLEGAL_ADDRESS;
        for (int i = 0; i < req->count; i++) {
            if (req->function == 15)
                req->values[i] = (d[5 + i / 8] >> (i % 8)) & 1u;
            else
                req->values[i] = be16(d + 5 + 2 * i);
        }
        return 0;
    }
    case 22:
        if (n != 6)
            return DP_MB_EX_ILLEGAL_VALUE;
        req->write = true;
        req->area = DP_MB_HOLDING;
        req->address = be16(d);
        req->count = 1;
        req->and_mask = be16(d + 2);
        req->or_mask = be16(d + 4);
        return 0;
    default:
        return DP_MB_EX_ILLEGAL_FUNCTION;
    }
}

static size_t header(const dp_mb_request_t *req, uint8_t fc, size_t pdu, uint8_t *out)
{
    put16(out, req->tid);
    put16(out + 2, 0);
    put16(out + 4, (uint16_t)(pdu + 1));
    out[6] = req->unit_id;
    out[7] = fc;
    return 8;
}

size_t dp_mb_response_read(const dp_mb_request_t *req, const uint16_t *data, uint8_t *out)
{
    bool bits = dp_mb_is_bit_area(req->area);
    size_t bytes = bits ? (size_t)(req->count + 7) / 8 : 2 * (size_t)req->count;
    size_t k = header(req, req->function, 2 + bytes, out);
    out[k++] = (uint8_t)bytes;
    if (bits) {
        memset(out + k, 0, bytes);
        for (int i = 0; i < req->count; i++) {
            if (data[i])
                out[k + (size_t)i / 8] |= (uint8_t)(1u << (i % 8));
        }
    } else {
        for (int i = 0; i < req->count; i++)
            put16(out + k + 2 * (size_t)i, data[i]);
    }
    return k + bytes;
}

size_t dp_mb_response_write(const dp_mb_request_t *req, const uint8_t *frame, uint8_t *out)
{
    /* FC05/06/22 echo the request; FC15/16 echo address and quantity. */
    size_t pdu = req->function == 22 ? 7 : 5;
    size_t k = header(req, req->function, pdu, out);
    memcpy(out + k, frame + 8, pdu - 1);
    return k + pdu - 1;
}

size_t dp_mb_response_exception(const dp_mb_request_t *req, int code, uint8_t *out)
{
    size_t k = header(req, (uint8_t)(req->function | 0x80), 2, out);
    out[k++] = (uint8_t)code;
    return k;
}
