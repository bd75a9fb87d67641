//! Attaching docker clients to a container's main process: an attach may come before
//! the start (docker's `run` sends it first), so it waits here until the start opens the
//! process's streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_docker_api::{AttachOptions, BackendError, Streams, StreamsFuture};
use berth_engine::{Attach, Engine, ProcessStreams, Status};
use berth_protocol::ProcessRef;
use tokio::sync::oneshot;

use crate::api_error;

/// Buffer between a client's stdin and the process's chunked stdin stream.
const STDIN_BUFFER: usize = 64 * 1024;

type Waiting = oneshot::Sender<Result<Streams, BackendError>>;

/// Attachments waiting for their container's start, by container ID.
#[derive(Debug, Default)]
pub struct Attachments {
    waiting: Mutex<HashMap<String, Vec<(AttachOptions, Waiting)>>>,
}

impl Attachments {
    fn take(&self, id: &str) -> Vec<(AttachOptions, Waiting)> {
        self.waiting
            .lock()
            .map(|mut w| w.remove(id).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The engine's streams of a process as the API's: stdin goes through a pipe whose far
/// end frames the bytes for the agent, so shutting it down is the process's EOF.
pub fn to_api(streams: ProcessStreams, tty: bool) -> Streams {
    let stdin = streams.stdin.map(|to| {
        let (writer, reader) = tokio::io::duplex(STDIN_BUFFER);
        tokio::spawn(async move {
            if let Err(e) = berth_engine::pump_stdin(reader, to).await {
                tracing::debug!("stdin of an attached process: {}", e.message());
            }
        });
        Box::new(writer) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>
    });
    Streams {
        stdout: Box::new(streams.stdout),
        stderr: streams
            .stderr
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        stdin,
        tty,
    }
}

/// `POST /containers/{id}/attach`: a running container's streams at once; a created or
/// exited one's once it is started.
pub async fn attach(
    engine: &Engine,
    attachments: &Attachments,
    id: &str,
    opts: AttachOptions,
) -> Result<StreamsFuture, BackendError> {
    let record = engine.container(id).map_err(api_error)?;
    if record.status() == Status::Running {
        let files = engine.files(&record);
        let streams = ProcessStreams::open(
            &files,
            &ProcessRef::init(record.id.clone()),
            record.spec.tty,
            opts.stdin && record.spec.interactive,
        )
        .await
        .map_err(api_error)?;
        let streams = to_api(streams, record.spec.tty);
        return Ok(Box::pin(async move { Ok(streams) }));
    }
    let (tx, rx) = oneshot::channel();
    if let Ok(mut w) = attachments.waiting.lock() {
        let list = w.entry(record.id.clone()).or_default();
        // Clients that went away leave closed senders behind: drop them.
        list.retain(|(_, tx)| !tx.is_closed());
        list.push((opts, tx));
    }
    Ok(Box::pin(async move {
        rx.await.unwrap_or_else(|_| {
            Err(BackendError::Other(
                "the container was removed before it started".into(),
            ))
        })
    }))
}

/// `POST /containers/{id}/start`: the first waiting attachment gets the process's
/// streams (opened before it starts, so no output is lost); the others are told why not.
pub async fn start(
    engine: &Arc<Engine>,
    attachments: &Attachments,
    id: &str,
) -> Result<(), BackendError> {
    let record = engine.container(id).map_err(api_error)?;
    if record.status() == Status::Running {
        return Err(BackendError::NotModified);
    }
    let mut waiting = attachments.take(&record.id);
    waiting.retain(|(_, tx)| !tx.is_closed());
    let first = (!waiting.is_empty()).then(|| waiting.remove(0));
    for (_, tx) in waiting {
        let _ = tx.send(Err(BackendError::Conflict(
            "berth attaches one client to a container's streams; another one has them".into(),
        )));
    }
    let attach = first.as_ref().map(|(opts, _)| Attach {
        stdin: opts.stdin && record.spec.interactive,
    });
    match engine.start(&record.id, attach).await {
        Ok(streams) => {
            if let (Some((_, tx)), Some(streams)) = (first, streams) {
                let _ = tx.send(Ok(to_api(streams, record.spec.tty)));
            }
            Ok(())
        }
        Err(e) => {
            let e = api_error(e);
            if let Some((_, tx)) = first {
                let _ = tx.send(Err(e.clone()));
            }
            Err(e)
        }
    }
}
