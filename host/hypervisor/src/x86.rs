//! Plain x86 vCPU state, independent of any hypervisor's structure layout.

/// One CPUID result: leaf `function`, subleaf `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// The leaf (EAX input).
    pub function: u32,
    /// The subleaf (ECX input), meaningful when `significant_index` is set.
    pub index: u32,
    /// The leaf's result depends on the subleaf in ECX (leaves 4, 7, 0xb, 0xd, 0x1f...).
    /// Backends translate it to and from their own flags (KVM's
    /// `KVM_CPUID_FLAG_SIGNIFICANT_INDEX`); no backend's bits travel in this type.
    pub significant_index: bool,
    /// Result EAX.
    pub eax: u32,
    /// Result EBX.
    pub ebx: u32,
    /// Result ECX.
    pub ecx: u32,
    /// Result EDX.
    pub edx: u32,
}

/// General-purpose registers, instruction pointer and flags.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register in its cached (descriptor) form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit, in bytes (already scaled by granularity).
    pub limit: u32,
    /// Selector.
    pub selector: u16,
    /// Type field (4 bits).
    pub type_: u8,
    /// Present.
    pub present: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size (32-bit when set).
    pub db: bool,
    /// Code or data segment (as opposed to a system segment).
    pub s: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Granularity (limit in 4 KiB units).
    pub g: bool,
    /// Available for software.
    pub avl: bool,
}

impl Segment {
    /// Decodes a GDT entry into its cached form, with `selector`.
    pub fn from_gdt_entry(entry: u64, selector: u16) -> Self {
        let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
        let raw_limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
        let g = (entry >> 55) & 1 == 1;
        let limit = if g {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        };
        Segment {
            base,
            limit,
            selector,
            type_: ((entry >> 40) & 0xf) as u8,
            s: (entry >> 44) & 1 == 1,
            dpl: ((entry >> 45) & 3) as u8,
            present: (entry >> 47) & 1 == 1,
            avl: (entry >> 52) & 1 == 1,
            l: (entry >> 53) & 1 == 1,
            db: (entry >> 54) & 1 == 1,
            g,
        }
    }
}

/// Encodes a GDT entry from flags (the 12 bits of access byte and flags nibble as in
/// `0xc09b`), base and limit (in the units the granularity flag selects).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0x0000_f0ff) << 40)
}

/// A descriptor table register (GDTR or IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes minus one.
    pub limit: u16,
}

/// Segment, descriptor-table and control registers.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialRegisters {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entry_round_trips_through_segment() {
        let code = gdt_entry(0xc09b, 0, 0xfffff);
        let seg = Segment::from_gdt_entry(code, 0x8);
        assert_eq!(seg.base, 0);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.type_, 0xb);
        assert!(seg.present && seg.s && seg.db && seg.g && !seg.l);
        assert_eq!(seg.dpl, 0);

        let tss = gdt_entry(0x008b, 0x1234_5678, 0x67);
        let seg = Segment::from_gdt_entry(tss, 0x18);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0x67);
        assert!(!seg.s && !seg.g);
    }
}
