#!/bin/sh
# ninja -C build bench-qemu: the qemu backend against QEMU by hand.
#   bench_qemu.sh BENCH_QEMU PVH_GUEST LINUX_BUILD_SH
set -eu
guests=$("$3" | tail -n 1)
exec "$1" -n 20 "$2" $guests
