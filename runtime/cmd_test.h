/* `doppel test [PATH...]`: runs twin tests (*_test.lua) in virtual time.
 * The test API is the Lua module doppel.test (stdlib/test.lua) plus the
 * per-case host primitives in cmd_test.c; docs/testing.md describes both. */
#ifndef DP_CMD_TEST_H
#define DP_CMD_TEST_H

#include <stdbool.h>

/* Runs the test files found under `paths` (files or directories; none: the
 * current directory). Prints one line per case and "N passed, N failed".
 * Returns the exit status: 0 all passed, 1 some failed, 2 a PATH that does
 * not exist or a test file that cannot be read. `quiet_logs` raises the log level to warn (the
 * default unless --log-level was given). */
int dp_cmd_test(int npaths, char **paths, bool quiet_logs);

#endif
