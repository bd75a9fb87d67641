//! What the container commands need from the image store: an image made ready for a
//! micro-VM (its read-only layer disks and its execution defaults), and commits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_containers::ContainerRecord;
use berth_image::{ClientOptions, CommitOptions, LocalImage, Reference, Store};

/// An image ready for a micro-VM.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Image ID (config digest).
    pub id: String,
    /// Read-only layer disks, lowest first.
    pub layers: Vec<PathBuf>,
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
}

fn prepared(store: &Store, img: &LocalImage) -> Result<PreparedImage> {
    let layers = store
        .guest_layers(img)
        .with_context(|| format!("prepare the layers of image {}", img.id))?;
    let c = img.config.config.clone().unwrap_or_default();
    Ok(PreparedImage {
        id: img.id.to_string(),
        layers,
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        workdir: c
            .working_dir
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: c.user.unwrap_or_default(),
    })
}

/// Resolves `image` locally, pulling it when it is missing, and prepares its layers.
pub async fn prepare(root: &Path, image: &str) -> Result<PreparedImage> {
    let store = Store::open(root)?;
    let img = match store.resolve(image) {
        Ok(img) => img,
        Err(berth_image::Error::ImageNotFound { .. }) => {
            eprintln!("Unable to find image '{image}' locally");
            let client = berth_image::Client::new(ClientOptions::default())?;
            berth_image::ensure_pulled(&store, &client, image).await?
        }
        Err(e) => return Err(e.into()),
    };
    prepared(&store, &img)
}

/// The prepared image of an existing container: by ID first, else by its reference.
pub fn prepare_local(root: &Path, image_id: &str, image: &str) -> Result<PreparedImage> {
    let store = Store::open(root)?;
    let img = store
        .resolve(image_id)
        .or_else(|_| store.resolve(image))
        .with_context(|| format!("the container's image {image} is gone from the store"))?;
    prepared(&store, &img)
}

/// `inspect` of an image, for `berth inspect NAME` when NAME is no container.
pub fn inspect_json(root: &Path, name: &str) -> Result<serde_json::Value> {
    let store = Store::open(root)?;
    let img = store.resolve(name)?;
    Ok(berth_image::ops::inspect(&store, &img)?)
}

/// Makes the container's changes (an OCI layer tar) a new image tagged `tag`; returns its ID.
pub fn commit(root: &Path, record: &ContainerRecord, layer: &[u8], tag: &str) -> Result<String> {
    let store = Store::open(root)?;
    let reference = Reference::parse(tag).with_context(|| format!("invalid image name {tag}"))?;
    let img = berth_image::commit(
        &store,
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
pub fn pin(root: &Path, image_id: &str, holder: &str) -> Result<()> {
    let store = Store::open(root)?;
    let img = store.resolve(image_id)?;
    store.pin(&img, holder)?;
    Ok(())
}

/// Releases what [`pin`] kept (the container is gone).
pub fn unpin(root: &Path, holder: &str) -> Result<()> {
    Store::open(root)?.unpin(holder)?;
    Ok(())
}
