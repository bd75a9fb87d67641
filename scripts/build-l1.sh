#!/usr/bin/env bash
# build-l1.sh: prepares the "L1" machine that scripts/with-kvm.sh boots under QEMU TCG
# on hosts whose KVM cannot run Linux guests, and prints the folder holding it:
#   vmlinux         Debian's cloud kernel, uncompressed so QEMU boots it by its PVH entry
#   initrd.cpio.gz  busybox + the kvm, kvm-amd, virtio-mmio, virtiofs and virtio-console
#                   modules + init
#   virtiofsd       shares the host's filesystem into L1
# Cached outside the repository, keyed by the kernel package, virtiofsd and this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

virtiofsd_version=1.14.0
berth_need_packages qemu-system-x86 busybox-static kmod lz4 cpio gzip libseccomp-dev libcap-ng-dev pkg-config

cache=$(berth_cache_dir)
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$pkg" ]; then
  berth_need_packages apt-utils
  apt-get update -q >&2
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
[ -n "$pkg" ] || { echo "build-l1: cannot find Debian's linux-image-cloud-amd64 package" >&2; exit 1; }
pkg_version=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2}')
key=$( (cat "$here/build-l1.sh"; echo "$pkg $pkg_version virtiofsd $virtiofsd_version") | sha256sum | cut -c1-16)
out="$cache/l1/$key"
complete() { [ -f "$out/vmlinux" ] && [ -f "$out/initrd.cpio.gz" ] && [ -x "$out/virtiofsd" ]; }
if complete; then
  echo "$out"
  exit 0
fi

# A work folder of this run's own, and the result moved into place whole at the end: two
# harness runs that build at once (parallel test binaries, or two checkouts) do not
# share half-written files, and a reader never sees a partial folder.
mkdir -p "$cache/l1"
work=$(mktemp -d "$cache/l1/tmp-$key.XXXXXX")
trap 'rm -rf "$work"' EXIT

# virtiofsd is not packaged for bookworm: build it from crates.io once.
vfsd="$cache/tools/virtiofsd-$virtiofsd_version/bin/virtiofsd"
if [ ! -x "$vfsd" ]; then
  berth_log "building virtiofsd $virtiofsd_version (once)"
  cargo install --quiet --locked virtiofsd --version "$virtiofsd_version" \
    --root "$cache/tools/virtiofsd-$virtiofsd_version" >&2
fi

berth_log "preparing the L1 kernel from $pkg $pkg_version"
(cd "$work" && apt-get download "$pkg" >&2)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/pkg"
kver=$(ls "$work/pkg/lib/modules")
depmod -b "$work/pkg" "$kver"

# Uncompress the bzImage: find the payload by its magic and decompress from there.
extract_vmlinux() {
  local img=$1 dst=$2 magic tool off
  for pair in '\x02\x21\x4c\x18:lz4 -dc' '\x1f\x8b\x08:gzip -dc' '\xfd\x37\x7a\x58\x5a\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -dc'; do
    magic=${pair%%:*}
    tool=${pair#*:}
    # shellcheck disable=SC2013 # byte offsets, one word each
    for off in $(LC_ALL=C grep -aobP "$magic" "$img" | cut -d: -f1); do
      tail -c +$((off + 1)) "$img" | $tool >"$dst" 2>/dev/null || true
      if head -c 4 "$dst" | grep -q 'ELF'; then
        return 0
      fi
    done
  done
  return 1
}
extract_vmlinux "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinux" || {
  echo "build-l1: could not extract vmlinux from $work/pkg/boot/vmlinuz-$kver" >&2
  exit 1
}

# The initramfs: busybox, the modules with their dependencies, and init.
root="$work/initrd"
mkdir -p "$root"/{bin,dev,proc,sys,host,lib/modules/"$kver"}
cp /bin/busybox "$root/bin/busybox"
for m in kernel/arch/x86/kvm/kvm-amd.ko kernel/drivers/virtio/virtio_mmio.ko kernel/fs/fuse/virtiofs.ko \
  kernel/drivers/char/virtio_console.ko; do
  for f in $m $(awk -F': ' -v m="$m" '$1 == m { print $2 }' "$work/pkg/lib/modules/$kver/modules.dep"); do
    mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
    cp "$work/pkg/lib/modules/$kver/$f" "$root/lib/modules/$kver/$f"
  done
done
cp "$work/pkg/lib/modules/$kver"/modules.{dep,order,builtin} "$root/lib/modules/$kver/"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
# L1 init: load KVM and virtiofs, then run the harness job chrooted into the host's filesystem.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in kvm-amd virtio_mmio virtiofs virtio_console; do modprobe $m || echo "l1: modprobe $m failed"; done
job=$(sed -n 's/.*berth\.job=\([^ ]*\).*/\1/p' /proc/cmdline)
if ! mount -t virtiofs hostroot /host; then
  echo "l1: cannot mount the host filesystem"; reboot -f
fi
for d in proc sys dev; do mount --move /$d /host/$d 2>/dev/null || mount -t $d $d /host/$d; done
# /dev/kvm as udev leaves it on a host: group kvm may use it, so that the tests that run
# as an ordinary user in that group (scripts/as-test-user.sh) can.
if ! { chroot /host chgrp kvm /dev/kvm && chmod 0660 /host/dev/kvm; }; then
  echo "l1: cannot give /dev/kvm to group kvm"
fi
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
# devtmpfs has no /dev/fd or /dev/std*: bash's process substitution and scripts that
# read /dev/stdin need them, as on any host.
ln -sfn /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
mount -t tmpfs tmpfs /host/run
mkdir -m 1777 /host/run/tmp
ip link set lo up 2>/dev/null
# Pin KVM's static keys (preempt notifiers, the APIC's software-disabled count) on with one
# idle VM for the whole job. Otherwise every first VM and every last one patches live
# kernel text, __schedule included, and QEMU's multi-threaded TCG can livelock the L1 in
# that patching: one vCPU spins on a lock with interrupts off while the other loops on
# the int3 of a stale translation. Seen about once per 70 nested boots before this.
chroot /host python3 -c '
import fcntl, os, signal
kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
vm = fcntl.ioctl(kvm, 0xAE01, 0)      # KVM_CREATE_VM
fcntl.ioctl(vm, 0xAE60, 0)            # KVM_CREATE_IRQCHIP
fcntl.ioctl(vm, 0xAE41, 0)            # KVM_CREATE_VCPU: its local APIC
open("/run/berth-kvm-keeper.ready", "w").close()
signal.pause()
' </dev/null >/dev/console 2>&1 &
for _ in $(seq 50); do [ -e /host/run/berth-kvm-keeper.ready ] && break; sleep 0.1; done
[ -e /host/run/berth-kvm-keeper.ready ] || echo "l1: the KVM keeper did not start"
# A heartbeat for with-kvm.sh: when it stops, this kernel is stuck and the job with it.
# Shell builtins only (read -t on a FIFO that never speaks is the sleep): background work
# in L1, forks above all, makes nested guests under TCG crash more often.
mkfifo /heartbeat.fifo
(exec 3<>/heartbeat.fifo; while :; do : >"/host$job/heartbeat"; read -r -t 30 -u 3 _; done) &
touch "/host$job/started"
if [ -e "/host$job/tty" ]; then
  # The caller is on a terminal: the job runs on a pty here, carried to it over
  # virtio-serial by the helper with-kvm.sh left in the job (scripts/harness-tty.py).
  chroot /host python3 "$job/tty.py" guest "$job" </dev/null >"/host$job/stdout" 2>"/host$job/stderr"
else
  chroot /host /bin/bash -c ". '$job/cmd'" </dev/null >"/host$job/stdout" 2>"/host$job/stderr"
fi
echo $? >"/host$job/status.tmp" && mv "/host$job/status.tmp" "/host$job/status"
sync
reboot -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.cpio.gz"

mkdir "$work/out"
mv "$work/vmlinux" "$work/initrd.cpio.gz" "$work/out/"
cp "$vfsd" "$work/out/virtiofsd"
# If another run finished first, its result (from the same inputs) stands; otherwise the
# folder is renamed into place whole (rename(2) is atomic).
if ! complete; then
  rm -rf "$out"
  mv -T "$work/out" "$out" || complete
fi
echo "$out"
