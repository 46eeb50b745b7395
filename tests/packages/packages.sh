#!/bin/bash
# The Debian packages: dpkg-buildpackage builds them from a copy of the
# tree (the unit suite runs in the build), lintian finds no error, and, as
# root, dpkg installs them, the installed jitsu-dns from /usr/sbin answers
# a query for a vm's name (kdig) and the installed jitsu-ctl lists it;
# then they are purged, and the system user they made is removed.
# usage: packages.sh SRC
set -euo pipefail
. "$(dirname "$0")/../integration/lib.sh"
src=$1
for tool in dpkg-buildpackage dh lintian kdig; do
  command -v "$tool" >/dev/null || {
    tap_skip "$tool is missing (scripts/setup.sh installs it)"
    tap_end
    exit 0
  }
done
test_dir packages
installed=()
made_user=
cleanup_packages() {
  [ "${#installed[@]}" -eq 0 ] || dpkg -P "${installed[@]}" >/dev/null 2>&1 || true
  [ -z "$made_user" ] || deluser --system --quiet _jitsu >/dev/null 2>&1 || true
  getent group _jitsu >/dev/null && [ -n "$made_user" ] && delgroup --system --quiet _jitsu >/dev/null 2>&1 || true
  test_dir_cleanup
}
trap cleanup_packages EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# A copy of what git tracks (or of the tree, less build directories).
mkdir "$dir/jitsu"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$src" ls-files -co --exclude-standard | (cd "$src" && tar -cf - -T -) |
    tar -xf - -C "$dir/jitsu"
else
  tar -C "$src" --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C "$dir/jitsu"
fi
(cd "$dir/jitsu" && dpkg-buildpackage -us -uc -b) >"$dir/build.log" 2>&1 ||
  fail "dpkg-buildpackage: $(tail -n 20 "$dir/build.log")"
grep -q "^Ok: *[1-9]" "$dir/build.log" || fail "the unit suite did not run in the build"
tap_ok "dpkg-buildpackage -us -uc -b (the unit suite passed in the build)"
lintian "$dir"/jitsu_*.changes >"$dir/lintian.txt" 2>&1 || true
if grep -q "^E: " "$dir/lintian.txt"; then
  fail "lintian: $(grep "^E: " "$dir/lintian.txt")"
fi
tap_ok "lintian: no error ($(grep -c "^[WI]: " "$dir/lintian.txt" || true) warnings and notes)"

if [ "$(id -u)" -ne 0 ]; then
  tap_skip "installing the packages needs root"
  tap_end
  exit 0
fi
if dpkg-query -W -f='${Status}\n' libjitsu1 jitsu-dns 2>/dev/null | grep "ok installed" >/dev/null; then
  tap_skip "jitsu packages are installed on this machine already: not replaced"
  tap_end
  exit 0
fi
getent passwd _jitsu >/dev/null || made_user=yes
debs=()
for d in "$dir"/*.deb; do
  case $d in *-dbgsym_*) continue ;; esac
  debs+=("$d")
  installed+=("$(dpkg-deb -f "$d" Package)")
done
dpkg -i "${debs[@]}" >"$dir/dpkg.log" 2>&1 || fail "dpkg -i: $(tail -n 20 "$dir/dpkg.log")"
[ -x /usr/sbin/jitsu-dns ] && [ -x /usr/bin/jitsu-ctl ] || fail "the programs were not installed"
[ -f /etc/jitsu/dns.conf ] || fail "no /etc/jitsu/dns.conf"
/usr/sbin/jitsu-dns -c /etc/jitsu/dns.conf --check >/dev/null || fail "the shipped dns.conf does not check"
port=$(free_port)
cat >"$dir/dns.conf" <<CONF
[jitsu]
state-dir = $dir/state
[dns]
listen = 127.0.0.1:$port
zone = pkg.test
forward = no
[vm web]
exec = /bin/sh -c 'sleep 1000' $dir
address = 192.0.2.7
dns = web.pkg.test
CONF
/usr/sbin/jitsu-dns -c "$dir/dns.conf" 2>"$dir/dns.err" &
pids+=($!)
for _ in $(seq 1 200); do grep -q "serving on" "$dir/dns.err" && break; sleep 0.05; done
answer=$(kdig @127.0.0.1 -p "$port" +time=5 +short web.pkg.test A)
[ "$answer" = 192.0.2.7 ] || fail "the installed jitsu-dns answered '$answer': $(cat "$dir/dns.err")"
/usr/bin/jitsu-ctl -c "$dir/dns.conf" list | grep -E "^web +process +ready" >/dev/null ||
  fail "the installed jitsu-ctl: $(/usr/bin/jitsu-ctl -c "$dir/dns.conf" list 2>&1)"
/usr/bin/jitsu-ctl -c "$dir/dns.conf" stop --all >/dev/null
tap_ok "installed: jitsu-dns from /usr/sbin answers, jitsu-ctl lists and stops"
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
dpkg -P "${installed[@]}" >"$dir/purge.log" 2>&1 || fail "dpkg -P: $(tail -n 10 "$dir/purge.log")"
installed=()
[ ! -e /usr/sbin/jitsu-dns ] && [ ! -e /etc/jitsu/dns.conf ] || fail "files left after the purge"
tap_ok "purged"
tap_end
