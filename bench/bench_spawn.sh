#!/bin/bash
# ninja -C build bench: what a cold start of a process guest costs, in one
# run: how many libraries the library and its programs load (ldd), the
# cold start against systemd-socket-activate and a plain fork/exec (three
# rounds, bench_spawn.c), a burst of 1,000 cold starts on one loop with a
# loop-lag probe and a plain process beside it as the machine's baseline
# (spawn_burst.c), warm DNS answers while jitsu-dns answers a burst of 100
# cold names (dns_stall.c), and warm HTTP requests while jitsu-http
# answers 100 cold hosts (http_stall.c); three rounds of each, each with a
# fresh frontend and stopped guests. Every guest and server it starts is
# stopped at the end.
#
#   bench/bench_spawn.sh BUILD_DIR
set -eu
build=$(cd "${1:-build}" && pwd)
. "$(dirname "$0")/../tests/integration/lib.sh"
dir=$(mktemp -d /tmp/jitsu-bench-spawn-XXXXXX)
spid=0
cleanup() {
  [ "$spid" -gt 0 ] && kill "$spid" 2>/dev/null || true
  for sd in "$dir"/stall* "$dir"/hstall*; do kill_recorded "$sd/state"; done
  rm -rf "$dir"
}
trap cleanup EXIT
echo "libraries each loads (lines of ldd):"
for f in libjitsu.so frontends/dns/jitsu-dns frontends/http/jitsu-http \
  frontends/ctl/jitsu-ctl libjitsu/backends/qemu.so libjitsu/backends/xl.so \
  libjitsu/backends/libvirt.so libjitsu/backends/vchan.so; do
  [ -e "$build/$f" ] && printf '  %-32s %4d\n' "$f" "$(ldd "$build/$f" | wc -l)"
done
"$build/bench/bench_spawn" -n "${RUNS:-100}" -r "${ROUNDS:-3}" \
  "$build/examples/controller" "$build/examples/hello"
"$build/bench/spawn_burst" -n "${BURST:-1000}"
# One stall round: start FRONTEND (jitsu-dns or jitsu-http) with the
# config in $sd, run CLIENT against it, stop it and its guests (a
# frontend leaves its guests for adoption).
#   stall_round FRONTEND ARGS... -- CLIENT ARGS...
stall_round() {
  local args=()
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  shift
  "${args[@]}" 2>"$sd/err" &
  spid=$!
  for _ in $(seq 1 100); do grep -q "serving on" "$sd/err" && break; sleep 0.05; done
  "$@"
  kill "$spid"
  wait "$spid" 2>/dev/null || true
  spid=0
  kill_recorded "$sd/state"
}

if [ -x "$build/frontends/dns/jitsu-dns" ]; then
  port=$(free_port)
  for round in 1 2 3; do
    sd="$dir/stall$round"
    mkdir -p "$sd"
    {
      printf '[jitsu]\nstate-dir = %s/state\nmax-live = 200\n' "$sd"
      printf '[dns]\nzone = stall.test\nforward = no\nrate = 1000000\nrate-burst = 1000000\n'
      printf '[vm warm]\nexec = /bin/sh -c "sleep 100000" %s\naddress = 127.0.0.1\ndns = warm.stall.test\ndns-idle = 0\n' "$dir"
      for i in $(seq 0 99); do
        printf '[vm c%d]\nexec = /bin/sh -c "sleep 100000" %s\naddress = 127.0.0.1\ndns = c%d.stall.test\ndns-idle = 0\n' "$i" "$dir" "$i"
      done
    } >"$sd/jitsu.conf"
    echo "jitsu-dns, round $round:"
    stall_round "$build/frontends/dns/jitsu-dns" -c "$sd/jitsu.conf" -l "$port" \
      -- "$build/bench/dns_stall" "$port" warm.stall.test "c%d.stall.test" 100
  done
fi
[ -x "$build/frontends/http/jitsu-http" ] || exit 0
# The same through jitsu-http: warm requests on one keep-alive connection
# while 100 cold hosts are asked at once (socket-activated hello guests).
for round in 1 2 3; do
  sd="$dir/hstall$round"
  mkdir -p "$sd"
  used=" "
  port=$(free_port)
  {
    printf '[jitsu]\nstate-dir = %s/state\nmax-live = 200\n' "$sd"
    printf '[http]\nlisten = 127.0.0.1:%d\n' "$port"
    for i in $(seq 0 100); do
      p=$(free_port)
      name=c$i
      [ "$i" = 100 ] && name=warm wport=$p
      printf '[vm %s]\nexec = %s --name %s\nsocket = tcp 127.0.0.1:%d\nready = notify\naddress = 127.0.0.1:%d\nhttp-host = %s.stall.test\n' \
        "$name" "$build/examples/hello" "$name" "$p" "$p" "$name"
    done
  } >"$sd/jitsu.conf"
  echo "jitsu-http, round $round:"
  stall_round "$build/frontends/http/jitsu-http" -c "$sd/jitsu.conf" \
    -- "$build/bench/http_stall" "$port" warm.stall.test "c%d.stall.test" 100 "$wport"
done
