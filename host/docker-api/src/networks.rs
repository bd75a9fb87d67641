//! `/networks/...` handlers: list (with `name`, `id`, `label`, `driver` and `type`
//! filters), create, inspect, remove, prune, connect and disconnect.
//!
//! Networks are user-defined ones only, with docker's `bridge` driver name: each joins
//! the micro-VMs of its containers. A create asking for another driver, IPv6, an
//! internal network or IPAM options other than one subnet is a 400, so that a client
//! never believes it got what berth does not do.

use std::collections::BTreeMap;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::NetworkInfo;
use crate::error::ApiError;
use crate::filters::{labels_match, Filters};
use crate::request::{read_json, Query};
use crate::response::{self, ApiResult};
use crate::router::Ctx;
use crate::time::rfc3339_nano;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// `POST /networks/create` body (the part we read).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct NetworkCreateBody {
    pub name: String,
    pub driver: Option<String>,
    pub internal: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<IpamBody>,
    pub options: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// `IPAM` of a create body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct IpamBody {
    pub driver: Option<String>,
    pub config: Option<Vec<IpamConfigBody>>,
    pub options: Option<BTreeMap<String, String>>,
}

/// One `IPAM.Config` entry.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct IpamConfigBody {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "IPRange")]
    pub ip_range: Option<String>,
}

/// `POST /networks/{id}/connect` and `disconnect` bodies.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct ConnectBody {
    pub container: String,
    pub endpoint_config: Option<EndpointBody>,
    pub force: bool,
}

/// An endpoint's settings: in a connect body, and in a container create's
/// `NetworkingConfig.EndpointsConfig`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)]
pub struct EndpointBody {
    pub aliases: Option<Vec<String>>,
}

/// A network create, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct NetworkRequest {
    /// Its name.
    pub name: String,
    /// The subnet asked for (CIDR), if any.
    pub subnet: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Checks a create body.
pub fn create_request(body: NetworkCreateBody) -> Result<NetworkRequest, ApiError> {
    if body.name.is_empty() {
        return Err(bad("network name is empty: give a Name"));
    }
    let driver = body.driver.unwrap_or_default();
    if !matches!(driver.as_str(), "" | "bridge") {
        return Err(bad(format!(
            "berth does not support the network driver \"{driver}\": berth has the bridge driver"
        )));
    }
    if body.enable_ipv6 == Some(true) {
        return Err(bad("berth does not support IPv6 networks yet"));
    }
    if body.internal == Some(true) {
        return Err(bad("berth does not support internal networks yet"));
    }
    if let Some(o) = body.options.filter(|o| !o.is_empty()) {
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        return Err(bad(format!(
            "berth does not support network driver options ({})",
            keys.join(", ")
        )));
    }
    let mut subnet = None;
    if let Some(ipam) = body.ipam {
        if !matches!(ipam.driver.as_deref(), None | Some("" | "default")) {
            return Err(bad("berth has the default IPAM driver only"));
        }
        let configs = ipam.config.unwrap_or_default();
        if configs.len() > 1 {
            return Err(bad(
                "berth networks have one subnet: give one IPAM.Config entry",
            ));
        }
        if let Some(c) = configs.into_iter().next() {
            if c.ip_range.is_some_and(|r| !r.is_empty()) {
                return Err(bad("berth does not support IPAM IPRange yet"));
            }
            if c.gateway.is_some_and(|g| !g.is_empty()) {
                return Err(bad(
                    "berth does not support choosing the gateway: it is the subnet's first address",
                ));
            }
            subnet = c.subnet.filter(|s| !s.is_empty());
        }
    }
    Ok(NetworkRequest {
        name: body.name,
        subnet,
        labels: body.labels.unwrap_or_default(),
    })
}

/// Docker's JSON for a network.
pub fn network_json(n: NetworkInfo) -> Value {
    let containers: serde_json::Map<String, Value> = n
        .endpoints
        .iter()
        .map(|e| {
            (
                e.container_id.clone(),
                json!({
                    "Name": e.container_name,
                    "EndpointID": e.container_id,
                    "MacAddress": "",
                    "IPv4Address": format!("{}/{}", e.address, e.prefix),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339_nano(Some(n.created_ns)),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": n.subnet, "Gateway": n.gateway}],
        },
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {},
        "Labels": n.labels,
    })
}

/// Whether network `n` passes the list filters.
fn list_matches(f: &Filters, n: &NetworkInfo) -> bool {
    let any = |key: &str, hit: &dyn Fn(&str) -> bool| {
        let v = f.get(key);
        v.is_empty() || v.iter().any(|x| hit(x))
    };
    any("name", &|x| n.name.contains(x))
        && any("id", &|x| n.id.starts_with(x))
        && any("driver", &|x| x == "bridge")
        && any("type", &|x| x == "custom")
        && labels_match(f.get("label"), &n.labels)
}

/// `GET /networks?filters=`.
async fn list(ctx: &Ctx, q: &Query) -> ApiResult {
    let filters = Filters::parse(q.get("filters"))?;
    filters.only(&["name", "id", "label", "driver", "type"])?;
    let mut nets = ctx.backend.list_networks().await?;
    nets.retain(|n| list_matches(&filters, n));
    let out: Vec<Value> = nets.into_iter().map(network_json).collect();
    Ok(response::json(StatusCode::OK, &out))
}

/// `POST /networks/create`.
async fn create(ctx: &Ctx, req: Request<Incoming>) -> ApiResult {
    let body: NetworkCreateBody = read_json(req.into_body(), ctx.limits.max_json_body).await?;
    let r = create_request(body)?;
    let n = ctx
        .backend
        .create_network(r.name, r.subnet, r.labels)
        .await?;
    Ok(response::json(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

/// `POST /networks/{id}/connect` or `disconnect`.
async fn connect(ctx: &Ctx, key: &str, req: Request<Incoming>, on: bool) -> ApiResult {
    let body: ConnectBody = read_json(req.into_body(), ctx.limits.max_json_body).await?;
    if body.container.is_empty() {
        return Err(bad("no container given: set Container"));
    }
    if on {
        let aliases = body
            .endpoint_config
            .and_then(|e| e.aliases)
            .unwrap_or_default();
        ctx.backend
            .connect_network(key, &body.container, aliases)
            .await?;
    } else {
        ctx.backend.disconnect_network(key, &body.container).await?;
    }
    Ok(response::status(StatusCode::OK))
}

/// `/networks...`; `None` when there is no such endpoint.
pub async fn route(
    ctx: &Ctx,
    rest: &[&str],
    method: &Method,
    q: &Query,
    req: Request<Incoming>,
) -> Option<ApiResult> {
    let r = match (rest, method) {
        ([], &Method::GET) => list(ctx, q).await,
        (["create"], &Method::POST) => create(ctx, req).await,
        (["prune"], &Method::POST) => ctx
            .backend
            .prune_networks()
            .await
            .map(|deleted| response::json(StatusCode::OK, &json!({"NetworksDeleted": deleted})))
            .map_err(ApiError::from),
        ([key], &Method::GET) => ctx
            .backend
            .inspect_network(key)
            .await
            .map(|n| response::json(StatusCode::OK, &network_json(n)))
            .map_err(ApiError::from),
        ([key], &Method::DELETE) => ctx
            .backend
            .remove_network(key)
            .await
            .map(|()| response::status(StatusCode::NO_CONTENT))
            .map_err(ApiError::from),
        ([key, "connect"], &Method::POST) => connect(ctx, key, req, true).await,
        ([key, "disconnect"], &Method::POST) => connect(ctx, key, req, false).await,
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> NetworkCreateBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn create_bodies_are_checked() {
        let NetworkRequest {
            name,
            subnet,
            labels,
        } = create_request(body(
            r#"{"Name":"app_default","Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"10.89.9.0/24"}]},"Labels":{"com.docker.compose.network":"default"}}"#,
        ))
        .unwrap();
        assert_eq!(name, "app_default");
        assert_eq!(subnet.as_deref(), Some("10.89.9.0/24"));
        assert_eq!(labels["com.docker.compose.network"], "default");
        // compose 1.29's plain default network.
        let plain = create_request(body(
            r#"{"Name":"p_default","Driver":null,"Options":{},"IPAM":null,"Internal":false,"CheckDuplicate":true}"#,
        ))
        .unwrap();
        assert_eq!(plain.subnet, None);
        for (json, says) in [
            (r#"{"Name":""}"#, "empty"),
            (r#"{"Name":"n","Driver":"overlay"}"#, "overlay"),
            (r#"{"Name":"n","EnableIPv6":true}"#, "IPv6"),
            (r#"{"Name":"n","Internal":true}"#, "internal"),
            (
                r#"{"Name":"n","Options":{"com.docker.network.bridge.name":"x"}}"#,
                "options",
            ),
            (
                r#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.1.0.0/24"},{"Subnet":"10.2.0.0/24"}]}}"#,
                "one subnet",
            ),
            (
                r#"{"Name":"n","IPAM":{"Config":[{"Gateway":"10.1.0.9"}]}}"#,
                "gateway",
            ),
        ] {
            let e = create_request(body(json)).unwrap_err();
            assert!(e.to_string().contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn networks_look_like_dockers() {
        let n = NetworkInfo {
            name: "app".into(),
            id: "ab".repeat(32),
            created_ns: 1_700_000_000_000_000_000,
            subnet: "10.89.1.0/24".into(),
            gateway: "10.89.1.1".into(),
            labels: BTreeMap::new(),
            endpoints: vec![crate::backend::Endpoint {
                container_id: "cd".repeat(32),
                container_name: "web".into(),
                address: "10.89.1.2".into(),
                prefix: 24,
                ..Default::default()
            }],
        };
        let j = network_json(n);
        assert_eq!(j["Driver"], "bridge");
        assert_eq!(j["IPAM"]["Config"][0]["Subnet"], "10.89.1.0/24");
        assert_eq!(
            j["Containers"]["cd".repeat(32)]["IPv4Address"],
            "10.89.1.2/24"
        );
    }
}
