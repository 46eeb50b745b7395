#!/bin/sh
# ninja -C build bench-qemu: the qemu backend against QEMU by hand.
#   bench_qemu.sh BENCH_QEMU PVH_GUEST UNIKERNEL LINUX_BUILD_SH
set -eu
guests=$("$4" | tail -n 1)
exec "$1" -n 20 "$2" "$3" $guests
