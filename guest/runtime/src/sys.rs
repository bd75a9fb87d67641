//! The system-call seam of the container child.
//!
//! Everything the freshly cloned child does goes through [`Syscalls`], so the setup sequence
//! can be unit-tested without root with [`RecordingSyscalls`] (youki's model). The Linux
//! implementation, [`LinuxSyscalls`], is called in a child cloned from a possibly
//! multi-threaded process: it must not allocate, lock or log. It only passes the
//! pre-built C strings of the plan to libc.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::os::fd::RawFd;

use crate::error::Errno;

/// Type of a path, as `stat` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// `st_mode`.
    pub mode: u32,
}

impl FileStat {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// System calls used by the container child.
pub trait Syscalls {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    /// umount2(2).
    fn umount2(&self, target: &CStr, flags: i32) -> Result<(), Errno>;
    /// mkdir(2).
    fn mkdir(&self, path: &CStr, mode: u32) -> Result<(), Errno>;
    /// mknod(2).
    fn mknod(&self, path: &CStr, mode: u32, dev: u64) -> Result<(), Errno>;
    /// symlink(2).
    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno>;
    /// Creates an empty file if missing (a bind-mount target).
    fn create_file(&self, path: &CStr) -> Result<(), Errno>;
    /// chdir(2).
    fn chdir(&self, path: &CStr) -> Result<(), Errno>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno>;
    /// sethostname(2).
    fn sethostname(&self, name: &CStr) -> Result<(), Errno>;
    /// stat(2), following symlinks.
    fn stat(&self, path: &CStr) -> Result<FileStat, Errno>;
    /// access(path, X_OK).
    fn access_x(&self, path: &CStr) -> Result<(), Errno>;
    /// setrlimit(2).
    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> Result<(), Errno>;
    /// unshare(2).
    fn unshare(&self, flags: i32) -> Result<(), Errno>;
    /// setns(2).
    fn setns(&self, fd: RawFd, nstype: i32) -> Result<(), Errno>;
    /// setsid(2).
    fn setsid(&self) -> Result<(), Errno>;
    /// ioctl(fd, TIOCSCTTY, 0).
    fn set_controlling_tty(&self, fd: RawFd) -> Result<(), Errno>;
    /// dup2(2) (dup3 without flags).
    fn dup2(&self, old: RawFd, new: RawFd) -> Result<(), Errno>;
    /// close_range(2) of `[first, last]`.
    fn close_range(&self, first: u32, last: u32) -> Result<(), Errno>;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    fn set_no_new_privs(&self) -> Result<(), Errno>;
    /// prctl(PR_SET_KEEPCAPS).
    fn set_keep_caps(&self, keep: bool) -> Result<(), Errno>;
    /// setgroups(2).
    fn setgroups(&self, groups: &[u32]) -> Result<(), Errno>;
    /// setresgid(gid, gid, gid).
    fn setgid(&self, gid: u32) -> Result<(), Errno>;
    /// setresuid(uid, uid, uid).
    fn setuid(&self, uid: u32) -> Result<(), Errno>;
    /// prctl(PR_CAPBSET_DROP, cap).
    fn drop_bounding(&self, cap: u32) -> Result<(), Errno>;
    /// capset(2) of the three sets (bit masks).
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap).
    fn raise_ambient(&self, cap: u32) -> Result<(), Errno>;
    /// Writes `data` to `fd` (whole or error).
    fn write(&self, fd: RawFd, data: &[u8]) -> Result<(), Errno>;
    /// Reads into `buf`; the count (0 at EOF).
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno>;
    /// open(path, O_WRONLY|O_CLOEXEC).
    fn open_write(&self, path: &CStr) -> Result<RawFd, Errno>;
    /// close(2).
    fn close(&self, fd: RawFd);
    /// clone(2) fork-style (no `CLONE_VM`, the child continues on a copy of the stack) with
    /// `flags` (namespaces, `CLONE_PARENT`) plus SIGCHLD. `Ok(0)` in the child, the child's
    /// pid in the caller.
    fn clone_fork(&self, flags: i32) -> Result<i32, Errno>;
    /// Restores every signal's default disposition and unblocks all signals (Rust ignores
    /// SIGPIPE; a container must not inherit that).
    fn reset_signals(&self);
    /// umask(2).
    fn umask(&self, mask: u32);
    /// execve(2): only returns on failure. `argv` and `envp` must end with a null pointer
    /// and point to C strings that outlive the call (EINVAL when not null-terminated).
    fn execve(&self, path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno;
    /// _exit(2).
    fn exit(&self, code: i32) -> !;
}

fn check(r: libc::c_int) -> Result<(), Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The real system calls. Allocation-free.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscalls;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl Syscalls for LinuxSyscalls {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        // SAFETY: every pointer is a valid NUL-terminated string or null, as mount(2) allows.
        check(unsafe {
            libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                flags as libc::c_ulong,
                opt_ptr(data).cast(),
            )
        })
    }
    fn umount2(&self, target: &CStr, flags: i32) -> Result<(), Errno> {
        // SAFETY: target is a valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }
    fn mkdir(&self, path: &CStr, mode: u32) -> Result<(), Errno> {
        // SAFETY: path is a valid C string.
        check(unsafe { libc::mkdir(path.as_ptr(), mode) })
    }
    fn mknod(&self, path: &CStr, mode: u32, dev: u64) -> Result<(), Errno> {
        // SAFETY: path is a valid C string.
        check(unsafe { libc::mknod(path.as_ptr(), mode, dev) })
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        // SAFETY: both are valid C strings.
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
    }
    fn create_file(&self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: path is a valid C string; the fd is closed right away.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644,
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        self.close(fd);
        Ok(())
    }
    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: path is a valid C string.
        check(unsafe { libc::chdir(path.as_ptr()) })
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        // SAFETY: both are valid C strings; pivot_root has no libc wrapper.
        check(unsafe {
            libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) as libc::c_int
        })
    }
    fn sethostname(&self, name: &CStr) -> Result<(), Errno> {
        let b = name.to_bytes();
        // SAFETY: b points to b.len() readable bytes.
        check(unsafe { libc::sethostname(b.as_ptr().cast(), b.len()) })
    }
    fn stat(&self, path: &CStr) -> Result<FileStat, Errno> {
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: path is a valid C string and st a valid out-pointer.
        check(unsafe { libc::stat(path.as_ptr(), &mut st) })?;
        Ok(FileStat { mode: st.st_mode })
    }
    fn access_x(&self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: path is a valid C string.
        check(unsafe { libc::access(path.as_ptr(), libc::X_OK) })
    }
    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> Result<(), Errno> {
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: r is a valid rlimit.
        check(unsafe { libc::setrlimit(resource as _, &r) })
    }
    fn unshare(&self, flags: i32) -> Result<(), Errno> {
        // SAFETY: plain system call.
        check(unsafe { libc::unshare(flags) })
    }
    fn setns(&self, fd: RawFd, nstype: i32) -> Result<(), Errno> {
        // SAFETY: plain system call on an fd the plan owns.
        check(unsafe { libc::setns(fd, nstype) })
    }
    fn setsid(&self) -> Result<(), Errno> {
        // SAFETY: plain system call.
        check(unsafe { libc::setsid() })
    }
    fn set_controlling_tty(&self, fd: RawFd) -> Result<(), Errno> {
        // SAFETY: TIOCSCTTY takes an int argument.
        check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) })
    }
    fn dup2(&self, old: RawFd, new: RawFd) -> Result<(), Errno> {
        if old == new {
            // Clear close-on-exec, as dup2 onto another number would.
            // SAFETY: fcntl on an fd number; failure is reported.
            return check(unsafe { libc::fcntl(old, libc::F_SETFD, 0) });
        }
        // SAFETY: plain system call.
        check(unsafe { libc::dup2(old, new) })
    }
    fn close_range(&self, first: u32, last: u32) -> Result<(), Errno> {
        // SAFETY: plain system call.
        check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) as libc::c_int })
    }
    fn set_no_new_privs(&self) -> Result<(), Errno> {
        // SAFETY: plain prctl.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }
    fn set_keep_caps(&self, keep: bool) -> Result<(), Errno> {
        // SAFETY: plain prctl.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong, 0, 0, 0) })
    }
    fn setgroups(&self, groups: &[u32]) -> Result<(), Errno> {
        // Raw system call: glibc's wrapper broadcasts to every thread (see setgid).
        // SAFETY: groups points to groups.len() gids.
        check(unsafe {
            libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) as libc::c_int
        })
    }
    fn setgid(&self, gid: u32) -> Result<(), Errno> {
        // Raw system call: glibc's wrapper would signal every thread (setxid broadcast),
        // which a freshly cloned child must not do.
        // SAFETY: plain system call.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) as libc::c_int })
    }
    fn setuid(&self, uid: u32) -> Result<(), Errno> {
        // SAFETY: plain system call (raw for the same reason as setgid).
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) as libc::c_int })
    }
    fn drop_bounding(&self, cap: u32) -> Result<(), Errno> {
        // SAFETY: plain prctl.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })
    }
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        let mut hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: effective as u32,
                permitted: permitted as u32,
                inheritable: inheritable as u32,
            },
            CapData {
                effective: (effective >> 32) as u32,
                permitted: (permitted >> 32) as u32,
                inheritable: (inheritable >> 32) as u32,
            },
        ];
        // SAFETY: header and the two v3 data words are valid for the call.
        check(unsafe {
            libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr())
                as libc::c_int
        })
    }
    fn raise_ambient(&self, cap: u32) -> Result<(), Errno> {
        // SAFETY: plain prctl.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        })
    }
    fn write(&self, fd: RawFd, mut data: &[u8]) -> Result<(), Errno> {
        while !data.is_empty() {
            // SAFETY: data is a valid buffer.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(e);
            }
            data = data.get(n as usize..).unwrap_or(&[]);
        }
        Ok(())
    }
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
        loop {
            // SAFETY: buf is a valid writable buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(e);
            }
        }
    }
    fn open_write(&self, path: &CStr) -> Result<RawFd, Errno> {
        // SAFETY: path is a valid C string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            Err(Errno::last())
        } else {
            Ok(fd)
        }
    }
    fn close(&self, fd: RawFd) {
        // SAFETY: closing an fd number this code owns.
        unsafe { libc::close(fd) };
    }
    fn clone_fork(&self, flags: i32) -> Result<i32, Errno> {
        // SAFETY: a fork-style clone (no CLONE_VM, null stack: the child continues on a
        // copy of this stack); the child only runs allocation-free code until execve/_exit.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r as i32)
        }
    }
    fn reset_signals(&self) {
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: resetting a disposition to SIG_DFL; invalid numbers just fail.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        // SAFETY: an empty set is built in place and installed as the mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
    }
    fn umask(&self, mask: u32) {
        // SAFETY: plain system call.
        unsafe { libc::umask(mask) };
    }
    fn execve(&self, path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
        if argv.last().is_none_or(|p| !p.is_null()) || envp.last().is_none_or(|p| !p.is_null()) {
            return Errno::EINVAL;
        }
        // SAFETY: argv and envp are null-terminated (checked above) arrays of C strings that
        // the caller keeps alive (the plan), as the trait requires.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Errno::last()
    }
    fn exit(&self, code: i32) -> ! {
        // SAFETY: _exit never returns and runs no atexit handlers.
        unsafe { libc::_exit(code) }
    }
}

/// One recorded call of [`RecordingSyscalls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// mount(source, target, fstype, flags, data).
    Mount(Option<String>, String, Option<String>, u64, Option<String>),
    /// umount2(target, flags).
    Umount(String, i32),
    /// mkdir(path).
    Mkdir(String),
    /// mknod(path, mode, dev).
    Mknod(String, u32, u64),
    /// symlink(target, link).
    Symlink(String, String),
    /// create_file(path).
    CreateFile(String),
    /// chdir(path).
    Chdir(String),
    /// pivot_root(new, old).
    PivotRoot(String, String),
    /// sethostname(name).
    Sethostname(String),
    /// setrlimit(resource, soft, hard).
    Setrlimit(i32, u64, u64),
    /// unshare(flags).
    Unshare(i32),
    /// setns(fd, type).
    Setns(RawFd, i32),
    /// setsid().
    Setsid,
    /// TIOCSCTTY on fd.
    SetCtty(RawFd),
    /// dup2(old, new).
    Dup2(RawFd, RawFd),
    /// close_range(first, last).
    CloseRange(u32, u32),
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// PR_SET_KEEPCAPS.
    KeepCaps(bool),
    /// setgroups.
    Setgroups(Vec<u32>),
    /// setresgid.
    Setgid(u32),
    /// setresuid.
    Setuid(u32),
    /// PR_CAPBSET_DROP.
    DropBounding(u32),
    /// capset(effective, permitted, inheritable).
    Capset(u64, u64, u64),
    /// ambient raise.
    RaiseAmbient(u32),
    /// write(fd, bytes).
    Write(RawFd, Vec<u8>),
    /// read(fd).
    Read(RawFd),
    /// open_write(path).
    OpenWrite(String),
    /// clone_fork(flags).
    Clone(i32),
    /// reset_signals().
    ResetSignals,
    /// umask(mask).
    Umask(u32),
    /// execve(path).
    Execve(String),
}

/// Test double: records every call and answers from a small script.
#[derive(Debug, Default)]
pub struct RecordingSyscalls {
    /// The calls, in order.
    pub calls: RefCell<Vec<Call>>,
    /// Paths that `stat` reports as existing, with their mode; others are ENOENT.
    pub files: Vec<(String, u32)>,
    /// Paths whose `access_x` fails with EACCES.
    pub not_executable: Vec<String>,
    /// A call (by prefix of its Debug text) that fails with the given errno.
    pub fail: Option<(String, Errno)>,
    /// Bytes `read` returns, in order (then EOF).
    pub reads: RefCell<Vec<Vec<u8>>>,
    /// What `clone_fork` returns (0: act as the child).
    pub clone_result: i32,
}

impl RecordingSyscalls {
    fn rec(&self, c: Call) -> Result<(), Errno> {
        let failing = self
            .fail
            .as_ref()
            .filter(|(p, _)| format!("{c:?}").starts_with(p.as_str()))
            .map(|(_, e)| *e);
        self.calls.borrow_mut().push(c);
        match failing {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    /// The recorded calls.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.borrow_mut())
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

impl Syscalls for RecordingSyscalls {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: u64,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        self.rec(Call::Mount(
            source.map(s),
            s(target),
            fstype.map(s),
            flags,
            data.map(s),
        ))
    }
    fn umount2(&self, target: &CStr, flags: i32) -> Result<(), Errno> {
        self.rec(Call::Umount(s(target), flags))
    }
    fn mkdir(&self, path: &CStr, _mode: u32) -> Result<(), Errno> {
        self.rec(Call::Mkdir(s(path)))
    }
    fn mknod(&self, path: &CStr, mode: u32, dev: u64) -> Result<(), Errno> {
        self.rec(Call::Mknod(s(path), mode, dev))
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        self.rec(Call::Symlink(s(target), s(link)))
    }
    fn create_file(&self, path: &CStr) -> Result<(), Errno> {
        self.rec(Call::CreateFile(s(path)))
    }
    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        self.rec(Call::Chdir(s(path)))
    }
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        self.rec(Call::PivotRoot(s(new_root), s(put_old)))
    }
    fn sethostname(&self, name: &CStr) -> Result<(), Errno> {
        self.rec(Call::Sethostname(s(name)))
    }
    fn stat(&self, path: &CStr) -> Result<FileStat, Errno> {
        let p = s(path);
        self.files
            .iter()
            .find(|(f, _)| *f == p)
            .map(|(_, mode)| FileStat { mode: *mode })
            .ok_or(Errno::ENOENT)
    }
    fn access_x(&self, path: &CStr) -> Result<(), Errno> {
        if self.not_executable.contains(&s(path)) {
            Err(Errno::EACCES)
        } else {
            Ok(())
        }
    }
    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> Result<(), Errno> {
        self.rec(Call::Setrlimit(resource, soft, hard))
    }
    fn unshare(&self, flags: i32) -> Result<(), Errno> {
        self.rec(Call::Unshare(flags))
    }
    fn setns(&self, fd: RawFd, nstype: i32) -> Result<(), Errno> {
        self.rec(Call::Setns(fd, nstype))
    }
    fn setsid(&self) -> Result<(), Errno> {
        self.rec(Call::Setsid)
    }
    fn set_controlling_tty(&self, fd: RawFd) -> Result<(), Errno> {
        self.rec(Call::SetCtty(fd))
    }
    fn dup2(&self, old: RawFd, new: RawFd) -> Result<(), Errno> {
        self.rec(Call::Dup2(old, new))
    }
    fn close_range(&self, first: u32, last: u32) -> Result<(), Errno> {
        self.rec(Call::CloseRange(first, last))
    }
    fn set_no_new_privs(&self) -> Result<(), Errno> {
        self.rec(Call::NoNewPrivs)
    }
    fn set_keep_caps(&self, keep: bool) -> Result<(), Errno> {
        self.rec(Call::KeepCaps(keep))
    }
    fn setgroups(&self, groups: &[u32]) -> Result<(), Errno> {
        self.rec(Call::Setgroups(groups.to_vec()))
    }
    fn setgid(&self, gid: u32) -> Result<(), Errno> {
        self.rec(Call::Setgid(gid))
    }
    fn setuid(&self, uid: u32) -> Result<(), Errno> {
        self.rec(Call::Setuid(uid))
    }
    fn drop_bounding(&self, cap: u32) -> Result<(), Errno> {
        self.rec(Call::DropBounding(cap))
    }
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        self.rec(Call::Capset(effective, permitted, inheritable))
    }
    fn raise_ambient(&self, cap: u32) -> Result<(), Errno> {
        self.rec(Call::RaiseAmbient(cap))
    }
    fn write(&self, fd: RawFd, data: &[u8]) -> Result<(), Errno> {
        self.rec(Call::Write(fd, data.to_vec()))
    }
    fn read(&self, fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
        self.rec(Call::Read(fd))?;
        let mut reads = self.reads.borrow_mut();
        if reads.is_empty() {
            return Ok(0);
        }
        let d = reads.remove(0);
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
    fn open_write(&self, path: &CStr) -> Result<RawFd, Errno> {
        self.rec(Call::OpenWrite(s(path)))?;
        Ok(100)
    }
    fn close(&self, _fd: RawFd) {}
    fn clone_fork(&self, flags: i32) -> Result<i32, Errno> {
        self.rec(Call::Clone(flags))?;
        Ok(self.clone_result)
    }
    fn reset_signals(&self) {
        let _ = self.rec(Call::ResetSignals);
    }
    fn umask(&self, mask: u32) {
        let _ = self.rec(Call::Umask(mask));
    }
    fn execve(&self, path: &CStr, _argv: &[*const c_char], _envp: &[*const c_char]) -> Errno {
        let _ = self.rec(Call::Execve(s(path)));
        Errno::ENOEXEC
    }
    fn exit(&self, code: i32) -> ! {
        panic!("RecordingSyscalls::exit({code})")
    }
}
