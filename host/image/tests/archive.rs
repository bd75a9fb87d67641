//! Offline load and save: OCI layouts and docker-save archives, from berth and from skopeo.

mod common;

use std::fs;
use std::process::Command;

use berth_image::{archive, ops, CommitOptions, Error, Platform, Reference, Store};
use common::*;

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is needed");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn oci_archive_loads_and_saves_round_trip() {
    let img = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    img.write_layout(&layout, "berth.local/test:v1");
    let input = work.path().join("in.tar");
    tar_dir(&layout, &input);

    let store = Store::open(work.path().join("a")).unwrap();
    let loaded = archive::load(&store, &input, &Platform::host(), false).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].manifest_digest.as_str(), img.manifest_digest());
    assert_eq!(loaded[0].tags(), ["berth.local/test:v1"]);
    let image = store.resolve("berth.local/test:v1").unwrap();
    assert_eq!(image.id.as_str(), img.config_digest());
    assert_eq!(
        store.resolve(&img.config_digest()[7..19]).unwrap().id,
        image.id
    );
    let history = ops::history(&store, &image);
    assert_eq!(history.len(), 4);
    assert_eq!(history[0].created_by, img.layers[2].created_by);

    // Save, then load into a fresh store: the same image under the same name.
    let saved = work.path().join("saved.tar");
    archive::save(
        &store,
        &["berth.local/test:v1".to_string()],
        fs::File::create(&saved).unwrap(),
    )
    .unwrap();
    // The same images always save to the same bytes (index.json's annotations included).
    for _ in 0..4 {
        let mut again = Vec::new();
        archive::save(&store, &["berth.local/test:v1".to_string()], &mut again).unwrap();
        assert!(again == fs::read(&saved).unwrap(), "save is reproducible");
    }
    let store_b = Store::open(work.path().join("b")).unwrap();
    let back = archive::load(&store_b, &saved, &Platform::host(), false).unwrap();
    assert_eq!(back[0].manifest_digest, image.manifest_digest);
    assert_eq!(back[0].tags(), ["berth.local/test:v1"]);

    // skopeo reads berth's archive both as an OCI archive and as a docker-save archive.
    let oci: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("oci-archive:{}", saved.display()),
    ]))
    .unwrap();
    assert_eq!(oci["Digest"], img.manifest_digest());
    let docker: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{}", saved.display()),
    ]))
    .unwrap();
    let diff_ids: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(docker["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
}

#[test]
fn docker_save_archives_from_skopeo_load() {
    let img = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    img.write_layout(&layout, "v1");
    let docker_archive = work.path().join("docker.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &format!("oci:{}:v1", layout.display()),
        &format!(
            "docker-archive:{}:berth.local/from-skopeo:v1",
            docker_archive.display()
        ),
    ]);
    // gzip'd, as `docker save | gzip` makes them.
    let gz = work.path().join("docker.tar.gz");
    fs::write(&gz, gzip(&fs::read(&docker_archive).unwrap())).unwrap();
    for input in [&docker_archive, &gz] {
        let store = Store::open(work.path().join(format!(
            "s-{}",
            input.file_name().unwrap().to_string_lossy()
        )))
        .unwrap();
        let loaded = archive::load(&store, input, &Platform::host(), false).unwrap();
        assert_eq!(loaded[0].tags(), ["berth.local/from-skopeo:v1"]);
        let image = store.resolve("berth.local/from-skopeo:v1").unwrap();
        let diff_ids: Vec<String> = image
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| d.to_string())
            .collect();
        let want: Vec<String> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
        assert_eq!(diff_ids, want);
        assert_eq!(ops::history(&store, &image).len(), 4);
    }
}

#[test]
fn corrupt_and_hostile_archives_are_refused_and_nothing_is_stored() {
    let img = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    let before = tree(store.root());

    // A layer blob altered inside the layout.
    let layout = work.path().join("layout");
    img.write_layout(&layout, "berth.local/corrupt:v1");
    let blob = layout
        .join("blobs/sha256")
        .join(&sha(&img.layers[1].blob)[7..]);
    let mut data = fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 20] ^= 1;
    fs::write(&blob, data).unwrap();
    let input = work.path().join("corrupt.tar");
    tar_dir(&layout, &input);
    let err = archive::load(&store, &input, &Platform::host(), false).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(tree(store.root()), before);

    // An archive entry trying to leave.
    let mut t = Tar::new();
    t.file("../escape", 0o644, b"x");
    let hostile = work.path().join("hostile.tar");
    fs::write(&hostile, t.bytes()).unwrap();
    let err = archive::load(&store, &hostile, &Platform::host(), false).unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");
    assert_eq!(tree(store.root()), before);

    // Not an image archive at all.
    let mut t = Tar::new();
    t.file("hello", 0o644, b"x");
    let plain = work.path().join("plain.tar");
    fs::write(&plain, t.bytes()).unwrap();
    let err = archive::load(&store, &plain, &Platform::host(), false).unwrap_err();
    assert!(
        err.to_string().contains("neither a docker save archive"),
        "{err}"
    );
    assert_eq!(tree(store.root()), before);
}

#[test]
fn tags_rmi_prune_and_gc() {
    let img = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    img.write_layout(&layout, "bare-tag-only");
    let input = work.path().join("in.tar");
    tar_dir(&layout, &input);
    let store = Store::open(work.path().join("store")).unwrap();
    // A bare tag names nothing: the image is loaded untagged (dangling).
    let loaded = archive::load(&store, &input, &Platform::host(), false).unwrap();
    assert!(loaded[0].tags().is_empty());
    let id = loaded[0].id.clone();
    store.tag(id.as_str(), "app:1").unwrap();
    store.tag("app:1", "localhost:5000/app:2").unwrap();
    let image = store.resolve("docker.io/library/app:1").unwrap();
    assert_eq!(image.tags().len(), 2, "{:?}", image.refs);
    // An ID with two tags needs --force.
    let err = store.remove(&id.hex()[..8], false).unwrap_err();
    assert!(matches!(err, Error::ImageHasSeveralTags { .. }), "{err}");
    let (removed, gc) = store.remove("app:1", false).unwrap();
    assert_eq!(removed, ["docker.io/library/app:1"]);
    assert_eq!(gc.blobs_removed, 0, "still tagged elsewhere");
    let (_, gc) = store.remove("localhost:5000/app:2", false).unwrap();
    assert_eq!(gc.blobs_removed, 5, "manifest, config and three layers");
    assert!(tree(&store.root().join("blobs")).is_empty());
    assert!(matches!(
        store.resolve("app:1"),
        Err(Error::ImageNotFound { .. })
    ));

    // Prune removes dangling images only.
    archive::load(&store, &input, &Platform::host(), false).unwrap();
    let committed = berth_image::commit(
        &store,
        id.as_str(),
        &Tar::new().file(".wh.removed.txt", 0o644, b"").bytes()[..],
        &CommitOptions {
            tag: Some(Reference::parse("berth.local/committed:v1").unwrap()),
            created_by: "berth commit abc".into(),
            comment: Some("a change".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(committed.manifest.layers().len(), 4);
    assert_eq!(
        committed
            .config
            .history
            .last()
            .unwrap()
            .created_by
            .as_deref(),
        Some("berth commit abc")
    );
    let (pruned, gc) = store.prune().unwrap();
    assert_eq!(pruned.len(), 1);
    assert_eq!(
        gc.blobs_removed, 2,
        "only the base manifest and config; layers are shared"
    );
    let left = store.resolve("berth.local/committed:v1").unwrap();
    assert_eq!(ops::history(&store, &left)[0].comment, "a change");
}

#[tokio::test]
async fn berth_local_images_come_from_the_default_archive_never_a_registry() {
    let img = busybox_image();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    img.write_layout(&layout, "berth.local/busybox:latest");
    let input = work.path().join("default.tar");
    tar_dir(&layout, &input);
    let store = Store::open(work.path().join("store")).unwrap();
    let client = berth_image::Client::new(berth_image::ClientOptions {
        progress: false,
        prepare_layers: false,
        ..Default::default()
    })
    .unwrap();
    // Only this test sets the variable in this binary.
    std::env::set_var("BERTH_DEFAULT_IMAGE", &input);
    let image = berth_image::ensure_pulled(&store, &client, "berth.local/busybox")
        .await
        .unwrap();
    assert_eq!(image.manifest_digest.as_str(), img.manifest_digest());
    // A berth.local image the archive lacks is not found, and no registry is asked.
    let err = berth_image::ensure_pulled(&store, &client, "berth.local/other:1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ImageNotFound { .. }), "{err}");
}

#[test]
fn derived_steps_stack_on_scratch_and_a_pinned_cache_goes_with_prune() {
    use berth_image::{derive, Base, DeriveOptions, Keep, BUILD_CACHE_PIN};
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("s")).unwrap();
    let opts = |by: &str, keep: Keep| DeriveOptions {
        created_by: by.into(),
        author: None,
        comment: None,
        config: None,
        keep,
        prepare: false,
    };
    let pin = format!("{BUILD_CACHE_PIN}one");
    let mut layer = &Tar::new().file("hello.txt", 0o644, b"hi").bytes()[..];
    let first = derive(
        &store,
        Base::Scratch(&Platform::host()),
        Some(&mut layer),
        &opts("COPY hello.txt /", Keep::Pin(pin.clone())),
    )
    .unwrap();
    assert_eq!(first.manifest.layers().len(), 1);
    assert_eq!(first.config.architecture, Platform::host().architecture);
    assert!(
        store.list().unwrap().is_empty(),
        "a pinned step is listed nowhere"
    );
    assert_eq!(store.pinned(&pin).unwrap().unwrap().id, first.id);
    let config = berth_image::RunConfig {
        cmd: Some(vec!["/hello".into()]),
        ..Default::default()
    };
    let tag = Reference::parse("berth.local/derived:v1").unwrap();
    let second = derive(
        &store,
        Base::Image(&first),
        None,
        &DeriveOptions {
            config: Some(config.clone()),
            ..opts("CMD [\"/hello\"]", Keep::Tag(tag))
        },
    )
    .unwrap();
    assert_eq!(second.config.rootfs.diff_ids, first.config.rootfs.diff_ids);
    assert_eq!(second.config.config.as_ref(), Some(&config));
    let rows = ops::history(&store, &second);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].created_by.as_str(), rows[0].size),
        ("CMD [\"/hello\"]", 0)
    );
    assert!(second.config.history[1].empty_layer);
    assert_eq!(rows[1].size, first.manifest.layers()[0].size());
    // Prune drops the cache pin; the tagged image keeps its layer.
    store.prune().unwrap();
    assert!(store.pinned(&pin).unwrap().is_none());
    assert!(store.resolve("berth.local/derived:v1").is_ok());
    let (n, _) = store.unpin_prefix(BUILD_CACHE_PIN).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn an_image_tree_merges_its_layers_with_whiteouts_and_opaque_dirs() {
    use berth_image::{derive, tree, Base, DeriveOptions, Keep};
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("s")).unwrap();
    let opts = |by: &str| DeriveOptions {
        created_by: by.into(),
        author: None,
        comment: None,
        config: None,
        keep: Keep::Untagged,
        prepare: false,
    };
    let mut lower = &Tar::new()
        .dir("app", 0o755)
        .file("app/gone", 0o644, b"old")
        .file("app/kept", 0o600, b"kept")
        .dir("app/opaque", 0o755)
        .file("app/opaque/hidden", 0o644, b"hidden")
        .file("other", 0o644, b"other")
        .bytes()[..];
    let first = derive(
        &store,
        Base::Scratch(&Platform::host()),
        Some(&mut lower),
        &opts("one"),
    )
    .unwrap();
    let mut upper = &Tar::new()
        .file("app/.wh.gone", 0o644, b"")
        .file("app/opaque/.wh..wh..opq", 0o644, b"")
        .file("app/opaque/new", 0o644, b"new")
        .hardlink("app/link", "app/kept")
        .bytes()[..];
    let second = derive(&store, Base::Image(&first), Some(&mut upper), &opts("two")).unwrap();
    let files = tree::files_under(&store, &second, "/app").unwrap();
    let names: Vec<String> = files.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "app",
            "app/kept",
            "app/link",
            "app/opaque",
            "app/opaque/new"
        ]
    );
    assert_eq!(files[std::path::Path::new("app/link")].data, b"kept");
    assert_eq!(
        files[std::path::Path::new("app/kept")]
            .header
            .mode()
            .unwrap()
            & 0o7777,
        0o600
    );
    let err = tree::files_under(&store, &second, "/../etc").unwrap_err();
    assert!(err.to_string().contains("/../etc"), "{err}");
}
