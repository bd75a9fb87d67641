//! berth: docker-like CLI for Linux containers, each in its own micro-VM.

use std::process::ExitCode;

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
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {}
}
