//! virtio-rng: fills the guest's buffers with bytes from the host's random source
//! (`getrandom`), at most [`MAX_BYTES_PER_REQUEST`] per request.

use std::io::Write;
use std::sync::Arc;

use virtio_queue::Queue;

use super::queue::SingleQueue;
use super::{device_type, ActivateError, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::GuestMemory;

/// Queue size offered to the driver.
const QUEUE_SIZE: u16 = 64;
/// Largest answer to one request; the guest asks again for more.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// The entropy device.
#[derive(Default)]
pub struct Rng {
    active: Option<SingleQueue>,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rng")
            .field("active", &self.active.is_some())
            .finish()
    }
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Self::default()
    }

    fn process_queue(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; MAX_BYTES_PER_REQUEST];
        a.serve("virtio-rng", |chain, mem, _| {
            let written = match chain.writer(mem) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(MAX_BYTES_PER_REQUEST);
                    match getrandom::fill(&mut buf[..n]) {
                        Ok(()) => match w.write_all(&buf[..n]) {
                            Ok(()) => n,
                            Err(_) => w.bytes_written(),
                        },
                        Err(e) => {
                            tracing::warn!("virtio-rng: host random source failed: {e}");
                            0
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("virtio-rng: bad buffer: {e}");
                    0
                }
            };
            u32::try_from(written).unwrap_or(0)
        });
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        self.active = Some(SingleQueue::activate(mem, interrupt, queues)?);
        Ok(())
    }

    fn queue_notify(&mut self, index: u32) {
        if index == 0 {
            self.process_queue();
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests;
