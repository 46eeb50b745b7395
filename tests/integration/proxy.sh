#!/bin/bash
# Proxying socket triggers on the process backend, with a guest that binds
# its own port (socket = tcp:PUBLIC to=GUEST): the first connection is
# answered; 200 connections opened during one cold start are all served by
# one spawn; a vm that cannot start gets its waiting connections closed at
# once (a reset, not the client's time-out) and later ones refused during
# its back-off, with one log line per failure; steady traffic keeps the
# guest up past its idle-timeout, and it stops once the traffic ends.
# usage: proxy.sh CONTROLLER JITSU-CTL HELLO
set -euo pipefail
. "$(dirname "$0")/lib.sh"
controller=$1
ctl_bin=$2
hello=$3
for tool in curl ss; do
  command -v "$tool" >/dev/null || {
    echo "1..0 # SKIP $tool is not installed"
    exit 0
  }
done
test_dir proxy
vg_init "$dir"
pub=$(free_port) gport=$(free_port) bad=$(free_port) badg=$(free_port)
hport=$(free_port) upub=$(free_port) ug=$(free_port) hb=$(free_port)
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
control-socket = $dir/ctl.sock

[vm h]
exec = $hello --listen 127.0.0.1:$gport --name h --boot-ms 300 --record $dir/starts
ready = tcp:127.0.0.1:$gport
socket = tcp:127.0.0.1:$pub to=127.0.0.1:$gport
stop-grace = 1s
idle-timeout = 3s
idle-action = destroy

[vm hand]
exec = $hello --name hand --record $dir/starts-hand
socket = tcp:127.0.0.1:$hport
ready = notify
stop-grace = 1s
idle-timeout = 3s
idle-action = destroy

[vm echo]
exec = $hello --listen udp:127.0.0.1:$ug --name u --boot-ms 300 --record $dir/starts-u
ready = notify
socket = udp:127.0.0.1:$upub to=127.0.0.1:$ug

[vm handbroken]
exec = /bin/false
socket = tcp:127.0.0.1:$hb
ready = notify

[vm broken]
exec = /bin/false
ready = tcp:127.0.0.1:$badg
ready-timeout = 5s
socket = tcp:127.0.0.1:$bad to=127.0.0.1:$badg
CONF
cp "$dir/jitsu.conf" "$dir/base.conf"
sp=$(free_port) sg=$(free_port)
cat >>"$dir/jitsu.conf" <<CONF

[vm slow]
exec = $hello --listen 127.0.0.1:$sg --name slow --boot-ms 3000
ready = tcp:127.0.0.1:$sg
socket = tcp:127.0.0.1:$sp to=127.0.0.1:$sg
CONF
ctl() { "$ctl_bin" -c "$dir/jitsu.conf" "$@"; }
fail() {
  echo "FAIL: $*" >&2
  tail -n 30 "$dir/controller.err" >&2 || true
  exit 1
}
"${VG[@]}" "$controller" "$dir/jitsu.conf" </dev/null >/dev/null 2>"$dir/controller.err" &
pids+=($!)
for _ in $(seq 1 400); do ctl list >/dev/null 2>&1 && break; sleep 0.05; done
ctl list >/dev/null || fail "the controller did not start"
state() { ctl list | awk -v vm="$1" '$1 == vm {print $3}'; }
starts() { [ -f "$dir/starts" ] && wc -l <"$dir/starts" || echo 0; }

# 1. Nothing runs, yet the first connection is answered.
[ "$(state h)" = stopped ] || fail "h is $(state h) before any connection"
body=$(curl -sS --max-time 20 "http://127.0.0.1:$pub/") || fail "first connection"
echo "$body" | grep "hello from h" >/dev/null || fail "unexpected answer: $body"
[ "$(starts)" -eq 1 ] || fail "$(starts) starts for the first connection"
tap_ok "the first connection to a stopped vm summons it and is answered"

# 2. 200 connections during one cold start: all served, one spawn.
ctl stop h destroy >/dev/null
urls=()
for i in $(seq 1 200); do urls+=("http://127.0.0.1:$pub/$i"); done
curl -sS --max-time 30 --parallel --parallel-immediate --parallel-max 200 \
  -o /dev/null -w '%{http_code}\n' "${urls[@]}" >"$dir/codes" 2>"$dir/curl.err" || true
ok=$(grep -c '^200$' "$dir/codes" || true)
[ "$ok" -eq 200 ] || fail "$ok of 200 connections served: $(sort "$dir/codes" | uniq -c | tr '\n' ' ') $(head -3 "$dir/curl.err")"
[ "$(starts)" -eq 2 ] || fail "$(($(starts) - 1)) spawns for 200 connections"
tap_ok "200 connections opened during one cold start: all served, 1 spawn"

# 3. A vm that cannot start: its connection is closed at once (curl sees
# the reset, not its own time-out), the next one is refused during the
# back-off without a new start, and the failure is logged once.
s=0
curl -sS --max-time 20 "http://127.0.0.1:$bad/" >/dev/null 2>"$dir/bad.err" || s=$?
[ "$s" -ne 0 ] && [ "$s" -ne 28 ] || fail "connection to a failing vm: curl exit $s: $(cat "$dir/bad.err")"
s=0
curl -sS --max-time 20 "http://127.0.0.1:$bad/" >/dev/null 2>"$dir/bad.err" || s=$?
[ "$s" -ne 0 ] && [ "$s" -ne 28 ] || fail "connection during the back-off: curl exit $s"
n=$(grep -c "vm broken: summon for a connection failed" "$dir/controller.err" || true)
[ "$n" -eq 1 ] || fail "$n failure lines for one failed start"
n=$(grep -c "vm broken: stopped -> starting\|vm broken: failed -> starting" "$dir/controller.err" || true)
[ "$n" -eq 1 ] || fail "$n starts of the failing vm for two connections"
sleep 2
n=$(grep -c "vm broken: failed -> starting" "$dir/controller.err" || true)
[ "$n" -eq 0 ] || fail "the failing vm is retried without connections ($n)"
tap_ok "a vm that cannot start: connections reset at once, back-off, one log line"

# The same with fd handoff: the connection waiting in the kernel's queue
# is reset, not left to the client's time-out, and nothing loops.
s=0
curl -sS --max-time 20 "http://127.0.0.1:$hb/" >/dev/null 2>"$dir/bad.err" || s=$?
[ "$s" -ne 0 ] && [ "$s" -ne 28 ] || fail "handed socket of a failing vm: curl exit $s: $(cat "$dir/bad.err")"
sleep 3
n=$(grep -c "vm handbroken: stopped -> starting\|vm handbroken: failed -> starting" "$dir/controller.err" || true)
[ "$n" -eq 1 ] || fail "$n starts of the failing vm for one connection"
grep -q "vm handbroken: not started: 1 waiting connection" "$dir/controller.err" ||
  fail "the reset is not logged"
tap_ok "fd handoff, a vm that cannot start: the waiting connection is reset, no retry loop"

# 4. Steady traffic (a request every 0.5 s for 6 s, idle-timeout 3 s) keeps
# the guest up; once it ends, the idle policy stops it.
steady_then_idle "http://127.0.0.1:$pub/" h starts
tap_ok "steady traffic keeps the guest past idle-timeout; it stops after"

# 5. The same with fd handoff (the guest serves the socket; the library
# samples its arrivals and counts its open connections): steady traffic
# keeps it; a connection left open past idle-timeout holds it.
starts_hand() { [ -f "$dir/starts-hand" ] && wc -l <"$dir/starts-hand" || echo 0; }
steady_then_idle "http://127.0.0.1:$hport/" hand starts_hand
tap_ok "fd handoff: steady traffic keeps the guest past idle-timeout; it stops after"
curl -sS --max-time 10 -o /dev/null "http://127.0.0.1:$hport/" || fail "summon hand"
exec {conn}<>"/dev/tcp/127.0.0.1/$hport" # hello waits 5 s for its request
sleep 4.5
[ "$(state hand)" = ready ] || fail "hand is $(state hand) with a connection open"
exec {conn}>&-
tap_ok "fd handoff: an open connection holds the guest past idle-timeout"

# 6. UDP: the first datagram summons the guest, is held while it starts
# (300 ms), and is answered; the flow's next datagrams go straight on.
udp_ask() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
answers = []
for i in range(3):
    s.sendto(b"ping %d" % i, ("127.0.0.1", int(sys.argv[1])))
    answers.append(s.recvfrom(512)[0].decode().strip())
print(" / ".join(answers))
PY
}
out=$(udp_ask "$upub") || fail "no answer through the udp trigger"
[ "$out" = "hello from u / hello from u / hello from u" ] || fail "udp answers: $out"
[ "$(wc -l <"$dir/starts-u")" -eq 1 ] || fail "$(wc -l <"$dir/starts-u") spawns for one flow"
tap_ok "udp: the first datagram summons the guest, is not lost, and is answered"

# 7. Bad sockets are rejected at load with the line.
cat >"$dir/bad.conf" <<CONF
[jitsu]
state-dir = $dir/state2
[vm x]
exec = $hello
socket = tcp:127.0.0.1:$pub to=nowhere
CONF
out=$("$controller" "$dir/bad.conf" 2>&1 </dev/null) && fail "to=nowhere loaded"
echo "$out" | grep "bad.conf:5: .*to= needs a numeric HOST:PORT" >/dev/null || fail "no file:line: $out"
tap_ok "a bad to= is an error with its file and line"

# 8. Lifetimes: a reload that removes a vm while a connection waits for
# it resets that connection; a controller that ends with a connection
# relayed lets go of everything (memcheck and ASan watch both).
curl -sS --max-time 20 -o /dev/null "http://127.0.0.1:$sp/" 2>"$dir/slow.err" &
cpid=$!
sleep 0.5
cp "$dir/base.conf" "$dir/jitsu.conf"
ctl reload >/dev/null || fail "reload"
s=0
wait "$cpid" || s=$?
[ "$s" -ne 0 ] && [ "$s" -ne 28 ] || fail "a connection to a removed vm: curl exit $s"
for _ in $(seq 1 100); do ctl list | grep "^slow " >/dev/null || break; sleep 0.1; done
! ctl list | grep "^slow " >/dev/null || fail "slow is still defined after the reload"
exec {c2}<>"/dev/tcp/127.0.0.1/$pub"
sleep 0.5
[ "$(state h)" = ready ] || fail "h is $(state h) with a connection relayed"
tap_ok "a reload resets a waiting connection; relays are let go at exit"

grep -v "^$" "$dir/controller.err" | sed "s/^/# /" | grep -i "broken\|idle" >&2 || true
kill "${pids[0]}"
wait "${pids[0]}" || fail "the controller exited with an error"
pids=()
exec {c2}>&-
vg_check "$dir" || fail "memcheck found errors in the controller"
tap_end
