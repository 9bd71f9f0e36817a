#!/usr/bin/env bash
# Builds the initramfs of the Linux guest QEMU hints with: busybox plus the virtio balloon driver of Debian's kernel
# (virtio, virtio_pci and virtio_balloon are modules there). The guest's init fills FILL MiB of tmpfs with non-zero
# data and deletes it, so those pages are free but stale (the work our memhog guest does), prints "guest: ready" on
# the serial port and then a heartbeat every two seconds, so a destination shows that the guest runs on.
# With a second argument, the static program DIRTY goes in as /bin/dirty, and a kernel command line with dirty_mb=WS
# (dirty_rate=MBPS, dirty_bytes=N) starts it after the fill: the convergence benchmark's busy guest, which prints its
# rate on the serial port once a second (see dirty.c).
# Usage: build-initramfs.sh OUT.cpio.gz [DIRTY]    Prints the kernel image to boot on its last line.
set -euo pipefail
out=$1
dirty=${2:-}
kver=$(ls /lib/modules | grep -E -- '-amd64$' | sort -V | tail -1)
kernel=/boot/vmlinuz-$kver
[ -r "$kernel" ] || { echo "no readable kernel image for $kver in /boot" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp /bin/busybox "$root/bin/busybox"
[ -z "$dirty" ] || install -m 755 "$dirty" "$root/bin/dirty"
# In load order: each module needs the ones before it.
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon"
for m in $modules; do
  file=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null || true)
  case "$file" in
    *.ko) cp "$file" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$file" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$file" > "$root/lib/modules/$m.ko" ;;
    *) ;; # built into the kernel, or absent in this version
  esac
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/shm && mount -t tmpfs -o size=95% tmpfs /dev/shm
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
fill=$(sed -n 's/.*fill_mb=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "guest: balloon $(ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | grep virtio | tr '\n' ' ')"
# One MiB of text, written eight at a time until fill MiB sit in tmpfs (page cache), then deleted.
yes 'stale guest data, never zero: 0123456789abcdefghijklmnopqrstuvwxyz' | head -c 1048576 > /tmp/mib
n=0
while [ "$n" -lt "${fill:-0}" ]; do cat /tmp/mib /tmp/mib /tmp/mib /tmp/mib /tmp/mib /tmp/mib /tmp/mib /tmp/mib; n=$((n+8)); done > /dev/shm/fill
rm -f /dev/shm/fill
grep MemFree /proc/meminfo
ws=$(sed -n 's/.*dirty_mb=\([0-9]*\).*/\1/p' /proc/cmdline)
rate=$(sed -n 's/.*dirty_rate=\([0-9.]*\).*/\1/p' /proc/cmdline)
bytes=$(sed -n 's/.*dirty_bytes=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$ws" ] && [ -x /bin/dirty ] && /bin/dirty "$ws" "${rate:-0}" "${bytes:-8}" &
echo "guest: ready"
while true; do sleep 2; echo "guest: alive $(cut -d' ' -f1 /proc/uptime)"; done
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
echo "$kernel"
