//! berth: docker-like CLI for Linux containers, each in its own micro-VM.

use std::process::ExitCode;

mod containers;
mod images;
mod vm;

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
    #[command(flatten)]
    Container(containers::ContainerCommand),
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Run a micro-VM by hand (kernel, initrd, disks, vsock).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Run one VMM from a JSON VmConfig (used by berth itself, one process per VM).
    #[command(hide = true)]
    Vmm(vm::VmmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Container(c) => return containers::main(c),
        Command::Vm(c) => return vm::main(c),
        Command::Vmm(a) => return vm::vmm_main(a),
        Command::Image(c) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(images::run(c))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
