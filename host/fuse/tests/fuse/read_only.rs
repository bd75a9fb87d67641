//! A read-only share refuses every change with EROFS and stays as it was.

use berth_fuse::abi::{fattr, opcode, put_u32, put_u64, SetattrIn};
use berth_fuse::PassthroughOptions;

use crate::client::*;

const EROFS: i32 = 30;

#[test]
fn read_only_refuses_changes() {
    let c = Client::with(PassthroughOptions::default().read_only(true));
    std::fs::write(c.path("f"), b"content").unwrap();
    std::fs::create_dir(c.path("d")).unwrap();
    std::fs::write(c.path("d/inner"), b"x").unwrap();
    let snap = snapshot(&c.share);
    let f = c.lookup(ROOT, "f").unwrap();
    let d = c.lookup(ROOT, "d").unwrap();

    assert_eq!(c.create(ROOT, "new", 0o644, 2).unwrap_err(), EROFS);
    assert_eq!(c.mkdir(ROOT, "newdir", 0o755).unwrap_err(), EROFS);
    assert_eq!(
        c.mknod(ROOT, "node", S_IFREG | 0o644, 0).unwrap_err(),
        EROFS
    );
    assert_eq!(c.symlink(ROOT, "ln", "f").unwrap_err(), EROFS);
    assert_eq!(c.link(f.node, ROOT, "hard").unwrap_err(), EROFS);
    assert_eq!(c.unlink(ROOT, "f"), EROFS);
    assert_eq!(c.rmdir(ROOT, "d"), EROFS);
    assert_eq!(c.unlink(d.node, "inner"), EROFS);
    assert_eq!(c.rename(ROOT, "f", ROOT, "g"), EROFS);
    assert_eq!(c.rename2(ROOT, "f", d.node, "inner", 2), EROFS);
    for valid in [
        fattr::MODE,
        fattr::SIZE,
        fattr::UID,
        fattr::MTIME_NOW | fattr::MTIME,
    ] {
        let r = c.setattr(
            f.node,
            SetattrIn {
                valid,
                mode: 0o777,
                ..Default::default()
            },
        );
        assert_eq!(r.unwrap_err(), EROFS);
    }
    // OPEN for writing or with O_TRUNC.
    assert_eq!(c.open(f.node, 1).unwrap_err(), EROFS);
    assert_eq!(c.open(f.node, 2).unwrap_err(), EROFS);
    assert_eq!(c.open(f.node, 0o1000).unwrap_err(), EROFS);
    // Reading works; WRITE, FALLOCATE on a read handle are refused.
    let fh = c.open(f.node, 0).unwrap();
    assert_eq!(c.read(f.node, fh, 0, 100).unwrap(), b"content");
    assert_eq!(c.write(f.node, fh, 0, b"evil").unwrap_err(), EROFS);
    let mut b = Vec::new();
    put_u64(&mut b, fh);
    put_u64(&mut b, 0);
    put_u64(&mut b, 4096);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    assert_eq!(c.req(opcode::FALLOCATE, f.node, &b).error, EROFS);
    // SETXATTR / REMOVEXATTR.
    let mut b = Vec::new();
    put_u32(&mut b, 1);
    put_u32(&mut b, 0);
    b.extend_from_slice(&cstr("user.x"));
    b.push(b'v');
    assert_eq!(c.req(opcode::SETXATTR, f.node, &b).error, EROFS);
    assert_eq!(
        c.req(opcode::REMOVEXATTR, f.node, &cstr("user.x")).error,
        EROFS
    );
    // COPY_FILE_RANGE.
    let mut b = Vec::new();
    for v in [fh, 0, f.node, fh, 0, 10, 0] {
        put_u64(&mut b, v);
    }
    assert_eq!(c.req(opcode::COPY_FILE_RANGE, f.node, &b).error, EROFS);
    // Listing works.
    let names: Vec<String> = c.list_plus(ROOT).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [".", "..", "d", "f"]);
    assert_eq!(c.release(f.node, fh), 0);
    assert_eq!(snapshot(&c.share), snap);
}
