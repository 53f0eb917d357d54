#!/bin/bash
# doppel replay: the demo plant over a generated recording; byte-identical
# output for the same input (CSV and msgpack, at any --speed); --from/--to;
# every malformed line named by file:line:column; usage errors.
set -u
. "$(dirname "$(realpath "$0")")/lib/expect.sh"
DOPPEL=$(realpath "$1")
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PLANT=$SRC/examples/pump-station/plant.lua
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
failures=0
failed() { echo "FAIL: $*"; failures=$((failures + 1)); }

# 13:30 to 15:00 at 5 s: P101's vibration fault at 14:00 raises its alarm.
awk -v from=48600 -v n=5400 -v step=5 -f "$SRC/examples/pump-station/make-recording.awk" > wide.csv
# The same samples in the long layout, with a quality column.
awk -F, 'NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; print "timestamp,tag,value,quality"; next }
         { for (i = 2; i <= NF; i++) print $1 "," name[i] "," $i ",good" }' wide.csv > long.csv

R() { "$DOPPEL" --log-level warn replay "$PLANT" "$@"; }

expect 0 "replayed 10800 samples (1h29min55s of plant time)" "2 alarm events" "replay: 100%" -- \
    R --input wide.csv --out a.csv
grep -q '^2026-01-01T14:00:[0-9.]*Z,alarm,P101,vibration_high,"active",' a.csv ||
    failed "a.csv: no P101 vibration_high active alarm at 14:00"
grep -q '^2026-01-01T14:40:[0-9.]*Z,alarm,P101,vibration_high,"cleared",' a.csv ||
    failed "a.csv: no P101 vibration_high cleared alarm at 14:40"
grep -q '^2026-01-01T13:30:00.000Z,tag,P101,efficiency,' a.csv || failed "a.csv: no efficiency"
grep -q ',tag,station,total_flow,' a.csv || failed "a.csv: no station total_flow"
[ "$(head -1 a.csv)" = "timestamp,type,twin,name,value,detail" ] || failed "a.csv: header"

# Determinism: same input, same bytes; the long layout and --speed change nothing.
R --input wide.csv --out b.csv 2>/dev/null
cmp -s a.csv b.csv && echo "ok: two runs are byte-identical" || failed "two runs differ"
R --input long.csv --out c.csv 2>/dev/null
cmp -s a.csv c.csv && echo "ok: long layout gives the same output" || failed "long layout differs"
R --input wide.csv --out d.csv --speed 200000 2>/dev/null
cmp -s a.csv d.csv && echo "ok: --speed 200000 gives the same output" || failed "--speed differs"
R --input wide.csv --out a.msgpack 2>/dev/null
R --input wide.csv --format msgpack > b.msgpack 2>/dev/null
cmp -s a.msgpack b.msgpack && echo "ok: msgpack output is byte-identical" || failed "msgpack differs"
[ "$(od -A n -t x1 -N 4 a.msgpack | tr -d ' ')" = "86a27473" ] ||
    failed "a.msgpack does not start with a 6-field map {ts=...}"
R --input wide.csv > e.csv 2>/dev/null
cmp -s a.csv e.csv && echo "ok: standard output is the same CSV" || failed "stdout differs"

# On a terminal, a progress bar with rate and ETA (script(1) gives a tty).
if command -v script >/dev/null; then
    tty_out=$(script -qec "'$DOPPEL' --log-level warn replay '$PLANT' --input wide.csv --out t.csv" /dev/null)
    if grep -qF "[##############################] 100%" <<<"$tty_out" && grep -qF "samples/s  ETA" <<<"$tty_out"; then
        echo "ok: progress bar on a terminal"
    else
        failed "no progress bar on a terminal: $tty_out"
    fi
    cmp -s a.csv t.csv || failed "output on a terminal run differs"
fi

# --from / --to keep only that window.
expect 0 "replayed 3610 samples (30min of plant time)" -- \
    R --input wide.csv --from 2026-01-01T14:00:00Z --to 2026-01-01T14:30:00Z --out w.csv
first=$(sed -n 2p w.csv | cut -c1-19)
last=$(tail -1 w.csv | cut -c1-19)
[ "$first" \> "2026-01-01T13:59:59" ] || failed "--from: first record at $first"
[ "$last" \< "2026-01-01T14:30:01" ] || failed "--to: last record at $last"
grep -q ',"cleared",' w.csv && failed "--to 14:30: the 14:40 clear is in the output"

# Malformed recordings: file:line:column and what was wrong.
bad() { # bad NAME CONTENT PATTERN
    printf "$2" > "$1"
    expect 1 "$3" -- R --input "$1" --out /dev/null
}
bad v.csv 'timestamp,P101.flow\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:01Z,1x\n' \
    'v.csv:3:22: bad value "1x": expected a number, true, false or a "quoted string"'
bad t.csv 'timestamp,P101.flow\n2026-01-01T00:00:00Z,1\n2026-13-01T00:00:01Z,2\n' \
    't.csv:3:1: bad timestamp "2026-13-01T00:00:01Z"'
bad o.csv 'timestamp,tag,value\n1767225610,P101.flow,1\n1767225600,P101.flow,2\n' \
    'o.csv:3:1: timestamp 2026-01-01T00:00:00.000Z is before the previous row'"'"'s'
bad n.csv 'timestamp,P101.flow,P101.head\n1767225600,1,2,3\n' \
    'n.csv:2:16: expected 3 fields as in the header, got 4'
bad q.csv 'timestamp,tag,value\n1767225600,P101.flow,"open\n' 'q.csv:2:22: unterminated quoted field'
bad u.csv 'timestamp,P101.flow,P101.flwo\n1767225600,1,2\n' 'u.csv:1:21: no tag "P101.flwo" in plant pump-station'
bad ul.csv '# a comment\ntimestamp,tag,value\n1767225600,P1.flow,2\n' 'ul.csv:3:20: no tag "P1.flow"'
bad ql.csv 'timestamp,tag,value,quality\n1767225600,P101.flow,2,fine\n' 'ql.csv:2:24: bad quality "fine"'
bad h.csv 'time stamp,P101.flow\n1767225600,1\n' 'h.csv:1:1: expected a header line starting with "timestamp"'
bad e.csv '' 'e.csv: empty recording'
bad d.csv 'timestamp,P101.flow,P101.flow\n' 'd.csv:1:21: column "P101.flow" appears twice'
bad m.csv 'timestamp,tag,value\n1767225600,P101.flow,\n' 'm.csv:2:22: missing value for P101.flow'
expect 1 "no-such.csv: No such file or directory" -- R --input no-such.csv

# Derived tags in a recording (a journal of a live run) are recomputed, not fed.
printf 'timestamp,P101.flow,P101.efficiency\n1767225600,100,99\n' > derived.csv
expect 0 "skipped 1 samples of derived tags (first: P101.efficiency)" -- R --input derived.csv --out /dev/null

# A live run's journal replays: 3 s of the demo in real time, then its data dir.
timeout 30 "$DOPPEL" --log-level warn run "$PLANT" --for 3s --no-watch --data-dir live >/dev/null 2>&1
if ls live/journal/*.seg >/dev/null 2>&1; then
    expect 0 "replayed" "skipped" "samples of derived tags" -- R --input live --out j.csv
    grep -q ',tag,P101,efficiency,' j.csv || failed "journal replay: no P101 efficiency"
    R --input live/journal --out j2.csv 2>/dev/null
    cmp -s j.csv j2.csv && echo "ok: data dir and journal/ give the same output" ||
        failed "data dir and journal/ differ"
else
    failed "doppel run wrote no journal in live/journal"
fi
mkdir -p empty
expect 1 "no journal segments (*.seg)" -- R --input empty

# Usage errors.
expect 2 "--input RECORDING is required" -- "$DOPPEL" replay "$PLANT"
expect 2 "expected one plant file, got 0" -- "$DOPPEL" replay --input wide.csv
expect 2 '--speed: expected "max" or a factor > 0' -- "$DOPPEL" replay "$PLANT" --input wide.csv --speed fast
expect 2 "--from: bad time" -- "$DOPPEL" replay "$PLANT" --input wide.csv --from noon
expect 2 "--to is before --from" -- "$DOPPEL" replay "$PLANT" --input wide.csv --from 100 --to 50
expect 2 '--format: expected csv or msgpack, got "xml"' -- "$DOPPEL" replay "$PLANT" --input wide.csv --format xml
expect 2 'unknown option "--input"' -- "$DOPPEL" run --input wide.csv
expect 0 "Usage: doppel replay" "--speed max|N" -- "$DOPPEL" replay --help
expect 1 "no-plant.lua" -- "$DOPPEL" replay no-plant.lua --input wide.csv

[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
echo "all replay checks passed"
