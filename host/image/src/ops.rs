//! Image operations over the store: commit, history, inspect, and docker-style formatting.

use std::io::Read;

use chrono::{DateTime, Utc};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor, History, Manifest, RunConfig};
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
    /// Build the guest layer image too (needs root).
    pub prepare: bool,
}

/// Adds a layer (an uncompressed tar stream with OCI whiteouts) on top of `base` with a new
/// config and history entry; stores it as an OCI image and tags it. Returns the new image.
pub fn commit(
    store: &Store,
    base: &str,
    layer: impl Read,
    opts: &CommitOptions,
) -> Result<LocalImage> {
    let _writer = store.writer_lock()?;
    let base = store.resolve(base)?;
    let mut staging = store.staging()?;
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

    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut config = base.config.clone();
    config.created = Some(now.clone());
    if opts.author.is_some() {
        config.author = opts.author.clone();
    }
    if let Some(c) = &opts.config {
        config.config = Some(c.clone());
    }
    config.rootfs.diff_ids.push(digest.clone());
    config.history.push(History {
        created: Some(now),
        created_by: Some(opts.created_by.clone()),
        author: opts.author.clone(),
        comment: opts.comment.clone(),
        empty_layer: false,
    });
    let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Malformed {
        what: "new config".into(),
        reason: e.to_string(),
    })?;
    let config_digest = staging.add_bytes(&config_bytes)?;
    // The new manifest is OCI; Docker layer media types map onto their OCI twins.
    let mut layers: Vec<Descriptor> = base
        .manifest
        .layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.media_type = match manifest::layer_compression(&l.media_type, "base layer") {
                Ok(manifest::Compression::Gzip) => manifest::OCI_LAYER_GZIP.into(),
                _ => manifest::OCI_LAYER_TAR.into(),
            };
            l
        })
        .collect();
    layers.push(Descriptor::new(
        manifest::OCI_LAYER_TAR,
        digest.clone(),
        size,
    ));
    let m = Manifest {
        schema_version: 2,
        media_type: Some(manifest::OCI_MANIFEST.into()),
        config: Descriptor::new(
            manifest::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
        annotations: None,
        extra: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&m).map_err(|e| Error::Malformed {
        what: "new manifest".into(),
        reason: e.to_string(),
    })?;
    let manifest_digest = staging.add_bytes(&manifest_bytes)?;
    if opts.prepare && !store.layer_image_path(&digest).is_file() {
        let out = staging.path_for("commit-layer.erofs");
        let usize = crate::layer::build_layer_image(&blob, &digest, staging.dir(), &out)?;
        staging.add_layer_image(digest.clone(), out, usize);
    }
    staging.commit(store)?;
    let key = match &opts.tag {
        Some(t) => t.to_string(),
        None => format!("{UNTAGGED}{manifest_digest}"),
    };
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
    store.image_by_manifest(&manifest_digest, vec![key])
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
        .map(|(d, diff)| store.layer_size(diff).unwrap_or(d.size))
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

/// docker's human durations ("5 minutes", "About an hour", "3 weeks").
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let m = d.num_minutes();
    if m == 1 {
        return "About a minute".into();
    }
    if m < 60 {
        return format!("{m} minutes");
    }
    let h = d.num_hours();
    if h == 1 {
        return "About an hour".into();
    }
    if h < 48 {
        return format!("{h} hours");
    }
    if h < 24 * 7 * 2 {
        return format!("{} days", h / 24);
    }
    if h < 24 * 30 * 2 {
        return format!("{} weeks", h / 24 / 7);
    }
    if h < 24 * 365 * 2 {
        return format!("{} months", h / 24 / 30);
    }
    format!("{} years", h / 24 / 365)
}

/// docker's human sizes: decimal units, three significant digits ("4.26MB", "0B", "12.3kB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
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
            "Layers": image.manifest.layers,
        },
        "GuestLayers": guest_layers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_look_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    #[test]
    fn durations_look_like_dockers() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(0)), "Less than a second");
        assert_eq!(human_duration(d(30)), "30 seconds");
        assert_eq!(human_duration(d(90)), "About a minute");
        assert_eq!(human_duration(d(600)), "10 minutes");
        assert_eq!(human_duration(d(3600)), "About an hour");
        assert_eq!(human_duration(d(5 * 3600)), "5 hours");
        assert_eq!(human_duration(d(3 * 86400)), "3 days");
        assert_eq!(human_duration(d(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(d(90 * 86400)), "3 months");
        assert_eq!(human_duration(d(3 * 365 * 86400)), "3 years");
    }
}
