#!/bin/bash
# The mqtt driver against a real mosquitto broker started here on free
# loopback ports: every published stream, commands in (accepted, refused by
# the guard, refused by the allow-list, malformed), malformed south payloads,
# TLS with a CA made here, store-and-forward across a broker outage and a
# doppel restart while the broker is down (every journaled sample delivered,
# in order), and a fleet: one plant consuming another through the broker.
set -u
DOPPEL=$(realpath "$1")
SRC=${DP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
WORK=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
echo "work dir: $WORK"
failures=0
ok() { echo "ok: $*"; }
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
TLSPORT=$(free_port)
AUTHPORT=$(free_port)

# ---- a test CA, a broker certificate for 127.0.0.1 and a client certificate
mkdir -p tls
(
    cd tls
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
        -subj "/CN=doppel test CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
        -days 2 -extfile san.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr \
        -subj "/CN=gateway" 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt \
        -days 2 2>/dev/null
    # Another CA, which did not sign the broker's certificate.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 \
        -subj "/CN=other CA" 2>/dev/null
)
[ -s tls/client.crt ] || { echo "FAIL: openssl could not make the test certificates"; exit 1; }

mkdir -p mdb
mosquitto_passwd -b -c passwd gw secret-pw 2>/dev/null
cat > mosquitto.conf <<CONF
per_listener_settings true
persistence true
persistence_location $WORK/mdb/
autosave_interval 1
max_queued_messages 0
max_inflight_messages 0
log_dest file $WORK/mosquitto.log
listener $PORT 127.0.0.1
allow_anonymous true
listener $AUTHPORT 127.0.0.1
allow_anonymous false
password_file $WORK/passwd
listener $TLSPORT 127.0.0.1
allow_anonymous true
cafile $WORK/tls/ca.crt
certfile $WORK/tls/server.crt
keyfile $WORK/tls/server.key
require_certificate true
CONF
# As root, mosquitto would switch to its own user, who cannot read this directory.
if [ "$(id -u)" -eq 0 ]; then echo "user root" >> mosquitto.conf; fi

BROKER=""
start_broker() {
    mosquitto -c mosquitto.conf >> broker.out 2>&1 &
    BROKER=$!
    PIDS="$PIDS $BROKER"
    for _ in $(seq 100); do
        mosquitto_pub -p "$PORT" -t ping -m x 2>/dev/null && return 0
        sleep 0.1
    done
    echo "FAIL: mosquitto did not start"; cat broker.out; exit 1
}
stop_broker() {
    kill -TERM "$BROKER"
    wait "$BROKER" 2>/dev/null
}
# run_doppel NAME SECONDS PLANT: runs in the background, log in NAME.log.
run_doppel() {
    timeout -s TERM "$2" "$DOPPEL" --data-dir "data-$1" run --no-watch "$3" >> "$1.log" 2>&1 &
    LAST=$!
    PIDS="$PIDS $LAST"
}
# wait_for FILE PATTERN [TRIES]: until FILE holds PATTERN (fixed string).
wait_for() {
    for _ in $(seq "${3:-100}"); do
        grep -aqF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# probe FILE PATTERN TOPIC MOSQUITTO_PUB_OPTIONS...: publishes "probe" on TOPIC
# until FILE holds PATTERN (bounded). A subscriber (mosquitto_sub, or doppel
# logging what it refuses) is only known to be subscribed once it got a
# message: a fixed sleep is not enough on a loaded machine.
probe() {
    local file=$1 pattern=$2 topic=$3
    shift 3
    for _ in $(seq 30); do
        mosquitto_pub "$@" -t "$topic" -m probe 2>/dev/null
        wait_for "$file" "$pattern" 5 && return 0
    done
    return 1
}

# ---- 0. settings errors name the field -------------------------------------
printf 'device "b" { driver = "mqtt", commands = { eve = "P1" } }\n' > bad1.lua
printf 'device "b" { driver = "mqtt" }\ntwin "T" { script = "t.lua", tags = { x = { device = "b", topic = "a/#/b" } } }\n' > bad2.lua
printf 'device "b" { driver = "mqtt", keepalive = "1s" }\n' > bad3.lua
printf 'device "b" { driver = "mqtt", host = "10.1.2.3", username = "u", password_env = "HOME" }\n' > bad4.lua
printf '' > t.lua
for f in bad1:'commands: "P1": expected "twin.tag", "twin.*" or "*"' \
         bad2:'twin T, tag x: topic: "a/#/b" is not a valid subscription' \
         bad3:'device b: keepalive: must be between 5s and 65535s' \
         bad4:'device b: a password to broker 10.1.2.3 would travel in clear: add tls_ca'; do
    out=$("$DOPPEL" check "${f%%:*}.lua" 2>&1)
    if [ $? -eq 1 ] && grep -qF -- "${f#*:}" <<<"$out"; then ok "check ${f%%:*}"; else fail "check ${f%%:*}: $out"; fi
done

for f in gateway site; do
    out=$("$DOPPEL" check "$SRC/examples/mqtt-fleet/$f.lua" 2>&1)
    if [ $? -eq 0 ]; then ok "check examples/mqtt-fleet/$f.lua"; else fail "$out"; fi
done

start_broker

# ---- 1. streams, commands, malformed payloads -------------------------------
cat > streams.lua <<LUA
plant { name = "gw1" }
device "sim" { driver = "sim", seed = 1 }
device "broker" { driver = "mqtt", port = $PORT, publish = true, qos_events = 0,
                  commands = { scada = { "P1.sp" } } }
twin "P1" { script = "p1.lua", tags = {
   flow = { device = "sim", wave = "sine", mean = 10, amplitude = 1, period = "10s",
            every = "100ms", unit = "m3/h" },
   sp = { writable = true, min = 0, max = 100 },
   ext = { device = "broker", topic = "in/ext", field = "a.b[1]", ts_field = "t", ts_unit = "ms" },
   raw = { device = "broker", topic = "in/raw", format = "text" },
}}
LUA
cat > p1.lua <<'LUA'
twin.on_change("ext", function(v) twin.event("ext_seen", { v = v }) end)
LUA
timeout 40 mosquitto_sub -p "$PORT" -t 'doppel/gw1/#' -v > streams.sub 2>&1 &
PIDS="$PIDS $!"
timeout 40 mosquitto_sub -p "$PORT" -V mqttv5 -t 'resp/gw1' -F '%t %D %p' > resp.sub 2>&1 &
PIDS="$PIDS $!"
probe streams.sub 'doppel/gw1/_probe probe' doppel/gw1/_probe -p "$PORT" ||
    fail "the gw1 subscriber did not subscribe"
probe resp.sub 'resp/gw1' resp/gw1 -p "$PORT" || fail "the reply subscriber did not subscribe"
run_doppel streams 30 streams.lua
D1=$LAST
wait_for streams.log "mqtt broker: connected" || fail "gw1 did not connect"
# "connected" is logged before the subscriptions reach the broker, which
# takes them in order: a refused command on the last one (the command
# topics) shows that in/ext and in/raw are subscribed too.
probe streams.log 'command on doppel/gw1/P1/cmd/probe refused' doppel/gw1/P1/cmd/probe \
    -p "$PORT" || fail "gw1 did not subscribe"
mosquitto_pub -p "$PORT" -t in/ext -m '{"a":{"b":[1,42]},"t":1700000000000}'
mosquitto_pub -p "$PORT" -t in/ext -m '{"a":{"b":[1,42]'
mosquitto_pub -p "$PORT" -t in/ext -m '{"a":{"c":1}}'
mosquitto_pub -p "$PORT" -t in/raw -m ' 17.5 '
mosquitto_pub -p "$PORT" -t doppel/gw1/P1/cmd/scada -m '{"tag":"sp","value":50,"id":"c1"}'
mosquitto_pub -p "$PORT" -t doppel/gw1/P1/cmd/scada -m '{"tag":"sp","value":500,"id":"c2"}'
mosquitto_pub -p "$PORT" -t doppel/gw1/P1/cmd/eve -m '{"tag":"sp","value":5,"id":"c3"}'
mosquitto_pub -p "$PORT" -t doppel/gw1/P1/cmd/scada -m '{"tag":"flow","value":5,"id":"c4"}'
mosquitto_pub -p "$PORT" -t doppel/gw1/P1/cmd/scada -m 'set sp 5'
mosquitto_pub -p "$PORT" -t doppel/gw1/P1/cmd -m '{"tag":"sp","value":5}'
# MQTT 5 request/response: the reply goes to the response topic, with the
# request's correlation data.
mosquitto_pub -p "$PORT" -V mqttv5 -t doppel/gw1/P1/cmd/scada -D publish response-topic resp/gw1 \
    -D publish correlation-data corr-77 -m '{"tag":"sp","value":60,"id":"c5"}'
# A flood of garbage: at most 10 lines a second, the rest counted. The
# malformed in/ext payloads opened a one-second window of that limit: the
# flood starts its own window (more than a second after they were logged)
# and comes at once from one client, so that it does not outlast it, however
# slowly the publishers above ran.
wait_for streams.log 'malformed payload for P1.ext (13 bytes)' || fail "in/ext not read"
sleep 1.1
yes '' | head -n 25 | mosquitto_pub -p "$PORT" -t in/raw -l
wait_for streams.log 'topic in/raw: malformed payload' || fail "the flood was not read"
sleep 1.2
mosquitto_pub -p "$PORT" -t in/raw -m ''
wait_for streams.log 'more malformed payloads were not logged'
sleep 1 # samples after the malformed payloads
kill -TERM "$D1"
wait "$D1"
S=streams.sub
# The plant's death message is the last one sent on a clean stop.
wait_for $S 'doppel/gw1/status {"status":"offline","ts"'
check "birth: plant online (retained)" grep -aq '^doppel/gw1/status {"status":"online"' $S
check "birth: twin P1 online with its tags" \
    grep -aq '^doppel/gw1/P1/status {"status":"online","tags":\[{"name":"ext"' $S
check "data: flow samples with seq, ts, v, q" \
    grep -aqE '^doppel/gw1/P1/data/flow \{"seq":[0-9]+,"ts":[0-9]+,"v":[0-9.]+,"q":"good"\}$' $S
check "south: JSON field path and payload timestamp" \
    grep -aq '^doppel/gw1/P1/data/ext {"seq":[0-9]*,"ts":1700000000000000,"v":42,"q":"good"}' $S
check "south: text payload" grep -aq '^doppel/gw1/P1/data/raw {.*"v":17.5,' $S
check "events: a twin's event" \
    grep -aq '^doppel/gw1/P1/events {"seq":[0-9]*,"ts":[0-9]*,"kind":"ext_seen",.*"data":{"v":42}}' $S
check "command outcomes: done" \
    grep -aq '^doppel/gw1/P1/commands {.*"tag":"sp","value":50,"outcome":"done"' $S
check "command outcomes: rejected by the guard" \
    grep -aq '^doppel/gw1/P1/commands {.*"tag":"sp","value":500,"outcome":"rejected"' $S
check "reply: accepted" grep -aq '^doppel/gw1/P1/reply/scada {"id":"c1","cmd":[1-9].*"outcome":"done"' $S
check "reply: refused by the guard" \
    grep -aq '^doppel/gw1/P1/reply/scada {"id":"c2".*"outcome":"rejected","reason":"max: 500' $S
check "reply: client not allowed" \
    grep -aq '^doppel/gw1/P1/reply/eve {"id":"c3".*"rejected","reason":"client eve may not command P1.sp"' $S
check "reply: tag not allowed" \
    grep -aq '^doppel/gw1/P1/reply/scada {"id":"c4".*"client scada may not command P1.flow"' $S
check "reply: malformed request" \
    grep -aq '^doppel/gw1/P1/reply/scada {"id":null.*"rejected","reason":"neither a JSON object' $S
check "reply: MQTT 5 response topic and correlation data" \
    grep -aq '^resp/gw1 corr-77 {"id":"c5","cmd":[0-9]*,"tag":"P1.sp","outcome":"done"' resp.sub
check "log: refused command without a client" \
    grep -aq 'command on doppel/gw1/P1/cmd refused: the topic must be' streams.log
check "log: refused command logged" grep -aq 'refused: client eve may not command P1.sp' streams.log
check "log: malformed payload names the topic" \
    grep -aq 'topic in/ext: malformed payload for P1.ext (16 bytes): not valid JSON; skipped' streams.log
check "log: missing field names the path" \
    grep -aq 'topic in/ext: malformed payload for P1.ext (13 bytes): no field "a.b\[1\]"; skipped' streams.log
check "log: a flood of malformed payloads is summarised" \
    grep -aqE 'mqtt broker: [0-9]+ more malformed payloads were not logged' streams.log
check "log: at most 10 malformed lines in the flood" \
    test "$(grep -ac 'topic in/raw: malformed payload for P1.raw (0 bytes): empty payload' streams.log)" -le 11
check "death: twin offline on a clean stop" grep -aq '^doppel/gw1/P1/status {"status":"offline"}' $S
check "death: plant offline on a clean stop" \
    grep -aq '^doppel/gw1/status {"status":"offline","ts"' $S
# A clean stop waits for the broker's acknowledgements before the DISCONNECT:
# a connection reset under them made the broker drop the last messages (the
# death message) and publish the last will instead.
check "death: no last will on a clean stop" \
    bash -c "! grep -aqxF 'doppel/gw1/status {\"status\":\"offline\"}' $S"
# The plant kept running after the malformed payloads: samples after them.
last_flow=$(grep -a '^doppel/gw1/P1/data/flow' $S | tail -1 | sed 's/.*"seq":\([0-9]*\).*/\1/')
bad_at=$(grep -an 'malformed payload' streams.log | head -1 | cut -d: -f1)
check "plant kept running after malformed payloads (flow seq $last_flow > 30)" \
    test "${last_flow:-0}" -gt 30
[ -n "$bad_at" ] || fail "no malformed line found"

# ---- 2. TLS with the test CA and a client certificate ------------------------
cat > tls.lua <<LUA
plant { name = "gwtls" }
device "sim" { driver = "sim" }
device "broker" { driver = "mqtt", port = $TLSPORT, publish = true, tls_ca = "tls/ca.crt",
                  tls_cert = "tls/client.crt", tls_key = "tls/client.key", protocol = "3.1.1" }
twin "T" { script = "t.lua", tags = { x = { device = "sim", wave = "sawtooth", amplitude = 5,
                                             period = "1s", every = "100ms" } } }
LUA
printf '' > t.lua
timeout 20 mosquitto_sub -p "$TLSPORT" --cafile tls/ca.crt --cert tls/client.crt \
    --key tls/client.key -t 'doppel/gwtls/T/data/x' -v > tls.sub 2>&1 &
PIDS="$PIDS $!"
probe tls.sub 'doppel/gwtls/T/data/x probe' doppel/gwtls/T/data/x -p "$TLSPORT" \
    --cafile tls/ca.crt --cert tls/client.crt --key tls/client.key ||
    fail "the TLS subscriber did not subscribe"
run_doppel tls 3 tls.lua
wait "$LAST"
for _ in $(seq 30); do
    [ "$(grep -ac '^doppel/gwtls/T/data/x {' tls.sub)" -ge 10 ] && break
    sleep 0.1
done
check "TLS: connected with the test CA" grep -aq 'connected to 127.0.0.1:'"$TLSPORT"' (MQTT 3.1.1, TLS)' tls.log
check "TLS: samples received over TLS" test "$(grep -ac '^doppel/gwtls/T/data/x {' tls.sub)" -ge 10
sed -e 's|tls/ca.crt|tls/other.crt|' -e 's/gwtls/gwbad/' tls.lua > tlsbad.lua
run_doppel tlsbad 2 tlsbad.lua
wait "$LAST"
check "TLS: a broker certificate from another CA is refused" \
    grep -aq "mqtt broker: cannot connect to 127.0.0.1:$TLSPORT" tlsbad.log
check "TLS: never connected with the wrong CA" bash -c "! grep -aq 'connected to' tlsbad.log"
# tls = true without tls_ca: the system's CAs, which do not know the test CA.
sed -e 's|tls_ca = "tls/ca.crt",|tls = true,|' -e 's/gwtls/gwsys/' tls.lua > tlssys.lua
run_doppel tlssys 2 tlssys.lua
wait "$LAST"
check "TLS: tls = true checks against the system's CAs" \
    grep -aq "mqtt broker: cannot connect to 127.0.0.1:$TLSPORT" tlssys.log
check "TLS: tls = true alone is accepted by libmosquitto" \
    bash -c "! grep -aq 'settings refused' tlssys.log && ! grep -aq 'connected to' tlssys.log"

# ---- 2b. user name and password, the password from a file or the environment
printf 'secret-pw\n' > pw.txt
cat > auth.lua <<LUA
plant { name = "gwauth" }
device "broker" { driver = "mqtt", port = $AUTHPORT, username = "gw", password_file = "pw.txt",
                  publish = true }
twin "T" { script = "t.lua", tags = {} }
LUA
sed -e 's/password_file = "pw.txt"/password_env = "DP_TEST_PW"/' -e 's/gwauth/gwenv/' auth.lua > authenv.lua
run_doppel auth 2 auth.lua
wait "$LAST"
check "auth: connected with the password from a file" grep -aq "connected to 127.0.0.1:$AUTHPORT" auth.log
DP_TEST_PW=secret-pw run_doppel authenv 2 authenv.lua
wait "$LAST"
check "auth: connected with the password from the environment" \
    grep -aq "connected to 127.0.0.1:$AUTHPORT" authenv.log
DP_TEST_PW=wrong run_doppel authbad 2 authenv.lua
wait "$LAST"
check "auth: a wrong password is refused and said so" \
    grep -aq "cannot connect to 127.0.0.1:$AUTHPORT: broker refused the connection: Not authorized" authbad.log
run_doppel authnone 2 authenv.lua
wait "$LAST"
check "auth: a missing variable is named" grep -aq 'password_env: variable DP_TEST_PW is not set' authnone.log

# ---- 3. store-and-forward: broker outage, doppel restart while it is down ----
cat > saf.lua <<LUA
plant { name = "gw2" }
device "sim" { driver = "sim", seed = 7 }
device "broker" { driver = "mqtt", port = $PORT, publish = true, reconnect_min = "100ms",
                  reconnect_max = "300ms", keepalive = "5s", batch = 5 }
twin "P1" { script = "t.lua", tags = {
   flow = { device = "sim", wave = "sine", mean = 50, amplitude = 5, period = "3s", noise = 1,
            every = "5ms" } } }
LUA
# A persistent QoS 1 subscriber session, kept by the broker across its restart.
timeout 60 mosquitto_sub -p "$PORT" -c -i counter -q 1 -t 'doppel/gw2/P1/data/flow' > saf.sub 2>&1 &
SUB=$!
PIDS="$PIDS $SUB"
probe saf.sub probe doppel/gw2/P1/data/flow -p "$PORT" || fail "the counter did not subscribe"
run_doppel saf 30 saf.lua
DA=$LAST
wait_for saf.log "mqtt broker: connected" || fail "gw2 did not connect"
sleep 1.5
stop_broker # under load: 200 samples/s
sleep 1.5
kill -TERM "$DA"
wait "$DA" 2>/dev/null
run_doppel saf 30 saf.lua # restarted while the broker is down
DB=$LAST
wait_for saf.log "resuming from cursor mqtt-broker" || fail "no resume line"
sleep 1.5
start_broker
sleep 2
kill -TERM "$DB"
wait "$DB" 2>/dev/null
"$DOPPEL" --data-dir data-saf export --tags P1.flow | tail -n +2 | cut -d, -f1 > expected.seq
want=$(wc -l < expected.seq)
# The last records of a run (journaled after the publisher stopped) go out
# at the next start: a third run with the broker up.
run_doppel saf 3 saf.lua
wait "$LAST"
# Wait until the subscriber has every sequence number (bounded).
got_all() {
    python3 - "$@" <<'PY'
import json, sys
exp = [int(l) for l in open("expected.seq") if l.strip()]
last, kept, dups, disorder = 0, [], 0, 0
for line in open("saf.sub", errors="replace"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    for it in json.loads(line)["items"]:
        if it["seq"] <= last:
            dups += 1
            continue
        last = it["seq"]
        kept.append(it["seq"])
ok = kept[:len(exp)] == exp
if len(sys.argv) > 1:
    print(f"expected {len(exp)} samples (runs 1 and 2), kept {len(kept)} in order (runs 1 to 3), {dups} duplicates dropped")
    if not ok:
        missing = sorted(set(exp) - set(kept))[:10]
        extra = sorted(set(kept) - set(exp))[:10]
        print(f"missing (first 10) {missing}; unexpected {extra}")
sys.exit(0 if ok else 1)
PY
}
for _ in $(seq 150); do got_all && break; sleep 0.2; done
got_all report
check "store-and-forward: every journaled sample delivered, in order ($want samples)" got_all
check "store-and-forward: the outage was seen" grep -aq 'mqtt broker: connection to 127.0.0.1:'"$PORT"' lost' saf.log
check "store-and-forward: a backlog was resent after restart" \
    grep -aq 'resuming from cursor mqtt-broker at record' saf.log
check "store-and-forward: at least 500 samples" test "$want" -ge 500
kill "$SUB" 2>/dev/null

# ---- 3b. two gateways with one client id ------------------------------------
# The same plant file on two gateways gives both the same client id; the
# broker keeps one session per id and closes the older connection whenever
# the other connects. Each must back off (100 ms doubling to 800 ms) instead
# of reconnecting every 100 ms: in 5 s that is at most about 8 connections
# each (it was about 25 each, the two closing each other's in turn), and the
# log says what is likely wrong.
cat > dup.lua <<LUA
plant { name = "dup" }
device "broker" { driver = "mqtt", port = $PORT, publish = true, reconnect_min = "100ms",
                  reconnect_max = "800ms" }
twin "T" { script = "t.lua", tags = { x = { writable = true } } }
LUA
run_doppel dupa 5 dup.lua
DUPA=$LAST
run_doppel dupb 5 dup.lua
DUPB=$LAST
wait "$DUPA" "$DUPB" 2>/dev/null
na=$(grep -ac 'mqtt broker: connected to' dupa.log)
nb=$(grep -ac 'mqtt broker: connected to' dupb.log)
echo "connections in 5 s with one client id: $na and $nb"
check "one client id on two gateways: both were connected and closed in turn" \
    test "$na" -ge 2 -a "$nb" -ge 2
check "one client id on two gateways: each backs off (at most 12 connections in 5 s)" \
    test "$na" -le 12 -a "$nb" -le 12
check "one client id on two gateways: the log names the client id" \
    grep -aqh 'lost [0-9]* ms after connecting: .*does another client use client id "doppel-dup-broker"' dupa.log dupb.log

# ---- 4. fleet: one plant consuming another's published twins ----------------
cat > gw3.lua <<LUA
plant { name = "gw3" }
device "sim" { driver = "sim", seed = 3 }
device "broker" { driver = "mqtt", port = $PORT, publish = true, format = "msgpack", batch = 4 }
twin "P1" { script = "t.lua", tags = {
   flow = { device = "sim", wave = "triangle", mean = 20, amplitude = 10, period = "2s",
            every = "50ms" } } }
LUA
cat > site.lua <<LUA
plant { name = "site" }
device "broker" { driver = "mqtt", port = $PORT, publish = true, client_id = "site" }
twin "S" { script = "s.lua", tags = {
   gw3_flow = { device = "broker", topic = "doppel/gw3/P1/data/flow", format = "doppel" },
}}
LUA
cat > s.lua <<'LUA'
twin.tag("total")
twin.on_change("gw3_flow", function(v) twin.set("total", v * 2) end)
LUA
timeout 40 mosquitto_sub -p "$PORT" -t 'doppel/site/S/data/#' -v > site.sub 2>&1 &
PIDS="$PIDS $!"
probe site.sub 'doppel/site/S/data/_probe probe' doppel/site/S/data/_probe -p "$PORT" ||
    fail "the site subscriber did not subscribe"
run_doppel site 30 site.lua
DS=$LAST
wait_for site.log "mqtt broker: connected" || fail "site did not connect"
# Subscribed once it reads (and refuses) a payload on gw3's data topic.
probe site.log 'topic doppel/gw3/P1/data/flow: malformed payload' doppel/gw3/P1/data/flow \
    -p "$PORT" || fail "site did not subscribe"
run_doppel gw3 3 gw3.lua
wait "$LAST"
"$DOPPEL" --data-dir data-gw3 export --tags P1.flow | tail -n +2 | cut -d, -f2,5 > gw3.csv
# The gateway starts over with a new data directory: its sequence numbers
# restart, and the site must notice (from its birth message) and keep reading.
rm -rf data-gw3
run_doppel gw3 2 gw3.lua
wait "$LAST"
# gw3 stopped once the broker acknowledged its last messages; the broker
# hands them on to the site at once.
sleep 2
kill -TERM "$DS"
wait "$DS"
"$DOPPEL" --data-dir data-gw3 export --tags P1.flow | tail -n +2 | cut -d, -f2,5 >> gw3.csv
sort -o gw3.csv gw3.csv
"$DOPPEL" --data-dir data-site export --tags S.gw3_flow | tail -n +2 | cut -d, -f2,5 | sort > site.csv
n3=$(wc -l < gw3.csv)
check "fleet: the site has every gw3 sample with its timestamp and value ($n3)" \
    bash -c "[ $n3 -ge 40 ] && diff -q gw3.csv site.csv"
check "fleet: the site saw the gateway's journal start over" \
    grep -aq "S.gw3_flow: the source's journal starts over" site.log
check "fleet: the site's twin computed from them and published it" \
    grep -aq '^doppel/site/S/data/total {"seq"' site.sub

# Sanitizer builds: a leak or undefined behaviour in any doppel run fails the test.
if grep -l 'Sanitizer\|runtime error:' ./*.log 2>/dev/null; then fail "sanitizer reports in the logs above"; fi

echo "$failures failures"
[ "$failures" -eq 0 ]
