/* libFuzzer target for runtime/lmsgpack.c.
 *
 * Any input that decodes must re-encode, and re-encoding must be stable:
 * encode(decode(input)) and encode(decode(encode(decode(input)))) are
 * compared byte for byte, since snapshots are compared that way. The calls
 * are deliberately not protected by lua_pcall: the converter promises not to
 * raise, so a Lua error reaching the panic handler is a finding.
 *
 * As a differential check, inputs we accept are also given to msgpack-c's
 * own unpacker (safe only after our parser has bounded the declared sizes);
 * when it reads the same single value, converting its object must give the
 * same encoding. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmsgpack.h"

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_lmsgpack: %s: %s\n", what, err != NULL ? err : "(no message)");
    abort();
}

/* Encodes the value at the top of the stack and pops it. */
static char *encode_top(lua_State *L, size_t *len, const char *what)
{
    char *out = NULL;
    char *err = NULL;
    if (dp_lmp_encode(L, -1, "fuzz", &out, len, &err) != DP_OK)
        fail(what, err);
    lua_pop(L, 1);
    return out;
}

static void same_bytes(const char *a, size_t alen, const char *b, size_t blen, const char *what)
{
    if (alen != blen || memcmp(a, b, alen) != 0)
        fail(what, "encodings differ");
}

/* Compares with msgpack-c's unpacker. Its C unpacker stops at 32 levels of
 * nesting with MSGPACK_UNPACK_NOMEM_ERROR, so that result is not a mismatch. */
static void check_against_msgpack_c(lua_State *L, const uint8_t *data, size_t size, const char *enc,
                                    size_t enc_len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ret = msgpack_unpack_next(&u, (const char *)data, size, &off);
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR) {
        msgpack_unpacked_destroy(&u);
        return;
    }
    if (ret != MSGPACK_UNPACK_SUCCESS || off != size)
        fail("msgpack-c disagrees", "it did not read exactly one value");
    char *err = NULL;
    if (dp_lmp_push(L, &u.data, &err) != DP_OK)
        fail("dp_lmp_push of msgpack-c's object", err);
    msgpack_unpacked_destroy(&u);
    size_t len;
    char *again = encode_top(L, &len, "encode of msgpack-c's object");
    same_bytes(enc, enc_len, again, len, "msgpack-c's object");
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return 0;
    char *err = NULL;
    int top = lua_gettop(L);
    if (dp_lmp_decode(L, (const char *)data, size, &err) != DP_OK) {
        if (err == NULL)
            fail("decode failed", "no message");
        if (lua_gettop(L) != top)
            fail("decode failed", "but left values on the stack");
        free(err);
        lua_close(L);
        return 0;
    }
    if (lua_gettop(L) != top + 1)
        fail("decode", "did not push exactly one value");

    size_t len1;
    char *enc1 = encode_top(L, &len1, "re-encode of a decoded value");
    if (dp_lmp_decode(L, enc1, len1, &err) != DP_OK)
        fail("decode of our own encoding", err);
    size_t len2;
    char *enc2 = encode_top(L, &len2, "second re-encode");
    same_bytes(enc1, len1, enc2, len2, "round trip");

    check_against_msgpack_c(L, data, size, enc1, len1);

    free(enc1);
    free(enc2);
    lua_close(L);
    return 0;
}
