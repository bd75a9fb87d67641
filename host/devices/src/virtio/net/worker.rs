//! The device thread: moves frames between the two virtqueues and the backend.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Events, Poll};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::{
    NetBackend, NetStats, Readiness, BACKEND_TOKEN_BASE, ETH_HDR_LEN, MAX_FRAME_LEN, NET_HDR_LEN,
    WAKER,
};
use crate::virtio::VirtioInterrupt;
use crate::GuestMemory;

/// Rounds of (guest frames, backend work, frames to the guest) per wake-up before the
/// thread polls for events again.
const ROUNDS_PER_WAKE: usize = 8;

/// The two queues, the backend and what the thread needs to serve them.
pub(super) struct Worker {
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    rxq: Queue,
    txq: Queue,
    backend: Box<dyn NetBackend>,
    stats: Arc<NetStats>,
    /// One frame (virtio header included) on its way in either direction.
    frame: Vec<u8>,
    /// Length of a frame from the backend in `frame[NET_HDR_LEN..]` that waits for a
    /// receive buffer.
    pending_rx: Option<usize>,
    /// The guest corrupted a queue: nothing moves until the driver resets the device.
    broken: bool,
}

impl Worker {
    pub(super) fn new(
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        rxq: Queue,
        txq: Queue,
        backend: Box<dyn NetBackend>,
        stats: Arc<NetStats>,
    ) -> Self {
        Worker {
            mem,
            interrupt,
            rxq,
            txq,
            backend,
            stats,
            frame: vec![0; NET_HDR_LEN + MAX_FRAME_LEN],
            pending_rx: None,
            broken: false,
        }
    }

    /// The thread's loop; returns what the next activation needs.
    #[cfg_attr(feature = "fuzzing", allow(dead_code))]
    pub(super) fn run(mut self, mut poll: Poll, stop: Arc<AtomicBool>) -> super::Idle {
        let mut events = Events::with_capacity(256);
        let mut timeout = None;
        tracing::debug!("virtio-net: device thread started");
        loop {
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("virtio-net: poll failed, stopping the device thread: {e}");
                    break;
                }
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER || token.0 < BACKEND_TOKEN_BASE {
                    continue;
                }
                self.backend.ready(
                    token,
                    Readiness {
                        readable: event.is_readable() || event.is_read_closed() || event.is_error(),
                        writable: event.is_writable() || event.is_write_closed(),
                    },
                );
            }
            timeout = self.work();
        }
        tracing::debug!("virtio-net: device thread stopped");
        super::Idle {
            poll,
            backend: self.backend,
        }
    }

    /// Serves both queues and the backend until nothing moves (bounded).
    pub(super) fn work(&mut self) -> Option<std::time::Duration> {
        let mut timeout = None;
        for _ in 0..ROUNDS_PER_WAKE {
            let sent = self.process_tx();
            timeout = self.backend.poll();
            let received = self.process_rx();
            if !sent && !received {
                break;
            }
        }
        timeout
    }

    /// Hands every frame the guest queued to the backend; whether any chain was used.
    pub(super) fn process_tx(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let mut used_any = false;
        for _ in 0..usize::from(self.txq.size()) * 2 {
            let chain = match self.txq.iter(&self.mem) {
                Ok(mut it) => match it.next() {
                    Some(chain) => chain,
                    None => break,
                },
                Err(e) => {
                    tracing::debug!("virtio-net: broken transmit ring: {e}");
                    self.break_device();
                    break;
                }
            };
            let head = chain.head_index();
            match chain.reader(&self.mem) {
                Ok(mut reader) => {
                    let total = reader.available_bytes();
                    if !(NET_HDR_LEN + ETH_HDR_LEN..=NET_HDR_LEN + MAX_FRAME_LEN).contains(&total) {
                        tracing::debug!(total, "virtio-net: guest frame of a bad size dropped");
                        NetStats::bump(&self.stats.tx_dropped);
                    } else if reader.read_exact(&mut self.frame[..total]).is_err() {
                        tracing::debug!("virtio-net: unreadable guest frame dropped");
                        NetStats::bump(&self.stats.tx_dropped);
                    } else if !header_ok(&self.frame[..NET_HDR_LEN]) {
                        tracing::debug!(
                            "virtio-net: guest frame with offloads in its header dropped"
                        );
                        NetStats::bump(&self.stats.tx_dropped);
                    } else {
                        match self.backend.send(&self.frame[NET_HDR_LEN..total]) {
                            Ok(()) => NetStats::bump(&self.stats.tx_frames),
                            Err(e) => {
                                tracing::trace!("virtio-net: backend refused a frame: {e}");
                                NetStats::bump(&self.stats.tx_backend_errors);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("virtio-net: bad transmit chain: {e}");
                    NetStats::bump(&self.stats.tx_dropped);
                }
            }
            if let Err(e) = self.txq.add_used(&self.mem, head, 0) {
                tracing::debug!("virtio-net: cannot fill the transmit used ring: {e}");
                self.break_device();
                break;
            }
            used_any = true;
        }
        if used_any {
            self.notify(true);
        }
        used_any
    }

    /// Fills the guest's receive buffers with frames from the backend; whether any frame
    /// moved (delivered or dropped).
    pub(super) fn process_rx(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let mut used_any = false;
        let mut moved = false;
        for _ in 0..usize::from(self.rxq.size()) * 2 {
            let len = match self.pending_rx {
                Some(len) => len,
                None => match self.backend.recv(&mut self.frame[NET_HDR_LEN..]) {
                    Ok(Some(len)) if len <= MAX_FRAME_LEN => len,
                    Ok(Some(len)) => {
                        tracing::warn!(len, "virtio-net: the backend overstated a frame's length");
                        NetStats::bump(&self.stats.rx_too_big);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("virtio-net: backend receive failed: {e}");
                        break;
                    }
                },
            };
            self.pending_rx = Some(len);
            let chain = match self.rxq.iter(&self.mem) {
                Ok(mut it) => match it.next() {
                    Some(chain) => chain,
                    // No buffer: the frame waits for the guest to post one.
                    None => break,
                },
                Err(e) => {
                    tracing::debug!("virtio-net: broken receive ring: {e}");
                    self.break_device();
                    break;
                }
            };
            let head = chain.head_index();
            let mut writer = match chain.writer(&self.mem) {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!("virtio-net: bad receive chain: {e}");
                    NetStats::bump(&self.stats.rx_bad_chains);
                    if !self.add_rx_used(head, 0) {
                        break;
                    }
                    used_any = true;
                    continue;
                }
            };
            let total = NET_HDR_LEN + len;
            if writer.available_bytes() < NET_HDR_LEN + ETH_HDR_LEN {
                // No frame fits (read-only or tiny buffers): return it empty, keep the frame.
                tracing::debug!("virtio-net: receive chain too small for any frame");
                NetStats::bump(&self.stats.rx_bad_chains);
                if !self.add_rx_used(head, 0) {
                    break;
                }
                used_any = true;
                continue;
            }
            if writer.available_bytes() < total {
                // Too big for this buffer: drop the frame, keep the buffer for the next one.
                tracing::debug!(
                    len,
                    room = writer.available_bytes(),
                    "virtio-net: frame larger than the guest's buffer dropped"
                );
                NetStats::bump(&self.stats.rx_too_big);
                self.pending_rx = None;
                moved = true;
                self.rxq.go_to_previous_position();
                continue;
            }
            // virtio_net_hdr_v1: no flags, GSO_NONE, num_buffers = 1.
            self.frame[..NET_HDR_LEN].fill(0);
            self.frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            let written = match writer.write_all(&self.frame[..total]) {
                Ok(()) => {
                    NetStats::bump(&self.stats.rx_frames);
                    self.pending_rx = None;
                    moved = true;
                    total
                }
                Err(e) => {
                    tracing::debug!("virtio-net: cannot write a receive buffer: {e}");
                    NetStats::bump(&self.stats.rx_bad_chains);
                    0
                }
            };
            if !self.add_rx_used(head, written as u32) {
                break;
            }
            used_any = true;
        }
        if used_any {
            self.notify(false);
        }
        moved || used_any
    }

    fn add_rx_used(&mut self, head: u16, len: u32) -> bool {
        match self.rxq.add_used(&self.mem, head, len) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("virtio-net: cannot fill the receive used ring: {e}");
                self.break_device();
                false
            }
        }
    }

    fn notify(&mut self, tx: bool) {
        let q = if tx { &mut self.txq } else { &mut self.rxq };
        if q.needs_notification(&self.mem).unwrap_or(true) {
            if let Err(e) = self.interrupt.signal_used_queue() {
                tracing::warn!("virtio-net: cannot raise the interrupt: {e}");
            }
        }
    }

    fn break_device(&mut self) {
        self.broken = true;
        self.interrupt.set_needs_reset();
    }

    /// `fuzzing`: the backend back, for the next activation.
    #[cfg(feature = "fuzzing")]
    pub(super) fn into_backend(self) -> Box<dyn NetBackend> {
        self.backend
    }

    #[cfg(test)]
    pub(super) fn backend(&mut self) -> &mut dyn NetBackend {
        self.backend.as_mut()
    }
}

/// Whether a transmit header asks for nothing this device does not offer: no checksum
/// (`flags == 0`) and no segmentation (`gso_type == GSO_NONE`).
pub(super) fn header_ok(hdr: &[u8]) -> bool {
    hdr.len() >= NET_HDR_LEN && hdr[0] == 0 && hdr[1] == 0
}
