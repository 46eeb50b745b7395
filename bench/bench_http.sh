#!/bin/bash
# bench_http: jitsu-http against nginx and HAProxy proxying to the same
# running guest (an nginx serving a short answer, started by jitsu-http as
# a process guest), measured with wrk in the same run; then jitsu-http's
# cold path for a socket-activated process guest.
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
G=$(free_port) J=$(free_port) N=$(free_port) H=$(free_port) C=$(free_port) W=$(free_port)
mkdir -p "$dir/guest" "$dir/proxy"
cat >"$dir/guest/nginx.conf" <<CONF
worker_processes 1;
pid $dir/guest/nginx.pid;
error_log $dir/guest/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$G;
    location / { return 200 "hello from the guest\n"; }
  }
}
CONF
cat >"$dir/proxy/nginx.conf" <<CONF
worker_processes 1;
pid $dir/proxy/nginx.pid;
error_log $dir/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream guest { server 127.0.0.1:$G; keepalive 64; }
  server {
    listen 127.0.0.1:$N;
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
  server guest 127.0.0.1:$G
CONF
cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
[http]
listen = 127.0.0.1:$J
[vm guest]
exec = nginx -p $dir/guest -c $dir/guest/nginx.conf -g "daemon off;"
ready = tcp:127.0.0.1:$G
address = 127.0.0.1:$G
http-host = bench.test
[vm cold]
exec = $build/examples/hello --name cold --record $dir/cold-starts
socket = tcp 127.0.0.1:$W
ready = notify
address = 127.0.0.1:$W
http-host = cold.test
CONF
taskset -c 0 "$build/frontends/http/jitsu-http" -c "$dir/jitsu.conf" 2>"$dir/jitsu-http.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "serving on" "$dir/jitsu-http.err" && break; sleep 0.05; done
# The first request starts the guest; the other proxies then reach it too.
curl -s -m 10 -H "Host: bench.test" "http://127.0.0.1:$J/" | grep -q guest || {
  echo "bench_http: the guest did not start" >&2; cat "$dir/jitsu-http.err" >&2; exit 1; }
taskset -c 0 nginx -p "$dir/proxy" -c "$dir/proxy/nginx.conf" -g "daemon off;" 2>/dev/null &
pids+=($!)
taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" 2>"$dir/haproxy.err" &
pids+=($!)
for p in $N $H; do
  for _ in $(seq 1 100); do curl -s -m 1 "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.05; done
done

run() { # NAME PORT
  local out
  out=$(taskset -c 1 wrk -t1 -c50 -d"${secs}s" --latency -H "Host: bench.test" "http://127.0.0.1:$2/")
  local rps p50 p99 errors
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {$1 = $1; print}' | tr '\n' ' ')
  printf '  %-10s %10.0f req/s   p50 %8s   p99 %8s   %s\n' "$1" "$rps" "$p50" "$p99" "$errors"
  echo "$rps" >"$dir/rps.$1"
}
echo "warm path: wrk -t1 -c50 for ${secs}s through each proxy (pinned to one core) to one guest, $rounds rounds taking turns:"
for round in $(seq 1 "$rounds"); do
  echo "round $round:"
  run jitsu-http "$J"
  run nginx "$N"
  run haproxy "$H"
  awk -v j="$(cat "$dir/rps.jitsu-http")" -v n="$(cat "$dir/rps.nginx")" \
    -v h="$(cat "$dir/rps.haproxy")" 'BEGIN {
    printf "  ratio jitsu-http / haproxy %.2f, jitsu-http / nginx %.2f\n", j / h, j / n
    printf "%.4f %.4f\n", j / h, j / n >>"/dev/stderr" }' 2>>"$dir/ratios"
done
median_ratio "$dir/ratios" 1 "jitsu-http / haproxy"
median_ratio "$dir/ratios" 2 "jitsu-http / nginx"

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
