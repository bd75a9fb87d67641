//! The agent's state and request handling.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_protocol::chunk::LogStream;
use berth_protocol::{
    AgentInfo, ContainerInfo, ContainerStats, ContainerStatus, CreateRequest, ErrorKind,
    ExecRequest, ProcessInfo, ProcessRef, Request, Response, WireError,
};
use berth_runtime::{CreateOptions, Runtime, RuntimeError, Status, Stdio};
use tokio::sync::watch;

use crate::aio::AsyncFile;
use crate::logs::LogFile;
use crate::process::{Output, PendingExec, Proc, Reaper};
use crate::procio::{make_stdio, pump, set_winsize, ProcIo};

/// The one place where runtime errors become wire errors.
pub fn wire(e: &RuntimeError) -> WireError {
    let kind = match e {
        RuntimeError::InvalidConfig { .. } => ErrorKind::InvalidConfig,
        RuntimeError::AlreadyExists(_) => ErrorKind::AlreadyExists,
        RuntimeError::NotFound(_) => ErrorKind::NotFound,
        RuntimeError::InvalidState { .. } => ErrorKind::InvalidState,
        RuntimeError::ExecutableNotFound(_) | RuntimeError::NoSuchFile(_) => {
            ErrorKind::ExecutableNotFound
        }
        RuntimeError::NotExecutable { .. } => ErrorKind::NotExecutable,
        RuntimeError::UnknownUser(_) | RuntimeError::UnknownGroup(_) => ErrorKind::InvalidConfig,
        RuntimeError::NoCgroup2(_) => ErrorKind::Unsupported,
        RuntimeError::Setup { .. } | RuntimeError::Io { .. } | RuntimeError::Sys { .. } => {
            ErrorKind::System
        }
    };
    let field = match e {
        RuntimeError::InvalidConfig { field, .. } => Some(field.clone()),
        RuntimeError::UnknownUser(_) | RuntimeError::UnknownGroup(_) => Some("user".into()),
        _ => None,
    };
    let errno = match e {
        RuntimeError::Setup { errno, .. } | RuntimeError::Sys { errno, .. } => Some(*errno as i32),
        RuntimeError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    };
    WireError {
        kind,
        message: e.to_string(),
        field,
        errno,
    }
}

fn not_found(what: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorKind::NotFound, format!("no such {what}"))
}

/// The agent.
pub struct Agent {
    rt: Arc<Mutex<Runtime>>,
    procs: Mutex<HashMap<ProcessRef, Arc<Proc>>>,
    /// Child reaping.
    pub reaper: Reaper,
    /// Per-container `/etc/hosts` and `/etc/hostname` (see [`crate::etc`]).
    etc_root: PathBuf,
    started: Instant,
    /// Running as the guest's PID 1.
    pub pid1: bool,
}

/// The VM's one virtio-net device, as the guest kernel names it.
const VM_NIC: &str = "eth0";

/// Leaves the container in the VM's network namespace: with one container per VM, the VM
/// is the isolation boundary, and the container sees `eth0` and its address directly.
fn share_vm_network(spec: &mut oci_spec::runtime::Spec) {
    use oci_spec::runtime::LinuxNamespaceType;
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
        }
    }
}

pub(crate) fn sys_err(what: &str, e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorKind::System, format!("{what}: {e}"))
}

/// Runs blocking runtime work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, WireError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| wire(&e)),
        Err(e) => Err(sys_err("runtime task failed", e)),
    }
}

impl Agent {
    /// An agent keeping container state under `state_dir`.
    pub fn new(state_dir: PathBuf, pid1: bool) -> Arc<Agent> {
        // The per-container /etc files live beside the runtime's state, not in it.
        let etc_root = PathBuf::from(format!("{}-etc", state_dir.display()));
        Arc::new(Agent {
            etc_root,
            rt: Arc::new(Mutex::new(Runtime::new(berth_runtime::RuntimeConfig {
                state_root: state_dir,
                ..Default::default()
            }))),
            procs: Mutex::new(HashMap::new()),
            reaper: Reaper::default(),
            started: Instant::now(),
            pid1,
        })
    }

    fn rt(&self) -> std::sync::MutexGuard<'_, Runtime> {
        self.rt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracked process `p`.
    pub fn proc(&self, p: &ProcessRef) -> Result<Arc<Proc>, WireError> {
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(p)
            .cloned()
            .ok_or_else(|| not_found(p))
    }

    /// The container's root as the agent sees it, and its upper dir.
    pub fn container_dirs(&self, id: &str) -> Result<(PathBuf, PathBuf), WireError> {
        let rt = self.rt();
        let c = rt.get(id).map_err(|e| wire(&e))?;
        Ok((c.rootfs().to_path_buf(), c.upper_dir().to_path_buf()))
    }

    /// Handles one control request.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Response, WireError> {
        match req {
            Request::Ping => Ok(Response::Info(AgentInfo {
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: berth_protocol::PROTOCOL_VERSION,
                uptime_ms: self.started.elapsed().as_millis() as u64,
                kernel: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                cgroup2: berth_runtime::cgroup::is_cgroup2(std::path::Path::new(
                    berth_runtime::cgroup::CGROUP_ROOT,
                )),
                features: vec![
                    berth_protocol::FEATURE_NETWORK.to_string(),
                    berth_protocol::FEATURE_MOUNTS.to_string(),
                    berth_protocol::FEATURE_DISK_DIRS.to_string(),
                ],
            })),
            Request::Create(req) => self.create(*req).await,
            Request::Start(p) => self.start(p).await,
            Request::Exec(req) => self.exec(*req).await,
            Request::Signal { process, signal } => {
                let proc = self.proc(&process)?;
                if proc.exit_code().is_some() {
                    return Err(WireError::new(
                        ErrorKind::InvalidState,
                        format!("{process} is not running"),
                    ));
                }
                let pid =
                    (*proc.pid.lock().unwrap_or_else(|e| e.into_inner())).ok_or_else(|| {
                        WireError::new(
                            ErrorKind::InvalidState,
                            format!("{process} has not started"),
                        )
                    })?;
                berth_runtime::signal_pid(pid, signal).map_err(|e| wire(&e))?;
                Ok(Response::Ok)
            }
            Request::Wait(p) => {
                let proc = self.proc(&p)?;
                Ok(Response::Exited {
                    code: proc.wait().await,
                })
            }
            Request::List => Ok(Response::Containers(self.list())),
            Request::Delete { id, force } => self.delete(id, force).await,
            Request::Stats { id } => self.stats(&id),
            Request::ResizeTty {
                process,
                rows,
                cols,
            } => {
                let proc = self.proc(&process)?;
                let m = proc.master.as_ref().ok_or_else(|| {
                    WireError::new(
                        ErrorKind::InvalidState,
                        format!("{process} has no terminal"),
                    )
                })?;
                set_winsize(m, rows, cols)?;
                Ok(Response::Ok)
            }
            Request::Top { id } => {
                let pid = self.rt().get(&id).map_err(|e| wire(&e))?.pid();
                Ok(Response::Processes(
                    berth_runtime::top::processes(pid)
                        .into_iter()
                        .map(|p| ProcessInfo {
                            pid: p.pid,
                            ppid: p.ppid,
                            uid: p.uid,
                            state: p.state,
                            rss_kib: p.rss_kib,
                            cpu_ticks: p.cpu_ticks,
                            cmd: p.cmd,
                        })
                        .collect(),
                ))
            }
            Request::SetTime { unix_nanos } => {
                if !self.pid1 {
                    return Err(WireError::new(
                        ErrorKind::Unsupported,
                        "the agent sets the clock only as the guest's PID 1, not on a host",
                    ));
                }
                let ts = nix::sys::time::TimeSpec::new(
                    (unix_nanos / 1_000_000_000) as libc::time_t,
                    (unix_nanos % 1_000_000_000) as libc::c_long,
                );
                nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)
                    .map_err(|e| sys_err("setting the clock", e))?;
                Ok(Response::Ok)
            }
            Request::Shutdown => {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    me.shutdown();
                });
                Ok(Response::Ok)
            }
        }
    }

    fn register_proc(&self, p: ProcessRef, proc: Arc<Proc>) -> Result<(), WireError> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if procs.contains_key(&p) {
            return Err(WireError::new(
                ErrorKind::AlreadyExists,
                format!("{p} already exists"),
            ));
        }
        procs.insert(p, proc);
        Ok(())
    }

    fn new_proc(
        io: &mut ProcIo,
        log: Option<Arc<LogFile>>,
        pending: Option<PendingExec>,
    ) -> Result<Arc<Proc>, WireError> {
        let stdin = match io.stdin.take() {
            Some(fd) => Some(AsyncFile::new(fd).map_err(|e| sys_err("stdin", e))?),
            None => None,
        };
        Ok(Arc::new(Proc {
            pid: Mutex::new(None),
            exit: Arc::new(watch::channel(None).0),
            stdin: tokio::sync::Mutex::new(stdin),
            master: io.master.take(),
            outputs: [Output::new(true), Output::new(io.err.is_some())],
            pending: Mutex::new(pending),
            log,
        }))
    }

    fn spawn_pumps(proc: &Arc<Proc>, out: OwnedFd, err: Option<OwnedFd>) {
        let log = proc.log.clone();
        tokio::spawn(pump(
            out,
            proc.outputs[0].clone(),
            log.clone().map(|l| (l, LogStream::Stdout)),
        ));
        if let Some(err) = err {
            tokio::spawn(pump(
                err,
                proc.outputs[1].clone(),
                log.map(|l| (l, LogStream::Stderr)),
            ));
        }
    }

    async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<Response, WireError> {
        let pref = ProcessRef::init(req.id.clone());
        if self.proc(&pref).is_ok() {
            return Err(WireError::new(
                ErrorKind::AlreadyExists,
                format!("container {} already exists", req.id),
            ));
        }
        let (sources, scratch) = (req.layers.clone(), req.scratch.clone());
        let (layers, scratch) =
            tokio::task::spawn_blocking(move || crate::disks::sources(&sources, scratch.as_ref()))
                .await
                .map_err(|e| sys_err("finding the container's disks", e))??;
        if !berth_runtime::container::valid_id(&req.id) {
            return Err(wire(&RuntimeError::config(
                "id",
                format!("{:?} must be 1-128 of [A-Za-z0-9_.-]", req.id),
            )));
        }
        let mut spec = req.spec;
        berth_protocol::validate_extra_hosts(&req.extra_hosts)?;
        if let Some(net) = &req.network {
            net.validate()?;
            let net = net.clone();
            tokio::task::spawn_blocking(move || {
                crate::netif::set_mtu(VM_NIC, net.mtu)?;
                crate::netif::configure(VM_NIC, net.address, net.prefix, Some(net.gateway))
            })
            .await
            .map_err(|e| sys_err("network set-up task failed", e))?
            .map_err(|e| {
                sys_err(
                    &format!("setting up {VM_NIC} (is there a virtio-net device?)"),
                    e,
                )
            })?;
            share_vm_network(&mut spec);
        }
        berth_protocol::validate_mounts(&req.mounts)?;
        if !req.mounts.is_empty() {
            let mounts = req.mounts.clone();
            spec = tokio::task::spawn_blocking(move || {
                crate::mounts::provide(&mut spec, &mounts).map(|()| spec)
            })
            .await
            .map_err(|e| sys_err("mount set-up task failed", e))?
            .map_err(|e| sys_err("setting up the container's mounts", e))?;
        }
        crate::etc::provide(
            &mut spec,
            &self.etc_root.join(&req.id),
            &req.id,
            req.network.as_ref(),
            &req.extra_hosts,
        )
        .map_err(|e| sys_err("writing /etc/hosts, /etc/hostname and /etc/resolv.conf", e))?;
        let mut stdio_opts = req.stdio;
        let console = match spec.process_mut() {
            Some(p) => {
                stdio_opts.tty |= p.terminal().unwrap_or(false);
                p.set_terminal(Some(stdio_opts.tty));
                p.console_size()
            }
            None => None,
        };
        let mut io = make_stdio(stdio_opts)?;
        if let (Some(m), Some(c)) = (&io.master, console) {
            set_winsize(m, c.height() as u16, c.width() as u16)?;
        }
        let runtime_stdio =
            std::mem::replace(&mut io.runtime, Stdio::null().map_err(|e| wire(&e))?);
        let id = req.id.clone();
        let opts = CreateOptions {
            id: req.id.clone(),
            spec,
            layers,
            scratch,
            user: req.user.clone(),
            stdio: runtime_stdio,
        };
        let rt = self.rt.clone();
        let (pid, scratch_dir) = blocking(move || {
            let mut rt = rt.lock().unwrap_or_else(|e| e.into_inner());
            let pid = rt.create(opts)?;
            let dir = rt.get(&id)?.scratch_dir().to_path_buf();
            Ok((pid, dir))
        })
        .await?;
        let streams = if io.err.is_some() { 2 } else { 1 };
        let log = match LogFile::create(&scratch_dir.join("berth-init.log"), streams) {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                tracing::warn!("container {}: no log file: {e}", req.id);
                None
            }
        };
        let proc = Self::new_proc(&mut io, log, None)?;
        *proc.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        self.reaper.register(pid, proc.exit.clone());
        Self::spawn_pumps(&proc, io.out, io.err);
        if let Err(e) = self.register_proc(pref, proc.clone()) {
            let _ = blocking({
                let rt = self.rt.clone();
                let id = req.id.clone();
                move || {
                    rt.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .delete(&id, true)
                }
            })
            .await;
            return Err(e);
        }
        // Record init's exit in the runtime once the reaper sees it.
        let rt = self.rt.clone();
        let id = req.id.clone();
        tokio::spawn(async move {
            let code = proc.wait().await;
            if let Ok(c) = rt.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
                c.set_exited(code);
            }
        });
        Ok(Response::Created { pid })
    }

    async fn start(self: &Arc<Self>, p: ProcessRef) -> Result<Response, WireError> {
        let proc = self.proc(&p)?;
        match &p.exec {
            None => {
                let rt = self.rt.clone();
                let id = p.container.clone();
                let pid = blocking(move || rt.lock().unwrap_or_else(|e| e.into_inner()).start(&id))
                    .await?;
                Ok(Response::Started { pid })
            }
            Some(_) => {
                let pending = proc
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        WireError::new(ErrorKind::InvalidState, format!("{p} was already started"))
                    })?;
                let rt = self.rt.clone();
                let id = p.container.clone();
                let r = blocking(move || {
                    rt.lock().unwrap_or_else(|e| e.into_inner()).exec(
                        &id,
                        &pending.process,
                        pending.user.as_deref(),
                        pending.stdio,
                    )
                })
                .await;
                match r {
                    Ok(pid) => {
                        *proc.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
                        self.reaper.register(pid, proc.exit.clone());
                        Ok(Response::Started { pid })
                    }
                    Err(e) => {
                        proc.exit.send_replace(Some(e.exit_code()));
                        Err(e)
                    }
                }
            }
        }
    }

    async fn exec(self: &Arc<Self>, req: ExecRequest) -> Result<Response, WireError> {
        let init = self.proc(&ProcessRef::init(req.container.clone()))?;
        if init.exit_code().is_some() {
            return Err(WireError::new(
                ErrorKind::InvalidState,
                format!("container {} is not running", req.container),
            ));
        }
        let mut process = req.process;
        if process.env().as_ref().is_none_or(|e| e.is_empty()) {
            // docker exec: the container's environment.
            let env = self
                .rt()
                .get(&req.container)
                .ok()
                .and_then(|c| c.spec().process().as_ref().and_then(|p| p.env().clone()));
            process.set_env(env);
        }
        let mut o = req.stdio;
        o.tty |= process.terminal().unwrap_or(false);
        process.set_terminal(Some(o.tty));
        let console = process.console_size();
        let mut io = make_stdio(o)?;
        if let (Some(m), Some(c)) = (&io.master, console) {
            set_winsize(m, c.height() as u16, c.width() as u16)?;
        }
        let stdio = std::mem::replace(&mut io.runtime, Stdio::null().map_err(|e| wire(&e))?);
        let pending = PendingExec {
            process,
            user: req.user,
            stdio,
        };
        let proc = Self::new_proc(&mut io, None, Some(pending))?;
        self.register_proc(ProcessRef::exec(req.container, req.exec), proc.clone())?;
        Self::spawn_pumps(&proc, io.out, io.err);
        Ok(Response::Ok)
    }

    fn list(&self) -> Vec<ContainerInfo> {
        let rt = self.rt();
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        rt.list()
            .into_iter()
            .map(|(id, status, pid)| {
                let mut execs: Vec<String> = procs
                    .keys()
                    .filter(|k| k.container == id)
                    .filter_map(|k| k.exec.clone())
                    .collect();
                execs.sort();
                let exit = procs
                    .get(&ProcessRef::init(id.clone()))
                    .and_then(|p| p.exit_code());
                let status = match (status, exit) {
                    (_, Some(_)) | (Status::Stopped(_), _) => ContainerStatus::Stopped,
                    (Status::Created, None) => ContainerStatus::Created,
                    (Status::Running, None) => ContainerStatus::Running,
                };
                ContainerInfo {
                    id,
                    status,
                    pid: Some(pid),
                    exit_code: exit,
                    execs,
                }
            })
            .collect()
    }

    async fn delete(self: &Arc<Self>, id: String, force: bool) -> Result<Response, WireError> {
        let init = self.proc(&ProcessRef::init(id.clone()));
        if let Ok(init) = &init {
            let running = init.exit_code().is_none()
                && self.rt().get(&id).map(|c| c.status()).ok() == Some(Status::Running);
            if running && !force {
                return Err(WireError::new(
                    ErrorKind::InvalidState,
                    format!("container {id} is running: stop it first or force the removal"),
                ));
            }
        }
        let rt = self.rt.clone();
        let cid = id.clone();
        blocking(move || {
            rt.lock()
                .unwrap_or_else(|e| e.into_inner())
                .delete(&cid, true)
        })
        .await?;
        let _ = std::fs::remove_dir_all(self.etc_root.join(&id));
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.retain(|k, _| k.container != id);
        Ok(Response::Ok)
    }

    fn stats(&self, id: &str) -> Result<Response, WireError> {
        let rt = self.rt();
        let c = rt.get(id).map_err(|e| wire(&e))?;
        let cg = c
            .cgroup()
            .ok_or_else(|| wire(&RuntimeError::NoCgroup2("statistics")))?;
        let s = cg.stats();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime fills ts.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
        Ok(Response::Stats(ContainerStats {
            cpu_usage_usec: s.cpu_usage_usec,
            cpu_user_usec: s.cpu_user_usec,
            cpu_system_usec: s.cpu_system_usec,
            memory_current: s.memory_current,
            memory_max: s.memory_max,
            pids_current: s.pids_current,
            pids_max: s.pids_max,
            online_cpus: cpus,
            timestamp_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        }))
    }

    /// Kills every container, syncs, and powers off (PID 1) or exits (host mode).
    pub fn shutdown(&self) {
        tracing::info!("shutting down");
        let rt = self.rt();
        for (id, ..) in rt.list() {
            if let Ok(c) = rt.get(&id) {
                c.kill_all();
            }
        }
        drop(rt);
        nix::unistd::sync();
        if self.pid1 {
            crate::init::power_off();
        }
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_map_to_typed_wire_errors() {
        let e = wire(&RuntimeError::ExecutableNotFound("nope".into()));
        assert_eq!(e.kind, ErrorKind::ExecutableNotFound);
        assert_eq!(e.exit_code(), 127);
        assert_eq!(
            e.message,
            "exec: \"nope\": executable file not found in $PATH"
        );
        let e = wire(&RuntimeError::NoSuchFile("/x".into()));
        assert_eq!(
            (e.kind, e.exit_code()),
            (ErrorKind::ExecutableNotFound, 127)
        );
        let e = wire(&RuntimeError::NotExecutable {
            path: "/etc".into(),
            reason: "is a directory".into(),
        });
        assert_eq!((e.kind, e.exit_code()), (ErrorKind::NotExecutable, 126));
        let e = wire(&RuntimeError::config(
            "mounts[2].destination",
            "must not contain ..",
        ));
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert_eq!(e.field.as_deref(), Some("mounts[2].destination"));
        assert_eq!(e.exit_code(), 125);
        let e = wire(&RuntimeError::UnknownUser("mallory".into()));
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::InvalidConfig, Some("user"))
        );
        let e = wire(&RuntimeError::Setup {
            step: "mounting proc".into(),
            errno: nix::errno::Errno::EPERM,
        });
        assert_eq!((e.kind, e.errno), (ErrorKind::System, Some(libc::EPERM)));
        let e = wire(&RuntimeError::NotFound("c9".into()));
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = wire(&RuntimeError::NoCgroup2("statistics"));
        assert_eq!(e.kind, ErrorKind::Unsupported);
    }
}
