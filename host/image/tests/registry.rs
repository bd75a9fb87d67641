//! Pull and push against Debian's docker-registry on loopback (started by
//! `scripts/registry.sh start`, which scripts/test.sh runs): round trips with history,
//! cross-repository mounts, platform selection, tampered blobs, hostile layers, auth,
//! registry errors, and concurrent pulls.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use berth_image::auth::Credentials;
use berth_image::registry::BlobPush;
use berth_image::{ops, Client, ClientOptions, Error, Platform, Reference, Store};
use common::*;

const NEEDS: &str = "needs a registry: run by scripts/test.sh (as an ordinary user)";

fn unique(name: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{}", std::process::id(), n % 1_000_000_000)
}

fn client() -> Client {
    Client::new(ClientOptions {
        progress: false,
        prepare_layers: true,
        ..ClientOptions::default()
    })
    .unwrap()
}

/// Pushes `img` with skopeo to `<registry>/<repo>:<tag>`; returns the reference and the
/// manifest digest the registry holds.
fn publish_digest(
    img: &Image,
    registry: &str,
    repo: &str,
    tag: &str,
    creds: Option<&str>,
) -> (Reference, String) {
    let dir = tempfile::tempdir().unwrap();
    img.write_layout(dir.path(), tag);
    let dest = format!("{registry}/{repo}:{tag}");
    let digest = skopeo_push(dir.path(), tag, &dest, creds);
    (Reference::parse(&dest).unwrap(), digest)
}

fn publish(img: &Image, registry: &str, repo: &str, tag: &str, creds: Option<&str>) -> Reference {
    publish_digest(img, registry, repo, tag, creds).0
}

fn registry() -> String {
    let r = registry_env("BERTH_TEST_REGISTRY");
    // Fail loudly when the variable is set but nothing listens.
    std::net::TcpStream::connect(&r).unwrap_or_else(|e| {
        panic!("no registry at {r} ({e}): start it with scripts/registry.sh start")
    });
    r
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn pull_push_round_trip_with_history_and_mounts() {
    let _ = NEEDS;
    let reg = registry();
    let img = busybox_image_gz();
    let repo = unique("test/busybox");
    let (src, digest) = publish_digest(&img, &reg, &repo, "v1", None);

    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("a")).unwrap();
    let c = client();
    let pulled = c.pull(&store, &src).await.unwrap();
    assert_eq!(pulled.image.manifest_digest.as_str(), digest);
    assert_eq!(pulled.image.id.as_str(), img.config_digest());
    assert_eq!(pulled.downloaded.len(), 3);
    // Guest layers were prepared during the pull.
    for (_, diff) in pulled.image.layers() {
        assert!(store.layer_image_path(diff).is_file());
    }
    let history = ops::history(&store, &pulled.image);
    let created_by: Vec<&str> = history.iter().map(|h| h.created_by.as_str()).collect();
    assert_eq!(
        created_by,
        [
            img.layers[2].created_by.as_str(),
            img.layers[1].created_by.as_str(),
            "ENV PATH=/bin",
            img.layers[0].created_by.as_str(),
        ]
    );
    assert_eq!(history[0].id.as_ref(), Some(&pulled.image.id));
    assert!(history[1..].iter().all(|h| h.id.is_none()));
    assert_eq!(history[2].size, 0, "an empty_layer step has no size");
    // Sizes are the uncompressed layer sizes.
    let tar_size_l1 = {
        use std::io::Read;
        let mut d = flate2::read::GzDecoder::new(&img.layers[0].blob[..]);
        let mut v = Vec::new();
        d.read_to_end(&mut v).unwrap();
        v.len() as u64
    };
    assert_eq!(history[3].size, tar_size_l1);
    assert_eq!(history[0].size, {
        use std::io::Read;
        let mut d = flate2::read::GzDecoder::new(&img.layers[2].blob[..]);
        let mut v = Vec::new();
        d.read_to_end(&mut v).unwrap();
        v.len() as u64
    });

    // Pulling again downloads nothing.
    let again = c.pull(&store, &src).await.unwrap();
    assert!(again.downloaded.is_empty());

    // Push to another repository: every blob is mounted from the first one.
    let dst = Reference::parse(&format!("{reg}/{}:v2", unique("test/copy"))).unwrap();
    store.tag(&src.to_string(), &dst.to_string()).unwrap();
    let report = c.push(&store, &dst.to_string(), None).await.unwrap();
    assert_eq!(report.blobs.len(), 4);
    for (d, outcome) in &report.blobs {
        assert_eq!(outcome, &BlobPush::Mounted(repo.clone()), "{d}");
    }
    assert_eq!(report.manifest_digest.as_str(), digest);
    // Pushing again: everything exists.
    let report = c.push(&store, &dst.to_string(), None).await.unwrap();
    assert!(report.blobs.iter().all(|(_, o)| o == &BlobPush::Exists));

    // A fresh store pulls the copy back: same image, same history; by digest too.
    let store_b = Store::open(work.path().join("b")).unwrap();
    let back = c.pull(&store_b, &dst).await.unwrap();
    assert_eq!(back.image.manifest_digest, pulled.image.manifest_digest);
    assert_eq!(ops::history(&store_b, &back.image), history);
    let pinned = Reference::parse(&format!("{}@{digest}", dst.name())).unwrap();
    let by_digest = c.pull(&store_b, &pinned).await.unwrap();
    assert_eq!(by_digest.image.id, pulled.image.id);
    assert!(by_digest.downloaded.is_empty());

    // Upload path: a committed image has a new layer, pushed for real.
    let layer = Tar::new().file("new-file", 0o644, b"committed\n").bytes();
    let committed = berth_image::commit(
        &store,
        &dst.to_string(),
        &layer[..],
        &berth_image::CommitOptions {
            tag: Some(Reference::parse(&format!("{}:committed", dst.name())).unwrap()),
            created_by: "berth commit".into(),
            prepare: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(committed.manifest.layers().len(), 4);
    let report = c
        .push(&store, &format!("{}:committed", dst.name()), None)
        .await
        .unwrap();
    let pushed: Vec<_> = report
        .blobs
        .iter()
        .filter(|(_, o)| o == &BlobPush::Pushed)
        .collect();
    assert_eq!(
        pushed.len(),
        2,
        "the new layer and the new config: {:?}",
        report.blobs
    );
    let store_c = Store::open(work.path().join("c")).unwrap();
    let back = c
        .pull(
            &store_c,
            &Reference::parse(&format!("{}:committed", dst.name())).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(back.image.id, committed.id);
    assert_eq!(
        ops::history(&store_c, &back.image)[0].created_by,
        "berth commit"
    );
    let layers = store_c.guest_layers(&back.image).unwrap();
    assert_eq!(layers.len(), 4);
}

/// An OCI layout (tag `multi`) whose index holds the host platform's image and another's.
fn multi_platform_layout(dir: &Path) -> (Image, Image, Vec<u8>, &'static str) {
    let amd = busybox_image_gz();
    let arm = Image::new(
        busybox_image_gz().layers,
        if host_arch() == "amd64" {
            "arm64"
        } else {
            "amd64"
        },
    );
    // An OCI layout whose index.json is a multi-platform index.
    amd.write_layout(dir, "unused-a");
    arm.write_layout(dir, "unused-b");
    let other_arch = if host_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.manifest_digest(), "size": arm.manifest.len(), "platform": {"os": "linux", "architecture": other_arch}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest_digest(), "size": amd.manifest.len(), "platform": {"os": "linux", "architecture": host_arch()}},
        ]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    std::fs::write(
        dir.join("blobs/sha256")
            .join(&sha(&index_bytes)["sha256:".len()..]),
        &index_bytes,
    )
    .unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha(&index_bytes), "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
        .unwrap(),
    )
    .unwrap();
    (amd, arm, index_bytes, other_arch)
}

/// Pushes the multi-platform layout with skopeo (`format`: `oci` or `v2s2`).
fn publish_multi(dir: &Path, dest: &str, format: &str) {
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("--format={format}"))
        .args(if format == "oci" {
            &["--preserve-digests"][..]
        } else {
            &[][..]
        })
        .arg(format!("oci:{}:multi", dir.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn platform_is_selected_from_an_index() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let (amd, arm, index_bytes, other_arch) = multi_platform_layout(dir.path());
    let repo = unique("test/multi");
    publish_multi(dir.path(), &format!("{reg}/{repo}:multi"), "oci");
    let r = Reference::parse(&format!("{reg}/{repo}:multi")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();

    let host = client().pull(&store, &r).await.unwrap();
    assert_eq!(host.image.manifest_digest.as_str(), amd.manifest_digest());
    assert_eq!(host.digest.as_str(), sha(&index_bytes));

    let other = Client::new(ClientOptions {
        progress: false,
        platform: format!("linux/{other_arch}").parse().unwrap(),
        ..ClientOptions::default()
    })
    .unwrap();
    let arm_pull = other.pull(&store, &r).await.unwrap();
    assert_eq!(
        arm_pull.image.manifest_digest.as_str(),
        arm.manifest_digest()
    );

    // No such platform: a clear error, and the store is exactly as before.
    let before = tree(store.root());
    let none = Client::new(ClientOptions {
        progress: false,
        platform: "linux/s390x".parse::<Platform>().unwrap(),
        ..ClientOptions::default()
    })
    .unwrap();
    let err = none.pull(&store, &r).await.unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
    assert!(err.to_string().contains("linux/s390x"), "{err}");
    assert_eq!(tree(store.root()), before);
}

fn registry_blob(digest: &str) -> std::path::PathBuf {
    let data = registry_env("BERTH_TEST_REGISTRY_DATA");
    let hex = &digest["sha256:".len()..];
    Path::new(&data)
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn tampered_and_truncated_blobs_are_refused_and_nothing_is_stored() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    // Something already in the store, which must stay exactly as it is.
    let keep = Tar::new().file("keep", 0o644, b"keep").bytes();
    let keep_img = Image::new(vec![Layer::gz(keep, "keep")], host_arch());
    let keep_ref = publish(&keep_img, &reg, &unique("test/keep"), "v1", None);
    client().pull(&store, &keep_ref).await.unwrap();
    let before = tree(store.root());
    let repos_before = std::fs::read(store.root().join("repositories.json")).unwrap();

    for (case, mutate) in [
        (
            "tampered",
            (|p: &Path| {
                let mut d = std::fs::read(p).unwrap();
                let n = d.len();
                d[n / 2] ^= 0xff;
                std::fs::write(p, d).unwrap();
            }) as fn(&Path),
        ),
        ("truncated", |p: &Path| {
            let d = std::fs::read(p).unwrap();
            std::fs::write(p, &d[..d.len() - 100]).unwrap();
        }),
    ] {
        let layer = Tar::new()
            .file(case, 0o644, unique(case).as_bytes())
            .file("pad", 0o644, &vec![7u8; 4096])
            .bytes();
        let img = Image::new(vec![Layer::gz(layer, case)], host_arch());
        let r = publish(&img, &reg, &unique(&format!("test/{case}")), "v1", None);
        let blob = registry_blob(&sha(&img.layers[0].blob));
        mutate(&blob);
        let err = client().pull(&store, &r).await.unwrap_err();
        match (case, &err) {
            ("tampered", Error::DigestMismatch { .. })
            | ("truncated", Error::SizeMismatch { .. }) => {}
            _ => panic!("{case}: unexpected error {err}"),
        }
        assert!(err.to_string().contains("nothing was stored"), "{err}");
        assert_eq!(tree(store.root()), before, "{case}: store changed");
        assert_eq!(
            std::fs::read(store.root().join("repositories.json")).unwrap(),
            repos_before
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn hostile_layer_from_a_registry_is_refused_naming_the_entry() {
    let reg = registry();
    let img = image_with_layer(
        Tar::new()
            .file("fine", 0o644, b"ok")
            .file("../../escape", 0o644, b"x"),
        "hostile",
    );
    let r = publish(&img, &reg, &unique("test/hostile"), "v1", None);
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    let before = tree(store.root());
    let err = client().pull(&store, &r).await.unwrap_err();
    assert!(matches!(err, Error::UnsafeLayerEntry { .. }), "{err}");
    assert!(err.to_string().contains("\"../../escape\""), "{err}");
    assert_eq!(tree(store.root()), before);
    assert!(!work.path().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn registry_errors_are_clear() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let before = tree(store.root());
    // 404.
    let missing = Reference::parse(&format!("{reg}/{}:nope", unique("test/missing"))).unwrap();
    let err = client().pull(&store, &missing).await.unwrap_err();
    assert!(matches!(err, Error::RegistryNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("MANIFEST_UNKNOWN") || err.to_string().contains("NAME_UNKNOWN"),
        "{err}"
    );

    // 401 from the authenticated registry without credentials, then with wrong ones.
    let auth_reg = registry_env("BERTH_TEST_AUTH_REGISTRY");
    let user = registry_env("BERTH_TEST_AUTH_USER");
    let password = registry_env("BERTH_TEST_AUTH_PASSWORD");
    let img = busybox_image_gz();
    let repo = unique("test/private");
    let (r, digest) = publish_digest(
        &img,
        &auth_reg,
        &repo,
        "v1",
        Some(&format!("{user}:{password}")),
    );
    let err = client().pull(&store, &r).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("berth login"), "{err}");
    let c = client();
    let wrong = Credentials {
        username: user.clone(),
        password: "wrong".into(),
    };
    let err = c.check_login(&auth_reg, &wrong).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(tree(store.root()), before);

    // Right credentials: login succeeds, pull and push work with basic auth.
    let c = client();
    let good = Credentials {
        username: user,
        password,
    };
    c.check_login(&auth_reg, &good).await.unwrap();
    let pulled = c.pull(&store, &r).await.unwrap();
    assert_eq!(pulled.image.manifest_digest.as_str(), digest);
    let copy = format!("{auth_reg}/{}:v1", unique("test/private-copy"));
    store.tag(&r.to_string(), &copy).unwrap();
    let report = c.push(&store, &copy, None).await.unwrap();
    assert!(
        report
            .blobs
            .iter()
            .all(|(_, o)| matches!(o, BlobPush::Mounted(_))),
        "{:?}",
        report.blobs
    );

    // 5xx: retried, then a clear error naming the status.
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}"#;
            let _ = write!(
                s,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let r = Reference::parse(&format!("127.0.0.1:{}/test/down:v1", addr.port())).unwrap();
    let err = client().pull(&store, &r).await.unwrap_err();
    assert!(
        matches!(err, Error::RegistryStatus { status: 503, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("down for maintenance"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 4, "retried 3 times");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn concurrent_pulls_of_one_image_are_safe() {
    let reg = registry();
    let img = busybox_image_gz();
    let (r, digest) = publish_digest(&img, &reg, &unique("test/concurrent"), "v1", None);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().to_path_buf();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let root = root.clone();
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let store = Store::open(&root).unwrap();
            client()
                .pull(&store, &r)
                .await
                .map(|p| p.image.manifest_digest)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().as_str(), digest);
    }
    let store = Store::open(&root).unwrap();
    let image = store.resolve(&r.to_string()).unwrap();
    assert_eq!(store.guest_layers(&image).unwrap().len(), 3);
    // Every blob verifies and nothing is left in tmp.
    for d in [&image.manifest_digest, &image.id] {
        store.read_blob(d).unwrap();
    }
    assert!(std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(tree(&root.join("blobs")).len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
async fn docker_schema2_manifest_lists_pull_push_and_prepare() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let (amd, _, _, _) = multi_platform_layout(dir.path());
    let repo = unique("test/docker-list");
    publish_multi(dir.path(), &format!("{reg}/{repo}:multi"), "v2s2");
    let r = Reference::parse(&format!("{reg}/{repo}:multi")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("a")).unwrap();
    let pulled = client().pull(&store, &r).await.unwrap();
    assert_eq!(
        pulled.image.manifest_media_type,
        berth_image::manifest::DOCKER_MANIFEST
    );
    assert!(pulled
        .image
        .manifest
        .layers()
        .iter()
        .all(|l| l.media_type().as_ref() == berth_image::manifest::DOCKER_LAYER_GZIP));
    let list = store.read_blob(&pulled.digest).unwrap();
    assert!(String::from_utf8_lossy(&list).contains(berth_image::manifest::DOCKER_LIST));
    assert_eq!(
        pulled.image.id.as_str(),
        amd.config_digest(),
        "same config as the OCI original"
    );
    assert_eq!(store.guest_layers(&pulled.image).unwrap().len(), 3);

    let dst = format!("{reg}/{}:v1", unique("test/docker-copy"));
    store.tag(&r.to_string(), &dst).unwrap();
    let report = client().push(&store, &dst, None).await.unwrap();
    assert!(report
        .blobs
        .iter()
        .all(|(_, o)| matches!(o, BlobPush::Mounted(_))));
    let store_b = Store::open(work.path().join("b")).unwrap();
    let back = client()
        .pull(&store_b, &Reference::parse(&dst).unwrap())
        .await
        .unwrap();
    assert_eq!(back.image.manifest_digest, pulled.image.manifest_digest);
    assert_eq!(
        back.image.manifest_media_type,
        berth_image::manifest::DOCKER_MANIFEST
    );
}
