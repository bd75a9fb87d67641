//! Builds the VM's devices and puts them on the buses.

use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use berth_devices::bus::{Bus, SharedDevice};
use berth_devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use berth_devices::serial::{ConsoleLog, ConsoleWriter, SerialDevice};
use berth_devices::virtio::block::Block;
use berth_devices::virtio::mmio::{MmioTransport, MMIO_WINDOW};
use berth_devices::virtio::rng::Rng;
use berth_devices::virtio::vsock::Vsock;
use berth_devices::virtio::VirtioDevice;
use berth_hypervisor::Vm;

use crate::config::{ConsoleConfig, VmConfig};
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
        let block = Block::new(&disk.path, disk.read_only, &format!("berth-vd{letter}"))
            .map_err(|e| device_err(&format!("disk {}", disk.path.display()), e))?;
        virtio.push((format!("disk {}", disk.path.display()), Box::new(block)));
    }
    if let Some(v) = &config.vsock {
        let vsock =
            Vsock::new(v.guest_cid, v.socket.clone()).map_err(|e| device_err("vsock", e))?;
        virtio.push(("vsock".into(), Box::new(vsock)));
    }
    if config.rng {
        virtio.push(("rng".into(), Box::new(Rng::new())));
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
