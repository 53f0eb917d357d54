/* Internals shared by http.c (server, auth, streams, metrics) and
 * http_api.c (the JSON endpoints). Not part of the runtime's API. */
#ifndef DP_HTTP_INT_H
#define DP_HTTP_INT_H

#include <h2o.h>
#include <stdbool.h>

#include "alarms.h"
#include "command.h"
#include "http.h"
#include "json.h"
#include "plant.h"

/* The plant's guard and alarm list (NULL-safe wrappers). */
dp_guard_t *dp__http_guard(dp_plant_t *plant);
dp_alarms_t *dp__http_alarms(dp_plant_t *plant);

#define DP_HTTP_EVENTS   1000 /* recent events kept for GET /api/v1/events */
#define DP_HTTP_COMMANDS 200  /* recent commands kept for GET /api/v1/commands */

typedef struct {
    dp_time_t ts;
    char *twin, *kind, *text;
} dp__http_event_t;

typedef struct {
    uint64_t id;
    dp_time_t ts, done_ts;
    char *origin, *tag, *value_json, *reason;
    dp_cmd_outcome_t outcome;
} dp__http_cmd_t;

/* One request being answered: who asks and with what role. */
typedef struct {
    h2o_req_t *req;
    dp_http_t *http;
    const char *who; /* "alice", or "loopback" without tokens */
    dp_role_t role;
    h2o_iovec_t path;  /* path without query, percent-decoded per segment by the router */
    h2o_iovec_t query; /* raw query string (after '?'), may be empty */
} dp__http_call_t;

struct dp_http {
    uv_loop_t *loop;
    dp_plant_t *plant;
    const dp_http_cfg_t *cfg;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    SSL_CTX *ssl;
    uv_tcp_t listener;
    uv_timer_t tick; /* loop lag and samples/s */
    uv_idle_t reaper;
    int reaper_turns;
    uv_idle_t redo; /* delivers the write callbacks libuv refused (see uv_write) */
    struct dp_http *next_server;
    int port;
    bool stopping, listener_closed, tick_closed, finishing;
    int nconns;
    struct conn *conns;
    uint64_t conns_refused;  /* connections closed at once: max_connections were open */
    uint64_t refused_log_ms; /* uv_now of the last log line about them */
    uint64_t refused_logged; /* conns_refused at that line */
    struct stream *streams;
    int nstreams;
    struct ticket *tickets;
    dp_sub_t *sub;
    int watched; /* tags 0 .. watched-1 are watched by sub */
    dp__http_event_t events[DP_HTTP_EVENTS];
    uint64_t nevents; /* total seen; ring index = n % size */
    dp__http_cmd_t cmds[DP_HTTP_COMMANDS];
    uint64_t ncmds;
    struct bucket *buckets;
    /* Metrics. */
    uint64_t requests, status_counts[6]; /* by hundreds: 1xx .. 5xx */
    uint64_t rate_limited, auth_failures, stream_drops, stream_changes;
    uint64_t last_tick_ns, samples_last;
    double samples_per_s, lag_s, lag_max_s;
    uint64_t ticks;
};

/* An ISO 8601 time string, or null for 0. */
void dp__jb_time(dp_jbuf_t *b, int64_t ts);

/* Answers with `status` and the JSON in b (consumed). */
void dp__http_json(dp__http_call_t *c, int status, dp_jbuf_t *b);
/* Answers {"error": msg} with a 4xx/5xx status. */
void dp__http_error(dp__http_call_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The percent-decoded value of query parameter `name`, or NULL (pool memory). */
const char *dp__http_param(dp__http_call_t *c, const char *name);
/* Parses the request body as a JSON object; answers 400/413 and returns <0
 * on failure. */
int dp__http_body(dp__http_call_t *c, dp_jobj_t *out);
/* True if the caller has at least `role`; otherwise answers 403 and returns false. */
bool dp__http_need(dp__http_call_t *c, dp_role_t role);

/* The API router (http_api.c): returns 0 when it answered. */
int dp__http_api(dp__http_call_t *c, const char *method, char **segs, int nsegs);
/* /metrics. */
void dp__http_metrics(dp__http_call_t *c);

/* Commands submitted by the API wait for their outcome on a ticket that
 * outlives the request (the client may go away first). */
void dp__http_submit(dp__http_call_t *c, const char *tag, const dp_value_t *v);

/* Records an event or a command in the rings and sends it to live streams. */
void dp__http_record_event(dp_http_t *h, const dp_event_t *ev);
void dp__http_record_cmd(dp_http_t *h, const dp_cmd_t *cmd);
void dp__http_cmd_json(dp_jbuf_t *b, const dp__http_cmd_t *c);
void dp__http_event_json(dp_jbuf_t *b, const dp__http_event_t *e);

#endif
