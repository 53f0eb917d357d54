/* libFuzzer target for the double formatter (runtime/fmtnum.c).
 *
 * Every 8 bytes of input are a double's bits. A finite double must be printed
 * as text that strtod reads back to the same bits, NUL-terminated within
 * DP_FMTNUM_SIZE, with no more significant digits than the shortest
 * "%.*g" that reads back; NaN and infinities as printf writes them.
 *
 * Built by `make build-fuzz` (DP_FUZZ=ON); run by `make test-fuzz` from
 * tests/fuzz/corpus/fuzz_fmtnum. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmtnum.h"

static void fail(double d, const char *text, const char *what)
{
    fprintf(stderr, "fuzz_fmtnum: %a printed as \"%s\": %s\n", d, text, what);
    abort();
}

/* Significant digits of a decimal text ("-0.00125" has 3, "1200" has 2). */
static int significant(const char *s)
{
    int n = 0, zeros = 0;
    bool started = false;
    for (; *s != '\0' && *s != 'e'; s++) {
        if (*s < '0' || *s > '9')
            continue;
        if (*s == '0') {
            if (started)
                zeros++;
            continue;
        }
        started = true;
        n += zeros + 1;
        zeros = 0;
    }
    return n == 0 ? 1 : n;
}

static void one(double d)
{
    char buf[DP_FMTNUM_SIZE + 1];
    buf[DP_FMTNUM_SIZE] = 'x';
    size_t n = dp_fmtnum(d, buf);
    if (buf[DP_FMTNUM_SIZE] != 'x' || n >= DP_FMTNUM_SIZE || strlen(buf) != n)
        fail(d, buf, "length");
    if (isnan(d) || isinf(d)) {
        char want[16];
        snprintf(want, sizeof want, "%g", d);
        if (strcmp(buf, want) != 0)
            fail(d, buf, "not printf's text for a non-finite value");
        return;
    }
    double back = strtod(buf, NULL);
    if (memcmp(&back, &d, sizeof d) != 0)
        fail(d, buf, "reads back as another double");
    int sig = significant(buf);
    for (int p = 1; p < sig; p++) {
        char s[48];
        snprintf(s, sizeof s, "%.*g", p, d);
        if (strtod(s, NULL) == d && (d != 0 || signbit(strtod(s, NULL)) == signbit(d)))
            fail(d, buf, "a shorter %.*g reads back");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 8 <= size; i += 8) {
        double d;
        memcpy(&d, data + i, sizeof d);
        one(d);
    }
    return 0;
}
