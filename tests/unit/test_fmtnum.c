/* Unit tests for runtime/fmtnum.c: every output must read back (strtod) to
 * the same double, bit for bit, with the fewest significant digits possible,
 * and be the closest such decimal.
 *
 * The oracle for "fewest and closest" needs no trust in printf's shortest
 * search: glibc's "%.800e" prints a double's exact decimal expansion (every
 * double has one with at most 767 significant digits), so for p = 1, 2, ...
 * the two p-digit decimals around d are its truncation and the truncation
 * plus one unit; the first p where one of them reads back is the shortest
 * length, and the closer of the two that read back (ties to an even last
 * digit) is the expected text. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/fmtnum.h"

/* Fewer values under the sanitizers, which make every call several times
 * slower; the Release run checks the full counts. DP_FMTNUM_REPEAT=N in the
 * environment multiplies the random counts (for a long run by hand). */
#if defined(__SANITIZE_ADDRESS__)
#define SCALE 8
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCALE 8
#endif
#endif
#ifndef SCALE
#define SCALE 1
#endif

static int count(int n)
{
    const char *r = getenv("DP_FMTNUM_REPEAT");
    int k = r != NULL && atoi(r) > 0 ? atoi(r) : 1;
    return n / SCALE * k;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double from_bits(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static uint64_t to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

/* Digits (no leading or trailing zeros) and the exponent of the first digit
 * of a decimal string such as "-0.00125", "1.5e+20" or "1200". */
static void parse_text(const char *s, char *dig, int *e10)
{
    int n = 0, point = -1, intdigits = 0, lead = 0;
    bool started = false;
    const char *p = s;
    if (*p == '-')
        p++;
    for (; *p != '\0' && *p != 'e'; p++) {
        if (*p == '.') {
            point = intdigits;
            continue;
        }
        if (point < 0)
            intdigits++;
        if (*p == '0' && !started) {
            lead++;
            continue;
        }
        started = true;
        dig[n++] = *p;
    }
    while (n > 1 && dig[n - 1] == '0')
        n--;
    dig[n] = '\0';
    int x = *p == 'e' ? atoi(p + 1) : 0;
    /* The first significant digit is at position `lead` (counting digits
     * from the left); the units digit is at intdigits - 1. */
    *e10 = intdigits - 1 - lead + x;
}

static bool reads_back(const char *s, double d)
{
    return to_bits(strtod(s, NULL)) == to_bits(d);
}

/* Checks everything about one finite double and returns the text's number
 * of significant digits. */
static int check(double d)
{
    char buf[DP_FMTNUM_SIZE + 8];
    memset(buf, 'x', sizeof buf);
    size_t n = dp_fmtnum(d, buf);
    cr_assert_lt(n, DP_FMTNUM_SIZE, "%a: %zu characters", d, n);
    cr_assert_eq(strlen(buf), n, "%a: length %zu but returned %zu", d, strlen(buf), n);
    cr_assert(reads_back(buf, d), "%.17g (%a) printed as \"%s\", which reads back as %.17g", d, d,
              buf, strtod(buf, NULL));
    char dig[24];
    int e10;
    parse_text(buf, dig, &e10);
    int sig = d == 0 ? 1 : (int)strlen(dig);
    cr_assert(sig >= 1 && sig <= 17, "%.17g: \"%s\" has %d digits", d, buf, sig);
    /* Style: integers below 2^53 as integers, plain for -4 <= e10 < 17,
     * else d.ddde+XX with at least two exponent digits. */
    bool has_e = strchr(buf, 'e') != NULL;
    if (fabs(d) < 9007199254740992.0 && d == trunc(d)) {
        cr_assert(!has_e && strchr(buf, '.') == NULL, "%.17g: \"%s\" is not an integer", d, buf);
    } else if (e10 >= -4 && e10 < 17) {
        cr_assert(!has_e, "%.17g: \"%s\" should be plain", d, buf);
    } else {
        const char *e = strchr(buf, 'e');
        cr_assert(e != NULL && (e[1] == '+' || e[1] == '-') && strlen(e + 2) >= 2,
                  "%.17g: \"%s\" should have an exponent like 1e+20", d, buf);
        cr_assert(e[-1] != '0' && e[-1] != '.', "%.17g: \"%s\": trailing zero or point", d, buf);
    }
    if (strchr(buf, '.') != NULL && !has_e)
        cr_assert(buf[n - 1] != '0', "%.17g: \"%s\" has a trailing zero", d, buf);
    return sig;
}

/* The smallest p with snprintf("%.*g", p) reading back. */
static int printf_shortest(double d)
{
    char s[48];
    for (int p = 1; p < 17; p++) {
        snprintf(s, sizeof s, "%.*g", p, d);
        if (reads_back(s, d))
            return p;
    }
    return 17;
}

/* "<digits>e<exp>" for the digit string dig[0..n-1] whose first digit is at
 * 10^e10. */
static void decimal(char *out, size_t size, const char *dig, int n, int e10)
{
    snprintf(out, size, "%.*se%d", n, dig, e10 - n + 1);
}

/* The expected shortest, closest text as (digits, exponent), from the exact
 * expansion (see the top of the file). d > 0, finite. */
static void oracle(double d, char *want, int *want_e10)
{
    static char exact[900];
    snprintf(exact, sizeof exact, "%.800e", d);
    char *e = strchr(exact, 'e');
    int e10 = atoi(e + 1);
    char dig[820];
    int nd = 0;
    for (char *p = exact; p < e; p++)
        if (*p != '.')
            dig[nd++] = *p;
    for (int p = 1; p <= 17; p++) {
        /* lo: the first p digits; hi: lo plus one unit in the last place. */
        char lo[24], hi[24];
        memcpy(lo, dig, (size_t)p);
        memcpy(hi, dig, (size_t)p);
        int hi_e10 = e10, hn = p, i = p - 1;
        while (i >= 0 && hi[i] == '9')
            hi[i--] = '0';
        if (i >= 0) {
            hi[i]++;
        } else {
            hi[0] = '1';
            hn = 1;
            hi_e10++;
        }
        bool rest_zero = true;
        for (int k = p; k < nd; k++)
            rest_zero = rest_zero && dig[k] == '0';
        char s_lo[48], s_hi[48];
        decimal(s_lo, sizeof s_lo, lo, p, e10);
        decimal(s_hi, sizeof s_hi, hi, hn, hi_e10);
        bool ok_lo = reads_back(s_lo, d), ok_hi = !rest_zero && reads_back(s_hi, d);
        if (!ok_lo && !ok_hi)
            continue;
        bool take_lo;
        if (ok_lo && ok_hi) {
            /* Compare the rest (digits p..) with one half. */
            int c = dig[p] < '5' ? -1 : dig[p] > '5' ? 1 : 0;
            for (int k = p + 1; c == 0 && k < nd; k++)
                if (dig[k] != '0')
                    c = 1;
            take_lo = c < 0 || (c == 0 && (lo[p - 1] - '0') % 2 == 0);
        } else {
            take_lo = ok_lo;
        }
        const char *w = take_lo ? lo : hi;
        int wn = take_lo ? p : hn;
        while (wn > 1 && w[wn - 1] == '0')
            wn--;
        memcpy(want, w, (size_t)wn);
        want[wn] = '\0';
        *want_e10 = take_lo ? e10 : hi_e10;
        return;
    }
    cr_assert_fail("%a: no decimal of 17 digits or fewer reads back", d);
}

/* The full check: round trip, style, shortest and closest (the oracle), and
 * never longer than printf's shortest "%.*g". */
static void check_oracle(double d)
{
    int sig = check(d);
    if (d == 0 || !isfinite(d))
        return;
    char buf[DP_FMTNUM_SIZE], dig[24], want[24];
    dp_fmtnum(fabs(d), buf);
    int e10, want_e10;
    parse_text(buf, dig, &e10);
    oracle(fabs(d), want, &want_e10);
    cr_assert(strcmp(dig, want) == 0 && e10 == want_e10,
              "%.17g (%a): \"%s\", expected digits %s at 10^%d", d, d, buf, want, want_e10);
    int p = printf_shortest(d);
    cr_assert_leq(sig, p, "%.17g: \"%s\" has %d digits, %%.%dg reads back", d, buf, sig, p);
}

static void expect(double d, const char *want)
{
    char buf[DP_FMTNUM_SIZE];
    size_t n = dp_fmtnum(d, buf);
    cr_assert_str_eq(buf, want, "%.17g", d);
    cr_assert_eq(n, strlen(want));
}

Test(fmtnum, examples)
{
    expect(0.0, "0");
    expect(-0.0, "-0");
    expect(42, "42");
    expect(-7, "-7");
    expect(1e15, "1000000000000000");
    expect(9007199254740991.0, "9007199254740991");
    expect(9007199254740992.0, "9007199254740992");
    expect(36028797018963968.0, "36028797018963970");
    expect(1e16, "10000000000000000");
    expect(99999999999999984.0, "99999999999999980");
    expect(1e17, "1e+17");
    expect(1.5e20, "1.5e+20");
    expect(1e23, "1e+23");
    expect(0.1, "0.1");
    expect(0.3, "0.3");
    expect(0.1 + 0.2, "0.30000000000000004");
    expect(-12.5, "-12.5");
    expect(123.456, "123.456");
    expect(1.0 / 3, "0.3333333333333333");
    expect(2.0 / 3, "0.6666666666666666");
    expect(4.35, "4.35");
    expect(0.0001, "0.0001");
    expect(0.00012345, "0.00012345");
    expect(1e-5, "1e-05");
    expect(2.5e-7, "2.5e-07");
    expect(1e-15, "1e-15");
    expect(5e-324, "5e-324");
    expect(2.2250738585072014e-308, "2.2250738585072014e-308");
    expect(1.7976931348623157e308, "1.7976931348623157e+308");
    expect(-1.7976931348623157e308, "-1.7976931348623157e+308");
    expect(INFINITY, "inf");
    expect(-INFINITY, "-inf");
    expect(NAN, signbit(NAN) ? "-nan" : "nan");
    expect(-NAN, signbit(-NAN) ? "-nan" : "nan");
}

/* Random bit patterns: every exponent, mostly outside the exact range. */
Test(fmtnum, random_bit_patterns)
{
    int n = count(100000);
    for (int i = 0; i < n; i++) {
        double d = from_bits(next());
        if (!isfinite(d))
            continue;
        if (i % 64 == 0)
            check_oracle(d);
        else
            check(d);
    }
}

/* Random doubles of magnitude 1e-16 .. 1e18, the range of plant values and
 * of the exact path, with every mantissa pattern. */
Test(fmtnum, random_plant_range)
{
    int n = count(1500000);
    for (int i = 0; i < n; i++) {
        uint64_t r = next();
        int exp2 = (int)(r % 114) - 56; /* 2^-56 .. 2^57 */
        double d = ldexp((double)((next() >> 11) | (UINT64_C(1) << 52)), exp2 - 52);
        if (r & (UINT64_C(1) << 40))
            d = -d;
        if (i % 128 == 0)
            check_oracle(d);
        else
            check(d);
    }
}

/* Decimals with 1 to 17 digits: the text must read back and have no more
 * digits than the decimal it came from (which reads back too). */
Test(fmtnum, random_decimals)
{
    int n = count(1000000);
    for (int i = 0; i < n; i++) {
        uint64_t lim = 10;
        for (int nd = (int)(next() % 17); nd > 0; nd--)
            lim *= 10;
        uint64_t m = 1 + next() % (lim - 1);
        while (m % 10 == 0)
            m /= 10;
        int len = 0;
        for (uint64_t y = m; y != 0; y /= 10)
            len++;
        int x = (int)(next() % 50) - 25;
        char s[48];
        snprintf(s, sizeof s, "%llue%d", (unsigned long long)m, x);
        double d = strtod(s, NULL);
        int sig = check(d);
        cr_assert_leq(sig, len, "%s: printed with %d digits", s, sig);
        if (i % 256 == 0)
            check_oracle(d);
    }
}

/* Neighbours of powers of two (where the interval is lopsided) and of
 * powers of ten, subnormals, the extremes, and integers around 2^53, 1e15,
 * 1e16 and 1e17. */
Test(fmtnum, edges)
{
    for (int k = -1074; k <= 1023; k++) {
        double p = ldexp(1, k);
        double v[] = {p, nextafter(p, 0), nextafter(p, INFINITY), nextafter(nextafter(p, 0), 0)};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            if (isfinite(v[i]))
                check_oracle(v[i]);
    }
    for (int k = -323; k <= 308; k++) {
        char s[16];
        snprintf(s, sizeof s, "1e%d", k);
        double p = strtod(s, NULL);
        double v[] = {p, nextafter(p, 0), nextafter(p, INFINITY), 5 * p, 9.999999999999999 * p};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
            if (isfinite(v[i]) && v[i] > 0)
                check_oracle(v[i]);
    }
    for (uint64_t b = 1; b < 2000; b++) {
        check_oracle(from_bits(b));                                /* smallest subnormals */
        check(from_bits(UINT64_C(0x000fffffffffffff) - b));        /* largest subnormals */
        check(from_bits(UINT64_C(0x7fefffffffffffff) - b));        /* largest finite */
        check(from_bits(UINT64_C(0x0010000000000000) + b - 1000)); /* the normal boundary */
    }
    const double centres[] = {9007199254740992.0, 1e15, 1e16, 1e17, 4503599627370496.0};
    for (size_t c = 0; c < sizeof centres / sizeof centres[0]; c++) {
        double x = centres[c];
        for (int i = 0; i < 500; i++) {
            check_oracle(x);
            check(-x);
            x = nextafter(x, 0);
        }
        x = centres[c];
        for (int i = 0; i < 500; i++) {
            check_oracle(x);
            x = nextafter(x, INFINITY);
        }
    }
    for (int64_t i = -100000; i <= 100000; i++)
        check((double)i / 8);
}
