//! Emulated devices of the berth micro-VM: serial, i8042, virtio-mmio, virtio-blk,
//! virtio-vsock, virtio-rng, virtio-net and virtio-fs.
//!
//! Nothing here names a hypervisor: devices see guest memory through `vm-memory`,
//! are reached through [`bus::BusDevice`] reads and writes (the portable "address,
//! size, data" shape of an MMIO or port I/O exit), and raise interrupts through
//! [`IrqTrigger`]. Every value the guest writes is hostile: devices bounds-check,
//! never panic and never loop on guest-controlled values.

pub mod bus;
pub mod fileio;
pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::Arc;

/// The guest memory type every device works on.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Raises one interrupt line of the guest (edge-triggered).
///
/// The hypervisor backend provides it: on KVM an irqfd or `KVM_IRQ_LINE`; on other
/// backends whatever their interrupt controller takes.
pub trait IrqTrigger: Send + Sync {
    /// Raises the interrupt once.
    fn trigger(&self) -> std::io::Result<()>;
}

/// A shared handle to an interrupt line.
pub type Irq = Arc<dyn IrqTrigger>;
