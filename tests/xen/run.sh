#!/bin/sh
# Boot a real Xen 4.17 with a PV dom0 under QEMU (TCG: this machine's KVM
# cannot run Xen), run a program inside dom0 and pass its TAP output on.
#
#   run.sh BUILD_SH RUN [FILE...] [-- GUEST_RUN [GUEST_FILE...]]
#
# BUILD_SH is tests/xen/build.sh (Xen, kernels, base initramfs; cached).
# RUN becomes /jitsu/run in dom0 and the FILEs go beside it, each with the
# shared libraries it needs. After "--": GUEST_RUN and the GUEST_FILEs
# (with their libraries) go into /jitsu of a copy of the PV guest's
# initramfs, /jitsu/guest.cpio in dom0, whose /init runs GUEST_RUN
# before it reports readiness. Lines RUN prints with the prefix "JXT " come
# back over the serial console and are printed without it: RUN prints TAP.
# Backend modules among the FILEs are found there (JITSU_BACKEND_DIR=/jitsu
# in dom0 and in the guest).
# JITSU_XEN_TIMEOUT (seconds, 2400) bounds the whole run, a guard against
# a hang only: the suite takes about 400 s, 700 s under ASan, and about
# twice that on a loaded machine (each test also has an alarm of its own
# in dom0, test_xen.c). The serial log of a failed run is kept in the
# test's log. JITSU_XEN_TESTS (a cmocka test filter, e.g. "test_crash")
# and JITSU_TEST_VERBOSE are passed into dom0.
set -u
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "1..0 # SKIP qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
  exit 0
fi
build=$1
run=$2
shift 2
if ! dir=$("$build" | tail -n 1) || [ ! -f "$dir/xen" ]; then
  echo "Bail out! the Xen harness could not be built ($build): see above"
  exit 1
fi
tmp=$(mktemp -d /tmp/jitsu-xen.XXXXXX)
qpid=
cleanup() {
  [ -n "$qpid" ] && kill -KILL "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

rd=$tmp/rd
mkdir -p "$rd/jitsu" "$rd/lib/x86_64-linux-gnu"
cp "$run" "$rd/jitsu/run"
# Settings passed into dom0 (dom0-tests reads them): a test filter and the
# library's verbose log, for debugging one test.
for v in JITSU_XEN_TESTS JITSU_XEN_ALARM JITSU_TEST_VERBOSE JITSU_XEN_BENCH_RUNS \
    JITSU_BENCH_RT ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
  eval "val=\${$v:-}"
  [ -n "$val" ] && printf "export %s='%s'\n" "$v" "$val"
done > "$rd/jitsu/env"
echo "export JITSU_BACKEND_DIR=/jitsu" >> "$rd/jitsu/env"
chmod +x "$rd/jitsu/run"
# Copy FILEs into ROOT/jitsu and their libraries into ROOT/lib.
add_files() { # ROOT FILE...
  r=$1
  shift
  mkdir -p "$r/jitsu" "$r/lib/x86_64-linux-gnu"
  for f in "$@"; do
    cp "$f" "$r/jitsu/"
    ldd "$f" 2>/dev/null | awk '/=> \//{print $3}'
  done | sort -u | while read -r l; do cp -L "$l" "$r/lib/x86_64-linux-gnu/"; done
  # loaded at run time by pthread_cancel (libxenstore's xs_close)
  cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$r/lib/x86_64-linux-gnu/"
}
# The archive of ROOT appended to (base), 4-byte aligned after zeros,
# compressed with FILTER (libxc decompresses a guest's gzip ramdisk, only
# its first member: a guest's ramdisk is kept uncompressed).
cpio_append() { # BASE ROOT OUT FILTER
  cp "$1" "$3"
  size=$(stat -c %s "$3")
  head -c $((512 - size % 512)) /dev/zero >> "$3"
  (cd "$2" && find . | sort | cpio -o -H newc -R 0:0 2>/dev/null) | $4 >> "$3"
}
files=
guest=
for f in "$@"; do
  if [ "$f" = -- ]; then
    guest=yes
  elif [ -n "$guest" ]; then
    guest="$guest $f"
  else
    files="$files $f"
  fi
done
add_files "$rd" $files
if [ -n "$guest" ] && [ "$guest" != yes ]; then
  set -- ${guest#yes }
  grd=$tmp/guest-rd
  add_files "$grd" "$@"
  mv "$grd/jitsu/$(basename "$1")" "$grd/jitsu/guest-run"
  chmod +x "$grd/jitsu/guest-run"
  gzip -dc "$dir/guest.cpio.gz" > "$tmp/guest-base.cpio"
  cpio_append "$tmp/guest-base.cpio" "$grd" "$rd/jitsu/guest.cpio" cat
fi
# Linux unpacks concatenated archives: the cached base, then this run's.
cpio_append "$dir/dom0-base.cpio.gz" "$rd" "$tmp/dom0.cpio" "gzip -1"

xenargs="dom0_mem=1024M,max:1024M console=com1 com1=115200,8n1 loglvl=warning guest_loglvl=warning noreboot"
dom0args="console=hvc0 quiet loglevel=1"
boot() {
  qemu-system-x86_64 -M pc -accel tcg -cpu qemu64 -m 2048 -smp 2 \
    -display none -monitor none -no-reboot -nodefaults \
    -serial "file:$tmp/serial" \
    -kernel "$dir/xen" -append "$xenargs" \
    -initrd "$dir/vmlinuz $dom0args,$tmp/dom0.cpio" </dev/null >"$tmp/qemu.log" 2>&1 &
  qpid=$!
}
boot

limit=${JITSU_XEN_TIMEOUT:-2400}
# Nested TCG on a starved host has been seen to hang dom0's kernel at its
# first line ("about to get started...") for good. A boot that shows no
# test result and no new console output for this long is tried once more;
# a hang once tests run is a failure.
stall=${JITSU_XEN_BOOT_STALL:-240}
start=$(date +%s)
seen=0
seen_at=$start
retried=
status=
while :; do
  if grep -q "XEN-HARNESS: END" "$tmp/serial" 2>/dev/null; then
    status=$(sed -n 's/.*XEN-HARNESS: END \([0-9]*\).*/\1/p' "$tmp/serial" | head -n 1)
    break
  fi
  if ! kill -0 "$qpid" 2>/dev/null; then
    status=qemu
    break
  fi
  now=$(date +%s)
  if [ $((now - start)) -ge "$limit" ]; then
    status=timeout
    break
  fi
  size=$(stat -c %s "$tmp/serial" 2>/dev/null || echo 0)
  if [ "$size" -ne "$seen" ]; then
    seen=$size
    seen_at=$now
  elif [ -z "$retried" ] && [ $((now - seen_at)) -ge "$stall" ] &&
    ! grep -q "^JXT " "$tmp/serial" 2>/dev/null; then
    echo "# dom0's boot stalled for $stall s; booting once more" >&2
    kill "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
    mv "$tmp/serial" "$tmp/serial.stalled"
    retried=yes
    boot
    start=$now
    seen=0
    seen_at=$now
  fi
  sleep 0.5
done
tr -d '\r' < "$tmp/serial" | sed -n 's/^JXT //p' > "$tmp/tap"
cat "$tmp/tap"
plan=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' "$tmp/tap" | head -n 1)
results=$(grep -c -E '^(not )?ok ' "$tmp/tap")
if [ "$status" = 0 ] && [ -z "$plan" ]; then
  echo "Bail out! no TAP plan line came back from dom0"
  status=noplan
elif [ "$status" = 0 ] && [ "$results" -ne "$plan" ]; then
  echo "Bail out! $results results for a plan of $plan"
  status=short
fi
case $status in
0) exit 0 ;;
qemu) echo "Bail out! QEMU exited before dom0 finished: $(tail -n 3 "$tmp/qemu.log")" ;;
timeout) echo "Bail out! dom0 did not finish within $limit s" ;;
*) echo "# dom0's program ended with status $status" ;;
esac
echo "# the serial console, for the record:" >&2
tr -d '\r' < "$tmp/serial" | tail -n 150 >&2
exit 1
