#!/usr/bin/env bash
# test-runtime-in-vm.sh: runs berth-runtime's root-only tests (tests/root.rs) and its
# cgroup v2 tests (tests/cgroup.rs) inside the real guest kernel, under QEMU (TCG, no KVM
# needed): the tests are built static and packed into an initramfs with busybox, whose
# /init mounts cgroup2 and runs them as root, then resets the machine.
#
# This checks the runtime against the guest's kernel (6.1 tinyconfig + berth.config) and
# cgroup v2, which this host lacks. It does not involve berth's VMM or the vsock agent
# protocol (the VMM's own tests do). The cgroup tests are only built with the runtime's
# `guest-tests` feature, so that host test runs do not pick them up; the host test
# `guest_kernel` runs this script. Builds go to target/guest-tests (a separate target
# directory, so that running this from inside `cargo test` cannot wait on cargo's lock).
#
#   scripts/test-runtime-in-vm.sh [TEST-FILTER]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
berth_need_packages qemu-system-x86 busybox-static jq python3

filter=${1:-}
kernel="$("$here/build-kernel.sh")/vmlinux"
target=x86_64-unknown-linux-gnu
berth_log "building the runtime tests (static)"
mapfile -t bins < <(CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/guest-tests" RUSTFLAGS="-C target-feature=+crt-static" \
  cargo test --no-run --manifest-path "$root/Cargo.toml" --target "$target" -p berth-runtime \
  --features guest-tests --test root --test cgroup --message-format=json 2>/dev/null |
  jq -r 'select(.profile.test == true and .executable != null) | .executable')
[ "${#bins[@]}" -eq 2 ] || { echo "test-runtime-in-vm: expected 2 test binaries, got ${bins[*]:-none}" >&2; exit 1; }

work=$(mktemp -d /tmp/berth-vmtest.XXXXXX)
trap 'rm -rf "$work"' EXIT
stage="$work/initramfs"
mkdir -p "$stage"/{bin,tests,dev,proc,sys,tmp,newroot}
cp /bin/busybox "$stage/bin/busybox"
for a in sh mount umount mkdir cp echo cat switch_root reboot sync sleep poweroff; do
  ln -s busybox "$stage/bin/$a"
done
for b in "${bins[@]}"; do
  strip -o "$stage/tests/$(basename "$b" | sed 's/-[0-9a-f]*$//')" "$b"
done
cat >"$stage/init" <<'INIT'
#!/bin/sh
# Stage 1: leave the initramfs root (containers pivot_root, which rootfs forbids).
mount -t tmpfs -o mode=0755 root /newroot
cp -a /bin /tests /stage2 /newroot/
mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/tmp
exec switch_root /newroot /stage2
INIT
cat >"$stage/stage2" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=0666,mode=0620 devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for c in cpu memory pids io cpuset; do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control; done
echo "controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
rc=0
for t in /tests/*; do
  echo "=== $t"
  # The block-device test needs loop devices and mkfs tools the guest does not have.
  RUST_BACKTRACE=1 "$t" --ignored --test-threads=1 \
    --skip erofs_layer_devices_and_an_ext4_scratch_device $BERTH_FILTER || rc=1
done
echo "BERTH-TESTS-RC=$rc"
sync
reboot -f
INIT
sed -i "s|\$BERTH_FILTER|$filter|" "$stage/stage2"
chmod +x "$stage/init" "$stage/stage2"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initramfs.gz")

berth_log "booting the guest kernel under QEMU (TCG); this takes a minute"
log="$work/console.log"
timeout 900 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,isa-serial=on -cpu max \
  -m 2048 -smp 2 -nographic -no-reboot -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 reboot=t panic=-1 quiet" </dev/null | tee "$log" | grep -v '^\[' || true
grep -q "BERTH-TESTS-RC=0" "$log" || { echo "test-runtime-in-vm: tests failed in the guest" >&2; exit 1; }
berth_log "all runtime tests passed in the guest"
