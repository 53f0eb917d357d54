#!/bin/bash
# doppel export: CSV of a real journal written by `doppel run`, filters,
# snapshots as JSON, damaged files, and clear errors for bad arguments.
set -u
. "$(dirname "$(realpath "$0")")/lib/expect.sh"
DOPPEL=$(realpath "$1")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
failures=0

check() {
    if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}

cat >plant.lua <<'EOF'
plant { name = "exp", journal = { segment_size = "4KiB" } }
device "gen" { driver = "sim", seed = 3 }
twin "T" {
   script = "t.lua",
   tags = {
      a = { device = "gen", wave = "sawtooth", mean = 5, amplitude = 5, period = "1s", every = "10ms" },
      b = { device = "gen", wave = "square", mean = 0.5, amplitude = 0.5, period = "200ms",
            type = "bool", every = "20ms" },
   },
}
EOF
cat >t.lua <<'EOF'
local alarm = require "doppel.alarm"
local high = alarm.limit { name = "a_high", high = 8, severity = "high" }
twin.tag("twice")
twin.on_change("a", function(v) twin.set("twice", 2 * v); high:update(v) end)
twin.on_change("b", function(v) twin.event("flip", { b = v }) end)
EOF
"$DOPPEL" run plant.lua --data-dir data --for 1s 2>run.log || { echo "FAIL: run"; cat run.log; exit 1; }

expect 0 "seq,time,type,tag,value,quality,twin,kind,text" -- "$DOPPEL" export --data-dir data --csv
"$DOPPEL" export --data-dir data --csv >all.csv
check "several segments were written" '[ "$(ls data/journal/*.seg | wc -l)" -gt 1 ]'
check "samples of both tags" 'grep -q ",sample,T.a," all.csv && grep -q ",sample,T.b,true," all.csv'
check "derived samples flagged" 'grep -q ",sample,T.twice,.*,derived," all.csv'
check "twin events" 'grep -q ",event,,,,T,flip,b=" all.csv'
check "seqs run 1..n" 'awk -F, "NR>1 && \$1 != NR-1 {bad=1} END {exit bad}" all.csv'
"$DOPPEL" export --data-dir data --tags 'T.a' >a.csv
check "--tags keeps only matching samples" \
    '[ "$(awk -F, "NR>1 && \$4 != \"T.a\"" a.csv | wc -l)" -eq 0 ] && [ "$(wc -l <a.csv)" -gt 5 ]'
"$DOPPEL" export --data-dir data --tags 'T.a,T.tw*' >two.csv
check "several globs" 'grep -q ",T.twice," two.csv && grep -q ",T.a," two.csv && ! grep -q ",T.b," two.csv'
mid=$(awk -F, 'NR == 20 { print $2 }' all.csv)
"$DOPPEL" export --data-dir data --from "$mid" >from.csv
check "--from is inclusive" '[ "$(sed -n 2p from.csv | cut -d, -f2)" == "$mid" ]'
"$DOPPEL" export --data-dir data --to "$mid" >to.csv
check "--to is exclusive" '[ "$(wc -l <to.csv)" -le 19 ] && ! grep -qF ",$mid," to.csv'
expect 0 '"plant": "exp"' -- "$DOPPEL" export --data-dir data --state
expect 0 '"T.a": {"value":' -- "$DOPPEL" export --data-dir data --state
expect 0 '{"twin": "T", "name": "a_high", "state": ' -- "$DOPPEL" export --data-dir data --state
"$DOPPEL" export --data-dir data --state >state.json
check "--state is valid JSON with the alarm list" \
    'python3 -c "import json,sys; d=json.load(open(\"state.json\")); sys.exit(d[\"alarms\"][0][\"severity\"] != \"high\")"'

# Bad arguments.
expect 2 'unknown argument "--bogus"' -- "$DOPPEL" export --data-dir data --bogus
expect 2 'option "--tags" needs a value' -- "$DOPPEL" export --data-dir data --tags
expect 2 '--from: ' -- "$DOPPEL" export --data-dir data --from yesterday
expect 1 'no such directory' -- "$DOPPEL" export --data-dir nowhere
expect 1 'no valid snapshot' -- "$DOPPEL" export --data-dir nowhere --state
expect 0 'Writes the journal' -- "$DOPPEL" help export

# Damage: a flipped byte in the first segment and garbage in a snapshot.
seg=$(ls data/journal/*.seg | sort | head -1)
printf '\xff' | dd of="$seg" bs=1 seek=300 conv=notrunc status=none
expect 0 "corrupted data (bad length or CRC)" -- "$DOPPEL" export --data-dir data
expect 0 "corrupted bytes skipped in 1 places" -- "$DOPPEL" export --data-dir data
n_after=$("$DOPPEL" export --data-dir data 2>/dev/null | wc -l)
check "one record lost, the rest read" '[ "$n_after" -eq $(($(wc -l <all.csv) - 1)) ]'
for s in data/snapshots/*.snap; do printf 'garbage, not a snapshot at all' >"$s"; done
expect 1 'no valid snapshot' -- "$DOPPEL" export --data-dir data --state
# doppel run starts with what is intact and says what it skipped.
"$DOPPEL" run plant.lua --data-dir data --for 300ms 2>rerun.log
rerun=$?
check "restart after damage succeeds" '[ "$rerun" -eq 0 ] && ! grep -q ERROR rerun.log'
check "restart says the snapshot was skipped" 'grep -q "not a snapshot (bad magic); skipped" rerun.log'
check "restart says the journal record was skipped" 'grep -q "corrupted data" rerun.log'
check "restart recovered from the journal" 'grep -q "recovery: no snapshot + " rerun.log'

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
