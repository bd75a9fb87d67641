//! Host-guest protocol of berth: versioned handshake and length-prefixed serde frames.
//!
//! # Connections and ports
//!
//! The host reaches the agent over virtio-vsock (guest CID 3). With berth's VMM, as with
//! Firecracker, the host side is a Unix socket: connect to it, write `CONNECT <port>\n`,
//! read `OK <n>\n` ([`vsock_connect`]), and the rest of the connection is a byte stream to
//! the agent's port. For tests the agent can listen on a Unix socket directly
//! (`berth-agent --listen unix:PATH`); every connection to that one socket is then accepted,
//! whatever it says in its [`Hello`], so the port numbers only matter over vsock.
//!
//! | port | constant | what travels on it |
//! |------|----------|--------------------|
//! | 1024 | [`CONTROL_PORT`] | control: [`Request`] / [`Response`] frames, many in flight, matched by id |
//! | 1025 | [`STREAM_PORT`] | one data stream per connection: stdin, stdout, stderr, logs, copy in/out, commit |
//!
//! Both ports are served by the same listener logic: the first frame of each connection is a
//! [`Hello`] naming the [`Channel`], answered by a [`HelloReply`]. Agents built for this
//! version accept either channel on either port; hosts should still use the documented one.
//!
//! # Frames
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. Frames are at
//! most [`MAX_FRAME`] bytes. Data streams use the binary [`chunk`] framing after the hello
//! (stdin, copy in/out, commit, logs) or raw bytes (stdout and stderr, which end at EOF).

pub mod chunk;
pub mod client;
pub mod signal;
pub mod spec;

use std::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use client::{Client, ClientError};

/// Version of the protocol described by this crate. The agent refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;
/// Magic string carried by every [`Hello`], so that a stray peer is recognised early.
pub const MAGIC: &str = "berth";
/// vsock port of the control channel.
pub const CONTROL_PORT: u32 = 1024;
/// vsock port of the data streams (stdio, logs, copy, commit).
pub const STREAM_PORT: u32 = 1025;
/// Largest accepted frame (JSON body), in bytes.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// The guest's vsock context id (the host is 2).
pub const GUEST_CID: u32 = 3;
/// What an agent that sets up [`CreateRequest::network`] lists in [`AgentInfo::features`].
/// Older agents ignore the field, so a host checks for this before relying on it.
pub const FEATURE_NETWORK: &str = "network";
/// What an agent that adds [`CreateRequest::mounts`] lists in [`AgentInfo::features`].
pub const FEATURE_MOUNTS: &str = "mounts";
/// What an agent that understands [`Source::DiskDir`] lists in [`AgentInfo::features`].
pub const FEATURE_DISK_DIRS: &str = "disk-dirs";
/// Longest [`Source::DiskDir`] folder, in bytes.
pub const MAX_DISK_DIR: usize = 1024;
/// Most mounts of one container.
pub const MAX_MOUNTS: usize = 64;
/// Longest virtio-fs tag (the device's config field).
pub const MAX_SHARE_TAG: usize = 36;
/// Most nameservers in a container's `/etc/resolv.conf` (the resolver's own limit).
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains in `/etc/resolv.conf`.
pub const MAX_SEARCH: usize = 6;
/// Most extra `/etc/hosts` entries.
pub const MAX_EXTRA_HOSTS: usize = 256;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O error on the connection: {0}
    #[error("I/O error on the connection: {0}")]
    Io(#[from] std::io::Error),
    /// frame of {0} bytes is larger than the limit; the peer is broken or hostile
    #[error("frame of {0} bytes is larger than the limit; the peer is broken or hostile")]
    TooLarge(usize),
    /// malformed frame: {0}
    #[error("malformed frame: {0}")]
    Decode(#[from] serde_json::Error),
    /// the peer closed the connection in the middle of a frame
    #[error("the peer closed the connection in the middle of a frame")]
    Truncated,
    /// vsock CONNECT was refused: {0}
    #[error("vsock CONNECT was refused: {0}")]
    Connect(String),
}

/// Writes one frame holding `value`.
pub async fn write_frame<W, T>(w: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let body = serde_json::to_vec(value)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Fills `hdr` from `r`. `Ok(false)` at a clean end of stream (EOF before any byte); an EOF
/// inside the header is [`FrameError::Truncated`].
pub(crate) async fn read_header<R>(r: &mut R, hdr: &mut [u8]) -> Result<bool, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut got = 0;
    while got < hdr.len() {
        let n = r.read(&mut hdr[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(false)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    Ok(true)
}

/// Reads a body of `len` bytes (already checked against its limit); an early EOF is
/// [`FrameError::Truncated`].
pub(crate) async fn read_body<R>(r: &mut R, len: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(body)
}

/// Reads one frame. `Ok(None)` at a clean end of stream (EOF before the length).
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    if !read_header(r, &mut len).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let body = read_body(r, len).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Firecracker-style vsock handshake on a host Unix socket: writes `CONNECT <port>\n` and
/// reads `OK <n>\n`. Returns the host-side port number the VMM assigned. Reads byte by byte,
/// so nothing after the reply line is consumed.
pub async fn vsock_connect<S>(s: &mut S, port: u32) -> Result<u32, FrameError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    s.flush().await?;
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(FrameError::Connect(format!(
                "connection closed before the reply to CONNECT {port} (is the agent listening?)"
            )));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 64 {
            return Err(FrameError::Connect("reply line too long".into()));
        }
    }
    let line = String::from_utf8_lossy(&line);
    match line.strip_prefix("OK ") {
        Some(n) => n
            .trim()
            .parse()
            .map_err(|_| FrameError::Connect(format!("bad reply {line:?}"))),
        None => Err(FrameError::Connect(format!("bad reply {line:?}"))),
    }
}

/// Parses a `CONNECT <port>\n` line (the VMM side of [`vsock_connect`]).
pub fn parse_connect_line(line: &str) -> Option<u32> {
    line.strip_prefix("CONNECT ")?.trim_end().parse().ok()
}

/// First frame of every connection, sent by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The host's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What this connection is for.
    pub channel: Channel,
}

impl Hello {
    /// A hello of this crate's version.
    pub fn new(channel: Channel) -> Self {
        Hello {
            magic: MAGIC.to_string(),
            version: PROTOCOL_VERSION,
            channel,
        }
    }
}

/// Purpose of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Request/response control channel.
    Control,
    /// One data stream.
    Stream(StreamTarget),
}

/// Identifies a process: the container's init (`exec: None`) or one of its execs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Container id.
    pub container: String,
    /// Exec id, or `None` for the container's init process.
    #[serde(default)]
    pub exec: Option<String>,
}

impl ProcessRef {
    /// The init process of `container`.
    pub fn init(container: impl Into<String>) -> Self {
        ProcessRef {
            container: container.into(),
            exec: None,
        }
    }
    /// Exec `exec` of `container`.
    pub fn exec(container: impl Into<String>, exec: impl Into<String>) -> Self {
        ProcessRef {
            container: container.into(),
            exec: Some(exec.into()),
        }
    }
}

impl fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.exec {
            Some(e) => write!(f, "exec {e} of container {}", self.container),
            None => write!(f, "container {}", self.container),
        }
    }
}

/// The data stream a [`Channel::Stream`] connection carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamTarget {
    /// Host -> process stdin, in [`chunk`] frames; [`chunk::Chunk::End`] closes stdin (EOF).
    /// With a TTY this feeds the terminal.
    Stdin(ProcessRef),
    /// Process stdout (or the terminal's output) -> host, raw bytes until EOF.
    Stdout(ProcessRef),
    /// Process stderr -> host, raw bytes until EOF (immediately EOF with a TTY).
    Stderr(ProcessRef),
    /// Kept output of a container's init, as [`chunk::Chunk::Log`] records, then `End`.
    Logs {
        /// Container id.
        container: String,
        /// Keep streaming new output until the container exits.
        follow: bool,
        /// Only the last N records (lines).
        tail: Option<u64>,
    },
    /// Host -> guest: a tar stream in [`chunk`] frames, unpacked into directory `path`
    /// of the container's filesystem. The agent answers `End` or `Error`.
    CopyIn {
        /// Container id.
        container: String,
        /// Absolute directory inside the container.
        path: String,
    },
    /// Guest -> host: `path` of the container's filesystem as a tar stream in chunk frames.
    CopyOut {
        /// Container id.
        container: String,
        /// Absolute path inside the container (file or directory).
        path: String,
    },
    /// Guest -> host: the container's upper directory as an OCI layer tar (whiteouts in
    /// `.wh.` form), in chunk frames, then `End` or `Error`.
    Commit {
        /// Container id.
        container: String,
    },
}

/// The agent's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The agent's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The agent's build version (crate version).
    pub agent: String,
    /// Why the connection is refused, if it is.
    pub error: Option<WireError>,
}

/// A request on the control channel, with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the host, echoed in the response.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A response on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// The outcome.
    pub result: Result<Response, WireError>,
}

/// Where a layer or the scratch space comes from, as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A block device (`/dev/vda`...) holding a filesystem; `fstype` None lets the agent try
    /// erofs then ext4.
    Device {
        /// Device path in the guest.
        path: String,
        /// Filesystem type, e.g. `erofs` or `ext4`.
        fstype: Option<String>,
    },
    /// A virtio disk found by its serial (`/sys/block/vdX/serial`), so that the host need
    /// not know the guest's device names; the whole disk, or a byte range of it, holds a
    /// filesystem.
    Disk {
        /// The disk's serial, as the host configured it.
        serial: String,
        /// The filesystem's bytes within the disk, when it is one of several (an image's
        /// layers share one disk); the whole disk when `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<ByteRange>,
        /// Filesystem type, e.g. `erofs` or `ext4`.
        fstype: Option<String>,
    },
    /// A folder of the filesystem on a whole virtio disk found by its serial. The agent
    /// mounts that disk once, read-write, and every container of the VM that names it
    /// shares the mount. As a scratch space the folder is made if missing; as a layer it
    /// must exist. A build keeps each step's upper directory on the VM's scratch disk this
    /// way and stacks the finished ones as the next step's layers. `dir` is relative: plain
    /// names joined by `/`, no `.` or `..`. Needs [`FEATURE_DISK_DIRS`].
    DiskDir {
        /// The disk's serial, as the host configured it.
        serial: String,
        /// Filesystem type of the whole disk; `None` is ext4.
        fstype: Option<String>,
        /// The folder, relative to the filesystem's root.
        dir: String,
    },
    /// An existing directory (host tests, or layers already unpacked).
    Dir {
        /// Directory path.
        path: String,
    },
}

/// Bytes `offset..offset + length` of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// Where the range starts, in bytes (a multiple of 512).
    pub offset: u64,
    /// How long it is, in bytes (a multiple of 512, not 0).
    pub length: u64,
}

impl ByteRange {
    /// Whether the range is whole 512-byte sectors, not empty, and does not overflow.
    pub fn is_valid(&self) -> bool {
        self.offset.is_multiple_of(512)
            && self.length.is_multiple_of(512)
            && self.length > 0
            && self.offset.checked_add(self.length).is_some()
    }
}

/// Options of a process's stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StdioOptions {
    /// Allocate a pseudo terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// Keep stdin open for a [`StreamTarget::Stdin`] stream; otherwise stdin is /dev/null.
    pub open_stdin: bool,
}

/// Create a container (it does not run until [`Request::Start`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Container id, unique in the guest.
    pub id: String,
    /// OCI runtime configuration. `root.path` is ignored: the root is the layers' overlay.
    pub spec: oci_spec::runtime::Spec,
    /// Image layers, lowest first.
    pub layers: Vec<Source>,
    /// Writable space for the upper dir, work dir and logs. `None`: a tmpfs in guest memory.
    pub scratch: Option<Source>,
    /// `USER[:GROUP]` names or ids resolved against the image's /etc/passwd and /etc/group;
    /// overrides `process.user` of the spec when given.
    pub user: Option<String>,
    /// stdio of the init process.
    pub stdio: StdioOptions,
    /// The VM's network, set up by the agent on `eth0` (the VM's one virtio-net device)
    /// before the container is created. With a network the container shares the VM's
    /// network namespace: one container runs per VM, and the VM is the isolation
    /// boundary. Without one (`--network none`) it gets a namespace of its own with only
    /// `lo`. Agents without [`FEATURE_NETWORK`] ignore this field.
    #[serde(default)]
    pub network: Option<NetworkConfig>,
    /// Extra `/etc/hosts` entries (`--add-host`), with or without a network.
    #[serde(default)]
    pub extra_hosts: Vec<HostEntry>,
    /// Host folders (virtio-fs shares of the VM) and tmpfs mounts of the container, in
    /// the order they are mounted. Agents without [`FEATURE_MOUNTS`] ignore this field.
    #[serde(default)]
    pub mounts: Vec<ContainerMount>,
}

/// One mount the agent adds to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMount {
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    /// What is mounted.
    pub source: MountSource,
}

/// What a [`ContainerMount`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSource {
    /// The VM's virtio-fs device with this tag (a host folder or a volume).
    Share {
        /// The device's tag.
        tag: String,
    },
    /// A tmpfs in the guest's memory.
    Tmpfs {
        /// Size limit in bytes.
        #[serde(default)]
        size_bytes: Option<u64>,
        /// Mode of its root.
        #[serde(default)]
        mode: Option<u32>,
        /// Extra flags: `noexec`, `exec`, `nosuid`, `suid`, `nodev`, `dev`.
        #[serde(default)]
        flags: Vec<String>,
    },
}

/// The tmpfs flags a [`MountSource::Tmpfs`] may carry.
pub const TMPFS_FLAGS: [&str; 6] = ["noexec", "exec", "nosuid", "suid", "nodev", "dev"];

/// Checks the mounts of a create request.
pub fn validate_mounts(mounts: &[ContainerMount]) -> Result<(), WireError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(invalid(
            "mounts",
            format!("{} mounts are too many: at most {MAX_MOUNTS}", mounts.len()),
        ));
    }
    for m in mounts {
        let path = std::path::Path::new(&m.target);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            || m.target.trim_end_matches('/').is_empty()
        {
            return Err(invalid(
                "mounts.target",
                format!("{:?} is not an absolute path below / without ..", m.target),
            ));
        }
        match &m.source {
            MountSource::Share { tag } => {
                if tag.is_empty()
                    || tag.len() > MAX_SHARE_TAG
                    || !tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                {
                    return Err(invalid(
                        "mounts.source.tag",
                        format!("{tag:?} is not a share tag"),
                    ));
                }
            }
            MountSource::Tmpfs { flags, mode, .. } => {
                if let Some(f) = flags.iter().find(|f| !TMPFS_FLAGS.contains(&f.as_str())) {
                    return Err(invalid(
                        "mounts.source.flags",
                        format!("{f:?} is not a tmpfs flag"),
                    ));
                }
                if mode.is_some_and(|m| m > 0o7777) {
                    return Err(invalid(
                        "mounts.source.mode",
                        format!("{mode:?} is not a mode"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A container's IPv4 network: the address of `eth0`, its route and its resolver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The guest's address.
    pub address: std::net::Ipv4Addr,
    /// The subnet's prefix length (1 to 30).
    pub prefix: u8,
    /// The default route.
    pub gateway: std::net::Ipv4Addr,
    /// Link MTU of `eth0`.
    pub mtu: u16,
    /// `nameserver` lines of `/etc/resolv.conf` (1 to [`MAX_NAMESERVERS`]).
    pub nameservers: Vec<std::net::IpAddr>,
    /// `search` domains of `/etc/resolv.conf`.
    #[serde(default)]
    pub search: Vec<String>,
}

/// One `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The name.
    pub name: String,
    /// Its address.
    pub address: std::net::IpAddr,
}

/// Whether `name` may go into `/etc/hosts` or a `search` line: 1 to 253 bytes of
/// letters, digits, `-`, `_` and `.`.
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn invalid(field: &str, message: String) -> WireError {
    WireError {
        field: Some(field.to_string()),
        ..WireError::new(ErrorKind::InvalidConfig, message)
    }
}

impl NetworkConfig {
    /// Checks what the agent will write into the guest.
    pub fn validate(&self) -> Result<(), WireError> {
        if !(1..=30).contains(&self.prefix) {
            return Err(invalid(
                "network.prefix",
                format!("prefix /{} is unusable: give 1 to 30", self.prefix),
            ));
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(invalid(
                "network.mtu",
                format!("MTU {} is too small: give 68 or more", self.mtu),
            ));
        }
        if self.nameservers.is_empty() || self.nameservers.len() > MAX_NAMESERVERS {
            return Err(invalid(
                "network.nameservers",
                format!(
                    "{} nameservers given: give 1 to {MAX_NAMESERVERS}",
                    self.nameservers.len()
                ),
            ));
        }
        if self.search.len() > MAX_SEARCH {
            return Err(invalid(
                "network.search",
                format!(
                    "{} search domains are too many: at most {MAX_SEARCH}",
                    self.search.len()
                ),
            ));
        }
        if let Some(d) = self.search.iter().find(|d| !valid_host_name(d)) {
            return Err(invalid(
                "network.search",
                format!("search domain {d:?} is not a DNS name"),
            ));
        }
        Ok(())
    }
}

/// Checks extra `/etc/hosts` entries.
pub fn validate_extra_hosts(hosts: &[HostEntry]) -> Result<(), WireError> {
    if hosts.len() > MAX_EXTRA_HOSTS {
        return Err(invalid(
            "extra_hosts",
            format!(
                "{} extra hosts are too many: at most {MAX_EXTRA_HOSTS}",
                hosts.len()
            ),
        ));
    }
    if let Some(h) = hosts.iter().find(|h| !valid_host_name(&h.name)) {
        return Err(invalid(
            "extra_hosts",
            format!("{:?} is not a host name", h.name),
        ));
    }
    Ok(())
}

/// Prepare a process in a running container (it runs at [`Request::Start`] with its exec id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Container id.
    pub container: String,
    /// Exec id, unique within the container.
    pub exec: String,
    /// The process (args, env, cwd, user, capabilities...). With `env` unset or empty the
    /// process gets the container's environment (docker exec's behaviour; add `-e` values
    /// to that list yourself).
    pub process: oci_spec::runtime::Process,
    /// As in [`CreateRequest::user`].
    pub user: Option<String>,
    /// stdio of the process.
    pub stdio: StdioOptions,
}

/// Requests of the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Versions and uptime. Answer: [`Response::Info`].
    Ping,
    /// Create a container. Answer: [`Response::Created`].
    Create(Box<CreateRequest>),
    /// Start a created container's init or a prepared exec. Answer: [`Response::Started`].
    Start(ProcessRef),
    /// Prepare an exec. Answer: [`Response::Ok`].
    Exec(Box<ExecRequest>),
    /// Send a signal to a process. Answer: [`Response::Ok`].
    Signal {
        /// The process.
        process: ProcessRef,
        /// Signal number, in Linux's numbering ([`signal`]).
        signal: i32,
    },
    /// Wait until a process has exited. Answer: [`Response::Exited`].
    Wait(ProcessRef),
    /// All containers. Answer: [`Response::Containers`].
    List,
    /// Delete a container: with `force` its processes are killed first; without, it must
    /// not be running. Answer: [`Response::Ok`].
    Delete {
        /// Container id.
        id: String,
        /// Kill it if it runs.
        force: bool,
    },
    /// cgroup statistics. Answer: [`Response::Stats`].
    Stats {
        /// Container id.
        id: String,
    },
    /// Resize a process's terminal. Answer: [`Response::Ok`].
    ResizeTty {
        /// The process (created with `tty`).
        process: ProcessRef,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Processes of a container. Answer: [`Response::Processes`].
    Top {
        /// Container id.
        id: String,
    },
    /// Set the guest's wall clock (the guest has no RTC; log timestamps use this clock).
    /// Answer: [`Response::Ok`].
    SetTime {
        /// Nanoseconds since the Unix epoch.
        unix_nanos: u64,
    },
    /// Sync filesystems and power the VM off (i8042 reset; the kernel runs with reboot=k).
    /// Answer: [`Response::Ok`] before the agent goes down.
    Shutdown,
}

/// State of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Created, init not started.
    Created,
    /// Init runs.
    Running,
    /// Init has exited.
    Stopped,
}

/// One entry of [`Response::Containers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// State.
    pub status: ContainerStatus,
    /// Guest pid of the init process, once created.
    pub pid: Option<i32>,
    /// Exit code of init once stopped.
    pub exit_code: Option<i32>,
    /// Exec ids known in this container.
    pub execs: Vec<String>,
}

/// cgroup v2 statistics of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Total CPU time, microseconds (cpu.stat usage_usec).
    pub cpu_usage_usec: u64,
    /// User CPU time, microseconds.
    pub cpu_user_usec: u64,
    /// System CPU time, microseconds.
    pub cpu_system_usec: u64,
    /// Memory in use, bytes (memory.current).
    pub memory_current: u64,
    /// Memory limit in bytes (memory.max), `None` when unlimited.
    pub memory_max: Option<u64>,
    /// Number of tasks (pids.current).
    pub pids_current: u64,
    /// Task limit (pids.max), `None` when unlimited.
    pub pids_max: Option<u64>,
    /// Online CPUs in the guest (for percentages).
    pub online_cpus: u32,
    /// Guest clock when sampled, nanoseconds (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
}

/// One process of [`Response::Processes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Guest pid.
    pub pid: i32,
    /// Guest parent pid.
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// Single-letter state (R, S, Z...).
    pub state: String,
    /// Resident memory in KiB.
    pub rss_kib: u64,
    /// CPU time (user + system), in clock ticks.
    pub cpu_ticks: u64,
    /// Command line (or `[comm]` when empty).
    pub cmd: String,
}

/// Facts about the agent ([`Request::Ping`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Agent crate version.
    pub agent_version: String,
    /// Protocol version.
    pub protocol: u32,
    /// Guest uptime in milliseconds.
    pub uptime_ms: u64,
    /// Guest kernel release.
    pub kernel: String,
    /// Whether cgroup v2 limits can be applied.
    pub cgroup2: bool,
    /// Optional parts of the protocol this agent implements ([`FEATURE_NETWORK`]).
    #[serde(default)]
    pub features: Vec<String>,
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Nothing to report.
    Ok,
    /// Agent facts.
    Info(AgentInfo),
    /// Container created; `pid` is its (waiting) init process.
    Created {
        /// Guest pid.
        pid: i32,
    },
    /// Process started (exec succeeded).
    Started {
        /// Guest pid.
        pid: i32,
    },
    /// Process exited: its code, or 128+N when killed by signal N.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Container list.
    Containers(Vec<ContainerInfo>),
    /// Statistics.
    Stats(ContainerStats),
    /// Process list.
    Processes(Vec<ProcessInfo>),
}

/// Kind of a [`WireError`]; the host decides its exit code and wording from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The named container or process does not exist.
    NotFound,
    /// A container or exec with this id exists already.
    AlreadyExists,
    /// The configuration is invalid; `field` names the culprit.
    InvalidConfig,
    /// The executable was not found (docker exits 127).
    ExecutableNotFound,
    /// The executable could not be executed (docker exits 126).
    NotExecutable,
    /// The operation does not fit the container's state.
    InvalidState,
    /// The guest lacks a feature (e.g. cgroup v2).
    Unsupported,
    /// The peer broke the protocol.
    Protocol,
    /// An operating system call failed.
    System,
}

/// A typed error sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Human-readable message (docker's wording where docker has one).
    pub message: String,
    /// For [`ErrorKind::InvalidConfig`]: the configuration field, e.g. `process.args`.
    #[serde(default)]
    pub field: Option<String>,
    /// For [`ErrorKind::System`]: the errno, when there is one.
    #[serde(default)]
    pub errno: Option<i32>,
}

impl WireError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        WireError {
            kind,
            message: message.into(),
            field: None,
            errno: None,
        }
    }

    /// A protocol violation.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    /// The exit status docker uses for this failure: 127 for a missing executable, 126 for
    /// one that cannot be executed, 125 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::ExecutableNotFound => 127,
            ErrorKind::NotExecutable => 126,
            _ => 125,
        }
    }
}

/// Exit code of a process from its wait status parts: the code, or 128+N when killed by N.
pub fn exit_code(exited: Option<i32>, signaled: Option<i32>) -> i32 {
    match (exited, signaled) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 255,
    }
}

#[cfg(test)]
mod tests;
