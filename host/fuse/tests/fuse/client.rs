//! A tiny FUSE client: encodes requests, decodes replies.

use std::path::{Path, PathBuf};

use berth_fuse::abi::{opcode, put_u32, put_u64, InHeader, ReadWriteIn, SetattrIn};
use berth_fuse::{PassthroughFs, PassthroughOptions, Server};

pub const ROOT: u64 = 1;
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;

/// A decoded reply: 0 or a positive errno, and the body.
#[derive(Debug)]
pub struct Reply {
    pub error: i32,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(self) -> Vec<u8> {
        assert_eq!(self.error, 0, "request failed with errno {}", self.error);
        self.body
    }
}

/// What an entry reply says.
#[derive(Debug, Clone, Copy)]
pub struct Ent {
    pub node: u64,
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decodes `fuse_attr` at `at`.
pub fn attr_at(b: &[u8], at: usize, node: u64) -> Ent {
    Ent {
        node,
        size: u64_at(b, at + 8),
        mode: u32_at(b, at + 60),
        nlink: u32_at(b, at + 64),
        uid: u32_at(b, at + 68),
        gid: u32_at(b, at + 72),
    }
}

pub fn entry(b: &[u8]) -> Ent {
    attr_at(b, 40, u64_at(b, 0))
}

pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub struct Client {
    pub server: Server<PassthroughFs>,
    pub _dir: tempfile::TempDir,
    pub share: PathBuf,
    pub outside: PathBuf,
    unique: std::sync::atomic::AtomicU64,
    pub uid: u32,
    pub gid: u32,
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions.
    unsafe { libc::getegid() }
}

impl Client {
    pub fn new() -> Self {
        Self::with(PassthroughOptions::default())
    }

    /// A share `<tmp>/share` next to `<tmp>/outside` (with `outside/secret`).
    pub fn with(opts: PassthroughOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&share).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let fs = PassthroughFs::with_options(&share, opts).unwrap();
        let c = Self {
            server: Server::new(fs),
            _dir: dir,
            share,
            outside,
            unique: std::sync::atomic::AtomicU64::new(1),
            uid: euid(),
            gid: egid(),
        };
        c.init();
        c
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.share.join(rel)
    }

    /// Sends raw bytes; returns the raw reply.
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut reply = Vec::new();
        self.server.handle(bytes, &mut reply);
        reply
    }

    pub fn encode(&self, op: u32, node: u64, body: &[u8]) -> (u64, Vec<u8>) {
        let unique = self
            .unique
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut msg = Vec::new();
        InHeader {
            len: (40 + body.len()) as u32,
            opcode: op,
            unique,
            nodeid: node,
            uid: self.uid,
            gid: self.gid,
            pid: 42,
        }
        .write(&mut msg);
        msg.extend_from_slice(body);
        (unique, msg)
    }

    /// Sends a request; `None` if there was no reply.
    pub fn send(&self, op: u32, node: u64, body: &[u8]) -> Option<Reply> {
        let (unique, msg) = self.encode(op, node, body);
        let reply = self.raw(&msg);
        if reply.is_empty() {
            return None;
        }
        Some(check_reply(&reply, unique))
    }

    pub fn req(&self, op: u32, node: u64, body: &[u8]) -> Reply {
        self.send(op, node, body).expect("no reply")
    }

    pub fn init(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_u32(&mut b, 7);
        put_u32(&mut b, 38);
        put_u32(&mut b, 128 * 1024);
        put_u32(&mut b, u32::MAX);
        put_u32(&mut b, 0);
        b.extend_from_slice(&[0u8; 44]);
        self.req(opcode::INIT, 0, &b).ok()
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Ent, i32> {
        let r = self.req(opcode::LOOKUP, parent, &cstr(name));
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(entry(&r.body))
    }

    pub fn forget(&self, node: u64, n: u64) {
        let mut b = Vec::new();
        put_u64(&mut b, n);
        assert!(self.send(opcode::FORGET, node, &b).is_none());
    }

    pub fn getattr(&self, node: u64) -> Result<Ent, i32> {
        let r = self.req(opcode::GETATTR, node, &[0u8; 16]);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(attr_at(&r.body, 16, node))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: u32,
    ) -> Result<(Ent, u64), i32> {
        let mut b = Vec::new();
        put_u32(&mut b, flags);
        put_u32(&mut b, S_IFREG | mode);
        put_u32(&mut b, 0o022);
        put_u32(&mut b, 0);
        b.extend_from_slice(&cstr(name));
        let r = self.req(opcode::CREATE, parent, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok((entry(&r.body), u64_at(&r.body, 128)))
    }

    pub fn open(&self, node: u64, flags: u32) -> Result<u64, i32> {
        self.open_op(opcode::OPEN, node, flags)
    }

    pub fn opendir(&self, node: u64) -> Result<u64, i32> {
        self.open_op(opcode::OPENDIR, node, 0)
    }

    fn open_op(&self, op: u32, node: u64, flags: u32) -> Result<u64, i32> {
        let mut b = Vec::new();
        put_u32(&mut b, flags);
        put_u32(&mut b, 0);
        let r = self.req(op, node, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(u64_at(&r.body, 0))
    }

    pub fn release(&self, node: u64, fh: u64) -> i32 {
        let mut b = Vec::new();
        put_u64(&mut b, fh);
        b.extend_from_slice(&[0u8; 16]);
        self.req(opcode::RELEASE, node, &b).error
    }

    pub fn write(&self, node: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, i32> {
        let mut b = Vec::new();
        ReadWriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        }
        .write(&mut b);
        b.extend_from_slice(data);
        let r = self.req(opcode::WRITE, node, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(u32_at(&r.body, 0))
    }

    pub fn rw_in(fh: u64, offset: u64, size: u32) -> Vec<u8> {
        let mut b = Vec::new();
        ReadWriteIn {
            fh,
            offset,
            size,
            ..Default::default()
        }
        .write(&mut b);
        b
    }

    pub fn read(&self, node: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
        let r = self.req(opcode::READ, node, &Self::rw_in(fh, offset, size));
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(r.body)
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32) -> Result<Ent, i32> {
        let mut b = Vec::new();
        put_u32(&mut b, mode);
        put_u32(&mut b, 0o022);
        b.extend_from_slice(&cstr(name));
        let r = self.req(opcode::MKDIR, parent, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(entry(&r.body))
    }

    pub fn mknod(&self, parent: u64, name: &str, mode: u32, rdev: u32) -> Result<Ent, i32> {
        let mut b = Vec::new();
        put_u32(&mut b, mode);
        put_u32(&mut b, rdev);
        put_u32(&mut b, 0);
        put_u32(&mut b, 0);
        b.extend_from_slice(&cstr(name));
        let r = self.req(opcode::MKNOD, parent, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(entry(&r.body))
    }

    /// READDIR or READDIRPLUS: (name, node (0 for plain or `.`/`..`), next offset).
    pub fn readdir(
        &self,
        node: u64,
        fh: u64,
        offset: u64,
        size: u32,
        plus: bool,
    ) -> Result<Vec<(String, u64, u64)>, i32> {
        let op = if plus {
            opcode::READDIRPLUS
        } else {
            opcode::READDIR
        };
        let r = self.req(op, node, &Self::rw_in(fh, offset, size));
        if r.error != 0 {
            return Err(r.error);
        }
        let b = r.body;
        assert!(b.len() <= size as usize);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let mut n = 0;
            if plus {
                n = u64_at(&b, pos);
                pos += 128;
            }
            let off = u64_at(&b, pos + 8);
            let namelen = u32_at(&b, pos + 16) as usize;
            let name = String::from_utf8(b[pos + 24..pos + 24 + namelen].to_vec()).unwrap();
            pos += (24 + namelen + 7) & !7;
            out.push((name, n, off));
        }
        Ok(out)
    }

    /// Lists a directory fully with READDIRPLUS in small chunks.
    pub fn list_plus(&self, node: u64) -> Vec<(String, u64)> {
        let fh = self.opendir(node).unwrap();
        let mut all = Vec::new();
        let mut off = 0;
        loop {
            let chunk = self.readdir(node, fh, off, 400, true).unwrap();
            let Some(last) = chunk.last() else { break };
            off = last.2;
            all.extend(chunk.into_iter().map(|(n, i, _)| (n, i)));
        }
        let mut b = Vec::new();
        put_u64(&mut b, fh);
        b.extend_from_slice(&[0u8; 16]);
        assert_eq!(self.req(opcode::RELEASEDIR, node, &b).error, 0);
        all.sort();
        all
    }

    pub fn names2(parent_new: u64, old: &str, new: &str) -> Vec<u8> {
        let mut b = Vec::new();
        put_u64(&mut b, parent_new);
        b.extend_from_slice(&cstr(old));
        b.extend_from_slice(&cstr(new));
        b
    }

    pub fn rename(&self, olddir: u64, old: &str, newdir: u64, new: &str) -> i32 {
        self.req(opcode::RENAME, olddir, &Self::names2(newdir, old, new))
            .error
    }

    pub fn rename2(&self, olddir: u64, old: &str, newdir: u64, new: &str, flags: u32) -> i32 {
        let mut b = Vec::new();
        put_u64(&mut b, newdir);
        put_u32(&mut b, flags);
        put_u32(&mut b, 0);
        b.extend_from_slice(&cstr(old));
        b.extend_from_slice(&cstr(new));
        self.req(opcode::RENAME2, olddir, &b).error
    }

    pub fn link(&self, node: u64, newparent: u64, name: &str) -> Result<Ent, i32> {
        let mut b = Vec::new();
        put_u64(&mut b, node);
        b.extend_from_slice(&cstr(name));
        let r = self.req(opcode::LINK, newparent, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(entry(&r.body))
    }

    pub fn symlink(&self, parent: u64, name: &str, target: &str) -> Result<Ent, i32> {
        let mut b = cstr(name);
        b.extend_from_slice(&cstr(target));
        let r = self.req(opcode::SYMLINK, parent, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(entry(&r.body))
    }

    pub fn readlink(&self, node: u64) -> Result<Vec<u8>, i32> {
        let r = self.req(opcode::READLINK, node, &[]);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(r.body)
    }

    pub fn setattr(&self, node: u64, s: SetattrIn) -> Result<Ent, i32> {
        let mut b = Vec::new();
        s.write(&mut b);
        let r = self.req(opcode::SETATTR, node, &b);
        if r.error != 0 {
            return Err(r.error);
        }
        Ok(attr_at(&r.body, 16, node))
    }

    pub fn unlink(&self, parent: u64, name: &str) -> i32 {
        self.req(opcode::UNLINK, parent, &cstr(name)).error
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> i32 {
        self.req(opcode::RMDIR, parent, &cstr(name)).error
    }
}

/// Checks a reply's header; decodes it.
pub fn check_reply(reply: &[u8], unique: u64) -> Reply {
    assert!(reply.len() >= 16, "reply too short: {reply:?}");
    assert_eq!(u32_at(reply, 0) as usize, reply.len(), "reply length field");
    assert_eq!(u64_at(reply, 8), unique, "reply unique");
    let error = -(u32_at(reply, 4) as i32);
    if error != 0 {
        assert_eq!(reply.len(), 16, "an error reply carries no body");
    }
    Reply {
        error,
        body: reply[16..].to_vec(),
    }
}

/// Every path under `root` with its type, mode, size and content digest, for
/// "nothing changed" checks.
pub fn snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let content = if md.is_file() {
            format!("{:?}", std::fs::read(&p).unwrap())
        } else if md.file_type().is_symlink() {
            format!("-> {:?}", std::fs::read_link(&p).unwrap())
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:o} {} {} {}",
            md.mode(),
            md.len(),
            md.uid(),
            content
        ));
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}
