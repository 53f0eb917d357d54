/* C-MAPSS FD001: remaining useful life of the test engines at their last
 * cycle, predicted by tests/bench/cmapss.lua (doppel.predict, fitted on the
 * training engines) in a twin sandbox, scored here against RUL_FD001.txt.
 *
 *   bench_cmapss [--data DIR] [--limit N] [--neighbours K] [--window W]
 *                [--alpha A] [--blend B]
 *
 * DIR holds train_FD001.txt, test_FD001.txt and RUL_FD001.txt (default
 * $DP_SOURCE_DIR/../shared/data/cmapss). Prints RMSE and the PHM08 score
 * S = sum(e^(-d/13) - 1 for d < 0, e^(d/10) - 1 for d >= 0), d = predicted - true. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/common.h"
#include "runtime/sandbox.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_cmapss: %s%s\n", what, detail != NULL ? detail : "");
    exit(2);
}

static char *slurp(const char *dir, const char *name)
{
    char path[1400], *err = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = dp_source_read(path, NULL, &err);
    if (s == NULL)
        die("", err);
    return s;
}

static double number_arg(const char *name, const char *v)
{
    char *end = NULL;
    double d = strtod(v, &end);
    if (end == v || *end != '\0')
        die("bad number for ", name);
    return d;
}

int main(int argc, char **argv)
{
    const char *data = NULL;
    const char *names[] = {"limit", "neighbours", "window", "alpha", "blend"};
    double values[5];
    int given[5] = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            data = argv[++i];
            continue;
        }
        int k = 0;
        for (; k < 5; k++) {
            if (strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i] + 2, names[k]) == 0 &&
                i + 1 < argc)
                break;
        }
        if (k == 5)
            die("unknown or incomplete argument ", argv[i]);
        values[k] = number_arg(argv[i], argv[i + 1]);
        given[k] = 1;
        i++;
    }
    const char *src = getenv("DP_SOURCE_DIR");
    if (src == NULL) {
        FILE *f = fopen("tests/bench/cmapss.c", "r");
        src = f != NULL ? "." : "..";
        if (f != NULL)
            fclose(f);
    }
    char dirbuf[1024], script[1100];
    if (data == NULL) {
        snprintf(dirbuf, sizeof dirbuf, "%s/../shared/data/cmapss", src);
        data = dirbuf;
    }
    snprintf(script, sizeof script, "%s/tests/bench/cmapss.lua", src);

    char *train = slurp(data, "train_FD001.txt");
    char *test = slurp(data, "test_FD001.txt");
    char *truth = slurp(data, "RUL_FD001.txt");

    dp_sandbox_opts_t o = {
        .name = "cmapss", .budget = UINT64_C(1) << 40, .memory = (size_t)512 << 20};
    dp_sandbox_t *sb = dp_sandbox_new(&o);
    lua_State *L = dp_sandbox_state(sb);
    char *err = NULL, *code = dp_source_read(script, NULL, &err);
    if (code == NULL)
        die("", err);
    if (dp_sandbox_load(sb, code, strlen(code), "@tests/bench/cmapss.lua", &err) != 0)
        die("", err);
    free(code);
    if (dp_sandbox_call(sb, 0, 1, &err, NULL) != DP_SB_OK)
        die("", err);
    lua_getfield(L, -1, "run");
    lua_pushstring(L, train);
    lua_pushstring(L, test);
    lua_createtable(L, 0, 5);
    for (int k = 0; k < 5; k++) {
        if (given[k]) {
            /* limit, neighbours and window are counts. */
            if (k <= 2)
                lua_pushinteger(L, (lua_Integer)values[k]);
            else
                lua_pushnumber(L, values[k]);
            lua_setfield(L, -2, names[k]);
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (dp_sandbox_call(sb, 3, 2, &err, NULL) != DP_SB_OK)
        die("", err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double fit_rmse = lua_tonumber(L, -1);
    lua_pop(L, 1);
    int npred = (int)luaL_len(L, -1);

    double se = 0, phm = 0;
    int n = 0;
    char *p = truth;
    for (int i = 1; i <= npred; i++) {
        char *end = NULL;
        double t = strtod(p, &end);
        if (end == p)
            die("RUL_FD001.txt has fewer values than test engines", NULL);
        p = end;
        lua_rawgeti(L, -1, i);
        double pred = lua_tonumber(L, -1);
        lua_pop(L, 1);
        double d = pred - t;
        se += d * d;
        phm += d < 0 ? exp(-d / 13.0) - 1 : exp(d / 10.0) - 1;
        n++;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("C-MAPSS FD001: %d test engines, fit and predict in %.2f s (health-index model "
           "training RMSE %.2f)\n",
           n, secs, fit_rmse);
    printf("RMSE %.2f  PHM08 score %.0f\n", n > 0 ? sqrt(se / n) : 0.0, phm);
    dp_sandbox_free(sb);
    free(train);
    free(test);
    free(truth);
    return n > 0 ? 0 : 1;
}
