#!/bin/bash
# A controller killed with SIGKILL and started again adopts its running
# guest: no second spawn, no orphan, and the guest stays reachable.
# usage: adopt_after_sigkill.sh CONTROLLER HELLO
set -euo pipefail
controller=$1
hello=$2
dir=$(mktemp -d /tmp/jitsu-adopt-XXXXXX)
. "$(dirname "$0")/lib.sh"
vg_init "$dir"
cpids=()
guest=0

cleanup() {
  for p in "${cpids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # End the guest only if it is the one this test started.
  if [ "$guest" -gt 0 ] && grep -qs "$dir" "/proc/$guest/cmdline"; then
    kill -9 -- "-$guest" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_for FILE PATTERN: up to 60 s for a line matching PATTERN.
wait_for() {
  for _ in $(seq 1 1200); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "--- $1:" >&2; cat "$1" >&2 || true
  fail "no '$2' in $1"
}

cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
[vm web]
exec = $hello --name web --record $dir/starts
socket = unix $dir/web.sock
ready = notify
CONF

start_controller() { # $1: a name for its files
  mkfifo "$dir/$1.in"
  "${VG[@]}" "$controller" "$dir/jitsu.conf" <"$dir/$1.in" >"$dir/$1.out" 2>"$dir/$1.err" &
  cpids+=($!)
  exec {fd}>"$dir/$1.in"
  wait_for "$dir/$1.out" "^ready"
}

start_controller first
echo "summon web" >&$fd
wait_for "$dir/first.out" "^ok summon web"
guest=$(head -n1 "$dir/starts")
body=$(curl -s -m 5 --unix-socket "$dir/web.sock" http://web/)
[ "$body" = "hello from web" ] || fail "first answer: '$body'"

kill -9 "${cpids[0]}"
wait "${cpids[0]}" 2>/dev/null || true
[ -d "/proc/$guest" ] || fail "the guest died with its controller"

start_controller second
# Pipelined commands, an unknown one first: each gets its own answer.
printf 'bogus web\nstatus web\n' >&$fd
wait_for "$dir/second.out" "^status web"
line=$(grep "^status web" "$dir/second.out")
case "$line" in
*"web ready instance='pid $guest' adopted=1 spawns=0"*) ;;
*) fail "not adopted: $line" ;;
esac
grep -qx "error bogus: unknown command (status, summon, stop, suspend, resume, quit)" "$dir/second.out" ||
  fail "an unknown command: $(head -n 3 "$dir/second.out")"
body=$(curl -s -m 5 --unix-socket "$dir/web.sock" http://web/)
[ "$body" = "hello from web" ] || fail "answer after adoption: '$body'"
[ "$(wc -l <"$dir/starts")" -eq 1 ] || fail "a second guest was spawned"

echo "stop web" >&$fd
wait_for "$dir/second.out" "^ok stop web"
alive() { # a zombie waiting for its new parent to reap it counts as gone
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
for _ in $(seq 1 600); do alive "$guest" || break; sleep 0.05; done
! alive "$guest" || fail "guest $guest still runs after stop"
echo quit >&$fd
wait "${cpids[1]}" || fail "the second controller exited with an error"
vg_check "$dir" || fail "memcheck found errors in the controller"
echo "adoption after SIGKILL: 1 passed, 0 failed"
