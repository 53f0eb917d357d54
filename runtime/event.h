/* Events: alarm transitions, reloads, faults, commands and their outcomes,
 * and anything a twin reports with twin.event(). Events are handed to the
 * plant's listeners synchronously on the loop thread (the log today; the
 * journal, MQTT and HTTP streams subscribe the same way). */
#ifndef DP_EVENT_H
#define DP_EVENT_H

#include "common.h"

typedef struct {
    dp_time_t ts;
    const char *twin;    /* NULL for plant-level events */
    const char *kind;    /* "alarm", "reload", "fault", "suspended", or a twin's own kind */
    const char *text;    /* one-line human summary */
    const char *payload; /* msgpack map of the event's fields; may be NULL */
    size_t payload_len;
} dp_event_t;

/* Pointers in ev are valid during the call only. */
typedef void (*dp_event_cb)(const dp_event_t *ev, void *ud);

#endif
