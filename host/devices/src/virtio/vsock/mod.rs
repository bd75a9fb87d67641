//! virtio-vsock (virtio 1.2, section 5.10) with a userspace backend on host Unix sockets,
//! in the shape Firecracker made common.
//!
//! * **Host-initiated streams**: the device listens on `uds_path`. A host client connects,
//!   writes `CONNECT <port>\n`; the device sends a connection request to that guest port.
//!   When the guest accepts, the client reads `OK <local_port>\n` and the stream is open in
//!   both directions. A guest refusal (RST) closes the client's socket.
//! * **Guest-initiated streams**: a guest connection to host port `P` (CID 2) makes the device
//!   connect to the host Unix socket `<uds_path>_P`; when nobody listens there the guest's
//!   connect fails (RST).
//!
//! Flow control is the virtio credit scheme in both directions: the device never reads more
//! from a host socket than the guest has room for (it stops reading and sends a
//! `CREDIT_REQUEST` instead), and it buffers at most [`TX_BUF_SIZE`] bytes per stream on the
//! way to the host, which is the `buf_alloc` it advertises. Closing one side is seen on the
//! other: host EOF becomes a `SHUTDOWN(SEND)` to the guest, a guest `SHUTDOWN(SEND)` becomes
//! a write shutdown of the host socket, a guest close or RST closes the host socket.
//!
//! The backend is one thread per activated device running a `mio` poll loop (epoll on
//! Linux, kqueue on macOS) over the listener, every stream and a waker that
//! [`VirtioDevice::queue_notify`] kicks. Reset stops the thread and closes every stream
//! (the listener stays bound for the next activation); dropping the device also removes
//! the listener's socket file.
//!
//! The guest is hostile: malformed packets are dropped or answered with RST, a guest that
//! sends beyond its credit has the stream reset, and a queue the guest corrupted marks the
//! device as needing a reset ([`VirtioInterrupt::set_needs_reset`]). Guest-triggered
//! problems are logged at `debug` level so a guest cannot flood the VMM's log.
//!
//! Host sockets are written with `write(2)`: the process must ignore `SIGPIPE` (Rust
//! binaries do by default) so that a vanished host peer is an `EPIPE`, answered with RST.

mod backend;
pub mod packet;

#[cfg(test)]
mod tests;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::Queue;

use super::{
    device_type, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1,
};
use crate::GuestMemory;

/// The host's context id.
pub const HOST_CID: u64 = 2;
/// Size of each of the three queues (rx, tx, event).
pub const QUEUE_SIZE: u16 = 256;
/// Bytes the device buffers per stream on the way to the host (its advertised `buf_alloc`).
pub const TX_BUF_SIZE: u32 = 256 * 1024;
/// Largest payload of one packet, in either direction (Linux uses 64 KiB too).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// Most streams (open or being set up) at once; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;

const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Why a vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// guest CID {0} is invalid: use a value from 3 to 4294967294
    #[error("guest CID {0} is invalid: use a value from 3 to 4294967294")]
    InvalidCid(u64),
    /// vsock socket path {0} is taken: remove the stale socket or choose another path
    #[error("vsock socket path {0} is taken: remove the stale socket or choose another path")]
    PathTaken(PathBuf),
    /// the directory of vsock socket path {0} does not exist: create it first
    #[error("the directory of vsock socket path {0} does not exist: create it first")]
    DirectoryMissing(PathBuf),
    /// cannot listen on vsock socket path {path}: {source}
    #[error("cannot listen on vsock socket path {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// The virtio-vsock device.
///
/// Create it with [`Vsock::new`] before the VM starts (it binds the host socket then, so a
/// taken path is reported early); the transport drives it through [`VirtioDevice`].
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file we created, so drop removes only our own file.
    socket_id: Option<(u64, u64)>,
    acked_features: u64,
    backend: Option<backend::BackendHandle>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.guest_cid)
            .field("uds_path", &self.uds_path)
            .field("active", &self.backend.is_some())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// A vsock device giving the guest context id `guest_cid`, listening for host
    /// connections on the Unix socket `uds_path` (guest connections to port `P` go to
    /// `<uds_path>_P`).
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Vsock, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let listener = match UnixListener::bind(&uds_path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(VsockError::PathTaken(uds_path))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VsockError::DirectoryMissing(uds_path))
            }
            Err(source) => {
                return Err(VsockError::Bind {
                    path: uds_path,
                    source,
                })
            }
        };
        let socket_id = std::fs::symlink_metadata(&uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let dev = Vsock {
            guest_cid,
            uds_path,
            listener,
            socket_id,
            acked_features: 0,
            backend: None,
        };
        dev.listener
            .set_nonblocking(true)
            .map_err(|source| VsockError::Bind {
                path: dev.uds_path.clone(),
                source,
            })?;
        Ok(dev)
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host socket the device listens on.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Stops the backend thread; `drain` as in [`backend::BackendHandle::stop`].
    fn stop_backend(&mut self, drain: bool) {
        if let Some(backend) = self.backend.take() {
            backend.stop(drain);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.guest_cid.to_le_bytes();
        read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(
            offset,
            len = data.len(),
            "vsock: the guest wrote the read-only configuration space; ignored"
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        self.stop_backend(false);
        let [rxq, txq, evq]: [Queue; 3] =
            queues
                .try_into()
                .map_err(|q: Vec<Queue>| ActivateError::QueueCount {
                    want: 3,
                    got: q.len(),
                })?;
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| ActivateError::Backend(format!("cannot share the vsock listener: {e}")))?;
        let config = backend::Config {
            guest_cid: self.guest_cid,
            uds_path: self.uds_path.clone(),
            listener,
        };
        let handle = backend::BackendHandle::spawn(config, mem, interrupt, [rxq, txq, evq])
            .map_err(|e| {
                ActivateError::Backend(format!("cannot start the vsock backend thread: {e}"))
            })?;
        self.backend = Some(handle);
        Ok(())
    }

    fn queue_notify(&mut self, index: u32) {
        // rx (0): new buffers for us to fill; tx (1): packets to handle. The event queue (2)
        // only holds buffers for events berth never sends. Any other index is bogus.
        match (index, &self.backend) {
            (0 | 1, Some(backend)) => backend.kick(),
            (0..=2, _) => {}
            _ => tracing::debug!(index, "vsock: notification for a queue that does not exist"),
        }
    }

    fn reset(&mut self) {
        // The driver may reuse the rings' memory after a reset: do not touch it again.
        self.stop_backend(false);
        self.acked_features = 0;
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        // The VM is going away: deliver what the guest already sent before closing.
        self.stop_backend(true);
        // Remove the socket file only if it is still the one we bound.
        let ours = std::fs::symlink_metadata(&self.uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.socket_id {
            if let Err(e) = std::fs::remove_file(&self.uds_path) {
                tracing::warn!(path = %self.uds_path.display(), "vsock: cannot remove the socket file: {e}");
            }
        }
    }
}
