#!/bin/bash
# The HTTP API against a running plant: every endpoint, refusals per role,
# malformed requests, the live stream, rate limits, /metrics, and HTTPS with
# HTTP/2 using a certificate made here. Servers listen on 127.0.0.1 on a port
# the kernel picks, and are always stopped.
set -u
DOPPEL=$(realpath "$1")
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
failures=0
passes=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
pass() {
    echo "ok: $*"
    passes=$((passes + 1))
}

# Tokens: the plant holds only their SHA-256.
hash() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
VIEW=view-$RANDOM$RANDOM
OPER=oper-$RANDOM$RANDOM
ENG=eng-$RANDOM$RANDOM
cat >tokens.txt <<EOF
# name role sha256
vic viewer $(hash "$VIEW")
olga operator $(hash "$OPER")
emil engineer $(hash "$ENG")
EOF

# A pump whose vibration crosses the alarm limit within seconds of start.
pump_twin() {
    cat <<'EOF'
device "sim" { driver = "sim", seed = 7 }
twin "P1" {
   class = "centrifugal_pump",
   params = { rated_flow = 130, rated_head = 48, rated_power = 22, vib_alarm = 3.0,
              vib_on_delay = "1s", vib_hysteresis = 0.2 },
   tags = {
      flow = { device = "sim", wave = "sine", mean = 100, amplitude = 10, period = "20s",
               every = "100ms", unit = "m3/h", history = 100 },
      head = { device = "sim", wave = "const", mean = 40, every = "1s", unit = "m" },
      power = { device = "sim", wave = "const", mean = 20, every = "1s", unit = "kW" },
      vibration = { device = "sim", wave = "const", mean = 4.0, every = "200ms", unit = "mm/s",
                    history = 100 },
      running = { device = "sim", wave = "const", mean = 1, type = "bool", every = "1s" },
      speed_sp = { writable = true, min = 0, max = 3000, unit = "rpm" },
   },
}
EOF
}

{
    echo 'plant { name = "secure", http = { listen = "127.0.0.1:0", tokens = "tokens.txt", max_body = 256, rate = 1000, burst = 1000 } }'
    pump_twin
} >secure.lua
{
    echo 'plant { name = "open", http = { listen = "127.0.0.1:0", rate = 2, burst = 5 } }'
    pump_twin
} >open.lua

# start NAME PLANT: runs the plant, waits for its HTTP line, sets URL_NAME.
start() {
    local name=$1 plant=$2
    "$DOPPEL" run --data-dir "$WORK/data-$name" "$plant" >"$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
    for _ in $(seq 1 100); do
        local url
        url=$(grep -o 'listening on https\?://[0-9.:]*/' "$name.log" | head -1 | cut -d' ' -f3)
        if [ -n "$url" ]; then
            eval "URL_$name=\${url%/}"
            return 0
        fi
        sleep 0.1
    done
    echo "server $name did not start:"
    cat "$name.log"
    exit 1
}

# req METHOD URL [TOKEN] [BODY]: sets STATUS and BODY.
req() {
    local method=$1 url=$2 token=${3:-} data=${4-__none__}
    local args=(-s -o "$WORK/body" -w '%{http_code}' -X "$method" --max-time 10)
    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ "$data" != "__none__" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    STATUS=$(curl "${args[@]}" "$url")
    BODY=$(cat "$WORK/body")
}

# check WANT PATTERN METHOD PATH [TOKEN] [BODY]
check() {
    local want=$1 pattern=$2
    shift 2
    req "$1" "$URL_secure$2" "${@:3}"
    if [ "$STATUS" != "$want" ]; then
        fail "$1 $2 (${3:+token}) -> $STATUS, expected $want: $BODY"
    elif ! grep -qF -- "$pattern" <<<"$BODY"; then
        fail "$1 $2 -> body lacks $pattern: $BODY"
    else
        pass "$1 $2 -> $STATUS"
    fi
}

start secure secure.lua
start open open.lua

# ---- public -------------------------------------------------------------------
check 200 '"status":"ok"' GET /healthz
check 200 '<title>doppel</title>' GET /
check 200 'uPlot' GET /assets/uPlot.iife.min.js
hdrs=$(curl -s -D - -o /dev/null "$URL_secure/")
grep -qi '^x-frame-options: DENY' <<<"$hdrs" && grep -qi '^referrer-policy: no-referrer' <<<"$hdrs" &&
    grep -qi '^x-content-type-options: nosniff' <<<"$hdrs" && pass "security headers on the page" ||
    fail "headers: $hdrs"
check 404 '"error":"no asset' GET /assets/nope.js

# ---- authentication -----------------------------------------------------------------
check 401 '"error":"a bearer token is required"' GET /api/v1/plant
check 401 '"error":"unknown token"' GET /api/v1/plant wrong-token
curl -s -H 'Authorization: Basic dXNlcjpwdw==' "$URL_secure/api/v1/plant" | grep -q 'Authorization must be' &&
    pass "Basic auth refused" || fail "Basic auth not refused"
check 401 'bearer token' GET /metrics

# ---- reads (viewer) ---------------------------------------------------------------
check 200 '"name":"secure"' GET /api/v1/plant "$VIEW"
check 200 '"role":"viewer"' GET /api/v1/plant "$VIEW"
check 200 '"name":"P1"' GET /api/v1/twins "$VIEW"
check 200 '"P1.flow"' GET /api/v1/twins "$VIEW"
check 200 '"unit":"m3/h"' GET /api/v1/twins/P1 "$VIEW"
check 404 'no twin \"P9\"' GET /api/v1/twins/P9 "$VIEW"
check 200 '"quality":"good"' GET /api/v1/tags "$VIEW"
check 200 '"name":"P1.flow"' GET '/api/v1/tags?twin=P1' "$VIEW"
check 404 'no twin' GET '/api/v1/tags?twin=nope' "$VIEW"
req GET "$URL_secure/api/v1/tags?match=*.flow" "$VIEW"
if [ "$STATUS" = 200 ] && grep -q '"P1.flow"' <<<"$BODY" && ! grep -q '"P1.head"' <<<"$BODY"; then
    pass "tags filtered by glob"
else
    fail "tags?match=*.flow: $STATUS $BODY"
fi
check 200 '"unit":"m3/h"' GET /api/v1/tags/P1.flow "$VIEW"
check 404 'no tag' GET /api/v1/tags/P1.nope "$VIEW"
check 200 '"samples":[[' GET '/api/v1/tags/P1.flow/history?max=5' "$VIEW"
req GET "$URL_secure/api/v1/tags/P1.flow/history?max=3" "$VIEW"
n=$(grep -o '\],\[' <<<"$BODY" | wc -l)
[ "$n" -eq 2 ] && pass "history max=3 gives 3 samples" || fail "history max=3: $BODY"
check 400 'query parameter max' GET '/api/v1/tags/P1.flow/history?max=0' "$VIEW"
check 400 'since' GET '/api/v1/tags/P1.flow/history?since=yesterday' "$VIEW"
check 200 '"name":"sim","driver":"sim"' GET /api/v1/drivers "$VIEW"
check 200 '"points":5' GET /api/v1/drivers "$VIEW"
check 200 'doppel_device_stat{device="sim",driver="sim",stat="samples"}' GET /metrics "$VIEW"
check 200 '[' GET /api/v1/events "$VIEW"
check 200 '[' GET /api/v1/commands "$VIEW"
check 200 '"name":"vibration_high"' GET /api/v1/alarms "$VIEW"
check 200 'doppel_samples_total' GET /metrics "$VIEW"
check 200 'doppel_twin_cpu_seconds_total{twin="P1"}' GET /metrics "$VIEW"
check 200 'doppel_loop_lag_seconds' GET /metrics "$VIEW"
check 200 'doppel_journal_backlog_records' GET /metrics "$VIEW"
check 404 'no such resource' GET /api/v1/nothing "$VIEW"
check 404 'no such resource' GET /api/v2/plant "$VIEW"
check 405 'use GET' DELETE /api/v1/tags "$VIEW"
check 405 'use POST' GET /api/v1/twins/P1/reload "$VIEW"
check 400 'percent-encoding' GET '/api/v1/tags/P1%zz' "$VIEW"

# ---- garbage on the wire: h2o answers 400 and the server carries on -----------------------
port=${URL_secure##*:}
if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf 'NOT HTTP AT ALL\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3
    exec 3>&-
    grep -q '^HTTP/1.1 400' <<<"$line" && pass "garbage request gets 400" || fail "garbage: $line"
else
    fail "cannot connect to $port"
fi
# h2o bounds a request's headers (about 400 KB).
head -c 1000000 /dev/zero | tr '\0' a | sed 's/^/X-Long: /' >long-header.txt
code=$(curl -s -o /dev/null -w '%{http_code}' -H @long-header.txt "$URL_secure/healthz")
[ "${code:0:1}" = 4 ] && pass "oversized header refused ($code)" || fail "oversized header: $code"
check 200 '"status":"ok"' GET /healthz

# ---- writes: refusals per role ------------------------------------------------------
check 403 'needs the operator role; vic has viewer' POST /api/v1/alarms/P1/vibration_high/ack "$VIEW" ''
check 403 'needs the operator role' POST /api/v1/commands "$VIEW" '{"tag":"P1.flow","value":1}'
check 403 'needs the engineer role; olga has operator' POST /api/v1/twins/P1/reload "$OPER" ''
check 401 'bearer token' POST /api/v1/twins/P1/reload '' ''

# ---- alarms: wait for the vibration alarm, then acknowledge it -------------------------
for _ in $(seq 1 100); do
    req GET "$URL_secure/api/v1/alarms?state=unacked" "$VIEW"
    grep -q '"name":"vibration_high"' <<<"$BODY" && break
    sleep 0.1
done
grep -q '"state":"unacked"' <<<"$BODY" && pass "vibration alarm is active and unacknowledged" ||
    fail "vibration alarm did not trip: $BODY"
check 404 'P1' POST /api/v1/alarms/P1/nope/ack "$OPER" ''
check 200 '"acked_by":"http:olga"' POST /api/v1/alarms/P1/vibration_high/ack "$OPER" ''
check 409 '' POST /api/v1/alarms/P1/vibration_high/ack "$OPER" ''
grep -q 'alarm vibration_high: ack by http:olga' secure.log && pass "ack logged with who" ||
    fail "ack not logged with who"

# Malformed bodies.
check 400 'expected a JSON object' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" ''
check 400 'malformed JSON' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{"duration":'
check 400 'malformed JSON' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{"duration":"1h"} x'
check 400 'nested objects' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{"duration":{"h":1}}'
check 400 'duration is required' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{}'
check 400 'bad duration' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{"duration":"soon"}'
check 400 'at most 7 days' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{"duration":"30d"}'
big=$(printf '{"duration":"%0300d"}' 1)
check 413 'over the limit of 256' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" "$big"
huge=$(printf '{"duration":"%05000d"}' 1)
req POST "$URL_secure/api/v1/alarms/P1/vibration_high/shelve" "$OPER" "$huge"
[ "$STATUS" = 413 ] && pass "a body far over the limit is refused by h2o (413)" ||
    fail "huge body: $STATUS"
check 200 '"shelved":true' POST /api/v1/alarms/P1/vibration_high/shelve "$OPER" '{"duration":"30min"}'
check 200 '"shelved":false' POST /api/v1/alarms/P1/vibration_high/unshelve "$OPER" ''
check 400 'tag is required' POST /api/v1/commands "$OPER" '{"value":1}'
check 400 'value is required' POST /api/v1/commands "$OPER" '{"tag":"P1.flow"}'
# A token in a URL is only for the live stream (EventSource cannot send headers).
check 400 '?token= is only for the live stream' GET "/api/v1/tags?token=$VIEW"

# ---- commands through the guard ----------------------------------------------------
curl -sN --max-time 3 "$URL_secure/api/v1/stream?tags=0&token=$VIEW" >stream-cmd.txt &
cpid=$!
sleep 0.5
check 200 '"outcome":"done"' POST /api/v1/commands "$OPER" '{"tag":"P1.speed_sp","value":1500}'
grep -q '"origin":"http:olga"' <<<"$BODY" && pass "command origin is http:olga" || fail "origin: $BODY"
check 200 '"value":1500' GET /api/v1/tags/P1.speed_sp "$VIEW"
check 200 '"writable":true' GET /api/v1/tags/P1.speed_sp "$VIEW"
check 200 '"max":3000' GET /api/v1/tags/P1.speed_sp "$VIEW"
check 422 '"outcome":"rejected"' POST /api/v1/commands "$OPER" '{"tag":"P1.speed_sp","value":5000}'
check 422 'rejected' POST /api/v1/commands "$OPER" '{"tag":"P1.flow","value":1}'
check 422 'rejected' POST /api/v1/commands "$OPER" '{"tag":"P1.nope","value":1}'
check 422 'rejected' POST /api/v1/commands "$OPER" '{"tag":"P1.speed_sp","value":"fast"}'
check 200 '"origin":"http:olga"' GET /api/v1/commands "$VIEW"
wait $cpid
grep -q '^event: command' stream-cmd.txt && grep -q '"tag":"P1.speed_sp"' stream-cmd.txt &&
    pass "commands reach the live stream" || fail "no command in the stream: $(head -c 300 stream-cmd.txt)"
grep -q 'P1.speed_sp.*http:olga' secure.log && pass "command logged with who" ||
    fail "command not logged with who"
check 200 '"writes_enabled":true' GET /api/v1/guard "$VIEW"
check 403 'needs the engineer role' POST /api/v1/guard "$OPER" '{"shadow":true}'
check 400 'expected {' POST /api/v1/guard "$ENG" '{"shadow":"yes"}'
check 400 'expected {' POST /api/v1/guard "$ENG" '{"mode":"shadow"}'
check 200 '"shadow":true' POST /api/v1/guard "$ENG" '{"shadow":true}'
check 200 '"outcome":"shadow"' POST /api/v1/commands "$OPER" '{"tag":"P1.speed_sp","value":1600}'
check 200 '"value":1500' GET /api/v1/tags/P1.speed_sp "$VIEW"
check 200 '"writes_enabled":false' POST /api/v1/guard "$ENG" '{"shadow":false,"writes":false}'
check 422 'rejected' POST /api/v1/commands "$OPER" '{"tag":"P1.speed_sp","value":1700}'
check 200 '"writes_enabled":true' POST /api/v1/guard "$ENG" '{"writes":true}'
check 200 '"outcome":"done"' POST /api/v1/commands "$ENG" '{"tag":"P1.speed_sp","value":1800}'
check 200 '"shadow":false' GET /api/v1/plant "$VIEW"
check 200 'doppel_commands_total{outcome="done"} 2' GET /metrics "$VIEW"

# ---- reload (engineer) ---------------------------------------------------------------
check 200 '"ok":true' POST /api/v1/twins/P1/reload "$ENG" ''
grep -q 'reload requested over HTTP by emil' secure.log && pass "reload logged with who" ||
    fail "reload not logged with who"
check 404 'no twin' POST /api/v1/twins/nope/reload "$ENG" ''

# ---- live stream ------------------------------------------------------------------
curl -sN --max-time 2 "$URL_secure/api/v1/stream?match=*.flow&token=$VIEW" >stream1.txt
grep -q '^event: hello' stream1.txt && grep -q '"tag":"P1.flow"' stream1.txt &&
    ! grep -q '"tag":"P1.vibration"' stream1.txt && pass "stream filtered by glob" ||
    fail "stream ?match=*.flow: $(head -c 400 stream1.txt)"
flows=$(grep -c '"tag":"P1.flow"' stream1.txt)
[ "$flows" -ge 5 ] && pass "stream delivered $flows changes in 2 s" || fail "stream delivered $flows changes"
curl -sN --max-time 2 -H "Authorization: Bearer $VIEW" "$URL_secure/api/v1/stream?twin=P1&tags=0" >stream2.txt &
spid=$!
sleep 0.5
req POST "$URL_secure/api/v1/twins/P1/reload" "$ENG" ''
wait $spid
grep -q '^event: event' stream2.txt && grep -q '"kind":"reload"' stream2.txt &&
    ! grep -q '^event: tag' stream2.txt && pass "stream of events only" ||
    fail "stream ?tags=0: $(head -c 400 stream2.txt)"
check 404 'no twin' GET '/api/v1/stream?twin=nope' "$VIEW"
req GET "$URL_secure/api/v1/stream" wrong
[ "$STATUS" = 401 ] && pass "stream refuses a bad token" || fail "stream with bad token: $STATUS"
check 200 '"kind":"reload"' GET '/api/v1/events?twin=P1&kind=reload' "$VIEW"

# ---- no tokens configured: loopback may read, nobody may write; rate limit ---------------
req GET "$URL_open/api/v1/plant"
[ "$STATUS" = 200 ] && grep -q '"role":"viewer"' <<<"$BODY" && pass "loopback reads without tokens" ||
    fail "open plant read: $STATUS $BODY"
req POST "$URL_open/api/v1/twins/P1/reload" '' ''
[ "$STATUS" = 403 ] && grep -q 'no tokens are configured' <<<"$BODY" &&
    pass "no writes without tokens" || fail "open plant write: $STATUS $BODY"
limited=0
for _ in $(seq 1 10); do
    req GET "$URL_open/healthz"
    [ "$STATUS" = 429 ] && limited=1 && break
done
[ $limited = 1 ] && grep -q '"error":"rate limit' <<<"$BODY" && pass "rate limit answers 429" ||
    fail "no 429 after 10 quick requests at rate 2/s burst 5"

# ---- max_connections: more are closed as they come; idle ones go after 10 s ----------
{
    echo 'plant { name = "capped", http = { listen = "127.0.0.1:0", max_connections = 3 } }'
    pump_twin
} >capped.lua
start capped capped.lua
out=$(python3 - "${URL_capped##*:}" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
time.sleep(0.5)  # accepted, in order: the fourth is the one past the cap
extra = socket.create_connection(("127.0.0.1", port))
extra.settimeout(5)
try:
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    print("fourth:", "closed" if extra.recv(100) == b"" else "answered")
except (ConnectionResetError, BrokenPipeError):
    print("fourth: closed")
except socket.timeout:
    print("fourth: no answer in 5 s")
t0 = time.time()
for s in held:
    s.settimeout(max(0.1, 25 - (time.time() - t0)))
    try:
        s.recv(100)
    except OSError:
        pass
print("idle closed after %.0f s" % (time.time() - t0))
PY
)
echo "$out"
grep -q 'fourth: closed' <<<"$out" && pass "a connection past max_connections is closed at once" ||
    fail "max_connections = 3: the fourth connection was not closed: $out"
secs=$(sed -n 's/idle closed after \([0-9]*\) s/\1/p' <<<"$out")
[ -n "$secs" ] && [ "$secs" -le 20 ] && pass "idle connections closed by the server (after ${secs} s)" ||
    fail "idle connections not closed within 25 s: $out"
code=$(curl -s -o body -w '%{http_code}' --max-time 5 "$URL_capped/metrics")
[ "$code" = 200 ] && grep -q '^doppel_http_connections_refused_total 1$' body &&
    pass "the refused connection is counted, and the server answers again" ||
    fail "after the cap: $code $(grep refused body)"
grep -q 'http: 3 connections open (max_connections): closing new ones (1 since the last report)' capped.log &&
    pass "the refusal is logged" || fail "no max_connections line: $(tail -3 capped.log)"

# ---- HTTPS and HTTP/2 with a certificate made here ------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout server.key -out server.crt 2>/dev/null || fail "openssl could not make a certificate"
{
    echo 'plant { name = "tls", http = { listen = "127.0.0.1:0", tls = { cert = "server.crt", key = "server.key" }, tokens = "tokens.txt" } }'
    pump_twin
} >tls.lua
start tls tls.lua
case "$URL_tls" in https://*) pass "TLS server says https" ;; *) fail "TLS url $URL_tls" ;; esac
v=$(curl -s --cacert server.crt --http2 -o body -w '%{http_version}' -H "Authorization: Bearer $VIEW" "$URL_tls/api/v1/plant")
[ "$v" = 2 ] && grep -q '"name":"tls"' body && pass "HTTPS over HTTP/2 with the test's CA" ||
    fail "HTTP/2 over TLS: version $v $(cat body)"
v=$(curl -s --cacert server.crt --http1.1 -o body -w '%{http_version}' -H "Authorization: Bearer $VIEW" "$URL_tls/api/v1/tags")
[ "$v" = 1.1 ] && grep -q '"P1.flow"' body && pass "HTTPS over HTTP/1.1" || fail "HTTP/1.1 over TLS: $v"
curl -s -o /dev/null "$URL_tls/healthz" && fail "TLS server accepted a client without the CA" ||
    pass "TLS refuses an unverified certificate"
curl -s -o /dev/null "http://${URL_tls#https://}/healthz" --max-time 3
[ $? -ne 0 ] && pass "plain HTTP to the TLS port fails" || fail "plain HTTP on the TLS port answered"
curl -sN --max-time 1 --cacert server.crt "$URL_tls/api/v1/stream?token=$OPER" >stream3.txt
grep -q 'event: hello' stream3.txt && pass "stream over HTTPS" || fail "stream over HTTPS"

# HTTP/2 clients that go away from a busy stream. A client that exits with
# data unread resets the connection; when the reset arrives while h2o has a
# write scheduled, h2o 2.2's write is refused by libuv at once and h2o used
# to wait for its callback forever: the connection stayed open (11 of 20 such
# clients here) and the plant could not stop. All must be closed.
echo 'return {}' >busy.twin.lua
cat >busy.lua <<'EOF'
plant { name = "busy", http = { listen = "127.0.0.1:0", tls = { cert = "server.crt", key = "server.key" }, tokens = "tokens.txt" } }
device "sim" { driver = "sim", seed = 3 }
twin "B" {
   script = "busy.twin.lua",
   tags = { x = { device = "sim", wave = "sine", mean = 10, amplitude = 5, period = "1s", every = "1ms" } },
}
EOF
start busy busy.lua
for i in $(seq 1 20); do
    curl -sN --http2 --max-time "0.$((i % 5 + 1))" --cacert server.crt \
        "$URL_busy/api/v1/stream?token=$VIEW" >/dev/null
done
open_conns=""
for _ in $(seq 1 50); do
    open_conns=$(curl -s --cacert server.crt -H "Authorization: Bearer $VIEW" "$URL_busy/metrics" |
        grep '^doppel_http_connections ' | cut -d' ' -f2)
    [ "$open_conns" = 1 ] && break
    sleep 0.1
done
[ "$open_conns" = 1 ] && pass "HTTP/2 clients that reset a busy stream are all closed" ||
    fail "connections still open after 20 reset HTTP/2 streams: $open_conns (the asking one counts 1)"

# A TLS file that cannot be read and a bad token file stop the plant from
# starting (and fail `doppel check`), naming the file; a file that reads but
# is not PEM is found when the server starts, which the plant runs on without.
echo 'plant { http = { listen = "127.0.0.1:0", tls = { cert = "missing.crt", key = "server.key" } } }' >badtls.lua
out=$("$DOPPEL" run --for 2s badtls.lua 2>&1)
[ $? -ne 0 ] && grep -q 'cannot read the certificate ./missing.crt: No such file or directory' <<<"$out" &&
    pass "missing certificate named" || fail "missing certificate: $out"
out=$("$DOPPEL" check badtls.lua 2>&1)
[ $? -ne 0 ] && grep -q 'cannot read the certificate ./missing.crt' <<<"$out" &&
    pass "doppel check names the missing certificate" || fail "check, missing certificate: $out"
echo 'not a certificate' >garbage.crt
echo 'plant { http = { listen = "127.0.0.1:0", tls = { cert = "garbage.crt", key = "server.key" } } }' >garbtls.lua
out=$("$DOPPEL" run --for 1s --data-dir garb garbtls.lua 2>&1)
[ $? -eq 0 ] && grep -q 'cannot load certificate ./garbage.crt: no start line; running without HTTP' <<<"$out" &&
    pass "a certificate that is not PEM is named; the plant runs on" || fail "garbage certificate: $out"
echo 'alice admin 1234' >badtokens.txt
echo 'plant { http = { tokens = "badtokens.txt" } }' >badtok.lua
out=$("$DOPPEL" check badtok.lua 2>&1)
grep -q 'badtokens.txt:1: token alice: role "admin"' <<<"$out" && pass "bad token file line named" ||
    fail "bad token file: $out"
echo 'plant { http = { listen = "nowhere" } }' >badlisten.lua
out=$("$DOPPEL" run --for 1s badlisten.lua 2>&1)
grep -q 'listen "nowhere": expected HOST:PORT' <<<"$out" && pass "bad listen address named" ||
    fail "bad listen: $out"
echo 'plant { http = { listen = "0.0.0.0:0", tokens = "tokens.txt" } }' >exposed.lua
out=$("$DOPPEL" check exposed.lua 2>&1)
[ $? -ne 0 ] && grep -q 'is not a loopback address: it needs tls' <<<"$out" &&
    pass "beyond loopback without TLS refused" || fail "exposed without TLS: $out"
echo 'plant { http = { listen = "0.0.0.0:0", tls = { cert = "server.crt", key = "server.key" } } }' >exposed2.lua
out=$("$DOPPEL" check exposed2.lua 2>&1)
[ $? -ne 0 ] && grep -q 'is not a loopback address' <<<"$out" &&
    pass "beyond loopback without tokens refused" || fail "exposed without tokens: $out"
echo 'plant { http = { listen = "0.0.0.0:0", tls = { cert = "server.crt", key = "server.key" }, tokens = "tokens.txt" } }' >exposed3.lua
out=$("$DOPPEL" check exposed3.lua 2>&1)
[ $? -eq 0 ] && pass "beyond loopback with TLS and tokens accepted" || fail "exposed with TLS and tokens: $out"
echo 'plant { http = { lisen = "127.0.0.1:1" } }' >typo.lua
out=$("$DOPPEL" check typo.lua 2>&1)
grep -q 'plant: http: unknown field "lisen"' <<<"$out" && pass "unknown http field named" ||
    fail "typo: $out"
echo 'plant { http = { max_connections = 0 } }' >range.lua
out=$("$DOPPEL" check range.lua 2>&1)
grep -q 'plant: http: max_connections: 0 is out of range \[1, 100000\]' <<<"$out" &&
    pass "an http field out of range is named once" || fail "range: $out"
echo 'plant { http = { tls = { cert = "server.crt" } } }' >tlskey.lua
out=$("$DOPPEL" check tlskey.lua 2>&1)
grep -q 'plant: http: tls: missing required field "key"' <<<"$out" &&
    pass "a missing tls field is named" || fail "tls key: $out"

# ---- clean shutdown with open streams and keep-alive connections -------------------------
curl -sN --max-time 20 "$URL_secure/api/v1/stream?token=$VIEW" >/dev/null &
sleep 0.3
for name in secure open tls busy capped; do
    pid_var=PID_$name
    pid=${!pid_var}
    kill -TERM "$pid"
    # Bounded: a server that does not stop within 30 s is a failure, with
    # its log and the connections it still holds.
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fail "$name did not stop within 30 s of SIGTERM"
        tail -20 "$name.log"
        ss -tnp 2>/dev/null | grep "pid=$pid," | head
        kill -KILL "$pid"
    fi
    wait "$pid"
    st=$?
    [ $st -eq 0 ] && grep -q 'SIGTERM: stopping' "$name.log" && pass "$name stopped cleanly" ||
        { fail "$name exit $st"; tail -5 "$name.log"; }
done
PIDS=()

# ---- a journal that can no longer write (a full disk) ------------------------------------
# The file size limit (bash's ulimit -f, in KiB) makes the journal's writes
# fail with EFBIG once its segment reaches it, as a full disk would; SIGXFSZ
# is ignored so that the write fails instead of killing the process. The log
# goes through a pipe, out of the limit's reach.
{
    echo 'plant { name = "full", http = { listen = "127.0.0.1:0" }, snapshot = { every = "0s" } }'
    pump_twin
} >full.lua
( echo $BASHPID >full.pid; trap '' XFSZ; ulimit -f 64
  exec "$DOPPEL" run --data-dir "$WORK/data-full" full.lua ) 2>&1 | cat >full.log &
FULL=$!
url=""
for _ in $(seq 1 100); do
    url=$(grep -o 'listening on http://[0-9.:]*/' full.log | head -1 | cut -d' ' -f3)
    [ -n "$url" ] && break
    sleep 0.1
done
for _ in $(seq 1 300); do
    grep -q 'journal: write to segment .* failed' full.log && break
    sleep 0.1
done
grep -q 'journal: write to segment .* failed: File too large' full.log &&
    pass "the journal's write failure is logged" || fail "no journal write failure: $(tail -3 full.log)"
code=$(curl -s -o body -w '%{http_code}' "${url%/}/healthz")
[ "$code" = 503 ] && grep -q '"status":"degraded".*journal: a write or fsync failed' body &&
    pass "/healthz says degraded (503) once the journal cannot write" || fail "healthz: $code $(cat body)"
curl -s "${url%/}/metrics" | grep -q '^doppel_journal_failed 1$' &&
    pass "doppel_journal_failed is 1" || fail "no doppel_journal_failed 1 in /metrics"
kill -TERM "$(cat full.pid)"
wait "$FULL"

if grep -q 'ERROR\|runtime error\|AddressSanitizer' secure.log open.log tls.log busy.log capped.log; then
    fail "errors in the server logs"
    grep 'ERROR\|runtime error\|AddressSanitizer' secure.log open.log tls.log busy.log capped.log | head
fi

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
