//! berth as an ordinary user who may not use `/dev/kvm`: `berth run` says what to do about
//! it, with docker's status for a failure of the engine (125), and leaves nothing behind.
//! Needs root, to be that user deterministically: a mount namespace whose `/dev` holds a
//! `/dev/kvm` only root may open, and the user `nobody` outside group kvm. Run by
//! scripts/test.sh, with BERTH_KERNEL, BERTH_INITRAMFS and BERTH_DEFAULT_IMAGE set.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use berth_tests::{berth_bin, required_path, text};

/// `nobody`, whose groups do not include kvm.
const NOBODY: u32 = 65534;

/// Copies `from` into `dir` (which `nobody` may read: the originals may sit in root's home).
fn copy_into(dir: &Path, from: &Path) -> std::path::PathBuf {
    let to = dir.join(from.file_name().expect("a file name"));
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    to
}

/// Runs the shell `script` as `nobody` in a mount namespace of its own whose `/dev` holds
/// only `null` and a `kvm` node (KVM's 10:232) that only root may open.
fn as_nobody_without_kvm(script: &str, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(format!(
            "mount -t tmpfs -o mode=0755 tmpfs /dev
             mknod -m 0666 /dev/null c 1 3
             mknod -m 0600 /dev/kvm c 10 232
             exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- sh -euc '{script}'"
        ))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run unshare")
}

#[test]
#[ignore = "needs root and the guest kernel: run by scripts/test.sh"]
fn a_user_without_kvm_access_is_told_to_join_group_kvm() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = berth_bin();
    let berth = copy_into(dir, &bin);
    let vmm = bin.with_file_name("berth-vmm");
    if vmm.is_file() {
        copy_into(dir, &vmm);
    }
    let kernel = copy_into(dir, &required_path("BERTH_KERNEL"));
    let initramfs = copy_into(dir, &required_path("BERTH_INITRAMFS"));
    let image = copy_into(dir, &required_path("BERTH_DEFAULT_IMAGE"));
    for own in ["state", "run"] {
        let p = dir.join(own);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let env = [
        ("BERTH", berth.as_path()),
        ("BERTH_ROOT", &dir.join("state")),
        ("XDG_RUNTIME_DIR", &dir.join("run")),
        ("BERTH_KERNEL", &kernel),
        ("BERTH_INITRAMFS", &initramfs),
        ("IMAGE", &image),
    ];

    // What works without KVM works: the image loads.
    let out = as_nobody_without_kvm("\"$BERTH\" load -i \"$IMAGE\"", &env);
    assert!(
        out.status.success(),
        "load as nobody: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = as_nobody_without_kvm(
        "\"$BERTH\" run --rm berth.local/busybox:latest echo unreachable",
        &env,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("cannot open /dev/kvm: Permission denied"),
        "{err}"
    );
    assert!(err.contains("add yourself to group kvm"), "{err}");
    assert!(!text(&out.stdout).contains("unreachable"), "{err}");

    // The --rm container went with its failure.
    let out = as_nobody_without_kvm("\"$BERTH\" ps -a -q", &env);
    assert!(out.status.success(), "ps as nobody: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no container is left");
}
