//! What a VM is made of, as plain data (serde): built from command-line flags or read from
//! JSON, and checked against the host before anything starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Smallest guest memory: the kernel is loaded at 16 MiB and needs room above it.
pub const MIN_MEMORY_MIB: u64 = 32;
/// Most vCPUs (the MP table lives in the 1 KiB below 640 KiB).
pub const MAX_CPUS: u8 = 32;
/// The kernel command line limit on x86 (`COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE: usize = 2048;
/// Guest CID of the VM's vsock device unless configured.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// A whole VM description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Uncompressed guest kernel (`vmlinux`, an ELF with a PVH entry note).
    pub kernel: PathBuf,
    /// Initial ramdisk (cpio, optionally compressed), handed to the kernel as a PVH module.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Extra kernel command line, appended after berth's defaults and device entries.
    #[serde(default)]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Number of vCPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// virtio-blk disks, in guest order (`/dev/vda`, `/dev/vdb`, ...).
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// The virtio-vsock device, if any.
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Where the serial console goes.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Whether the guest gets a virtio-rng device.
    #[serde(default = "default_true")]
    pub rng: bool,
}

fn default_memory() -> u64 {
    256
}
fn default_cpus() -> u8 {
    1
}
fn default_true() -> bool {
    true
}

/// One disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Raw image file (or block device).
    pub path: PathBuf,
    /// The guest may not write it.
    #[serde(default)]
    pub read_only: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = ConfigError;

    /// Parses `ro:FILE`, `rw:FILE` or `FILE` (read-write).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (read_only, path) = match s.split_once(':') {
            Some(("ro", p)) => (true, p),
            Some(("rw", p)) => (false, p),
            _ => (false, s),
        };
        if path.is_empty() {
            return Err(ConfigError::BadDiskSpec(s.to_string()));
        }
        Ok(DiskConfig {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

/// The vsock device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Host Unix socket of the device (Firecracker's layout: `CONNECT <port>` on it, guest
    /// connections to port P reach `<socket>_P`).
    pub socket: PathBuf,
    /// The guest's context id.
    #[serde(default = "default_cid")]
    pub guest_cid: u64,
}

fn default_cid() -> u64 {
    DEFAULT_GUEST_CID
}

/// Where the serial console goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleConfig {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// A file (appended to).
    File(PathBuf),
    /// Nowhere (the last lines are still kept for error reports).
    Null,
}

/// Parses a memory size: `256`, `256M`, `256MiB`, `1G`, `1GiB` (plain numbers are MiB).
pub fn parse_memory(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, mult) = if let Some(n) = lower
        .strip_suffix("gib")
        .or_else(|| lower.strip_suffix("gb"))
        .or_else(|| lower.strip_suffix('g'))
    {
        (n, 1024)
    } else if let Some(n) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix("mb"))
        .or_else(|| lower.strip_suffix('m'))
    {
        (n, 1)
    } else {
        (lower.as_str(), 1)
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| ConfigError::BadMemory(s.to_string()))
}

impl VmConfig {
    /// A VM with `kernel` and defaults for everything else.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            memory_mib: default_memory(),
            cpus: default_cpus(),
            disks: Vec::new(),
            vsock: None,
            console: ConsoleConfig::Stdout,
            rng: true,
        }
    }

    /// Reads a JSON description.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks everything that can be checked on the host before a VM exists: files exist and
    /// are readable (and of the right kind), sizes are sane, the vsock path is free.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::kernel::check_pvh_kernel(&self.kernel)?;
        if let Some(initrd) = &self.initrd {
            std::fs::File::open(initrd).map_err(|source| ConfigError::Initrd {
                path: initrd.clone(),
                source,
            })?;
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall {
                mib: self.memory_mib,
                min: MIN_MEMORY_MIB,
            });
        }
        if let Some(host) = host_memory_mib() {
            if self.memory_mib > host {
                return Err(ConfigError::MemoryTooLarge {
                    mib: self.memory_mib,
                    host,
                });
            }
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(ConfigError::BadCpus {
                cpus: self.cpus,
                max: MAX_CPUS,
            });
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        for disk in &self.disks {
            check_disk(disk)?;
        }
        if let Some(v) = &self.vsock {
            check_vsock_path(&v.socket)?;
            if v.guest_cid <= 2 || v.guest_cid > u64::from(u32::MAX) {
                return Err(ConfigError::BadCid(v.guest_cid));
            }
        }
        if let ConsoleConfig::File(p) = &self.console {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(ConfigError::ConsoleDir(p.clone()));
                }
            }
        }
        Ok(())
    }
}

fn check_disk(disk: &DiskConfig) -> Result<(), ConfigError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!disk.read_only)
        .open(&disk.path)
        .map_err(|source| ConfigError::Disk {
            path: disk.path.clone(),
            read_only: disk.read_only,
            source,
        })?;
    let meta = file.metadata().map_err(|source| ConfigError::Disk {
        path: disk.path.clone(),
        read_only: disk.read_only,
        source,
    })?;
    if meta.is_dir() {
        return Err(ConfigError::Disk {
            path: disk.path.clone(),
            read_only: disk.read_only,
            source: std::io::Error::other("it is a directory"),
        });
    }
    if meta.is_file() && meta.len() % 512 != 0 {
        return Err(ConfigError::DiskSize {
            path: disk.path.clone(),
            size: meta.len(),
        });
    }
    Ok(())
}

fn check_vsock_path(path: &Path) -> Result<(), ConfigError> {
    if path.symlink_metadata().is_ok() {
        return Err(ConfigError::VsockTaken(path.to_path_buf()));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(ConfigError::VsockDir(path.to_path_buf()));
    }
    // sockaddr_un holds 108 bytes including the NUL; guest-initiated listeners add "_PORT".
    if path.as_os_str().len() + 11 > 107 {
        return Err(ConfigError::VsockPathLong(path.to_path_buf()));
    }
    Ok(())
}

/// Total host memory in MiB (Linux: `/proc/meminfo`).
pub fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256").unwrap(), 256);
        assert_eq!(parse_memory("256M").unwrap(), 256);
        assert_eq!(parse_memory("512MiB").unwrap(), 512);
        assert_eq!(parse_memory("2G").unwrap(), 2048);
        assert_eq!(parse_memory("1gib").unwrap(), 1024);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-1M").is_err());
        assert!(parse_memory("99999999999999999999G").is_err());
    }

    #[test]
    fn disk_specs() {
        let d: DiskConfig = "ro:/a/b".parse().unwrap();
        assert!(d.read_only && d.path == Path::new("/a/b"));
        let d: DiskConfig = "rw:x.img".parse().unwrap();
        assert!(!d.read_only);
        let d: DiskConfig = "plain.img".parse().unwrap();
        assert!(!d.read_only && d.path == Path::new("plain.img"));
        assert!("ro:".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let c = VmConfig::from_json(r#"{"kernel":"/k","disks":[{"path":"/d","read_only":true}],"vsock":{"socket":"/s"},"console":{"file":"/c"}}"#).unwrap();
        assert_eq!(c.memory_mib, 256);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.vsock.as_ref().unwrap().guest_cid, 3);
        assert_eq!(c.console, ConsoleConfig::File("/c".into()));
        assert!(c.rng);
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        assert!(VmConfig::from_json(r#"{"kernel":"/k","bogus":1}"#).is_err());
        assert!(VmConfig::from_json(r#"{"console":"null"}"#).is_err());
    }

    fn fake_kernel(dir: &Path) -> PathBuf {
        let k = dir.join("vmlinux");
        std::fs::write(&k, crate::kernel::tests::pvh_elf(0x100_0000)).unwrap();
        k
    }

    #[test]
    fn validation_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = VmConfig::new(dir.path().join("missing"));
        assert!(matches!(c.validate(), Err(ConfigError::Kernel { .. })));
        c.kernel = fake_kernel(dir.path());
        c.validate().unwrap();

        c.memory_mib = 8;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("at least 32 MiB"), "{e}");
        c.memory_mib = 1 << 40;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
        c.memory_mib = 64;

        c.cpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::BadCpus { .. })));
        c.cpus = 2;

        c.disks = vec![DiskConfig {
            path: dir.path().join("nope.img"),
            read_only: true,
        }];
        assert!(matches!(c.validate(), Err(ConfigError::Disk { .. })));
        let odd = dir.path().join("odd.img");
        std::fs::write(&odd, [0u8; 1000]).unwrap();
        c.disks[0].path = odd;
        assert!(matches!(c.validate(), Err(ConfigError::DiskSize { .. })));
        c.disks.clear();

        let sock = dir.path().join("v.sock");
        std::fs::write(&sock, b"").unwrap();
        c.vsock = Some(VsockConfig {
            socket: sock.clone(),
            guest_cid: 3,
        });
        assert!(matches!(c.validate(), Err(ConfigError::VsockTaken(_))));
        c.vsock = Some(VsockConfig {
            socket: dir.path().join("no/such/dir/v.sock"),
            guest_cid: 3,
        });
        assert!(matches!(c.validate(), Err(ConfigError::VsockDir(_))));
        c.vsock = Some(VsockConfig {
            socket: dir.path().join("free.sock"),
            guest_cid: 2,
        });
        assert!(matches!(c.validate(), Err(ConfigError::BadCid(2))));
        c.vsock = None;

        c.initrd = Some(dir.path().join("no-initrd"));
        assert!(matches!(c.validate(), Err(ConfigError::Initrd { .. })));
    }
}
