/* NAB (Numenta Anomaly Benchmark v1.1): a scorer implementing NAB's scoring
 * and a runner that streams every series through a doppel.detect detector.
 *
 *   bench_nab [--data DIR] [--detector FILE.lua] [--limit N] [--only SUBSTR]
 *   bench_nab --reference RESULTS_DIR [--data DIR]
 *
 * DIR is the NAB folder (data/, labels/combined_windows.json); default
 * $DP_SOURCE_DIR/../shared/data/nab or ../shared/data/nab. The detector file
 * is Lua run in a twin sandbox; it returns a function that makes a fresh
 * detector for each series (something with :update(value, t) -> [0, 1]).
 * Rows are fed one at a time, in order, with the sandbox's virtual clock set
 * to the row's time, so a detector can only use past rows. With --reference,
 * the per-row anomaly_score of published results (RESULTS_DIR/<category>/
 * <detector>_<series>.csv, e.g. the extracted numenta_results.tar.gz) is
 * scored instead. Prints the three profiles' normalised scores. */
#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/clock.h"
#include "runtime/common.h"
#include "runtime/sandbox.h"

typedef struct {
    char name[160]; /* category/file.csv */
    int nwin;
    int64_t win[16][2];
    size_t n;
    int64_t *ts;
    double *value, *score;
} series_t;

typedef struct {
    const char *name;
    double tp, fp, fn;
} profile_t;

static const profile_t profiles[] = {
    {"standard", 1.0, 0.11, 1.0},
    {"reward_low_FP_rate", 1.0, 0.22, 1.0},
    {"reward_low_FN_rate", 1.0, 0.11, 2.0},
};

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench_nab: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static char *slurp(const char *path)
{
    char *err = NULL;
    char *s = dp_source_read(path, NULL, &err);
    if (s == NULL)
        die("%s", err);
    return s;
}

/* "2014-04-10 07:15:00[.000000]" -> seconds since the epoch (UTC). */
static int64_t parse_time(const char *s)
{
    int y, mo, d, h, mi, se;
    if (sscanf(s, "%d-%d-%d %d:%d:%d", &y, &mo, &d, &h, &mi, &se) != 6)
        return INT64_MIN;
    /* Days from civil (Howard Hinnant's algorithm). */
    y -= mo <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    return days * 86400 + h * 3600 + mi * 60 + se;
}

/* Reads labels/combined_windows.json: {"cat/file.csv": [["t0", "t1"], ...], ...}. */
static int load_labels(const char *path, series_t **out)
{
    char *js = slurp(path);
    int cap = 64, n = 0, depth = 0, nstr = 0;
    series_t *ss = calloc((size_t)cap, sizeof *ss);
    char pending[2][64];
    for (char *p = js; *p; p++) {
        if (*p == '[' || *p == '{') {
            depth++;
            nstr = 0;
        } else if (*p == ']' || *p == '}') {
            depth--;
        } else if (*p == '"') {
            char *end = strchr(p + 1, '"');
            if (end == NULL)
                die("%s: unterminated string", path);
            size_t len = (size_t)(end - p - 1);
            if (depth == 1) {
                if (n == cap)
                    ss = realloc(ss, (size_t)(cap *= 2) * sizeof *ss);
                memset(&ss[n], 0, sizeof ss[n]);
                if (len >= sizeof ss[n].name)
                    die("%s: series name too long", path);
                memcpy(ss[n].name, p + 1, len);
                n++;
            } else if (depth == 3 && n > 0) {
                if (len >= sizeof pending[0])
                    die("%s: bad timestamp", path);
                memcpy(pending[nstr], p + 1, len);
                pending[nstr][len] = '\0';
                if (++nstr == 2) {
                    series_t *s = &ss[n - 1];
                    if (s->nwin == 16)
                        die("%s: too many windows", s->name);
                    s->win[s->nwin][0] = parse_time(pending[0]);
                    s->win[s->nwin][1] = parse_time(pending[1]);
                    s->nwin++;
                    nstr = 0;
                }
            }
            p = end;
        }
    }
    free(js);
    *out = ss;
    return n;
}

/* Reads a CSV with a header; column 0 the timestamp, `vcol` the value and
 * `scol` (or -1) the anomaly score. */
static void load_csv(series_t *s, const char *path, int vcol, int scol)
{
    char *text = slurp(path);
    size_t cap = 1024;
    s->n = 0;
    s->ts = malloc(cap * sizeof *s->ts);
    s->value = malloc(cap * sizeof *s->value);
    s->score = calloc(cap, sizeof *s->score);
    char *line = strchr(text, '\n');
    while (line != NULL && line[1] != '\0') {
        line++;
        char *next = strchr(line, '\n');
        if (next != NULL)
            *next = '\0';
        if (*line != '\0' && *line != '\r') {
            if (s->n == cap) {
                cap *= 2;
                s->ts = realloc(s->ts, cap * sizeof *s->ts);
                s->value = realloc(s->value, cap * sizeof *s->value);
                s->score = realloc(s->score, cap * sizeof *s->score);
            }
            int col = 0;
            char *field = line;
            s->ts[s->n] = parse_time(line);
            s->score[s->n] = 0;
            while (field != NULL) {
                if (col == vcol)
                    s->value[s->n] = strtod(field, NULL);
                if (col == scol)
                    s->score[s->n] = strtod(field, NULL);
                char *comma = strchr(field, ',');
                field = comma ? comma + 1 : NULL;
                col++;
            }
            if (s->ts[s->n] == INT64_MIN)
                die("%s: bad timestamp", path);
            s->n++;
        }
        line = next;
    }
    free(text);
}

/* NAB's scaled sigmoid. */
static double sigma(double x)
{
    if (x > 3.0)
        return -1.0;
    return 2.0 / (1.0 + exp(5.0 * x)) - 1.0;
}

typedef struct {
    double score;  /* the detector's anomaly score */
    double weight; /* what a detection here adds */
    int window;    /* global window index, or -1 outside windows */
    bool counted;  /* false in the probation period */
} row_t;

static int by_score_desc(const void *a, const void *b)
{
    double x = ((const row_t *)a)->score, y = ((const row_t *)b)->score;
    return (x < y) - (x > y);
}

/* Weights every row of every series for a profile (see NAB's sweeper). */
static row_t *weigh(series_t *ss, int ns, const profile_t *pr, size_t *nrows, int *nwindows)
{
    size_t total = 0;
    for (int i = 0; i < ns; i++)
        total += ss[i].n;
    row_t *rows = malloc(total * sizeof *rows);
    size_t r = 0;
    int wbase = 0;
    double max_tp = sigma(-1.0);
    for (int si = 0; si < ns; si++) {
        series_t *s = &ss[si];
        size_t probation = (size_t)floor(0.15 * (double)s->n);
        if (probation > 750)
            probation = 750;
        /* Window bounds as row indices. */
        long lo[16], hi[16];
        for (int w = 0; w < s->nwin; w++) {
            lo[w] = -1;
            hi[w] = -1;
            for (size_t i = 0; i < s->n; i++) {
                if (s->ts[i] >= s->win[w][0] && s->ts[i] <= s->win[w][1]) {
                    if (lo[w] < 0)
                        lo[w] = (long)i;
                    hi[w] = (long)i;
                }
            }
        }
        long prev_right = -1, prev_width = 0;
        int cur = -1;
        for (size_t i = 0; i < s->n; i++) {
            row_t *row = &rows[r++];
            row->score = s->score[i];
            row->counted = i >= probation;
            cur = -1;
            for (int w = 0; w < s->nwin; w++) {
                if (lo[w] >= 0 && (long)i >= lo[w] && (long)i <= hi[w])
                    cur = w;
            }
            if (cur >= 0) {
                double width = (double)(hi[cur] - lo[cur] + 1);
                double pos = -(double)(hi[cur] - (long)i + 1) / width;
                row->weight = sigma(pos) * pr->tp / max_tp;
                row->window = wbase + cur;
                if ((long)i == hi[cur]) {
                    prev_right = hi[cur];
                    prev_width = hi[cur] - lo[cur] + 1;
                }
            } else {
                row->window = -1;
                if (prev_right < 0) {
                    row->weight = -pr->fp;
                } else {
                    double past = fabs((double)(prev_right - (long)i)) / (double)(prev_width - 1);
                    row->weight = sigma(past) * pr->fp;
                }
            }
        }
        wbase += s->nwin;
    }
    *nrows = total;
    *nwindows = wbase;
    return rows;
}

/* Sweeps every distinct score as the threshold; returns the best total and
 * its threshold. */
static double sweep(row_t *rows, size_t n, int nwindows, const profile_t *pr, double *threshold)
{
    qsort(rows, n, sizeof *rows, by_score_desc);
    double *best_in = malloc((size_t)(nwindows > 0 ? nwindows : 1) * sizeof *best_in);
    bool *hit = calloc((size_t)(nwindows > 0 ? nwindows : 1), sizeof *hit);
    double total = -pr->fn * nwindows;
    double best = total;
    *threshold = INFINITY;
    for (size_t i = 0; i < n;) {
        double t = rows[i].score;
        for (; i < n && rows[i].score == t; i++) {
            const row_t *row = &rows[i];
            if (!row->counted)
                continue;
            if (row->window < 0) {
                total += row->weight;
            } else if (!hit[row->window]) {
                hit[row->window] = true;
                best_in[row->window] = row->weight;
                total += pr->fn + row->weight;
            } else if (row->weight > best_in[row->window]) {
                total += row->weight - best_in[row->window];
                best_in[row->window] = row->weight;
            }
        }
        if (total > best) {
            best = total;
            *threshold = t;
        }
    }
    free(best_in);
    free(hit);
    return best;
}

static void report(series_t *ss, int ns, double seconds)
{
    int nwin = 0;
    size_t nrows = 0;
    for (int i = 0; i < ns; i++) {
        nwin += ss[i].nwin;
        nrows += ss[i].n;
    }
    printf("series %d, rows %zu, windows %d", ns, nrows, nwin);
    if (seconds > 0)
        printf(", detector time %.2f s (%.0f rows/s)", seconds, (double)nrows / seconds);
    printf("\n");
    for (size_t p = 0; p < sizeof profiles / sizeof profiles[0]; p++) {
        const profile_t *pr = &profiles[p];
        size_t n = 0;
        int nw = 0;
        row_t *rows = weigh(ss, ns, pr, &n, &nw);
        double thr = 0;
        double raw = sweep(rows, n, nw, pr, &thr);
        double perfect = pr->tp * nw, null = -pr->fn * nw;
        double norm = nw > 0 ? 100.0 * (raw - null) / (perfect - null) : 0;
        printf("%-20s score %6.2f  (raw %.4f, threshold %.6f)\n", pr->name, norm, raw, thr);
        free(rows);
    }
}

/* Runs the detector factory over every row of a series. */
static void run_detector(dp_sandbox_t *sb, dp_clock_t *clock, int factory, series_t *s)
{
    lua_State *L = dp_sandbox_state(sb);
    char *err = NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, factory);
    lua_pushstring(L, s->name);
    if (dp_sandbox_call(sb, 1, 1, &err, NULL) != DP_SB_OK)
        die("detector factory failed: %s", err);
    int det = lua_gettop(L);
    lua_getfield(L, det, "update");
    if (!lua_isfunction(L, -1))
        die("%s", "the factory must return a detector with an update method");
    int update = lua_gettop(L);
    int handler = dp_sandbox_push_handler(sb);
    for (size_t i = 0; i < s->n; i++) {
        dp_clock_set(clock, s->ts[i] * DP_US_PER_SEC);
        lua_pushvalue(L, update);
        lua_pushvalue(L, det);
        lua_pushnumber(L, s->value[i]);
        lua_pushnumber(L, (double)s->ts[i]);
        if (dp_sandbox_call_h(sb, handler, 3, 1, &err, NULL) != DP_SB_OK)
            die("detector failed: %s", err);
        double v = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (!(v >= 0 && v <= 1))
            die("%s: detector score outside [0, 1]", s->name);
        s->score[i] = v;
    }
    lua_settop(L, det - 1);
}

int main(int argc, char **argv)
{
    const char *data = NULL, *detector = NULL, *reference = NULL, *only = NULL;
    int limit = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--detector") == 0 && i + 1 < argc)
            detector = argv[++i];
        else if (strcmp(argv[i], "--reference") == 0 && i + 1 < argc)
            reference = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
            limit = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else
            die("unknown or incomplete argument \"%s\"", argv[i]);
    }
    char buf[1024], path[1400], detector_path[1400];
    const char *src = getenv("DP_SOURCE_DIR");
    if (data == NULL) {
        snprintf(buf, sizeof buf, "%s/../shared/data/nab", src ? src : ".");
        data = buf;
    }
    snprintf(path, sizeof path, "%s/labels/combined_windows.json", data);
    series_t *ss = NULL;
    int ns = load_labels(path, &ss);
    /* Keep the selected series. */
    int kept = 0;
    for (int i = 0; i < ns; i++) {
        if (only != NULL && strstr(ss[i].name, only) == NULL)
            continue;
        if (limit > 0 && kept == limit)
            break;
        ss[kept++] = ss[i];
    }
    ns = kept;
    if (ns == 0)
        die("%s", "no series selected");

    double seconds = 0;
    if (reference != NULL) {
        for (int i = 0; i < ns; i++) {
            const char *slash = strchr(ss[i].name, '/');
            snprintf(path, sizeof path, "%s/%.*s/numenta_%s", reference, (int)(slash - ss[i].name),
                     ss[i].name, slash + 1);
            load_csv(&ss[i], path, 1, 2);
        }
        printf("NAB scorer on the published results in %s\n", reference);
    } else {
        if (detector == NULL) {
            snprintf(detector_path, sizeof detector_path, "%s/tests/bench/nab_detector.lua",
                     src ? src : ".");
            detector = detector_path;
        }
        dp_clock_t *clock = dp_clock_new_virtual(0);
        dp_sandbox_opts_t o = {.name = "nab", .clock = clock, .memory = (size_t)256 << 20};
        dp_sandbox_t *sb = dp_sandbox_new(&o);
        char *err = NULL, *code = slurp(detector);
        if (dp_sandbox_load(sb, code, strlen(code), detector, &err) != 0)
            die("%s", err);
        free(code);
        if (dp_sandbox_call(sb, 0, 1, &err, NULL) != DP_SB_OK)
            die("%s", err);
        lua_State *L = dp_sandbox_state(sb);
        if (!lua_isfunction(L, -1))
            die("%s: must return a function that makes a detector", detector);
        int factory = luaL_ref(L, LUA_REGISTRYINDEX);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < ns; i++) {
            snprintf(path, sizeof path, "%s/data/%s", data, ss[i].name);
            load_csv(&ss[i], path, 1, -1);
            run_detector(sb, clock, factory, &ss[i]);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        printf("NAB with the detector in %s\n", detector);
        dp_sandbox_free(sb);
        dp_clock_free(clock);
    }
    report(ss, ns, seconds);
    for (int i = 0; i < ns; i++) {
        free(ss[i].ts);
        free(ss[i].value);
        free(ss[i].score);
    }
    free(ss);
    return 0;
}
