//! Images: the local store as docker's summaries and details, and pull, push, tag,
//! remove, history, save and load through berth-image, the store the CLI uses too.

use std::io::Write;

use berth_docker_api::{
    BackendError, ByteStream, HistoryEntry, ImageConfig, ImageDetails, ImageSummary, ProgressSink,
    RemovedImage,
};
use berth_engine::Engine;
use berth_image::registry::BlobPush;
use berth_image::{ClientOptions, LocalImage, Platform, Reference};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::{blocking, image_error};

/// Seconds since the epoch of an RFC 3339 time, 0 when unset or unreadable.
fn created_secs(created: Option<&str>) -> i64 {
    created
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn digests(img: &LocalImage) -> Vec<String> {
    img.refs
        .iter()
        .filter(|r| r.contains('@'))
        .cloned()
        .collect()
}

/// `GET /images/json`.
pub async fn list(engine: &Engine) -> Result<Vec<ImageSummary>, BackendError> {
    let store = engine.images().clone();
    blocking(move || {
        let images = store.list().map_err(image_error)?;
        Ok(images
            .iter()
            .map(|img| ImageSummary {
                id: img.id.to_string(),
                parent_id: String::new(),
                repo_tags: img.tags(),
                repo_digests: digests(img),
                created_secs: created_secs(img.config.created.as_deref()),
                size: img.size() as i64,
                labels: img
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default(),
                containers: -1,
            })
            .collect())
    })
    .await
}

/// `GET /images/{name}/json`.
pub async fn inspect(engine: &Engine, name: &str) -> Result<ImageDetails, BackendError> {
    let store = engine.images().clone();
    let name = name.to_string();
    blocking(move || {
        let img = store.resolve(&name).map_err(|e| match e {
            berth_image::Error::ImageNotFound { .. } => {
                BackendError::NotFound(format!("No such image: {name}"))
            }
            e => image_error(e),
        })?;
        let c = img.config.config.clone().unwrap_or_default();
        fn keys<V>(m: &Option<std::collections::BTreeMap<String, V>>) -> Vec<String> {
            m.iter().flat_map(|m| m.keys().cloned()).collect()
        }
        Ok(ImageDetails {
            id: img.id.to_string(),
            repo_tags: img.tags(),
            repo_digests: digests(&img),
            parent: String::new(),
            comment: String::new(),
            created_ns: (created_secs(img.config.created.as_deref()).max(0) as u64) * 1_000_000_000,
            author: img.config.author.clone().unwrap_or_default(),
            config: ImageConfig {
                cmd: c.cmd.clone(),
                entrypoint: c.entrypoint.clone(),
                env: c.env.clone().unwrap_or_default(),
                working_dir: c.working_dir.clone().unwrap_or_default(),
                user: c.user.clone().unwrap_or_default(),
                labels: c.labels.clone().unwrap_or_default(),
                exposed_ports: keys(&c.exposed_ports),
                volumes: keys(&c.volumes),
                stop_signal: c.stop_signal.clone(),
            },
            architecture: img.config.architecture.clone(),
            os: img.config.os.clone(),
            size: img.size() as i64,
            layers: img
                .config
                .rootfs
                .diff_ids
                .iter()
                .map(|d| d.to_string())
                .collect(),
        })
    })
    .await
}

fn client() -> Result<berth_image::Client, BackendError> {
    berth_image::Client::new(ClientOptions {
        progress: false,
        ..ClientOptions::default()
    })
    .map_err(image_error)
}

fn parse(reference: &str) -> Result<Reference, BackendError> {
    Reference::parse(reference).map_err(|e| BackendError::InvalidArgument(e.to_string()))
}

/// Reports `status` for one layer, named by its short digest as docker does.
fn layer_status(progress: &ProgressSink, layer: &berth_image::Digest, status: String) {
    progress.send(berth_docker_api::ProgressMessage {
        status,
        id: Some(layer.short().to_string()),
        ..Default::default()
    });
}

/// `POST /images/create?fromImage=`: from the registry the reference names; berth's own
/// `berth.local` images come from the project's archive.
pub async fn pull(
    engine: &Engine,
    reference: &str,
    progress: &ProgressSink,
) -> Result<(), BackendError> {
    let store = engine.images().clone();
    let parsed = parse(reference)?;
    let client = client()?;
    progress.status(format!(
        "{}: Pulling from {}",
        parsed.tag.as_deref().unwrap_or("latest"),
        parsed.name()
    ));
    if parsed.registry == berth_image::LOCAL_REGISTRY {
        berth_image::ensure_pulled(&store, &client, reference)
            .await
            .map_err(image_error)?;
    } else {
        let report = client.pull(&store, &parsed).await.map_err(image_error)?;
        for d in &report.downloaded {
            layer_status(progress, d, "Pull complete".into());
        }
        progress.status(format!("Digest: {}", report.digest));
    }
    progress.status(format!(
        "Status: Downloaded newer image for {}",
        parsed.familiar()
    ));
    Ok(())
}

/// `POST /images/{name}/push`.
pub async fn push(
    engine: &Engine,
    reference: &str,
    progress: &ProgressSink,
) -> Result<(), BackendError> {
    let store = engine.images().clone();
    let parsed = parse(reference)?;
    progress.status(format!("The push refers to repository [{}]", parsed.name()));
    let report = client()?
        .push(&store, reference, None)
        .await
        .map_err(image_error)?;
    for (d, how) in &report.blobs {
        let status = match how {
            BlobPush::Exists => "Layer already exists".to_string(),
            BlobPush::Mounted(from) => format!("Mounted from {from}"),
            BlobPush::Pushed => "Pushed".to_string(),
        };
        layer_status(progress, d, status);
    }
    progress.status(format!(
        "{}: digest: {} size: {}",
        report.target.tag.as_deref().unwrap_or("latest"),
        report.manifest_digest,
        report.manifest_size
    ));
    Ok(())
}

/// `POST /images/{name}/tag`.
pub async fn tag(engine: &Engine, source: &str, repo: &str, tag: &str) -> Result<(), BackendError> {
    let store = engine.images().clone();
    let target = if tag.is_empty() {
        repo.to_string()
    } else {
        format!("{repo}:{tag}")
    };
    let source = source.to_string();
    blocking(move || store.tag(&source, &target).map(|_| ()).map_err(image_error)).await
}

/// `DELETE /images/{name}`.
pub async fn remove(
    engine: &Engine,
    name: &str,
    force: bool,
) -> Result<Vec<RemovedImage>, BackendError> {
    let store = engine.images().clone();
    let name = name.to_string();
    blocking(move || {
        let id = store.resolve(&name).map_err(image_error)?.id.to_string();
        let (refs, _) = store.remove(&name, force).map_err(image_error)?;
        let mut out: Vec<RemovedImage> = refs.into_iter().map(RemovedImage::Untagged).collect();
        if store.resolve(&id).is_err() {
            out.push(RemovedImage::Deleted(id));
        }
        Ok(out)
    })
    .await
}

/// `GET /images/{name}/history`.
pub async fn history(engine: &Engine, name: &str) -> Result<Vec<HistoryEntry>, BackendError> {
    let store = engine.images().clone();
    let name = name.to_string();
    blocking(move || {
        let img = store.resolve(&name).map_err(image_error)?;
        let tags = img.tags();
        Ok(berth_image::ops::history(&store, &img)
            .into_iter()
            .enumerate()
            .map(|(i, row)| HistoryEntry {
                id: row
                    .id
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "<missing>".into()),
                created_secs: row.created.map(|t| t.timestamp()).unwrap_or(0),
                created_by: row.created_by,
                tags: if i == 0 { tags.clone() } else { Vec::new() },
                size: row.size as i64,
                comment: row.comment,
            })
            .collect())
    })
    .await
}

/// `GET /images/get`: a `docker save` archive.
pub async fn save(
    engine: &Engine,
    names: Vec<String>,
) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError> {
    let store = engine.images().clone();
    let tar = blocking(move || {
        let mut out = Vec::new();
        berth_image::archive::save(&store, &names, &mut out).map_err(image_error)?;
        Ok(out)
    })
    .await?;
    Ok(futures_util::stream::once(async move { Ok(Bytes::from(tar)) }).boxed())
}

/// `POST /images/load`: the archive is spooled to a file in the store's staging area
/// (it is read more than once), then loaded; returns the references loaded, or the
/// IDs of untagged images.
pub async fn load(engine: &Engine, mut tar: ByteStream) -> Result<Vec<String>, BackendError> {
    let store = engine.images().clone();
    let staging = store.staging().map_err(image_error)?;
    let spool = staging.path_for("load.tar");
    let mut file = std::fs::File::create(&spool)
        .map_err(|e| BackendError::Other(format!("create {}: {e}", spool.display())))?;
    while let Some(chunk) = tar.next().await {
        file.write_all(&chunk?)
            .map_err(|e| BackendError::Other(format!("write {}: {e}", spool.display())))?;
    }
    drop(file);
    blocking(move || {
        let images = berth_image::archive::load(&store, &spool, &Platform::host(), true)
            .map_err(image_error)?;
        drop(staging);
        let mut out = Vec::new();
        for img in images {
            let tags = img.tags();
            if tags.is_empty() {
                out.push(img.id.to_string());
            }
            for t in tags {
                let shown = Reference::parse(&t).map(|r| r.familiar()).unwrap_or(t);
                out.push(shown);
            }
        }
        Ok(out)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    /// A `docker save` archive of one image with an empty layer and `config`.
    fn archive(dir: &std::path::Path, config: serde_json::Value) -> std::path::PathBuf {
        let layer = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let diff = format!("sha256:{:x}", Sha256::digest(&layer));
        let config = serde_json::json!({
            "architecture": Platform::host().architecture, "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        });
        let manifest = serde_json::json!([{
            "Config": "config.json", "RepoTags": ["inspect/me:1"], "Layers": ["layer.tar"],
        }]);
        let path = dir.join("image.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data) in [
            ("config.json", serde_json::to_vec(&config).unwrap()),
            ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
            ("layer.tar", layer),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[tokio::test]
    async fn inspect_shows_the_image_s_exposed_ports_and_volumes() {
        let root = tempfile::tempdir().unwrap();
        let engine = Engine::open_at(root.path()).unwrap();
        let path = archive(
            root.path(),
            serde_json::json!({
                "Cmd": ["httpd"],
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Volumes": {"/data": {}},
            }),
        );
        berth_image::archive::load(engine.images(), &path, &Platform::host(), false).unwrap();
        let details = inspect(&engine, "inspect/me:1").await.unwrap();
        assert_eq!(details.config.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(details.config.volumes, ["/data"]);
        assert_eq!(details.config.cmd, Some(vec!["httpd".to_string()]));
    }
}
