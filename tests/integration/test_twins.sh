#!/bin/bash
# Runs every twin test in the source tree with `doppel test`: the demo plant's
# twins (examples/), the bundled twin classes (twins/), the stdlib's module
# tests (stdlib/) and the tests of doppel.test itself (tests/lua/). Fails when
# any case fails.
set -u
DOPPEL=$(realpath "$1")
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$SRC" || exit 1
out=$("$DOPPEL" test examples twins stdlib tests/lua 2>&1)
status=$?
echo "$out"
if [ "$status" -ne 0 ]; then
    echo "FAIL: doppel test exited $status"
    exit 1
fi
# At least the cases written for the demo plant ran.
passed=$(tail -1 <<<"$out" | sed -n 's/^\([0-9]*\) passed, 0 failed$/\1/p')
if [ -z "$passed" ] || [ "$passed" -lt 20 ]; then
    echo "FAIL: expected a final line 'N passed, 0 failed' with N >= 20"
    exit 1
fi
echo "ok: $passed twin test cases passed"
