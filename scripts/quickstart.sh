#!/usr/bin/env bash
# quickstart.sh: sets berth up on a fresh Debian machine and runs its main job, offline:
# a container from the busybox image the project builds itself, in its own micro-VM.
#
#   scripts/quickstart.sh [berth run arguments...]
#
# Without arguments it runs `berth run --rm berth.local/busybox:latest echo ...`.
# It installs the guest kernel and the agent's initramfs under berth's state root
# ($BERTH_ROOT, else ~/.local/share/berth) and `berth` itself at target/release/berth.
# Where the host's KVM cannot boot Linux guests, the run goes through scripts/with-kvm.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

eval "$("$here/setup.sh")"
berth_log "building berth"
cargo build --release --locked -p berth -p berth-vmm >&2
initramfs=$("$here/build-initramfs.sh")
state=${BERTH_ROOT:-${XDG_DATA_HOME:-$HOME/.local/share}/berth}
mkdir -p "$state/kernel"
install -m 0644 "$BERTH_KERNEL" "$state/kernel/vmlinux"
install -m 0644 "$initramfs" "$state/kernel/initramfs.cpio.gz"
berth=${CARGO_TARGET_DIR:-$root/target}/release/berth
archive=$("$here/build-default-image.sh")
"$berth" load -i "$archive" >&2

if [ $# -eq 0 ]; then
  set -- run --rm berth.local/busybox:latest echo "hello from a berth micro-VM"
fi
berth_log "berth $*"
exec "$here/with-kvm.sh" --timeout 600 -- env BERTH_KERNEL= BERTH_KERNEL_DIR= "$berth" "$@"
