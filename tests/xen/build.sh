#!/bin/sh
# Build the parts of the Xen test harness that do not change with the
# project, from Debian packages only (apt-get download + dpkg -x; nothing
# is installed): the Xen 4.17 hypervisor, the generic amd64 kernel (dom0
# and the PV guest), a dom0 base initramfs with busybox, the Xen userspace
# and the xen modules, and the PV guest's initramfs.
#
#   tests/xen/build.sh [OUTDIR]
#
# OUTDIR defaults to $JITSU_XEN_CACHE, else ~/.cache/jitsu/xen. A build is
# cached per kernel version and script contents. Prints OUTDIR/VERSION on
# its last line; inside it: xen, vmlinuz, guest-vmlinux, dom0-base.cpio.gz,
# guest.cpio.gz. Needs apt-get, dpkg, cpio, gzip, xz, busybox-static and
# the host's libxen libraries (libxen-dev pulls them in).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${JITSU_XEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jitsu/xen}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
xenv=4.17

latest() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -n 1
}
kv=$(latest)
if [ -z "$kv" ] && [ "$(id -u)" -eq 0 ]; then
  apt-get update -q >/dev/null 2>&1 || true # no package lists yet
  kv=$(latest)
fi
if [ -z "$kv" ]; then
  kv=$(ls "$out" 2>/dev/null | grep -- '-amd64$' | sort -V | tail -n 1)
  [ -n "$kv" ] || { echo "build.sh: no linux-image-amd64 in apt (run apt-get update)" >&2; exit 1; }
fi
stamp=$(cat "$here/guest-init" "$here/dom0-init" "$0" | md5sum | cut -c1-12)
dir=$out/$kv
# OUTDIR/current names the newest build (examples/xen.conf uses it).
current() { ln -sfn "$kv" "$out/current.tmp" && mv -T "$out/current.tmp" "$out/current"; }
if [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
  current
  echo "$dir"
  exit 0
fi
for tool in cpio gzip xz dpkg apt-get ldd; do
  command -v $tool >/dev/null || { echo "build.sh: $tool is missing" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "build.sh: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"
apt-get download -q "linux-image-$kv" "xen-hypervisor-$xenv-amd64" \
  "xen-utils-$xenv" xenstore-utils xen-utils-common 2>&1 >/dev/null |
  grep -v "unsandboxed as root" >&2 || true
for d in *.deb; do dpkg -x "$d" pkg; done
[ -f "pkg/boot/vmlinuz-$kv" ] && [ -f "pkg/boot/xen-$xenv-amd64.gz" ] ||
  { echo "build.sh: the downloaded packages lack the kernel or Xen" >&2; exit 1; }
gzip -dc "pkg/boot/xen-$xenv-amd64.gz" > xen
cp "pkg/boot/vmlinuz-$kv" vmlinuz
# The guest boots faster from the decompressed ELF (libxl skips the
# decompression): the bzImage wraps an XZ stream.
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' vmlinuz | head -n 1 | cut -d: -f1)
[ -n "$off" ] || { echo "build.sh: no XZ stream in the kernel image" >&2; exit 1; }
tail -c +$((off + 1)) vmlinuz | xz -dc --single-stream > guest-vmlinux 2>/dev/null || true
od -A n -t x1 -N 4 guest-vmlinux | grep '7f 45 4c 46' >/dev/null ||
  { echo "build.sh: the kernel did not unpack to an ELF" >&2; exit 1; }

# Copy the libraries (and the loader) that the given binaries need.
copy_libs() { # ROOT BINARY...
  r=$1
  shift
  mkdir -p "$r/lib/x86_64-linux-gnu" "$r/lib64"
  for b in "$@"; do ldd "$b" 2>/dev/null | awk '/=> \//{print $3}'; done | sort -u |
    while read -r l; do cp -L "$l" "$r/lib/x86_64-linux-gnu/"; done
  cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
}
mods=pkg/lib/modules/$kv/kernel

# The PV guest: busybox and the xenstore client; its /init reports
# readiness in XenStore and on its console.
g=guest
mkdir -p $g/bin $g/sbin $g/dev $g/proc $g/sys $g/usr/bin
cp /bin/busybox $g/bin/
cp pkg/usr/bin/xenstore $g/usr/bin/
for n in read write rm; do ln -s xenstore $g/usr/bin/xenstore-$n; done
copy_libs $g $g/usr/bin/xenstore
mkdir -p $g/lib/modules
for m in xen-evtchn xen-gntdev xen-gntalloc; do # for libxenvchan
  cp "$mods/drivers/xen/$m.ko" $g/lib/modules/
done
cp "$mods/drivers/net/xen-netfront.ko" $g/lib/modules/ # a vif, if it has one
printf '#!/bin/busybox sh\nexec /bin/busybox poweroff -f\n' > $g/sbin/poweroff
printf '#!/bin/busybox sh\nexec /bin/busybox reboot -f\n' > $g/sbin/reboot
cp "$here/guest-init" $g/init
chmod +x $g/init $g/sbin/poweroff $g/sbin/reboot
(cd $g && find . | sort | cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 > guest.cpio.gz

# dom0: busybox, the Xen userspace, the modules; the test programs come
# in a second archive that tests/xen/run.sh appends for each run.
d=dom0
mkdir -p $d/bin $d/sbin $d/usr/bin $d/usr/lib/xen-$xenv/bin $d/proc $d/sys $d/dev \
  $d/tmp $d/run $d/etc $d/lib/modules $d/var/lib/xen $d/var/lib/xenstored \
  $d/var/log/xen/console $d/var/lock $d/guest
ln -s ../run $d/var/run
cp /bin/busybox $d/bin/
for b in xl xenstored xenconsoled libxl-save-helper xen-init-dom0 xenstore-control; do
  cp -a "pkg/usr/lib/xen-$xenv/bin/$b" "$d/usr/lib/xen-$xenv/bin/"
done
cp -a pkg/usr/bin/xenstore $d/usr/bin/
for n in read write ls list rm exists chmod watch; do ln -sf xenstore $d/usr/bin/xenstore-$n; done
cp -a pkg/etc/xen $d/etc/
copy_libs $d $d/usr/lib/xen-$xenv/bin/* $d/usr/bin/xenstore
# libxl loads libgcc_s at run time (pthread_cancel); without it xl aborts.
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 $d/lib/x86_64-linux-gnu/
for m in drivers/xen/xen-evtchn drivers/xen/xen-gntdev drivers/xen/xen-gntalloc \
         drivers/xen/xen-privcmd drivers/xen/xenfs/xenfs \
         drivers/net/xen-netback/xen-netback net/llc/llc net/802/stp \
         net/bridge/bridge; do
  cp "$mods/$m.ko" $d/lib/modules/
done
cp guest-vmlinux $d/guest/vmlinux
cp guest.cpio.gz $d/guest/
cp "$here/dom0-init" $d/init
chmod +x $d/init
(cd $d && find . | sort | cpio -o -H newc -R 0:0 2>/dev/null) | gzip -6 > dom0-base.cpio.gz

rm -rf "$dir"
mkdir -p "$dir"
mv xen vmlinuz guest-vmlinux guest.cpio.gz dom0-base.cpio.gz "$dir"/
echo "$stamp" > "$dir/stamp"
current
echo "$dir"
