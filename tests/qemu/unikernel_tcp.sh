#!/bin/bash
# The unikernel behind a proxying TCP trigger alone (no HTTP frontend; the
# example controller loads the config): the first connection is answered;
# 200 connections opened during one cold start are all served by one
# spawn; a vm that cannot start gets its waiting connection closed at once;
# steady traffic every 0.5 s keeps the guest past its idle-timeout (3 s),
# and it stops once the traffic ends.
# usage: unikernel_tcp.sh CONTROLLER JITSU_CTL UNIKERNEL
set -euo pipefail
controller=$1
ctl_bin=$2
. "$(dirname "$0")/../integration/lib.sh"
command -v curl >/dev/null || {
  echo "1..0 # SKIP curl is not installed"
  exit 0
}
test_dir unitcp
fail() {
  echo "FAIL: $*" >&2
  tail -n 30 "$dir/controller.err" >&2 || true
  exit 1
}
cp "$3" "$dir/uni.elf"
: >"$dir/broken.elf" # QEMU cannot load an empty kernel
pub=$(free_port) gp=$(free_port) bad=$(free_port) badg=$(free_port)
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
control-socket = $dir/ctl.sock
[vm uni]
backend = qemu
kernel = $dir/uni.elf
cmdline = jitsu.body=through%20the%20trigger%0A
memory = 16M
tsc-hint = yes
forward = tcp:127.0.0.1:$gp-:80
ready = marker+http:127.0.0.1:$gp/
stop-grace = 200ms
address = 127.0.0.1:$gp
socket = tcp:127.0.0.1:$pub
# it loses connections when more than about 8 open at once (slirp+its stack)
socket-guest-conns = 8
idle-timeout = 3s
idle-action = destroy
[vm broken]
backend = qemu
kernel = $dir/broken.elf
memory = 16M
net = none
ready = marker
ready-timeout = 10s
socket = tcp:127.0.0.1:$bad to=127.0.0.1:$badg
CONF
ctl() { "$ctl_bin" -c "$dir/jitsu.conf" "$@"; }
vg_init "$dir"
"${VG[@]}" "$controller" "$dir/jitsu.conf" </dev/null >/dev/null 2>"$dir/controller.err" &
pids+=($!)
for _ in $(seq 1 200); do ctl list >/dev/null 2>&1 && break; sleep 0.05; done
ctl list >/dev/null || fail "the controller did not start"
state() { ctl list | awk -v vm="$1" '$1 == vm {print $3}'; }
spawns() { ctl --json status uni | sed -n 's/^  "cold_starts": \([0-9]*\).*/\1/p'; }

[ "$(state uni)" = stopped ] || fail "uni is $(state uni) before any connection"
body=$(curl -sS --max-time 30 "http://127.0.0.1:$pub/") || fail "first connection"
[ "$body" = "through the trigger" ] || fail "body: $body"
[ "$(spawns)" = 1 ] || fail "$(spawns) spawns for the first connection"
tap_ok "the first connection boots the unikernel and is answered"

ctl stop uni destroy >/dev/null
urls=()
for i in $(seq 1 200); do urls+=("http://127.0.0.1:$pub/"); done
curl -sS --max-time 60 --parallel --parallel-immediate --parallel-max 200 -H "Connection: close" \
  -o /dev/null -w '%{http_code}\n' "${urls[@]}" >"$dir/codes" 2>"$dir/curl.err" || true
ok=$(grep -c '^200$' "$dir/codes" || true)
[ "$ok" -eq 200 ] || fail "$ok of 200 connections served: $(sort "$dir/codes" | uniq -c | tr '\n' ' ')"
[ "$(spawns)" = 2 ] || fail "$(($(spawns) - 1)) spawns for 200 connections"
tap_ok "200 connections during one cold start: all served, 1 spawn"

s=0
curl -sS --max-time 30 "http://127.0.0.1:$bad/" >/dev/null 2>"$dir/bad.err" || s=$?
[ "$s" -ne 0 ] && [ "$s" -ne 28 ] || fail "connection to a vm that cannot start: curl exit $s"
grep -q "vm broken: summon for a connection failed" "$dir/controller.err" ||
  fail "the failure is not logged"
tap_ok "a vm that cannot start: its connection is closed, not left hanging"

steady_then_idle "http://127.0.0.1:$pub/" uni spawns
tap_ok "steady traffic keeps the unikernel past idle-timeout; it stops after"

kill "${pids[0]}"
wait "${pids[0]}" || fail "the controller exited with an error"
pids=()
vg_check "$dir" || fail "memcheck found errors in the controller"
tap_end
