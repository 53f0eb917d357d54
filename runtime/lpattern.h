/* Lua's string pattern functions (string.find, match, gmatch and gsub) with
 * the matching work counted, for the sandbox.
 *
 * The stock functions match in C, where no count hook runs: a backtracking
 * pattern such as ".-.-.-.-b" over a few hundred characters runs for seconds,
 * and the loop with every twin waits. These behave like Lua 5.4's (same
 * results, same errors; tests/unit/test_lpattern.c compares them on many
 * generated cases) and call `charge` every DP_LPATTERN_STEP steps of matching
 * (a step is one attempt at one pattern item), so the sandbox can charge the
 * work to the call's budget and stop it. */
#ifndef DP_LPATTERN_H
#define DP_LPATTERN_H

#include <lua.h>
#include <stdint.h>

#define DP_LPATTERN_STEP 4096

/* Charges `steps` of work; may raise a Lua error (which unwinds the match). */
typedef void (*dp_lpattern_charge_cb)(lua_State *L, uint64_t steps);

/* Sets find, match, gmatch and gsub in the table at `idx` (the string
 * library). `charge` may be NULL (nothing is charged). */
void dp_lpattern_install(lua_State *L, int idx, dp_lpattern_charge_cb charge);

#endif
