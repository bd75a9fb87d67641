//! The KVM backend (Linux).
//!
//! The VM gets KVM's in-kernel interrupt controllers (PIC, IOAPIC, local APICs) and PIT.
//! Interrupt lines are irqfds; a vCPU is kicked out of `KVM_RUN` with a real-time signal
//! whose handler does nothing (the `KVM_RUN` ioctl then returns `EINTR`).

use std::sync::{Arc, Once};

use kvm_bindings::{
    kvm_fpu, kvm_pit_config, kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, Msrs,
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::{
    CpuidEntry, DescriptorTable, HypervisorError, Irq, IrqTrigger, Registers, Result, Segment,
    SpecialRegisters, VcpuExit, VcpuKicker,
};

/// The device node KVM is reached through.
pub const KVM_PATH: &str = "/dev/kvm";

/// Where KVM puts the three pages of the TSS Intel VMX needs (below 4 GiB, outside RAM).
const TSS_ADDRESS: usize = 0xfffb_d000;

fn op(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |e| HypervisorError::Op {
        op,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// The signal that kicks vCPU threads out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

static KICK_HANDLER: Once = Once::new();

/// The KVM hypervisor (`/dev/kvm`).
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks the capabilities berth relies on.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| HypervisorError::Open {
            path: KVM_PATH.to_string(),
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::Pit2, "KVM_CAP_PIT2"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(HypervisorError::MissingCapability(name));
            }
        }
        KICK_HANDLER.call_once(|| {
            if let Err(e) =
                vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            {
                tracing::error!("cannot install the vCPU kick signal handler: {e}");
            }
        });
        Ok(Self { kvm })
    }
}

impl crate::Hypervisor for KvmHypervisor {
    type Vm = KvmVm;

    fn create_vm(&self) -> Result<KvmVm> {
        let fd = self.kvm.create_vm().map_err(op("KVM_CREATE_VM"))?;
        fd.set_tss_address(TSS_ADDRESS)
            .map_err(op("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip().map_err(op("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(op("KVM_CREATE_PIT2"))?;
        Ok(KvmVm { fd })
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(op("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(cpuid.as_slice().iter().map(from_kvm_cpuid).collect())
    }

    fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }
}

/// A KVM virtual machine.
#[derive(Debug)]
pub struct KvmVm {
    fd: VmFd,
}

impl crate::Vm for KvmVm {
    type Vcpu = KvmVcpu;

    unsafe fn map_memory(
        &self,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: *mut u8,
    ) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: the caller guarantees the host range is a live mapping outliving the VM.
        unsafe { self.fd.set_user_memory_region(region) }.map_err(op("KVM_SET_USER_MEMORY_REGION"))
    }

    fn irq_line(&self, gsi: u32) -> Result<Irq> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| HypervisorError::Op {
            op: "eventfd",
            source,
        })?;
        self.fd.register_irqfd(&evt, gsi).map_err(op("KVM_IRQFD"))?;
        Ok(Arc::new(KvmIrq { evt, gsi }))
    }

    fn create_vcpu(&self, id: u32) -> Result<KvmVcpu> {
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(op("KVM_CREATE_VCPU"))?;
        Ok(KvmVcpu {
            fd,
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
        })
    }
}

/// An interrupt line backed by an irqfd.
#[derive(Debug)]
struct KvmIrq {
    evt: EventFd,
    gsi: u32,
}

impl IrqTrigger for KvmIrq {
    fn trigger(&self) -> std::io::Result<()> {
        self.evt
            .write(1)
            .map_err(|e| std::io::Error::other(format!("irqfd for GSI {}: {e}", self.gsi)))
    }
}

/// A KVM vCPU.
#[derive(Debug)]
pub struct KvmVcpu {
    fd: VcpuFd,
    thread: libc::pthread_t,
}

/// Kicks a vCPU thread with the kick signal.
#[derive(Debug)]
struct KvmKicker {
    thread: libc::pthread_t,
}

impl VcpuKicker for KvmKicker {
    fn kick(&self) {
        // SAFETY: pthread_kill only sends a signal; if the thread has already exited the
        // call may fail (ESRCH), which is harmless. The VMM joins vCPU threads only after it
        // stops kicking them, so the id is not reused while a kick is in flight.
        unsafe {
            libc::pthread_kill(self.thread, kick_signal());
        }
    }
}

fn to_kvm_segment(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: u8::from(s.avl),
        unusable: u8::from(!s.present),
        padding: 0,
    }
}

/// Builds `$ty` from `$r` field by field: `kvm_regs` and [`Registers`] name the
/// general-purpose registers alike, so one list serves both directions.
macro_rules! copy_gprs {
    ($r:ident => $ty:ident) => {
        $ty {
            rax: $r.rax,
            rbx: $r.rbx,
            rcx: $r.rcx,
            rdx: $r.rdx,
            rsi: $r.rsi,
            rdi: $r.rdi,
            rsp: $r.rsp,
            rbp: $r.rbp,
            r8: $r.r8,
            r9: $r.r9,
            r10: $r.r10,
            r11: $r.r11,
            r12: $r.r12,
            r13: $r.r13,
            r14: $r.r14,
            r15: $r.r15,
            rip: $r.rip,
            rflags: $r.rflags,
        }
    };
}

fn from_kvm_segment(s: &kvm_segment) -> Segment {
    Segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present != 0 && s.unusable == 0,
        dpl: s.dpl,
        db: s.db != 0,
        s: s.s != 0,
        l: s.l != 0,
        g: s.g != 0,
        avl: s.avl != 0,
    }
}

/// A CPUID entry of KVM's as the portable type: of KVM's flags, only whether the subleaf
/// matters crosses the boundary.
fn from_kvm_cpuid(e: &kvm_bindings::kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        significant_index: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

/// A portable CPUID entry as KVM's. KVM's other flags (STATEFUL_FUNC, STATE_READ_NEXT) are
/// for the stateful form of leaf 2, which KVM stopped emulating (Linux 5.7).
fn to_kvm_cpuid(e: &CpuidEntry) -> kvm_bindings::kvm_cpuid_entry2 {
    kvm_bindings::kvm_cpuid_entry2 {
        function: e.function,
        index: e.index,
        flags: if e.significant_index {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
        ..Default::default()
    }
}

/// Local APIC register offsets and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_lvt_mode(regs: &mut [libc::c_char], offset: usize, mode: u32) {
    let Some(bytes) = regs.get_mut(offset..offset + 4) else {
        return;
    };
    let mut raw = [0u8; 4];
    for (d, s) in raw.iter_mut().zip(bytes.iter()) {
        *d = *s as u8;
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (d, s) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *d = s as libc::c_char;
    }
}

impl crate::Vcpu for KvmVcpu {
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
        let kvm_entries: Vec<kvm_bindings::kvm_cpuid_entry2> =
            entries.iter().map(to_kvm_cpuid).collect();
        let cpuid =
            CpuId::from_entries(&kvm_entries).map_err(|e| HypervisorError::InvalidArgument {
                op: "KVM_SET_CPUID2",
                reason: format!("{} entries: {e:?}", kvm_entries.len()),
            })?;
        self.fd.set_cpuid2(&cpuid).map_err(op("KVM_SET_CPUID2"))
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()> {
        let entries: Vec<kvm_bindings::kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_bindings::kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let wrapped =
            Msrs::from_entries(&entries).map_err(|e| HypervisorError::InvalidArgument {
                op: "KVM_SET_MSRS",
                reason: format!("{e:?}"),
            })?;
        let set = self.fd.set_msrs(&wrapped).map_err(op("KVM_SET_MSRS"))?;
        if set != entries.len() {
            let failed = entries.get(set).map(|e| e.index).unwrap_or_default();
            return Err(HypervisorError::InvalidArgument {
                op: "KVM_SET_MSRS",
                reason: format!("KVM refused MSR {failed:#x}"),
            });
        }
        Ok(())
    }

    fn set_registers(&mut self, r: &Registers) -> Result<()> {
        let regs = copy_gprs!(r => kvm_regs);
        self.fd.set_regs(&regs).map_err(op("KVM_SET_REGS"))
    }

    fn set_special_registers(&mut self, s: &SpecialRegisters) -> Result<()> {
        let mut sregs = self.fd.get_sregs().map_err(op("KVM_GET_SREGS"))?;
        sregs.cs = to_kvm_segment(&s.cs);
        sregs.ds = to_kvm_segment(&s.ds);
        sregs.es = to_kvm_segment(&s.es);
        sregs.fs = to_kvm_segment(&s.fs);
        sregs.gs = to_kvm_segment(&s.gs);
        sregs.ss = to_kvm_segment(&s.ss);
        sregs.tr = to_kvm_segment(&s.tr);
        sregs.ldt = to_kvm_segment(&s.ldt);
        sregs.gdt.base = s.gdt.base;
        sregs.gdt.limit = s.gdt.limit;
        sregs.idt.base = s.idt.base;
        sregs.idt.limit = s.idt.limit;
        sregs.cr0 = s.cr0;
        sregs.cr3 = s.cr3;
        sregs.cr4 = s.cr4;
        sregs.efer = s.efer;
        self.fd.set_sregs(&sregs).map_err(op("KVM_SET_SREGS"))
    }

    fn registers(&self) -> Result<(Registers, SpecialRegisters)> {
        let r = self.fd.get_regs().map_err(op("KVM_GET_REGS"))?;
        let s = self.fd.get_sregs().map_err(op("KVM_GET_SREGS"))?;
        let regs = copy_gprs!(r => Registers);
        let sregs = SpecialRegisters {
            cs: from_kvm_segment(&s.cs),
            ds: from_kvm_segment(&s.ds),
            es: from_kvm_segment(&s.es),
            fs: from_kvm_segment(&s.fs),
            gs: from_kvm_segment(&s.gs),
            ss: from_kvm_segment(&s.ss),
            tr: from_kvm_segment(&s.tr),
            ldt: from_kvm_segment(&s.ldt),
            gdt: DescriptorTable {
                base: s.gdt.base,
                limit: s.gdt.limit,
            },
            idt: DescriptorTable {
                base: s.idt.base,
                limit: s.idt.limit,
            },
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        };
        Ok((regs, sregs))
    }

    fn init_fpu(&mut self) -> Result<()> {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(op("KVM_SET_FPU"))
    }

    fn init_local_apic(&mut self) -> Result<()> {
        let mut lapic = self.fd.get_lapic().map_err(op("KVM_GET_LAPIC"))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
        self.fd.set_lapic(&lapic).map_err(op("KVM_SET_LAPIC"))
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        Arc::new(KvmKicker {
            thread: self.thread,
        })
    }

    fn run(&mut self) -> Result<VcpuExit<'_>> {
        use kvm_ioctls::VcpuExit as K;
        match self.fd.run() {
            Ok(exit) => Ok(match exit {
                K::IoIn(port, data) => VcpuExit::IoIn { port, data },
                K::IoOut(port, data) => VcpuExit::IoOut { port, data },
                K::MmioRead(addr, data) => VcpuExit::MmioRead { addr, data },
                K::MmioWrite(addr, data) => VcpuExit::MmioWrite { addr, data },
                // The in-kernel local APIC handles HLT inside KVM_RUN (the contract of
                // `Vcpu::run`); KVM exits for it only without one, which never happens here.
                K::Hlt => VcpuExit::Unhandled("HLT without an in-kernel local APIC".into()),
                K::Shutdown => VcpuExit::Shutdown,
                K::Intr => VcpuExit::Interrupted,
                K::FailEntry(reason, _) => VcpuExit::FailEntry { reason },
                K::InternalError => VcpuExit::InternalError,
                K::SystemEvent(kind, _) if kind == KVM_SYSTEM_EVENT_RESET => VcpuExit::SystemReset,
                K::SystemEvent(kind, _) if kind == KVM_SYSTEM_EVENT_SHUTDOWN => {
                    VcpuExit::SystemShutdown
                }
                other => VcpuExit::Unhandled(format!("{other:?}")),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VcpuExit::Interrupted)
            }
            Err(e) => Err(op("KVM_RUN")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_significant_index_flag_crosses_the_boundary() {
        let kvm = kvm_bindings::kvm_cpuid_entry2 {
            function: 0xb,
            index: 1,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX | kvm_bindings::KVM_CPUID_FLAG_STATEFUL_FUNC,
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
            ..Default::default()
        };
        let e = from_kvm_cpuid(&kvm);
        assert!(e.significant_index);
        assert_eq!(
            (e.function, e.index, e.eax, e.ebx, e.ecx, e.edx),
            (0xb, 1, 1, 2, 3, 4)
        );
        let back = to_kvm_cpuid(&e);
        assert_eq!(back.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_eq!((back.eax, back.ebx, back.ecx, back.edx), (1, 2, 3, 4));
        let plain = CpuidEntry {
            function: 1,
            ..Default::default()
        };
        assert!(!from_kvm_cpuid(&to_kvm_cpuid(&plain)).significant_index);
        assert_eq!(to_kvm_cpuid(&plain).flags, 0);
    }

    #[test]
    fn lvt_mode_keeps_other_bits() {
        let mut regs = [0 as libc::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 1] = 0x01; // fixed mode 1 in bits 8-10, must be replaced
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        // A register that would run past the page is left alone, not half-written.
        regs[1022] = 0x11;
        regs[1023] = 0x22;
        let before = regs;
        set_lvt_mode(&mut regs, 1022, APIC_MODE_NMI);
        assert_eq!(regs, before);
    }
}
