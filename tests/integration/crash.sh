#!/bin/bash
# Crash consistency: a controller is SIGKILLed at a random moment (0-10 ms,
# sometimes up to 60 ms, after it was asked to summon, suspend, resume or
# stop a guest: inside the fork-to-exec window, the readiness wait, a
# suspend, a snapshot or a stop) and started again, CYCLES times. After each
# restart every guest must be adopted or cleanly gone: no orphan (a guest
# the controller does not know), no double spawn (two guests of one vm), no
# failed restart (the guest's socket still held by an orphan).
# usage: crash.sh CONTROLLER JITSU-CTL process HELLO [CYCLES]
#        crash.sh CONTROLLER JITSU-CTL qemu PVH-GUEST [CYCLES]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
controller=$1
ctl_bin=$2
backend=$3
guest=$4
cycles=${5:-100}
[ -z "${JITSU_TEST_VALGRIND:-}" ] || cycles=$((cycles / 5)) # memcheck: slower
dir=$(mktemp -d /tmp/jitsu-crash-XXXXXX)
vg_init "$dir"
cpid=0
cleanup() {
  [ "$cpid" -gt 0 ] && kill -9 "$cpid" 2>/dev/null || true
  kill_marked "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  tail -n 20 "$dir/controller.err" >&2 || true
  exit 1
}
port=$(free_port)
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
control-socket = $dir/ctl.sock
CONF
slow=1 # QEMU under TCG takes tens of ms where a process takes one
if [ "$backend" = qemu ]; then
  slow=15
  if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "1..0 # SKIP qemu-system-x86_64 is not installed"
    exit 0
  fi
  cp "$guest" "$dir/tiny.elf"
  mark="$dir/tiny.elf" # QEMU's command line holds the kernel's path
  cat >>"$dir/jitsu.conf" <<CONF
[vm g]
backend = qemu
kernel = $dir/tiny.elf
memory = 16M
net = none
ready = marker
stop-grace = 500ms
snapshot = $dir/tiny.img
CONF
else
  mark="--name g --boot-ms 30 --record $dir/starts"
  cat >>"$dir/jitsu.conf" <<CONF
[vm g]
exec = $guest $mark
socket = tcp 127.0.0.1:$port
ready = notify
stop-grace = 2s
CONF
fi
ctl() { "$ctl_bin" -c "$dir/jitsu.conf" "$@"; }
orphans=0 doubles=0 failed_restarts=0 adopted=0 gone=0 phantoms=0

start_controller() {
  "${VG[@]}" "$controller" "$dir/jitsu.conf" </dev/null >"$dir/controller.out" 2>>"$dir/controller.err" &
  cpid=$!
  for _ in $(seq 1 1200); do
    ctl list >/dev/null 2>&1 && return 0
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.025
  done
  failed_restarts=$((failed_restarts + 1))
  fail "the controller did not restart (cycle $cycle)"
}

# The guests of g alive now (a zombie or a dead process does not count).
# A match whose parent matches too is not a second guest: under ASan, a
# guest's leak check at exit clones a tracer that shares its memory, and so
# its command line, for a few milliseconds.
guests() {
  local p st ppid all
  all=" $(pgrep -f -- "$mark" | tr '\n' ' ' || true) "
  for p in $all; do
    read -r _ _ st ppid _ 2>/dev/null <"/proc/$p/stat" || continue
    [ -n "$st" ] && [ "$st" != Z ] && [[ $all != *" $ppid "* ]] && echo "$p"
  done
  return 0
}

# What the restarted controller knows against what runs.
check() {
  local live n state pid
  live=$(guests)
  n=$(echo -n "$live" | grep -c . || true)
  state=$(ctl list | awk '$1 == "g" {print $3}')
  pid=$(ctl --json status g | sed -n 's/.*"instance": "[a-z ]*pid \([0-9]*\).*/\1/p')
  if [ "$n" -gt 1 ]; then
    doubles=$((doubles + 1))
    echo "# cycle $cycle: $n guests alive: $(echo $live)" >&2
    ps -o pid,ppid,stat,lstart,args -p "$(echo $live | tr ' ' ,)" | sed 's/^/# /' >&2 || true
  fi
  case $state in
  stopped | failed)
    if [ "$n" -gt 0 ]; then
      orphans=$((orphans + 1))
      echo "# cycle $cycle: g is $state but pid $(echo $live) runs" >&2
    else
      gone=$((gone + 1))
    fi
    ;;
  *)
    if [ "$n" -eq 0 ]; then
      phantoms=$((phantoms + 1))
      echo "# cycle $cycle: g is $state but no guest runs" >&2
    elif ! echo "$live" | grep -x "$pid" >/dev/null; then
      orphans=$((orphans + 1))
      echo "# cycle $cycle: g is $state as pid $pid, but $(echo $live) runs" >&2
    else
      adopted=$((adopted + 1))
    fi
    ;;
  esac
}

actions=(summon suspend resume stop)
[ "$backend" != qemu ] || actions+=(snapshot)
for cycle in $(seq 1 "$cycles"); do
  start_controller
  check
  # Every other cycle a cold summon (the guest stopped first), killed in its
  # first 6 ms: the fork-to-exec window, then the readiness wait.
  action=cold
  [ $((cycle % 2)) -eq 0 ] || action=${actions[$((RANDOM % ${#actions[@]}))]}
  if [ "$action" = cold ]; then
    ctl stop g destroy >/dev/null 2>&1 || true
  fi
  case $action in
  summon | cold) ctl summon g --wait >/dev/null 2>&1 & ;;
  stop) ctl stop g >/dev/null 2>&1 & ;;
  *) ctl "$action" g >/dev/null 2>&1 & ;;
  esac
  client=$!
  if [ "$action" = cold ]; then
    ms=$((RANDOM % 7 * slow))
  elif [ $((RANDOM % 4)) -eq 0 ]; then
    ms=$(((10 + RANDOM % 51) * slow))
  else
    ms=$((RANDOM % 11 * slow))
  fi
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  kill -9 "$cpid"
  wait "$cpid" 2>/dev/null || true
  cpid=0
  wait "$client" 2>/dev/null || true
done
cycle=end
start_controller
check
ctl stop g destroy >/dev/null
for _ in $(seq 1 600); do [ -z "$(guests)" ] && break; sleep 0.05; done
[ -z "$(guests)" ] || fail "a guest of g runs after the last stop: $(guests)"
kill "$cpid"
wait "$cpid" || fail "the last controller exited with an error"
cpid=0
echo "# crash consistency: $cycles kills: $orphans orphans, $doubles double spawns," \
  "$failed_restarts failed restarts, $phantoms phantoms; $adopted times adopted," \
  "$gone times cleanly gone"
[ $((orphans + doubles + failed_restarts + phantoms)) -eq 0 ] ||
  fail "$orphans orphans, $doubles double spawns, $phantoms phantoms"
vg_check "$dir" || fail "memcheck found errors in the controller"
tap_ok "$cycles controller kills: every guest adopted or cleanly gone"
tap_end
