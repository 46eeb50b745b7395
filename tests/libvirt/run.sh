#!/bin/sh
# Run the libvirt suite: build (or find cached) the small Linux guest, then
# run the test program, which starts its own libvirtd daemons (vdaemon).
#   run.sh TEST_PROGRAM VDAEMON LINUX_BUILD_SH
set -u
if [ "$(id -u)" -ne 0 ]; then
  echo "1..0 # SKIP the libvirt tests start their own libvirtd daemons, which needs root"
  exit 0
fi
for tool in /usr/sbin/libvirtd qemu-system-x86_64; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool is not installed (apt-get install libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86)"
    exit 0
  fi
done
if ! id libvirt-qemu >/dev/null 2>&1; then
  echo "libvirt's QEMU driver needs the user libvirt-qemu: run scripts/setup.sh" >&2
  exit 1
fi
if ! out=$("$3" | tail -n 1) || [ -z "$out" ]; then
  echo "the Linux guest could not be built ($3): see above" >&2
  exit 1
fi
export JITSU_VDAEMON="$2"
export JITSU_LINUX_KERNEL="${out% *}" JITSU_LINUX_INITRD="${out#* }"
exec "$(dirname "$0")/../cmocka.sh" "$1"
