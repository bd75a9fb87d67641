//! The request dispatcher: decodes one FUSE request, calls the [`FileSystem`], encodes
//! the reply. It checks the message's shape (lengths, NUL terminators, sizes, name
//! lengths) before a backend sees anything; the backend checks the meaning (which names
//! and inodes are allowed).

use std::io;
use std::panic::{self, AssertUnwindSafe};

use thiserror::Error;
use tracing::{debug, error, trace};

use crate::abi::{
    self, errno, fattr, init_flags, opcode, put_u32, put_u64, DecodeError, InHeader, InitIn,
    InitOut, ReadWriteIn, Reader, SetattrIn,
};
use crate::filesystem::{
    to_errno, Context, DirSink, FileSystem, Opened, SetAttr, SetTime, XattrReply,
};
use crate::{MAX_REQUEST, MAX_WRITE};

/// The longest name a request may carry.
pub const NAME_MAX: usize = 255;
/// The longest symlink target a request may carry (without its NUL).
pub const PATH_MAX: usize = 4095;
/// The largest extended attribute value or list.
pub const XATTR_SIZE_MAX: u32 = 65536;
/// The `max_pages` announced in INIT.
pub const MAX_PAGES: u16 = 256;

/// The INIT flags the server accepts when the guest offers them.
pub const SUPPORTED_INIT_FLAGS: u32 = init_flags::ASYNC_READ
    | init_flags::BIG_WRITES
    | init_flags::AUTO_INVAL_DATA
    | init_flags::DO_READDIRPLUS
    | init_flags::READDIRPLUS_AUTO
    | init_flags::PARALLEL_DIROPS
    | init_flags::MAX_PAGES;

/// Why a request failed.
#[derive(Debug, Error)]
enum RequestError {
    #[error("malformed request: {0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("errno {0}")]
    Errno(i32),
}

impl RequestError {
    fn errno(&self) -> i32 {
        match self {
            Self::Decode(_) => errno::EINVAL,
            Self::Io(e) => to_errno(e),
            Self::Errno(e) => *e,
        }
    }
}

type Result<T> = std::result::Result<T, RequestError>;

enum Outcome {
    Reply,
    NoReply,
}

fn no_reply(opcode: u32) -> bool {
    matches!(
        opcode,
        opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT
    )
}

fn name<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let n = r.cstr()?;
    if n.is_empty() || n.contains(&b'/') {
        return Err(RequestError::Errno(errno::EINVAL));
    }
    if n.len() > NAME_MAX {
        return Err(RequestError::Errno(errno::ENAMETOOLONG));
    }
    Ok(n)
}

/// Serves FUSE requests against one [`FileSystem`]; shareable between queue workers.
#[derive(Debug)]
pub struct Server<F> {
    fs: F,
}

impl<F: FileSystem> Server<F> {
    /// A server for `fs`.
    pub fn new(fs: F) -> Self {
        Self { fs }
    }

    /// The filesystem served.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Handles one FUSE request (in-header and body, as the guest wrote it) and appends
    /// the reply (out-header and body) to `reply`, which stays empty for requests that
    /// take no reply (FORGET, BATCH_FORGET). Never panics, whatever the bytes.
    pub fn handle(&self, request: &[u8], reply: &mut Vec<u8>) {
        let start = reply.len();
        let mut r = Reader::new(request);
        let (Ok(_len), Ok(op), Ok(unique)) = (r.u32(), r.u32(), r.u64()) else {
            debug!(
                len = request.len(),
                "FUSE request too short for its unique id"
            );
            return;
        };
        let silent = no_reply(op);
        let header = match InHeader::read(&mut Reader::new(request)) {
            Ok(h) => h,
            Err(e) => {
                debug!(%e, "truncated FUSE header");
                if !silent {
                    abi::error_reply(reply, start, unique, errno::EINVAL);
                }
                return;
            }
        };
        let len = header.len as usize;
        if len < abi::IN_HEADER_LEN || len > request.len() || len > MAX_REQUEST {
            debug!(
                "{}",
                DecodeError::BadLength {
                    header: header.len,
                    actual: request.len()
                }
            );
            if !silent {
                abi::error_reply(reply, start, unique, errno::EINVAL);
            }
            return;
        }
        let body = &request[abi::IN_HEADER_LEN..len];
        trace!(opcode = op, unique, nodeid = header.nodeid, "FUSE request");
        abi::begin_reply(reply, unique);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            self.dispatch(&header, Reader::new(body), reply)
        }));
        match result {
            Ok(Ok(Outcome::Reply)) => abi::finish_reply(reply, start),
            Ok(Ok(Outcome::NoReply)) => reply.truncate(start),
            Ok(Err(e)) => {
                if silent {
                    reply.truncate(start);
                } else {
                    let code = e.errno();
                    debug!(opcode = op, unique, code, %e, "FUSE request failed");
                    abi::error_reply(reply, start, unique, code);
                }
            }
            Err(_) => {
                error!(opcode = op, unique, "FUSE request handler panicked");
                if silent {
                    reply.truncate(start);
                } else {
                    abi::error_reply(reply, start, unique, errno::EIO);
                }
            }
        }
    }

    fn dispatch(&self, h: &InHeader, mut r: Reader<'_>, out: &mut Vec<u8>) -> Result<Outcome> {
        let fs = &self.fs;
        let ctx = Context {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
        };
        let node = h.nodeid;
        match h.opcode {
            opcode::INIT => {
                let init = InitIn::read(&mut r)?;
                if init.major < abi::KERNEL_VERSION {
                    return Err(RequestError::Errno(errno::EINVAL));
                }
                fs.init()?;
                let minor = if init.major > abi::KERNEL_VERSION {
                    // Tell a newer guest our version; it sends INIT again.
                    abi::KERNEL_MINOR_VERSION
                } else {
                    init.minor.min(abi::KERNEL_MINOR_VERSION)
                };
                InitOut {
                    major: abi::KERNEL_VERSION,
                    minor,
                    max_readahead: init.max_readahead,
                    flags: init.flags & SUPPORTED_INIT_FLAGS,
                    max_background: 64,
                    congestion_threshold: 48,
                    max_write: MAX_WRITE,
                    time_gran: 1,
                    max_pages: MAX_PAGES,
                }
                .write(out);
            }
            opcode::DESTROY => fs.destroy(),
            opcode::FORGET => {
                let nlookup = r.u64()?;
                fs.forget(node, nlookup);
                return Ok(Outcome::NoReply);
            }
            opcode::BATCH_FORGET => {
                let count = r.u32()? as usize;
                r.u32()?;
                let count = count.min(r.remaining() / 16);
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push((r.u64()?, r.u64()?));
                }
                fs.batch_forget(&items);
                return Ok(Outcome::NoReply);
            }
            opcode::INTERRUPT => return Ok(Outcome::NoReply),
            opcode::LOOKUP => {
                let n = name(&mut r)?;
                fs.lookup(&ctx, node, n)?.write(out);
            }
            opcode::GETATTR => {
                let handle = if r.remaining() == 0 {
                    None
                } else {
                    let flags = r.u32()?;
                    r.u32()?;
                    let fh = r.u64()?;
                    (flags & abi::GETATTR_FH != 0).then_some(fh)
                };
                let (attr, timeout) = fs.getattr(&ctx, node, handle)?;
                attr.write_attr_out(timeout, out);
            }
            opcode::SETATTR => {
                let s = SetattrIn::read(&mut r)?;
                let time = |now: u32, set: u32, secs: u64, nsecs: u32| -> Result<Option<SetTime>> {
                    if s.valid & now != 0 {
                        Ok(Some(SetTime::Now))
                    } else if s.valid & set != 0 {
                        if nsecs >= 1_000_000_000 {
                            return Err(RequestError::Errno(errno::EINVAL));
                        }
                        Ok(Some(SetTime::At { secs, nsecs }))
                    } else {
                        Ok(None)
                    }
                };
                let attr = SetAttr {
                    mode: (s.valid & fattr::MODE != 0).then_some(s.mode),
                    uid: (s.valid & fattr::UID != 0).then_some(s.uid),
                    gid: (s.valid & fattr::GID != 0).then_some(s.gid),
                    size: (s.valid & fattr::SIZE != 0).then_some(s.size),
                    atime: time(fattr::ATIME_NOW, fattr::ATIME, s.atime, s.atimensec)?,
                    mtime: time(fattr::MTIME_NOW, fattr::MTIME, s.mtime, s.mtimensec)?,
                };
                let handle = (s.valid & fattr::FH != 0).then_some(s.fh);
                let (attr, timeout) = fs.setattr(&ctx, node, handle, &attr)?;
                attr.write_attr_out(timeout, out);
            }
            opcode::READLINK => {
                let target = fs.readlink(&ctx, node)?;
                if target.len() > PATH_MAX {
                    return Err(RequestError::Errno(errno::ENAMETOOLONG));
                }
                out.extend_from_slice(&target);
            }
            opcode::SYMLINK => {
                let n = name(&mut r)?;
                let target = r.cstr()?;
                if target.is_empty() {
                    return Err(RequestError::Errno(errno::ENOENT));
                }
                if target.len() > PATH_MAX {
                    return Err(RequestError::Errno(errno::ENAMETOOLONG));
                }
                fs.symlink(&ctx, target, node, n)?.write(out);
            }
            opcode::MKNOD => {
                let mode = r.u32()?;
                let rdev = r.u32()?;
                let umask = r.u32()?;
                r.u32()?;
                let n = name(&mut r)?;
                fs.mknod(&ctx, node, n, mode, rdev, umask)?.write(out);
            }
            opcode::MKDIR => {
                let mode = r.u32()?;
                let umask = r.u32()?;
                let n = name(&mut r)?;
                fs.mkdir(&ctx, node, n, mode, umask)?.write(out);
            }
            opcode::UNLINK => {
                let n = name(&mut r)?;
                fs.unlink(&ctx, node, n)?;
            }
            opcode::RMDIR => {
                let n = name(&mut r)?;
                fs.rmdir(&ctx, node, n)?;
            }
            opcode::RENAME | opcode::RENAME2 => {
                let newdir = r.u64()?;
                let flags = if h.opcode == opcode::RENAME2 {
                    let f = r.u32()?;
                    r.u32()?;
                    f
                } else {
                    0
                };
                let old = name(&mut r)?;
                let new = name(&mut r)?;
                fs.rename(&ctx, node, old, newdir, new, flags)?;
            }
            opcode::LINK => {
                let oldnode = r.u64()?;
                let n = name(&mut r)?;
                fs.link(&ctx, oldnode, node, n)?.write(out);
            }
            opcode::OPEN | opcode::OPENDIR => {
                let flags = r.u32()?;
                r.u32()?;
                let opened = if h.opcode == opcode::OPEN {
                    fs.open(&ctx, node, flags)?
                } else {
                    fs.opendir(&ctx, node, flags)?
                };
                write_open_out(&opened, out);
            }
            opcode::READ => {
                let rd = ReadWriteIn::read(&mut r)?;
                let size = rd.size.min(MAX_WRITE);
                let before = out.len();
                fs.read(&ctx, node, rd.fh, rd.offset, size, out)?;
                // A backend must not hand back more than asked for.
                out.truncate(before + size as usize);
            }
            opcode::WRITE => {
                let wr = ReadWriteIn::read(&mut r)?;
                if wr.size > MAX_WRITE {
                    return Err(RequestError::Errno(errno::EINVAL));
                }
                let data = r.bytes(wr.size as usize)?;
                let n = fs.write(&ctx, node, wr.fh, wr.offset, data)?;
                put_u32(out, n.min(data.len()) as u32);
                put_u32(out, 0);
            }
            opcode::STATFS => fs.statfs(&ctx, node)?.write(out),
            opcode::RELEASE | opcode::RELEASEDIR => {
                let fh = r.u64()?;
                if h.opcode == opcode::RELEASE {
                    fs.release(&ctx, node, fh)?;
                } else {
                    fs.releasedir(&ctx, node, fh)?;
                }
            }
            opcode::FSYNC | opcode::FSYNCDIR => {
                let fh = r.u64()?;
                let datasync = r.u32()? & 1 != 0;
                if h.opcode == opcode::FSYNC {
                    fs.fsync(&ctx, node, fh, datasync)?;
                } else {
                    fs.fsyncdir(&ctx, node, fh, datasync)?;
                }
            }
            opcode::FLUSH => {
                let fh = r.u64()?;
                fs.flush(&ctx, node, fh)?;
            }
            opcode::READDIR | opcode::READDIRPLUS => {
                let rd = ReadWriteIn::read(&mut r)?;
                let size = rd.size.min(MAX_WRITE) as usize;
                let mut sink = DirSink::new(out, size, h.opcode == opcode::READDIRPLUS);
                fs.readdir(&ctx, node, rd.fh, rd.offset, &mut sink)?;
            }
            opcode::ACCESS => {
                let mask = r.u32()?;
                fs.access(&ctx, node, mask)?;
            }
            opcode::CREATE => {
                let flags = r.u32()?;
                let mode = r.u32()?;
                let umask = r.u32()?;
                r.u32()?;
                let n = name(&mut r)?;
                let (entry, opened) = fs.create(&ctx, node, n, mode, flags, umask)?;
                entry.write(out);
                write_open_out(&opened, out);
            }
            opcode::FALLOCATE => {
                let fh = r.u64()?;
                let offset = r.u64()?;
                let length = r.u64()?;
                let mode = r.u32()?;
                fs.fallocate(&ctx, node, fh, mode, offset, length)?;
            }
            opcode::LSEEK => {
                let fh = r.u64()?;
                let offset = r.u64()?;
                let whence = r.u32()?;
                put_u64(out, fs.lseek(&ctx, node, fh, offset, whence)?);
            }
            opcode::GETXATTR | opcode::LISTXATTR => {
                let size = r.u32()?.min(XATTR_SIZE_MAX);
                r.u32()?;
                let reply = if h.opcode == opcode::GETXATTR {
                    let n = xattr_name(&mut r)?;
                    fs.getxattr(&ctx, node, n, size)?
                } else {
                    fs.listxattr(&ctx, node, size)?
                };
                match reply {
                    XattrReply::Size(n) => {
                        put_u32(out, n);
                        put_u32(out, 0);
                    }
                    XattrReply::Value(v) => {
                        if v.len() > size as usize {
                            return Err(RequestError::Errno(errno::ERANGE));
                        }
                        out.extend_from_slice(&v);
                    }
                }
            }
            opcode::SETXATTR => {
                let size = r.u32()?;
                let flags = r.u32()?;
                if size > XATTR_SIZE_MAX {
                    return Err(RequestError::Errno(errno::EINVAL));
                }
                let n = xattr_name(&mut r)?;
                let value = r.bytes(size as usize)?;
                fs.setxattr(&ctx, node, n, value, flags)?;
            }
            opcode::REMOVEXATTR => {
                let n = xattr_name(&mut r)?;
                fs.removexattr(&ctx, node, n)?;
            }
            opcode::COPY_FILE_RANGE => {
                let fh_in = r.u64()?;
                let off_in = r.u64()?;
                let node_out = r.u64()?;
                let fh_out = r.u64()?;
                let off_out = r.u64()?;
                let len = r.u64()?.min(u64::from(MAX_WRITE));
                let n =
                    fs.copy_file_range(&ctx, node, fh_in, off_in, node_out, fh_out, off_out, len)?;
                put_u32(out, n.min(len as usize) as u32);
                put_u32(out, 0);
            }
            other => {
                debug!(opcode = other, "unsupported FUSE opcode");
                return Err(RequestError::Errno(errno::ENOSYS));
            }
        }
        Ok(Outcome::Reply)
    }
}

fn xattr_name<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let n = r.cstr()?;
    if n.is_empty() || n.len() > NAME_MAX {
        return Err(RequestError::Errno(errno::ERANGE));
    }
    Ok(n)
}

fn write_open_out(opened: &Opened, out: &mut Vec<u8>) {
    put_u64(out, opened.handle);
    put_u32(out, opened.open_flags);
    put_u32(out, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that implements nothing: the trait's defaults answer ENOSYS.
    struct Nothing;
    impl FileSystem for Nothing {}

    fn request(op: u32, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        InHeader {
            len: (abi::IN_HEADER_LEN + body.len()) as u32,
            opcode: op,
            unique: 5,
            nodeid: abi::ROOT_ID,
            uid: 0,
            gid: 0,
            pid: 0,
        }
        .write(&mut b);
        b.extend_from_slice(body);
        b
    }

    fn error_of(reply: &[u8]) -> i32 {
        -i32::from_le_bytes([reply[4], reply[5], reply[6], reply[7]])
    }

    #[test]
    fn defaults_answer_enosys() {
        let s = Server::new(Nothing);
        let mut init = Vec::new();
        for v in [7u32, 31, 0, 0] {
            put_u32(&mut init, v);
        }
        let mut reply = Vec::new();
        s.handle(&request(opcode::INIT, &init), &mut reply);
        assert_eq!(error_of(&reply), 0);
        assert_eq!(reply.len(), abi::OUT_HEADER_LEN + 64);
        for (op, body) in [
            (opcode::LOOKUP, &b"x\0"[..]),
            (opcode::GETATTR, &[0u8; 16][..]),
            (opcode::STATFS, &[][..]),
            (opcode::READ, &[0u8; 40][..]),
        ] {
            reply.clear();
            s.handle(&request(op, body), &mut reply);
            assert_eq!(reply.len(), abi::OUT_HEADER_LEN);
            assert_eq!(error_of(&reply), errno::ENOSYS, "opcode {op}");
        }
        reply.clear();
        s.handle(
            &request(opcode::FORGET, &[1, 0, 0, 0, 0, 0, 0, 0]),
            &mut reply,
        );
        assert!(reply.is_empty());
    }
}
