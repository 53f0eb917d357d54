#include "signal.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#include "runtime/common.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static bool is_pow2(size_t n)
{
    return n != 0 && (n & (n - 1)) == 0;
}

static size_t next_pow2(size_t n)
{
    size_t m = 1;
    while (m < n)
        m <<= 1;
    return m;
}

size_t dp_fft_work_size(size_t n)
{
    if (n == 0 || n > DP_FFT_MAX)
        return 0;
    if (is_pow2(n))
        return n; /* twiddles: n/2 cosines and n/2 sines */
    size_t m = next_pow2(2 * n - 1);
    return 4 * m + m + 2 * n; /* two padded sequences, twiddles, chirp */
}

/* Twiddles of a length-m transform: tw[j] = cos(2 pi j / m), tw[m/2 + j] =
 * sin(2 pi j / m), j < m/2. Computed directly, not by recurrence, so the error
 * does not grow with m. */
static void twiddles(double *tw, size_t m)
{
    size_t h = m / 2;
    for (size_t j = 0; j < h; j++) {
        double a = 2.0 * M_PI * (double)j / (double)m;
        tw[j] = cos(a);
        tw[h + j] = sin(a);
    }
}

/* Iterative radix-2 transform, m a power of two; sign -1 forward, +1 inverse
 * (unscaled). */
static void fft_pow2(double *re, double *im, size_t m, const double *tw, int sign)
{
    for (size_t i = 1, j = 0; i < m; i++) {
        size_t bit = m >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j ^= bit;
        if (i < j) {
            double t = re[i];
            re[i] = re[j];
            re[j] = t;
            t = im[i];
            im[i] = im[j];
            im[j] = t;
        }
    }
    size_t h = m / 2;
    for (size_t len = 2; len <= m; len <<= 1) {
        size_t half = len / 2, step = m / len;
        for (size_t i = 0; i < m; i += len) {
            for (size_t k = 0; k < half; k++) {
                double wr = tw[k * step], wi = sign * tw[h + k * step];
                size_t a = i + k, b = a + half;
                double xr = re[b] * wr - im[b] * wi;
                double xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
    }
}

/* Bluestein: X[k] = c[k] sum_j (x[j] c[j]) conj(c[k - j]), c[k] = e^(-i pi k^2 / n),
 * a convolution done with power-of-two transforms of length m >= 2n - 1. */
static void fft_bluestein(double *re, double *im, size_t n, int sign, double *work)
{
    size_t m = next_pow2(2 * n - 1);
    double *ar = work, *ai = ar + m, *br = ai + m, *bi = br + m, *tw = bi + m;
    double *cr = tw + m, *ci = cr + n;
    twiddles(tw, m);
    for (size_t k = 0; k < n; k++) {
        /* k^2 mod 2n keeps the angle small and exact. */
        unsigned long long k2 = ((unsigned long long)k * k) % (2ULL * n);
        double a = M_PI * (double)k2 / (double)n;
        cr[k] = cos(a);
        ci[k] = sign * sin(a);
    }
    memset(ar, 0, 4 * m * sizeof *ar);
    for (size_t k = 0; k < n; k++) {
        ar[k] = re[k] * cr[k] - im[k] * ci[k];
        ai[k] = re[k] * ci[k] + im[k] * cr[k];
    }
    br[0] = cr[0];
    bi[0] = -ci[0];
    for (size_t k = 1; k < n; k++) {
        br[k] = br[m - k] = cr[k];
        bi[k] = bi[m - k] = -ci[k];
    }
    fft_pow2(ar, ai, m, tw, -1);
    fft_pow2(br, bi, m, tw, -1);
    for (size_t k = 0; k < m; k++) {
        double r = ar[k] * br[k] - ai[k] * bi[k];
        double i = ar[k] * bi[k] + ai[k] * br[k];
        ar[k] = r;
        ai[k] = i;
    }
    fft_pow2(ar, ai, m, tw, +1);
    for (size_t k = 0; k < n; k++) {
        double r = ar[k] / (double)m, i = ai[k] / (double)m;
        re[k] = r * cr[k] - i * ci[k];
        im[k] = r * ci[k] + i * cr[k];
    }
}

int dp_fft(double *re, double *im, size_t n, bool inverse, double *work)
{
    if (n == 0 || n > DP_FFT_MAX)
        return DP_EINVAL;
    int sign = inverse ? +1 : -1;
    if (n == 1) {
        /* nothing to do */
    } else if (is_pow2(n)) {
        twiddles(work, n);
        fft_pow2(re, im, n, work, sign);
    } else {
        fft_bluestein(re, im, n, sign, work);
    }
    if (inverse) {
        for (size_t k = 0; k < n; k++) {
            re[k] /= (double)n;
            im[k] /= (double)n;
        }
    }
    return 0;
}

static double window_at(dp_window_t win, size_t i, size_t n)
{
    if (n < 2)
        return 1.0;
    double a = 2.0 * M_PI * (double)i / (double)n; /* periodic windows, for spectra */
    switch (win) {
    case DP_WIN_HANN:
        return 0.5 - 0.5 * cos(a);
    case DP_WIN_HAMMING:
        return 0.54 - 0.46 * cos(a);
    default:
        return 1.0;
    }
}

int dp_spectrum(const double *x, size_t n, dp_window_t win, double *amp, double *work)
{
    if (n == 0 || n > DP_FFT_MAX)
        return DP_EINVAL;
    double *re = work, *im = work + n, *fw = work + 2 * n;
    double gain = 0;
    for (size_t i = 0; i < n; i++) {
        double w = window_at(win, i, n);
        gain += w;
        re[i] = x[i] * w;
        im[i] = 0;
    }
    int rc = dp_fft(re, im, n, false, fw);
    if (rc != 0)
        return rc;
    for (size_t k = 0; k <= n / 2; k++) {
        double mag = hypot(re[k], im[k]) / gain;
        /* Every bin but DC (and Nyquist for even n) folds its negative twin. */
        bool single = k == 0 || (n % 2 == 0 && k == n / 2);
        amp[k] = single ? mag : 2 * mag;
    }
    return 0;
}

void dp_signal_features(const double *x, size_t n, dp_signal_features_t *out)
{
    memset(out, 0, sizeof *out);
    if (n == 0)
        return;
    double sum = 0, sq = 0, peak = 0;
    for (size_t i = 0; i < n; i++) {
        sum += x[i];
        sq += x[i] * x[i];
        if (fabs(x[i]) > peak)
            peak = fabs(x[i]);
    }
    double mean = sum / (double)n;
    double m2 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (x[i] - mean) * (x[i] - mean);
        m2 += d;
        m4 += d * d;
    }
    m2 /= (double)n;
    m4 /= (double)n;
    out->mean = mean;
    out->rms = sqrt(sq / (double)n);
    out->std = sqrt(m2);
    out->peak = peak;
    out->crest = out->rms > 0 ? peak / out->rms : 0;
    out->kurtosis = m2 > 1e-300 ? m4 / (m2 * m2) : 0;
}

/* ---- Lua binding: numbers come in and go out as plain Lua arrays. ---- */

/* Reads array argument `arg` (a list of numbers) into a new userdata buffer
 * of `extra` + n doubles, left on the stack; the userdata counts against the
 * sandbox's memory cap. */
static double *check_block(lua_State *L, int arg, const char *fn, const char *name, size_t *n_out,
                           size_t extra)
{
    if (lua_type(L, arg) != LUA_TTABLE)
        luaL_error(L, "doppel.signal.%s: %s must be a list of numbers, got %s", fn, name,
                   luaL_typename(L, arg));
    lua_Integer n = luaL_len(L, arg);
    if (n < 1 || (size_t)n > DP_FFT_MAX)
        luaL_error(L, "doppel.signal.%s: %s must hold 1 to %d numbers, got %d", fn, name,
                   (int)DP_FFT_MAX, (int)n);
    double *buf = lua_newuserdatauv(L, ((size_t)n + extra) * sizeof(double), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        int isnum = 0;
        lua_rawgeti(L, arg, i);
        double v = lua_tonumberx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum || v != v || isinf(v))
            luaL_error(L, "doppel.signal.%s: %s[%d] must be a finite number", fn, name, (int)i);
        buf[i - 1] = v;
    }
    *n_out = (size_t)n;
    return buf;
}

static void push_array(lua_State *L, const double *v, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushnumber(L, v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* fft(re [, im [, inverse]]) -> re, im */
static int l_fft(lua_State *L)
{
    size_t n = 0, ni = 0;
    double *re = check_block(L, 1, "fft", "re", &n, 0);
    double *im;
    if (lua_isnoneornil(L, 2)) {
        im = lua_newuserdatauv(L, n * sizeof(double), 0);
        memset(im, 0, n * sizeof(double));
    } else {
        im = check_block(L, 2, "fft", "im", &ni, 0);
        if (ni != n)
            return luaL_error(L,
                              "doppel.signal.fft: im must have as many numbers as re (%d), got %d",
                              (int)n, (int)ni);
    }
    bool inverse = lua_toboolean(L, 3);
    double *work = lua_newuserdatauv(L, dp_fft_work_size(n) * sizeof(double) + 1, 0);
    dp_fft(re, im, n, inverse, work);
    push_array(L, re, n);
    push_array(L, im, n);
    return 2;
}

static dp_window_t check_window(lua_State *L, int arg, const char *fn)
{
    const char *w = luaL_optstring(L, arg, "hann");
    if (strcmp(w, "hann") == 0)
        return DP_WIN_HANN;
    if (strcmp(w, "hamming") == 0)
        return DP_WIN_HAMMING;
    if (strcmp(w, "rect") == 0 || strcmp(w, "none") == 0)
        return DP_WIN_RECT;
    luaL_error(L, "doppel.signal.%s: window must be \"hann\", \"hamming\" or \"rect\", got \"%s\"",
               fn, w);
    return DP_WIN_RECT;
}

/* spectrum(block [, window]) -> amplitudes (n/2 + 1) */
static int l_spectrum(lua_State *L)
{
    size_t n = 0;
    dp_window_t win = check_window(L, 2, "spectrum");
    double *x = check_block(L, 1, "spectrum", "block", &n, 0);
    double *amp = lua_newuserdatauv(L, (n / 2 + 1) * sizeof(double), 0);
    double *work = lua_newuserdatauv(L, (2 * n + dp_fft_work_size(n)) * sizeof(double), 0);
    dp_spectrum(x, n, win, amp, work);
    push_array(L, amp, n / 2 + 1);
    return 1;
}

/* features(block [, fn]) -> { mean, rms, std, peak, crest, kurtosis } */
static int l_features(lua_State *L)
{
    size_t n = 0;
    /* The Lua wrappers pass their own name (rms, peak, ...) for messages. */
    const char *fn = luaL_optstring(L, 2, "features");
    double *x = check_block(L, 1, fn, "block", &n, 0);
    dp_signal_features_t f;
    dp_signal_features(x, n, &f);
    lua_createtable(L, 0, 6);
    const struct {
        const char *k;
        double v;
    } fields[] = {{"mean", f.mean}, {"rms", f.rms},     {"std", f.std},
                  {"peak", f.peak}, {"crest", f.crest}, {"kurtosis", f.kurtosis}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        lua_pushnumber(L, fields[i].v);
        lua_setfield(L, -2, fields[i].k);
    }
    return 1;
}

int dp_luaopen_signal(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"fft", l_fft}, {"spectrum", l_spectrum}, {"features", l_features}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
