/* MQTT payloads: encoding of journal records for the north side and decoding
 * of subscribed payloads for the south side. Pure code, no I/O, so that it
 * is unit tested and fuzzed on its own.
 *
 * North items (one journal record each) are maps with these keys:
 *   sample:  seq, ts, v, q
 *   event:   seq, ts, kind, text, data
 *   command: seq, ts, tag, value, outcome, detail, by
 * `seq` is the journal sequence number, `ts` microseconds since the Unix
 * epoch. A batched message is { seq = <last item's seq>, items = [...] }. */
#ifndef DP_MQTT_PAYLOAD_H
#define DP_MQTT_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/journal.h"
#include "../../runtime/json.h"
#include "../../runtime/store.h"

typedef enum {
    DP_MQTT_JSON = 0,
    DP_MQTT_MSGPACK = 1,
    DP_MQTT_TEXT = 2,   /* south only: the payload is the value as text */
    DP_MQTT_DOPPEL = 3, /* south only: another doppel's data topic (JSON or msgpack) */
} dp_mqtt_format_t;

/* Appends the item for `rec` (format JSON or MSGPACK). `tag` is the tag name
 * within its twin (samples and commands). */
void dp_mqtt_encode_item(dp_jbuf_t *b, dp_mqtt_format_t f, const dp_jrec_t *rec, const char *tag);
/* Appends a whole message from `n` items encoded back to back in `items`:
 * the item itself when `batched` is false (n must be 1), else the batch map. */
void dp_mqtt_encode_message(dp_jbuf_t *b, dp_mqtt_format_t f, bool batched, uint64_t last_seq,
                            const dp_jbuf_t *items, size_t n);

/* ---- South ------------------------------------------------------------- */

typedef enum { DP_MQTT_TS_S = 0, DP_MQTT_TS_MS, DP_MQTT_TS_US } dp_mqtt_ts_unit_t;

typedef struct {
    dp_mqtt_format_t format;
    const char *field;    /* path of the value ("a.b[2]"); NULL: the payload itself */
    const char *ts_field; /* path of the timestamp; NULL: arrival time */
    dp_mqtt_ts_unit_t ts_unit;
} dp_mqtt_decode_opts_t;

/* One decoded sample. `v.u.s` is valid during the callback only. A DP_NIL
 * value means "quality only". seq is 0 except for DOPPEL payloads. */
typedef struct {
    dp_value_t v;
    dp_time_t ts; /* 0: not in the payload */
    int quality;
    uint64_t seq;
} dp_mqtt_sample_t;

typedef void (*dp_mqtt_sample_cb)(const dp_mqtt_sample_t *s, void *ud);

/* Decodes `payload`, calling `cb` for each sample (one, or several for a
 * batched DOPPEL message). Returns 0, or DP_EINVAL with *err saying what was
 * wrong (then cb was not called). */
int dp_mqtt_decode(const dp_mqtt_decode_opts_t *o, const void *payload, size_t len,
                   dp_mqtt_sample_cb cb, void *ud, char **err);

/* A command request: { tag = "speed_sp" | "P101.speed_sp", value = x, id = "..." }.
 * JSON or msgpack (detected). Strings are malloc'd into *tag and *id (id may
 * be NULL); a string value too (free with free(v->u.s)). */
int dp_mqtt_decode_command(const void *payload, size_t len, char **tag, dp_value_t *v, char **id,
                           char **err);

#endif
