//! virtio-net against virtio-queue's mock driver (one mock queue for rx, one for tx) and
//! backends that record or script frames.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Registry;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::worker::Worker;
use super::*;
use crate::virtio::test_utils::{memory, CountingIrq};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const QSIZE: u16 = 16;
const RX_RING: u64 = 0x0;
const TX_RING: u64 = 0x1000;
const BUF: u64 = 0x10000;

/// What the test backend saw, and what it has for the guest.
#[derive(Default)]
struct Script {
    sent: Vec<Vec<u8>>,
    to_guest: VecDeque<Vec<u8>>,
    /// Frames sent come straight back (for the threaded test).
    echo: bool,
}

#[derive(Clone, Default)]
struct TestBackend(Arc<Mutex<Script>>);

impl NetBackend for TestBackend {
    fn attach(&mut self, _registry: Registry) -> io::Result<()> {
        Ok(())
    }
    fn send(&mut self, frame: &[u8]) -> Result<(), NetBackendError> {
        let mut s = self.0.lock().unwrap();
        s.sent.push(frame.to_vec());
        if s.echo {
            s.to_guest.push_back(frame.to_vec());
        }
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetBackendError> {
        let mut s = self.0.lock().unwrap();
        let Some(f) = s.to_guest.pop_front() else {
            return Ok(None);
        };
        buf[..f.len()].copy_from_slice(&f);
        Ok(Some(f.len()))
    }
    fn ready(&mut self, _token: Token, _readiness: Readiness) {}
    fn poll(&mut self) -> Option<Duration> {
        None
    }
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

fn frame(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

struct Rig<'a> {
    mem: &'a GuestMemory,
    rx: MockSplitQueue<'a, GuestMemory>,
    tx: MockSplitQueue<'a, GuestMemory>,
    worker: Worker,
    interrupt: Arc<VirtioInterrupt>,
    irq: Arc<CountingIrq>,
    stats: Arc<NetStats>,
    script: TestBackend,
}

fn rig(mem: &GuestMemory) -> Rig<'_> {
    let rx = MockSplitQueue::create(mem, GuestAddress(RX_RING), QSIZE);
    let tx = MockSplitQueue::create(mem, GuestAddress(TX_RING), QSIZE);
    let rxq: Queue = rx.create_queue().unwrap();
    let txq: Queue = tx.create_queue().unwrap();
    let irq = CountingIrq::new();
    let interrupt = VirtioInterrupt::new(irq.clone());
    let stats = Arc::new(NetStats::default());
    let script = TestBackend::default();
    let worker = Worker::new(
        mem.clone(),
        interrupt.clone(),
        rxq,
        txq,
        Box::new(script.clone()),
        stats.clone(),
    );
    Rig {
        mem,
        rx,
        tx,
        worker,
        interrupt,
        irq,
        stats,
        script,
    }
}

fn used(q: &MockSplitQueue<'_, GuestMemory>) -> Vec<(u32, u32)> {
    let n = q.used().idx().load();
    (0..n)
        .map(|i| {
            let e = q.used().ring().ref_at(i as usize).unwrap().load();
            (e.id(), e.len())
        })
        .collect()
}

/// Writes a transmit header (flags, gso_type) and `payload` at `addr`; returns its length.
fn tx_packet(mem: &GuestMemory, addr: u64, flags: u8, gso: u8, payload: &[u8]) -> u32 {
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[0] = flags;
    hdr[1] = gso;
    mem.write_slice(&hdr, GuestAddress(addr)).unwrap();
    mem.write_slice(payload, GuestAddress(addr + NET_HDR_LEN as u64))
        .unwrap();
    (NET_HDR_LEN + payload.len()) as u32
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    NetStats::get(c)
}

#[test]
fn transmitted_frames_reach_the_backend_header_stripped() {
    let mem = memory();
    let mut r = rig(&mem);
    let f1 = frame(60, 1);
    let len = tx_packet(&mem, BUF, 0, 0, &f1);
    // The second frame is split over two descriptors: header alone, then the frame.
    let f2 = frame(1514, 7);
    tx_packet(&mem, BUF + 0x1000, 0, 0, &[]);
    mem.write_slice(&f2, GuestAddress(BUF + 0x2000)).unwrap();
    r.tx.add_desc_chains(
        &[
            desc(BUF, len, 0, 0),
            desc(BUF + 0x1000, NET_HDR_LEN as u32, NEXT, 2),
            desc(BUF + 0x2000, f2.len() as u32, 0, 0),
        ],
        0,
    )
    .unwrap();
    assert!(r.worker.process_tx());
    assert_eq!(r.script.0.lock().unwrap().sent, vec![f1, f2]);
    assert_eq!(used(&r.tx), vec![(0, 0), (1, 0)]);
    assert_eq!(get(&r.stats.tx_frames), 2);
    assert_eq!(get(&r.stats.tx_dropped), 0);
    assert!(r.irq.count() >= 1);
    assert!(!r.interrupt.needs_reset());
}

#[test]
fn bad_headers_short_and_oversized_frames_are_dropped_and_counted() {
    let mem = memory();
    let mut r = rig(&mem);
    let ok = frame(64, 3);
    let a = tx_packet(&mem, BUF, 1, 0, &ok); // NEEDS_CSUM without the feature
    let b = tx_packet(&mem, BUF + 0x1000, 0, 1, &ok); // GSO_TCPV4 without the feature
    let c = tx_packet(&mem, BUF + 0x2000, 0, 0, &ok[..10]); // shorter than Ethernet
    let big = (NET_HDR_LEN + MAX_FRAME_LEN + 1) as u32; // one byte past the cap
    let d = tx_packet(&mem, BUF + 0x3000, 0, 0, &ok);
    r.tx.add_desc_chains(
        &[
            desc(BUF, a, 0, 0),
            desc(BUF + 0x1000, b, 0, 0),
            desc(BUF + 0x2000, c, 0, 0),
            desc(0x20000, big, 0, 0),
            desc(BUF + 0x3000, d, 0, 0),
        ],
        0,
    )
    .unwrap();
    r.worker.process_tx();
    assert_eq!(
        r.script.0.lock().unwrap().sent,
        vec![ok],
        "only the good frame"
    );
    assert_eq!(used(&r.tx).len(), 5, "every chain is returned");
    assert_eq!(get(&r.stats.tx_dropped), 4);
    assert!(!r.interrupt.needs_reset());
}

#[test]
fn broken_transmit_chains_are_returned_without_harm() {
    let mem = memory();
    let mut r = rig(&mem);
    let good = tx_packet(&mem, BUF, 0, 0, &frame(64, 9));
    r.tx.add_desc_chains(
        &[
            // Outside guest memory.
            desc(0xffff_ffff_0000, 100, 0, 0),
            // A write-only buffer only: nothing to read.
            desc(BUF, good, WRITE, 0),
            // A length that overflows when added up.
            desc(BUF, u32::MAX, NEXT, 3),
            desc(BUF, u32::MAX, 0, 0),
            // A chain that loops back on itself.
            desc(BUF, good, NEXT, 5),
            desc(BUF, good, NEXT, 4),
        ],
        0,
    )
    .unwrap();
    r.worker.process_tx();
    // virtio-queue ends the looping chain after QSIZE descriptors: at most that one frame
    // (the same buffer read over and over, bounded) gets through.
    let sent = r.script.0.lock().unwrap().sent.clone();
    assert!(sent.len() <= 1);
    assert!(sent.iter().all(|f| f.len() <= MAX_FRAME_LEN));
    assert_eq!(used(&r.tx).len(), 4, "every chain is returned");
    assert_eq!(get(&r.stats.tx_dropped) + sent.len() as u64, 4);
}

#[test]
fn a_lying_available_index_breaks_the_device_without_hanging() {
    let mem = memory();
    let mut r = rig(&mem);
    let len = tx_packet(&mem, BUF, 0, 0, &frame(64, 0));
    r.tx.add_desc_chains(&[desc(BUF, len, 0, 0)], 0).unwrap();
    r.tx.avail().idx().store(60000);
    let started = Instant::now();
    r.worker.process_tx();
    assert!(r.interrupt.needs_reset());
    assert!(started.elapsed() < Duration::from_secs(2));
    // Broken stays broken (until reset), on either queue.
    r.rx.avail().idx().store(60000);
    assert!(!r.worker.process_tx());
    assert!(!r.worker.process_rx());
}

#[test]
fn received_frames_fill_guest_buffers_with_a_header() {
    let mem = memory();
    let mut r = rig(&mem);
    let f1 = frame(42, 5);
    let f2 = frame(1514, 6);
    r.script.0.lock().unwrap().to_guest = [f1.clone(), f2.clone()].into();
    r.rx.add_desc_chains(
        &[
            desc(BUF, 2048, WRITE, 0),
            // A chain of two buffers, as the driver may post.
            desc(BUF + 0x1000, 1000, WRITE | NEXT, 2),
            desc(BUF + 0x2000, 1000, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(r.worker.process_rx());
    let u = used(&r.rx);
    assert_eq!(
        u,
        vec![
            (0, (NET_HDR_LEN + 42) as u32),
            (1, (NET_HDR_LEN + 1514) as u32)
        ]
    );
    let mut got = vec![0u8; NET_HDR_LEN + 42];
    mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
    assert_eq!(&got[..10], &[0u8; 10], "no flags, GSO_NONE");
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(&got[NET_HDR_LEN..], &f1[..]);
    let mut a = vec![0u8; 1000];
    let mut b = vec![0u8; NET_HDR_LEN + 1514 - 1000];
    mem.read_slice(&mut a, GuestAddress(BUF + 0x1000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(BUF + 0x2000)).unwrap();
    a.extend_from_slice(&b);
    assert_eq!(&a[NET_HDR_LEN..], &f2[..]);
    assert_eq!(get(&r.stats.rx_frames), 2);
}

#[test]
fn frames_larger_than_the_guest_buffer_are_dropped_and_the_buffer_reused() {
    let mem = memory();
    let mut r = rig(&mem);
    let small = frame(100, 1);
    r.script.0.lock().unwrap().to_guest = [frame(1000, 2), small.clone()].into();
    r.rx.add_desc_chains(&[desc(BUF, 500, WRITE, 0)], 0)
        .unwrap();
    r.worker.process_rx();
    assert_eq!(get(&r.stats.rx_too_big), 1);
    assert_eq!(used(&r.rx), vec![(0, (NET_HDR_LEN + 100) as u32)]);
    let mut got = vec![0u8; 100];
    mem.read_slice(&mut got, GuestAddress(BUF + NET_HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, small);
}

#[test]
fn a_frame_waits_for_a_buffer_and_unwritable_buffers_are_returned_empty() {
    let mem = memory();
    let mut r = rig(&mem);
    let f = frame(80, 4);
    r.script.0.lock().unwrap().to_guest = [f.clone()].into();
    r.worker.process_rx();
    assert!(used(&r.rx).is_empty(), "no buffer yet");
    r.rx.add_desc_chains(
        &[
            desc(BUF, 500, 0, 0),                  // read-only: unusable for rx
            desc(0xffff_ffff_0000, 500, WRITE, 0), // outside memory
            desc(BUF + 0x1000, 500, WRITE, 0),     // good
        ],
        0,
    )
    .unwrap();
    r.worker.process_rx();
    let u = used(&r.rx);
    assert_eq!(u.len(), 3);
    assert_eq!(u[2], (2, (NET_HDR_LEN + 80) as u32));
    assert_eq!(get(&r.stats.rx_frames), 1);
    assert!(get(&r.stats.rx_bad_chains) >= 1);
}

#[test]
fn random_descriptors_do_not_panic_or_hang() {
    let mem = memory();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    for _ in 0..300 {
        let mut r = rig(&mem);
        let n = (next() % 8 + 1) as usize;
        let descs: Vec<RawDescriptor> = (0..n)
            .map(|_| {
                let addr = match next() % 4 {
                    0 => next(),
                    _ => BUF + next() % 0x8_0000,
                };
                let len = match next() % 4 {
                    0 => next() as u32,
                    _ => (next() % 0x2_0000) as u32,
                };
                desc(addr, len, (next() % 4) as u16, (next() % 20) as u16)
            })
            .collect();
        r.tx.add_desc_chains(&descs, 0).unwrap();
        r.rx.add_desc_chains(&descs, 0).unwrap();
        if next() % 8 == 0 {
            r.tx.avail().idx().store(next() as u16);
        }
        r.script.0.lock().unwrap().to_guest = (0..3)
            .map(|i| frame((next() % 3000) as usize + 14, i))
            .collect();
        r.worker.work();
        assert!(used(&r.tx).len() <= usize::from(QSIZE) * 2);
        let _ = r.worker.backend().poll();
        let _ = r.mem;
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn config_space_features_and_construction_checks() {
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let net = Net::new(mac, 1500, Box::new(TestBackend::default())).unwrap();
    assert_eq!(net.device_type(), 1);
    assert_eq!(net.queue_max_sizes().len(), 2);
    let f = net.features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_STATUS,
    ] {
        assert_ne!(f & bit, 0);
    }
    let mut c = [0xffu8; 16];
    net.read_config(0, &mut c);
    assert_eq!(&c[..6], &mac);
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([c[10], c[11]]), 1500);
    assert_eq!(&c[12..], &[0; 4], "past the end reads zero");
    let mut far = [0xffu8; 4];
    net.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0; 4]);
    assert!(matches!(
        Net::new([1, 2, 3, 4, 5, 6], 1500, Box::new(TestBackend::default())),
        Err(NetError::MulticastMac(_))
    ));
    assert!(matches!(
        Net::new(mac, 40, Box::new(TestBackend::default())),
        Err(NetError::Mtu { .. })
    ));
    assert!(matches!(
        Net::new(mac, u16::MAX, Box::new(TestBackend::default())),
        Err(NetError::Mtu { .. })
    ));
}

#[test]
fn the_device_thread_moves_frames_both_ways_and_survives_reset() {
    let mem = memory();
    let backend = TestBackend::default();
    backend.0.lock().unwrap().echo = true;
    let mut net = Net::new([0x52, 0, 0, 0, 0, 1], 1500, Box::new(backend.clone())).unwrap();
    for round in 0..2u8 {
        let rx = MockSplitQueue::create(&mem, GuestAddress(RX_RING), QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let f = frame(100, round);
        let len = tx_packet(&mem, BUF, 0, 0, &f);
        rx.add_desc_chains(&[desc(BUF + 0x1000, 2048, WRITE, 0)], 0)
            .unwrap();
        tx.add_desc_chains(&[desc(BUF, len, 0, 0)], 0).unwrap();
        let interrupt = VirtioInterrupt::new(CountingIrq::new());
        assert!(net
            .activate(mem.clone(), interrupt, vec![rx.create_queue().unwrap()])
            .is_err());
        let interrupt = VirtioInterrupt::new(CountingIrq::new());
        net.activate(
            mem.clone(),
            interrupt,
            vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()],
        )
        .unwrap();
        net.queue_notify(1);
        net.queue_notify(99);
        let deadline = Instant::now() + Duration::from_secs(5);
        while used(&rx).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            used(&rx),
            vec![(0, (NET_HDR_LEN + 100) as u32)],
            "round {round}"
        );
        let mut got = vec![0u8; 100];
        mem.read_slice(&mut got, GuestAddress(BUF + 0x1000 + NET_HDR_LEN as u64))
            .unwrap();
        assert_eq!(got, f);
        net.reset();
    }
    assert_eq!(NetStats::get(&net.stats().tx_frames), 2);
}
