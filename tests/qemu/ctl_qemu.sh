#!/bin/bash
# The qemu backend through processes: jitsu-ctl summon and snapshot, a
# controller killed with SIGKILL whose successor adopts the running QEMU
# (same pid, monitor working), and summons restored from the snapshot.
# usage: ctl_qemu.sh CONTROLLER JITSU_CTL PVH_GUEST
set -euo pipefail
controller=$1
ctl=$2
dir=$(mktemp -d /tmp/jitsu-ctlqemu-XXXXXX)
. "$(dirname "$0")/../integration/lib.sh"
cpids=()

cleanup() {
  for p in "${cpids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  kill_marked "$dir" # QEMU's command line holds the kernel's path in $dir
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cp "$3" "$dir/tiny.elf"
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
[vm tiny]
backend = qemu
kernel = $dir/tiny.elf
memory = 16M
net = none
ready = marker
stop-grace = 200ms
snapshot = $dir/tiny.img
CONF
c() { "$ctl" -s "$dir/state/control.sock" "$@"; }
vg_init "$dir"
start_controller() {
  "${VG[@]}" "$controller" "$dir/jitsu.conf" >>"$dir/controller.log" 2>&1 &
  cpids+=($!)
  for _ in $(seq 1 100); do
    c version >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  cat "$dir/controller.log" >&2
  fail "the controller did not start"
}

start_controller
out=$(c snapshot tiny 2>&1) && fail "snapshot of a stopped vm worked"
echo "$out" | grep "it is stopped" >/dev/null || fail "snapshot error: $out"
c summon tiny --wait | grep "tiny: ready" >/dev/null || fail "summon"
pid=$(pgrep -f -- "$dir/tiny.elf")
c snapshot tiny | grep "tiny: ready" >/dev/null || fail "snapshot"
[ -s "$dir/tiny.img" ] && [ -s "$dir/tiny.img.args" ] || fail "no image"

kill -9 "${cpids[0]}"
wait "${cpids[0]}" 2>/dev/null || true # its lock on the state directory goes with it
start_controller
# The adoption asks QEMU's monitor off the definition: starting until then.
for _ in $(seq 1 100); do
  c status tiny | grep "tiny: starting" >/dev/null || break
  sleep 0.1
done
c status tiny | grep "tiny: ready" >/dev/null || fail "not adopted: $(c status tiny)"
c status tiny | grep "qemu pid $pid" >/dev/null || fail "another QEMU: $(c status tiny)"
c suspend tiny | grep "tiny: suspended" >/dev/null || fail "suspend after adoption"
c resume tiny | grep "tiny: ready" >/dev/null || fail "resume after adoption"
c stop tiny destroy | grep "tiny: stopped" >/dev/null || fail "destroy"
! pgrep -f -- "$dir/tiny.elf" >/dev/null || fail "QEMU left after destroy"

# Later summons restore the image: the guest does not boot (or print its
# marker) again.
for _ in 1 2; do
  c summon tiny --wait | grep "tiny: ready" >/dev/null || fail "summon from image"
  c stop tiny destroy >/dev/null
done
[ "$(grep -c JITSU_READY "$dir/state/qemu/tiny.console")" = 1 ] ||
  fail "booted again: $(cat "$dir/state/qemu/tiny.console")"
kill -TERM "${cpids[1]}"
wait "${cpids[1]}" || fail "the controller exited with an error after SIGTERM"
vg_check "$dir" || fail "memcheck found errors in the controller"
echo "ok"
