/* libFuzzer target for the JSON writer and the HTTP API's request-body
 * parser (runtime/json.c).
 *
 * Any input must be either refused with a message or accepted; an accepted
 * object, written back with the JSON writer, must parse again to the same
 * fields (same keys, types and values, in order). And the input's bytes up
 * to a NUL (which the parser refuses, as \u0000) as a string, whatever they
 * are, must be written as JSON the parser takes: back unchanged when they
 * were UTF-8.
 *
 * Built by `make build-fuzz` (DP_FUZZ=ON) with runtime/json.c and
 * runtime/common.c; run by `make test-fuzz` from tests/fuzz/corpus/fuzz_json. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_json: %s\n", what);
    abort();
}

/* The input as a string value: always valid JSON, and the same bytes back
 * unless some had to be written as U+FFFD (not UTF-8). */
static void string_round_trip(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (nul != NULL)
        size = (size_t)(nul - data);
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"s\":");
    dp_jb_strn(&b, (const char *)data, size);
    dp_jb_puts(&b, "}");
    dp_jobj_t o;
    char *err = NULL;
    if (dp_json_parse_object(b.p, b.len, &o, &err) < 0)
        fail(err);
    const dp_value_t *v = dp_jobj_get(&o, "s");
    if (v == NULL || v->type != DP_STR)
        fail("the string did not come back");
    bool changed = strlen(v->u.s) != size || memcmp(v->u.s, data, size) != 0;
    if (changed && strstr(v->u.s, "\xef\xbf\xbd") == NULL) /* U+FFFD */
        fail("a string of UTF-8 changed on the round trip");
    dp_jobj_free(&o);
    dp_jb_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    string_round_trip(data, size);
    dp_jobj_t o;
    char *err = NULL;
    if (dp_json_parse_object((const char *)data, size, &o, &err) < 0) {
        if (err == NULL || o.n != 0 || o.f != NULL)
            fail("a refusal without a message, or with fields left");
        free(err);
        return 0;
    }
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{");
    for (int i = 0; i < o.n; i++) {
        dp_jb_key(&b, o.f[i].key, i == 0);
        dp_jb_value(&b, &o.f[i].v);
    }
    dp_jb_puts(&b, "}");
    dp_jobj_t again;
    if (dp_json_parse_object(b.p, b.len, &again, &err) < 0)
        fail(err);
    if (again.n != o.n)
        fail("field count changed on the round trip");
    for (int i = 0; i < o.n; i++) {
        if (strcmp(o.f[i].key, again.f[i].key) != 0)
            fail("key changed on the round trip");
        const dp_value_t *x = &o.f[i].v, *y = &again.f[i].v;
        if (x->type == DP_NUM && x->u.n - x->u.n != 0)
            fail("a number out of range accepted");
        if (!dp_value_same(x, y)) /* numbers: dp_fmtnum's text reads back exactly */
            fail("value changed on the round trip");
    }
    dp_jobj_free(&again);
    dp_jobj_free(&o);
    dp_jb_free(&b);
    return 0;
}
