//! An in-memory test double of [`Backend`]: containers are records in a
//! mutex, and a container's "process" is a tiny script picked by its argv:
//!
//! - `echo ARGS..` writes the arguments and a newline, exits 0;
//! - `sh -c "exit N"` exits N; `sh -c "echo X >&2"` writes X to stderr;
//! - `cat` copies stdin to stdout until EOF, exits 0;
//! - `sleep N` sleeps N seconds or until killed (then exits 137);
//! - anything else writes "not found" to stderr and exits 127.
//!
//! Logs are kept in memory (no `follow`). Images are a list of names.
//! Volumes are records in the same mutex; a container's mounts are read
//! from its create config the way Docker reads them (binds `SRC:DST[:ro]`,
//! a source from `/` being a host folder, else a volume), and the volumes
//! they name are made on create.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_docker_api::*;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{broadcast, oneshot, watch, Notify};

#[derive(Debug, Clone, Default)]
struct Phase {
    running: bool,
    exits: u64,
    exit_code: i64,
    removed: bool,
}

struct Ctr {
    id: String,
    name: String,
    cfg: CreateConfig,
    argv: Vec<String>,
    created_ns: u64,
    status: ContainerStatus,
    exit_code: i64,
    started: Option<u64>,
    finished: Option<u64>,
    logs: Arc<Mutex<Vec<LogRecord>>>,
    phase: watch::Sender<Phase>,
    /// Streams of the running process nobody has attached to yet.
    pending: Option<Streams>,
    /// An attacher registered before start.
    attacher: Option<oneshot::Sender<Streams>>,
    kill: Arc<Notify>,
    exec_ids: Vec<String>,
    uploaded: usize,
    mounts: Vec<MountPoint>,
    /// Volumes made for this container alone (`rm -v` removes them).
    anonymous: Vec<String>,
}

#[derive(Clone)]
struct Vol {
    labels: BTreeMap<String, String>,
    created_ns: u64,
    anonymous: bool,
}

struct ExecRec {
    id: String,
    container: String,
    cfg: ExecConfig,
    running: bool,
    exit_code: Option<i64>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Ctr>,
    execs: HashMap<String, ExecRec>,
    images: Vec<(String, Vec<String>)>,
    volumes: BTreeMap<String, Vol>,
    networks: BTreeMap<String, NetworkInfo>,
    next: u64,
}

impl State {
    /// Network `key` (name or ID prefix) with the containers on it.
    fn network(&self, key: &str) -> Result<NetworkInfo, BackendError> {
        let n = self
            .networks
            .values()
            .find(|n| n.name == key || (!key.is_empty() && n.id.starts_with(key)))
            .ok_or_else(|| BackendError::NotFound(format!("network {key} not found")))?;
        let mut n = n.clone();
        n.endpoints = self
            .containers
            .values()
            .filter(|c| c.cfg.network_mode == n.name)
            .enumerate()
            .map(|(i, c)| Endpoint {
                network: n.name.clone(),
                network_id: n.id.clone(),
                container_id: c.id.clone(),
                container_name: c.name.clone(),
                address: format!("10.89.1.{}", i + 2),
                prefix: 24,
                gateway: n.gateway.clone(),
                aliases: c.cfg.network_aliases.clone(),
            })
            .collect();
        Ok(n)
    }
}

/// The fake backend (clones share state).
#[derive(Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    last_remove: Arc<Mutex<Option<(bool, bool)>>>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn no_such(id: &str) -> BackendError {
    BackendError::NotFound(format!("No such container: {id}"))
}

fn no_such_volume(name: &str) -> BackendError {
    BackendError::NotFound(format!("get {name}: no such volume"))
}

fn volume_point(name: &str, destination: &str, rw: bool) -> MountPoint {
    MountPoint {
        typ: "volume".into(),
        name: name.into(),
        source: format!("/fake/volumes/{name}/_data"),
        destination: destination.into(),
        driver: "local".into(),
        mode: if rw { "z".into() } else { "ro".into() },
        rw,
        propagation: String::new(),
    }
}

fn bind_point(source: &str, destination: &str, rw: bool) -> MountPoint {
    MountPoint {
        typ: "bind".into(),
        source: source.into(),
        destination: destination.into(),
        mode: if rw { String::new() } else { "ro".into() },
        rw,
        propagation: "rprivate".into(),
        ..MountPoint::default()
    }
}

impl State {
    /// The containers using volume `name`.
    fn users(&self, name: &str) -> Vec<String> {
        self.containers
            .values()
            .filter(|c| c.mounts.iter().any(|m| m.typ == "volume" && m.name == name))
            .map(|c| c.id.clone())
            .collect()
    }

    fn volume_info(&self, name: &str) -> Result<VolumeInfo, BackendError> {
        let v = self.volumes.get(name).ok_or_else(|| no_such_volume(name))?;
        Ok(VolumeInfo {
            name: name.into(),
            mountpoint: format!("/fake/volumes/{name}/_data"),
            created_ns: v.created_ns,
            labels: v.labels.clone(),
            anonymous: v.anonymous,
            containers: self.users(name).len(),
        })
    }

    /// Makes volume `name` unless it exists; an empty name makes an anonymous one.
    fn make_volume(&mut self, name: &str, labels: BTreeMap<String, String>) -> String {
        let (name, anonymous) = if name.is_empty() {
            self.next += 1;
            (format!("{:08x}{}", self.next, "a".repeat(56)), true)
        } else {
            (name.to_string(), false)
        };
        self.volumes.entry(name.clone()).or_insert(Vol {
            labels,
            created_ns: now(),
            anonymous,
        });
        name
    }

    /// A create config's mounts, the volumes they name made, as Docker reads them.
    fn mounts_of(
        &mut self,
        cfg: &CreateConfig,
    ) -> Result<(Vec<MountPoint>, Vec<String>), BackendError> {
        let mut out = Vec::new();
        let mut anonymous = Vec::new();
        let bad = |m: String| BackendError::InvalidArgument(m);
        for b in &cfg.binds {
            let parts: Vec<&str> = b.split(':').collect();
            let (src, dst, rw) = match parts.as_slice() {
                [src, dst] => (*src, *dst, true),
                [src, dst, opts] => (*src, *dst, !opts.split(',').any(|o| o == "ro")),
                _ => return Err(bad(format!("invalid volume specification: '{b}'"))),
            };
            if src.starts_with('/') {
                out.push(bind_point(src, dst, rw));
            } else {
                let name = self.make_volume(src, BTreeMap::new());
                out.push(volume_point(&name, dst, rw));
            }
        }
        for m in &cfg.mounts {
            match m.typ.as_str() {
                "bind" => out.push(bind_point(&m.source, &m.target, !m.read_only)),
                "volume" => {
                    let name = self.make_volume(&m.source, BTreeMap::new());
                    if m.source.is_empty() {
                        anonymous.push(name.clone());
                    }
                    out.push(volume_point(&name, &m.target, !m.read_only));
                }
                _ => out.push(MountPoint {
                    typ: "tmpfs".into(),
                    destination: m.target.clone(),
                    rw: !m.read_only,
                    ..MountPoint::default()
                }),
            }
        }
        for path in cfg.tmpfs.keys() {
            out.push(MountPoint {
                typ: "tmpfs".into(),
                destination: path.clone(),
                rw: true,
                ..MountPoint::default()
            });
        }
        for path in &cfg.volumes {
            if out.iter().any(|m| &m.destination == path) {
                continue;
            }
            let name = self.make_volume("", BTreeMap::new());
            anonymous.push(name.clone());
            out.push(volume_point(&name, path, true));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = out.iter().find(|m| !seen.insert(m.destination.clone())) {
            return Err(bad(format!("Duplicate mount point: {}", dup.destination)));
        }
        Ok((out, anonymous))
    }

    fn find(&self, key: &str) -> Result<String, BackendError> {
        if self.containers.contains_key(key) {
            return Ok(key.to_string());
        }
        let key_name = key.trim_start_matches('/');
        if let Some(c) = self.containers.values().find(|c| c.name == key_name) {
            return Ok(c.id.clone());
        }
        let matches: Vec<&String> = self
            .containers
            .keys()
            .filter(|id| !key.is_empty() && id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(no_such(key)),
        }
    }

    fn ctr(&mut self, key: &str) -> Result<&mut Ctr, BackendError> {
        let id = self.find(key)?;
        Ok(self.containers.get_mut(&id).expect("found"))
    }

    fn image(&self, name: &str) -> Result<(String, Vec<String>), BackendError> {
        let full = if name.contains(':') || name.starts_with("sha256") {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        self.images
            .iter()
            .find(|(id, tags)| tags.contains(&full) || id == name || id.starts_with(name))
            .cloned()
            .ok_or_else(|| BackendError::NotFound(format!("No such image: {name}")))
    }
}

/// Writes output both to a pipe (if anyone reads it) and to the log.
struct Out<'a> {
    pipe: &'a mut DuplexStream,
    logs: &'a Mutex<Vec<LogRecord>>,
    stream: LogStream,
}

impl Out<'_> {
    async fn write(&mut self, data: &[u8]) {
        let _ = self.pipe.write_all(data).await;
        self.logs.lock().unwrap().push(LogRecord {
            stream: self.stream,
            time_ns: now(),
            data: data.to_vec(),
        });
    }
}

async fn run_script(
    argv: &[String],
    stdin: Option<DuplexStream>,
    out: &mut Out<'_>,
    err: &mut Out<'_>,
    kill: &Notify,
) -> i64 {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["echo", rest @ ..] => {
            out.write(format!("{}\n", rest.join(" ")).as_bytes()).await;
            0
        }
        ["sh", "-c", script] => {
            if let Some(code) = script.strip_prefix("exit ") {
                code.trim().parse().unwrap_or(2)
            } else if let Some(msg) = script
                .strip_prefix("echo ")
                .and_then(|s| s.strip_suffix(" >&2"))
            {
                err.write(format!("{msg}\n").as_bytes()).await;
                0
            } else {
                err.write(b"sh: unsupported by the fake\n").await;
                2
            }
        }
        ["cat"] => {
            if let Some(mut stdin) = stdin {
                let mut buf = [0u8; 4096];
                loop {
                    match stdin.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.write(&buf[..n]).await,
                    }
                }
            }
            0
        }
        ["sleep", secs] => {
            let secs: u64 = secs.parse().unwrap_or(1);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => 0,
                () = kill.notified() => 137,
            }
        }
        [cmd, ..] => {
            err.write(format!("exec: \"{cmd}\": executable file not found in $PATH\n").as_bytes())
                .await;
            127
        }
        [] => 0,
    }
}

/// Pipes for a process: (streams for the API, process ends).
fn pipes(tty: bool, stdin: bool) -> (Streams, DuplexStream, DuplexStream, Option<DuplexStream>) {
    let (api_out, proc_out) = tokio::io::duplex(64 * 1024);
    let (api_err, proc_err) = tokio::io::duplex(64 * 1024);
    let (api_in, proc_in) = if stdin {
        let (a, p) = tokio::io::duplex(64 * 1024);
        (Some(a), Some(p))
    } else {
        (None, None)
    };
    let streams = Streams {
        stdout: Box::new(api_out),
        stderr: (!tty).then(|| Box::new(api_err) as Box<dyn AsyncRead + Send + Unpin>),
        stdin: api_in.map(|a| Box::new(a) as Box<dyn AsyncWrite + Send + Unpin>),
        tty,
    };
    (streams, proc_out, proc_err, proc_in)
}

impl Fake {
    /// A fake with the image `busybox:latest` (and one with a registry
    /// host and path in its name).
    pub fn new() -> Fake {
        let state = State {
            images: vec![
                ("sha256:b0b0".to_string(), vec!["busybox:latest".into()]),
                (
                    "sha256:5a5a".into(),
                    vec!["localhost:5000/foo/bar:tag".into()],
                ),
            ],
            ..State::default()
        };
        Fake {
            state: Arc::new(Mutex::new(state)),
            events: broadcast::channel(256).0,
            last_remove: Arc::default(),
        }
    }

    fn emit(&self, typ: &str, action: &str, id: &str, attrs: &[(&str, &str)]) {
        let _ = self.events.send(Event {
            typ: typ.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_ns: now(),
        });
    }

    /// Bytes uploaded with archive PUT into a container.
    pub fn uploaded(&self, id: &str) -> usize {
        let mut s = self.state.lock().unwrap();
        s.ctr(id).map(|c| c.uploaded).unwrap_or(0)
    }

    /// Whether someone waits to attach to a container not yet started.
    pub fn has_attacher(&self, id: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        s.ctr(id).is_ok_and(|c| c.attacher.is_some())
    }

    /// How many event streams are open.
    pub fn event_subscribers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Whether a container (by name or id) still exists.
    pub fn exists(&self, id: &str) -> bool {
        self.state.lock().unwrap().find(id).is_ok()
    }

    fn summary(c: &Ctr) -> ContainerSummary {
        ContainerSummary {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.cfg.image.clone(),
            image_id: "sha256:b0b0".into(),
            command: c.argv.join(" "),
            created_ns: c.created_ns,
            status: c.status,
            exit_code: c.exit_code,
            started_at_ns: c.started,
            finished_at_ns: c.finished,
            labels: c.cfg.labels.clone(),
            ports: Self::ports(c),
            network_mode: c.cfg.network_mode.clone(),
        }
    }

    /// The fake "binds" a free port as 40000 + the container port.
    fn ports(c: &Ctr) -> Vec<PortBinding> {
        c.cfg
            .port_bindings
            .iter()
            .map(|p| PortBinding {
                host_port: if p.host_port == 0 {
                    40000 + p.container_port % 20000
                } else {
                    p.host_port
                },
                ..p.clone()
            })
            .collect()
    }

    /// The arguments the last container remove was called with: (force, volumes).
    pub fn last_remove(&self) -> Option<(bool, bool)> {
        *self.last_remove.lock().unwrap()
    }

    /// The config a container (by name or id) was created with.
    pub fn config(&self, id: &str) -> Option<CreateConfig> {
        let mut s = self.state.lock().unwrap();
        s.ctr(id).ok().map(|c| c.cfg.clone())
    }

    /// The names of the volumes.
    pub fn volume_names(&self) -> Vec<String> {
        self.state.lock().unwrap().volumes.keys().cloned().collect()
    }

    fn remove_locked(&self, s: &mut State, id: &str, volumes: bool) {
        if let Some(c) = s.containers.remove(id) {
            if volumes {
                for v in &c.anonymous {
                    if s.users(v).is_empty() {
                        s.volumes.remove(v);
                    }
                }
            }
            c.phase.send_modify(|p| p.removed = true);
            self.emit(
                "container",
                "destroy",
                id,
                &[("name", &c.name), ("image", &c.cfg.image)],
            );
        }
    }

    fn finished(&self, id: String, code: i64) {
        let mut s = self.state.lock().unwrap();
        let Some(c) = s.containers.get_mut(&id) else {
            return;
        };
        c.status = ContainerStatus::Exited;
        c.exit_code = code;
        c.finished = Some(now());
        c.phase.send_modify(|p| {
            p.running = false;
            p.exits += 1;
            p.exit_code = code;
        });
        let (name, image, auto) = (c.name.clone(), c.cfg.image.clone(), c.cfg.auto_remove);
        let code_s = code.to_string();
        self.emit(
            "container",
            "die",
            &id,
            &[("name", &name), ("image", &image), ("exitCode", &code_s)],
        );
        if auto {
            self.remove_locked(&mut s, &id, true);
        }
    }
}

#[async_trait]
impl Backend for Fake {
    fn version(&self) -> VersionInfo {
        VersionInfo {
            version: "0.1.0-fake".into(),
            git_commit: "fake".into(),
            kernel_version: "6.1.0".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            build_time: String::new(),
        }
    }

    async fn info(&self) -> Result<SystemInfo, BackendError> {
        let s = self.state.lock().unwrap();
        let running = s
            .containers
            .values()
            .filter(|c| c.status == ContainerStatus::Running)
            .count() as u64;
        Ok(SystemInfo {
            id: "FAKE".into(),
            name: "fakehost".into(),
            containers_running: running,
            containers_paused: 0,
            containers_stopped: s.containers.len() as u64 - running,
            images: s.images.len() as u64,
            ncpu: 2,
            mem_total: 1 << 30,
            driver: "fake".into(),
            operating_system: "Fake OS".into(),
            root_dir: "/nowhere".into(),
        })
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.containers
            .values()
            .filter(|c| all || c.status == ContainerStatus::Running)
            .map(Fake::summary)
            .collect())
    }

    async fn inspect_container(&self, key: &str) -> Result<ContainerDetails, BackendError> {
        let mut s = self.state.lock().unwrap();
        let id = s.ctr(key)?.id.clone();
        let endpoint = s
            .containers
            .get(&id)
            .and_then(|c| s.network(&c.cfg.network_mode).ok())
            .and_then(|n| n.endpoints.into_iter().find(|e| e.container_id == id));
        let c = s.ctr(key)?;
        Ok(ContainerDetails {
            id: c.id.clone(),
            name: c.name.clone(),
            created_ns: c.created_ns,
            image_id: "sha256:b0b0".into(),
            path: c.argv.first().cloned().unwrap_or_default(),
            args: c.argv.iter().skip(1).cloned().collect(),
            state: ContainerState {
                status: c.status,
                pid: if c.status == ContainerStatus::Running {
                    4242
                } else {
                    0
                },
                exit_code: c.exit_code,
                started_at_ns: c.started,
                finished_at_ns: c.finished,
                ..Default::default()
            },
            config: c.cfg.clone(),
            exec_ids: c.exec_ids.clone(),
            restart_count: 0,
            log_path: String::new(),
            ports: Self::ports(c),
            ip_address: "192.168.249.2".into(),
            endpoint,
            gateway: "192.168.249.1".into(),
            mac_address: String::new(),
            mounts: c.mounts.clone(),
        })
    }

    async fn create_container(
        &self,
        name: Option<String>,
        cfg: CreateConfig,
    ) -> Result<Created, BackendError> {
        let mut s = self.state.lock().unwrap();
        s.image(&cfg.image)?;
        s.next += 1;
        let id = format!("{:06x}{}", s.next, "f".repeat(58));
        let name = name.unwrap_or_else(|| format!("fake_{}", s.next));
        if s.containers.values().any(|c| c.name == name) {
            return Err(BackendError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use"
            )));
        }
        let mut argv = cfg.entrypoint.clone().unwrap_or_default();
        argv.extend(cfg.cmd.clone().unwrap_or_else(|| vec!["sh".into()]));
        let image = cfg.image.clone();
        let (mounts, anonymous) = s.mounts_of(&cfg)?;
        s.containers.insert(
            id.clone(),
            Ctr {
                id: id.clone(),
                name: name.clone(),
                cfg,
                argv,
                created_ns: now(),
                status: ContainerStatus::Created,
                exit_code: 0,
                started: None,
                finished: None,
                logs: Arc::default(),
                phase: watch::channel(Phase::default()).0,
                pending: None,
                attacher: None,
                kill: Arc::new(Notify::new()),
                exec_ids: vec![],
                uploaded: 0,
                mounts,
                anonymous,
            },
        );
        self.emit(
            "container",
            "create",
            &id,
            &[("name", &name), ("image", &image)],
        );
        Ok(Created {
            id,
            warnings: vec![],
        })
    }

    async fn start_container(&self, key: &str) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        if c.status == ContainerStatus::Running {
            return Err(BackendError::NotModified);
        }
        let (streams, mut out, mut err, stdin) = pipes(c.cfg.tty, c.cfg.open_stdin);
        match c.attacher.take() {
            Some(tx) => {
                if let Err(streams) = tx.send(streams) {
                    c.pending = Some(streams);
                }
            }
            None => c.pending = Some(streams),
        }
        c.status = ContainerStatus::Running;
        c.started = Some(now());
        c.phase.send_modify(|p| p.running = true);
        let (id, argv, logs, kill) = (c.id.clone(), c.argv.clone(), c.logs.clone(), c.kill.clone());
        let tty = c.cfg.tty;
        let (name, image) = (c.name.clone(), c.cfg.image.clone());
        self.emit(
            "container",
            "start",
            &id,
            &[("name", &name), ("image", &image)],
        );
        let me = self.clone();
        tokio::spawn(async move {
            let code = {
                let mut o = Out {
                    pipe: &mut out,
                    logs: &logs,
                    stream: LogStream::Stdout,
                };
                let stream = if tty {
                    LogStream::Stdout
                } else {
                    LogStream::Stderr
                };
                let mut e = Out {
                    pipe: &mut err,
                    logs: &logs,
                    stream,
                };
                run_script(&argv, stdin, &mut o, &mut e, &kill).await
            };
            // Record the exit before the streams close.
            me.finished(id, code);
            drop(out);
            drop(err);
        });
        Ok(())
    }

    async fn attach_container(
        &self,
        key: &str,
        opts: AttachOptions,
    ) -> Result<StreamsFuture, BackendError> {
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        if c.status == ContainerStatus::Exited {
            return Err(BackendError::Conflict(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        let filter = move |mut st: Streams| {
            if !opts.stdin {
                st.stdin = None;
            }
            if !opts.stderr {
                st.stderr = None;
            }
            st
        };
        if let Some(st) = c.pending.take() {
            return Ok(Box::pin(async move { Ok(filter(st)) }));
        }
        let (tx, rx) = oneshot::channel();
        c.attacher = Some(tx);
        Ok(Box::pin(async move {
            rx.await
                .map(filter)
                .map_err(|_| BackendError::Other("container went away before it started".into()))
        }))
    }

    async fn wait_container(
        &self,
        key: &str,
        condition: WaitCondition,
    ) -> Result<WaitFuture, BackendError> {
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        let mut rx = c.phase.subscribe();
        let baseline = rx.borrow().exits;
        Ok(Box::pin(async move {
            let done = |p: &Phase| match condition {
                WaitCondition::NotRunning => !p.running,
                WaitCondition::NextExit => p.exits > baseline,
                WaitCondition::Removed => p.removed,
            };
            let code = match rx.wait_for(done).await {
                Ok(p) => Some(p.exit_code),
                Err(_) => None,
            };
            let code = code.unwrap_or_else(|| rx.borrow().exit_code);
            Ok(WaitResult {
                status_code: code,
                error: None,
            })
        }))
    }

    async fn stop_container(
        &self,
        key: &str,
        timeout_secs: Option<i64>,
        _signal: Option<String>,
    ) -> Result<(), BackendError> {
        let mut rx = {
            let mut s = self.state.lock().unwrap();
            let c = s.ctr(key)?;
            if c.status != ContainerStatus::Running {
                return Err(BackendError::NotModified);
            }
            c.kill.notify_one();
            c.phase.subscribe()
        };
        let t = Duration::from_secs(timeout_secs.unwrap_or(10).max(1) as u64);
        let _ = tokio::time::timeout(t, rx.wait_for(|p| !p.running)).await;
        Ok(())
    }

    async fn kill_container(&self, key: &str, _signal: &str) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        if c.status != ContainerStatus::Running {
            return Err(BackendError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        c.kill.notify_one();
        Ok(())
    }

    async fn restart_container(&self, key: &str, t: Option<i64>) -> Result<(), BackendError> {
        match self.stop_container(key, t, None).await {
            Ok(()) | Err(BackendError::NotModified) => {}
            Err(e) => return Err(e),
        }
        self.start_container(key).await
    }

    async fn remove_container(&self, key: &str, force: bool, v: bool) -> Result<(), BackendError> {
        *self.last_remove.lock().unwrap() = Some((force, v));
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        if c.status == ContainerStatus::Running {
            if !force {
                return Err(BackendError::Conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            c.kill.notify_one();
        }
        let id = c.id.clone();
        self.remove_locked(&mut s, &id, v);
        Ok(())
    }

    async fn resize_container_tty(&self, key: &str, _r: u16, _c: u16) -> Result<(), BackendError> {
        self.state.lock().unwrap().find(key).map(|_| ())
    }

    async fn logs(
        &self,
        key: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogRecord, BackendError>>, BackendError> {
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        let mut recs: Vec<LogRecord> = c
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| match r.stream {
                LogStream::Stdout => opts.stdout,
                LogStream::Stderr => opts.stderr,
            })
            .filter(|r| opts.since_ns.is_none_or(|t| r.time_ns >= t))
            .filter(|r| opts.until_ns.is_none_or(|t| r.time_ns < t))
            .cloned()
            .collect();
        if let Some(t) = opts.tail {
            let skip = recs.len().saturating_sub(t as usize);
            recs.drain(..skip);
        }
        Ok(stream::iter(recs.into_iter().map(Ok)).boxed())
    }

    async fn top(&self, key: &str, _ps: Option<String>) -> Result<TopResult, BackendError> {
        let mut s = self.state.lock().unwrap();
        let c = s.ctr(key)?;
        if c.status != ContainerStatus::Running {
            return Err(BackendError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        Ok(TopResult {
            titles: vec!["PID".into(), "USER".into(), "TIME".into(), "CMD".into()],
            processes: vec![vec![
                "1".into(),
                "root".into(),
                "0:00".into(),
                c.argv.join(" "),
            ]],
        })
    }

    async fn stats(&self, key: &str) -> Result<StatsSample, BackendError> {
        self.state.lock().unwrap().find(key)?;
        let t = now();
        Ok(StatsSample {
            time_ns: t,
            cpu_total_ns: t / 1000,
            system_cpu_ns: t,
            online_cpus: 2,
            memory_usage: 10 << 20,
            memory_limit: 1 << 30,
            pids: 1,
        })
    }

    async fn exec_create(&self, key: &str, cfg: ExecConfig) -> Result<String, BackendError> {
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let exec_id = format!("e{:05x}{}", s.next, "e".repeat(58));
        let c = s.ctr(key)?;
        if c.status != ContainerStatus::Running {
            return Err(BackendError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        c.exec_ids.push(exec_id.clone());
        let container = c.id.clone();
        s.execs.insert(
            exec_id.clone(),
            ExecRec {
                id: exec_id.clone(),
                container,
                cfg,
                running: false,
                exit_code: None,
            },
        );
        Ok(exec_id)
    }

    async fn exec_start(
        &self,
        exec_id: &str,
        detach: bool,
        tty: bool,
    ) -> Result<Option<Streams>, BackendError> {
        let (argv, stdin_on, logs) = {
            let mut s = self.state.lock().unwrap();
            let e = s.execs.get_mut(exec_id).ok_or_else(|| {
                BackendError::NotFound(format!("No such exec instance: {exec_id}"))
            })?;
            if e.running || e.exit_code.is_some() {
                return Err(BackendError::Conflict(format!(
                    "Error: Exec command {exec_id} has already run"
                )));
            }
            e.running = true;
            (
                e.cfg.cmd.clone(),
                e.cfg.attach_stdin && !detach,
                Arc::new(Mutex::new(Vec::new())),
            )
        };
        let (streams, mut out, mut err, stdin) = pipes(tty, stdin_on);
        let state = self.state.clone();
        let id = exec_id.to_string();
        let kill = Arc::new(Notify::new());
        tokio::spawn(async move {
            let code = {
                let mut o = Out {
                    pipe: &mut out,
                    logs: &logs,
                    stream: LogStream::Stdout,
                };
                let mut e = Out {
                    pipe: &mut err,
                    logs: &logs,
                    stream: LogStream::Stderr,
                };
                run_script(&argv, stdin, &mut o, &mut e, &kill).await
            };
            // Record the exit code before the streams close.
            if let Some(e) = state.lock().unwrap().execs.get_mut(&id) {
                e.running = false;
                e.exit_code = Some(code);
            }
            drop(out);
            drop(err);
        });
        Ok((!detach).then_some(streams))
    }

    async fn exec_inspect(&self, exec_id: &str) -> Result<ExecDetails, BackendError> {
        let s = self.state.lock().unwrap();
        let e = s
            .execs
            .get(exec_id)
            .ok_or_else(|| BackendError::NotFound(format!("No such exec instance: {exec_id}")))?;
        Ok(ExecDetails {
            id: e.id.clone(),
            container_id: e.container.clone(),
            running: e.running,
            exit_code: e.exit_code,
            pid: 0,
            config: e.cfg.clone(),
        })
    }

    async fn exec_resize(&self, exec_id: &str, _r: u16, _c: u16) -> Result<(), BackendError> {
        let s = self.state.lock().unwrap();
        s.execs
            .get(exec_id)
            .map(|_| ())
            .ok_or_else(|| BackendError::NotFound(format!("No such exec instance: {exec_id}")))
    }

    async fn archive_stat(&self, key: &str, path: &str) -> Result<PathStat, BackendError> {
        let id = self.state.lock().unwrap().find(key)?;
        match path {
            "/" | "/etc" | "/etc/" => Ok(PathStat {
                name: path
                    .trim_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string(),
                size: 4096,
                mode: 0o040755,
                mtime_ns: 1_000_000_000,
                link_target: String::new(),
            }),
            "/hello.txt" => Ok(PathStat {
                name: "hello.txt".into(),
                size: 5,
                mode: 0o100644,
                mtime_ns: 2_000_000_000,
                link_target: String::new(),
            }),
            _ => Err(BackendError::NotFound(format!(
                "Could not find the file {path} in container {id}"
            ))),
        }
    }

    async fn archive_get(
        &self,
        key: &str,
        path: &str,
    ) -> Result<(PathStat, BoxStream<'static, Result<Bytes, BackendError>>), BackendError> {
        let st = self.archive_stat(key, path).await?;
        Ok((
            st,
            stream::iter([Ok(Bytes::from_static(b"fake-tar"))]).boxed(),
        ))
    }

    async fn archive_put(
        &self,
        key: &str,
        path: &str,
        mut tar: ByteStream,
    ) -> Result<(), BackendError> {
        self.archive_stat(key, path).await?;
        let mut n = 0;
        while let Some(chunk) = tar.next().await {
            n += chunk?.len();
        }
        self.state.lock().unwrap().ctr(key)?.uploaded += n;
        Ok(())
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.images
            .iter()
            .map(|(id, tags)| ImageSummary {
                id: id.clone(),
                repo_tags: tags.clone(),
                created_secs: 1_700_000_000,
                size: 4_000_000,
                containers: -1,
                ..Default::default()
            })
            .collect())
    }

    async fn inspect_image(&self, name: &str) -> Result<ImageDetails, BackendError> {
        let (id, tags) = self.state.lock().unwrap().image(name)?;
        Ok(ImageDetails {
            id,
            repo_tags: tags,
            created_ns: 1_700_000_000_000_000_000,
            config: ImageConfig {
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            },
            architecture: "amd64".into(),
            os: "linux".into(),
            size: 4_000_000,
            layers: vec!["sha256:1a1a".into()],
            ..Default::default()
        })
    }

    async fn pull_image(
        &self,
        reference: &str,
        _auth: Option<RegistryAuth>,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        if reference.starts_with("nonexistent") {
            return Err(BackendError::NotFound(format!(
                "pull access denied for {reference}, repository does not exist or may require 'docker login'"
            )));
        }
        progress.status(format!("Pulling from {reference}"));
        if reference.starts_with("broken") {
            return Err(BackendError::Other("unexpected EOF".into()));
        }
        progress.send(ProgressMessage {
            status: "Downloading".into(),
            id: Some("1a1a".into()),
            current: Some(5),
            total: Some(10),
        });
        let mut s = self.state.lock().unwrap();
        let id = format!("sha256:{:04x}", s.images.len());
        s.images.push((id, vec![reference.to_string()]));
        progress.status(format!("Status: Downloaded newer image for {reference}"));
        Ok(())
    }

    async fn push_image(
        &self,
        reference: &str,
        _auth: Option<RegistryAuth>,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        self.state.lock().unwrap().image(reference)?;
        progress.status(format!("The push refers to repository [{reference}]"));
        Ok(())
    }

    async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        let (id, _) = s.image(source)?;
        let img = s.images.iter_mut().find(|(i, _)| *i == id).unwrap();
        img.1.push(format!("{repo}:{tag}"));
        Ok(())
    }

    async fn remove_image(
        &self,
        name: &str,
        _force: bool,
    ) -> Result<Vec<RemovedImage>, BackendError> {
        let mut s = self.state.lock().unwrap();
        let (id, tags) = s.image(name)?;
        s.images.retain(|(i, _)| *i != id);
        let mut out: Vec<RemovedImage> = tags.into_iter().map(RemovedImage::Untagged).collect();
        out.push(RemovedImage::Deleted(id));
        Ok(out)
    }

    async fn image_history(&self, name: &str) -> Result<Vec<HistoryEntry>, BackendError> {
        let (id, tags) = self.state.lock().unwrap().image(name)?;
        Ok(vec![HistoryEntry {
            id,
            created_secs: 1_700_000_000,
            created_by: "/bin/sh -c #(nop) CMD [\"sh\"]".into(),
            tags,
            size: 0,
            comment: String::new(),
        }])
    }

    async fn save_images(
        &self,
        names: Vec<String>,
    ) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError> {
        for n in &names {
            self.state.lock().unwrap().image(n)?;
        }
        Ok(stream::iter([Ok(Bytes::from(format!("tar-of:{}", names.join(","))))]).boxed())
    }

    async fn load_images(&self, mut tar: ByteStream) -> Result<Vec<String>, BackendError> {
        let mut n = 0;
        while let Some(c) = tar.next().await {
            n += c?.len();
        }
        if n == 0 {
            return Err(BackendError::InvalidArgument("empty archive".into()));
        }
        self.state
            .lock()
            .unwrap()
            .images
            .push(("sha256:10ad".into(), vec!["loaded:latest".into()]));
        Ok(vec!["loaded:latest".into()])
    }

    async fn events(&self) -> Result<BoxStream<'static, Event>, BackendError> {
        let rx = self.events.subscribe();
        Ok(stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        let s = self.state.lock().unwrap();
        s.volumes.keys().map(|n| s.volume_info(n)).collect()
    }

    async fn create_volume(
        &self,
        name: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, BackendError> {
        let mut s = self.state.lock().unwrap();
        let name = name.unwrap_or_default();
        if !name.is_empty() && name.len() < 2 {
            return Err(BackendError::InvalidArgument(format!(
                "create {name}: volume name is too short, names should be at least two alphanumeric characters"
            )));
        }
        let name = s.make_volume(&name, labels);
        s.volumes.get_mut(&name).expect("made").anonymous = false;
        s.volume_info(&name)
    }

    async fn inspect_volume(&self, name: &str) -> Result<VolumeInfo, BackendError> {
        self.state.lock().unwrap().volume_info(name)
    }

    async fn remove_volume(&self, name: &str, force: bool) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        if !s.volumes.contains_key(name) {
            return if force {
                Ok(())
            } else {
                Err(no_such_volume(name))
            };
        }
        let users = s.users(name);
        if !users.is_empty() {
            return Err(BackendError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        s.volumes.remove(name);
        Ok(())
    }

    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, BackendError> {
        let s = self.state.lock().unwrap();
        s.networks.keys().map(|n| s.network(n)).collect()
    }

    async fn create_network(
        &self,
        name: String,
        subnet: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkInfo, BackendError> {
        let mut s = self.state.lock().unwrap();
        if s.networks.contains_key(&name) {
            return Err(BackendError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        s.next += 1;
        let n = NetworkInfo {
            id: format!("{:064x}", s.next),
            created_ns: now(),
            subnet: subnet.unwrap_or_else(|| "10.89.1.0/24".into()),
            gateway: "10.89.1.1".into(),
            labels,
            endpoints: Vec::new(),
            name: name.clone(),
        };
        s.networks.insert(name, n.clone());
        Ok(n)
    }

    async fn inspect_network(&self, key: &str) -> Result<NetworkInfo, BackendError> {
        self.state.lock().unwrap().network(key)
    }

    async fn remove_network(&self, key: &str) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        let n = s.network(key)?;
        if !n.endpoints.is_empty() {
            return Err(BackendError::Conflict(format!(
                "error while removing network: network {} has active endpoints",
                n.name
            )));
        }
        s.networks.remove(&n.name);
        Ok(())
    }

    async fn prune_networks(&self) -> Result<Vec<String>, BackendError> {
        let mut s = self.state.lock().unwrap();
        let doomed: Vec<String> = s
            .networks
            .keys()
            .filter(|n| s.network(n).is_ok_and(|n| n.endpoints.is_empty()))
            .cloned()
            .collect();
        for n in &doomed {
            s.networks.remove(n);
        }
        Ok(doomed)
    }

    async fn connect_network(
        &self,
        key: &str,
        container: &str,
        aliases: Vec<String>,
    ) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        let n = s.network(key)?;
        let id = s.find(container)?;
        let c = s.containers.get_mut(&id).expect("resolved");
        c.cfg.network_mode = n.name;
        c.cfg.network_aliases = aliases;
        Ok(())
    }

    async fn disconnect_network(&self, key: &str, container: &str) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        let n = s.network(key)?;
        let id = s.find(container)?;
        let c = s.containers.get_mut(&id).expect("resolved");
        if c.cfg.network_mode != n.name {
            return Err(BackendError::InvalidArgument(format!(
                "container {container} is not connected to network {}",
                n.name
            )));
        }
        c.cfg.network_mode = "none".into();
        Ok(())
    }

    async fn prune_volumes(&self, all: bool) -> Result<VolumePrune, BackendError> {
        let mut s = self.state.lock().unwrap();
        let doomed: Vec<String> = s
            .volumes
            .iter()
            .filter(|(n, v)| (all || v.anonymous) && s.users(n).is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for n in &doomed {
            s.volumes.remove(n);
        }
        Ok(VolumePrune {
            space_reclaimed: 4096 * doomed.len() as u64,
            deleted: doomed,
        })
    }
}
