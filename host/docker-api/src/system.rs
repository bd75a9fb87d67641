//! `/_ping`, `/version`, `/info` and `/events`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use crate::backend::Event;
use crate::error::ApiError;
use crate::filters::{event_matches, Filters, EVENT_KEYS};
use crate::request::Query;
use crate::response::{self, channel_body, full, json_line, ApiResult, Body};
use crate::router::{version_string, Ctx, MAX_API_VERSION, MIN_API_VERSION};
use crate::time::{now_ns, parse_timestamp};
use crate::types::{Actor, Component, EventJson, Info, Platform, Version};

/// `GET|HEAD /_ping`: "OK" plus the headers clients negotiate with.
pub fn ping() -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(b"OK")));
    let h = r.headers_mut();
    let api = version_string(MAX_API_VERSION);
    h.insert("Api-Version", HeaderValue::from_str(&api).expect("ascii"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `GET /version`.
pub async fn version(ctx: &Ctx) -> ApiResult {
    let v = ctx.backend.version();
    let api = version_string(MAX_API_VERSION);
    let min = version_string(MIN_API_VERSION);
    let details: BTreeMap<String, String> = [
        ("ApiVersion", api.as_str()),
        ("MinAPIVersion", min.as_str()),
        ("GitCommit", v.git_commit.as_str()),
        ("Os", v.os.as_str()),
        ("Arch", v.arch.as_str()),
        ("KernelVersion", v.kernel_version.as_str()),
        ("BuildTime", v.build_time.as_str()),
        ("Experimental", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let body = Version {
        platform: Platform {
            name: format!("berth {}", v.version),
        },
        components: vec![Component {
            name: "Engine".into(),
            version: v.version.clone(),
            details,
        }],
        version: v.version,
        api_version: api,
        min_api_version: min,
        git_commit: v.git_commit,
        go_version: "n/a (berth is written in Rust)".into(),
        os: v.os,
        arch: v.arch,
        kernel_version: v.kernel_version,
        build_time: v.build_time,
        experimental: false,
    };
    Ok(response::json(StatusCode::OK, &body))
}

/// `GET /info`.
pub async fn info(ctx: &Ctx) -> ApiResult {
    let s = ctx.backend.info().await?;
    let v = ctx.backend.version();
    let body = Info {
        id: s.id,
        containers: s.containers_running + s.containers_paused + s.containers_stopped,
        containers_running: s.containers_running,
        containers_paused: s.containers_paused,
        containers_stopped: s.containers_stopped,
        images: s.images,
        driver: s.driver,
        driver_status: vec![],
        docker_root_dir: s.root_dir,
        logging_driver: "json-file".into(),
        cgroup_driver: "none".into(),
        cgroup_version: "2".into(),
        kernel_version: v.kernel_version,
        operating_system: s.operating_system,
        os_type: v.os,
        os_version: String::new(),
        architecture: match v.arch.as_str() {
            "amd64" => "x86_64".into(),
            "arm64" => "aarch64".into(),
            other => other.into(),
        },
        ncpu: s.ncpu,
        mem_total: s.mem_total,
        name: s.name,
        server_version: v.version,
        labels: vec![],
        experimental_build: false,
        debug: false,
        memory_limit: true,
        swap_limit: false,
        cpu_cfs_period: true,
        cpu_cfs_quota: true,
        pids_limit: true,
        ipv4_forwarding: false,
        index_server_address: "https://index.docker.io/v1/".into(),
        registry_config: json!({"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []}),
        plugins: json!({"Volume": [], "Network": [], "Authorization": null, "Log": []}),
        runtimes: json!({"berth": {"path": "berth"}}),
        default_runtime: "berth".into(),
        swarm: json!({"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null}),
        live_restore_enabled: false,
        isolation: String::new(),
        security_options: vec![],
        warnings: vec![],
    };
    Ok(response::json(StatusCode::OK, &body))
}

/// Docker's JSON for one event.
pub fn event_json(e: &Event) -> EventJson {
    let container = e.typ == "container";
    EventJson {
        typ: e.typ.clone(),
        action: e.action.clone(),
        actor: Actor {
            id: e.id.clone(),
            attributes: e.attributes.clone(),
        },
        scope: "local".into(),
        time: (e.time_ns / 1_000_000_000) as i64,
        time_nano: e.time_ns as i64,
        status: container.then(|| e.action.clone()),
        id: container.then(|| e.id.clone()),
        from: if container {
            e.attributes.get("image").cloned()
        } else {
            None
        },
    }
}

/// `GET /events?filters=&since=&until=`: live events as a stream of JSON
/// objects. `since` cannot replay the past (the backend keeps no event
/// history); `until` ends the stream at that time.
pub async fn events(ctx: &Ctx, q: &Query) -> ApiResult {
    let filters = Filters::parse(q.get("filters"))?;
    filters.only(EVENT_KEYS)?;
    let bad = |k: &str, v: &str| ApiError::BadRequest(format!("invalid value for {k}: {v:?}"));
    let until = match q.string("until") {
        Some(u) => Some(parse_timestamp(&u).ok_or_else(|| bad("until", &u))?),
        None => None,
    };
    if let Some(s) = q.string("since") {
        parse_timestamp(&s).ok_or_else(|| bad("since", &s))?;
    }
    let mut stream = ctx.backend.events().await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = until.map(|u| {
            tokio::time::Instant::now() + Duration::from_nanos(u.saturating_sub(now_ns()))
        });
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => tokio::select! {
                    n = stream.next() => n,
                    () = tx.closed() => break,
                },
            };
            let Some(e) = next else { break };
            if !event_matches(&filters, &e) {
                continue;
            }
            if tx.send(json_line(&event_json(&e))).await.is_err() {
                break;
            }
        }
    });
    Ok(response::with_type(
        StatusCode::OK,
        "application/json",
        channel_body(rx),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape() {
        let e = Event {
            typ: "container".into(),
            action: "die".into(),
            id: "abc".into(),
            attributes: [
                ("image".to_string(), "busybox".to_string()),
                ("exitCode".into(), "3".into()),
            ]
            .into(),
            time_ns: 1_500_000_000,
        };
        let v = serde_json::to_value(event_json(&e)).unwrap();
        assert_eq!(
            v,
            json!({
                "Type": "container", "Action": "die",
                "Actor": {"ID": "abc", "Attributes": {"image": "busybox", "exitCode": "3"}},
                "scope": "local", "time": 1, "timeNano": 1_500_000_000i64,
                "status": "die", "id": "abc", "from": "busybox"
            })
        );
    }

    #[test]
    fn ping_headers() {
        let r = ping();
        assert_eq!(r.headers()["Api-Version"], "1.51");
        assert_eq!(r.headers()["Ostype"], "linux");
        assert_eq!(r.headers()["Docker-Experimental"], "false");
        assert_eq!(r.headers()["Builder-Version"], "1");
        assert_eq!(r.headers()["Pragma"], "no-cache");
    }
}
