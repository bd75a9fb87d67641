#!/usr/bin/env bash
# build-kernel.sh: builds berth's guest vmlinux from Debian's linux-source-6.1,
# `make tinyconfig` plus kernel-config/berth.config, and prints the path of the
# cached result (a folder holding vmlinux and its .config) on stdout.
#
# The cache lives outside the repository, keyed by a hash of the fragment, this
# script and the kernel source version: a second run with nothing changed is instant.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

fragment="$root/kernel-config/berth.config"
berth_need_packages linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils

version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$(cat "$fragment" "$here/build-kernel.sh" "$here/check-kernel-config.sh" <(echo "$version") | sha256sum | cut -c1-16)
cache="$(berth_cache_dir)/kernel"
out="$cache/$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/config" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
src="$cache/src-$version"
if [ ! -f "$src/Makefile" ]; then
  berth_log "unpacking linux-source $version"
  rm -rf "$src.tmp"
  mkdir -p "$src.tmp"
  tar -xf /usr/src/linux-source-6.1.tar.xz -C "$src.tmp" --strip-components=1
  rm -rf "$src"
  mv "$src.tmp" "$src"
fi

build="$cache/build-$key"
rm -rf "$build"
mkdir -p "$build"
log="$build/build.log"
started=$(date +%s)
berth_log "configuring kernel $key (log: $log)"
{
  make -C "$src" O="$build" ARCH=x86_64 tinyconfig
  "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment"
  make -C "$src" O="$build" ARCH=x86_64 olddefconfig
} >"$log" 2>&1 || { tail -n 40 "$log" >&2; exit 1; }

"$here/check-kernel-config.sh" "$fragment" "$build/.config"

berth_log "building vmlinux with $(nproc) jobs"
if ! make -C "$src" O="$build" ARCH=x86_64 -j"$(nproc)" vmlinux >>"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "build-kernel: the kernel build failed; the whole log is $log" >&2
  exit 1
fi

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
cp "$build/vmlinux" "$out.tmp/vmlinux"
cp "$build/.config" "$out.tmp/config"
cp "$fragment" "$out.tmp/fragment"
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$build"
berth_log "kernel built in $(( $(date +%s) - started ))s: $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes)"
echo "$out"
