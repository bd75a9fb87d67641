#!/usr/bin/env bash
# bench-net.sh [RUNS]: user-mode networking, berth against QEMU's, side by side in one run,
# RUNS times each (default 3):
#   berth  berth-vmm's virtio-net device with its user-mode gateway (host/net), the
#          guest's ports published on host ports;
#   qemu   qemu-system-x86_64 -M microvm with `-netdev user,hostfwd=...` (slirp) and a
#          virtio-net device, the same guest.
# Same kernel, one vCPU, 512 MiB, and the same initramfs: the test initramfs with Debian's
# iperf3 (and its libraries) and a bench /init appended as a second archive. Measured:
#   in       TCP throughput host -> guest through a published port (iperf3 -c on the host,
#            5 s), Mbit/s;
#   out      TCP throughput guest -> host's loopback through the gateway (iperf3 -c in the
#            guest against a server on the host), Mbit/s;
#   connect  connection set-up and one small HTTP answer through a published port to
#            busybox httpd in the guest: the median of 200 sequential requests, ms;
#   rss      the VMM's resident memory with the guest idle on the network, MiB.
# Prints the medians and the ratios (berth/qemu for throughput: above 1 is faster; for
# connect and rss: below 1 is better). Needs a /dev/kvm that boots Linux: run it as
#   scripts/with-kvm.sh --memory 4096 -- scripts/bench-net.sh
# where the host has none.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
runs=${1:-3}
case "$runs" in ''|*[!0-9]*|0) echo "bench-net: RUNS must be a positive number" >&2; exit 2 ;; esac

berth_need_packages iperf3 cpio gzip
[ -c /dev/kvm ] || { echo "bench-net: no /dev/kvm here: run it through scripts/with-kvm.sh" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "bench-net: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)" >&2; exit 1; }
kernel=${BERTH_KERNEL:-$("$here/build-kernel.sh")/vmlinux}
initrd=${BERTH_TEST_INITRAMFS:-$("$here/build-test-initramfs.sh")}
target_dir=${CARGO_TARGET_DIR:-$root/target}
berth=${BERTH_VMM_BIN:-$target_dir/release/berth-vmm}
if [ ! -x "$berth" ]; then
  (cd "$root" && cargo build --release --quiet -p berth-vmm >&2)
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-net.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The second archive: iperf3 with the libraries it loads, and an /init that replaces the
# test initramfs's (a later archive's files win).
extra="$work/extra"
mkdir -p "$extra/usr/bin"
cp /usr/bin/iperf3 "$extra/usr/bin/iperf3"
for lib in $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
  mkdir -p "$extra$(dirname "$lib")"
  cp -L "$lib" "$extra$lib"
done
cat >"$extra/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp
say() { echo "berth-test: $*"; }
for arg in $(cat /proc/cmdline); do
  case "$arg" in bench.out=*) out_port=${arg#bench.out=} ;; esac
done
ip link set lo up
berth-guest-probe net-up eth0 192.168.249.2/24 192.168.249.1 || { say net-failed; reboot -f; }
iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
sleep 1
say ready-in
wait
iperf3 -c 192.168.249.1 -p "$out_port" -t 5 -f m 2>&1 | grep receiver | sed 's/^/berth-test: out /'
mkdir -p /www
echo ok >/www/index.html
httpd -p 80 -h /www
say ready-http
sleep 3600
INIT
chmod 755 "$extra/init"
bench_initrd="$work/initrd.cpio.gz"
cp "$initrd" "$bench_initrd"
(cd "$extra" && find . | cpio -o -H newc --quiet | gzip -1) >>"$bench_initrd"

/usr/bin/python3 - "$runs" "$kernel" "$bench_initrd" "$berth" "$work" <<'PY'
import json, os, re, select, socket, statistics, subprocess, sys, time

runs = int(sys.argv[1])
kernel, initrd, berth, work = sys.argv[2:6]
MEM_MIB = 512
GUEST = "192.168.249.2"
LIMIT = 600
REQUESTS = 200

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def wait_line(proc, want, deadline, seen):
    """Reads the console until a line says `want`; returns that line."""
    buf = b""
    while time.time() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 1)
        if not r:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode(errors="replace")
            seen.append(text)
            if "berth-test: " + want in text:
                return text
    sys.exit(f"bench-net: the guest never said {want!r}:\n" + "\n".join(seen[-40:]))

def get(port):
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    return (time.perf_counter() - t) * 1000

def measure(start):
    in_port, http_port, out_port = free_port(), free_port(), free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(out_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = start(in_port, http_port, out_port)
    seen = []
    try:
        deadline = time.time() + LIMIT
        wait_line(proc, "ready-in", deadline, seen)
        client = None
        for _ in range(20):
            client = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(in_port), "-t", "5", "-J"],
                                    capture_output=True, text=True, timeout=120)
            if client.returncode == 0:
                break
            time.sleep(0.5)
        if client is None or client.returncode != 0:
            sys.exit("bench-net: iperf3 into the guest failed: " + (client.stdout + client.stderr)[-2000:])
        inbound = json.loads(client.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        line = wait_line(proc, "out ", deadline, seen)
        m = re.search(r"([\d.]+)\s+Mbits/sec", line)
        if not m:
            sys.exit("bench-net: no throughput in " + line)
        outbound = float(m.group(1))
        wait_line(proc, "ready-http", deadline, seen)
        for _ in range(50):
            try:
                get(http_port)
                break
            except OSError:
                time.sleep(0.2)
        times = [get(http_port) for _ in range(REQUESTS)]
        time.sleep(1)
        rss = rss_mib(proc.pid)
        return {"in": inbound, "out": outbound, "connect": statistics.median(times), "rss": rss}
    finally:
        proc.kill()
        proc.wait()
        server.kill()
        server.wait()

CMD = lambda out_port: f"bench.out={out_port}"

def berth_vm(in_port, http_port, out_port):
    config = os.path.join(work, "vm.json")
    with open(config, "w") as f:
        json.dump({"kernel": kernel, "initrd": initrd, "memory_mib": MEM_MIB, "cpus": 1,
                   "rng": False, "cmdline": CMD(out_port),
                   "net": {"backend": {"kind": "user", "ports": [
                       {"host": f"127.0.0.1:{in_port}", "guest_port": 5201},
                       {"host": f"127.0.0.1:{http_port}", "guest_port": 80}]}}}, f)
    return subprocess.Popen([berth, "--config", config], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

def qemu_vm(in_port, http_port, out_port):
    netdev = (f"user,id=n0,net=192.168.249.0/24,host=192.168.249.1,"
              f"hostfwd=tcp:127.0.0.1:{in_port}-{GUEST}:5201,"
              f"hostfwd=tcp:127.0.0.1:{http_port}-{GUEST}:80")
    return subprocess.Popen(
        ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off,acpi=off",
         "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", f"{MEM_MIB}M",
         "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
         "-no-reboot", "-kernel", kernel, "-initrd", initrd,
         "-netdev", netdev, "-device", "virtio-net-device,netdev=n0",
         "-append", "console=ttyS0 reboot=k panic=-1 quiet " + CMD(out_port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

STEPS = ["in", "out", "connect", "rss"]
results = {"berth": [], "qemu": []}
for i in range(runs):
    # Interleaved, so that a noisy moment hurts both alike.
    for name, fn in (("berth", berth_vm), ("qemu", qemu_vm)):
        r = measure(fn)
        results[name].append(r)
        print(f"run {i + 1} {name}: in={r['in']:.0f} Mbit/s out={r['out']:.0f} Mbit/s "
              f"connect={r['connect']:.2f} ms rss={r['rss']:.1f} MiB", file=sys.stderr, flush=True)

med = {n: {s: statistics.median(r[s] for r in rs) for s in STEPS} for n, rs in results.items()}
print(f"\nuser-mode networking, {MEM_MIB} MiB guest, medians of {runs} runs")
print(f"{'measure':<22}{'berth':>10}{'qemu':>10}   {'berth/qemu':>10}")
units = {"in": "Mbit/s", "out": "Mbit/s", "connect": "ms", "rss": "MiB"}
for s in STEPS:
    b, q = med["berth"][s], med["qemu"][s]
    ratio = f"{b / q:.2f}" if q > 0 else "-"
    print(f"{s + ' (' + units[s] + ')':<22}{b:>10.2f}{q:>10.2f}   {ratio:>10}")
PY
