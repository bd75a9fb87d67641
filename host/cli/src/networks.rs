//! `berth network`: user-defined networks, on which containers reach each other by name.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use berth_engine::Engine;
use clap::Subcommand;

use crate::format::{parse_labels, print_table};

/// Network commands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create {
        /// Subnet in CIDR form (default: a free 10.89.N.0/24)
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Network driver (berth joins its micro-VMs with its own; docker's name is bridge)
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// Set metadata on the network (KEY=VALUE)
        #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The network's name
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Do not truncate the IDs
        #[arg(long)]
        no_trunc: bool,
    },
    /// Display detailed information on networks, as JSON
    Inspect {
        /// The networks (names or IDs)
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (refused while a container is on one: remove it first)
    #[command(alias = "remove")]
    Rm {
        /// Accepted for docker's sake: a network in use is never removed
        #[arg(short = 'f', long)]
        force: bool,
        /// The networks
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove the networks no container is on
    Prune {
        /// Do not ask for confirmation
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Connect a container that is not running to a network
    Connect {
        /// Add a name for the container on the network
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// The network
        network: String,
        /// The container
        container: String,
    },
    /// Disconnect a container that is not running from a network
    Disconnect {
        /// Accepted for docker's sake
        #[arg(short = 'f', long)]
        force: bool,
        /// The network
        network: String,
        /// The container
        container: String,
    },
}

/// Runs a network command.
pub fn run(cmd: NetworkCommand) -> Result<()> {
    let engine = Engine::open()?;
    match cmd {
        NetworkCommand::Create {
            subnet,
            driver,
            labels,
            name,
        } => {
            if driver != "bridge" {
                bail!("network driver \"{driver}\" is not available: berth has the bridge driver");
            }
            let n = engine.network_create(&name, subnet.as_deref(), parse_labels(&labels))?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls { quiet, no_trunc } => {
            let list = engine.network_list()?;
            let id = |n: &berth_engine::Network| {
                if no_trunc {
                    n.id.clone()
                } else {
                    n.short_id().to_string()
                }
            };
            let mut out = std::io::stdout().lock();
            if quiet {
                for (n, _) in &list {
                    writeln!(out, "{}", id(n))?;
                }
                return Ok(());
            }
            let mut rows = vec![["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]
                .map(String::from)
                .to_vec()];
            rows.extend(list.iter().map(|(n, _)| {
                vec![
                    id(n),
                    n.name.clone(),
                    "bridge".into(),
                    "local".into(),
                    n.cidr(),
                ]
            }));
            print_table(&mut out, &rows)?;
        }
        NetworkCommand::Inspect { networks } => {
            // The Docker API's document, so that both front doors show one format.
            let mut out = Vec::new();
            for key in &networks {
                let n = engine.network(key)?;
                let on = engine.network_users(&n)?;
                out.push(berth_docker_api::networks::network_json(
                    berth_docker_backend::networks::info(n, &on),
                ));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm { force: _, networks } => {
            let mut failed = false;
            for n in &networks {
                match engine.network_remove(n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("berth: {}", e.message());
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("some networks were not removed");
            }
        }
        NetworkCommand::Prune { force } => {
            if !force {
                eprint!("WARNING! This will remove all networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(());
                }
            }
            let removed = engine.network_prune()?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in &removed {
                    println!("{n}");
                }
            }
        }
        NetworkCommand::Connect {
            aliases,
            network,
            container,
        } => engine.network_connect(&network, &container, &aliases)?,
        NetworkCommand::Disconnect {
            force: _,
            network,
            container,
        } => engine.network_disconnect(&network, &container)?,
    }
    Ok(())
}
