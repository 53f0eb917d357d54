/* bench_replay: how fast `doppel replay` runs the demo pump station's twins
 * over a recording.
 *
 * A day of the station's ten inputs at 1 s (864,000 samples, wide CSV, the
 * same signals as examples/pump-station/make-recording.awk) is written to a
 * temporary file and replayed three ways in the same run:
 *   parse:    the recording read sample by sample, nothing else (the floor);
 *   plumbing: the same tags in a plant whose twins have no rules (store,
 *             virtual time and delivery, no Lua handler calls);
 *   demo:     the bundled demo plant (two pump twins, the station twin), its
 *             output (derived tag changes, alarms, events) written as CSV to
 *             /dev/null, exactly as `doppel replay` does.
 * Printed: samples/s, ns/sample and the real-time factor of each, the ratio
 * demo/parse, and peak RSS. Exits 1 only if the replay is functionally wrong
 * (sample count, the two vibration alarm events of the day). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "runtime/cmd_replay.h"
#include "runtime/log.h"
#include "runtime/recording.h"

#define ROWS    86400
#define COLUMNS 10
#define AIM     1000000.0 /* samples/s through the demo twins */

static void write_recording(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputs("timestamp", f);
    static const char *names[] = {"flow", "head", "power", "vibration", "running"};
    for (int p = 1; p <= 2; p++)
        for (int k = 0; k < 5; k++)
            fprintf(f, ",P10%d.%s", p, names[k]);
    fputc('\n', f);
    const double pi = 3.141592653589793;
    for (int i = 0; i < ROWS; i++) {
        double a = 2 * pi * i / 21600, b = a + 2 * pi / 6;
        double v1 =
            2.4 + 1.2 * i / 86400 + 0.1 * sin(i / 31.0) + ((i >= 50400 && i < 52800) ? 6 : 0);
        double v2 = 2.5 + 0.1 * sin(i / 97.0);
        fprintf(f, "%d,%.3f,%.3f,%.3f,%.3f,true,%.3f,%.3f,%.3f,%.3f,%s\n", 1767225600 + i,
                120 + 15 * sin(a), 46 - 4 * sin(a), 20.5 + 1.6 * sin(a), v1, 110 + 15 * sin(b),
                46 - 4 * sin(b), 19 + 1.6 * sin(b), v2, (i / 14400) % 2 == 0 ? "true" : "false");
    }
    fclose(f);
}

/* CPU time of this process (user + system), in seconds: on a machine shared
 * with other work it says more than the wall clock. */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void row(const char *what, uint64_t samples, double secs, double cpu, double span_s)
{
    printf("%-9s %9llu samples in %6.3f s: %10.0f samples/s %7.0f ns/sample %9.0fx real time"
           " | cpu %6.3f s: %10.0f samples/cpu-s\n",
           what, (unsigned long long)samples, secs, samples / secs, secs * 1e9 / samples,
           span_s / secs, cpu, samples / cpu);
}

static double replay(const char *plant, const char *input, dp_replay_stats_t *st)
{
    dp_replay_opts_t o = {.plant = plant, .input = input, .out = "/dev/null"};
    char *err = NULL;
    if (dp_replay_run(&o, st, &err) < 0) {
        fprintf(stderr, "bench_replay: %s: %s\n", plant, err);
        exit(1);
    }
    return st->wall_s;
}

int main(void)
{
    char dir[] = "/tmp/doppel-bench-replay-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char input[256], plant[256], script[256];
    snprintf(input, sizeof input, "%s/day.csv", dir);
    snprintf(plant, sizeof plant, "%s/plant.lua", dir);
    snprintf(script, sizeof script, "%s/none.lua", dir);
    write_recording(input);
    FILE *f = fopen(plant, "w");
    fputs("plant { name = 'plumbing' }\n"
          "for _, p in ipairs { 'P101', 'P102' } do\n"
          "  twin (p) { script = 'none.lua', tags = { flow = {}, head = {}, power = {},\n"
          "             vibration = {}, running = {} } }\n"
          "end\n",
          f);
    fclose(f);
    f = fopen(script, "w");
    fputs("-- no rules: the plumbing baseline\n", f);
    fclose(f);
    dp_log_set_level(DP_LOG_ERROR);
    const double span = (ROWS - 1);
    int status = 0;

    /* parse */
    char *err = NULL;
    double c0 = cpu_now();
    uint64_t t0 = uv_hrtime();
    dp_recording_t *r = dp_recording_open(input, &err);
    dp_rec_sample_t s;
    uint64_t n = 0;
    while (dp_recording_next(r, &s, &err) > 0)
        n++;
    double parse_s = (double)(uv_hrtime() - t0) / 1e9;
    dp_recording_free(r);
    double parse_cpu = cpu_now() - c0;

    dp_replay_stats_t plumbing, demo;
    c0 = cpu_now();
    double plumbing_s = replay(plant, input, &plumbing);
    double plumbing_cpu = cpu_now() - c0;
    c0 = cpu_now();
    double demo_s = replay("embed:examples/pump-station/plant.lua", input, &demo);
    double demo_cpu = cpu_now() - c0;

    printf("bench_replay: a day of the pump station's 10 inputs at 1 s (%d rows, wide CSV)\n",
           ROWS);
    row("parse", n, parse_s, parse_cpu, span);
    row("plumbing", plumbing.samples, plumbing_s, plumbing_cpu, span);
    row("demo", demo.samples, demo_s, demo_cpu, span);
    printf("demo: %llu derived tag changes, %llu alarm events written; %lld timer events\n",
           (unsigned long long)demo.tag_changes, (unsigned long long)demo.alarms,
           (long long)demo.timer_events);
    printf("ratio demo/parse: %.2f   demo/plumbing: %.2f (cpu: %.2f, %.2f)   aim: >= %.0f "
           "samples/s through the demo twins (%s)\n",
           parse_s / demo_s, plumbing_s / demo_s, parse_cpu / demo_cpu, plumbing_cpu / demo_cpu,
           AIM, demo.samples / demo_s >= AIM ? "met" : "not met");
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS: %.1f MiB\n", ru.ru_maxrss / 1024.0);

    if (n != (uint64_t)ROWS * COLUMNS || demo.samples != n || plumbing.samples != n) {
        fprintf(stderr, "bench_replay: wrong sample counts (%llu, %llu, %llu)\n",
                (unsigned long long)n, (unsigned long long)plumbing.samples,
                (unsigned long long)demo.samples);
        status = 1;
    }
    if (demo.alarms != 2) {
        fprintf(stderr,
                "bench_replay: expected 2 alarm events (P101 at 14:00, cleared), got %llu\n",
                (unsigned long long)demo.alarms);
        status = 1;
    }
    unlink(input);
    unlink(plant);
    unlink(script);
    rmdir(dir);
    return status;
}
