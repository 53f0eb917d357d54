/* Shortest round-trip formatting of doubles.
 *
 * A positive finite double is d = m * 2^e (m < 2^53). strtod maps every real
 * number within half a unit in the last place of d to d: the interval
 * [d - ulp/2, d + ulp/2], whose ends belong to d when m is even (ties go to
 * the even neighbour), and whose lower half is ulp/4 when d is a power of two
 * (the neighbour below has the next smaller exponent). Any decimal in that
 * interval reads back as d; the shortest is the one with the most trailing
 * zeros.
 *
 * For 1e-15 <= d < 1e17 everything is computed exactly in 128-bit integers:
 * the interval, scaled by 10^t so that d * 10^t lies in [1e16, 1e17), is
 * [L * P / 2^x, H * P / 2^x] with small integers L, H (multiples of ulp/4),
 * P = 5^t * 2^max(a, 0) < 2^72 and x = max(-a, 0) where a = e - 2 + t. Its
 * integer bounds A..B come from a shift and a mask; the largest power 10^j
 * with a multiple in A..B gives the fewest digits; of the (at most two)
 * candidate multiples next to d * 10^t the closer is taken, ties to even.
 * No floating-point arithmetic decides anything, so there is no rounding
 * error to reason about. Outside that range (rare in plant data: subnormals,
 * tiny and huge magnitudes), printf's correctly rounded "%.*e" is tried with
 * 1..17 digits and the first that strtod reads back as d is used: slow, and
 * exact by construction. */
#include "fmtnum.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;

static const uint64_t pow10_tab[18] = {1ULL,
                                       10ULL,
                                       100ULL,
                                       1000ULL,
                                       10000ULL,
                                       100000ULL,
                                       1000000ULL,
                                       10000000ULL,
                                       100000000ULL,
                                       1000000000ULL,
                                       10000000000ULL,
                                       100000000000ULL,
                                       1000000000000ULL,
                                       10000000000000ULL,
                                       100000000000000ULL,
                                       1000000000000000ULL,
                                       10000000000000000ULL,
                                       100000000000000000ULL};

/* 5^0 .. 5^27, the largest power of five below 2^64. */
static const uint64_t pow5_tab[28] = {
    1ULL,
    5ULL,
    25ULL,
    125ULL,
    625ULL,
    3125ULL,
    15625ULL,
    78125ULL,
    390625ULL,
    1953125ULL,
    9765625ULL,
    48828125ULL,
    244140625ULL,
    1220703125ULL,
    6103515625ULL,
    30517578125ULL,
    152587890625ULL,
    762939453125ULL,
    3814697265625ULL,
    19073486328125ULL,
    95367431640625ULL,
    476837158203125ULL,
    2384185791015625ULL,
    11920928955078125ULL,
    59604644775390625ULL,
    298023223876953125ULL,
    1490116119384765625ULL,
    7450580596923828125ULL,
};

/* Decimal digits of n > 0 written ending at `end`; returns the first. */
static char *digits_rev(uint64_t n, char *end)
{
    do {
        *--end = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    return end;
}

/* Writes dig[0..n-1] (no trailing zeros, dig[0] != '0'), the first digit
 * being at 10^e10, at `p`: plain notation for -4 <= e10 < 17 as "%g" does,
 * else d.ddde+XX. Returns the end (where the NUL went). */
static char *layout(char *p, const char *dig, int n, int e10)
{
    if (e10 >= -4 && e10 < 17) {
        if (e10 < 0) {
            *p++ = '0';
            *p++ = '.';
            for (int i = 0; i < -e10 - 1; i++)
                *p++ = '0';
            memcpy(p, dig, (size_t)n);
            p += n;
        } else if (n <= e10 + 1) {
            memcpy(p, dig, (size_t)n);
            p += n;
            for (int i = n; i < e10 + 1; i++)
                *p++ = '0';
        } else {
            memcpy(p, dig, (size_t)e10 + 1);
            p += e10 + 1;
            *p++ = '.';
            memcpy(p, dig + e10 + 1, (size_t)(n - e10 - 1));
            p += n - e10 - 1;
        }
    } else {
        *p++ = dig[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, dig + 1, (size_t)n - 1);
            p += n - 1;
        }
        *p++ = 'e';
        *p++ = e10 < 0 ? '-' : '+';
        int x = e10 < 0 ? -e10 : e10;
        if (x >= 100) {
            *p++ = (char)('0' + x / 100);
            x %= 100;
        }
        *p++ = (char)('0' + x / 10);
        *p++ = (char)('0' + x % 10);
    }
    *p = '\0';
    return p;
}

/* The exact path: the shortest digits *dig (no trailing zeros) and the
 * exponent *e10 of its first digit for a positive normal double, or false
 * when d is outside the range where 128 bits are enough. */
static bool shortest(double d, uint64_t *dig, int *e10)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int be = (int)(bits >> 52) & 0x7ff;
    uint64_t frac = bits & ((UINT64_C(1) << 52) - 1);
    if (be == 0 || be == 0x7ff)
        return false;
    uint64_t m = frac | (UINT64_C(1) << 52);
    int e = be - 1075;
    /* In units of ulp/4 = 2^(e-2): d is V, the interval [L, H]. */
    uint64_t V = m << 2, H = V + 2, L = V - (frac == 0 && be > 1 ? 1 : 2);
    bool incl = (m & 1) == 0;

    /* k = floor(log10(d)) estimated from the binary exponent, then made
     * exact by checking that d * 10^(16-k) lies in [1e16, 1e17). */
    int k = (int)floor((be - 1023) * 0.30102999566398120);
    k = k < -15 ? -15 : k > 16 ? 16 : k; /* the range of the loop below */
    u128 vn = 0, P = 0;
    int t = 0, x = 0;
    for (int tries = 0;; tries++) {
        t = 16 - k;
        if (tries == 3 || t < 0 || t > 31)
            return false;
        int a = e - 2 + t;
        P = t <= 27 ? (u128)pow5_tab[t] : (u128)pow5_tab[27] * pow5_tab[t - 27];
        x = 0;
        if (a >= 0) {
            if (a > 16)
                return false;
            P <<= a;
        } else {
            x = -a;
            if (x > 120)
                return false;
        }
        if ((P >> 72) != 0)
            return false;
        vn = (u128)V * P;
        u128 vi = vn >> x;
        if (vi >= pow10_tab[17])
            k++;
        else if (vi < pow10_tab[16])
            k--;
        else
            break;
    }
    u128 mask = x == 0 ? 0 : ((u128)1 << x) - 1;
    u128 ln = (u128)L * P, hn = (u128)H * P;
    uint64_t vi = (uint64_t)(vn >> x), li = (uint64_t)(ln >> x), hi = (uint64_t)(hn >> x);
    bool lfrac = (ln & mask) != 0, hfrac = (hn & mask) != 0;
    /* Integers allowed: A..B. */
    uint64_t A = incl ? li + lfrac : li + 1;
    uint64_t B = incl || hfrac ? hi : hi - 1;
    if (A > B)
        return false;

    /* The largest j with a multiple of 10^j in A..B: B mod 10^j <= B - A,
     * and B mod 10^j only grows with j. */
    uint64_t W = B - A, q = B, r = 0;
    int j = 0;
    while (j < 17) {
        uint64_t r2 = r + (q % 10) * pow10_tab[j];
        if (r2 > W)
            break;
        r = r2;
        q /= 10;
        j++;
    }
    uint64_t pw = pow10_tab[j], qv = vi / pw, c = qv * pw;
    bool lo_ok = c >= A, hi_ok = c + pw <= B;
    uint64_t D;
    if (lo_ok && hi_ok) {
        /* Closer of c <= d' and c + pw > d', with d' = vi + f, 0 <= f < 1:
         * c is closer when 2 (vi - c) + 2f < pw. */
        uint64_t s = 2 * (vi - c);
        int cmp; /* <0: c closer, 0: tie, >0: c + pw closer */
        if (s + 2 <= pw)
            cmp = -1;
        else if (s >= pw)
            cmp = s == pw && (vn & mask) == 0 ? 0 : 1;
        else { /* s + 1 == pw: compare f with 1/2 */
            u128 f = vn & mask, half = x == 0 ? 0 : (u128)1 << (x - 1);
            cmp = x == 0 || f < half ? -1 : f == half ? 0 : 1;
        }
        D = cmp < 0 || (cmp == 0 && qv % 2 == 0) ? qv : qv + 1;
    } else if (lo_ok) {
        D = qv;
    } else if (hi_ok) {
        D = qv + 1;
    } else {
        return false;
    }
    while (D % 10 == 0) {
        D /= 10;
        j++;
    }
    int n = 1;
    for (uint64_t y = D; y >= 10; y /= 10)
        n++;
    *dig = D;
    *e10 = n - 1 + j - t;
    return true;
}

/* Outside the exact range: the first of "%.0e" .. "%.16e" that reads back.
 * At a power of two the interval reaches twice as far above d as below, so
 * when the nearest decimal (below d) fails, the next one up is tried too. */
static char *fallback(double d, bool pow2, char *p)
{
    char tmp[DP_FMTNUM_SIZE + 8], dig[24];
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, d);
        /* tmp is "D.DDDDe[+-]XX": gather the digits. */
        int n = 0;
        const char *s = tmp;
        for (; *s != 'e'; s++)
            if (*s != '.')
                dig[n++] = *s;
        int e10 = atoi(s + 1);
        bool ok = prec == 16 || strtod(tmp, NULL) == d;
        if (!ok && pow2 && strtod(tmp, NULL) < d) {
            int i = n - 1;
            while (i >= 0 && dig[i] == '9')
                dig[i--] = '0';
            if (i >= 0) {
                dig[i]++;
            } else {
                dig[0] = '1';
                e10++;
            }
            char up[DP_FMTNUM_SIZE + 8];
            snprintf(up, sizeof up, "%.*se%d", n, dig, e10 - n + 1);
            ok = strtod(up, NULL) == d;
        }
        if (!ok)
            continue;
        while (n > 1 && dig[n - 1] == '0')
            n--;
        return layout(p, dig, n, e10);
    }
    return p; /* not reached: 17 digits always read back */
}

size_t dp_fmtnum(double d, char buf[DP_FMTNUM_SIZE])
{
    char *p = buf;
    if (isnan(d) || isinf(d)) {
        const char *s = isnan(d) ? (signbit(d) ? "-nan" : "nan") : d < 0 ? "-inf" : "inf";
        size_t n = strlen(s);
        memcpy(buf, s, n + 1);
        return n;
    }
    if (signbit(d)) {
        *p++ = '-';
        d = -d;
    }
    if (d < 9007199254740992.0 && d == (double)(int64_t)d) {
        char tmp[24], *end = tmp + sizeof tmp;
        char *s = digits_rev((uint64_t)d, end);
        memcpy(p, s, (size_t)(end - s));
        p += end - s;
        *p = '\0';
        return (size_t)(p - buf);
    }
    uint64_t D;
    int e10;
    if (shortest(d, &D, &e10)) {
        char tmp[24], *end = tmp + sizeof tmp;
        char *s = digits_rev(D, end);
        p = layout(p, s, (int)(end - s), e10);
    } else {
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        p = fallback(d, (bits & ((UINT64_C(1) << 52) - 1)) == 0 && (bits >> 52) > 1, p);
    }
    return (size_t)(p - buf);
}
