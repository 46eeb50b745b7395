#!/bin/bash
# The unikernel end to end: requests to jitsu-http summon it under QEMU;
# 100 sequential and 20 concurrent requests; pause/resume, stop, and a
# save to disk with a request answered after the restore.
# usage: unikernel_http.sh JITSU_HTTP JITSU_CTL UNIKERNEL
set -euo pipefail
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/uni_lib.sh"
uni_begin unihttp "$@"
gp=$(free_port)
dp=$(free_port)
{
  printf '[jitsu]\nstate-dir = %s/state\n[http]\nlisten = 127.0.0.1:%s\n' "$dir" "$hp"
  uni_vm uni unikernel%20page%0A "$gp" uni.test
  uni_vm unidisk saved%20page%0A "$dp" disk.test "suspend = disk"
} >"$dir/jitsu.conf"
vg_init "$dir"
"${VG[@]}" "$http" -c "$dir/jitsu.conf" >"$dir/http.log" 2>&1 &
hpid=$!
c() { "$ctl" -s "$dir/state/control.sock" "$@"; }
for _ in $(seq 1 100); do c version >/dev/null 2>&1 && break; sleep 0.05; done

get() { curl -s -m 10 -H "Host: $1" "http://127.0.0.1:$hp${2:-/}"; }
headers=$(curl -s -m 20 -D - -o "$dir/body" -H "Host: uni.test" "http://127.0.0.1:$hp/")
echo "$headers" | grep "^HTTP/1.1 200" >/dev/null || fail "cold request: $headers"
echo "$headers" | grep -i "^X-Jitsu-Cold-Start:" >/dev/null || fail "no cold-start header"
[ "$(cat "$dir/body")" = "unikernel page" ] || fail "body: $(cat "$dir/body")"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: uni.test' "http://127.0.0.1:$hp/nope")" = 404 ] ||
  fail "no 404 for another path"

ok=0
for _ in $(seq 1 100); do
  [ "$(get uni.test)" = "unikernel page" ] && ok=$((ok + 1))
done
[ "$ok" = 100 ] || fail "$ok of 100 sequential requests answered"

urls=()
for _ in $(seq 1 20); do urls+=("http://127.0.0.1:$hp/"); done
codes=$(curl -s -m 20 -Z --parallel-immediate --parallel-max 20 -H "Host: uni.test" \
  -o /dev/null -w "%{http_code}\n" "${urls[@]}" || true)
n=$(echo "$codes" | grep -c "^200$" || true)
[ "$n" = 20 ] || fail "$n of 20 concurrent requests answered: $(echo $codes)"

c suspend uni | grep "uni: suspended" >/dev/null || fail "pause"
[ "$(get uni.test)" = "unikernel page" ] || fail "request after pause"
c status uni | grep "uni: ready" >/dev/null || fail "not resumed"
c stop uni | grep "uni: stopped" >/dev/null || fail "stop"
[ "$(get uni.test)" = "unikernel page" ] || fail "request after stop"

# Saved to disk: QEMU goes away; the next request restores it.
[ "$(get disk.test)" = "saved page" ] || fail "disk vm"
c suspend unidisk | grep "unidisk: suspended" >/dev/null || fail "save to disk"
! pgrep -f -- "guest=unidisk" >/dev/null || fail "QEMU still runs after the save"
[ -s "$dir/state/qemu/unidisk.suspend" ] || fail "no saved state"
[ "$(get disk.test)" = "saved page" ] || fail "request after the restore"
c status unidisk | grep "unidisk: ready" >/dev/null || fail "not restored"
c stop unidisk destroy >/dev/null
c stop uni destroy >/dev/null
! pgrep -f -- "$dir/uni.elf" >/dev/null || fail "QEMU left behind"
kill -TERM "$hpid"
wait "$hpid" || fail "jitsu-http exited with an error after SIGTERM"
hpid=0
vg_check "$dir" || fail "memcheck found errors in jitsu-http"
echo ok
