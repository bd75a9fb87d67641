//! The virtio-mmio register interface: any sequence of reads and writes (any offset,
//! size and value), with helpers that negotiate and set queues up the way a driver does
//! so that the fuzzer gets past DRIVER_OK, in front of each of berth's virtio devices
//! (blk, rng, fs, net, vsock), on guest memory the fuzzer controls.
#![no_main]

use std::io::Write;
use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_devices::bus::BusDevice;
use berth_devices::virtio::block::Block;
use berth_devices::virtio::fs::Fs;
use berth_devices::virtio::mmio::MmioTransport;
use berth_devices::virtio::net::Net;
use berth_devices::virtio::rng::Rng;
use berth_devices::virtio::vsock::Vsock;
use berth_devices::virtio::VirtioDevice;
use berth_fuzz::{null_irq, Driver, EchoFs, Kick, LoopNet, QUEUE_SIZE};
use libfuzzer_sys::fuzz_target;

/// The registers a driver writes (virtio 1.2, 4.2.2).
const REGISTERS: [u64; 20] = [
    0x014, 0x020, 0x024, 0x030, 0x038, 0x044, 0x050, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094,
    0x0a0, 0x0a4, 0x010, 0x034, 0x060, 0x0fc, 0x100,
];

#[derive(Arbitrary, Debug)]
enum DeviceKind {
    Block { read_only: bool },
    Rng,
    Fs,
    Net,
    Vsock,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A read of any offset and size.
    Read { offset: u16, len: u8 },
    /// A write of any offset and bytes.
    Write { offset: u16, data: Vec<u8> },
    /// A 32-bit write of one of the driver's registers.
    Reg { which: u8, value: u32 },
    /// ACKNOWLEDGE, DRIVER, the two feature words, FEATURES_OK.
    Negotiate { low: u32, high: u32 },
    /// Sets queue `index` up over the fuzz driver's rings and marks it ready.
    SetupQueue { index: u8 },
    /// DRIVER_OK.
    DriverOk,
    /// The guest makes chains available and writes QueueNotify.
    Kick(Kick),
}

fn w32(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn device(kind: &DeviceKind, disk: &tempfile::NamedTempFile) -> Option<Box<dyn VirtioDevice>> {
    Some(match kind {
        DeviceKind::Block { read_only } => {
            Box::new(Block::new(disk.path(), *read_only, "berth-fuzz").ok()?)
        }
        DeviceKind::Rng => Box::new(Rng::new()),
        DeviceKind::Fs => Box::new(Fs::new("fuzz", Arc::new(EchoFs)).ok()?),
        DeviceKind::Net => {
            Box::new(Net::new([0x52, 0x54, 0, 1, 2, 3], 1500, Box::new(LoopNet::default())).ok()?)
        }
        DeviceKind::Vsock => {
            let dir = disk.path().with_extension("vsock");
            Box::new(Vsock::new(3, dir).ok()?)
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    device: DeviceKind,
    memory: Vec<u8>,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mut disk = tempfile::NamedTempFile::new().expect("a temporary disk image");
    disk.write_all(&[0x5a; 2048])
        .expect("the disk image is written");
    let Some(dev) = device(&input.device, &disk) else {
        return;
    };
    let queues = dev.queue_max_sizes().len();
    let mut driver = Driver::new(queues, &input.memory);
    let mut t = MmioTransport::new(dev, driver.memory(), null_irq());
    for op in input.ops.iter().take(64) {
        match op {
            Op::Read { offset, len } => {
                let mut data = vec![0u8; usize::from(*len % 9)];
                t.read(u64::from(*offset), &mut data);
            }
            Op::Write { offset, data } => {
                t.write(u64::from(*offset), &data[..data.len().min(8)]);
            }
            Op::Reg { which, value } => {
                let offset = REGISTERS[usize::from(*which) % REGISTERS.len()];
                w32(&mut t, offset, *value);
            }
            Op::Negotiate { low, high } => {
                w32(&mut t, 0x070, 1);
                w32(&mut t, 0x070, 3);
                w32(&mut t, 0x024, 0);
                w32(&mut t, 0x020, *low);
                w32(&mut t, 0x024, 1);
                w32(&mut t, 0x020, *high);
                w32(&mut t, 0x070, 0xb);
            }
            Op::SetupQueue { index } => {
                let q = usize::from(*index) % queues.max(1);
                let (desc, avail, used) = Driver::rings(q);
                w32(&mut t, 0x030, q as u32);
                w32(&mut t, 0x038, u32::from(QUEUE_SIZE));
                w32(&mut t, 0x080, desc as u32);
                w32(&mut t, 0x084, 0);
                w32(&mut t, 0x090, avail as u32);
                w32(&mut t, 0x094, 0);
                w32(&mut t, 0x0a0, used as u32);
                w32(&mut t, 0x0a4, 0);
                w32(&mut t, 0x044, 1);
            }
            Op::DriverOk => w32(&mut t, 0x070, 0xf),
            Op::Kick(kick) => {
                let q = driver.push(kick);
                w32(&mut t, 0x050, kick.stray_notify.unwrap_or(q));
            }
        }
    }
    // A reset stops the device before its memory goes away.
    w32(&mut t, 0x070, 0);
});
