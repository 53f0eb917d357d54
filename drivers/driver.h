/* The driver interface: every driver (sim, modbus, mqtt, ...) is one static
 * const vtable registered in drivers/registry.c.
 *
 * Life of a device: open() validates the parsed device settings and allocates
 * (no I/O), add_point() binds a store tag to an address on the device, start()
 * begins I/O, stop() ends it (no more samples after it returns), close()
 * frees. Drivers on the loop thread write to the store directly; drivers with
 * worker threads push through host->ingest. */
#ifndef DP_DRIVER_H
#define DP_DRIVER_H

#include <uv.h>

#include "../runtime/clock.h"
#include "../runtime/ingest.h"
#include "../runtime/settings.h"
#include "../runtime/store.h"

typedef struct dp_host {
    uv_loop_t *loop; /* NULL in virtual time */
    dp_clock_t *clock;
    dp_store_t *store;
    dp_ingest_t *ingest;    /* NULL in virtual time */
    struct dp_guard *guard; /* commands: writers report outcomes with dp_guard_complete() */
    struct dp_plant *plant; /* the plant (plant.h), for drivers that publish it */
} dp_host_t;

typedef struct dp_driver dp_driver_t;

/* One statistic of a device (requests, errors, last error, latency, ...),
 * for the REPL, the HTTP API and /metrics. `text` is NULL for numbers. */
typedef struct {
    const char *name;
    double value;
    const char *text;
} dp_stat_t;

typedef struct dp_device {
    char *name;
    const dp_driver_t *driver;
    dp_host_t *host;
    void *cfg;  /* parsed device settings (driver->device_size bytes) */
    void *impl; /* the driver's own state */
} dp_device_t;

struct dp_driver {
    const char *name;
    const char *summary;
    const dp_setting_t *device_settings; /* fields of device "x" { ... } */
    size_t device_size;
    const dp_setting_t *point_settings; /* driver fields of a tag bound to a device */
    size_t point_size;
    int (*open)(dp_device_t *dev, char **err);
    /* `point` is the parsed point settings; the driver keeps the pointer (it
     * is freed by the host after close()). */
    int (*add_point)(dp_device_t *dev, int tag, void *point, char **err);
    /* Optional: called once every twin has loaded (all tags exist), before
     * start() and in `doppel check` too; resolves tag names the device's
     * settings refer to. */
    int (*bind)(dp_device_t *dev, char **err);
    int (*start)(dp_device_t *dev, char **err);
    void (*stop)(dp_device_t *dev);
    void (*close)(dp_device_t *dev);
    /* Optional: starts writing `v` to the device point bound to `tag`, for
     * command `id` (already checked by the guard), and reports the outcome
     * with dp_guard_complete(dev->host->guard, id, ...) from any thread.
     * An error return fails the command at once with *err as the reason. */
    int (*write)(dp_device_t *dev, uint64_t id, int tag, const dp_value_t *v, char **err);
    /* Optional, loop thread: fills up to `max` statistics and returns how
     * many; strings stay valid until the next call. */
    size_t (*stats)(dp_device_t *dev, dp_stat_t *out, size_t max);
};

/* NULL if no driver has that name. */
const dp_driver_t *dp_driver_find(const char *name);
/* NULL-terminated list of all drivers. */
const dp_driver_t *const *dp_drivers(void);

#endif
