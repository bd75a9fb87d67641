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
#[cfg(all(target_arch = "x86_64", unix))]
mod devices;
pub mod error;
#[cfg(all(target_arch = "x86_64", unix))]
mod machine;
pub mod signals;
#[cfg(all(target_arch = "x86_64", unix))]
mod vcpu;
pub mod x86_64;

pub use config::{
    parse_memory, ConsoleConfig, DiskConfig, NetBackendConfig, NetConfig, PortProtocol,
    PublishedPort, ShareConfig, VmConfig, VsockConfig,
};
pub use error::{ConfigError, VmmError};
#[cfg(all(target_arch = "x86_64", unix))]
pub use machine::run_on;
#[cfg(all(target_arch = "x86_64", unix))]
use machine::VmEvent;
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

/// Validates `config`, boots the VM on KVM and runs it to its end.
///
/// Installs SIGTERM/SIGINT handlers (see [`signals`]) that stop the VM.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn run(config: &VmConfig) -> Result<VmOutcome, VmmError> {
    config.validate()?;
    let prepared = machine::prepare(config)?;
    signals::install();
    let hypervisor = berth_hypervisor::kvm::KvmHypervisor::new()?;
    machine::run_prepared(&hypervisor, config, prepared)
}

/// Validates `config`, then fails: berth has a hypervisor backend (KVM) and a boot (x86-64)
/// for x86-64 Linux hosts only, so far.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn run(config: &VmConfig) -> Result<VmOutcome, VmmError> {
    config.validate()?;
    Err(VmmError::UnsupportedHost {
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
    })
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
