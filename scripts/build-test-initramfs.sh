#!/usr/bin/env bash
# build-test-initramfs.sh: builds the initramfs the VM tests and the VMM benchmark boot,
# and prints its path on stdout.
#
# Contents: busybox (busybox-static), berth-guest-probe (built statically here; vsock
# echo server and client) and an /init that reads its task from the kernel command line:
#   berth.test=full   console line, read /dev/vda (read-only), write /dev/vdb, vsock both
#                     ways (guest echo server on port 5000, guest-initiated send to host
#                     port 6000), then reboot -f
#   berth.test=cpus   print the number of CPUs and the clocksource, then reboot -f
#   berth.test=panic  exit from init, which makes the kernel panic
#   berth.test=sleep  print one line, then wait forever (stop tests)
#   berth.test=hello  (default) print one line, then reboot -f (the benchmark)
# Every line init prints starts with "berth-test:".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
berth_need_packages busybox-static cpio gzip

target_dir=${CARGO_TARGET_DIR:-$root/target}
(
  cd "$root"
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
    --target x86_64-unknown-linux-gnu -p berth-guest-probe >&2
)
probe="$target_dir/x86_64-unknown-linux-gnu/release/berth-guest-probe"
[ -x "$probe" ] || { echo "build-test-initramfs: $probe was not built" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,tmp}
cp /bin/busybox "$work/bin/busybox"
cp "$probe" "$work/bin/berth-guest-probe"
cat >"$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "berth-test: $*"; }
mode=hello
for arg in $(cat /proc/cmdline); do
  case "$arg" in berth.test=*) mode=${arg#berth.test=} ;; esac
done
say "init started (mode $mode)"
case "$mode" in
  panic)
    say "leaving init on purpose"
    exit 1
    ;;
  cpus)
    say "cpus=$(grep -c ^processor /proc/cpuinfo)"
    say "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
    ;;
  sleep)
    while :; do sleep 3600; done
    ;;
  full)
    berth-guest-probe vsock-echo-server 5000 &
    echo_pid=$!
    say "ro=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1)"
    if echo overwrite | dd of=/dev/vda conv=notrunc 2>/dev/null; then
      say "ro-write=accepted"
    else
      say "ro-write=refused"
    fi
    echo "berth-rw-written-by-guest" | dd of=/dev/vdb bs=512 conv=sync,notrunc 2>/dev/null
    sync
    say "rw=done"
    say "rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
    say "guest-send reply=$(berth-guest-probe vsock-send 2 6000 hello-from-guest)"
    wait "$echo_pid"
    say "echo-server exit=$?"
    ;;
esac
say "done"
reboot -f
INIT
chmod +x "$work/init"

out="$target_dir/berth-test-initramfs.cpio.gz"
(cd "$work" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
