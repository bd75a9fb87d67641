//! virtio-net (virtio 1.2, section 5.1): one receive and one transmit queue, a MAC address,
//! link status and an MTU in the configuration space, no offloads. Frames go to a
//! [`NetBackend`] (see `backend.rs`): the user-mode NAT of `berth-net`, or later a Unix
//! socket carrying frames to passt or gvproxy.
//!
//! Every frame carries the 12-byte `virtio_net_hdr_v1` in front. Since no checksum or
//! segmentation offload is offered, the driver must send headers with `flags == 0` and
//! `gso_type == VIRTIO_NET_HDR_GSO_NONE`; frames with any other header, shorter than an
//! Ethernet header or longer than [`MAX_FRAME_LEN`] are dropped and counted in
//! [`NetStats`]. On receive, a frame that does not fit the guest's buffer is dropped and
//! counted, and the buffer is kept for the next frame.
//!
//! The device runs one thread per activation with a `mio` poll loop over a waker (which
//! [`VirtioDevice::queue_notify`] kicks) and the backend's sources. Reset stops the thread;
//! the backend and its flows survive for the next activation, as the guest's TCP stack
//! does not forget its connections when the driver is reloaded.
//!
//! With the `fuzzing` feature there is no thread: each notification serves the queues and
//! the backend once on the notifying thread (the backend's events are not polled).

mod backend;
mod worker;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Token, Waker};
use virtio_queue::Queue;

pub use backend::{NetBackend, NetBackendError, Readiness, BACKEND_TOKEN_BASE};

use super::{
    device_type, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1,
};
use crate::GuestMemory;

/// `VIRTIO_NET_F_MTU`: the configuration space holds the MTU.
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
/// `VIRTIO_NET_F_MAC`: the configuration space holds the MAC address.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_STATUS`: the configuration space holds the link status.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// `VIRTIO_NET_S_LINK_UP`.
const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// Size of `virtio_net_hdr_v1` (with `num_buffers`), in front of every frame.
pub const NET_HDR_LEN: usize = 12;
/// Size of an Ethernet header: shorter frames are dropped.
pub const ETH_HDR_LEN: usize = 14;
/// Largest Ethernet frame (without the virtio header) the device moves either way.
pub const MAX_FRAME_LEN: usize = 65_535;
/// Smallest MTU offered (the IPv4 minimum).
pub const MIN_MTU: u16 = 68;
/// Largest MTU offered: a frame of MTU plus the Ethernet header must fit [`MAX_FRAME_LEN`].
pub const MAX_MTU: u16 = (MAX_FRAME_LEN - ETH_HDR_LEN) as u16;
/// Size of each of the two queues.
pub const QUEUE_SIZE: u16 = 256;

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
const WAKER: Token = Token(0);

/// Why a net device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// MAC address {0} is not a unicast address: clear the lowest bit of the first byte
    #[error("MAC address {0} is not a unicast address: clear the lowest bit of the first byte")]
    MulticastMac(String),
    /// MTU {mtu} is out of range: use {min} to {max}
    #[error("MTU {mtu} is out of range: use {min} to {max}")]
    Mtu {
        /// The MTU asked for.
        mtu: u16,
        /// Smallest allowed.
        min: u16,
        /// Largest allowed.
        max: u16,
    },
    /// cannot set up the device's event loop: {0}
    #[error("cannot set up the device's event loop: {0}")]
    Poll(#[source] io::Error),
    /// the network backend could not attach to the device: {0}
    #[error("the network backend could not attach to the device: {0}")]
    Attach(#[source] io::Error),
}

/// Formats a MAC address as `52:54:00:12:34:56`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Counters of the device, shared with whoever wants to watch them.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames from the guest handed to the backend.
    pub tx_frames: AtomicU64,
    /// Guest frames dropped: bad header, too short or too long, unreadable chain.
    pub tx_dropped: AtomicU64,
    /// Guest frames the backend refused (its queue full, or a host error).
    pub tx_backend_errors: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Frames for the guest dropped because they did not fit its buffer.
    pub rx_too_big: AtomicU64,
    /// Receive chains returned unused because they were unwritable.
    pub rx_bad_chains: AtomicU64,
}

impl NetStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What stays with the device between activations.
struct Idle {
    poll: Poll,
    backend: Box<dyn NetBackend>,
}

#[cfg_attr(feature = "fuzzing", allow(dead_code))]
struct Running {
    thread: JoinHandle<Idle>,
    stop: Arc<AtomicBool>,
}

/// The virtio-net device.
pub struct Net {
    mac: [u8; 6],
    mtu: u16,
    acked_features: u64,
    stats: Arc<NetStats>,
    waker: Arc<Waker>,
    idle: Option<Idle>,
    running: Option<Running>,
    /// `fuzzing`: the started device, served by [`VirtioDevice::queue_notify`] itself.
    #[cfg(feature = "fuzzing")]
    inline: Option<(worker::Worker, Poll)>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &format_mac(&self.mac))
            .field("mtu", &self.mtu)
            .field("active", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A net device with address `mac` and link MTU `mtu`, whose frames go to `backend`.
    pub fn new(mac: [u8; 6], mtu: u16, mut backend: Box<dyn NetBackend>) -> Result<Net, NetError> {
        if mac[0] & 1 != 0 {
            return Err(NetError::MulticastMac(format_mac(&mac)));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(NetError::Mtu {
                mtu,
                min: MIN_MTU,
                max: MAX_MTU,
            });
        }
        let poll = Poll::new().map_err(NetError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(NetError::Poll)?);
        let registry = poll.registry().try_clone().map_err(NetError::Poll)?;
        backend.attach(registry).map_err(NetError::Attach)?;
        Ok(Net {
            mac,
            mtu,
            acked_features: 0,
            stats: Arc::default(),
            waker,
            idle: Some(Idle { poll, backend }),
            running: None,
            #[cfg(feature = "fuzzing")]
            inline: None,
        })
    }

    /// The device's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    fn config_bytes(&self) -> [u8; 12] {
        // struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu (all LE).
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        c
    }

    /// Runs `worker` on the device thread.
    #[cfg(not(feature = "fuzzing"))]
    fn start(&mut self, worker: worker::Worker, poll: Poll) -> Result<(), ActivateError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("virtio-net".into())
            .spawn(move || worker.run(poll, thread_stop))
            .map_err(|e| {
                ActivateError::Backend(format!("cannot start the virtio-net thread: {e}"))
            })?;
        self.running = Some(Running { thread, stop });
        Ok(())
    }

    /// `fuzzing`: keeps `worker` for [`VirtioDevice::queue_notify`] to run.
    #[cfg(feature = "fuzzing")]
    fn start(&mut self, worker: worker::Worker, poll: Poll) -> Result<(), ActivateError> {
        self.inline = Some((worker, poll));
        Ok(())
    }

    fn stop(&mut self) {
        #[cfg(feature = "fuzzing")]
        if let Some((worker, poll)) = self.inline.take() {
            self.idle = Some(Idle {
                poll,
                backend: worker.into_backend(),
            });
        }
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            if let Err(e) = self.waker.wake() {
                tracing::error!("virtio-net: cannot wake the device thread: {e}");
            }
            match running.thread.join() {
                Ok(idle) => self.idle = Some(idle),
                Err(_) => tracing::error!("virtio-net: the device thread panicked"),
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_MTU | VIRTIO_NET_F_STATUS
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Writing the MAC is legacy-only (VIRTIO_NET_F_CTRL_MAC_ADDR is not offered).
        tracing::debug!(
            offset,
            len = data.len(),
            "virtio-net: the guest wrote the read-only configuration space; ignored"
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        self.stop();
        let [rxq, txq]: [Queue; 2] =
            queues
                .try_into()
                .map_err(|q: Vec<Queue>| ActivateError::QueueCount {
                    want: 2,
                    got: q.len(),
                })?;
        let Some(idle) = self.idle.take() else {
            return Err(ActivateError::Backend(
                "the network backend was lost when the device thread panicked".into(),
            ));
        };
        let worker =
            worker::Worker::new(mem, interrupt, rxq, txq, idle.backend, self.stats.clone());
        self.start(worker, idle.poll)
    }

    fn queue_notify(&mut self, index: u32) {
        #[cfg(feature = "fuzzing")]
        if let (0 | 1, Some((worker, _))) = (index, &mut self.inline) {
            worker.work();
            return;
        }
        match (index, &self.running) {
            (0 | 1, Some(_)) => {
                if let Err(e) = self.waker.wake() {
                    tracing::error!("virtio-net: cannot wake the device thread: {e}");
                }
            }
            (0 | 1, None) => {}
            _ => tracing::debug!(
                index,
                "virtio-net: notification for a queue that does not exist"
            ),
        }
    }

    fn reset(&mut self) {
        // The driver may reuse the rings' memory after a reset: do not touch it again.
        self.stop();
        self.acked_features = 0;
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop();
    }
}
