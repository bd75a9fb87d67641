#!/usr/bin/env bash
# setup.sh: everything berth needs on a fresh Debian machine, installed by the project
# itself: Debian packages, the Rust components, the test user (berth-test, in group kvm),
# the guest kernel (cached) and, where the host's KVM cannot boot Linux, the QEMU L1
# machine that scripts/with-kvm.sh uses.
# Prints nothing on stdout but `export` lines for the paths it built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$here/setup-packages.txt")
berth_need_packages "${pkgs[@]}"

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy >&2
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt >&2
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust (rustup) first" >&2; exit 1; }

# The tests that show berth working as an ordinary user run as this one (see
# scripts/as-test-user.sh). /dev/kvm gets what udev's default rule gives it (group kvm,
# which may read and write it) where nothing did: a machine without udev, or a container.
berth_ensure_test_user
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  berth_log "giving /dev/kvm to group kvm, as udev's rule does"
  berth_as_root chgrp kvm /dev/kvm
  berth_as_root chmod g+rw /dev/kvm
fi

kernel_dir=$("$here/build-kernel.sh")
echo "export BERTH_KERNEL_DIR=$kernel_dir BERTH_KERNEL=$kernel_dir/vmlinux"
if ! { [ -c /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; }; then
  berth_log "no hardware virtualization here: VM tests run inside the QEMU L1 machine"
  "$here/build-l1.sh" >/dev/null
fi
