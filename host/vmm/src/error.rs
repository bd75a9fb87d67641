//! Errors of the VMM.

use std::path::PathBuf;

/// Bad host input, found before any VM starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// cannot read kernel {path}: {source}
    #[error("cannot read kernel {path}: {source}")]
    Kernel {
        /// The kernel.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// kernel {path} is not usable: {reason}; berth boots an uncompressed x86-64 vmlinux built with CONFIG_PVH=y (see scripts/build-kernel.sh)
    #[error(
        "kernel {path} is not usable: {reason}; berth boots an uncompressed x86-64 vmlinux \
         built with CONFIG_PVH=y (see scripts/build-kernel.sh)"
    )]
    BadKernel {
        /// The kernel.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// cannot read initrd {path}: {source}
    #[error("cannot read initrd {path}: {source}")]
    Initrd {
        /// The initrd.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// guest memory of {mib} MiB is too small: give at least {min} MiB
    #[error("guest memory of {mib} MiB is too small: give at least {min} MiB")]
    MemoryTooSmall {
        /// Asked for.
        mib: u64,
        /// The minimum.
        min: u64,
    },
    /// guest memory of {mib} MiB is more than this host has ({host} MiB)
    #[error("guest memory of {mib} MiB is more than this host has ({host} MiB)")]
    MemoryTooLarge {
        /// Asked for.
        mib: u64,
        /// Host total.
        host: u64,
    },
    /// cannot understand memory size '{0}': write whole MiB, like 256M or 1G
    #[error("cannot understand memory size '{0}': write whole MiB, like 256M or 1G")]
    BadMemory(String),
    /// {cpus} vCPUs asked for: give between 1 and {max}
    #[error("{cpus} vCPUs asked for: give between 1 and {max}")]
    BadCpus {
        /// Asked for.
        cpus: u8,
        /// The maximum.
        max: u8,
    },
    /// the kernel command line contains a NUL byte
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// the kernel command line is {len} bytes, more than the kernel's limit of {max}
    #[error("the kernel command line is {len} bytes, more than the kernel's limit of {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// disk spec '{0}' is not ro:FILE, rw:FILE or FILE
    #[error("disk spec '{0}' is not ro:FILE, rw:FILE or FILE")]
    BadDiskSpec(String),
    /// cannot open disk {path} (read_only={read_only}): {source}
    #[error("cannot open disk {path} (read_only={read_only}): {source}")]
    Disk {
        /// The image.
        path: PathBuf,
        /// Mode asked for.
        read_only: bool,
        /// Why.
        source: std::io::Error,
    },
    /// disk {path} is {size} bytes, not a whole number of 512-byte sectors: resize it (truncate -s %512 FILE)
    #[error(
        "disk {path} is {size} bytes, not a whole number of 512-byte sectors: \
         resize it (truncate -s %512 FILE)"
    )]
    DiskSize {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// disk {0} has further image files, so it must be read-only
    #[error("disk {0} has further image files, so it must be read-only")]
    WritableDiskFiles(PathBuf),
    /// disk {path} is made of {count} image files; a disk takes at most {max}
    #[error("disk {path} is made of {count} image files; a disk takes at most {max}")]
    TooManyDiskFiles {
        /// The disk's first image.
        path: PathBuf,
        /// How many files it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// disk serial {0:?} must be 1 to 20 printable ASCII characters
    #[error("disk serial {0:?} must be 1 to 20 printable ASCII characters")]
    BadSerial(String),
    /// too many devices: berth has interrupt lines for {max} virtio devices
    #[error("too many devices: berth has interrupt lines for {max} virtio devices")]
    TooManyDevices {
        /// The limit.
        max: usize,
    },
    /// vsock socket path {0} already exists: remove it (is another VM using it?) or choose another path
    #[error(
        "vsock socket path {0} already exists: remove it (is another VM using it?) \
         or choose another path"
    )]
    VsockTaken(PathBuf),
    /// the directory of vsock socket path {0} does not exist
    #[error("the directory of vsock socket path {0} does not exist")]
    VsockDir(PathBuf),
    /// vsock socket path {0} is too long for a Unix socket (with its _PORT suffixes): use a shorter path
    #[error(
        "vsock socket path {0} is too long for a Unix socket (with its _PORT suffixes): \
         use a shorter path"
    )]
    VsockPathLong(PathBuf),
    /// guest CID {0} is reserved or too large: use 3 or more, below 2^32
    #[error("guest CID {0} is reserved or too large: use 3 or more, below 2^32")]
    BadCid(u64),
    /// MAC address {0:?} is unusable: give six hex bytes such as 52:54:00:12:34:56, unicast (even first byte)
    #[error("MAC address {0:?} is unusable: give six hex bytes such as 52:54:00:12:34:56, unicast (even first byte)")]
    BadMac(String),
    /// subnet {0:?} is not of the form A.B.C.D/PREFIX
    #[error("subnet {0:?} is not of the form A.B.C.D/PREFIX")]
    BadSubnet(String),
    /// user-mode network: {0}
    #[error("user-mode network: {0}")]
    UserNet(#[from] berth_net::UserNetError),
    /// {count} shared folders asked for: berth shares at most {max}
    #[error("{count} shared folders asked for: berth shares at most {max}")]
    TooManyShares {
        /// Asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// the share of {0} has an empty tag: give it the name the guest mounts it by
    #[error("the share of {0} has an empty tag: give it the name the guest mounts it by")]
    ShareTagEmpty(PathBuf),
    /// share tag {tag:?} is {len} bytes long: use at most {max} bytes
    #[error("share tag {tag:?} is {len} bytes long: use at most {max} bytes")]
    ShareTagTooLong {
        /// The tag.
        tag: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// share tag {0:?} contains a NUL byte
    #[error("share tag {0:?} contains a NUL byte")]
    ShareTagNul(String),
    /// share tag {0:?} is used twice: give every shared folder its own tag
    #[error("share tag {0:?} is used twice: give every shared folder its own tag")]
    ShareTagTwice(String),
    /// shared folder {0} is a relative path: give an absolute one
    #[error("shared folder {0} is a relative path: give an absolute one")]
    SharePathRelative(PathBuf),
    /// cannot share folder {path}: {source}
    #[error("cannot share folder {path}: {source}")]
    ShareDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// cannot share {0}: it is not a directory
    #[error("cannot share {0}: it is not a directory")]
    ShareNotDir(PathBuf),
    /// the directory of console file {0} does not exist
    #[error("the directory of console file {0} does not exist")]
    ConsoleDir(PathBuf),
    /// invalid VM config JSON: {0}
    #[error("invalid VM config JSON: {0}")]
    Json(String),
    /// cannot read VM config {path}: {source}
    #[error("cannot read VM config {path}: {source}")]
    Read {
        /// The file (`-`: standard input).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// {0}
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// {0}
    #[error(transparent)]
    Hypervisor(#[from] berth_hypervisor::HypervisorError),
    /// cannot allocate {mib} MiB of guest memory: {reason}
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Memory {
        /// Size asked for.
        mib: u64,
        /// Why.
        reason: String,
    },
    /// cannot load the kernel: {0}
    #[error("cannot load the kernel: {0}")]
    LoadKernel(String),
    /// the initrd ({size} bytes) does not fit in guest memory above the kernel: give the VM more memory
    #[error(
        "the initrd ({size} bytes) does not fit in guest memory above the kernel: \
         give the VM more memory"
    )]
    InitrdTooLarge {
        /// Its size.
        size: u64,
    },
    /// cannot write boot data into guest memory: {0}
    #[error("cannot write boot data into guest memory: {0}")]
    BootData(String),
    /// cannot set up device {device}: {reason}
    #[error("cannot set up device {device}: {reason}")]
    Device {
        /// Which device.
        device: String,
        /// Why.
        reason: String,
    },
    /// cannot open console file {path}: {source}
    #[error("cannot open console file {path}: {source}")]
    Console {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// cannot share folder {path} as {tag:?}: {source}
    #[error("cannot share folder {path} as {tag:?}: {source}")]
    Share {
        /// The share's tag.
        tag: String,
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// sharing folders is not supported on this host yet
    #[error("sharing folders is not supported on this host yet")]
    SharesUnsupported,
    /// berth runs micro-VMs on x86-64 Linux (KVM) only, so far; this host is {os} on {arch}
    #[error(
        "berth runs micro-VMs on x86-64 Linux (KVM) only, so far; this host is {os} on {arch}"
    )]
    UnsupportedHost {
        /// The host's operating system.
        os: &'static str,
        /// The host's architecture.
        arch: &'static str,
    },
    /// cannot start a thread: {0}
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// vCPU {id} could not be set up: {reason}
    #[error("vCPU {id} could not be set up: {reason}")]
    VcpuSetup {
        /// The vCPU.
        id: u32,
        /// Why.
        reason: String,
    },
}
