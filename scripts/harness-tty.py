#!/usr/bin/env python3
"""harness-tty.py: carries the caller's terminal through scripts/with-kvm.sh's L1 machine.

  harness-tty.py host JOB    on the host, started by with-kvm.sh: the caller's terminal
                             (stdin and stdout) in raw mode, relayed to the job's pty
  harness-tty.py guest JOB   inside L1, run by its init: runs the job on a pty, relays it
                             and exits with the job's status

QEMU gives L1 two virtio-serial ports, each a Unix socket on the host in the job folder:
  berth.tty (tty.sock)  the terminal's bytes, both ways, untouched;
  berth.ctl (ctl.sock)  lines of text:
      guest -> host  "ready"          the job's pty is up: the host goes raw and relays
                     "end N"          the job ended and its pty gave N bytes in all
      host -> guest  "size ROWS COLS" the terminal's size (at ready and on SIGWINCH)
                     "ack"            the host has written all N bytes: L1 may power off
The job's first window size is in JOB/tty ("ROWS COLS"), set before the job starts.
The host always restores the terminal it made raw, however it ends.
"""
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
import tty

CHUNK = 64 * 1024
# Input waiting for the other side beyond this stops the reading of its source.
HIGH_WATER = 256 * 1024


def log(msg):
    sys.stderr.write(f"harness-tty: {msg}\n")
    sys.stderr.flush()


def read_some(fd):
    """Bytes from fd: b'' at its end, None when none are ready."""
    try:
        return os.read(fd, CHUNK)
    except BlockingIOError:
        return None
    except OSError as e:
        # A pty's master reads EIO once no process holds its slave.
        if e.errno == errno.EIO:
            return b""
        raise


def write_some(fd, buf):
    """Writes what fd takes now from buf; returns what is left."""
    try:
        n = os.write(fd, buf)
    except BlockingIOError:
        return buf
    return buf[n:]


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


class Lines:
    """Splits a control stream into lines."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode(errors="replace").split() for line in lines]


def winsize(fd):
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def set_winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# ---- host ---------------------------------------------------------------------------


def connect(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise SystemExit(f"harness-tty: QEMU did not open {path} in time")
            time.sleep(0.05)


def host(job):
    stdin, stdout = 0, 1
    saved = termios.tcgetattr(stdin)
    made_raw = False

    def leave(signum, _frame):
        raise SystemExit(128 + signum)

    # Before the job is up a ^C is with-kvm.sh's to handle (it stops this helper);
    # once raw, ^C is a byte for the job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGWINCH, lambda *_: None)

    deadline = time.monotonic() + 30
    data = connect(os.path.join(job, "tty.sock"), deadline)
    ctl = connect(os.path.join(job, "ctl.sock"), deadline)
    data.setblocking(False)
    # A copy of what the job wrote, for with-kvm.sh's checks of the job's output.
    copy = open(os.path.join(job, "tty.log"), "ab", buffering=0)
    lines = Lines()
    to_guest = b""
    received = 0
    expected = None
    reading_stdin = False

    def send_size():
        try:
            rows, cols = winsize(stdin)
        except OSError:
            return
        if rows > 0 and cols > 0:
            ctl.sendall(f"size {rows} {cols}\n".encode())

    try:
        while True:
            if expected is not None and received >= expected:
                ctl.sendall(b"ack\n")
                return
            rl = [data.fileno(), ctl.fileno(), wake_r]
            if reading_stdin and len(to_guest) < HIGH_WATER:
                rl.append(stdin)
            wl = [data.fileno()] if to_guest else []
            r, w, _ = select.select(rl, wl, [])
            if wake_r in r:
                os.read(wake_r, 512)
                if made_raw:
                    send_size()
            if data.fileno() in w:
                try:
                    n = data.send(to_guest)
                    to_guest = to_guest[n:]
                except BlockingIOError:
                    pass
            if stdin in r:
                got = read_some(stdin)
                if got == b"":
                    reading_stdin = False
                elif got:
                    to_guest += got
            if data.fileno() in r:
                try:
                    got = data.recv(CHUNK)
                except BlockingIOError:
                    got = None
                if got == b"":
                    return  # QEMU is gone
                if got:
                    received += len(got)
                    write_all(stdout, got)
                    copy.write(got)
            if ctl.fileno() in r:
                got = ctl.recv(4096)
                if not got:
                    return
                for words in lines.feed(got):
                    if words == ["ready"] and not made_raw:
                        tty.setraw(stdin, termios.TCSANOW)
                        made_raw = True
                        reading_stdin = True
                        send_size()
                    elif len(words) == 2 and words[0] == "end" and words[1].isdigit():
                        expected = int(words[1])
    finally:
        if made_raw:
            termios.tcsetattr(stdin, termios.TCSANOW, saved)


# ---- guest --------------------------------------------------------------------------


def port(name):
    """The device of the virtio-serial port called name."""
    base = "/sys/class/virtio-ports"
    for _ in range(100):
        for dev in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            try:
                with open(os.path.join(base, dev, "name")) as f:
                    if f.read().strip() == name:
                        return "/dev/" + dev
            except OSError:
                pass
        time.sleep(0.1)
    raise SystemExit(f"harness-tty: no virtio-serial port {name} (is virtio_console loaded?)")


def wait_host(fd, deadline):
    """Waits until the host end of a port is connected: until then, what is written is lost."""
    p = select.poll()
    p.register(fd, select.POLLOUT)
    while time.monotonic() < deadline:
        if not any(ev & select.POLLHUP for _, ev in p.poll(100)):
            return True
        time.sleep(0.1)
    return False


def guest(job):
    data = os.open(port("berth.tty"), os.O_RDWR | os.O_NONBLOCK)
    ctl = os.open(port("berth.ctl"), os.O_RDWR | os.O_NONBLOCK)
    if not wait_host(ctl, time.monotonic() + 30):
        log("the host end of the terminal is not connected; the job's output is lost")

    master, slave = os.openpty()
    try:
        with open(os.path.join(job, "tty")) as f:
            rows, cols = (int(x) for x in f.read().split()[:2])
        if rows > 0 and cols > 0:
            set_winsize(slave, rows, cols)
    except (OSError, ValueError):
        pass

    # SIGCHLD wakes the relay, which otherwise sleeps until there is something to carry:
    # idle wake-ups in L1 are best avoided (see build-l1.sh).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(master)
            signal.set_wakeup_fd(-1)
            # Python ignores these; the job must not inherit that.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.login_tty(slave)
            os.execv("/bin/bash", ["bash", "-c", f". '{job}/cmd'"])
        finally:
            os._exit(125)
    os.close(slave)
    os.set_blocking(master, False)
    write_all(ctl, b"ready\n")

    lines = Lines()
    to_host = b""  # the job's output, on its way out
    to_job = b""  # the terminal's input, on its way in
    sent = 0
    status = None
    master_open = True
    host_open = True
    ctl_open = True
    drain_until = None
    while True:
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
                if status < 0:
                    status = 128 - status
                # Output still in the pty is read, unless something the job left
                # behind keeps its terminal open.
                drain_until = time.monotonic() + 2
        if drain_until is not None and time.monotonic() > drain_until:
            master_open = False
        if status is not None and not master_open and not to_host:
            break
        rl, wl = [wake_r], []
        if ctl_open:
            rl.append(ctl)
        if master_open and len(to_host) < HIGH_WATER:
            rl.append(master)
        if host_open and len(to_job) < HIGH_WATER:
            rl.append(data)
        if to_host:
            wl.append(data)
        if to_job and master_open:
            wl.append(master)
        timeout = None if drain_until is None else 0.1
        r, w, _ = select.select(rl, wl, [], timeout)
        if wake_r in r:
            read_some(wake_r)
        if data in w:
            before = len(to_host)
            to_host = write_some(data, to_host)
            sent += before - len(to_host)
        if master in w:
            to_job = write_some(master, to_job)
        if master in r:
            got = read_some(master)
            if got == b"":
                master_open = False
            elif got:
                to_host += got
        if data in r:
            got = read_some(data)
            if got == b"":
                # The host end went away: nothing more comes in.
                host_open = False
            elif got:
                to_job += got
        got = read_some(ctl) if ctl in r else None
        if got == b"":
            ctl_open = False
        elif got:
            for words in lines.feed(got):
                if len(words) == 3 and words[0] == "size" and all(x.isdigit() for x in words[1:]):
                    # The kernel sends SIGWINCH to the job's foreground.
                    set_winsize(master, int(words[1]), int(words[2]))

    # All output handed over: tell the host how much, and wait (a while) until it has it.
    write_all(ctl, f"end {sent}\n".encode())
    deadline = time.monotonic() + 10
    while ctl_open and time.monotonic() < deadline:
        r, _, _ = select.select([ctl], [], [], 0.2)
        got = read_some(ctl) if ctl in r else None
        if got == b"":
            break
        if got and ["ack"] in lines.feed(got):
            break
    return status


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("host", "guest"):
        raise SystemExit("usage: harness-tty.py host|guest JOB")
    if sys.argv[1] == "host":
        host(sys.argv[2])
        sys.exit(0)
    sys.exit(guest(sys.argv[2]))


if __name__ == "__main__":
    main()
