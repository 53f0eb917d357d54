#include "client.h"

#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/log.h"

typedef struct {
    char *topic;
    int qos;
} sub_t;

struct dp_mqtt_client {
    uv_loop_t *loop;
    dp_mqtt_opts_t o; /* strings owned */
    void *will_payload;
    dp_mqtt_cbs_t cbs;
    void *ud;
    struct mosquitto *mosq;
    uv_poll_t *poll; /* one per connection; freed in its close callback */
    int poll_events;
    uv_timer_t misc, retry;
    int open_handles;
    bool started, closing, connected;
    bool drop_pending;
    char drop_why[200];
    int unacked;        /* messages of this connection not yet acknowledged (QoS 0: not written) */
    dp_time_t backoff;  /* next delay */
    uint64_t attempt_t; /* uv_now at the start of the current attempt (ms) */
    uint64_t connected_t; /* uv_now at the CONNACK of the current connection (ms) */
    sub_t *subs;
    size_t nsubs;
    dp_mqtt_client_stats_t st;
    char last_error[200];
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
    mosquitto_lib_init();
}

static char *dup_or_null(const char *s)
{
    return s ? dp_xstrdup(s) : NULL;
}

dp_mqtt_client_t *dp_mqtt_client_new(uv_loop_t *loop, const dp_mqtt_opts_t *o,
                                     const dp_mqtt_cbs_t *cbs, void *ud, char **err)
{
    pthread_once(&lib_once, lib_init);
    if (o->host == NULL || o->host[0] == '\0') {
        dp_fail(err, DP_EINVAL, "host: empty");
        return NULL;
    }
    if (o->port <= 0 || o->port > 65535) {
        dp_fail(err, DP_EINVAL, "port: %d is not a TCP port", o->port);
        return NULL;
    }
    dp_mqtt_client_t *c = dp_xcalloc(1, sizeof *c);
    c->loop = loop;
    c->o = *o;
    c->o.name = dp_xstrdup(o->name ? o->name : "mqtt");
    c->o.host = dp_xstrdup(o->host);
    c->o.client_id = dup_or_null(o->client_id);
    c->o.username = dup_or_null(o->username);
    c->o.password = dup_or_null(o->password);
    c->o.ca_file = dup_or_null(o->ca_file);
    c->o.cert_file = dup_or_null(o->cert_file);
    c->o.key_file = dup_or_null(o->key_file);
    c->o.will_topic = dup_or_null(o->will_topic);
    if (o->will_topic != NULL && o->will_len > 0) {
        c->will_payload = dp_xmalloc(o->will_len);
        memcpy(c->will_payload, o->will_payload, o->will_len);
    }
    c->o.will_payload = c->will_payload;
    if (c->o.backoff_min <= 0)
        c->o.backoff_min = 500 * DP_US_PER_MS;
    if (c->o.backoff_max < c->o.backoff_min)
        c->o.backoff_max = c->o.backoff_min;
    c->backoff = c->o.backoff_min;
    if (cbs != NULL)
        c->cbs = *cbs;
    c->ud = ud;
    c->st.last_error = c->last_error;
    uv_timer_init(loop, &c->misc);
    uv_timer_init(loop, &c->retry);
    c->misc.data = c->retry.data = c;
    c->open_handles = 2;
    return c;
}

static void set_error(dp_mqtt_client_t *c, const char *why)
{
    snprintf(c->last_error, sizeof c->last_error, "%s", why);
}

static const char *mosq_error(int rc)
{
    return rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
}

/* ---- Connection --------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);
static void connect_now(dp_mqtt_client_t *c);

static void free_poll(uv_handle_t *h)
{
    free(h);
}

static void update_poll(dp_mqtt_client_t *c)
{
    if (c->poll == NULL || c->mosq == NULL)
        return;
    int ev = UV_READABLE | (mosquitto_want_write(c->mosq) ? UV_WRITABLE : 0);
    if (ev != c->poll_events) {
        uv_poll_start(c->poll, ev, on_poll);
        c->poll_events = ev;
    }
}

static void on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}

/* How long (ms) a connection must last for the backoff to start again from
 * reconnect_min when it is lost: 10 s, or reconnect_max if that is shorter. */
static uint64_t stable_ms(const dp_mqtt_client_t *c)
{
    dp_time_t t = c->o.backoff_max < 10 * DP_US_PER_SEC ? c->o.backoff_max : 10 * DP_US_PER_SEC;
    return (uint64_t)(t / DP_US_PER_MS);
}

/* Tears the connection down (outside libmosquitto's callbacks) and, unless
 * closing, schedules the next attempt. */
static void drop(dp_mqtt_client_t *c, const char *why)
{
    bool was = c->connected;
    if (c->poll != NULL) {
        uv_close((uv_handle_t *)c->poll, free_poll);
        c->poll = NULL;
    }
    if (c->mosq != NULL) {
        mosquitto_destroy(c->mosq);
        c->mosq = NULL;
    }
    c->connected = false;
    c->drop_pending = false;
    c->unacked = 0;
    if (c->closing)
        return;
    set_error(c, why);
    if (was) {
        c->st.disconnects++;
        /* The backoff starts again from the minimum only after a connection
         * that lasted: a broker that accepts and then closes at once (most
         * often because another client connected with the same client id,
         * and the broker keeps one session per id) would otherwise be
         * reconnected to every reconnect_min, forever, each new connection
         * closing the other client's. */
        uint64_t up = uv_now(c->loop) - c->connected_t;
        if (up >= stable_ms(c)) {
            c->backoff = c->o.backoff_min;
            dp_log_warn(NULL, "mqtt %s: connection to %s:%d lost: %s", c->o.name, c->o.host,
                        c->o.port, why);
        } else {
            /* With a random client id (none set), no other client has it. */
            const char *id = c->o.client_id;
            dp_log_warn(NULL,
                        "mqtt %s: connection to %s:%d lost %llu ms after connecting: %s%s%s%s; "
                        "retrying, backing off",
                        c->o.name, c->o.host, c->o.port, (unsigned long long)up, why,
                        id != NULL ? " (does another client use client id \"" : "",
                        id != NULL ? id : "",
                        id != NULL ? "\"? the broker closes the older connection)" : "");
        }
    } else {
        c->st.failures++;
        /* Repeated failures are logged once per backoff level to keep logs readable. */
        if (c->backoff <= c->o.backoff_min || c->backoff < c->o.backoff_max)
            dp_log_warn(NULL, "mqtt %s: cannot connect to %s:%d: %s", c->o.name, c->o.host,
                        c->o.port, why);
    }
    uint64_t ms = (uint64_t)(c->backoff / DP_US_PER_MS);
    uv_timer_start(&c->retry, on_retry, ms ? ms : 1, 0);
    c->backoff *= 2;
    if (c->backoff > c->o.backoff_max)
        c->backoff = c->o.backoff_max;
    if (was && c->cbs.disconnected != NULL)
        c->cbs.disconnected(c, why, c->ud);
}

static void after_io(dp_mqtt_client_t *c)
{
    if (c->drop_pending)
        drop(c, c->drop_why);
    else
        update_poll(c);
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    (void)m;
    (void)flags;
    (void)props;
    dp_mqtt_client_t *c = obj;
    if (rc != 0) {
        snprintf(c->drop_why, sizeof c->drop_why, "broker refused the connection: %s",
                 c->o.protocol == 5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        c->drop_pending = true;
        return;
    }
    c->connected = true;
    c->connected_t = uv_now(c->loop);
    c->st.connects++;
    dp_log_info(NULL, "mqtt %s: connected to %s:%d (MQTT %s%s)", c->o.name, c->o.host, c->o.port,
                c->o.protocol == 5 ? "5" : "3.1.1", c->o.tls ? ", TLS" : "");
    for (size_t i = 0; i < c->nsubs; i++)
        mosquitto_subscribe(c->mosq, NULL, c->subs[i].topic, c->subs[i].qos);
    if (c->cbs.connected != NULL)
        c->cbs.connected(c, c->ud);
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc, const mosquitto_property *props)
{
    (void)m;
    (void)props;
    dp_mqtt_client_t *c = obj;
    if (c->drop_pending)
        return;
    snprintf(c->drop_why, sizeof c->drop_why, "%s",
             rc == 0                    ? "disconnected"
             : rc == MOSQ_ERR_KEEPALIVE ? "keep-alive timeout"
                                        : mosq_error(rc));
    c->drop_pending = true;
}

static void on_publish(struct mosquitto *m, void *obj, int mid, int reason,
                       const mosquitto_property *props)
{
    (void)m;
    (void)props;
    dp_mqtt_client_t *c = obj;
    c->st.acked++;
    if (c->unacked > 0)
        c->unacked--;
    /* MQTT 5 brokers may refuse a message in its PUBACK (not authorised,
     * quota, ...): it is acknowledged all the same, so say so. */
    if (reason >= 0x80 && c->o.protocol == 5) {
        c->st.refused++;
        dp_log_warn(NULL, "mqtt %s: the broker refused a message: %s", c->o.name,
                    mosquitto_reason_string(reason));
    }
    if (c->cbs.published != NULL && !c->closing)
        c->cbs.published(c, mid, c->ud);
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)m;
    dp_mqtt_client_t *c = obj;
    c->st.received++;
    if (c->cbs.message == NULL || c->closing)
        return;
    char *resp = NULL;
    void *corr = NULL;
    uint16_t corr_len = 0;
    if (props != NULL) {
        mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &resp, false);
        mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    }
    c->cbs.message(c, msg->topic, msg->payload, (size_t)msg->payloadlen, resp, corr, corr_len,
                   c->ud);
    free(resp);
    free(corr);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    dp_mqtt_client_t *c = h->data;
    if (c->mosq == NULL)
        return;
    if (status < 0) {
        drop(c, uv_strerror(status));
        return;
    }
    int rc = MOSQ_ERR_SUCCESS;
    if (events & UV_READABLE) {
        /* Read until the socket (or TLS) has nothing more, bounded so that a
         * busy broker cannot starve the loop. */
        for (int i = 0; i < 256 && rc == MOSQ_ERR_SUCCESS && !c->drop_pending; i++) {
            errno = 0;
            rc = mosquitto_loop_read(c->mosq, 1);
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
        }
    }
    if (rc == MOSQ_ERR_SUCCESS && !c->drop_pending && (events & UV_WRITABLE))
        rc = mosquitto_loop_write(c->mosq, 1);
    if (rc != MOSQ_ERR_SUCCESS && !c->drop_pending) {
        snprintf(c->drop_why, sizeof c->drop_why, "%s",
                 rc == MOSQ_ERR_CONN_LOST ? "connection lost" : mosq_error(rc));
        c->drop_pending = true;
    }
    after_io(c);
}

static void on_misc(uv_timer_t *t)
{
    dp_mqtt_client_t *c = t->data;
    if (c->mosq == NULL)
        return;
    if (!c->connected && uv_now(c->loop) - c->attempt_t > 10000) {
        drop(c, "no answer from the broker within 10 s");
        return;
    }
    int rc = mosquitto_loop_misc(c->mosq);
    if (rc != MOSQ_ERR_SUCCESS && !c->drop_pending) {
        snprintf(c->drop_why, sizeof c->drop_why, "%s", mosq_error(rc));
        c->drop_pending = true;
    }
    after_io(c);
}

static void connect_now(dp_mqtt_client_t *c)
{
    if (c->closing || c->mosq != NULL)
        return;
    char why[256];
    c->attempt_t = uv_now(c->loop);
    struct mosquitto *m = mosquitto_new(c->o.client_id, c->o.clean_session || !c->o.client_id, c);
    if (m == NULL) {
        drop(c, "mosquitto_new failed");
        return;
    }
    c->mosq = m;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION,
                         c->o.protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_disconnect_v5_callback_set(m, on_disconnect);
    mosquitto_publish_v5_callback_set(m, on_publish);
    mosquitto_message_v5_callback_set(m, on_message);
    mosquitto_max_inflight_messages_set(m, 0);
    int rc = MOSQ_ERR_SUCCESS;
    if (c->o.username != NULL)
        rc = mosquitto_username_pw_set(m, c->o.username, c->o.password);
    if (rc == MOSQ_ERR_SUCCESS && c->o.tls) {
        /* Without a CA file, the system's CAs (libmosquitto needs one or the
         * other). */
        rc = mosquitto_tls_set(m, c->o.ca_file, c->o.ca_file == NULL ? "/etc/ssl/certs" : NULL,
                               c->o.cert_file, c->o.key_file, NULL);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_tls_insecure_set(m, c->o.tls_insecure);
    }
    if (rc == MOSQ_ERR_SUCCESS && c->o.will_topic != NULL)
        rc = mosquitto_will_set(m, c->o.will_topic, (int)c->o.will_len, c->o.will_payload,
                                c->o.will_qos, c->o.will_retain);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(why, sizeof why, "settings refused by libmosquitto: %s", mosq_error(rc));
        drop(c, why);
        return;
    }
    /* The TCP connect is non-blocking; the host name is resolved here. */
    rc = mosquitto_connect_async(m, c->o.host, c->o.port, c->o.keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        drop(c, mosq_error(rc));
        return;
    }
    int fd = mosquitto_socket(m);
    if (fd < 0) {
        drop(c, "no socket");
        return;
    }
    c->poll = dp_xcalloc(1, sizeof *c->poll);
    uv_poll_init_socket(c->loop, c->poll, fd);
    c->poll->data = c;
    c->poll_events = 0;
    update_poll(c);
}

void dp_mqtt_client_start(dp_mqtt_client_t *c)
{
    if (c->started)
        return;
    c->started = true;
    uint64_t ms = c->o.keepalive > 0 && c->o.keepalive < 2 ? 250 : 1000;
    uv_timer_start(&c->misc, on_misc, ms, ms);
    connect_now(c);
}

static void free_mem(dp_mqtt_client_t *c)
{
    for (size_t i = 0; i < c->nsubs; i++)
        free(c->subs[i].topic);
    free(c->subs);
    free((char *)c->o.name);
    free((char *)c->o.host);
    free((char *)c->o.client_id);
    free((char *)c->o.username);
    free((char *)c->o.password);
    free((char *)c->o.ca_file);
    free((char *)c->o.cert_file);
    free((char *)c->o.key_file);
    free((char *)c->o.will_topic);
    free(c->will_payload);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    dp_mqtt_client_t *c = h->data;
    if (--c->open_handles == 0)
        free_mem(c);
}

/* Writes what libmosquitto has queued and reads the broker's answers until
 * every message of this connection is acknowledged (QoS 1) or written
 * (QoS 0), waiting at most `ms` in all. Shutdown only, before the DISCONNECT:
 * a socket closed with acknowledgements still unread is reset, and a broker
 * that had not yet read the last messages and the DISCONNECT then drops them
 * and publishes the last will. Callbacks into the user stay off (closing). */
static void drain_blocking(dp_mqtt_client_t *c, int ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
    while (c->mosq != NULL && !c->drop_pending &&
           (c->unacked > 0 || mosquitto_want_write(c->mosq))) {
        uint64_t now = uv_hrtime();
        if (now >= end)
            break;
        struct pollfd pfd = {.fd = mosquitto_socket(c->mosq),
                             .events = POLLIN | (mosquitto_want_write(c->mosq) ? POLLOUT : 0)};
        if (pfd.fd < 0 || poll(&pfd, 1, (int)((end - now) / 1000000u) + 1) <= 0)
            break;
        int rc = MOSQ_ERR_SUCCESS;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            rc = mosquitto_loop_read(c->mosq, 1);
        if (rc == MOSQ_ERR_SUCCESS && !c->drop_pending && (pfd.revents & POLLOUT))
            rc = mosquitto_loop_write(c->mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            break;
    }
}

/* Writes what libmosquitto has queued, waiting for the socket at most
 * `ms` in all. Shutdown only. */
static void flush_blocking(dp_mqtt_client_t *c, int ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
    while (c->mosq != NULL && mosquitto_want_write(c->mosq)) {
        uint64_t now = uv_hrtime();
        if (now >= end)
            break;
        struct pollfd pfd = {.fd = mosquitto_socket(c->mosq), .events = POLLOUT};
        if (pfd.fd < 0 || poll(&pfd, 1, (int)((end - now) / 1000000u) + 1) <= 0)
            break;
        if (mosquitto_loop_write(c->mosq, 1) != MOSQ_ERR_SUCCESS)
            break;
    }
}

void dp_mqtt_client_free(dp_mqtt_client_t *c, int flush_ms)
{
    if (c == NULL)
        return;
    c->closing = true;
    if (c->mosq != NULL && c->connected) {
        drain_blocking(c, flush_ms);
        if (c->o.protocol == 5)
            mosquitto_disconnect_v5(c->mosq, 0, NULL);
        else
            mosquitto_disconnect(c->mosq);
        flush_blocking(c, 100);
    }
    drop(c, "closing");
    uv_close((uv_handle_t *)&c->misc, on_timer_closed);
    uv_close((uv_handle_t *)&c->retry, on_timer_closed);
}

bool dp_mqtt_client_connected(const dp_mqtt_client_t *c)
{
    return c->connected;
}

int dp_mqtt_client_publish(dp_mqtt_client_t *c, const char *topic, const void *payload, size_t len,
                           int qos, bool retain, int *mid)
{
    if (!c->connected || c->mosq == NULL || c->drop_pending)
        return DP_ESTATE;
    /* Counted first: a QoS 0 message written at once is "published" from
     * inside mosquitto_publish. */
    c->unacked++;
    int rc = mosquitto_publish(c->mosq, mid, topic, (int)len, payload, qos, retain);
    if (rc != MOSQ_ERR_SUCCESS) {
        c->unacked--;
        set_error(c, mosq_error(rc));
        if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_ERRNO) {
            snprintf(c->drop_why, sizeof c->drop_why, "%s", mosq_error(rc));
            c->drop_pending = true;
            return DP_ESTATE;
        }
        return DP_EIO;
    }
    c->st.sent++;
    update_poll(c);
    return 0;
}

int dp_mqtt_client_publish_reply(dp_mqtt_client_t *c, const char *topic, const void *payload,
                                 size_t len, const void *correlation, size_t correlation_len)
{
    if (correlation == NULL || c->o.protocol != 5)
        return dp_mqtt_client_publish(c, topic, payload, len, 1, false, NULL);
    if (!c->connected || c->mosq == NULL || c->drop_pending)
        return DP_ESTATE;
    mosquitto_property *props = NULL;
    int rc = mosquitto_property_add_binary(
        &props, MQTT_PROP_CORRELATION_DATA, correlation,
        (uint16_t)(correlation_len > 65535 ? 65535 : correlation_len));
    c->unacked++; /* counted first, as in dp_mqtt_client_publish */
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_publish_v5(c->mosq, NULL, topic, (int)len, payload, 1, false, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        c->unacked--;
        set_error(c, mosq_error(rc));
        return DP_EIO;
    }
    c->st.sent++;
    update_poll(c);
    return 0;
}

int dp_mqtt_client_subscribe(dp_mqtt_client_t *c, const char *topic, int qos)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        if (strcmp(c->subs[i].topic, topic) == 0)
            return 0;
    }
    c->subs = dp_xrealloc(c->subs, sizeof *c->subs * (c->nsubs + 1));
    c->subs[c->nsubs++] = (sub_t){dp_xstrdup(topic), qos};
    if (c->connected && c->mosq != NULL) {
        mosquitto_subscribe(c->mosq, NULL, topic, qos);
        update_poll(c);
    }
    return 0;
}

void dp_mqtt_client_get_stats(const dp_mqtt_client_t *c, dp_mqtt_client_stats_t *out)
{
    *out = c->st;
    out->last_error = c->last_error;
}
