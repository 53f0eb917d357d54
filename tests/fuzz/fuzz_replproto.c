/* libFuzzer target for the REPL frame decoder (runtime/replproto.c).
 *
 * The input is a byte stream as a client could send it: frames are decoded
 * one after another until the decoder asks for more bytes or refuses one.
 * A refusal must come with a one-line message; a decoded message must
 * encode again (unless it is too big to encode) and decode to the same
 * fields, consuming exactly the encoded bytes. The stream without its last
 * byte must not decode more frames than the whole (a server receives bytes in
 * arbitrary reads and must not act on a frame before it is complete). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replproto.h"

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_replproto: %s: %s\n", what, detail != NULL ? detail : "(none)");
    abort();
}

static bool str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Fields that survive a round trip: the encoder sends only what the type uses. */
static void same_msg(const dp_repl_msg_t *a, const dp_repl_msg_t *b)
{
    if (a->type != b->type)
        fail("round trip", "type changed");
    if (a->type == DP_RM_HELLO && a->version != b->version)
        fail("round trip", "version changed");
    bool has_id = a->type != DP_RM_HELLO && a->type != DP_RM_ERROR;
    if (has_id && a->id != b->id)
        fail("round trip", "id changed");
    if (a->type == DP_RM_RESULT && a->ok != b->ok)
        fail("round trip", "ok changed");
    if (!str_eq(a->text, b->text))
        fail("round trip", "text changed");
    if ((a->type == DP_RM_HELLO || a->type == DP_RM_RESULT) && !str_eq(a->where, b->where))
        fail("round trip", "where changed");
    if (a->type == DP_RM_HELLO && !str_eq(a->token, b->token))
        fail("round trip", "token changed");
    if (a->type == DP_RM_ITEMS) {
        if (a->nitems != b->nitems)
            fail("round trip", "item count changed");
        for (size_t i = 0; i < a->nitems; i++) {
            if (!str_eq(a->items[i], b->items[i]))
                fail("round trip", "an item changed");
        }
    }
}

static void check_roundtrip(const dp_repl_msg_t *m)
{
    char *buf = NULL, *err = NULL;
    size_t len = 0;
    if (dp_repl_encode(m, &buf, &len, &err) < 0) {
        /* Only a payload grown over the limit (longer integer forms) may fail. */
        if (err == NULL || strstr(err, "byte limit") == NULL)
            fail("encode of a decoded message", err);
        free(err);
        return;
    }
    dp_repl_msg_t again;
    size_t used = 0;
    if (dp_repl_decode(buf, len, &again, &used, &err) != 1)
        fail("decode of our own encoding", err);
    if (used != len)
        fail("decode of our own encoding", "did not consume the frame");
    same_msg(m, &again);
    dp_repl_msg_clear(&again);
    free(buf);
}

/* Decodes frames from data; returns how many were decoded and sets *status
 * to the last decode's return (0: needs more, <0: refused). */
static int run(const uint8_t *data, size_t size, bool check, int *status)
{
    size_t off = 0;
    int n = 0;
    for (;;) {
        dp_repl_msg_t m;
        size_t used = 0;
        char *err = NULL;
        int rc = dp_repl_decode((const char *)data + off, size - off, &m, &used, &err);
        *status = rc;
        if (rc < 0) {
            if (err == NULL || strchr(err, '\n') != NULL)
                fail("refusal", err != NULL ? "message is not one line" : "no message");
            free(err);
            return n;
        }
        if (rc == 0)
            return n;
        if (used < 5 || used > size - off)
            fail("decode", "bad *used");
        if (check)
            check_roundtrip(&m);
        dp_repl_msg_clear(&m);
        off += used;
        n++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int status;
    int n = run(data, size, true, &status);
    /* A prefix decodes no more frames than the whole. */
    if (size > 0) {
        int st2;
        int m = run(data, size - 1, false, &st2);
        if (m > n)
            fail("prefix", "a prefix decoded more frames than the whole input");
    }
    return 0;
}
