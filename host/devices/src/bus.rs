//! The device bus: a device answers reads and writes at an offset within its range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// A device shared between the bus and whoever else drives it (a vCPU thread, a backend).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a device could not be put on a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// the range {base:#x}+{len:#x} is empty or overflows the address space
    #[error("the range {base:#x}+{len:#x} is empty or overflows the address space")]
    BadRange {
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
    /// the range {base:#x}+{len:#x} overlaps a device already on the bus
    #[error("the range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap {
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
}

/// An address space (MMIO or port I/O) holding devices in non-overlapping ranges.
#[derive(Default, Clone)]
pub struct Bus {
    /// Start of each range -> (length, device).
    devices: BTreeMap<u64, (u64, SharedDevice)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.devices.iter().map(|(b, (l, _))| (*b, *l)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        if let Some((prev_base, (prev_len, _))) = self.devices.range(..end).next_back() {
            if prev_base + prev_len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    /// The device covering `addr` and the offset of `addr` in its range.
    fn resolve(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let (base, (len, dev)) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < *len).then_some((dev, offset))
    }

    /// Reads at `addr`; returns false (and leaves `data` alone) when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes at `addr`; returns false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering it if another thread panicked while holding it.
pub fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let mut bus = Bus::new();
        let a: SharedDevice = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        assert!(matches!(
            bus.insert(a.clone(), 0x3f0, 9),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(a.clone(), 0x3ff, 2),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(a.clone(), u64::MAX, 2),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(a.clone(), 0x400, 1).unwrap();
        let mut d = [0u8; 2];
        assert!(bus.read(0x3fa, &mut d));
        assert_eq!(d, [2, 2]);
        assert!(!bus.read(0x3f7, &mut d));
        assert!(!bus.write(0x401, &[1]));
        assert!(bus.write(0x3ff, &[9]));
    }
}
