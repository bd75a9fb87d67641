//! A userspace erofs writer: one layer tar (plain, gzip or zstd) in, one uncompressed
//! erofs image out, in a single pass, with no extraction, mount, root or `mkfs.erofs`.
//!
//! While the tar streams in, each regular file's data goes straight into the image's next
//! free blocks and every other entry only changes the in-memory [`tree`] (names, modes,
//! owners, times, xattrs, link targets, device numbers). When the tar ends, the writer
//! lays out directories and inodes and writes the superblock. Memory holds the tree's
//! metadata, never file data.
//!
//! OCI semantics become overlayfs form as the guest expects of a lower layer (the same form
//! the earlier root-only unpacker produced): `.wh.NAME` is a 0:0 character device `NAME`
//! (mode 0, root-owned), `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory,
//! other `.wh..wh.` entries are ignored, `trusted.overlay.*` xattrs inside a layer are
//! dropped (a layer must not forge overlayfs metadata such as redirects). PAX
//! `SCHILY.xattr.*` records become xattrs; names erofs cannot index (outside `user.`,
//! `trusted.`, `security.` and the POSIX ACLs) are dropped with a warning.
//!
//! Hostile entries are refused naming the entry ([`Error::UnsafeLayerEntry`]): `..`,
//! absolute paths, paths through a symlink, symlinks climbing out of the root, hard links
//! to anything but an earlier non-directory of the layer, names over 255 bytes.
//!
//! Limits: 4 KiB blocks, so at most 16 TiB per image; a file's data is FLAT_PLAIN (every
//! file starts on a block, so many tiny files cost a block each); data of a file that a
//! later entry replaces stays in the image, unreachable.

pub mod format;
mod tree;
mod writer;

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use tree::{Kind, Meta, Node, Tree, ROOT};
use writer::ImageWriter;

use crate::error::{Error, IoContext, Result};
use crate::layer::WhiteoutKind;
use crate::layer::{safe_relative_path, symlink_stays_inside, whiteout_kind, HashingReader};
use crate::reference::Digest;

/// The longest symlink target Linux follows (PATH_MAX less the NUL).
const SYMLINK_MAX: usize = 4095;

/// Writes the erofs image of one layer tar (compression sniffed) to `out`, a new file.
/// Returns the diff ID (the digest of the uncompressed tar) and the tar's size. On error
/// `out` is removed.
pub fn write_layer_image(reader: impl Read, out: &Path, layer: &str) -> Result<(Digest, u64)> {
    let result = write_inner(reader, out, layer);
    if result.is_err() {
        let _ = fs::remove_file(out);
    }
    result
}

fn write_inner(reader: impl Read, out: &Path, layer: &str) -> Result<(Digest, u64)> {
    let bad = |reason: String| Error::BadLayer {
        layer: layer.to_string(),
        reason,
    };
    let tar = decompress(reader, layer)?;
    let mut hashing = HashingReader::new(tar);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .at(out)?;
    let mut build = Build {
        tree: Tree::new(layer),
        image: ImageWriter::new(file, out, layer)?,
        layer,
    };
    // Where the last entry's data ended, and the error of a stream that stopped right
    // there: see below.
    let read = std::cell::Cell::new(0u64);
    let mut unpadded_end = None;
    {
        let counting = Counting {
            inner: &mut hashing,
            read: &read,
        };
        let mut archive = tar::Archive::new(counting);
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let mut data_end = None;
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                // A stream that stops exactly where the last entry's data ends, without
                // the padding to its block and the end-of-archive blocks, as umoci 0.4's
                // `insert` writes its layers: Go's archive/tar (docker, containerd,
                // umoci) reads that as the end, and so does berth, once it has checked
                // below that nothing at all follows. Any other shortfall is an error.
                Err(e) if data_end == Some(read.get()) => {
                    unpadded_end = Some(e);
                    break;
                }
                Err(e) => return Err(bad(format!("corrupt or truncated tar: {e}"))),
            };
            let regular = entry.header().entry_type().is_file();
            build.entry(entry)?;
            data_end = regular.then(|| read.get());
        }
    }
    // The diff ID covers the whole stream, including the end-of-archive padding.
    let rest = io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| bad(format!("corrupt or truncated stream: {e}")))?;
    if let Some(e) = unpadded_end {
        if rest > 0 {
            return Err(bad(format!("corrupt or truncated tar: {e}")));
        }
        tracing::debug!(
            "layer {layer}: the tar ends without its final padding (as umoci 0.4 writes \
             layers); read as the end of the archive, as docker does"
        );
    }
    let (diff_id, size) = hashing.finish();
    let mut uuid = [0u8; 16];
    if let Ok(bytes) = hex::decode(&diff_id.hex()[..32]) {
        uuid.copy_from_slice(&bytes);
    }
    let image_size = build.image.finish(&build.tree, uuid)?;
    tracing::debug!(
        "layer {layer}: {} inodes, {size} tar bytes, {image_size} image bytes",
        build.tree.nodes.len()
    );
    Ok((diff_id, size))
}

/// A reader that counts what it has handed out, for a tar reader that owns it.
struct Counting<'a, R> {
    inner: R,
    read: &'a std::cell::Cell<u64>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Sniffs the compression of a layer blob and returns the tar stream.
pub(crate) fn decompress<'a>(reader: impl Read + 'a, layer: &str) -> Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| Error::BadLayer {
            layer: layer.to_string(),
            reason: format!("cannot read the layer: {e}"),
        })?
        .to_vec();
    let refuse = |kind: &str| Error::UnknownMediaType {
        media_type: format!("{kind}-compressed tar"),
        what: format!("layer {layer}"),
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(buffered)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d =
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| Error::BadLayer {
                layer: layer.to_string(),
                reason: format!("cannot start zstd decompression: {e}"),
            })?;
        Ok(Box::new(d))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(refuse("xz"))
    } else if head.starts_with(b"BZh") {
        Err(refuse("bzip2"))
    } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        Err(refuse("lz4"))
    } else {
        Ok(Box::new(buffered))
    }
}

/// One layer being turned into an image.
struct Build<'a> {
    tree: Tree,
    image: ImageWriter,
    layer: &'a str,
}

impl Build<'_> {
    fn bad(&self, raw: &[u8], reason: impl std::fmt::Display) -> Error {
        Error::BadLayer {
            layer: self.layer.to_string(),
            reason: format!("entry {:?}: {reason}", String::from_utf8_lossy(raw)),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let rel = safe_relative_path(&raw).map_err(|r| self.tree.refuse(&raw, r))?;
        let kind = entry.header().entry_type();
        let mtime = entry.header().mtime().unwrap_or(0);
        match whiteout_kind(&rel).map_err(|r| self.tree.refuse(&raw, r))? {
            WhiteoutKind::Ignore => return Ok(()),
            WhiteoutKind::Opaque(dir) => return self.tree.make_opaque(&raw, &dir, mtime),
            WhiteoutKind::Whiteout(target) => {
                let (dir, name) = self.tree.parent(&raw, &target, mtime)?;
                let whiteout = Node {
                    kind: Kind::Special {
                        file_type: format::FileType::CharDevice,
                        rdev: 0,
                    },
                    meta: Meta {
                        mtime,
                        ..Meta::default()
                    },
                };
                return self.tree.put(&raw, dir, name, whiteout);
            }
            WhiteoutKind::None => {}
        }
        use tar::EntryType as T;
        if kind == T::Link {
            return self.hard_link(&raw, &rel, &entry);
        }
        let meta = self.meta(&raw, &mut entry, mtime)?;
        if rel.as_os_str().is_empty() {
            // The root directory itself ("./"): only its metadata applies.
            if kind.is_dir() {
                self.tree.set_meta(ROOT, meta);
                return Ok(());
            }
            return Err(self
                .tree
                .refuse(&raw, "only a directory may stand for the layer root"));
        }
        let (dir, name) = self.tree.parent(&raw, &rel, mtime)?;
        let kind = match kind {
            T::Directory => Kind::Dir(Default::default()),
            T::Regular | T::Continuous | T::GNUSparse => {
                let expected = entry.size();
                let (blkaddr, size) = self.image.write_file(&mut entry).map_err(|e| match e {
                    Ok(e) => self.bad(&raw, format!("cannot read its data: {e}")),
                    Err(e) => e,
                })?;
                if kind != T::GNUSparse && size != expected {
                    return Err(self.bad(
                        &raw,
                        format!("truncated: {size} of {expected} bytes; the layer is corrupt"),
                    ));
                }
                Kind::File { blkaddr, size }
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.tree.refuse(&raw, "symlink without a target"))?
                    .into_owned();
                symlink_stays_inside(&rel, &target).map_err(|r| self.tree.refuse(&raw, r))?;
                if target.len() > SYMLINK_MAX {
                    return Err(self.tree.refuse(
                        &raw,
                        format!("the symlink target is longer than {SYMLINK_MAX} bytes"),
                    ));
                }
                Kind::Symlink(target)
            }
            T::Char | T::Block | T::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let (file_type, rdev) = match kind {
                    T::Fifo => (format::FileType::Fifo, 0),
                    _ if major > 0xfff || minor > 0xf_ffff => {
                        return Err(self.tree.refuse(
                            &raw,
                            format!("device number {major}:{minor} is out of range"),
                        ))
                    }
                    T::Char => (
                        format::FileType::CharDevice,
                        format::encode_rdev(major, minor),
                    ),
                    _ => (
                        format::FileType::BlockDevice,
                        format::encode_rdev(major, minor),
                    ),
                };
                Kind::Special { file_type, rdev }
            }
            other => {
                return Err(self
                    .tree
                    .refuse(&raw, format!("unsupported tar entry type {other:?}")));
            }
        };
        self.tree.put(&raw, dir, name, Node { kind, meta })
    }

    /// A hard link: the same node under a second name.
    fn hard_link<R: Read>(
        &mut self,
        raw: &[u8],
        rel: &Path,
        entry: &tar::Entry<'_, R>,
    ) -> Result<()> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| self.tree.refuse(raw, "hard link without a target"))?
            .into_owned();
        let shown = String::from_utf8_lossy(&target).into_owned();
        let trel = safe_relative_path(&target).map_err(|r| {
            self.tree
                .refuse(raw, format!("hard link target {shown:?}: {r}"))
        })?;
        let not_here = || format!("hard link target {shown:?} is not a file of this layer");
        if trel.as_os_str().is_empty() {
            return Err(self.tree.refuse(raw, not_here()));
        }
        let Some(node) = self.tree.lookup(&trel) else {
            return Err(self.tree.refuse(raw, not_here()));
        };
        if matches!(self.tree.nodes[node].kind, Kind::Dir(_)) {
            return Err(self.tree.refuse(raw, "hard link to a directory"));
        }
        if rel.as_os_str().is_empty() {
            return Err(self
                .tree
                .refuse(raw, "only a directory may stand for the layer root"));
        }
        let mtime = entry.header().mtime().unwrap_or(0);
        let (dir, name) = self.tree.parent(raw, rel, mtime)?;
        self.tree.link(raw, dir, name, node)
    }

    /// Mode, owner, time and xattrs of an entry.
    fn meta<R: Read>(&self, raw: &[u8], entry: &mut tar::Entry<'_, R>, mtime: u64) -> Result<Meta> {
        let header = entry.header();
        let perm = header.mode().map_err(|e| self.bad(raw, e))? & 0o7777;
        let uid = header.uid().map_err(|e| self.bad(raw, e))?;
        let gid = header.gid().map_err(|e| self.bad(raw, e))?;
        let uid = u32::try_from(uid).map_err(|_| self.tree.refuse(raw, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| self.tree.refuse(raw, "gid out of range"))?;
        let mut meta = Meta {
            perm: perm as u16,
            uid,
            gid,
            mtime,
            xattrs: Default::default(),
        };
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return Ok(meta);
        };
        for ext in exts {
            let ext = ext.map_err(|e| self.bad(raw, format!("corrupt PAX header: {e}")))?;
            let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            let shown = String::from_utf8_lossy(name);
            if name.starts_with(b"trusted.overlay.") {
                tracing::warn!(
                    "layer {}: dropping xattr {shown} on {:?}",
                    self.layer,
                    String::from_utf8_lossy(raw)
                );
                continue;
            }
            let Some((_, suffix)) = format::xattr_index(name) else {
                tracing::warn!(
                    "layer {}: dropping xattr {shown} on {:?}: erofs has no index for its namespace",
                    self.layer,
                    String::from_utf8_lossy(raw)
                );
                continue;
            };
            let value = ext.value_bytes();
            if suffix.len() > format::NAME_MAX || value.len() > usize::from(u16::MAX) {
                return Err(self.tree.refuse(
                    raw,
                    format!(
                        "xattr {shown} is too long for erofs ({} name bytes, {} value bytes)",
                        name.len(),
                        value.len()
                    ),
                ));
            }
            meta.xattrs.insert(name.to_vec(), value.to_vec());
        }
        Ok(meta)
    }
}
