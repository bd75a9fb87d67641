//! The files of an image as its container sees them: its layers merged, whiteouts
//! applied, for a builder's `COPY --from` (which reads an image without a VM).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::layer::{safe_relative_path, whiteout_kind, WhiteoutKind};
use crate::store::{LocalImage, Store};

/// The most bytes of file data [`files_under`] holds: what `COPY --from` may copy at once.
pub const MAX_TREE_BYTES: u64 = 4 << 30;

/// One entry of a merged image tree.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// The tar header as the layer had it (mode, owner, times, kind, link target).
    pub header: tar::Header,
    /// The contents of a regular file.
    pub data: Vec<u8>,
}

/// Every entry at or under `path` (absolute or relative to `/`) in `image`'s merged
/// layers, by path relative to `/`, sorted. Hard links become copies of their target.
pub fn files_under(
    store: &Store,
    image: &LocalImage,
    path: &str,
) -> Result<BTreeMap<PathBuf, TreeEntry>> {
    let prefix = relative(path)?;
    let under =
        |p: &Path| prefix.as_os_str().is_empty() || p.starts_with(&prefix) || prefix.starts_with(p);
    merged(store, image, &under, path, true)
}

/// The headers of those of `paths` (absolute or relative to `/`) that `image` has, by
/// path relative to `/`, without reading file data: whether a builder's destination
/// exists, and what its parent directories look like.
pub fn headers_of(
    store: &Store,
    image: &LocalImage,
    paths: &[&str],
) -> Result<BTreeMap<PathBuf, tar::Header>> {
    let wanted = paths
        .iter()
        .map(|p| relative(p))
        .collect::<Result<std::collections::BTreeSet<_>>>()?;
    let found = merged(store, image, &|p| wanted.contains(p), "", false)?;
    Ok(found.into_iter().map(|(p, e)| (p, e.header)).collect())
}

fn relative(path: &str) -> Result<PathBuf> {
    safe_relative_path(path.trim_start_matches('/').as_bytes()).map_err(|reason| Error::Malformed {
        what: format!("path {path}"),
        reason,
    })
}

/// The merged entries `under` keeps, with file data when `data`.
fn merged(
    store: &Store,
    image: &LocalImage,
    under: &dyn Fn(&Path) -> bool,
    path: &str,
    with_data: bool,
) -> Result<BTreeMap<PathBuf, TreeEntry>> {
    let mut tree: BTreeMap<PathBuf, TreeEntry> = BTreeMap::new();
    let mut bytes = 0u64;
    for (desc, _) in image.layers() {
        let digest = crate::reference::Digest::try_from(desc.digest())?;
        let blob = store.blob_path(&digest);
        let file = std::fs::File::open(&blob).at(&blob)?;
        let layer = digest.to_string();
        let bad = |reason: String| Error::BadLayer {
            layer: layer.clone(),
            reason,
        };
        let mut archive = tar::Archive::new(crate::erofs::decompress(file, &layer)?);
        let mut opaque_now: Vec<PathBuf> = Vec::new();
        let mut added: std::collections::BTreeSet<PathBuf> = Default::default();
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let rel = safe_relative_path(&entry.path_bytes()).map_err(bad)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            match whiteout_kind(&rel).map_err(bad)? {
                WhiteoutKind::Ignore => continue,
                WhiteoutKind::Whiteout(target) => {
                    tree.retain(|p, _| !p.starts_with(&target));
                    continue;
                }
                WhiteoutKind::Opaque(dir) => {
                    opaque_now.push(dir);
                    continue;
                }
                WhiteoutKind::None => {}
            }
            if !under(&rel) {
                continue;
            }
            let header = entry.header().clone();
            let mut data = Vec::new();
            match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous if with_data => {
                    bytes = bytes.saturating_add(header.size().unwrap_or(0));
                    if bytes > MAX_TREE_BYTES {
                        return Err(bad(format!(
                            "more than {MAX_TREE_BYTES} bytes under {path}: copy less at once"
                        )));
                    }
                    entry
                        .read_to_end(&mut data)
                        .map_err(|e| bad(e.to_string()))?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| safe_relative_path(&t))
                        .transpose()
                        .map_err(bad)?
                        .unwrap_or_default();
                    if let Some(t) = tree.get(&target).cloned() {
                        tree.insert(rel.clone(), t);
                        added.insert(rel);
                    }
                    continue;
                }
                _ => {}
            }
            // A new entry replaces what lower layers had there, a directory's contents
            // included when it is no longer a directory.
            if !header.entry_type().is_dir() {
                tree.retain(|p, _| !p.starts_with(&rel) || p == &rel);
            }
            tree.insert(rel.clone(), TreeEntry { header, data });
            added.insert(rel);
        }
        // An opaque directory hides what lower layers put in it: keep only this layer's.
        for dir in opaque_now {
            tree.retain(|p, _| !p.starts_with(&dir) || p == &dir || added.contains(p));
        }
    }
    Ok(tree)
}
