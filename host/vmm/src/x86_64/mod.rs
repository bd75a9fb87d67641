//! x86-64 specifics: memory layout, PVH boot, MP table, CPUID and register state.

/// x86-64 hosts only (linux-loader's PVH and ELF loaders are), and Unix only: it reads the
/// kernel and initrd straight into guest memory (vm-memory's `rawfd`).
#[cfg(all(target_arch = "x86_64", unix))]
pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;

/// Test kernels.
#[cfg(test)]
pub(crate) mod test_kernel {
    /// A minimal x86-64 ELF: one PT_LOAD of 16 bytes at physical `load`, a PVH note.
    pub(crate) fn pvh_elf(load: u64) -> Vec<u8> {
        let mut f = vec![0u8; 0x110];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&load.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        // PT_LOAD
        let p = 64;
        f[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&0x100u64.to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&load.to_le_bytes());
        f[p + 24..p + 32].copy_from_slice(&load.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&16u64.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&16u64.to_le_bytes());
        // PT_NOTE
        let p = 120;
        f[p..p + 4].copy_from_slice(&4u32.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&176u64.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&20u64.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&20u64.to_le_bytes());
        let n = 176;
        f[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
        f[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
        f[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes());
        f[n + 12..n + 16].copy_from_slice(b"Xen\0");
        f[n + 16..n + 20].copy_from_slice(&(load as u32).to_le_bytes());
        // Code: hlt.
        f[0x100] = 0xf4;
        f
    }

    /// Offsets in [`pvh_elf`]'s file: of the note's name size, and of its type.
    pub(crate) const NOTE_NAMESZ: usize = 176;
    /// See [`NOTE_NAMESZ`].
    pub(crate) const NOTE_TYPE: usize = 176 + 8;
}
