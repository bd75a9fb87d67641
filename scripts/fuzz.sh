#!/usr/bin/env bash
# fuzz.sh: builds berth's coverage-guided fuzz targets (tests/fuzz, cargo fuzz with
# libFuzzer and AddressSanitizer) and runs each for a bounded time.
#
#   scripts/fuzz.sh [--time SECS] [TARGET...]    (default: 60 s for each of every target)
#
# * cargo-fuzz (pinned) is installed into the cache with `cargo install --locked` when
#   missing; the stable toolchain takes cargo-fuzz's -Z flags through RUSTC_BOOTSTRAP=1.
# * The build lives under $(berth_cache_dir)/fuzz-target, one folder per toolchain
#   (berth_cargo_build_dir in lib.sh): a changed lock file rebuilds only what it
#   changes, and a folder past 20 GiB starts over.
# * Each target runs for SECS seconds (-max_total_time), with bounded input size, time per
#   input and memory, over a copy of its corpus in the repository (tests/fuzz/corpus/T)
#   plus a corpus in the cache, where new inputs go: nothing is written into the checkout.
# * One line per target says how many inputs it ran. A crash, a timeout or an input over
#   the memory limit fails the script, naming the target, the input that did it (kept under
#   $(berth_cache_dir)/fuzz-artifacts/T, and printed in base64 when small) and the command
#   that reproduces it. Exits non-zero on any failure or a failed build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

secs=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) secs=${2:?--time needs a number of seconds}; shift 2 ;;
    --time=*) secs=${1#--time=}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
case "$secs" in '' | *[!0-9]*) echo "fuzz.sh: --time takes whole seconds, not $secs" >&2; exit 2 ;; esac

fuzz_dir="$root/tests/fuzz"
cache=$(berth_cache_dir)
cargo_fuzz_version=0.13.1
tools="$cache/tools/cargo-fuzz-$cargo_fuzz_version"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  berth_log "installing cargo-fuzz $cargo_fuzz_version into $tools"
  cargo install --locked --quiet --root "$tools" cargo-fuzz --version "=$cargo_fuzz_version"
fi
export PATH="$tools/bin:$PATH"
# cargo-fuzz passes nightly flags (-Zsanitizer, sancov); the stable compiler takes them so.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

target_dir=$(berth_cargo_build_dir "$cache/fuzz-target" 20)

mapfile -t all < <(cd "$fuzz_dir" && cargo fuzz list --fuzz-dir "$fuzz_dir")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
  case " ${all[*]} " in
    *" $t "*) ;;
    *) echo "fuzz.sh: no target $t (there are: ${all[*]})" >&2; exit 2 ;;
  esac
done

# Largest input each target takes (bytes): enough for its structure, small enough to
# keep every run fast.
max_len() {
  case "$1" in
    layer_tar) echo 65536 ;;
    net_dns) echo 1024 ;;
    fuse_server | image_manifest | protocol_frames) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

build_start=$SECONDS
build=(cargo fuzz build --fuzz-dir "$fuzz_dir" --sanitizer address --target-dir "$target_dir")
berth_log "building the fuzz targets in $target_dir"
build_log="$cache/fuzz-logs/build.log"
mkdir -p "$(dirname "$build_log")"
if [ ${#targets[@]} -eq ${#all[@]} ]; then
  built() { (cd "$fuzz_dir" && "${build[@]}") >"$build_log" 2>&1; }
else
  built() {
    local t
    for t in "${targets[@]}"; do (cd "$fuzz_dir" && "${build[@]}" "$t") || return 1; done >"$build_log" 2>&1
  }
fi
if ! built; then
  tail -n 60 "$build_log" | sed 's/^/    /'
  echo "fuzz: the build FAILED (log: $build_log)"
  exit 1
fi
berth_log "built in $((SECONDS - build_start))s"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  corpus="$cache/fuzz-corpus/$t"
  artifacts="$cache/fuzz-artifacts/$t"
  log="$cache/fuzz-logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")" "$work/$t"
  # The cache corpus only grows; past a bound it starts again from the repository's.
  if [ "$(find "$corpus" -type f | wc -l)" -gt 5000 ]; then
    find "$corpus" -type f -delete
  fi
  if [ -d "$fuzz_dir/corpus/$t" ]; then
    cp -R "$fuzz_dir/corpus/$t/." "$work/$t/"
  fi
  opts=(-max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048
    -malloc_limit_mb=1024 -print_final_stats=1 -close_fd_mask=1
    -artifact_prefix="$artifacts/")
  set +e
  "$bin_dir/$t" "${opts[@]}" "$corpus" "$work/$t" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz: $t: ${runs:-?} inputs in ${secs}s, no crash"
    continue
  fi
  failed+=("$t")
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  echo "fuzz: $t FAILED (exit $rc) after ${runs:-?} inputs; its log ($log) ends:"
  grep -v '^#[0-9]' "$log" | tail -n 60 | sed 's/^/    /'
  if [ -n "$artifact" ] && [ -f "$artifact" ]; then
    echo "fuzz: $t: the input is $artifact"
    if [ "$(wc -c <"$artifact")" -le 8192 ]; then
      echo "fuzz: $t: in base64 (decode with base64 -d):"
      base64 -w 76 "$artifact" | sed 's/^/    /'
    fi
    echo "fuzz: $t: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz -s address $t $artifact"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
