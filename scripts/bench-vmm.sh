#!/usr/bin/env bash
# bench-vmm.sh [RUNS]: berth's VMM against `qemu-system-x86_64 -M microvm`, same kernel,
# same initramfs (scripts/build-test-initramfs.sh, mode "sleep": init prints one line and
# waits), one vCPU, 128 MiB, no devices but the serial console. For each VMM, RUNS times
# (default 5), it measures:
#   boot-to-init  time from starting the VMM process to the first line init prints;
#   overhead      the VMM's peak RSS (VmHWM) minus the guest memory it touched (the Rss of
#                 the guest RAM mapping), sampled once init runs;
# then stops the VM with SIGTERM. Prints medians and the berth/QEMU ratios.
# Needs a /dev/kvm that boots Linux: run it as `scripts/with-kvm.sh -- scripts/bench-vmm.sh`
# where the host has none. berth runs as `berth-vmm` (the VMM binary without the rest of the
# CLI, what berth starts once per VM) from a JSON VmConfig. BERTH_KERNEL, BERTH_VMM_BIN and
# BERTH_TEST_INITRAMFS override the defaults (the cached kernel, target/release/berth-vmm,
# the test initramfs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
runs=${1:-5}
case "$runs" in ''|*[!0-9]*|0) echo "bench-vmm: RUNS must be a positive number" >&2; exit 2 ;; esac

[ -c /dev/kvm ] || { echo "bench-vmm: no /dev/kvm here: run it through scripts/with-kvm.sh" >&2; exit 1; }
kernel=${BERTH_KERNEL:-$("$here/build-kernel.sh")/vmlinux}
initrd=${BERTH_TEST_INITRAMFS:-$("$here/build-test-initramfs.sh")}
berth=${BERTH_VMM_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/berth-vmm}
if [ ! -x "$berth" ]; then
  (cd "$root" && cargo build --release --quiet -p berth-vmm >&2)
fi
command -v qemu-system-x86_64 >/dev/null || { echo "bench-vmm: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)" >&2; exit 1; }

exec /usr/bin/python3 - "$runs" "$kernel" "$initrd" "$berth" <<'PY'
import json, os, signal, statistics, subprocess, sys, tempfile, time

runs, kernel, initrd, berth = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
MEM_MIB = 128
CMDLINE = "berth.test=sleep"
MARK = b"berth-test: init started"

def berth_cmd():
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({"kernel": kernel, "initrd": initrd, "memory_mib": MEM_MIB, "cpus": 1,
               "rng": False, "cmdline": CMDLINE}, config)
    config.close()
    return [berth, "--config", config.name]

def qemu_cmd():
    return ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-enable-kvm", "-cpu", "host", "-m", f"{MEM_MIB}M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-kernel", kernel, "-initrd", initrd, "-no-reboot",
            "-append", "console=ttyS0 reboot=k panic=-1 quiet " + CMDLINE]

def kib(status, key):
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

def guest_rss_kib(pid):
    """Rss of the largest mapping at least as big as guest RAM: the guest memory."""
    best, size, rss = 0, 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
                if size >= MEM_MIB * 1024 and rss > best:
                    best = rss
    return best

def measure(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    boot = None
    buf = b""
    deadline = t0 + 300
    os.set_blocking(p.stdout.fileno(), False)
    while time.monotonic() < deadline and p.poll() is None:
        try:
            chunk = p.stdout.read()
        except BlockingIOError:
            chunk = None
        if chunk:
            buf += chunk
            if MARK in buf:
                boot = time.monotonic() - t0
                break
        time.sleep(0.001)
    if boot is None:
        p.kill(); p.wait()
        raise SystemExit(f"bench-vmm: {cmd[0]} never printed the init line; output: {buf[-500:]!r}")
    time.sleep(0.5)
    with open(f"/proc/{p.pid}/status") as f:
        hwm = kib(f.read(), "VmHWM")
    guest = guest_rss_kib(p.pid)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    return boot * 1000.0, (hwm - guest) / 1024.0

results = {}
bcmd = berth_cmd()
for name, cmd in (("berth", bcmd), ("qemu", qemu_cmd())):
    boots, overheads = [], []
    for i in range(runs):
        b, o = measure(cmd)
        boots.append(b); overheads.append(o)
        print(f"  {name} run {i + 1}: boot-to-init {b:.1f} ms, overhead {o:.2f} MiB", flush=True)
    results[name] = (statistics.median(boots), statistics.median(overheads))
os.unlink(bcmd[-1])

print()
print(f"{'VMM':8} {'boot-to-init (ms)':>18} {'overhead (MiB)':>16}   (medians of {runs} runs)")
for name, (b, o) in results.items():
    print(f"{name:8} {b:18.1f} {o:16.2f}")
(bb, bo), (qb, qo) = results["berth"], results["qemu"]
print(f"{'berth/qemu':8} {bb / qb:17.2f}x {bo / qo if qo else float('nan'):15.2f}x")
PY
