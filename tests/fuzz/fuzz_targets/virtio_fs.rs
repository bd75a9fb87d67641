//! virtio-fs on guest memory the fuzzer controls: the device gathers each chain's
//! request, hands it to a backend whose replies have lengths the request chose, and
//! scatters the reply back; on both the high-priority and the request queue.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_devices::virtio::fs::Fs;
use berth_devices::virtio::{VirtioDevice, VirtioInterrupt};
use berth_fuzz::{null_irq, Driver, EchoFs, Kick};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    memory: Vec<u8>,
    kicks: Vec<Kick>,
    /// Resets and restarts the device after this many kicks.
    reset_after: Option<u8>,
}

fuzz_target!(|input: Input| {
    let mut fs = Fs::new("fuzz", Arc::new(EchoFs)).expect("a valid tag");
    let mut driver = Driver::new(2, &input.memory);
    let interrupt = VirtioInterrupt::new(null_irq());
    fs.activate(driver.memory(), interrupt.clone(), driver.queues())
        .expect("virtio-fs takes two queues");
    for (i, kick) in input.kicks.iter().take(8).enumerate() {
        if input.reset_after == Some(i as u8) {
            fs.reset();
            driver = Driver::new(2, &input.memory);
            fs.activate(driver.memory(), interrupt.clone(), driver.queues())
                .expect("virtio-fs restarts");
        }
        let q = driver.push(kick);
        fs.queue_notify(q);
        if let Some(stray) = kick.stray_notify {
            fs.queue_notify(stray);
        }
    }
    fs.reset();
});
