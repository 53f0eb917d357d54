/* Signal-processing kernels behind doppel.signal: a complex FFT of any length
 * (radix-2, Bluestein's chirp-z for other lengths), a windowed single-sided
 * amplitude spectrum and one-pass time-domain features of a vibration block.
 *
 * The kernels never allocate: callers pass a workspace sized by
 * dp_fft_work_size(), so the Lua binding can take it from the sandbox's capped
 * allocator. */
#ifndef DP_SIGNAL_H
#define DP_SIGNAL_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* The longest block accepted (samples). */
#define DP_FFT_MAX ((size_t)1 << 22)

/* Doubles of workspace dp_fft() needs for length n (0 < n <= DP_FFT_MAX). */
size_t dp_fft_work_size(size_t n);

/* In-place discrete Fourier transform of re[k] + i im[k], k < n:
 * X[k] = sum_j x[j] e^(-2 pi i jk / n); with inverse, the inverse transform
 * including the 1/n factor. work holds dp_fft_work_size(n) doubles.
 * Returns 0, or DP_EINVAL when n is 0 or above DP_FFT_MAX. */
int dp_fft(double *re, double *im, size_t n, bool inverse, double *work);

typedef enum {
    DP_WIN_RECT = 0,
    DP_WIN_HANN,
    DP_WIN_HAMMING,
} dp_window_t;

/* Single-sided amplitude spectrum of a real block x[n]: amp[k], k <= n/2,
 * scaled by the window's coherent gain so that a sine of amplitude A on a bin
 * centre reads A (and a constant c reads c at k = 0). amp has n/2 + 1 doubles;
 * work has 2n + dp_fft_work_size(n). Returns 0 or DP_EINVAL. */
int dp_spectrum(const double *x, size_t n, dp_window_t win, double *amp, double *work);

typedef struct {
    double mean, rms, std, peak, crest, kurtosis;
} dp_signal_features_t;

/* Time-domain features of x[n] (n >= 1): rms of the raw signal, peak of |x|,
 * crest = peak / rms (0 when rms is 0), kurtosis = m4 / m2^2 of the
 * mean-removed signal (3 for a Gaussian; 0 when the signal is constant). */
void dp_signal_features(const double *x, size_t n, dp_signal_features_t *out);

/* Opens the C core of doppel.signal (the module table on the stack); the
 * sandbox's require reaches it as "doppel._signal". */
int dp_luaopen_signal(lua_State *L);

#endif
