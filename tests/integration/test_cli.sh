#!/bin/bash
# The doppel command line: exit codes and messages for good and bad use,
# checks, and runs of the embedded demo from an unrelated directory.
set -u
. "$(dirname "$(realpath "$0")")/lib/expect.sh"
DOPPEL=$(realpath "$1")
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
failures=0

expect 2 "Usage: doppel COMMAND" -- "$DOPPEL"
expect 0 "Commands:" -- "$DOPPEL" help
expect 0 "Commands:" -- "$DOPPEL" --help
expect 0 "doppel 0." -- "$DOPPEL" version
expect 2 'unknown command "bogus"' -- "$DOPPEL" bogus
expect 2 'unknown option "--bogus"' -- "$DOPPEL" run --bogus
expect 2 'unknown option "-x"' -- "$DOPPEL" -x run
expect 2 'option "--for" needs a value' -- "$DOPPEL" run --for
expect 2 'bad duration "5parsecs"' -- "$DOPPEL" run --virtual --for 5parsecs
expect 2 '--virtual needs --for' -- "$DOPPEL" run --virtual
expect 2 'unknown level "loud"' -- "$DOPPEL" --log-level loud run
expect 2 'unknown option "--virtual"' -- "$DOPPEL" check --virtual x.lua
expect 2 'expected one plant file' -- "$DOPPEL" run a.lua b.lua
expect 0 "--virtual" -- "$DOPPEL" run --help
expect 0 "--virtual" -- "$DOPPEL" help run
expect 0 "Usage: doppel check" -- "$DOPPEL" check --help
expect 2 'unknown command "nope"' -- "$DOPPEL" help nope
expect 2 "no files given" -- "$DOPPEL" check
expect 1 "no-such.lua: error:" -- "$DOPPEL" check no-such.lua

# check: valid files, a syntax error, a bad plant.
expect 0 "plant pump-station: 3 devices, 4 twins" -- \
    "$DOPPEL" check "$SRC/examples/pump-station/plant.lua" "$SRC/twins/centrifugal_pump.lua"
printf 'local x = \nfunction\n' > broken.lua
expect 1 "broken.lua:3: '(' expected" -- "$DOPPEL" check broken.lua
printf "twin 'A' { class = 'centrifugal_pump', tags = { flow = { unti = 'm3/h' } } }\n" > badplant.lua
expect 1 'twin A, tag flow: unknown field "unti"' -- "$DOPPEL" check badplant.lua
printf "twin 'A' { script = 'a.lua' }\n" > plant2.lua
printf "twin.on_change('missing', function() end)\n" > a.lua
expect 1 'no tag "missing" in twin A' -- "$DOPPEL" check plant2.lua

# The embedded demo runs from a directory without the source tree.
expect 0 "virtual run of 1h done" -- "$DOPPEL" run --virtual --for 1h
expect 0 "[station] P101 on" -- "$DOPPEL" run --for 11s
test -d data || { echo "FAIL: data dir not created"; failures=$((failures + 1)); }

# SIGTERM stops a running plant cleanly.
"$DOPPEL" run --data-dir "$WORK/d2" >run.log 2>&1 &
pid=$!
sleep 1
kill -TERM $pid
wait $pid
status=$?
if [ $status -ne 0 ] || ! grep -q "SIGTERM: stopping" run.log; then
    echo "FAIL: SIGTERM did not stop cleanly (status $status)"; cat run.log
    failures=$((failures + 1))
else
    echo "ok: SIGTERM stops cleanly"
fi

if [ $failures -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all CLI checks passed"
