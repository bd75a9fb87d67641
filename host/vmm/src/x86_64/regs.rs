//! The vCPU state a PVH entry expects (32-bit protected mode, paging off, flat segments,
//! EBX = start info), and the MSRs a BIOS would leave initialised.

use berth_hypervisor::x86::gdt_entry;
use berth_hypervisor::{DescriptorTable, Registers, Segment, SpecialRegisters};

use super::layout::{GDT_ADDR, IDT_ADDR, PVH_INFO_ADDR};

/// The boot GDT: null, flat 32-bit code (0x08), flat data (0x10), TSS (0x18).
pub const GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

const X86_CR0_PE: u64 = 1;

/// General-purpose registers at the PVH entry point.
pub fn boot_registers(entry: u64) -> Registers {
    Registers {
        rip: entry,
        rbx: PVH_INFO_ADDR,
        rflags: 0x2,
        ..Default::default()
    }
}

/// Segment and control registers at the PVH entry point.
pub fn boot_special_registers() -> SpecialRegisters {
    let code = Segment::from_gdt_entry(GDT[1], 0x08);
    let data = Segment::from_gdt_entry(GDT[2], 0x10);
    let tss = Segment::from_gdt_entry(GDT[3], 0x18);
    SpecialRegisters {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss,
        ldt: Segment::default(),
        gdt: DescriptorTable {
            base: GDT_ADDR,
            limit: (GDT.len() * 8 - 1) as u16,
        },
        idt: DescriptorTable {
            base: IDT_ADDR,
            limit: 7,
        },
        cr0: X86_CR0_PE,
        cr3: 0,
        cr4: 0,
        efer: 0,
    }
}

/// MSRs set on every vCPU: SYSENTER/SYSCALL registers cleared, TSC at 0, fast strings
/// enabled, MTRRs enabled with write-back as the default type.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (0x174, 0),             // IA32_SYSENTER_CS
        (0x175, 0),             // IA32_SYSENTER_ESP
        (0x176, 0),             // IA32_SYSENTER_EIP
        (0xc000_0081, 0),       // STAR
        (0xc000_0082, 0),       // LSTAR
        (0xc000_0083, 0),       // CSTAR
        (0xc000_0084, 0),       // SYSCALL_MASK
        (0xc000_0102, 0),       // KERNEL_GS_BASE
        (0x10, 0),              // IA32_TSC
        (0x1a0, 1),             // IA32_MISC_ENABLE: fast strings
        (0x2ff, (1 << 11) | 6), // IA32_MTRR_DEF_TYPE: enabled, write-back
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_entry_state() {
        let s = boot_special_registers();
        assert_eq!(s.cs.selector, 0x08);
        assert!(s.cs.db && !s.cs.l && s.cs.present);
        assert_eq!(s.cs.limit, 0xffff_ffff);
        assert_eq!(s.ss.selector, 0x10);
        assert_eq!(s.tr.type_, 0xb);
        assert_eq!(s.cr0 & 1, 1);
        assert_eq!(s.cr0 & (1 << 31), 0, "paging off");
        let r = boot_registers(0x100_0000);
        assert_eq!((r.rip, r.rbx), (0x100_0000, PVH_INFO_ADDR));
    }
}
