//! OCI and Docker v2 schema 2 manifests, indexes and image configs, and platform selection.
//!
//! Manifests, indexes, descriptors and the platforms of index entries are oci-spec's types
//! ([`ImageManifest`], [`ImageIndex`], [`Descriptor`]): a Docker v2 schema 2 manifest or
//! manifest list has the shape of its OCI twin, and docker's media types come through as
//! [`MediaType::Other`]. What oci-spec leaves open berth checks when it parses a document
//! ([`validate`], [`validate_index`]): media types it can read, and digests that are
//! sha256, the only kind the store holds (oci-spec also takes sha512 and any
//! `algorithm:encoded` pair).
//!
//! Two things stay berth's own:
//! * [`Platform`], the platform wanted (`--platform`, the host's): it parses and prints
//!   `os/arch[/variant]` and normalises `x86_64` and `aarch64`; oci-spec's `Platform` is a
//!   document type with neither `FromStr` nor `Display`, and a foreign type cannot be
//!   given them here. Index entries keep oci-spec's platform, matched with
//!   [`Platform::matches`].
//! * [`ImageConfig`] and its parts, for the reasons given there.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use oci_spec::image::{ImageIndexBuilder, ImageManifestBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reference::Digest;

/// OCI image manifest (the string form, for headers; [`MediaType::ImageManifest`] in documents).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (the string form, for headers; [`MediaType::ImageIndex`] in documents).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 schema 2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The Accept header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// A gzip'd tar.
    Gzip,
    /// A zstd-compressed tar.
    Zstd,
}

impl Compression {
    /// The OCI layer media type of a layer compressed this way.
    pub fn oci_media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// The compression a layer media type implies, or an error for types berth cannot read.
pub fn layer_compression(media_type: &MediaType, what: &str) -> Result<Compression> {
    match media_type {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Ok(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Ok(Compression::Zstd)
        }
        MediaType::Other(t) if t == DOCKER_LAYER_TAR => Ok(Compression::None),
        MediaType::Other(t) if t == DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
        other => Err(Error::UnknownMediaType {
            media_type: other.to_string(),
            what: what.to_string(),
        }),
    }
}

/// Is `media_type` that of an image manifest (OCI or Docker v2 schema 2)?
fn is_image_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// A descriptor's digest, which must be sha256: the store holds nothing else.
fn sha256(d: &Descriptor, what: &str) -> Result<Digest> {
    Digest::try_from(d.digest()).map_err(|e| Error::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Checks what oci-spec leaves open in an image manifest: schema version 2, a config and
/// layers of media types berth can use, and sha256 digests.
pub fn validate(m: &ImageManifest, what: &str) -> Result<()> {
    if m.schema_version() != 2 {
        return Err(Error::Malformed {
            what: what.to_string(),
            reason: format!("schemaVersion {} (only 2 is supported)", m.schema_version()),
        });
    }
    match m.config().media_type() {
        MediaType::ImageConfig => {}
        MediaType::Other(t) if t == DOCKER_CONFIG => {}
        other => {
            return Err(Error::UnknownMediaType {
                media_type: other.to_string(),
                what: format!("config of {what}"),
            })
        }
    }
    sha256(m.config(), what)?;
    for l in m.layers() {
        layer_compression(l.media_type(), &format!("layer {} of {what}", l.digest()))?;
        sha256(l, what)?;
    }
    Ok(())
}

/// Checks an index's entries have sha256 digests (berth fetches and stores the one it picks).
pub fn validate_index(index: &ImageIndex, what: &str) -> Result<()> {
    for d in index.manifests() {
        sha256(d, what)?;
    }
    Ok(())
}

/// The OCI manifest berth writes for an image it makes (`commit`, a `docker save` archive
/// it loads). With no annotations it serialises exactly as berth's own manifest type did,
/// so these manifests keep their digests.
pub fn oci_manifest(
    config: Digest,
    config_size: u64,
    layers: Vec<Descriptor>,
) -> Result<ImageManifest> {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(MediaType::ImageConfig, config_size, config))
        .layers(layers)
        .build()
        .map_err(|e| Error::Malformed {
            what: "new manifest".into(),
            reason: e.to_string(),
        })
}

/// The OCI index berth writes into a saved archive.
pub fn oci_index(manifests: Vec<Descriptor>) -> Result<ImageIndex> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| Error::Malformed {
            what: "new index".into(),
            reason: e.to_string(),
        })
}

/// A manifest document of either kind.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum ManifestKind {
    /// An image manifest.
    Image(ImageManifest),
    /// An index or manifest list.
    Index(ImageIndex),
}

/// Parses a manifest document, given the media type the registry declared (may be empty).
pub fn parse_manifest(bytes: &[u8], declared: &str, what: &str) -> Result<(String, ManifestKind)> {
    let malformed = |e: serde_json::Error| Error::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    };
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    let body_type = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let declared = declared.split(';').next().unwrap_or("").trim();
    let mut media_type = if !body_type.is_empty() {
        body_type.to_string()
    } else if !declared.is_empty() && declared != "application/json" {
        declared.to_string()
    } else if v.get("manifests").is_some() {
        OCI_INDEX.to_string()
    } else if v.get("config").is_some() {
        OCI_MANIFEST.to_string()
    } else {
        String::new()
    };
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        media_type = "application/vnd.docker.distribution.manifest.v1+json".to_string();
    }
    match media_type.as_str() {
        t if is_image_manifest(t) => {
            let m: ImageManifest = serde_json::from_value(v).map_err(malformed)?;
            validate(&m, what)?;
            Ok((media_type, ManifestKind::Image(m)))
        }
        OCI_INDEX | DOCKER_LIST => {
            let i: ImageIndex = serde_json::from_value(v).map_err(malformed)?;
            validate_index(&i, what)?;
            Ok((media_type, ManifestKind::Index(i)))
        }
        other => Err(Error::UnknownMediaType {
            media_type: if other.is_empty() {
                "(none)".to_string()
            } else {
                other.to_string()
            },
            what: what.to_string(),
        }),
    }
}

/// A platform wanted: OS, architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system, `linux`.
    pub os: String,
    /// Architecture, GOARCH style: `amd64`, `arm64`.
    pub architecture: String,
    /// Variant, for example `v8`.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform berth's guests run on this host: linux and the host architecture.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            other => other,
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// Does an index entry's platform satisfy this wanted platform?
    /// A wanted variant must match exactly; none wanted accepts any (arm64's `v8` is the default).
    pub fn matches(&self, candidate: &oci_spec::image::Platform) -> bool {
        let candidate = Platform::from(candidate);
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (None, _) => true,
            (Some(w), Some(c)) => w == c,
            (Some(w), None) => self.architecture == "arm64" && w == "v8",
        }
    }
}

/// An index entry's platform, as berth names platforms.
impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Self {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidPlatform {
            platform: s.to_string(),
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let architecture = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: architecture.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Chooses the manifest for `wanted` in an index. Attestation manifests
/// (`unknown/unknown`) never match.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    let found = index
        .manifests()
        .iter()
        .filter(|d| is_image_manifest(d.media_type().as_ref()))
        .find(|d| d.platform().as_ref().is_some_and(|p| wanted.matches(p)));
    found.ok_or_else(|| {
        let available: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref().map(|p| Platform::from(p).to_string()))
            .filter(|p| p != "unknown/unknown")
            .collect();
        Error::NoMatchingPlatform {
            reference: reference.to_string(),
            wanted: wanted.to_string(),
            available: if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            },
        }
    })
}

/// The image config (the parts berth reads; everything else is kept).
///
/// Berth's own type rather than oci-spec's `ImageConfiguration`, because `commit` rewrites
/// the base image's config and must not lose what docker puts there: oci-spec's types keep
/// only the OCI fields (no `container_config`, `docker_version`, nor, in [`RunConfig`],
/// `Healthcheck`, `OnBuild`, `Shell` or `ArgsEscaped`), where these keep every other field
/// as it was (`extra`). Also: oci-spec requires `architecture` and `os`, where berth
/// reads a config without them (and then checks neither); its labels are a `HashMap`, which would print
/// `inspect`'s labels in a different order every run; and its diff IDs are plain strings,
/// where these are checked sha256 digests when the config is parsed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Execution defaults (Env, Cmd, Entrypoint, WorkingDir, User, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The layer diff IDs.
    pub rootfs: RootFs,
    /// Build history, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Execution defaults of an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User (`uid`, `uid:gid` or names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment, `K=V`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Ports the image documents (`EXPOSE`), as `PORT/PROTO` keys of empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Paths that get a volume (`VOLUME`), as keys of empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The rootfs section of a config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, lowest first.
    pub diff_ids: Vec<Digest>,
}

/// One history entry of a config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Parses and checks an image config against its manifest.
pub fn parse_config(bytes: &[u8], manifest: &ImageManifest, what: &str) -> Result<ImageConfig> {
    let config: ImageConfig = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        what: format!("config of {what}"),
        reason: e.to_string(),
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers().len() {
        return Err(Error::Malformed {
            what: format!("config of {what}"),
            reason: format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers().len()
            ),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn index_with(platforms: &[&str]) -> ImageIndex {
        let manifests = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let wanted: Platform = p.parse().unwrap();
                let mut platform = oci_spec::image::Platform::default();
                platform
                    .set_os(wanted.os.as_str().into())
                    .set_architecture(wanted.architecture.as_str().into())
                    .set_variant(wanted.variant);
                let mut desc = Descriptor::new(MediaType::ImageManifest, 10, d(i as u8));
                desc.set_platform(Some(platform));
                desc
            })
            .collect();
        oci_index(manifests).unwrap()
    }

    fn picked(idx: &ImageIndex, wanted: &Platform) -> Digest {
        Digest::try_from(select_platform(idx, wanted, "x").unwrap().digest()).unwrap()
    }

    #[test]
    fn selects_the_wanted_platform() {
        let idx = index_with(&[
            "unknown/unknown",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/amd64",
        ]);
        let amd: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(picked(&idx, &amd), d(3));
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(picked(&idx, &arm), d(2));
        let armv8: Platform = "linux/aarch64/v8".parse().unwrap();
        assert_eq!(picked(&idx, &armv8), d(2));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(picked(&idx, &v7), d(1));
    }

    #[test]
    fn no_matching_platform_lists_what_exists() {
        let idx = index_with(&["unknown/unknown", "linux/arm64"]);
        let err = select_platform(&idx, &"linux/amd64".parse().unwrap(), "busybox").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NoMatchingPlatform { .. }));
        assert!(
            msg.contains("linux/amd64") && msg.contains("linux/arm64"),
            "{msg}"
        );
        assert!(!msg.contains("unknown/unknown"), "{msg}");
    }

    #[test]
    fn host_platform_is_linux() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p.architecture, "amd64");
        }
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }

    #[test]
    fn manifests_are_parsed_by_media_type() {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": d(1), "size": 1},
            "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": d(2), "size": 2}]
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let (mt, kind) = parse_manifest(&bytes, "", "m").unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        let ManifestKind::Image(docker) = kind else {
            panic!("a manifest")
        };
        assert_eq!(
            layer_compression(docker.layers()[0].media_type(), "l").unwrap(),
            Compression::Gzip
        );
        assert_eq!(docker.config().media_type().as_ref(), DOCKER_CONFIG);

        let mut zstd = m.clone();
        zstd["layers"][0]["mediaType"] = MediaType::ImageLayerZstd.as_ref().into();
        assert!(parse_manifest(&serde_json::to_vec(&zstd).unwrap(), "", "m").is_ok());
        assert_eq!(
            layer_compression(&MediaType::ImageLayerZstd, "l").unwrap(),
            Compression::Zstd
        );
        let mut xz = m.clone();
        xz["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+xz".into();
        let err = parse_manifest(&serde_json::to_vec(&xz).unwrap(), "", "m").unwrap_err();
        assert!(matches!(err, Error::UnknownMediaType { .. }), "{err}");

        let unknown = serde_json::json!({"schemaVersion": 2, "mediaType": "application/x-thing"});
        let err = parse_manifest(&serde_json::to_vec(&unknown).unwrap(), "", "m").unwrap_err();
        assert!(matches!(err, Error::UnknownMediaType { .. }), "{err}");

        let v1 = serde_json::json!({"schemaVersion": 1, "fsLayers": []});
        let err = parse_manifest(&serde_json::to_vec(&v1).unwrap(), "", "m").unwrap_err();
        assert!(matches!(err, Error::UnknownMediaType { .. }), "{err}");

        let list = serde_json::json!({"schemaVersion": 2, "manifests": []});
        let (mt, _) =
            parse_manifest(&serde_json::to_vec(&list).unwrap(), DOCKER_LIST, "m").unwrap();
        assert_eq!(mt, DOCKER_LIST);
    }

    #[test]
    fn manifests_berth_writes_keep_their_bytes() {
        // Byte for byte what berth's own manifest type wrote: the digests of images that
        // `commit` and `load` made before keep matching.
        let layer = Descriptor::new(MediaType::ImageLayer, 2, d(2));
        let m = oci_manifest(d(1), 1, vec![layer]).unwrap();
        let want = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"{}","#,
                r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},"#,
                r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":2}}]}}"#
            ),
            OCI_MANIFEST,
            d(1),
            d(2)
        );
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&m).unwrap()).unwrap(),
            want
        );
        let (mt, kind) = parse_manifest(want.as_bytes(), "", "m").unwrap();
        assert_eq!(mt, OCI_MANIFEST);
        assert!(matches!(kind, ManifestKind::Image(back) if back == m));
    }

    #[test]
    fn digests_other_than_sha256_are_refused() {
        let with_layer_digest = |digest: &str| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(1), "size": 1},
                "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": digest, "size": 2}]
            }))
            .unwrap()
        };
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let err = parse_manifest(&with_layer_digest(&sha512), "", "m").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Malformed { .. }), "{msg}");
        assert!(
            msg.contains(&sha512) && msg.contains("expected sha256"),
            "{msg}"
        );
        for bad in ["sha256:ABC", "../x:y", "sha256"] {
            let err = parse_manifest(&with_layer_digest(bad), "", "m").unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{bad}: {err}");
        }
        let list = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha512, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}}
        ]});
        let err =
            parse_manifest(&serde_json::to_vec(&list).unwrap(), DOCKER_LIST, "m").unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }
}
