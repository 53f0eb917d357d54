/* Lua's string pattern functions with the matching work counted. See
 * lpattern.h.
 *
 * The matcher is a backtracking one, as Lua's is, written from the pattern
 * rules of the Lua 5.4 manual (section 6.4.1) and checked against the stock
 * library case by case: a pattern item is a single character class (".",
 * "%a", "[set]", a literal) with an optional quantifier, or one of "%bxy",
 * "%f[set]", "%1".."%9", a capture "(" ... ")" or a position capture "()".
 * `match_here` tries the pattern from one subject position and returns where
 * the match ends; every attempt counts one step, as does every subject
 * character a quantifier, a balance or a back reference walks over, and each
 * DP_LPATTERN_STEP steps go to the charge callback, which can stop the call. */
#include "lpattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <string.h> /* memmem (the build defines _GNU_SOURCE): a linear-time plain search */

#define MAX_CAPTURES 32  /* LUA_MAXCAPTURES */
#define MAX_DEPTH    200 /* nested match attempts before "pattern too complex" */
#define CAP_OPEN     (-1)
#define CAP_POSITION (-2)
#define ESC          '%'

typedef struct {
    const char *s, *s_end; /* the subject */
    const char *p_end;     /* the pattern's end */
    lua_State *L;
    dp_lpattern_charge_cb charge;
    uint64_t steps; /* not yet charged */
    int depth;      /* attempts left to nest */
    int level;      /* captures opened so far */
    struct {
        const char *at;
        ptrdiff_t len; /* or CAP_OPEN, CAP_POSITION */
    } cap[MAX_CAPTURES];
} pm_t;

/* The callback, kept in a userdata that is upvalue 1 of every function. */
typedef struct {
    dp_lpattern_charge_cb fn;
} charger_t;

static void charge_now(pm_t *m)
{
    uint64_t n = m->steps;
    m->steps = 0;
    if (m->charge != NULL && n > 0)
        m->charge(m->L, n);
}

static inline void step(pm_t *m, uint64_t n)
{
    m->steps += n;
    if (m->steps >= DP_LPATTERN_STEP)
        charge_now(m);
}

static void pm_init(pm_t *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
    m->L = L;
    m->s = s;
    m->s_end = s + ls;
    m->p_end = p + lp;
    m->charge = ((charger_t *)lua_touserdata(L, lua_upvalueindex(1)))->fn;
    m->steps = 0;
}

/* Before each attempt from a new subject position. */
static void pm_reset(pm_t *m)
{
    m->level = 0;
    m->depth = MAX_DEPTH;
}

/* ---- single character classes ------------------------------------------ */

/* Whether c is in class %cl ("%a", "%D", ...); any other cl is itself. */
static bool in_class(int c, int cl)
{
    bool in;
    switch (tolower(cl)) {
    case 'a':
        in = isalpha(c);
        break;
    case 'c':
        in = iscntrl(c);
        break;
    case 'd':
        in = isdigit(c);
        break;
    case 'g':
        in = isgraph(c);
        break;
    case 'l':
        in = islower(c);
        break;
    case 'p':
        in = ispunct(c);
        break;
    case 's':
        in = isspace(c);
        break;
    case 'u':
        in = isupper(c);
        break;
    case 'w':
        in = isalnum(c);
        break;
    case 'x':
        in = isxdigit(c);
        break;
    case 'z':
        in = c == 0;
        break; /* deprecated in Lua 5.2, still understood */
    default:
        return cl == c;
    }
    return isupper(cl) ? !in : in;
}

/* Whether c is in the set from '[' at p to its ']' at close. */
static bool in_set(int c, const char *p, const char *close)
{
    bool want = true;
    if (p[1] == '^') {
        want = false;
        p++;
    }
    for (p++; p < close; p++) {
        if (*p == ESC) {
            p++;
            if (in_class(c, (unsigned char)*p))
                return want;
        } else if (p[1] == '-' && p + 2 < close) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return want;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return want;
        }
    }
    return !want;
}

/* The end of the single character class at p. */
static const char *class_end(pm_t *m, const char *p)
{
    char first = *p++;
    if (first == ESC) {
        if (p >= m->p_end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (first != '[')
        return p;
    if (p < m->p_end && *p == '^')
        p++;
    /* The set's first character is never its end: "[]]" is a set of "]". */
    do {
        if (p >= m->p_end)
            luaL_error(m->L, "malformed pattern (missing ']')");
        if (*p++ == ESC && p < m->p_end)
            p++;
    } while (p >= m->p_end || *p != ']');
    return p + 1;
}

/* Whether the subject character at s is in the class from p to ep. */
static bool class_at(const pm_t *m, const char *s, const char *p, const char *ep)
{
    if (s >= m->s_end)
        return false;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.':
        return true;
    case ESC:
        return in_class(c, (unsigned char)p[1]);
    case '[':
        return in_set(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

/* ---- matching ------------------------------------------------------------ */

static const char *match_here(pm_t *m, const char *s, const char *p);

/* How many subject characters from s are in the class from p to ep. */
static ptrdiff_t run_length(const pm_t *m, const char *s, const char *p, const char *ep)
{
    const char *e = s;
    switch (*p) {
    case '.':
        return m->s_end - s;
    case ESC:
        while (e < m->s_end && in_class((unsigned char)*e, (unsigned char)p[1]))
            e++;
        break;
    case '[':
        while (e < m->s_end && in_set((unsigned char)*e, p, ep - 1))
            e++;
        break;
    default:
        while (e < m->s_end && *e == *p)
            e++;
    }
    return e - s;
}

/* Longest run first, then shorter ones. */
static const char *match_greedy(pm_t *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = run_length(m, s, p, ep);
    step(m, (uint64_t)n);
    for (; n >= 0; n--) {
        const char *e = match_here(m, s + n, ep + 1);
        if (e != NULL)
            return e;
    }
    return NULL;
}

/* Shortest run first, then longer ones. */
static const char *match_lazy(pm_t *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *e = match_here(m, s, ep + 1);
        if (e != NULL)
            return e;
        if (!class_at(m, s, p, ep))
            return NULL;
        s++; /* each longer try is one more step of match_here */
    }
}

/* "%bxy" at p (pointing to x). */
static const char *match_balance(pm_t *m, const char *s, const char *p)
{
    if (p + 1 >= m->p_end)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->s_end || *s != p[0])
        return NULL;
    const char *from = s;
    int depth = 1;
    while (++s < m->s_end) {
        if (*s == p[1]) {
            if (--depth == 0)
                break;
        } else if (*s == p[0]) {
            depth++;
        }
    }
    step(m, (uint64_t)(s - from));
    return s < m->s_end ? s + 1 : NULL;
}

static int open_capture(pm_t *m)
{
    for (int l = m->level - 1; l >= 0; l--) {
        if (m->cap[l].len == CAP_OPEN)
            return l;
    }
    return luaL_error(m->L, "invalid pattern capture");
}

static const char *match_capture(pm_t *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->level >= MAX_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[m->level].at = s;
    m->cap[m->level].len = what;
    m->level++;
    const char *e = match_here(m, s, p);
    if (e == NULL)
        m->level--;
    return e;
}

static const char *match_close(pm_t *m, const char *s, const char *p)
{
    int l = open_capture(m);
    m->cap[l].len = s - m->cap[l].at;
    const char *e = match_here(m, s, p);
    if (e == NULL)
        m->cap[l].len = CAP_OPEN;
    return e;
}

/* "%1".."%9": the text of a closed capture again. A position capture has no
 * text and never matches. */
static const char *match_backref(pm_t *m, const char *s, int digit)
{
    int l = digit - '1';
    if (l < 0 || l >= m->level || m->cap[l].len == CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", l + 1);
    ptrdiff_t len = m->cap[l].len;
    if (len < 0)
        return NULL;
    step(m, 1 + (uint64_t)len / 16);
    if (m->s_end - s >= len && memcmp(m->cap[l].at, s, (size_t)len) == 0)
        return s + len;
    return NULL;
}

/* Matches the pattern from p against the subject from s; returns the end of
 * the match or NULL. Items that end the attempt either way continue in the
 * loop instead of recursing. */
static const char *match_here(pm_t *m, const char *s, const char *p)
{
    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    step(m, 1);
    const char *ep;
    while (p != m->p_end) {
        switch (*p) {
        case '(':
            if (p + 1 < m->p_end && p[1] == ')')
                s = match_capture(m, s, p + 2, CAP_POSITION);
            else
                s = match_capture(m, s, p + 1, CAP_OPEN);
            goto done;
        case ')':
            s = match_close(m, s, p + 1);
            goto done;
        case '$':
            if (p + 1 == m->p_end) {
                if (s != m->s_end)
                    s = NULL;
                goto done;
            }
            goto item;
        case ESC:
            if (p + 1 < m->p_end && p[1] == 'b') {
                s = match_balance(m, s, p + 2);
                if (s == NULL)
                    goto done;
                p += 4;
                continue;
            }
            if (p + 1 < m->p_end && p[1] == 'f') {
                p += 2;
                if (p >= m->p_end || *p != '[')
                    luaL_error(m->L, "missing '[' after '%%f' in pattern");
                ep = class_end(m, p);
                /* Outside the subject the character is '\0'. */
                int before = s == m->s ? 0 : (unsigned char)s[-1];
                int here = s < m->s_end ? (unsigned char)*s : 0;
                if (in_set(before, p, ep - 1) || !in_set(here, p, ep - 1)) {
                    s = NULL;
                    goto done;
                }
                p = ep;
                continue;
            }
            if (p + 1 < m->p_end && isdigit((unsigned char)p[1])) {
                s = match_backref(m, s, (unsigned char)p[1]);
                if (s == NULL)
                    goto done;
                p += 2;
                continue;
            }
            goto item;
        default:
        item:
            ep = class_end(m, p);
            char q = ep < m->p_end ? *ep : '\0';
            if (!class_at(m, s, p, ep)) {
                /* Zero occurrences are allowed for '*', '?' and '-'. */
                if (q == '*' || q == '?' || q == '-') {
                    p = ep + 1;
                    continue;
                }
                s = NULL;
                goto done;
            }
            switch (q) {
            case '?': {
                const char *e = match_here(m, s + 1, ep + 1);
                if (e != NULL) {
                    s = e;
                    goto done;
                }
                p = ep + 1;
                continue;
            }
            case '+':
                s = match_greedy(m, s + 1, p, ep);
                goto done;
            case '*':
                s = match_greedy(m, s, p, ep);
                goto done;
            case '-':
                s = match_lazy(m, s, p, ep);
                goto done;
            default:
                s++;
                p = ep;
                continue;
            }
        }
    }
done:
    m->depth++;
    return s;
}

/* ---- results --------------------------------------------------------------- */

/* Pushes capture i; without captures, capture 0 is the whole match s..e. */
static void push_capture(pm_t *m, int i, const char *s, const char *e)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(m->L, m->cap[i].at - m->s + 1);
    else
        lua_pushlstring(m->L, m->cap[i].at, (size_t)len);
}

/* Pushes every capture, or the whole match s..e when there are none and s
 * is not NULL; returns how many. */
static int push_captures(pm_t *m, const char *s, const char *e)
{
    int n = m->level == 0 && s != NULL ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

/* ---- the library functions ------------------------------------------------- */

/* A 1-based position, negative from the end, clipped below at 1. */
static size_t start_at(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

static bool has_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++) {
        if (strchr("^$*+?.([%-", p[i]) != NULL && p[i] != '\0')
            return true;
    }
    return false;
}

static int find_or_match(lua_State *L, bool find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        lua_pushnil(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        const char *at = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
        if (at == NULL) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushinteger(L, at - s + 1);
        lua_pushinteger(L, at - s + (lua_Integer)lp);
        return 2;
    }
    bool anchored = lp > 0 && *p == '^';
    if (anchored) {
        p++;
        lp--;
    }
    pm_t m;
    pm_init(&m, L, s, ls, p, lp);
    const char *from = s + init;
    do {
        pm_reset(&m);
        const char *e = match_here(&m, from, p);
        if (e != NULL) {
            charge_now(&m);
            if (!find)
                return push_captures(&m, from, e);
            lua_pushinteger(L, from - s + 1);
            lua_pushinteger(L, e - s);
            return push_captures(&m, NULL, NULL) + 2;
        }
    } while (from++ < m.s_end && !anchored);
    charge_now(&m);
    lua_pushnil(L);
    return 1;
}

static int str_find(lua_State *L)
{
    return find_or_match(L, true);
}

static int str_match(lua_State *L)
{
    return find_or_match(L, false);
}

/* gmatch's iterator state. A '^' is an ordinary character in gmatch. */
typedef struct {
    pm_t m;
    const char *from;
    const char *p;
    const char *last; /* end of the previous match: an empty match there is skipped */
} gm_t;

static int gmatch_next(lua_State *L)
{
    gm_t *g = lua_touserdata(L, lua_upvalueindex(4));
    g->m.L = L;
    for (const char *from = g->from; from <= g->m.s_end; from++) {
        pm_reset(&g->m);
        const char *e = match_here(&g->m, from, g->p);
        if (e != NULL && e != g->last) {
            charge_now(&g->m);
            g->from = g->last = e;
            return push_captures(&g->m, from, e);
        }
    }
    charge_now(&g->m);
    g->from = g->m.s_end + 1;
    return 0;
}

static int str_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls)
        init = ls + 1;
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1)); /* the charger: upvalue 1 of the iterator too */
    lua_insert(L, 1);
    /* Upvalues 2 and 3 keep the subject and the pattern alive. */
    gm_t *g = lua_newuserdatauv(L, sizeof *g, 0);
    pm_init(&g->m, L, s, ls, p, lp);
    g->from = s + init;
    g->p = p;
    g->last = NULL;
    lua_pushcclosure(L, gmatch_next, 4);
    return 1;
}

/* Appends the replacement string (argument 3) for the match s..e: "%0" is
 * the match, "%1".."%9" the captures, "%%" a '%'. */
static void add_template(pm_t *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t len;
    const char *r = lua_tolstring(m->L, 3, &len);
    const char *end = r + len;
    while (r < end) {
        const char *esc = memchr(r, ESC, (size_t)(end - r));
        if (esc == NULL) {
            luaL_addlstring(b, r, (size_t)(end - r));
            return;
        }
        luaL_addlstring(b, r, (size_t)(esc - r));
        r = esc + 1;
        char c = r < end ? *r : '\0';
        if (c == ESC) {
            luaL_addchar(b, ESC);
        } else if (c == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit((unsigned char)c)) {
            push_capture(m, c - '1', s, e);
            luaL_tolstring(m->L, -1, NULL);
            lua_remove(m->L, -2);
            luaL_addvalue(b);
        } else {
            luaL_error(m->L, "invalid use of '%c' in replacement string", ESC);
        }
        r++;
    }
}

/* Appends the replacement for the match s..e; returns whether it differs
 * from the match (a false or nil from a table or function keeps it). */
static bool add_replacement(pm_t *m, luaL_Buffer *b, const char *s, const char *e, int how)
{
    lua_State *L = m->L;
    if (how == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (how == LUA_TTABLE) {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_template(m, b, s, e);
        return true;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return false;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return true;
}

static int str_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int how = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(
        L, how == LUA_TNUMBER || how == LUA_TSTRING || how == LUA_TFUNCTION || how == LUA_TTABLE, 3,
        "string/function/table");
    bool anchored = lp > 0 && *p == '^';
    if (anchored) {
        p++;
        lp--;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    pm_t m;
    pm_init(&m, L, s, ls, p, lp);
    const char *from = s, *last = NULL;
    lua_Integer n = 0;
    bool changed = false;
    while (n < max) {
        pm_reset(&m);
        const char *e = match_here(&m, from, p);
        if (e != NULL && e != last) {
            n++;
            changed |= add_replacement(&m, &b, from, e, how);
            from = last = e;
        } else if (from < m.s_end) {
            luaL_addchar(&b, *from++);
        } else {
            break;
        }
        if (anchored)
            break;
    }
    charge_now(&m);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, from, (size_t)(m.s_end - from));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void dp_lpattern_install(lua_State *L, int idx, dp_lpattern_charge_cb charge)
{
    static const luaL_Reg fns[] = {
        {"find", str_find}, {"match", str_match}, {"gmatch", str_gmatch},
        {"gsub", str_gsub}, {NULL, NULL},
    };
    idx = lua_absindex(L, idx);
    charger_t *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->fn = charge;
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, idx, f->name);
    }
    lua_pop(L, 1);
}
