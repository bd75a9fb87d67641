//! Emulated devices of the berth micro-VM: serial, i8042, virtio-mmio, virtio-blk,
//! virtio-vsock, virtio-rng, virtio-net and virtio-fs.
//!
//! Nothing here names a hypervisor backend: devices see guest memory through `vm-memory`,
//! are reached through [`bus::BusDevice`] reads and writes (the portable "address,
//! size, data" shape of an MMIO or port I/O exit), and raise interrupts through the
//! hypervisor boundary's [`IrqTrigger`]. Every value the guest writes is hostile: devices bounds-check,
//! never panic and never loop on guest-controlled values.

pub mod bus;
pub mod fileio;
pub mod i8042;
pub mod serial;
pub mod virtio;

/// Interrupt lines are the hypervisor boundary's: a backend hands them out
/// ([`berth_hypervisor::Vm::irq_line`]) and devices raise them.
pub use berth_hypervisor::{Irq, IrqTrigger};

/// The guest memory type every device works on.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
