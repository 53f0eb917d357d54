#include "lalarms.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Upvalues of every function: the alarm list and the twin's name. */
static dp_alarms_t *list_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static const char *twin_of(lua_State *L)
{
    return lua_tostring(L, lua_upvalueindex(2));
}

/* Who acts: always the twin, so a script cannot pass for an operator; a
 * name it gives (an HMI twin relaying a button) is recorded beside it:
 * "twin:hmi (for olga)". */
static const char *who_of(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return lua_pushfstring(L, "twin:%s", twin_of(L));
    return lua_pushfstring(L, "twin:%s (for %s)", twin_of(L), luaL_checkstring(L, idx));
}

/* Splits "P101.vibration_high" into twin and alarm; a name without a dot is
 * this twin's. The twin part is pushed on the stack (it must stay alive). */
static const char *split(lua_State *L, int idx, const char **alarm)
{
    const char *full = luaL_checkstring(L, idx);
    const char *dot = strrchr(full, '.');
    if (dot == NULL) {
        *alarm = full;
        lua_pushstring(L, twin_of(L));
    } else {
        if (dot == full || dot[1] == '\0')
            luaL_argerror(L, idx, "an alarm name is \"alarm\" or \"twin.alarm\"");
        *alarm = dot + 1;
        lua_pushlstring(L, full, (size_t)(dot - full));
    }
    return lua_tostring(L, -1);
}

/* Runtime failures come back as nil, message. */
static int result(lua_State *L, int rc, char *err)
{
    if (rc == 0) {
        free(err);
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, err != NULL ? err : "failed");
    free(err);
    return 2;
}

static int check_id(lua_State *L, int idx)
{
    lua_Integer id = luaL_checkinteger(L, idx);
    if (id < 0 || id >= dp_alarms_count(list_of(L)))
        luaL_argerror(L, idx, "no such alarm id");
    return (int)id;
}

static int l_declare(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (name[0] == '\0' || strchr(name, '.') != NULL)
        return luaL_argerror(L, 1, "an alarm name is not empty and has no dot");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "message");
    const char *message = luaL_optstring(L, -1, "");
    lua_getfield(L, 2, "group");
    const char *group = luaL_optstring(L, -1, "");
    lua_getfield(L, 2, "severity");
    int sev = dp_severity_parse(luaL_optstring(L, -1, "medium"));
    if (sev < 0)
        return luaL_error(L, "alarm %s: severity must be low, medium, high or critical", name);
    lua_getfield(L, 2, "priority");
    lua_Integer prio = luaL_optinteger(L, -1, 3);
    if (prio < 1 || prio > 4)
        return luaL_error(L, "alarm %s: priority must be 1 (highest) to 4", name);
    lua_getfield(L, 2, "limit");
    double limit = luaL_optnumber(L, -1, NAN);
    int id = dp_alarms_declare(list_of(L), twin_of(L), name, message, group, (dp_severity_t)sev,
                               (int)prio, limit);
    if (id < 0)
        return luaL_error(L, "alarm %s: cannot declare it", name);
    lua_pushinteger(L, id);
    return 1;
}

static int l_condition(lua_State *L)
{
    int id = check_id(L, 1);
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    double value = luaL_optnumber(L, 3, NAN);
    dp_alarms_condition(list_of(L), id, lua_toboolean(L, 2), value);
    return 0;
}

static int l_suppress(lua_State *L)
{
    int id = check_id(L, 1);
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    dp_alarms_suppress(list_of(L), id, lua_toboolean(L, 2));
    return 0;
}

static int l_ack(lua_State *L)
{
    const char *alarm;
    const char *twin = split(L, 1, &alarm);
    const char *who = who_of(L, 2);
    char *err = NULL;
    int rc = dp_alarms_ack(list_of(L), twin, alarm, who, &err);
    return result(L, rc, err);
}

static int l_shelve(lua_State *L)
{
    const char *alarm;
    const char *twin = split(L, 1, &alarm);
    dp_time_t d;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        double s = lua_tonumber(L, 2);
        if (!(s > 0 && s < 1e9))
            return luaL_argerror(L, 2, "duration must be > 0");
        d = (dp_time_t)llround(s * 1e6);
    } else {
        char *err = NULL;
        if (dp_duration_parse(luaL_checkstring(L, 2), &d, &err) < 0) {
            lua_pushstring(L, err);
            free(err);
            return luaL_argerror(L, 2, lua_tostring(L, -1));
        }
        if (d <= 0)
            return luaL_argerror(L, 2, "duration must be > 0");
    }
    const char *who = who_of(L, 3);
    char *err = NULL;
    int rc = dp_alarms_shelve(list_of(L), twin, alarm, d, who, &err);
    return result(L, rc, err);
}

static int l_unshelve(lua_State *L)
{
    const char *alarm;
    const char *twin = split(L, 1, &alarm);
    const char *who = who_of(L, 2);
    char *err = NULL;
    int rc = dp_alarms_unshelve(list_of(L), twin, alarm, who, &err);
    return result(L, rc, err);
}

static void push_info(lua_State *L, const dp_alarm_info_t *i)
{
    lua_createtable(L, 0, 16);
    lua_pushstring(L, i->twin);
    lua_setfield(L, -2, "twin");
    lua_pushstring(L, i->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, i->message);
    lua_setfield(L, -2, "message");
    if (i->group[0] != '\0') {
        lua_pushstring(L, i->group);
        lua_setfield(L, -2, "group");
    }
    lua_pushstring(L, dp_severity_name(i->severity));
    lua_setfield(L, -2, "severity");
    lua_pushinteger(L, i->priority);
    lua_setfield(L, -2, "priority");
    lua_pushstring(L, dp_alarm_state_name(i->state));
    lua_setfield(L, -2, "state");
    lua_pushboolean(L, i->active);
    lua_setfield(L, -2, "active");
    lua_pushboolean(L, i->shelved);
    lua_setfield(L, -2, "shelved");
    if (i->shelved) {
        lua_pushnumber(L, (double)i->shelved_until / 1e6);
        lua_setfield(L, -2, "shelved_until");
    }
    lua_pushboolean(L, i->suppressed);
    lua_setfield(L, -2, "suppressed");
    lua_pushboolean(L, i->first_out);
    lua_setfield(L, -2, "first_out");
    if (i->since != 0) {
        lua_pushnumber(L, (double)i->since / 1e6);
        lua_setfield(L, -2, "since");
    }
    if (!isnan(i->value)) {
        lua_pushnumber(L, i->value);
        lua_setfield(L, -2, "value");
    }
    if (!isnan(i->limit)) {
        lua_pushnumber(L, i->limit);
        lua_setfield(L, -2, "limit");
    }
    if (i->acked_by[0] != '\0') {
        lua_pushstring(L, i->acked_by);
        lua_setfield(L, -2, "acked_by");
    }
}

static int l_get(lua_State *L)
{
    const char *alarm;
    const char *twin = split(L, 1, &alarm);
    dp_alarms_t *a = list_of(L);
    int id = dp_alarms_find(a, twin, alarm);
    dp_alarm_info_t info;
    if (id < 0 || dp_alarms_get(a, id, &info) < 0 || info.retired) {
        lua_pushnil(L);
        return 1;
    }
    push_info(L, &info);
    return 1;
}

static int l_list(lua_State *L)
{
    dp_alarms_t *a = list_of(L);
    int n = dp_alarms_count(a);
    lua_createtable(L, n, 0);
    int out = 0;
    for (int k = 0; k < n; k++) {
        dp_alarm_info_t info;
        dp_alarms_get(a, k, &info);
        if (info.retired)
            continue;
        push_info(L, &info);
        lua_rawseti(L, -2, ++out);
    }
    return 1;
}

void dp_lalarms_push(lua_State *L, dp_alarms_t *a, const char *twin)
{
    static const luaL_Reg fns[] = {
        {"declare", l_declare}, {"condition", l_condition}, {"suppress", l_suppress},
        {"ack", l_ack},         {"shelve", l_shelve},       {"unshelve", l_unshelve},
        {"get", l_get},         {"list", l_list},           {NULL, NULL},
    };
    lua_createtable(L, 0, DP_ARRAY_LEN(fns) - 1);
    lua_pushlightuserdata(L, a);
    lua_pushstring(L, twin);
    luaL_setfuncs(L, fns, 2);
}
