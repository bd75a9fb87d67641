//! Malformed and hostile messages: no panic, the right error or no reply.

use berth_fuse::abi::{opcode, put_u32, put_u64, InHeader};
use berth_fuse::{MAX_REQUEST, MAX_WRITE};

use crate::client::*;

const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const EBADF: i32 = 9;

fn header(len: u32, op: u32, unique: u64, node: u64) -> Vec<u8> {
    let mut b = Vec::new();
    InHeader {
        len,
        opcode: op,
        unique,
        nodeid: node,
        uid: 0,
        gid: 0,
        pid: 1,
    }
    .write(&mut b);
    b
}

#[test]
fn short_and_lying_headers() {
    let c = Client::new();
    assert!(c.raw(&[]).is_empty());
    assert!(c.raw(&[1, 2, 3]).is_empty());
    // Unique readable but the header truncated: EINVAL.
    let h = header(40, opcode::GETATTR, 77, ROOT);
    assert_eq!(check_reply(&c.raw(&h[..20]), 77).error, EINVAL);
    assert_eq!(check_reply(&c.raw(&h[..39]), 77).error, EINVAL);
    // len larger than the buffer.
    let h = header(4096, opcode::GETATTR, 78, ROOT);
    assert_eq!(check_reply(&c.raw(&h), 78).error, EINVAL);
    // len smaller than a header.
    let h = header(8, opcode::GETATTR, 79, ROOT);
    assert_eq!(check_reply(&c.raw(&h), 79).error, EINVAL);
    // Over MAX_REQUEST.
    let mut big = header((MAX_REQUEST + 1) as u32, opcode::WRITE, 80, ROOT);
    big.resize(MAX_REQUEST + 1, 0);
    assert_eq!(check_reply(&c.raw(&big), 80).error, EINVAL);
    // FORGET-like requests never get a reply, even malformed.
    let h = header(40, opcode::FORGET, 81, 12345);
    assert!(c.raw(&h[..30]).is_empty());
    assert!(c.raw(&h).is_empty());
    // A reply is appended, leaving what was already in the buffer.
    let (u, msg) = c.encode(opcode::GETATTR, ROOT, &[0; 16]);
    let mut reply = b"keep".to_vec();
    c.server.handle(&msg, &mut reply);
    assert_eq!(&reply[..4], b"keep");
    assert_eq!(check_reply(&reply[4..], u).error, 0);
}

#[test]
fn bodies_too_short() {
    let c = Client::new();
    for op in [
        opcode::INIT,
        opcode::FORGET,
        opcode::SETATTR,
        opcode::MKNOD,
        opcode::MKDIR,
        opcode::RENAME,
        opcode::RENAME2,
        opcode::LINK,
        opcode::OPEN,
        opcode::READ,
        opcode::WRITE,
        opcode::RELEASE,
        opcode::FSYNC,
        opcode::FLUSH,
        opcode::OPENDIR,
        opcode::READDIR,
        opcode::READDIRPLUS,
        opcode::RELEASEDIR,
        opcode::ACCESS,
        opcode::CREATE,
        opcode::FALLOCATE,
        opcode::LSEEK,
        opcode::GETXATTR,
        opcode::SETXATTR,
        opcode::BATCH_FORGET,
        opcode::COPY_FILE_RANGE,
    ] {
        for len in [0, 3] {
            match c.send(op, ROOT, &[1u8; 3][..len]) {
                None => assert!(matches!(op, opcode::FORGET | opcode::BATCH_FORGET)),
                Some(r) => assert_eq!(r.error, EINVAL, "opcode {op} len {len}"),
            }
        }
    }
}

#[test]
fn unterminated_names() {
    let c = Client::new();
    assert_eq!(c.req(opcode::LOOKUP, ROOT, b"abc").error, EINVAL);
    assert_eq!(c.req(opcode::LOOKUP, ROOT, b"").error, EINVAL);
    assert_eq!(c.req(opcode::UNLINK, ROOT, b"abc").error, EINVAL);
    assert_eq!(c.req(opcode::SYMLINK, ROOT, b"name\0target").error, EINVAL);
    let mut b = Vec::new();
    put_u64(&mut b, ROOT);
    b.extend_from_slice(b"old\0new");
    assert_eq!(c.req(opcode::RENAME, ROOT, &b).error, EINVAL);
    let mut b = Vec::new();
    put_u32(&mut b, 0o755);
    put_u32(&mut b, 0);
    b.extend_from_slice(b"dir");
    assert_eq!(c.req(opcode::MKDIR, ROOT, &b).error, EINVAL);
    assert!(!c.path("dir").exists());
    // A symlink target over PATH_MAX.
    let mut b = cstr("ln");
    b.extend_from_slice(&cstr(&"a".repeat(5000)));
    assert_eq!(c.req(opcode::SYMLINK, ROOT, &b).error, 36);
}

#[test]
fn huge_sizes() {
    let c = Client::new();
    std::fs::write(c.path("f"), vec![1u8; 3 * MAX_WRITE as usize]).unwrap();
    let f = c.lookup(ROOT, "f").unwrap();
    let fh = c.open(f.node, 2).unwrap();
    // READ of u32::MAX is capped at MAX_WRITE.
    let got = c.read(f.node, fh, 0, u32::MAX).unwrap();
    assert_eq!(got.len(), MAX_WRITE as usize);
    // READ at an offset beyond i64.
    assert_eq!(c.read(f.node, fh, u64::MAX, 10).unwrap_err(), EINVAL);
    // WRITE claiming more than MAX_WRITE, or more than it carries.
    let mut b = Client::rw_in(fh, 0, u32::MAX);
    b.extend_from_slice(b"abc");
    assert_eq!(c.req(opcode::WRITE, f.node, &b).error, EINVAL);
    let mut b = Client::rw_in(fh, 0, 100);
    b.extend_from_slice(b"abc");
    assert_eq!(c.req(opcode::WRITE, f.node, &b).error, EINVAL);
    // READDIR of u32::MAX is capped.
    let dh = c.opendir(ROOT).unwrap();
    let r = c.req(opcode::READDIRPLUS, ROOT, &Client::rw_in(dh, 0, u32::MAX));
    assert_eq!(r.error, 0);
    assert!(r.body.len() <= MAX_WRITE as usize);
    // BATCH_FORGET claiming a huge count.
    let mut b = Vec::new();
    put_u32(&mut b, u32::MAX);
    put_u32(&mut b, 0);
    put_u64(&mut b, f.node);
    put_u64(&mut b, 1);
    put_u64(&mut b, 999);
    assert!(c.send(opcode::BATCH_FORGET, 0, &b).is_none());
    // SETXATTR claiming a huge value.
    let mut b = Vec::new();
    put_u32(&mut b, u32::MAX);
    put_u32(&mut b, 0);
    b.extend_from_slice(&cstr("user.x"));
    assert_eq!(c.req(opcode::SETXATTR, ROOT, &b).error, EINVAL);
}

#[test]
fn unknown_things() {
    let c = Client::new();
    assert_eq!(c.req(9999, ROOT, &[]).error, ENOSYS);
    assert_eq!(c.req(opcode::GETLK, ROOT, &[0; 64]).error, ENOSYS);
    assert_eq!(c.req(opcode::SETUPMAPPING, ROOT, &[0; 64]).error, ENOSYS);
    assert!(c.send(opcode::INTERRUPT, 0, &[0; 8]).is_none());
    // FORGET and BATCH_FORGET of inodes nobody knows.
    c.forget(424242, 5);
    c.forget(u64::MAX, u64::MAX);
    let mut b = Vec::new();
    put_u32(&mut b, 2);
    put_u32(&mut b, 0);
    for v in [777u64, 1, ROOT, u64::MAX] {
        put_u64(&mut b, v);
    }
    assert!(c.send(opcode::BATCH_FORGET, 0, &b).is_none());
    assert_eq!(c.server.fs().inode_count(), 1);
    assert!(c.getattr(ROOT).is_ok());
    // Handles nobody opened.
    assert_eq!(c.release(ROOT, 5555), EBADF);
    assert_eq!(c.read(ROOT, 5555, 0, 10).unwrap_err(), EBADF);
    assert_eq!(c.write(ROOT, 5555, 0, b"x").unwrap_err(), EBADF);
    // Double RELEASE.
    std::fs::write(c.path("f"), b"x").unwrap();
    let f = c.lookup(ROOT, "f").unwrap();
    let fh = c.open(f.node, 0).unwrap();
    assert_eq!(c.release(f.node, fh), 0);
    assert_eq!(c.release(f.node, fh), EBADF);
    // INIT with an ancient major.
    let mut b = Vec::new();
    put_u32(&mut b, 6);
    put_u32(&mut b, 0);
    assert_eq!(c.req(opcode::INIT, 0, &b).error, EINVAL);
}

/// Random bytes for every opcode: each reply is well-formed or absent.
#[test]
fn random_requests_never_panic() {
    let c = Client::new();
    std::fs::write(c.path("f"), b"x").unwrap();
    std::fs::create_dir(c.path("d")).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..20_000u64 {
        let op = (next() % 52) as u32;
        let node = match next() % 4 {
            0 => 0,
            1 => ROOT,
            2 => next() % 8,
            _ => next(),
        };
        let len = (next() % 160) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).collect();
        if next() % 3 == 0 {
            // Printable names and NULs make deeper paths reachable.
            for b in body.iter_mut().skip(8) {
                *b = b"ab\0/.."[(*b % 6) as usize];
            }
        }
        let declared = match next() % 8 {
            0 => (next() % 200) as u32,
            _ => (40 + body.len()) as u32,
        };
        let mut msg = header(declared, op, i, node);
        msg.extend_from_slice(&body);
        let reply = c.raw(&msg);
        if !reply.is_empty() {
            check_reply(&reply, i);
        }
    }
    // Nothing escaped.
    for e in std::fs::read_dir(&c.outside).unwrap() {
        assert_eq!(e.unwrap().file_name(), "secret");
    }
}
