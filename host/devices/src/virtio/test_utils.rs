//! Helpers shared by the device unit tests: guest memory and a counting interrupt line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vm_memory::GuestAddress;

use crate::{GuestMemory, IrqTrigger};

/// An interrupt line that counts how often it was raised.
#[derive(Default)]
pub struct CountingIrq(AtomicUsize);

impl CountingIrq {
    /// A new line, shared.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Times raised.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl IrqTrigger for CountingIrq {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// 1 MiB of guest memory at address 0.
pub fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("test guest memory")
}
