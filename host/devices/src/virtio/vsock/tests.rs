//! Tests of the vsock device through virtio-queue mock queues (playing the guest driver)
//! and real Unix sockets in a temporary directory (playing the host).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::{Descriptor as SplitDescriptor, VirtqUsedElem};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::packet::*;
use super::*;
use crate::virtio::{VirtioDevice, VirtioInterrupt};
use crate::IrqTrigger;

const GUEST_CID: u64 = 3;
const QSIZE: u16 = 64;
const SLOT: u64 = 0x11000;
const RX_BASE: u64 = 0x10_0000;
const TX_BASE: u64 = 0x60_0000;
const EV_BASE: u64 = 0xb0_0000;
const MEM_SIZE: usize = 0x100_0000;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

#[derive(Default)]
struct CountingIrq(AtomicUsize);

impl IrqTrigger for CountingIrq {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The driver side of one split queue, on the rings a `MockSplitQueue` laid out.
/// Descriptor `i` owns the buffer slot `slots + i * SLOT`.
struct DriverQueue {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    slots: u64,
    avail_idx: u16,
    used_seen: u16,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
}

impl DriverQueue {
    /// A queue whose rings start at `start` (within a 4 KiB page), with buffer slots from
    /// `slots`; returns the device's `Queue` and the driver's view.
    ///
    /// The descriptor table and avail ring come from `MockSplitQueue`; the used ring is
    /// placed at `start + 0x800` because the mock (0.18) lays its used ring out over the
    /// end of the avail ring for queues longer than 32 entries.
    fn create(mem: &GuestMemoryMmap, start: u64, slots: u64) -> (Queue, Self) {
        let mock = MockSplitQueue::create(mem, GuestAddress(start), QSIZE);
        let mut queue: Queue = mock.create_queue().unwrap();
        let used = GuestAddress(start + 0x800);
        queue.set_used_ring_address(Some(used.0 as u32), Some((used.0 >> 32) as u32));
        let driver = DriverQueue {
            desc: mock.desc_table_addr(),
            avail: mock.avail_addr(),
            used,
            slots,
            avail_idx: 0,
            used_seen: 0,
            // 48..64 are left to tests that write raw descriptors.
            free: (0..48).rev().collect(),
            chains: HashMap::new(),
        };
        (queue, driver)
    }

    fn slot(&self, index: u16) -> u64 {
        self.slots + u64::from(index) * SLOT
    }

    fn write_desc(&self, mem: &GuestMemoryMmap, index: u16, d: SplitDescriptor) {
        mem.write_obj(
            RawDescriptor::from(d),
            self.desc.unchecked_add(u64::from(index) * 16),
        )
        .unwrap();
    }

    /// Builds a chain of descriptors of the given lengths, each in its own slot; returns
    /// the head and the slot address of each descriptor.
    fn build(&mut self, mem: &GuestMemoryMmap, parts: &[(u32, bool)]) -> (u16, Vec<u64>) {
        let indices: Vec<u16> = (0..parts.len())
            .map(|_| self.free.pop().expect("driver queue out of descriptors"))
            .collect();
        let mut addrs = Vec::new();
        for (i, &(len, write)) in parts.iter().enumerate() {
            let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
            let next = if i + 1 < parts.len() {
                flags |= VRING_DESC_F_NEXT;
                indices[i + 1]
            } else {
                0
            };
            let addr = self.slot(indices[i]);
            addrs.push(addr);
            self.write_desc(
                mem,
                indices[i],
                SplitDescriptor::new(addr, len, flags, next),
            );
        }
        self.chains.insert(indices[0], indices.clone());
        (indices[0], addrs)
    }

    /// Offers a chain head to the device.
    fn post(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, self.avail.unchecked_add(4 + slot * 2))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        mem.store(
            self.avail_idx,
            self.avail.unchecked_add(2),
            Ordering::Release,
        )
        .unwrap();
    }

    /// The next used element, its descriptors returned to the free list.
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Option<VirtqUsedElem> {
        let idx: u16 = mem
            .load(self.used.unchecked_add(2), Ordering::Acquire)
            .unwrap();
        if idx == self.used_seen {
            return None;
        }
        let slot = u64::from(self.used_seen % QSIZE);
        let elem: VirtqUsedElem = mem.read_obj(self.used.unchecked_add(4 + slot * 8)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        let head = elem.id() as u16;
        if let Some(indices) = self.chains.remove(&head) {
            self.free.extend(indices);
        }
        Some(elem)
    }
}

struct Guest {
    mem: GuestMemoryMmap,
    rx: DriverQueue,
    tx: DriverQueue,
    dev: Vsock,
    irq: Arc<CountingIrq>,
    interrupt: Arc<VirtioInterrupt>,
    sock: PathBuf,
    dir: tempfile::TempDir,
    /// Payload bytes each rx buffer offers.
    rx_buf_len: u32,
    /// Re-post an rx buffer each time one is used.
    auto_repost: bool,
}

fn hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 256 * 1024,
        ..Header::default()
    }
}

impl Guest {
    fn new() -> Self {
        Self::with_rx(4096, 16)
    }

    fn with_rx(rx_buf_len: u32, rx_count: usize) -> Self {
        Self::build(rx_buf_len, rx_count, |_| {})
    }

    /// A guest whose device runs `before_activate` with its socket path between creation
    /// and activation (the VMM creates the device long before the driver starts it).
    fn build(rx_buf_len: u32, rx_count: usize, before_activate: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("v.sock");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (rxq, rx) = DriverQueue::create(&mem, 0, RX_BASE);
        let (txq, tx) = DriverQueue::create(&mem, 0x1000, TX_BASE);
        let (evq, _) = DriverQueue::create(&mem, 0x2000, EV_BASE);
        let queues = vec![rxq, txq, evq];
        let mut dev = Vsock::new(GUEST_CID, sock.clone()).unwrap();
        before_activate(&sock);
        let irq = Arc::new(CountingIrq::default());
        let interrupt = VirtioInterrupt::new(irq.clone());
        dev.ack_features(VIRTIO_F_VERSION_1);
        dev.activate(mem.clone(), interrupt.clone(), queues)
            .unwrap();
        let mut g = Guest {
            mem,
            rx,
            tx,
            dev,
            irq,
            interrupt,
            sock,
            dir,
            rx_buf_len,
            auto_repost: true,
        };
        g.post_rx(rx_count);
        g
    }

    fn post_rx(&mut self, n: usize) {
        for i in 0..n {
            // Alternate the two layouts Linux drivers use: header and payload in one
            // buffer, or in two.
            let parts: Vec<(u32, bool)> = if i % 2 == 0 {
                vec![(HDR_SIZE as u32 + self.rx_buf_len, true)]
            } else {
                vec![(HDR_SIZE as u32, true), (self.rx_buf_len, true)]
            };
            let (head, _) = self.rx.build(&self.mem, &parts);
            self.rx.post(&self.mem, head);
        }
        self.dev.queue_notify(0);
    }

    /// Sends a packet: header and payload in separate descriptors.
    fn send(&mut self, h: Header, payload: &[u8]) {
        let mut h = h;
        h.len = payload.len() as u32;
        self.send_raw_hdr(h, payload);
    }

    /// Sends a header exactly as given (its `len` is not fixed up).
    fn send_raw_hdr(&mut self, h: Header, payload: &[u8]) {
        let mut parts = vec![(HDR_SIZE as u32, false)];
        if !payload.is_empty() {
            parts.push((payload.len() as u32, false));
        }
        let (head, addrs) = self.tx.build(&self.mem, &parts);
        self.mem
            .write_slice(&h.encode(), GuestAddress(addrs[0]))
            .unwrap();
        if !payload.is_empty() {
            self.mem
                .write_slice(payload, GuestAddress(addrs[1]))
                .unwrap();
        }
        self.tx.post(&self.mem, head);
        self.dev.queue_notify(1);
        self.reclaim_tx();
    }

    /// Offers raw descriptors on the tx queue (for malformed chains).
    fn send_descs(&mut self, descs: &[SplitDescriptor], head: u16) {
        for (i, d) in descs.iter().enumerate() {
            self.tx.write_desc(&self.mem, i as u16 + 48, *d);
        }
        self.tx.post(&self.mem, head);
        self.dev.queue_notify(1);
    }

    fn reclaim_tx(&mut self) {
        while self.tx.take_used(&self.mem).is_some() {}
    }

    /// Waits until the device has used every tx chain offered so far.
    fn wait_tx_done(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let idx: u16 = self
                .mem
                .load(self.tx.used.unchecked_add(2), Ordering::Acquire)
                .unwrap();
            if idx == self.tx.avail_idx {
                self.reclaim_tx();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the device did not consume tx chains"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The next packet the device put in the rx queue, if one comes within `timeout`.
    fn recv_within(&mut self, timeout: Duration) -> Option<(Header, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reclaim_tx();
            if let Some(elem) = self.rx.take_used(&self.mem) {
                let head = elem.id() as u16;
                let addr = self.rx.slot(head);
                let len = elem.len() as usize;
                assert!(len >= HDR_SIZE, "rx packet of {len} bytes");
                // Reassemble from the one or two descriptors of the chain.
                let mut bytes = vec![0u8; len];
                let first: SplitDescriptor = self
                    .mem
                    .read_obj::<RawDescriptor>(self.rx.desc.unchecked_add(u64::from(head) * 16))
                    .unwrap()
                    .into();
                let in_first = (first.len() as usize).min(len);
                self.mem
                    .read_slice(&mut bytes[..in_first], GuestAddress(addr))
                    .unwrap();
                if in_first < len {
                    self.mem
                        .read_slice(
                            &mut bytes[in_first..],
                            GuestAddress(self.rx.slot(first.next())),
                        )
                        .unwrap();
                }
                let mut raw = [0u8; HDR_SIZE];
                raw.copy_from_slice(&bytes[..HDR_SIZE]);
                let h = Header::decode(&raw);
                assert_eq!(h.len as usize, len - HDR_SIZE, "header len vs used len");
                assert_eq!(h.src_cid, HOST_CID);
                assert_eq!(h.dst_cid, GUEST_CID);
                assert_eq!(h.type_, TYPE_STREAM);
                if self.auto_repost {
                    self.post_rx(1);
                }
                return Some((h, bytes[HDR_SIZE..].to_vec()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn recv(&mut self) -> (Header, Vec<u8>) {
        self.recv_within(WAIT)
            .expect("no packet from the device in time")
    }

    /// Receives packets until one with `op` comes; the skipped ones must be credit
    /// updates.
    fn recv_op(&mut self, op: u16) -> (Header, Vec<u8>) {
        loop {
            let (h, data) = self.recv();
            if h.op == op {
                return (h, data);
            }
            assert_eq!(
                h.op, OP_CREDIT_UPDATE,
                "expected op {op}, got {h:?} while waiting"
            );
        }
    }

    fn assert_quiet(&mut self) {
        if let Some((h, _)) = self.recv_within(QUIET) {
            panic!("unexpected packet from the device: {h:?}");
        }
    }

    fn port_path(&self, port: u32) -> PathBuf {
        PathBuf::from(format!("{}_{port}", self.sock.display()))
    }

    /// Host connects to the device and asks for guest port `port`; the guest accepts.
    /// Returns the host stream and the device's local port.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let (req, _) = self.recv();
        assert_eq!(req.op, OP_REQUEST);
        assert_eq!(req.dst_port, port);
        assert!(req.src_port >= 1 << 30, "local port {}", req.src_port);
        assert_eq!(req.buf_alloc, TX_BUF_SIZE);
        self.send(hdr(OP_RESPONSE, port, req.src_port), &[]);
        let line = read_line(&mut s);
        assert_eq!(line, format!("OK {}\n", req.src_port));
        (s, req.src_port)
    }

    /// Guest connects from `guest_port` to host port `port`, which listens; returns the
    /// accepted host stream.
    fn guest_connect(&mut self, listener: &UnixListener, guest_port: u32, port: u32) -> UnixStream {
        self.send(hdr(OP_REQUEST, guest_port, port), &[]);
        let (resp, _) = self.recv();
        assert_eq!(resp.op, OP_RESPONSE, "{resp:?}");
        assert_eq!((resp.src_port, resp.dst_port), (port, guest_port));
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Receives RW packets on one stream until `n` bytes came.
    fn recv_data(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let (h, data) = self.recv_op(OP_RW);
            out.extend(data);
            let _ = h;
        }
        assert_eq!(out.len(), n);
        out
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF before the end of the line");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn assert_eof(s: &mut UnixStream) {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, read {n} bytes"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

#[test]
fn config_space_is_the_guest_cid() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Vsock::new(0x1234_5678, dir.path().join("s")).unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    assert_ne!(dev.features() & VIRTIO_F_VERSION_1, 0);
    let mut b = [0xffu8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x1234_5678);
    let mut b = [0xffu8; 4];
    dev.read_config(2, &mut b);
    assert_eq!(b, [0x34, 0x12, 0, 0]);
    dev.read_config(6, &mut b);
    assert_eq!(b, [0, 0, 0, 0]);
    dev.read_config(u64::MAX, &mut b);
    assert_eq!(b, [0, 0, 0, 0]);
}

#[test]
fn constructor_rejects_taken_paths_missing_directories_and_bad_cids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let dev = Vsock::new(3, path.clone()).unwrap();
    let err = Vsock::new(4, path.clone()).unwrap_err();
    assert!(matches!(err, VsockError::PathTaken(_)), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    drop(dev);
    assert!(!path.exists(), "drop must remove the socket file");
    // A stale file is "taken" too.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        Vsock::new(3, path.clone()),
        Err(VsockError::PathTaken(_))
    ));
    let missing = dir.path().join("no/such/dir/v.sock");
    let err = Vsock::new(3, missing.clone()).unwrap_err();
    assert!(matches!(err, VsockError::DirectoryMissing(_)), "{err}");
    assert!(err.to_string().contains("no/such/dir"));
    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(
            Vsock::new(cid, dir.path().join("c")),
            Err(VsockError::InvalidCid(_))
        ));
    }
}

#[test]
fn activate_wants_three_queues() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Vsock::new(3, dir.path().join("s")).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let interrupt = VirtioInterrupt::new(Arc::new(CountingIrq::default()));
    let err = dev
        .activate(mem, interrupt, vec![Queue::new(16).unwrap()])
        .unwrap_err();
    assert!(matches!(
        err,
        crate::virtio::ActivateError::QueueCount { want: 3, got: 1 }
    ));
}

#[test]
fn host_initiated_stream_carries_data_both_ways() {
    let mut g = Guest::new();
    let (mut s, local) = g.host_connect(1234);

    s.write_all(b"hello guest").unwrap();
    let (h, data) = g.recv_op(OP_RW);
    assert_eq!((h.src_port, h.dst_port), (local, 1234));
    assert_eq!(data, b"hello guest");

    g.send(hdr(OP_RW, 1234, local), b"hello host");
    assert_eq!(read_exactly(&mut s, 10), b"hello host");
    assert!(
        g.irq.0.load(Ordering::SeqCst) > 0,
        "the guest was never interrupted"
    );
}

#[test]
fn host_data_sent_right_after_the_connect_line_is_not_lost() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"CONNECT 80\nGET / HTTP/1.0\r\n\r\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!(req.op, OP_REQUEST);
    g.send(hdr(OP_RESPONSE, 80, req.src_port), &[]);
    assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
    assert_eq!(g.recv_data(18), b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn guest_initiated_stream_carries_data_both_ways() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5000)).unwrap();
    let mut s = g.guest_connect(&listener, 40000, 5000);

    g.send(hdr(OP_RW, 40000, 5000), b"ping");
    assert_eq!(read_exactly(&mut s, 4), b"ping");
    s.write_all(b"pong!").unwrap();
    let (h, data) = g.recv_op(OP_RW);
    assert_eq!((h.src_port, h.dst_port), (5000, 40000));
    assert_eq!(data, b"pong!");
}

#[test]
fn guest_connection_to_a_port_nobody_listens_on_is_reset() {
    let mut g = Guest::new();
    g.send(hdr(OP_REQUEST, 41000, 6000), &[]);
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_RST);
    assert_eq!((h.src_port, h.dst_port), (6000, 41000));
    g.assert_quiet();
}

#[test]
fn guest_refusing_a_host_connection_closes_the_host_socket() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"CONNECT 7000\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!(req.op, OP_REQUEST);
    g.send(hdr(OP_RST, 7000, req.src_port), &[]);
    assert_eof(&mut s);
    g.assert_quiet();
}

#[test]
fn a_bad_connect_line_closes_the_host_socket() {
    let g = Guest::new();
    for line in [&b"HELLO 5\n"[..], b"CONNECT x\n", &[b'A'; 100][..]] {
        let mut s = UnixStream::connect(&g.sock).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(line).unwrap();
        assert_eof(&mut s);
    }
}

#[test]
fn several_streams_at_once_keep_their_data_apart() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5001)).unwrap();
    let mut host_side = Vec::new();
    for i in 0..4u32 {
        let (s, local) = g.host_connect(100 + i);
        host_side.push((s, local, 100 + i));
    }
    let mut guest_side = Vec::new();
    for i in 0..4u32 {
        let s = g.guest_connect(&listener, 50000 + i, 5001);
        guest_side.push((s, 5001, 50000 + i));
    }
    // Every host socket writes its own message; each must arrive on its own ports.
    let mut expect: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    for (s, local, peer) in host_side.iter_mut().chain(guest_side.iter_mut()) {
        let msg = format!("from host to {local}/{peer}").into_bytes();
        s.write_all(&msg).unwrap();
        expect.insert((*local, *peer), msg);
    }
    let mut got: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    while got.values().map(Vec::len).sum::<usize>() < expect.values().map(Vec::len).sum() {
        let (h, data) = g.recv_op(OP_RW);
        got.entry((h.src_port, h.dst_port))
            .or_default()
            .extend(data);
    }
    assert_eq!(got, expect);
    // And the guest answers each stream; every host socket gets only its own reply.
    for (_, local, peer) in host_side.iter().chain(guest_side.iter()) {
        g.send(
            hdr(OP_RW, *peer, *local),
            format!("reply {peer}").as_bytes(),
        );
    }
    for (s, _, peer) in host_side.iter_mut().chain(guest_side.iter_mut()) {
        let want = format!("reply {peer}");
        assert_eq!(read_exactly(s, want.len()), want.as_bytes());
    }
}

#[test]
fn host_reads_stop_without_guest_credit_and_resume_after_a_credit_update() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5002)).unwrap();
    // The guest offers only 4 KiB of receive buffer.
    let mut req = hdr(OP_REQUEST, 42000, 5002);
    req.buf_alloc = 4096;
    g.send(req, &[]);
    assert_eq!(g.recv().0.op, OP_RESPONSE);
    let (mut s, _) = listener.accept().unwrap();

    // The host writes until its socket is full: with no guest credit left the device
    // must stop reading, so the writer blocks long before 4 MiB.
    s.set_nonblocking(true).unwrap();
    let chunk = vec![0xabu8; 64 * 1024];
    let mut written = 0usize;
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && written < 4 << 20 {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(written < 4 << 20, "the device kept reading without credit");

    let mut got = 0usize;
    loop {
        let (h, data) = g.recv();
        match h.op {
            OP_RW => got += data.len(),
            OP_CREDIT_REQUEST => break,
            op => panic!("unexpected op {op}"),
        }
    }
    assert_eq!(got, 4096, "the device sent beyond the guest's credit");
    g.assert_quiet();

    // The guest consumed everything and says so: 4 KiB more flows, then it stops again.
    let mut upd = hdr(OP_CREDIT_UPDATE, 42000, 5002);
    upd.buf_alloc = 4096;
    upd.fwd_cnt = 4096;
    g.send(upd, &[]);
    let mut more = 0usize;
    while more < 4096 {
        let (h, data) = g.recv();
        assert_eq!(h.op, OP_RW, "{h:?}");
        more += data.len();
    }
    assert_eq!(more, 4096);
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_CREDIT_REQUEST);

    // A large buffer lets the rest through: exactly what the host wrote arrives.
    let mut upd = hdr(OP_CREDIT_UPDATE, 42000, 5002);
    upd.buf_alloc = u32::MAX;
    upd.fwd_cnt = 8192;
    g.send(upd, &[]);
    let mut total = 8192usize;
    while total < written {
        let (h, data) = g.recv();
        assert_eq!(h.op, OP_RW, "{h:?}");
        assert!(data.iter().all(|&b| b == 0xab));
        total += data.len();
    }
    assert_eq!(total, written);
}

#[test]
fn guest_sending_by_its_credit_gets_everything_through_a_slow_host() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5003)).unwrap();
    g.send(hdr(OP_REQUEST, 43000, 5003), &[]);
    let (resp, _) = g.recv();
    assert_eq!(resp.op, OP_RESPONSE);
    assert_eq!(resp.buf_alloc, TX_BUF_SIZE);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();

    // 4 MiB through a 256 KiB device buffer: the guest must wait for credit updates
    // while the host starts late and reads slowly.
    const TOTAL: usize = 4 << 20;
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut got = 0usize;
        let mut buf = vec![0u8; 8192];
        while got < TOTAL {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "EOF after {got} bytes");
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + i) % 251) as u8, "byte {}", got + i);
            }
            got += n;
        }
        // Keep the socket open: a close now would race with the guest's last checks.
        (got, s)
    });
    let mut sent = 0usize;
    let mut fwd = resp.fwd_cnt;
    let mut waits = 0;
    while sent < TOTAL {
        let in_flight = (sent as u32).wrapping_sub(fwd);
        let credit = TX_BUF_SIZE.saturating_sub(in_flight) as usize;
        if credit == 0 {
            let (h, _) = g.recv();
            assert_eq!(h.op, OP_CREDIT_UPDATE, "{h:?}");
            fwd = h.fwd_cnt;
            waits += 1;
            continue;
        }
        let n = credit.min(MAX_PKT_PAYLOAD).min(TOTAL - sent);
        let chunk: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
        g.send(hdr(OP_RW, 43000, 5003), &chunk);
        sent += n;
        while let Some((h, _)) = g.recv_within(Duration::ZERO) {
            assert_eq!(h.op, OP_CREDIT_UPDATE, "{h:?}");
            fwd = h.fwd_cnt;
        }
    }
    assert_eq!(reader.join().unwrap().0, TOTAL);
    assert!(
        waits > 0,
        "the guest never ran out of credit: the test proves nothing"
    );
}

#[test]
fn a_guest_sending_beyond_its_credit_is_reset() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5007)).unwrap();
    let _s = g.guest_connect(&listener, 47000, 5007);
    // The host reads nothing; the guest ignores credit. The device buffers at most its
    // buf_alloc and then resets the stream instead of buffering more.
    let chunk = vec![1u8; MAX_PKT_PAYLOAD];
    for _ in 0..16 {
        g.send(hdr(OP_RW, 47000, 5007), &chunk);
    }
    g.wait_tx_done();
    let (h, _) = g.recv_op(OP_RST);
    assert_eq!((h.src_port, h.dst_port), (5007, 47000));
}

#[test]
fn host_eof_reaches_the_guest_and_guest_half_close_reaches_the_host() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5004)).unwrap();
    let mut s = g.guest_connect(&listener, 44000, 5004);

    // Guest half-closes: the host reads EOF but can still answer.
    g.send(hdr(OP_RW, 44000, 5004), b"request");
    let mut sh = hdr(OP_SHUTDOWN, 44000, 5004);
    sh.flags = SHUTDOWN_SEND;
    g.send(sh, &[]);
    assert_eq!(read_exactly(&mut s, 7), b"request");
    assert_eof(&mut s);
    s.write_all(b"response").unwrap();
    assert_eq!(g.recv_data(8), b"response");

    // Host closes: the guest sees SHUTDOWN(SEND) after the data, then the stream is done
    // in both directions and the device says so.
    drop(s);
    let (h, _) = g.recv_op(OP_SHUTDOWN);
    assert_ne!(h.flags & SHUTDOWN_SEND, 0);
    let (h, _) = g.recv_within(WAIT).expect("final shutdown");
    assert_eq!(h.op, OP_SHUTDOWN);
    assert_eq!(h.flags, SHUTDOWN_BOTH);
    // The guest's close then gets an RST back.
    let mut sh = hdr(OP_SHUTDOWN, 44000, 5004);
    sh.flags = SHUTDOWN_BOTH;
    g.send(sh, &[]);
    assert_eq!(g.recv().0.op, OP_RST);
}

#[test]
fn guest_close_and_guest_reset_close_the_host_socket() {
    let mut g = Guest::new();
    // Close: SHUTDOWN(RCV|SEND) flushes pending data to the host, closes, answers RST.
    let (mut s, local) = g.host_connect(2000);
    g.send(hdr(OP_RW, 2000, local), b"last words");
    let mut sh = hdr(OP_SHUTDOWN, 2000, local);
    sh.flags = SHUTDOWN_BOTH;
    g.send(sh, &[]);
    assert_eq!(read_exactly(&mut s, 10), b"last words");
    assert_eof(&mut s);
    let (h, _) = g.recv_op(OP_RST);
    assert_eq!((h.src_port, h.dst_port), (local, 2000));

    // Reset: the host socket is closed at once.
    let (mut s, local) = g.host_connect(2001);
    g.send(hdr(OP_RST, 2001, local), &[]);
    assert_eof(&mut s);
    g.assert_quiet();
}

#[test]
fn guest_writing_to_a_closed_host_stream_is_reset() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5005)).unwrap();
    let s = g.guest_connect(&listener, 45000, 5005);
    drop(s);
    let (h, _) = g.recv_op(OP_SHUTDOWN);
    assert_eq!(h.flags, SHUTDOWN_SEND);
    // Host is gone entirely: a write fails and the guest gets RST.
    g.send(hdr(OP_RW, 45000, 5005), b"anyone?");
    assert_eq!(g.recv_op(OP_RST).0.dst_port, 45000);
}

#[test]
fn malformed_packets_are_dropped_or_reset_and_the_device_keeps_working() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5006)).unwrap();

    // Header descriptor shorter than a header: dropped silently.
    let (head, addrs) = g.tx.build(&g.mem, &[(20, false)]);
    g.mem
        .write_slice(
            &hdr(OP_REQUEST, 1, 5006).encode()[..20],
            GuestAddress(addrs[0]),
        )
        .unwrap();
    g.tx.post(&g.mem, head);
    g.dev.queue_notify(1);
    g.wait_tx_done();
    g.assert_quiet();

    // Wrong source CID: dropped silently.
    let mut h = hdr(OP_REQUEST, 1, 5006);
    h.src_cid = 99;
    g.send(h, &[]);
    g.wait_tx_done();
    // len larger than the buffer: RST.
    let mut h = hdr(OP_RW, 2, 5006);
    h.len = 1000;
    g.send_raw_hdr(h, b"short");
    // len beyond the largest packet: RST.
    let mut h = hdr(OP_RW, 3, 5006);
    h.len = u32::MAX;
    g.send_raw_hdr(h, &[]);
    // Unknown op, invalid op, wrong socket type, another destination CID: RST.
    g.send(hdr(99, 4, 5006), &[]);
    g.send(hdr(OP_INVALID, 5, 5006), &[]);
    let mut h = hdr(OP_REQUEST, 6, 5006);
    h.type_ = 2;
    g.send(h, &[]);
    let mut h = hdr(OP_REQUEST, 7, 5006);
    h.dst_cid = 77;
    g.send(h, &[]);
    // A packet for a stream that does not exist: RST; an RST for one: nothing.
    g.send(hdr(OP_RW, 8, 5006), b"x");
    g.send(hdr(OP_RST, 9, 5006), &[]);
    g.wait_tx_done();
    let mut resets = Vec::new();
    for _ in 0..7 {
        let (h, _) = g.recv();
        assert_eq!(h.op, OP_RST, "{h:?}");
        resets.push(h.dst_port);
    }
    resets.sort();
    assert_eq!(resets, vec![2, 3, 4, 5, 6, 7, 8]);
    g.assert_quiet();
    assert!(listener.set_nonblocking(true).is_ok());
    assert!(
        listener.accept().is_err(),
        "a malformed packet reached the host"
    );

    // Descriptor chain pointing outside guest memory; a chain that loops on itself; a
    // payload descriptor the device would have to write: all dropped.
    let beyond = SplitDescriptor::new(MEM_SIZE as u64 + 0x1000, HDR_SIZE as u32, 0, 0);
    g.send_descs(&[beyond], 48);
    let looping = SplitDescriptor::new(EV_BASE, 16, VRING_DESC_F_NEXT, 49);
    g.send_descs(&[SplitDescriptor::new(0, 0, 0, 0), looping], 49);
    let wrapping = SplitDescriptor::new(u64::MAX - 8, 64, 0, 0);
    g.send_descs(&[wrapping], 48);
    g.wait_tx_done();
    g.assert_quiet();

    // An rx chain outside guest memory is returned unused, then real buffers work.
    g.rx.write_desc(
        &g.mem,
        63,
        SplitDescriptor::new(MEM_SIZE as u64, 4096, VRING_DESC_F_WRITE, 0),
    );
    g.rx.free.retain(|&i| i != 63);
    g.rx.post(&g.mem, 63);
    g.dev.queue_notify(0);

    // The device still serves a well-formed stream.
    let mut s = g.guest_connect(&listener_blocking(&listener), 46000, 5006);
    g.send(hdr(OP_RW, 46000, 5006), b"still alive");
    assert_eq!(read_exactly(&mut s, 11), b"still alive");
}

fn listener_blocking(l: &UnixListener) -> UnixListener {
    let l = l.try_clone().unwrap();
    l.set_nonblocking(false).unwrap();
    l
}

#[test]
fn a_guest_that_lies_about_the_avail_index_does_not_hang_the_device() {
    let mut g = Guest::new();
    // Claim far more available entries than the queue holds.
    g.mem
        .store(
            g.tx.avail_idx.wrapping_add(1000),
            g.tx.avail.unchecked_add(2),
            Ordering::Release,
        )
        .unwrap();
    g.dev.queue_notify(1);
    let deadline = Instant::now() + WAIT;
    while !g.interrupt.needs_reset() {
        assert!(
            Instant::now() < deadline,
            "the device did not ask for a reset"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_ne!(
        g.interrupt.status() & crate::virtio::INTERRUPT_CONFIG_CHANGE,
        0
    );
    // The device thread is alive: dropping it joins the thread and removes the socket.
    let sock = g.sock.clone();
    drop(g);
    assert!(!sock.exists());
}

#[test]
fn reset_closes_streams_and_the_device_can_be_activated_again() {
    let mut g = Guest::new();
    let (mut s, _) = g.host_connect(3000);
    g.dev.reset();
    assert_eof(&mut s);
    assert!(
        g.sock.exists(),
        "reset keeps the listener for the next activation"
    );

    // Fresh queues on fresh memory: the device works again.
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let (rxq, rx) = DriverQueue::create(&mem, 0, RX_BASE);
    let (txq, tx) = DriverQueue::create(&mem, 0x1000, TX_BASE);
    let (evq, _) = DriverQueue::create(&mem, 0x2000, EV_BASE);
    let queues = vec![rxq, txq, evq];
    g.rx = rx;
    g.tx = tx;
    g.mem = mem.clone();
    g.dev
        .activate(mem, VirtioInterrupt::new(g.irq.clone()), queues)
        .unwrap();
    g.post_rx(8);
    let (mut s, local) = g.host_connect(3001);
    g.send(hdr(OP_RW, 3001, local), b"again");
    assert_eq!(read_exactly(&mut s, 5), b"again");

    let sock = g.sock.clone();
    // Keep the directory alive past the device.
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    drop(g);
    assert!(dir.path().exists());
    assert!(!sock.exists(), "drop removes the listener socket");
    assert_eof(&mut s);
}

#[test]
fn rx_buffers_arriving_late_are_filled_in_order() {
    // No rx buffers at first: the request waits, then goes out when buffers come.
    let mut g = Guest::with_rx(4096, 0);
    let mut s = UnixStream::connect(&g.sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"CONNECT 9\n").unwrap();
    assert!(g.recv_within(QUIET).is_none());
    g.post_rx(4);
    let (req, _) = g.recv();
    assert_eq!(req.op, OP_REQUEST);
    g.send(hdr(OP_RESPONSE, 9, req.src_port), &[]);
    assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
    // Small rx buffers split host data into several packets, in order.
    let msg: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
    s.write_all(&msg).unwrap();
    assert_eq!(g.recv_data(msg.len()), msg);
}

#[test]
fn a_host_client_connecting_before_the_driver_starts_is_served_after_activation() {
    let mut early = None;
    let mut g = Guest::build(4096, 8, |sock| {
        let mut s = UnixStream::connect(sock).unwrap();
        s.write_all(b"CONNECT 4242\n").unwrap();
        early = Some(s);
    });
    let mut s = early.unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let (req, _) = g.recv();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 4242));
    g.send(hdr(OP_RESPONSE, 4242, req.src_port), &[]);
    assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
}

#[test]
fn a_guest_that_never_answers_a_host_request_times_out() {
    let mut g = Guest::new();
    let mut s = UnixStream::connect(&g.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"CONNECT 11\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!(req.op, OP_REQUEST);
    let start = Instant::now();
    assert_eof(&mut s);
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "closed too early"
    );
    // The guest is told too, in case its answer was only late.
    let (rst, _) = g.recv();
    assert_eq!(
        (rst.op, rst.src_port, rst.dst_port),
        (OP_RST, req.src_port, 11)
    );
}

/// The guest side of one stream in the echo test, with Linux-like credit handling.
struct EchoStream {
    port: u32,
    data: Vec<u8>,
    sent: usize,
    /// The device's buf_alloc/fwd_cnt as last seen.
    dev_buf_alloc: u32,
    dev_fwd_cnt: u32,
    received: Vec<u8>,
    /// What the guest last told the device about its own consumption.
    reported_fwd: u32,
    shut_sent: bool,
    host_shut: u32,
}

const ECHO_GUEST_BUF: u32 = 64 * 1024;

#[test]
fn eight_echo_streams_with_tight_credit_in_both_directions() {
    const STREAMS: u32 = 8;
    const BYTES: usize = 512 * 1024;
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5100)).unwrap();
    let echo_server = std::thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..STREAMS {
            let (mut s, _) = listener.accept().unwrap();
            workers.push(std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let n = io::copy(&mut r, &mut s).unwrap();
                drop(s);
                n
            }));
        }
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<u64>>()
    });

    let mut streams: Vec<EchoStream> = (0..STREAMS)
        .map(|i| EchoStream {
            port: 60000 + i,
            data: (0..BYTES).map(|j| (j as u32 * 7 + i) as u8).collect(),
            sent: 0,
            dev_buf_alloc: 0,
            dev_fwd_cnt: 0,
            received: Vec::new(),
            reported_fwd: 0,
            shut_sent: false,
            host_shut: 0,
        })
        .collect();
    let guest_hdr = |op: u16, st: &EchoStream| Header {
        buf_alloc: ECHO_GUEST_BUF,
        fwd_cnt: st.received.len() as u32,
        ..hdr(op, st.port, 5100)
    };
    for st in &mut streams {
        g.send(guest_hdr(OP_REQUEST, st), &[]);
        let (h, _) = g.recv();
        assert_eq!((h.op, h.dst_port), (OP_RESPONSE, st.port));
        st.dev_buf_alloc = h.buf_alloc;
        st.dev_fwd_cnt = h.fwd_cnt;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while streams.iter().any(|s| s.host_shut & SHUTDOWN_SEND == 0) {
        assert!(Instant::now() < deadline, "echo streams stalled");
        // Send a packet on every stream that has credit.
        for st in &mut streams {
            let in_flight = (st.sent as u32).wrapping_sub(st.dev_fwd_cnt);
            let credit = st.dev_buf_alloc.saturating_sub(in_flight) as usize;
            let n = credit.min(16 * 1024).min(BYTES - st.sent);
            if n > 0 {
                let h = guest_hdr(OP_RW, st);
                st.reported_fwd = h.fwd_cnt;
                let chunk = st.data[st.sent..st.sent + n].to_vec();
                g.send(h, &chunk);
                st.sent += n;
            } else if st.sent == BYTES && !st.shut_sent {
                let mut h = guest_hdr(OP_SHUTDOWN, st);
                h.flags = SHUTDOWN_SEND;
                st.reported_fwd = h.fwd_cnt;
                g.send(h, &[]);
                st.shut_sent = true;
            }
        }
        // Take what the device has for us.
        while let Some((h, data)) = g.recv_within(Duration::from_millis(2)) {
            let st = streams
                .iter_mut()
                .find(|s| s.port == h.dst_port)
                .expect("packet for an unknown stream");
            st.dev_buf_alloc = h.buf_alloc;
            st.dev_fwd_cnt = h.fwd_cnt;
            match h.op {
                OP_RW => {
                    st.received.extend_from_slice(&data);
                    let unread = st.received.len() as u32 - st.reported_fwd;
                    assert!(unread <= ECHO_GUEST_BUF, "the device overran guest credit");
                }
                OP_CREDIT_UPDATE => {}
                OP_CREDIT_REQUEST => st.reported_fwd = u32::MAX,
                OP_SHUTDOWN => st.host_shut |= h.flags,
                op => panic!("unexpected op {op} on stream {}", st.port),
            }
            // Like Linux: tell the device once less than half the buffer looks free.
            let unreported = (st.received.len() as u32).wrapping_sub(st.reported_fwd);
            if unreported >= ECHO_GUEST_BUF / 2 || st.reported_fwd == u32::MAX {
                let h = guest_hdr(OP_CREDIT_UPDATE, st);
                st.reported_fwd = h.fwd_cnt;
                g.send(h, &[]);
            }
        }
    }
    for st in &streams {
        assert_eq!(st.received.len(), BYTES, "stream {}", st.port);
        assert!(
            st.received == st.data,
            "stream {} echoed wrong bytes",
            st.port
        );
    }
    assert_eq!(
        echo_server.join().unwrap(),
        vec![BYTES as u64; STREAMS as usize]
    );
}

/// xorshift64*: a tiny deterministic generator for the garbage test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn thousands_of_random_packets_and_chains_do_not_break_the_device() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5200)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..3000u32 {
        match rng.below(4) {
            // A plausible header with random fields, for a handful of ports so that some
            // streams really open and then receive nonsense.
            0 | 1 => {
                let mut h = hdr(rng.below(9) as u16, 100 + rng.below(4) as u32, 5200);
                if rng.below(8) == 0 {
                    h.type_ = rng.below(4) as u16;
                }
                if rng.below(8) == 0 {
                    h.dst_cid = rng.below(4);
                }
                h.flags = rng.below(8) as u32;
                h.buf_alloc = rng.next() as u32;
                h.fwd_cnt = rng.next() as u32;
                let payload: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                if rng.below(4) == 0 {
                    h.len = rng.next() as u32;
                    g.send_raw_hdr(h, &payload);
                } else {
                    g.send(h, &payload);
                }
            }
            // Random bytes as a header.
            2 => {
                let mut raw = [0u8; HDR_SIZE];
                raw.iter_mut().for_each(|b| *b = rng.next() as u8);
                let h = Header::decode(&raw);
                g.send_raw_hdr(h, &[]);
            }
            // A random descriptor chain: addresses, lengths, flags and links all random.
            _ => {
                let n = 1 + rng.below(4) as usize;
                let descs: Vec<SplitDescriptor> = (0..n)
                    .map(|_| {
                        let addr = match rng.below(3) {
                            0 => rng.next(),
                            1 => TX_BASE + rng.below(0x10000),
                            _ => MEM_SIZE as u64 - rng.below(64),
                        };
                        SplitDescriptor::new(
                            addr,
                            rng.below(0x20000) as u32,
                            rng.below(8) as u16,
                            48 + rng.below(n as u64 + 1) as u16,
                        )
                    })
                    .collect();
                g.send_descs(&descs, 48 + rng.below(n as u64) as u16);
            }
        }
        if round % 16 == 0 {
            g.wait_tx_done();
        }
        // Drain whatever the device answers; every packet must be well-formed (checked
        // by recv_within) and addressed to the guest.
        while g.recv_within(Duration::ZERO).is_some() {}
        if let Ok((s, _)) = listener.accept() {
            accepted.push(s);
        }
    }
    g.wait_tx_done();
    while g.recv_within(QUIET).is_some() {}
    // Streams the device opened late in the loop wait in the backlog.
    while let Ok((s, _)) = listener.accept() {
        accepted.push(s);
    }
    assert!(
        !g.interrupt.needs_reset(),
        "valid rings must never need a reset"
    );
    assert!(
        !accepted.is_empty(),
        "no random request opened a stream: the test is too weak"
    );
    // The device still carries a clean stream end to end.
    listener.set_nonblocking(false).unwrap();
    let mut s = g.guest_connect(&listener, 59999, 5200);
    g.send(hdr(OP_RW, 59999, 5200), b"survived");
    assert_eq!(read_exactly(&mut s, 8), b"survived");
    s.write_all(b"ok").unwrap();
    assert_eq!(g.recv_data(2), b"ok");
}

#[test]
fn dropping_the_device_delivers_what_the_guest_already_sent() {
    let mut g = Guest::new();
    let listener = UnixListener::bind(g.port_path(5300)).unwrap();
    let mut s = g.guest_connect(&listener, 48000, 5300);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    // The guest queues a full buffer's worth of data and the VM goes away before the
    // device thread saw the notification: the packets are still in the tx ring.
    let data: Vec<u8> = (0..TX_BUF_SIZE).map(|i| (i % 253) as u8).collect();
    for chunk in data.chunks(MAX_PKT_PAYLOAD) {
        let mut h = hdr(OP_RW, 48000, 5300);
        h.len = chunk.len() as u32;
        let (head, addrs) =
            g.tx.build(&g.mem, &[(HDR_SIZE as u32, false), (h.len, false)]);
        g.mem
            .write_slice(&h.encode(), GuestAddress(addrs[0]))
            .unwrap();
        g.mem.write_slice(chunk, GuestAddress(addrs[1])).unwrap();
        g.tx.post(&g.mem, head);
    }
    drop(g);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");
}
