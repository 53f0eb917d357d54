#include "payload.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/clock.h"
#include "../../runtime/common.h"
#include "../../runtime/fmtnum.h"
#include "../../runtime/lmsgpack.h"

/* Quality names as in the store, kept here so that the codec stands alone. */
static const char *const quality_names[] = {"good", "uncertain", "bad"};

static const char *quality_name(int q)
{
    return q >= 0 && q <= 2 ? quality_names[q] : "bad";
}

static int quality_parse(const char *s)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, quality_names[i]) == 0)
            return i;
    }
    return DP_EINVAL;
}

/* ---- Buffers ------------------------------------------------------------ */

static int buf_write(void *data, const char *p, size_t n)
{
    dp_jb_raw(data, p, n);
    return 0;
}

/* ---- Items ------------------------------------------------------------- */

/* lmsgpack's packer, with whole numbers as integers (shorter north
 * payloads). */
static void mp_value(msgpack_packer *pk, const dp_value_t *v)
{
    if (v->type == DP_NUM && v->u.n == floor(v->u.n) && fabs(v->u.n) < 9e15)
        msgpack_pack_int64(pk, (int64_t)v->u.n);
    else if (v->type == DP_STR && v->u.s == NULL)
        dp_mp_pack_str(pk, "");
    else
        dp_mp_pack_value(pk, v);
}

static void encode_item_msgpack(dp_jbuf_t *b, const dp_jrec_t *r, const char *tag)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, buf_write);
    switch (r->type) {
    case DP_JREC_SAMPLE:
        msgpack_pack_map(&pk, 4);
        dp_mp_pack_str(&pk, "seq"), msgpack_pack_uint64(&pk, r->seq);
        dp_mp_pack_str(&pk, "ts"), msgpack_pack_int64(&pk, r->ts);
        dp_mp_pack_str(&pk, "v"), mp_value(&pk, &r->value);
        dp_mp_pack_str(&pk, "q"), dp_mp_pack_str(&pk, quality_name(r->quality));
        break;
    case DP_JREC_EVENT:
        msgpack_pack_map(&pk, 5);
        dp_mp_pack_str(&pk, "seq"), msgpack_pack_uint64(&pk, r->seq);
        dp_mp_pack_str(&pk, "ts"), msgpack_pack_int64(&pk, r->ts);
        dp_mp_pack_str(&pk, "kind"), dp_mp_pack_str(&pk, r->kind ? r->kind : "");
        dp_mp_pack_str(&pk, "text"), dp_mp_pack_str(&pk, r->text ? r->text : "");
        dp_mp_pack_str(&pk, "data");
        if (r->payload != NULL && r->payload_len > 0)
            dp_jb_raw(b, r->payload, r->payload_len);
        else
            msgpack_pack_nil(&pk);
        break;
    case DP_JREC_COMMAND:
        msgpack_pack_map(&pk, 7);
        dp_mp_pack_str(&pk, "seq"), msgpack_pack_uint64(&pk, r->seq);
        dp_mp_pack_str(&pk, "ts"), msgpack_pack_int64(&pk, r->ts);
        dp_mp_pack_str(&pk, "tag"), dp_mp_pack_str(&pk, tag ? tag : "");
        dp_mp_pack_str(&pk, "value"), mp_value(&pk, &r->value);
        dp_mp_pack_str(&pk, "outcome"), dp_mp_pack_str(&pk, r->kind ? r->kind : "");
        dp_mp_pack_str(&pk, "detail"), dp_mp_pack_str(&pk, r->text ? r->text : "");
        dp_mp_pack_str(&pk, "by");
        dp_mp_pack_str(&pk, r->twin); /* nil when none */
        break;
    }
}

static void encode_item_json(dp_jbuf_t *b, const dp_jrec_t *r, const char *tag)
{
    dp_jb_printf(b, "{\"seq\":%llu,\"ts\":%lld", (unsigned long long)r->seq, (long long)r->ts);
    switch (r->type) {
    case DP_JREC_SAMPLE:
        dp_jb_puts(b, ",\"v\":");
        dp_jb_value(b, &r->value);
        dp_jb_puts(b, ",\"q\":");
        dp_jb_str(b, quality_name(r->quality));
        break;
    case DP_JREC_EVENT:
        dp_jb_puts(b, ",\"kind\":");
        dp_jb_str(b, r->kind ? r->kind : "");
        dp_jb_puts(b, ",\"text\":");
        dp_jb_str(b, r->text ? r->text : "");
        dp_jb_puts(b, ",\"data\":");
        if (r->payload != NULL && r->payload_len > 0) {
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            if (msgpack_unpack_next(&u, r->payload, r->payload_len, NULL) == MSGPACK_UNPACK_SUCCESS)
                dp_jb_msgpack(b, &u.data, false);
            else
                dp_jb_puts(b, "null");
            msgpack_unpacked_destroy(&u);
        } else {
            dp_jb_puts(b, "null");
        }
        break;
    case DP_JREC_COMMAND:
        dp_jb_puts(b, ",\"tag\":");
        dp_jb_str(b, tag ? tag : "");
        dp_jb_puts(b, ",\"value\":");
        dp_jb_value(b, &r->value);
        dp_jb_puts(b, ",\"outcome\":");
        dp_jb_str(b, r->kind ? r->kind : "");
        dp_jb_puts(b, ",\"detail\":");
        dp_jb_str(b, r->text ? r->text : "");
        dp_jb_puts(b, ",\"by\":");
        dp_jb_str(b, r->twin); /* NULL: null */
        break;
    }
    dp_jb_puts(b, "}");
}

void dp_mqtt_encode_item(dp_jbuf_t *b, dp_mqtt_format_t f, const dp_jrec_t *rec, const char *tag)
{
    if (f == DP_MQTT_MSGPACK) {
        encode_item_msgpack(b, rec, tag);
    } else {
        /* JSON items in a batch are separated by commas. */
        encode_item_json(b, rec, tag);
        dp_jb_puts(b, ",");
    }
}

void dp_mqtt_encode_message(dp_jbuf_t *b, dp_mqtt_format_t f, bool batched, uint64_t last_seq,
                            const dp_jbuf_t *items, size_t n)
{
    size_t body = items->len;
    if (f != DP_MQTT_MSGPACK && body > 0)
        body--; /* the trailing comma */
    if (!batched) {
        dp_jb_raw(b, items->p, body);
        return;
    }
    if (f == DP_MQTT_MSGPACK) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, b, buf_write);
        msgpack_pack_map(&pk, 2);
        dp_mp_pack_str(&pk, "seq"), msgpack_pack_uint64(&pk, last_seq);
        dp_mp_pack_str(&pk, "items"), msgpack_pack_array(&pk, n);
        dp_jb_raw(b, items->p, body);
    } else {
        dp_jb_printf(b, "{\"seq\":%llu,\"items\":[", (unsigned long long)last_seq);
        dp_jb_raw(b, items->p, body);
        dp_jb_puts(b, "]}");
    }
}

/* ---- Decoding ---------------------------------------------------------- */

/* One msgpack object filling the payload, parsed by the project's bounded
 * parser (msgpack-c's unpacker allocates what a container declares before
 * reading it, so a few hostile bytes could ask for gigabytes). The zone
 * belongs to `u` and goes with msgpack_unpacked_destroy(). */
static bool mp_unpack(msgpack_unpacked *u, const char *p, size_t len)
{
    u->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    return u->zone != NULL && dp_mp_parse(p, len, u->zone, &u->data, NULL) == DP_OK;
}

/* One step of a field path: a key or an index. Returns the rest of the path
 * after the step, NULL at the end; *bad on a malformed path. */
typedef struct {
    char key[128];
    long index; /* >= 0 for [n] */
} step_t;

static const char *next_step(const char *p, step_t *st, bool *bad)
{
    st->key[0] = '\0';
    st->index = -1;
    if (*p == '[') {
        char *end;
        errno = 0;
        long i = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end != ']' || i < 0 || errno != 0) {
            *bad = true;
            return NULL;
        }
        st->index = i;
        p = end + 1;
    } else {
        size_t n = strcspn(p, ".[");
        if (n == 0 || n >= sizeof st->key) {
            *bad = true;
            return NULL;
        }
        memcpy(st->key, p, n);
        st->key[n] = '\0';
        p += n;
    }
    if (*p == '.')
        p++;
    return *p ? p : NULL;
}

static const cJSON *json_path(const cJSON *j, const char *path, char **err)
{
    step_t st;
    bool bad = false;
    const char *p = path;
    while (p != NULL && j != NULL) {
        p = next_step(p, &st, &bad);
        if (bad) {
            dp_fail(err, DP_EINVAL, "bad field path \"%s\"", path);
            return NULL;
        }
        if (st.index >= 0)
            j = cJSON_IsArray(j) ? cJSON_GetArrayItem(j, (int)st.index) : NULL;
        else
            j = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, st.key) : NULL;
    }
    if (j == NULL)
        dp_fail(err, DP_EINVAL, "no field \"%s\"", path);
    return j;
}

static const msgpack_object *mp_path(const msgpack_object *o, const char *path, char **err)
{
    step_t st;
    bool bad = false;
    const char *p = path;
    while (p != NULL && o != NULL) {
        p = next_step(p, &st, &bad);
        if (bad) {
            dp_fail(err, DP_EINVAL, "bad field path \"%s\"", path);
            return NULL;
        }
        if (st.index >= 0)
            o = o->type == MSGPACK_OBJECT_ARRAY && (uint32_t)st.index < o->via.array.size
                    ? &o->via.array.ptr[st.index]
                    : NULL;
        else
            o = dp_mp_map_get(o, st.key);
    }
    if (o == NULL)
        dp_fail(err, DP_EINVAL, "no field \"%s\"", path);
    return o;
}

/* Sets *v from a JSON scalar; strings are borrowed from the tree. */
static int json_scalar(const cJSON *j, const char *what, dp_value_t *v, char **err)
{
    if (cJSON_IsNumber(j))
        *v = dp_num(j->valuedouble);
    else if (cJSON_IsBool(j))
        *v = dp_bool(cJSON_IsTrue(j));
    else if (cJSON_IsString(j))
        *v = dp_str(j->valuestring);
    else if (cJSON_IsNull(j))
        *v = (dp_value_t){.type = DP_NIL};
    else
        return dp_fail(err, DP_EINVAL, "%s is %s, not a number, boolean or string", what,
                       cJSON_IsArray(j) ? "an array" : "an object");
    return 0;
}

/* Sets *v from a msgpack scalar; strings are copied into *owned. */
static int mp_scalar(const msgpack_object *o, const char *what, dp_value_t *v, char **owned,
                     char **err)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = dp_num((double)o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = dp_num((double)o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = dp_num(o->via.f64);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        *v = dp_bool(o->via.boolean);
        return 0;
    case MSGPACK_OBJECT_STR:
        free(*owned);
        *owned = strndup(o->via.str.ptr, o->via.str.size);
        *v = dp_str(*owned);
        return 0;
    case MSGPACK_OBJECT_NIL:
        *v = (dp_value_t){.type = DP_NIL};
        return 0;
    default:
        return dp_fail(err, DP_EINVAL, "%s is not a number, boolean or string", what);
    }
}

static int ts_from_number(double n, dp_mqtt_ts_unit_t unit, dp_time_t *ts, char **err)
{
    double us = unit == DP_MQTT_TS_S ? n * 1e6 : unit == DP_MQTT_TS_MS ? n * 1e3 : n;
    if (!isfinite(us) || us < 0 || us > 9e18)
        return dp_fail(err, DP_EINVAL, "timestamp %g is out of range", n);
    *ts = (dp_time_t)llround(us);
    return 0;
}

static int ts_from_value(const dp_value_t *v, const char *field, dp_mqtt_ts_unit_t unit,
                         dp_time_t *ts, char **err)
{
    if (v->type == DP_NUM)
        return ts_from_number(v->u.n, unit, ts, err);
    if (v->type == DP_STR) {
        char *inner = NULL;
        if (dp_time_parse(v->u.s, ts, &inner) < 0) {
            int rc = dp_fail(err, DP_EINVAL, "timestamp field \"%s\": %s", field, inner);
            free(inner);
            return rc;
        }
        return 0;
    }
    return dp_fail(err, DP_EINVAL, "timestamp field \"%s\" is not a number or a time string",
                   field);
}

/* A doppel item: { seq, ts, v, q }. */
static int doppel_item_json(const cJSON *it, dp_mqtt_sample_t *s, char **err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "v");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(it, "ts");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(it, "q");
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "seq");
    if (!cJSON_IsObject(it) || v == NULL || !cJSON_IsNumber(ts) || !cJSON_IsString(q) ||
        !cJSON_IsNumber(seq))
        return dp_fail(err, DP_EINVAL, "not a doppel sample (needs seq, ts, v, q)");
    if (!(ts->valuedouble >= 0 && ts->valuedouble < 9e18) ||
        !(seq->valuedouble >= 1 && seq->valuedouble < 1.8e19))
        return dp_fail(err, DP_EINVAL, "seq or ts out of range");
    int rc = json_scalar(v, "v", &s->v, err);
    if (rc < 0)
        return rc;
    s->ts = (dp_time_t)ts->valuedouble;
    s->seq = (uint64_t)seq->valuedouble;
    s->quality = quality_parse(q->valuestring);
    if (s->quality < 0)
        return dp_fail(err, DP_EINVAL, "bad quality \"%s\"", q->valuestring);
    return 0;
}

static int doppel_item_mp(const msgpack_object *it, dp_mqtt_sample_t *s, char **owned, char **err)
{
    const msgpack_object *v = dp_mp_map_get(it, "v"), *ts = dp_mp_map_get(it, "ts"),
                         *q = dp_mp_map_get(it, "q"), *seq = dp_mp_map_get(it, "seq");
    if (v == NULL || ts == NULL || q == NULL || seq == NULL ||
        (ts->type != MSGPACK_OBJECT_POSITIVE_INTEGER) || q->type != MSGPACK_OBJECT_STR ||
        seq->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return dp_fail(err, DP_EINVAL, "not a doppel sample (needs seq, ts, v, q)");
    if (ts->via.u64 > (uint64_t)INT64_MAX || seq->via.u64 == 0)
        return dp_fail(err, DP_EINVAL, "seq or ts out of range");
    int rc = mp_scalar(v, "v", &s->v, owned, err);
    if (rc < 0)
        return rc;
    s->ts = (dp_time_t)ts->via.u64;
    s->seq = seq->via.u64;
    char qs[16];
    snprintf(qs, sizeof qs, "%.*s", (int)q->via.str.size, q->via.str.ptr);
    s->quality = quality_parse(qs);
    if (s->quality < 0)
        return dp_fail(err, DP_EINVAL, "bad quality \"%s\"", qs);
    return 0;
}

static int decode_doppel(const void *payload, size_t len, dp_mqtt_sample_cb cb, void *ud,
                         char **err)
{
    const char *p = payload;
    /* Decode everything first, so that a bad item rejects the whole message. */
    dp_mqtt_sample_t one[1];
    int rc = 0;
    if (len > 0 && p[0] == '{') {
        cJSON *j = cJSON_ParseWithLength(p, len);
        if (j == NULL)
            return dp_fail(err, DP_EINVAL, "not valid JSON");
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
        if (items != NULL) {
            if (!cJSON_IsArray(items))
                rc = dp_fail(err, DP_EINVAL, "\"items\" is not an array");
            const cJSON *it;
            dp_mqtt_sample_t s;
            cJSON_ArrayForEach(it, items)
            {
                if (rc == 0)
                    rc = doppel_item_json(it, &s, err);
            }
            if (rc == 0) {
                cJSON_ArrayForEach(it, items)
                {
                    doppel_item_json(it, &s, NULL);
                    cb(&s, ud);
                }
            }
        } else if ((rc = doppel_item_json(j, one, err)) == 0) {
            cb(one, ud);
        }
        cJSON_Delete(j);
        return rc;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (!mp_unpack(&u, p, len) || u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        return dp_fail(err, DP_EINVAL, "neither a JSON object nor one msgpack map");
    }
    char *owned = NULL;
    const msgpack_object *items = dp_mp_map_get(&u.data, "items");
    if (items != NULL) {
        if (items->type != MSGPACK_OBJECT_ARRAY)
            rc = dp_fail(err, DP_EINVAL, "\"items\" is not an array");
        for (uint32_t i = 0; rc == 0 && i < items->via.array.size; i++)
            rc = doppel_item_mp(&items->via.array.ptr[i], one, &owned, err);
        for (uint32_t i = 0; rc == 0 && i < items->via.array.size; i++) {
            doppel_item_mp(&items->via.array.ptr[i], one, &owned, NULL);
            cb(one, ud);
        }
    } else if ((rc = doppel_item_mp(&u.data, one, &owned, err)) == 0) {
        cb(one, ud);
    }
    free(owned);
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int decode_text(const char *p, size_t len, dp_mqtt_sample_cb cb, void *ud, char **err)
{
    char *s = strndup(p, len);
    if (strlen(s) != len) {
        free(s);
        return dp_fail(err, DP_EINVAL, "text payload contains a NUL byte");
    }
    /* Trim surrounding white space. */
    char *b = s, *e = s + len;
    while (b < e && isspace((unsigned char)*b))
        b++;
    while (e > b && isspace((unsigned char)e[-1]))
        *--e = '\0';
    dp_mqtt_sample_t smp = {.quality = DP_Q_GOOD};
    char *end;
    errno = 0;
    double n = strtod(b, &end);
    if (*b == '\0') {
        free(s);
        return dp_fail(err, DP_EINVAL, "empty payload");
    } else if (end == e && errno == 0) {
        smp.v = dp_num(n);
    } else if (strcmp(b, "true") == 0 || strcmp(b, "false") == 0) {
        smp.v = dp_bool(b[0] == 't');
    } else {
        smp.v = dp_str(b);
    }
    cb(&smp, ud);
    free(s);
    return 0;
}

int dp_mqtt_decode(const dp_mqtt_decode_opts_t *o, const void *payload, size_t len,
                   dp_mqtt_sample_cb cb, void *ud, char **err)
{
    dp_mqtt_sample_t s = {.quality = DP_Q_GOOD};
    int rc = 0;
    if (payload == NULL)
        payload = ""; /* an empty message has no bytes at all */
    switch (o->format) {
    case DP_MQTT_DOPPEL:
        return decode_doppel(payload, len, cb, ud, err);
    case DP_MQTT_TEXT:
        return decode_text(payload, len, cb, ud, err);
    case DP_MQTT_JSON: {
        cJSON *j = cJSON_ParseWithLength(payload, len);
        if (j == NULL)
            return dp_fail(err, DP_EINVAL, "not valid JSON");
        const cJSON *v = o->field ? json_path(j, o->field, err) : j;
        if (v == NULL)
            rc = DP_EINVAL;
        if (rc == 0)
            rc = json_scalar(v, o->field ? o->field : "the payload", &s.v, err);
        if (rc == 0 && s.v.type == DP_NIL)
            rc = dp_fail(err, DP_EINVAL, "%s is null", o->field ? o->field : "the payload");
        if (rc == 0 && o->ts_field != NULL) {
            const cJSON *t = json_path(j, o->ts_field, err);
            dp_value_t tv;
            if (t == NULL)
                rc = DP_EINVAL;
            if (rc == 0 && (rc = json_scalar(t, o->ts_field, &tv, err)) == 0)
                rc = ts_from_value(&tv, o->ts_field, o->ts_unit, &s.ts, err);
        }
        if (rc == 0)
            cb(&s, ud);
        cJSON_Delete(j);
        return rc;
    }
    case DP_MQTT_MSGPACK: {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        char *owned = NULL, *towned = NULL;
        if (!mp_unpack(&u, payload, len)) {
            msgpack_unpacked_destroy(&u);
            return dp_fail(err, DP_EINVAL, "not exactly one msgpack object");
        }
        const msgpack_object *v = o->field ? mp_path(&u.data, o->field, err) : &u.data;
        if (v == NULL)
            rc = DP_EINVAL;
        if (rc == 0)
            rc = mp_scalar(v, o->field ? o->field : "the payload", &s.v, &owned, err);
        if (rc == 0 && s.v.type == DP_NIL)
            rc = dp_fail(err, DP_EINVAL, "%s is nil", o->field ? o->field : "the payload");
        if (rc == 0 && o->ts_field != NULL) {
            const msgpack_object *t = mp_path(&u.data, o->ts_field, err);
            dp_value_t tv;
            if (t == NULL)
                rc = DP_EINVAL;
            if (rc == 0 && (rc = mp_scalar(t, o->ts_field, &tv, &towned, err)) == 0)
                rc = ts_from_value(&tv, o->ts_field, o->ts_unit, &s.ts, err);
        }
        if (rc == 0)
            cb(&s, ud);
        free(owned);
        free(towned);
        msgpack_unpacked_destroy(&u);
        return rc;
    }
    }
    return dp_fail(err, DP_EINVAL, "unknown format");
}

int dp_mqtt_decode_command(const void *payload, size_t len, char **tag, dp_value_t *v, char **id,
                           char **err)
{
    const char *p = payload != NULL ? payload : "";
    *tag = *id = NULL;
    *v = (dp_value_t){.type = DP_NIL};
    int rc = 0;
    if (len > 0 && p[0] == '{') {
        cJSON *j = cJSON_ParseWithLength(p, len);
        if (j == NULL)
            return dp_fail(err, DP_EINVAL, "not valid JSON");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tag");
        const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "value");
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(j, "id");
        if (!cJSON_IsString(t))
            rc = dp_fail(err, DP_EINVAL, "\"tag\" is missing or not a string");
        else if (val == NULL)
            rc = dp_fail(err, DP_EINVAL, "\"value\" is missing");
        else if ((rc = json_scalar(val, "\"value\"", v, err)) == 0 && v->type == DP_NIL)
            rc = dp_fail(err, DP_EINVAL, "\"value\" is null");
        if (rc == 0) {
            *tag = dp_xstrdup(t->valuestring);
            if (v->type == DP_STR)
                v->u.s = dp_xstrdup(v->u.s);
            if (cJSON_IsString(i))
                *id = dp_xstrdup(i->valuestring);
            else if (cJSON_IsNumber(i)) {
                char num[DP_FMTNUM_SIZE];
                dp_fmtnum(i->valuedouble, num);
                *id = dp_xstrdup(num);
            }
        }
        cJSON_Delete(j);
        return rc;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (!mp_unpack(&u, p, len) || u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        return dp_fail(err, DP_EINVAL, "neither a JSON object nor one msgpack map");
    }
    const msgpack_object *t = dp_mp_map_get(&u.data, "tag"), *val = dp_mp_map_get(&u.data, "value"),
                         *i = dp_mp_map_get(&u.data, "id");
    char *owned = NULL;
    if (t == NULL || t->type != MSGPACK_OBJECT_STR)
        rc = dp_fail(err, DP_EINVAL, "\"tag\" is missing or not a string");
    else if (val == NULL)
        rc = dp_fail(err, DP_EINVAL, "\"value\" is missing");
    else if ((rc = mp_scalar(val, "\"value\"", v, &owned, err)) == 0 && v->type == DP_NIL)
        rc = dp_fail(err, DP_EINVAL, "\"value\" is nil");
    if (rc == 0) {
        *tag = strndup(t->via.str.ptr, t->via.str.size);
        if (i != NULL && i->type == MSGPACK_OBJECT_STR)
            *id = strndup(i->via.str.ptr, i->via.str.size);
        else if (i != NULL && i->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            *id = dp_xasprintf("%llu", (unsigned long long)i->via.u64);
        owned = NULL; /* now owned by v */
    } else {
        free(owned);
        *v = (dp_value_t){.type = DP_NIL};
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}
