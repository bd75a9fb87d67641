//! The engine's one error type, and the two translations its front doors need: docker's
//! exit status for the CLI and an error kind the Docker API turns into an HTTP status.

use std::path::PathBuf;

use berth_protocol::{ClientError, WireError};

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A container record could not be found, read or changed.
    #[error(transparent)]
    Store(#[from] berth_containers::Error),
    /// The image store or a registry failed.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// The agent in the micro-VM failed or refused a request.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// The agent reported a typed failure on a data stream.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// {0}
    #[error("{0}")]
    InvalidArgument(String),
    /// {0}
    #[error("{0}")]
    Conflict(String),
    /// {0}
    #[error("{0}")]
    NotFound(String),
    /// {0}
    #[error("{0}")]
    Vm(String),
    /// A build failed: a Dockerfile that is wrong or a step that failed ({0}).
    #[error("{0}")]
    Build(String),
    /// An operating-system call failed.
    #[error(transparent)]
    Os(#[from] std::io::Error),
    /// cannot {action} {path}: {source}
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The path concerned (empty when none).
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// {context}
    #[error("{context}")]
    Context {
        /// What the engine was doing.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
}

/// A result of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a front door should report an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such container, image or path (HTTP 404).
    NotFound,
    /// The request conflicts with the object's state or another object (HTTP 409).
    Conflict,
    /// The request itself is wrong (HTTP 400).
    InvalidArgument,
    /// berth or the micro-VM failed (HTTP 500).
    Internal,
}

impl From<berth_containers::mounts::MountError> for Error {
    fn from(e: berth_containers::mounts::MountError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// The message of `e` and of each error under it, joined by `: `, leaving out a cause
/// whose message its parent's already ends with (many messages quote their cause).
pub fn chain_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !last.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cur = c.source();
    }
    out
}

impl Error {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }

    /// Wraps the error in what the engine was doing.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error, under every context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// The whole message, contexts first: `create container x: the agent ...`.
    pub fn message(&self) -> String {
        chain_message(self)
    }

    /// The kind of failure, for HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        use berth_containers::Error as S;
        use berth_image::Error as I;
        match self.root() {
            Error::Store(S::NotFound(_) | S::VolumeNotFound(_) | S::NetworkNotFound(_))
            | Error::NotFound(_) => ErrorKind::NotFound,
            Error::Image(I::ImageNotFound { .. }) => ErrorKind::NotFound,
            Error::Store(
                S::NameInUse(_)
                | S::VolumeInUse { .. }
                | S::NetworkExists(_)
                | S::NetworkInUse { .. }
                | S::SubnetTaken { .. }
                | S::NetworkFull(_),
            )
            | Error::Conflict(_) => ErrorKind::Conflict,
            Error::Store(
                S::Ambiguous { .. }
                | S::InvalidName(_)
                | S::InvalidVolumeName(_)
                | S::InvalidNetworkName(_),
            )
            | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Image(I::InvalidReference { .. }) => ErrorKind::InvalidArgument,
            Error::Agent(ClientError::Remote(w)) | Error::Wire(w) => {
                use berth_protocol::ErrorKind as W;
                match w.kind {
                    W::ExecutableNotFound | W::NotExecutable | W::InvalidConfig => {
                        ErrorKind::InvalidArgument
                    }
                    W::NotFound => ErrorKind::NotFound,
                    W::AlreadyExists | W::InvalidState => ErrorKind::Conflict,
                    _ => ErrorKind::Internal,
                }
            }
            _ => ErrorKind::Internal,
        }
    }

    /// docker's exit status for this failure: 126 or 127 when the agent says the
    /// executable cannot run or does not exist, 125 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.root() {
            Error::Agent(ClientError::Remote(w)) | Error::Wire(w) => w.exit_code() as u8,
            // As `docker build`: a failed build is 1, whatever failed.
            Error::Build(_) => 1,
            _ => EXIT_BERTH_FAILED,
        }
    }
}

/// Exit status of berth's own failures (docker's 125).
pub const EXIT_BERTH_FAILED: u8 = 125;

/// Adds what the engine was doing to an error, like `anyhow::Context` but typed.
pub trait Context<T> {
    /// Wraps the error with `context()`'s text.
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
    /// Wraps the error with `context`.
    fn context(self, context: &str) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
    fn context(self, context: &str) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
}

impl From<berth_protocol::FrameError> for Error {
    fn from(e: berth_protocol::FrameError) -> Self {
        Error::Agent(ClientError::Frame(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_its_parent_quotes_is_said_once() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let quoted = Error::io("write", "/s/blob", full);
        assert_eq!(
            quoted.context("pull x").message(),
            format!(
                "pull x: cannot write /s/blob: {}",
                std::io::Error::from(std::io::ErrorKind::StorageFull)
            )
        );
        let plain = Error::Vm("boom".into()).context("run y");
        assert_eq!(plain.message(), "run y: boom");
    }

    #[test]
    fn kinds_and_exit_codes_look_through_contexts() {
        let e = Error::from(berth_containers::Error::NotFound("web".into())).context("stop web");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.exit_code(), EXIT_BERTH_FAILED);
        assert_eq!(e.message(), "stop web: no such container: web");
        let e = Error::Conflict("busy".into()).context("rm");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e = Error::InvalidArgument("bad".into());
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            Error::Vm("crashed".into()).kind(),
            ErrorKind::Internal,
            "a VM failure is berth's"
        );
    }
}
