//! The userspace erofs writer against the reference tools: every image must pass
//! `fsck.erofs`, and what `dump.erofs` (and, as root, `fsck.erofs --extract` and the
//! kernel) read back must match the tar entry by entry.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_image::erofs::write_layer_image;
use berth_image::Error;
use common::*;
use sha2::{Digest as _, Sha256};
use tar::EntryType as T;

/// A v2 file capability: effective, permitted cap_net_bind_service.
const CAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const BIG: u64 = 10 * 1024 * 1024 + 123;
const MTIME: &str = "2023-11-14 22:13:20";

/// Deterministic pseudo-random bytes (xorshift), streamed.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn noise() -> Noise {
    Noise {
        state: 0x9e37_79b9_7f4a_7c15,
        left: BIG,
    }
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn long_target() -> String {
    // 4095 bytes that stay inside the root: too long to inline beside a 32-byte inode.
    let mut t = "a/".repeat(2047);
    t.push('z');
    t
}

/// The rich layer: every kind of entry the writer handles.
fn rich_tar() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("./", 0o755)
        .dir("bin/", 0o755)
        .file("bin/busybox", 0o755, b"#!binary\n")
        .entry(
            T::Regular,
            "bin/su",
            0o4755,
            0,
            0,
            1_700_000_000,
            b"setuid\n",
        )
        .entry(
            T::Regular,
            "bin/sg",
            0o2711,
            0,
            0,
            1_700_000_000,
            b"setgid\n",
        )
        .hardlink("bin/su-link", "bin/su")
        .symlink("bin/sh", "busybox")
        .pax(&[("linkpath", long_target().as_bytes())])
        .symlink("bin/long", "placeholder")
        .dir("tmp/", 0o1777)
        .dir("dev/", 0o755)
        .chardev("dev/null", 1, 3)
        .special(T::Block, "dev/sda", 8, 0)
        .special(T::Char, "dev/big", 259, 300_000)
        .special(T::Fifo, "dev/fifo", 0, 0)
        .entry(
            T::Regular,
            "home/a",
            0o600,
            1000,
            1000,
            1_700_000_000,
            b"a\n",
        )
        .entry(
            T::Regular,
            "home/b",
            0o640,
            100_000,
            200_000,
            1_700_000_000,
            b"b\n",
        )
        .entry(
            T::Regular,
            "home/c",
            0o644,
            4_000_000_000,
            7,
            1_234_567_890,
            b"c\n",
        )
        .file_with_xattr("etc/labelled", b"x\n", "user.berth", b"yes")
        .pax(&[
            ("SCHILY.xattr.security.capability", &CAP[..]),
            ("SCHILY.xattr.trusted.berth", b"t"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/forged"),
        ])
        .file("etc/caps", 0o755, b"caps\n")
        .file("case/Readme", 0o644, b"1")
        .file("case/README", 0o644, b"22")
        .file("case/readme", 0o644, b"333")
        .big_file("big", BIG, noise())
        .file("empty", 0o644, b"");
    let mut path = String::from("deep");
    for i in 0..40 {
        path.push_str(&format!("/{i}"));
    }
    t.long_file(&format!("{path}/leaf"), b"deep leaf\n");
    for i in 0..500 {
        t.file(
            &format!("many/entry-{i:03}"),
            0o644,
            format!("{i}").as_bytes(),
        );
    }
    t.bytes()
}

fn deep_path() -> String {
    let mut path = String::from("/deep");
    for i in 0..40 {
        path.push_str(&format!("/{i}"));
    }
    path + "/leaf"
}

fn write(tar: &[u8], dir: &Path) -> (PathBuf, String) {
    let out = dir.join("layer.erofs");
    let (diff_id, size) = write_layer_image(tar, &out, "test-layer").unwrap();
    assert_eq!(size, tar.len() as u64);
    fsck(&out);
    (out, diff_id.to_string())
}

#[test]
fn every_entry_kind_reads_back_through_dump_erofs() {
    let tar = rich_tar();
    let dir = tempfile::tempdir().unwrap();
    let (img, diff_id) = write(&tar, dir.path());
    assert_eq!(diff_id, sha(&tar));
    std::env::set_var("TZ", "UTC");

    let check = |path: &str, kind: &str, size: u64, links: u64, owner: (u64, u64), access: u32| {
        let d = dump(&img, path);
        assert_eq!(
            (d.kind.as_str(), d.size, d.links, (d.uid, d.gid), d.access),
            (kind, size, links, owner, access),
            "{path}: {d:?}"
        );
        d
    };
    // Root: 2 + 8 subdirectories.
    let root = check("/", "directory", dump(&img, "/").size, 10, (0, 0), 0o755);
    assert_eq!(root.nid, 0, "the root is the first inode");
    let su = check("/bin/su", "regular file", 7, 2, (0, 0), 0o755);
    let link = check("/bin/su-link", "regular file", 7, 2, (0, 0), 0o755);
    assert_eq!(su.nid, link.nid, "a hard link is the same inode");
    check("/bin/sg", "regular file", 7, 1, (0, 0), 0o711);
    check("/bin/sh", "symlink file", 7, 1, (0, 0), 0o777);
    check("/bin/long", "symlink file", 4095, 1, (0, 0), 0o777);
    check("/tmp", "directory", 2 * 12 + 3, 2, (0, 0), 0o777);
    check("/dev/null", "char dev", 0, 1, (0, 0), 0o666);
    check("/dev/sda", "block dev", 0, 1, (0, 0), 0o640);
    check("/dev/fifo", "FIFO file", 0, 1, (0, 0), 0o640);
    check("/home/a", "regular file", 2, 1, (1000, 1000), 0o600);
    check("/home/b", "regular file", 2, 1, (100_000, 200_000), 0o640);
    let c = check("/home/c", "regular file", 2, 1, (4_000_000_000, 7), 0o644);
    assert!(c.timestamp.starts_with("2009-02-13 23:31:30"), "{c:?}");
    let a = dump(&img, "/home/a");
    assert!(a.timestamp.starts_with(MTIME), "{a:?}");
    // user.berth=yes: 12 header + align4(4 + 5 + 3) = 24.
    assert_eq!(dump(&img, "/etc/labelled").xattr_size, 24);
    // security.capability (20 bytes) and trusted.berth; trusted.overlay.* is dropped.
    assert_eq!(
        dump(&img, "/etc/caps").xattr_size,
        12 + (4 + 10 + 20usize).next_multiple_of(4) as u64
            + (4 + 5 + 1usize).next_multiple_of(4) as u64
    );
    check("/case/Readme", "regular file", 1, 1, (0, 0), 0o644);
    check("/case/README", "regular file", 2, 1, (0, 0), 0o644);
    check("/case/readme", "regular file", 3, 1, (0, 0), 0o644);
    check("/big", "regular file", BIG, 1, (0, 0), 0o644);
    check("/empty", "regular file", 0, 1, (0, 0), 0o644);
    check(&deep_path(), "regular file", 10, 1, (0, 0), 0o644);
    let many = dump(&img, "/many");
    assert!(many.size > 2 * 4096, "a multi-block directory: {many:?}");
    let listed = dump_ls(&img, "/many");
    let mut names: Vec<&str> = listed.iter().map(|(_, _, n)| n.as_str()).collect();
    let mut want: Vec<String> = (0..500).map(|i| format!("entry-{i:03}")).collect();
    want.extend([".".into(), "..".into()]);
    want.sort();
    names.sort();
    assert_eq!(names, want);
    let case: Vec<String> = dump_ls(&img, "/case").into_iter().map(|r| r.2).collect();
    assert_eq!(
        case,
        [".", "..", "README", "Readme", "readme"],
        "sorted bytewise"
    );
}

#[test]
fn plain_gzip_and_zstd_layers_make_the_same_image() {
    let tar = rich_tar();
    let dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for (i, blob) in [tar.clone(), gzip(&tar), zstd(&tar)].iter().enumerate() {
        let out = dir.path().join(format!("{i}.erofs"));
        let (diff_id, size) = write_layer_image(&blob[..], &out, "l").unwrap();
        assert_eq!(diff_id.to_string(), sha(&tar));
        assert_eq!(size, tar.len() as u64);
        images.push(fs::read(&out).unwrap());
    }
    assert!(images[0] == images[1] && images[1] == images[2]);
    assert_eq!(images[0].len() % 4096, 0);
}

fn three_layers() -> [Vec<u8>; 3] {
    let mut l1 = Tar::new();
    l1.dir("./", 0o755)
        .file("a", 0o644, b"one\n")
        .file("b", 0o644, b"one\n")
        .dir("opq/", 0o755)
        .file("opq/x", 0o644, b"x\n")
        .file("opq/y", 0o644, b"y\n");
    let mut l2 = Tar::new();
    l2.file(".wh.a", 0o644, b"")
        .dir("opq/", 0o750)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/z", 0o644, b"z\n")
        .file(".wh..wh.plnk", 0o644, b"");
    let mut l3 = Tar::new();
    l3.file("a", 0o600, b"three\n")
        .file("new/.wh.b", 0o644, b"");
    [l1.bytes(), l2.bytes(), l3.bytes()]
}

#[test]
fn whiteouts_and_opaque_dirs_take_overlayfs_form() {
    let [_, l2, l3] = three_layers();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write(&l2, dir.path());
    let names: Vec<(u8, String)> = dump_ls(&img, "/").into_iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        names,
        [
            (2, ".".into()),
            (2, "..".into()),
            (3, "a".into()),
            (2, "opq".into())
        ],
        "the whiteout is a char device, the markers are gone"
    );
    let wh = dump(&img, "/a");
    assert_eq!((wh.size, wh.uid, wh.gid, wh.access), (0, 0, 0, 0));
    let opq = dump(&img, "/opq");
    assert_eq!(opq.access, 0o750);
    // trusted.overlay.opaque=y: 12 + align4(4 + 14 + 1) = 32.
    assert_eq!(opq.xattr_size, 32);
    let inside: Vec<String> = dump_ls(&img, "/opq").into_iter().map(|r| r.2).collect();
    assert_eq!(inside, [".", "..", "z"]);

    let dir3 = tempfile::tempdir().unwrap();
    let (img3, _) = write(&l3, dir3.path());
    assert_eq!(dump(&img3, "/new/b").kind, "char dev");
    assert_eq!(
        dump(&img3, "/new").access,
        0o755,
        "implicit parents are 0755"
    );
}

#[test]
fn a_device_node_and_a_setuid_file_create_nothing_on_the_host() {
    let mut t = Tar::new();
    t.chardev("dev/kmsg", 1, 11)
        .special(T::Block, "dev/sda", 8, 0)
        .entry(T::Regular, "su", 0o4755, 0, 0, 1, b"x")
        .file_with_xattr("x", b"", "security.selinux", b"unconfined");
    let dir = tempfile::tempdir().unwrap();
    write(&t.bytes(), dir.path());
    assert_eq!(tree(dir.path()), [PathBuf::from("layer.erofs")]);
}

#[test]
fn corrupt_truncated_and_unknown_layers_are_clear_errors_leaving_nothing() {
    let tar = rich_tar();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layer.erofs");
    let fail = |blob: &[u8]| {
        let err = write_layer_image(blob, &out, "l").unwrap_err();
        assert!(tree(dir.path()).is_empty(), "{err}: {:?}", tree(dir.path()));
        err
    };
    // Cut in the middle of the big file's data.
    let err = fail(&tar[..tar.len() / 2]);
    assert!(matches!(err, Error::BadLayer { .. }), "{err}");
    assert!(
        err.to_string().contains("big") || err.to_string().contains("truncated"),
        "{err}"
    );
    let gz = gzip(&tar);
    let err = fail(&gz[..gz.len() / 2]);
    assert!(matches!(err, Error::BadLayer { .. }), "{err}");
    let zs = zstd(&tar);
    let err = fail(&zs[..zs.len() / 2]);
    assert!(matches!(err, Error::BadLayer { .. }), "{err}");
    let mut garbage = tar[..4096].to_vec();
    garbage[0..100].fill(b'?');
    garbage[148..156].copy_from_slice(b"1234567\0");
    let err = fail(&garbage);
    assert!(err.to_string().contains("corrupt"), "{err}");
    let err = fail(b"\xfd7zXZ\0 pretend this is xz");
    assert!(matches!(err, Error::UnknownMediaType { .. }), "{err}");
    assert!(err.to_string().contains("xz"), "{err}");
}

#[test]
fn a_tar_without_its_final_padding_reads_as_docker_reads_it() {
    // umoci 0.4's `insert` ends its layers right after the last file's data: no padding
    // to the block and no end-of-archive blocks. Go's archive/tar (docker, containerd)
    // reads that as the end; so does berth. A stream that stops anywhere else is still
    // an error.
    let mut t = Tar::new();
    t.dir("peer/", 0o755).file("peer/hello", 0o644, b"hi\n");
    let whole = t.bytes();
    // Header blocks of the folder and the file, then the file's three bytes.
    let unpadded = &whole[..2 * 512 + 3];
    assert_eq!(&unpadded[unpadded.len() - 3..], b"hi\n");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("unpadded.erofs");
    let (diff_id, size) = write_layer_image(unpadded, &out, "umoci").unwrap();
    assert_eq!(size, unpadded.len() as u64);
    assert_eq!(diff_id.hex(), hex::encode(Sha256::digest(unpadded)));
    assert_eq!(dump(&out, "/peer/hello").size, 3);
    let fail = |blob: &[u8]| {
        let out = dir.path().join("bad.erofs");
        let err = write_layer_image(blob, &out, "l").unwrap_err();
        assert!(!out.exists(), "{err}");
        err.to_string()
    };
    // Part of the padding, then nothing: what Go refuses too.
    let err = fail(&whole[..unpadded.len() + 100]);
    assert!(err.contains("truncated"), "{err}");
    // Short of the data.
    let err = fail(&unpadded[..unpadded.len() - 1]);
    assert!(err.contains("truncated") || err.contains("hello"), "{err}");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let mut t = Tar::new();
    t.symlink("f", "/target")
        .file("f", 0o600, b"new")
        .dir("d/", 0o755)
        .file("d/old", 0o644, b"")
        .file("d", 0o644, b"now a file")
        .dir("k/", 0o700)
        .file("k/kept", 0o644, b"")
        .dir("k/", 0o711);
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write(&t.bytes(), dir.path());
    assert_eq!(dump(&img, "/f").kind, "regular file");
    assert_eq!(dump(&img, "/d").size, 10);
    assert_eq!(dump(&img, "/k").access, 0o711);
    let k: Vec<String> = dump_ls(&img, "/k").into_iter().map(|r| r.2).collect();
    assert_eq!(
        k,
        [".", "..", "kept"],
        "a directory over a directory keeps its children"
    );
}

/// Entry by entry, what `fsck.erofs --extract` (as root, preserving owners and modes)
/// writes must equal the tar.
#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn extracted_image_equals_the_tar() {
    require_root();
    let tar = rich_tar();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = write(&tar, dir.path());
    let x = extract(&img);
    let root = x.path().join("x");
    // The tar, as the last entry per path leaves it.
    let mut want: BTreeMap<PathBuf, tar::Header> = BTreeMap::new();
    let mut contents: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let p = PathBuf::from(String::from_utf8(e.path_bytes().into_owned()).unwrap());
        let p: PathBuf = p.components().collect();
        if let Some(l) = e.link_name().unwrap() {
            links.insert(p.clone(), l.into_owned());
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        contents.insert(p.clone(), data);
        want.insert(p, e.header().clone());
    }
    for (p, h) in &want {
        if p.as_os_str().is_empty() {
            continue;
        }
        let at = root.join(p);
        let m = fs::symlink_metadata(&at).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let kind = h.entry_type();
        let ft = m.file_type();
        match kind {
            T::Directory => assert!(ft.is_dir(), "{}", p.display()),
            T::Regular | T::Link => {
                assert!(ft.is_file(), "{}", p.display());
                let data = fs::read(&at).unwrap();
                let expect = if kind == T::Link {
                    &contents[&links[p]]
                } else {
                    &contents[p]
                };
                assert_eq!(
                    Sha256::digest(&data),
                    Sha256::digest(expect),
                    "{}",
                    p.display()
                );
            }
            T::Symlink => {
                assert!(ft.is_symlink(), "{}", p.display());
                assert_eq!(&fs::read_link(&at).unwrap(), &links[p], "{}", p.display());
            }
            T::Char | T::Block => {
                assert!(
                    if kind == T::Char {
                        ft.is_char_device()
                    } else {
                        ft.is_block_device()
                    },
                    "{}",
                    p.display()
                );
                let (maj, min) = (
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                );
                assert_eq!(m.rdev(), libc::makedev(maj, min), "{}", p.display());
            }
            T::Fifo => assert!(ft.is_fifo(), "{}", p.display()),
            _ => continue,
        }
        if kind == T::Link {
            continue;
        }
        // fsck.erofs 1.5 chmods before it chowns, and the chown clears set-id bits, so
        // only the permission bits are compared here (the kernel test checks the rest).
        if !ft.is_symlink() {
            assert_eq!(
                m.mode() & 0o777,
                h.mode().unwrap() & 0o777,
                "{}",
                p.display()
            );
        }
        assert_eq!(
            (u64::from(m.uid()), u64::from(m.gid())),
            (h.uid().unwrap(), h.gid().unwrap()),
            "{}",
            p.display()
        );
    }
    assert_eq!(fs::read(root.join("big")).unwrap().len() as u64, BIG);
}

/// The kernel mounts the images: xattrs (which `--extract` does not restore), whiteouts
/// and opaque directories behave in an overlay of three per-layer images.
#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn the_kernel_stacks_three_layer_images() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for (i, l) in three_layers().iter().enumerate() {
        let sub = dir.path().join(i.to_string());
        fs::create_dir(&sub).unwrap();
        images.push(write(l, &sub).0);
    }
    {
        let single = mount_layers(&images[1..2]);
        let l2 = single.root.parent().unwrap().join("l0");
        let wh = fs::symlink_metadata(l2.join("a")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert_eq!(
            xattr(&l2.join("opq"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
    }
    let m = mount_layers(&images);
    assert_eq!(fs::read(m.root.join("a")).unwrap(), b"three\n");
    assert_eq!(
        fs::read(m.root.join("b")).unwrap(),
        b"one\n",
        "new/.wh.b hides new/b only"
    );
    let mut opq: Vec<String> = fs::read_dir(m.root.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(opq, ["z"]);
    drop(m);

    let rich = dir.path().join("rich");
    fs::create_dir(&rich).unwrap();
    let (img, _) = write(&rich_tar(), &rich);
    let m = mount_layers(&[img]);
    let r = &m.root;
    assert_eq!(
        xattr(&r.join("etc/labelled"), "user.berth").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        xattr(&r.join("etc/caps"), "trusted.berth").as_deref(),
        Some(&b"t"[..])
    );
    assert_eq!(
        xattr(&r.join("etc/caps"), "security.capability").as_deref(),
        Some(&CAP[..])
    );
    assert!(xattr(&r.join("etc/caps"), "trusted.overlay.redirect").is_none());
    assert_eq!(
        fs::read_link(r.join("bin/long")).unwrap(),
        Path::new(&long_target())
    );
    for (p, mode) in [("bin/su", 0o4755), ("bin/sg", 0o2711), ("tmp", 0o1777)] {
        assert_eq!(
            fs::metadata(r.join(p)).unwrap().mode() & 0o7777,
            mode,
            "{p}"
        );
    }
    let null = fs::metadata(r.join("dev/null")).unwrap();
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    let big = fs::metadata(r.join("dev/big")).unwrap();
    assert_eq!(big.rdev(), libc::makedev(259, 300_000));
    assert_eq!(fs::metadata(r.join("home/c")).unwrap().uid(), 4_000_000_000);
    assert_eq!(fs::metadata(r.join("bin/su")).unwrap().nlink(), 2);
    let mut hasher = Sha256::new();
    std::io::copy(&mut fs::File::open(r.join("big")).unwrap(), &mut hasher).unwrap();
    let mut want = Sha256::new();
    std::io::copy(&mut noise(), &mut want).unwrap();
    assert_eq!(hasher.finalize(), want.finalize());
    assert_eq!(fs::read(r.join(&deep_path()[1..])).unwrap(), b"deep leaf\n");
    assert_eq!(fs::read_dir(r.join("many")).unwrap().count(), 500);
}

#[test]
fn a_layer_that_cannot_be_written_leaves_the_store_unchanged() {
    let tar = rich_tar();
    let gz = gzip(&tar);
    let corrupt = gz[..gz.len() / 2].to_vec();
    let layer = Layer {
        diff_id: sha(&tar),
        blob: corrupt,
        media_type: OCI_LAYER_GZIP,
        created_by: "corrupt".into(),
    };
    let img = Image::new(vec![layer], host_arch());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    img.write_layout(&layout, "berth.local/corrupt:v1");
    let archive = work.path().join("img.tar");
    tar_dir(&layout, &archive);
    let store = berth_image::Store::open(work.path().join("store")).unwrap();
    let before = tree(store.root());
    let err = berth_image::archive::load(&store, &archive, &berth_image::Platform::host(), true)
        .unwrap_err();
    assert!(matches!(err, Error::BadLayer { .. }), "{err}");
    assert_eq!(tree(store.root()), before);
    assert!(store.resolve("berth.local/corrupt:v1").is_err());
}
