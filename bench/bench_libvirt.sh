#!/bin/sh
# ninja -C build bench-libvirt: the libvirt backend against the qemu
# backend and QEMU by hand (root: it starts a private libvirtd).
#   bench_libvirt.sh BENCH_LIBVIRT VDAEMON LINUX_BUILD_SH
set -eu
guests=$("$3" | tail -n 1)
exec "$1" -n "${JITSU_BENCH_N:-5}" "$2" $guests
