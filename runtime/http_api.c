/* The JSON endpoints under /api/v1 and /metrics (see docs/openapi.yaml). */
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../drivers/driver.h"
#include "http_int.h"
#include "journal.h"
#include "log.h"
#include "persist.h"

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static bool method_ok(dp__http_call_t *c, const char *method, const char *want)
{
    if (is(method, want) || (is(want, "GET") && is(method, "HEAD")))
        return true;
    dp__http_error(c, 405, "use %s", want);
    return false;
}

/* Parses ?name= as a positive integer within [1, max]; default `def`. */
static bool int_param(dp__http_call_t *c, const char *name, long def, long max, long *out)
{
    const char *s = dp__http_param(c, name);
    *out = def;
    if (s == NULL)
        return true;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > max) {
        dp__http_error(c, 400, "query parameter %s must be an integer from 1 to %ld", name, max);
        return false;
    }
    *out = v;
    return true;
}

/* ---- plant, twins, tags ------------------------------------------------- */

static void tag_json(dp_jbuf_t *b, dp_store_t *store, int id, dp_guard_t *g)
{
    const dp_tag_t *t = dp_store_get(store, id);
    dp_jb_puts(b, "{\"name\":");
    dp_jb_str(b, t->name);
    dp_jb_puts(b, ",\"value\":");
    dp_jb_value(b, &t->v);
    dp_jb_printf(b, ",\"quality\":\"%s\",\"ts\":", dp_quality_name(t->quality));
    dp__jb_time(b, t->ts);
    dp_jb_puts(b, ",\"unit\":");
    dp_jb_str(b, t->unit);
    dp_jb_printf(b, ",\"derived\":%s,\"writable\":%s,\"writes\":%llu,\"history\":%zu",
                 (t->flags & DP_TAG_DERIVED) ? "true" : "false",
                 ((t->flags & DP_TAG_WRITABLE) || (g != NULL && dp_guard_writable(g, id)))
                     ? "true"
                     : "false",
                 (unsigned long long)t->writes, dp_store_history_len(store, id));
    if (t->source != NULL && t->source[0]) {
        dp_jb_puts(b, ",\"source\":");
        dp_jb_str(b, t->source);
    }
    if (g != NULL) {
        dp_guard_limits_t lim;
        if (dp_guard_get_limits(g, id, &lim) == 0) {
            dp_jb_puts(b, ",\"limits\":{\"min\":");
            dp_jb_num(b, lim.min);
            dp_jb_puts(b, ",\"max\":");
            dp_jb_num(b, lim.max);
            dp_jb_puts(b, ",\"max_rate\":");
            dp_jb_num(b, lim.max_rate);
            dp_jb_puts(b, "}");
        }
    }
    dp_jb_puts(b, "}");
}

static bool tag_in_twin(const char *name, const char *twin)
{
    size_t n = strlen(twin);
    return strncmp(name, twin, n) == 0 && name[n] == '.';
}

static void twin_json(dp_jbuf_t *b, dp_plant_t *plant, dp_twin_t *tw, bool with_tags)
{
    dp_twin_stats_t st;
    dp_twin_get_stats(tw, &st);
    const char *name = dp_twin_name(tw);
    dp_jb_puts(b, "{\"name\":");
    dp_jb_str(b, name);
    dp_jb_puts(b, ",\"script\":");
    dp_jb_str(b, dp_twin_script(tw));
    dp_jb_printf(b,
                 ",\"suspended\":%s,\"generation\":%llu,\"calls\":%llu,\"errors\":%llu,"
                 "\"faults\":%llu,\"reloads\":%llu,\"reload_failures\":%llu,\"cpu_us\":%llu,"
                 "\"memory\":%zu",
                 st.suspended ? "true" : "false", (unsigned long long)st.generation,
                 (unsigned long long)st.calls, (unsigned long long)st.errors,
                 (unsigned long long)st.faults, (unsigned long long)st.reloads,
                 (unsigned long long)st.reload_failures, (unsigned long long)st.cpu_us, st.memory);
    dp_store_t *store = dp_plant_store(plant);
    dp_guard_t *g = dp__http_guard(plant);
    dp_jb_puts(b, ",\"tags\":[");
    bool first = true;
    for (int i = 0, n = dp_store_count(store); i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, i);
        if (!tag_in_twin(t->name, name))
            continue;
        if (!first)
            dp_jb_puts(b, ",");
        first = false;
        if (with_tags)
            tag_json(b, store, i, g);
        else
            dp_jb_str(b, t->name);
    }
    dp_jb_puts(b, "]}");
}

static void get_plant(dp__http_call_t *c)
{
    dp_plant_t *p = c->http->plant;
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"name\":");
    dp_jb_str(&b, dp_plant_name(p));
    dp_jb_puts(&b, ",\"version\":");
    dp_jb_str(&b, DP_VERSION);
    dp_jb_puts(&b, ",\"time\":");
    dp__jb_time(&b, dp_clock_now(dp_plant_clock(p)));
    dp_jb_printf(&b, ",\"twins\":%d,\"tags\":%d,\"devices\":%d", dp_plant_twin_count(p),
                 dp_store_count(dp_plant_store(p)), dp_plant_device_count(p));
    dp_guard_t *g = dp__http_guard(p);
    if (g != NULL)
        dp_jb_printf(&b, ",\"guard\":{\"writes_enabled\":%s,\"shadow\":%s}",
                     dp_guard_writes_enabled(g) ? "true" : "false",
                     dp_guard_shadow(g) ? "true" : "false");
    else
        dp_jb_puts(&b, ",\"guard\":null");
    dp_alarms_t *a = dp__http_alarms(p);
    int active = 0, unacked = 0;
    for (int i = 0, n = a != NULL ? dp_alarms_count(a) : 0; i < n; i++) {
        dp_alarm_info_t info;
        if (dp_alarms_get(a, i, &info) < 0 || info.retired)
            continue;
        active += info.active && !info.shelved && !info.suppressed;
        unacked += info.state == DP_ALARM_UNACKED || info.state == DP_ALARM_RTN_UNACKED;
    }
    dp_jb_printf(&b, ",\"alarms\":{\"available\":%s,\"active\":%d,\"unacked\":%d}",
                 a != NULL ? "true" : "false", active, unacked);
    dp_jb_puts(&b, ",\"you\":{\"name\":");
    dp_jb_str(&b, c->who);
    dp_jb_puts(&b, ",\"role\":");
    dp_jb_str(&b, dp_role_name(c->role));
    dp_jb_puts(&b, "}}");
    dp__http_json(c, 200, &b);
}

static void get_twins(dp__http_call_t *c)
{
    dp_plant_t *p = c->http->plant;
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "[");
    for (int i = 0, n = dp_plant_twin_count(p); i < n; i++) {
        if (i > 0)
            dp_jb_puts(&b, ",");
        twin_json(&b, p, dp_plant_twin_at(p, i), false);
    }
    dp_jb_puts(&b, "]");
    dp__http_json(c, 200, &b);
}

static void twin_reload(dp__http_call_t *c, const char *name)
{
    if (!dp__http_need(c, DP_ROLE_ENGINEER))
        return;
    char *err = NULL;
    dp_log_info(name, "reload requested over HTTP by %s", c->who);
    int rc = dp_plant_reload(c->http->plant, name, &err);
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"twin\":");
    dp_jb_str(&b, name);
    dp_jb_printf(&b, ",\"ok\":%s,\"error\":", rc == 0 ? "true" : "false");
    dp_jb_str(&b, rc == 0 ? NULL : (err != NULL ? err : dp_strerror(rc)));
    dp_jb_puts(&b, ",\"by\":");
    dp_jb_str(&b, c->who);
    dp_jb_puts(&b, "}");
    free(err);
    /* A failed reload keeps the old version running: the request itself was
     * fine, the script was not. */
    dp__http_json(c, rc == 0 ? 200 : 422, &b);
}

static void get_tags(dp__http_call_t *c)
{
    dp_store_t *store = dp_plant_store(c->http->plant);
    const char *twin = dp__http_param(c, "twin"), *glob = dp__http_param(c, "match");
    if (twin != NULL && dp_plant_twin(c->http->plant, twin) == NULL) {
        dp__http_error(c, 404, "no twin \"%s\"", twin);
        return;
    }
    dp_guard_t *g = dp__http_guard(c->http->plant);
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "[");
    bool first = true;
    for (int i = 0, n = dp_store_count(store); i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, i);
        if (twin != NULL && !tag_in_twin(t->name, twin))
            continue;
        if (glob != NULL && fnmatch(glob, t->name, 0) != 0)
            continue;
        if (!first)
            dp_jb_puts(&b, ",");
        first = false;
        tag_json(&b, store, i, g);
    }
    dp_jb_puts(&b, "]");
    dp__http_json(c, 200, &b);
}

static void get_history(dp__http_call_t *c, int id)
{
    dp_store_t *store = dp_plant_store(c->http->plant);
    long max = 0;
    if (!int_param(c, "max", c->http->cfg->history_max, c->http->cfg->history_max, &max))
        return;
    dp_time_t since = 0;
    const char *s = dp__http_param(c, "since");
    if (s != NULL) {
        char *err = NULL;
        if (dp_time_parse(s, &since, &err) < 0) {
            dp__http_error(c, 400, "since: %s", err);
            free(err);
            return;
        }
    }
    const dp_tag_t *t = dp_store_get(store, id);
    size_t n = dp_store_history_len(store, id);
    if (n > (size_t)max)
        n = (size_t)max;
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "{\"name\":");
    dp_jb_str(&b, t->name);
    dp_jb_puts(&b, ",\"unit\":");
    dp_jb_str(&b, t->unit);
    dp_jb_puts(&b, ",\"samples\":[");
    bool first = true;
    for (size_t i = n; i-- > 0;) {
        const dp_sample_t *sm = dp_store_history_at(store, id, i);
        if (sm == NULL || sm->ts < since)
            continue;
        if (!first)
            dp_jb_puts(&b, ",");
        first = false;
        dp_jb_printf(&b, "[%lld,", (long long)(sm->ts / 1000));
        dp_jb_value(&b, &sm->v);
        dp_jb_printf(&b, ",\"%s\"]", dp_quality_name(sm->quality));
    }
    dp_jb_puts(&b, "]}");
    dp__http_json(c, 200, &b);
}

/* ---- alarms ------------------------------------------------------------- */

static void alarm_json(dp_jbuf_t *b, const dp_alarm_info_t *a)
{
    dp_jb_puts(b, "{\"twin\":");
    dp_jb_str(b, a->twin);
    dp_jb_puts(b, ",\"name\":");
    dp_jb_str(b, a->name);
    dp_jb_puts(b, ",\"message\":");
    dp_jb_str(b, a->message);
    dp_jb_puts(b, ",\"group\":");
    dp_jb_str(b, a->group);
    dp_jb_printf(b,
                 ",\"severity\":\"%s\",\"priority\":%d,\"state\":\"%s\",\"active\":%s,"
                 "\"acked\":%s,\"shelved\":%s,\"suppressed\":%s,\"first_out\":%s,\"since\":",
                 dp_severity_name(a->severity), a->priority, dp_alarm_state_name(a->state),
                 a->active ? "true" : "false",
                 a->state == DP_ALARM_ACKED || a->state == DP_ALARM_NORMAL ? "true" : "false",
                 a->shelved ? "true" : "false", a->suppressed ? "true" : "false",
                 a->first_out ? "true" : "false");
    dp__jb_time(b, a->since);
    dp_jb_puts(b, ",\"shelved_until\":");
    dp__jb_time(b, a->shelved ? a->shelved_until : 0);
    dp_jb_puts(b, ",\"value\":");
    dp_jb_num(b, a->value);
    dp_jb_puts(b, ",\"limit\":");
    dp_jb_num(b, a->limit);
    dp_jb_puts(b, ",\"acked_by\":");
    dp_jb_str(b, a->acked_by[0] ? a->acked_by : NULL);
    dp_jb_puts(b, "}");
}

static void get_alarms(dp__http_call_t *c, dp_alarms_t *a)
{
    const char *twin = dp__http_param(c, "twin"), *state = dp__http_param(c, "state");
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "[");
    bool first = true;
    for (int i = 0, n = dp_alarms_count(a); i < n; i++) {
        dp_alarm_info_t info;
        if (dp_alarms_get(a, i, &info) < 0 || info.retired)
            continue;
        if (twin != NULL && strcmp(info.twin, twin) != 0)
            continue;
        if (state != NULL && strcmp(dp_alarm_state_name(info.state), state) != 0)
            continue;
        if (!first)
            dp_jb_puts(&b, ",");
        first = false;
        alarm_json(&b, &info);
    }
    dp_jb_puts(&b, "]");
    dp__http_json(c, 200, &b);
}

static void alarm_action(dp__http_call_t *c, dp_alarms_t *a, const char *twin, const char *name,
                         const char *action)
{
    if (!dp__http_need(c, DP_ROLE_OPERATOR))
        return;
    dp_time_t duration = 0;
    if (is(action, "shelve")) {
        dp_jobj_t body;
        if (dp__http_body(c, &body) < 0)
            return;
        const dp_value_t *d = dp_jobj_get(&body, "duration");
        char *err = NULL;
        int rc = 0;
        if (d == NULL)
            rc = dp_fail(&err, DP_EINVAL, "duration is required (\"30min\" or seconds)");
        else if (d->type == DP_NUM && d->u.n > 0 && d->u.n <= 7 * 86400)
            duration = (dp_time_t)(d->u.n * 1e6);
        else if (d->type == DP_STR)
            rc = dp_duration_parse(d->u.s, &duration, &err);
        else
            rc = dp_fail(&err, DP_EINVAL,
                         "duration must be a string like \"30min\" or seconds "
                         "up to 7 days");
        dp_jobj_free(&body);
        if (rc == 0 && (duration <= 0 || duration > 7 * 86400 * DP_US_PER_SEC))
            rc = dp_fail(&err, DP_EINVAL, "duration must be more than 0 and at most 7 days");
        if (rc < 0) {
            dp__http_error(c, 400, "duration: %s", err);
            free(err);
            return;
        }
    }
    char who[80];
    snprintf(who, sizeof who, "http:%s", c->who);
    char *err = NULL;
    int rc;
    if (is(action, "ack"))
        rc = dp_alarms_ack(a, twin, name, who, &err);
    else if (is(action, "shelve"))
        rc = dp_alarms_shelve(a, twin, name, duration, who, &err);
    else
        rc = dp_alarms_unshelve(a, twin, name, who, &err);
    if (rc < 0) {
        int status = rc == DP_ENOENT ? 404 : 409;
        dp__http_error(c, status, "%s", err != NULL ? err : dp_strerror(rc));
        free(err);
        return;
    }
    free(err);
    dp_log_info(twin, "alarm %s: %s by %s", name, action, who);
    dp_alarm_info_t info;
    dp_jbuf_t b = {0};
    if (dp_alarms_get(a, dp_alarms_find(a, twin, name), &info) == 0)
        alarm_json(&b, &info);
    else
        dp_jb_puts(&b, "{}");
    dp__http_json(c, 200, &b);
}

/* ---- events, drivers, commands, guard ----------------------------------- */

static void get_events(dp__http_call_t *c)
{
    dp_http_t *h = c->http;
    long max = 0;
    if (!int_param(c, "max", 100, DP_HTTP_EVENTS, &max))
        return;
    const char *twin = dp__http_param(c, "twin"), *kind = dp__http_param(c, "kind");
    uint64_t have = h->nevents < DP_HTTP_EVENTS ? h->nevents : DP_HTTP_EVENTS;
    /* Newest last; walk back from the newest until `max` matched. */
    uint64_t take[DP_HTTP_EVENTS];
    size_t ntake = 0;
    for (uint64_t k = 0; k < have && ntake < (size_t)max; k++) {
        uint64_t idx = (h->nevents - 1 - k) % DP_HTTP_EVENTS;
        const dp__http_event_t *e = &h->events[idx];
        if (twin != NULL && (e->twin == NULL || strcmp(e->twin, twin) != 0))
            continue;
        if (kind != NULL && strcmp(e->kind, kind) != 0)
            continue;
        take[ntake++] = idx;
    }
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "[");
    for (size_t i = ntake; i-- > 0;) {
        dp__http_event_json(&b, &h->events[take[i]]);
        if (i > 0)
            dp_jb_puts(&b, ",");
    }
    dp_jb_puts(&b, "]");
    dp__http_json(c, 200, &b);
}

static void get_commands(dp__http_call_t *c)
{
    dp_http_t *h = c->http;
    uint64_t have = h->ncmds < DP_HTTP_COMMANDS ? h->ncmds : DP_HTTP_COMMANDS;
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "[");
    for (uint64_t k = have; k-- > 0;) {
        dp__http_cmd_json(&b, &h->cmds[(h->ncmds - 1 - k) % DP_HTTP_COMMANDS]);
        if (k > 0)
            dp_jb_puts(&b, ",");
    }
    dp_jb_puts(&b, "]");
    dp__http_json(c, 200, &b);
}

static void post_command(dp__http_call_t *c)
{
    if (!dp__http_need(c, DP_ROLE_OPERATOR))
        return;
    dp_jobj_t body;
    if (dp__http_body(c, &body) < 0)
        return;
    const dp_value_t *tag = dp_jobj_get(&body, "tag"), *value = dp_jobj_get(&body, "value");
    if (tag == NULL || tag->type != DP_STR || tag->u.s[0] == '\0')
        dp__http_error(c, 400, "tag is required (a string such as \"P101.speed_sp\")");
    else if (value == NULL || value->type == DP_NIL)
        dp__http_error(c, 400, "value is required (a number, boolean or string)");
    else
        dp__http_submit(c, tag->u.s, value);
    dp_jobj_free(&body);
}

static void guard_json(dp__http_call_t *c, dp_guard_t *g)
{
    dp_guard_stats_t st;
    dp_guard_get_stats(g, &st);
    dp_jbuf_t b = {0};
    dp_jb_printf(&b,
                 "{\"writes_enabled\":%s,\"shadow\":%s,\"submitted\":%llu,\"done\":%llu,"
                 "\"rejected\":%llu,\"failed\":%llu,\"shadowed\":%llu,\"pending\":%llu}",
                 dp_guard_writes_enabled(g) ? "true" : "false",
                 dp_guard_shadow(g) ? "true" : "false", (unsigned long long)st.submitted,
                 (unsigned long long)st.done, (unsigned long long)st.rejected,
                 (unsigned long long)st.failed, (unsigned long long)st.shadow,
                 (unsigned long long)st.pending);
    dp__http_json(c, 200, &b);
}

static void post_guard(dp__http_call_t *c, dp_guard_t *g)
{
    if (!dp__http_need(c, DP_ROLE_ENGINEER))
        return;
    dp_jobj_t body;
    if (dp__http_body(c, &body) < 0)
        return;
    const dp_value_t *shadow = dp_jobj_get(&body, "shadow"), *writes = dp_jobj_get(&body, "writes");
    bool bad = (shadow == NULL && writes == NULL) || (shadow != NULL && shadow->type != DP_BOOL) ||
               (writes != NULL && writes->type != DP_BOOL);
    for (int i = 0; i < body.n && !bad; i++)
        bad = !is(body.f[i].key, "shadow") && !is(body.f[i].key, "writes");
    if (bad) {
        dp_jobj_free(&body);
        dp__http_error(c, 400, "expected {\"shadow\": true|false} and/or {\"writes\": true|false}");
        return;
    }
    char who[80];
    snprintf(who, sizeof who, "http:%s", c->who);
    if (shadow != NULL)
        dp_guard_set_shadow(g, shadow->u.b, who);
    if (writes != NULL)
        dp_guard_enable_writes(g, writes->u.b, who);
    dp_jobj_free(&body);
    guard_json(c, g);
}

static void get_drivers(dp__http_call_t *c)
{
    dp_plant_t *p = c->http->plant;
    dp_jbuf_t b = {0};
    dp_jb_puts(&b, "[");
    for (int i = 0, n = dp_plant_device_count(p); i < n; i++) {
        dp_device_t *d = dp_plant_device_at(p, i);
        if (d == NULL)
            continue;
        if (i > 0)
            dp_jb_puts(&b, ",");
        dp_jb_puts(&b, "{\"name\":");
        dp_jb_str(&b, d->name);
        dp_jb_puts(&b, ",\"driver\":");
        dp_jb_str(&b, d->driver->name);
        dp_jb_puts(&b, ",\"summary\":");
        dp_jb_str(&b, d->driver->summary);
        dp_jb_puts(&b, ",\"stats\":{");
        if (d->driver->stats != NULL) {
            dp_stat_t st[64];
            size_t ns = d->driver->stats(d, st, DP_ARRAY_LEN(st));
            for (size_t k = 0; k < ns; k++) {
                dp_jb_key(&b, st[k].name, k == 0);
                if (st[k].text != NULL)
                    dp_jb_str(&b, st[k].text);
                else
                    dp_jb_num(&b, st[k].value);
            }
        }
        /* Health from the device's tags: how many are bad or uncertain. */
        dp_store_t *store = dp_plant_store(p);
        int tags = 0, bad = 0, uncertain = 0;
        size_t nl = strlen(d->name);
        for (int t = 0, nt = dp_store_count(store); t < nt; t++) {
            const dp_tag_t *tag = dp_store_get(store, t);
            if (tag->source == NULL || strncmp(tag->source, d->name, nl) != 0 ||
                (tag->source[nl] != ':' && tag->source[nl] != '\0'))
                continue;
            tags++;
            bad += tag->quality == DP_Q_BAD;
            uncertain += tag->quality == DP_Q_UNCERTAIN;
        }
        dp_jb_printf(&b, "},\"tags\":%d,\"bad\":%d,\"uncertain\":%d}", tags, bad, uncertain);
    }
    dp_jb_puts(&b, "]");
    dp__http_json(c, 200, &b);
}

/* ---- router ------------------------------------------------------------- */

int dp__http_api(dp__http_call_t *c, const char *method, char **s, int n)
{
    dp_plant_t *p = c->http->plant;
    if (n == 0)
        return -1;
    if (is(s[0], "plant") && n == 1) {
        if (method_ok(c, method, "GET"))
            get_plant(c);
        return 0;
    }
    if (is(s[0], "twins")) {
        if (n == 1) {
            if (method_ok(c, method, "GET"))
                get_twins(c);
            return 0;
        }
        dp_twin_t *tw = dp_plant_twin(p, s[1]);
        if (tw == NULL) {
            dp__http_error(c, 404, "no twin \"%s\"", s[1]);
            return 0;
        }
        if (n == 2) {
            if (method_ok(c, method, "GET")) {
                dp_jbuf_t b = {0};
                twin_json(&b, p, tw, true);
                dp__http_json(c, 200, &b);
            }
            return 0;
        }
        if (n == 3 && is(s[2], "reload")) {
            if (method_ok(c, method, "POST"))
                twin_reload(c, s[1]);
            return 0;
        }
        return -1;
    }
    if (is(s[0], "tags")) {
        if (n == 1) {
            if (method_ok(c, method, "GET"))
                get_tags(c);
            return 0;
        }
        int id = dp_store_find(dp_plant_store(p), s[1]);
        if (id < 0) {
            dp__http_error(c, 404, "no tag \"%s\"", s[1]);
            return 0;
        }
        if (n == 2) {
            if (method_ok(c, method, "GET")) {
                dp_jbuf_t b = {0};
                tag_json(&b, dp_plant_store(p), id, dp__http_guard(p));
                dp__http_json(c, 200, &b);
            }
            return 0;
        }
        if (n == 3 && is(s[2], "history")) {
            if (method_ok(c, method, "GET"))
                get_history(c, id);
            return 0;
        }
        return -1;
    }
    if (is(s[0], "alarms")) {
        dp_alarms_t *a = dp__http_alarms(p);
        if (a == NULL) {
            dp__http_error(c, 503, "the alarm list is not available in this build");
            return 0;
        }
        if (n == 1) {
            if (method_ok(c, method, "GET"))
                get_alarms(c, a);
            return 0;
        }
        if (n == 4 && (is(s[3], "ack") || is(s[3], "shelve") || is(s[3], "unshelve"))) {
            if (method_ok(c, method, "POST"))
                alarm_action(c, a, s[1], s[2], s[3]);
            return 0;
        }
        return -1;
    }
    if (is(s[0], "events") && n == 1) {
        if (method_ok(c, method, "GET"))
            get_events(c);
        return 0;
    }
    if (is(s[0], "drivers") && n == 1) {
        if (method_ok(c, method, "GET"))
            get_drivers(c);
        return 0;
    }
    if (is(s[0], "commands") && n == 1) {
        if (is(method, "POST"))
            post_command(c);
        else if (method_ok(c, method, "GET"))
            get_commands(c);
        return 0;
    }
    if (is(s[0], "guard") && n == 1) {
        dp_guard_t *g = dp__http_guard(p);
        if (g == NULL) {
            dp__http_error(c, 503, "the guard is not available in this build");
            return 0;
        }
        if (is(method, "POST"))
            post_guard(c, g);
        else if (method_ok(c, method, "GET"))
            guard_json(c, g);
        return 0;
    }
    return -1;
}

/* ---- /metrics ------------------------------------------------------------ */

/* Prometheus label values escape backslash, quote and newline. */
static void label(dp_jbuf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            dp_jb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            dp_jb_puts(b, "\\n");
        else
            dp_jb_raw(b, s, 1);
    }
}

static void metric_head(dp_jbuf_t *b, const char *name, const char *type, const char *help)
{
    dp_jb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void dp__http_metrics(dp__http_call_t *c)
{
    dp_http_t *h = c->http;
    dp_plant_t *p = h->plant;
    dp_store_t *store = dp_plant_store(p);
    dp_jbuf_t b = {0};
    uint64_t samples = 0;
    int bad = 0, uncertain = 0;
    for (int i = 0, n = dp_store_count(store); i < n; i++) {
        const dp_tag_t *t = dp_store_get(store, i);
        samples += t->writes;
        bad += t->quality == DP_Q_BAD;
        uncertain += t->quality == DP_Q_UNCERTAIN;
    }
    metric_head(&b, "doppel_samples_total", "counter", "Samples accepted by the store.");
    dp_jb_printf(&b, "doppel_samples_total %llu\n", (unsigned long long)samples);
    metric_head(&b, "doppel_samples_per_second", "gauge", "Samples accepted in the last second.");
    dp_jb_printf(&b, "doppel_samples_per_second %g\n", h->samples_per_s);
    metric_head(&b, "doppel_tags", "gauge", "Tags in the store, by quality.");
    dp_jb_printf(&b, "doppel_tags{quality=\"good\"} %d\n", dp_store_count(store) - bad - uncertain);
    dp_jb_printf(&b, "doppel_tags{quality=\"uncertain\"} %d\n", uncertain);
    dp_jb_printf(&b, "doppel_tags{quality=\"bad\"} %d\n", bad);
    metric_head(&b, "doppel_loop_lag_seconds", "gauge",
                "How late the loop ran a 100 ms timer, last measurement.");
    dp_jb_printf(&b, "doppel_loop_lag_seconds %.6f\n", h->lag_s);
    metric_head(&b, "doppel_loop_lag_max_seconds", "gauge", "Largest loop lag seen.");
    dp_jb_printf(&b, "doppel_loop_lag_max_seconds %.6f\n", h->lag_max_s);

    metric_head(&b, "doppel_twin_cpu_seconds_total", "counter", "Time spent in a twin's handlers.");
    for (int i = 0, n = dp_plant_twin_count(p); i < n; i++) {
        dp_twin_stats_t st;
        dp_twin_t *tw = dp_plant_twin_at(p, i);
        dp_twin_get_stats(tw, &st);
        dp_jb_puts(&b, "doppel_twin_cpu_seconds_total{twin=\"");
        label(&b, dp_twin_name(tw));
        dp_jb_printf(&b, "\"} %.6f\n", (double)st.cpu_us / 1e6);
    }
    static const char *const twin_metrics[][3] = {
        {"doppel_twin_memory_bytes", "gauge", "Bytes held by a twin's Lua state."},
        {"doppel_twin_calls_total", "counter", "Handler calls."},
        {"doppel_twin_errors_total", "counter", "Handler calls that raised an error."},
        {"doppel_twin_faults_total", "counter", "Budget or memory faults."},
        {"doppel_twin_reloads_total", "counter", "Successful reloads."},
        {"doppel_twin_suspended", "gauge", "1 while the twin is suspended."},
    };
    for (size_t m = 0; m < DP_ARRAY_LEN(twin_metrics); m++) {
        metric_head(&b, twin_metrics[m][0], twin_metrics[m][1], twin_metrics[m][2]);
        for (int i = 0, n = dp_plant_twin_count(p); i < n; i++) {
            dp_twin_stats_t st;
            dp_twin_t *tw = dp_plant_twin_at(p, i);
            dp_twin_get_stats(tw, &st);
            double v[] = {(double)st.memory, (double)st.calls,   (double)st.errors,
                          (double)st.faults, (double)st.reloads, st.suspended ? 1.0 : 0.0};
            dp_jb_printf(&b, "%s{twin=\"", twin_metrics[m][0]);
            label(&b, dp_twin_name(tw));
            dp_jb_puts(&b, "\"} ");
            dp_jb_num(&b, v[m]);
            dp_jb_raw(&b, "\n", 1);
        }
    }

    /* Driver statistics: every numeric statistic of every device, so errors
     * and latency appear under the names the driver gives them. */
    metric_head(&b, "doppel_device_stat", "gauge",
                "A device's statistic (requests, errors, latency, ...), as its driver reports.");
    for (int i = 0, n = dp_plant_device_count(p); i < n; i++) {
        dp_device_t *d = dp_plant_device_at(p, i);
        if (d == NULL || d->driver->stats == NULL)
            continue;
        dp_stat_t st[64];
        size_t ns = d->driver->stats(d, st, DP_ARRAY_LEN(st));
        for (size_t k = 0; k < ns; k++) {
            if (st[k].text != NULL || !isfinite(st[k].value))
                continue;
            dp_jb_puts(&b, "doppel_device_stat{device=\"");
            label(&b, d->name);
            dp_jb_puts(&b, "\",driver=\"");
            label(&b, d->driver->name);
            dp_jb_puts(&b, "\",stat=\"");
            label(&b, st[k].name);
            dp_jb_puts(&b, "\"} ");
            dp_jb_num(&b, st[k].value);
            dp_jb_raw(&b, "\n", 1);
        }
    }

    dp_guard_t *g = dp__http_guard(p);
    if (g != NULL) {
        dp_guard_stats_t st;
        dp_guard_get_stats(g, &st);
        metric_head(&b, "doppel_commands_total", "counter", "Commands by outcome.");
        const char *names[] = {"done", "rejected", "failed", "shadow"};
        uint64_t vals[] = {st.done, st.rejected, st.failed, st.shadow};
        for (int k = 0; k < 4; k++)
            dp_jb_printf(&b, "doppel_commands_total{outcome=\"%s\"} %llu\n", names[k],
                         (unsigned long long)vals[k]);
        metric_head(&b, "doppel_commands_pending", "gauge", "Commands waiting for a writer.");
        dp_jb_printf(&b, "doppel_commands_pending %llu\n", (unsigned long long)st.pending);
    }
    dp_alarms_t *a = dp__http_alarms(p);
    if (a != NULL) {
        int active = 0, unacked = 0;
        for (int i = 0, n = dp_alarms_count(a); i < n; i++) {
            dp_alarm_info_t info;
            if (dp_alarms_get(a, i, &info) < 0 || info.retired)
                continue;
            active += info.active;
            unacked += info.state == DP_ALARM_UNACKED || info.state == DP_ALARM_RTN_UNACKED;
        }
        metric_head(&b, "doppel_alarms_active", "gauge", "Alarms whose condition holds.");
        dp_jb_printf(&b, "doppel_alarms_active %d\n", active);
        metric_head(&b, "doppel_alarms_unacked", "gauge", "Alarms waiting for acknowledgement.");
        dp_jb_printf(&b, "doppel_alarms_unacked %d\n", unacked);
    }

    dp_persist_t *ps = dp_plant_persist(p);
    dp_journal_t *j = ps != NULL ? dp_persist_journal(ps) : NULL;
    if (j != NULL) {
        dp_journal_stats_t js;
        dp_journal_get_stats(j, &js);
        uint64_t last = dp_journal_last_seq(j), durable = dp_journal_durable(j);
        metric_head(&b, "doppel_journal_records_total", "counter", "Records appended.");
        dp_jb_printf(&b, "doppel_journal_records_total %llu\n", (unsigned long long)js.records);
        metric_head(&b, "doppel_journal_bytes_total", "counter", "Bytes written.");
        dp_jb_printf(&b, "doppel_journal_bytes_total %llu\n", (unsigned long long)js.bytes);
        metric_head(&b, "doppel_journal_fsyncs_total", "counter", "fsync calls.");
        dp_jb_printf(&b, "doppel_journal_fsyncs_total %llu\n", (unsigned long long)js.fsyncs);
        metric_head(&b, "doppel_journal_backlog_records", "gauge",
                    "Records appended but not yet durable.");
        dp_jb_printf(&b, "doppel_journal_backlog_records %llu\n",
                     (unsigned long long)(last > durable ? last - durable : 0));
        metric_head(&b, "doppel_journal_failed", "gauge",
                    "1 while journal writes fail (a full disk): what is accepted is kept in "
                    "memory and written again every 2 s; 0 once the disk takes it again.");
        dp_jb_printf(&b, "doppel_journal_failed %d\n", js.failed ? 1 : 0);
    }

    metric_head(&b, "doppel_http_requests_total", "counter", "HTTP responses by status class.");
    for (int k = 1; k < 6; k++)
        dp_jb_printf(&b, "doppel_http_requests_total{code=\"%dxx\"} %llu\n", k,
                     (unsigned long long)h->status_counts[k]);
    metric_head(&b, "doppel_http_rate_limited_total", "counter",
                "Requests refused by the rate limit.");
    dp_jb_printf(&b, "doppel_http_rate_limited_total %llu\n", (unsigned long long)h->rate_limited);
    metric_head(&b, "doppel_http_auth_failures_total", "counter",
                "Requests refused for credentials.");
    dp_jb_printf(&b, "doppel_http_auth_failures_total %llu\n",
                 (unsigned long long)h->auth_failures);
    metric_head(&b, "doppel_http_streams", "gauge", "Open live streams.");
    dp_jb_printf(&b, "doppel_http_streams %d\n", h->nstreams);
    metric_head(&b, "doppel_http_stream_changes_total", "counter", "Tag changes sent to streams.");
    dp_jb_printf(&b, "doppel_http_stream_changes_total %llu\n",
                 (unsigned long long)h->stream_changes);
    metric_head(&b, "doppel_http_stream_drops_total", "counter",
                "Streams closed because the client fell behind.");
    dp_jb_printf(&b, "doppel_http_stream_drops_total %llu\n", (unsigned long long)h->stream_drops);
    metric_head(&b, "doppel_http_connections", "gauge", "Open HTTP connections.");
    dp_jb_printf(&b, "doppel_http_connections %d\n", h->nconns);
    metric_head(&b, "doppel_http_connections_refused_total", "counter",
                "Connections closed as they came because max_connections were open.");
    dp_jb_printf(&b, "doppel_http_connections_refused_total %llu\n",
                 (unsigned long long)h->conns_refused);

    h2o_req_t *req = c->req;
    h->requests++;
    h->status_counts[2]++;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_send_inline(req, b.p, b.len);
    dp_jb_free(&b);
}
