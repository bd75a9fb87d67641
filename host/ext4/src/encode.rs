//! The on-disk structures a new filesystem needs, as bytes: the superblock, group
//! descriptors, bitmaps, inodes, folder entries and the journal's superblock. Offsets
//! are those of the kernel's `fs/ext4/ext4.h` and `include/linux/jbd2.h`; ext4 is
//! little-endian, the journal big-endian.

use crate::layout::{Layout, BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE, INODE_SIZE};

pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const LOST_FOUND_INO: u32 = 11;
/// Inodes 1 to 10 are reserved, 11 is lost+found: the first 11 are in use.
pub const FIRST_FREE_INO: u32 = 12;

const MAGIC: u16 = 0xEF53;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
/// `user_xattr,acl`, mke2fs's default mount options.
const DEFAULT_MOUNT_OPTS: u32 = 0x4 | 0x8;
const FLAGS_SIGNED_HASH: u32 = 0x1;
const HASH_HALF_MD4: u8 = 1;
const JNL_BACKUP_BLOCKS: u8 = 1;
/// Inode flag: the data is mapped by extents.
const EXTENTS_FL: u32 = 0x80000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// The longest initialized extent.
const EXTENT_MAX_LEN: u64 = 32768;
/// `i_extra_isize`: the fields past the 128 classic bytes this writer fills.
const EXTRA_ISIZE: u16 = 32;
const FT_DIR: u8 = 2;
const JBD2_MAGIC: u32 = 0xC03B_3998;
const JBD2_SUPERBLOCK_V2: u32 = 4;

/// What is random or time-dependent in a new filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The filesystem's UUID.
    pub uuid: [u8; 16],
    /// The seed of folder-index hashes.
    pub hash_seed: [u8; 16],
    /// Creation time, seconds since the epoch (32-bit, as ext4 stores it).
    pub time: u32,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put32_be(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Values the layout guarantees fit their fields (blocks below 2^32, group counts below
/// 2^16 per group): narrowed without a check that could only fail on a layout bug.
fn n32(v: u64) -> u32 {
    v as u32
}
fn n16(v: u64) -> u16 {
    v as u16
}

/// The 1,024-byte superblock, as group `group`'s copy.
pub fn superblock(l: &Layout, id: &Identity, group: u64) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    let free_blocks: u64 = (0..l.groups).map(|g| l.free_in(g)).sum();
    put32(&mut b, 0, n32(l.inodes()));
    put32(&mut b, 4, n32(l.blocks));
    put32(&mut b, 12, n32(free_blocks));
    put32(&mut b, 16, n32(l.inodes() - u64::from(FIRST_FREE_INO - 1)));
    put32(&mut b, 20, 0); // s_first_data_block: 0 with 4 KiB blocks
    put32(&mut b, 24, 2); // s_log_block_size: 1024 << 2
    put32(&mut b, 28, 2); // s_log_cluster_size
    put32(&mut b, 32, n32(BLOCKS_PER_GROUP));
    put32(&mut b, 36, n32(BLOCKS_PER_GROUP));
    put32(&mut b, 40, n32(l.inodes_per_group));
    put32(&mut b, 48, id.time); // s_wtime
    put16(&mut b, 54, 0xFFFF); // s_max_mnt_count: -1, no mount-count checks
    put16(&mut b, 56, MAGIC);
    put16(&mut b, 58, 1); // s_state: clean
    put16(&mut b, 60, 1); // s_errors: continue
    put32(&mut b, 64, id.time); // s_lastcheck
    put32(&mut b, 76, 1); // s_rev_level: dynamic
    put32(&mut b, 84, FIRST_FREE_INO - 1); // s_first_ino
    put16(&mut b, 88, INODE_SIZE as u16);
    put16(&mut b, 90, n16(group)); // s_block_group_nr
    put32(
        &mut b,
        92,
        COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
    );
    put32(&mut b, 96, INCOMPAT_FILETYPE | INCOMPAT_EXTENTS);
    put32(
        &mut b,
        100,
        RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE,
    );
    b[104..120].copy_from_slice(&id.uuid);
    put32(&mut b, 224, JOURNAL_INO);
    b[236..252].copy_from_slice(&id.hash_seed);
    b[252] = HASH_HALF_MD4;
    b[253] = JNL_BACKUP_BLOCKS;
    put32(&mut b, 256, DEFAULT_MOUNT_OPTS);
    put32(&mut b, 264, id.time); // s_mkfs_time
                                 // s_jnl_blocks: a copy of the journal inode's block map and size, which e2fsck
                                 // uses should the inode be lost.
    let (map, size) = journal_map(l);
    b[268..328].copy_from_slice(&map);
    put32(&mut b, 328, n32(size >> 32));
    put32(&mut b, 332, n32(size & 0xFFFF_FFFF));
    put16(&mut b, 348, EXTRA_ISIZE); // s_min_extra_isize
    put16(&mut b, 350, EXTRA_ISIZE); // s_want_extra_isize
    put32(&mut b, 352, FLAGS_SIGNED_HASH);
    b
}

/// The group descriptor table, padded to whole blocks.
pub fn descriptors(l: &Layout) -> Vec<u8> {
    let mut b = vec![0u8; (l.gdt_blocks * BLOCK_SIZE) as usize];
    for g in 0..l.groups {
        let at = (g * DESC_SIZE) as usize;
        let (block_bitmap, inode_bitmap, inode_table) = l.metadata(g);
        let (free_inodes, dirs) = if g == 0 {
            (l.inodes_per_group - u64::from(FIRST_FREE_INO - 1), 2)
        } else {
            (l.inodes_per_group, 0)
        };
        put32(&mut b, at, n32(block_bitmap));
        put32(&mut b, at + 4, n32(inode_bitmap));
        put32(&mut b, at + 8, n32(inode_table));
        put16(&mut b, at + 12, n16(l.free_in(g)));
        put16(&mut b, at + 14, n16(free_inodes));
        put16(&mut b, at + 16, dirs);
    }
    b
}

/// A bitmap block with the first `used` of `len` bits set, and the bits past `len`
/// (which track nothing) set too, as the kernel and e2fsck expect.
pub fn bitmap(used: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    for bit in (0..used).chain(len..BLOCK_SIZE * 8) {
        b[(bit / 8) as usize] |= 1 << (bit % 8);
    }
    b
}

/// The inode table's first block: inodes 1 to 16, with the root folder, the journal and
/// lost+found filled in and the rest zero (unused).
pub fn first_inodes(l: &Layout, id: &Identity) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let mut put = |ino: u32, inode: Vec<u8>| {
        let at = ((ino - 1) as u64 * INODE_SIZE) as usize;
        b[at..at + INODE_SIZE as usize].copy_from_slice(&inode);
    };
    put(
        ROOT_INO,
        inode(id, 0o040755, 3, BLOCK_SIZE, &[(0, l.root_block, 1)]),
    );
    put(
        LOST_FOUND_INO,
        inode(id, 0o040700, 2, BLOCK_SIZE, &[(0, l.lost_found_block, 1)]),
    );
    let (start, len) = l.journal;
    put(
        JOURNAL_INO,
        inode(id, 0o100600, 1, len * BLOCK_SIZE, &extents(start, len)),
    );
    b
}

/// `(logical, physical, length)` runs covering `len` blocks from `start`.
fn extents(start: u64, len: u64) -> Vec<(u64, u64, u64)> {
    (0..len.div_ceil(EXTENT_MAX_LEN))
        .map(|i| {
            let logical = i * EXTENT_MAX_LEN;
            (
                logical,
                start + logical,
                (len - logical).min(EXTENT_MAX_LEN),
            )
        })
        .collect()
}

/// The journal inode's `i_block` and size, for the superblock's backup copy.
fn journal_map(l: &Layout) -> ([u8; 60], u64) {
    let (start, len) = l.journal;
    (extent_root(&extents(start, len)), len * BLOCK_SIZE)
}

/// An inode's `i_block`: an extent tree of depth 0 holding `runs` (at most 4).
fn extent_root(runs: &[(u64, u64, u64)]) -> [u8; 60] {
    let mut b = [0u8; 60];
    put16(&mut b, 0, EXTENT_MAGIC);
    put16(&mut b, 2, n16(runs.len() as u64));
    put16(&mut b, 4, 4); // eh_max: four extents fit after the header
    for (i, &(logical, physical, len)) in runs.iter().take(4).enumerate() {
        let at = 12 + i * 12;
        put32(&mut b, at, n32(logical));
        put16(&mut b, at + 4, n16(len));
        put16(&mut b, at + 6, n16(physical >> 32));
        put32(&mut b, at + 8, n32(physical & 0xFFFF_FFFF));
    }
    b
}

/// One 256-byte inode owned by root, its data in `runs`.
fn inode(id: &Identity, mode: u16, links: u16, size: u64, runs: &[(u64, u64, u64)]) -> Vec<u8> {
    let mut b = vec![0u8; INODE_SIZE as usize];
    let blocks: u64 = runs.iter().map(|r| r.2).sum();
    put16(&mut b, 0, mode);
    put32(&mut b, 4, n32(size & 0xFFFF_FFFF));
    for at in [8, 12, 16] {
        put32(&mut b, at, id.time); // atime, ctime, mtime
    }
    put16(&mut b, 26, links);
    put32(&mut b, 28, n32(blocks * (BLOCK_SIZE / 512))); // i_blocks, in 512-byte sectors
    put32(&mut b, 32, EXTENTS_FL);
    b[40..100].copy_from_slice(&extent_root(runs));
    put32(&mut b, 108, n32(size >> 32));
    put16(&mut b, 128, EXTRA_ISIZE);
    put32(&mut b, 144, id.time); // crtime
    b
}

/// A folder's one block: `.`, `..` and the named `(inode, name)` entries, the last
/// entry's record running to the block's end.
pub fn folder(me: u32, parent: u32, entries: &[(u32, &str)]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let all: Vec<(u32, &str)> = [(me, "."), (parent, "..")]
        .into_iter()
        .chain(entries.iter().copied())
        .collect();
    let mut at = 0usize;
    for (i, (ino, name)) in all.iter().enumerate() {
        let len = if i + 1 == all.len() {
            BLOCK_SIZE as usize - at
        } else {
            (8 + name.len()).next_multiple_of(4)
        };
        put32(&mut b, at, *ino);
        put16(&mut b, at + 4, len as u16);
        b[at + 6] = name.len() as u8;
        b[at + 7] = FT_DIR;
        b[at + 8..at + 8 + name.len()].copy_from_slice(name.as_bytes());
        at += len;
    }
    b
}

/// The journal's superblock (v2, empty: nothing to replay).
pub fn journal_superblock(l: &Layout, id: &Identity) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    put32_be(&mut b, 0, JBD2_MAGIC);
    put32_be(&mut b, 4, JBD2_SUPERBLOCK_V2);
    put32_be(&mut b, 12, n32(BLOCK_SIZE));
    put32_be(&mut b, 16, n32(l.journal.1)); // s_maxlen
    put32_be(&mut b, 20, 1); // s_first: the first log block after this one
    put32_be(&mut b, 24, 1); // s_sequence
    b[48..64].copy_from_slice(&id.uuid);
    put32_be(&mut b, 64, 1); // s_nr_users: this filesystem
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_mark_the_used_blocks_and_the_padding() {
        let b = bitmap(10, 32760);
        assert_eq!(&b[..2], &[0xFF, 0x03]);
        assert!(b[2..4094].iter().all(|&x| x == 0));
        assert_eq!(&b[4095..], &[0xFF]);
        assert_eq!(b[4094], 0);
    }

    #[test]
    fn folder_entries_are_aligned_and_fill_the_block() {
        let b = folder(2, 2, &[(11, "lost+found")]);
        assert_eq!(u16::from_le_bytes([b[4], b[5]]), 12);
        assert_eq!(u16::from_le_bytes([b[16], b[17]]), 12);
        assert_eq!(u16::from_le_bytes([b[28], b[29]]), 4096 - 24);
        assert_eq!(&b[32..42], b"lost+found");
    }

    #[test]
    fn long_runs_are_split_into_extents_of_at_most_32768_blocks() {
        assert_eq!(
            extents(100, 70000),
            [(0, 100, 32768), (32768, 32868, 32768), (65536, 65636, 4464)]
        );
    }
}
