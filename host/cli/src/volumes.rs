//! `berth volume`: named volumes that outlive containers.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use berth_engine::Engine;
use berth_units::human_size;
use clap::Subcommand;

use crate::format::{parse_labels, print_table};

/// Volume commands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given)
    Create {
        /// Set metadata on the volume (KEY=VALUE)
        #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Volume driver (berth has the local one)
        #[arg(short = 'd', long, default_value = "local")]
        driver: String,
        /// The volume's name
        name: Option<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only display volume names
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Display detailed information on volumes, as JSON
    Inspect {
        /// The volumes
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one: remove it first)
    #[command(alias = "remove")]
    Rm {
        /// Accepted for docker's sake: a volume in use is never removed
        #[arg(short = 'f', long)]
        force: bool,
        /// The volumes
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the volumes no container uses (anonymous ones; with -a, all)
    Prune {
        /// Remove named volumes too
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not ask for confirmation
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// Runs a volume command.
pub fn run(cmd: VolumeCommand) -> Result<()> {
    let engine = Engine::open()?;
    match cmd {
        VolumeCommand::Create {
            labels,
            driver,
            name,
        } => {
            if driver != "local" {
                bail!("volume driver \"{driver}\" is not available: berth has the local driver");
            }
            let v = engine.volume_create(name.as_deref(), parse_labels(&labels))?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls { quiet } => {
            let list = engine.volume_list()?;
            let mut out = std::io::stdout().lock();
            if quiet {
                for (v, _) in &list {
                    writeln!(out, "{}", v.name)?;
                }
                return Ok(());
            }
            let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
            rows.extend(
                list.iter()
                    .map(|(v, _)| vec!["local".to_string(), v.name.clone()]),
            );
            print_table(&mut out, &rows)?;
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                let (v, data) = engine.volume(n)?;
                out.push(serde_json::json!({
                    "CreatedAt": berth_units::rfc3339_nano(v.created.saturating_mul(1_000_000_000)),
                    "Driver": "local",
                    "Labels": v.labels,
                    "Mountpoint": data,
                    "Name": v.name,
                    "Options": {},
                    "Scope": "local",
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { force: _, names } => {
            let mut failed = false;
            for n in &names {
                match engine.volume_remove(n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("berth: {}", e.message());
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("some volumes were not removed");
            }
        }
        VolumeCommand::Prune { all, force } => {
            if !force {
                let what = if all {
                    "all volumes"
                } else {
                    "all anonymous volumes"
                };
                eprint!("WARNING! This will remove {what} not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(());
                }
            }
            let (removed, bytes) = engine.volume_prune(all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(bytes));
        }
    }
    Ok(())
}
