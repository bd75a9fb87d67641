//! The virtio-mmio transport (virtio 1.2, section 4.2.2: the "version 2" register layout).
//!
//! The transport owns the register file, feature negotiation, the device status state
//! machine and the queue configuration, and hands the queues to the device on `DRIVER_OK`.
//! The guest is hostile: register writes in the wrong state are ignored (and logged), a
//! failed activation sets `DEVICE_NEEDS_RESET`, nothing here panics.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use super::{VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;
use crate::{GuestMemory, Irq};

/// Size of one device's MMIO window.
pub const MMIO_WINDOW: u64 = 0x1000;

/// "virt" in little endian.
const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) register layout.
const VERSION: u32 = 2;
/// Vendor id presented to the guest ("BRTH").
const VENDOR_ID: u32 = 0x4854_5242;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may run.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Register offsets.
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    device_status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    unknown_features_requested: bool,
    queue_sel: u32,
    activated: bool,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.device_status)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
    device
        .queue_max_sizes()
        .iter()
        .map(|&max| {
            // A device advertising an invalid maximum gets a queue of the largest valid size
            // not above it, so a device bug cannot make the transport panic.
            let size = if max == 0 {
                1
            } else {
                1u16 << (15 - max.leading_zeros())
            };
            Queue::new(size).unwrap_or_default()
        })
        .collect()
}

impl MmioTransport {
    /// Puts `device` behind a transport raising `irq`, using guest memory `mem`.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory, irq: Irq) -> Self {
        let queues = fresh_queues(device.as_ref());
        Self {
            device,
            mem,
            interrupt: VirtioInterrupt::new(irq),
            queues,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_features_requested: false,
            queue_sel: 0,
            activated: false,
        }
    }

    /// The device status register, as the guest reads it.
    pub fn status(&self) -> u32 {
        let mut s = self.device_status;
        if self.interrupt.needs_reset() {
            s |= status::DEVICE_NEEDS_RESET;
        }
        s
    }

    /// Whether the device was started (`DRIVER_OK` accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only while features are negotiated and the device is
    /// not yet running.
    fn queue_config_allowed(&self) -> bool {
        self.device_status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.device_status = 0;
        self.driver_features = 0;
        self.unknown_features_requested = false;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.queues = fresh_queues(self.device.as_ref());
        self.interrupt.reset();
    }

    fn set_status(&mut self, value: u32) {
        use status::*;
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.device_status;
        if value & FAILED != 0 {
            self.device_status |= FAILED;
            return;
        }
        // Bits may only be added, one stage at a time.
        let added = value & !old;
        if value & old != old {
            tracing::warn!(old, value, "virtio-mmio: status write clears bits; ignored");
            return;
        }
        match (old, added) {
            (0, ACKNOWLEDGE) => self.device_status = value,
            (ACKNOWLEDGE, DRIVER) => self.device_status = value,
            (s, FEATURES_OK) if s == ACKNOWLEDGE | DRIVER => {
                let offered = self.device.features();
                let wanted = self.driver_features;
                if wanted & !offered != 0
                    || wanted & VIRTIO_F_VERSION_1 == 0
                    || self.unknown_features_requested
                {
                    // Leave FEATURES_OK clear: the driver reads it back and gives up.
                    tracing::warn!(
                        offered,
                        wanted,
                        "virtio-mmio: driver features rejected (unknown bits or no VERSION_1)"
                    );
                    return;
                }
                self.device.ack_features(wanted);
                self.device_status = value;
            }
            (s, DRIVER_OK) if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => {
                self.device_status = value;
                self.activate();
            }
            _ => tracing::warn!(
                old,
                value,
                "virtio-mmio: status transition out of order; ignored"
            ),
        }
    }

    fn activate(&mut self) {
        let mut ready = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() {
                break;
            }
            if !q.is_valid(&self.mem) {
                tracing::warn!(queue = i, "virtio-mmio: queue is outside guest memory");
                self.interrupt.set_needs_reset();
                return;
            }
            match Queue::try_from(q.state()) {
                Ok(copy) => ready.push(copy),
                Err(e) => {
                    tracing::warn!(queue = i, "virtio-mmio: invalid queue: {e}");
                    self.interrupt.set_needs_reset();
                    return;
                }
            }
        }
        match self
            .device
            .activate(self.mem.clone(), self.interrupt.clone(), ready)
        {
            Ok(()) => self.activated = true,
            Err(e) => {
                tracing::warn!(
                    device_type = self.device.device_type(),
                    "virtio-mmio: activation failed: {e}"
                );
                self.interrupt.set_needs_reset();
            }
        }
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        let queue_ok = self.queue_config_allowed();
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.device_status != status::ACKNOWLEDGE | status::DRIVER {
                    tracing::warn!("virtio-mmio: driver features written outside DRIVER state");
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    // Feature words the device has no bits in: a non-zero write asks for
                    // features that do not exist and fails negotiation.
                    _ if v != 0 => self.unknown_features_requested = true,
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                if !queue_ok {
                    tracing::warn!(offset, "virtio-mmio: queue register written in wrong state");
                    return;
                }
                let Some(q) = self.selected_queue() else {
                    tracing::warn!(offset, "virtio-mmio: write to a queue that does not exist");
                    return;
                };
                match offset {
                    reg::QUEUE_NUM => match u16::try_from(v) {
                        Ok(size) => q.set_size(size),
                        Err(_) => tracing::warn!(v, "virtio-mmio: queue size too large"),
                    },
                    reg::QUEUE_READY => q.set_ready(v == 1),
                    reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
                    reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
                    reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
                    _ => q.set_used_ring_address(None, Some(v)),
                }
            }
            reg::QUEUE_NOTIFY => {
                if self.activated {
                    self.device.queue_notify(v);
                } else {
                    tracing::debug!(v, "virtio-mmio: notify before DRIVER_OK; ignored");
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            _ => tracing::debug!(
                offset,
                v,
                "virtio-mmio: write to read-only or unknown register"
            ),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            data.fill(0);
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio: register read not 32-bit"
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::warn!(
                offset,
                len = data.len(),
                "virtio-mmio: register write not 32-bit"
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            tracing::warn!(offset, "virtio-mmio: unaligned register write");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
