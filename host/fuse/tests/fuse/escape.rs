//! Attempts to leave the share fail, and nothing outside it changes.

use berth_fuse::abi::{fattr, opcode, put_u32, put_u64, SetattrIn};

use crate::client::*;

const O_RDWR: u32 = 2;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ENOTDIR: i32 = 20;
const ELOOP: i32 = 40;

fn setup() -> (Client, Vec<String>) {
    let c = Client::new();
    std::os::unix::fs::symlink("/", c.path("root")).unwrap();
    std::os::unix::fs::symlink("../outside", c.path("out")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", c.path("secret")).unwrap();
    std::fs::write(c.path("file"), b"inside").unwrap();
    let snap = snapshot(&c.outside);
    (c, snap)
}

#[test]
fn dot_dot_and_slashes() {
    let (c, snap) = setup();
    assert_eq!(c.lookup(ROOT, "..").unwrap_err(), ENOENT);
    assert_eq!(c.lookup(ROOT, ".").unwrap_err(), ENOENT);
    assert_eq!(c.lookup(ROOT, "../outside").unwrap_err(), EINVAL);
    assert_eq!(c.lookup(ROOT, "/etc").unwrap_err(), EINVAL);
    assert_eq!(c.lookup(ROOT, "").unwrap_err(), EINVAL);
    assert_eq!(c.lookup(ROOT, &"x".repeat(256)).unwrap_err(), 36);
    // Creating names that climb.
    assert_eq!(c.mkdir(ROOT, "../made", 0o755).unwrap_err(), EINVAL);
    assert_eq!(c.mkdir(ROOT, "..", 0o755).unwrap_err(), 17);
    assert_eq!(
        c.create(ROOT, "../made", 0o644, O_RDWR).unwrap_err(),
        EINVAL
    );
    assert_eq!(c.symlink(ROOT, "../ln", "/").unwrap_err(), EINVAL);
    assert_eq!(c.unlink(ROOT, "../outside/secret"), EINVAL);
    assert_eq!(c.unlink(ROOT, ".."), EINVAL);
    assert_eq!(c.rmdir(ROOT, "../outside"), EINVAL);
    assert_eq!(c.rmdir(ROOT, ".."), EINVAL);
    // Renames with `../` in either name.
    assert_eq!(c.rename(ROOT, "file", ROOT, "../outside/file"), EINVAL);
    assert_eq!(c.rename(ROOT, "../outside/secret", ROOT, "stolen"), EINVAL);
    assert_eq!(c.rename(ROOT, "file", ROOT, ".."), EINVAL);
    assert_eq!(c.rename2(ROOT, "file", ROOT, "../x", 2), EINVAL);
    // Links to names with '/'.
    let f = c.lookup(ROOT, "file").unwrap();
    assert_eq!(c.link(f.node, ROOT, "../outside/l").unwrap_err(), EINVAL);
    assert_eq!(c.link(f.node, ROOT, "a/b").unwrap_err(), EINVAL);
    // Unknown nodes as parents or sources.
    assert_eq!(c.lookup(999, "x").unwrap_err(), ENOENT);
    assert_eq!(c.link(999, ROOT, "x").unwrap_err(), ENOENT);
    assert_eq!(c.rename(ROOT, "file", 999, "x"), ENOENT);
    assert_eq!(snapshot(&c.outside), snap);
    assert_eq!(std::fs::read(c.path("file")).unwrap(), b"inside");
}

#[test]
fn symlinks_are_not_followed() {
    let (c, snap) = setup();
    for name in ["root", "out", "secret"] {
        let l = c.lookup(ROOT, name).unwrap();
        assert_eq!(l.mode & S_IFMT, S_IFLNK, "{name} is the link itself");
        // OPEN of it is refused, for reading and writing.
        assert_eq!(c.open(l.node, 0).unwrap_err(), ELOOP);
        assert_eq!(c.open(l.node, O_RDWR).unwrap_err(), ELOOP);
        assert_eq!(c.opendir(l.node).unwrap_err(), ENOTDIR);
        // Nothing can be created or found through it.
        assert_eq!(c.lookup(l.node, "secret").unwrap_err(), ENOTDIR);
        assert_eq!(c.lookup(l.node, "etc").unwrap_err(), ENOTDIR);
        assert_eq!(c.create(l.node, "new", 0o644, O_RDWR).unwrap_err(), ENOTDIR);
        assert_eq!(c.mkdir(l.node, "new", 0o755).unwrap_err(), ENOTDIR);
        assert_eq!(
            c.mknod(l.node, "new", S_IFREG | 0o644, 0).unwrap_err(),
            ENOTDIR
        );
        assert_eq!(c.symlink(l.node, "new", "x").unwrap_err(), ENOTDIR);
        assert_eq!(c.unlink(l.node, "secret"), ENOTDIR);
        assert_eq!(c.rename(l.node, "secret", ROOT, "stolen"), ENOTDIR);
        assert_eq!(c.rename(ROOT, "file", l.node, "file"), ENOTDIR);
        // SETATTR acts on the link, never on what it points to.
        let r = c.setattr(
            l.node,
            SetattrIn {
                valid: fattr::SIZE,
                size: 0,
                ..Default::default()
            },
        );
        assert!(r.is_err());
        let r = c.setattr(
            l.node,
            SetattrIn {
                valid: fattr::MODE,
                mode: 0o777,
                ..Default::default()
            },
        );
        assert!(r.is_err());
        // The target comes back as bytes for the guest to resolve.
        assert!(!c.readlink(l.node).unwrap().is_empty());
        // CREATE without O_EXCL on the link's name does not open the target.
        assert_eq!(c.create(ROOT, name, 0o644, O_RDWR).unwrap_err(), ELOOP);
        // Hard-linking the link makes a link to the link.
        let h = c.link(l.node, ROOT, &format!("{name}-hard")).unwrap();
        assert_eq!(h.mode & S_IFMT, S_IFLNK);
    }
    // A symlink the guest makes to a host path is just bytes too.
    let s = c.symlink(ROOT, "passwd", "/etc/passwd").unwrap();
    assert_eq!(c.open(s.node, 0).unwrap_err(), ELOOP);
    assert_eq!(c.readlink(s.node).unwrap(), b"/etc/passwd");
    // CREATE O_TRUNC through the `secret` link must not truncate the real secret.
    assert!(c.create(ROOT, "secret", 0o644, O_RDWR | 0o1000).is_err());
    assert_eq!(snapshot(&c.outside), snap);
    assert_eq!(std::fs::read(c.outside.join("secret")).unwrap(), b"secret");
}

#[test]
fn readdir_of_a_file_and_io_on_directories() {
    let (c, _) = setup();
    let f = c.lookup(ROOT, "file").unwrap();
    let fh = c.open(f.node, 0).unwrap();
    // A file handle is not a directory handle and the other way round.
    assert_eq!(c.readdir(f.node, fh, 0, 4096, false).unwrap_err(), ENOTDIR);
    let dh = c.opendir(ROOT).unwrap();
    assert_eq!(c.read(ROOT, dh, 0, 10).unwrap_err(), 21);
    assert_eq!(c.opendir(f.node).unwrap_err(), ENOTDIR);
    assert_eq!(c.open(ROOT, 0).unwrap_err(), 21);
    // LSEEK with whence other than DATA/HOLE.
    let mut b = Vec::new();
    put_u64(&mut b, fh);
    put_u64(&mut b, 0);
    put_u32(&mut b, 0);
    put_u32(&mut b, 0);
    assert_eq!(c.req(opcode::LSEEK, f.node, &b).error, EINVAL);
}
