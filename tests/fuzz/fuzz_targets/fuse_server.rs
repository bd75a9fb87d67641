//! berth's FUSE server over the passthrough of a real (temporary) shared folder: a
//! sequence of requests with any opcode, node, credentials and body, as a hostile guest
//! sends them. After the run, nothing outside the shared folder may have changed: the
//! folder holds a symlink to a file outside it, which the guest must not reach.
#![no_main]

use std::fs;

use arbitrary::Arbitrary;
use berth_fuse::{PassthroughFs, PassthroughOptions, Server};
use libfuzzer_sys::fuzz_target;

const FALLOCATE: u32 = 43;
const COPY_FILE_RANGE: u32 = 47;
/// Largest FALLOCATE or COPY_FILE_RANGE the target lets through: the guest may fill its
/// share, but the fuzzer must not fill the machine's disk.
const MAX_ALLOC: u64 = 1 << 20;

#[derive(Arbitrary, Debug)]
struct Request {
    /// The opcode (taken modulo 64).
    opcode: u8,
    /// The node id (small, so that it often names a node the server knows).
    nodeid: u8,
    /// Whether the request claims root's credentials (else 1000:1000).
    root: bool,
    body: Vec<u8>,
    /// A header length that lies, instead of the true one.
    bad_len: Option<u32>,
    /// Truncates the request to this many bytes.
    cut: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    max_inodes: u8,
    requests: Vec<Request>,
}

/// Caps the length field at `at` in `body`.
fn clamp_u64(body: &mut [u8], at: usize) {
    if let Some(field) = body.get_mut(at..at + 8) {
        let v = u64::from_le_bytes(field.try_into().expect("8 bytes")).min(MAX_ALLOC);
        field.copy_from_slice(&v.to_le_bytes());
    }
}

/// What the guest must not change about the file outside its share.
fn fingerprint(path: &std::path::Path) -> (Vec<u8>, u32, u32, u32, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).expect("the file outside is still there");
    let data = fs::read(path).expect("the file outside is readable");
    (data, m.mode(), m.uid(), m.gid(), m.mtime())
}

fuzz_target!(|input: Input| {
    let base = tempfile::tempdir().expect("a temporary directory");
    let share = base.path().join("share");
    fs::create_dir(&share).expect("the share is made");
    fs::write(share.join("f"), b"hello\n").expect("a file");
    fs::create_dir(share.join("d")).expect("a folder");
    std::os::unix::fs::symlink("../outside", share.join("l")).expect("a symlink");
    let outside = base.path().join("outside");
    fs::write(&outside, b"not yours\n").expect("a file outside");
    let before = fingerprint(&outside);

    let opts = PassthroughOptions::default()
        .read_only(input.read_only)
        .max_inodes(usize::from(input.max_inodes).max(2))
        .max_handles(64);
    let server = Server::new(PassthroughFs::with_options(&share, opts).expect("the share opens"));
    let mut reply = Vec::new();
    for (unique, r) in input.requests.iter().take(32).enumerate() {
        let opcode = u32::from(r.opcode % 64);
        let mut body = r.body.clone();
        match opcode {
            FALLOCATE => clamp_u64(&mut body, 16),
            COPY_FILE_RANGE => clamp_u64(&mut body, 40),
            _ => {}
        }
        let len = r.bad_len.unwrap_or((40 + body.len()) as u32);
        let id: u32 = if r.root { 0 } else { 1000 };
        let mut msg = Vec::with_capacity(40 + body.len());
        msg.extend_from_slice(&len.to_le_bytes());
        msg.extend_from_slice(&opcode.to_le_bytes());
        msg.extend_from_slice(&(unique as u64 + 1).to_le_bytes());
        msg.extend_from_slice(&u64::from(r.nodeid).to_le_bytes());
        msg.extend_from_slice(&id.to_le_bytes());
        msg.extend_from_slice(&id.to_le_bytes());
        msg.extend_from_slice(&4242u32.to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        msg.extend_from_slice(&body);
        if let Some(cut) = r.cut {
            msg.truncate(usize::from(cut));
        }
        reply.clear();
        server.handle(&msg, &mut reply);
        if let Some(header) = reply.get(..4) {
            let said = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
            assert_eq!(said, reply.len(), "a reply's header states its length");
        }
    }
    drop(server);

    // Confinement: the folder around the share is as it was.
    let mut names: Vec<_> = fs::read_dir(base.path())
        .expect("the base folder")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "share"],
        "the guest changed the share's parent"
    );
    assert_eq!(
        fingerprint(&outside),
        before,
        "the guest changed a file outside its share"
    );
});
