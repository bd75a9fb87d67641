//! The queue of a single-queue device (virtio-blk, virtio-rng) once the driver started it
//! (or one of the queues of a device that serves each queue on its own, as virtio-fs does),
//! and the one loop that serves it: bounded, marking the device as needing a reset when the
//! guest broke its rings, returning chains used and interrupting the guest once.

use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::{ActivateError, VirtioInterrupt};
use crate::GuestMemory;

/// A descriptor chain of the guest's memory.
pub(crate) type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// The started queue of a single-queue device.
pub(crate) struct SingleQueue {
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    queue: Queue,
}

impl SingleQueue {
    /// Takes the one queue the driver set up; any other count is refused.
    pub(crate) fn activate(
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<Self, ActivateError> {
        let got = queues.len();
        let Some(queue) = queues.into_iter().next().filter(|_| got == 1) else {
            return Err(ActivateError::QueueCount { want: 1, got });
        };
        Ok(Self::new(mem, interrupt, queue))
    }

    /// One started queue of a device.
    pub(crate) fn new(mem: GuestMemory, interrupt: Arc<VirtioInterrupt>, queue: Queue) -> Self {
        Self {
            mem,
            interrupt,
            queue,
        }
    }

    /// Serves every available chain with `serve`, which returns how many bytes it wrote
    /// into the chain (and may mark the device as needing a reset). `device` names the
    /// device in logs.
    pub(crate) fn serve(
        &mut self,
        device: &str,
        mut serve: impl FnMut(Chain<'_>, &GuestMemory, &VirtioInterrupt) -> u32,
    ) {
        let mut used_any = false;
        // The avail ring holds at most `size` new entries (virtio-queue checks the index);
        // the bound keeps a guest that refills the ring concurrently from pinning us here.
        for _ in 0..usize::from(self.queue.size()) * 2 {
            let chain = match self.queue.iter(&self.mem) {
                Ok(mut it) => match it.next() {
                    Some(chain) => chain,
                    None => break,
                },
                Err(e) => {
                    tracing::warn!("{device}: broken available ring: {e}");
                    self.interrupt.set_needs_reset();
                    break;
                }
            };
            let head = chain.head_index();
            let len = serve(chain, &self.mem, &self.interrupt);
            if let Err(e) = self.queue.add_used(&self.mem, head, len) {
                tracing::warn!("{device}: cannot fill the used ring: {e}");
                self.interrupt.set_needs_reset();
                break;
            }
            used_any = true;
        }
        if used_any && self.queue.needs_notification(&self.mem).unwrap_or(true) {
            if let Err(e) = self.interrupt.signal_used_queue() {
                tracing::warn!("{device}: cannot raise the interrupt: {e}");
            }
        }
    }
}
