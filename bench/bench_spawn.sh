#!/bin/sh
# ninja -C build bench: what a cold start of a process guest costs, in one
# run: how many libraries the library and its programs load (ldd), the
# cold start against systemd-socket-activate and a plain fork/exec (three
# rounds, bench_spawn.c), and a burst of 1,000 cold starts on one loop
# with a loop-lag probe (spawn_burst.c).
#
#   bench/bench_spawn.sh BUILD_DIR
set -eu
build=$(cd "${1:-build}" && pwd)
echo "libraries each loads (lines of ldd):"
for f in libjitsu.so frontends/dns/jitsu-dns frontends/http/jitsu-http \
  frontends/ctl/jitsu-ctl libjitsu/backends/qemu.so libjitsu/backends/xl.so \
  libjitsu/backends/libvirt.so libjitsu/backends/vchan.so; do
  [ -e "$build/$f" ] && printf '  %-32s %4d\n' "$f" "$(ldd "$build/$f" | wc -l)"
done
"$build/bench/bench_spawn" -n "${RUNS:-100}" -r "${ROUNDS:-3}" \
  "$build/examples/controller" "$build/examples/hello"
"$build/bench/spawn_burst" -n "${BURST:-1000}"
