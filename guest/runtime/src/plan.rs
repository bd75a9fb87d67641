//! Turning an OCI spec into the list of steps the container child runs.
//!
//! All decisions (and all allocation) happen here, in the parent; the child in
//! [`crate::child`] only walks the plan. Unit tests check plans without any privilege.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimitType, Process, Spec};

use crate::error::{Result, RuntimeError};
use crate::fs::join_lexical;
use crate::user::{self, ResolvedUser};

/// The PATH used for lookups when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One step of the container's filesystem and identity setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// mount(2).
    Mount {
        /// Source.
        source: Option<CString>,
        /// Target.
        target: CString,
        /// Filesystem type.
        fstype: Option<CString>,
        /// MS_* flags.
        flags: u64,
        /// Filesystem options.
        data: Option<CString>,
    },
    /// mkdir -p.
    MkdirAll(CString),
    /// Create an empty file (bind target).
    CreateFile(CString),
    /// mknod.
    Mknod {
        /// Path.
        path: CString,
        /// Mode with type bits.
        mode: u32,
        /// Device number.
        dev: u64,
    },
    /// symlink(target, link).
    Symlink {
        /// Link text.
        target: CString,
        /// Link path.
        link: CString,
    },
    /// Make this directory the root (pivot_root(".", "."), detach the old root).
    PivotRoot(CString),
    /// Mask a path (container view): /dev/null over files, read-only tmpfs over dirs.
    Mask(CString),
    /// Make a path (container view) read-only.
    ReadOnly(CString),
    /// sethostname.
    Hostname(CString),
}

fn lossy(c: &Option<CString>) -> String {
    c.as_ref()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| "none".into())
}

impl Step {
    /// What the step does, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => format!(
                "mounting {} on {} (type {}, flags {:#x}, options {})",
                lossy(source),
                target.to_string_lossy(),
                lossy(fstype),
                flags,
                lossy(data)
            ),
            Step::MkdirAll(p) => format!("creating directory {}", p.to_string_lossy()),
            Step::CreateFile(p) => format!("creating mount target {}", p.to_string_lossy()),
            Step::Mknod { path, .. } => format!("creating device {}", path.to_string_lossy()),
            Step::Symlink { link, .. } => format!("creating symlink {}", link.to_string_lossy()),
            Step::PivotRoot(p) => format!("pivoting the root to {}", p.to_string_lossy()),
            Step::Mask(p) => format!("masking {}", p.to_string_lossy()),
            Step::ReadOnly(p) => format!("making {} read-only", p.to_string_lossy()),
            Step::Hostname(h) => format!("setting hostname {}", h.to_string_lossy()),
        }
    }
}

/// Capability sets as bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapPlan {
    /// Bounding set.
    pub bounding: u64,
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
    /// Inheritable.
    pub inheritable: u64,
    /// Ambient.
    pub ambient: u64,
}

/// Identity, limits and executable of a process.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<CString>,
    /// envp.
    pub env: Vec<CString>,
    /// Paths to try for argv\[0\], in order.
    pub candidates: Vec<CString>,
    /// argv\[0\] as given (for messages).
    pub arg0: String,
    /// Whether argv\[0\] is searched in PATH (it has no '/').
    pub search_path: bool,
    /// Working directory.
    pub cwd: CString,
    /// Credentials.
    pub user: ResolvedUser,
    /// (resource, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
    /// Capabilities; `None` leaves them as they are.
    pub caps: Option<CapPlan>,
    /// Highest capability number of the kernel.
    pub last_cap: u32,
    /// PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// Make stdin the controlling terminal.
    pub tty: bool,
    /// Written to /proc/self/oom_score_adj (the agent protects itself with -1000; its
    /// containers must not inherit that).
    pub oom_score_adj: CString,
}

/// Everything the init child does.
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// Namespace flags for clone(2), without CLONE_NEWCGROUP.
    pub clone_flags: i32,
    /// unshare(CLONE_NEWCGROUP) once the parent has moved the child into its cgroup.
    pub new_cgroup_ns: bool,
    /// Filesystem and hostname steps, in order.
    pub steps: Vec<Step>,
    /// The process.
    pub process: ProcessPlan,
}

/// Inputs that do not come from the spec.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The container's root (overlay mount), as the parent sees it.
    pub rootfs: &'a Path,
    /// `USER[:GROUP]` override.
    pub user: Option<&'a str>,
    /// Whether cgroup v2 is available (cgroup mounts are skipped otherwise).
    pub cgroup2: bool,
    /// The kernel's last capability.
    pub last_cap: u32,
    /// Path of the terminal (pty slave) in the runtime's mount namespace, bound to
    /// /dev/console when the process has a terminal.
    pub console: Option<&'a Path>,
}

fn cstr(field: &str, s: impl AsRef<[u8]>) -> Result<CString> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| RuntimeError::config(field, "contains a NUL byte"))
}

fn path_c(p: &Path) -> Result<CString> {
    cstr("path", p.as_os_str().as_bytes())
}

const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Parsed mount options: (flags, propagation flags, filesystem data, bind, recursive bind).
fn parse_options(opts: &[String]) -> (u64, u64, Vec<String>, bool) {
    let mut flags = 0u64;
    let mut prop = 0u64;
    let mut data = Vec::new();
    let mut bind = false;
    for o in opts {
        let (set, clear): (u64, u64) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                bind = true;
                (libc::MS_BIND, 0)
            }
            "rbind" => {
                bind = true;
                (libc::MS_BIND | libc::MS_REC, 0)
            }
            "private" => {
                prop |= libc::MS_PRIVATE;
                (0, 0)
            }
            "rprivate" => {
                prop |= libc::MS_PRIVATE | libc::MS_REC;
                (0, 0)
            }
            "slave" => {
                prop |= libc::MS_SLAVE;
                (0, 0)
            }
            "rslave" => {
                prop |= libc::MS_SLAVE | libc::MS_REC;
                (0, 0)
            }
            "shared" => {
                prop |= libc::MS_SHARED;
                (0, 0)
            }
            "rshared" => {
                prop |= libc::MS_SHARED | libc::MS_REC;
                (0, 0)
            }
            "unbindable" => {
                prop |= libc::MS_UNBINDABLE;
                (0, 0)
            }
            "runbindable" => {
                prop |= libc::MS_UNBINDABLE | libc::MS_REC;
                (0, 0)
            }
            other => {
                data.push(other.to_string());
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, prop, data, bind)
}

fn mount_steps(
    i: usize,
    m: &Mount,
    ctx: &Context<'_>,
    steps: &mut Vec<Step>,
) -> Result<Option<PathBuf>> {
    let field = |f: &str| format!("mounts[{i}].{f}");
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(RuntimeError::config(
            field("destination"),
            format!("{} is not an absolute path", dest.display()),
        ));
    }
    let target = join_lexical(ctx.rootfs, dest).ok_or_else(|| {
        RuntimeError::config(
            field("destination"),
            format!("{} must not contain ..", dest.display()),
        )
    })?;
    let target_c = path_c(&target)?;
    let typ = m.typ().as_deref().unwrap_or("");
    let (flags, prop, data, bind) = parse_options(m.options().as_deref().unwrap_or(&[]));
    if typ == "bind" || bind {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| RuntimeError::config(field("source"), "a bind mount needs a source"))?;
        if !src.is_absolute() {
            return Err(RuntimeError::config(
                field("source"),
                format!("{} is not an absolute path", src.display()),
            ));
        }
        let meta = std::fs::metadata(src).map_err(|e| {
            RuntimeError::config(field("source"), format!("{}: {e}", src.display()))
        })?;
        if meta.is_dir() {
            steps.push(Step::MkdirAll(target_c.clone()));
        } else {
            if let Some(parent) = target.parent() {
                steps.push(Step::MkdirAll(path_c(parent)?));
            }
            steps.push(Step::CreateFile(target_c.clone()));
        }
        let rec = if typ == "bind" && !bind {
            0
        } else {
            flags & libc::MS_REC
        };
        steps.push(Step::Mount {
            source: Some(path_c(src)?),
            target: target_c.clone(),
            fstype: None,
            flags: libc::MS_BIND | rec,
            data: None,
        });
        let rest = flags & !(libc::MS_BIND | libc::MS_REC);
        if rest != 0 {
            steps.push(Step::Mount {
                source: None,
                target: target_c.clone(),
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REMOUNT | rest,
                data: None,
            });
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        if !ctx.cgroup2 {
            tracing::warn!(
                "cgroup v2 is not available: {} is not mounted in the container",
                dest.display()
            );
            return Ok(None);
        }
        steps.push(Step::MkdirAll(target_c.clone()));
        steps.push(Step::Mount {
            source: Some(cstr("cgroup", "cgroup2")?),
            target: target_c.clone(),
            fstype: Some(cstr("cgroup", "cgroup2")?),
            flags,
            data: None,
        });
    } else {
        if typ.is_empty() {
            return Err(RuntimeError::config(
                field("type"),
                "missing filesystem type",
            ));
        }
        let source = m
            .source()
            .as_ref()
            .map(|s| s.as_os_str().as_bytes().to_vec())
            .unwrap_or_else(|| typ.as_bytes().to_vec());
        steps.push(Step::MkdirAll(target_c.clone()));
        steps.push(Step::Mount {
            source: Some(cstr(&field("source"), source)?),
            target: target_c.clone(),
            fstype: Some(cstr(&field("type"), typ)?),
            flags,
            data: if data.is_empty() {
                None
            } else {
                Some(cstr(&field("options"), data.join(","))?)
            },
        });
    }
    if prop != 0 {
        steps.push(Step::Mount {
            source: None,
            target: target_c,
            fstype: None,
            flags: prop,
            data: None,
        });
    }
    Ok(Some(dest.to_path_buf()))
}

fn rlimit_resource(t: PosixRlimitType) -> i32 {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as i32
}

/// Plans a process (init or exec) of a container whose root the parent sees at `rootfs`.
pub fn process_plan(
    p: &Process,
    field: &str,
    rootfs: &Path,
    user: Option<&str>,
    last_cap: u32,
) -> Result<ProcessPlan> {
    let f = |x: &str| format!("{field}.{x}");
    let args = p.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .cloned()
        .ok_or_else(|| RuntimeError::config(f("args"), "no command given"))?;
    if arg0.is_empty() {
        return Err(RuntimeError::config(f("args"), "the command is empty"));
    }
    let cwd = p.cwd();
    if !cwd.is_absolute() {
        return Err(RuntimeError::config(
            f("cwd"),
            format!("{} is not an absolute path", cwd.display()),
        ));
    }
    let u = p.user();
    let resolved = user::resolve(
        rootfs,
        user,
        u.uid(),
        u.gid(),
        u.additional_gids().as_deref().unwrap_or(&[]),
    )?;
    let mut env = p.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(RuntimeError::config(
                format!("{}[{i}]", f("env")),
                format!("{e:?} is not KEY=VALUE"),
            ));
        }
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", resolved.home));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let search_path = !arg0.contains('/');
    let candidates = if search_path {
        path_var
            .split(':')
            .map(|d| {
                let d = if d.is_empty() { "." } else { d };
                cstr(&f("env"), format!("{}/{arg0}", d.trim_end_matches('/')))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        vec![cstr(&f("args"), &arg0)?]
    };
    let caps = p.capabilities().as_ref().map(|c| CapPlan {
        bounding: crate::caps::mask(c.bounding().as_ref()),
        effective: crate::caps::mask(c.effective().as_ref()),
        permitted: crate::caps::mask(c.permitted().as_ref()),
        inheritable: crate::caps::mask(c.inheritable().as_ref()),
        ambient: crate::caps::mask(c.ambient().as_ref()),
    });
    let rlimits = p
        .rlimits()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.soft() > r.hard() {
                return Err(RuntimeError::config(
                    format!("{}[{i}]", f("rlimits")),
                    "soft limit above hard limit",
                ));
            }
            Ok((rlimit_resource(r.typ()), r.soft(), r.hard()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ProcessPlan {
        args: args
            .iter()
            .map(|a| cstr(&f("args"), a))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|e| cstr(&f("env"), e))
            .collect::<Result<_>>()?,
        candidates,
        arg0,
        search_path,
        cwd: path_c(cwd)?,
        user: resolved,
        rlimits,
        caps,
        last_cap,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        tty: p.terminal().unwrap_or(false),
        oom_score_adj: {
            let v = p.oom_score_adj().unwrap_or(0);
            if !(-1000..=1000).contains(&v) {
                return Err(RuntimeError::config(
                    f("oomScoreAdj"),
                    "must be in -1000..=1000",
                ));
            }
            cstr(&f("oomScoreAdj"), v.to_string())?
        },
    })
}

/// Plans the init process of a container.
pub fn init_plan(spec: &Spec, ctx: &Context<'_>) -> Result<InitPlan> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::config("process", "missing"))?;
    let linux = spec.linux().as_ref();
    let mut clone_flags = 0;
    let mut new_cgroup_ns = false;
    let mut has_mnt = false;
    let mut has_uts = false;
    let default_ns;
    let namespaces = match linux.and_then(|l| l.namespaces().as_ref()) {
        Some(n) => n,
        None => {
            default_ns = crate::default_namespaces();
            &default_ns
        }
    };
    for (i, ns) in namespaces.iter().enumerate() {
        if ns.path().is_some() {
            return Err(RuntimeError::config(
                format!("linux.namespaces[{i}].path"),
                "joining an existing namespace is not supported",
            ));
        }
        match ns.typ() {
            LinuxNamespaceType::Mount => {
                has_mnt = true;
                clone_flags |= libc::CLONE_NEWNS
            }
            LinuxNamespaceType::Pid => clone_flags |= libc::CLONE_NEWPID,
            LinuxNamespaceType::Network => clone_flags |= libc::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => clone_flags |= libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => {
                has_uts = true;
                clone_flags |= libc::CLONE_NEWUTS
            }
            LinuxNamespaceType::Cgroup => new_cgroup_ns = true,
            other => {
                return Err(RuntimeError::config(
                    format!("linux.namespaces[{i}].type"),
                    format!("{other:?} namespaces are not supported"),
                ))
            }
        }
    }
    if !has_mnt {
        return Err(RuntimeError::config(
            "linux.namespaces",
            "a mount namespace is required",
        ));
    }
    let rootfs = ctx.rootfs;
    let rootfs_c = path_c(rootfs)?;
    let mut steps = vec![
        Step::Mount {
            source: None,
            target: cstr("root", "/")?,
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None,
        },
        Step::Mount {
            source: Some(rootfs_c.clone()),
            target: rootfs_c.clone(),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        },
    ];
    let mut mounted = Vec::new();
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        if let Some(d) = mount_steps(i, m, ctx, &mut steps)? {
            mounted.push(d);
        }
    }
    let dev = rootfs.join("dev");
    if mounted.iter().any(|d| d == Path::new("/dev")) {
        for (name, major, minor) in DEFAULT_DEVICES {
            steps.push(Step::Mknod {
                path: path_c(&dev.join(name))?,
                mode: libc::S_IFCHR | 0o666,
                dev: libc::makedev(major, minor),
            });
        }
        for (i, d) in linux
            .and_then(|l| l.devices().as_ref())
            .map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            use oci_spec::runtime::LinuxDeviceType as T;
            let kind = match d.typ() {
                T::C | T::U => libc::S_IFCHR,
                T::B => libc::S_IFBLK,
                T::P => libc::S_IFIFO,
                T::A => {
                    return Err(RuntimeError::config(
                        format!("linux.devices[{i}].type"),
                        "a device node needs type c, b, u or p",
                    ))
                }
            };
            let target = join_lexical(rootfs, d.path()).ok_or_else(|| {
                RuntimeError::config(format!("linux.devices[{i}].path"), "must not contain ..")
            })?;
            if let Some(parent) = target.parent() {
                steps.push(Step::MkdirAll(path_c(parent)?));
            }
            steps.push(Step::Mknod {
                path: path_c(&target)?,
                mode: kind | (d.file_mode().unwrap_or(0o666) & 0o7777),
                dev: libc::makedev(d.major() as u32, d.minor() as u32),
            });
        }
        let mut links = vec![
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ];
        if mounted.iter().any(|d| d == Path::new("/proc")) {
            links.push(("/proc/kcore", "core"));
        }
        if mounted.iter().any(|d| d == Path::new("/dev/pts")) {
            links.push(("pts/ptmx", "ptmx"));
        }
        for (target, name) in links {
            steps.push(Step::Symlink {
                target: cstr("dev", target)?,
                link: path_c(&dev.join(name))?,
            });
        }
        if let Some(tty) = ctx.console.filter(|_| process.terminal().unwrap_or(false)) {
            // The terminal appears as /dev/console, as with runc, so that ttyname() finds a
            // name for it inside the container.
            let console = path_c(&dev.join("console"))?;
            steps.push(Step::CreateFile(console.clone()));
            steps.push(Step::Mount {
                source: Some(path_c(tty)?),
                target: console,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            });
        }
    }
    steps.push(Step::PivotRoot(rootfs_c));
    if let Some(l) = linux {
        for p in l.readonly_paths().as_deref().unwrap_or(&[]) {
            steps.push(Step::ReadOnly(cstr("linux.readonlyPaths", p)?));
        }
        for p in l.masked_paths().as_deref().unwrap_or(&[]) {
            steps.push(Step::Mask(cstr("linux.maskedPaths", p)?));
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        steps.push(Step::Mount {
            source: None,
            target: cstr("root", "/")?,
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
            data: None,
        });
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !has_uts {
            return Err(RuntimeError::config(
                "hostname",
                "setting a hostname needs a UTS namespace",
            ));
        }
        if h.len() > 64 {
            return Err(RuntimeError::config("hostname", "longer than 64 bytes"));
        }
        steps.push(Step::Hostname(cstr("hostname", h)?));
    }
    let process = process_plan(process, "process", rootfs, ctx.user, ctx.last_cap)?;
    Ok(InitPlan {
        clone_flags,
        new_cgroup_ns,
        steps,
        process,
    })
}

#[cfg(test)]
mod tests;
