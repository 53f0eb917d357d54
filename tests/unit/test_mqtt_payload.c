/* Unit tests for the MQTT payload codec (drivers/mqtt/payload.c): north
 * items and batches in JSON and msgpack, south decoding with field paths,
 * timestamps, text and doppel payloads, command requests, and the errors
 * for malformed input. */
#include <criterion/criterion.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/mqtt/payload.h"

typedef struct {
    int n;
    dp_mqtt_sample_t s[8];
    char str[8][64];
} got_t;

static void collect(const dp_mqtt_sample_t *s, void *ud)
{
    got_t *g = ud;
    cr_assert_lt(g->n, 8);
    g->s[g->n] = *s;
    if (s->v.type == DP_STR) {
        snprintf(g->str[g->n], sizeof g->str[0], "%s", s->v.u.s);
        g->s[g->n].v.u.s = g->str[g->n];
    }
    g->n++;
}

static int decode(dp_mqtt_format_t f, const char *field, const char *ts_field, const char *p,
                  size_t len, got_t *g, char **err)
{
    dp_mqtt_decode_opts_t o = {.format = f, .field = field, .ts_field = ts_field};
    memset(g, 0, sizeof *g);
    return dp_mqtt_decode(&o, p, len, collect, g, err);
}

static char *as_string(const dp_jbuf_t *b)
{
    char *s = malloc(b->len + 1);
    memcpy(s, b->p, b->len);
    s[b->len] = '\0';
    return s;
}

Test(mqtt_payload, json_items_and_batches)
{
    dp_jrec_t a = {.type = DP_JREC_SAMPLE, .seq = 7, .ts = 1000, .value = dp_num(1.5)};
    dp_jrec_t b = {.type = DP_JREC_SAMPLE,
                   .seq = 9,
                   .ts = 2000,
                   .value = dp_str("a\"b\n"),
                   .quality = DP_Q_BAD};
    dp_jbuf_t items = {0}, msg = {0};
    dp_mqtt_encode_item(&items, DP_MQTT_JSON, &a, "flow");
    dp_mqtt_encode_message(&msg, DP_MQTT_JSON, false, 7, &items, 1);
    char *s = as_string(&msg);
    cr_assert_str_eq(s, "{\"seq\":7,\"ts\":1000,\"v\":1.5,\"q\":\"good\"}");
    free(s);
    dp_mqtt_encode_item(&items, DP_MQTT_JSON, &b, "flow");
    msg.len = 0;
    dp_mqtt_encode_message(&msg, DP_MQTT_JSON, true, 9, &items, 2);
    s = as_string(&msg);
    cr_assert_str_eq(s, "{\"seq\":9,\"items\":[{\"seq\":7,\"ts\":1000,\"v\":1.5,\"q\":\"good\"},"
                        "{\"seq\":9,\"ts\":2000,\"v\":\"a\\\"b\\n\",\"q\":\"bad\"}]}");
    /* A doppel consumer reads both items back. */
    got_t g;
    cr_assert_eq(decode(DP_MQTT_DOPPEL, NULL, NULL, msg.p, msg.len, &g, NULL), 0);
    cr_assert_eq(g.n, 2);
    cr_assert_eq(g.s[0].seq, 7);
    cr_assert_eq(g.s[0].ts, 1000);
    cr_assert_float_eq(g.s[0].v.u.n, 1.5, 0);
    cr_assert_eq(g.s[1].quality, DP_Q_BAD);
    cr_assert_str_eq(g.s[1].v.u.s, "a\"b\n");
    free(s);
    dp_jb_free(&items);
    dp_jb_free(&msg);
}

Test(mqtt_payload, msgpack_batch_round_trip)
{
    dp_jbuf_t items = {0}, msg = {0};
    for (int i = 1; i <= 3; i++) {
        dp_jrec_t r = {.type = DP_JREC_SAMPLE,
                       .seq = (uint64_t)i,
                       .ts = i * 10,
                       .value = i == 2 ? dp_bool(true) : dp_num(i + 0.25)};
        dp_mqtt_encode_item(&items, DP_MQTT_MSGPACK, &r, "x");
    }
    dp_mqtt_encode_message(&msg, DP_MQTT_MSGPACK, true, 3, &items, 3);
    got_t g;
    char *err = NULL;
    cr_assert_eq(decode(DP_MQTT_DOPPEL, NULL, NULL, msg.p, msg.len, &g, &err), 0, "%s", err);
    cr_assert_eq(g.n, 3);
    cr_assert_eq(g.s[1].v.type, DP_BOOL);
    cr_assert_float_eq(g.s[2].v.u.n, 3.25, 0);
    cr_assert_eq(g.s[2].seq, 3);
    /* Truncated: refused as a whole, nothing delivered. */
    cr_assert_eq(decode(DP_MQTT_DOPPEL, NULL, NULL, msg.p, msg.len - 1, &g, &err), DP_EINVAL);
    cr_assert_eq(g.n, 0);
    free(err);
    err = NULL;
    dp_jb_free(&items);
    dp_jb_free(&msg);
}

Test(mqtt_payload, events_and_commands_json)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 5);
    msgpack_pack_str_body(&pk, "value", 5);
    msgpack_pack_double(&pk, 9.5);
    dp_jrec_t ev = {.type = DP_JREC_EVENT,
                    .seq = 3,
                    .ts = 5,
                    .twin = "P1",
                    .kind = "alarm",
                    .text = "high",
                    .payload = sb.data,
                    .payload_len = sb.size};
    dp_jrec_t cmd = {.type = DP_JREC_COMMAND,
                     .seq = 4,
                     .ts = 6,
                     .tag = "P1.sp",
                     .value = dp_num(50),
                     .kind = "done",
                     .text = "ok"};
    dp_jbuf_t items = {0}, msg = {0};
    dp_mqtt_encode_item(&items, DP_MQTT_JSON, &ev, NULL);
    dp_mqtt_encode_message(&msg, DP_MQTT_JSON, false, 3, &items, 1);
    char *s = as_string(&msg);
    cr_assert_str_eq(s, "{\"seq\":3,\"ts\":5,\"kind\":\"alarm\",\"text\":\"high\",\"data\":{"
                        "\"value\":9.5}}");
    free(s);
    items.len = msg.len = 0;
    dp_mqtt_encode_item(&items, DP_MQTT_JSON, &cmd, "sp");
    dp_mqtt_encode_message(&msg, DP_MQTT_JSON, false, 4, &items, 1);
    s = as_string(&msg);
    cr_assert_str_eq(s, "{\"seq\":4,\"ts\":6,\"tag\":\"sp\",\"value\":50,\"outcome\":\"done\","
                        "\"detail\":\"ok\",\"by\":null}");
    free(s);
    msgpack_sbuffer_destroy(&sb);
    dp_jb_free(&items);
    dp_jb_free(&msg);
}

Test(mqtt_payload, json_paths_and_timestamps)
{
    got_t g;
    char *err = NULL;
    const char *p = "{\"d\":{\"v\":[1,{\"x\":true}]},\"t\":\"2026-01-01T00:00:01Z\",\"ms\":1500}";
    cr_assert_eq(decode(DP_MQTT_JSON, "d.v[1].x", "t", p, strlen(p), &g, &err), 0, "%s", err);
    cr_assert_eq(g.s[0].v.type, DP_BOOL);
    cr_assert_eq(g.s[0].ts, INT64_C(1767225601000000));
    dp_mqtt_decode_opts_t o = {
        .format = DP_MQTT_JSON, .field = "d.v[0]", .ts_field = "ms", .ts_unit = DP_MQTT_TS_MS};
    memset(&g, 0, sizeof g);
    cr_assert_eq(dp_mqtt_decode(&o, p, strlen(p), collect, &g, &err), 0);
    cr_assert_eq(g.s[0].ts, 1500000);
    cr_assert_float_eq(g.s[0].v.u.n, 1, 0);
    /* Errors name what was wrong. */
    cr_assert_eq(decode(DP_MQTT_JSON, "d.w", NULL, p, strlen(p), &g, &err), DP_EINVAL);
    cr_assert_str_eq(err, "no field \"d.w\"");
    free(err);
    err = NULL;
    cr_assert_eq(decode(DP_MQTT_JSON, "d", NULL, p, strlen(p), &g, &err), DP_EINVAL);
    cr_assert_str_eq(err, "d is an object, not a number, boolean or string");
    free(err);
    err = NULL;
    cr_assert_eq(decode(DP_MQTT_JSON, "d.v[", NULL, p, strlen(p), &g, &err), DP_EINVAL);
    cr_assert_str_eq(err, "bad field path \"d.v[\"");
    free(err);
    err = NULL;
    cr_assert_eq(decode(DP_MQTT_JSON, NULL, NULL, "{\"a\":", 5, &g, &err), DP_EINVAL);
    cr_assert_str_eq(err, "not valid JSON");
    free(err);
    err = NULL;
    cr_assert_eq(
        decode(DP_MQTT_JSON, "d.v[0]", "t", "{\"d\":{\"v\":[1]},\"t\":\"noon\"}", 27, &g, &err),
        DP_EINVAL);
    cr_assert(strstr(err, "timestamp field \"t\"") != NULL, "%s", err);
    free(err);
    err = NULL;
    cr_assert_eq(g.n, 0);
}

Test(mqtt_payload, msgpack_and_text)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "a", 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, -3);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "hi", 2);
    got_t g;
    char *err = NULL;
    cr_assert_eq(decode(DP_MQTT_MSGPACK, "a[1]", NULL, sb.data, sb.size, &g, &err), 0);
    cr_assert_str_eq(g.s[0].v.u.s, "hi");
    cr_assert_eq(decode(DP_MQTT_MSGPACK, "a[0]", NULL, sb.data, sb.size, &g, &err), 0);
    cr_assert_float_eq(g.s[0].v.u.n, -3, 0);
    cr_assert_eq(decode(DP_MQTT_MSGPACK, "a[2]", NULL, sb.data, sb.size, &g, &err), DP_EINVAL);
    free(err);
    err = NULL;
    cr_assert_eq(decode(DP_MQTT_MSGPACK, NULL, NULL, sb.data, sb.size - 1, &g, &err), DP_EINVAL);
    cr_assert_str_eq(err, "not exactly one msgpack object");
    free(err);
    err = NULL;
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(decode(DP_MQTT_TEXT, NULL, NULL, " 2.5\n", 5, &g, NULL), 0);
    cr_assert_float_eq(g.s[0].v.u.n, 2.5, 0);
    cr_assert_eq(decode(DP_MQTT_TEXT, NULL, NULL, "false", 5, &g, NULL), 0);
    cr_assert_eq(g.s[0].v.type, DP_BOOL);
    cr_assert_eq(decode(DP_MQTT_TEXT, NULL, NULL, "open", 4, &g, NULL), 0);
    cr_assert_str_eq(g.s[0].v.u.s, "open");
    cr_assert_eq(decode(DP_MQTT_TEXT, NULL, NULL, "  ", 2, &g, &err), DP_EINVAL);
    free(err);
    err = NULL;
    /* An empty MQTT message has no payload pointer at all. */
    for (int f = DP_MQTT_JSON; f <= DP_MQTT_DOPPEL; f++) {
        cr_assert_eq(decode((dp_mqtt_format_t)f, NULL, NULL, NULL, 0, &g, &err), DP_EINVAL);
        free(err);
        err = NULL;
    }
    free(err);
    err = NULL;
}

Test(mqtt_payload, commands)
{
    char *tag, *id, *err = NULL;
    dp_value_t v;
    const char *p = "{\"tag\":\"sp\",\"value\":12.5,\"id\":\"r1\"}";
    cr_assert_eq(dp_mqtt_decode_command(p, strlen(p), &tag, &v, &id, &err), 0);
    cr_assert_str_eq(tag, "sp");
    cr_assert_str_eq(id, "r1");
    cr_assert_float_eq(v.u.n, 12.5, 0);
    free(tag);
    free(id);
    p = "{\"tag\":\"mode\",\"value\":\"auto\"}";
    cr_assert_eq(dp_mqtt_decode_command(p, strlen(p), &tag, &v, &id, &err), 0);
    cr_assert_str_eq(v.u.s, "auto");
    cr_assert_null(id);
    free(v.u.s);
    free(tag);
    p = "{\"tag\":\"sp\"}";
    cr_assert_eq(dp_mqtt_decode_command(p, strlen(p), &tag, &v, &id, &err), DP_EINVAL);
    cr_assert_str_eq(err, "\"value\" is missing");
    free(err);
    err = NULL;
    p = "{\"tag\":1,\"value\":2}";
    cr_assert_eq(dp_mqtt_decode_command(p, strlen(p), &tag, &v, &id, &err), DP_EINVAL);
    free(err);
    err = NULL;
    cr_assert_eq(dp_mqtt_decode_command("x", 1, &tag, &v, &id, &err), DP_EINVAL);
    free(err);
    err = NULL;
}
