/* An MQTT client connection driven by the libuv loop: libmosquitto's socket
 * is watched with uv_poll and its housekeeping runs from a uv_timer, so no
 * extra thread is started (no mosquitto_loop_start). Everything, callbacks
 * included, happens on the loop thread.
 *
 * The client connects, and after any failure or loss reconnects with an
 * exponential backoff between `backoff_min` and `backoff_max`. Each attempt
 * uses a fresh libmosquitto instance, so nothing queued on a lost connection
 * is sent again behind the owner's back: after `disconnected` the owner
 * decides what to resend. Subscriptions are renewed on every connection. */
#ifndef DP_MQTT_CLIENT_H
#define DP_MQTT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../../runtime/common.h"

typedef struct dp_mqtt_client dp_mqtt_client_t;

typedef struct {
    const char *name; /* for log lines (the device name) */
    const char *host;
    int port;
    const char *client_id;
    int protocol;  /* 4: MQTT 3.1.1, 5: MQTT 5 */
    int keepalive; /* seconds */
    bool clean_session;
    const char *username; /* NULL: none */
    const char *password;
    bool tls;
    const char *ca_file;              /* TLS: CA certificate(s) to verify the broker */
    const char *cert_file, *key_file; /* TLS: client certificate (optional) */
    bool tls_insecure;                /* do not check the broker's host name */
    dp_time_t backoff_min, backoff_max;
    /* Last will (NULL topic: none). */
    const char *will_topic;
    const void *will_payload;
    size_t will_len;
    int will_qos;
    bool will_retain;
} dp_mqtt_opts_t;

typedef struct {
    void (*connected)(dp_mqtt_client_t *c, void *ud);
    void (*disconnected)(dp_mqtt_client_t *c, const char *why, void *ud);
    /* `response_topic` and `correlation` are the MQTT 5 properties of the
     * message (NULL when absent), valid during the call. */
    void (*message)(dp_mqtt_client_t *c, const char *topic, const void *payload, size_t len,
                    const char *response_topic, const void *correlation, size_t correlation_len,
                    void *ud);
    /* A QoS 1 message was acknowledged by the broker (QoS 0: handed to the socket). */
    void (*published)(dp_mqtt_client_t *c, int mid, void *ud);
} dp_mqtt_cbs_t;

/* Checks the options and allocates; no I/O. Strings are copied. NULL with *err. */
dp_mqtt_client_t *dp_mqtt_client_new(uv_loop_t *loop, const dp_mqtt_opts_t *o,
                                     const dp_mqtt_cbs_t *cbs, void *ud, char **err);
/* Starts connecting (and reconnecting from then on). */
void dp_mqtt_client_start(dp_mqtt_client_t *c);
/* Flushes what is queued and waits for its acknowledgements (at most
 * `flush_ms` in all), disconnects cleanly (no last will) and closes handles;
 * the memory is freed in their close callbacks (run the loop once more). No
 * callback is called from here on. Accepts NULL. Not from inside one of the
 * client's callbacks. */
void dp_mqtt_client_free(dp_mqtt_client_t *c, int flush_ms);

bool dp_mqtt_client_connected(const dp_mqtt_client_t *c);
/* Publishes; *mid (may be NULL) gets the message id matched by `published`.
 * DP_ESTATE when not connected, DP_EIO when libmosquitto refuses. */
int dp_mqtt_client_publish(dp_mqtt_client_t *c, const char *topic, const void *payload, size_t len,
                           int qos, bool retain, int *mid);
/* Like dp_mqtt_client_publish (QoS 1, not retained), adding the MQTT 5
 * correlation data of a request to its reply (ignored with MQTT 3.1.1). */
int dp_mqtt_client_publish_reply(dp_mqtt_client_t *c, const char *topic, const void *payload,
                                 size_t len, const void *correlation, size_t correlation_len);
/* Subscribes now (when connected) and on every later connection. */
int dp_mqtt_client_subscribe(dp_mqtt_client_t *c, const char *topic, int qos);

typedef struct {
    uint64_t connects, disconnects, failures;
    uint64_t sent, acked, received;
    uint64_t refused;       /* MQTT 5: acknowledged with an error reason code */
    const char *last_error; /* "" when none; valid until the next call into the client */
} dp_mqtt_client_stats_t;
void dp_mqtt_client_get_stats(const dp_mqtt_client_t *c, dp_mqtt_client_stats_t *out);

#endif
