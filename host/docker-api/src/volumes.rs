//! `/volumes/...` handlers: list (with `name`, `label`, `dangling` and
//! `driver` filters), create, inspect, remove and prune.
//!
//! Only the local driver exists: a create naming another driver, or passing
//! driver options, is a 400. Prune follows Docker 23 and later: anonymous
//! volumes only, unless the `all=true` filter is given (clients older than
//! API 1.42 prune named volumes too, as Docker did for them).

use std::collections::BTreeMap;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::backend::VolumeInfo;
use crate::error::ApiError;
use crate::filters::{labels_match, Filters};
use crate::request::{read_json, Query};
use crate::response::{self, ApiResult};
use crate::router::{ApiVersion, Ctx};
use crate::time::rfc3339_nano;
use crate::types::{self, VolumeCreateBody};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Docker's JSON for a volume.
pub fn volume_json(v: VolumeInfo) -> types::VolumeJson {
    types::VolumeJson {
        created_at: rfc3339_nano(Some(v.created_ns - v.created_ns % 1_000_000_000)),
        driver: "local".into(),
        labels: v.labels,
        mountpoint: v.mountpoint,
        name: v.name,
        options: BTreeMap::new(),
        scope: "local".into(),
        usage_data: None,
    }
}

/// Whether `f` holds a boolean filter value Docker accepts, and which.
fn bool_filter(key: &str, values: &[String]) -> Result<Option<bool>, ApiError> {
    let mut out = None;
    for v in values {
        let b = match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(bad(format!(
                    "invalid filter '{key}={v}': use true, false, 1 or 0"
                )))
            }
        };
        out = Some(b);
    }
    Ok(out)
}

/// Whether volume `v` passes the list filters.
fn list_matches(f: &Filters, dangling: Option<bool>, v: &VolumeInfo) -> bool {
    let names = f.get("name");
    let drivers = f.get("driver");
    (names.is_empty() || names.iter().any(|n| v.name.contains(n.as_str())))
        && (drivers.is_empty() || drivers.iter().any(|d| d == "local"))
        && labels_match(f.get("label"), &v.labels)
        && dangling.is_none_or(|d| d == (v.containers == 0))
}

/// `GET /volumes?filters=`.
async fn list(ctx: &Ctx, q: &Query) -> ApiResult {
    let filters = Filters::parse(q.get("filters"))?;
    filters.only(&["name", "label", "dangling", "driver"])?;
    let dangling = bool_filter("dangling", filters.get("dangling"))?;
    let mut vols = ctx.backend.list_volumes().await?;
    vols.retain(|v| list_matches(&filters, dangling, v));
    vols.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(response::json(
        StatusCode::OK,
        &types::VolumeListJson {
            volumes: vols.into_iter().map(volume_json).collect(),
            warnings: Vec::new(),
        },
    ))
}

/// Checks a create body; returns the name and labels.
pub fn create_request(
    body: VolumeCreateBody,
) -> Result<(Option<String>, BTreeMap<String, String>), ApiError> {
    let driver = body.driver.unwrap_or_default();
    if !matches!(driver.as_str(), "" | "local") {
        return Err(bad(format!(
            "berth does not support the volume driver \"{driver}\": berth has the local driver"
        )));
    }
    if let Some(opts) = body.driver_opts.filter(|o| !o.is_empty()) {
        let keys: Vec<&str> = opts.keys().map(String::as_str).collect();
        return Err(bad(format!(
            "berth does not support volume driver options ({}): its volumes are folders",
            keys.join(", ")
        )));
    }
    if body.cluster_volume_spec.is_some_and(|c| !c.is_null()) {
        return Err(bad("berth does not support cluster volumes"));
    }
    Ok((
        body.name.filter(|n| !n.is_empty()),
        body.labels.unwrap_or_default(),
    ))
}

/// `POST /volumes/create`.
async fn create(ctx: &Ctx, req: Request<Incoming>) -> ApiResult {
    let body: VolumeCreateBody = read_json(req.into_body(), ctx.limits.max_json_body).await?;
    let (name, labels) = create_request(body)?;
    let v = ctx.backend.create_volume(name, labels).await?;
    Ok(response::json(StatusCode::CREATED, &volume_json(v)))
}

/// Whether prune removes named volumes too: the `all` filter, or a client
/// older than API 1.42 (whose Docker pruned them).
pub fn prune_all(f: &Filters, version: Option<ApiVersion>) -> Result<bool, ApiError> {
    f.only(&["all"]).map_err(|e| match e {
        ApiError::BadRequest(m) if m.starts_with("invalid filter 'label") => {
            bad("berth does not support label filters in volume prune yet")
        }
        e => e,
    })?;
    let old = version.is_some_and(|v| v < (1, 42));
    Ok(bool_filter("all", f.get("all"))?.unwrap_or(old))
}

/// `POST /volumes/prune?filters=`.
async fn prune(ctx: &Ctx, q: &Query, version: Option<ApiVersion>) -> ApiResult {
    let filters = Filters::parse(q.get("filters"))?;
    let all = prune_all(&filters, version)?;

    let pruned = ctx.backend.prune_volumes(all).await?;
    Ok(response::json(
        StatusCode::OK,
        &types::VolumePruneJson {
            volumes_deleted: pruned.deleted,
            space_reclaimed: pruned.space_reclaimed,
        },
    ))
}

/// `/volumes...`; `None` when there is no such endpoint.
pub async fn route(
    ctx: &Ctx,
    rest: &[&str],
    method: &Method,
    q: &Query,
    version: Option<ApiVersion>,
    req: Request<Incoming>,
) -> Option<ApiResult> {
    let r = match (rest, method) {
        ([], &Method::GET) => list(ctx, q).await,
        (["create"], &Method::POST) => create(ctx, req).await,
        (["prune"], &Method::POST) => prune(ctx, q, version).await,
        ([name], &Method::GET) => ctx
            .backend
            .inspect_volume(name)
            .await
            .map(|v| response::json(StatusCode::OK, &volume_json(v)))
            .map_err(ApiError::from),
        ([name], &Method::DELETE) => ctx
            .backend
            .remove_volume(name, q.bool("force"))
            .await
            .map(|()| response::status(StatusCode::NO_CONTENT))
            .map_err(ApiError::from),
        ([_], &Method::PUT) => Err(ApiError::NotImplemented(
            "berth does not support cluster volumes".into(),
        )),
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_json;

    fn vol(name: &str, containers: usize) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            mountpoint: format!("/v/{name}/_data"),
            created_ns: 1_500_000_000,
            labels: [("a".to_string(), "b".to_string())].into(),
            anonymous: false,
            containers,
        }
    }

    #[test]
    fn volume_shape() {
        let v = serde_json::to_value(volume_json(vol("data", 0))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"CreatedAt": "1970-01-01T00:00:01Z", "Driver": "local",
                "Labels": {"a": "b"}, "Mountpoint": "/v/data/_data", "Name": "data",
                "Options": {}, "Scope": "local", "UsageData": null})
        );
    }

    #[test]
    fn list_filters() {
        let f = |raw: &str| Filters::parse(Some(raw)).unwrap();
        let used = vol("used-one", 1);
        let free = vol("free", 0);
        let dangling = |f: &Filters| bool_filter("dangling", f.get("dangling")).unwrap();
        let d = f(r#"{"dangling":["true"]}"#);
        assert!(list_matches(&d, dangling(&d), &free));
        assert!(!list_matches(&d, dangling(&d), &used));
        let n = f(r#"{"name":["used"]}"#);
        assert!(list_matches(&n, None, &used) && !list_matches(&n, None, &free));
        let l = f(r#"{"label":{"a=b":true}}"#);
        assert!(list_matches(&l, None, &used));
        let l = f(r#"{"label":["a=c"]}"#);
        assert!(!list_matches(&l, None, &used));
        assert!(bool_filter("dangling", &["maybe".into()]).is_err());
    }

    #[test]
    fn create_bodies() {
        let body = |s: &str| create_request(parse_json::<VolumeCreateBody>(s.as_bytes()).unwrap());
        let (n, l) =
            body(r#"{"Name":"data","Driver":"local","DriverOpts":{},"Labels":{"a":"b"}}"#).unwrap();
        assert_eq!((n.as_deref(), l["a"].as_str()), (Some("data"), "b"));
        let (n, _) = body(r#"{"Name":"","Driver":null,"DriverOpts":null,"Labels":null}"#).unwrap();
        assert_eq!(n, None);
        let e = body(r#"{"Name":"x","Driver":"nfs"}"#).unwrap_err();
        assert!(e.to_string().contains("\"nfs\""), "{e}");
        let e = body(r#"{"Name":"x","DriverOpts":{"type":"nfs","device":":/x"}}"#).unwrap_err();
        assert!(e.to_string().contains("device, type"), "{e}");
        assert!(matches!(e, ApiError::BadRequest(_)));
    }

    #[test]
    fn prune_keeps_named_volumes_unless_asked() {
        let f = |raw: &str| Filters::parse(Some(raw)).unwrap();
        assert!(!prune_all(&f("{}"), None).unwrap());
        assert!(!prune_all(&f("{}"), Some((1, 51))).unwrap());
        assert!(prune_all(&f("{}"), Some((1, 41))).unwrap());
        assert!(prune_all(&f(r#"{"all":["true"]}"#), None).unwrap());
        assert!(!prune_all(&f(r#"{"all":["false"]}"#), Some((1, 41))).unwrap());
        assert!(prune_all(&f(r#"{"label":["a"]}"#), None).is_err());
        assert!(prune_all(&f(r#"{"bogus":["a"]}"#), None).is_err());
    }
}
