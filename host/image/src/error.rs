//! The errors of berth's image side.

use std::path::PathBuf;

/// What to do when `e` says the disk is full.
fn full_disk_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            ": the disk is full; free some space (`berth image prune` removes unused \
             images) and try again"
        }
        _ => "",
    }
}

/// Everything that can go wrong in the image store, the registry client, archives and layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O error on {path} (the cause follows in the error's chain; a full disk says
    /// what to do)
    #[error("I/O error on {path}{}", full_disk_hint(.source))]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// invalid image reference {reference:?}: {reason}
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>
    #[error("invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
    },
    /// invalid platform {platform:?}: expected os/arch[/variant], for example linux/amd64
    #[error("invalid platform {platform:?}: expected os/arch[/variant], for example linux/amd64")]
    InvalidPlatform {
        /// The platform as given.
        platform: String,
    },
    /// digest mismatch for {what}: expected {expected}, got {actual}; the data is corrupt or was tampered with, nothing was stored
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the data is corrupt or was tampered with, nothing was stored")]
    DigestMismatch {
        /// The blob or layer involved.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// size mismatch for {what}: expected {expected} bytes, got {actual}; the transfer was truncated or the blob is corrupt, nothing was stored
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}; the transfer was truncated or the blob is corrupt, nothing was stored")]
    SizeMismatch {
        /// The blob involved.
        what: String,
        /// The size the descriptor announced.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// unsupported media type {media_type:?} for {what}; berth handles OCI and Docker v2 schema 2 images with plain, gzip or zstd layers
    #[error("unsupported media type {media_type:?} for {what}; berth handles OCI and Docker v2 schema 2 images with plain, gzip or zstd layers")]
    UnknownMediaType {
        /// The media type found.
        media_type: String,
        /// The manifest, config or layer involved.
        what: String,
    },
    /// no image for platform {wanted} in {reference}; available: {available}. Choose one with --platform
    #[error("no image for platform {wanted} in {reference}; available: {available}. Choose one with --platform")]
    NoMatchingPlatform {
        /// The image reference.
        reference: String,
        /// The platform wanted.
        wanted: String,
        /// The platforms the index offers.
        available: String,
    },
    /// malformed {what}: {reason}
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The document involved.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// no such image: {reference}; pull it with `berth pull {reference}` or load it with `berth load`
    #[error("no such image: {reference}; pull it with `berth pull {reference}` or load it with `berth load`")]
    ImageNotFound {
        /// The reference looked up.
        reference: String,
    },
    /// image ID prefix {prefix} is ambiguous: it matches {count} images; give more digits
    #[error("image ID prefix {prefix} is ambiguous: it matches {count} images; give more digits")]
    AmbiguousImage {
        /// The prefix given.
        prefix: String,
        /// How many images it matches.
        count: usize,
    },
    /// image {id} is referenced by several tags ({tags}); remove the tags one by one or use --force
    #[error("image {id} is referenced by several tags ({tags}); remove the tags one by one or use --force")]
    ImageHasSeveralTags {
        /// The image ID.
        id: String,
        /// Its tags.
        tags: String,
    },
    /// unauthorized at {registry}: {detail}; log in with `berth login {registry}`
    #[error("unauthorized at {registry}: {detail}; log in with `berth login {registry}`")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// not found at {registry}: {what} ({detail})
    #[error("not found at {registry}: {what} ({detail})")]
    RegistryNotFound {
        /// The registry host.
        registry: String,
        /// The repository, manifest or blob asked for.
        what: String,
        /// What the registry said.
        detail: String,
    },
    /// registry {registry} answered {status} for {what}: {detail}
    #[error("registry {registry} answered {status} for {what}: {detail}")]
    RegistryStatus {
        /// The registry host.
        registry: String,
        /// The HTTP status.
        status: u16,
        /// The request involved.
        what: String,
        /// What the registry said.
        detail: String,
    },
    /// cannot reach registry {registry} for {what}: {detail}; check the address, the network, and for a plain-HTTP registry use --insecure or BERTH_INSECURE_REGISTRIES
    #[error("cannot reach registry {registry} for {what}: {detail}; check the address, the network, and for a plain-HTTP registry use --insecure or BERTH_INSECURE_REGISTRIES")]
    Transport {
        /// The registry host.
        registry: String,
        /// The request involved.
        what: String,
        /// The transport error.
        detail: String,
    },
    /// layer {layer}: entry {entry:?} refused: {reason}
    #[error("layer {layer}: entry {entry:?} refused: {reason}")]
    UnsafeLayerEntry {
        /// The layer digest.
        layer: String,
        /// The tar entry's path.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// layer {layer}: {reason}
    #[error("layer {layer}: {reason}")]
    BadLayer {
        /// The layer digest.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// archive {path}: {reason}
    #[error("archive {path}: {reason}")]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// credentials file {path}: {reason}
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// credential helper {helper}: {reason}
    #[error("credential helper {helper}: {reason}")]
    CredentialHelper {
        /// The helper's program.
        helper: String,
        /// What went wrong.
        reason: String,
    },
    /// cannot find a data directory: set BERTH_ROOT, XDG_DATA_HOME or HOME
    #[error("cannot find a data directory: set BERTH_ROOT, XDG_DATA_HOME or HOME")]
    NoDataDir,
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Extension to attach a path to I/O errors.
pub(crate) trait IoContext<T> {
    /// Wraps an I/O error with the path it concerns.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
