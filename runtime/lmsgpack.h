/* The one msgpack <-> Lua converter, used for twin state across reloads,
 * snapshots, the journal, REPL frames and MQTT payloads.
 *
 * Mapping: nil <-> nil, boolean <-> bool, integer <-> int (signed or
 * unsigned), float <-> float64, string <-> str (Lua strings are byte strings;
 * bin is decoded to a string too), table <-> array when its keys are exactly
 * 1..n (n >= 1), map otherwise (an empty table is an empty map). */
#ifndef DP_LMSGPACK_H
#define DP_LMSGPACK_H

#include <lua.h>
#include <msgpack.h>

#include "common.h"
#include "store.h"

/* Maximum table nesting accepted in either direction. */
#define DP_LMP_MAX_DEPTH 64

/* Packs the value at `idx`. Values that cannot be stored (functions,
 * userdata, threads, cyclic or too deeply nested tables, NaN keys) give
 * DP_EINVAL and *err names the key path from `root`, e.g.
 * `state.pumps[2].on_fault: cannot store a function`. On error the packer
 * holds a partial object; the caller discards the buffer. Does not raise. */
int dp_lmp_pack(lua_State *L, int idx, msgpack_packer *pk, const char *root, char **err);

/* Pushes the Lua value for `obj`. DP_EINVAL (nothing pushed) for nesting
 * deeper than DP_LMP_MAX_DEPTH, ext types, or map keys that cannot be Lua
 * keys (nil, NaN). Does not raise except on Lua memory errors. */
int dp_lmp_push(lua_State *L, const msgpack_object *obj, char **err);

/* Convenience: pack the value at idx into a malloc'd buffer (*out, *len). */
int dp_lmp_encode(lua_State *L, int idx, const char *root, char **out, size_t *len, char **err);
/* Convenience: decode exactly one object from buf and push it. Trailing
 * bytes or truncated input are DP_EINVAL with a message saying which. */
int dp_lmp_decode(lua_State *L, const char *buf, size_t len, char **err);

/* Parses exactly one object filling buf[0..len) into `out`, allocating in
 * `zone`. Safe on hostile input: a container's declared count must fit in
 * the bytes left before anything is allocated, nesting is bounded by
 * DP_LMP_MAX_DEPTH. DP_EINVAL with *err naming the byte at fault. */
int dp_mp_parse(const char *buf, size_t len, msgpack_zone *zone, msgpack_object *out, char **err);

/* Packs a C string (NULL: nil). */
void dp_mp_pack_str(msgpack_packer *pk, const char *s);
void dp_mp_pack_bool(msgpack_packer *pk, bool b);
/* The value under string key `key` in a map, or NULL (not a map, no key). */
const msgpack_object *dp_mp_map_get(const msgpack_object *map, const char *key);
/* Packs a store value: number as float 64, bool, string, or nil. */
void dp_mp_pack_value(msgpack_packer *pk, const dp_value_t *v);

#endif
