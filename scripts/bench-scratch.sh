#!/usr/bin/env bash
# bench-scratch.sh [RUNS]: the cost of a container's 8 GiB scratch disk, side by side:
#   berth   berth-ext4 formats a new sparse file in userspace (what `berth run` does);
#   mkfs    `mkfs.ext4 -m 0 -E lazy_itable_init=1,lazy_journal_init=1` on a new sparse
#           file (what berth did once per state root, before berth-ext4);
#   copy    `cp --sparse=always` of that formatted template (what berth then did per
#           container).
# Each RUNS times (default 20), interleaved; prints the medians, the ratios and the bytes
# each leaves allocated, and checks berth's result with `e2fsck -fn`. No KVM or root needed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
runs=${1:-20}
case "$runs" in ''|*[!0-9]*|0) echo "bench-scratch: RUNS must be a positive number" >&2; exit 2 ;; esac
command -v mkfs.ext4 >/dev/null || berth_need_packages e2fsprogs
berth_log "building berth-ext4's mkscratch (release)"
(cd "$root" && cargo build --release --quiet -p berth-ext4 --example mkscratch)
mk="${CARGO_TARGET_DIR:-$root/target}/release/examples/mkscratch"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/berth-bench-scratch.XXXXXX")
trap 'rm -rf "$work"' EXIT
size=$((8 << 30))

truncate -s "$size" "$work/template.img"
mkfs.ext4 -q -F -m 0 -E lazy_itable_init=1,lazy_journal_init=1 "$work/template.img"
now() { date +%s%N; }
b=() m=() c=()
for i in $(seq 1 "$runs"); do
  t0=$(now); "$mk" "$work/b$i.img" "$size"; t1=$(now)
  b+=($(( (t1 - t0) / 1000 )))
  t0=$(now); truncate -s "$size" "$work/m$i.img"
  mkfs.ext4 -q -F -m 0 -E lazy_itable_init=1,lazy_journal_init=1 "$work/m$i.img"; t1=$(now)
  m+=($(( (t1 - t0) / 1000 )))
  t0=$(now); cp --sparse=always "$work/template.img" "$work/c$i.img"; t1=$(now)
  c+=($(( (t1 - t0) / 1000 )))
done
e2fsck -fn "$work/b1.img" >/dev/null || { echo "bench-scratch: e2fsck found faults in berth's disk" >&2; exit 1; }
alloc() { echo $(( $(stat -c %b "$1") * 512 )); }
python3 - "${b[*]}" "${m[*]}" "${c[*]}" "$(alloc "$work/b1.img")" "$(alloc "$work/m1.img")" "$(alloc "$work/c1.img")" <<'PY'
import statistics, sys
b, m, c = (statistics.median(int(x) for x in a.split()) / 1000 for a in sys.argv[1:4])
ab, am, ac = (int(x) / 1048576 for x in sys.argv[4:7])
print(f"8 GiB scratch disk, medians of {len(sys.argv[1].split())} runs:")
print(f"  berth-ext4 (userspace)       {b:8.2f} ms  {ab:6.2f} MiB allocated")
print(f"  mkfs.ext4 (lazy init)        {m:8.2f} ms  {am:6.2f} MiB allocated")
print(f"  cp --sparse of a template    {c:8.2f} ms  {ac:6.2f} MiB allocated")
print(f"ratio berth/mkfs.ext4: {b / m:.2f}, berth/template copy: {b / c:.2f}")
PY
