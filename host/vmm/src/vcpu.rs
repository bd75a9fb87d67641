//! One thread per vCPU: create it on its own thread (as HVF requires), set it up, run it,
//! and dispatch its I/O and MMIO exits to the buses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Barrier};

use berth_devices::bus::Bus;
use berth_hypervisor::{CpuidEntry, Vcpu, VcpuExit, VcpuKicker, Vm};

use crate::x86_64::{boot::BootInfo, regs};
use crate::VmEvent;

/// What a vCPU thread reports once set up: its id and its kicker, or why setup failed.
pub type Ready = (u32, Result<Arc<dyn VcpuKicker>, String>);

/// What a vCPU thread needs.
pub struct VcpuContext {
    /// vCPU index (also its APIC id).
    pub id: u32,
    /// Its CPUID.
    pub cpuid: Vec<CpuidEntry>,
    /// Entry state, for the boot vCPU only.
    pub boot: Option<BootInfo>,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Set when the VM stops.
    pub stop: Arc<AtomicBool>,
    /// Where the vCPU reports how the VM ends.
    pub events: Sender<VmEvent>,
}

/// Creates and configures the vCPU (on the calling thread).
fn setup<V: Vm>(vm: &V, ctx: &VcpuContext) -> Result<V::Vcpu, String> {
    let mut vcpu = vm.create_vcpu(ctx.id).map_err(|e| e.to_string())?;
    vcpu.set_cpuid(&ctx.cpuid).map_err(|e| e.to_string())?;
    for (index, value) in regs::boot_msrs() {
        if let Err(e) = vcpu.set_msrs(&[(index, value)]) {
            tracing::debug!(vcpu = ctx.id, "MSR {index:#x} not set: {e}");
        }
    }
    vcpu.init_fpu().map_err(|e| e.to_string())?;
    vcpu.init_local_apic().map_err(|e| e.to_string())?;
    if let Some(boot) = ctx.boot {
        vcpu.set_registers(&regs::boot_registers(boot.entry))
            .map_err(|e| e.to_string())?;
        vcpu.set_special_registers(&regs::boot_special_registers())
            .map_err(|e| e.to_string())?;
    }
    Ok(vcpu)
}

/// The body of a vCPU thread. `ready` gets the kicker (or the setup error); the thread then
/// waits on `start` with the other vCPUs and the VMM.
pub fn thread_main<V: Vm>(vm: Arc<V>, ctx: VcpuContext, ready: Sender<Ready>, start: Arc<Barrier>) {
    let vcpu = match setup(vm.as_ref(), &ctx) {
        Ok(v) => {
            let _ = ready.send((ctx.id, Ok(v.kicker())));
            Some(v)
        }
        Err(e) => {
            let _ = ready.send((ctx.id, Err(e)));
            None
        }
    };
    start.wait();
    let Some(mut vcpu) = vcpu else {
        return;
    };
    if ctx.stop.load(Ordering::SeqCst) {
        return;
    }
    let event = run_loop(&mut vcpu, &ctx);
    if let Some(event) = event {
        let _ = ctx.events.send(event);
    }
}

/// Runs until the VM stops; returns what the vCPU has to report, if anything.
fn run_loop<C: Vcpu>(vcpu: &mut C, ctx: &VcpuContext) -> Option<VmEvent> {
    let id = ctx.id;
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return None;
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => return Some(VmEvent::VcpuError(id, e.to_string())),
        };
        match exit {
            VcpuExit::IoIn { port, data } => {
                if !ctx.pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
            }
            VcpuExit::IoOut { port, data } => {
                if !ctx.pio.write(u64::from(port), data) {
                    tracing::trace!(port, "write to an unclaimed port");
                }
            }
            VcpuExit::MmioRead { addr, data } => {
                if !ctx.mmio.read(addr, data) {
                    tracing::debug!(addr, "read of unclaimed MMIO");
                    data.fill(0);
                }
            }
            VcpuExit::MmioWrite { addr, data } => {
                if !ctx.mmio.write(addr, data) {
                    tracing::debug!(addr, "write to unclaimed MMIO");
                }
            }
            VcpuExit::Interrupted => {}
            VcpuExit::Shutdown => return Some(VmEvent::TripleFault(id, crash_state(vcpu))),
            VcpuExit::SystemReset => return Some(VmEvent::Reset),
            VcpuExit::SystemShutdown => return Some(VmEvent::PowerOff),
            VcpuExit::FailEntry { reason } => {
                return Some(VmEvent::VcpuError(
                    id,
                    format!("the hypervisor could not enter the guest (reason {reason:#x})"),
                ))
            }
            VcpuExit::InternalError => {
                return Some(VmEvent::VcpuError(
                    id,
                    "internal error of the hypervisor".into(),
                ))
            }
            VcpuExit::Unhandled(what) => {
                return Some(VmEvent::VcpuError(id, format!("unhandled exit {what}")))
            }
        }
    }
}

/// Where a crashed vCPU was, in a line: what a report of the crash needs.
fn crash_state<C: Vcpu>(vcpu: &C) -> String {
    match vcpu.registers() {
        Ok((r, s)) => {
            let regs = format!(
                "RIP={:#x} RSP={:#x} RFLAGS={:#x} CR0={:#x} CR3={:#x} CR4={:#x} EFER={:#x} CS={:#x}",
                r.rip, r.rsp, r.rflags, s.cr0, s.cr3, s.cr4, s.efer, s.cs.selector
            );
            if r.rip == 0xfff0 && s.cs.selector == 0xf000 && s.cr0 & 1 == 0 {
                // AMD SVM (KVM) reinitialises a vCPU that shuts down: the state is gone.
                format!("{regs}, the reset state: the hypervisor reset the vCPU, so where the guest crashed is lost")
            } else {
                regs
            }
        }
        Err(e) => format!("an unknown place (its registers could not be read: {e})"),
    }
}
