//! Exec instances: docker creates one, starts it (attached or not) and reads its exit
//! code afterwards, so berth keeps them here, in the server's memory, as docker does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_docker_api::{BackendError, ExecConfig, ExecDetails, Streams};
use berth_engine::{Engine, ExecOptions, ExecProcess};
use tokio::sync::watch;

use crate::api_error;
use crate::streams::to_api;

/// The most exec instances kept; the oldest finished ones go first.
const MAX_EXECS: usize = 1024;
/// How long `inspect` waits for the exit code of an exec whose output has ended.
const EXIT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Exec {
    container: String,
    config: ExecConfig,
    /// Until started.
    process: Option<ExecProcess>,
    started: bool,
    exit: watch::Receiver<Option<i32>>,
    exit_tx: Option<watch::Sender<Option<i32>>>,
    /// Creation order, for eviction.
    serial: u64,
}

/// The exec instances of every container.
#[derive(Debug, Default)]
pub struct Execs {
    inner: Mutex<(u64, HashMap<String, Exec>)>,
}

fn no_such_exec(id: &str) -> BackendError {
    BackendError::NotFound(format!("No such exec instance: {id}"))
}

impl Execs {
    /// `POST /containers/{id}/exec`.
    pub async fn create(
        &self,
        engine: &Engine,
        container: &str,
        config: ExecConfig,
    ) -> Result<String, BackendError> {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let process = engine
            .exec(
                container,
                &ExecOptions {
                    command: config.cmd.clone(),
                    env: config.env.clone(),
                    workdir: nonempty(&config.working_dir),
                    user: nonempty(&config.user),
                    tty: config.tty,
                    interactive: config.attach_stdin,
                },
            )
            .await
            .map_err(api_error)?;
        // The agent's exec ID is docker's too, so resizes reach the same process.
        let id =
            process.process.exec.clone().ok_or_else(|| {
                BackendError::Other("the engine made an exec without an ID".into())
            })?;
        let container = process.process.container.clone();
        let (tx, rx) = watch::channel(None);
        let mut g = self.inner.lock().map_err(|_| poisoned())?;
        g.0 += 1;
        let serial = g.0;
        if g.1.len() >= MAX_EXECS {
            let oldest =
                g.1.iter()
                    .filter(|(_, e)| e.exit.borrow().is_some() || !e.started)
                    .min_by_key(|(_, e)| e.serial)
                    .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    g.1.remove(&k);
                }
                None => {
                    return Err(BackendError::Conflict(format!(
                        "{MAX_EXECS} exec instances are running: wait for some to end"
                    )))
                }
            }
        }
        g.1.insert(
            id.clone(),
            Exec {
                container,
                config,
                process: Some(process),
                started: false,
                exit: rx,
                exit_tx: Some(tx),
                serial,
            },
        );
        Ok(id)
    }

    /// `POST /exec/{id}/start`: opens the streams unless detached, starts the process,
    /// and records its exit code when it ends.
    pub async fn start(
        &self,
        id: &str,
        detach: bool,
        tty: bool,
    ) -> Result<Option<Streams>, BackendError> {
        let (process, tx, attach_stdin) = {
            let mut g = self.inner.lock().map_err(|_| poisoned())?;
            let e = g.1.get_mut(id).ok_or_else(|| no_such_exec(id))?;
            if e.started {
                return Err(BackendError::Conflict(format!(
                    "exec instance {id} has already been started"
                )));
            }
            e.started = true;
            (
                e.process.take().ok_or_else(|| no_such_exec(id))?,
                e.exit_tx.take(),
                e.config.attach_stdin,
            )
        };
        let tty = tty || self.config(id).map(|c| c.tty).unwrap_or(false);
        let streams = if detach {
            None
        } else {
            Some(
                process
                    .streams(tty, attach_stdin)
                    .await
                    .map_err(api_error)?,
            )
        };
        process.start().await.map_err(api_error)?;
        let process = Arc::new(process);
        tokio::spawn(async move {
            let code = process.wait().await.unwrap_or(255);
            if let Some(tx) = tx {
                let _ = tx.send(Some(code));
            }
        });
        Ok(streams.map(|s| to_api(s, tty)))
    }

    fn config(&self, id: &str) -> Option<ExecConfig> {
        let g = self.inner.lock().ok()?;
        g.1.get(id).map(|e| e.config.clone())
    }

    /// `GET /exec/{id}/json`: once started, waits a moment for the exit code, since
    /// clients ask for it as soon as the output ends.
    pub async fn inspect(&self, id: &str) -> Result<ExecDetails, BackendError> {
        let (container, config, started, mut exit) = {
            let g = self.inner.lock().map_err(|_| poisoned())?;
            let e = g.1.get(id).ok_or_else(|| no_such_exec(id))?;
            (
                e.container.clone(),
                e.config.clone(),
                e.started,
                e.exit.clone(),
            )
        };
        if started && exit.borrow().is_none() {
            let _ = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some)).await;
        }
        let code = *exit.borrow();
        Ok(ExecDetails {
            id: id.to_string(),
            container_id: container,
            running: started && code.is_none(),
            exit_code: code.map(i64::from),
            pid: 0,
            config,
        })
    }

    /// `POST /exec/{id}/resize`.
    pub async fn resize(
        &self,
        engine: &Engine,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), BackendError> {
        let container = {
            let g = self.inner.lock().map_err(|_| poisoned())?;
            g.1.get(id)
                .ok_or_else(|| no_such_exec(id))?
                .container
                .clone()
        };
        engine
            .resize(&container, Some(id), rows, cols)
            .await
            .map_err(api_error)
    }

    /// The exec IDs of container `id`, for inspect.
    pub fn ids_of(&self, engine: &Engine, id: &str) -> Vec<String> {
        let Ok(full) = engine.container(id).map(|r| r.id) else {
            return Vec::new();
        };
        self.inner
            .lock()
            .map(|g| {
                g.1.iter()
                    .filter(|(_, e)| e.container == full)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn poisoned() -> BackendError {
    BackendError::Other("the exec table is poisoned by an earlier panic".into())
}
