//! [`PassthroughFs`]: serves one host folder to a hostile guest, and nothing outside it
//! (Linux only).
//!
//! # Confinement
//!
//! The model is virtiofsd's. Every inode the guest knows holds an `O_PATH | O_NOFOLLOW`
//! descriptor; inodes are identified by `(st_dev, st_ino)` and deduplicated, and their
//! lookup counts follow LOOKUP (and every reply carrying an entry) and FORGET. Every
//! lookup, create, unlink, rename and link is an `*at()` call relative to a parent's
//! descriptor with one validated name: empty names, names with `/` or NUL, names over
//! 255 bytes and `.`/`..` are refused (`.`/`..` with ENOENT for lookups and EEXIST for
//! creation, everything else with EINVAL), so no
//! request can climb above the root. Symlinks are never followed on the host
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`): LOOKUP of a symlink gives the
//! link itself, READLINK hands its target bytes to the guest kernel, which resolves them
//! in its own namespace, and a symlink used as a parent fails with ENOTDIR. Opening for
//! I/O reopens the inode's descriptor through `/proc/self/fd/N` only after `fstat` shows
//! a regular file (OPEN) or a directory (OPENDIR): symlinks, device nodes, fifos and
//! sockets are never opened on the host. MKNOD creates regular files, fifos and sockets,
//! never device nodes. Hard links use `linkat` on `/proc/self/fd/N` with
//! `AT_SYMLINK_FOLLOW` (no `CAP_DAC_READ_SEARCH` needed), and both sides of a rename or
//! link are inodes from inside the share.
//!
//! A read-only share refuses every mutating request (SETATTR, MKNOD, MKDIR, UNLINK,
//! RMDIR, SYMLINK, RENAME, LINK, CREATE, OPEN for writing or with O_TRUNC, WRITE,
//! FALLOCATE, SETXATTR, REMOVEXATTR, COPY_FILE_RANGE) with EROFS itself, before any
//! system call.
//!
//! # Caps
//!
//! At most [`PassthroughOptions::max_handles`] open handles (EMFILE beyond) and
//! [`PassthroughOptions::max_inodes`] known inodes (ENFILE beyond); lookup counts
//! saturate. READ and WRITE sizes are capped at [`crate::MAX_WRITE`] by the server, and
//! READDIR replies by the request's size and `MAX_WRITE`.
//!
//! # Ownership
//!
//! When the process runs as root (effective uid 0), numeric ids pass through: a new file,
//! directory, node or symlink is created and then `fchownat`ed to the request header's
//! uid and gid (if that fails, the new entry is removed again and the error returned).
//! As an ordinary user, new entries belong to that user, and SETATTR chown to other ids
//! returns what the host returns (EPERM). Permission checks are the guest kernel's
//! (virtio-fs mounts with `default_permissions`); ACCESS checks the mode bits against the
//! request's uid and gid. The host's umask may strip bits from a new entry's mode; the
//! mode the guest asked for (already masked with the guest's umask) is restored with
//! `chmod`. Setuid and setgid bits pass through as Docker bind mounts pass them.
//!
//! Extended attributes are not supported: GETXATTR, LISTXATTR, SETXATTR and REMOVEXATTR
//! reply ENOSYS (EROFS for the mutating two on a read-only share).

mod sys;

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::debug;

use crate::abi::ROOT_ID;
use crate::filesystem::{
    Attr, Context, DirEntry, DirSink, Entry, FileSystem, Opened, SetAttr, SetTime, StatFs,
};

/// Options for a [`PassthroughFs`]; `PassthroughOptions::default()` then the setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassthroughOptions {
    /// Refuse every request that would change the share with EROFS.
    pub read_only: bool,
    /// The most handles (open files and directories) at once.
    pub max_handles: usize,
    /// The most inodes the guest may know at once (each holds a host descriptor).
    pub max_inodes: usize,
    /// How long the guest may cache entries and attributes.
    pub timeout: Duration,
}

impl Default for PassthroughOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            max_handles: 65536,
            max_inodes: 262_144,
            timeout: Duration::from_secs(1),
        }
    }
}

impl PassthroughOptions {
    /// Sets [`Self::read_only`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets [`Self::max_handles`].
    pub fn max_handles(mut self, n: usize) -> Self {
        self.max_handles = n;
        self
    }

    /// Sets [`Self::max_inodes`].
    pub fn max_inodes(mut self, n: usize) -> Self {
        self.max_inodes = n;
        self
    }

    /// Sets [`Self::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

type InodeKey = (u64, u64);

#[derive(Debug)]
struct Inode {
    /// `O_PATH | O_NOFOLLOW` descriptor of the inode itself.
    fd: OwnedFd,
    key: InodeKey,
    /// `st_mode & S_IFMT`, fixed for an inode's life.
    kind: u32,
}

#[derive(Debug, Default)]
struct InodeStore {
    by_id: HashMap<u64, (Arc<Inode>, u64)>,
    by_key: HashMap<InodeKey, u64>,
    next: u64,
}

#[derive(Debug)]
struct Handle {
    file: File,
    is_dir: bool,
    /// The inode a directory handle lists (READDIRPLUS looks names up in it).
    inode: Option<Arc<Inode>>,
    /// Serializes seek + getdents on a directory handle, and where its listing stands.
    dir_lock: Mutex<DirCursor>,
}

/// Where a directory handle's listing stands. A sequential READDIR goes on from the
/// entries getdents already returned, without a seek: on filesystems whose directory
/// offsets are positions in a list (tmpfs before Linux 6.6), seeking back to an offset
/// after entries were unlinked would skip others, and `rm -rf` would leave files behind.
#[derive(Debug, Default)]
struct DirCursor {
    /// The offset the next sequential READDIR asks for (the last entry replied).
    next: Option<u64>,
    /// Raw `linux_dirent64` records read but not yet replied.
    pending: Vec<u8>,
}

/// Serves one host folder to the guest, and nothing outside it.
#[derive(Debug)]
pub struct PassthroughFs {
    opts: PassthroughOptions,
    proc_self_fd: OwnedFd,
    inodes: Mutex<InodeStore>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    as_root: bool,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a single path component; `.` and `..` fail with `dots`.
fn check_name(name: &[u8], dots: i32) -> io::Result<std::ffi::CString> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(err(libc::EINVAL));
    }
    if name.len() > 255 {
        return Err(err(libc::ENAMETOOLONG));
    }
    if name == b"." || name == b".." {
        return Err(err(dots));
    }
    sys::cstring(name)
}

fn attr_from(st: &libc::stat) -> Attr {
    Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: st.st_atime as u64,
        mtime: st.st_mtime as u64,
        ctime: st.st_ctime as u64,
        atimensec: st.st_atime_nsec as u32,
        mtimensec: st.st_mtime_nsec as u32,
        ctimensec: st.st_ctime_nsec as u32,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
    }
}

fn offset(v: u64) -> io::Result<i64> {
    i64::try_from(v).map_err(|_| err(libc::EINVAL))
}

/// Linux open(2) flags a guest may pass through for an open file.
fn open_flags(flags: u32) -> i32 {
    let flags = flags as i32;
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_TRUNC
        | libc::O_NONBLOCK
        | libc::O_SYNC
        | libc::O_DSYNC;
    flags & keep
}

fn is_write(flags: u32) -> bool {
    let f = flags as i32;
    f & libc::O_ACCMODE != libc::O_RDONLY || f & libc::O_TRUNC != 0
}

fn times(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At { secs, nsecs }) => libc::timespec {
            tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(nsecs as i32),
        },
    }
}

impl PassthroughFs {
    /// Shares the folder `root`; with `read_only`, every request that would change it is
    /// refused with EROFS.
    pub fn new(root: &Path, read_only: bool) -> io::Result<Self> {
        Self::with_options(root, PassthroughOptions::default().read_only(read_only))
    }

    /// Shares the folder `root` with `opts`.
    pub fn with_options(root: &Path, opts: PassthroughOptions) -> io::Result<Self> {
        let root_c = sys::cstring(root.as_os_str().as_encoded_bytes())?;
        let cwd = libc_cwd();
        // The root path itself is the host's choice and may go through symlinks.
        let fd = sys::openat(cwd, &root_c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let proc_self_fd = sys::openat(cwd, c"/proc/self/fd", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let key = (st.st_dev, st.st_ino);
        let mut store = InodeStore {
            next: ROOT_ID + 1,
            ..Default::default()
        };
        store.by_id.insert(
            ROOT_ID,
            (
                Arc::new(Inode {
                    fd,
                    key,
                    kind: st.st_mode & libc::S_IFMT,
                }),
                1,
            ),
        );
        store.by_key.insert(key, ROOT_ID);
        Ok(Self {
            opts,
            proc_self_fd,
            inodes: Mutex::new(store),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            as_root: sys::geteuid() == 0,
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &PassthroughOptions {
        &self.opts
    }

    /// How many inodes the guest knows now (the root included).
    pub fn inode_count(&self) -> usize {
        lock(&self.inodes).by_id.len()
    }

    /// How many handles are open now.
    pub fn handle_count(&self) -> usize {
        lock(&self.handles).len()
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.opts.read_only {
            Err(err(libc::EROFS))
        } else {
            Ok(())
        }
    }

    fn inode(&self, id: u64) -> io::Result<Arc<Inode>> {
        lock(&self.inodes)
            .by_id
            .get(&id)
            .map(|(i, _)| i.clone())
            .ok_or_else(|| err(libc::ENOENT))
    }

    fn handle(&self, fh: u64) -> io::Result<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or_else(|| err(libc::EBADF))
    }

    fn dir_inode(&self, id: u64) -> io::Result<Arc<Inode>> {
        let inode = self.inode(id)?;
        if inode.kind != libc::S_IFDIR {
            return Err(err(libc::ENOTDIR));
        }
        Ok(inode)
    }

    /// `/proc/self/fd/N` of `fd`, as a name relative to `proc_self_fd`.
    fn proc_name(fd: BorrowedFd<'_>) -> std::ffi::CString {
        sys::fd_name(fd.as_raw_fd())
    }

    /// Reopens an inode's O_PATH descriptor for I/O.
    fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
        let fd = sys::openat(self.proc_self_fd.as_fd(), &Self::proc_name(fd), flags, 0)?;
        Ok(File::from(fd))
    }

    fn entry(&self, id: u64, st: &libc::stat) -> Entry {
        Entry {
            inode: id,
            generation: 0,
            attr: attr_from(st),
            attr_timeout: self.opts.timeout,
            entry_timeout: self.opts.timeout,
        }
    }

    /// Registers one lookup of the inode `fd` refers to (an O_PATH descriptor).
    fn register(&self, fd: OwnedFd) -> io::Result<Entry> {
        let st = sys::fstat(fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let mut store = lock(&self.inodes);
        if let Some(&id) = store.by_key.get(&key) {
            if let Some((_, refs)) = store.by_id.get_mut(&id) {
                *refs = refs.saturating_add(1);
                return Ok(self.entry(id, &st));
            }
        }
        if store.by_id.len() >= self.opts.max_inodes {
            debug!(max = self.opts.max_inodes, "inode limit reached");
            return Err(err(libc::ENFILE));
        }
        let id = store.next;
        store.next += 1;
        let inode = Arc::new(Inode {
            fd,
            key,
            kind: st.st_mode & libc::S_IFMT,
        });
        store.by_id.insert(id, (inode, 1));
        store.by_key.insert(key, id);
        Ok(self.entry(id, &st))
    }

    fn do_lookup(&self, parent: &Inode, name: &CStr) -> io::Result<Entry> {
        let fd = sys::openat(parent.fd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.register(fd)
    }

    /// Finishes a new entry `name` in `parent`: gives it the caller's ids when running
    /// as root, restores the mode the host's umask stripped, and registers it.
    fn finish_new(
        &self,
        ctx: &Context,
        parent: &Inode,
        name: &CStr,
        mode: Option<u32>,
        made: Option<&OwnedFd>,
    ) -> io::Result<Entry> {
        let result = (|| {
            let fd = match made {
                // The descriptor CREATE made, so the entry is the file it opened.
                Some(made) => sys::openat(
                    self.proc_self_fd.as_fd(),
                    &Self::proc_name(made.as_fd()),
                    libc::O_PATH,
                    0,
                )?,
                None => sys::openat(parent.fd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?,
            };
            if self.as_root {
                sys::fchown(fd.as_fd(), ctx.uid, ctx.gid)?;
            }
            let st = sys::fstat(fd.as_fd())?;
            let kind = st.st_mode & libc::S_IFMT;
            if let Some(want) = mode {
                let want = want & 0o7777;
                let have = st.st_mode & 0o7777;
                let sgid = if kind == libc::S_IFDIR {
                    have & libc::S_ISGID
                } else {
                    0
                };
                if kind != libc::S_IFLNK && have != want | sgid {
                    sys::fchmodat(
                        self.proc_self_fd.as_fd(),
                        &Self::proc_name(fd.as_fd()),
                        want | sgid,
                    )?;
                }
            }
            Ok((fd, kind))
        })();
        match result {
            Ok((fd, _)) => self.register(fd),
            Err(e) => {
                // Leave nothing half-made behind.
                let flags = if mode.is_some_and(|m| m & libc::S_IFMT == libc::S_IFDIR) {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                if let Err(e2) = sys::unlinkat(parent.fd.as_fd(), name, flags) {
                    debug!(%e2, "could not remove a half-made entry");
                }
                Err(e)
            }
        }
    }

    fn add_handle(&self, file: File, dir: Option<Arc<Inode>>) -> io::Result<u64> {
        let mut handles = lock(&self.handles);
        if handles.len() >= self.opts.max_handles {
            debug!(max = self.opts.max_handles, "handle limit reached");
            return Err(err(libc::EMFILE));
        }
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        handles.insert(
            fh,
            Arc::new(Handle {
                file,
                is_dir: dir.is_some(),
                inode: dir,
                dir_lock: Mutex::new(DirCursor::default()),
            }),
        );
        Ok(fh)
    }

    fn has_handle_room(&self) -> io::Result<()> {
        if lock(&self.handles).len() >= self.opts.max_handles {
            return Err(err(libc::EMFILE));
        }
        Ok(())
    }

    fn file_handle(&self, fh: u64) -> io::Result<Arc<Handle>> {
        let h = self.handle(fh)?;
        if h.is_dir {
            return Err(err(libc::EISDIR));
        }
        Ok(h)
    }

    fn stat_attr(&self, fd: BorrowedFd<'_>) -> io::Result<(Attr, Duration)> {
        Ok((attr_from(&sys::fstat(fd)?), self.opts.timeout))
    }
}

fn libc_cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a constant the *at() calls understand as "the current
    // directory"; it is never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

impl FileSystem for PassthroughFs {
    fn destroy(&self) {
        lock(&self.handles).clear();
        let mut store = lock(&self.inodes);
        store.by_id.retain(|&id, _| id == ROOT_ID);
        let root_key = store.by_id.get(&ROOT_ID).map(|(i, _)| i.key);
        store.by_key.retain(|k, _| Some(*k) == root_key);
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &[u8]) -> io::Result<Entry> {
        let name = check_name(name, libc::ENOENT)?;
        let parent = self.dir_inode(parent)?;
        self.do_lookup(&parent, &name)
    }

    fn forget(&self, inode: u64, nlookup: u64) {
        if inode == ROOT_ID {
            return;
        }
        let mut store = lock(&self.inodes);
        let Some((data, refs)) = store.by_id.get_mut(&inode) else {
            return;
        };
        *refs = refs.saturating_sub(nlookup);
        if *refs == 0 {
            let key = data.key;
            store.by_id.remove(&inode);
            if store.by_key.get(&key) == Some(&inode) {
                store.by_key.remove(&key);
            }
        }
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(Attr, Duration)> {
        if let Some(fh) = handle {
            if let Ok(h) = self.handle(fh) {
                return self.stat_attr(h.file.as_fd());
            }
        }
        let inode = self.inode(inode)?;
        self.stat_attr(inode.fd.as_fd())
    }

    fn setattr(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: Option<u64>,
        attr: &SetAttr,
    ) -> io::Result<(Attr, Duration)> {
        self.check_writable()?;
        let inode = self.inode(inode)?;
        let handle = match handle {
            Some(fh) => Some(self.file_handle(fh)?),
            None => None,
        };
        let fd = inode.fd.as_fd();
        let proc = Self::proc_name(fd);
        if let Some(mode) = attr.mode {
            let mode = mode & 0o7777;
            match &handle {
                Some(h) => sys::fchmod(h.file.as_fd(), mode)?,
                None if inode.kind == libc::S_IFLNK => return Err(err(libc::EOPNOTSUPP)),
                None => sys::fchmodat(self.proc_self_fd.as_fd(), &proc, mode)?,
            }
        }
        if attr.uid.is_some() || attr.gid.is_some() {
            sys::fchown(
                fd,
                attr.uid.unwrap_or(u32::MAX),
                attr.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(size) = attr.size {
            let size = offset(size)? as u64;
            match &handle {
                Some(h) => h.file.set_len(size)?,
                None if inode.kind == libc::S_IFREG => {
                    self.reopen(fd, libc::O_WRONLY)?.set_len(size)?;
                }
                None if inode.kind == libc::S_IFDIR => return Err(err(libc::EISDIR)),
                None => return Err(err(libc::EINVAL)),
            }
        }
        if attr.atime.is_some() || attr.mtime.is_some() {
            let ts = [times(attr.atime), times(attr.mtime)];
            match &handle {
                Some(h) => sys::futimens(h.file.as_fd(), &ts)?,
                None if inode.kind == libc::S_IFLNK => sys::utimensat(
                    fd,
                    sys::EMPTY,
                    &ts,
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )?,
                None => sys::utimensat(self.proc_self_fd.as_fd(), &proc, &ts, 0)?,
            }
        }
        self.stat_attr(fd)
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        let inode = self.inode(inode)?;
        if inode.kind != libc::S_IFLNK {
            return Err(err(libc::EINVAL));
        }
        sys::readlink(inode.fd.as_fd())
    }

    fn symlink(&self, ctx: &Context, target: &[u8], parent: u64, name: &[u8]) -> io::Result<Entry> {
        self.check_writable()?;
        let name = check_name(name, libc::EEXIST)?;
        if target.is_empty() || target.len() >= libc::PATH_MAX as usize {
            return Err(err(libc::ENAMETOOLONG));
        }
        let target = sys::cstring(target)?;
        let parent = self.dir_inode(parent)?;
        sys::symlinkat(&target, parent.fd.as_fd(), &name)?;
        self.finish_new(ctx, &parent, &name, None, None)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        mode: u32,
        _rdev: u32,
        _umask: u32,
    ) -> io::Result<Entry> {
        self.check_writable()?;
        let name = check_name(name, libc::EEXIST)?;
        let kind = mode & libc::S_IFMT;
        let kind = match kind {
            0 => libc::S_IFREG,
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => kind,
            // Device nodes would hand the guest the host's devices.
            _ => return Err(err(libc::EPERM)),
        };
        let parent = self.dir_inode(parent)?;
        sys::mknodat(parent.fd.as_fd(), &name, kind | (mode & 0o7777), 0)?;
        self.finish_new(ctx, &parent, &name, Some(mode), None)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        mode: u32,
        _umask: u32,
    ) -> io::Result<Entry> {
        self.check_writable()?;
        let name = check_name(name, libc::EEXIST)?;
        let parent = self.dir_inode(parent)?;
        sys::mkdirat(parent.fd.as_fd(), &name, mode & 0o7777)?;
        self.finish_new(
            ctx,
            &parent,
            &name,
            Some(libc::S_IFDIR | (mode & 0o7777)),
            None,
        )
    }

    fn unlink(&self, _ctx: &Context, parent: u64, name: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let name = check_name(name, libc::EINVAL)?;
        let parent = self.dir_inode(parent)?;
        sys::unlinkat(parent.fd.as_fd(), &name, 0)
    }

    fn rmdir(&self, _ctx: &Context, parent: u64, name: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let name = check_name(name, libc::EINVAL)?;
        let parent = self.dir_inode(parent)?;
        sys::unlinkat(parent.fd.as_fd(), &name, libc::AT_REMOVEDIR)
    }

    fn rename(
        &self,
        _ctx: &Context,
        olddir: u64,
        oldname: &[u8],
        newdir: u64,
        newname: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.check_writable()?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(err(libc::EINVAL));
        }
        let oldname = check_name(oldname, libc::EINVAL)?;
        let newname = check_name(newname, libc::EINVAL)?;
        let olddir = self.dir_inode(olddir)?;
        let newdir = self.dir_inode(newdir)?;
        sys::renameat2(
            olddir.fd.as_fd(),
            &oldname,
            newdir.fd.as_fd(),
            &newname,
            flags,
        )
    }

    fn link(
        &self,
        _ctx: &Context,
        inode: u64,
        newparent: u64,
        newname: &[u8],
    ) -> io::Result<Entry> {
        self.check_writable()?;
        let name = check_name(newname, libc::EEXIST)?;
        let inode = self.inode(inode)?;
        if inode.kind == libc::S_IFDIR {
            return Err(err(libc::EPERM));
        }
        let parent = self.dir_inode(newparent)?;
        sys::linkat(
            self.proc_self_fd.as_fd(),
            &Self::proc_name(inode.fd.as_fd()),
            parent.fd.as_fd(),
            &name,
            libc::AT_SYMLINK_FOLLOW,
        )?;
        self.do_lookup(&parent, &name)
    }

    fn open(&self, _ctx: &Context, inode: u64, flags: u32) -> io::Result<Opened> {
        if is_write(flags) {
            self.check_writable()?;
        }
        let inode = self.inode(inode)?;
        let st = sys::fstat(inode.fd.as_fd())?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(err(libc::EISDIR)),
            libc::S_IFLNK => return Err(err(libc::ELOOP)),
            _ => return Err(err(libc::ENXIO)),
        }
        self.has_handle_room()?;
        let file = self.reopen(inode.fd.as_fd(), open_flags(flags))?;
        Ok(Opened {
            handle: self.add_handle(file, None)?,
            open_flags: 0,
        })
    }

    fn read(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        offset_: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let h = self.file_handle(handle)?;
        offset(offset_)?;
        let start = out.len();
        out.resize(start + size as usize, 0);
        let mut done = 0;
        // Fill the buffer unless the file ends: a short READ means end of file to FUSE.
        while done < size as usize {
            match h
                .file
                .read_at(&mut out[start + done..], offset_ + done as u64)
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        out.truncate(start + done);
        Ok(())
    }

    fn write(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        offset_: u64,
        data: &[u8],
    ) -> io::Result<usize> {
        self.check_writable()?;
        let h = self.file_handle(handle)?;
        offset(offset_)?;
        h.file.write_at(data, offset_)
    }

    fn statfs(&self, _ctx: &Context, inode: u64) -> io::Result<StatFs> {
        let inode = self.inode(inode)?;
        let st = sys::fstatvfs(inode.fd.as_fd())?;
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
        })
    }

    fn release(&self, _ctx: &Context, _inode: u64, handle: u64) -> io::Result<()> {
        lock(&self.handles)
            .remove(&handle)
            .map(drop)
            .ok_or_else(|| err(libc::EBADF))
    }

    fn fsync(&self, _ctx: &Context, _inode: u64, handle: u64, datasync: bool) -> io::Result<()> {
        let h = self.handle(handle)?;
        if datasync {
            h.file.sync_data()
        } else {
            h.file.sync_all()
        }
    }

    /// Nothing to do on a close: writes go straight to the host file and locks stay in
    /// the guest. ENOSYS makes the guest's kernel stop sending FLUSH at all, one request
    /// less on every close (the 10 000-file benchmark makes 10 000 of them).
    fn flush(&self, _ctx: &Context, _inode: u64, handle: u64) -> io::Result<()> {
        self.handle(handle)?;
        Err(err(libc::ENOSYS))
    }

    fn opendir(&self, _ctx: &Context, inode: u64, _flags: u32) -> io::Result<Opened> {
        let inode = self.inode(inode)?;
        let st = sys::fstat(inode.fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(err(libc::ENOTDIR));
        }
        self.has_handle_room()?;
        let file = self.reopen(inode.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(Opened {
            handle: self.add_handle(file, Some(inode))?,
            open_flags: 0,
        })
    }

    fn readdir(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        offset_: u64,
        sink: &mut DirSink<'_>,
    ) -> io::Result<()> {
        let h = self.handle(handle)?;
        if !h.is_dir {
            return Err(err(libc::ENOTDIR));
        }
        // Names are looked up in the directory the handle lists, whatever node id the
        // request names.
        let parent = if sink.plus() { h.inode.clone() } else { None };
        let mut cursor = lock(&h.dir_lock);
        let fd = h.file.as_fd();
        if cursor.next != Some(offset_) {
            sys::lseek(fd, offset(offset_)?, libc::SEEK_SET)?;
            cursor.pending.clear();
            cursor.next = Some(offset_);
        }
        let mut pending = std::mem::take(&mut cursor.pending);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            if pending.is_empty() {
                let n = sys::getdents64(fd, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let mut pos = 0;
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
            while pos + 19 <= pending.len() {
                let rec = &pending[pos..];
                let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap_or_default());
                let off = u64::from_ne_bytes(rec[8..16].try_into().unwrap_or_default());
                let reclen =
                    u16::from_ne_bytes(rec[16..18].try_into().unwrap_or_default()) as usize;
                if reclen < 19 || reclen > rec.len() {
                    return Err(err(libc::EIO));
                }
                let dtype = u32::from(rec[18]);
                let raw = &rec[19..reclen];
                let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                if !sink.fits(name.len()) {
                    // The rest waits for the next READDIR, which asks for `next`.
                    pending.drain(..pos);
                    cursor.pending = pending;
                    return Ok(());
                }
                let dirent = DirEntry {
                    ino,
                    offset: off,
                    type_: dtype,
                    name,
                };
                let entry = match &parent {
                    Some(parent) if name != b"." && name != b".." => {
                        let looked_up = sys::cstring(name).and_then(|c| self.do_lookup(parent, &c));
                        match looked_up {
                            Ok(e) => Some(e),
                            // Gone since getdents, or beyond a cap: list the name without
                            // an entry (node id 0), which the guest does not count.
                            Err(e) => {
                                debug!(%e, "readdirplus lookup failed");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                sink.add(dirent, entry.as_ref());
                cursor.next = Some(off);
                pos += reclen;
            }
            pending.clear();
        }
    }

    fn releasedir(&self, ctx: &Context, inode: u64, handle: u64) -> io::Result<()> {
        self.release(ctx, inode, handle)
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, handle: u64, datasync: bool) -> io::Result<()> {
        self.fsync(ctx, inode, handle, datasync)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let inode = self.inode(inode)?;
        let st = sys::fstat(inode.fd.as_fd())?;
        let mask = mask & 7;
        if mask & 2 != 0 && self.opts.read_only {
            return Err(err(libc::EROFS));
        }
        if mask == 0 {
            return Ok(());
        }
        let mode = st.st_mode;
        if ctx.uid == 0 {
            // Root may read and write anything; execute needs some x bit (or a dir).
            if mask & 1 != 0 && st.st_mode & libc::S_IFMT != libc::S_IFDIR && mode & 0o111 == 0 {
                return Err(err(libc::EACCES));
            }
            return Ok(());
        }
        let bits = if st.st_uid == ctx.uid {
            (mode >> 6) & 7
        } else if st.st_gid == ctx.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if bits & mask == mask {
            Ok(())
        } else {
            Err(err(libc::EACCES))
        }
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: u32,
        _umask: u32,
    ) -> io::Result<(Entry, Opened)> {
        self.check_writable()?;
        let cname = check_name(name, libc::EISDIR)?;
        let parent_inode = self.dir_inode(parent)?;
        self.has_handle_room()?;
        let fl = open_flags(flags) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        match sys::openat(parent_inode.fd.as_fd(), &cname, fl, mode & 0o7777) {
            Ok(fd) => {
                let entry = self.finish_new(ctx, &parent_inode, &cname, Some(mode), Some(&fd))?;
                let handle = match self.add_handle(File::from(fd), None) {
                    Ok(h) => h,
                    Err(e) => {
                        self.forget(entry.inode, 1);
                        return Err(e);
                    }
                };
                Ok((
                    entry,
                    Opened {
                        handle,
                        open_flags: 0,
                    },
                ))
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EEXIST) && flags as i32 & libc::O_EXCL == 0 =>
            {
                // It exists: open it the way OPEN would, never following a symlink and
                // never opening a device.
                let entry = self.do_lookup(&parent_inode, &cname)?;
                match self.open(ctx, entry.inode, flags) {
                    Ok(opened) => Ok((entry, opened)),
                    Err(e) => {
                        self.forget(entry.inode, 1);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    fn fallocate(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        mode: u32,
        offset_: u64,
        length: u64,
    ) -> io::Result<()> {
        self.check_writable()?;
        let h = self.file_handle(handle)?;
        sys::fallocate(
            h.file.as_fd(),
            mode as i32,
            offset(offset_)?,
            offset(length)?,
        )
    }

    fn lseek(
        &self,
        _ctx: &Context,
        _inode: u64,
        handle: u64,
        offset_: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let h = self.file_handle(handle)?;
        let whence = whence as i32;
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return Err(err(libc::EINVAL));
        }
        // Serialize with other lseeks of the handle; READ and WRITE use positional I/O.
        let _guard = lock(&h.dir_lock);
        // (A file handle's cursor is never used: READDIR refuses file handles.)
        sys::lseek(h.file.as_fd(), offset(offset_)?, whence)
    }

    fn setxattr(
        &self,
        _ctx: &Context,
        _inode: u64,
        _name: &[u8],
        _value: &[u8],
        _flags: u32,
    ) -> io::Result<()> {
        self.check_writable()?;
        Err(err(libc::ENOSYS))
    }

    fn removexattr(&self, _ctx: &Context, _inode: u64, _name: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        Err(err(libc::ENOSYS))
    }

    fn copy_file_range(
        &self,
        _ctx: &Context,
        _inode_in: u64,
        handle_in: u64,
        offset_in: u64,
        _inode_out: u64,
        handle_out: u64,
        offset_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let hin = self.file_handle(handle_in)?;
        let hout = self.file_handle(handle_out)?;
        sys::copy_file_range(
            hin.file.as_fd(),
            offset(offset_in)?,
            hout.file.as_fd(),
            offset(offset_out)?,
            usize::try_from(len).unwrap_or(usize::MAX),
        )
    }
}
