//! The [`FileSystem`] trait that host backends implement, and the plain types its
//! methods take and return. Inodes and handles are opaque `u64`s the backend hands out;
//! names are raw bytes the server has already checked for a NUL terminator (the backend
//! validates them further). Every method has a default that fails with ENOSYS, so a
//! backend implements only what it supports.

use std::io;
use std::time::Duration;

use crate::abi::{self, errno, put_u32, put_u64};

/// Who sent a request, from its `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    /// The caller's uid in the guest.
    pub uid: u32,
    /// The caller's gid in the guest.
    pub gid: u32,
    /// The caller's pid in the guest.
    pub pid: u32,
}

/// File attributes, as `fuse_attr` carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    /// File type and permission bits, Linux encoding (`S_IFREG | 0o644`).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attr {
    /// Encodes `fuse_attr`.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.ino);
        put_u64(out, self.size);
        put_u64(out, self.blocks);
        put_u64(out, self.atime);
        put_u64(out, self.mtime);
        put_u64(out, self.ctime);
        put_u32(out, self.atimensec);
        put_u32(out, self.mtimensec);
        put_u32(out, self.ctimensec);
        put_u32(out, self.mode);
        put_u32(out, self.nlink);
        put_u32(out, self.uid);
        put_u32(out, self.gid);
        put_u32(out, self.rdev);
        put_u32(out, self.blksize);
        put_u32(out, 0); // flags
    }

    /// Encodes `fuse_attr_out`.
    pub fn write_attr_out(&self, timeout: Duration, out: &mut Vec<u8>) {
        put_u64(out, timeout.as_secs());
        put_u32(out, timeout.subsec_nanos());
        put_u32(out, 0);
        self.write(out);
    }
}

/// A looked-up inode: the reply to LOOKUP, MKDIR, CREATE and the like. Each one returned
/// counts one lookup the guest later FORGETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// The node id the guest uses for it from now on.
    pub inode: u64,
    /// The inode's generation.
    pub generation: u64,
    /// Its attributes.
    pub attr: Attr,
    /// How long the guest may cache the attributes.
    pub attr_timeout: Duration,
    /// How long the guest may cache the name.
    pub entry_timeout: Duration,
}

impl Entry {
    /// Encodes `fuse_entry_out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.inode);
        put_u64(out, self.generation);
        put_u64(out, self.entry_timeout.as_secs());
        put_u64(out, self.attr_timeout.as_secs());
        put_u32(out, self.entry_timeout.subsec_nanos());
        put_u32(out, self.attr_timeout.subsec_nanos());
        self.attr.write(out);
    }
}

/// One directory entry as READDIR lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The inode number (informational; READDIRPLUS carries the node id in its entry).
    pub ino: u64,
    /// The offset of the next entry: the cookie the guest passes to continue after it.
    pub offset: u64,
    /// The `DT_*` type.
    pub type_: u32,
    /// The name.
    pub name: &'a [u8],
}

/// Where a backend's READDIR/READDIRPLUS entries go: it encodes them and stops at the
/// size the guest asked for.
#[derive(Debug)]
pub struct DirSink<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    limit: usize,
    plus: bool,
}

impl<'a> DirSink<'a> {
    /// A sink that appends at most `limit` bytes of entries to `out`.
    pub fn new(out: &'a mut Vec<u8>, limit: usize, plus: bool) -> Self {
        let start = out.len();
        Self {
            out,
            start,
            limit,
            plus,
        }
    }

    /// Whether this is READDIRPLUS: each entry (but `.` and `..`) comes with an
    /// [`Entry`], which counts as a lookup.
    pub fn plus(&self) -> bool {
        self.plus
    }

    /// Whether an entry with a name of `name_len` bytes still fits. A READDIRPLUS backend
    /// asks before it looks the entry up, so no lookup is counted for an entry that is
    /// then left out.
    pub fn fits(&self, name_len: usize) -> bool {
        let mut len = abi::dirent_align(abi::DIRENT_LEN + name_len);
        if self.plus {
            len += abi::ENTRY_OUT_LEN;
        }
        self.out.len() - self.start + len <= self.limit
    }

    /// Whether nothing has been added yet.
    pub fn is_empty(&self) -> bool {
        self.out.len() == self.start
    }

    /// Adds an entry; `entry` is the READDIRPLUS lookup (`None`: a zeroed entry, which
    /// the guest does not count, as for `.` and `..`). Returns false, adding nothing, if
    /// it does not fit.
    pub fn add(&mut self, dirent: DirEntry<'_>, entry: Option<&Entry>) -> bool {
        if !self.fits(dirent.name.len()) {
            return false;
        }
        if self.plus {
            match entry {
                Some(e) => e.write(self.out),
                None => self.out.extend_from_slice(&[0u8; abi::ENTRY_OUT_LEN]),
            }
        }
        put_u64(self.out, dirent.ino);
        put_u64(self.out, dirent.offset);
        put_u32(self.out, dirent.name.len() as u32);
        put_u32(self.out, dirent.type_);
        self.out.extend_from_slice(dirent.name);
        let pad = abi::dirent_align(dirent.name.len()) - dirent.name.len();
        self.out.extend_from_slice(&[0u8; 8][..pad]);
        true
    }
}

/// What a successful OPEN, OPENDIR or CREATE hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    /// The handle later requests name.
    pub handle: u64,
    /// `FOPEN_*` flags for the guest.
    pub open_flags: u32,
}

/// A new timestamp for SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The host's current time.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At {
        /// Seconds.
        secs: u64,
        /// Nanoseconds.
        nsecs: u32,
    },
}

/// What SETATTR changes; `None` fields stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    /// New permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

impl SetAttr {
    /// Whether it changes anything at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Filesystem statistics for STATFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl StatFs {
    /// Encodes `fuse_statfs_out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.blocks);
        put_u64(out, self.bfree);
        put_u64(out, self.bavail);
        put_u64(out, self.files);
        put_u64(out, self.ffree);
        put_u32(out, self.bsize);
        put_u32(out, self.namelen);
        put_u32(out, self.frsize);
        put_u32(out, 0);
        out.extend_from_slice(&[0u8; 24]);
    }
}

/// An `io::Error` carrying a Linux errno.
pub fn linux_error(errno: i32) -> io::Error {
    #[cfg(target_os = "linux")]
    {
        io::Error::from_raw_os_error(errno)
    }
    #[cfg(not(target_os = "linux"))]
    {
        io::Error::other(LinuxErrno(errno))
    }
}

/// A Linux errno wrapped as an error on hosts whose own errnos differ.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("errno {0}")]
pub struct LinuxErrno(pub i32);

/// The Linux errno to reply with for `e`.
pub fn to_errno(e: &io::Error) -> i32 {
    #[cfg(target_os = "linux")]
    if let Some(code) = e.raw_os_error() {
        return if code > 0 && code < 4096 {
            code
        } else {
            errno::EIO
        };
    }
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<LinuxErrno>()) {
        return inner.0;
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => errno::ENOENT,
        K::PermissionDenied => errno::EACCES,
        K::AlreadyExists => errno::EEXIST,
        K::InvalidInput | K::InvalidData => errno::EINVAL,
        K::WouldBlock => errno::EAGAIN,
        K::Interrupted => errno::EINTR,
        K::OutOfMemory => errno::ENOMEM,
        K::Unsupported => errno::EOPNOTSUPP,
        K::TimedOut => errno::ETIMEDOUT,
        _ => errno::EIO,
    }
}

fn enosys<T>() -> io::Result<T> {
    Err(linux_error(errno::ENOSYS))
}

/// A host filesystem that FUSE requests run against. Inode [`abi::ROOT_ID`] is the root
/// of the share and exists from the start. Methods may run concurrently from several
/// queue workers.
#[allow(unused_variables)]
pub trait FileSystem: Send + Sync {
    /// INIT: the guest connected.
    fn init(&self) -> io::Result<()> {
        Ok(())
    }

    /// DESTROY: the guest unmounted; forget every inode and handle but the root.
    fn destroy(&self) {}

    /// LOOKUP `name` in `parent`; counts one lookup.
    fn lookup(&self, ctx: &Context, parent: u64, name: &[u8]) -> io::Result<Entry> {
        enosys()
    }

    /// FORGET: drop `nlookup` lookups of `inode`. Unknown inodes are ignored.
    fn forget(&self, inode: u64, nlookup: u64) {}

    /// BATCH_FORGET.
    fn batch_forget(&self, requests: &[(u64, u64)]) {
        for &(inode, nlookup) in requests {
            self.forget(inode, nlookup);
        }
    }

    /// GETATTR, through `handle` when given.
    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(Attr, Duration)> {
        enosys()
    }

    /// SETATTR, through `handle` when given.
    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
        attr: &SetAttr,
    ) -> io::Result<(Attr, Duration)> {
        enosys()
    }

    /// READLINK: the link's target bytes.
    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        enosys()
    }

    /// SYMLINK: creates `name` in `parent` pointing at `target`.
    fn symlink(&self, ctx: &Context, target: &[u8], parent: u64, name: &[u8]) -> io::Result<Entry> {
        enosys()
    }

    /// MKNOD with Linux `mode` (type and permission bits) and `rdev`.
    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        enosys()
    }

    /// MKDIR.
    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        enosys()
    }

    /// UNLINK.
    fn unlink(&self, ctx: &Context, parent: u64, name: &[u8]) -> io::Result<()> {
        enosys()
    }

    /// RMDIR.
    fn rmdir(&self, ctx: &Context, parent: u64, name: &[u8]) -> io::Result<()> {
        enosys()
    }

    /// RENAME / RENAME2 with Linux `RENAME_*` flags (0 for plain RENAME).
    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &[u8],
        newdir: u64,
        newname: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        enosys()
    }

    /// LINK: a new name `newname` in `newparent` for `inode`; counts one lookup.
    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &[u8]) -> io::Result<Entry> {
        enosys()
    }

    /// OPEN with Linux `open(2)` flags.
    fn open(&self, ctx: &Context, inode: u64, flags: u32) -> io::Result<Opened> {
        enosys()
    }

    /// READ: appends at most `size` bytes read at `offset` to `out`.
    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        enosys()
    }

    /// WRITE: writes `data` at `offset`; returns the bytes written.
    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        data: &[u8],
    ) -> io::Result<usize> {
        enosys()
    }

    /// STATFS.
    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<StatFs> {
        enosys()
    }

    /// RELEASE: the handle is closed.
    fn release(&self, ctx: &Context, inode: u64, handle: u64) -> io::Result<()> {
        enosys()
    }

    /// FSYNC.
    fn fsync(&self, ctx: &Context, inode: u64, handle: u64, datasync: bool) -> io::Result<()> {
        enosys()
    }

    /// FLUSH (on every close of a guest file descriptor).
    fn flush(&self, ctx: &Context, inode: u64, handle: u64) -> io::Result<()> {
        enosys()
    }

    /// OPENDIR.
    fn opendir(&self, ctx: &Context, inode: u64, flags: u32) -> io::Result<Opened> {
        enosys()
    }

    /// READDIR / READDIRPLUS ([`DirSink::plus`]): adds entries after the cookie `offset`
    /// until the sink is full or the directory ends.
    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        sink: &mut DirSink<'_>,
    ) -> io::Result<()> {
        enosys()
    }

    /// RELEASEDIR.
    fn releasedir(&self, ctx: &Context, inode: u64, handle: u64) -> io::Result<()> {
        enosys()
    }

    /// FSYNCDIR.
    fn fsyncdir(&self, ctx: &Context, inode: u64, handle: u64, datasync: bool) -> io::Result<()> {
        enosys()
    }

    /// ACCESS with an `access(2)` mask.
    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        enosys()
    }

    /// CREATE: creates and opens `name`; counts one lookup.
    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Opened)> {
        enosys()
    }

    /// FALLOCATE with Linux `fallocate(2)` mode.
    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        enosys()
    }

    /// LSEEK (SEEK_DATA / SEEK_HOLE in practice); returns the new offset.
    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        enosys()
    }

    /// GETXATTR: with `size` 0, the value's length; else the value (at most `size`).
    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &[u8],
        size: u32,
    ) -> io::Result<XattrReply> {
        enosys()
    }

    /// LISTXATTR, as GETXATTR.
    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<XattrReply> {
        enosys()
    }

    /// SETXATTR.
    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        enosys()
    }

    /// REMOVEXATTR.
    fn removexattr(&self, ctx: &Context, inode: u64, name: &[u8]) -> io::Result<()> {
        enosys()
    }

    /// COPY_FILE_RANGE between two open handles; returns the bytes copied.
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: &Context,
        inode_in: u64,
        handle_in: u64,
        offset_in: u64,
        inode_out: u64,
        handle_out: u64,
        offset_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        enosys()
    }
}

/// The reply to GETXATTR / LISTXATTR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The size the value needs (the guest asked with size 0).
    Size(u32),
    /// The value.
    Value(Vec<u8>),
}
