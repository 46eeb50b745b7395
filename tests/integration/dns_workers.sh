#!/bin/bash
# jitsu-dns with workers = 3 (three loops answer UDP, each with its own
# socket on the same address, SO_REUSEPORT): warm names, static records
# and negative answers come from every loop; a cold name that reaches a
# worker is handed to the main loop, which summons and holds the answer;
# queries that only a worker answered keep their guest from the idle
# policy; reloads under load change the names every loop answers; the
# counters add up; out-of-range values are refused with FILE:LINE.
# usage: dns_workers.sh JITSU-DNS JITSU-CTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
jdns=$1
ctl_bin=$2
test_dir dns-workers
vg_init "$dir"
fail() { fail_with_logs "$@"; }
ok() { tap_ok "$@"; }

P=$(free_port)
q() { kdig @127.0.0.1 -p "$P" +time=5 +retry=1 "$@"; }
short() { q "$@" +short | sed "s/ *$//"; }
# A guest is a sleep that carries the test's directory, for the cleanup.
vm() { # NAME ADDRESS [KEY = VALUE lines]
  printf '[vm %s]\nexec = /bin/sh -c "sleep 1000" %s\naddress = %s\ndns = %s.w.test\n' \
    "$1" "$dir" "$2" "$1"
  shift 2
  for line in "$@"; do echo "$line"; done
}
config() { # extra vm sections on stdin
  cat <<CONF
[jitsu]
state-dir = $dir/state
[dns]
zone = w.test file=$dir/w.test.zone
forward = no
workers = 3
rate = 1000
rate-burst = 1000
CONF
  cat
}
cat >"$dir/w.test.zone" <<ZONE
\$TTL 300
@     IN SOA ns1 hostmaster 1 3600 600 86400 120
      IN NS  ns1
ns1   IN A   192.0.2.53
mail  IN MX  10 ns1
ZONE
{
  for i in $(seq 1 20); do vm "c$i" "192.0.2.$i"; done
  vm idle 192.0.2.100 "dns-idle = 2s"
} | config >"$dir/main.conf"
"${VG[@]}" "$jdns" -c "$dir/main.conf" -l "$P" >"$dir/main.out" 2>"$dir/main.err" &
pids+=($!)
wait_serving "$dir/main.err" || fail "jitsu-dns did not start"
ctl() { "$ctl_bin" -c "$dir/main.conf" "$@"; }
stat() { ctl stats | awk -v k="$1" '$1 == k {print $2}'; }
[ "$(stat workers)" = 3 ] || fail "workers: $(stat workers)"
ok "three loops"

# --- cold names: every one is summoned and answered, whichever socket ---
# (kdig takes a new source port each time; the kernel picks the socket.)
for i in $(seq 1 20); do
  [ "$(short "c$i.w.test" A)" = "192.0.2.$i" ] || fail "c$i: $(q "c$i.w.test" A)"
done
[ "$(ctl list | grep -c ' ready')" -ge 20 ] || fail "not all summoned: $(ctl list)"
# 20 queries over 3 sockets: that none reached a worker has odds 3^-20.
[ "$(stat handed_over_total)" -gt 0 ] || fail "no cold query came through a worker"
ok "cold names through the workers"

# --- warm, static and negative answers from every loop ------------------
for _ in $(seq 1 30); do
  [ "$(short c3.w.test A)" = 192.0.2.3 ] || fail "warm"
  [ "$(short mail.w.test MX)" = "10 ns1.w.test." ] || fail "static"
  q nope.w.test A | grep "status: NXDOMAIN" >/dev/null || fail "NXDOMAIN"
done
sleep 0.5 # the workers publish their counters every 200 ms
[ "$(stat worker_queries_udp_total)" -gt 0 ] || fail "the workers answered nothing"
n=$(stat queries_udp_total)
[ "$n" -ge 110 ] || fail "queries_udp_total $n"
ok "warm answers from every loop ($(stat worker_queries_udp_total) of $n by workers)"

# --- a worker's answers keep the guest from the idle policy -------------
# Find a source port that a worker serves (the kernel keeps a port's
# socket while the group stays the same).
# (A port that something else holds is skipped.)
port=""
base=$((20000 + RANDOM % 10000))
for p in $(seq "$base" $((base + 29))); do
  before=$(stat worker_queries_udp_total)
  q -b "127.0.0.1#$p" idle.w.test A >/dev/null 2>&1 || continue
  sleep 0.5
  if [ "$(stat worker_queries_udp_total)" -gt "$before" ]; then
    port=$p
    break
  fi
done
[ -n "$port" ] || fail "no source port reached a worker"
# Warm it from there for 6 s (three times its dns-idle of 2 s), a query
# every 0.3 s: the idle policy must not stop it.
for _ in $(seq 1 20); do
  [ "$(q -b "127.0.0.1#$port" idle.w.test A +short)" = 192.0.2.100 ] || fail "idle's answer"
  sleep 0.3
done
ctl status idle | grep -E "cold starts 1," >/dev/null || fail "stopped while a worker answered: $(ctl status idle)"
ctl list | grep -E "^idle +process +ready" >/dev/null || fail "idle is not ready: $(ctl list)"
ok "a worker's queries count as activity"

# --- reloads under load: the names change for every loop ----------------
(for _ in $(seq 1 300); do kdig @127.0.0.1 -p "$P" +time=1 +retry=0 c5.w.test A >/dev/null 2>&1 || true; done) &
load=$!
pids+=("$load") # a failure below must not wait for its 300 queries
for round in 1 2 3 4; do
  { for i in $(seq 1 20); do vm "c$i" "192.0.2.$i"; done
    vm "r$round" "198.51.100.$round"; } | config >"$dir/main.conf"
  ctl reload >/dev/null || fail "reload $round"
  [ "$(short "r$round.w.test" A)" = "198.51.100.$round" ] || fail "r$round after its reload"
  if [ "$round" -gt 1 ]; then
    q "r$((round - 1)).w.test" A | grep "status: NXDOMAIN" >/dev/null ||
      fail "r$((round - 1)) answered after its removal: $(q "r$((round - 1)).w.test" A)"
  fi
done
wait "$load"
# Every loop now answers the new names: 30 queries from fresh ports.
for _ in $(seq 1 30); do
  q r3.w.test A | grep "status: NXDOMAIN" >/dev/null || fail "a loop still has r3"
  [ "$(short r4.w.test A)" = 198.51.100.4 ] || fail "a loop lacks r4"
done
kill -0 "${pids[0]}" || fail "jitsu-dns died under reloads"
ok "reloads under load"

# --- out of range: refused at its line ----------------------------------
for bad in 0 65; do
  sed "s/^workers = 3/workers = $bad/" "$dir/main.conf" >"$dir/bad.conf"
  line=$(grep -n "^workers" "$dir/bad.conf" | cut -d: -f1)
  if "$jdns" --check -c "$dir/bad.conf" >/dev/null 2>"$dir/bad.txt"; then fail "workers = $bad passed"; fi
  grep "bad.conf:$line: workers: takes 1 to 64" "$dir/bad.txt" >/dev/null || fail "workers = $bad: $(cat "$dir/bad.txt")"
done
ok "workers out of range"

kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids=()
vg_check "$dir"
tap_end
