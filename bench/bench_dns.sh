#!/bin/bash
# bench_dns: jitsu-dns's warm path against NSD and Knot serving the same
# names, each pinned to one core, measured with dnsperf in the same run;
# then jitsu-dns's cold path for a socket-activated process guest.
#
#   bench/bench_dns.sh BUILD_DIR      (ninja -C build bench-dns runs it)
#
# Needs dnsperf, nsd and knot (apt-get install dnsperf nsd knot; Debian
# starts their services on port 53, which this script does not use).
# Every server and guest it starts is stopped at the end; each load run is
# bounded in time (SECONDS, default 5).
set -euo pipefail
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/bench_lib.sh"
build=$(cd "${1:-build}" && pwd)
secs=${SECONDS_PER_RUN:-5}
names=${NAMES:-100}
rounds=${ROUNDS:-3}
for tool in dnsperf nsd knotd taskset; do
  command -v "$tool" >/dev/null || {
    echo "bench_dns: $tool is missing (apt-get install dnsperf nsd knot util-linux)" >&2
    exit 1
  }
done
dir=$(mktemp -d /tmp/jitsu-bench-dns-XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  kill_marked "$dir"
  pkill -9 -f -- "-c $dir/nsd.conf" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
PJ=$(free_port) PN=$(free_port) PK=$(free_port) PC=$(free_port) PH=$(free_port)

# The same names for all three.
{
  echo "\$ORIGIN bench.test."
  echo "\$TTL 60"
  echo "@ SOA ns1 hostmaster 1 3600 600 86400 60"
  echo "@ NS ns1"
  echo "ns1 A 127.0.0.1"
  for i in $(seq 0 $((names - 1))); do echo "vm$i A 127.0.0.1"; done
} >"$dir/bench.test.zone"
for i in $(seq 0 $((names - 1))); do echo "vm$i.bench.test A"; done >"$dir/queries"

cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
max-live = $((names + 10))
max-starting = $((names + 10))
[dns]
zone = bench.test
forward = no
rate = 1000000
rate-burst = 1000000
CONF
for i in $(seq 0 $((names - 1))); do
  printf '[vm vm%d]\nexec = /bin/sh -c "sleep 100000" %s\naddress = 127.0.0.1\ndns = vm%d.bench.test\ndns-idle = 0\n' \
    "$i" "$dir" "$i" >>"$dir/jitsu.conf"
done
cat >"$dir/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1
  port: $PN
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$dir"
  pidfile: "$dir/nsd.pid"
  xfrdfile: "$dir/xfrd.state"
  zonelistfile: "$dir/zone.list"
  database: ""
  logfile: "$dir/nsd.log"
  do-ip6: no
  # Response rate limiting is on by default and would cap a benchmark.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.test.zone
CONF
mkdir -p "$dir/knot"
cat >"$dir/knot.conf" <<CONF
server:
  rundir: "$dir/knot"
  listen: 127.0.0.1@$PK
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
database:
  storage: "$dir/knot"
zone:
  - domain: bench.test
    file: "$dir/bench.test.zone"
    storage: "$dir/knot"
CONF

wait_port() {
  for _ in $(seq 1 100); do
    kdig @127.0.0.1 -p "$1" +time=1 +retry=0 vm0.bench.test A +short 2>/dev/null | grep 127.0.0.1 >/dev/null && return 0
    sleep 0.1
  done
  echo "bench_dns: nothing answers on port $1" >&2
  exit 1
}

# Servers on core 0, dnsperf on core 1.
taskset -c 0 "$build/frontends/dns/jitsu-dns" -c "$dir/jitsu.conf" -l "$PJ" 2>"$dir/jitsu-dns.err" &
pids+=($!)
taskset -c 0 nsd -d -c "$dir/nsd.conf" 2>"$dir/nsd.err" &
pids+=($!)
taskset -c 0 knotd -c "$dir/knot.conf" >"$dir/knot.log" 2>&1 &
pids+=($!)
wait_port "$PJ"
wait_port "$PN"
wait_port "$PK"
# Warm every guest: the warm path is what we measure.
for i in $(seq 0 $((names - 1))); do
  kdig @127.0.0.1 -p "$PJ" +time=5 "vm$i.bench.test" A +short >/dev/null
done

hz=$(getconf CLK_TCK)
# How deep under its PID a server does its work (ticks).
depth() { case "$1" in nsd) echo 2 ;; *) echo 0 ;; esac; }
run() { # NAME PORT PID MODE: throughput (q/s and the server's CPU per
  # query), then latency at a fixed rate (UDP only)
  local out qps p50 p99 t0 t1 n
  t0=$(ticks "$3" "$(depth "$1")")
  out=$(taskset -c 1 dnsperf -m "$4" -s 127.0.0.1 -p "$2" -d "$dir/queries" -l "$secs" -q 200 2>&1)
  t1=$(ticks "$3" "$(depth "$1")")
  qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
  lost=$(echo "$out" | awk '/Queries lost/ {print $3}')
  noerror=$(echo "$out" | awk '/Response codes/ {$1 = $2 = ""; print}' | sed 's/^ *//')
  n=$(echo "$out" | awk '/Queries completed/ {print $3}')
  echo "$t0 $t1" | awk -v n="$n" -v hz="$hz" '{
    printf "%.3f\n", ($3 + $4 - $1 - $2) * 1e6 / hz / n }' >"$dir/cpu.$1.$4"
  echo "$qps" >"$dir/qps.$1.$4"
  if [ "$4" = tcp ]; then
    printf '  %-10s tcp %10.0f q/s   cpu/query %5.2f us   lost %s, %s\n' \
      "$1" "$qps" "$(cat "$dir/cpu.$1.$4")" "$lost" "$noerror"
    return
  fi
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$2" -d "$dir/queries" -l 2 -Q "$fixed_qps" -v 2>/dev/null |
    awk '$1 == ">" {print $NF * 1000}' | sort -n >"$dir/lat"
  n=$(wc -l <"$dir/lat")
  p50=$(sed -n "$(((n + 1) / 2))p" "$dir/lat")
  p99=$(sed -n "$(((n * 99 + 99) / 100))p" "$dir/lat")
  echo "$p99" >"$dir/p99.$1"
  printf '  %-10s udp %10.0f q/s   cpu/query %5.2f us   at %d q/s: p50 %6.3f ms p99 %6.3f ms   lost %s, %s\n' \
    "$1" "$qps" "$(cat "$dir/cpu.$1.$4")" "$fixed_qps" "$p50" "$p99" "$lost" "$noerror"
}
fixed_qps=${FIXED_QPS:-10000}
v() { cat "$dir/$1"; }
echo "warm path: $names names, ${secs}s of dnsperf (-q 200) per server and protocol, each server on one core, dnsperf on the other, $rounds rounds taking turns:"
for round in $(seq 1 "$rounds"); do
  echo "round $round:"
  for mode in udp tcp; do
    run jitsu-dns "$PJ" "${pids[0]}" $mode
    run nsd "$PN" "${pids[1]}" $mode
    run knot "$PK" "${pids[2]}" $mode
  done
  awk -v j="$(v qps.jitsu-dns.udp)" -v n="$(v qps.nsd.udp)" -v k="$(v qps.knot.udp)" \
    -v cj="$(v cpu.jitsu-dns.udp)" -v cn="$(v cpu.nsd.udp)" -v ck="$(v cpu.knot.udp)" \
    -v tj="$(v qps.jitsu-dns.tcp)" -v tk="$(v qps.knot.tcp)" \
    -v pj="$(v p99.jitsu-dns)" -v pk="$(v p99.knot)" 'BEGIN {
    printf "  ratios (jitsu-dns over the other): udp q/s nsd %.2f knot %.2f; udp cpu/query nsd %.2f knot %.2f; tcp q/s knot %.2f; p99 knot / jitsu-dns %.2f\n", j / n, j / k, cn / cj, ck / cj, tj / tk, pk / pj
    printf "%.4f %.4f %.4f %.4f %.4f %.4f\n", j / n, j / k, cn / cj, ck / cj, tj / tk, pk / pj >>"/dev/stderr" }' 2>>"$dir/ratios"
done
median_ratio "$dir/ratios" 1 "udp q/s jitsu-dns / nsd"
median_ratio "$dir/ratios" 2 "udp q/s jitsu-dns / knot"
median_ratio "$dir/ratios" 3 "udp cpu per query nsd / jitsu-dns"
median_ratio "$dir/ratios" 4 "udp cpu per query knot / jitsu-dns"
median_ratio "$dir/ratios" 5 "tcp q/s jitsu-dns / knot"
median_ratio "$dir/ratios" 6 "p99 at $fixed_qps q/s knot / jitsu-dns"
echo "the client's own CPU (dnsperf, one core) in the last UDP run against jitsu-dns, to see whether it was the limit:"
TIMEFORMAT='  dnsperf: %U s user, %S s system in %R s'
time taskset -c 1 dnsperf -s 127.0.0.1 -p "$PJ" -d "$dir/queries" -l "$secs" -q 200 >/dev/null 2>&1
echo "  the cores meanwhile, in a second such run: $(cores_busy taskset -c 1 dnsperf -s 127.0.0.1 -p "$PJ" -d "$dir/queries" -l "$secs" -q 200)"

# The wire code alone, against libknot's packet functions.
echo "parse a query and write its answer, jitsu-dns's wire code against libknot's knot_pkt_*:"
"$build/bench/dns_wire_cmp" 2000000 "$rounds" | sed 's/^/  /'

# The cold path: a process guest with socket handoff.
cat >"$dir/cold.conf" <<CONF
[jitsu]
state-dir = $dir/cold-state
[dns]
zone = cold.test
forward = no
rate = 1000000
rate-burst = 1000000
[vm web]
exec = $build/examples/hello --name web --record $dir/starts
socket = tcp 127.0.0.1:$PH
address = 127.0.0.1:$PH
dns = web.cold.test
CONF
"$build/frontends/dns/jitsu-dns" -c "$dir/cold.conf" -l "$PC" 2>"$dir/cold.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "serving on" "$dir/cold.err" && break; sleep 0.05; done
"$build/bench/dns_cold" "$PC" web.cold.test "$PH" "$build/frontends/ctl/jitsu-ctl" "$dir/cold.conf" web 50
echo "the guest's own start, as libjitsu measured it (spawn to ready):"
"$build/frontends/ctl/jitsu-ctl" -c "$dir/cold.conf" status web | grep "cold start"

# A burst of 10,000 queries for one cold name: what the UDP socket's
# receive buffer holds while the loop works (udp-buffer; 0 keeps the
# kernel's default, about 250 queries).
for buf in 0 4M; do
  fd="$dir/flood-$buf"
  mkdir -p "$fd"
  printf '[jitsu]\nstate-dir = %s/state\n[dns]\nzone = flood.test\nforward = no\nrate = 1000000\nrate-burst = 1000000\nudp-buffer = %s\n[vm c]\nexec = /bin/sh -c "sleep 100000" %s\naddress = 127.0.0.1\ndns = c.flood.test\n' \
    "$fd" "$buf" "$dir" >"$fd/jitsu.conf"
  PF=$(free_port)
  "$build/frontends/dns/jitsu-dns" -c "$fd/jitsu.conf" -l "$PF" 2>"$fd/err" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "serving on" "$fd/err" && break; sleep 0.05; done
  echo "udp-buffer = $buf (the socket's: $(ss -Huamn "sport = :$PF" | sed -n 's/.*rb\([0-9]*\).*/\1/p' | head -1) bytes, the kernel's count):"
  "$build/bench/dns_flood" "$PF" c.flood.test 10000
done
