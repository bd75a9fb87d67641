//! x86-64 specifics: memory layout, PVH boot, MP table, CPUID and register state.

pub mod boot;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
