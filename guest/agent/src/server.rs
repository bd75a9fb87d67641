//! Connections: the handshake, the control channel and the data streams.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_protocol::chunk::{self, Chunk};
use berth_protocol::{
    read_frame, write_frame, Channel, ErrorKind, Hello, HelloReply, ProcessRef, RequestFrame,
    ResponseFrame, StreamTarget, WireError, MAGIC, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::agent::{wire, Agent};

/// A connection of either transport.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

fn reply(error: Option<WireError>) -> HelloReply {
    HelloReply {
        version: PROTOCOL_VERSION,
        agent: env!("CARGO_PKG_VERSION").to_string(),
        error,
    }
}

/// Serves one connection until it ends.
pub async fn serve_conn<S: Conn>(agent: Arc<Agent>, mut s: S) {
    let hello: Hello = match tokio::time::timeout(Duration::from_secs(30), read_frame(&mut s)).await
    {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!("bad handshake: {e}");
            let _ = write_frame(&mut s, &reply(Some(WireError::protocol(e.to_string())))).await;
            return;
        }
        Err(_) => {
            tracing::warn!("handshake timed out");
            return;
        }
    };
    if hello.magic != MAGIC || hello.version != PROTOCOL_VERSION {
        let e = WireError::protocol(format!(
            "this agent speaks berth protocol {PROTOCOL_VERSION}, the host sent {:?} version {}",
            hello.magic, hello.version
        ));
        let _ = write_frame(&mut s, &reply(Some(e))).await;
        return;
    }
    match hello.channel {
        Channel::Control => {
            if write_frame(&mut s, &reply(None)).await.is_ok() {
                control(agent, s).await;
            }
        }
        Channel::Stream(target) => stream(agent, s, target).await,
    }
}

async fn control<S: Conn>(agent: Arc<Agent>, s: S) {
    let (mut r, w) = tokio::io::split(s);
    let w = Arc::new(tokio::sync::Mutex::new(w));
    loop {
        let frame: RequestFrame = match read_frame(&mut r).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("control channel: {e}");
                return;
            }
        };
        let agent = agent.clone();
        let w = w.clone();
        // Each request runs on its own: a `wait` must not hold up the others.
        tokio::spawn(async move {
            let id = frame.id;
            let result = agent.handle(frame.request).await;
            if let Err(e) = &result {
                tracing::debug!("request {id} failed: {e}");
            }
            let mut w = w.lock().await;
            if let Err(e) = write_frame(&mut *w, &ResponseFrame { id, result }).await {
                tracing::warn!("writing response {id}: {e}");
            }
        });
    }
}

async fn stream<S: Conn>(agent: Arc<Agent>, mut s: S, target: StreamTarget) {
    // Refuse unknown processes/containers in the hello reply.
    let check = match &target {
        StreamTarget::Stdin(p) | StreamTarget::Stdout(p) | StreamTarget::Stderr(p) => {
            agent.proc(p).map(|_| ())
        }
        StreamTarget::Logs { container, .. } => {
            agent.proc(&ProcessRef::init(container.clone())).map(|_| ())
        }
        StreamTarget::CopyIn { container, .. }
        | StreamTarget::CopyOut { container, .. }
        | StreamTarget::Commit { container } => agent.container_dirs(container).map(|_| ()),
    };
    if write_frame(&mut s, &reply(check.clone().err()))
        .await
        .is_err()
        || check.is_err()
    {
        return;
    }
    match target {
        StreamTarget::Stdout(p) => attach_output(&agent, &p, 0, s).await,
        StreamTarget::Stderr(p) => attach_output(&agent, &p, 1, s).await,
        StreamTarget::Stdin(p) => stdin(&agent, &p, s).await,
        StreamTarget::Logs {
            container,
            follow,
            tail,
        } => logs(&agent, &container, follow, tail, s).await,
        StreamTarget::CopyOut { container, path } => {
            let (root, _) = match agent.container_dirs(&container) {
                Ok(d) => d,
                Err(e) => return finish(s, Err(e)).await,
            };
            let r = send_tar(&mut s, move |w| copy_out(&root, &path, w)).await;
            finish(s, r).await
        }
        StreamTarget::Commit { container } => {
            let (_, upper) = match agent.container_dirs(&container) {
                Ok(d) => d,
                Err(e) => return finish(s, Err(e)).await,
            };
            let r = send_tar(&mut s, move |w| {
                berth_runtime::commit::write_layer(&upper, w, &crate::etc::mount_targets())
                    .map(|_| ())
                    .map_err(|e| wire(&e))
            })
            .await;
            finish(s, r).await
        }
        StreamTarget::CopyIn { container, path } => {
            let (root, _) = match agent.container_dirs(&container) {
                Ok(d) => d,
                Err(e) => return finish(s, Err(e)).await,
            };
            let r = receive_tar(&mut s, move |rd| copy_in(&root, &path, rd)).await;
            finish(s, r).await
        }
    }
}

/// Ends a chunked stream with End or Error.
async fn finish<S: Conn>(mut s: S, r: Result<(), WireError>) {
    let c = match r {
        Ok(()) => Chunk::End,
        Err(e) => Chunk::Error(e),
    };
    let _ = chunk::write_chunk(&mut s, &c).await;
    let _ = s.flush().await;
    let _ = s.shutdown().await;
}

async fn attach_output<S: Conn>(agent: &Agent, p: &ProcessRef, idx: usize, s: S) {
    if let Ok(proc) = agent.proc(p) {
        proc.outputs[idx].attach(Box::new(s)).await;
    }
}

async fn stdin<S: Conn>(agent: &Agent, p: &ProcessRef, mut s: S) {
    let Ok(proc) = agent.proc(p) else { return };
    let Some(mut w) = proc.take_stdin().await else {
        let _ = chunk::write_chunk(
            &mut s,
            &Chunk::Error(WireError::new(
                ErrorKind::InvalidState,
                format!("{p} has no open stdin (not created with open_stdin, or already attached)"),
            )),
        )
        .await;
        return;
    };
    // End, a cut connection or garbage all close stdin: the process sees EOF.
    while let Ok(Some(Chunk::Data(d))) = chunk::read_chunk(&mut s).await {
        if w.write_all(&d).await.is_err() {
            break;
        }
    }
    drop(w);
}

async fn logs<S: Conn>(agent: &Agent, id: &str, follow: bool, tail: Option<u64>, mut s: S) {
    let proc = match agent.proc(&ProcessRef::init(id.to_string())) {
        Ok(p) => p,
        Err(e) => return finish(s, Err(e)).await,
    };
    let Some(log) = proc.log.clone() else {
        return finish(
            s,
            Err(WireError::new(
                ErrorKind::Unsupported,
                format!("container {id} keeps no log"),
            )),
        )
        .await;
    };
    let mut rx = log.subscribe();
    let mut f = match std::fs::File::open(log.path()) {
        Ok(f) => f,
        Err(e) => {
            return finish(
                s,
                Err(WireError::new(
                    ErrorKind::System,
                    format!("opening the log: {e}"),
                )),
            )
            .await
        }
    };
    let mut skip = 0u64;
    if let Some(n) = tail {
        let (written, _) = *rx.borrow();
        let total = match berth_log_count(&log, written) {
            Ok(t) => t,
            Err(e) => return finish(s, Err(e)).await,
        };
        skip = total.saturating_sub(n);
    }
    loop {
        let (written, closed) = *rx.borrow_and_update();
        let recs = match crate::logs::read_records(&mut f, written) {
            Ok((r, _)) => r,
            Err(e) => {
                return finish(
                    s,
                    Err(WireError::new(
                        ErrorKind::System,
                        format!("reading the log: {e}"),
                    )),
                )
                .await
            }
        };
        for r in recs {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if chunk::write_chunk(&mut s, &Chunk::Log(r)).await.is_err() {
                return;
            }
        }
        if !follow || closed {
            break;
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
    finish(s, Ok(())).await
}

fn berth_log_count(log: &crate::logs::LogFile, written: u64) -> Result<u64, WireError> {
    let mut f = std::fs::File::open(log.path())
        .map_err(|e| WireError::new(ErrorKind::System, format!("opening the log: {e}")))?;
    crate::logs::read_records(&mut f, written)
        .map(|(r, _)| r.len() as u64)
        .map_err(|e| WireError::new(ErrorKind::System, format!("reading the log: {e}")))
}

/// A `Write` that hands 64 KiB pieces to an async task.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let b = std::mem::take(&mut self.buf);
            self.tx
                .blocking_send(b)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }
}

/// A `Read` fed by an async task.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

async fn send_tar<S, F>(s: &mut S, make: F) -> Result<(), WireError>
where
    S: Conn,
    F: FnOnce(&mut ChannelWriter) -> Result<(), WireError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(8);
    let job = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx,
            buf: Vec::new(),
        };
        make(&mut w)?;
        w.flush()
            .map_err(|e| WireError::new(ErrorKind::System, format!("sending the tar: {e}")))
    });
    while let Some(b) = rx.recv().await {
        chunk::write_chunk(s, &Chunk::Data(b))
            .await
            .map_err(|e| WireError::protocol(e.to_string()))?;
    }
    job.await
        .map_err(|e| WireError::new(ErrorKind::System, format!("tar task failed: {e}")))?
}

async fn receive_tar<S, F>(s: &mut S, consume: F) -> Result<(), WireError>
where
    S: Conn,
    F: FnOnce(&mut ChannelReader) -> Result<(), WireError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    let job = tokio::task::spawn_blocking(move || {
        let mut r = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let res = consume(&mut r);
        // Drain what the host still sends so it is not blocked.
        let mut sink = [0u8; 8192];
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
        res
    });
    let mut got_end = false;
    loop {
        match chunk::read_chunk(s).await {
            Ok(Some(Chunk::Data(d))) => {
                if tx.send(d).await.is_err() {
                    break;
                }
            }
            Ok(Some(Chunk::End)) => {
                got_end = true;
                break;
            }
            Ok(_) | Err(_) => break,
        }
    }
    drop(tx);
    let r = job
        .await
        .map_err(|e| WireError::new(ErrorKind::System, format!("tar task failed: {e}")))?;
    if !got_end {
        return Err(WireError::protocol("the tar stream ended without End"));
    }
    r
}

fn io_wire(what: &str, e: impl std::error::Error) -> WireError {
    let mut msg = format!("{what}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    WireError::new(ErrorKind::System, msg)
}

/// `docker cp CONTAINER:PATH -`: a tar of `path` (named by its last component).
fn copy_out(root: &Path, path: &str, w: &mut ChannelWriter) -> Result<(), WireError> {
    let host = berth_runtime::fs::resolve_in_root(root, path).map_err(|e| wire(&e))?;
    let meta = std::fs::symlink_metadata(&host).map_err(|e| {
        WireError::new(
            ErrorKind::NotFound,
            format!("could not find the file {path} in container: {e}"),
        )
    })?;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| ".".into());
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(&name, &host)
            .map_err(|e| io_wire("packing the directory", e))?;
    } else {
        b.append_path_with_name(&host, &name)
            .map_err(|e| io_wire("packing the file", e))?;
    }
    b.finish().map_err(|e| io_wire("finishing the tar", e))
}

/// `docker cp - CONTAINER:DIR`: unpacks a tar into directory `path`.
fn copy_in(root: &Path, path: &str, r: &mut ChannelReader) -> Result<(), WireError> {
    let host = berth_runtime::fs::resolve_in_root(root, path).map_err(|e| wire(&e))?;
    if !host.is_dir() {
        return Err(WireError::new(
            ErrorKind::NotFound,
            format!("{path} is not a directory in the container"),
        ));
    }
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_overwrite(true);
    a.unpack(&host).map_err(|e| io_wire("unpacking", e))
}
