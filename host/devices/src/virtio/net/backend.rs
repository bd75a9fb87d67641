//! The seam between the virtio-net device and whatever carries its frames on the host.

use std::io;
use std::time::Duration;

use mio::{Registry, Token};

/// Tokens below this belong to the device's own poll loop; a backend registers its event
/// sources with tokens from here up.
pub const BACKEND_TOKEN_BASE: usize = 1 << 20;

/// What an event reported for one of the backend's sources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The source can be read (or has an error or hang-up to report).
    pub readable: bool,
    /// The source can be written (or a non-blocking connect finished).
    pub writable: bool,
}

/// Why a backend refused or lost a frame. None of these stop the device: the frame is
/// dropped and counted, as a real NIC drops frames.
#[derive(Debug, thiserror::Error)]
pub enum NetBackendError {
    /// the backend's queue is full; the frame was dropped
    #[error("the backend's queue is full; the frame was dropped")]
    Full,
    /// a frame of {len} bytes is larger than the {max} bytes allowed
    #[error("a frame of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The largest frame allowed.
        max: usize,
    },
    /// the backend's host side failed: {0}
    #[error("the backend's host side failed: {0}")]
    Io(#[from] io::Error),
}

/// Carries Ethernet frames (no virtio header) between the device and the host.
///
/// The device owns the backend and calls it from one thread: the device's `mio` poll loop
/// (epoll on Linux, kqueue on macOS). The backend hands its own event sources (sockets) to
/// that loop in [`NetBackend::attach`], with tokens from [`BACKEND_TOKEN_BASE`] up, and
/// hears about them through [`NetBackend::ready`]. After each round of events and of frames
/// from the guest the device calls [`NetBackend::poll`], then drains [`NetBackend::recv`]
/// into the guest's receive buffers while it has any.
pub trait NetBackend: Send {
    /// Called once, before any other method: `registry` is the device's poll loop. The
    /// backend may register sources with it now or later.
    fn attach(&mut self, registry: Registry) -> io::Result<()>;
    /// A frame from the guest.
    fn send(&mut self, frame: &[u8]) -> Result<(), NetBackendError>;
    /// The next frame for the guest, copied into `buf` (the device passes room for the
    /// largest frame it accepts); `Ok(None)` when nothing is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetBackendError>;
    /// One of the backend's sources (registered under `token`) is ready.
    fn ready(&mut self, token: Token, readiness: Readiness);
    /// Does the work that events and frames made possible; returns how soon it must be
    /// called again at the latest (timers), or `None` for "when something happens".
    fn poll(&mut self) -> Option<Duration>;
}
