#!/bin/bash
# Crash test: `doppel run` under load is killed with SIGKILL at random moments
# and restarted, again and again. After every kill it checks that
#   - every record the journal reported as accepted ("accepted through record
#     N", logged when the fsync policy's promise holds) is in the journal, and
#     the journal's records are numbered 1..last without a gap;
#   - recovery (newest snapshot + journal tail replayed in virtual time) gives
#     the same twin state as a reference run: recovery from the whole journal
#     with the snapshots removed, i.e. a run that never crashed, fed the same
#     samples;
#   - that state counts and sums exactly the samples in the journal.
# Some kills are followed by a torn record written on purpose (a partial frame
# at the end of the newest segment, as a write cut short would leave it); the
# restart must cut it and say so. The fsync policy changes every cycle.
#
# The producer is the plant's sim device: two tags sampled every 1 ms and
# 2 ms; the twin `counter` counts and sums them and sets a derived tag.
set -u
DOPPEL=$(realpath "$1")
CYCLES=${DP_CRASH_CYCLES:-24}
WORK=$(mktemp -d)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || exit 1
DATA=$WORK/data
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

cat >counter.lua <<'EOF'
-- Counts and sums every sample of its two input tags.
twin.tag("total")

twin.on_start(function()
   state.n_a = state.n_a or 0
   state.n_b = state.n_b or 0
   state.sum_a = state.sum_a or 0
   state.sum_b = state.sum_b or 0
end)

twin.on_change("a", function(v)
   state.n_a = state.n_a + 1
   state.sum_a = state.sum_a + v
   twin.set("total", state.n_a + state.n_b)
end)

twin.on_change("b", function(v)
   state.n_b = state.n_b + 1
   state.sum_b = state.sum_b + v
   state.last_b = v
end)
EOF

write_plant() {
    cat >plant.lua <<EOF
plant {
   name = "crash",
   journal = { fsync = "$1", commit = "5ms", segment_size = "32KiB" },
   snapshot = { every = "250ms", keep = 2 },
}
device "gen" { driver = "sim", seed = 7 }
twin "counter" {
   script = "counter.lua",
   tags = {
      a = { device = "gen", wave = "sine", mean = 10, amplitude = 5, period = "1s", noise = 0.5,
            every = "1ms" },
      b = { device = "gen", wave = "random_walk", mean = 0, amplitude = 1, every = "2ms",
            history = 100 },
   },
}
EOF
}

# The twin's state line from `doppel export --state`.
state_of() {
    "$DOPPEL" export --data-dir "$1" --state | grep '"counter":'
}

# Checks the journal in $1: seqs 1..last without gaps, last >= $2. Prints
# "records last".
check_journal() {
    "$DOPPEL" export --data-dir "$1" 2>"$WORK/export.err" | awk -F, -v ack="$2" '
        NR == 1 { next }
        { if ($1 != n + 1) { printf "gap: record %d follows %d\n", $1, n; bad = 1 } n = $1 }
        END {
            if (n < ack) { printf "last record %d < accepted %d\n", n, ack; bad = 1 }
            printf "%d %d\n", NR - 1, n
            exit bad
        }'
}

# What the twin must have counted: per input tag, samples and their sum.
expected_state() {
    "$DOPPEL" export --data-dir "$1" --tags 'counter.a,counter.b' | awk -F, '
        NR > 1 && $3 == "sample" && $8 == "" { n[$4]++; s[$4] += $5 }
        END { printf "\"n_a\": %d, \"n_b\": %d, \"sum_a\": %.17g, \"sum_b\": %.17g\n",
              n["counter.a"], n["counter.b"], s["counter.a"], s["counter.b"] }'
}

# True when the state text $1 has the counts and sums of the journal text $2:
# counts equal, sums the same double (the two sides print numbers
# differently: export the shortest text that reads back, awk "%.17g").
counts_match() {
    awk -v s="$1" -v w="$2" '
        function get(t, k,    m) {
            if (!match(t, "\"" k "\": -?[0-9][0-9.e+-]*")) return "none"
            m = substr(t, RSTART, RLENGTH); sub(/^[^:]*: /, "", m); return m
        }
        BEGIN {
            split("n_a n_b sum_a sum_b", keys, " ")
            for (i = 1; i <= 4; i++) {
                a = get(s, keys[i]); b = get(w, keys[i])
                if (a == "none" || b == "none" || a + 0 != b + 0) exit 1
            }
        }'
}

policies=(always interval never)
maxack=0
torn_written=0
snaps_damaged=0
snaps_skipped=0
torn_cut=0
accepted_total=0
for cycle in $(seq 1 "$CYCLES"); do
    policy=${policies[$((cycle % 3))]}
    write_plant "$policy"
    "$DOPPEL" run plant.lua --data-dir "$DATA" --no-watch --log-level debug \
        2>"$WORK/run.$cycle.log" &
    PID=$!
    # A random moment between 0.25 s and 1.25 s after the start.
    sleep "$(printf '0.%03d' $((RANDOM % 1000)))"
    sleep 0.25
    kill -9 "$PID"
    wait "$PID" 2>/dev/null
    PID=""
    log=$WORK/run.$cycle.log
    # (A segment holding nothing but the torn record is moved aside whole.)
    if grep -q "torn tail cut\|holds no whole record" "$log"; then torn_cut=$((torn_cut + 1)); fi
    if grep -q "CRC does not match (flipped bytes); skipped" "$log"; then
        snaps_skipped=$((snaps_skipped + 1))
    fi
    if grep -q "ERROR" "$log"; then fail "cycle $cycle: errors logged"; grep ERROR "$log" | head -3; fi
    ack=$(grep -o 'accepted through record [0-9]*' "$log" | tail -1 | awk '{print $4}')
    ack=${ack:-0}
    if [ "$ack" -gt "$maxack" ]; then
        accepted_total=$ack
        maxack=$ack
    fi

    # Nothing accepted is missing, and nothing is numbered twice or skipped.
    if ! counts=$(check_journal "$DATA" "$maxack"); then
        fail "cycle $cycle: journal check: $counts"
    fi
    read -r records last <<<"$(tail -1 <<<"$counts")"

    # Recovery from the snapshot equals recovery from the whole journal, and
    # both equal what the journal says the twin saw.
    rm -rf "$WORK/A" "$WORK/B"
    cp -r "$DATA" "$WORK/A"
    cp -r "$DATA" "$WORK/B"
    rm -f "$WORK"/B/snapshots/*
    if ! "$DOPPEL" run plant.lua --data-dir "$WORK/A" --recover-only 2>"$WORK/A.log"; then
        fail "cycle $cycle: recovery A failed"; cat "$WORK/A.log"
    fi
    if ! "$DOPPEL" run plant.lua --data-dir "$WORK/B" --recover-only 2>"$WORK/B.log"; then
        fail "cycle $cycle: recovery B failed"; cat "$WORK/B.log"
    fi
    sa=$(state_of "$WORK/A")
    sb=$(state_of "$WORK/B")
    want=$(expected_state "$WORK/A")
    if [ "$sa" != "$sb" ]; then
        fail "cycle $cycle: state after recovery differs from the reference run"
        echo "  recovered: $sa"
        echo "  reference: $sb"
    fi
    if ! counts_match "$sa" "$want"; then
        fail "cycle $cycle: state does not count the journal's samples"
        echo "  state:    $sa"
        echo "  journal:  $want"
    fi
    echo "cycle $cycle ($policy): accepted through $ack, journal $records records (last $last)," \
        "state $(grep -o '"n_a": [0-9]*, "n_b": [0-9]*' <<<"$sa")"

    # Now and then, damage the newest snapshot: the restart must skip it,
    # say so, and recover from the older one and a longer journal tail.
    if [ $((cycle % 7)) -eq 3 ]; then
        snap=$(ls "$DATA"/snapshots/*.snap 2>/dev/null | sort | tail -1)
        if [ -n "$snap" ]; then
            printf '\xff\xff\xff\xff' | dd of="$snap" bs=1 seek=40 conv=notrunc status=none
            snaps_damaged=$((snaps_damaged + 1))
        fi
    fi

    # Now and then, tear a record on purpose: a frame header announcing 64
    # bytes followed by only a few, as a write cut short leaves it.
    if [ $((cycle % 5)) -eq 2 ]; then
        seg=$(ls "$DATA"/journal/*.seg | sort | tail -1)
        printf '\x40\x00\x00\x00\x12\x34\x56\x78\x97\x01\x02' >>"$seg"
        torn_written=$((torn_written + 1))
    fi
done

# A last run stopped cleanly: it cuts the last torn record if any, and writes
# a shutdown snapshot that matches the reference.
write_plant interval
"$DOPPEL" run plant.lua --data-dir "$DATA" --no-watch --log-level debug 2>"$WORK/final.log" &
PID=$!
sleep 0.5
kill -TERM "$PID"
wait "$PID"
status=$?
PID=""
[ "$status" -eq 0 ] || fail "clean stop exited $status"
grep -q "shutdown snapshot" "$WORK/final.log" || fail "no shutdown snapshot"
if grep -q "torn tail cut\|holds no whole record" "$WORK/final.log"; then
    torn_cut=$((torn_cut + 1))
fi
if grep -q "CRC does not match (flipped bytes); skipped" "$WORK/final.log"; then
    snaps_skipped=$((snaps_skipped + 1))
fi
counts=$(check_journal "$DATA" "$maxack") || fail "final journal check: $counts"
rm -rf "$WORK/B"
cp -r "$DATA" "$WORK/B"
rm -f "$WORK"/B/snapshots/*
"$DOPPEL" run plant.lua --data-dir "$WORK/B" --recover-only 2>"$WORK/B.log" || fail "final reference"
[ "$(state_of "$DATA")" == "$(state_of "$WORK/B")" ] || fail "final state differs from the reference"

if [ "$torn_cut" -lt 1 ]; then fail "no torn record was detected"; fi
if [ "$torn_cut" -lt "$torn_written" ]; then fail "a torn record went unnoticed"; fi
if [ "$snaps_skipped" -lt "$snaps_damaged" ]; then fail "a damaged snapshot went unnoticed"; fi
echo "crash test: $CYCLES kills (SIGKILL) under load; highest accepted record $maxack;" \
    "journal $(cut -d' ' -f1 <<<"$counts") records, numbered without gaps;" \
    "torn records written $torn_written, detected and cut $torn_cut;" \
    "snapshots damaged $snaps_damaged, detected and skipped $snaps_skipped"
if [ "$failures" -ne 0 ]; then
    echo "crash test: $failures failure(s)"
    exit 1
fi
echo "crash test: every accepted record found after every recovery, and twin state equal" \
    "to the reference run's each time"
