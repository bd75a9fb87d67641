//! `/networks`: the engine's user-defined networks as docker's. The engine's network
//! calls are synchronous and touch the state root's files, so each runs off the async
//! threads.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_docker_api::{BackendError, Endpoint, NetworkInfo};
use berth_engine::{ContainerRecord, Engine, Network};

use crate::{api_error, blocking};

const NS: u64 = 1_000_000_000;

/// Where container `c` is on network `n`, as the API shows it: docker adds the short ID
/// to the aliases, and compose looks for it there.
pub fn endpoint(n: &Network, c: &ContainerRecord) -> Option<Endpoint> {
    let a = c
        .spec
        .attachment
        .as_ref()
        .filter(|a| a.network_id == n.id)?;
    let mut aliases = a.aliases.clone();
    aliases.push(c.short_id().to_string());
    Some(Endpoint {
        network: n.name.clone(),
        network_id: n.id.clone(),
        container_id: c.id.clone(),
        container_name: c.name.clone(),
        address: a.address.to_string(),
        prefix: a.prefix,
        gateway: berth_engine::net::gateway_of(n).to_string(),
        aliases,
    })
}

/// Network `n` with the containers `on` it, as the API shows it.
pub fn info(n: Network, on: &[ContainerRecord]) -> NetworkInfo {
    NetworkInfo {
        endpoints: on.iter().filter_map(|c| endpoint(&n, c)).collect(),
        created_ns: n.created.saturating_mul(NS),
        subnet: n.cidr(),
        gateway: berth_engine::net::gateway_of(&n).to_string(),
        labels: n.labels.clone(),
        id: n.id,
        name: n.name,
    }
}

/// The network and endpoint of container `c`, for its inspect.
pub fn container_endpoint(engine: &Engine, c: &ContainerRecord) -> Option<Endpoint> {
    let a = c.spec.attachment.as_ref()?;
    let n = engine.network(&a.network_id).ok()?;
    endpoint(&n, c)
}

/// `GET /networks`.
pub async fn list(engine: &Arc<Engine>) -> Result<Vec<NetworkInfo>, BackendError> {
    let engine = engine.clone();
    blocking(move || {
        Ok(engine
            .network_list()
            .map_err(api_error)?
            .into_iter()
            .map(|(n, on)| info(n, &on))
            .collect())
    })
    .await
}

/// `POST /networks/create`.
pub async fn create(
    engine: &Arc<Engine>,
    name: String,
    subnet: Option<String>,
    labels: BTreeMap<String, String>,
) -> Result<NetworkInfo, BackendError> {
    let engine = engine.clone();
    blocking(move || {
        let n = engine
            .network_create(&name, subnet.as_deref(), labels)
            .map_err(api_error)?;
        tracing::debug!(network = %n.name, subnet = %n.cidr(), "network created");
        Ok(info(n, &[]))
    })
    .await
}

/// `GET /networks/{id}`.
pub async fn inspect(engine: &Arc<Engine>, key: &str) -> Result<NetworkInfo, BackendError> {
    let (engine, key) = (engine.clone(), key.to_string());
    blocking(move || {
        let n = engine.network(&key).map_err(api_error)?;
        let on = engine.network_users(&n).map_err(api_error)?;
        Ok(info(n, &on))
    })
    .await
}

/// `DELETE /networks/{id}`.
pub async fn remove(engine: &Arc<Engine>, key: &str) -> Result<(), BackendError> {
    let (engine, key) = (engine.clone(), key.to_string());
    blocking(move || {
        let n = engine.network_remove(&key).map_err(api_error)?;
        tracing::debug!(network = %n.name, "network removed");
        Ok(())
    })
    .await
}

/// `POST /networks/prune`.
pub async fn prune(engine: &Arc<Engine>) -> Result<Vec<String>, BackendError> {
    let engine = engine.clone();
    blocking(move || engine.network_prune().map_err(api_error)).await
}

/// `POST /networks/{id}/connect` (`aliases` given) or `disconnect` (`None`).
pub async fn connect(
    engine: &Arc<Engine>,
    key: &str,
    container: &str,
    aliases: Option<Vec<String>>,
) -> Result<(), BackendError> {
    let (engine, key, container) = (engine.clone(), key.to_string(), container.to_string());
    blocking(move || {
        match aliases {
            Some(a) => engine.network_connect(&key, &container, &a),
            None => engine.network_disconnect(&key, &container),
        }
        .map_err(api_error)
    })
    .await
}
