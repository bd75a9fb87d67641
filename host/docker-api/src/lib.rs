//! The Docker Engine API, served over a Unix socket, so that the `docker`
//! CLI, docker-compose and the Docker SDKs can drive a container host.
//!
//! This crate knows nothing about how containers run: it speaks HTTP and
//! Docker's JSON on one side and the [`Backend`] trait (with the plain data
//! types in [`backend`]) on the other. A host implements [`Backend`] and
//! calls [`serve`] (or [`Server::bind`] + [`Server::run`]).
//!
//! Served: `/_ping`, `/version`, `/info`, `/events`, containers (create,
//! list, inspect, start, stop, kill, restart, wait, resize, attach, logs,
//! top, stats, archive, remove; binds, volumes and tmpfs mounts), exec,
//! images (list, inspect, pull, push, tag, remove, history, save, load),
//! volumes (list, create, inspect, remove, prune) and user-defined networks
//! (list, create, inspect, remove, prune, connect, disconnect). API versions
//! 1.24 to 1.51, with or without the `/v1.NN` prefix. Everything else is
//! Docker's 404 `page not found`.
//!
//! Module map: [`backend`] (the trait), [`types`] (Docker's JSON),
//! [`server`] (socket, peer check), [`router`] (paths, versions, limits),
//! [`hijack`] (attach/exec streams), [`filters`], [`error`], and one module
//! of handlers per area ([`containers`], [`exec`], [`images`], [`networks`],
//! [`system`], [`volumes`]).

pub mod backend;
pub mod containers;
pub mod error;
pub mod exec;
pub mod filters;
pub mod hijack;
pub mod images;
pub mod networks;
pub mod request;
pub mod response;
pub mod router;
/// Unix hosts only: the API is served on a Unix socket (docker on Windows uses a named
/// pipe, which berth does not serve yet).
#[cfg(unix)]
pub mod server;
pub mod system;
pub mod time;
pub mod types;
pub mod volumes;

pub use backend::*;
pub use error::{ApiError, ServeError};
pub use router::Limits;
#[cfg(unix)]
pub use server::{serve, serve_listener, Server};
