#!/usr/bin/env bash
# build-initramfs.sh: builds the berth agent as a static binary and packs it as /init of a
# gzip'd newc cpio initramfs (with /dev/console and the directories the agent mounts on).
# Prints the path of the cached initramfs on stdout.
#
# The archive is reproducible (fixed owners and times) and cached outside the repository,
# keyed by a hash of the agent binary and this script: with nothing changed, a run costs
# one no-op cargo build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

target=x86_64-unknown-linux-gnu
berth_log "building berth-agent (static, release)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
  --manifest-path "$root/Cargo.toml" --target "$target" -p berth-agent >&2
target_dir=${CARGO_TARGET_DIR:-$root/target}
agent="$target_dir/$target/release/berth-agent"
if ! file_out=$(LC_ALL=C readelf -d "$agent" 2>/dev/null) || echo "$file_out" | grep -q NEEDED; then
  echo "build-initramfs: $agent is not statically linked" >&2
  exit 1
fi

key=$(cat "$agent" "$here/build-initramfs.sh" | sha256sum | cut -c1-16)
cache="$(berth_cache_dir)/initramfs"
out="$cache/berth-initramfs-$key.cpio.gz"
if [ -f "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
python3 - "$agent" "$tmp" <<'PY'
import gzip, os, sys

agent, out = sys.argv[1], sys.argv[2]
entries = []  # (name, mode, rdev_major, rdev_minor, data)
for d in ["dev", "proc", "sys", "run", "tmp", "etc", "newroot"]:
    entries.append((d, 0o040755, 0, 0, b""))
entries.append(("dev/console", 0o020600, 5, 1, b""))
entries.append(("init", 0o100755, 0, 0, open(agent, "rb").read()))

def pad(n):
    return b"\0" * ((4 - n % 4) % 4)

buf = bytearray()
ino = 1
for name, mode, rmaj, rmin, data in entries + [("TRAILER!!!", 0, 0, 0, b"")]:
    nb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, rmaj, rmin, len(nb), 0]
    hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
    buf += hdr + nb + pad(len(hdr) + len(nb)) + data + pad(len(data))
    ino += 1
buf += b"\0" * ((512 - len(buf) % 512) % 512)
with open(out, "wb") as f:
    f.write(gzip.compress(bytes(buf), compresslevel=6, mtime=0))
PY
mv "$tmp" "$out"
berth_log "initramfs $(du -h "$out" | cut -f1): $out"
echo "$out"
