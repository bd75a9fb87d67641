//! Work on existing containers: attaching to a process's streams, exec, stop, kill,
//! wait, remove, logs, stats, top, copies in and out, and commit.

use std::time::{Duration, Instant};

use berth_containers::{ContainerRecord, Status, VmmProcess};
use berth_protocol::chunk::{receive_all, send_all, write_chunk, Chunk, LogRecord};
use berth_protocol::spec::{docker_spec, RunConfig};
use berth_protocol::{
    Client, ContainerStats, ExecRequest, ProcessInfo, ProcessRef, StdioOptions, StreamTarget,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::error::{Context, Error, Result};
use crate::lifecycle::FilesAccess;
use crate::spec::merge_env;
use crate::vm::{self, VmFiles};
use crate::{blocking, image, logfile, Engine};

/// Which streams of a process to open before it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attach {
    /// Forward stdin too.
    pub stdin: bool,
}

/// The open streams of one process: raw stdout (the terminal with a TTY), raw stderr
/// (none with a TTY), and stdin, which takes [`ProcessStreams::send_stdin`] chunks.
#[derive(Debug)]
pub struct ProcessStreams {
    /// stdout, or the terminal's output.
    pub stdout: UnixStream,
    /// stderr; `None` with a TTY.
    pub stderr: Option<UnixStream>,
    /// stdin, in chunk frames; `None` unless asked for.
    pub stdin: Option<UnixStream>,
}

impl ProcessStreams {
    /// Opens the streams of `process` in the VM behind `files`.
    pub async fn open(
        files: &VmFiles,
        process: &ProcessRef,
        tty: bool,
        stdin: bool,
    ) -> Result<Self> {
        let stdout = vm::open_stream(files, StreamTarget::Stdout(process.clone())).await?;
        let stderr = if tty {
            None
        } else {
            Some(vm::open_stream(files, StreamTarget::Stderr(process.clone())).await?)
        };
        let stdin = if stdin {
            Some(vm::open_stream(files, StreamTarget::Stdin(process.clone())).await?)
        } else {
            None
        };
        Ok(Self {
            stdout,
            stderr,
            stdin,
        })
    }
}

/// Forwards everything `from` yields to a process's stdin stream, then closes stdin
/// (the process sees EOF).
pub async fn pump_stdin(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: UnixStream,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        write_chunk(&mut to, &Chunk::Data(buf[..n].to_vec())).await?;
        to.flush().await?;
    }
    write_chunk(&mut to, &Chunk::End).await?;
    to.flush().await?;
    Ok(())
}

/// What `exec` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `KEY=VALUE` entries over the container's environment.
    pub env: Vec<String>,
    /// Working directory; the container's when `None`.
    pub workdir: Option<String>,
    /// `USER[:GROUP]`; the container's when `None`.
    pub user: Option<String>,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
}

/// A process made by `exec`, created in the container but not started.
#[derive(Debug)]
pub struct ExecProcess {
    /// The agent of the container's VM.
    pub client: Client,
    /// The process.
    pub process: ProcessRef,
    /// The VM's files (to open the process's streams).
    pub files: VmFiles,
}

impl ExecProcess {
    /// Opens the process's streams (before [`ExecProcess::start`], so nothing is lost).
    pub async fn streams(&self, tty: bool, stdin: bool) -> Result<ProcessStreams> {
        ProcessStreams::open(&self.files, &self.process, tty, stdin).await
    }

    /// Starts the process.
    pub async fn start(&self) -> Result<()> {
        self.client.start(self.process.clone()).await?;
        Ok(())
    }

    /// Waits for the process's exit code.
    pub async fn wait(&self) -> Result<i32> {
        Ok(self.client.wait(self.process.clone()).await?)
    }
}

/// What `wait` waits for, as docker's `condition`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// The container is not running (at once when it is not).
    #[default]
    NotRunning,
    /// The container's next exit (after a start still to come).
    NextExit,
    /// The container is removed; its exit code is still returned.
    Removed,
}

/// Which kept output `logs` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep returning new output until the container stops.
    pub follow: bool,
    /// Only the last N lines of what is kept.
    pub tail: Option<usize>,
    /// Only lines from this time on (nanoseconds since the epoch).
    pub since_ns: Option<u64>,
    /// Only lines before this time (nanoseconds since the epoch).
    pub until_ns: Option<u64>,
}

/// Reads a container's kept output in batches of lines: the first batch is what is kept
/// (tailed), later ones what arrives while following.
#[derive(Debug)]
pub struct LogCursor {
    id: String,
    path: std::path::PathBuf,
    offset: u64,
    opts: LogOptions,
    first: bool,
    done: bool,
    /// Who keeps the log (the monitor, and the foreground berth it stands by for), as
    /// last seen while the container ran: each writes the container's last output before
    /// it exits.
    writers: Vec<VmmProcess>,
    /// When the container was first seen stopped.
    stopped: Option<Instant>,
}

/// How long a follower waits, once the container has stopped, for a writer of its log
/// that is still alive (a monitor that stays for a restart, say).
const LAST_OUTPUT_WAIT: Duration = Duration::from_secs(10);

impl LogCursor {
    fn keep(&self, mut lines: Vec<LogRecord>) -> Vec<LogRecord> {
        let o = self.opts;
        lines.retain(|r| {
            o.since_ns.is_none_or(|s| r.time_ns >= s) && o.until_ns.is_none_or(|u| r.time_ns < u)
        });
        lines
    }

    fn read(&mut self) -> Result<Vec<LogRecord>> {
        let (recs, next) = logfile::read_from(&self.path, self.offset)
            .map_err(|e| Error::io("read", &self.path, e))?;
        self.offset = next;
        Ok(self.keep(logfile::lines(recs)))
    }

    /// The next batch; `None` at the end (at once without `follow`, else once the
    /// container has stopped and its last output is read).
    pub async fn next(&mut self, engine: &Engine) -> Result<Option<Vec<LogRecord>>> {
        if self.first {
            self.first = false;
            let mut lines = self.read()?;
            if let Some(n) = self.opts.tail {
                lines = lines.split_off(lines.len().saturating_sub(n));
            }
            if !self.opts.follow {
                self.done = true;
            }
            return Ok(Some(lines));
        }
        while !self.done {
            let record = engine.store.resolve(&self.id).ok();
            let running = record
                .as_ref()
                .is_some_and(|r| r.status() == Status::Running);
            if let Some(m) = record.as_ref().and_then(|r| r.state.monitor) {
                self.writers = std::iter::once(m.process).chain(m.standby_for).collect();
            }
            let mut lines = self.read()?;
            if running {
                self.stopped = None;
            } else {
                // The container's last output may still be on its way into the log: the
                // end comes once every writer has exited (and so written it), then one
                // more read.
                let stopped = *self.stopped.get_or_insert_with(Instant::now);
                let writing = self.writers.iter().any(VmmProcess::is_alive);
                if !writing || stopped.elapsed() > LAST_OUTPUT_WAIT {
                    lines.extend(self.read()?);
                    self.done = true;
                }
            }
            if !lines.is_empty() {
                return Ok(Some(lines));
            }
            if !self.done {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(None)
    }
}

/// A signal from its name (`KILL`, `SIGKILL`, `RTMIN+1`) or number, as the Linux number
/// the guest gets (never the host's own numbering: see [`berth_protocol::signal`]).
pub fn parse_signal(s: &str) -> Result<i32> {
    berth_protocol::signal::by_name(s).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "invalid signal \"{s}\": give a name like TERM or KILL, or a number from 1 to {}",
            berth_protocol::signal::MAX
        ))
    })
}

/// Receives the tar the agent sends for `target`; a failure says it was doing `what`.
async fn receive_tar(files: &VmFiles, target: StreamTarget, what: String) -> Result<Vec<u8>> {
    let mut stream = vm::open_stream(files, target).await?;
    let mut tar_bytes = Vec::new();
    receive_all(&mut stream, &mut tar_bytes)
        .await
        .map_err(|e| match e {
            Ok(w) => Error::Wire(w),
            Err(f) => f.into(),
        })
        .with_context(|| what)?;
    Ok(tar_bytes)
}
impl Engine {
    /// A running container and a connection to its agent.
    pub async fn running(&self, name: &str) -> Result<(ContainerRecord, VmFiles, Client)> {
        let record = self.store.resolve(name)?;
        if record.status() != Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                record.name
            )));
        }
        let files = self.files(&record);
        let client = vm::connect_agent(&files, record.state.vmm, Duration::from_secs(10)).await?;
        Ok((record, files, client))
    }

    /// Creates an exec process in running container `name`; start it with
    /// [`ExecProcess::start`].
    pub async fn exec(&self, name: &str, opts: &ExecOptions) -> Result<ExecProcess> {
        if opts.command.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command to run".into()));
        }
        let (record, files, client) = self.running(name).await?;
        let spec = &record.spec;
        let oci = docker_spec(&RunConfig {
            args: opts.command.clone(),
            env: merge_env(&spec.env, &opts.env),
            cwd: opts.workdir.clone().unwrap_or_else(|| spec.workdir.clone()),
            hostname: String::new(),
            tty: opts.tty,
            memory_bytes: None,
            cpus: None,
            pids_limit: None,
        });
        let process = oci
            .process()
            .clone()
            .ok_or_else(|| Error::Vm("the default spec has no process".into()))?;
        let exec_id = berth_containers::generate_id()?[..16].to_string();
        let user = opts
            .user
            .clone()
            .or_else(|| (!spec.user.is_empty()).then(|| spec.user.clone()));
        client
            .exec(ExecRequest {
                container: record.id.clone(),
                exec: exec_id.clone(),
                process,
                user,
                stdio: StdioOptions {
                    tty: opts.tty,
                    open_stdin: opts.interactive,
                },
            })
            .await?;
        Ok(ExecProcess {
            client,
            process: ProcessRef::exec(record.id.clone(), exec_id),
            files,
        })
    }

    /// Stops container `name`: `signal` (SIGTERM by default), SIGKILL after `grace`,
    /// then power off. A container that is not running is left as it is.
    pub async fn stop(&self, name: &str, grace: Duration, signal: Option<i32>) -> Result<()> {
        let record = self.store.resolve(name)?;
        if record.status() != Status::Running {
            return Ok(());
        }
        let files = self.files(&record);
        let vmm = record.state.vmm;
        let init = ProcessRef::init(record.id.clone());
        let mut code = None;
        if let Ok(client) = vm::connect_agent(&files, vmm, Duration::from_secs(10)).await {
            let _ = client
                .signal(init.clone(), signal.unwrap_or(berth_protocol::signal::TERM))
                .await;
            code = match tokio::time::timeout(grace, client.wait(init.clone())).await {
                Ok(Ok(c)) => Some(c),
                _ => {
                    let _ = client
                        .signal(init.clone(), berth_protocol::signal::KILL)
                        .await;
                    tokio::time::timeout(Duration::from_secs(10), client.wait(init))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                }
            };
            vm::shutdown(Some(&client), vmm).await;
        } else if let Some(vmm) = vmm {
            vm::kill_vmm(vmm).await;
        }
        // With --rm the monitor may have removed the container already.
        let Ok(record) = self.store.resolve(&record.id) else {
            return Ok(());
        };
        // The code this stop saw wins: the container's monitor, seeing the VM powered off
        // under its own wait, may have recorded a crash (255) first.
        if code.is_some() || record.state.finished_at.is_none() || record.state.exit_code.is_none()
        {
            self.finish(&record, code.or(Some(137)), None)?;
        }
        Ok(())
    }

    /// Sends `signal` to the main process of running container `name`.
    pub async fn kill(&self, name: &str, signal: i32) -> Result<()> {
        let (record, _, client) = self.running(name).await?;
        client
            .signal(ProcessRef::init(record.id.clone()), signal)
            .await?;
        Ok(())
    }

    /// Resizes the terminal of a process of running container `name`.
    pub async fn resize(&self, name: &str, exec: Option<&str>, rows: u16, cols: u16) -> Result<()> {
        let (record, _, client) = self.running(name).await?;
        let process = match exec {
            Some(e) => ProcessRef::exec(record.id.clone(), e.to_string()),
            None => ProcessRef::init(record.id.clone()),
        };
        client.resize_tty(process, rows, cols).await?;
        Ok(())
    }

    /// Waits for container `name` as `condition` says and returns its exit code.
    pub async fn wait(&self, name: &str, condition: WaitCondition) -> Result<i32> {
        let first = self.store.resolve(name)?;
        self.wait_from(&first, condition).await
    }

    /// Waits as [`Engine::wait`] does, for a container as it was when the caller looked
    /// (`first`): a [`WaitCondition::NextExit`] counts only starts after that.
    pub async fn wait_from(
        &self,
        first: &ContainerRecord,
        condition: WaitCondition,
    ) -> Result<i32> {
        let id = first.id.clone();
        // A start after this call shows as a new start time.
        let mut seen_start = condition != WaitCondition::NextExit;
        let mut code = None;
        loop {
            let r = match self.store.resolve(&id) {
                Ok(r) => r,
                // Removed (with --rm, say): the exit code is what its agent said.
                Err(berth_containers::Error::NotFound(_)) if seen_start => {
                    return Ok(code.unwrap_or(0))
                }
                Err(e) => return Err(e.into()),
            };
            seen_start |= r.state.started_at != first.state.started_at;
            match r.status() {
                Status::Running => {
                    seen_start = true;
                    if code.is_none() {
                        code = self.wait_agent(&r).await;
                    }
                    if code.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
                Status::Created if condition == WaitCondition::NotRunning => return Ok(0),
                Status::Created => {}
                Status::Exited if !seen_start => {}
                Status::Exited if r.state.finished_at.is_none() => {
                    // The VMM is gone but its end is not recorded yet: give the monitor a moment.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // Gone meanwhile (a --rm container's monitor removed it): the loop's
                    // top returns what the agent said.
                    if let Ok(r) = self.store.resolve(&id) {
                        if r.state.finished_at.is_none() && r.status() != Status::Running {
                            self.finish(
                                &r,
                                code,
                                Some("the micro-VM stopped unexpectedly".into()),
                            )?;
                        }
                    }
                    continue;
                }
                Status::Exited => {
                    let exit = code.or(r.state.exit_code).unwrap_or(0);
                    if condition != WaitCondition::Removed {
                        return Ok(exit);
                    }
                    code = Some(exit);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The exit code of a running container's main process, from its agent; `None` when
    /// the agent cannot be reached (the VM is booting or gone).
    async fn wait_agent(&self, record: &ContainerRecord) -> Option<i32> {
        let files = self.files(record);
        let client = vm::connect_agent(&files, record.state.vmm, Duration::from_secs(2))
            .await
            .ok()?;
        client.wait(ProcessRef::init(record.id.clone())).await.ok()
    }

    /// Removes container `name`; a running one only with `force` (its VM is killed).
    pub async fn remove(&self, name: &str, force: bool, volumes: bool) -> Result<()> {
        let record = self.store.resolve(name)?;
        if record.status() == Status::Running {
            if !force {
                return Err(Error::Conflict(format!(
                    "you cannot remove a running container {}: stop the container before removing it, or use rm -f",
                    record.short_id()
                )));
            }
            if let Some(vmm) = record.state.vmm {
                vm::kill_vmm(vmm).await;
            }
        }
        let anonymous = if volumes {
            self.anonymous_volumes(&record)?
        } else {
            Vec::new()
        };
        self.files(&record).remove_sockets();
        crate::networks::forget_names(&record);
        self.store.remove(&record.id)?;
        image::unpin(&self.images, &record.id)?;
        self.remove_volumes(&anonymous);
        Ok(())
    }

    /// Reads the kept output of container `name`.
    pub fn logs(&self, name: &str, opts: LogOptions) -> Result<LogCursor> {
        let record = self.store.resolve(name)?;
        Ok(LogCursor {
            path: self.files(&record).logs(),
            id: record.id,
            offset: 0,
            opts,
            first: true,
            done: false,
            writers: Vec::new(),
            stopped: None,
        })
    }

    /// One sample of the cgroup counters of running container `name`.
    pub async fn stats(&self, name: &str) -> Result<(ContainerRecord, ContainerStats)> {
        let (record, _, client) = self.running(name).await?;
        let s = client.stats(&record.id).await?;
        Ok((record, s))
    }

    /// The processes of running container `name`.
    pub async fn top(&self, name: &str) -> Result<Vec<ProcessInfo>> {
        let (record, _, client) = self.running(name).await?;
        Ok(client.top(&record.id).await?)
    }

    /// `path` of container `name` (running or not) as a tar.
    pub async fn copy_out(&self, name: &str, path: &str) -> Result<Vec<u8>> {
        let access = FilesAccess::open(self, name).await?;
        let (record, files) = (access.record.clone(), access.files.clone());
        let target = StreamTarget::CopyOut {
            container: record.id.clone(),
            path: path.to_string(),
        };
        let what = format!("copy {path} out of {}", record.name);
        access.run(self, receive_tar(&files, target, what)).await
    }

    /// Unpacks `tar` into directory `dir` of container `name` (running or not).
    pub async fn copy_in(&self, name: &str, dir: &str, tar: &[u8]) -> Result<()> {
        let access = FilesAccess::open(self, name).await?;
        let (record, files) = (access.record.clone(), access.files.clone());
        access
            .run(self, async {
                let mut stream = vm::open_stream(
                    &files,
                    StreamTarget::CopyIn {
                        container: record.id.clone(),
                        path: dir.to_string(),
                    },
                )
                .await?;
                let mut reader: &[u8] = tar;
                send_all(&mut reader, &mut stream).await?;
                if let Some(Chunk::Error(w)) =
                    berth_protocol::chunk::read_chunk(&mut stream).await?
                {
                    return Err(Error::Wire(w).context(format!("copy into {}", record.name)));
                }
                Ok(())
            })
            .await
    }

    /// Makes the changes of container `name` a new image tagged `tag`; returns its ID.
    pub async fn commit(&self, name: &str, tag: &str) -> Result<String> {
        let access = FilesAccess::open(self, name).await?;
        let (record, files) = (access.record.clone(), access.files.clone());
        let target = StreamTarget::Commit {
            container: record.id.clone(),
        };
        let what = format!("read the changes of {}", record.name);
        let layer = access.run(self, receive_tar(&files, target, what)).await?;
        let (images, tag) = (self.images.clone(), tag.to_string());
        blocking(move || image::commit(&images, &record, &layer, &tag)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        // Linux's number for the guest, whatever the host calls it.
        assert_eq!(parse_signal("USR1").unwrap(), 10);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[tokio::test]
    async fn logs_tail_and_filter_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = logfile::LogWriter::open(&path).unwrap();
        for (t, line) in [(10u64, "a\n"), (20, "b\nc\n"), (30, "d\n")] {
            w.write(&LogRecord {
                stream: berth_protocol::chunk::LogStream::Stdout,
                time_ns: t,
                data: line.as_bytes().to_vec(),
            })
            .unwrap();
        }
        let cursor = |opts| LogCursor {
            id: "x".into(),
            path: path.clone(),
            offset: 0,
            opts,
            first: true,
            done: false,
            writers: Vec::new(),
            stopped: None,
        };
        let engine_dir = tempfile::tempdir().unwrap();
        let engine = Engine::open_at(engine_dir.path()).unwrap();
        let text = |b: Vec<LogRecord>| -> String {
            b.iter()
                .map(|r| String::from_utf8_lossy(&r.data).to_string())
                .collect()
        };
        let mut c = cursor(LogOptions {
            tail: Some(2),
            ..Default::default()
        });
        assert_eq!(text(c.next(&engine).await.unwrap().unwrap()), "c\nd\n");
        assert!(
            c.next(&engine).await.unwrap().is_none(),
            "no follow: one batch"
        );
        let mut c = cursor(LogOptions {
            since_ns: Some(20),
            until_ns: Some(30),
            ..Default::default()
        });
        assert_eq!(text(c.next(&engine).await.unwrap().unwrap()), "b\nc\n");
        // Following a container that is not running ends after what is kept.
        let mut c = cursor(LogOptions {
            follow: true,
            ..Default::default()
        });
        assert_eq!(
            text(c.next(&engine).await.unwrap().unwrap()),
            "a\nb\nc\nd\n"
        );
        assert!(c.next(&engine).await.unwrap().is_none());
    }
}
