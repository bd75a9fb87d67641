//! PID 1 duties: the guest's base filesystems, cgroup2, hostname, loopback, power off.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

fn mnt(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mounting {fstype} on {target}")),
    }
}

/// The initramfs root cannot be pivoted away from, and containers need pivot_root: move
/// everything onto a tmpfs root first (what switch_root does), keeping this binary
/// (already loaded) running.
fn leave_initramfs() -> Result<()> {
    let st = nix::sys::statfs::statfs("/").context("statfs /")?;
    // RAMFS_MAGIC and TMPFS_MAGIC: the initramfs root is one of these.
    let t = st.filesystem_type().0 as i64;
    if t != 0x8584_58f6 && t != 0x0102_1994 {
        return Ok(());
    }
    if Path::new("/.berth-root").exists() {
        return Ok(());
    }
    mnt(
        "rootfs",
        "/newroot",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    std::fs::write("/newroot/.berth-root", b"").context("marking the new root")?;
    std::env::set_current_dir("/newroot").context("chdir /newroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the new root onto /")?;
    nix::unistd::chroot(".").context("chroot into the new root")?;
    std::env::set_current_dir("/").context("chdir /")?;
    Ok(())
}

/// Sets the guest up as PID 1 does. `hostname` comes from the kernel command line.
pub fn init_system(hostname: &str) -> Result<()> {
    leave_initramfs()?;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nosuid, None)?;
    // The guest's OOM killer must pick a container process, never the agent (containers
    // get their own value back: the runtime resets it).
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        tracing::warn!("protecting the agent from the OOM killer: {e}");
    }
    mnt("sysfs", "/sys", "sysfs", nosuid, None)?;
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666,gid=5"),
    )?;
    mnt("shm", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"))?;
    mnt(
        "run",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mnt(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        nosuid,
        Some("nsdelegate"),
    )
    .or_else(|_| mnt("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None))?;
    let enabled = berth_runtime::cgroup::enable_controllers(Path::new("/sys/fs/cgroup"));
    tracing::info!("cgroup2 controllers enabled: {}", enabled.join(" "));
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    for (l, t) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(t, l);
    }
    nix::unistd::sethostname(hostname).context("setting the hostname")?;
    if let Err(e) = crate::netif::up("lo") {
        tracing::warn!("bringing up lo: {e}");
    }
    // The kernel's fallback tunnels (sit0 and the like) stay in the VM's own namespace:
    // a container's fresh namespace (`--network none`) gets only `lo`, as in docker.
    if let Err(e) = std::fs::write("/proc/sys/net/core/fb_tunnels_only_for_init_net", "1") {
        tracing::warn!("keeping fallback tunnels out of container namespaces: {e}");
    }
    Ok(())
}

/// `berth.hostname=NAME` from /proc/cmdline, or "berth".
pub fn cmdline_hostname() -> String {
    std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix("berth.hostname=").map(str::to_string))
        })
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "berth".into())
}

/// Syncs and resets the machine. The kernel runs with `reboot=k`, so RB_AUTOBOOT goes out
/// through the i8042 reset line, which the VMM takes as "power off".
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // reboot only returns on failure; as PID 1, exiting panics the kernel, which also stops
    // the VM.
    std::process::exit(1)
}
