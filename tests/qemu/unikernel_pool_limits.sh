#!/bin/bash
# Pools within the limits: spares count as live guests against max-live
# (and fill within max-starting), and give way to summons. Two vms with
# pool = 2 under max-live = 3: at most 3 spares are made; each summon
# ends other spares when it needs their room, so that live guests and
# spares never exceed 3; status shows the pool's resident memory.
# usage: unikernel_pool_limits.sh JITSU_HTTP JITSU_CTL UNIKERNEL
set -euo pipefail
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/uni_lib.sh"
uni_begin unilimit "$@"
pa=$(free_port)
pb=$(free_port)
{
  printf '[jitsu]\nstate-dir = %s/state\nmax-live = 3\n' "$dir"
  printf '[http]\nlisten = 127.0.0.1:%s\n' "$hp"
  uni_vm a page%20a%0A "$pa" a.test "pool = 2"
  uni_vm b page%20b%0A "$pb" b.test "pool = 2"
} >"$dir/jitsu.conf"
c() { "$ctl" -s "$dir/state/control.sock" "$@"; }
get() { curl -s -m 20 -H "Host: $1" "http://127.0.0.1:$hp/"; }
# QEMUs alive now: the spares (by their records) and the vms' guests.
spares() {
  local n=0 f
  for f in "$dir"/state/qemu/*.spare*.pid; do
    [ -f "$f" ] && kill -0 "$(awk '{print $1; exit}' "$f")" 2>/dev/null && n=$((n + 1))
  done
  echo $n
}
live() { c list | grep -c " ready " || true; }
# over SECONDS: sample spares + live guests, fail above 3.
watch_bound() {
  for _ in $(seq 1 $(($1 * 10))); do
    t=$(($(spares) + $(live)))
    [ "$t" -le 3 ] || fail "$(spares) spares and $(live) live guests: more than max-live 3"
    sleep 0.1
  done
}
vg_init "$dir"
"${VG[@]}" "$http" -c "$dir/jitsu.conf" >>"$dir/http.log" 2>&1 &
hpid=$!
for _ in $(seq 1 100); do c version >/dev/null 2>&1 && break; sleep 0.05; done
for _ in $(seq 1 300); do
  [ "$(grep -c 'pool: spare[12] ready' "$dir/http.log" || true)" -ge 3 ] && break
  sleep 0.1
done
[ "$(grep -c 'pool: spare[12] ready' "$dir/http.log" || true)" -ge 3 ] || fail "3 spares did not fill"
watch_bound 2
[ "$(spares)" = 3 ] || fail "$(spares) spares, not 3 (max-live 3, two pools of 2)"
tap_ok "two pools of 2 under max-live 3: 3 spares"

[ "$(get b.test)" = "page b" ] || fail "b was not answered"
watch_bound 3
tap_ok "b summoned: live guests and spares stay within max-live ($(spares) spares)"

[ "$(get a.test)" = "page a" ] || fail "a was not answered"
watch_bound 3
[ "$(live)" = 2 ] || fail "$(live) live, not 2"
grep -q "needs its room" "$dir/http.log" || fail "no spare gave way to a summon"
tap_ok "a summoned too: 2 live, $(spares) spare, spares gave way"

# The pool's memory is in the status.
c status a | grep -E "pool [0-9]/2 ready \(resident [0-9]+ MiB\)" >/dev/null ||
  fail "status shows no pool memory: $(c status a)"
tap_ok "status shows the pool's resident memory ($(c status a | grep -o 'resident [0-9]* MiB'))"
kill -TERM "$hpid"
wait "$hpid" || fail "jitsu-http exited with an error after SIGTERM"
hpid=0
vg_check "$dir" || fail "memcheck found errors in jitsu-http"
tap_end
