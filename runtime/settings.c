#include "settings.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

static bool in_list(const char *const *list, const char *s)
{
    for (; list != NULL && *list != NULL; list++) {
        if (strcmp(*list, s) == 0)
            return true;
    }
    return false;
}

static const dp_setting_t *find_setting(const dp_setting_t *desc, const char *name)
{
    for (; desc->name != NULL; desc++) {
        if (strcmp(desc->name, name) == 0)
            return desc;
    }
    return NULL;
}

static char *known_fields(const dp_setting_t *desc)
{
    size_t n = 1;
    for (const dp_setting_t *d = desc; d->name != NULL; d++)
        n += strlen(d->name) + 2;
    char *s = dp_xmalloc(n);
    s[0] = '\0';
    for (const dp_setting_t *d = desc; d->name != NULL; d++) {
        if (d != desc)
            strcat(s, ", ");
        strcat(s, d->name);
    }
    return s;
}

static char *choices_list(const char *const *choices)
{
    size_t n = 1;
    for (const char *const *c = choices; *c != NULL; c++)
        n += strlen(*c) + 2;
    char *s = dp_xmalloc(n);
    s[0] = '\0';
    for (const char *const *c = choices; *c != NULL; c++) {
        if (c != choices)
            strcat(s, ", ");
        strcat(s, *c);
    }
    return s;
}

/* Parses the value at idx for one setting. `ctx` and the field name are
 * added to messages by the caller. */
static int parse_one(lua_State *L, int idx, const dp_setting_t *d, void *out, char **err)
{
    char *field = (char *)out + d->offset;
    int t = lua_type(L, idx);
    switch (d->type) {
    case DP_SET_STRING:
        if (t != LUA_TSTRING)
            return dp_fail(err, DP_EINVAL, "expected a string, got %s", lua_typename(L, t));
        free(*(char **)field);
        *(char **)field = dp_xstrdup(lua_tostring(L, idx));
        return 0;
    case DP_SET_INT: {
        int isint = 0;
        lua_Integer v = lua_tointegerx(L, idx, &isint);
        if (!isint)
            return dp_fail(err, DP_EINVAL, "expected an integer, got %s",
                           t == LUA_TNUMBER ? "a fraction" : lua_typename(L, t));
        if (d->min < d->max && (v < d->min || v > d->max))
            return dp_fail(err, DP_EINVAL, "%lld is out of range [%.15g, %.15g]", (long long)v,
                           d->min, d->max);
        *(int64_t *)field = v;
        return 0;
    }
    case DP_SET_NUMBER: {
        if (t != LUA_TNUMBER)
            return dp_fail(err, DP_EINVAL, "expected a number, got %s", lua_typename(L, t));
        double v = lua_tonumber(L, idx);
        if (!isfinite(v))
            return dp_fail(err, DP_EINVAL, "expected a finite number");
        if (d->min < d->max && (v < d->min || v > d->max))
            return dp_fail(err, DP_EINVAL, "%.15g is out of range [%.15g, %.15g]", v, d->min,
                           d->max);
        *(double *)field = v;
        return 0;
    }
    case DP_SET_BOOL:
        if (t != LUA_TBOOLEAN)
            return dp_fail(err, DP_EINVAL, "expected true or false, got %s", lua_typename(L, t));
        *(bool *)field = lua_toboolean(L, idx);
        return 0;
    case DP_SET_DURATION: {
        dp_time_t v;
        if (t == LUA_TNUMBER) {
            double s = lua_tonumber(L, idx);
            if (!(s >= 0 && s < 1e12))
                return dp_fail(err, DP_EINVAL, "duration %g s is out of range", s);
            v = (dp_time_t)llround(s * 1e6);
        } else if (t == LUA_TSTRING) {
            int rc = dp_duration_parse(lua_tostring(L, idx), &v, err);
            if (rc < 0)
                return rc;
        } else {
            return dp_fail(err, DP_EINVAL, "expected a duration like \"5s\", got %s",
                           lua_typename(L, t));
        }
        if (d->min < d->max && (v < d->min * 1e6 || v > d->max * 1e6))
            return dp_fail(err, DP_EINVAL, "duration out of range [%gs, %gs]", d->min, d->max);
        *(dp_time_t *)field = v;
        return 0;
    }
    case DP_SET_ENUM: {
        if (t != LUA_TSTRING)
            return dp_fail(err, DP_EINVAL, "expected a string, got %s", lua_typename(L, t));
        const char *s = lua_tostring(L, idx);
        for (int i = 0; d->choices[i] != NULL; i++) {
            if (strcmp(d->choices[i], s) == 0) {
                *(int *)field = i;
                return 0;
            }
        }
        char *list = choices_list(d->choices);
        int rc = dp_fail(err, DP_EINVAL, "unknown value \"%s\" (one of: %s)", s, list);
        free(list);
        return rc;
    }
    case DP_SET_CUSTOM:
        return d->parse(L, idx, field, err);
    }
    return dp_fail(err, DP_EINVAL, "unsupported setting type");
}

/* Adds "context: field: " (ctx and sep as in dp_settings_parse) in front of
 * a message from parse_one. */
static int with_context(char **err, int rc, const char *ctx, const char *sep, const char *field)
{
    if (err != NULL) {
        char *inner = *err;
        *err = NULL;
        dp_fail(err, rc, "%s%s%s: %s", ctx, sep, field, inner != NULL ? inner : dp_strerror(rc));
        free(inner);
    }
    return rc;
}

int dp_settings_parse(lua_State *L, int idx, const dp_setting_t *desc, void *out,
                      const char *const *ignore, const char *context, char **err)
{
    /* A table inside another setting (a DP_SET_CUSTOM field) has no context
     * of its own: the outer field's name is already in front. */
    const char *ctx = context != NULL ? context : "", *sep = context != NULL ? ": " : "";
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        return dp_fail(err, DP_EINVAL, "%s%sexpected a table, got %s", ctx, sep,
                       luaL_typename(L, idx));
    /* Unknown fields first: a typo should be named, not silently ignored. */
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return dp_fail(err, DP_EINVAL, "%s%sfield names must be strings", ctx, sep);
        }
        const char *key = lua_tostring(L, -1);
        if (find_setting(desc, key) == NULL && !in_list(ignore, key)) {
            char *known = known_fields(desc);
            int rc = dp_fail(err, DP_EINVAL, "%s%sunknown field \"%s\" (known: %s)", ctx, sep, key,
                             known);
            free(known);
            lua_pop(L, 1);
            return rc;
        }
    }
    for (const dp_setting_t *d = desc; d->name != NULL; d++) {
        lua_getfield(L, idx, d->name);
        int rc = 0;
        if (!lua_isnil(L, -1)) {
            rc = parse_one(L, -1, d, out, err);
        } else if (d->required) {
            rc = dp_fail(err, DP_EINVAL, "%s%smissing required field \"%s\"", ctx, sep, d->name);
            lua_pop(L, 1);
            return rc;
        } else if (d->def != NULL) {
            lua_pushstring(L, d->def);
            if (d->type == DP_SET_INT || d->type == DP_SET_NUMBER || d->type == DP_SET_DURATION) {
                if (d->type != DP_SET_DURATION || lua_isnumber(L, -1)) {
                    /* Numeric defaults are written as text; convert like Lua would. */
                    lua_Number n = lua_tonumber(L, -1);
                    lua_pop(L, 1);
                    if (d->type == DP_SET_INT)
                        lua_pushinteger(L, (lua_Integer)n);
                    else
                        lua_pushnumber(L, n);
                }
            } else if (d->type == DP_SET_BOOL) {
                bool b = strcmp(lua_tostring(L, -1), "true") == 0;
                lua_pop(L, 1);
                lua_pushboolean(L, b);
            }
            rc = parse_one(L, -1, d, out, err);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (rc < 0)
            return with_context(err, rc, ctx, sep, d->name);
    }
    return 0;
}

void dp_settings_free(const dp_setting_t *desc, void *out)
{
    for (const dp_setting_t *d = desc; d->name != NULL; d++) {
        char *field = (char *)out + d->offset;
        if (d->type == DP_SET_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (d->type == DP_SET_CUSTOM && d->free != NULL) {
            d->free(field);
        }
    }
}

void dp_settings_doc(const dp_setting_t *desc, FILE *out)
{
    static const char *const type_names[] = {"string",   "integer", "number", "boolean",
                                             "duration", "one of",  "table"};
    fprintf(out, "| field | type | default | meaning |\n|---|---|---|---|\n");
    for (const dp_setting_t *d = desc; d->name != NULL; d++) {
        fprintf(out, "| `%s` | %s", d->name, type_names[d->type]);
        if (d->type == DP_SET_ENUM) {
            for (int i = 0; d->choices[i] != NULL; i++)
                fprintf(out, "%s`%s`", i ? ", " : " ", d->choices[i]);
        }
        if (d->min < d->max)
            fprintf(out, " in [%g, %g]", d->min, d->max);
        fprintf(out, " | %s | %s |\n", d->required ? "required" : (d->def ? d->def : "-"),
                d->doc ? d->doc : "");
    }
}

void dp_settings_patterns_free(void *field)
{
    char ***v = field;
    for (char **p = *v; p != NULL && *p != NULL; p++)
        free(*p);
    free(*v);
    *v = NULL;
}

int dp_settings_patterns(lua_State *L, int idx, const char *who, char ***out, char **err)
{
    const char *pre = who != NULL ? who : "", *sep = who != NULL ? ": " : "";
    idx = lua_absindex(L, idx);
    bool one = lua_type(L, idx) == LUA_TSTRING;
    if (!one && !lua_istable(L, idx))
        return dp_fail(err, DP_EINVAL, "%s%sexpected a tag pattern or a list of them", pre, sep);
    lua_Integer n = one ? 1 : (lua_Integer)lua_rawlen(L, idx);
    *out = dp_xcalloc((size_t)n + 1, sizeof **out);
    for (lua_Integer i = 1; i <= n; i++) {
        if (!one)
            lua_rawgeti(L, idx, i);
        int rc = lua_type(L, -1) != LUA_TSTRING
                     ? dp_fail(err, DP_EINVAL, "%s%selement %lld is not a string", pre, sep,
                               (long long)i)
                     : dp_tag_pattern_check(lua_tostring(L, -1), err);
        if (rc == 0)
            (*out)[i - 1] = dp_xstrdup(lua_tostring(L, -1));
        if (!one)
            lua_pop(L, 1);
        if (rc < 0) {
            dp_settings_patterns_free(out);
            return rc;
        }
    }
    return 0;
}

int dp_settings_patterns_parse(lua_State *L, int idx, void *field, char **err)
{
    return dp_settings_patterns(L, idx, NULL, field, err);
}
