#!/bin/bash
# Every config in examples/ loads with the real parser: jitsu-http or
# jitsu-dns --check (the example controller's configs hold the core keys,
# which jitsu-dns reads too), run where the examples' relative paths
# expect: a directory whose build/ is this build. The Linux guest of
# qemu.conf and libvirt.conf comes from examples/guests/linux/build.sh
# (cached; the qemu suite builds it too).
# usage: examples.sh SRC BUILD JITSU-DNS JITSU-HTTP
set -euo pipefail
. "$(dirname "$0")/lib.sh"
src=$1 build=$2 jdns=$3 jhttp=$4
dir=$(mktemp -d /tmp/jitsu-examples-XXXXXX)
trap 'rm -rf "$dir"' EXIT
ln -s "$src/examples" "$dir/examples"
ln -s "$build" "$dir/build"
cd "$dir"
linux=yes
examples/guests/linux/build.sh >"$dir/linux.log" 2>&1 || linux=
n=0
for conf in examples/*.conf; do
  name=$(basename "$conf")
  n=$((n + 1))
  if grep -Eq '^\[http\]|^http-host' "$conf"; then prog=$jhttp; else prog=$jdns; fi
  case $name in
  qemu.conf | libvirt.conf)
    if [ -z "$linux" ]; then
      tap_skip "$name: no Linux guest ($(tail -n 1 "$dir/linux.log"))"
      continue
    fi
    ;;
  esac
  if out=$("$prog" -c "$conf" --check 2>&1); then
    tap_ok "$name: $out"
    continue
  fi
  case $out in
  *"backend '"*"' is not available"* | *"unknown backend"*)
    tap_skip "$name: its backend is not built here: $out"
    continue
    ;;
  esac
  echo "FAIL: $name: $out" >&2
  exit 1
done
[ "$n" -ge 7 ] || { echo "FAIL: only $n configs in examples/" >&2; exit 1; }

# --check does not read zone files: zone.conf's is served for real (with a
# state directory of the test's own), and asked what its comments promise.
sed "s|^state-dir = .*|state-dir = $dir/zone-state|" examples/zone.conf >zone-test.conf
P=$(free_port)
"$jdns" -c zone-test.conf -l "$P" --no-control >"$dir/zone.out" 2>"$dir/zone.err" &
zpid=$!
trap 'kill "$zpid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 200); do grep -q "serving on" "$dir/zone.err" && break; sleep 0.05; done
mx=$(kdig @127.0.0.1 -p "$P" +time=3 +retry=0 example.test MX +short)
www=$(kdig @127.0.0.1 -p "$P" +time=3 +retry=0 www.example.test A +short)
kill "$zpid"
wait "$zpid" 2>/dev/null || true
[ "$mx" = "10 mail.example.test." ] && [ "$www" = "hello.example.test." ] || {
  echo "FAIL: zone.conf answers MX '$mx', www '$www': $(cat "$dir/zone.err")" >&2
  exit 1
}
tap_ok "zone.conf: its zone file is served"
tap_end
