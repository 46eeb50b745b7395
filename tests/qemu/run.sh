#!/bin/sh
# Run the qemu suite: build (or find cached) the small Linux guest, then
# run the test program with the guests' paths in its environment.
#   run.sh TEST_PROGRAM PVH_GUEST LINUX_BUILD_SH UNIKERNEL
set -u
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "1..0 # SKIP qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
  exit 0
fi
export JITSU_PVH_GUEST="$2" JITSU_UNIKERNEL="$4"
if ! out=$("$3" | tail -n 1) || [ -z "$out" ]; then
  echo "the Linux guest could not be built ($3): see above" >&2
  exit 1
fi
export JITSU_LINUX_KERNEL="${out% *}" JITSU_LINUX_INITRD="${out#* }"
exec "$(dirname "$0")/../cmocka.sh" "$1"
