//! berth's image side: the OCI image store, the registry client, offline archives, and
//! guest-ready layer images.
//!
//! * [`Store`]: a content-addressed store under `$BERTH_ROOT` (default
//!   `$XDG_DATA_HOME/berth`). Blobs are verified by sha256 while they are written to a
//!   staging area and renamed into place only when an operation has all of them; file locks
//!   make concurrent pulls safe; unreferenced blobs are collected on `rmi` and `image prune`.
//! * [`Client`]: pull and push over the distribution API (OCI and Docker v2 schema 2
//!   manifests, indexes and manifest lists, platform selection, Bearer/Basic auth with
//!   credentials from `berth login` and `~/.docker/config.json`).
//! * [`archive`]: `load` and `save` of `docker save` and OCI-layout archives.
//! * [`layer`]: every layer becomes a read-only **erofs** image once, keyed by its diff ID,
//!   shared by all VMs ([`Store::guest_layers`]), written from the layer tar in userspace
//!   by [`erofs`] (no root, no extraction, no `mkfs.erofs`).
//!
//! # Why erofs for layers
//!
//! The guest stacks layers with overlayfs; each lower layer is a read-only block device.
//! erofs is built for exactly this (read-only, compact metadata, no journal, no free-space
//! maps), the guest kernel has it built in, and its format is simple enough to write in one
//! pass straight from the tar without mounting anything or reserving a size up front, where
//! ext4 needs a size guess, wastes space on its journal and inode tables, and would be
//! writable by a buggy guest.
//! Images are left uncompressed: layer blobs on the host are already compressed, the
//! images are made once, and uncompressed erofs is the fastest to build and to read.
//! Whiteouts are stored in overlayfs' own form (0:0 character devices and
//! `trusted.overlay.opaque=y`), so the guest mounts layers without converting anything.
//!
//! # Library API for `run` and `commit`
//!
//! ```no_run
//! # async fn demo() -> berth_image::Result<()> {
//! use berth_image::{Client, ClientOptions, Store};
//! let store = Store::open_default()?;
//! let client = Client::new(ClientOptions::default())?;
//! let image = berth_image::ensure_pulled(&store, &client, "alpine").await?;
//! let disks = store.guest_layers(&image)?; // lowest first, read-only erofs images
//! # let _ = disks; Ok(()) }
//! ```

pub mod archive;
pub mod auth;
pub mod credhelper;
pub mod erofs;
pub mod error;
pub mod layer;
pub mod manifest;
pub mod ops;
pub mod reference;
pub mod registry;
pub mod store;
pub mod tree;

pub use error::{Error, Result};
pub use manifest::{ImageConfig, Platform, RunConfig};
pub use ops::{commit, derive, Base, CommitOptions, DeriveOptions, Keep};
pub use reference::{Digest, Reference};
pub use registry::{Client, ClientOptions, PullReport, PushReport};
pub use store::{LocalImage, Store, BUILD_CACHE_PIN};

/// The registry name of images that exist only locally (the offline default image).
pub const LOCAL_REGISTRY: &str = "berth.local";

/// Resolves `image` locally (a reference or an image-ID prefix); when it is missing and is
/// a reference, pulls it. Returns the local image (config plus ordered layers).
///
/// `berth.local/...` images are never pulled: when one is missing and `BERTH_DEFAULT_IMAGE`
/// names an archive (scripts/build-default-image.sh prints one), that archive is loaded.
pub async fn ensure_pulled(store: &Store, client: &Client, image: &str) -> Result<LocalImage> {
    match store.resolve(image) {
        Ok(img) => Ok(img),
        Err(Error::ImageNotFound { .. }) => {
            let reference = Reference::parse(image)?;
            if reference.registry == LOCAL_REGISTRY {
                let archive = std::env::var_os("BERTH_DEFAULT_IMAGE")
                    .map(std::path::PathBuf::from)
                    .filter(|p| p.is_file())
                    .ok_or_else(|| Error::ImageNotFound {
                        reference: image.to_string(),
                    })?;
                archive::load(
                    store,
                    &archive,
                    &client.options().platform,
                    client.options().prepare_layers,
                )?;
                return store.resolve(image);
            }
            Ok(client.pull(store, &reference).await?.image)
        }
        Err(e) => Err(e),
    }
}
