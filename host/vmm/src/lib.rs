//! The berth micro-VM monitor: boot, memory, vCPUs and the device bus.
//!
//! [`run`] takes a [`VmConfig`] (plain data, from flags or JSON), checks it against the host,
//! builds the VM on the KVM backend of `berth-hypervisor` and runs it until the guest
//! reboots or powers off, dies, or the process is told to stop (SIGTERM/SIGINT). One VM
//! per process: the lead's container runtime starts one VMM process per container
//! (`berth vmm --config FILE`).
//!
//! The guest boots the uncompressed `vmlinux` through its PVH entry with an initrd and a
//! command line, sees an e820 map, an MP table for its vCPUs (no ACPI), a filtered CPUID
//! with kvmclock, an 8250 console, the i8042 reset line and virtio-mmio devices announced
//! on the command line.

pub mod config;
mod devices;
pub mod error;
pub mod kernel;
pub mod signals;
mod vcpu;
pub mod x86_64;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use berth_hypervisor::{Hypervisor, Vm};

pub use config::{
    parse_memory, ConsoleConfig, DiskConfig, NetBackendConfig, NetConfig, PortProtocol,
    PublishedPort, ShareConfig, VmConfig, VsockConfig,
};
pub use error::{ConfigError, VmmError};
pub use x86_64::layout::MAX_VIRTIO_DEVICES;

/// Guest memory as the devices see it.
pub type GuestMemory = berth_devices::GuestMemory;

/// The kernel command line berth always passes (before device entries and the user's):
/// serial console, reboot through the i8042 reset line, reboot at once on panic, quiet
/// boot, and no probing of a keyboard or mouse that does not exist.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 quiet i8042.noaux i8042.nomux i8042.dumbkbd";

/// Environment variable that hides x2apic from the guest when set to 1.
pub const HIDE_X2APIC_ENV: &str = "BERTH_HIDE_X2APIC";

/// What a vCPU or device reports to the VMM's main thread.
#[derive(Debug)]
pub(crate) enum VmEvent {
    /// The guest reset the machine (i8042 or hypervisor reset).
    Reset,
    /// The guest powered off.
    PowerOff,
    /// A vCPU triple-faulted; where it was, when the registers could be read.
    TripleFault(u32, String),
    /// A vCPU halted with no way to wake it.
    Halted(u32),
    /// A vCPU failed.
    VcpuError(u32, String),
}

/// Why the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest rebooted (`reboot -f`: berth VMs end on reboot).
    Reboot,
    /// The guest powered off.
    PowerOff,
    /// The guest kernel panicked.
    KernelPanic,
    /// A vCPU triple-faulted (the guest reset the CPU abnormally).
    TripleFault {
        /// The vCPU.
        vcpu: u32,
        /// Its registers at the fault (RIP, RSP, control registers), or why unknown.
        state: String,
    },
    /// A vCPU halted with interrupts off.
    Halted {
        /// The vCPU.
        vcpu: u32,
    },
    /// The VMM was told to stop (SIGTERM or SIGINT).
    Stopped,
    /// A vCPU failed in the hypervisor.
    VcpuError {
        /// The vCPU.
        vcpu: u32,
        /// What happened.
        error: String,
    },
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reboot => write!(f, "the guest rebooted"),
            ExitReason::PowerOff => write!(f, "the guest powered off"),
            ExitReason::KernelPanic => write!(f, "the guest kernel panicked"),
            ExitReason::TripleFault { vcpu, state } => {
                write!(
                    f,
                    "vCPU {vcpu} triple-faulted (the guest crashed) at {state}"
                )
            }
            ExitReason::Halted { vcpu } => write!(f, "vCPU {vcpu} halted with interrupts off"),
            ExitReason::Stopped => write!(f, "the VMM was told to stop"),
            ExitReason::VcpuError { vcpu, error } => write!(f, "vCPU {vcpu} failed: {error}"),
        }
    }
}

/// How a VM run ended.
#[derive(Clone, Debug)]
pub struct VmOutcome {
    /// Why.
    pub reason: ExitReason,
    /// The last lines of the guest console, oldest first.
    pub console_tail: Vec<String>,
}

impl VmOutcome {
    /// Whether the VM ended the way a finished guest ends (reboot, power-off, or a requested
    /// stop).
    pub fn success(&self) -> bool {
        matches!(
            self.reason,
            ExitReason::Reboot | ExitReason::PowerOff | ExitReason::Stopped
        )
    }

    /// The process exit status for this outcome: 0 on success, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.success())
    }

    /// Writes what a user needs when the VM failed: the reason and the last console lines.
    /// Writes nothing on success.
    pub fn report(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        if self.success() {
            return Ok(());
        }
        writeln!(w, "berth: the VM failed: {}", self.reason)?;
        if !self.console_tail.is_empty() {
            writeln!(w, "berth: last console lines:")?;
            for line in &self.console_tail {
                writeln!(w, "  | {line}")?;
            }
        }
        Ok(())
    }
}

/// The full kernel command line for `config` with the devices' entries.
pub fn kernel_cmdline(config: &VmConfig, device_entries: &[String]) -> String {
    let mut parts = vec![DEFAULT_CMDLINE.to_string()];
    parts.extend(device_entries.iter().cloned());
    if !config.cmdline.trim().is_empty() {
        parts.push(config.cmdline.trim().to_string());
    }
    parts.join(" ")
}

/// How long the VMM waits for a vCPU thread to leave the guest when stopping.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Validates `config`, boots the VM on KVM and runs it to its end.
///
/// Installs SIGTERM/SIGINT handlers (see [`signals`]) that stop the VM.
#[cfg(target_os = "linux")]
pub fn run(config: &VmConfig) -> Result<VmOutcome, VmmError> {
    config.validate()?;
    signals::install();
    let hypervisor = berth_hypervisor::kvm::KvmHypervisor::new()?;
    run_on(&hypervisor, config)
}

/// Runs `config` on `hypervisor` (already validated).
pub fn run_on<H: Hypervisor>(hypervisor: &H, config: &VmConfig) -> Result<VmOutcome, VmmError>
where
    H::Vm: 'static,
{
    let started = Instant::now();
    if usize::from(config.cpus) > hypervisor.max_vcpus() {
        return Err(ConfigError::BadCpus {
            cpus: config.cpus,
            max: hypervisor.max_vcpus().min(usize::from(config::MAX_CPUS)) as u8,
        }
        .into());
    }
    let vm = Arc::new(hypervisor.create_vm()?);
    let mem = x86_64::boot::create_memory(config.memory_mib)?;
    map_memory(vm.as_ref(), &mem)?;

    let (events_tx, events) = channel();
    let devices = devices::build(vm.as_ref(), &mem, config, events_tx.clone())?;
    let cmdline = kernel_cmdline(config, &devices.cmdline);
    tracing::debug!(%cmdline, "kernel command line");
    let boot = x86_64::boot::load(
        &mem,
        &config.kernel,
        config.initrd.as_deref(),
        &cmdline,
        config.cpus,
    )?;

    let supported = hypervisor.supported_cpuid()?;
    let hide_x2apic = std::env::var(HIDE_X2APIC_ENV).is_ok_and(|v| v == "1");
    let stop = Arc::new(AtomicBool::new(false));
    let pio = Arc::new(devices.pio.clone());
    let mmio = Arc::new(devices.mmio.clone());
    let start = Arc::new(Barrier::new(usize::from(config.cpus) + 1));
    let (ready_tx, ready) = channel();
    let mut threads = Vec::new();
    for id in 0..config.cpus {
        let ctx = vcpu::VcpuContext {
            id: u32::from(id),
            cpuid: x86_64::cpuid::filter(
                &supported,
                x86_64::cpuid::CpuidOptions {
                    cpu: id,
                    cpu_count: config.cpus,
                    hide_x2apic,
                },
            ),
            boot: (id == 0).then_some(boot),
            pio: pio.clone(),
            mmio: mmio.clone(),
            stop: stop.clone(),
            events: events_tx.clone(),
        };
        let vm = vm.clone();
        let ready = ready_tx.clone();
        let start = start.clone();
        let handle = std::thread::Builder::new()
            .name(format!("berth-vcpu{id}"))
            .spawn(move || vcpu::thread_main(vm, ctx, ready, start))
            .map_err(VmmError::Thread)?;
        threads.push(handle);
    }
    drop(events_tx);
    drop(ready_tx);

    let mut kickers: Vec<Option<Arc<dyn berth_hypervisor::VcpuKicker>>> =
        vec![None; usize::from(config.cpus)];
    let mut setup_error = None;
    for _ in 0..config.cpus {
        match ready.recv() {
            Ok((id, Ok(k))) => {
                if let Some(slot) = kickers.get_mut(id as usize) {
                    *slot = Some(k);
                }
            }
            Ok((id, Err(reason))) => {
                setup_error.get_or_insert(VmmError::VcpuSetup { id, reason });
            }
            Err(_) => {
                setup_error.get_or_insert(VmmError::VcpuSetup {
                    id: 0,
                    reason: "a vCPU thread died".into(),
                });
            }
        }
    }
    if setup_error.is_some() {
        stop.store(true, Ordering::SeqCst);
    }
    start.wait();
    tracing::debug!(elapsed = ?started.elapsed(), "vCPUs started");

    let reason = match setup_error {
        Some(_) => None,
        None => Some(wait_for_end(&events)),
    };

    stop.store(true, Ordering::SeqCst);
    stop_threads(threads, &kickers);
    let mut serial = devices
        .serial
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    serial.finish();
    drop(serial);
    if let Some(e) = setup_error {
        return Err(e);
    }
    let mut reason = reason.unwrap_or(ExitReason::Stopped);
    if devices.console.panicked() && reason != ExitReason::Stopped {
        reason = ExitReason::KernelPanic;
    }
    Ok(VmOutcome {
        reason,
        console_tail: devices.console.last_lines(),
    })
}

fn map_memory<V: Vm>(vm: &V, mem: &GuestMemory) -> Result<(), VmmError> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| VmmError::Memory {
                mib: region.len() >> 20,
                reason: e.to_string(),
            })?;
        // SAFETY: the region is a live anonymous mapping owned by `mem`, which the VMM keeps
        // (through the devices and the caller) until the vCPU threads are joined; slots do
        // not overlap because the regions of a GuestMemoryMmap do not.
        unsafe { vm.map_memory(slot as u32, region.start_addr().0, region.len(), host) }?;
    }
    Ok(())
}

/// Waits for a vCPU's report or a stop request.
fn wait_for_end(events: &std::sync::mpsc::Receiver<VmEvent>) -> ExitReason {
    loop {
        if signals::stop_requested() {
            return ExitReason::Stopped;
        }
        match events.recv_timeout(Duration::from_millis(50)) {
            Ok(VmEvent::Reset) => return ExitReason::Reboot,
            Ok(VmEvent::PowerOff) => return ExitReason::PowerOff,
            Ok(VmEvent::TripleFault(vcpu, state)) => {
                return ExitReason::TripleFault { vcpu, state }
            }
            Ok(VmEvent::Halted(vcpu)) => return ExitReason::Halted { vcpu },
            Ok(VmEvent::VcpuError(vcpu, error)) => return ExitReason::VcpuError { vcpu, error },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return ExitReason::Stopped,
        }
    }
}

/// Kicks every vCPU out of the guest until its thread ends, then joins it.
fn stop_threads(
    threads: Vec<std::thread::JoinHandle<()>>,
    kickers: &[Option<Arc<dyn berth_hypervisor::VcpuKicker>>],
) {
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && threads.iter().any(|t| !t.is_finished()) {
        for (t, k) in threads.iter().zip(kickers) {
            if let (false, Some(k)) = (t.is_finished(), k) {
                k.kick();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for (i, handle) in threads.into_iter().enumerate() {
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::error!(vcpu = i, "vCPU thread did not stop; leaving it behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_order() {
        let mut c = VmConfig::new("/k");
        c.cmdline = " init=/init -- arg ".into();
        let line = kernel_cmdline(&c, &["virtio_mmio.device=4K@0xd0000000:5".into()]);
        assert_eq!(
            line,
            format!("{DEFAULT_CMDLINE} virtio_mmio.device=4K@0xd0000000:5 init=/init -- arg")
        );
    }

    #[test]
    fn outcomes() {
        let o = |reason| VmOutcome {
            reason,
            console_tail: vec![],
        };
        assert_eq!(o(ExitReason::Reboot).exit_code(), 0);
        assert_eq!(o(ExitReason::Stopped).exit_code(), 0);
        assert_eq!(o(ExitReason::KernelPanic).exit_code(), 1);
        assert_eq!(
            o(ExitReason::TripleFault {
                vcpu: 0,
                state: String::new()
            })
            .exit_code(),
            1
        );
        assert!(o(ExitReason::TripleFault {
            vcpu: 1,
            state: "RIP=0x10".into()
        })
        .reason
        .to_string()
        .contains("triple-faulted"));
        let mut out = Vec::new();
        o(ExitReason::Reboot).report(&mut out).unwrap();
        assert!(out.is_empty());
        let failed = VmOutcome {
            reason: ExitReason::KernelPanic,
            console_tail: vec!["Kernel panic - not syncing: x".into()],
        };
        failed.report(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("the guest kernel panicked"));
        assert!(text.contains("  | Kernel panic - not syncing: x"));
    }
}

#[cfg(test)]
mod fake_tests;
