/* Sandboxed Lua states for twins and the plant file.
 *
 * Each twin version gets its own lua_State whose allocator counts bytes
 * against a cap, whose count hook charges instructions against a budget per
 * entry from C, and whose globals are an allow-list. A budget or memory fault
 * cannot be caught by the script: the sandbox's pcall, xpcall and
 * coroutine.resume re-raise it, and the hook keeps raising until control is
 * back in C. Every call from C into a sandboxed state goes through
 * dp_sandbox_call(). */
#ifndef DP_SANDBOX_H
#define DP_SANDBOX_H

#include <lua.h>
#include <stdbool.h>

#include "clock.h"

/* How the last dp_sandbox_call() ended. */
typedef enum {
    DP_SB_OK = 0,
    DP_SB_ERROR,  /* the script raised an error */
    DP_SB_BUDGET, /* instruction budget exhausted: a runaway loop */
    DP_SB_MEMORY, /* memory cap reached */
} dp_sb_status_t;

typedef struct dp_sandbox dp_sandbox_t;

typedef struct {
    const char *name;       /* for messages: the twin's name, or "plant" */
    const char *module_dir; /* where require finds the plant's own modules ("embed:..." for
                               embedded plants); NULL: stdlib only */
    dp_clock_t *clock;      /* time source for os.time/os.date/os.clock; not owned */
    uint64_t budget;        /* instructions per entry; 0: default (DP_SB_DEFAULT_BUDGET) */
    size_t memory;          /* bytes; 0: default (DP_SB_DEFAULT_MEMORY) */
} dp_sandbox_opts_t;

#define DP_SB_DEFAULT_BUDGET UINT64_C(10000000)
#define DP_SB_DEFAULT_MEMORY ((size_t)64 << 20)

/* Creates a sandboxed state. Returns NULL only when the state cannot be built
 * within the memory cap. The sandbox (and its state) is freed with
 * dp_sandbox_free(). */
dp_sandbox_t *dp_sandbox_new(const dp_sandbox_opts_t *opts);
void dp_sandbox_free(dp_sandbox_t *sb);
lua_State *dp_sandbox_state(dp_sandbox_t *sb);
/* The sandbox owning a state created by dp_sandbox_new (or one of its threads). */
dp_sandbox_t *dp_sandbox_of(lua_State *L);

/* Calls the function below `nargs` arguments on the top of L's stack, like
 * lua_pcall with a traceback handler, under a fresh instruction budget. On
 * failure *err (when not NULL) receives "message" and *trace (when not NULL)
 * the traceback; callers free both. Never raises, never exits. */
dp_sb_status_t dp_sandbox_call(dp_sandbox_t *sb, int nargs, int nresults, char **err, char **trace);
/* For many calls in a row (a batch of changes): push the traceback handler
 * once, then call with its stack index. Same contract as dp_sandbox_call. */
int dp_sandbox_push_handler(dp_sandbox_t *sb);
dp_sb_status_t dp_sandbox_call_h(dp_sandbox_t *sb, int handler, int nargs, int nresults, char **err,
                                 char **trace);
/* Compiles a chunk (text only, never binary) and pushes it as a function.
 * chunkname is shown in messages ("@twins/pump.lua" style). */
int dp_sandbox_load(dp_sandbox_t *sb, const char *code, size_t len, const char *chunkname,
                    char **err);

size_t dp_sandbox_memory(const dp_sandbox_t *sb);
uint64_t dp_sandbox_instructions(const dp_sandbox_t *sb); /* used by the last entry */
/* Files (on disk) loaded through require, for hot reload: a NULL-terminated list
 * valid until the next require. */
const char *const *dp_sandbox_required_files(const dp_sandbox_t *sb);

/* Reads a source file; "embed:path" reads from the binary. Returns a malloc'd
 * NUL-terminated buffer or NULL with *err set. */
char *dp_source_read(const char *path, size_t *len, char **err);

#endif
