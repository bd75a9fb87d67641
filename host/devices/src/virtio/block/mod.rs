//! virtio-blk on a raw image file, read-only or read-write, or on read-only files laid end
//! to end (virtio 1.2, section 5.2).
//!
//! Requests are served synchronously when the guest notifies the queue. Supported:
//! `IN`, `OUT`, `FLUSH`, `GET_ID`; anything else is answered `UNSUPP`. A read-only disk
//! offers `VIRTIO_BLK_F_RO` and fails writes with `IOERR`. Image sizes that are not a whole
//! number of 512-byte sectors are rejected when the device is created.

mod image;
mod request;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::Queue;

use super::queue::SingleQueue;
use super::{
    device_type, read_config_bytes, ActivateError, VirtioDevice, VirtioInterrupt,
    VIRTIO_F_VERSION_1,
};
use crate::GuestMemory;
use image::DiskImage;

/// Bytes per sector, the unit of `capacity` and of request offsets.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered to the driver.
const QUEUE_SIZE: u16 = 256;
/// `VIRTIO_BLK_F_RO`: the disk is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// `VIRTIO_BLK_F_FLUSH`: the device understands `FLUSH`.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// Length of the `GET_ID` answer.
pub const ID_BYTES: usize = 20;

/// Why a disk could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// cannot open disk image {path}: {source}
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// disk image {path} is {size} bytes, not a whole number of 512-byte sectors: pad or truncate it (for example `truncate -s %512 FILE`)
    #[error(
        "disk image {path} is {size} bytes, not a whole number of 512-byte sectors: \
         pad or truncate it (for example `truncate -s %512 FILE`)"
    )]
    UnalignedSize {
        /// The image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// disk image {path} is not a regular file or block device
    #[error("disk image {path} is not a regular file or block device")]
    NotAFile {
        /// The image.
        path: PathBuf,
    },
    /// a disk needs at least one image file
    #[error("a disk needs at least one image file")]
    NoImage,
    /// the disk of {path} and further files can only be read-only: several files make one disk only for reading
    #[error(
        "the disk of {path} and further files can only be read-only: several files make \
         one disk only for reading"
    )]
    WritableConcatenation {
        /// The first image.
        path: PathBuf,
    },
}

/// A virtio-blk device on one image file, or on read-only files laid end to end.
pub struct Block {
    image: DiskImage,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_BYTES],
    config: [u8; 8],
    active: Option<SingleQueue>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("read_only", &self.read_only)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Block {
    /// Opens `path` as a disk; `read_only` opens it without write access. `id` is what
    /// `GET_ID` returns (at most 20 bytes are used; the guest sees it in
    /// `/sys/block/vdX/serial`).
    pub fn new(path: &Path, read_only: bool, id: &str) -> Result<Self, BlockError> {
        Self::concatenated(&[path.to_path_buf()], read_only, id)
    }

    /// Opens `paths` as one disk holding each file in turn, from byte 0 of the first:
    /// file `k` starts where file `k - 1` ends. Several files make a read-only disk only.
    pub fn concatenated(paths: &[PathBuf], read_only: bool, id: &str) -> Result<Self, BlockError> {
        let image = DiskImage::open(paths, read_only)?;
        let mut id_bytes = [0u8; ID_BYTES];
        for (d, s) in id_bytes.iter_mut().zip(id.bytes()) {
            *d = s;
        }
        let capacity = image.len() / SECTOR_SIZE;
        Ok(Self {
            image,
            read_only,
            capacity,
            id: id_bytes,
            config: capacity.to_le_bytes(),
            active: None,
        })
    }

    /// Size of the disk in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Serves every request available on the queue.
    fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let disk = request::Disk {
            image: &self.image,
            read_only: self.read_only,
            capacity: self.capacity,
            id: &self.id,
        };
        active.serve(
            "virtio-blk",
            |chain, mem, interrupt| match request::execute(&disk, mem, chain) {
                Ok(len) => len,
                Err(e) => {
                    tracing::warn!("virtio-blk: request cannot be answered: {e}");
                    interrupt.set_needs_reset();
                    0
                }
            },
        );
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH;
        if self.read_only {
            f |= VIRTIO_BLK_F_RO;
        }
        f
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        tracing::debug!(
            offset,
            "virtio-blk: config space is read-only; write ignored"
        );
    }

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
        if index != 0 {
            tracing::debug!(index, "virtio-blk: notify for a queue that does not exist");
            return;
        }
        self.process_queue();
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests;
