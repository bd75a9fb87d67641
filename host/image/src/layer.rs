//! Layers for the guest: each layer tar becomes a read-only erofs image, once per diff ID.
//!
//! The userspace writer in [`crate::erofs`] streams the layer tar straight into an erofs
//! image, with its OCI semantics turned into overlayfs form (a whiteout `.wh.NAME` becomes
//! a 0:0 character device `NAME`, an opaque marker `.wh..wh..opq` becomes
//! `trusted.overlay.opaque=y` on its directory), with ownership, modes, times, xattrs, hard
//! links, symlinks and device nodes as in the tar. Nothing is extracted on the host, so
//! preparing layers needs neither root nor `mkfs.erofs`. The guest stacks these images
//! with overlayfs as lower directories, exactly as they are.
//!
//! This module holds the checks the writer applies to every entry (entries with `..`,
//! absolute paths, symlinks whose target climbs out of the root are refused with an error
//! naming the entry), whiteout classification, and the store side: building each image in
//! staging and renaming it into place.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::reference::Digest;
use crate::store::{self, Store};

/// The overlayfs opaque-directory xattr.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A reader that hashes and counts what passes through.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest and byte count of what was read.
    pub(crate) fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The path that a name in a tar header names: its bytes as they are on Unix; elsewhere
/// they must be UTF-8 (Windows paths are Unicode).
#[cfg(unix)]
pub(crate) fn bytes_path(raw: &[u8]) -> std::result::Result<&Path, String> {
    use std::os::unix::ffi::OsStrExt;
    Ok(Path::new(std::ffi::OsStr::from_bytes(raw)))
}

/// The path that a name in a tar header names: its bytes as they are on Unix; elsewhere
/// they must be UTF-8 (Windows paths are Unicode).
#[cfg(not(unix))]
pub(crate) fn bytes_path(raw: &[u8]) -> std::result::Result<&Path, String> {
    std::str::from_utf8(raw)
        .map(Path::new)
        .map_err(|_| "the path is not UTF-8, which this host's paths must be".to_string())
}

/// Checks a tar entry path and returns it relative to the root, as plain components.
/// `./` prefixes and `.` components are dropped; `..`, absolute paths and NUL bytes are refused.
pub fn safe_relative_path(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    if raw.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute paths are not allowed in a layer".into());
    }
    let p = bytes_path(raw)?;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed in a layer".into())
            }
        }
    }
    Ok(out)
}

/// Checks that a symlink at `entry` (relative to the root) with `target` stays inside the
/// root when resolved lexically: absolute targets are resolved from the root (as in the
/// container), relative ones from the link's directory; climbing above the root is refused.
pub fn symlink_stays_inside(entry: &Path, target: &[u8]) -> std::result::Result<(), String> {
    if target.is_empty() {
        return Err("the symlink target is empty".into());
    }
    if target.contains(&0) {
        return Err("the symlink target contains a NUL byte".into());
    }
    let t = bytes_path(target)?;
    let mut depth: i64 = if t.is_absolute() {
        0
    } else {
        entry.components().count() as i64 - 1
    };
    for c in t.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink target {:?} points outside the layer root",
                        t.display()
                    ));
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

/// What a layer entry turns into, after whiteout conversion.
#[derive(Debug, PartialEq, Eq)]
pub enum WhiteoutKind {
    /// An ordinary entry.
    None,
    /// `.wh.NAME`: a 0:0 character device named NAME in the same directory.
    Whiteout(PathBuf),
    /// `.wh..wh..opq`: the parent directory becomes opaque.
    Opaque(PathBuf),
    /// Another `.wh..wh.` special entry (for example aufs' `.wh..wh.plnk`): ignored.
    Ignore,
}

/// Classifies an entry path (already made safe) for whiteout handling.
pub fn whiteout_kind(rel: &Path) -> std::result::Result<WhiteoutKind, String> {
    let Some(name) = rel.file_name().map(|n| n.as_encoded_bytes()) else {
        return Ok(WhiteoutKind::None);
    };
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == OPAQUE_MARKER.as_bytes() {
        return Ok(WhiteoutKind::Opaque(parent));
    }
    if name.starts_with(b".wh..wh.") {
        return Ok(WhiteoutKind::Ignore);
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err("whiteout of an invalid name".into());
        }
        return Ok(WhiteoutKind::Whiteout(parent.join(bytes_path(target)?)));
    }
    Ok(WhiteoutKind::None)
}

/// Builds the erofs image of a layer blob at `out` (a new file in a staging directory)
/// with the userspace [`crate::erofs`] writer, checking the diff ID; on error `out` is
/// gone. Returns the uncompressed size.
pub fn build_layer_image(blob: &Path, diff_id: &Digest, out: &Path) -> Result<u64> {
    let f = File::open(blob).at(blob)?;
    let (actual, size) = crate::erofs::write_layer_image(f, out, diff_id.as_str())?;
    if &actual != diff_id {
        let _ = fs::remove_file(out);
        return Err(Error::DigestMismatch {
            what: format!("uncompressed layer {} (diff ID)", blob.display()),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(size)
}

impl Store {
    /// Makes sure the guest-ready image of one layer exists; returns its path.
    pub fn ensure_layer_image(&self, blob_digest: &Digest, diff_id: &Digest) -> Result<PathBuf> {
        let dst = self.layer_image_path(diff_id);
        if dst.is_file() {
            return Ok(dst);
        }
        let _writer = self.writer_lock()?;
        let _lock = self.layer_lock(diff_id)?;
        if dst.is_file() {
            return Ok(dst);
        }
        let staging = self.staging()?;
        let out = staging.path_for("layer.erofs");
        let size = build_layer_image(&self.blob_path(blob_digest), diff_id, &out)?;
        store::write_layer_meta(self, diff_id, size)?;
        store::set_readonly(&out)?;
        File::open(&out).and_then(|f| f.sync_all()).at(&out)?;
        fs::rename(&out, &dst).at(&dst)?;
        Ok(dst)
    }

    /// The read-only layer images of an image for the guest, lowest first, building the
    /// missing ones (in parallel). When all are there, as on every start after the
    /// first, this is one `stat` per layer and no thread.
    pub fn guest_layers(&self, image: &crate::LocalImage) -> Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        let mut missing: Vec<(usize, Digest, Digest)> = Vec::new();
        for (i, (d, diff)) in image.layers().enumerate() {
            let path = self.layer_image_path(diff);
            if !path.is_file() {
                missing.push((i, Digest::try_from(d.digest())?, diff.clone()));
            }
            paths.push(path);
        }
        let built = for_each_layer(&missing, |(_, blob, diff)| {
            self.ensure_layer_image(blob, diff)
        });
        for ((i, _, _), path) in missing.iter().zip(built) {
            paths[*i] = path?;
        }
        Ok(paths)
    }
}

/// Runs `work` on every layer at once, one thread each, and returns the results in order;
/// a thread that panicked becomes an error.
pub(crate) fn for_each_layer<I, T, F>(layers: &[I], work: F) -> Vec<Result<T>>
where
    I: Sync,
    T: Send,
    F: Fn(&I) -> Result<T> + Sync,
{
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = layers.iter().map(|l| s.spawn(move || work(l))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::BadLayer {
                        layer: "?".into(),
                        reason: "layer preparation thread panicked".into(),
                    })
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_made_relative_or_refused() {
        assert_eq!(safe_relative_path(b"./a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(safe_relative_path(b"a/./b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(safe_relative_path(b"./").unwrap(), PathBuf::new());
        assert!(safe_relative_path(b"../etc/passwd")
            .unwrap_err()
            .contains(".."));
        assert!(safe_relative_path(b"a/../../b").is_err());
        assert!(safe_relative_path(b"a/..").is_err());
        assert!(safe_relative_path(b"/etc/passwd")
            .unwrap_err()
            .contains("absolute"));
        assert!(safe_relative_path(b"a\0b").is_err());
    }

    #[test]
    fn symlinks_must_stay_inside() {
        let e = Path::new("usr/lib/x");
        assert!(
            symlink_stays_inside(e, b"/bin/busybox").is_ok(),
            "absolute means in the container"
        );
        assert!(symlink_stays_inside(e, b"../../bin/sh").is_ok());
        assert!(symlink_stays_inside(e, b"y").is_ok());
        assert!(symlink_stays_inside(e, b"../../../etc/shadow").is_err());
        assert!(symlink_stays_inside(Path::new("x"), b"..").is_err());
        assert!(symlink_stays_inside(Path::new("x"), b"/../etc").is_err());
        assert!(symlink_stays_inside(Path::new("x"), b"").is_err());
        assert!(symlink_stays_inside(Path::new("a/b"), b"../c/../../d").is_err());
    }

    #[test]
    fn whiteouts_are_classified() {
        assert_eq!(
            whiteout_kind(Path::new("etc/passwd")).unwrap(),
            WhiteoutKind::None
        );
        assert_eq!(
            whiteout_kind(Path::new("etc/.wh.passwd")).unwrap(),
            WhiteoutKind::Whiteout(PathBuf::from("etc/passwd"))
        );
        assert_eq!(
            whiteout_kind(Path::new(".wh.top")).unwrap(),
            WhiteoutKind::Whiteout(PathBuf::from("top"))
        );
        assert_eq!(
            whiteout_kind(Path::new("var/cache/.wh..wh..opq")).unwrap(),
            WhiteoutKind::Opaque(PathBuf::from("var/cache"))
        );
        assert_eq!(
            whiteout_kind(Path::new(".wh..wh.plnk")).unwrap(),
            WhiteoutKind::Ignore
        );
        assert!(whiteout_kind(Path::new("a/.wh.")).is_err());
        assert!(whiteout_kind(Path::new("a/.wh...")).is_err());
    }
}
