//! berth's FUSE server, the host side of virtio-fs: it decodes the FUSE requests a guest
//! sends, runs them against a [`FileSystem`], and encodes the replies. The virtio-fs
//! device (`berth-devices`) only moves request and reply bytes between the guest's
//! queues and [`Server::handle`].
//!
//! The guest is hostile: no request may panic, loop or allocate without bound, and a
//! backend confines every request to its shared folder.
//!
//! - [`abi`]: the wire protocol (7.31), bounds-checked decoding and encoding;
//! - [`server`]: [`Server`], the dispatcher;
//! - [`filesystem`]: the [`FileSystem`] trait and its types;
//! - `passthrough` (Linux only): [`PassthroughFs`], which serves one host folder.

pub mod abi;
pub mod filesystem;
#[cfg(target_os = "linux")]
pub mod passthrough;
pub mod server;

pub use filesystem::{
    Attr, Context, DirEntry, DirSink, Entry, FileSystem, Opened, SetAttr, SetTime, StatFs,
    XattrReply,
};
#[cfg(target_os = "linux")]
pub use passthrough::{PassthroughFs, PassthroughOptions};
pub use server::Server;

/// The largest WRITE (and READ) the server accepts, announced to the guest in INIT.
pub const MAX_WRITE: u32 = 1 << 20;
/// The largest request the server accepts: a WRITE of [`MAX_WRITE`] bytes with its headers.
pub const MAX_REQUEST: usize = MAX_WRITE as usize + 4096;
