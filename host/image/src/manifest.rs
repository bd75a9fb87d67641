//! OCI and Docker v2 schema 2 manifests, indexes and image configs, and platform selection.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reference::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 schema 2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

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

/// The compression a layer media type implies, or an error for types berth cannot read.
pub fn layer_compression(media_type: &str, what: &str) -> Result<Compression> {
    match media_type {
        OCI_LAYER_TAR
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Ok(Compression::Zstd)
        }
        _ => Err(Error::UnknownMediaType {
            media_type: media_type.to_string(),
            what: what.to_string(),
        }),
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    pub media_type: String,
    /// Digest of the target.
    pub digest: Digest,
    /// Size of the target in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    /// A descriptor with no platform or annotations.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: None,
            extra: Default::default(),
        }
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, lowest first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// Checks the config and layer media types berth can use.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.schema_version != 2 {
            return Err(Error::Malformed {
                what: what.to_string(),
                reason: format!(
                    "schemaVersion {} (only 2 is supported)",
                    self.schema_version
                ),
            });
        }
        match self.config.media_type.as_str() {
            OCI_CONFIG | DOCKER_CONFIG => {}
            other => {
                return Err(Error::UnknownMediaType {
                    media_type: other.to_string(),
                    what: format!("config of {what}"),
                })
            }
        }
        for l in &self.layers {
            layer_compression(&l.media_type, &format!("layer {} of {what}", l.digest))?;
        }
        Ok(())
    }
}

/// An image index or manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A manifest document of either kind.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum ManifestKind {
    /// An image manifest.
    Image(Manifest),
    /// An index or manifest list.
    Index(Index),
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
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: Manifest = serde_json::from_value(v).map_err(malformed)?;
            m.validate(what)?;
            Ok((media_type, ManifestKind::Image(m)))
        }
        OCI_INDEX | DOCKER_LIST => {
            let i: Index = serde_json::from_value(v).map_err(malformed)?;
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

/// A platform: OS, architecture and optional variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, `linux`.
    pub os: String,
    /// Architecture, GOARCH style: `amd64`, `arm64`.
    pub architecture: String,
    /// Variant, for example `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Anything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
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
            extra: Default::default(),
        }
    }

    /// Does an index entry's platform satisfy this wanted platform?
    /// A wanted variant must match exactly; none wanted accepts any (arm64's `v8` is the default).
    pub fn matches(&self, candidate: &Platform) -> bool {
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
            extra: Default::default(),
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
    index: &'a Index,
    wanted: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    let usable = |d: &&Descriptor| matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST);
    let found = index
        .manifests
        .iter()
        .filter(usable)
        .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)));
    found.ok_or_else(|| {
        let available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
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
pub fn parse_config(bytes: &[u8], manifest: &Manifest, what: &str) -> Result<ImageConfig> {
    let config: ImageConfig = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        what: format!("config of {what}"),
        reason: e.to_string(),
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::Malformed {
            what: format!("config of {what}"),
            reason: format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
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

    fn index_with(platforms: &[&str]) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: platforms
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut desc = Descriptor::new(OCI_MANIFEST, d(i as u8), 10);
                    desc.platform = Some(p.parse().unwrap());
                    desc
                })
                .collect(),
            annotations: None,
            extra: Default::default(),
        }
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
        assert_eq!(select_platform(&idx, &amd, "x").unwrap().digest, d(3));
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(select_platform(&idx, &arm, "x").unwrap().digest, d(2));
        let armv8: Platform = "linux/aarch64/v8".parse().unwrap();
        assert_eq!(select_platform(&idx, &armv8, "x").unwrap().digest, d(2));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(select_platform(&idx, &v7, "x").unwrap().digest, d(1));
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
        assert!(matches!(kind, ManifestKind::Image(_)));

        let mut zstd = m.clone();
        zstd["layers"][0]["mediaType"] = OCI_LAYER_ZSTD.into();
        assert!(parse_manifest(&serde_json::to_vec(&zstd).unwrap(), "", "m").is_ok());
        assert_eq!(
            layer_compression(OCI_LAYER_ZSTD, "l").unwrap(),
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
}
