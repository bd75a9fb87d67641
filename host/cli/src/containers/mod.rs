//! Container commands: `run`, `exec`, `ps`, `logs`, `stop`, `rm` and the rest, each
//! container in its own micro-VM.

mod image;
mod lifecycle;
mod logfile;
mod manage;
mod stdio;
mod vm;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use lifecycle::exit_code;

/// Exit status of berth's own failures (docker's 125).
pub const EXIT_BERTH_FAILED: u8 = 125;

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
    Run(RunArgs),
    /// Create a new container without starting it
    Create(CreateArgs),
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
            ContainerCommand::Run(a) => lifecycle::run(a).await,
            ContainerCommand::Create(a) => lifecycle::create(a).await,
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
            ContainerCommand::Rm { force, containers } => manage::rm_all(&containers, force).await,
            ContainerCommand::Inspect { names } => manage::inspect(&names),
            ContainerCommand::Stats {
                no_stream,
                containers,
            } => manage::stats(&containers, no_stream).await,
            ContainerCommand::Cp { src, dst } => manage::cp(&src, &dst).await,
            ContainerCommand::Top { container } => manage::top(&container).await,
            ContainerCommand::Commit { container, image } => {
                manage::commit(&container, &image).await
            }
            ContainerCommand::Monitor { id } => lifecycle::monitor(&id).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
