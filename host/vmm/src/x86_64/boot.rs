//! Guest memory and the PVH boot: kernel, initrd, command line, start info, memory map,
//! GDT and MP table.

use std::fs::File;
use std::path::Path;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress};

use super::layout::*;
use super::{mptable, regs};
use crate::config::MAX_CMDLINE;
use crate::error::{ConfigError, VmmError};
use crate::GuestMemory;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const PAGE: u64 = 4096;

/// Allocates guest RAM of `mib` MiB (anonymous, private, not yet touched).
pub fn create_memory(mib: u64) -> Result<GuestMemory, VmmError> {
    let bytes = mib.checked_mul(1 << 20).ok_or(VmmError::Memory {
        mib,
        reason: "size overflows".into(),
    })?;
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(bytes)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemory::from_ranges(&ranges).map_err(|e| VmmError::Memory {
        mib,
        reason: e.to_string(),
    })
}

/// The e820 map the guest gets.
pub fn memory_map(mem_bytes: u64) -> Vec<hvm_memmap_table_entry> {
    let entry = |addr, size, type_| hvm_memmap_table_entry {
        addr,
        size,
        type_,
        reserved: 0,
    };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, 0xa_0000 - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(mem_bytes) {
        let end = start + len;
        let start = start.max(HIMEM_START);
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}

/// Where the guest starts.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// PVH entry point (32-bit protected mode).
    pub entry: u64,
}

/// A kernel loaded into guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Its PVH entry point (32-bit protected mode).
    pub entry: u64,
    /// The first guest address past it.
    pub end: u64,
}

/// Loads the kernel into guest memory with linux-loader, which is berth's one check that it
/// is a bootable kernel: a little-endian 64-bit ELF whose segments fit in guest memory,
/// with a PVH entry note. What is wrong with one that is not is a
/// [`ConfigError::BadKernel`].
pub fn load_kernel(mem: &GuestMemory, kernel: &Path) -> Result<LoadedKernel, ConfigError> {
    use linux_loader::loader::elf::Error as E;
    use linux_loader::loader::Error as L;
    let bad = |reason: String| ConfigError::BadKernel {
        path: kernel.to_path_buf(),
        reason,
    };
    let mut file = File::open(kernel).map_err(|source| ConfigError::Kernel {
        path: kernel.to_path_buf(),
        source,
    })?;
    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|e| {
        bad(match e {
            L::Elf(E::ReadElfHeader) => "too short to be an ELF file".into(),
            L::Elf(E::InvalidElfMagicNumber) => {
                "not an ELF file (a bzImage? use the uncompressed vmlinux)".into()
            }
            L::Elf(E::BigEndianElfOnLittle) => "a big-endian ELF".into(),
            L::Elf(E::InvalidProgramHeaderSize) => "not a 64-bit ELF".into(),
            L::Elf(E::InvalidEntryAddress) => "its entry point is below 1 MiB".into(),
            L::Elf(E::ReadKernelImage | E::InvalidProgramHeaderAddress) | L::MemoryOverflow => {
                format!(
                    "it does not fit in the guest's {} MiB of memory, or is truncated",
                    ram_ranges_total(mem) >> 20
                )
            }
            e => e.to_string(),
        })
    })?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => Ok(LoadedKernel {
            entry: addr.0,
            end: loaded.kernel_end,
        }),
        _ => Err(bad("no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)".into())),
    }
}

/// Writes everything else the PVH boot needs around a loaded kernel: the initrd, the
/// command line, the start info and memory map, the GDT and the MP table.
pub fn load(
    mem: &GuestMemory,
    kernel: &LoadedKernel,
    initrd: Option<&Path>,
    cmdline: &str,
    cpus: u8,
) -> Result<BootInfo, VmmError> {
    let mem_bytes: u64 = ram_ranges_total(mem);
    let low_end = mem_bytes.min(MMIO_GAP_START);

    // Command line.
    if cmdline.len() >= MAX_CMDLINE {
        return Err(ConfigError::CmdlineTooLong {
            len: cmdline.len(),
            max: MAX_CMDLINE - 1,
        }
        .into());
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| VmmError::BootData(format!("command line: {e}")))?;

    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        ..Default::default()
    };
    let map = memory_map(mem_bytes);
    start_info.memmap_entries = map.len() as u32;

    // Initrd at the top of low memory, above the kernel.
    let mut modules = Vec::new();
    if let Some(path) = initrd {
        let initrd_err = |source| ConfigError::Initrd {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(initrd_err)?;
        let size = file.metadata().map_err(initrd_err)?.len();
        let kernel_end = kernel.end.div_ceil(PAGE) * PAGE;
        let addr = low_end
            .checked_sub(size)
            .map(|a| a & !(PAGE - 1))
            .filter(|&a| a >= kernel_end)
            .ok_or(VmmError::InitrdTooLarge { size })?;
        // Straight from the file into guest memory: no host-side copy of the initrd.
        mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
            .map_err(|e| VmmError::BootData(format!("initrd {}: {e}", path.display())))?;
        modules.push(hvm_modlist_entry {
            paddr: addr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        });
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_ADDR;
    }

    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections(&map, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemory>(&params, mem)
        .map_err(|e| VmmError::BootData(format!("PVH start info: {e}")))?;

    // GDT and an empty IDT.
    let mut gdt = Vec::with_capacity(regs::GDT.len() * 8);
    for e in regs::GDT {
        gdt.extend_from_slice(&e.to_le_bytes());
    }
    mem.write_slice(&gdt, GuestAddress(GDT_ADDR))
        .map_err(|e| VmmError::BootData(format!("GDT: {e}")))?;
    mem.write_slice(&[0u8; 8], GuestAddress(IDT_ADDR))
        .map_err(|e| VmmError::BootData(format!("IDT: {e}")))?;

    mptable::write(mem, cpus).map_err(VmmError::BootData)?;
    Ok(BootInfo {
        entry: kernel.entry,
    })
}

fn ram_ranges_total(mem: &GuestMemory) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter().map(|r| r.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::test_kernel::{pvh_elf, NOTE_NAMESZ, NOTE_TYPE};

    #[test]
    fn memory_map_covers_ram_and_skips_holes() {
        let map = memory_map(256 << 20);
        let v: Vec<(u64, u64, u32)> = map.iter().map(|e| (e.addr, e.size, e.type_)).collect();
        assert_eq!(
            v,
            vec![
                (0, EBDA_START, E820_RAM),
                (EBDA_START, 0xa_0000 - EBDA_START, E820_RESERVED),
                (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM),
            ]
        );
        let map = memory_map(4 << 30);
        let last = map.last().unwrap();
        assert_eq!((last.addr, last.size), (MMIO_GAP_END, 1 << 30));
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
    }

    #[test]
    fn loads_a_pvh_elf_with_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, pvh_elf(0x100_0000)).unwrap();
        let initrd = dir.path().join("initrd");
        std::fs::write(&initrd, vec![0x5a; 5000]).unwrap();
        let mem = create_memory(32).unwrap();
        let loaded = load_kernel(&mem, &kernel).unwrap();
        assert_eq!(loaded.entry, 0x100_0000);
        let code: u8 = mem.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(code, 0xf4, "the kernel's code is in guest memory");
        let info = load(&mem, &loaded, Some(&initrd), "console=ttyS0", 2).unwrap();
        assert_eq!(info.entry, 0x100_0000);
        let si: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(si.magic, XEN_HVM_START_MAGIC);
        assert_eq!(si.nr_modules, 1);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_ADDR)).unwrap();
        assert_eq!(m.size, 5000);
        assert_eq!(m.paddr % PAGE, 0);
        assert!(m.paddr + m.size <= 32 << 20);
        let b: u8 = mem.read_obj(GuestAddress(m.paddr + 4999)).unwrap();
        assert_eq!(b, 0x5a);
        let mut cl = [0u8; 14];
        mem.read_slice(&mut cl, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&cl, b"console=ttyS0\0");

        // An initrd that cannot fit above the kernel.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 20 << 20]).unwrap();
        let mem = create_memory(32).unwrap();
        let loaded = load_kernel(&mem, &kernel).unwrap();
        assert!(matches!(
            load(&mem, &loaded, Some(&big), "", 1),
            Err(VmmError::InitrdTooLarge { .. })
        ));
        // A command line over the limit.
        let long = "x".repeat(MAX_CMDLINE);
        assert!(load(&mem, &loaded, None, &long, 1).is_err());
    }

    #[test]
    fn only_pvh_elf_kernels_load() {
        let dir = tempfile::tempdir().unwrap();
        let reason = |bytes: Vec<u8>| {
            let p = dir.path().join("k");
            std::fs::write(&p, bytes).unwrap();
            let mem = create_memory(32).unwrap();
            match load_kernel(&mem, &p) {
                Err(ConfigError::BadKernel { reason, .. }) => reason,
                other => panic!("{other:?}"),
            }
        };
        let mut no_note = pvh_elf(0x100_0000);
        no_note[NOTE_TYPE] = 5; // another note type
        assert!(reason(no_note).contains("no PVH entry note"));

        let mut bz = b"MZ not an ELF at all, a pretend bzImage".to_vec();
        bz.resize(4096, 0);
        assert!(reason(bz).contains("not an ELF file"));
        assert!(reason(b"\x7fELF".to_vec()).contains("too short"));

        let mut big_endian = pvh_elf(0x100_0000);
        big_endian[5] = 2;
        assert!(reason(big_endian).contains("big-endian"));

        let mut huge = pvh_elf(0x100_0000);
        huge[NOTE_NAMESZ..NOTE_NAMESZ + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        reason(huge);

        // Loaded above the guest's 32 MiB.
        assert!(reason(pvh_elf(0x400_0000)).contains("does not fit"));

        let mem = create_memory(32).unwrap();
        assert!(matches!(
            load_kernel(&mem, &dir.path().join("missing")),
            Err(ConfigError::Kernel { .. })
        ));
    }
}
