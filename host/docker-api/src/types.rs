//! Docker Engine API JSON shapes, spelled exactly as Docker spells them.
//! Response types only serialize; request types only deserialize and
//! ignore fields they do not name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"message": "..."}`, Docker's error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error text.
    pub message: &'a str,
}

/// `GET /version`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// `{"Name": ...}`.
    pub platform: Platform,
    /// The engine component.
    pub components: Vec<Component>,
    /// Engine version.
    pub version: String,
    /// Highest API version served.
    pub api_version: String,
    /// Lowest API version served.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// Source revision.
    pub git_commit: String,
    /// Go version (we report the Rust toolchain family instead).
    pub go_version: String,
    /// "linux".
    pub os: String,
    /// "amd64", "arm64".
    pub arch: String,
    /// Host kernel.
    pub kernel_version: String,
    /// Build time.
    pub build_time: String,
    /// Experimental features on.
    pub experimental: bool,
}

/// `Version.Platform`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    /// Product name.
    pub name: String,
}

/// One entry of `Version.Components`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    /// "Engine".
    pub name: String,
    /// Its version.
    pub version: String,
    /// Free-form details (ApiVersion, Os, ...).
    pub details: BTreeMap<String, String>,
}

/// `GET /info` (the fields the CLI prints).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub containers: u64,
    pub containers_running: u64,
    pub containers_paused: u64,
    pub containers_stopped: u64,
    pub images: u64,
    pub driver: String,
    pub driver_status: Vec<[String; 2]>,
    pub docker_root_dir: String,
    pub logging_driver: String,
    pub cgroup_driver: String,
    pub cgroup_version: String,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    pub architecture: String,
    #[serde(rename = "NCPU")]
    pub ncpu: u64,
    pub mem_total: u64,
    pub name: String,
    pub server_version: String,
    pub labels: Vec<String>,
    pub experimental_build: bool,
    pub debug: bool,
    pub memory_limit: bool,
    pub swap_limit: bool,
    pub cpu_cfs_period: bool,
    pub cpu_cfs_quota: bool,
    pub pids_limit: bool,
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    pub index_server_address: String,
    pub registry_config: Value,
    pub plugins: Value,
    pub runtimes: Value,
    pub default_runtime: String,
    pub swarm: Value,
    pub live_restore_enabled: bool,
    pub isolation: String,
    pub security_options: Vec<String>,
    pub warnings: Vec<String>,
}

/// One row of `GET /containers/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ContainerListEntry {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<Value>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: ListHostConfig,
    pub network_settings: ListNetworkSettings,
    pub mounts: Vec<Value>,
}

/// `HostConfig` in a container list row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListHostConfig {
    /// "none" (berth has no docker networks).
    pub network_mode: String,
}

/// `NetworkSettings` in a container list row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListNetworkSettings {
    /// Always empty.
    pub networks: BTreeMap<String, Value>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: ContainerStateJson,
    pub image: String,
    pub resolv_conf_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub log_path: String,
    pub name: String,
    pub restart_count: i64,
    pub driver: String,
    pub platform: String,
    pub mount_label: String,
    pub process_label: String,
    pub app_armor_profile: String,
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    pub host_config: HostConfigJson,
    pub graph_driver: GraphDriver,
    pub mounts: Vec<MountPointJson>,
    pub config: ContainerConfigJson,
    pub network_settings: NetworkSettingsJson,
}

/// `State` of a container.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ContainerStateJson {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

/// `HostConfig` of an inspected container.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct HostConfigJson {
    pub binds: Option<Vec<String>>,
    pub network_mode: String,
    pub port_bindings: BTreeMap<String, Value>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub log_config: LogConfig,
    pub privileged: bool,
    pub publish_all_ports: bool,
    pub readonly_rootfs: bool,
    pub memory: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub pids_limit: Option<i64>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub dns: Vec<String>,
    pub extra_hosts: Option<Vec<String>>,
    pub volumes_from: Option<Vec<String>>,
    pub links: Option<Vec<String>>,
    pub ipc_mode: String,
    pub pid_mode: String,
    pub devices: Vec<Value>,
    pub mounts: Option<Vec<Value>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub init: Option<bool>,
}

/// One entry of an inspected container's `Mounts`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct MountPointJson {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub source: String,
    pub destination: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub driver: String,
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
}

/// One volume, as `/volumes` answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct VolumeJson {
    pub created_at: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub mountpoint: String,
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub scope: String,
    pub usage_data: Option<Value>,
}

/// `GET /volumes` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeListJson {
    /// The volumes.
    pub volumes: Vec<VolumeJson>,
    /// Warnings (none).
    pub warnings: Vec<String>,
}

/// `POST /volumes/prune` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumePruneJson {
    /// Removed volumes.
    pub volumes_deleted: Vec<String>,
    /// Bytes freed.
    pub space_reclaimed: u64,
}

/// `POST /volumes/create` body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct VolumeCreateBody {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub cluster_volume_spec: Option<Value>,
}

/// One entry of `HostConfig.Mounts` in a create body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct MountBody {
    #[serde(rename = "Type")]
    pub typ: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<bool>,
    pub consistency: Option<String>,
    pub bind_options: Option<BindOptionsBody>,
    pub volume_options: Option<VolumeOptionsBody>,
    pub tmpfs_options: Option<TmpfsOptionsBody>,
    pub image_options: Option<Value>,
    pub cluster_options: Option<Value>,
}

/// `Mount.BindOptions`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct BindOptionsBody {
    pub propagation: Option<String>,
    pub non_recursive: Option<bool>,
    pub create_mountpoint: Option<bool>,
    pub read_only_non_recursive: Option<bool>,
    pub read_only_force_recursive: Option<bool>,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct VolumeOptionsBody {
    pub no_copy: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub driver_config: Option<DriverConfigBody>,
    pub subpath: Option<String>,
}

/// `Mount.VolumeOptions.DriverConfig`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct DriverConfigBody {
    pub name: Option<String>,
    pub options: Option<BTreeMap<String, String>>,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct TmpfsOptionsBody {
    pub size_bytes: Option<i64>,
    pub mode: Option<u32>,
    pub options: Option<Vec<Vec<String>>>,
}

/// `RestartPolicy`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// "no".
    pub name: String,
    /// 0.
    pub maximum_retry_count: i64,
}

/// `LogConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    /// Log driver name.
    #[serde(rename = "Type")]
    pub typ: String,
    /// Driver options.
    pub config: BTreeMap<String, String>,
}

/// `GraphDriver`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    /// Driver name.
    pub name: String,
    /// Driver data.
    pub data: Option<BTreeMap<String, String>>,
}

/// `Config` of an inspected container.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ContainerConfigJson {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub image: String,
    pub volumes: Option<BTreeMap<String, Value>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub on_build: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
}

/// `NetworkSettings` of an inspected container (berth has no docker
/// networks, so it is empty).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct NetworkSettingsJson {
    pub bridge: String,
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    pub ports: BTreeMap<String, Value>,
    pub sandbox_key: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    pub gateway: String,
    pub mac_address: String,
    pub networks: BTreeMap<String, Value>,
}

/// `POST /containers/create` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    /// New container's ID.
    pub id: String,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// `POST /containers/{id}/wait` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    /// Exit code.
    pub status_code: i64,
    /// `{"Message": ...}` or null.
    pub error: Option<WaitError>,
}

/// `WaitResponse.Error`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitError {
    /// What went wrong.
    pub message: String,
}

/// `GET /containers/{id}/top` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopResponse {
    /// Column titles.
    pub titles: Vec<String>,
    /// Rows.
    pub processes: Vec<Vec<String>>,
}

/// `GET /containers/{id}/stats`, one sample.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct StatsJson {
    pub read: String,
    pub preread: String,
    pub pids_stats: PidsStats,
    pub blkio_stats: BlkioStats,
    pub num_procs: u32,
    pub storage_stats: BTreeMap<String, Value>,
    pub cpu_stats: CpuStats,
    pub precpu_stats: CpuStats,
    pub memory_stats: MemoryStats,
    pub name: String,
    pub id: String,
}

/// `pids_stats`.
#[derive(Debug, Serialize)]
pub struct PidsStats {
    /// Tasks now.
    pub current: u64,
}

/// `blkio_stats` (berth reports none).
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Option<Vec<Value>>,
    pub io_serviced_recursive: Option<Vec<Value>>,
}

/// `cpu_stats` / `precpu_stats`.
#[derive(Debug, Serialize, Default)]
#[allow(missing_docs)]
pub struct CpuStats {
    pub cpu_usage: CpuUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_cpu_usage: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_cpus: Option<u32>,
    pub throttling_data: ThrottlingData,
}

/// `cpu_usage`.
#[derive(Debug, Serialize, Default)]
#[allow(missing_docs)]
pub struct CpuUsage {
    pub total_usage: u64,
    pub usage_in_kernelmode: u64,
    pub usage_in_usermode: u64,
}

/// `throttling_data`.
#[derive(Debug, Serialize, Default)]
#[allow(missing_docs)]
pub struct ThrottlingData {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

/// `memory_stats`.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct MemoryStats {
    pub usage: u64,
    pub stats: BTreeMap<String, u64>,
    pub limit: u64,
}

/// `POST /containers/{id}/exec` answer, and other `{"Id": ...}` answers.
#[derive(Debug, Serialize)]
pub struct IdResponse {
    /// The new object's ID.
    #[serde(rename = "Id")]
    pub id: String,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ExecInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub process_config: ProcessConfig,
    pub open_stdin: bool,
    pub open_stderr: bool,
    pub open_stdout: bool,
    pub can_remove: bool,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub detach_keys: String,
    pub pid: i64,
}

/// `ExecInspect.ProcessConfig` (lower-case keys, as Docker has them).
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct ProcessConfig {
    pub tty: bool,
    pub entrypoint: String,
    pub arguments: Vec<String>,
    pub privileged: bool,
    pub user: String,
}

/// Path stat as sent in `X-Docker-Container-Path-Stat`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PathStatJson {
    /// Base name.
    pub name: String,
    /// Size.
    pub size: i64,
    /// Go `os.FileMode` bits.
    pub mode: u32,
    /// RFC 3339 time.
    pub mtime: String,
    /// Symlink target.
    pub link_target: String,
}

/// One row of `GET /images/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ImageListEntry {
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: i64,
    pub shared_size: i64,
    pub virtual_size: i64,
    pub labels: BTreeMap<String, String>,
    pub containers: i64,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub docker_version: String,
    pub author: String,
    pub config: ImageConfigJson,
    pub architecture: String,
    pub os: String,
    pub size: i64,
    pub virtual_size: i64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: ImageMetadata,
}

/// `Config` of an image.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ImageConfigJson {
    pub hostname: String,
    pub user: String,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    pub volumes: Option<BTreeMap<String, Value>>,
    pub on_build: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// `RootFS`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFs {
    /// "layers".
    #[serde(rename = "Type")]
    pub typ: String,
    /// Diff IDs.
    pub layers: Vec<String>,
}

/// `Metadata`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageMetadata {
    /// When it was last tagged.
    pub last_tag_time: String,
}

/// One row of `GET /images/{name}/history`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct HistoryJson {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    pub tags: Option<Vec<String>>,
    pub size: i64,
    pub comment: String,
}

/// One line of Docker's streaming JSON (pull, push, load).
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct JsonMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `progressDetail`.
#[derive(Debug, Serialize, Default)]
#[allow(missing_docs)]
pub struct ProgressDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// `errorDetail`.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// The error text.
    pub message: String,
}

/// One event of `GET /events`.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct EventJson {
    #[serde(rename = "Type")]
    pub typ: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `Actor` of an event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Actor {
    /// Object ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Docker's `StrSlice`: a string or an array of strings.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum StrSlice {
    /// One string (old clients), split like a shell would not: kept whole.
    One(String),
    /// An array.
    Many(Vec<String>),
}

impl StrSlice {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(s) => vec![s],
            StrSlice::Many(v) => v,
        }
    }
}

/// `POST /containers/create` body (the part we read).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct CreateBody {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StrSlice>,
    pub entrypoint: Option<StrSlice>,
    pub image: String,
    pub working_dir: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    pub volumes: Option<BTreeMap<String, Value>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub host_config: Option<HostConfigBody>,
    pub networking_config: Option<NetworkingConfigBody>,
}

/// `NetworkingConfig` of a create body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct NetworkingConfigBody {
    pub endpoints_config: Option<BTreeMap<String, crate::networks::EndpointBody>>,
}

/// `HostConfig` of a create body: what we support, and what we must refuse
/// when set. Everything is optional; unknown fields are ignored.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct HostConfigBody {
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub memory: Option<i64>,
    pub pids_limit: Option<i64>,
    pub auto_remove: Option<bool>,
    pub binds: Option<Vec<String>>,
    pub mounts: Option<Vec<Value>>,
    pub port_bindings: Option<BTreeMap<String, Value>>,
    pub publish_all_ports: Option<bool>,
    pub privileged: Option<bool>,
    pub network_mode: Option<String>,
    pub cap_add: Option<Vec<String>>,
    pub devices: Option<Vec<Value>>,
    pub device_requests: Option<Vec<Value>>,
    pub volumes_from: Option<Vec<String>>,
    pub links: Option<Vec<String>>,
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    pub uts_mode: Option<String>,
    pub userns_mode: Option<String>,
    pub restart_policy: Option<RestartPolicyBody>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub dns: Option<Vec<String>>,
}

/// `HostConfig.RestartPolicy` of a create body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicyBody {
    /// "", "no", "always", "unless-stopped", "on-failure".
    pub name: String,
}

/// `POST /containers/{id}/exec` body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct ExecCreateBody {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub cmd: Option<StrSlice>,
    pub env: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub privileged: bool,
}

/// `POST /exec/{id}/start` body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStartBody {
    /// Start detached.
    pub detach: bool,
    /// With a TTY.
    pub tty: bool,
}

/// The decoded `X-Registry-Auth` header.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
#[allow(missing_docs)]
pub struct AuthConfigBody {
    pub username: String,
    pub password: String,
    #[serde(alias = "serveraddress")]
    pub serveraddress: String,
    #[serde(alias = "identitytoken")]
    pub identitytoken: String,
    pub auth: String,
}
