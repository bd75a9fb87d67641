//! A container's life: create its record, boot its micro-VM and create the container
//! through the agent, start it in the background under a monitor process (which keeps
//! its logs and records its end), and reach the files of a stopped one.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_containers::{now, ContainerRecord, Monitor, Status, VmmProcess};
use berth_protocol::chunk::{read_chunk, Chunk};
use berth_protocol::{Client, ProcessRef, StreamTarget, FEATURE_MOUNTS, FEATURE_NETWORK};
use tokio::signal::unix::{signal, SignalKind};

use crate::error::{Context, Error, Result};
use crate::logfile::LogWriter;
use crate::ops::{Attach, ProcessStreams};
use crate::spec::{build_spec, create_request, CreateOptions};
use crate::vm::{self, VmFiles};
use crate::{blocking, image, Engine};

/// Exit code of a crashed micro-VM's container.
pub const EXIT_VM_CRASHED: i32 = 255;

/// A container whose micro-VM is up and whose container is created (not started).
#[derive(Debug)]
pub struct Booted {
    /// The agent.
    pub client: Client,
    /// The VMM process.
    pub vmm: VmmProcess,
    /// The VM's files.
    pub files: VmFiles,
    /// Where the image's layers are on the VM's layer disk, lowest first.
    pub layers: Vec<berth_protocol::ByteRange>,
}

/// Phases of a run, for `--timings`.
#[derive(Debug)]
pub struct Timings {
    start: Instant,
    last: Instant,
    phases: Vec<(String, Duration)>,
}

impl Default for Timings {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }
}

impl Timings {
    /// Ends a phase now.
    pub fn mark(&mut self, phase: &str) {
        let now = Instant::now();
        self.phases.push((phase.to_string(), now - self.last));
        self.last = now;
    }

    fn split_last(&mut self, first: &str, first_len: Duration, second: &str) {
        if let Some((_, d)) = self.phases.pop() {
            let a = first_len.min(d);
            self.phases.push((first.to_string(), a));
            self.phases.push((second.to_string(), d - a));
        }
    }

    /// The phases so far, and the time since the start.
    pub fn phases(&self) -> (&[(String, Duration)], Duration) {
        (&self.phases, self.start.elapsed())
    }
}

/// Why a container's VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// To run the container: it becomes running, with a new start time.
    Run,
    /// To reach the files of a stopped container (`cp`, `commit`): its process is never
    /// started and its recorded state stays as it was.
    Files,
    /// To run a build's steps: it becomes running like [`Purpose::Run`], but the VM starts
    /// without a container, and the build creates one per step
    /// ([`crate::build`]).
    Build,
}

/// A container's files, reachable through an agent: its own VM when it runs, else a VM
/// booted for the purpose (the container is created there but never started).
pub(crate) struct FilesAccess {
    /// The container.
    pub record: ContainerRecord,
    /// Its VM's files.
    pub files: VmFiles,
    /// The agent.
    pub client: Client,
    /// The VMM booted for this access (`record` still names the one before): it is
    /// powered off at the end.
    booted: Option<VmmProcess>,
}

impl Engine {
    /// Creates a container from `opts` without starting it. The image must be in the
    /// local store (a missing one is `ImageNotFound`: the front door pulls it).
    pub async fn create(&self, opts: CreateOptions) -> Result<ContainerRecord> {
        let (images, image) = (self.images.clone(), opts.image.clone());
        let img = blocking(move || image::prepare(&images, &image)).await?;
        let mut spec = build_spec(&opts, &img)?;
        if !opts.network_aliases.is_empty() && !crate::net::is_user_network(&spec.network) {
            return Err(Error::InvalidArgument(
                "--network-alias needs a user-defined network (--network NAME)".into(),
            ));
        }
        let made = self.ready_mounts(&mut spec.mounts)?;
        let created = if crate::net::is_user_network(&spec.network) {
            self.create_on_network(opts.name.as_deref(), spec, &opts.network_aliases)
        } else {
            self.store
                .create(opts.name.as_deref(), spec)
                .map_err(Error::from)
        };
        let record = match created {
            Ok(r) => r,
            Err(e) => {
                self.remove_volumes(&made);
                return Err(e);
            }
        };
        if let Err(e) = image::pin(&self.images, &record.spec.image_id, &record.id) {
            let _ = self.store.remove(&record.id);
            self.remove_volumes(&made);
            return Err(e);
        }
        Ok(record)
    }

    /// Boots the micro-VM of `record` and creates its container there, ready to start.
    /// A failure kills the VM and records it on the container.
    pub async fn boot(
        &self,
        record: &ContainerRecord,
        timings: Option<&mut Timings>,
    ) -> Result<Booted> {
        self.boot_for(record, timings, Purpose::Run).await
    }

    pub(crate) async fn boot_for(
        &self,
        record: &ContainerRecord,
        mut timings: Option<&mut Timings>,
        purpose: Purpose,
    ) -> Result<Booted> {
        let (images, image_id, image) = (
            self.images.clone(),
            record.spec.image_id.clone(),
            record.spec.image.clone(),
        );
        let img = blocking(move || image::prepare_local(&images, &image_id, &image)).await?;
        if let Some(t) = timings.as_deref_mut() {
            t.mark("image ready");
        }
        let files = self.files(record);
        // Only a run gets the network: a VM booted to reach the files publishes nothing.
        let networked = purpose != Purpose::Files && crate::net::networked(record);
        let ports = if networked {
            crate::net::resolve_ports(&record.spec.publish)?
        } else {
            Vec::new()
        };
        if networked {
            crate::networks::publish_names(record)?;
        }
        let console = files.console_len();
        let mut vmm = self.launch(record, &files, &img.layers, networked, &ports, purpose)?;
        if let Some(t) = timings.as_deref_mut() {
            t.mark("VMM started");
        }
        let result = async {
            let client = match vm::connect_agent(&files, Some(vmm), vm::agent_timeout()).await {
                // A guest that died or hung at once, silently, is booted once more: see
                // `VmFiles::failed_silently`.
                Err(e) if files.failed_silently(console, vmm.is_alive()) => {
                    tracing::warn!(
                        "the micro-VM of {} failed before its kernel printed anything ({}); \
                         booting it once more",
                        record.name,
                        e.message().lines().next().unwrap_or_default()
                    );
                    vm::kill_vmm(vmm).await;
                    vmm = self.launch(record, &files, &img.layers, networked, &ports, purpose)?;
                    vm::connect_agent(&files, Some(vmm), vm::agent_timeout()).await?
                }
                other => other?,
            };
            let info = client.ping().await?;
            // The guest has no clock of its own worth the name: give it the host's time.
            if let Err(e) = client.set_time_now().await {
                tracing::warn!("cannot set the guest clock: {e}");
            }
            if let Some(t) = timings.as_deref_mut() {
                t.mark("agent ready");
                // The guest's uptime splits the wait into kernel boot and agent start-up.
                let boot = Duration::from_millis(info.uptime_ms);
                let waited = t.phases.last().map(|p| p.1).unwrap_or_default();
                t.split_last("kernel boot", waited.saturating_sub(boot), "guest to agent");
            }
            if !record.spec.mounts.is_empty() && !info.features.iter().any(|f| f == FEATURE_MOUNTS)
            {
                return Err(Error::Vm(format!(
                    "the agent in the initramfs (version {}) cannot mount folders or volumes: \
                     rebuild it with scripts/build-initramfs.sh",
                    info.agent_version
                )));
            }
            if networked && !info.features.iter().any(|f| f == FEATURE_NETWORK) {
                return Err(Error::Vm(format!(
                    "the agent in the initramfs (version {}) cannot set up a network: rebuild \
                     it with scripts/build-initramfs.sh, or run with --network none",
                    info.agent_version
                )));
            }
            let layers = crate::spec::layer_ranges(&img.layer_bytes);
            if purpose != Purpose::Build {
                client
                    .create(create_request(record, &layers, networked)?)
                    .await
                    .with_context(|| format!("create container {} in its micro-VM", record.name))?;
            }
            if let Some(t) = timings.as_deref_mut() {
                t.mark("container created");
            }
            Ok::<_, Error>(Booted {
                client,
                vmm,
                files: files.clone(),
                layers,
            })
        }
        .await;
        if let Err(e) = &result {
            vm::kill_vmm(vmm).await;
            match purpose {
                Purpose::Run | Purpose::Build => self.finish(record, None, Some(e.message()))?,
                // `record` is the state from before this boot.
                Purpose::Files => self.restore_vmm(&record.id, record.state.vmm),
            }
        }
        result
    }

    /// Starts the VMM of `record` and records it (and, for a run, the start) on the
    /// container.
    fn launch(
        &self,
        record: &ContainerRecord,
        files: &VmFiles,
        layers: &[std::path::PathBuf],
        networked: bool,
        ports: &[berth_containers::PortMapping],
        purpose: Purpose,
    ) -> Result<VmmProcess> {
        let net = match networked {
            true => Some(crate::net::vmm_config(record, ports)?),
            false => None,
        };
        let vmm = vm::spawn_vmm(&self.root, record, files, layers, net)?;
        self.store.update(&record.id, |r| {
            r.state.vmm = Some(vmm);
            if purpose != Purpose::Files {
                r.state.started_at = Some(now());
                r.state.finished_at = None;
                r.state.exit_code = None;
                r.state.error = None;
                r.state.ports = ports.to_vec();
                r.state.monitor = None;
            }
        })?;
        Ok(vmm)
    }

    /// Puts back the VMM a record named before a files-only boot.
    fn restore_vmm(&self, id: &str, previous: Option<VmmProcess>) {
        let _ = self.store.update(id, |r| r.state.vmm = previous);
    }

    /// Records that a container ended; removes it when it was run with `--rm`.
    pub fn finish(
        &self,
        record: &ContainerRecord,
        code: Option<i32>,
        error: Option<String>,
    ) -> Result<()> {
        if record.spec.auto_remove {
            // docker's --rm takes the container's anonymous volumes with it.
            let anonymous = self.anonymous_volumes(record)?;
            self.files(record).remove_sockets();
            crate::networks::forget_names(record);
            image::unpin(&self.images, &record.id)?;
            return match self.store.remove(&record.id) {
                Ok(()) | Err(berth_containers::Error::NotFound(_)) => {
                    self.remove_volumes(&anonymous);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
        }
        crate::networks::release_sockets(record);
        match self.store.update(&record.id, |r| {
            r.state.exit_code = code.or(r.state.exit_code).or(Some(EXIT_VM_CRASHED));
            r.state.error = error.clone();
            r.state.finished_at = Some(now());
            r.state.ports.clear();
            r.state.monitor = None;
        }) {
            Ok(_) | Err(berth_containers::Error::Io { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the monitor of a detached container, in a session of its own.
    fn spawn_monitor(&self, record: &ContainerRecord) -> Result<()> {
        self.spawn_monitor_process(record, &["container-monitor", &record.id])
    }

    /// Starts a monitor that takes over a running container whose monitor died: it
    /// writes the log afresh from the agent's whole copy.
    fn spawn_adopting_monitor(&self, record: &ContainerRecord) -> Result<()> {
        self.spawn_monitor_process(record, &["container-monitor", "--adopt", &record.id])
    }

    /// Starts a monitor that stands by while process `pid` (a foreground `run` or
    /// `start -a`) runs container `record`, and takes over if that process dies before
    /// the container ends: so a killed CLI leaves no VM running and no `--rm` container
    /// behind.
    pub fn spawn_standby_monitor(&self, record: &ContainerRecord, pid: u32) -> Result<()> {
        let pid = pid.to_string();
        self.spawn_monitor_process(
            record,
            &["container-monitor", "--standby", &pid, &record.id],
        )
    }

    /// Starts `berth ARGS` in a session of its own, its messages appended to the
    /// container's monitor log.
    fn spawn_monitor_process(&self, record: &ContainerRecord, args: &[&str]) -> Result<()> {
        let path = self.files(record).monitor_log();
        let log = berth_containers::private_file()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .env("BERTH_ROOT", &self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        vm::in_own_session(&mut cmd);
        let mut child = cmd.spawn().context("start the container monitor")?;
        // The monitor lives on in its own session; collect it when it ends so that a
        // long-lived caller (the API server) keeps no zombies.
        std::thread::spawn(move || child.wait());
        Ok(())
    }

    /// Starts container `name` in the background: boots its VM, opens the streams
    /// `attach` asks for before the process starts (so no output is lost), starts it,
    /// and leaves a monitor to keep its logs and record its end. Starting a running
    /// container is an [`Error::Conflict`].
    pub async fn start(
        &self,
        name: &str,
        attach: Option<Attach>,
    ) -> Result<Option<ProcessStreams>> {
        let record = self.store.resolve(name)?;
        if record.status() == Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is already running",
                record.name
            )));
        }
        let booted = self.boot(&record, None).await?;
        let init = ProcessRef::init(record.id.clone());
        let started = async {
            let streams = match attach {
                Some(a) => Some(
                    ProcessStreams::open(&booted.files, &init, record.spec.tty, a.stdin).await?,
                ),
                None => None,
            };
            booted.client.start(init.clone()).await?;
            Ok::<_, Error>(streams)
        }
        .await;
        match started {
            Ok(streams) => {
                self.spawn_monitor(&record)?;
                Ok(streams)
            }
            Err(e) => {
                vm::shutdown(Some(&booted.client), Some(booted.vmm)).await;
                self.finish(&record, None, Some(e.message()))?;
                Err(e.context(format!("start container {}", record.name)))
            }
        }
    }

    /// The standby monitor of a container that process `pid` runs in the foreground:
    /// ends when the container's run ends, and does a monitor's job ([`Engine::monitor`])
    /// if `pid` dies first. The log is written afresh then, from the agent's whole copy.
    pub async fn monitor_standby(&self, id: &str, pid: u32) -> Result<()> {
        let started = self.store.resolve(id)?.state.started_at;
        let watched = VmmProcess::of_pid(pid);
        if !self.claim_monitor(id, watched)? {
            return Ok(());
        }
        loop {
            let record = match self.store.resolve(id) {
                Ok(r) => r,
                // Removed (`--rm`, or `rm -f`): nothing left to watch.
                Err(_) => return Ok(()),
            };
            if record.status() != Status::Running || record.state.started_at != started {
                return Ok(());
            }
            if !watched.is_some_and(|w| w.is_alive()) {
                tracing::warn!(
                    "the berth process {pid} running container {} died: its monitor takes over",
                    record.name
                );
                return self.adopt(id).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Takes over as the monitor of a running container whose monitor (or foreground
    /// berth process) died: the log is written afresh, from the agent's whole copy.
    pub async fn adopt(&self, id: &str) -> Result<()> {
        if !self.claim_monitor(id, None)? {
            return Ok(());
        }
        let record = self.store.resolve(id)?;
        let _ = std::fs::remove_file(self.files(&record).logs());
        self.monitor(id).await
    }

    /// Records this process as the monitor of running container `id`, standing by for
    /// `standby_for` if given. False when another live monitor has it already (two
    /// commands that found a dead monitor both started one) or it no longer runs: this
    /// one then has nothing to do.
    fn claim_monitor(&self, id: &str, standby_for: Option<VmmProcess>) -> Result<bool> {
        let me = VmmProcess::of_pid(std::process::id());
        let mut claimed = false;
        let updated = self.store.update(id, |r| {
            let taken = r
                .state
                .monitor
                .is_some_and(|m| Some(m.process) != me && m.process.is_alive());
            // A monitor started late, after the container ended, has nothing to watch.
            if !taken && r.status() == Status::Running {
                r.state.monitor = me.map(|process| Monitor {
                    process,
                    standby_for,
                });
                claimed = true;
            }
        });
        match updated {
            Ok(_) => Ok(claimed),
            // Removed meanwhile (`rm -f`): nothing to watch.
            Err(berth_containers::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Repairs the record of a container whose monitor died (killed, say) before the
    /// container ended, so that nothing is left behind and the end is still recorded:
    /// a running one gets a new monitor; one whose VM died too is recorded as crashed
    /// (and removed, with `--rm`). `None` when the container is gone.
    pub(crate) fn reconcile(&self, record: ContainerRecord) -> Result<Option<ContainerRecord>> {
        let Some(monitor) = record.state.monitor else {
            return Ok(Some(record));
        };
        if monitor.process.is_alive() {
            return Ok(Some(record));
        }
        let attached = monitor.standby_for.filter(|p| p.is_alive());
        if record.status() == Status::Running {
            tracing::warn!(
                "the monitor of container {} died: starting another",
                record.name
            );
            match attached {
                Some(p) => self.spawn_standby_monitor(&record, p.pid)?,
                None => self.spawn_adopting_monitor(&record)?,
            }
            return Ok(Some(record));
        }
        if attached.is_some() {
            // The foreground berth process records the end itself.
            return Ok(Some(record));
        }
        let files = self.files(&record);
        tracing::warn!(
            "the micro-VM and the monitor of container {} died: recording its end",
            record.name
        );
        self.finish(
            &record,
            None,
            Some(format!(
                "the micro-VM and the monitor of the container died{}",
                files.last_words()
            )),
        )?;
        files.remove_sockets();
        match self.store.resolve(&record.id) {
            Ok(r) => Ok(Some(r)),
            Err(berth_containers::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The monitor of a detached container: keeps its output in the host-side log, waits
    /// for it to exit, powers its VM off and records the exit code.
    pub async fn monitor(&self, id: &str) -> Result<()> {
        if !self.claim_monitor(id, None)? {
            tracing::info!("container {id} has another monitor or no longer runs: nothing to do");
            return Ok(());
        }
        let record = self.store.resolve(id)?;
        let files = self.files(&record);
        let vmm = record.state.vmm;
        let client = match vm::connect_agent(&files, vmm, Duration::from_secs(30)).await {
            Ok(c) => c,
            Err(e) => {
                self.finish(&record, None, Some(e.message()))?;
                return Err(e);
            }
        };
        let mut log =
            LogWriter::open(&files.logs()).map_err(|e| Error::io("open", files.logs(), e))?;
        let mut stream = vm::open_stream(
            &files,
            StreamTarget::Logs {
                container: record.id.clone(),
                follow: true,
                tail: None,
            },
        )
        .await?;
        let logs = tokio::spawn(async move {
            while let Ok(Some(chunk)) = read_chunk(&mut stream).await {
                match chunk {
                    Chunk::Log(rec) => {
                        if log.write(&rec).is_err() {
                            break;
                        }
                    }
                    Chunk::End | Chunk::Error(_) => break,
                    Chunk::Data(_) => {}
                }
            }
        });
        let waited = client.wait(ProcessRef::init(record.id.clone())).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), logs).await;
        // A `stop` or `rm` may have powered the VM off already.
        vm::shutdown(Some(&client), vmm).await;
        let Ok(current) = self.store.resolve(&record.id) else {
            return Ok(());
        };
        match waited {
            Ok(code) => self.finish(&current, Some(code), None),
            Err(e) => self.finish(
                &current,
                None,
                Some(format!(
                    "the micro-VM stopped unexpectedly: {e}{}",
                    files.last_words()
                )),
            ),
        }
    }
}

impl FilesAccess {
    /// Reaches the files of container `name`, running or not.
    pub async fn open(engine: &Engine, name: &str) -> Result<Self> {
        let record = engine.store.resolve(name)?;
        let files = engine.files(&record);
        if record.status() == Status::Running {
            let client = vm::connect_agent(&files, record.state.vmm, Duration::from_secs(10))
                .await
                .with_context(|| format!("reach the micro-VM of {}", record.name))?;
            return Ok(Self {
                record,
                files,
                client,
                booted: None,
            });
        }
        let booted = engine
            .boot_for(&record, None, Purpose::Files)
            .await
            .with_context(|| format!("boot a micro-VM to reach the files of {}", record.name))?;
        Ok(Self {
            record,
            files,
            client: booted.client,
            booted: Some(booted.vmm),
        })
    }

    /// Runs `op` on the files; a VM booted for it is powered off afterwards, also when
    /// berth is interrupted meanwhile.
    pub async fn run<T>(
        self,
        engine: &Engine,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = if self.booted.is_some() {
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                r = op => r,
                _ = tokio::signal::ctrl_c() => Err(Error::Vm("interrupted".into())),
                _ = term.recv() => Err(Error::Vm("terminated".into())),
            }
        } else {
            op.await
        };
        if let Some(vmm) = self.booted {
            vm::shutdown(Some(&self.client), Some(vmm)).await;
            engine.restore_vmm(&self.record.id, self.record.state.vmm);
        }
        result
    }
}
