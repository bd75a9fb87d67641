//! The seam between the virtio-fs device and the FUSE server that answers its requests.

/// Answers FUSE requests: what the device hands every request chain to.
///
/// The device calls it from one thread per queue, possibly at the same time, so it must
/// be shareable. It must never panic, whatever the bytes: they come from the guest.
pub trait FsBackend: Send + Sync {
    /// Handles one FUSE request (`fuse_in_header` and body, as the guest wrote it) and
    /// appends the reply (`fuse_out_header` and body) to `reply`, which the device hands
    /// over empty. A request that takes no reply (FORGET, BATCH_FORGET) leaves it empty.
    fn handle(&self, request: &[u8], reply: &mut Vec<u8>);
}

impl<F: berth_fuse::FileSystem> FsBackend for berth_fuse::Server<F> {
    fn handle(&self, request: &[u8], reply: &mut Vec<u8>) {
        berth_fuse::Server::handle(self, request, reply);
    }
}
