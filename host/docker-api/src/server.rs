//! Listening: binding the Unix socket, checking each peer's uid, the
//! request limits, and running hyper on each connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::backend::Backend;
use crate::error::ServeError;
use crate::router::{self, Ctx, Limits};

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

/// A bound Docker API socket. The socket file is removed when the server
/// stops (or is dropped).
#[derive(Debug)]
pub struct Server {
    listener: Option<UnixListener>,
    path: PathBuf,
    limits: Limits,
}

impl Server {
    /// Binds `path` with mode 0600. An existing socket there is replaced
    /// only if nothing listens on it; any other file is left alone and is
    /// an error.
    pub async fn bind(path: impl Into<PathBuf>) -> Result<Server, ServeError> {
        let path = path.into();
        let shown = path.display().to_string();
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.file_type().is_socket() => match UnixStream::connect(&path).await {
                Ok(_) => return Err(ServeError::InUse(shown)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!("removing stale socket {shown}");
                    tokio::fs::remove_file(&path)
                        .await
                        .map_err(io_err(format!("removing stale socket {shown}")))?;
                }
                Err(e) => return Err(io_err(format!("probing {shown}"))(e)),
            },
            Ok(_) => return Err(ServeError::NotASocket(shown)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("stat {shown}"))(e)),
        }
        let listener = UnixListener::bind(&path).map_err(io_err(format!("binding {shown}")))?;
        // Until this chmod the socket has the umask's mode; the peer-uid
        // check below guards that window.
        tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io_err(format!("chmod {shown}")))?;
        Ok(Server {
            listener: Some(listener),
            path,
            limits: Limits::default(),
        })
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` resolves, then removes the socket.
    pub async fn run<F>(mut self, backend: Arc<dyn Backend>, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send,
    {
        let listener = self
            .listener
            .take()
            .expect("a bound server has its listener");
        let result = serve_listener(backend, listener, self.limits.clone(), shutdown).await;
        if let Err(e) = tokio::fs::remove_file(&self.path).await {
            tracing::warn!("removing {}: {e}", self.path.display());
        }
        self.path = PathBuf::new();
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only when `run` did not get to clean up (a dropped, never-run
        // server): one unlink, not worth a task.
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `path` (see [`Server::bind`]) and serves until `shutdown`.
pub async fn serve<F>(
    backend: Arc<dyn Backend>,
    path: impl Into<PathBuf>,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    Server::bind(path).await?.run(backend, shutdown).await
}

/// Our own uid.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions, touches no memory of ours and
    // cannot fail.
    unsafe { libc::getuid() }
}

/// The uid of the process at the other end of `stream`. tokio reads it
/// with `SO_PEERCRED` on Linux and `getpeereid` on macOS and the BSDs.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    stream.peer_cred().map(|c| c.uid())
}

/// Whether a peer with `peer` uid may talk to a server running as `ours`:
/// the same user, or root.
pub fn peer_allowed(peer: u32, ours: u32) -> bool {
    peer == ours || peer == 0
}

/// Serves on an already-bound listener until `shutdown` resolves. Open
/// connections are closed then; hijacked streams run on until their
/// process's output ends. The caller owns the socket file.
pub async fn serve_listener<F>(
    backend: Arc<dyn Backend>,
    listener: UnixListener,
    limits: Limits,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    let ours = current_uid();
    let ctx = Arc::new(Ctx { backend, limits });
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    match peer_uid(&stream) {
                        Ok(uid) if peer_allowed(uid, ours) => {
                            conns.spawn(serve_connection(ctx.clone(), stream));
                        }
                        Ok(uid) => tracing::warn!("refused a connection from uid {uid}"),
                        Err(e) => tracing::warn!("refused a connection: peer credentials: {e}"),
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    Ok(())
}

async fn serve_connection(ctx: Arc<Ctx>, stream: UnixStream) {
    let max_buf = ctx.limits.max_header_bytes.max(8192);
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(router::route(ctx, req).await) }
    });
    let conn = http1::Builder::new()
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!("connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(65534, 1000));
        assert!(!peer_allowed(65534, 0));
    }

    #[tokio::test]
    async fn bind_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let s = Server::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Someone listens: refused.
        assert!(matches!(
            Server::bind(&path).await,
            Err(ServeError::InUse(_))
        ));
        // Close the listener but keep the file: a stale socket, replaced.
        let mut stale = s;
        stale.path = PathBuf::new();
        drop(stale);
        assert!(path.exists());
        let s2 = Server::bind(&path).await.unwrap();
        drop(s2);
        assert!(!path.exists(), "drop removes the socket");
        // Not a socket: left alone.
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(
            Server::bind(&path).await,
            Err(ServeError::NotASocket(_))
        ));
        assert!(path.exists());
    }
}
