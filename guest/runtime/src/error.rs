//! Errors of the runtime.

use std::path::PathBuf;

/// An errno value.
pub type Errno = nix::errno::Errno;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// invalid container configuration: {field}: {reason}
    #[error("invalid container configuration: {field}: {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `process.args`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// container {0} already exists
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// no such container: {0}
    #[error("no such container: {0}")]
    NotFound(String),
    /// container {id} is {state}; {what}
    #[error("container {id} is {state}; {what}")]
    InvalidState {
        /// Container id.
        id: String,
        /// Its state.
        state: &'static str,
        /// What cannot be done.
        what: &'static str,
    },
    /// exec: "{0}": executable file not found in $PATH
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    ExecutableNotFound(String),
    /// exec: "{0}": stat {0}: no such file or directory
    #[error("exec: \"{0}\": stat {0}: no such file or directory")]
    NoSuchFile(String),
    /// exec: "{path}": {reason}
    #[error("exec: \"{path}\": {reason}")]
    NotExecutable {
        /// The path.
        path: String,
        /// Why (permission denied, is a directory, exec format error...).
        reason: String,
    },
    /// unable to find user {0}: no matching entries in passwd file
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// unable to find group {0}: no matching entries in group file
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// container setup failed while {step}: {errno}
    #[error("container setup failed while {step}: {errno}")]
    Setup {
        /// The step that failed, with its paths.
        step: String,
        /// The error.
        errno: Errno,
    },
    /// {what} {path}: {source}
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// {what}: {errno}
    #[error("{what}: {errno}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        errno: Errno,
    },
    /// cgroup v2 is not mounted at /sys/fs/cgroup; {0} is unavailable
    #[error("cgroup v2 is not mounted at /sys/fs/cgroup; {0} is unavailable")]
    NoCgroup2(&'static str),
}

impl RuntimeError {
    /// An [`RuntimeError::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RuntimeError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
    /// An [`RuntimeError::Io`].
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
    /// An [`RuntimeError::Sys`].
    pub fn sys(what: impl Into<String>, errno: Errno) -> Self {
        RuntimeError::Sys {
            what: what.into(),
            errno,
        }
    }
}

/// Result of the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
