//! Offline archives: `docker save` archives and OCI image-layout archives, in and out.
//!
//! `save` writes one tar that is both at once, like docker 25 does: `oci-layout`,
//! `index.json` and `blobs/sha256/...` make it an OCI layout; `manifest.json` (pointing at
//! the same blobs) makes it a `docker save` archive. `load` reads either kind (and the
//! older docker layout with `<id>/layer.tar` files and symlinks), plain or gzip'd, and
//! verifies every blob before anything enters the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::layer::{bytes_path, safe_relative_path};
use crate::manifest::{
    self, Compression, Descriptor, ImageIndex, ImageManifest, ManifestKind, Platform,
};
use crate::reference::{Digest, Reference};
use crate::store::{LocalImage, RefEntry, Staging, Store, UNTAGGED};

/// Annotation holding the full image name (containerd, docker).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation holding the reference name (OCI).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug)]
struct FileRec {
    tmp: PathBuf,
    digest: Digest,
    size: u64,
}

#[derive(Debug)]
enum Node {
    File(FileRec),
    Link(PathBuf),
}

struct Contents {
    archive: PathBuf,
    nodes: BTreeMap<PathBuf, Node>,
}

impl Contents {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::Archive {
            path: self.archive.clone(),
            reason: reason.into(),
        }
    }

    fn get(&self, path: &Path) -> Option<&FileRec> {
        let mut p = path.to_path_buf();
        for _ in 0..16 {
            match self.nodes.get(&p)? {
                Node::File(f) => return Some(f),
                Node::Link(t) => p = t.clone(),
            }
        }
        None
    }

    fn file(&self, name: &str) -> Result<&FileRec> {
        let rel = safe_relative_path(name.as_bytes())
            .map_err(|r| self.bad(format!("path {name:?}: {r}")))?;
        self.get(&rel)
            .ok_or_else(|| self.bad(format!("{name} is missing")))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let f = self.file(name)?;
        if f.size > 64 * 1024 * 1024 {
            return Err(self.bad(format!("{name} is too large for a JSON document")));
        }
        std::fs::read(&f.tmp).at(&f.tmp)
    }

    /// A blob of the OCI layout, verified against its descriptor.
    fn blob(&self, desc: &Descriptor) -> Result<&FileRec> {
        let digest = Digest::try_from(desc.digest())?;
        let name = format!("blobs/sha256/{}", digest.hex());
        let f = self.file(&name)?;
        if f.digest != digest {
            return Err(Error::DigestMismatch {
                what: format!("{name} in {}", self.archive.display()),
                expected: digest.to_string(),
                actual: f.digest.to_string(),
            });
        }
        if f.size != desc.size() {
            return Err(Error::SizeMismatch {
                what: format!("{name} in {}", self.archive.display()),
                expected: desc.size(),
                actual: f.size,
            });
        }
        Ok(f)
    }
}

/// Reads the archive's entries into the staging area (each file hashed).
fn read_archive(path: &Path, staging: &Staging) -> Result<Contents> {
    let file = File::open(path).at(path)?;
    let mut buffered = BufReader::with_capacity(256 * 1024, file);
    let gz = buffered.fill_buf().at(path)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut contents = Contents {
        archive: path.to_path_buf(),
        nodes: BTreeMap::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| contents.bad(format!("not a tar archive: {e}")))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| contents.bad(format!("corrupt tar: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let rel = safe_relative_path(&raw).map_err(|r| {
            contents.bad(format!(
                "entry {:?} refused: {r}",
                String::from_utf8_lossy(&raw)
            ))
        })?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let tmp = staging.path_for(&format!("archive-{n}"));
                let mut out = File::create(&tmp).at(&tmp)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                let mut size = 0u64;
                loop {
                    let k = entry
                        .read(&mut buf)
                        .map_err(|e| contents.bad(format!("reading {}: {e}", rel.display())))?;
                    if k == 0 {
                        break;
                    }
                    hasher.update(&buf[..k]);
                    out.write_all(&buf[..k]).at(&tmp)?;
                    size += k as u64;
                }
                out.sync_all().at(&tmp)?;
                contents.nodes.insert(
                    rel,
                    Node::File(FileRec {
                        tmp,
                        digest: Digest::from_hasher(hasher),
                        size,
                    }),
                );
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let hard = entry.header().entry_type() == tar::EntryType::Link;
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| contents.bad(format!("link {} has no target", rel.display())))?
                    .into_owned();
                // Symlinks resolve from their directory, hard links from the archive root;
                // neither may leave the archive.
                let target = bytes_path(&target)
                    .map_err(|r| contents.bad(format!("link {}: {r}", rel.display())))?;
                let joined = if hard {
                    target.to_path_buf()
                } else {
                    rel.parent().unwrap_or(Path::new("")).join(target)
                };
                let mut resolved = PathBuf::new();
                for c in joined.components() {
                    match c {
                        std::path::Component::Normal(x) => resolved.push(x),
                        std::path::Component::CurDir => {}
                        std::path::Component::ParentDir if resolved.pop() => {}
                        _ => {
                            return Err(contents
                                .bad(format!("link {} points outside the archive", rel.display())))
                        }
                    }
                }
                contents.nodes.insert(rel, Node::Link(resolved));
            }
            _ => {}
        }
    }
    Ok(contents)
}

/// One image found in an archive, staged.
struct Found {
    manifest_digest: Digest,
    manifest: ImageManifest,
    names: Vec<String>,
}

/// How a `docker save` layer file is compressed: gzip or not at all.
fn layer_compression(f: &FileRec) -> Result<Compression> {
    let mut head = [0u8; 2];
    let mut file = File::open(&f.tmp).at(&f.tmp)?;
    let n = file.read(&mut head).at(&f.tmp)?;
    Ok(if n == 2 && head == [0x1f, 0x8b] {
        Compression::Gzip
    } else {
        Compression::None
    })
}

fn diff_id_of(f: &FileRec) -> Result<Digest> {
    let file = File::open(&f.tmp).at(&f.tmp)?;
    let mut gz = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = gz.read(&mut buf).at(&f.tmp)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(hasher))
}

fn load_docker(c: &Contents, staging: &mut Staging) -> Result<Vec<Found>> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&c.read("manifest.json")?)
        .map_err(|e| c.bad(format!("manifest.json: {e}")))?;
    let mut found = Vec::new();
    for e in entries {
        let cfg = c.file(&e.config)?;
        let config_bytes = c.read(&e.config)?;
        let config: manifest::ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|err| c.bad(format!("{}: {err}", e.config)))?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(c.bad(format!(
                "{}: {} diff_ids for {} layers",
                e.config,
                config.rootfs.diff_ids.len(),
                e.layers.len()
            )));
        }
        staging.add_bytes_expect(&config_bytes, &cfg.digest, &e.config)?;
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let f = c.file(path)?;
            let compression = layer_compression(f)?;
            let actual = match compression {
                Compression::None => f.digest.clone(),
                _ => diff_id_of(f)?,
            };
            if &actual != diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("layer {path} in {}", c.archive.display()),
                    expected: diff_id.to_string(),
                    actual: actual.to_string(),
                });
            }
            if staging.blob(&f.digest).is_none() {
                let copy = staging.path_for(&format!("blob-{}", f.digest.hex()));
                std::fs::hard_link(&f.tmp, &copy)
                    .or_else(|_| std::fs::copy(&f.tmp, &copy).map(|_| ()))
                    .at(&copy)?;
                staging.add_verified_blob(f.digest.clone(), copy);
            }
            layers.push(Descriptor::new(
                compression.oci_media_type(),
                f.size,
                f.digest.clone(),
            ));
        }
        let m = manifest::oci_manifest(cfg.digest.clone(), cfg.size, layers)?;
        let bytes = serde_json::to_vec(&m).map_err(|err| c.bad(err.to_string()))?;
        let digest = staging.add_bytes(&bytes)?;
        found.push(Found {
            manifest_digest: digest,
            manifest: m,
            names: e.repo_tags.unwrap_or_default(),
        });
    }
    Ok(found)
}

fn stage_manifest(
    c: &Contents,
    staging: &mut Staging,
    desc: &Descriptor,
    platform: &Platform,
    depth: usize,
) -> Result<Option<(Digest, ImageManifest)>> {
    let f = c.blob(desc)?;
    let digest = f.digest.clone();
    let bytes = std::fs::read(&f.tmp).at(&f.tmp)?;
    let what = format!("manifest {digest} in {}", c.archive.display());
    match manifest::parse_manifest(&bytes, desc.media_type().as_ref(), &what)?.1 {
        ManifestKind::Image(m) => {
            let cfg = c.blob(m.config())?;
            let cfg_bytes = std::fs::read(&cfg.tmp).at(&cfg.tmp)?;
            manifest::parse_config(&cfg_bytes, &m, &what)?;
            staging.add_bytes_expect(&cfg_bytes, &cfg.digest, &what)?;
            for l in m.layers() {
                let lf = c.blob(l)?;
                if staging.blob(&lf.digest).is_none() {
                    let copy = staging.path_for(&format!("blob-{}", lf.digest.hex()));
                    std::fs::hard_link(&lf.tmp, &copy)
                        .or_else(|_| std::fs::copy(&lf.tmp, &copy).map(|_| ()))
                        .at(&copy)?;
                    staging.add_verified_blob(lf.digest.clone(), copy);
                }
            }
            staging.add_bytes_expect(&bytes, &digest, &what)?;
            Ok(Some((digest, m)))
        }
        ManifestKind::Index(idx) if depth < 4 => {
            let chosen = manifest::select_platform(&idx, platform, &what)?.clone();
            staging.add_bytes_expect(&bytes, &digest, &what)?;
            stage_manifest(c, staging, &chosen, platform, depth + 1)
        }
        ManifestKind::Index(_) => Err(c.bad("indexes nested too deeply")),
    }
}

fn load_oci(c: &Contents, staging: &mut Staging, platform: &Platform) -> Result<Vec<Found>> {
    let index: ImageIndex = serde_json::from_slice(&c.read("index.json")?)
        .map_err(|e| c.bad(format!("index.json: {e}")))?;
    manifest::validate_index(&index, &format!("index.json in {}", c.archive.display()))?;
    // Names docker's manifest.json gives, by config digest (for layouts without annotations).
    let mut docker_names: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    if let Ok(data) = c.read("manifest.json") {
        if let Ok(entries) = serde_json::from_slice::<Vec<DockerManifestEntry>>(&data) {
            for e in entries {
                if let Ok(f) = c.file(&e.config) {
                    docker_names
                        .entry(f.digest.clone())
                        .or_default()
                        .extend(e.repo_tags.unwrap_or_default());
                }
            }
        }
    }
    let mut found = Vec::new();
    for desc in index.manifests() {
        let Some((digest, m)) = stage_manifest(c, staging, desc, platform, 0)? else {
            continue;
        };
        let ann = desc.annotations().clone().unwrap_or_default();
        let mut names = Vec::new();
        if let Some(n) = ann.get(ANNOTATION_IMAGE_NAME) {
            names.push(n.clone());
        } else if let Some(n) = ann.get(ANNOTATION_REF_NAME) {
            // A bare tag names nothing by itself; a full reference does.
            if n.contains('/') || n.contains(':') {
                names.push(n.clone());
            }
        }
        if names.is_empty() {
            let config = Digest::try_from(m.config().digest())?;
            if let Some(n) = docker_names.get(&config) {
                names.extend(n.iter().cloned());
            }
        }
        found.push(Found {
            manifest_digest: digest,
            manifest: m,
            names,
        });
    }
    Ok(found)
}

/// Loads a `docker save` or OCI-layout archive (plain or gzip'd) into the store. With
/// `prepare`, the guest layer images are built too. Returns the loaded images.
pub fn load(
    store: &Store,
    path: &Path,
    platform: &Platform,
    prepare: bool,
) -> Result<Vec<LocalImage>> {
    let _writer = store.writer_lock()?;
    let mut staging = store.staging()?;
    let contents = read_archive(path, &staging)?;
    let is_oci = contents.get(Path::new("oci-layout")).is_some()
        && contents.get(Path::new("index.json")).is_some();
    let found = if is_oci {
        load_oci(&contents, &mut staging, platform)?
    } else if contents.get(Path::new("manifest.json")).is_some() {
        load_docker(&contents, &mut staging)?
    } else {
        return Err(contents.bad(
            "neither a docker save archive (manifest.json) nor an OCI layout (oci-layout, index.json)",
        ));
    };
    if found.is_empty() {
        return Err(contents.bad("it holds no image"));
    }
    let mut refs: Vec<(String, RefEntry)> = Vec::new();
    for f in &found {
        let entry = RefEntry {
            manifest: f.manifest_digest.clone(),
            index: None,
        };
        if f.names.is_empty() {
            refs.push((format!("{UNTAGGED}{}", f.manifest_digest), entry.clone()));
        }
        for n in &f.names {
            let r = Reference::parse(n)?;
            refs.push((r.to_string(), entry.clone()));
        }
    }
    if prepare {
        prepare_staged(store, &mut staging, &found)?;
    }
    drop(contents);
    staging.commit(store)?;
    store.set_refs(&refs, &[])?;
    found
        .iter()
        .map(|f| {
            let mut keys: Vec<String> = refs
                .iter()
                .filter(|(_, e)| e.manifest == f.manifest_digest)
                .map(|(k, _)| k.clone())
                .collect();
            keys.sort();
            store.image_by_manifest(&f.manifest_digest, keys)
        })
        .collect()
}

fn prepare_staged(store: &Store, staging: &mut Staging, found: &[Found]) -> Result<()> {
    let mut jobs: Vec<(PathBuf, Digest)> = Vec::new();
    let mut seen = BTreeSet::new();
    // A staged blob, or one the store had already.
    let blob_path = |desc: &Descriptor| -> Result<PathBuf> {
        let digest = Digest::try_from(desc.digest())?;
        Ok(staging
            .blob(&digest)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| store.blob_path(&digest)))
    };
    for f in found {
        let cfg_path = blob_path(f.manifest.config())?;
        let cfg = std::fs::read(&cfg_path).at(&cfg_path)?;
        let config = manifest::parse_config(&cfg, &f.manifest, "image")?;
        for (l, diff) in f.manifest.layers().iter().zip(&config.rootfs.diff_ids) {
            if store.layer_image_path(diff).is_file() || !seen.insert(diff.clone()) {
                continue;
            }
            let blob = blob_path(l)?;
            jobs.push((blob, diff.clone()));
        }
    }
    let dir = staging.dir().to_path_buf();
    let results = crate::layer::for_each_layer(&jobs, |(blob, diff)| {
        let out = dir.join(format!("layer-{}.erofs", diff.hex()));
        let size = crate::layer::build_layer_image(blob, diff, &out)?;
        Ok((diff.clone(), out, size))
    });
    for r in results {
        let (diff, out, size) = r?;
        staging.add_layer_image(diff, out, size);
    }
    Ok(())
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, name, data)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, name, io::empty())
}

/// Writes images to `out` as one archive that is both an OCI layout and a `docker save`
/// archive. `images` are references or IDs.
pub fn save(store: &Store, images: &[String], out: impl Write) -> Result<()> {
    let mut resolved: Vec<(LocalImage, Vec<String>)> = Vec::new();
    for arg in images {
        let img = store.resolve(arg)?;
        // The name asked for, when it is a tag; otherwise all the image's tags.
        let names = match Reference::parse(arg) {
            Ok(r) if img.refs.contains(&r.to_string()) && r.digest.is_none() => vec![r.to_string()],
            _ => img.tags(),
        };
        match resolved
            .iter_mut()
            .find(|(i, _)| i.manifest_digest == img.manifest_digest)
        {
            Some((_, n)) => n.extend(names),
            None => resolved.push((img, names)),
        }
    }
    let io_err = |e: io::Error| Error::Io {
        path: PathBuf::from("<output archive>"),
        source: e,
    };
    let mut b = tar::Builder::new(out);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append_file(&mut b, "oci-layout", layout.len() as u64, &layout[..]).map_err(io_err)?;
    // The blobs' folders have entries of their own, as in docker's and skopeo's archives:
    // a reader that makes missing parents itself may give them the archive's owner, root,
    // which fails as an ordinary user (skopeo's oci-archive does).
    for dir in ["blobs/", "blobs/sha256/"] {
        append_dir(&mut b, dir).map_err(io_err)?;
    }
    let mut written = BTreeSet::new();
    let mut index_entries: Vec<Descriptor> = Vec::new();
    let mut docker: Vec<DockerManifestEntry> = Vec::new();
    for (img, names) in &resolved {
        let layers = img
            .manifest
            .layers()
            .iter()
            .map(|l| Digest::try_from(l.digest()))
            .collect::<Result<Vec<Digest>>>()?;
        // The image ID is the config's digest.
        for d in [&img.manifest_digest, &img.id].into_iter().chain(&layers) {
            if !written.insert(d.clone()) {
                continue;
            }
            let p = store.blob_path(d);
            let f = File::open(&p).at(&p)?;
            let size = f.metadata().at(&p)?.len();
            append_file(&mut b, &format!("blobs/sha256/{}", d.hex()), size, f).map_err(io_err)?;
        }
        let size = std::fs::metadata(store.blob_path(&img.manifest_digest))
            .at(store.blob_path(&img.manifest_digest))?
            .len();
        let mut tags = Vec::new();
        let mut push_desc = |ann: Option<HashMap<String, String>>| {
            let mut d = Descriptor::new(
                img.manifest_media_type.as_str().into(),
                size,
                img.manifest_digest.clone(),
            );
            d.set_annotations(ann);
            index_entries.push(d);
        };
        if names.is_empty() {
            push_desc(None);
        }
        for n in names {
            let r = Reference::parse(n)?;
            let mut ann = HashMap::new();
            ann.insert(ANNOTATION_IMAGE_NAME.to_string(), r.to_string());
            ann.insert(
                ANNOTATION_REF_NAME.to_string(),
                r.tag.clone().unwrap_or_else(|| "latest".into()),
            );
            push_desc(Some(ann));
            tags.push(r.familiar());
        }
        docker.push(DockerManifestEntry {
            config: format!("blobs/sha256/{}", img.id.hex()),
            repo_tags: Some(tags),
            layers: layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.hex()))
                .collect(),
        });
    }
    let index_json = archive_json(&manifest::oci_index(index_entries)?)?;
    append_file(
        &mut b,
        "index.json",
        index_json.len() as u64,
        &index_json[..],
    )
    .map_err(io_err)?;
    let docker_json = archive_json(&docker)?;
    append_file(
        &mut b,
        "manifest.json",
        docker_json.len() as u64,
        &docker_json[..],
    )
    .map_err(io_err)?;
    b.into_inner().and_then(|mut w| w.flush()).map_err(io_err)?;
    Ok(())
}

/// JSON for the archive's own files (not blobs), through serde_json's `Value`, whose
/// maps are BTreeMaps: every object's keys come out sorted. oci-spec keeps annotations in a
/// HashMap, whose order changes from run to run, and the same images must always save to
/// the same bytes.
fn archive_json(v: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_value(v)
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| Error::Malformed {
            what: "archive index".into(),
            reason: e.to_string(),
        })
}
