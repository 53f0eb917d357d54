#!/bin/bash
# The REPL end to end: the real `doppel repl` in a pseudo-terminal against a
# real `doppel run` (tests/integration/repl_pty.py does the driving).
set -u
DOPPEL=$(realpath "$1")
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
exec timeout 240 python3 "$SRC/tests/integration/repl_pty.py" "$DOPPEL" "$SRC"
