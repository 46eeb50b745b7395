#!/bin/bash
# jitsu-http end to end with curl and socat: cold starts with their header,
# 200 concurrent requests to one cold vm, queue overflow, guests that never
# get ready or cannot start, keep-alive, a 1 GiB upload and a large
# download streamed in bounded memory, an Upgrade tunnel, bad requests,
# slow clients, and a graceful drain on SIGTERM.
# usage: http.sh JITSU-HTTP HELLO JITSU-CTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
jhttp=$1
hello=$2
ctl_bin=$3
test_dir http
fail() {
  echo "FAIL: $*" >&2
  tail -n 30 "$dir/http.err" >&2 || true
  exit 1
}
ok() { tap_ok "$@"; }
P=$(free_port) W=$(free_port) S=$(free_port) B=$(free_port) WS=$(free_port)
KA=$(free_port) G=$(free_port) TP=$(free_port)
wsecho="$(dirname "$0")/ws_echo.py"
url() { echo "http://127.0.0.1:$P$1"; }
get() { curl -s -m 20 -H "Host: $1" "$(url "${2:-/}")"; }

cat >"$dir/http.conf" <<CONF
[jitsu]
state-dir = $dir/state
[http]
listen = 127.0.0.1:$P
header-timeout = 1s
body-timeout = 2s
body-min-rate = 100
response-timeout = 2s
send-timeout = 2s
upstream = ext.test 127.0.0.1:$KA
upstream = web.test/ext 127.0.0.1:$KA
max-header = 8K
max-body = 2G
hold = 3s
[vm web]
exec = $hello --name web --record $dir/starts-web
socket = tcp 127.0.0.1:$W
ready = notify
address = 127.0.0.1:$W
http-host = web.test
[vm api]
exec = $hello --name api --record $dir/starts-api
socket = tcp 127.0.0.1:$B
ready = notify
address = 127.0.0.1:$B
http-host = web.test
http-path = /api
[vm slow]
exec = $hello --name slow --boot-ms 1500 --listen 127.0.0.1:$S --record $dir/starts-slow
ready = tcp:127.0.0.1:$S
address = 127.0.0.1:$S
http-host = slow.test
http-queue = 2
[vm gate]
exec = /bin/sh -c 'while [ ! -e $dir/gate-open ]; do sleep 0.02; done; exec $hello --name gate --listen 127.0.0.1:$G' $dir
ready = tcp:127.0.0.1:$G
ready-timeout = 120s
address = 127.0.0.1:$G
http-host = gate.test
http-queue = 2
[vm tarpit]
exec = socat TCP-LISTEN:$TP,bind=127.0.0.1,reuseaddr,fork SYSTEM:'sleep 60; echo $dir'
ready = tcp:127.0.0.1:$TP
address = 127.0.0.1:$TP
http-host = tarpit.test
[vm never]
exec = /bin/sh -c 'sleep 1000' $dir
ready = tcp:127.0.0.1:$(free_port)
ready-timeout = 30s
address = 127.0.0.1:1
http-host = never.test
http-hold = 500ms
[vm ws]
exec = /usr/bin/python3 $wsecho serve $WS $dir
ready = tcp:127.0.0.1:$WS
address = 127.0.0.1:$WS
http-host = ws.test
[vm broken]
exec = $dir/no-such-program
address = 127.0.0.1:1
http-host = broken.test
[vm alias]
exec = /bin/sh -c 'sleep 1000' $dir
address = 127.0.0.1:$KA
http-host = alias.test
CONF
vg_init "$dir"
"${VG[@]}" "$jhttp" -c "$dir/http.conf" >"$dir/http.out" 2>"$dir/http.err" &
hpid=$!
pids+=($hpid)
wait_serving "$dir/http.err" || fail "jitsu-http did not start"
ctl() { "$ctl_bin" -c "$dir/http.conf" "$@"; }
# Wait (up to 60 s) until jitsu-http holds N client connections.
wait_connections() {
  for _ in $(seq 1 1200); do
    ctl stats | grep -E "connections +$1$" >/dev/null && return 0
    sleep 0.05
  done
  fail "jitsu-http did not reach $1 connections: $(ctl stats | grep connections)"
}

# --- a cold vm: the first request succeeds and says it paid a cold start --
curl -si -m 10 -H "Host: web.test" "$(url /)" >"$dir/r.txt"
grep -q "^HTTP/1.1 200" "$dir/r.txt" || fail "cold: $(cat "$dir/r.txt")"
grep -q "^X-Jitsu-Cold-Start: [0-9]" "$dir/r.txt" || fail "no cold-start header"
grep -q "hello from web" "$dir/r.txt" || fail "cold body"
curl -si -m 10 -H "Host: web.test" "$(url /)" | grep "X-Jitsu-Cold-Start" >/dev/null && fail "a warm answer claims a cold start"
[ "$(get web.test /api/v1)" = "hello from api" ] || fail "path prefix route"
curl -s -o /dev/null -w '%{http_code}' -H "Host: nope.test" "$(url /)" | grep 404 >/dev/null || fail "unknown host"
ok

# --- 200 concurrent requests to a cold vm: one spawn, 200 answers ---------
ctl stop web destroy >/dev/null
rm -f "$dir/starts-web"
args=()
for i in $(seq 1 200); do args+=(-o /dev/null -w '%{http_code}\n' "$(url "/?$i")"); done
curl -s --no-progress-meter -m 30 -Z --parallel-immediate --parallel-max 200 -H "Host: web.test" "${args[@]}" >"$dir/codes"
[ "$(grep -c '^200$' "$dir/codes")" -eq 200 ] || fail "200 concurrent: $(sort "$dir/codes" | uniq -c)"
[ "$(wc -l <"$dir/starts-web")" -eq 1 ] || fail "$(wc -l <"$dir/starts-web") spawns for one cold vm"
ok

# --- keep-alive on the client side ---------------------------------------
curl -sv -m 10 -H "Host: web.test" "$(url /a)" "$(url /b)" -o /dev/null -o /dev/null 2>"$dir/ka.txt"
grep -q "Re-using existing connection" "$dir/ka.txt" || fail "no keep-alive: $(grep -i connect "$dir/ka.txt")"
ok

# --- the queue: overflow 503, a guest that is never ready 503, one that ---
# --- cannot start 502 ---------------------------------------------------------
# The gate guest is ready only once the test opens its gate: two requests
# wait in its queue of 2, three more are turned away, then the two pass.
: >"$dir/codes"
qpids=()
for i in 1 2; do
  curl -s -o /dev/null -w '%{http_code}\n' -m 120 -H "Host: gate.test" "$(url "/?$i")" >>"$dir/codes" &
  qpids+=($!)
done
wait_connections 2
for i in 3 4 5; do
  curl -s -o /dev/null -w '%{http_code}\n' -m 60 -H "Host: gate.test" "$(url "/?$i")" >>"$dir/codes"
done
touch "$dir/gate-open"
wait "${qpids[@]}"
[ "$(grep -c '^200$' "$dir/codes")" -eq 2 ] && [ "$(grep -c '^503$' "$dir/codes")" -eq 3 ] ||
  fail "queue of 2: $(sort "$dir/codes" | uniq -c)"
# A guest never ready: 503 with Retry-After at its hold (500 ms), well
# before its ready-timeout (30 s).
t0=$(date +%s%N)
curl -si -m 40 -H "Host: never.test" "$(url /)" >"$dir/r.txt"
t1=$(date +%s%N)
grep -q "^HTTP/1.1 503" "$dir/r.txt" && grep -q "^Retry-After: " "$dir/r.txt" ||
  fail "never ready: $(cat "$dir/r.txt")"
[ $(((t1 - t0) / 1000000)) -lt 20000 ] || fail "the hold limit took $(((t1 - t0) / 1000000)) ms"
curl -si -m 10 -H "Host: broken.test" "$(url /)" >"$dir/r.txt"
grep -q "^HTTP/1.1 502" "$dir/r.txt" && grep -q "no-such-program" "$dir/r.txt" ||
  fail "cannot start: $(cat "$dir/r.txt")"
# A client that gives up while waiting leaves the queue (and the count).
ctl stop slow destroy >/dev/null
curl -s -m 0.3 -H "Host: slow.test" "$(url /)" >/dev/null || true
wait_connections 0
ok

# --- streaming: 1 GiB up, 256 MiB down, in bounded memory -----------------
truncate -s 1G "$dir/big" # sparse: no disk, no memory
curl -s -m 120 -H "Host: web.test" -T "$dir/big" "$(url /upload)" >"$dir/up.txt"
rm -f "$dir/big"
grep -q "received 1073741824 bytes" "$dir/up.txt" || fail "upload: $(cat "$dir/up.txt")"
# A chunked upload (from a pipe) is re-chunked to the guest.
truncate -s 64M "$dir/mid"
curl -s -m 60 -H "Host: web.test" -T - "$(url /chunked)" <"$dir/mid" >"$dir/up.txt"
grep -q "received 67108864 bytes" "$dir/up.txt" || fail "chunked upload: $(cat "$dir/up.txt")"
n=$(curl -s -m 60 -H "Host: web.test" "$(url /bytes/268435456)" | wc -c)
[ "$n" -eq 268435456 ] || fail "download: $n bytes"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$hpid/status")
if is_asan "$jhttp" || [ -n "${JITSU_VALGRIND:-}" ]; then
  tap_skip "the memory bound (ASan's quarantine or valgrind keeps freed buffers: $hwm KiB)"
else
  [ "$hwm" -lt 65536 ] || fail "jitsu-http grew to $hwm KiB streaming"
fi
ok

# --- an Upgrade tunnel echoes through --------------------------------------
out=$( (printf 'GET /ws HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'
  sleep 1
  printf 'ping\n'
  sleep 1) | socat -t 5 - "TCP:127.0.0.1:$P")
echo "$out" | grep "^HTTP/1.1 101" >/dev/null || fail "no 101: $out"
echo "$out" | grep "^ping" >/dev/null || fail "the tunnel did not echo: $out"
# A real WebSocket client and server (python3-websockets), through a cold
# start: the handshake, then framed messages both ways.
/usr/bin/python3 "$wsecho" ask 127.0.0.1 "$P" ws.test >"$dir/ws.txt" 2>&1 ||
  fail "WebSocket: $(cat "$dir/ws.txt")"
ok

# --- bad requests, big heads, slow clients --------------------------------
code() { socat -t 3 - "TCP:127.0.0.1:$P" | head -n1 | cut -d' ' -f2; }
requests() { ctl stats | awk '$1 == "requests_total" {print $2}'; }
before=$(requests)
[ "$(printf 'GARBAGE\r\n\r\n' | code)" = 400 ] || fail "garbage: not 400"
[ "$(printf 'GET / HTTP/1.1\r\n\r\n' | code)" = 400 ] || fail "no Host: not 400"
# RFC 9112 5.1: whitespace before a field's colon is an error.
[ "$(printf 'GET / HTTP/1.1\r\nHost: web.test\r\nX-A : 1\r\n\r\n' | code)" = 400 ] ||
  fail "a space before the colon: not 400"
# RFC 9112 3.2: two Host fields are an error (not joined into a name).
[ "$(printf 'GET / HTTP/1.1\r\nHost: evil.example\r\nHost: .test\r\n\r\n' | code)" = 400 ] ||
  fail "two Host fields: not 400"
# RFC 9110 9.1: a method the proxy does not know is 501; a method that is
# not a token is 400.
[ "$(printf 'FROB / HTTP/1.1\r\nHost: web.test\r\n\r\n' | code)" = 501 ] ||
  fail "an unknown method: not 501"
[ "$(printf 'G@T / HTTP/1.1\r\nHost: web.test\r\n\r\n' | code)" = 400 ] ||
  fail "a method that is not a token: not 400"
# Requests refused, even before their head was whole, are counted.
[ "$(($(requests) - before))" = 6 ] || fail "6 refused requests counted as $(($(requests) - before))"
# RFC 9112 3.2.2: an absolute-form target routes by its authority.
printf 'GET http://web.test/ HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n' |
  socat -t 20 - "TCP:127.0.0.1:$P" >"$dir/abs.txt"
grep -q "hello from web" "$dir/abs.txt" || fail "absolute-form: $(head -n 1 "$dir/abs.txt")"
[ "$(printf 'GET / HTTP/1.1\r\nHost: web.test:8080\r\n\r\n' | code)" = 200 ] ||
  fail "a Host with a port does not reach its name"
big=$(head -c 10000 /dev/zero | tr '\0' a)
[ "$(printf 'GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: %s\r\n\r\n' "$big" | code)" = 431 ] ||
  fail "a big head: not 431"
[ "$(printf 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 9999999999999\r\n\r\n' | code)" = 413 ] ||
  fail "a big body: not 413"
# A head that never ends (slowloris): 408 at header-timeout (1 s here),
# long before the client stops sending (6 s).
t0=$(date +%s%N)
(printf 'GET / HTTP/1.1\r\nHost: web'; sleep 6) | socat -t 7 - "TCP:127.0.0.1:$P" |
  { read -r line; echo "$(date +%s%N) $line"; cat >/dev/null; } >"$dir/slow.txt"
read -r t1 _ status _ <"$dir/slow.txt"
[ "$status" = 408 ] || fail "slowloris: $(cat "$dir/slow.txt")"
[ $(((t1 - t0) / 1000000)) -lt 5000 ] || fail "408 took $(((t1 - t0) / 1000000)) ms"
[ "$(get web.test)" = "hello from web" ] || fail "the proxy did not survive"
# 100 clients trickling small bodies to web take none of its connections
# (a small body is read whole first): other clients of web get through.
python3 - "$P" <<'PY' &
import socket, sys, time
socks = []
for _ in range(100):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 100\r\n\r\nx")
    socks.append(s)
for _ in range(8):  # a byte a second: under body-timeout (2 s) but too
    time.sleep(1)
    for s in socks:
        try:  # slow for body-min-rate: cut after about 2 s
            s.sendall(b"x")
        except OSError:
            pass
for s in socks:
    s.close()
PY
trickle=$!
sleep 0.5
fair=()
for i in $(seq 1 10); do
  curl -s -m 5 -H "Host: web.test" "$(url /)" >"$dir/fair.$i" &
  fair+=($!)
done
wait "${fair[@]}" || true
wait "$trickle" || true
[ "$(cat "$dir"/fair.* | grep -c "hello from web")" = 10 ] ||
  fail "beside 100 trickling bodies, $(cat "$dir"/fair.* | grep -c "hello from web") of 10 requests got through"
# A body that stops arriving: 408 after body-timeout (2 s here), while the
# client still holds the connection (10 s).
(printf 'POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 10\r\n\r\nab'; sleep 10) |
  socat -t 11 - "TCP:127.0.0.1:$P" >"$dir/body.txt" 2>&1 || true
head -n 1 "$dir/body.txt" | grep "^HTTP/1.1 408" >/dev/null || fail "a stalled body: $(head -c 200 "$dir/body.txt")"
# Bytes that are not the URL or a header (empty lines, here) do not move
# the cut: 408 while the client still sends them (for 6 s).
(for _ in $(seq 1 20); do printf '\r\n'; sleep 0.3; done) |
  socat -t 7 - "TCP:127.0.0.1:$P" >"$dir/crlf.txt" 2>&1 || true
head -n 1 "$dir/crlf.txt" | grep "^HTTP/1.1 408" >/dev/null || fail "empty lines held the head open: $(head -c 200 "$dir/crlf.txt")"
# A large body (streamed to the guest) that comes a byte every 0.3 s: no
# gap reaches body-timeout, but it is too slow for body-min-rate: 408
# while the client is still sending, and the guest is free again.
python3 - "$P" >"$dir/rate.txt" <<'PY'
import select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /upload HTTP/1.1\r\nHost: web.test\r\n"
          b"Content-Length: 100000\r\n\r\n")
for i in range(40):  # 12 s of bytes at most
    if select.select([s], [], [], 0.3)[0]:
        print("answered after %d bytes: %s" % (i, s.recv(100).split(b"\r\n")[0].decode()))
        sys.exit(0)
    try:
        s.sendall(b"x")
    except OSError as e:
        print("cut without an answer after %d bytes: %s" % (i, e))
        sys.exit(0)
print("all 40 bytes were taken")
PY
grep -q "answered after [0-9]* bytes: HTTP/1.1 408" "$dir/rate.txt" ||
  fail "a body slower than body-min-rate: $(cat "$dir/rate.txt")"
ctl --json status web | grep -E '"holds": *0' >/dev/null || fail "web is still held: $(ctl --json status web)"
# A guest that never answers: 504 after response-timeout (2 s here).
curl -si -m 30 -H "Host: tarpit.test" "$(url /)" >"$dir/r.txt" || true
head -n 1 "$dir/r.txt" | grep "^HTTP/1.1 504" >/dev/null && grep -q "did not answer in time" "$dir/r.txt" ||
  fail "a silent guest: $(head -c 300 "$dir/r.txt")"
# A request pipelined behind one its guest does not answer waits its turn:
# parsed when the first reached the guest, it took the guest connection
# from under the first, which was left open for good (found by fuzz_http).
python3 - "$P" >"$dir/pipe.txt" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /1 HTTP/1.1\r\nHost: tarpit.test\r\n\r\n"
          b"GET /2 HTTP/1.1\r\nHost: tarpit.test\r\n\r\n")
s.shutdown(socket.SHUT_WR)
s.settimeout(30)
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
print(data.count(b"HTTP/1.1 504"), "x 504")
PY
grep -Eq "^[12] x 504" "$dir/pipe.txt" || fail "pipelined behind a silent guest: $(cat "$dir/pipe.txt")"
for _ in $(seq 1 100); do
  [ "$(ss -Htnp state established "( dport = :$TP )" | grep -c jitsu-http)" = 0 ] && break
  sleep 0.05
done
[ "$(ss -Htnp state established "( dport = :$TP )" | grep -c jitsu-http)" = 0 ] ||
  fail "jitsu-http kept a connection to the silent guest: $(ss -Htnp state established "( dport = :$TP )")"
# A client that asks for 256 MiB and reads none of it: closed after
# send-timeout (2 s here), and the guest is free again.
python3 - "$P" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(b"GET /bytes/268435456 HTTP/1.1\r\nHost: web.test\r\n\r\n")
time.sleep(60)
PY
reader=$!
pids+=($reader)
for _ in $(seq 1 1200); do
  [ "$(ctl stats | awk '$1 == "send_timeouts_total" {print $2}')" = 1 ] && break
  sleep 0.05
done
[ "$(ctl stats | awk '$1 == "send_timeouts_total" {print $2}')" = 1 ] ||
  fail "a client that reads nothing was not closed: $(ctl stats)"
kill "$reader" 2>/dev/null || true
wait_connections 0
ctl --json status web | grep -E '"holds": *0' >/dev/null || fail "web is still held: $(ctl --json status web)"
[ "$(get web.test)" = "hello from web" ] || fail "web after the time-outs"
ok

# --- clients that leave while waiting for a connection to their guest ----
# The tarpit accepts and never answers; a few connections to it are made
# at a time (QEMU's forwards drop bursts of SYNs), so most of 30 requests
# wait for a connection. Their clients leave (close) at once: they must be
# released then, not kept until a connection would carry their requests
# (each half-open socket holds a slot of max-connections).
curl -s -m 1 -H "Host: tarpit.test" "$(url /)" >/dev/null || true # ready now
leavers=()
for _ in $(seq 1 30); do
  printf 'GET / HTTP/1.1\r\nHost: tarpit.test\r\n\r\n' |
    socat -t 0 - "TCP:127.0.0.1:$P" >/dev/null 2>&1 &
  leavers+=($!)
done
wait "${leavers[@]}" || true
sleep 0.5
held=$(ss -Htn state close-wait "sport = :$P" | wc -l)
[ "$held" -le 10 ] || fail "$held clients that left are still held"
ctl stop tarpit destroy >/dev/null # those whose requests reached it: 502
wait_connections 0
ok

# --- a reload that removes a vm takes its routes away --------------------
sed -i '/^\[vm api\]$/,/^http-path = \/api$/d' "$dir/http.conf"
ctl reload | grep -E "^api +removed" >/dev/null || fail "reload did not remove api"
[ "$(get web.test /api/v1)" = "hello from web" ] || fail "/api still goes to the removed vm"
# ...also one whose pool holds an idle connection (alias's address is an
# HTTP/1.1 server that keeps connections and outlives alias's own guest).
/usr/bin/python3 "$(dirname "$0")/keepalive_server.py" "$KA" &
pids+=($!)
for _ in $(seq 1 100); do get alias.test | grep keep-alive >/dev/null && break; sleep 0.05; done
[ "$(get alias.test)" = "keep-alive" ] || fail "alias: no answer"
# An upstream that runs by itself: routed like a vm, nothing summoned.
[ "$(get ext.test)" = "keep-alive" ] || fail "upstream ext.test: $(get ext.test)"
[ "$(get web.test /ext/x)" = "keep-alive" ] || fail "upstream web.test/ext: $(get web.test /ext/x)"
[ "$(get web.test /other)" = "hello from web" ] || fail "web.test beside its /ext upstream"
# What the guest gets (RFC 9110 7.6.1, 7.6.3 and the X-Forwarded-For list):
# two X-Forwarded-For fields make one list, with ours at its end.
curl -s -m 20 -H "Host: alias.test" -H "X-Forwarded-For: 192.0.2.1" \
  -H "X-Forwarded-For: 192.0.2.2" "$(url /headers)" >"$dir/fwd.txt"
grep -qx "X-Forwarded-For: 192.0.2.1, 192.0.2.2, 127.0.0.1" "$dir/fwd.txt" ||
  fail "X-Forwarded-For: $(grep -i forwarded-for "$dir/fwd.txt")"
# Fields named in Connection go no further, either way.
curl -s -m 20 -H "Host: alias.test" -H "Connection: X-Secret" -H "X-Secret: 1" \
  -H "X-Kept: 1" "$(url /headers)" >"$dir/conn.txt"
grep -q "^X-Kept: 1" "$dir/conn.txt" || fail "X-Kept was not forwarded"
! grep -qi "^X-Secret" "$dir/conn.txt" || fail "a field named in Connection was forwarded"
curl -s -m 20 -D - -o /dev/null -H "Host: alias.test" "$(url /conn)" >"$dir/conn-resp.txt"
grep -q "^HTTP/1.1 200" "$dir/conn-resp.txt" || fail "/conn: $(head -n 1 "$dir/conn-resp.txt")"
! grep -qi "^X-Private" "$dir/conn-resp.txt" || fail "a field the guest named in Connection reached the client"
ctl stop alias destroy >/dev/null
sed -i '/^\[vm alias\]$/,/^http-host = alias.test$/d' "$dir/http.conf"
ctl reload | grep -E "^alias +removed" >/dev/null || fail "reload did not remove alias"
kill -0 "$hpid" 2>/dev/null || fail "jitsu-http died removing a vm with a pooled connection"
[ "$(get web.test)" = "hello from web" ] || fail "the proxy did not survive removing alias"
ok

# --- statistics --------------------------------------------------------------
ctl stats >"$dir/stats.txt"
grep -Eq "requests_total +[1-9]" "$dir/stats.txt" || fail "stats: $(cat "$dir/stats.txt")"
grep -Eq "queue_overflows_total +[1-9]" "$dir/stats.txt" || fail "overflows not counted"
grep -Eq "responses_2xx_total +[1-9]" "$dir/stats.txt" || fail "2xx not counted"
ok
ctl stats --prometheus >"$dir/metrics.txt"
grep -Eq '^jitsu_http_requests_total [1-9][0-9]*$' "$dir/metrics.txt" ||
  fail "requests_total is not a whole number: $(grep requests_total "$dir/metrics.txt")"
grep -q '^# HELP jitsu_http_queue_wait_p99_seconds ' "$dir/metrics.txt" ||
  fail "latencies are not in seconds: $(grep queue_wait "$dir/metrics.txt")"
prom_check "$dir/metrics.txt"

# --- graceful drain: an in-flight request finishes after SIGTERM ----------
ctl stop slow destroy >/dev/null
curl -s -m 60 -o "$dir/late.txt" -H "Host: slow.test" "$(url /)" &
cpid=$!
wait_connections 1
kill -TERM "$hpid"
wait "$cpid" || fail "the in-flight request failed during the drain"
grep -q "hello from slow" "$dir/late.txt" || fail "drain: $(cat "$dir/late.txt")"
for _ in $(seq 1 1200); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.05; done
! kill -0 "$hpid" 2>/dev/null || fail "jitsu-http did not exit after draining"
wait "$hpid" || fail "jitsu-http exited with an error"
vg_check "$dir" || fail "memcheck found errors in jitsu-http"
ok

# --- two vms cannot claim one host (and prefix) -----------------------------
printf '[jitsu]\nstate-dir = %s/dup\n[http]\nlisten = 127.0.0.1:%s\n' "$dir" "$(free_port)" >"$dir/dup.conf"
printf '[vm a]\nexec = /bin/true\naddress = 127.0.0.1:1\nhttp-host = x.test\n' >>"$dir/dup.conf"
printf '[vm b]\nexec = /bin/true\naddress = 127.0.0.1:2\nhttp-host = X.test\n' >>"$dir/dup.conf"
if "$jhttp" -c "$dir/dup.conf" --no-control 2>"$dir/dup.err"; then
  fail "two vms with one host were accepted"
fi
grep -q "dup.conf:5: vm 'a': http-host x.test/ is vm 'b''s" "$dir/dup.err" || fail "dup: $(cat "$dir/dup.err")"
# A vm whose guest address is missing: its section's file:line.
printf '[jitsu]\nstate-dir = %s/noaddr\n[http]\nlisten = 127.0.0.1:%s\n' "$dir" "$(free_port)" >"$dir/noaddr.conf"
printf '[vm c]\nexec = /bin/true\nhttp-host = c.test\n' >>"$dir/noaddr.conf"
if "$jhttp" -c "$dir/noaddr.conf" --no-control 2>"$dir/noaddr.err"; then
  fail "a vm without an address was accepted"
fi
grep -q "noaddr.conf:5: vm 'c': http-backend (or address) must be IP:PORT" "$dir/noaddr.err" ||
  fail "no address: $(cat "$dir/noaddr.err")"
ok

tap_end
