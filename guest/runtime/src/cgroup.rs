//! cgroup v2: one group per container under `<root>/berth/<id>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use crate::error::{Result, RuntimeError};

/// Where cgroup2 is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Controllers enabled for containers.
pub const CONTROLLERS: [&str; 5] = ["cpu", "memory", "pids", "io", "cpuset"];
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `path` is a cgroup2 mount.
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Enables every wanted controller that `dir` offers in its subtree (one write each, so a
/// missing controller does not block the others). Returns the enabled ones.
pub fn enable_controllers(dir: &Path) -> Vec<String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let mut enabled = Vec::new();
    for c in CONTROLLERS {
        if available.split_whitespace().any(|a| a == c) {
            match std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                Ok(()) => enabled.push(c.to_string()),
                Err(e) => tracing::warn!("enabling the {c} controller in {}: {e}", dir.display()),
            }
        }
    }
    enabled
}

/// Statistics read from a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// cpu.stat usage_usec.
    pub cpu_usage_usec: u64,
    /// cpu.stat user_usec.
    pub cpu_user_usec: u64,
    /// cpu.stat system_usec.
    pub cpu_system_usec: u64,
    /// memory.current.
    pub memory_current: u64,
    /// memory.max (None: max).
    pub memory_max: Option<u64>,
    /// pids.current.
    pub pids_current: u64,
    /// pids.max (None: max).
    pub pids_max: Option<u64>,
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Its directory.
    pub path: PathBuf,
}

fn write(path: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    std::fs::write(path.join(file), value).map_err(|e| {
        RuntimeError::config(
            field,
            format!("writing {value:?} to {}: {e}", path.join(file).display()),
        )
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_max(path: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    if s == "max" {
        None
    } else {
        s.parse().ok()
    }
}

impl Cgroup {
    /// Creates `<root>/berth/<id>` and applies `resources`.
    pub fn create(root: &Path, id: &str, resources: Option<&LinuxResources>) -> Result<Cgroup> {
        let parent = root.join("berth");
        if !parent.exists() {
            std::fs::create_dir(&parent)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| RuntimeError::io("creating cgroup", &parent, e))?;
        }
        enable_controllers(root);
        enable_controllers(&parent);
        let path = parent.join(id);
        std::fs::create_dir(&path).map_err(|e| RuntimeError::io("creating cgroup", &path, e))?;
        let cg = Cgroup { path };
        if let Some(r) = resources {
            if let Err(e) = cg.apply(r) {
                let _ = cg.remove();
                return Err(e);
            }
        }
        Ok(cg)
    }

    fn apply(&self, r: &LinuxResources) -> Result<()> {
        let p = &self.path;
        if let Some(m) = r.memory() {
            if let Some(limit) = m.limit() {
                let v = if limit < 0 {
                    "max".to_string()
                } else {
                    limit.to_string()
                };
                write(p, "memory.max", &v, "linux.resources.memory.limit")?;
                if p.join("memory.swap.max").exists() {
                    let swap = match m.swap() {
                        Some(s) if s < 0 => "max".to_string(),
                        Some(s) if limit >= 0 => s.saturating_sub(limit).max(0).to_string(),
                        _ => "0".to_string(),
                    };
                    write(p, "memory.swap.max", &swap, "linux.resources.memory.swap")?;
                }
            }
            if let Some(res) = m.reservation() {
                if res > 0 {
                    write(
                        p,
                        "memory.low",
                        &res.to_string(),
                        "linux.resources.memory.reservation",
                    )?;
                }
            }
        }
        if let Some(c) = r.cpu() {
            if c.quota().is_some() || c.period().is_some() {
                let period = c.period().unwrap_or(100_000);
                let quota = match c.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                write(
                    p,
                    "cpu.max",
                    &format!("{quota} {period}"),
                    "linux.resources.cpu.quota",
                )?;
            }
            if let Some(shares) = c.shares().filter(|s| *s > 0) {
                let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                write(
                    p,
                    "cpu.weight",
                    &weight.to_string(),
                    "linux.resources.cpu.shares",
                )?;
            }
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                write(p, "cpuset.cpus", cpus, "linux.resources.cpu.cpus")?;
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                write(p, "cpuset.mems", mems, "linux.resources.cpu.mems")?;
            }
        }
        if let Some(pids) = r.pids() {
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_string()
            };
            write(p, "pids.max", &v, "linux.resources.pids.limit")?;
        }
        Ok(())
    }

    /// Path of `cgroup.procs`.
    pub fn procs(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves `pid` into the group.
    pub fn add(&self, pid: i32) -> Result<()> {
        std::fs::write(self.procs(), pid.to_string())
            .map_err(|e| RuntimeError::io("joining cgroup", self.procs(), e))
    }

    /// Pids in the group.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.procs())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process of the group (cgroup.kill, or SIGKILL to each listed pid).
    pub fn kill(&self) {
        if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Removes the group, killing what is left, retrying while it empties (up to ~2 s).
    pub fn remove(&self) -> Result<()> {
        let mut last = None;
        for i in 0..100 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => last = Some(e),
            }
            if i % 10 == 0 {
                self.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(RuntimeError::io(
            "removing cgroup",
            &self.path,
            last.unwrap_or_else(|| std::io::Error::other("busy")),
        ))
    }

    /// Current statistics.
    pub fn stats(&self) -> CgroupStats {
        let p = &self.path;
        let cpu = std::fs::read_to_string(p.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| {
            cpu.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        CgroupStats {
            cpu_usage_usec: field("usage_usec"),
            cpu_user_usec: field("user_usec"),
            cpu_system_usec: field("system_usec"),
            memory_current: read_u64(&p.join("memory.current")).unwrap_or(0),
            memory_max: read_max(&p.join("memory.max")),
            pids_current: read_u64(&p.join("pids.current")).unwrap_or(0),
            pids_max: read_max(&p.join("pids.max")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids};

    fn resources() -> LinuxResources {
        let mut r = LinuxResources::default();
        let mut m = LinuxMemory::default();
        m.set_limit(Some(64 << 20));
        r.set_memory(Some(m));
        let mut c = LinuxCpu::default();
        c.set_quota(Some(150_000));
        c.set_period(Some(100_000));
        c.set_shares(Some(1024));
        r.set_cpu(Some(c));
        let mut p = LinuxPids::default();
        p.set_limit(100);
        r.set_pids(Some(p));
        r
    }

    #[test]
    fn limits_become_cgroup_v2_files() {
        // A plain directory stands in for the cgroup2 mount: files are what the kernel reads.
        let root = tempfile::tempdir().unwrap();
        let cg = Cgroup::create(root.path(), "c1", Some(&resources())).unwrap();
        assert_eq!(cg.path, root.path().join("berth/c1"));
        let read = |f: &str| std::fs::read_to_string(cg.path.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("pids.max"), "100");
        // runc's shares -> weight conversion: 1024 -> 39.
        assert_eq!(read("cpu.weight"), "39");
        std::fs::write(cg.path.join("memory.current"), "4096\n").unwrap();
        std::fs::write(
            cg.path.join("cpu.stat"),
            "usage_usec 10\nuser_usec 7\nsystem_usec 3\n",
        )
        .unwrap();
        let s = cg.stats();
        assert_eq!(
            (
                s.memory_current,
                s.memory_max,
                s.pids_max,
                s.cpu_usage_usec,
                s.cpu_user_usec
            ),
            (4096, Some(64 << 20), Some(100), 10, 7)
        );
        // A second container with the same id is refused.
        assert!(Cgroup::create(root.path(), "c1", None).is_err());
    }

    #[test]
    fn a_rejected_limit_names_its_field() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c2");
        std::fs::create_dir(&dir).unwrap();
        // pids.max as a directory: the write fails as a kernel refusal would.
        std::fs::create_dir(dir.join("pids.max")).unwrap();
        let mut r = resources();
        r.set_memory(None);
        r.set_cpu(None);
        match (Cgroup { path: dir }).apply(&r) {
            Err(RuntimeError::InvalidConfig { field, .. }) => {
                assert_eq!(field, "linux.resources.pids.limit")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
