#!/bin/bash
# The dashboard end to end in headless Chromium: a running plant whose pump
# raises its vibration alarm within seconds; the browser sees live values
# change, acknowledges the alarm, and saves screenshots as test artefacts in
# $DP_BINARY_DIR/artifacts/.
set -u
DOPPEL=$(realpath "$1")
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${DP_BINARY_DIR:-$(dirname "$DOPPEL")}
NODE_DIR=$BIN/browser
ART=$BIN/artifacts
WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
mkdir -p "$ART"

for need in /usr/bin/chromium "$NODE_DIR/node_modules/playwright-core/package.json"; do
    if [ ! -e "$need" ]; then
        echo "FAIL: $need is missing (sh .ci/install-deps; the build installs playwright-core)"
        exit 1
    fi
done

TOKEN=tok-$RANDOM$RANDOM$RANDOM
ENG_TOKEN=eng-$RANDOM$RANDOM$RANDOM
printf 'olga operator %s\n' "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" >tokens.txt
printf 'emil engineer %s\n' "$(printf %s "$ENG_TOKEN" | sha256sum | cut -d' ' -f1)" >>tokens.txt
cat >plant.lua <<'EOF'
plant { name = "e2e", http = { listen = "127.0.0.1:0", tokens = "tokens.txt" } }
device "sim" { driver = "sim", seed = 3 }
twin "P1" {
   class = "centrifugal_pump",
   params = { rated_flow = 130, rated_head = 48, rated_power = 22, vib_alarm = 3.0,
              vib_on_delay = "3s" },
   tags = {
      flow = { device = "sim", wave = "sine", mean = 110, amplitude = 15, period = "30s",
               noise = 0.5, every = "250ms", unit = "m3/h", history = 600 },
      head = { device = "sim", wave = "sine", mean = 46, amplitude = 3, period = "30s",
               every = "500ms", unit = "m", history = 600 },
      power = { device = "sim", wave = "const", mean = 20, noise = 0.2, every = "1s", unit = "kW",
                history = 600 },
      vibration = { device = "sim", wave = "const", mean = 4.2, noise = 0.1, every = "500ms",
                    unit = "mm/s", history = 600 },
      running = { device = "sim", wave = "const", mean = 1, type = "bool", every = "1s" },
      speed_sp = { writable = true, min = 0, max = 3000, unit = "rpm" },
   },
}
EOF
# start LOG: runs the plant and sets URL from its log.
start() {
    "$DOPPEL" run --data-dir "$WORK/data" plant.lua >"$1" 2>&1 &
    PID=$!
    URL=
    for _ in $(seq 1 100); do
        URL=$(grep -o 'listening on http://[0-9.:]*/' "$1" | head -1 | cut -d' ' -f3)
        [ -n "$URL" ] && return 0
        sleep 0.1
    done
    echo "FAIL: plant did not start"
    cat "$1"
    exit 1
}
start plant.log

# The browser test asks for a restart (to see the dashboard reconnect by
# itself) by creating $WORK/restart; the plant comes back on the same port.
NODE_PATH=$NODE_DIR/node_modules timeout 150 node "$SRC/tests/integration/browser/dashboard.js" \
    "$URL" "$TOKEN" "$ART" "$WORK" "$ENG_TOKEN" &
NODE_PID=$!
for _ in $(seq 1 900); do
    [ -e "$WORK/restart" ] && break
    kill -0 "$NODE_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -e "$WORK/restart" ]; then
    port=${URL##*:}
    port=${port%/}
    kill -TERM "$PID"
    wait "$PID"
    sed -i "s/127.0.0.1:0/127.0.0.1:$port/" plant.lua
    start plant2.log
fi
wait "$NODE_PID"
status=$?
if [ $status -ne 0 ]; then
    echo "FAIL: browser test exited $status"
    tail -20 plant.log
    exit 1
fi
grep -q 'P1.speed_sp.*by http:olga' plant.log || {
    echo "FAIL: the setpoint from the dashboard was not logged with who made it"
    exit 1
}
grep -q 'reload requested over HTTP by emil' plant2.log && grep -q 'shadow.*http:emil' plant2.log || {
    echo "FAIL: the engineer's reload and shadow switch were not logged with who made them"
    grep -i 'shadow\|reload' plant2.log
    exit 1
}
grep -q 'alarm vibration_high: ack by http:olga' plant.log || {
    echo "FAIL: the acknowledgement was not logged with who made it"
    exit 1
}
[ -s "$ART/dashboard.png" ] || {
    echo "FAIL: no screenshot"
    exit 1
}
echo "screenshots: $ART/dashboard.png $ART/dashboard-alarms.png $ART/dashboard-tablet.png"
kill -TERM "$PID"
wait "$PID"
st=$?
PID=
[ $st -eq 0 ] || {
    echo "FAIL: plant exited $st"
    exit 1
}
echo "1 passed, 0 failed"
