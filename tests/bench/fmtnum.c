/* bench_fmtnum: the cost of printing a double for machines to read back.
 *
 * The same 1,000,000 values, in the same run, three ways:
 *   dp_fmtnum: the shortest text that reads back (runtime/fmtnum.c);
 *   %.17g:     one snprintf("%.17g"), always exact but 17 digits;
 *   %.15g+:    what `doppel replay` did before: snprintf("%.15g"), strtod to
 *              check it, and snprintf("%.17g") when it did not read back.
 * Two sets of values: computed doubles (like derived tags: 15-17 digits) and
 * short decimals (like sensor readings: "46.125"). Printed: ns per value
 * (CPU time) and the ratios against dp_fmtnum. Exits 1 if any dp_fmtnum text
 * does not read back as its double. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/fmtnum.h"

#define N 1000000

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t old_replay(double d, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%.15g", d);
    if (strtod(buf, NULL) != d)
        n = snprintf(buf, size, "%.17g", d);
    return (size_t)n;
}

static size_t with_fmtnum(double d, char *buf, size_t size)
{
    (void)size;
    return dp_fmtnum(d, buf);
}

static size_t with_17g(double d, char *buf, size_t size)
{
    return (size_t)snprintf(buf, size, "%.17g", d);
}

/* CPU ns per value of `f` over v[0..N-1]; *chars gets the output size. */
static double run(size_t (*f)(double, char *, size_t), const double *v, size_t *chars)
{
    char buf[40];
    size_t total = 0;
    double t0 = cpu_now();
    for (int i = 0; i < N; i++)
        total += f(v[i], buf, sizeof buf);
    double t = cpu_now() - t0;
    *chars = total;
    return t * 1e9 / N;
}

int main(void)
{
    double *computed = malloc(N * sizeof *computed), *decimals = malloc(N * sizeof *decimals);
    if (computed == NULL || decimals == NULL)
        return 1;
    for (int i = 0; i < N; i++) {
        double a = 2 * 3.141592653589793 * i / 21600;
        computed[i] = (120 + 15 * sin(a)) * (46 - 4 * cos(a)) / 367.2; /* like a hydraulic power */
        decimals[i] = round((120 + 15 * sin(a)) * 1000) / 1000;        /* a 3-decimal reading */
    }
    int bad = 0;
    char buf[DP_FMTNUM_SIZE];
    for (int i = 0; i < N; i++) {
        dp_fmtnum(computed[i], buf);
        bad += strtod(buf, NULL) != computed[i];
        dp_fmtnum(decimals[i], buf);
        bad += strtod(buf, NULL) != decimals[i];
    }
    printf("bench_fmtnum: %d values per set, CPU time per value\n", N);
    const struct {
        const char *name;
        const double *v;
    } sets[] = {{"computed", computed}, {"decimals", decimals}};
    for (size_t s = 0; s < 2; s++) {
        size_t c1, c2, c3;
        double f = run(with_fmtnum, sets[s].v, &c1);
        double g = run(with_17g, sets[s].v, &c2);
        double o = run(old_replay, sets[s].v, &c3);
        printf("%-9s dp_fmtnum %6.1f ns (%4.1f chars)   %%.17g %6.1f ns (%4.1f chars)   "
               "%%.15g+strtod(+%%.17g) %6.1f ns (%4.1f chars)\n",
               sets[s].name, f, (double)c1 / N, g, (double)c2 / N, o, (double)c3 / N);
        printf("%-9s ratio %%.17g/dp_fmtnum: %.1f   old replay/dp_fmtnum: %.1f\n", sets[s].name,
               g / f, o / f);
    }
    free(computed);
    free(decimals);
    if (bad != 0) {
        printf("FAIL: %d texts do not read back\n", bad);
        return 1;
    }
    return 0;
}
