//! berth: docker-like CLI for Linux containers, each in its own micro-VM.
//!
//! Containers, user-defined networks and the Docker API service are for Unix hosts only:
//! they drive the engine's container runtime and its Unix sockets (see `berth_engine`).
//! Elsewhere the CLI has images, volumes and `vm`.

use std::process::ExitCode;

#[cfg(unix)]
mod build;
#[cfg(unix)]
mod containers;
mod format;
mod images;
#[cfg(unix)]
mod networks;
#[cfg(unix)]
mod system;
mod terminal;
mod vm;
mod volumes;

use clap::{Parser, Subcommand};

/// Linux containers, each in its own lightweight micro-VM.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
struct Cli {
    /// Log level filter (for example `debug` or `berth_vmm=trace`); BERTH_LOG works too.
    #[arg(long, global = true, env = "BERTH_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[cfg(unix)]
    #[command(flatten)]
    Container(containers::ContainerCommand),
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Build an image from a Dockerfile, each RUN step in a micro-VM
    #[cfg(unix)]
    Build(Box<build::BuildArgs>),
    /// Manage the build cache
    #[cfg(unix)]
    #[command(subcommand)]
    Builder(build::BuilderCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage user-defined networks
    #[cfg(unix)]
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// berth as a service: the Docker Engine API
    #[cfg(unix)]
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Run a micro-VM by hand (kernel, initrd, disks, vsock).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Run one VMM from a JSON VmConfig (used by berth itself, one process per VM).
    #[command(hide = true)]
    Vmm(vm::VmmArgs),
}

/// Runs `f` on a fresh multi-threaded async runtime.
fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    // docker's status for a bad flag or argument is 125; help and version are no errors.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.use_stderr() {
                true => ExitCode::from(berth_engine::EXIT_BERTH_FAILED),
                false => ExitCode::SUCCESS,
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        #[cfg(unix)]
        Command::Container(c) => return containers::main(c),
        #[cfg(unix)]
        Command::Build(a) => return build::main(*a),
        #[cfg(unix)]
        Command::Builder(c) => return build::builder_main(c),
        Command::Vm(c) => return vm::main(c),
        Command::Vmm(a) => return vm::vmm_main(a),
        Command::Image(c) => block_on(images::run(c)),
        #[cfg(unix)]
        Command::System(c) => block_on(system::run(c)),
        Command::Volume(c) => volumes::run(c),
        #[cfg(unix)]
        Command::Network(c) => networks::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {}", berth_engine::chain_message(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
