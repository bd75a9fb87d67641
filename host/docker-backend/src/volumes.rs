//! `/volumes`: the engine's volumes as docker's. The engine's volume calls are
//! synchronous and touch the state root's files, so each runs off the async threads.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_containers::Volume;
use berth_docker_api::{BackendError, VolumeInfo, VolumePrune};
use berth_engine::{Engine, ErrorKind};

use crate::{api_error, blocking};

const NS: u64 = 1_000_000_000;

/// An engine error about volume `name`, a missing one in docker's words.
fn volume_error(name: &str, e: berth_engine::Error) -> BackendError {
    if e.kind() == ErrorKind::NotFound {
        BackendError::NotFound(format!("get {name}: no such volume"))
    } else {
        api_error(e)
    }
}

fn info(engine: &Engine, v: Volume, containers: usize) -> Result<VolumeInfo, BackendError> {
    let data = engine.volumes().map_err(api_error)?.data(&v.name);
    Ok(VolumeInfo {
        mountpoint: data.display().to_string(),
        created_ns: v.created.saturating_mul(NS),
        labels: v.labels,
        anonymous: v.anonymous,
        containers,
        name: v.name,
    })
}

/// `GET /volumes`.
pub async fn list(engine: &Arc<Engine>) -> Result<Vec<VolumeInfo>, BackendError> {
    let engine = engine.clone();
    blocking(move || {
        engine
            .volume_list()
            .map_err(api_error)?
            .into_iter()
            .map(|(v, users)| info(&engine, v, users.len()))
            .collect()
    })
    .await
}

/// `POST /volumes/create`.
pub async fn create(
    engine: &Arc<Engine>,
    name: Option<String>,
    labels: BTreeMap<String, String>,
) -> Result<VolumeInfo, BackendError> {
    let engine = engine.clone();
    blocking(move || {
        let v = engine
            .volume_create(name.as_deref(), labels)
            .map_err(api_error)?;
        tracing::debug!(volume = %v.name, "volume created");
        users(&engine, v)
    })
    .await
}

/// A volume with the number of containers using it.
fn users(engine: &Engine, v: Volume) -> Result<VolumeInfo, BackendError> {
    let n = engine
        .containers()
        .map_err(api_error)?
        .iter()
        .filter(|c| berth_engine::mounts::volume_names(c).any(|(n, _)| n == v.name))
        .count();
    info(engine, v, n)
}

/// `GET /volumes/{name}`.
pub async fn inspect(engine: &Arc<Engine>, name: &str) -> Result<VolumeInfo, BackendError> {
    let (engine, name) = (engine.clone(), name.to_string());
    blocking(move || {
        let (v, _) = engine.volume(&name).map_err(|e| volume_error(&name, e))?;
        users(&engine, v)
    })
    .await
}

/// `DELETE /volumes/{name}?force=`: a missing volume is fine with `force`, as docker's.
pub async fn remove(engine: &Arc<Engine>, name: &str, force: bool) -> Result<(), BackendError> {
    let (engine, name) = (engine.clone(), name.to_string());
    blocking(move || match engine.volume_remove(&name) {
        Ok(()) => {
            tracing::debug!(volume = %name, "volume removed");
            Ok(())
        }
        Err(e) if force && e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(volume_error(&name, e)),
    })
    .await
}

/// `POST /volumes/prune`.
pub async fn prune(engine: &Arc<Engine>, all: bool) -> Result<VolumePrune, BackendError> {
    let engine = engine.clone();
    blocking(move || {
        let (deleted, space_reclaimed) = engine.volume_prune(all).map_err(api_error)?;
        Ok(VolumePrune {
            deleted,
            space_reclaimed,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn volumes_over_an_engine() {
        let root = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open_at(root.path()).unwrap());
        let labels: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        let v = create(&engine, Some("data".into()), labels).await.unwrap();
        assert_eq!((v.name.as_str(), v.containers), ("data", 0));
        assert!(v.mountpoint.ends_with("volumes/data/_data"), "{v:?}");
        assert!(std::path::Path::new(&v.mountpoint).is_dir());
        assert_eq!(v.labels["a"], "b");
        assert!(v.created_ns > 0 && !v.anonymous);
        assert_eq!(inspect(&engine, "data").await.unwrap(), v);
        assert_eq!(list(&engine).await.unwrap(), [v]);
        let bad = create(&engine, Some("a/b".into()), BTreeMap::new()).await;
        assert!(
            matches!(bad, Err(BackendError::InvalidArgument(_))),
            "{bad:?}"
        );

        let pruned = prune(&engine, false).await.unwrap();
        assert!(
            pruned.deleted.is_empty(),
            "a named volume survives a plain prune"
        );
        std::fs::write(
            std::path::Path::new(&list(&engine).await.unwrap()[0].mountpoint).join("f"),
            "1234",
        )
        .unwrap();
        let pruned = prune(&engine, true).await.unwrap();
        assert_eq!(
            (pruned.deleted, pruned.space_reclaimed),
            (vec!["data".to_string()], 4)
        );

        assert_eq!(
            inspect(&engine, "data").await.unwrap_err(),
            BackendError::NotFound("get data: no such volume".into())
        );
        assert_eq!(
            remove(&engine, "data", false).await.unwrap_err(),
            BackendError::NotFound("get data: no such volume".into())
        );
        remove(&engine, "data", true).await.unwrap();
        create(&engine, Some("other".into()), BTreeMap::new())
            .await
            .unwrap();
        remove(&engine, "other", false).await.unwrap();
        assert!(list(&engine).await.unwrap().is_empty());
    }
}
