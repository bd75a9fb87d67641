//! Helpers that build busybox root filesystems, for tests and benchmarks.

use std::path::{Path, PathBuf};

/// Where Debian's busybox-static puts busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// Makes `dir` a minimal busybox root: /bin/busybox with every applet linked to it, /etc
/// with root, nobody and `alice` (1000, in group `wheel`), and the usual empty directories.
pub fn busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    let busybox = find_busybox()?;
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/alice",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(&busybox, dir.join("bin/busybox"))?;
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet.contains('/') || applet == "busybox" {
            continue;
        }
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:alice\nalice:x:1000:\nnogroup:x:65534:\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// The busybox binary to copy: `$BERTH_BUSYBOX`, or Debian's static one.
pub fn find_busybox() -> std::io::Result<PathBuf> {
    let p = std::env::var_os("BERTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BUSYBOX));
    if p.exists() {
        Ok(p)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} not found: install Debian's busybox-static package",
                p.display()
            ),
        ))
    }
}
