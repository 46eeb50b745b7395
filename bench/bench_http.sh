#!/bin/bash
# bench_http: jitsu-http against nginx and HAProxy proxying to the same
# nginx serving 512-byte answers, measured with wrk -t2 -c64 in the same
# run, rounds taking turns, with the CPU time each proxy spent per request
# (user and system, from /proc). Twice: to a service that this script
# starts (jitsu-http's `upstream`), and to a guest that jitsu-http started
# (a vm). The two differ in scheduling, not in the proxy's work: a guest
# leads its own session, and with the kernel's autogroup scheduling (on
# in Debian) its session shares each core evenly with the session of the
# load generator and the proxies, so the proxies get less of theirs.
# Then jitsu-http's cold path for a socket-activated process guest.
#
#   bench/bench_http.sh BUILD_DIR     (ninja -C build bench-http runs it)
#
# Needs wrk, nginx and haproxy (apt-get install wrk nginx haproxy; Debian
# starts nginx and haproxy as services on their usual ports, which this
# script does not use). Each load run is bounded (SECONDS_PER_RUN, 5).
set -euo pipefail
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/bench_lib.sh"
build=$(cd "${1:-build}" && pwd)
secs=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}
for tool in wrk nginx haproxy taskset curl; do
  command -v "$tool" >/dev/null || {
    echo "bench_http: $tool is missing (apt-get install wrk nginx haproxy)" >&2
    exit 1
  }
done
body=$(head -c 511 /dev/zero | tr '\0' x) # and a newline: 512 bytes
dir=$(mktemp -d /tmp/jitsu-bench-http-XXXXXX)
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
G=$(free_port) J=$(free_port) N=$(free_port) H=$(free_port) W=$(free_port)
G2=$(free_port) N2=$(free_port) H2=$(free_port)
mkdir -p "$dir/service" "$dir/guest" "$dir/proxy"
for g in "service $G" "guest $G2"; do
  set -- $g
  cat >"$dir/$1/nginx.conf" <<CONF
worker_processes 1;
pid $dir/$1/nginx.pid;
error_log $dir/$1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$2;
    location / { return 200 "$body\n"; }
  }
}
CONF
done
nginx -p "$dir/service" -c "$dir/service/nginx.conf" -g "daemon off;" 2>/dev/null &
pids+=($!)
cat >"$dir/proxy/nginx.conf" <<CONF
worker_processes 1;
pid $dir/proxy/nginx.pid;
error_log $dir/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream service { server 127.0.0.1:$G; keepalive 64; }
  upstream guest { server 127.0.0.1:$G2; keepalive 64; }
  server {
    listen 127.0.0.1:$N;
    location / {
      proxy_pass http://service;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:$N2;
    location / {
      proxy_pass http://guest;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
cat >"$dir/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$H
  default_backend b
backend b
  server service 127.0.0.1:$G
frontend f2
  bind 127.0.0.1:$H2
  default_backend b2
backend b2
  server guest 127.0.0.1:$G2
CONF
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
[http]
listen = 127.0.0.1:$J
upstream = service.test 127.0.0.1:$G
[vm guest]
exec = taskset -c 0-$(($(nproc) - 1)) nginx -p $dir/guest -c $dir/guest/nginx.conf -g "daemon off;"
ready = tcp:127.0.0.1:$G2
address = 127.0.0.1:$G2
http-host = vm.test
[vm cold]
exec = $build/examples/hello --name cold --record $dir/cold-starts
socket = tcp 127.0.0.1:$W
ready = notify
address = 127.0.0.1:$W
http-host = cold.test
CONF
# jitsu-http starts the guest: without its own taskset the guest would
# inherit jitsu-http's core and take turns with the proxy measured (as it
# did before 2026-12-02: the proxies then got about half a core).
taskset -c 0 "$build/frontends/http/jitsu-http" -c "$dir/jitsu.conf" 2>"$dir/jitsu-http.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "serving on" "$dir/jitsu-http.err" && break; sleep 0.05; done
# The first request starts the guest; the other proxies then reach it too.
curl -s -m 10 -H "Host: vm.test" "http://127.0.0.1:$J/" | grep xxx >/dev/null || {
  echo "bench_http: the guest did not start" >&2; cat "$dir/jitsu-http.err" >&2; exit 1; }
jpid=${pids[1]}
taskset -c 0 nginx -p "$dir/proxy" -c "$dir/proxy/nginx.conf" -g "daemon off;" 2>/dev/null &
npid=$!
pids+=($npid)
taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" 2>"$dir/haproxy.err" &
hpid=$!
pids+=($hpid)
for p in $N $H $N2 $H2; do
  for _ in $(seq 1 100); do curl -s -m 1 "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.05; done
done

hz=$(getconf CLK_TCK)
# How deep under its PID a server does its work (ticks).
depth() { case "$1" in nginx) echo 1 ;; *) echo 0 ;; esac; }
run() { # NAME PORT PID [HOST]
  local out t0 t1
  t0=$(ticks "$3" "$(depth "$1")")
  out=$(taskset -c 1 wrk -t2 -c64 -d"${secs}s" --latency -H "Host: ${4:-x}" "http://127.0.0.1:$2/")
  t1=$(ticks "$3" "$(depth "$1")")
  local rps p50 p99 errors requests
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {$1 = $1; print}' | tr '\n' ' ')
  echo "$t0 $t1" | awk -v n="$requests" -v hz="$hz" '{
    printf "%.2f %.2f\n", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n }' >"$dir/cpu.$1"
  read -r cu cs <"$dir/cpu.$1"
  printf '  %-10s %10.0f req/s   p50 %8s   p99 %8s   cpu/request %5.1f us user %5.1f us sys   %s\n' \
    "$1" "$rps" "$p50" "$p99" "$cu" "$cs" "$errors"
  echo "$rps" >"$dir/rps.$1"
  echo "$p99" | awk '/us$/ {print $1 / 1000; next} /ms$/ {print $1 + 0; next} /s$/ {print $1 * 1000}' >"$dir/p99.$1"
}
cpu() { awk '{print $1 + $2}' "$dir/cpu.$1"; }
ratios() { # FILE
  awk -v j="$(cat "$dir/rps.jitsu-http")" -v n="$(cat "$dir/rps.nginx")" \
    -v h="$(cat "$dir/rps.haproxy")" -v cj="$(cpu jitsu-http)" \
    -v cn="$(cpu nginx)" -v ch="$(cpu haproxy)" \
    -v pj="$(cat "$dir/p99.jitsu-http")" -v ph="$(cat "$dir/p99.haproxy")" 'BEGIN {
    printf "  ratio jitsu-http / haproxy %.2f, jitsu-http / nginx %.2f (req/s); cpu per request haproxy / jitsu-http %.2f, nginx / jitsu-http %.2f; p99 haproxy / jitsu-http %.2f\n", j / h, j / n, ch / cj, cn / cj, ph / pj
    printf "%.4f %.4f %.4f %.4f %.4f\n", j / h, j / n, ch / cj, cn / cj, ph / pj >>"/dev/stderr" }' 2>>"$1"
}
medians() { # FILE
  median_ratio "$1" 1 "req/s jitsu-http / haproxy"
  median_ratio "$1" 2 "req/s jitsu-http / nginx"
  median_ratio "$1" 3 "cpu per request haproxy / jitsu-http"
  median_ratio "$1" 4 "cpu per request nginx / jitsu-http"
  median_ratio "$1" 5 "p99 haproxy / jitsu-http (above 1: jitsu-http's is lower)"
}
echo "warm path: wrk -t2 -c64 for ${secs}s through each proxy (pinned to one core; 512-byte answers), $rounds rounds taking turns:"
for round in $(seq 1 "$rounds"); do
  echo "round $round, to a running service (jitsu-http: upstream):"
  run jitsu-http "$J" "$jpid" service.test
  run nginx "$N" "$npid"
  run haproxy "$H" "$hpid"
  ratios "$dir/ratios.service"
  echo "round $round, to a guest that jitsu-http started (a vm):"
  run jitsu-http "$J" "$jpid" vm.test
  run nginx "$N2" "$npid"
  run haproxy "$H2" "$hpid"
  ratios "$dir/ratios.vm"
done
echo "how busy the cores were during one more run through jitsu-http (to the guest; the proxy on cpu0, wrk on cpu1, the guest on either):"
echo "  $(cores_busy taskset -c 1 wrk -t2 -c64 -d"${secs}s" -H "Host: vm.test" "http://127.0.0.1:$J/")"
echo "to a running service:"
medians "$dir/ratios.service"
echo "to a guest that jitsu-http started:"
medians "$dir/ratios.vm"

# The cold path: the first request to a socket-activated guest.
for i in $(seq 1 30); do
  "$build/frontends/ctl/jitsu-ctl" -c "$dir/jitsu.conf" stop cold destroy >/dev/null
  curl -s -o /dev/null -m 10 -w '%{time_total}\n' -H "Host: cold.test" "http://127.0.0.1:$J/"
done | sort -n >"$dir/cold.txt"
awk '{ v[NR] = $1 * 1000 } END {
  printf "cold path, %d runs: first request, summon to response: p50 %.3f ms  p90 %.3f ms\n",
    NR, v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)] }' "$dir/cold.txt"
echo "the guest's own start, as libjitsu measured it (spawn to ready):"
"$build/frontends/ctl/jitsu-ctl" -c "$dir/jitsu.conf" status cold | grep "cold start "
