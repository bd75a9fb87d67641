#!/usr/bin/env bash
# test.sh: berth's whole test suite, from a fresh clone on a fresh Debian machine.
#
#  1. set-up: packages, guest kernel, the harness machine (scripts/setup.sh);
#  2. cargo fmt --check and clippy with warnings as errors, here and, through
#     scripts/check-targets.sh, for macOS (arm64) and Windows;
#  3. the guest artefacts: the agent's initramfs and the test initramfs;
#  4. the services tests talk to: registry servers on loopback;
#  5. every test binary with its ignored tests included: binaries named vm_* inside
#     scripts/with-kvm.sh (one harness machine per binary), the others on the host;
#     as root, but for those that show berth working as an ordinary user (the image
#     store's tests of pulls, loads, saves and pushes, and vm_cli's), which run as the
#     test user (in group kvm, not root) through scripts/as-test-user.sh;
#  6. every fuzz target briefly over its corpus (scripts/fuzz.sh, BERTH_FUZZ_TIME seconds
#     each, 20 by default): a crash fails the suite;
#  7. one short run of each benchmark (scripts/bench-*.sh), then the doc tests.
# Ends with a summary line "tests: N passed, N failed" (fuzzing and each benchmark count
# as one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

# Each section says when it began, so a slow run shows where its time went.
section() { printf '\n==== %s (%s, %ds in) ====\n' "$*" "$(date +%T)" "$SECONDS"; }

section "set-up"
eval "$("$here/setup.sh")"
export CARGO_TERM_COLOR=never
# Cargo's build is cached outside the clone, one folder per toolchain (see lib.sh): a
# fresh clone rebuilds only berth's own crates, and a changed lock file only the packages
# it changes. Stale artefacts pile up there, so a folder grown past 40 GiB starts over.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR=$(berth_cargo_build_dir "$(berth_cache_dir)/cargo-target" 40)
  export CARGO_TARGET_DIR
fi
echo "cargo builds in $CARGO_TARGET_DIR"

section "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

section "macOS and Windows (scripts/check-targets.sh)"
# Every host crate, linted for aarch64-apple-darwin and x86_64-pc-windows-msvc with
# Debian's toolchain and std built from source: host code stays portable.
"$here/check-targets.sh"

section "guest artefacts"
# Each script prints the path of what it built; the tests find it in the variable.
for pair in build-initramfs:BERTH_INITRAMFS build-test-initramfs:BERTH_TEST_INITRAMFS \
  build-default-image:BERTH_DEFAULT_IMAGE; do
  s=${pair%%:*}
  var=${pair#*:}
  path=$("$here/$s.sh")
  export "$var=$path"
  echo "$var=$path"
done
# The static probe the test initramfs carries (build-test-initramfs.sh builds it): VM tests
# put it into images too, to ask the guest what busybox cannot (extended attributes).
export BERTH_GUEST_PROBE="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/berth-guest-probe"
[ -x "$BERTH_GUEST_PROBE" ] || { echo "test.sh: no $BERTH_GUEST_PROBE after build-test-initramfs.sh" >&2; exit 1; }
# The tests drive the release build, what people install (and what the benchmarks time).
cargo build --locked --release -p berth -p berth-vmm
export BERTH_BIN="$CARGO_TARGET_DIR/release/berth"

section "services"
cleanup_services=()
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  for c in "${cleanup_services[@]}"; do eval "$c" || true; done
}
trap cleanup EXIT
if [ -x "$here/registry.sh" ]; then
  # As the test user, so that the registry tests running as that user may tamper with
  # the blobs they pushed.
  eval "$(BERTH_REGISTRY_USER=$(berth_test_user) "$here/registry.sh" start)"
  cleanup_services+=("'$here/registry.sh' stop")
fi

section "build tests"
cargo test --workspace --locked --no-run
tests_list=$(mktemp)
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"], os.path.dirname(m["manifest_path"]), sep="\t")
' | sort -u >"$tests_list"
echo "$(wc -l <"$tests_list") test binaries"

# The test binaries (CRATE-FOLDER:NAME) that run as the ordinary test user, each with a
# small disk of its own for the tests that fill one (an ordinary user cannot mount);
# every other one runs as root.
as_user_tests=" host/image:registry host/image:archive host/image:bearer host/image:hostile_registry
  tests:images_cli tests:vm_cli "
# as_user DIR NAME: prints the command prefix that runs test binary NAME of the crate in
# DIR as it should run (nothing for root).
as_user() {
  case "$as_user_tests" in
    *[[:space:]]"${1#"$root"/}:$2"[[:space:]]*) echo "$here/as-test-user.sh --small-disk 256 --" ;;
  esac
}
results=$(mktemp)
status=0
# Each test's time is printed beside its result: libtest's --report-time, which the
# stable toolchain's test binaries accept when RUSTC_BOOTSTRAP is set (only for them:
# cargo would rebuild everything if it changed for a build).
report_time=(-Z unstable-options --report-time)
section "host tests"
while IFS=$'\t' read -r name exe dir; do
  case "$name" in vm_*) continue ;; esac
  read -r -a wrap <<<"$(as_user "$dir" "$name")"
  echo "---- $name${wrap[*]:+ (as $(berth_test_user))}"
  (cd "$dir" && RUSTC_BOOTSTRAP=1 "${wrap[@]}" "$exe" --include-ignored "${report_time[@]}") 2>&1 | tee -a "$results" || status=1
done <"$tests_list"

section "fuzzing (scripts/fuzz.sh)"
# Each target for a short while over its corpus in tests/fuzz/corpus (new inputs go to a
# corpus in the cache, never into the clone); a crash or a failed build fails the suite.
fuzz_status=0
"$here/fuzz.sh" --time "${BERTH_FUZZ_TIME:-20}" || fuzz_status=1

section "VM tests (through scripts/with-kvm.sh)"
one=$(mktemp)
vm_passed=0
vm_failed=0
# Sorts the tests of one run of a VM test binary (its output in $one) into the arrays
# passed, failed (with a report) and redo (to run again). A test that failed because a
# micro-VM inside the harness triple-faulted, or whose report the broken machine took
# with it, is redone; `running` is the one that had started and not finished.
sort_results() {
  passed=() failed=() redo=() running=
  local kind name
  while read -r kind name; do
    case "$kind" in
      ok) passed+=("$name") ;;
      failed) failed+=("$name") ;;
      redo) redo+=("$name") ;;
      running) running=$name ;;
    esac
  done < <(awk '
    /^---- .* stdout ----$/ { block = $2; reported[block] = 1; next }
    /^failures:$/ || /^test result:/ { block = "" }
    block != "" && /triple-faulted \(the guest crashed\)/ { faulted[block] = 1 }
    /^test [^ ]+ \.\.\. / {
      name = $2; result = $4; last = name
      if (result == "ok") ok[name] = 1
      else if (result == "FAILED") bad[name] = 1
    }
    END {
      for (n in ok) print "ok", n
      for (n in bad) print ((n in reported) && !(n in faulted) ? "failed" : "redo"), n
      if (last != "" && !(last in ok) && !(last in bad)) print "running", last
    }' "$one")
}
# One harness machine per test binary, its tests one at a time. Where that machine is
# QEMU's emulation, its nested SVM sometimes breaks the machine's own kernel (a panic, or
# it stops responding: see with-kvm.sh): the tests that had not finished then run in a
# fresh machine, at most twice per binary, and the log says so; those that finished
# keep their results. A test that failed on its own is never rerun; one that outran the
# binary's time limit fails and the rest go on in a fresh machine.
while IFS=$'\t' read -r name exe dir; do
  case "$name" in vm_*) ;; *) continue ;; esac
  read -r -a wrap <<<"$(as_user "$dir" "$name")"
  echo "---- $name${wrap[*]:+ (as $(berth_test_user))} (${SECONDS}s in)"
  mapfile -t pending < <("$exe" --list --include-ignored 2>/dev/null | sed -n 's/: test$//p')
  if [ ${#pending[@]} -eq 0 ]; then
    echo "$name lists no tests" | tee -a "$results"
    status=1
    continue
  fi
  breaks=0
  while [ ${#pending[@]} -gt 0 ]; do
    limit=$(( ${#pending[@]} * ${BERTH_VM_TEST_TIMEOUT:-300} ))
    set +e
    (cd "$dir" && RUSTC_BOOTSTRAP=1 "$here/with-kvm.sh" --timeout "$limit" -- \
      "${wrap[@]}" "$exe" --include-ignored --test-threads=1 "${report_time[@]}" --exact "${pending[@]}") 2>&1 | tee "$one"
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -ne 124 ] && [ "$rc" -ne 125 ]; then
      # The binary ran to its end: its summary line counts.
      cat "$one" >>"$results"
      [ "$rc" -eq 0 ] || status=1
      break
    fi
    sort_results
    vm_passed=$(( vm_passed + ${#passed[@]} ))
    vm_failed=$(( vm_failed + ${#failed[@]} ))
    for t in "${failed[@]}"; do echo "$name: $t FAILED (see its report above)" | tee -a "$results"; done
    done_now=" ${passed[*]} ${failed[*]} "
    if [ "$rc" -eq 124 ] && [ -n "$running" ]; then
      echo "$name: $running FAILED: it did not finish within the binary's ${limit}s" | tee -a "$results"
      vm_failed=$(( vm_failed + 1 ))
      done_now+="$running "
    elif [ "$rc" -eq 125 ]; then
      breaks=$(( breaks + 1 ))
    fi
    left=()
    for t in "${pending[@]}"; do
      case "$done_now" in *" $t "*) ;; *) left+=("$t") ;; esac
    done
    if [ ${#left[@]} -gt 0 ] && { [ "$breaks" -gt 2 ] ||
      { [ "$rc" -eq 124 ] && [ ${#left[@]} -eq ${#pending[@]} ]; }; }; then
      # Broken too often, or out of time with no test finished: what is left fails.
      echo "$name: the harness machine broke $breaks times or ran out of time; not run: ${left[*]}" | tee -a "$results"
      vm_failed=$(( vm_failed + ${#left[@]} ))
      status=1
      break
    fi
    pending=("${left[@]}")
    [ ${#pending[@]} -eq 0 ] || echo "$name: running the ${#pending[@]} unfinished tests again in a fresh harness machine: ${pending[*]}"
  done
done <"$tests_list"

section "benchmarks: one short run of each (scripts/bench-*.sh)"
# Each benchmark as its own comment says to run it, with the fewest runs and smallest
# sizes: that they still work is what counts here, not their figures (noisy, and nested
# emulation where the host has no hardware KVM).
bench_passed=0
bench_failed=0
for bench in "bench-vmm.sh 1:with-kvm" "bench-run.sh 1:" "bench-docker.sh 1:" \
  "bench-net.sh 1:with-kvm" "bench-fs.sh 1:with-kvm" "bench-image.sh 1:" "bench-runtime.sh 5:" \
  "bench-scratch.sh 5:"; do
  cmd=${bench%%:*}
  echo "---- $cmd (${SECONDS}s in)"
  read -r -a words <<<"$cmd"
  case "${bench#*:}" in
    with-kvm) run=("$here/with-kvm.sh" --memory 6144 -- "$here/${words[0]}" "${words[@]:1}") ;;
    *) run=("$here/${words[0]}" "${words[@]:1}") ;;
  esac
  if BERTH_BENCH_FS_MIB=16 BERTH_BENCH_FS_FILES=200 "${run[@]}"; then
    bench_passed=$(( bench_passed + 1 ))
  else
    echo "$cmd FAILED (see above)" | tee -a "$results"
    bench_failed=$(( bench_failed + 1 ))
  fi
done

section "doc tests"
cargo test --workspace --locked --doc 2>&1 | tee -a "$results" || status=1

total_passed=$(grep -oE '^test result: .* ([0-9]+) passed' "$results" | grep -oE '[0-9]+ passed' | awk -v vm="$((vm_passed + bench_passed))" '{s+=$1} END {print s+vm}')
total_failed=$(grep -oE '^test result: .*; ([0-9]+) failed' "$results" | grep -oE '[0-9]+ failed' | awk -v vm="$((vm_failed + bench_failed))" '{s+=$1} END {print s+vm}')
rm -f "$tests_list" "$results" "$one"
if [ "$fuzz_status" -ne 0 ]; then
  echo "fuzzing: a target crashed or did not build (see the fuzzing section)"
  total_failed=$((total_failed + 1))
else
  total_passed=$((total_passed + 1))
fi
if [ "$total_failed" -ne 0 ]; then status=1; fi
if [ "$status" -ne 0 ] && [ "$total_failed" -eq 0 ]; then
  echo "a test binary, the build or the harness failed before reporting its tests (see above)"
  total_failed=1
fi
echo
echo "tests: $total_passed passed, $total_failed failed"
exit $status
