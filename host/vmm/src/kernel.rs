//! Checking a guest kernel before boot: an x86-64 ELF carrying the Xen PVH entry note.

use std::fs::File;
use std::path::Path;

use berth_devices::fileio::read_exact_at;

use crate::error::ConfigError;

const PT_NOTE: u32 = 4;
const EM_X86_64: u16 = 62;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Most program headers we look at (vmlinux has a handful).
const MAX_PHDRS: u16 = 64;
/// Largest note segment we read.
const MAX_NOTE_SEGMENT: u64 = 1 << 20;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Checks that `path` is a readable x86-64 ELF with a PVH entry note.
pub fn check_pvh_kernel(path: &Path) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::BadKernel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let file = File::open(path).map_err(|source| ConfigError::Kernel {
        path: path.to_path_buf(),
        source,
    })?;
    if file.metadata().map(|m| !m.is_file()).unwrap_or(true) {
        return Err(bad("not a regular file"));
    }
    let mut ehdr = [0u8; 64];
    read_exact_at(&file, &mut ehdr, 0).map_err(|_| bad("too short to be an ELF file"))?;
    if &ehdr[..4] != b"\x7fELF" {
        return Err(bad(
            "not an ELF file (a bzImage? use the uncompressed vmlinux)",
        ));
    }
    if ehdr[4] != 2 || ehdr[5] != 1 || u16_at(&ehdr, 18) != EM_X86_64 {
        return Err(bad("not a 64-bit little-endian x86-64 ELF"));
    }
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u16_at(&ehdr, 54);
    let phnum = u16_at(&ehdr, 56);
    if phentsize != 56 || phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad("unexpected ELF program header table"));
    }
    let mut phdrs = vec![0u8; usize::from(phnum) * 56];
    read_exact_at(&file, &mut phdrs, phoff)
        .map_err(|_| bad("truncated ELF program header table"))?;
    for ph in phdrs.chunks_exact(56) {
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let offset = u64_at(ph, 8);
        let size = u64_at(ph, 32).min(MAX_NOTE_SEGMENT);
        let mut notes = vec![0u8; size as usize];
        read_exact_at(&file, &mut notes, offset).map_err(|_| bad("truncated ELF note segment"))?;
        if has_pvh_note(&notes) {
            return Ok(());
        }
    }
    Err(bad("no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Walks the notes of one segment looking for the Xen PHYS32_ENTRY note.
fn has_pvh_note(mut notes: &[u8]) -> bool {
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0) as usize;
        let descsz = u32_at(notes, 4) as usize;
        let kind = u32_at(notes, 8);
        let Some(name_end) = align4(namesz).and_then(|n| n.checked_add(12)) else {
            return false;
        };
        let Some(next) = align4(descsz).and_then(|d| d.checked_add(name_end)) else {
            return false;
        };
        if next > notes.len() {
            return false;
        }
        let name = &notes[12..12 + namesz];
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
            return true;
        }
        notes = &notes[next..];
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal x86-64 ELF: one PT_LOAD of 16 bytes at physical `load`, a PVH note.
    pub(crate) fn pvh_elf(load: u64) -> Vec<u8> {
        let mut f = vec![0u8; 0x110];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&load.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        // PT_LOAD
        let p = 64;
        f[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&0x100u64.to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&load.to_le_bytes());
        f[p + 24..p + 32].copy_from_slice(&load.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&16u64.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&16u64.to_le_bytes());
        // PT_NOTE
        let p = 120;
        f[p..p + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&176u64.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&20u64.to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&20u64.to_le_bytes());
        let n = 176;
        f[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
        f[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
        f[n + 8..n + 12].copy_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
        f[n + 12..n + 16].copy_from_slice(b"Xen\0");
        f[n + 16..n + 20].copy_from_slice(&(load as u32).to_le_bytes());
        // Code: hlt.
        f[0x100] = 0xf4;
        f
    }

    #[test]
    fn accepts_pvh_elf_and_rejects_others() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, pvh_elf(0x100_0000)).unwrap();
        check_pvh_kernel(&good).unwrap();

        let mut no_note = pvh_elf(0x100_0000);
        no_note[176 + 8] = 5; // another note type
        let p = dir.path().join("nonote");
        std::fs::write(&p, no_note).unwrap();
        let e = check_pvh_kernel(&p).unwrap_err().to_string();
        assert!(e.contains("no PVH entry note"), "{e}");

        let p = dir.path().join("bz");
        let mut bz = b"MZ not an ELF at all, a pretend bzImage".to_vec();
        bz.resize(4096, 0);
        std::fs::write(&p, bz).unwrap();
        assert!(check_pvh_kernel(&p)
            .unwrap_err()
            .to_string()
            .contains("not an ELF"));

        let mut huge = pvh_elf(0x100_0000);
        huge[176..180].copy_from_slice(&u32::MAX.to_le_bytes()); // absurd namesz
        let p = dir.path().join("huge");
        std::fs::write(&p, huge).unwrap();
        assert!(check_pvh_kernel(&p).is_err());

        assert!(matches!(
            check_pvh_kernel(&dir.path().join("missing")),
            Err(ConfigError::Kernel { .. })
        ));
        assert!(check_pvh_kernel(dir.path()).is_err());
    }
}
