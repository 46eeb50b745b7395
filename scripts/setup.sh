#!/bin/sh
# The two commands of the README, on a fresh Debian 12 as root (or sudo):
#
#   scripts/setup.sh run    install, build, start jitsu-dns on
#                           examples/local.conf (the process backend)
#   scripts/setup.sh test   install, build, run the whole test suite: a
#                           plain build, the unit and integration suites
#                           under valgrind's memcheck, an ASan/UBSan build,
#                           and a short libFuzzer run of every fuzz target
#   scripts/setup.sh bench  install the benchmarks' peers too (NSD, Knot,
#                           nginx, HAProxy, dnsperf, wrk; their services are
#                           not started), build, run ninja -C build bench,
#                           bench-dns, bench-http and bench-chan
set -eu
cd "$(dirname "$0")/.."

# Build and test dependencies, all from Debian's archive.
PACKAGES="meson ninja-build pkg-config gcc libc6-dev libuv1-dev libinih-dev \
libjansson-dev socat iproute2 util-linux libc-ares-dev libknot-dev knot-dnsutils libhttp-parser-dev \
bind9-dnsutils python3-websockets \
libcmocka-dev curl systemd valgrind man-db \
debhelper dpkg-dev fakeroot lintian build-essential \
qemu-system-x86 busybox-static cpio lz4 xz-utils libxen-dev \
libvirt-dev libxml2-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
FUZZ_PACKAGES="clang libclang-rt-14-dev"
# Packages that are services in Debian: installed without starting them
# (the tests use promtool only; the benchmarks start their own servers).
SERVICE_PACKAGES="prometheus"
BENCH_PACKAGES="dnsperf nsd knot wrk nginx-light haproxy"

install_packages() {
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "ok installed" >/dev/null ||
      missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install:$missing" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

# Install packages whose services Debian would start at once (NSD and Knot
# on port 53, nginx and HAProxy on 80, Prometheus on 9090): the tests and
# benchmarks start their own, on loopback ports.
install_services() {
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    guard=yes
  fi
  status=0
  (install_packages "$@") || status=$?
  [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
  [ "$status" -eq 0 ] || exit "$status"
}

# libvirt's QEMU driver will not start without the user libvirt-qemu,
# which Debian makes in libvirt-daemon-system (that package also pulls in
# systemd units, polkit and a firewall we do not need): make it here.
libvirt_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  id libvirt-qemu >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /var/lib/libvirt \
      --shell /usr/sbin/nologin libvirt-qemu
}

configure() { # DIR [meson options...]
  dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@"
  fi
  ninja -C "$dir"
}

case "${1:-}" in
run)
  install_packages $PACKAGES
  configure build
  exec build/frontends/dns/jitsu-dns -c examples/local.conf
  ;;
test)
  install_packages $PACKAGES $FUZZ_PACKAGES
  install_services $SERVICE_PACKAGES
  libvirt_user
  configure build
  meson test -C build --print-errorlogs
  # memcheck sees what ASan cannot: bad reads inside Debian's libuv.
  meson test -C build --setup valgrind --suite unit --suite integration \
    --suite qemu --suite libvirt --print-errorlogs
  configure build-asan -Db_sanitize=address,undefined -Db_lundef=false
  meson test -C build-asan --print-errorlogs
  CC=clang configure build-fuzz -Dfuzz=enabled -Dtests=disabled \
    -Dexamples=false -Db_sanitize=address,undefined -Db_lundef=false
  for target in build-fuzz/tests/fuzz/fuzz_*; do
    [ -f "$target" ] && [ -x "$target" ] || continue
    name=$(basename "$target")
    corpus=$(mktemp -d)
    cp tests/fuzz/corpus/"${name#fuzz_}"/* "$corpus"/
    # Bounded in time and in runs; a crash fails the suite.
    status=0
    JITSU_BACKEND_DIR=build-fuzz/libjitsu/backends \
      "$target" -max_total_time=30 -runs=3000000 -max_len=8192 \
        -artifact_prefix="$corpus/" "$corpus" >"$corpus.log" 2>&1 || status=$?
    tail -n 3 "$corpus.log"
    if [ "$status" -ne 0 ]; then
      grep -A40 "ERROR" "$corpus.log" | head -n 60
      echo "setup: $name found a crash (input kept in $corpus)" >&2
      exit 1
    fi
    rm -rf "$corpus" "$corpus.log"
  done
  echo "setup: all test suites passed"
  ;;
bench)
  install_packages $PACKAGES
  install_services $BENCH_PACKAGES
  configure build
  ninja -C build bench bench-dns bench-http bench-chan
  ;;
*)
  echo "usage: $0 run|test|bench" >&2
  exit 2
  ;;
esac
