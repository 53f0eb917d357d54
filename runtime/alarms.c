#include "alarms.h"

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef struct {
    dp_alarm_info_t info;
    char *twin, *name, *message, *group;
    bool declared; /* since dp_alarms_begin() */
    bool created;  /* first declared since dp_alarms_begin() */
} alarm_t;

struct dp_alarms {
    dp_clock_t *clock;
    dp_alarms_emit_cb emit;
    void *ud;
    alarm_t **v;
    int n;
};

static const char *const state_names[] = {"normal", "unacked", "acked", "rtn_unacked"};
static const char *const severity_names[] = {"low", "medium", "high", "critical"};

const char *dp_alarm_state_name(dp_alarm_state_t s)
{
    return (unsigned)s < DP_ARRAY_LEN(state_names) ? state_names[s] : "?";
}

const char *dp_severity_name(dp_severity_t s)
{
    return (unsigned)s < DP_ARRAY_LEN(severity_names) ? severity_names[s] : "?";
}

int dp_severity_parse(const char *s)
{
    for (size_t i = 0; i < DP_ARRAY_LEN(severity_names); i++) {
        if (strcmp(s, severity_names[i]) == 0)
            return (int)i;
    }
    return DP_EINVAL;
}

dp_alarms_t *dp_alarms_new(dp_clock_t *clock, dp_alarms_emit_cb emit, void *ud)
{
    dp_alarms_t *a = dp_xcalloc(1, sizeof *a);
    a->clock = clock;
    a->emit = emit;
    a->ud = ud;
    return a;
}

void dp_alarms_free(dp_alarms_t *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < a->n; i++) {
        free(a->v[i]->twin);
        free(a->v[i]->name);
        free(a->v[i]->message);
        free(a->v[i]->group);
        free(a->v[i]);
    }
    free(a->v);
    free(a);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Raises one "alarm" event: `what` is the transition (active, cleared,
 * acknowledged, shelved, unshelved, suppressed, unsuppressed). */
static void emit(dp_alarms_t *a, alarm_t *al, const char *what, const char *who)
{
    dp_alarm_info_t *i = &al->info;
    i->since = dp_clock_now(a->clock);
    if (a->emit == NULL)
        return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* Keys in sorted order, like every other event payload. */
    /* A shelving says until when, so that replaying the journal can redo it. */
    bool until = strcmp(what, "shelved") == 0;
    msgpack_pack_map(&pk, 9 + (who != NULL) + until);
    if (who) {
        pack_str(&pk, "by");
        pack_str(&pk, who);
    }
    pack_str(&pk, "first_out");
    if (i->first_out)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    pack_str(&pk, "group");
    pack_str(&pk, i->group);
    pack_str(&pk, "limit");
    msgpack_pack_double(&pk, i->limit);
    pack_str(&pk, "message");
    pack_str(&pk, i->message);
    pack_str(&pk, "name");
    pack_str(&pk, i->name);
    pack_str(&pk, "priority");
    msgpack_pack_int(&pk, i->priority);
    pack_str(&pk, "severity");
    pack_str(&pk, dp_severity_name(i->severity));
    pack_str(&pk, "state");
    pack_str(&pk, what);
    if (until) {
        pack_str(&pk, "until");
        msgpack_pack_int64(&pk, i->shelved_until);
    }
    pack_str(&pk, "value");
    msgpack_pack_double(&pk, i->value);

    /* A discrete alarm has no limit (NaN): the text leaves it out. */
    char nums[96] = "";
    if (!isnan(i->limit))
        snprintf(nums, sizeof nums, " value=%.6g limit=%.6g", i->value, i->limit);
    char text[512];
    snprintf(text, sizeof text, "%s %s (%s, priority %d%s)%s%s%s%s%s", i->name, what,
             dp_severity_name(i->severity), i->priority, i->first_out ? ", first out" : "", nums,
             who ? " by " : "", who ? who : "", i->message[0] ? ": " : "", i->message);
    dp_event_t ev = {.ts = i->since,
                     .twin = i->twin,
                     .kind = "alarm",
                     .text = text,
                     .payload = sb.data,
                     .payload_len = sb.size};
    a->emit(&ev, a->ud);
    msgpack_sbuffer_destroy(&sb);
}

int dp_alarms_find(const dp_alarms_t *a, const char *twin, const char *name)
{
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->v[i]->twin, twin) == 0 && strcmp(a->v[i]->name, name) == 0)
            return i;
    }
    return DP_ENOENT;
}

int dp_alarms_declare(dp_alarms_t *a, const char *twin, const char *name, const char *message,
                      const char *group, dp_severity_t severity, int priority, double limit)
{
    if (twin == NULL || name == NULL || name[0] == '\0' || (unsigned)severity > DP_SEV_CRITICAL ||
        priority < 1 || priority > 4)
        return DP_EINVAL;
    int id = dp_alarms_find(a, twin, name);
    alarm_t *al;
    if (id >= 0) {
        /* A reload declares its alarms again: keep the state operators see. */
        al = a->v[id];
        free(al->message);
        free(al->group);
    } else {
        al = dp_xcalloc(1, sizeof *al);
        al->created = true;
        al->twin = dp_xstrdup(twin);
        al->name = dp_xstrdup(name);
        a->v = dp_xrealloc(a->v, sizeof *a->v * (size_t)(a->n + 1));
        id = a->n;
        a->v[a->n++] = al;
    }
    al->declared = true;
    al->info.retired = false;
    al->message = dp_xstrdup(message != NULL ? message : "");
    al->group = dp_xstrdup(group != NULL ? group : "");
    dp_alarm_info_t *i = &al->info;
    i->twin = al->twin;
    i->name = al->name;
    i->message = al->message;
    i->group = al->group;
    i->severity = severity;
    i->priority = priority;
    i->limit = limit;
    return id;
}

int dp_alarms_restore(dp_alarms_t *a, const dp_alarm_info_t *saved)
{
    if (saved->twin == NULL || saved->name == NULL || (unsigned)saved->state > DP_ALARM_RTN_UNACKED)
        return DP_EINVAL;
    int id = dp_alarms_declare(a, saved->twin, saved->name, saved->message, saved->group,
                               saved->severity, saved->priority, saved->limit);
    if (id < 0)
        return id;
    alarm_t *al = a->v[id];
    al->declared = al->created = false; /* the twin's script declares it */
    dp_alarm_info_t *i = &al->info;
    i->state = saved->state;
    i->active = saved->active;
    i->shelved = saved->shelved;
    i->shelved_until = saved->shelved_until;
    i->suppressed = saved->suppressed;
    i->first_out = saved->first_out;
    i->since = saved->since;
    i->value = saved->value;
    snprintf(i->acked_by, sizeof i->acked_by, "%s", saved->acked_by);
    return id;
}

static alarm_t *get(dp_alarms_t *a, int id)
{
    return id >= 0 && id < a->n ? a->v[id] : NULL;
}

static bool annunciated(const dp_alarm_info_t *i)
{
    return !i->shelved && !i->suppressed;
}

/* First-out: the first alarm of a group to activate while no other alarm of
 * the group is active is marked; the others in the group are not. */
static void mark_first_out(dp_alarms_t *a, alarm_t *al)
{
    al->info.first_out = false;
    if (al->info.group[0] == '\0')
        return;
    for (int k = 0; k < a->n; k++) {
        alarm_t *o = a->v[k];
        if (o != al && strcmp(o->info.group, al->info.group) == 0 && o->info.active)
            return;
    }
    for (int k = 0; k < a->n; k++) {
        if (strcmp(a->v[k]->info.group, al->info.group) == 0)
            a->v[k]->info.first_out = false;
    }
    al->info.first_out = true;
}

int dp_alarms_condition(dp_alarms_t *a, int id, bool active, double value)
{
    alarm_t *al = get(a, id);
    if (al == NULL)
        return DP_EINVAL;
    dp_alarm_info_t *i = &al->info;
    if (i->active == active)
        return 0;
    i->value = value;
    if (active) {
        mark_first_out(a, al);
        i->active = true;
        if (annunciated(i)) {
            i->state = DP_ALARM_UNACKED;
            i->acked_by[0] = '\0';
        }
        emit(a, al, "active", NULL);
    } else {
        i->active = false;
        if (i->state == DP_ALARM_UNACKED)
            i->state = DP_ALARM_RTN_UNACKED;
        else if (i->state == DP_ALARM_ACKED)
            i->state = DP_ALARM_NORMAL;
        emit(a, al, "cleared", NULL);
    }
    return 0;
}

/* Back to annunciation after shelving or suppression ends. */
static void reannunciate(dp_alarm_info_t *i)
{
    if (annunciated(i))
        i->state = i->active ? DP_ALARM_UNACKED : DP_ALARM_NORMAL;
}

int dp_alarms_suppress(dp_alarms_t *a, int id, bool suppressed)
{
    alarm_t *al = get(a, id);
    if (al == NULL)
        return DP_EINVAL;
    dp_alarm_info_t *i = &al->info;
    if (i->suppressed == suppressed)
        return 0;
    i->suppressed = suppressed;
    if (suppressed)
        i->state = DP_ALARM_NORMAL;
    else
        reannunciate(i);
    emit(a, al, suppressed ? "suppressed" : "unsuppressed", NULL);
    return 0;
}

static alarm_t *lookup(dp_alarms_t *a, const char *twin, const char *name, char **err)
{
    int id = dp_alarms_find(a, twin, name);
    if (id < 0 || a->v[id]->info.retired) {
        /* A retired alarm is no longer declared: operators cannot act on it. */
        dp_fail(err, DP_ENOENT, "no alarm \"%s\" in twin %s", name, twin);
        return NULL;
    }
    return a->v[id];
}

int dp_alarms_ack(dp_alarms_t *a, const char *twin, const char *name, const char *who, char **err)
{
    alarm_t *al = lookup(a, twin, name, err);
    if (al == NULL)
        return DP_ENOENT;
    dp_alarm_info_t *i = &al->info;
    if (i->state == DP_ALARM_UNACKED)
        i->state = DP_ALARM_ACKED;
    else if (i->state == DP_ALARM_RTN_UNACKED)
        i->state = DP_ALARM_NORMAL;
    else
        return dp_fail(err, DP_ESTATE, "alarm %s.%s needs no acknowledgement (%s)", twin, name,
                       i->state == DP_ALARM_ACKED ? "already acknowledged" : "not active");
    snprintf(i->acked_by, sizeof i->acked_by, "%s", who != NULL ? who : "");
    emit(a, al, "acknowledged", who != NULL ? who : "");
    return 0;
}

int dp_alarms_shelve(dp_alarms_t *a, const char *twin, const char *name, dp_time_t duration,
                     const char *who, char **err)
{
    alarm_t *al = lookup(a, twin, name, err);
    if (al == NULL)
        return DP_ENOENT;
    if (duration <= 0)
        return dp_fail(err, DP_EINVAL, "shelving needs a duration > 0");
    dp_alarm_info_t *i = &al->info;
    i->shelved = true;
    i->shelved_until = dp_clock_now(a->clock) + duration;
    i->state = DP_ALARM_NORMAL;
    emit(a, al, "shelved", who != NULL ? who : "");
    return 0;
}

static void unshelve(dp_alarms_t *a, alarm_t *al, const char *who)
{
    al->info.shelved = false;
    al->info.shelved_until = 0;
    reannunciate(&al->info);
    emit(a, al, "unshelved", who);
}

int dp_alarms_unshelve(dp_alarms_t *a, const char *twin, const char *name, const char *who,
                       char **err)
{
    alarm_t *al = lookup(a, twin, name, err);
    if (al == NULL)
        return DP_ENOENT;
    if (!al->info.shelved)
        return dp_fail(err, DP_ESTATE, "alarm %s.%s is not shelved", twin, name);
    unshelve(a, al, who != NULL ? who : "");
    return 0;
}

void dp_alarms_begin(dp_alarms_t *a, const char *twin)
{
    for (int k = 0; k < a->n; k++) {
        if (strcmp(a->v[k]->twin, twin) == 0)
            a->v[k]->declared = a->v[k]->created = false;
    }
}

void dp_alarms_end(dp_alarms_t *a, const char *twin, bool live)
{
    for (int k = 0; k < a->n; k++) {
        alarm_t *al = a->v[k];
        if (strcmp(al->twin, twin) != 0 || al->info.retired)
            continue;
        if (live ? !al->declared : al->created) {
            if (al->info.active)
                dp_alarms_condition(a, k, false, al->info.value);
            al->info.retired = true;
            al->info.state = DP_ALARM_NORMAL;
            al->info.shelved = false;
            al->info.suppressed = false;
            al->info.first_out = false;
        }
        al->declared = al->created = false;
    }
}

void dp_alarms_tick(dp_alarms_t *a)
{
    dp_time_t now = dp_clock_now(a->clock);
    for (int k = 0; k < a->n; k++) {
        alarm_t *al = a->v[k];
        if (al->info.shelved && !al->info.retired && now >= al->info.shelved_until)
            unshelve(a, al, "expiry");
    }
}

int dp_alarms_count(const dp_alarms_t *a)
{
    return a->n;
}

int dp_alarms_get(const dp_alarms_t *a, int i, dp_alarm_info_t *out)
{
    if (i < 0 || i >= a->n)
        return DP_EINVAL;
    *out = a->v[i]->info;
    return 0;
}
