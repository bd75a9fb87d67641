//! The local content-addressed store.
//!
//! ```text
//! $BERTH_ROOT (default $XDG_DATA_HOME/berth, ~/.local/share/berth)
//! ├── blobs/sha256/<hex>          manifests, indexes, configs, layer blobs (verified, read-only)
//! ├── layers/sha256/<hex>.erofs   guest-ready read-only layer images, keyed by diff ID
//! ├── layers/sha256/<hex>.json    their metadata (uncompressed size)
//! ├── repositories.json           references -> manifest digests, blob sources for cross-repo mounts
//! ├── locks/                      flock files: gc (shared by writers, exclusive by GC), refs, per layer
//! └── tmp/                        staging: pulls and loads write here and rename into place
//! ```
//!
//! Every blob is hashed while it is written into `tmp/`, checked against its digest and size,
//! synced, and only then renamed into `blobs/`: a reader never sees a half-written or
//! unverified blob. A pull stages everything it fetches and commits only when all of it is
//! verified, so a failed pull leaves the store as it was. Writers hold the `gc` lock shared;
//! garbage collection holds it exclusively, so it never removes a blob a pull is about to
//! reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor, ImageConfig, ImageManifest};
use crate::reference::{Digest, Reference};

/// The reference key prefix of images that have no tag.
pub const UNTAGGED: &str = "<none>@";

/// The pin holder prefix of a build's cached steps (`build-cache:<step key>`).
pub const BUILD_CACHE_PIN: &str = "build-cache:";

/// What a reference points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    /// The platform-specific image manifest.
    pub manifest: Digest,
    /// The index or manifest list it was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

/// The mutable part of the store: references and blob sources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Repositories {
    /// Full reference (`registry/repo:tag`, `registry/repo@digest`, or `<none>@digest`) -> image.
    #[serde(default)]
    pub refs: BTreeMap<String, RefEntry>,
    /// Blob digest -> `registry/repository` names known to hold it (for cross-repo mounts).
    #[serde(default)]
    pub sources: BTreeMap<Digest, BTreeSet<String>>,
    /// Holder (a container ID) -> the manifest it uses: kept by garbage collection even
    /// when no reference is left, so `rmi` never pulls the layers from under a container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, Digest>,
}

impl Repositories {
    /// Records that `name` (`registry/repository`) holds `digest`.
    pub fn add_source(&mut self, digest: &Digest, name: &str) {
        self.sources
            .entry(digest.clone())
            .or_default()
            .insert(name.to_string());
    }
}

/// A held file lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// An image in the local store.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Image ID: the config digest, as docker shows it.
    pub id: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfig,
    /// The references that point to it, sorted.
    pub refs: Vec<String>,
}

impl LocalImage {
    /// Layer blob descriptors paired with their diff IDs, lowest first.
    pub fn layers(&self) -> impl Iterator<Item = (&Descriptor, &Digest)> {
        self.manifest
            .layers()
            .iter()
            .zip(self.config.rootfs.diff_ids.iter())
    }

    /// The tagged references (not digest-only ones).
    pub fn tags(&self) -> Vec<String> {
        self.refs
            .iter()
            .filter(|r| !r.starts_with(UNTAGGED) && !r.contains('@'))
            .cloned()
            .collect()
    }

    /// Total size of the layer blobs and config.
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

/// The image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The store directory: `$BERTH_ROOT`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
pub fn default_root() -> Result<PathBuf> {
    if let Some(r) = std::env::var_os("BERTH_ROOT").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(r));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("berth"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or(Error::NoDataDir)?;
    Ok(PathBuf::from(home).join(".local/share/berth"))
}

fn is_hex_prefix(s: &str) -> bool {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    /// Opens the default store (see [`default_root`]), creating it if needed.
    pub fn open_default() -> Result<Store> {
        Store::open(default_root()?)
    }

    /// Opens (and creates) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in ["blobs/sha256", "layers/sha256", "locks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).at(&p)?;
        }
        Ok(Store { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Is the blob present?
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob (manifests and configs), verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        let data = fs::read(&p).at(&p)?;
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(data)
    }

    /// Where the guest-ready image of a layer lives (keyed by diff ID).
    pub fn layer_image_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers/sha256")
            .join(format!("{}.erofs", diff_id.hex()))
    }

    /// Where a layer's metadata lives.
    pub fn layer_meta_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers/sha256")
            .join(format!("{}.json", diff_id.hex()))
    }

    /// The uncompressed size of a prepared layer, if known.
    pub fn layer_size(&self, diff_id: &Digest) -> Option<u64> {
        let data = fs::read(self.layer_meta_path(diff_id)).ok()?;
        let meta: LayerMeta = serde_json::from_slice(&data).ok()?;
        Some(meta.size)
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<Lock> {
        let p = self.root.join("locks").join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .at(&p)?;
        if exclusive {
            file.lock().at(&p)?;
        } else {
            file.lock_shared().at(&p)?;
        }
        Ok(Lock { _file: file })
    }

    /// Held by anything that adds content: blocks garbage collection meanwhile.
    pub fn writer_lock(&self) -> Result<Lock> {
        self.lock("gc", false)
    }

    /// Held by garbage collection.
    fn gc_lock(&self) -> Result<Lock> {
        self.lock("gc", true)
    }

    /// Serialises the build of one layer image.
    pub(crate) fn layer_lock(&self, diff_id: &Digest) -> Result<Lock> {
        self.lock(&format!("layer-{}", diff_id.hex()), true)
    }

    /// A fresh staging area under `tmp/`, removed on drop unless committed.
    pub fn staging(&self) -> Result<Staging> {
        let tmp = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&tmp)
            .at(&tmp)?;
        Ok(Staging {
            dir,
            blobs: BTreeMap::new(),
            layers: BTreeMap::new(),
        })
    }

    /// Reads the references file.
    pub fn repositories(&self) -> Result<Repositories> {
        let p = self.root.join("repositories.json");
        match fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| Error::Malformed {
                what: p.display().to_string(),
                reason: format!("{e}; fix or remove the file"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Repositories::default()),
            Err(e) => Err(e).at(&p),
        }
    }

    /// Changes the references file under its lock, atomically.
    pub fn update_repositories<T>(
        &self,
        change: impl FnOnce(&mut Repositories) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock("refs", true)?;
        let mut repos = self.repositories()?;
        let out = change(&mut repos)?;
        let p = self.root.join("repositories.json");
        let data = serde_json::to_vec_pretty(&repos).map_err(|e| Error::Malformed {
            what: "repositories".into(),
            reason: e.to_string(),
        })?;
        let tmp = self.root.join("tmp");
        let mut f = tempfile::NamedTempFile::new_in(&tmp).at(&tmp)?;
        f.write_all(&data).at(f.path())?;
        f.as_file().sync_all().at(&p)?;
        f.persist(&p).map_err(|e| e.error).at(&p)?;
        Ok(out)
    }

    /// Loads an image by manifest digest.
    pub fn image_by_manifest(
        &self,
        manifest_digest: &Digest,
        refs: Vec<String>,
    ) -> Result<LocalImage> {
        let what = format!("manifest {manifest_digest}");
        let data = self.read_blob(manifest_digest)?;
        let (media_type, kind) = manifest::parse_manifest(&data, "", &what)?;
        let manifest = match kind {
            manifest::ManifestKind::Image(m) => m,
            manifest::ManifestKind::Index(_) => {
                return Err(Error::Malformed {
                    what,
                    reason: "a reference points to an index, not an image manifest".into(),
                })
            }
        };
        let id = Digest::try_from(manifest.config().digest())?;
        let config_data = self.read_blob(&id)?;
        let config = manifest::parse_config(&config_data, &manifest, &what)?;
        Ok(LocalImage {
            id,
            manifest_digest: manifest_digest.clone(),
            manifest_media_type: media_type,
            manifest,
            config,
            refs,
        })
    }

    /// All images, one per manifest, with their references.
    pub fn list(&self) -> Result<Vec<LocalImage>> {
        let repos = self.repositories()?;
        let mut by_manifest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (r, e) in &repos.refs {
            by_manifest
                .entry(e.manifest.clone())
                .or_default()
                .push(r.clone());
        }
        let mut out = Vec::new();
        for (m, refs) in by_manifest {
            match self.image_by_manifest(&m, refs) {
                Ok(img) => out.push(img),
                Err(e) => tracing::warn!("skipping broken image {m}: {e}"),
            }
        }
        Ok(out)
    }

    /// Finds the reference keys an argument names: a reference (normalised, with an exact
    /// match or, for a digest-pinned one, any reference to that manifest or index), or an
    /// image-ID prefix.
    fn lookup(&self, arg: &str, repos: &Repositories) -> Result<Vec<String>> {
        if let Ok(r) = Reference::parse(arg) {
            let key = r.to_string();
            if repos.refs.contains_key(&key) {
                return Ok(vec![key]);
            }
            if let Some(d) = &r.digest {
                let name = r.name();
                let hits: Vec<String> = repos
                    .refs
                    .iter()
                    .filter(|(k, e)| {
                        (k.starts_with(&format!("{name}:")) || k.starts_with(&format!("{name}@")))
                            && (&e.manifest == d || e.index.as_ref() == Some(d))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if !hits.is_empty() {
                    return Ok(hits);
                }
            }
        }
        if is_hex_prefix(arg) {
            let prefix = arg.strip_prefix("sha256:").unwrap_or(arg);
            let mut ids: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
            for (k, e) in &repos.refs {
                if let Ok(img) = self.image_by_manifest(&e.manifest, vec![]) {
                    if img.id.hex().starts_with(prefix) {
                        ids.entry(img.id).or_default().push(k.clone());
                    }
                }
            }
            match ids.len() {
                0 => {}
                1 => return Ok(ids.into_values().next().unwrap_or_default()),
                n => {
                    return Err(Error::AmbiguousImage {
                        prefix: arg.to_string(),
                        count: n,
                    })
                }
            }
        }
        Err(Error::ImageNotFound {
            reference: arg.to_string(),
        })
    }

    /// Resolves a reference or image-ID prefix to a local image.
    pub fn resolve(&self, arg: &str) -> Result<LocalImage> {
        let repos = self.repositories()?;
        let keys = match self.lookup(arg, &repos) {
            Ok(k) => k,
            Err(Error::ImageNotFound { reference }) if is_hex_prefix(arg) => {
                // An untagged image a container still pins is found by its ID.
                let prefix = arg.strip_prefix("sha256:").unwrap_or(arg);
                let pinned: BTreeSet<&Digest> = repos.pins.values().collect();
                for m in pinned {
                    if let Ok(img) = self.image_by_manifest(m, vec![]) {
                        if img.id.hex().starts_with(prefix) {
                            return Ok(img);
                        }
                    }
                }
                return Err(Error::ImageNotFound { reference });
            }
            Err(e) => return Err(e),
        };
        let manifest = repos.refs[&keys[0]].manifest.clone();
        let all: Vec<String> = repos
            .refs
            .iter()
            .filter(|(_, e)| e.manifest == manifest)
            .map(|(k, _)| k.clone())
            .collect();
        self.image_by_manifest(&manifest, all)
    }

    /// Points `target` at the image `source` names.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference> {
        let img = self.resolve(source)?;
        let target = Reference::parse(target)?;
        if target.digest.is_some() {
            return Err(Error::InvalidReference {
                reference: target.to_string(),
                reason: "a tag target cannot carry a digest".into(),
            });
        }
        self.update_repositories(|repos| {
            repos.refs.insert(
                target.to_string(),
                RefEntry {
                    manifest: img.manifest_digest.clone(),
                    index: None,
                },
            );
            // An image that gets a tag is no longer dangling.
            repos
                .refs
                .remove(&format!("{UNTAGGED}{}", img.manifest_digest));
            Ok(())
        })?;
        Ok(target)
    }

    /// Removes a reference (or, for an image ID, all references of that image when it has
    /// one tag or `force`), then collects garbage. Returns the removed references.
    pub fn remove(&self, arg: &str, force: bool) -> Result<(Vec<String>, GcReport)> {
        let removed = self.update_repositories(|repos| {
            let keys = self.lookup(arg, repos)?;
            let by_id = Reference::parse(arg)
                .map(|r| !repos.refs.contains_key(&r.to_string()) && r.digest.is_none())
                .unwrap_or(true);
            if by_id && keys.len() > 1 && !force {
                let id = arg.to_string();
                return Err(Error::ImageHasSeveralTags {
                    id,
                    tags: keys.join(", "),
                });
            }
            for k in &keys {
                repos.refs.remove(k);
            }
            Ok(keys)
        })?;
        let report = self.gc()?;
        Ok((removed, report))
    }

    /// Removes dangling (untagged) images and the build cache, then collects garbage.
    pub fn prune(&self) -> Result<(Vec<String>, GcReport)> {
        let removed = self.update_repositories(|repos| {
            repos
                .pins
                .retain(|holder, _| !holder.starts_with(BUILD_CACHE_PIN));
            let keys: Vec<String> = repos
                .refs
                .keys()
                .filter(|k| k.starts_with(UNTAGGED))
                .cloned()
                .collect();
            for k in &keys {
                repos.refs.remove(k);
            }
            Ok(keys)
        })?;
        let report = self.gc()?;
        Ok((removed, report))
    }

    /// Deletes blobs and layer images no reference reaches, and stale staging files.
    pub fn gc(&self) -> Result<GcReport> {
        let _gc = self.gc_lock()?;
        let repos = self.repositories()?;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut keep_layers: BTreeSet<String> = BTreeSet::new();
        let roots = repos
            .refs
            .values()
            .map(|e| (e.manifest.clone(), e.index.clone()))
            .chain(repos.pins.values().map(|m| (m.clone(), None)));
        for (manifest, index) in roots {
            keep.insert(manifest.hex().to_string());
            if let Some(i) = &index {
                keep.insert(i.hex().to_string());
            }
            match self.image_by_manifest(&manifest, vec![]) {
                Ok(img) => {
                    keep.insert(img.id.hex().to_string());
                    for (l, diff) in img.layers() {
                        // Parsed manifests hold sha256 digests only: the hex is the file name.
                        keep.insert(l.digest().digest().to_string());
                        keep_layers.insert(diff.hex().to_string());
                    }
                }
                Err(err) => tracing::warn!("gc: cannot read image {manifest}: {err}"),
            }
        }
        let mut report = GcReport::default();
        let blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).at(&blobs)? {
            let entry = entry.at(&blobs)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).at(entry.path())?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        let layers = self.root.join("layers/sha256");
        for entry in fs::read_dir(&layers).at(&layers)? {
            let entry = entry.at(&layers)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("");
            if !keep_layers.contains(stem) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).at(entry.path())?;
                if name.ends_with(".erofs") {
                    report.layers_removed += 1;
                }
                report.bytes_freed += size;
            }
        }
        // No writer holds the gc lock now, so everything in tmp/ is left over from a crash.
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let entry = entry.at(&tmp)?;
            let p = entry.path();
            let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(e) = r {
                tracing::warn!("gc: cannot remove {}: {e}", p.display());
            }
        }
        if repos.sources.keys().any(|d| !keep.contains(d.hex())) {
            drop(_gc);
            self.update_repositories(|r| {
                r.sources.retain(|d, _| keep.contains(d.hex()));
                Ok(())
            })?;
        }
        Ok(report)
    }

    /// Keeps `image` (its manifest, config, layer blobs and layer images) out of garbage
    /// collection while `holder` (a container ID) uses it, even if its tags are removed.
    pub fn pin(&self, image: &LocalImage, holder: &str) -> Result<()> {
        self.update_repositories(|r| {
            r.pins
                .insert(holder.to_string(), image.manifest_digest.clone());
            Ok(())
        })
    }

    /// Releases `holder`'s pin (for example when its container is removed); the image's
    /// data goes at the next `rmi` or `image prune` if nothing else references it.
    pub fn unpin(&self, holder: &str) -> Result<()> {
        self.update_repositories(|r| {
            r.pins.remove(holder);
            Ok(())
        })
    }

    /// The image `holder` pins, if any and if it is whole.
    pub fn pinned(&self, holder: &str) -> Result<Option<LocalImage>> {
        let Some(manifest) = self.repositories()?.pins.get(holder).cloned() else {
            return Ok(None);
        };
        Ok(self.image_by_manifest(&manifest, vec![]).ok())
    }

    /// Releases every pin whose holder starts with `prefix` (the build cache's are
    /// [`BUILD_CACHE_PIN`]), then collects garbage. Returns how many were released.
    pub fn unpin_prefix(&self, prefix: &str) -> Result<(usize, GcReport)> {
        let n = self.update_repositories(|r| {
            let before = r.pins.len();
            r.pins.retain(|holder, _| !holder.starts_with(prefix));
            Ok(before - r.pins.len())
        })?;
        Ok((n, self.gc()?))
    }

    /// Records references and sources after a commit.
    pub fn set_refs(
        &self,
        refs: &[(String, RefEntry)],
        sources: &[(Digest, String)],
    ) -> Result<()> {
        self.update_repositories(|repos| {
            for (k, e) in refs {
                if !k.starts_with(UNTAGGED) {
                    repos.refs.remove(&format!("{UNTAGGED}{}", e.manifest));
                }
                repos.refs.insert(k.clone(), e.clone());
            }
            for (d, n) in sources {
                repos.add_source(d, n);
            }
            Ok(())
        })
    }
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Layer images deleted.
    pub layers_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Metadata kept beside a layer image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Size of the uncompressed layer tar.
    pub size: u64,
}

/// A staging area: verified blobs and layer images waiting to be committed together.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
    blobs: BTreeMap<Digest, PathBuf>,
    layers: BTreeMap<Digest, (PathBuf, u64)>,
}

/// Streams `reader` into `path`, hashing; checks size and digest; syncs.
pub(crate) fn write_verified(
    mut reader: impl Read,
    path: &Path,
    expected: &Digest,
    expected_size: Option<u64>,
    what: &str,
) -> Result<()> {
    let mut f = File::create(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = reader.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if let Some(s) = expected_size {
            if total > s {
                return Err(Error::SizeMismatch {
                    what: what.to_string(),
                    expected: s,
                    actual: total,
                });
            }
        }
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).at(path)?;
    }
    if let Some(s) = expected_size {
        if total != s {
            return Err(Error::SizeMismatch {
                what: what.to_string(),
                expected: s,
                actual: total,
            });
        }
    }
    let actual = Digest::from_hasher(hasher);
    if &actual != expected {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    f.sync_all().at(path)?;
    Ok(())
}

impl Staging {
    /// The staging directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the staging directory for a new file.
    pub fn path_for(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Registers a file already verified to hold `digest`.
    pub fn add_verified_blob(&mut self, digest: Digest, path: PathBuf) {
        self.blobs.insert(digest, path);
    }

    /// Stages bytes as a blob and returns their digest.
    pub fn add_bytes(&mut self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of(data);
        let p = self.path_for(&format!("blob-{}", digest.hex()));
        let mut f = File::create(&p).at(&p)?;
        f.write_all(data).at(&p)?;
        f.sync_all().at(&p)?;
        self.blobs.insert(digest.clone(), p);
        Ok(digest)
    }

    /// Stages bytes that must have a known digest.
    pub fn add_bytes_expect(&mut self, data: &[u8], expected: &Digest, what: &str) -> Result<()> {
        let actual = Digest::of(data);
        if &actual != expected {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.add_bytes(data)?;
        Ok(())
    }

    /// Streams a blob in, verifying digest and size.
    pub fn add_reader(
        &mut self,
        reader: impl Read,
        expected: &Digest,
        size: Option<u64>,
        what: &str,
    ) -> Result<PathBuf> {
        let partial = self.path_for(&format!("partial-{}-{}", expected.hex(), self.blobs.len()));
        let result = write_verified(reader, &partial, expected, size, what);
        if let Err(e) = result {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        let p = self.path_for(&format!("blob-{}", expected.hex()));
        fs::rename(&partial, &p).at(&p)?;
        self.blobs.insert(expected.clone(), p.clone());
        Ok(p)
    }

    /// Registers a built layer image for `diff_id`.
    pub fn add_layer_image(&mut self, diff_id: Digest, path: PathBuf, size: u64) {
        self.layers.insert(diff_id, (path, size));
    }

    /// The staged file of a blob, if staged.
    pub fn blob(&self, digest: &Digest) -> Option<&Path> {
        self.blobs.get(digest).map(|p| p.as_path())
    }

    /// Moves every staged blob and layer image into the store (an existing identical
    /// blob is kept). The staging directory is removed.
    pub fn commit(self, store: &Store) -> Result<()> {
        for (d, p) in &self.blobs {
            let dst = store.blob_path(d);
            if dst.exists() {
                continue;
            }
            set_readonly(p)?;
            fs::rename(p, &dst).at(&dst)?;
        }
        for (d, (p, size)) in &self.layers {
            let dst = store.layer_image_path(d);
            if dst.exists() {
                continue;
            }
            write_layer_meta(store, d, *size)?;
            set_readonly(p)?;
            fs::rename(p, &dst).at(&dst)?;
        }
        let blobs_dir = store.root.join("blobs/sha256");
        if let Ok(d) = File::open(&blobs_dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

pub(crate) fn write_layer_meta(store: &Store, diff_id: &Digest, size: u64) -> Result<()> {
    let meta = store.layer_meta_path(diff_id);
    let data = serde_json::to_vec(&LayerMeta { size }).map_err(|e| Error::Malformed {
        what: "layer metadata".into(),
        reason: e.to_string(),
    })?;
    let tmp = store.root.join("tmp");
    let mut f = tempfile::NamedTempFile::new_in(&tmp).at(&tmp)?;
    f.write_all(&data).at(&meta)?;
    f.persist(&meta).map_err(|e| e.error).at(&meta)?;
    Ok(())
}

/// Makes `p` read-only for everyone (mode 0444 on Unix).
#[cfg(unix)]
pub(crate) fn set_readonly(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o444)).at(p)
}

/// Makes `p` read-only (its read-only attribute, on Windows).
#[cfg(not(unix))]
pub(crate) fn set_readonly(p: &Path) -> Result<()> {
    let mut permissions = fs::metadata(p).at(p)?.permissions();
    permissions.set_readonly(true);
    fs::set_permissions(p, permissions).at(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_blobs_become_visible_only_when_verified_and_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut st = store.staging().unwrap();
        let good = Digest::of(b"hello");
        st.add_reader(&b"hello"[..], &good, Some(5), "good")
            .unwrap();
        let err = st
            .add_reader(&b"hellO"[..], &good, Some(5), "tampered")
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        let other = Digest::of(b"hello world");
        let err = st
            .add_reader(&b"hello"[..], &other, Some(11), "truncated")
            .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert!(!store.has_blob(&good), "not visible before commit");
        st.commit(&store).unwrap();
        assert!(store.has_blob(&good));
        assert!(!store.has_blob(&other));
        assert_eq!(store.read_blob(&good).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut st = store.staging().unwrap();
            st.add_bytes(b"abc").unwrap();
        }
        assert!(!store.has_blob(&Digest::of(b"abc")));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn pinned_images_survive_rmi_until_unpinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut st = store.staging().unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let cfg = st.add_bytes(&config).unwrap();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": manifest::MediaType::ImageConfig, "digest": cfg, "size": config.len()},
            "layers": []
        }))
        .unwrap();
        let md = st.add_bytes(&m).unwrap();
        st.commit(&store).unwrap();
        let entry = RefEntry {
            manifest: md.clone(),
            index: None,
        };
        store.set_refs(&[("x.io/a:1".into(), entry)], &[]).unwrap();
        let img = store.resolve("x.io/a:1").unwrap();
        store.pin(&img, "container-1").unwrap();
        let (_, gc) = store.remove("x.io/a:1", false).unwrap();
        assert_eq!(gc.blobs_removed, 0);
        assert!(store.has_blob(&md) && store.has_blob(&cfg));
        assert!(store.resolve("x.io/a:1").is_err(), "the tag is gone");
        assert_eq!(store.image_by_manifest(&md, vec![]).unwrap().id, cfg);
        assert_eq!(
            store.resolve(cfg.as_str()).unwrap().manifest_digest,
            md,
            "found by ID"
        );
        store.unpin("container-1").unwrap();
        assert_eq!(store.gc().unwrap().blobs_removed, 2);
        assert!(!store.has_blob(&md));
    }

    #[test]
    fn hex_prefixes() {
        assert!(is_hex_prefix("abc123"));
        assert!(is_hex_prefix("sha256:abc"));
        assert!(!is_hex_prefix("alpine"));
        assert!(!is_hex_prefix(""));
    }
}
