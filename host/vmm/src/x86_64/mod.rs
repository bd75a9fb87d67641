//! x86-64 specifics: memory layout, PVH boot, MP table, CPUID and register state.

/// x86-64 hosts only (linux-loader's PVH and ELF loaders are), and Unix only: it reads the
/// kernel and initrd straight into guest memory (vm-memory's `rawfd`).
#[cfg(all(target_arch = "x86_64", unix))]
pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
