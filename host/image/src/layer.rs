//! Layers for the guest: each layer tar becomes a read-only erofs image, once per diff ID.
//!
//! A layer is unpacked into an empty staging directory with its OCI semantics turned into
//! overlayfs form (a whiteout `.wh.NAME` becomes a 0:0 character device `NAME`, an opaque
//! marker `.wh..wh..opq` becomes `trusted.overlay.opaque=y` on its directory), with
//! ownership, modes, times, xattrs, hard links, symlinks and device nodes as in the tar.
//! `mkfs.erofs` then packs the directory. The guest stacks these images with overlayfs
//! as lower directories, exactly as they are.
//!
//! Unpacking never writes outside the staging root: entries with `..`, absolute paths,
//! paths through a symlink, symlinks whose target climbs out of the root, and hard links
//! whose target is not in the layer are refused with an error naming the entry. Nothing is
//! ever opened through a symlink. `trusted.overlay.*` xattrs inside a layer are dropped (a
//! layer must not forge overlayfs metadata such as redirects).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::manifest::Compression;
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

/// Checks a tar entry path and returns it relative to the root, as plain components.
/// `./` prefixes and `.` components are dropped; `..`, absolute paths and NUL bytes are refused.
pub fn safe_relative_path(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    if raw.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute paths are not allowed in a layer".into());
    }
    let p = Path::new(std::ffi::OsStr::from_bytes(raw));
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
    let t = Path::new(std::ffi::OsStr::from_bytes(target));
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
    let Some(name) = rel.file_name().map(|n| n.as_bytes()) else {
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
        return Ok(WhiteoutKind::Whiteout(
            parent.join(std::ffi::OsStr::from_bytes(target)),
        ));
    }
    Ok(WhiteoutKind::None)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(p)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both strings are valid and NUL-terminated, `value` is a valid buffer of the
    // given length, and all outlive the call.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_times_nofollow(p: &Path, mtime: u64) -> io::Result<()> {
    let c = cpath(p)?;
    let t = libc::timespec {
        tv_sec: mtime.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid path and `times` is an array of two timespecs, as utimensat expects.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Is the process root (needed for device nodes, ownership and trusted.* xattrs)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

struct Unpacker<'a> {
    root: &'a Path,
    layer: String,
    dir_times: Vec<(PathBuf, u64)>,
    written: BTreeSet<PathBuf>,
}

impl Unpacker<'_> {
    fn refuse(&self, entry: &[u8], reason: impl Into<String>) -> Error {
        Error::UnsafeLayerEntry {
            layer: self.layer.clone(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn io(&self, entry: &[u8], e: io::Error) -> Error {
        Error::BadLayer {
            layer: self.layer.clone(),
            reason: format!("entry {:?}: {e}", String::from_utf8_lossy(entry)),
        }
    }

    /// Makes sure every ancestor of `rel` is a real directory (creating missing ones), never
    /// a symlink.
    fn ensure_parents(&self, raw: &[u8], rel: &Path) -> Result<()> {
        let mut cur = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.refuse(
                        raw,
                        format!(
                            "its path goes through the symlink {:?}",
                            cur.strip_prefix(self.root).unwrap_or(&cur).display()
                        ),
                    ))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.refuse(
                        raw,
                        format!(
                            "its parent {:?} is not a directory",
                            cur.strip_prefix(self.root).unwrap_or(&cur).display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| self.io(raw, e))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.io(raw, e))?;
                }
                Err(e) => return Err(self.io(raw, e)),
            }
        }
        Ok(())
    }

    /// Removes whatever sits at `path` unless both it and the new entry are directories.
    fn clear(&self, raw: &[u8], path: &Path, new_is_dir: bool) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() && new_is_dir => Ok(()),
            Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| self.io(raw, e)),
            Ok(_) => fs::remove_file(path).map_err(|e| self.io(raw, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(raw, e)),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let rel = safe_relative_path(&raw).map_err(|r| self.refuse(&raw, r))?;
        let kind = entry.header().entry_type();
        let path = self.root.join(&rel);
        match whiteout_kind(&rel).map_err(|r| self.refuse(&raw, r))? {
            WhiteoutKind::Ignore => return Ok(()),
            WhiteoutKind::Opaque(dir) => {
                let marker = dir.join("x");
                self.ensure_parents(&raw, &marker)?;
                let d = self.root.join(&dir);
                lsetxattr(&d, OPAQUE_XATTR, b"y").map_err(|e| self.io(&raw, e))?;
                return Ok(());
            }
            WhiteoutKind::Whiteout(target) => {
                self.ensure_parents(&raw, &target)?;
                let t = self.root.join(&target);
                self.clear(&raw, &t, false)?;
                mknod(&t, libc::S_IFCHR, 0, 0).map_err(|e| self.io(&raw, e))?;
                self.written.insert(target);
                return Ok(());
            }
            WhiteoutKind::None => {}
        }
        let header = entry.header().clone();
        let mode = header.mode().map_err(|e| self.io(&raw, e))? & 0o7777;
        let uid = header.uid().map_err(|e| self.io(&raw, e))?;
        let gid = header.gid().map_err(|e| self.io(&raw, e))?;
        let mtime = header.mtime().unwrap_or(0);
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(key) = ext.key() {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if name.starts_with("trusted.overlay.") {
                            tracing::warn!(
                                "layer {}: dropping xattr {name} on {:?}",
                                self.layer,
                                String::from_utf8_lossy(&raw)
                            );
                            continue;
                        }
                        xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        if rel.as_os_str().is_empty() {
            // The root directory itself ("./"): only its metadata applies.
            if kind.is_dir() {
                self.apply_meta(&raw, self.root, uid, gid, Some(mode), &xattrs)?;
                self.dir_times.push((self.root.to_path_buf(), mtime));
                return Ok(());
            }
            return Err(self.refuse(&raw, "only a directory may stand for the layer root"));
        }
        self.ensure_parents(&raw, &rel)?;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.clear(&raw, &path, true)?;
                if !path.exists() {
                    fs::create_dir(&path).map_err(|e| self.io(&raw, e))?;
                }
                self.apply_meta(&raw, &path, uid, gid, Some(mode), &xattrs)?;
                self.dir_times.push((path.clone(), mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.clear(&raw, &path, false)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| self.io(&raw, e))?;
                io::copy(&mut entry, &mut f).map_err(|e| self.io(&raw, e))?;
                drop(f);
                self.apply_meta(&raw, &path, uid, gid, Some(mode), &xattrs)?;
                set_times_nofollow(&path, mtime).map_err(|e| self.io(&raw, e))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "symlink without a target"))?
                    .into_owned();
                symlink_stays_inside(&rel, &target).map_err(|r| self.refuse(&raw, r))?;
                self.clear(&raw, &path, false)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(|e| self.io(&raw, e))?;
                self.apply_meta(&raw, &path, uid, gid, None, &xattrs)?;
                set_times_nofollow(&path, mtime).map_err(|e| self.io(&raw, e))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "hard link without a target"))?
                    .into_owned();
                let trel = safe_relative_path(&target).map_err(|r| {
                    self.refuse(
                        &raw,
                        format!(
                            "hard link target {:?}: {r}",
                            String::from_utf8_lossy(&target)
                        ),
                    )
                })?;
                if trel.as_os_str().is_empty() || !self.written.contains(&trel) {
                    return Err(self.refuse(
                        &raw,
                        format!(
                            "hard link target {:?} is not a file of this layer",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
                self.ensure_parents(&raw, &trel)?;
                let tpath = self.root.join(&trel);
                let tm = fs::symlink_metadata(&tpath).map_err(|e| self.io(&raw, e))?;
                if tm.is_dir() {
                    return Err(self.refuse(&raw, "hard link to a directory"));
                }
                if tpath == path {
                    return Ok(());
                }
                self.clear(&raw, &path, false)?;
                fs::hard_link(&tpath, &path).map_err(|e| self.io(&raw, e))?;
            }
            T::Char | T::Block | T::Fifo => {
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.clear(&raw, &path, false)?;
                mknod(&path, fmt | (mode & 0o777), major, minor).map_err(|e| self.io(&raw, e))?;
                self.apply_meta(&raw, &path, uid, gid, Some(mode), &xattrs)?;
                set_times_nofollow(&path, mtime).map_err(|e| self.io(&raw, e))?;
            }
            other => {
                return Err(self.refuse(&raw, format!("unsupported tar entry type {other:?}")));
            }
        }
        self.written.insert(rel);
        Ok(())
    }

    fn apply_meta(
        &self,
        raw: &[u8],
        path: &Path,
        uid: u64,
        gid: u64,
        mode: Option<u32>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let uid = u32::try_from(uid).map_err(|_| self.refuse(raw, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| self.refuse(raw, "gid out of range"))?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| self.io(raw, e))?;
        if let Some(m) = mode {
            // After chown, which clears set-id bits.
            fs::set_permissions(path, fs::Permissions::from_mode(m))
                .map_err(|e| self.io(raw, e))?;
        }
        for (k, v) in xattrs {
            lsetxattr(path, k, v).map_err(|e| self.io(raw, e))?;
        }
        Ok(())
    }
}

/// Unpacks one layer tar (plain or gzip, sniffed) into `dest` (an empty directory),
/// converting whiteouts to overlayfs form. Returns the diff ID and size of the tar.
pub fn unpack_layer(reader: impl Read, dest: &Path, layer: &str) -> Result<(Digest, u64)> {
    if !is_root() {
        return Err(Error::NeedRoot);
    }
    let mut buffered = io::BufReader::with_capacity(256 * 1024, reader);
    let head = {
        use io::BufRead;
        buffered.fill_buf().at(dest)?.to_vec()
    };
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(Error::UnknownMediaType {
            media_type: "zstd-compressed tar".into(),
            what: format!("layer {layer}"),
        });
    } else {
        Compression::None
    };
    let decompressed: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(buffered)),
        Compression::None => Box::new(buffered),
    };
    let mut hashing = HashingReader::new(decompressed);
    let mut unpacker = Unpacker {
        root: dest,
        layer: layer.to_string(),
        dir_times: Vec::new(),
        written: BTreeSet::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(|e| Error::BadLayer {
            layer: layer.to_string(),
            reason: format!("not a tar archive: {e}"),
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::BadLayer {
                layer: layer.to_string(),
                reason: format!("corrupt tar: {e}"),
            })?;
            unpacker.entry(entry)?;
        }
    }
    // The diff ID covers the whole stream, including the end-of-archive padding.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| Error::BadLayer {
        layer: layer.to_string(),
        reason: format!("corrupt stream: {e}"),
    })?;
    for (p, t) in unpacker.dir_times.iter().rev() {
        let _ = set_times_nofollow(p, *t);
    }
    Ok(hashing.finish())
}

/// Packs a directory into an erofs image with mkfs.erofs (uncompressed, xattrs kept,
/// per-file mtimes kept).
pub fn mkfs_erofs(src: &Path, out: &Path) -> Result<()> {
    let output = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg("--preserve-mtime")
        .arg(out)
        .arg(src)
        .output()
        .map_err(|e| Error::Tool {
            tool: "mkfs.erofs".into(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "mkfs.erofs".into(),
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Builds the erofs image of a layer blob at `out` (in a staging directory), checking the
/// diff ID. Returns the uncompressed size.
pub fn build_layer_image(
    blob: &Path,
    diff_id: &Digest,
    work_dir: &Path,
    out: &Path,
) -> Result<u64> {
    let rootfs = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(work_dir)
        .at(work_dir)?;
    // A layer without a "./" entry leaves its root at the defaults (0755, root-owned), not
    // at the temporary directory's 0700: overlayfs shows the topmost layer's root.
    fs::set_permissions(rootfs.path(), fs::Permissions::from_mode(0o755)).at(rootfs.path())?;
    let f = File::open(blob).at(blob)?;
    let (actual, size) = unpack_layer(f, rootfs.path(), diff_id.as_str())?;
    if &actual != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("uncompressed layer {} (diff ID)", blob.display()),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    mkfs_erofs(rootfs.path(), out)?;
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
        let size = build_layer_image(&self.blob_path(blob_digest), diff_id, staging.dir(), &out)?;
        store::write_layer_meta(self, diff_id, size)?;
        fs::set_permissions(&out, fs::Permissions::from_mode(0o444)).at(&out)?;
        File::open(&out).and_then(|f| f.sync_all()).at(&out)?;
        fs::rename(&out, &dst).at(&dst)?;
        Ok(dst)
    }

    /// The read-only layer images of an image for the guest, lowest first, building the
    /// missing ones (in parallel).
    pub fn guest_layers(&self, image: &crate::LocalImage) -> Result<Vec<PathBuf>> {
        let layers: Vec<(Digest, Digest)> = image
            .layers()
            .map(|(d, diff)| (d.digest.clone(), diff.clone()))
            .collect();
        for_each_layer(&layers, |(blob, diff)| self.ensure_layer_image(blob, diff))
            .into_iter()
            .collect()
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
