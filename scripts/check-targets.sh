#!/usr/bin/env bash
# check-targets.sh [TARGET...]: type-checks every host crate (each package under host/,
# plus guest/protocol) for the other systems berth is to run on, from this Linux machine:
# aarch64-apple-darwin and x86_64-pc-windows-msvc unless TARGETs are named. Nothing is
# linked, so no SDK is needed: std is built from source for each target (-Zbuild-std).
#
# It lints rather than merely checks: Debian's rust-web-clippy matches its compiler and
# works with -Zbuild-std (std itself is built by plain rustc; clippy-driver only sees the
# workspace's crates), so each target gets `cargo clippy ... -- -D warnings`, the same gate
# as the Linux build.
#
# The compiler must match the std source exactly, so this uses Debian's toolchain
# (rustc-web, cargo-web, rust-web-src, rust-web-clippy, all at one version, the one apt
# offers), never rustup's. Each target has its own target folder under the cache, keyed by
# the toolchain version: std builds once (about 2 minutes a target), a recheck takes seconds.
#
# C in dependencies' build scripts (ring's, zstd-sys's) is not compiled: that needs the
# macOS SDK or MSVC's headers, which a Linux machine lacks, and a check links nothing, so
# the archives they would make are never read. The target's C compiler, C++ compiler and
# archiver (CC_<target>, CXX_<target>, AR_<target>, which the cc crate reads) are a tool
# that only creates the files its command line names as outputs, empty. What this checks
# is the Rust: every crate, its dependencies and their cfgs, for that target.
#
# One dependency gap is bridged on Windows, and said so on every run: vm-memory's `rawfd`
# feature (std::os::fd) does not build there, and virtio-queue and linux-loader depend on
# vm-memory with its default features, which turn `rawfd` on; cargo cannot turn a feature
# back off. Upstream has proposed making `rawfd` do nothing on Windows (rust-vmm/rust-vmm#63)
# and dropping the default from linux-loader (rust-vmm/rust-vmm#127, reverted by #157); none
# is released. So for Windows, vm-memory is checked without `rawfd` (a rustc wrapper drops
# its `--cfg feature="rawfd"`), which is what such a fix gives, and berth's own crates must
# then do without `rawfd` there. A Windows build needs that fixed upstream or patched.
#
# Fails, naming the target and the crate, when any crate fails on any target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-apple-darwin x86_64-pc-windows-msvc)

# --- Debian's toolchain, at one version, no older than the workspace's rust-version ---
rust_version=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$rust_version" ] || { echo "check-targets: no rust-version in $root/Cargo.toml" >&2; exit 1; }
pkgs=(rustc-web cargo-web rust-web-src libstd-rust-web-dev rust-web-clippy)

candidate() {
  apt-cache policy rustc-web 2>/dev/null | sed -n 's/^ *Candidate: *//p'
}
new_enough() { # new_enough DEBIAN_VERSION: its upstream part is at least rust_version
  [ -n "$1" ] && [ "$1" != "(none)" ] && dpkg --compare-versions "${1%%+*}" ge "$rust_version"
}
installed_at() { # installed_at VERSION: every package is installed at exactly VERSION
  local p
  for p in "${pkgs[@]}"; do
    [ "$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null)" = "install ok installed $1" ] || return 1
  done
}
all_installed() { # all_installed: every package is installed, at any version
  local p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
  done
}
installed_file() { # installed_file PACKAGE NAME: PACKAGE's program NAME (a .../bin/NAME)
  dpkg -L "$1" | grep -E "/bin/$2\$" | grep -v '^/usr/share/' | head -n1
}

version=$(candidate)
if ! new_enough "$version" || ! installed_at "$version"; then
  if ! new_enough "$version" || ! all_installed; then
    berth_log "updating apt's lists (rustc-web candidate: ${version:-none}; need $rust_version or newer)"
    berth_as_root apt-get update -q >&2
    version=$(candidate)
  fi
  new_enough "$version" || {
    echo "check-targets: apt offers rustc-web ${version:-(none)}, older than the workspace's rust-version $rust_version" >&2
    exit 1
  }
  berth_need_packages "${pkgs[@]/%/=$version}"
fi
# Debian's binaries, from the packages' own file lists. cargo-web also ships
# /usr/share/cargo/bin/cargo, a Python wrapper for building Debian packages: not that one.
cargo=$(installed_file cargo-web cargo)
rustc=$(installed_file rustc-web rustc)
clippy=$(installed_file rust-web-clippy cargo-clippy)
if ! { [ -x "$cargo" ] && [ -x "$rustc" ] && [ -x "$clippy" ] && [ "$(dirname "$cargo")" = "$(dirname "$clippy")" ]; }; then
  echo "check-targets: cannot find Debian's cargo, rustc and cargo-clippy (side by side) in the packages' files" >&2
  exit 1
fi
bin=$(dirname "$cargo")
berth_log "toolchain: $("$rustc" --version), $("$clippy" --version) (Debian $version)"

# --- the crates: every package under host/, plus guest/protocol ---
crates=()
for manifest in "$root"/host/*/Cargo.toml "$root/guest/protocol/Cargo.toml"; do
  crates+=("$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)")
done
package_args=()
for c in "${crates[@]}"; do package_args+=(-p "$c"); done

# --- the stand-in for the target's C compiler and archiver (see the top) ---
no_c="$(berth_cache_dir)/check-targets/no-c-tool"
mkdir -p "$(dirname "$no_c")"
cat >"$no_c.tmp" <<'TOOL'
#!/bin/sh
# Compiles nothing: creates (empty) the outputs its arguments name, in the forms the cc
# crate uses: `-o OUT`, `-FoOUT` or `/FoOUT` (cl), `-out:OUT` or `/OUT:OUT` (lib), and
# `ar OPS ARCHIVE ...`. Written by scripts/check-targets.sh.
case "$1" in -*|/*) ;; *) [ $# -ge 2 ] && touch "$2" ;; esac
prev=
for a in "$@"; do
  [ "$prev" = -o ] && touch "$a"
  case "$a" in
    [-/]Fo?*) touch "${a#???}" ;;
    [-/][oO][uU][tT]:?*) touch "${a#?????}" ;;
  esac
  prev=$a
done
exit 0
TOOL
chmod +x "$no_c.tmp"
mv "$no_c.tmp" "$no_c"

# --- for Windows: vm-memory without its `rawfd` feature (see the top) ---
no_rawfd="$(berth_cache_dir)/check-targets/rustc-vm-memory-no-rawfd"
cat >"$no_rawfd.tmp" <<'TOOL'
#!/usr/bin/env bash
# A RUSTC_WRAPPER: runs rustc as asked, except that vm-memory gets no `rawfd` feature.
# Written by scripts/check-targets.sh.
args=("$@")
vm_memory=0
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  [ "${args[i]}" = --crate-name ] && [ "${args[i+1]}" = vm_memory ] && vm_memory=1
done
[ "$vm_memory" = 1 ] || exec "$@"
out=()
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[i]}" = --cfg ] && [ "${args[i+1]:-}" = 'feature="rawfd"' ]; then
    i=$((i + 1))
    continue
  fi
  out+=("${args[i]}")
done
exec "${out[@]}"
TOOL
chmod +x "$no_rawfd.tmp"
mv "$no_rawfd.tmp" "$no_rawfd"

# --- one cargo run per target: several --target flags in one run would merge features ---
failed=()
for target in "${targets[@]}"; do
  target_dir="$(berth_cache_dir)/check-targets/$version/$target"
  mkdir -p "$target_dir"
  log="$target_dir/check.log"
  berth_log "checking ${#crates[@]} crates for $target (log: $log)"
  started=$(date +%s)
  status=0
  wrapper=()
  if [[ "$target" == *windows* ]]; then
    berth_log "$target: vm-memory is checked without its rawfd feature (no upstream fix yet; see the top of $0)"
    wrapper=("RUSTC_WRAPPER=$no_rawfd")
  fi
  # Debian's binaries ahead of rustup's proxies, so that `cargo clippy` finds Debian's
  # cargo-clippy and clippy-driver too.
  t=${target//-/_}
  (cd "$root" && env PATH="$bin:$PATH" RUSTC="$rustc" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
    "CC_$t=$no_c" "CXX_$t=$no_c" "AR_$t=$no_c" "${wrapper[@]}" \
    nice "$cargo" clippy --locked --keep-going -Zbuild-std=std,panic_abort --target "$target" \
    "${package_args[@]}" -- -D warnings) 2>&1 | tee "$log" >&2 || status=$?
  elapsed=$(( $(date +%s) - started ))
  if [ "$status" -eq 0 ]; then
    berth_log "$target: all ${#crates[@]} crates check cleanly (${elapsed}s)"
    continue
  fi
  # shellcheck disable=SC2016 # the backquotes are cargo's, not the shell's
  mapfile -t broken < <(sed -n -e 's/^error: could not compile `\([^`]*\)`.*/\1/p' \
    -e 's/^error: failed to run custom build command for `\([^ `]*\).*/\1/p' "$log" | sort -u)
  [ ${#broken[@]} -gt 0 ] || broken=("(cargo failed before compiling: see $log)")
  for b in "${broken[@]}"; do
    ours=""
    # A failing dependency: name the host crates it holds back.
    if [[ " ${crates[*]} " != *" $b "* ]] && [[ "$b" != "("* ]]; then
      ours=$(cd "$root" && { PATH="$bin:$PATH" "$cargo" tree --locked --target "$target" -e normal,build \
        -i "$b" --prefix none "${package_args[@]}" 2>/dev/null || true; } \
        | grep -oE "^($(IFS='|'; echo "${crates[*]}")) " | sort -u | tr -d ' ' | paste -sd, -) || ours=""
      [ -z "$ours" ] || ours=" (needed by $ours)"
    fi
    failed+=("$target: $b$ours")
  done
  berth_log "$target: failed after ${elapsed}s: ${broken[*]}"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-targets: these crates do not check:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
berth_log "every host crate checks for ${targets[*]}"
