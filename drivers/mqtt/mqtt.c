#include "mqtt.h"

#include <inttypes.h>
#include <lauxlib.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/command.h"
#include "../../runtime/journal.h"
#include "../../runtime/log.h"
#include "../../runtime/persist.h"
#include "../../runtime/plant.h"
#include "client.h"
#include "payload.h"

/* ---- Settings ---------------------------------------------------------- */

/* commands = { client = { "P101.speed_sp", "P102.*" }, ... } */
typedef struct {
    char *client;
    char *pattern;
} acl_rule_t;

typedef struct {
    acl_rule_t *rules;
    size_t n;
} acl_t;

typedef struct {
    char *host;
    int64_t port;
    char *client_id;
    bool clean_session;
    int protocol;
    dp_time_t keepalive;
    char *username;
    char *password_file;
    char *password_env;
    bool tls;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    bool tls_insecure;
    dp_time_t reconnect_min;
    dp_time_t reconnect_max;
    bool publish;
    char *prefix;
    int format;
    int64_t qos_data;
    int64_t qos_events;
    int64_t qos_commands;
    int64_t batch;
    bool derived;
    int64_t inflight;
    int from;
    dp_time_t interval;
    acl_t commands;
} mqtt_cfg_t;

typedef struct {
    char *topic;
    char *field;
    char *ts_field;
    int format;
    int ts_unit;
    int64_t qos;
} mqtt_point_t;

static const char *const protocol_choices[] = {"3.1.1", "5", NULL};
static const char *const out_format_choices[] = {"json", "msgpack", NULL};
static const char *const in_format_choices[] = {"json", "msgpack", "text", "doppel", NULL};
static const char *const from_choices[] = {"now", "oldest", NULL};
static const char *const ts_unit_choices[] = {"s", "ms", "us", NULL};

static void acl_free(void *field)
{
    acl_t *a = field;
    for (size_t i = 0; i < a->n; i++) {
        free(a->rules[i].client);
        free(a->rules[i].pattern);
    }
    free(a->rules);
    *a = (acl_t){0};
}

static void acl_add(acl_t *a, const char *client, const char *pattern)
{
    a->rules = dp_xrealloc(a->rules, sizeof *a->rules * (a->n + 1));
    a->rules[a->n++] = (acl_rule_t){dp_xstrdup(client), dp_xstrdup(pattern)};
}

static int acl_parse(lua_State *L, int idx, void *field, char **err)
{
    acl_t *a = field;
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        return dp_fail(err, DP_EINVAL, "expected a table { client = { \"twin.tag\", ... } }");
    int rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            rc = dp_fail(err, DP_EINVAL, "keys are MQTT client ids (strings)");
        } else {
            const char *client = lua_tostring(L, -2);
            if (client[0] == '\0' || strpbrk(client, "/+#") != NULL) {
                rc = dp_fail(err, DP_EINVAL, "client \"%s\": not usable in a topic level", client);
            } else {
                char who[160], **pats = NULL;
                snprintf(who, sizeof who, "client %s", client);
                if ((rc = dp_settings_patterns(L, -1, who, &pats, err)) == 0) {
                    for (char **p = pats; *p != NULL; p++)
                        acl_add(a, client, *p);
                    dp_settings_patterns_free(&pats);
                }
            }
        }
        lua_pop(L, 1);
    }
    if (rc < 0) {
        lua_pop(L, 1); /* the key left by the interrupted lua_next */
        acl_free(a);
    }
    return rc;
}

#define CFG(f) offsetof(mqtt_cfg_t, f)
static const dp_setting_t device_settings[] = {
    {.name = "host",
     .type = DP_SET_STRING,
     .offset = CFG(host),
     .def = "127.0.0.1",
     .doc = "Broker host name or address."},
    {.name = "port",
     .type = DP_SET_INT,
     .offset = CFG(port),
     .min = 1,
     .max = 65535,
     .doc = "Broker port (default 1883, 8883 with TLS)."},
    {.name = "client_id",
     .type = DP_SET_STRING,
     .offset = CFG(client_id),
     .doc = "MQTT client id (default `doppel-<plant>-<device>`)."},
    {.name = "clean_session",
     .type = DP_SET_BOOL,
     .offset = CFG(clean_session),
     .def = "true",
     .doc = "false: ask the broker to keep this client's subscriptions and queue its QoS 1 "
            "messages while it is away (needs `client_id`)."},
    {.name = "protocol",
     .type = DP_SET_ENUM,
     .offset = CFG(protocol),
     .def = "5",
     .choices = protocol_choices,
     .doc = "MQTT protocol version."},
    {.name = "keepalive",
     .type = DP_SET_DURATION,
     .offset = CFG(keepalive),
     .def = "30s",
     .doc = "Keep-alive interval: the broker drops (and publishes the last will of) a client "
            "silent for 1.5 times this."},
    {.name = "username",
     .type = DP_SET_STRING,
     .offset = CFG(username),
     .doc = "User name for the broker."},
    {.name = "password_file",
     .type = DP_SET_STRING,
     .offset = CFG(password_file),
     .doc = "File holding the password (its first line), relative to the working directory."},
    {.name = "password_env",
     .type = DP_SET_STRING,
     .offset = CFG(password_env),
     .doc = "Environment variable holding the password."},
    {.name = "tls",
     .type = DP_SET_BOOL,
     .offset = CFG(tls),
     .def = "false",
     .doc = "Connect with TLS (implied by `tls_ca`); without `tls_ca` the broker's "
            "certificate is checked against the system's CAs (/etc/ssl/certs)."},
    {.name = "tls_ca",
     .type = DP_SET_STRING,
     .offset = CFG(tls_ca),
     .doc = "PEM file of the CA that signed the broker's certificate."},
    {.name = "tls_cert",
     .type = DP_SET_STRING,
     .offset = CFG(tls_cert),
     .doc = "PEM client certificate, for brokers that require one."},
    {.name = "tls_key",
     .type = DP_SET_STRING,
     .offset = CFG(tls_key),
     .doc = "PEM private key of `tls_cert`."},
    {.name = "tls_insecure",
     .type = DP_SET_BOOL,
     .offset = CFG(tls_insecure),
     .def = "false",
     .doc = "Do not check that the broker's certificate names `host` (tests only)."},
    {.name = "reconnect_min",
     .type = DP_SET_DURATION,
     .offset = CFG(reconnect_min),
     .def = "500ms",
     .doc =
         "First delay before reconnecting; doubles after each failure or short-lived connection."},
    {.name = "reconnect_max",
     .type = DP_SET_DURATION,
     .offset = CFG(reconnect_max),
     .def = "30s",
     .doc = "Longest delay between reconnection attempts."},
    {.name = "publish",
     .type = DP_SET_BOOL,
     .offset = CFG(publish),
     .def = "false",
     .doc = "North: publish the plant's journal (samples, events, command outcomes) and "
            "birth/death messages."},
    {.name = "prefix",
     .type = DP_SET_STRING,
     .offset = CFG(prefix),
     .doc = "Topic prefix of this plant (default `doppel/<plant>`); also used for commands."},
    {.name = "format",
     .type = DP_SET_ENUM,
     .offset = CFG(format),
     .def = "json",
     .choices = out_format_choices,
     .doc = "Payload format of published data."},
    {.name = "qos_data",
     .type = DP_SET_INT,
     .offset = CFG(qos_data),
     .def = "1",
     .min = 0,
     .max = 1,
     .doc = "QoS of tag data (`<prefix>/<twin>/data/<tag>`); 1 for store-and-forward."},
    {.name = "qos_events",
     .type = DP_SET_INT,
     .offset = CFG(qos_events),
     .def = "1",
     .min = 0,
     .max = 1,
     .doc = "QoS of events (`<prefix>/<twin>/events`)."},
    {.name = "qos_commands",
     .type = DP_SET_INT,
     .offset = CFG(qos_commands),
     .def = "1",
     .min = 0,
     .max = 1,
     .doc = "QoS of command outcomes (`<prefix>/<twin>/commands`)."},
    {.name = "batch",
     .type = DP_SET_INT,
     .offset = CFG(batch),
     .def = "1",
     .min = 1,
     .max = 10000,
     .doc = "Items per message: 1 sends each record alone; more sends `{seq, items}` batches "
            "of the records read together for one topic."},
    {.name = "derived",
     .type = DP_SET_BOOL,
     .offset = CFG(derived),
     .def = "true",
     .doc = "Publish tags written by twins too (not only device samples)."},
    {.name = "inflight",
     .type = DP_SET_INT,
     .offset = CFG(inflight),
     .def = "1000",
     .min = 1,
     .max = 20000,
     .doc = "Most QoS 1 messages sent and not yet acknowledged."},
    {.name = "from",
     .type = DP_SET_ENUM,
     .offset = CFG(from),
     .def = "now",
     .choices = from_choices,
     .doc = "Where a new cursor starts: `now` (the end of the journal) or `oldest`. An existing "
            "cursor always resumes where it stopped."},
    {.name = "interval",
     .type = DP_SET_DURATION,
     .offset = CFG(interval),
     .def = "20ms",
     .doc = "How often the journal is checked for new records."},
    {.name = "commands",
     .type = DP_SET_CUSTOM,
     .offset = CFG(commands),
     .parse = acl_parse,
     .free = acl_free,
     .doc = "Who may command what: `{ client_id = { \"twin.tag\", \"twin.*\", \"*\" } }`. "
            "Requests from other clients or for other tags are refused and logged."},
    DP_SETTINGS_END,
};

#define PT(f) offsetof(mqtt_point_t, f)
static const dp_setting_t point_settings[] = {
    {.name = "topic",
     .type = DP_SET_STRING,
     .offset = PT(topic),
     .required = true,
     .doc = "Topic to read; `+` and `#` wildcards allowed."},
    {.name = "field",
     .type = DP_SET_STRING,
     .offset = PT(field),
     .doc = "Path of the value in a JSON or msgpack payload (`a.b[2]`); none: the payload "
            "itself is the value."},
    {.name = "ts_field",
     .type = DP_SET_STRING,
     .offset = PT(ts_field),
     .doc = "Path of the sample's timestamp (a number in `ts_unit` since the epoch, or an ISO "
            "8601 string); none: the arrival time."},
    {.name = "ts_unit",
     .type = DP_SET_ENUM,
     .offset = PT(ts_unit),
     .def = "s",
     .choices = ts_unit_choices,
     .doc = "Unit of a numeric `ts_field`."},
    {.name = "format",
     .type = DP_SET_ENUM,
     .offset = PT(format),
     .def = "json",
     .choices = in_format_choices,
     .doc = "`json`, `msgpack`, `text` (the payload is a number, true/false or a string) or "
            "`doppel` (a data topic published by another doppel: value, timestamp, quality, "
            "batches and duplicate removal by sequence number)."},
    {.name = "qos",
     .type = DP_SET_INT,
     .offset = PT(qos),
     .def = "1",
     .min = 0,
     .max = 1,
     .doc = "QoS of the subscription."},
    DP_SETTINGS_END,
};

void dp_mqtt_settings_doc(FILE *out)
{
    fprintf(out, "### Device settings\n\n");
    dp_settings_doc(device_settings, out);
    fprintf(out, "\n### Point settings\n\n");
    dp_settings_doc(point_settings, out);
}

/* ---- State ------------------------------------------------------------- */

typedef struct {
    int tag;
    mqtt_point_t *pt;
    uint64_t last_seq; /* doppel format: newest sequence number kept */
    char *status;      /* doppel format: the source plant's status topic */
} south_t;

/* Records read from the journal together. The cursor moves past a round
 * once every QoS 1 message of it (and of the rounds before) is acknowledged. */
typedef struct {
    uint64_t id;
    dp_jpos_t end;
    dp_time_t first_ts;
    int pending;
    bool closed;
} round_t;

typedef struct {
    char *topic;
    int qos;
    dp_jbuf_t items;
    size_t n;
    uint64_t last;
} bucket_t;

typedef struct mqtt mqtt_t;

typedef struct req {
    mqtt_t *m; /* NULL once the device closed */
    char *reply;
    char *id;
    char *client;
    void *corr; /* MQTT 5 correlation data of the request, or NULL */
    size_t corr_len;
    struct req *next, *prev;
} req_t;

typedef struct save_req {
    uv_work_t work;
    mqtt_t *m;
    char *dir, *name;
    dp_jpos_t pos;
    int rc;
    char *err;
} save_req_t;

struct mqtt {
    dp_device_t *dev;
    mqtt_cfg_t *cfg;
    dp_mqtt_client_t *client;
    char *prefix;
    char *client_id;
    char *cmd_sub;
    south_t *south;
    size_t nsouth;
    bool started, stopped;
    /* north */
    dp_journal_t *journal;
    char *jdir, *cursor;
    dp_jreader_t *reader;
    dp_jpos_t acked;
    bool dirty;
    save_req_t *saving;
    uv_timer_t pump, saver;
    int handles;
    round_t *rounds;
    size_t rhead, rcount, rcap;
    uint64_t next_round;
    uint64_t *mid_round; /* 65536 entries */
    int inflight;
    bool in_publish;
    bucket_t *buckets;
    size_t nbuckets;
    uint32_t *bidx; /* bucket index + 1, 0: free */
    size_t bcap;
    dp_jbuf_t msg;
    uint64_t age_seq; /* cached oldest-unsent timestamp for this acked seq */
    dp_time_t age_ts;
    /* commands */
    req_t *reqs;
    /* stats */
    uint64_t items, messages, malformed, duplicates, cmd_ok, cmd_refused, samples_in, skipped;
    uint64_t bad_window; /* uv_now() ms of the current one-second log window */
    int bad_logged, bad_quiet;
    char statbuf[256];
};

/* ---- Helpers ----------------------------------------------------------- */

static const char *dev_name(const mqtt_t *m)
{
    return m->dev->name;
}

static dp_time_t now(const mqtt_t *m)
{
    return dp_clock_now(m->dev->host->clock);
}

/* ---- Open / points ----------------------------------------------------- */

/* A broker on this machine: "localhost" or a loopback address. */
static bool loopback_host(const char *host)
{
    struct sockaddr_storage ss;
    if (host == NULL || strcmp(host, "localhost") == 0)
        return true;
    return (uv_ip4_addr(host, 0, (struct sockaddr_in *)&ss) == 0 ||
            uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&ss) == 0) &&
           dp_is_loopback((const struct sockaddr *)&ss);
}

static int mqtt_open(dp_device_t *dev, char **err)
{
    mqtt_cfg_t *c = dev->cfg;
    /* Everything is checked before allocating: a failed open is not closed. */
    if (c->tls_ca != NULL || c->tls_cert != NULL)
        c->tls = true;
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        return dp_fail(err, DP_EINVAL, "tls_cert and tls_key go together");
    if (c->password_file != NULL && c->password_env != NULL)
        return dp_fail(err, DP_EINVAL, "give password_file or password_env, not both");
    if ((c->password_file != NULL || c->password_env != NULL) && c->username == NULL)
        return dp_fail(err, DP_EINVAL, "a password needs a username");
    if ((c->password_file != NULL || c->password_env != NULL) && !c->tls && !loopback_host(c->host))
        return dp_fail(err, DP_EINVAL,
                       "a password to broker %s would travel in clear: add tls_ca (or tls = "
                       "true for the system's CAs)",
                       c->host != NULL ? c->host : "?");
    if (c->keepalive < 5 * DP_US_PER_SEC || c->keepalive > 65535 * DP_US_PER_SEC)
        return dp_fail(err, DP_EINVAL, "keepalive: must be between 5s and 65535s");
    if (c->reconnect_max < c->reconnect_min)
        return dp_fail(err, DP_EINVAL, "reconnect_max is below reconnect_min");
    if (!c->clean_session && c->client_id == NULL)
        return dp_fail(err, DP_EINVAL, "clean_session = false needs a client_id");
    if (c->prefix != NULL) {
        size_t n = strlen(c->prefix);
        if (n == 0 || strpbrk(c->prefix, "+#") != NULL || c->prefix[n - 1] == '/')
            return dp_fail(err, DP_EINVAL,
                           "prefix: \"%s\": no wildcards, no trailing slash, not empty", c->prefix);
    }
    if (c->port == 0)
        c->port = c->tls ? 8883 : 1883;
    const char *plant = dev->host->plant ? dp_plant_name(dev->host->plant) : "plant";
    mqtt_t *m = dp_xcalloc(1, sizeof *m);
    m->dev = dev;
    m->cfg = c;
    dev->impl = m;
    m->prefix = c->prefix ? dp_xstrdup(c->prefix) : dp_xasprintf("doppel/%s", plant);
    m->client_id =
        c->client_id ? dp_xstrdup(c->client_id) : dp_xasprintf("doppel-%s-%s", plant, dev->name);
    if (c->commands.n > 0)
        m->cmd_sub = dp_xasprintf("%s/+/cmd/#", m->prefix);
    return 0;
}

static int mqtt_add_point(dp_device_t *dev, int tag, void *point, char **err)
{
    mqtt_t *m = dev->impl;
    mqtt_point_t *pt = point;
    if (mosquitto_sub_topic_check(pt->topic) != MOSQ_ERR_SUCCESS)
        return dp_fail(err, DP_EINVAL, "topic: \"%s\" is not a valid subscription", pt->topic);
    if (pt->field != NULL && (pt->format == DP_MQTT_TEXT || pt->format == DP_MQTT_DOPPEL))
        return dp_fail(err, DP_EINVAL, "field: not used with format %s",
                       in_format_choices[pt->format]);
    char *status = NULL;
    if (pt->format == DP_MQTT_DOPPEL) {
        /* <prefix>/<twin>/data/<tag> -> <prefix>/status */
        size_t n = strlen(pt->topic), levels = 0;
        while (n > 0 && levels < 3) {
            if (pt->topic[--n] == '/')
                levels++;
        }
        if (levels == 3 && n > 0)
            status = dp_xasprintf("%.*s/status", (int)n, pt->topic);
    }
    m->south = dp_xrealloc(m->south, sizeof *m->south * (m->nsouth + 1));
    m->south[m->nsouth++] = (south_t){.tag = tag, .pt = pt, .status = status};
    return 0;
}

/* ---- North: journal -> broker ------------------------------------------ */

static void save_work(uv_work_t *w)
{
    save_req_t *s = w->data;
    s->rc = dp_jcursor_save(s->dir, s->name, &s->pos, &s->err);
}

static void save_done(uv_work_t *w, int status)
{
    (void)status;
    save_req_t *s = w->data;
    if (s->rc < 0)
        dp_log_error(NULL, "mqtt %s: cannot save cursor: %s", s->m ? dev_name(s->m) : "?",
                     s->err ? s->err : dp_strerror(s->rc));
    if (s->m != NULL)
        s->m->saving = NULL;
    free(s->err);
    free(s->dir);
    free(s->name);
    free(s);
}

static void on_saver(uv_timer_t *t)
{
    mqtt_t *m = t->data;
    if (!m->dirty || m->saving != NULL)
        return;
    save_req_t *s = dp_xcalloc(1, sizeof *s);
    s->m = m;
    s->dir = dp_xstrdup(m->jdir);
    s->name = dp_xstrdup(m->cursor);
    s->pos = m->acked;
    s->work.data = s;
    m->dirty = false;
    m->saving = s;
    uv_queue_work(m->dev->host->loop, &s->work, save_work, save_done);
}

static round_t *round_at(mqtt_t *m, size_t i)
{
    return &m->rounds[(m->rhead + i) % m->rcap];
}

static round_t *round_push(mqtt_t *m)
{
    if (m->rcount == m->rcap) {
        size_t cap = m->rcap ? m->rcap * 2 : 64;
        round_t *r = dp_xmalloc(sizeof *r * cap);
        for (size_t i = 0; i < m->rcount; i++)
            r[i] = *round_at(m, i);
        free(m->rounds);
        m->rounds = r;
        m->rcap = cap;
        m->rhead = 0;
    }
    round_t *r = round_at(m, m->rcount++);
    *r = (round_t){.id = ++m->next_round};
    return r;
}

/* Moves the cursor past every finished round at the front. */
static void advance(mqtt_t *m)
{
    while (m->rcount > 0) {
        round_t *r = round_at(m, 0);
        if (!r->closed || r->pending > 0)
            break;
        m->acked = r->end;
        m->dirty = true;
        m->rhead = (m->rhead + 1) % m->rcap;
        m->rcount--;
    }
}

static void reset_rounds(mqtt_t *m)
{
    m->rcount = 0;
    m->rhead = 0;
    m->inflight = 0;
    if (m->mid_round != NULL)
        memset(m->mid_round, 0, sizeof *m->mid_round * 65536);
    for (size_t i = 0; i < m->nbuckets; i++) {
        m->buckets[i].items.len = 0;
        m->buckets[i].n = 0;
    }
}

/* (Re)opens the reader at the acknowledged position. */
static int reopen_reader(mqtt_t *m)
{
    dp_jreader_free(m->reader);
    char *err = NULL;
    m->reader = dp_jreader_open(m->jdir, &m->acked, NULL, NULL, &err);
    if (m->reader == NULL) {
        dp_log_error(NULL, "mqtt %s: cannot read the journal: %s", dev_name(m), err);
        free(err);
        return DP_EIO;
    }
    return 0;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

/* The bucket of a topic: one per topic for the device's life (topics are
 * the plant's tags and twins), found through an open-addressing index. */
static bucket_t *bucket_for(mqtt_t *m, const char *topic, int qos)
{
    size_t mask = m->bcap - 1;
    if (m->bcap > 0) {
        for (size_t i = hash_str(topic) & mask; m->bidx[i] != 0; i = (i + 1) & mask) {
            bucket_t *b = &m->buckets[m->bidx[i] - 1];
            if (strcmp(b->topic, topic) == 0)
                return b;
        }
    }
    if (2 * (m->nbuckets + 1) > m->bcap) {
        m->bcap = m->bcap ? 2 * m->bcap : 64;
        free(m->bidx);
        m->bidx = dp_xcalloc(m->bcap, sizeof *m->bidx);
        mask = m->bcap - 1;
        for (size_t k = 0; k < m->nbuckets; k++) {
            size_t i = hash_str(m->buckets[k].topic) & mask;
            while (m->bidx[i] != 0)
                i = (i + 1) & mask;
            m->bidx[i] = (uint32_t)(k + 1);
        }
    }
    m->buckets = dp_xrealloc(m->buckets, sizeof *m->buckets * (m->nbuckets + 1));
    bucket_t *b = &m->buckets[m->nbuckets++];
    *b = (bucket_t){.topic = dp_xstrdup(topic), .qos = qos};
    size_t i = hash_str(topic) & mask;
    while (m->bidx[i] != 0)
        i = (i + 1) & mask;
    m->bidx[i] = (uint32_t)m->nbuckets;
    return b;
}

/* Publishes a bucket's items as one message for round r. */
static int flush_bucket(mqtt_t *m, bucket_t *b, round_t *r)
{
    if (b->n == 0)
        return 0;
    m->msg.len = 0;
    dp_mqtt_encode_message(&m->msg, m->cfg->format, m->cfg->batch > 1, b->last, &b->items, b->n);
    int mid = 0;
    m->in_publish = true;
    int rc = dp_mqtt_client_publish(m->client, b->topic, m->msg.p, m->msg.len, b->qos, false, &mid);
    m->in_publish = false;
    size_t n = b->n;
    b->items.len = 0;
    b->n = 0;
    if (rc == DP_EIO) {
        /* libmosquitto refused this message (a topic or size it cannot
         * send): it will never be sent, so waiting for it would stop the
         * cursor for good. Skip it, loudly. */
        dp_mqtt_client_stats_t cs;
        dp_mqtt_client_get_stats(m->client, &cs);
        dp_log_error(NULL, "mqtt %s: cannot publish %zu records on %s (%zu bytes): %s; skipped",
                     dev_name(m), n, b->topic, m->msg.len, cs.last_error);
        m->skipped += n;
        return 0;
    }
    if (rc < 0)
        return rc;
    m->messages++;
    m->items += n;
    if (b->qos > 0) {
        m->mid_round[mid & 0xffff] = r->id;
        r->pending++;
        m->inflight++;
    } else {
        m->mid_round[mid & 0xffff] = 0;
    }
    return 0;
}

static int add_record(mqtt_t *m, const dp_jrec_t *rec, round_t *r)
{
    char topic[512];
    const char *tag = NULL;
    int qos;
    char twin[160];
    const char *src = rec->type == DP_JREC_EVENT ? rec->twin : rec->tag;
    if (rec->type == DP_JREC_EVENT) {
        snprintf(twin, sizeof twin, "%s", src ? src : "_plant");
    } else {
        const char *dot = src ? strchr(src, '.') : NULL;
        if (dot == NULL)
            return 0; /* not a twin's tag */
        snprintf(twin, sizeof twin, "%.*s", (int)(dot - src), src);
        tag = dot + 1;
    }
    switch (rec->type) {
    case DP_JREC_SAMPLE:
        if ((rec->flags & DP_JSAMPLE_DERIVED) && !m->cfg->derived)
            return 0;
        snprintf(topic, sizeof topic, "%s/%s/data/%s", m->prefix, twin, tag);
        qos = (int)m->cfg->qos_data;
        break;
    case DP_JREC_EVENT:
        snprintf(topic, sizeof topic, "%s/%s/events", m->prefix, twin);
        qos = (int)m->cfg->qos_events;
        break;
    case DP_JREC_COMMAND:
        snprintf(topic, sizeof topic, "%s/%s/commands", m->prefix, twin);
        qos = (int)m->cfg->qos_commands;
        break;
    default:
        return 0;
    }
    bucket_t *b = bucket_for(m, topic, qos);
    dp_mqtt_encode_item(&b->items, m->cfg->format, rec, tag);
    b->n++;
    b->last = rec->seq;
    if (b->n >= (size_t)m->cfg->batch)
        return flush_bucket(m, b, r);
    return 0;
}

#define ROUND_RECORDS 1024

/* Reads and publishes what the journal has, within the in-flight limit. */
static void pump(mqtt_t *m)
{
    if (m->reader == NULL || m->client == NULL || !dp_mqtt_client_connected(m->client))
        return;
    for (int rounds = 0; rounds < 16 && m->inflight < m->cfg->inflight; rounds++) {
        round_t *r = round_push(m);
        int nrec = 0, rc = 0;
        while (nrec < ROUND_RECORDS && m->inflight < m->cfg->inflight) {
            dp_jrec_t rec;
            char *err = NULL;
            rc = dp_jreader_next(m->reader, &rec, &err);
            if (rc < 0) {
                dp_log_error(NULL, "mqtt %s: journal: %s", dev_name(m), err);
                free(err);
                break;
            }
            if (rc == 0)
                break;
            if (nrec++ == 0)
                r->first_ts = rec.ts;
            if ((rc = add_record(m, &rec, r)) < 0)
                break;
        }
        for (size_t i = 0; rc >= 0 && i < m->nbuckets; i++)
            rc = flush_bucket(m, &m->buckets[i], r);
        if (rc < 0) {
            /* Lost the connection mid-round: the rewind on `disconnected`
             * resends from the cursor. */
            return;
        }
        if (nrec == 0) {
            m->rcount--;
            m->next_round--;
            return;
        }
        r->end = dp_jreader_pos(m->reader);
        r->closed = true;
        advance(m);
    }
}

static void on_pump(uv_timer_t *t)
{
    pump(t->data);
}

/* ---- Status (birth and death) ------------------------------------------ */

static void publish_status(mqtt_t *m, bool online)
{
    dp_plant_t *p = m->dev->host->plant;
    dp_store_t *store = m->dev->host->store;
    dp_jbuf_t b = {0};
    char topic[512];
    int nt = p ? dp_plant_twin_count(p) : 0;
    for (int i = 0; i < nt; i++) {
        const char *tw = dp_twin_name(dp_plant_twin_at(p, i));
        size_t tl = strlen(tw);
        b.len = 0;
        dp_jb_puts(&b, online ? "{\"status\":\"online\",\"tags\":[" : "{\"status\":\"offline\"");
        if (online) {
            bool first = true;
            for (int k = 0; k < dp_store_count(store); k++) {
                const dp_tag_t *t = dp_store_get(store, k);
                if (strncmp(t->name, tw, tl) != 0 || t->name[tl] != '.')
                    continue;
                dp_jb_puts(&b, first ? "{\"name\":" : ",{\"name\":");
                first = false;
                dp_jb_str(&b, t->name + tl + 1);
                dp_jb_puts(&b, ",\"unit\":");
                dp_jb_str(&b, t->unit);
                dp_jb_puts(&b, (t->flags & DP_TAG_WRITABLE) ? ",\"writable\":true}"
                                                            : ",\"writable\":false}");
            }
            dp_jb_puts(&b, "]");
        }
        dp_jb_puts(&b, "}");
        snprintf(topic, sizeof topic, "%s/%s/status", m->prefix, tw);
        dp_mqtt_client_publish(m->client, topic, b.p, b.len, 1, true, NULL);
    }
    b.len = 0;
    /* `seq`: the journal's last record; a consumer that kept a higher one
     * knows this plant's journal started over. */
    dp_jb_printf(&b, "{\"status\":\"%s\",\"ts\":%" PRId64 ",\"seq\":%" PRIu64 ",\"twins\":[",
                 online ? "online" : "offline", now(m),
                 m->journal ? dp_journal_last_seq(m->journal) : (uint64_t)0);
    for (int i = 0; i < nt; i++) {
        if (i)
            dp_jb_puts(&b, ",");
        dp_jb_str(&b, dp_twin_name(dp_plant_twin_at(p, i)));
    }
    dp_jb_puts(&b, "]}");
    snprintf(topic, sizeof topic, "%s/status", m->prefix);
    dp_mqtt_client_publish(m->client, topic, b.p, b.len, 1, true, NULL);
    dp_jb_free(&b);
}

/* ---- Commands in -------------------------------------------------------- */

static bool acl_allows(const acl_t *a, const char *client, const char *tag)
{
    for (size_t i = 0; i < a->n; i++) {
        const acl_rule_t *r = &a->rules[i];
        if (strcmp(r->client, client) == 0 && dp_tag_pattern_match(r->pattern, tag))
            return true;
    }
    return false;
}

static void send_reply(mqtt_t *m, const char *topic, const void *corr, size_t corr_len,
                       const char *id, uint64_t cmd, const char *tag, const char *outcome,
                       const char *reason)
{
    if (m == NULL || m->client == NULL || !dp_mqtt_client_connected(m->client)) {
        dp_log_warn(NULL, "mqtt: reply to %s not sent (not connected): %s", topic, outcome);
        return;
    }
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"id\":");
    dp_jb_str(&b, id); /* NULL: null */
    dp_jb_printf(&b, ",\"cmd\":%" PRIu64 ",\"tag\":", cmd);
    dp_jb_str(&b, tag ? tag : "");
    dp_jb_puts(&b, ",\"outcome\":");
    dp_jb_str(&b, outcome);
    dp_jb_puts(&b, ",\"reason\":");
    dp_jb_str(&b, reason ? reason : "");
    dp_jb_puts(&b, "}");
    dp_mqtt_client_publish_reply(m->client, topic, b.p, b.len, corr, corr_len);
    dp_jb_free(&b);
}

static void req_free(req_t *r)
{
    if (r->m != NULL) {
        if (r->prev)
            r->prev->next = r->next;
        else
            r->m->reqs = r->next;
        if (r->next)
            r->next->prev = r->prev;
    }
    free(r->reply);
    free(r->id);
    free(r->client);
    free(r->corr);
    free(r);
}

static void on_cmd_done(const dp_cmd_t *cmd, void *ud)
{
    req_t *r = ud;
    if (r->m != NULL) {
        if (cmd->outcome == DP_CMD_DONE || cmd->outcome == DP_CMD_SHADOW)
            r->m->cmd_ok++;
        else
            r->m->cmd_refused++;
        send_reply(r->m, r->reply, r->corr, r->corr_len, r->id, cmd->id, cmd->tag,
                   dp_cmd_outcome_name(cmd->outcome), cmd->reason);
    }
    req_free(r);
}

/* <prefix>/<twin>/cmd/<client> */
static void on_command(mqtt_t *m, const char *topic, const void *payload, size_t len,
                       const char *response_topic, const void *corr, size_t corr_len)
{
    const char *rest = topic + strlen(m->prefix) + 1;
    const char *slash = strchr(rest, '/');
    char twin[160], client[160];
    snprintf(twin, sizeof twin, "%.*s", (int)(slash - rest), rest);
    const char *cl = slash + 4; /* after "/cmd" */
    char reply[512];
    if (*cl != '/' || cl[1] == '\0' || strchr(cl + 1, '/') != NULL) {
        m->cmd_refused++;
        dp_log_warn(NULL,
                    "mqtt %s: command on %s refused: the topic must be %s/<twin>/cmd/<client>",
                    dev_name(m), topic, m->prefix);
        return;
    }
    snprintf(client, sizeof client, "%s", cl + 1);
    if (response_topic != NULL)
        snprintf(reply, sizeof reply, "%s", response_topic);
    else
        snprintf(reply, sizeof reply, "%s/%s/reply/%s", m->prefix, twin, client);
    char *tag = NULL, *id = NULL, *err = NULL;
    dp_value_t v;
    if (dp_mqtt_decode_command(payload, len, &tag, &v, &id, &err) < 0) {
        m->cmd_refused++;
        dp_log_warn(NULL, "mqtt %s: command on %s refused: malformed request: %s", dev_name(m),
                    topic, err);
        send_reply(m, reply, corr, corr_len, NULL, 0, NULL, "rejected", err);
        free(err);
        return;
    }
    char full[512];
    if (strchr(tag, '.') != NULL)
        snprintf(full, sizeof full, "%s", tag);
    else
        snprintf(full, sizeof full, "%s.%s", twin, tag);
    size_t tl = strlen(twin);
    char why[1200] = "";
    if (strncmp(full, twin, tl) != 0 || full[tl] != '.')
        snprintf(why, sizeof why, "tag %s is not a tag of twin %s", full, twin);
    else if (!acl_allows(&m->cfg->commands, client, full))
        snprintf(why, sizeof why, "client %s may not command %s", client, full);
    if (why[0]) {
        m->cmd_refused++;
        dp_log_warn(NULL, "mqtt %s: command on %s refused: %s", dev_name(m), topic, why);
        send_reply(m, reply, corr, corr_len, id, 0, full, "rejected", why);
    } else {
        req_t *r = dp_xcalloc(1, sizeof *r);
        r->m = m;
        r->reply = dp_xstrdup(reply);
        r->id = id;
        id = NULL;
        r->client = dp_xstrdup(client);
        if (corr != NULL && corr_len > 0) {
            r->corr = dp_xmalloc(corr_len);
            memcpy(r->corr, corr, corr_len);
            r->corr_len = corr_len;
        }
        r->next = m->reqs;
        if (m->reqs)
            m->reqs->prev = r;
        m->reqs = r;
        char origin[200];
        snprintf(origin, sizeof origin, "mqtt:%s", client);
        dp_guard_submit(m->dev->host->guard, origin, full, &v, on_cmd_done, r);
    }
    if (v.type == DP_STR)
        free(v.u.s);
    free(tag);
    free(id);
}

/* ---- South -------------------------------------------------------------- */

typedef struct {
    mqtt_t *m;
    south_t *s;
} south_ctx_t;

static void on_sample(const dp_mqtt_sample_t *smp, void *ud)
{
    south_ctx_t *c = ud;
    mqtt_t *m = c->m;
    if (c->s->pt->format == DP_MQTT_DOPPEL) {
        if (smp->seq <= c->s->last_seq) {
            m->duplicates++;
            return;
        }
        c->s->last_seq = smp->seq;
    }
    dp_store_t *store = m->dev->host->store;
    m->samples_in++;
    if (smp->v.type == DP_NIL)
        dp_store_set_quality(store, c->s->tag, smp->quality);
    else
        dp_store_write(store, c->s->tag, &smp->v, smp->ts ? smp->ts : now(m), smp->quality);
}

/* The `seq` of a doppel birth message; false when absent or not online. */
static bool source_seq(const void *payload, size_t len, uint64_t *seq)
{
    char buf[160];
    if (len >= sizeof buf)
        len = sizeof buf - 1;
    if (len > 0)
        memcpy(buf, payload, len);
    buf[len] = '\0';
    const char *p = strstr(buf, "\"seq\":");
    if (strstr(buf, "\"status\":\"online\"") == NULL || p == NULL)
        return false;
    *seq = strtoull(p + 6, NULL, 10);
    return true;
}

static void on_message(dp_mqtt_client_t *cl, const char *topic, const void *payload, size_t len,
                       const char *response_topic, const void *corr, size_t corr_len, void *ud)
{
    (void)cl;
    mqtt_t *m = ud;
    bool match = false;
    if (m->cmd_sub != NULL &&
        mosquitto_topic_matches_sub(m->cmd_sub, topic, &match) == MOSQ_ERR_SUCCESS && match) {
        on_command(m, topic, payload, len, response_topic, corr, corr_len);
        return;
    }
    for (size_t i = 0; i < m->nsouth; i++) {
        south_t *s = &m->south[i];
        match = false;
        if (s->status != NULL &&
            mosquitto_topic_matches_sub(s->status, topic, &match) == MOSQ_ERR_SUCCESS && match) {
            /* A source's birth with a journal behind what we kept: its
             * journal started over (a new data directory), and so did its
             * sequence numbers. */
            uint64_t seq = 0;
            if (source_seq(payload, len, &seq) && seq < s->last_seq) {
                dp_log_warn(NULL,
                            "mqtt %s: %s: the source's journal starts over (record %" PRIu64
                            " < %" PRIu64 " kept): sequence numbers reset",
                            dev_name(m), dp_store_get(m->dev->host->store, s->tag)->name, seq,
                            s->last_seq);
                s->last_seq = 0;
            }
            continue;
        }
        if (mosquitto_topic_matches_sub(s->pt->topic, topic, &match) != MOSQ_ERR_SUCCESS || !match)
            continue;
        dp_mqtt_decode_opts_t o = {.format = s->pt->format,
                                   .field = s->pt->field,
                                   .ts_field = s->pt->ts_field,
                                   .ts_unit = s->pt->ts_unit};
        south_ctx_t ctx = {m, s};
        char *err = NULL;
        if (dp_mqtt_decode(&o, payload, len, on_sample, &ctx, &err) < 0) {
            m->malformed++;
            /* At most 10 lines a second: a device sending garbage must not
             * flood the log. */
            uint64_t t = uv_now(m->dev->host->loop);
            if (t - m->bad_window >= 1000) {
                if (m->bad_quiet > 0)
                    dp_log_error(NULL, "mqtt %s: %d more malformed payloads were not logged",
                                 dev_name(m), m->bad_quiet);
                m->bad_window = t;
                m->bad_logged = m->bad_quiet = 0;
            }
            if (++m->bad_logged > 10) {
                m->bad_quiet++;
                free(err);
                continue;
            }
            dp_log_error(NULL,
                         "mqtt %s: topic %s: malformed payload for %s (%zu bytes): %s; "
                         "skipped",
                         dev_name(m), topic, dp_store_get(m->dev->host->store, s->tag)->name, len,
                         err);
            free(err);
        }
    }
}

/* ---- Connection events -------------------------------------------------- */

static void on_connected(dp_mqtt_client_t *cl, void *ud)
{
    (void)cl;
    mqtt_t *m = ud;
    if (m->cfg->publish) {
        publish_status(m, true);
        pump(m);
    }
}

static void on_disconnected(dp_mqtt_client_t *cl, const char *why, void *ud)
{
    (void)cl;
    (void)why;
    mqtt_t *m = ud;
    if (m->cfg->publish && m->journal != NULL) {
        /* Everything not acknowledged is sent again from the cursor. */
        reset_rounds(m);
        reopen_reader(m);
    }
}

static void on_published(dp_mqtt_client_t *cl, int mid, void *ud)
{
    (void)cl;
    mqtt_t *m = ud;
    if (m->in_publish || m->mid_round == NULL)
        return; /* a QoS 0 message written at once */
    uint64_t id = m->mid_round[mid & 0xffff];
    if (id == 0 || m->rcount == 0)
        return;
    m->mid_round[mid & 0xffff] = 0;
    uint64_t first = round_at(m, 0)->id;
    if (id < first || id - first >= m->rcount)
        return;
    round_t *r = round_at(m, (size_t)(id - first));
    r->pending--;
    m->inflight--;
    advance(m);
    if (m->inflight <= m->cfg->inflight / 2)
        pump(m);
}

/* ---- Start / stop ------------------------------------------------------- */

static char *read_password(const mqtt_cfg_t *c, char **err)
{
    if (c->password_env != NULL) {
        const char *v = getenv(c->password_env);
        if (v == NULL)
            dp_fail(err, DP_ENOENT, "password_env: variable %s is not set", c->password_env);
        return v ? dp_xstrdup(v) : NULL;
    }
    if (c->password_file != NULL) {
        FILE *f = fopen(c->password_file, "r");
        if (f == NULL) {
            dp_fail(err, DP_ENOENT, "password_file: cannot open %s", c->password_file);
            return NULL;
        }
        char line[1024] = "";
        if (fgets(line, sizeof line, f) == NULL)
            line[0] = '\0';
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        return dp_xstrdup(line);
    }
    return NULL;
}

static void on_handle_closed(uv_handle_t *h)
{
    mqtt_t *m = h->data;
    if (--m->handles == 0)
        free(m);
}

static int start_north(mqtt_t *m, char **err)
{
    dp_plant_t *p = m->dev->host->plant;
    dp_persist_t *ps = p ? dp_plant_persist(p) : NULL;
    m->journal = ps ? dp_persist_journal(ps) : NULL;
    if (m->journal == NULL)
        return dp_fail(err, DP_ESTATE,
                       "publish needs the plant's journal (plant { journal = { enabled = true } }, "
                       "the default)");
    m->jdir = dp_xasprintf("%s/journal", dp_plant_data_dir(p));
    m->cursor = dp_xasprintf("mqtt-%s", dev_name(m));
    char *inner = NULL;
    int rc = dp_jcursor_load(m->jdir, m->cursor, &m->acked, &inner);
    if (rc == DP_ENOENT) {
        free(inner);
        inner = NULL;
        m->acked = (dp_jpos_t){0};
        if (m->cfg->from == 0)
            m->acked.seq = dp_journal_last_seq(m->journal) + 1;
        if (dp_jcursor_save(m->jdir, m->cursor, &m->acked, &inner) < 0) {
            rc = dp_fail(err, DP_EIO, "cursor %s: %s", m->cursor, inner);
            free(inner);
            return rc;
        }
        dp_log_info(NULL, "mqtt %s: new cursor %s starts at record %" PRIu64, dev_name(m),
                    m->cursor, m->acked.seq ? m->acked.seq : 1);
    } else if (rc < 0) {
        rc = dp_fail(err, rc, "cursor %s: %s", m->cursor, inner ? inner : dp_strerror(rc));
        free(inner);
        return rc;
    } else {
        dp_log_info(NULL, "mqtt %s: resuming from cursor %s at record %" PRIu64, dev_name(m),
                    m->cursor, m->acked.seq);
    }
    if (reopen_reader(m) < 0)
        return dp_fail(err, DP_EIO, "cannot read the journal in %s", m->jdir);
    m->mid_round = dp_xcalloc(65536, sizeof *m->mid_round);
    uint64_t ms = (uint64_t)(m->cfg->interval / DP_US_PER_MS);
    uv_timer_start(&m->pump, on_pump, ms ? ms : 1, ms ? ms : 1);
    uv_timer_start(&m->saver, on_saver, 1000, 1000);
    return 0;
}

static int mqtt_start(dp_device_t *dev, char **err)
{
    mqtt_t *m = dev->impl;
    mqtt_cfg_t *c = m->cfg;
    if (dev->host->loop == NULL) {
        dp_log_warn(NULL, "mqtt %s: not connected in virtual time", dev_name(m));
        return 0;
    }
    uv_timer_init(dev->host->loop, &m->pump);
    uv_timer_init(dev->host->loop, &m->saver);
    m->pump.data = m->saver.data = m;
    m->handles = 2;
    m->started = true;
    char *password = read_password(c, err);
    if (password == NULL && (c->password_env || c->password_file))
        return DP_ENOENT;
    char will[64];
    snprintf(will, sizeof will, "{\"status\":\"offline\"}");
    char *will_topic = dp_xasprintf("%s/status", m->prefix);
    dp_mqtt_opts_t o = {
        .name = dev->name,
        .host = c->host,
        .port = (int)c->port,
        .client_id = m->client_id,
        .protocol = c->protocol == 1 ? 5 : 4,
        .keepalive = (int)(c->keepalive / DP_US_PER_SEC),
        .clean_session = c->clean_session,
        .username = c->username,
        .password = password,
        .tls = c->tls,
        .ca_file = c->tls_ca,
        .cert_file = c->tls_cert,
        .key_file = c->tls_key,
        .tls_insecure = c->tls_insecure,
        .backoff_min = c->reconnect_min,
        .backoff_max = c->reconnect_max,
        .will_topic = c->publish ? will_topic : NULL,
        .will_payload = will,
        .will_len = strlen(will),
        .will_qos = 1,
        .will_retain = true,
    };
    dp_mqtt_cbs_t cbs = {.connected = on_connected,
                         .disconnected = on_disconnected,
                         .message = on_message,
                         .published = on_published};
    m->client = dp_mqtt_client_new(dev->host->loop, &o, &cbs, m, err);
    free(will_topic);
    if (password != NULL) {
        memset(password, 0, strlen(password));
        free(password);
    }
    if (m->client == NULL)
        return DP_EINVAL;
    if (c->publish) {
        int rc = start_north(m, err);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < m->nsouth; i++) {
        dp_mqtt_client_subscribe(m->client, m->south[i].pt->topic, (int)m->south[i].pt->qos);
        if (m->south[i].status != NULL)
            dp_mqtt_client_subscribe(m->client, m->south[i].status, 1);
    }
    if (m->cmd_sub != NULL)
        dp_mqtt_client_subscribe(m->client, m->cmd_sub, 1);
    dp_mqtt_client_start(m->client);
    return 0;
}

static void mqtt_stop(dp_device_t *dev)
{
    mqtt_t *m = dev->impl;
    if (!m->started || m->stopped)
        return;
    m->stopped = true;
    uv_timer_stop(&m->pump);
    uv_timer_stop(&m->saver);
    if (m->client != NULL) {
        if (m->cfg->publish && dp_mqtt_client_connected(m->client)) {
            /* A clean stop publishes what the journal holds so far (devices
             * stopped before this one included), so nothing waits for the
             * next start; it is acknowledged then, at the latest. */
            if (m->journal != NULL && dp_journal_sync(m->journal) == 0)
                pump(m);
            publish_status(m, false);
        }
        /* Up to 3 s for what a clean stop queued (the backlog, then the
         * status messages): a loaded gateway may need more than one. */
        dp_mqtt_client_free(m->client, 3000);
        m->client = NULL;
    }
    if (m->journal != NULL && m->jdir != NULL) {
        char *err = NULL;
        /* The position acknowledged so far; the rest is sent again next time. */
        advance(m);
        if (dp_jcursor_save(m->jdir, m->cursor, &m->acked, &err) < 0) {
            dp_log_error(NULL, "mqtt %s: cannot save cursor: %s", dev_name(m), err);
            free(err);
        }
    }
    dp_jreader_free(m->reader);
    m->reader = NULL;
}

static void mqtt_close(dp_device_t *dev)
{
    mqtt_t *m = dev->impl;
    if (m == NULL)
        return;
    mqtt_stop(dev);
    if (m->client != NULL)
        dp_mqtt_client_free(m->client, 0);
    for (req_t *r = m->reqs; r != NULL; r = r->next)
        r->m = NULL;
    if (m->saving != NULL)
        m->saving->m = NULL;
    for (size_t i = 0; i < m->nbuckets; i++) {
        free(m->buckets[i].topic);
        dp_jb_free(&m->buckets[i].items);
    }
    free(m->buckets);
    free(m->bidx);
    dp_jb_free(&m->msg);
    free(m->rounds);
    free(m->mid_round);
    for (size_t i = 0; i < m->nsouth; i++)
        free(m->south[i].status);
    free(m->south);
    free(m->prefix);
    free(m->client_id);
    free(m->cmd_sub);
    free(m->jdir);
    free(m->cursor);
    dev->impl = NULL;
    if (m->started) {
        uv_close((uv_handle_t *)&m->pump, on_handle_closed);
        uv_close((uv_handle_t *)&m->saver, on_handle_closed);
    } else {
        free(m);
    }
}

/* ---- Statistics ---------------------------------------------------------- */

/* Timestamp of the oldest record not yet acknowledged (0: none). */
static dp_time_t oldest_ts(mqtt_t *m, uint64_t backlog)
{
    if (backlog == 0)
        return 0;
    if (m->rcount > 0)
        return round_at(m, 0)->first_ts;
    if (m->age_seq == m->acked.seq + 1 && m->age_ts != 0)
        return m->age_ts;
    dp_jreader_t *r = dp_jreader_open(m->jdir, &m->acked, NULL, NULL, NULL);
    dp_jrec_t rec;
    m->age_ts = 0;
    if (r != NULL && dp_jreader_next(r, &rec, NULL) == 1) {
        m->age_ts = rec.ts;
        m->age_seq = m->acked.seq + 1;
    }
    dp_jreader_free(r);
    return m->age_ts;
}

static size_t mqtt_stats(dp_device_t *dev, dp_stat_t *out, size_t max)
{
    mqtt_t *m = dev->impl;
    dp_mqtt_client_stats_t cs = {.last_error = ""};
    if (m->client != NULL)
        dp_mqtt_client_get_stats(m->client, &cs);
    snprintf(m->statbuf, sizeof m->statbuf, "%s", cs.last_error ? cs.last_error : "");
    uint64_t backlog = 0;
    dp_time_t age = 0;
    if (m->journal != NULL) {
        uint64_t last = dp_journal_last_seq(m->journal);
        uint64_t done = m->acked.seq ? m->acked.seq - 1 : 0;
        backlog = last > done ? last - done : 0;
        dp_time_t ts = oldest_ts(m, backlog);
        age = ts ? now(m) - ts : 0;
        if (age < 0)
            age = 0;
    }
    dp_stat_t all[] = {
        {"connected", m->client && dp_mqtt_client_connected(m->client) ? 1 : 0, NULL},
        {"connects", (double)cs.connects, NULL},
        {"disconnects", (double)cs.disconnects, NULL},
        {"connect_failures", (double)cs.failures, NULL},
        {"messages_published", (double)m->messages, NULL},
        {"items_published", (double)m->items, NULL},
        {"inflight", (double)m->inflight, NULL},
        {"items_unpublishable", (double)m->skipped, NULL},
        {"backlog_records", (double)backlog, NULL},
        {"backlog_age_s", (double)age / 1e6, NULL},
        {"cursor_seq", (double)m->acked.seq, NULL},
        {"messages_refused_by_broker", (double)cs.refused, NULL},
        {"messages_received", (double)cs.received, NULL},
        {"samples_received", (double)m->samples_in, NULL},
        {"malformed", (double)m->malformed, NULL},
        {"duplicates_dropped", (double)m->duplicates, NULL},
        {"commands_accepted", (double)m->cmd_ok, NULL},
        {"commands_refused", (double)m->cmd_refused, NULL},
        {"last_error", 0, m->statbuf},
    };
    size_t n = DP_ARRAY_LEN(all) < max ? DP_ARRAY_LEN(all) : max;
    memcpy(out, all, sizeof *out * n);
    return n;
}

const dp_driver_t dp_mqtt_driver = {
    .name = "mqtt",
    .summary = "MQTT broker: topics into tags (south), the journal out with store-and-forward "
               "(north), commands in through the guard.",
    .device_settings = device_settings,
    .device_size = sizeof(mqtt_cfg_t),
    .point_settings = point_settings,
    .point_size = sizeof(mqtt_point_t),
    .open = mqtt_open,
    .add_point = mqtt_add_point,
    .start = mqtt_start,
    .stop = mqtt_stop,
    .close = mqtt_close,
    .stats = mqtt_stats,
};
