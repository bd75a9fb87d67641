//! Test images built from scratch: busybox-static layers with whiteouts, an opaque
//! directory, hard links, devices, ownership and xattrs; hostile layers; OCI layouts;
//! and the request side of the small in-process HTTP servers some tests run.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar being built, with raw control over names (to make hostile entries).
pub struct Tar {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, path: &[u8], mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    assert!(path.len() < 100, "test paths must be short");
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path);
    h
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    pub fn new() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn put(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let h = header(tar::EntryType::Directory, path.as_bytes(), mode, 0);
        self.put(h, b"")
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let h = header(
            tar::EntryType::Regular,
            path.as_bytes(),
            mode,
            data.len() as u64,
        );
        self.put(h, data)
    }

    pub fn owned_file(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = header(
            tar::EntryType::Regular,
            path.as_bytes(),
            mode,
            data.len() as u64,
        );
        h.set_uid(uid);
        h.set_gid(gid);
        self.put(h, data)
    }

    fn link(&mut self, kind: tar::EntryType, path: &[u8], target: &[u8]) -> &mut Self {
        let mut h = header(kind, path, 0o777, 0);
        let ln = &mut h.as_old_mut().linkname;
        ln[..target.len()].copy_from_slice(target);
        self.put(h, b"")
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, path.as_bytes(), target.as_bytes())
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, path.as_bytes(), target.as_bytes())
    }

    pub fn chardev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = header(tar::EntryType::Char, path.as_bytes(), 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.put(h, b"")
    }

    /// A file with an xattr, through a PAX extended header.
    pub fn file_with_xattr(
        &mut self,
        path: &str,
        data: &[u8],
        key: &str,
        value: &[u8],
    ) -> &mut Self {
        self.pax(&[(&format!("SCHILY.xattr.{key}"), value)]);
        self.file(path, 0o644, data)
    }

    /// A PAX extended header with `records`, for the entry that follows.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut all = Vec::new();
        for (key, value) in records {
            let mut body = format!(" {key}=").into_bytes();
            body.extend_from_slice(value);
            body.push(b'\n');
            // The length prefix counts itself.
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len = len.to_string().len() + body.len();
            }
            all.extend_from_slice(len.to_string().as_bytes());
            all.extend_from_slice(&body);
        }
        let h = header(
            tar::EntryType::XHeader,
            b"PaxHeader",
            0o644,
            all.len() as u64,
        );
        self.put(h, &all)
    }

    /// Any entry, with full control over its header fields.
    #[allow(clippy::too_many_arguments)]
    pub fn entry(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = header(kind, path.as_bytes(), mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.put(h, data)
    }

    /// A block or character device or a FIFO.
    pub fn special(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = header(kind, path.as_bytes(), 0o640, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.put(h, b"")
    }

    /// A file whose path is too long for a plain header (a GNU long name).
    pub fn long_file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A regular file of `size` bytes from `data`, streamed (for large files).
    pub fn big_file(&mut self, path: &str, size: u64, data: impl std::io::Read) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, path.as_bytes(), 0o644, size);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn bytes(&mut self) -> Vec<u8> {
        self.b.finish().unwrap();
        self.b.get_ref().clone()
    }
}

/// Runs an erofs-utils tool; panics with its output unless it succeeds. Returns stdout.
pub fn erofs_tool(tool: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (erofs-utils) is needed: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} {args:?} {} failed: {stdout}{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `fsck.erofs` (the reference implementation) on an image: it must be consistent.
pub fn fsck(image: &Path) {
    erofs_tool("fsck.erofs", &[], image);
}

/// Extracts an image with `fsck.erofs --extract` (as root: with owners and modes) into
/// `x/` of the returned directory.
pub fn extract(image: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("x");
    erofs_tool(
        "fsck.erofs",
        &[&format!("--extract={}", dest.display())],
        image,
    );
    dir
}

/// An xattr of `p` (not following symlinks), read through the kernel.
pub fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import os,sys; sys.stdout.buffer.write(os.getxattr(sys.argv[1], sys.argv[2], follow_symlinks=False))")
        .arg(p)
        .arg(name)
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// What `dump.erofs --path` says of one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumped {
    pub nid: u64,
    pub kind: String,
    pub size: u64,
    pub links: u64,
    pub uid: u64,
    pub gid: u64,
    /// The permission bits (dump.erofs 1.5 leaves out set-id and sticky bits).
    pub access: u32,
    pub xattr_size: u64,
    pub timestamp: String,
}

/// Asks `dump.erofs` (erofs-utils) about the inode at `path` ("/" for the root).
pub fn dump(image: &Path, path: &str) -> Dumped {
    let text = erofs_tool("dump.erofs", &[&format!("--path={path}")], image);
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| -> &str {
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no {key} in {text}"));
        words[i + 1]
    };
    let kind_line = text.lines().nth(1).unwrap_or_default();
    let kind = kind_line
        .rsplit("  ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Dumped {
        nid: after("NID:").parse().unwrap(),
        kind,
        size: after("Size:").parse().unwrap(),
        links: after("Links:").parse().unwrap(),
        uid: after("Uid:").parse().unwrap(),
        gid: after("Gid:").parse().unwrap(),
        access: u32::from_str_radix(after("Access:").split('/').next().unwrap(), 8).unwrap(),
        xattr_size: after("Xattr").parse().unwrap_or_else(|_| {
            let i = words.iter().position(|w| *w == "Xattr").unwrap();
            words[i + 2].parse().unwrap()
        }),
        timestamp: text
            .lines()
            .find_map(|l| l.strip_prefix("Timestamp: "))
            .unwrap_or_default()
            .to_string(),
    }
}

/// `dump.erofs --ls` of a directory: (nid, type, name) rows.
pub fn dump_ls(image: &Path, path: &str) -> Vec<(u64, u8, String)> {
    let text = erofs_tool("dump.erofs", &["--ls", &format!("--path={path}")], image);
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("NID TYPE"))
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.to_string(),
            ))
        })
        .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
    pub created_by: String,
}

impl Layer {
    pub fn gz(tar: Vec<u8>, created_by: &str) -> Layer {
        Layer {
            diff_id: sha(&tar),
            blob: gzip(&tar),
            media_type: OCI_LAYER_GZIP,
            created_by: created_by.into(),
        }
    }
    pub fn plain(tar: Vec<u8>, created_by: &str) -> Layer {
        Layer {
            diff_id: sha(&tar),
            blob: tar,
            media_type: OCI_LAYER_TAR,
            created_by: created_by.into(),
        }
    }
}

pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(layers: Vec<Layer>, arch: &str) -> Image {
        let mut history = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            history.push(serde_json::json!({
                "created": format!("2024-01-0{}T10:00:00Z", i + 1),
                "created_by": l.created_by,
            }));
            if i == 0 {
                history.push(serde_json::json!({
                    "created": "2024-01-01T10:00:01Z",
                    "created_by": "ENV PATH=/bin",
                    "empty_layer": true,
                }));
            }
        }
        let config = serde_json::json!({
            "created": "2024-01-03T10:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": history,
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": sha(&l.blob), "size": l.blob.len()})).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        Image {
            layers,
            config,
            manifest,
        }
    }

    pub fn manifest_digest(&self) -> String {
        sha(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        sha(&self.config)
    }

    /// Writes the image into an OCI layout directory under `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let d = sha(data);
            fs::write(blobs.join(&d["sha256:".len()..]), data).unwrap();
        };
        put(&self.config);
        put(&self.manifest);
        for l in &self.layers {
            put(&l.blob);
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index_path = dir.join("index.json");
        let mut index: serde_json::Value = fs::read(&index_path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": self.manifest_digest(),
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// The multi-layer busybox test image:
/// 1. busybox with applet symlinks, dirs, /etc files, a device node, an xattr, and files
///    later removed (`removed.txt`) or hidden (`opq/a`, `opq/b`);
/// 2. hard links and a file owned by 1000:1000;
/// 3. (plain tar) a whiteout of `removed.txt`, an opaque `opq/` with a new `opq/c`,
///    and a changed `/etc/motd`.
pub fn busybox_image() -> Image {
    busybox_image_with(true)
}

/// The busybox image with every layer gzip'd (skopeo recompresses plain layers when it
/// pushes, which would change the digests the registry tests compare).
pub fn busybox_image_gz() -> Image {
    busybox_image_with(false)
}

fn busybox_image_with(plain_top: bool) -> Image {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static) is needed");
    let mut t = Tar::new();
    t.dir("./", 0o755)
        .dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &busybox);
    for applet in ["sh", "ls", "cat", "echo", "stat", "readlink"] {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.dir("etc/", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nuser:x:1000:\n")
        .file("etc/motd", 0o644, b"layer one\n")
        .dir("tmp/", 0o1777)
        .dir("dev/", 0o755)
        .chardev("dev/null", 1, 3)
        .file("removed.txt", 0o644, b"to be whited out\n")
        .dir("opq/", 0o755)
        .file("opq/a", 0o644, b"a\n")
        .file("opq/b", 0o644, b"b\n")
        .file_with_xattr("etc/labelled", b"x\n", "user.berth", b"yes");
    let l1 = Layer::gz(t.bytes(), "/bin/sh -c #(nop) ADD busybox /");
    let mut t = Tar::new();
    t.dir("data/", 0o755)
        .file("data/original", 0o644, b"shared content\n")
        .hardlink("data/hardlink", "data/original")
        .hardlink("data/hardlink2", "./data/original")
        .dir("home/", 0o755)
        .dir("home/user/", 0o750)
        .owned_file("home/user/owned", 0o640, 1000, 1000, b"mine\n");
    let l2 = Layer::gz(
        t.bytes(),
        "/bin/sh -c mkdir data && ln data/original data/hardlink",
    );
    let mut t = Tar::new();
    t.file(".wh.removed.txt", 0o644, b"")
        .dir("opq/", 0o755)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/c", 0o644, b"c\n")
        .file("etc/motd", 0o644, b"layer three\n");
    let by = "/bin/sh -c rm removed.txt && rm -r opq && mkdir opq && echo c > opq/c";
    let l3 = if plain_top {
        Layer::plain(t.bytes(), by)
    } else {
        Layer::gz(t.bytes(), by)
    };
    Image::new(vec![l1, l2, l3], host_arch())
}

/// A one-layer image whose layer holds `t`'s entries after a harmless file.
pub fn image_with_layer(t: &mut Tar, created_by: &str) -> Image {
    Image::new(vec![Layer::gz(t.bytes(), created_by)], host_arch())
}

pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// Tars a directory (an OCI layout) into an archive file.
pub fn tar_dir(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn registry_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test registries with `eval \"$(scripts/registry.sh start)\"` (scripts/test.sh does)")
    })
}

/// Pushes an OCI layout to a registry with skopeo (a real third-party client); returns the
/// manifest digest the registry holds (skopeo may reuse differently compressed blobs it
/// knows from its cache, which changes the manifest).
pub fn skopeo_push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>) -> String {
    let digest_file = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy")
        .arg("--quiet")
        .arg("--preserve-digests")
        .arg("--dest-tls-verify=false")
        .arg("--digestfile")
        .arg(digest_file.path());
    if let Some(c) = creds {
        cmd.arg("--dest-creds").arg(c);
    }
    let out = cmd
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo is needed (Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy to {dest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(digest_file.path())
        .unwrap()
        .trim()
        .to_string()
}

/// Lists every file under a directory (relative paths, sorted), to compare store states.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.retain(|p| !p.starts_with("locks"));
    out.sort();
    out
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: run it as root (scripts/test.sh does)"
    );
}

/// Mounts erofs layer images as overlayfs lowers (lowest first) read-only at a new
/// directory; returns a guard that unmounts.
pub struct Mounted {
    pub root: PathBuf,
    mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

pub fn mount_layers(layers: &[PathBuf]) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let mut mounts = Vec::new();
    let mut lowers = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let m = dir.path().join(format!("l{i}"));
        fs::create_dir(&m).unwrap();
        let st = Command::new("mount")
            .args(["-t", "erofs", "-o", "ro,loop"])
            .arg(l)
            .arg(&m)
            .status()
            .unwrap();
        assert!(st.success(), "mounting {} failed", l.display());
        mounts.push(m.clone());
        lowers.push(m);
    }
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    // overlayfs lists lowers top first.
    let lowerdir: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let lowerdir = if lowerdir.len() == 1 {
        // A single lower needs a second one for a read-only overlay: add an empty dir.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        format!("{}:{}", lowerdir[0], empty.display())
    } else {
        lowerdir.join(":")
    };
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={lowerdir}"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "overlay mount failed");
    mounts.push(root.clone());
    Mounted {
        root,
        mounts,
        _dir: dir,
    }
}

/// One HTTP/1.1 request read by a test's in-process server: its path and headers (names
/// lower-cased), its body consumed; `None` when the client sent no request line.
pub fn read_request(
    reader: &mut impl std::io::BufRead,
) -> Option<(String, std::collections::HashMap<String, String>)> {
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) <= 2 {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(": ") {
            headers.insert(k.to_ascii_lowercase(), v.to_string());
        }
    }
    if let Some(n) = headers
        .get("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut body = vec![0; n];
        let _ = reader.read_exact(&mut body);
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    Some((path, headers))
}
