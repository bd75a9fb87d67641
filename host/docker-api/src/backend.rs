//! The [`Backend`] trait this crate serves, and the plain data types it
//! speaks. Nothing here knows about Docker's JSON: the handlers translate.
//!
//! Times are nanoseconds since the Unix epoch (`u64`); `None` means "never"
//! (Docker's zero time).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// What a backend call can fail with. The API maps each kind to an HTTP
/// status, and the message is what the `docker` CLI prints, so write it the
/// way Docker does ("No such container: foo").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The named object does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the object's state, e.g. removing a
    /// running container or reusing a name (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or asks for something unsupported (HTTP 400).
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing to do, e.g. starting a running container (HTTP 304).
    #[error("not modified")]
    NotModified,
    /// Anything else (HTTP 500).
    #[error("{0}")]
    Other(String),
}

/// A boxed future that resolves to the container's (or exec's) streams once
/// its process has started.
pub type StreamsFuture = Pin<Box<dyn Future<Output = Result<Streams, BackendError>> + Send>>;

/// A boxed future that resolves when a wait condition is met.
pub type WaitFuture = Pin<Box<dyn Future<Output = Result<WaitResult, BackendError>> + Send>>;

/// A request body (tar archive) handed to the backend as it arrives.
pub type ByteStream = BoxStream<'static, Result<Bytes, BackendError>>;

/// The backend that owns containers and images. The API layer holds it as
/// `Arc<dyn Backend>`.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Static version facts about the backend and the host.
    fn version(&self) -> VersionInfo;

    /// Counts and host resources for `GET /info`.
    async fn info(&self) -> Result<SystemInfo, BackendError>;

    /// Containers; stopped ones too when `all`. The API applies filters.
    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>, BackendError>;

    /// One container by full ID, unique ID prefix, or name.
    async fn inspect_container(&self, id_or_name: &str) -> Result<ContainerDetails, BackendError>;

    /// Creates a container; `Conflict` when the name is taken, `NotFound`
    /// ("No such image: x") when the image is missing, so clients pull.
    async fn create_container(
        &self,
        name: Option<String>,
        cfg: CreateConfig,
    ) -> Result<Created, BackendError>;

    /// Starts a container; `NotModified` when it is already running.
    async fn start_container(&self, id: &str) -> Result<(), BackendError>;

    /// Registers an attachment. The outer future resolves as soon as the
    /// attachment is registered (so nothing the process writes afterwards is
    /// lost) or fails (`NotFound`, `Conflict` for a stopped container). The
    /// returned [`StreamsFuture`] resolves once the container's process is
    /// started, which may be after a later `start_container` call.
    /// Dropping the streams must not affect the container.
    async fn attach_container(
        &self,
        id: &str,
        opts: AttachOptions,
    ) -> Result<StreamsFuture, BackendError>;

    /// Registers a waiter. The outer future resolves once the waiter is
    /// registered (or fails with `NotFound`), so that a `next-exit` waiter
    /// set up before `start_container` sees that start's exit.
    async fn wait_container(
        &self,
        id: &str,
        condition: WaitCondition,
    ) -> Result<WaitFuture, BackendError>;

    /// Stops a container: `signal` (default the container's stop signal,
    /// else SIGTERM), then SIGKILL after `timeout_secs`. `NotModified` when
    /// it is not running.
    async fn stop_container(
        &self,
        id: &str,
        timeout_secs: Option<i64>,
        signal: Option<String>,
    ) -> Result<(), BackendError>;

    /// Sends `signal` ("KILL", "SIGTERM", "15", ...) to the container's init.
    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), BackendError>;

    /// Stops (if running) and starts the container again.
    async fn restart_container(
        &self,
        id: &str,
        timeout_secs: Option<i64>,
    ) -> Result<(), BackendError>;

    /// Removes a container; `force` kills a running one first, `volumes`
    /// removes its anonymous volumes.
    async fn remove_container(
        &self,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), BackendError>;

    /// Resizes the container's TTY.
    async fn resize_container_tty(
        &self,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), BackendError>;

    /// The container's log. The backend honours every field of
    /// [`LogOptions`] except `timestamps`, which the API formats.
    async fn logs(
        &self,
        id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogRecord, BackendError>>, BackendError>;

    /// Processes running in the container (`ps_args` as given by the client).
    async fn top(&self, id: &str, ps_args: Option<String>) -> Result<TopResult, BackendError>;

    /// One resource sample. The API keeps the previous sample to fill
    /// Docker's `precpu_stats`.
    async fn stats(&self, id: &str) -> Result<StatsSample, BackendError>;

    /// Creates an exec instance in a running container; returns its ID.
    async fn exec_create(&self, id: &str, cfg: ExecConfig) -> Result<String, BackendError>;

    /// Starts an exec. With `detach` it returns `None` once started;
    /// otherwise the process's streams.
    async fn exec_start(
        &self,
        exec_id: &str,
        detach: bool,
        tty: bool,
    ) -> Result<Option<Streams>, BackendError>;

    /// An exec's state; `exit_code` is set once it has exited.
    async fn exec_inspect(&self, exec_id: &str) -> Result<ExecDetails, BackendError>;

    /// Resizes an exec's TTY.
    async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), BackendError>;

    /// Stat of a path inside the container.
    async fn archive_stat(&self, id: &str, path: &str) -> Result<PathStat, BackendError>;

    /// A tar archive of a path inside the container, with its stat.
    async fn archive_get(
        &self,
        id: &str,
        path: &str,
    ) -> Result<(PathStat, BoxStream<'static, Result<Bytes, BackendError>>), BackendError>;

    /// Extracts a tar archive (streamed from the client) into a directory
    /// inside the container.
    async fn archive_put(&self, id: &str, path: &str, tar: ByteStream) -> Result<(), BackendError>;

    /// Local images.
    async fn list_images(&self) -> Result<Vec<ImageSummary>, BackendError>;

    /// One image by reference or ID (prefix).
    async fn inspect_image(&self, name: &str) -> Result<ImageDetails, BackendError>;

    /// Pulls an image, reporting progress through `progress`.
    async fn pull_image(
        &self,
        reference: &str,
        auth: Option<RegistryAuth>,
        progress: ProgressSink,
    ) -> Result<(), BackendError>;

    /// Pushes an image, reporting progress through `progress`.
    async fn push_image(
        &self,
        reference: &str,
        auth: Option<RegistryAuth>,
        progress: ProgressSink,
    ) -> Result<(), BackendError>;

    /// Tags `source` as `repo:tag`.
    async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<(), BackendError>;

    /// Untags and/or deletes an image.
    async fn remove_image(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<RemovedImage>, BackendError>;

    /// An image's layer history, newest first.
    async fn image_history(&self, name: &str) -> Result<Vec<HistoryEntry>, BackendError>;

    /// A `docker save` tar of the named images.
    async fn save_images(
        &self,
        names: Vec<String>,
    ) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError>;

    /// Loads a `docker save` tar; returns the loaded references (one per
    /// "Loaded image: x" line).
    async fn load_images(&self, tar: ByteStream) -> Result<Vec<String>, BackendError>;

    /// Live events from now on. The API applies filters and `until`.
    async fn events(&self) -> Result<BoxStream<'static, Event>, BackendError>;

    /// Every volume. The API applies filters.
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, BackendError>;

    /// Creates volume `name` (a generated name when `None`) with `labels`, or
    /// returns the existing one of that name, as Docker does. The API has
    /// refused drivers other than the local one, and driver options.
    async fn create_volume(
        &self,
        name: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, BackendError>;

    /// One volume; `NotFound` ("get x: no such volume") when missing.
    async fn inspect_volume(&self, name: &str) -> Result<VolumeInfo, BackendError>;

    /// Removes a volume: `NotFound` when missing (unless `force`, which makes
    /// that a success), `Conflict` while a container uses it.
    async fn remove_volume(&self, name: &str, force: bool) -> Result<(), BackendError>;

    /// Removes the volumes no container uses: anonymous ones, and with `all`
    /// named ones too.
    async fn prune_volumes(&self, all: bool) -> Result<VolumePrune, BackendError>;

    /// Every user-defined network. The API applies filters.
    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, BackendError>;

    /// Creates network `name`, on `subnet` (CIDR) or a free one. A taken name is
    /// `Conflict`.
    async fn create_network(
        &self,
        name: String,
        subnet: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkInfo, BackendError>;

    /// One network by name, ID or ID prefix; `NotFound` when missing.
    async fn inspect_network(&self, key: &str) -> Result<NetworkInfo, BackendError>;

    /// Removes a network: `NotFound` when missing, `Conflict` while a container is on it.
    async fn remove_network(&self, key: &str) -> Result<(), BackendError>;

    /// Removes the networks no container is on; their names.
    async fn prune_networks(&self) -> Result<Vec<String>, BackendError>;

    /// Connects a container that is not running to a network, with `aliases`.
    async fn connect_network(
        &self,
        key: &str,
        container: &str,
        aliases: Vec<String>,
    ) -> Result<(), BackendError>;

    /// Disconnects a container that is not running from a network.
    async fn disconnect_network(&self, key: &str, container: &str) -> Result<(), BackendError>;
}

/// A user-defined network, for `/networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Its name.
    pub name: String,
    /// Its ID.
    pub id: String,
    /// Creation time.
    pub created_ns: u64,
    /// Its subnet, `A.B.C.D/P`.
    pub subnet: String,
    /// Its gateway.
    pub gateway: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// The containers on it.
    pub endpoints: Vec<Endpoint>,
}

/// A container on a network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The network's name.
    pub network: String,
    /// The network's ID.
    pub network_id: String,
    /// The container's ID.
    pub container_id: String,
    /// The container's name.
    pub container_name: String,
    /// Its address.
    pub address: String,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The network's gateway.
    pub gateway: String,
    /// Its names there besides its own (aliases, and its short ID as docker adds).
    pub aliases: Vec<String>,
}

/// A volume, for `/volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Where its data lives on the host.
    pub mountpoint: String,
    /// Creation time.
    pub created_ns: u64,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's `VOLUME`).
    pub anonymous: bool,
    /// How many containers (running or not) use it.
    pub containers: usize,
}

/// What a volume prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePrune {
    /// The removed volumes' names.
    pub deleted: Vec<String>,
    /// Bytes freed.
    pub space_reclaimed: u64,
}

/// One entry of `HostConfig.Mounts` (docker's `--mount`), as given: the API
/// checks Docker's rules about which fields each type takes, the backend
/// what it can mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// "bind", "volume" or "tmpfs" (other types Docker knows are passed on,
    /// for the backend to refuse).
    pub typ: String,
    /// A bind's host path, a volume's name (empty: an anonymous volume).
    pub source: String,
    /// The path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// `BindOptions.CreateMountpoint`: create a missing host folder.
    pub create_mountpoint: bool,
    /// `VolumeOptions.NoCopy` (berth's volumes start empty either way).
    pub no_copy: bool,
    /// `TmpfsOptions.SizeBytes`, when set and positive.
    pub tmpfs_size_bytes: Option<u64>,
    /// `TmpfsOptions.Mode` (permission bits), when set.
    pub tmpfs_mode: Option<u32>,
    /// `TmpfsOptions.Options` flattened: `noexec`, `size=1m`, ...
    pub tmpfs_options: Vec<String>,
}

/// One mount of a container as inspect shows it (Docker's `Mounts` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountPoint {
    /// "bind", "volume" or "tmpfs".
    pub typ: String,
    /// The volume's name, empty for others.
    pub name: String,
    /// The host path (a volume's data folder), empty for a tmpfs.
    pub source: String,
    /// The path in the container.
    pub destination: String,
    /// The volume driver ("local"), empty for others.
    pub driver: String,
    /// "ro", or "" (Docker shows "z" and the like here too).
    pub mode: String,
    /// Whether it is writable.
    pub rw: bool,
    /// "rprivate" for binds, empty for others.
    pub propagation: String,
}

/// Version facts for `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionInfo {
    /// The backend's own version, shown as the engine version.
    pub version: String,
    /// The backend's source revision.
    pub git_commit: String,
    /// The host kernel's release.
    pub kernel_version: String,
    /// Always "linux" for Linux containers.
    pub os: String,
    /// Docker/Go architecture name: "amd64", "arm64".
    pub arch: String,
    /// When the backend was built (RFC 3339), may be empty.
    pub build_time: String,
}

/// Counts and resources for `GET /info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    /// A stable ID for this host.
    pub id: String,
    /// The host's name.
    pub name: String,
    /// Running containers.
    pub containers_running: u64,
    /// Paused containers.
    pub containers_paused: u64,
    /// Stopped (created or exited) containers.
    pub containers_stopped: u64,
    /// Local images.
    pub images: u64,
    /// CPUs available to containers.
    pub ncpu: u64,
    /// Memory available to containers, bytes.
    pub mem_total: u64,
    /// Storage driver name, e.g. "berth".
    pub driver: String,
    /// Human name of the host OS, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub operating_system: String,
    /// Where the backend keeps its state.
    pub root_dir: String,
}

/// A container's lifecycle state, spelled as Docker's `State.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainerStatus {
    /// Created, never started.
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Being removed.
    Removing,
    /// Its process has exited.
    Exited,
    /// Unusable.
    Dead,
}

impl ContainerStatus {
    /// Docker's spelling ("created", "running", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Removing => "removing",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Dead => "dead",
        }
    }
}

/// One row of `GET /containers/json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSummary {
    /// Full container ID (64 hex digits).
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's ID ("sha256:...").
    pub image_id: String,
    /// Entrypoint and command, joined for display.
    pub command: String,
    /// Creation time.
    pub created_ns: u64,
    /// Lifecycle state.
    pub status: ContainerStatus,
    /// Exit code of the last run (meaningful when exited).
    pub exit_code: i64,
    /// Last start.
    pub started_at_ns: Option<u64>,
    /// Last exit.
    pub finished_at_ns: Option<u64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports (host ports as bound, when running).
    pub ports: Vec<PortBinding>,
    /// The network it is on ("none", "default").
    pub network_mode: String,
}

/// The runtime state inside [`ContainerDetails`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerState {
    /// Lifecycle state.
    pub status: ContainerStatus,
    /// Host-visible PID of the container (its VMM), 0 when not running.
    pub pid: i64,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Why the last start or run failed, empty if it did not.
    pub error: String,
    /// Whether the last run was killed for lack of memory.
    pub oom_killed: bool,
    /// Last start.
    pub started_at_ns: Option<u64>,
    /// Last exit.
    pub finished_at_ns: Option<u64>,
}

/// Everything `GET /containers/{id}/json` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerDetails {
    /// Full container ID.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// Creation time.
    pub created_ns: u64,
    /// The image's ID ("sha256:...").
    pub image_id: String,
    /// The executable run as init.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Runtime state.
    pub state: ContainerState,
    /// The configuration it was created with (image config merged in).
    pub config: CreateConfig,
    /// IDs of exec instances, running or not.
    pub exec_ids: Vec<String>,
    /// How often it was restarted.
    pub restart_count: i64,
    /// Where its log lives on the host, may be empty.
    pub log_path: String,
    /// Published ports (host ports as bound, when running).
    pub ports: Vec<PortBinding>,
    /// The container's address on its network, empty without one.
    pub ip_address: String,
    /// Where it is on a user-defined network.
    pub endpoint: Option<Endpoint>,
    /// Its gateway, empty without a network.
    pub gateway: String,
    /// Its MAC address, empty without a network.
    pub mac_address: String,
    /// Its mounts: host folders, volumes and tmpfs.
    pub mounts: Vec<MountPoint>,
}

/// What berth supports of Docker's create body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateConfig {
    /// Image reference.
    pub image: String,
    /// Command; `None` means "the image's", `Some(vec![])` means "none".
    pub cmd: Option<Vec<String>>,
    /// Entrypoint; `None` means "the image's", `Some(vec![])` resets it.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory, empty for the image's.
    pub working_dir: String,
    /// User, empty for the image's.
    pub user: String,
    /// Hostname, empty for a generated one.
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Close stdin after the first attached client detaches.
    pub stdin_once: bool,
    /// Whether the creator means to attach stdin.
    pub attach_stdin: bool,
    /// Whether the creator means to attach stdout.
    pub attach_stdout: bool,
    /// Whether the creator means to attach stderr.
    pub attach_stderr: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Signal for `stop`, e.g. "SIGTERM".
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: Option<i64>,
    /// CPU limit in CPUs (from `NanoCpus`, or `CpuQuota`/`CpuPeriod`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// PID limit.
    pub pids_limit: Option<i64>,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// `HostConfig.NetworkMode`: "" (the default network), "default", "bridge", "none",
    /// or a user-defined network.
    pub network_mode: String,
    /// `NetworkingConfig.EndpointsConfig[network].Aliases`.
    pub network_aliases: Vec<String>,
    /// `HostConfig.PortBindings`: one entry per host binding.
    pub port_bindings: Vec<PortBinding>,
    /// `HostConfig.PublishAllPorts`: every exposed port on a free host port.
    pub publish_all: bool,
    /// `HostConfig.ExtraHosts`, as `name:ip`.
    pub extra_hosts: Vec<String>,
    /// `HostConfig.Dns` servers.
    pub dns: Vec<String>,
    /// `HostConfig.Binds`: `-v` strings, `SRC:DST[:OPTS]`.
    pub binds: Vec<String>,
    /// `HostConfig.Mounts`: `--mount` entries.
    pub mounts: Vec<MountRequest>,
    /// `HostConfig.Tmpfs`: container path to options (`size=64m,noexec`, or "").
    pub tmpfs: BTreeMap<String, String>,
    /// `Config.Volumes` keys: paths that get an anonymous volume unless
    /// another mount covers them.
    pub volumes: Vec<String>,
}

/// One binding of `HostConfig.PortBindings`, or one published port of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortBinding {
    /// The port inside the container.
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// The host address, empty for every address.
    pub host_ip: String,
    /// The host port; 0 asks for a free one (in a create), or is not yet known.
    pub host_port: u16,
}

/// The result of creating a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    /// Full ID of the new container.
    pub id: String,
    /// Warnings the client prints.
    pub warnings: Vec<String>,
}

/// Which streams an attach wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Attach stdin.
    pub stdin: bool,
    /// Attach stdout.
    pub stdout: bool,
    /// Attach stderr.
    pub stderr: bool,
    /// Replay the log before streaming (`logs=1`).
    pub logs: bool,
    /// Stream live output (`stream=1`).
    pub stream: bool,
}

/// The byte streams of a running process.
pub struct Streams {
    /// Its stdout (with a TTY, the terminal's output).
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    /// Its stderr; `None` with a TTY or when not attached.
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Its stdin; `None` when not attached. Shutting it down closes stdin.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Whether the process has a TTY (raw stream rather than multiplexed).
    pub tty: bool,
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streams")
            .field("stderr", &self.stderr.is_some())
            .field("stdin", &self.stdin.is_some())
            .field("tty", &self.tty)
            .finish_non_exhaustive()
    }
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// Until it is not running (immediately if it is not).
    #[default]
    NotRunning,
    /// Until the next exit after the waiter was registered.
    NextExit,
    /// Until it has been removed.
    Removed,
}

/// The outcome of a wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitResult {
    /// The process's exit code.
    pub status_code: i64,
    /// Why waiting failed, if it did.
    pub error: Option<String>,
}

/// Which log records to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new records.
    pub follow: bool,
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
    /// Only records at or after this time.
    pub since_ns: Option<u64>,
    /// Only records before this time.
    pub until_ns: Option<u64>,
    /// Only the last N records (`None`: all).
    pub tail: Option<u64>,
    /// Whether the client wants timestamps (the API formats them).
    pub timestamps: bool,
}

/// Which stream a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One chunk of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its stream.
    pub stream: LogStream,
    /// When it was written.
    pub time_ns: u64,
    /// The bytes (usually one line, newline included).
    pub data: Vec<u8>,
}

/// Output of `top`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopResult {
    /// Column titles.
    pub titles: Vec<String>,
    /// One row per process.
    pub processes: Vec<Vec<String>>,
}

/// One resource sample of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSample {
    /// When it was taken.
    pub time_ns: u64,
    /// CPU time the container used so far, ns.
    pub cpu_total_ns: u64,
    /// CPU time the host spent so far (all CPUs), ns.
    pub system_cpu_ns: u64,
    /// CPUs the container can use.
    pub online_cpus: u32,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Memory limit, bytes.
    pub memory_limit: u64,
    /// Processes (tasks) in the container.
    pub pids: u64,
}

/// What an exec runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecConfig {
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// Extra `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory, empty for the container's.
    pub working_dir: String,
    /// User, empty for the container's.
    pub user: String,
    /// Allocate a TTY.
    pub tty: bool,
    /// Attach stdin.
    pub attach_stdin: bool,
    /// Attach stdout.
    pub attach_stdout: bool,
    /// Attach stderr.
    pub attach_stderr: bool,
    /// Run privileged (backends may refuse).
    pub privileged: bool,
}

/// An exec's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecDetails {
    /// The exec's ID.
    pub id: String,
    /// Its container's full ID.
    pub container_id: String,
    /// Whether it runs.
    pub running: bool,
    /// Its exit code once it has exited.
    pub exit_code: Option<i64>,
    /// Its PID, 0 when unknown.
    pub pid: i64,
    /// What it was created with.
    pub config: ExecConfig,
}

/// Stat of a path inside a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Unix mode bits (`st_mode`: file type and permissions).
    pub mode: u32,
    /// Modification time.
    pub mtime_ns: u64,
    /// Symlink target, empty if not a symlink.
    pub link_target: String,
}

/// One row of `GET /images/json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// "sha256:..." ID.
    pub id: String,
    /// Parent's ID, may be empty.
    pub parent_id: String,
    /// "repo:tag" references.
    pub repo_tags: Vec<String>,
    /// "repo@sha256:..." references.
    pub repo_digests: Vec<String>,
    /// Creation time, seconds.
    pub created_secs: i64,
    /// Size in bytes.
    pub size: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Containers using it, -1 when unknown.
    pub containers: i64,
}

/// The image config part of [`ImageDetails`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// User.
    pub user: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Exposed ports ("80/tcp").
    pub exposed_ports: Vec<String>,
    /// Volume paths.
    pub volumes: Vec<String>,
    /// Stop signal.
    pub stop_signal: Option<String>,
}

/// Everything `GET /images/{name}/json` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDetails {
    /// "sha256:..." ID.
    pub id: String,
    /// "repo:tag" references.
    pub repo_tags: Vec<String>,
    /// "repo@sha256:..." references.
    pub repo_digests: Vec<String>,
    /// Parent's ID, may be empty.
    pub parent: String,
    /// Comment.
    pub comment: String,
    /// Creation time.
    pub created_ns: u64,
    /// Author.
    pub author: String,
    /// Its config.
    pub config: ImageConfig,
    /// "amd64", "arm64".
    pub architecture: String,
    /// "linux".
    pub os: String,
    /// Size in bytes.
    pub size: i64,
    /// Layer diff IDs, base first.
    pub layers: Vec<String>,
}

/// Credentials from the `X-Registry-Auth` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// Registry host.
    pub server_address: String,
    /// OAuth identity token, if any.
    pub identity_token: String,
}

/// One message of pull/push progress; becomes one line of Docker's
/// streaming JSON (`{"status":..,"id":..,"progressDetail":..}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressMessage {
    /// What happens, e.g. "Pulling fs layer", "Downloading", "Pull complete".
    pub status: String,
    /// Which layer or tag it is about, if any.
    pub id: Option<String>,
    /// Bytes done so far, when known.
    pub current: Option<u64>,
    /// Bytes in all, when known.
    pub total: Option<u64>,
}

/// Where a backend reports pull/push progress. Sending never blocks; if the
/// client went away, messages are dropped. The answer's stream ends only
/// when every clone is dropped, so do not keep one past the call.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    tx: mpsc::UnboundedSender<ProgressMessage>,
}

impl ProgressSink {
    /// A sink and the receiver that gets what is sent to it.
    pub fn channel() -> (ProgressSink, mpsc::UnboundedReceiver<ProgressMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProgressSink { tx }, rx)
    }

    /// Reports one message.
    pub fn send(&self, msg: ProgressMessage) {
        let _ = self.tx.send(msg);
    }

    /// Reports a plain status line, e.g. "Digest: sha256:...".
    pub fn status(&self, status: impl Into<String>) {
        self.send(ProgressMessage {
            status: status.into(),
            ..ProgressMessage::default()
        });
    }
}

/// One entry of `DELETE /images/{name}`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovedImage {
    /// A reference was removed.
    Untagged(String),
    /// An image (by ID) was deleted.
    Deleted(String),
}

/// One row of `GET /images/{name}/history`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Layer's image ID, or "<missing>".
    pub id: String,
    /// Creation time, seconds.
    pub created_secs: i64,
    /// The instruction that made it.
    pub created_by: String,
    /// Tags pointing at it.
    pub tags: Vec<String>,
    /// Size in bytes.
    pub size: i64,
    /// Comment.
    pub comment: String,
}

/// Something that happened to a container or an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// "container" or "image".
    pub typ: String,
    /// "create", "start", "die", "stop", "destroy", "pull", "tag", ...
    pub action: String,
    /// The object's ID (or image reference).
    pub id: String,
    /// "name", "image", "exitCode", labels, ...
    pub attributes: BTreeMap<String, String>,
    /// When it happened.
    pub time_ns: u64,
}
