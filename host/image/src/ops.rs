//! Image operations over the store: commit, history, inspect, and docker-style formatting.

use std::io::Read;

use chrono::{DateTime, Utc};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor, History, MediaType, RunConfig};
use crate::reference::{Digest, Reference};
use crate::store::{LocalImage, RefEntry, Store, UNTAGGED};

/// What `commit` records in the new image.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The tag for the new image (untagged when `None`).
    pub tag: Option<Reference>,
    /// History `created_by` (docker puts the container's command here).
    pub created_by: String,
    /// Author.
    pub author: Option<String>,
    /// Commit message.
    pub comment: Option<String>,
    /// New execution defaults; the base image's are kept when `None`.
    pub config: Option<RunConfig>,
    /// Build the guest layer image too.
    pub prepare: bool,
}

/// Adds a layer (an uncompressed tar stream with OCI whiteouts) on top of `base` with a new
/// config and history entry; stores it as an OCI image and tags it. Returns the new image.
pub fn commit(
    store: &Store,
    base: &str,
    mut layer: impl Read,
    opts: &CommitOptions,
) -> Result<LocalImage> {
    let base = store.resolve(base)?;
    derive(
        store,
        Base::Image(&base),
        Some(&mut layer),
        &DeriveOptions {
            created_by: opts.created_by.clone(),
            author: opts.author.clone(),
            comment: opts.comment.clone(),
            config: opts.config.clone(),
            keep: match &opts.tag {
                Some(t) => Keep::Tag(t.clone()),
                None => Keep::Untagged,
            },
            prepare: opts.prepare,
        },
    )
}

/// What an image is derived from.
#[derive(Debug, Clone, Copy)]
pub enum Base<'a> {
    /// An image in the store.
    Image(&'a LocalImage),
    /// Nothing (`FROM scratch`): no layers, no config, for this platform.
    Scratch(&'a manifest::Platform),
}

/// How a derived image is kept from garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// By an untagged reference (`<none>`), as `commit` without a tag.
    Untagged,
    /// By this tag.
    Tag(Reference),
    /// By a pin with this holder name only, so that it is listed nowhere (a build's cache).
    Pin(String),
}

/// What `derive` records in the new image.
#[derive(Debug, Clone)]
pub struct DeriveOptions {
    /// History `created_by`: the command or instruction that made the step.
    pub created_by: String,
    /// Author.
    pub author: Option<String>,
    /// History comment.
    pub comment: Option<String>,
    /// New execution defaults; the base image's are kept when `None`.
    pub config: Option<RunConfig>,
    /// How the new image is kept.
    pub keep: Keep,
    /// Build the guest layer image too.
    pub prepare: bool,
}

/// Makes a new image from `base`: with `layer` (an uncompressed tar stream with OCI
/// whiteouts) on top, or, without one, as a step that changes only the config (an
/// `empty_layer` history entry, as docker marks `ENV` or `CMD`). Returns the new image.
pub fn derive(
    store: &Store,
    base: Base<'_>,
    layer: Option<&mut dyn Read>,
    opts: &DeriveOptions,
) -> Result<LocalImage> {
    let _writer = store.writer_lock()?;
    let mut staging = store.staging()?;
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let (mut config, mut layers) = match base {
        Base::Image(img) => {
            // The new manifest is OCI; Docker layer media types map onto their OCI twins.
            let layers: Vec<Descriptor> = img
                .manifest
                .layers()
                .iter()
                .map(|l| {
                    let mut l = l.clone();
                    let compression = manifest::layer_compression(l.media_type(), "base layer")
                        .unwrap_or(manifest::Compression::None);
                    l.set_media_type(compression.oci_media_type());
                    l
                })
                .collect();
            (img.config.clone(), layers)
        }
        Base::Scratch(platform) => (
            manifest::ImageConfig {
                created: None,
                author: None,
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                config: None,
                rootfs: manifest::RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                history: Vec::new(),
                extra: Default::default(),
            },
            Vec::new(),
        ),
    };
    config.created = Some(now.clone());
    if opts.author.is_some() {
        config.author = opts.author.clone();
    }
    if let Some(c) = &opts.config {
        config.config = Some(c.clone());
    }
    let mut new_layer = None;
    if let Some(layer) = layer {
        // Stream the layer in, hashing it: uncompressed, so its digest is its diff ID.
        let tmp = staging.path_for("commit-layer");
        let (digest, size) = {
            let mut f = std::fs::File::create(&tmp).at(&tmp)?;
            let mut hashing = crate::layer::HashingReader::new(layer);
            std::io::copy(&mut hashing, &mut f).at(&tmp)?;
            f.sync_all().at(&tmp)?;
            hashing.finish()
        };
        let blob = staging.path_for(&format!("blob-{}", digest.hex()));
        std::fs::rename(&tmp, &blob).at(&blob)?;
        staging.add_verified_blob(digest.clone(), blob.clone());
        config.rootfs.diff_ids.push(digest.clone());
        layers.push(Descriptor::new(MediaType::ImageLayer, size, digest.clone()));
        new_layer = Some((digest, blob));
    }
    config.history.push(History {
        created: Some(now),
        created_by: Some(opts.created_by.clone()),
        author: opts.author.clone(),
        comment: opts.comment.clone(),
        empty_layer: new_layer.is_none(),
    });
    let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Malformed {
        what: "new config".into(),
        reason: e.to_string(),
    })?;
    let config_digest = staging.add_bytes(&config_bytes)?;
    let m = manifest::oci_manifest(config_digest, config_bytes.len() as u64, layers)?;
    let manifest_bytes = serde_json::to_vec(&m).map_err(|e| Error::Malformed {
        what: "new manifest".into(),
        reason: e.to_string(),
    })?;
    let manifest_digest = staging.add_bytes(&manifest_bytes)?;
    if let Some((digest, blob)) = &new_layer {
        if opts.prepare && !store.layer_image_path(digest).is_file() {
            let out = staging.path_for("commit-layer.erofs");
            let usize = crate::layer::build_layer_image(blob, digest, &out)?;
            staging.add_layer_image(digest.clone(), out, usize);
        }
    }
    // No garbage collection runs between the commit and the reference or pin below: it
    // waits on the writer lock this holds.
    staging.commit(store)?;
    let key = match &opts.keep {
        Keep::Tag(t) => Some(t.to_string()),
        Keep::Untagged => Some(format!("{UNTAGGED}{manifest_digest}")),
        Keep::Pin(holder) => {
            store.update_repositories(|r| {
                r.pins.insert(holder.clone(), manifest_digest.clone());
                Ok(())
            })?;
            None
        }
    };
    if let Some(key) = &key {
        store.set_refs(
            &[(
                key.clone(),
                RefEntry {
                    manifest: manifest_digest.clone(),
                    index: None,
                },
            )],
            &[],
        )?;
    }
    store.image_by_manifest(&manifest_digest, key.into_iter().collect())
}

/// One row of `history`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// The image ID on the newest row, `None` (shown `<missing>`) below, like docker.
    pub id: Option<Digest>,
    /// When.
    pub created: Option<DateTime<Utc>>,
    /// The command that made the step.
    pub created_by: String,
    /// The layer's size (uncompressed when known), 0 for steps without a layer.
    pub size: u64,
    /// Comment.
    pub comment: String,
}

/// The history of an image, newest first, each step with its layer's size.
pub fn history(store: &Store, image: &LocalImage) -> Vec<HistoryRow> {
    let layer_sizes: Vec<u64> = image
        .layers()
        .map(|(d, diff)| store.layer_size(diff).unwrap_or(d.size()))
        .collect();
    let mut rows = Vec::new();
    let mut next_layer = 0;
    let entries: Vec<History> = if image.config.history.is_empty() {
        // No history recorded: one anonymous step per layer.
        (0..layer_sizes.len()).map(|_| History::default()).collect()
    } else {
        image.config.history.clone()
    };
    for h in &entries {
        let size = if h.empty_layer {
            0
        } else {
            let s = layer_sizes.get(next_layer).copied().unwrap_or(0);
            next_layer += 1;
            s
        };
        rows.push(HistoryRow {
            id: None,
            created: h
                .created
                .as_deref()
                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map(|d| d.with_timezone(&Utc)),
            created_by: h.created_by.clone().unwrap_or_default(),
            size,
            comment: h.comment.clone().unwrap_or_default(),
        });
    }
    rows.reverse();
    if let Some(first) = rows.first_mut() {
        first.id = Some(image.id.clone());
    }
    rows
}

/// The docker-like `inspect` document of an image.
pub fn inspect(store: &Store, image: &LocalImage) -> Result<serde_json::Value> {
    let repos = store.repositories()?;
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for k in &image.refs {
        if k.starts_with(UNTAGGED) {
            continue;
        }
        let Ok(r) = Reference::parse(k) else { continue };
        if r.digest.is_none() {
            repo_tags.push(r.familiar());
        }
        let pinned = repos
            .refs
            .get(k)
            .and_then(|e| e.index.clone())
            .unwrap_or_else(|| image.manifest_digest.clone());
        let d = format!(
            "{}@{}",
            Reference {
                tag: None,
                digest: None,
                ..r.clone()
            }
            .familiar(),
            pinned
        );
        if !repo_digests.contains(&d) {
            repo_digests.push(d);
        }
    }
    let guest_layers: Vec<String> = image
        .layers()
        .map(|(_, diff)| store.layer_image_path(diff))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    let c = &image.config;
    Ok(serde_json::json!({
        "Id": image.id,
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Created": c.created,
        "Author": c.author.clone().unwrap_or_default(),
        "Architecture": c.architecture,
        "Os": c.os,
        "Variant": c.variant,
        "Config": c.config,
        "RootFS": {"Type": "layers", "Layers": c.rootfs.diff_ids},
        "Size": image.size(),
        "History": c.history,
        "Manifest": {
            "Digest": image.manifest_digest,
            "MediaType": image.manifest_media_type,
            "Layers": image.manifest.layers(),
        },
        "GuestLayers": guest_layers,
    }))
}
