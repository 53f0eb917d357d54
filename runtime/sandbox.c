#include "sandbox.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "log.h"
#include "lpattern.h"
#include "stdlib/signal.h"

/* Instructions between two runs of the count hook. Small enough that a
 * runaway loop is caught promptly, large enough that the hook itself costs
 * little. */
#define HOOK_STEP 1000

/* The budget's count hook is armed only for calls that run long. Lua 5.4
 * sends every VM instruction through luaG_traceexec while a count hook is
 * set, whatever its count (about 13% of all instructions of the demo plant's
 * replay), so a call starts without it. A watchdog thread looks at every
 * sandbox each WATCH_TICK_MS; a call it sees running at two ticks in a row
 * (so after 10 to 20 ms) gets the hook from a signal sent to the thread that
 * runs it (lua_sethook is safe in a signal handler: Lua's own interpreter
 * uses it that way for Ctrl-C). From then on its instructions are charged
 * against the budget as before. Coroutines always carry the hook, since a
 * signal cannot find the coroutine that is running. */
#define WATCH_TICK_MS 10

#define MAX_REQUIRED 64

struct dp_sandbox {
    lua_State *L;
    char *name;
    char *module_dir;
    dp_clock_t *clock;
    uint64_t budget;
    uint64_t used;
    size_t mem_used;
    size_t mem_limit;
    bool in_call;
    bool aborting;
    bool armed;                       /* the count hook is set on L for this call */
    atomic_bool busy;                 /* in an outer dp_sandbox_call (for the watchdog) */
    atomic_uint_fast64_t seq;         /* outer calls so far */
    pthread_t thread;                 /* the thread of the current call */
    volatile sig_atomic_t arm;        /* the watchdog asks the signal handler to arm */
    uint64_t seen_seq;                /* watchdog only: seq at its last tick */
    bool signalled;                   /* watchdog only: signal sent for seen_seq */
    struct dp_sandbox *wnext, *wprev; /* the watchdog's list */
    dp_sb_status_t abort_status;
    char abort_where[256];
    char *required[MAX_REQUIRED + 1];
    int nrequired;
};

static void sb_hook(lua_State *L, lua_Debug *ar);

/* The allocator: refuses growth beyond the cap. Reaching the cap during a call
 * is a fault (like a runaway loop) so a script cannot loop on pcall around an
 * allocation that keeps failing. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    dp_sandbox_t *sb = ud;
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->mem_used -= old;
        return NULL;
    }
    /* The cap stops what scripts allocate, in their calls. Between calls
     * the host builds their arguments (a handler's value, tag objects, an
     * on_update list), outside any protected call: refusing that would
     * abort the process. It is let through, bounded by one batch, and the
     * next allocation the twin makes in a call faults it. */
    if (nsize > old && sb->mem_used + (nsize - old) > sb->mem_limit && sb->in_call) {
        if (!sb->aborting) {
            sb->aborting = true;
            sb->abort_status = DP_SB_MEMORY;
            snprintf(sb->abort_where, sizeof sb->abort_where, "memory cap of %zu KiB reached",
                     sb->mem_limit >> 10);
            /* The hook raises the fault again wherever the script goes on. */
            if (sb->L != NULL) {
                sb->armed = true;
                lua_sethook(sb->L, sb_hook, LUA_MASKCOUNT, 1);
            }
        }
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        sb->mem_used = sb->mem_used - old + nsize;
    return p;
}

dp_sandbox_t *dp_sandbox_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* Declares a budget fault (once) and raises it. From then on the hook runs
 * after every instruction, on the running coroutine and the main state, and
 * raises each time, so no Lua code can make progress until the stack is
 * unwound back to C. */
static int budget_fault(lua_State *L, dp_sandbox_t *sb)
{
    if (!sb->aborting) {
        sb->aborting = true;
        sb->abort_status = DP_SB_BUDGET;
        /* Where in the script: from a library function (pattern matching),
         * the Lua line that called it. */
        lua_Debug info = {.currentline = 0};
        int level = 0;
        while (lua_getstack(L, level, &info) && lua_getinfo(L, "Sl", &info) &&
               info.currentline <= 0 && level < 2)
            level++;
        if (info.currentline > 0) {
            snprintf(sb->abort_where, sizeof sb->abort_where,
                     "instruction budget of %llu exceeded at %s:%d", (unsigned long long)sb->budget,
                     info.short_src, info.currentline);
        } else {
            snprintf(sb->abort_where, sizeof sb->abort_where, "instruction budget of %llu exceeded",
                     (unsigned long long)sb->budget);
        }
    }
    sb->armed = true;
    if (lua_gethookcount(L) != 1)
        lua_sethook(L, sb_hook, LUA_MASKCOUNT, 1);
    if (L != sb->L && lua_gethookcount(sb->L) != 1)
        lua_sethook(sb->L, sb_hook, LUA_MASKCOUNT, 1);
    lua_pushstring(L, sb->abort_where);
    return lua_error(L);
}

/* Charges instructions to the current entry. */
static void sb_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    dp_sandbox_t *sb = dp_sandbox_of(L);
    int step = lua_gethookcount(L);
    if (!sb->in_call)
        return;
    if (!sb->aborting) {
        if (step != HOOK_STEP)
            lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_STEP);
        sb->used += (uint64_t)step;
        if (sb->used <= sb->budget)
            return;
    }
    budget_fault(L, sb);
}

/* Charges `steps` of library work done in C, which no count hook sees (the
 * steps of a pattern match, see lpattern.h; the iterations of the loops
 * below), to the current entry from the start of the call, one step as one
 * instruction. A count over what is left of the budget is the fault at once. */
static void sb_charge(lua_State *L, uint64_t steps)
{
    dp_sandbox_t *sb = dp_sandbox_of(L);
    if (!sb->in_call)
        return;
    uint64_t left = sb->used < sb->budget ? sb->budget - sb->used : 0;
    sb->used = steps > left ? sb->budget + 1 : sb->used + steps;
    if (sb->used > sb->budget || sb->aborting)
        budget_fault(L, sb);
}

/* ---- the watchdog ---------------------------------------------------- */

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;
static dp_sandbox_t *watch_list;
static int watch_signal;

/* The sandboxes in a call on this thread, outermost first: what the signal
 * handler may arm. Written only by this thread, read by its signal handler. */
#define MAX_NESTED 16
static _Thread_local dp_sandbox_t *calls[MAX_NESTED];
static _Thread_local volatile sig_atomic_t ncalls;

static void on_watch_signal(int sig)
{
    (void)sig;
    int saved = errno;
    for (int i = 0; i < ncalls && i < MAX_NESTED; i++) {
        dp_sandbox_t *sb = calls[i];
        if (sb->arm && !sb->armed) {
            sb->arm = 0;
            sb->armed = true;
            lua_sethook(sb->L, sb_hook, LUA_MASKCOUNT, HOOK_STEP);
        }
    }
    errno = saved;
}

static void *watch_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        struct timespec ts = {0, WATCH_TICK_MS * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&watch_mu);
        for (dp_sandbox_t *sb = watch_list; sb != NULL; sb = sb->wnext) {
            uint64_t seq = atomic_load_explicit(&sb->seq, memory_order_relaxed);
            if (!atomic_load_explicit(&sb->busy, memory_order_acquire) || seq != sb->seen_seq) {
                sb->seen_seq = seq;
                sb->signalled = false;
                continue;
            }
            if (!sb->signalled) {
                sb->signalled = true;
                sb->arm = 1;
                pthread_kill(sb->thread, watch_signal);
            }
        }
        pthread_mutex_unlock(&watch_mu);
    }
    return NULL;
}

/* After fork() the child has the sandboxes but not the watchdog thread: the
 * next call starts one. */
static volatile sig_atomic_t watch_restart;
static void watch_child(void)
{
    pthread_mutex_init(&watch_mu, NULL);
    watch_restart = 1;
}

static void watch_start(void)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, watch_main, NULL) != 0)
        dp_log_error(NULL, "cannot start the script watchdog: budgets are not enforced");
    pthread_attr_destroy(&attr);
}

static void watch_init(void)
{
    pthread_atfork(NULL, NULL, watch_child);
    watch_signal = SIGRTMIN + 4;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_watch_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(watch_signal, &sa, NULL);
    watch_start();
}

static void watch_add(dp_sandbox_t *sb)
{
    pthread_once(&watch_once, watch_init);
    pthread_mutex_lock(&watch_mu);
    sb->wnext = watch_list;
    if (watch_list != NULL)
        watch_list->wprev = sb;
    watch_list = sb;
    pthread_mutex_unlock(&watch_mu);
}

static void watch_remove(dp_sandbox_t *sb)
{
    pthread_mutex_lock(&watch_mu);
    if (sb->wprev != NULL)
        sb->wprev->wnext = sb->wnext;
    else if (watch_list == sb)
        watch_list = sb->wnext;
    if (sb->wnext != NULL)
        sb->wnext->wprev = sb->wprev;
    pthread_mutex_unlock(&watch_mu);
}

/* Removes the count hook (a call that was armed, or a fault unwound). */
static void disarm(dp_sandbox_t *sb)
{
    sb->arm = 0;
    sb->armed = false;
    if (lua_gethookmask(sb->L) != 0)
        lua_sethook(sb->L, NULL, 0, 0);
}

/* pcall and xpcall that let ordinary errors be caught but re-raise faults. */
static int finish_pcall(lua_State *L, int status, lua_KContext extra)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        dp_sandbox_t *sb = dp_sandbox_of(L);
        if (sb->aborting || status == LUA_ERRMEM)
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
    return finish_pcall(L, status, 0);
}

static int sb_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

/* Runs the original (upvalue 1, a C function without upvalues of its own)
 * in this call's frame, so its argument errors name the function as the
 * script called it ("bad argument #3 to 'move'"). */
static int call_original(lua_State *L)
{
    return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* coroutine.create and coroutine.wrap through the library's own (upvalue
 * 1), then the count hook on the new coroutine's thread (a signal cannot find
 * the coroutine that runs, so coroutines are always counted). */
static int sb_cocreate(lua_State *L)
{
    int n = call_original(L);
    lua_State *co = lua_tothread(L, -1);
    if (co != NULL)
        lua_sethook(co, sb_hook, LUA_MASKCOUNT, HOOK_STEP);
    return n;
}

/* A coroutine.wrap function: resumes its coroutine (upvalue 1) and returns
 * what it yields or returns; an error is raised again here, with the position
 * of the caller prepended to a string message. */
static int sb_wrapped(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int narg = lua_gettop(L);
    if (lua_status(co) == LUA_OK && lua_gettop(co) == 0)
        return luaL_error(L, "cannot resume dead coroutine");
    if (!lua_checkstack(co, narg))
        return luaL_error(L, "too many arguments to resume");
    lua_xmove(L, co, narg);
    int nres = 0;
    int rc = lua_resume(co, L, narg, &nres);
    if (rc == LUA_OK || rc == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1))
            return luaL_error(L, "too many results to resume");
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    lua_resetthread(co);
    if (lua_type(L, -1) == LUA_TSTRING && !dp_sandbox_of(L)->aborting) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int sb_cowrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_sethook(co, sb_hook, LUA_MASKCOUNT, HOOK_STEP);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, sb_wrapped, 1);
    return 1;
}

static int sb_resume(lua_State *L)
{
    /* Upvalue 1 is the library's coroutine.resume: true and results, or
     * false and the error, which is raised again while a fault unwinds. */
    int n = call_original(L);
    if (dp_sandbox_of(L)->aborting && !lua_toboolean(L, -n))
        return lua_error(L);
    return n;
}

static int sb_print(lua_State *L)
{
    dp_sandbox_t *sb = dp_sandbox_of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    dp_log_info(sb->name, "%s", lua_tostring(L, -1));
    return 0;
}

/* load() restricted to text chunks: binary chunks can break the VM. An env
 * argument, when given, stays where it was. */
static int sb_load(lua_State *L)
{
    if (lua_gettop(L) < 3)
        lua_settop(L, 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    return call_original(L);
}

/* ---- library loops in C ------------------------------------------------
 *
 * Some library functions loop in C as many times as their arguments say,
 * where no hook runs and, when the loop allocates nothing, no memory cap
 * stops it either: string.rep("", 1e12), table.move over 1e12 absent keys,
 * table.insert into a table whose __len says 1e12 run for hours. Their work
 * is charged to the budget (sb_charge) before the original runs, one step
 * per iteration (n log2 n for a sort). (The charge reads #t through __len when
 * the table has one, so a __len metamethod runs twice.) */

/* #t when t's length comes from a __len metamethod (else it is bounded by
 * the table's memory), 0 otherwise. */
static lua_Integer meta_len(lua_State *L, int idx)
{
    if (luaL_getmetafield(L, idx, "__len") == LUA_TNIL)
        return 0;
    lua_pop(L, 1);
    return luaL_len(L, idx);
}

/* Only repeating nothing is unbounded: a longer result meets the memory cap. */
static int sb_rep(lua_State *L)
{
    size_t ls = 0, lsep = 0;
    luaL_checklstring(L, 1, &ls);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n > 0 && ls + lsep == 0)
        sb_charge(L, (uint64_t)n / 4); /* an iteration copies nothing */
    return call_original(L);
}

static int sb_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    /* A span move refuses itself ("too many elements to move") is not charged. */
    if (e >= f && (f > 0 || e < LUA_MAXINTEGER + f))
        sb_charge(L, (uint64_t)((lua_Unsigned)e - (lua_Unsigned)f) + 1);
    return call_original(L);
}

/* table.insert and table.remove shift up to #t elements. */
static int sb_shift(lua_State *L)
{
    lua_Integer n = meta_len(L, 1);
    if (n > 0)
        sb_charge(L, (uint64_t)n);
    return call_original(L);
}

static int sb_sort(lua_State *L)
{
    lua_Integer n = lua_type(L, 1) == LUA_TTABLE ? luaL_len(L, 1) : 0; /* else sort says why */
    if (n > 1) {
        uint64_t log2n = 0;
        while ((UINT64_C(1) << log2n) < (uint64_t)n && log2n < 63)
            log2n++;
        sb_charge(L, (uint64_t)n > UINT64_MAX / log2n ? UINT64_MAX : (uint64_t)n * log2n);
    }
    return call_original(L);
}

static int sb_collectgarbage(lua_State *L)
{
    static const char *const allowed[] = {"collect", "count", "step", "isrunning", NULL};
    luaL_checkoption(L, 1, "collect", allowed);
    return call_original(L);
}

static double clock_seconds(lua_State *L)
{
    dp_sandbox_t *sb = dp_sandbox_of(L);
    dp_time_t now = sb->clock != NULL ? dp_clock_now(sb->clock) : dp_wall_now();
    return (double)now / 1e6;
}

/* os.time() and os.date() read the plant clock, so virtual time is honoured. */
static int sb_os_time(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_pushinteger(L, (lua_Integer)clock_seconds(L));
        return 1;
    }
    lua_settop(L, 1);
    return call_original(L);
}

static int sb_os_date(lua_State *L)
{
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 2);
        lua_pushinteger(L, (lua_Integer)clock_seconds(L));
        lua_replace(L, 2);
    }
    return call_original(L);
}

char *dp_source_read(const char *path, size_t *len, char **err)
{
    if (strncmp(path, "embed:", 6) == 0) {
        const dp_embed_file_t *f = dp_embed_find(path + 6);
        if (f == NULL) {
            dp_fail(err, DP_ENOENT, "%s: no such file in the binary", path);
            return NULL;
        }
        char *copy = dp_xmalloc(f->len + 1);
        memcpy(copy, f->data, f->len);
        copy[f->len] = '\0';
        if (len != NULL)
            *len = f->len;
        return copy;
    }
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        dp_fail(err, DP_ENOENT, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = dp_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = dp_xrealloc(buf, cap);
        }
    }
    bool failed = ferror(fp) != 0;
    fclose(fp);
    if (failed) {
        free(buf);
        dp_fail(err, DP_EIO, "%s: read error", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

/* The stdlib's C modules, reached through require like its Lua files (a Lua
 * module wraps each one with argument checks and documentation). */
static const luaL_Reg c_modules[] = {
    {"doppel._signal", dp_luaopen_signal},
    {NULL, NULL},
};

static bool module_name_ok(const char *name)
{
    if (*name == '\0' || *name == '.')
        return false;
    for (const char *p = name; *p; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.'))
            return false;
        if (p[0] == '.' && p[1] == '.')
            return false;
    }
    return name[strlen(name) - 1] != '.';
}

static void remember_required(dp_sandbox_t *sb, const char *path)
{
    if (strncmp(path, "embed:", 6) == 0 || sb->nrequired == MAX_REQUIRED)
        return;
    for (int i = 0; i < sb->nrequired; i++) {
        if (strcmp(sb->required[i], path) == 0)
            return;
    }
    sb->required[sb->nrequired++] = dp_xstrdup(path);
    sb->required[sb->nrequired] = NULL;
}

/* require: "doppel.x" is the embedded stdlib (stdlib/x.lua); any other name is
 * a module in the plant's own folder (dots become slashes). Nothing else is
 * reachable: no C modules, no package.path. */
static int sb_require(lua_State *L)
{
    dp_sandbox_t *sb = dp_sandbox_of(L);
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, 2, name);
    if (lua_toboolean(L, -1))
        return 1;
    lua_pop(L, 1);
    if (!module_name_ok(name))
        return luaL_error(L, "require \"%s\": bad module name", name);
    for (const luaL_Reg *m = c_modules; m->name != NULL; m++) {
        if (strcmp(name, m->name) == 0) {
            lua_pushcfunction(L, m->func);
            lua_pushstring(L, name);
            lua_call(L, 1, 1);
            lua_pushvalue(L, -1);
            lua_setfield(L, 2, name);
            return 1;
        }
    }

    char path[1024];
    if (strncmp(name, "doppel.", 7) == 0) {
        snprintf(path, sizeof path, "embed:stdlib/%s.lua", name + 7);
    } else if (sb->module_dir != NULL) {
        snprintf(path, sizeof path, "%s/%s.lua", sb->module_dir, name);
        for (char *p = path + strlen(sb->module_dir) + 1; *p; p++) {
            if (*p == '.' && strcmp(p, ".lua") != 0)
                *p = '/';
        }
    } else {
        return luaL_error(L, "module \"%s\" not found (only doppel.* modules here)", name);
    }
    char *err = NULL;
    size_t len = 0;
    char *code = dp_source_read(path, &len, &err);
    if (code == NULL) {
        lua_pushfstring(L, "module \"%s\" not found (%s)", name, err);
        free(err);
        return lua_error(L);
    }
    const char *shown = strncmp(path, "embed:", 6) == 0 ? path + 6 : path;
    lua_pushfstring(L, "@%s", shown);
    int rc = luaL_loadbufferx(L, code, len, lua_tostring(L, -1), "t");
    free(code);
    if (rc != LUA_OK)
        return lua_error(L);
    remember_required(sb, path);
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

/* setmetatable without finalizers: the collector runs a __gc wherever it
 * finishes the object, also between calls (a host allocation's GC step),
 * where no instruction budget applies, so one endless finalizer would stop
 * the whole plant. Lua marks an object for finalization only when its
 * metatable has __gc as it is set, so checking here is enough. */
static int sb_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        bool gc = lua_rawget(L, 2) != LUA_TNIL;
        lua_pop(L, 1);
        if (gc)
            return luaL_error(L, "setmetatable: a __gc finalizer is not allowed in a twin "
                                 "(it would run outside the instruction budget)");
    }
    return call_original(L);
}

static void wrap_upvalue(lua_State *L, int table, const char *field, lua_CFunction fn)
{
    lua_getfield(L, table, field);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, table, field);
}

static void remove_fields(lua_State *L, int table, const char *const *fields)
{
    for (; *fields != NULL; fields++) {
        lua_pushnil(L);
        lua_setfield(L, table, *fields);
    }
}

static int open_sandbox(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {LUA_COLIBNAME, luaopen_coroutine},
        {LUA_OSLIBNAME, luaopen_os},      {NULL, NULL},
    };
    for (const luaL_Reg *lib = libs; lib->name != NULL; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    static const char *const unsafe_base[] = {"dofile", "loadfile", NULL};
    remove_fields(L, g, unsafe_base);
    lua_pushcfunction(L, sb_pcall);
    lua_setfield(L, g, "pcall");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, g, "xpcall");
    lua_pushcfunction(L, sb_print);
    lua_setfield(L, g, "print");
    lua_pushcfunction(L, sb_require);
    lua_setfield(L, g, "require");
    wrap_upvalue(L, g, "load", sb_load);
    wrap_upvalue(L, g, "collectgarbage", sb_collectgarbage);
    wrap_upvalue(L, g, "setmetatable", sb_setmetatable);

    lua_getfield(L, g, LUA_STRLIBNAME);
    static const char *const unsafe_string[] = {"dump", NULL};
    remove_fields(L, lua_gettop(L), unsafe_string);
    /* Pattern matching whose work counts against the budget. */
    dp_lpattern_install(L, lua_gettop(L), sb_charge);
    wrap_upvalue(L, lua_gettop(L), "rep", sb_rep);
    lua_pop(L, 1);

    lua_getfield(L, g, LUA_TABLIBNAME);
    wrap_upvalue(L, lua_gettop(L), "sort", sb_sort);
    wrap_upvalue(L, lua_gettop(L), "move", sb_move);
    wrap_upvalue(L, lua_gettop(L), "insert", sb_shift);
    wrap_upvalue(L, lua_gettop(L), "remove", sb_shift);
    lua_pop(L, 1);

    lua_getfield(L, g, LUA_COLIBNAME);
    wrap_upvalue(L, lua_gettop(L), "resume", sb_resume);
    wrap_upvalue(L, lua_gettop(L), "create", sb_cocreate);
    lua_pushcfunction(L, sb_cowrap);
    lua_setfield(L, -2, "wrap");
    lua_pop(L, 1);

    /* os: only what cannot reach outside the sandbox; time from the clock. */
    lua_getfield(L, g, LUA_OSLIBNAME);
    int os = lua_gettop(L);
    static const char *const unsafe_os[] = {"execute", "exit",    "getenv",    "remove",
                                            "rename",  "tmpname", "setlocale", NULL};
    remove_fields(L, os, unsafe_os);
    wrap_upvalue(L, os, "time", sb_os_time);
    wrap_upvalue(L, os, "date", sb_os_date);
    lua_pop(L, 1);

    /* No io, package or debug tables at all. */
    static const char *const absent[] = {"io", "package", "debug", NULL};
    remove_fields(L, g, absent);
    lua_pop(L, 1);
    return 0;
}

dp_sandbox_t *dp_sandbox_new(const dp_sandbox_opts_t *opts)
{
    dp_sandbox_t *sb = dp_xcalloc(1, sizeof *sb);
    sb->name = dp_xstrdup(opts->name != NULL ? opts->name : "?");
    sb->module_dir = opts->module_dir != NULL ? dp_xstrdup(opts->module_dir) : NULL;
    sb->clock = opts->clock;
    sb->budget = opts->budget ? opts->budget : DP_SB_DEFAULT_BUDGET;
    sb->mem_limit = opts->memory ? opts->memory : DP_SB_DEFAULT_MEMORY;
    sb->required[0] = NULL;
    sb->L = lua_newstate(sb_alloc, sb);
    if (sb->L == NULL) {
        dp_sandbox_free(sb);
        return NULL;
    }
    lua_setwarnf(sb->L, NULL, NULL);
    lua_pushcfunction(sb->L, open_sandbox);
    if (lua_pcall(sb->L, 0, 0, 0) != LUA_OK) {
        dp_sandbox_free(sb);
        return NULL;
    }
    watch_add(sb);
    return sb;
}

void dp_sandbox_free(dp_sandbox_t *sb)
{
    if (sb == NULL)
        return;
    if (sb->wnext != NULL || sb->wprev != NULL || watch_list == sb)
        watch_remove(sb);
    if (sb->L != NULL)
        lua_close(sb->L);
    for (int i = 0; i < sb->nrequired; i++)
        free(sb->required[i]);
    free(sb->name);
    free(sb->module_dir);
    free(sb);
}

lua_State *dp_sandbox_state(dp_sandbox_t *sb)
{
    return sb->L;
}

static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int dp_sandbox_push_handler(dp_sandbox_t *sb)
{
    lua_pushcfunction(sb->L, msgh);
    return lua_gettop(sb->L);
}

dp_sb_status_t dp_sandbox_call_h(dp_sandbox_t *sb, int handler, int nargs, int nresults, char **err,
                                 char **trace)
{
    lua_State *L = sb->L;
    /* Nested calls (a handler that triggers another entry) share the outer budget. */
    bool outer = !sb->in_call;
    int depth = ncalls;
    if (outer) {
        /* Over the cap with what the host built between calls (see
         * sb_alloc): collect first, so that garbage is not taken for the
         * twin's own use and faulted on its first allocation. */
        if (sb->mem_used > sb->mem_limit)
            lua_gc(L, LUA_GCCOLLECT);
        if (watch_restart) {
            watch_restart = 0;
            watch_start();
        }
        sb->in_call = true;
        sb->used = 0;
        sb->aborting = false;
        if (depth < MAX_NESTED) {
            calls[depth] = sb;
            atomic_signal_fence(memory_order_seq_cst);
            ncalls = depth + 1;
        }
        sb->thread = pthread_self();
        atomic_fetch_add_explicit(&sb->seq, 1, memory_order_relaxed);
        atomic_store_explicit(&sb->busy, true, memory_order_release);
        /* Deeper than the handler can see: counted from the start. */
        if (depth >= MAX_NESTED) {
            sb->armed = true;
            lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_STEP);
        }
    }
    int rc = lua_pcall(L, nargs, nresults, handler);
    dp_sb_status_t status = DP_SB_OK;
    if (rc != LUA_OK) {
        status = sb->aborting ? sb->abort_status : rc == LUA_ERRMEM ? DP_SB_MEMORY : DP_SB_ERROR;
        const char *full = lua_tostring(L, -1);
        if (full == NULL)
            full = "(error object is not a string)";
        const char *tb = strstr(full, "\nstack traceback:");
        if (status == DP_SB_BUDGET || status == DP_SB_MEMORY) {
            if (err != NULL) {
                free(*err);
                *err = dp_xstrdup(sb->aborting ? sb->abort_where : "memory cap reached");
            }
        } else if (err != NULL) {
            free(*err);
            *err = tb != NULL ? strndup(full, (size_t)(tb - full)) : dp_xstrdup(full);
        }
        if (trace != NULL) {
            free(*trace);
            *trace = dp_xstrdup(tb != NULL ? tb + 1 : "");
        }
        lua_pop(L, 1);
    }
    if (outer) {
        atomic_store_explicit(&sb->busy, false, memory_order_release);
        if (depth < MAX_NESTED) {
            ncalls = depth;
            atomic_signal_fence(memory_order_seq_cst);
        }
        disarm(sb);
        sb->in_call = false;
        sb->aborting = false;
    }
    return status;
}

dp_sb_status_t dp_sandbox_call(dp_sandbox_t *sb, int nargs, int nresults, char **err, char **trace)
{
    lua_State *L = sb->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    dp_sb_status_t status = dp_sandbox_call_h(sb, base, nargs, nresults, err, trace);
    lua_remove(L, base);
    return status;
}

int dp_sandbox_load(dp_sandbox_t *sb, const char *code, size_t len, const char *chunkname,
                    char **err)
{
    /* Loading allocates; count it as a call so the memory cap applies. */
    bool outer = !sb->in_call;
    sb->in_call = true;
    int rc = luaL_loadbufferx(sb->L, code, len, chunkname, "t");
    if (outer)
        sb->in_call = false;
    if (rc != LUA_OK) {
        dp_fail(err, rc == LUA_ERRMEM ? DP_ENOMEM : DP_ESCRIPT, "%s", lua_tostring(sb->L, -1));
        lua_pop(sb->L, 1);
        sb->aborting = false;
        return rc == LUA_ERRMEM ? DP_ENOMEM : DP_ESCRIPT;
    }
    return 0;
}

size_t dp_sandbox_memory(const dp_sandbox_t *sb)
{
    return sb->mem_used;
}

uint64_t dp_sandbox_instructions(const dp_sandbox_t *sb)
{
    return sb->used;
}

const char *const *dp_sandbox_required_files(const dp_sandbox_t *sb)
{
    return (const char *const *)sb->required;
}
