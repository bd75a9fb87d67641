//! Writes the image: file data first, streamed block by block while the tar is read, then
//! directories and the inode area from the finished [`Tree`], then the superblock.
//!
//! ```text
//! block 0             superblock at 1024 (written last)
//! blocks 1..          regular file data, FLAT_PLAIN, each file from a block boundary
//! then                directory blocks (sorted entries, "." and ".." included)
//! then                blocks of symlinks too long to inline
//! meta_blkaddr..      inodes in 32-byte slots, root first (nid 0), each followed by its
//!                     inline xattrs and, for symlinks, the target (FLAT_INLINE)
//! ```
//!
//! An inode is compact (32 bytes) when its owner, link count, size and mtime allow (the
//! superblock's build time is the most common mtime), extended (64 bytes) otherwise. An
//! inode with its xattrs and inline data never straddles a block boundary when it fits in
//! one block.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::format::{
    self, Dirent, FileType, InodeCore, SuperBlock, BLOCK_SIZE, LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN, NID_SHIFT,
};
use super::tree::{Kind, NodeId, Tree, ROOT};
use crate::error::{Error, IoContext, Result};

/// An image being written.
#[derive(Debug)]
pub(crate) struct ImageWriter {
    out: BufWriter<File>,
    path: PathBuf,
    layer: String,
    /// Bytes written so far; a multiple of the block size between files.
    pos: u64,
}

/// Where one reachable inode goes and how it is encoded.
struct Placed {
    node: NodeId,
    nlink: u32,
    /// Directory: its parent, for "..".
    parent: NodeId,
    /// Data block (directories, files, long symlinks) or rdev (devices).
    u: u32,
    size: u64,
    inline: bool,
    nid: u64,
}

impl ImageWriter {
    /// Starts the image of `layer` in `file` (empty, at `path` for error messages).
    pub(crate) fn new(file: File, path: &Path, layer: &str) -> Result<ImageWriter> {
        let mut w = ImageWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            layer: layer.to_string(),
            pos: 0,
        };
        w.zeros(BLOCK_SIZE)?;
        Ok(w)
    }

    fn zeros(&mut self, n: u64) -> Result<()> {
        const Z: [u8; 4096] = [0; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(Z.len() as u64) as usize;
            self.out.write_all(&Z[..k]).at(&self.path)?;
            left -= k as u64;
        }
        self.pos += n;
        Ok(())
    }

    fn pad_to(&mut self, pos: u64) -> Result<()> {
        self.zeros(pos.saturating_sub(self.pos))
    }

    fn block_addr(&self) -> Result<u32> {
        u32::try_from(self.pos / BLOCK_SIZE).map_err(|_| Error::BadLayer {
            layer: self.layer.clone(),
            reason: "the layer image would exceed erofs' 2^32 blocks (16 TiB)".into(),
        })
    }

    /// Streams one regular file's data into the next free blocks; returns its first block
    /// and its size. Read errors come back as they are (the caller names the entry).
    /// Writes one file's data from `data`. A failure to read `data` is an
    /// [`io::Error`] (`Err(Ok(e))`), one to write the image an [`Error`] that names it
    /// (`Err(Err(e))`): a full disk is not a broken layer.
    pub(crate) fn write_file(
        &mut self,
        data: &mut impl Read,
    ) -> std::result::Result<(u32, u64), std::result::Result<io::Error, Error>> {
        let start = self.block_addr().map_err(Err)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Ok(e)),
            };
            self.out.write_all(&buf[..n]).at(&self.path).map_err(Err)?;
            size += n as u64;
        }
        self.pos += size;
        let end = self.pos.next_multiple_of(BLOCK_SIZE);
        self.pad_to(end).map_err(Err)?;
        Ok((if size == 0 { 0 } else { start }, size))
    }

    /// Writes directories, inodes and the superblock; returns the image size. `uuid` is
    /// the volume UUID (derived from the diff ID, so equal layers make equal images).
    pub(crate) fn finish(mut self, tree: &Tree, uuid: [u8; 16]) -> Result<u64> {
        let mut placed = reachable(tree);
        let slot: HashMap<NodeId, usize> = placed
            .iter()
            .enumerate()
            .map(|(i, p)| (p.node, i))
            .collect();
        let build_time = most_common_mtime(tree, &placed);

        // Directory blocks, then long symlinks, in their own blocks after the file data.
        let mut next = self.block_addr()?;
        let layer = self.layer.clone();
        let too_big = |what: &str| Error::BadLayer {
            layer: layer.clone(),
            reason: format!("the layer image would exceed erofs' limits ({what})"),
        };
        let mut bodies: Vec<(Vec<u8>, u16)> = Vec::with_capacity(placed.len());
        for p in placed.iter_mut() {
            let node = &tree.nodes[p.node];
            let body = format::encode_xattrs(
                node.meta
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice())),
            )
            .ok_or_else(|| too_big("an inode's xattrs"))?;
            match &node.kind {
                Kind::Dir(_) => {
                    let entries = dir_entries(tree, p.node, p.parent);
                    let counts = format::dir_block_counts(entries.iter().map(|e| e.0));
                    let last: usize = entries[entries.len() - counts[counts.len() - 1]..]
                        .iter()
                        .map(|e| format::DIRENT_SIZE + e.0.len())
                        .sum();
                    p.u = next;
                    p.size = (counts.len() as u64 - 1) * BLOCK_SIZE + last as u64;
                    next = next
                        .checked_add(counts.len() as u32)
                        .ok_or_else(|| too_big("blocks"))?;
                }
                Kind::File { blkaddr, size } => (p.u, p.size) = (*blkaddr, *size),
                Kind::Symlink(target) => {
                    p.size = target.len() as u64;
                    let isize = inode_size(&core(tree, p), build_time);
                    p.inline = isize + body.0.len() + target.len() <= BLOCK_SIZE as usize;
                }
                Kind::Special { rdev, .. } => p.u = *rdev,
            }
            bodies.push(body);
        }
        for p in placed.iter_mut() {
            if matches!(tree.nodes[p.node].kind, Kind::Symlink(_)) && !p.inline {
                p.u = next;
                next = next.checked_add(1).ok_or_else(|| too_big("blocks"))?;
            }
        }
        let meta_blkaddr = next;

        // Inode slots.
        let mut off = 0u64;
        for (p, body) in placed.iter_mut().zip(&bodies) {
            let isize = inode_size(&core(tree, p), build_time) as u64;
            let tail = if p.inline { p.size } else { 0 };
            let total = isize + body.0.len() as u64 + tail;
            if off % BLOCK_SIZE + total > BLOCK_SIZE && total <= BLOCK_SIZE {
                off = off.next_multiple_of(BLOCK_SIZE);
            }
            p.nid = off >> NID_SHIFT;
            off += total.next_multiple_of(1 << NID_SHIFT);
        }

        // Directory and symlink blocks.
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        for p in &placed {
            if let Kind::Dir(_) = tree.nodes[p.node].kind {
                let entries = dir_entries(tree, p.node, p.parent);
                let counts = format::dir_block_counts(entries.iter().map(|e| e.0));
                let mut rest = &entries[..];
                for n in counts {
                    let (now, later) = rest.split_at(n);
                    rest = later;
                    let dirents: Vec<Dirent<'_>> = now
                        .iter()
                        .map(|(name, id)| Dirent {
                            name,
                            nid: placed[slot[id]].nid,
                            file_type: tree.nodes[*id].kind.file_type(),
                        })
                        .collect();
                    format::encode_dir_block(&dirents, &mut block);
                    self.out.write_all(&block).at(&self.path)?;
                    self.pos += BLOCK_SIZE;
                }
            }
        }
        for p in &placed {
            if let Kind::Symlink(target) = &tree.nodes[p.node].kind {
                if !p.inline {
                    block.fill(0);
                    block[..target.len()].copy_from_slice(target);
                    self.out.write_all(&block).at(&self.path)?;
                    self.pos += BLOCK_SIZE;
                }
            }
        }
        debug_assert_eq!(self.pos, u64::from(meta_blkaddr) * BLOCK_SIZE);

        // The inode area.
        let meta_start = self.pos;
        for (i, (p, body)) in placed.iter().zip(&bodies).enumerate() {
            self.pad_to(meta_start + (p.nid << NID_SHIFT))?;
            let mut c = core(tree, p);
            c.xattr_icount = body.1;
            c.ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if c.fits_compact(build_time) {
                self.out.write_all(&c.encode_compact()).at(&self.path)?;
                self.pos += format::COMPACT_INODE_SIZE as u64;
            } else {
                self.out.write_all(&c.encode_extended()).at(&self.path)?;
                self.pos += format::EXTENDED_INODE_SIZE as u64;
            }
            self.out.write_all(&body.0).at(&self.path)?;
            self.pos += body.0.len() as u64;
            if let (true, Kind::Symlink(target)) = (p.inline, &tree.nodes[p.node].kind) {
                self.out.write_all(target).at(&self.path)?;
                self.pos += target.len() as u64;
            }
        }
        let end = self.pos.next_multiple_of(BLOCK_SIZE);
        self.pad_to(end)?;
        let sb = SuperBlock {
            root_nid: 0,
            inos: placed.len() as u64,
            build_time,
            blocks: u32::try_from(end / BLOCK_SIZE).map_err(|_| too_big("blocks"))?,
            meta_blkaddr,
            uuid,
        };
        self.out
            .seek(SeekFrom::Start(format::SUPER_OFFSET as u64))
            .at(&self.path)?;
        self.out.write_all(&sb.encode()).at(&self.path)?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .at(&self.path)?;
        file.sync_all().at(&self.path)?;
        Ok(end)
    }
}

/// The reachable inodes, root first then breadth-first in name order, each once, with
/// link counts and (for directories) parents.
fn reachable(tree: &Tree) -> Vec<Placed> {
    let mut placed = vec![new_placed(ROOT, ROOT)];
    let mut slot: HashMap<NodeId, usize> = HashMap::from([(ROOT, 0)]);
    let mut i = 0;
    while i < placed.len() {
        let id = placed[i].node;
        i += 1;
        let Kind::Dir(children) = &tree.nodes[id].kind else {
            continue;
        };
        for &child in children.values() {
            if let Some(&s) = slot.get(&child) {
                placed[s].nlink += 1;
                continue;
            }
            slot.insert(child, placed.len());
            placed.push(new_placed(child, id));
        }
    }
    for i in 0..placed.len() {
        if let Kind::Dir(_) = tree.nodes[placed[i].node].kind {
            placed[i].nlink += 1;
            if placed[i].node != ROOT {
                let parent = slot[&placed[i].parent];
                placed[parent].nlink += 1;
            }
        }
    }
    placed
}

fn new_placed(node: NodeId, parent: NodeId) -> Placed {
    Placed {
        node,
        nlink: 1,
        parent,
        u: 0,
        size: 0,
        inline: false,
        nid: 0,
    }
}

/// A directory's entries with "." and "..", sorted by name as erofs requires.
fn dir_entries(tree: &Tree, dir: NodeId, parent: NodeId) -> Vec<(&[u8], NodeId)> {
    let Kind::Dir(children) = &tree.nodes[dir].kind else {
        return Vec::new();
    };
    let mut entries: Vec<(&[u8], NodeId)> = children
        .iter()
        .map(|(n, &id)| (n.as_slice(), id))
        .chain([(&b"."[..], dir), (&b".."[..], parent)])
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

fn core(tree: &Tree, p: &Placed) -> InodeCore {
    let node = &tree.nodes[p.node];
    let file_type: FileType = node.kind.file_type();
    InodeCore {
        mode: file_type.mode_bits() | (node.meta.perm & 0o7777),
        layout: if p.inline {
            LAYOUT_FLAT_INLINE
        } else {
            LAYOUT_FLAT_PLAIN
        },
        xattr_icount: 0,
        nlink: p.nlink,
        size: p.size,
        u: if p.inline { 0 } else { p.u },
        ino: 0,
        uid: node.meta.uid,
        gid: node.meta.gid,
        mtime: node.meta.mtime,
        mtime_nsec: 0,
    }
}

fn inode_size(c: &InodeCore, build_time: u64) -> usize {
    if c.fits_compact(build_time) {
        format::COMPACT_INODE_SIZE
    } else {
        format::EXTENDED_INODE_SIZE
    }
}

fn most_common_mtime(tree: &Tree, placed: &[Placed]) -> u64 {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for p in placed {
        *counts.entry(tree.nodes[p.node].meta.mtime).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(t, n)| (n, std::cmp::Reverse(t)))
        .map(|(t, _)| t)
        .unwrap_or(0)
}
