//! The agent as the real PID 1: boots the guest kernel with berth's initramfs under QEMU
//! (TCG: no KVM needed) and watches the console until the agent serves vsock.
//!
//! Uses `$BERTH_INITRAMFS` (set by scripts/test.sh) or builds it with
//! scripts/build-initramfs.sh; the kernel comes from scripts/build-kernel.sh.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn script_output(name: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
#[ignore = "needs QEMU and the guest kernel: run by scripts/test.sh"]
fn agent_boots_as_pid1_mounts_cgroup2_and_listens_on_vsock() {
    let kernel = script_output("build-kernel.sh").join("vmlinux");
    let initramfs = std::env::var_os("BERTH_INITRAMFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| script_output("build-initramfs.sh"));
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,isa-serial=on",
            "-cpu",
            "max",
            "-m",
            "256",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args([
            "-append",
            "console=ttyS0 reboot=t panic=-1 berth.hostname=boot-test",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting qemu-system-x86_64 (Debian package qemu-system-x86)");
    let (tx, rx) = mpsc::channel();
    let out = qemu.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t = Instant::now();
    let mut console = Vec::new();
    let mut ready = false;
    while t.elapsed() < Duration::from_secs(120) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let done = l.contains("listening on vsock port 1025");
                console.push(l);
                if done {
                    ready = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    let text = console.join("\n");
    assert!(ready, "the agent never listened; console:\n{text}");
    assert!(text.contains("Run /init as init process"), "{text}");
    assert!(
        text.contains("cgroup2 controllers enabled: cpu memory pids io cpuset"),
        "{text}"
    );
    assert!(text.contains("listening on vsock port 1024"), "{text}");
    assert!(
        !text.contains("guest setup:"),
        "PID 1 setup reported an error:\n{text}"
    );
    assert!(!text.contains("Kernel panic"), "{text}");
}
