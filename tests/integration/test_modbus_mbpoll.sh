#!/bin/bash
# doppel's Modbus TCP server against a real master, mbpoll, on 127.0.0.1:
# reads of every area, writes that pass the guard (and read back), writes the
# guard refuses (exception response, nothing written), a write to a tag that
# is not writable, an unmapped address, and garbage bytes (the connection is
# closed, the server keeps serving).
set -u
DOPPEL=$(realpath "$1")
WORK=$(mktemp -d)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >plant.lua <<EOF
plant { name = "mbpoll-test" }
device "sim" { driver = "sim" }
device "hmi" { driver = "modbus_server", listen = "127.0.0.1:$PORT", map = {
  { tag = "tank.level", area = "input", address = 0, type = "f32" },
  { tag = "tank.sp", address = 10 },
  { tag = "tank.temp", address = 11, type = "i16", scale = 0.1 },
  { tag = "tank.ratio", address = 12, type = "f32", order = "CDAB" },
  { tag = "tank.pump", area = "coil", address = 0 },
  { tag = "tank.alarm", area = "discrete", address = 3 },
} }
twin "tank" { script = "tank.lua", tags = {
  level = { device = "sim", wave = "const", mean = 12.5, every = "100ms" },
  temp = { device = "sim", wave = "const", mean = -4.2, every = "100ms" },
  alarm = { device = "sim", wave = "const", mean = 1, type = "bool", every = "100ms" },
  sp = { writable = true, min = 0, max = 3000 },
  ratio = { writable = true },
  pump = { writable = true },
} }
EOF
cat >tank.lua <<'EOF'
twin.on_start(function()
   twin.write("sp", 1500)
   twin.write("ratio", 0.25)
   twin.write("pump", false)
end)
EOF

"$DOPPEL" run plant.lua >run.log 2>&1 &
PID=$!
for _ in $(seq 1 200); do
    grep -q "Modbus TCP server on" run.log && break
    sleep 0.05
done
grep -q "Modbus TCP server on 127.0.0.1:$PORT" run.log || { cat run.log; fail "server did not start"; exit 1; }

MB=(mbpoll -m tcp -p "$PORT" -a 1 -0 -1)
# read TYPE ADDR [COUNT]: prints the values, one per line.
read_regs() {
    "${MB[@]}" -t "$1" -r "$2" -c "${3:-1}" 127.0.0.1 2>&1 | sed -n 's/^\[[0-9]*\]:[[:space:]]*//p'
}
# expect_read TYPE ADDR WANT
expect_read() {
    local got
    got=$(read_regs "$1" "$2" | head -1 | awk '{print $1}')
    if [ "$got" != "$3" ]; then fail "read -t $1 $2: got '$got', want '$3'"; else echo "ok: read -t $1 $2 = $3"; fi
}
# write TYPE ADDR VALUE: mbpoll's exit status; its output in $OUT.
write_reg() {
    OUT=$("${MB[@]}" -t "$1" -r "$2" 127.0.0.1 -- "$3" 2>&1)
    return $?
}

got=$("${MB[@]}" -t 3:float -B -r 0 127.0.0.1 2>&1 | sed -n 's/^\[0\]:[[:space:]]*//p')
[ "$got" = "12.5" ] && echo "ok: input f32 = 12.5" || fail "input f32: got '$got'"
expect_read 4 10 1500
got=$(read_regs 4 11)
[ "$got" = "65494 (-42)" ] && echo "ok: i16 scaled = -42 raw" || fail "i16 scaled: got '$got'"
expect_read 1 3 1
expect_read 0 0 0

# Writes through the guard.
if write_reg 4 10 2600; then echo "ok: write sp 2600"; else fail "write sp 2600: $OUT"; fi
expect_read 4 10 2600
if write_reg 0 0 1; then echo "ok: write coil 1"; else fail "write coil: $OUT"; fi
expect_read 0 0 1
if write_reg 4:float 12 1.75; then echo "ok: write f32 CDAB 1.75"; else fail "write f32: $OUT"; fi
expect_read 4:float 12 1.75

# Refused by the guard: exception, nothing written.
if write_reg 4 10 5000; then fail "write above max was accepted"; else
    grep -q "Illegal data value" <<<"$OUT" && echo "ok: above max refused" || fail "above max: $OUT"
fi
expect_read 4 10 2600
if write_reg 4 11 7; then fail "write to a tag that is not writable was accepted"; else
    echo "ok: not writable refused"
fi
# Unmapped address; read-only area.
OUT=$(read_regs 4 500)
"${MB[@]}" -t 4 -r 500 127.0.0.1 2>&1 | grep -q "Illegal data address" &&
    echo "ok: unmapped address" || fail "unmapped address: $OUT"

# Garbage closes the connection; the server keeps serving.
printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 socat - "TCP:127.0.0.1:$PORT" >/dev/null 2>&1
expect_read 4 10 2600
kill -0 "$PID" || fail "doppel died"

grep -q "command #[0-9]* tank.sp := 2600 by modbus:127.0.0.1:[0-9]*: done" run.log ||
    fail "the write is not logged as a command from modbus:<peer>"
grep -q "tank.sp := 5000 by modbus:127.0.0.1:[0-9]*: rejected: max" run.log ||
    fail "the refused write is not logged"
grep -q "closing connection from 127.0.0.1:[0-9]*: not Modbus TCP" run.log ||
    fail "garbage not reported"

# doppel check reports map errors with twin, tag and field.
mkdir -p check && cd check
printf "device 'plc' { driver = 'modbus', host = '127.0.0.1' }\n" >bad.lua
printf "twin 'A' { script = 't.lua', tags = { a = { device = 'plc', address = 65535, type = 'f32' } } }\n" >>bad.lua
: >t.lua
out=$("$DOPPEL" check bad.lua 2>&1)
status=$?
if [ $status -eq 1 ] && grep -qF 'twin A, tag a: address: 65535 + 2 registers for "f32"' <<<"$out"; then
    echo "ok: doppel check names the bad map entry"
else
    fail "doppel check: status $status: $out"
fi
cd ..

if [ $failures -ne 0 ]; then
    echo "$failures failure(s)"; tail -20 run.log
    exit 1
fi
echo "all mbpoll checks passed"
