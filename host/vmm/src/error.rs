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
    /// cannot understand memory size '{0}': write e.g. 256M or 1G
    #[error("cannot understand memory size '{0}': write e.g. 256M or 1G")]
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
    /// the directory of console file {0} does not exist
    #[error("the directory of console file {0} does not exist")]
    ConsoleDir(PathBuf),
    /// invalid VM config JSON: {0}
    #[error("invalid VM config JSON: {0}")]
    Json(String),
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
