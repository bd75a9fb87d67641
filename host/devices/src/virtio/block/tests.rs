//! virtio-blk against virtio-queue's mock driver: good requests and hostile ones.

use std::io::{Read, Seek, SeekFrom, Write};

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::test_utils::{memory, CountingIrq};
use crate::virtio::{VirtioDevice, VirtioInterrupt};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const HDR: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0x8000;

fn disk(read_only: bool) -> (tempfile::NamedTempFile, Block) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let mut content = vec![0u8; 8 * 512];
    for (i, b) in content.iter_mut().enumerate() {
        *b = (i / 512) as u8 + 1;
    }
    f.write_all(&content).unwrap();
    let block = Block::new(f.path(), read_only, "berth-test-disk").unwrap();
    (f, block)
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

fn header(mem: &GuestMemory, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
}

struct Outcome {
    used: Vec<(u32, u32)>,
    status: u8,
    needs_reset: bool,
    irqs: usize,
}

/// Runs the chains `descs` (flags and next as given) through a fresh activation of `block`.
fn run(block: &mut Block, mem: &GuestMemory, descs: &[RawDescriptor]) -> Outcome {
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let mock = MockSplitQueue::new(mem, 16);
    mock.add_desc_chains(descs, 0).unwrap();
    let queue: Queue = mock.create_queue().unwrap();
    let irq = CountingIrq::new();
    let interrupt = VirtioInterrupt::new(irq.clone());
    block
        .activate(mem.clone(), interrupt.clone(), vec![queue])
        .unwrap();
    block.queue_notify(0);
    block.queue_notify(7); // a queue that does not exist
    let n = mock.used().idx().load();
    let used = (0..n)
        .map(|i| {
            let e = mock.used().ring().ref_at(i as usize).unwrap().load();
            (e.id(), e.len())
        })
        .collect();
    let out = Outcome {
        used,
        status: mem.read_obj(GuestAddress(STATUS)).unwrap(),
        needs_reset: interrupt.needs_reset(),
        irqs: irq.count(),
    };
    block.reset();
    out
}

fn request(
    mem: &GuestMemory,
    kind: u32,
    sector: u64,
    data_len: u32,
    write: bool,
) -> Vec<RawDescriptor> {
    header(mem, kind, sector);
    vec![
        desc(HDR, 16, NEXT, 1),
        desc(DATA, data_len, NEXT | if write { WRITE } else { 0 }, 2),
        desc(STATUS, 1, WRITE, 0),
    ]
}

#[test]
fn reads_sectors() {
    let mem = memory();
    let (_f, mut block) = disk(true);
    assert_eq!(block.capacity(), 8);
    assert_ne!(block.features() & VIRTIO_BLK_F_RO, 0);
    let out = run(&mut block, &mem, &request(&mem, 0, 2, 1024, true));
    assert_eq!(out.status, 0);
    assert_eq!(out.used, vec![(0, 1025)]);
    assert_eq!(out.irqs, 1);
    let mut buf = [0u8; 1024];
    mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 3));
    assert!(buf[512..].iter().all(|&b| b == 4));
}

#[test]
fn writes_and_flushes_a_rw_disk() {
    let mem = memory();
    let (mut f, mut block) = disk(false);
    assert_eq!(block.features() & VIRTIO_BLK_F_RO, 0);
    mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    let out = run(&mut block, &mem, &request(&mem, 1, 7, 512, false));
    assert_eq!((out.status, out.used.clone()), (0, vec![(0, 1)]));
    let mut content = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut content).unwrap();
    assert!(content[7 * 512..].iter().all(|&b| b == 0xab));
    assert!(content[6 * 512..7 * 512].iter().all(|&b| b == 7));

    header(&mem, 4, 0);
    let flush = [desc(HDR, 16, NEXT, 1), desc(STATUS, 1, WRITE, 0)];
    assert_eq!(run(&mut block, &mem, &flush).status, 0);
}

#[test]
fn read_only_disk_refuses_writes() {
    let mem = memory();
    let (f, mut block) = disk(true);
    let out = run(&mut block, &mem, &request(&mem, 1, 0, 512, false));
    assert_eq!(out.status, 1);
    assert!(!out.needs_reset);
    let content = std::fs::read(f.path()).unwrap();
    assert!(content[..512].iter().all(|&b| b == 1));
}

#[test]
fn get_id_and_unknown_requests() {
    let mem = memory();
    let (_f, mut block) = disk(true);
    let out = run(&mut block, &mem, &request(&mem, 8, 0, 20, true));
    assert_eq!(out.status, 0);
    assert_eq!(out.used, vec![(0, 21)]);
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..15], b"berth-test-disk");
    let out = run(&mut block, &mem, &request(&mem, 0x1234, 0, 512, true));
    assert_eq!(out.status, 2);
}

#[test]
fn requests_outside_the_disk_fail() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    // Past the end.
    assert_eq!(
        run(&mut block, &mem, &request(&mem, 0, 7, 1024, true)).status,
        1
    );
    // Sector number that overflows when turned into bytes.
    assert_eq!(
        run(&mut block, &mem, &request(&mem, 0, u64::MAX / 2, 512, true)).status,
        1
    );
    // Not a whole number of sectors.
    assert_eq!(
        run(&mut block, &mem, &request(&mem, 0, 0, 100, true)).status,
        1
    );
    // Header too short.
    let short = [desc(HDR, 8, NEXT, 1), desc(STATUS, 1, WRITE, 0)];
    assert_eq!(run(&mut block, &mem, &short).status, 1);
}

#[test]
fn buffers_outside_guest_memory_fail_with_ioerr() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    header(&mem, 0, 0);
    let descs = [
        desc(HDR, 16, NEXT, 1),
        desc(0xffff_0000_0000, 512, NEXT | WRITE, 2),
        desc(STATUS, 1, WRITE, 0),
    ];
    let out = run(&mut block, &mem, &descs);
    assert_eq!(out.status, 1);
    assert_eq!(out.used, vec![(0, 1)]);
    // A buffer straddling the end of memory.
    let descs = [
        desc(HDR, 16, NEXT, 1),
        desc(0xff000, 0x2000, NEXT | WRITE, 2),
        desc(STATUS, 1, WRITE, 0),
    ];
    assert_eq!(run(&mut block, &mem, &descs).status, 1);
}

#[test]
fn oversized_lengths_fail_without_allocating() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    header(&mem, 0, 0);
    let descs = [
        desc(HDR, 16, NEXT, 1),
        desc(DATA, 0x8000_0000, NEXT | WRITE, 2),
        desc(STATUS, 1, WRITE, 0),
    ];
    let out = run(&mut block, &mem, &descs);
    assert_eq!((out.status, out.used), (1, vec![(0, 1)]));
    // A chain longer than 4 GiB is illegal: virtio-queue stops it, the device gives up on it.
    let descs = [
        desc(HDR, 16, NEXT, 1),
        desc(DATA, u32::MAX, NEXT | WRITE, 2),
        desc(STATUS, 1, WRITE, 0),
    ];
    let out = run(&mut block, &mem, &descs);
    assert!(out.needs_reset);
    assert_eq!(out.status, 0xff);
}

#[test]
fn looping_chain_terminates_and_asks_for_reset() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    header(&mem, 0, 0);
    let descs = [desc(HDR, 16, NEXT, 1), desc(DATA, 512, NEXT | WRITE, 0)];
    let out = run(&mut block, &mem, &descs);
    assert!(out.needs_reset);
    assert_eq!(out.used, vec![(0, 0)]);
    assert_eq!(out.status, 0xff, "nothing was written as a status");
}

#[test]
fn chain_without_status_byte_asks_for_reset() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    header(&mem, 0, 0);
    let descs = [desc(HDR, 16, 0, 0)];
    let out = run(&mut block, &mem, &descs);
    assert!(out.needs_reset);
    let descs = [desc(HDR, 16, NEXT, 1), desc(STATUS, 0, WRITE, 0)];
    assert!(run(&mut block, &mem, &descs).needs_reset);
}

#[test]
fn corrupt_available_index_does_not_hang() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(&request(&mem, 0, 0, 512, true), 0)
        .unwrap();
    mock.avail().idx().store(60000);
    let queue: Queue = mock.create_queue().unwrap();
    let interrupt = VirtioInterrupt::new(CountingIrq::new());
    block
        .activate(mem.clone(), interrupt.clone(), vec![queue])
        .unwrap();
    block.queue_notify(0);
    assert!(interrupt.needs_reset());
    assert_eq!(mock.used().idx().load(), 0);
}

#[test]
fn wrong_queue_count_is_refused() {
    let mem = memory();
    let (_f, mut block) = disk(false);
    let interrupt = VirtioInterrupt::new(CountingIrq::new());
    assert!(block.activate(mem, interrupt, vec![]).is_err());
    // Not activated: a notify does nothing.
    block.queue_notify(0);
}

#[test]
fn config_space_holds_capacity() {
    let (_f, block) = disk(false);
    let mut cap = [0u8; 8];
    block.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
    let mut past = [0xffu8; 4];
    block.read_config(6, &mut past);
    assert_eq!(past, [0, 0, 0, 0]);
    block.read_config(u64::MAX, &mut past);
}

#[test]
fn unaligned_and_missing_images_are_rejected() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&[0u8; 1000]).unwrap();
    let err = Block::new(f.path(), true, "x").unwrap_err();
    assert!(matches!(err, BlockError::UnalignedSize { size: 1000, .. }));
    assert!(err
        .to_string()
        .contains("not a whole number of 512-byte sectors"));
    let err = Block::new(std::path::Path::new("/nonexistent/disk.img"), true, "x").unwrap_err();
    assert!(matches!(err, BlockError::Open { .. }));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Block::new(dir.path(), true, "x"),
        Err(BlockError::NotAFile { .. }) | Err(BlockError::Open { .. })
    ));
}

/// Files of `sectors[k]` sectors each, filled with byte `k + 1`.
fn parts(sectors: &[usize]) -> Vec<tempfile::NamedTempFile> {
    sectors
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&vec![k as u8 + 1; n * 512]).unwrap();
            f
        })
        .collect()
}

#[test]
fn concatenated_files_read_as_one_disk_across_their_boundaries() {
    let mem = memory();
    // An empty file in the middle takes no room.
    let files = parts(&[1, 2, 0, 3]);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path().to_path_buf()).collect();
    let mut block = Block::concatenated(&paths, true, "berth-layers").unwrap();
    assert_eq!(block.capacity(), 6);
    // Sectors 0..6 are 1, 2, 2, 4, 4, 4: read all of them in one request.
    let out = run(&mut block, &mem, &request(&mem, 0, 0, 6 * 512, true));
    assert_eq!(out.status, 0);
    let mut buf = vec![0u8; 6 * 512];
    mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    let by_sector: Vec<u8> = buf.chunks(512).map(|c| c[0]).collect();
    assert_eq!(by_sector, vec![1, 2, 2, 4, 4, 4]);
    assert!(buf.chunks(512).all(|c| c.iter().all(|&b| b == c[0])));
    // A read that starts inside the second file and ends inside the fourth.
    let out = run(&mut block, &mem, &request(&mem, 0, 2, 2 * 512, true));
    assert_eq!(out.status, 0);
    mem.read_slice(&mut buf[..1024], GuestAddress(DATA))
        .unwrap();
    assert_eq!((buf[0], buf[512]), (2, 4));
    // Past the end, and writes, fail with IOERR.
    assert_eq!(
        run(&mut block, &mem, &request(&mem, 0, 5, 1024, true)).status,
        1
    );
    assert_eq!(
        run(&mut block, &mem, &request(&mem, 1, 0, 512, false)).status,
        1
    );
    assert!(std::fs::read(files[0].path())
        .unwrap()
        .iter()
        .all(|&b| b == 1));
}

#[test]
fn concatenated_disks_are_read_only_and_need_a_file() {
    let files = parts(&[1, 1]);
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path().to_path_buf()).collect();
    assert!(matches!(
        Block::concatenated(&paths, false, "x"),
        Err(BlockError::WritableConcatenation { .. })
    ));
    assert!(matches!(
        Block::concatenated(&[], true, "x"),
        Err(BlockError::NoImage)
    ));
    let odd = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(odd.path(), [0u8; 100]).unwrap();
    let with_odd = vec![paths[0].clone(), odd.path().to_path_buf()];
    let err = Block::concatenated(&with_odd, true, "x").unwrap_err();
    assert!(
        matches!(&err, BlockError::UnalignedSize { path, size: 100 } if path == odd.path()),
        "{err}"
    );
}
