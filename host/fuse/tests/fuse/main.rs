//! Drives `Server<PassthroughFs>` with real FUSE request bytes against temporary folders.
#![cfg(target_os = "linux")]

mod client;
mod escape;
mod malformed;
mod ops;
mod read_only;
