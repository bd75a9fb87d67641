#!/usr/bin/env bash
# bench-runtime.sh: create + start + wait of /bin/true in a busybox rootfs, berth's
# container runtime against crun, natively on this host, on the same rootfs, interleaved.
# Prints the median of each and the ratio (the goal is berth/crun <= 1.0). Needs root.
#
#   scripts/bench-runtime.sh [ITERATIONS]      (default 50)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

n=${1:-50}
[ "$(id -u)" -eq 0 ] || { echo "bench-runtime: needs root (mounts, namespaces)" >&2; exit 1; }
berth_need_packages crun busybox-static jq

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

bundle="$work/bundle"
mkdir -p "$bundle"
(cd "$bundle" && crun spec)
jq --arg root "$rootfs" '.process.args = ["/bin/true"] | .process.terminal = false
  | .root.path = $root | .root.readonly = false | .hostname = "bench"' \
  "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

berth_log "building the benchmark (release)"
cargo build --quiet --release -p berth-runtime --example bench --manifest-path "$root/Cargo.toml"
bench="${CARGO_TARGET_DIR:-$root/target}/release/examples/bench"
mkdir -p "$work/berth"
run=("$bench" --rootfs "$rootfs" --bundle "$bundle" --work "$work/berth" --iterations "$n" --crun "$(command -v crun)")
# crun refuses a hybrid cgroup layout (v1 controllers plus a cgroup2 "unified" mount with
# controllers). Where the host has one, run both runtimes in a private mount namespace
# without that mount; neither runtime uses cgroups on this host then (berth applies cgroup
# v2 limits only where /sys/fs/cgroup is cgroup2, as in the guest).
if grep -q " /sys/fs/cgroup/unified " /proc/self/mountinfo && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
  berth_log "hybrid cgroups: running the benchmark without /sys/fs/cgroup/unified"
  unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh "${run[@]}"
else
  "${run[@]}"
fi
