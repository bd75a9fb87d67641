//! Guest physical memory layout of a berth x86-64 VM.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries), IDT at 0x520
//! 0x0000_6000  PVH hvm_start_info, module list at 0x6040
//! 0x0000_7000  e820-style memory map
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA), up to 0xa0000
//! 0x0100_0000  kernel (its ELF physical address, normally 16 MiB)
//! ...          initrd, at the top of low memory
//! 0xc000_0000  start of the 32-bit MMIO gap: virtio-mmio windows at 0xd000_0000
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 local APIC
//! 0x1_0000_0000 memory above 3 GiB continues here
//! ```

/// The GDT the vCPUs start with.
pub const GDT_ADDR: u64 = 0x500;
/// The (empty) IDT.
pub const IDT_ADDR: u64 = 0x520;
/// PVH start info.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Start of the EBDA, where the MP table goes; RAM below it is usable.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where memory above 1 MiB starts (the kernel must load above it).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap: RAM stops here and resumes at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// First address above the gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio window; each device takes 4 KiB.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// IOAPIC address (MP table).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC address (MP table).
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// IOAPIC pins.
pub const IOAPIC_PINS: u32 = 24;
/// Serial port and its interrupt.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's ISA interrupt.
pub const SERIAL_IRQ: u32 = 4;
/// First interrupt of the virtio devices (one line each).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// How many virtio devices have an interrupt line.
pub const MAX_VIRTIO_DEVICES: usize = (IOAPIC_PINS - VIRTIO_IRQ_BASE) as usize;

/// The guest RAM ranges for `size` bytes: below the MMIO gap, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_gap() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(ram_ranges(4 << 30), vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        // The virtio windows and the IOAPIC never overlap RAM.
        const _: () = assert!(VIRTIO_MMIO_BASE >= MMIO_GAP_START);
        const _: () =
            assert!(VIRTIO_MMIO_BASE + (MAX_VIRTIO_DEVICES as u64) * 0x1000 <= IOAPIC_ADDR as u64);
    }
}
