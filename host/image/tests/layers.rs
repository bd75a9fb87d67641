//! Layers become overlay-ready erofs images with OCI semantics; hostile layers are refused.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_image::erofs::write_layer_image;
use berth_image::{Error, Platform, Store};
use common::*;

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn busybox_layers_stack_into_the_expected_tree() {
    require_root();
    let img = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    img.write_layout(&layout, "berth.local/layers:v1");
    let archive = work.path().join("img.tar");
    tar_dir(&layout, &archive);
    let store = Store::open(work.path().join("store")).unwrap();
    let loaded = berth_image::archive::load(&store, &archive, &Platform::host(), true).unwrap();
    assert_eq!(loaded.len(), 1);
    let image = store.resolve("berth.local/layers:v1").unwrap();
    let layers = store.guest_layers(&image).unwrap();
    assert_eq!(layers.len(), 3);
    for (l, (_, diff)) in layers.iter().zip(image.layers()) {
        assert_eq!(l, &store.layer_image_path(diff));
        assert_eq!(fs::metadata(l).unwrap().permissions().mode() & 0o777, 0o444);
    }

    // Layer 3 alone: whiteouts in overlayfs form.
    {
        let m = mount_layers(&layers[2..]);
        let l3 = m.root.parent().unwrap().join("l0");
        let wh = fs::symlink_metadata(l3.join("removed.txt")).unwrap();
        assert!(wh.file_type().is_char_device(), "whiteout is a char device");
        assert_eq!(wh.rdev(), 0, "whiteout is 0:0");
        assert_eq!(
            xattr(&l3.join("opq"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert!(!l3.join(".wh.removed.txt").exists());
        assert!(!l3.join("opq/.wh..wh..opq").exists());
    }

    let m = mount_layers(&layers);
    let root = &m.root;
    // Layers 2 and 3 have no "./" entry: their roots must not hide the base's 0755.
    for l in &layers {
        let single = mount_layers(std::slice::from_ref(l));
        let top = single.root.parent().unwrap().join("l0");
        assert_eq!(
            fs::metadata(&top).unwrap().mode() & 0o7777,
            0o755,
            "{}",
            l.display()
        );
    }
    assert_eq!(fs::metadata(root).unwrap().mode() & 0o7777, 0o755);
    // Symlinks and the busybox binary.
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let out = std::process::Command::new(root.join("bin/busybox"))
        .args(["echo", "from the layers"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"from the layers\n");
    // Whiteout and opaque directory.
    assert!(
        !root.join("removed.txt").exists(),
        "whited-out file is gone"
    );
    let mut opq: Vec<String> = fs::read_dir(root.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(opq, ["c"], "opaque dir hides the lower entries");
    assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"layer three\n");
    // Hard links share an inode.
    let a = fs::metadata(root.join("data/original")).unwrap();
    let b = fs::metadata(root.join("data/hardlink")).unwrap();
    let c = fs::metadata(root.join("data/hardlink2")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
    // Ownership, modes, devices, xattrs, times.
    let owned = fs::metadata(root.join("home/user/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    assert_eq!(owned.mode() & 0o7777, 0o640);
    assert_eq!(
        fs::metadata(root.join("home/user")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let null = fs::metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(
        xattr(&root.join("etc/labelled"), "user.berth").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        fs::metadata(root.join("etc/passwd")).unwrap().mtime(),
        1_700_000_000
    );
    drop(m);

    // A second request reuses the images; rmi collects them.
    assert_eq!(store.guest_layers(&image).unwrap(), layers);
    store.remove("berth.local/layers:v1", false).unwrap();
    for l in &layers {
        assert!(!l.exists(), "{} should be collected", l.display());
    }
    assert!(fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
}

fn refused(t: &mut Tar, entry: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layer.erofs");
    let layer = t.bytes();
    let err = write_layer_image(&layer[..], &out, "test-layer").unwrap_err();
    match &err {
        Error::UnsafeLayerEntry { entry: e, .. } => assert_eq!(e, entry, "{err}"),
        other => panic!("expected UnsafeLayerEntry for {entry:?}, got {other}"),
    }
    assert!(err.to_string().contains(entry), "{err}");
    // Nothing is left: not even the half-written image.
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
}

#[test]
fn hostile_layers_are_refused_naming_the_entry() {
    refused(
        Tar::new()
            .file("ok", 0o644, b"")
            .file("../evil", 0o644, b"x"),
        "../evil",
    );
    refused(Tar::new().file("a/../../evil", 0o644, b"x"), "a/../../evil");
    refused(Tar::new().file("/etc/evil", 0o644, b"x"), "/etc/evil");
    refused(Tar::new().symlink("up", "../../evil"), "up");
    refused(Tar::new().symlink("d/up", "../../../evil"), "d/up");
    refused(
        Tar::new()
            .symlink("escape", "/")
            .file("escape/evil", 0o644, b"x"),
        "escape/evil",
    );
    refused(
        Tar::new()
            .symlink("dir", "sub")
            .dir("sub/", 0o755)
            .file("dir/f", 0o644, b""),
        "dir/f",
    );
    refused(
        Tar::new().file("f", 0o644, b"").file("f/g", 0o644, b""),
        "f/g",
    );
    refused(Tar::new().hardlink("hl", "../../evil"), "hl");
    refused(Tar::new().hardlink("hl", "/etc/passwd"), "hl");
    refused(Tar::new().hardlink("hl", "etc/shadow"), "hl");
    refused(Tar::new().dir("d/", 0o755).hardlink("hl", "d"), "hl");
    refused(
        Tar::new()
            .symlink("s", "sub")
            .dir("sub/", 0o755)
            .file("sub/f", 0o644, b"")
            .hardlink("hl", "s/f"),
        "hl",
    );
    refused(Tar::new().file(".wh...", 0o644, b""), ".wh...");
    let long = format!("d/{}", "n".repeat(256));
    refused(Tar::new().long_file(&long, b"x"), &long);
}
