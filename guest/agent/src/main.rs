//! berth guest agent: PID 1 of the micro-VM, serving the host over vsock.
//!
//! ```text
//! berth-agent [--listen vsock | vsock:PORT | unix:PATH] [--state-dir DIR]
//! ```
//!
//! As PID 1 (the initramfs's `/init`) it mounts the base filesystems and cgroup2, sets the
//! hostname (`berth.hostname=` on the kernel command line), brings up loopback, reaps
//! every zombie and serves the control and stream ports (see `berth_protocol`). On a host
//! (tests) `--listen unix:PATH` serves both channels on one Unix socket.

mod agent;
mod aio;
mod disks;
mod etc;
mod init;
mod logs;
mod mounts;
mod netif;
mod process;
mod procio;
mod server;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_protocol::{CONTROL_PORT, STREAM_PORT};

enum Listen {
    Vsock(Vec<u32>),
    Unix(PathBuf),
}

struct Args {
    listen: Listen,
    state_dir: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut listen = Listen::Vsock(vec![CONTROL_PORT, STREAM_PORT]);
    let mut state_dir = PathBuf::from("/run/berth");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => {
                let v = it.next().context("--listen needs a value")?;
                listen = if v == "vsock" {
                    Listen::Vsock(vec![CONTROL_PORT, STREAM_PORT])
                } else if let Some(p) = v.strip_prefix("vsock:") {
                    Listen::Vsock(vec![p.parse().context("bad vsock port")?])
                } else if let Some(p) = v.strip_prefix("unix:") {
                    Listen::Unix(PathBuf::from(p))
                } else {
                    bail!("--listen takes vsock, vsock:PORT or unix:PATH, not {v:?}")
                };
            }
            "--state-dir" => {
                state_dir = PathBuf::from(it.next().context("--state-dir needs a value")?)
            }
            "--help" | "-h" => {
                println!(
                    "usage: berth-agent [--listen vsock|vsock:PORT|unix:PATH] [--state-dir DIR]"
                );
                std::process::exit(0);
            }
            // The kernel passes unknown command-line words to init: ignore them.
            other if std::process::id() == 1 => {
                tracing::debug!("ignoring argument {other:?}");
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    Ok(Args { listen, state_dir })
}

async fn serve(agent: Arc<agent::Agent>, listen: Listen) -> Result<()> {
    match listen {
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("listening on {}", path.display()))?;
            tracing::info!("listening on unix:{}", path.display());
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(server::serve_conn(agent.clone(), s));
                    }
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }
        Listen::Vsock(ports) => {
            let mut tasks = Vec::new();
            for port in ports {
                let l = aio::VsockListener::bind(port)
                    .with_context(|| format!("listening on vsock port {port}"))?;
                tracing::info!("listening on vsock port {port}");
                let agent = agent.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok(s) => {
                                tokio::spawn(server::serve_conn(agent.clone(), s));
                            }
                            Err(e) => {
                                tracing::warn!("accept: {e}");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            Ok(())
        }
    }
}

fn main() -> Result<()> {
    let pid1 = std::process::id() == 1;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(
            std::env::var("BERTH_AGENT_LOG")
                .ok()
                .and_then(|l| l.parse().ok())
                .unwrap_or(tracing::Level::INFO),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if pid1 => {
            tracing::error!("{e:#}; using defaults");
            Args {
                listen: Listen::Vsock(vec![CONTROL_PORT, STREAM_PORT]),
                state_dir: PathBuf::from("/run/berth"),
            }
        }
        Err(e) => return Err(e),
    };
    if pid1 {
        if let Err(e) = init::init_system(&init::cmdline_hostname()) {
            // Keep going: a half-initialised guest still answers, and says why.
            tracing::error!("guest setup: {e:#}");
        }
    } else {
        // Orphans of exec'd processes come back to us, as they would to PID 1.
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let agent = agent::Agent::new(args.state_dir, pid1);
    let result = rt.block_on(async {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .context("handling SIGCHLD")?;
        let reaper = agent.clone();
        tokio::spawn(async move {
            loop {
                reaper.reaper.reap();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        if !pid1 {
            let a = agent.clone();
            tokio::spawn(async move {
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    term.recv().await;
                    a.shutdown();
                }
            });
        }
        tracing::info!("berth agent {} ready", env!("CARGO_PKG_VERSION"));
        serve(agent.clone(), args.listen).await
    });
    if pid1 {
        // PID 1 must not exit: report, and keep reaping until powered off.
        tracing::error!("agent stopped serving: {result:?}; powering off");
        init::power_off();
    }
    result
}
