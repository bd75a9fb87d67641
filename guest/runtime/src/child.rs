//! Code that runs in the cloned child, before execve.
//!
//! The child may have been cloned from a multi-threaded process, so nothing here allocates,
//! locks or logs: it walks the plan built by [`crate::plan`] and reports to the parent over
//! a pipe with fixed-size [`Message`]s.

use std::ffi::c_char;
use std::os::fd::RawFd;

use crate::error::Errno;
use crate::plan::{InitPlan, ProcessPlan, Step};
use crate::sys::Syscalls;

/// Setup finished; the init waits for start.
pub const MSG_READY: u32 = 1;
/// A step or stage failed (`step` >= 0: index into the plan's steps; < 0: a [`stage`]).
pub const MSG_FAILED: u32 = 2;
/// The executable does not exist.
pub const MSG_NOT_FOUND: u32 = 3;
/// The executable exists but cannot be executed.
pub const MSG_NOT_EXECUTABLE: u32 = 4;
/// execve failed.
pub const MSG_EXEC_FAILED: u32 = 5;
/// The exec helper reports the pid of the exec'd process.
pub const MSG_PID: u32 = 6;

/// Stage codes of [`MSG_FAILED`] with a negative step.
pub mod stage {
    /// Waiting for the parent.
    pub const SYNC: i32 = -1;
    /// unshare(CLONE_NEWCGROUP).
    pub const CGROUP_NS: i32 = -2;
    /// Setting up stdio.
    pub const STDIO: i32 = -3;
    /// Closing inherited descriptors.
    pub const CLOSE_FDS: i32 = -4;
    /// setsid.
    pub const SETSID: i32 = -5;
    /// Controlling terminal.
    pub const CTTY: i32 = -6;
    /// rlimits.
    pub const RLIMIT: i32 = -10;
    /// Capability bounding set.
    pub const BOUNDING: i32 = -11;
    /// PR_SET_KEEPCAPS.
    pub const KEEPCAPS: i32 = -12;
    /// setgroups.
    pub const SETGROUPS: i32 = -13;
    /// setgid.
    pub const SETGID: i32 = -14;
    /// setuid.
    pub const SETUID: i32 = -15;
    /// capset.
    pub const CAPSET: i32 = -16;
    /// Ambient capabilities.
    pub const AMBIENT: i32 = -17;
    /// no_new_privs.
    pub const NO_NEW_PRIVS: i32 = -18;
    /// chdir to the working directory.
    pub const CWD: i32 = -19;
    /// Reporting readiness.
    pub const REPORT: i32 = -20;
    /// Waiting for start.
    pub const START: i32 = -21;
    /// Joining the container's cgroup.
    pub const JOIN_CGROUP: i32 = -30;
    /// Joining the container's namespaces.
    pub const SETNS: i32 = -31;
    /// Forking the exec'd process.
    pub const FORK: i32 = -32;
    /// Writing /proc/self/oom_score_adj.
    pub const OOM_SCORE: i32 = -33;

    /// Name of a stage, for messages.
    pub fn name(code: i32) -> &'static str {
        match code {
            SYNC => "waiting for the runtime",
            CGROUP_NS => "creating the cgroup namespace",
            STDIO => "setting up stdio",
            CLOSE_FDS => "closing inherited file descriptors",
            SETSID => "creating a session",
            CTTY => "setting the controlling terminal",
            RLIMIT => "setting rlimits",
            BOUNDING => "dropping capabilities from the bounding set",
            KEEPCAPS => "keeping capabilities across setuid",
            SETGROUPS => "setting supplementary groups",
            SETGID => "setting the group id",
            SETUID => "setting the user id",
            CAPSET => "setting capabilities",
            AMBIENT => "raising ambient capabilities",
            NO_NEW_PRIVS => "setting no_new_privs",
            CWD => "changing to the working directory",
            REPORT => "reporting to the runtime",
            START => "waiting for start",
            JOIN_CGROUP => "joining the container's cgroup",
            SETNS => "joining the container's namespaces",
            FORK => "forking the process",
            OOM_SCORE => "setting oom_score_adj",
            _ => "setting up the container",
        }
    }
}

/// A fixed-size report from the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// `MSG_*`.
    pub kind: u32,
    /// Step index, stage code or pid.
    pub step: i32,
    /// errno.
    pub errno: i32,
}

impl Message {
    /// Wire size.
    pub const SIZE: usize = 12;
    /// Encodes.
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.step.to_ne_bytes());
        b[8..].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }
    /// Decodes.
    pub fn decode(b: &[u8; 12]) -> Self {
        Message {
            kind: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            step: i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            errno: i32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

fn fail(step: i32, e: Errno) -> Message {
    Message {
        kind: MSG_FAILED,
        step,
        errno: e as i32,
    }
}

/// Descriptors handed to the child.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// Becomes fd 0.
    pub stdin: RawFd,
    /// Becomes fd 1.
    pub stdout: RawFd,
    /// Becomes fd 2.
    pub stderr: RawFd,
    /// Write end of the report pipe (close-on-exec).
    pub report: RawFd,
    /// Read end of the parent's "go" pipe (init only, -1 otherwise).
    pub sync: RawFd,
    /// Read end of the start pipe (init only, -1 otherwise).
    pub start: RawFd,
}

/// Closes every descriptor from 3 up except those in `keep` (at most 16 are honoured).
pub fn close_except<S: Syscalls + ?Sized>(sys: &S, keep: &[RawFd]) -> Result<(), Errno> {
    let mut k = [i32::MAX; 16];
    let mut n = 0;
    for &fd in keep {
        if fd >= 3 && n < k.len() {
            k[n] = fd;
            n += 1;
        }
    }
    // Insertion sort: no allocation.
    for i in 1..n {
        let mut j = i;
        while j > 0 && k[j - 1] > k[j] {
            k.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut next: u32 = 3;
    for &fd in &k[..n] {
        let fd = fd as u32;
        if fd > next {
            sys.close_range(next, fd - 1)?;
        }
        if fd >= next {
            next = fd + 1;
        }
    }
    match sys.close_range(next, u32::MAX) {
        Err(Errno::ENOSYS) => Ok(()),
        r => r,
    }
}

fn dup_stdio<S: Syscalls + ?Sized>(sys: &S, fds: &ChildFds) -> Result<(), Message> {
    sys.dup2(fds.stdin, 0)
        .and_then(|_| sys.dup2(fds.stdout, 1))
        .and_then(|_| sys.dup2(fds.stderr, 2))
        .map_err(|e| fail(stage::STDIO, e))
}

fn session<S: Syscalls + ?Sized>(sys: &S, tty: bool) -> Result<(), Message> {
    sys.setsid().map_err(|e| fail(stage::SETSID, e))?;
    if tty {
        sys.set_controlling_tty(0)
            .map_err(|e| fail(stage::CTTY, e))?;
    }
    Ok(())
}

fn mkdir_all<S: Syscalls + ?Sized>(sys: &S, path: &std::ffi::CStr) -> Result<(), Errno> {
    let bytes = path.to_bytes();
    let mut buf = [0u8; 4096];
    if bytes.len() >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let end = bytes.len();
    let mut i = 1;
    while i <= end {
        if i == end || buf[i] == b'/' {
            let saved = buf[i];
            buf[i] = 0;
            let c = std::ffi::CStr::from_bytes_until_nul(&buf[..=i]).map_err(|_| Errno::EINVAL)?;
            match sys.mkdir(c, 0o755) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            buf[i] = saved;
        }
        i += 1;
    }
    Ok(())
}

/// Runs one step.
pub fn run_step<S: Syscalls + ?Sized>(sys: &S, step: &Step) -> Result<(), Errno> {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => sys.mount(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Step::MkdirAll(p) => mkdir_all(sys, p),
        Step::CreateFile(p) => match sys.stat(p) {
            Ok(_) => Ok(()),
            Err(_) => sys.create_file(p),
        },
        Step::Mknod { path, mode, dev } => match sys.mknod(path, *mode, *dev) {
            Err(Errno::EEXIST) => Ok(()),
            r => r,
        },
        Step::Symlink { target, link } => match sys.symlink(target, link) {
            Err(Errno::EEXIST) => Ok(()),
            r => r,
        },
        Step::PivotRoot(root) => {
            let dot = c".";
            sys.chdir(root)?;
            sys.pivot_root(dot, dot)?;
            sys.umount2(dot, libc::MNT_DETACH)?;
            sys.chdir(c"/")
        }
        Step::Mask(p) => match sys.stat(p) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(()),
            Err(e) => Err(e),
            Ok(st) if st.is_dir() => {
                sys.mount(Some(c"tmpfs"), p, Some(c"tmpfs"), libc::MS_RDONLY, None)
            }
            Ok(_) => sys.mount(Some(c"/dev/null"), p, None, libc::MS_BIND, None),
        },
        Step::ReadOnly(p) => match sys.stat(p) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => {
                sys.mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None)?;
                sys.mount(
                    None,
                    p,
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
                    None,
                )
            }
        },
        Step::Hostname(h) => sys.sethostname(h),
    }
}

/// Credentials, limits, capabilities and working directory of a process.
pub fn setup_process<S: Syscalls + ?Sized>(sys: &S, p: &ProcessPlan) -> Result<(), Message> {
    match sys.open_write(c"/proc/self/oom_score_adj") {
        Ok(fd) => {
            let r = sys.write(fd, p.oom_score_adj.to_bytes());
            sys.close(fd);
            r.map_err(|e| fail(stage::OOM_SCORE, e))?;
        }
        // No /proc in this container: nothing to reset.
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(fail(stage::OOM_SCORE, e)),
    }
    for &(res, soft, hard) in &p.rlimits {
        sys.setrlimit(res, soft, hard)
            .map_err(|e| fail(stage::RLIMIT, e))?;
    }
    if let Some(c) = &p.caps {
        for cap in 0..=p.last_cap.min(63) {
            if c.bounding & (1u64 << cap) == 0 {
                match sys.drop_bounding(cap) {
                    Ok(()) | Err(Errno::EINVAL) => {}
                    Err(e) => return Err(fail(stage::BOUNDING, e)),
                }
            }
        }
    }
    sys.set_keep_caps(true)
        .map_err(|e| fail(stage::KEEPCAPS, e))?;
    sys.setgroups(&p.user.groups)
        .map_err(|e| fail(stage::SETGROUPS, e))?;
    sys.setgid(p.user.gid).map_err(|e| fail(stage::SETGID, e))?;
    sys.setuid(p.user.uid).map_err(|e| fail(stage::SETUID, e))?;
    sys.set_keep_caps(false)
        .map_err(|e| fail(stage::KEEPCAPS, e))?;
    if let Some(c) = &p.caps {
        sys.capset(c.effective, c.permitted, c.inheritable)
            .map_err(|e| fail(stage::CAPSET, e))?;
        for cap in 0..=p.last_cap.min(63) {
            if c.ambient & (1u64 << cap) != 0 {
                sys.raise_ambient(cap)
                    .map_err(|e| fail(stage::AMBIENT, e))?;
            }
        }
    }
    if p.no_new_privs {
        sys.set_no_new_privs()
            .map_err(|e| fail(stage::NO_NEW_PRIVS, e))?;
    }
    sys.umask(0o022);
    sys.chdir(&p.cwd).map_err(|e| fail(stage::CWD, e))?;
    Ok(())
}

/// Finds the executable: the index of the candidate to exec.
pub fn lookup<S: Syscalls + ?Sized>(sys: &S, p: &ProcessPlan) -> Result<usize, Message> {
    let not = |kind, e: Errno| Message {
        kind,
        step: 0,
        errno: e as i32,
    };
    if !p.search_path {
        let Some(c) = p.candidates.first() else {
            return Err(not(MSG_NOT_FOUND, Errno::ENOENT));
        };
        return match sys.stat(c) {
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Err(not(MSG_NOT_FOUND, Errno::ENOENT)),
            Err(e) => Err(not(MSG_NOT_EXECUTABLE, e)),
            Ok(st) if st.is_dir() => Err(not(MSG_NOT_EXECUTABLE, Errno::EISDIR)),
            Ok(_) => match sys.access_x(c) {
                Ok(()) => Ok(0),
                Err(e) => Err(not(MSG_NOT_EXECUTABLE, e)),
            },
        };
    }
    for (i, c) in p.candidates.iter().enumerate() {
        if let Ok(st) = sys.stat(c) {
            if !st.is_dir() && sys.access_x(c).is_ok() {
                return Ok(i);
            }
        }
    }
    Err(not(MSG_NOT_FOUND, Errno::ENOENT))
}

fn exec<S: Syscalls + ?Sized>(
    sys: &S,
    p: &ProcessPlan,
    idx: usize,
    argv: &[*const c_char],
    envp: &[*const c_char],
) -> Message {
    let Some(path) = p.candidates.get(idx) else {
        return fail(stage::START, Errno::EINVAL);
    };
    let e = sys.execve(path, argv, envp);
    Message {
        kind: MSG_EXEC_FAILED,
        step: 0,
        errno: e as i32,
    }
}

/// The init child, from clone to execve. Returns only on failure, with the report.
pub fn init_sequence<S: Syscalls + ?Sized>(
    sys: &S,
    plan: &InitPlan,
    fds: &ChildFds,
    argv: &[*const c_char],
    envp: &[*const c_char],
) -> Message {
    match init_inner(sys, plan, fds) {
        Ok(idx) => exec(sys, &plan.process, idx, argv, envp),
        Err(m) => m,
    }
}

fn init_inner<S: Syscalls + ?Sized>(
    sys: &S,
    plan: &InitPlan,
    fds: &ChildFds,
) -> Result<usize, Message> {
    sys.reset_signals();
    let mut b = [0u8; 1];
    match sys.read(fds.sync, &mut b) {
        Ok(1) => {}
        Ok(_) => return Err(fail(stage::SYNC, Errno::EPIPE)),
        Err(e) => return Err(fail(stage::SYNC, e)),
    }
    if plan.new_cgroup_ns {
        sys.unshare(libc::CLONE_NEWCGROUP)
            .map_err(|e| fail(stage::CGROUP_NS, e))?;
    }
    dup_stdio(sys, fds)?;
    close_except(sys, &[fds.report, fds.start]).map_err(|e| fail(stage::CLOSE_FDS, e))?;
    session(sys, plan.process.tty)?;
    sys.umask(0);
    for (i, step) in plan.steps.iter().enumerate() {
        run_step(sys, step).map_err(|e| fail(i as i32, e))?;
    }
    setup_process(sys, &plan.process)?;
    let idx = lookup(sys, &plan.process)?;
    let ready = Message {
        kind: MSG_READY,
        step: 0,
        errno: 0,
    };
    sys.write(fds.report, &ready.encode())
        .map_err(|e| fail(stage::REPORT, e))?;
    match sys.read(fds.start, &mut b) {
        Ok(1) => Ok(idx),
        Ok(_) => Err(fail(stage::START, Errno::EPIPE)),
        Err(e) => Err(fail(stage::START, e)),
    }
}

/// What an exec helper needs besides the process plan.
#[derive(Debug, Clone, Copy)]
pub struct ExecJoin<'a> {
    /// `cgroup.procs` of the container (cgroup v2), joined by writing "0".
    pub cgroup_procs: Option<&'a std::ffi::CStr>,
    /// (fd, CLONE_NEW*) pairs to setns into, in order.
    pub namespaces: &'a [(RawFd, i32)],
}

/// End of an exec helper or exec'd process that did not exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// The helper forked the process and reported its pid: exit 0.
    HelperDone,
    /// A failure to report.
    Failed(Message),
}

/// The exec helper: joins the container's cgroup and namespaces, then forks the process
/// as a sibling (CLONE_PARENT) which sets itself up and execs.
pub fn exec_sequence<S: Syscalls + ?Sized>(
    sys: &S,
    p: &ProcessPlan,
    join: &ExecJoin<'_>,
    fds: &ChildFds,
    argv: &[*const c_char],
    envp: &[*const c_char],
) -> ExecEnd {
    sys.reset_signals();
    let mut keep = [-1; 16];
    keep[0] = fds.stdin;
    keep[1] = fds.stdout;
    keep[2] = fds.stderr;
    keep[3] = fds.report;
    for (i, (fd, _)) in join.namespaces.iter().take(12).enumerate() {
        keep[4 + i] = *fd;
    }
    if let Err(e) = close_except(sys, &keep) {
        return ExecEnd::Failed(fail(stage::CLOSE_FDS, e));
    }
    if let Some(procs) = join.cgroup_procs {
        let r = sys.open_write(procs).and_then(|fd| {
            let r = sys.write(fd, b"0");
            sys.close(fd);
            r
        });
        if let Err(e) = r {
            return ExecEnd::Failed(fail(stage::JOIN_CGROUP, e));
        }
    }
    for &(fd, t) in join.namespaces {
        if let Err(e) = sys.setns(fd, t) {
            return ExecEnd::Failed(fail(stage::SETNS, e));
        }
        sys.close(fd);
    }
    match sys.clone_fork(libc::CLONE_PARENT) {
        Err(e) => ExecEnd::Failed(fail(stage::FORK, e)),
        Ok(0) => {
            let r = (|| {
                dup_stdio(sys, fds)?;
                close_except(sys, &[fds.report]).map_err(|e| fail(stage::CLOSE_FDS, e))?;
                session(sys, p.tty)?;
                setup_process(sys, p)?;
                lookup(sys, p)
            })();
            match r {
                Ok(idx) => ExecEnd::Failed(exec(sys, p, idx, argv, envp)),
                Err(m) => ExecEnd::Failed(m),
            }
        }
        Ok(pid) => {
            let m = Message {
                kind: MSG_PID,
                step: pid,
                errno: 0,
            };
            match sys.write(fds.report, &m.encode()) {
                Ok(()) => ExecEnd::HelperDone,
                Err(e) => ExecEnd::Failed(fail(stage::REPORT, e)),
            }
        }
    }
}

/// Exit status of a child that failed with `m`: 127 when the executable is missing, 126
/// when it cannot be executed, 1 otherwise.
pub fn failure_exit_code(m: &Message) -> i32 {
    match m.kind {
        MSG_NOT_FOUND => 127,
        MSG_NOT_EXECUTABLE => 126,
        MSG_EXEC_FAILED if m.errno == libc::ENOENT => 127,
        MSG_EXEC_FAILED => 126,
        _ => 1,
    }
}

/// Reports `m` on `report` and exits.
pub fn report_and_exit<S: Syscalls + ?Sized>(sys: &S, report: RawFd, m: &Message) -> ! {
    let _ = sys.write(report, &m.encode());
    sys.exit(failure_exit_code(m))
}
