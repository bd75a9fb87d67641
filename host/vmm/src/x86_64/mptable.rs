//! The Intel MultiProcessor table (MP spec 1.4) that tells a guest without ACPI about its
//! CPUs, the IOAPIC and how ISA interrupts are wired.
//!
//! Layout (all little endian, packed): the 16-byte floating pointer at [`EBDA_START`], then
//! the configuration table: header, one processor entry per vCPU, an ISA bus, the IOAPIC,
//! one I/O interrupt entry per IOAPIC pin and the two local interrupt entries.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{APIC_ADDR, EBDA_START, IOAPIC_ADDR, IOAPIC_PINS};
use crate::GuestMemory;

const MPC_SPEC: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// Family 6 stepping signature, as a BIOS of a modern machine reports it.
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = (1 << 9) | 1;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;

/// Bytes the table takes for `cpus` vCPUs.
pub fn table_size(cpus: u8) -> usize {
    16 + 44 + 20 * usize::from(cpus) + 8 + 8 + 8 * IOAPIC_PINS as usize + 2 * 8
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the floating pointer and configuration table for `cpus` vCPUs placed at `base`.
pub fn build(cpus: u8, base: u32) -> Vec<u8> {
    let ioapic_id = cpus.saturating_add(1);
    let mut entries = Vec::new();
    for id in 0..cpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for pin in 0..IOAPIC_PINS as u8 {
        // Conforming polarity and trigger, from ISA bus irq `pin` to IOAPIC pin `pin`.
        entries.extend_from_slice(&[ENTRY_INTSRC, MP_INT, 0, 0, 0, pin, ioapic_id, pin]);
    }
    entries.extend_from_slice(&[ENTRY_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]);

    let entry_count = u16::from(cpus) + 1 + 1 + IOAPIC_PINS as u16 + 2;
    let table_len = 44 + entries.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.push(MPC_SPEC);
    table.push(0); // checksum
    table.extend_from_slice(b"BERTH   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&APIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut mpf = Vec::with_capacity(16 + table.len());
    mpf.extend_from_slice(b"_MP_");
    mpf.extend_from_slice(&(base + 16).to_le_bytes());
    mpf.push(1); // length in 16-byte units
    mpf.push(MPC_SPEC);
    mpf.push(0); // checksum
    mpf.extend_from_slice(&[0u8; 5]); // feature bytes: a configuration table is present
    mpf[10] = checksum(&mpf[..16]);
    mpf.extend_from_slice(&table);
    mpf
}

/// Writes the MP table for `cpus` vCPUs into the EBDA.
pub fn write(mem: &GuestMemory, cpus: u8) -> Result<(), String> {
    let bytes = build(cpus, EBDA_START as u32);
    if EBDA_START + bytes.len() as u64 > 0xa_0000 {
        return Err(format!(
            "an MP table for {cpus} vCPUs does not fit in the EBDA"
        ));
    }
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|e| format!("writing the MP table: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_sizes() {
        for cpus in [1u8, 2, 32] {
            let b = build(cpus, EBDA_START as u32);
            assert_eq!(b.len(), table_size(cpus));
            assert_eq!(&b[..4], b"_MP_");
            assert_eq!(b[..16].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
            let table = &b[16..];
            assert_eq!(&table[..4], b"PCMP");
            assert_eq!(
                u16::from_le_bytes([table[4], table[5]]) as usize,
                table.len()
            );
            assert_eq!(table.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, u16::from(cpus) + 4 + 24);
            // First processor entry is the enabled boot processor with APIC id 0.
            assert_eq!(&table[44..48], &[0, 0, APIC_VERSION, 3]);
            assert!(EBDA_START as usize + b.len() <= 0xa_0000);
        }
    }

    #[test]
    fn written_into_memory() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, 2).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
