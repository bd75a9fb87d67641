//! Builds the VM's devices and puts them on the buses.

use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use berth_devices::bus::{Bus, SharedDevice};
use berth_devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use berth_devices::serial::{ConsoleLog, ConsoleWriter, SerialDevice};
use berth_devices::virtio::block::Block;
#[cfg(target_os = "linux")]
use berth_devices::virtio::fs::Fs;
use berth_devices::virtio::mmio::{MmioTransport, MMIO_WINDOW};
use berth_devices::virtio::net::Net;
use berth_devices::virtio::rng::Rng;
use berth_devices::virtio::vsock::Vsock;
use berth_devices::virtio::VirtioDevice;
use berth_hypervisor::Vm;

use crate::config::{ConsoleConfig, ShareConfig, VmConfig};
use crate::error::{ConfigError, VmmError};
use crate::x86_64::layout::*;
use crate::{GuestMemory, VmEvent};

/// The devices of a running VM.
pub struct Devices {
    /// Port I/O bus (serial, i8042).
    pub pio: Bus,
    /// MMIO bus (virtio-mmio windows).
    pub mmio: Bus,
    /// The console UART, to flush it at the end.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The console's last lines.
    pub console: Arc<ConsoleLog>,
    /// `virtio_mmio.device=` entries for the kernel command line.
    pub cmdline: Vec<String>,
}

fn device_err(device: &str, e: impl std::fmt::Display) -> VmmError {
    VmmError::Device {
        device: device.to_string(),
        reason: e.to_string(),
    }
}

fn console_output(config: &ConsoleConfig) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match config {
        ConsoleConfig::Stdout => Box::new(std::io::stdout()),
        ConsoleConfig::Null => Box::new(std::io::sink()),
        ConsoleConfig::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| VmmError::Console {
                    path: path.clone(),
                    source,
                })?,
        ),
    })
}

/// The virtio-fs device of one shared folder: berth-fuse's passthrough behind its FUSE
/// server, allowed `fds` host descriptors for the inodes and handles the guest holds.
#[cfg(target_os = "linux")]
fn share_device(share: &ShareConfig, fds: u64) -> Result<Box<dyn VirtioDevice>, VmmError> {
    let defaults = berth_fuse::PassthroughOptions::default();
    let fds = usize::try_from(fds).unwrap_or(usize::MAX);
    let opts = berth_fuse::PassthroughOptions {
        read_only: share.read_only,
        max_inodes: defaults.max_inodes.min(fds / 4 * 3).max(64),
        max_handles: defaults.max_handles.min(fds / 4).max(16),
        ..defaults
    };
    let fs = berth_fuse::PassthroughFs::with_options(&share.path, opts).map_err(|source| {
        VmmError::Share {
            tag: share.tag.clone(),
            path: share.path.clone(),
            source,
        }
    })?;
    let device = Fs::new(&share.tag, Arc::new(berth_fuse::Server::new(fs)))
        .map_err(|e| device_err(&format!("share {}", share.tag), e))?;
    Ok(Box::new(device))
}

/// Descriptors kept for everything but the shares (disks, sockets, the network).
const RESERVED_FDS: u64 = 1024;
/// What each share would like: its inode and handle caps.
const FDS_PER_SHARE: u64 = 262_144 + 65_536;

/// Raises this process's descriptor limit for `shares` shares (every inode a guest knows
/// holds one): the hard limit too where allowed (root), else the soft limit to the hard.
/// Returns the descriptors each share may use.
#[cfg(target_os = "linux")]
fn share_fd_budget(shares: usize) -> u64 {
    let want = RESERVED_FDS + FDS_PER_SHARE * shares as u64;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let target = want.min(nr_open);
    let raised = libc::rlimit {
        rlim_cur: target.max(lim.rlim_cur),
        rlim_max: target.max(lim.rlim_max),
    };
    // SAFETY: setrlimit only reads the struct; failure (not root) leaves the limit as it was.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        lim = raised;
    } else {
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above; raising the soft limit up to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
            lim = soft;
        }
    }
    let budget = lim.rlim_cur.saturating_sub(RESERVED_FDS) / shares.max(1) as u64;
    if budget < 4096 {
        tracing::warn!(
            "only {} descriptors for each shared folder (RLIMIT_NOFILE): a guest that opens \
             more files than that in a share gets ENFILE; raise the limit (ulimit -n)",
            budget
        );
    }
    budget
}

/// No shares, no descriptors to budget, off Linux.
#[cfg(not(target_os = "linux"))]
fn share_fd_budget(_shares: usize) -> u64 {
    0
}

/// Shared folders need the passthrough filesystem, which only exists for Linux hosts yet.
#[cfg(not(target_os = "linux"))]
fn share_device(_share: &ShareConfig, _fds: u64) -> Result<Box<dyn VirtioDevice>, VmmError> {
    Err(VmmError::SharesUnsupported)
}

/// Creates every device of `config` on `vm`.
pub fn build<V: Vm>(
    vm: &V,
    mem: &GuestMemory,
    config: &VmConfig,
    events: Sender<VmEvent>,
) -> Result<Devices, VmmError> {
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let console = ConsoleLog::new();
    let writer = ConsoleWriter::new(console_output(&config.console)?, console.clone());
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        vm.irq_line(SERIAL_IRQ)?,
        writer,
    )));
    let shared: SharedDevice = serial.clone();
    pio.insert(shared, u64::from(SERIAL_PORT), 8)
        .map_err(|e| device_err("serial", e))?;

    let i8042: SharedDevice = Arc::new(Mutex::new(I8042::new(Box::new(move || {
        let _ = events.send(VmEvent::Reset);
    }))));
    pio.insert(i8042, u64::from(I8042_BASE), I8042_LEN)
        .map_err(|e| device_err("i8042", e))?;

    let mut virtio: Vec<(String, Box<dyn VirtioDevice>)> = Vec::new();
    for (i, disk) in config.disks.iter().enumerate() {
        let letter = char::from(b'a' + (i % 26) as u8);
        let serial = disk
            .serial
            .clone()
            .unwrap_or_else(|| format!("berth-vd{letter}"));
        let block = Block::concatenated(&disk.files(), disk.read_only, &serial)
            .map_err(|e| device_err(&format!("disk {}", disk.path.display()), e))?;
        virtio.push((format!("disk {}", disk.path.display()), Box::new(block)));
    }
    if let Some(v) = &config.vsock {
        let vsock =
            Vsock::new(v.guest_cid, v.socket.clone()).map_err(|e| device_err("vsock", e))?;
        virtio.push(("vsock".into(), Box::new(vsock)));
    }
    if let Some(n) = &config.net {
        let user = n.user_config()?;
        let mtu = user.mtu;
        let backend = berth_net::UserNet::new(user).map_err(ConfigError::from)?;
        let net =
            Net::new(n.mac_bytes()?, mtu, Box::new(backend)).map_err(|e| device_err("net", e))?;
        virtio.push(("net".into(), Box::new(net)));
    }
    if config.rng {
        virtio.push(("rng".into(), Box::new(Rng::new())));
    }
    // Shares come last, so that adding one moves no other device's window or interrupt.
    if !config.shares.is_empty() {
        let fds = share_fd_budget(config.shares.len());
        for share in &config.shares {
            virtio.push((format!("share {}", share.tag), share_device(share, fds)?));
        }
    }
    if virtio.len() > MAX_VIRTIO_DEVICES {
        return Err(ConfigError::TooManyDevices {
            max: MAX_VIRTIO_DEVICES,
        }
        .into());
    }

    let mut cmdline = Vec::new();
    for (i, (name, device)) in virtio.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_WINDOW;
        let irq = VIRTIO_IRQ_BASE + i as u32;
        let transport: SharedDevice = Arc::new(Mutex::new(MmioTransport::new(
            device,
            mem.clone(),
            vm.irq_line(irq)?,
        )));
        mmio.insert(transport, base, MMIO_WINDOW)
            .map_err(|e| device_err(&name, e))?;
        cmdline.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
    }

    Ok(Devices {
        pio,
        mmio,
        serial,
        console,
        cmdline,
    })
}
