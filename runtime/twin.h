/* The twin host: one twin = one asset's script, its tags, its persistent
 * `state` and its handlers, run in its own sandbox (sandbox.h).
 *
 * A twin has one live version (a sandboxed Lua state running one revision of
 * its script). Loading, and every reload, is a transaction: a new version is
 * built with the old version's `state` (copied through msgpack), its script
 * runs and its on_start handler runs; only if all of that succeeds does it
 * replace the old version, whose handlers and timers then disappear. On any
 * failure the old version keeps running untouched.
 *
 * The twin, not the version, is the store subscriber, so change records
 * queued before a swap are delivered after it, to exactly one version. */
#ifndef DP_TWIN_H
#define DP_TWIN_H

#include <stdbool.h>

#include "clock.h"
#include "event.h"
#include "sandbox.h"
#include "store.h"

typedef struct dp_twin dp_twin_t;

/* What a twin needs from its plant. */
typedef struct dp_twin_host {
    dp_store_t *store;
    dp_clock_t *clock;
    struct dp_guard *guard; /* commands (twin.write); NULL: writes are refused */
    /* Called for every event a twin raises. */
    void (*emit)(struct dp_twin_host *host, const dp_event_t *ev);
    /* Validation only (doppel check): scripts load but on_start does not run. */
    bool check_only;
    /* Optional: pushes a table of device `name`'s statistics onto L and
     * returns 1, or returns 0 (pushing nothing) when there is no such device.
     * Backs twin.device_stats(name). */
    int (*device_stats)(struct dp_twin_host *host, const char *name, lua_State *L);
    /* The plant's alarm list, reached from Lua as "doppel.alarmlist" (NULL: none). */
    struct dp_alarms *alarms;
} dp_twin_host_t;

typedef struct {
    const char *name;       /* "P101" */
    const char *script;     /* file path, or "embed:twins/x.lua" */
    const char *module_dir; /* where require finds plant modules (NULL: none) */
    const char *params;     /* msgpack map of the twin's parameters (copied); NULL: {} */
    size_t params_len;
    uint64_t budget;        /* instructions per handler call; 0: default */
    size_t memory;          /* bytes; 0: default */
    int max_faults;         /* faults within fault_window that suspend the twin; 0: 3 */
    dp_time_t fault_window; /* 0: 10 minutes */
    /* Tags of other twins it may command (twin.write), as patterns (see
     * dp_tag_pattern_match), NULL-terminated; copied. Its own tags it always
     * may. NULL: none. */
    const char *const *commands;
} dp_twin_opts_t;

typedef struct {
    uint64_t calls;   /* handler calls */
    uint64_t errors;  /* handler calls that raised */
    uint64_t faults;  /* budget or memory faults */
    uint64_t reloads; /* successful reloads */
    uint64_t reload_failures;
    uint64_t cpu_us; /* time spent in handlers */
    size_t memory;   /* bytes held by the live version */
    bool suspended;
    uint64_t generation; /* increases with every successful load */
} dp_twin_stats_t;

/* Whether the twin may command `tag` (a full name): one of its own tags, or
 * one its `commands` patterns name. */
bool dp_twin_may_command(const dp_twin_t *tw, const char *tag);
/* Its `commands` patterns, NULL-terminated. */
const char *const *dp_twin_commands(const dp_twin_t *tw);

/* Store values to and from Lua: a number, boolean, string or nil. Reading
 * returns DP_EINVAL for any other Lua type; a string is borrowed from L. */
void dp_lua_push_value(lua_State *L, const dp_value_t *v);
int dp_lua_to_value(lua_State *L, int idx, dp_value_t *v);

/* Creates a twin with no version yet. The host must outlive the twin. */
dp_twin_t *dp_twin_new(dp_twin_host_t *host, const dp_twin_opts_t *opts);
/* Stops timers, unsubscribes, frees. Accepts NULL. */
void dp_twin_free(dp_twin_t *twin);

/* Builds a version and swaps it in (the first load and every reload; see the
 * header comment). `state` (msgpack, may be NULL) is used only when there is
 * no live version yet, e.g. after a restart. Returns 0 or an error with *err
 * naming file:line; the old version, if any, is still live then. A reload
 * also lifts a suspension. */
int dp_twin_load(dp_twin_t *twin, const char *state, size_t state_len, char **err);

/* The live version's `state` as msgpack (malloc'd, caller frees). */
int dp_twin_state(dp_twin_t *twin, char **out, size_t *len, char **err);

const char *dp_twin_name(const dp_twin_t *twin);
const char *dp_twin_script(const dp_twin_t *twin);
/* Files that the live version loaded with require (for hot reload). */
const char *const *dp_twin_required_files(const dp_twin_t *twin);
void dp_twin_get_stats(const dp_twin_t *twin, dp_twin_stats_t *out);
/* The live version's Lua state, for the REPL and tests (loop thread only).
 * NULL before the first successful load. */
dp_sandbox_t *dp_twin_sandbox(dp_twin_t *twin);
/* Stops the live version's timers and handlers for good (plant shutdown);
 * state stays readable. */
void dp_twin_stop(dp_twin_t *twin);
/* Lifts a suspension without reloading. */
void dp_twin_resume(dp_twin_t *twin);

#endif
