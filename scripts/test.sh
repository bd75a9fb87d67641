#!/usr/bin/env bash
# test.sh: berth's whole test suite, from a fresh clone on a fresh Debian machine.
#
#  1. set-up: packages, guest kernel, the harness machine (scripts/setup.sh);
#  2. cargo fmt --check and clippy with warnings as errors;
#  3. the guest artefacts: the agent's initramfs and the test initramfs;
#  4. the services tests talk to: registry servers on loopback;
#  5. every test binary with its ignored tests included: binaries named vm_* inside
#     scripts/with-kvm.sh (one harness machine per test), the others on the host
#     as root; then the doc tests.
# Ends with a summary line "tests: N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

section() { printf '\n==== %s ====\n' "$*"; }

section "set-up"
eval "$("$here/setup.sh")"
export CARGO_TERM_COLOR=never
# Cargo's build is cached outside the clone, keyed by the toolchain and the lock file's
# registry packages (a new crate of berth's own keeps the key), so a fresh clone rebuilds
# only berth's own crates; the two newest keys are kept.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  builds="$(berth_cache_dir)/cargo-target"
  key=$({ awk 'BEGIN { RS = "" } /\nsource = /' Cargo.lock; rustc -vV; } | sha256sum | cut -c1-16)
  export CARGO_TARGET_DIR="$builds/$key"
  mkdir -p "$CARGO_TARGET_DIR"
  touch "$CARGO_TARGET_DIR"
  # shellcheck disable=SC2012
  ls -1t "$builds" | tail -n +3 | while read -r old; do rm -rf "${builds:?}/$old"; done
fi
echo "cargo builds in $CARGO_TARGET_DIR"

section "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

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
cargo build --locked -p berth -p berth-vmm
export BERTH_BIN="$CARGO_TARGET_DIR/debug/berth"

section "services"
cleanup_services=()
cleanup() {
  for c in "${cleanup_services[@]}"; do eval "$c" || true; done
}
trap cleanup EXIT
if [ -x "$here/registry.sh" ]; then
  eval "$("$here/registry.sh" start)"
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

results=$(mktemp)
status=0
section "host tests"
while IFS=$'\t' read -r name exe dir; do
  case "$name" in vm_*) continue ;; esac
  echo "---- $name"
  (cd "$dir" && "$exe" --include-ignored) 2>&1 | tee -a "$results" || status=1
done <"$tests_list"

section "VM tests (through scripts/with-kvm.sh)"
one=$(mktemp)
# One harness machine per test. Where that machine is QEMU's emulation, its nested SVM
# sometimes breaks the machine's own kernel (a panic, or it stops responding: see
# with-kvm.sh); the test then reruns in a fresh machine, at most twice, and says so. A
# machine per test keeps such a break from costing a whole binary's run, and each test
# starts from nothing. A failing test is never rerun.
while IFS=$'\t' read -r name exe dir; do
  case "$name" in vm_*) ;; *) continue ;; esac
  echo "---- $name"
  vm_tests=$("$exe" --list --include-ignored 2>/dev/null | sed -n 's/: test$//p')
  if [ -z "$vm_tests" ]; then
    echo "$name lists no tests" | tee -a "$results"
    status=1
    continue
  fi
  for t in $vm_tests; do
    (cd "$dir" && "$here/with-kvm.sh" --timeout "${BERTH_VM_TEST_TIMEOUT:-600}" --retries 2 -- \
      "$exe" --include-ignored --exact "$t") 2>&1 | grep --line-buffered -vE '^(running 1 test|)$' | tee "$one" || status=1
    # A rerun's report replaces the broken machine's: only the last attempt is counted.
    awk '/^with-kvm: running .* again from the start/ { kept = ""; next } { kept = kept $0 "\n" }
      END { printf "%s", kept }' "$one" >>"$results"
  done
done <"$tests_list"

section "doc tests"
cargo test --workspace --locked --doc 2>&1 | tee -a "$results" || status=1

passed=$(grep -oE '^test result: .* ([0-9]+) passed' "$results" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -oE '^test result: .*; ([0-9]+) failed' "$results" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
rm -f "$tests_list" "$results" "$one"
if [ "$failed" -ne 0 ]; then status=1; fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "a test binary, the build or the harness failed before reporting its tests (see above)"
  failed=1
fi
echo
echo "tests: $passed passed, $failed failed"
exit $status
