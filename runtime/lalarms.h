/* The plant's alarm list (alarms.h) as seen from a twin's Lua state: the
 * internal module "doppel.alarmlist" that stdlib doppel.alarm builds on.
 *
 *   declare(name, {message=, group=, severity=, priority=, limit=}) -> id
 *   condition(id, active, value)       suppress(id, on)
 *   ack(name [, who])                  shelve(name, duration [, who])
 *   unshelve(name [, who])             -> true, or nil and a message
 *   get(name) -> info or nil           list() -> { info, ... } (the whole plant)
 *
 * `name` is one of this twin's alarms ("vibration_high") or any twin's
 * ("P101.vibration_high"). Misused arguments raise; an unknown alarm or an
 * action that does not apply returns nil and a message. */
#ifndef DP_LALARMS_H
#define DP_LALARMS_H

#include <lua.h>

#include "alarms.h"

/* Pushes the module table for twin `twin`. `a` must outlive the state;
 * `twin` is copied. */
void dp_lalarms_push(lua_State *L, dp_alarms_t *a, const char *twin);

#endif
