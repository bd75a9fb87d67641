//! Container commands: `run`, `exec`, `ps`, `logs`, `stop`, `rm` and the rest, each
//! container in its own micro-VM.

mod lifecycle;
mod manage;
mod stdio;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use berth_engine::{mounts, net, CreateOptions, EXIT_BERTH_FAILED};
use clap::{Args, Subcommand};

/// Options shared by `run` and `create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to take it from this environment)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID, with an optional group: USER[:GROUP]
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Overwrite the image's default entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Number of CPUs (the micro-VM's vCPUs and the container's cpu.max)
    #[arg(long, default_value = "1")]
    pub cpus: f64,
    /// Memory limit (for example 512m or 1g); the micro-VM is sized to fit it
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Tune the container's pids limit (pids.max); -1 for unlimited
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Set metadata on the container (KEY=VALUE, or KEY for an empty value)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Connect the container to a network: default (user-mode NAT; also bridge), none, or
    /// a user-defined network (berth network create)
    #[arg(long, alias = "net", value_name = "NAME")]
    pub network: Option<String>,
    /// Add a name for the container on its user-defined network
    #[arg(long = "network-alias", alias = "net-alias", value_name = "NAME")]
    pub network_aliases: Vec<String>,
    /// Set custom DNS servers (default: the gateway's resolver)
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// Add a custom host-to-IP mapping (NAME:IP; IP may be host-gateway)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// Publish a container's port to the host: [IP:]HOST_PORT:CONTAINER_PORT[/udp], or
    /// CONTAINER_PORT for a free host port (host address 0.0.0.0 unless given; TCP
    /// unless /udp)
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:]HOST:CONTAINER[/PROTO]"
    )]
    pub publish: Vec<String>,
    /// Publish every port the image exposes to a free host port
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Bind mount a host folder (from /; made when missing) or mount a named volume:
    /// SOURCE:TARGET[:ro], or TARGET alone for an anonymous volume
    #[arg(short = 'v', long = "volume", value_name = "[SOURCE:]TARGET[:OPTIONS]")]
    pub volumes: Vec<String>,
    /// Attach a mount: type=bind|volume|tmpfs,source=...,target=...[,readonly]
    #[arg(long = "mount", value_name = "type=...,source=...,target=...")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: PATH[:size=64m,mode=1777,noexec,...]
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// The image to run
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `berth run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Run the container in the background and print its ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Print how long each phase of the run took, on stderr
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `berth exec`.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID, with an optional group: USER[:GROUP]
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// The container
    pub container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Container commands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and run a new container from an image, in its own micro-VM
    Run(Box<RunArgs>),
    /// Create a new container without starting it
    Create(Box<CreateArgs>),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// List containers
    Ps {
        /// Show all containers (default shows just running)
        #[arg(short = 'a', long)]
        all: bool,
        /// Only display container IDs
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Fetch the logs of a container
    Logs {
        /// Follow log output
        #[arg(short = 'f', long)]
        follow: bool,
        /// Number of lines to show from the end of the logs
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<String>,
        /// Show timestamps
        #[arg(short = 't', long)]
        timestamps: bool,
        /// The container
        container: String,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after the grace period, then power off
    Stop {
        /// Seconds to wait before killing the container
        #[arg(short = 't', long = "time", default_value = "10")]
        time: u64,
        /// The containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill running containers (SIGKILL unless --signal says otherwise)
    Kill {
        /// Signal to send (name or number)
        #[arg(short = 's', long, default_value = "KILL")]
        signal: String,
        /// The containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Start stopped containers (in the background, or attached with -a)
    Start {
        /// Attach stdout and stderr, and exit with the container's code
        #[arg(short = 'a', long)]
        attach: bool,
        /// Attach stdin too (the container must have been created with -i)
        #[arg(short = 'i', long)]
        interactive: bool,
        /// The containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers
    Restart {
        /// Seconds to wait before killing the container
        #[arg(short = 't', long = "time", default_value = "10")]
        time: u64,
        /// The containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until containers stop, then print their exit codes
    Wait {
        /// The containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Force the removal of a running container (kills it)
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove the anonymous volumes of the container
        #[arg(short = 'v', long)]
        volumes: bool,
        /// The containers
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Display detailed information on containers or images, as JSON
    Inspect {
        /// Containers or images
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Display CPU and memory usage of running containers, from the guest's cgroups
    Stats {
        /// Print one sample and exit
        #[arg(long)]
        no_stream: bool,
        /// The containers (default: all running)
        containers: Vec<String>,
    },
    /// Copy files between a container and the host: CONTAINER:SRC DEST or SRC CONTAINER:DEST
    Cp {
        /// Source
        src: String,
        /// Destination
        dst: String,
    },
    /// List port mappings of a container: all, or the one of PRIVATE_PORT[/PROTO]
    Port {
        /// The container
        container: String,
        /// The container port, with /tcp or /udp
        private_port: Option<String>,
    },
    /// Display the running processes of a container
    Top {
        /// The container
        container: String,
    },
    /// Create a new image from a container's changes
    Commit {
        /// The container
        container: String,
        /// Repository and tag of the new image
        image: String,
    },
    /// Keeps a detached container's logs and records its end (started by `run -d`)
    #[command(name = "container-monitor", hide = true)]
    Monitor {
        /// Stand by while this process (a foreground run) lives; take over if it dies
        #[arg(long, value_name = "PID", conflicts_with = "adopt")]
        standby: Option<u32>,
        /// Take over a running container whose monitor died, writing its log afresh
        #[arg(long)]
        adopt: bool,
        /// Container ID
        id: String,
    },
}

/// Runs a container command; the exit code follows docker's conventions.
pub fn main(cmd: ContainerCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_BERTH_FAILED);
        }
    };
    let result = rt.block_on(async move {
        match cmd {
            ContainerCommand::Run(a) => lifecycle::run(*a).await,
            ContainerCommand::Create(a) => lifecycle::create(*a).await,
            ContainerCommand::Exec(a) => manage::exec(a).await,
            ContainerCommand::Ps { all, quiet } => manage::ps(all, quiet),
            ContainerCommand::Logs {
                follow,
                tail,
                timestamps,
                container,
            } => manage::logs(&container, follow, tail.as_deref(), timestamps).await,
            ContainerCommand::Stop { time, containers } => {
                manage::stop_all(&containers, time).await
            }
            ContainerCommand::Kill { signal, containers } => {
                manage::kill_all(&containers, &signal).await
            }
            ContainerCommand::Start {
                attach,
                interactive,
                containers,
            } => {
                if attach || interactive {
                    let [one] = containers.as_slice() else {
                        anyhow::bail!("you cannot start and attach multiple containers at once");
                    };
                    lifecycle::start_attached(one, interactive).await
                } else {
                    lifecycle::start_all(&containers).await
                }
            }
            ContainerCommand::Restart { time, containers } => {
                manage::stop_all(&containers, time).await?;
                lifecycle::start_all(&containers).await
            }
            ContainerCommand::Wait { containers } => manage::wait_all(&containers).await,
            ContainerCommand::Rm {
                force,
                volumes,
                containers,
            } => manage::rm_all(&containers, force, volumes).await,
            ContainerCommand::Inspect { names } => manage::inspect(&names),
            ContainerCommand::Stats {
                no_stream,
                containers,
            } => manage::stats(&containers, no_stream).await,
            ContainerCommand::Cp { src, dst } => manage::cp(&src, &dst).await,
            ContainerCommand::Top { container } => manage::top(&container).await,
            ContainerCommand::Port {
                container,
                private_port,
            } => manage::port(&container, private_port.as_deref()),
            ContainerCommand::Commit { container, image } => {
                manage::commit(&container, &image).await
            }
            ContainerCommand::Monitor { standby, adopt, id } => {
                lifecycle::monitor(&id, standby, adopt).await
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("berth: {}", berth_engine::chain_message(e.as_ref()));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// docker's exit status for a failure: the engine's (126 and 127 when the executable
/// cannot run or does not exist), else 125.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<berth_engine::Error>())
        .map(berth_engine::Error::exit_code)
        .unwrap_or(EXIT_BERTH_FAILED)
}

/// Environment entries from `-e` and `--env-file`: `KEY=VALUE`, or `KEY` alone to pass
/// this environment's value (skipped when unset), like docker.
fn user_env(args: &CreateArgs) -> Result<Vec<String>> {
    let mut raw = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read the env file {}", file.display()))?;
        raw.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    raw.extend(args.env.iter().cloned());
    let mut out = Vec::new();
    for e in raw {
        match e.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable \"{e}\": the name is empty"),
            Some(_) => out.push(e),
            None => {
                if let Ok(v) = std::env::var(&e) {
                    out.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// The engine's create options for `run` and `create` flags.
pub fn create_options(args: &CreateArgs) -> Result<CreateOptions> {
    let memory_bytes = args
        .memory
        .as_deref()
        .map(berth_engine::parse_memory)
        .transpose()?;
    let labels = crate::format::parse_labels(&args.labels);
    let dns = args
        .dns
        .iter()
        .map(|d| {
            d.parse::<std::net::IpAddr>()
                .map_err(|_| anyhow::anyhow!("invalid --dns \"{d}\": give an IP address"))
        })
        .collect::<Result<Vec<_>>>()?;
    let add_hosts = args
        .add_hosts
        .iter()
        .map(|h| net::parse_add_host(h))
        .collect::<Result<Vec<_>, _>>()?;
    let publish = args
        .publish
        .iter()
        .map(|p| net::parse_publish(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut mounts = Vec::new();
    for v in &args.volumes {
        mounts.push(mounts::parse_volume(v).map_err(berth_engine::Error::from)?);
    }
    for m in &args.mounts {
        mounts.push(mounts::parse_mount(m).map_err(berth_engine::Error::from)?);
    }
    for t in &args.tmpfs {
        mounts.push(mounts::parse_tmpfs(t).map_err(berth_engine::Error::from)?);
    }
    Ok(CreateOptions {
        mounts,
        publish_all: args.publish_all,
        network: args.network.clone(),
        network_aliases: args.network_aliases.clone(),
        dns,
        add_hosts,
        publish,
        name: args.name.clone(),
        image: args.image.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        command: args.command.clone(),
        env: user_env(args)?,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        cpus: args.cpus,
        memory_bytes,
        pids_limit: args.pids_limit,
        interactive: args.interactive,
        tty: args.tty,
        auto_remove: args.rm,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        create: CreateArgs,
    }

    fn options(argv: &[&str]) -> Result<CreateOptions> {
        let args = Wrap::try_parse_from(std::iter::once("berth").chain(argv.iter().copied()))
            .unwrap()
            .create;
        create_options(&args)
    }

    #[test]
    fn flags_become_engine_options() {
        let o = options(&[
            "-e",
            "A=2",
            "-l",
            "tier=web",
            "-l",
            "bare",
            "-m",
            "256m",
            "--entrypoint",
            "",
            "img",
            "ls",
            "-l",
        ])
        .unwrap();
        assert_eq!(o.env, ["A=2"]);
        assert_eq!(o.labels["tier"], "web");
        assert_eq!(o.labels["bare"], "");
        assert_eq!(o.memory_bytes, Some(256 << 20));
        assert_eq!(o.entrypoint, Some(vec![]));
        assert_eq!(o.command, ["ls", "-l"]);
        let o = options(&["--entrypoint", "/bin/sh", "img"]).unwrap();
        assert_eq!(o.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert!(options(&["-e", "=x", "img"]).is_err());
        let o = options(&[
            "--network",
            "none",
            "--dns",
            "1.1.1.1",
            "--add-host",
            "db:10.0.0.5",
            "-p",
            "127.0.0.1:8080:80",
            "-p",
            "81",
            "img",
        ])
        .unwrap();
        assert_eq!(o.network.as_deref(), Some("none"));
        assert_eq!(o.dns, ["1.1.1.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(o.add_hosts[0].name, "db");
        assert_eq!(o.publish[0].to_string(), "127.0.0.1:8080->80/tcp");
        assert_eq!(o.publish[1].host_port, 0);
        for bad in [
            &["-p", "80:http", "img"][..],
            &["-p", "1:2:3:4", "img"],
            &["--add-host", "nocolon", "img"],
            &["--dns", "resolver", "img"],
        ] {
            let e = options(bad).unwrap_err();
            assert!(e.to_string().contains(bad[1]), "{e}");
            assert_eq!(exit_code(&e), EXIT_BERTH_FAILED);
        }
        assert!(options(&["-m", "lots", "img"]).is_err());
    }
}
