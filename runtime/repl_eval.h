/* The Lua side of the REPL: the plant-level environment, evaluation with
 * captured print and pretty-printed results, and completion.
 *
 * Two kinds of environment are used. At plant level each REPL client gets
 * its own sandbox (dp_repl_plant_sandbox) whose globals hold one table per
 * twin (`P101.flow` is a live, read-only tag object), `twins`, `tag(name)`
 * and the usual sandboxed libraries. Inside a twin, code runs in the twin's
 * live sandbox with an environment that reads and writes the twin's globals
 * but has its own `print`. Either way, evaluation goes through
 * dp_sandbox_call, so the instruction budget and memory cap apply and a
 * runaway loop ends with an error while the plant keeps running.
 *
 * Everything here runs on the loop thread. */
#ifndef DP_REPL_EVAL_H
#define DP_REPL_EVAL_H

#include <stdbool.h>

#include "plant.h"
#include "sandbox.h"

/* Where print output goes while an evaluation runs: `cb` gets each printed
 * line (ending in "\n"). With no sink (cb NULL) print behaves as in twins: a
 * log line. Set it around an evaluation and clear it afterwards. */
typedef void (*dp_repl_print_cb)(const char *text, size_t len, void *ud);
void dp_repl_set_print_sink(dp_repl_print_cb cb, void *ud);

/* What an evaluation or completion needs to know. */
typedef struct {
    dp_plant_t *plant;
    const char *twin; /* NULL: plant level; else the twin whose sandbox is used */
} dp_repl_ctx_t;

/* A new plant-level sandbox (free with dp_sandbox_free). Returns NULL with
 * *err set when the state cannot be built. */
dp_sandbox_t *dp_repl_plant_sandbox(dp_plant_t *plant, char **err);

/* Evaluates `text` like the standalone lua: as an expression if
 * "return TEXT" compiles, else as a chunk. On success returns true and *out
 * is the pretty-printed results ("" when there are none). On failure returns
 * false and *out is the error, with a traceback for runtime errors. *out is
 * malloc'd; the caller frees it. */
bool dp_repl_eval(const dp_repl_ctx_t *ctx, dp_sandbox_t *sb, const char *text, char **out);

/* Completion of the Lua word `word` (identifiers joined by '.' or ':') in
 * sb's environment. Reads tables raw and runs no Lua code. Adds full
 * replacement words (e.g. "P101.flow") to *items (malloc'd array of malloc'd
 * strings, *n entries, caller frees), at most `max`. */
void dp_repl_complete_lua(const dp_repl_ctx_t *ctx, dp_sandbox_t *sb, const char *word,
                          char ***items, size_t *n, size_t max);

/* "P101.flow = 121.4 m3/h (good, 0.4 s ago)"; without the name when
 * with_name is false. */
void dp_repl_format_tag(dp_plant_t *plant, int tag, bool with_name, char *buf, size_t size);

/* Adds a copy of s to a list of items, unless it is already there or the
 * list holds `max`. */
void dp_repl_items_add(char ***items, size_t *n, size_t max, const char *s);

#endif
