//! The hypervisor boundary of berth: [`Hypervisor`], [`Vm`] and [`Vcpu`] traits, with KVM
//! as the first backend.
//!
//! Common code (the VMM, the devices) only sees the traits and the plain types of this
//! crate: a VM exit is a [`VcpuExit`] carrying "port or address, size, data", interrupt lines
//! are [`IrqTrigger`]s (which the devices raise), x86 state is described by [`x86`] types. No KVM type
//! crosses this boundary; `EventFd`, irqfd and `KVM_RUN` stay inside [`kvm`].
//!
//! # How other backends slot in
//!
//! The traits were shaped by the constraints of the two other hypervisors berth targets:
//!
//! - **Hypervisor.framework (macOS).** A process may own only one VM, so an HVF
//!   [`Hypervisor::create_vm`] fails on a second call (berth runs one VMM process per VM
//!   anyway). A vCPU may only be run and inspected from the thread that created it: that is
//!   why [`Vm::create_vcpu`] is called by the VMM *on the vCPU's own thread*, why [`Vcpu`] is
//!   not required to be `Send`, and why stopping a vCPU goes through a [`VcpuKicker`] that other
//!   threads hold (HVF: `hv_vcpus_exit`; KVM: a signal that interrupts `KVM_RUN`). HVF reports
//!   memory accesses outside mapped RAM as data aborts / EPT faults without decoding them: the
//!   backend runs an instruction emulator on the faulting instruction and produces the same
//!   [`VcpuExit::MmioRead`] / [`VcpuExit::MmioWrite`] (address, size, data) the VMM already
//!   handles; on the next [`Vcpu::run`] it completes the instruction with the data the VMM
//!   filled in. Interrupt lines map to its virtual interrupt controller (GIC on arm64, or a
//!   userspace IOAPIC on x86) behind the same [`IrqTrigger`].
//! - **WHP (Windows Hypervisor Platform).** `WHvRunVirtualProcessor` returns memory-access and
//!   I/O-port exits that are fed to the WHP instruction emulator (`WHvEmulatorTryMmioEmulation`
//!   / `WHvEmulatorTryIoEmulation`), whose callbacks produce exactly the port/address, size and
//!   data of [`VcpuExit`]. Kicking a vCPU is `WHvCancelRunVirtualProcessor`. Memory is mapped
//!   with `WHvMapGpaRange` from [`Vm::map_memory`]; CPUID results are set per partition.
//!
//! Everything x86-specific a backend must accept (CPUID entries, MSRs, registers) is a plain
//! value in [`x86`], so the VMM's boot code is shared by all backends.

#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::sync::Arc;

pub mod x86;

#[cfg(target_os = "linux")]
pub mod kvm;

pub use x86::{CpuidEntry, DescriptorTable, Registers, Segment, SpecialRegisters};

/// Errors of the hypervisor layer.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// cannot open {path}: {source}, and what to do about it ([`open_hint`])
    #[error("cannot open {path}: {source}{}", open_hint(.source))]
    Open {
        /// The device node.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// the hypervisor lacks a capability berth needs: {0}
    #[error("the hypervisor lacks a capability berth needs: {0}")]
    MissingCapability(&'static str),
    /// hypervisor operation {op} failed: {source}
    #[error("hypervisor operation {op} failed: {source}")]
    Op {
        /// The operation (an ioctl or API call).
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// invalid argument for {op}: {reason}
    #[error("invalid argument for {op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// What to do when the hypervisor's device node cannot be opened, by why: most often an
/// ordinary user outside the group that may use it (docker's users know that one).
fn open_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            ": add yourself to group kvm (`sudo usermod -aG kvm $USER`, then log in again)"
        }
        std::io::ErrorKind::NotFound => {
            ": KVM is not available on this machine (enable virtualization in the firmware, \
             or load kvm-intel or kvm-amd)"
        }
        _ => "; is KVM available, and may you use it (group kvm)?",
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, HypervisorError>;

/// Why a vCPU stopped running guest code.
///
/// I/O and MMIO exits borrow the data buffer of the vCPU: for reads the VMM fills `data`
/// (its length is the access size) and the next [`Vcpu::run`] hands it to the guest.
///
/// There is no exit for `HLT`: a halted vCPU waits inside [`Vcpu::run`] (see there), so a
/// guest that idles, or halts with interrupts off, never ends the VM by halting.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// The guest read `data.len()` bytes from I/O port `port`.
    IoIn {
        /// The port.
        port: u16,
        /// Buffer to fill (size of the access, times the repeat count of `rep ins`).
        data: &'a mut [u8],
    },
    /// The guest wrote `data` to I/O port `port`.
    IoOut {
        /// The port.
        port: u16,
        /// The bytes written.
        data: &'a [u8],
    },
    /// The guest read `data.len()` bytes at guest physical address `addr` (not RAM).
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// Buffer to fill.
        data: &'a mut [u8],
    },
    /// The guest wrote `data` at guest physical address `addr` (not RAM).
    MmioWrite {
        /// The guest physical address.
        addr: u64,
        /// The bytes written.
        data: &'a [u8],
    },
    /// The guest shut the vCPU down (on x86 a triple fault).
    Shutdown,
    /// The guest asked for a system reset through a hypervisor-handled mechanism.
    SystemReset,
    /// The guest asked to power off through a hypervisor-handled mechanism.
    SystemShutdown,
    /// [`VcpuKicker::kick`] (or a signal) interrupted the run: check why and run again.
    Interrupted,
    /// The hypervisor could not enter the guest.
    FailEntry {
        /// Hardware reason code.
        reason: u64,
    },
    /// The hypervisor hit an internal error while running the guest.
    InternalError,
    /// An exit berth does not handle; the string names it.
    Unhandled(String),
}

/// Raises one interrupt line of the guest (edge-triggered).
///
/// The backend provides it ([`Vm::irq_line`]): on KVM an irqfd; on other backends whatever
/// their interrupt controller takes. Devices hold it and raise it; they depend on this
/// boundary, never on a backend.
pub trait IrqTrigger: Send + Sync {
    /// Raises the interrupt once.
    fn trigger(&self) -> std::io::Result<()>;
}

/// A shared handle to an interrupt line.
pub type Irq = Arc<dyn IrqTrigger>;

/// Interrupts a running vCPU from another thread, so that [`Vcpu::run`] returns
/// [`VcpuExit::Interrupted`] soon.
pub trait VcpuKicker: Send + Sync {
    /// Interrupts the vCPU's current or next short wait in the guest.
    fn kick(&self);
}

/// A hypervisor: the entry point of a backend.
pub trait Hypervisor: Send + Sync {
    /// The VM type of this backend.
    type Vm: Vm;
    /// Creates a VM with an interrupt controller (x86: IOAPIC with 24 lines, PIC, PIT).
    ///
    /// HVF allows one VM per process: a second call fails there.
    fn create_vm(&self) -> Result<Self::Vm>;
    /// The CPUID leaves this hypervisor can present to a guest, before any filtering.
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>>;
    /// The largest vCPU count one VM may have.
    fn max_vcpus(&self) -> usize;
}

/// A virtual machine: its memory map, interrupt lines and vCPUs.
pub trait Vm: Send + Sync {
    /// The vCPU type of this backend.
    type Vcpu: Vcpu;

    /// Maps `size` bytes of host memory at `host_addr` into the guest at `guest_addr`.
    ///
    /// # Safety
    ///
    /// The host range must be a valid mapping that outlives the VM, and must not overlap
    /// another slot's guest range.
    unsafe fn map_memory(
        &self,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> Result<()>;

    /// An interrupt line to the guest's interrupt controller (x86: the IOAPIC pin `gsi`).
    fn irq_line(&self, gsi: u32) -> Result<Irq>;

    /// Creates vCPU `id`. Call it on the thread that will run the vCPU (HVF requires it).
    fn create_vcpu(&self, id: u32) -> Result<Self::Vcpu>;
}

/// One virtual CPU. It runs on the thread that created it.
pub trait Vcpu {
    /// Sets the CPUID leaves the guest sees on this vCPU.
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()>;
    /// Sets model-specific registers as `(index, value)` pairs.
    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()>;
    /// Sets the general-purpose registers.
    fn set_registers(&mut self, regs: &Registers) -> Result<()>;
    /// Sets segment, descriptor-table and control registers.
    fn set_special_registers(&mut self, sregs: &SpecialRegisters) -> Result<()>;
    /// Puts the FPU and SSE state in their power-on defaults (FCW 0x37f, MXCSR 0x1f80).
    fn init_fpu(&mut self) -> Result<()>;
    /// Programs the local APIC the way a BIOS leaves it for an MP-table boot: LINT0 in
    /// ExtINT mode, LINT1 as NMI.
    fn init_local_apic(&mut self) -> Result<()>;
    /// A handle other threads use to interrupt [`Vcpu::run`].
    fn kicker(&self) -> Arc<dyn VcpuKicker>;
    /// Runs the guest until the next exit the VMM must handle.
    ///
    /// `HLT` is the backend's to handle, not an exit: the vCPU waits inside `run` until its
    /// interrupt controller has an interrupt for it, then goes on running the guest. KVM
    /// waits in its in-kernel local APIC; a backend without one (HVF, WHP) blocks in `run`
    /// on its own interrupt state. A [`VcpuKicker::kick`] ends the wait with
    /// [`VcpuExit::Interrupted`], so a halted vCPU can always be stopped.
    fn run(&mut self) -> Result<VcpuExit<'_>>;
    /// The vCPU's registers now (to tell where a crashed guest was).
    fn registers(&self) -> Result<(Registers, SpecialRegisters)>;
}

#[cfg(test)]
mod open_error_tests {
    use super::HypervisorError;

    use std::io::ErrorKind;

    fn open(kind: ErrorKind) -> String {
        HypervisorError::Open {
            path: "/dev/kvm".into(),
            source: std::io::Error::from(kind),
        }
        .to_string()
    }

    #[test]
    fn a_user_without_access_is_told_to_join_group_kvm() {
        let m = open(ErrorKind::PermissionDenied);
        assert!(m.starts_with("cannot open /dev/kvm: "), "{m}");
        assert!(m.contains("add yourself to group kvm"), "{m}");
    }

    #[test]
    fn a_machine_without_kvm_is_told_so() {
        let m = open(ErrorKind::NotFound);
        assert!(m.contains("KVM is not available on this machine"), "{m}");
        assert!(!m.contains("group kvm"), "{m}");
    }
}
