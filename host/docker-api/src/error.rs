//! The API's error type and how each kind becomes an HTTP answer.

use http::StatusCode;

use crate::backend::BackendError;

/// Why a request failed. Each variant has its HTTP status; the message is
/// sent as Docker's `{"message": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something unsupported (400).
    #[error("{0}")]
    BadRequest(String),
    /// The object or endpoint does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with an object's state (409).
    #[error("{0}")]
    Conflict(String),
    /// Nothing to do (304, no body).
    #[error("not modified")]
    NotModified,
    /// The request body is larger than the limit, in bytes (413).
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The endpoint exists in Docker but berth does not implement it (501).
    #[error("{0}")]
    NotImplemented(String),
    /// Something failed on our side (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotModified => StatusCode::NOT_MODIFIED,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(m) => ApiError::NotFound(m),
            BackendError::Conflict(m) => ApiError::Conflict(m),
            BackendError::InvalidArgument(m) => ApiError::BadRequest(m),
            BackendError::NotModified => ApiError::NotModified,
            BackendError::Other(m) => ApiError::Internal(m),
        }
    }
}

/// Errors of binding and serving the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process already serves on the socket path.
    #[error("{0}: another server is listening on this socket")]
    InUse(String),
    /// The path exists and is not a socket, so we leave it alone.
    #[error("{0}: exists and is not a socket")]
    NotASocket(String),
    /// An I/O error on the socket path or while accepting.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
