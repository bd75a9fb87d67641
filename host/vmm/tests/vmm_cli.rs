//! The `berth-vmm` binary's interface, without booting anything: usage, bad configs and
//! bad host input are refused before a VM (or /dev/kvm) is touched.

use std::process::{Command, Output};

fn vmm(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-vmm"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start berth-vmm");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for berth-vmm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn usage() {
    let o = vmm(&["--help"], None);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--config"));
    let o = vmm(&[], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("usage"));
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let o = vmm(&["--config", "-"], Some("{not json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid VM config JSON"),
        "{}",
        stderr(&o)
    );

    let o = vmm(&["--config", "/nonexistent/vm.json"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read VM config"),
        "{}",
        stderr(&o)
    );

    let o = vmm(
        &["--config", "-"],
        Some(r#"{"kernel": "/nonexistent/vmlinux"}"#),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read kernel /nonexistent/vmlinux"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, vec![0x7fu8; 4096]).unwrap();
    let json = format!(r#"{{"kernel": {kernel:?}}}"#);
    let o = vmm(&["--config", "-"], Some(&json));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not an ELF file"), "{}", stderr(&o));
}
