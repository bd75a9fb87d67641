//! A container: its mounts, cgroup and processes, seen from the runtime's side.

use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::cgroup::{self, Cgroup};
use crate::child::{self, ChildFds, ExecEnd, ExecJoin, Message};
use crate::error::{Errno, Result, RuntimeError};
use crate::plan::{self, Context, InitPlan, ProcessPlan};
use crate::sys::{LinuxSyscalls, Syscalls};

/// Where an image layer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// A directory used as it is.
    Dir(PathBuf),
    /// A block device with a read-only filesystem; `fstype` None tries erofs, then ext4.
    Device {
        /// Device path.
        path: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// `(offset, length)` in bytes when the filesystem is that part of the device
        /// (mounted through a read-only loop device); the whole device when `None`.
        range: Option<(u64, u64)>,
    },
}

/// Where the container's writable upper layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scratch {
    /// A directory (upper and work are made inside it).
    Dir(PathBuf),
    /// A block device with a writable filesystem (ext4 unless given).
    Device {
        /// Device path.
        path: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
    },
    /// A tmpfs in memory.
    Tmpfs,
}

/// The process's standard streams. The runtime takes ownership and closes its copies once
/// the child has them.
#[derive(Debug)]
pub struct Stdio {
    /// fd 0.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
}

fn open_null() -> Result<OwnedFd> {
    nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys("opening /dev/null", e))
}

impl Stdio {
    /// All three on /dev/null.
    pub fn null() -> Result<Stdio> {
        Ok(Stdio {
            stdin: open_null()?,
            stdout: open_null()?,
            stderr: open_null()?,
        })
    }
    /// The terminal slave `fd` as all three.
    pub fn tty(slave: OwnedFd) -> Result<Stdio> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| RuntimeError::io("duplicating", "terminal", e))
        };
        Ok(Stdio {
            stdin: dup(&slave)?,
            stdout: dup(&slave)?,
            stderr: slave,
        })
    }
    /// Moves every descriptor to a number >= 3, so that dup2 onto 0..2 in the child cannot
    /// clobber another of them.
    fn above_stdio(self) -> Result<Stdio> {
        let lift = |fd: OwnedFd| -> Result<OwnedFd> {
            if fd.as_raw_fd() >= 3 {
                return Ok(fd);
            }
            let n = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                .map_err(|e| RuntimeError::sys("duplicating stdio", e))?;
            // SAFETY: n is a fresh descriptor this code owns.
            Ok(unsafe { OwnedFd::from_raw_fd(n) })
        };
        Ok(Stdio {
            stdin: lift(self.stdin)?,
            stdout: lift(self.stdout)?,
            stderr: lift(self.stderr)?,
        })
    }
}

/// Everything needed to create a container.
#[derive(Debug)]
pub struct CreateOptions {
    /// Unique id (letters, digits, `_`, `-`, `.`).
    pub id: String,
    /// OCI runtime spec (its `root.path` is ignored).
    pub spec: Spec,
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
    /// Writable scratch space.
    pub scratch: Scratch,
    /// `USER[:GROUP]` override of `process.user`.
    pub user: Option<String>,
    /// stdio of init.
    pub stdio: Stdio,
}

/// State of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Init waits for start.
    Created,
    /// Init runs.
    Running,
    /// Init exited with this code.
    Stopped(i32),
}

impl Status {
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped(_) => "stopped",
        }
    }
}

/// Runtime-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of per-container state (mount points); e.g. `/run/berth`.
    pub state_root: PathBuf,
    /// cgroup2 mount; containers go in `<cgroup_root>/berth/<id>`.
    pub cgroup_root: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_root: PathBuf::from("/run/berth"),
            cgroup_root: PathBuf::from(cgroup::CGROUP_ROOT),
        }
    }
}

/// A created container.
#[derive(Debug)]
pub struct Container {
    id: String,
    state_dir: PathBuf,
    /// Where the layers are mounted: short, because overlayfs takes every layer's path
    /// in one page of mount options, and an image may have 127 layers.
    layer_dir: PathBuf,
    rootfs: PathBuf,
    scratch_dir: PathBuf,
    upper: PathBuf,
    /// Mount points to detach on delete, in order.
    mounts: Vec<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: i32,
    status: Status,
    start_fd: Option<OwnedFd>,
    report_fd: Option<OwnedFd>,
    last_cap: u32,
    spec: Spec,
    init_process: Option<ProcessPlan>,
}

/// Whether `id` is a usable container ID: 1-128 of `[A-Za-z0-9_.-]`, never `.` or `..`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && id != "."
        && id != ".."
}

/// Mounts the filesystem on `dev` at `target` (made if missing), read-write, for folders
/// that several containers of the VM share ([`Scratch::Dir`] and [`Layer::Dir`] inside it).
/// `fstype` `None` is ext4.
pub fn mount_shared(dev: &Path, target: &Path, fstype: Option<&str>) -> Result<()> {
    mount_layer(dev, target, fstype, true)
}

fn mount_layer(dev: &Path, target: &Path, fstype: Option<&str>, rw: bool) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| RuntimeError::io("creating", target, e))?;
    let flags = if rw {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    let types: &[&str] = match fstype {
        Some(t) => &[t][..],
        None if rw => &["ext4"],
        None => &["erofs", "ext4"],
    };
    let mut last = Errno::EINVAL;
    for t in types {
        match mount(Some(dev), target, Some(*t), flags, None::<&str>) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(RuntimeError::sys(
        format!(
            "mounting {} ({}) on {}",
            dev.display(),
            types.join(" or "),
            target.display()
        ),
        last,
    ))
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("creating a pipe", e))
}

fn read_message(fd: &OwnedFd) -> Result<Option<Message>> {
    let mut b = [0u8; Message::SIZE];
    let mut got = 0;
    while got < b.len() {
        match nix::unistd::read(fd, &mut b[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("reading the child's report", e)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < b.len() {
        return Err(RuntimeError::sys(
            "reading the child's report (short message)",
            Errno::EPIPE,
        ));
    }
    Ok(Some(Message::decode(&b)))
}

/// Waits for `pid` (ECHILD, when someone else reaped it, counts as gone).
fn reap(pid: i32) {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// Exit code of a wait status: the code, or 128+N for signal N.
pub fn exit_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Blocks until `pid` exits; its exit code (128+N when killed by signal N).
pub fn wait_pid(pid: i32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(ws) => {
                if let Some(c) = exit_code(ws) {
                    return Ok(c);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys(format!("waiting for pid {pid}"), e)),
        }
    }
}

/// Maps a failure report of the child to an error.
fn report_error(m: &Message, p: &ProcessPlan, steps: &[plan::Step]) -> RuntimeError {
    let errno = Errno::from_raw(m.errno);
    match m.kind {
        child::MSG_NOT_FOUND if p.search_path => RuntimeError::ExecutableNotFound(p.arg0.clone()),
        child::MSG_NOT_FOUND => RuntimeError::NoSuchFile(p.arg0.clone()),
        child::MSG_NOT_EXECUTABLE | child::MSG_EXEC_FAILED => match errno {
            Errno::ENOENT => RuntimeError::NoSuchFile(p.arg0.clone()),
            Errno::EACCES => RuntimeError::NotExecutable {
                path: p.arg0.clone(),
                reason: "permission denied".into(),
            },
            Errno::EISDIR => RuntimeError::NotExecutable {
                path: p.arg0.clone(),
                reason: "is a directory".into(),
            },
            Errno::ENOEXEC => RuntimeError::NotExecutable {
                path: p.arg0.clone(),
                reason: "exec format error".into(),
            },
            e => RuntimeError::NotExecutable {
                path: p.arg0.clone(),
                reason: e.desc().to_lowercase(),
            },
        },
        _ => {
            let step = if m.step >= 0 {
                steps
                    .get(m.step as usize)
                    .map(|s| s.describe())
                    .unwrap_or_else(|| format!("step {}", m.step))
            } else if m.step == child::stage::CWD {
                format!(
                    "changing to the working directory {}",
                    p.cwd.to_string_lossy()
                )
            } else {
                child::stage::name(m.step).to_string()
            };
            RuntimeError::Setup { step, errno }
        }
    }
}

fn ptrs(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Creates the working directory of a process inside the container's root, as runc does.
fn ensure_cwd(rootfs: &Path, p: &ProcessPlan) {
    let cwd = Path::new(std::ffi::OsStr::from_bytes(p.cwd.to_bytes()));
    if let Ok(host) = crate::fs::resolve_in_root(rootfs, cwd) {
        if !host.exists() {
            if let Err(e) = std::fs::create_dir_all(&host) {
                tracing::warn!("creating working directory {}: {e}", host.display());
            }
        }
    }
}

impl Container {
    /// Mounts the layers, creates the cgroup and the init process, which waits for
    /// [`Container::start`] after setting everything up (so a missing executable is
    /// reported here, as runc does).
    pub fn create(cfg: &RuntimeConfig, opts: CreateOptions) -> Result<Container> {
        if !valid_id(&opts.id) {
            return Err(RuntimeError::config(
                "id",
                format!("{:?} must be 1-128 of [A-Za-z0-9_.-]", opts.id),
            ));
        }
        if opts.layers.is_empty() {
            return Err(RuntimeError::config(
                "layers",
                "at least one layer is needed",
            ));
        }
        let state_dir = cfg.state_root.join(&opts.id);
        std::fs::create_dir_all(&cfg.state_root)
            .map_err(|e| RuntimeError::io("creating", &cfg.state_root, e))?;
        match std::fs::create_dir(&state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(opts.id))
            }
            Err(e) => return Err(RuntimeError::io("creating", &state_dir, e)),
        }
        // `+` is not allowed in container ids, so these never meet a container's folder.
        static LAYER_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = LAYER_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let layer_dir = cfg.state_root.join(format!("+{n}"));
        let mut c = Container {
            id: opts.id.clone(),
            layer_dir,
            rootfs: state_dir.join("rootfs"),
            scratch_dir: state_dir.join("scratch"),
            upper: PathBuf::new(),
            state_dir,
            mounts: Vec::new(),
            cgroup: None,
            pid: 0,
            status: Status::Created,
            start_fd: None,
            report_fd: None,
            last_cap: crate::caps::last_cap(),
            spec: opts.spec.clone(),
            init_process: None,
        };
        match c.setup(cfg, opts) {
            Ok(()) => Ok(c),
            Err(e) => {
                c.cleanup();
                Err(e)
            }
        }
    }

    fn setup(&mut self, cfg: &RuntimeConfig, opts: CreateOptions) -> Result<()> {
        // Layers, lowest first; overlayfs lists them top first.
        let mut lowers = Vec::new();
        for (i, l) in opts.layers.iter().enumerate() {
            match l {
                Layer::Dir(d) => {
                    if !d.is_dir() {
                        return Err(RuntimeError::config(
                            format!("layers[{i}]"),
                            format!("{} is not a directory", d.display()),
                        ));
                    }
                    lowers.push(d.clone());
                }
                Layer::Device {
                    path,
                    fstype,
                    range,
                } => {
                    let t = self.layer_dir.join(i.to_string());
                    match range {
                        None => mount_layer(path, &t, fstype.as_deref(), false)?,
                        Some((offset, length)) => {
                            let dev = crate::loopdev::attach_range(path, *offset, *length)?;
                            // The mount keeps the loop device; dropping `dev` after it
                            // lets the kernel detach it once the mount goes.
                            mount_layer(&dev.path, &t, fstype.as_deref(), false)?;
                        }
                    }
                    self.mounts.push(t.clone());
                    lowers.push(t);
                }
            }
        }
        let scratch = match &opts.scratch {
            Scratch::Dir(d) => d.clone(),
            Scratch::Device { path, fstype } => {
                mount_layer(path, &self.scratch_dir, fstype.as_deref(), true)?;
                self.mounts.push(self.scratch_dir.clone());
                self.scratch_dir.clone()
            }
            Scratch::Tmpfs => {
                std::fs::create_dir_all(&self.scratch_dir)
                    .map_err(|e| RuntimeError::io("creating", &self.scratch_dir, e))?;
                mount(
                    Some("tmpfs"),
                    &self.scratch_dir,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("mode=0755"),
                )
                .map_err(|e| RuntimeError::sys("mounting the scratch tmpfs", e))?;
                self.mounts.push(self.scratch_dir.clone());
                self.scratch_dir.clone()
            }
        };
        self.scratch_dir = scratch.clone();
        self.upper = scratch.join("upper");
        let work = scratch.join("work");
        for d in [&self.upper, &work, &self.rootfs] {
            std::fs::create_dir_all(d).map_err(|e| RuntimeError::io("creating", d, e))?;
        }
        let lowerdir = lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            self.upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &self.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| RuntimeError::sys(format!("mounting overlay ({data})"), e))?;
        // The overlay is detached first on delete.
        self.mounts.insert(0, self.rootfs.clone());

        let cgroup2 = cgroup::is_cgroup2(&cfg.cgroup_root);
        // The pty slave's name, for /dev/console (the child's mount namespace starts as a
        // copy of ours, so the same path names it there).
        let console = std::fs::read_link(format!("/proc/self/fd/{}", opts.stdio.stdin.as_raw_fd()))
            .ok()
            .filter(|p| p.starts_with("/dev/pts/"));
        let ctx = Context {
            rootfs: &self.rootfs,
            user: opts.user.as_deref(),
            cgroup2,
            last_cap: self.last_cap,
            console: console.as_deref(),
        };
        let plan = plan::init_plan(&opts.spec, &ctx)?;
        ensure_cwd(&self.rootfs, &plan.process);
        let resources = opts
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref());
        if cgroup2 {
            self.cgroup = Some(Cgroup::create(&cfg.cgroup_root, &self.id, resources)?);
        } else if resources
            .is_some_and(|r| r.memory().is_some() || r.cpu().is_some() || r.pids().is_some())
        {
            tracing::warn!(
                "cgroup v2 is not mounted at {}: resource limits of container {} are not applied",
                cfg.cgroup_root.display(),
                self.id
            );
        }
        self.spawn_init(&plan, opts.stdio)
    }

    fn spawn_init(&mut self, plan: &InitPlan, stdio: Stdio) -> Result<()> {
        let stdio = stdio.above_stdio()?;
        let (report_r, report_w) = pipe()?;
        let (sync_r, sync_w) = pipe()?;
        let (start_r, start_w) = pipe()?;
        let argv = ptrs(&plan.process.args);
        let envp = ptrs(&plan.process.env);
        let fds = ChildFds {
            stdin: stdio.stdin.as_raw_fd(),
            stdout: stdio.stdout.as_raw_fd(),
            stderr: stdio.stderr.as_raw_fd(),
            report: report_w.as_raw_fd(),
            sync: sync_r.as_raw_fd(),
            start: start_r.as_raw_fd(),
        };
        let sys = LinuxSyscalls;
        let pid = sys
            .clone_fork(plan.clone_flags)
            .map_err(|e| RuntimeError::sys("cloning the container's init", e))?;
        if pid == 0 {
            let m = child::init_sequence(&sys, plan, &fds, &argv, &envp);
            child::report_and_exit(&sys, fds.report, &m);
        }
        drop((report_w, sync_r, start_r, stdio));
        self.pid = pid;
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.add(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                reap(pid);
                return Err(e);
            }
        }
        if let Err(e) = nix::unistd::write(&sync_w, &[1]) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            reap(pid);
            return Err(RuntimeError::sys("releasing the container's init", e));
        }
        drop(sync_w);
        match read_message(&report_r)? {
            Some(m) if m.kind == child::MSG_READY => {
                self.start_fd = Some(start_w);
                self.report_fd = Some(report_r);
                self.init_process = Some(plan.process.clone());
                Ok(())
            }
            Some(m) => {
                reap(pid);
                Err(report_error(&m, &plan.process, &plan.steps))
            }
            None => {
                reap(pid);
                Err(RuntimeError::Setup {
                    step: "setting up the container (the init process died)".into(),
                    errno: Errno::EPIPE,
                })
            }
        }
    }

    /// Lets init exec the container's process; returns once it has exec'd.
    pub fn start(&mut self) -> Result<()> {
        if self.status != Status::Created {
            return Err(RuntimeError::InvalidState {
                id: self.id.clone(),
                state: self.status.name(),
                what: "only a created container can be started",
            });
        }
        let (Some(start), Some(report)) = (self.start_fd.take(), self.report_fd.take()) else {
            return Err(RuntimeError::InvalidState {
                id: self.id.clone(),
                state: "broken",
                what: "its init process is not waiting",
            });
        };
        nix::unistd::write(&start, &[1])
            .map_err(|e| RuntimeError::sys("starting the container's init", e))?;
        drop(start);
        match read_message(&report)? {
            None => {
                self.status = Status::Running;
                Ok(())
            }
            Some(m) => {
                // The child exits with 127/126; the caller reaps it.
                self.status = Status::Running;
                match &self.init_process {
                    Some(p) => Err(report_error(&m, p, &[])),
                    None => Err(RuntimeError::Setup {
                        step: child::stage::name(m.step).to_string(),
                        errno: Errno::from_raw(m.errno),
                    }),
                }
            }
        }
    }

    /// Runs another process in the running container; returns its pid (a child of the
    /// caller, to be waited for like init).
    pub fn exec(&self, process: &Process, user: Option<&str>, stdio: Stdio) -> Result<i32> {
        if self.status != Status::Running {
            return Err(RuntimeError::InvalidState {
                id: self.id.clone(),
                state: self.status.name(),
                what: "exec needs a running container",
            });
        }
        let p = plan::process_plan(process, "process", &self.rootfs, user, self.last_cap)?;
        ensure_cwd(&self.rootfs, &p);
        let mut ns_files = Vec::new();
        for (name, t) in [
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
            ("net", libc::CLONE_NEWNET),
            ("pid", libc::CLONE_NEWPID),
            ("cgroup", libc::CLONE_NEWCGROUP),
            ("mnt", libc::CLONE_NEWNS),
        ] {
            let path = format!("/proc/{}/ns/{name}", self.pid);
            let fd = nix::fcntl::open(
                path.as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| RuntimeError::sys(format!("opening {path}"), e))?;
            ns_files.push((fd, t));
        }
        let namespaces: Vec<(RawFd, i32)> =
            ns_files.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
        let procs = self
            .cgroup
            .as_ref()
            .map(|c| CString::new(c.procs().as_os_str().as_bytes()))
            .transpose()
            .map_err(|_| RuntimeError::config("id", "NUL in cgroup path"))?;
        let join = ExecJoin {
            cgroup_procs: procs.as_deref(),
            namespaces: &namespaces,
        };
        let stdio = stdio.above_stdio()?;
        let (report_r, report_w) = pipe()?;
        let argv = ptrs(&p.args);
        let envp = ptrs(&p.env);
        let fds = ChildFds {
            stdin: stdio.stdin.as_raw_fd(),
            stdout: stdio.stdout.as_raw_fd(),
            stderr: stdio.stderr.as_raw_fd(),
            report: report_w.as_raw_fd(),
            sync: -1,
            start: -1,
        };
        let sys = LinuxSyscalls;
        let helper = sys
            .clone_fork(0)
            .map_err(|e| RuntimeError::sys("forking the exec helper", e))?;
        if helper == 0 {
            match child::exec_sequence(&sys, &p, &join, &fds, &argv, &envp) {
                ExecEnd::HelperDone => sys.exit(0),
                ExecEnd::Failed(m) => child::report_and_exit(&sys, fds.report, &m),
            }
        }
        drop((report_w, stdio, ns_files));
        let mut pid = None;
        let mut failure = None;
        while let Some(m) = read_message(&report_r)? {
            if m.kind == child::MSG_PID {
                pid = Some(m.step);
            } else if failure.is_none() {
                failure = Some(m);
            }
        }
        reap(helper);
        if let Some(m) = failure {
            if let Some(pid) = pid {
                reap(pid);
            }
            return Err(report_error(&m, &p, &[]));
        }
        pid.ok_or_else(|| RuntimeError::Setup {
            step: "starting the exec (the helper died)".into(),
            errno: Errno::EPIPE,
        })
    }

    /// Sends `signal` to init.
    pub fn signal(&self, signal: i32) -> Result<()> {
        signal_pid(self.pid, signal)
    }

    /// Blocks until init exits (for callers that do not reap children themselves).
    pub fn wait(&mut self) -> Result<i32> {
        if let Status::Stopped(c) = self.status {
            return Ok(c);
        }
        let c = wait_pid(self.pid)?;
        self.status = Status::Stopped(c);
        Ok(c)
    }

    /// Records init's exit, for callers that reap children themselves (the agent).
    pub fn set_exited(&mut self, code: i32) {
        self.status = Status::Stopped(code);
        self.start_fd = None;
        self.report_fd = None;
    }

    /// Kills every process of the container (init last takes its pid namespace down).
    pub fn kill_all(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        if !matches!(self.status, Status::Stopped(_)) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// Removes the container: kills what runs, detaches its mounts, removes its cgroup and
    /// state directory. Init stays a zombie until its parent reaps it (wait for it).
    pub fn delete(mut self) -> Result<()> {
        self.kill_all();
        self.start_fd = None;
        self.report_fd = None;
        self.cleanup_checked()
    }

    fn cleanup(&mut self) {
        if let Err(e) = self.cleanup_checked() {
            tracing::warn!("cleaning up container {}: {e}", self.id);
        }
    }

    fn cleanup_checked(&mut self) -> Result<()> {
        let mut first_err = None;
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                first_err.get_or_insert(e);
            }
        }
        for m in self.mounts.drain(..) {
            if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                if e != Errno::EINVAL && e != Errno::ENOENT {
                    first_err
                        .get_or_insert(RuntimeError::sys(format!("unmounting {}", m.display()), e));
                }
            }
        }
        // Never recurse into something still mounted.
        let mounted = [self.rootfs.clone(), self.state_dir.join("scratch")]
            .iter()
            .any(|p| is_mount_point(p));
        let layer_mounted = std::fs::read_dir(&self.layer_dir)
            .map(|rd| rd.flatten().any(|e| is_mount_point(&e.path())))
            .unwrap_or(false);
        if mounted || layer_mounted {
            first_err.get_or_insert(RuntimeError::sys(
                format!("{} still has mounts", self.state_dir.display()),
                Errno::EBUSY,
            ));
        } else {
            for dir in [&self.layer_dir, &self.state_dir] {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        first_err.get_or_insert(RuntimeError::io("removing", dir, e));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Container id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Host pid of init.
    pub fn pid(&self) -> i32 {
        self.pid
    }
    /// State.
    pub fn status(&self) -> Status {
        self.status
    }
    /// The container's root filesystem (the overlay), as the runtime sees it.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }
    /// The overlay upper directory (what `commit` packs).
    pub fn upper_dir(&self) -> &Path {
        &self.upper
    }
    /// The scratch directory (upper, work; a good place for logs).
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }
    /// The container's cgroup, when cgroup v2 is in use.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }
    /// The spec it was created with.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }
}

/// Sends `signal` to `pid`.
pub fn signal_pid(pid: i32, signal: i32) -> Result<()> {
    let sig = Signal::try_from(signal)
        .map_err(|_| RuntimeError::config("signal", format!("{signal} is not a signal")))?;
    kill(Pid::from_raw(pid), sig).map_err(|e| RuntimeError::sys(format!("signalling pid {pid}"), e))
}
