//! Building answers: the body type, JSON and error responses, and bodies
//! streamed from a channel or a stream.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::types::ErrorBody;

/// The body of every answer.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The result of every handler.
pub type ApiResult = Result<Response<Body>, ApiError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from a stream of chunks; it ends when the stream does.
pub fn streamed<S>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync()
}

/// A body streamed from a channel; it ends when every sender is dropped.
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    streamed(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

/// An answer with `status` and no body.
pub fn status(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            with_type(status, "application/json", full(bytes))
        }
        Err(e) => error(&ApiError::Internal(format!("encoding JSON: {e}"))),
    }
}

/// An answer with a body and its content type.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Docker's error answer: `{"message": "..."}` (304 has no body).
pub fn error(e: &ApiError) -> Response<Body> {
    let status = e.status();
    if status == StatusCode::NOT_MODIFIED {
        return self::status(status);
    }
    let message = e.to_string();
    let mut bytes = serde_json::to_vec(&ErrorBody { message: &message }).unwrap_or_default();
    bytes.push(b'\n');
    with_type(status, "application/json", full(bytes))
}

/// One JSON value as a line of a streaming JSON answer.
pub fn json_line<T: Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}
