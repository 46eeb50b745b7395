#!/bin/bash
# Pools of spare QEMUs (pool = N): the unikernel behind jitsu-http with a
# pool of 2. Spares are warmed up through a forward of their own before
# they are paused. Summons take spares (their QEMUs become the vm's) and the
# pool refills; a spare that dies is replaced; a reload replaces the pool; a vm whose spares cannot
# be made falls back to a cold start; a controller killed with SIGKILL
# leaves spares that the next one adopts (each handed out once) or, when
# the definition changed meanwhile, ends; a controller that exits ends
# its spares and leaves only the vm's guest.
# usage: unikernel_pool.sh JITSU_HTTP JITSU_CTL UNIKERNEL
set -euo pipefail
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/uni_lib.sh"
uni_begin unipool "$@"
gp=$(free_port)
cp_=$(free_port)
{
  printf '[jitsu]\nstate-dir = %s/state\n[http]\nlisten = 127.0.0.1:%s\n' "$dir" "$hp"
  uni_vm uni pooled%20page%0A "$gp" uni.test "pool = 2"
  # No marker in its readiness and no snapshot image yet: no spares.
  uni_vm cold cold%20page%0A "$cp_" cold.test "pool = 1" \
    "snapshot = $dir/not-made-yet.img"
} >"$dir/jitsu.conf"
sed -i "s|^ready = marker+http:127.0.0.1:$cp_/|ready = http:127.0.0.1:$cp_/|" "$dir/jitsu.conf"
vg_init "$dir"
start_http() {
  touch "$dir/http.log"
  from=$(wc -l <"$dir/http.log")
  "${VG[@]}" "$http" -c "$dir/jitsu.conf" -v >>"$dir/http.log" 2>&1 & # -v: "filling" lines
  hpid=$!
  for _ in $(seq 1 100); do c version >/dev/null 2>&1 && break; sleep 0.05; done
}
c() { "$ctl" -s "$dir/state/control.sock" "$@"; }
get() { curl -s -m 20 -H "Host: $1" "http://127.0.0.1:$hp/"; }
# wait_log N TEXT: until TEXT is in the log N times (30 s at most),
# counting from line $from + 1 (the current controller's lines).
from=0
logged() { tail -n "+$((from + 1))" "$dir/http.log" | grep -c -- "$1" || true; }
wait_log() {
  for _ in $(seq 1 300); do
    [ "$(logged "$2")" -ge "$1" ] && return 0
    kill -0 "$hpid" 2>/dev/null || fail "jitsu-http exited"
    sleep 0.1
  done
  fail "waited for $1 x '$2'"
}
spare_pid() { head -n 1 "$dir/state/qemu/uni.spare$1.pid" 2>/dev/null | awk '{print $1}'; }
taken() { c status uni | grep -o "[0-9]* taken" | awk '{print $1}'; }
guest_pid() { c status uni | grep -o "qemu pid [0-9]*" | awk '{print $3}'; }
stop_uni() {
  c stop uni >/dev/null
  for _ in $(seq 1 100); do
    [ "$(c status uni | awk 'NR == 1 {print $2}')" = stopped ] && return 0
    sleep 0.1
  done
  fail "uni did not stop"
}

start_http
wait_log 1 "uni: pool: spare1 ready"
wait_log 1 "uni: pool: spare2 ready"
tap_ok "two spares filled and paused"

# Each was warmed up first: ten answers through a forward of its own,
# which is gone once it is paused. With the vm stopped, one of them holds
# the vm's forward (127.0.0.1:$gp, its only port); the other listens
# nowhere.
[ "$(logged "uni: pool: spare[12] ready (QEMU pid [0-9]*, warmed up by 10 answers)")" = 2 ] ||
  fail "the spares were not warmed up: $(grep "pool: spare" "$dir/http.log")"
# listening PID: the local addresses QEMU PID listens on, one a line
listening() { ss -Htlnp | grep "pid=$1," | awk '{print $4}' || true; }
# wait_holder: set holder to the spare (1 or 2) that listens on the vm's
# forward, within 5 s.
wait_holder() {
  holder=
  for _ in $(seq 1 50); do
    for n in 1 2; do
      [ "$(listening "$(spare_pid $n)")" = "127.0.0.1:$gp" ] && holder=$n
    done
    [ -n "$holder" ] && return 0
    sleep 0.1
  done
  fail "no spare holds the vm's forward 127.0.0.1:$gp: $(ss -Htlnp | grep qemu)"
}
wait_holder
other=$((3 - holder))
p=$(spare_pid $other)
[ -n "$p" ] || fail "no record of spare$other"
[ -z "$(listening "$p")" ] || fail "paused spare$other (QEMU $p) listens: $(listening "$p")"
grep -x held "$dir/state/qemu/uni.spare$holder.fwd" >/dev/null ||
  fail "spare$holder's fwd file: $(cat "$dir/state/qemu/uni.spare$holder.fwd" 2>&1)"
tap_ok "both spares were warmed up through their own forward, since removed; spare$holder holds the vm's"

# The stats count them and the memory they hold.
prom=$(c stats --prometheus)
grep -x 'jitsu_vm_spares{vm="uni"} 2' <<<"$prom" >/dev/null || fail "stats: $(grep spare <<<"$prom")"
grep -x 'jitsu_spares 2' <<<"$prom" >/dev/null || fail "stats: $(grep spare <<<"$prom")"
mem=$(sed -n 's/^jitsu_vm_spare_memory_bytes{vm="uni"} //p' <<<"$prom")
[ "${mem:-0}" -gt $((4 * 1048576)) ] || fail "the spares' memory is '$mem' bytes"
c stats uni | grep "spares: 2 (0 filling), holding [1-9][0-9]* MiB" >/dev/null ||
  fail "jitsu-ctl stats: $(c stats uni)"
c status uni | grep "spares: 2 (0 filling), holding [1-9][0-9]* MiB" >/dev/null ||
  fail "jitsu-ctl status of the stopped vm: $(c status uni)"
tap_ok "stats and status: 2 spares holding $((mem / 1048576)) MiB"

# A connection to the vm's forward while it is stopped waits in the
# paused spare that holds it; a summon takes that spare (no cold start,
# its QEMU is the vm's) and the waiting request is answered.
s1=$(spare_pid $holder)
curl -s -m 20 -o "$dir/early.out" "http://127.0.0.1:$gp/" &
early=$!
sleep 0.5
kill -0 "$early" 2>/dev/null || fail "a request to the stopped vm's forward did not wait"
[ "$(get uni.test)" = "pooled page" ] || fail "the first summon was not answered"
wait "$early" || fail "the request made before the summon failed"
[ "$(cat "$dir/early.out")" = "pooled page" ] || fail "the early request got: $(cat "$dir/early.out")"
grep -q "uni: pool: no spare ready" "$dir/http.log" && fail "a cold start with spares ready"
[ "$(taken)" = 1 ] || fail "status says $(taken) taken, not 1"
c status uni | grep "qemu pid $s1," >/dev/null || fail "the vm's QEMU is not spare$holder's ($s1): $(c status uni)"
[ "$(awk '{print $1}' "$dir/state/qemu/uni.pid")" = "$s1" ] ||
  fail "spare$holder's record did not become the vm's"
[ -e "$dir/state/qemu/uni.spare$holder.fwd" ] && fail "the taken spare's fwd file stayed"
tap_ok "a request made while the vm was stopped waited; a summon took spare$holder (QEMU pid $s1) and both were answered"

# The pool refills, but only once the guest that took the spare is ready
# (a new spare's boot would slow its first answers).
wait_log 3 "uni: pool: spare[12] ready"
ready_at=$(grep -n "uni: starting -> ready" "$dir/http.log" | head -n 1 | cut -d: -f1)
refill_at=$(grep -n "uni: pool: spare$holder filling" "$dir/http.log" | sed -n 2p | cut -d: -f1)
[ -n "$ready_at" ] && [ -n "$refill_at" ] && [ "$refill_at" -gt "$ready_at" ] ||
  fail "the refill (log line ${refill_at:-none}) began before the taken guest was ready (line ${ready_at:-none})"
tap_ok "the refill began after the taken guest was ready"

# A second summon after a stop takes a spare again.
stop_uni
[ "$(get uni.test)" = "pooled page" ] || fail "the second summon was not answered"
[ "$(taken)" = 2 ] || fail "status says $(taken) taken, not 2"
grep -q "uni: pool: no spare ready" "$dir/http.log" && fail "a cold start with spares ready"
tap_ok "the pool refilled and served a second summon"

# A spare that dies is replaced.
wait_log 4 "uni: pool: spare[12] ready"
for n in 1 2; do victim=$(spare_pid $n) && [ -n "$victim" ] && break; done
[ -n "$victim" ] || fail "no spare record"
kill -9 "$victim"
wait_log 1 "exited while ready; replacing it"
wait_log 5 "uni: pool: spare[12] ready"
tap_ok "a killed spare (pid $victim) was replaced"

# Spares need a point to pause at: without the snapshot image (and with
# no marker) there are none, and a summon is a cold start.
[ "$(get cold.test)" = "cold page" ] || fail "the cold vm was not answered"
wait_log 1 "cold: pool: no spare ready: a cold start"
tap_ok "no spare: a cold start"

# A reload that changes the vm replaces its pool: the old spares end, new
# ones serve the new definition.
c stop uni >/dev/null
old=$(for n in 1 2; do spare_pid $n; done | tr '\n' ' ')
readies=$(grep -c "uni: pool: spare[12] ready" "$dir/http.log")
sed -i 's/jitsu.body=pooled%20page/jitsu.body=reloaded%20page/' "$dir/jitsu.conf"
c reload >/dev/null || fail "reload refused"
wait_log $((readies + 2)) "uni: pool: spare[12] ready"
for p in $old; do
  kill -0 "$p" 2>/dev/null && fail "spare $p of the old definition still runs"
done
[ "$(get uni.test)" = "reloaded page" ] || fail "the new definition's spare did not answer"
tap_ok "a reload replaced the pool (old spares $old ended)"

# SIGKILL: the next controller adopts the vm's guest and the spares left
# paused at their ready point (the same QEMUs), and hands each out once.
wait_log $((readies + 3)) "uni: pool: spare[12] ready" # refilled after the take
left=$(for n in 1 2; do spare_pid $n; done | tr '\n' ' ')
guest=$(guest_pid)
kill -9 "$hpid"
wait "$hpid" 2>/dev/null || true
start_http
wait_log 2 "uni: pool: spare[12] adopted"
for p in $left; do
  kill -0 "$p" 2>/dev/null || fail "spare $p of the killed controller was not kept"
done
[ "$(guest_pid)" = "$guest" ] || fail "the vm's guest $guest was not adopted"
[ "$(get uni.test)" = "reloaded page" ] || fail "the adopted guest did not answer"
given=
for round in 1 2; do
  stop_uni
  [ "$(get uni.test)" = "reloaded page" ] || fail "summon $round after the restart was not answered"
  p=$(guest_pid)
  case " $given " in *" $p "*) fail "QEMU $p was handed out twice" ;; esac
  given="$given $p"
  wait_log "$round" "uni: pool: spare[12] ready"
done
[ "$(logged "no spare ready")" = 0 ] || fail "a cold start with adopted spares"
first=${given# }
first=${first%% *}
case " $left " in *" $first "*) ;; *) fail "the first summon took $first, not an adopted spare ($left)" ;; esac
tap_ok "after SIGKILL: guest $guest and spares $left adopted; handed out once ($given )"

# SIGKILL while the vm is stopped: the spare that holds its forward is
# adopted still holding it (its fwd file says "held"), and a summon takes
# it. One whose file says it was still adding them is ended instead.
stop_uni
wait_holder
kept=$(spare_pid $holder)
kill -9 "$hpid"
wait "$hpid" 2>/dev/null || true
start_http
wait_log 2 "uni: pool: spare[12] adopted"
[ "$(listening "$kept")" = "127.0.0.1:$gp" ] || fail "adopted spare $kept no longer holds the forward: $(listening "$kept")"
[ "$(get uni.test)" = "reloaded page" ] || fail "the adopted holder did not answer"
[ "$(guest_pid)" = "$kept" ] || fail "the summon took $(guest_pid), not spare$holder ($kept), which held the forward"
tap_ok "after SIGKILL with the vm stopped: spare$holder (QEMU $kept) adopted holding the forward, and taken"
wait_log 1 "uni: pool: spare[12] ready" # refilled after the take
stop_uni
wait_holder
gone=$(spare_pid $holder)
kill -9 "$hpid"
wait "$hpid" 2>/dev/null || true
sed -i '1s/^held$/adding/' "$dir/state/qemu/uni.spare$holder.fwd"
start_http
wait_log 1 "was adding the vm's forwards"
for _ in $(seq 1 50); do kill -0 "$gone" 2>/dev/null || break; sleep 0.1; done
kill -0 "$gone" 2>/dev/null && fail "spare $gone, left adding the forwards, still runs"
[ "$(get uni.test)" = "reloaded page" ] || fail "no answer after the half-armed spare was ended"
tap_ok "a spare left adding the vm's forwards (QEMU $gone) was ended, not adopted"
for _ in $(seq 1 300); do
  c status uni | grep "spares: 2 (0 filling)" >/dev/null && break
  sleep 0.1
done
c status uni | grep "spares: 2 (0 filling)" >/dev/null || fail "the pool did not refill: $(c status uni)"

# restart_changed CHANGE...: SIGKILL the controller, run CHANGE, start a
# new one: it must end both spares left ("made for another definition")
# and fill the pool again.
restart_changed() {
  left=$(for n in 1 2; do spare_pid $n; done | tr '\n' ' ')
  kill -9 "$hpid"
  wait "$hpid" 2>/dev/null || true
  "$@"
  start_http
  wait_log 2 "made for another definition"
  for p in $left; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && fail "spare $p made for the old definition still runs"
  done
  wait_log 2 "uni: pool: spare[12] ready"
}

# A controller whose definition changed while none ran ends the spares
# left for the old one.
restart_changed sed -i 's/jitsu.body=reloaded%20page/jitsu.body=restarted%20page/' "$dir/jitsu.conf"
stop_uni
[ "$(get uni.test)" = "restarted page" ] || fail "the new definition's spare did not answer"
tap_ok "a changed definition ended the spares left for the old one ($left)"

# So does a guest image rebuilt in place (the same path, a new file).
wait_log 3 "uni: pool: spare[12] ready" # refilled after the take
replace_kernel() {
  cp "$dir/uni.elf" "$dir/uni.new"
  touch -m -d "@$(($(date +%s) + 5))" "$dir/uni.new"
  mv "$dir/uni.new" "$dir/uni.elf"
}
restart_changed replace_kernel
guest=$(guest_pid)
tap_ok "a kernel file replaced in place ended the spares made from the old one ($left)"

# An exit ends the spares; the vm's guest stays for adoption.
left=$(for n in 1 2; do spare_pid $n; done | tr '\n' ' ')
kill -TERM "$hpid"
st=0
wait "$hpid" || st=$?
hpid=0
[ "$st" = 0 ] || fail "jitsu-http exited with status $st after SIGTERM"
for p in $left; do
  kill -0 "$p" 2>/dev/null && fail "spare $p outlived its controller"
done
kill -0 "$guest" 2>/dev/null || fail "the vm's guest $guest did not stay"
ls "$dir/state/qemu/" | grep "spare" >/dev/null && fail "spare records left: $(ls "$dir/state/qemu")"
tap_ok "an exit ended the spares and left the guest"
kill "$guest"
vg_check "$dir" || fail "memcheck found errors in jitsu-http"
tap_end
