//! `berth-vmm`: the small VMM process, one per micro-VM.
//!
//! ```text
//! berth-vmm --config FILE     boot the VM described by a JSON VmConfig (FILE may be -)
//! ```
//!
//! It is the same VMM as `berth vm run` without the rest of the CLI linked in, so its own
//! memory footprint stays small. Exit status: 0 when the guest rebooted, powered off or the
//! VMM got SIGTERM; 1 when the guest panicked or crashed, or the VM could not start (the
//! reason and the last console lines are printed on stderr); 2 on a usage error.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: berth-vmm --config FILE   (a JSON VmConfig; - reads standard input)";

/// Logs go to stderr (the container's `vmm.log`), at the level `BERTH_LOG` names
/// (`error`, `warn`, `info`, `debug`, `trace`; `warn` by default).
fn install_logging() {
    let level = std::env::var("BERTH_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    install_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" => path.clone(),
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match berth_vmm::VmConfig::read(Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-vmm: {e}");
            return ExitCode::FAILURE;
        }
    };
    match berth_vmm::run(&config) {
        Ok(outcome) => {
            let _ = outcome.report(&mut std::io::stderr());
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("berth-vmm: cannot run the VM: {e}");
            ExitCode::FAILURE
        }
    }
}
