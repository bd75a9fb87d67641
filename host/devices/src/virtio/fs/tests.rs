//! virtio-fs against virtio-queue's mock driver and a backend that records what reached it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::test_utils::CountingIrq;

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const QSIZE: u16 = 16;
const HIPRIO_RING: u64 = 0x0;
const REQUEST_RING: u64 = 0x1000;
const BUF: u64 = 0x10000;
const MEM_SIZE: usize = 4 << 20;

/// 4 MiB of guest memory at address 0 (room for a request over `MAX_REQUEST`).
fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// Records every request; answers each with a header and `body`, or not at all.
#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<Vec<u8>>>,
    body: Option<Vec<u8>>,
    delay: Duration,
}

impl Recorder {
    fn replying(body: &[u8]) -> Arc<Self> {
        Arc::new(Recorder {
            body: Some(body.to_vec()),
            ..Recorder::default()
        })
    }

    fn silent() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

impl FsBackend for Recorder {
    fn handle(&self, request: &[u8], reply: &mut Vec<u8>) {
        assert!(reply.is_empty(), "the device hands over an empty reply");
        self.requests.lock().unwrap().push(request.to_vec());
        std::thread::sleep(self.delay);
        if let Some(body) = &self.body {
            reply.extend_from_slice(&out_header(16 + body.len() as u32, 0, unique(request)));
            reply.extend_from_slice(body);
        }
    }
}

fn unique(request: &[u8]) -> u64 {
    u64::from_le_bytes(request[8..16].try_into().unwrap())
}

fn out_header(len: u32, error: i32, unique: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&error.to_le_bytes());
    h.extend_from_slice(&unique.to_le_bytes());
    h
}

/// A FUSE request: `fuse_in_header` then `body`.
fn fuse_request(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; FUSE_IN_HEADER_LEN];
    r[..4].copy_from_slice(&((FUSE_IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
    r[4..8].copy_from_slice(&opcode.to_le_bytes());
    r[8..16].copy_from_slice(&unique.to_le_bytes());
    r.extend_from_slice(body);
    r
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Writes `data` at `addr` split into pieces of `sizes` bytes, as a chain of readable
/// descriptors starting at table index `first`; returns them.
fn readable(
    mem: &GuestMemory,
    addr: u64,
    data: &[u8],
    sizes: &[usize],
    first: u16,
) -> Vec<RawDescriptor> {
    assert_eq!(sizes.iter().sum::<usize>(), data.len());
    let mut descs = Vec::new();
    let (mut at, mut off) = (addr, 0);
    for (i, &n) in sizes.iter().enumerate() {
        mem.write_slice(&data[off..off + n], GuestAddress(at))
            .unwrap();
        descs.push(desc(at, n as u32, NEXT, first + i as u16 + 1));
        // Leave a gap so the pieces are not contiguous in guest memory.
        at += n as u64 + 0x100;
        off += n;
    }
    descs
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

/// Marks the last descriptor of a chain as the last.
fn end(mut descs: Vec<RawDescriptor>) -> Vec<RawDescriptor> {
    let last = SplitDescriptor::from(*descs.last().unwrap());
    *descs.last_mut().unwrap() = desc(last.addr().0, last.len(), last.flags() & !NEXT, 0);
    descs
}

/// One queue served synchronously (no thread).
struct Rig<'a> {
    mock: MockSplitQueue<'a, GuestMemory>,
    server: QueueServer,
    interrupt: Arc<VirtioInterrupt>,
    irq: Arc<CountingIrq>,
}

fn rig<'a>(mem: &'a GuestMemory, kind: QueueKind, backend: Arc<dyn FsBackend>) -> Rig<'a> {
    let mock = MockSplitQueue::create(mem, GuestAddress(REQUEST_RING), QSIZE);
    let irq = CountingIrq::new();
    let interrupt = VirtioInterrupt::new(irq.clone());
    let queue = SingleQueue::new(mem.clone(), interrupt.clone(), mock.create_queue().unwrap());
    let server = QueueServer::new("virtio-fs test".into(), kind, queue, backend);
    Rig {
        mock,
        server,
        interrupt,
        irq,
    }
}

fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

#[test]
fn config_space_holds_the_tag_and_the_queue_count() {
    let fs = Fs::new("berth-share", Recorder::silent()).unwrap();
    assert_eq!(fs.tag(), "berth-share");
    assert_eq!(fs.device_type(), 26);
    assert_eq!(fs.features(), VIRTIO_F_VERSION_1);
    assert_eq!(fs.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let mut config = [0xffu8; 44];
    fs.read_config(0, &mut config);
    assert_eq!(&config[..11], b"berth-share");
    assert!(config[11..36].iter().all(|&b| b == 0), "tag NUL-padded");
    assert_eq!(&config[36..40], &1u32.to_le_bytes());
    assert_eq!(&config[40..], &[0; 4], "past the end reads as zero");
    let mut word = [0u8; 4];
    fs.read_config(36, &mut word);
    assert_eq!(u32::from_le_bytes(word), REQUEST_QUEUES as u32);
    fs.read_config(u64::MAX, &mut word);
    assert_eq!(word, [0; 4]);

    let full = "a".repeat(36);
    let fs = Fs::new(&full, Recorder::silent()).unwrap();
    let mut tag = [0u8; 36];
    fs.read_config(0, &mut tag);
    assert_eq!(&tag[..], full.as_bytes());
    let mut fs = fs;
    fs.write_config(0, b"other");
    fs.read_config(0, &mut tag);
    assert_eq!(&tag[..], full.as_bytes(), "config space is read-only");
}

#[test]
fn bad_tags_are_refused() {
    assert!(matches!(
        Fs::new("", Recorder::silent()),
        Err(FsError::EmptyTag)
    ));
    let e = Fs::new(&"a".repeat(37), Recorder::silent()).unwrap_err();
    assert!(e.to_string().contains("at most 36 bytes"), "{e}");
    // 13 characters, 39 bytes.
    assert!(matches!(
        Fs::new(&"é".repeat(13).replace('é', "€"), Recorder::silent()),
        Err(FsError::TagTooLong { len: 39, .. })
    ));
    assert!(matches!(
        Fs::new("a\0b", Recorder::silent()),
        Err(FsError::TagNul(_))
    ));
}

#[test]
fn a_split_request_reaches_the_backend_whole_and_the_reply_is_scattered() {
    let mem = memory();
    let backend = Recorder::replying(&(0..100u8).collect::<Vec<_>>());
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let request = fuse_request(15, 0x1234_5678_9abc, &[7u8; 300]);
    let mut descs = readable(&mem, BUF, &request, &[10, 30, 300], 0);
    // 116 bytes of reply over 50 + 50 + 4096 bytes of writable buffers.
    let out = [0x40000u64, 0x41000, 0x42000];
    descs.push(desc(out[0], 50, NEXT | WRITE, 4));
    descs.push(desc(out[1], 50, NEXT | WRITE, 5));
    descs.push(desc(out[2], 4096, WRITE, 0));
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();

    assert_eq!(backend.requests(), vec![request]);
    assert_eq!(used(&r.mock), vec![(0, 116)]);
    let mut reply = read(&mem, out[0], 50);
    reply.extend(read(&mem, out[1], 50));
    reply.extend(read(&mem, out[2], 16));
    assert_eq!(&reply[..16], &out_header(116, 0, 0x1234_5678_9abc)[..]);
    assert_eq!(&reply[16..], &(0..100u8).collect::<Vec<_>>()[..]);
    assert_eq!(r.irq.count(), 1);
    assert!(!r.interrupt.needs_reset());
}

#[test]
fn several_chains_in_one_notification_are_all_served() {
    let mem = memory();
    let backend = Recorder::replying(b"ok");
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let mut descs = Vec::new();
    for i in 0..4u16 {
        let request = fuse_request(3, u64::from(i), &[]);
        let base = BUF + u64::from(i) * 0x1000;
        descs.extend(readable(&mem, base, &request, &[40], i * 2));
        descs.push(desc(base + 0x800, 64, WRITE, 0));
    }
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();
    assert_eq!(
        used(&r.mock),
        vec![(0, 18), (2, 18), (4, 18), (6, 18)],
        "heads and lengths"
    );
    for i in 0..4u64 {
        let reply = read(&mem, BUF + i * 0x1000 + 0x800, 18);
        assert_eq!(&reply[..16], &out_header(18, 0, i)[..]);
    }
    assert_eq!(backend.requests().len(), 4);
    assert_eq!(r.irq.count(), 1, "one interrupt for the batch");
}

#[test]
fn forget_on_hiprio_completes_with_zero_bytes() {
    let mem = memory();
    let backend = Recorder::silent();
    let mut r = rig(&mem, QueueKind::Hiprio, backend.clone());
    let forget = fuse_request(2, 0, &5u64.to_le_bytes());
    r.mock
        .add_desc_chains(&end(readable(&mem, BUF, &forget, &[40, 8], 0)), 0)
        .unwrap();
    r.server.serve();
    assert_eq!(backend.requests(), vec![forget]);
    assert_eq!(used(&r.mock), vec![(0, 0)]);
    assert_eq!(r.irq.count(), 1);

    // A backend that does answer a high-priority request is not written back.
    let mem = memory();
    let backend = Recorder::replying(b"unexpected");
    let mut r = rig(&mem, QueueKind::Hiprio, backend.clone());
    let interrupt = fuse_request(36, 9, &9u64.to_le_bytes());
    let mut descs = readable(&mem, BUF, &interrupt, &[48], 0);
    descs.push(desc(0x40000, 64, WRITE, 0));
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();
    assert_eq!(used(&r.mock), vec![(0, 0)]);
    assert_eq!(read(&mem, 0x40000, 64), vec![0; 64]);
}

#[test]
fn an_oversized_request_is_refused_without_reaching_the_backend() {
    let mem = memory();
    let backend = Recorder::replying(b"never");
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let header = fuse_request(16, 77, &[]);
    mem.write_slice(&header, GuestAddress(BUF)).unwrap();
    // 40 + 1 MiB + 8 KiB of readable descriptors: over MAX_REQUEST (1 MiB + 4 KiB).
    let descs = [
        desc(BUF, 40, NEXT, 1),
        desc(0x100000, 1 << 20, NEXT, 2),
        desc(0x200000, 8192, NEXT, 3),
        desc(0x300000, 64, WRITE, 0),
    ];
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();
    assert!(backend.requests().is_empty());
    assert_eq!(used(&r.mock), vec![(0, 16)]);
    assert_eq!(read(&mem, 0x300000, 16), out_header(16, -libc::EINVAL, 77));

    // One huge descriptor, its header readable, no room for a reply: returned empty.
    let mem = memory();
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    mem.write_slice(&header, GuestAddress(BUF)).unwrap();
    r.mock
        .add_desc_chains(&[desc(BUF, (MEM_SIZE - BUF as usize) as u32, 0, 0)], 0)
        .unwrap();
    r.server.serve();
    assert!(backend.requests().is_empty());
    assert_eq!(used(&r.mock), vec![(0, 0)]);

    // A descriptor claiming 3.75 GiB, far outside guest memory: no allocation of that
    // size, no backend call, an error reply.
    let mem = memory();
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    mem.write_slice(&header, GuestAddress(BUF)).unwrap();
    r.mock
        .add_desc_chains(
            &[
                desc(BUF, 0xf000_0000, NEXT, 1),
                desc(0x300000, 16, WRITE, 0),
            ],
            0,
        )
        .unwrap();
    r.server.serve();
    assert!(backend.requests().is_empty());
    assert_eq!(used(&r.mock), vec![(0, 16)]);
    assert_eq!(read(&mem, 0x300000, 16), out_header(16, -libc::EINVAL, 77));
}

#[test]
fn a_request_of_exactly_max_request_bytes_is_served() {
    let mem = memory();
    let backend = Recorder::replying(&[]);
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let header = fuse_request(16, 5, &[]);
    mem.write_slice(&header, GuestAddress(BUF)).unwrap();
    let rest = (berth_fuse::MAX_REQUEST - 40) as u32;
    r.mock
        .add_desc_chains(
            &[
                desc(BUF, 40, NEXT, 1),
                desc(0x100000, rest, NEXT, 2),
                desc(0x300000, 16, WRITE, 0),
            ],
            0,
        )
        .unwrap();
    r.server.serve();
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].len(), berth_fuse::MAX_REQUEST);
    assert_eq!(used(&r.mock), vec![(0, 16)]);
    assert_eq!(read(&mem, 0x300000, 16), out_header(16, 0, 5));
}

#[test]
fn a_reply_larger_than_the_buffers_becomes_an_error_reply() {
    let mem = memory();
    let backend = Recorder::replying(&[0xaa; 200]);
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let request = fuse_request(15, 42, &[0; 40]);
    let mut descs = readable(&mem, BUF, &request, &[80], 0);
    descs.push(desc(0x40000, 8, NEXT | WRITE, 2));
    descs.push(desc(0x41000, 100, WRITE, 0));
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(used(&r.mock), vec![(0, 16)]);
    let mut reply = read(&mem, 0x40000, 8);
    reply.extend(read(&mem, 0x41000, 8));
    assert_eq!(reply, out_header(16, -libc::EIO, 42));
    assert_eq!(read(&mem, 0x41000 + 8, 92), vec![0; 92], "nothing more");

    // No room even for the error header: returned empty.
    let mem = memory();
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let mut descs = readable(&mem, BUF, &request, &[80], 0);
    descs.push(desc(0x40000, 15, WRITE, 0));
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();
    assert_eq!(used(&r.mock), vec![(0, 0)]);
}

#[test]
fn broken_chains_do_not_panic_and_the_queue_goes_on() {
    let mem = memory();
    let backend = Recorder::replying(b"x");
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    let request = fuse_request(3, 1, &[]);
    mem.write_slice(&request, GuestAddress(BUF)).unwrap();
    let descs = [
        // 0: writable before readable.
        desc(0x40000, 64, NEXT | WRITE, 1),
        desc(BUF, 40, 0, 0),
        // 2: readable descriptor outside guest memory.
        desc(MEM_SIZE as u64 - 8, 40, NEXT, 3),
        desc(0x40000, 64, WRITE, 0),
        // 4: only writable descriptors (no request).
        desc(0x40000, 64, WRITE, 0),
        // 5: zero-length descriptors around a good request, then a writable buffer
        //    outside guest memory.
        desc(0x7fff_ffff_0000, 0, NEXT, 6),
        desc(BUF, 40, NEXT, 7),
        desc(0, 0, NEXT | WRITE, 8),
        desc(0x7fff_ffff_0000, 64, WRITE, 0),
    ];
    r.mock.add_desc_chains(&descs, 0).unwrap();
    // 9: a loop (its next points to itself): bounded by the queue size.
    r.mock
        .add_desc_chains(&[desc(BUF, 40, NEXT, 9)], 9)
        .unwrap();
    // 10: next beyond the table.
    r.mock
        .add_desc_chains(&[desc(BUF, 40, NEXT, 500)], 10)
        .unwrap();
    // 11: a good request, to show the queue still works.
    r.mock
        .add_desc_chains(&[desc(BUF, 40, NEXT, 12), desc(0x50000, 64, WRITE, 0)], 11)
        .unwrap();
    r.server.serve();
    let used = used(&r.mock);
    let heads: Vec<u32> = used.iter().map(|u| u.0).collect();
    assert_eq!(heads, vec![0, 2, 4, 5, 9, 10, 11]);
    assert_eq!(used[..4], [(0, 0), (2, 0), (4, 0), (5, 0)]);
    assert_eq!(used[6], (11, 17));
    assert_eq!(read(&mem, 0x50000, 16), out_header(17, 0, 1));
    assert_eq!(
        read(&mem, 0x40000, 64),
        vec![0; 64],
        "refused chains untouched"
    );
    assert!(!r.interrupt.needs_reset());
    // The request of chain 9 was read as often as the loop allowed, but stays bounded.
    assert!(backend
        .requests()
        .iter()
        .all(|r| r.len() <= usize::from(QSIZE) * 40));
}

#[test]
fn a_lying_avail_index_marks_the_device_broken_without_panicking() {
    let mem = memory();
    let backend = Recorder::replying(b"x");
    let mut r = rig(&mem, QueueKind::Request, backend.clone());
    // The driver claims 1000 new chains in a ring of 16.
    r.mock.avail().idx().store(1000);
    r.server.serve();
    assert!(r.interrupt.needs_reset());
    assert!(used(&r.mock).is_empty());
}

/// Activates `fs` on fresh mock queues; returns them.
fn start<'a>(
    fs: &mut Fs,
    mem: &'a GuestMemory,
) -> (
    MockSplitQueue<'a, GuestMemory>,
    MockSplitQueue<'a, GuestMemory>,
    Arc<VirtioInterrupt>,
) {
    let hiprio = MockSplitQueue::create(mem, GuestAddress(HIPRIO_RING), QSIZE);
    let request = MockSplitQueue::create(mem, GuestAddress(REQUEST_RING), QSIZE);
    let interrupt = VirtioInterrupt::new(CountingIrq::new());
    fs.activate(
        mem.clone(),
        interrupt.clone(),
        vec![
            hiprio.create_queue().unwrap(),
            request.create_queue().unwrap(),
        ],
    )
    .unwrap();
    (hiprio, request, interrupt)
}

fn wait_used(q: &MockSplitQueue<'_, GuestMemory>, n: usize) -> Vec<(u32, u32)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while used(q).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    used(q)
}

#[test]
fn the_device_threads_serve_both_queues_and_survive_reset() {
    let backend = Recorder::replying(b"hello");
    let mut fs = Fs::new("share", backend.clone()).unwrap();
    let mem = memory();
    // Activation needs both queues.
    let q = MockSplitQueue::create(&mem, GuestAddress(HIPRIO_RING), QSIZE);
    let e = fs
        .activate(
            mem.clone(),
            VirtioInterrupt::new(CountingIrq::new()),
            vec![q.create_queue().unwrap()],
        )
        .unwrap_err();
    assert!(matches!(e, ActivateError::QueueCount { want: 2, got: 1 }));

    for round in 0..3u64 {
        let mem = memory();
        let (hiprio, request, interrupt) = start(&mut fs, &mem);
        let lookup = fuse_request(1, round, b"name\0");
        let mut descs = readable(&mem, BUF, &lookup, &[45], 0);
        descs.push(desc(0x40000, 128, WRITE, 0));
        request.add_desc_chains(&descs, 0).unwrap();
        fs.queue_notify(1);
        fs.queue_notify(2); // no such queue
        fs.queue_notify(u32::MAX);
        assert_eq!(wait_used(&request, 1), vec![(0, 21)], "round {round}");
        assert_eq!(read(&mem, 0x40000, 16), out_header(21, 0, round));
        assert_eq!(read(&mem, 0x40010, 5), b"hello");

        let forget = fuse_request(2, 0, &1u64.to_le_bytes());
        hiprio
            .add_desc_chains(&end(readable(&mem, 0x80000, &forget, &[48], 0)), 0)
            .unwrap();
        fs.queue_notify(0);
        assert_eq!(wait_used(&hiprio, 1), vec![(0, 0)]);
        assert!(!interrupt.needs_reset());
        fs.reset();

        // After reset, notifications reach nothing and guest memory is not touched.
        let mut descs = readable(&mem, BUF, &lookup, &[45], 1);
        descs.push(desc(0x40000, 128, WRITE, 0));
        request.add_desc_chains(&descs, 1).unwrap();
        fs.queue_notify(1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(used(&request).len(), 1);
    }
    assert_eq!(backend.requests().len(), 6);
}

#[test]
fn a_slow_request_does_not_hold_up_the_vcpu_or_the_hiprio_queue() {
    let backend = Arc::new(Recorder {
        body: Some(b"slow".to_vec()),
        delay: Duration::from_millis(300),
        ..Recorder::default()
    });
    let mut fs = Fs::new("share", backend.clone()).unwrap();
    let mem = memory();
    let (hiprio, request, _) = start(&mut fs, &mem);
    let read_req = fuse_request(15, 1, &[0; 40]);
    let mut descs = readable(&mem, BUF, &read_req, &[80], 0);
    descs.push(desc(0x40000, 128, WRITE, 0));
    request.add_desc_chains(&descs, 0).unwrap();
    let started = Instant::now();
    fs.queue_notify(1);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "queue_notify returned before the backend finished"
    );
    let forget = fuse_request(2, 0, &1u64.to_le_bytes());
    hiprio
        .add_desc_chains(&end(readable(&mem, 0x80000, &forget, &[48], 0)), 0)
        .unwrap();
    fs.queue_notify(0);
    assert_eq!(wait_used(&request, 1), vec![(0, 20)]);
    assert_eq!(wait_used(&hiprio, 1), vec![(0, 0)]);
    // Dropping the device stops its threads.
    drop(fs);
}

#[test]
fn the_fuse_server_is_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let fs = berth_fuse::PassthroughFs::new(dir.path(), true).unwrap();
    let backend: Arc<dyn FsBackend> = Arc::new(berth_fuse::Server::new(fs));
    let mem = memory();
    let mut r = rig(&mem, QueueKind::Request, backend);
    let mut descs = readable(&mem, BUF, &fuse_request(26, 3, &[0; 64]), &[104], 0);
    descs.push(desc(0x40000, 4096, WRITE, 0));
    r.mock.add_desc_chains(&descs, 0).unwrap();
    r.server.serve();
    let used = used(&r.mock);
    assert_eq!(used.len(), 1);
    // Whatever it answers (the skeleton answers ENOSYS), it is one whole FUSE reply.
    let reply = read(&mem, 0x40000, used[0].1 as usize);
    assert!(reply.len() >= 16);
    assert_eq!(
        u32::from_le_bytes(reply[..4].try_into().unwrap()) as usize,
        reply.len()
    );
    assert_eq!(u64::from_le_bytes(reply[8..16].try_into().unwrap()), 3);
}
