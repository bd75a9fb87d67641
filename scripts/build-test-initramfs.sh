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
#   berth.test=net    configure eth0 (192.168.249.2/24 via .1), then a TCP and a UDP round
#                     trip to the host's loopback through .254, on the ports given as
#                     berth.net.tcp=PORT and berth.net.udp=PORT, then reboot -f
#   berth.test=fs     mount the virtio-fs share tagged "bench" on /data and run
#                     scripts/fs-workload.sh there (berth.fs.mib=N MiB of sequential I/O,
#                     berth.fs.files=N files created, statted and deleted),
#                     then reboot -f (scripts/bench-fs.sh)
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
cp "$here/fs-workload.sh" "$work/bin/fs-workload"
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
  fs)
    mib=1024
    files=10000
    for arg in $(cat /proc/cmdline); do
      case "$arg" in
        berth.fs.mib=*) mib=${arg#berth.fs.mib=} ;;
        berth.fs.files=*) files=${arg#berth.fs.files=} ;;
      esac
    done
    mkdir -p /data
    mount -t virtiofs bench /data && fs-workload /data "$mib" "$files" | while read -r line; do say "$line"; done
    ;;
  sleep)
    while :; do sleep 3600; done
    ;;
  net)
    for arg in $(cat /proc/cmdline); do
      case "$arg" in
        berth.net.tcp=*) tcp_port=${arg#berth.net.tcp=} ;;
        berth.net.udp=*) udp_port=${arg#berth.net.udp=} ;;
      esac
    done
    if berth-guest-probe net-up eth0 192.168.249.2/24 192.168.249.1; then
      say "net-up=ok"
    else
      say "net-up=failed"
    fi
    say "tcp-reply=$(berth-guest-probe tcp-send 192.168.249.254 "$tcp_port" hello-tcp-from-guest)"
    say "udp-reply=$(berth-guest-probe udp-send 192.168.249.254 "$udp_port" hello-udp-from-guest)"
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
