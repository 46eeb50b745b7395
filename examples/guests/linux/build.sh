#!/bin/sh
# Build the small Linux guest of the examples and tests from Debian
# packages only: the cloud kernel as a PVH ELF (vmlinux) and a busybox
# initramfs (initrd.cpio.gz) whose /init serves HTTP on port 80 (httpd.c,
# built here, static) and prints JITSU_READY on the serial console. Nothing
# is installed: the packages are fetched with apt-get download and
# unpacked with dpkg -x.
#
#   examples/guests/linux/build.sh [OUTDIR]
#
# OUTDIR defaults to $JITSU_GUEST_CACHE, else ~/.cache/jitsu/guests/linux.
# A build is cached per kernel version: a second run prints the paths and
# does nothing else. Needs: apt-get, dpkg, lz4, cpio, gzip, busybox-static,
# a C compiler and libc6-dev (a static httpd).
# Prints "KERNEL INITRD" on its last line. OUTDIR/vmlinux and
# OUTDIR/initrd.cpio.gz always name the newest build (the examples use
# them: the kernel's version changes with Debian's updates).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${JITSU_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jitsu/guests}/linux}
mkdir -p "$out"
out=$(cd "$out" && pwd)

latest() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/.*Depends: linux-image-\(.*-cloud-amd64\)$/\1/p' | head -n 1
}
kv=$(latest)
if [ -z "$kv" ] && [ "$(id -u)" -eq 0 ] && ! ls "$out"/vmlinux-* >/dev/null 2>&1; then
  apt-get update -q >/dev/null 2>&1 || true # no package lists yet
  kv=$(latest)
fi
if [ -z "$kv" ]; then
  # No package lists: use the newest cached build, if any.
  kv=$(ls "$out" 2>/dev/null | sed -n 's/^vmlinux-//p' | sort -V | tail -n 1)
  [ -n "$kv" ] || { echo "build.sh: no linux-image-cloud-amd64 in apt (run apt-get update)" >&2; exit 1; }
fi
kernel=$out/vmlinux-$kv
initrd=$out/initrd-$kv.cpio.gz
stamp=$(cat "$here/init" "$here/httpd.c" "$here/request.c" "$here/request.h" "$0" |
  md5sum | cut -c1-12)
# The stable names, replaced at once (a symlink renamed over the old).
stable() {
  ln -sfn "vmlinux-$kv" "$out/vmlinux.tmp" && mv -T "$out/vmlinux.tmp" "$out/vmlinux"
  ln -sfn "initrd-$kv.cpio.gz" "$out/initrd.tmp" &&
    mv -T "$out/initrd.tmp" "$out/initrd.cpio.gz"
}
if [ -s "$kernel" ] && [ -s "$initrd" ] && [ "$(cat "$out/stamp-$kv" 2>/dev/null)" = "$stamp" ]; then
  stable
  echo "$kernel $initrd"
  exit 0
fi
for tool in lz4 cpio gzip dpkg apt-get cc; do
  command -v $tool >/dev/null || { echo "build.sh: $tool is missing" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "build.sh: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"
apt-get download -q "linux-image-$kv" 2>&1 >/dev/null | grep -v "unsandboxed as root" >&2 || true
ls linux-image-"$kv"_*.deb >/dev/null
dpkg -x linux-image-"$kv"_*.deb pkg

# The bzImage wraps an LZ4 stream (magic 02 21 4c 18): cut there and
# decompress; the ELF inside has the PVH note QEMU boots directly. lz4
# warns about the trailing bytes of the wrapper: that is expected.
off=$(grep -obUaP '\x02\x21\x4c\x18' "pkg/boot/vmlinuz-$kv" | head -n 1 | cut -d: -f1)
[ -n "$off" ] || { echo "build.sh: no LZ4 stream in the kernel image" >&2; exit 1; }
tail -c +$((off + 1)) "pkg/boot/vmlinuz-$kv" | lz4 -dc > vmlinux 2>/dev/null || true
readelf -n vmlinux 2>/dev/null | grep 0x00000012 >/dev/null || \
  od -A n -t x1 -N 4 vmlinux | grep '7f 45 4c 46' >/dev/null || \
  { echo "build.sh: the kernel did not unpack to an ELF" >&2; exit 1; }

root=initramfs
mkdir -p $root/bin $root/dev $root/proc $root/sys $root/www $root/lib/modules $root/etc/acpi
cp /bin/busybox $root/bin/
for a in sh mount insmod ip usleep sleep arping acpid poweroff; do
  ln -s busybox $root/bin/$a
done
# The HTTP server: one process (busybox httpd forks for each request).
cc -O2 -static -o $root/bin/guest-httpd "$here/httpd.c" "$here/request.c" ||
  { echo "build.sh: cannot build httpd.c (apt-get install gcc libc6-dev)" >&2; exit 1; }
mods=pkg/lib/modules/$kv/kernel
for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_mmio \
         drivers/virtio/virtio_pci drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net drivers/input/evdev \
         drivers/acpi/button; do
  f=$mods/$m.ko
  [ -f "$f" ] && cp "$f" $root/lib/modules/
  [ -f "$f.xz" ] && xz -dc "$f.xz" > $root/lib/modules/$(basename "$m").ko
done
# busybox acpid runs ./PWRF/00000080 (under -c DIR) for the power button.
mkdir -p $root/etc/acpi/PWRF
printf '#!/bin/sh\npoweroff -f\n' > $root/etc/acpi/PWRF/00000080
chmod +x $root/etc/acpi/PWRF/00000080
cp "$here/init" $root/init
chmod +x $root/init
(cd $root && find . | sort | cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 > initrd.cpio.gz

mv vmlinux "$kernel.tmp" && mv "$kernel.tmp" "$kernel"
mv initrd.cpio.gz "$initrd.tmp" && mv "$initrd.tmp" "$initrd"
echo "$stamp" > "$out/stamp-$kv"
stable
echo "$kernel $initrd"
