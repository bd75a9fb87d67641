//! berth's container records: IDs and names like docker's, on-disk state under a lock
//! so that two CLIs at once cannot corrupt it, and the liveness of each container's VMM
//! process (a container whose VMM has died is shown as exited, never as running).
//!
//! Layout under the state root (`$BERTH_ROOT`, else `$XDG_DATA_HOME/berth`, else
//! `~/.local/share/berth`), all owner-only (0700 folders, 0600 files):
//!
//! ```text
//! containers/.lock            flock taken for every change
//! containers/<id>/record.json the ContainerRecord
//! containers/<id>/...         the VM's files: scratch disk, sockets, console log
//! ```

pub mod mounts;
mod names;
pub mod networks;
pub mod ports;
pub mod volumes;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use mounts::{MountSource, MountSpec};
pub use names::generate_name;
pub use networks::{Network, NetworkAttachment, NetworkStore};
pub use ports::{ExtraHost, PortMapping, Protocol};
pub use volumes::{Volume, VolumeStore};

/// Errors of the container store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// no such container: {0}
    #[error("no such container: {0}")]
    NotFound(String),
    /// "{prefix}" matches several containers ({matches}): give more of the ID or the name
    #[error(
        "\"{prefix}\" matches several containers ({matches}): give more of the ID or the name"
    )]
    Ambiguous {
        /// What the user typed.
        prefix: String,
        /// The short IDs it matches.
        matches: String,
    },
    /// the container name "{0}" is already in use: remove that container or pick another name
    #[error(
        "the container name \"{0}\" is already in use: remove that container or pick another name"
    )]
    NameInUse(String),
    /// invalid container name "{0}": use letters, digits, '_', '.' and '-', starting with a letter or digit
    #[error("invalid container name \"{0}\": use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    /// cannot {action} {path}: {source}
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// the state file {path} is damaged: {source}
    #[error("the state file {path} is damaged: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// cannot generate a random container ID: {0}
    #[error("cannot generate a random container ID: {0}")]
    Random(String),
    /// no such volume: {0}
    #[error("no such volume: {0}")]
    VolumeNotFound(String),
    /// volume {name} is in use by container {containers}: remove the container first (berth rm -f), then the volume
    #[error("volume {name} is in use by container {containers}: remove the container first (berth rm -f), then the volume")]
    VolumeInUse {
        /// The volume.
        name: String,
        /// The containers using it.
        containers: String,
    },
    /// invalid volume name "{0}": use 2 or more letters, digits, '_', '.' and '-', starting with a letter or digit
    #[error("invalid volume name \"{0}\": use 2 or more letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidVolumeName(String),
    /// network {0} not found: list networks with `berth network ls`, or make it with `berth network create {0}`
    #[error("network {0} not found: list networks with `berth network ls`, or make it with `berth network create {0}`")]
    NetworkNotFound(String),
    /// network with name {0} already exists
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    /// invalid network name "{0}": use 2 or more letters, digits, '_', '.' and '-', starting with a letter or digit, and none of default, bridge, none or host
    #[error("invalid network name \"{0}\": use 2 or more letters, digits, '_', '.' and '-', starting with a letter or digit, and none of default, bridge, none or host")]
    InvalidNetworkName(String),
    /// subnet {subnet} overlaps network {network}: give another --subnet
    #[error("subnet {subnet} overlaps network {network}: give another --subnet")]
    SubnetTaken {
        /// The subnet asked for.
        subnet: String,
        /// The network that has it.
        network: String,
    },
    /// network {name} is in use by container {containers}: remove the container first (berth rm -f), then the network
    #[error("network {name} is in use by container {containers}: remove the container first (berth rm -f), then the network")]
    NetworkInUse {
        /// The network.
        name: String,
        /// The containers on it.
        containers: String,
    },
    /// network {0} has no free address left: remove containers from it, or make a network with a larger --subnet
    #[error("network {0} has no free address left: remove containers from it, or make a network with a larger --subnet")]
    NetworkFull(String),
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What the user asked `run` (or `create`) for: everything needed to start the container again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The image reference as the user gave it.
    pub image: String,
    /// The resolved image ID (config digest).
    pub image_id: String,
    /// The process to run: entrypoint and command already combined.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, image defaults first.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub workdir: String,
    /// `USER[:GROUP]`, empty for the image default.
    pub user: String,
    /// Hostname of the container.
    pub hostname: String,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// CPUs (`--cpus`): the micro-VM gets this many vCPUs rounded up, the container's
    /// `cpu.max` gets exactly this much.
    pub cpus: f64,
    /// Memory limit of the container and size of the micro-VM, in MiB.
    pub memory_mib: u64,
    /// `pids.max` of the container, when limited.
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// User labels (`--label`, compose's `com.docker.compose.*`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The network (`--network`): `default` (user-mode NAT in the VMM), `none` (only
    /// `lo`), or a user-defined network's name. Records from before networking have none:
    /// they keep no network.
    #[serde(default = "no_network")]
    pub network: String,
    /// Where the container is on its user-defined network.
    #[serde(default)]
    pub attachment: Option<NetworkAttachment>,
    /// DNS servers the container uses instead of the gateway's (`--dns`).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Extra `/etc/hosts` entries (`--add-host`).
    #[serde(default)]
    pub add_hosts: Vec<ExtraHost>,
    /// Published ports (`-p`), as asked; a host port 0 is picked when the VM starts.
    #[serde(default)]
    pub publish: Vec<PortMapping>,
    /// Host folders, volumes and tmpfs mounts (`-v`, `--mount`, `--tmpfs`), anonymous
    /// volumes already named.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
}

/// The `--network` of containers recorded before berth had networking.
fn no_network() -> String {
    NETWORK_NONE.to_string()
}

/// The network of a container that has only its loopback.
pub const NETWORK_NONE: &str = "none";
/// The user-mode NAT network every container gets unless told otherwise.
pub const NETWORK_DEFAULT: &str = "default";

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started.
    Created,
    /// Its micro-VM is running.
    Running,
    /// It ended (or its micro-VM did).
    Exited,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        })
    }
}

/// The VMM process that owns a running container's micro-VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmProcess {
    /// Its process ID.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22), so that a
    /// reused PID is not taken for it.
    pub start_time: u64,
}

impl VmmProcess {
    /// The record of a live process, or `None` when it does not exist.
    pub fn of_pid(pid: u32) -> Option<Self> {
        let (start_time, state) = proc_stat(pid)?;
        (state != 'Z').then_some(Self { pid, start_time })
    }

    /// Whether this very process still runs.
    pub fn is_alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((t, s)) if t == self.start_time && s != 'Z')
    }
}

/// Field 3 (state) and 22 (start time) of `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(u64, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

/// The mutable part of a container's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Set while a VMM is (or was last) running the container.
    pub vmm: Option<VmmProcess>,
    /// Exit code of the container's main process, once known.
    pub exit_code: Option<i32>,
    /// Why the container ended abnormally (a crashed VM, say).
    pub error: Option<String>,
    /// When it was last started (seconds since the epoch).
    pub started_at: Option<u64>,
    /// When it last ended (seconds since the epoch).
    pub finished_at: Option<u64>,
    /// The published ports of the running VM, host ports resolved.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The monitor of the running container, once one has claimed it: the process that
    /// keeps its logs, powers its VM off and records its end. Cleared when it ends.
    #[serde(default)]
    pub monitor: Option<Monitor>,
}

/// The monitor process of a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    /// The monitor itself.
    pub process: VmmProcess,
    /// The foreground berth process (`run`, `start -a`) it stands by for, if any: that
    /// process records the end unless it dies first.
    pub standby_for: Option<VmmProcess>,
}

/// Everything berth keeps about one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// What to run.
    pub spec: RunSpec,
    /// Where it is now.
    pub state: State,
}

impl ContainerRecord {
    /// The first 12 hex digits, as docker shows them.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The status, from the record and the liveness of its VMM: a container whose VMM is
    /// gone is exited, whatever the record last said.
    pub fn status(&self) -> Status {
        match self.state.vmm {
            Some(vmm) if vmm.is_alive() => Status::Running,
            _ if self.state.started_at.is_some() => Status::Exited,
            _ => Status::Created,
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new random container ID: 64 hex digits.
pub fn generate_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a user-chosen name against docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// Writes `value` as JSON to `path` atomically (an owner-only temporary file, synced,
/// then renamed over it).
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = private_file()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(io("write", &tmp))?;
    let json = serde_json::to_vec_pretty(value).map_err(|source| Error::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(&json).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    Ok(())
}

/// Takes the flock on `path` (created owner-only), waiting for whoever holds it.
fn lock_file(path: &Path) -> Result<Lock> {
    let file = private_file()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    file.lock().map_err(io("lock", path))?;
    Ok(Lock { _file: file })
}

/// Options that create a file open to its owner only (mode 0600).
#[cfg(unix)]
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Options that create a file open to its owner only: on Windows, a new file takes the
/// access list of its folder, and berth's folders are in the user's own profile.
#[cfg(not(unix))]
pub fn private_file() -> OpenOptions {
    OpenOptions::new()
}

/// A folder builder whose folders get `mode`.
#[cfg(unix)]
fn dir_builder(mode: u32) -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    builder
}

/// A folder builder: on Windows a new folder takes the access list of its parent, so there
/// is no mode to give.
#[cfg(not(unix))]
fn dir_builder(_mode: u32) -> fs::DirBuilder {
    fs::DirBuilder::new()
}

/// Makes folder `dir` (and those above it) when missing, open to its owner only.
pub fn private_dir(dir: &Path) -> Result<()> {
    dir_builder(0o700)
        .recursive(true)
        .create(dir)
        .map_err(io("create", dir))
}

/// The container store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Holds the store's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Store {
    /// The default state root: `$BERTH_ROOT`, else `$XDG_DATA_HOME/berth`, else
    /// `~/.local/share/berth`.
    pub fn default_root() -> PathBuf {
        if let Some(root) = std::env::var_os("BERTH_ROOT").filter(|v| !v.is_empty()) {
            return PathBuf::from(root);
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("berth");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".local/share/berth")
    }

    /// Opens (creating it if needed) the container store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("containers");
        private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Takes the store's lock, waiting for another CLI to release it.
    pub fn lock(&self) -> Result<Lock> {
        lock_file(&self.dir.join(".lock"))
    }

    /// The folder of container `id`, holding its record and its VM's files.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("record.json")
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io("read", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io("read", &self.dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            match self.load(id) {
                Ok(r) => out.push(r),
                // A folder whose record is not written yet belongs to a `run` in progress.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn load(&self, id: &str) -> Result<ContainerRecord> {
        let path = self.record_path(id);
        let text = fs::read(&path).map_err(io("read", &path))?;
        serde_json::from_slice(&text).map_err(|source| Error::Corrupt { path, source })
    }

    /// Finds a container by full ID, name, or unique ID prefix (docker's rules: an exact
    /// ID or name wins over a prefix).
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord> {
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.id == key || r.name == key) {
            return Ok(r.clone());
        }
        let key_lower = key.to_ascii_lowercase();
        let matches: Vec<_> = if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            Vec::new()
        } else {
            all.iter()
                .filter(|r| r.id.starts_with(&key_lower))
                .collect()
        };
        match matches.as_slice() {
            [] => Err(Error::NotFound(key.to_string())),
            [one] => Ok((*one).clone()),
            many => Err(Error::Ambiguous {
                prefix: key.to_string(),
                matches: many
                    .iter()
                    .map(|r| r.short_id())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Records a new container; `name` is generated when `None`. Takes the lock.
    pub fn create(&self, name: Option<&str>, spec: RunSpec) -> Result<ContainerRecord> {
        let _lock = self.lock()?;
        let all = self.list()?;
        let taken: HashSet<&str> = all.iter().map(|r| r.name.as_str()).collect();
        let name = match name {
            Some(n) => {
                validate_name(n)?;
                if taken.contains(n) {
                    return Err(Error::NameInUse(n.to_string()));
                }
                n.to_string()
            }
            None => generate_name(|n| taken.contains(n)),
        };
        let id = generate_id()?;
        let dir = self.dir(&id);
        dir_builder(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        let record = ContainerRecord {
            id,
            name,
            created: now(),
            spec,
            state: State::default(),
        };
        self.save(&record)?;
        Ok(record)
    }

    /// Writes a record atomically.
    fn save(&self, record: &ContainerRecord) -> Result<()> {
        write_json(&self.record_path(&record.id), record)
    }

    /// Changes a container's record under the lock and returns the new record.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        let _lock = self.lock()?;
        let mut record = self.load(id)?;
        change(&mut record);
        self.save(&record)?;
        Ok(record)
    }

    /// Removes a container's record and every file of its VM.
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(id.to_string()))
            }
            Err(e) => Err(io("remove", &dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spec() -> RunSpec {
        RunSpec {
            image: "busybox".into(),
            args: vec!["true".into()],
            ..RunSpec::default()
        }
    }

    #[test]
    fn records_from_before_networking_have_no_network() {
        let old = r#"{"image":"i","image_id":"sha256:1","args":["x"],"env":[],"workdir":"/",
            "user":"","hostname":"","tty":false,"interactive":false,"cpus":1.0,
            "memory_mib":0,"auto_remove":false}"#;
        let s: RunSpec = serde_json::from_str(old).unwrap();
        assert_eq!(s.network, NETWORK_NONE);
        assert!(s.publish.is_empty() && s.dns.is_empty() && s.add_hosts.is_empty());
        let st: State = serde_json::from_str(
            r#"{"vmm":null,"exit_code":null,"error":null,"started_at":null,"finished_at":null}"#,
        )
        .unwrap();
        assert!(st.ports.is_empty());
    }

    #[test]
    fn ids_are_64_hex_and_differ() {
        let a = generate_id().unwrap();
        let b = generate_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn create_resolve_by_name_id_and_prefix() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let a = store.create(Some("web"), spec()).unwrap();
        let b = store.create(None, spec()).unwrap();
        assert_eq!(store.resolve("web").unwrap().id, a.id);
        assert_eq!(store.resolve(&a.id).unwrap().name, "web");
        assert_eq!(store.resolve(&b.id[..12]).unwrap().id, b.id);
        assert_eq!(store.resolve(&b.name).unwrap().id, b.id);
        assert!(matches!(store.resolve("nope"), Err(Error::NotFound(_))));
        assert!(matches!(
            store.create(Some("web"), spec()),
            Err(Error::NameInUse(_))
        ));
        assert!(matches!(
            store.create(Some("-bad"), spec()),
            Err(Error::InvalidName(_))
        ));
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(a.status(), Status::Created);
    }

    #[test]
    fn an_ambiguous_prefix_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        // Enough containers that two share a first hex digit.
        let ids: Vec<String> = (0..17)
            .map(|_| store.create(None, spec()).unwrap().id)
            .collect();
        let first = ids
            .iter()
            .map(|id| &id[..1])
            .find(|p| ids.iter().filter(|id| id.starts_with(*p)).count() > 1)
            .unwrap();
        assert!(matches!(store.resolve(first), Err(Error::Ambiguous { .. })));
    }

    #[test]
    fn state_is_owner_only_and_removal_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let r = store.create(None, spec()).unwrap();
        let dir = store.dir(&r.id);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("record.json")), 0o600);
        store.remove(&r.id).unwrap();
        assert!(!dir.exists());
        assert!(matches!(store.remove(&r.id), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_dead_vmm_means_exited_never_running() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let r = store.create(None, spec()).unwrap();
        let me = VmmProcess::of_pid(std::process::id()).unwrap();
        let r = store
            .update(&r.id, |r| {
                r.state.vmm = Some(me);
                r.state.started_at = Some(now());
            })
            .unwrap();
        assert_eq!(r.status(), Status::Running);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = VmmProcess::of_pid(child.id()).unwrap_or(VmmProcess {
            pid: child.id(),
            start_time: 0,
        });
        child.wait().unwrap();
        let r = store.update(&r.id, |r| r.state.vmm = Some(dead)).unwrap();
        assert_eq!(r.status(), Status::Exited);
        // A reused PID with another start time is not the VMM.
        let impostor = VmmProcess {
            pid: std::process::id(),
            start_time: me.start_time + 1,
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn concurrent_creates_get_unique_names() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || s.create(Some("same"), spec()).is_ok())
            })
            .collect();
        let ok = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&b| b)
            .count();
        assert_eq!(ok, 1, "exactly one CLI gets the name");
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
