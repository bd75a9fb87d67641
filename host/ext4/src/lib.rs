//! Formats an empty ext4 filesystem into a file, in userspace: each container's scratch
//! disk (its writable layer), without `mkfs.ext4`, root or anything Linux-only on the
//! host, so it works the same on macOS and Windows.
//!
//! The result is what `mke2fs -t ext4 -b 4096 -I 256 -m 0 -O ^flex_bg,^resize_inode,
//! ^metadata_csum,^64bit` makes: 4 KiB blocks, 256-byte inodes, `sparse_super`,
//! `extents`, `dir_index`, `filetype`, `large_file`, `huge_file`, `dir_nlink`,
//! `extra_isize` and `ext_attr`, an internal journal of up to 64 MiB, a root folder and
//! `lost+found`. Nothing is reserved for root, and every container's disk gets its own
//! UUID.
//!
//! Only metadata is written, and little of it (about 600 KiB for 8 GiB): the bitmaps,
//! the superblock copies and descriptors, the first block of inodes, two folder blocks
//! and the journal's superblock. Everything else (inode tables, the journal's log, free
//! space) must read as zeros, which a new sparse file does, so the file is made with
//! [`format_new`] or must be all zeros where it is not written. Without `uninit_bg` or
//! `metadata_csum` the kernel trusts the bitmaps and needs no lazy initialization.
//!
//! The unit tests check images against e2fsprogs' own `e2fsck -fn` and `debugfs`; the VM
//! tests mount one in every container.

mod encode;
mod layout;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use encode::Identity;
use encode::{FIRST_FREE_INO, LOST_FOUND_INO, ROOT_INO};
pub use layout::{Layout, BLOCK_SIZE, MAX_BYTES, MIN_BYTES};

/// What can go wrong formatting a filesystem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// a filesystem of {bytes} bytes cannot be made: give between {min} and {max} bytes
    #[error("a filesystem of {bytes} bytes cannot be made: give between {min} and {max} bytes")]
    Size {
        /// The size asked for.
        bytes: u64,
        /// The smallest size formatted.
        min: u64,
        /// The largest.
        max: u64,
    },
    /// cannot {what} {path}: {source}
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// cannot draw random bytes for the filesystem's UUID: {0}
    #[error("cannot draw random bytes for the filesystem's UUID: {0}")]
    Random(String),
}

/// Creates `path` (which must not exist) as a sparse file of `bytes` bytes holding a new,
/// empty ext4 filesystem with a fresh UUID. On error the file is removed.
pub fn format_new(path: &Path, bytes: u64) -> Result<Layout, Error> {
    let mut id = Identity {
        uuid: [0; 16],
        hash_seed: [0; 16],
        time: now(),
    };
    getrandom::fill(&mut id.uuid).map_err(|e| Error::Random(e.to_string()))?;
    getrandom::fill(&mut id.hash_seed).map_err(|e| Error::Random(e.to_string()))?;
    // A random (version 4, RFC 4122 variant) UUID, as mke2fs makes.
    id.uuid[6] = (id.uuid[6] & 0x0F) | 0x40;
    id.uuid[8] = (id.uuid[8] & 0x3F) | 0x80;
    format_new_with(path, bytes, &id)
}

/// [`format_new`] with the UUID, hash seed and time given: the same inputs make the
/// same bytes.
pub fn format_new_with(path: &Path, bytes: u64, id: &Identity) -> Result<Layout, Error> {
    let layout = Layout::new(bytes)?;
    let io = |what| {
        move |source| Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io("create"))?;
    let written = file
        .set_len(layout.blocks * BLOCK_SIZE)
        .and_then(|()| write_metadata(&mut file, &layout, id))
        // Durable before the caller renames it into place: a crash must not leave a
        // scratch disk of zeros under the final name.
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(io("write")(e));
    }
    Ok(layout)
}

/// Writes every metadata block, in disk order.
fn write_metadata(file: &mut File, l: &Layout, id: &Identity) -> std::io::Result<()> {
    let mut put = |block: u64, offset: u64, bytes: &[u8]| {
        file.seek(SeekFrom::Start(block * BLOCK_SIZE + offset))?;
        file.write_all(bytes)
    };
    let descriptors = encode::descriptors(l);
    for g in 0..l.groups {
        let start = l.group_start(g);
        if layout::has_superblock(g) {
            // Group 0's superblock sits 1 KiB into the disk (after the boot sector);
            // its copies start their group's first block.
            let offset = if g == 0 { 1024 } else { 0 };
            put(start, offset, &encode::superblock(l, id, g))?;
            put(start + 1, 0, &descriptors)?;
        }
        let (block_bitmap, inode_bitmap, inode_table) = l.metadata(g);
        put(
            block_bitmap,
            0,
            &encode::bitmap(l.used[g as usize], l.blocks_in(g)),
        )?;
        let inodes_used = if g == 0 {
            u64::from(FIRST_FREE_INO - 1)
        } else {
            0
        };
        put(
            inode_bitmap,
            0,
            &encode::bitmap(inodes_used, l.inodes_per_group),
        )?;
        if g == 0 {
            put(inode_table, 0, &encode::first_inodes(l, id))?;
            put(
                l.root_block,
                0,
                &encode::folder(ROOT_INO, ROOT_INO, &[(LOST_FOUND_INO, "lost+found")]),
            )?;
            put(
                l.lost_found_block,
                0,
                &encode::folder(LOST_FOUND_INO, ROOT_INO, &[]),
            )?;
        }
        if l.journal.0 / layout::BLOCKS_PER_GROUP == g {
            put(l.journal.0, 0, &encode::journal_superblock(l, id))?;
        }
    }
    Ok(())
}

/// Seconds since the epoch, as ext4's 32-bit fields hold them.
fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// e2fsprogs' checker, forced (`-f`) and read-only (`-n`): status 0 means it found
    /// nothing to fix.
    fn fsck(path: &Path) -> (i32, String) {
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(path)
            .output()
            .expect("run e2fsck (install e2fsprogs)");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    fn debugfs(path: &Path, write: bool, request: &str) -> String {
        let mut c = Command::new("debugfs");
        if write {
            c.arg("-w");
        }
        let out = c
            .arg("-R")
            .arg(request)
            .arg(path)
            .output()
            .expect("run debugfs (install e2fsprogs)");
        assert!(out.status.success(), "debugfs {request}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    #[test]
    fn e2fsck_finds_nothing_to_fix_at_many_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for mib in [16u64, 100, 129, 1025, 8192] {
            let path = dir.path().join(format!("{mib}.img"));
            let l = format_new(&path, mib << 20).unwrap();
            let (code, text) = fsck(&path);
            assert_eq!(code, 0, "{mib} MiB ({} groups):\n{text}", l.groups);
            // Sparse: the metadata only.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let on_disk = std::fs::metadata(&path).unwrap().blocks() * 512;
                assert!(on_disk < 2 << 20, "{mib} MiB: {on_disk} bytes on disk");
            }
        }
    }

    #[test]
    fn the_features_and_counts_are_mke2fs_s() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        format_new(&path, 8 << 30).unwrap();
        let stats = debugfs(&path, false, "stats");
        for want in [
            "Filesystem features:      has_journal ext_attr dir_index filetype extent sparse_super large_file huge_file dir_nlink extra_isize",
            "Block count:              2097152",
            "Inode count:              524288",
            "Reserved block count:     0",
            "Inode size:	          256",
            "Journal inode:            8",
            "Filesystem state:         clean",
        ] {
            assert!(stats.contains(want), "no {want:?} in:\n{stats}");
        }
        let root = debugfs(&path, false, "ls -l /");
        assert!(root.contains("lost+found"), "{root}");
        // An empty journal: nothing to replay (s_start 0), the next transaction 1.
        let journal = debugfs(&path, false, "logdump");
        assert!(
            journal.contains("Journal starts at block 0, transaction 1"),
            "{journal}"
        );
    }

    #[test]
    fn files_written_into_it_leave_it_consistent() {
        // debugfs allocates blocks and inodes from the bitmaps this writer made, as the
        // kernel does: a wrong bitmap shows as a double allocation in e2fsck.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        format_new(&path, 256 << 20).unwrap();
        let data = dir.path().join("data");
        std::fs::write(&data, vec![7u8; 3 << 20]).unwrap();
        debugfs(&path, true, "mkdir /upper");
        debugfs(
            &path,
            true,
            &format!("write {} /upper/data", data.display()),
        );
        let (code, text) = fsck(&path);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("13/16384 files"), "{text}");
        let listing = debugfs(&path, false, "ls -l /upper");
        assert!(listing.contains("3145728"), "{listing}");
    }

    #[test]
    fn the_same_identity_makes_the_same_bytes_and_uuids_differ() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity {
            uuid: [1; 16],
            hash_seed: [2; 16],
            time: 1_700_000_000,
        };
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        format_new_with(&a, 64 << 20, &id).unwrap();
        format_new_with(&b, 64 << 20, &id).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let (c, d) = (dir.path().join("c"), dir.path().join("d"));
        format_new(&c, 64 << 20).unwrap();
        format_new(&d, 64 << 20).unwrap();
        let uuid = |p: &Path| {
            debugfs(p, false, "stats")
                .lines()
                .find(|l| l.starts_with("Filesystem UUID"))
                .map(str::to_string)
        };
        assert_ne!(uuid(&c), uuid(&d));
    }

    #[test]
    fn bad_sizes_and_existing_files_are_refused_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.img");
        let err = format_new(&path, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("give between"), "{err}");
        assert!(!path.exists());
        std::fs::write(&path, b"keep").unwrap();
        let err = format_new(&path, 64 << 20).unwrap_err();
        assert!(err.to_string().starts_with("cannot create"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}
