//! Where everything goes: the geometry of a new filesystem of a given size, and the few
//! blocks its root folder, `lost+found` and journal take. Pure arithmetic, no I/O.
//!
//! Groups are laid out as `mke2fs -O ^flex_bg,^resize_inode` lays them out: a superblock
//! copy and the group descriptors where `sparse_super` keeps one (groups 0, 1 and the
//! powers of 3, 5 and 7), then the group's block bitmap, inode bitmap and inode table. What
//! the root folder, `lost+found` and the journal take comes right after the metadata of
//! the group they are in, so every group's used blocks are the first ones of the group.

use crate::Error;

/// Bytes per block.
pub const BLOCK_SIZE: u64 = 4096;
/// Blocks per group: as many as one block of bitmap can track.
pub const BLOCKS_PER_GROUP: u64 = BLOCK_SIZE * 8;
/// Bytes per inode.
pub const INODE_SIZE: u64 = 256;
/// One inode per this many bytes of filesystem (mke2fs's default ratio).
const BYTES_PER_INODE: u64 = 16384;
/// Bytes of one group descriptor (no `64bit` feature).
pub const DESC_SIZE: u64 = 32;
/// The smallest filesystem formatted: one group big enough for its metadata, the
/// smallest journal and some room.
pub const MIN_BYTES: u64 = 16 << 20;
/// The largest: 32-bit block numbers.
pub const MAX_BYTES: u64 = (u32::MAX as u64) * BLOCK_SIZE;

/// The geometry of one filesystem, and where its first files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Blocks in the filesystem (the tail that cannot hold a group is left out).
    pub blocks: u64,
    /// Block groups.
    pub groups: u64,
    /// Inodes in each group.
    pub inodes_per_group: u64,
    /// Blocks of group descriptors after each superblock copy.
    pub gdt_blocks: u64,
    /// Blocks of each group's inode table.
    pub inode_table_blocks: u64,
    /// The root folder's one block.
    pub root_block: u64,
    /// `lost+found`'s one block.
    pub lost_found_block: u64,
    /// The journal's first block (its superblock) and its length in blocks.
    pub journal: (u64, u64),
    /// Blocks used at the start of each group (metadata, and any of the above).
    pub used: Vec<u64>,
}

impl Layout {
    /// The layout of a filesystem of `bytes` bytes (rounded down to whole blocks).
    pub fn new(bytes: u64) -> Result<Self, Error> {
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
            return Err(Error::Size {
                bytes,
                min: MIN_BYTES,
                max: MAX_BYTES,
            });
        }
        let mut blocks = bytes / BLOCK_SIZE;
        let inodes_per_group = BLOCKS_PER_GROUP * BLOCK_SIZE / BYTES_PER_INODE;
        let inode_table_blocks = inodes_per_group * INODE_SIZE / BLOCK_SIZE;
        let mut groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let mut gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
        // A last group too small for its own metadata and some room is left out, as
        // mke2fs does.
        let last = blocks - (groups - 1) * BLOCKS_PER_GROUP;
        let last_overhead = overhead(groups - 1, gdt_blocks, inode_table_blocks);
        if groups > 1 && last < last_overhead + 50 {
            groups -= 1;
            blocks = groups * BLOCKS_PER_GROUP;
            gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
        }
        let mut used: Vec<u64> = (0..groups)
            .map(|g| overhead(g, gdt_blocks, inode_table_blocks))
            .collect();
        let root_block = used[0];
        let lost_found_block = used[0] + 1;
        used[0] += 2;
        let journal_len = journal_blocks(blocks);
        // The journal goes, whole, into the first group from the middle on that has room
        // (mke2fs also puts it mid-disk, where seeks to it are shortest).
        let in_group = |g: u64| blocks_in_group(blocks, g) - used[g as usize];
        let group = (groups / 2..groups)
            .chain(0..groups / 2)
            .find(|&g| in_group(g) >= journal_len)
            .ok_or(Error::Size {
                bytes,
                min: MIN_BYTES,
                max: MAX_BYTES,
            })?;
        let journal_start = group * BLOCKS_PER_GROUP + used[group as usize];
        used[group as usize] += journal_len;
        Ok(Self {
            blocks,
            groups,
            inodes_per_group,
            gdt_blocks,
            inode_table_blocks,
            root_block,
            lost_found_block,
            journal: (journal_start, journal_len),
            used,
        })
    }

    /// The first block of group `g`.
    pub fn group_start(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP
    }

    /// Blocks of group `g` (the last may be short).
    pub fn blocks_in(&self, g: u64) -> u64 {
        blocks_in_group(self.blocks, g)
    }

    /// Where group `g`'s block bitmap, inode bitmap and inode table are.
    pub fn metadata(&self, g: u64) -> (u64, u64, u64) {
        let mut b = self.group_start(g);
        if has_superblock(g) {
            b += 1 + self.gdt_blocks;
        }
        (b, b + 1, b + 2)
    }

    /// All inodes.
    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group
    }

    /// Free blocks in group `g`.
    pub fn free_in(&self, g: u64) -> u64 {
        self.blocks_in(g) - self.used[g as usize]
    }
}

/// Whether group `g` holds a copy of the superblock and descriptors (`sparse_super`).
pub fn has_superblock(g: u64) -> bool {
    fn power_of(mut g: u64, base: u64) -> bool {
        while g > 1 && g.is_multiple_of(base) {
            g /= base;
        }
        g == 1
    }
    g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
}

/// Blocks of metadata at the start of group `g`.
fn overhead(g: u64, gdt_blocks: u64, inode_table_blocks: u64) -> u64 {
    let sb = if has_superblock(g) { 1 + gdt_blocks } else { 0 };
    sb + 2 + inode_table_blocks
}

fn blocks_in_group(blocks: u64, g: u64) -> u64 {
    (blocks - g * BLOCKS_PER_GROUP).min(BLOCKS_PER_GROUP)
}

/// The journal's length, as mke2fs chooses it for a filesystem of `blocks` blocks, at
/// most 64 MiB, so that it fits, whole, in one group.
fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        ..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        _ => 16384,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_copies_follow_sparse_super() {
        let with: Vec<u64> = (0..100).filter(|&g| has_superblock(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn an_8_gib_disk_has_64_full_groups_and_the_journal_mid_disk() {
        let l = Layout::new(8 << 30).unwrap();
        assert_eq!(
            (l.blocks, l.groups, l.inodes_per_group),
            (1 << 21, 64, 8192)
        );
        assert_eq!((l.gdt_blocks, l.inode_table_blocks), (1, 512));
        // Group 0: superblock, descriptors, two bitmaps, the inode table, then the root
        // folder and lost+found.
        assert_eq!(l.metadata(0), (2, 3, 4));
        assert_eq!((l.root_block, l.lost_found_block), (516, 517));
        // Group 32 holds no superblock copy: the journal starts after its metadata.
        assert_eq!(l.metadata(32), (32 * 32768, 32 * 32768 + 1, 32 * 32768 + 2));
        assert_eq!(l.journal, (32 * 32768 + 514, 16384));
        assert_eq!(l.used[32], 514 + 16384);
    }

    #[test]
    fn a_short_last_group_is_kept_only_with_room_to_spare() {
        // 136 MiB: one full group and 2,048 blocks, enough for a group of its own.
        let l = Layout::new(136 << 20).unwrap();
        assert_eq!((l.groups, l.blocks), (2, 34816));
        // One group and 500 blocks: less than the second group's own metadata.
        let l = Layout::new((32768 + 500) * 4096).unwrap();
        assert_eq!((l.groups, l.blocks), (1, 32768));
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(matches!(Layout::new(1 << 20), Err(Error::Size { .. })));
        assert!(matches!(Layout::new(u64::MAX), Err(Error::Size { .. })));
        assert!(Layout::new(MIN_BYTES).is_ok());
    }

    #[test]
    fn every_size_fits_its_journal_and_counts_add_up() {
        for mib in [16u64, 17, 63, 64, 100, 129, 1000, 1025, 2048, 4097, 65536] {
            let l = Layout::new(mib << 20).unwrap();
            let used: u64 = l.used.iter().sum();
            let free: u64 = (0..l.groups).map(|g| l.free_in(g)).sum();
            assert_eq!(used + free, l.blocks, "{mib} MiB");
            let (start, len) = l.journal;
            let g = start / BLOCKS_PER_GROUP;
            assert_eq!(
                (start + len - 1) / BLOCKS_PER_GROUP,
                g,
                "{mib} MiB: one group"
            );
        }
    }
}
