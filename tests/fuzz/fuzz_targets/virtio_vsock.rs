//! virtio-vsock on guest memory the fuzzer controls: packets of any shape on the transmit
//! queue, receive buffers of any shape, against real host Unix sockets: a host listener
//! on guest-reachable port 1234 (which never accepts) and, when the input asks, a host
//! client that connects with `CONNECT <port>` and sends bytes.
#![no_main]

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use berth_devices::virtio::vsock::Vsock;
use berth_devices::virtio::{VirtioDevice, VirtioInterrupt};
use berth_fuzz::{null_irq, Driver, Kick};
use libfuzzer_sys::fuzz_target;

/// The guest's CID.
const CID: u64 = 3;

#[derive(Arbitrary, Debug)]
struct Input {
    /// A host client's `CONNECT` line (with its port) and the bytes it sends after it.
    host_client: Option<(u32, Vec<u8>)>,
    memory: Vec<u8>,
    kicks: Vec<Kick>,
    /// Resets and restarts the device after this many kicks.
    reset_after: Option<u8>,
}

fn socket_path() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    dir.path()
        .join(format!("v{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

fuzz_target!(|input: Input| {
    let path = socket_path();
    let mut port_path = path.clone().into_os_string();
    port_path.push("_1234");
    let _host_service = UnixListener::bind(&port_path).expect("the host service listens");
    let mut vsock = Vsock::new(CID, path.clone()).expect("the device listens");
    let _client = input.host_client.as_ref().and_then(|(port, bytes)| {
        let mut s = UnixStream::connect(&path).ok()?;
        s.set_nonblocking(true).ok()?;
        let _ = writeln!(s, "CONNECT {port}");
        let _ = s.write(bytes);
        Some(s)
    });
    let mut driver = Driver::new(3, &input.memory);
    let interrupt = VirtioInterrupt::new(null_irq());
    vsock
        .activate(driver.memory(), interrupt.clone(), driver.queues())
        .expect("vsock takes three queues");
    for (i, kick) in input.kicks.iter().take(8).enumerate() {
        if input.reset_after == Some(i as u8) {
            vsock.reset();
            driver = Driver::new(3, &input.memory);
            vsock
                .activate(driver.memory(), interrupt.clone(), driver.queues())
                .expect("vsock restarts");
        }
        let q = driver.push(kick);
        vsock.queue_notify(q);
        if let Some(stray) = kick.stray_notify {
            vsock.queue_notify(stray);
        }
    }
    drop(vsock);
    let _ = std::fs::remove_file(&port_path);
});
