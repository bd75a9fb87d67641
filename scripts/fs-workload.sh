#!/bin/sh
# fs-workload.sh DIR [MIB] [FILES]: the file-sharing benchmark's workload, run in DIR by
# scripts/bench-fs.sh on the host itself and, inside the test initramfs (berth.test=fs),
# on a virtio-fs mount. POSIX sh and busybox only. Prints one line per step:
#   fs-result STEP SECONDS
# Steps: write and read MIB MiB (default 1024) sequentially, caches dropped before the
# read; create, stat and delete FILES files (default 10 000); find and tar over the tree
# in DIR/src.
set -eu
dir=$1
mib=${2:-1024}
files=${3:-10000}
now() { read -r up _ </proc/uptime; echo "$up"; }
step() {
  name=$1
  shift
  t0=$(now)
  "$@"
  t1=$(now)
  echo "fs-result $name $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}')"
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
write() { dd if=/dev/zero of="$dir/big" bs=1M count="$mib" conv=fsync 2>/dev/null; }
read_big() { dd if="$dir/big" of=/dev/null bs=1M 2>/dev/null; }
create() { mkdir "$dir/many" && (cd "$dir/many" && seq 1 "$files" | xargs touch); }
stat_all() { (cd "$dir/many" && ls | xargs stat -c %s >/dev/null); }
delete() { rm -rf "$dir/many"; }
find_src() { find "$dir/src" >/dev/null; }
tar_src() { tar cf - -C "$dir" src | wc -c >/dev/null; }

rm -rf "$dir/big" "$dir/many"
step write write
drop
step read read_big
rm -f "$dir/big"
step create create
drop
step stat stat_all
step delete delete
drop
step find find_src
drop
step tar tar_src
echo "fs-result done 0"
