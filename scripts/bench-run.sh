#!/usr/bin/env bash
# bench-run.sh [RUNS]: times `berth run --rm IMAGE true` phase by phase (berth's
# --timings: image ready, VMM started, kernel boot, guest to agent, container created,
# container ran, VM powered off) over RUNS runs (default 10) and prints the median of each.
# Where the host has no hardware KVM the runs go through scripts/with-kvm.sh, so the
# figures then include nested emulation and are not hardware figures.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
runs=${1:-10}
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

eval "$("$here/setup.sh")"
cargo build --release --locked -p berth -p berth-vmm >&2
initramfs=$("$here/build-initramfs.sh")
archive=$("$here/build-default-image.sh")
state=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$state"' EXIT
berth="${CARGO_TARGET_DIR:-$root/target}/release/berth"
BERTH_ROOT=$state "$berth" load -i "$archive" >/dev/null

script=$(mktemp)
trap 'rm -rf "$state" "$script"' EXIT
cat >"$script" <<SCRIPT
set -e
export BERTH_ROOT=$state BERTH_KERNEL=$BERTH_KERNEL BERTH_INITRAMFS=$initramfs
"$berth" run --rm berth.local/busybox:latest true >/dev/null 2>&1 # warm the layer cache
for i in \$(seq $runs); do
  "$berth" run --rm --timings berth.local/busybox:latest true 2>&1 >/dev/null | grep '^timing:'
done
SCRIPT
mode=direct
{ [ -c /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; } || mode="nested (QEMU TCG L1)"
echo "berth run --rm busybox true: median of $runs runs, KVM: $mode"
"$here/with-kvm.sh" --timeout 1200 -- bash "$script" |
  python3 -c '
import sys, statistics, collections
phases = collections.OrderedDict()
for line in sys.stdin:
    name, ms = line[len("timing: "):].rsplit(None, 2)[0].strip(), float(line.split()[-2])
    phases.setdefault(name, []).append(ms)
for name, values in phases.items():
    print(f"  {name:<18} {statistics.median(values):9.1f} ms  (min {min(values):.1f}, max {max(values):.1f})")
'
