# Shared by the integration scripts: `. lib/expect.sh`, with `failures=0` set.
#
# expect STATUS PATTERN... -- COMMAND...: runs COMMAND and checks its exit
# status and that its stdout+stderr contain every PATTERN (fixed strings).
# expect_re: the same with extended regular expressions.
# Each failed check prints FAIL with the start of the output and counts one
# failure in $failures.
_expect() {
    local mode=$1 want=$2
    shift 2
    local patterns=()
    while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
    shift
    local out status
    out=$("$@" 2>&1)
    status=$?
    if [ "$status" -ne "$want" ]; then
        echo "FAIL: $* exited $status, expected $want"; echo "$out" | head -20
        failures=$((failures + 1))
        return
    fi
    for p in "${patterns[@]}"; do
        if ! grep -q"$mode" -- "$p" <<<"$out"; then
            echo "FAIL: $* output lacks: $p"; echo "$out" | head -20
            failures=$((failures + 1))
            return
        fi
    done
    echo "ok: $*"
}

expect() { _expect F "$@"; }
expect_re() { _expect E "$@"; }
