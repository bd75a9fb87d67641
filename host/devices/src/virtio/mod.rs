//! virtio devices and the virtio-mmio transport that presents them to the guest.
//!
//! A device implements [`VirtioDevice`]; the transport (`mmio`) owns the register
//! file, the feature negotiation and the queues, and hands them to the device on
//! `DRIVER_OK` through [`VirtioDevice::activate`].

pub mod block;
pub mod fs;
pub mod mmio;
pub mod net;
mod queue;
pub mod rng;
#[cfg(test)]
pub(crate) mod test_utils;
mod thread;
/// Unix hosts only: its host end is Unix sockets (mio has none on Windows).
#[cfg(unix)]
pub mod vsock;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;

use crate::{GuestMemory, Irq};

/// `VIRTIO_F_VERSION_1`: every berth device is a modern (virtio 1.x) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// virtio device type ids (virtio 1.2, section 5).
pub mod device_type {
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// Network card.
    pub const NET: u32 = 1;
    /// Shared folder (FUSE over virtio).
    pub const FS: u32 = 26;
}

/// A read of a device configuration space held as bytes: copies `config[offset..]` into
/// `data`, and bytes past the end (or at an offset the guest made up) read as zero, as
/// [`VirtioDevice::read_config`] promises.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Interrupt status bit: a queue has new used buffers.
pub const INTERRUPT_USED_RING: u32 = 1;
/// Interrupt status bit: the device configuration changed.
pub const INTERRUPT_CONFIG_CHANGE: u32 = 2;

/// The interrupt of one virtio-mmio device: the `InterruptStatus` register plus the line.
pub struct VirtioInterrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    line: Irq,
}

impl std::fmt::Debug for VirtioInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInterrupt")
            .field("status", &self.status.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl VirtioInterrupt {
    /// An interrupt raised on `line`.
    pub fn new(line: Irq) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            line,
        })
    }

    /// Tells the guest that a queue has used buffers.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.status.fetch_or(INTERRUPT_USED_RING, Ordering::SeqCst);
        self.line.trigger()
    }

    /// Tells the guest that the configuration space changed.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.status
            .fetch_or(INTERRUPT_CONFIG_CHANGE, Ordering::SeqCst);
        self.line.trigger()
    }

    /// The `InterruptStatus` register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The guest's write to `InterruptACK`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The device hit an error it cannot recover from (for example a queue whose rings
    /// are corrupt): the transport shows `DEVICE_NEEDS_RESET` in the status register and
    /// the guest is told through a configuration-change interrupt.
    pub fn set_needs_reset(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            let _ = self.signal_config_change();
        }
    }

    /// Whether the device asked for a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// The driver reset the device: clears the interrupt status and the reset request.
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// the driver set up {got} queues, the device needs {want}
    #[error("the driver set up {got} queues, the device needs {want}")]
    QueueCount {
        /// Queues the device needs.
        want: usize,
        /// Queues the driver made ready.
        got: usize,
    },
    /// the device could not start its backend: {0}
    #[error("the device could not start its backend: {0}")]
    Backend(String),
}

/// A virtio device behind the virtio-mmio transport.
pub trait VirtioDevice: Send {
    /// The virtio device type (see [`device_type`]).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers ([`VIRTIO_F_VERSION_1`] included).
    fn features(&self) -> u64;
    /// The features the driver accepted (a subset of [`VirtioDevice::features`]).
    fn ack_features(&mut self, features: u64);
    /// Reads the device configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; out-of-range writes are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the queues the driver made ready (`DRIVER_OK`).
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;
    /// The driver notified queue `index` (an index the guest chose: check it).
    fn queue_notify(&mut self, index: u32);
    /// The driver reset the device: stop and return to the initial state.
    fn reset(&mut self);
}

#[cfg(test)]
mod tests {
    use super::read_config_bytes;

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 0, &mut data);
        assert_eq!(data, [1, 2, 3, 4]);
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0], "a read that runs off the end");
        for offset in [4, 5, 1 << 32, u64::MAX] {
            let mut data = [0xffu8; 2];
            read_config_bytes(&config, offset, &mut data);
            assert_eq!(data, [0, 0], "offset {offset}");
        }
        read_config_bytes(&config, 1, &mut []);
    }
}
