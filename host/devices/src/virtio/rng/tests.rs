//! virtio-rng against virtio-queue's mock driver.

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::test_utils::{memory, CountingIrq};

const NEXT: u16 = 1;
const WRITE: u16 = 2;

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

fn run(descs: &[RawDescriptor]) -> (GuestMemory, Vec<u32>, bool) {
    let mem = memory();
    let mock = MockSplitQueue::new(&mem, 16);
    mock.add_desc_chains(descs, 0).unwrap();
    let queue: Queue = mock.create_queue().unwrap();
    let interrupt = VirtioInterrupt::new(CountingIrq::new());
    let mut rng = Rng::new();
    rng.activate(mem.clone(), interrupt.clone(), vec![queue])
        .unwrap();
    rng.queue_notify(0);
    rng.queue_notify(u32::MAX);
    let n = mock.used().idx().load();
    let lens = (0..n)
        .map(|i| mock.used().ring().ref_at(i as usize).unwrap().load().len())
        .collect();
    (mem.clone(), lens, interrupt.needs_reset())
}

#[test]
fn fills_writable_buffers() {
    let (mem, lens, reset) = run(&[desc(0x4000, 256, WRITE, 0), desc(0x5000, 16, WRITE, 0)]);
    assert_eq!(lens, vec![256, 16]);
    assert!(!reset);
    let mut buf = [0u8; 256];
    mem.read_slice(&mut buf, GuestAddress(0x4000)).unwrap();
    assert!(
        buf.iter().any(|&b| b != 0),
        "256 random bytes are not all zero"
    );
}

#[test]
fn caps_oversized_requests() {
    let (_, lens, _) = run(&[desc(0x10000, 0x80000, WRITE, 0)]);
    assert_eq!(lens, vec![MAX_BYTES_PER_REQUEST as u32]);
}

#[test]
fn hostile_chains_do_not_crash_or_hang() {
    // Outside guest memory, a looping chain, a read-only buffer, an absurd length.
    let (_, lens, _) = run(&[desc(0xffff_ffff_0000, 64, WRITE, 0)]);
    assert_eq!(lens, vec![0]);
    let (_, lens, _) = run(&[
        desc(0x4000, 64, WRITE | NEXT, 1),
        desc(0x5000, 64, WRITE | NEXT, 0),
    ]);
    assert_eq!(lens.len(), 1);
    assert!(lens[0] <= MAX_BYTES_PER_REQUEST as u32);
    let (_, lens, _) = run(&[desc(0x4000, 64, 0, 0)]);
    assert_eq!(lens, vec![0]);
    let (_, lens, _) = run(&[desc(0x4000, u32::MAX, WRITE, 0)]);
    assert_eq!(lens, vec![0]);
}
