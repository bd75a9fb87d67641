//! Docker's defaults as an OCI runtime spec, for the host to fill in and send with
//! [`CreateRequest`](crate::CreateRequest).

use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxCpu, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, Mount, PosixRlimitBuilder,
    PosixRlimitType, Process, Root, Spec, User,
};

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's masked paths.
pub const DOCKER_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const DOCKER_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The PATH docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// Docker's default mounts.
pub fn docker_default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
}

/// Docker's default capabilities as an OCI capability block (bounding, effective,
/// permitted; no inheritable or ambient, as docker).
pub fn docker_default_capabilities() -> LinuxCapabilities {
    let set: Capabilities = DOCKER_DEFAULT_CAPS.iter().copied().collect();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set));
    c.set_inheritable(None);
    c.set_ambient(None);
    c
}

/// The namespaces docker gives a container: pid, network, ipc, uts, mount and cgroup.
pub fn docker_namespaces() -> Vec<LinuxNamespace> {
    [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n
    })
    .collect()
}

/// What the host wants to run, in docker's terms.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// Command and arguments (entrypoint + cmd, already combined).
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs; a PATH is added when missing.
    pub env: Vec<String>,
    /// Working directory; `/` when empty.
    pub cwd: String,
    /// Hostname; docker uses the short container id.
    pub hostname: String,
    /// Allocate a terminal.
    pub tty: bool,
    /// `memory.max` in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in CPUs (`--cpus`), becomes `cpu.max` with a 100 ms period.
    pub cpus: Option<f64>,
    /// `pids.max`.
    pub pids_limit: Option<i64>,
}

/// Builds docker's default spec for `cfg`: namespaces, mounts, masked and read-only paths,
/// capabilities, `no_new_privs` off (docker's default), RLIMIT_NOFILE 1024:524288,
/// resources.
pub fn docker_spec(cfg: &RunConfig) -> Spec {
    let mut env = cfg.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    let mut p = Process::default();
    p.set_terminal(Some(cfg.tty));
    p.set_args(Some(cfg.args.clone()));
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(if cfg.cwd.is_empty() {
        "/"
    } else {
        &cfg.cwd
    }));
    p.set_user(User::default());
    p.set_capabilities(Some(docker_default_capabilities()));
    p.set_no_new_privileges(Some(false));
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(1024u64)
        .hard(524288u64)
        .build()
        .expect("every field of the rlimit is set");
    p.set_rlimits(Some(vec![nofile]));

    let namespaces = docker_namespaces();

    let mut res = LinuxResources::default();
    if let Some(m) = cfg.memory_bytes {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m));
        res.set_memory(Some(mem));
    }
    if let Some(c) = cfg.cpus {
        let mut cpu = LinuxCpu::default();
        cpu.set_period(Some(100_000));
        cpu.set_quota(Some((c * 100_000.0).round() as i64));
        res.set_cpu(Some(cpu));
    }
    if let Some(p) = cfg.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        res.set_pids(Some(pids));
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(
            DOCKER_MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            DOCKER_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .resources(res)
        .build()
        .expect("every field of the linux block is set");

    let mut spec = Spec::default();
    // oci-spec's default root is read-only; docker's is not (`--read-only` sets it).
    let mut root = Root::default();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_process(Some(p));
    spec.set_hostname(Some(cfg.hostname.clone()));
    spec.set_mounts(Some(docker_default_mounts()));
    spec.set_linux(Some(linux));
    spec.set_annotations(None);
    spec
}
