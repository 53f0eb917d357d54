/* libFuzzer target for the MQTT payload codec (drivers/mqtt/payload.c).
 *
 * The first byte picks the format and the field paths; the rest is the
 * payload. Any input must be decoded or refused with a message, never crash.
 * Every sample accepted from a doppel payload is encoded again as an item,
 * in JSON and in msgpack, and must decode to the same value, timestamp,
 * quality and sequence number (in JSON, a string that is not UTF-8 comes
 * back as the JSON writer wrote it, with U+FFFD: JSON text is UTF-8).
 *
 *   clang -g -fsanitize=fuzzer,address,undefined -Iruntime -I. \
 *       tests/fuzz/fuzz_mqtt_payload.c drivers/mqtt/payload.c runtime/common.c \
 *       runtime/clock.c -lcjson -lmsgpackc -luv -lm -o fuzz_mqtt_payload */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../drivers/mqtt/payload.h"
#include "../../runtime/json.h"

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_mqtt_payload: %s\n", what);
    abort();
}

typedef struct {
    const dp_mqtt_sample_t *want;
    int n;
} check_t;

static void check_again(const dp_mqtt_sample_t *s, void *ud)
{
    check_t *c = ud;
    c->n++;
    if (!dp_value_same(&s->v, &c->want->v) || s->ts != c->want->ts || s->seq != c->want->seq ||
        s->quality != c->want->quality)
        fail("a re-encoded sample decodes differently");
}

/* A string as it comes back from JSON: through the writer and the parser. */
static char *through_json(const char *s)
{
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"s\":");
    dp_jb_str(&b, s);
    dp_jb_puts(&b, "}");
    dp_jobj_t o;
    char *err = NULL;
    if (dp_json_parse_object(b.p, b.len, &o, &err) < 0)
        fail(err);
    char *back = strdup(dp_jobj_get(&o, "s")->u.s);
    dp_jobj_free(&o);
    dp_jb_free(&b);
    return back;
}

static void round_trip(const dp_mqtt_sample_t *s, void *ud)
{
    (void)ud;
    /* JSON has no NaN or infinity, and timestamps are written as integers. */
    if (s->v.type == DP_NUM && !isfinite(s->v.u.n))
        return;
    for (int f = DP_MQTT_JSON; f <= DP_MQTT_MSGPACK; f++) {
        dp_mqtt_sample_t want = *s;
        if (f == DP_MQTT_JSON && s->v.type == DP_STR)
            want.v.u.s = through_json(s->v.u.s);
        dp_jrec_t rec = {.type = DP_JREC_SAMPLE,
                         .seq = s->seq,
                         .ts = s->ts,
                         .value = s->v,
                         .quality = (uint8_t)s->quality};
        dp_jbuf_t items = {0}, msg = {0};
        dp_mqtt_encode_item(&items, (dp_mqtt_format_t)f, &rec, "t");
        dp_mqtt_encode_message(&msg, (dp_mqtt_format_t)f, true, s->seq, &items, 1);
        dp_mqtt_decode_opts_t o = {.format = DP_MQTT_DOPPEL};
        check_t c = {&want, 0};
        char *err = NULL;
        if (dp_mqtt_decode(&o, msg.p, msg.len, check_again, &c, &err) != 0 || c.n != 1) {
            fprintf(stderr, "%s\n", err ? err : "");
            fail("a re-encoded sample is refused");
        }
        dp_jb_free(&items);
        dp_jb_free(&msg);
        if (want.v.u.s != s->v.u.s)
            free(want.v.u.s);
    }
}

static void ignore(const dp_mqtt_sample_t *s, void *ud)
{
    (void)ud;
    if (s->v.type == DP_STR && s->v.u.s == NULL)
        fail("string value without bytes");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const fields[] = {NULL, "a", "a.b", "a[0]", "a.b[1].c", "v"};
    unsigned sel = data[0];
    const char *p = (const char *)data + 1;
    size_t len = size - 1;
    dp_mqtt_decode_opts_t o = {
        .format = (dp_mqtt_format_t)(sel & 3),
        .field = fields[(sel >> 2) % 6],
        .ts_field = (sel & 0x80) ? "t" : NULL,
        .ts_unit = (dp_mqtt_ts_unit_t)((sel >> 5) % 3),
    };
    if (o.format == DP_MQTT_TEXT || o.format == DP_MQTT_DOPPEL)
        o.field = o.ts_field = NULL;
    char *err = NULL;
    int rc =
        dp_mqtt_decode(&o, p, len, o.format == DP_MQTT_DOPPEL ? round_trip : ignore, NULL, &err);
    if (rc != 0 && (err == NULL || err[0] == '\0'))
        fail("refused without a message");
    free(err);
    err = NULL;
    char *tag = NULL, *id = NULL;
    dp_value_t v;
    rc = dp_mqtt_decode_command(p, len, &tag, &v, &id, &err);
    if (rc == 0) {
        if (tag == NULL || v.type == DP_NIL)
            fail("command accepted without tag or value");
        if (v.type == DP_STR)
            free(v.u.s);
    } else if (err == NULL) {
        fail("command refused without a message");
    }
    free(tag);
    free(id);
    free(err);
    return 0;
}
