//! What the container commands need from the image store: an image made ready for a
//! micro-VM (its read-only layer disks and its execution defaults), and commits.

use std::path::PathBuf;

use berth_containers::ContainerRecord;
use berth_image::{CommitOptions, LocalImage, Reference, Store};

use crate::error::{Context, Error, Result};

/// An image ready for a micro-VM.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Image ID (config digest).
    pub id: String,
    /// Read-only layer disks, lowest first.
    pub layers: Vec<PathBuf>,
    /// Each layer disk's size in bytes, in the same order.
    pub layer_bytes: Vec<u64>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default command.
    pub cmd: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory (`/` when unset).
    pub workdir: String,
    /// User, empty for root.
    pub user: String,
    /// Paths the image asks volumes for (`VOLUME`).
    pub volumes: Vec<String>,
    /// Ports the image documents (`EXPOSE`), as `PORT/PROTO`.
    pub exposed_ports: Vec<String>,
}

fn prepared(store: &Store, img: &LocalImage) -> Result<PreparedImage> {
    let layers = store
        .guest_layers(img)
        .with_context(|| format!("prepare the layers of image {}", img.id))?;
    let layer_bytes = layers
        .iter()
        .map(|l| {
            std::fs::metadata(l)
                .map(|m| m.len())
                .with_context(|| format!("read layer disk {}", l.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let c = img.config.config.clone().unwrap_or_default();
    Ok(PreparedImage {
        id: img.id.to_string(),
        layers,
        layer_bytes,
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        workdir: c
            .working_dir
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: c.user.unwrap_or_default(),
        volumes: c.volumes.unwrap_or_default().into_keys().collect(),
        exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
    })
}

/// Resolves `image` in the local store and prepares its layers; a missing image is
/// [`berth_image::Error::ImageNotFound`] (the front door decides whether to pull).
pub fn prepare(store: &Store, image: &str) -> Result<PreparedImage> {
    let img = store.resolve(image)?;
    prepared(store, &img)
}

/// The prepared image of an existing container: by ID first, else by its reference.
pub fn prepare_local(store: &Store, image_id: &str, image: &str) -> Result<PreparedImage> {
    let img = store
        .resolve(image_id)
        .or_else(|_| store.resolve(image))
        .map_err(|_| {
            Error::NotFound(format!(
                "the container's image {image} is gone from the store: pull it again"
            ))
        })?;
    prepared(store, &img)
}

/// Makes the container's changes (an OCI layer tar) a new image tagged `tag`; returns its ID.
pub fn commit(store: &Store, record: &ContainerRecord, layer: &[u8], tag: &str) -> Result<String> {
    let reference = Reference::parse(tag)
        .map_err(|e| Error::InvalidArgument(format!("invalid image name {tag}: {e}")))?;
    let img = berth_image::commit(
        store,
        &record.spec.image_id,
        layer,
        &CommitOptions {
            tag: Some(reference),
            created_by: record.spec.args.join(" "),
            author: None,
            comment: None,
            config: None,
            prepare: true,
        },
    )?;
    Ok(img.id.to_string())
}

/// Keeps the image of container `holder` out of garbage collection while it exists.
pub fn pin(store: &Store, image_id: &str, holder: &str) -> Result<()> {
    let img = store.resolve(image_id)?;
    store.pin(&img, holder)?;
    Ok(())
}

/// Releases what [`pin`] kept (the container is gone).
pub fn unpin(store: &Store, holder: &str) -> Result<()> {
    store.unpin(holder)?;
    Ok(())
}
