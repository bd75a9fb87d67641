//! The transport's register file and state machine, driven correctly and in hostile ways.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::Queue;

use super::*;
use crate::virtio::test_utils::{memory, CountingIrq};
use crate::virtio::{ActivateError, VirtioDevice, VirtioInterrupt};

#[derive(Default)]
struct Record {
    activations: usize,
    queues: usize,
    notifies: Vec<u32>,
    resets: usize,
    acked: u64,
}

struct FakeDevice {
    record: Arc<Mutex<Record>>,
    fail_activation: bool,
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | 1
    }
    fn ack_features(&mut self, features: u64) {
        self.record.lock().unwrap().acked = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(
        &mut self,
        _mem: GuestMemory,
        _interrupt: Arc<VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.fail_activation {
            return Err(ActivateError::Backend("refused".into()));
        }
        let mut r = self.record.lock().unwrap();
        r.activations += 1;
        r.queues = queues.len();
        Ok(())
    }
    fn queue_notify(&mut self, index: u32) {
        self.record.lock().unwrap().notifies.push(index);
    }
    fn reset(&mut self) {
        self.record.lock().unwrap().resets += 1;
    }
}

fn transport(fail_activation: bool) -> (MmioTransport, Arc<Mutex<Record>>, Arc<CountingIrq>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let irq = CountingIrq::new();
    let t = MmioTransport::new(
        Box::new(FakeDevice {
            record: record.clone(),
            fail_activation,
        }),
        memory(),
        irq.clone(),
    );
    (t, record, irq)
}

fn r32(t: &mut MmioTransport, off: u64) -> u32 {
    let mut d = [0u8; 4];
    t.read(off, &mut d);
    u32::from_le_bytes(d)
}

fn w32(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// Sets up queue `i` inside the first 64 KiB of guest memory.
fn setup_queue(t: &mut MmioTransport, i: u32) {
    let base = 0x1000 * u64::from(i + 1);
    w32(t, reg::QUEUE_SEL, i);
    w32(t, reg::QUEUE_NUM, 16);
    w32(t, reg::QUEUE_DESC_LOW, base as u32);
    w32(t, reg::QUEUE_DESC_HIGH, 0);
    w32(t, reg::QUEUE_DRIVER_LOW, base as u32 + 0x200);
    w32(t, reg::QUEUE_DEVICE_LOW, base as u32 + 0x400);
    w32(t, reg::QUEUE_READY, 1);
}

fn negotiate(t: &mut MmioTransport) {
    w32(t, reg::STATUS, status::ACKNOWLEDGE);
    w32(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w32(t, reg::DRIVER_FEATURES_SEL, 1);
    w32(t, reg::DRIVER_FEATURES, 1); // VERSION_1
    w32(t, reg::DRIVER_FEATURES_SEL, 0);
    w32(t, reg::DRIVER_FEATURES, 1);
    w32(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn identifies_itself() {
    let (mut t, _, _) = transport(false);
    assert_eq!(r32(&mut t, reg::MAGIC), 0x7472_6976);
    assert_eq!(r32(&mut t, reg::VERSION), 2);
    assert_eq!(r32(&mut t, reg::DEVICE_ID), 4);
    w32(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r32(&mut t, reg::DEVICE_FEATURES), 1);
    w32(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(r32(&mut t, reg::DEVICE_FEATURES), 1);
    w32(&mut t, reg::DEVICE_FEATURES_SEL, 9);
    assert_eq!(r32(&mut t, reg::DEVICE_FEATURES), 0);
    w32(&mut t, reg::QUEUE_SEL, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), 16);
    w32(&mut t, reg::QUEUE_SEL, 2);
    assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), 0);
    let mut cfg = [0u8; 2];
    t.read(reg::CONFIG + 3, &mut cfg);
    assert_eq!(cfg, [3, 4]);
}

#[test]
fn activates_after_the_proper_sequence() {
    let (mut t, record, _) = transport(false);
    negotiate(&mut t);
    setup_queue(&mut t, 0);
    setup_queue(&mut t, 1);
    w32(&mut t, reg::QUEUE_NOTIFY, 0); // before DRIVER_OK: ignored
    w32(&mut t, reg::STATUS, ALL_OK);
    assert!(t.is_activated());
    assert_eq!(r32(&mut t, reg::STATUS), ALL_OK);
    w32(&mut t, reg::QUEUE_NOTIFY, 1);
    w32(&mut t, reg::QUEUE_NOTIFY, 99);
    {
        let r = record.lock().unwrap();
        assert_eq!((r.activations, r.queues), (1, 2));
        assert_eq!(r.acked, VIRTIO_F_VERSION_1 | 1);
        assert_eq!(r.notifies, vec![1, 99]);
    }
    // Queue registers are frozen once running.
    w32(&mut t, reg::QUEUE_SEL, 0);
    w32(&mut t, reg::QUEUE_READY, 0);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 1);
    // Reset.
    w32(&mut t, reg::STATUS, 0);
    assert!(!t.is_activated());
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(record.lock().unwrap().resets, 1);
}

#[test]
fn out_of_order_status_writes_are_ignored() {
    let (mut t, record, _) = transport(false);
    // DRIVER_OK straight away.
    w32(&mut t, reg::STATUS, ALL_OK);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    w32(&mut t, reg::STATUS, status::DRIVER);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    w32(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    // Skipping DRIVER.
    w32(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::FEATURES_OK,
    );
    assert_eq!(r32(&mut t, reg::STATUS), status::ACKNOWLEDGE);
    // Features before DRIVER are ignored.
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w32(&mut t, reg::DRIVER_FEATURES, 1);
    w32(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    // Queue setup before FEATURES_OK is ignored.
    setup_queue(&mut t, 0);
    w32(&mut t, reg::QUEUE_SEL, 0);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0);
    // FEATURES_OK without VERSION_1 (the earlier write was dropped) is refused.
    w32(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r32(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    // Clearing bits is ignored.
    w32(&mut t, reg::STATUS, status::DRIVER);
    assert_eq!(
        r32(&mut t, reg::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    assert_eq!(record.lock().unwrap().activations, 0);
    // FAILED is always accepted.
    w32(&mut t, reg::STATUS, status::FAILED);
    assert_ne!(r32(&mut t, reg::STATUS) & status::FAILED, 0);
}

#[test]
fn unknown_features_fail_negotiation() {
    let (mut t, _, _) = transport(false);
    w32(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    w32(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w32(&mut t, reg::DRIVER_FEATURES, 1 | 0x8000);
    w32(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r32(&mut t, reg::STATUS) & status::FEATURES_OK, 0);

    let (mut t, _, _) = transport(false);
    w32(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    w32(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w32(&mut t, reg::DRIVER_FEATURES, 1);
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 5);
    w32(&mut t, reg::DRIVER_FEATURES, 1);
    w32(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r32(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
}

#[test]
fn queue_outside_memory_sets_needs_reset() {
    let (mut t, record, irq) = transport(false);
    negotiate(&mut t);
    w32(&mut t, reg::QUEUE_SEL, 0);
    w32(&mut t, reg::QUEUE_NUM, 16);
    w32(&mut t, reg::QUEUE_DESC_LOW, 0xffff_f000);
    w32(&mut t, reg::QUEUE_DESC_HIGH, 0xffff_ffff);
    w32(&mut t, reg::QUEUE_DRIVER_LOW, 0x200);
    w32(&mut t, reg::QUEUE_DEVICE_LOW, 0x400);
    w32(&mut t, reg::QUEUE_READY, 1);
    w32(&mut t, reg::STATUS, ALL_OK);
    assert!(!t.is_activated());
    assert_ne!(r32(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(record.lock().unwrap().activations, 0);
    assert_eq!(irq.count(), 1, "config-change interrupt tells the driver");
    assert_ne!(r32(&mut t, reg::INTERRUPT_STATUS) & 2, 0);
    w32(&mut t, reg::INTERRUPT_ACK, 2);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 0);
    // Reset recovers.
    w32(&mut t, reg::STATUS, 0);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
}

#[test]
fn failed_activation_sets_needs_reset() {
    let (mut t, _, _) = transport(true);
    negotiate(&mut t);
    setup_queue(&mut t, 0);
    w32(&mut t, reg::STATUS, ALL_OK);
    assert!(!t.is_activated());
    assert_ne!(r32(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn invalid_queue_sizes_and_odd_accesses_are_harmless() {
    let (mut t, _, _) = transport(false);
    negotiate(&mut t);
    w32(&mut t, reg::QUEUE_SEL, 0);
    w32(&mut t, reg::QUEUE_NUM, 3); // not a power of two
    w32(&mut t, reg::QUEUE_NUM, 1 << 20); // too big
    w32(&mut t, reg::QUEUE_SEL, u32::MAX); // no such queue
    w32(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), 0);
    // Sizes other than 4 bytes and unaligned offsets on registers.
    t.write(reg::STATUS, &[0]);
    t.write(reg::STATUS + 1, &[1, 2, 3, 4]);
    let mut one = [0xffu8; 1];
    t.read(reg::MAGIC, &mut one);
    assert_eq!(one, [0]);
    let mut eight = [0xffu8; 8];
    t.read(reg::MAGIC, &mut eight);
    assert_eq!(eight, [0; 8]);
    assert_eq!(
        r32(&mut t, reg::STATUS) & status::FEATURES_OK,
        status::FEATURES_OK
    );
}

#[test]
fn random_register_writes_never_panic() {
    let (mut t, _, _) = transport(false);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let count = AtomicUsize::new(0);
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x >> 8) % 0x140;
        let value = (x >> 32) as u32;
        let len = [1usize, 2, 4, 8][(x & 3) as usize];
        if x & 0x10 == 0 {
            t.write(offset, &value.to_le_bytes().repeat(2)[..len]);
        } else {
            let mut buf = vec![0u8; len];
            t.read(offset, &mut buf);
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(count.load(Ordering::Relaxed), 200_000);
}
