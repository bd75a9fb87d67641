//! One virtio-blk request: parse the descriptor chain, do the I/O, write the status byte.
//!
//! The chain is read as a byte stream (any descriptor layout is accepted, as virtio 1.x
//! requires): the readable part starts with the 16-byte header (then the data of an `OUT`),
//! the writable part holds the data of an `IN` or `GET_ID` and ends with the status byte.

use std::io::{Read, Write};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes};

use super::image::DiskImage;
use super::SECTOR_SIZE;
use crate::GuestMemory;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;

const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Bytes moved between the image and guest memory per step.
const CHUNK: usize = 64 * 1024;

/// What a request needs to know about the disk.
pub(super) struct Disk<'a> {
    pub image: &'a DiskImage,
    pub read_only: bool,
    pub capacity: u64,
    pub id: &'a [u8; super::ID_BYTES],
}

/// A request the device cannot even answer with a status byte.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    /// the descriptor chain loops or is longer than the queue
    #[error("the descriptor chain loops or is longer than the queue")]
    Looping,
    /// the descriptor chain has no writable status byte inside guest memory
    #[error("the descriptor chain has no writable status byte inside guest memory")]
    NoStatus,
}

type Chain<'m> = DescriptorChain<&'m GuestMemory>;

/// Serves one request; returns the number of bytes written into the chain (the used length).
pub(super) fn execute(disk: &Disk, mem: &GuestMemory, chain: Chain) -> Result<u32, RequestError> {
    let descs: Vec<Descriptor> = chain.clone().collect();
    let Some(last) = descs.last().copied() else {
        return Err(RequestError::NoStatus);
    };
    if last.has_next() {
        // The iterator stopped on its time-to-live or on an unreadable descriptor.
        return Err(RequestError::Looping);
    }
    let (reader, writer) = match (chain.clone().reader(mem), chain.writer(mem)) {
        (Ok(r), Ok(w)) => (r, w),
        _ => {
            // Some buffer lies outside guest memory: fail the request if the status byte
            // (the last descriptor) is usable.
            tracing::debug!("virtio-blk: buffer outside guest memory");
            return status_only(mem, &last, VIRTIO_BLK_S_IOERR);
        }
    };
    let mut writer = writer;
    let data_len = writer
        .available_bytes()
        .checked_sub(1)
        .ok_or(RequestError::NoStatus)?;
    let mut status_writer = writer
        .split_at(data_len)
        .map_err(|_| RequestError::NoStatus)?;
    let mut reader = reader;
    let status = serve(disk, &mut reader, &mut writer);
    let written = writer.bytes_written();
    status_writer
        .write_all(&[status])
        .map_err(|_| RequestError::NoStatus)?;
    // `written` is bounded by the chain length, which virtio-queue caps below 2^32.
    Ok(u32::try_from(written + 1).unwrap_or(u32::MAX))
}

/// Writes `status` into the last descriptor when it can hold it.
fn status_only(mem: &GuestMemory, last: &Descriptor, status: u8) -> Result<u32, RequestError> {
    if !last.is_write_only() || last.len() == 0 {
        return Err(RequestError::NoStatus);
    }
    let addr = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .ok_or(RequestError::NoStatus)?;
    mem.write_obj(status, addr)
        .map_err(|_| RequestError::NoStatus)?;
    Ok(1)
}

/// Checks that `len` bytes at `sector` are a whole number of sectors inside the disk and
/// returns the byte offset.
fn disk_offset(disk: &Disk, sector: u64, len: usize) -> Option<u64> {
    let len = u64::try_from(len).ok()?;
    if len % SECTOR_SIZE != 0 {
        return None;
    }
    let start = sector.checked_mul(SECTOR_SIZE)?;
    let end = start.checked_add(len)?;
    (end <= disk.capacity.checked_mul(SECTOR_SIZE)?).then_some(start)
}

fn serve(
    disk: &Disk,
    reader: &mut virtio_queue::Reader<'_>,
    writer: &mut virtio_queue::Writer<'_>,
) -> u8 {
    let mut header = [0u8; 16];
    if reader.read_exact(&mut header).is_err() {
        tracing::debug!("virtio-blk: request header shorter than 16 bytes");
        return VIRTIO_BLK_S_IOERR;
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    let mut buf = vec![0u8; CHUNK];
    match kind {
        VIRTIO_BLK_T_IN => {
            let len = writer.available_bytes();
            let Some(mut offset) = disk_offset(disk, sector, len) else {
                tracing::debug!(sector, len, "virtio-blk: read outside the disk");
                return VIRTIO_BLK_S_IOERR;
            };
            let mut left = len;
            while left > 0 {
                let n = left.min(CHUNK);
                if disk.image.read_exact_at(&mut buf[..n], offset).is_err()
                    || writer.write_all(&buf[..n]).is_err()
                {
                    return VIRTIO_BLK_S_IOERR;
                }
                left -= n;
                offset += n as u64;
            }
            VIRTIO_BLK_S_OK
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only {
                return VIRTIO_BLK_S_IOERR;
            }
            let len = reader.available_bytes();
            let Some(mut offset) = disk_offset(disk, sector, len) else {
                tracing::debug!(sector, len, "virtio-blk: write outside the disk");
                return VIRTIO_BLK_S_IOERR;
            };
            let mut left = len;
            while left > 0 {
                let n = left.min(CHUNK);
                if reader.read_exact(&mut buf[..n]).is_err()
                    || disk.image.write_all_at(&buf[..n], offset).is_err()
                {
                    return VIRTIO_BLK_S_IOERR;
                }
                left -= n;
                offset += n as u64;
            }
            VIRTIO_BLK_S_OK
        }
        VIRTIO_BLK_T_FLUSH => {
            if disk.read_only || disk.image.sync_data().is_ok() {
                VIRTIO_BLK_S_OK
            } else {
                VIRTIO_BLK_S_IOERR
            }
        }
        VIRTIO_BLK_T_GET_ID => {
            let n = writer.available_bytes().min(disk.id.len());
            if writer.write_all(&disk.id[..n]).is_err() {
                return VIRTIO_BLK_S_IOERR;
            }
            VIRTIO_BLK_S_OK
        }
        _ => VIRTIO_BLK_S_UNSUPP,
    }
}
