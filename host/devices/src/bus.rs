//! The device bus: a device answers reads and writes at an offset within its range.

/// A device on the MMIO or port I/O bus.
///
/// `offset` is relative to the start of the device's range; `data.len()` is the access
/// size (1, 2, 4 or 8 bytes as the guest chose: any length must be tolerated).
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}
