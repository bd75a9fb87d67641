//! The erofs on-disk format, as far as an uncompressed image needs it (Linux 6.1
//! `fs/erofs/erofs_fs.h`): the superblock, compact and extended inodes, inline xattrs
//! and directory entries, encoded little-endian into byte buffers.
//!
//! Nothing here does I/O; [`super::writer`] decides where each piece goes.

/// The block size: 4 KiB, the page size every kernel berth boots can mount.
pub const BLOCK_SIZE: u64 = 4096;
/// log2 of [`BLOCK_SIZE`].
pub const BLOCK_BITS: u8 = 12;
/// Where the superblock starts in block 0.
pub const SUPER_OFFSET: usize = 1024;
/// The superblock magic.
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// `EROFS_FEATURE_COMPAT_MTIME`: inodes carry their own mtime.
pub const FEATURE_COMPAT_MTIME: u32 = 0x2;
/// Inode slots (nids) are 32 bytes.
pub const NID_SHIFT: u32 = 5;
/// The longest name a directory entry may have (`EROFS_NAME_LEN`).
pub const NAME_MAX: usize = 255;
/// A directory entry's fixed part.
pub const DIRENT_SIZE: usize = 12;
/// A compact inode.
pub const COMPACT_INODE_SIZE: usize = 32;
/// An extended inode.
pub const EXTENDED_INODE_SIZE: usize = 64;
/// The inline xattr header before the entries.
pub const XATTR_IBODY_HEADER_SIZE: usize = 12;

/// `EROFS_INODE_FLAT_PLAIN`: data in consecutive blocks from `raw_blkaddr`.
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
/// `EROFS_INODE_FLAT_INLINE`: whole blocks from `raw_blkaddr`, the tail right after the
/// inode (and its xattrs), in the same block.
pub const LAYOUT_FLAT_INLINE: u16 = 2;

/// Directory entry file types (`EROFS_FT_*`, the generic `FT_*` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileType {
    /// A regular file.
    Regular = 1,
    /// A directory.
    Directory = 2,
    /// A character device.
    CharDevice = 3,
    /// A block device.
    BlockDevice = 4,
    /// A FIFO.
    Fifo = 5,
    /// A socket.
    Socket = 6,
    /// A symbolic link.
    Symlink = 7,
}

impl FileType {
    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u16 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
            FileType::Symlink => 0o120000,
        }
    }
}

/// The superblock fields this writer sets; the rest are zero.
#[derive(Debug, Clone, Default)]
pub struct SuperBlock {
    /// The root directory's nid (must fit 16 bits: the root is placed first).
    pub root_nid: u16,
    /// How many inodes the image has.
    pub inos: u64,
    /// The mtime compact inodes inherit.
    pub build_time: u64,
    /// Total blocks of the image.
    pub blocks: u32,
    /// The first block of the inode area.
    pub meta_blkaddr: u32,
    /// The volume UUID.
    pub uuid: [u8; 16],
}

impl SuperBlock {
    /// The 128-byte on-disk superblock (written at [`SUPER_OFFSET`]).
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 8, FEATURE_COMPAT_MTIME);
        b[12] = BLOCK_BITS;
        put16(&mut b, 14, self.root_nid);
        put64(&mut b, 16, self.inos);
        put64(&mut b, 24, self.build_time);
        put32(&mut b, 36, self.blocks);
        put32(&mut b, 40, self.meta_blkaddr);
        b[48..64].copy_from_slice(&self.uuid);
        b
    }
}

/// One inode's core fields, before it is encoded compact or extended.
#[derive(Debug, Clone)]
pub struct InodeCore {
    /// Type and permission bits (`S_IFMT | 07777`).
    pub mode: u16,
    /// Data layout (`LAYOUT_*`).
    pub layout: u16,
    /// `i_xattr_icount` (0 without xattrs).
    pub xattr_icount: u16,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// `raw_blkaddr` for data, `rdev` (encoded) for devices.
    pub u: u32,
    /// Inode number for 32-bit stat.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: u64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
}

impl InodeCore {
    /// Can this inode be compact, given the superblock's build time?
    pub fn fits_compact(&self, build_time: u64) -> bool {
        self.uid <= u16::MAX.into()
            && self.gid <= u16::MAX.into()
            && self.nlink <= u16::MAX.into()
            && self.size <= u32::MAX.into()
            && self.mtime == build_time
            && self.mtime_nsec == 0
    }

    /// Encodes a compact (32-byte) inode; the caller checked [`Self::fits_compact`].
    pub fn encode_compact(&self) -> [u8; COMPACT_INODE_SIZE] {
        let mut b = [0u8; COMPACT_INODE_SIZE];
        put16(&mut b, 0, self.layout << 1);
        put16(&mut b, 2, self.xattr_icount);
        put16(&mut b, 4, self.mode);
        put16(&mut b, 6, self.nlink as u16);
        put32(&mut b, 8, self.size as u32);
        put32(&mut b, 16, self.u);
        put32(&mut b, 20, self.ino);
        put16(&mut b, 24, self.uid as u16);
        put16(&mut b, 26, self.gid as u16);
        b
    }

    /// Encodes an extended (64-byte) inode.
    pub fn encode_extended(&self) -> [u8; EXTENDED_INODE_SIZE] {
        let mut b = [0u8; EXTENDED_INODE_SIZE];
        put16(&mut b, 0, 1 | (self.layout << 1));
        put16(&mut b, 2, self.xattr_icount);
        put16(&mut b, 4, self.mode);
        put64(&mut b, 8, self.size);
        put32(&mut b, 16, self.u);
        put32(&mut b, 20, self.ino);
        put32(&mut b, 24, self.uid);
        put32(&mut b, 28, self.gid);
        put64(&mut b, 32, self.mtime);
        put32(&mut b, 40, self.mtime_nsec);
        put32(&mut b, 44, self.nlink);
        b
    }
}

/// Encodes a device number the way the kernel's `new_decode_dev` reads it.
pub fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// The erofs name index and the stored suffix of an xattr name, or `None` when erofs
/// (before long-prefix support) has no index for its namespace.
pub fn xattr_index(name: &[u8]) -> Option<(u8, &[u8])> {
    match name {
        b"system.posix_acl_access" => return Some((2, b"")),
        b"system.posix_acl_default" => return Some((3, b"")),
        _ => {}
    }
    for (prefix, index) in [
        (&b"user."[..], 1u8),
        (&b"trusted."[..], 4),
        (&b"security."[..], 6),
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (!rest.is_empty()).then_some((index, rest));
        }
    }
    None
}

/// The inline xattr body of an inode (header plus 4-byte aligned entries) and its
/// `i_xattr_icount`; empty with count 0 when there are no xattrs. Every name must have an
/// index ([`xattr_index`]), a suffix of at most 255 bytes and a value under 64 KiB.
pub fn encode_xattrs<'a>(
    xattrs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<(Vec<u8>, u16)> {
    let mut body = vec![0u8; XATTR_IBODY_HEADER_SIZE];
    let mut any = false;
    for (name, value) in xattrs {
        let (index, suffix) = xattr_index(name)?;
        let name_len = u8::try_from(suffix.len()).ok()?;
        let value_len = u16::try_from(value.len()).ok()?;
        body.push(name_len);
        body.push(index);
        body.extend_from_slice(&value_len.to_le_bytes());
        body.extend_from_slice(suffix);
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
        any = true;
    }
    if !any {
        return Some((Vec::new(), 0));
    }
    let icount = u16::try_from((body.len() - XATTR_IBODY_HEADER_SIZE) / 4 + 1).ok()?;
    Some((body, icount))
}

/// A directory entry for [`encode_dir_block`].
#[derive(Debug, Clone, Copy)]
pub struct Dirent<'a> {
    /// The name (at most [`NAME_MAX`] bytes, no `/` or NUL).
    pub name: &'a [u8],
    /// The target inode.
    pub nid: u64,
    /// Its type.
    pub file_type: FileType,
}

/// Splits sorted directory entries (names only) into blocks: returns how many entries
/// each block holds. Every block holds the fixed parts first, then the names.
pub fn dir_block_counts<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Vec<usize> {
    let mut counts = Vec::new();
    let (mut n, mut used) = (0usize, 0usize);
    for name in names {
        let need = DIRENT_SIZE + name.len();
        if used + need > BLOCK_SIZE as usize {
            counts.push(n);
            (n, used) = (0, 0);
        }
        n += 1;
        used += need;
    }
    if n > 0 {
        counts.push(n);
    }
    counts
}

/// Encodes one directory block from its (sorted) entries; returns the bytes used (the
/// rest of the block is zero). The entries must fit, as [`dir_block_counts`] ensures.
pub fn encode_dir_block(entries: &[Dirent<'_>], block: &mut [u8]) -> usize {
    block.fill(0);
    let mut nameoff = entries.len() * DIRENT_SIZE;
    for (i, e) in entries.iter().enumerate() {
        let at = i * DIRENT_SIZE;
        put64(block, at, e.nid);
        put16(block, at + 8, nameoff as u16);
        block[at + 10] = e.file_type as u8;
        block[nameoff..nameoff + e.name.len()].copy_from_slice(e.name);
        nameoff += e.name.len();
    }
    nameoff
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names_map_to_erofs_indexes() {
        assert_eq!(xattr_index(b"user.berth"), Some((1, &b"berth"[..])));
        assert_eq!(
            xattr_index(b"trusted.overlay.opaque"),
            Some((4, &b"overlay.opaque"[..]))
        );
        assert_eq!(
            xattr_index(b"security.capability"),
            Some((6, &b"capability"[..]))
        );
        assert_eq!(xattr_index(b"system.posix_acl_access"), Some((2, &b""[..])));
        assert_eq!(xattr_index(b"system.nfs4_acl"), None);
        assert_eq!(xattr_index(b"user."), None);
    }

    #[test]
    fn xattr_bodies_are_aligned_and_counted() {
        let (body, icount) = encode_xattrs([(&b"user.a"[..], &b"xyz"[..])]).unwrap();
        // 12 header + 4 entry + 1 name + 3 value = 20, aligned: 20.
        assert_eq!(body.len(), 20);
        assert_eq!(icount, 3);
        assert_eq!(&body[12..16], &[1, 1, 3, 0]);
        assert_eq!(encode_xattrs([]).unwrap(), (Vec::new(), 0));
        let long = vec![0u8; 70_000];
        assert!(encode_xattrs([(&b"user.a"[..], &long[..])]).is_none());
    }

    #[test]
    fn rdev_matches_the_kernel_encoding() {
        assert_eq!(encode_rdev(1, 3), 0x103);
        assert_eq!(encode_rdev(0, 0), 0);
        assert_eq!(encode_rdev(259, 0x12345), 0x1230_0000 | 0x45 | (259 << 8));
    }

    #[test]
    fn directory_blocks_split_when_full() {
        let names: Vec<Vec<u8>> = (0..400)
            .map(|i| format!("entry-{i:04}").into_bytes())
            .collect();
        let counts = dir_block_counts(names.iter().map(|n| n.as_slice()));
        // 22 bytes each: 186 fit in 4096.
        assert_eq!(counts, [186, 186, 28]);
        let entries: Vec<Dirent<'_>> = names[..186]
            .iter()
            .map(|n| Dirent {
                name: n,
                nid: 7,
                file_type: FileType::Regular,
            })
            .collect();
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        assert_eq!(encode_dir_block(&entries, &mut block), 186 * 22);
        assert_eq!(u16::from_le_bytes([block[8], block[9]]), 186 * 12);
    }
}
