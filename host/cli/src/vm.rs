//! `berth vm run`: boots one micro-VM from flags or a JSON config, in the foreground.
//! `berth vmm --config FILE` (hidden): the same from a JSON `VmConfig` only, the entry point
//! the container runtime uses to start one VMM process per container.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_vmm::{parse_memory, ConsoleConfig, DiskConfig, VmConfig, VmOutcome, VsockConfig};
use clap::{Args, Subcommand};

/// Micro-VM commands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a micro-VM and run it until the guest reboots, powers off or dies.
    ///
    /// Exits 0 when the guest reboots or powers off (or on SIGTERM), 1 when it panics,
    /// triple-faults or cannot start; the reason and the last console lines go to stderr.
    Run(RunArgs),
}

/// Flags of `berth vm run`. With `--config`, the JSON is read first and flags override it.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest kernel: uncompressed vmlinux with a PVH note (scripts/build-kernel.sh).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk (cpio, gzip or zstd).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Extra kernel command line, after berth's defaults ("console=ttyS0 reboot=k panic=-1 quiet ...").
    #[arg(long)]
    cmdline: Option<String>,
    /// Guest memory, e.g. 256M or 1G.
    #[arg(long, value_parser = parse_memory_arg)]
    memory: Option<u64>,
    /// Number of vCPUs.
    #[arg(long)]
    cpus: Option<u8>,
    /// A virtio-blk disk: ro:FILE or rw:FILE (repeatable; /dev/vda, /dev/vdb, ... in order).
    #[arg(long = "disk", value_parser = parse_disk_arg)]
    disks: Vec<DiskConfig>,
    /// Host Unix socket of a virtio-vsock device (guest CID 3 unless --vsock-cid).
    #[arg(long)]
    vsock: Option<PathBuf>,
    /// Guest CID of the vsock device.
    #[arg(long, requires = "vsock")]
    vsock_cid: Option<u64>,
    /// Write the serial console to FILE instead of stdout.
    #[arg(long)]
    console: Option<PathBuf>,
    /// Leave out the virtio-rng device.
    #[arg(long)]
    no_rng: bool,
    /// Read the VM description from a JSON file (a berth VmConfig).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the resulting JSON config and exit without booting.
    #[arg(long)]
    print_config: bool,
}

/// Flags of the hidden `berth vmm`.
#[derive(Debug, Args)]
pub struct VmmArgs {
    /// JSON VmConfig file, or - for standard input.
    #[arg(long)]
    config: PathBuf,
}

fn parse_memory_arg(s: &str) -> Result<u64, String> {
    parse_memory(s).map_err(|e| e.to_string())
}

fn parse_disk_arg(s: &str) -> Result<DiskConfig, String> {
    s.parse::<DiskConfig>().map_err(|e| e.to_string())
}

fn config_from(args: RunArgs) -> anyhow::Result<VmConfig> {
    let mut config = match (&args.config, &args.kernel) {
        (Some(path), _) => VmConfig::read(path)?,
        (None, Some(kernel)) => VmConfig::new(kernel),
        (None, None) => anyhow::bail!("give --kernel (or --config with a JSON VM description)"),
    };
    if let Some(k) = args.kernel {
        config.kernel = k;
    }
    if args.initrd.is_some() {
        config.initrd = args.initrd;
    }
    if let Some(c) = args.cmdline {
        config.cmdline = c;
    }
    if let Some(m) = args.memory {
        config.memory_mib = m;
    }
    if let Some(c) = args.cpus {
        config.cpus = c;
    }
    if !args.disks.is_empty() {
        config.disks = args.disks;
    }
    if let Some(socket) = args.vsock {
        config.vsock = Some(VsockConfig {
            socket,
            guest_cid: args
                .vsock_cid
                .unwrap_or(berth_vmm::config::DEFAULT_GUEST_CID),
        });
    }
    if let Some(path) = args.console {
        config.console = ConsoleConfig::File(path);
    }
    if args.no_rng {
        config.rng = false;
    }
    Ok(config)
}

fn report(outcome: &VmOutcome) -> ExitCode {
    tracing::info!("VM ended: {}", outcome.reason);
    let _ = outcome.report(&mut std::io::stderr());
    ExitCode::from(outcome.exit_code())
}

fn boot(config: &VmConfig) -> ExitCode {
    match berth_vmm::run(config) {
        Ok(outcome) => report(&outcome),
        Err(e) => {
            eprintln!("berth: cannot run the VM: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `berth vm ...`.
pub fn main(cmd: VmCommand) -> ExitCode {
    match cmd {
        VmCommand::Run(args) => {
            let print = args.print_config;
            match config_from(args) {
                Ok(config) if print => {
                    println!("{}", config.to_json());
                    ExitCode::SUCCESS
                }
                Ok(config) => boot(&config),
                Err(e) => {
                    eprintln!("berth: {}", berth_engine::chain_message(e.as_ref()));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs the hidden `berth vmm --config FILE`.
pub fn vmm_main(args: VmmArgs) -> ExitCode {
    match VmConfig::read(&args.config) {
        Ok(config) => boot(&config),
        Err(e) => {
            eprintln!("berth: {}", berth_engine::chain_message(&e));
            ExitCode::FAILURE
        }
    }
}
