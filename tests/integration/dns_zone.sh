#!/bin/bash
# jitsu-dns serving a zone file (zone = NAME file=PATH), with kdig and dig:
# every type as written (MX, TXT, SRV, CAA), SOA and NS from the file,
# CNAME chains inside the zone, a delegation with glue, truncation without
# EDNS, negative answers with the file's SOA, vm names beside static ones
# (and refused where they clash), file:line for a broken file, and reload.
# usage: dns_zone.sh JITSU-DNS HELLO JITSU-CTL
set -euo pipefail
. "$(dirname "$0")/lib.sh"
jdns=$1
hello=$2
ctl_bin=$3
test_dir dns-zone
vg_init "$dir"
fail() { fail_with_logs "$@"; }
ok() { tap_ok "$@"; }

P=$(free_port) W=$(free_port)
q() { kdig @127.0.0.1 -p "$P" +time=5 +retry=0 "$@"; }
short() { q "$@" +short | sed "s/ *$//"; }

# A TXT record of about 900 bytes: four strings of 220.
long=""
for _ in 1 2 3 4; do long="$long \"$(printf 'x%.0s' $(seq 1 220))\""; done
cat >"$dir/example.test.zone" <<ZONE
\$TTL 300
@        IN SOA  ns1 hostmaster 2026120201 3600 600 86400 120
         IN NS   ns1
         IN MX   10 mail
         IN TXT  "v=spf1 -all"
         IN CAA  0 issue "ca.example"
ns1      IN A    192.0.2.53
mail     IN A    192.0.2.25
         IN AAAA 2001:db8::25
alias    IN CNAME chain
chain    IN CNAME mail
www      IN CNAME web
ext      IN CNAME www.example.org.
_http._tcp IN SRV 0 5 80 web
big      IN TXT  $long
web      IN TXT  "a vm's name may have other static data"
sub      IN NS   ns.sub
ns.sub   IN A    192.0.2.54
a.b.c    IN A    192.0.2.99
loop1    IN CNAME loop2
loop2    IN CNAME loop1
ZONE
cat >"$dir/main.conf" <<CONF
[jitsu]
state-dir = $dir/state
[dns]
zone = example.test file=$dir/example.test.zone
forward = no
[vm web]
exec = $hello --name web
socket = tcp 127.0.0.1:$W
address = 127.0.0.1:$W
dns = web.example.test
CONF
"${VG[@]}" "$jdns" -c "$dir/main.conf" -l "$P" >"$dir/main.out" 2>"$dir/main.err" &
pids+=($!)
wait_serving "$dir/main.err" || fail "jitsu-dns did not start"
ctl() { "$ctl_bin" -c "$dir/main.conf" "$@"; }

# --- every type as written; SOA and NS from the file ----------------------
[ "$(short example.test MX)" = "10 mail.example.test." ] || fail "MX: $(short example.test MX)"
[ "$(short example.test TXT)" = '"v=spf1 -all"' ] || fail "TXT"
[ "$(short example.test CAA)" = '0 issue "ca.example"' ] || fail "CAA: $(short example.test CAA)"
[ "$(short _http._tcp.example.test SRV)" = "0 5 80 web.example.test." ] || fail "SRV"
[ "$(short example.test NS)" = "ns1.example.test." ] || fail "NS"
[ "$(short example.test SOA)" = "ns1.example.test. hostmaster.example.test. 2026120201 3600 600 86400 120" ] ||
  fail "SOA: $(short example.test SOA)"
q example.test MX >"$dir/mx.txt"
grep -qi "flags: qr aa" "$dir/mx.txt" || fail "no AA: $(cat "$dir/mx.txt")"
ok "static records"

# --- CNAME chains inside the zone; out of it the resolver goes on ---------
q alias.example.test AAAA >"$dir/cn.txt"
grep -Eq "^alias.example.test.\s+300\s+IN\s+CNAME\s+chain.example.test.$" "$dir/cn.txt" &&
  grep -Eq "^chain.example.test.\s+300\s+IN\s+CNAME\s+mail.example.test.$" "$dir/cn.txt" &&
  grep -Eq "^mail.example.test.\s+300\s+IN\s+AAAA\s+2001:db8::25$" "$dir/cn.txt" ||
  fail "CNAME chain: $(cat "$dir/cn.txt")"
[ "$(short alias.example.test CNAME)" = "chain.example.test." ] || fail "a CNAME query"
[ "$(q loop1.example.test A | grep -c CNAME)" -eq 2 ] || fail "a CNAME loop: $(q loop1.example.test A)"
[ "$(short ext.example.test A)" = "www.example.org." ] || fail "an external CNAME"
# To a vm's name: the CNAME, and the vm is summoned when its name is asked.
[ "$(short www.example.test A)" = "web.example.test." ] || fail "CNAME to a vm"
ctl list | grep -E "^web +process +stopped" >/dev/null || fail "a CNAME answer summoned web"
[ "$(short web.example.test A)" = "127.0.0.1" ] || fail "the vm's address"
ctl list | grep -E "^web +process +ready" >/dev/null || fail "web was not summoned"
[ "$(short web.example.test TXT)" = "\"a vm's name may have other static data\"" ] || fail "TXT at a vm name"
ok "CNAME chains and vm names"

# --- a delegation: referral with glue; DS is answered by us ----------------
q x.sub.example.test A >"$dir/ref.txt"
grep -q "status: NOERROR" "$dir/ref.txt" || fail "referral: $(cat "$dir/ref.txt")"
grep -qi "flags: qr aa" "$dir/ref.txt" && fail "a referral is not authoritative"
grep -q "ANSWER: 0" "$dir/ref.txt" || fail "a referral with answers"
grep -Eq "^sub.example.test.\s+300\s+IN\s+NS\s+ns.sub.example.test.$" "$dir/ref.txt" &&
  grep -Eq "^ns.sub.example.test.\s+300\s+IN\s+A\s+192.0.2.54$" "$dir/ref.txt" ||
  fail "referral NS and glue: $(cat "$dir/ref.txt")"
q sub.example.test DS >"$dir/ds.txt"
grep -q "status: NOERROR" "$dir/ds.txt" && grep -qi "flags: qr aa" "$dir/ds.txt" &&
  grep -q "ANSWER: 0" "$dir/ds.txt" || fail "DS at the cut: $(cat "$dir/ds.txt")"
ok "delegation"

# --- size: TC over UDP without EDNS, whole with EDNS and over TCP ---------
dig @127.0.0.1 -p "$P" big.example.test TXT +noedns +ignore +time=5 >"$dir/tc.txt"
grep -Eq "flags: qr aa tc" "$dir/tc.txt" && grep -q "ANSWER: 0" "$dir/tc.txt" ||
  fail "no TC without EDNS: $(cat "$dir/tc.txt")"
dig @127.0.0.1 -p "$P" big.example.test TXT +bufsize=1232 +ignore +time=5 >"$dir/edns.txt"
grep -Eq "flags: qr aa rd;|flags: qr aa;" "$dir/edns.txt" && grep -q "ANSWER: 1" "$dir/edns.txt" ||
  fail "EDNS: $(cat "$dir/edns.txt")"
n=$(grep -o 'MSG SIZE  rcvd: [0-9]*' "$dir/edns.txt" | awk '{print $4}')
[ "$n" -gt 512 ] && [ "$n" -le 1232 ] || fail "EDNS answer of $n bytes"
[ "$(q +tcp big.example.test TXT +short | wc -c)" -gt 880 ] || fail "TCP"
ok "truncation"

# --- negative answers: the file's SOA, its minimum as the TTL -------------
q nope.example.test A >"$dir/nx.txt"
grep -q "status: NXDOMAIN" "$dir/nx.txt" &&
  grep -Eq "^example.test.\s+120\s+IN\s+SOA\s+ns1.example.test. hostmaster.example.test. 2026120201" "$dir/nx.txt" ||
  fail "NXDOMAIN: $(cat "$dir/nx.txt")"
q mail.example.test MX >"$dir/nd.txt"
grep -q "status: NOERROR" "$dir/nd.txt" && grep -q "ANSWER: 0" "$dir/nd.txt" ||
  fail "NODATA: $(cat "$dir/nd.txt")"
q b.c.example.test A >"$dir/ent.txt" # between the apex and a.b.c: exists
grep -q "status: NOERROR" "$dir/ent.txt" || fail "an empty non-terminal: $(cat "$dir/ent.txt")"
ok "negative answers"

# --- a large zone: 5,000 names under two levels (the table grows) --------
{
  cat "$dir/example.test.zone"
  for i in $(seq 1 5000); do echo "h$i.g$((i % 50)) IN A 10.$((i / 256 % 256)).$((i % 256)).1"; done
} >"$dir/big.zone"
sed "s|file=$dir/example.test.zone|file=$dir/big.zone|" "$dir/main.conf" >"$dir/big.conf"
cp "$dir/main.conf" "$dir/main.conf.keep"
cp "$dir/big.conf" "$dir/main.conf"
ctl reload >/dev/null || fail "the large zone did not load"
for i in 1 2500 5000; do
  [ "$(short "h$i.g$((i % 50)).example.test" A)" = "10.$((i / 256 % 256)).$((i % 256)).1" ] ||
    fail "h$i in the large zone: $(q "h$i.g$((i % 50)).example.test" A)"
done
q g7.example.test A | grep "status: NOERROR" >/dev/null || fail "an empty non-terminal of the large zone"
q h1.g2.example.test A | grep "status: NXDOMAIN" >/dev/null || fail "a name the large zone lacks"
[ "$(short example.test MX)" = "10 mail.example.test." ] || fail "the large zone's MX"
cp "$dir/main.conf.keep" "$dir/main.conf"
ctl reload >/dev/null || fail "back to the small zone"
q h1.g1.example.test A | grep "status: NXDOMAIN" >/dev/null || fail "the large zone's names stayed"
ok "a large zone"

# --- reload: the file is read again; a broken one changes nothing ---------
printf 'new IN A 192.0.2.77\n' >>"$dir/example.test.zone"
ctl reload >/dev/null
[ "$(short new.example.test A)" = "192.0.2.77" ] || fail "not re-read on reload"
printf 'broken IN A 999.0.0.1\n' >>"$dir/example.test.zone"
zline=$(grep -n "^zone = example.test file=" "$dir/main.conf" | cut -d: -f1)
if out=$(ctl reload 2>&1); then fail "a broken zone file was reloaded: $out"; fi
echo "$out" | grep "main.conf:$zline: zone: .*example.test.zone:$(wc -l <"$dir/example.test.zone"): " >/dev/null ||
  fail "the reload's error does not name both lines: $out"
[ "$(short new.example.test A)" = "192.0.2.77" ] || fail "a broken file changed the names"
ok "reload"

# --- files that cannot load: FILE:LINE, and jitsu-dns does not start ------
refuse() { # ZONE-TEXT VM-NAME WHAT
  printf "$1" >"$dir/bad.zone"
  sed "s|file=$dir/example.test.zone|file=$dir/bad.zone|; s|dns = web.example.test|dns = $2|;
       s|$dir/state|$dir/bad-state|; s|:$W\$|:$(free_port)|" "$dir/main.conf" >"$dir/bad.conf"
  local st=0
  timeout 20 "$jdns" -c "$dir/bad.conf" -l "$(free_port)" >/dev/null 2>"$dir/bad.txt" || st=$?
  [ "$st" -ne 0 ] && [ "$st" -ne 124 ] || fail "$3: started anyway ($st)"
  grep -q -- "$3" "$dir/bad.txt" || fail "$3: $(cat "$dir/bad.txt")"
  kill_marked "$dir/bad-state"
  # --check reads the zone file too (a clash with a vm's name is found
  # only when the names are built: --check defines no vm).
  if [ "${4:-}" = check ]; then
    "$jdns" --check -c "$dir/bad.conf" >/dev/null 2>"$dir/bad.txt" && fail "$3: --check passed"
    grep -q -- "$3" "$dir/bad.txt" || fail "$3 (--check): $(cat "$dir/bad.txt")"
  fi
}
refuse '@ SOA ns hm 1 2 3 4 5\nx IN A 999.1.1.1\n' web.example.test "bad.zone:2: " check
refuse 'web CNAME mail\n' web.example.test "dns 'web.example.test' is a CNAME in $dir/bad.zone:1"
refuse 'sub NS ns\n' a.sub.example.test "is delegated in $dir/bad.zone:1"
refuse 'x CNAME a\nx TXT "b"\n' web.example.test "bad.zone:2: 'x.example.test' has a CNAME and other data" check
refuse 'www.example.org. A 192.0.2.1\n' web.example.test "bad.zone:1: 'www.example.org' is outside the zone" check
refuse '$INCLUDE /etc/hostname\n' web.example.test "bad.zone:1: \$INCLUDE is not supported" check
ok "refused files"

vg_check "$dir"
tap_end
