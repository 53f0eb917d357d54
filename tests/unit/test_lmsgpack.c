/* Unit tests for the Lua <-> msgpack converter (runtime/lmsgpack.c). */
#include <criterion/criterion.h>

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmsgpack.h"

static lua_State *L;

/* Lua helpers used by the tests: deq compares two values deeply and also
 * requires numbers to keep their subtype, so an integer that came back as a
 * float is a failure. nest builds n nested single-element arrays. */
static const char *helpers =
    "function deq(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then\n"
    "    if math.type(a) ~= math.type(b) then return false end\n"
    "    return a == b or (a ~= a and b ~= b)\n"
    "  end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not deq(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "function nest(n)\n"
    "  local t = {}\n"
    "  for _ = 2, n do t = {t} end\n"
    "  return t\n"
    "end\n";

static void setup(void)
{
    L = luaL_newstate();
    cr_assert_not_null(L);
    luaL_openlibs(L);
    cr_assert_eq(luaL_dostring(L, helpers), LUA_OK, "%s", lua_tostring(L, -1));
}

static void teardown(void)
{
    lua_close(L);
    L = NULL;
}

TestSuite(lmsgpack, .init = setup, .fini = teardown);

/* Evaluates a Lua chunk and leaves its single result on the stack. */
static void eval(const char *code)
{
    int rc = luaL_loadstring(L, code);
    if (rc == LUA_OK)
        rc = lua_pcall(L, 0, 1, 0);
    cr_assert_eq(rc, LUA_OK, "Lua error: %s", lua_tostring(L, -1));
}

/* Encodes the value at the top of the stack, decodes it again and checks
 * that the result is deeply equal (subtypes included); pops the value. */
static void check_roundtrip(const char *what)
{
    int top = lua_gettop(L);
    char *buf = NULL;
    size_t len = 0;
    char *err = NULL;
    int rc = dp_lmp_encode(L, -1, "state", &buf, &len, &err);
    cr_assert_eq(rc, DP_OK, "%s: encode failed: %s", what, err ? err : "?");
    cr_assert_eq(lua_gettop(L), top, "%s: encode changed the stack", what);
    rc = dp_lmp_decode(L, buf, len, &err);
    cr_assert_eq(rc, DP_OK, "%s: decode failed: %s", what, err ? err : "?");
    cr_assert_eq(lua_gettop(L), top + 1, "%s: decode must push one value", what);
    lua_getglobal(L, "deq");
    lua_pushvalue(L, top);
    lua_pushvalue(L, top + 1);
    lua_call(L, 2, 1);
    cr_assert(lua_toboolean(L, -1), "%s: value changed in the round trip", what);
    lua_settop(L, top - 1);
    free(buf);
    free(err);
}

static void roundtrip(const char *code)
{
    eval(code);
    check_roundtrip(code);
}

/* Encodes the value at the top of the stack (popping it) and returns the
 * malloc'd bytes. */
static char *encode_top(size_t *len)
{
    char *buf = NULL;
    char *err = NULL;
    int rc = dp_lmp_encode(L, -1, "state", &buf, len, &err);
    cr_assert_eq(rc, DP_OK, "encode failed: %s", err ? err : "?");
    lua_pop(L, 1);
    return buf;
}

static void expect_bytes(const char *code, const char *want, size_t want_len)
{
    eval(code);
    size_t len;
    char *buf = encode_top(&len);
    cr_assert_eq(len, want_len, "%s: encoded %zu bytes, expected %zu", code, len, want_len);
    cr_assert(memcmp(buf, want, len) == 0, "%s: unexpected encoding", code);
    free(buf);
}

/* Encoding the value built by `code` must fail with exactly `msg`. */
static void expect_encode_error(const char *code, const char *msg)
{
    eval(code);
    int top = lua_gettop(L);
    char *buf = (char *)"untouched";
    size_t len = 99;
    char *err = NULL;
    int rc = dp_lmp_encode(L, -1, "state", &buf, &len, &err);
    cr_assert_eq(rc, DP_EINVAL, "%s: expected DP_EINVAL, got %d", code, rc);
    cr_assert_null(buf, "%s: *out must be NULL on error", code);
    cr_assert_eq(len, 0);
    cr_assert_eq(lua_gettop(L), top, "%s: stack not restored", code);
    cr_assert_not_null(err);
    cr_assert_str_eq(err, msg);
    free(err);
    lua_pop(L, 1);
}

/* Decoding `data` must fail with a message containing `part`. */
static void expect_decode_error(const char *data, size_t len, const char *part)
{
    int top = lua_gettop(L);
    char *err = NULL;
    int rc = dp_lmp_decode(L, data, len, &err);
    cr_assert_eq(rc, DP_EINVAL, "expected DP_EINVAL for '%s', got %d", part, rc);
    cr_assert_eq(lua_gettop(L), top, "a failed decode must not push anything");
    cr_assert_not_null(err);
    cr_assert(strstr(err, part) != NULL, "message '%s' lacks '%s'", err, part);
    free(err);
}

/* Pushes the decoded value of `data`, failing the test if it does not decode. */
static void decode_ok(const char *data, size_t len)
{
    char *err = NULL;
    int rc = dp_lmp_decode(L, data, len, &err);
    cr_assert_eq(rc, DP_OK, "decode failed: %s", err ? err : "?");
    free(err);
}

Test(lmsgpack, roundtrip_scalars)
{
    roundtrip("return nil");
    roundtrip("return true");
    roundtrip("return false");
    roundtrip("return 0");
    roundtrip("return -1");
    roundtrip("return 3.0");
    roundtrip("return -0.5");
    roundtrip("return 1/0");
    roundtrip("return -1/0");
    roundtrip("return 0/0");
    roundtrip("return math.maxinteger");
    roundtrip("return math.mininteger");
    roundtrip("return 2^53");
    roundtrip("return ''");
}

Test(lmsgpack, roundtrip_nested_tables)
{
    roundtrip("return {1, 2, 3}");
    roundtrip("return {a = 1, b = 'two', c = {true, false}}");
    roundtrip("return {1, 2, x = 3}");
    roundtrip("return {[1] = 'a', [3] = 'c'}");
    roundtrip("return {[0] = 'zero', 'one'}");
    roundtrip("return {[-5] = 1, [1.5] = 2, [true] = 3, [false] = 4}");
    roundtrip("return {pumps = {{id = 1, on = true, rpm = 1450.5}, {id = 2, on = false}},"
              " log = {{t = 1, msg = 'start'}, {}}, empty = {}}");
    roundtrip("return {{{{{{'deep'}}}}}}");
    roundtrip("local x = {1, 2} return {x, x, {k = x}}");
}

Test(lmsgpack, empty_table_is_map)
{
    expect_bytes("return {}", "\x80", 1);
    /* An empty table decodes back to an empty table. */
    decode_ok("\x90", 1);
    cr_assert(lua_istable(L, -1));
    lua_pushnil(L);
    cr_assert_eq(lua_next(L, -2), 0);
}

Test(lmsgpack, integers_and_floats_keep_their_subtype)
{
    expect_bytes("return 1", "\x01", 1);
    expect_bytes("return 1.0", "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 9);
    expect_bytes("return -33", "\xd0\xdf", 2);
    expect_bytes("return {1, 2}", "\x92\x01\x02", 3);
    roundtrip("return {i = 3, f = 3.0, n = -7, g = -7.0, z = 0.0, big = 1 << 62,"
              " bigf = 2.0^62, tiny = 5e-324}");

    eval("return {3, 3.0}");
    size_t len;
    char *buf = encode_top(&len);
    decode_ok(buf, len);
    free(buf);
    lua_rawgeti(L, -1, 1);
    cr_assert(lua_isinteger(L, -1));
    lua_rawgeti(L, -2, 2);
    cr_assert(!lua_isinteger(L, -1) && lua_tonumber(L, -1) == 3.0);
}

Test(lmsgpack, big_unsigned_becomes_float)
{
    decode_ok("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    cr_assert(!lua_isinteger(L, -1));
    cr_assert_eq(lua_tonumber(L, -1), 18446744073709551615.0);
    lua_pop(L, 1);
    decode_ok("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
    cr_assert(lua_isinteger(L, -1));
    cr_assert_eq(lua_tointeger(L, -1), INT64_MAX);
    lua_pop(L, 1);
    decode_ok("\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9);
    cr_assert_eq(lua_tointeger(L, -1), INT64_MIN);
    lua_pop(L, 1);
    decode_ok("\xd1\xff\x7f", 3);
    cr_assert_eq(lua_tointeger(L, -1), -129);
    lua_pop(L, 1);
    decode_ok("\xca\x3f\xc0\x00\x00", 5);
    cr_assert(!lua_isinteger(L, -1));
    cr_assert_eq(lua_tonumber(L, -1), 1.5);
}

Test(lmsgpack, binary_and_unicode_strings)
{
    roundtrip("return 'a\\0b\\0\\255\\1'");
    roundtrip("return {['k\\0ey'] = '\\0', ['\\255'] = 'x'}");
    roundtrip("return 'h\\u{E9}llo \\u{2713} \\u{65E5}\\u{672C}'");
    roundtrip("return string.rep('x', 70000)");

    /* A NUL byte must survive as part of the string, not end it. */
    eval("return 'a\\0b'");
    size_t len;
    char *buf = encode_top(&len);
    cr_assert_eq(len, 4);
    cr_assert(memcmp(buf,
                     "\xa3"
                     "a\0b",
                     4) == 0);
    free(buf);

    /* bin is decoded to a plain string. */
    decode_ok("\xc4\x03\x00\x01\x02", 5);
    size_t slen;
    const char *s = lua_tolstring(L, -1, &slen);
    cr_assert_eq(slen, 3);
    cr_assert(memcmp(s, "\x00\x01\x02", 3) == 0);
}

Test(lmsgpack, key_order_is_by_type_then_value)
{
    /* false, true, then numbers in numeric order (integers and floats mixed),
     * then strings in byte order. */
    expect_bytes("return {b = 1, a = 2, [2] = 3, [1.5] = 4, [true] = 5, [false] = 6,"
                 " [-1] = 7, ab = 8}",
                 "\x88\xc2\x06\xc3\x05\xff\x07\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\x04\x02\x03"
                 "\xa1"
                 "a\x02\xa2"
                 "ab\x08\xa1"
                 "b\x01",
                 29);

    /* An integer and a float with the same integer part must still be told
     * apart exactly, including below zero where floor() rounds away. */
    eval("return {[1.5] = 0, [1] = 0, [-1.5] = 0, [-2] = 0, [2^63] = 0,"
         " [math.maxinteger] = 0, [-2^63 - 2^11] = 0, [math.mininteger] = 0}");
    size_t len;
    char *buf = encode_top(&len);
    decode_ok(buf, len);
    free(buf);
    lua_pop(L, 1);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    eval("return {[1.5] = 0, [1] = 0, [-1.5] = 0, [-2] = 0, [2^63] = 0,"
         " [math.maxinteger] = 0, [-2^63 - 2^11] = 0, [math.mininteger] = 0}");
    buf = encode_top(&len);
    cr_assert_eq(msgpack_unpack_next(&u, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object_map *m = &u.data.via.map;
    cr_assert_eq(m->size, 8);
    /* Expected: -2^63-2^11, mininteger, -2, -1.5, 1, 1.5, maxinteger, 2^63. */
    const double want[] = {-9223372036854777856.0, -9223372036854775808.0, -2, -1.5, 1, 1.5,
                           9223372036854775807.0,  9223372036854775808.0};
    const bool isint[] = {false, true, true, false, true, false, true, false};
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        bool kint = k->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
        cr_assert_eq(kint, isint[i], "key %u has the wrong type", i);
        double v = k->type == MSGPACK_OBJECT_POSITIVE_INTEGER   ? (double)k->via.u64
                   : k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? (double)k->via.i64
                                                                : k->via.f64;
        cr_assert_eq(v, want[i], "key %u is %.17g, expected %.17g", i, v, want[i]);
    }
    msgpack_unpacked_destroy(&u);
    free(buf);
}

Test(lmsgpack, integer_and_float_keys_interleave)
{
    /* Many keys k and k + 0.5 inserted in a scrambled order, so that the
     * table's traversal order puts some floats before their integer. */
    eval("local t = {}\n"
         "for i = 0, 240 do local k = (i * 97) % 241 - 120\n"
         "  if k % 2 == 0 then t[k // 2 + 1000] = 0 else t[(k - 1) // 2 + 1000.5] = 0 end\n"
         "end\n"
         "return t");
    size_t len;
    char *buf = encode_top(&len);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object_map *m = &u.data.via.map;
    cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(m->size, 241);
    double prev = -INFINITY;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        double v = k->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)k->via.u64 : k->via.f64;
        cr_assert(v > prev, "key %u (%g) is not after %g", i, v, prev);
        prev = v;
    }
    msgpack_unpacked_destroy(&u);
    free(buf);
}

Test(lmsgpack, sparse_integer_keys_are_a_map)
{
    expect_bytes("return {[1] = 1, [3] = 3}", "\x82\x01\x01\x03\x03", 5);
    expect_bytes("return {[2] = 2}", "\x81\x02\x02", 3);
    expect_bytes("return {[3] = 3, [1] = 1, [2] = 2}", "\x93\x01\x02\x03", 4);
}

Test(lmsgpack, encoding_is_deterministic)
{
    eval("local t = {}\n"
         "for i = 1, 200 do t['k' .. i] = i end\n"
         "for i = 1, 50 do t[i * 7] = {x = i, y = -i} end\n"
         "t[true] = 'yes'; t[2.5] = 'half'; t[-1e300] = 'low'\n"
         "return t");
    size_t len1;
    char *buf1 = encode_top(&len1);

    /* Same content, reverse insertion order, with extra keys inserted and
     * removed so that the hash part has a different size and layout. */
    eval("local t = {}\n"
         "for i = 1, 300 do t['junk' .. i] = i end\n"
         "t[-1e300] = 'low'; t[2.5] = 'half'; t[true] = 'yes'\n"
         "for i = 50, 1, -1 do t[i * 7] = {y = -i, x = i} end\n"
         "for i = 200, 1, -1 do t['k' .. i] = i end\n"
         "for i = 1, 300 do t['junk' .. i] = nil end\n"
         "return t");
    size_t len2;
    char *buf2 = encode_top(&len2);

    cr_assert_eq(len1, len2);
    cr_assert(memcmp(buf1, buf2, len1) == 0, "equal tables encoded differently");
    free(buf1);
    free(buf2);
}

Test(lmsgpack, error_paths_name_the_value)
{
    expect_encode_error("return {pumps = {{}, {on_fault = function() end}}}",
                        "state.pumps[2].on_fault: cannot store a function");
    expect_encode_error("return print", "state: cannot store a function");
    expect_encode_error("return {dev = {f = io.stdout}}", "state.dev.f: cannot store userdata");
    expect_encode_error("return {co = coroutine.create(print)}",
                        "state.co: cannot store a coroutine");
    expect_encode_error("return {['my key'] = {['q\"x'] = print}}",
                        "state[\"my key\"][\"q\\\"x\"]: cannot store a function");
    expect_encode_error("return {['a\\nb'] = print}",
                        "state[\"a\\x0ab\"]: cannot store a function");
    expect_encode_error("return {[true] = {[1.5] = print}}",
                        "state[boolean][number]: cannot store a function");
    expect_encode_error("return {x = {[{}] = 1}}", "state.x[table]: cannot use a table as a key");
    expect_encode_error("return {_ok9 = {[9] = {print}}}",
                        "state._ok9[9][1]: cannot store a function");
}

Test(lmsgpack, light_userdata_is_refused)
{
    lua_newtable(L);
    lua_pushlightuserdata(L, &L);
    lua_setfield(L, -2, "p");
    char *buf = NULL;
    size_t len = 0;
    char *err = NULL;
    cr_assert_eq(dp_lmp_encode(L, -1, "cfg", &buf, &len, &err), DP_EINVAL);
    cr_assert_str_eq(err, "cfg.p: cannot store userdata");
    free(err);
}

Test(lmsgpack, cycles_are_refused)
{
    expect_encode_error("local s = {a = {}} s.a.b = s return s",
                        "state.a.b: cycle (table refers to itself)");
    expect_encode_error("local t = {} t[1] = t return t",
                        "state[1]: cycle (table refers to itself)");
    expect_encode_error("local a = {} local b = {a} a.b = b return {list = {a}}",
                        "state.list[1].b[1]: cycle (table refers to itself)");
}

Test(lmsgpack, depth_limit_on_encode)
{
    /* 64 nested tables are fine, 65 are not. */
    lua_getglobal(L, "nest");
    lua_pushinteger(L, DP_LMP_MAX_DEPTH);
    lua_call(L, 1, 1);
    check_roundtrip("64 nested tables");

    eval("return {a = nest(64)}");
    int top = lua_gettop(L);
    char *buf = NULL;
    size_t len = 0;
    char *err = NULL;
    cr_assert_eq(dp_lmp_encode(L, -1, "state", &buf, &len, &err), DP_EINVAL);
    cr_assert_eq(lua_gettop(L), top);
    cr_assert(strncmp(err, "state.a[1][1]", 13) == 0, "bad path: %s", err);
    const char *tail = ": nesting deeper than 64";
    size_t elen = strlen(err);
    cr_assert(elen > strlen(tail) && strcmp(err + elen - strlen(tail), tail) == 0, "got %s", err);
    free(err);
}

Test(lmsgpack, pack_into_caller_packer)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    eval("return {x = 1}");
    char *err = NULL;
    /* A relative index is resolved before anything is pushed. */
    lua_pushinteger(L, 42);
    cr_assert_eq(dp_lmp_pack(L, -2, &pk, "s", &err), DP_OK);
    cr_assert_eq(dp_lmp_pack(L, -1, &pk, "s", &err), DP_OK);
    cr_assert_eq(sb.size, 5);
    cr_assert(memcmp(sb.data, "\x81\xa1x\x01\x2a", 5) == 0);
    msgpack_sbuffer_destroy(&sb);
}

Test(lmsgpack, push_from_msgpack_object)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, "\x82\xa1k\x93\x01\xc3\xc0\x05\xa1v", 10, &off),
                 MSGPACK_UNPACK_SUCCESS);
    char *err = NULL;
    cr_assert_eq(dp_lmp_push(L, &u.data, &err), DP_OK);
    msgpack_unpacked_destroy(&u);
    lua_setglobal(L, "got");
    eval("return deq(got, {k = {1, true, nil}, [5] = 'v'})");
    cr_assert(lua_toboolean(L, -1));

    /* An ext object handed over directly is refused without pushing. */
    msgpack_object ext = {.type = MSGPACK_OBJECT_EXT};
    ext.via.ext.type = 7;
    int top = lua_gettop(L);
    cr_assert_eq(dp_lmp_push(L, &ext, &err), DP_EINVAL);
    cr_assert_eq(lua_gettop(L), top);
    cr_assert_str_eq(err, "msgpack ext type 7 is not supported");
    free(err);
}

Test(lmsgpack, decode_errors)
{
    expect_decode_error("", 0, "empty msgpack data");
    expect_decode_error("\x92\x01", 2, "truncated msgpack data at byte 2");
    expect_decode_error("\xa5"
                        "ab",
                        3, "truncated msgpack data at byte 3");
    expect_decode_error("\x81\xa1k", 3, "truncated msgpack data at byte 3");
    expect_decode_error("\xcb\x00\x00", 3, "truncated");
    expect_decode_error("\xda\x00", 2, "truncated");
    expect_decode_error("\x01\x02\x03", 3, "2 trailing bytes after the msgpack value");
    expect_decode_error("\x90\xc0", 2, "1 trailing bytes after the msgpack value");
    expect_decode_error("\xd4\x05\x00", 3, "msgpack ext type 5 is not supported");
    expect_decode_error("\x91\xd6\xff\x00\x00\x00\x00", 7, "msgpack ext type -1 is not supported");
    expect_decode_error("\xc7\x01\x10\x00", 4, "msgpack ext type 16 is not supported");
    expect_decode_error("\x81\xc0\x01", 3, "nil key");
    expect_decode_error("\x82\x01\x01\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01", 13, "NaN key");
    expect_decode_error("\x81\xca\x7f\xc0\x00\x00\x01", 7, "NaN key");
    expect_decode_error("\x81\x90\x01", 3, "array as a key");
    expect_decode_error("\x81\x80\x01", 3, "map as a key");
    expect_decode_error("\xc1", 1, "invalid msgpack type byte 0xc1 at byte 0");
}

Test(lmsgpack, huge_declared_counts_fail_fast)
{
    /* These headers promise billions of elements in a few bytes; they must be
     * reported as truncated without trying to allocate for the count. */
    expect_decode_error("\xdd\xff\xff\xff\xff", 5, "truncated msgpack data at byte 5");
    expect_decode_error("\xdf\x7f\xff\xff\xff\x01\x01", 7, "truncated");
    expect_decode_error("\xdb\xff\xff\xff\xff"
                        "abc",
                        8, "truncated");
    expect_decode_error("\xc6\xff\xff\xff\xff", 5, "truncated");
    expect_decode_error("\xc9\xff\xff\xff\xff\x01", 6, "truncated");
}

Test(lmsgpack, decode_depth_limit)
{
    char buf[256];
    /* 64 nested arrays round out the limit and decode. */
    memset(buf, 0x91, 63);
    buf[63] = (char)0x90;
    decode_ok(buf, 64);
    lua_pop(L, 1);

    memset(buf, 0x91, 64);
    buf[64] = (char)0x90;
    expect_decode_error(buf, 65, "msgpack data nested deeper than 64 (at byte 64)");

    memset(buf, 0x91, 100);
    buf[100] = 0x01;
    expect_decode_error(buf, 101, "nested deeper than 64");

    /* Maps count towards nesting as well. */
    for (int i = 0; i < 100; i++) {
        buf[2 * i] = (char)0x81;
        buf[2 * i + 1] = 0x01;
    }
    buf[200] = 0x01;
    expect_decode_error(buf, 201, "nested deeper than 64");
}

Test(lmsgpack, mixed_keys_and_float_keys_decode)
{
    /* A map whose keys are exactly 1..n decodes to a sequence; float keys
     * with integral values become integer keys, as in Lua itself. */
    decode_ok("\x82\x02\xa1"
              "b\x01\xa1"
              "a",
              7);
    lua_setglobal(L, "got");
    eval("return deq(got, {'a', 'b'}) and #got == 2");
    cr_assert(lua_toboolean(L, -1));

    decode_ok("\x81\xcb\x40\x00\x00\x00\x00\x00\x00\x00\xc3", 11);
    lua_setglobal(L, "got");
    eval("return got[2] == true and math.type(next(got)) == 'integer'");
    cr_assert(lua_toboolean(L, -1));

    /* Nil values in maps simply leave the key out. */
    decode_ok("\x82\xa1x\xc0\xa1y\x01", 7);
    lua_setglobal(L, "got");
    eval("return deq(got, {y = 1})");
    cr_assert(lua_toboolean(L, -1));
}
