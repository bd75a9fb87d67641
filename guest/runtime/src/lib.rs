//! Container runtime that runs inside the berth guest: overlay layers, namespaces, cgroup v2.
//!
//! Input: an OCI runtime spec ([`oci_spec::runtime::Spec`]), image layers lowest first
//! ([`Layer`]: read-only block devices or directories) and a writable [`Scratch`] for the
//! overlay upper directory. [`Container::create`] mounts the layers and the overlay, creates
//! the cgroup (v2, when mounted) and clones init into new mount, pid, uts, ipc, net and
//! cgroup namespaces; init sets up `/proc`, `/sys`, `/dev` and friends, pivots into the
//! overlay, applies masked and read-only paths, hostname, rlimits, user and groups,
//! capabilities and `no_new_privs`, checks that the executable exists, and waits.
//! [`Container::start`] lets it exec. [`Container::exec`] runs more processes inside.
//!
//! The child side only walks a plan built beforehand ([`plan`]) through the [`sys::Syscalls`]
//! seam, so the sequence is unit-tested without root against [`sys::RecordingSyscalls`].

pub mod caps;
pub mod cgroup;
pub mod child;
pub mod commit;
pub mod container;
pub mod error;
pub mod fs;
pub mod loopdev;
pub mod plan;
pub mod sys;
pub mod testsupport;
pub mod top;
pub mod user;

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Process};

pub use container::{
    mount_shared, signal_pid, wait_pid, Container, CreateOptions, Layer, RuntimeConfig, Scratch,
    Status, Stdio,
};
pub use error::{Result, RuntimeError};

/// The namespaces a container gets when its spec names none: pid, network, ipc, uts, mount
/// and cgroup.
pub fn default_namespaces() -> Vec<LinuxNamespace> {
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

/// Containers by id.
#[derive(Debug)]
pub struct Runtime {
    cfg: RuntimeConfig,
    containers: BTreeMap<String, Container>,
}

impl Runtime {
    /// A runtime with no containers.
    pub fn new(cfg: RuntimeConfig) -> Self {
        Runtime {
            cfg,
            containers: BTreeMap::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Creates a container; the pid of its waiting init.
    pub fn create(&mut self, opts: CreateOptions) -> Result<i32> {
        if self.containers.contains_key(&opts.id) {
            return Err(RuntimeError::AlreadyExists(opts.id));
        }
        let c = Container::create(&self.cfg, opts)?;
        let pid = c.pid();
        self.containers.insert(c.id().to_string(), c);
        Ok(pid)
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    /// The container `id`, mutably.
    pub fn get_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    /// Starts `id`; the pid of its init.
    pub fn start(&mut self, id: &str) -> Result<i32> {
        let c = self.get_mut(id)?;
        c.start()?;
        Ok(c.pid())
    }

    /// Runs `process` in `id`; its pid.
    pub fn exec(
        &self,
        id: &str,
        process: &Process,
        user: Option<&str>,
        stdio: Stdio,
    ) -> Result<i32> {
        self.get(id)?.exec(process, user, stdio)
    }

    /// Signals init of `id`.
    pub fn signal(&self, id: &str, signal: i32) -> Result<()> {
        self.get(id)?.signal(signal)
    }

    /// Waits for init of `id` (reaps it).
    pub fn wait(&mut self, id: &str) -> Result<i32> {
        self.get_mut(id)?.wait()
    }

    /// (id, status, init pid) of every container.
    pub fn list(&self) -> Vec<(String, Status, i32)> {
        self.containers
            .values()
            .map(|c| (c.id().to_string(), c.status(), c.pid()))
            .collect()
    }

    /// Deletes `id`. Without `force` a container that runs is refused.
    pub fn delete(&mut self, id: &str, force: bool) -> Result<()> {
        let c = self.get(id)?;
        if !force && c.status() == Status::Running {
            return Err(RuntimeError::InvalidState {
                id: id.to_string(),
                state: "running",
                what: "stop it first or force the removal",
            });
        }
        let c = self
            .containers
            .remove(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        c.delete()
    }
}
