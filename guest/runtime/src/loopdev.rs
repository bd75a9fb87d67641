//! Read-only loop devices on a byte range of a block device: how a layer that shares its
//! disk with the image's other layers becomes a block device of its own to mount.
//!
//! A device is configured with `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR`, so the kernel
//! detaches it when its last user goes: the mount on top of it, or this module's own file
//! handle when the mount fails. Nothing needs undoing by hand.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::{Result, RuntimeError};

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control` (linux/loop.h).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` on `/dev/loopN` (linux/loop.h, Linux 5.8).
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
/// How many times a free device may be taken by someone else before giving up.
const ATTEMPTS: usize = 16;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A configured loop device; the kernel detaches it once this and every mount of it
/// are gone.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    _file: File,
}

/// Attaches a read-only loop device to `length` bytes of `backing` from `offset`.
pub fn attach_range(backing: &Path, offset: u64, length: u64) -> Result<LoopDevice> {
    let source = File::open(backing).map_err(|e| RuntimeError::io("opening", backing, e))?;
    let control = Path::new("/dev/loop-control");
    let control_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)
        .map_err(|e| RuntimeError::io("opening", control, e))?;
    let mut last = Errno::EBUSY;
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control_file.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(RuntimeError::sys(
                "finding a free loop device",
                Errno::last(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| RuntimeError::io("opening", &path, e))?;
        let config = LoopConfig {
            fd: source.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: length,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid `struct loop_config` that outlives the call, and
        // the kernel only reads it.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r == 0 {
            return Ok(LoopDevice { path, _file: dev });
        }
        last = Errno::last();
        if last != Errno::EBUSY {
            break;
        }
        // Another thread configured the device first: take the next free one.
    }
    Err(RuntimeError::sys(
        format!(
            "attaching a loop device to {} bytes {offset}..{}",
            backing.display(),
            offset.saturating_add(length)
        ),
        last,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
