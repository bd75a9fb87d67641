//! What berth's fuzz targets share: guest memory that the fuzzer fills, split virtqueues
//! laid out in it from a structured description (well-formed chains and raw hostile
//! descriptors alike), the driver's side of the virtio-mmio registers, and small device
//! backends that never touch the host's network.
//!
//! Memory layout (64 KiB at guest address 0): queue `q`'s descriptor table at
//! `q * 0x400`, its available ring at `+0x100`, its used ring at `+0x200`; buffers from
//! [`DATA`] up. Everything the fuzzer writes lands inside guest memory, but raw
//! descriptors may point anywhere, and the fuzzer's own bytes may overwrite the rings.

use std::collections::VecDeque;
use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_devices::virtio::net::{NetBackend, NetBackendError};
use berth_devices::{GuestMemory, IrqTrigger};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// Size of guest memory.
pub const MEM_SIZE: u64 = 0x1_0000;
/// Where buffers start.
pub const DATA: u64 = 0x1000;
/// Size of every queue the fuzz driver sets up.
pub const QUEUE_SIZE: u16 = 16;
/// Most queues a device has (vsock's three).
pub const MAX_QUEUES: usize = 3;
/// Largest writable buffer one descriptor asks for.
const MAX_WRITE_BUF: u32 = 0x4000;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;

/// An interrupt line that goes nowhere.
#[derive(Debug, Default)]
pub struct NullIrq;

impl IrqTrigger for NullIrq {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A shared [`NullIrq`].
pub fn null_irq() -> Arc<NullIrq> {
    Arc::new(NullIrq)
}

/// One descriptor of a chain.
#[derive(Arbitrary, Debug, Clone)]
pub enum Desc {
    /// A device-readable buffer holding these bytes.
    Read(Vec<u8>),
    /// A device-writable buffer of this many bytes (capped at 16 KiB).
    Write(u16),
    /// A descriptor as a hostile guest may write it: any address, length, flags and next.
    Raw {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
        /// Flags (NEXT, WRITE, INDIRECT).
        flags: u16,
        /// Next descriptor index.
        next: u16,
    },
}

/// A descriptor chain: its descriptors take consecutive table slots, linked by NEXT
/// (except where a raw one says otherwise).
#[derive(Arbitrary, Debug, Clone)]
pub struct Chain(pub Vec<Desc>);

/// The guest makes `chains` available on queue `queue`, then notifies it.
#[derive(Arbitrary, Debug, Clone)]
pub struct Kick {
    /// The queue (taken modulo the device's queue count, unless `stray_notify`).
    pub queue: u8,
    /// The chains made available.
    pub chains: Vec<Chain>,
    /// Moves the available index this much further than the chains put there.
    pub avail_skew: u16,
    /// The available ring's flags (1: no interrupt wanted).
    pub avail_flags: u16,
    /// Also notifies a queue index that does not exist.
    pub stray_notify: Option<u32>,
}

/// The driver's side of up to [`MAX_QUEUES`] split queues in fuzzer-filled memory.
#[derive(Debug)]
pub struct Driver {
    mem: GuestMemory,
    queues: usize,
    next_slot: [u16; MAX_QUEUES],
    avail_idx: [u16; MAX_QUEUES],
    data_next: u64,
}

impl Driver {
    /// Guest memory whose buffer area starts as `fill` (repeated), for `queues` queues.
    pub fn new(queues: usize, fill: &[u8]) -> Driver {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
            .expect("64 KiB of guest memory");
        if !fill.is_empty() {
            // `fill` repeated, by doubling: a few copies, not one step per byte.
            let area = (MEM_SIZE - DATA) as usize;
            let mut bytes = Vec::with_capacity(2 * area);
            bytes.extend_from_slice(&fill[..fill.len().min(area)]);
            while bytes.len() < area {
                bytes.extend_from_within(..);
            }
            mem.write_slice(&bytes[..area], GuestAddress(DATA))
                .expect("the buffer area is in memory");
        }
        Driver {
            mem,
            queues: queues.min(MAX_QUEUES),
            next_slot: [0; MAX_QUEUES],
            avail_idx: [0; MAX_QUEUES],
            data_next: DATA,
        }
    }

    /// The guest memory.
    pub fn memory(&self) -> GuestMemory {
        self.mem.clone()
    }

    /// How many queues the driver sets up.
    pub fn queue_count(&self) -> usize {
        self.queues
    }

    /// Descriptor table, available ring and used ring of queue `q`.
    pub fn rings(q: usize) -> (u64, u64, u64) {
        let base = q as u64 * 0x400;
        (base, base + 0x100, base + 0x200)
    }

    /// The queues, ready, as the transport would hand them to the device at DRIVER_OK.
    pub fn queues(&self) -> Vec<Queue> {
        (0..self.queues)
            .map(|q| {
                let (desc, avail, used) = Self::rings(q);
                let mut queue = Queue::new(QUEUE_SIZE).expect("a valid queue size");
                queue.set_size(QUEUE_SIZE);
                queue.set_desc_table_address(Some(desc as u32), Some(0));
                queue.set_avail_ring_address(Some(avail as u32), Some(0));
                queue.set_used_ring_address(Some(used as u32), Some(0));
                queue.set_ready(true);
                queue
            })
            .collect()
    }

    /// Room for `len` bytes of buffer; wraps to the start of the area when full.
    fn alloc(&mut self, len: u64) -> u64 {
        let len = len.min(MEM_SIZE - DATA);
        if self.data_next + len > MEM_SIZE {
            self.data_next = DATA;
        }
        let at = self.data_next;
        self.data_next += len;
        at
    }

    fn write_desc(&self, q: usize, slot: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let (table, _, _) = Self::rings(q);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        let _ = self
            .mem
            .write_slice(&d, GuestAddress(table + u64::from(slot) * 16));
    }

    /// Lays out the chains of `kick` on queue `q` (modulo the queue count) and publishes
    /// them in its available ring. Returns the queue index to notify.
    pub fn push(&mut self, kick: &Kick) -> u32 {
        let q = usize::from(kick.queue) % self.queues.max(1);
        for chain in kick.chains.iter().take(usize::from(QUEUE_SIZE)) {
            let head = self.next_slot[q] % QUEUE_SIZE;
            let n = chain.0.len().min(usize::from(QUEUE_SIZE));
            for (i, desc) in chain.0.iter().take(n).enumerate() {
                let slot = self.next_slot[q] % QUEUE_SIZE;
                self.next_slot[q] = self.next_slot[q].wrapping_add(1);
                let next = (slot + 1) % QUEUE_SIZE;
                let more = if i + 1 < n { VIRTQ_DESC_F_NEXT } else { 0 };
                match desc {
                    Desc::Read(bytes) => {
                        let at = self.alloc(bytes.len() as u64);
                        let len = bytes.len().min((MEM_SIZE - at) as usize);
                        let _ = self.mem.write_slice(&bytes[..len], GuestAddress(at));
                        self.write_desc(q, slot, at, len as u32, more, next);
                    }
                    Desc::Write(len) => {
                        let len = u32::from(*len).min(MAX_WRITE_BUF);
                        let at = self.alloc(u64::from(len));
                        self.write_desc(q, slot, at, len, more | VIRTQ_DESC_F_WRITE, next);
                    }
                    Desc::Raw {
                        addr,
                        len,
                        flags,
                        next,
                    } => self.write_desc(q, slot, *addr, *len, *flags, *next),
                }
            }
            let (_, avail, _) = Self::rings(q);
            let idx = self.avail_idx[q];
            let entry = avail + 4 + u64::from(idx % QUEUE_SIZE) * 2;
            let _ = self.mem.write_obj(head, GuestAddress(entry));
            self.avail_idx[q] = idx.wrapping_add(1);
        }
        let (_, avail, _) = Self::rings(q);
        let _ = self.mem.write_obj(kick.avail_flags, GuestAddress(avail));
        let published = self.avail_idx[q].wrapping_add(kick.avail_skew);
        let _ = self.mem.write_obj(published, GuestAddress(avail + 2));
        q as u32
    }
}

/// A network backend that loops the guest's frames back and adds frames the fuzzer
/// chose; it opens no host socket. Its queue is bounded.
#[derive(Debug, Default)]
pub struct LoopNet {
    frames: VecDeque<Vec<u8>>,
}

impl LoopNet {
    /// Most frames queued for the guest.
    pub const MAX_QUEUED: usize = 8;

    /// A backend with `frames` waiting for the guest.
    pub fn with_frames(frames: Vec<Vec<u8>>) -> LoopNet {
        LoopNet {
            frames: frames.into_iter().take(Self::MAX_QUEUED).collect(),
        }
    }
}

impl NetBackend for LoopNet {
    fn attach(&mut self, _registry: mio::Registry) -> std::io::Result<()> {
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), NetBackendError> {
        if self.frames.len() >= Self::MAX_QUEUED {
            return Err(NetBackendError::Full);
        }
        self.frames.push_back(frame.to_vec());
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetBackendError> {
        let Some(frame) = self.frames.pop_front() else {
            return Ok(None);
        };
        if frame.len() > buf.len() {
            return Err(NetBackendError::TooLarge {
                len: frame.len(),
                max: buf.len(),
            });
        }
        buf[..frame.len()].copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }

    fn ready(&mut self, _token: mio::Token, _readiness: berth_devices::virtio::net::Readiness) {}

    fn poll(&mut self) -> Option<std::time::Duration> {
        None
    }
}

/// A virtio-fs backend that answers every request with a well-formed FUSE reply whose
/// body length the request chose (its bytes 40..42, so the fuzzer can make replies
/// larger than the guest's buffers), and none for a request shorter than a header.
#[derive(Debug, Default)]
pub struct EchoFs;

impl berth_devices::virtio::fs::FsBackend for EchoFs {
    fn handle(&self, request: &[u8], reply: &mut Vec<u8>) {
        if request.len() < 40 {
            return;
        }
        let body = request
            .get(40..42)
            .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
        let len = 16 + body;
        reply.extend_from_slice(&(len as u32).to_le_bytes());
        reply.extend_from_slice(&0i32.to_le_bytes());
        reply.extend_from_slice(&request[8..16]);
        reply.resize(len, 0xa5);
    }
}
