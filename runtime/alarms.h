/* The plant's alarm list, ISA-18.2 style.
 *
 * Each alarm belongs to a twin and has a condition that the twin's script
 * evaluates (stdlib doppel.alarm: limits with hysteresis and delays); the
 * script reports the condition with dp_alarms_condition(), and this module
 * keeps the alarm state that operators act on: active or not, acknowledged or
 * not, shelved (with expiry), suppressed by design (a condition), first-out
 * within a group. Every state change is raised as an "alarm" event through
 * the plant's listeners (log, journal, HTTP/REPL streams).
 *
 * States (ISA-18.2): normal; active unacknowledged; active acknowledged;
 * returned to normal unacknowledged. Shelved and suppressed alarms keep
 * tracking their condition but raise no annunciation and need no ack. */
#ifndef DP_ALARMS_H
#define DP_ALARMS_H

#include <stdbool.h>

#include "clock.h"
#include "event.h"

typedef struct dp_alarms dp_alarms_t;

typedef enum {
    DP_ALARM_NORMAL = 0,
    DP_ALARM_UNACKED,     /* active, not acknowledged */
    DP_ALARM_ACKED,       /* active, acknowledged */
    DP_ALARM_RTN_UNACKED, /* returned to normal, not acknowledged */
} dp_alarm_state_t;

typedef enum { DP_SEV_LOW = 0, DP_SEV_MEDIUM, DP_SEV_HIGH, DP_SEV_CRITICAL } dp_severity_t;

typedef struct {
    const char *twin;
    const char *name;
    const char *message;
    const char *group; /* first-out group, "" when none */
    dp_severity_t severity;
    int priority; /* 1 (highest) .. 4 */
    dp_alarm_state_t state;
    bool active;     /* the condition holds (after delays) */
    bool shelved;    /* until shelved_until */
    bool suppressed; /* by design, by a condition the script sets */
    bool first_out;  /* the first alarm of its group to activate since the group was clear */
    bool retired;    /* no longer declared by its twin's script (see dp_alarms_begin) */
    dp_time_t since; /* last state change */
    dp_time_t shelved_until;
    double value; /* value at the last transition */
    double limit;
    char acked_by[64];
} dp_alarm_info_t;

/* `emit` receives every transition as an "alarm" event (may be NULL). */
typedef void (*dp_alarms_emit_cb)(const dp_event_t *ev, void *ud);
dp_alarms_t *dp_alarms_new(dp_clock_t *clock, dp_alarms_emit_cb emit, void *ud);
void dp_alarms_free(dp_alarms_t *a);

/* Declares an alarm (idempotent: a reload declares it again and keeps its
 * state). Returns a handle >= 0 or DP_EINVAL. */
int dp_alarms_declare(dp_alarms_t *a, const char *twin, const char *name, const char *message,
                      const char *group, dp_severity_t severity, int priority, double limit);
/* Reloads: dp_alarms_begin() before a twin's script version is built, and
 * dp_alarms_end() after, with whether the new version went live. On success
 * the twin's alarms that the new version did not declare are retired: cleared
 * if active (a "cleared" event), then hidden (info.retired; the Lua list
 * leaves them out) until a later version declares them again. On failure
 * only the alarms first declared by the failed attempt are retired. */
void dp_alarms_begin(dp_alarms_t *a, const char *twin);
void dp_alarms_end(dp_alarms_t *a, const char *twin, bool live);

/* The script's verdict on the condition (delays already applied). */
int dp_alarms_condition(dp_alarms_t *a, int id, bool active, double value);
/* Suppression by design: while suppressed the alarm is not annunciated. */
int dp_alarms_suppress(dp_alarms_t *a, int id, bool suppressed);

/* Operator actions; `who` is recorded (e.g. a token's name). DP_ENOENT for an
 * unknown alarm, DP_ESTATE when the action does not apply (acking a normal
 * alarm), with *err saying so. */
int dp_alarms_ack(dp_alarms_t *a, const char *twin, const char *name, const char *who, char **err);
int dp_alarms_shelve(dp_alarms_t *a, const char *twin, const char *name, dp_time_t duration,
                     const char *who, char **err);
int dp_alarms_unshelve(dp_alarms_t *a, const char *twin, const char *name, const char *who,
                       char **err);

/* Expires shelving whose time has come; the plant calls it once a second. */
void dp_alarms_tick(dp_alarms_t *a);

/* Puts back the operator-visible state an alarm had (a snapshot's, at
 * start-up, before the twins load): active, state, acknowledgement, shelving,
 * suppression, first-out, since, value. The entry is created if the list
 * does not have it; the twin's script then declares it as usual, and an
 * alarm it no longer declares is retired when the load ends. No event is
 * raised: nothing changed. Returns the handle or DP_EINVAL. */
int dp_alarms_restore(dp_alarms_t *a, const dp_alarm_info_t *saved);

/* Number of alarms; dp_alarms_get fills `out` for index i (0 .. count-1).
 * Strings in `out` stay valid until that alarm is declared again or the list
 * is freed. */
int dp_alarms_count(const dp_alarms_t *a);
int dp_alarms_get(const dp_alarms_t *a, int i, dp_alarm_info_t *out);
int dp_alarms_find(const dp_alarms_t *a, const char *twin, const char *name);

const char *dp_alarm_state_name(dp_alarm_state_t s);
const char *dp_severity_name(dp_severity_t s);
int dp_severity_parse(const char *s); /* DP_SEV_* or DP_EINVAL */

#endif
