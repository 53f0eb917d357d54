#!/bin/bash
# A small slice of the NAB and C-MAPSS benchmarks, so they keep working: the
# NAB scorer must reproduce the published HTM score on the published results,
# the NAB runner and the C-MAPSS model run on a few series and engines, and
# bad arguments are refused. The full runs are `make bench-nab` and
# `make bench-cmapss` (docs/benchmarks.md).
set -u
. "$(dirname "$(realpath "$0")")/lib/expect.sh"
BIN=${DP_BINARY_DIR:?DP_BINARY_DIR is not set}
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
DATA="$SRC/../shared/data"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0

if [ ! -d "$DATA/nab" ] || [ ! -d "$DATA/cmapss" ]; then
    echo "FAIL: benchmark data not found in $DATA"
    exit 1
fi
export DP_SOURCE_DIR="$SRC"

# The scorer against the published Numenta HTM results: 70.10 / 63.21 / 74.32.
tar xzf "$DATA/nab/reference/numenta_results.tar.gz" -C "$WORK"
expect_re 0 'standard +score +70\.10 ' -- "$BIN/bench_nab" --reference "$WORK/numenta"
expect_re 0 'reward_low_FP_rate +score +63\.(1[2-9]|2[01]) ' -- \
    "$BIN/bench_nab" --reference "$WORK/numenta"
expect_re 0 'reward_low_FN_rate +score +74\.32 ' -- "$BIN/bench_nab" --reference "$WORK/numenta"

# The runner with doppel.detect on the six artificial series with anomalies.
expect_re 0 'standard +score +([5-9][0-9]|100)\.' -- "$BIN/bench_nab" --only artificialWithAnomaly
expect_re 0 'series 6, rows 24192, windows 6' -- "$BIN/bench_nab" --only artificialWithAnomaly
# A detector that peeks is impossible, but one that breaks the score range is refused.
printf 'return function() return { update = function() return 2 end } end\n' >"$WORK/bad.lua"
expect_re 2 'detector score outside \[0, 1\]' -- \
    "$BIN/bench_nab" --only art_daily_jumpsup --detector "$WORK/bad.lua"
expect_re 2 'unknown or incomplete argument "--frobnicate"' -- "$BIN/bench_nab" --frobnicate
expect_re 2 'no series selected' -- "$BIN/bench_nab" --only no-such-series

# C-MAPSS: fit on all training engines, predict the first five test engines.
expect_re 0 'RMSE [0-9]+\.[0-9]+  PHM08 score' -- "$BIN/bench_cmapss" --limit 5
expect_re 0 ': 5 test engines' -- "$BIN/bench_cmapss" --limit 5
expect_re 2 'bad number for --limit' -- "$BIN/bench_cmapss" --limit many

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all passed"
