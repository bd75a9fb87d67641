//! What each queue's thread does: gathers the request a chain carries, hands it to the
//! backend, scatters the reply back into the chain.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::{FsBackend, FUSE_IN_HEADER_LEN, FUSE_OUT_HEADER_LEN};
use crate::virtio::queue::{Chain, SingleQueue};
use crate::GuestMemory;

/// FUSE_FORGET: takes no reply.
const FUSE_FORGET: u32 = 2;
/// FUSE_BATCH_FORGET: takes no reply.
const FUSE_BATCH_FORGET: u32 = 42;
/// A reply buffer that a backend grew past this is given back to the allocator.
const MAX_KEPT_REPLY: usize = 2 * berth_fuse::MAX_REQUEST;

/// The two kinds of virtio-fs queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum QueueKind {
    /// Queue 0: FORGET, BATCH_FORGET, INTERRUPT; the driver expects no reply.
    Hiprio,
    /// Queues 1..: every other request, each answered in the chain's writable part.
    Request,
}

/// One started queue and what serving it needs.
pub(super) struct QueueServer {
    name: String,
    kind: QueueKind,
    queue: SingleQueue,
    backend: Arc<dyn FsBackend>,
    bufs: Buffers,
}

/// Buffers reused from chain to chain (they keep the size of the largest request seen,
/// at most [`berth_fuse::MAX_REQUEST`]).
#[derive(Default)]
struct Buffers {
    request: Vec<u8>,
    reply: Vec<u8>,
    /// The chain's non-empty writable descriptors, in order.
    writable: Vec<(GuestAddress, usize)>,
}

impl QueueServer {
    pub(super) fn new(
        name: String,
        kind: QueueKind,
        queue: SingleQueue,
        backend: Arc<dyn FsBackend>,
    ) -> Self {
        Self {
            name,
            kind,
            queue,
            backend,
            bufs: Buffers::default(),
        }
    }

    /// Serves every chain available on the queue (bounded by the queue's size).
    pub(super) fn serve(&mut self) {
        let Self {
            name,
            kind,
            queue,
            backend,
            bufs,
        } = self;
        queue.serve(name, |chain, mem, _| {
            bufs.serve_chain(name, *kind, chain, mem, backend.as_ref())
        });
    }
}

impl Buffers {
    /// Serves one chain; returns the bytes written into it.
    fn serve_chain(
        &mut self,
        name: &str,
        kind: QueueKind,
        chain: Chain<'_>,
        mem: &GuestMemory,
        backend: &dyn FsBackend,
    ) -> u32 {
        self.request.clear();
        self.writable.clear();
        let mut room = 0usize;
        let mut oversized = false;
        let mut seen_writable = false;
        // The chain iterator stops at the queue's size (or an indirect table's), at a
        // descriptor it cannot read and at 4 GiB in total: this loop is bounded.
        for desc in chain {
            let len = desc.len() as usize;
            if desc.is_write_only() {
                seen_writable = true;
                if len > 0 {
                    room = room.saturating_add(len);
                    self.writable.push((desc.addr(), len));
                }
                continue;
            }
            if seen_writable {
                tracing::debug!(
                    "{name}: a readable descriptor follows a writable one; chain refused"
                );
                return 0;
            }
            let have = self.request.len();
            if !oversized && have.saturating_add(len) > berth_fuse::MAX_REQUEST {
                oversized = true;
            }
            // Once over the limit, only what is missing of the in-header is read, for the
            // request's unique id.
            let take = if oversized {
                len.min(FUSE_IN_HEADER_LEN.saturating_sub(have))
            } else {
                len
            };
            if take == 0 {
                continue;
            }
            self.request.resize(have + take, 0);
            if let Err(e) = mem.read_slice(&mut self.request[have..], desc.addr()) {
                tracing::debug!("{name}: unreadable request descriptor: {e}");
                return 0;
            }
        }
        if oversized {
            tracing::debug!(
                max = berth_fuse::MAX_REQUEST,
                "{name}: request larger than the server accepts refused"
            );
            return self.error_reply(name, kind, mem, room, libc::EINVAL);
        }
        if self.request.is_empty() {
            tracing::debug!("{name}: chain without a request");
            return 0;
        }
        self.reply.clear();
        backend.handle(&self.request, &mut self.reply);
        let written = if kind == QueueKind::Hiprio || self.reply.is_empty() {
            if !self.reply.is_empty() {
                tracing::debug!("{name}: reply to a high-priority request dropped");
            }
            0
        } else if self.reply.len() > room {
            tracing::debug!(
                reply = self.reply.len(),
                room,
                "{name}: reply larger than the guest's buffers; answered EIO"
            );
            self.error_reply(name, kind, mem, room, libc::EIO)
        } else {
            let (reply, writable) = (&self.reply, &self.writable);
            scatter(name, mem, writable, reply)
        };
        if self.reply.capacity() > MAX_KEPT_REPLY {
            self.reply = Vec::new();
        }
        written
    }

    /// Answers the request in `self.request` with `-errno`, when the driver waits for an
    /// answer, the unique id was read and the chain has room for it.
    fn error_reply(
        &self,
        name: &str,
        kind: QueueKind,
        mem: &GuestMemory,
        room: usize,
        errno: i32,
    ) -> u32 {
        let (Some(opcode), Some(unique)) = (self.request.get(4..8), self.request.get(8..16)) else {
            return 0;
        };
        let opcode = u32::from_le_bytes(opcode.try_into().unwrap_or_default());
        if kind == QueueKind::Hiprio
            || opcode == FUSE_FORGET
            || opcode == FUSE_BATCH_FORGET
            || room < FUSE_OUT_HEADER_LEN
        {
            return 0;
        }
        let mut header = [0u8; FUSE_OUT_HEADER_LEN];
        header[..4].copy_from_slice(&(FUSE_OUT_HEADER_LEN as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(-errno).to_le_bytes());
        header[8..].copy_from_slice(unique);
        scatter(name, mem, &self.writable, &header)
    }
}

/// Writes `data` into the `writable` buffers in order; returns the bytes written (fewer
/// than `data.len()` only when a buffer is outside guest memory).
fn scatter(name: &str, mem: &GuestMemory, writable: &[(GuestAddress, usize)], data: &[u8]) -> u32 {
    let mut done = 0usize;
    for &(addr, len) in writable {
        if done == data.len() {
            break;
        }
        let n = len.min(data.len() - done);
        if let Err(e) = mem.write_slice(&data[done..done + n], addr) {
            tracing::debug!("{name}: unwritable reply descriptor: {e}");
            break;
        }
        done += n;
    }
    // The chain iterator caps a chain at 4 GiB, and `data` fits the chain.
    u32::try_from(done).unwrap_or(u32::MAX)
}
