//! virtio-fs (virtio 1.2, section 5.11): a host folder shared with the guest, which mounts
//! it with `mount -t virtiofs TAG /mnt`. The device only moves bytes: each request chain
//! carries a FUSE request in its readable part and gets the reply in its writable part;
//! an [`FsBackend`] (see `backend.rs`: the FUSE server of `berth-fuse`) answers it.
//!
//! Queue 0 is the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT: no reply is
//! written, its chains are returned with length 0); queues 1 to [`REQUEST_QUEUES`] carry
//! every other request. No feature beyond `VIRTIO_F_VERSION_1` is offered (no
//! notification queue, no DAX window).
//!
//! Each queue is served by a thread of its own, started when the driver activates the
//! device and stopped (after the request in progress) when it resets it, so that a slow
//! host file operation never holds up the vCPU that notified the queue, and a FORGET is
//! never stuck behind a slow READ. The backend is shared by those threads.
//!
//! The guest is hostile. A request longer than [`berth_fuse::MAX_REQUEST`] is refused
//! (answered `EINVAL` when its header was readable) without reaching the backend, which
//! bounds what the device allocates per queue; a reply larger than the chain's writable
//! part is replaced by an `EIO` reply; a chain with a readable descriptor after a writable
//! one, or one outside guest memory, is returned with length 0; a broken ring marks the
//! device as needing a reset. Guest-triggered problems are logged at `debug` level.

mod backend;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use virtio_queue::Queue;

pub use backend::FsBackend;

use super::queue::SingleQueue;
use super::read_config_bytes;
use super::thread::QueueThread;
use super::{device_type, ActivateError, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::GuestMemory;
use worker::{QueueKind, QueueServer};

/// Length of the `tag` field of the configuration space (the tag is NUL-padded UTF-8).
pub const TAG_LEN: usize = 36;
/// Request queues (besides the high-priority queue).
pub const REQUEST_QUEUES: usize = 1;
/// Size of every queue: a request of `MAX_WRITE` bytes in 4 KiB pages, with its headers,
/// must fit in one chain of direct descriptors.
pub const QUEUE_SIZE: u16 = 1024;
/// Size of `fuse_in_header`.
pub(crate) const FUSE_IN_HEADER_LEN: usize = 40;
/// Size of `fuse_out_header`.
pub(crate) const FUSE_OUT_HEADER_LEN: usize = 16;

const QUEUE_SIZES: [u16; 1 + REQUEST_QUEUES] = [QUEUE_SIZE; 1 + REQUEST_QUEUES];
/// `struct virtio_fs_config`: `tag[36]`, then `num_request_queues` (le32).
const CONFIG_LEN: usize = TAG_LEN + 4;

/// Why a virtio-fs device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// the share's tag is empty: the guest mounts a share by its tag
    #[error("the share's tag is empty: the guest mounts a share by its tag")]
    EmptyTag,
    /// share tag {tag:?} is {len} bytes long: use at most 36 bytes
    #[error("share tag {tag:?} is {len} bytes long: use at most 36 bytes")]
    TagTooLong {
        /// The tag.
        tag: String,
        /// Its length in bytes.
        len: usize,
    },
    /// share tag {0:?} contains a NUL byte
    #[error("share tag {0:?} contains a NUL byte")]
    TagNul(String),
}

/// Checks a share's tag: 1 to [`TAG_LEN`] bytes of UTF-8, no NUL.
pub fn check_tag(tag: &str) -> Result<(), FsError> {
    if tag.is_empty() {
        return Err(FsError::EmptyTag);
    }
    if tag.len() > TAG_LEN {
        return Err(FsError::TagTooLong {
            tag: tag.to_string(),
            len: tag.len(),
        });
    }
    if tag.contains('\0') {
        return Err(FsError::TagNul(tag.to_string()));
    }
    Ok(())
}

/// The virtio-fs device: one shared folder, behind one [`FsBackend`].
pub struct Fs {
    tag: String,
    config: [u8; CONFIG_LEN],
    backend: Arc<dyn FsBackend>,
    acked_features: u64,
    /// One thread per queue (index = queue index) while the device runs.
    threads: Vec<QueueThread>,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("tag", &self.tag)
            .field("active", &!self.threads.is_empty())
            .finish_non_exhaustive()
    }
}

impl Fs {
    /// A device that the guest mounts as `tag`, whose requests `backend` answers.
    pub fn new(tag: &str, backend: Arc<dyn FsBackend>) -> Result<Fs, FsError> {
        check_tag(tag)?;
        let mut config = [0u8; CONFIG_LEN];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&(REQUEST_QUEUES as u32).to_le_bytes());
        Ok(Fs {
            tag: tag.to_string(),
            config,
            backend,
            acked_features: 0,
            threads: Vec::new(),
        })
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Stops every queue thread (each after the request it is serving).
    fn stop(&mut self) {
        for thread in self.threads.drain(..) {
            thread.stop();
        }
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        device_type::FS
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
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(
            offset,
            len = data.len(),
            "virtio-fs: the guest wrote the read-only configuration space; ignored"
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        self.stop();
        if queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                want: QUEUE_SIZES.len(),
                got: queues.len(),
            });
        }
        let mut threads = Vec::with_capacity(queues.len());
        for (i, queue) in queues.into_iter().enumerate() {
            let (kind, name) = match i {
                0 => (QueueKind::Hiprio, "vfs-hiprio".to_string()),
                n => (QueueKind::Request, format!("vfs-req{}", n - 1)),
            };
            let mut server = QueueServer::new(
                format!("virtio-fs {}: queue {i}", self.tag),
                kind,
                SingleQueue::new(mem.clone(), interrupt.clone(), queue),
                self.backend.clone(),
            );
            match QueueThread::spawn(name, move || server.serve()) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Dropping `threads` stops the ones already started.
                    return Err(ActivateError::Backend(format!(
                        "cannot start a virtio-fs queue thread: {e}"
                    )));
                }
            }
        }
        self.threads = threads;
        tracing::debug!(tag = %self.tag, "virtio-fs: device started");
        Ok(())
    }

    fn queue_notify(&mut self, index: u32) {
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.threads.get(i))
        {
            Some(thread) => thread.kick(),
            None if (index as usize) < QUEUE_SIZES.len() => {}
            None => tracing::debug!(
                index,
                "virtio-fs: notification for a queue that does not exist"
            ),
        }
    }

    fn reset(&mut self) {
        // The driver may reuse the rings' memory after a reset: do not touch it again.
        self.stop();
        self.acked_features = 0;
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.stop();
    }
}
