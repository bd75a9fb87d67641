//! Routing: strips the optional `/v1.NN` prefix, checks the version, and
//! sends each request to its handler. Unknown endpoints get Docker's 404.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::backend::Backend;
use crate::error::ApiError;
use crate::request::{percent_decode, Query};
use crate::response::{self, ApiResult, Body};
use crate::{containers, exec, images, networks, system, volumes};

/// Oldest API version served.
pub const MIN_API_VERSION: (u32, u32) = (1, 24);
/// Newest API version served (what `/_ping` announces).
pub const MAX_API_VERSION: (u32, u32) = (1, 51);

/// Formats an API version as "1.NN".
pub fn version_string(v: (u32, u32)) -> String {
    format!("{}.{}", v.0, v.1)
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (and read buffer) in bytes; at least 8 KiB.
    pub max_header_bytes: usize,
    /// Largest JSON request body in bytes. Tar bodies (archive upload,
    /// image load) are streamed and not limited.
    pub max_json_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_json_body: 1024 * 1024,
        }
    }
}

/// What every handler gets.
pub struct Ctx {
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// Request limits.
    pub limits: Limits,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An API version, (major, minor).
pub type ApiVersion = (u32, u32);

/// Splits `/v1.41/containers/json` into the version and the rest.
/// Unversioned paths give `None`. Versions outside what we serve are a
/// 400, worded as Docker words it.
pub fn strip_version(path: &str) -> Result<(Option<ApiVersion>, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((None, path));
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let parsed = ver
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some(v) = parsed else {
        // Not a version ("/volumes" is no such path either way).
        return Ok((None, path));
    };
    if v < MIN_API_VERSION {
        return Err(ApiError::BadRequest(format!(
            "client version {ver} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
            version_string(MIN_API_VERSION)
        )));
    }
    if v > MAX_API_VERSION {
        return Err(ApiError::BadRequest(format!(
            "client version {ver} is too new. Maximum supported API version is {}",
            version_string(MAX_API_VERSION)
        )));
    }
    Ok((Some(v), if tail.is_empty() { "/" } else { tail }))
}

/// Answers one request.
pub async fn route(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::debug!(%method, %path, "request");
    let result = dispatch(&ctx, req).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(%method, %path, "{e}");
            } else {
                tracing::debug!(%method, %path, status = %e.status(), "{e}");
            }
            response::error(&e)
        }
    }
}

async fn dispatch(ctx: &Ctx, req: Request<Incoming>) -> ApiResult {
    let full_path = req.uri().path().to_string();
    let (version, path) = strip_version(&full_path)?;
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let not_found = || ApiError::NotFound(format!("page not found: {method} {full_path}"));
    let m = &method;
    match (s.as_slice(), m) {
        (["_ping"], &Method::GET | &Method::HEAD) => Ok(system::ping()),
        (["version"], &Method::GET) => system::version(ctx).await,
        (["info"], &Method::GET) => system::info(ctx).await,
        (["events"], &Method::GET) => system::events(ctx, &query).await,

        (["containers", "json"], &Method::GET) => containers::list(ctx, &query).await,
        (["containers", "create"], &Method::POST) => containers::create(ctx, &query, req).await,
        (["containers", "prune"], _) => Err(ApiError::NotImplemented(
            "berth does not support container prune yet".into(),
        )),
        (["containers", id], &Method::DELETE) => containers::remove(ctx, id, &query).await,
        (["containers", id, action], _) => containers::action(ctx, id, action, m, &query, req)
            .await
            .unwrap_or_else(|| Err(not_found())),

        (["exec", id, "start"], &Method::POST) => exec::start(ctx, id, req).await,
        (["exec", id, "resize"], &Method::POST) => exec::resize(ctx, id, &query).await,
        (["exec", id, "json"], &Method::GET) => exec::inspect(ctx, id).await,

        (["images", rest @ ..], _) if !rest.is_empty() => images::route(ctx, rest, m, &query, req)
            .await
            .unwrap_or_else(|| Err(not_found())),

        (["networks", rest @ ..], _) => networks::route(ctx, rest, m, &query, req)
            .await
            .unwrap_or_else(|| Err(not_found())),
        (["volumes", rest @ ..], _) => volumes::route(ctx, rest, m, &query, version, req)
            .await
            .unwrap_or_else(|| Err(not_found())),
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_versions() {
        assert_eq!(
            strip_version("/v1.51/containers/json").unwrap(),
            (Some((1, 51)), "/containers/json")
        );
        assert_eq!(
            strip_version("/v1.24/_ping").unwrap(),
            (Some((1, 24)), "/_ping")
        );
        assert_eq!(strip_version("/_ping").unwrap(), (None, "/_ping"));
        assert_eq!(strip_version("/volumes").unwrap(), (None, "/volumes"));
        assert_eq!(strip_version("/v1.41").unwrap(), (Some((1, 41)), "/"));
        let old = strip_version("/v1.12/info").unwrap_err();
        assert!(old.to_string().contains("too old"), "{old}");
        assert!(matches!(old, ApiError::BadRequest(_)));
        let new = strip_version("/v1.52/info").unwrap_err();
        assert!(new.to_string().contains("too new"), "{new}");
    }
}
