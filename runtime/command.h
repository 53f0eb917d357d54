/* Commands and the guard: the only way anything writes to a device.
 *
 * A command asks to write one value to one writable tag. It comes from a
 * twin (twin.write), the REPL, HTTP, MQTT or a Modbus client, and it always
 * takes the same path:
 *
 *   submit -> guard checks -> (shadow: logged, nothing written)
 *                          -> the tag's writer (a driver) -> outcome
 *
 * The guard refuses, in this order: unknown tag; tag not declared writable;
 * writes disabled plant-wide; a value of the wrong type (number, bool or
 * string, as the tag holds, when it holds one); a number that is NaN or
 * infinite, below `min` or above `max`; a step faster than `max_rate` (units
 * per second, measured from the last accepted command on that tag, or for the
 * first one from the tag's current value over one second).
 *
 * A tag with a writer (a driver that can write it) is written by the driver,
 * which reports the outcome with dp_guard_complete() from any thread. A
 * writable tag without a device is written to the store directly.
 *
 * Every command ends with exactly one outcome, delivered on the loop thread
 * to the submitter's callback and then to every listener (log, journal, HTTP
 * and MQTT streams). Outcomes are logged: done at info, the others at warn. */
#ifndef DP_COMMAND_H
#define DP_COMMAND_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "clock.h"
#include "event.h"
#include "store.h"

typedef enum {
    DP_CMD_PENDING = 0, /* accepted by the guard, sent to the writer */
    DP_CMD_DONE,        /* written (and verified, when the writer verifies) */
    DP_CMD_REJECTED,    /* refused by the guard; nothing was written */
    DP_CMD_FAILED,      /* the writer could not write it (timeout, exception, ...) */
    DP_CMD_SHADOW,      /* shadow mode: logged with what would be written; nothing was */
} dp_cmd_outcome_t;

typedef struct {
    uint64_t id;        /* 1, 2, ... per plant */
    dp_time_t ts;       /* when submitted (clock time) */
    dp_time_t done_ts;  /* when the outcome was known */
    const char *origin; /* who asked: "twin:P101", "repl", "http:alice", "modbus:10.0.0.5" */
    const char *tag;    /* full tag name ("P101.speed_sp"; the name as given if unknown) */
    int tag_id;         /* store handle, or -1 for an unknown tag */
    dp_value_t value;
    dp_cmd_outcome_t outcome;
    const char *reason; /* why it was rejected or failed; detail for done/shadow; never NULL */
} dp_cmd_t;

/* Pointers in cmd are valid during the call only. */
typedef void (*dp_cmd_cb)(const dp_cmd_t *cmd, void *ud);

/* A writer: starts writing `v` to `tag` for command `id`, and later (or
 * before returning) calls dp_guard_complete(guard, id, ...). Returning an
 * error instead fails the command at once with *err as the reason. */
typedef int (*dp_cmd_write_fn)(void *ctx, uint64_t id, int tag, const dp_value_t *v, char **err);

/* Limits of one writable tag. NaN min/max/max_rate: no limit. */
typedef struct {
    double min;
    double max;
    double max_rate; /* units per second */
} dp_guard_limits_t;

typedef struct dp_guard dp_guard_t;

/* `loop` is NULL in virtual time: then completions are delivered inside
 * dp_guard_complete() itself. */
dp_guard_t *dp_guard_new(dp_store_t *store, dp_clock_t *clock, uv_loop_t *loop);
/* Fails pending commands ("shutting down") and frees. With a loop, run it
 * once more afterwards (the async handle closes). Accepts NULL. */
void dp_guard_free(dp_guard_t *g);

/* Declares `tag` writable with these limits (NULL: none). */
void dp_guard_set_limits(dp_guard_t *g, int tag, const dp_guard_limits_t *limits);
/* Sets the writer of a writable tag (NULL fn: the store). */
void dp_guard_set_writer(dp_guard_t *g, int tag, dp_cmd_write_fn fn, void *ctx);
bool dp_guard_writable(const dp_guard_t *g, int tag);
int dp_guard_get_limits(const dp_guard_t *g, int tag, dp_guard_limits_t *out);

/* Plant-wide switches; `who` is logged with the change, and each change is
 * raised through dp_guard_on_switch's callback as a "guard" event (payload
 * {by, shadow, writes}) so that it is journaled and outlives a restart. */
void dp_guard_on_switch(dp_guard_t *g, dp_event_cb cb, void *ud);
void dp_guard_enable_writes(dp_guard_t *g, bool enabled, const char *who);
bool dp_guard_writes_enabled(const dp_guard_t *g);
void dp_guard_set_shadow(dp_guard_t *g, bool shadow, const char *who);
bool dp_guard_shadow(const dp_guard_t *g);
/* Dry run (replay, twin tests, recovery): commands are judged as usual;
 * those to tags with a writer (a device) end as shadow ("dry run: not sent
 * to the device"), those to writable tags without a device are written to
 * the store, so a twin sees its own setpoints as it would live. */
void dp_guard_set_dry_run(dp_guard_t *g, bool dry_run);
bool dp_guard_dry_run(const dp_guard_t *g);

/* Loop thread. Submits a command to `tag` (a full name). `cb` (may be NULL)
 * gets the outcome; in every case other than PENDING it is called before
 * this returns. Returns the command id. */
uint64_t dp_guard_submit(dp_guard_t *g, const char *origin, const char *tag, const dp_value_t *v,
                         dp_cmd_cb cb, void *ud);
/* Any thread. The writer's verdict on command `id`: DP_CMD_DONE or
 * DP_CMD_FAILED with a reason (copied; may be NULL). Unknown ids are ignored
 * (the command was already finished, e.g. at shutdown). */
void dp_guard_complete(dp_guard_t *g, uint64_t id, dp_cmd_outcome_t outcome, const char *reason);

/* Loop thread, once the writers have stopped: takes the outcomes they
 * reported and fails every command still without one ("shutting down"), so
 * that listeners (the journal) hear of each before they close. */
void dp_guard_settle(dp_guard_t *g);

/* Listeners for every finished command, called in the order added. */
void dp_guard_on_command(dp_guard_t *g, dp_cmd_cb cb, void *ud);
/* Listeners for every command handed to a device's writer (outcome
 * DP_CMD_PENDING), called just before it is handed over: the journal
 * records it, so a command in flight when the process dies is on the
 * record. Its outcome follows through dp_guard_on_command. */
void dp_guard_on_sent(dp_guard_t *g, dp_cmd_cb cb, void *ud);

/* Who may command what, asked for every command that passes the guard's
 * own checks: NULL lets it through, a reason (written into buf, or static)
 * rejects it. The plant uses it for twins' `commands` lists. */
typedef const char *(*dp_cmd_authorize_fn)(const char *origin, const char *tag, void *ud, char *buf,
                                           size_t size);
void dp_guard_set_authorize(dp_guard_t *g, dp_cmd_authorize_fn fn, void *ud);

typedef struct {
    uint64_t submitted, done, rejected, failed, shadow;
    uint64_t pending; /* sent to a writer, no outcome yet */
} dp_guard_stats_t;
void dp_guard_get_stats(const dp_guard_t *g, dp_guard_stats_t *out);

/* "pending", "done", "rejected", "failed", "shadow". */
const char *dp_cmd_outcome_name(dp_cmd_outcome_t o);

#endif
