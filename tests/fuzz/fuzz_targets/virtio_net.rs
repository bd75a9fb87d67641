//! virtio-net on guest memory the fuzzer controls: transmit chains of any shape go to a
//! backend that loops them back (with frames of the fuzzer's own, of any length) into
//! whatever receive buffers the guest posted.
#![no_main]

use arbitrary::Arbitrary;
use berth_devices::virtio::net::Net;
use berth_devices::virtio::{VirtioDevice, VirtioInterrupt};
use berth_fuzz::{null_irq, Driver, Kick, LoopNet};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    mtu: u16,
    /// Frames the backend has for the guest before it sends anything.
    frames: Vec<Vec<u8>>,
    memory: Vec<u8>,
    kicks: Vec<Kick>,
    /// Resets and restarts the device after this many kicks.
    reset_after: Option<u8>,
}

fuzz_target!(|input: Input| {
    let backend = LoopNet::with_frames(input.frames);
    let mtu = input.mtu.clamp(68, 9000);
    let Ok(mut net) = Net::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], mtu, Box::new(backend)) else {
        return;
    };
    let mut driver = Driver::new(2, &input.memory);
    let interrupt = VirtioInterrupt::new(null_irq());
    net.activate(driver.memory(), interrupt.clone(), driver.queues())
        .expect("virtio-net takes two queues");
    for (i, kick) in input.kicks.iter().take(8).enumerate() {
        if input.reset_after == Some(i as u8) {
            net.reset();
            driver = Driver::new(2, &input.memory);
            net.activate(driver.memory(), interrupt.clone(), driver.queues())
                .expect("virtio-net restarts");
        }
        let q = driver.push(kick);
        net.queue_notify(q);
        if let Some(stray) = kick.stray_notify {
            net.queue_notify(stray);
        }
    }
    net.reset();
});
