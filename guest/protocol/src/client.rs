//! Host-side tokio client of the agent.
//!
//! The client is generic over the byte stream, so it runs over a Unix socket after
//! [`vsock_connect`](crate::vsock_connect), over a raw Unix socket to an agent started with
//! `--listen unix:PATH`, or over an in-memory duplex in tests.
//!
//! ```no_run
//! # async fn demo(sock: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use berth_protocol::{client, Client, ProcessRef, StreamTarget, CONTROL_PORT, STREAM_PORT};
//! let mut s = tokio::net::UnixStream::connect(sock).await?;
//! berth_protocol::vsock_connect(&mut s, CONTROL_PORT).await?;
//! let agent = Client::handshake(s).await?;
//! // ... agent.create(req).await?;
//! let mut out = tokio::net::UnixStream::connect(sock).await?;
//! berth_protocol::vsock_connect(&mut out, STREAM_PORT).await?;
//! let mut out = client::open_stream(out, StreamTarget::Stdout(ProcessRef::init("c1"))).await?;
//! agent.start(ProcessRef::init("c1")).await?;
//! tokio::io::copy(&mut out, &mut tokio::io::sink()).await?;
//! let code = agent.wait(ProcessRef::init("c1")).await?;
//! # let _ = code; Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::{
    read_frame, write_frame, AgentInfo, Channel, ContainerInfo, ContainerStats, CreateRequest,
    ExecRequest, FrameError, Hello, HelloReply, ProcessInfo, ProcessRef, Request, RequestFrame,
    Response, ResponseFrame, StreamTarget, WireError, PROTOCOL_VERSION,
};

/// Errors seen by the host.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// connection to the agent failed: {0}
    #[error("connection to the agent failed: {0}")]
    Frame(#[from] FrameError),
    /// the agent refused the handshake: {0}
    #[error("the agent refused the handshake: {0}")]
    Refused(WireError),
    /// the agent speaks protocol version {0}, this berth speaks {PROTOCOL_VERSION}; use matching berth and agent builds
    #[error("the agent speaks protocol version {0}, this berth speaks {PROTOCOL_VERSION}; use matching berth and agent builds")]
    Version(u32),
    /// the agent closed the connection (did the VM stop?)
    #[error("the agent closed the connection (did the VM stop?)")]
    Closed,
    /// {0}
    #[error("{0}")]
    Remote(#[from] WireError),
    /// the agent answered {0} with an unexpected response
    #[error("the agent answered {0} with an unexpected response")]
    Unexpected(&'static str),
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Response, WireError>>>>>>;

/// A control-channel client. Cheap to clone; requests may run concurrently (a `wait` does
/// not block other requests).
#[derive(Clone)]
pub struct Client {
    writer: Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    /// Protocol version and agent build reported by the handshake.
    pub agent_version: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

/// Sends a [`Hello`] for `channel` and checks the [`HelloReply`].
async fn hello<S>(s: &mut S, channel: Channel) -> Result<HelloReply, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    write_frame(s, &Hello::new(channel)).await?;
    let reply: HelloReply = read_frame(s).await?.ok_or(ClientError::Closed)?;
    if let Some(e) = reply.error {
        return Err(ClientError::Refused(e));
    }
    if reply.version != PROTOCOL_VERSION {
        return Err(ClientError::Version(reply.version));
    }
    Ok(reply)
}

/// Opens a data stream on a fresh connection (already past `CONNECT` when over vsock).
/// The returned stream carries the data described by [`StreamTarget`].
pub async fn open_stream<S>(mut s: S, target: StreamTarget) -> Result<S, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hello(&mut s, Channel::Stream(target)).await?;
    Ok(s)
}

impl Client {
    /// Performs the control handshake on `stream` and starts the response reader task
    /// (needs a tokio runtime).
    pub async fn handshake<S>(mut stream: S) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let reply = hello(&mut stream, Channel::Control).await?;
        let (r, w): (ReadHalf<S>, WriteHalf<S>) = tokio::io::split(stream);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(read_loop(r, pending.clone()));
        Ok(Client {
            writer: Arc::new(tokio::sync::Mutex::new(Box::new(w))),
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            agent_version: reply.agent,
        })
    }

    /// Sends `request` and waits for its response.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match p.as_mut() {
                Some(map) => {
                    map.insert(id, tx);
                }
                None => return Err(ClientError::Closed),
            }
        }
        let sent = {
            let mut w = self.writer.lock().await;
            write_frame(&mut *w, &RequestFrame { id, request }).await
        };
        if let Err(e) = sent {
            if let Some(map) = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                map.remove(&id);
            }
            return Err(e.into());
        }
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(ClientError::Remote(e)),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Agent facts.
    pub async fn ping(&self) -> Result<AgentInfo, ClientError> {
        match self.call(Request::Ping).await? {
            Response::Info(i) => Ok(i),
            _ => Err(ClientError::Unexpected("ping")),
        }
    }

    /// Creates a container; returns the pid of its waiting init.
    pub async fn create(&self, req: CreateRequest) -> Result<i32, ClientError> {
        match self.call(Request::Create(Box::new(req))).await? {
            Response::Created { pid } => Ok(pid),
            _ => Err(ClientError::Unexpected("create")),
        }
    }

    /// Starts a created init or a prepared exec; returns its pid once it has exec'd.
    pub async fn start(&self, process: ProcessRef) -> Result<i32, ClientError> {
        match self.call(Request::Start(process)).await? {
            Response::Started { pid } => Ok(pid),
            _ => Err(ClientError::Unexpected("start")),
        }
    }

    /// Prepares an exec (run it with [`Client::start`] after attaching its streams).
    pub async fn exec(&self, req: ExecRequest) -> Result<(), ClientError> {
        self.expect_ok(Request::Exec(Box::new(req)), "exec").await
    }

    /// Sends signal `signal` to a process.
    pub async fn signal(&self, process: ProcessRef, signal: i32) -> Result<(), ClientError> {
        self.expect_ok(Request::Signal { process, signal }, "signal")
            .await
    }

    /// Waits for a process to exit; its exit code, or 128+N when killed by signal N.
    pub async fn wait(&self, process: ProcessRef) -> Result<i32, ClientError> {
        match self.call(Request::Wait(process)).await? {
            Response::Exited { code } => Ok(code),
            _ => Err(ClientError::Unexpected("wait")),
        }
    }

    /// All containers in the guest.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, ClientError> {
        match self.call(Request::List).await? {
            Response::Containers(c) => Ok(c),
            _ => Err(ClientError::Unexpected("list")),
        }
    }

    /// Deletes a container (with `force`, kills it first).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), ClientError> {
        self.expect_ok(
            Request::Delete {
                id: id.to_string(),
                force,
            },
            "delete",
        )
        .await
    }

    /// cgroup statistics of a container.
    pub async fn stats(&self, id: &str) -> Result<ContainerStats, ClientError> {
        match self.call(Request::Stats { id: id.to_string() }).await? {
            Response::Stats(s) => Ok(s),
            _ => Err(ClientError::Unexpected("stats")),
        }
    }

    /// Resizes a process's terminal.
    pub async fn resize_tty(
        &self,
        process: ProcessRef,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        self.expect_ok(
            Request::ResizeTty {
                process,
                rows,
                cols,
            },
            "resize",
        )
        .await
    }

    /// Processes of a container.
    pub async fn top(&self, id: &str) -> Result<Vec<ProcessInfo>, ClientError> {
        match self.call(Request::Top { id: id.to_string() }).await? {
            Response::Processes(p) => Ok(p),
            _ => Err(ClientError::Unexpected("top")),
        }
    }

    /// Sets the guest's wall clock to the host's.
    pub async fn set_time_now(&self) -> Result<(), ClientError> {
        let unix_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.expect_ok(Request::SetTime { unix_nanos }, "set time")
            .await
    }

    /// Asks the agent to sync and power the VM off.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.expect_ok(Request::Shutdown, "shutdown").await
    }

    async fn expect_ok(&self, req: Request, what: &'static str) -> Result<(), ClientError> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            _ => Err(ClientError::Unexpected(what)),
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut r: R, pending: Pending) {
    loop {
        match read_frame::<_, ResponseFrame>(&mut r).await {
            Ok(Some(frame)) => {
                let tx = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|m| m.remove(&frame.id));
                match tx {
                    Some(tx) => {
                        let _ = tx.send(frame.result);
                    }
                    None => tracing::warn!(id = frame.id, "response to an unknown request id"),
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("control connection failed: {e}");
                break;
            }
        }
    }
    // Dropping the senders wakes every waiter with `Closed`.
    pending.lock().unwrap_or_else(|e| e.into_inner()).take();
}
