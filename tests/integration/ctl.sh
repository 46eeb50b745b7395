#!/bin/bash
# jitsu-ctl and the control socket end to end, against the example
# controller: every command, bad requests, permissions, a restart after
# SIGKILL, and reloads.
# usage: ctl.sh CONTROLLER HELLO JITSU-CTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
controller=$1
hello=$2
ctl_bin=$3
dir=$(mktemp -d /tmp/jitsu-ctl-XXXXXX)
vg_init "$dir"
chmod 755 "$dir" # so that the permission test reaches the socket itself
cpid=0

cleanup() {
  [ "$cpid" -gt 0 ] && kill -9 "$cpid" 2>/dev/null || true
  kill_marked "--record $dir" # the guests this test started
  rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { tap_ok "$@"; }
ctl() { "$ctl_bin" -c "$dir/jitsu.conf" "$@"; }

# expect_exit CODE CMD...: run CMD, check its exit status.
expect_exit() {
  local want=$1 got=0
  shift
  "$@" >"$dir/last.out" 2>"$dir/last.err" || got=$?
  [ "$got" -eq "$want" ] || {
    cat "$dir/last.out" "$dir/last.err" >&2
    fail "'$*' exited $got, not $want"
  }
}

write_config() { # $1: extra vm sections
  cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
control-socket = $dir/ctl.sock
[vm a]
exec = $hello --name a --record $dir/starts-a
socket = tcp 127.0.0.1:$port_a
ready = notify
address = 127.0.0.1:$port_a
$1
CONF
}

start_controller() {
  "${VG[@]}" "$controller" "$dir/jitsu.conf" </dev/null >"$dir/controller.out" 2>"$dir/controller.err" &
  cpid=$!
  for _ in $(seq 1 1200); do
    [ -S "$dir/ctl.sock" ] && grep -q "^ready" "$dir/controller.out" && return 0
    sleep 0.05
  done
  cat "$dir/controller.err" >&2
  fail "the controller did not start"
}

port_a=$(free_port)
port_b=$(free_port)
port_c=$(free_port)

port_i=$(free_port)
write_config "[vm c]
exec = $hello --name c --record $dir/starts-c --listen 127.0.0.1:$port_b
ready = tcp:127.0.0.1:$port_b
[vm i]
exec = $hello --name i --listen 127.0.0.1:$port_i
ready = tcp:127.0.0.1:$port_i
idle-timeout = 300ms
idle-action = shutdown"
start_controller

# --- every command -----------------------------------------------------------
expect_exit 0 ctl version
grep -q "daemon 0" "$dir/last.out" || fail "version: $(cat "$dir/last.out")"
expect_exit 0 ctl list
grep -Eq "^a +process +stopped +127.0.0.1:$port_a" "$dir/last.out" ||
  fail "list: $(cat "$dir/last.out")"
expect_exit 0 ctl summon a --wait
grep -q "^a: ready" "$dir/last.out" || fail "summon: $(cat "$dir/last.out")"
[ "$(curl -s -m 5 "http://127.0.0.1:$port_a/")" = "hello from a" ] ||
  fail "the summoned guest does not answer"
expect_exit 0 ctl --json status a
grep -q '"state": "ready"' "$dir/last.out" || fail "status --json"
grep -q '"cold_starts": 1' "$dir/last.out" || fail "status --json counts"
# A verb whose state holds already succeeds (as a stop of a stopped vm).
expect_exit 0 ctl resume a
grep -q "^a: ready" "$dir/last.out" || fail "resume of a ready vm"
expect_exit 0 ctl suspend a
grep -q "^a: suspended" "$dir/last.out" || fail "suspend"
expect_exit 0 ctl suspend a
grep -q "^a: suspended" "$dir/last.out" || fail "suspend of a suspended vm"
expect_exit 0 ctl resume a
grep -q "^a: ready" "$dir/last.out" || fail "resume"
expect_exit 0 ctl stats
grep -q "cold start        1" "$dir/last.out" || fail "stats: $(cat "$dir/last.out")"
expect_exit 0 ctl stats a --prometheus
grep -q '^jitsu_cold_starts_total{vm="a"} 1$' "$dir/last.out" || fail "prometheus"
grep -q '^jitsu_cold_start_seconds_bucket{vm="a",le="+Inf"} 1$' "$dir/last.out" ||
  fail "prometheus histogram"
grep -q '^jitsu_resume_seconds_count{vm="a"} 1$' "$dir/last.out" || fail "resume count"
expect_exit 0 ctl summon c
expect_exit 0 ctl stop a destroy
grep -q "^a: stopped (killed by signal 9" "$dir/last.out" || fail "stop destroy"
# stop --all: every vm that is not stopped, suspended ones too.
expect_exit 0 ctl summon a --wait
expect_exit 0 ctl suspend a
expect_exit 0 ctl stop --all
grep -qx "2 vm(s) stopped" "$dir/last.out" || fail "stop --all: $(cat "$dir/last.out")"
expect_exit 0 ctl list
! grep -Eq " (ready|suspended|starting|stopping) " "$dir/last.out" ||
  fail "stop --all left: $(cat "$dir/last.out")"
expect_exit 0 ctl stop --all destroy
grep -qx "0 vm(s) stopped" "$dir/last.out" || fail "stop --all of nothing"
expect_exit 2 ctl stop --all sideways
expect_exit 0 ctl summon c --wait # the reload below removes a running c
ok
# Log lines carry the time, and a stop names who asked for it.
grep -q "ready -> stopping: destroy requested by an operator" "$dir/controller.err" ||
  fail "a stop by jitsu-ctl: $(grep stopping "$dir/controller.err")"
grep -Eq "^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z jitsu: info: vm a: " "$dir/controller.err" ||
  fail "log lines without their time: $(head -n 3 "$dir/controller.err")"
expect_exit 0 ctl summon i --wait
for _ in $(seq 1 600); do
  grep -q "vm i: ready -> stopping: shutdown requested by the idle policy" "$dir/controller.err" && break
  sleep 0.05
done
grep -q "vm i: ready -> stopping: shutdown requested by the idle policy" "$dir/controller.err" ||
  fail "an idle stop: $(grep "vm i" "$dir/controller.err")"
ok "log lines: times, and who asked for a stop"

# --- a second controller on the same state directory is refused -------------
"$controller" "$dir/jitsu.conf" </dev/null >"$dir/second.out" 2>"$dir/second.err" &&
  fail "a second controller started on the same state directory"
grep -q "is in use by another controller (pid $cpid)" "$dir/second.err" ||
  fail "second controller: $(cat "$dir/second.err")"
ok "a second controller is refused, naming the first"

# --- errors --------------------------------------------------------------------
expect_exit 1 ctl status nosuch
grep -q "no vm 'nosuch'" "$dir/last.err" || fail "unknown vm message"
expect_exit 2 ctl frobnicate
expect_exit 2 ctl status
expect_exit 2 ctl stop a sideways
expect_exit 3 "$ctl_bin" -s "$dir/nothing.sock" list
grep -q "$dir/nothing.sock" "$dir/last.err" || fail "the hint names no path"
# A config that cannot be read is an error (not: the default daemon's).
expect_exit 2 "$ctl_bin" -c "$dir/no-such.conf" list
grep -q "cannot read $dir/no-such.conf: No such file" "$dir/last.err" ||
  fail "an unreadable -c: $(cat "$dir/last.err")"
# Raw requests on one connection: each bad one gets its error and the
# connection stays usable for the next.
long=$(head -c 70000 /dev/zero | tr '\0' x)
printf '%s\n' 'not json' '[1,2]' '{"cmd":"dance"}' '{"cmd":"list","x":1}' \
  '{"v":2,"cmd":"list"}' '{"cmd":"status"}' "{\"cmd\":\"$long\"}" \
  '{"cmd":"version","id":"last"}' |
  socat -t 5 - "UNIX-CONNECT:$dir/ctl.sock" >"$dir/raw.out"
[ "$(wc -l <"$dir/raw.out")" -eq 8 ] || fail "raw: $(cat "$dir/raw.out")"
for want in 'invalid JSON at column' 'a request is a JSON object' \
  'unknown command \\"dance\\"' 'unknown field \\"x\\"' 'protocol version' \
  'missing \\"name\\"' 'request too long' '"id":"last"'; do
  grep -q "$want" "$dir/raw.out" || fail "raw: no '$want' in $(cat "$dir/raw.out")"
done
# A client that sends half a line and stalls does not block others.
(printf '{"cmd":' ; sleep 3) | socat -t 4 - "UNIX-CONNECT:$dir/ctl.sock" >/dev/null &
stall=$!
expect_exit 0 ctl version
kill "$stall" 2>/dev/null || true
wait "$stall" 2>/dev/null || true
ok

# --- permissions -----------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  [ "$(stat -c %a "$dir/ctl.sock")" = 600 ] || fail "socket mode $(stat -c %a "$dir/ctl.sock")"
  expect_exit 3 setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$ctl_bin" -s "$dir/ctl.sock" list
  grep -q "Permission denied" "$dir/last.err" || fail "nobody: $(cat "$dir/last.err")"
  ok
else
  tap_skip "the permission test needs root (to run jitsu-ctl as nobody)"
fi

# --- restart after SIGKILL -----------------------------------------------------
expect_exit 0 ctl summon a --wait
pid=$(tail -n1 "$dir/starts-a")
starts=$(wc -l <"$dir/starts-a")
kill -9 "$cpid"
wait "$cpid" 2>/dev/null || true
start_controller
expect_exit 0 ctl list
grep -Eq "^a +process +ready" "$dir/last.out" || fail "after restart: $(cat "$dir/last.out")"
expect_exit 0 ctl --json status a
grep -q "\"instance\": \"pid $pid\"" "$dir/last.out" || fail "another pid: $(cat "$dir/last.out")"
grep -q '"adopted": true' "$dir/last.out" || fail "not adopted"
[ "$(wc -l <"$dir/starts-a")" -eq "$starts" ] || fail "a second instance was started"
ok

# --- reload --------------------------------------------------------------------
# c runs and goes; b is new; a runs and changes (at its next stop). (A
# removed vm's sockets are free only once it has stopped: b takes another.)
cp "$dir/jitsu.conf" "$dir/good.conf"
write_config "[vm b]
exec = $hello --name b --record $dir/starts-b
socket = tcp 127.0.0.1:$port_c
ready = notify"
sed -i "s/--name a --record/--name a2 --record/" "$dir/jitsu.conf"
expect_exit 0 ctl reload
grep -Eq "^a +changed-at-stop" "$dir/last.out" || fail "reload a: $(cat "$dir/last.out")"
grep -Eq "^b +added" "$dir/last.out" || fail "reload b"
grep -Eq "^c +removed" "$dir/last.out" || fail "reload c"
for _ in $(seq 1 100); do
  ctl list >"$dir/list.out"
  grep -q "^c " "$dir/list.out" || break
  sleep 0.05
done
! grep -q "^c " "$dir/list.out" || fail "c was not removed"
[ "$(curl -s -m 5 "http://127.0.0.1:$port_c/")" = "hello from b" ] ||
  fail "b does not answer"
[ "$(curl -s -m 5 "http://127.0.0.1:$port_a/")" = "hello from a" ] ||
  fail "a was disturbed by the reload"
expect_exit 0 ctl stop a
expect_exit 0 ctl summon a --wait
[ "$(curl -s -m 5 "http://127.0.0.1:$port_a/")" = "hello from a2" ] ||
  fail "a's new definition was not applied after its stop"
# An invalid file is refused whole: nothing changes.
ctl list | awk '{print $1, $3}' >"$dir/before"
sed -i 's/^ready = notify$/ready = eventually/' "$dir/jitsu.conf"
echo "[vm d]" >>"$dir/jitsu.conf"
echo "exec = /bin/true" >>"$dir/jitsu.conf"
expect_exit 1 ctl reload
grep -q "jitsu.conf:[0-9]*: ready: 'eventually'" "$dir/last.err" ||
  fail "reload error: $(cat "$dir/last.err")"
ctl list | awk '{print $1, $3}' >"$dir/after"
cmp -s "$dir/before" "$dir/after" || fail "an invalid reload changed things"
ok

# --- a stop waiting on a vm that a reload is removing -----------------------
# The reload's own stop undefines the vm when it is down; the operator's
# stop, queued behind it, still gets its answer (it read a freed vm).
sed -i -e 's/^ready = eventually$/ready = notify/' -e '/^\[vm d\]$/,$d' "$dir/jitsu.conf"
cp "$dir/jitsu.conf" "$dir/before-slow.conf"
cat >>"$dir/jitsu.conf" <<CONF
[vm slow]
exec = /bin/sh -c 'trap "" TERM; while :; do sleep 0.05; done' $dir
stop-grace = 1s
CONF
expect_exit 0 ctl reload
expect_exit 0 ctl summon slow --wait
cp "$dir/before-slow.conf" "$dir/jitsu.conf"
expect_exit 0 ctl reload
grep -Eq "^slow +removed" "$dir/last.out" || fail "reload slow: $(cat "$dir/last.out")"
expect_exit 0 ctl stop slow
kill -0 "$cpid" || fail "the controller died answering a stop of a removed vm"
expect_exit 1 ctl status slow
grep -q "no vm 'slow'" "$dir/last.err" || fail "slow: $(cat "$dir/last.err")"
ok

# Answers longer than the unread-output bound (1 MiB) reach a client that
# reads them: 5,000 more vms make a list of about 1.8 MB and longer stats.
cp "$dir/jitsu.conf" "$dir/small.conf"
for i in $(seq 1 5000); do
  printf '[vm many%d]\nexec = /bin/true %s\n' "$i" "$dir"
done >>"$dir/jitsu.conf"
expect_exit 0 ctl reload
expect_exit 0 ctl --json list
[ "$(stat -c %s "$dir/last.out")" -gt 1100000 ] || fail "list: only $(stat -c %s "$dir/last.out") bytes"
[ "$(grep -c '"name": "many' "$dir/last.out")" = 5000 ] || fail "list: not every vm"
expect_exit 0 ctl stats --prometheus
[ "$(grep -c '^jitsu_.*vm="many' "$dir/last.out")" -ge 5000 ] || fail "stats: not every vm"
cp "$dir/small.conf" "$dir/jitsu.conf"
expect_exit 0 ctl reload
ok "answers of several MB: list and stats of 5,000 more vms"

kill "$cpid"
wait "$cpid" || fail "the controller exited with an error"
cpid=0
vg_check "$dir" || fail "memcheck found errors in the controller"
tap_end
