//! The FUSE wire protocol (7.31): opcodes, flags, the structs a guest sends and the
//! replies it reads, with little-endian encoding and bounds-checked decoding. Nothing
//! here trusts a length the guest wrote: every read goes through [`Reader`], which
//! fails with a [`DecodeError`] instead of reading past the buffer.

use thiserror::Error;

/// The protocol major version the server speaks.
pub const KERNEL_VERSION: u32 = 7;
/// The highest protocol minor version the server speaks.
pub const KERNEL_MINOR_VERSION: u32 = 31;
/// The node id of the share's root.
pub const ROOT_ID: u64 = 1;

/// Size of `fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// Size of `fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;
/// Size of `fuse_attr`.
pub const ATTR_LEN: usize = 88;
/// Size of `fuse_entry_out`.
pub const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;
/// Size of `fuse_dirent` without its name.
pub const DIRENT_LEN: usize = 24;

/// FUSE opcodes.
#[allow(missing_docs)]
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const NOTIFY_REPLY: u32 = 41;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SETUPMAPPING: u32 = 48;
    pub const REMOVEMAPPING: u32 = 49;
}

/// INIT flags (`fuse_init_in.flags` / `fuse_init_out.flags`).
#[allow(missing_docs)]
pub mod init_flags {
    pub const ASYNC_READ: u32 = 1 << 0;
    pub const POSIX_LOCKS: u32 = 1 << 1;
    pub const ATOMIC_O_TRUNC: u32 = 1 << 3;
    pub const EXPORT_SUPPORT: u32 = 1 << 4;
    pub const BIG_WRITES: u32 = 1 << 5;
    pub const DONT_MASK: u32 = 1 << 6;
    pub const AUTO_INVAL_DATA: u32 = 1 << 12;
    pub const DO_READDIRPLUS: u32 = 1 << 13;
    pub const READDIRPLUS_AUTO: u32 = 1 << 14;
    pub const WRITEBACK_CACHE: u32 = 1 << 16;
    pub const PARALLEL_DIROPS: u32 = 1 << 18;
    pub const MAX_PAGES: u32 = 1 << 22;
    pub const MAP_ALIGNMENT: u32 = 1 << 26;
}

/// SETATTR `valid` bits.
#[allow(missing_docs)]
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const LOCKOWNER: u32 = 1 << 9;
    pub const CTIME: u32 = 1 << 10;
}

/// `fuse_getattr_in.getattr_flags`: the `fh` field is valid.
pub const GETATTR_FH: u32 = 1;
/// `fuse_open_out.open_flags`: bypass the page cache.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// `fuse_open_out.open_flags`: keep cached data on open.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;

/// Linux errno values, as the guest reads them (the server speaks Linux errnos on every
/// host).
#[allow(missing_docs)]
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const ELOOP: i32 = 40;
    pub const ENODATA: i32 = 61;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ETIMEDOUT: i32 = 110;
}

/// Why a request could not be decoded; every variant is answered with EINVAL.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended before a field.
    #[error("message too short: needed {needed} more bytes, {left} left")]
    Short {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message.
        left: usize,
    },
    /// A name or path lacks its NUL terminator.
    #[error("string without NUL terminator")]
    Unterminated,
    /// The header's length field disagrees with the message.
    #[error("header length {header} but message has {actual} bytes")]
    BadLength {
        /// What the header says.
        header: u32,
        /// What the buffer holds.
        actual: usize,
    },
}

/// A bounds-checked little-endian cursor over guest bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Short {
                needed: n,
                left: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let pos = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Unterminated)?;
        let s = &self.buf[..pos];
        self.buf = &self.buf[pos + 1..];
        Ok(s)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Length of the whole message.
    pub len: u32,
    /// The opcode.
    pub opcode: u32,
    /// The request id the reply carries back.
    pub unique: u64,
    /// The inode the request is about.
    pub nodeid: u64,
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// The caller's pid.
    pub pid: u32,
}

impl InHeader {
    /// Decodes a header.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let h = Self {
            len: r.u32()?,
            opcode: r.u32()?,
            unique: r.u64()?,
            nodeid: r.u64()?,
            uid: r.u32()?,
            gid: r.u32()?,
            pid: r.u32()?,
        };
        r.u32()?; // total_extlen + padding
        Ok(h)
    }

    /// Encodes a header (for clients and tests).
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.len);
        put_u32(out, self.opcode);
        put_u64(out, self.unique);
        put_u64(out, self.nodeid);
        put_u32(out, self.uid);
        put_u32(out, self.gid);
        put_u32(out, self.pid);
        put_u32(out, 0);
    }
}

/// Appends a little-endian u16.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian u32.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian u64.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Starts a reply at the end of `out`: writes an out-header whose length
/// [`finish_reply`] fills in later; returns where the reply starts.
pub fn begin_reply(out: &mut Vec<u8>, unique: u64) -> usize {
    let start = out.len();
    put_u32(out, 0);
    put_u32(out, 0);
    put_u64(out, unique);
    start
}

/// Fills in the length of the reply begun at `start`.
pub fn finish_reply(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Replaces whatever the reply begun at `start` holds with an error reply.
pub fn error_reply(out: &mut Vec<u8>, start: usize, unique: u64, errno: i32) {
    out.truncate(start);
    put_u32(out, OUT_HEADER_LEN as u32);
    put_u32(out, (-errno) as u32);
    put_u64(out, unique);
}

/// `fuse_init_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitIn {
    /// The guest's major version.
    pub major: u32,
    /// The guest's minor version.
    pub minor: u32,
    /// The guest's readahead.
    pub max_readahead: u32,
    /// What the guest supports.
    pub flags: u32,
}

impl InitIn {
    /// Decodes `fuse_init_in` (the 7.36 extension, if present, is ignored).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // Guests before 7.6 sent only major and minor.
        let major = r.u32()?;
        let minor = r.u32()?;
        if r.remaining() < 8 {
            return Ok(Self {
                major,
                minor,
                max_readahead: 0,
                flags: 0,
            });
        }
        Ok(Self {
            major,
            minor,
            max_readahead: r.u32()?,
            flags: r.u32()?,
        })
    }
}

/// `fuse_init_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitOut {
    /// The server's major version.
    pub major: u32,
    /// The negotiated minor version.
    pub minor: u32,
    /// Readahead.
    pub max_readahead: u32,
    /// Negotiated flags.
    pub flags: u32,
    /// Background requests the guest may queue.
    pub max_background: u16,
    /// Congestion threshold.
    pub congestion_threshold: u16,
    /// Largest WRITE.
    pub max_write: u32,
    /// Timestamp granularity in ns.
    pub time_gran: u32,
    /// Largest request in pages.
    pub max_pages: u16,
}

impl InitOut {
    /// Encodes it; guests older than 7.23 get the shorter struct they know.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.major);
        put_u32(out, self.minor);
        put_u32(out, self.max_readahead);
        put_u32(out, self.flags);
        put_u16(out, self.max_background);
        put_u16(out, self.congestion_threshold);
        put_u32(out, self.max_write);
        if self.minor < 23 {
            return;
        }
        put_u32(out, self.time_gran);
        put_u16(out, self.max_pages);
        put_u16(out, 0); // map_alignment
        put_u32(out, 0); // flags2
        out.extend_from_slice(&[0u8; 28]);
    }
}

/// `fuse_setattr_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct SetattrIn {
    pub valid: u32,
    pub fh: u64,
    pub size: u64,
    pub lock_owner: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl SetattrIn {
    /// Decodes it.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let valid = r.u32()?;
        r.u32()?;
        let fh = r.u64()?;
        let size = r.u64()?;
        let lock_owner = r.u64()?;
        let atime = r.u64()?;
        let mtime = r.u64()?;
        let ctime = r.u64()?;
        let atimensec = r.u32()?;
        let mtimensec = r.u32()?;
        let ctimensec = r.u32()?;
        let mode = r.u32()?;
        r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        r.u32()?;
        Ok(Self {
            valid,
            fh,
            size,
            lock_owner,
            atime,
            mtime,
            ctime,
            atimensec,
            mtimensec,
            ctimensec,
            mode,
            uid,
            gid,
        })
    }

    /// Encodes it (for clients and tests).
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.valid);
        put_u32(out, 0);
        put_u64(out, self.fh);
        put_u64(out, self.size);
        put_u64(out, self.lock_owner);
        put_u64(out, self.atime);
        put_u64(out, self.mtime);
        put_u64(out, self.ctime);
        put_u32(out, self.atimensec);
        put_u32(out, self.mtimensec);
        put_u32(out, self.ctimensec);
        put_u32(out, self.mode);
        put_u32(out, 0);
        put_u32(out, self.uid);
        put_u32(out, self.gid);
        put_u32(out, 0);
    }
}

/// `fuse_read_in` and `fuse_write_in` share a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct ReadWriteIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub rw_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
}

impl ReadWriteIn {
    /// Decodes it.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = Self {
            fh: r.u64()?,
            offset: r.u64()?,
            size: r.u32()?,
            rw_flags: r.u32()?,
            lock_owner: r.u64()?,
            flags: r.u32()?,
        };
        r.u32()?;
        Ok(v)
    }

    /// Encodes it (for clients and tests).
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.fh);
        put_u64(out, self.offset);
        put_u32(out, self.size);
        put_u32(out, self.rw_flags);
        put_u64(out, self.lock_owner);
        put_u32(out, self.flags);
        put_u32(out, 0);
    }
}

/// Rounds a dirent length up to the 8-byte alignment FUSE uses.
pub fn dirent_align(len: usize) -> usize {
    (len + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(&[1, 0, 5]);
        assert!(r.u32().is_err());
        assert_eq!(r.u16(), Ok(1));
        assert!(r.cstr().is_err());
        let mut r = Reader::new(b"ab\0cd");
        assert_eq!(r.cstr(), Ok(&b"ab"[..]));
        assert_eq!(r.rest(), b"cd");
        assert!(r.bytes(1).is_err());
    }

    #[test]
    fn header_round_trip() {
        let h = InHeader {
            len: 40,
            opcode: 3,
            unique: 9,
            nodeid: 1,
            uid: 2,
            gid: 3,
            pid: 4,
        };
        let mut b = Vec::new();
        h.write(&mut b);
        assert_eq!(b.len(), IN_HEADER_LEN);
        assert_eq!(InHeader::read(&mut Reader::new(&b)), Ok(h));
    }
}
