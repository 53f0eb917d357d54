/* libFuzzer target for the Modbus TCP server's side of drivers/modbus/codec.c
 * (the fuzz build takes drivers/NAME/codec.c for a driver's target).
 *
 * The input is a byte stream as a client would send it. It is cut into
 * frames exactly as server.c does (dp_mb_frame_len), each frame is decoded,
 * and an answer is built for every well-framed request: a read response, a
 * write echo or an exception. Every answer must itself be one well-framed
 * ADU of at most 260 bytes. A stream that is not Modbus TCP ends the
 * "connection", as it does in the server.
 *
 * Built by `make build-fuzz` and run by `make test` (test-fuzz) with the seed
 * corpus in tests/fuzz/corpus/fuzz_modbus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../drivers/modbus/codec.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_modbus: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dp_mb_request_t req;
    static uint16_t regs[DP_MB_MAX_READ_BITS];
    uint8_t out[DP_MB_MAX_ADU];
    size_t off = 0;
    while (off < size) {
        int n = dp_mb_frame_len(data + off, size - off);
        if (n <= 0)
            break; /* needs more bytes, or the connection is closed */
        const uint8_t *f = data + off;
        off += (size_t)n;
        int rc = dp_mb_parse_request(f, (size_t)n, &req);
        size_t k = 0;
        if (rc == 0 && !req.write) {
            check(req.count >= 1 && req.address + req.count <= 65536, "read range");
            for (int i = 0; i < req.count; i++)
                regs[i] = (uint16_t)(req.address + i);
            k = dp_mb_response_read(&req, regs, out);
        } else if (rc == 0) {
            k = dp_mb_response_write(&req, f, out);
        } else if (rc > 0) {
            k = dp_mb_response_exception(&req, rc, out);
        } else {
            break;
        }
        check(k >= 9 && k <= DP_MB_MAX_ADU, "answer size");
        check(dp_mb_frame_len(out, k) == (int)k, "answer framing");
    }
    return 0;
}
