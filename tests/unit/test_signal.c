/* The FFT kernel of doppel.signal against the direct DFT and closed forms,
 * the spectrum scaling, the time-domain features, and the kernel reached from
 * a sandbox through require "doppel.signal". */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/sandbox.h"
#include "stdlib/signal.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static void dft(const double *re, const double *im, double *outr, double *outi, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        long double sr = 0, si = 0;
        for (size_t j = 0; j < n; j++) {
            /* (j k) mod n keeps the reference's angles exact. */
            double a = -2.0 * M_PI * (double)((j * k) % n) / (double)n;
            sr += re[j] * cos(a) - im[j] * sin(a);
            si += re[j] * sin(a) + im[j] * cos(a);
        }
        outr[k] = (double)sr;
        outi[k] = (double)si;
    }
}

static void check_against_dft(size_t n)
{
    double *re = malloc(n * sizeof *re), *im = malloc(n * sizeof *im);
    double *dr = malloc(n * sizeof *dr), *di = malloc(n * sizeof *di);
    double *work = malloc(dp_fft_work_size(n) * sizeof *work);
    for (size_t i = 0; i < n; i++) {
        re[i] = sin(1.3 * (double)i) + (double)(i % 5);
        im[i] = cos(0.37 * (double)i);
    }
    dft(re, im, dr, di, n);
    cr_assert_eq(dp_fft(re, im, n, false, work), 0);
    for (size_t k = 0; k < n; k++) {
        cr_assert(fabs(re[k] - dr[k]) < 1e-9 * (double)n, "n=%zu k=%zu re %g vs %g", n, k, re[k],
                  dr[k]);
        cr_assert(fabs(im[k] - di[k]) < 1e-9 * (double)n, "n=%zu k=%zu im %g vs %g", n, k, im[k],
                  di[k]);
    }
    free(re);
    free(im);
    free(dr);
    free(di);
    free(work);
}

Test(signal, fft_matches_dft_for_many_lengths)
{
    static const size_t lengths[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 64, 100, 128, 243, 256, 1000};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++)
        check_against_dft(lengths[i]);
}

Test(signal, inverse_round_trip)
{
    const size_t sizes[] = {4096, 3000};
    for (int s = 0; s < 2; s++) {
        size_t n = sizes[s];
        double *re = malloc(n * sizeof *re), *im = calloc(n, sizeof *im);
        double *orig = malloc(n * sizeof *orig);
        double *work = malloc(dp_fft_work_size(n) * sizeof *work);
        for (size_t i = 0; i < n; i++)
            orig[i] = re[i] = (double)((i * 7919) % 101) - 50.0;
        cr_assert_eq(dp_fft(re, im, n, false, work), 0);
        cr_assert_eq(dp_fft(re, im, n, true, work), 0);
        for (size_t i = 0; i < n; i++) {
            cr_assert(fabs(re[i] - orig[i]) < 1e-9, "n=%zu i=%zu: %g vs %g", n, i, re[i], orig[i]);
            cr_assert(fabs(im[i]) < 1e-9);
        }
        free(re);
        free(im);
        free(orig);
        free(work);
    }
}

Test(signal, cosine_has_two_lines)
{
    enum { N = 256 };
    double re[N], im[N], work[N];
    for (int i = 0; i < N; i++) {
        re[i] = 3.0 * cos(2 * M_PI * 10 * i / N);
        im[i] = 0;
    }
    cr_assert_eq(dp_fft(re, im, N, false, work), 0);
    for (int k = 0; k < N; k++) {
        double expect = (k == 10 || k == N - 10) ? 3.0 * N / 2 : 0.0;
        cr_assert(fabs(re[k] - expect) < 1e-9 && fabs(im[k]) < 1e-9, "k=%d: %g%+gi", k, re[k],
                  im[k]);
    }
}

Test(signal, rejects_bad_lengths)
{
    double x = 0, w = 0;
    cr_assert_eq(dp_fft(&x, &x, 0, false, &w), DP_EINVAL);
    cr_assert_eq(dp_fft_work_size(0), 0);
    cr_assert_eq(dp_fft_work_size(DP_FFT_MAX + 1), 0);
    cr_assert_eq(dp_spectrum(&x, 0, DP_WIN_HANN, &x, &w), DP_EINVAL);
}

Test(signal, spectrum_reads_amplitudes)
{
    enum { N = 1000 }; /* not a power of two: Bluestein */
    double x[N], amp[N / 2 + 1];
    double *work = malloc((2 * N + dp_fft_work_size(N)) * sizeof *work);
    for (int i = 0; i < N; i++)
        x[i] = 0.25 + 2.0 * sin(2 * M_PI * 50 * i / N) + 0.5 * cos(2 * M_PI * 200 * i / N);
    for (int w = DP_WIN_RECT; w <= DP_WIN_HAMMING; w++) {
        cr_assert_eq(dp_spectrum(x, N, (dp_window_t)w, amp, work), 0);
        cr_assert(fabs(amp[0] - 0.25) < 1e-9, "window %d dc %g", w, amp[0]);
        cr_assert(fabs(amp[50] - 2.0) < 1e-9, "window %d amp %g", w, amp[50]);
        cr_assert(fabs(amp[200] - 0.5) < 1e-9, "window %d amp %g", w, amp[200]);
        cr_assert(amp[120] < 1e-9);
    }
    free(work);
}

Test(signal, features_of_known_signals)
{
    enum { N = 1000 };
    double x[N];
    for (int i = 0; i < N; i++)
        x[i] = 2.0 * sin(2 * M_PI * 5 * i / N);
    dp_signal_features_t f;
    dp_signal_features(x, N, &f);
    cr_assert(fabs(f.rms - sqrt(2.0)) < 1e-12);
    cr_assert(fabs(f.peak - 2.0) < 1e-9);
    cr_assert(fabs(f.crest - sqrt(2.0)) < 1e-9);
    cr_assert(fabs(f.kurtosis - 1.5) < 1e-9);
    double c[3] = {4, 4, 4};
    dp_signal_features(c, 3, &f);
    cr_assert_eq(f.kurtosis, 0);
    cr_assert(fabs(f.rms - 4) < 1e-12);
    cr_assert(fabs(f.std) < 1e-12);
}

/* The Lua module is reachable from a sandbox, and its errors name the argument. */
Test(signal, sandbox_require)
{
    dp_sandbox_opts_t o = {.name = "test", .budget = 10000000, .memory = 16 << 20};
    dp_sandbox_t *sb = dp_sandbox_new(&o);
    cr_assert_not_null(sb);
    const char *code = "local s = require 'doppel.signal'\n"
                       "local re = s.fft({1, 2, 3, 4})\n"
                       "assert(math.abs(re[1] - 10) < 1e-12 and math.abs(re[3] + 2) < 1e-12)\n"
                       "assert(math.abs(s.rms({3, -3}) - 3) < 1e-12)\n"
                       "s.rms('x')\n";
    char *err = NULL;
    cr_assert_eq(dp_sandbox_load(sb, code, strlen(code), "=test", &err), 0);
    cr_assert_eq(dp_sandbox_call(sb, 0, 0, &err, NULL), DP_SB_ERROR);
    cr_assert_not_null(strstr(err, "doppel.signal.rms: block must be a list of numbers"), "%s",
                       err);
    free(err);
    dp_sandbox_free(sb);
}
