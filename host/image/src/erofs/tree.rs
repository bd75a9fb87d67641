//! The in-memory tree of one layer: what its tar entries leave behind, in overlayfs form.
//!
//! Entries apply in tar order, as an unpack onto an empty directory would: a later entry
//! replaces an earlier one at the same path (a directory over a directory keeps the
//! children and takes the new metadata), a missing parent becomes a 0755 root-owned
//! directory, a whiteout becomes a 0:0 character device, an opaque marker sets
//! `trusted.overlay.opaque=y` on its directory. Only metadata lives here; file data is
//! already in the image (a file is its first block and size).
//!
//! Every path is checked before it changes anything: a path through a symlink or a
//! non-directory, a name longer than erofs allows, a hard link to something that is not a
//! non-directory of this layer are refused with [`Error::UnsafeLayerEntry`] naming the entry.

use std::collections::BTreeMap;
use std::path::Path;

use super::format::{FileType, NAME_MAX};
use crate::error::Error;

/// An index into [`Tree::nodes`].
pub(crate) type NodeId = usize;

/// The root directory's id.
pub(crate) const ROOT: NodeId = 0;

/// What a node is.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A directory and its children by name.
    Dir(BTreeMap<Vec<u8>, NodeId>),
    /// A regular file whose data starts at `blkaddr` in the image.
    File {
        /// First data block.
        blkaddr: u32,
        /// Size in bytes.
        size: u64,
    },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character or block device, or a FIFO, with its encoded device number.
    Special {
        /// Which of them.
        file_type: FileType,
        /// The device number, erofs-encoded.
        rdev: u32,
    },
}

impl Kind {
    /// The directory-entry type.
    pub(crate) fn file_type(&self) -> FileType {
        match self {
            Kind::Dir(_) => FileType::Directory,
            Kind::File { .. } => FileType::Regular,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::Special { file_type, .. } => *file_type,
        }
    }
}

/// Ownership, permissions, time and xattrs of an entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    /// Permission bits including set-id and sticky (07777).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: u64,
    /// Full xattr names (`user.x`) and values.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// One inode of the layer.
#[derive(Debug)]
pub(crate) struct Node {
    /// Its type and content.
    pub kind: Kind,
    /// Its metadata.
    pub meta: Meta,
}

/// The layer tree.
#[derive(Debug)]
pub(crate) struct Tree {
    /// Every node ever created; [`ROOT`] is the root. Replaced nodes stay here but are no
    /// longer reachable from the root.
    pub nodes: Vec<Node>,
    layer: String,
}

impl Tree {
    /// An empty layer: a 0755 root-owned root directory.
    pub(crate) fn new(layer: &str) -> Tree {
        Tree {
            nodes: vec![implicit_dir(0)],
            layer: layer.to_string(),
        }
    }

    /// The refusal of entry `raw`.
    pub(crate) fn refuse(&self, raw: &[u8], reason: impl Into<String>) -> Error {
        Error::UnsafeLayerEntry {
            layer: self.layer.clone(),
            entry: String::from_utf8_lossy(raw).into_owned(),
            reason: reason.into(),
        }
    }

    /// Finds (creating missing directories, with `mtime`) the directory that holds `rel`
    /// and returns it with `rel`'s last name.
    pub(crate) fn parent<'p>(
        &mut self,
        raw: &[u8],
        rel: &'p Path,
        mtime: u64,
    ) -> Result<(NodeId, &'p [u8]), Error> {
        let names: Vec<&[u8]> = rel.iter().map(|c| c.as_encoded_bytes()).collect();
        let Some((last, dirs)) = names.split_last() else {
            return Err(self.refuse(raw, "the entry has no name"));
        };
        for n in &names {
            if n.len() > NAME_MAX {
                return Err(self.refuse(
                    raw,
                    format!(
                        "the name {:?} is {} bytes long; erofs allows {NAME_MAX}",
                        String::from_utf8_lossy(n),
                        n.len()
                    ),
                ));
            }
        }
        let mut cur = ROOT;
        for (depth, name) in dirs.iter().enumerate() {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                return Err(self.internal(raw));
            };
            cur = match children.get(*name) {
                Some(&child) => match &self.nodes[child].kind {
                    Kind::Dir(_) => child,
                    other => {
                        let what = if matches!(other, Kind::Symlink(_)) {
                            "its path goes through the symlink"
                        } else {
                            "its parent is not a directory:"
                        };
                        let prefix = names[..=depth].join(&b'/');
                        return Err(self.refuse(
                            raw,
                            format!("{what} {:?}", String::from_utf8_lossy(&prefix)),
                        ));
                    }
                },
                None => {
                    let id = self.push(implicit_dir(mtime));
                    self.children_mut(raw, cur)?.insert(name.to_vec(), id);
                    id
                }
            };
        }
        Ok((cur, last))
    }

    /// Looks `rel` up without following symlinks.
    pub(crate) fn lookup(&self, rel: &Path) -> Option<NodeId> {
        let mut cur = ROOT;
        for c in rel.iter() {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                return None;
            };
            cur = *children.get(c.as_encoded_bytes())?;
        }
        Some(cur)
    }

    /// Puts a new node at `name` in `dir`, replacing what is there; a directory over a
    /// directory keeps its children and takes the new metadata (xattrs are added to).
    pub(crate) fn put(
        &mut self,
        raw: &[u8],
        dir: NodeId,
        name: &[u8],
        node: Node,
    ) -> Result<(), Error> {
        if let Some(&old) = self.children_mut(raw, dir)?.get(name) {
            if let (Kind::Dir(_), Kind::Dir(_)) = (&self.nodes[old].kind, &node.kind) {
                self.set_meta(old, node.meta);
                return Ok(());
            }
        }
        let id = self.push(node);
        self.children_mut(raw, dir)?.insert(name.to_vec(), id);
        Ok(())
    }

    /// Links `name` in `dir` to the existing node `target` (a hard link).
    pub(crate) fn link(
        &mut self,
        raw: &[u8],
        dir: NodeId,
        name: &[u8],
        target: NodeId,
    ) -> Result<(), Error> {
        self.children_mut(raw, dir)?.insert(name.to_vec(), target);
        Ok(())
    }

    /// Replaces the metadata of `id` (xattrs are added to, not replaced).
    pub(crate) fn set_meta(&mut self, id: NodeId, meta: Meta) {
        let node = &mut self.nodes[id];
        let mut xattrs = std::mem::take(&mut node.meta.xattrs);
        xattrs.extend(meta.xattrs);
        node.meta = Meta { xattrs, ..meta };
    }

    /// Makes `rel` (creating it and its parents if missing) an opaque directory.
    pub(crate) fn make_opaque(&mut self, raw: &[u8], rel: &Path, mtime: u64) -> Result<(), Error> {
        let dir = if rel.as_os_str().is_empty() {
            ROOT
        } else {
            let inside = rel.join("x");
            self.parent(raw, &inside, mtime)?.0
        };
        self.nodes[dir].meta.xattrs.insert(
            crate::layer::OPAQUE_XATTR.as_bytes().to_vec(),
            b"y".to_vec(),
        );
        Ok(())
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The children of directory `dir` (only directories are ever walked into).
    fn children_mut(
        &mut self,
        raw: &[u8],
        dir: NodeId,
    ) -> Result<&mut BTreeMap<Vec<u8>, NodeId>, Error> {
        match self.nodes.get_mut(dir).map(|n| &mut n.kind) {
            Some(Kind::Dir(children)) => Ok(children),
            _ => Err(internal(&self.layer, raw)),
        }
    }

    fn internal(&self, raw: &[u8]) -> Error {
        internal(&self.layer, raw)
    }
}

/// A broken invariant of this module, reported rather than panicking.
fn internal(layer: &str, raw: &[u8]) -> Error {
    Error::BadLayer {
        layer: layer.to_string(),
        reason: format!(
            "internal error at entry {:?}: a parent node is not a directory",
            String::from_utf8_lossy(raw)
        ),
    }
}

/// A directory made because an entry needs it: 0755, root-owned.
fn implicit_dir(mtime: u64) -> Node {
    Node {
        kind: Kind::Dir(BTreeMap::new()),
        meta: Meta {
            perm: 0o755,
            mtime,
            ..Meta::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> Node {
        Node {
            kind: Kind::File { blkaddr: 1, size },
            meta: Meta {
                perm: 0o644,
                ..Meta::default()
            },
        }
    }

    #[test]
    fn parents_are_made_and_checked() {
        let mut t = Tree::new("l");
        let (d, name) = t.parent(b"a/b/c", Path::new("a/b/c"), 5).unwrap();
        assert_eq!(name, b"c");
        t.put(b"", d, name, file(1)).unwrap();
        assert!(t.lookup(Path::new("a/b/c")).is_some());
        assert_eq!(t.nodes[t.lookup(Path::new("a")).unwrap()].meta.perm, 0o755);
        let err = t
            .parent(b"a/b/c/d", Path::new("a/b/c/d"), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a directory") && err.contains("a/b/c"),
            "{err}"
        );
        let long = "x".repeat(256);
        let err = t
            .parent(long.as_bytes(), Path::new(&long), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("256 bytes"), "{err}");
    }

    #[test]
    fn a_file_replaces_a_directory_and_a_directory_merges() {
        let mut t = Tree::new("l");
        let (d, n) = t.parent(b"d/f", Path::new("d/f"), 0).unwrap();
        t.put(b"", d, n, file(1)).unwrap();
        let dir = Node {
            kind: Kind::Dir(BTreeMap::new()),
            meta: Meta {
                perm: 0o700,
                ..Meta::default()
            },
        };
        t.put(b"", ROOT, b"d", dir).unwrap();
        assert!(t.lookup(Path::new("d/f")).is_some(), "children kept");
        assert_eq!(t.nodes[t.lookup(Path::new("d")).unwrap()].meta.perm, 0o700);
        t.put(b"", ROOT, b"d", file(2)).unwrap();
        assert!(t.lookup(Path::new("d/f")).is_none(), "the subtree is gone");
    }
}
