#!/bin/bash
# bench_tcp: the library's proxying socket trigger (socket = tcp:... to=...,
# loaded by the example controller) against HAProxy in mode tcp and socat,
# relaying to the same warm guest (nginx with 512-byte answers, started by
# the controller as a vm), measured with wrk -t2 -c64 in the same run,
# rounds taking turns, with the CPU time each relay spent per request
# (from /proc). The relays are pinned to core 0; wrk and the guest share
# core 1, so that a relay's core holds the relay alone (with the guest free
# to run on either, whichever relay shared a core with it in a round lost
# that round: the ratio swung from 0.67 to 1.07). Then relay_copy:
# read/write against splice(2) for a bulk transfer.
#
#   bench/bench_tcp.sh BUILD_DIR     (ninja -C build bench-tcp runs it)
#
# Needs wrk, nginx, haproxy and socat (their Debian services are not
# used). Each load run is bounded (SECONDS_PER_RUN, 5).
set -euo pipefail
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/bench_lib.sh"
build=$(cd "${1:-build}" && pwd)
secs=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
for tool in wrk nginx haproxy socat taskset curl; do
  command -v "$tool" >/dev/null || {
    echo "bench_tcp: $tool is missing (apt-get install wrk nginx haproxy socat)" >&2
    exit 1
  }
done
body=$(head -c 511 /dev/zero | tr '\0' x) # and a newline: 512 bytes
dir=$(mktemp -d /tmp/jitsu-bench-tcp-XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  kill_marked "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
G=$(free_port) J=$(free_port) H=$(free_port) S=$(free_port)
mkdir -p "$dir/guest"
cat >"$dir/guest/nginx.conf" <<CONF
worker_processes 1;
pid $dir/guest/nginx.pid;
error_log $dir/guest/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$G;
    location / { return 200 "$body\n"; }
  }
}
CONF
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
control-socket = $dir/ctl.sock
[vm guest]
exec = taskset -c 1 nginx -p $dir/guest -c $dir/guest/nginx.conf -g "daemon off;"
ready = tcp:127.0.0.1:$G
socket = tcp:127.0.0.1:$J to=127.0.0.1:$G
CONF
cat >"$dir/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$H
  default_backend b
backend b
  server guest 127.0.0.1:$G
CONF
taskset -c 0 "$build/examples/controller" "$dir/jitsu.conf" </dev/null >/dev/null 2>"$dir/controller.err" &
jpid=$!
pids+=($jpid)
for _ in $(seq 1 100); do
  "$build/frontends/ctl/jitsu-ctl" -c "$dir/jitsu.conf" list >/dev/null 2>&1 && break
  sleep 0.05
done
# The first connection starts the guest; the other relays then reach it.
curl -s -m 10 "http://127.0.0.1:$J/" | grep xxx >/dev/null || {
  echo "bench_tcp: the guest did not start" >&2
  cat "$dir/controller.err" >&2
  exit 1
}
taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" 2>"$dir/haproxy.err" &
hpid=$!
pids+=($hpid)
taskset -c 0 socat TCP-LISTEN:"$S",bind=127.0.0.1,reuseaddr,fork,backlog=4096 \
  TCP:127.0.0.1:"$G" 2>/dev/null &
spid=$!
pids+=($spid)
for p in $H $S; do
  for _ in $(seq 1 100); do curl -s -m 1 "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.05; done
done

# A wrk latency ("678.00us", "4.51ms", "1.02s") in milliseconds.
ms() { echo "$1" | awk '/us$/ { print $1 / 1000; next } /ms$/ { print $1 + 0; next }
  /s$/ { print $1 * 1000 }'; }
# socat's children (one per connection) are gone when a run ends: socat
# is measured by throughput only.
hz=$(getconf CLK_TCK)
# How deep under its PID a server does its work (ticks).
depth() { case "$1" in socat) echo 1 ;; *) echo 0 ;; esac; }
run() { # NAME PORT PID
  local out t0 t1 rps p50 p99 errors requests cu cs
  t0=$(ticks "$3" "$(depth "$1")")
  out=$(taskset -c 1 wrk -t2 -c64 -d"${secs}s" --latency "http://127.0.0.1:$2/")
  t1=$(ticks "$3" "$(depth "$1")")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {$1 = $1; print}' | tr '\n' ' ')
  read -r cu cs < <(echo "$t0 $t1" | awk -v n="$requests" -v hz="$hz" '{
    printf "%.2f %.2f\n", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n }')
  printf '  %-8s %10.0f req/s   p50 %8s   p99 %8s   cpu/request %5.1f us user %5.1f us sys   %s\n' \
    "$1" "$rps" "$p50" "$p99" "$cu" "$cs" "$errors"
  echo "$rps" >"$dir/rps.$1"
  ms "$p99" >"$dir/p99.$1"
  echo "$cu $cs" >"$dir/cpu.$1"
}
echo "relay to a warm guest: wrk -t2 -c64 for ${secs}s through each (pinned to one core; 512-byte answers), $rounds rounds taking turns:"
for round in $(seq 1 "$rounds"); do
  echo "round $round:"
  run jitsu "$J" "$jpid"
  run haproxy "$H" "$hpid"
  run socat "$S" "$spid"
  awk -v j="$(cat "$dir/rps.jitsu")" -v h="$(cat "$dir/rps.haproxy")" \
    -v s="$(cat "$dir/rps.socat")" \
    -v cj="$(awk '{print $1 + $2}' "$dir/cpu.jitsu")" \
    -v ch="$(awk '{print $1 + $2}' "$dir/cpu.haproxy")" \
    -v pj="$(cat "$dir/p99.jitsu")" -v ph="$(cat "$dir/p99.haproxy")" 'BEGIN {
    printf "  ratio jitsu / haproxy %.2f, jitsu / socat %.2f (req/s); cpu per request haproxy / jitsu %.2f; p99 haproxy / jitsu %.2f\n", j / h, j / s, ch / cj, ph / pj
    printf "%.4f %.4f %.4f %.4f\n", j / h, j / s, ch / cj, ph / pj >>"/dev/stderr" }' 2>>"$dir/ratios"
done
echo "how busy the cores were during one more run through jitsu (the relay on cpu0, wrk and the guest on cpu1):"
echo "  $(cores_busy taskset -c 1 wrk -t2 -c64 -d"${secs}s" "http://127.0.0.1:$J/")"
median_ratio "$dir/ratios" 1 "req/s jitsu / haproxy (mode tcp)"
median_ratio "$dir/ratios" 2 "req/s jitsu / socat"
median_ratio "$dir/ratios" 3 "cpu per request haproxy / jitsu"
median_ratio "$dir/ratios" 4 "p99 haproxy / jitsu"

# Whether splice(2) would pay for the relay's copy (bulk transfer, one
# connection): see doc/decisions.md.
"$build/bench/relay_copy" -m 512 -r "$rounds"
