//! virtio-blk requests on guest memory the fuzzer controls: chains of any shape, raw
//! descriptors, corrupt rings, against a small read-write or read-only disk.
#![no_main]

use std::io::Write;

use arbitrary::Arbitrary;
use berth_devices::virtio::block::Block;
use berth_devices::virtio::{VirtioDevice, VirtioInterrupt};
use berth_fuzz::{null_irq, Driver, Kick};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    /// Disk size in sectors, 1 to 8.
    sectors: u8,
    disk: Vec<u8>,
    memory: Vec<u8>,
    kicks: Vec<Kick>,
}

fuzz_target!(|input: Input| {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary disk image");
    let size = (usize::from(input.sectors % 8) + 1) * 512;
    let mut content = input.disk;
    content.resize(size, 0);
    file.write_all(&content).expect("the disk image is written");
    let mut block = Block::new(file.path(), input.read_only, "berth-fuzz-disk").expect("a disk");
    let mut driver = Driver::new(1, &input.memory);
    let interrupt = VirtioInterrupt::new(null_irq());
    block
        .activate(driver.memory(), interrupt, driver.queues())
        .expect("virtio-blk takes one queue");
    for kick in input.kicks.iter().take(8) {
        let q = driver.push(kick);
        block.queue_notify(q);
        if let Some(stray) = kick.stray_notify {
            block.queue_notify(stray);
        }
    }
    block.reset();
});
