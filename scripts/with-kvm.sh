#!/usr/bin/env bash
# with-kvm.sh [--timeout SECS] [--retries N] [--memory MIB] [--cpus N] -- CMD [ARGS...]
#
# Runs CMD where a /dev/kvm able to boot Linux guests exists, and returns its output
# and exit status unchanged.
#
# - Where the host's KVM has hardware virtualization (VMX or SVM), CMD runs directly.
# - Elsewhere (a PVM-flavoured or absent KVM), CMD runs inside an "L1" QEMU TCG
#   machine with nested SVM that loads kvm-amd. The host's whole filesystem is shared
#   into it with virtiofs and CMD runs chrooted into it, at the same working directory
#   and with the same environment, so build outputs and test binaries are where they
#   are on the host (/tmp included: a checkout may live there). /run is a fresh tmpfs
#   inside, and TMPDIR=/run/tmp; BERTH_HIDE_X2APIC=1 is set because SMP guests nested
#   under TCG hang with x2apic.
#
# A hung command is stopped after --timeout seconds (default 1200): the run then fails
# with status 124 and says so. When the L1 machine itself breaks (its kernel panics, its
# heartbeat stops, or the command fails with one of berth's micro-VMs inside it having
# triple-faulted: faults of QEMU's nested-SVM emulation, never the command's), the
# run fails with 125 and the reason, or, with --retries N, CMD runs again from the
# start in a fresh machine (with the whole --timeout again), at most N times, each
# retry announced on stderr. So use --retries only for commands that can be rerun.
# BERTH_HARNESS=direct|qemu forces one mode.
#
# A caller on a terminal (stdin and stdout both one, and in its foreground) gets it
# carried, so that `berth run -it` works as it does on the host: CMD runs on a pty inside
# L1 (its stdout and stderr both on it, as on any terminal), the caller's terminal is in
# raw mode while CMD runs and restored after, and window resizes follow. The bytes travel
# over two virtio-serial ports, relayed by scripts/harness-tty.py at both ends. Callers
# without a terminal (CI, pipes, captured output) get CMD's stdout and stderr apart, and
# an empty stdin, as before.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

timeout_s=1200
retries=0
memory_mib=4096
cpus=2
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --retries) retries=$2; shift 2 ;;
    --memory) memory_mib=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    -*) echo "with-kvm: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "with-kvm: no command given (usage: with-kvm.sh [--timeout SECS] -- CMD ARGS...)" >&2; exit 2; }
case "$timeout_s" in ''|*[!0-9]*) echo "with-kvm: --timeout takes whole seconds, not '$timeout_s'" >&2; exit 2 ;; esac
case "$retries" in ''|*[!0-9]*) echo "with-kvm: --retries takes a count, not '$retries'" >&2; exit 2 ;; esac

hardware_kvm() {
  [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo
}

# Whether the caller is on a terminal it may take over: stdin and stdout are terminals,
# and this process is in that terminal's foreground (a background job must not make it raw).
on_terminal() {
  local stat pgrp tpgid
  [ -t 0 ] && [ -t 1 ] || return 1
  stat=$(</proc/$$/stat)
  stat=${stat##*) }
  read -r _ _ pgrp _ _ tpgid _ <<<"$stat"
  [ "$pgrp" = "$tpgid" ]
}
tty_mode=
if on_terminal; then tty_mode=1; fi

mode=${BERTH_HARNESS:-}
if [ -z "$mode" ]; then
  if hardware_kvm; then mode=direct; else mode=qemu; fi
fi

if [ "$mode" = direct ]; then
  # timeout puts CMD in a process group of its own, which a terminal treats as background
  # (SIGTTIN on reading it): with a terminal, CMD stays in the foreground.
  foreground=()
  [ -n "$tty_mode" ] && foreground=(--foreground)
  set +e
  timeout "${foreground[@]}" --kill-after=10 "$timeout_s" "$@"
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "with-kvm: '$1' did not finish within ${timeout_s}s and was stopped" >&2
    exit 124
  fi
  exit $rc
fi
[ "$mode" = qemu ] || { echo "with-kvm: BERTH_HARNESS must be direct or qemu, not '$mode'" >&2; exit 2; }

l1=$("$here/build-l1.sh")
job=
vfsd_pid=
qemu_pid=
tty_pid=
tty_saved=
[ -n "$tty_mode" ] && tty_saved=$(stty -g)
tails=()
# The host end of the terminal: it ends by itself once it has the job's last output (or
# once QEMU is gone); a moment for that, then it is stopped (and restores the terminal).
stop_tty() {
  [ -n "$tty_pid" ] || return 0
  local _i
  for _i in $(seq 20); do kill -0 "$tty_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$tty_pid" 2>/dev/null
  wait "$tty_pid" 2>/dev/null
  tty_pid=
}
stop_machine() {
  set +e
  [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  qemu_pid=
  stop_tty
  [ -n "$vfsd_pid" ] && kill "$vfsd_pid" 2>/dev/null && wait "$vfsd_pid" 2>/dev/null
  vfsd_pid=
  for t in "${tails[@]}"; do kill "$t" 2>/dev/null; done
  tails=()
  set -e
}
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  stop_machine
  # Whatever happened to the helper, the caller gets its terminal back as it was.
  if [ -n "$tty_saved" ]; then stty "$tty_saved" 2>/dev/null || true; fi
  if [ -n "$job" ]; then
    if [ -n "${BERTH_HARNESS_KEEP:-}" ]; then echo "with-kvm: kept $job" >&2; else rm -rf "$job"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The job: environment, working directory and command, replayed inside by bash.
new_job() {
  job=$(mktemp -d "$(berth_cache_dir)/harness-job.XXXXXX")
  {
    export -p | grep -vE '^declare -x (BASH_[A-Z_]*|SHLVL|OLDPWD|PWD|_)=' || true
    # Temporary files go to a tmpfs inside: virtiofs has no xattrs, which layer images need.
    echo "export BERTH_HIDE_X2APIC=1 BERTH_IN_HARNESS=1 TMPDIR=/run/tmp"
    printf 'cd %q || exit 125\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
  } >"$job/cmd"
  : >"$job/stdout"
  : >"$job/stderr"
  if [ -n "$tty_mode" ]; then
    # L1's init runs the job on a pty when this exists: the terminal's size, then resizes.
    cp "$here/harness-tty.py" "$job/tty.py"
    stty size >"$job/tty"
  fi
  tail -n +1 -f "$job/stdout" &
  tails+=($!)
  tail -n +1 -f "$job/stderr" >&2 &
  tails+=($!)
}

# Under TCG on a loaded host the L1 kernel's timer calibration can fail and stall its
# clock: lpj, no_timer_check and the host's TSC rate skip it, and a boot that has not
# started the job in time is retried.
start_l1() {
  if [ -n "$vfsd_pid" ]; then
    kill "$vfsd_pid" 2>/dev/null || true
    wait "$vfsd_pid" 2>/dev/null || true
  fi
  rm -f "$job/vfs.sock"
  "$l1/virtiofsd" --socket-path="$job/vfs.sock" --shared-dir=/ --sandbox=none --cache=auto \
    --inode-file-handles=never --log-level=error >"$job/virtiofsd.log" 2>&1 &
  vfsd_pid=$!
  for _ in $(seq 100); do [ -S "$job/vfs.sock" ] && break; sleep 0.05; done
  [ -S "$job/vfs.sock" ] || { cat "$job/virtiofsd.log" >&2; echo "with-kvm: virtiofsd did not start" >&2; exit 125; }
  local tty_dev=()
  if [ -n "$tty_mode" ]; then
    stop_tty
    rm -f "$job/tty.sock" "$job/ctl.sock"
    # virtserialport, not virtconsole: QEMU holds the guest's writes back while the host
    # end is full instead of dropping them.
    tty_dev=(-device virtio-serial-device
      -chardev "socket,id=tty,path=$job/tty.sock,server=on,wait=off" -device "virtserialport,chardev=tty,name=berth.tty"
      -chardev "socket,id=ctl,path=$job/ctl.sock,server=on,wait=off" -device "virtserialport,chardev=ctl,name=berth.ctl")
  fi
  qemu-system-x86_64 -accel tcg,thread=multi -smp "$cpus" -cpu EPYC,+svm,+npt -M microvm,memory-backend=mem \
    -object memory-backend-memfd,id=mem,size="${memory_mib}M",share=on -m "${memory_mib}M" \
    -nographic -no-reboot -monitor "unix:$job/monitor.sock,server=on,wait=off" -serial "file:$job/console.log" \
    -kernel "$l1/vmlinux" -initrd "$l1/initrd.cpio.gz" \
    -append "console=ttyS0 panic=-1 lpj=5000000 no_timer_check $tsc_args berth.job=$job" \
    -chardev socket,id=vfs,path="$job/vfs.sock" -device vhost-user-fs-device,chardev=vfs,tag=hostroot \
    "${tty_dev[@]}" >"$job/qemu.log" 2>&1 &
  qemu_pid=$!
  if [ -n "$tty_mode" ]; then
    # The terminal itself as its stdin: a background command's is /dev/null otherwise.
    python3 "$here/harness-tty.py" host "$job" <&0 &
    tty_pid=$!
  fi
}

# Where L1's vCPUs are (RIP, flags) from QEMU's monitor: what tells a hung L1 kernel from
# a slow job.
vcpu_state() {
  python3 - "$job/monitor.sock" <<'PY'
import re, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"info registers -a\n")
out, end = b"", time.time() + 3
while time.time() < end:
    try:
        d = s.recv(65536)
    except socket.timeout:
        break
    if not d:
        break
    out += d
text = out.decode(errors="replace")
for cpu, rip, rfl in re.findall(r"CPU#(\d+).*?RIP=([0-9a-f]+) RFL=(\S+ \[.*?\])", text, re.S):
    print(f"vCPU {cpu}: RIP={rip} RFLAGS={rfl}")
PY
}

# The host's TSC rate, handed to L1 so that it never has to calibrate against the PIT.
tsc_khz=$(awk -F': ' '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
tsc_args=
[ -n "$tsc_khz" ] && [ "$tsc_khz" -gt 0 ] && tsc_args="tsc_early_khz=$tsc_khz tsc=reliable"

boot_timeout=${BERTH_L1_BOOT_TIMEOUT:-90}
# L1's init touches $job/heartbeat every 30 s: this long without it, the L1 kernel is stuck.
stall_timeout=${BERTH_L1_STALL_TIMEOUT:-180}

# One run of the job in a fresh L1 machine. Sets outcome: done (the job ended, its
# status in $job/status), timeout, or broken (the L1 machine died or stopped responding
# before the job ended: an emulation fault, not the job's), with the reason in $broken_why.
run_in_l1() {
  outcome=broken
  broken_why=
  local attempt now boot_deadline beat
  # Each run gets the whole --timeout: a retry after a late break must not be cut short.
  deadline=$(( $(date +%s) + timeout_s ))
  for attempt in 1 2 3; do
    start_l1
    boot_deadline=$(( $(date +%s) + boot_timeout ))
    while kill -0 "$qemu_pid" 2>/dev/null; do
      now=$(date +%s)
      if [ "$now" -ge "$deadline" ]; then
        outcome=timeout
        vcpu_state >"$job/vcpus" 2>&1 || true
        stop_machine
        return
      fi
      if [ ! -e "$job/started" ] && [ "$now" -ge "$boot_deadline" ]; then
        echo "with-kvm: the L1 machine did not start the job within ${boot_timeout}s (boot $attempt); restarting it" >&2
        tail -n 3 "$job/console.log" >&2 || true
        kill -9 "$qemu_pid" 2>/dev/null
        break
      fi
      if [ -e "$job/started" ] && [ ! -s "$job/status" ]; then
        beat=$(stat -c %Y "$job/heartbeat" 2>/dev/null || stat -c %Y "$job/started")
        if [ $(( now - beat )) -ge "$stall_timeout" ]; then
          broken_why="it stopped responding (no heartbeat for ${stall_timeout}s)"
          vcpu_state >"$job/vcpus" 2>&1 || true
          stop_machine
          return
        fi
      fi
      sleep 0.2
    done
    wait "$qemu_pid" 2>/dev/null || true
    if [ -e "$job/started" ]; then
      break
    fi
  done
  sleep 0.3 # let the tails print the last of the output
  stop_machine
  if [ -s "$job/status" ]; then
    outcome="done"
    # A sound guest nested in L1 sometimes triple-faults under QEMU's nested-SVM
    # emulation: a job that failed with one of berth's VMs reporting that is the
    # machine's break, not the job's (hardware KVM never gets here).
    if [ "$(cat "$job/status")" != 0 ] &&
      grep -qs 'triple-faulted (the guest crashed)' "$job/stdout" "$job/stderr" "$job/tty.log"; then
      outcome=broken
      broken_why="a micro-VM inside it triple-faulted (an emulation fault) and the job failed"
    fi
  elif [ -e "$job/started" ]; then
    broken_why="it ended before the job did"
  else
    broken_why="it did not start the job in 3 boots"
  fi
}

# A broken L1 (QEMU's TCG emulating nested SVM is not flawless) is retried in a fresh
# machine, with the whole command, up to --retries times; the job's own failures never.
attempt=0
while :; do
  attempt=$((attempt + 1))
  [ -n "$job" ] && rm -rf "$job"
  new_job "$@"
  run_in_l1
  [ "$outcome" = broken ] || break
  echo "with-kvm: the QEMU L1 machine broke: $broken_why" >&2
  tail -n 20 "$job/console.log" >&2 || true
  if [ -s "$job/vcpus" ]; then
    echo "with-kvm: where the L1 vCPUs were:" >&2
    cat "$job/vcpus" >&2
  fi
  if [ "$attempt" -gt "$retries" ]; then
    echo "with-kvm: '$1' did not run to completion inside the QEMU L1 machine" >&2
    exit 125
  fi
  echo "with-kvm: running '$1' again from the start in a fresh L1 machine (retry $attempt of $retries)" >&2
done

if [ "$outcome" = timeout ]; then
  echo "with-kvm: '$1' did not finish within ${timeout_s}s inside the QEMU L1 machine; it was stopped" >&2
  # What the L1 kernel warned of (stalls, blocked tasks, BUGs) says more than its last lines.
  if grep -qE 'BUG|WARNING|INFO: |stall|blocked for|Oops|soft lockup' "$job/console.log"; then
    echo "with-kvm: what the L1 kernel reported:" >&2
    grep -E -A4 'BUG|WARNING|INFO: |stall|blocked for|Oops|soft lockup' "$job/console.log" | head -n 60 >&2 || true
  fi
  echo "with-kvm: last lines of the L1 console:" >&2
  tail -n 15 "$job/console.log" >&2 || true
  if [ -s "$job/vcpus" ]; then
    echo "with-kvm: where the L1 vCPUs were:" >&2
    cat "$job/vcpus" >&2
  fi
  exit 124
fi
exit "$(cat "$job/status")"
