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
/// Most shared folders of one VM (each is a virtio-fs device with an interrupt line).
pub const MAX_SHARES: usize = 16;
/// Most image files on one disk: docker's most layers of an image, 127, plus one.
pub const MAX_DISK_FILES: usize = 128;
/// Longest disk serial (`GET_ID` answers 20 bytes).
pub const MAX_SERIAL: usize = 20;

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
    /// The virtio-net device, if any.
    #[serde(default)]
    pub net: Option<NetConfig>,
    /// Host folders shared with the guest (one virtio-fs device each); the guest mounts
    /// one with `mount -t virtiofs TAG DIR`.
    #[serde(default)]
    pub shares: Vec<ShareConfig>,
}

/// One host folder shared with the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    /// What the guest mounts it by: 1 to 36 bytes of UTF-8, no NUL, unique in the VM.
    pub tag: String,
    /// The host folder (an absolute path to an existing directory).
    pub path: PathBuf,
    /// The guest may not change anything in it.
    #[serde(default)]
    pub read_only: bool,
}

/// MAC address of the guest's network card unless configured (QEMU's locally administered
/// prefix 52:54:00).
pub const DEFAULT_MAC: &str = "52:54:00:be:27:01";

/// The virtio-net device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The guest's MAC address, `52:54:00:12:34:56` style.
    #[serde(default = "default_mac")]
    pub mac: String,
    /// What carries the frames on the host.
    #[serde(default)]
    pub backend: NetBackendConfig,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            mac: default_mac(),
            backend: NetBackendConfig::default(),
        }
    }
}

fn default_mac() -> String {
    DEFAULT_MAC.to_string()
}

/// The network backend of the virtio-net device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NetBackendConfig {
    /// User-mode NAT in the VMM (`berth-net`): no privileges needed.
    User {
        /// The private subnet, `A.B.C.D/PREFIX` (gateway `.1`, guest `.2`, host loopback
        /// at the last usable address).
        #[serde(default = "default_subnet")]
        subnet: String,
        /// Link MTU.
        #[serde(default = "default_mtu")]
        mtu: u16,
        /// Static DNS names the gateway answers (`host.docker.internal` is always there).
        #[serde(default)]
        hosts: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
        /// DNS resolvers to forward to; unset: the host's `/etc/resolv.conf`.
        #[serde(default)]
        dns: Option<Vec<std::net::SocketAddr>>,
        /// Most TCP connections at once.
        #[serde(default = "default_max_tcp")]
        max_tcp: usize,
        /// Most UDP flows at once.
        #[serde(default = "default_max_udp")]
        max_udp: usize,
        /// Published ports: the VMM binds each host address before the VM starts (a
        /// port in use fails the VMM at once) and connects its clients to the guest's
        /// port.
        #[serde(default)]
        ports: Vec<PublishedPort>,
        /// The guest's address; unset: the subnet's second address.
        #[serde(default)]
        address: Option<std::net::Ipv4Addr>,
        /// The peer folder of the berth network the guest is on (`berth_net::peers`):
        /// the rest of the subnet is the other VMs there.
        #[serde(default)]
        peers: Option<PathBuf>,
    },
}

/// One published port of a user-mode network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    /// Host address and port to listen on (`0.0.0.0:8080`).
    pub host: std::net::SocketAddr,
    /// The guest's port.
    pub guest_port: u16,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// The transport of a published port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Default for NetBackendConfig {
    fn default() -> Self {
        NetBackendConfig::User {
            subnet: default_subnet(),
            mtu: default_mtu(),
            hosts: Default::default(),
            dns: None,
            max_tcp: default_max_tcp(),
            max_udp: default_max_udp(),
            ports: Vec::new(),
            address: None,
            peers: None,
        }
    }
}

fn default_subnet() -> String {
    format!(
        "{}/{}",
        berth_net::DEFAULT_SUBNET,
        berth_net::DEFAULT_PREFIX
    )
}
fn default_mtu() -> u16 {
    berth_net::DEFAULT_MTU
}
fn default_max_tcp() -> usize {
    berth_net::DEFAULT_MAX_TCP
}
fn default_max_udp() -> usize {
    berth_net::DEFAULT_MAX_UDP
}

impl NetConfig {
    /// The MAC address as bytes.
    pub fn mac_bytes(&self) -> Result<[u8; 6], ConfigError> {
        let bad = || ConfigError::BadMac(self.mac.clone());
        let mut out = [0u8; 6];
        let mut parts = self.mac.split(':');
        for b in out.iter_mut() {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() || out[0] & 1 != 0 {
            return Err(bad());
        }
        Ok(out)
    }

    /// The user-mode network layout, checked.
    pub fn user_config(&self) -> Result<berth_net::UserNetConfig, ConfigError> {
        let NetBackendConfig::User {
            subnet,
            mtu,
            hosts,
            dns,
            max_tcp,
            max_udp,
            ports,
            address,
            peers,
        } = &self.backend;
        let bad = || ConfigError::BadSubnet(subnet.clone());
        let (addr, prefix) = subnet.split_once('/').ok_or_else(bad)?;
        let mut c = berth_net::UserNetConfig {
            subnet: addr.parse().map_err(|_| bad())?,
            prefix: prefix.parse().map_err(|_| bad())?,
            mtu: *mtu,
            max_tcp: *max_tcp,
            max_udp: *max_udp,
            forwards: ports
                .iter()
                .map(|p| berth_net::PortForward {
                    host: p.host,
                    guest_port: p.guest_port,
                    transport: match p.protocol {
                        PortProtocol::Tcp => berth_net::Transport::Tcp,
                        PortProtocol::Udp => berth_net::Transport::Udp,
                    },
                })
                .collect(),
            guest: *address,
            peers: peers.clone(),
            ..berth_net::UserNetConfig::default()
        };
        // The defaults' host names point into the default subnet: redo them for this one.
        let host = c.host_addr();
        for entry in &mut c.hosts {
            entry.1 = host;
        }
        c.hosts.extend(hosts.iter().map(|(n, a)| (n.clone(), *a)));
        if let Some(dns) = dns {
            c.dns_upstream = dns.clone();
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.mac_bytes()?;
        self.user_config()?;
        Ok(())
    }
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Raw image file (or block device).
    pub path: PathBuf,
    /// The guest may not write it.
    #[serde(default)]
    pub read_only: bool,
    /// Image files that follow `path` on the same disk, in order: file `k` starts where
    /// file `k - 1` ends. Only a read-only disk has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed_by: Vec<PathBuf>,
    /// What the guest reads in `/sys/block/vdX/serial` (printable ASCII, at most 20
    /// bytes); `berth-vdX` by position when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl DiskConfig {
    /// Every image file of the disk, in disk order.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.path.clone())
            .chain(self.followed_by.iter().cloned())
            .collect()
    }
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
            ..Default::default()
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

/// Parses a memory size in whole MiB: `256`, `256M`, `256MiB`, `1G`, `1GiB` (plain numbers
/// are MiB, other sizes as [`berth_units::parse_size`]).
pub fn parse_memory(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadMemory(s.to_string());
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let bytes = berth_units::parse_size(t).ok_or_else(bad)?;
    if bytes % (1 << 20) != 0 {
        return Err(bad());
    }
    Ok(bytes >> 20)
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
            net: None,
            shares: Vec::new(),
        }
    }

    /// Reads a JSON description.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))
    }

    /// Reads the JSON description in file `path`, or on standard input when `path` is `-`:
    /// what `berth-vmm --config` and `berth vm run --config` take.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let read = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        };
        let text = read.map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks everything that can be checked on the host before a VM exists: files exist and
    /// are readable (and of the right kind), sizes are sane, the vsock path is free. That
    /// the kernel is one berth can boot is checked as it loads, before any hypervisor is
    /// opened (`x86_64::boot::load_kernel`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let kernel = std::fs::File::open(&self.kernel).map_err(|source| ConfigError::Kernel {
            path: self.kernel.clone(),
            source,
        })?;
        if kernel.metadata().map(|m| !m.is_file()).unwrap_or(true) {
            return Err(ConfigError::BadKernel {
                path: self.kernel.clone(),
                reason: "not a regular file".into(),
            });
        }
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
        if let Some(net) = &self.net {
            net.validate()?;
        }
        check_shares(&self.shares)?;
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
    if !disk.followed_by.is_empty() && !disk.read_only {
        return Err(ConfigError::WritableDiskFiles(disk.path.clone()));
    }
    if disk.followed_by.len() >= MAX_DISK_FILES {
        return Err(ConfigError::TooManyDiskFiles {
            path: disk.path.clone(),
            count: disk.followed_by.len() + 1,
            max: MAX_DISK_FILES,
        });
    }
    if let Some(serial) = &disk.serial {
        if serial.is_empty()
            || serial.len() > MAX_SERIAL
            || !serial.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::BadSerial(serial.clone()));
        }
    }
    for path in disk.files() {
        check_disk_file(&path, disk.read_only)?;
    }
    Ok(())
}

fn check_disk_file(path: &Path, read_only: bool) -> Result<(), ConfigError> {
    let disk_err = |source| ConfigError::Disk {
        path: path.to_path_buf(),
        read_only,
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(disk_err)?;
    let meta = file.metadata().map_err(disk_err)?;
    if meta.is_dir() {
        return Err(disk_err(std::io::Error::other("it is a directory")));
    }
    if meta.is_file() && meta.len() % 512 != 0 {
        return Err(ConfigError::DiskSize {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    Ok(())
}

fn check_shares(shares: &[ShareConfig]) -> Result<(), ConfigError> {
    if shares.len() > MAX_SHARES {
        return Err(ConfigError::TooManyShares {
            count: shares.len(),
            max: MAX_SHARES,
        });
    }
    let mut tags = std::collections::HashSet::new();
    for share in shares {
        let tag = &share.tag;
        if tag.is_empty() {
            return Err(ConfigError::ShareTagEmpty(share.path.clone()));
        }
        if tag.len() > berth_devices::virtio::fs::TAG_LEN {
            return Err(ConfigError::ShareTagTooLong {
                tag: tag.clone(),
                len: tag.len(),
                max: berth_devices::virtio::fs::TAG_LEN,
            });
        }
        if tag.contains('\0') {
            return Err(ConfigError::ShareTagNul(tag.clone()));
        }
        if !tags.insert(tag.as_str()) {
            return Err(ConfigError::ShareTagTwice(tag.clone()));
        }
        if !share.path.is_absolute() {
            return Err(ConfigError::SharePathRelative(share.path.clone()));
        }
        let meta = std::fs::metadata(&share.path).map_err(|source| ConfigError::ShareDir {
            path: share.path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ConfigError::ShareNotDir(share.path.clone()));
        }
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
        assert!(parse_memory("1536k").is_err(), "not whole MiB");
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
    fn configs_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        let c = VmConfig::new("/k");
        std::fs::write(&path, c.to_json()).unwrap();
        assert_eq!(VmConfig::read(&path).unwrap(), c);
        let missing = dir.path().join("none.json");
        let e = VmConfig::read(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot read VM config"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(VmConfig::read(&path), Err(ConfigError::Json(_))));
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
        assert_eq!(c.net, None, "configs without a net device still parse");
        let n = VmConfig::from_json(r#"{"kernel":"/k","net":{}}"#).unwrap();
        assert_eq!(n.net, Some(NetConfig::default()));
        let n = VmConfig::from_json(
            r#"{"kernel":"/k","net":{"mac":"52:54:00:00:00:09","backend":{"kind":"user","subnet":"10.1.2.0/24","hosts":{"db":"10.1.2.9"}}}}"#,
        )
        .unwrap();
        assert_eq!(VmConfig::from_json(&n.to_json()).unwrap(), n);
        assert!(
            VmConfig::from_json(r#"{"kernel":"/k","net":{"backend":{"kind":"tap"}}}"#).is_err()
        );
        // The unit variants are plain strings; an unknown one is refused (with the
        // kernel given, so that the console is what fails).
        let c = VmConfig::from_json(r#"{"kernel":"/k","console":"null"}"#).unwrap();
        assert_eq!(c.console, ConsoleConfig::Null);
        let e = VmConfig::from_json(r#"{"kernel":"/k","console":"printer"}"#).unwrap_err();
        assert!(e.to_string().contains("printer"), "{e}");
    }

    fn fake_kernel(dir: &Path) -> PathBuf {
        let k = dir.join("vmlinux");
        std::fs::write(&k, crate::x86_64::test_kernel::pvh_elf(0x100_0000)).unwrap();
        k
    }

    #[test]
    fn validation_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = VmConfig::new(dir.path().join("missing"));
        assert!(matches!(c.validate(), Err(ConfigError::Kernel { .. })));
        c.kernel = dir.path().to_path_buf();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
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
            ..Default::default()
        }];
        assert!(matches!(c.validate(), Err(ConfigError::Disk { .. })));
        let odd = dir.path().join("odd.img");
        std::fs::write(&odd, [0u8; 1000]).unwrap();
        c.disks[0].path = odd;
        assert!(matches!(c.validate(), Err(ConfigError::DiskSize { .. })));

        // A disk of several files: read-only, each file whole sectors, a bounded count,
        // and a serial the guest can read.
        let good = dir.path().join("good.img");
        std::fs::write(&good, [0u8; 1024]).unwrap();
        c.disks[0] = DiskConfig {
            path: good.clone(),
            read_only: true,
            followed_by: vec![good.clone(); 3],
            serial: Some("berth-layers".into()),
        };
        c.validate().unwrap();
        c.disks[0].followed_by[1] = dir.path().join("odd.img");
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DiskSize { path, .. }) if path.ends_with("odd.img")
        ));
        c.disks[0].followed_by = vec![good.clone(); MAX_DISK_FILES];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooManyDiskFiles { count: 129, .. })
        ));
        c.disks[0].followed_by = vec![good.clone()];
        c.disks[0].read_only = false;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::WritableDiskFiles(_))
        ));
        c.disks[0].read_only = true;
        for bad in ["", "has space", "twenty-one-characters"] {
            c.disks[0].serial = Some(bad.into());
            assert!(
                matches!(c.validate(), Err(ConfigError::BadSerial(_))),
                "serial {bad:?}"
            );
        }
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

        c.net = Some(NetConfig::default());
        c.validate().unwrap();
        c.net = Some(NetConfig {
            mac: "01:00:00:00:00:01".into(),
            ..NetConfig::default()
        });
        assert!(matches!(c.validate(), Err(ConfigError::BadMac(_))));
        for bad_mac in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "zz:54:00:12:34:56",
            "",
        ] {
            c.net.as_mut().unwrap().mac = bad_mac.into();
            assert!(
                matches!(c.validate(), Err(ConfigError::BadMac(_))),
                "{bad_mac}"
            );
        }
        let user = |subnet: &str, mtu: u16, max_tcp: usize| NetConfig {
            backend: NetBackendConfig::User {
                subnet: subnet.into(),
                mtu,
                hosts: Default::default(),
                dns: None,
                max_tcp,
                max_udp: 16,
                ports: Vec::new(),
                address: None,
                peers: None,
            },
            ..NetConfig::default()
        };
        c.net = Some(user("10.9.8.0", 1500, 16));
        assert!(matches!(c.validate(), Err(ConfigError::BadSubnet(_))));
        c.net = Some(user("8.8.8.0/24", 1500, 16));
        assert!(matches!(c.validate(), Err(ConfigError::UserNet(_))));
        c.net = Some(user("10.9.8.0/24", 10, 16));
        assert!(matches!(c.validate(), Err(ConfigError::UserNet(_))));
        c.net = Some(user("10.9.8.0/24", 1500, 0));
        assert!(matches!(c.validate(), Err(ConfigError::UserNet(_))));
        c.net = Some(user("10.9.8.0/24", 9000, 16));
        c.validate().unwrap();
        let mut twice = user("10.9.8.0/24", 1500, 16);
        let NetBackendConfig::User { ports, .. } = &mut twice.backend;
        let p = PublishedPort {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port: 80,
            protocol: PortProtocol::Tcp,
        };
        // One host port may serve TCP and UDP, not the same one twice.
        let udp = PublishedPort {
            protocol: PortProtocol::Udp,
            ..p
        };
        ports.extend([p, udp, p]);
        assert!(matches!(
            twice.user_config(),
            Err(ConfigError::UserNet(berth_net::UserNetError::ForwardTwice(
                _
            )))
        ));
        let u = c.net.as_ref().unwrap().user_config().unwrap();
        assert_eq!(u.host_addr(), std::net::Ipv4Addr::new(10, 9, 8, 254));
        assert!(u
            .hosts
            .iter()
            .any(|(n, a)| n == "host.docker.internal" && *a == u.host_addr()));
        c.net = None;

        c.initrd = Some(dir.path().join("no-initrd"));
        assert!(matches!(c.validate(), Err(ConfigError::Initrd { .. })));
    }

    #[test]
    fn shares_in_json() {
        let c = VmConfig::from_json(
            r#"{"kernel":"/k","shares":[{"tag":"src","path":"/home/me/src","read_only":true},{"tag":"out","path":"/tmp/out"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.shares,
            vec![
                ShareConfig {
                    tag: "src".into(),
                    path: "/home/me/src".into(),
                    read_only: true
                },
                ShareConfig {
                    tag: "out".into(),
                    path: "/tmp/out".into(),
                    read_only: false
                },
            ]
        );
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        assert!(VmConfig::from_json(r#"{"kernel":"/k"}"#)
            .unwrap()
            .shares
            .is_empty());
        assert!(VmConfig::from_json(r#"{"kernel":"/k","shares":[{"tag":"a"}]}"#).is_err());
        assert!(
            VmConfig::from_json(r#"{"kernel":"/k","shares":[{"tag":"a","path":"/a","x":1}]}"#)
                .is_err()
        );
    }

    #[test]
    fn share_validation_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = VmConfig::new(fake_kernel(dir.path()));
        let folder = dir.path().join("shared");
        std::fs::create_dir(&folder).unwrap();
        let share = |tag: &str, path: &Path| ShareConfig {
            tag: tag.into(),
            path: path.to_path_buf(),
            read_only: false,
        };
        c.shares = vec![share("src", &folder), share(&"t".repeat(36), &folder)];
        c.validate().unwrap();

        c.shares = vec![share("", &folder)];
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::ShareTagEmpty(_)), "{e}");
        c.shares = vec![share(&"t".repeat(37), &folder)];
        let e = c.validate().unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::ShareTagTooLong {
                    len: 37,
                    max: 36,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("at most 36 bytes"), "{e}");
        // 12 characters but 36 bytes fit; 13 (39 bytes) do not.
        c.shares = vec![share(&"€".repeat(12), &folder)];
        c.validate().unwrap();
        c.shares = vec![share(&"€".repeat(13), &folder)];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ShareTagTooLong { len: 39, .. })
        ));
        c.shares = vec![share("a\0b", &folder)];
        assert!(matches!(c.validate(), Err(ConfigError::ShareTagNul(_))));
        c.shares = vec![share("src", &folder), share("src", dir.path())];
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, ConfigError::ShareTagTwice(ref t) if t == "src"),
            "{e}"
        );

        c.shares = vec![share("src", Path::new("relative/dir"))];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SharePathRelative(_))
        ));
        c.shares = vec![share("src", &dir.path().join("missing"))];
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::ShareDir { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        c.shares = vec![share("src", &file)];
        assert!(matches!(c.validate(), Err(ConfigError::ShareNotDir(_))));

        c.shares = (0..=MAX_SHARES)
            .map(|i| share(&format!("s{i}"), &folder))
            .collect();
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, ConfigError::TooManyShares { count: 17, max: 16 }),
            "{e}"
        );
        c.shares.pop();
        c.validate().unwrap();
    }
}
