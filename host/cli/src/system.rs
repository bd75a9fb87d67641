//! `berth system service`: serves the Docker Engine API on a Unix socket, over the same
//! engine as the CLI, so that docker, compose and the SDKs drive berth's containers.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_engine::Engine;
use clap::Subcommand;
use tokio::signal::unix::{signal, SignalKind};

/// `berth system` commands.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Serve the Docker Engine API (point DOCKER_HOST at it) until interrupted
    Service {
        /// Where to listen: unix:///PATH (default: docker.sock in berth's runtime folder)
        #[arg(short = 'H', long)]
        host: Option<String>,
    },
}

/// The socket path of `--host`, or the default.
fn socket_path(host: Option<&str>) -> Result<PathBuf> {
    match host {
        None => Ok(berth_engine::vm::runtime_dir()?.join("docker.sock")),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
            Some(p) => bail!("invalid --host unix://{p}: give an absolute path, like unix:///run/berth/docker.sock"),
            None if h.starts_with("tcp://") => bail!(
                "berth serves the Docker API on a Unix socket only (owner-only, checked by peer \
                 credentials); a TCP listener would let anyone who reaches it run VMs as you"
            ),
            None => bail!("invalid --host {h}: give unix:///PATH"),
        },
    }
}

/// Runs a system command.
pub async fn run(cmd: SystemCommand) -> Result<()> {
    match cmd {
        SystemCommand::Service { host } => {
            let path = socket_path(host.as_deref())?;
            let engine = Engine::open()?;
            let backend = berth_docker_backend::BerthBackend::new(engine);
            let server = berth_docker_api::Server::bind(&path)
                .await
                .with_context(|| format!("listen on {}", path.display()))?;
            println!("DOCKER_HOST=unix://{}", path.display());
            let mut term = signal(SignalKind::terminate())?;
            let shutdown = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            server.run(backend, shutdown).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_must_be_unix_sockets_with_absolute_paths() {
        assert_eq!(
            socket_path(Some("unix:///tmp/d.sock")).unwrap(),
            PathBuf::from("/tmp/d.sock")
        );
        assert!(socket_path(Some("unix://rel.sock")).is_err());
        let tcp = socket_path(Some("tcp://0.0.0.0:2375")).unwrap_err();
        assert!(tcp.to_string().contains("Unix socket only"), "{tcp}");
        assert!(socket_path(Some("/tmp/x")).is_err());
    }
}
