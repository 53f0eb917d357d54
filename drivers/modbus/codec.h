/* The Modbus codec: everything about Modbus that does no I/O.
 *
 * - Point maps: a tag's area, address, data type, word/byte order, scale and
 *   offset, their validation, and conversion between register images and
 *   store values (both directions).
 * - Request planning: points of one poll group (unit id, area, interval) at
 *   adjacent addresses are coalesced into as few read requests as the
 *   protocol allows.
 * - Modbus TCP frames (MBAP + PDU) as a server sees them: framing, request
 *   decoding with every length and range checked, response encoding.
 *
 * Everything here is pure and thread-safe; drivers/modbus/modbus.c (client),
 * drivers/modbus/server.c (server), the tests and the fuzz target use it. */
#ifndef DP_MODBUS_CODEC_H
#define DP_MODBUS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/settings.h"
#include "../../runtime/store.h"

/* Protocol limits (Modbus application protocol v1.1b3, 6.1 to 6.12). */
#define DP_MB_MAX_READ_REGS  125
#define DP_MB_MAX_READ_BITS  2000
#define DP_MB_MAX_WRITE_REGS 123
#define DP_MB_MAX_WRITE_BITS 1968
#define DP_MB_MAX_ADU        260 /* MBAP (7) + PDU (253) */

typedef enum { DP_MB_COIL, DP_MB_DISCRETE, DP_MB_INPUT, DP_MB_HOLDING } dp_mb_area_t;

typedef enum {
    DP_MB_BOOL,
    DP_MB_BIT,
    DP_MB_U16,
    DP_MB_I16,
    DP_MB_U32,
    DP_MB_I32,
    DP_MB_U64,
    DP_MB_I64,
    DP_MB_F32,
    DP_MB_F64,
    DP_MB_STRING,
    DP_MB_AUTO, /* not given: bool on coils and discrete inputs, u16 on registers */
} dp_mb_type_t;

/* Byte order of a multi-register value, written as the order in which the
 * bytes A (most significant) .. D appear on the wire for a 32-bit value:
 * ABCD big-endian (the Modbus default), CDAB word-swapped, BADC byte-swapped,
 * DCBA little-endian. 64-bit values extend the same rule to four registers;
 * strings use only the byte order within a register (BADC, DCBA: low first). */
typedef enum { DP_MB_ABCD, DP_MB_CDAB, DP_MB_BADC, DP_MB_DCBA } dp_mb_order_t;

extern const char *const dp_mb_area_names[];  /* "coil", "discrete", "input", "holding" */
extern const char *const dp_mb_type_names[];  /* "bool", "bit", "u16", ... "string", "auto" */
extern const char *const dp_mb_order_names[]; /* "ABCD", "CDAB", "BADC", "DCBA" */

/* A tag's place in a Modbus device (the point settings of a modbus tag, and
 * an entry of a modbus_server map). */
typedef struct {
    int area;  /* dp_mb_area_t */
    int type;  /* dp_mb_type_t */
    int order; /* dp_mb_order_t */
    int64_t address;
    int64_t bit;   /* for type "bit": 0 (least significant) .. 15 */
    int64_t count; /* for type "string": registers (2 characters each) */
    double scale;  /* value = raw * scale + offset */
    double offset;
    dp_time_t every; /* poll interval (client only) */
    int64_t unit_id; /* 0: the device's unit id (client only) */
    bool verify;     /* read back after a write (client only) */
    char *tag;       /* modbus_server maps only: the exposed tag */
} dp_mb_point_t;

/* The point settings descriptor (area, address, type, ...), shared by the
 * client's tags and the server's map entries. */
extern const dp_setting_t dp_mb_point_settings[];

/* Number of registers (or bits, for coil and discrete areas) a point spans. */
int dp_mb_width(const dp_mb_point_t *p);
/* True for coil and discrete inputs (one bit per address). */
bool dp_mb_is_bit_area(int area);

/* Resolves type "auto" (bool on bit areas, u16 on registers), then checks
 * the point on its own: type fits the area, bit and count in range, address
 * + width within 0..65535, scale not 0. *err names the field ("address:
 * 65535 + 2 registers for f32 goes past the last address 65535"). */
int dp_mb_check_point(dp_mb_point_t *p, char **err);
/* True when two points of the same unit id and area share an address in a
 * way that cannot be right (anything but distinct bits of one register). */
bool dp_mb_overlap(const dp_mb_point_t *a, const dp_mb_point_t *b);

/* Decodes a point from its registers (`regs` points at the point's first
 * register; for bit areas one 0/1 per element). Strings are written into
 * `sbuf` (at least 2 * count + 1 bytes) and `out->u.s` points into it. */
void dp_mb_decode(const dp_mb_point_t *p, const uint16_t *regs, dp_value_t *out, char *sbuf);
/* What decoding reads of a point, packed in 24 bytes (a worker decoding a
 * response walks one of these per point). */
typedef struct {
    double scale, offset;
    uint8_t type, order, bit, count; /* count: string registers (at most 125) */
} dp_mb_dec_t;
void dp_mb_dec_init(dp_mb_dec_t *d, const dp_mb_point_t *p);
/* dp_mb_decode() from the packed fields. */
void dp_mb_decode_packed(const dp_mb_dec_t *d, const uint16_t *regs, dp_value_t *out, char *sbuf);
/* Encodes a value for writing: fills dp_mb_width(p) registers (0/1 for bit
 * areas and for type "bit"). Refuses values of the wrong type, NaN, and
 * values outside the raw type's range after scale and offset, with *err
 * saying why. */
int dp_mb_encode(const dp_mb_point_t *p, const dp_value_t *v, uint16_t *regs, char **err);

/* ---- request planning ----------------------------------------------- */

typedef struct {
    int unit_id;
    int area;
    dp_time_t every;
    int start;       /* first address */
    int count;       /* registers or bits */
    size_t first, n; /* points[first .. first + n) of the sorted order */
} dp_mb_req_t;

/* Plans the reads for `n` points. `order` (n entries, filled here) lists the
 * point indices sorted by (unit id, area, every, address); each request
 * covers a run of that order. Points of one group are merged while the span
 * stays within the protocol limit (`max_regs`/`max_bits`, clamped to 125 and
 * 2000) and the hole between them is at most `max_gap` addresses. Returns the
 * number of requests written to `reqs` (which holds n entries at least). */
size_t dp_mb_plan(const dp_mb_point_t *const *points, size_t n, int max_gap, int max_regs,
                  int max_bits, size_t *order, dp_mb_req_t *reqs);

/* ---- Modbus TCP frames (server side) ------------------------------------ */

/* Exception codes. */
enum {
    DP_MB_EX_ILLEGAL_FUNCTION = 1,
    DP_MB_EX_ILLEGAL_ADDRESS = 2,
    DP_MB_EX_ILLEGAL_VALUE = 3,
    DP_MB_EX_DEVICE_FAILURE = 4,
};
/* "illegal function", ... or "exception N" for others (static string). */
const char *dp_mb_exception_name(int code);

/* A decoded request. For writes, `values` holds the registers or bits
 * (0/1) to write; for FC22, and_mask/or_mask. */
typedef struct {
    uint16_t tid;
    uint8_t unit_id;
    uint8_t function;
    int area;
    int address;
    int count;
    bool write;
    uint16_t and_mask, or_mask;
    uint16_t values[DP_MB_MAX_WRITE_BITS];
} dp_mb_request_t;

/* Framing: given the first `len` bytes of a stream, returns the length of
 * the first frame when it is complete, 0 when more bytes are needed, or
 * DP_EINVAL when the stream is not Modbus TCP (protocol id not 0, length
 * field out of range): the connection should be closed. */
int dp_mb_frame_len(const uint8_t *buf, size_t len);
/* Decodes one complete frame. Returns 0, a positive exception code (the
 * request is well framed but not acceptable; `req->tid`, `unit_id` and
 * `function` are set so an exception response can be sent), or DP_EINVAL
 * for a frame that cannot be answered. */
int dp_mb_parse_request(const uint8_t *frame, size_t len, dp_mb_request_t *req);
/* Response builders; each returns the frame length written to `out`
 * (DP_MB_MAX_ADU bytes). `data` is registers or bits (0/1) for reads. */
size_t dp_mb_response_read(const dp_mb_request_t *req, const uint16_t *data, uint8_t *out);
size_t dp_mb_response_write(const dp_mb_request_t *req, const uint8_t *frame, uint8_t *out);
size_t dp_mb_response_exception(const dp_mb_request_t *req, int code, uint8_t *out);

#endif
