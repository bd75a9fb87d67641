//! Boots the guest kernel in berth's VMM (`berth vm run`) with the test initramfs
//! (scripts/build-test-initramfs.sh) and checks what the guest did and how the VMM ended.
//!
//! Needs a `/dev/kvm` able to boot Linux, `BERTH_KERNEL` (scripts/build-kernel.sh prints the
//! folder of `vmlinux`), the `berth` binary next to the test binary (or `BERTH_BIN`) and
//! the test initramfs (`BERTH_TEST_INITRAMFS`, else built by running the script).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::{berth_bin, output_within, repo_root, required_path};

/// How long one VM may take (nested virtualization under TCG is slow).
const VM_TIMEOUT: Duration = Duration::from_secs(240);
const GUEST_ECHO_PORT: u32 = 5000;
const HOST_LISTEN_PORT: u32 = 6000;

fn initramfs() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_INITRAMFS") {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join("scripts/build-test-initramfs.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-test-initramfs.sh");
    assert!(
        out.status.success(),
        "scripts/build-test-initramfs.sh failed"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `berth vm run` with the kernel, the test initramfs and `args`; `on_line` sees each
/// console line as it arrives (with the child's pid).
fn run_vm(args: &[&str], mut on_line: impl FnMut(&str, u32)) -> Finished {
    let kernel = required_path("BERTH_KERNEL");
    assert!(
        kernel.exists(),
        "BERTH_KERNEL={} does not exist",
        kernel.display()
    );
    let mut child = Command::new(berth_bin())
        .args(["vm", "run", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(initramfs())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth vm run");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + VM_TIMEOUT;
    let mut out = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                on_line(&line, pid);
                out.push_str(&line);
                out.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the VM did not finish within {VM_TIMEOUT:?}; console so far:\n{out}");
        }
    }
    let status = child.wait().expect("wait for berth");
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    Finished {
        code: status.code(),
        stdout: out,
        stderr,
    }
}

fn assert_line(f: &Finished, needle: &str) {
    assert!(
        f.stdout.contains(needle),
        "console lacks {needle:?}\nconsole:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
}

/// Host side of a host-initiated vsock stream: CONNECT to the guest's echo server, send a
/// message, half-close, read the echo. Retries until the guest listens.
fn host_initiated_echo(sock: PathBuf, message: &'static str) -> Result<String, String> {
    let deadline = Instant::now() + VM_TIMEOUT;
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        let mut s = match UnixStream::connect(&sock) {
            Ok(s) => s,
            Err(e) => {
                last = format!("connect {}: {e}", sock.display());
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        if let Err(e) = s.write_all(format!("CONNECT {GUEST_ECHO_PORT}\n").as_bytes()) {
            last = format!("write CONNECT: {e}");
            continue;
        }
        let mut reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(n) if n > 0 && answer.starts_with("OK ") => {}
            Ok(_) => {
                last = format!("answer to CONNECT: {answer:?}");
                continue;
            }
            Err(e) => {
                last = format!("reading the answer to CONNECT: {e}");
                continue;
            }
        }
        s.write_all(message.as_bytes()).map_err(|e| e.to_string())?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut echo = String::new();
        reader
            .read_to_string(&mut echo)
            .map_err(|e| format!("reading the echo: {e}"))?;
        return Ok(echo);
    }
    Err(last)
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn guest_uses_console_disks_vsock_and_reboots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro.img");
    let mut content = b"berth-ro-disk-content-7f3a\n".to_vec();
    content.resize(1 << 20, 0);
    std::fs::write(&ro, &content).unwrap();
    let rw = dir.path().join("rw.img");
    std::fs::write(&rw, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.path().join("v.sock");
    let listen_path = PathBuf::from(format!("{}_{HOST_LISTEN_PORT}", sock.display()));
    let listener = UnixListener::bind(&listen_path).expect("bind the host vsock listener");

    // Guest-initiated stream: the guest sends, the host answers.
    let guest_initiated = thread::spawn(move || -> Result<String, String> {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let mut got = String::new();
        s.read_to_string(&mut got).map_err(|e| e.to_string())?;
        s.write_all(b"hello-from-host").map_err(|e| e.to_string())?;
        Ok(got)
    });
    let sock2 = sock.clone();
    let host_initiated = thread::spawn(move || host_initiated_echo(sock2, "ping-from-host"));

    let f = run_vm(
        &[
            "--memory",
            "128M",
            "--cpus",
            "1",
            "--disk",
            &format!("ro:{}", ro.display()),
            "--disk",
            &format!("rw:{}", rw.display()),
            "--vsock",
            sock.to_str().unwrap(),
            "--cmdline",
            "berth.test=full",
        ],
        |_, _| {},
    );
    assert_eq!(
        f.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    assert_line(&f, "berth-test: init started (mode full)");
    assert_line(&f, "berth-test: ro=berth-ro-disk-content-7f3a");
    assert_line(&f, "berth-test: ro-write=refused");
    assert_line(&f, "berth-test: rw=done");
    assert_line(&f, "berth-test: rng=virtio_rng");
    assert_line(&f, "berth-test: guest-send reply=hello-from-host");
    assert_line(&f, "berth-test: echo-server exit=0");
    assert_line(&f, "berth-test: done");

    let written = std::fs::read(&rw).unwrap();
    assert!(
        written.starts_with(b"berth-rw-written-by-guest\n"),
        "rw disk starts with {:?}",
        String::from_utf8_lossy(&written[..40])
    );
    assert_eq!(std::fs::read(&ro).unwrap(), content, "ro disk unchanged");
    assert_eq!(
        guest_initiated.join().unwrap().as_deref(),
        Ok("hello-from-guest")
    );
    assert_eq!(
        host_initiated.join().unwrap().as_deref(),
        Ok("ping-from-host")
    );
    assert!(!sock.exists(), "the VMM left its vsock socket behind");
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn panicking_guest_makes_the_vmm_fail_with_the_panic_visible() {
    let f = run_vm(
        &["--memory", "96M", "--cmdline", "berth.test=panic"],
        |_, _| {},
    );
    assert_eq!(
        f.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    assert!(
        f.stderr.contains("the guest kernel panicked"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("Kernel panic - not syncing"),
        "the last console lines are shown: {}",
        f.stderr
    );
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn two_vcpus_are_two_cpus_in_the_guest_with_kvmclock() {
    let f = run_vm(
        &[
            "--memory",
            "128M",
            "--cpus",
            "2",
            "--cmdline",
            "berth.test=cpus",
        ],
        |_, _| {},
    );
    assert_eq!(
        f.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    assert_line(&f, "berth-test: cpus=2");
    assert_line(&f, "berth-test: clocksource=kvm-clock");
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn sigterm_stops_the_vm_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("v.sock");
    let mut signalled = false;
    let f = run_vm(
        &[
            "--memory",
            "96M",
            "--vsock",
            sock.to_str().unwrap(),
            "--cmdline",
            "berth.test=sleep",
        ],
        |line, pid| {
            if line.contains("berth-test: init started") && !signalled {
                signalled = true;
                // SAFETY: kill(2) on the pid of our own child process.
                let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                assert_eq!(rc, 0, "kill -TERM {pid}");
            }
        },
    );
    assert!(
        signalled,
        "the guest never started init:\n{}\n{}",
        f.stdout, f.stderr
    );
    assert_eq!(
        f.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        f.stdout,
        f.stderr
    );
    assert!(!sock.exists(), "the VMM left its vsock socket behind");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left in the VM's folder"
    );
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn bad_host_input_is_refused_before_the_vm_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = required_path("BERTH_KERNEL");
    let run = |args: &[&str]| {
        let child = Command::new(berth_bin())
            .args(["vm", "run"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth");
        // Refusals come before any VM starts: a run that boots one overruns this.
        let out = output_within(child, Duration::from_secs(60)).unwrap_or_else(|o| {
            panic!(
                "berth vm run {args:?} started a VM instead of refusing: {}",
                String::from_utf8_lossy(&o.output.stderr)
            )
        });
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let k = kernel.to_str().unwrap();
    let missing = dir.path().join("missing");
    let (code, err) = run(&["--kernel", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot read kernel"), "{err}");

    let (code, err) = run(&["--kernel", k, "--memory", "8M"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("too small"), "{err}");

    let (code, err) = run(&["--kernel", k, "--memory", "100000G"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("more than this host has"), "{err}");

    let disk = dir.path().join("nope.img");
    let (code, err) = run(&["--kernel", k, "--disk", &format!("ro:{}", disk.display())]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot open disk"), "{err}");

    let taken = dir.path().join("taken.sock");
    std::fs::write(&taken, b"").unwrap();
    let (code, err) = run(&["--kernel", k, "--vsock", taken.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already exists"), "{err}");

    let not_elf = dir.path().join("bzImage");
    std::fs::write(&not_elf, vec![0x4du8; 4096]).unwrap();
    let (code, err) = run(&["--kernel", not_elf.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not an ELF"), "{err}");
}

fn vmm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_VMM_BIN") {
        return PathBuf::from(p);
    }
    let bin = berth_bin().with_file_name("berth-vmm");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p berth-vmm` or set BERTH_VMM_BIN",
        bin.display()
    );
    bin
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn json_config_boots_in_the_small_vmm_with_the_console_in_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let console = dir.path().join("console.log");
    let config = dir.path().join("vm.json");
    let json = format!(
        r#"{{"kernel": {:?}, "initrd": {:?}, "memory_mib": 96, "cpus": 1,
            "cmdline": "berth.test=hello", "console": {{"file": {:?}}}}}"#,
        required_path("BERTH_KERNEL"),
        initramfs(),
        console
    );
    std::fs::write(&config, json).unwrap();
    let child = Command::new(vmm_bin())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth-vmm");
    let out = output_within(child, VM_TIMEOUT)
        .unwrap_or_else(|_| panic!("berth-vmm did not finish within {VM_TIMEOUT:?}"));
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nconsole: {log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("berth-test: done"), "console file: {log}");
    assert!(
        out.stdout.is_empty(),
        "the console went to the file, not stdout"
    );
}

/// A minimal PVH "kernel": an x86-64 ELF whose PVH entry (at 16 MiB) executes `ud2`. With
/// the empty IDT berth starts vCPUs with, that is a triple fault.
fn triple_fault_kernel() -> Vec<u8> {
    let load: u64 = 0x100_0000;
    let mut f = vec![0u8; 0x110];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&load.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // program headers
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    let load_ph = 64;
    f[load_ph..load_ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f[load_ph + 8..load_ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
    f[load_ph + 16..load_ph + 24].copy_from_slice(&load.to_le_bytes());
    f[load_ph + 24..load_ph + 32].copy_from_slice(&load.to_le_bytes());
    f[load_ph + 32..load_ph + 40].copy_from_slice(&16u64.to_le_bytes());
    f[load_ph + 40..load_ph + 48].copy_from_slice(&16u64.to_le_bytes());
    let note_ph = 120;
    f[note_ph..note_ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
    f[note_ph + 8..note_ph + 16].copy_from_slice(&176u64.to_le_bytes());
    f[note_ph + 32..note_ph + 40].copy_from_slice(&20u64.to_le_bytes());
    f[note_ph + 40..note_ph + 48].copy_from_slice(&20u64.to_le_bytes());
    let n = 176;
    f[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
    f[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
    f[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    f[n + 12..n + 16].copy_from_slice(b"Xen\0");
    f[n + 16..n + 20].copy_from_slice(&(load as u32).to_le_bytes());
    f[0x100..0x102].copy_from_slice(&[0x0f, 0x0b]); // ud2
    f
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn triple_fault_makes_the_vmm_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("ud2.elf");
    std::fs::write(&kernel, triple_fault_kernel()).unwrap();
    let child = Command::new(berth_bin())
        .args(["vm", "run", "--memory", "32M", "--kernel"])
        .arg(&kernel)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth");
    let out = output_within(child, VM_TIMEOUT).unwrap_or_else(|_| {
        panic!("berth did not stop after a triple fault within {VM_TIMEOUT:?}")
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("vCPU 0 triple-faulted"), "stderr: {err}");
    assert!(
        err.contains("at RIP=0x") && err.contains(" CR0=0x"),
        "where the guest crashed: {err}"
    );
}
