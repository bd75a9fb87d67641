//! `/images/...` handlers. Image names may contain slashes
//! (`localhost:5000/foo/bar:tag`), so routes are matched by their last
//! segment.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::backend::{
    Backend, BackendError, ImageDetails, ImageSummary, ProgressMessage, ProgressSink, RegistryAuth,
    RemovedImage,
};
use crate::error::ApiError;
use crate::request::{body_stream, Query};
use crate::response::{self, channel_body, json_line, streamed, ApiResult};
use crate::router::Ctx;
use crate::time::rfc3339_nano;
use crate::types::{self, AuthConfigBody, JsonMessage};

/// Routes `/images/{rest..}`; `None` when there is no such endpoint.
pub async fn route(
    ctx: &Ctx,
    rest: &[&str],
    method: &Method,
    q: &Query,
    req: Request<Incoming>,
) -> Option<ApiResult> {
    let r = match (rest, method) {
        (["json"], &Method::GET) => list(ctx).await,
        (["create"], &Method::POST) => create(ctx, q, req.headers()).await,
        (["get"], &Method::GET) => save(ctx, q.all("names")).await,
        (["load"], &Method::POST) => load(ctx, req).await,
        (["search"], _) | (["prune"], _) | (["build"], _) => Err(ApiError::NotImplemented(
            format!("berth does not support /images/{} yet", rest[0]),
        )),
        ([name @ .., "json"], &Method::GET) if !name.is_empty() => {
            inspect(ctx, &name.join("/")).await
        }
        ([name @ .., "push"], &Method::POST) if !name.is_empty() => {
            push(ctx, &name.join("/"), q, req.headers()).await
        }
        ([name @ .., "tag"], &Method::POST) if !name.is_empty() => {
            tag(ctx, &name.join("/"), q).await
        }
        ([name @ .., "history"], &Method::GET) if !name.is_empty() => {
            history(ctx, &name.join("/")).await
        }
        ([name @ .., "get"], &Method::GET) if !name.is_empty() => {
            save(ctx, vec![name.join("/")]).await
        }
        (name, &Method::DELETE) => remove(ctx, &name.join("/"), q).await,
        _ => return None,
    };
    Some(r)
}

/// Docker's list row for an image.
pub fn list_entry(i: ImageSummary) -> types::ImageListEntry {
    types::ImageListEntry {
        id: i.id,
        parent_id: i.parent_id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
        created: i.created_secs,
        size: i.size,
        shared_size: -1,
        virtual_size: i.size,
        labels: i.labels,
        containers: i.containers,
    }
}

async fn list(ctx: &Ctx) -> ApiResult {
    let rows: Vec<_> = ctx
        .backend
        .list_images()
        .await?
        .into_iter()
        .map(list_entry)
        .collect();
    Ok(response::json(StatusCode::OK, &rows))
}

fn set_of(items: &[String]) -> Option<std::collections::BTreeMap<String, serde_json::Value>> {
    (!items.is_empty()).then(|| {
        items
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect()
    })
}

/// Docker's inspect JSON for an image.
pub fn inspect_json(d: ImageDetails) -> types::ImageInspect {
    let c = d.config;
    types::ImageInspect {
        id: d.id,
        repo_tags: d.repo_tags,
        repo_digests: d.repo_digests,
        parent: d.parent,
        comment: d.comment,
        created: rfc3339_nano(Some(d.created_ns)),
        docker_version: String::new(),
        author: d.author,
        config: types::ImageConfigJson {
            hostname: String::new(),
            user: c.user,
            exposed_ports: set_of(&c.exposed_ports),
            volumes: set_of(&c.volumes),
            env: c.env,
            cmd: c.cmd,
            entrypoint: c.entrypoint,
            working_dir: c.working_dir,
            labels: c.labels,
            on_build: None,
            stop_signal: c.stop_signal,
        },
        architecture: d.architecture,
        os: d.os,
        size: d.size,
        virtual_size: d.size,
        graph_driver: types::GraphDriver {
            name: "berth".into(),
            data: None,
        },
        root_fs: types::RootFs {
            typ: "layers".into(),
            layers: d.layers,
        },
        metadata: types::ImageMetadata {
            last_tag_time: crate::time::ZERO_TIME.into(),
        },
    }
}

async fn inspect(ctx: &Ctx, name: &str) -> ApiResult {
    let d = ctx.backend.inspect_image(name).await?;
    Ok(response::json(StatusCode::OK, &inspect_json(d)))
}

/// Decodes `X-Registry-Auth`: base64url (padded or not, standard base64
/// accepted too) JSON `{"username","password","serveraddress"}`. Empty or
/// `{}` means anonymous.
pub fn registry_auth(headers: &HeaderMap) -> Result<Option<RegistryAuth>, ApiError> {
    let Some(raw) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("").trim();
    if raw.is_empty() {
        return Ok(None);
    }
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = URL_SAFE
        .decode(raw)
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| STANDARD.decode(raw))
        .map_err(|_| ApiError::BadRequest("invalid X-Registry-Auth header: not base64".into()))?;
    let body: AuthConfigBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid X-Registry-Auth header: {e}")))?;
    let (mut username, mut password) = (body.username, body.password);
    if username.is_empty() && !body.auth.is_empty() {
        if let Some((u, p)) = STANDARD
            .decode(&body.auth)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        {
            username = u;
            password = p;
        }
    }
    if username.is_empty() && password.is_empty() && body.identitytoken.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        username,
        password,
        server_address: body.serveraddress,
        identity_token: body.identitytoken,
    }))
}

/// Docker's JSON line for a progress message.
pub fn progress_json(m: ProgressMessage) -> JsonMessage {
    let detail = types::ProgressDetail {
        current: m.current,
        total: m.total,
    };
    JsonMessage {
        status: Some(m.status),
        id: m.id,
        progress_detail: Some(detail),
        ..Default::default()
    }
}

/// Docker's JSON line for an error in the middle of a stream.
pub fn error_json(e: &BackendError) -> JsonMessage {
    JsonMessage {
        error_detail: Some(types::ErrorDetail {
            message: e.to_string(),
        }),
        error: Some(e.to_string()),
        ..Default::default()
    }
}

type ProgressJob = Box<
    dyn FnOnce(
            Arc<dyn Backend>,
            ProgressSink,
        ) -> futures_util::future::BoxFuture<'static, Result<(), BackendError>>
        + Send,
>;

/// Runs a pull or push and streams its progress. Until the first message,
/// a failure is still an HTTP error status (as Docker does when nothing was
/// written yet); after it, it is an `errorDetail` line.
async fn progress_stream(ctx: &Ctx, job: ProgressJob) -> ApiResult {
    let (sink, mut progress) = ProgressSink::channel();
    let task = tokio::spawn(job(ctx.backend.clone(), sink));
    let first = progress.recv().await;
    let Some(first) = first else {
        // The sink is gone: the job has finished without a word.
        task.await
            .map_err(|e| ApiError::Internal(format!("pull task: {e}")))??;
        return Ok(response::with_type(
            StatusCode::OK,
            "application/json",
            response::empty(),
        ));
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _ = tx.send(json_line(&progress_json(first))).await;
        while let Some(m) = progress.recv().await {
            // Keep draining even if the client left, so the job never stalls.
            let _ = tx.send(json_line(&progress_json(m))).await;
        }
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(BackendError::Other(format!("pull task: {e}"))),
        };
        if let Err(e) = result {
            let _ = tx.send(json_line(&error_json(&e))).await;
        }
    });
    Ok(response::with_type(
        StatusCode::OK,
        "application/json",
        channel_body(rx),
    ))
}

/// `POST /images/create?fromImage=&tag=`: pull.
async fn create(ctx: &Ctx, q: &Query, headers: &HeaderMap) -> ApiResult {
    if q.string("fromSrc").is_some() {
        return Err(ApiError::NotImplemented(
            "berth does not support image import yet".into(),
        ));
    }
    let Some(image) = q.string("fromImage") else {
        return Err(ApiError::BadRequest("fromImage is required".into()));
    };
    let reference = match q.string("tag") {
        Some(tag) if tag.starts_with("sha256:") => format!("{image}@{tag}"),
        Some(tag) if !has_tag_or_digest(&image) => format!("{image}:{tag}"),
        _ => image,
    };
    let auth = registry_auth(headers)?;
    progress_stream(
        ctx,
        Box::new(move |b, sink| {
            Box::pin(async move { b.pull_image(&reference, auth, sink).await })
        }),
    )
    .await
}

/// Whether a reference already names a tag or digest.
pub fn has_tag_or_digest(reference: &str) -> bool {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    reference.contains('@') || last.contains(':')
}

async fn push(ctx: &Ctx, name: &str, q: &Query, headers: &HeaderMap) -> ApiResult {
    let reference = match q.string("tag") {
        Some(tag) if !has_tag_or_digest(name) => format!("{name}:{tag}"),
        _ => name.to_string(),
    };
    let auth = registry_auth(headers)?;
    progress_stream(
        ctx,
        Box::new(move |b, sink| {
            Box::pin(async move { b.push_image(&reference, auth, sink).await })
        }),
    )
    .await
}

async fn tag(ctx: &Ctx, name: &str, q: &Query) -> ApiResult {
    let Some(repo) = q.string("repo") else {
        return Err(ApiError::BadRequest(
            "repository name must have at least one component".into(),
        ));
    };
    let tag = q.string("tag").unwrap_or_else(|| "latest".into());
    ctx.backend.tag_image(name, &repo, &tag).await?;
    Ok(response::status(StatusCode::CREATED))
}

async fn remove(ctx: &Ctx, name: &str, q: &Query) -> ApiResult {
    let removed = ctx.backend.remove_image(name, q.bool("force")).await?;
    let body: Vec<serde_json::Value> = removed
        .into_iter()
        .map(|r| match r {
            RemovedImage::Untagged(t) => serde_json::json!({ "Untagged": t }),
            RemovedImage::Deleted(d) => serde_json::json!({ "Deleted": d }),
        })
        .collect();
    Ok(response::json(StatusCode::OK, &body))
}

async fn history(ctx: &Ctx, name: &str) -> ApiResult {
    let rows: Vec<types::HistoryJson> = ctx
        .backend
        .image_history(name)
        .await?
        .into_iter()
        .map(|h| types::HistoryJson {
            id: h.id,
            created: h.created_secs,
            created_by: h.created_by,
            tags: (!h.tags.is_empty()).then_some(h.tags),
            size: h.size,
            comment: h.comment,
        })
        .collect();
    Ok(response::json(StatusCode::OK, &rows))
}

async fn save(ctx: &Ctx, names: Vec<String>) -> ApiResult {
    if names.is_empty() {
        return Err(ApiError::BadRequest("no image names given".into()));
    }
    let tar = ctx.backend.save_images(names).await?;
    let body = tar.map_err(|e| std::io::Error::other(e.to_string()));
    Ok(response::with_type(
        StatusCode::OK,
        "application/x-tar",
        streamed(body),
    ))
}

async fn load(ctx: &Ctx, req: Request<Incoming>) -> ApiResult {
    let loaded = ctx
        .backend
        .load_images(body_stream(req.into_body()))
        .await?;
    let mut out = Vec::new();
    for name in loaded {
        let line = if name.starts_with("sha256:") {
            format!("Loaded image ID: {name}\n")
        } else {
            format!("Loaded image: {name}\n")
        };
        out.extend_from_slice(&json_line(&JsonMessage {
            stream: Some(line),
            ..Default::default()
        }));
    }
    Ok(response::with_type(
        StatusCode::OK,
        "application/json",
        response::full(out),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_registry_auth() {
        let json = br#"{"username":"u","password":"p","serveraddress":"r.io"}"#;
        let mut h = HeaderMap::new();
        let enc = base64::engine::general_purpose::URL_SAFE.encode(json);
        h.insert("X-Registry-Auth", enc.parse().unwrap());
        let a = registry_auth(&h).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        assert_eq!(a.server_address, "r.io");
        h.insert("X-Registry-Auth", "e30=".parse().unwrap()); // "{}"
        assert_eq!(registry_auth(&h).unwrap(), None);
        h.insert("X-Registry-Auth", "!!".parse().unwrap());
        assert!(registry_auth(&h).is_err());
    }

    #[test]
    fn message_shapes() {
        let m = progress_json(ProgressMessage {
            status: "Downloading".into(),
            id: Some("abc".into()),
            current: Some(1),
            total: Some(2),
        });
        assert_eq!(
            serde_json::to_value(m).unwrap(),
            serde_json::json!({"status":"Downloading","id":"abc","progressDetail":{"current":1,"total":2}})
        );
        let e = error_json(&BackendError::NotFound("manifest unknown".into()));
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            serde_json::json!({"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"})
        );
        assert!(has_tag_or_digest("localhost:5000/a:b"));
        assert!(!has_tag_or_digest("localhost:5000/a"));
        assert!(has_tag_or_digest("a@sha256:00"));
    }
}
