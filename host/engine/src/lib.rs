//! berth's engine: the one implementation of containers in micro-VMs that both front
//! doors call, the `berth` CLI and the Docker API server, so that the two cannot drift
//! and `berth ps` lists what `docker run` started.
//!
//! It owns the orchestration: turning create options into a container record, booting
//! the container's VM (`berth-vmm`, one process per VM) and creating the container
//! through the agent, starting it with a monitor process that keeps its logs and records
//! its end, exec, stop, kill, wait, remove, logs, stats, top, copies, commits and
//! Dockerfile builds ([`build`]). It knows
//! nothing of clap, terminals or HTTP: it takes plain options, returns data and streams,
//! and fails with one typed [`Error`].
//!
//! Running containers ([`vm`], `lifecycle`, `ops`) is for Unix hosts only: VMM processes
//! in their own sessions, Unix sockets to the VMs and the agents, Unix signals. Elsewhere
//! the engine keeps its records, images, networks and plans, and what only that runtime
//! calls is unused.

#![cfg_attr(not(unix), allow(dead_code))]

#[cfg(unix)]
pub mod build;
mod error;
pub mod image;
#[cfg(unix)]
mod lifecycle;
pub mod logfile;
pub mod mounts;
pub mod net;
pub mod networks;
#[cfg(unix)]
mod ops;
pub mod spec;
#[cfg(unix)]
pub mod vm;

use std::path::{Path, PathBuf};

pub use berth_containers::{
    generate_id, ContainerRecord, ExtraHost, Network, NetworkAttachment, PortMapping, Protocol,
    RunSpec, State, Status, Store,
};
pub use error::{chain_message, Context, Error, ErrorKind, Result, EXIT_BERTH_FAILED};
#[cfg(unix)]
pub use lifecycle::{Booted, Timings, EXIT_VM_CRASHED};
#[cfg(unix)]
pub use ops::{
    parse_signal, pump_stdin, Attach, ExecOptions, ExecProcess, LogCursor, LogOptions,
    ProcessStreams, WaitCondition,
};
pub use spec::{parse_memory, CreateOptions};

/// The engine over one state root: container records, the image store beside them, and
/// the `berth` executable that runs monitors and VMMs.
#[derive(Debug)]
pub struct Engine {
    root: PathBuf,
    store: Store,
    images: berth_image::Store,
    exe: PathBuf,
}

impl Engine {
    /// The engine over the default state root (`$BERTH_ROOT`, else the user's data folder).
    pub fn open() -> Result<Self> {
        Self::open_at(&Store::default_root())
    }

    /// The engine over state root `root`.
    pub fn open_at(root: &Path) -> Result<Self> {
        let store = Store::open(root)?;
        let images = berth_image::Store::open(root)?;
        let exe = std::env::current_exe().context("find the berth executable")?;
        Ok(Self {
            root: root.to_path_buf(),
            store,
            images,
            exe,
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container records.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The image store under the same root (opened once, with the engine).
    pub fn images(&self) -> &berth_image::Store {
        &self.images
    }

    /// The files of a container's VM.
    #[cfg(unix)]
    pub fn files(&self, record: &ContainerRecord) -> vm::VmFiles {
        vm::VmFiles::new(self.store.dir(&record.id), &record.id)
    }

    /// The container called `name` (a name, an ID or an unambiguous ID prefix).
    /// A container whose monitor died is repaired first (see `Engine::reconcile`).
    pub fn container(&self, name: &str) -> Result<ContainerRecord> {
        let record = self.store.resolve(name)?;
        #[cfg(unix)]
        let record = self
            .reconcile(record)?
            .ok_or_else(|| berth_containers::Error::NotFound(name.to_string()))?;
        Ok(record)
    }

    /// Every container, running or not, newest first as the store lists them; those
    /// whose monitor died are repaired first.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let records = self.store.list()?;
        #[cfg(unix)]
        let records = {
            let mut kept = Vec::with_capacity(records.len());
            for r in records {
                kept.extend(self.reconcile(r)?);
            }
            kept
        };
        Ok(records)
    }
}

/// Runs blocking work (image preparation, commits) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Vm(format!("a background task failed: {e}")))?
}
