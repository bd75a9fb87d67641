//! The ordinary requests, end to end.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use berth_fuse::abi::{fattr, opcode, put_u32, SetattrIn};
use berth_fuse::{PassthroughOptions, MAX_WRITE};

use crate::client::*;

const O_RDWR: u32 = 2;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTEMPTY: i32 = 39;
const EBADF: i32 = 9;
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const EPERM: i32 = 1;

#[test]
fn init_negotiates() {
    let c = Client::new();
    let b = c.init();
    assert_eq!(b.len(), 64);
    assert_eq!(u32_at(&b, 0), 7);
    assert_eq!(u32_at(&b, 4), 31);
    assert_eq!(u32_at(&b, 8), 128 * 1024);
    let flags = u32_at(&b, 12);
    assert_ne!(flags & (1 << 13), 0, "DO_READDIRPLUS");
    assert_ne!(flags & (1 << 22), 0, "MAX_PAGES");
    assert_eq!(flags & (1 << 4), 0, "no EXPORT_SUPPORT");
    assert_eq!(flags & (1 << 16), 0, "no WRITEBACK_CACHE");
    assert_eq!(flags & (1 << 26), 0, "no DAX");
    assert_eq!(u32_at(&b, 20), MAX_WRITE);
    assert_eq!(u16::from_le_bytes([b[28], b[29]]), 256);

    // An older guest gets its own minor.
    let mut body = Vec::new();
    put_u32(&mut body, 7);
    put_u32(&mut body, 27);
    put_u32(&mut body, 4096);
    put_u32(&mut body, 1);
    let b = c.req(opcode::INIT, 0, &body).ok();
    assert_eq!(u32_at(&b, 4), 27);
    assert_eq!(u32_at(&b, 12), 1);
    assert_eq!(c.req(opcode::DESTROY, 0, &[]).error, 0);
}

#[test]
fn lookup_and_getattr() {
    let c = Client::new();
    std::fs::write(c.path("f"), b"hello").unwrap();
    let root = c.getattr(ROOT).unwrap();
    assert_eq!(root.mode & S_IFMT, S_IFDIR);
    let e = c.lookup(ROOT, "f").unwrap();
    assert!(e.node > 1);
    assert_eq!(e.mode & S_IFMT, S_IFREG);
    assert_eq!(e.size, 5);
    // The same inode gets the same node id.
    assert_eq!(c.lookup(ROOT, "f").unwrap().node, e.node);
    assert_eq!(c.getattr(e.node).unwrap().size, 5);
    assert_eq!(c.lookup(ROOT, "missing").unwrap_err(), ENOENT);
    // Two lookups, two forgets.
    assert_eq!(c.server.fs().inode_count(), 2);
    c.forget(e.node, 1);
    assert_eq!(c.server.fs().inode_count(), 2);
    c.forget(e.node, 1);
    assert_eq!(c.server.fs().inode_count(), 1);
    assert_eq!(c.getattr(e.node).unwrap_err(), ENOENT);
    // FORGET of the root is ignored.
    c.forget(ROOT, 100);
    assert!(c.getattr(ROOT).is_ok());
}

#[test]
fn create_write_read() {
    let c = Client::new();
    let (e, fh) = c.create(ROOT, "data", 0o640, O_RDWR).unwrap();
    assert_eq!(e.mode, S_IFREG | 0o640);
    assert_eq!(e.uid, c.uid);
    assert_eq!(c.write(e.node, fh, 0, b"hello, world").unwrap(), 12);
    assert_eq!(c.write(e.node, fh, 7, b"there").unwrap(), 5);
    assert_eq!(c.read(e.node, fh, 0, 4096).unwrap(), b"hello, there");
    assert_eq!(c.read(e.node, fh, 7, 3).unwrap(), b"the");
    assert_eq!(c.read(e.node, fh, 100, 10).unwrap(), b"");
    let big = vec![7u8; MAX_WRITE as usize];
    assert_eq!(c.write(e.node, fh, 0, &big).unwrap(), MAX_WRITE);
    assert_eq!(c.read(e.node, fh, 0, MAX_WRITE).unwrap(), big);
    // FSYNC and FLUSH on the handle (FLUSH is declined once and for all: ENOSYS).
    let mut b = Vec::new();
    berth_fuse::abi::put_u64(&mut b, fh);
    b.extend_from_slice(&[0u8; 16]);
    assert_eq!(c.req(opcode::FLUSH, e.node, &b).error, 38);
    assert_eq!(c.req(opcode::FSYNC, e.node, &b[..16]).error, 0);
    assert_eq!(c.release(e.node, fh), 0);
    assert_eq!(std::fs::read(c.path("data")).unwrap(), big);
    assert_eq!(
        std::fs::metadata(c.path("data"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    // Reopen read-only.
    let fh = c.open(e.node, 0).unwrap();
    assert_eq!(c.read(e.node, fh, 0, 3).unwrap(), [7, 7, 7]);
    assert_eq!(c.release(e.node, fh), 0);
    // CREATE with O_EXCL of an existing name fails; without, it opens it.
    assert_eq!(
        c.create(ROOT, "data", 0o600, O_RDWR | 0o200).unwrap_err(),
        EEXIST
    );
    let (e2, fh2) = c.create(ROOT, "data", 0o600, O_RDWR).unwrap();
    assert_eq!(e2.node, e.node);
    assert_eq!(c.release(e2.node, fh2), 0);
}

#[test]
fn mkdir_readdirplus_rmdir() {
    let c = Client::new();
    let d = c.mkdir(ROOT, "dir", 0o750).unwrap();
    assert_eq!(d.mode, S_IFDIR | 0o750);
    let names: Vec<String> = (0..40)
        .map(|i| format!("file-with-a-longish-name-{i}"))
        .collect();
    for n in &names {
        std::fs::write(c.path("dir").join(n), n).unwrap();
    }
    std::fs::create_dir(c.path("dir/sub")).unwrap();
    let before = c.server.fs().inode_count();
    let listing = c.list_plus(d.node);
    let mut want: Vec<String> = names.clone();
    want.extend(["sub".into(), ".".into(), "..".into()]);
    want.sort();
    let got: Vec<String> = listing.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(got, want);
    for (n, node) in &listing {
        if n == "." || n == ".." {
            assert_eq!(*node, 0, "no lookup counted for {n}");
        } else {
            assert!(*node > 1);
            let e = c.getattr(*node).unwrap();
            assert_eq!(
                e.size as usize,
                if n == "sub" { e.size as usize } else { n.len() }
            );
        }
    }
    assert_eq!(c.server.fs().inode_count(), before + 41);
    // Every listed entry counted exactly one lookup.
    for (n, node) in &listing {
        if *node != 0 {
            assert!(!n.is_empty());
            c.forget(*node, 1);
        }
    }
    assert_eq!(c.server.fs().inode_count(), before);

    // Plain READDIR counts nothing.
    let fh = c.opendir(d.node).unwrap();
    let plain = c.readdir(d.node, fh, 0, 64 * 1024, false).unwrap();
    assert_eq!(plain.len(), 43);
    assert_eq!(c.server.fs().inode_count(), before);
    // A buffer too small for one entry gives an empty reply, not an error.
    assert!(c.readdir(d.node, fh, 0, 10, true).unwrap().is_empty());

    assert_eq!(c.rmdir(ROOT, "dir"), ENOTEMPTY);
    for n in &names {
        assert_eq!(c.unlink(d.node, n), 0);
    }
    assert_eq!(c.rmdir(d.node, "sub"), 0);
    assert_eq!(c.rmdir(ROOT, "dir"), 0);
    assert!(!c.path("dir").exists());
}

#[test]
fn rename_and_rename2() {
    let c = Client::new();
    std::fs::write(c.path("a"), b"A").unwrap();
    std::fs::write(c.path("b"), b"B").unwrap();
    let d = c.mkdir(ROOT, "d", 0o755).unwrap();
    assert_eq!(c.rename(ROOT, "a", d.node, "a2"), 0);
    assert_eq!(std::fs::read(c.path("d/a2")).unwrap(), b"A");
    assert!(!c.path("a").exists());
    // NOREPLACE refuses an existing target; EXCHANGE swaps.
    std::fs::write(c.path("d/b"), b"B2").unwrap();
    assert_eq!(c.rename2(ROOT, "b", d.node, "b", 1), EEXIST);
    assert_eq!(c.rename2(ROOT, "b", d.node, "b", 2), 0);
    assert_eq!(std::fs::read(c.path("b")).unwrap(), b"B2");
    assert_eq!(std::fs::read(c.path("d/b")).unwrap(), b"B");
    // WHITEOUT and unknown flags are refused.
    assert_eq!(c.rename2(ROOT, "b", ROOT, "c", 4), 22);
    assert_eq!(c.rename(ROOT, "nope", ROOT, "x"), ENOENT);
}

#[test]
fn hard_links() {
    let c = Client::new();
    std::fs::write(c.path("orig"), b"x").unwrap();
    let e = c.lookup(ROOT, "orig").unwrap();
    let l = c.link(e.node, ROOT, "alias").unwrap();
    assert_eq!(l.node, e.node);
    assert_eq!(l.nlink, 2);
    assert_eq!(
        std::fs::metadata(c.path("alias")).unwrap().ino(),
        std::fs::metadata(c.path("orig")).unwrap().ino()
    );
    // Directories cannot be linked.
    let d = c.mkdir(ROOT, "d", 0o755).unwrap();
    assert_eq!(c.link(d.node, ROOT, "d2").unwrap_err(), EPERM);
    assert_eq!(c.link(e.node, ROOT, "alias").unwrap_err(), EEXIST);
}

#[test]
fn symlink_and_readlink() {
    let c = Client::new();
    let s = c.symlink(ROOT, "ln", "some/where/../else").unwrap();
    assert_eq!(s.mode & S_IFMT, S_IFLNK);
    assert_eq!(c.readlink(s.node).unwrap(), b"some/where/../else");
    assert_eq!(
        std::fs::read_link(c.path("ln")).unwrap().to_str().unwrap(),
        "some/where/../else"
    );
    let l = c.lookup(ROOT, "ln").unwrap();
    assert_eq!(l.node, s.node);
    // READLINK of a non-link.
    assert_eq!(c.readlink(ROOT).unwrap_err(), 22);
}

#[test]
fn setattr_chmod_truncate_times() {
    let c = Client::new();
    std::fs::write(c.path("f"), b"0123456789").unwrap();
    let e = c.lookup(ROOT, "f").unwrap();
    let a = c
        .setattr(
            e.node,
            SetattrIn {
                valid: fattr::MODE,
                mode: 0o600,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.mode, S_IFREG | 0o600);
    let a = c
        .setattr(
            e.node,
            SetattrIn {
                valid: fattr::SIZE,
                size: 4,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.size, 4);
    assert_eq!(std::fs::read(c.path("f")).unwrap(), b"0123");
    // Truncate through a handle.
    let fh = c.open(e.node, O_RDWR).unwrap();
    c.setattr(
        e.node,
        SetattrIn {
            valid: fattr::SIZE | fattr::FH,
            size: 2,
            fh,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(std::fs::read(c.path("f")).unwrap(), b"01");
    // Times: explicit and NOW.
    c.setattr(
        e.node,
        SetattrIn {
            valid: fattr::ATIME | fattr::MTIME,
            atime: 1_000_000,
            mtime: 2_000_000,
            mtimensec: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let md = std::fs::metadata(c.path("f")).unwrap();
    assert_eq!(md.atime(), 1_000_000);
    assert_eq!(md.mtime(), 2_000_000);
    assert_eq!(md.mtime_nsec(), 5);
    c.setattr(
        e.node,
        SetattrIn {
            valid: fattr::MTIME | fattr::MTIME_NOW | fattr::FH,
            fh,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(std::fs::metadata(c.path("f")).unwrap().mtime() > 2_000_000);
    // Symlink times, without following it.
    let s = c.symlink(ROOT, "ln", "f").unwrap();
    c.setattr(
        s.node,
        SetattrIn {
            valid: fattr::MTIME,
            mtime: 3_000_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::symlink_metadata(c.path("ln")).unwrap().mtime(),
        3_000_000
    );
    assert!(std::fs::metadata(c.path("f")).unwrap().mtime() > 3_000_000);
    // Bad nanoseconds.
    assert_eq!(
        c.setattr(
            e.node,
            SetattrIn {
                valid: fattr::MTIME,
                mtimensec: 2_000_000_000,
                ..Default::default()
            },
        )
        .unwrap_err(),
        22
    );
    assert_eq!(c.release(e.node, fh), 0);
}

#[test]
fn ownership() {
    let c = Client::new();
    std::fs::write(c.path("f"), b"").unwrap();
    let e = c.lookup(ROOT, "f").unwrap();
    let r = c.setattr(
        e.node,
        SetattrIn {
            valid: fattr::UID | fattr::GID,
            uid: 4321,
            gid: 4322,
            ..Default::default()
        },
    );
    let mut guest = Client::new();
    guest.uid = 1234;
    guest.gid = 1235;
    let made = guest.mkdir(ROOT, "made", 0o755);
    if euid() == 0 {
        let a = r.unwrap();
        assert_eq!((a.uid, a.gid), (4321, 4322));
        // As root, new entries belong to the caller.
        let d = made.unwrap();
        assert_eq!((d.uid, d.gid), (1234, 1235));
        let md = std::fs::metadata(guest.path("made")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 1235));
        let (f, fh) = guest.create(d.node, "file", 0o644, O_RDWR).unwrap();
        assert_eq!((f.uid, f.gid), (1234, 1235));
        assert_eq!(guest.release(f.node, fh), 0);
        let s = guest.symlink(d.node, "ln", "file").unwrap();
        assert_eq!((s.uid, s.gid), (1234, 1235));
        let md = std::fs::symlink_metadata(guest.path("made/ln")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 1235));
        let n = guest.mknod(d.node, "fifo", 0o010000 | 0o640, 0).unwrap();
        assert_eq!((n.uid, n.gid, n.mode & 0o7777), (1234, 1235, 0o640));
    } else {
        assert_eq!(r.unwrap_err(), EPERM);
        // As a user, new entries belong to that user.
        let d = made.unwrap();
        assert_eq!(d.uid, euid());
    }
}

#[test]
fn mknod_kinds() {
    let c = Client::new();
    let f = c.mknod(ROOT, "reg", S_IFREG | 0o644, 0).unwrap();
    assert_eq!(f.mode, S_IFREG | 0o644);
    let p = c.mknod(ROOT, "fifo", 0o010000 | 0o600, 0).unwrap();
    assert_eq!(p.mode & S_IFMT, 0o010000);
    // OPEN of a fifo is never done on the host.
    assert_eq!(c.open(p.node, 0).unwrap_err(), 6);
    // Device nodes are refused.
    assert_eq!(
        c.mknod(ROOT, "null", 0o020000 | 0o666, 0x103).unwrap_err(),
        EPERM
    );
    assert_eq!(
        c.mknod(ROOT, "blk", 0o060000 | 0o666, 0x800).unwrap_err(),
        EPERM
    );
    assert!(!c.path("null").exists());
}

#[test]
fn statfs_access_lseek_fallocate() {
    let c = Client::new();
    let b = c.req(opcode::STATFS, ROOT, &[]).ok();
    assert_eq!(b.len(), 80);
    assert!(u64_at(&b, 0) > 0, "blocks");
    assert!(u32_at(&b, 40) > 0, "bsize");
    assert_eq!(u32_at(&b, 44), 255, "namelen");
    let mut m = Vec::new();
    put_u32(&mut m, 4);
    put_u32(&mut m, 0);
    assert_eq!(c.req(opcode::ACCESS, ROOT, &m).error, 0);
    let (e, fh) = c.create(ROOT, "f", 0o644, O_RDWR).unwrap();
    // FALLOCATE 8 KiB.
    let mut b = Vec::new();
    berth_fuse::abi::put_u64(&mut b, fh);
    berth_fuse::abi::put_u64(&mut b, 0);
    berth_fuse::abi::put_u64(&mut b, 8192);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    let r = c.req(opcode::FALLOCATE, e.node, &b);
    assert!(r.error == 0 || r.error == 95, "fallocate: {}", r.error);
    c.write(e.node, fh, 0, b"data").unwrap();
    // LSEEK SEEK_DATA from 0.
    let mut b = Vec::new();
    berth_fuse::abi::put_u64(&mut b, fh);
    berth_fuse::abi::put_u64(&mut b, 0);
    put_u32(&mut b, 3);
    put_u32(&mut b, 0);
    let r = c.req(opcode::LSEEK, e.node, &b).ok();
    assert_eq!(u64_at(&r, 0), 0);
    assert_eq!(c.release(e.node, fh), 0);
    // XATTRs: ENOSYS, consistently.
    let mut b = Vec::new();
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    b.extend_from_slice(&cstr("user.x"));
    assert_eq!(c.req(opcode::GETXATTR, ROOT, &b).error, 38);
    assert_eq!(c.req(opcode::LISTXATTR, ROOT, &b[..8]).error, 38);
}

#[test]
fn handle_cap() {
    let c = Client::with(PassthroughOptions::default().max_handles(4));
    std::fs::write(c.path("f"), b"x").unwrap();
    let e = c.lookup(ROOT, "f").unwrap();
    let fhs: Vec<u64> = (0..4).map(|_| c.open(e.node, 0).unwrap()).collect();
    assert_eq!(c.open(e.node, 0).unwrap_err(), EMFILE);
    assert_eq!(c.opendir(ROOT).unwrap_err(), EMFILE);
    assert_eq!(c.create(ROOT, "g", 0o644, O_RDWR).unwrap_err(), EMFILE);
    assert!(!c.path("g").exists());
    assert_eq!(c.server.fs().handle_count(), 4);
    assert_eq!(c.release(e.node, fhs[0]), 0);
    // Double release.
    assert_eq!(c.release(e.node, fhs[0]), EBADF);
    let fh = c.open(e.node, 0).unwrap();
    assert_eq!(c.read(e.node, fh, 0, 10).unwrap(), b"x");
    // I/O on a released handle.
    assert_eq!(c.read(e.node, fhs[0], 0, 10).unwrap_err(), EBADF);
}

#[test]
fn inode_cap() {
    let c = Client::with(PassthroughOptions::default().max_inodes(3));
    for n in ["a", "b", "c"] {
        std::fs::write(c.path(n), b"").unwrap();
    }
    let a = c.lookup(ROOT, "a").unwrap();
    c.lookup(ROOT, "b").unwrap();
    assert_eq!(c.lookup(ROOT, "c").unwrap_err(), ENFILE);
    // A known inode can still be looked up.
    assert_eq!(c.lookup(ROOT, "a").unwrap().node, a.node);
    c.forget(a.node, 2);
    c.lookup(ROOT, "c").unwrap();
}

#[test]
fn server_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<berth_fuse::Server<berth_fuse::PassthroughFs>>();
}

#[test]
fn concurrent_workers() {
    let c = std::sync::Arc::new(Client::new());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let name = format!("t{t}-{i}");
                    let (e, fh) = c.create(ROOT, &name, 0o644, O_RDWR).unwrap();
                    c.write(e.node, fh, 0, name.as_bytes()).unwrap();
                    assert_eq!(c.read(e.node, fh, 0, 64).unwrap(), name.as_bytes());
                    assert_eq!(c.release(e.node, fh), 0);
                    c.lookup(ROOT, &name).unwrap();
                    c.forget(e.node, 2);
                    assert_eq!(c.unlink(ROOT, &name), 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.server.fs().inode_count(), 1);
    assert_eq!(c.server.fs().handle_count(), 0);
}

#[test]
fn copy_file_range_fsyncdir_getattr_fh() {
    let c = Client::new();
    let (a, fa) = c.create(ROOT, "a", 0o644, O_RDWR).unwrap();
    let (b, fb) = c.create(ROOT, "b", 0o644, O_RDWR).unwrap();
    c.write(a.node, fa, 0, b"0123456789").unwrap();
    let mut body = Vec::new();
    for v in [fa, 2, b.node, fb, 1, 5, 0] {
        berth_fuse::abi::put_u64(&mut body, v);
    }
    let r = c.req(opcode::COPY_FILE_RANGE, a.node, &body).ok();
    assert_eq!(u32_at(&r, 0), 5);
    assert_eq!(std::fs::read(c.path("b")).unwrap(), b"\x0023456");
    // GETATTR through a handle.
    let mut g = Vec::new();
    put_u32(&mut g, 1);
    put_u32(&mut g, 0);
    berth_fuse::abi::put_u64(&mut g, fb);
    let r = c.req(opcode::GETATTR, b.node, &g).ok();
    assert_eq!(attr_at(&r, 16, b.node).size, 6);
    // chmod of a directory by inode.
    let d = c.mkdir(ROOT, "d", 0o755).unwrap();
    let a2 = c
        .setattr(
            d.node,
            SetattrIn {
                valid: fattr::MODE,
                mode: 0o700,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a2.mode, S_IFDIR | 0o700);
    // FSYNCDIR on a directory handle.
    let dh = c.opendir(d.node).unwrap();
    let mut f = Vec::new();
    berth_fuse::abi::put_u64(&mut f, dh);
    put_u32(&mut f, 1);
    put_u32(&mut f, 0);
    assert_eq!(c.req(opcode::FSYNCDIR, d.node, &f).error, 0);
    assert_eq!(c.release(a.node, fa), 0);
    assert_eq!(c.release(b.node, fb), 0);
}

/// `rm -rf`'s pattern: list a little, unlink what was listed, list on from the offset
/// the last reply gave. Every entry is seen once and the folder ends empty (with
/// positional directory offsets, a seek back would skip entries).
#[test]
fn unlinking_while_listing_misses_nothing() {
    let c = Client::new();
    let d = c.mkdir(ROOT, "many", 0o755).unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
    for n in &names {
        std::fs::write(c.path("many").join(n), "").unwrap();
    }
    let fh = c.opendir(d.node).unwrap();
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let chunk = c.readdir(d.node, fh, offset, 256, false).unwrap();
        let Some(last) = chunk.last() else { break };
        offset = last.2;
        for (name, _, _) in chunk {
            if name != "." && name != ".." {
                assert_eq!(c.unlink(d.node, &name), 0, "{name}");
                seen.push(name);
            }
        }
    }
    seen.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(c.release(d.node, fh), 0);
    assert_eq!(c.rmdir(ROOT, "many"), 0);
}
