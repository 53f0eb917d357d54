/* Modbus drivers: "modbus", a polling client (TCP or RTU, through
 * libmodbus), and "modbus_server", a Modbus TCP server on the loop that
 * exposes chosen tags. Both use the point syntax of codec.h.
 *
 * The parsed settings structs are public so tests and tools can read what a
 * plant file asked for; the host only needs the two vtables. */
#ifndef DP_MODBUS_H
#define DP_MODBUS_H

#include <stdbool.h>

#include "../driver.h"
#include "codec.h"

extern const dp_driver_t dp_modbus_driver;
extern const dp_driver_t dp_modbus_server_driver;

/* Parity of an RTU bus (index of the `parity` choices). */
typedef enum { DP_MB_PARITY_NONE, DP_MB_PARITY_EVEN, DP_MB_PARITY_ODD } dp_mb_parity_t;

/* Device settings of the client (dp_modbus_driver.device_settings). */
typedef struct {
    /* TCP: host and port; or `server`, a modbus_server device of this plant. */
    char *host;
    int64_t port;
    char *server;
    /* RTU: the serial device and its line settings. */
    char *device;
    int64_t baud;
    int parity; /* dp_mb_parity_t */
    int64_t data_bits;
    int64_t stop_bits;
    /* Both. */
    int64_t unit_id;
    dp_time_t timeout;
    int64_t retries;
    int64_t max_gap;
    int64_t max_registers;
    int64_t max_bits;
    dp_time_t reconnect_min;
    dp_time_t reconnect_max;
    int64_t stale_polls;
    bool multi_write;
} dp_mb_client_cfg_t;

/* Device settings of the server (dp_modbus_server_driver.device_settings). */
typedef struct {
    char *listen; /* "host:port" */
    bool fallback_port;
    int64_t unit_id; /* 0: answer every unit id */
    int64_t max_clients;
    dp_time_t idle_timeout; /* 0: never */
    char *origin;           /* command origin prefix; default "modbus" */
    struct {
        dp_mb_point_t *items;
        size_t n;
    } map;
} dp_mb_server_cfg_t;

/* ---- between the two drivers (loop thread) ------------------------------ */

/* The modbus_server device called `name` on the same host (plant), or NULL. */
dp_device_t *dp__mb_server_find(const dp_host_t *host, const char *name);
/* The TCP port the server listens on (0 before it started). */
int dp__mb_server_port(const dp_device_t *server);
/* Reads `count` registers or bits of `area` from `address` on unit `unit` as
 * a client would: 0, or an exception code. */
int dp__mb_server_read(dp_device_t *server, int unit, int area, int address, int count,
                       uint16_t *out);

/* A write request turned into commands: `done` runs (on the loop thread)
 * once every command has its outcome, with `verdict` 0 or the exception
 * code and `reason` the first refusal or failure; `async` is false when
 * that happened inside dp__mb_server_write() itself. */
typedef struct dp__mb_wbatch {
    int pending;
    int verdict;
    char reason[200];
    void (*done)(struct dp__mb_wbatch *b, bool async);
} dp__mb_wbatch_t;

/* Decodes a write request (FC05/06/15/16/22) against the server's map and
 * submits one command per entry it sets, with `origin`. Returns 0 (`done`
 * will run, maybe before this returns) or an exception code (it will not). */
int dp__mb_server_write(dp_device_t *server, const dp_mb_request_t *req, const char *origin,
                        dp__mb_wbatch_t *b);

#endif
