//! Boots the test initramfs in `berth-vmm` with a virtio-net device on the user-mode
//! backend: the guest configures eth0 with the probe's ioctls and makes a TCP and a UDP
//! round trip to servers this test runs on the host's 127.0.0.1, reached through the
//! gateway's host address (192.168.249.254).
//!
//! Needs a `/dev/kvm` able to boot Linux (run through scripts/with-kvm.sh), `BERTH_KERNEL`,
//! the test initramfs (`BERTH_TEST_INITRAMFS`, else built by running the script) and the
//! `berth-vmm` binary next to the test binary (or `BERTH_VMM`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use berth_tests::{output_within, repo_root, required_path};

const VM_TIMEOUT: Duration = Duration::from_secs(300);

fn vmm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_VMM").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("berth-vmm");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p berth-vmm` or set BERTH_VMM",
        bin.display()
    );
    bin
}

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

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn guest_reaches_host_loopback_over_tcp_and_udp_through_user_mode_nat() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind the TCP server");
    let tcp_port = tcp.local_addr().unwrap().port();
    let tcp_server = thread::spawn(move || -> Result<String, String> {
        let (conn, _) = tcp.accept().map_err(|e| e.to_string())?;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
        let mut w = conn.try_clone().map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(conn)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        w.write_all(format!("host-got:{}", line.trim()).as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(line)
    });
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind the UDP server");
    let udp_port = udp.local_addr().unwrap().port();
    let udp_server = thread::spawn(move || -> Result<String, String> {
        let _ = udp.set_read_timeout(Some(VM_TIMEOUT));
        let mut buf = [0u8; 1500];
        let (n, from) = udp.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        udp.send_to(format!("udp-got:{got}").as_bytes(), from)
            .map_err(|e| e.to_string())?;
        Ok(got)
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({
        "kernel": required_path("BERTH_KERNEL"),
        "initrd": initramfs(),
        "cmdline": format!("berth.test=net berth.net.tcp={tcp_port} berth.net.udp={udp_port}"),
        "memory_mib": 128,
        "net": { "mac": "52:54:00:be:27:02", "backend": { "kind": "user", "subnet": "192.168.249.0/24" } },
    });
    let config_path = dir.path().join("vm.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let child = Command::new(vmm_bin())
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth-vmm");
    let out = output_within(child, VM_TIMEOUT).unwrap_or_else(|o| {
        panic!(
            "the VM did not finish within {VM_TIMEOUT:?}; console:\n{}",
            String::from_utf8_lossy(&o.output.stdout)
        )
    });
    let console = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let has = |needle: &str| {
        assert!(
            console.contains(needle),
            "console lacks {needle:?}\nconsole:\n{console}\nstderr:\n{stderr}"
        )
    };
    assert!(
        out.status.success(),
        "console:\n{console}\nstderr:\n{stderr}"
    );
    has("berth-test: init started (mode net)");
    has("berth-test: net-up=ok");
    has("berth-test: tcp-reply=host-got:hello-tcp-from-guest");
    has("berth-test: udp-reply=udp-got:hello-udp-from-guest");
    has("berth-test: done");
    assert_eq!(
        tcp_server.join().unwrap().as_deref().map(str::trim),
        Ok("hello-tcp-from-guest")
    );
    assert_eq!(
        udp_server.join().unwrap().as_deref(),
        Ok("hello-udp-from-guest")
    );
}
