# Shared by the integration scripts and the benchmarks: sourced, not run.
# A command that fails a script under set -e says where.
trap 'echo "# failed: ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND" >&2' ERR


# free_port: a TCP and UDP port nothing uses, below the ephemeral range
# (32768-), so that no outgoing connection takes it before a guest binds it.
# The ports free_port gave out in this test, one a line: a port is bound
# only later, so two calls must never return the same one (two vms on one
# port: a readiness probe answered by the other). The file is deleted at
# once and kept open, so that nothing is left behind; calls in $(...)
# reach it through the test shell's descriptor.
_jitsu_ports=$(mktemp /tmp/jitsu-ports-XXXXXX)
exec {_jitsu_ports_fd}<>"$_jitsu_ports"
rm -f "$_jitsu_ports"
_jitsu_ports=/proc/$$/fd/$_jitsu_ports_fd
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % 20000))
    grep -qx "$p" "$_jitsu_ports" && continue
    ss -Htuan "sport = :$p" | grep . >/dev/null && continue
    echo "$p" >>"$_jitsu_ports"
    echo "$p"
    return
  done
}

# test_dir NAME: $dir, a new temporary directory (the mark of everything
# the test starts), $pids, processes to end, and an EXIT trap that kills
# them and every process marked with $dir, then removes it.
test_dir() {
  dir=$(mktemp -d "/tmp/jitsu-$1-XXXXXX")
  pids=()
  trap test_dir_cleanup EXIT
}
test_dir_cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  kill_marked "$dir"
  rm -rf "$dir"
}

# kill_marked MARK: end every process whose command line holds MARK (the
# test's temporary directory), with the process group it leads (guests lead
# their own).
kill_marked() {
  local p s
  for p in $(pgrep -f -- "$1" || true); do
    kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true
  done
  # A directory marker: also the guests recorded in state directories
  # under it (their programs may have exec'd the marker away).
  if [ -d "$1" ]; then
    for s in "$1"/*/process "$1"/*/*/process; do
      if [ -d "$s" ]; then kill_recorded "${s%/process}"; fi
    done
  fi
  return 0
}

# Kill (SIGKILL, the whole process group) every process guest recorded in
# the state directory STATE: a guest whose program exec'd away its marker
# (sh -c "sleep N" MARK, which dash turns into a bare sleep; sh -c '...;
# exec hello' MARK) is found by its record. Only a process that still leads
# its own session (as a guest does) is killed: a pid reused since is not.
kill_recorded() { # STATE
  local r pid rest
  for r in "$1"/process/*.pid; do
    [ -f "$r" ] || continue
    read -r pid rest <"$r" || continue
    [ "${pid:-0}" -gt 1 ] || continue
    [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ] || continue
    kill -9 -- "-$pid" 2>/dev/null || true
  done
  return 0
}

# The scripts run under pipefail, so no `CMD | grep -q`: grep -q leaves at
# its first match, a CMD still writing dies of SIGPIPE, and the pipeline
# fails though it matched. Even `echo "$out" | grep -q` does this (bash's
# echo writes a line at a time): 2 in 3000 runs here, and a red CI run.
# Write `CMD | grep PATTERN >/dev/null`: grep then reads to the end.

# Whether BIN is an ASan build.
is_asan() {
  [[ "$(ldd "$1")" == *libasan* ]]
}

# TAP on stdout, for meson's protocol 'tap': one "ok" per part that passed,
# a skipped part says why (and shows in meson's log as a skip), the plan
# comes last. A failure exits non-zero (meson counts that as failing).
tap_n=0
tap_ok() {
  tap_n=$((tap_n + 1))
  echo "ok $tap_n${1:+ - $1}"
}
# prom_check FILE: a Prometheus text exposition through Prometheus' own
# linter (HELP and TYPE for every family, base units, _total counters,
# the syntax): a TAP line, or exit 1 with its complaints. (scripts/setup.sh
# installs promtool; without it the check is skipped, saying so.)
prom_check() {
  if ! command -v promtool >/dev/null; then
    tap_skip "promtool is missing (apt-get install prometheus)"
    return 0
  fi
  local out
  out=$(promtool check metrics <"$1" 2>&1) || {
    echo "FAIL: promtool check metrics: $out" >&2
    exit 1
  }
  tap_ok "promtool check metrics"
}
tap_skip() {
  tap_n=$((tap_n + 1))
  echo "ok $tap_n # SKIP $*"
}
tap_end() {
  echo "1..$tap_n"
}

# Daemons under `meson test --setup valgrind` (tests/valgrind.sh): VG holds
# the words to put before a daemon's command (none otherwise); vg_check
# fails when memcheck reported anything for them.
vg_init() { # DIR: the logs go in DIR/vg (writable by a daemon that drops
  VG=()     # its privileges: memcheck opens a log in each child it forks)
  if [ -n "${JITSU_VALGRIND:-}" ]; then
    mkdir -p "$1/vg"
    chmod 1777 "$1/vg"
    # shellcheck disable=SC2206 # words, on purpose
    VG=($JITSU_VALGRIND "--log-file=$1/vg/%p.log")
  fi
}
vg_check() { # DIR
  local f bad=0
  [ -n "${JITSU_VALGRIND:-}" ] || return 0
  for f in "$1"/vg/*.log; do
    # (valgrind's own notes start with --PID--; what memcheck found, ==PID==)
    grep -q '^==[0-9]*== ' "$f" 2>/dev/null || continue
    echo "memcheck, $f:" >&2
    grep '^==[0-9]*== ' "$f" >&2
    bad=1
  done
  return $bad
}

# steady_then_idle URL VM COUNT-FN: after a first request (which may start
# it), a request to URL every 0.5 s for 6 s (the vm's idle-timeout is
# shorter) must find VM ready and COUNT-FN (its starts) unchanged; then, once the traffic ends, the idle policy must stop
# it (within 20 s). Uses the test's ctl and fail.
steady_then_idle() {
  local url=$1 vm=$2 count=$3 before
  curl -sS --max-time 20 -o /dev/null "$url" || fail "first request to $vm"
  before=$($count)
  for _ in $(seq 1 12); do
    curl -sS --max-time 10 -o /dev/null "$url" || fail "steady request"
    sleep 0.5
  done
  [ "$($count)" = "$before" ] || fail "$vm was restarted under steady traffic"
  _vm_state() { ctl list | awk -v vm="$vm" '$1 == vm {print $3}'; }
  [ "$(_vm_state)" = ready ] || fail "$vm is $(_vm_state) under steady traffic"
  for _ in $(seq 1 200); do [ "$(_vm_state)" = stopped ] && break; sleep 0.1; done
  [ "$(_vm_state)" = stopped ] || fail "$vm is $(_vm_state) 20 s after the traffic ended"
}

# fail_with_logs MESSAGE: say FAIL, show the tail of every $dir/*.err (the
# daemons' logs), exit 1.
fail_with_logs() {
  echo "FAIL: $*" >&2
  for f in "$dir"/*.err; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
  exit 1
}

# wait_serving FILE: up to 60 s for a daemon's "serving on" line in FILE.
wait_serving() {
  for _ in $(seq 1 1200); do
    grep -q "serving on" "$1" && return 0
    sleep 0.05
  done
  return 1
}
