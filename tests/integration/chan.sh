#!/bin/bash
# The example channel pair through the example controller: chan_cat
# summons chan_echo by connecting to its name; 16 MiB come back intact;
# an unknown name is refused.
# usage: chan.sh CONTROLLER CHAN_ECHO CHAN_CAT
set -euo pipefail
controller=$1
echo_bin=$2
cat_bin=$3
dir=$(mktemp -d /tmp/jitsu-chan-XXXXXX)
. "$(dirname "$0")/lib.sh"
cpid=0
cleanup() {
  [ "$cpid" -gt 0 ] && kill "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null || true
  kill_marked "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; cat "$dir/controller.log" >&2 || true; exit 1; }

cat >"$dir/jitsu.conf" <<CONF
[jitsu]
state-dir = $dir/state
[vm echo]
exec = $echo_bin echo $dir
ready = notify
CONF
vg_init "$dir"
"${VG[@]}" "$controller" "$dir/jitsu.conf" >"$dir/controller.log" 2>&1 &
cpid=$!
for _ in $(seq 1 1200); do [ -S "$dir/state/rendezvous.sock" ] && break; sleep 0.05; done
export JITSU_RENDEZVOUS=$dir/state/rendezvous.sock

[ "$(echo "hello channel" | "$cat_bin" echo greeting)" = "hello channel" ] ||
  fail "no echo"
head -c 16777216 /dev/urandom >"$dir/in"
cat "$dir/in" | "$cat_bin" echo bulk >"$dir/out" || fail "bulk"
cmp -s "$dir/in" "$dir/out" || fail "16 MiB did not come back intact"
out=$(echo x | "$cat_bin" nosuchvm p 2>&1) && fail "an unknown name worked"
echo "$out" | grep "cannot connect: Connection refused" >/dev/null || fail "error: $out"
vg_check "$dir" || fail "memcheck found errors in the controller"
echo ok
