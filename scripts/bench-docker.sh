#!/usr/bin/env bash
# bench-docker.sh [RUNS]: the Docker API's overhead. In one run, side by side and
# interleaved, `docker run --rm busybox true` through `berth system service` against
# `berth run --rm busybox true` directly, RUNS times each (default 10); prints both
# medians and their ratio (the goal is <= 1.05). Where the host has no hardware KVM the
# runs go through scripts/with-kvm.sh, so the figures include nested emulation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
runs=${1:-10}
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

eval "$("$here/setup.sh")"
command -v docker >/dev/null || { echo "bench-docker: the docker CLI client is missing" >&2; exit 1; }
cargo build --release --locked -p berth -p berth-vmm >&2
initramfs=$("$here/build-initramfs.sh")
archive=$("$here/build-default-image.sh")
state=$(mktemp -d /tmp/berth-bench.XXXXXX)
script=$(mktemp)
trap 'rm -rf "$state" "$script"' EXIT
berth="${CARGO_TARGET_DIR:-$root/target}/release/berth"
BERTH_ROOT=$state "$berth" load -i "$archive" >/dev/null

cat >"$script" <<SCRIPT
set -e
export BERTH_ROOT=$state BERTH_KERNEL=$BERTH_KERNEL BERTH_INITRAMFS=$initramfs
export DOCKER_HOST=unix://$state/docker.sock DOCKER_CONFIG=$state/docker-config
"$berth" system service --host "\$DOCKER_HOST" >/dev/null &
service=\$!
trap 'kill \$service; wait \$service || true' EXIT
for i in \$(seq 100); do [ -S "$state/docker.sock" ] && break; sleep 0.1; done
ms() { local s=\$(date +%s%N); "\$@" >/dev/null 2>&1; echo \$(( (\$(date +%s%N) - s) / 1000000 )); }
"$berth" run --rm berth.local/busybox:latest true >/dev/null 2>&1 # warm the layer cache
for i in \$(seq $runs); do
  echo "berth \$(ms "$berth" run --rm berth.local/busybox:latest true)"
  echo "docker \$(ms docker run --rm berth.local/busybox:latest true)"
done
SCRIPT
mode=direct
{ [ -c /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; } || mode="nested (QEMU TCG L1)"
echo "run --rm busybox true: median of $runs runs each, interleaved, KVM: $mode"
"$here/with-kvm.sh" --timeout 1800 -- bash "$script" |
  python3 -c '
import sys, statistics
t = {"berth": [], "docker": []}
for line in sys.stdin:
    who, ms = line.split()
    t[who].append(float(ms))
b, d = statistics.median(t["berth"]), statistics.median(t["docker"])
print(f"  berth run (CLI)        {b:8.0f} ms")
print(f"  docker run (API)       {d:8.0f} ms")
print(f"  ratio docker/berth     {d / b:8.2f}")
'
