//! What a virtio-blk disk reads and writes: one image file, or several read-only image
//! files laid end to end (an image's layers on one disk, each found by its byte range).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{BlockError, SECTOR_SIZE};
use crate::fileio;

/// One file of a disk, at `start` bytes into it.
#[derive(Debug)]
struct Part {
    file: File,
    start: u64,
    len: u64,
}

/// The bytes of a disk: its files in order, each a whole number of sectors.
#[derive(Debug)]
pub(super) struct DiskImage {
    parts: Vec<Part>,
    len: u64,
}

impl DiskImage {
    /// Opens `paths` in order as one disk. Several files make a read-only disk only.
    pub(super) fn open(paths: &[PathBuf], read_only: bool) -> Result<Self, BlockError> {
        if paths.is_empty() {
            return Err(BlockError::NoImage);
        }
        if paths.len() > 1 && !read_only {
            return Err(BlockError::WritableConcatenation {
                path: paths[0].clone(),
            });
        }
        let mut parts = Vec::with_capacity(paths.len());
        let mut start = 0u64;
        for path in paths {
            let (file, len) = open_part(path, read_only)?;
            parts.push(Part { file, start, len });
            start = start
                .checked_add(len)
                .ok_or_else(|| BlockError::NotAFile { path: path.clone() })?;
        }
        Ok(Self { parts, len: start })
    }

    /// Size in bytes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from `offset`, across files where the range spans several. The caller
    /// keeps the range inside the disk.
    pub(super) fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        // Each step consumes at least one byte and moves to the next file, so this ends
        // after at most `parts.len()` steps.
        while !buf.is_empty() {
            let part = self.part_at(offset)?;
            let within = offset - part.start;
            let n = usize::try_from(part.len - within)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let (now, rest) = buf.split_at_mut(n);
            fileio::read_exact_at(&part.file, now, within)?;
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    /// Writes `buf` at `offset`; only a one-file disk is ever writable.
    pub(super) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.parts.as_slice() {
            [one] => fileio::write_all_at(&one.file, buf, offset),
            _ => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        }
    }

    /// Flushes every file's data to its storage.
    pub(super) fn sync_data(&self) -> io::Result<()> {
        self.parts.iter().try_for_each(|p| p.file.sync_data())
    }

    fn part_at(&self, offset: u64) -> io::Result<&Part> {
        let i = self.parts.partition_point(|p| p.start + p.len <= offset);
        self.parts
            .get(i)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

/// Opens one image and returns it with its size, checked to be whole sectors.
fn open_part(path: &Path, read_only: bool) -> Result<(File, u64), BlockError> {
    let open_err = |source| BlockError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    // A block device (/dev/...) as a disk is for Unix hosts only.
    #[cfg(unix)]
    let block_device = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
    #[cfg(not(unix))]
    let block_device = false;
    let size = if meta.is_file() {
        meta.len()
    } else if block_device {
        // Block devices report 0 in metadata: ask the device itself.
        use std::io::Seek;
        (&file).seek(io::SeekFrom::End(0)).map_err(open_err)?
    } else {
        return Err(BlockError::NotAFile {
            path: path.to_path_buf(),
        });
    };
    if size % SECTOR_SIZE != 0 {
        return Err(BlockError::UnalignedSize {
            path: path.to_path_buf(),
            size,
        });
    }
    Ok((file, size))
}
