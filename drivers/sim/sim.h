/* The sim driver: simulated devices, so the demo plant and the tests need no
 * hardware.
 *
 * Each point bound to a sim device produces a signal sampled every `every`:
 * a wave (const, sine, square, triangle, sawtooth or random walk) around a
 * mean that may change in steps and drift, plus Gaussian noise, optionally
 * clamped, and disturbed by scheduled faults (stuck, bad, spike, dropout).
 * Time is measured from the device's start(), and the noise comes from a
 * per-point generator seeded by the device seed and the tag name, so a run
 * is reproducible sample for sample in real and in virtual time.
 *
 * The parsed settings structs are public so that tests and tools can inspect
 * what a plant file asked for; the host only needs dp_sim_driver. */
#ifndef DP_SIM_H
#define DP_SIM_H

#include <stdbool.h>

#include "../driver.h"

extern const dp_driver_t dp_sim_driver;

/* Device settings (dp_sim_driver.device_settings). */
typedef struct {
    int64_t seed;
} dp_sim_device_t;

/* Indices of the `wave`, `type` and fault `kind` choices. */
typedef enum {
    DP_SIM_CONST,
    DP_SIM_SINE,
    DP_SIM_SQUARE,
    DP_SIM_TRIANGLE,
    DP_SIM_SAWTOOTH,
    DP_SIM_RANDOM_WALK,
} dp_sim_wave_t;

typedef enum { DP_SIM_NUMBER, DP_SIM_INTEGER, DP_SIM_BOOL } dp_sim_type_t;

typedef enum { DP_SIM_STUCK, DP_SIM_BAD, DP_SIM_SPIKE, DP_SIM_DROPOUT } dp_sim_fault_kind_t;

/* From `at` (relative to the device start) the mean becomes `value`. */
typedef struct {
    dp_time_t at;
    double value;
} dp_sim_step_t;

/* Active for at <= t < at + duration. `value` is used by spike only. */
typedef struct {
    dp_time_t at;
    dp_time_t duration;
    int kind; /* dp_sim_fault_kind_t */
    double value;
} dp_sim_fault_t;

typedef struct {
    dp_sim_step_t *items; /* sorted by strictly increasing `at` */
    size_t n;
} dp_sim_steps_t;

typedef struct {
    dp_sim_fault_t *items;
    size_t n;
} dp_sim_faults_t;

/* An optional number (min, max). */
typedef struct {
    bool set;
    double value;
} dp_sim_bound_t;

/* Point settings (dp_sim_driver.point_settings). */
typedef struct {
    int wave; /* dp_sim_wave_t */
    double mean;
    double amplitude;
    dp_time_t period;
    dp_time_t phase;
    double noise;
    double drift; /* units per hour */
    dp_time_t every;
    dp_sim_bound_t min;
    dp_sim_bound_t max;
    int type; /* dp_sim_type_t */
    dp_sim_steps_t steps;
    dp_sim_faults_t faults;
} dp_sim_point_t;

/* Adds a fault to the point bound to `tag`, active from now for `duration`
 * (> 0). `kind` is "stuck", "bad", "spike" or "dropout"; `value` is what a
 * spike adds. Returns 0, DP_EINVAL (not a sim device, unknown kind, duration
 * <= 0), DP_ENOENT (no point for that tag) or DP_ESTATE (not started). */
int dp_sim_inject(dp_device_t *dev, int tag, const char *kind, double value, dp_time_t duration);

/* Samples written to the store by the device since it was opened. */
uint64_t dp_sim_samples(const dp_device_t *dev);

#endif
