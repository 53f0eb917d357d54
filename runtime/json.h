/* JSON: a growing output buffer with escaping, the one writer of the HTTP
 * API and the MQTT payloads (it holds binary data as well, for msgpack), and
 * a small parser for request bodies (one object of scalar fields). */
#ifndef DP_JSON_H
#define DP_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

typedef struct {
    char *p;
    size_t len, cap;
} dp_jbuf_t;

void dp_jb_free(dp_jbuf_t *b);
void dp_jb_raw(dp_jbuf_t *b, const char *s, size_t n);
void dp_jb_puts(dp_jbuf_t *b, const char *s);
void dp_jb_printf(dp_jbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string with quotes; NULL writes null. */
void dp_jb_str(dp_jbuf_t *b, const char *s);
/* The n bytes at s as a JSON string: control characters (NUL too) escaped,
 * and bytes that are not well-formed UTF-8 written as U+FFFD, since JSON
 * text must be UTF-8 (a device's string registers may hold anything). */
void dp_jb_strn(dp_jbuf_t *b, const char *s, size_t n);
/* A number; NaN and infinities write null. */
void dp_jb_num(dp_jbuf_t *b, double v);
/* "key": (with a leading comma unless `first`). */
void dp_jb_key(dp_jbuf_t *b, const char *key, bool first);
/* A store value as JSON (null, number, true/false, string). */
void dp_jb_value(dp_jbuf_t *b, const dp_value_t *v);
/* A msgpack object as JSON (event payloads, twin state): strings and
 * binary as strings (through dp_jb_strn), map keys that are not strings as
 * their JSON text, ext values and what is nested deeper than 32 as null.
 * `spaced`: ", " and ": " between items, for people to read. */
struct msgpack_object;
void dp_jb_msgpack(dp_jbuf_t *b, const struct msgpack_object *o, bool spaced);

/* One field of a parsed body. Strings are NUL-terminated copies. */
typedef struct {
    char *key;
    dp_value_t v; /* DP_NIL for null */
} dp_jfield_t;

typedef struct {
    dp_jfield_t *f;
    int n;
} dp_jobj_t;

/* Parses `{"k": scalar, ...}` (nested objects and arrays are refused).
 * Returns 0 or DP_EINVAL with *err naming the offset and what was wrong. */
int dp_json_parse_object(const char *s, size_t len, dp_jobj_t *out, char **err);
void dp_jobj_free(dp_jobj_t *o);
/* The field named `key` or NULL. */
const dp_value_t *dp_jobj_get(const dp_jobj_t *o, const char *key);

#endif
