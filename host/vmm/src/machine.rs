//! The x86-64 machine on a Unix host: guest memory, the boot, the devices and the vCPU
//! threads, run to the VM's end on any [`Hypervisor`].
//!
//! x86-64 only, as linux-loader's PVH and ELF loaders are (an arm64 guest needs its own
//! boot); Unix only, because the boot reads the kernel and initrd straight into guest
//! memory through vm-memory's `rawfd`, which Windows lacks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use berth_hypervisor::{Hypervisor, Vm};

use crate::error::{ConfigError, VmmError};
use crate::{config, devices, kernel_cmdline, signals, vcpu, x86_64};
use crate::{ExitReason, GuestMemory, VmConfig, VmOutcome, HIDE_X2APIC_ENV};

/// What a vCPU or device reports to the VMM's main thread.
#[derive(Debug)]
pub(crate) enum VmEvent {
    /// The guest reset the machine (i8042 or hypervisor reset).
    Reset,
    /// The guest powered off.
    PowerOff,
    /// A vCPU triple-faulted; where it was, when the registers could be read.
    TripleFault(u32, String),
    /// A vCPU failed.
    VcpuError(u32, String),
}

/// How long the VMM waits for a vCPU thread to leave the guest when stopping.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `config` on `hypervisor` (already validated).
pub fn run_on<H: Hypervisor>(hypervisor: &H, config: &VmConfig) -> Result<VmOutcome, VmmError>
where
    H::Vm: 'static,
{
    run_prepared(hypervisor, config, prepare(config)?)
}

/// What a VM needs before any hypervisor is opened: its memory, with the kernel in it.
#[derive(Debug)]
pub(crate) struct Prepared {
    mem: GuestMemory,
    kernel: x86_64::boot::LoadedKernel,
}

/// Allocates the guest memory of `config` and loads its kernel there: linux-loader's load
/// is the check that the kernel is one berth can boot, so a bad kernel is refused before a
/// hypervisor is opened.
pub(crate) fn prepare(config: &VmConfig) -> Result<Prepared, VmmError> {
    let mem = x86_64::boot::create_memory(config.memory_mib)?;
    let kernel = x86_64::boot::load_kernel(&mem, &config.kernel)?;
    Ok(Prepared { mem, kernel })
}

/// Runs `config` on `hypervisor` with its memory and kernel already [`prepare`]d.
pub(crate) fn run_prepared<H: Hypervisor>(
    hypervisor: &H,
    config: &VmConfig,
    prepared: Prepared,
) -> Result<VmOutcome, VmmError>
where
    H::Vm: 'static,
{
    let started = Instant::now();
    let Prepared { mem, kernel } = prepared;
    if usize::from(config.cpus) > hypervisor.max_vcpus() {
        return Err(ConfigError::BadCpus {
            cpus: config.cpus,
            max: hypervisor.max_vcpus().min(usize::from(config::MAX_CPUS)) as u8,
        }
        .into());
    }
    let vm = Arc::new(hypervisor.create_vm()?);
    map_memory(vm.as_ref(), &mem)?;

    let (events_tx, events) = channel();
    let devices = devices::build(vm.as_ref(), &mem, config, events_tx.clone())?;
    let cmdline = kernel_cmdline(config, &devices.cmdline);
    tracing::debug!(%cmdline, "kernel command line");
    let boot = x86_64::boot::load(
        &mem,
        &kernel,
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
